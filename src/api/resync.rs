//! `procore_sync_resync()`: Fivetran's table re-sync, for one catalog resource.

use pgrx::prelude::*;

use crate::data::resync;
use crate::errors::{required, OrRaise};

/// Makes the next sync of every user who syncs `resource` (in `company_id` only, when
/// given) read it in full, which also marks what Procore no longer lists as deleted. It
/// queues nobody: the users' next scheduled sync does it, or `procore_sync_user()` now.
/// Returns the number of scopes (cursor rows) reset. Runs as the extension owner, like the
/// other administration functions, and is not executable by PUBLIC.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_resync(resource: Option<&str>, company_id: default!(Option<i64>, "NULL")) -> i32 {
    let resource = required(resource, "resource");
    let scopes = resync::force_full_pass(resource, company_id).or_raise();
    i32::try_from(scopes).unwrap_or(i32::MAX)
}
