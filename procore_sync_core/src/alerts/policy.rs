//! When to alert: pure functions from what the extension stored and what it just saw to
//! what it should store next and the alert to record, if any.
//!
//! One alert per streak: the first failure (or the third failed run of a job, or the queue
//! passing the stall age) opens a streak and alerts; what follows within the streak is
//! silent; the first success closes it with one recovery notice.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::alert::Alert;
use super::scrub::scrub_line;

/// Longest error text carried by an alert, in characters.
const ERROR_CHARS: usize = 500;

/// A job alerts when this many runs in a row have failed.
pub const JOB_FAILED_RUNS_BEFORE_ALERT: u32 = 3;

/// Default for how long the oldest due queue item may wait before the queue counts as
/// stalled.
pub const DEFAULT_QUEUE_STALL_AFTER: Duration = Duration::from_secs(30 * 60);

/// Where a user's failure streak stands; the extension stores it per user
/// ([`StreakState::as_str`] / [`StreakState::parse`]).
///
/// There is no "failing but not alerted" state: every streak alerts at its first failure,
/// so a failing streak is an alerted one and earns a recovery notice when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreakState {
    #[default]
    Healthy,
    /// Failing; the failure alert went out.
    Failing,
    /// Procore refused the grant; the reconnect alert went out. Plain failures that follow
    /// say nothing new: only a reconnect helps.
    MustReconnect,
}

impl StreakState {
    pub fn as_str(self) -> &'static str {
        match self {
            StreakState::Healthy => "healthy",
            StreakState::Failing => "failing",
            StreakState::MustReconnect => "must_reconnect",
        }
    }

    pub fn parse(name: &str) -> Option<StreakState> {
        match name {
            "healthy" => Some(StreakState::Healthy),
            "failing" => Some(StreakState::Failing),
            "must_reconnect" => Some(StreakState::MustReconnect),
            _ => None,
        }
    }
}

/// How one sync of a user ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserOutcome {
    Succeeded,
    Failed {
        /// The queue item's error message.
        error: String,
        /// When the queue will try again, if it will.
        next_attempt: Option<DateTime<Utc>>,
        /// The user has to connect again: Procore refused their refresh token, at this sync
        /// or an earlier one, and they have not reconnected since.
        invalid_grant: bool,
    },
}

/// The user's next streak state and the alert to record, if any: the first failure after a
/// success alerts; `invalid_grant` sends the reconnect alert once per streak, even after a
/// plain failure alert; the first success after a failing streak sends the recovery notice.
/// A plain failure after the reconnect alert means the user reconnected and fails for
/// another reason: a new streak, which alerts.
pub fn on_user_outcome(
    user_id: &str,
    previous: StreakState,
    outcome: UserOutcome,
) -> (StreakState, Option<Alert>) {
    match outcome {
        UserOutcome::Succeeded => match previous {
            StreakState::Healthy => (StreakState::Healthy, None),
            StreakState::Failing | StreakState::MustReconnect => (
                StreakState::Healthy,
                Some(Alert::UserRecovered {
                    user_id: user_id.to_owned(),
                }),
            ),
        },
        UserOutcome::Failed {
            error,
            invalid_grant: true,
            ..
        } => match previous {
            StreakState::MustReconnect => (StreakState::MustReconnect, None),
            StreakState::Healthy | StreakState::Failing => (
                StreakState::MustReconnect,
                Some(Alert::UserMustReconnect {
                    user_id: user_id.to_owned(),
                    reason: scrub_line(&error, &[], ERROR_CHARS),
                }),
            ),
        },
        UserOutcome::Failed {
            error,
            next_attempt,
            invalid_grant: false,
        } => match previous {
            StreakState::Healthy | StreakState::MustReconnect => (
                StreakState::Failing,
                Some(Alert::UserFailing {
                    user_id: user_id.to_owned(),
                    error: scrub_line(&error, &[], ERROR_CHARS),
                    next_attempt,
                }),
            ),
            StreakState::Failing => (StreakState::Failing, None),
        },
    }
}

/// A job's run of consecutive failed runs; the extension stores the count per job (or
/// counts the latest runs in the run history). It alerted once the count reached
/// [`JOB_FAILED_RUNS_BEFORE_ALERT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobStreak {
    pub failed_runs: u32,
}

/// How one finished run of a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded,
    Failed { message: String },
}

/// The job's next streak and the alert to record, if any: the third failed run in a row
/// alerts (once: the fourth does not), and the first success after that sends a recovery.
pub fn on_job_run(
    job_name: &str,
    previous: JobStreak,
    outcome: RunOutcome,
) -> (JobStreak, Option<Alert>) {
    match outcome {
        RunOutcome::Succeeded => {
            let alerted = previous.failed_runs >= JOB_FAILED_RUNS_BEFORE_ALERT;
            let alert = alerted.then(|| Alert::JobRecovered {
                job_name: job_name.to_owned(),
            });
            (JobStreak::default(), alert)
        }
        RunOutcome::Failed { message } => {
            let failed_runs = previous.failed_runs.saturating_add(1);
            let alert = (failed_runs == JOB_FAILED_RUNS_BEFORE_ALERT).then(|| Alert::JobFailing {
                job_name: job_name.to_owned(),
                failed_runs,
                last_message: scrub_line(&message, &[], ERROR_CHARS),
            });
            (JobStreak { failed_runs }, alert)
        }
    }
}

