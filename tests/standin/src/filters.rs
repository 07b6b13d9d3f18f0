//! `filters[updated_at]=FROM...TO`, Procore's incremental-read filter.

use chrono::{DateTime, Utc};

pub const UPDATED_AT: &str = "filters[updated_at]";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdatedAtWindow {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl UpdatedAtWindow {
    /// Both bounds are inclusive, as Procore documents them.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && t <= self.to
    }
}

pub fn parse_updated_at(value: &str) -> Result<UpdatedAtWindow, String> {
    let Some((from, to)) = value.split_once("...") else {
        return Err(format!(
            "{UPDATED_AT} must be FROM...TO (ISO 8601 UTC), got {value:?}"
        ));
    };
    Ok(UpdatedAtWindow {
        from: parse_time(from)?,
        to: parse_time(to)?,
    })
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    // An unencoded `+00:00` offset arrives as a space after form decoding.
    if let Some((date, offset)) = text.rsplit_once(' ') {
        if let Ok(t) = DateTime::parse_from_rfc3339(&format!("{date}+{offset}")) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    Err(format!(
        "{UPDATED_AT}: {text:?} is not an ISO 8601 timestamp with a zone (e.g. 2026-01-01T00:00:00Z)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_inclusive_windows() {
        let w = parse_updated_at("2026-01-01T00:00:00Z...2026-01-02T00:00:00Z").unwrap();
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let to = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
        assert_eq!(w, UpdatedAtWindow { from, to });
        assert!(w.contains(from) && w.contains(to));
        assert!(!w.contains(to + chrono::Duration::seconds(1)));
    }

    #[test]
    fn accepts_offsets_fractions_and_decoded_plus() {
        let w =
            parse_updated_at("2026-01-01T01:00:00+01:00...2026-01-01T00:00:00.5 00:00").unwrap();
        assert_eq!(w.from, Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        assert!(w.to > w.from);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "2026-01-01T00:00:00Z",
            "2026-01-01...2026-01-02",
            "2026-01-01T00:00:00Z...",
            "yesterday...today",
            "2026-01-01T00:00:00...2026-01-02T00:00:00",
        ] {
            assert!(parse_updated_at(bad).is_err(), "{bad:?}");
        }
    }
}
