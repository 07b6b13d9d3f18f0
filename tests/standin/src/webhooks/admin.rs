//! `/__admin/webhooks/...` (delivery settings and what was delivered), the capture
//! receiver `/__capture/{name}` and its listing `/__admin/captures/...`.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use super::{Capture, ConfigPatch};
use crate::admin::{body, AdminResult};
use crate::clock::{iso_millis, now};
use crate::http::{param, Request, Response};
use crate::state::Shared;

/// `route` is the path after `/__admin/`, without a trailing slash.
pub fn handle(shared: &Shared, req: &Request, route: &str) -> Response {
    let method = req.method.as_str();
    let result = match (method, route) {
        ("DELETE", "webhooks") => {
            shared.lock().webhooks.reset();
            shared.notify();
            Ok(json!({ "ok": true }))
        }
        ("GET", "webhooks/config") => Ok(json!(shared.lock().webhooks.config)),
        ("POST", "webhooks/config") => configure(shared, req),
        ("GET", "webhooks/hooks") => Ok(shared.lock().webhooks.admin_hooks(Instant::now())),
        ("GET", "webhooks/deliveries") => deliveries(shared, req),
        ("GET", "webhooks/events") => events(shared, req),
        ("GET", "captures") => {
            let state = shared.lock();
            let counts: BTreeMap<&str, usize> = state
                .webhooks
                .captures
                .iter()
                .map(|(name, list)| (name.as_str(), list.len()))
                .collect();
            Ok(json!(counts))
        }
        ("DELETE", "captures") => {
            shared.lock().webhooks.captures.clear();
            Ok(json!({ "ok": true }))
        }
        (
            _,
            "webhooks"
            | "webhooks/config"
            | "webhooks/hooks"
            | "webhooks/deliveries"
            | "webhooks/events"
            | "captures",
        ) => Err((405, format!("{method} is not supported on {}", req.path))),
        (_, route) => match route.strip_prefix("captures/") {
            Some(name) => match method {
                "GET" => Ok(json!(shared
                    .lock()
                    .webhooks
                    .captures
                    .get(name)
                    .map_or(&[][..], Vec::as_slice))),
                "DELETE" => {
                    shared.lock().webhooks.captures.remove(name);
                    Ok(json!({ "ok": true }))
                }
                _ => Err((405, format!("{method} is not supported on {}", req.path))),
            },
            None => Err((404, format!("no admin route {}", req.path))),
        },
    };
    match result {
        Ok(body) => Response::json(200, &body),
        Err((status, message)) => Response::errors(status, &message),
    }
}

fn configure(shared: &Shared, req: &Request) -> AdminResult {
    let patch: ConfigPatch = body(req)?;
    let mut state = shared.lock();
    state.webhooks.configure(patch).map_err(|e| (400, e))?;
    // New timings or an unpause take effect now, not at the thread's next look.
    shared.notify();
    Ok(json!({ "ok": true, "config": state.webhooks.config }))
}

fn number(req: &Request, name: &str) -> Result<Option<u64>, (u16, String)> {
    match param(&req.query_pairs(), name) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| (400, format!("{name} must be an integer, got {v:?}"))),
    }
}

/// Every attempt and discard after `since`, optionally for one hook.
fn deliveries(shared: &Shared, req: &Request) -> AdminResult {
    let since = number(req, "since")?.unwrap_or(0);
    let hook_id = number(req, "hook_id")?;
    let state = shared.lock();
    Ok(Value::Array(
        state
            .webhooks
            .attempts
            .iter()
            .filter(|a| a.id > since && hook_id.is_none_or(|h| a.hook_id == h))
            .map(|a| a.to_admin_json())
            .collect(),
    ))
}

fn events(shared: &Shared, req: &Request) -> AdminResult {
    let since = number(req, "since")?.unwrap_or(0);
    let state = shared.lock();
    Ok(Value::Array(
        state
            .webhooks
            .events
            .iter()
            .filter(|e| e.id > since)
            .map(|e| e.to_admin_json())
            .collect(),
    ))
}

fn valid_capture_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `POST /__capture/{name}`: keeps the request for `/__admin/captures/{name}` and answers
/// `200 {"ok":true}`, or the status asked for with `?status=`, so the same receiver can
/// stand in for one that fails.
pub fn capture(shared: &Shared, req: &Request) -> Response {
    let name = req
        .path
        .trim_start_matches("/__capture/")
        .trim_end_matches('/');
    if !valid_capture_name(name) {
        return Response::errors(
            404,
            "capture names are 1-100 characters of letters, digits, '-', '_' and '.'",
        );
    }
    if !matches!(req.method.as_str(), "POST" | "PUT") {
        return Response::errors(
            405,
            &format!("{} is not supported on {}", req.method, req.path),
        );
    }
    let pairs = req.query_pairs();
    let status = match param(&pairs, "status") {
        None => 200,
        Some(v) => match v.parse::<u16>() {
            Ok(s) if (200..=599).contains(&s) => s,
            _ => return Response::errors(400, &format!("status must be 200..=599, got {v:?}")),
        },
    };
    let body = serde_json::from_slice(&req.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&req.body).into_owned()));
    let capture = Capture {
        seq: 0,
        ts: iso_millis(now()),
        method: req.method.clone(),
        query: req.query.clone(),
        headers: req.headers.iter().cloned().collect(),
        body,
    };
    shared.lock().webhooks.capture(name, capture);
    if status == 200 {
        Response::json(200, &json!({ "ok": true }))
    } else {
        Response::errors(status, "captured; answered as asked with ?status=")
    }
}
