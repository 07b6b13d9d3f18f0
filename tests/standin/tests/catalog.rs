//! The optional catalog (`"catalog"` in the world): nested lists (drawing areas →
//! drawings, folder → subfolder → files, RFI → replies), daily logs by date, flat
//! additions with `filters[updated_at]`, recycle bins, `filters[include_deleted]`,
//! hostile names, detail routes, the same auth/scope/log rules as the core lists, and a
//! benchmark-sized world.

mod common;

use common::{server, Client, Reply};
use procore_standin::{Running, World};
use serde_json::{json, Value};

const P: u64 = 1_001_001;
const OTHER: u64 = 1_001_002;
const BAIT: &str = "O'Brien \"quoted\"; DROP TABLE x; -- ünïcødé ✓";
const MARKUP: &str = "<script>alert(\"x\")</script> <b>bold</b> & 'single' \\ backslash";

/// Record `i` of a catalog resource in project P (they share its id space).
fn id(i: u64) -> u64 {
    P * 100_000 + i
}

/// user-1 owns company 1001 (projects P and OTHER); user-2 is a member limited to P.
/// Six records per core resource; the catalog's defaults; "today" is 2026-02-01.
fn world() -> Value {
    json!({
        "users": 2,
        "records_per_resource": 6,
        "rate_limit_spike": 100000,
        "members": [{"login": "user-2", "company_id": 1001, "projects": [P]}],
        "catalog": {"today": "2026-02-01"},
    })
}

