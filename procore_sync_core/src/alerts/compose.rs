//! From pending alerts to the messages that go out: what each says, and one digest instead
//! of a storm.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{json, Map, Value};

use super::alert::Alert;
use super::scrub::{scrub, scrub_line};

/// More alerts than this within one [`WINDOW`] go out as one digest.
pub const DEFAULT_DIGEST_ABOVE: usize = 5;

/// The span that alerts are gathered over before they go out.
pub const WINDOW: Duration = Duration::from_secs(60);

/// How many alerts a digest lists one by one; the rest are counted.
pub const DIGEST_LINES: usize = 10;

/// Longest subject, in characters.
const SUBJECT_CHARS: usize = 200;

/// Longest line for one alert in a digest, in characters.
const LINE_CHARS: usize = 300;

/// An alert recorded by the extension and not yet sent.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAlert {
    /// The alert table's id, echoed in [`Message::alert_ids`].
    pub id: i64,
    pub alert: Alert,
    pub created_at: DateTime<Utc>,
}

/// One email or webhook post.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// One line: who or what, and what happened.
    pub subject: String,
    /// The body: what happened, and what to do about it.
    pub text: String,
    /// The webhook body: `text` (the subject, a blank line and the body, so a Slack or
    /// Teams incoming webhook shows everything), `subject`, `kind` (`digest` for a digest)
    /// and the alert's fields.
    pub json: Value,
    /// The pending alerts this message carries, oldest first.
    pub alert_ids: Vec<i64>,
}

/// The messages for the pending alerts whose minute is over, oldest first.
///
/// Alerts are taken in windows of one [`WINDOW`] starting at the oldest pending one. A
/// window with more than `digest_above` alerts becomes one digest; otherwise each alert is
/// a message of its own. A window that is still open at `now` is held back, with everything
/// after it, because more alerts may join it: so a first alert goes out about a minute
/// after it was raised, and a burst of failures (Procore down for everyone) sends one
/// digest a minute rather than an email per user. Alerts not named in any returned
/// message's `alert_ids` stay pending for a later call.
pub fn compose(pending: &[PendingAlert], now: DateTime<Utc>, digest_above: usize) -> Vec<Message> {
    compose_over(pending, now, digest_above, WINDOW)
}

/// [`compose`] with windows of `window` instead of [`WINDOW`]
/// (`procore_sync.alert_window`): shorter sends sooner, longer gathers bigger digests.
pub fn compose_over(
    pending: &[PendingAlert],
    now: DateTime<Utc>,
    digest_above: usize,
    window: Duration,
) -> Vec<Message> {
    let window = TimeDelta::from_std(window).unwrap_or(TimeDelta::MAX);
    let mut sorted: Vec<&PendingAlert> = pending.iter().collect();
    sorted.sort_by_key(|p| (p.created_at, p.id));

    let mut messages = Vec::new();
    let mut rest = sorted.as_slice();
    while let Some(first) = rest.first() {
        let closes = first.created_at + window;
        if now < closes {
            break;
        }
        let size = rest.partition_point(|p| p.created_at < closes);
        let (group, later) = rest.split_at(size);
        if group.len() > digest_above {
            messages.push(digest(group));
        } else {
            messages.extend(group.iter().map(|p| single(p)));
        }
        rest = later;
    }
    messages
}

/// What one alert says.
struct Wording {
    subject: String,
    body: String,
    /// The alert as one line of a digest.
    line: String,
}

fn single(pending: &PendingAlert) -> Message {
    let wording = wording(&pending.alert, pending.created_at);
    let subject = scrub_line(&wording.subject, &[], SUBJECT_CHARS);
    let body = scrub(&wording.body);
    let mut fields = Map::new();
    fields.insert("text".into(), Value::String(webhook_text(&subject, &body)));
    fields.insert("subject".into(), Value::String(subject.clone()));
    fields.insert(
        "created_at".into(),
        Value::String(rfc3339(pending.created_at)),
    );
    fields.insert(
        "dedupe_key".into(),
        Value::String(pending.alert.dedupe_key()),
    );
    if let Value::Object(details) = scrubbed_json(pending.alert.details()) {
        for (name, value) in details {
            fields.entry(name).or_insert(value);
        }
    }
    Message {
        subject,
        text: body,
        json: Value::Object(fields),
        alert_ids: vec![pending.id],
    }
}

