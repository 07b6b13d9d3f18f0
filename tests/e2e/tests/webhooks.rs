//! Procore webhooks end to end (README, "Webhooks: near-real-time"): a real cluster with the
//! worker preloaded and the built-in listener on a loopback port, the stand-in registering
//! the hook and delivering its events, SQL and HTTP from outside.
//!
//! Every test connects its users, runs one sync each (events are handled only for scopes a
//! connected user has listed), switches every job off so that no cycle runs unless the
//! test starts one, then enables the company's hook with the listener as destination.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use common::*;
use procore_sync_e2e::webhooks::{
    free_port, resource_name, v2_payload, ListenerClient, Reply, StandinWebhooks,
};
use procore_sync_e2e::{Env, Standin};
use serde_json::{json, Value};
use uuid::Uuid;

const LISTENER_TYPE: &str = "procore_sync http listener";
/// Events reach rows in about a second; this allows for a loaded 2-core machine.
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Short delivery timings at the stand-in: a failing hook is retried within a second.
fn short_timings() -> Value {
    json!({"backoff_start_ms": 100, "backoff_cap_ms": 1000, "timeout_ms": 5000})
}

/// A record as `procore_records` holds it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    name: Option<String>,
    deleted: bool,
    updated_at: Option<DateTime<Utc>>,
    data: Value,
}

struct W {
    env: Env,
    listener: ListenerClient,
    hooks: StandinWebhooks,
    users: Vec<(Uuid, String)>,
}

impl W {
    /// The stand-in with `world`, a cluster with the listener on a free port, `users` logins
    /// connected and synced once, and every job switched off.
    fn start(world: Value, settings: &[(&str, &str)], users: usize) -> W {
        let per_page = world["per_page_default"].as_i64().unwrap_or(100) as i32;
        let standin = Standin::start(world).expect("start the stand-in");
        let port = free_port().expect("a free port");
        let listen = format!("127.0.0.1:{port}");
        let mut all: Vec<(&str, &str)> = vec![
            ("procore_sync.max_workers", "2"),
            ("procore_sync.http_listen", &listen),
        ];
        all.extend_from_slice(settings);
        let env = Env::with_standin(standin, &all).expect("start the cluster");
        let hooks = StandinWebhooks::new(&env.standin);
        let mut w = W {
            env,
            listener: ListenerClient::new(port),
            hooks,
            users: Vec::new(),
        };
        let mut c = w.client();
        w.ok(
            c.batch_execute(
                "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job",
            )
            .map_err(Into::into),
            "switch the jobs off",
        );
        w.ok(
            c.execute(
                "UPDATE procore_sync_resource SET per_page = $1 WHERE paginated",
                &[&per_page],
            )
            .map_err(Into::into),
            "set the catalog's page size",
        );
        w.users = w.ok(w.env.connect_users(users), "connect users");
        for (user, login) in w.users.clone() {
            let row = w.ok(
                c.query_one(
                    "SELECT status, coalesce(error_message, '') FROM procore_sync_user($1)",
                    &[&user],
                )
                .map_err(Into::into),
                "the first sync",
            );
            let (status, message): (String, String) = (row.get(0), row.get(1));
            assert_eq!(status, "completed", "{login}'s first sync: {message}");
        }
        let r = w.listener.wait_up(Duration::from_secs(60));
        w.ok(r, "the listener answers");
        w
    }

    fn client(&self) -> postgres::Client {
        connect(&self.env.cluster)
    }

    fn user(&self, n: usize) -> Uuid {
        self.users[n - 1].0
    }

    /// Every secret the stand-in issued, hook secrets included, replaced.
    fn redact(&self, text: &str) -> String {
        self.env.standin.redact(text, &[])
    }

    fn fail(&self, what: &str, e: anyhow::Error) -> ! {
        panic!(
            "{what}: {}\n--- inbox ---\n{}\n--- server log (tail, secrets redacted) ---\n{}",
            self.redact(&format!("{e:#}")),
            self.inbox_dump(),
            self.redact(&self.env.cluster.log_tail(80))
        );
    }

    fn ok<R>(&self, r: Result<R>, what: &str) -> R {
        r.unwrap_or_else(|e| self.fail(what, e))
    }

    fn wait(&self, timeout: Duration, what: &str, f: impl FnMut() -> Result<bool>) {
        let r = procore_sync_e2e::wait_until(timeout, Duration::from_millis(50), what, f);
        self.ok(r, what)
    }

    fn inbox_dump(&self) -> String {
        let Ok(mut c) = self.env.cluster.client() else {
            return "(cluster unreachable)".into();
        };
        procore_sync_e2e::query_table(
            &mut c,
            "SELECT status, count(*), min(received_at), max(handled_at), max(attempts), \
             left(max(note), 120) AS a_note FROM procore_sync_webhook_inbox GROUP BY status",
        )
        .unwrap_or_else(|e| format!("(inbox unreadable: {e})"))
    }

    /// Registers the company's hook with the listener as destination, as user `n`, and
    /// switches the backstop job it schedules off (the tests run the check themselves).
    fn enable(&self, n: usize, company_id: i64) -> i64 {
        let mut c = self.client();
        let hook: i64 = self.ok(
            c.query_one(
                "SELECT procore_sync_webhooks_enable($1, $2, $3)",
                &[&self.user(n), &company_id, &self.listener.url],
            )
            .map(|r| r.get(0))
            .map_err(Into::into),
            "procore_sync_webhooks_enable",
        );
        self.ok(
            c.batch_execute(
                "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job",
            )
            .map_err(Into::into),
            "switch the backstop job off",
        );
        self.ok(
            self.hooks.config(short_timings()).map(drop),
            "delivery config",
        );
        hook
    }

    /// The hook's secret, as the extension owner reads it.
    fn secret(&self, company_id: i64) -> String {
        self.ok(
            self.client()
                .query_one(
                    "SELECT secret FROM procore_sync_webhook_hook WHERE company_id = $1",
                    &[&company_id],
                )
                .map(|r| r.get(0))
                .map_err(Into::into),
            "read the hook's secret",
        )
    }

    fn row(&self, resource: &str, company_id: i64, id: i64) -> Result<Option<Row>> {
        let mut c = self.env.client()?;
        let row = c.query_opt(
            "SELECT name, deleted_at IS NOT NULL, updated_at, data FROM procore_records \
             WHERE resource = $1 AND company_id = $2 AND procore_id = $3",
            &[&resource, &company_id, &id],
        )?;
        Ok(row.map(|r| Row {
            name: r.get(0),
            deleted: r.get(1),
            updated_at: r.get(2),
            data: r.get(3),
        }))
    }

    fn mutate(&self, change: Value) -> Value {
        self.ok(
            self.env.standin.mutate(change.clone()),
            &format!("mutate {change}"),
        )
    }

