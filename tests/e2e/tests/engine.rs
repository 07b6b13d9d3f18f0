//! The sync engine at scale, end to end: a real cluster with the extension preloaded and the
//! Procore stand-in. Pool of workers, claiming, rate limits, retries with backoff, token
//! refresh and `invalid_grant`, incremental sync, deletions, notifications and the views.
//!
//! Every test has its own stand-in and cluster. The default jobs are switched off so that the
//! test decides when items are queued and taken (`queue_procore_sync_for_all_users()`,
//! `process_procore_sync_queue()`, `procore_sync_user()`). Tokens are never printed: failure
//! output (server log included) is scrubbed of every secret the stand-in ever issued.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, TimeZone, Utc};
use postgres::fallible_iterator::FallibleIterator;
use procore_sync_e2e::{stored_record_keys, wait_until, Env, LoggedRequest, RecordKey};
use serde_json::{json, Value};
use uuid::Uuid;

const WORKER_TYPE: &str = "procore_sync sync worker";
/// Resources whose catalog entry says they take `filters[updated_at]` and that are not
/// structural (companies and projects are always read whole).
const INCREMENTAL: [&str; 6] = [
    "vendors",
    "rfis",
    "submittals",
    "punch_items",
    "observations",
    "change_events",
];
const ALWAYS_FULL: [&str; 3] = ["companies", "projects", "project_users"];
const POLL: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------
// Test fixture and helpers
// ---------------------------------------------------------------------------------------

struct T {
    env: Env,
    users: Vec<(Uuid, String)>,
    /// The request log's sequence once every user is connected: later token grants are
    /// refreshes, not the initial code exchanges.
    base_seq: u64,
}

/// The newest queue row of a user.
#[derive(Debug, Clone)]
#[allow(dead_code)]
struct Item {
    id: i64,
    status: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    error_message: Option<String>,
    records_written: i64,
    requests_made: i64,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    worker_pid: Option<i32>,
    now: DateTime<Utc>,
}

impl T {
    /// A stand-in serving `world`, a cluster pointed at it with `settings`, the default
    /// jobs switched off, and logins `user-1..=users` connected through `procore_connect`.
    fn start(world: Value, settings: &[(&str, &str)], users: usize) -> T {
        // The catalog asks for `per_page` explicitly; make it the world's page size so that
        // lists really are paged.
        let per_page = world["per_page_default"].as_i64().unwrap_or(100) as i32;
        let env = Env::new(world, settings).expect("start the stand-in and the cluster");
        let mut t = T {
            env,
            users: Vec::new(),
            base_seq: 0,
        };
        let mut c = t.client();
        t.ok(
            c.batch_execute(
                "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job",
            )
            .map_err(Into::into),
            "switch off the default jobs",
        );
        t.ok(
            c.execute(
                "UPDATE procore_sync_resource SET per_page = $1 WHERE paginated",
                &[&per_page],
            )
            .map_err(Into::into),
            "set the catalog's page size",
        );
        t.users = t.ok(t.env.connect_users(users), "connect users");
        t.base_seq = t.last_seq();
        t
    }

    fn client(&self) -> postgres::Client {
        self.ok(self.env.client(), "connect to the cluster")
    }

    fn user(&self, n: usize) -> Uuid {
        self.users[n - 1].0
    }

    /// Replaces every secret the stand-in ever issued (tokens, codes, client secret).
    fn redact(&self, text: &str) -> String {
        self.env.standin.redact(text, &[])
    }

    fn fail(&self, what: &str, e: anyhow::Error) -> ! {
        let message = self.redact(&format!("{e:#}"));
        panic!(
            "{what}: {message}\n--- queue ---\n{}\n--- server log (tail, secrets redacted) ---\n{}",
            self.queue_dump(),
            self.redact(&self.env.cluster.log_tail(80))
        );
    }

    fn ok<R>(&self, r: Result<R>, what: &str) -> R {
        r.unwrap_or_else(|e| self.fail(what, e))
    }

    fn wait(&self, timeout_s: u64, what: &str, f: impl FnMut() -> Result<bool>) {
        let r = wait_until(Duration::from_secs(timeout_s), POLL, what, f);
        self.ok(r, what)
    }

    fn queue_dump(&self) -> String {
        let Ok(mut c) = self.env.client() else {
            return "(cluster unreachable)".into();
        };
        procore_sync_e2e::query_table(
            &mut c,
            "SELECT id, user_id, status, attempts, next_attempt_at, worker_pid, records_written, \
             requests_made, left(error_message, 160) AS error_message \
             FROM procore_sync_queue ORDER BY id",
        )
        .map(|t| self.redact(&t))
        .unwrap_or_else(|e| format!("(queue unreadable: {e})"))
    }

    fn queue_all(&self, c: &mut postgres::Client) -> i32 {
        self.ok(
            c.query_one("SELECT queue_procore_sync_for_all_users()", &[])
                .map(|r| r.get(0))
                .map_err(Into::into),
            "queue_procore_sync_for_all_users()",
        )
    }

    fn process(&self, c: &mut postgres::Client) -> i32 {
        self.ok(
            c.query_one("SELECT process_procore_sync_queue()", &[])
                .map(|r| r.get(0))
                .map_err(Into::into),
            "process_procore_sync_queue()",
        )
    }

    fn enqueue(&self, c: &mut postgres::Client, user: Uuid) {
        self.ok(
            c.execute(
                "INSERT INTO procore_sync_queue (user_id) VALUES ($1)",
                &[&user],
            )
            .map_err(Into::into),
            "queue one user",
        );
    }

    /// Retried items are due again ~30 s later; tests make them due now.
    fn make_pending_due(&self, c: &mut postgres::Client) -> u64 {
        self.ok(
            c.execute(
                "UPDATE procore_sync_queue SET next_attempt_at = now() WHERE status = 'pending'",
                &[],
            )
            .map_err(Into::into),
            "make pending items due",
        )
    }

    fn item(&self, c: &mut postgres::Client, user: Uuid) -> Result<Item> {
        let row = c
            .query_opt(
                "SELECT id, status, attempts, next_attempt_at, error_message, records_written, \
                        requests_made, started_at, completed_at, worker_pid, clock_timestamp() \
                 FROM procore_sync_queue WHERE user_id = $1 ORDER BY id DESC LIMIT 1",
                &[&user],
            )?
            .ok_or_else(|| anyhow!("no queue row for user {user}"))?;
        Ok(Item {
            id: row.get(0),
            status: row.get(1),
            attempts: row.get(2),
            next_attempt_at: row.get(3),
            error_message: row.get(4),
            records_written: row.get(5),
            requests_made: row.get(6),
            started_at: row.get(7),
            completed_at: row.get(8),
            worker_pid: row.get(9),
            now: row.get(10),
        })
    }

    fn item_of(&self, c: &mut postgres::Client, user: Uuid) -> Item {
        self.ok(self.item(c, user), "read a queue row")
    }

    fn count(&self, c: &mut postgres::Client, sql: &str) -> i64 {
        self.ok(
            c.query_one(sql, &[]).map(|r| r.get(0)).map_err(Into::into),
            sql,
        )
    }

    fn status_count(&self, c: &mut postgres::Client, status: &str) -> Result<i64> {
        Ok(c.query_one(
            "SELECT count(*) FROM procore_sync_queue WHERE status = $1",
            &[&status],
        )?
        .get(0))
    }

    fn requests_since(&self, seq: u64) -> Vec<LoggedRequest> {
        let v = self.ok(
            self.env.standin.requests_since(seq),
            "read the stand-in request log",
        );
        LoggedRequest::parse_all(v)
    }

    fn last_seq(&self) -> u64 {
        self.requests_since(0).last().map(|r| r.seq).unwrap_or(0)
    }

    fn stat(&self, name: &str) -> u64 {
        let s = self.ok(self.env.standin.stats(), "stand-in stats");
        s.get(name).and_then(Value::as_u64).unwrap_or(0)
    }

    fn expected(&self) -> BTreeSet<RecordKey> {
        self.ok(self.env.standin.records(), "stand-in records")
            .into_iter()
            .collect()
    }