fn digest(group: &[&PendingAlert]) -> Message {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for p in group {
        *counts.entry(p.alert.kind()).or_default() += 1;
    }
    let summary = summary(group);
    let (first, last) = match (group.first(), group.last()) {
        (Some(first), Some(last)) => (first.created_at, last.created_at),
        _ => (DateTime::UNIX_EPOCH, DateTime::UNIX_EPOCH),
    };

    let subject = scrub_line(
        &format!(
            "procore_sync: {} alerts within a minute ({summary})",
            group.len()
        ),
        &[],
        SUBJECT_CHARS,
    );
    let mut body = format!(
        "{} alerts were raised between {} and {}:\n",
        group.len(),
        human_time(first),
        human_time(last)
    );
    for p in group.iter().take(DIGEST_LINES) {
        let line = wording(&p.alert, p.created_at).line;
        body.push_str("- ");
        body.push_str(&scrub_line(&line, &[], LINE_CHARS));
        body.push('\n');
    }
    if group.len() > DIGEST_LINES {
        body.push_str(&format!("- ... and {} more\n", group.len() - DIGEST_LINES));
    }
    body.push('\n');
    if counts.contains_key("user_failing") {
        body.push_str(
            "Many users failing at once usually means Procore or the network is down; they \
             recover together, each with one notice when it syncs again.\n",
        );
    }
    if counts.contains_key("user_must_reconnect") {
        body.push_str(
            "Users who must reconnect stay stopped until procore_connect(...) or \
             procore_set_tokens(...) is run for them.\n",
        );
    }
    body.push_str("The state of every user:\n  SELECT * FROM procore_sync_user_status;\n");
    let body = scrub(&body);

    let listed: Vec<Value> = group
        .iter()
        .take(DIGEST_LINES)
        .map(|p| {
            let mut details = scrubbed_json(p.alert.details());
            if let Value::Object(fields) = &mut details {
                fields.insert("created_at".into(), Value::String(rfc3339(p.created_at)));
            }
            details
        })
        .collect();
    let json = json!({
        "text": webhook_text(&subject, &body),
        "subject": subject,
        "kind": "digest",
        "count": group.len(),
        "counts": counts,
        "first_created_at": rfc3339(first),
        "last_created_at": rfc3339(last),
        "alerts": listed,
    });
    Message {
        subject,
        text: body,
        json,
        alert_ids: group.iter().map(|p| p.id).collect(),
    }
}

