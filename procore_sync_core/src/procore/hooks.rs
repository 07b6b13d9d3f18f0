//! Procore's Webhooks API: a company's hook and its triggers, the deliveries log, and the
//! one-record fetch a webhook event leads to.
//!
//! Each call returns the rate-limit headers of the last answer beside its result, like
//! [`Client::list_page_and_rate_limit`]: these calls spend the same per-user budget as a sync.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::error::ProcoreError;
use super::http::{Client, PageRequest};
use super::rate_limit::RateLimit;
use super::sanitize;
use super::secret::Secret;
use crate::webhooks::{json_kind, Event, EventKind, PayloadError};

/// The payload format hooks are created with (Procore calls it `api_version`). v2.0 keeps
/// `event_type` to create/update/delete, where v4.0's `reason` may carry other values;
/// `webhooks::Event` reads both, so moving to v4.0 is this constant.
pub const HOOK_PAYLOAD_VERSION: &str = "v2.0";

/// Procore's limit on triggers in one bulk call.
pub const MAX_TRIGGERS_PER_CALL: usize = 500;

/// Deliveries asked for per page: Procore's documented default, so a server that caps the
/// page size cannot make a full page look like the last one.
const DELIVERIES_PAGE_SIZE: usize = 100;

/// Pages read at most in one [`Client::list_deliveries`], against a `page_start` that never
/// reaches the end.
const MAX_DELIVERY_PAGES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub id: i64,
}

/// What the bulk trigger calls reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggersCreated {
    pub created: usize,
    /// Triggers Procore refused (a 207 answer), e.g. one that already exists.
    pub failed: Vec<FailedTrigger>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTrigger {
    pub resource_name: Option<String>,
    pub event_type: Option<String>,
    /// Procore's reason, cut to one sanitised line.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Any,
    Successful,
    Failing,
    Discarded,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Any => "any",
            DeliveryStatus::Successful => "successful",
            DeliveryStatus::Failing => "failing",
            DeliveryStatus::Discarded => "discarded",
        }
    }
}

/// One delivery attempt from the hook's log: the way to recover events a failing receiver
/// lost (Procore documents no redelivery call).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub event_id: Option<String>,
    /// `ok`, `discarded`, `retried` or `failed`.
    pub outcome: Option<String>,
    /// What the receiver answered, as Procore reports it ("200 OK" or a number).
    pub response_status: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The event as delivered, for the same inbox the receiver writes to.
    pub event: Value,
}

impl Delivery {
    pub fn parsed_event(&self) -> Result<Event, PayloadError> {
        Event::from_value(&self.event)
    }
}

impl Client {
    /// Creates a company hook that POSTs events to `destination_url` with `authorization` as
    /// its `Authorization` header. Procore keeps hooks of different namespaces apart, so one
    /// per app: lowercase letters and dashes.
    pub fn create_hook(
        &self,
        access_token: &Secret,
        company_id: i64,
        namespace: &str,
        destination_url: &str,
        authorization: &Secret,
    ) -> (Result<Hook, ProcoreError>, Option<RateLimit>) {
        let body = match hook_body(company_id, namespace, destination_url, authorization) {
            Ok(body) => body,
            Err(e) => return (Err(e), None),
        };
        let (answer, rate_limit) = self.call_api_json(
            access_token,
            Some(company_id),
            "POST",
            "/rest/v1.0/webhooks/hooks",
            Some(&body),
            &[authorization.expose()],
        );
        (
            answer.and_then(|body| parse_hook(body.as_ref())),
            rate_limit,
        )
    }

