//! When to try a failed alert delivery again.
//!
//! A fixed ladder rather than `procore::backoff`'s jittered doubling: one worker sends
//! alerts, so there is no herd to spread, and an operator reading the delivery table can
//! tell when the next try comes.

use std::time::Duration;

const LADDER: [Duration; 4] = [
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(60 * 60),
];

/// The wait before the next try of a delivery that has failed `attempts` times (1 after
/// the first failure): 1 min, 5 min, 15 min, 1 h; `None` after the fifth failed try (about
/// 1 h 21 min after the first), when the delivery is recorded as failed.
pub fn next_retry(attempts: u32) -> Option<Duration> {
    let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
    LADDER.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_then_give_up() {
        let minutes = |m: u64| Some(Duration::from_secs(m * 60));
        assert_eq!(next_retry(1), minutes(1));
        assert_eq!(next_retry(2), minutes(5));
        assert_eq!(next_retry(3), minutes(15));
        assert_eq!(next_retry(4), minutes(60));
        assert_eq!(next_retry(5), None);
        assert_eq!(next_retry(u32::MAX), None);
        // Nothing failed yet: there is nothing to retry.
        assert_eq!(next_retry(0), None);
    }
}
