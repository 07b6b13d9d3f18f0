//! W3 one huge resource: the sync worker's memory while it reads 200,000 RFIs, and while
//! every in-flight slot of one worker is busy on a large listing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

use crate::args::{Config, ProfileMode, MAX_RECORDS_PER_SCOPE};
use crate::cluster::{
    check_stop, connect_users, disable_default_jobs, first_failure, queue_counts, start_cycle,
    start_env, users_per_worker_setting, LibDir,
};
use crate::profile::{remove_perf_data, Perf, FAULT_PERIOD};
use crate::report::Results;
use crate::sampling::{fleet_sample, read_mem, Mem, WorkerUsage};

struct W3Run {
    samples: Vec<(i64, Mem)>,
    peak_hwm: u64,
    secs: f64,
    profile: Option<String>,
}

/// One user's sync of `total` RFIs with the worker's memory sampled every 50 ms; with
/// `fault_profile`, perf records where the worker's page faults (its memory growth) happen.
fn w3_sync(
    cfg: &Config,
    lib: &LibDir,
    world: Value,
    (resource, enabled): (&str, &[&str]),
    total: u64,
    fault_profile: bool,
) -> Result<W3Run> {
    let bench = start_env(
        world,
        lib,
        &[("procore_sync.max_workers", "1".into())],
        false,
    )?;
    let mut client = bench.client()?;
    disable_default_jobs(&mut client)?;
    let enabled: Vec<String> = enabled.iter().map(|n| n.to_string()).collect();
    client.execute(
        "UPDATE procore_sync_resource SET per_page = $1, enabled = name = ANY ($2)",
        &[&(cfg.w3_per_page as i32), &enabled],
    )?;
    connect_users(&bench.env, 1)?;
    let t0 = Instant::now();
    start_cycle(&mut client)?;
    let mut pid = None;
    let mut perf_run = None;
    let mut samples: Vec<(i64, Mem)> = Vec::new();
    let mut peak_hwm = 0u64;
    loop {
        check_stop()?;
        if pid.is_none() {
            pid = bench
                .backend_pids(&mut client, "procore_sync sync worker")?
                .first()
                .copied();
            if let (Some(p), true) = (pid, fault_profile) {
                perf_run = Some(Perf::start_page_faults(
                    &std::env::temp_dir().join("procore-bench-w3.perf"),
                    p,
                )?);
            }
        }
        if let Some(p) = pid {
            let records: i64 = client
                .query_one(
                    "SELECT coalesce((SELECT records FROM procore_sync_progress LIMIT 1),
                                     (SELECT records_written FROM procore_sync_queue LIMIT 1), 0)::bigint",
                    &[],
                )?
                .get(0);
            if let Some(m) = read_mem(p) {
                peak_hwm = peak_hwm.max(m.hwm_kb);
                samples.push((records, m));
            }
        }
        if queue_counts(&mut client)?.open == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("W3's sync did not finish within an hour");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t0.elapsed().as_secs_f64();
    let perf_data = perf_run.map(Perf::stop).transpose()?;
    let q = queue_counts(&mut client)?;
    if q.failed > 0 {
        bail!("the W3 sync failed: {}", first_failure(&mut client)?);
    }
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM procore_records WHERE resource = $1",
            &[&resource],
        )?
        .get(0);
    if stored as u64 != total {
        bail!("stored {stored} {resource}, expected {total}");
    }
    let profile = match (perf_data, pid) {
        (Some(data), Some(p)) => {
            let mut text = format!(
                "profile of the sync worker's memory growth (perf: every {FAULT_PERIOD}th page fault of pid {p}, with its call stack, on a fresh cluster):\n"
            );
            text.push_str(&Perf::report_fault_frames(
                &data,
                p,
                &[
                    ("jsonb_in", "each page's records parsed into jsonb parameters (upsert_page)"),
                    ("pg_plan_query", "planning the statements (custom plans over each page's arrays)"),
                    ("standard_ExecutorRun", "executing the statements"),
                    (
                        "scalararraysel",
                        "planner selectivity of procore_id = ANY($4) over a listing's in-memory ids (deletion pass)",
                    ),
                    (
                        "ExecEvalHashedScalarArrayOp",
                        "the executor's hash of those ids (deletion pass)",
                    ),
                ],
            )?);
            remove_perf_data(&data);
            Some(text)
        }
        _ => None,
    };
    Ok(W3Run {
        samples,
        peak_hwm,
        secs,
        profile,
    })
}

