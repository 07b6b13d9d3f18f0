//! Turning a page of Procore JSON records into rows: the columns users filter on, pulled out
//! of each tool's own field names. Pure: no Postgres here.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// One record ready to upsert. `updated_at` is normalised RFC 3339 UTC or absent.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRow {
    pub procore_id: i64,
    pub name: Option<String>,
    pub status: Option<String>,
    pub updated_at: Option<String>,
    pub data: Value,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("record {index} of the page is not a JSON object")]
    NotAnObject { index: usize },
    #[error("record {index} of the page has no integer \"id\"")]
    MissingId { index: usize },
}

/// The title-like field differs per tool: RFIs have `subject`, submittals `title`, most
/// others `name`.
const NAME_FIELDS: [&str; 4] = ["name", "title", "subject", "display_name"];

pub fn record_row(index: usize, record: Value) -> Result<RecordRow, RecordError> {
    let object = record
        .as_object()
        .ok_or(RecordError::NotAnObject { index })?;
    let procore_id = match object.get("id") {
        Some(Value::Number(n)) => n.as_i64(),
        // Some Procore endpoints quote large ids.
        Some(Value::String(s)) => s.parse::<i64>().ok(),
        _ => None,
    }
    .ok_or(RecordError::MissingId { index })?;
    let name = NAME_FIELDS
        .iter()
        .find_map(|f| object.get(*f).and_then(Value::as_str))
        .map(str::to_owned);
    let status = match object.get("status") {
        Some(Value::String(s)) => Some(s.clone()),
        // Submittals and others report status as {"id": .., "name": ..}.
        Some(Value::Object(o)) => o.get("name").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let updated_at = object
        .get("updated_at")
        .and_then(Value::as_str)
        .and_then(normalise_timestamp);
    Ok(RecordRow {
        procore_id,
        name,
        status,
        updated_at,
        data: record,
    })
}

/// A page's records as rows. Procore may repeat a record across pages when data changes
/// mid-sync; the last copy wins so one upsert never touches a row twice.
pub fn page_rows(records: Vec<Value>) -> Result<Vec<RecordRow>, RecordError> {
    let mut rows: Vec<RecordRow> = Vec::with_capacity(records.len());
    let mut position_of: HashMap<i64, usize> = HashMap::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        let row = record_row(index, record)?;
        match position_of.get(&row.procore_id) {
            Some(&at) => rows[at] = row,
            None => {
                position_of.insert(row.procore_id, rows.len());
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// A timestamp Postgres will accept for sure, or nothing: a malformed date from the API
/// must not make the whole page fail to store.
fn normalise_timestamp(s: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| {
        t.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_common_columns_across_tools() {
        let rfi = record_row(
            0,
            json!({"id": 7, "subject": "Door", "status": "open", "updated_at": "2026-01-01T10:00:00+02:00"}),
        )
        .unwrap();
        assert_eq!(rfi.procore_id, 7);
        assert_eq!(rfi.name.as_deref(), Some("Door"));
        assert_eq!(rfi.status.as_deref(), Some("open"));
        assert_eq!(rfi.updated_at.as_deref(), Some("2026-01-01T08:00:00Z"));

        let submittal = record_row(
            0,
            json!({"id": "12", "title": "Steel", "status": {"id": 1, "name": "Approved"}}),
        )
        .unwrap();
        assert_eq!(submittal.procore_id, 12);
        assert_eq!(submittal.name.as_deref(), Some("Steel"));
        assert_eq!(submittal.status.as_deref(), Some("Approved"));
        assert_eq!(submittal.updated_at, None);
    }

    #[test]
    fn bad_dates_are_dropped_not_fatal() {
        let row = record_row(0, json!({"id": 1, "updated_at": "yesterday"})).unwrap();
        assert_eq!(row.updated_at, None);
    }

    #[test]
    fn records_without_an_id_are_rejected_with_their_position() {
        assert_eq!(
            page_rows(vec![json!({"id": 1}), json!({"name": "x"})]),
            Err(RecordError::MissingId { index: 1 })
        );
        assert_eq!(
            page_rows(vec![json!([1, 2])]),
            Err(RecordError::NotAnObject { index: 0 })
        );
        assert!(record_row(0, json!({"id": 1.5})).is_err());
    }

    #[test]
    fn duplicate_ids_in_a_page_keep_the_last_copy() {
        let rows = page_rows(vec![
            json!({"id": 1, "name": "old"}),
            json!({"id": 2, "name": "b"}),
            json!({"id": 1, "name": "new"}),
        ])
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name.as_deref(), Some("new"));
    }
}
