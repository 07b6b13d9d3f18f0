//! The metrics as SQL, for sql_exporter and the like: the same names, labels and values as
//! the listener's `GET /metrics`, in the manner of pgmq's `metrics()`.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{Map, Value};

use crate::errors::OrRaise;
use crate::sync::observe;
use procore_sync_core::metrics::rows;

#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_metrics() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(kind, String),
        name!(labels, JsonB),
        name!(value, f64),
    ),
> {
    let metrics = observe::metrics().or_raise();
    TableIterator::new(rows(&metrics).into_iter().map(|row| {
        let labels: Map<String, Value> = row
            .labels
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        (
            row.name,
            row.kind.as_str().to_string(),
            JsonB(Value::Object(labels)),
            row.value,
        )
    }))
}
