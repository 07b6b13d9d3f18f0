//! Retry timing for transient failures (timeouts, 5xx, 503 throttling).

use std::time::Duration;

/// Delay before retry number `attempt` (1 = first retry): `base * 2^(attempt-1)`, capped at
/// `cap`, with "equal jitter": half of it fixed, half uniformly random.
///
/// The fixed half guarantees a real pause; the random half keeps many workers that failed
/// together (a Procore outage) from retrying in lockstep.
pub fn retry_delay(
    attempt: u32,
    base: Duration,
    cap: Duration,
    rng: &mut impl rand::Rng,
) -> Duration {
    let doublings = attempt.saturating_sub(1).min(63);
    let factor = 1u128 << doublings;
    let ceiling = base.as_nanos().saturating_mul(factor).min(cap.as_nanos());
    let half = ceiling / 2;
    let jitter = if ceiling - half == 0 {
        0
    } else {
        rng.gen_range(0..=(ceiling - half))
    };
    let nanos = half + jitter;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(60);

    #[test]
    fn grows_exponentially_within_equal_jitter_bounds() {
        let mut rng = StdRng::seed_from_u64(7);
        for (attempt, full) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0)] {
            for _ in 0..200 {
                let d = retry_delay(attempt, BASE, CAP, &mut rng).as_secs_f64();
                assert!(d >= full / 2.0 && d <= full, "attempt {attempt}: {d}");
            }
        }
    }

    #[test]
    fn is_capped() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in [7, 10, 64, 1000, u32::MAX] {
            let d = retry_delay(attempt, BASE, CAP, &mut rng);
            assert!(d >= CAP / 2 && d <= CAP, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn attempt_zero_is_treated_as_the_first_retry() {
        let mut rng = StdRng::seed_from_u64(1);
        let d = retry_delay(0, BASE, CAP, &mut rng);
        assert!(d >= BASE / 2 && d <= BASE);
    }

    #[test]
    fn jitter_varies() {
        let mut rng = StdRng::seed_from_u64(3);
        let a: Vec<Duration> = (0..20)
            .map(|_| retry_delay(5, BASE, CAP, &mut rng))
            .collect();
        assert!(a.iter().any(|d| *d != a[0]));
    }

    #[test]
    fn zero_base_gives_zero() {
        let mut rng = StdRng::seed_from_u64(3);
        assert_eq!(
            retry_delay(3, Duration::ZERO, CAP, &mut rng),
            Duration::ZERO
        );
    }
}