/// Whether the queue was alerted as stalled; the extension stores it
/// ([`QueueState::as_str`] / [`QueueState::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueState {
    #[default]
    Draining,
    Stalled,
}

impl QueueState {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Draining => "draining",
            QueueState::Stalled => "stalled",
        }
    }

    pub fn parse(name: &str) -> Option<QueueState> {
        match name {
            "draining" => Some(QueueState::Draining),
            "stalled" => Some(QueueState::Stalled),
            _ => None,
        }
    }
}

/// What a look at the queue found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCheck {
    /// Since when the oldest due (pending and runnable now) item has waited; `None` when
    /// nothing is due.
    pub oldest_due_since: Option<DateTime<Utc>>,
    /// Pending and processing items.
    pub open_items: i64,
}

/// The queue's next state and the alert to record, if any. The queue stalls when its
/// oldest due item has waited `stall_after`; it counts as draining again only once nothing
/// due is older than half of that, so a queue hovering around the limit does not alert
/// every few minutes.
pub fn on_queue_check(
    previous: QueueState,
    check: QueueCheck,
    now: DateTime<Utc>,
    stall_after: Duration,
) -> (QueueState, Option<Alert>) {
    let limit = TimeDelta::from_std(stall_after).unwrap_or(TimeDelta::MAX);
    let waited = check.oldest_due_since.map(|since| now - since);
    let stalled = waited.is_some_and(|waited| waited >= limit);
    let drained = waited.is_none_or(|waited| waited < limit / 2);
    match previous {
        QueueState::Draining if stalled => (
            QueueState::Stalled,
            check
                .oldest_due_since
                .map(|oldest_due_since| Alert::QueueStalled {
                    oldest_due_since,
                    open_items: check.open_items,
                }),
        ),
        QueueState::Stalled if drained => (QueueState::Draining, Some(Alert::QueueRecovered)),
        unchanged => (unchanged, None),
    }
}

