//! The sync queue: enqueue, claim, take, finish, reap. Claiming is `FOR UPDATE SKIP
//! LOCKED` with a lease, so two callers never hold the same user and a dead worker's item
//! is taken again once its lease runs out.

use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::timestamps;
use super::transaction::in_transaction;
use crate::errors::SyncError;
use crate::settings;

/// Queues every connected user that has no open item. Returns how many were queued.
pub fn enqueue_connected_users() -> Result<i64, SyncError> {
    Ok(Spi::get_one::<i64>(
        "WITH queued AS (
            INSERT INTO procore_sync_queue (user_id)
            SELECT user_id FROM procore_sync_credentials WHERE NOT needs_reconnect
            ORDER BY user_id
            ON CONFLICT (user_id) WHERE status IN ('pending', 'processing') DO NOTHING
            RETURNING 1)
         SELECT count(*) FROM queued",
    )?
    .unwrap_or(0))
}

/// Marks due items as taken for the pool (status `processing`, no worker yet). An item whose
/// worker died goes back to `pending` (`reap_orphaned_items`); one whose live worker let the
/// lease run out (frozen, stuck) keeps that worker's pid, so the pool worker that takes it
/// knows it takes it over and does not wait for the stuck worker's user lock.
pub fn claim_due_items(limit: i32) -> Result<i64, SyncError> {
    Ok(Spi::get_one_with_args::<i64>(
        "WITH due AS (
            SELECT id FROM procore_sync_queue
            WHERE (status = 'pending' AND next_attempt_at <= now())
               OR (status = 'processing' AND worker_pid IS NULL AND lease_expires_at < now())
            ORDER BY next_attempt_at, id
            LIMIT $1
            FOR UPDATE SKIP LOCKED),
         claimed AS (
            UPDATE procore_sync_queue q
            SET status = 'processing', started_at = now(), worker_pid = NULL,
                lease_expires_at = now() + make_interval(secs => $2)
            FROM due WHERE q.id = due.id
            RETURNING 1)
         SELECT count(*) FROM claimed",
        &[limit.into(), (settings::lease_seconds() as f64).into()],
    )?
    .unwrap_or(0))
}

pub struct TakenItem {
    pub queue_id: i64,
    pub user_id: String,
    pub attempts: i32,
    /// Taken from a worker whose lease ran out (frozen or gone).
    pub taken_over: bool,
}

/// A pool worker takes up to `limit` items for itself: those claimed for the pool, items
/// whose worker let the lease run out, and any other due item, so the pool keeps draining the
/// queue between scheduler ticks. `busy`: users this worker is syncing already, whose items
/// it must not take a second time. Oldest due first, along the due index. Planned on every
/// call: a kept (generic) plan of this statement, blind to the limit, sorted the whole queue.
pub fn take_items(busy: &[String], limit: usize) -> Result<Vec<TakenItem>, SyncError> {
    Spi::connect_mut(|client| {
        let rows = client.update(
            "WITH next AS (
                SELECT id, (status = 'processing' AND worker_pid IS NOT NULL) AS taken_over
                FROM procore_sync_queue
                WHERE status IN ('pending', 'processing')
                  AND ((status = 'processing' AND (worker_pid IS NULL OR lease_expires_at < now()))
                       OR (status = 'pending' AND next_attempt_at <= now()))
                  AND NOT (user_id = ANY ($2::uuid[]))
                ORDER BY next_attempt_at, id
                LIMIT $3
                FOR UPDATE SKIP LOCKED)
             UPDATE procore_sync_queue q
             SET status = 'processing', started_at = now(), worker_pid = pg_backend_pid(),
                 attempts = q.attempts + 1, completed_at = NULL,
                 lease_expires_at = now() + make_interval(secs => $1)
             FROM next WHERE q.id = next.id
             RETURNING q.id, q.user_id::text, q.attempts, next.taken_over",
            None,
            &[
                (settings::lease_seconds() as f64).into(),
                busy.to_vec().into(),
                (limit as i64).into(),
            ],
        )?;
        taken_items(rows)
    })
}

/// Open items (pending or processing): how a worker knows its fair share of them.
pub fn open_items() -> Result<i64, SyncError> {
    Ok(Spi::get_one::<i64>(
        "SELECT count(*) FROM procore_sync_queue WHERE status IN ('pending', 'processing')",
    )?
    .unwrap_or(0))
}

