//! W6 webhooks: how long a change in Procore takes to reach its row through the built-in
//! listener (README, "Webhooks: near-real-time"), with the fleet idle and while full sync
//! cycles of many users run, and how many deliveries a second the listener and the inbox
//! absorb.
//!
//! One change is one `POST /__admin/mutate` (an RFI edited) to the stand-in, which raises
//! the event and delivers it to the listener at once; its latency runs from the moment
//! `mutate` returned to the first poll (every 20 ms) that finds the row's name carrying the
//! edit. It therefore includes the stand-in's delivery, the receiver's transaction,
//! `webhook_settle_time` (250 ms by default), the scheduler's wakeup, a worker's detail
//! read of the record and the upsert. Changes are made one at a time.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use procore_sync_e2e::webhooks::{
    free_port, percentiles, resource_name, v2_payload, ListenerClient, StandinWebhooks,
};
use procore_sync_e2e::{Env, Standin};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::args::Config;
use crate::cluster::{check_stop, connect_users, disable_default_jobs, LibDir};
use crate::report::Results;

/// The target: a change is in Postgres within 2 s, at the 95th percentile.
const TARGET_P95_MS: f64 = 2000.0;
const POLL: Duration = Duration::from_millis(20);
/// The hook's company: user-1's (tests/standin/API.md ids).
const COMPANY: i64 = 1001;

/// The stand-in and the cluster with the release library and the listener.
struct W6Env {
    env: Env,
    listener: ListenerClient,
    hooks: StandinWebhooks,
}

fn start(cfg: &Config, lib: &LibDir, users: u64) -> Result<W6Env> {
    let world = json!({
        "users": users, "companies_per_user": 1, "projects_per_company": 2,
        "records_per_resource": 20, "latency_ms": cfg.w6_latency_ms,
        // The hook user reads one record per change: rate limits would measure the pacing.
        "rate_limit_spike": 1_000_000_000u64, "rate_limit_hour": 1_000_000_000u64,
        "access_token_ttl_s": 86_400,
    });
    let standin = Standin::start(world)?;
    let port = free_port()?;
    let settings: Vec<(&str, String)> = vec![
        (
            "dynamic_library_path",
            format!("{}:$libdir", lib.path().display()),
        ),
        ("procore_sync.http_listen", format!("127.0.0.1:{port}")),
    ];
    let refs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = Env::with_standin(standin, &refs)?;
    // The scheduler must run the release library, not the system-wide install.
    let mut client = env.client()?;
    let pid: i32 = loop {
        let row = client.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'procore_sync scheduler'",
            &[],
        )?;
        if let Some(r) = row {
            break r.get(0);
        }
        check_stop()?;
        std::thread::sleep(Duration::from_millis(100));
    };
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let ours = lib.so_path().to_string_lossy().to_string();
    if !maps.contains(&ours) {
        bail!("the scheduler (pid {pid}) did not load {ours}");
    }
    let hooks = StandinWebhooks::new(&env.standin);
    let listener = ListenerClient::new(port);
    listener.wait_up(Duration::from_secs(60))?;
    Ok(W6Env {
        env,
        listener,
        hooks,
    })
}

/// One phase's latencies, in ms, and how many of its changes a sync cycle overlapped.
struct Phase {
    latencies_ms: Vec<f64>,
    during_cycle: usize,
    cycles_started: usize,
}

