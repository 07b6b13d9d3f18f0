//! Starting sync workers: the pool that drains the queue (at most `max_workers`, started on
//! demand, gone after a few idle seconds), and one worker per manual `procore_sync_user()`.
//! The entry point they run is `worker::sync_worker`; what it should do travels in
//! `bgw_extra` as a `Task`.

use pgrx::bgworkers::{BackgroundWorkerBuilder, DynamicBackgroundWorker};
use pgrx::prelude::*;

use crate::data::transaction::in_transaction;
use crate::errors::SyncError;
use crate::settings;

/// The library every background worker entry point lives in.
pub const LIBRARY: &str = "procore_sync";

/// Advisory-lock class whose (class, slot) locks cap the pool at `max_workers`.
const POOL_LOCK_CLASS: i32 = 0x5053_4E43;
const WORKER_TYPE: &str = "procore_sync sync worker";

/// What a sync worker was started for.
#[derive(Debug, PartialEq)]
pub enum Task {
    Pool,
    /// A manual sync of `user`, asked for by the session with pid `requested_by`, which
    /// finds its result by that pid on the queue item.
    User {
        user: String,
        requested_by: i32,
    },
}

impl Task {
    fn encode(&self, database: &str) -> String {
        match self {
            Task::Pool => format!("{database}\tpool"),
            Task::User { user, requested_by } => format!("{database}\tuser:{user}:{requested_by}"),
        }
    }

    /// The database and the task a worker's `bgw_extra` names.
    pub fn decode(extra: &str) -> Option<(String, Task)> {
        let (database, task) = extra.split_once('\t')?;
        let task = match task.strip_prefix("user:") {
            Some(rest) => {
                let (user, pid) = rest.rsplit_once(':')?;
                Task::User {
                    user: user.to_string(),
                    requested_by: pid.parse().ok()?,
                }
            }
            None if task == "pool" => Task::Pool,
            None => return None,
        };
        Some((database.to_string(), task))
    }
}

fn builder(name: &str, database: &str, task: &Task) -> BackgroundWorkerBuilder {
    BackgroundWorkerBuilder::new(name)
        .set_type(WORKER_TYPE)
        .set_library(LIBRARY)
        .set_function("procore_sync_worker_main")
        .set_argument(0i32.into_datum())
        .set_extra(&task.encode(database))
        .enable_spi_access()
        .set_restart_time(None)
}

fn current_database() -> Result<String, SyncError> {
    Ok(Spi::get_one::<String>("SELECT current_database()::text")?.unwrap_or_default())
}

/// Starts pool workers until there is one per due item, up to `max_workers` in all; each
/// then takes its share of the due items (at most `users_per_worker`). Due webhook events
/// count as one item: one worker handles a flood of them. A worker whose items'
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
                    OR (status = 'pending' AND next_attempt_at <= now()))
                + (SELECT count(*) FROM (
                       SELECT 1 FROM procore_sync_webhook_inbox
                       WHERE status = 'pending' AND next_attempt_at <= clock_timestamp() + interval '1 second'
                       LIMIT 1) due_events)",
        &[(POOL_LOCK_CLASS as i64).into()],
    )?;
    let (running, due) = (running.unwrap_or(0), due.unwrap_or(0).max(claimed));
    let healthy = (running - stuck.unwrap_or(0)).max(0);
    let max_workers = i64::from(settings::max_workers());
    let wanted = (due.min(max_workers) - healthy).min(max_workers - running);
    let database = current_database()?;
    for _ in 0..wanted.max(0) {
        if builder(WORKER_TYPE, &database, &Task::Pool)
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

/// Syncs one user in a worker of its own and waits for it to end, so that the refreshed
/// tokens and the written pages are committed whatever the caller's transaction does. The
/// item the worker finished carries this session's pid (`requested_by`).
pub fn run_manual_sync(user_id: &str) -> Result<(), SyncError> {
    let database = current_database()?;
    let task = Task::User {
        user: user_id.to_string(),
        requested_by: unsafe { pg_sys::MyProcPid },
    };
    let worker: DynamicBackgroundWorker = builder("procore_sync manual sync", &database, &task)
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

/// A pool worker takes a free slot of the pool, or learns that the pool is full.
pub fn take_pool_slot() -> bool {
    let slot = in_transaction(|| {
        Ok::<_, SyncError>((0..settings::max_workers()).find(|slot| {
            Spi::get_one_with_args::<bool>(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[POOL_LOCK_CLASS.into(), (*slot).into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false)
        }))
    });
    matches!(slot, Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_task_round_trips_through_bgw_extra() {
        let manual = Task::User {
            user: "5b7c0d2e-7a0b-4c39-9d2e-6f1a2b3c4d5e".into(),
            requested_by: 4_194_304,
        };
        let extra = manual.encode(&"d".repeat(63));
        assert!(extra.len() < 128, "bgw_extra holds 128 bytes");
        assert_eq!(Task::decode(&extra), Some(("d".repeat(63), manual)));
        assert_eq!(Task::decode("db\tpool"), Some(("db".into(), Task::Pool)));
        assert!(Task::decode("db\tuser:5b7c").is_none());
        assert!(Task::decode("db\tsomething").is_none());
        assert!(Task::decode("no-tab").is_none());
    }
}
