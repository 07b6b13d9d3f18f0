//! SPEC §8 "many users in flight per worker" under faults: one sync worker carries many
//! users at once (`procore_sync.users_per_worker`), HTTP runs beside its main thread, and
//! the per-user rules of §4 still hold for each user. Each test puts the users of one
//! worker (`max_workers = 1` unless the case needs two) under one fault and ends with the
//! checks of `faults.rs`: every record the stand-in served is stored exactly once, every
//! queue item reached `completed` or `failed` with a reason, and no secret leaked.
//!
//! The properties that only a worker with many users in flight can have (32 users held by
//! one pid, other users' requests served while one user waits or stalls) are asserted
//! last where the case allows, so that a worker carrying one user at a time fails on them
//! and on nothing else. No timing is asserted except bounds derived from settings
//! (`http_timeout_ms`, the 10-second rate-limit window, `lease_timeout`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use common::*;
use procore_sync_e2e::{Env, LoggedRequest, StopMode};
use serde_json::{json, Value};
use uuid::Uuid;

const USERS_PER_WORKER: &str = "procore_sync.users_per_worker";
const SYNC_WORKER: &str = "procore_sync sync worker";
/// Listings are paged at this size, so each has two pages (6 records).
const PER_PAGE: i32 = 3;

// ---------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------

/// Users of one company with one project; 6 records per resource at 3 a page, so every
/// listing has two pages: 16 requests and 44 records per user.
fn world(users: usize, extra: Value) -> Value {
    let mut fields = json!({
        "projects_per_company": 1,
        "records_per_resource": 6,
        "per_page_default": PER_PAGE,
    });
    if let (Some(f), Value::Object(extra)) = (fields.as_object_mut(), extra) {
        f.extend(extra);
    }
    small_world(users, fields)
}

struct Case {
    env: Env,
    watch: LeakWatch,
    /// `(user_id, login)`, user ids ascending with the login number, so the queue takes
    /// user-1 first when everyone is queued at once.
    users: Vec<(Uuid, String)>,
}

impl Case {
    /// A stand-in, a cluster with one sync worker carrying up to 64 users (overridden by
    /// `settings`), the leak watch, `users` logins connected, lists paged, and only the
    /// process job running (every second).
    fn start(users: usize, world_extra: Value, settings: &[(&str, &str)]) -> Case {
        let mut all = vec![
            ("procore_sync.max_workers", "1"),
            (USERS_PER_WORKER, "64"),
            // One process_procore_sync_queue() may hand the whole queue to the worker.
            ("procore_sync.batch_size", "100"),
        ];
        all.extend_from_slice(settings);
        let env = start_env(world(users, world_extra), &all);
        let watch = LeakWatch::start(&env.cluster);
        let mut c = connect(&env.cluster);
        c.execute(
            "UPDATE procore_sync_resource SET per_page = $1 WHERE paginated",
            &[&PER_PAGE],
        )
        .expect("page the catalog's listings");
        let mut ids: Vec<Uuid> = (0..users).map(|_| Uuid::new_v4()).collect();
        ids.sort();
        let users = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let login = format!("user-{}", i + 1);
                env.connect_user(&mut c, id, &login)
                    .unwrap_or_else(|e| panic!("connect {login}: {e:#}"));
                (id, login)
            })
            .collect();
        process_every_second(&mut c);
        Case { env, watch, users }
    }

    fn client(&self) -> postgres::Client {
        connect(&self.env.cluster)
    }

    fn user(&self, login: &str) -> Uuid {
        self.users
            .iter()
            .find(|(_, l)| l == login)
            .map(|(u, _)| *u)
            .unwrap_or_else(|| panic!("no user {login}"))
    }

    fn others(&self, login: &str) -> Vec<(Uuid, String)> {
        self.users
            .iter()
            .filter(|(_, l)| l != login)
            .cloned()
            .collect()
    }

    fn faults(&self, rules: Value) {
        self.env.standin.add_faults(rules).expect("add fault rules");
    }

    fn requests(&self) -> Vec<LoggedRequest> {
        LoggedRequest::parse_all(request_log(&self.env.standin))
    }

    fn stat(&self, name: &str) -> u64 {
        self.env.standin.stats().expect("stand-in stats")[name]
            .as_u64()
            .unwrap_or(0)
    }

    /// Polls until `f` holds, failing with the queue and the server log's tail.
    fn wait(&self, timeout: Duration, what: &str, mut f: impl FnMut() -> anyhow::Result<bool>) {
        let result = procore_sync_e2e::wait_until(timeout, POLL, what, &mut f);
        if let Err(e) = result {
            panic!(
                "{e:#}\nqueue:\n{}\n--- server log (tail) ---\n{}",
                self.queue_dump(),
                self.env.cluster.log_tail(60)
            );
        }
    }

    fn queue_dump(&self) -> String {
        let Ok(mut c) = self.env.cluster.client() else {
            return "(server unreachable)".into();
        };
        c.query(
            "SELECT id, user_id::text, status, attempts, worker_pid, coalesce(error_message, '') \
             FROM procore_sync_queue ORDER BY id",
            &[],
        )
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    format!(
                        "{} {} {} attempts={} pid={:?} {}",
                        r.get::<_, i64>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2),
                        r.get::<_, i32>(3),
                        r.get::<_, Option<i32>>(4),
                        r.get::<_, String>(5)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|e| format!("(queue unreadable: {e})"))
    }

    /// Ends a case: the §7 checks, then the leak watch.
    fn finish(self) {
        assert_no_lost_or_double_work(&self.env);
        self.watch.finish(&self.env.cluster, &[&self.env.standin]);
    }
}