pub fn run(cfg: &Config, lib: &LibDir, results: &mut Results) -> Result<()> {
    let (n, busy, ms) = (cfg.w6_changes, cfg.w6_busy_users, cfg.w6_latency_ms);
    println!(
        "W6 webhooks: change -> row latency over {} RFI edits each made with no sync worker \
         running, {n} back to back, then {n} while full sync cycles of {busy} users run (1 \
         company x 2 projects x every catalog resource of 20 records each), {ms} ms a Procore \
         request; then a burst of {} synthetic deliveries from {} threads",
        cfg.w6_cold_changes, cfg.w6_burst, cfg.w6_concurrency
    );
    let w = start(cfg, lib, 1 + busy)?;
    let mut client = w.env.client()?;
    disable_default_jobs(&mut client)?;
    let users = connect_users(&w.env, 1 + busy)?;
    let hook_user = users[0];
    let busy_users: Vec<Uuid> = users[1..].to_vec();
    // The hook user lists its scopes once: events are handled only for listed scopes.
    let row = client.query_one(
        "SELECT status, coalesce(error_message, '') FROM procore_sync_user($1)",
        &[&hook_user],
    )?;
    let (status, message): (String, String) = (row.get(0), row.get(1));
    if status != "completed" {
        bail!("the hook user's first sync: {status} {message}");
    }
    client.query_one(
        "SELECT procore_sync_webhooks_enable($1, $2, $3)",
        &[&hook_user, &COMPANY, &w.listener.url],
    )?;
    // The backstop job it schedules stays off: nothing but the changes should run.
    disable_default_jobs(&mut client)?;
    w.hooks
        .config(json!({"backoff_start_ms": 100, "backoff_cap_ms": 1000}))?;
    let settle: String = client
        .query_one("SHOW procore_sync.webhook_settle_time", &[])?
        .get(0);

    let mut edits = Edits::new();
    let cold = phase(
        &w,
        &mut client,
        &mut edits,
        cfg.w6_cold_changes,
        Fleet::Cold,
    )?;
    report_phase(results, "idle, no sync worker running", &cold);
    let warm = phase(&w, &mut client, &mut edits, n, Fleet::Warm)?;
    report_phase(results, "idle, changes back to back", &warm);
    let busy_phase = phase(&w, &mut client, &mut edits, n, Fleet::Busy(&busy_users))?;
    report_phase(results, &format!("{busy} users syncing"), &busy_phase);
    if busy_phase.during_cycle < busy_phase.latencies_ms.len() {
        results.note(format!(
            "W6: {} of the {} busy-phase changes were made with no sync cycle running",
            busy_phase.latencies_ms.len() - busy_phase.during_cycle,
            busy_phase.latencies_ms.len()
        ));
    }
    // Wait for the cycles to end before the burst.
    wait_queue_empty(&mut client, Duration::from_secs(1800))?;

    let burst = burst(&w, &mut client, cfg.w6_burst, cfg.w6_concurrency)?;
    results.info(
        "W6",
        "deliveries absorbed (recorded in the inbox)",
        burst.per_sec,
        "/s",
        0,
    );
    results.info(
        "W6",
        "  burst answered 503 (then retried)",
        burst.answered_503 as f64,
        "",
        0,
    );
    results.info(
        "W6",
        "  burst's events handled, after the last was recorded",
        burst.drain_secs,
        "s",
        1,
    );
    results.note(format!(
        "W6: change -> row = from POST /__admin/mutate returning (an RFI edit; the stand-in \
         raises the event and delivers it at once) to the first 20 ms poll of procore_records \
         that shows the edit, one change at a time (no sync worker running = each change made \
         once the pool worker had exited, 5 s after its last work); release library, listener \
         on loopback, \
         webhook_settle_time {settle}, the stand-in at {ms} ms a request, rate limits out of \
         the way; busy = the changes made while full passes of {busy} other users run back to \
         back ({} cycles started); p = nearest rank. Deliveries absorbed = {} synthetic v2.0 \
         deliveries about existing records POSTed by {} threads (a 503 retried after 20 ms), \
         from the first POST until the inbox held them all",
        busy_phase.cycles_started, cfg.w6_burst, cfg.w6_concurrency,
    ));
    Ok(())
}

fn report_phase(results: &mut Results, label: &str, p: &Phase) {
    let (p50, p95, p99) = percentiles(&p.latencies_ms);
    results.info("W6", format!("change -> row p50, {label}"), p50, "ms", 0);
    results.add(
        "W6",
        format!("change -> row p95, {label}"),
        p95,
        "ms",
        0,
        "< 2,000 ms",
        Some(p95 < TARGET_P95_MS),
    );
    results.info("W6", format!("change -> row p99, {label}"), p99, "ms", 0);
    let max = p.latencies_ms.iter().copied().fold(f64::NAN, f64::max);
    results.info("W6", format!("  slowest, {label}"), max, "ms", 0);
}

/// The RFIs edited so far, and how often: a record is edited again only after its last
/// edit arrived, so its name tells which edit is in.
struct Edits {
    next: usize,
    count: std::collections::HashMap<i64, usize>,
}

impl Edits {
    fn new() -> Edits {
        Edits {
            next: 0,
            count: Default::default(),
        }
    }

