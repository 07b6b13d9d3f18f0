//! Detail ("show") routes: one record through its list's path plus `/{id}`, under the
//! same authentication, company header, access, privacy, rate limits, faults, log and
//! served accounting as the lists.

mod common;

use common::{server, Client};
use procore_standin::World;
use serde_json::{json, Value};

const PRIVATE_RFI: u64 = 100_100_100_003;

/// user-1 owns company 1001 (projects 1001001, 1001002); user-2 is a member limited to
/// 1001001; one RFI of 1001001 is private to user-2.
fn world() -> Value {
    json!({
        "users": 2,
        "projects_per_company": 2,
        "records_per_resource": 4,
        "rate_limit_spike": 100000,
        "members": [{"login": "user-2", "company_id": 1001, "projects": [1001001]}],
        "private_records": [{"resource": "rfis", "id": PRIVATE_RFI, "visible_to": ["user-2"]}],
    })
}

fn start() -> (procore_standin::Running, Client) {
    let standin = server(World::default());
    let mut c = Client::new(&standin);
    c.admin("PUT", "world", world());
    (standin, c)
}

fn token(c: &mut Client, login: &str) -> String {
    c.admin("POST", "tokens", json!({ "login": login }))["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The detail path of `id` from a list path: `/{id}` on the path, the query kept.
fn detail(list: &str, id: u64) -> String {
    match list.split_once('?') {
        Some((path, query)) => format!("{path}/{id}?{query}"),
        None => format!("{list}/{id}"),
    }
}

/// (resource, list path, company header) of every list user-1 can read in 1001001.
fn lists() -> Vec<(&'static str, String, Option<u64>)> {
    let p = 1_001_001;
    vec![
        ("companies", "/rest/v1.0/companies".to_string(), None),
        (
            "projects",
            "/rest/v1.0/projects?company_id=1001".to_string(),
            Some(1001),
        ),
        (
            "vendors",
            "/rest/v1.0/vendors?company_id=1001".to_string(),
            Some(1001),
        ),
        (
            "project_users",
            format!("/rest/v1.0/projects/{p}/users"),
            Some(1001),
        ),
        ("rfis", format!("/rest/v1.0/projects/{p}/rfis"), Some(1001)),
        (
            "submittals",
            format!("/rest/v1.1/projects/{p}/submittals"),
            Some(1001),
        ),
        (
            "punch_items",
            format!("/rest/v1.1/punch_items?project_id={p}"),
            Some(1001),
        ),
        (
            "observations",
            format!("/rest/v1.0/observations/items?project_id={p}"),
            Some(1001),
        ),
        (
            "change_events",
            format!("/rest/v1.0/change_events?project_id={p}"),
            Some(1001),
        ),
    ]
}

#[test]
fn every_visible_record_is_shown_exactly_as_its_list_entry() {
    let (_standin, mut c) = start();
    let t1 = token(&mut c, "user-1");
    for (resource, list, company) in lists() {
        let listed = c.get(&list, &t1, company);
        assert_eq!(listed.status, 200, "{list}");
        let entries = listed.json();
        let entries = entries.as_array().unwrap();
        assert!(!entries.is_empty(), "{list}");
        for entry in entries {
            let id = entry["id"].as_u64().unwrap();
            let path = detail(&list, id);
            let shown = c.get(&path, &t1, company);
            assert_eq!(shown.status, 200, "{path}");
            assert_eq!(&shown.json(), entry, "{path}");
            assert!(shown.header("x-rate-limit-remaining").is_some(), "{path}");
            assert!(shown.header("link").is_none() && shown.header("total").is_none());
            let served = c.admin("GET", "served", json!(null));
            let company_id = if resource == "companies" { id } else { 1001 };
            assert!(
                served
                    .as_array()
                    .unwrap()
                    .contains(&json!({"resource": resource, "company_id": company_id, "id": id})),
                "{path} served"
            );
        }
    }
    // Edits show up, additions can be fetched, and list parameters do not apply.
    let rfis = "/rest/v1.0/projects/1001001/rfis";
    let rfi = 100_100_100_002u64;
    c.admin(
        "POST",
        "mutate",
        json!({"action": "edit", "resource": "rfis", "id": rfi}),
    );
    let shown = c.get(
        &format!("{}?page=9&per_page=1", detail(rfis, rfi)),
        &t1,
        Some(1001),
    );
    assert_eq!(shown.status, 200);
    assert!(shown.json()["subject"]
        .as_str()
        .unwrap()
        .ends_with(" (edited)"));
    let added = c.admin(
        "POST",
        "mutate",
        json!({"action": "add", "resource": "rfis", "project_id": 1001001}),
    )["id"]
        .as_u64()
        .unwrap();
    assert_eq!(c.get(&detail(rfis, added), &t1, Some(1001)).status, 200);
}

#[test]
fn missing_deleted_foreign_and_hidden_records_are_404() {
    let (_standin, mut c) = start();
    let t1 = token(&mut c, "user-1");
    let t2 = token(&mut c, "user-2");
    let rfis = "/rest/v1.0/projects/1001001/rfis";
    let not_found = |c: &mut Client, path: &str, t: &str, company: Option<u64>| {
        let reply = c.get(path, t, company);
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply.json()["errors"].is_string(), "{path}");
        assert!(reply.header("x-rate-limit-remaining").is_some(), "{path}");
    };

    // Deleted: gone from the list and from its detail route; restored, back again.
    let rfi = 100_100_100_001u64;
    c.admin(
        "POST",
        "mutate",
        json!({"action": "delete", "resource": "rfis", "id": rfi}),
    );
    not_found(&mut c, &detail(rfis, rfi), &t1, Some(1001));
    c.admin(
        "POST",
        "mutate",
        json!({"action": "restore", "resource": "rfis", "id": rfi}),
    );
    assert_eq!(c.get(&detail(rfis, rfi), &t1, Some(1001)).status, 200);

    // Private to user-2: 404 for user-1 (its list leaves it out), 200 for user-2.
    not_found(&mut c, &detail(rfis, PRIVATE_RFI), &t1, Some(1001));
    assert_eq!(
        c.get(&detail(rfis, PRIVATE_RFI), &t2, Some(1001)).status,
        200
    );

    // Another project's record, named under a project the login can open.
    let other = "/rest/v1.0/projects/1001002/rfis";
    not_found(&mut c, &detail(other, rfi), &t1, Some(1001));
    let punch = 100_100_100_002u64;
    not_found(
        &mut c,
        &format!("/rest/v1.1/punch_items/{punch}?project_id=1001002"),
        &t1,
        Some(1001),
    );
    // Never made, or not an id at all.
    not_found(&mut c, &detail(rfis, 100_100_100_099), &t1, Some(1001));
    not_found(&mut c, &format!("{rfis}/abc"), &t1, Some(1001));
    // Another company's vendor and project, a company the login does not belong to, a
    // project of a shared company the member may not open.
    not_found(
        &mut c,
        "/rest/v1.0/vendors/200100001?company_id=1001",
        &t1,
        Some(1001),
    );
    not_found(
        &mut c,
        "/rest/v1.0/projects/2001001?company_id=1001",
        &t1,
        Some(1001),
    );
    not_found(&mut c, "/rest/v1.0/companies/2001", &t1, None);
    not_found(
        &mut c,
        "/rest/v1.0/projects/1001002?company_id=1001",
        &t2,
        Some(1001),
    );
    assert_eq!(
        c.get("/rest/v1.0/companies/1001", &t2, None).status,
        200,
        "a member's shared company"
    );
    // A deleted project takes its records' detail routes with it.
    c.admin(
        "POST",
        "mutate",
        json!({"action": "delete", "resource": "projects", "id": 1001002}),
    );
    not_found(&mut c, &detail(other, 100_100_200_001), &t1, Some(1001));
    not_found(
        &mut c,
        "/rest/v1.0/projects/1001002?company_id=1001",
        &t1,
        Some(1001),
    );

    // Nothing above was served; the visible fetches were.
    let served = c.admin("GET", "served", json!(null));
    let served = served.as_array().unwrap();
    assert!(served.contains(&json!({"resource": "rfis", "company_id": 1001, "id": rfi})));
    assert!(served.contains(&json!({"resource": "rfis", "company_id": 1001, "id": PRIVATE_RFI})));
    assert!(!served.iter().any(|k| k["resource"] == "vendors"
        || k["resource"] == "punch_items"
        || k["resource"] == "projects"
        || k["id"] == 2001));
}

#[test]
fn scopes_are_checked_as_for_lists() {
    let (_standin, mut c) = start();
    let t1 = token(&mut c, "user-1");
    let t2 = token(&mut c, "user-2");
    let rfi = "/rest/v1.0/projects/1001001/rfis/100100100001";
    assert_eq!(c.get(rfi, &t1, None).status, 403, "no company header");
    assert_eq!(c.get(rfi, &t1, Some(2001)).status, 403, "wrong company");
    assert_eq!(c.get(rfi, &t2, Some(1001)).status, 200, "member");
    let forbidden = c.get(
        "/rest/v1.0/projects/1001002/rfis/100100200001",
        &t2,
        Some(1001),
    );
    assert_eq!(forbidden.status, 403, "a project the member may not open");
    assert!(forbidden.json()["errors"]
        .as_str()
        .unwrap()
        .contains("permission"));
    assert_eq!(
        c.get(
            "/rest/v1.0/projects/2001001/rfis/200100100001",
            &t1,
            Some(2001)
        )
        .status,
        404,
        "a company the login cannot reach"
    );
    assert_eq!(
        c.get("/rest/v1.0/vendors/100100001", &t1, Some(1001))
            .status,
        400,
        "company_id is required"
    );
    assert_eq!(
        c.get(rfi, "not-a-token", Some(1001)).status,
        401,
        "authenticated like the lists"
    );
    let post = c.send(
        "POST",
        rfi,
        &[("Authorization", &format!("Bearer {t1}"))],
        b"",
    );
    assert_eq!(post.status, 405);
}

#[test]
fn details_are_logged_counted_rate_limited_and_faulted_like_lists() {
    let (standin, mut c) = start();
    c.admin(
        "PUT",
        "world",
        json!({"users": 2, "records_per_resource": 4, "rate_limit_spike": 3}),
    );
    let t1 = token(&mut c, "user-1");
    let path = "/rest/v1.1/punch_items/100100100002";
    let target = format!("{path}?project_id=1001001");
    assert_eq!(c.get(&target, &t1, Some(1001)).status, 200);
    let missing = "/rest/v1.1/punch_items/100100100009?project_id=1001001";
    assert_eq!(c.get(missing, &t1, Some(1001)).status, 404);

    let log = c.admin("GET", "requests?since=0", json!(null));
    let log = log.as_array().unwrap();
    let entry = log.iter().find(|e| e["path"] == path).unwrap();
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["query"], "project_id=1001001");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["login"], "user-1");
    assert_eq!(entry["resource"], "punch_items");
    assert_eq!(entry["company_id"], 1001);
    assert_eq!(entry["project_id"], 1_001_001);
    assert!(log
        .iter()
        .any(|e| e["path"] == "/rest/v1.1/punch_items/100100100009" && e["status"] == 404));
    let company = c.get("/rest/v1.0/companies/1001", &t1, None);
    assert_eq!(company.status, 200);
    let log = c.admin("GET", "requests?since=2", json!(null));
    assert_eq!(log[0]["path"], "/rest/v1.0/companies/1001");
    assert_eq!(log[0]["resource"], "companies");
    assert_eq!(log[0]["company_id"], 1001);
    let stats = c.admin("GET", "stats", json!(null));
    assert_eq!(stats["by_resource"]["punch_items"], 2);
    assert_eq!(stats["by_resource"]["companies"], 1);

    // The spike window (3) is used up: the fourth request is a 429.
    let limited = c.get(&target, &t1, Some(1001));
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());

    // Fault rules match detail paths; a truncated detail is never served.
    c.admin(
        "PUT",
        "world",
        json!({"users": 2, "records_per_resource": 4, "rate_limit_spike": 100000}),
    );
    let t1 = token(&mut c, "user-1");
    c.admin(
        "POST",
        "faults",
        json!({"rules": [
            {"kind": "status", "status": 503, "path": "/punch_items/100100100002", "times": 1},
            {"kind": "truncate", "path": "/punch_items/100100100003", "times": 1},
        ]}),
    );
    let faulted = c.get(&target, &t1, Some(1001));
    assert_eq!(
        (faulted.status, faulted.json()),
        (503, json!({"errors": "injected"}))
    );
    let cut = raw_get(
        standin.addr,
        "/rest/v1.1/punch_items/100100100003?project_id=1001001",
        &t1,
    );
    let text = String::from_utf8_lossy(&cut).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let served = c.admin("GET", "served", json!(null));
    assert_eq!(served, json!([]), "a cut response is not served");
    assert_eq!(c.get(&target, &t1, Some(1001)).status, 200);
    let served = c.admin("GET", "served", json!(null));
    assert_eq!(
        served,
        json!([{"resource": "punch_items", "company_id": 1001, "id": 100_100_100_002u64}])
    );
}

/// One request on its own connection, reading until the server closes.
fn raw_get(addr: std::net::SocketAddr, target: &str, token: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nProcore-Company-Id: 1001\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}
