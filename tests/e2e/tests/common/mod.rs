//! Helpers shared by `faults.rs` and `security.rs`: small worlds, reconnecting clients,
//! driving and draining a sync cycle, the SPEC §7 end-of-test checks (every served record
//! stored exactly once, every queue item finished with a reason) and the secret leak watch.

#![allow(dead_code)] // each test crate uses its own subset

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use postgres::fallible_iterator::FallibleIterator;
use procore_sync_e2e::{Cluster, Env, RecordKey, Standin};
use serde_json::{json, Value};
use uuid::Uuid;

/// Long enough for a loaded 2-core machine shared with other clusters.
pub const CYCLE_TIMEOUT: Duration = Duration::from_secs(240);
pub const POLL: Duration = Duration::from_millis(200);

pub const QUEUE_JOB: &str = "procore-queue-sync-every-10-minutes";
pub const PROCESS_JOB: &str = "procore-process-queue-every-minute";

/// A world of `users` logins with 1 company and 2 projects each, 25 records per resource at
/// 10 a page (3 pages per list): 328 records per user. `extra` overrides any field. A client
/// secret unique to the test makes the leak check specific.
pub fn small_world(users: usize, extra: Value) -> Value {
    let mut world = json!({
        "users": users,
        "companies_per_user": 1,
        "projects_per_company": 2,
        "records_per_resource": 25,
        "per_page_default": 10,
        // Pacing has its own tests; here it would only make cycles slow.
        "rate_limit_spike": 100000,
        "rate_limit_hour": 1000000,
        "client_secret": format!("cs-{}", Uuid::new_v4().simple()),
    });
    if let (Some(w), Value::Object(extra)) = (world.as_object_mut(), extra) {
        for (k, v) in extra {
            w.insert(k, v);
        }
    }
    world
}

/// Starts the stand-in and the cluster, with `max_workers = 2` unless overridden.
pub fn start_env(world: Value, settings: &[(&str, &str)]) -> Env {
    let mut all = vec![("procore_sync.max_workers", "2")];
    all.extend_from_slice(settings);
    Env::new(world, &all).expect("start the stand-in and the cluster")
}

/// A superuser connection, retried while the server restarts (crash recovery, restarts).
pub fn connect(cluster: &Cluster) -> postgres::Client {
    connect_as(cluster, "postgres")
}

pub fn connect_as(cluster: &Cluster, user: &str) -> postgres::Client {
    let start = Instant::now();
    loop {
        match cluster.client_for("postgres", user) {
            Ok(c) => return c,
            Err(e) if start.elapsed() < Duration::from_secs(90) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!(
                "cannot connect as {user}: {e:#}\n--- server log (tail) ---\n{}",
                cluster.log_tail(60)
            ),
        }
    }
}

/// Panics with the server log's tail, so a failed wait explains itself.
pub fn ok_or_log<T>(cluster: &Cluster, result: Result<T>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!(
            "{what}: {e:#}\n--- server log (tail) ---\n{}",
            cluster.log_tail(80)
        ),
    }
}

/// Sets the two default jobs: `None` deactivates one.
pub fn set_jobs(client: &mut postgres::Client, queue: Option<&str>, process: Option<&str>) {
    for (job, schedule) in [(QUEUE_JOB, queue), (PROCESS_JOB, process)] {
        let jobid: i64 = client
            .query_one(
                "SELECT jobid FROM procore_sync_job WHERE jobname = $1",
                &[&job],
            )
            .unwrap_or_else(|e| panic!("find job {job}: {e}"))
            .get(0);
        match schedule {
            Some(s) => {
                client
                    .execute(
                        "SELECT procore_sync_alter_job($1, schedule => $2, active => true)",
                        &[&jobid, &s],
                    )
                    .unwrap_or_else(|e| panic!("reschedule {job}: {e}"));
            }
            None => {
                client
                    .execute(
                        "SELECT procore_sync_alter_job($1, active => false)",
                        &[&jobid],
                    )
                    .unwrap_or_else(|e| panic!("deactivate {job}: {e}"));
            }
        }
    }
}