pub fn run(cfg: &Config, lib: &LibDir, perf: bool, results: &mut Results) -> Result<()> {
    let per_scope = cfg.w3_records.min(MAX_RECORDS_PER_SCOPE);
    let projects = ((cfg.w3_records as f64 / per_scope as f64).round() as u64).max(1);
    let total = per_scope * projects;
    println!(
        "W3 one huge resource: 1 user, RFIs only, {projects} project(s) x {per_scope} RFIs = {total}, \
         {} per page, max_workers 1",
        cfg.w3_per_page
    );
    let world = json!({
        "users": 1, "companies_per_user": 1, "projects_per_company": projects,
        "records_per_resource": per_scope, "per_page_default": cfg.w3_per_page, "latency_ms": 0,
        "rate_limit_spike": 1_000_000_000u64, "rate_limit_hour": 1_000_000_000u64,
        "access_token_ttl_s": 86_400,
    });
    const RFIS: (&str, &[&str]) = ("rfis", &["companies", "projects", "rfis"]);
    let run = w3_sync(cfg, lib, world.clone(), RFIS, total, false)?;
    let (samples, peak_hwm, secs) = (&run.samples, run.peak_hwm, run.secs);
    let stored = total as i64;
    // The sample nearest to 10% of the records, and the last one before the end.
    let tenth = total as i64 / 10;
    let early = samples
        .iter()
        .filter(|(r, _)| *r >= tenth)
        .min_by_key(|(r, _)| *r)
        .copied()
        .ok_or_else(|| {
            anyhow!(
                "no memory sample after {tenth} records ({} samples)",
                samples.len()
            )
        })?;
    let mb = |kb: u64| kb as f64 / 1024.0;
    let after_early = || samples.iter().filter(|(r, _)| *r >= early.0);
    let peak_anon = after_early().map(|(_, m)| m.anon_kb).max().unwrap_or(0);
    let peak_rss = after_early().map(|(_, m)| m.rss_kb).max().unwrap_or(0);
    let peak_shmem = after_early().map(|(_, m)| m.shmem_kb).max().unwrap_or(0);
    let last = samples.last().map(|s| s.1).unwrap_or_default();
    // Growth = the most the process held at any point after ~10% of the records, minus what
    // it held then: the end-of-pass peaks count, not only where it settles.
    let growth_anon = mb(peak_anon) - mb(early.1.anon_kb);
    let growth_rss = mb(peak_rss) - mb(early.1.rss_kb);
    let growth_shmem = mb(peak_shmem) - mb(early.1.shmem_kb);
    println!(
        "  {stored} RFIs in {secs:.1}s; {} samples; private (RssAnon) {:.1} MB at {} records, peak {:.1} MB, \
         {:.1} MB at the end; VmRSS peak (VmHWM) {:.1} MB",
        samples.len(),
        mb(early.1.anon_kb),
        early.0,
        mb(peak_anon),
        mb(last.anon_kb),
        mb(peak_hwm)
    );
    results.info(
        "W3",
        format!(
            "RFIs synced ({projects} project(s), {} per page)",
            cfg.w3_per_page
        ),
        stored as f64,
        "",
        0,
    );
    results.info("W3", "sync rate", stored as f64 / secs, "records/s", 0);
    let peak_ok = mb(peak_hwm) < 100.0;
    results.add(
        "W3",
        "worker peak RSS (VmHWM)",
        mb(peak_hwm),
        "MB",
        1,
        "< 100 MB",
        Some(peak_ok),
    );
    let range = format!("after {}k records", early.0 / 1000);
    // VmRSS also counts the shared buffers this process has touched, which grows until it
    // has touched all of shared_buffers whatever the record count; the worker's own memory
    // is RssAnon, so that is what must stay flat.
    let flat = growth_anon < 10.0;
    results.add(
        "W3",
        format!("private memory (RssAnon) growth {range}"),
        growth_anon,
        "MB",
        1,
        "flat (< 10 MB)",
        Some(flat),
    );
    results.info(
        "W3",
        format!("  private memory at {}k records", early.0 / 1000),
        mb(early.1.anon_kb),
        "MB",
        1,
    );
    results.info(
        "W3",
        "  private memory at the end",
        mb(last.anon_kb),
        "MB",
        1,
    );
    results.info("W3", format!("VmRSS growth {range}"), growth_rss, "MB", 1);
    results.info(
        "W3",
        "  of which shared buffers touched (RssShmem)",
        growth_shmem,
        "MB",
        1,
    );
    results.chart.w3 = samples
        .iter()
        .map(|(r, m)| (*r as f64, mb(m.rss_kb), mb(m.anon_kb)))
        .collect();
    results.note(
        "W3: shared_buffers = 32MB (the harness's); VmRSS counts the shared buffers the worker \
         touched, bounded by shared_buffers, so flatness is judged on its private memory (RssAnon)",
    );
    if !(peak_ok && flat) && cfg.profile != ProfileMode::Off && perf {
        println!("  target missed: syncing again on a fresh cluster with perf recording the worker's page faults");
        let again = w3_sync(cfg, lib, world, RFIS, total, true)?;
        if let Some(p) = again.profile {
            println!("{p}");
            results.note(format!("W3 {p}"));
        }
    }
    if projects > 1 {
        results.note(format!(
            "W3: the stand-in caps a scope at {MAX_RECORDS_PER_SCOPE} records (ids stay below 2^53), so the \
             {} RFIs are {projects} projects of {per_scope} in one user's sync, read by one worker",
            total
        ));
    }
    if cfg.w3_slots > 0 {
        check_stop()?;
        w3_all_slots_busy(cfg, lib, results)?;
    }
    if cfg.w3_tree_projects > 0 {
        check_stop()?;
        w3_tree(cfg, lib, results)?;
    }
    Ok(())
}

