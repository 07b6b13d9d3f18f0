//! Sync workers. Pool workers (at most `max_workers`, started on demand, gone after a few
//! idle seconds) drain due queue items; a manual worker syncs one user for
//! `procore_sync_user()` and exits.

use std::ffi::CString;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;

use super::{in_transaction, LIBRARY};
use crate::errors::SyncError;
use crate::procore::backoff;
use crate::queue::{self, Finish, TakenItem};
use crate::settings;
use crate::store;
use crate::sync::{self, SyncFailure, SyncItem};
use crate::visibility;

/// Advisory-lock class whose (class, slot) locks cap the pool at `max_workers`.
const POOL_LOCK_CLASS: i32 = 0x5053_4E43;
/// A pool worker with nothing to do for this long exits.
const IDLE_EXIT: Duration = Duration::from_secs(5);
const IDLE_POLL: Duration = Duration::from_millis(250);
const WORKER_TYPE: &str = "procore_sync sync worker";

enum Mode {
    Pool,
    User(String),
}

fn extra_for(database: &str, mode: &Mode) -> String {
    match mode {
        Mode::Pool => format!("{database}\tpool"),
        Mode::User(user) => format!("{database}\tuser:{user}"),
    }
}

fn parse_extra(extra: &str) -> Option<(String, Mode)> {
    let (database, mode) = extra.split_once('\t')?;
    let mode = match mode.strip_prefix("user:") {
        Some(user) => Mode::User(user.to_string()),
        None if mode == "pool" => Mode::Pool,
        None => return None,
    };
    Some((database.to_string(), mode))
}

fn builder(name: &str, database: &str, mode: &Mode) -> BackgroundWorkerBuilder {
    BackgroundWorkerBuilder::new(name)
        .set_type(WORKER_TYPE)
        .set_library(LIBRARY)
        .set_function("procore_sync_worker_main")
        .set_argument(0i32.into_datum())
        .set_extra(&extra_for(database, mode))
        .enable_spi_access()
        .set_restart_time(None)
}

fn current_database() -> Result<String, SyncError> {
    Ok(Spi::get_one::<String>("SELECT current_database()::text")?.unwrap_or_default())
}

/// Starts pool workers until there is one per due item, up to `max_workers` in all.
pub fn ensure_pool(claimed: i64) -> Result<(), SyncError> {
    let (running, due) = Spi::get_two_with_args::<i64, i64>(
        "SELECT (SELECT count(*) FROM pg_locks
                 WHERE locktype = 'advisory' AND classid = $1::oid AND objsubid = 2 AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),
                (SELECT count(*) FROM procore_sync_queue
                 WHERE (status = 'processing' AND worker_pid IS NULL)
                    OR (status = 'pending' AND next_attempt_at <= now()))",
        &[(POOL_LOCK_CLASS as i64).into()],
    )?;
    let (running, due) = (running.unwrap_or(0), due.unwrap_or(0).max(claimed));
    let wanted = due.min(i64::from(settings::max_workers())) - running;
    let database = current_database()?;
    for _ in 0..wanted.max(0) {
        if builder(WORKER_TYPE, &database, &Mode::Pool)
            .load_dynamic()
            .is_err()
        {
            warning!(
                "procore_sync: could not start a sync worker (max_worker_processes reached); \
                 queued items wait for a free worker"
            );
            break;
        }
    }
    Ok(())
}