/// A manual sync takes the user's open item if nobody is working on it, or opens one, and
/// marks it as the one the session `requested_by` waits for.
pub fn take_item_for_user(user_id: &str, requested_by: i32) -> Result<TakenItem, SyncError> {
    let busy = Spi::connect_mut(|client| {
        let rows = client.update(
            "SELECT id, worker_pid FROM procore_sync_queue
             WHERE user_id = $1::uuid AND status = 'processing'
               AND worker_pid IS NOT NULL AND lease_expires_at >= now()
               AND procore_sync_backend_alive(worker_pid)
             FOR UPDATE SKIP LOCKED",
            Some(1),
            &[user_id.into()],
        )?;
        match rows.into_iter().next() {
            Some(row) => Ok::<_, SyncError>(Some((
                row.get::<i64>(1)?.unwrap_or(0),
                row.get::<i32>(2)?.unwrap_or(0),
            ))),
            None => Ok(None),
        }
    })?;
    if let Some((item, pid)) = busy {
        return Err(SyncError::AlreadySyncing {
            user: user_id.to_string(),
            item,
            pid,
        });
    }
    Spi::connect_mut(|client| {
        let rows = client.update(
            "INSERT INTO procore_sync_queue AS q
                 (user_id, status, started_at, worker_pid, attempts, lease_expires_at, requested_by)
             VALUES ($1::uuid, 'processing', now(), pg_backend_pid(), 1,
                     now() + make_interval(secs => $2), $3)
             ON CONFLICT (user_id) WHERE status IN ('pending', 'processing') DO UPDATE
             SET status = 'processing', started_at = now(), worker_pid = pg_backend_pid(),
                 attempts = q.attempts + 1, lease_expires_at = EXCLUDED.lease_expires_at,
                 requested_by = EXCLUDED.requested_by
             -- a worker may have taken the item since the check above
             WHERE q.status = 'pending' OR q.worker_pid IS NULL OR q.lease_expires_at < now()
                OR NOT procore_sync_backend_alive(q.worker_pid)
             RETURNING q.id, q.user_id::text, q.attempts",
            Some(1),
            &[
                user_id.into(),
                (settings::lease_seconds() as f64).into(),
                requested_by.into(),
            ],
        )?;
        Ok::<_, SyncError>(taken_items(rows)?.into_iter().next())
    })?
    .ok_or_else(|| SyncError::AlreadySyncing {
        user: user_id.to_string(),
        item: 0,
        pid: 0,
    })
}

/// How a manual sync ended, as `procore_sync_user()` reports it.
pub struct ManualResult {
    pub status: String,
    pub records_written: i64,
    pub requests_made: i64,
    pub error_message: Option<String>,
    pub duration: Option<pgrx::datum::Interval>,
}

/// The item a manual sync asked for by the session `requested_by` ended with, if its worker
/// took one and finished it. A session asks for one sync at a time, and a live session's pid
/// is its own: the newest such item since `asked_at` is this call's.
pub fn manual_result(
    user_id: &str,
    requested_by: i32,
    asked_at: TimestampWithTimeZone,
) -> Result<Option<ManualResult>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT status, records_written, requests_made, error_message,
                    completed_at - started_at
             FROM procore_sync_queue
             WHERE user_id = $1::uuid AND requested_by = $2 AND started_at >= $3
               AND status IN ('completed', 'failed')
             ORDER BY id DESC LIMIT 1",
            Some(1),
            &[user_id.into(), requested_by.into(), asked_at.into()],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(ManualResult {
            status: row.get::<String>(1)?.unwrap_or_default(),
            records_written: row.get::<i64>(2)?.unwrap_or(0),
            requests_made: row.get::<i64>(3)?.unwrap_or(0),
            error_message: row.get::<String>(4)?,
            duration: row.get::<pgrx::datum::Interval>(5)?,
        }))
    })
}

