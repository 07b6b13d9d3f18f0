//! Self-test of the harness: needs PostgreSQL 15 but not the extension (nothing is
//! preloaded), and the stand-in binary for the stand-in part.

#![allow(clippy::result_large_err)] // ureq 2's error carries the whole response

use std::time::Duration;

use procore_sync_e2e::{standin_binary, wait_until, Cluster, ClusterOptions, Standin, StopMode};
use serde_json::json;

#[test]
fn cluster_starts_restarts_and_logs() {
    let mut cluster =
        Cluster::start(ClusterOptions::without_preload()).expect("start a bare cluster");
    let dir = cluster.dir().to_path_buf();

    let one: i32 = cluster
        .client()
        .expect("connect")
        .query_one("SELECT 1", &[])
        .expect("SELECT 1")
        .get(0);
    assert_eq!(one, 1);
    let pid_before = cluster.postmaster_pid().expect("postmaster pid");

    cluster.restart(StopMode::Fast).expect("fast restart");
    let pid_after_fast = cluster
        .postmaster_pid()
        .expect("postmaster pid after fast restart");
    assert_ne!(
        pid_before, pid_after_fast,
        "a restart runs a new postmaster"
    );
    cluster
        .client()
        .expect("connect after fast restart")
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
        .expect("write after fast restart");

    cluster
        .restart(StopMode::Immediate)
        .expect("immediate restart");
    let x: i32 = cluster
        .client()
        .expect("connect after immediate restart")
        .query_one("SELECT x FROM t", &[])
        .expect("read after crash recovery")
        .get(0);
    assert_eq!(x, 7, "committed data survives an immediate stop");

    cluster
        .set_setting("work_mem", "7MB")
        .expect("ALTER SYSTEM");
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(100),
        "work_mem reload",
        || {
            let v: String = cluster.client()?.query_one("SHOW work_mem", &[])?.get(0);
            Ok(v == "7MB")
        },
    )
    .expect("reloaded setting visible to new sessions");

    let log = cluster.log();
    assert!(
        log.contains("database system is ready to accept connections"),
        "log readable:\n{log}"
    );
    assert!(
        log.contains("database system was interrupted") || log.contains("automatic recovery"),
        "the log shows crash recovery after the immediate stop:\n{log}"
    );

    drop(cluster);
    let kept = std::env::var("PROCORE_E2E_KEEP").as_deref() == Ok("1");
    assert!(
        kept || !dir.exists(),
        "dropping the cluster removes {}",
        dir.display()
    );
}

#[test]
fn wait_until_names_what_timed_out() {
    let err = wait_until(
        Duration::from_millis(50),
        Duration::from_millis(10),
        "the moon to turn blue",
        || Ok(false),
    )
    .expect_err("never true");
    assert!(err.to_string().contains("the moon to turn blue"), "{err}");
}

#[test]
fn standin_serves_records_and_oauth() {
    if let Err(e) = standin_binary() {
        eprintln!("skipping the stand-in smoke test: {e:#}");
        return;
    }
    let world = json!({"users": 2, "companies_per_user": 1, "projects_per_company": 1,
                       "records_per_resource": 3, "client_id": "cid", "client_secret": "csecret"});
    let standin = Standin::start(world).expect("start the stand-in");
    assert!(
        standin.base_url().starts_with("http://127.0.0.1:"),
        "{}",
        standin.base_url()
    );
    assert!(standin.health().expect("health"));
    assert_eq!(standin.client_id(), "cid");
    assert_eq!(standin.client_secret(), "csecret");

    let code = standin
        .mint_code("user-1", "http://localhost/callback")
        .expect("mint a code");
    assert!(!code.is_empty());
    let tokens = standin.issue_tokens("user-2").expect("issue tokens");
    let access = tokens["access_token"]
        .as_str()
        .expect("access_token in token response")
        .to_string();
    let secrets = standin.secrets().expect("secrets");
    assert!(
        secrets.contains(&code)
            && secrets.contains(&access)
            && secrets.contains(&"csecret".to_string())
    );

    // user-1 owns company 1001 with project 1001001, whose records are 1001001 * 100000 + i.
    let records = standin.records().expect("records");
    let has = |resource: &str, company_id: i64, id: i64| {
        records
            .iter()
            .any(|r| r.resource == resource && r.company_id == company_id && r.id == id)
    };
    assert!(has("companies", 1001, 1001), "{records:?}");
    assert!(has("projects", 1001, 1001001), "{records:?}");
    assert!(has("rfis", 1001, 1001001 * 100000 + 1), "{records:?}");
    assert!(has("vendors", 2001, 2001 * 100000 + 3), "{records:?}");
    assert!(
        standin.served().expect("served").is_empty(),
        "nothing served before any API call"
    );

    // One call to the real API, to see `served` and the request log move.
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let get_companies = || {
        agent
            .get(&format!("{}/rest/v1.0/companies", standin.base_url()))
            .set("Authorization", &format!("Bearer {access}"))
            .call()
    };
    let companies: serde_json::Value = get_companies()
        .expect("GET companies")
        .into_json()
        .expect("companies JSON");
    assert_eq!(companies[0]["id"], 2001, "{companies}");
    let served = standin.served().expect("served");
    assert!(
        served
            .iter()
            .any(|r| r.resource == "companies" && r.id == 2001),
        "{served:?}"
    );
    let log = standin.requests_since(0).expect("request log");
    assert!(
        log.iter()
            .any(|e| e["path"] == "/rest/v1.0/companies" && e["status"] == 200),
        "{log:?}"
    );

    standin
        .add_faults(json!({"kind": "status", "status": 503, "path": "/companies", "times": 1}))
        .expect("add a fault");
    assert!(
        matches!(get_companies(), Err(ureq::Error::Status(503, _))),
        "the fault fires once"
    );
    assert!(get_companies().is_ok(), "and only once");
    standin.clear_faults().expect("clear faults");
    assert!(
        standin.stats().expect("stats")["api_requests"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    );
}