    /// The next RFI of the hook company's two projects, round robin: `(project, id, edits
    /// after this one)`.
    fn next(&mut self) -> (i64, i64, usize) {
        let i = self.next;
        self.next += 1;
        let project = COMPANY * 1000 + 1 + (i % 2) as i64;
        let id = project * 100_000 + 1 + ((i / 2) % 20) as i64;
        let c = self.count.entry(id).or_insert(0);
        *c += 1;
        (project, id, *c)
    }
}

fn queue_open(client: &mut postgres::Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM procore_sync_queue WHERE status IN ('pending', 'processing')",
            &[],
        )?
        .get(0))
}

/// A full pass of every busy user: their cursors forget the last full pass, one queue item
/// each, and the queue is processed as the default job would.
fn start_full_cycle(client: &mut postgres::Client, users: &[Uuid]) -> Result<()> {
    client.execute(
        "UPDATE procore_sync_cursor SET last_full_sync_at = NULL WHERE user_id = ANY($1)",
        &[&users],
    )?;
    client.execute(
        "INSERT INTO procore_sync_queue (user_id) SELECT unnest($1::uuid[])",
        &[&users],
    )?;
    client.query_one("SELECT process_procore_sync_queue()", &[])?;
    Ok(())
}

/// How the fleet stands when a change is made.
#[derive(Clone, Copy)]
enum Fleet<'a> {
    /// No sync worker runs: the event has to start one (a quiet database).
    Cold,
    /// Changes back to back: the worker the previous one started is still there.
    Warm,
    /// Full passes of these users run back to back.
    Busy(&'a [Uuid]),
}

fn sync_workers(client: &mut postgres::Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'procore_sync sync worker'",
            &[],
        )?
        .get(0))
}