fn start(world: Value) -> (Running, Client) {
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

fn ids(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

fn mutate(c: &mut Client, body: Value) -> Value {
    c.admin("POST", "mutate", body)
}

fn mutate_status(c: &mut Client, body: Value) -> u16 {
    c.send("POST", "/__admin/mutate", &[], body.to_string().as_bytes())
        .status
}

/// GET as user-1 with company 1001; asserts the status and returns the reply.
fn get(c: &mut Client, t: &str, path: &str, status: u16) -> Reply {
    let reply = c.get(path, t, Some(1001));
    assert_eq!(
        reply.status,
        status,
        "{path}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply
}

fn folder_path(folder: u64) -> String {
    format!("/rest/v1.0/folders/{folder}?project_id={P}")
}

fn drawings_path(area: u64) -> String {
    format!("/rest/v1.1/drawing_areas/{area}/drawings?project_id={P}")
}

fn replies_path(rfi: u64) -> String {
    format!("/rest/v1.0/projects/{P}/rfis/{rfi}/replies")
}

fn without_children(mut folder: Value) -> Value {
    let map = folder.as_object_mut().unwrap();
    map.remove("folders");
    map.remove("files");
    folder
}

#[test]
fn nested_listings_reach_three_levels_deep() {
    let (_standin, mut c) = start(world());
    let t = token(&mut c, "user-1");

    // Root → folders 2 and 3; folder 2 → subfolders 4 and 5 and files 1..=3; subfolder
    // 4 → files 7..=9 and nothing below.
    let root = get(
        &mut c,
        &t,
        &format!("/rest/v1.0/folders?project_id={P}"),
        200,
    )
    .json();
    assert_eq!(root["id"], id(1));
    assert_eq!(root["parent_id"], Value::Null);
    assert_eq!(root["name"], "Documents");
    assert!(root.get("Total").is_none());
    assert_eq!(ids(&root["folders"]), [id(2), id(3)]);
    assert_eq!(ids(&root["files"]), Vec::<u64>::new());
    let folder = get(&mut c, &t, &folder_path(id(2)), 200);
    assert!(folder.header("link").is_none() && folder.header("total").is_none());
    let folder = folder.json();
    assert_eq!(folder["parent_id"], id(1));
    assert_eq!(ids(&folder["folders"]), [id(4), id(5)]);
    assert_eq!(ids(&folder["files"]), [id(1), id(2), id(3)]);
    assert_eq!(
        without_children(folder.clone()),
        root["folders"][0],
        "a folder is its entry in its parent, plus its children"
    );
    let sub = get(&mut c, &t, &folder_path(id(4)), 200).json();
    assert_eq!(sub["parent_id"], id(2));
    assert_eq!(ids(&sub["folders"]), Vec::<u64>::new());
    assert_eq!(sub["has_children_folders"], false);
    assert_eq!(ids(&sub["files"]), [id(7), id(8), id(9)]);
    assert_eq!(
        sub["name_with_path"],
        format!("Folder 2/Folder 4 {MARKUP}"),
        "the path carries the subfolder's hostile name"
    );
    let file = get(
        &mut c,
        &t,
        &format!("/rest/v1.0/files/{}?project_id={P}", id(7)),
        200,
    )
    .json();
    assert_eq!(file, sub["files"][0]);
    assert_eq!(file["parent_id"], id(4));
    assert_eq!(
        file["name_with_path"],
        format!("Folder 2/Folder 4 {MARKUP}/File 7.pdf")
    );
    let slim = get(
        &mut c,
        &t,
        &format!(
            "{}&exclude_files=true&exclude_folders=true",
            folder_path(id(2))
        ),
        200,
    )
    .json();
    assert_eq!(
        (ids(&slim["folders"]).len(), ids(&slim["files"]).len()),
        (0, 0)
    );
    // Files are reached through folders: there is no list of them.
    get(&mut c, &t, &format!("/rest/v1.0/files?project_id={P}"), 404);

    // Drawing areas → drawings (4 per area, paged like any list).
    let areas = get(
        &mut c,
        &t,
        &format!("/rest/v1.1/projects/{P}/drawing_areas"),
        200,
    );
    assert_eq!(areas.header("total"), Some("5"));
    assert_eq!(ids(&areas.json()), (1..=5).map(id).collect::<Vec<_>>());
    assert_eq!(areas.json()[1]["drawings_count"], 4);
    let drawings = get(
        &mut c,
        &t,
        &format!("{}&per_page=3", drawings_path(id(2))),
        200,
    );
    assert_eq!(drawings.header("total"), Some("4"));
    assert!(drawings.header("link").unwrap().contains("rel=\"next\""));
    let first = drawings.json();
    assert_eq!(ids(&first), [id(5), id(6), id(7)]);
    assert_eq!(first[0]["drawing_area_id"], id(2));
    assert!(first[0]["current_revision"]["revision_number"].is_string());
    let page2 = get(
        &mut c,
        &t,
        &format!("{}&per_page=3&page=2", drawings_path(id(2))),
        200,
    );
    assert_eq!(ids(&page2.json()), [id(8)]);
    // `project_id` is optional (Procore's is); a wrong one is another project's area.
    let bare = get(
        &mut c,
        &t,
        &format!("/rest/v1.1/drawing_areas/{}/drawings", id(2)),
        200,
    );
    assert_eq!(ids(&bare.json()), [id(5), id(6), id(7), id(8)]);
    get(
        &mut c,
        &t,
        &format!(
            "/rest/v1.1/drawing_areas/{}/drawings?project_id={OTHER}",
            id(2)
        ),
        404,
    );

    // RFI → replies (2 per generated RFI).
    let replies = get(&mut c, &t, &replies_path(id(2)), 200).json();
    assert_eq!(ids(&replies), [id(3), id(4)]);
    assert_eq!(replies[0]["rfi_id"], id(2));
    get(
        &mut c,
        &t,
        &format!("{}/{}", replies_path(id(2)), id(4)),
        200,
    );
    get(
        &mut c,
        &t,
        &format!("{}/{}", replies_path(id(1)), id(4)),
        404,
    );

    // Logged and counted under the nested resource, scoped to its project.
    let log = c.admin("GET", "requests?since=0", json!(null));
    let entry = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == format!("/rest/v1.1/drawing_areas/{}/drawings", id(2)))
        .unwrap()
        .clone();
    assert_eq!(
        (
            &entry["resource"],
            &entry["company_id"],
            &entry["project_id"]
        ),
        (&json!("drawings"), &json!(1001), &json!(P))
    );
    let stats = c.admin("GET", "stats", json!(null));
    assert_eq!(stats["by_resource"]["folders"], 4);
    // `GET /files` names no route, so only the file's detail counts.
    assert_eq!(stats["by_resource"]["files"], 1);
    assert_eq!(stats["by_resource"]["rfi_replies"], 3);
    let served = c.admin("GET", "served", json!(null));
    for (resource, i) in [
        ("folders", 4),
        ("files", 9),
        ("drawings", 8),
        ("rfi_replies", 3),
    ] {
        assert!(
            served
                .as_array()
                .unwrap()
                .contains(&json!({"resource": resource, "company_id": 1001, "id": id(i)})),
            "{resource} {i} served"
        );
    }
}

#[test]
fn a_deleted_parent_takes_its_childrens_listings_with_it() {
    let (_standin, mut c) = start(world());
    let t = token(&mut c, "user-1");
    let gone = |c: &mut Client, path: &str| {
        let reply = get(c, &t, path, 404);
        assert!(reply.json()["errors"].is_string(), "{path}");
        assert!(reply.header("x-rate-limit-remaining").is_some());
    };

    // A drawing area: its drawings' list and details are 404 until it is restored.
    mutate(
        &mut c,
        json!({"action": "delete", "resource": "drawing_areas", "id": id(2)}),
    );
    gone(&mut c, &drawings_path(id(2)));
    gone(
        &mut c,
        &format!(
            "/rest/v1.1/drawing_areas/{}/drawings/{}?project_id={P}",
            id(2),
            id(5)
        ),
    );
    let areas = get(
        &mut c,
        &t,
        &format!("/rest/v1.1/projects/{P}/drawing_areas"),
        200,
    );
    assert!(!ids(&areas.json()).contains(&id(2)));
    let records = c.admin("GET", "records", json!(null));
    assert!(!records.as_array().unwrap().iter().any(
        |r| r["resource"] == "drawings" && (id(5)..=id(8)).contains(&r["id"].as_u64().unwrap())
    ));
    assert_eq!(
        mutate_status(
            &mut c,
            json!({"action": "edit", "resource": "drawings", "id": id(5)})
        ),
        404,
        "a drawing inside a deleted area is gone"
    );
    mutate(
        &mut c,
        json!({"action": "restore", "resource": "drawing_areas", "id": id(2)}),
    );
    assert_eq!(
        ids(&get(&mut c, &t, &drawings_path(id(2)), 200).json()).len(),
        4
    );

    // A folder: its subfolders and the files anywhere below it.
    mutate(
        &mut c,
        json!({"action": "delete", "resource": "folders", "id": id(2)}),
    );
    gone(&mut c, &folder_path(id(2)));
    gone(&mut c, &folder_path(id(4)));
    gone(
        &mut c,
        &format!("/rest/v1.0/files/{}?project_id={P}", id(7)),
    );
    gone(
        &mut c,
        &format!("/rest/v1.0/files/{}?project_id={P}", id(1)),
    );
    let root = get(
        &mut c,
        &t,
        &format!("/rest/v1.0/folders?project_id={P}"),
        200,
    )
    .json();
    assert_eq!(ids(&root["folders"]), [id(3)]);
    get(&mut c, &t, &folder_path(id(6)), 200);
    assert_eq!(
        mutate_status(
            &mut c,
            json!({"action": "delete", "resource": "folders", "id": id(1)})
        ),
        400,
        "the root folder stays"
    );

    // An RFI: its replies' list and details.
    mutate(
        &mut c,
        json!({"action": "delete", "resource": "rfis", "id": id(2)}),
    );
    gone(&mut c, &replies_path(id(2)));
    gone(&mut c, &format!("{}/{}", replies_path(id(2)), id(3)));

    // A project: everything in it, as for the core tools.
    mutate(
        &mut c,
        json!({"action": "delete", "resource": "projects", "id": OTHER}),
    );
    gone(
        &mut c,
        &format!("/rest/v1.1/projects/{OTHER}/drawing_areas"),
    );
    gone(&mut c, &format!("/rest/v1.0/folders?project_id={OTHER}"));
}

#[test]
fn nested_records_are_added_into_their_container() {
    let (_standin, mut c) = start(world());
    let t = token(&mut c, "user-1");
    let added = mutate(
        &mut c,
        json!({"action": "add", "resource": "drawings", "parent_id": id(3)}),
    );
    let drawing = added["id"].as_u64().unwrap();
    assert_eq!(drawing, id(21), "after the 20 generated drawings");
    assert_eq!(
        (&added["parent_id"], &added["project_id"]),
        (&json!(id(3)), &json!(P))
    );
    let listed = get(&mut c, &t, &drawings_path(id(3)), 200).json();
    assert_eq!(ids(&listed).last(), Some(&drawing));
    assert_eq!(
        listed.as_array().unwrap().last().unwrap()["drawing_area_id"],
        id(3)
    );
    assert!(!ids(&get(&mut c, &t, &drawings_path(id(2)), 200).json()).contains(&drawing));

    // A fourth level: a folder in a subfolder, a file in that.
    let deep = mutate(
        &mut c,
        json!({"action": "add", "resource": "folders", "parent_id": id(4)}),
    )["id"]
        .as_u64()
        .unwrap();
    let file = mutate(
        &mut c,
        json!({"action": "add", "resource": "files", "parent_id": deep}),
    )["id"]
        .as_u64()
        .unwrap();
    assert_eq!(
        ids(&get(&mut c, &t, &folder_path(id(4)), 200).json()["folders"]),
        [deep]
    );
    let inside = get(&mut c, &t, &folder_path(deep), 200).json();
    assert_eq!(ids(&inside["files"]), [file]);
    assert_eq!(inside["parent_id"], id(4));
    let reply = mutate(
        &mut c,
        json!({"action": "add", "resource": "rfi_replies", "parent_id": id(1), "project_id": P}),
    )["id"]
        .as_u64()
        .unwrap();
    assert_eq!(
        ids(&get(&mut c, &t, &replies_path(id(1)), 200).json()),
        [id(1), id(2), reply]
    );

    for (body, status) in [
        (
            json!({"action": "add", "resource": "drawings", "project_id": P}),
            400,
        ),
        (
            json!({"action": "add", "resource": "meetings", "project_id": P, "parent_id": id(1)}),
            400,
        ),
        (
            json!({"action": "add", "resource": "drawings", "parent_id": id(3), "project_id": OTHER}),
            400,
        ),
        (
            json!({"action": "add", "resource": "drawings", "parent_id": id(9)}),
            404,
        ),
    ] {
        assert_eq!(mutate_status(&mut c, body.clone()), status, "{body}");
    }
}

#[test]
fn daily_logs_answer_for_today_or_a_window_across_month_ends() {
    let (_standin, mut c) = start(world());
    let t = token(&mut c, "user-1");
    let logs = |kind: &str, query: &str| format!("/rest/v1.0/projects/{P}/{kind}{query}");
    let dates = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["date"].as_str().unwrap().to_string())
            .collect()
    };

    // No date: today only (the world pins 2026-02-01; 2 manpower entries a day).
    let today = get(&mut c, &t, &logs("manpower_logs", ""), 200).json();
    assert_eq!(dates(&today), ["2026-02-01", "2026-02-01"]);
    assert_eq!(ids(&today), [id(63), id(64)]);
    assert_eq!(today[0]["created_at"], "2026-02-01T17:01:00Z");
    let day = get(
        &mut c,
        &t,
        &logs("manpower_logs", "?log_date=2026-01-31"),
        200,
    );
    assert_eq!(dates(&day.json()), ["2026-01-31", "2026-01-31"]);

    // A window across January's end, paged with its parameters kept.
    let window = "?start_date=2026-01-30&end_date=2026-02-02";
    let across = get(&mut c, &t, &logs("manpower_logs", window), 200);
    assert_eq!(across.header("total"), Some("8"));
    assert_eq!(
        dates(&across.json()),
        [
            "2026-01-30",
            "2026-01-30",
            "2026-01-31",
            "2026-01-31",
            "2026-02-01",
            "2026-02-01",
            "2026-02-02",
            "2026-02-02"
        ]
    );
    let paged = get(
        &mut c,
        &t,
        &logs("manpower_logs", &format!("{window}&per_page=3")),
        200,
    );
    let link = paged.header("link").unwrap().to_string();
    assert!(
        link.contains("start_date=2026-01-30&end_date=2026-02-02"),
        "{link}"
    );
    // February's end (2026 is no leap year), one weather log a day.
    let weather = get(
        &mut c,
        &t,
        &logs("weather_logs", "?start_date=2026-02-27&end_date=2026-03-02"),
        200,
    )
    .json();
    assert_eq!(
        dates(&weather),
        ["2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02"]
    );
    assert!(weather[0]["sky"].is_string());
    let notes = get(&mut c, &t, &logs("notes_logs", ""), 200).json();
    assert_eq!(dates(&notes), ["2026-02-01"]);
    // The generated logs run 2026-01-01 ..= 2026-04-30.
    let all = get(
        &mut c,
        &t,
        &logs("notes_logs", "?start_date=2025-12-01&end_date=2026-12-31"),
        200,
    );
    assert_eq!(all.header("total"), Some("120"));
    assert_eq!(
        ids(&get(&mut c, &t, &logs("notes_logs", "?log_date=2026-05-01"), 200).json()),
        Vec::<u64>::new()
    );

    for bad in [
        "?start_date=2026-01-30",
        "?end_date=2026-01-30",
        "?log_date=2026-01-30&start_date=2026-01-30&end_date=2026-01-31",
        "?log_date=2026-02-30",
        "?log_date=20260201",
        "?start_date=2026-02-02&end_date=2026-02-01",
    ] {
        let reply = get(&mut c, &t, &logs("manpower_logs", bad), 400);
        assert!(reply.json()["errors"].is_string(), "{bad}");
    }
    // Procore documents no `filters[updated_at]` on daily logs: ignored.
    get(
        &mut c,
        &t,
        &logs("notes_logs", "?filters[updated_at]=garbage"),
        200,
    );

    // Added logs are dated today; a detail ignores the dates.
    let added = mutate(
        &mut c,
        json!({"action": "add", "resource": "manpower_logs", "project_id": P}),
    );
    assert_eq!(added["date"], "2026-02-01");
    let today = get(&mut c, &t, &logs("manpower_logs", ""), 200).json();
    assert_eq!(ids(&today).last(), added["id"].as_u64().as_ref());
    let old = get(
        &mut c,
        &t,
        &logs("manpower_logs", &format!("/{}?log_date=2026-03-01", id(1))),
        200,
    );
    assert_eq!(old.json()["date"], "2026-01-01");
}

