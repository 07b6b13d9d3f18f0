//! Timestamps cross SPI as `timestamptz` values, to the microsecond, and as chrono's
//! `DateTime<Utc>` on the Rust side: no float epochs, no truncation to whole seconds.

use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;

/// Microseconds from the Unix epoch to Postgres's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_IN_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A time as a `timestamptz` argument. Outside Postgres's range it clamps to ±infinity,
/// which no time the extension handles comes near.
pub fn to_sql(at: DateTime<Utc>) -> TimestampWithTimeZone {
    let micros = at
        .timestamp_micros()
        .saturating_sub(POSTGRES_EPOCH_IN_UNIX_MICROS);
    TimestampWithTimeZone::try_from(micros).unwrap_or_else(|_| {
        if micros > 0 {
            TimestampWithTimeZone::positive_infinity()
        } else {
            TimestampWithTimeZone::negative_infinity()
        }
    })
}

/// A `timestamptz` read back; ±infinity has no chrono value and reads as `None`.
pub fn from_sql(at: TimestampWithTimeZone) -> Option<DateTime<Utc>> {
    if !at.is_finite() {
        return None;
    }
    let micros = at.into_inner().checked_add(POSTGRES_EPOCH_IN_UNIX_MICROS)?;
    DateTime::from_timestamp_micros(micros)
}
