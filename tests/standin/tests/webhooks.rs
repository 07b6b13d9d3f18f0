//! Webhooks: hooks and triggers through the API, and deliveries of mutations to a
//! receiver on a loopback port, with the failures, retries, discards, duplicates and
//! reordering Procore documents.

mod common;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{server, Client, Reply};
use procore_standin::{Running, World};
use serde_json::{json, Value};

const SECRET: &str = "Bearer hook-secret-4f1c9a";
const RFI: u64 = 100_100_100_001;

/// How the receiver answers one delivery.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Reads the request, says nothing for this long, then closes.
    Silent(Duration),
}

struct Delivery {
    headers: Vec<(String, String)>,
    body: Value,
    at: Instant,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on a loopback port: answers from a script (then 200), and hands
/// every request it read to the test.
struct Sink {
    url: String,
    deliveries: Receiver<Delivery>,
}

impl Sink {
    fn start(script: Vec<Answer>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/procore/webhooks", listener.local_addr().unwrap());
        let (tx, deliveries) = mpsc::channel();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let tx = tx.clone();
                let script = Arc::clone(&script);
                thread::spawn(move || serve(stream, &tx, &script));
            }
        });
        Sink { url, deliveries }
    }

    fn next(&self, within: Duration) -> Option<Delivery> {
        self.deliveries.recv_timeout(within).ok()
    }

    /// Exactly `n` deliveries, and then nothing more for a while.
    fn exactly(&self, n: usize) -> Vec<Delivery> {
        let got: Vec<Delivery> = (0..n)
            .map(|i| {
                self.next(Duration::from_secs(10))
                    .unwrap_or_else(|| panic!("delivery {} of {n} never came", i + 1))
            })
            .collect();
        if let Some(extra) = self.next(Duration::from_millis(400)) {
            panic!("unexpected extra delivery: {}", extra.body);
        }
        got
    }
}

fn serve(stream: TcpStream, tx: &Sender<Delivery>, script: &Mutex<VecDeque<Answer>>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let _ = tx.send(Delivery {
            headers,
            body,
            at: Instant::now(),
        });
        let answer = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Answer::Status(200));
        match answer {
            Answer::Status(status) => {
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok");
                if reader.get_mut().write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
            Answer::Silent(pause) => {
                thread::sleep(pause);
                return;
            }
        }
    }
}

struct Setup {
    standin: Running,
    c: Client,
    token: String,
}

fn setup() -> Setup {
    let standin = server(World {
        users: 2,
        // Webhook calls count against the rate limit like any other API call.
        rate_limit_spike: 10_000,
        ..World::default()
    });
    let mut c = Client::new(&standin);
    let tokens = c.admin("POST", "tokens", json!({"login": "user-1"}));
    let token = tokens["access_token"].as_str().unwrap().to_string();
    Setup { standin, c, token }
}

impl Setup {
    fn call(&mut self, method: &str, target: &str, company: Option<u64>, body: Value) -> Reply {
        let auth = format!("Bearer {}", self.token);
        let company = company.map(|c| c.to_string());
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        if let Some(c) = &company {
            headers.push(("Procore-Company-Id", c.as_str()));
        }
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.c.send(method, target, &headers, &body)
    }

    fn config(&mut self, config: Value) {
        self.c.admin("POST", "webhooks/config", config);
    }

    /// A company hook on 1001 with the given triggers; returns its id.
    fn hook(&mut self, url: &str, api_version: &str, triggers: &[(&str, &str)]) -> u64 {
        let reply = self.call(
            "POST",
            "/rest/v1.0/webhooks/hooks",
            Some(1001),
            json!({
                "company_id": 1001,
                "hook": {
                    "api_version": api_version,
                    "namespace": "procore-sync",
                    "destination_url": url,
                    "destination_headers": {"Authorization": SECRET},
                },
            }),
        );
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let id = reply.json()["id"].as_u64().unwrap();
        let triggers: Vec<Value> = triggers
            .iter()
            .map(|(r, e)| json!({"resource_name": r, "event_type": e}))
            .collect();
        let reply = self.call(
            "POST",
            &format!("/rest/v1.0/webhooks/hooks/{id}/triggers/bulk"),
            Some(1001),
            json!({"api_version": api_version, "triggers": triggers}),
        );
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        id
    }

    fn mutate(&mut self, body: Value) -> Value {
        self.c.admin("POST", "mutate", body)
    }