#[test]
fn recycle_bins_list_deleted_records_with_deleted_at() {
    let (_standin, mut c) = start(world());
    let t = token(&mut c, "user-1");
    let t2 = token(&mut c, "user-2");
    let rfi_path = format!("/rest/v1.0/projects/{P}/rfis/{}", id(2));
    let before = get(&mut c, &t, &rfi_path, 200).json();
    let bin = format!("/rest/v1.0/projects/{P}/rfis/recycle_bin");
    assert_eq!(ids(&get(&mut c, &t, &bin, 200).json()), Vec::<u64>::new());

    let deleted = mutate(
        &mut c,
        json!({"action": "delete", "resource": "rfis", "id": id(2)}),
    );
    assert_eq!(deleted["deleted"], true);
    let listed = get(&mut c, &t, &bin, 200);
    assert_eq!(listed.header("total"), Some("1"));
    let entry = &listed.json()[0];
    let deleted_at = entry["deleted_at"].as_str().unwrap().to_string();
    assert!(
        deleted_at.ends_with('Z') && deleted_at.len() == 20,
        "{deleted_at}"
    );
    let mut expected = before.clone();
    expected["deleted_at"] = json!(deleted_at);
    assert_eq!(entry, &expected, "the record as it was, plus deleted_at");
    assert!(
        !ids(&get(&mut c, &t, &format!("/rest/v1.0/projects/{P}/rfis"), 200).json())
            .contains(&id(2))
    );
    assert_eq!(
        ids(&c.get(&bin, &t2, Some(1001)).json()),
        [id(2)],
        "a member"
    );
    let window = format!("{bin}?filters[updated_at]=2026-01-01T00:02:00Z...2026-01-01T00:02:00Z");
    assert_eq!(ids(&get(&mut c, &t, &window, 200).json()), [id(2)]);
    // Procore documents no detail route under the RFIs' recycle bin.
    get(&mut c, &t, &format!("{bin}/{}", id(2)), 404);
    mutate(
        &mut c,
        json!({"action": "restore", "resource": "rfis", "id": id(2)}),
    );
    assert_eq!(ids(&get(&mut c, &t, &bin, 200).json()), Vec::<u64>::new());

    for (resource, bin) in [
        (
            "submittals",
            format!("/rest/v1.1/projects/{P}/submittals/recycle_bin"),
        ),
        (
            "punch_items",
            format!("/rest/v1.1/punch_items/recycle_bin?project_id={P}"),
        ),
        (
            "observations",
            format!("/rest/v1.0/projects/{P}/recycle_bin/observations/items"),
        ),
    ] {
        mutate(
            &mut c,
            json!({"action": "delete", "resource": resource, "id": id(4)}),
        );
        let listed = get(&mut c, &t, &bin, 200).json();
        assert_eq!(ids(&listed), [id(4)], "{resource}");
        assert!(listed[0]["deleted_at"].is_string(), "{resource}");
        assert_eq!(
            c.get(
                &bin.replace(&P.to_string(), &OTHER.to_string()),
                &t2,
                Some(1001)
            )
            .status,
            403,
            "{resource}: a project the member may not open"
        );
    }
    // Observations' recycle bin has a detail route: deleted ones only.
    let obs = format!("/rest/v1.0/projects/{P}/recycle_bin/observations/items");
    let shown = get(&mut c, &t, &format!("{obs}/{}", id(4)), 200).json();
    assert!(shown["deleted_at"].is_string());
    get(&mut c, &t, &format!("{obs}/{}", id(1)), 404);
}

