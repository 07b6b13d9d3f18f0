//! SPEC §7 under faults: crashes, restarts, network faults and concurrent callers, each
//! end to end against a real cluster and the stand-in, each ending with the same checks:
//! every record the stand-in served is stored exactly once, every queue item reached
//! `completed` or `failed` with a reason, and no secret leaked anywhere (`LeakWatch`).
//!
//! Worlds are small (3 users, 984 records) so the whole file runs in a few minutes; the
//! repeated kill loop is `#[ignore]`d (`make test-soak`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use postgres::error::SqlState;
use procore_sync_e2e::{Env, StopMode};
use serde_json::{json, Value};
use uuid::Uuid;

const USERS: usize = 3;

fn faults_fired(env: &Env) -> u64 {
    env.standin.stats().expect("stand-in stats")["faults_fired"]
        .as_u64()
        .unwrap_or(0)
}

fn user_of(users: &[(Uuid, String)], login: &str) -> Uuid {
    users
        .iter()
        .find(|(_, l)| l == login)
        .map(|(u, _)| *u)
        .unwrap_or_else(|| panic!("no user {login}"))
}

fn scheduler_pid(client: &mut postgres::Client) -> i32 {
    let pids = backends(client, "procore_sync scheduler");
    assert_eq!(pids.len(), 1, "exactly one scheduler runs: {pids:?}");
    pids[0].0
}

/// Job runs interrupted by a crash or restart are closed by the scheduler, never left
/// `starting`/`running` (pg_cron's stuck rows).
fn assert_no_run_left_open(env: &Env, before: chrono::DateTime<chrono::Utc>) {
    wait_for(
        &env.cluster,
        Duration::from_secs(60),
        "job runs from before the crash to be closed",
        || {
            let mut c = env.cluster.client()?;
            let open: i64 = c
                .query_one(
                    "SELECT count(*) FROM procore_sync_job_run_details \
                     WHERE status IN ('starting', 'running') AND start_time < $1",
                    &[&before],
                )?
                .get(0);
            Ok(open == 0)
        },
    );
}

/// A sync is under way: some worker has written at least `pages` pages of its user.
fn wait_mid_cycle(env: &Env, pages: i64) {
    wait_for(
        &env.cluster,
        Duration::from_secs(120),
        "a sync to be in the middle of its pages",
        || {
            let mut c = env.cluster.client()?;
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM procore_sync_progress p \
                     JOIN procore_sync_queue q ON q.id = p.queue_id AND q.status = 'processing' \
                     WHERE p.pages >= $1",
                    &[&pages],
                )?
                .get(0);
            Ok(n > 0)
        },
    );
}

// ---------------------------------------------------------------------------------------
// Crashes and restarts
// ---------------------------------------------------------------------------------------

#[test]
fn kill9_of_a_sync_worker_mid_page_loses_nothing() {
    let env = start_env(small_world(USERS, json!({})), &[]);
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(USERS).expect("connect users");
    let victim = user_of(&users, "user-2");
    let mut c = connect(&env.cluster);
    process_every_second(&mut c);
    // user-2's first RFI page: the headers arrive, the body does not (for 20 s).
    env.standin
        .add_faults(json!({"kind": "stall", "path": "/rfis", "login": "user-2",
                           "latency_ms": 20000, "times": 1}))
        .expect("add fault");
    let scheduler = scheduler_pid(&mut c);
    let reinits = count_in_log(
        &env.cluster,
        "all server processes terminated; reinitializing",
    );
    let since = now(&mut c);
    assert_eq!(queue_all(&mut c), USERS as i32);

    wait_for(
        &env.cluster,
        Duration::from_secs(120),
        "user-2's worker to be inside the stalled page",
        || Ok(faults_fired(&env) >= 1),
    );
    let pid: i32 = c
        .query_one(
            "SELECT worker_pid FROM procore_sync_queue WHERE user_id = $1 AND status = 'processing'",
            &[&victim],
        )
        .expect("user-2's item is processing")
        .get(0);
    let workers = backends(&mut c, "procore_sync sync worker");
    assert!(
        workers
            .iter()
            .any(|(p, q)| *p == pid && q.contains(&victim.to_string())),
        "pid {pid} is the sync worker of user-2: {workers:?}"
    );
    kill9(pid);
    drop(c);

    wait_crash_restart(&env.cluster, reinits, Some(scheduler));
    assert!(
        env.cluster
            .log()
            .contains(&format!("(PID {pid}) was terminated by signal 9")),
        "the postmaster saw the kill"
    );
    wait_cycle_done(&env.cluster, &users, since, CYCLE_TIMEOUT);
    assert_no_lost_or_double_work(&env);
    assert_no_run_left_open(&env, since);
    let mut c = connect(&env.cluster);
    let attempts: i32 = c
        .query_one(
            "SELECT attempts FROM procore_sync_queue WHERE user_id = $1 AND status = 'completed' \
             ORDER BY id DESC LIMIT 1",
            &[&victim],
        )
        .expect("user-2 completed")
        .get(0);
    assert!(
        attempts >= 2,
        "user-2's item was taken again after the kill (attempts {attempts})"
    );
    watch.finish(&env.cluster, &[&env.standin]);
}

