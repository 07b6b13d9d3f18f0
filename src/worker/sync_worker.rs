//! Sync workers. Pool workers (at most `max_workers`, started on demand, gone after a few
//! idle seconds) drain due queue items, each carrying up to `users_per_worker` users at once
//! (see `flight`); a manual worker syncs one user for `procore_sync_user()` and exits.

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;

use super::flight::{self, lock_user, Source};
use super::{in_transaction, LIBRARY};
use crate::errors::SyncError;
use crate::queue;
use crate::settings;
use crate::visibility;

/// Advisory-lock class whose (class, slot) locks cap the pool at `max_workers`.
const POOL_LOCK_CLASS: i32 = 0x5053_4E43;
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

/// Starts pool workers until there is one per due item, up to `max_workers` in all; each
/// then takes its share of the due items (at most `users_per_worker`). A worker whose items'
/// leases ran out (frozen, or stuck in a call) does not count: its users need another.
pub fn ensure_pool(claimed: i64) -> Result<(), SyncError> {
    let (running, stuck, due) = Spi::get_three_with_args::<i64, i64, i64>(
        "SELECT (SELECT count(*) FROM pg_locks
                 WHERE locktype = 'advisory' AND classid = $1::oid AND objsubid = 2 AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),
                (SELECT count(DISTINCT worker_pid) FROM procore_sync_queue
                 WHERE status = 'processing' AND lease_expires_at < now()),
                (SELECT count(*) FROM procore_sync_queue
                 WHERE (status = 'processing' AND (worker_pid IS NULL OR lease_expires_at < now()))
                    OR (status = 'pending' AND next_attempt_at <= now()))",
        &[(POOL_LOCK_CLASS as i64).into()],
    )?;
    let (running, due) = (running.unwrap_or(0), due.unwrap_or(0).max(claimed));
    let healthy = (running - stuck.unwrap_or(0)).max(0);
    let max_workers = i64::from(settings::max_workers());
    let wanted = (due.min(max_workers) - healthy).min(max_workers - running);
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
            Ok(Ok(item)) => flight::run(Source::Manual(item)),
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
    flight::run(Source::Queue);
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
