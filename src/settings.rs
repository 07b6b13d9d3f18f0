//! `procore_sync.*` settings. URLs and secrets are superuser-only: whoever can change where
//! tokens are sent could steal them.

use std::ffi::CString;
use std::time::Duration;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

use crate::procore::{ClientConfig, Secret};
use procore_sync_core::alerts::Destinations;

pub static DATABASE_NAME: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
pub static API_BASE_URL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"https://api.procore.com"));
pub static LOGIN_BASE_URL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"https://login.procore.com"));
pub static CLIENT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static CLIENT_SECRET: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static FAILPOINT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static TIMEZONE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"UTC"));
pub static MAX_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(4);
pub static USERS_PER_WORKER: GucSetting<i32> = GucSetting::<i32>::new(64);
pub static LISTINGS_PER_USER: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static DATED_WINDOW_DAYS: GucSetting<i32> = GucSetting::<i32>::new(30);
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static HTTP_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
pub static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(5);
pub static RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(7 * 24 * 3600);
pub static LEASE_S: GucSetting<i32> = GucSetting::<i32>::new(300);
pub static MAX_RESPONSE_MB: GucSetting<i32> = GucSetting::<i32>::new(64);
pub static FULL_SYNC_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(24 * 3600);
pub static DELETE_ORPHANED_RECORDS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static HTTP_LISTEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static HTTP_TLS_CERT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static HTTP_TLS_KEY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static HTTP_STATUS_TOKEN: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static HTTP_MAX_CONNECTIONS: GucSetting<i32> = GucSetting::<i32>::new(64);
pub static HTTP_MAX_BODY_KB: GucSetting<i32> = GucSetting::<i32>::new(64);
pub static WEBHOOK_INBOX_LIMIT: GucSetting<i32> = GucSetting::<i32>::new(100_000);
pub static WEBHOOK_SETTLE_MS: GucSetting<i32> = GucSetting::<i32>::new(250);
pub static SMTP_URL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ALERT_EMAIL_FROM: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"procore_sync@localhost"));
pub static ALERT_EMAIL_TO: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ALERT_WEBHOOK_URL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);
pub static ALERT_QUEUE_STALL_S: GucSetting<i32> = GucSetting::<i32>::new(30 * 60);
pub static ALERT_WINDOW_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);
pub static ALERT_DIGEST_ABOVE: GucSetting<i32> = GucSetting::<i32>::new(5);
pub static ALERT_RETRY_DELAY_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);

