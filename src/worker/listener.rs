//! The built-in HTTP listener's process, started at server start when
//! `procore_sync.http_listen` is set: webhooks at `POST /procore/webhooks`, the status page
//! at `GET /` and Prometheus metrics at `GET /metrics`. Its network side (`procore_sync_core::listener`, on
//! threads with every signal blocked) reads requests whole, within its limits and
//! timeouts; this main thread answers them one at a time, the only one touching Postgres.
//! It never waits on the scheduler or the syncs: a delivery costs one short transaction.

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use serde_json::{json, Value};

use crate::data::installed;
use crate::data::transaction::in_transaction;
use crate::errors::SyncError;
use crate::procore::Secret;
use crate::settings;
use crate::sync::launch::LIBRARY;
use crate::sync::observe;
use crate::sync::webhooks::receive;
use procore_sync_core::fetch_pool::blocking_signals;
use procore_sync_core::listener::{Incoming, Listener, ListenerConfig, TlsFiles};
use procore_sync_core::metrics::render_prometheus;
use procore_sync_core::status_page::render_html;
use procore_sync_core::webhooks::authorization_matches;

pub const WEBHOOK_PATH: &str = "/procore/webhooks";

/// How often the status page reloads itself.
const STATUS_REFRESH_SECONDS: u32 = 10;

/// How long the main thread waits for a request before it looks at its signals.
const TICK: Duration = Duration::from_millis(100);

pub fn register() {
    if settings::http_listen().is_empty() {
        return;
    }
    BackgroundWorkerBuilder::new("procore_sync http listener")
        .set_type("procore_sync http listener")
        .set_library(LIBRARY)
        .set_function("procore_sync_listener_main")
        .set_argument(0i32.into_datum())
        .enable_spi_access()
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

fn config() -> ListenerConfig {
    let mut config = ListenerConfig::new(settings::http_listen());
    config.tls = settings::http_tls_files().map(|(cert, key)| TlsFiles {
        cert_pem: cert.into(),
        key_pem: key.into(),
    });
    config.max_body_bytes = settings::http_max_body_bytes();
    config.max_connections = settings::http_max_connections();
    config
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn procore_sync_listener_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = settings::database_name();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let listener = match blocking_signals(|| Listener::start(config())) {
        Ok(listener) => listener,
        Err(e) => {
            // A bad address or certificate will not mend itself: the log says why, and the
            // postmaster tries again after the restart time.
            log!("procore_sync http listener cannot start: {e}");
            return;
        }
    };
    log!(
        "procore_sync http listener on {} ({}), database {database}",
        listener.local_addr(),
        if settings::http_tls_files().is_some() {
            "https"
        } else {
            "http"
        }
    );
    let mut schema_ready = false;
    loop {
        // A zero wait on the latch notices SIGTERM and a dead postmaster.
        if !BackgroundWorker::wait_latch(Some(Duration::ZERO)) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let Some(request) = listener.next(TICK) else {
            continue;
        };
        if !schema_ready {
            schema_ready = in_transaction(installed::use_extension_schema).is_ok();
        }
        answer(request, schema_ready);
    }
    log!("procore_sync http listener stopping");
    // A non-zero exit makes the postmaster start the listener again after its restart time
    // if an administrator terminated it; at shutdown nothing is restarted anyway.
    unsafe { pg_sys::proc_exit(1) };
}

fn answer(request: Incoming, schema_ready: bool) {
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/" | "/metrics") if !may_look(&request) => respond(
            request,
            401,
            json!({"error": "the status page and metrics need procore_sync.http_status_token as a Bearer token from another host"}),
        ),
        ("GET", "/" | "/metrics") if !schema_ready => respond(
            request,
            503,
            json!({"error": "procore_sync is not installed at this library's version in this database"}),
        ),
        ("GET", "/metrics") => serve_metrics(request),
        ("GET", "/") => serve_status_page(request),
        ("POST", WEBHOOK_PATH) if schema_ready => receive_webhook(request),
        ("POST", WEBHOOK_PATH) => respond(
            request,
            503,
            json!({"error": "procore_sync is not installed at this library's version in this database"}),
        ),
        (_, WEBHOOK_PATH) => respond(request, 405, json!({"error": "use POST"})),
        _ => respond(request, 404, json!({"error": "not found"})),
    }
}

/// Procore wants 2xx within 5 s; anything else and it retries the delivery later.
fn receive_webhook(request: Incoming) {
    let payload: Value = match serde_json::from_slice(&request.body) {
        Ok(payload) => payload,
        Err(e) => {
            let message = format!(
                "the body is not JSON (line {}, column {})",
                e.line(),
                e.column()
            );
            return respond(request, 400, json!({ "error": message }));
        }
    };
    let authorization = request
        .authorization
        .as_ref()
        .map(|s| s.expose().to_string());
    match in_transaction(|| receive(&payload, authorization.as_deref())) {
        Ok(receipt) => respond(request, 200, json!({"status": receipt.as_str()})),
        Err(e) => {
            let status = match &e {
                SyncError::NotAuthorized(_) => 401,
                SyncError::InvalidArgument(_) => 400,
                SyncError::InboxFull(_) => 503,
                SyncError::VersionMismatch { .. } => 503,
                _ => 500,
            };
            if status == 500 {
                log!("procore_sync http listener: a webhook delivery failed: {e}");
            }
            respond(request, status, json!({"error": e.to_string()}))
        }
    }
}

/// The status page and metrics are read-only but tell who is connected and what failed:
/// only this machine may look, or whoever holds the bearer token.
fn may_look(request: &Incoming) -> bool {
    // A dual-stack listener sees 127.0.0.1 as ::ffff:127.0.0.1.
    if request.peer.ip().to_canonical().is_loopback() {
        return true;
    }
    let Some(token) = settings::http_status_token() else {
        return false;
    };
    let expected = Secret::new(format!("Bearer {}", token.expose()));
    authorization_matches(
        request.authorization.as_ref().map(Secret::expose),
        &expected,
    )
}

fn serve_metrics(request: Incoming) {
    match in_transaction(observe::metrics) {
        Ok(metrics) => request.respond(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            render_prometheus(&metrics).into_bytes(),
        ),
        Err(e) => respond(request, 500, json!({"error": e.to_string()})),
    }
}

fn serve_status_page(request: Incoming) {
    match in_transaction(observe::status_page) {
        Ok(page) => request.respond(
            200,
            "text/html; charset=utf-8",
            render_html(&page, STATUS_REFRESH_SECONDS).into_bytes(),
        ),
        Err(e) => respond(request, 500, json!({"error": e.to_string()})),
    }
}

fn respond(request: Incoming, status: u16, body: Value) {
    request.respond(status, "application/json", body.to_string().into_bytes());
}