#[test]
fn include_deleted_only_lists_just_the_deleted() {
    let (_standin, mut c) = start(world());
    let t = token(&mut c, "user-1");
    for (resource, path) in [
        ("change_events", "/rest/v1.0/change_events"),
        ("work_order_contracts", "/rest/v1.0/work_order_contracts"),
        (
            "purchase_order_contracts",
            "/rest/v1.0/purchase_order_contracts",
        ),
        ("change_order_packages", "/rest/v1.0/change_order_packages"),
    ] {
        for i in [1, 4] {
            mutate(
                &mut c,
                json!({"action": "delete", "resource": resource, "id": id(i)}),
            );
        }
        let list = |query: &str| format!("{path}?project_id={P}{query}");
        let only = get(&mut c, &t, &list("&filters[include_deleted]=only"), 200);
        assert_eq!(only.header("total"), Some("2"), "{resource}");
        let only = only.json();
        assert_eq!(ids(&only), [id(1), id(4)], "{resource}");
        assert!(only[0]["deleted_at"].is_string());
        let with = get(&mut c, &t, &list("&filters%5Binclude_deleted%5D=with"), 200).json();
        assert_eq!(
            ids(&with),
            (1..=6).map(id).collect::<Vec<_>>(),
            "{resource}"
        );
        assert!(with[0]["deleted_at"].is_string() && with[1].get("deleted_at").is_none());
        assert_eq!(
            ids(&get(&mut c, &t, &list(""), 200).json()),
            [id(2), id(3), id(5), id(6)]
        );
        get(&mut c, &t, &list("&filters[include_deleted]=true"), 400);
        // A deleted record's detail stays 404.
        get(&mut c, &t, &format!("{path}/{}?project_id={P}", id(1)), 404);
    }
    // Not documented for meetings: ignored there.
    mutate(
        &mut c,
        json!({"action": "delete", "resource": "meetings", "id": id(1)}),
    );
    let meetings = get(
        &mut c,
        &t,
        &format!("/rest/v1.0/meetings?project_id={P}&filters[include_deleted]=only"),
        200,
    );
    assert_eq!(ids(&meetings.json()).len(), 5);
}

