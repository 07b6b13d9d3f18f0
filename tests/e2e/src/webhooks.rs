//! Webhook helpers for the end-to-end tests and the bench: the built-in listener as a client
//! sees it, the stand-in's webhook admin routes, and delivery payloads.

use std::net::TcpListener;
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
