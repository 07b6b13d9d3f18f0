//! Operator alerts in Postgres terms. Observations (a user's sync ended, a job run ended,
//! the queue's oldest due item, the webhook backstop's discarded deliveries) go through the
//! pure policies of `procore_sync_core::alerts` against the stored streak, inside the
//! caller's transaction, and at most one alert row comes out. The `procore_sync alerts`
//! worker then composes and sends: nothing here waits on a mail server.

use chrono::{DateTime, TimeDelta, Utc};
use pgrx::prelude::*;

use crate::data::alerts::{self, Delivery, Outcome};
use crate::data::status;
use crate::data::transaction::in_transaction;
use crate::errors::SyncError;
use crate::settings::AlertSettings;
use crate::sync::{counters, flight};
use procore_sync_core::alerts::{
    compose_over, next_retry_from, on_deliveries_check, on_job_run, on_queue_check,
    on_user_outcome, send_email, send_webhook, Alert, AlertError, JobStreak, QueueCheck,
    QueueState, RunOutcome, StreakState, UserOutcome,
};
use procore_sync_core::walk::{SyncFailure, SyncOutcome};

/// Deliveries tried in one pass at most, so a reload or shutdown is never far off.
const DELIVERIES_PER_PASS: i64 = 20;

const QUEUE_SUBJECT: &str = "queue";

fn raise(alert: Option<Alert>) -> Result<(), SyncError> {
    match alert {
        Some(alert) => alerts::raise(&alert),
        None => Ok(()),
    }
}

/// A user's sync ended. Shutdowns, lost leases and rate limits are not failures of the
/// user's: they change nothing.
pub fn note_user_outcome(
    user_id: &str,
    result: &Result<SyncOutcome, SyncFailure>,
    next_attempt: Option<DateTime<Utc>>,
) -> Result<(), SyncError> {
    let outcome = match result {
        Ok(_) => UserOutcome::Succeeded,
        Err(failure @ (SyncFailure::Retryable(_) | SyncFailure::Permanent(_))) => {
            UserOutcome::Failed {
                error: failure.message(),
                next_attempt,
                invalid_grant: alerts::must_reconnect(user_id)?.is_some(),
            }
        }
        Err(_) => return Ok(()),
    };
    let subject = format!("user:{user_id}");
    let previous = alerts::streak(&subject)?
        .and_then(|s| StreakState::parse(&s.state))
        .unwrap_or_default();
    let (next, alert) = on_user_outcome(user_id, previous, outcome);
    if next != previous || alert.is_some() {
        alerts::save_streak(&subject, next.as_str(), 0)?;
    }
    raise(alert)
}

/// A job run ended (or could not start).
pub fn note_job_run(jobid: i64, succeeded: bool, message: &str) -> Result<(), SyncError> {
    let Some(job_name) = alerts::job_name(jobid)? else {
        return Ok(());
    };
    // By id: two roles may each have a job of the same name, each with its own streak.
    let subject = format!("job:{jobid}");
    let stored = alerts::streak(&subject)?;
    let previous = JobStreak {
        failed_runs: stored.as_ref().map_or(0, |s| s.failed_runs.max(0) as u32),
    };
    let outcome = if succeeded {
        RunOutcome::Succeeded
    } else {
        RunOutcome::Failed {
            message: message.to_owned(),
        }
    };
    let (next, alert) = on_job_run(&job_name, previous, outcome);
    if next != previous {
        let state = if next.failed_runs > 0 {
            "failing"
        } else {
            "healthy"
        };
        alerts::save_streak(
            &subject,
            state,
            next.failed_runs.min(i32::MAX as u32) as i32,
        )?;
    }
    raise(alert)
}

/// The webhook backstop found deliveries that Procore discarded.
pub fn note_discarded_deliveries(company_id: i64, discarded: i64) -> Result<(), SyncError> {
    raise(on_deliveries_check(company_id, discarded))
}