/// (resource, list path) of every catalog list in project P with its records.
fn catalog_lists() -> Vec<(&'static str, String)> {
    let window = "?start_date=2026-01-01&end_date=2026-01-03";
    vec![
        (
            "drawing_areas",
            format!("/rest/v1.1/projects/{P}/drawing_areas"),
        ),
        ("drawings", drawings_path(id(1))),
        ("rfi_replies", replies_path(id(3))),
        (
            "manpower_logs",
            format!("/rest/v1.0/projects/{P}/manpower_logs{window}"),
        ),
        (
            "notes_logs",
            format!("/rest/v1.0/projects/{P}/notes_logs{window}"),
        ),
        (
            "weather_logs",
            format!("/rest/v1.0/projects/{P}/weather_logs{window}"),
        ),
        (
            "work_order_contracts",
            format!("/rest/v1.0/work_order_contracts?project_id={P}"),
        ),
        (
            "purchase_order_contracts",
            format!("/rest/v1.0/purchase_order_contracts?project_id={P}"),
        ),
        (
            "change_order_packages",
            format!("/rest/v1.0/change_order_packages?project_id={P}"),
        ),
        ("meetings", format!("/rest/v1.0/meetings?project_id={P}")),
        (
            "inspections",
            format!("/rest/v1.0/checklist/lists?project_id={P}"),
        ),
    ]
}

