//! Operator alerts in Postgres terms. Observations (a user's sync ended, a job run ended,
//! the queue's oldest due item, the webhook backstop's discarded deliveries) go through the
//! pure policies of `procore_sync_core::alerts` against the stored streak, inside the
//! caller's transaction, and at most one alert row comes out. The scheduler then composes
//! them ([`AlertPass`]) and hands them to a sending thread: nothing waits on a mail server.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use pgrx::prelude::*;

use crate::data::alerts::{self, Outcome};
use crate::data::status;
use crate::data::transaction::in_transaction;
use crate::errors::SyncError;
use crate::settings::AlertSettings;
use crate::sync::counters;
use procore_sync_core::alerts::{
    compose_over, next_retry_from, on_deliveries_check, on_job_run, on_queue_check,
    on_user_outcome, Alert, Channel, JobStreak, Outbox, Outgoing, QueueCheck, QueueState,
    RunOutcome, Sent, StreakState, UserOutcome,
};
use procore_sync_core::walk::{SyncFailure, SyncOutcome};

/// Deliveries handed to the sending thread in one pass at most.
const DELIVERIES_PER_PASS: i64 = 20;
/// How often the queue's oldest due item is looked at.
const QUEUE_CHECK_EVERY: TimeDelta = TimeDelta::seconds(5);
/// How often old alerts and deliveries are deleted.
const PURGE_EVERY: TimeDelta = TimeDelta::hours(1);

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
fn check_queue(settings: &AlertSettings) -> Result<(), SyncError> {
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
    if settings.to.smtp_url.is_some() && !settings.to.email_to.is_empty() {
        channels.push(Channel::Email.as_str());
    }
    if settings.to.webhook_url.is_some() {
        channels.push(Channel::Webhook.as_str());
    }
    channels
}

/// Turns the alerts whose window has closed into messages, one delivery per channel set
/// now. With no channel set, the server log is where they go.
fn compose_pending(settings: &AlertSettings) -> Result<usize, SyncError> {
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

/// The alert duties of the scheduler's loop: watch the queue, compose what is due, hand
/// due deliveries to the sending thread and record how they went. Nothing here waits on a
/// mail or webhook server, so jobs start on time whatever the alert channels do.
pub struct AlertPass {
    outbox: Outbox,
    /// Deliveries handed over: their tries so far and channel, for recording the outcome.
    sending: HashMap<i64, (u32, Channel)>,
    next_queue_check: DateTime<Utc>,
    next_purge: DateTime<Utc>,
    /// The last failure reported, so that one that lasts is logged once.
    reported: Option<String>,
}

impl AlertPass {
    pub fn start() -> Result<AlertPass, SyncError> {
        let outbox = Outbox::start()
            .map_err(|e| SyncError::Internal(format!("cannot start the alert sender: {e}")))?;
        Ok(AlertPass {
            outbox,
            sending: HashMap::new(),
            next_queue_check: Utc::now(),
            next_purge: Utc::now(),
            reported: None,
        })
    }

    /// A pass's failure when it differs from the last one reported; a success resets it.
    pub fn failure_to_report(&mut self, outcome: Result<(), SyncError>) -> Option<String> {
        match outcome {
            Ok(()) => {
                self.reported = None;
                None
            }
            Err(e) => {
                let text = e.to_string();
                (self.reported.as_deref() != Some(text.as_str())).then(|| {
                    self.reported = Some(text.clone());
                    text
                })
            }
        }
    }

    /// One pass; each step in its own transaction, none inside another.
    pub fn run(&mut self) -> Result<(), SyncError> {
        let settings = crate::settings::alert_settings();
        for sent in self.outbox.finished() {
            self.record(&settings, sent)?;
        }
        let now = Utc::now();
        if now >= self.next_queue_check {
            in_transaction(|| check_queue(&settings))?;
            self.next_queue_check = now + QUEUE_CHECK_EVERY;
        }
        if now >= self.next_purge {
            in_transaction(alerts::purge_old_rows)?;
            self.next_purge = now + PURGE_EVERY;
        }
        in_transaction(|| compose_pending(&settings))?;
        let due = in_transaction(|| alerts::due_deliveries(DELIVERIES_PER_PASS))?;
        for delivery in due {
            let Some(channel) = Channel::parse(&delivery.channel) else {
                continue;
            };
            let tries = delivery.attempts.max(0) as u32;
            if self.outbox.submit(Outgoing {
                id: delivery.id,
                channel,
                message: delivery.message,
                to: settings.to.clone(),
            }) {
                self.sending.insert(delivery.id, (tries, channel));
            }
        }
        Ok(())
    }

    fn record(&mut self, settings: &AlertSettings, sent: Sent) -> Result<(), SyncError> {
        let (tries, channel) = self.sending.remove(&sent.id).unwrap_or((0, Channel::Email));
        let attempts = tries + 1;
        let failure = sent.result.err().map(|e| (e.to_string(), e.is_retryable()));
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
                    sent.id,
                    channel.as_str()
                );
            }
            Outcome::RetryAt { .. } => {}
        }
        in_transaction(|| alerts::record_outcome(sent.id, outcome))
    }
}
