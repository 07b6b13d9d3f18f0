//! The two functions the default jobs call, as the old pg_cron jobs did.

use pgrx::prelude::*;

use crate::data::{installed, queue};
use crate::errors::OrRaise;
use crate::settings;
use crate::sync::launch;

/// Queues every connected user that has no open item. Returns how many were queued.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn queue_procore_sync_for_all_users() -> i32 {
    queue::enqueue_connected_users().or_raise() as i32
}

/// Takes up to `batch_size` due items for the worker pool and makes sure enough pool
/// workers are running. Returns at once; the syncs happen in the workers.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn process_procore_sync_queue() -> i32 {
    installed::require_current_version().or_raise();
    queue::reap_orphaned_items().or_raise();
    let claimed = queue::claim_due_items(settings::batch_size()).or_raise();
    launch::ensure_pool(claimed).or_raise();
    claimed as i32
}

/// Whether a server process with this pid runs now. `pg_stat_activity` is read once per
/// transaction, so a row re-checked after a lock wait would not see a worker that started
/// since and took the item; the process array is looked at on every call.
#[pg_extern(volatile, parallel_safe)]
fn procore_sync_backend_alive(pid: i32) -> bool {
    unsafe { !pg_sys::BackendPidGetProc(pid).is_null() }
}