    /// Adds triggers to a hook, at most [`MAX_TRIGGERS_PER_CALL`] per call, and stops at the
    /// first call that fails; the chunks before it stay created. Procore does not document
    /// whether a trigger the hook already has is refused alone (a 207, reported in
    /// [`TriggersCreated::failed`]) or refuses its whole call (a 422, as the stand-in does),
    /// so after a failure the sure way back is to delete the hook and start again.
    pub fn create_triggers(
        &self,
        access_token: &Secret,
        hook_id: i64,
        company_id: i64,
        triggers: &[(&str, EventKind)],
    ) -> (Result<TriggersCreated, ProcoreError>, Option<RateLimit>) {
        let path = format!("/rest/v1.0/webhooks/hooks/{hook_id}/triggers/bulk");
        let mut outcome = TriggersCreated::default();
        let mut rate_limit = None;
        for (chunk, body) in triggers
            .chunks(MAX_TRIGGERS_PER_CALL)
            .zip(trigger_bodies(company_id, triggers))
        {
            let (answer, seen) = self.call_api_json(
                access_token,
                Some(company_id),
                "POST",
                &path,
                Some(&body),
                &[],
            );
            rate_limit = seen.or(rate_limit);
            match answer {
                Ok(body) => {
                    let chunk_outcome =
                        parse_bulk_outcome(body.as_ref(), chunk.len(), &[access_token.expose()]);
                    outcome.created += chunk_outcome.created;
                    outcome.failed.extend(chunk_outcome.failed);
                }
                Err(e) => return (Err(e), rate_limit),
            }
        }
        (Ok(outcome), rate_limit)
    }

