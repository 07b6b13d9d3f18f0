//! Fault rules: misbehaviour injected into `/rest/` and `/oauth/token` responses, the
//! way proxies, overloaded servers and flaky networks misbehave in production; and the
//! byte-level writing every faulty response comes down to (`Wire`, `write_wire`), which
//! the server's truncated and huge deliveries and the scripted server (`crate::scripted`,
//! for the client's own tests) both go through.
//!
//! The writing is by hand on purpose: no HTTP library stops a response where a fault
//! says (after the head, part-way through a body, before the first byte).

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::http::Response;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Status,
    Latency,
    Stall,
    Truncate,
    Malformed,
    Html,
    WrongShape,
    Empty,
    Drop,
    Huge,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub kind: FaultKind,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub login: Option<String>,
    /// Remaining firings; `None` fires forever.
    #[serde(default)]
    pub times: Option<u64>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
}

pub const DEFAULT_STATUS: u16 = 503;
pub const DEFAULT_LATENCY_MS: u64 = 2000;
pub const DEFAULT_HUGE_BYTES: u64 = 64 * 1024 * 1024;

impl FaultRule {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(status) = self.status {
            if !(100..=599).contains(&status) {
                return Err(format!("status {status} is not an HTTP status"));
            }
        }
        if self.kind == FaultKind::Huge && self.bytes.is_some_and(|b| b < 2) {
            return Err("huge needs bytes >= 2 (the body is a JSON array)".to_string());
        }
        Ok(())
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.unwrap_or(DEFAULT_LATENCY_MS))
    }

    fn matches(&self, target: &str, decoded_target: &str, login: Option<&str>) -> bool {
        if self.times == Some(0) {
            return false;
        }
        if let Some(path) = &self.path {
            if !target.contains(path.as_str()) && !decoded_target.contains(path.as_str()) {
                return false;
            }
        }
        match &self.login {
            Some(wanted) => login == Some(wanted.as_str()),
            None => true,
        }
    }
}

/// The first rule with firings left that matches fires (and counts down).
pub fn fire(
    rules: &mut [FaultRule],
    target: &str,
    decoded_target: &str,
    login: Option<&str>,
) -> Option<FaultRule> {
    let rule = rules
        .iter_mut()
        .find(|r| r.matches(target, decoded_target, login))?;
    if let Some(times) = rule.times.as_mut() {
        *times -= 1;
    }
    Some(rule.clone())
}

/// How the bytes of a response reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Normal,
    /// Headers, then a pause, then the body.
    Stall(Duration),
    /// The full Content-Length is announced but only half the body is sent.
    Truncate,
    /// The connection closes without a byte of response.
    Drop,
    /// A `bytes`-long JSON array streamed in chunks.
    Huge(u64),
}

/// What a fault does instead of, or around, normal handling.
pub enum Effect {
    /// Answer this instead of handling the request.
    Replace(Response, Delivery),
    /// Handle the request normally, waiting first.
    Delay(Duration),
    /// Handle the request normally but deliver it this way.
    Deliver(Delivery),
}

/// The effect of a rule. An injected 429 gets its rate-limit headers from the caller.
pub fn effect(rule: &FaultRule) -> Effect {
    let json_type = "application/json; charset=utf-8";
    match rule.kind {
        FaultKind::Status => {
            let status = rule.status.unwrap_or(DEFAULT_STATUS);
            Effect::Replace(
                Response::json(status, &json!({ "errors": "injected" })),
                Delivery::Normal,
            )
        }
        FaultKind::Latency => Effect::Delay(rule.latency()),
        FaultKind::Stall => Effect::Deliver(Delivery::Stall(rule.latency())),
        FaultKind::Truncate => Effect::Deliver(Delivery::Truncate),
        FaultKind::Malformed => Effect::Replace(
            Response::new(200, json_type, br#"{"id": 1, "name": "#.to_vec()),
            Delivery::Normal,
        ),
        FaultKind::Html => Effect::Replace(
            Response::new(
                rule.status.unwrap_or(502),
                "text/html",
                b"<html><body><h1>502 Bad Gateway</h1></body></html>".to_vec(),
            ),
            Delivery::Normal,
        ),
        FaultKind::WrongShape => Effect::Replace(
            Response::json(200, &json!({ "data": "unexpected" })),
            Delivery::Normal,
        ),
        FaultKind::Empty => {
            Effect::Replace(Response::new(200, json_type, Vec::new()), Delivery::Normal)
        }
        FaultKind::Drop => Effect::Replace(Response::new(0, json_type, Vec::new()), Delivery::Drop),
        FaultKind::Huge => Effect::Replace(
            Response::new(200, json_type, Vec::new()),
            Delivery::Huge(rule.bytes.unwrap_or(DEFAULT_HUGE_BYTES).max(2)),
        ),
    }
}

/// A response's bytes as they reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// The head announcing the body's length, then, `pause` later, the body.
    Whole { pause: Duration },
    /// The head announcing `declared` bytes, then the (shorter) body; the connection closes.
    Truncated { declared: u64 },
    /// Not a byte: the connection closes.
    Drop,
    /// The head, then a JSON array of exactly `bytes` bytes streamed: announced with its
    /// Content-Length or, when `chunked`, in chunks with no length announced.
    Huge { bytes: u64, chunked: bool },
}