/// Drawing areas in each project of the tree variant, and drawings in each area (issue 13:
/// 50 projects x 20 areas x 200 drawings).
const TREE_AREAS: u64 = 20;
const TREE_DRAWINGS: u64 = 200;

/// W3 on a tree: one user whose drawings hang off drawing areas, one child listing per
/// area. The walk reads the areas' ids back from the database in batches, so the worker's
/// memory must stay as flat as on one huge flat list.
fn w3_tree(cfg: &Config, lib: &LibDir, results: &mut Results) -> Result<()> {
    let projects = cfg.w3_tree_projects;
    let total = projects * TREE_AREAS * TREE_DRAWINGS;
    println!(
        "W3 tree: 1 user, {projects} projects x {TREE_AREAS} drawing areas x {TREE_DRAWINGS} \
         drawings = {total}, {} per page, max_workers 1",
        cfg.w3_per_page
    );
    let world = json!({
        "users": 1, "companies_per_user": 1, "projects_per_company": projects,
        "records_per_resource": 1, "per_page_default": cfg.w3_per_page, "latency_ms": 0,
        "rate_limit_spike": 1_000_000_000u64, "rate_limit_hour": 1_000_000_000u64,
        "access_token_ttl_s": 86_400,
        "catalog": {"drawing_areas": TREE_AREAS, "drawings_per_area": TREE_DRAWINGS},
    });
    let tree: (&str, &[&str]) = (
        "drawings",
        &["companies", "projects", "drawing_areas", "drawings"],
    );
    let run = w3_sync(cfg, lib, world, tree, total, false)?;
    let mb = |kb: u64| kb as f64 / 1024.0;
    let tenth = total as i64 / 10;
    let early = run
        .samples
        .iter()
        .filter(|(r, _)| *r >= tenth)
        .min_by_key(|(r, _)| *r)
        .copied()
        .ok_or_else(|| anyhow!("no memory sample after {tenth} records"))?;
    let peak_anon = run
        .samples
        .iter()
        .filter(|(r, _)| *r >= early.0)
        .map(|(_, m)| m.anon_kb)
        .max()
        .unwrap_or(0);
    let growth_anon = mb(peak_anon) - mb(early.1.anon_kb);
    println!(
        "  {total} drawings in {:.1}s; {} samples; private (RssAnon) {:.1} MB at {} records, \
         peak {:.1} MB; VmRSS peak (VmHWM) {:.1} MB",
        run.secs,
        run.samples.len(),
        mb(early.1.anon_kb),
        early.0,
        mb(peak_anon),
        mb(run.peak_hwm)
    );
    results.info(
        "W3",
        format!("tree: drawings synced ({projects} x {TREE_AREAS} areas x {TREE_DRAWINGS})"),
        total as f64,
        "",
        0,
    );
    results.info(
        "W3",
        "tree: sync rate",
        total as f64 / run.secs,
        "records/s",
        0,
    );
    let peak_ok = mb(run.peak_hwm) < 100.0;
    results.add(
        "W3",
        "tree: worker peak RSS (VmHWM)",
        mb(run.peak_hwm),
        "MB",
        1,
        "< 100 MB",
        Some(peak_ok),
    );
    results.add(
        "W3",
        format!(
            "tree: private memory (RssAnon) growth after {}k records",
            early.0 / 1000
        ),
        growth_anon,
        "MB",
        1,
        "flat (< 10 MB)",
        Some(growth_anon < 10.0),
    );
    Ok(())
}

