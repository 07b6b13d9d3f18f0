//! Keeps Procore tokens, authorization codes and webhook secrets that a caller typed into
//! SQL out of the server log. Postgres logs the statement text with every error (and with
//! `log_statement`), so `SELECT procore_set_tokens(..., 'the-token', ...)` failing on a bad
//! uuid would otherwise write the token to disk.

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::prelude::*;

static mut PREVIOUS_HOOK: pg_sys::emit_log_hook_type = None;

/// `procore_sync_webhook` carries a hook's secret as its `authorization` argument.
const CREDENTIAL_CALLS: [&str; 3] = [
    "procore_connect",
    "procore_set_tokens",
    "procore_sync_webhook(",
];

pub fn install() {
    unsafe {
        PREVIOUS_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(hide_credential_statements);
    }
}

fn mentions_credentials(text: *const std::ffi::c_char) -> bool {
    if text.is_null() {
        return false;
    }
    let text = unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .to_ascii_lowercase();
    // `ALTER SYSTEM SET procore_sync.smtp_url = 'smtps://user:password@…'` and the like, in
    // any spelling Postgres accepts: `"procore_sync"."smtp_url"`, `procore_sync . smtp_url`.
    let bare: String = text
        .chars()
        .filter(|c| *c != '"' && !c.is_whitespace())
        .collect();
    CREDENTIAL_CALLS.iter().any(|call| text.contains(call))
        || SECRET_SETTINGS.iter().any(|name| bare.contains(name))
}

/// Settings whose values are secrets. A reload logs every changed setting with its value
/// ("parameter ... changed to ..."), superuser-only ones included.
const SECRET_SETTINGS: [&str; 5] = [
    "procore_sync.client_secret",
    "procore_sync.http_status_token",
    "procore_sync.http_tls_key",
    // An SMTP URL carries its password; a chat webhook URL is the credential itself.
    "procore_sync.smtp_url",
    "procore_sync.alert_webhook_url",
];

/// The name of a secret setting whose new value the message would print.
fn secret_setting_change(message: *const std::ffi::c_char) -> Option<&'static str> {
    if message.is_null() {
        return None;
    }
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
    SECRET_SETTINGS
        .into_iter()
        .find(|name| text.starts_with(&format!("parameter \"{name}\" changed to")))
}

#[pg_guard]
unsafe extern "C-unwind" fn hide_credential_statements(edata: *mut pg_sys::ErrorData) {
    if !edata.is_null() {
        if let Some(name) = secret_setting_change((*edata).message) {
            let hidden = format!("parameter \"{name}\" changed (value hidden)\0");
            (*edata).message = pg_sys::pstrdup(hidden.as_ptr().cast());
        }
    }
    if !edata.is_null() && mentions_credentials(pg_sys::debug_query_string) {
        (*edata).hide_stmt = true;
        // log_statement / log_min_duration_statement put the text (and bind parameters) in
        // the message and detail themselves.
        if mentions_credentials((*edata).message) {
            (*edata).message = pg_sys::pstrdup(
                c"statement hidden: it carries Procore credentials, a secret setting or a webhook secret".as_ptr(),
            );
        }
        // Bind parameters show up in the detail (log_statement) or the context
        // (log_parameter_max_length_on_error).
        (*edata).detail = std::ptr::null_mut();
        (*edata).context = std::ptr::null_mut();
    }
    if let Some(previous) = PREVIOUS_HOOK {
        previous(edata);
    }
}
