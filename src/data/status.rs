//! What the status page and the metrics show, read from the tables: the queue, the users,
//! running syncs, recent failures, job runs, webhooks and the last 24 hours. Read-only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;

use super::timestamps;
use crate::errors::SyncError;
use procore_sync_core::metrics::QueueCounts;
use procore_sync_core::status_page::{
    CompanyWebhooks, HourStats, JobRun, QueueStatus, RateLimitHeadroom, RunningSync, SyncFailure,
    UserError, UserStatus, RECENT_ROWS,
};

fn at(row: &SpiHeapTupleData, n: usize) -> Result<Option<DateTime<Utc>>, SyncError> {
    Ok(row
        .get::<TimestampWithTimeZone>(n)?
        .and_then(timestamps::from_sql))
}

fn count(row: &SpiHeapTupleData, n: usize) -> Result<u64, SyncError> {
    Ok(row.get::<i64>(n)?.unwrap_or(0).max(0) as u64)
}

pub fn queue() -> Result<QueueStatus, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT count(*) FILTER (WHERE status = 'pending'),
                    count(*) FILTER (WHERE status = 'processing'),
                    count(*) FILTER (WHERE status = 'completed'),
                    count(*) FILTER (WHERE status = 'failed'),
                    min(next_attempt_at) FILTER (WHERE status = 'pending' AND next_attempt_at <= now())
             FROM procore_sync_queue",
            None,
            &[],
        )?;
        let mut queue = QueueStatus::default();
        if let Some(row) = rows.into_iter().next() {
            queue.counts = QueueCounts {
                pending: count(&row, 1)?,
                processing: count(&row, 2)?,
                completed: count(&row, 3)?,
                failed: count(&row, 4)?,
            };
            queue.oldest_due = at(&row, 5)?;
        }
        Ok(queue)
    })
}

/// Users a live sync worker holds now.
pub fn users_in_flight() -> Result<u64, SyncError> {
    Ok(Spi::get_one::<i64>(
        "SELECT count(*) FROM procore_sync_queue
         WHERE status = 'processing' AND worker_pid IS NOT NULL
           AND procore_sync_backend_alive(worker_pid)",
    )?
    .unwrap_or(0)
    .max(0) as u64)
}

pub fn inbox_backlog() -> Result<u64, SyncError> {
    Ok(Spi::get_one::<i64>(
        "SELECT count(*) FROM procore_sync_webhook_inbox WHERE status IN ('pending', 'processing')",
    )?
    .unwrap_or(0)
    .max(0) as u64)
}

/// Job names by id, for counters kept by id.
pub fn job_names() -> Result<Vec<(i64, String)>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select("SELECT jobid, jobname FROM procore_sync_job", None, &[])?;
        let mut names = Vec::new();
        for row in rows {
            names.push((row.get(1)?.unwrap_or(0), row.get(2)?.unwrap_or_default()));
        }
        Ok(names)
    })
}

pub fn users() -> Result<Vec<UserStatus>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT user_id::text, connected, last_success, last_error_at,
                    coalesce(last_error, reconnect_reason), next_attempt,
                    rate_limit_remaining, rate_limit_limit
             FROM procore_sync_user_status ORDER BY user_id",
            None,
            &[],
        )?;
        let mut users = Vec::new();
        for row in rows {
            let reason: Option<String> = row.get(5)?;
            let error_at = at(&row, 4)?;
            let connected = row.get::<bool>(2)?.unwrap_or(false);
            let last_error = match (error_at, reason) {
                (Some(at), Some(reason)) => Some(UserError { at, reason }),
                (None, Some(reason)) if !connected => Some(UserError {
                    at: Utc::now(),
                    reason,
                }),
                _ => None,
            };
            let rate_limit = match (row.get::<i32>(7)?, row.get::<i32>(8)?) {
                (Some(remaining), Some(limit)) => Some(RateLimitHeadroom {
                    remaining: remaining.max(0) as u64,
                    limit: limit.max(0) as u64,
                }),
                _ => None,
            };
            users.push(UserStatus {
                user_id: row.get(1)?.unwrap_or_default(),
                connected,
                last_success: at(&row, 3)?,
                last_error,
                next_attempt: at(&row, 6)?,
                rate_limit,
            });
        }
        Ok(users)
    })
}

