//! What the sync writes or reads in the database besides credentials: records, cursors,
//! leases, progress and rate limits. Every statement is parameterised; none is built from data.

use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::JsonB;

use super::timestamps;
use crate::data::plans;
use crate::errors::SyncError;
use crate::procore::RateLimit;
use crate::records::RecordRow;
use procore_sync_core::statements::UPSERT_PAGE;

/// Upserts one page; returns how many rows were inserted or changed. A record whose JSON is
/// unchanged is not rewritten, so a second sync of the same data changes nothing.
pub fn upsert_page(
    resource: &str,
    company_id: Option<i64>,
    project_id: Option<i64>,
    parent_id: Option<i64>,
    rows: Vec<RecordRow>,
) -> Result<i64, SyncError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut names = Vec::with_capacity(rows.len());
    let mut statuses = Vec::with_capacity(rows.len());
    let mut updated = Vec::with_capacity(rows.len());
    let mut data = Vec::with_capacity(rows.len());
    for row in rows {
        ids.push(row.procore_id);
        names.push(row.name);
        statuses.push(row.status);
        updated.push(row.updated_at);
        data.push(JsonB(row.data));
    }
    let changed = plans::get_one_kept::<i64>(
        UPSERT_PAGE,
        &[
            resource.into(),
            company_id.into(),
            project_id.into(),
            ids.into(),
            names.into(),
            statuses.into(),
            updated.into(),
            data.into(),
            parent_id.into(),
        ],
    )?;
    Ok(changed.unwrap_or(0))
}

pub struct Progress<'a> {
    pub queue_id: i64,
    pub user_id: &'a str,
    pub resource: &'a str,
    pub company_id: Option<i64>,
    pub project_id: Option<i64>,
    pub pages: i64,
    pub records: i64,
    pub requests: i64,
    pub rate_limit: Option<(i32, i32)>,
}

/// Proves this worker still holds the user's item, and renews the lease once half of it is
/// gone. Every write of a sync starts with it, in the same transaction, so a worker whose
/// lease ran out and was taken over writes nothing more. A lease with more than half left
/// cannot be taken over before this transaction commits, so most writes only read the row
/// instead of adding an update of the queue to every page.
pub fn hold_lease(queue_id: i64, lease_seconds: i64) -> Result<(), SyncError> {
    let still_ours = plans::get_one_kept::<bool>(
        "WITH renewed AS (
            UPDATE procore_sync_queue
            SET lease_expires_at = now() + make_interval(secs => $2)
            WHERE id = $1 AND status = 'processing' AND worker_pid = pg_backend_pid()
              AND (lease_expires_at IS NULL
                   OR lease_expires_at < now() + make_interval(secs => $2 / 2))
            RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM renewed)
             OR EXISTS (SELECT 1 FROM procore_sync_queue
                        WHERE id = $1 AND status = 'processing' AND worker_pid = pg_backend_pid()
                          AND lease_expires_at >= now() + make_interval(secs => $2 / 2))",
        &[queue_id.into(), (lease_seconds as f64).into()],
    )?;
    match still_ours {
        Some(true) => Ok(()),
        _ => Err(SyncError::LeaseLost(queue_id)),
    }
}

/// Live progress for the running-syncs view. Call after `hold_lease`. The queue row gets its
/// counts when the item ends (`queue::finish_item`).
pub fn record_progress(p: &Progress) -> Result<(), SyncError> {
    let (remaining, limit) = match p.rate_limit {
        Some((r, l)) => (Some(r), Some(l)),
        None => (None, None),
    };
    plans::run_kept(
        "INSERT INTO procore_sync_progress AS p
             (queue_id, user_id, worker_pid, resource, company_id, project_id, pages, records,
              requests, rate_limit_remaining, rate_limit_limit, updated_at)
         VALUES ($1, $2::uuid, pg_backend_pid(), $3, $4, $5, $6, $7, $8, $9, $10, now())
         ON CONFLICT (queue_id) DO UPDATE
         SET worker_pid = EXCLUDED.worker_pid, resource = EXCLUDED.resource,
             company_id = EXCLUDED.company_id, project_id = EXCLUDED.project_id,
             pages = EXCLUDED.pages, records = EXCLUDED.records, requests = EXCLUDED.requests,
             rate_limit_remaining = coalesce(EXCLUDED.rate_limit_remaining, p.rate_limit_remaining),
             rate_limit_limit = coalesce(EXCLUDED.rate_limit_limit, p.rate_limit_limit),
             updated_at = now()",
        &[
            p.queue_id.into(),
            p.user_id.into(),
            p.resource.into(),
            p.company_id.into(),
            p.project_id.into(),
            p.pages.into(),
            p.records.into(),
            p.requests.into(),
            remaining.into(),
            limit.into(),
        ],
        |_| Ok(()),
    )?;
    Ok(())
}

/// The user's rate-limit headroom as Procore last reported it, kept on the queue row for
/// the status view.
pub fn save_rate_limit(queue_id: i64, rate_limit: &RateLimit) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_queue
         SET rate_limit_remaining = $2, rate_limit_limit = $3, rate_limit_reset_at = $4
         WHERE id = $1",
        &[
            queue_id.into(),
            (rate_limit.remaining.min(i32::MAX as u32) as i32).into(),
            (rate_limit.limit.min(i32::MAX as u32) as i32).into(),
            DateTime::from_timestamp(rate_limit.reset_at, 0)
                .map(timestamps::to_sql)
                .into(),
        ],
    )?;
    Ok(())
}