/// W3 with every in-flight slot of one worker busy: `--w3-slots` users, each with one
/// project of `--w3-slot-records` RFIs (many pages), queued at once for a pool of one worker
/// whose `users_per_worker` is the slot count. Its memory is sampled every 50 ms with the
/// users it holds.
fn w3_all_slots_busy(cfg: &Config, lib: &LibDir, results: &mut Results) -> Result<()> {
    let slots = cfg.w3_slots;
    let per_user = cfg.w3_slot_records;
    let total = u64::from(slots) * per_user;
    let pages = per_user.div_ceil(cfg.w3_per_page);
    println!(
        "W3 every slot busy: {slots} users x 1 project x {per_user} RFIs ({pages} pages of {}) = \
         {total}, all queued at once; max_workers 1, users_per_worker {slots}",
        cfg.w3_per_page
    );
    let world = json!({
        "users": slots, "companies_per_user": 1, "projects_per_company": 1,
        "records_per_resource": per_user, "per_page_default": cfg.w3_per_page, "latency_ms": 0,
        "rate_limit_spike": 1_000_000_000u64, "rate_limit_hour": 1_000_000_000u64,
        "access_token_ttl_s": 86_400,
    });
    // In postgresql.conf rather than ALTER SYSTEM: a build without the setting takes it as a
    // placeholder and ignores it, where ALTER SYSTEM would refuse it.
    let bench = start_env(
        world,
        lib,
        &[
            ("procore_sync.max_workers", "1".into()),
            ("procore_sync.users_per_worker", slots.to_string()),
            ("procore_sync.batch_size", slots.max(10).to_string()),
        ],
        false,
    )?;
    let mut client = bench.client()?;
    disable_default_jobs(&mut client)?;
    client.execute(
        "UPDATE procore_sync_resource SET per_page = $1,
                enabled = name IN ('companies', 'projects', 'rfis')",
        &[&(cfg.w3_per_page as i32)],
    )?;
    let upw = users_per_worker_setting(&mut client)?;
    let defined: bool = client
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_settings WHERE name = 'procore_sync.users_per_worker')",
            &[],
        )?
        .get(0);
    connect_users(&bench.env, u64::from(slots))?;
    let t0 = Instant::now();
    start_cycle(&mut client)?;
    let mut pids: BTreeMap<i32, WorkerUsage> = BTreeMap::new();
    // (records, VmRSS MB, RssAnon MB) and (seconds, users in flight).
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    let mut in_flight: Vec<(f64, i64)> = Vec::new();
    let mut peak_anon_kb = 0u64;
    let mut rss_at_full = 0u64;
    let mb = |kb: u64| kb as f64 / 1024.0;
    loop {
        check_stop()?;
        let s = fleet_sample(&mut client)?;
        let busiest = s.per_worker.iter().map(|w| w.1).max().unwrap_or(0);
        for &(pid, _) in &s.per_worker {
            pids.entry(pid).or_default();
        }
        for (&pid, usage) in pids.iter_mut() {
            if let Some(m) = read_mem(pid) {
                usage.hwm_kb = usage.hwm_kb.max(m.hwm_kb);
                peak_anon_kb = peak_anon_kb.max(m.anon_kb);
                if busiest >= i64::from(slots) {
                    rss_at_full = rss_at_full.max(m.rss_kb);
                }
                samples.push((s.records as f64, mb(m.rss_kb), mb(m.anon_kb)));
            }
        }
        in_flight.push((t0.elapsed().as_secs_f64(), busiest));
        if s.queue.open == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("W3's all-slots sync did not finish within an hour");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t0.elapsed().as_secs_f64();
    let q = queue_counts(&mut client)?;
    if q.failed > 0 {
        bail!(
            "{} of the W3 all-slots users failed: {}",
            q.failed,
            first_failure(&mut client)?
        );
    }
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM procore_records WHERE resource = 'rfis'",
            &[],
        )?
        .get(0);
    if stored as u64 != total {
        bail!("stored {stored} RFIs, expected {total}");
    }
    let peak_hwm = pids.values().map(|u| u.hwm_kb).max().unwrap_or(0);
    let peak_in_flight = in_flight.iter().map(|s| s.1).max().unwrap_or(0);
    // Time with every slot held, from consecutive looks.
    let full_secs: f64 = in_flight
        .windows(2)
        .filter(|w| w[0].1 >= i64::from(slots))
        .map(|w| w[1].0 - w[0].0)
        .sum();
    println!(
        "  {stored} RFIs in {secs:.1}s by {} worker process(es); users in flight in one worker: \
         peak {peak_in_flight} of {slots}, all {slots} for {full_secs:.1}s; peak VmHWM {:.1} MB, \
         VmRSS up to {:.1} MB while all slots were busy, peak RssAnon {:.1} MB",
        pids.len(),
        mb(peak_hwm),
        mb(rss_at_full),
        mb(peak_anon_kb)
    );
    let what = format!("{slots} users x {per_user} RFIs at once in one worker");
    results.info("W3", format!("RFIs synced, {what}"), stored as f64, "", 0);
    results.info("W3", "  sync rate", stored as f64 / secs, "records/s", 0);
    results.add(
        "W3",
        format!("  peak users in flight in the worker (users_per_worker {slots})"),
        peak_in_flight as f64,
        "",
        0,
        format!("{slots} (every slot)"),
        Some(peak_in_flight >= i64::from(slots)),
    );
    results.info(
        "W3",
        format!("  time with all {slots} slots busy"),
        full_secs,
        "s",
        1,
    );
    results.add(
        "W3",
        format!("worker peak RSS (VmHWM), {slots} slots on large listings"),
        mb(peak_hwm),
        "MB",
        1,
        "< 100 MB",
        Some(mb(peak_hwm) < 100.0),
    );
    results.info(
        "W3",
        format!("  VmRSS at most while all {slots} slots were busy"),
        mb(rss_at_full),
        "MB",
        1,
    );
    results.info(
        "W3",
        "  private memory (RssAnon) at most",
        mb(peak_anon_kb),
        "MB",
        1,
    );
    results.chart.w3_slots = samples;
    results.note(match (defined, upw) {
        (true, Some(u)) => format!(
            "W3 every slot busy: users_per_worker {u}, max_workers 1; {what} ({pages} pages each), \
             latency 0; VmHWM counts the shared buffers touched (shared_buffers = 32MB)"
        ),
        _ => format!(
            "W3 every slot busy: this build has no procore_sync.users_per_worker (the {slots} in \
             postgresql.conf is an unused placeholder), so its worker holds one user at a time: \
             the peak RSS is not yet the figure with every slot busy"
        ),
    });
    Ok(())
}