/// Who held the user when a manual sync asked at `asked_at`: the item being synced now, one
/// that ended shortly before, or a worker that locked the user and has not taken its item. A worker commits an item's end and only then lets go of
/// the user's lock, so a manual sync can find the user locked by an item already ended;
/// the margin covers that gap, and this only decides which error the caller gets.
pub fn recent_holder(
    user_id: &str,
    asked_at: TimestampWithTimeZone,
) -> Result<Option<(i64, i32)>, SyncError> {
    let item = match Spi::get_two_with_args::<i64, i32>(
        "SELECT id, worker_pid FROM procore_sync_queue
         WHERE user_id = $1::uuid
           AND (status = 'processing' OR completed_at >= $2 - interval '5 seconds')
         ORDER BY id DESC LIMIT 1",
        &[user_id.into(), asked_at.into()],
    ) {
        Ok((Some(item), pid)) => Some((item, pid.unwrap_or(0))),
        Ok((None, _)) | Err(pgrx::spi::Error::InvalidPosition) => None,
        Err(e) => return Err(e.into()),
    };
    // A worker that has locked the user but not yet taken the item shows in pg_locks only.
    match item {
        Some(found) => Ok(Some(found)),
        None => Ok(user_lock_holder(user_id)?.map(|pid| (0, pid))),
    }
}

fn taken_items(rows: pgrx::spi::SpiTupleTable) -> Result<Vec<TakenItem>, SyncError> {
    rows.into_iter()
        .map(|row| {
            Ok(TakenItem {
                queue_id: row.get(1)?.unwrap_or(0),
                user_id: row.get(2)?.unwrap_or_default(),
                attempts: row.get(3)?.unwrap_or(0),
                taken_over: row.get::<bool>(4).ok().flatten().unwrap_or(false),
            })
        })
        .collect()
}

/// How an item ends: each branch also tells listeners on `procore_sync`.
pub enum Finish<'a> {
    Completed {
        records: i64,
        requests: i64,
        warnings: Option<&'a str>,
    },
    RetryAt {
        at: DateTime<Utc>,
        error: &'a str,
        counts_as_attempt: bool,
    },
    /// Keeps the counts the worker's progress reports left on the row.
    Failed {
        error: &'a str,
    },
    Released,
}

/// Only the worker that holds the item can finish it: one whose lease ran out and was taken
/// over changes nothing. An item that did not complete keeps the counts of its last
/// progress report.
pub fn finish_item(queue_id: i64, finish: Finish) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_queue q SET records_written = p.records, requests_made = p.requests
         FROM procore_sync_progress p
         WHERE q.id = $1 AND p.queue_id = q.id
           AND q.worker_pid = pg_backend_pid() AND p.worker_pid = pg_backend_pid()",
        &[queue_id.into()],
    )?;
    match finish {
        Finish::Completed { records, requests, warnings } => Spi::run_with_args(
            "UPDATE procore_sync_queue
             SET status = 'completed', completed_at = now(), error_message = $2,
                 records_written = $3, requests_made = $4, lease_expires_at = NULL
             WHERE id = $1 AND worker_pid = pg_backend_pid()",
            &[queue_id.into(), warnings.into(), records.into(), requests.into()],
        )?,
        Finish::RetryAt { at, error, counts_as_attempt } => Spi::run_with_args(
            "UPDATE procore_sync_queue
             SET status = 'pending', next_attempt_at = $2, error_message = $3,
                 worker_pid = NULL, lease_expires_at = NULL,
                 attempts = CASE WHEN $4 THEN attempts ELSE greatest(attempts - 1, 0) END
             WHERE id = $1 AND worker_pid = pg_backend_pid()",
            &[
                queue_id.into(),
                timestamps::to_sql(at).into(),
                error.into(),
                counts_as_attempt.into(),
            ],
        )?,
        Finish::Failed { error } => Spi::run_with_args(
            "UPDATE procore_sync_queue
             SET status = 'failed', completed_at = now(), error_message = $2, lease_expires_at = NULL
             WHERE id = $1 AND worker_pid = pg_backend_pid()",
            &[queue_id.into(), error.into()],
        )?,
        Finish::Released => Spi::run_with_args(
            "UPDATE procore_sync_queue
             SET status = 'pending', worker_pid = NULL, lease_expires_at = NULL,
                 attempts = greatest(attempts - 1, 0)
             WHERE id = $1 AND worker_pid = pg_backend_pid()",
            &[queue_id.into()],
        )?,
    }
    Spi::run_with_args(
        "DELETE FROM procore_sync_progress WHERE queue_id = $1 AND worker_pid = pg_backend_pid()",
        &[queue_id.into()],
    )?;
    notify(queue_id)
}

