//! Operator alerts end to end (README, "Alerts"): a real cluster with the worker preloaded,
//! the Procore stand-in, a real SMTP server (aiosmtpd) and the stand-in's capture endpoint
//! as a chat webhook. Jobs are off unless a test needs them, so alerts come only from what
//! the test does. Windows and retry delays are shortened by settings so that a test takes
//! seconds, not the defaults' minutes; the rules are the defaults'.

use std::time::Duration;

use anyhow::Result;
use procore_sync_e2e::smtp::MailServer;
use procore_sync_e2e::{wait_until, Env};
use serde_json::{json, Value};
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);
const OPERATOR: &str = "ops@example.com";

fn world(users: usize) -> Value {
    json!({
        "users": users,
        "companies_per_user": 1,
        "projects_per_company": 1,
        "records_per_resource": 2,
        "rate_limit_spike": 100000,
        "rate_limit_hour": 1000000,
        "client_secret": format!("cs-{}", Uuid::new_v4().simple()),
    })
}

struct A {
    env: Env,
    users: Vec<(Uuid, String)>,
}

impl A {
    /// The stand-in, a cluster with `settings` on top of short alert windows and retries,
    /// every job off, and `users` logins connected.
    fn start(users: usize, settings: &[(&str, &str)]) -> A {
        let mut all = vec![
            ("procore_sync.max_workers", "2"),
            ("procore_sync.alert_window", "1s"),
            ("procore_sync.alert_retry_delay", "200ms"),
            ("procore_sync.alert_email_from", "procore-sync@example.com"),
            ("procore_sync.alert_email_to", OPERATOR),
        ];
        all.extend_from_slice(settings);
        let env = Env::new(world(users), &all).expect("start the stand-in and the cluster");
        let mut a = A {
            env,
            users: Vec::new(),
        };
        let mut c = a.client();
        a.ok(
            c.batch_execute(
                "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job",
            )
            .map_err(Into::into),
            "switch the jobs off",
        );
        a.users = a.ok(a.env.connect_users(users), "connect users");
        a
    }

    fn client(&self) -> postgres::Client {
        self.ok(self.env.client(), "connect to the cluster")
    }

    fn user(&self, n: usize) -> Uuid {
        self.users[n - 1].0
    }

    fn redact(&self, text: &str) -> String {
        self.env.standin.redact(text, &[])
    }

    fn ok<R>(&self, r: Result<R>, what: &str) -> R {
        r.unwrap_or_else(|e| {
            panic!(
                "{what}: {}\n--- alerts ---\n{}\n--- server log (tail, secrets redacted) ---\n{}",
                self.redact(&format!("{e:#}")),
                self.alerts_dump(),
                self.redact(&self.env.cluster.log_tail(60))
            )
        })
    }

    fn wait(&self, what: &str, f: impl FnMut() -> Result<bool>) {
        let r = wait_until(TIMEOUT, POLL, what, f);
        self.ok(r, what)
    }

    fn alerts_dump(&self) -> String {
        let Ok(mut c) = self.env.client() else {
            return "(cluster unreachable)".into();
        };
        let alerts = procore_sync_e2e::query_table(
            &mut c,
            "SELECT id, kind, subject, created_at, composed_at FROM procore_sync_alert ORDER BY id",
        );
        let deliveries = procore_sync_e2e::query_table(
            &mut c,
            "SELECT id, alert_ids, channel, status, attempts, left(last_error, 120) AS last_error
             FROM procore_sync_alert_delivery ORDER BY id",
        );
        self.redact(&format!(
            "{}\n{}",
            alerts.unwrap_or_else(|e| format!("(alerts unreadable: {e})")),
            deliveries.unwrap_or_else(|e| format!("(deliveries unreadable: {e})"))
        ))
    }

    /// `procore_sync_user()` for login `user-n`: its status and error.
    fn sync(&self, n: usize) -> (String, Option<String>) {
        let mut c = self.client();
        let row = self.ok(
            c.query_one(
                "SELECT status, error_message FROM procore_sync_user($1)",
                &[&self.user(n)],
            )
            .map_err(Into::into),
            &format!("procore_sync_user for user-{n}"),
        );
        (row.get(0), row.get(1))
    }