    /// Live rows equal the stand-in's records, and nothing else is stored.
    fn assert_exactly_once(&self, c: &mut postgres::Client) {
        let expected = self.expected();
        let stored = self.ok(stored_record_keys(c), "stored keys");
        assert_records_equal(
            &stored,
            &expected,
            "every stand-in record is stored exactly once",
        );
        let total = self.count(c, "SELECT count(*) FROM procore_records");
        assert_eq!(
            total as usize,
            expected.len(),
            "procore_records holds exactly the stand-in's records (no extra or deleted rows)"
        );
    }

    /// Fails at once when an item failed (a sync that should succeed broke).
    fn no_failed(&self, c: &mut postgres::Client) -> Result<()> {
        let rows = c.query(
            "SELECT user_id::text, attempts, coalesce(error_message, '') FROM procore_sync_queue \
             WHERE status = 'failed'",
            &[],
        )?;
        if let Some(r) = rows.first() {
            let (u, a, m): (String, i32, String) = (r.get(0), r.get(1), r.get(2));
            bail!(
                "{} item(s) failed, e.g. user {u} after {a} attempts: {}",
                rows.len(),
                self.redact(&m)
            );
        }
        Ok(())
    }

    fn sync_workers(&self, c: &mut postgres::Client) -> Result<Vec<(i32, String)>> {
        Ok(c.query(
            "SELECT pid, coalesce(query, '') FROM pg_stat_activity WHERE backend_type = $1",
            &[&WORKER_TYPE],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
    }

    /// `procore_sync_user(uuid)`: (status, records_written, requests_made, error_message).
    fn sync_user(
        &self,
        c: &mut postgres::Client,
        user: Uuid,
    ) -> (String, i64, i64, Option<String>) {
        let row = self.ok(
            c.query_one(
                "SELECT status, records_written, requests_made, error_message FROM procore_sync_user($1)",
                &[&user],
            )
            .map_err(Into::into),
            "procore_sync_user()",
        );
        (row.get(0), row.get(1), row.get(2), row.get(3))
    }

    /// Asserts that no secret the stand-in issued appears in `text` (never printing one).
    fn assert_no_secret(&self, text: &str, what: &str) {
        let secrets = self.ok(self.env.standin.secrets(), "stand-in secrets");
        let leaked = secrets
            .iter()
            .filter(|s| s.len() >= 8 && text.contains(s.as_str()))
            .count();
        assert_eq!(leaked, 0, "{what} contains {leaked} token(s)/secret(s)");
    }
}

fn assert_records_equal(stored: &BTreeSet<RecordKey>, expected: &BTreeSet<RecordKey>, what: &str) {
    if stored != expected {
        let missing: Vec<_> = expected.difference(stored).take(5).collect();
        let extra: Vec<_> = stored.difference(expected).take(5).collect();
        panic!(
            "{what}: stored {} live keys, the stand-in has {}; {} missing (e.g. {missing:?}), \
             {} extra (e.g. {extra:?})",
            stored.len(),
            expected.len(),
            expected.difference(stored).count(),
            stored.difference(expected).count()
        );
    }
}

/// A small world with generous rate limits; `extra` overrides.
fn world(users: usize, extra: Value) -> Value {
    let mut w = json!({
        "users": users,
        "companies_per_user": 1,
        "projects_per_company": 1,
        "records_per_resource": 4,
        "per_page_default": 100,
        "rate_limit_spike": 100000,
        "rate_limit_hour": 1000000,
    });
    if let (Some(w), Some(extra)) = (w.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            w.insert(k.clone(), v.clone());
        }
    }
    w
}

/// Ids in the stand-in's deterministic world.
fn company_of(user_n: i64) -> i64 {
    user_n * 1000 + 1
}
fn project_of(user_n: i64, p: i64) -> i64 {
    company_of(user_n) * 1000 + p
}

fn next_hour_boundary(now: DateTime<Utc>) -> DateTime<Utc> {
    let epoch = now.timestamp();
    Utc.timestamp_opt((epoch / 3600 + 1) * 3600, 0)
        .single()
        .expect("valid time")
}

/// Tests that park a user until the hourly window resets need that reset to be minutes
/// away, not seconds: if the hour ends within `margin`, wait for the next one.
fn avoid_hour_boundary(margin: Duration) {
    let now = Utc::now();
    let left = (next_hour_boundary(now) - now).to_std().unwrap_or_default();
    if left < margin {
        eprintln!("waiting {left:?} for the hourly rate-limit window to roll over");
        std::thread::sleep(left + Duration::from_secs(2));
    }
}

/// Spends `n` of `login`'s requests at the stand-in directly (rate limits are per login),
/// honouring its 429s. The token is issued for this and never printed.
fn burn_requests(t: &T, login: &str, n: usize) -> Result<()> {
    let pair = t.env.standin.issue_tokens(login)?;
    let token = pair
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no access_token from /__admin/tokens"))?
        .to_string();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let url = format!("{}/rest/v1.0/companies", t.env.standin.base_url());
    let mut done = 0;
    let started = Instant::now();
    while done < n {
        if started.elapsed() > Duration::from_secs(180) {
            bail!("could not spend {n} requests of {login} in 3 minutes ({done} done)");
        }
        match agent
            .get(&url)
            .set("Authorization", &format!("Bearer {token}"))
            .call()
        {
            Ok(r) => {
                done += 1;
                let remaining = r
                    .header("X-Rate-Limit-Remaining")
                    .and_then(|v| v.parse::<u64>().ok());
                let reset = r
                    .header("X-Rate-Limit-Reset")
                    .and_then(|v| v.parse::<i64>().ok());
                if let (Some(0), Some(reset), true) = (remaining, reset, done < n) {
                    let wait = (reset - Utc::now().timestamp()).clamp(0, 15) as u64;
                    std::thread::sleep(Duration::from_millis(wait * 1000 + 300));
                }
            }
            Err(ureq::Error::Status(429, r)) => {
                let wait = r
                    .header("Retry-After")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                std::thread::sleep(Duration::from_secs(wait.min(15)) + Duration::from_millis(300));
            }
            Err(ureq::Error::Status(code, _)) => bail!("direct request as {login} answered {code}"),
            Err(e) => bail!("direct request as {login} failed: {}", e.kind()),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 20+ users in parallel, every record exactly once
// ---------------------------------------------------------------------------------------

#[test]
fn twenty_four_users_in_parallel_store_every_record_exactly_once() {
    const USERS: usize = 24;
    let t = T::start(
        world(
            USERS,
            json!({"projects_per_company": 2, "records_per_resource": 12, "per_page_default": 5}),
        ),
        &[("procore_sync.max_workers", "4")],
        USERS,
    );
    let mut c = t.client();
    let expected = t.expected();
    assert!(
        expected.len() > 3000,
        "world has a few thousand records: {}",
        expected.len()
    );

    assert_eq!(
        t.queue_all(&mut c),
        USERS as i32,
        "every connected user is queued"
    );
    assert_eq!(
        t.queue_all(&mut c),
        0,
        "queuing again adds no duplicate pending rows"
    );
    let taken = t.process(&mut c);
    assert_eq!(taken, 10, "one call takes batch_size (10) items");

    t.wait(420, "all 24 users synced by the pool", || {
        t.no_failed(&mut c)?;
        Ok(t.status_count(&mut c, "completed")? == USERS as i64)
    });

    // One item per user, done in one attempt, nothing left open.
    let rows = t.ok(
        c.query(
            "SELECT user_id, status, attempts, error_message, records_written FROM procore_sync_queue",
            &[],
        )
        .map_err(Into::into),
        "queue rows",
    );
    assert_eq!(rows.len(), USERS, "one queue row per user");
    let mut written_total = 0i64;
    for r in &rows {
        let (user, status, attempts, error, written): (Uuid, String, i32, Option<String>, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        assert_eq!(status, "completed", "user {user}");
        assert_eq!(attempts, 1, "user {user} synced in one attempt");
        assert_eq!(error, None, "user {user} has no error");
        assert!(written > 0, "user {user} wrote records");
        written_total += written;
    }
    assert_eq!(
        written_total as usize,
        expected.len(),
        "the first sync wrote each record exactly once (sum of records_written)"
    );

    t.assert_exactly_once(&mut c);
    let served: BTreeSet<RecordKey> = t.ok(t.env.standin.served(), "served").into_iter().collect();
    assert_eq!(
        served, expected,
        "the stand-in served every record it holds"
    );

    // No user was synced twice and no page was read twice.
    let log = t.requests_since(t.base_seq);
    for (_, login) in &t.users {
        let companies = log
            .iter()
            .filter(|r| r.by(login) && r.path == "/rest/v1.0/companies")
            .count();
        assert_eq!(companies, 1, "{login}'s sync started exactly once");
        let mut pages = HashSet::new();
        for r in log.iter().filter(|r| r.by(login) && r.is_api()) {
            assert_eq!(
                r.status, 200,
                "{login}: {} {}?{} answered {}",
                r.method, r.path, r.query, r.status
            );
            assert!(
                pages.insert((r.path.clone(), r.query.clone())),
                "{login} read {}?{} twice",
                r.path,
                r.query
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The pool: never more than max_workers, started on demand, gone when idle, named
// ---------------------------------------------------------------------------------------

#[test]
fn pool_never_exceeds_max_workers_and_exits_when_idle() {
    const USERS: usize = 21;
    const MAX: usize = 3;
    let t = T::start(
        world(
            USERS,
            json!({"records_per_resource": 6, "per_page_default": 3, "latency_ms": 40}),
        ),
        // One user per worker: this test is about the pool of processes (many users per
        // worker are tried in concurrency.rs).
        &[
            ("procore_sync.max_workers", "3"),
            ("procore_sync.users_per_worker", "1"),
        ],
        USERS,
    );
    let mut c = t.client();
    let ours: HashSet<String> = t.users.iter().map(|(u, _)| u.to_string()).collect();

    assert!(
        t.ok(t.sync_workers(&mut c), "workers").is_empty(),
        "no sync worker runs before there is work"
    );
    assert_eq!(t.queue_all(&mut c), USERS as i32);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        t.ok(t.sync_workers(&mut c), "workers").is_empty(),
        "queuing alone starts no worker (the jobs are off)"
    );

    let called = Instant::now();
    let taken = t.process(&mut c);
    let call_time = called.elapsed();
    assert!(taken > 0, "process_procore_sync_queue() took items");
    assert!(
        call_time < Duration::from_secs(5),
        "process_procore_sync_queue() returns at once, not after the syncs ({call_time:?})"
    );

    // Sample the pool until everyone is synced.
    let mut peak_workers = 0usize;
    let mut peak_holders = 0i64;
    let mut seen_users = HashSet::new();
    let mut sampler = t.client();
    t.wait(420, "every user synced while sampling the pool", || {
        t.no_failed(&mut sampler)?;
        let workers = t.sync_workers(&mut sampler)?;
        peak_workers = peak_workers.max(workers.len());
        if workers.len() > MAX {
            bail!("{} sync workers run at once (max_workers = {MAX}): {workers:?}", workers.len());
        }
        let mut now_syncing = HashSet::new();
        for (pid, query) in &workers {
            if let Some(user) = query.strip_prefix("procore_sync: syncing user ") {
                if !ours.contains(user) {
                    bail!("worker {pid} reports an unknown user: {query:?}");
                }
                if !now_syncing.insert(user.to_string()) {
                    bail!("two workers sync user {user} at once: {workers:?}");
                }
                seen_users.insert(user.to_string());
            } else if !(query.is_empty() || query.starts_with("procore_sync")) {
                bail!("worker {pid} shows an unnamed activity: {query:?}");
            }
        }
        let holders: i64 = sampler
            .query_one(
                "SELECT count(*) FROM procore_sync_queue WHERE status = 'processing' AND worker_pid IS NOT NULL",
                &[],
            )?
            .get(0);
        peak_holders = peak_holders.max(holders);
        if holders > MAX as i64 {
            bail!("{holders} items are held by workers at once (max_workers = {MAX})");
        }
        Ok(t.status_count(&mut sampler, "completed")? == USERS as i64)
    });
    assert_eq!(
        peak_workers, MAX,
        "the pool grew to max_workers while 21 users were due"
    );
    assert!(
        peak_holders >= 2,
        "items were synced in parallel (peak {peak_holders})"
    );
    assert!(
        seen_users.len() >= USERS / 2,
        "workers name the user they sync in pg_stat_activity (seen {} of {USERS})",
        seen_users.len()
    );
    t.assert_exactly_once(&mut c);

    // Gone when idle.
    t.wait(
        60,
        "every sync worker exited after the queue emptied",
        || Ok(t.sync_workers(&mut c)?.is_empty()),
    );

    // Started on demand: one due item starts one worker, not the whole pool.
    t.enqueue(&mut c, t.user(1));
    assert_eq!(t.process(&mut c), 1);
    let mut peak_again = 0usize;
    t.wait(120, "the single item synced", || {
        peak_again = peak_again.max(t.sync_workers(&mut c)?.len());
        Ok(t.item(&mut c, t.user(1))?.status == "completed")
    });
    assert_eq!(peak_again, 1, "one due item starts exactly one worker");
    t.wait(60, "the worker exited again when idle", || {
        Ok(t.sync_workers(&mut c)?.is_empty())
    });
}

// ---------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------

/// A storm of 429s on one login (each with a short Retry-After, as Procore's spike window
/// gives) must not stall the others. With one worker, a worker that waits the storm out in
/// place forever would leave every other user unsynced.
#[test]
fn rate_limit_storm_on_one_user_while_the_others_finish() {
    const USERS: usize = 6;
    let t = T::start(
        world(USERS, json!({})),
        &[("procore_sync.max_workers", "1")],
        USERS,
    );
    let mut c = t.client();
    t.ok(
        t.env
            .standin
            .add_faults(json!({"kind": "status", "status": 429, "login": "user-1"})),
        "add the 429 storm",
    );

    // user-1 first, so that the only worker meets the storm before anyone else is due.
    t.enqueue(&mut c, t.user(1));
    assert_eq!(t.process(&mut c), 1);
    let storm_started = Instant::now();
    t.wait(60, "user-1 meets the storm", || {
        Ok(t.stat("faults_fired") >= 1)
    });
    assert_eq!(
        t.queue_all(&mut c),
        (USERS - 1) as i32,
        "the others are queued"
    );
    t.process(&mut c);

    let others_done = wait_until(
        Duration::from_secs(150),
        POLL,
        "the other five users synced while user-1 is rate limited",
        || {
            t.no_failed(&mut c)?;
            let done: i64 = c
                .query_one(
                    "SELECT count(*) FROM procore_sync_queue WHERE status = 'completed' AND user_id <> $1",
                    &[&t.user(1)],
                )?
                .get(0);
            Ok(done == (USERS - 1) as i64)
        },
    );
    if let Err(e) = others_done {
        let u1 = t.item_of(&mut c, t.user(1));
        let workers = t.sync_workers(&mut c).unwrap_or_default();
        t.fail(
            "one user's 429 storm stalled the pool",
            e.context(format!(
                "user-1 is {} (worker {:?}, attempts {}) after {} injected 429s in {}s; \
                 sync workers: {workers:?}",
                u1.status,
                u1.worker_pid,
                u1.attempts,
                t.stat("faults_fired"),
                storm_started.elapsed().as_secs()
            )),
        );
    }
    let storm_secs = storm_started.elapsed().as_secs();
    let fired = t.stat("faults_fired");
    assert!(
        fired <= storm_secs / 10 + 4,
        "user-1's 429s were honoured (Retry-After), not hammered: {fired} 429s in {storm_secs}s"
    );
    let u1 = t.item_of(&mut c, t.user(1));
    assert_ne!(
        u1.status, "completed",
        "user-1 cannot have finished during the storm"
    );

    // The storm ends: user-1 is synced too, and every record landed once.
    t.ok(t.env.standin.clear_faults(), "clear faults");
    t.make_pending_due(&mut c);
    t.process(&mut c);
    t.wait(180, "user-1 synced after the storm", || {
        Ok(t.item(&mut c, t.user(1))?.status == "completed")
    });
    assert_eq!(t.stat("rate_limited"), 0, "no real rate limit was hit");
    t.assert_exactly_once(&mut c);
}

/// The hourly window of user-1 is nearly spent (by another client of the same login): the
/// engine paces from the headers, never gets a 429, parks user-1 until the window resets,
/// and the only worker goes on with the others, pacing them under the 10-second window.
#[test]
fn exhausted_rate_limit_parks_the_user_until_reset_and_paces_the_others() {
    const USERS: usize = 4;
    const SPIKE: u64 = 8;
    avoid_hour_boundary(Duration::from_secs(240));
    let t = T::start(
        world(
            USERS,
            json!({"per_page_default": 2, "rate_limit_spike": SPIKE, "rate_limit_hour": 30}),
        ),
        &[("procore_sync.max_workers", "1")],
        USERS,
    );
    let mut c = t.client();
    // A sync is 16 requests here; leave user-1 only 8 of its 30 for this hour.
    t.ok(burn_requests(&t, "user-1", 22), "spend user-1's requests");
    let hour_reset = next_hour_boundary(Utc::now());
    let limited_before = t.stat("rate_limited");
    let seq = t.last_seq();

    t.enqueue(&mut c, t.user(1));
    assert_eq!(t.process(&mut c), 1);
    t.wait(90, "user-1 parked until the hourly reset", || {
        t.no_failed(&mut c)?;
        let it = t.item(&mut c, t.user(1))?;
        Ok(it.status == "pending" && it.next_attempt_at > it.now + chrono::Duration::seconds(30))
    });
    let parked = t.item_of(&mut c, t.user(1));
    assert!(
        parked.next_attempt_at >= hour_reset - chrono::Duration::seconds(1)
            && parked.next_attempt_at <= hour_reset + chrono::Duration::seconds(5),
        "user-1 is due again at the hourly reset {hour_reset}, not {}",
        parked.next_attempt_at
    );
    assert!(
        parked.attempts <= 1,
        "waiting for a rate limit is not a failed attempt ({})",
        parked.attempts
    );
    let message = parked
        .error_message
        .clone()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        message.contains("rate limit") || message.contains("wait"),
        "the row says why user-1 waits: {message:?}"
    );
    assert!(
        parked.worker_pid.is_none(),
        "the parked item holds no worker"
    );
    let parked_at_seq = t.last_seq();

    // The one worker is free for the others.
    assert_eq!(t.queue_all(&mut c), (USERS - 1) as i32);
    t.process(&mut c);
    t.wait(300, "the other users synced with user-1 parked", || {
        t.no_failed(&mut c)?;
        Ok(t.status_count(&mut c, "completed")? == (USERS - 1) as i64)
    });
    assert_eq!(
        t.stat("rate_limited") - limited_before,
        0,
        "the engine paced itself under both windows: no request was refused with 429"
    );
    let log = t.requests_since(seq);
    for login in ["user-2", "user-3", "user-4"] {
        let mut per_window: BTreeMap<i64, u64> = BTreeMap::new();
        for r in log
            .iter()
            .filter(|r| r.by(login) && r.is_api() && r.status == 200)
        {
            *per_window.entry(r.at().timestamp() / 10).or_default() += 1;
        }
        assert!(
            per_window.len() >= 2,
            "{login}'s 16 requests spanned several 10 s windows"
        );
        assert!(
            per_window.values().all(|n| *n <= SPIKE),
            "{login} stayed under the spike limit"
        );
    }
    let parked_now = t.item_of(&mut c, t.user(1));
    let early: Vec<_> = t
        .requests_since(parked_at_seq)
        .into_iter()
        .filter(|r| r.by("user-1") && r.at() < parked.next_attempt_at)
        .collect();
    assert!(
        early.is_empty(),
        "user-1 was left alone until its reset time: {early:?}"
    );
    if parked_now.now < parked.next_attempt_at {
        assert_eq!(
            parked_now.status, "pending",
            "user-1 still waits for its reset"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

/// Short bursts of 500/503/502-HTML, dropped connections and a timeout are retried in place
/// and the sync completes in one attempt; a burst longer than the in-place retries
/// reschedules the item with backoff, and its next attempt succeeds.
#[test]
fn server_error_bursts_are_retried_to_success() {
    let t = T::start(
        world(2, json!({"records_per_resource": 6, "per_page_default": 3})),
        &[
            ("procore_sync.max_workers", "2"),
            ("procore_sync.http_timeout_ms", "1500"),
        ],
        2,
    );
    let mut c = t.client();
    t.ok(
        t.env.standin.add_faults(json!([
            {"kind": "status", "status": 500, "login": "user-1", "path": "/rfis", "times": 2},
            {"kind": "status", "status": 503, "login": "user-1", "path": "/submittals", "times": 3},
            {"kind": "drop", "login": "user-1", "path": "/vendors", "times": 2},
            {"kind": "html", "login": "user-1", "path": "punch_items", "times": 1},
            {"kind": "latency", "latency_ms": 5000, "login": "user-1", "path": "observations", "times": 1},
            {"kind": "status", "status": 502, "login": "user-2", "path": "/change_events", "times": 6},
        ])),
        "add fault bursts",
    );
    assert_eq!(t.queue_all(&mut c), 2);
    t.process(&mut c);
    let (u1, u2) = (t.user(1), t.user(2));
    t.wait(180, "user-1 done and user-2 rescheduled", || {
        t.no_failed(&mut c)?;
        let (a, b) = (t.item(&mut c, u1)?, t.item(&mut c, u2)?);
        Ok(a.status == "completed" && b.status == "pending" && b.attempts >= 1)
    });

    let a = t.item_of(&mut c, u1);
    assert_eq!(
        a.attempts, 1,
        "user-1's bursts were all retried within the first attempt"
    );
    assert_eq!(a.error_message, None, "user-1 completed without any error");
    let log = t.requests_since(t.base_seq);
    let statuses = |login: &str, part: &str| -> Vec<u16> {
        log.iter()
            .filter(|r| r.by(login) && format!("{}?{}", r.path, r.query).contains(part))
            .map(|r| r.status)
            .collect()
    };
    assert_eq!(
        statuses("user-1", "/rfis")
            .iter()
            .filter(|s| **s == 500)
            .count(),
        2
    );
    assert_eq!(
        statuses("user-1", "/submittals")
            .iter()
            .filter(|s| **s == 503)
            .count(),
        3
    );
    assert_eq!(
        statuses("user-1", "/vendors")
            .iter()
            .filter(|s| **s == 0)
            .count(),
        2,
        "dropped connections"
    );
    assert_eq!(
        statuses("user-1", "punch_items")
            .iter()
            .filter(|s| **s == 502)
            .count(),
        1
    );
    assert!(
        statuses("user-1", "observations").len() >= 2,
        "the timed-out observations request was sent again"
    );

    let b = t.item_of(&mut c, u2);
    assert_eq!(b.attempts, 1);
    let last_try = log
        .iter()
        .filter(|r| r.by("user-2"))
        .map(LoggedRequest::at)
        .max()
        .expect("user-2 made requests");
    let delay = (b.next_attempt_at - last_try).num_milliseconds() as f64 / 1000.0;
    assert!(
        (13.5..=31.0).contains(&delay),
        "the first retry is scheduled with backoff (~15-30 s after the failure), got {delay:.1}s"
    );
    let message = b.error_message.clone().unwrap_or_default();
    assert!(
        message.contains("502"),
        "the row shows the last error: {message:?}"
    );
    assert_eq!(
        statuses("user-2", "/change_events")
            .iter()
            .filter(|s| **s == 502)
            .count(),
        4,
        "one request and three quick retries before the item was rescheduled"
    );

    // The next attempt meets the rest of the burst, retries in place and succeeds.
    t.make_pending_due(&mut c);
    assert_eq!(t.process(&mut c), 1);
    t.wait(120, "user-2 completed on its second attempt", || {
        t.no_failed(&mut c)?;
        Ok(t.item(&mut c, u2)?.status == "completed")
    });
    let b = t.item_of(&mut c, u2);
    assert_eq!(b.attempts, 2, "user-2 took two attempts");
    assert_eq!(
        b.error_message, None,
        "a completed item carries no stale error"
    );
    let log = t.requests_since(t.base_seq);
    let fivexx = log
        .iter()
        .filter(|r| r.by("user-2") && r.path.contains("/change_events") && r.status == 502)
        .count();
    assert_eq!(fivexx, 6, "the whole burst was absorbed");
    t.assert_exactly_once(&mut c);
}

#[test]
fn retries_exhausted_fail_the_item_with_the_last_error() {
    const USERS: usize = 5;
    let t = T::start(
        world(USERS, json!({})),
        &[
            ("procore_sync.max_workers", "2"),
            ("procore_sync.max_attempts", "3"),
        ],
        USERS,
    );
    let mut c = t.client();
    t.ok(
        t.env
            .standin
            .add_faults(json!({"kind": "status", "status": 502, "path": "/rfis"})),
        "502 forever on rfis",
    );
    assert_eq!(t.queue_all(&mut c), USERS as i32);

    // Attempt n: every item back to pending with n attempts and backoff base * 2^(n-1).
    for (attempt, (lo, hi)) in [(1, (15.0, 30.0)), (2, (30.0, 60.0))] {
        t.process(&mut c);
        t.wait(180, &format!("every item rescheduled after attempt {attempt}"), || {
            t.no_failed(&mut c)?;
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM procore_sync_queue WHERE status = 'pending' AND attempts = $1",
                    &[&attempt],
                )?
                .get(0);
            Ok(n == USERS as i64)
        });
        let log = t.requests_since(t.base_seq);
        let mut delays = Vec::new();
        for (user, login) in &t.users {
            let it = t.item_of(&mut c, *user);
            let message = it.error_message.clone().unwrap_or_default();
            assert!(
                message.contains("502"),
                "{login}: the row shows the last error: {message:?}"
            );
            t.assert_no_secret(&message, "error_message");
            assert!(
                it.next_attempt_at > it.now,
                "{login}: next attempt is in the future"
            );
            let rfis: Vec<&LoggedRequest> = log
                .iter()
                .filter(|r| r.by(login) && r.path.contains("/rfis"))
                .collect();
            assert_eq!(
                rfis.len(),
                4 * attempt as usize,
                "{login}: each attempt sends the request once and retries it three times"
            );
            let last = rfis.iter().map(|r| r.at()).max().expect("rfis requests");
            delays.push((it.next_attempt_at - last).num_milliseconds() as f64 / 1000.0);
        }
        for d in &delays {
            assert!(
                (lo - 1.5..=hi + 1.0).contains(d),
                "attempt {attempt}: backoff {d:.1}s outside {lo}-{hi}s: {delays:?}"
            );
        }
        let spread = delays.iter().cloned().fold(f64::MIN, f64::max)
            - delays.iter().cloned().fold(f64::MAX, f64::min);
        assert!(
            spread > 0.5,
            "attempt {attempt}: backoffs are jittered, not identical: {delays:?}"
        );
        // The status view tells the operator the same.
        let view: Vec<(i32, DateTime<Utc>)> = t
            .ok(
                c.query(
                    "SELECT attempts, next_attempt FROM procore_sync_user_status WHERE queue_status = 'pending'",
                    &[],
                )
                .map_err(Into::into),
                "procore_sync_user_status",
            )
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(view.len(), USERS, "the status view lists each pending user");
        assert!(view.iter().all(|(a, _)| *a == attempt));
        t.make_pending_due(&mut c);
    }

    t.process(&mut c);
    t.wait(180, "every item failed after max_attempts", || {
        Ok(t.status_count(&mut c, "failed")? == USERS as i64)
    });
    for (user, login) in &t.users {
        let it = t.item_of(&mut c, *user);
        assert_eq!(it.attempts, 3, "{login}: failed after max_attempts");
        assert!(
            it.completed_at.is_some(),
            "{login}: failed items are finished"
        );
        let message = it.error_message.clone().unwrap_or_default();
        assert!(
            message.contains("502"),
            "{login}: failed with the last error: {message:?}"
        );
    }
    let last_errors = t.count(
        &mut c,
        "SELECT count(*) FROM procore_sync_user_status WHERE last_error LIKE '%502%'",
    );
    assert_eq!(
        last_errors, USERS as i64,
        "the status view shows each user's last error"
    );
    t.make_pending_due(&mut c);
    assert_eq!(t.process(&mut c), 0, "failed items are not retried again");
    let rfis = t
        .requests_since(t.base_seq)
        .iter()
        .filter(|r| r.path.contains("/rfis"))
        .count();
    assert_eq!(
        rfis,
        USERS * 12,
        "three attempts of four requests each, then nothing"
    );
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

/// user-1's access token expires in the middle of its sync: one 401, one refresh, the same
/// request again, and the sync completes. user-2 keeps getting 401 on one endpoint even with
/// a fresh token: it refreshes once, not in a loop.
#[test]
fn expired_token_is_refreshed_mid_sync() {
    let t = T::start(
        world(
            2,
            json!({"projects_per_company": 2, "records_per_resource": 6, "per_page_default": 2,
                   "latency_ms": 150}),
        ),
        &[("procore_sync.max_workers", "2")],
        2,
    );
    let mut c = t.client();
    let (u1, u2) = (t.user(1), t.user(2));
    t.ok(
        t.env.standin.add_faults(
            json!({"kind": "status", "status": 401, "login": "user-2", "path": "/rfis"}),
        ),
        "401 forever on user-2's rfis",
    );
    let token_hash = |c: &mut postgres::Client| -> String {
        c.query_one(
            "SELECT md5(access_token) FROM procore_sync_credentials WHERE user_id = $1",
            &[&u1],
        )
        .expect("token hash")
        .get(0)
    };
    let before = token_hash(&mut c);

    assert_eq!(t.queue_all(&mut c), 2);
    t.process(&mut c);
    // Mid-sync: a few pages in, already committed and visible, item still running.
    t.wait(120, "user-1 a few pages into its sync", || {
        let pages: Option<i64> = c
            .query_opt(
                "SELECT pages FROM procore_sync_running WHERE user_id = $1",
                &[&u1],
            )?
            .map(|r| r.get(0));
        Ok(pages.unwrap_or(0) >= 4)
    });
    let visible = t.count(
        &mut c,
        &format!(
            "SELECT count(*) FROM procore_records WHERE company_id = {}",
            company_of(1)
        ),
    );
    let still_running = t.item_of(&mut c, u1);
    assert_eq!(
        still_running.status, "processing",
        "user-1's sync is still going"
    );
    assert!(
        visible > 0,
        "each page is committed as the sync goes (saw {visible} rows mid-sync)"
    );

    let seq = t.last_seq();
    t.ok(
        t.env.standin.expire_tokens("user-1"),
        "expire user-1's tokens",
    );
    t.wait(180, "both items finished", || {
        let (a, b) = (t.item(&mut c, u1)?, t.item(&mut c, u2)?);
        Ok(["completed", "failed"].contains(&a.status.as_str())
            && ["completed", "failed"].contains(&b.status.as_str()))
    });

    let a = t.item_of(&mut c, u1);
    assert_eq!(
        a.status,
        "completed",
        "user-1 completed after the refresh: {:?}",
        a.error_message.as_deref().map(|m| t.redact(m))
    );
    assert_eq!(a.attempts, 1, "the refresh happened within the attempt");
    assert_eq!(a.error_message, None);
    let log: Vec<LoggedRequest> = t
        .requests_since(seq)
        .into_iter()
        .filter(|r| r.by("user-1"))
        .collect();
    let unauthorized: Vec<&LoggedRequest> = log.iter().filter(|r| r.status == 401).collect();
    let grants: Vec<&LoggedRequest> = log.iter().filter(|r| r.is_token_grant()).collect();
    assert_eq!(
        unauthorized.len(),
        1,
        "exactly one request met the expired token"
    );
    assert_eq!(grants.len(), 1, "exactly one refresh");
    assert_eq!(grants[0].status, 200, "the refresh succeeded");
    assert!(
        grants[0].seq > unauthorized[0].seq,
        "the refresh followed the 401"
    );
    let retried = log
        .iter()
        .find(|r| r.seq > grants[0].seq && r.is_api())
        .expect("a request after the refresh");
    assert_eq!(
        (
            retried.path.as_str(),
            retried.query.as_str(),
            retried.status
        ),
        (
            unauthorized[0].path.as_str(),
            unauthorized[0].query.as_str(),
            200
        ),
        "the refused request was sent again with the new token"
    );
    assert!(
        log.iter()
            .filter(|r| r.seq > grants[0].seq)
            .all(|r| r.status == 200),
        "no request after the refresh was refused"
    );
    assert_ne!(
        token_hash(&mut c),
        before,
        "the new access token was stored"
    );
    let refreshed: bool = t
        .ok(
            c.query_one(
                "SELECT refreshed_at IS NOT NULL AND NOT needs_reconnect FROM procore_sync_credentials WHERE user_id = $1",
                &[&u1],
            )
            .map_err(Into::into),
            "credentials",
        )
        .get(0);
    assert!(
        refreshed,
        "credentials record the refresh and stay connected"
    );

    // user-1's records all landed, once.
    let expected: BTreeSet<RecordKey> = t
        .expected()
        .into_iter()
        .filter(|k| k.company_id == company_of(1))
        .collect();
    let stored: BTreeSet<RecordKey> = t
        .ok(stored_record_keys(&mut c), "stored keys")
        .into_iter()
        .filter(|k| k.company_id == company_of(1))
        .collect();
    assert_records_equal(
        &stored,
        &expected,
        "user-1's records after the mid-sync refresh",
    );

    // user-2: a second 401 right after a refresh does not refresh again.
    let u2_log: Vec<LoggedRequest> = t
        .requests_since(t.base_seq)
        .into_iter()
        .filter(|r| r.by("user-2"))
        .collect();
    let u2_grants = u2_log
        .iter()
        .filter(|r| r.is_token_grant() && r.status == 200)
        .count();
    let u2_401 = u2_log.iter().filter(|r| r.status == 401).count();
    assert_eq!(
        u2_grants, 1,
        "user-2: one refresh for the 401, not a refresh loop"
    );
    assert_eq!(
        u2_401, 2,
        "user-2: the 401'd request was retried once after the refresh"
    );
}

#[test]
fn invalid_grant_marks_the_user_for_reconnection_and_stops_queuing_it() {
    const USERS: usize = 3;
    let t = T::start(
        world(USERS, json!({})),
        &[("procore_sync.max_workers", "2")],
        USERS,
    );
    let mut c = t.client();
    let u2 = t.user(2);
    t.ok(
        t.env.standin.revoke("user-2"),
        "revoke user-2's grant at Procore",
    );
    assert_eq!(t.queue_all(&mut c), USERS as i32);
    t.process(&mut c);
    t.wait(120, "every item finished", || {
        Ok(
            t.status_count(&mut c, "completed")? + t.status_count(&mut c, "failed")?
                == USERS as i64,
        )
    });

    for n in [1, 3] {
        assert_eq!(
            t.item_of(&mut c, t.user(n)).status,
            "completed",
            "user-{n} is unaffected"
        );
    }
    let it = t.item_of(&mut c, u2);
    assert_eq!(
        it.status, "failed",
        "a revoked grant fails the item at once"
    );
    assert_eq!(it.attempts, 1, "invalid_grant is not retried");
    let message = it.error_message.clone().unwrap_or_default();
    assert!(
        message.contains("invalid_grant") && message.contains("reconnect"),
        "the item says the user must reconnect: {message:?}"
    );
    t.assert_no_secret(&message, "error_message");
    let (needs, reason): (bool, Option<String>) = {
        let r = t.ok(
            c.query_one(
                "SELECT needs_reconnect, reconnect_reason FROM procore_sync_credentials WHERE user_id = $1",
                &[&u2],
            )
            .map_err(Into::into),
            "credentials",
        );
        (r.get(0), r.get(1))
    };
    assert!(needs, "the credentials are marked as needing reconnection");
    assert!(reason.unwrap_or_default().contains("invalid_grant"));
    let connected: bool = t
        .ok(
            c.query_one(
                "SELECT connected FROM procore_sync_user_status WHERE user_id = $1",
                &[&u2],
            )
            .map_err(Into::into),
            "status view",
        )
        .get(0);
    assert!(!connected, "the status view shows user-2 as not connected");
    let grants: Vec<LoggedRequest> = t
        .requests_since(t.base_seq)
        .into_iter()
        .filter(|r| r.by("user-2") && r.is_token_grant())
        .collect();
    assert_eq!(
        grants.len(),
        1,
        "one refresh attempt, no retry loop on invalid_grant"
    );
    assert_eq!(grants[0].status, 400);

    // Not queued again until reconnected, and no request goes out for it.
    let seq = t.last_seq();
    assert_eq!(
        t.queue_all(&mut c),
        (USERS - 1) as i32,
        "everyone but user-2 is queued"
    );
    let open = t.count(
        &mut c,
        &format!("SELECT count(*) FROM procore_sync_queue WHERE user_id = '{u2}' AND status IN ('pending', 'processing')"),
    );
    assert_eq!(open, 0, "user-2 has no open item");
    t.process(&mut c);
    t.wait(120, "the others synced again", || {
        t.no_failed_since(&mut c, it.id)?;
        Ok(t.count_open(&mut c)? == 0)
    });
    let manual = c.query("SELECT * FROM procore_sync_user($1)", &[&u2]);
    match manual {
        Err(e) => {
            let text = format!("{e:?}");
            assert!(
                text.contains("reconnect"),
                "procore_sync_user says why: {}",
                t.redact(&text)
            );
        }
        Ok(rows) => {
            let status: String = rows[0].get("status");
            assert_eq!(
                status, "failed",
                "a manual sync of a disconnected user does not succeed"
            );
        }
    }
    let after: Vec<LoggedRequest> = t
        .requests_since(seq)
        .into_iter()
        .filter(|r| r.by("user-2"))
        .collect();
    assert!(
        after.is_empty(),
        "nothing was sent to Procore for user-2: {after:?}"
    );

    // Reconnected: queued and synced again.
    t.ok(t.env.connect_user(&mut c, u2, "user-2"), "reconnect user-2");
    t.queue_all(&mut c);
    let open = t.count(
        &mut c,
        &format!(
            "SELECT count(*) FROM procore_sync_queue WHERE user_id = '{u2}' AND status = 'pending'"
        ),
    );
    assert_eq!(open, 1, "user-2 is queued again after reconnecting");
    t.process(&mut c);
    t.wait(120, "user-2 synced after reconnecting", || {
        Ok(t.item(&mut c, u2)?.status == "completed")
    });
    t.assert_exactly_once(&mut c);
}

impl T {
    fn count_open(&self, c: &mut postgres::Client) -> Result<i64> {
        Ok(c.query_one(
            "SELECT count(*) FROM procore_sync_queue WHERE status IN ('pending', 'processing')",
            &[],
        )?
        .get(0))
    }

    fn no_failed_since(&self, c: &mut postgres::Client, id: i64) -> Result<()> {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM procore_sync_queue WHERE status = 'failed' AND id > $1",
                &[&id],
            )?
            .get(0);
        if n > 0 {
            bail!("{n} later item(s) failed");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Incremental sync and deletions
// ---------------------------------------------------------------------------------------

#[test]
fn incremental_cycle_asks_only_for_changed_records_and_picks_up_an_edit() {
    let t = T::start(
        world(
            1,
            json!({"records_per_resource": 12, "per_page_default": 5}),
        ),
        &[("procore_sync.full_sync_interval", "1d")],
        1,
    );
    let mut c = t.client();
    let u = t.user(1);
    let project = project_of(1, 1);

    let (status, written, first_requests, _) = t.sync_user(&mut c, u);
    assert_eq!(status, "completed");
    assert_eq!(
        written as usize,
        t.expected().len(),
        "the first sync is full"
    );
    let first_log = t.requests_since(t.base_seq);
    let first_rfis_at = first_log
        .iter()
        .filter(|r| r.path.ends_with("/rfis"))
        .map(LoggedRequest::at)
        .min()
        .expect("rfis read in the first sync");

    let rfi = project * 100000 + 4;
    let edited = t.ok(
        t.env.standin.mutate(
            json!({"action": "edit", "resource": "rfis", "project_id": project, "id": rfi}),
        ),
        "edit an RFI",
    );
    let edited_at =
        DateTime::parse_from_rfc3339(edited["updated_at"].as_str().expect("updated_at"))
            .expect("edit time")
            .with_timezone(&Utc);
    let added = t.ok(
        t.env
            .standin
            .mutate(json!({"action": "add", "resource": "submittals", "project_id": project})),
        "add a submittal",
    );
    let added_id = added["id"].as_i64().expect("added id");
    // The stand-in rounds an edit's updated_at up to the next second; let that second pass
    // so the edit lies in the past, as it would at Procore.
    std::thread::sleep(Duration::from_millis(1500));

    let seq = t.last_seq();
    let (status, written, second_requests, error) = t.sync_user(&mut c, u);
    assert_eq!(status, "completed", "{error:?}");
    let log = t.requests_since(seq);
    let api: Vec<&LoggedRequest> = log.iter().filter(|r| r.is_api()).collect();

    let resources: BTreeSet<&str> = api.iter().filter_map(|r| r.resource.as_deref()).collect();
    for name in INCREMENTAL.iter().chain(ALWAYS_FULL.iter()) {
        assert!(resources.contains(name), "the second sync visited {name}");
    }
    for r in &api {
        let resource = r.resource.as_deref().unwrap_or("");
        let window = r.updated_at_window();
        // The lists of deleted records an incremental pass reads after its listing (recycle
        // bins, filters[include_deleted]=only) are whole by nature; catalog.rs tests them.
        if r.path.contains("recycle_bin") || r.query.contains("include_deleted") {
            continue;
        }
        if INCREMENTAL.contains(&resource) {
            let (from, to) = window.unwrap_or_else(|| {
                panic!(
                    "{resource} was read in full on an incremental pass: {}?{}",
                    r.path, r.query
                )
            });
            assert!(
                from <= first_rfis_at,
                "{resource}: the window starts no later than the last successful sync ({from} > {first_rfis_at})"
            );
            assert!(
                from >= first_rfis_at - chrono::Duration::minutes(10),
                "{resource}: the window starts near the last sync, not at the beginning of time ({from})"
            );
            assert!(
                to >= edited_at,
                "{resource}: the window reaches the edit ({to} < {edited_at})"
            );
        } else if ALWAYS_FULL.contains(&resource) {
            assert!(window.is_none(), "{resource} is read in full: {}", r.query);
        }
    }
    let rfis_reads: Vec<&&LoggedRequest> = api
        .iter()
        .filter(|r| r.resource.as_deref() == Some("rfis") && !r.path.contains("recycle_bin"))
        .collect();
    assert_eq!(
        rfis_reads.len(),
        1,
        "one page of changed RFIs instead of three pages of all of them"
    );
    assert!(
        second_requests < first_requests,
        "{second_requests} requests vs {first_requests} for the full sync"
    );
    assert_eq!(
        written, 2,
        "only the edited RFI and the new submittal were written"
    );

    let (name, updated_at): (String, DateTime<Utc>) = {
        let r = t.ok(
            c.query_one(
                "SELECT subject, updated_at FROM procore_rfis WHERE id = $1 AND project_id = $2",
                &[&rfi, &project],
            )
            .map_err(Into::into),
            "the edited RFI",
        );
        (r.get(0), r.get(1))
    };
    assert!(
        name.ends_with("(edited)"),
        "the edit was picked up: {name:?}"
    );
    assert_eq!(updated_at, edited_at, "updated_at is Procore's");
    let added_rows = t.count(
        &mut c,
        &format!(
            "SELECT count(*) FROM procore_submittals WHERE id = {added_id} AND deleted_at IS NULL"
        ),
    );
    assert_eq!(added_rows, 1, "the new submittal was picked up");
    t.assert_exactly_once(&mut c);
}

#[test]
fn full_pass_marks_deleted_records_and_unmarks_restored_ones() {
    let t = T::start(
        world(1, json!({"records_per_resource": 8, "per_page_default": 3})),
        &[("procore_sync.full_sync_interval", "1d")],
        1,
    );
    let mut c = t.client();
    let u = t.user(1);
    let (company, project) = (company_of(1), project_of(1, 1));
    let rfi = project * 100000 + 2;
    let vendor = company * 100000 + 5;
    let deleted_at = |c: &mut postgres::Client, resource: &str, id: i64| -> Option<DateTime<Utc>> {
        c.query_one(
            "SELECT deleted_at FROM procore_records WHERE resource = $1 AND company_id = $2 AND procore_id = $3",
            &[&resource, &company, &id],
        )
        .expect("record row")
        .get(0)
    };
    let marked = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM procore_records WHERE deleted_at IS NOT NULL",
            &[],
        )
        .expect("count")
        .get(0)
    };

    assert_eq!(t.sync_user(&mut c, u).0, "completed");
    t.assert_exactly_once(&mut c);
    let total_before = t.count(&mut c, "SELECT count(*) FROM procore_records");

    for (resource, id) in [("rfis", rfi), ("vendors", vendor)] {
        t.ok(
            t.env
                .standin
                .mutate(json!({"action": "delete", "resource": resource, "id": id})),
            "delete a record at Procore",
        );
    }

    // An incremental pass cannot see deletions and must not guess.
    let seq = t.last_seq();
    assert_eq!(t.sync_user(&mut c, u).0, "completed");
    assert!(
        t.requests_since(seq)
            .iter()
            .filter(|r| r.resource.as_deref() == Some("rfis") && !r.path.contains("recycle_bin"))
            .all(|r| r.updated_at_window().is_some()),
        "the pass after the deletion is incremental (interval 1d)"
    );
    // (This world has no recycle bins: catalog.rs tests deletions read from them.)
    assert_eq!(
        marked(&mut c),
        0,
        "an incremental pass marks nothing deleted"
    );

    // A full pass (interval 0 = every pass) reveals them.
    t.ok(
        t.env
            .cluster
            .set_setting("procore_sync.full_sync_interval", "0"),
        "full_sync_interval = 0",
    );
    t.wait(30, "the new interval is in effect", || {
        let v: String = t
            .env
            .client()?
            .query_one("SHOW procore_sync.full_sync_interval", &[])?
            .get(0);
        Ok(v == "0" || v.starts_with("0 ") || v == "0s")
    });
    let seq = t.last_seq();
    let before_full: DateTime<Utc> = c.query_one("SELECT now()", &[]).expect("now").get(0);
    assert_eq!(t.sync_user(&mut c, u).0, "completed");
    assert!(
        t.requests_since(seq)
            .iter()
            .all(|r| r.updated_at_window().is_none()),
        "with full_sync_interval = 0 every list is read in full"
    );
    let rfi_gone = deleted_at(&mut c, "rfis", rfi);
    let vendor_gone = deleted_at(&mut c, "vendors", vendor);
    assert!(
        rfi_gone.is_some_and(|d| d >= before_full),
        "the deleted RFI is marked deleted_at"
    );
    assert!(
        vendor_gone.is_some_and(|d| d >= before_full),
        "the deleted vendor is marked deleted_at"
    );
    assert_eq!(marked(&mut c), 2, "nothing else is marked deleted");
    assert_eq!(
        t.count(&mut c, "SELECT count(*) FROM procore_records"),
        total_before,
        "deleted records are kept, not dropped"
    );
    let view_marked = t.count(
        &mut c,
        &format!("SELECT count(*) FROM procore_rfis WHERE id = {rfi} AND deleted_at IS NOT NULL"),
    );
    assert_eq!(view_marked, 1, "the typed view shows deleted_at");
    let live = t.ok(stored_record_keys(&mut c), "live keys");
    assert_records_equal(
        &live,
        &t.expected(),
        "live rows equal what Procore still returns",
    );

    // It comes back: un-marked.
    t.ok(
        t.env
            .standin
            .mutate(json!({"action": "restore", "resource": "rfis", "id": rfi})),
        "restore the RFI",
    );
    assert_eq!(t.sync_user(&mut c, u).0, "completed");
    assert_eq!(
        deleted_at(&mut c, "rfis", rfi),
        None,
        "a record that came back is un-marked"
    );
    assert!(
        deleted_at(&mut c, "vendors", vendor).is_some(),
        "the vendor is still deleted"
    );
    assert_eq!(marked(&mut c), 1);
    let live = t.ok(stored_record_keys(&mut c), "live keys");
    assert_records_equal(&live, &t.expected(), "live rows after the restore");
}

// ---------------------------------------------------------------------------------------
// Notifications and observability
// ---------------------------------------------------------------------------------------

#[test]
fn listen_client_receives_a_notification_for_every_finished_item() {
    const USERS: usize = 3;
    let t = T::start(
        world(USERS, json!({})),
        &[("procore_sync.max_workers", "2")],
        USERS,
    );
    let mut listener = t.client();
    t.ok(
        listener
            .batch_execute("LISTEN procore_sync")
            .map_err(Into::into),
        "LISTEN",
    );
    let mut c = t.client();
    t.ok(t.env.standin.revoke("user-3"), "revoke user-3");
    assert_eq!(t.queue_all(&mut c), USERS as i32);
    t.process(&mut c);

    let mut payloads: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let terminal = |p: &Vec<Value>| {
        p.iter()
            .filter(|v| matches!(v["status"].as_str(), Some("completed" | "failed")))
            .count()
    };
    while terminal(&payloads) < USERS && Instant::now() < deadline {
        let mut notifications = listener.notifications();
        let mut iter = notifications.timeout_iter(Duration::from_secs(2));
        while let Some(n) = t.ok(iter.next().map_err(Into::into), "receive a notification") {
            assert_eq!(n.channel(), "procore_sync");
            t.assert_no_secret(n.payload(), "a notification payload");
            let v: Value = serde_json::from_str(n.payload())
                .unwrap_or_else(|e| panic!("payload is not JSON ({e}): {}", t.redact(n.payload())));
            payloads.push(v);
        }
    }
    assert_eq!(
        terminal(&payloads),
        USERS,
        "one completed/failed notification per item: {payloads:?}"
    );

    for n in 1..=USERS {
        let user = t.user(n);
        let item = t.item_of(&mut c, user);
        let mine: Vec<&Value> = payloads
            .iter()
            .filter(|v| v["id"].as_i64() == Some(item.id))
            .filter(|v| matches!(v["status"].as_str(), Some("completed" | "failed")))
            .collect();
        assert_eq!(mine.len(), 1, "user-{n}: exactly one final notification");
        let p = mine[0];
        assert_eq!(p["user_id"].as_str(), Some(user.to_string().as_str()));
        assert_eq!(p["status"].as_str(), Some(item.status.as_str()));
        assert_eq!(p["attempts"].as_i64(), Some(item.attempts as i64));
        if n == 3 {
            assert_eq!(item.status, "failed");
            let message = p["error_message"].as_str().unwrap_or("");
            assert!(
                message.contains("invalid_grant"),
                "the failure says why: {message:?}"
            );
        } else {
            assert_eq!(item.status, "completed");
            assert_eq!(p["records_written"].as_i64(), Some(item.records_written));
            assert!(item.records_written > 0);
        }
    }
}

/// The per-user status view, the live progress view and pg_stat_activity, for a running
/// sync, a finished one and one parked by its exhausted rate limit.
#[test]
fn status_and_progress_views_show_running_finished_and_parked_users() {
    const HOUR: i64 = 60;
    avoid_hour_boundary(Duration::from_secs(180));
    let t = T::start(
        world(
            2,
            json!({"projects_per_company": 2, "records_per_resource": 6, "per_page_default": 2,
                   "latency_ms": 100, "rate_limit_hour": HOUR}),
        ),
        &[("procore_sync.max_workers", "2")],
        2,
    );
    let mut c = t.client();
    let (u1, u2) = (t.user(1), t.user(2));
    t.ok(
        burn_requests(&t, "user-2", HOUR as usize),
        "spend user-2's hourly requests",
    );
    let hour_reset = next_hour_boundary(Utc::now());

    assert_eq!(t.queue_all(&mut c), 2);
    t.process(&mut c);
    let mut seen_running = false;
    t.wait(120, "user-1's sync visible in procore_sync_running and pg_stat_activity", || {
        let row = c.query_opt(
            "SELECT r.worker_pid, r.pages, r.records, r.requests, r.resource, a.backend_type, a.query \
             FROM procore_sync_running r JOIN pg_stat_activity a ON a.pid = r.worker_pid \
             WHERE r.user_id = $1",
            &[&u1],
        )?;
        if let Some(r) = row {
            let (pages, records, requests): (i64, i64, i64) = (r.get(1), r.get(2), r.get(3));
            let resource: Option<String> = r.get(4);
            let (backend_type, query): (String, String) = (r.get(5), r.get(6));
            if pages >= 2 {
                assert!(requests >= pages && records > 0 && resource.is_some(), "progress is filled in");
                assert_eq!(backend_type, WORKER_TYPE);
                assert_eq!(query, format!("procore_sync: syncing user {u1}"));
                seen_running = true;
            }
        }
        Ok(seen_running)
    });

    t.wait(180, "user-1 completed and user-2 parked", || {
        t.no_failed(&mut c)?;
        let (a, b) = (t.item(&mut c, u1)?, t.item(&mut c, u2)?);
        Ok(a.status == "completed" && b.status == "pending" && b.next_attempt_at > b.now)
    });
    let running = t.count(&mut c, "SELECT count(*) FROM procore_sync_running");
    assert_eq!(
        running, 0,
        "nothing is listed as running once the syncs ended"
    );
    let a = t.item_of(&mut c, u1);
    let b = t.item_of(&mut c, u2);

    type Status = (
        bool,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<i64>,
        Option<i64>,
        Option<i32>,
        Option<i32>,
    );
    let status = |c: &mut postgres::Client, u: Uuid| -> Status {
        let r = c
            .query_one(
                "SELECT connected, last_success, last_error, queue_status, next_attempt, \
                        last_records_written, last_requests_made, rate_limit_remaining, rate_limit_limit \
                 FROM procore_sync_user_status WHERE user_id = $1",
                &[&u],
            )
            .expect("status row");
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
            r.get(8),
        )
    };
    let s1 = status(&mut c, u1);
    assert!(s1.0, "user-1 connected");
    assert_eq!(s1.1, a.completed_at, "last success is the completed item");
    assert_eq!(s1.3, None, "user-1 has no open item");
    assert_eq!(s1.5, Some(a.records_written), "records of the last success");
    assert_eq!(s1.6, Some(a.requests_made));
    let s2 = status(&mut c, u2);
    assert_eq!(s2.3.as_deref(), Some("pending"), "user-2 waits");
    assert_eq!(
        s2.4,
        Some(b.next_attempt_at),
        "the view shows user-2's next attempt"
    );
    assert!(
        b.next_attempt_at >= hour_reset - chrono::Duration::seconds(1)
            && b.next_attempt_at <= hour_reset + chrono::Duration::seconds(5),
        "user-2 is due again at its hourly reset {hour_reset}, not {}",
        b.next_attempt_at
    );
    // Rate-limit headroom (SPEC §6): known for both users after they talked to Procore.
    assert!(
        s1.7.is_some() && s1.8.is_some(),
        "procore_sync_user_status shows user-1's rate-limit headroom after its sync \
         (remaining {:?}, limit {:?})",
        s1.7,
        s1.8
    );
    assert!(
        s2.7 == Some(0) && s2.8 == Some(HOUR as i32),
        "procore_sync_user_status shows user-2's exhausted hourly limit \
         (remaining {:?}, limit {:?}; expected 0 of {HOUR})",
        s2.7,
        s2.8
    );
}