    fn deliveries(&mut self, hook: u64, status: &str) -> Vec<Value> {
        let reply = self.call(
            "GET",
            &format!("/rest/v1.0/webhooks/hooks/{hook}/deliveries?company_id=1001&filters[status]={status}"),
            Some(1001),
            Value::Null,
        );
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json().as_array().unwrap().clone()
    }

    /// Polls the admin attempt log until `done` holds for it.
    fn admin_deliveries_until(&mut self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.c.admin("GET", "webhooks/deliveries", Value::Null);
            let all = all.as_array().unwrap().clone();
            if done(&all) {
                return all;
            }
            assert!(Instant::now() < deadline, "gave up waiting: {all:#?}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn edit_rfi() -> Value {
    json!({"action": "edit", "resource": "rfis", "id": RFI})
}

#[test]
fn hooks_and_triggers_are_managed_through_the_api_and_never_show_the_secret() {
    let mut s = setup();
    let sink = Sink::start(vec![]);
    let mut seen: Vec<String> = Vec::new();
    let mut keep = |reply: &Reply| seen.push(String::from_utf8_lossy(&reply.body).into_owned());

    let create = json!({
        "company_id": 1001,
        "hook": {
            "api_version": "v2.0",
            "namespace": "procore-sync",
            "destination_url": sink.url,
            "destination_headers": {"Authorization": SECRET},
        },
    });
    let created = s.call(
        "POST",
        "/rest/v1.0/webhooks/hooks",
        Some(1001),
        create.clone(),
    );
    assert_eq!(created.status, 201);
    keep(&created);
    let hook = created.json();
    let id = hook["id"].as_u64().unwrap();
    assert_eq!(hook["owned_by_company_id"], 1001);
    assert_eq!(hook["owned_by_project_id"], Value::Null);
    assert_eq!(hook["namespace"], "procore-sync");
    assert_eq!(hook["api_version"], "v2.0");
    assert_eq!(hook["destination_url"], sink.url.as_str());
    assert_eq!(hook["destination_headers"]["Authorization"], "[FILTERED]");

    // Who may do what, and what is refused.
    s.token = "not-a-token".to_string();
    assert_eq!(
        s.call(
            "POST",
            "/rest/v1.0/webhooks/hooks",
            Some(1001),
            create.clone()
        )
        .status,
        401
    );
    assert_eq!(
        s.call(
            "GET",
            "/rest/v1.0/webhooks/hooks?company_id=1001",
            Some(1001),
            Value::Null
        )
        .status,
        401
    );
    let tokens = s.c.admin("POST", "tokens", json!({"login": "user-1"}));
    s.token = tokens["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        s.call(
            "POST",
            "/rest/v1.0/webhooks/hooks",
            Some(2001),
            json!({"company_id": 2001, "hook": create["hook"]})
        )
        .status,
        404,
        "not user-1's company"
    );
    assert_eq!(
        s.call("POST", "/rest/v1.0/webhooks/hooks", None, create.clone())
            .status,
        403,
        "no company header"
    );
    assert_eq!(
        s.call(
            "POST",
            "/rest/v1.0/webhooks/hooks",
            Some(1001),
            json!({"hook": create["hook"]})
        )
        .status,
        400,
        "no scope"
    );
    let bad_hook = |field: &str, value: Value| {
        let mut body = create.clone();
        body["hook"][field] = value;
        body
    };
    for (field, value) in [
        ("namespace", json!("Procore_Sync")),
        ("destination_url", json!("ftp://example.com/x")),
        ("destination_url", json!("not a url")),
        ("api_version", json!("v9.0")),
        (
            "destination_headers",
            json!({"Authorization": "a\r\nX-Injected: 1"}),
        ),
    ] {
        let reply = s.call(
            "POST",
            "/rest/v1.0/webhooks/hooks",
            Some(1001),
            bad_hook(field, value.clone()),
        );
        assert_eq!(reply.status, 422, "{field} = {value}");
    }
    let reply = s.c.send(
        "POST",
        "/rest/v1.0/webhooks/hooks",
        &[
            ("Authorization", &format!("Bearer {}", s.token)),
            ("Procore-Company-Id", "1001"),
        ],
        b"{not json",
    );
    assert_eq!(reply.status, 400);

    // A project hook beside it, and the listings.
    let project_hook = s.call(
        "POST",
        "/rest/v1.0/webhooks/hooks",
        Some(1001),
        json!({"project_id": 1_001_002, "hook": {"destination_url": sink.url, "destination_headers": {"Authorization": SECRET}}}),
    );
    assert_eq!(project_hook.status, 201);
    keep(&project_hook);
    let project_hook = project_hook.json();
    assert_eq!(project_hook["owned_by_project_id"], 1_001_002);
    assert_eq!(
        project_hook["namespace"], "procore",
        "the default namespace"
    );
    let listed = s.call(
        "GET",
        "/rest/v1.0/webhooks/hooks?company_id=1001&namespace=procore-sync",
        Some(1001),
        Value::Null,
    );
    keep(&listed);
    assert_eq!(listed.json().as_array().unwrap().len(), 1);
    assert_eq!(listed.json()[0]["id"], id);
    let default_ns = s.call(
        "GET",
        "/rest/v1.0/webhooks/hooks?company_id=1001",
        Some(1001),
        Value::Null,
    );
    assert!(
        default_ns.json().as_array().unwrap().is_empty(),
        "namespaces keep apps apart"
    );
    let shown = s.call(
        "GET",
        &format!("/rest/v1.0/webhooks/hooks/{id}?company_id=1001"),
        Some(1001),
        Value::Null,
    );
    assert_eq!(shown.status, 200);
    keep(&shown);
    assert_eq!(
        s.call(
            "GET",
            &format!("/rest/v1.0/webhooks/hooks/{id}?project_id=1001001"),
            Some(1001),
            Value::Null
        )
        .status,
        404,
        "wrong scope"
    );
    assert_eq!(
        s.call(
            "GET",
            "/rest/v1.0/webhooks/hooks/999",
            Some(1001),
            Value::Null
        )
        .status,
        404
    );

    // Triggers: one at a time, in bulk, listed and deleted.
    let triggers = format!("/rest/v1.0/webhooks/hooks/{id}/triggers");
    let one = s.call("POST", &triggers, Some(1001), json!({"api_version": "v2.0", "trigger": {"resource_name": "RFIs", "event_type": "update"}}));
    assert_eq!(one.status, 201);
    let one = one.json();
    assert_eq!(
        (one["resource_name"].as_str(), one["event_type"].as_str()),
        (Some("RFIs"), Some("update"))
    );
    let again = s.call(
        "POST",
        &triggers,
        Some(1001),
        json!({"trigger": {"resource_name": "RFIs", "event_type": "update"}}),
    );
    assert_eq!(again.status, 422, "already there");
    for bad in [
        json!({"resource_name": "RFIs", "event_type": "upsert"}),
        json!({"resource_name": "rfis", "event_type": "create"}),
    ] {
        assert_eq!(
            s.call("POST", &triggers, Some(1001), json!({"trigger": bad}))
                .status,
            422
        );
    }
    let project_triggers = format!("/rest/v1.0/webhooks/hooks/{}/triggers", project_hook["id"]);
    let company_level = s.call(
        "POST",
        &project_triggers,
        Some(1001),
        json!({"trigger": {"resource_name": "Projects", "event_type": "create"}}),
    );
    assert_eq!(
        company_level.status, 422,
        "a project hook cannot watch projects"
    );

    let many: Vec<Value> = (0..501)
        .map(|_| json!({"resource_name": "RFIs", "event_type": "create"}))
        .collect();
    let bulk = s.call(
        "POST",
        &format!("{triggers}/bulk"),
        Some(1001),
        json!({"api_version": "v2.0", "triggers": many}),
    );
    assert_eq!(bulk.status, 422, "501 triggers in one call");
    let bulk = s.call(
        "POST",
        &format!("{triggers}/bulk"),
        Some(1001),
        json!({"triggers": [
            {"resource_name": "RFIs", "event_type": "create"},
            {"resource_name": "Submittals", "event_type": "delete"},
            {"resource_name": "Projects", "event_type": "create"},
        ]}),
    );
    assert_eq!(bulk.status, 201);
    assert_eq!(bulk.json().as_array().unwrap().len(), 3);
    let listed = s.call("GET", &triggers, Some(1001), Value::Null);
    assert_eq!(listed.json().as_array().unwrap().len(), 4);
    let gone = bulk.json()[1]["id"].as_u64().unwrap();
    assert_eq!(
        s.call(
            "DELETE",
            &format!("{triggers}/{gone}"),
            Some(1001),
            Value::Null
        )
        .status,
        204
    );
    assert_eq!(
        s.call(
            "DELETE",
            &format!("{triggers}/{gone}"),
            Some(1001),
            Value::Null
        )
        .status,
        404
    );
    let bulk_ids = json!({"trigger_ids": [bulk.json()[2]["id"], 999]});
    assert_eq!(
        s.call("DELETE", &format!("{triggers}/bulk"), Some(1001), bulk_ids)
            .status,
        404,
        "all or nothing"
    );
    assert_eq!(
        s.call("GET", &triggers, Some(1001), Value::Null)
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // A delivery, so the deliveries listings have something to (not) leak.
    s.mutate(edit_rfi());
    let delivery = sink.next(Duration::from_secs(10)).expect("delivered");
    assert_eq!(delivery.header("authorization"), Some(SECRET));
    s.admin_deliveries_until(|d| d.len() == 1);
    let deliveries = s.call(
        "GET",
        &format!("/rest/v1.0/webhooks/hooks/{id}/deliveries?company_id=1001"),
        Some(1001),
        Value::Null,
    );
    assert_eq!(deliveries.status, 200);
    keep(&deliveries);
    assert_eq!(
        s.call(
            "GET",
            &format!("/rest/v1.0/webhooks/hooks/{id}/deliveries"),
            Some(1001),
            Value::Null
        )
        .status,
        400,
        "scope required"
    );

    // Rotating the secret: the new value is stored, neither is shown.
    let patched = s.call(
        "PATCH",
        &format!("/rest/v1.0/webhooks/hooks/{id}"),
        Some(1001),
        json!({"hook": {"destination_headers": {"Authorization": "Bearer rotated-77"}}}),
    );
    assert_eq!(patched.status, 200);
    keep(&patched);
    assert_eq!(patched.json()["destination_url"], sink.url.as_str(), "kept");
    for route in [
        "webhooks/hooks",
        "webhooks/deliveries",
        "webhooks/events",
        "requests",
        "stats",
    ] {
        let reply = s.c.send("GET", &format!("/__admin/{route}"), &[], b"");
        keep(&reply);
    }
    let admin_hooks = s.c.admin("GET", "webhooks/hooks", Value::Null);
    assert_eq!(admin_hooks[0]["has_authorization"], true);
    assert_eq!(admin_hooks[0]["triggers"].as_array().unwrap().len(), 3);
    for body in &seen {
        assert!(
            !body.contains("hook-secret-4f1c9a") && !body.contains("rotated-77"),
            "leaked: {body}"
        );
    }
    let secrets = s.c.admin("GET", "secrets", Value::Null);
    assert!(
        secrets.as_array().unwrap().iter().any(|v| v == SECRET),
        "listed for leak checks"
    );

    assert_eq!(
        s.call(
            "DELETE",
            &format!("/rest/v1.0/webhooks/hooks/{id}"),
            Some(1001),
            Value::Null
        )
        .status,
        204
    );
    assert_eq!(
        s.call(
            "GET",
            &format!("/rest/v1.0/webhooks/hooks/{id}"),
            Some(1001),
            Value::Null
        )
        .status,
        404
    );
    let stats = s.c.admin("GET", "stats", Value::Null);
    assert!(
        stats["api_requests"].as_u64().unwrap() > 20,
        "webhook calls count as API requests"
    );
    drop(s.standin);
}

#[test]
fn a_matching_mutation_is_delivered_once_as_a_v2_payload() {
    let mut s = setup();
    let sink = Sink::start(vec![]);
    let hook = s.hook(&sink.url, "v2.0", &[("RFIs", "update"), ("RFIs", "create")]);

    s.mutate(json!({"action": "delete", "resource": "rfis", "id": RFI + 1}));
    s.mutate(json!({"action": "edit", "resource": "vendors", "id": 100_100_001}));
    let edited = s.mutate(json!({"action": "edit", "resource": "rfis", "id": RFI, "login": "user-2", "source_application_id": "procore-sync-app"}));
    let got = sink.exactly(1);
    let d = &got[0];
    assert_eq!(d.header("authorization"), Some(SECRET));
    assert!(d
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let p = &d.body;
    assert_eq!(p["id"], edited["event_id"]);
    assert!(p["id"].is_u64());
    assert_eq!(p["ulid"].as_str().unwrap().len(), 26);
    assert_eq!(p["api_version"], "v2.0");
    assert_eq!(p["event_type"], "update");
    assert_eq!(p["resource_name"], "RFIs");
    assert_eq!(p["resource_id"], RFI);
    assert_eq!(p["company_id"], 1001);
    assert_eq!(p["project_id"], 1_001_001);
    assert_eq!(p["user_id"], 2);
    assert_eq!(p["metadata"]["source_application_id"], "procore-sync-app");
    assert_eq!(p["metadata"]["source_user_id"], 2);
    assert!(p["timestamp"].as_str().unwrap().ends_with('Z'));

    let added = s.mutate(json!({"action": "add", "resource": "rfis", "project_id": 1_001_002}));
    let got = sink.exactly(1);
    assert_eq!(got[0].body["event_type"], "create");
    assert_eq!(got[0].body["resource_id"], added["id"]);
    assert_eq!(got[0].body["user_id"], 1, "the company's owner by default");

    let listed = s.deliveries(hook, "successful");
    assert_eq!(listed.len(), 2);
    let first = &listed[0];
    assert_eq!(first["outcome"], "ok");
    assert_eq!(first["response_status"], 200);
    assert_eq!(first["response_body"], "ok");
    assert_eq!(first["event_id"], edited["event_id"]);
    assert_eq!(first["event"], got_first_payload(&mut s, hook));
    assert!(first["started_at"].is_string() && first["completed_at"].is_string());
    assert!(s.deliveries(hook, "failing").is_empty());
    assert_eq!(s.deliveries(hook, "any").len(), 2);
    let paged = s.call(
        "GET",
        &format!(
            "/rest/v1.0/webhooks/hooks/{hook}/deliveries?company_id=1001&page_size=1&page_start={}",
            first["id"]
        ),
        Some(1001),
        Value::Null,
    );
    assert_eq!(paged.json().as_array().unwrap().len(), 1);
    assert_eq!(paged.json()[0]["event"]["event_type"], "create");
}

fn got_first_payload(s: &mut Setup, hook: u64) -> Value {
    let all = s.c.admin(
        "GET",
        &format!("webhooks/deliveries?hook_id={hook}"),
        Value::Null,
    );
    all[0]["payload"].clone()
}

#[test]
fn v4_hooks_get_string_ids_reason_and_resource_type() {
    let mut s = setup();
    let sink = Sink::start(vec![]);
    s.hook(
        &sink.url,
        "v4.0",
        &[("Punch Items", "delete"), ("Projects", "update")],
    );
    let punch_item = 100_100_200_007u64;
    s.mutate(json!({"action": "delete", "resource": "punch_items", "id": punch_item}));
    let p = sink.exactly(1).remove(0).body;
    assert_eq!(p["reason"], "delete");
    assert_eq!(p["resource_type"], "Punch Items");
    assert_eq!(p["resource_id"], punch_item.to_string());
    assert_eq!(p["company_id"], "1001");
    assert_eq!(p["project_id"], "1001002");
    assert_eq!(p["user_id"], "1");
    let id = p["id"].as_str().unwrap();
    assert_eq!(id.len(), 26, "a ULID");
    for v2_only in ["event_type", "resource_name", "ulid", "api_version"] {
        assert!(p.get(v2_only).is_none(), "{v2_only} in {p}");
    }
    let events = s.c.admin("GET", "webhooks/events", Value::Null);
    assert_eq!(events[0]["ulid"], id);

    s.mutate(json!({"action": "edit", "resource": "projects", "id": 1_001_001}));
    let p = sink.exactly(1).remove(0).body;
    assert_eq!(
        (p["resource_type"].as_str(), p["project_id"].as_str()),
        (Some("Projects"), Some("1001001"))
    );
}

#[test]
fn a_failing_receiver_pauses_its_hook_and_is_retried_with_backoff() {
    let mut s = setup();
    s.config(json!({"backoff_start_ms": 150, "backoff_cap_ms": 400, "timeout_ms": 300}));
    let sink = Sink::start(vec![
        Answer::Silent(Duration::from_secs(2)),
        Answer::Status(500),
        Answer::Status(503),
    ]);
    let hook = s.hook(&sink.url, "v2.0", &[("RFIs", "update")]);
    let first = s.mutate(edit_rfi());
    // Queued behind the first: it waits while the hook is paused.
    let second = s.mutate(json!({"action": "edit", "resource": "rfis", "id": RFI + 1}));
    let tries: Vec<Delivery> = (0..4)
        .map(|_| sink.next(Duration::from_secs(10)).expect("a try"))
        .collect();
    let after = sink.exactly(1);

    for t in &tries {
        assert_eq!(t.body["id"], first["event_id"]);
    }
    assert_eq!(after[0].body["id"], second["event_id"]);
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1].at - w[0].at).collect();
    // Timeout (300 ms) + backoff 150, then 300, then 400 (the cap).
    for (gap, least) in gaps.iter().zip([450, 300, 400]) {
        assert!(*gap >= Duration::from_millis(least - 30), "{gaps:?}");
    }
    assert!(gaps[2] < Duration::from_millis(1_500), "capped: {gaps:?}");

    let listed = s.deliveries(hook, "any");
    let outcomes: Vec<&str> = listed
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retried", "retried", "retried", "ok", "ok"]);
    assert_eq!(listed[0]["response_status"], Value::Null);
    assert!(
        listed[0]["response_error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("timed out"),
        "{}",
        listed[0]
    );
    assert_eq!(listed[1]["response_status"], 500);
    assert_eq!(listed[2]["response_status"], 503);
    assert_eq!(s.deliveries(hook, "failing").len(), 3);
    assert_eq!(s.deliveries(hook, "successful").len(), 2);
    let hooks = s.c.admin("GET", "webhooks/hooks", Value::Null);
    assert_eq!(hooks[0]["next_backoff_ms"], 150, "reset by the success");
}

#[test]
fn events_undelivered_past_discard_after_are_discarded() {
    let mut s = setup();
    s.config(json!({"backoff_start_ms": 50, "backoff_cap_ms": 100, "discard_after_ms": 600}));
    // Nobody listens here: every try is refused.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", closed.local_addr().unwrap());
    drop(closed);
    let hook = s.hook(&url, "v2.0", &[("RFIs", "update")]);
    let first = s.mutate(edit_rfi());
    let second = s.mutate(json!({"action": "edit", "resource": "rfis", "id": RFI + 1}));

    let all =
        s.admin_deliveries_until(|d| d.iter().filter(|a| a["outcome"] == "discarded").count() == 2);
    let discarded = s.deliveries(hook, "discarded");
    let ids: Vec<&Value> = discarded.iter().map(|d| &d["event_id"]).collect();
    assert_eq!(ids, [&first["event_id"], &second["event_id"]]);
    assert!(discarded
        .iter()
        .all(|d| d["event"]["resource_name"] == "RFIs"));
    let tries: Vec<&Value> = all.iter().filter(|a| a["outcome"] != "discarded").collect();
    assert!(tries.len() >= 3, "retried meanwhile: {all:#?}");
    assert!(
        tries.iter().all(|a| a["event_id"] == first["event_id"]),
        "the hook was paused for the second"
    );
    assert!(tries.iter().all(|a| a["response_error"].is_string()));

    // Nothing is tried after the discard.
    let count = all.len();
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        s.c.admin("GET", "webhooks/deliveries", Value::Null)
            .as_array()
            .unwrap()
            .len(),
        count
    );
    let hooks = s.c.admin("GET", "webhooks/hooks", Value::Null);
    assert_eq!(hooks[0]["queued"], 0);
}

#[test]
fn duplicates_and_reordering_happen_at_the_configured_rates() {
    let mut s = setup();
    s.config(json!({"duplicate_rate": 1.0}));
    let sink = Sink::start(vec![]);
    s.hook(&sink.url, "v2.0", &[("RFIs", "update")]);
    let a = s.mutate(edit_rfi());
    let b = s.mutate(json!({"action": "edit", "resource": "rfis", "id": RFI + 1}));
    let got = sink.exactly(4);
    let ids: Vec<&Value> = got.iter().map(|d| &d.body["id"]).collect();
    assert_eq!(ids.iter().filter(|id| ***id == a["event_id"]).count(), 2);
    assert_eq!(ids.iter().filter(|id| ***id == b["event_id"]).count(), 2);
    assert_eq!(
        got[0].body, got[1].body,
        "the same event twice, ulid and timestamp included"
    );
    let admin = s.c.admin("GET", "webhooks/deliveries", Value::Null);
    assert_eq!(
        admin
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["duplicate"] == true)
            .count(),
        2
    );

