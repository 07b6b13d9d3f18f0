//! The catalog beyond flat listings (issue 13), against a real cluster and the stand-in with
//! its catalog on: child resources three levels deep, a parent deleted between its listing
//! and its children's, catalog rows the walk could not follow refused at INSERT, daily logs
//! read by a window of days across a month boundary, deletions caught by an incremental
//! pass through recycle bins and `filters[include_deleted]=only`, and hostile names in
//! every new resource.

mod common;

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, TimeDelta, Utc};
use common::*;
use procore_sync_e2e::request_log::LoggedRequest;
use procore_sync_e2e::Env;
use serde_json::json;
use uuid::Uuid;

/// The resources this issue adds to the shipped catalog (all shipped disabled).
const NEW_RESOURCES: [&str; 13] = [
    "drawing_areas",
    "drawings",
    "folders",
    "files",
    "manpower_logs",
    "notes_logs",
    "weather_logs",
    "work_order_contracts",
    "purchase_order_contracts",
    "change_order_packages",
    "meetings",
    "inspections",
    "rfi_replies",
];

/// The stand-in's hostile names (tests/standin/src/records.rs): record i = 3 of every
/// resource carries the first, catalog record i = 4 the second.
const BAIT: &str = "O'Brien \"quoted\"; DROP TABLE x; -- ünïcødé ✓";
const MARKUP: &str = "<script>alert(\"x\")</script> <b>bold</b> & 'single' \\ backslash";

/// One user, one company, two projects; 6 records per core resource; a catalog of 5
/// drawing areas × 4 drawings, 2 folders × 2 subfolders with 3 files in each folder, 2
/// replies per RFI, one log of each kind a day for 400 days from 2026-01-01.
fn catalog_world() -> serde_json::Value {
    small_world(
        1,
        json!({
            "records_per_resource": 6,
            "catalog": {
                "drawing_areas": 5,
                "drawings_per_area": 4,
                "folders": 2,
                "subfolders_per_folder": 2,
                "files_per_folder": 3,
                "replies_per_rfi": 2,
                "daily_log_days": 400,
                "manpower_logs_per_day": 1,
                "notes_logs_per_day": 1,
                "weather_logs_per_day": 1,
            },
        }),
    )
}

struct Catalog {
    env: Env,
    user: Uuid,
}

impl Catalog {
    fn start(settings: &[(&str, &str)]) -> Catalog {
        let env = start_env(catalog_world(), settings);
        let mut client = env.client().expect("connect");
        set_jobs(&mut client, None, None);
        let users = env.connect_users(1).expect("connect user-1");
        Catalog {
            user: users[0].0,
            env,
        }
    }

    fn client(&self) -> postgres::Client {
        self.env.client().expect("connect")
    }

    /// One sync of the user, which must end completed without any resource error.
    fn sync(&self) {
        let row = self
            .client()
            .query_one(
                "SELECT status, coalesce(error_message, '') FROM procore_sync_user($1)",
                &[&self.user],
            )
            .expect("procore_sync_user");
        let (status, error): (String, String) = (row.get(0), row.get(1));
        assert_eq!(status, "completed", "sync: {error}");
        assert_eq!(error, "", "the sync reported errors");
    }

    fn enable(&self, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.client()
            .execute(
                "UPDATE procore_sync_resource SET enabled = true WHERE name = ANY ($1)",
                &[&names],
            )
            .expect("enable resources");
    }