/// Whether the queue drains: its oldest due item against `procore_sync.alert_queue_stall`.
pub fn check_queue(settings: &AlertSettings) -> Result<(), SyncError> {
    let queue = status::queue()?;
    let check = QueueCheck {
        oldest_due_since: queue.oldest_due,
        open_items: (queue.counts.pending + queue.counts.processing) as i64,
    };
    let previous = alerts::streak(QUEUE_SUBJECT)?
        .and_then(|s| QueueState::parse(&s.state))
        .unwrap_or_default();
    let (next, alert) = on_queue_check(previous, check, Utc::now(), settings.queue_stall);
    if next != previous {
        alerts::save_streak(QUEUE_SUBJECT, next.as_str(), 0)?;
    }
    raise(alert)
}

/// The channels set now, by the names the delivery table uses.
fn channels(settings: &AlertSettings) -> Vec<&'static str> {
    let mut channels = Vec::new();
    if settings.smtp_url.is_some() && !settings.email_to.is_empty() {
        channels.push("email");
    }
    if settings.webhook_url.is_some() {
        channels.push("webhook");
    }
    channels
}

/// Turns the alerts whose window has closed into messages, one delivery per channel set
/// now. With no channel set, the server log is where they go.
pub fn compose_pending(settings: &AlertSettings) -> Result<usize, SyncError> {
    let pending = alerts::uncomposed()?;
    if pending.is_empty() {
        return Ok(0);
    }
    let messages = compose_over(&pending, Utc::now(), settings.digest_above, settings.window);
    let channels = channels(settings);
    for message in &messages {
        alerts::record_message(message, &channels)?;
        log!(
            "procore_sync alert{}: {}",
            if channels.is_empty() {
                " (no alert channel is set)"
            } else {
                ""
            },
            message.subject
        );
    }
    Ok(messages.len())
}

/// Tries each due delivery once, outside any transaction, and records how it went.
pub fn deliver_due(settings: &AlertSettings) -> Result<usize, SyncError> {
    let due = in_transaction(|| alerts::due_deliveries(DELIVERIES_PER_PASS))?;
    let mut tried = 0;
    for delivery in due {
        // Each try may wait out its timeout: a shutdown must not wait for the whole batch.
        if flight::shutdown_requested() {
            break;
        }
        tried += 1;
        let attempts = delivery.attempts.max(0) as u32 + 1;
        let failure = send(settings, &delivery)
            .err()
            .map(|e| (e.to_string(), e.is_retryable()));
        let outcome = match &failure {
            None => Outcome::Sent,
            Some((error, retryable)) => match next_retry_from(attempts, settings.first_retry) {
                Some(wait) if *retryable => Outcome::RetryAt {
                    at: Utc::now() + TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX),
                    error,
                },
                _ => Outcome::Failed { error },
            },
        };
        match &outcome {
            Outcome::Sent => counters::alert_delivery(true),
            Outcome::Failed { error } => {
                counters::alert_delivery(false);
                log!(
                    "procore_sync: alert delivery {} by {} failed after {attempts} tries: {error}",
                    delivery.id,
                    delivery.channel
                );
            }
            Outcome::RetryAt { .. } => {}
        }
        in_transaction(|| alerts::record_outcome(delivery.id, outcome))?;
    }
    Ok(tried)
}

fn send(settings: &AlertSettings, delivery: &Delivery) -> Result<(), AlertError> {
    let unset = |setting: &str| AlertError::Config(format!("{setting} is not set any more"));
    match delivery.channel.as_str() {
        "email" => send_email(
            settings
                .smtp_url
                .as_ref()
                .ok_or_else(|| unset("procore_sync.smtp_url"))?,
            &settings.email_from,
            &settings.email_to,
            &delivery.message,
            settings.timeout,
            settings.ca_file.as_deref().map(std::path::Path::new),
        ),
        _ => send_webhook(
            settings
                .webhook_url
                .as_ref()
                .ok_or_else(|| unset("procore_sync.alert_webhook_url"))?,
            &delivery.message,
            settings.timeout,
        ),
    }
}