    /// Deletes a company hook and its triggers. `Ok(false)`: Procore has no such hook (already
    /// deleted), which is what the caller wanted.
    pub fn delete_hook(
        &self,
        access_token: &Secret,
        company_id: i64,
        hook_id: i64,
    ) -> (Result<bool, ProcoreError>, Option<RateLimit>) {
        let path = format!("/rest/v1.0/webhooks/hooks/{hook_id}?company_id={company_id}");
        let (answer, rate_limit) =
            self.call_api_json(access_token, Some(company_id), "DELETE", &path, None, &[]);
        let result = match answer {
            Ok(_) => Ok(true),
            Err(ProcoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        };
        (result, rate_limit)
    }

    /// Every delivery of a company hook with this status, reading pages to the end.
    ///
    /// Procore pages this log by `page_start` = the last delivery id of the previous page.
    /// A page shorter than asked is the last; a page of ids already read also ends the
    /// listing, so a server that ignores `page_start` cannot loop it.
    pub fn list_deliveries(
        &self,
        access_token: &Secret,
        company_id: i64,
        hook_id: i64,
        status: DeliveryStatus,
    ) -> (Result<Vec<Delivery>, ProcoreError>, Option<RateLimit>) {
        let path =
            format!("/rest/v1.0/webhooks/hooks/{hook_id}/deliveries?company_id={company_id}");
        let mut deliveries: Vec<Delivery> = Vec::new();
        let mut seen: HashSet<i64> = HashSet::new();
        let mut rate_limit = None;
        let mut page_start: Option<i64> = None;
        for _ in 0..MAX_DELIVERY_PAGES {
            let query = deliveries_query(status, page_start);
            let (answer, seen_limit) = self.list_page_and_rate_limit(
                access_token,
                Some(company_id),
                PageRequest::First {
                    path: &path,
                    query: &query,
                    per_page: None,
                    records_key: None,
                },
            );
            rate_limit = seen_limit.or(rate_limit);
            self.note_page(&answer);
            let page = match answer.and_then(|page| parse_deliveries(page.records)) {
                Ok(page) => page,
                Err(e) => return (Err(e), rate_limit),
            };
            let full = page.len() >= DELIVERIES_PAGE_SIZE;
            let last_id = page.last().map(|d| d.id);
            let mut new = 0;
            for delivery in page {
                if seen.insert(delivery.id) {
                    deliveries.push(delivery);
                    new += 1;
                }
            }
            if !full || new == 0 {
                return (Ok(deliveries), rate_limit);
            }
            page_start = last_id;
        }
        (
            Err(ProcoreError::BadResponse(format!(
                "webhook deliveries did not end after {MAX_DELIVERY_PAGES} pages"
            ))),
            rate_limit,
        )
    }

    /// One record from its detail endpoint (`webhooks::record_path`). `Ok(None)`: Procore
    /// answered 404, the record is gone (or the path is not the resource's detail endpoint).
    pub fn fetch_record(
        &self,
        access_token: &Secret,
        company_id: i64,
        path: &str,
    ) -> (Result<Option<Value>, ProcoreError>, Option<RateLimit>) {
        let (answer, rate_limit) =
            self.call_api_json(access_token, Some(company_id), "GET", path, None, &[]);
        let result = match answer {
            Ok(Some(record @ Value::Object(_))) => Ok(Some(record)),
            Ok(Some(other)) => Err(ProcoreError::BadResponse(format!(
                "expected a JSON object for one record, got {}",
                json_kind(&other)
            ))),
            Ok(None) => Err(ProcoreError::BadResponse(
                "empty body where one record was expected".into(),
            )),
            Err(ProcoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        };
        (result, rate_limit)
    }
}

/// The create-hook body. Refuses what Procore would refuse anyway, before the secret leaves.
fn hook_body(
    company_id: i64,
    namespace: &str,
    destination_url: &str,
    authorization: &Secret,
) -> Result<Value, ProcoreError> {
    let namespace_ok = !namespace.is_empty()
        && namespace.len() <= 100
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-');
    if !namespace_ok {
        return Err(ProcoreError::Config(format!(
            "webhook namespace {} must be lowercase letters and dashes",
            sanitize::one_line(namespace, &[], 100)
        )));
    }
    check_destination(destination_url)?;
    crate::webhooks::check_authorization_secret(authorization).map_err(ProcoreError::Config)?;
    Ok(json!({
        "company_id": company_id,
        "hook": {
            "api_version": HOOK_PAYLOAD_VERSION,
            "namespace": namespace,
            "destination_url": destination_url,
            "destination_headers": { "Authorization": authorization.expose() },
        },
    }))
}

/// Procore sends the secret with every delivery: over HTTPS only, except to this machine
/// (a local stand-in or tunnel), where plain HTTP crosses no network.
fn check_destination(destination_url: &str) -> Result<(), ProcoreError> {
    let shown = || sanitize::one_line(destination_url, &[], 200);
    let url = url::Url::parse(destination_url).map_err(|e| {
        ProcoreError::Config(format!("webhook destination {} is not a URL: {e}", shown()))
    })?;
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
    if !scheme_ok || url.host().is_none() {
        return Err(ProcoreError::Config(format!(
            "webhook destination {} must be an https URL: Procore sends the secret with each delivery",
            shown()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ProcoreError::Config(
            "webhook destination must not carry a user or password".into(),
        ));
    }
    Ok(())
}

/// The bulk-create bodies, one per chunk of at most [`MAX_TRIGGERS_PER_CALL`] triggers.
fn trigger_bodies(company_id: i64, triggers: &[(&str, EventKind)]) -> Vec<Value> {
    triggers
        .chunks(MAX_TRIGGERS_PER_CALL)
        .map(|chunk| {
            let chunk: Vec<Value> = chunk
                .iter()
                .map(|(resource_name, kind)| {
                    json!({ "resource_name": resource_name, "event_type": kind.as_str() })
                })
                .collect();
            json!({
                "company_id": company_id,
                "api_version": HOOK_PAYLOAD_VERSION,
                "triggers": chunk,
            })
        })
        .collect()
}

/// The hook from a create answer. The answer echoes `destination_headers`, so no message
/// here quotes it.
fn parse_hook(body: Option<&Value>) -> Result<Hook, ProcoreError> {
    let id = body.and_then(|b| b.get("id")).and_then(integer);
    match id {
        Some(id) if id > 0 => Ok(Hook { id }),
        _ => Err(ProcoreError::BadResponse(
            "the created webhook hook has no integer id".into(),
        )),
    }
}

/// 200 `{"success": [...]}` or 207 `{"success": [...], "failed": [...]}`. An empty answer
/// (204) or one of another shape counts the chunk as created: the call succeeded and said
/// nothing against it.
fn parse_bulk_outcome(body: Option<&Value>, sent: usize, secrets: &[&str]) -> TriggersCreated {
    let Some(Value::Object(fields)) = body else {
        return TriggersCreated {
            created: match body {
                Some(Value::Array(created)) => created.len(),
                _ => sent,
            },
            failed: Vec::new(),
        };
    };
    let failed: Vec<FailedTrigger> = match fields.get("failed") {
        Some(Value::Array(failed)) => failed.iter().map(|f| failed_trigger(f, secrets)).collect(),
        _ => Vec::new(),
    };
    let created = match fields.get("success") {
        Some(Value::Array(success)) => success.len(),
        _ => sent.saturating_sub(failed.len()),
    };
    TriggersCreated { created, failed }
}

/// One refused trigger. Procore does not document its shape, so the names are looked for
/// at the top and under `trigger`, the reason under the usual error keys.
fn failed_trigger(entry: &Value, secrets: &[&str]) -> FailedTrigger {
    let field = |name: &str| {
        entry
            .get(name)
            .or_else(|| entry.get("trigger").and_then(|t| t.get(name)))
            .and_then(Value::as_str)
            .map(|s| sanitize::one_line(s, secrets, 100))
    };
    let reason = ["errors", "error", "message", "reason"]
        .iter()
        .find_map(|key| entry.get(*key).filter(|v| !v.is_null()))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "no reason given".to_owned());
    FailedTrigger {
        resource_name: field("resource_name"),
        event_type: field("event_type"),
        reason: sanitize::excerpt(&reason, secrets),
    }
}

fn deliveries_query(status: DeliveryStatus, page_start: Option<i64>) -> Vec<(String, String)> {
    let mut query = vec![
        ("filters[status]".to_owned(), status.as_str().to_owned()),
        ("page_size".to_owned(), DELIVERIES_PAGE_SIZE.to_string()),
    ];
    if let Some(start) = page_start {
        query.push(("page_start".to_owned(), start.to_string()));
    }
    query
}

fn parse_deliveries(records: Vec<Value>) -> Result<Vec<Delivery>, ProcoreError> {
    records
        .into_iter()
        .enumerate()
        .map(|(index, record)| parse_delivery(index, record))
        .collect()
}

fn parse_delivery(index: usize, mut record: Value) -> Result<Delivery, ProcoreError> {
    let id = record.get("id").and_then(integer).ok_or_else(|| {
        ProcoreError::BadResponse(format!(
            "webhook delivery {index} of the page has no integer id"
        ))
    })?;
    let text = |name: &str| match record.get(name) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let time = |name: &str| {
        record
            .get(name)
            .and_then(Value::as_str)
            .and_then(crate::webhooks::parse_timestamp)
    };
    let event_id = text("event_id");
    let outcome = text("outcome");
    let response_status = text("response_status");
    let started_at = time("started_at");
    let completed_at = time("completed_at");
    let event = record
        .get_mut("event")
        .map(Value::take)
        .unwrap_or(Value::Null);
    Ok(Delivery {
        id,
        event_id,
        outcome,
        response_status,
        started_at,
        completed_at,
        event,
    })
}

/// An id sent as a JSON integer or as digits.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("whsec-0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn hook_body_shape() {
        let body = hook_body(
            5358233,
            "acme-procore-sync",
            "https://db.example.com/hooks",
            &secret(),
        );
        let body = body.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            body,
            json!({
                "company_id": 5358233,
                "hook": {
                    "api_version": "v2.0",
                    "namespace": "acme-procore-sync",
                    "destination_url": "https://db.example.com/hooks",
                    "destination_headers": {
                        "Authorization": "whsec-0123456789abcdef0123456789abcdef"
                    }
                }
            })
        );
    }

