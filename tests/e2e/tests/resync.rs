//! `procore_sync_resync(resource, company_id)`: the next sync reads that resource in full
//! (in that company only, when given), which is what reveals deletions Procore has no
//! listing for, while every other resource stays incremental and untouched. The user's
//! grants (cursor rows) survive it, it queues nobody, and it is not for PUBLIC.

use procore_sync_e2e::{Env, LoggedRequest};
use serde_json::json;
use uuid::Uuid;

const USER: &str = "user-1";

struct T {
    env: Env,
    user: Uuid,
}

impl T {
    fn start() -> T {
        let world = json!({
            "users": 1,
            "companies_per_user": 2,
            "projects_per_company": 1,
            "records_per_resource": 6,
            "per_page_default": 100,
            "rate_limit_spike": 100000,
            "rate_limit_hour": 1000000,
        });
        // A day between full passes: without a re-sync every pass below is incremental.
        let env = Env::new(world, &[("procore_sync.full_sync_interval", "1d")])
            .expect("start the stand-in and the cluster");
        let mut c = env.client().expect("connect");
        c.batch_execute(
            "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job",
        )
        .expect("switch off the default jobs");
        let user = Uuid::new_v4();
        env.connect_user(&mut c, user, USER)
            .expect("connect user-1");
        T { env, user }
    }

    fn client(&self) -> postgres::Client {
        self.env.client().expect("connect")
    }

    fn sync(&self, c: &mut postgres::Client) {
        let row = c
            .query_one(
                "SELECT status, error_message FROM procore_sync_user($1)",
                &[&self.user],
            )
            .expect("procore_sync_user()");
        let (status, error): (String, Option<String>) = (row.get(0), row.get(1));
        assert_eq!(status, "completed", "the sync failed: {error:?}");
    }

    fn last_seq(&self) -> u64 {
        self.requests_since(0).last().map(|r| r.seq).unwrap_or(0)
    }

    /// API reads of one resource since `seq`.
    /// The listings of `resource` read since `seq`; not its lists of deleted records (recycle
    /// bins, `filters[include_deleted]`), which every incremental pass reads whole.
    fn reads_since(&self, seq: u64, resource: &str) -> Vec<LoggedRequest> {
        self.requests_since(seq)
            .into_iter()
            .filter(|r| r.is_api() && r.resource.as_deref() == Some(resource))
            .filter(|r| !r.path.contains("recycle_bin") && !r.query.contains("include_deleted"))
            .collect()
    }

    fn requests_since(&self, seq: u64) -> Vec<LoggedRequest> {
        LoggedRequest::parse_all(
            self.env
                .standin
                .requests_since(seq)
                .expect("the stand-in's request log"),
        )
    }

    fn delete(&self, resource: &str, id: i64) {
        self.env
            .standin
            .mutate(json!({"action": "delete", "resource": resource, "id": id}))
            .unwrap_or_else(|e| panic!("delete {resource} {id} at Procore: {e:#}"));
    }
}

fn resync(c: &mut postgres::Client, resource: &str, company: Option<i64>) -> i32 {
    c.query_one("SELECT procore_sync_resync($1, $2)", &[&resource, &company])
        .unwrap_or_else(|e| panic!("procore_sync_resync({resource}, {company:?}): {e}"))
        .get(0)
}

fn deleted(c: &mut postgres::Client, resource: &str, company: i64, id: i64) -> bool {
    c.query_one(
        "SELECT deleted_at IS NOT NULL FROM procore_records
         WHERE resource = $1 AND company_id = $2 AND procore_id = $3",
        &[&resource, &company, &id],
    )
    .unwrap_or_else(|e| panic!("{resource} {id} is stored: {e}"))
    .get(0)
}

fn count(c: &mut postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).expect(sql).get(0)
}

/// Every read has `filters[updated_at]` (incremental) or none has (full).
fn windows(reads: &[LoggedRequest]) -> (usize, usize) {
    let filtered = reads
        .iter()
        .filter(|r| r.updated_at_window().is_some())
        .count();
    (filtered, reads.len() - filtered)
}

