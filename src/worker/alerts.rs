//! The `procore_sync alerts` process: watches the queue, turns raised alerts into messages
//! and sends them by email and webhook, with retries. A process of its own, so a slow or
//! dead mail server never holds up a sync or a job.

use std::time::Duration;

use chrono::Utc;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::data::alerts::{next_delivery_due, purge_old_rows};
use crate::data::installed;
use crate::data::transaction::in_transaction;
use crate::errors::SyncError;
use crate::settings;
use crate::sync::alerts::{check_queue, compose_pending, deliver_due};
use crate::sync::launch::LIBRARY;

/// The longest sleep between passes: how late a message can be after its window closes.
const PASS: Duration = Duration::from_secs(1);
/// How often the queue's oldest due item is looked at.
const QUEUE_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often old alerts and deliveries are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// The wait before looking again for the extension, when it is absent.
const NO_EXTENSION_RETRY: Duration = Duration::from_secs(5);

pub fn register() {
    BackgroundWorkerBuilder::new("procore_sync alerts")
        .set_type("procore_sync alerts")
        .set_library(LIBRARY)
        .set_function("procore_sync_alerts_main")
        .set_argument(0i32.into_datum())
        .enable_spi_access()
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn procore_sync_alerts_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = settings::database_name();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let mut ready = false;
    let mut sleep = Duration::ZERO;
    let mut next_queue_check = Utc::now();
    let mut next_purge = Utc::now();
    loop {
        if !BackgroundWorker::wait_latch(Some(sleep)) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if !ready {
            ready = in_transaction(installed::use_extension_schema).is_ok();
            if !ready {
                sleep = NO_EXTENSION_RETRY;
                continue;
            }
        }
        let settings = settings::alert_settings();
        let now = Utc::now();
        let queue_check_due = now >= next_queue_check;
        let purge_due = now >= next_purge;
        let pass = in_transaction(|| -> Result<(), SyncError> {
            if queue_check_due {
                check_queue(&settings)?;
            }
            if purge_due {
                purge_old_rows()?;
            }
            compose_pending(&settings).map(drop)
        })
        .and_then(|()| deliver_due(&settings))
        .and_then(|_| in_transaction(next_delivery_due));
        match pass {
            Ok(next_due) => {
                if queue_check_due {
                    next_queue_check = now + QUEUE_CHECK_EVERY;
                }
                if purge_due {
                    next_purge = now + PURGE_EVERY;
                }
                sleep = next_due
                    .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                    .unwrap_or(PASS)
                    .min(PASS);
            }
            Err(e) => {
                // A dropped or outdated extension is the scheduler's to report, once; any
                // other failure is this worker's.
                if in_transaction(installed::require_current_version).is_ok() {
                    log!("procore_sync alerts: {e}");
                }
                ready = false;
                sleep = NO_EXTENSION_RETRY;
            }
        }
    }
    log!("procore_sync alerts stopping");
    // A non-zero exit makes the postmaster start the worker again after its restart time
    // if an administrator terminated it; at shutdown nothing is restarted anyway.
    unsafe { pg_sys::proc_exit(1) };
}