    #[test]
    fn hook_body_refuses_bad_namespaces_destinations_and_secrets() {
        for namespace in ["", "Acme", "acme_sync", "acme1", "acme sync"] {
            assert!(
                matches!(
                    hook_body(1, namespace, "https://db.example.com/h", &secret()),
                    Err(ProcoreError::Config(_))
                ),
                "{namespace:?}"
            );
        }
        for url in [
            "http://db.example.com/h",
            "ftp://db.example.com/h",
            "not a url",
            "https://user:pw@db.example.com/h",
        ] {
            assert!(
                matches!(
                    hook_body(1, "acme", url, &secret()),
                    Err(ProcoreError::Config(_))
                ),
                "{url}"
            );
        }
        for url in [
            "http://localhost:8080/h",
            "http://127.0.0.1/h",
            "http://[::1]/h",
        ] {
            assert!(hook_body(1, "acme", url, &secret()).is_ok(), "{url}");
        }
        match hook_body(1, "acme", "https://db.example.com/h", &Secret::new("short")) {
            Err(e @ ProcoreError::Config(_)) => assert!(!e.to_string().contains("short"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn triggers_go_in_chunks_of_at_most_500() {
        let names: Vec<String> = (0..1201).map(|i| format!("R{i}")).collect();
        let triggers: Vec<(&str, EventKind)> = names
            .iter()
            .map(|n| (n.as_str(), EventKind::Update))
            .collect();
        let bodies = trigger_bodies(12, &triggers);
        let sizes: Vec<usize> = bodies
            .iter()
            .map(|b| b["triggers"].as_array().map_or(0, Vec::len))
            .collect();
        assert_eq!(sizes, vec![500, 500, 201]);
        assert_eq!(
            bodies[2]["triggers"][200],
            json!({"resource_name": "R1200", "event_type": "update"})
        );
        assert_eq!(bodies[0]["company_id"], json!(12));
        assert_eq!(bodies[0]["api_version"], json!("v2.0"));
        assert!(trigger_bodies(12, &[]).is_empty());
        assert_eq!(trigger_bodies(12, &triggers[..500]).len(), 1);
        assert_eq!(trigger_bodies(12, &triggers[..501]).len(), 2);
    }

    #[test]
    fn trigger_bodies_from_the_resource_table() {
        let triggers = crate::webhooks::triggers_for(["rfis"]);
        let bodies = trigger_bodies(7, &triggers);
        assert_eq!(
            bodies,
            vec![json!({
                "company_id": 7,
                "api_version": "v2.0",
                "triggers": [
                    {"resource_name": "RFIs", "event_type": "create"},
                    {"resource_name": "RFIs", "event_type": "update"},
                    {"resource_name": "RFIs", "event_type": "delete"},
                ]
            })]
        );
    }

    #[test]
    fn bulk_outcomes() {
        let ok = json!({"success": [{"id": 1}, {"id": 2}]});
        assert_eq!(
            parse_bulk_outcome(Some(&ok), 2, &[]),
            TriggersCreated {
                created: 2,
                failed: vec![]
            }
        );
        let partial = json!({
            "success": [{"id": 1}],
            "failed": [{"trigger": {"resource_name": "RFIs", "event_type": "create"},
                        "errors": {"resource_name": ["has already been taken"]}}]
        });
        assert_eq!(
            parse_bulk_outcome(Some(&partial), 2, &[]),
            TriggersCreated {
                created: 1,
                failed: vec![FailedTrigger {
                    resource_name: Some("RFIs".into()),
                    event_type: Some("create".into()),
                    reason: r#"{"resource_name":["has already been taken"]}"#.into(),
                }]
            }
        );
        assert_eq!(parse_bulk_outcome(None, 3, &[]).created, 3);
        assert_eq!(
            parse_bulk_outcome(Some(&json!([{"id": 1}])), 3, &[]).created,
            1
        );
        let odd = json!({"failed": ["tok-secret\nleaked"]});
        let outcome = parse_bulk_outcome(Some(&odd), 2, &["tok-secret"]);
        assert_eq!(outcome.created, 1);
        assert_eq!(outcome.failed[0].resource_name, None);
        assert!(
            !outcome.failed[0].reason.contains("tok-secret"),
            "{:?}",
            outcome.failed
        );
        assert!(!outcome.failed[0].reason.contains('\n'));
    }

    #[test]
    fn hook_ids_and_nothing_else_from_the_create_answer() {
        let answer = json!({"id": 77, "namespace": "acme",
                            "destination_headers": {"Authorization": "whsec-xyz"}});
        assert_eq!(parse_hook(Some(&answer)).ok(), Some(Hook { id: 77 }));
        let no_id = json!({"destination_headers": {"Authorization": "whsec-xyz"}});
        match parse_hook(Some(&no_id)) {
            Err(e) => assert!(!e.to_string().contains("whsec"), "{e}"),
            Ok(hook) => panic!("{hook:?}"),
        }
        assert!(parse_hook(None).is_err());
        assert_eq!(
            parse_hook(Some(&json!({"id": "12"}))).ok(),
            Some(Hook { id: 12 })
        );
    }

    #[test]
    fn a_deliveries_page() {
        let page = vec![
            json!({
                "id": 9001,
                "started_at": "2026-03-01T10:00:00.123Z",
                "completed_at": "2026-03-01T10:00:00.456Z",
                "response_status": "500 Internal Server Error",
                "response_headers": {"Content-Type": "text/plain"},
                "response_body": "boom",
                "response_error": null,
                "outcome": "retried",
                "event_id": 123456789,
                "event": {
                    "id": 123456789, "ulid": "01JMYXMZRBVKK0PC6XS8SA4QRE",
                    "timestamp": "2026-03-01T09:59:59.5Z", "user_id": 1, "company_id": 8,
                    "project_id": 6778, "api_version": "v2.0", "event_type": "delete",
                    "resource_name": "RFIs", "resource_id": 54321, "metadata": {}
                }
            }),
            json!({"id": "9002", "outcome": "discarded", "response_status": 404, "event": null}),
        ];
        let deliveries = parse_deliveries(page).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(deliveries.len(), 2);
        let first = &deliveries[0];
        assert_eq!(first.id, 9001);
        assert_eq!(first.event_id.as_deref(), Some("123456789"));
        assert_eq!(first.outcome.as_deref(), Some("retried"));
        assert_eq!(
            first.response_status.as_deref(),
            Some("500 Internal Server Error")
        );
        assert_eq!(
            first.started_at,
            crate::webhooks::parse_timestamp("2026-03-01T10:00:00.123Z")
        );
        let event = first.parsed_event().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(event.kind, EventKind::Delete);
        assert_eq!(event.resource_id, 54321);
        let second = &deliveries[1];
        assert_eq!(second.id, 9002);
        assert_eq!(second.response_status.as_deref(), Some("404"));
        assert_eq!(second.started_at, None);
        assert!(second.parsed_event().is_err());

        assert!(matches!(
            parse_deliveries(vec![json!({"outcome": "ok"})]),
            Err(ProcoreError::BadResponse(_))
        ));
    }

    #[test]
    fn deliveries_query_pages_by_last_id() {
        assert_eq!(
            deliveries_query(DeliveryStatus::Discarded, None),
            vec![
                ("filters[status]".to_owned(), "discarded".to_owned()),
                ("page_size".to_owned(), "100".to_owned()),
            ]
        );
        assert_eq!(
            deliveries_query(DeliveryStatus::Any, Some(9001))[2],
            ("page_start".to_owned(), "9001".to_owned())
        );
    }
}