    s.config(
        json!({"duplicate_rate": 0.0, "reorder_rate": 1.0, "reorder_window_ms": 400, "seed": 42}),
    );
    let sent: Vec<Value> = (1..=8)
        .map(|i| {
            s.mutate(json!({"action": "edit", "resource": "rfis", "id": RFI + i}))["event_id"]
                .clone()
        })
        .collect();
    let got: Vec<Value> = sink
        .exactly(8)
        .into_iter()
        .map(|d| d.body["id"].clone())
        .collect();
    let mut sorted = got.clone();
    sorted.sort_by_key(|v| v.as_u64());
    assert_eq!(sorted, sent, "each event once");
    assert_ne!(got, sent, "shuffled");
}

#[test]
fn the_capture_endpoint_keeps_bodies_and_can_stand_in_for_a_receiver() {
    let mut s = setup();
    let reply = s.c.send(
        "POST",
        "/__capture/alerts",
        &[("Content-Type", "application/json")],
        br#"{"alert":"sync failing"}"#,
    );
    assert_eq!(reply.status, 200);
    let reply =
        s.c.send("POST", "/__capture/alerts?status=503", &[], b"plain text");
    assert_eq!(reply.status, 503);
    assert_eq!(s.c.send("GET", "/__capture/alerts", &[], b"").status, 405);
    let captured = s.c.admin("GET", "captures/alerts", Value::Null);
    assert_eq!(captured[0]["body"]["alert"], "sync failing");
    assert_eq!(captured[1]["body"], "plain text");
    assert_eq!(captured[1]["query"], "status=503");
    assert_eq!(s.c.admin("GET", "captures", Value::Null)["alerts"], 2);
    assert!(
        s.c.admin("GET", "requests", Value::Null)
            .as_array()
            .unwrap()
            .is_empty(),
        "not logged"
    );

    // The stand-in delivering to itself.
    let url = format!("{}/__capture/hooks", s.standin.url);
    s.hook(&url, "v2.0", &[("Change Events", "create")]);
    s.mutate(json!({"action": "add", "resource": "change_events", "project_id": 1_001_001}));
    let deadline = Instant::now() + Duration::from_secs(10);
    let captured = loop {
        let captured = s.c.admin("GET", "captures/hooks", Value::Null);
        if !captured.as_array().unwrap().is_empty() || Instant::now() > deadline {
            break captured;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(captured[0]["body"]["resource_name"], "Change Events");
    assert_eq!(
        captured[0]["headers"]["authorization"], SECRET,
        "what the receiver got"
    );
    s.c.admin("DELETE", "captures", Value::Null);
    assert_eq!(s.c.admin("GET", "captures", Value::Null), json!({}));

    s.c.admin("DELETE", "webhooks", Value::Null);
    assert_eq!(s.c.admin("GET", "webhooks/hooks", Value::Null), json!([]));
    assert_eq!(
        s.c.admin("GET", "webhooks/config", Value::Null)["backoff_cap_ms"],
        3_600_000
    );
}

#[test]
fn https_destinations_are_trusted_through_the_ca_file() {
    let dir = std::env::temp_dir().join(format!("standin-hooks-tls-{}", std::process::id()));
    let receiver = procore_standin::start(procore_standin::Options {
        tls_dir: Some(dir.clone()),
        ..procore_standin::Options::default()
    })
    .unwrap();
    let mut s = setup();
    s.config(json!({"backoff_start_ms": 50, "backoff_cap_ms": 50}));
    let hook = s.hook(
        &format!("{}/__capture/tls", receiver.url),
        "v2.0",
        &[("RFIs", "update")],
    );
    s.mutate(edit_rfi());
    // Without the CA the receiver's certificate is refused, and the try fails.
    let failed = s.admin_deliveries_until(|d| !d.is_empty());
    assert_eq!(failed[0]["outcome"], "retried");
    assert!(failed[0]["response_error"].is_string());

    let ca = dir.join("ca.pem").to_string_lossy().into_owned();
    s.config(json!({"ca_file": ca}));
    let all = s.admin_deliveries_until(|d| d.iter().any(|a| a["outcome"] == "ok"));
    let ok = all.iter().find(|a| a["outcome"] == "ok").unwrap();
    assert_eq!(ok["response_status"], 200);
    assert_eq!(
        s.deliveries(hook, "successful")[0]["response_body"],
        r#"{"ok":true}"#
    );

    let bad = s.c.send(
        "POST",
        "/__admin/webhooks/config",
        &[],
        br#"{"ca_file": "/nonexistent/ca.pem"}"#,
    );
    assert_eq!(bad.status, 400);
    let _ = std::fs::remove_dir_all(dir);
}