/// Syncs one user in a worker of its own and waits for it, so that the refreshed tokens
/// and the written pages are committed whatever the caller's transaction does.
pub fn run_manual_sync(user_id: &str) -> Result<(), SyncError> {
    let database = current_database()?;
    let worker: DynamicBackgroundWorker = builder(
        "procore_sync manual sync",
        &database,
        &Mode::User(user_id.to_string()),
    )
    .set_notify_pid(unsafe { pg_sys::MyProcPid })
    .load_dynamic()
    .map_err(|_| {
        SyncError::WorkerUnavailable(
            "could not start a sync worker: max_worker_processes is exhausted".into(),
        )
    })?;
    worker.wait_for_shutdown().map_err(|status| {
        SyncError::WorkerUnavailable(format!("sync worker ended abnormally: {status:?}"))
    })
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn procore_sync_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some((database, mode)) = parse_extra(BackgroundWorker::get_extra()) else {
        log!("procore_sync: sync worker started without a valid task; exiting");
        return;
    };
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let prepared = in_transaction(|| {
        crate::installed::use_extension_schema()?;
        visibility::limit_temp_buffers()
    });
    match prepared {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            log!("procore_sync: sync worker cannot start in {database}: {e}");
            return;
        }
        Err(e) => {
            log!("procore_sync: sync worker cannot start in {database}: {e}");
            return;
        }
    }
    match mode {
        Mode::Pool => run_pool(),
        Mode::User(user) if !lock_user(&user) => {
            log!("procore_sync: manual sync of user {user} not started: another worker is syncing this user")
        }
        Mode::User(user) => match in_transaction(|| queue::take_item_for_user(&user)) {
            Ok(Ok(item)) => run_item(&item, true),
            Ok(Err(e)) => log!("procore_sync: manual sync of user {user} not started: {e}"),
            Err(e) => log!("procore_sync: manual sync of user {user} not started: {e}"),
        },
    }
}

fn run_pool() {
    let slot = in_transaction(|| {
        (0..settings::max_workers()).find(|slot| {
            Spi::get_one_with_args::<bool>(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[POOL_LOCK_CLASS.into(), (*slot).into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false)
        })
    });
    if !matches!(slot, Ok(Some(_))) {
        return; // the pool is full: another worker has this work
    }
    let mut idle_since = Instant::now();
    while !shutdown_requested() {
        reload_settings_if_asked();
        match in_transaction(queue::take_next_item) {
            Ok(Ok(Some(item))) => {
                let locked = lock_user(&item.user_id);
                // The holder of an expired lease is frozen, not syncing: take over, and its
                // own next page will find the item gone.
                if locked || item.taken_over {
                    run_item(&item, false);
                    if locked {
                        unlock_user(&item.user_id);
                    }
                } else {
                    // A manual sync holds this user: try again shortly, without an attempt.
                    let later = Utc::now() + TimeDelta::seconds(5);
                    let finish = Finish::RetryAt {
                        at: later,
                        error: "another worker is syncing this user",
                        counts_as_attempt: false,
                    };
                    let _ = in_transaction(|| queue::finish_item(item.queue_id, finish));
                }
                idle_since = Instant::now();
            }
            Ok(Ok(None)) => {
                if idle_since.elapsed() >= IDLE_EXIT {
                    return;
                }
                BackgroundWorker::wait_latch(Some(IDLE_POLL));
            }
            Ok(Err(e)) => {
                log!("procore_sync: could not take a queue item: {e}");
                BackgroundWorker::wait_latch(Some(Duration::from_secs(1)));
            }
            Err(e) => {
                log!("procore_sync: could not take a queue item: {e}");
                BackgroundWorker::wait_latch(Some(Duration::from_secs(1)));
            }
        }
    }
}

/// Advisory-lock class of the per-user locks.
const USER_LOCK_CLASS: i32 = 0x5053_5553;

/// A session lock on the user for as long as this worker syncs them. Unlike a look at
/// pg_stat_activity, it cannot be fooled by a worker that started a moment ago, and it goes
/// away with a worker that dies.
fn lock_user(user_id: &str) -> bool {
    matches!(
        in_transaction(|| Spi::get_one_with_args::<bool>(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[USER_LOCK_CLASS.into(), user_id.into()],
        )),
        Ok(Ok(Some(true)))
    )
}

fn unlock_user(user_id: &str) {
    let _ = in_transaction(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[USER_LOCK_CLASS.into(), user_id.into()],
        )
    });
}

fn shutdown_requested() -> bool {
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

fn reload_settings_if_asked() {
    if BackgroundWorker::sighup_received() {
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
    }
}

/// Waits on the latch until `duration` has passed; false when the server is shutting down.
fn interruptible_sleep(duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if shutdown_requested() {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        BackgroundWorker::wait_latch(Some(left.min(Duration::from_secs(1))));
        reload_settings_if_asked();
    }
}

fn report_activity(text: &str) {
    if let Ok(text) = CString::new(text) {
        unsafe {
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr())
        };
    }
}

