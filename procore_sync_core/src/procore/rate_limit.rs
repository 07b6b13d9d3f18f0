//! Procore's rate-limit headers and pacing from them.
//!
//! Procore limits each access token per hour and per 10-second spike window, and the
//! `X-Rate-Limit-*` headers describe whichever window is closer to running out. The numbers
//! have changed over the years (3,600/hour, 600/hour, 25 per 10 s), so pacing reads them from
//! every response instead of assuming any.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// `X-Rate-Limit-Limit`: requests allowed in the reported window.
    pub limit: u32,
    /// `X-Rate-Limit-Remaining`.
    pub remaining: u32,
    /// `X-Rate-Limit-Reset`: Unix epoch seconds when the reported window resets.
    pub reset_at: i64,
}

/// The longest pause pacing will ask for. Procore's longest window is an hour; a reset
/// further away than that is a bogus header (milliseconds, a clock far off), and obeying it
/// would stall a sync for days.
const MAX_PACING_DELAY_S: i64 = 3600 + 1;

impl RateLimit {
    /// Builds from the three header values; `None` unless all three are present and numeric.
    pub fn from_headers(
        limit: Option<&str>,
        remaining: Option<&str>,
        reset: Option<&str>,
    ) -> Option<RateLimit> {
        Some(RateLimit {
            limit: parse_count(limit?)?,
            remaining: parse_count(remaining?)?,
            reset_at: parse_epoch(reset?)?,
        })
    }

    /// Requests kept in reserve: 10% of the limit, at least one.
    pub fn reserve(&self) -> u32 {
        (self.limit / 10).max(1)
    }
}

/// How long to wait before the next request so as not to hit the limit.
///
/// Above the reserve, no wait: spreading requests evenly would only slow a sync that fits in
/// the window anyway. At or below it, wait until the window resets plus one second, because
/// `X-Rate-Limit-Reset` has whole-second resolution and clocks differ slightly.
pub fn delay_before_next(rl: &RateLimit, now_epoch: i64) -> Option<Duration> {
    if rl.remaining > rl.reserve() {
        return None;
    }
    let wait = rl.reset_at.saturating_add(1).saturating_sub(now_epoch);
    if wait <= 0 {
        return None;
    }
    let wait = wait.min(MAX_PACING_DELAY_S);
    Some(Duration::from_secs(u64::try_from(wait).unwrap_or(0)))
}

fn parse_count(value: &str) -> Option<u32> {
    let value = value.trim();
    value
        .parse::<u32>()
        .ok()
        .or_else(|| value.parse::<u64>().ok().map(|_| u32::MAX))
}

fn parse_epoch(value: &str) -> Option<i64> {
    let value = value.trim();
    value.parse::<i64>().ok().or_else(|| {
        // Seen from some proxies: "1767225600.0".
        value
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f.ceil() as i64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rl(limit: u32, remaining: u32, reset_at: i64) -> RateLimit {
        RateLimit {
            limit,
            remaining,
            reset_at,
        }
    }

    #[test]
    fn from_headers_needs_all_three() {
        assert_eq!(
            RateLimit::from_headers(Some("3600"), Some(" 3599 "), Some("1767225600")),
            Some(rl(3600, 3599, 1_767_225_600))
        );
        assert_eq!(RateLimit::from_headers(None, Some("1"), Some("1")), None);
        assert_eq!(RateLimit::from_headers(Some("1"), None, Some("1")), None);
        assert_eq!(RateLimit::from_headers(Some("1"), Some("1"), None), None);
        assert_eq!(
            RateLimit::from_headers(Some("x"), Some("1"), Some("1")),
            None
        );
        assert_eq!(
            RateLimit::from_headers(Some("-1"), Some("1"), Some("1")),
            None
        );
    }

    #[test]
    fn from_headers_tolerates_float_reset() {
        assert_eq!(
            RateLimit::from_headers(Some("25"), Some("3"), Some("1767225600.2")),
            Some(rl(25, 3, 1_767_225_601))
        );
    }

    #[test]
    fn no_delay_above_the_reserve() {
        assert_eq!(delay_before_next(&rl(3600, 361, 1000), 900), None);
        assert_eq!(delay_before_next(&rl(25, 3, 1000), 990), None);
    }

    #[test]
    fn waits_for_the_reset_at_or_below_the_reserve() {
        assert_eq!(
            delay_before_next(&rl(3600, 360, 1000), 900),
            Some(Duration::from_secs(101))
        );
        assert_eq!(
            delay_before_next(&rl(25, 2, 1000), 995),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            delay_before_next(&rl(25, 0, 1000), 995),
            Some(Duration::from_secs(6))
        );
    }

    #[test]
    fn reserve_is_at_least_one() {
        assert_eq!(rl(5, 0, 0).reserve(), 1);
        assert_eq!(
            delay_before_next(&rl(5, 1, 1000), 999),
            Some(Duration::from_secs(2))
        );
        assert_eq!(delay_before_next(&rl(5, 2, 1000), 999), None);
    }

    #[test]
    fn no_delay_once_the_window_has_reset() {
        assert_eq!(delay_before_next(&rl(25, 0, 1000), 1001), None);
        assert_eq!(delay_before_next(&rl(25, 0, 1000), 5000), None);
    }

    #[test]
    fn bogus_far_reset_is_capped() {
        let far = rl(25, 0, 1_767_225_600_000);
        assert_eq!(
            delay_before_next(&far, 1_767_225_600),
            Some(Duration::from_secs(3601))
        );
    }
}