fn detail(list: &str, id: u64) -> String {
    match list.split_once('?') {
        Some((path, query)) => format!("{path}/{id}?{query}"),
        None => format!("{list}/{id}"),
    }
}

#[test]
fn every_catalog_record_has_a_detail_route_showing_its_list_entry() {
    let (_standin, mut c) = start(world());
    let t = token(&mut c, "user-1");
    for (resource, list) in catalog_lists() {
        let entries = get(&mut c, &t, &list, 200).json();
        let entries = entries.as_array().unwrap();
        assert!(!entries.is_empty(), "{list}");
        for entry in entries {
            let path = detail(&list, entry["id"].as_u64().unwrap());
            let shown = get(&mut c, &t, &path, 200);
            assert_eq!(&shown.json(), entry, "{path}");
            assert!(shown.header("total").is_none(), "{path}");
        }
        let log = c.admin("GET", "requests?since=0", json!(null));
        assert_eq!(
            log.as_array().unwrap().last().unwrap()["resource"],
            resource
        );
        // Another project's record, one never made, no id at all.
        let other = OTHER * 100_000 + 1;
        get(&mut c, &t, &detail(&list, other), 404);
        get(&mut c, &t, &detail(&list, id(99_999)), 404);
        let text = list.replacen('?', "/x?", 1);
        let not_an_id = if text == list {
            format!("{list}/x")
        } else {
            text
        };
        get(&mut c, &t, &not_an_id, 404);
    }
    // Files and folders through their own detail routes (folders: plus children).
    let folder = get(&mut c, &t, &folder_path(id(3)), 200).json();
    for entry in folder["files"].as_array().unwrap() {
        let path = format!("/rest/v1.0/files/{}?project_id={P}", entry["id"]);
        assert_eq!(&get(&mut c, &t, &path, 200).json(), entry);
    }
    for entry in folder["folders"].as_array().unwrap() {
        let shown = get(&mut c, &t, &folder_path(entry["id"].as_u64().unwrap()), 200).json();
        assert_eq!(&without_children(shown), entry);
    }
    get(
        &mut c,
        &t,
        &format!("/rest/v1.0/files/{}?project_id={OTHER}", id(1)),
        404,
    );
    get(&mut c, &t, &folder_path(id(99)), 404);
}

#[test]
fn flat_additions_filter_by_updated_at() {
    let (_standin, mut c) = start(world());
    let t = token(&mut c, "user-1");
    for path in [
        "/rest/v1.0/work_order_contracts",
        "/rest/v1.0/purchase_order_contracts",
        "/rest/v1.0/change_order_packages",
        "/rest/v1.0/meetings",
        "/rest/v1.0/checklist/lists",
    ] {
        let window = format!(
            "{path}?project_id={P}&filters[updated_at]=2026-01-01T00:02:00Z...2026-01-01T00:04:00Z"
        );
        assert_eq!(
            ids(&get(&mut c, &t, &window, 200).json()),
            [id(2), id(3), id(4)],
            "{path}"
        );
        get(
            &mut c,
            &t,
            &format!("{path}?project_id={P}&filters[updated_at]=yesterday"),
            400,
        );
    }
    let edited = mutate(
        &mut c,
        json!({"action": "edit", "resource": "meetings", "project_id": P, "id": id(2)}),
    );
    let since = edited["updated_at"].as_str().unwrap();
    let changed = get(
        &mut c,
        &t,
        &format!(
            "/rest/v1.0/meetings?project_id={P}&filters[updated_at]={since}...2099-01-01T00:00:00Z"
        ),
        200,
    )
    .json();
    assert_eq!(ids(&changed), [id(2)]);
    assert!(changed[0]["title"].as_str().unwrap().ends_with(" (edited)"));
    let added = mutate(
        &mut c,
        json!({"action": "add", "resource": "inspections", "project_id": P}),
    );
    assert_eq!(added["id"], id(7));
}