    /// Inbox rows by status.
    fn inbox(&self) -> BTreeMap<String, i64> {
        let rows = self.ok(
            self.client()
                .query(
                    "SELECT status, count(*) FROM procore_sync_webhook_inbox GROUP BY status",
                    &[],
                )
                .map_err(Into::into),
            "count the inbox",
        );
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    fn inbox_total(&self) -> i64 {
        self.inbox().values().sum()
    }

    fn wait_inbox_drained(&self, timeout: Duration) {
        self.wait(timeout, "the inbox to drain", || {
            let open: i64 = self
                .env
                .client()?
                .query_one(
                    "SELECT count(*) FROM procore_sync_webhook_inbox \
                     WHERE status IN ('pending', 'processing')",
                    &[],
                )?
                .get(0);
            Ok(open == 0)
        });
    }

    /// Queue items created or started after `since`: a sync that ran.
    fn queue_activity_since(&self, since: DateTime<Utc>) -> i64 {
        self.ok(
            self.client()
                .query_one(
                    "SELECT count(*) FROM procore_sync_queue \
                     WHERE created_at > $1 OR started_at > $1",
                    &[&since],
                )
                .map(|r| r.get(0))
                .map_err(Into::into),
            "look at the queue",
        )
    }

    /// The API requests the stand-in logged after sequence number `mark` (see `api_mark`),
    /// as `(method, path and query, status)`.
    fn api_requests_since(&self, mark: u64) -> Vec<(String, String, u16)> {
        self.ok(
            self.env.standin.requests_since(mark),
            "the stand-in's request log",
        )
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("/rest/")))
        .map(|r| {
            let path = r["path"].as_str().unwrap_or("").to_string();
            let query = r["query"].as_str().unwrap_or("");
            let target = if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            };
            (
                r["method"].as_str().unwrap_or("").to_string(),
                target,
                r["status"].as_u64().unwrap_or(0) as u16,
            )
        })
        .collect()
    }

    /// The stand-in's last request log sequence number: `api_requests_since` counts after it.
    fn api_mark(&self) -> u64 {
        self.ok(self.env.standin.requests_since(0), "the request log")
            .iter()
            .filter_map(|r| r["seq"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// The record's detail path as the extension requests it.
    fn detail_path(
        &self,
        resource: &str,
        company_id: i64,
        project_id: Option<i64>,
        id: i64,
    ) -> String {
        let template: String = self.ok(
            self.client()
                .query_one(
                    "SELECT path_template FROM procore_sync_resource WHERE name = $1",
                    &[&resource],
                )
                .map(|r| r.get(0))
                .map_err(Into::into),
            "the catalog's path",
        );
        procore_sync_core::webhooks::record_path(&template, Some(company_id), project_id, id)
            .unwrap_or_else(|e| panic!("record_path: {e}"))
    }

    fn post(&self, body: &Value, authorization: Option<&str>) -> Reply {
        self.ok(
            self.listener.post_json(body, authorization),
            "POST to the listener",
        )
    }
}

/// user-1's company, its two projects, and records of them (tests/standin/API.md ids).
const COMPANY: i64 = 1001;
const P1: i64 = 1_001_001;
const P2: i64 = 1_001_002;
fn rec(project: i64, i: i64) -> i64 {
    project * 100_000 + i
}
fn vendor(i: i64) -> i64 {
    COMPANY * 100_000 + i
}

fn edit(resource: &str, project: Option<i64>, id: i64) -> Value {
    json!({"action": "edit", "resource": resource, "company_id": COMPANY,
           "project_id": project, "id": id})
}

fn delete(resource: &str, project: Option<i64>, id: i64) -> Value {
    json!({"action": "delete", "resource": resource, "company_id": COMPANY,
           "project_id": project, "id": id})
}

fn add(resource: &str, project: i64) -> Value {
    json!({"action": "add", "resource": resource, "company_id": COMPANY, "project_id": project})
}

/// The stand-in's `updated_at` of every record that exists now, by `(resource, id)`.
fn standin_updated_at(standin: &Standin) -> BTreeMap<(String, i64), String> {
    standin
        .records_detailed()
        .expect("stand-in records")
        .iter()
        .map(|r| {
            (
                (
                    r["resource"].as_str().unwrap_or("").to_string(),
                    r["id"].as_i64().unwrap_or(0),
                ),
                r["updated_at"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("bad timestamp {s:?}: {e}"))
}

/// Waits until the row's name ends with `edits` times " (edited)" and it is live.
fn wait_edited(w: &W, resource: &str, id: i64, edits: usize) {
    let suffix = " (edited)".repeat(edits);
    w.wait(
        EVENT_TIMEOUT,
        &format!("{resource} {id} edited {edits}x in procore_records"),
        || {
            Ok(w.row(resource, COMPANY, id)?
                .is_some_and(|r| !r.deleted && r.name.is_some_and(|n| n.ends_with(&suffix))))
        },
    );
}

fn wait_deleted(w: &W, resource: &str, id: i64) {
    w.wait(
        EVENT_TIMEOUT,
        &format!("{resource} {id} marked deleted"),
        || Ok(w.row(resource, COMPANY, id)?.is_some_and(|r| r.deleted)),
    );
}

// ---------------------------------------------------------------------------------------
// 1. Edit, add and delete reach the rows, with no sync
// ---------------------------------------------------------------------------------------

#[test]
fn edits_adds_and_deletes_in_procore_reach_the_rows_without_a_sync() {
    let w = W::start(small_world(1, json!({})), &[], 1);
    let hook_id = w.enable(1, COMPANY);
    let mut c = w.client();
    let (view_hook, triggers): (i64, Vec<String>) = {
        let r = c
            .query_one(
                "SELECT hook_id, triggers FROM procore_sync_webhooks WHERE company_id = $1",
                &[&COMPANY],
            )
            .expect("procore_sync_webhooks");
        (r.get(0), r.get(1))
    };
    assert_eq!(view_hook, hook_id);
    assert!(
        triggers.contains(&"RFIs:update".to_string())
            && triggers.contains(&"RFIs:delete".to_string())
            && triggers.contains(&"Company Vendors:create".to_string()),
        "the hook's triggers: {triggers:?}"
    );
    let at_standin = w.hooks.hooks().expect("stand-in hooks");
    assert_eq!(
        at_standin.len(),
        1,
        "one hook at the stand-in: {at_standin:?}"
    );
    assert_eq!(at_standin[0]["id"].as_i64(), Some(hook_id));
    assert_eq!(
        at_standin[0]["destination_url"].as_str(),
        Some(w.listener.url.as_str())
    );
    assert_eq!(at_standin[0]["has_authorization"].as_bool(), Some(true));

    let since = now(&mut c);
    let mark = w.api_mark();
    let before = w
        .row("rfis", COMPANY, rec(P1, 5))
        .unwrap()
        .expect("rfi stored");
    assert!(!before.name.as_deref().unwrap_or("").contains("(edited)"));

    // Edit a project tool and a company-level record.
    let answer = w.mutate(edit("rfis", Some(P1), rec(P1, 5)));
    assert!(
        answer["event_id"].is_u64(),
        "the edit raised an event: {answer}"
    );
    wait_edited(&w, "rfis", rec(P1, 5), 1);
    w.mutate(edit("vendors", None, vendor(3)));
    wait_edited(&w, "vendors", vendor(3), 1);
    w.mutate(edit("submittals", Some(P2), rec(P2, 7)));
    wait_edited(&w, "submittals", rec(P2, 7), 1);

    // Add: a record the database has never seen.
    let added = w.mutate(add("rfis", P2));
    let new_id = added["id"].as_i64().expect("the added record's id");
    assert!(w.row("rfis", COMPANY, new_id).unwrap().is_none());
    w.wait(EVENT_TIMEOUT, "the added RFI stored", || {
        Ok(w.row("rfis", COMPANY, new_id)?.is_some_and(|r| !r.deleted))
    });
    let added_row = w.row("rfis", COMPANY, new_id).unwrap().unwrap();
    assert_eq!(added_row.data["id"].as_i64(), Some(new_id));
    let project: Option<i64> = c
        .query_one(
            "SELECT project_id FROM procore_records WHERE resource = 'rfis' AND company_id = $1 \
             AND procore_id = $2",
            &[&COMPANY, &new_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        project,
        Some(P2),
        "the added record is filed under its project"
    );

    // Delete.
    w.mutate(delete("rfis", Some(P1), rec(P1, 9)));
    wait_deleted(&w, "rfis", rec(P1, 9));

    // The rows are the stand-in's records as they are now.
    let updated = standin_updated_at(&w.env.standin);
    for (resource, id) in [
        ("rfis", rec(P1, 5)),
        ("vendors", vendor(3)),
        ("submittals", rec(P2, 7)),
        ("rfis", new_id),
    ] {
        let row = w.row(resource, COMPANY, id).unwrap().unwrap();
        let expected = &updated[&(resource.to_string(), id)];
        assert_eq!(
            row.updated_at,
            Some(parse_ts(expected)),
            "{resource} {id}: the stored updated_at is the stand-in's"
        );
        assert_eq!(row.data["updated_at"].as_str(), Some(expected.as_str()));
    }
    assert!(!updated.contains_key(&("rfis".to_string(), rec(P1, 9))));

    // No sync ran: no queue item, and the extension's only API requests were detail reads.
    w.wait_inbox_drained(EVENT_TIMEOUT);
    assert_eq!(
        w.queue_activity_since(since),
        0,
        "no queue item was created or ran"
    );
    let requests = w.api_requests_since(mark);
    let details: BTreeSet<String> = [
        w.detail_path("rfis", COMPANY, Some(P1), rec(P1, 5)),
        w.detail_path("vendors", COMPANY, None, vendor(3)),
        w.detail_path("submittals", COMPANY, Some(P2), rec(P2, 7)),
        w.detail_path("rfis", COMPANY, Some(P2), new_id),
    ]
    .into();
    for (method, target, status) in &requests {
        assert!(
            method == "GET" && details.contains(target) && *status == 200,
            "every API request since the hook was enabled is one record's detail read, got \
             {method} {target} -> {status}; all: {requests:?}"
        );
    }
    assert_eq!(
        requests.len(),
        4,
        "one detail read per created or updated record, none for the delete: {requests:?}"
    );
    assert_eq!(
        w.inbox(),
        BTreeMap::from([("done".to_string(), 5)]),
        "five events recorded and done"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Duplicates and reordering; a burst costs one fetch
// ---------------------------------------------------------------------------------------

/// `(data, deleted)` of every row, by key.
fn snapshot(c: &mut postgres::Client) -> BTreeMap<(String, i64, i64), (Value, bool)> {
    c.query(
        "SELECT resource, company_id, procore_id, data, deleted_at IS NOT NULL FROM procore_records",
        &[],
    )
    .expect("read procore_records")
    .iter()
    .map(|r| ((r.get(0), r.get(1), r.get(2)), (r.get(3), r.get(4))))
    .collect()
}

#[test]
fn duplicated_and_reordered_deliveries_leave_the_clean_state_and_a_burst_costs_one_fetch() {
    let w = W::start(small_world(1, json!({})), &[], 1);
    w.enable(1, COMPANY);
    let mut c = w.client();
    let since = now(&mut c);
    let first_event = w.hooks.last_event_id().unwrap();
    let first_delivery = w.hooks.last_delivery_id().unwrap();
    w.hooks
        .config(json!({"duplicate_rate": 1.0, "reorder_rate": 1.0,
                        "reorder_window_ms": 400, "seed": 7}))
        .expect("delivery config");

    // Several records, several changes each, back to back.
    w.mutate(edit("rfis", Some(P1), rec(P1, 2)));
    w.mutate(edit("rfis", Some(P1), rec(P1, 2)));
    let added = w.mutate(add("submittals", P1))["id"].as_i64().unwrap();
    w.mutate(edit("submittals", Some(P1), added));
    w.mutate(delete("punch_items", Some(P2), rec(P2, 4)));
    w.mutate(edit("change_events", Some(P2), rec(P2, 6)));
    w.mutate(delete("change_events", Some(P2), rec(P2, 6)));
    w.mutate(edit("vendors", None, vendor(8)));
    w.mutate(edit("observations", Some(P1), rec(P1, 11)));
    w.mutate(edit("observations", Some(P1), rec(P1, 11)));
    w.mutate(edit("observations", Some(P1), rec(P1, 11)));

    w.wait(EVENT_TIMEOUT, "the stand-in to deliver everything", || {
        w.hooks.idle()
    });
    w.wait_inbox_drained(EVENT_TIMEOUT);
    let events = w.hooks.events(first_event).unwrap();
    assert_eq!(events.len(), 11, "one event per change: {events:?}");
    let deliveries = w.hooks.deliveries(first_delivery).unwrap();
    let duplicates = deliveries
        .iter()
        .filter(|d| d["duplicate"].as_bool() == Some(true))
        .count();
    assert!(
        duplicates >= 11,
        "every event was delivered twice ({duplicates} duplicate deliveries)"
    );
    assert!(
        deliveries
            .iter()
            .all(|d| d["outcome"].as_str() == Some("ok")),
        "every delivery was taken: {:?}",
        deliveries
            .iter()
            .map(|d| (
                d["event_id"].clone(),
                d["outcome"].clone(),
                d["response_status"].clone()
            ))
            .collect::<Vec<_>>()
    );
    let order: Vec<u64> = deliveries
        .iter()
        .filter_map(|d| d["event_id"].as_u64())
        .collect();
    assert!(
        order.windows(2).any(|p| p[0] > p[1]),
        "some deliveries came out of order: {order:?}"
    );

    // Each event once in the inbox, under its ulid.
    let ulids: BTreeSet<String> = events
        .iter()
        .map(|e| e["ulid"].as_str().unwrap().to_string())
        .collect();
    let inbox: Vec<(String, i64)> = c
        .query(
            "SELECT event_id, count(*) OVER (PARTITION BY event_id) FROM procore_sync_webhook_inbox",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        inbox
            .iter()
            .map(|(e, _)| e.clone())
            .collect::<BTreeSet<_>>(),
        ulids,
        "the inbox holds exactly the events raised"
    );
    assert_eq!(inbox.len(), 11, "each event once");
    assert_eq!(w.inbox(), BTreeMap::from([("done".to_string(), 11)]));

    // The final state is the stand-in's: live rows are exactly its records, and a sync
    // (the clean run: it reads what changed since the first one) changes nothing.
    let stored = procore_sync_e2e::stored_record_keys(&mut c).unwrap();
    let expected: BTreeSet<_> = w.env.standin.records().unwrap().into_iter().collect();
    assert_eq!(
        stored.symmetric_difference(&expected).collect::<Vec<_>>(),
        Vec::<&procore_sync_e2e::RecordKey>::new(),
        "the live rows are the stand-in's records"
    );
    let after_events = snapshot(&mut c);
    for (resource, id, edits) in [
        ("rfis", rec(P1, 2), 2),
        ("submittals", added, 1),
        ("vendors", vendor(8), 1),
        ("observations", rec(P1, 11), 3),
    ] {
        let (data, deleted) = &after_events[&(resource.to_string(), COMPANY, id)];
        assert!(!deleted, "{resource} {id} is live");
        let name = data["name"]
            .as_str()
            .or(data["title"].as_str())
            .or(data["subject"].as_str())
            .unwrap_or("");
        assert!(
            name.ends_with(&" (edited)".repeat(edits))
                && !name.ends_with(&" (edited)".repeat(edits + 1)),
            "{resource} {id} carries exactly its {edits} edit(s): {name:?}"
        );
    }
    for (resource, id) in [("punch_items", rec(P2, 4)), ("change_events", rec(P2, 6))] {
        assert!(
            after_events[&(resource.to_string(), COMPANY, id)].1,
            "{resource} {id} is marked deleted"
        );
    }
    assert_eq!(
        w.queue_activity_since(since),
        0,
        "no sync ran while the events were handled"
    );
    let row = c
        .query_one("SELECT status FROM procore_sync_user($1)", &[&w.user(1)])
        .expect("the reference sync");
    assert_eq!(row.get::<_, String>(0), "completed");
    let after_sync = snapshot(&mut c);
    let changed: Vec<_> = after_sync
        .iter()
        .filter(|(k, v)| after_events.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        changed.is_empty(),
        "a sync after the events changed {} row(s), e.g. {:?}",
        changed.len(),
        &changed[..changed.len().min(5)]
    );
    assert_eq!(
        after_sync.len(),
        after_events.len(),
        "the sync added no row"
    );

    // A burst of edits to one record, every delivery duplicated but in order: one fetch.
    w.hooks
        .config(json!({"duplicate_rate": 1.0, "reorder_rate": 0.0}))
        .unwrap();
    let burst_record = rec(P2, 13);
    let path = w.detail_path("rfis", COMPANY, Some(P2), burst_record);
    let mark = w.api_mark();
    let burst_first_event = w.hooks.last_event_id().unwrap();
    for _ in 0..6 {
        w.mutate(edit("rfis", Some(P2), burst_record));
    }
    wait_edited(&w, "rfis", burst_record, 6);
    w.wait(EVENT_TIMEOUT, "the burst delivered", || w.hooks.idle());
    w.wait_inbox_drained(EVENT_TIMEOUT);
    assert_eq!(w.hooks.events(burst_first_event).unwrap().len(), 6);
    let fetches: Vec<_> = w
        .api_requests_since(mark)
        .into_iter()
        .filter(|(m, t, _)| m == "GET" && *t == path)
        .collect();
    assert_eq!(
        fetches.len(),
        1,
        "six edits (twelve deliveries) within the settle time cost one detail read of {path}: \
         {fetches:?}"
    );
}

/// A v2.0 delivery body for an event the stand-in raised (`/__admin/webhooks/events`).
fn payload_of(event: &Value) -> Value {
    json!({
        "id": event["id"], "ulid": event["ulid"], "timestamp": event["timestamp"],
        "metadata": {"source_user_id": 1, "source_project_id": event["project_id"],
                     "source_operation_id": null, "source_company_id": event["company_id"],
                     "source_application_id": event["source_application_id"]},
        "user_id": 1, "company_id": event["company_id"], "project_id": event["project_id"],
        "api_version": "v2.0", "event_type": event["event_type"],
        "resource_name": event["resource_name"], "resource_id": event["resource_id"],
    })
}

fn inbox_status(w: &W, event_id: &str) -> Option<String> {
    w.client()
        .query_opt(
            "SELECT status FROM procore_sync_webhook_inbox WHERE event_id = $1",
            &[&event_id],
        )
        .expect("read the inbox")
        .map(|r| r.get(0))
}

/// Procore does not order deliveries: a record deleted then restored can have the
/// restore's event handled first. The delete's event, older than what is stored, must not
/// mark the live record deleted.
#[test]
fn a_late_delete_older_than_a_handled_restore_leaves_the_record_live() {
    let w = W::start(small_world(1, json!({})), &[], 1);
    w.enable(1, COMPANY);
    let secret = w.secret(COMPANY);
    let id = rec(P1, 4);
    // The stand-in holds its deliveries; the test delivers the two events itself, in
    // reverse order.
    w.hooks.config(json!({"paused": true})).unwrap();
    w.mutate(delete("rfis", Some(P1), id));
    w.mutate(
        json!({"action": "restore", "resource": "rfis", "company_id": COMPANY,
                    "project_id": P1, "id": id}),
    );
    let events = w.hooks.events(0).unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    let (deleted, restored) = (&events[0], &events[1]);
    assert_eq!(deleted["event_type"], "delete");
    assert_eq!(restored["event_type"], "update");
    assert!(
        parse_ts(deleted["timestamp"].as_str().unwrap())
            < parse_ts(restored["timestamp"].as_str().unwrap())
    );

    let reply = w.post(&payload_of(restored), Some(&secret));
    assert_eq!(reply.status, 200, "{reply:?}");
    let restored_id = restored["ulid"].as_str().unwrap();
    w.wait(EVENT_TIMEOUT, "the restore's event handled", || {
        Ok(inbox_status(&w, restored_id).as_deref() == Some("done"))
    });
    let row = w.row("rfis", COMPANY, id).unwrap().unwrap();
    assert!(!row.deleted, "the restored record is live");

    let reply = w.post(&payload_of(deleted), Some(&secret));
    assert_eq!(reply.status, 200, "{reply:?}");
    let deleted_id = deleted["ulid"].as_str().unwrap();
    w.wait(EVENT_TIMEOUT, "the late delete's event handled", || {
        Ok(inbox_status(&w, deleted_id).is_some_and(|s| s != "pending" && s != "processing"))
    });
    let row = w.row("rfis", COMPANY, id).unwrap().unwrap();
    assert!(
        !row.deleted,
        "a delete event older than the stored record (event at {}, record updated_at {:?}) \
         marked the live record deleted",
        deleted["timestamp"], row.updated_at
    );
}

/// The other order, within one second: an RFI edited, the edit handled (its row now has
/// the stand-in's `updated_at`, which is the edit's time rounded up to the next whole
/// second), then the RFI deleted a moment later. The delete's event is newer than the
/// edit, but older than the stored `updated_at`: the record must still end deleted.
/// (`webhook_settle_time` 0, so the edit is handled within the same second.)
#[test]
fn a_delete_in_the_same_second_as_a_handled_edit_marks_the_record_deleted() {
    let w = W::start(
        small_world(1, json!({})),
        &[("procore_sync.webhook_settle_time", "0")],
        1,
    );
    w.enable(1, COMPANY);
    let mut checked = None;
    for i in 14..20 {
        let id = rec(P2, i);
        // Start just after a whole second, so the edit, its handling and the delete can
        // all fall within it.
        let into_second = Utc::now().timestamp_subsec_millis() as u64;
        std::thread::sleep(Duration::from_millis((1050 - into_second) % 1000));
        let edited = w.mutate(edit("rfis", Some(P2), id));
        wait_edited(&w, "rfis", id, 1);
        let deleted = w.mutate(delete("rfis", Some(P2), id));
        let events = w.hooks.events(0).unwrap();
        let delete_event = events
            .iter()
            .find(|e| Some(e["id"].as_u64().unwrap()) == deleted["event_id"].as_u64())
            .expect("the delete's event")
            .clone();
        let stored = w
            .row("rfis", COMPANY, id)
            .unwrap()
            .unwrap()
            .updated_at
            .unwrap();
        let delete_at = parse_ts(delete_event["timestamp"].as_str().unwrap());
        let edit_at = parse_ts(edited["updated_at"].as_str().unwrap());
        if delete_at < stored {
            checked = Some((id, delete_at, stored, edit_at));
            break;
        }
        // The second ended before the delete: the case did not arise; try another RFI.
        wait_deleted(&w, "rfis", id);
    }
    let (id, delete_at, stored, _) = checked.expect("a delete within the edit's second");
    w.wait_inbox_drained(EVENT_TIMEOUT);
    let row = w.row("rfis", COMPANY, id).unwrap().unwrap();
    assert!(
        !w.env
            .standin
            .records()
            .unwrap()
            .iter()
            .any(|k| k.resource == "rfis" && k.id == id),
        "the RFI is deleted at the stand-in"
    );
    assert!(
        row.deleted,
        "RFI {id} was deleted in Procore at {delete_at} after its edit was handled, but the \
         delete event was not applied because the stored updated_at ({stored}, the stand-in's \
         rounded-up edit time) is later than the event"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Authorization
// ---------------------------------------------------------------------------------------

#[test]
fn a_wrong_or_missing_authorization_gets_401_and_records_nothing() {
    let w = W::start(small_world(1, json!({})), &[], 1);
    w.enable(1, COMPANY);
    let secret = w.secret(COMPANY);
    assert!(secret.len() >= 32, "a long generated secret");
    let body = v2_payload(
        "01AUTHTEST0000000000000001",
        "update",
        "RFIs",
        COMPANY,
        Some(P1),
        rec(P1, 3),
    );
    let mut wrong = secret.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    for (what, auth) in [
        ("no Authorization", None),
        ("an empty one", Some(String::new())),
        ("a wrong one", Some("not-the-secret".to_string())),
        ("the secret with its last character changed", Some(wrong)),
        (
            "the secret as a Bearer token",
            Some(format!("Bearer {secret}")),
        ),
        // Spaces around a header value are not part of it (RFC 9110 5.5), so the case of
        // the hex digits is the variant that must not pass.
        ("the secret in upper case", Some(secret.to_uppercase())),
        ("the secret twice", Some(format!("{secret}{secret}"))),
    ] {
        let reply = w.post(&body, auth.as_deref());
        assert_eq!(reply.status, 401, "{what}: {reply:?}");
        assert!(
            reply.content_type.starts_with("application/json") && !reply.error().is_empty(),
            "{what}: a JSON error: {reply:?}"
        );
        assert!(
            !reply.body.contains(&secret),
            "{what}: the answer holds no secret"
        );
    }
    assert_eq!(w.inbox_total(), 0, "nothing was recorded");
    let count: i64 = w
        .client()
        .query_one("SELECT events_received FROM procore_sync_webhooks", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 0);

    // The right secret is taken, once; elsewhere the listener answers 404/405.
    let reply = w.post(&body, Some(&secret));
    assert_eq!(
        (reply.status, reply.json()["status"].as_str()),
        (200, Some("recorded")),
        "{reply:?}"
    );
    let reply = w.post(&body, Some(&secret));
    assert_eq!(
        (reply.status, reply.json()["status"].as_str()),
        (200, Some("duplicate")),
        "{reply:?}"
    );
    assert_eq!(w.inbox_total(), 1);
    let other = w
        .listener
        .url
        .replace("/procore/webhooks", "/procore/other");
    let reply = w
        .listener
        .request("POST", &other, b"{}", Some(&secret))
        .unwrap();
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = w
        .listener
        .request("GET", &w.listener.url, b"", Some(&secret))
        .unwrap();
    assert_eq!(reply.status, 405, "{reply:?}");
}

// ---------------------------------------------------------------------------------------
// 4. Bad bodies
// ---------------------------------------------------------------------------------------

#[test]
fn bad_bodies_get_a_clear_answer_and_write_nothing() {
    // http_max_body is in kilobytes.
    let w = W::start(
        small_world(1, json!({})),
        &[("procore_sync.http_max_body", "8")],
        1,
    );
    w.enable(1, COMPANY);
    let secret = w.secret(COMPANY);
    let good = v2_payload(
        "01BADBODY00000000000000001",
        "update",
        "RFIs",
        COMPANY,
        Some(P1),
        rec(P1, 3),
    );

    let reply = w
        .listener
        .post(br#"{"id": 1, "ulid": "#, Some(&secret))
        .unwrap();
    assert_eq!(reply.status, 400, "malformed JSON: {reply:?}");
    assert!(
        reply.content_type.starts_with("application/json"),
        "{reply:?}"
    );
    assert!(
        reply.error().contains("not JSON"),
        "names the problem: {reply:?}"
    );

    let mut unknown_type = good.clone();
    unknown_type["event_type"] = json!("archive");
    let reply = w.post(&unknown_type, Some(&secret));
    assert_eq!(reply.status, 400, "unknown event type: {reply:?}");
    assert!(
        reply.error().contains("event_type") && reply.error().contains("archive"),
        "names the field and the value: {reply:?}"
    );

    let mut unknown_resource = good.clone();
    unknown_resource["resource_name"] = json!("Timesheets");
    let reply = w.post(&unknown_resource, Some(&secret));
    assert_eq!(reply.status, 400, "unknown resource: {reply:?}");
    assert!(
        reply.error().contains("resource") && reply.error().contains("Timesheets"),
        "names the resource: {reply:?}"
    );

    let mut not_an_event = good.clone();
    not_an_event.as_object_mut().unwrap().remove("resource_id");
    let reply = w.post(&not_an_event, Some(&secret));
    assert_eq!(reply.status, 400, "no resource_id: {reply:?}");
    assert!(reply.error().contains("resource_id"), "{reply:?}");

    let mut big = good.clone();
    big["padding"] = json!("x".repeat(9 * 1024));
    let reply = w.post(&big, Some(&secret));
    assert_eq!(reply.status, 413, "a body over http_max_body: {reply:?}");
    assert!(
        reply.body.contains("too large"),
        "names the problem: {reply:?}"
    );
    if !reply.content_type.starts_with("application/json") {
        eprintln!(
            "note: the 413 answer is {:?} ({:?}), not a JSON error like the listener's others",
            reply.content_type,
            reply.body.trim()
        );
    }
    // Just under the limit is read.
    let mut fits = good.clone();
    fits["padding"] = json!("x".repeat(7 * 1024));
    fits["ulid"] = json!("01BADBODY00000000000000002");

    assert_eq!(w.inbox_total(), 0, "none of the bad bodies was recorded");
    let reply = w.post(&fits, Some(&secret));
    assert_eq!(reply.status, 200, "a body under the limit: {reply:?}");
    assert_eq!(w.inbox_total(), 1);
}

// ---------------------------------------------------------------------------------------
// 5. A flood
// ---------------------------------------------------------------------------------------

#[test]
fn a_flood_of_ten_thousand_events_is_recorded_once_each_and_drained() {
    const EVENTS: usize = 10_000;
    const THREADS: usize = 8;
    let w = W::start(small_world(1, json!({})), &[], 1);
    w.enable(1, COMPANY);
    let secret = w.secret(COMPANY);
    // Existing records of every resource a hook announces.
    let records: Vec<Value> = w
        .env
        .standin
        .records_detailed()
        .unwrap()
        .into_iter()
        .filter(|r| {
            r["resource"]
                .as_str()
                .and_then(resource_name)
                .is_some_and(|n| n != "Project Users")
        })
        .collect();
    assert!(records.len() > 200, "{} records", records.len());
    let next = AtomicUsize::new(0);
    let statuses: Mutex<BTreeMap<u16, usize>> = Mutex::new(BTreeMap::new());
    let receipts: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mark = w.api_mark();
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let client = w.listener.clone();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= EVENTS {
                        return;
                    }
                    let r = &records[i % records.len()];
                    let body = v2_payload(
                        &format!("01FLOOD{i:019}"),
                        "update",
                        resource_name(r["resource"].as_str().unwrap()).unwrap(),
                        r["company_id"].as_i64().unwrap(),
                        r["project_id"].as_i64(),
                        r["id"].as_i64().unwrap(),
                    );
                    // Procore retries what is not answered 2xx; so does this.
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        match client.post_json(&body, Some(&secret)) {
                            Ok(reply) => {
                                *statuses.lock().unwrap().entry(reply.status).or_default() += 1;
                                if reply.status == 200 {
                                    let receipt =
                                        reply.json()["status"].as_str().unwrap_or("?").to_string();
                                    *receipts.lock().unwrap().entry(receipt).or_default() += 1;
                                    break;
                                }
                                if reply.status != 503 {
                                    errors.lock().unwrap().push(format!("{reply:?}"));
                                    break;
                                }
                            }
                            Err(e) => {
                                *statuses.lock().unwrap().entry(0).or_default() += 1;
                                if tries > 50 {
                                    errors.lock().unwrap().push(format!("{e:#}"));
                                    break;
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(20 * tries.min(10)));
                    }
                }
            });
        }
    });
    let posted_in = started.elapsed();
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} deliveries failed, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let statuses = statuses.into_inner().unwrap();
    let receipts = receipts.into_inner().unwrap();
    eprintln!(
        "flood: {EVENTS} events posted by {THREADS} threads in {:.1}s ({:.0}/s); answers {statuses:?}; receipts {receipts:?}",
        posted_in.as_secs_f64(),
        EVENTS as f64 / posted_in.as_secs_f64()
    );
    // A retry after a late 503 may find its event already recorded: `duplicate`.
    assert_eq!(
        receipts.get("recorded").copied().unwrap_or(0)
            + receipts.get("duplicate").copied().unwrap_or(0),
        EVENTS,
        "every event answered recorded (or duplicate on a retry): {receipts:?}"
    );
    assert_eq!(
        w.inbox_total(),
        EVENTS as i64,
        "every event once in the inbox"
    );
    let drain = Instant::now();
    w.wait_inbox_drained(Duration::from_secs(900));
    let inbox = w.inbox();
    eprintln!(
        "flood: inbox drained {:.1}s after the last delivery: {inbox:?}; {} detail reads for \
         {EVENTS} events about {} records",
        drain.elapsed().as_secs_f64(),
        w.api_requests_since(mark).len(),
        records.len()
    );
    assert_eq!(
        inbox,
        BTreeMap::from([("done".to_string(), EVENTS as i64)]),
        "every event done"
    );
}

// ---------------------------------------------------------------------------------------
// 6. The listener killed
// ---------------------------------------------------------------------------------------

fn listener_pid(c: &mut postgres::Client) -> Option<i32> {
    let pids = backends(c, LISTENER_TYPE);
    assert!(pids.len() <= 1, "one listener at most: {pids:?}");
    pids.first().map(|p| p.0)
}

/// The stand-in's attempts at delivering event `event_id` (its numeric id), in order.
fn attempts_of(w: &W, event_id: u64) -> Vec<Value> {
    w.hooks
        .deliveries(0)
        .unwrap()
        .into_iter()
        .filter(|d| d["event_id"].as_u64() == Some(event_id))
        .collect()
}

/// An administrator's `pg_terminate_backend` of the listener: the postmaster starts it
/// again (after its 5 s restart time), and the delivery that failed meanwhile is retried
/// by the stand-in and lands.
#[test]
fn a_terminated_listener_comes_back_and_the_retried_delivery_lands() {
    let w = W::start(small_world(1, json!({})), &[], 1);
    w.enable(1, COMPANY);
    let mut c = w.client();
    let pid = listener_pid(&mut c).expect("the listener runs");
    let terminated: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(terminated);
    w.wait(Duration::from_secs(30), "the listener to exit", || {
        Ok(listener_pid(&mut w.client()) != Some(pid))
    });
    let event = w.mutate(edit("rfis", Some(P1), rec(P1, 8)))["event_id"]
        .as_u64()
        .expect("an event");
    w.wait(
        Duration::from_secs(90),
        "a new listener (the postmaster restarts it)",
        || Ok(listener_pid(&mut w.client()).is_some_and(|p| p != pid)),
    );
    wait_edited(&w, "rfis", rec(P1, 8), 1);
    let attempts = attempts_of(&w, event);
    assert!(
        attempts.len() >= 2
            && attempts[..attempts.len() - 1]
                .iter()
                .all(|a| a["outcome"] == "retried")
            && attempts.last().unwrap()["outcome"] == "ok",
        "failed while the listener was down, then delivered: {attempts:?}"
    );
    assert_eq!(w.inbox(), BTreeMap::from([("done".to_string(), 1)]));
}

/// The listener SIGKILLed while it answers a delivery (held on a lock of the inbox, so
/// the delivery is certainly in flight). SIGKILL rather than pg_terminate_backend: the
/// point is a process that dies mid-transaction without answering, and a SIGTERM only sets
/// a flag that a worker waiting on a lock does not look at. The postmaster survives (the
/// same process), resets every backend as after any backend crash, starts the listener
/// again, and the stand-in's retry delivers the event.
#[test]
fn a_listener_killed_mid_delivery_loses_nothing() {
    let w = W::start(small_world(1, json!({})), &[], 1);
    w.enable(1, COMPANY);
    let mut c = w.client();
    let postmaster = w.env.cluster.postmaster_pid().unwrap();
    let reinits = count_in_log(
        &w.env.cluster,
        "all server processes terminated; reinitializing",
    );
    let scheduler = backends(&mut c, "procore_sync scheduler")
        .first()
        .map(|b| b.0);
    let pid = listener_pid(&mut c).expect("the listener runs");

    let mut locker = w.client();
    locker
        .batch_execute("BEGIN; LOCK TABLE procore_sync_webhook_inbox IN EXCLUSIVE MODE")
        .unwrap();
    let event = w.mutate(edit("rfis", Some(P1), rec(P1, 12)))["event_id"]
        .as_u64()
        .expect("an event");
    w.wait(
        Duration::from_secs(30),
        "the delivery in flight, the listener waiting on the inbox lock",
        || {
            let in_flight = w.hooks.hooks()?.iter().any(|h| h["in_flight"] == true);
            let waiting: bool = w
                .env
                .client()?
                .query_one(
                    "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) \
                     FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )?
                .get(0);
            Ok(in_flight && waiting)
        },
    );
    kill9(pid);
    drop(locker);
    drop(c);
    wait_crash_restart(&w.env.cluster, reinits, scheduler);
    assert_eq!(
        w.env.cluster.postmaster_pid().unwrap(),
        postmaster,
        "the postmaster survived"
    );
    wait_edited(&w, "rfis", rec(P1, 12), 1);
    let attempts = attempts_of(&w, event);
    assert!(
        attempts.len() >= 2
            && attempts[0]["outcome"] == "retried"
            && attempts.last().unwrap()["outcome"] == "ok",
        "the first attempt broke with the listener, a later one landed: {attempts:?}"
    );
    let mut c = w.client();
    let new_pid = listener_pid(&mut c).expect("a listener again");
    assert_ne!(new_pid, pid);
    assert_eq!(
        w.inbox(),
        BTreeMap::from([("done".to_string(), 1)]),
        "the event once, done"
    );
}

// ---------------------------------------------------------------------------------------
// 7. Discarded deliveries and the backstop
// ---------------------------------------------------------------------------------------

#[test]
fn discarded_deliveries_queue_the_companys_users_and_their_sync_brings_the_missed_changes() {
    // user-2 is a member of user-1's company: both are the company's users.
    let world = small_world(
        2,
        json!({"members": [{"login": "user-2", "company_id": COMPANY}]}),
    );
    let w = W::start(world, &[], 2);
    w.enable(1, COMPANY);
    let first_event = w.hooks.last_event_id().unwrap();
    // Nothing reaches the listener, and what waits is discarded at once.
    w.hooks
        .config(json!({"paused": true, "discard_after_ms": 300}))
        .unwrap();
    w.mutate(edit("rfis", Some(P1), rec(P1, 6)));
    w.mutate(delete("rfis", Some(P2), rec(P2, 2)));
    w.mutate(edit("vendors", None, vendor(5)));
    w.wait(EVENT_TIMEOUT, "three discarded deliveries", || {
        Ok(w.hooks
            .deliveries(0)?
            .iter()
            .filter(|d| d["outcome"] == "discarded" && d["event_id"].as_u64() > Some(first_event))
            .count()
            == 3)
    });
    w.hooks
        .config(json!({"paused": false, "discard_after_ms": 43_200_000}))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.inbox_total(), 0, "no event arrived");
    let x = w.row("rfis", COMPANY, rec(P1, 6)).unwrap().unwrap();
    assert!(!x.name.unwrap().contains("(edited)"), "the edit was missed");
    assert!(!w.row("rfis", COMPANY, rec(P2, 2)).unwrap().unwrap().deleted);

    let mut c = w.client();
    let since = now(&mut c);
    let reconciled: i32 = c
        .query_one("SELECT procore_sync_webhooks_check()", &[])
        .expect("procore_sync_webhooks_check()")
        .get(0);
    assert_eq!(reconciled, 1, "the company was reconciled");
    let view = c
        .query_one(
            "SELECT failing_deliveries, discarded_deliveries, reconciled_at, checked_at, check_error \
             FROM procore_sync_webhooks WHERE company_id = $1",
            &[&COMPANY],
        )
        .unwrap();
    let (failing, discarded): (i32, i32) = (view.get(0), view.get(1));
    let reconciled_at: Option<DateTime<Utc>> = view.get(2);
    let checked_at: Option<DateTime<Utc>> = view.get(3);
    let check_error: Option<String> = view.get(4);
    assert_eq!(check_error, None);
    assert_eq!(discarded, 3, "the view counts the discarded deliveries");
    assert_eq!(failing, 0);
    let alerts = discarded_alerts(&mut c);
    assert_eq!(
        alerts,
        [(COMPANY, 3)],
        "one alert tells the operators of the discarded deliveries"
    );
    assert!(
        reconciled_at.is_some_and(|t| t >= since),
        "{reconciled_at:?}"
    );
    assert!(checked_at.is_some_and(|t| t >= since));
    let queued: BTreeSet<Uuid> = c
        .query(
            "SELECT user_id FROM procore_sync_queue WHERE status = 'pending' AND created_at >= $1",
            &[&since],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        queued,
        BTreeSet::from([w.user(1), w.user(2)]),
        "both users of the company are queued"
    );

    // The queued syncs (full passes) bring what the events would have.
    let taken: i32 = c
        .query_one("SELECT process_procore_sync_queue()", &[])
        .unwrap()
        .get(0);
    assert!(taken >= 1);
    wait_cycle_done(&w.env.cluster, &w.users, since, CYCLE_TIMEOUT);
    wait_edited(&w, "rfis", rec(P1, 6), 1);
    wait_edited(&w, "vendors", vendor(5), 1);
    wait_deleted(&w, "rfis", rec(P2, 2));

    // What was reconciled is not reconciled again.
    let again: i32 = c
        .query_one("SELECT procore_sync_webhooks_check()", &[])
        .unwrap()
        .get(0);
    assert_eq!(again, 0, "no new failing or discarded deliveries");
    assert_eq!(discarded_alerts(&mut c).len(), 1, "and no second alert");
}

/// The `deliveries_discarded` alerts raised: company and count, oldest first.
fn discarded_alerts(c: &mut postgres::Client) -> Vec<(i64, i64)> {
    c.query(
        "SELECT (details ->> 'company_id')::bigint, (details ->> 'count')::bigint
         FROM procore_sync_alert WHERE kind = 'deliveries_discarded' ORDER BY id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

// ---------------------------------------------------------------------------------------
// 8. Secrets
// ---------------------------------------------------------------------------------------

const VERBOSE_LOGGING: [(&str, &str); 6] = [
    ("log_statement", "all"),
    ("log_min_duration_statement", "0"),
    ("log_parameter_max_length", "-1"),
    ("log_error_verbosity", "verbose"),
    ("log_min_error_statement", "debug5"),
    ("log_min_messages", "debug1"),
];

/// The hook's secret, the users' tokens and the client secret appear in neither the server
/// log (every statement logged), nor the stand-in's log, nor any answer or stored message,
/// through enabling, deliveries, refused deliveries, a check that works and one that fails,
/// and disabling.
#[test]
fn no_secret_in_any_log_or_answer() {
    let w = W::start(small_world(2, json!({})), &VERBOSE_LOGGING, 2);
    let watch = LeakWatch::start(&w.env.cluster);
    w.enable(1, COMPANY);
    let secret = w.secret(COMPANY);
    assert!(
        w.env.standin.secrets().unwrap().contains(&secret),
        "the stand-in lists the hook's secret, so the leak check looks for it"
    );
    let mut replies: Vec<Reply> = Vec::new();
    w.mutate(edit("rfis", Some(P1), rec(P1, 5)));
    w.mutate(add("rfis", P1));
    w.mutate(delete("rfis", Some(P1), rec(P1, 6)));
    wait_edited(&w, "rfis", rec(P1, 5), 1);
    wait_deleted(&w, "rfis", rec(P1, 6));
    let body = v2_payload(
        "01LEAK00000000000000000001",
        "update",
        "RFIs",
        COMPANY,
        Some(P1),
        rec(P1, 7),
    );
    replies.push(w.post(&body, None));
    replies.push(w.post(&body, Some("wrong")));
    replies.push(w.post(&body, Some(&format!("Bearer {secret}"))));
    replies.push(w.listener.post(b"{not json", Some(&secret)).unwrap());
    let mut bad = body.clone();
    bad["resource_name"] = json!("Timesheets");
    replies.push(w.post(&bad, Some(&secret)));
    replies.push(w.post(&body, Some(&secret)));
    w.wait_inbox_drained(EVENT_TIMEOUT);

    let mut c = w.client();
    let checked: i32 = c
        .query_one("SELECT procore_sync_webhooks_check()", &[])
        .unwrap()
        .get(0);
    assert_eq!(checked, 0);
    // A check that fails at Procore (the registering user's tokens revoked there).
    w.env.standin.revoke("user-1").unwrap();
    c.query_one("SELECT procore_sync_webhooks_check()", &[])
        .unwrap();
    let check_error: Option<String> = c
        .query_one(
            "SELECT check_error FROM procore_sync_webhooks WHERE company_id = $1",
            &[&COMPANY],
        )
        .unwrap()
        .get(0);
    assert!(check_error.is_some(), "the failed check is recorded");
    watch.note(check_error.unwrap_or_default());
    // Disabling with a token Procore refuses: a warning, and the hook forgotten here.
    let disabled: bool = c
        .query_one("SELECT procore_sync_webhooks_disable($1)", &[&COMPANY])
        .unwrap()
        .get(0);
    assert!(disabled);
    replies.push(w.post(&body, Some(&secret)));
    assert_eq!(
        replies.last().unwrap().status,
        401,
        "the old secret is refused"
    );

    for r in &replies {
        watch.note(r.body.clone());
    }
    for note in c
        .query(
            "SELECT coalesce(note, '') FROM procore_sync_webhook_inbox",
            &[],
        )
        .unwrap()
    {
        watch.note(note.get::<_, String>(0));
    }
    watch.note(w.env.standin.stderr_log());
    assert!(
        w.env.cluster.log().contains("procore_sync_webhooks_enable"),
        "log_statement = all really logged statements"
    );
    watch.finish(&w.env.cluster, &[&w.env.standin]);
}

/// The receiver any HTTP front can call (`procore_sync_webhook(payload, authorization)`,
/// README) takes the hook's secret as an argument: with every statement and its bind
/// parameters logged, it must not reach the server log, as `procore_connect`'s code does
/// not.
#[test]
fn the_sql_receiver_keeps_the_hook_secret_out_of_verbose_logs() {
    let w = W::start(small_world(1, json!({})), &VERBOSE_LOGGING, 1);
    let watch = LeakWatch::start(&w.env.cluster);
    w.enable(1, COMPANY);
    let secret = w.secret(COMPANY);
    let mut c = w.client();
    let body = v2_payload(
        "01SQLRECEIVER0000000000001",
        "update",
        "RFIs",
        COMPANY,
        Some(P1),
        rec(P1, 7),
    );
    let receipt: String = c
        .query_one(
            "SELECT procore_sync_webhook($1::jsonb, $2)",
            &[&body, &secret],
        )
        .expect("procore_sync_webhook")
        .get(0);
    assert_eq!(receipt, "recorded");
    // Failing calls are logged with their statement (log_min_error_statement).
    let mut bad = body.clone();
    bad["event_type"] = json!("archive");
    let e = c
        .query_one(
            "SELECT procore_sync_webhook($1::jsonb, $2)",
            &[&bad, &secret],
        )
        .expect_err("an unknown event type is refused");
    watch.note(
        e.as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default(),
    );
    wait_edited(&w, "rfis", rec(P1, 7), 0);
    watch.finish(&w.env.cluster, &[&w.env.standin]);
}

// ---------------------------------------------------------------------------------------
// Disabling, and enabling again
// ---------------------------------------------------------------------------------------

#[test]
fn disabling_deletes_the_hook_at_procore_and_later_deliveries_get_401() {
    let w = W::start(small_world(1, json!({})), &[], 1);
    let first = w.enable(1, COMPANY);
    let first_secret = w.secret(COMPANY);
    let body = v2_payload(
        "01DISABLE00000000000000001",
        "update",
        "RFIs",
        COMPANY,
        Some(P1),
        rec(P1, 3),
    );

    // Enabling again replaces the hook, here and at the stand-in.
    let second = w.enable(1, COMPANY);
    let second_secret = w.secret(COMPANY);
    assert_ne!(first, second);
    assert_ne!(first_secret, second_secret);
    let at_standin: Vec<i64> = w
        .hooks
        .hooks()
        .unwrap()
        .iter()
        .filter_map(|h| h["id"].as_i64())
        .collect();
    assert_eq!(
        at_standin,
        vec![second],
        "the first hook is gone at the stand-in"
    );
    assert_eq!(w.post(&body, Some(&first_secret)).status, 401);
    let reply = w.post(&body, Some(&second_secret));
    assert_eq!(reply.status, 200, "{reply:?}");

    let mut c = w.client();
    let disabled: bool = c
        .query_one("SELECT procore_sync_webhooks_disable($1)", &[&COMPANY])
        .unwrap()
        .get(0);
    assert!(disabled);
    assert!(
        w.hooks.hooks().unwrap().is_empty(),
        "the hook is gone at the stand-in"
    );
    let left: i64 = c
        .query_one("SELECT count(*) FROM procore_sync_webhooks", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let backstop: i64 = c
        .query_one(
            "SELECT count(*) FROM procore_sync_job WHERE jobname = 'procore-webhooks-backstop'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(backstop, 0, "the backstop job went with the last hook");
    let mut later = body.clone();
    later["ulid"] = json!("01DISABLE00000000000000002");
    let reply = w.post(&later, Some(&second_secret));
    assert_eq!(
        reply.status, 401,
        "deliveries with the old secret are refused: {reply:?}"
    );
    let answer = w.mutate(edit("rfis", Some(P1), rec(P1, 3)));
    assert!(
        answer["event_id"].is_null(),
        "no hook hears the change: {answer}"
    );
    let again: bool = c
        .query_one("SELECT procore_sync_webhooks_disable($1)", &[&COMPANY])
        .unwrap()
        .get(0);
    assert!(!again, "nothing left to disable");
}