    fn sync_expecting(&self, n: usize, status: &str) {
        let (got, error) = self.sync(n);
        assert_eq!(
            got,
            status,
            "user-{n}'s sync: {}",
            self.redact(&error.unwrap_or_default())
        );
    }

    /// Queues login `user-n` by hand and has the pool sync them; waits for the item to fail.
    fn fail_from_the_queue(&self, n: usize) {
        let mut c = self.client();
        let user = self.user(n);
        let id: i64 = self
            .ok(
                c.query_one(
                    "INSERT INTO procore_sync_queue (user_id) VALUES ($1) RETURNING id",
                    &[&user],
                )
                .map_err(Into::into),
                "queue the user by hand",
            )
            .get(0);
        self.ok(
            c.execute("SELECT process_procore_sync_queue()", &[])
                .map(drop)
                .map_err(Into::into),
            "process_procore_sync_queue()",
        );
        self.wait(&format!("queue item {id} to fail"), || {
            let mut c = self.env.client()?;
            let status: String = c
                .query_one(
                    "SELECT status FROM procore_sync_queue WHERE id = $1",
                    &[&id],
                )?
                .get(0);
            Ok(status == "failed")
        });
    }

    /// Waits until an alert of `kind` has been raised.
    fn wait_alert(&self, kind: &str) {
        self.wait(&format!("a {kind} alert"), || {
            Ok(self.alert_kinds().iter().any(|k| k == kind))
        });
    }

    /// Sets `procore_sync.alert_webhook_url` to the stand-in's capture endpoint `name`.
    fn post_alerts_to_capture(&self, name: &str) {
        let url = format!("{}/__capture/{name}", self.env.standin.base_url());
        self.ok(
            self.env
                .cluster
                .set_setting("procore_sync.alert_webhook_url", &url),
            "set procore_sync.alert_webhook_url",
        );
    }

