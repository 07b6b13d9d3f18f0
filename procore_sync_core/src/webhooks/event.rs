//! One webhook delivery's JSON, in either of Procore's payload shapes, as an [`Event`].
//!
//! Payload v2.0/v3.0: integer ids, `ulid`, `event_type`, `resource_name`. Payload v4.0: ids
//! are strings, `id` is a ULID, `reason` and `resource_type`. Both come to the same fields.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

/// Largest payload [`Event::parse`] reads. Procore's are a few hundred bytes; anything near
/// this is not Procore, and must not cost the receiver a large allocation.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Longest event id kept: it becomes the inbox's idempotency key.
const MAX_EVENT_ID_CHARS: usize = 64;

/// Longest resource name kept. Procore's longest is under 40 characters.
const MAX_RESOURCE_NAME_CHARS: usize = 100;

/// Longest excerpt of a sent value in an error message.
const SHOWN_CHARS: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Create,
    Update,
    Delete,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Create, EventKind::Update, EventKind::Delete];

    /// Procore's spelling, in payloads and in trigger bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Create => "create",
            EventKind::Update => "update",
            EventKind::Delete => "delete",
        }
    }

    fn from_procore(value: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| value.trim().eq_ignore_ascii_case(kind.as_str()))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A webhook event, whichever payload version it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique per event, identical across redeliveries: v4 `id`; v2/v3 `ulid` if sent,
    /// else `id` as decimal text.
    pub event_id: String,
    pub kind: EventKind,
    /// Procore's name as sent ("RFIs", "Punch Items"); see `catalog_resource_for`.
    pub resource_name: String,
    pub resource_id: i64,
    pub company_id: Option<i64>,
    /// `None` for company-level resources such as Projects.
    pub project_id: Option<i64>,
    /// Who made the change, when Procore says.
    pub user_id: Option<i64>,
    pub timestamp: DateTime<Utc>,
}

/// Why a payload is not a usable event. Messages are one short line naming at most a field
/// and a cut, quoted excerpt of its value, never the payload: it is outside input of any
/// size and content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("webhook payload is larger than {max_bytes} bytes")]
    TooLarge { max_bytes: usize },

    #[error("webhook payload is not JSON (syntax error at line {line}, column {column})")]
    NotJson { line: usize, column: usize },

    #[error("webhook payload is {found}, not a JSON object")]
    NotAnObject { found: &'static str },

    #[error("webhook payload has no \"{field}\"")]
    MissingField { field: &'static str },

    #[error("webhook payload field \"{field}\" is {found}, expected {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },

    #[error("webhook payload has an unknown {field} {value}")]
    UnknownEventType { field: &'static str, value: String },

    #[error("webhook payload field \"{field}\" is not a usable id: {value}")]
    BadId { field: &'static str, value: String },

    #[error("webhook payload field \"{field}\" is not an ISO 8601 timestamp: {value}")]
    BadTimestamp { field: &'static str, value: String },

    #[error("webhook payload field \"{field}\" is longer than {max_chars} characters")]
    TooLong {
        field: &'static str,
        max_chars: usize,
    },
}

/// The field names of one payload shape.
struct Shape {
    kind: &'static str,
    resource_name: &'static str,
}

const V2: Shape = Shape {
    kind: "event_type",
    resource_name: "resource_name",
};
const V4: Shape = Shape {
    kind: "reason",
    resource_name: "resource_type",
};

impl Event {
    /// Reads the body of a delivery.
    pub fn parse(payload: &[u8]) -> Result<Event, PayloadError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::TooLarge {
                max_bytes: MAX_PAYLOAD_BYTES,
            });
        }
        // serde_json's own messages can quote the input; line and column cannot.
        let value: Value = serde_json::from_slice(payload).map_err(|e| PayloadError::NotJson {
            line: e.line(),
            column: e.column(),
        })?;
        Event::from_value(&value)
    }

    /// Reads a payload already parsed as JSON (a `jsonb` argument, a delivery's `event`).
    pub fn from_value(payload: &Value) -> Result<Event, PayloadError> {
        let Value::Object(fields) = payload else {
            return Err(PayloadError::NotAnObject {
                found: json_kind(payload),
            });
        };
        // Decided by which name is present rather than by `api_version`, which v4 omits.
        let (shape, other) = if !fields.contains_key(V2.kind) && fields.contains_key(V4.kind) {
            (V4, V2)
        } else {
            (V2, V4)
        };

        let kind_text = text(fields, shape.kind, other.kind)?;
        let kind =
            EventKind::from_procore(kind_text).ok_or_else(|| PayloadError::UnknownEventType {
                field: shape.kind,
                value: shown(kind_text),
            })?;
        let resource_name = text(fields, shape.resource_name, other.resource_name)?;
        if resource_name.trim().is_empty() {
            return Err(PayloadError::MissingField {
                field: shape.resource_name,
            });
        }
        if resource_name.chars().count() > MAX_RESOURCE_NAME_CHARS {
            return Err(PayloadError::TooLong {
                field: shape.resource_name,
                max_chars: MAX_RESOURCE_NAME_CHARS,
            });
        }

        Ok(Event {
            event_id: event_id(fields)?,
            kind,
            resource_name: resource_name.to_owned(),
            resource_id: required_id(fields, "resource_id")?,
            company_id: optional_id(fields, "company_id")?,
            project_id: optional_id(fields, "project_id")?,
            user_id: optional_id(fields, "user_id")?,
            timestamp: timestamp(fields, "timestamp")?,
        })
    }
}

fn text<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
    other_name: &'static str,
) -> Result<&'a str, PayloadError> {
    match fields.get(name).or_else(|| fields.get(other_name)) {
        None | Some(Value::Null) => Err(PayloadError::MissingField { field: name }),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(PayloadError::WrongType {
            field: name,
            expected: "a string",
            found: json_kind(other),
        }),
    }
}

