//! The sync worker's entry point. Pool workers drain due queue items, each carrying up to
//! `users_per_worker` users at once (`sync::flight`); a manual worker syncs one user for
//! `procore_sync_user()` and exits. `sync::launch` starts them.

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;

use crate::data::queue::lock_user;
use crate::data::transaction::in_transaction;
use crate::data::{installed, queue, visibility};
use crate::errors::SyncError;
use crate::sync::flight::{self, Source};
use crate::sync::launch::{self, Task};

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn procore_sync_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some((database, task)) = Task::decode(BackgroundWorker::get_extra()) else {
        log!("procore_sync: sync worker started without a valid task; exiting");
        return;
    };
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let prepared = in_transaction(|| -> Result<(), SyncError> {
        installed::use_extension_schema()?;
        visibility::limit_temp_buffers()
    });
    if let Err(e) = prepared {
        log!("procore_sync: sync worker cannot start in {database}: {e}");
        return;
    }
    match task {
        Task::Pool if launch::take_pool_slot() => flight::run(Source::Queue),
        Task::Pool => {} // the pool is full: another worker has this work
        Task::User { user, .. } if !lock_user(&user) => {
            log!("procore_sync: manual sync of user {user} not started: another worker is syncing this user")
        }
        Task::User { user, requested_by } => {
            match in_transaction(|| queue::take_item_for_user(&user, requested_by)) {
                Ok(item) => flight::run(Source::Manual(item)),
                Err(e) => log!("procore_sync: manual sync of user {user} not started: {e}"),
            }
        }
    }
}