    /// The kinds of the alerts raised so far, oldest first.
    fn alert_kinds(&self) -> Vec<String> {
        let mut c = self.client();
        let rows = self.ok(
            c.query("SELECT kind FROM procore_sync_alert ORDER BY id", &[])
                .map_err(Into::into),
            "read procore_sync_alert",
        );
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// One delivery's status, attempts and last error.
    fn deliveries(&self) -> Vec<(String, String, i32, Option<String>)> {
        let mut c = self.client();
        let rows = self.ok(
            c.query(
                "SELECT channel, status, attempts, last_error FROM procore_sync_alert_delivery
                 ORDER BY id",
                &[],
            )
            .map_err(Into::into),
            "read procore_sync_alert_delivery",
        );
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// `procore_sync_alerts_total{outcome}` from `procore_sync_metrics()`.
    fn alerts_total(&self, outcome: &str) -> f64 {
        let mut c = self.client();
        let row = self.ok(
            c.query_one(
                "SELECT coalesce(sum(value), 0) FROM procore_sync_metrics()
                 WHERE name = 'procore_sync_alerts_total' AND labels ->> 'outcome' = $1",
                &[&outcome],
            )
            .map_err(Into::into),
            "procore_sync_metrics()",
        );
        row.get(0)
    }

    /// Waits until `n` deliveries are recorded sent: the scheduler records an outcome on
    /// its pass after the sending thread reports it, a moment after the server got it.
    fn wait_sent(&self, n: f64) {
        self.wait(&format!("{n} deliveries recorded sent"), || {
            Ok(self.alerts_total("sent") >= n)
        });
        assert_eq!(self.alerts_total("sent"), n);
    }

    /// Every secret the stand-in issued or holds: none may reach an alert.
    fn assert_no_secret(&self, what: &str, text: &str) {
        let secrets = self.ok(self.env.standin.secrets(), "the stand-in's secrets");
        for secret in secrets.iter().filter(|s| s.len() >= 8) {
            assert!(
                !text.contains(secret.as_str()),
                "{what} contains a secret of the stand-in's: {}",
                self.redact(text)
            );
        }
    }

    /// Waits until `n` runs of the job have ended.
    fn wait_runs(&self, job: &str, n: i64) {
        self.wait(&format!("{n} runs of {job}"), || {
            let mut c = self.env.client()?;
            let done: i64 = c
                .query_one(
                    "SELECT count(*) FROM procore_sync_job_run_details
                     WHERE jobname = $1 AND status IN ('succeeded', 'failed')",
                    &[&job],
                )?
                .get(0);
            Ok(done >= n)
        });
    }
}

fn mail_server() -> MailServer {
    MailServer::start().expect("start the SMTP server (aiosmtpd)")
}

#[test]
fn a_revoked_user_gets_one_email_per_streak_and_one_when_it_ends() {
    let mail = mail_server();
    let a = A::start(2, &[("procore_sync.smtp_url", &mail.url())]);
    a.sync_expecting(1, "completed");
    a.ok(a.env.standin.revoke("user-2"), "revoke user-2's grant");
    a.sync_expecting(2, "failed");
    let user = a.user(2).to_string();

    a.wait("the email for the revoked user", || {
        Ok(!mail.messages()?.is_empty())
    });
    let first = &mail.messages().expect("read the mail")[0];
    let subject = first["subject"].as_str().unwrap_or_default();
    let body = first["body"].as_str().unwrap_or_default();
    assert!(
        subject.contains(&user) && subject.contains("must reconnect"),
        "the subject names the user and what happened: {subject}"
    );
    assert!(
        body.contains(&user)
            && body.contains("procore_connect")
            && body.contains("procore_set_tokens"),
        "the body names the user and how to reconnect:\n{body}"
    );
    assert_eq!(first["to"], OPERATOR);
    assert_eq!(first["auto_submitted"], "auto-generated");
    a.assert_no_secret("the email", first["data"].as_str().unwrap_or_default());

    // The same streak: more failed syncs, no more email. `procore_sync_user()` refuses a
    // user who must reconnect, and the periodic queueing skips them, so an operator's own
    // queue row is what can still fail; windows pass between the failures.
    for _ in 0..2 {
        a.fail_from_the_queue(2);
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(
        mail.messages().expect("read the mail").len(),
        1,
        "one email per failure streak"
    );
    assert_eq!(a.alert_kinds(), ["user_must_reconnect"]);

    // Reconnecting ends the streak: one recovery email.
    let mut c = a.client();
    a.ok(
        a.env.connect_user(&mut c, a.user(2), "user-2"),
        "reconnect user-2",
    );
    a.sync_expecting(2, "completed");
    a.wait("the recovery email", || Ok(mail.messages()?.len() >= 2));
    let messages = mail.messages().expect("read the mail");
    assert_eq!(messages.len(), 2, "{messages:#?}");
    let recovery = messages[1]["subject"].as_str().unwrap_or_default();
    assert!(
        recovery.contains(&user) && recovery.contains("syncs again"),
        "the recovery email names the user: {recovery}"
    );
    a.assert_no_secret(
        "the recovery email",
        messages[1]["data"].as_str().unwrap_or_default(),
    );
    assert_eq!(a.alert_kinds(), ["user_must_reconnect", "user_recovered"]);
    a.wait_sent(2.0);
    assert_eq!(a.alerts_total("failed"), 0.0);
}

#[test]
fn with_the_smtp_server_down_the_email_is_retried_then_recorded_failed_and_syncing_goes_on() {
    // A server that was there and is gone: its port refuses connections.
    let mut mail = mail_server();
    let url = mail.url();
    mail.stop();
    let a = A::start(2, &[("procore_sync.smtp_url", &url)]);
    a.ok(a.env.standin.revoke("user-1"), "revoke user-1's grant");
    a.sync_expecting(1, "failed");

    a.wait("a failed try of the email", || {
        Ok(a.deliveries()
            .iter()
            .any(|(_, status, attempts, _)| status == "pending" && *attempts >= 1))
    });
    // Meanwhile other users sync as usual.
    a.sync_expecting(2, "completed");
    a.sync_expecting(2, "completed");

    a.wait("the email recorded as failed", || {
        Ok(a.deliveries()
            .iter()
            .any(|(_, status, _, _)| status == "failed"))
    });
    let deliveries = a.deliveries();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    let (channel, _, attempts, error) = &deliveries[0];
    assert_eq!(channel, "email");
    assert_eq!(
        *attempts, 5,
        "tried five times: once, then after 0.2, 1, 3 and 12 s"
    );
    let error = error.clone().unwrap_or_default();
    assert!(
        error.contains("127.0.0.1"),
        "the last error says which server failed: {error}"
    );
    assert_eq!(a.alerts_total("failed"), 1.0);
    assert_eq!(a.alerts_total("sent"), 0.0);
    a.sync_expecting(2, "completed");
}

#[test]
fn a_failing_job_alerts_a_chat_webhook_once_after_three_runs() {
    let a = A::start(1, &[]);
    a.post_alerts_to_capture("chat");
    let mut c = a.client();
    let job = "nightly <export>";
    a.ok(
        c.execute(
            "SELECT procore_sync_schedule($1, '1 seconds', 'SELECT 1/0')",
            &[&job],
        )
        .map(drop)
        .map_err(Into::into),
        "schedule a failing job",
    );
    a.wait_runs(job, 5);
    a.ok(
        c.execute(
            "SELECT procore_sync_alter_job(jobid, command => 'SELECT 1')
             FROM procore_sync_job WHERE jobname = $1",
            &[&job],
        )
        .map(drop)
        .map_err(Into::into),
        "mend the job",
    );
    a.wait_alert("job_recovered");
    assert_eq!(a.alert_kinds(), ["job_failing", "job_recovered"]);

    a.wait("both posts at the capture endpoint", || {
        Ok(a.env.standin.captures("chat")?.len() >= 2)
    });
    let posts = a.ok(a.env.standin.captures("chat"), "read the captures");
    assert_eq!(posts.len(), 2, "{posts:#?}");
    let text = posts[0]["body"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(job) && text.contains("3 runs in a row") && text.contains("division by zero"),
        "the post's text names the job, the streak and the error: {text}"
    );
    assert_eq!(posts[0]["body"]["kind"], "job_failing");
    assert_eq!(posts[1]["body"]["kind"], "job_recovered");
    assert!(
        posts[0]["headers"]["content-type"]
            .as_str()
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        posts[0]["headers"]
    );
    a.wait_sent(2.0);
}

#[test]
fn a_burst_of_failures_goes_out_as_one_digest() {
    let mail = mail_server();
    let a = A::start(
        7,
        &[
            ("procore_sync.smtp_url", &mail.url()),
            ("procore_sync.alert_window", "20s"),
        ],
    );
    for n in 1..=7 {
        a.ok(a.env.standin.revoke(&format!("user-{n}")), "revoke");
    }
    for n in 1..=7 {
        a.sync_expecting(n, "failed");
    }
    a.wait("the digest", || Ok(!mail.messages()?.is_empty()));
    std::thread::sleep(Duration::from_secs(2));
    let messages = mail.messages().expect("read the mail");
    assert_eq!(messages.len(), 1, "one email for the burst: {messages:#?}");
    let body = messages[0]["body"].as_str().unwrap_or_default();
    for n in 1..=7 {
        assert!(
            body.contains(&a.user(n).to_string()),
            "the digest names user-{n}:\n{body}"
        );
    }
    assert_eq!(a.alert_kinds().len(), 7);
}

#[test]
fn a_queue_that_stops_draining_raises_one_alert_and_one_when_it_drains_again() {
    // No channel set: the alerts are recorded and go to the server log.
    let a = A::start(2, &[("procore_sync.alert_queue_stall", "2s")]);
    let mut c = a.client();
    let queued: i32 = a
        .ok(
            c.query_one("SELECT queue_procore_sync_for_all_users()", &[])
                .map_err(Into::into),
            "queue every user",
        )
        .get(0);
    assert_eq!(queued, 2);
    a.wait_alert("queue_stalled");
    a.ok(
        c.query_one("SELECT process_procore_sync_queue()", &[])
            .map(drop)
            .map_err(Into::into),
        "drain the queue",
    );
    a.wait_alert("queue_recovered");
    assert_eq!(a.alert_kinds(), ["queue_stalled", "queue_recovered"]);
    a.wait("both alerts composed", || {
        let mut c = a.env.client()?;
        let open: i64 = c
            .query_one(
                "SELECT count(*) FROM procore_sync_alert WHERE composed_at IS NULL",
                &[],
            )?
            .get(0);
        Ok(open == 0)
    });
    assert!(a.deliveries().is_empty(), "no channel, no delivery");
    assert!(
        a.env
            .cluster
            .log_tail(400)
            .contains("procore_sync alert (no alert channel is set): procore_sync: the sync queue is not draining"),
        "the server log has the alert"
    );
}

#[test]
fn a_failing_sync_alerts_with_the_error_and_the_next_attempt() {
    let a = A::start(1, &[]);
    a.post_alerts_to_capture("chat");
    a.ok(
        a.env.standin.add_faults(json!(
            {"kind": "status", "status": 503, "login": "user-1", "path": "/companies"}
        )),
        "make Procore answer 503",
    );
    let mut c = a.client();
    a.ok(
        c.batch_execute(
            "SELECT queue_procore_sync_for_all_users(); SELECT process_procore_sync_queue();",
        )
        .map_err(Into::into),
        "queue and process",
    );
    a.wait("the failed attempt", || {
        let mut c = a.env.client()?;
        let row = c.query_one(
            "SELECT attempts, status FROM procore_sync_queue WHERE user_id = $1",
            &[&a.user(1)],
        )?;
        Ok(row.get::<_, i32>(0) >= 1 && row.get::<_, String>(1) == "pending")
    });
    let next_attempt: chrono::DateTime<chrono::Utc> = a
        .ok(
            c.query_one(
                "SELECT next_attempt_at FROM procore_sync_queue WHERE user_id = $1",
                &[&a.user(1)],
            )
            .map_err(Into::into),
            "read the next attempt",
        )
        .get(0);

    a.wait("the post", || {
        Ok(!a.env.standin.captures("chat")?.is_empty())
    });
    let post = &a.ok(a.env.standin.captures("chat"), "read the captures")[0]["body"];
    assert_eq!(post["kind"], "user_failing");
    assert_eq!(post["user_id"], a.user(1).to_string());
    let text = post["text"].as_str().unwrap_or_default();
    assert!(text.contains("503"), "the post gives the error: {text}");
    let announced = post["next_attempt"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    assert_eq!(
        announced.map(|t| t.timestamp()),
        Some(next_attempt.timestamp()),
        "the post gives the queue item's next attempt: {post}"
    );
    assert!(
        text.contains(&next_attempt.format("%Y-%m-%d %H:%M").to_string()),
        "the text gives the next attempt too: {text}"
    );
    a.assert_no_secret("the post", &post.to_string());
}

/// Two roles may each have a job of the same name (`procore_sync_job` is unique on name and
/// role): each job has its own streak, so one role's successes do not hide the other's
/// failures.
#[test]
fn jobs_of_the_same_name_under_two_roles_keep_their_own_streaks() {
    let a = A::start(1, &[]);
    let mut su = a.client();
    for role in ["alice", "bob"] {
        // Role names are fixed identifiers of this test, not input.
        a.ok(
            su.batch_execute(&format!(
                "CREATE ROLE {role} LOGIN;
                 GRANT EXECUTE ON FUNCTION procore_sync_schedule(text, text, text) TO {role}"
            ))
            .map_err(Into::into),
            "create a role that may schedule",
        );
    }
    for (role, command) in [("alice", "SELECT 1/0"), ("bob", "SELECT 1")] {
        let mut c = a.ok(
            a.env.cluster.client_for("postgres", role),
            "connect as the role",
        );
        a.ok(
            c.execute(
                "SELECT procore_sync_schedule('nightly', '1 seconds', $1)",
                &[&command],
            )
            .map(drop)
            .map_err(Into::into),
            "schedule nightly",
        );
    }
    a.wait("three failed and three good runs of nightly", || {
        let mut c = a.env.client()?;
        let row = c.query_one(
            "SELECT count(*) FILTER (WHERE status = 'failed'),
                    count(*) FILTER (WHERE status = 'succeeded')
             FROM procore_sync_job_run_details WHERE jobname = 'nightly'",
            &[],
        )?;
        Ok(row.get::<_, i64>(0) >= 3 && row.get::<_, i64>(1) >= 3)
    });
    a.wait_alert("job_failing");
    let mut c = a.client();
    let failing: Vec<String> = a
        .ok(
            c.query(
                "SELECT details ->> 'job_name' FROM procore_sync_alert WHERE kind = 'job_failing'",
                &[],
            )
            .map_err(Into::into),
            "read the alerts",
        )
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(failing, ["nightly"], "alice's job alerted once");
    assert!(
        !a.alert_kinds().iter().any(|k| k == "job_recovered"),
        "bob's successes are not alice's recovery: {:?}",
        a.alert_kinds()
    );
}
