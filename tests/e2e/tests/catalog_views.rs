//! The catalog's typed views over what the stand-in serves: hostile names come through
//! intact, typed columns agree with the raw JSON, and a value of the wrong shape reads NULL
//! instead of making the whole view fail. Only the flat listings are synced here (nested
//! and dated ones need the catalog's parent and date columns).

use procore_sync_e2e::Env;
use serde_json::json;
use uuid::Uuid;

const BAIT: &str = "O'Brien \"quoted\"; DROP TABLE x; -- ünïcødé ✓";
const MARKUP: &str = "<script>alert(\"x\")</script>";

/// (resource, path, view, its text column, the JSON field that column shows)
const FLAT: [(&str, &str, &str, &str, &str); 6] = [
    (
        "drawing_areas",
        "/rest/v1.1/projects/{project_id}/drawing_areas",
        "procore_drawing_areas",
        "name",
        "name",
    ),
    (
        "work_order_contracts",
        "/rest/v1.0/work_order_contracts?project_id={project_id}",
        "procore_work_order_contracts",
        "title",
        "title",
    ),
    (
        "purchase_order_contracts",
        "/rest/v1.0/purchase_order_contracts?project_id={project_id}",
        "procore_purchase_order_contracts",
        "title",
        "title",
    ),
    (
        "change_order_packages",
        "/rest/v1.0/change_order_packages?project_id={project_id}",
        "procore_change_order_packages",
        "title",
        "title",
    ),
    (
        "meetings",
        "/rest/v1.0/meetings?project_id={project_id}",
        "procore_meetings",
        "title",
        "title",
    ),
    (
        "inspections",
        "/rest/v1.0/checklist/lists?project_id={project_id}",
        "procore_inspections",
        "name",
        "name",
    ),
];

fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[test]
fn catalog_views_show_what_procore_sent_and_survive_odd_values() {
    let world = json!({
        "users": 1,
        "companies_per_user": 1,
        "projects_per_company": 1,
        "records_per_resource": 6,
        "per_page_default": 100,
        "rate_limit_spike": 100000,
        "rate_limit_hour": 1000000,
        "catalog": {},
    });
    let env = Env::new(world, &[]).expect("start the stand-in and the cluster");
    let mut c = env.client().expect("connect");
    c.batch_execute("SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job")
        .expect("switch off the default jobs");
    for (name, path, ..) in FLAT {
        // The shipped catalog may already hold the row (disabled): enable it then.
        c.execute(
            "INSERT INTO procore_sync_resource (name, path_template, scope) VALUES ($1, $2, 'project')
             ON CONFLICT (name) DO UPDATE SET enabled = true",
            &[&name, &path],
        )
        .unwrap_or_else(|e| panic!("catalog row for {name}: {e}"));
    }
    let user = Uuid::new_v4();
    env.connect_user(&mut c, user, "user-1")
        .expect("connect user-1");
    let row = c
        .query_one(
            "SELECT status, error_message FROM procore_sync_user($1)",
            &[&user],
        )
        .expect("procore_sync_user()");
    let status: String = row.get(0);
    assert_eq!(status, "completed", "{:?}", row.get::<_, Option<String>>(1));

    for (resource, _, view, column, field) in FLAT {
        let stored = c
            .query_one(
                "SELECT count(*) FROM procore_records WHERE resource = $1",
                &[&resource],
            )
            .expect("stored count")
            .get::<_, i64>(0);
        assert!(stored >= 5, "{resource}: {stored} records synced");
        // The view and field names are constants of this test, not input.
        let rows = c
            .query(
                &format!(
                    "SELECT v.{column}, r.data->>'{field}' FROM {view} v
                     JOIN procore_records r ON r.resource = $1 AND r.company_id = v.company_id
                      AND r.procore_id = v.id"
                ),
                &[&resource],
            )
            .unwrap_or_else(|e| panic!("{view}: {e}"));
        assert_eq!(rows.len() as i64, stored, "{view} shows every record");
        let texts: Vec<(Option<String>, Option<String>)> =
            rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert!(
            texts
                .iter()
                .all(|(shown, sent)| shown == sent && shown.is_some()),
            "{view}.{column} is Procore's {field}"
        );
        let shown: Vec<String> = texts.into_iter().filter_map(|(s, _)| s).collect();
        assert!(
            shown.iter().any(|t| t.contains(BAIT)),
            "{view}: quotes and SQL"
        );
        assert!(shown.iter().any(|t| t.contains(MARKUP)), "{view}: markup");
        assert!(
            shown.iter().any(|t| t.chars().count() > 1000),
            "{view}: a name over 1,000 characters"
        );
    }

    // Typed columns agree with the JSON they come from.
    for (sql, what) in [
        (
            "SELECT count(*) FROM procore_meetings WHERE meeting_date IS DISTINCT FROM (data->>'meeting_date')::date",
            "meeting_date",
        ),
        (
            "SELECT count(*) FROM procore_work_order_contracts
             WHERE grand_total IS DISTINCT FROM (data->>'grand_total')::numeric
                OR vendor_id IS DISTINCT FROM (data->'vendor'->>'id')::bigint OR executed IS NULL",
            "work order grand_total, vendor_id, executed",
        ),
        (
            "SELECT count(*) FROM procore_change_order_packages WHERE due_date IS NULL OR grand_total IS NULL",
            "change order package due_date, grand_total",
        ),
        (
            "SELECT count(*) FROM procore_inspections WHERE inspection_date IS NULL OR inspector_id IS NULL",
            "inspection_date, inspector_id",
        ),
    ] {
        assert_eq!(count(&mut c, sql), 0, "{what}");
    }

    // Values of the wrong shape read NULL; the view still answers.
    c.batch_execute(
        "UPDATE procore_records SET data = data || '{\"meeting_date\": \"2026-02-30\", \"position\": \"first\"}'
         WHERE resource = 'meetings' AND procore_id = (SELECT min(procore_id) FROM procore_records WHERE resource = 'meetings');
         UPDATE procore_records SET data = data || '{\"grand_total\": \"n/a\", \"vendor\": \"Acme\", \"executed\": \"yes\"}'
         WHERE resource = 'work_order_contracts' AND procore_id = (SELECT min(procore_id) FROM procore_records WHERE resource = 'work_order_contracts');
         UPDATE procore_records SET data = data || '{\"due_date\": \"0000-01-01\", \"grand_total\": 1e400}'
         WHERE resource = 'change_order_packages' AND procore_id = (SELECT min(procore_id) FROM procore_records WHERE resource = 'change_order_packages');",
    )
    .expect("odd values");
    for (sql, expected, what) in [
        (
            "SELECT count(*) FROM procore_meetings WHERE meeting_date IS NULL AND position IS NULL",
            1,
            "February 30th and a word for a number",
        ),
        (
            "SELECT count(*) FROM procore_work_order_contracts
             WHERE grand_total IS NULL AND vendor_id IS NULL AND vendor_name IS NULL AND executed IS NULL",
            1,
            "a word for an amount, a string for the vendor, text for a boolean",
        ),
        (
            "SELECT count(*) FROM procore_change_order_packages WHERE due_date IS NULL AND grand_total IS NULL",
            1,
            "year zero and an exponent",
        ),
    ] {
        assert_eq!(count(&mut c, sql), expected, "{what}");
    }
    assert!(
        count(
            &mut c,
            "SELECT count(*) FROM procore_meetings WHERE meeting_date IS NOT NULL"
        ) >= 4,
        "the other meetings keep their dates"
    );
}