fn run_item(item: &TakenItem, manual: bool) {
    report_activity(&format!("procore_sync: syncing user {}", item.user_id));
    let started = Instant::now();
    let sync_item = SyncItem {
        queue_id: item.queue_id,
        user_id: item.user_id.clone(),
    };
    let mut rate_limit = None;
    let result = sync::sync_user(&sync_item, &interruptible_sleep, &mut rate_limit);
    if let Some(rl) = rate_limit {
        if !matches!(
            in_transaction(|| store::save_rate_limit(item.queue_id, &rl)),
            Ok(Ok(()))
        ) {
            log!(
                "procore_sync: could not record the rate limit of queue item {}",
                item.queue_id
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let finished = match &result {
        Ok(outcome) => {
            log!(
                "procore_sync: user {} synced: {} records written, {} requests, {:.1}s{}",
                item.user_id,
                outcome.records_written,
                outcome.requests_made,
                elapsed,
                if outcome.resource_errors.is_empty() {
                    String::new()
                } else {
                    format!(", {} resource errors", outcome.resource_errors.len())
                }
            );
            let warnings = (!outcome.resource_errors.is_empty()).then(|| {
                format!(
                    "completed with {} resource error(s): {}",
                    outcome.resource_errors.len(),
                    outcome.resource_errors.join("; ")
                )
            });
            in_transaction(|| {
                queue::finish_item(
                    item.queue_id,
                    Finish::Completed {
                        records: outcome.records_written,
                        requests: outcome.requests_made,
                        warnings: warnings.as_deref(),
                    },
                )
            })
        }
        Err(failure) => {
            let message = failure.message();
            log!(
                "procore_sync: user {} sync attempt {} failed after {:.1}s: {}",
                item.user_id,
                item.attempts,
                elapsed,
                message
            );
            let finish = match failure {
                // Released and LeaseLost change nothing when another worker holds the item.
                SyncFailure::Shutdown | SyncFailure::LeaseLost(_) => Finish::Released,
                SyncFailure::RateLimited { retry_at, .. } if !manual => Finish::RetryAt {
                    at: *retry_at,
                    error: &message,
                    counts_as_attempt: false,
                },
                SyncFailure::Retryable(_)
                    if !manual && item.attempts < settings::max_attempts() =>
                {
                    let delay = backoff::retry_delay(
                        item.attempts.max(1) as u32,
                        Duration::from_secs(30),
                        Duration::from_secs(3600),
                        &mut rand::thread_rng(),
                    );
                    Finish::RetryAt {
                        at: Utc::now()
                            + TimeDelta::from_std(delay).unwrap_or(TimeDelta::seconds(30)),
                        error: &message,
                        counts_as_attempt: true,
                    }
                }
                _ => Finish::Failed { error: &message },
            };
            in_transaction(|| queue::finish_item(item.queue_id, finish))
        }
    };
    match finished {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log!(
            "procore_sync: could not record the end of queue item {}: {e}",
            item.queue_id
        ),
        Err(e) => log!(
            "procore_sync: could not record the end of queue item {}: {e}",
            item.queue_id
        ),
    }
    report_activity("procore_sync: idle");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_task_round_trips_through_bgw_extra() {
        let extra = extra_for("postgres", &Mode::User("5b7c".into()));
        assert!(extra.len() < 128, "bgw_extra holds 128 bytes");
        match parse_extra(&extra) {
            Some((db, Mode::User(u))) => {
                assert_eq!((db.as_str(), u.as_str()), ("postgres", "5b7c"))
            }
            _ => panic!("manual task lost"),
        }
        assert!(matches!(parse_extra("db\tpool"), Some((_, Mode::Pool))));
        assert!(parse_extra("db\tsomething").is_none());
        assert!(parse_extra("no-tab").is_none());
    }
}