#[test]
fn kill9_of_the_scheduler_mid_cycle_loses_nothing() {
    let env = start_env(small_world(USERS, json!({"latency_ms": 25})), &[]);
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(USERS).expect("connect users");
    let mut c = connect(&env.cluster);
    process_every_second(&mut c);
    let scheduler = scheduler_pid(&mut c);
    let reinits = count_in_log(
        &env.cluster,
        "all server processes terminated; reinitializing",
    );
    let since = now(&mut c);
    assert_eq!(queue_all(&mut c), USERS as i32);
    wait_mid_cycle(&env, 3);
    kill9(scheduler);
    drop(c);

    wait_crash_restart(&env.cluster, reinits, Some(scheduler));
    wait_cycle_done(&env.cluster, &users, since, CYCLE_TIMEOUT);
    assert_no_lost_or_double_work(&env);
    assert_no_run_left_open(&env, since);
    watch.finish(&env.cluster, &[&env.standin]);
}

/// A worker that stops answering without dying (SIGSTOP, as a hung process or a long GC
/// pause would) keeps its pid in `pg_stat_activity`, so only the lease can free its item:
/// after `lease_timeout` another worker takes the user, and the old one, woken up, notices
/// and stops without touching the item or asking Procore for anything more.
#[test]
fn a_frozen_worker_loses_its_item_when_the_lease_runs_out() {
    // One user per worker, so the worker frozen is the one waiting for the stalled page, with
    // no transaction open. (A worker carrying other users could be frozen inside one of their
    // writes, holding locks no lease can take back; concurrency.rs loses a lease in flight
    // without freezing the process.)
    let env = start_env(
        small_world(USERS, json!({})),
        &[
            ("procore_sync.lease_timeout", "5"),
            ("procore_sync.users_per_worker", "1"),
        ],
    );
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(USERS).expect("connect users");
    let victim = user_of(&users, "user-2");
    let mut c = connect(&env.cluster);
    process_every_second(&mut c);
    env.standin
        .add_faults(json!({"kind": "stall", "path": "/rfis", "login": "user-2",
                           "latency_ms": 6000, "times": 1}))
        .expect("add fault");
    let since = now(&mut c);
    assert_eq!(queue_all(&mut c), USERS as i32);
    wait_for(
        &env.cluster,
        Duration::from_secs(120),
        "user-2's worker to be inside the stalled page",
        || Ok(faults_fired(&env) >= 1),
    );
    let pid: i32 = c
        .query_one(
            "SELECT worker_pid FROM procore_sync_queue WHERE user_id = $1 AND status = 'processing'",
            &[&victim],
        )
        .expect("user-2's item is processing")
        .get(0);
    // SAFETY: plain kill(2) of the worker pid read from the queue.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let frozen_at = Instant::now();

    // Another worker finishes user-2 while the first one is frozen.
    wait_cycle_done(&env.cluster, &users, since, CYCLE_TIMEOUT);
    let (holder, status): (Option<i32>, String) = {
        let r = c
            .query_one(
                "SELECT worker_pid, status FROM procore_sync_queue WHERE user_id = $1 \
                 ORDER BY id DESC LIMIT 1",
                &[&victim],
            )
            .expect("user-2's item");
        (r.get(0), r.get(1))
    };
    assert_eq!(status, "completed");
    assert_ne!(holder, Some(pid), "another worker completed user-2");
    let seq = request_log(&env.standin)
        .last()
        .and_then(|e| e["seq"].as_u64())
        .unwrap_or(0);
    assert!(
        frozen_at.elapsed() < Duration::from_secs(25),
        "the takeover came well within the HTTP timeout ({:?})",
        frozen_at.elapsed()
    );

    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    wait_for(
        &env.cluster,
        Duration::from_secs(60),
        "the woken worker to notice it lost the item",
        || {
            Ok(env.cluster.log().lines().any(|l| {
                l.contains(&format!("[{pid}]")) && l.contains("taken over by another worker")
            }))
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let later: Vec<_> = env
        .standin
        .requests_since(seq)
        .expect("request log")
        .into_iter()
        .filter(|e| e["login"] == "user-2")
        .collect();
    assert!(
        later.is_empty(),
        "the woken worker asked Procore for more: {later:?}"
    );
    let (holder_after, status_after): (Option<i32>, String) = {
        let r = c
            .query_one(
                "SELECT worker_pid, status FROM procore_sync_queue WHERE user_id = $1 \
                 ORDER BY id DESC LIMIT 1",
                &[&victim],
            )
            .expect("user-2's item");
        (r.get(0), r.get(1))
    };
    assert_eq!(
        (holder_after, status_after.as_str()),
        (holder, "completed"),
        "the item is untouched"
    );
    assert_eq!(
        count_in_log(&env.cluster, "reinitializing"),
        0,
        "nothing crashed"
    );
    assert_no_lost_or_double_work(&env);
    watch.finish(&env.cluster, &[&env.standin]);
}

fn shutdown_mid_cycle(mode: StopMode) {
    let mut env = start_env(small_world(USERS, json!({"latency_ms": 25})), &[]);
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(USERS).expect("connect users");
    let mut c = connect(&env.cluster);
    process_every_second(&mut c);
    let since = now(&mut c);
    assert_eq!(queue_all(&mut c), USERS as i32);
    wait_mid_cycle(&env, 3);
    drop(c);
    let old_pm = env.cluster.postmaster_pid().expect("postmaster pid");
    let restarted = env.cluster.restart(mode);
    ok_or_log(&env.cluster, restarted, "restart");
    assert_ne!(
        env.cluster.postmaster_pid().expect("postmaster pid"),
        old_pm
    );

    wait_cycle_done(&env.cluster, &users, since, CYCLE_TIMEOUT);
    assert_no_lost_or_double_work(&env);
    assert_no_run_left_open(&env, since);
    watch.finish(&env.cluster, &[&env.standin]);
}

#[test]
fn fast_shutdown_mid_cycle_loses_nothing() {
    shutdown_mid_cycle(StopMode::Fast);
}

#[test]
fn immediate_shutdown_mid_cycle_loses_nothing() {
    shutdown_mid_cycle(StopMode::Immediate);
}

/// The most dangerous window (PROCORE_API.md): Procore rotated the refresh token, the old
/// one is dead, and the process dies before committing the new one. The failpoint aborts
/// the sync worker exactly there; the user must stay connected and sync again.
#[test]
fn crash_between_token_refresh_and_commit_keeps_the_user_connected() {
    let env = start_env(small_world(2, json!({})), &[]);
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(2).expect("connect users");
    let victim = user_of(&users, "user-1");
    let mut c = connect(&env.cluster);
    process_every_second(&mut c);
    let before: String = c
        .query_one(
            "SELECT refresh_token FROM procore_sync_credentials WHERE user_id = $1",
            &[&victim],
        )
        .expect("credentials")
        .get(0);
    env.cluster
        .set_setting("procore_sync.failpoint", "crash_after_token_refresh")
        .expect("set the failpoint");
    // Procore now answers 401 to user-1's access token, so the sync must refresh.
    env.standin.expire_tokens("user-1").expect("expire tokens");
    let scheduler = scheduler_pid(&mut c);
    let reinits = count_in_log(
        &env.cluster,
        "all server processes terminated; reinitializing",
    );
    let since = now(&mut c);
    let oid: u32 = c
        .query_one(
            "SELECT oid FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .expect("db oid")
        .get(0);
    assert_eq!(queue_all(&mut c), 2);
    drop(c);

    wait_for(
        &env.cluster,
        Duration::from_secs(120),
        "the failpoint to crash the sync worker",
        || {
            Ok(env
                .cluster
                .log()
                .contains("failpoint crash_after_token_refresh reached"))
        },
    );
    wait_crash_restart(&env.cluster, reinits, Some(scheduler));
    // The failpoint stays set: a correct product never needs a second refresh, because the
    // pair Procore issued before the crash is restored from the journal.
    wait_cycle_done(&env.cluster, &users, since, CYCLE_TIMEOUT);
    let mut c = connect(&env.cluster);
    assert_eq!(
        count_in_log(&env.cluster, "failpoint crash_after_token_refresh reached"),
        1,
        "exactly one crash: the rotated pair was not lost and not refreshed again"
    );
    let (needs_reconnect, after): (bool, String) = {
        let r = c
            .query_one(
                "SELECT needs_reconnect, refresh_token FROM procore_sync_credentials WHERE user_id = $1",
                &[&victim],
            )
            .expect("user-1 is still connected");
        (r.get(0), r.get(1))
    };
    assert!(!needs_reconnect, "user-1 must not be disconnected");
    assert_ne!(after, before, "the rotated refresh token was stored");
    let stats = env.standin.stats().expect("stats");
    assert_eq!(stats["refreshes"], 1, "one refresh, no second one: {stats}");
    let grants_refused = request_log(&env.standin)
        .iter()
        .filter(|e| e["path"] == "/oauth/token" && e["status"] != 200)
        .count();
    assert_eq!(
        grants_refused, 0,
        "Procore never refused a grant (no invalid_grant)"
    );
    let journal = env
        .cluster
        .data_dir()
        .join("pg_procore_sync")
        .join(oid.to_string())
        .join(format!("{victim}.json"));
    assert!(
        !journal.exists(),
        "the journal entry is cleared once stored: {}",
        journal.display()
    );
    assert_no_lost_or_double_work(&env);

    // The stored refresh token is the live one: a forced refresh now works.
    c.batch_execute("ALTER SYSTEM RESET procore_sync.failpoint")
        .expect("reset the failpoint");
    c.batch_execute("SELECT pg_reload_conf()").expect("reload");
    env.standin.expire_tokens("user-1").expect("expire tokens");
    let row = c
        .query_one(
            "SELECT status, error_message FROM procore_sync_user($1)",
            &[&victim],
        )
        .expect("manual sync after the crash");
    let (status, error): (String, Option<String>) = (row.get(0), row.get(1));
    assert_eq!(
        status, "completed",
        "sync after a second refresh: {error:?}"
    );
    assert_eq!(env.standin.stats().expect("stats")["refreshes"], 2);
    watch.finish(&env.cluster, &[&env.standin]);
}

// ---------------------------------------------------------------------------------------
// Network faults from the stand-in
// ---------------------------------------------------------------------------------------

enum Expect {
    /// The fault is transient: retried in place, every item completes without error.
    Clean,
    /// The fault hits one resource of user-1: that resource fails alone, the item completes
    /// and says why (the needle).
    ResourceError(&'static str),
    /// The fault outlives the retries: user-1's item fails with the needle as reason.
    ItemFailed(&'static str),
}

/// One network fault, end to end: rules are added, a cycle of all users runs, the outcome
/// is checked, then the fault is cleared and a second cycle must leave every record stored
/// exactly once. Returns the peak resident memory (kB) seen in any sync worker.
fn network_fault_case(rules: Value, settings: &[(&str, &str)], expect: Expect) -> u64 {
    let env = start_env(small_world(USERS, json!({})), settings);
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(USERS).expect("connect users");
    let user1 = user_of(&users, "user-1");
    let mut c = connect(&env.cluster);
    process_every_second(&mut c);
    env.standin.add_faults(rules.clone()).expect("add faults");

    // Peak memory of sync workers while the fault is active.
    let peak = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        let port = env.cluster.port();
        std::thread::spawn(move || {
            let Ok(mut client) = postgres::Config::new()
                .host("127.0.0.1")
                .port(port)
                .user("postgres")
                .dbname("postgres")
                .connect(postgres::NoTls)
            else {
                return;
            };
            while !stop.load(Ordering::SeqCst) {
                if let Ok(rows) = client.query(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'procore_sync sync worker'",
                    &[],
                ) {
                    for r in rows {
                        let pid: i32 = r.get(0);
                        if let Some(kb) = vm_hwm_kb(pid) {
                            let mut p = peak.lock().unwrap();
                            *p = (*p).max(kb);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let since = now(&mut c);
    assert_eq!(queue_all(&mut c), USERS as i32);
    wait_for(
        &env.cluster,
        CYCLE_TIMEOUT,
        "every item of the faulty cycle to finish",
        || {
            let mut c = env.cluster.client()?;
            let open: i64 = c
                .query_one(
                    "SELECT count(*) FROM procore_sync_queue WHERE status IN ('pending', 'processing')",
                    &[],
                )?
                .get(0);
            Ok(open == 0)
        },
    );
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    assert!(faults_fired(&env) >= 1, "the fault fired: {rules}");
    assert_every_item_finished(&mut c);

    let rows = c
        .query(
            "SELECT user_id, status, coalesce(error_message, '') FROM procore_sync_queue WHERE started_at > $1",
            &[&since],
        )
        .expect("read the queue");
    let outcome: BTreeMap<Uuid, (String, String)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    for (user, login) in &users {
        let (status, message) = &outcome[user];
        match (&expect, *user == user1) {
            (Expect::Clean, _) | (_, false) => {
                assert_eq!(status, "completed", "{login}: {message}");
                assert_eq!(message, "", "{login} completed without a resource error");
            }
            (Expect::ResourceError(needle), true) => {
                assert_eq!(
                    status, "completed",
                    "{login}: the other resources still synced"
                );
                assert!(
                    message.contains(needle) && message.contains("resource error"),
                    "{login}'s item names the failed resource and why ({needle:?}): {message}"
                );
            }
            (Expect::ItemFailed(needle), true) => {
                assert_eq!(status, "failed", "{login}: {message}");
                assert!(
                    message.contains(needle),
                    "{login}'s item failed with a clear reason ({needle:?}): {message}"
                );
            }
        }
    }
    // Whatever the fault did, what was served is stored, once.
    let served: BTreeSet<_> = env.standin.served().expect("served").into_iter().collect();
    let stored = procore_sync_e2e::stored_record_keys(&mut c).expect("stored keys");
    let lost: Vec<_> = served.difference(&stored).take(5).collect();
    assert!(lost.is_empty(), "served but not stored: {lost:?}");
    if matches!(expect, Expect::Clean) {
        assert_records_exactly_once(&env, &mut c);
    }

    // The fault goes away: the next cycle completes everyone and misses nothing.
    env.standin.clear_faults().expect("clear faults");
    let since = now(&mut c);
    queue_all(&mut c);
    wait_cycle_done(&env.cluster, &users, since, CYCLE_TIMEOUT);
    assert_no_lost_or_double_work(&env);
    watch.finish(&env.cluster, &[&env.standin]);
    let kb = *peak.lock().unwrap();
    kb
}

fn vm_hwm_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn dropped_connections_are_retried() {
    network_fault_case(
        json!([{"kind": "drop", "path": "/rfis", "login": "user-1", "times": 3},
               {"kind": "drop", "path": "/oauth/token", "times": 1}]),
        &[],
        Expect::Clean,
    );
}

#[test]
fn stalls_past_http_timeout_are_retried() {
    network_fault_case(
        json!({"kind": "stall", "path": "/submittals", "login": "user-1",
               "latency_ms": 4000, "times": 2}),
        &[("procore_sync.http_timeout_ms", "1000")],
        Expect::Clean,
    );
}

#[test]
fn truncated_bodies_are_retried() {
    network_fault_case(
        json!({"kind": "truncate", "path": "/vendors", "login": "user-1", "times": 3}),
        &[],
        Expect::Clean,
    );
}

#[test]
fn a_passing_html_error_page_is_retried() {
    network_fault_case(
        json!({"kind": "html", "path": "/punch_items", "login": "user-1", "times": 2}),
        &[],
        Expect::Clean,
    );
}

#[test]
fn html_error_pages_that_persist_fail_the_item_with_a_reason() {
    network_fault_case(
        json!({"kind": "html", "path": "/punch_items", "login": "user-1"}),
        &[("procore_sync.max_attempts", "1")],
        Expect::ItemFailed("HTML"),
    );
}

#[test]
fn malformed_json_fails_only_that_resource() {
    network_fault_case(
        json!({"kind": "malformed", "path": "/observations", "login": "user-1"}),
        &[],
        Expect::ResourceError("malformed JSON"),
    );
}

#[test]
fn json_of_the_wrong_shape_fails_only_that_resource() {
    network_fault_case(
        json!({"kind": "wrong_shape", "path": "/change_events", "login": "user-1"}),
        &[],
        Expect::ResourceError("expected a JSON array"),
    );
}

#[test]
fn an_empty_200_fails_only_that_resource() {
    network_fault_case(
        json!({"kind": "empty", "path": "/rfis", "login": "user-1"}),
        &[],
        Expect::ResourceError("empty body"),
    );
}

#[test]
fn a_response_of_several_hundred_mb_is_refused_in_bounded_memory() {
    // 400 MB against the default limit of 64 MB.
    let peak_kb = network_fault_case(
        json!({"kind": "huge", "path": "/vendors", "login": "user-1", "bytes": 400_000_000u64}),
        &[],
        Expect::ResourceError("larger than the limit"),
    );
    assert!(peak_kb > 0, "the memory of the sync workers was sampled");
    assert!(
        peak_kb < 200 * 1024,
        "a sync worker's peak memory stays far below the 400 MB response: {} MB",
        peak_kb / 1024
    );
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

/// Several sessions call `process_procore_sync_queue()`, `procore_sync_user()` and
/// `queue_procore_sync_for_all_users()` in a loop while the scheduler runs both jobs every
/// second or two: no user is ever synced by two processes at once.
#[test]
fn concurrent_callers_never_sync_a_user_twice_at_once() {
    let env = start_env(
        small_world(4, json!({"latency_ms": 15})),
        &[("procore_sync.max_workers", "3")],
    );
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(4).expect("connect users");
    let mut c = connect(&env.cluster);
    set_jobs(&mut c, Some("2 seconds"), Some("1 seconds"));

    let stop = Arc::new(AtomicBool::new(false));
    // Sampler: two sync workers showing the same user at the same moment is double work,
    // except in the instant between one worker committing the end of its item and
    // reporting itself idle, when the next sync of that user may already have begun: a
    // worker that has just finished an item of that user is therefore not counted.
    let overlaps = Arc::new(Mutex::new(Vec::<String>::new()));
    let samples = Arc::new(Mutex::new(0u64));
    let sampler = {
        let (stop, overlaps, samples) = (stop.clone(), overlaps.clone(), samples.clone());
        let port = env.cluster.port();
        std::thread::spawn(move || {
            let mut client = postgres::Config::new()
                .host("127.0.0.1")
                .port(port)
                .user("postgres")
                .dbname("postgres")
                .connect(postgres::NoTls)
                .expect("sampler connects");
            while !stop.load(Ordering::SeqCst) {
                let rows = client
                    .query(
                        "WITH a AS (
                            SELECT pid, substr(query, length('procore_sync: syncing user ') + 1) AS user_id
                            FROM pg_stat_activity
                            WHERE backend_type = 'procore_sync sync worker'
                              AND query LIKE 'procore_sync: syncing user %')
                         SELECT a1.user_id, a1.pid, a2.pid,
                                (SELECT string_agg(format('item %s %s worker_pid=%s attempts=%s', \
                                        id, status, worker_pid, attempts), '; ' ORDER BY id DESC)
                                 FROM (SELECT * FROM procore_sync_queue q
                                       WHERE q.user_id::text = a1.user_id ORDER BY id DESC LIMIT 2) q)
                         FROM a a1 JOIN a a2 ON a1.user_id = a2.user_id AND a1.pid < a2.pid
                         WHERE NOT EXISTS (
                            SELECT 1 FROM procore_sync_queue q
                            WHERE q.user_id::text = a1.user_id AND q.worker_pid IN (a1.pid, a2.pid)
                              AND q.status IN ('completed', 'failed')
                              AND q.completed_at > now() - interval '2 seconds')",
                        &[],
                    )
                    .expect("sample pg_stat_activity");
                for r in rows {
                    let (user, a, b, items): (String, i32, i32, Option<String>) =
                        (r.get(0), r.get(1), r.get(2), r.get(3));
                    overlaps
                        .lock()
                        .unwrap()
                        .push(format!("user {user} by pids {a} and {b}; queue: {items:?}"));
                }
                *samples.lock().unwrap() += 1;
            }
        })
    };

    let run_for = Duration::from_secs(25);
    let outcomes = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let callers: Vec<_> = (0..4)
        .map(|t| {
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            let port = env.cluster.port();
            let ids: Vec<Uuid> = users.iter().map(|(u, _)| *u).collect();
            std::thread::spawn(move || {
                let mut client = postgres::Config::new()
                    .host("127.0.0.1")
                    .port(port)
                    .user("postgres")
                    .dbname("postgres")
                    .connect(postgres::NoTls)
                    .expect("caller connects");
                let mut errors = Vec::new();
                let mut i = t;
                let started = Instant::now();
                while started.elapsed() < run_for && !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let (what, result) = match i % 4 {
                        0 => (
                            "process",
                            client
                                .query_one("SELECT process_procore_sync_queue()", &[])
                                .map(drop),
                        ),
                        1 => (
                            "queue",
                            client
                                .query_one("SELECT queue_procore_sync_for_all_users()", &[])
                                .map(drop),
                        ),
                        // Threads 0 and 1 fight over the same user; 2 and 3 over another.
                        _ => (
                            "sync_user",
                            client
                                .query_one(
                                    "SELECT status FROM procore_sync_user($1)",
                                    &[&ids[t / 2]],
                                )
                                .map(|r| {
                                    let s: String = r.get(0);
                                    assert_eq!(s, "completed", "a manual sync completed");
                                }),
                        ),
                    };
                    let key = match &result {
                        Ok(()) => format!("{what}: ok"),
                        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                            format!("{what}: already being synced (55P03)")
                        }
                        Err(e) => {
                            let detail = match e.as_db_error() {
                                Some(d) => format!("{} {}", d.code().code(), d.message()),
                                None => e.to_string(),
                            };
                            errors.push(format!("{what}: {detail}"));
                            format!("{what}: other error")
                        }
                    };
                    *outcomes.lock().unwrap().entry(key).or_default() += 1;
                }
                errors
            })
        })
        .collect();
    let mut errors = Vec::new();
    for h in callers {
        errors.extend(h.join().expect("caller thread"));
    }
    // Then the sharpest race: two sessions call procore_sync_user() for one user at the
    // same instant, 15 times. One sync may run; the other must be refused (55P03) or wait
    // its turn.
    for _ in 0..15 {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let pair: Vec<_> = (0..2)
            .map(|_| {
                let (barrier, outcomes) = (barrier.clone(), outcomes.clone());
                let port = env.cluster.port();
                let user = users[0].0;
                std::thread::spawn(move || {
                    let mut client = postgres::Config::new()
                        .host("127.0.0.1")
                        .port(port)
                        .user("postgres")
                        .dbname("postgres")
                        .connect(postgres::NoTls)
                        .expect("caller connects");
                    barrier.wait();
                    let r = client.query_one("SELECT status FROM procore_sync_user($1)", &[&user]);
                    let key = match &r {
                        Ok(_) => "same-instant sync_user: ok".to_string(),
                        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                            "same-instant sync_user: already being synced (55P03)".to_string()
                        }
                        Err(e) => format!("same-instant sync_user: {e}"),
                    };
                    *outcomes.lock().unwrap().entry(key).or_default() += 1;
                    r.err()
                        .filter(|e| e.code() != Some(&SqlState::LOCK_NOT_AVAILABLE))
                        .map(|e| format!("same-instant sync_user: {e}"))
                })
            })
            .collect();
        for h in pair {
            errors.extend(h.join().expect("caller thread"));
        }
    }
    for e in &errors {
        watch.note(e.clone());
    }
    // Let the last syncs finish with nothing new coming in, then stop sampling.
    set_jobs(&mut c, None, Some("1 seconds"));
    wait_for(&env.cluster, CYCLE_TIMEOUT, "the queue to drain", || {
        let mut c = env.cluster.client()?;
        let open: i64 = c
            .query_one(
                "SELECT count(*) FROM procore_sync_queue WHERE status IN ('pending', 'processing')",
                &[],
            )?
            .get(0);
        Ok(open == 0)
    });
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    let outcomes = outcomes.lock().unwrap().clone();
    eprintln!(
        "concurrency: outcomes {outcomes:?}, {} samples",
        samples.lock().unwrap()
    );

    assert!(
        errors.is_empty(),
        "callers got unexpected errors: {errors:?}"
    );
    let overlaps = overlaps.lock().unwrap().clone();
    assert!(
        overlaps.is_empty(),
        "a user was synced twice at once: {overlaps:?}"
    );
    assert!(
        outcomes.get("sync_user: ok").copied().unwrap_or(0) > 0,
        "manual syncs ran: {outcomes:?}"
    );

    // A worker that finds its item taken over by another says so: in this test no lease
    // can run out (5 min), so any takeover is a second sync of a user being synced.
    let takeovers: Vec<String> = env
        .cluster
        .log()
        .lines()
        .filter(|l| l.contains("taken over by another worker"))
        .map(str::to_string)
        .collect();
    assert!(
        takeovers.is_empty(),
        "items were taken from live workers: {takeovers:#?}"
    );
    // From "Procore": each sync starts by listing companies once, so per user the company
    // listings equal the syncs started (attempts); more would be a sync that no queue
    // item accounts for.
    let started: BTreeMap<Uuid, i64> = c
        .query(
            "SELECT user_id, sum(attempts)::bigint FROM procore_sync_queue GROUP BY user_id",
            &[],
        )
        .expect("attempts")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let log = request_log(&env.standin);
    for (user, login) in &users {
        let listings = log
            .iter()
            .filter(|e| e["path"] == "/rest/v1.0/companies" && e["login"] == login.as_str())
            .count() as i64;
        let attempts = started.get(user).copied().unwrap_or(0);
        assert!(
            attempts > 1,
            "{login} was synced several times ({attempts})"
        );
        assert_eq!(
            listings, attempts,
            "{login}: {listings} syncs reached Procore but the queue counts {attempts}"
        );
    }
    assert_no_lost_or_double_work(&env);
    watch.finish(&env.cluster, &[&env.standin]);
}

// ---------------------------------------------------------------------------------------
// Soak: `make test-soak`
// ---------------------------------------------------------------------------------------

/// Kills a random sync worker or the scheduler every few seconds, with the odd immediate
/// restart, across many cycles of a bigger world; then checks that nothing was lost.
#[test]
#[ignore = "long: run with `make test-soak`"]
fn soak_repeated_kills_and_restarts_lose_nothing() {
    let mut env = start_env(
        small_world(6, json!({"latency_ms": 10, "records_per_resource": 40})),
        &[
            ("procore_sync.max_workers", "3"),
            ("procore_sync.lease_timeout", "20"),
        ],
    );
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(6).expect("connect users");
    let mut c = connect(&env.cluster);
    set_jobs(&mut c, Some("5 seconds"), Some("1 seconds"));
    drop(c);
    let mut kills = 0;
    for round in 0..30 {
        std::thread::sleep(Duration::from_millis(1500 + (round % 5) * 700));
        let mut c = connect(&env.cluster);
        if round % 10 == 9 {
            drop(c);
            let mode = if round % 20 == 9 {
                StopMode::Immediate
            } else {
                StopMode::Fast
            };
            let restarted = env.cluster.restart(mode);
            ok_or_log(&env.cluster, restarted, "restart");
            continue;
        }
        let kind = if round % 4 == 3 {
            "procore_sync scheduler"
        } else {
            "procore_sync sync worker"
        };
        let pids = backends(&mut c, kind);
        drop(c);
        if let Some((pid, _)) = pids.get(round as usize % pids.len().max(1)) {
            let reinits = count_in_log(
                &env.cluster,
                "all server processes terminated; reinitializing",
            );
            kill9(*pid);
            kills += 1;
            wait_crash_restart(&env.cluster, reinits, None);
        }
    }
    eprintln!("soak: {kills} kills");
    assert!(kills >= 15, "the soak killed enough processes ({kills})");
    let mut c = connect(&env.cluster);
    set_jobs(&mut c, None, Some("1 seconds"));
    // Items open from the last rounds finish first: a user with an open item is not queued
    // again, so the closing cycle only starts once the queue is empty.
    wait_for(
        &env.cluster,
        CYCLE_TIMEOUT,
        "the items of the last rounds to finish",
        || {
            let open: i64 = connect(&env.cluster)
            .query_one(
                "SELECT count(*) FROM procore_sync_queue WHERE status IN ('pending', 'processing')",
                &[],
            )?
            .get(0);
            Ok(open == 0)
        },
    );
    let since = now(&mut c);
    queue_all(&mut c);
    wait_cycle_done(&env.cluster, &users, since, CYCLE_TIMEOUT);
    assert_no_lost_or_double_work(&env);
    watch.finish(&env.cluster, &[&env.standin]);
}
