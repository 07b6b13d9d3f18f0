//! Re-syncing one resource: the next pass of every scope of it is a full one.
//!
//! A pass is incremental only while the scope's cursor has `last_full_sync_at` (see
//! `procore_sync_core::walk::incremental_since`), so clearing that one column is enough. The
//! cursor rows stay: `listed_at` is the user's grant to see the scope's records, and
//! deleting the rows would hide everything until the next pass. A pass that is under way
//! when this runs and saves its cursor afterwards keeps the column cleared unless it was a
//! full pass itself (`store::save_cursor` keeps the old value for an incremental one).

use pgrx::prelude::*;

use crate::errors::SyncError;

/// Clears `last_full_sync_at` of every cursor of `resource` (of one company when given) and
/// returns how many scopes that was. An unknown resource is an error, not 0: a typo would
/// otherwise look like a resource nobody has synced yet.
pub fn force_full_pass(resource: &str, company_id: Option<i64>) -> Result<i64, SyncError> {
    let known = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM procore_sync_resource WHERE name = $1)",
        &[resource.into()],
    )?
    .unwrap_or(false);
    if !known {
        return Err(SyncError::InvalidArgument(format!(
            "unknown resource {resource:?}: procore_sync_resource has no row of that name"
        )));
    }
    let scopes = Spi::get_one_with_args::<i64>(
        "WITH reset AS (
             UPDATE procore_sync_cursor SET last_full_sync_at = NULL
             WHERE resource = $1 AND ($2::bigint IS NULL OR company_id = $2)
             RETURNING 1)
         SELECT count(*) FROM reset",
        &[resource.into(), company_id.into()],
    )?;
    Ok(scopes.unwrap_or(0))
}