/// `NOTIFY procore_sync` with the item as JSON, sent when the transaction commits.
fn notify(queue_id: i64) -> Result<(), SyncError> {
    Spi::run_with_args(
        "SELECT pg_notify('procore_sync', json_build_object(
                'id', id, 'user_id', user_id, 'status', status, 'attempts', attempts,
                'error_message', error_message, 'records_written', records_written,
                'requests_made', requests_made, 'next_attempt_at', next_attempt_at,
                'completed_at', completed_at)::text)
         FROM procore_sync_queue WHERE id = $1 AND status IN ('completed', 'failed', 'pending')",
        &[queue_id.into()],
    )?;
    Ok(())
}

/// Items whose worker is gone (crash, kill, restart) go back to the queue at once instead
/// of waiting out their lease.
pub fn reap_orphaned_items() -> Result<i64, SyncError> {
    Ok(Spi::get_one::<i64>(
        "WITH orphaned AS (
            UPDATE procore_sync_queue
            SET status = 'pending', worker_pid = NULL, lease_expires_at = NULL,
                error_message = 'sync worker ' || worker_pid || ' stopped before finishing; retrying'
            WHERE status = 'processing' AND worker_pid IS NOT NULL
              AND NOT procore_sync_backend_alive(worker_pid)
            RETURNING 1)
         SELECT count(*) FROM orphaned",
    )?
    .unwrap_or(0))
}

/// Retention: finished items and run history older than `procore_sync.retention`.
pub fn purge_old_rows() -> Result<(), SyncError> {
    let retention = settings::retention_seconds() as f64;
    Spi::run_with_args(
        "DELETE FROM procore_sync_queue
         WHERE status IN ('completed', 'failed')
           AND coalesce(completed_at, created_at) < now() - make_interval(secs => $1)",
        &[retention.into()],
    )?;
    Spi::run_with_args(
        "DELETE FROM procore_sync_job_run_details
         WHERE status NOT IN ('starting', 'running')
           AND coalesce(end_time, start_time) < now() - make_interval(secs => $1)",
        &[retention.into()],
    )?;
    // Handled webhook events go with the rest; a delete event is weighed against the newer
    // ones handled before it, and Procore retries for 12 hours at most, far below retention.
    Spi::run_with_args(
        "DELETE FROM procore_sync_webhook_inbox
         WHERE status IN ('done', 'dropped', 'failed')
           AND coalesce(handled_at, received_at) < now() - make_interval(secs => $1)",
        &[retention.into()],
    )?;
    Spi::run(
        "DELETE FROM procore_sync_progress p
         WHERE NOT EXISTS (SELECT 1 FROM procore_sync_queue q
                           WHERE q.id = p.queue_id AND q.status = 'processing')",
    )?;
    Ok(())
}

/// Queues one user's sync unless they have an open item: a webhook event found their token
/// expiring, and a sync refreshes it.
pub fn enqueue_user(user_id: &str) -> Result<(), SyncError> {
    Spi::run_with_args(
        "INSERT INTO procore_sync_queue (user_id) VALUES ($1::uuid)
         ON CONFLICT (user_id) WHERE status IN ('pending', 'processing') DO NOTHING",
        &[user_id.into()],
    )?;
    Ok(())
}

/// Advisory-lock class of the per-user locks.
const USER_LOCK_CLASS: i32 = 0x5053_5553;

/// A session lock on the user for as long as this worker syncs them. Unlike a look at
/// pg_stat_activity, it cannot be fooled by a worker that started a moment ago, and it goes
/// away with a worker that dies.
pub fn lock_user(user_id: &str) -> bool {
    matches!(
        in_transaction(|| Spi::get_one_with_args::<bool>(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[USER_LOCK_CLASS.into(), user_id.into()],
        )
        .map_err(SyncError::from)),
        Ok(Some(true))
    )
}

pub fn unlock_user(user_id: &str) {
    let _ = in_transaction(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT pg_advisory_unlock($1, hashtext($2))",
            &[USER_LOCK_CLASS.into(), user_id.into()],
        )
        .map_err(SyncError::from)
    });
}

/// The process holding the user's lock now, if any.
fn user_lock_holder(user_id: &str) -> Result<Option<i32>, SyncError> {
    match Spi::get_one_with_args::<i32>(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND classid = $1::oid
           AND objid = hashtext($2)::oid AND objsubid = 2 AND granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
         LIMIT 1",
        &[(USER_LOCK_CLASS as i64).into(), user_id.into()],
    ) {
        Err(pgrx::spi::Error::InvalidPosition) => Ok(None),
        other => Ok(other?),
    }
}