#[test]
fn resync_reads_one_resource_in_full_and_leaves_the_others_incremental() {
    let t = T::start();
    let mut c = t.client();
    t.sync(&mut c);

    let companies: Vec<i64> = c
        .query(
            "SELECT procore_id FROM procore_records WHERE resource = 'companies' ORDER BY 1",
            &[],
        )
        .expect("companies")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(companies.len(), 2, "the world gives user-1 two companies");
    let (a, b) = (companies[0], companies[1]);
    let project_a: i64 = c
        .query_one(
            "SELECT procore_id FROM procore_records WHERE resource = 'projects' AND company_id = $1",
            &[&a],
        )
        .expect("company A's project")
        .get(0);
    let rfi_a = project_a * 100000 + 2;
    let (vendor_a, vendor_b) = (a * 100000 + 5, b * 100000 + 5);
    for (resource, company, id) in [
        ("rfis", a, rfi_a),
        ("vendors", a, vendor_a),
        ("vendors", b, vendor_b),
    ] {
        assert!(
            !deleted(&mut c, resource, company, id),
            "{resource} {id} synced"
        );
        t.delete(resource, id);
    }

    // An incremental pass cannot see a deletion: this is what a re-sync is for.
    t.sync(&mut c);
    assert!(!deleted(&mut c, "vendors", a, vendor_a));

    let cursors_before = count(&mut c, "SELECT count(*) FROM procore_sync_cursor");
    let rfi_scopes = count(
        &mut c,
        "SELECT count(*) FROM procore_sync_cursor WHERE resource = 'rfis'",
    );
    assert_eq!(rfi_scopes, 2, "one RFI scope per project");
    assert_eq!(resync(&mut c, "rfis", None), 2, "both RFI scopes reset");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM procore_sync_cursor"),
        cursors_before,
        "the cursor rows (the user's grants) are kept"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM procore_sync_cursor WHERE listed_at IS NULL"
        ),
        0,
        "every grant still holds"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM procore_sync_queue WHERE status IN ('pending', 'processing')"
        ),
        0,
        "a re-sync queues nobody: it waits for the next sync"
    );

    let seq = t.last_seq();
    t.sync(&mut c);
    let rfis = t.reads_since(seq, "rfis");
    assert_eq!(rfis.len(), 2, "one RFI list per project: {rfis:?}");
    assert_eq!(
        windows(&rfis),
        (0, 2),
        "the RFIs are read in full: {rfis:?}"
    );
    for other in [
        "vendors",
        "submittals",
        "punch_items",
        "observations",
        "change_events",
    ] {
        let reads = t.reads_since(seq, other);
        assert!(!reads.is_empty(), "{other} were read");
        assert_eq!(
            windows(&reads).1,
            0,
            "{other} stay incremental: {:?}",
            reads.iter().map(LoggedRequest::target).collect::<Vec<_>>()
        );
    }
    assert!(
        deleted(&mut c, "rfis", a, rfi_a),
        "the full pass marked the deleted RFI"
    );
    assert!(
        !deleted(&mut c, "vendors", a, vendor_a) && !deleted(&mut c, "vendors", b, vendor_b),
        "vendors were not re-read, so their deletions are not seen yet"
    );

    // One company: only its scopes are read in full, and the last re-sync was one-shot.
    assert_eq!(
        resync(&mut c, "vendors", Some(b)),
        1,
        "company B's vendor scope"
    );
    let seq = t.last_seq();
    t.sync(&mut c);
    let vendors = t.reads_since(seq, "vendors");
    let of = |company: i64| -> Vec<LoggedRequest> {
        vendors
            .iter()
            .filter(|r| r.company_id == Some(company))
            .cloned()
            .collect()
    };
    assert_eq!(
        windows(&of(b)),
        (0, 1),
        "company B's vendors in full: {vendors:?}"
    );
    assert_eq!(
        windows(&of(a)),
        (1, 0),
        "company A's vendors incremental: {vendors:?}"
    );
    assert_eq!(
        windows(&t.reads_since(seq, "rfis")),
        (2, 0),
        "RFIs are incremental again after their full pass"
    );
    assert!(
        deleted(&mut c, "vendors", b, vendor_b),
        "company B's deleted vendor is marked"
    );
    assert!(
        !deleted(&mut c, "vendors", a, vendor_a),
        "company A's is not"
    );
}

#[test]
fn resync_refuses_what_it_cannot_do() {
    let t = T::start();
    let mut c = t.client();
    let sqlstate = |c: &mut postgres::Client, sql: &str| -> (String, String) {
        let e = c.batch_execute(sql).expect_err(sql);
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        (db.code().code().to_string(), db.message().to_string())
    };
    let (code, message) = sqlstate(&mut c, "SELECT procore_sync_resync('rfiz')");
    assert_eq!(code, "22023", "{message}");
    assert!(
        message.contains("\"rfiz\"") && message.contains("procore_sync_resource"),
        "the message names the resource and where resources are: {message}"
    );
    let (code, message) = sqlstate(&mut c, "SELECT procore_sync_resync(NULL)");
    assert_eq!(code, "22004", "{message}");
    // A known resource nobody has synced yet, or a company nobody syncs: nothing to reset.
    assert_eq!(resync(&mut c, "rfis", None), 0);
    assert_eq!(resync(&mut c, "rfis", Some(424242)), 0);

    c.batch_execute("CREATE ROLE resync_app LOGIN")
        .expect("create a role");
    let mut app = t
        .env
        .cluster
        .client_for("postgres", "resync_app")
        .expect("connect as resync_app");
    let (code, message) = sqlstate(&mut app, "SELECT procore_sync_resync('rfis')");
    assert_eq!(code, "42501", "not executable by PUBLIC: {message}");
    c.batch_execute("GRANT EXECUTE ON FUNCTION procore_sync_resync(text, bigint) TO resync_app")
        .expect("grant");
    let n: i32 = app
        .query_one("SELECT procore_sync_resync('rfis')", &[])
        .expect("granted, it runs as the extension owner")
        .get(0);
    assert_eq!(n, 0);
}
