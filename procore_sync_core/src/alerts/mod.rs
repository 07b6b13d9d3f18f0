//! Operator alerts without Postgres: what deserves an alert, how a burst of them becomes one
//! message, what the message says, and sending it by email (SMTP) or to a JSON webhook.
//!
//! The extension keeps the state (each user's, job's and the queue's streak, the pending
//! alerts and their deliveries) in tables and calls in here with what it read:
//! - [`on_user_outcome`], [`on_job_run`], [`on_queue_check`] and [`on_deliveries_check`]
//!   turn an observation and the stored streak into the next streak and at most one
//!   [`Alert`]: one per failure streak, one notice when it ends, so a user failing every ten
//!   minutes for a day sends two messages, not 144.
//! - [`compose`] turns the pending alerts into [`Message`]s once their minute is over: a
//!   burst of more than a handful becomes one digest.
//! - [`send_email`] and [`send_webhook`] deliver one message; [`next_retry`] says when to try
//!   a failed delivery again, or that it is time to record it as failed.
//! - [`Outbox`] sends deliveries on a thread of its own and reports how each went, so the
//!   extension's scheduler hands them over without waiting on a server.
//!
//! No token, password or webhook URL reaches a message or an [`AlertError`]: every text that
//! came from outside goes through [`scrub`] (bearer tokens, `access_token=`/`password=`
//! values, URL userinfo) on its way into a message.

mod alert;
mod compose;
mod error;
mod outbox;
mod policy;
mod retry;
mod scrub;
mod smtp;
mod webhook;

#[cfg(test)]
mod transport_tests;

pub use alert::Alert;
pub use compose::{
    compose, compose_over, Message, PendingAlert, DEFAULT_DIGEST_ABOVE, DIGEST_LINES, WINDOW,
};
pub use error::AlertError;
pub use outbox::{Channel, Destinations, Outbox, Outgoing, Sent};
pub use policy::{
    on_deliveries_check, on_job_run, on_queue_check, on_user_outcome, JobStreak, QueueCheck,
    QueueState, RunOutcome, StreakState, UserOutcome, DEFAULT_QUEUE_STALL_AFTER,
    JOB_FAILED_RUNS_BEFORE_ALERT,
};
pub use retry::{next_retry, next_retry_from, DEFAULT_FIRST_RETRY};
pub use scrub::scrub;
pub use smtp::{send_email, SmtpEndpoint, SmtpLogin, SmtpSecurity};
pub use webhook::send_webhook;
