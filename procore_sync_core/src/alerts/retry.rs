//! When to try a failed alert delivery again.
//!
//! A fixed ladder rather than `procore::backoff`'s jittered doubling: one worker sends
//! alerts, so there is no herd to spread, and an operator reading the delivery table can
//! tell when the next try comes.

use std::time::Duration;

/// The ladder's steps, as multiples of its first.
const LADDER: [u32; 4] = [1, 5, 15, 60];

/// The first step of the default ladder.
pub const DEFAULT_FIRST_RETRY: Duration = Duration::from_secs(60);

/// The wait before the next try of a delivery that has failed `attempts` times (1 after
/// the first failure): 1 min, 5 min, 15 min, 1 h; `None` after the fifth failed try (about
/// 1 h 21 min after the first), when the delivery is recorded as failed.
pub fn next_retry(attempts: u32) -> Option<Duration> {
    next_retry_from(attempts, DEFAULT_FIRST_RETRY)
}

/// [`next_retry`] on a ladder whose first step is `first` (the rest keep their ratios), for
/// an operator who wants a shorter or longer ladder (`procore_sync.alert_retry_delay`).
pub fn next_retry_from(attempts: u32, first: Duration) -> Option<Duration> {
    let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
    LADDER
        .get(index)
        .map(|&factor| first.saturating_mul(factor))
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

    #[test]
    fn a_shorter_ladder_keeps_its_ratios_and_its_length() {
        let first = Duration::from_millis(200);
        let waits: Vec<Option<Duration>> = (1..=5).map(|a| next_retry_from(a, first)).collect();
        assert_eq!(
            waits,
            [
                Some(Duration::from_millis(200)),
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(3)),
                Some(Duration::from_secs(12)),
                None
            ]
        );
    }
}
