//! The delivery thread: wakes when an event is queued, a result comes back or a timer
//! falls due, and runs each POST on a thread of its own so that one receiver that
//! hangs for the whole timeout does not hold up the others.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{Config, Job, Response, MAX_RESPONSE_BODY};
use crate::state::Shared;

/// With nothing queued the thread still looks round now and then; every change that
/// matters wakes it anyway.
const IDLE_WAIT: Duration = Duration::from_secs(60);

/// The HTTP client for deliveries: the configured timeout for the whole exchange
/// (Procore gives a receiver 5 s), no redirects (a 3xx is a failed delivery), and for
/// HTTPS the configured CA file or else the public web roots.
pub fn agent(config: &Config) -> Result<ureq::Agent, String> {
    let mut builder = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(config.timeout_ms))
        .redirects(0)
        .user_agent("procore-standin-webhooks");
    if let Some(path) = &config.ca_file {
        let pem = fs::read(path).map_err(|e| format!("ca_file {path}: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("ca_file {path}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {path}: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("ca_file {path} holds no certificate"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        builder = builder.tls_config(Arc::new(tls));
    }
    Ok(builder.build())
}

/// Starts the delivery thread; it runs as long as the process.
pub fn spawn(shared: Arc<Shared>) -> io::Result<()> {
    thread::Builder::new()
        .name("standin-webhooks".to_string())
        .spawn(move || run(&shared))
        .map(drop)
}

fn run(shared: &Arc<Shared>) {
    let mut state = shared.lock();
    loop {
        let at = Instant::now();
        let (jobs, next) = state.webhooks.due(at);
        for job in jobs {
            let token = job.token;
            let worker = Arc::clone(shared);
            let spawned = thread::Builder::new()
                .name("standin-webhook-post".to_string())
                .spawn(move || {
                    let response = post(job);
                    worker
                        .lock()
                        .webhooks
                        .finish(token, response, Instant::now());
                    worker.notify();
                });
            if let Err(e) = spawned {
                let response = Response {
                    error: Some(format!("could not start a delivery thread: {e}")),
                    ..Response::default()
                };
                state.webhooks.finish(token, response, at);
            }
        }
        let wait = next.map_or(IDLE_WAIT, |n| n.saturating_duration_since(Instant::now()));
        state = shared.wait(state, wait.min(IDLE_WAIT));
    }
}

fn post(job: Job) -> Response {
    let mut request = job
        .agent
        .post(&job.url)
        .set("Content-Type", "application/json");
    for (name, value) in &job.headers {
        request = request.set(name, value);
    }
    match request.send_bytes(&job.body) {
        Ok(response) => answered(response),
        Err(ureq::Error::Status(_, response)) => answered(response),
        Err(ureq::Error::Transport(transport)) => Response {
            error: Some(transport.to_string()),
            ..Response::default()
        },
    }
}

fn answered(response: ureq::Response) -> Response {
    let status = response.status();
    let headers: BTreeMap<String, String> = response
        .headers_names()
        .into_iter()
        .filter_map(|name| {
            let value = response.header(&name)?.to_string();
            Some((name, value))
        })
        .collect();
    let mut body = Vec::new();
    let read = response
        .into_reader()
        .take(MAX_RESPONSE_BODY as u64)
        .read_to_end(&mut body);
    // A receiver that answered 2xx and then broke off the body still answered.
    let error = read
        .err()
        .filter(|_| !(200..300).contains(&status))
        .map(|e| format!("reading the response: {e}"));
    Response {
        status: Some(status),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        error,
    }
}