/// The newest queue row of a user.
#[derive(Debug)]
struct Item {
    id: i64,
    status: String,
    attempts: i32,
    worker_pid: Option<i32>,
    started_at: Option<DateTime<Utc>>,
    error_message: String,
}

fn item(c: &mut postgres::Client, user: Uuid) -> anyhow::Result<Item> {
    let r = c.query_one(
        "SELECT id, status, attempts, worker_pid, started_at, coalesce(error_message, '') \
         FROM procore_sync_queue WHERE user_id = $1 ORDER BY id DESC LIMIT 1",
        &[&user],
    )?;
    Ok(Item {
        id: r.get(0),
        status: r.get(1),
        attempts: r.get(2),
        worker_pid: r.get(3),
        started_at: r.get(4),
        error_message: r.get(5),
    })
}

fn completed_count(c: &mut postgres::Client, users: &[(Uuid, String)]) -> anyhow::Result<i64> {
    let ids: Vec<Uuid> = users.iter().map(|(u, _)| *u).collect();
    Ok(c.query_one(
        "SELECT count(DISTINCT user_id) FROM procore_sync_queue \
         WHERE status = 'completed' AND user_id = ANY($1)",
        &[&ids],
    )?
    .get(0))
}

/// Queues one user ahead of everyone else.
fn enqueue(c: &mut postgres::Client, user: Uuid) {
    c.execute(
        "INSERT INTO procore_sync_queue (user_id) VALUES ($1)",
        &[&user],
    )
    .expect("queue one user");
    c.query_one("SELECT process_procore_sync_queue()", &[])
        .expect("process_procore_sync_queue()");
}

