//! The alert tables (sql/alerts.sql): streaks, raised alerts, and their deliveries.

use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::JsonB;

use super::timestamps;
use crate::errors::SyncError;
use crate::settings;
use procore_sync_core::alerts::{Alert, Message, PendingAlert};

/// Alerts composed in one pass at most: a backlog drains over a few passes.
const COMPOSE_BATCH: i64 = 1000;

/// A subject's stored streak: its state's name and the failed runs in a row.
pub struct Streak {
    pub state: String,
    pub failed_runs: i32,
}

pub fn streak(subject: &str) -> Result<Option<Streak>, SyncError> {
    Spi::connect(|client| {
        let mut rows = client.select(
            "SELECT state, failed_runs FROM procore_sync_alert_streak WHERE subject = $1",
            Some(1),
            &[subject.into()],
        )?;
        let row = rows.next();
        Ok(match row {
            Some(row) => Some(Streak {
                state: row.get(1)?.unwrap_or_default(),
                failed_runs: row.get(2)?.unwrap_or(0),
            }),
            None => None,
        })
    })
}

pub fn save_streak(subject: &str, state: &str, failed_runs: i32) -> Result<(), SyncError> {
    Spi::run_with_args(
        "INSERT INTO procore_sync_alert_streak (subject, state, failed_runs) VALUES ($1, $2, $3)
         ON CONFLICT (subject) DO UPDATE
         SET state = EXCLUDED.state, failed_runs = EXCLUDED.failed_runs, updated_at = now()
         WHERE (procore_sync_alert_streak.state, procore_sync_alert_streak.failed_runs)
               IS DISTINCT FROM (EXCLUDED.state, EXCLUDED.failed_runs)",
        &[subject.into(), state.into(), failed_runs.into()],
    )?;
    Ok(())
}

pub fn raise(alert: &Alert) -> Result<(), SyncError> {
    Spi::run_with_args(
        "INSERT INTO procore_sync_alert (kind, subject, details) VALUES ($1, $2, $3)",
        &[
            alert.kind().into(),
            alert.dedupe_key().into(),
            JsonB(alert.details()).into(),
        ],
    )?;
    Ok(())
}

/// Alerts not yet in a message, oldest first. A row whose details this version cannot read
/// is marked composed, so it never holds the others back.
pub fn uncomposed() -> Result<Vec<PendingAlert>, SyncError> {
    let mut unreadable: Vec<i64> = Vec::new();
    let pending = Spi::connect(|client| {
        let rows = client.select(
            "SELECT id, details, created_at FROM procore_sync_alert
             WHERE composed_at IS NULL ORDER BY created_at, id LIMIT $1",
            None,
            &[COMPOSE_BATCH.into()],
        )?;
        let mut pending = Vec::new();
        for row in rows {
            let id: i64 = row.get(1)?.unwrap_or(0);
            let details = row.get::<JsonB>(2)?.map(|j| j.0).unwrap_or_default();
            let created_at = row
                .get::<TimestampWithTimeZone>(3)?
                .and_then(timestamps::from_sql)
                .unwrap_or_else(Utc::now);
            match Alert::from_details(&details) {
                Ok(alert) => pending.push(PendingAlert {
                    id,
                    alert,
                    created_at,
                }),
                Err(_) => unreadable.push(id),
            }
        }
        Ok::<_, SyncError>(pending)
    })?;
    if !unreadable.is_empty() {
        Spi::run_with_args(
            "UPDATE procore_sync_alert SET composed_at = now() WHERE id = ANY($1)",
            &[unreadable.into()],
        )?;
    }
    Ok(pending)
}

/// Marks the message's alerts composed and queues one delivery per channel.
pub fn record_message(message: &Message, channels: &[&str]) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_alert SET composed_at = now() WHERE id = ANY($1)",
        &[message.alert_ids.clone().into()],
    )?;
    for channel in channels {
        Spi::run_with_args(
            "INSERT INTO procore_sync_alert_delivery (alert_ids, channel, subject, body, payload)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                message.alert_ids.clone().into(),
                (*channel).into(),
                message.subject.as_str().into(),
                message.text.as_str().into(),
                JsonB(message.json.clone()).into(),
            ],
        )?;
    }
    Ok(())
}

