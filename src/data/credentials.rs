//! Users' Procore credentials: the token pair, whether the user must reconnect, and the
//! token journal that keeps a freshly rotated pair safe across a crash. The table is
//! readable by the extension owner only; nothing here logs a token.

use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::timestamps;
use crate::errors::SyncError;
use crate::procore::{Secret, TokenPair};
use crate::token_journal::Journal;
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
         SET access_token = $2, refresh_token = $3, expires_at = $4,
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
    SELECT access_token, refresh_token, expires_at,
           needs_reconnect, reconnect_reason
    FROM procore_sync_credentials WHERE user_id = $1::uuid";

fn read_credentials(sql: &str, user_id: &str) -> Result<Option<Credentials>, SyncError> {
    // Mutable because the refresh variant locks the row (FOR UPDATE).
    Spi::connect_mut(|client| {
        let rows = client.update(sql, Some(1), &[user_id.into()])?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(Credentials {
            access_token: Secret::new(row.get::<String>(1)?.unwrap_or_default()),
            refresh_token: Secret::new(row.get::<String>(2)?.unwrap_or_default()),
            expires_at: row
                .get::<TimestampWithTimeZone>(3)?
                .and_then(timestamps::from_sql)
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
         VALUES ($1::uuid, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE
         SET access_token = EXCLUDED.access_token, refresh_token = EXCLUDED.refresh_token,
             expires_at = EXCLUDED.expires_at, needs_reconnect = false, reconnect_reason = NULL,
             refreshed_at = now()",
        user_id,
        tokens,
    )
}

/// Runs a statement whose $1..$4 are the user and the pair: id, access token, refresh
/// token, expiry.
fn write_tokens(sql: &'static str, user_id: &str, tokens: &TokenPair) -> Result<(), SyncError> {
    Spi::run_with_args(
        sql,
        &[
            user_id.into(),
            tokens.access_token.expose().into(),
            tokens.refresh_token.expose().into(),
            timestamps::to_sql(tokens.expires_at).into(),
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

/// Forgets the user's tokens, and their queued syncs that have not started.
pub fn forget(user_id: &str) -> Result<(), SyncError> {
    Spi::run_with_args(
        "DELETE FROM procore_sync_credentials WHERE user_id = $1::uuid;",
        &[user_id.into()],
    )?;
    Spi::run_with_args(
        "DELETE FROM procore_sync_queue WHERE user_id = $1::uuid AND status = 'pending'",
        &[user_id.into()],
    )?;
    Ok(())
}