fn event_id(fields: &Map<String, Value>) -> Result<String, PayloadError> {
    let (field, id) = match (fields.get("ulid"), fields.get("id")) {
        (Some(Value::String(ulid)), _) if !ulid.is_empty() => ("ulid", ulid.clone()),
        (
            Some(other @ (Value::Number(_) | Value::Bool(_) | Value::Array(_) | Value::Object(_))),
            _,
        ) => {
            return Err(PayloadError::WrongType {
                field: "ulid",
                expected: "a string",
                found: json_kind(other),
            })
        }
        (_, None | Some(Value::Null)) => return Err(PayloadError::MissingField { field: "id" }),
        (_, Some(Value::String(id))) => ("id", id.clone()),
        (_, Some(Value::Number(n))) => match n.as_i64() {
            Some(id) => ("id", id.to_string()),
            None => {
                return Err(PayloadError::BadId {
                    field: "id",
                    value: shown(&n.to_string()),
                })
            }
        },
        (_, Some(other)) => {
            return Err(PayloadError::WrongType {
                field: "id",
                expected: "a string or an integer",
                found: json_kind(other),
            })
        }
    };
    // The id is a key in the inbox and shows up in logs: visible ASCII only, bounded.
    let usable = !id.is_empty()
        && id.len() <= MAX_EVENT_ID_CHARS
        && id.bytes().all(|b| b.is_ascii_graphic());
    if !usable {
        return Err(PayloadError::BadId {
            field,
            value: shown(&id),
        });
    }
    Ok(id)
}

fn required_id(fields: &Map<String, Value>, field: &'static str) -> Result<i64, PayloadError> {
    optional_id(fields, field)?.ok_or(PayloadError::MissingField { field })
}

/// A positive id sent as a JSON integer (v2/v3) or as decimal text (v4).
fn optional_id(
    fields: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<i64>, PayloadError> {
    let (id, sent) = match fields.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => (n.as_i64(), n.to_string()),
        Some(Value::String(s)) => (
            // `i64::from_str` would also take "+12".
            s.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| s.parse::<i64>().ok())
                .flatten(),
            s.clone(),
        ),
        Some(other) => {
            return Err(PayloadError::WrongType {
                field,
                expected: "an integer or a string of digits",
                found: json_kind(other),
            })
        }
    };
    match id {
        Some(id) if id > 0 => Ok(Some(id)),
        _ => Err(PayloadError::BadId {
            field,
            value: shown(&sent),
        }),
    }
}

