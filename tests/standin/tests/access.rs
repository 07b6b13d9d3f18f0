//! Per-login visibility: shared companies with per-project access, private records, and
//! changing both at runtime, checked by walking the API as each login.

mod common;

use common::{server, Client};
use procore_standin::World;
use serde_json::{json, Value};

const PRIVATE_RFI: u64 = 100_100_100_003;

/// user-1 owns company 1001 (projects 1001001..1001003); user-2 is a member limited to
/// 1001001, user-3 a member seeing all of it; one RFI of 1001001 is private to user-2.
fn shared_world() -> Value {
    json!({
        "users": 3,
        "projects_per_company": 3,
        "records_per_resource": 5,
        // The walks below make a few hundred requests.
        "rate_limit_spike": 100000,
        "members": [
            {"login": "user-2", "company_id": 1001, "projects": [1001001]},
            {"login": "user-3", "company_id": 1001},
        ],
        "private_records": [
            {"resource": "rfis", "id": PRIVATE_RFI, "visible_to": ["user-2"]},
        ],
    })
}

fn start_with(world: Value) -> (procore_standin::Running, Client) {
    let standin = server(World::default());
    let mut c = Client::new(&standin);
    c.admin("PUT", "world", world);
    (standin, c)
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

/// (resource, company_id, project_id, id), the identity `/__admin/records` gives.
type Key = (String, u64, Option<u64>, u64);

/// Every page of one list, two records a page, checking that `Total` counts exactly
/// the records the pages hold.
fn list_all(c: &mut Client, token: &str, path: &str, company: u64) -> Vec<u64> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut all = Vec::new();
    let mut total = None;
    for page in 1.. {
        let reply = c.get(
            &format!("{path}{sep}per_page=2&page={page}"),
            token,
            Some(company),
        );
        assert_eq!(
            reply.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        total = Some(reply.header("total").unwrap().parse::<usize>().unwrap());
        let got = ids(&reply.json());
        let more = reply.header("link").unwrap().contains("rel=\"next\"");
        all.extend(got);
        if !more {
            break;
        }
    }
    assert_eq!(
        Some(all.len()),
        total,
        "{path}: Total vs what the pages held"
    );
    all
}

fn tool_paths(project: u64) -> [(&'static str, String); 6] {
    [
        (
            "project_users",
            format!("/rest/v1.0/projects/{project}/users"),
        ),
        ("rfis", format!("/rest/v1.0/projects/{project}/rfis")),
        (
            "submittals",
            format!("/rest/v1.1/projects/{project}/submittals"),
        ),
        (
            "punch_items",
            format!("/rest/v1.1/punch_items?project_id={project}"),
        ),
        (
            "observations",
            format!("/rest/v1.0/observations/items?project_id={project}"),
        ),
        (
            "change_events",
            format!("/rest/v1.0/change_events?project_id={project}"),
        ),
    ]
}

/// Everything a login can reach through the API, in `/__admin/records` order.
fn walk(c: &mut Client, token: &str) -> Vec<Key> {
    let mut keys = Vec::new();
    let companies = c.get("/rest/v1.0/companies", token, None);
    assert_eq!(companies.status, 200);
    for company in ids(&companies.json()) {
        keys.push(("companies".to_string(), company, None, company));
        let vendors = format!("/rest/v1.0/vendors?company_id={company}");
        for id in list_all(c, token, &vendors, company) {
            keys.push(("vendors".to_string(), company, None, id));
        }
        let projects = format!("/rest/v1.0/projects?company_id={company}");
        for project in list_all(c, token, &projects, company) {
            keys.push(("projects".to_string(), company, None, project));
            for (resource, path) in tool_paths(project) {
                for id in list_all(c, token, &path, company) {
                    keys.push((resource.to_string(), company, Some(project), id));
                }
            }
        }
    }
    keys
}

fn admin_records(c: &mut Client, query: &str) -> Vec<Key> {
    c.admin("GET", &format!("records{query}"), json!(null))
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resource"].as_str().unwrap().to_string(),
                r["company_id"].as_u64().unwrap(),
                r["project_id"].as_u64(),
                r["id"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn count(keys: &[Key], resource: &str, company: u64) -> usize {
    keys.iter()
        .filter(|k| k.0 == resource && k.1 == company)
        .count()
}

fn status_as(c: &mut Client, token: &str, path: &str, company: u64) -> u16 {
    c.get(path, token, Some(company)).status
}

#[test]
fn logins_sharing_a_company_each_see_exactly_their_projects_and_records() {
    let (_standin, mut c) = start_with(shared_world());
    let t1 = token(&mut c, "user-1");
    let t2 = token(&mut c, "user-2");
    let t3 = token(&mut c, "user-3");

    let companies = |c: &mut Client, t: &str| ids(&c.get("/rest/v1.0/companies", t, None).json());
    assert_eq!(companies(&mut c, &t1), vec![1001]);
    assert_eq!(companies(&mut c, &t2), vec![1001, 2001]);
    assert_eq!(companies(&mut c, &t3), vec![1001, 3001]);

    let projects = "/rest/v1.0/projects?company_id=1001";
    assert_eq!(list_all(&mut c, &t1, projects, 1001).len(), 3);
    assert_eq!(list_all(&mut c, &t2, projects, 1001), vec![1_001_001]);
    assert_eq!(list_all(&mut c, &t3, projects, 1001).len(), 3);
    let vendors = "/rest/v1.0/vendors?company_id=1001";
    assert_eq!(
        list_all(&mut c, &t2, vendors, 1001),
        list_all(&mut c, &t1, vendors, 1001),
        "vendors are company-level: every member sees them"
    );

    // A project of a reachable company without access is Procore's "no permission".
    for (_, path) in tool_paths(1_001_002) {
        let reply = c.get(&path, &t2, Some(1001));
        assert_eq!(reply.status, 403, "{path}");
        assert!(reply.json()["errors"].is_string());
        assert!(reply.header("x-rate-limit-remaining").is_some());
    }
    assert_eq!(
        status_as(&mut c, &t3, "/rest/v1.0/projects/1001002/rfis", 1001),
        200
    );
    // Companies the login cannot reach at all stay unknown.
    assert_eq!(
        status_as(&mut c, &t1, "/rest/v1.0/projects/2001001/rfis", 2001),
        404
    );
    assert_eq!(
        status_as(&mut c, &t2, "/rest/v1.0/vendors?company_id=3001", 3001),
        404
    );
    // The company header must name the shared company, not the member's own.
    assert_eq!(
        status_as(&mut c, &t2, "/rest/v1.0/projects/1001001/rfis", 2001),
        403
    );

    // The private RFI: only user-2 lists it, and every Total agrees with the pages.
    let rfis = "/rest/v1.0/projects/1001001/rfis";
    let seen_by = |c: &mut Client, t: &str| list_all(c, t, rfis, 1001);
    assert!(seen_by(&mut c, &t2).contains(&PRIVATE_RFI));
    assert_eq!(seen_by(&mut c, &t2).len(), 5);
    for t in [&t1, &t3] {
        let seen = seen_by(&mut c, t);
        assert!(!seen.contains(&PRIVATE_RFI));
        assert_eq!(seen.len(), 4);
    }
    let page = c.get(&format!("{rfis}?per_page=2&page=2"), &t1, Some(1001));
    assert_eq!(ids(&page.json()), vec![100_100_100_004, 100_100_100_005]);
    assert!(!page.header("link").unwrap().contains("rel=\"next\""));

    // The admin view per login is exactly what walking the API as that login returns.
    for (login, t) in [("user-1", &t1), ("user-2", &t2), ("user-3", &t3)] {
        let walked = walk(&mut c, t);
        assert_eq!(
            admin_records(&mut c, &format!("?login={login}")),
            walked,
            "{login}"
        );
        if login == "user-2" {
            assert_eq!(count(&walked, "projects", 1001), 1);
            assert_eq!(count(&walked, "rfis", 1001), 5);
            assert_eq!(count(&walked, "projects", 2001), 3);
        }
    }
    // Without a login nothing changes: every record once, private or not.
    let all = admin_records(&mut c, "");
    assert_eq!(all.len(), 3 * (1 + 5 + 3 * (1 + 6 * 5)));
    assert!(all.iter().any(|k| k.0 == "rfis" && k.3 == PRIVATE_RFI));

    let served = c.admin("GET", "served", json!(null));
    assert!(served
        .as_array()
        .unwrap()
        .contains(&json!({"resource": "rfis", "company_id": 1001, "id": PRIVATE_RFI})));
    let unknown = c.send("GET", "/__admin/records?login=user-9", &[], b"");
    assert_eq!(unknown.status, 404);
}

#[test]
fn access_and_privacy_change_at_runtime_without_new_tokens() {
    let (_standin, mut c) = start_with(json!({
        "users": 2,
        "projects_per_company": 2,
        "records_per_resource": 3,
        "rate_limit_spike": 100000,
    }));
    let t1 = token(&mut c, "user-1");
    let t2 = token(&mut c, "user-2");
    let companies = |c: &mut Client, t: &str| ids(&c.get("/rest/v1.0/companies", t, None).json());
    let p1 = "/rest/v1.0/projects/1001001/rfis";
    let p2 = "/rest/v1.0/projects/1001002/rfis";
    assert_eq!(companies(&mut c, &t2), vec![2001]);
    assert_eq!(status_as(&mut c, &t2, p1, 1001), 404);

    let access = |c: &mut Client, projects: Value| {
        c.admin(
            "POST",
            "access",
            json!({"login": "user-2", "company_id": 1001, "projects": projects}),
        )
    };
    assert_eq!(access(&mut c, json!([1_001_002])), json!({"ok": true}));
    assert_eq!(companies(&mut c, &t2), vec![1001, 2001]);
    assert_eq!(status_as(&mut c, &t2, p1, 1001), 403);
    assert_eq!(status_as(&mut c, &t2, p2, 1001), 200);
    access(&mut c, json!("all"));
    assert_eq!(status_as(&mut c, &t2, p1, 1001), 200);
    assert_eq!(
        admin_records(&mut c, "?login=user-2"),
        walk(&mut c, &t2),
        "after a runtime grant"
    );
    access(&mut c, json!(null));
    assert_eq!(companies(&mut c, &t2), vec![2001]);
    assert_eq!(status_as(&mut c, &t2, p1, 1001), 404);
    assert_eq!(status_as(&mut c, &t2, "/rest/v1.0/companies", 2001), 200);

    // Owners can be limited too, and given everything back.
    let owner = |c: &mut Client, projects: Value| {
        c.admin(
            "POST",
            "access",
            json!({"login": "user-1", "company_id": 1001, "projects": projects}),
        )
    };
    owner(&mut c, json!([1_001_002]));
    assert_eq!(status_as(&mut c, &t1, p1, 1001), 403);
    owner(&mut c, json!("all"));
    assert_eq!(status_as(&mut c, &t1, p1, 1001), 200);

    // Privacy: set, then cleared.
    access(&mut c, json!("all"));
    let rfi = 100_100_100_002u64;
    let private = |c: &mut Client, visible_to: Value| {
        c.admin(
            "POST",
            "private",
            json!({"resource": "rfis", "id": rfi, "visible_to": visible_to}),
        )
    };
    let rfis_of = |c: &mut Client, t: &str| list_all(c, t, p1, 1001);
    assert_eq!(private(&mut c, json!(["user-1"])), json!({"ok": true}));
    assert!(rfis_of(&mut c, &t1).contains(&rfi));
    assert!(!rfis_of(&mut c, &t2).contains(&rfi));
    private(&mut c, json!(null));
    assert!(rfis_of(&mut c, &t2).contains(&rfi));

    // Mutations reach members: a deletion hides the record from everyone, an addition
    // in a shared project shows up for the member who can open it.
    c.admin(
        "POST",
        "mutate",
        json!({"action": "delete", "resource": "rfis", "id": rfi}),
    );
    assert!(!rfis_of(&mut c, &t1).contains(&rfi));
    assert!(!rfis_of(&mut c, &t2).contains(&rfi));
    let added = c.admin(
        "POST",
        "mutate",
        json!({"action": "add", "resource": "rfis", "project_id": 1001002}),
    )["id"]
        .as_u64()
        .unwrap();
    assert!(list_all(&mut c, &t2, p2, 1001).contains(&added));
    assert!(admin_records(&mut c, "?login=user-2")
        .iter()
        .any(|k| k.0 == "rfis" && k.3 == added));
    assert!(!admin_records(&mut c, "?login=user-2")
        .iter()
        .any(|k| k.0 == "rfis" && k.3 == rfi));

    // The log and the stats carry the member's requests like any other.
    let log = c.admin("GET", "requests?since=0", json!(null));
    let forbidden = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["status"] == 403)
        .unwrap();
    assert_eq!(forbidden["login"], "user-2");
    assert_eq!(forbidden["project_id"], 1_001_001);
    assert!(c.admin("GET", "stats", json!(null))["by_status"]["403"].as_u64() >= Some(2));

    // A new world starts over: memberships made at runtime are gone.
    c.admin("PUT", "world", json!({"users": 2}));
    let t2 = token(&mut c, "user-2");
    assert_eq!(companies(&mut c, &t2), vec![2001]);
}

#[test]
fn admin_access_routes_refuse_what_does_not_exist_or_make_sense() {
    let (_standin, mut c) = start_with(json!({"users": 2}));
    let post = |c: &mut Client, route: &str, body: Value| {
        c.send(
            "POST",
            &format!("/__admin/{route}"),
            &[],
            body.to_string().as_bytes(),
        )
        .status
    };
    let cases = [
        (
            "access",
            json!({"login": "user-9", "company_id": 1001, "projects": "all"}),
            404,
        ),
        (
            "access",
            json!({"login": "user-2", "company_id": 9001, "projects": "all"}),
            404,
        ),
        (
            "access",
            json!({"login": "user-2", "company_id": 1001, "projects": [2001001]}),
            404,
        ),
        (
            "access",
            json!({"login": "user-2", "company_id": 1001, "projects": "some"}),
            400,
        ),
        (
            "access",
            json!({"login": "user-2", "company_id": 1001}),
            400,
        ),
        (
            "access",
            json!({"login": "user-2", "company": 1001, "projects": "all"}),
            400,
        ),
        (
            "private",
            json!({"resource": "rfis", "id": 100_100_100_099u64, "visible_to": null}),
            404,
        ),
        (
            "private",
            json!({"resource": "rfis", "id": 100_100_100_001u64, "visible_to": ["user-9"]}),
            404,
        ),
        (
            "private",
            json!({"resource": "projects", "id": 1001001, "visible_to": ["user-1"]}),
            400,
        ),
        (
            "private",
            json!({"resource": "rfis", "id": 100_100_100_001u64, "visible_to": "user-1"}),
            400,
        ),
        (
            "private",
            json!({"resource": "rfis", "id": 100_100_100_001u64}),
            400,
        ),
    ];
    for (route, body, status) in cases {
        assert_eq!(post(&mut c, route, body.clone()), status, "{route} {body}");
    }
    // Nothing above changed what anyone sees.
    let t2 = token(&mut c, "user-2");
    assert_eq!(
        ids(&c.get("/rest/v1.0/companies", &t2, None).json()),
        vec![2001]
    );
    let bad_world = c.send(
        "PUT",
        "/__admin/world",
        &[],
        br#"{"users": 2, "members": [{"login": "user-1", "company_id": 1001}]}"#,
    );
    assert_eq!(bad_world.status, 400, "an owner is not a member");
}

#[test]
fn worlds_without_the_new_fields_read_back_and_list_as_before() {
    let (_standin, mut c) = start_with(json!({"users": 2, "records_per_resource": 2}));
    let world = c.admin("GET", "world", json!(null));
    for field in ["members", "owner_projects", "private_records"] {
        assert!(world.get(field).is_none(), "{field} in {world}");
    }
    let t1 = token(&mut c, "user-1");
    let walked = walk(&mut c, &t1);
    assert_eq!(admin_records(&mut c, "?login=user-1"), walked);
    let everything = admin_records(&mut c, "");
    let owned: Vec<Key> = everything.into_iter().filter(|k| k.1 == 1001).collect();
    assert_eq!(walked, owned, "user-1 sees all it owns and nothing else");

    let shared = c.admin(
        "PUT",
        "world",
        json!({"users": 2, "members": [{"login": "user-2", "company_id": 1001, "projects": null}]}),
    );
    assert_eq!(
        shared["world"]["members"],
        json!([{"login": "user-2", "company_id": 1001, "projects": null}])
    );
}
