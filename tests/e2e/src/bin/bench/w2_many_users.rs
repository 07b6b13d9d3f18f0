//! W2 many users: 10,000 small users at 50 and 200 ms a request, one cycle per setting
//! (default settings unless asked), with requests/s and users in flight sampled every
//! second, the sync workers' CPU per 1,000 requests and their peak RSS.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::args::{Config, ProfileMode, DEFAULT_MAX_WORKERS};
use crate::cluster::{
    api_requests, check_stop, connect_users, disable_default_jobs, first_failure, queue_counts,
    start_cycle, start_env, users_per_worker_setting, BenchEnv, LibDir,
};
use crate::profile::{pg_stat_statements_report, remove_perf_data, Perf};
use crate::report::{Results, W2Bar};
use crate::sampling::{timeline_text, FleetWatch, W2Timeline};

/// One W2 setting.
#[derive(Debug, Clone, Copy)]
struct W2Case {
    latency_ms: u64,
    workers: u32,
    /// None: left at the server's default.
    users_per_worker: Option<u32>,
}

impl W2Case {
    fn is_default(&self) -> bool {
        self.workers == DEFAULT_MAX_WORKERS && self.users_per_worker.is_none()
    }

    /// `200 ms, 4 workers x 64 (defaults)`; `x n/a` where the build has no users_per_worker.
    fn label(&self, users_per_worker: Option<u32>) -> String {
        format!(
            "{} ms, {} worker{} x {}{}",
            self.latency_ms,
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            users_per_worker.map_or_else(|| "n/a".to_string(), |n| n.to_string()),
            if self.is_default() { " (defaults)" } else { "" }
        )
    }

    /// The targets, for the shipped settings: 50 ms under 2 min, 200 ms under 5.
    fn target_min(&self) -> Option<f64> {
        if !self.is_default() {
            return None;
        }
        match self.latency_ms {
            50 => Some(2.0),
            200 => Some(5.0),
            _ => None,
        }
    }
}