pub fn register() {
    // A postmaster-level setting can only be defined while libraries are preloaded; loaded
    // later (no preload), there is no scheduler to read it anyway.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        register_listener();
        GucRegistry::define_string_guc(
            c"procore_sync.database_name",
            c"Database the procore_sync scheduler connects to.",
            c"Create the extension in this database; its jobs run there.",
            &DATABASE_NAME,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
    }
    GucRegistry::define_string_guc(
        c"procore_sync.api_base_url",
        c"Base URL of the Procore REST API.",
        c"https is required; plain http is for local stand-ins and tests.",
        &API_BASE_URL,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"procore_sync.login_base_url",
        c"Base URL of Procore's OAuth server.",
        c"https is required; plain http is for local stand-ins and tests.",
        &LOGIN_BASE_URL,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"procore_sync.client_id",
        c"OAuth client id of the Procore application.",
        c"",
        &CLIENT_ID,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"procore_sync.client_secret",
        c"OAuth client secret of the Procore application.",
        c"Never shown to non-superusers and never logged.",
        &CLIENT_SECRET,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_string_guc(
        c"procore_sync.ca_file",
        c"Extra trusted CA certificates (PEM file) for HTTPS to Procore.",
        c"Added to the built-in roots; certificates are always verified.",
        &CA_FILE,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"procore_sync.failpoint",
        c"For crash tests only: makes a sync worker crash at a named point.",
        c"crash_after_token_refresh: right after Procore issued new tokens, before they are stored.",
        &FAILPOINT,
        GucContext::Suset,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_string_guc(
        c"procore_sync.timezone",
        c"Time zone job schedules are read in (an IANA name such as Europe/Paris).",
        c"An unknown name is reported in the server log and UTC is used.",
        &TIMEZONE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"procore_sync.max_workers",
        c"How many sync worker processes run at once.",
        c"Each carries up to users_per_worker users: keep max_worker_processes above this plus 2.",
        &MAX_WORKERS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"procore_sync.users_per_worker",
        c"How many users one sync worker carries at once.",
        c"Their requests share the worker's HTTP threads; Postgres work stays on its main thread.",
        &USERS_PER_WORKER,
        1,
        1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"procore_sync.listings_per_user",
        c"How many listings of one user are read at the same time.",
        c"Each listing is still read page by page, in order, within the user's rate limit.",
        &LISTINGS_PER_USER,
        1,
        16,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"procore_sync.batch_size",
        c"How many queue items one process_procore_sync_queue() call takes.",
        c"",
        &BATCH_SIZE,
        1,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"procore_sync.http_timeout_ms",
        c"Timeout of one HTTP request to Procore.",
        c"",
        &HTTP_TIMEOUT_MS,
        100,
        600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"procore_sync.max_attempts",
        c"How many times a queue item is tried before it is marked failed.",
        c"",
        &MAX_ATTEMPTS,
        1,
        100,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"procore_sync.retention",
        c"How long finished queue items and job run history are kept.",
        c"",
        &RETENTION_S,
        60,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"procore_sync.lease_timeout",
        c"How long a sync worker may go silent before its item is taken again.",
        c"Workers renew the lease after every page; a crashed worker's item is retaken after this.",
        &LEASE_S,
        5,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"procore_sync.full_sync_interval",
        c"How often a resource is read in full, which is what reveals deleted records.",
        c"In between, resources that support filters[updated_at] are read incrementally.",
        &FULL_SYNC_INTERVAL_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"procore_sync.dated_window_days",
        c"How many days (today included) a full pass of a dated resource, such as daily logs, reads.",
        c"Incremental passes read from the day before the last one through today (UTC).",
        &DATED_WINDOW_DAYS,
        1,
        36_500,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"procore_sync.delete_orphaned_records",
        c"Delete the records nobody connected can see any more when a user disconnects.",
        c"Off: they are kept and marked with orphaned_at until someone's sync lists them again.",
        &DELETE_ORPHANED_RECORDS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"procore_sync.max_response_size",
        c"Largest Procore response body accepted, in megabytes.",
        c"",
        &MAX_RESPONSE_MB,
        1,
        4096,
        GucContext::Sighup,
        GucFlags::default(),
    );
    register_webhooks();
    register_alerts();
}

/// The built-in HTTP listener's settings: read once, when its worker starts.
fn register_listener() {
    GucRegistry::define_string_guc(
        c"procore_sync.http_listen",
        c"Address the built-in HTTP listener binds, e.g. 127.0.0.1:8787; empty: no listener.",
        c"It receives Procore webhooks at POST /procore/webhooks. Changing it needs a restart.",
        &HTTP_LISTEN,
        GucContext::Postmaster,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"procore_sync.http_tls_cert",
        c"PEM certificate chain for the HTTP listener; with http_tls_key, it serves HTTPS.",
        c"Without both, it serves plain HTTP, for a TLS-terminating proxy in front.",
        &HTTP_TLS_CERT,
        GucContext::Postmaster,
        GucFlags::SUPERUSER_ONLY,
    );
    GucRegistry::define_string_guc(
        c"procore_sync.http_tls_key",
        c"PEM private key for the HTTP listener's certificate.",
        c"",
        &HTTP_TLS_KEY,
        GucContext::Postmaster,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_string_guc(
        c"procore_sync.http_status_token",
        c"Bearer token that opens the listener's status page and metrics to other hosts.",
        c"Without it, GET / and GET /metrics answer only to connections from this machine.",
        &HTTP_STATUS_TOKEN,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_int_guc(
        c"procore_sync.http_max_connections",
        c"Connections the HTTP listener holds open at most; more are refused.",
        c"",
        &HTTP_MAX_CONNECTIONS,
        1,
        10_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"procore_sync.http_max_body",
        c"Largest request body the HTTP listener reads, in kilobytes; larger ones get 413.",
        c"",
        &HTTP_MAX_BODY_KB,
        1,
        65_536,
        GucContext::Postmaster,
        GucFlags::UNIT_KB,
    );
}

/// Settings the webhook receiver and handling read in any session.
fn register_webhooks() {
    GucRegistry::define_int_guc(
        c"procore_sync.webhook_inbox_limit",
        c"Webhook events waiting to be handled at most; past it, deliveries are refused (503).",
        c"Procore retries refused deliveries for 12 hours.",
        &WEBHOOK_INBOX_LIMIT,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"procore_sync.webhook_settle_time",
        c"How long a webhook event waits for more events of the same record before its fetch.",
        c"A burst of edits to one record then costs one request.",
        &WEBHOOK_SETTLE_MS,
        0,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
}

/// Alert settings, read by the alerts worker on every pass (and after each reload).
fn register_alerts() {
    GucRegistry::define_string_guc(
        c"procore_sync.smtp_url",
        c"SMTP server that alert emails go through, e.g. smtps://user:password@mail.example.com:465.",
        c"smtps:// is implicit TLS, smtp+starttls:// (or smtp://...?tls=required) STARTTLS, plain smtp:// is for local relays.",
        &SMTP_URL,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_string_guc(
        c"procore_sync.alert_email_from",
        c"Sender address of alert emails.",
        c"",
        &ALERT_EMAIL_FROM,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"procore_sync.alert_email_to",
        c"Comma-separated recipients of alert emails; empty sends no email.",
        c"",
        &ALERT_EMAIL_TO,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"procore_sync.alert_webhook_url",
        c"URL that alerts are POSTed to as JSON with a text field (Slack, Teams).",
        c"The URL is a credential: superuser-only and never shown.",
        &ALERT_WEBHOOK_URL,
        GucContext::Sighup,
        GucFlags::SUPERUSER_ONLY | GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_int_guc(
        c"procore_sync.alert_queue_stall",
        c"Alert when the oldest due queue item has waited this long.",
        c"",
        &ALERT_QUEUE_STALL_S,
        1,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"procore_sync.alert_window",
        c"Alerts are gathered over this long before they go out; a burst becomes one digest.",
        c"",
        &ALERT_WINDOW_MS,
        100,
        24 * 3600 * 1000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"procore_sync.alert_digest_above",
        c"More alerts than this in one window go out as one digest.",
        c"",
        &ALERT_DIGEST_ABOVE,
        0,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"procore_sync.alert_retry_delay",
        c"Wait before the first retry of a failed alert delivery; later ones wait 5, 15 and 60 times as long.",
        c"A delivery is recorded as failed after its fifth try.",
        &ALERT_RETRY_DELAY_MS,
        100,
        24 * 3600 * 1000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
}

/// Where and how alerts go, as set now.
pub struct AlertSettings {
    /// Where each delivery goes, handed to the sending thread as it is.
    pub to: Destinations,
    pub queue_stall: Duration,
    pub window: Duration,
    pub digest_above: usize,
    pub first_retry: Duration,
}

pub fn alert_settings() -> AlertSettings {
    let secret = |setting| {
        Some(string(setting))
            .filter(|s| !s.is_empty())
            .map(Secret::new)
    };
    let ca_file = string(&CA_FILE);
    AlertSettings {
        to: Destinations {
            smtp_url: secret(&SMTP_URL),
            email_from: string(&ALERT_EMAIL_FROM),
            email_to: string(&ALERT_EMAIL_TO)
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
            webhook_url: secret(&ALERT_WEBHOOK_URL),
            // An alert is a short message: a server that takes longer than this is down.
            timeout: Duration::from_millis(HTTP_TIMEOUT_MS.get().clamp(1, 10_000) as u64),
            ca_file: (!ca_file.is_empty()).then(|| ca_file.into()),
        },
        queue_stall: Duration::from_secs(ALERT_QUEUE_STALL_S.get().max(1) as u64),
        window: Duration::from_millis(ALERT_WINDOW_MS.get().max(100) as u64),
        digest_above: ALERT_DIGEST_ABOVE.get().max(0) as usize,
        first_retry: Duration::from_millis(ALERT_RETRY_DELAY_MS.get().max(100) as u64),
    }
}

pub fn http_listen() -> String {
    string(&HTTP_LISTEN)
}

/// The certificate and key files, when both are set.
pub fn http_tls_files() -> Option<(String, String)> {
    let (cert, key) = (string(&HTTP_TLS_CERT), string(&HTTP_TLS_KEY));
    (!cert.is_empty() && !key.is_empty()).then_some((cert, key))
}

/// The status page's bearer token, if one is set.
pub fn http_status_token() -> Option<Secret> {
    let token = string(&HTTP_STATUS_TOKEN);
    (!token.is_empty()).then(|| Secret::new(token))
}

pub fn http_max_connections() -> usize {
    HTTP_MAX_CONNECTIONS.get().max(1) as usize
}

pub fn http_max_body_bytes() -> usize {
    HTTP_MAX_BODY_KB.get().max(1) as usize * 1024
}

pub fn webhook_inbox_limit() -> i64 {
    i64::from(WEBHOOK_INBOX_LIMIT.get())
}

pub fn webhook_settle_ms() -> i64 {
    i64::from(WEBHOOK_SETTLE_MS.get())
}

fn string(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn database_name() -> String {
    string(&DATABASE_NAME)
}

/// Crashes the process, as a power cut or `kill -9` would, when the failpoint is set to
/// `name`: the crash tests use it to hit windows too narrow to reach from outside.
pub fn crash_if_failpoint(name: &str) {
    if string(&FAILPOINT) == name {
        pgrx::log!("procore_sync: failpoint {name} reached: crashing on purpose");
        std::process::abort();
    }
}

pub fn timezone_name() -> String {
    string(&TIMEZONE)
}

pub fn max_workers() -> i32 {
    MAX_WORKERS.get()
}

pub fn users_per_worker() -> usize {
    USERS_PER_WORKER.get().max(1) as usize
}

pub fn listings_per_user() -> usize {
    LISTINGS_PER_USER.get().max(1) as usize
}

pub fn batch_size() -> i32 {
    BATCH_SIZE.get()
}

pub fn max_attempts() -> i32 {
    MAX_ATTEMPTS.get()
}

pub fn retention_seconds() -> i64 {
    i64::from(RETENTION_S.get())
}

pub fn dated_window_days() -> i64 {
    i64::from(DATED_WINDOW_DAYS.get())
}

pub fn full_sync_interval_seconds() -> i64 {
    i64::from(FULL_SYNC_INTERVAL_S.get())
}

/// What becomes of records nobody connected can see any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orphans {
    /// Kept, with `orphaned_at` set; a later listing by anyone clears it.
    Keep,
    Delete,
}

/// What a disconnect does to the records nobody else can see.
pub fn orphans() -> Orphans {
    if DELETE_ORPHANED_RECORDS.get() {
        Orphans::Delete
    } else {
        Orphans::Keep
    }
}

pub fn lease_seconds() -> i64 {
    i64::from(LEASE_S.get())
}

/// The HTTP client's configuration as the settings say now.
pub fn client_config() -> ClientConfig {
    let ca_file = string(&CA_FILE);
    let mut config = ClientConfig::new(
        string(&API_BASE_URL),
        string(&LOGIN_BASE_URL),
        string(&CLIENT_ID),
        Secret::new(string(&CLIENT_SECRET)),
    );
    config.timeout = Duration::from_millis(HTTP_TIMEOUT_MS.get().max(1) as u64);
    config.ca_file = (!ca_file.is_empty()).then_some(ca_file);
    config.max_response_bytes = MAX_RESPONSE_MB.get().max(1) as u64 * 1024 * 1024;
    // Both URL settings are superuser-only, so a plain http URL was put there by a
    // superuser on purpose (a stand-in or a test), which SPEC §2 allows.
    config.allow_http = true;
    config
}
