//! The one way a background worker runs SQL: a transaction of its own that survives a
//! Postgres ERROR. pgrx's own `BackgroundWorker::transaction` lets an ERROR end the process,
//! which would turn one bad record or one failed job into a crash loop.

use std::panic::AssertUnwindSafe;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::PgTryBuilder;
use procore_sync_core::walk::{StoreError, SyncFailure};

use crate::errors::SyncError;

/// Why a transaction did not run its body to the end.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The body raised a Postgres ERROR (or panicked); everything it did is rolled back.
    #[error("{0}")]
    Aborted(String),
    /// A transaction is already open: committing here would commit the caller's work too.
    #[error("internal error: a worker transaction was started inside another transaction")]
    Nested,
}

/// Runs `body` in its own transaction and returns what it returned, in the caller's error
/// type. The transaction commits when `body` returns, `Err` included: a body that records a
/// failure (an `invalid_grant` marks the credentials, then fails the sync) keeps that record.
/// It rolls back when `body` raises an ERROR or panics. It refuses to run inside another
/// transaction rather than commit or abort work that is not its own.
pub fn in_transaction<R, E: From<TransactionError>>(
    body: impl FnOnce() -> Result<R, E>,
) -> Result<R, E> {
    if unsafe { pg_sys::IsTransactionState() } {
        return Err(TransactionError::Nested.into());
    }
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(AssertUnwindSafe(|| Ok(body())))
        .catch_others(|e| Err(caught_message(&e)))
        .execute();
    unsafe {
        match outcome {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    outcome.unwrap_or_else(|message| Err(TransactionError::Aborted(message).into()))
}

fn caught_message(e: &CaughtError) -> String {
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_string(),
        CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
    }
}

impl From<TransactionError> for SyncError {
    fn from(e: TransactionError) -> Self {
        SyncError::Internal(e.to_string())
    }
}

impl From<TransactionError> for String {
    fn from(e: TransactionError) -> Self {
        e.to_string()
    }
}

impl From<TransactionError> for SyncFailure {
    fn from(e: TransactionError) -> Self {
        SyncFailure::Retryable(format!("database: {e}"))
    }
}

impl From<TransactionError> for StoreError {
    fn from(e: TransactionError) -> Self {
        StoreError::Database(e.to_string())
    }
}