pub fn run(cfg: &Config, lib: &LibDir, perf: bool, results: &mut Results) -> Result<()> {
    let n = cfg.w2_users;
    let per_user_requests = 2 + cfg.w2_projects * 2;
    let upw = cfg
        .w2_users_per_worker
        .iter()
        .map(|u| u.map_or_else(|| "default".to_string(), |n| n.to_string()))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "W2 many users: {n} users x 1 company x {} projects x 2 project resources of {} records, \
         {}/hour per token; latency {:?} ms x max_workers {:?} x users_per_worker {upw}",
        cfg.w2_projects, cfg.w2_records, cfg.w2_rate_hour, cfg.w2_latency_ms, cfg.w2_workers
    );
    let mut default_upw = None;
    for &latency_ms in &cfg.w2_latency_ms {
        check_stop()?;
        default_upw = w2_at_latency(cfg, lib, perf, latency_ms, results)?;
    }
    let capacity = DEFAULT_MAX_WORKERS * default_upw.unwrap_or(1);
    let floors = cfg
        .w2_latency_ms
        .iter()
        .map(|&ms| {
            let secs = n as f64 * per_user_requests as f64 * ms as f64 / 1000.0;
            format!(
                "{ms} ms: {:.1} min of waiting, {:.1} s over {capacity} users in flight",
                secs / 60.0,
                secs / capacity as f64
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    results.note(format!(
        "W2: {per_user_requests} requests per user, one page each; latency alone puts a floor of \
         users x {per_user_requests} x latency / users in flight under a cycle ({floors}{}). \
         \"per user beyond request latency\" is what the extension adds: mean users in flight x \
         cycle / users (Little's law) - {per_user_requests} x latency. batch_size = users, so one \
         process_procore_sync_queue() call hands the pool the whole cycle",
        match default_upw {
            Some(u) => format!("; the defaults are {DEFAULT_MAX_WORKERS} workers x {u}"),
            None => format!(
                "; this build has no procore_sync.users_per_worker, so a worker holds one user: \
                 {DEFAULT_MAX_WORKERS} in flight at the defaults"
            ),
        }
    ));
    results.note(
        "W2: users in flight = procore_sync_queue rows in 'processing' held by a worker's pid, \
         sampled every 250 ms (peaks) and every second (timeline); requests/s from the stand-in's \
         /__admin/stats counter; CPU = utime + stime (/proc/<pid>/stat, all threads) of every \
         sync worker process of the cycle, read until it exited, per 1,000 API requests the \
         stand-in answered meanwhile; peak RSS = the largest VmHWM of those workers (it \
         includes the shared buffers they touched, at most shared_buffers = 32MB)",
    );
    Ok(())
}

/// The W2 cycles at one stand-in latency, on a cluster of their own; returns the server's
/// default users_per_worker (None where the build has no such setting).
fn w2_at_latency(
    cfg: &Config,
    lib: &LibDir,
    perf: bool,
    latency_ms: u64,
    results: &mut Results,
) -> Result<Option<u32>> {
    let n = cfg.w2_users;
    let per_user_requests = 2 + cfg.w2_projects * 2;
    println!("  W2 at {latency_ms} ms a request:");
    let world = json!({
        "users": n, "companies_per_user": 1, "projects_per_company": cfg.w2_projects,
        "records_per_resource": cfg.w2_records, "latency_ms": latency_ms,
        "rate_limit_hour": cfg.w2_rate_hour, "access_token_ttl_s": 86_400,
    });
    let max = *cfg.w2_workers.iter().max().unwrap_or(&1);
    // W2's misses are explained by its own numbers (latency floor, per-user overhead); the
    // profilers run only when asked for with --profile.
    let profiled = cfg.profile == ProfileMode::All;
    let bench = start_env(
        world,
        lib,
        &[
            ("procore_sync.max_workers", cfg.w2_workers[0].to_string()),
            ("procore_sync.batch_size", n.max(10).to_string()),
            ("max_worker_processes", (max + 8).to_string()),
        ],
        profiled,
    )?;
    let mut client = bench.client()?;
    disable_default_jobs(&mut client)?;
    client.batch_execute(
        "UPDATE procore_sync_resource SET enabled = name IN ('companies', 'projects', 'rfis', 'submittals')",
    )?;
    let default_upw = users_per_worker_setting(&mut client)?;
    connect_users(&bench.env, n)?;
    let expected_records = n * (1 + cfg.w2_projects + cfg.w2_projects * 2 * cfg.w2_records);
    let mut upw_set = false;
    for &workers in &cfg.w2_workers {
        for &users_per_worker in &cfg.w2_users_per_worker {
            let case = W2Case {
                latency_ms,
                workers,
                users_per_worker,
            };
            bench.wait_pool_gone(Duration::from_secs(120))?;
            client.batch_execute(
                "TRUNCATE procore_sync_queue, procore_sync_progress, procore_records, procore_sync_cursor",
            )?;
            let (c, upw) = apply_w2_settings(&bench, &case, &mut upw_set, results)?;
            client = c;
            let label = case.label(upw);
            if profiled {
                client.batch_execute("SELECT pg_stat_statements_reset()")?;
            }
            let perf_run = if profiled && perf && workers == max {
                Some(Perf::start(
                    &std::env::temp_dir().join("procore-bench-w2.perf"),
                    None,
                    499,
                )?)
            } else {
                None
            };
            let run = w2_cycle(cfg, &bench, &mut client, &label)?;
            let perf_data = perf_run.map(Perf::stop).transpose()?;
            w2_report(
                &case,
                upw,
                &label,
                &run,
                per_user_requests,
                expected_records,
                &mut client,
                results,
            )?;
            if profiled && run.stopped_at.is_none() {
                let mut text = format!("  profile of the cycle at {label}:\n");
                text.push_str(&pg_stat_statements_report(&mut client, run.wall, workers)?);
                if let Some(data) = &perf_data {
                    let pids: Vec<i32> = run.watch.workers.keys().copied().collect();
                    let _ = writeln!(
                        text,
                        "    perf, CPU samples of the sync workers by shared object:"
                    );
                    text.push_str(&Perf::report(data, &pids, "dso", 12)?);
                    let _ = writeln!(text, "\n    perf, top symbols in the sync workers:");
                    text.push_str(&Perf::report(data, &pids, "dso,sym", 20)?);
                    remove_perf_data(data);
                }
                println!("{text}");
            }
            results.chart.w2_timeline.push(W2Timeline {
                label,
                points: run.watch.timeline,
            });
        }
    }
    Ok(default_upw)
}

/// Sets `max_workers` and `users_per_worker` for `case` (ALTER SYSTEM and a reload, as an
/// operator would) and returns a session that sees them, with the users_per_worker in force
/// (None where the build does not have the setting).
fn apply_w2_settings(
    bench: &BenchEnv,
    case: &W2Case,
    upw_set: &mut bool,
    results: &mut Results,
) -> Result<(postgres::Client, Option<u32>)> {
    let cluster = &bench.env.cluster;
    cluster.set_setting("procore_sync.max_workers", &case.workers.to_string())?;
    let mut wanted_upw = None;
    match case.users_per_worker {
        // PG15's ALTER SYSTEM refuses a name no loaded library defined.
        Some(u) => match cluster.set_setting("procore_sync.users_per_worker", &u.to_string()) {
            Ok(()) => {
                *upw_set = true;
                wanted_upw = Some(u);
            }
            Err(e) => {
                let note = format!(
                    "W2: procore_sync.users_per_worker could not be set ({e:#}): this build \
                     does not have the setting, so cycles asking for it ran without it"
                );
                if !results.notes.contains(&note) {
                    results.note(note);
                }
            }
        },
        None if *upw_set => {
            let mut c = bench.client()?;
            c.batch_execute("ALTER SYSTEM RESET procore_sync.users_per_worker")?;
            c.execute("SELECT pg_reload_conf()", &[])?;
            *upw_set = false;
        }
        None => {}
    }
    // A fresh session sees the reloaded values; wait until it does.
    let start = Instant::now();
    loop {
        let mut c = bench.client()?;
        let workers: String = c.query_one("SHOW procore_sync.max_workers", &[])?.get(0);
        let upw = users_per_worker_setting(&mut c)?;
        if workers == case.workers.to_string() && (wanted_upw.is_none() || upw == wanted_upw) {
            return Ok((c, upw));
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "the settings did not take effect: max_workers {workers} (wanted {}), \
                 users_per_worker {upw:?} (wanted {wanted_upw:?})",
                case.workers
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct W2Run {
    queued: i32,
    /// Seconds until the queue was empty.
    wall: f64,
    /// (seconds, users done) when a cycle projected past `--w2-stop-secs` was stopped.
    stopped_at: Option<(f64, i64)>,
    /// API requests until the queue was empty, and until the workers had exited.
    requests: i64,
    requests_until_exit: i64,
    rate_limited: i64,
    workers_exited: bool,
    watch: FleetWatch,
}

/// One cycle: queue everyone, hand them to the pool, watch until the queue is empty (or
/// stop a cycle that projects past `--w2-stop-secs`), then until the workers exit.
fn w2_cycle(
    cfg: &Config,
    bench: &BenchEnv,
    client: &mut postgres::Client,
    label: &str,
) -> Result<W2Run> {
    let standin = &bench.env.standin;
    let limited0 = standin.stats()?["rate_limited"].as_i64().unwrap_or(0);
    let mut watch = FleetWatch::start(standin)?;
    let (queued, _) = start_cycle(client)?;
    let mut stopped_at: Option<(f64, i64)> = None;
    let mut last_print = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        check_stop()?;
        let s = watch.look(client, standin)?;
        let el = watch.secs();
        if s.queue.open == 0 {
            break;
        }
        let done = s.queue.completed + s.queue.failed;
        if last_print.elapsed() > Duration::from_secs(30) {
            last_print = Instant::now();
            println!(
                "    {label}: {el:.0}s, {done} of {queued} users done, {} in flight",
                s.in_flight
            );
        }
        if stopped_at.is_none() && el >= cfg.w2_sample_secs as f64 && done > 0 {
            let projected = el * queued as f64 / done as f64;
            if projected > cfg.w2_stop_secs as f64 {
                // The target is out of reach for this setting: stop and project.
                stopped_at = Some((el, done));
                client.execute(
                    "DELETE FROM procore_sync_queue WHERE status = 'pending'
                        OR (status = 'processing' AND worker_pid IS NULL)",
                    &[],
                )?;
            }
        }
        if el > 4.0 * 3600.0 {
            bail!("the W2 cycle at {label} did not finish in 4 h");
        }
    }
    let wall = watch.secs();
    let requests = api_requests(standin)? - watch.requests0;
    let rate_limited = standin.stats()?["rate_limited"].as_i64().unwrap_or(0) - limited0;
    let workers_exited = watch.until_workers_exit(bench, Duration::from_secs(30))?;
    let requests_until_exit = api_requests(standin)? - watch.requests0;
    Ok(W2Run {
        queued,
        wall,
        stopped_at,
        requests,
        requests_until_exit,
        rate_limited,
        workers_exited,
        watch,
    })
}

#[allow(clippy::too_many_arguments)]
fn w2_report(
    case: &W2Case,
    upw: Option<u32>,
    label: &str,
    run: &W2Run,
    per_user_requests: u64,
    expected_records: u64,
    client: &mut postgres::Client,
    results: &mut Results,
) -> Result<()> {
    let q = queue_counts(client)?;
    if q.failed > 0 {
        results.note(format!(
            "W2 {label}: {} users failed: {}",
            q.failed,
            first_failure(client)?
        ));
    }
    let projected = run.stopped_at.is_some();
    let (cycle, window, users_in_window) = match run.stopped_at {
        Some((el, done)) => (el * run.queued as f64 / done as f64, el, done),
        None => (run.wall, run.wall, i64::from(run.queued)),
    };
    if !projected {
        let stored: i64 = client
            .query_one("SELECT count(*) FROM procore_records", &[])?
            .get(0);
        if stored as u64 != expected_records {
            results.note(format!(
                "W2 {label}: stored {stored} records, expected {expected_records}"
            ));
        }
    }
    let w = &run.watch;
    let rps = run.requests as f64 / run.wall;
    let cpu = w.cpu_secs();
    let cpu_per_k = cpu / run.requests_until_exit.max(1) as f64 * 1000.0;
    let hwm_mb = w.peak_hwm_kb() as f64 / 1024.0;
    let capacity = upw.map(|u| u * case.workers);
    match run.stopped_at {
        Some((el, done)) => println!(
            "  {label}: stopped after {el:.0}s with {done} of {} users done; cycle projected at \
             {cycle:.0}s; {} requests ({rps:.1}/s), {} answered 429",
            run.queued, run.requests, run.rate_limited
        ),
        None => println!(
            "  {label}: cycle in {cycle:.1}s, {} requests ({rps:.1}/s), {} answered 429",
            run.requests, run.rate_limited
        ),
    }
    println!(
        "    users in flight: peak {} ({} per worker at most{}); sync workers: {} process(es), \
         {cpu:.1} s CPU for {} requests, peak VmHWM {hwm_mb:.1} MB",
        w.peak_in_flight,
        w.peak_per_worker,
        capacity.map_or_else(String::new, |c| format!("; capacity {c}")),
        w.workers.len(),
        run.requests_until_exit
    );
    let timeline = timeline_text(&w.timeline, 30);
    println!("    over time:\n{timeline}");
    results
        .timelines
        .push((format!("W2 {label}"), timeline.clone()));
    if !run.workers_exited {
        results.note(format!(
            "W2 {label}: a sync worker was still running 30 s after the queue emptied; its CPU \
             is counted to then"
        ));
    }

    let (target, met) = match case.target_min() {
        Some(t) => (format!("< {t:.0} min"), Some(cycle / 60.0 < t)),
        None => (String::new(), None),
    };
    let cycle_label = if projected {
        format!(
            "cycle, {label} (projected from {:.0}s)",
            run.stopped_at.map(|s| s.0).unwrap_or(0.0)
        )
    } else {
        format!("cycle, {label}")
    };
    results.add("W2", cycle_label, cycle / 60.0, "min", 2, target, met);
    results.info("W2", format!("requests/s, {label}"), rps, "req/s", 1);
    let of = |c: Option<u32>| c.map_or_else(String::new, |c| format!(" (of {c})"));
    results.info(
        "W2",
        format!("peak users in flight{}, {label}", of(capacity)),
        w.peak_in_flight as f64,
        "",
        0,
    );
    results.info(
        "W2",
        format!("peak users in flight per worker{}, {label}", of(upw)),
        w.peak_per_worker as f64,
        "",
        0,
    );
    // What a user costs beyond waiting for its requests: the extension's own share.
    let per_user_ms = w.mean_in_flight(window) * window / users_in_window.max(1) as f64 * 1000.0;
    let beyond = per_user_ms - (per_user_requests * case.latency_ms) as f64;
    results.info(
        "W2",
        format!("per user beyond request latency, {label}"),
        beyond,
        "ms",
        0,
    );
    results.info(
        "W2",
        format!("sync workers' CPU per 1,000 requests, {label}"),
        cpu_per_k,
        "s",
        2,
    );
    results.info(
        "W2",
        format!("a sync worker's peak RSS (VmHWM), {label}"),
        hwm_mb,
        "MB",
        1,
    );
    results.chart.w2.push(W2Bar {
        label: format!(
            "{} ms, {}x{}",
            case.latency_ms,
            case.workers,
            upw.map_or_else(|| "?".to_string(), |u| u.to_string())
        ),
        secs: cycle,
        projected,
        target_min: case.target_min(),
    });
    Ok(())
}
