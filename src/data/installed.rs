//! Which procore_sync this database has. The server loads one library for every database,
//! while each database's SQL objects stay at the version it was created or last updated
//! to, so a library restarted ahead of `ALTER EXTENSION procore_sync UPDATE` meets an
//! older schema. Background work and the entry points that start it refuse until the
//! versions agree, rather than run new code against old tables.

use pgrx::prelude::*;

use crate::errors::SyncError;

/// The version of this library, which is also the version its SQL script installs.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The extension as this database has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Installed {
    Absent,
    /// Created or updated to another version than the library's.
    OtherVersion(String),
    Current {
        schema: String,
    },
}

impl Installed {
    /// What is in the way of running, if anything.
    pub fn require_current(self) -> Result<String, SyncError> {
        match self {
            Installed::Current { schema } => Ok(schema),
            Installed::Absent => Err(SyncError::Internal(
                "extension procore_sync is not installed in this database".into(),
            )),
            Installed::OtherVersion(installed) => Err(SyncError::VersionMismatch {
                installed,
                library: LIBRARY_VERSION,
            }),
        }
    }
}

pub fn installed() -> Result<Installed, SyncError> {
    let found = Spi::connect(|client| {
        let rows = client.select(
            "SELECT e.extversion::text, n.nspname::text
             FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
             WHERE e.extname = 'procore_sync'",
            None,
            &[],
        )?;
        let mut found = None;
        for row in rows {
            let version = row.get::<String>(1)?.unwrap_or_default();
            let schema = row.get::<String>(2)?.unwrap_or_default();
            found = Some((version, schema));
        }
        Ok::<_, pgrx::spi::Error>(found)
    })?;
    Ok(match found {
        None => Installed::Absent,
        Some((version, schema)) if version == LIBRARY_VERSION => Installed::Current { schema },
        Some((version, _)) => Installed::OtherVersion(version),
    })
}

/// Fails unless this database has the extension at the library's version.
pub fn require_current_version() -> Result<(), SyncError> {
    installed()?.require_current().map(|_| ())
}

/// Points this session's search_path at the extension's schema, wherever it was created,
/// once the extension there is at the library's version.
pub fn use_extension_schema() -> Result<(), SyncError> {
    let schema = installed()?.require_current()?;
    Spi::get_one_with_args::<String>(
        "SELECT set_config('search_path', 'pg_catalog, ' || quote_ident($1) || ', pg_temp', false)",
        &[schema.into()],
    )?;
    Ok(())
}
