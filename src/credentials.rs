//! Connecting users to Procore, and the manual sync. These run as the extension owner
//! (security definer) so an application role can be granted them without being able to read
//! the token table.

use chrono::{TimeDelta, Utc};
use pgrx::prelude::*;

use crate::errors::{required, OrRaise, SyncError};
use crate::procore::{Client, Secret, TokenPair};
use crate::settings;
use crate::store;
use crate::worker::sync_worker;

/// Exchanges an OAuth authorization code for the user's tokens and stores them.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_connect(user_id: Option<pgrx::Uuid>, code: Option<&str>, redirect_uri: Option<&str>) {
    let (user_id, code, redirect_uri) = (
        required(user_id, "user_id"),
        required(code, "code"),
        required(redirect_uri, "redirect_uri"),
    );
    if code.is_empty() || redirect_uri.is_empty() {
        SyncError::InvalidArgument("code and redirect_uri are required".into()).raise();
    }
    let client = Client::new(settings::client_config()).or_raise();
    let tokens = client
        .exchange_code(&Secret::new(code), redirect_uri)
        .or_raise();
    store_new_connection(&user_id.to_string(), &tokens);
}

/// Stores tokens obtained elsewhere (another OAuth flow, a migration from the old setup).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_set_tokens(
    user_id: Option<pgrx::Uuid>,
    access_token: Option<&str>,
    refresh_token: Option<&str>,
    expires_in: Option<i32>,
) {
    let user_id = required(user_id, "user_id");
    let (access_token, refresh_token) = (
        required(access_token, "access_token"),
        required(refresh_token, "refresh_token"),
    );
    let expires_in = required(expires_in, "expires_in");
    if access_token.is_empty() || refresh_token.is_empty() {
        SyncError::InvalidArgument("access_token and refresh_token are required".into()).raise();
    }
    if expires_in < 0 {
        SyncError::InvalidArgument(format!(
            "expires_in must be zero or more seconds, not {expires_in}"
        ))
        .raise();
    }
    let tokens = TokenPair {
        access_token: Secret::new(access_token),
        refresh_token: Secret::new(refresh_token),
        expires_at: Utc::now() + TimeDelta::seconds(i64::from(expires_in)),
    };
    store_new_connection(&user_id.to_string(), &tokens);
}

/// A new connection replaces whatever a crash left in the token journal.
fn store_new_connection(user: &str, tokens: &TokenPair) {
    store::save_tokens(user, tokens).or_raise();
    if let Err(e) = store::token_journal().forget(user) {
        warning!("procore_sync: user {user}: could not clear the token journal: {e}");
    }
}

/// Revokes the user's tokens at Procore (best effort) and forgets them, and what they could
/// see: records nobody else can see become orphans (kept, or deleted with
/// `procore_sync.delete_orphaned_records`).
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_disconnect(user_id: Option<pgrx::Uuid>) -> bool {
    let user = required(user_id, "user_id").to_string();
    let Some(credentials) = store::credentials(&user).or_raise() else {
        return false;
    };
    if let Ok(client) = Client::new(settings::client_config()) {
        if let Err(e) = client.revoke(&credentials.refresh_token) {
            warning!("procore_sync: could not revoke the tokens of user {user} at Procore: {e}");
        }
    }
    Spi::run_with_args(
        "DELETE FROM procore_sync_credentials WHERE user_id = $1::uuid;",
        &[user.as_str().into()],
    )
    .map_err(SyncError::from)
    .or_raise();
    Spi::run_with_args(
        "DELETE FROM procore_sync_queue WHERE user_id = $1::uuid AND status = 'pending'",
        &[user.as_str().into()],
    )
    .map_err(SyncError::from)
    .or_raise();
    let orphaned = crate::visibility::forget_user(&user, settings::orphans()).or_raise();
    if orphaned > 0 {
        log!("procore_sync: user {user} disconnected; {orphaned} record(s) nobody else can see are orphaned");
    }
    true
}

/// Syncs one user now and returns how it went: the replacement for calling the Edge
/// Function by hand.
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
    crate::installed::require_current_version().or_raise();
    let user = user_id.to_string();
    match store::credentials(&user).or_raise() {
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
    let started = Spi::get_one::<f64>("SELECT extract(epoch FROM clock_timestamp())::float8")
        .map_err(SyncError::from)
        .or_raise()
        .unwrap_or(0.0);
    sync_worker::run_manual_sync(&user).or_raise();
    let result = Spi::connect(|client| -> Result<Option<ManualResult>, SyncError> {
        let rows = client.select(
            "SELECT status, records_written, requests_made, error_message, completed_at - started_at
             FROM procore_sync_queue
             WHERE user_id = $1::uuid AND started_at >= to_timestamp($2) - interval '1 second'
               AND status IN ('completed', 'failed')
             ORDER BY id DESC LIMIT 1",
            Some(1),
            &[user.as_str().into(), started.into()],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some((
            row.get::<String>(1)?.unwrap_or_default(),
            row.get::<i64>(2)?.unwrap_or(0),
            row.get::<i64>(3)?.unwrap_or(0),
            row.get::<String>(4)?,
            row.get::<pgrx::datum::Interval>(5)?,
        )))
    })
    .or_raise();
    let Some((status, records, requests, error, duration)) = result else {
        report_missing_result(&user)
    };
    let duration = duration.unwrap_or_else(|| pgrx::datum::Interval::from_micros(0));
    TableIterator::once((user_id, status, records, requests, duration, error))
}

type ManualResult = (
    String,
    i64,
    i64,
    Option<String>,
    Option<pgrx::datum::Interval>,
);

/// The worker ended without finishing an item: someone else holds the user, or it died.
/// Another worker may also have held the user and finished in the meantime (its item ended
/// after this call began, `now()`): the user was being synced all the same.
fn report_missing_result(user: &str) -> ! {
    let holder = Spi::get_two_with_args::<i64, i32>(
        "SELECT id, worker_pid FROM procore_sync_queue
         WHERE user_id = $1::uuid AND (status = 'processing' OR completed_at >= now())
         ORDER BY id DESC LIMIT 1",
        &[user.into()],
    );
    match holder {
        Ok((Some(item), pid)) => SyncError::AlreadySyncing {
            user: user.to_string(),
            item,
            pid: pid.unwrap_or(0),
        }
        .raise(),
        _ => SyncError::WorkerUnavailable(format!(
            "the sync worker for user {user} ended without a result; see the server log"
        ))
        .raise(),
    }
}