fn phase(
    w: &W6Env,
    client: &mut postgres::Client,
    edits: &mut Edits,
    n: u64,
    fleet: Fleet<'_>,
) -> Result<Phase> {
    let mut latencies_ms = Vec::with_capacity(n as usize);
    let mut during_cycle = 0;
    let mut cycles_started = 0;
    let busy = match fleet {
        Fleet::Busy(users) => Some(users),
        _ => None,
    };
    let label = match fleet {
        Fleet::Cold => "cold",
        Fleet::Warm => "warm",
        Fleet::Busy(_) => "busy",
    };
    let started = Instant::now();
    for k in 0..n {
        check_stop()?;
        if let Fleet::Cold = fleet {
            // Pool workers exit after 5 idle seconds.
            let t = Instant::now();
            while sync_workers(client)? > 0 {
                if t.elapsed() > Duration::from_secs(120) {
                    bail!("a sync worker still runs after 120 s with nothing to do");
                }
                check_stop()?;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Some(users) = busy {
            if queue_open(client)? == 0 {
                start_full_cycle(client, users)?;
                cycles_started += 1;
            }
        }
        let (project, id, edits_now) = edits.next();
        let suffix = " (edited)".repeat(edits_now);
        w.env
            .standin
            .mutate(json!({"action": "edit", "resource": "rfis",
            "company_id": COMPANY, "project_id": project, "id": id}))?;
        let t0 = Instant::now();
        let cycle_running = busy.is_some() && queue_open(client)? > 0;
        loop {
            let name: Option<String> = client
                .query_opt(
                    "SELECT name FROM procore_records WHERE resource = 'rfis' \
                     AND company_id = $1 AND procore_id = $2",
                    &[&COMPANY, &id],
                )?
                .and_then(|r| r.get(0));
            if name.is_some_and(|s| s.ends_with(&suffix)) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("W6 ({label}): RFI {id} did not show edit {edits_now} within 120 s");
            }
            check_stop()?;
            std::thread::sleep(POLL);
        }
        latencies_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        if cycle_running {
            during_cycle += 1;
        }
        if (k + 1) % 50 == 0 || (matches!(fleet, Fleet::Cold) && (k + 1) % 10 == 0) {
            let (p50, p95, _) = percentiles(&latencies_ms);
            println!(
                "  {label}: {} changes in {:.0}s, p50 {p50:.0} ms, p95 {p95:.0} ms{}",
                k + 1,
                started.elapsed().as_secs_f64(),
                if busy.is_some() {
                    format!(", {cycles_started} cycles started")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(Phase {
        latencies_ms,
        during_cycle,
        cycles_started,
    })
}

fn wait_queue_empty(client: &mut postgres::Client, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    while queue_open(client)? > 0 {
        check_stop()?;
        if t0.elapsed() > timeout {
            bail!("the sync queue did not empty within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

struct Burst {
    per_sec: f64,
    answered_503: u64,
    drain_secs: f64,
}

fn inbox_count(client: &mut postgres::Client, prefix: &str) -> Result<(i64, i64)> {
    let row = client.query_one(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('pending', 'processing')) \
         FROM procore_sync_webhook_inbox WHERE event_id LIKE $1 || '%'",
        &[&prefix],
    )?;
    Ok((row.get(0), row.get(1)))
}

/// `events` synthetic deliveries about the hook company's records, POSTed by `threads`
/// threads with the hook's secret; the rate is events over the time until the inbox held
/// them all.
fn burst(w: &W6Env, client: &mut postgres::Client, events: u64, threads: u32) -> Result<Burst> {
    let secret: String = client
        .query_one(
            "SELECT secret FROM procore_sync_webhook_hook WHERE company_id = $1",
            &[&COMPANY],
        )?
        .get(0);
    // user-1's records only: the whole world's listing is too big for one admin answer.
    // Ids carry their project (tests/standin/API.md): P * 100000 + i for project tools.
    let records: Vec<Value> = w
        .env
        .standin
        .records_for("user-1")?
        .into_iter()
        .filter(|r| r.company_id == COMPANY)
        .filter_map(|r| {
            let name = resource_name(&r.resource).filter(|n| *n != "Project Users")?;
            let project = match r.resource.as_str() {
                "vendors" => None,
                "projects" => Some(r.id),
                _ => Some(r.id / 100_000),
            };
            Some(json!({"resource_name": name, "project_id": project, "id": r.id}))
        })
        .collect();
    if records.is_empty() {
        bail!("no records of company {COMPANY} to send events about");
    }
    let prefix = format!("01W6{}", &Uuid::new_v4().simple().to_string()[..6]).to_uppercase();
    let next = AtomicUsize::new(0);
    let answered_503 = AtomicU64::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let listener = w.listener.clone();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i as u64 >= events || procore_sync_e2e::stop_requested() {
                            return Ok(());
                        }
                        let r = &records[i % records.len()];
                        let body = v2_payload(
                            &format!("{prefix}{i:016}"),
                            "update",
                            r["resource_name"].as_str().unwrap_or(""),
                            COMPANY,
                            r["project_id"].as_i64(),
                            r["id"].as_i64().unwrap_or(0),
                        );
                        let mut tries = 0;
                        loop {
                            tries += 1;
                            let reply = listener.post_json(&body, Some(&secret));
                            match reply {
                                Ok(reply) if reply.status == 200 => break,
                                Ok(reply) if reply.status == 503 => {
                                    answered_503.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(reply) => bail!("a delivery was answered {reply:?}"),
                                Err(e) if tries > 50 => return Err(e),
                                Err(_) => {}
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("a burst thread panicked"))??;
        }
        Ok(())
    })?;
    check_stop()?;
    let recorded_at = loop {
        let (all, _) = inbox_count(client, &prefix)?;
        if all as u64 >= events {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("the inbox holds {all} of {events} burst events after 30 min");
        }
        check_stop()?;
        std::thread::sleep(Duration::from_millis(20));
    };
    let recorded = Instant::now();
    loop {
        let (_, open) = inbox_count(client, &prefix)?;
        if open == 0 {
            break;
        }
        if recorded.elapsed() > Duration::from_secs(1800) {
            bail!("{open} burst events still open after 30 min");
        }
        check_stop()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let drain_secs = recorded.elapsed().as_secs_f64();
    let per_sec = events as f64 / recorded_at.as_secs_f64();
    println!(
        "  burst: {events} deliveries recorded in {:.1}s ({per_sec:.0}/s), {} answered 503 \
         first; handled {drain_secs:.1}s after",
        recorded_at.as_secs_f64(),
        answered_503.load(Ordering::Relaxed)
    );
    let failed: i64 = client
        .query_one(
            "SELECT count(*) FROM procore_sync_webhook_inbox \
             WHERE event_id LIKE $1 || '%' AND status <> 'done'",
            &[&prefix],
        )?
        .get(0);
    if failed > 0 {
        bail!("{failed} burst events ended other than done");
    }
    Ok(Burst {
        per_sec,
        answered_503: answered_503.load(Ordering::Relaxed),
        drain_secs,
    })
}
