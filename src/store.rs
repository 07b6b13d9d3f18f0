//! Everything the sync writes or reads in the database: credentials, records, cursors and
//! progress. Every statement is parameterised; none is built from data.

use chrono::{DateTime, TimeZone, Utc};
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::errors::SyncError;
use crate::plans;
use crate::procore::{RateLimit, Secret, TokenPair};
use crate::records::RecordRow;
use crate::token_journal::Journal;
use procore_sync_core::statements::UPSERT_PAGE;

/// This database's token journal, inside the data directory so it shares its permissions
/// and its backups' fate.
pub fn token_journal() -> Journal {
    let data_dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }
        .to_string_lossy()
        .into_owned();
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    Journal::new(
        std::path::Path::new(&data_dir)
            .join("pg_procore_sync")
            .join(database.to_string()),
    )
}

/// Puts back a pair the journal kept through a crash. Only for users still connected: a
/// user who disconnected since stays disconnected.
pub fn restore_tokens(user_id: &str, tokens: &TokenPair) -> Result<(), SyncError> {
    write_tokens(
        "UPDATE procore_sync_credentials
         SET access_token = $2, refresh_token = $3, expires_at = to_timestamp($4),
             needs_reconnect = false, reconnect_reason = NULL, refreshed_at = now()
         WHERE user_id = $1::uuid",
        user_id,
        tokens,
    )
}

pub struct Credentials {
    pub access_token: Secret,
    pub refresh_token: Secret,
    pub expires_at: DateTime<Utc>,
    pub needs_reconnect: bool,
    pub reconnect_reason: Option<String>,
}

const SELECT_CREDENTIALS: &str = "
    SELECT access_token, refresh_token, extract(epoch FROM expires_at)::float8,
           needs_reconnect, reconnect_reason
    FROM procore_sync_credentials WHERE user_id = $1::uuid";

fn read_credentials(sql: &str, user_id: &str) -> Result<Option<Credentials>, SyncError> {
    // Mutable because the refresh variant locks the row (FOR UPDATE).
    Spi::connect_mut(|client| {
        let rows = client.update(sql, Some(1), &[user_id.into()])?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let epoch: f64 = row.get(3)?.unwrap_or(0.0);
        Ok(Some(Credentials {
            access_token: Secret::new(row.get::<String>(1)?.unwrap_or_default()),
            refresh_token: Secret::new(row.get::<String>(2)?.unwrap_or_default()),
            expires_at: Utc
                .timestamp_opt(epoch as i64, 0)
                .single()
                .unwrap_or_else(Utc::now),
            needs_reconnect: row.get(4)?.unwrap_or(false),
            reconnect_reason: row.get(5)?,
        }))
    })
}

pub fn credentials(user_id: &str) -> Result<Option<Credentials>, SyncError> {
    read_credentials(SELECT_CREDENTIALS, user_id)
}

/// The credentials row, locked until the transaction ends: only one process may spend a
/// single-use refresh token.
pub fn credentials_for_refresh(user_id: &str) -> Result<Option<Credentials>, SyncError> {
    read_credentials(&format!("{SELECT_CREDENTIALS} FOR UPDATE"), user_id)
}

pub fn save_tokens(user_id: &str, tokens: &TokenPair) -> Result<(), SyncError> {
    write_tokens(
        "INSERT INTO procore_sync_credentials AS c
             (user_id, access_token, refresh_token, expires_at)
         VALUES ($1::uuid, $2, $3, to_timestamp($4))
         ON CONFLICT (user_id) DO UPDATE
         SET access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token,
             expires_at = EXCLUDED.expires_at, needs_reconnect = false, reconnect_reason = NULL,
             refreshed_at = now()",
        user_id,
        tokens,
    )
}

/// Runs a statement whose $1..$4 are the user and the pair: id, access token, refresh
/// token, expiry in epoch seconds.
fn write_tokens(sql: &'static str, user_id: &str, tokens: &TokenPair) -> Result<(), SyncError> {
    Spi::run_with_args(
        sql,
        &[
            user_id.into(),
            tokens.access_token.expose().into(),
            tokens.refresh_token.expose().into(),
            (tokens.expires_at.timestamp() as f64).into(),
        ],
    )?;
    Ok(())
}

/// The user must connect again; the queue stops taking them until then.
pub fn mark_needs_reconnect(user_id: &str, reason: &str) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_credentials SET needs_reconnect = true, reconnect_reason = $2
         WHERE user_id = $1::uuid",
        &[user_id.into(), reason.into()],
    )?;
    Ok(())
}

/// Upserts one page; returns how many rows were inserted or changed. A record whose JSON is
/// unchanged is not rewritten, so a second sync of the same data changes nothing.
pub fn upsert_page(
    resource: &str,
    company_id: Option<i64>,
    project_id: Option<i64>,
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
         SET rate_limit_remaining = $2, rate_limit_limit = $3, rate_limit_reset_at = to_timestamp($4)
         WHERE id = $1",
        &[
            queue_id.into(),
            (rate_limit.remaining.min(i32::MAX as u32) as i32).into(),
            (rate_limit.limit.min(i32::MAX as u32) as i32).into(),
            (rate_limit.reset_at as f64).into(),
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
) -> Result<Option<CursorTimes>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT extract(epoch FROM last_synced_at)::float8,
                    extract(epoch FROM last_full_sync_at)::float8,
                    extract(epoch FROM listed_at)::float8
             FROM procore_sync_cursor
             WHERE user_id = $1::uuid AND resource = $2 AND company_id = $3 AND project_id = $4",
            Some(1),
            &[
                user_id.into(),
                resource.into(),
                company_id.into(),
                project_id.into(),
            ],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let at = |v: Option<f64>| v.and_then(|e| Utc.timestamp_opt(e as i64, 0).single());
        Ok(Some(CursorTimes {
            last_synced: at(row.get(1)?),
            last_full: at(row.get(2)?),
            listed: at(row.get(3)?),
        }))
    })
}

/// Records that a pass over one resource in one scope finished. `window_end` is the upper
/// bound the pass asked for (or its start for a full pass), never the finish time, so no
/// change made during the pass is skipped next time. A pass without error also renews the
/// user's grant to see the scope (`listed_at`).
pub fn save_cursor(
    user_id: &str,
    resource: &str,
    company_id: i64,
    project_id: i64,
    window_end: DateTime<Utc>,
    full_pass: bool,
    error: Option<&str>,
) -> Result<(), SyncError> {
    plans::run_kept(
        "INSERT INTO procore_sync_cursor AS c
             (user_id, resource, company_id, project_id, last_synced_at, last_full_sync_at,
              last_error, listed_at)
         VALUES ($1::uuid, $2, $3, $4,
                 CASE WHEN $7::text IS NULL THEN to_timestamp($5) END,
                 CASE WHEN $6 AND $7::text IS NULL THEN to_timestamp($5) END, $7,
                 CASE WHEN $7::text IS NULL THEN clock_timestamp() END)
         ON CONFLICT (user_id, resource, company_id, project_id) DO UPDATE
         SET last_synced_at = coalesce(EXCLUDED.last_synced_at, c.last_synced_at),
             last_full_sync_at = coalesce(EXCLUDED.last_full_sync_at, c.last_full_sync_at),
             last_error = EXCLUDED.last_error,
             listed_at = coalesce(EXCLUDED.listed_at, c.listed_at)",
        &[
            user_id.into(),
            resource.into(),
            company_id.into(),
            project_id.into(),
            (window_end.timestamp() as f64).into(),
            full_pass.into(),
            error.into(),
        ],
        |_| Ok(()),
    )?;
    Ok(())
}
