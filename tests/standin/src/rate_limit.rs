//! Procore's two rate limits, counted per login so that refreshing a token does not
//! reset them: a 10-second spike window and an hourly window, both fixed and aligned
//! to the epoch.

use std::collections::HashMap;

pub const SPIKE_WINDOW_S: u64 = 10;
pub const HOUR_WINDOW_S: u64 = 3600;
pub const LIMIT_MESSAGE: &str =
    "You have surpassed the max number of requests for an hour. Please wait until your limit resets.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub spike: u64,
    pub hour: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    spike_window: u64,
    spike_used: u64,
    hour_window: u64,
    hour_used: u64,
}

impl Usage {
    fn roll(&mut self, now: u64) {
        if self.spike_window != now / SPIKE_WINDOW_S {
            self.spike_window = now / SPIKE_WINDOW_S;
            self.spike_used = 0;
        }
        if self.hour_window != now / HOUR_WINDOW_S {
            self.hour_window = now / HOUR_WINDOW_S;
            self.hour_used = 0;
        }
    }
}

/// What the `X-Rate-Limit-*` headers report, and whether the request may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Epoch seconds when the reported window resets.
    pub reset: u64,
    pub retry_after: u64,
}

impl Verdict {
    pub fn headers(&self, with_retry_after: bool) -> Vec<(String, String)> {
        let mut headers = vec![
            ("X-Rate-Limit-Limit".to_string(), self.limit.to_string()),
            (
                "X-Rate-Limit-Remaining".to_string(),
                self.remaining.to_string(),
            ),
            ("X-Rate-Limit-Reset".to_string(), self.reset.to_string()),
        ];
        if !self.allowed && with_retry_after {
            headers.push(("Retry-After".to_string(), self.retry_after.to_string()));
        }
        headers
    }
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    by_login: HashMap<String, Usage>,
}

impl RateLimiter {
    /// Counts one request if both windows have room; a refused request is not counted.
    pub fn admit(&mut self, login: &str, now: u64, limits: Limits) -> Verdict {
        let usage = self.by_login.entry(login.to_string()).or_default();
        usage.roll(now);
        let verdict = verdict(usage, now, limits, false);
        if verdict.allowed {
            usage.spike_used += 1;
            usage.hour_used += 1;
            return self::verdict(usage, now, limits, true);
        }
        verdict
    }

    /// The headers an injected 429 carries: the spike window, exhausted.
    pub fn refusal(now: u64, limits: Limits) -> Verdict {
        let spike_reset = (now / SPIKE_WINDOW_S + 1) * SPIKE_WINDOW_S;
        Verdict {
            allowed: false,
            limit: limits.spike,
            remaining: 0,
            reset: spike_reset,
            retry_after: (spike_reset - now).max(1),
        }
    }
}

fn verdict(usage: &Usage, now: u64, limits: Limits, counted: bool) -> Verdict {
    let spike_reset = (usage.spike_window + 1) * SPIKE_WINDOW_S;
    let hour_reset = (usage.hour_window + 1) * HOUR_WINDOW_S;
    let spike_left = limits.spike.saturating_sub(usage.spike_used);
    let hour_left = limits.hour.saturating_sub(usage.hour_used);
    if !counted && (spike_left == 0 || hour_left == 0) {
        // Both must have room again before a request passes, so report the later reset.
        let reset = match (spike_left == 0, hour_left == 0) {
            (_, true) => hour_reset,
            _ => spike_reset,
        };
        let limit = if hour_left == 0 {
            limits.hour
        } else {
            limits.spike
        };
        return Verdict {
            allowed: false,
            limit,
            remaining: 0,
            reset,
            retry_after: reset.saturating_sub(now).max(1),
        };
    }
    // Report whichever window is closer to running out (the spike one on a tie).
    let (limit, remaining, reset) = if hour_left < spike_left {
        (limits.hour, hour_left, hour_reset)
    } else {
        (limits.spike, spike_left, spike_reset)
    };
    Verdict {
        allowed: true,
        limit,
        remaining,
        reset,
        retry_after: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { spike: 3, hour: 5 };

    #[test]
    fn spike_window_refuses_then_resets_on_the_next_ten_seconds() {
        let mut rl = RateLimiter::default();
        let t = 1_000_000_000; // start of a spike window
        for expected_left in [2, 1, 0] {
            let v = rl.admit("user-1", t + 1, LIMITS);
            assert!(v.allowed);
            assert_eq!((v.limit, v.remaining, v.reset), (3, expected_left, t + 10));
        }
        let refused = rl.admit("user-1", t + 9, LIMITS);
        assert!(!refused.allowed);
        assert_eq!(
            (refused.remaining, refused.reset, refused.retry_after),
            (0, t + 10, 1)
        );
        // Another login has its own budget.
        assert!(rl.admit("user-2", t + 9, LIMITS).allowed);
        // Refusals are not counted, so the next window starts fresh.
        let next = rl.admit("user-1", t + 10, LIMITS);
        assert!(next.allowed);
        // Hour: 4 used of 5, spike: 1 used of 3 -> the hour is closer to running out.
        assert_eq!((next.limit, next.remaining), (5, 1));
    }

    #[test]
    fn hourly_window_refuses_until_the_hour_turns() {
        let mut rl = RateLimiter::default();
        let hour = 3600 * 500_000;
        for k in 0..5 {
            assert!(rl.admit("u", hour + k * 10, LIMITS).allowed);
        }
        let refused = rl.admit("u", hour + 100, LIMITS);
        assert!(!refused.allowed);
        assert_eq!(
            (refused.limit, refused.reset, refused.retry_after),
            (5, hour + 3600, 3500)
        );
        assert!(rl.admit("u", hour + 3600, LIMITS).allowed);
    }

    #[test]
    fn headers_include_retry_after_only_on_refusals_when_enabled() {
        let mut rl = RateLimiter::default();
        let ok = rl.admit("u", 0, Limits { spike: 1, hour: 10 });
        assert_eq!(ok.headers(true).len(), 3);
        let refused = rl.admit("u", 3, Limits { spike: 1, hour: 10 });
        let headers = refused.headers(true);
        assert!(headers.contains(&("Retry-After".to_string(), "7".to_string())));
        assert_eq!(refused.headers(false).len(), 3);
        let injected = RateLimiter::refusal(3, Limits { spike: 1, hour: 10 });
        assert_eq!((injected.reset, injected.retry_after), (10, 7));
    }
}