#[test]
fn catalog_records_carry_hostile_names() {
    let (_standin, mut c) = start(world());
    let t = token(&mut c, "user-1");
    for (resource, list) in catalog_lists() {
        if resource == "rfi_replies" || resource.ends_with("_logs") {
            continue;
        }
        let entries = get(&mut c, &t, &list, 200).json();
        let field = match resource {
            "drawing_areas" | "inspections" => "name",
            _ => "title",
        };
        let text = |i: u64| {
            let entry = entries
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["id"] == id(i))
                .unwrap_or_else(|| panic!("{resource} {i}"));
            entry[field].as_str().unwrap().to_string()
        };
        if resource == "drawings" {
            // Area 1 holds drawings 1..=4.
            assert!(text(3).contains(BAIT), "{resource}");
            assert!(text(4).contains(MARKUP), "{resource}");
            continue;
        }
        assert!(text(3).contains(BAIT), "{resource}");
        assert!(text(4).contains(MARKUP), "{resource}");
        assert!(text(5).chars().count() > 1000, "{resource}");
        assert!(text(5).contains('\u{200d}') && text(5).contains("עברית"));
        assert!(text(2).is_ascii(), "{resource}");
        if resource != "drawing_areas" {
            assert!(text(6).is_ascii(), "{resource}");
        }
    }
    let replies = get(&mut c, &t, &replies_path(id(2)), 200).json();
    assert!(replies[0]["plain_text_body"]
        .as_str()
        .unwrap()
        .contains(BAIT));
    assert!(replies[1]["rich_text_body"]
        .as_str()
        .unwrap()
        .contains("<script>"));
    let logs = get(
        &mut c,
        &t,
        &format!("/rest/v1.0/projects/{P}/notes_logs?start_date=2026-01-03&end_date=2026-01-05"),
        200,
    )
    .json();
    assert!(logs[0]["comment"].as_str().unwrap().contains(BAIT));
    assert!(logs[1]["comment"].as_str().unwrap().contains(MARKUP));
    assert!(logs[2]["comment"].as_str().unwrap().len() > 2000);
}

#[test]
fn catalog_lists_follow_the_core_rules_for_auth_scope_privacy_faults_and_limits() {
    let (_standin, mut c) = start(world());
    let t = token(&mut c, "user-1");
    let t2 = token(&mut c, "user-2");
    let areas = format!("/rest/v1.1/projects/{P}/drawing_areas");
    assert_eq!(c.get(&areas, "nope", Some(1001)).status, 401);
    assert_eq!(c.get(&areas, &t, None).status, 403, "no company header");
    assert_eq!(c.get(&areas, &t, Some(2001)).status, 403, "wrong company");
    assert_eq!(
        c.get("/rest/v1.1/projects/2001001/drawing_areas", &t, Some(2001))
            .status,
        404,
        "a company the login cannot reach"
    );
    let forbidden = c.get(
        &format!("/rest/v1.1/projects/{OTHER}/drawing_areas"),
        &t2,
        Some(1001),
    );
    assert_eq!(forbidden.status, 403, "a project the member may not open");
    assert_eq!(
        c.get(
            &format!("/rest/v1.1/drawing_areas/{}/drawings", OTHER * 100_000 + 1),
            &t2,
            Some(1001)
        )
        .status,
        403
    );
    assert_eq!(c.get(&areas, &t2, Some(1001)).status, 200, "member");
    assert_eq!(
        c.get("/rest/v1.0/meetings", &t, Some(1001)).status,
        400,
        "project_id is required"
    );
    let post = c.send(
        "POST",
        &areas,
        &[("Authorization", &format!("Bearer {t}"))],
        b"",
    );
    assert_eq!(post.status, 405);

    // A drawing area private to user-2 hides it and its drawings from user-1.
    c.admin(
        "POST",
        "private",
        json!({"resource": "drawing_areas", "id": id(2), "visible_to": ["user-2"]}),
    );
    assert!(!ids(&c.get(&areas, &t, Some(1001)).json()).contains(&id(2)));
    assert_eq!(c.get(&drawings_path(id(2)), &t, Some(1001)).status, 404);
    assert_eq!(c.get(&drawings_path(id(2)), &t2, Some(1001)).status, 200);
    let mine = c.admin("GET", "records?login=user-1", json!(null));
    assert!(!mine
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["resource"] == "drawings" && r["id"] == id(5)));
    let theirs = c.admin("GET", "records?login=user-2", json!(null));
    assert!(theirs
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["resource"] == "drawings" && r["id"] == id(5)));

    // Faults match catalog paths; a cut response is never served.
    c.admin(
        "POST",
        "faults",
        json!({"rules": [{"kind": "status", "status": 503, "path": "/drawing_areas", "times": 1}]}),
    );
    assert_eq!(c.get(&areas, &t, Some(1001)).status, 503);
    assert_eq!(c.get(&areas, &t, Some(1001)).status, 200);

    // Rate limits count catalog requests like any other.
    c.admin(
        "PUT",
        "world",
        json!({"users": 1, "rate_limit_spike": 2, "catalog": {}}),
    );
    let t = token(&mut c, "user-1");
    let folders = format!("/rest/v1.0/folders?project_id={P}");
    assert_eq!(c.get(&folders, &t, Some(1001)).status, 200);
    assert_eq!(c.get(&folders, &t, Some(1001)).status, 200);
    let limited = c.get(&folders, &t, Some(1001));
    assert_eq!(limited.status, 429);
    assert!(limited.header("retry-after").is_some());
}

