//! `procore_sync_user()`: syncs one user now and reports how it went, the replacement for
//! calling the old Edge Function by hand.

use chrono::Utc;
use pgrx::prelude::*;

use crate::data::{credentials, installed, queue, timestamps};
use crate::errors::{required, OrRaise, SyncError};
use crate::sync::launch;

/// Runs as the extension owner (security definer) so an application role can be granted it
/// without being able to read the token table.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_user(
    user_id: Option<pgrx::Uuid>,
) -> TableIterator<
    'static,
    (
        name!(user_id, pgrx::Uuid),
        name!(status, String),
        name!(records_written, i64),
        name!(requests_made, i64),
        name!(duration, pgrx::datum::Interval),
        name!(error_message, Option<String>),
    ),
> {
    let user_id = required(user_id, "user_id");
    installed::require_current_version().or_raise();
    let user = user_id.to_string();
    match credentials::credentials(&user).or_raise() {
        None => SyncError::UnknownUser(user).raise(),
        Some(c) if c.needs_reconnect => SyncError::NeedsReconnect {
            user,
            reason: c
                .reconnect_reason
                .unwrap_or_else(|| "credentials were revoked".into()),
        }
        .raise(),
        Some(_) => {}
    }
    let asked_at = timestamps::to_sql(Utc::now());
    launch::run_manual_sync(&user).or_raise();
    let session = unsafe { pg_sys::MyProcPid };
    let Some(result) = queue::manual_result(&user, session, asked_at).or_raise() else {
        report_missing_result(&user, asked_at)
    };
    let duration = result
        .duration
        .unwrap_or_else(|| pgrx::datum::Interval::from_micros(0));
    TableIterator::once((
        user_id,
        result.status,
        result.records_written,
        result.requests_made,
        duration,
        result.error_message,
    ))
}

/// The worker ended without finishing an item for this session: someone else held the
/// user, or it died.
fn report_missing_result(user: &str, asked_at: pgrx::datum::TimestampWithTimeZone) -> ! {
    match queue::recent_holder(user, asked_at) {
        Ok(Some((item, pid))) => SyncError::AlreadySyncing {
            user: user.to_string(),
            item,
            pid,
        }
        .raise(),
        _ => SyncError::WorkerUnavailable(format!(
            "the sync worker for user {user} ended without a result; see the server log"
        ))
        .raise(),
    }
}
