//! Webhook helpers for the end-to-end tests and the bench: the built-in listener as a client
//! sees it, the stand-in's webhook admin routes, delivery payloads, and a detail front for
//! stand-ins that serve lists only.
//!
//! The extension fetches one record for a create or update event from the catalog's list
//! path plus `/{id}` (README, "Webhooks: near-real-time"). A stand-in that answers those
//! paths is used as it is; one that does not (it answers `404 No route matches`, which the
//! extension would take for a deleted record) gets a [`DetailFront`] between it and the
//! extension: every request goes through unchanged, except a `GET` of a record's detail
//! path, which the front answers from the record's list, read with the caller's own token
//! and headers, so visibility, deletions, rate limits and the request log stay the
//! stand-in's.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::standin::Standin;

/// The path the built-in listener receives deliveries on.
pub const WEBHOOK_PATH: &str = "/procore/webhooks";

/// A port nobody listened on a moment ago (another process may take it before it is used).
pub fn free_port() -> Result<u16> {
    let probe = TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(probe.local_addr()?.port())
}

/// Procore's webhook resource name for a catalog resource, as the stand-in raises events
/// for it (`tests/standin/API.md`, "Hooks and triggers API").
pub fn resource_name(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "projects" => "Projects",
        "vendors" => "Company Vendors",
        "project_users" => "Project Users",
        "rfis" => "RFIs",
        "submittals" => "Submittals",
        "punch_items" => "Punch Items",
        "observations" => "Observation Items",
        "change_events" => "Change Events",
        _ => return None,
    })
}

/// A v2.0 delivery body as the stand-in (and Procore) sends it; `event_id` goes in `ulid`,
/// which the receiver keys the inbox by.
pub fn v2_payload(
    event_id: &str,
    event_type: &str,
    resource_name: &str,
    company_id: i64,
    project_id: Option<i64>,
    resource_id: i64,
) -> Value {
    json!({
        "id": 1,
        "ulid": event_id,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "metadata": {"source_user_id": 1, "source_project_id": project_id,
                     "source_operation_id": null, "source_company_id": company_id,
                     "source_application_id": null},
        "user_id": 1,
        "company_id": company_id,
        "project_id": project_id,
        "api_version": "v2.0",
        "event_type": event_type,
        "resource_name": resource_name,
        "resource_id": resource_id,
    })
}

/// One answer of the listener.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `error` member of a JSON error body, or the whole body.
    pub fn error(&self) -> String {
        match self.json().get("error").and_then(Value::as_str) {
            Some(e) => e.to_string(),
            None => self.body.clone(),
        }
    }
}

/// The built-in listener, from outside: `http://127.0.0.1:PORT/procore/webhooks`.
#[derive(Clone)]
pub struct ListenerClient {
    pub url: String,
    agent: ureq::Agent,
}

impl ListenerClient {
    pub fn new(port: u16) -> ListenerClient {
        ListenerClient {
            url: format!("http://127.0.0.1:{port}{WEBHOOK_PATH}"),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .redirects(0)
                .build(),
        }
    }

    /// POSTs `body` as JSON with `authorization` (none if `None`); any HTTP status is a
    /// `Reply`, only a transport failure is an error.
    pub fn post(&self, body: &[u8], authorization: Option<&str>) -> Result<Reply> {
        self.request("POST", &self.url, body, authorization)
    }

    pub fn post_json(&self, body: &Value, authorization: Option<&str>) -> Result<Reply> {
        self.post(body.to_string().as_bytes(), authorization)
    }

    pub fn request(
        &self,
        method: &str,
        url: &str,
        body: &[u8],
        authorization: Option<&str>,
    ) -> Result<Reply> {
        let mut request = self
            .agent
            .request(method, url)
            .set("Content-Type", "application/json");
        if let Some(a) = authorization {
            request = request.set("Authorization", a);
        }
        let response = match request.send_bytes(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(anyhow!(e).context(format!("{method} {url}"))),
        };
        let status = response.status();
        let content_type = response.header("content-type").unwrap_or("").to_string();
        let body = response
            .into_string()
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }

    /// Waits until the listener answers HTTP at all (an unauthorized POST is enough).
    pub fn wait_up(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            match self.post(b"{}", None) {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > timeout => {
                    return Err(e.context(format!("the listener did not answer within {timeout:?}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// The stand-in's webhook admin routes (`/__admin/webhooks/...`).
pub struct StandinWebhooks {
    base: String,
    agent: ureq::Agent,
}

impl StandinWebhooks {
    pub fn new(standin: &Standin) -> StandinWebhooks {
        StandinWebhooks {
            base: standin.base_url().to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = self.agent.request(method, &url);
        let result = match body {
            Some(b) => request.send_json(b),
            None => request.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                bail!(
                    "{method} {path} -> {code}: {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => return Err(anyhow!(e).context(format!("{method} {path}"))),
        };
        let text = response.into_string()?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: {text:.200}"))
    }

    /// Changes the delivery settings given (`duplicate_rate`, `backoff_start_ms`, ...).
    pub fn config(&self, settings: Value) -> Result<Value> {
        self.call("POST", "/__admin/webhooks/config", Some(&settings))
    }

    /// Every hook, with `queued`, `in_flight`, `triggers`, `paused_for_ms`.
    pub fn hooks(&self) -> Result<Vec<Value>> {
        Ok(serde_json::from_value(self.call(
            "GET",
            "/__admin/webhooks/hooks",
            None,
        )?)?)
    }

    /// Every delivery attempt and discard with an id above `since`.
    pub fn deliveries(&self, since: u64) -> Result<Vec<Value>> {
        Ok(serde_json::from_value(self.call(
            "GET",
            &format!("/__admin/webhooks/deliveries?since={since}"),
            None,
        )?)?)
    }

    /// Every event raised with an id above `since`.
    pub fn events(&self, since: u64) -> Result<Vec<Value>> {
        Ok(serde_json::from_value(self.call(
            "GET",
            &format!("/__admin/webhooks/events?since={since}"),
            None,
        )?)?)
    }

    /// The highest event id so far (0 before any).
    pub fn last_event_id(&self) -> Result<u64> {
        Ok(self
            .events(0)?
            .iter()
            .filter_map(|e| e["id"].as_u64())
            .max()
            .unwrap_or(0))
    }

    /// The highest delivery id so far (0 before any).
    pub fn last_delivery_id(&self) -> Result<u64> {
        Ok(self
            .deliveries(0)?
            .iter()
            .filter_map(|d| d["id"].as_u64())
            .max()
            .unwrap_or(0))
    }

    /// True when no hook has an event waiting or a delivery in flight.
    pub fn idle(&self) -> Result<bool> {
        Ok(self
            .hooks()?
            .iter()
            .all(|h| h["queued"].as_u64().unwrap_or(0) == 0 && h["in_flight"] != true))
    }
}

/// Whether `standin` answers a record's detail path (`GET <list path>/{id}`), probed with a
/// token of `login` on the RFIs of `project_id` (which must be `login`'s).
pub fn standin_serves_details(standin: &Standin, login: &str, project_id: i64) -> Result<bool> {
    let tokens = standin.issue_tokens(login)?;
    let token = tokens["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("/__admin/tokens gave no access_token"))?;
    let company_id = project_id / 1000;
    let id = project_id * 100_000 + 1;
    let url = format!(
        "{}/rest/v1.0/projects/{project_id}/rfis/{id}",
        standin.base_url()
    );
    let answer = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
        .get(&url)
        .set("Authorization", &format!("Bearer {token}"))
        .set("Procore-Company-Id", &company_id.to_string())
        .call();
    match answer {
        Ok(r) => {
            let v: Value = r.into_json().unwrap_or(Value::Null);
            Ok(v["id"].as_i64() == Some(id))
        }
        Err(ureq::Error::Status(404, _)) => Ok(false),
        Err(ureq::Error::Status(code, r)) => bail!(
            "probing the stand-in's detail route: {code} {}",
            r.into_string().unwrap_or_default()
        ),
        Err(e) => Err(anyhow!(e).context("probing the stand-in's detail route")),
    }
}

/// One request the front passed on or answered.
#[derive(Debug, Clone)]
pub struct FrontRequest {
    pub method: String,
    /// Path and query, as the extension sent them.
    pub target: String,
    pub status: u16,
    /// Answered from a list (a detail `GET`).
    pub detail: bool,
}

/// A loopback HTTP front for the stand-in's API: passes every request through, and answers
/// `GET <list path>/{id}` from that list (see the module's documentation). Dropping it
/// stops accepting.
pub struct DetailFront {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<FrontRequest>>>,
    accept: Option<JoinHandle<()>>,
}

impl DetailFront {
    pub fn start(standin_base_url: &str) -> Result<DetailFront> {
        let socket = TcpListener::bind("127.0.0.1:0").context("binding the detail front")?;
        let addr = socket.local_addr()?;
        socket.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let upstream = Arc::new(Upstream {
            base: standin_base_url.trim_end_matches('/').to_string(),
            front: format!("http://{addr}"),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(120))
                .redirects(0)
                .build(),
        });
        let (s, l) = (stop.clone(), log.clone());
        let accept = std::thread::Builder::new()
            .name("detail-front".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match socket.accept() {
                        Ok((stream, _)) => {
                            let (u, l) = (upstream.clone(), l.clone());
                            std::thread::spawn(move || {
                                let _ = serve(stream, &u, &l);
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })?;
        Ok(DetailFront {
            addr,
            stop,
            log,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:PORT`, for `procore_sync.api_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<FrontRequest> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for DetailFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

struct Upstream {
    base: String,
    front: String,
    agent: ureq::Agent,
}

/// Headers passed on from the extension's request.
const REQUEST_HEADERS: [&str; 4] = [
    "authorization",
    "procore-company-id",
    "content-type",
    "accept",
];

/// Headers passed back from the stand-in's answer (`Link` with its URLs pointed at the
/// front).
const RESPONSE_HEADERS: [&str; 8] = [
    "content-type",
    "link",
    "total",
    "per-page",
    "x-rate-limit-limit",
    "x-rate-limit-remaining",
    "x-rate-limit-reset",
    "retry-after",
];

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        bail!("bad request line {line:?}");
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            bail!("connection closed in the header");
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
            if name == "content-length" {
                length = value.parse().context("content-length")?;
            }
            headers.push((name, value));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn serve(stream: TcpStream, upstream: &Upstream, log: &Mutex<Vec<FrontRequest>>) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader)? {
        let detail = detail_target(&request);
        let answer = match &detail {
            Some((list, id)) => answer_detail(upstream, &request, list, *id),
            None => pass_on(upstream, &request, &request.target),
        }
        .unwrap_or_else(|e| Answer {
            status: 502,
            headers: vec![("content-type".into(), "application/json".into())],
            body: json!({"errors": format!("detail front: {e:#}")})
                .to_string()
                .into_bytes(),
        });
        log.lock().unwrap().push(FrontRequest {
            method: request.method.clone(),
            target: request.target.clone(),
            status: answer.status,
            detail: detail.is_some(),
        });
        let mut head = format!("HTTP/1.1 {} X\r\n", answer.status);
        for (name, value) in &answer.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!(
            "content-length: {}\r\nconnection: keep-alive\r\n\r\n",
            answer.body.len()
        ));
        writer.write_all(head.as_bytes())?;
        writer.write_all(&answer.body)?;
        writer.flush()?;
    }
    let _ = writer.shutdown(Shutdown::Both);
    Ok(())
}

/// `(list target, id)` when the request is a `GET` of `<list path>/{id}[?query]`.
fn detail_target(request: &Request) -> Option<(String, i64)> {
    if request.method != "GET" || !request.target.starts_with("/rest/") {
        return None;
    }
    let (path, query) = match request.target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (request.target.as_str(), None),
    };
    let (list, last) = path.rsplit_once('/')?;
    let id: i64 = last.parse().ok()?;
    // The stand-in's lists (tests/standin/API.md): a detail path is one of them plus an id.
    let is_list = matches!(
        list,
        "/rest/v1.0/projects"
            | "/rest/v1.0/vendors"
            | "/rest/v1.1/punch_items"
            | "/rest/v1.0/observations/items"
            | "/rest/v1.0/change_events"
    ) || (list.starts_with("/rest/v1.0/projects/") && list.ends_with("/rfis"))
        || (list.starts_with("/rest/v1.1/projects/") && list.ends_with("/submittals"));
    if !is_list {
        return None;
    }
    Some((
        match query {
            Some(q) => format!("{list}?{q}"),
            None => list.to_string(),
        },
        id,
    ))
}

fn pass_on(upstream: &Upstream, request: &Request, target: &str) -> Result<Answer> {
    let url = format!("{}{target}", upstream.base);
    let mut call = upstream.agent.request(&request.method, &url);
    for (name, value) in &request.headers {
        if REQUEST_HEADERS.contains(&name.as_str()) {
            call = call.set(name, value);
        }
    }
    let response = match if request.body.is_empty() && request.method == "GET" {
        call.call()
    } else {
        call.send_bytes(&request.body)
    } {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(anyhow!(e)),
    };
    let status = response.status();
    let mut headers = Vec::new();
    for name in RESPONSE_HEADERS {
        if let Some(value) = response.header(name) {
            let value = if name == "link" {
                value.replace(&upstream.base, &upstream.front)
            } else {
                value.to_string()
            };
            headers.push((name.to_string(), value));
        }
    }
    let mut body = Vec::new();
    response.into_reader().read_to_end(&mut body)?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A record as Procore's detail endpoint gives it: the object its list holds, or 404 when
/// the caller's list does not hold it (deleted, private, or out of reach). Errors of the
/// list (401, 403, 404, 429) are the detail's.
fn answer_detail(upstream: &Upstream, request: &Request, list: &str, id: i64) -> Result<Answer> {
    let sep = if list.contains('?') { '&' } else { '?' };
    let target = format!("{list}{sep}per_page=10000&page=1");
    let mut answer = pass_on(upstream, request, &target)?;
    answer
        .headers
        .retain(|(n, _)| n != "link" && n != "total" && n != "per-page");
    if answer.status != 200 {
        return Ok(answer);
    }
    let records: Vec<Value> =
        serde_json::from_slice(&answer.body).context("the list behind a detail")?;
    match records.into_iter().find(|r| r["id"].as_i64() == Some(id)) {
        Some(record) => answer.body = record.to_string().into_bytes(),
        None => {
            answer.status = 404;
            answer.body = json!({"errors": format!("Record {id} not found")})
                .to_string()
                .into_bytes();
        }
    }
    Ok(answer)
}

/// p50, p95 and p99 of `samples` (nearest rank); NaN when empty.
pub fn percentiles(samples: &[f64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = |p: f64| {
        let k = ((p / 100.0) * s.len() as f64).ceil() as usize;
        s[k.clamp(1, s.len()) - 1]
    };
    (rank(50.0), rank(95.0), rank(99.0))
}

/// Counts by a key, for messages.
pub fn tally<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in items {
        *counts.entry(i.to_string()).or_insert(0) += 1;
    }
    counts
}
