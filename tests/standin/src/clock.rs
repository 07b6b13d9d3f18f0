//! Wall-clock helpers shared by tokens, rate limits and record timestamps.

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// The stand-in's "today" for daily logs: the world's `catalog.today` when it pins one
/// (a valid `YYYY-MM-DD`), else the current UTC date.
pub fn today(pinned: Option<&str>) -> NaiveDate {
    pinned
        .and_then(|day| crate::catalog::parse_date(day).ok())
        .unwrap_or_else(|| now().date_naive())
}

pub fn epoch_seconds(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

/// Timestamps for edits are rounded *up* to the next whole second: the API prints
/// whole seconds, and rounding down could place an edit inside an `updated_at` window a
/// client already read before the edit happened, which no real client could ever catch.
pub fn record_time_now() -> DateTime<Utc> {
    let t = now();
    let whole = t.timestamp();
    let up = if t.timestamp_subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    };
    Utc.timestamp_opt(up, 0).single().unwrap_or(t)
}

/// ISO 8601 UTC with whole seconds, the format records use.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// ISO 8601 UTC with milliseconds, for the request log.
pub fn iso_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
