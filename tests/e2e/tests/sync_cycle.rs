//! SPEC §3 end to end: users connected through SQL, the schedule (shortened) syncs them, every
//! record the stand-in holds ends up in `procore_records` exactly once, and a second cycle
//! changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use procore_sync_e2e::{stored_record_keys, wait_until, Env, RecordKey};
use serde_json::{json, Value};

const USERS: usize = 8;
const PROJECTS: i64 = USERS as i64 * 2;

type Snapshot = BTreeMap<(String, i64, i64), (String, Value)>;

#[test]
fn scheduled_cycle_stores_every_record_once_and_a_second_cycle_changes_nothing() {
    let world = json!({
        "users": USERS,
        "companies_per_user": 1,
        "projects_per_company": 2,
        "records_per_resource": 30,
        // 30 records at 7 a page: five pages per list, the last one partial.
        "per_page_default": 7,
        // Rate limiting has its own tests; here it would only make the cycle slow.
        "rate_limit_spike": 1000,
    });
    let env = Env::new(world, &[("procore_sync.max_workers", "4")])
        .expect("start the stand-in and the cluster");
    let check = |result: Result<()>, what: &str| {
        if let Err(e) = result {
            panic!(
                "{what}: {e:#}\n--- server log (tail) ---\n{}",
                env.cluster.log_tail(60)
            );
        }
    };
    let users = env
        .connect_users(USERS)
        .expect("connect users through procore_connect");
    assert_eq!(users.len(), USERS);
    let mut client = env.client().expect("connect to the cluster");
    // The catalog asks for 100 a page; 7 makes every list span several pages, so the
    // test follows Link: rel="next" to the end.
    client
        .batch_execute("UPDATE procore_sync_resource SET per_page = 7")
        .expect("set a small page size");

    for (job, schedule, command) in [
        (
            "procore-queue-sync-every-10-minutes",
            "2 seconds",
            "SELECT queue_procore_sync_for_all_users()",
        ),
        (
            "procore-process-queue-every-minute",
            "1 seconds",
            "SELECT process_procore_sync_queue()",
        ),
    ] {
        client
            .query_one(
                "SELECT procore_sync_schedule($1, $2, $3)",
                &[&job, &schedule, &command],
            )
            .unwrap_or_else(|e| panic!("procore_sync_schedule({job}): {e}"));
    }

    let expected: BTreeSet<RecordKey> = env
        .standin
        .records()
        .expect("stand-in records")
        .into_iter()
        .collect();
    assert!(
        expected.len() > 1000,
        "the world is big enough to page: {}",
        expected.len()
    );

    // First cycle: everyone synced, and the table holds exactly the stand-in's records.
    check(
        wait_until(
            Duration::from_secs(180),
            Duration::from_millis(500),
            "every user synced and procore_records \
                   equal to the stand-in's records",
            || {
                fail_on_failed_items(&mut client)?;
                if users_synced_since(&mut client, None)? < USERS {
                    return Ok(false);
                }
                Ok(stored_record_keys(&mut client)? == expected)
            },
        ),
        "first cycle",
    );
    let total: i64 = client
        .query_one("SELECT count(*) FROM procore_records", &[])
        .expect("count")
        .get(0);
    assert_eq!(
        total as usize,
        expected.len(),
        "no extra rows, deleted or not, beyond the stand-in's records"
    );
    let served: BTreeSet<RecordKey> = env
        .standin
        .served()
        .expect("served records")
        .into_iter()
        .collect();
    assert_eq!(
        served, expected,
        "the stand-in served every record it holds, and nothing else"
    );

    let followed_next = env
        .standin
        .requests_since(0)
        .expect("request log")
        .iter()
        .any(|r| r["query"].as_str().is_some_and(|q| q.contains("page=5")));
    assert!(
        followed_next,
        "lists were read to their fifth page through Link: rel=\"next\""
    );

    check_typed_views(&mut client, &expected);

    // Second cycle: only syncs that start after the snapshot count, so none of the first
    // cycle's writes can land after it.
    let before = snapshot(&mut client);
    let snapshot_at: DateTime<Utc> = client
        .query_one("SELECT clock_timestamp()", &[])
        .expect("clock")
        .get(0);
    check(
        wait_until(
            Duration::from_secs(120),
            Duration::from_millis(500),
            "a second full cycle",
            || {
                fail_on_failed_items(&mut client)?;
                Ok(users_synced_since(&mut client, Some(snapshot_at))? >= USERS)
            },
        ),
        "second cycle",
    );
    let after = snapshot(&mut client);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "a second cycle adds and removes no rows"
    );
    let changed: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .take(10)
        .collect();
    assert!(
        changed.is_empty(),
        "a second cycle rewrote unchanged rows (xmin or data differ), e.g. {changed:?}"
    );

    check_job_runs(&mut client);
}