impl Wire {
    /// Whether a connection can carry another request after this response.
    pub fn keeps_connection(self) -> bool {
        matches!(self, Wire::Whole { .. } | Wire::Huge { .. })
    }
}

/// Writes `response` the way `wire` says; `close` announces `Connection: close`.
pub fn write_wire<W: Write>(
    out: &mut W,
    response: &Response,
    wire: Wire,
    close: bool,
) -> io::Result<()> {
    let body = &response.body;
    match wire {
        Wire::Drop => Ok(()),
        Wire::Whole { pause } if pause.is_zero() => {
            let mut bytes = response.head_bytes(body.len() as u64, close);
            bytes.extend_from_slice(body);
            out.write_all(&bytes)?;
            out.flush()
        }
        Wire::Whole { pause } => {
            out.write_all(&response.head_bytes(body.len() as u64, close))?;
            out.flush()?;
            thread::sleep(pause);
            out.write_all(body)?;
            out.flush()
        }
        Wire::Truncated { declared } => {
            let mut bytes = response.head_bytes(declared, true);
            bytes.extend_from_slice(body);
            out.write_all(&bytes)?;
            out.flush()
        }
        Wire::Huge {
            bytes,
            chunked: false,
        } => {
            out.write_all(&response.head_bytes(bytes, close))?;
            write_huge(out, bytes)
        }
        Wire::Huge {
            bytes,
            chunked: true,
        } => {
            out.write_all(&response.chunked_head_bytes(close))?;
            let mut chunks = Chunked(out);
            write_huge(&mut chunks, bytes)?;
            chunks.finish()
        }
    }
}

/// `Transfer-Encoding: chunked` framing, by hand like the rest of the fault writing:
/// each write goes out as its own chunk, so an endless body stops wherever its writer
/// does (the client hanging up), with nothing held back in a buffer.
struct Chunked<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Chunked<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.0
            .write_all(format!("{:x}\r\n", buf.len()).as_bytes())?;
        self.0.write_all(buf)?;
        self.0.write_all(b"\r\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> Chunked<'_, W> {
    /// The last, empty chunk.
    fn finish(self) -> io::Result<()> {
        self.0.write_all(b"0\r\n\r\n")?;
        self.0.flush()
    }
}

const HUGE_ITEM: &[u8] = br#"{"id":1,"name":"huge response padding padding padding padding"}"#;
const CHUNK: usize = 64 * 1024;