/// The keys of `/__admin/records` (resource, id).
fn keys(records: &Value) -> Vec<(String, u64)> {
    records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resource"].as_str().unwrap().to_string(),
                r["id"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_catalog_leaves_every_core_record_as_it_was() {
    let mut core_world = world();
    core_world.as_object_mut().unwrap().remove("catalog");
    let (_standin, mut c) = start(core_world);
    let core = c.admin("GET", "records", json!(null));
    let core_keys = keys(&core);
    let t = token(&mut c, "user-1");
    let rfis_before = get(&mut c, &t, &format!("/rest/v1.0/projects/{P}/rfis"), 200).body;
    // Without a catalog its resources are unknown to the admin API too.
    assert_eq!(
        mutate_status(
            &mut c,
            json!({"action": "add", "resource": "meetings", "project_id": P})
        ),
        400
    );
    assert_eq!(
        c.send(
            "POST",
            "/__admin/private",
            &[],
            json!({"resource": "drawings", "id": id(1), "visible_to": []})
                .to_string()
                .as_bytes()
        )
        .status,
        400
    );

    c.admin("PUT", "world", world());
    let with = c.admin("GET", "records", json!(null));
    let core_names: Vec<&str> = vec![
        "companies",
        "vendors",
        "projects",
        "project_users",
        "rfis",
        "submittals",
        "punch_items",
        "observations",
        "change_events",
    ];
    let with_core: Vec<Value> = with
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| core_names.contains(&r["resource"].as_str().unwrap()))
        .cloned()
        .collect();
    assert_eq!(
        Value::Array(with_core),
        core,
        "same core records, same order"
    );
    let added = keys(&with).len() - core_keys.len();
    // Per project: 5 areas + 20 drawings + 7 folders + 18 files + 12 replies
    // + 240 + 120 + 120 logs + 5 x 6 flat records.
    assert_eq!(added, 4 * (5 + 20 + 7 + 18 + 12 + 240 + 120 + 120 + 30));
    let t = token(&mut c, "user-1");
    let rfis_after = get(&mut c, &t, &format!("/rest/v1.0/projects/{P}/rfis"), 200).body;
    assert_eq!(rfis_before, rfis_after);
    let read_back = c.admin("GET", "world", json!(null));
    assert_eq!(read_back["catalog"]["drawing_areas"], 5);
    assert_eq!(read_back["catalog"]["today"], "2026-02-01");
    assert_eq!(read_back["catalog"]["meetings"], Value::Null);

    for bad in [
        json!({"catalog": {"drawing_areaz": 1}}),
        json!({"catalog": {"drawing_areas": 1000, "drawings_per_area": 1000}}),
        json!({"catalog": {"today": "02/01/2026"}}),
        json!({"records_per_resource": 60000, "catalog": {}}),
    ] {
        let reply = c.send("PUT", "/__admin/world", &[], bad.to_string().as_bytes());
        assert_eq!(reply.status, 400, "{bad}");
    }
}

#[test]
fn a_bench_sized_world_of_fifty_projects_with_4000_drawings_each() {
    let (_standin, mut c) = start(json!({
        "users": 1,
        "projects_per_company": 50,
        "rate_limit_spike": 100000,
        "catalog": {"drawing_areas": 20, "drawings_per_area": 200},
    }));
    let t = token(&mut c, "user-1");
    let project = 1_001_050u64;
    let area = project * 100_000 + 20;
    let drawings = get(
        &mut c,
        &t,
        &format!("/rest/v1.1/drawing_areas/{area}/drawings?project_id={project}&per_page=200"),
        200,
    );
    assert_eq!(drawings.header("total"), Some("200"));
    let listed = ids(&drawings.json());
    assert_eq!(listed.first(), Some(&(project * 100_000 + 3801)));
    assert_eq!(listed.last(), Some(&(project * 100_000 + 4000)));
    let areas = get(
        &mut c,
        &t,
        &format!("/rest/v1.1/projects/{project}/drawing_areas?per_page=5&page=4"),
        200,
    );
    assert_eq!(areas.header("total"), Some("20"));
    assert_eq!(areas.json()[4]["drawings_count"], 200);
    let records = c.send("GET", "/__admin/records?login=user-1", &[], b"");
    let text = String::from_utf8_lossy(&records.body);
    assert_eq!(
        text.matches(r#""resource":"drawings""#).count(),
        50 * 20 * 200
    );
    assert_eq!(
        text.matches(r#""resource":"drawing_areas""#).count(),
        50 * 20
    );
}