/// "3 users failing, 1 user must reconnect, 1 job failing", in the order of first
/// appearance.
fn summary(group: &[&PendingAlert]) -> String {
    let mut counted: Vec<(&'static str, usize)> = Vec::new();
    for p in group {
        let kind = p.alert.kind();
        match counted.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => counted.push((kind, 1)),
        }
    }
    counted
        .into_iter()
        .map(|(kind, n)| {
            let (one, many) = match kind {
                "user_failing" => ("user failing", "users failing"),
                "user_must_reconnect" => ("user must reconnect", "users must reconnect"),
                "user_recovered" => ("user recovered", "users recovered"),
                "job_failing" => ("job failing", "jobs failing"),
                "job_recovered" => ("job recovered", "jobs recovered"),
                "queue_stalled" => ("queue stalled", "queue stalled"),
                "queue_recovered" => ("queue drains again", "queue drains again"),
                "deliveries_discarded" => ("hook discarding", "hooks discarding"),
                other => (other, other),
            };
            format!("{n} {}", if n == 1 { one } else { many })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn wording(alert: &Alert, created_at: DateTime<Utc>) -> Wording {
    match alert {
        Alert::UserFailing {
            user_id,
            error,
            next_attempt,
        } => {
            let next = match next_attempt {
                Some(at) => human_time(*at),
                None => "none scheduled: the queue item is marked failed".to_owned(),
            };
            Wording {
                subject: format!("procore_sync: syncing user {user_id} fails"),
                body: format!(
                    "procore_sync could not sync user {user_id}: {error}\n\
                     Next attempt: {next}.\n\n\
                     Nothing to do for a passing outage (Procore unavailable, rate limits): \
                     there are no more alerts for this user until it syncs again, and then one \
                     notice. If it persists, look at the user's state and latest errors:\n  \
                     SELECT * FROM procore_sync_user_status WHERE user_id = {};\n",
                    sql_literal(user_id)
                ),
                line: format!("user {user_id}: sync fails: {error}"),
            }
        }
        Alert::UserMustReconnect { user_id, reason } => Wording {
            subject: format!("procore_sync: user {user_id} must reconnect to Procore"),
            body: format!(
                "Procore no longer accepts the stored credentials of user {user_id}: {reason}\n\n\
                 procore_sync has stopped syncing this user until they are connected again. \
                 Have the user sign in to Procore again, then either exchange the new \
                 authorization code:\n  \
                 SELECT procore_connect({id}, '<authorization code>', '<redirect uri>');\n\
                 or store tokens obtained elsewhere:\n  \
                 SELECT procore_set_tokens({id}, '<access token>', '<refresh token>', <expires in seconds>);\n",
                id = sql_literal(user_id)
            ),
            line: format!(
                "user {user_id}: must reconnect to Procore (procore_connect or \
                 procore_set_tokens): {reason}"
            ),
        },
        Alert::UserRecovered { user_id } => Wording {
            subject: format!("procore_sync: user {user_id} syncs again"),
            body: format!(
                "The sync of user {user_id} succeeded again after failing. Nothing to do.\n"
            ),
            line: format!("user {user_id}: syncs again"),
        },
        Alert::JobFailing {
            job_name,
            failed_runs,
            last_message,
        } => Wording {
            subject: format!("procore_sync: job {job_name} failed {failed_runs} runs in a row"),
            body: format!(
                "The last {failed_runs} runs of the procore_sync job {job_name} failed. The \
                 last one said: {last_message}\n\n\
                 Check the job's command and its run history:\n  \
                 SELECT runid, status, return_message, start_time, end_time \
                 FROM procore_sync_job_run_details WHERE jobname = {} \
                 ORDER BY start_time DESC LIMIT 5;\n\
                 There is one more notice when a run succeeds again.\n",
                sql_literal(job_name)
            ),
            line: format!("job {job_name}: failed {failed_runs} runs in a row: {last_message}"),
        },
        Alert::JobRecovered { job_name } => Wording {
            subject: format!("procore_sync: job {job_name} runs again"),
            body: format!(
                "A run of the procore_sync job {job_name} succeeded again after failing. \
                 Nothing to do.\n"
            ),
            line: format!("job {job_name}: runs again"),
        },
        Alert::QueueStalled {
            oldest_due_since,
            open_items,
        } => {
            let minutes = (created_at - *oldest_due_since).num_minutes().max(0);
            Wording {
                subject: "procore_sync: the sync queue is not draining".to_owned(),
                body: format!(
                    "The oldest due item in procore_sync_queue has waited since {} ({minutes} \
                     minutes when this alert was raised); {open_items} items are open.\n\n\
                     Check that the procore_sync workers run and that the job \
                     procore-process-queue-every-minute is active:\n  \
                     SELECT backend_type, state FROM pg_stat_activity WHERE backend_type LIKE 'procore_sync%';\n  \
                     SELECT jobname, schedule, active FROM procore_sync_job WHERE jobname LIKE 'procore%';\n  \
                     SELECT status, count(*) FROM procore_sync_queue GROUP BY status;\n",
                    human_time(*oldest_due_since)
                ),
                line: format!(
                    "queue: not draining, oldest due item waiting {minutes} minutes, \
                     {open_items} items open"
                ),
            }
        }
        Alert::QueueRecovered => Wording {
            subject: "procore_sync: the sync queue drains again".to_owned(),
            body: "The sync queue drains again: no due item has waited long any more. Nothing \
                   to do.\n"
                .to_owned(),
            line: "queue: drains again".to_owned(),
        },
        Alert::DeliveriesDiscarded { company_id, count } => Wording {
            subject: format!(
                "procore_sync: Procore discarded {count} webhook deliveries for company \
                 {company_id}"
            ),
            body: format!(
                "Procore gave up delivering {count} webhook events of company {company_id} to \
                 this server. The periodic sync and the backstop's full pass catch the data \
                 up, but webhooks are not getting through: check that the HTTP listener (or \
                 the front calling procore_sync_webhook) is reachable from Procore, and look \
                 at the hook:\n  \
                 SELECT * FROM procore_sync_webhooks WHERE company_id = {company_id};\n"
            ),
            line: format!(
                "company {company_id}: Procore discarded {count} webhook deliveries"
            ),
        },
    }
}

/// What a chat webhook shows: the subject as the first line, then the body.
fn webhook_text(subject: &str, body: &str) -> String {
    format!("{subject}\n\n{}", body.trim_end())
}

/// Scrubs every string inside a JSON value.
fn scrubbed_json(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(scrub(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(scrubbed_json).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(name, value)| (name, scrubbed_json(value)))
                .collect(),
        ),
        other => other,
    }
}

/// A SQL string literal, for the statements an alert suggests running.
fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn human_time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "5f0c2d3e-0000-4000-8000-000000000001";

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default()
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        t0() + TimeDelta::seconds(seconds)
    }

    fn failing(id: i64, user: &str, seconds: i64) -> PendingAlert {
        PendingAlert {
            id,
            alert: Alert::UserFailing {
                user_id: user.into(),
                error: "Procore server error 502: Bad Gateway".into(),
                next_attempt: Some(at(600)),
            },
            created_at: at(seconds),
        }
    }

    fn ids(messages: &[Message]) -> Vec<Vec<i64>> {
        messages.iter().map(|m| m.alert_ids.clone()).collect()
    }

    #[test]
    fn a_shorter_window_sends_sooner_and_groups_within_itself() {
        let window = Duration::from_secs(2);
        let pending: Vec<PendingAlert> = (0..7)
            .map(|i| failing(i, &format!("user-{i}"), 0))
            .chain([failing(7, "late", 3)])
            .collect();
        assert!(compose_over(&pending, at(1), DEFAULT_DIGEST_ABOVE, window).is_empty());
        let messages = compose_over(&pending, at(2), DEFAULT_DIGEST_ABOVE, window);
        assert_eq!(ids(&messages), [(0..7).collect::<Vec<i64>>()]);
        assert_eq!(messages[0].json["kind"], "digest");
        let messages = compose_over(&pending, at(5), DEFAULT_DIGEST_ABOVE, window);
        assert_eq!(ids(&messages), [(0..7).collect::<Vec<i64>>(), vec![7]]);
    }

    #[test]
    fn one_alert_waits_for_its_minute_then_goes_alone() {
        let pending = [failing(1, USER, 0)];
        assert!(compose(&pending, at(59), DEFAULT_DIGEST_ABOVE).is_empty());
        let messages = compose(&pending, at(60), DEFAULT_DIGEST_ABOVE);
        assert_eq!(ids(&messages), [vec![1]]);
        let m = &messages[0];
        assert_eq!(
            m.subject,
            format!("procore_sync: syncing user {USER} fails")
        );
        assert!(
            m.text.contains("Procore server error 502: Bad Gateway"),
            "{}",
            m.text
        );
        assert!(
            m.text.contains("Next attempt: 2026-01-01 00:10:00 UTC."),
            "{}",
            m.text
        );
        assert!(
            m.text.contains(&format!(
                "procore_sync_user_status WHERE user_id = '{USER}'"
            )),
            "{}",
            m.text
        );
        assert_eq!(m.json["kind"], "user_failing");
        assert_eq!(m.json["user_id"], USER);
        assert_eq!(m.json["dedupe_key"], format!("user:{USER}"));
        assert_eq!(m.json["next_attempt"], "2026-01-01T00:10:00Z");
        assert_eq!(m.json["created_at"], "2026-01-01T00:00:00Z");
        let text = m.json["text"].as_str().unwrap_or_default();
        assert!(text.starts_with(&m.subject) && text.contains(&m.text.trim_end()[..40]));
    }

    #[test]
    fn up_to_the_threshold_each_alert_is_its_own_message_in_time_order() {
        // Given out of order; ids do not follow time.
        let pending: Vec<PendingAlert> = [(5, 40), (2, 10), (9, 0), (1, 59), (3, 20)]
            .into_iter()
            .map(|(id, s)| failing(id, &format!("user-{id}"), s))
            .collect();
        let messages = compose(&pending, at(120), 5);
        assert_eq!(
            ids(&messages),
            [vec![9], vec![2], vec![3], vec![5], vec![1]]
        );
        assert!(messages[0].subject.contains("user-9"));
    }

    #[test]
    fn more_than_the_threshold_within_a_minute_is_one_digest() {
        let mut pending: Vec<PendingAlert> = (1..=12)
            .map(|i| failing(i, &format!("user-{i:02}"), i * 4))
            .collect();
        pending.push(PendingAlert {
            id: 50,
            alert: Alert::UserMustReconnect {
                user_id: "user-50".into(),
                reason: "Procore refused the grant (invalid_grant): revoked".into(),
            },
            created_at: at(1),
        });
        // At 70 s the window [1 s, 61 s) is closed; user-12+ (at 48 s) is in it too.
        let messages = compose(&pending, at(70), DEFAULT_DIGEST_ABOVE);
        assert_eq!(messages.len(), 1, "{messages:#?}");
        let digest = &messages[0];
        assert_eq!(
            digest.alert_ids,
            [50, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        assert_eq!(
            digest.subject,
            "procore_sync: 13 alerts within a minute (1 user must reconnect, 12 users failing)"
        );
        let lines: Vec<&str> = digest
            .text
            .lines()
            .filter(|l| l.starts_with("- "))
            .collect();
        assert_eq!(lines.len(), DIGEST_LINES + 1, "{}", digest.text);
        assert!(lines[0].contains("user-50: must reconnect"), "{}", lines[0]);
        assert!(lines[1].contains("user-01: sync fails: Procore server error 502"));
        assert_eq!(lines[DIGEST_LINES], "- ... and 3 more");
        assert!(digest.text.contains("procore_sync_user_status"));
        assert!(
            digest.text.contains("Users who must reconnect"),
            "{}",
            digest.text
        );
        assert!(
            digest.text.contains("Many users failing"),
            "{}",
            digest.text
        );
        assert_eq!(digest.json["kind"], "digest");
        assert_eq!(digest.json["count"], 13);
        assert_eq!(digest.json["counts"]["user_failing"], 12);
        assert_eq!(
            digest.json["alerts"].as_array().map(Vec::len),
            Some(DIGEST_LINES)
        );
        assert_eq!(digest.json["alerts"][0]["user_id"], "user-50");
        assert!(digest.json["text"]
            .as_str()
            .is_some_and(|t| t.starts_with(&digest.subject)));
    }

    #[test]
    fn windows_follow_each_other_and_an_open_one_is_held_back() {
        // Six in the first minute (a digest at the default threshold), two in the next,
        // one in a minute still open at `now`.
        let mut pending: Vec<PendingAlert> =
            (1..=6).map(|i| failing(i, &format!("u{i}"), i)).collect();
        pending.push(failing(7, "u7", 70));
        pending.push(failing(8, "u8", 100));
        pending.push(failing(9, "u9", 140));
        let messages = compose(&pending, at(150), DEFAULT_DIGEST_ABOVE);
        assert_eq!(ids(&messages), [vec![1, 2, 3, 4, 5, 6], vec![7], vec![8]]);
        assert!(compose(&pending[6..], at(129), DEFAULT_DIGEST_ABOVE).is_empty());
    }

    #[test]
    fn the_reconnect_alert_says_how_to_reconnect() {
        let pending = [PendingAlert {
            id: 1,
            alert: Alert::UserMustReconnect {
                user_id: USER.into(),
                reason: "Procore refused the grant (invalid_grant): The refresh token is invalid"
                    .into(),
            },
            created_at: t0(),
        }];
        let m = &compose(&pending, at(60), DEFAULT_DIGEST_ABOVE)[0];
        assert_eq!(
            m.subject,
            format!("procore_sync: user {USER} must reconnect to Procore")
        );
        assert!(
            m.text.contains("The refresh token is invalid"),
            "{}",
            m.text
        );
        assert!(
            m.text.contains(&format!(
                "SELECT procore_connect('{USER}', '<authorization code>', '<redirect uri>');"
            )),
            "{}",
            m.text
        );
        assert!(
            m.text.contains(&format!(
                "SELECT procore_set_tokens('{USER}', '<access token>', '<refresh token>', <expires in seconds>);"
            )),
            "{}",
            m.text
        );
    }

    #[test]
    fn every_kind_names_its_subject_and_an_action() {
        let alerts = [
            (
                Alert::JobFailing {
                    job_name: "it's nightly".into(),
                    failed_runs: 3,
                    last_message: "ERROR: relation missing".into(),
                },
                "job it's nightly failed 3 runs in a row",
                "WHERE jobname = 'it''s nightly'",
            ),
            (
                Alert::JobRecovered {
                    job_name: "nightly".into(),
                },
                "job nightly runs again",
                "Nothing to do",
            ),
            (
                Alert::QueueStalled {
                    oldest_due_since: t0() - TimeDelta::minutes(45),
                    open_items: 17,
                },
                "the sync queue is not draining",
                "45 minutes when this alert was raised); 17 items are open",
            ),
            (
                Alert::QueueRecovered,
                "the sync queue drains again",
                "Nothing to do",
            ),
            (
                Alert::DeliveriesDiscarded {
                    company_id: 4242,
                    count: 3,
                },
                "Procore discarded 3 webhook deliveries for company 4242",
                "procore_sync_webhooks WHERE company_id = 4242",
            ),
            (
                Alert::UserRecovered {
                    user_id: USER.into(),
                },
                "syncs again",
                "Nothing to do",
            ),
        ];
        for (alert, subject, action) in alerts {
            let kind = alert.kind();
            let pending = [PendingAlert {
                id: 1,
                alert,
                created_at: t0(),
            }];
            let m = &compose(&pending, at(60), DEFAULT_DIGEST_ABOVE)[0];
            assert!(m.subject.contains(subject), "{kind}: {}", m.subject);
            assert!(m.text.contains(action), "{kind}: {}", m.text);
            assert_eq!(m.json["kind"], kind);
        }
    }

    #[test]
    fn no_secret_survives_into_a_message() {
        let leaky = [
            "Authorization: Bearer abc123xyz was refused",
            "token endpoint said refresh_token=rt-SECRET-1&client_secret=cs-SECRET-2",
            r#"{"access_token":"at-SECRET-3"}"#,
            "proxy https://bob:pw-SECRET-4@proxy.example.com:3128 refused",
            "password=pw-SECRET-5",
        ];
        let secrets = [
            "abc123xyz",
            "rt-SECRET-1",
            "cs-SECRET-2",
            "at-SECRET-3",
            "pw-SECRET-4",
            "pw-SECRET-5",
        ];
        // Straight into the alerts, bypassing the policy's own scrubbing.
        let mut pending = Vec::new();
        for (i, error) in leaky.iter().enumerate() {
            let i = i as i64;
            pending.push(PendingAlert {
                id: 3 * i,
                alert: Alert::UserFailing {
                    user_id: format!("u{i}"),
                    error: (*error).into(),
                    next_attempt: None,
                },
                created_at: at(100 * i),
            });
            pending.push(PendingAlert {
                id: 3 * i + 1,
                alert: Alert::UserMustReconnect {
                    user_id: format!("u{i}"),
                    reason: (*error).into(),
                },
                created_at: at(100 * i + 1),
            });
            pending.push(PendingAlert {
                id: 3 * i + 2,
                alert: Alert::JobFailing {
                    job_name: format!("j{i}"),
                    failed_runs: 3,
                    last_message: (*error).into(),
                },
                created_at: at(100 * i + 2),
            });
        }
        let singles = compose(&pending, at(10_000), 5);
        let digest = compose(&pending, at(10_000), 0);
        assert_eq!(singles.len(), 15);
        assert_eq!(digest.len(), 5);
        for m in singles.iter().chain(&digest) {
            let all = format!("{}\n{}\n{}", m.subject, m.text, m.json);
            for secret in secrets {
                assert!(!all.contains(secret), "{secret} in {all}");
            }
        }
        assert!(
            singles[0].text.contains("Bearer [redacted]"),
            "{}",
            singles[0].text
        );
    }
}