fn timestamp(
    fields: &Map<String, Value>,
    field: &'static str,
) -> Result<DateTime<Utc>, PayloadError> {
    match fields.get(field) {
        None | Some(Value::Null) => Err(PayloadError::MissingField { field }),
        Some(Value::String(s)) => parse_timestamp(s).ok_or_else(|| PayloadError::BadTimestamp {
            field,
            value: shown(s),
        }),
        Some(other) => Err(PayloadError::WrongType {
            field,
            expected: "an ISO 8601 string",
            found: json_kind(other),
        }),
    }
}

/// ISO 8601 as Procore writes it (`2025-02-06T23:34:12.246562Z`), also without fractional
/// seconds, with a `+hh:mm` or `+hhmm` offset, with a space for the `T`, or with no zone at
/// all, which is read as UTC: Procore documents its timestamps as UTC.
pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.len() > 64 {
        return None;
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return Some(at.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc());
        }
    }
    None
}

/// A sent value for an error message: at most 40 characters, anything but printable ASCII
/// replaced, quoted.
pub(crate) fn shown(value: &str) -> String {
    let mut cut: String = value
        .chars()
        .take(SHOWN_CHARS)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if value.chars().nth(SHOWN_CHARS).is_some() {
        cut.push_str("...");
    }
    format!("{cut:?}")
}