/// The usual set-up of a fault test: only the process job runs (every second), so a cycle
/// is started by `queue_all` and the test decides when work exists.
pub fn process_every_second(client: &mut postgres::Client) {
    set_jobs(client, None, Some("1 seconds"));
}

pub fn queue_all(client: &mut postgres::Client) -> i32 {
    client
        .query_one("SELECT queue_procore_sync_for_all_users()", &[])
        .expect("queue_procore_sync_for_all_users()")
        .get(0)
}

pub fn now(client: &mut postgres::Client) -> chrono::DateTime<chrono::Utc> {
    client
        .query_one("SELECT clock_timestamp()", &[])
        .expect("clock_timestamp()")
        .get(0)
}

/// Queue counts by status.
pub fn queue_counts(client: &mut postgres::Client) -> Result<BTreeMap<String, i64>> {
    let rows = client.query(
        "SELECT status, count(*) FROM procore_sync_queue GROUP BY status",
        &[],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Waits (reconnecting across restarts) until every one of `users` has a completed item
/// that started after `since` and nothing is pending or processing any more.
pub fn wait_cycle_done(
    cluster: &Cluster,
    users: &[(Uuid, String)],
    since: chrono::DateTime<chrono::Utc>,
    timeout: Duration,
) {
    let start = Instant::now();
    let mut last;
    loop {
        let state = (|| -> Result<(i64, i64, String)> {
            let mut c = cluster.client()?;
            let ids: Vec<Uuid> = users.iter().map(|(u, _)| *u).collect();
            let done: i64 = c
                .query_one(
                    "SELECT count(DISTINCT user_id) FROM procore_sync_queue \
                     WHERE status = 'completed' AND started_at > $1 AND user_id = ANY($2)",
                    &[&since, &ids],
                )?
                .get(0);
            let open: i64 = c
                .query_one(
                    "SELECT count(*) FROM procore_sync_queue WHERE status IN ('pending', 'processing')",
                    &[],
                )?
                .get(0);
            Ok((done, open, format!("{:?}", queue_counts(&mut c)?)))
        })();
        match state {
            Ok((done, open, counts)) => {
                if done as usize == users.len() && open == 0 {
                    return;
                }
                last = format!("{done}/{} users done, queue {counts}", users.len());
            }
            Err(e) => last = format!("(server unreachable: {e})"),
        }
        if start.elapsed() > timeout {
            let failed = cluster
                .client()
                .and_then(|mut c| {
                    Ok(c.query(
                        "SELECT user_id::text, status, attempts, coalesce(error_message, '') \
                         FROM procore_sync_queue ORDER BY id",
                        &[],
                    )?
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {} attempts={} {}",
                            r.get::<_, String>(0),
                            r.get::<_, String>(1),
                            r.get::<_, i32>(2),
                            r.get::<_, String>(3)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"))
                })
                .unwrap_or_default();
            panic!(
                "cycle not done after {timeout:?}: {last}\nqueue:\n{failed}\n--- server log (tail) ---\n{}",
                cluster.log_tail(80)
            );
        }
        std::thread::sleep(POLL);
    }
}

/// SPEC §7 "no lost work": every queue item ended `completed` or `failed` with a reason.
pub fn assert_every_item_finished(client: &mut postgres::Client) {
    let rows = client
        .query(
            "SELECT id, user_id::text, status, coalesce(error_message, '') FROM procore_sync_queue ORDER BY id",
            &[],
        )
        .expect("read the queue");
    assert!(!rows.is_empty(), "the test produced queue items");
    for r in &rows {
        let (id, user, status, message): (i64, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert!(
            status == "completed" || status == "failed",
            "queue item {id} (user {user}) ended as {status:?}, not completed/failed"
        );
        if status == "failed" {
            assert!(
                !message.trim().is_empty(),
                "failed queue item {id} (user {user}) has no error_message"
            );
        }
    }
}

/// Failed items, as `(user_id, error_message)`.
pub fn failed_items(client: &mut postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT user_id::text, coalesce(error_message, '') FROM procore_sync_queue WHERE status = 'failed'",
            &[],
        )
        .expect("read failed items")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn key_set(keys: Vec<RecordKey>) -> BTreeSet<RecordKey> {
    keys.into_iter().collect()
}

/// SPEC §7 "no lost work, no double work" on the data: every record the stand-in served is
/// stored exactly once, live, and `procore_records` holds exactly the stand-in's records.
pub fn assert_records_exactly_once(env: &Env, client: &mut postgres::Client) {
    let expected = key_set(env.standin.records().expect("stand-in records"));
    let served = key_set(env.standin.served().expect("stand-in served records"));
    let dups: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM procore_records \
             GROUP BY resource, company_id, procore_id HAVING count(*) > 1) d",
            &[],
        )
        .expect("count duplicates")
        .get(0);
    assert_eq!(dups, 0, "no record is stored twice");
    let rows = client
        .query(
            "SELECT resource, company_id, procore_id, deleted_at IS NOT NULL FROM procore_records",
            &[],
        )
        .expect("read procore_records");
    let mut live = BTreeSet::new();
    let mut deleted = Vec::new();
    for r in &rows {
        let key = RecordKey {
            resource: r.get(0),
            company_id: r.get(1),
            id: r.get(2),
        };
        if r.get::<_, bool>(3) {
            deleted.push(key);
        } else {
            live.insert(key);
        }
    }
    let lost: Vec<_> = served.difference(&live).take(10).collect();
    assert!(
        lost.is_empty(),
        "{} record(s) the stand-in served are not stored (live), e.g. {lost:?}",
        served.difference(&live).count()
    );
    assert!(
        deleted.is_empty(),
        "{} existing record(s) were marked deleted, e.g. {:?}",
        deleted.len(),
        &deleted[..deleted.len().min(5)]
    );
    let missing: Vec<_> = expected.difference(&live).take(10).collect();
    let extra: Vec<_> = live.difference(&expected).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "procore_records differs from the stand-in: {} missing (e.g. {missing:?}), {} extra (e.g. {extra:?})",
        expected.difference(&live).count(),
        live.difference(&expected).count()
    );
    assert_eq!(rows.len(), expected.len(), "one row per stand-in record");
}

/// Both end-of-test checks of a fault test.
pub fn assert_no_lost_or_double_work(env: &Env) {
    let mut client = connect(&env.cluster);
    assert_every_item_finished(&mut client);
    assert_records_exactly_once(env, &mut client);
}

/// `pg_stat_activity` rows of one backend type: `(pid, query)`.
pub fn backends(client: &mut postgres::Client, backend_type: &str) -> Vec<(i32, String)> {
    client
        .query(
            "SELECT pid, coalesce(query, '') FROM pg_stat_activity WHERE backend_type = $1",
            &[&backend_type],
        )
        .expect("read pg_stat_activity")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

pub fn kill9(pid: i32) {
    assert!(pid > 0, "refusing to kill pid {pid}");
    // SAFETY: a plain kill(2) of one process id we looked up in pg_stat_activity.
    let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
}

pub fn count_in_log(cluster: &Cluster, needle: &str) -> usize {
    cluster.log().matches(needle).count()
}

/// Waits until the postmaster has restarted everything after a crash (the log says so)
/// and a scheduler other than `old_scheduler` runs.
pub fn wait_crash_restart(cluster: &Cluster, reinits_before: usize, old_scheduler: Option<i32>) {
    ok_or_log(
        cluster,
        procore_sync_e2e::wait_until(
            Duration::from_secs(120),
            POLL,
            "the postmaster to reinitialize and restart the scheduler",
            || {
                if count_in_log(cluster, "all server processes terminated; reinitializing")
                    <= reinits_before
                {
                    return Ok(false);
                }
                let Ok(mut c) = cluster.client() else {
                    return Ok(false);
                };
                let pids = backends(&mut c, "procore_sync scheduler");
                Ok(pids.len() == 1 && Some(pids[0].0) != old_scheduler)
            },
        ),
        "crash restart",
    );
}

/// The harness's connections: the statements this suite itself types (always with bind
/// parameters, except the deliberate literals of the log-hook tests, which a session's
/// own `pg_stat_activity` row shows as typed) are not the product's output.
pub const TEST_CLIENTS: &str = "procore_sync_e2e";

/// Watches everything a secret could leak into while a test runs: NOTIFY payloads (a
/// LISTEN client) and `pg_stat_activity` of every process but the test's own clients
/// (sampled every 50 ms), reconnecting across restarts. `finish` adds the server log, `error_message`, `return_message` and the other
/// stored messages, and asserts that none holds a token, code or client secret that any of
/// the given stand-ins issued.
pub struct LeakWatch {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    payloads: Arc<Mutex<Vec<String>>>,
    activity: Arc<Mutex<BTreeSet<String>>>,
    samples: Arc<Mutex<u64>>,
    client_errors: Mutex<Vec<String>>,
}

impl LeakWatch {
    pub fn start(cluster: &Cluster) -> LeakWatch {
        let port = cluster.port();
        let stop = Arc::new(AtomicBool::new(false));
        let payloads = Arc::new(Mutex::new(Vec::new()));
        let activity = Arc::new(Mutex::new(BTreeSet::new()));
        let samples = Arc::new(Mutex::new(0u64));
        let (s, p, a, n) = (
            stop.clone(),
            payloads.clone(),
            activity.clone(),
            samples.clone(),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            while !s.load(Ordering::SeqCst) {
                let session = (|| -> Result<()> {
                    let mut client = postgres::Config::new()
                        .host("127.0.0.1")
                        .port(port)
                        .user("postgres")
                        .dbname("postgres")
                        .application_name("procore_sync_e2e leak watch")
                        .connect_timeout(Duration::from_secs(5))
                        .connect(postgres::NoTls)?;
                    client.batch_execute("LISTEN procore_sync")?;
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                    while !s.load(Ordering::SeqCst) {
                        {
                            let mut notifications = client.notifications();
                            let mut it = notifications.timeout_iter(Duration::from_millis(50));
                            while let Some(n) = it.next()? {
                                p.lock().unwrap().push(n.payload().to_string());
                            }
                        }
                        let rows = client.query(
                            "SELECT coalesce(query, '') FROM pg_stat_activity \
                             WHERE pid <> pg_backend_pid() AND application_name <> $1",
                            &[&TEST_CLIENTS],
                        )?;
                        let mut set = a.lock().unwrap();
                        for r in rows {
                            set.insert(r.get::<_, String>(0));
                        }
                        *n.lock().unwrap() += 1;
                    }
                    Ok(())
                })();
                if session.is_err() {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        });
        // Listening before the test does anything, so no payload is missed.
        let _ = ready_rx.recv_timeout(Duration::from_secs(30));
        LeakWatch {
            stop,
            handle: Some(handle),
            payloads,
            activity,
            samples,
            client_errors: Mutex::new(Vec::new()),
        }
    }

    /// An error text a client received (also searched for secrets).
    pub fn note(&self, text: impl Into<String>) {
        self.client_errors.lock().unwrap().push(text.into());
    }

    pub fn payloads(&self) -> Vec<String> {
        self.payloads.lock().unwrap().clone()
    }

    pub fn activity(&self) -> BTreeSet<String> {
        self.activity.lock().unwrap().clone()
    }

    /// Stops watching and asserts that no secret any of `standins` issued appears anywhere.
    /// Returns how many texts were searched.
    pub fn finish(mut self, cluster: &Cluster, standins: &[&Standin]) -> usize {
        // One last look at the stored messages while the watch still runs.
        std::thread::sleep(Duration::from_millis(200));
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let mut secrets: BTreeSet<String> = BTreeSet::new();
        for s in standins {
            secrets.extend(s.secrets().expect("stand-in /__admin/secrets"));
            secrets.insert(s.client_secret());
        }
        secrets.retain(|s| s.len() >= 6);
        assert!(
            !secrets.is_empty(),
            "the stand-ins issued secrets to look for"
        );

        let mut texts: Vec<(String, String)> = Vec::new();
        texts.push(("server log".into(), cluster.log()));
        let mut client = connect(cluster);
        for (what, sql) in [
            (
                "procore_sync_queue.error_message",
                "SELECT coalesce(error_message, '') FROM procore_sync_queue",
            ),
            (
                "procore_sync_job_run_details.return_message",
                "SELECT coalesce(return_message, '') FROM procore_sync_job_run_details",
            ),
            (
                "procore_sync_job_run_details.command",
                "SELECT coalesce(command, '') FROM procore_sync_job_run_details",
            ),
            (
                "procore_sync_cursor.last_error",
                "SELECT coalesce(last_error, '') FROM procore_sync_cursor",
            ),
            (
                "procore_sync_credentials.reconnect_reason",
                "SELECT coalesce(reconnect_reason, '') FROM procore_sync_credentials",
            ),
            (
                "procore_sync_user_status.last_error",
                "SELECT coalesce(last_error, '') FROM procore_sync_user_status",
            ),
            (
                "pg_stat_activity.query",
                "SELECT coalesce(query, '') FROM pg_stat_activity \
                 WHERE application_name <> 'procore_sync_e2e'",
            ),
        ] {
            let rows = client
                .query(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            for r in rows {
                texts.push((what.into(), r.get(0)));
            }
        }
        for p in self.payloads.lock().unwrap().iter() {
            texts.push(("NOTIFY payload".into(), p.clone()));
        }
        for a in self.activity.lock().unwrap().iter() {
            texts.push(("pg_stat_activity sample".into(), a.clone()));
        }
        for e in self.client_errors.lock().unwrap().iter() {
            texts.push(("error returned to a client".into(), e.clone()));
        }
        let samples = *self.samples.lock().unwrap();
        assert!(samples > 0, "the leak watch sampled pg_stat_activity");

        let mut hits = Vec::new();
        for secret in &secrets {
            for (what, text) in &texts {
                if let Some(pos) = text.find(secret.as_str()) {
                    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
                    let line_end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
                    hits.push(format!(
                        "secret {}… in {what}: {}",
                        &secret[..secret.len().min(6)],
                        text[line_start..line_end].replace(secret.as_str(), "[SECRET]")
                    ));
                }
            }
        }
        assert!(
            hits.is_empty(),
            "{} secret leak(s) found ({} secrets, {} texts searched):\n{}",
            hits.len(),
            secrets.len(),
            texts.len(),
            hits.join("\n")
        );
        texts.len()
    }
}

/// The first `SqlState` of a failed statement, with a readable panic if it succeeded or
/// failed on the client side.
pub fn db_error<T: std::fmt::Debug>(
    result: std::result::Result<T, postgres::Error>,
    what: &str,
) -> postgres::error::DbError {
    match result {
        Ok(v) => panic!("{what} succeeded ({v:?}) but should have failed"),
        Err(e) => e
            .as_db_error()
            .cloned()
            .unwrap_or_else(|| panic!("{what}: not a server error: {e}")),
    }
}

/// Polls `f` until it returns true, failing with the server log on timeout.
pub fn wait_for(cluster: &Cluster, timeout: Duration, what: &str, f: impl FnMut() -> Result<bool>) {
    ok_or_log(
        cluster,
        procore_sync_e2e::wait_until(timeout, Duration::from_millis(50), what, f),
        what,
    )
}

/// The request log entries of the stand-in as `(path, login, status)`.
pub fn request_log(standin: &Standin) -> Vec<Value> {
    standin.requests_since(0).expect("stand-in request log")
}

pub fn bail_if(cond: bool, msg: &str) -> Result<()> {
    if cond {
        bail!("{msg}")
    }
    Ok(())
}

pub fn context<T>(r: std::result::Result<T, postgres::Error>, what: &str) -> Result<T> {
    r.with_context(|| what.to_string())
}