/// Users in flight per sync worker right now: `pid -> user ids` of `processing` items held
/// by a live sync worker.
fn in_flight(c: &mut postgres::Client) -> anyhow::Result<BTreeMap<i32, Vec<Uuid>>> {
    let rows = c.query(
        "SELECT q.worker_pid, q.user_id FROM procore_sync_queue q \
         JOIN pg_stat_activity a ON a.pid = q.worker_pid AND a.backend_type = $1 \
         WHERE q.status = 'processing'",
        &[&SYNC_WORKER],
    )?;
    let mut by_pid: BTreeMap<i32, Vec<Uuid>> = BTreeMap::new();
    for r in rows {
        by_pid.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(by_pid)
}

/// Waits until one sync worker holds at least `at_least` users in flight at once, then
/// samples for a little longer, asserting that no worker ever holds more than `cap`.
/// Returns that worker's pid and the users it held at the last sample.
fn wait_many_in_flight(case: &Case, at_least: usize, cap: usize) -> (i32, Vec<Uuid>) {
    const TIMEOUT: Duration = Duration::from_secs(45);
    let start = Instant::now();
    let mut most: (usize, Option<i32>) = (0, None);
    let mut reached: Option<Instant> = None;
    let mut c = case.client();
    loop {
        let by_pid = in_flight(&mut c).expect("read the users in flight");
        for (pid, users) in &by_pid {
            if users.len() > most.0 {
                most = (users.len(), Some(*pid));
            }
        }
        assert!(
            most.0 <= cap,
            "worker {:?} held {} users in flight, more than users_per_worker = {cap}",
            most.1,
            most.0
        );
        let best = by_pid.iter().max_by_key(|(_, u)| u.len());
        if let Some((pid, users)) = best {
            if users.len() >= at_least {
                let since = *reached.get_or_insert_with(Instant::now);
                // A second more of sampling checks the cap once the worker is full.
                if since.elapsed() >= Duration::from_secs(1) || users.len() == cap {
                    return (*pid, users.clone());
                }
            }
        }
        if start.elapsed() > TIMEOUT {
            panic!(
                "no sync worker held {at_least} users in flight within {TIMEOUT:?}: at most {} \
                 at once (pid {:?}); a worker that syncs one user at a time cannot\nqueue:\n{}",
                most.0,
                most.1,
                case.queue_dump()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every API request of every user is this slow, so syncs stay in flight for seconds.
fn slow_api(case: &Case, latency_ms: u64) {
    case.faults(json!({"kind": "latency", "path": "/rest/", "latency_ms": latency_ms}));
}

// ---------------------------------------------------------------------------------------
// Crashes and shutdowns with many users in flight
// ---------------------------------------------------------------------------------------

/// kill -9 of the only sync worker while it holds 32+ users: the postmaster restarts
/// everything, each of those users is taken again (an attempt more) and completes, and no
/// worker ever holds more than `users_per_worker`.
#[test]
fn kill9_of_a_worker_with_32_users_in_flight_loses_nothing() {
    const USERS: usize = 48;
    const CAP: usize = 40;
    let case = Case::start(USERS, json!({}), &[(USERS_PER_WORKER, &CAP.to_string())]);
    // 16 requests of 1.5 s: each user stays in flight for 24 s.
    slow_api(&case, 1500);
    let mut c = case.client();
    let scheduler = backends(&mut c, "procore_sync scheduler")
        .first()
        .map(|(p, _)| *p);
    let reinits = count_in_log(
        &case.env.cluster,
        "all server processes terminated; reinitializing",
    );
    let since = now(&mut c);
    assert_eq!(queue_all(&mut c), USERS as i32);

    let (pid, held) = wait_many_in_flight(&case, 32, CAP);
    kill9(pid);
    drop(c);
    case.env.standin.clear_faults().expect("clear faults");

    wait_crash_restart(&case.env.cluster, reinits, scheduler);
    assert!(
        case.env
            .cluster
            .log()
            .contains(&format!("(PID {pid}) was terminated by signal 9")),
        "the postmaster saw the kill"
    );
    wait_cycle_done(&case.env.cluster, &case.users, since, CYCLE_TIMEOUT);
    let mut c = case.client();
    for user in &held {
        let it = item(&mut c, *user).expect("queue row");
        assert_eq!(it.status, "completed", "user {user}: {it:?}");
        assert!(
            it.attempts >= 2,
            "user {user}, in flight in the killed worker, was taken again: {it:?}"
        );
    }
    eprintln!("kill9: worker {pid} held {} users when killed", held.len());
    case.finish();
}

/// A fast shutdown (SIGTERM to the worker) while 32+ users are in flight: the server stops
/// without waiting for their syncs (within `http_timeout_ms` and a margin), nothing
/// crashes, and after the restart every user completes.
#[test]
fn fast_shutdown_with_many_users_in_flight_loses_nothing() {
    const USERS: usize = 40;
    const HTTP_TIMEOUT_MS: u64 = 10_000;
    let mut case = Case::start(
        USERS,
        json!({}),
        &[("procore_sync.http_timeout_ms", &HTTP_TIMEOUT_MS.to_string())],
    );
    slow_api(&case, 1500);
    let mut c = case.client();
    let since = now(&mut c);
    assert_eq!(queue_all(&mut c), USERS as i32);
    let (pid, held) = wait_many_in_flight(&case, 32, 64);
    drop(c);
    case.env.standin.clear_faults().expect("clear faults");

    let stopping = Instant::now();
    let stopped = case.env.cluster.stop(StopMode::Fast);
    ok_or_log(&case.env.cluster, stopped, "fast shutdown");
    let took = stopping.elapsed();
    let log = case.env.cluster.log();
    assert!(
        !log.contains("was terminated by signal") && !log.contains("PANIC"),
        "the worker exited on SIGTERM without crashing:\n{}",
        case.env.cluster.log_tail(40)
    );
    let started = case.env.cluster.start_again();
    ok_or_log(&case.env.cluster, started, "start after the fast shutdown");

    wait_cycle_done(&case.env.cluster, &case.users, since, CYCLE_TIMEOUT);
    let mut c = case.client();
    let failed = failed_items(&mut c);
    assert!(failed.is_empty(), "no item failed: {failed:?}");
    eprintln!(
        "fast shutdown: worker {pid} held {} users; the stop took {took:?}",
        held.len()
    );
    assert!(
        took < Duration::from_millis(HTTP_TIMEOUT_MS) + Duration::from_secs(10),
        "a fast shutdown does not wait for the users in flight: it took {took:?} \
         (http_timeout_ms = {HTTP_TIMEOUT_MS})"
    );
    case.finish();
}

// ---------------------------------------------------------------------------------------
// One user's trouble, the others at full speed
// ---------------------------------------------------------------------------------------

/// Sleeps until one second into a 10-second window of the stand-in's rate limiter (epoch
/// aligned), so a 429 met now carries a Retry-After of 8 to 9 seconds.
fn sleep_to_rate_window_start() {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let into_window = Duration::from_millis((since_epoch.as_millis() % 10_000) as u64);
    let target = Duration::from_millis(1_000);
    let wait = if into_window <= target {
        target - into_window
    } else {
        Duration::from_secs(10) - into_window + target
    };
    std::thread::sleep(wait);
}

/// user-1 meets nothing but 429s. It waits the first out in place, is parked (pending, no
/// attempt counted) at the second, and never completes while the storm lasts; the other
/// users of the same worker complete meanwhile and never see a 429. While user-1 waits out
/// its first 429, the worker serves the others (asserted last).
#[test]
fn a_429_storm_on_one_user_parks_it_while_the_others_complete() {
    const USERS: usize = 12;
    let case = Case::start(USERS, json!({"latency_ms": 100}), &[]);
    let victim = case.user("user-1");
    let others = case.others("user-1");
    case.faults(json!({"kind": "status", "status": 429, "login": "user-1"}));
    let mut c = case.client();
    let since = now(&mut c);

    sleep_to_rate_window_start();
    enqueue(&mut c, victim);
    case.wait(Duration::from_secs(30), "user-1's first 429", || {
        Ok(case
            .requests()
            .iter()
            .any(|r| r.by("user-1") && r.status == 429))
    });
    assert_eq!(
        queue_all(&mut c),
        (USERS - 1) as i32,
        "the others are queued"
    );

    case.wait(
        Duration::from_secs(120),
        "every other user to complete during user-1's storm",
        || {
            let v = item(&mut c, victim)?;
            bail_if(
                v.status == "completed",
                "user-1 completed in the middle of a 429 storm",
            )?;
            Ok(completed_count(&mut c, &others)? == others.len() as i64)
        },
    );
    let v = item(&mut c, victim).expect("user-1's item");
    assert_ne!(v.status, "completed", "user-1 is still held by the storm");

    // Parked at the second 429 in a row: pending until the window resets, no attempt.
    case.wait(
        Duration::from_secs(60),
        "user-1 to be parked by the storm",
        || {
            Ok(parked_payloads(&case, victim).iter().any(|p| {
                p["status"] == "pending"
                    && p["attempts"] == 0
                    && p["error_message"]
                        .as_str()
                        .is_some_and(|m| m.contains("429"))
            }))
        },
    );
    let log = case.requests();
    let victim_log: Vec<&LoggedRequest> = log
        .iter()
        .filter(|r| r.by("user-1") && r.is_api())
        .collect();
    assert!(
        victim_log.len() >= 2 && victim_log[0].status == 429 && victim_log[1].status == 429,
        "user-1 met two 429s in a row: {victim_log:?}"
    );
    let first_wait = victim_log[1].at() - victim_log[0].at();
    assert!(
        first_wait >= chrono::TimeDelta::milliseconds(500),
        "the first 429 was waited out (Retry-After), not retried at once: {first_wait}"
    );
    for r in log.iter().filter(|r| !r.by("user-1")) {
        assert_ne!(r.status, 429, "another user met a 429: {r:?}");
    }
    let storm_s = (Utc::now() - victim_log[0].at()).num_seconds().max(0) as usize;
    let storm_429s = victim_log.iter().filter(|r| r.status == 429).count();
    assert!(
        storm_429s <= 2 * (storm_s / 10 + 2),
        "user-1's 429s were honoured, not hammered: {storm_429s} in {storm_s}s"
    );
    // Requests of the others while user-1 waited out its first 429 in place.
    let (a, b) = (victim_log[0].seq, victim_log[1].seq);
    let served_meanwhile = log
        .iter()
        .filter(|r| r.seq > a && r.seq < b && !r.by("user-1") && r.is_api())
        .count();

    // The storm ends: user-1 completes too, its parks not counted as attempts.
    case.env.standin.clear_faults().expect("clear faults");
    c.execute(
        "UPDATE procore_sync_queue SET next_attempt_at = now() WHERE status = 'pending'",
        &[],
    )
    .expect("make user-1 due");
    wait_cycle_done(&case.env.cluster, &case.users, since, CYCLE_TIMEOUT);
    let v = item(&mut c, victim).expect("user-1's item");
    assert_eq!(
        (v.status.as_str(), v.attempts),
        ("completed", 1),
        "user-1 completed; parking for the rate limit counted no attempt: {v:?}"
    );
    assert_eq!(case.stat("rate_limited"), 0, "no real rate limit was hit");
    let span = victim_log[1].at() - victim_log[0].at();
    case.finish();
    assert!(
        served_meanwhile >= others.len(),
        "while user-1 waited out its first 429 ({span}), the worker served {served_meanwhile} \
         request(s) of the other {} users: one user's wait held the whole worker",
        others.len()
    );
}

fn parked_payloads(case: &Case, user: Uuid) -> Vec<Value> {
    case.watch
        .payloads()
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter(|p| p["user_id"] == user.to_string())
        .collect()
}

/// user-1's grant is revoked while every other user's access token has expired: the others
/// all refresh (once each, the rotated token committed) and complete; user-1's refresh gets
/// `invalid_grant`, its item fails at once with that reason, its credentials need a
/// reconnect and it is not queued again. Reconnected, it syncs like the others.
#[test]
fn invalid_grant_for_one_user_fails_it_while_the_others_refresh_and_complete() {
    const USERS: usize = 12;
    let case = Case::start(USERS, json!({"latency_ms": 50}), &[]);
    let victim = case.user("user-1");
    let others = case.others("user-1");
    let seq = case.requests().last().map(|r| r.seq).unwrap_or(0);
    case.env.standin.revoke("user-1").expect("revoke user-1");
    for (_, login) in &others {
        case.env
            .standin
            .expire_tokens(login)
            .expect("expire tokens");
    }
    let mut c = case.client();
    assert_eq!(queue_all(&mut c), USERS as i32);
    case.wait(
        Duration::from_secs(120),
        "every item to finish",
        || {
            let open: i64 = c
                .query_one(
                    "SELECT count(*) FROM procore_sync_queue WHERE status NOT IN ('completed', 'failed')",
                    &[],
                )?
                .get(0);
            Ok(open == 0)
        },
    );

    let v = item(&mut c, victim).expect("user-1's item");
    assert_eq!(v.status, "failed", "a revoked grant fails the item: {v:?}");
    assert_eq!(v.attempts, 1, "invalid_grant is not retried: {v:?}");
    assert!(
        v.error_message.contains("invalid_grant") && v.error_message.contains("reconnect"),
        "the item says why and that the user must reconnect: {:?}",
        v.error_message
    );
    let (needs, reason): (bool, Option<String>) = {
        let r = c
            .query_one(
                "SELECT needs_reconnect, reconnect_reason FROM procore_sync_credentials WHERE user_id = $1",
                &[&victim],
            )
            .expect("user-1's credentials");
        (r.get(0), r.get(1))
    };
    assert!(needs, "user-1's credentials need a reconnect");
    assert!(
        reason.as_deref().unwrap_or("").contains("invalid_grant"),
        "reconnect_reason names invalid_grant: {reason:?}"
    );
    for (user, login) in &others {
        let it = item(&mut c, *user).expect("queue row");
        assert_eq!(
            (it.status.as_str(), it.error_message.as_str()),
            ("completed", ""),
            "{login} is unaffected by user-1's grant: {it:?}"
        );
    }
    let grants: Vec<LoggedRequest> = case
        .requests()
        .into_iter()
        .filter(|r| r.seq > seq && r.is_token_grant())
        .collect();
    let of = |login: &str| grants.iter().filter(|r| r.by(login)).collect::<Vec<_>>();
    let victim_grants = of("user-1");
    assert!(
        victim_grants.len() == 1 && victim_grants[0].status == 400,
        "user-1 tried its refresh token once and got invalid_grant: {victim_grants:?}"
    );
    for (_, login) in &others {
        let g = of(login);
        assert!(
            g.len() == 1 && g[0].status == 200,
            "{login} refreshed exactly once: {g:?}"
        );
    }
    assert_eq!(
        case.stat("refreshes"),
        others.len() as u64,
        "one successful refresh per other user"
    );

    // Not queued again until reconnected; reconnected, it syncs.
    let since = now(&mut c);
    assert_eq!(
        queue_all(&mut c),
        others.len() as i32,
        "everyone but user-1 is queued again"
    );
    case.env
        .connect_user(&mut c, victim, "user-1")
        .expect("reconnect user-1");
    assert_eq!(queue_all(&mut c), 1, "user-1 is queued once reconnected");
    wait_cycle_done(&case.env.cluster, &case.users, since, CYCLE_TIMEOUT);
    case.finish();
}

/// user-1's first request (the companies listing) stalls after its headers for far longer
/// than `http_timeout_ms`: the worker gives up on it within `http_timeout_ms` (plus a
/// retry's backoff and a margin) and retries it, user-1 completes without an attempt
/// more, and the other users of the same worker all complete while the stall holds user-1's
/// slot (asserted last).
#[test]
fn a_stalled_connection_holds_one_slot_for_at_most_http_timeout() {
    const USERS: usize = 12;
    const HTTP_TIMEOUT_MS: i64 = 10_000;
    let case = Case::start(
        USERS,
        json!({}),
        &[("procore_sync.http_timeout_ms", &HTTP_TIMEOUT_MS.to_string())],
    );
    let victim = case.user("user-1");
    let others = case.others("user-1");
    case.faults(
        json!({"kind": "stall", "path": "/rest/v1.0/companies", "login": "user-1",
                       "latency_ms": 60_000, "times": 1}),
    );
    let mut c = case.client();
    let since = now(&mut c);
    enqueue(&mut c, victim);
    let mut stalled: Option<LoggedRequest> = None;
    case.wait(
        Duration::from_secs(30),
        "user-1's companies request to stall",
        || {
            stalled = case
                .requests()
                .into_iter()
                .find(|r| r.by("user-1") && r.path == "/rest/v1.0/companies");
            Ok(stalled.is_some())
        },
    );
    let stalled = stalled.expect("the stalled request");
    assert_eq!(
        queue_all(&mut c),
        (USERS - 1) as i32,
        "the others are queued"
    );

    // The others, one by one, until they are all done or user-1's stall is over.
    let retried = |log: &[LoggedRequest]| {
        log.iter()
            .find(|r| r.seq > stalled.seq && r.by("user-1"))
            .cloned()
    };
    let mut others_done_in_stall = None;
    case.wait(
        Duration::from_secs(120),
        "the other users to complete or user-1's stalled request to be retried",
        || {
            let done = completed_count(&mut c, &others)?;
            if done == others.len() as i64 {
                others_done_in_stall = Some(retried(&case.requests()).is_none());
                return Ok(true);
            }
            if retried(&case.requests()).is_some() {
                others_done_in_stall = Some(false);
                return Ok(true);
            }
            Ok(false)
        },
    );
    let others_done_at = completed_count(&mut c, &others).expect("count completed");

    let mut retry: Option<LoggedRequest> = None;
    case.wait(
        Duration::from_secs(60),
        "user-1's stalled request to be given up and retried",
        || {
            retry = retried(&case.requests());
            Ok(retry.is_some())
        },
    );
    let retry = retry.expect("the retry");
    let held = retry.at() - stalled.at();
    assert!(
        held <= chrono::TimeDelta::milliseconds(HTTP_TIMEOUT_MS + 5_000),
        "the stalled connection held user-1 for {held}, well past http_timeout_ms = {HTTP_TIMEOUT_MS}"
    );
    assert_eq!(
        retry.path, "/rest/v1.0/companies",
        "the retry asks for the same page: {retry:?}"
    );

    wait_cycle_done(&case.env.cluster, &case.users, since, CYCLE_TIMEOUT);
    let v = item(&mut c, victim).expect("user-1's item");
    assert_eq!(
        (v.status.as_str(), v.attempts, v.error_message.as_str()),
        ("completed", 1, ""),
        "the timeout was retried in place: {v:?}"
    );
    case.finish();
    assert_eq!(
        others_done_in_stall,
        Some(true),
        "the other {} users complete while user-1's connection stalls (held {held}); \
         {others_done_at} of them had completed when user-1's request was retried",
        others.len()
    );
}

/// user-1's connections close in the middle of a body (truncated twice) and before any
/// answer (dropped once): each is retried in place and user-1 completes without an
/// attempt more; nobody else needs a request twice.
#[test]
fn a_connection_closed_mid_body_is_retried_and_costs_nobody_else() {
    const USERS: usize = 12;
    let case = Case::start(USERS, json!({"latency_ms": 50}), &[]);
    let victim = case.user("user-1");
    case.faults(json!([
        {"kind": "truncate", "path": "/rfis", "login": "user-1", "times": 2},
        {"kind": "drop", "path": "/vendors", "login": "user-1", "times": 1}
    ]));
    let mut c = case.client();
    let since = now(&mut c);
    assert_eq!(queue_all(&mut c), USERS as i32);
    wait_cycle_done(&case.env.cluster, &case.users, since, CYCLE_TIMEOUT);

    assert_eq!(case.stat("faults_fired"), 3, "every fault fired");
    let rows = c
        .query(
            "SELECT user_id, status, attempts, coalesce(error_message, '') FROM procore_sync_queue",
            &[],
        )
        .expect("read the queue");
    for r in &rows {
        let (user, status, attempts, message): (Uuid, String, i32, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        assert_eq!(
            (status.as_str(), attempts, message.as_str()),
            ("completed", 1, ""),
            "user {user} completed at the first attempt"
        );
    }
    let log = case.requests();
    let victim_rfis = log
        .iter()
        .filter(|r| r.by("user-1") && r.path.ends_with("/rfis"))
        .count();
    assert!(
        victim_rfis >= 4,
        "user-1's two RFI pages were asked for again after the truncated bodies: {victim_rfis}"
    );
    let mut asked: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in log.iter().filter(|r| r.is_api() && !r.by("user-1")) {
        assert_eq!(r.status, 200, "another user's request failed: {r:?}");
        *asked
            .entry((r.login.clone().unwrap_or_default(), r.target()))
            .or_default() += 1;
    }
    let twice: Vec<_> = asked.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "user-1's broken connections cost other users requests: {twice:?}"
    );
    let _ = victim;
    case.finish();
}

// ---------------------------------------------------------------------------------------
// The lease
// ---------------------------------------------------------------------------------------

/// Records every write to `procore_records` with the writing process and the time, so a
/// test can tell who wrote what when.
fn audit_record_writes(c: &mut postgres::Client) {
    c.batch_execute(
        "CREATE TABLE public.e2e_record_writes (
             at timestamptz NOT NULL DEFAULT clock_timestamp(),
             pid integer NOT NULL DEFAULT pg_backend_pid(),
             op text NOT NULL, resource text NOT NULL, company_id bigint NOT NULL,
             procore_id bigint NOT NULL, name text);
         CREATE FUNCTION public.e2e_note_record_write() RETURNS trigger
         LANGUAGE plpgsql SET search_path = pg_catalog AS $$
         BEGIN
             INSERT INTO public.e2e_record_writes (op, resource, company_id, procore_id, name)
             VALUES (TG_OP, NEW.resource, NEW.company_id, NEW.procore_id, NEW.name);
             RETURN NULL;
         END $$;
         CREATE TRIGGER e2e_note_record_write AFTER INSERT OR UPDATE ON procore_records
             FOR EACH ROW EXECUTE FUNCTION public.e2e_note_record_write();",
    )
    .expect("audit writes to procore_records");
}

/// user-1's first RFI page stalls after its headers for longer than `lease_timeout`, so
/// its lease runs out and the item is claimed again while the response is still on its
/// way; meanwhile the record on that page is edited in Procore. When the stale response
/// (the old version) arrives, it is dropped:
/// - nothing of user-1 is written between the loss of the lease and the take that
///   completes the item, and the old worker writes nothing after the loss (unless it is
///   itself the one that took user-1 again);
/// - the stored record is Procore's current (edited) version;
/// - the old flight says it was taken over and asks Procore for no further page.
///
/// Whether the new holder may start before the old flight has ended is the engine's
/// choice: the checks hold either way.
#[test]
fn a_response_that_arrives_after_the_lease_was_lost_is_not_written() {
    const USERS: usize = 4;
    const STALL_MS: i64 = 16_000;
    let case = Case::start(
        USERS,
        json!({}),
        &[
            ("procore_sync.max_workers", "2"),
            ("procore_sync.lease_timeout", "5"),
            ("procore_sync.http_timeout_ms", "40000"),
        ],
    );
    let victim = case.user("user-1");
    // user-1 owns company 1001 and its project 1001001; RFI i of that project has id
    // project * 100000 + i, and lists are in id order, so the first page holds i = 1..3.
    let (company, rfi): (i64, i64) = (1001, 1_001_001 * 100_000 + 1);
    let mut c = case.client();
    audit_record_writes(&mut c);
    // The stall first (the first matching rule fires); everyone else is slowed a little so
    // the other users are still being synced when user-1's lease runs out.
    case.faults(json!([
        {"kind": "stall", "path": "/rfis", "login": "user-1", "latency_ms": STALL_MS, "times": 1},
        {"kind": "latency", "path": "/rest/", "latency_ms": 100}
    ]));
    let since = now(&mut c);
    assert_eq!(queue_all(&mut c), USERS as i32);

    let mut stalled: Option<LoggedRequest> = None;
    case.wait(
        Duration::from_secs(60),
        "user-1's first RFI page to stall",
        || {
            stalled = case
                .requests()
                .into_iter()
                .find(|r| r.by("user-1") && r.path.ends_with("/rfis"));
            Ok(stalled.is_some())
        },
    );
    let stalled = stalled.expect("the stalled request");
    let stall_ends = stalled.at() + chrono::TimeDelta::milliseconds(STALL_MS);
    let before = item(&mut c, victim).expect("user-1's item");
    let old_pid = before
        .worker_pid
        .unwrap_or_else(|| panic!("user-1's item has a worker: {before:?}"));
    // The stalled response already holds the old version; Procore now has a new one.
    case.env
        .standin
        .mutate(json!({"action": "edit", "resource": "rfis", "id": rfi}))
        .expect("edit the RFI");

    // Nothing renews the lease while the page stalls: it runs out and the item is claimed
    // or taken again (a claim or a take restarts started_at).
    let mut lost: Option<Item> = None;
    case.wait(
        Duration::from_secs(60),
        "user-1's item to be claimed again after its lease ran out",
        || {
            let it = item(&mut c, victim)?;
            let moved = it.id != before.id
                || it.started_at != before.started_at
                || it.worker_pid != Some(old_pid)
                || it.attempts != before.attempts;
            if moved {
                lost = Some(it);
            }
            Ok(moved)
        },
    );
    let lost = lost.expect("the item after the lease was lost");
    let lost_at = lost.started_at.expect("started_at of the claim");
    assert!(
        Utc::now() < stall_ends,
        "the lease was lost before the stalled response arrived (else this test proves \
         nothing): lost at {lost_at}, stall until {stall_ends}"
    );

    // The stale response arrives; its flight must drop it and say it lost the item.
    let until_stale = (stall_ends - Utc::now()).to_std().unwrap_or_default();
    std::thread::sleep(until_stale + Duration::from_secs(2));
    case.wait(
        Duration::from_secs(30),
        "the old flight to report that it was taken over",
        || {
            Ok(case
                .env
                .cluster
                .log()
                .contains("taken over by another worker"))
        },
    );
    wait_cycle_done(&case.env.cluster, &case.users, since, CYCLE_TIMEOUT);

    let done = item(&mut c, victim).expect("user-1's item");
    assert_eq!(done.status, "completed", "{done:?}");
    let final_take = done.started_at.expect("started_at of the completing take");
    let audit =
        |c: &mut postgres::Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]| {
            c.query(sql, params)
                .expect("read the write audit")
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        };
    let rfi_writes = audit(
        &mut c,
        "SELECT format('%s pid %s %s %s', at, pid, op, name) FROM public.e2e_record_writes \
         WHERE resource = 'rfis' AND company_id = $1 AND procore_id = $2 ORDER BY at",
        &[&company, &rfi],
    );
    eprintln!(
        "lease: lost at {lost_at}, stall until {stall_ends}, completing take at {final_take} \
         by pid {:?} (old pid {old_pid}); writes of the RFI:\n{}",
        done.worker_pid,
        rfi_writes.join("\n")
    );
    let stale: Vec<_> = rfi_writes
        .iter()
        .filter(|w| !w.ends_with("(edited)"))
        .collect();
    assert!(
        stale.is_empty(),
        "the RFI was edited before user-1's lease was lost, so only the stalled response \
         holds its old version, yet the old version was written: {stale:?}"
    );
    let unheld = audit(
        &mut c,
        "SELECT format('%s pid %s %s %s/%s %s', at, pid, op, resource, procore_id, name) \
         FROM public.e2e_record_writes WHERE company_id = $1 AND at > $2 AND at < $3 ORDER BY at",
        &[&company, &lost_at, &final_take],
    );
    assert!(
        unheld.is_empty(),
        "user-1's lease was lost at {lost_at} and the item taken again at {final_take}, but \
         {} record(s) of user-1 were written in between (the stale response), by pid {old_pid} \
         or another:\n{}",
        unheld.len(),
        unheld.join("\n")
    );
    if done.worker_pid != Some(old_pid) {
        let late = audit(
            &mut c,
            "SELECT format('%s %s %s/%s %s', at, op, resource, procore_id, name) \
             FROM public.e2e_record_writes WHERE pid = $1 AND at > $2 AND company_id = $3 \
             ORDER BY at",
            &[&old_pid, &lost_at, &company],
        );
        assert!(
            late.is_empty(),
            "worker {old_pid} lost user-1's lease at {lost_at} but wrote {} record(s) of \
             user-1 after:\n{}",
            late.len(),
            late.join("\n")
        );
    } else {
        eprintln!("lease: worker {old_pid} took user-1 again itself after losing the lease");
    }
    let name: Option<String> = c
        .query_one(
            "SELECT name FROM procore_records WHERE resource = 'rfis' AND company_id = $1 \
             AND procore_id = $2",
            &[&company, &rfi],
        )
        .expect("read the RFI")
        .get(0);
    assert!(
        name.as_deref().is_some_and(|n| n.ends_with("(edited)")),
        "the stored RFI is Procore's current (edited) version, not the stale one ({name:?}); \
         writes of it:\n{}",
        rfi_writes.join("\n")
    );
    // The old flight stopped at its stale page: nothing of user-1 was asked of Procore
    // while nobody held the lease, and from the completing take on no page twice (an old
    // flight going on would ask again for the pages the new holder reads).
    let log = case.requests();
    let after_loss: Vec<&LoggedRequest> = log
        .iter()
        .filter(|r| r.by("user-1") && r.is_api() && r.at() > lost_at)
        .collect();
    let unheld_requests: Vec<_> = after_loss.iter().filter(|r| r.at() < final_take).collect();
    assert!(
        unheld_requests.is_empty(),
        "user-1's pages were asked for between the loss of the lease ({lost_at}) and the next \
         take ({final_take}): {unheld_requests:?}"
    );
    let mut asked: BTreeMap<String, usize> = BTreeMap::new();
    for r in &after_loss {
        *asked.entry(r.target()).or_default() += 1;
    }
    let twice: BTreeSet<_> = asked.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "a page of user-1 was asked for twice after the lease was lost: {twice:?}"
    );
    assert_eq!(
        count_in_log(&case.env.cluster, "reinitializing"),
        0,
        "nothing crashed"
    );
    case.finish();
}