/// The alert for what the webhook backstop found for one company's hook: any discarded
/// delivery is worth one. (The backstop resets the count when it reconciles, so the same
/// discards are not reported twice.)
pub fn on_deliveries_check(company_id: i64, discarded: i64) -> Option<Alert> {
    (discarded > 0).then_some(Alert::DeliveriesDiscarded {
        company_id,
        count: discarded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(error: &str) -> UserOutcome {
        UserOutcome::Failed {
            error: error.into(),
            next_attempt: None,
            invalid_grant: false,
        }
    }

    fn invalid_grant() -> UserOutcome {
        UserOutcome::Failed {
            error: "Procore refused the grant (invalid_grant): revoked".into(),
            next_attempt: None,
            invalid_grant: true,
        }
    }

    /// Feeds the outcomes in order and returns every alert's kind.
    fn user_alerts(outcomes: Vec<UserOutcome>) -> (StreakState, Vec<&'static str>) {
        let mut state = StreakState::default();
        let mut kinds = Vec::new();
        for outcome in outcomes {
            let (next, alert) = on_user_outcome("u1", state, outcome);
            state = next;
            kinds.extend(alert.map(|a| a.kind()));
        }
        (state, kinds)
    }

    #[test]
    fn fail_fail_succeed_alerts_once_then_recovers() {
        let (state, kinds) = user_alerts(vec![
            UserOutcome::Succeeded,
            failed("timeout"),
            failed("timeout"),
            UserOutcome::Succeeded,
            UserOutcome::Succeeded,
        ]);
        assert_eq!(kinds, ["user_failing", "user_recovered"]);
        assert_eq!(state, StreakState::Healthy);
    }

    #[test]
    fn the_failure_alert_carries_the_error_and_the_next_attempt() {
        let at = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        let (_, alert) = on_user_outcome(
            "u1",
            StreakState::Healthy,
            UserOutcome::Failed {
                error: "Procore server error 502:\n Bad Gateway".into(),
                next_attempt: Some(at),
                invalid_grant: false,
            },
        );
        assert_eq!(
            alert,
            Some(Alert::UserFailing {
                user_id: "u1".into(),
                error: "Procore server error 502: Bad Gateway".into(),
                next_attempt: Some(at),
            })
        );
    }

    #[test]
    fn invalid_grant_mid_streak_sends_the_reconnect_alert_once() {
        let (state, kinds) = user_alerts(vec![failed("timeout"), invalid_grant(), invalid_grant()]);
        assert_eq!(kinds, ["user_failing", "user_must_reconnect"]);
        assert_eq!(state, StreakState::MustReconnect);

        // Reconnected, then failing for another reason: a new streak.
        let (state, kinds) = user_alerts(vec![invalid_grant(), failed("403"), failed("403")]);
        assert_eq!(kinds, ["user_must_reconnect", "user_failing"]);
        assert_eq!(state, StreakState::Failing);

        let (state, kinds) = user_alerts(vec![invalid_grant(), UserOutcome::Succeeded]);
        assert_eq!(kinds, ["user_must_reconnect", "user_recovered"]);
        assert_eq!(state, StreakState::Healthy);
    }

    #[test]
    fn a_new_streak_alerts_again() {
        let (_, kinds) = user_alerts(vec![
            failed("a"),
            UserOutcome::Succeeded,
            failed("b"),
            failed("c"),
        ]);
        assert_eq!(kinds, ["user_failing", "user_recovered", "user_failing"]);
    }

    #[test]
    fn alert_errors_are_scrubbed() {
        let (_, alert) = on_user_outcome(
            "u1",
            StreakState::Healthy,
            failed("sent refresh_token=r-123 with Bearer abc123"),
        );
        let Some(Alert::UserFailing { error, .. }) = alert else {
            panic!("expected a failure alert, got {alert:?}");
        };
        assert!(
            !error.contains("r-123") && !error.contains("abc123"),
            "{error}"
        );
    }

    #[test]
    fn streak_states_round_trip_through_their_names() {
        for state in [
            StreakState::Healthy,
            StreakState::Failing,
            StreakState::MustReconnect,
        ] {
            assert_eq!(StreakState::parse(state.as_str()), Some(state));
        }
        for state in [QueueState::Draining, QueueState::Stalled] {
            assert_eq!(QueueState::parse(state.as_str()), Some(state));
        }
        assert_eq!(StreakState::parse("bogus"), None);
    }

    #[test]
    fn job_alerts_on_the_third_failed_run_in_a_row_and_recovers() {
        let fail = || RunOutcome::Failed {
            message: "ERROR: boom".into(),
        };
        let runs = [
            fail(),
            fail(),
            RunOutcome::Succeeded,
            fail(),
            fail(),
            fail(),
            fail(),
            fail(),
            RunOutcome::Succeeded,
            RunOutcome::Succeeded,
        ];
        let mut streak = JobStreak::default();
        let mut alerts = Vec::new();
        for (run, outcome) in runs.into_iter().enumerate() {
            let (next, alert) = on_job_run("nightly", streak, outcome);
            streak = next;
            alerts.extend(alert.map(|a| (run, a)));
        }
        assert_eq!(
            alerts,
            [
                (
                    5,
                    Alert::JobFailing {
                        job_name: "nightly".into(),
                        failed_runs: 3,
                        last_message: "ERROR: boom".into(),
                    }
                ),
                (
                    8,
                    Alert::JobRecovered {
                        job_name: "nightly".into()
                    }
                ),
            ]
        );
        assert_eq!(streak, JobStreak::default());
    }

    #[test]
    fn queue_stalls_once_and_recovers_when_it_drains() {
        let start = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        let minutes = |m: i64| start + TimeDelta::minutes(m);
        let check = |oldest: Option<i64>| QueueCheck {
            oldest_due_since: oldest.map(minutes),
            open_items: 12,
        };
        // (now in minutes, oldest due item's age origin in minutes)
        let looks = [
            (10, Some(0)),   // 10 min: fine
            (30, Some(0)),   // 30 min: stalled
            (40, Some(0)),   // still stalled: silent
            (50, Some(34)),  // 16 min: under the limit but not under half: still stalled
            (60, Some(50)),  // 10 min: drained
            (70, Some(55)),  // 15 min: fine
            (100, Some(65)), // 35 min: stalled again
            (101, None),     // nothing due: drained
        ];
        let mut state = QueueState::default();
        let mut alerts = Vec::new();
        for (now, oldest) in looks {
            let (next, alert) = on_queue_check(
                state,
                check(oldest),
                minutes(now),
                DEFAULT_QUEUE_STALL_AFTER,
            );
            state = next;
            alerts.extend(alert.map(|a| (now, a)));
        }
        assert_eq!(
            alerts,
            [
                (
                    30,
                    Alert::QueueStalled {
                        oldest_due_since: minutes(0),
                        open_items: 12
                    }
                ),
                (60, Alert::QueueRecovered),
                (
                    100,
                    Alert::QueueStalled {
                        oldest_due_since: minutes(65),
                        open_items: 12
                    }
                ),
                (101, Alert::QueueRecovered),
            ]
        );
    }

    #[test]
    fn discarded_deliveries_alert_only_when_there_are_some() {
        assert_eq!(on_deliveries_check(7, 0), None);
        assert_eq!(
            on_deliveries_check(7, 3),
            Some(Alert::DeliveriesDiscarded {
                company_id: 7,
                count: 3
            })
        );
    }
}