/// What a JSON value is, for a message that must not quote it.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> DateTime<Utc> {
        match DateTime::parse_from_rfc3339(text) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => panic!("{text}: {e}"),
        }
    }

    fn parsed(payload: &Value) -> Event {
        Event::from_value(payload).unwrap_or_else(|e| panic!("{e}"))
    }

    fn failed(payload: &Value) -> PayloadError {
        match Event::from_value(payload) {
            Ok(event) => panic!("parsed {event:?}"),
            Err(e) => e,
        }
    }

    /// The v2.0 example of Procore's "Webhooks Payload Formats" page.
    fn v2() -> Value {
        json!({
            "id": 123456789,
            "ulid": "01JMYXMZRBVKK0PC6XS8SA4QRE",
            "timestamp": "2025-02-06T23:34:12.246562Z",
            "metadata": {
                "source_user_id": 987654321,
                "source_project_id": 2468013579_i64,
                "source_operation_id": null,
                "source_company_id": 1357908642,
                "source_application_id": null
            },
            "user_id": 987654321,
            "company_id": 1357908642,
            "project_id": 2468013579_i64,
            "api_version": "v2.0",
            "event_type": "update",
            "resource_name": "RFIs",
            "resource_id": 54321
        })
    }

    #[test]
    fn reads_a_v2_payload() {
        let event = Event::parse(v2().to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            event,
            Event {
                event_id: "01JMYXMZRBVKK0PC6XS8SA4QRE".into(),
                kind: EventKind::Update,
                resource_name: "RFIs".into(),
                resource_id: 54321,
                company_id: Some(1357908642),
                project_id: Some(2468013579),
                user_id: Some(987654321),
                timestamp: at("2025-02-06T23:34:12.246562Z"),
            }
        );
    }

    #[test]
    fn v2_without_ulid_uses_the_numeric_id() {
        let mut payload = v2();
        payload["ulid"] = Value::Null;
        assert_eq!(parsed(&payload).event_id, "123456789");
        if let Value::Object(fields) = &mut payload {
            fields.remove("ulid");
        }
        assert_eq!(parsed(&payload).event_id, "123456789");
    }

    #[test]
    fn reads_a_v3_payload_with_related_resources() {
        let mut payload = v2();
        payload["api_version"] = json!("v3.0");
        payload["resource_name"] = json!("Direct Cost Line Items");
        payload["related_resources"] = json!([{"id": 1234, "name": "Direct Costs"}]);
        let event = parsed(&payload);
        assert_eq!(event.resource_name, "Direct Cost Line Items");
        assert_eq!(event.resource_id, 54321);
    }

    #[test]
    fn reads_a_v4_payload() {
        let payload = json!({
            "id": "01JMYXMZRBVKK0PC6XS8SA4QRE",
            "timestamp": "2025-02-25T16:04:43.619085Z",
            "reason": "delete",
            "company_id": "8",
            "project_id": "6778",
            "user_id": "5447",
            "resource_type": "Punch Items",
            "resource_id": "379913"
        });
        assert_eq!(
            parsed(&payload),
            Event {
                event_id: "01JMYXMZRBVKK0PC6XS8SA4QRE".into(),
                kind: EventKind::Delete,
                resource_name: "Punch Items".into(),
                resource_id: 379913,
                company_id: Some(8),
                project_id: Some(6778),
                user_id: Some(5447),
                timestamp: at("2025-02-25T16:04:43.619085Z"),
            }
        );
    }

    #[test]
    fn company_level_events_have_no_project() {
        let mut payload = v2();
        payload["project_id"] = Value::Null;
        payload["resource_name"] = json!("Projects");
        assert_eq!(parsed(&payload).project_id, None);
    }

    #[test]
    fn timestamps_with_and_without_fraction_and_zone() {
        for (text, expected) in [
            ("2025-02-06T23:34:12Z", "2025-02-06T23:34:12Z"),
            ("2025-02-06T23:34:12.5Z", "2025-02-06T23:34:12.5Z"),
            (
                "2025-02-06T23:34:12.246562+02:00",
                "2025-02-06T21:34:12.246562Z",
            ),
            ("2025-02-06T23:34:12+0000", "2025-02-06T23:34:12Z"),
            ("2025-02-06 23:34:12.1-0100", "2025-02-07T00:34:12.1Z"),
            ("2025-02-06T23:34:12", "2025-02-06T23:34:12Z"),
            ("2025-02-06T23:34:12.246562", "2025-02-06T23:34:12.246562Z"),
            ("2025-02-06 23:34:12", "2025-02-06T23:34:12Z"),
        ] {
            assert_eq!(parse_timestamp(text), Some(at(expected)), "{text}");
        }
        for bad in [
            "",
            "yesterday",
            "2025-02-06",
            "2025-13-06T00:00:00Z",
            "1738884852",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn event_types_are_read_case_insensitively_and_unknown_ones_are_named() {
        let mut payload = v2();
        payload["event_type"] = json!("Create");
        assert_eq!(parsed(&payload).kind, EventKind::Create);
        payload["event_type"] = json!("archive");
        assert_eq!(
            failed(&payload),
            PayloadError::UnknownEventType {
                field: "event_type",
                value: "\"archive\"".into()
            }
        );
        assert_eq!(
            failed(&payload).to_string(),
            "webhook payload has an unknown event_type \"archive\""
        );
        let v4 = json!({"id": "X1", "timestamp": "2025-02-25T16:04:43Z", "reason": "restore",
                        "resource_type": "RFIs", "resource_id": "1"});
        assert_eq!(
            failed(&v4).to_string(),
            "webhook payload has an unknown reason \"restore\""
        );
    }

    #[test]
    fn missing_fields_are_named() {
        for (field, reported) in [
            ("event_type", "event_type"),
            ("resource_name", "resource_name"),
            ("resource_id", "resource_id"),
            ("timestamp", "timestamp"),
        ] {
            let mut payload = v2();
            if let Value::Object(fields) = &mut payload {
                fields.remove(field);
            }
            assert_eq!(
                failed(&payload),
                PayloadError::MissingField { field: reported },
                "{field}"
            );
        }
        let mut payload = v2();
        if let Value::Object(fields) = &mut payload {
            fields.remove("ulid");
            fields.remove("id");
        }
        assert_eq!(failed(&payload), PayloadError::MissingField { field: "id" });
        let v4 = json!({"id": "X1", "timestamp": "2025-02-25T16:04:43Z", "reason": "update",
                        "resource_id": "1"});
        assert_eq!(
            failed(&v4).to_string(),
            "webhook payload has no \"resource_type\""
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let mut payload = v2();
        payload["resource_id"] = json!([1]);
        assert_eq!(
            failed(&payload).to_string(),
            "webhook payload field \"resource_id\" is an array, expected an integer or a string of digits"
        );
        let mut payload = v2();
        payload["timestamp"] = json!(1738884852);
        assert!(matches!(
            failed(&payload),
            PayloadError::WrongType {
                field: "timestamp",
                ..
            }
        ));
        let mut payload = v2();
        payload["resource_name"] = json!({"name": "RFIs"});
        assert!(matches!(
            failed(&payload),
            PayloadError::WrongType {
                field: "resource_name",
                ..
            }
        ));
        let mut payload = v2();
        payload["ulid"] = json!(5);
        assert!(matches!(
            failed(&payload),
            PayloadError::WrongType { field: "ulid", .. }
        ));
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in [
            json!(0),
            json!(-4),
            json!(1.5),
            json!("12a"),
            json!("+12"),
            json!(""),
            json!("99999999999999999999"),
        ] {
            let mut payload = v2();
            payload["resource_id"] = bad.clone();
            assert!(
                matches!(
                    failed(&payload),
                    PayloadError::BadId {
                        field: "resource_id",
                        ..
                    }
                ),
                "{bad}"
            );
        }
        let mut payload = v2();
        payload["company_id"] = json!(-1);
        assert!(matches!(
            failed(&payload),
            PayloadError::BadId {
                field: "company_id",
                ..
            }
        ));
        let mut payload = v2();
        payload["ulid"] = json!("has space");
        assert!(matches!(
            failed(&payload),
            PayloadError::BadId { field: "ulid", .. }
        ));
        payload["ulid"] = json!("x".repeat(65));
        assert!(matches!(
            failed(&payload),
            PayloadError::BadId { field: "ulid", .. }
        ));
    }

    #[test]
    fn not_json_not_an_object_and_too_large() {
        assert_eq!(
            Event::parse(b"{\"id\": 1,"),
            Err(PayloadError::NotJson { line: 1, column: 9 })
        );
        assert_eq!(
            Event::parse(b"[1, 2]"),
            Err(PayloadError::NotAnObject { found: "an array" })
        );
        let huge = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            Event::parse(&huge),
            Err(PayloadError::TooLarge {
                max_bytes: MAX_PAYLOAD_BYTES
            })
        );
    }

    #[test]
    fn messages_are_one_short_line_without_the_payload() {
        let hostile = format!("secret-payload\n\u{1b}[31m{}", "A".repeat(10_000));
        let cases = [
            {
                let mut p = v2();
                p["event_type"] = json!(hostile);
                p
            },
            {
                let mut p = v2();
                p["resource_id"] = json!(hostile);
                p
            },
            {
                let mut p = v2();
                p["timestamp"] = json!(hostile);
                p
            },
            {
                let mut p = v2();
                p["resource_name"] = json!(hostile);
                p
            },
            {
                let mut p = v2();
                p["ulid"] = json!(hostile);
                p
            },
        ];
        for payload in cases {
            let message = failed(&payload).to_string();
            assert!(
                !message.contains('\n') && !message.contains('\u{1b}'),
                "{message}"
            );
            assert!(message.len() < 150, "{message}");
            assert!(
                !message.contains("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                "{message}"
            );
        }
        let message = Event::parse(format!("{{\"x\": \"{hostile}").as_bytes())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!message.contains("secret-payload"), "{message}");
        assert!(
            message.starts_with("webhook payload is not JSON"),
            "{message}"
        );
    }

    #[test]
    fn shown_values_are_cut_and_quoted() {
        assert_eq!(shown("abc"), "\"abc\"");
        assert_eq!(shown("a\"b\nc"), "\"a\\\"b?c\"");
        assert_eq!(shown(&"é".repeat(50)), format!("\"{}...\"", "?".repeat(40)));
    }
}