/// Writes a JSON array of exactly `bytes` bytes (at least 2) without holding it in memory:
/// `[`, items separated by commas, whitespace padding, `]`.
fn write_huge<W: Write>(out: &mut W, bytes: u64) -> io::Result<()> {
    let inner = bytes.saturating_sub(2);
    let stride = HUGE_ITEM.len() as u64 + 1;
    // n items take n*stride - 1 bytes.
    let items = (inner + 1) / stride;
    let item_bytes = (items * stride).saturating_sub(1);
    let padding = inner - item_bytes;

    let mut chunk = Vec::with_capacity(CHUNK + HUGE_ITEM.len() + 1);
    chunk.push(b'[');
    for k in 0..items {
        if k > 0 {
            chunk.push(b',');
        }
        chunk.extend_from_slice(HUGE_ITEM);
        if chunk.len() >= CHUNK {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    let spaces = [b' '; 4096];
    let mut left = padding as usize;
    while left > 0 {
        let n = left.min(spaces.len());
        chunk.extend_from_slice(&spaces[..n]);
        left -= n;
        if chunk.len() >= CHUNK {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    chunk.push(b']');
    out.write_all(&chunk)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> FaultRule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn first_matching_rule_with_times_left_fires_and_counts_down() {
        let mut rules = vec![
            rule(r#"{"kind":"status","status":503,"path":"/rfis","times":1}"#),
            rule(r#"{"kind":"drop","login":"user-3"}"#),
            rule(r#"{"kind":"html"}"#),
        ];
        let t = "/rest/v1.0/projects/1/rfis?page=2";
        assert_eq!(
            fire(&mut rules, t, t, Some("user-1")).unwrap().kind,
            FaultKind::Status
        );
        assert_eq!(rules[0].times, Some(0));
        assert_eq!(
            fire(&mut rules, t, t, Some("user-3")).unwrap().kind,
            FaultKind::Drop
        );
        assert_eq!(
            fire(&mut rules, t, t, Some("user-1")).unwrap().kind,
            FaultKind::Html
        );
        assert_eq!(fire(&mut rules, t, t, None).unwrap().kind, FaultKind::Html);
        let mut none: Vec<FaultRule> = vec![rule(r#"{"kind":"empty","path":"submittals"}"#)];
        assert!(fire(&mut none, t, t, None).is_none());
    }

    #[test]
    fn path_matches_raw_or_decoded_query() {
        let mut rules = vec![rule(r#"{"kind":"empty","path":"filters[updated_at]"}"#)];
        let raw = "/rest/v1.0/change_events?filters%5Bupdated_at%5D=x";
        let decoded = "/rest/v1.0/change_events?filters[updated_at]=x";
        assert!(fire(&mut rules, raw, decoded, None).is_some());
    }

    #[test]
    fn unknown_kinds_and_fields_are_rejected() {
        assert!(serde_json::from_str::<FaultRule>(r#"{"kind":"explode"}"#).is_err());
        assert!(serde_json::from_str::<FaultRule>(r#"{"kind":"drop","tims":2}"#).is_err());
        assert!(rule(r#"{"kind":"status","status":999}"#)
            .validate()
            .is_err());
    }

    fn wire(response: &Response, wire: Wire) -> String {
        let mut out = Vec::new();
        write_wire(&mut out, response, wire, false).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn wires_cut_the_bytes_where_they_say() {
        let response = Response::new(200, "text/plain", b"0123456789".to_vec());
        let whole = wire(
            &response,
            Wire::Whole {
                pause: Duration::ZERO,
            },
        );
        assert!(whole.starts_with("HTTP/1.1 200 OK\r\n"), "{whole}");
        assert!(whole.contains("Content-Length: 10\r\nConnection: keep-alive\r\n\r\n"));
        assert!(whole.ends_with("\r\n\r\n0123456789"), "{whole}");
        assert_eq!(
            wire(
                &response,
                Wire::Whole {
                    pause: Duration::from_millis(1)
                }
            ),
            whole
        );

        let cut = wire(&response, Wire::Truncated { declared: 100 });
        assert!(
            cut.contains("Content-Length: 100\r\nConnection: close\r\n"),
            "{cut}"
        );
        assert!(cut.ends_with("\r\n\r\n0123456789"), "{cut}");
        assert_eq!(wire(&response, Wire::Drop), "");
        assert!(!Wire::Drop.keeps_connection());
        assert!(!Wire::Truncated { declared: 1 }.keeps_connection());
    }

    #[test]
    fn huge_bodies_go_out_declared_or_in_chunks() {
        let empty = Response::new(200, "application/json", Vec::new());
        let declared = wire(
            &empty,
            Wire::Huge {
                bytes: 1000,
                chunked: false,
            },
        );
        let (head, body) = declared.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Length: 1000"), "{head}");
        assert_eq!(body.len(), 1000);

        let chunked = wire(
            &empty,
            Wire::Huge {
                bytes: 200_001,
                chunked: true,
            },
        );
        let (head, mut rest) = chunked.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        assert!(!head.contains("Content-Length"), "{head}");
        let mut body = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            body.push_str(&after[..size]);
            rest = after[size..].strip_prefix("\r\n").unwrap();
            if size == 0 {
                break;
            }
        }
        assert_eq!(rest, "");
        assert_eq!(body.len(), 200_001);
        assert!(serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .is_array());
    }

    #[test]
    fn huge_body_is_valid_json_of_exactly_the_requested_size() {
        for bytes in [2u64, 3, 10, 66, 67, 68, 1000, 200_001] {
            let mut out = Vec::new();
            write_huge(&mut out, bytes).unwrap();
            assert_eq!(out.len() as u64, bytes, "{bytes}");
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert!(v.is_array());
        }
    }
}