pub use procore_sync_core::walk::CursorTimes;

/// When this user last finished `resource` in this scope, for incremental reads.
pub fn cursor(
    user_id: &str,
    resource: &str,
    company_id: i64,
    project_id: i64,
    parent_id: i64,
) -> Result<Option<CursorTimes>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT last_synced_at, last_full_sync_at, listed_at
             FROM procore_sync_cursor
             WHERE user_id = $1::uuid AND resource = $2 AND company_id = $3 AND project_id = $4
               AND parent_id = $5",
            Some(1),
            &[
                user_id.into(),
                resource.into(),
                company_id.into(),
                project_id.into(),
                parent_id.into(),
            ],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let at = |v: Option<TimestampWithTimeZone>| v.and_then(timestamps::from_sql);
        Ok(Some(CursorTimes {
            last_synced: at(row.get(1)?),
            last_full: at(row.get(2)?),
            listed: at(row.get(3)?),
        }))
    })
}

/// Records that a pass over one resource in one scope (company, project, parent record; 0
/// for none) finished. `window_end` is the upper
/// bound the pass asked for (or its start for a full pass), never the finish time, so no
/// change made during the pass is skipped next time. A pass without error also renews the
/// user's grant to see the scope (`listed_at`).
pub fn save_cursor(
    user_id: &str,
    resource: &str,
    (company_id, project_id, parent_id): (i64, i64, i64),
    window_end: DateTime<Utc>,
    full_pass: bool,
    error: Option<&str>,
) -> Result<(), SyncError> {
    plans::run_kept(
        "INSERT INTO procore_sync_cursor AS c
             (user_id, resource, company_id, project_id, last_synced_at, last_full_sync_at,
              last_error, listed_at, parent_id)
         VALUES ($1::uuid, $2, $3, $4,
                 CASE WHEN $7::text IS NULL THEN $5::timestamptz END,
                 CASE WHEN $6 AND $7::text IS NULL THEN $5::timestamptz END, $7,
                 CASE WHEN $7::text IS NULL THEN clock_timestamp() END, $8)
         ON CONFLICT (user_id, resource, company_id, project_id, parent_id) DO UPDATE
         SET last_synced_at = coalesce(EXCLUDED.last_synced_at, c.last_synced_at),
             last_full_sync_at = coalesce(EXCLUDED.last_full_sync_at, c.last_full_sync_at),
             last_error = EXCLUDED.last_error,
             listed_at = coalesce(EXCLUDED.listed_at, c.listed_at)",
        &[
            user_id.into(),
            resource.into(),
            company_id.into(),
            project_id.into(),
            timestamps::to_sql(window_end).into(),
            full_pass.into(),
            error.into(),
            parent_id.into(),
        ],
        |_| Ok(()),
    )?;
    Ok(())
}

/// Up to `limit` ids above `after` of the live records of a parent scope: the parents whose
/// children a sync lists next. Records hidden from the user are included on purpose: Procore
/// refuses them the children's listing, and that refusal (a denied cursor row) is what hides
/// the children already stored by others.
pub fn parent_ids(
    resource: &str,
    company_id: i64,
    project_id: Option<i64>,
    parent_id: Option<i64>,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<i64>, SyncError> {
    let mut ids = Vec::with_capacity(limit);
    plans::run_kept(
        "SELECT r.procore_id FROM procore_records r
         WHERE r.resource = $1 AND r.company_id = $2
           AND (r.project_id = $3 OR ($3 IS NULL AND r.project_id IS NULL))
           AND (r.parent_id = $4 OR ($4 IS NULL AND r.parent_id IS NULL))
           AND r.deleted_at IS NULL AND r.procore_id > coalesce($5, -9223372036854775808)
         ORDER BY r.procore_id LIMIT $6",
        &[
            resource.into(),
            company_id.into(),
            project_id.into(),
            parent_id.into(),
            after.into(),
            (limit as i64).into(),
        ],
        |table| {
            for row in table {
                if let Some(id) = row.get::<i64>(1)? {
                    ids.push(id);
                }
            }
            Ok(())
        },
    )?;
    Ok(ids)
}

/// Records a user who can list the scope saw in Procore's own list of deleted records
/// (a recycle bin, `filters[include_deleted]=only`): deleted for everyone, as a webhook's
/// delete event marks them. Only records of that scope, so one scope's list can never mark
/// another's. Returns how many were marked.
pub fn mark_listed_deleted(
    resource: &str,
    company_id: i64,
    project_id: Option<i64>,
    parent_id: Option<i64>,
    ids: &[i64],
) -> Result<i64, SyncError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let marked = plans::get_one_kept::<i64>(
        "WITH gone AS (
            UPDATE procore_records r SET deleted_at = now()
            WHERE r.resource = $1 AND r.company_id = $2 AND r.procore_id = ANY ($5::bigint[])
              AND (r.project_id = $3 OR ($3 IS NULL AND r.project_id IS NULL))
              AND (r.parent_id = $4 OR ($4 IS NULL AND r.parent_id IS NULL))
              AND r.deleted_at IS NULL
            RETURNING r.procore_id),
         forgotten AS (
            DELETE FROM procore_sync_hidden h USING gone g
            WHERE h.resource = $1 AND h.company_id = $2 AND h.procore_id = g.procore_id)
         SELECT count(*) FROM gone",
        &[
            resource.into(),
            company_id.into(),
            project_id.into(),
            parent_id.into(),
            ids.to_vec().into(),
        ],
    )?;
    Ok(marked.unwrap_or(0))
}
