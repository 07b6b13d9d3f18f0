//! The one place errors become Postgres errors, each with a SQLSTATE a caller can match on.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::procore::ProcoreError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no Procore credentials for user {0}")]
    UnknownUser(String),
    #[error("user {user} must reconnect to Procore: {reason}")]
    NeedsReconnect { user: String, reason: String },
    #[error("user {user} is already being synced (queue item {item}, worker pid {pid})")]
    AlreadySyncing { user: String, item: i64, pid: i32 },
    #[error("{0} must not be NULL")]
    NullArgument(&'static str),
    #[error("{0}")]
    UnknownJob(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidSchedule(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    WorkerUnavailable(String),
    #[error("queue item {0} was taken over by another worker after its lease ran out")]
    LeaseLost(i64),
    #[error(
        "the procore_sync extension in this database is version {installed}, but the server \
         runs the {library} library: run ALTER EXTENSION procore_sync UPDATE"
    )]
    VersionMismatch {
        installed: String,
        library: &'static str,
    },
    #[error("Procore: {0}")]
    Procore(#[from] ProcoreError),
    /// A webhook delivery whose `Authorization` matches no hook's secret.
    #[error("{0}")]
    NotAuthorized(String),
    /// The webhook inbox holds `procore_sync.webhook_inbox_limit` events already.
    #[error("{0}")]
    InboxFull(String),
    #[error("{0}")]
    Internal(String),
}

impl SyncError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            SyncError::UnknownUser(_) | SyncError::UnknownJob(_) => ERRCODE_NO_DATA_FOUND,
            SyncError::NeedsReconnect { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            SyncError::AlreadySyncing { .. } => ERRCODE_LOCK_NOT_AVAILABLE,
            SyncError::InvalidArgument(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            SyncError::NullArgument(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            SyncError::InvalidSchedule(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            SyncError::NotAllowed(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            SyncError::WorkerUnavailable(_) => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            SyncError::LeaseLost(_) => ERRCODE_LOCK_NOT_AVAILABLE,
            SyncError::VersionMismatch { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            SyncError::Procore(e) => match e {
                ProcoreError::InvalidGrant(_) => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                ProcoreError::InvalidClient => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                ProcoreError::Config(_) => ERRCODE_CONFIG_FILE_ERROR,
                _ => ERRCODE_CONNECTION_FAILURE,
            },
            SyncError::NotAuthorized(_) => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            SyncError::InboxFull(_) => ERRCODE_INSUFFICIENT_RESOURCES,
            SyncError::Internal(_) => ERRCODE_INTERNAL_ERROR,
        }
    }

    /// Raises this error in the current backend; never returns.
    pub fn raise(self) -> ! {
        ErrorReport::new(self.sqlstate(), self.to_string(), "procore_sync")
            .report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}

impl From<pgrx::spi::Error> for SyncError {
    fn from(e: pgrx::spi::Error) -> Self {
        SyncError::Internal(format!("SPI: {e}"))
    }
}

/// Unwraps a result at the SQL boundary, raising the error with its SQLSTATE.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T, E: Into<SyncError>> OrRaise<T> for Result<T, E> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.into().raise(),
        }
    }
}

/// Arguments arrive as Option so that NULL is an error a caller sees, not a silent NULL
/// result from a STRICT function.
pub fn required<T>(value: Option<T>, name: &'static str) -> T {
    match value {
        Some(v) => v,
        None => SyncError::NullArgument(name).raise(),
    }
}
