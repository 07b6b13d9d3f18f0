//! Connecting users to Procore and disconnecting them. These run as the extension owner
//! (security definer) so an application role can be granted them without being able to read
//! the token table.

use chrono::{TimeDelta, Utc};
use pgrx::prelude::*;

use crate::data::{credentials, visibility};
use crate::errors::{required, OrRaise, SyncError};
use crate::procore::{Client, Secret, TokenPair};
use crate::settings;

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
    credentials::save_tokens(user, tokens).or_raise();
    if let Err(e) = credentials::token_journal().forget(user) {
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
    let Some(stored) = credentials::credentials(&user).or_raise() else {
        return false;
    };
    if let Ok(client) = Client::new(settings::client_config()) {
        if let Err(e) = client.revoke(&stored.refresh_token) {
            warning!("procore_sync: could not revoke the tokens of user {user} at Procore: {e}");
        }
    }
    credentials::forget(&user).or_raise();
    let orphaned = visibility::forget_user(&user, settings::orphans()).or_raise();
    if orphaned > 0 {
        log!("procore_sync: user {user} disconnected; {orphaned} record(s) nobody else can see are orphaned");
    }
    true
}