/// A delivery whose time has come.
pub struct Delivery {
    pub id: i64,
    pub channel: String,
    pub message: Message,
    pub attempts: i32,
}

pub fn due_deliveries(limit: i64) -> Result<Vec<Delivery>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT id, channel, subject, body, payload, attempts, alert_ids
             FROM procore_sync_alert_delivery
             WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()
             ORDER BY next_attempt_at, id LIMIT $1",
            None,
            &[limit.into()],
        )?;
        let mut due = Vec::new();
        for row in rows {
            due.push(Delivery {
                id: row.get(1)?.unwrap_or(0),
                channel: row.get(2)?.unwrap_or_default(),
                message: Message {
                    subject: row.get(3)?.unwrap_or_default(),
                    text: row.get(4)?.unwrap_or_default(),
                    json: row.get::<JsonB>(5)?.map(|j| j.0).unwrap_or_default(),
                    alert_ids: row.get::<Vec<i64>>(7)?.unwrap_or_default(),
                },
                attempts: row.get(6)?.unwrap_or(0),
            });
        }
        Ok(due)
    })
}

/// How a try of a delivery ended.
pub enum Outcome<'a> {
    Sent,
    RetryAt { at: DateTime<Utc>, error: &'a str },
    Failed { error: &'a str },
}

pub fn record_outcome(delivery_id: i64, outcome: Outcome) -> Result<(), SyncError> {
    let (status, next, error) = match outcome {
        Outcome::Sent => ("sent", None, None),
        Outcome::RetryAt { at, error } => ("pending", Some(timestamps::to_sql(at)), Some(error)),
        Outcome::Failed { error } => ("failed", None, Some(error)),
    };
    Spi::run_with_args(
        "UPDATE procore_sync_alert_delivery
         SET attempts = attempts + 1, status = $2,
             next_attempt_at = coalesce($3, next_attempt_at),
             last_error = coalesce($4, last_error),
             finished_at = CASE WHEN $2 = 'pending' THEN NULL ELSE clock_timestamp() END
         WHERE id = $1",
        &[delivery_id.into(), status.into(), next.into(), error.into()],
    )?;
    Ok(())
}

/// Composed alerts and finished deliveries past retention.
pub fn purge_old_rows() -> Result<(), SyncError> {
    let retention = settings::retention_seconds() as f64;
    Spi::run_with_args(
        "DELETE FROM procore_sync_alert_delivery
         WHERE status <> 'pending' AND finished_at < now() - make_interval(secs => $1)",
        &[retention.into()],
    )?;
    Spi::run_with_args(
        "DELETE FROM procore_sync_alert
         WHERE composed_at IS NOT NULL AND created_at < now() - make_interval(secs => $1)
           AND NOT EXISTS (SELECT 1 FROM procore_sync_alert_delivery d
                           WHERE d.status = 'pending' AND procore_sync_alert.id = ANY (d.alert_ids))",
        &[retention.into()],
    )?;
    Ok(())
}

/// The job's name, which its alerts and streak go by; `None` for a job deleted meanwhile.
/// Both look-ups here are scalar subqueries because `get_one` fails on no row.
pub fn job_name(jobid: i64) -> Result<Option<String>, SyncError> {
    Ok(Spi::get_one_with_args::<String>(
        "SELECT (SELECT coalesce(jobname, 'job ' || jobid) FROM procore_sync_job WHERE jobid = $1)",
        &[jobid.into()],
    )?)
}

/// Whether the user's credentials say they must reconnect, and why.
pub fn must_reconnect(user_id: &str) -> Result<Option<String>, SyncError> {
    Ok(Spi::get_one_with_args::<String>(
        "SELECT (SELECT coalesce(reconnect_reason, 'the Procore grant was revoked')
                 FROM procore_sync_credentials WHERE user_id = $1::uuid AND needs_reconnect)",
        &[user_id.into()],
    )?)
}