pub fn running() -> Result<Vec<RunningSync>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT user_id::text, coalesce(resource, ''), pages, records, requests, started_at
             FROM procore_sync_running",
            None,
            &[],
        )?;
        let mut running = Vec::new();
        for row in rows {
            running.push(RunningSync {
                user_id: row.get(1)?.unwrap_or_default(),
                resource: row.get(2)?.unwrap_or_default(),
                pages: count(&row, 3)?,
                records: count(&row, 4)?,
                requests: count(&row, 5)?,
                started_at: at(&row, 6)?.unwrap_or_else(Utc::now),
            });
        }
        Ok(running)
    })
}

pub fn recent_failures() -> Result<Vec<SyncFailure>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT user_id::text, coalesce(completed_at, created_at), attempts,
                    coalesce(error_message, '')
             FROM procore_sync_queue WHERE status = 'failed'
             ORDER BY completed_at DESC NULLS LAST LIMIT $1",
            None,
            &[(RECENT_ROWS as i64).into()],
        )?;
        let mut failures = Vec::new();
        for row in rows {
            failures.push(SyncFailure {
                user_id: row.get(1)?.unwrap_or_default(),
                at: at(&row, 2)?.unwrap_or_else(Utc::now),
                attempts: row.get::<i32>(3)?.unwrap_or(0).max(0) as u32,
                reason: row.get(4)?.unwrap_or_default(),
            });
        }
        Ok(failures)
    })
}

pub fn job_runs() -> Result<Vec<JobRun>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT coalesce(jobname, jobid::text), status, start_time, end_time - start_time,
                    return_message
             FROM procore_sync_job_run_details
             WHERE start_time IS NOT NULL
             ORDER BY start_time DESC LIMIT $1",
            None,
            &[(RECENT_ROWS as i64).into()],
        )?;
        let mut runs = Vec::new();
        for row in rows {
            let duration = row
                .get::<Interval>(4)?
                .and_then(|i| Duration::try_from(i).ok());
            runs.push(JobRun {
                job: row.get(1)?.unwrap_or_default(),
                status: row.get(2)?.unwrap_or_default(),
                start: at(&row, 3)?.unwrap_or_else(Utc::now),
                duration,
                message: row.get(5)?,
            });
        }
        Ok(runs)
    })
}

pub fn webhooks() -> Result<Vec<CompanyWebhooks>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT company_id, last_delivery_at, events_pending, events_dropped, events_failed,
                    discarded_deliveries
             FROM procore_sync_webhooks ORDER BY company_id",
            None,
            &[],
        )?;
        let mut hooks = Vec::new();
        for row in rows {
            hooks.push(CompanyWebhooks {
                company_id: row.get(1)?.unwrap_or(0),
                last_delivery: at(&row, 2)?,
                pending: count(&row, 3)?,
                dropped: count(&row, 4)?,
                failed: count(&row, 5)?,
                discarded: row.get::<i32>(6)?.unwrap_or(0).max(0) as u64,
            });
        }
        Ok(hooks)
    })
}

/// Syncs, records and failures per hour over the last day, from the queue's finished items
/// (as far as retention keeps them).
pub fn hourly() -> Result<Vec<HourStats>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT date_trunc('hour', completed_at),
                    count(*) FILTER (WHERE status = 'completed'),
                    coalesce(sum(records_written) FILTER (WHERE status = 'completed'), 0)::bigint,
                    count(*) FILTER (WHERE status = 'failed')
             FROM procore_sync_queue
             WHERE completed_at >= now() - interval '24 hours'
               AND status IN ('completed', 'failed')
             GROUP BY 1",
            None,
            &[],
        )?;
        let mut hours = Vec::new();
        for row in rows {
            let Some(hour) = at(&row, 1)? else { continue };
            hours.push(HourStats {
                hour,
                syncs_completed: count(&row, 2)?,
                records_written: count(&row, 3)?,
                failures: count(&row, 4)?,
            });
        }
        Ok(hours)
    })
}