    fn count(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> i64 {
        self.client()
            .query_one(sql, params)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    fn live(&self, resource: &str) -> i64 {
        self.count(
            "SELECT count(*) FROM procore_records WHERE resource = $1 AND deleted_at IS NULL",
            &[&resource],
        )
    }

    fn requests_since(&self, seq: u64) -> Vec<LoggedRequest> {
        LoggedRequest::parse_all(self.env.standin.requests_since(seq).expect("request log"))
    }

    fn last_seq(&self) -> u64 {
        self.requests_since(0).last().map_or(0, |r| r.seq)
    }

    fn project_ids(&self) -> Vec<i64> {
        self.client()
            .query(
                "SELECT procore_id FROM procore_records WHERE resource = 'projects' ORDER BY 1",
                &[],
            )
            .expect("projects")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

fn sqlstate(e: &postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

#[test]
fn catalog_rows_the_walk_could_not_follow_are_refused_with_a_clear_error() {
    let app = Catalog::start(&[]);
    let mut client = app.client();
    let insert = "INSERT INTO procore_sync_resource (name, path_template, scope, parent_resource, parent_placeholder)
                  VALUES ($1, $2, 'project', $3, $4)";
    let refused =
        |client: &mut postgres::Client, name: &str, path: &str, parent: &str, ph: &str| {
            client
                .execute(insert, &[&name, &path, &parent, &ph])
                .expect_err(&format!("{name} must be refused"))
        };
    // A parent that does not exist.
    let e = refused(
        &mut client,
        "revisions",
        "/rest/v1.0/projects/{project_id}/revisions/{drawing_id}",
        "no_such_thing",
        "drawing_id",
    );
    assert_eq!(sqlstate(&e), "23503", "{e:?}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("parent resource no_such_thing does not exist"),
        "{message}"
    );
    // An object answer (records_key) is one page: it cannot be paginated.
    let e = client
        .execute(
            "INSERT INTO procore_sync_resource (name, path_template, scope, records_key)
             VALUES ('tree', '/rest/v1.0/folders?project_id={project_id}', 'project', 'files')",
            &[],
        )
        .expect_err("a paginated object answer must be refused");
    assert_eq!(sqlstate(&e), "23514", "{e:?}");
    assert!(
        format!("{e:?}").contains("procore_sync_resource_records_key_unpaginated"),
        "{e:?}"
    );
    // Its own parent, and a cycle through another row.
    let e = refused(
        &mut client,
        "loop",
        "/rest/v1.0/projects/{project_id}/x/{loop_id}",
        "loop",
        "loop_id",
    );
    assert_eq!(sqlstate(&e), "23514", "{e:?}");
    client
        .execute(
            insert,
            &[
                &"chain_a",
                &"/rest/v1.0/projects/{project_id}/a/{rfi_id}",
                &"rfis",
                &"rfi_id",
            ],
        )
        .expect("a child of rfis");
    client
        .execute(
            insert,
            &[
                &"chain_b",
                &"/rest/v1.0/projects/{project_id}/b/{a_id}",
                &"chain_a",
                &"a_id",
            ],
        )
        .expect("a grandchild");
    let e = client
        .execute(
            "UPDATE procore_sync_resource SET parent_resource = 'chain_b', parent_placeholder = 'rfi_id'
             WHERE name = 'chain_a'",
            &[],
        )
        .expect_err("a cycle must be refused");
    assert_eq!(sqlstate(&e), "23514", "{e:?}");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("cycle"), "{message}");
    // A placeholder the path lacks, a parent of another scope, a half-declared parent.
    let e = refused(
        &mut client,
        "no_placeholder",
        "/rest/v1.0/projects/{project_id}/x",
        "rfis",
        "rfi_id",
    );
    assert_eq!(sqlstate(&e), "23514", "{e:?}");
    let e = client
        .execute(
            "INSERT INTO procore_sync_resource (name, path_template, scope, parent_resource, parent_placeholder)
             VALUES ('vendor_things', '/rest/v1.0/x/{rfi_id}?company_id={company_id}', 'company', 'rfis', 'rfi_id')",
            &[],
        )
        .expect_err("a company-scoped child of a project resource");
    assert_eq!(sqlstate(&e), "23514", "{e:?}");
    let e = client
        .execute(
            "INSERT INTO procore_sync_resource (name, path_template, scope, parent_resource)
             VALUES ('half', '/rest/v1.0/projects/{project_id}/x', 'project', 'rfis')",
            &[],
        )
        .expect_err("a parent without its placeholder");
    assert_eq!(sqlstate(&e), "23514", "{e:?}");
    // A history read one day per request is refused: it would be thousands of requests.
    let e = client
        .execute(
            "UPDATE procore_sync_resource SET date_filter = 'log_date', history_on_first_sync = true
             WHERE name = 'manpower_logs'",
            &[],
        )
        .expect_err("history by log_date");
    assert_eq!(sqlstate(&e), "23514", "{e:?}");
}

#[test]
fn nested_resources_three_levels_deep_dated_windows_and_hostile_names() {
    // A full window that certainly starts in the previous month.
    let today = Utc::now().date_naive();
    let window_days = i64::from(today.day()) + 5;
    let app = Catalog::start(&[("procore_sync.dated_window_days", &window_days.to_string())]);
    app.enable(&NEW_RESOURCES);
    let mut client = app.client();
    // Deeper folders, added by a user as two more levels under the shipped `folders`:
    // projects → folders → sub_folders → sub_files.
    client
        .batch_execute(
            "INSERT INTO procore_sync_resource
                 (name, path_template, scope, paginated, parent_resource, parent_placeholder, records_key)
             VALUES
                 ('sub_folders', '/rest/v1.0/folders/{folder_id}?project_id={project_id}', 'project',
                  false, 'folders', 'folder_id', 'folders'),
                 ('sub_files', '/rest/v1.0/folders/{sub_folder_id}?project_id={project_id}', 'project',
                  false, 'sub_folders', 'sub_folder_id', 'files');
             UPDATE procore_sync_resource SET history_on_first_sync = true
             WHERE name IN ('notes_logs', 'weather_logs');",
        )
        .expect("the user's rows");
    app.sync();

    let projects = app.project_ids();
    assert_eq!(projects.len(), 2);
    // Two levels: areas → drawings, folders → files, rfis → replies; each child knows its
    // parent, and every parent's children are there.
    for (child, parent, per_parent, parents) in [
        ("drawings", "drawing_areas", 4, 5),
        ("files", "folders", 3, 2),
        ("rfi_replies", "rfis", 2, 6),
        ("sub_folders", "folders", 2, 2),
        ("sub_files", "sub_folders", 3, 4),
    ] {
        for project in &projects {
            let rows = client
                .query(
                    "SELECT c.parent_id, count(*) FROM procore_records c
                     JOIN procore_records p ON p.resource = $2 AND p.company_id = c.company_id
                      AND p.procore_id = c.parent_id AND p.project_id = c.project_id
                     WHERE c.resource = $1 AND c.project_id = $3 AND c.deleted_at IS NULL
                     GROUP BY 1",
                    &[&child, &parent, project],
                )
                .expect("children per parent");
            assert_eq!(rows.len(), parents, "{child}: parents in project {project}");
            for row in rows {
                let n: i64 = row.get(1);
                assert_eq!(n, per_parent, "{child} under {:?}", row.get::<_, i64>(0));
            }
        }
    }
    // The third level hangs off the second: each sub_file's parent is a sub_folder whose
    // parent is a top-level folder.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM procore_records f
             JOIN procore_records s ON s.resource = 'sub_folders' AND s.procore_id = f.parent_id
             JOIN procore_records t ON t.resource = 'folders' AND t.procore_id = s.parent_id
             WHERE f.resource = 'sub_files'",
            &[]
        ),
        24
    );

    // Daily logs: the full window, today included, across the month boundary; notes and
    // weather logs asked for their whole history on the first sync.
    let dates = |resource: &str| -> BTreeSet<NaiveDate> {
        app.client()
            .query(
                "SELECT DISTINCT (data->>'date')::date FROM procore_records WHERE resource = $1",
                &[&resource],
            )
            .expect("log dates")
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let manpower = dates("manpower_logs");
    let first = today - TimeDelta::days(window_days - 1);
    assert_eq!(manpower.first(), Some(&first));
    assert_eq!(manpower.last(), Some(&today));
    assert_eq!(manpower.len() as i64, window_days, "one log a day");
    assert_ne!(first.month(), today.month(), "the window crosses a month");
    let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    assert_eq!(
        dates("notes_logs").first(),
        Some(&start),
        "the whole history"
    );
    assert_eq!(dates("weather_logs").last(), Some(&today));

    // An incremental pass reads from the day before the last sync through today.
    let seq = app.last_seq();
    app.sync();
    let asked: Vec<LoggedRequest> = app
        .requests_since(seq)
        .into_iter()
        .filter(|r| r.path.ends_with("/manpower_logs"))
        .collect();
    assert_eq!(asked.len(), 2, "one request per project: {asked:?}");
    let yesterday = today - TimeDelta::days(1);
    for r in &asked {
        assert!(
            r.query.contains(&format!("end_date={today}"))
                && (r.query.contains(&format!("start_date={yesterday}"))
                    || r.query
                        .contains(&format!("start_date={}", yesterday - TimeDelta::days(1)))),
            "{}",
            r.query
        );
    }

    // A user asks for manpower's history too: their first pass of it (no cursor) reads it.
    client
        .batch_execute(
            "UPDATE procore_sync_resource SET history_on_first_sync = true WHERE name = 'manpower_logs';
             DELETE FROM procore_sync_cursor WHERE resource = 'manpower_logs';",
        )
        .expect("ask for the history");
    app.sync();
    assert_eq!(dates("manpower_logs").first(), Some(&start));

    // Hostile names land intact, in the JSON and in the name column, in every new resource.
    // (Folder 4, the markup one, is a subfolder: the shipped `folders` lists the top level.)
    for resource in NEW_RESOURCES {
        let resources = match resource {
            "folders" => vec!["folders".to_string(), "sub_folders".to_string()],
            r => vec![r.to_string()],
        };
        for bait in [BAIT, MARKUP] {
            let found = app.count(
                "SELECT count(*) FROM procore_records r
                 WHERE r.resource = ANY ($1)
                   AND EXISTS (SELECT 1 FROM jsonb_each_text(r.data) e WHERE strpos(e.value, $2) > 0)",
                &[&resources, &bait],
            );
            assert!(found > 0, "{resource}: no record carries {bait:?} intact");
        }
    }
    let all: Vec<String> = NEW_RESOURCES.map(String::from).to_vec();
    let named = app.count(
        "SELECT count(*) FROM procore_records WHERE (strpos(name, $1) > 0 OR strpos(name, $2) > 0) AND resource = ANY ($3)",
        &[&BAIT, &MARKUP, &all],
    );
    assert!(named > 0, "the name column keeps hostile names");
    let mangled = app.count(
        "SELECT count(*) FROM procore_records r,
             coalesce(data->>'name', data->>'title', data->>'subject', data->>'display_name') t
         WHERE resource = ANY ($1) AND (strpos(t, $2) > 0 OR strpos(t, $3) > 0)
           AND name IS DISTINCT FROM t",
        &[&all, &BAIT, &MARKUP],
    );
    assert_eq!(
        mangled, 0,
        "a hostile name differs between the name column and the JSON"
    );
}

#[test]
fn a_parent_deleted_mid_walk_and_deletions_through_recycle_bins() {
    let app = Catalog::start(&[]);
    app.enable(&["drawing_areas", "drawings", "work_order_contracts"]);
    let mut client = app.client();
    // Drawing areas read incrementally here: such a pass cannot see that an area went, so
    // its drawings are asked for after Procore deleted it, as when the area goes between
    // the areas' listing and its drawings'.
    client
        .execute(
            "UPDATE procore_sync_resource SET supports_updated_at_filter = true
             WHERE name = 'drawing_areas'",
            &[],
        )
        .expect("areas read incrementally");
    app.sync();
    let project = app.project_ids()[0];
    let area = project * 100_000 + 1;
    let rfi = project * 100_000 + 2;
    let event = project * 100_000 + 2;
    let contract = project * 100_000 + 2;
    let drawings_under = |area: i64| {
        app.count(
            "SELECT count(*) FROM procore_records WHERE resource = 'drawings' AND parent_id = $1",
            &[&area],
        )
    };
    assert_eq!(drawings_under(area), 4);
    let visible_drawings = |area: i64| {
        app.count(
            "SELECT count(*) FROM procore_records
             WHERE resource = 'drawings' AND parent_id = $1
               AND procore_sync_visible($2, resource, company_id, procore_id)",
            &[&area, &app.user],
        )
    };
    assert_eq!(visible_drawings(area), 4);

    for (resource, id) in [
        ("drawing_areas", area),
        ("rfis", rfi),
        ("change_events", event),
        ("work_order_contracts", contract),
    ] {
        app.env
            .standin
            .mutate(json!({"action": "delete", "resource": resource, "id": id}))
            .unwrap_or_else(|e| panic!("delete {resource} {id}: {e}"));
    }
    let seq = app.last_seq();
    app.sync(); // fails the test on any resource error

    let requests = app.requests_since(seq);
    let gone = requests
        .iter()
        .find(|r| r.path.contains(&format!("/drawing_areas/{area}/drawings")))
        .expect("the deleted area's drawings were asked for");
    assert_eq!(gone.status, 404);
    // The user no longer sees the deleted area's drawings; the other areas' stay.
    assert_eq!(visible_drawings(area), 0);
    assert_eq!(visible_drawings(area + 1), 4);

    // One incremental cycle, no full pass: the recycle bin and include_deleted lists marked
    // the deleted records.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM procore_sync_cursor WHERE resource = 'rfis'
             AND last_full_sync_at < last_synced_at",
            &[]
        ),
        2,
        "the second pass of rfis was incremental"
    );
    for (resource, id) in [
        ("rfis", rfi),
        ("change_events", event),
        ("work_order_contracts", contract),
    ] {
        let deleted = app.count(
            "SELECT count(*) FROM procore_records
             WHERE resource = $1 AND procore_id = $2 AND deleted_at IS NOT NULL",
            &[&resource, &id],
        );
        assert_eq!(
            deleted, 1,
            "{resource} {id} is marked deleted after one cycle"
        );
    }
    // Nothing else was marked: the lists of deleted records hold only what was deleted.
    for resource in [
        "rfis",
        "submittals",
        "punch_items",
        "observations",
        "change_events",
    ] {
        let deleted = app.count(
            "SELECT count(*) FROM procore_records WHERE resource = $1 AND deleted_at IS NOT NULL",
            &[&resource],
        );
        let expected = i64::from(resource == "rfis" || resource == "change_events");
        assert_eq!(deleted, expected, "{resource}");
    }
    let bins: Vec<&LoggedRequest> = requests
        .iter()
        .filter(|r| r.path.contains("recycle_bin") || r.query.contains("include_deleted"))
        .collect();
    // 4 bins + 2 include_deleted lists, per project.
    assert_eq!(bins.len(), 12, "{bins:?}");
    assert!(bins.iter().all(|r| r.status == 200), "{bins:?}");
    assert!(app.live("rfis") > 0);

    // A full pass of the areas marks the deleted one, and its drawings go with it: no sync
    // lists a deleted parent's children any more.
    let deleted_drawings = |area: i64| {
        app.count(
            "SELECT count(*) FROM procore_records
             WHERE resource = 'drawings' AND parent_id = $1 AND deleted_at IS NOT NULL",
            &[&area],
        )
    };
    assert_eq!(deleted_drawings(area), 0, "not before the area is marked");
    app.client()
        .execute("SELECT procore_sync_resync('drawing_areas')", &[])
        .expect("procore_sync_resync");
    app.sync();
    assert_eq!(
        app.count(
            "SELECT count(*) FROM procore_records
             WHERE resource = 'drawing_areas' AND procore_id = $1 AND deleted_at IS NOT NULL",
            &[&area]
        ),
        1,
        "the full pass marked the deleted area"
    );
    assert_eq!(deleted_drawings(area), 4, "its drawings went with it");
    assert_eq!(
        deleted_drawings(area + 1),
        0,
        "the other areas' drawings stay"
    );
}

#[test]
fn requests_per_incremental_cycle_with_and_without_the_deletion_lists() {
    // The shipped catalog as it is enabled after an upgrade (the new resources off).
    let app = Catalog::start(&[]);
    app.sync();
    let cycle = |app: &Catalog| {
        let seq = app.last_seq();
        app.sync();
        app.requests_since(seq)
            .iter()
            .filter(|r| r.path.starts_with("/rest/"))
            .count()
    };
    let with_lists = cycle(&app);
    app.client()
        .execute(
            "UPDATE procore_sync_resource SET recycle_bin_path = NULL, include_deleted = false",
            &[],
        )
        .expect("as before 0.2.0");
    let without = cycle(&app);
    eprintln!(
        "requests per user per incremental cycle (1 company, 2 projects): {without} without \
         the deletion lists, {with_lists} with them"
    );
    // Four recycle bins and change events' include_deleted list, per project.
    assert_eq!(with_lists - without, 2 * 5);
}