/// A failed item means the sync broke; waiting longer would only hide why.
fn fail_on_failed_items(client: &mut postgres::Client) -> Result<()> {
    let rows = client.query(
        "SELECT user_id::text, attempts, coalesce(error_message, '') FROM procore_sync_queue WHERE status = 'failed'",
        &[],
    )?;
    if let Some(row) = rows.first() {
        let (user, attempts, message): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
        bail!(
            "{} queue item(s) failed, e.g. user {user} after {attempts} attempts: {message}",
            rows.len()
        );
    }
    Ok(())
}

/// How many users have a completed sync (that started after `since`, if given).
fn users_synced_since(
    client: &mut postgres::Client,
    since: Option<DateTime<Utc>>,
) -> Result<usize> {
    let n: i64 = client
        .query_one(
            "SELECT count(DISTINCT user_id) FROM procore_sync_queue \
             WHERE status = 'completed' AND ($1::timestamptz IS NULL OR started_at > $1)",
            &[&since],
        )?
        .get(0);
    Ok(n as usize)
}

fn snapshot(client: &mut postgres::Client) -> Snapshot {
    client
        .query(
            "SELECT resource, company_id, procore_id, xmin::text, data FROM procore_records",
            &[],
        )
        .expect("snapshot procore_records")
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2)), (r.get(3), r.get(4))))
        .collect()
}

fn check_typed_views(client: &mut postgres::Client, expected: &BTreeSet<RecordKey>) {
    for (view, name_column, resource) in [
        ("procore_companies", "name", "companies"),
        ("procore_projects", "name", "projects"),
        ("procore_rfis", "subject", "rfis"),
        ("procore_submittals", "title", "submittals"),
    ] {
        let want = expected.iter().filter(|k| k.resource == resource).count() as i64;
        // View and column names are fixed strings from this list, not input.
        let row = client
            .query_one(
                &format!("SELECT count(*), count({name_column}) FROM {view}"),
                &[],
            )
            .unwrap_or_else(|e| panic!("query {view}: {e}"));
        let (rows, named): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            rows, want,
            "{view} has one row per stand-in {resource} record"
        );
        assert_eq!(named, rows, "every row of {view} has a {name_column}");
    }
    // Record i = 3 of each project tool carries quotes, SQL and non-ASCII in its title.
    let tricky: i64 = client
        .query_one(
            "SELECT count(*) FROM procore_rfis WHERE subject LIKE $1",
            &[&"%O'Brien \"quoted\"; DROP TABLE x; -- ünïcødé ✓%"],
        )
        .expect("query tricky subjects")
        .get(0);
    assert_eq!(
        tricky, PROJECTS,
        "the tricky RFI subject survives byte for byte in every project"
    );
}

fn check_job_runs(client: &mut postgres::Client) {
    for job in [
        "procore-queue-sync-every-10-minutes",
        "procore-process-queue-every-minute",
    ] {
        let rows = client
            .query(
                "SELECT status, coalesce(return_message, '') FROM procore_sync_job_run_details WHERE jobname = $1",
                &[&job],
            )
            .expect("query job run details");
        let succeeded = rows
            .iter()
            .filter(|r| r.get::<_, Option<String>>(0).as_deref() == Some("succeeded"))
            .count();
        assert!(succeeded > 0, "{job} has succeeded runs");
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| r.get::<_, Option<String>>(0).as_deref() == Some("failed"))
            .map(|r| r.get(1))
            .collect();
        assert!(failed.is_empty(), "{job} has failed runs: {failed:?}");
    }
}
