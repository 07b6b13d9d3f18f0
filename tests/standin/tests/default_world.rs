//! The default world, pinned: its records, ids, pages and the answers of paths that the
//! optional catalog (`"catalog"` in the world) serves. The extension's end-to-end tests
//! and benchmarks rely on this world being exactly the same from one version to the
//! next, so these values were taken before the catalog existed and must never move.

mod common;

use common::{server, Client};
use procore_standin::World;
use serde_json::{json, Value};

/// FNV-1a over the bytes: a stable digest of a whole response body.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn token(c: &mut Client, login: &str) -> String {
    c.admin("POST", "tokens", json!({ "login": login }))["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

fn ids(reply: &Value) -> Vec<u64> {
    reply
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_default_world_lists_exactly_what_it_always_did() {
    let standin = server(World::default());
    let mut c = Client::new(&standin);

    let world = c.admin("GET", "world", json!(null));
    assert_eq!(
        world,
        json!({
            "users": 30, "companies_per_user": 1, "projects_per_company": 2,
            "records_per_resource": 25, "per_page_default": 100, "access_token_ttl_s": 5400,
            "rate_limit_spike": 25, "rate_limit_hour": 3600, "retry_after_header": true,
            "latency_ms": 0, "client_id": "standin-client", "client_secret": "standin-secret",
        })
    );

    let records = c.send("GET", "/__admin/records", &[], b"");
    assert_eq!(records.status, 200);
    let listed = records.json();
    let listed = listed.as_array().unwrap();
    // 30 users x (1 company + 25 vendors + 2 projects x (1 + 6 tools x 25)).
    assert_eq!(listed.len(), 9840);
    assert_eq!(
        listed[0],
        json!({"resource": "companies", "company_id": 1001, "project_id": null,
               "id": 1001, "updated_at": "2026-01-01T00:01:00Z"})
    );
    assert_eq!(
        listed[listed.len() - 1],
        json!({"resource": "change_events", "company_id": 30001, "project_id": 30_001_002,
               "id": 3_000_100_200_025u64, "updated_at": "2026-01-01T00:25:00Z"})
    );
    let mut resources: Vec<&str> = listed
        .iter()
        .map(|r| r["resource"].as_str().unwrap())
        .collect();
    resources.sort_unstable();
    resources.dedup();
    assert_eq!(
        resources,
        [
            "change_events",
            "companies",
            "observations",
            "project_users",
            "projects",
            "punch_items",
            "rfis",
            "submittals",
            "vendors"
        ]
    );
    assert_eq!(
        digest(&records.body),
        0x5bea_4f3a_ddd6_28c7,
        "records digest"
    );

    let t = token(&mut c, "user-2");
    let page = c.get(
        "/rest/v1.0/projects/2001002/rfis?per_page=10&page=2",
        &t,
        Some(2001),
    );
    assert_eq!(page.status, 200);
    assert_eq!(page.header("total"), Some("25"));
    assert_eq!(
        ids(&page.json()),
        (11..=20).map(|i| 200_100_200_000 + i).collect::<Vec<u64>>()
    );
    assert_eq!(digest(&page.body), 0xc73d_1db9_7e43_a945, "rfi page digest");
    let punch = c.get("/rest/v1.1/punch_items?project_id=2001001", &t, Some(2001));
    assert_eq!(
        digest(&punch.body),
        0xd0e7_bc6e_99f8_fbc1,
        "punch items digest"
    );

    // The catalog's paths answer as they did before the catalog existed.
    let answers = [
        ("/rest/v1.1/projects/2001001/drawing_areas", 404),
        (
            "/rest/v1.1/drawing_areas/200100100001/drawings?project_id=2001001",
            404,
        ),
        ("/rest/v1.0/folders?project_id=2001001", 404),
        ("/rest/v1.0/projects/2001001/rfis/200100100001/replies", 404),
        ("/rest/v1.0/projects/2001001/manpower_logs", 404),
        ("/rest/v1.0/work_order_contracts?project_id=2001001", 404),
        ("/rest/v1.0/projects/2001001/rfis/recycle_bin", 404),
        ("/rest/v1.1/punch_items/recycle_bin?project_id=2001001", 404),
        (
            "/rest/v1.0/projects/2001001/recycle_bin/observations/items",
            404,
        ),
    ];
    let mut bodies = Vec::new();
    for (path, status) in answers {
        let reply = c.get(path, &t, Some(2001));
        assert_eq!(reply.status, status, "{path}");
        bodies.push(reply.json());
    }
    assert_eq!(
        bodies[6],
        json!({"errors": "rfis \"recycle_bin\" not found"}),
        "read as an RFI's detail route, as before"
    );
    assert_eq!(
        bodies[0],
        json!({"errors": "No route matches /rest/v1.1/projects/2001001/drawing_areas"})
    );
    // `filters[include_deleted]` is not a parameter of the default world: ignored.
    c.admin(
        "POST",
        "mutate",
        json!({"action": "delete", "resource": "change_events", "id": 200_100_100_001u64}),
    );
    let events = c.get(
        "/rest/v1.0/change_events?project_id=2001001&filters[include_deleted]=only",
        &t,
        Some(2001),
    );
    assert_eq!(events.status, 200);
    assert_eq!(ids(&events.json()).len(), 24);
    let log = c.admin("GET", "requests?since=0", json!(null));
    let resources: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(resources[2], &Value::Null, "drawing areas: no resource");
    assert_eq!(resources[8], &json!("rfis"));
    let unknown = c.send(
        "POST",
        "/__admin/mutate",
        &[],
        br#"{"action":"add","resource":"drawings","project_id":2001001}"#,
    );
    assert_eq!(unknown.status, 400);
}
