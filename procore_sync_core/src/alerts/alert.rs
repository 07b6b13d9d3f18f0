//! What an operator is told about, as data: the extension stores an alert's [`Alert::kind`],
//! [`Alert::dedupe_key`] and [`Alert::details`] in its table and reads them back with
//! [`Alert::from_details`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Alert {
    /// The first failure of a user's sync after a success; `error` is the queue item's
    /// error message.
    UserFailing {
        user_id: String,
        error: String,
        next_attempt: Option<DateTime<Utc>>,
    },
    /// Procore answered `invalid_grant`: the stored credentials are dead and the user is no
    /// longer queued until someone connects them again.
    UserMustReconnect { user_id: String, reason: String },
    /// A user whose failure was alerted synced successfully again.
    UserRecovered { user_id: String },
    /// A scheduled job failed this many runs in a row.
    JobFailing {
        job_name: String,
        failed_runs: u32,
        last_message: String,
    },
    /// A job that was alerted as failing ran successfully again.
    JobRecovered { job_name: String },
    /// The oldest due queue item has waited longer than the stall setting.
    QueueStalled {
        oldest_due_since: DateTime<Utc>,
        open_items: i64,
    },
    /// The queue that was alerted as stalled drains again.
    QueueRecovered,
    /// Procore gave up delivering webhook events to this server (the backstop found them
    /// listed as discarded).
    DeliveriesDiscarded { company_id: i64, count: i64 },
}

impl Alert {
    /// The stable name of the alert's kind, for the alert table's `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Alert::UserFailing { .. } => "user_failing",
            Alert::UserMustReconnect { .. } => "user_must_reconnect",
            Alert::UserRecovered { .. } => "user_recovered",
            Alert::JobFailing { .. } => "job_failing",
            Alert::JobRecovered { .. } => "job_recovered",
            Alert::QueueStalled { .. } => "queue_stalled",
            Alert::QueueRecovered => "queue_recovered",
            Alert::DeliveriesDiscarded { .. } => "deliveries_discarded",
        }
    }

    /// What the alert is about: `user:<id>`, `job:<name>`, `queue` or `hook:<company>`. A
    /// streak belongs to one key; the failing alert and its recovery share it.
    pub fn dedupe_key(&self) -> String {
        match self {
            Alert::UserFailing { user_id, .. }
            | Alert::UserMustReconnect { user_id, .. }
            | Alert::UserRecovered { user_id } => format!("user:{user_id}"),
            Alert::JobFailing { job_name, .. } | Alert::JobRecovered { job_name } => {
                format!("job:{job_name}")
            }
            Alert::QueueStalled { .. } | Alert::QueueRecovered => "queue".to_owned(),
            Alert::DeliveriesDiscarded { company_id, .. } => format!("hook:{company_id}"),
        }
    }

    /// Whether the alert says that something is fine again.
    pub fn is_recovery(&self) -> bool {
        matches!(
            self,
            Alert::UserRecovered { .. } | Alert::JobRecovered { .. } | Alert::QueueRecovered
        )
    }

    /// The alert as a JSON object with its `kind` and fields, for a `jsonb` column.
    pub fn details(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Reads back what [`Alert::details`] wrote.
    pub fn from_details(details: &serde_json::Value) -> Result<Alert, serde_json::Error> {
        Alert::deserialize(details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Alert> {
        let at = DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default();
        vec![
            Alert::UserFailing {
                user_id: "u1".into(),
                error: "boom".into(),
                next_attempt: Some(at),
            },
            Alert::UserMustReconnect {
                user_id: "u1".into(),
                reason: "revoked".into(),
            },
            Alert::UserRecovered {
                user_id: "u1".into(),
            },
            Alert::JobFailing {
                job_name: "nightly".into(),
                failed_runs: 3,
                last_message: "x".into(),
            },
            Alert::JobRecovered {
                job_name: "nightly".into(),
            },
            Alert::QueueStalled {
                oldest_due_since: at,
                open_items: 4,
            },
            Alert::QueueRecovered,
            Alert::DeliveriesDiscarded {
                company_id: 7,
                count: 2,
            },
        ]
    }

    #[test]
    fn kinds_and_keys() {
        let shown: Vec<(&str, String)> = all().iter().map(|a| (a.kind(), a.dedupe_key())).collect();
        assert_eq!(
            shown,
            [
                ("user_failing", "user:u1".to_owned()),
                ("user_must_reconnect", "user:u1".to_owned()),
                ("user_recovered", "user:u1".to_owned()),
                ("job_failing", "job:nightly".to_owned()),
                ("job_recovered", "job:nightly".to_owned()),
                ("queue_stalled", "queue".to_owned()),
                ("queue_recovered", "queue".to_owned()),
                ("deliveries_discarded", "hook:7".to_owned()),
            ]
        );
    }

    #[test]
    fn details_round_trip_and_carry_the_kind() {
        for alert in all() {
            let details = alert.details();
            assert_eq!(details["kind"], alert.kind());
            assert_eq!(Alert::from_details(&details).ok(), Some(alert));
        }
    }

    #[test]
    fn recoveries() {
        let recoveries: Vec<&str> = all()
            .iter()
            .filter(|a| a.is_recovery())
            .map(Alert::kind)
            .collect();
        assert_eq!(
            recoveries,
            ["user_recovered", "job_recovered", "queue_recovered"]
        );
    }
}
