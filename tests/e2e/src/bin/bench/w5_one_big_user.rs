//! W5 one big user: one user with hundreds of projects at a realistic latency, one cycle
//! per `procore_sync.listings_per_user`: does reading several of its listings at once help?

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::DateTime;
use serde_json::json;

use crate::args::Config;
use crate::cluster::{
    api_requests, check_stop, connect_users, disable_default_jobs, first_failure, queue_counts,
    start_cycle, start_env, LibDir,
};
use crate::report::Results;

/// One W5 cycle: one user's full first sync.
struct W5Run {
    secs: f64,
    requests: i64,
    /// The most API requests that reached the stand-in within one latency of each other
    /// (each is held that long, so they were out at the same time); None at latency 0.
    peak_at_once: Option<usize>,
}

pub fn run(cfg: &Config, lib: &LibDir, results: &mut Results) -> Result<()> {
    let (p, r, ms) = (cfg.w5_projects, cfg.w5_records, cfg.w5_latency_ms);
    let expected_records = 1 + p + p * 2 * r;
    let listings = cfg
        .w5_listings
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "W5 one big user: 1 user x 1 company x {p} projects x 2 project resources (RFIs, \
         submittals) of {r} records = {expected_records} records, {ms} ms a request, rate limits \
         out of the way, max_workers 1; one full first sync per listings_per_user {listings}, \
         each on a fresh cluster"
    );
    let mut runs: Vec<(u32, W5Run)> = Vec::with_capacity(cfg.w5_listings.len());
    for &n in &cfg.w5_listings {
        check_stop()?;
        let run = w5_cycle(cfg, lib, n, expected_records)?;
        println!(
            "  listings_per_user {n}: cycle in {:.1}s, {} requests ({:.1}/s){}",
            run.secs,
            run.requests,
            run.requests as f64 / run.secs,
            run.peak_at_once
                .map_or_else(String::new, |k| format!(", at most {k} at once"))
        );
        runs.push((n, run));
    }
    let base = runs.iter().find(|(n, _)| *n == 1).map(|(_, run)| run.secs);
    for (n, run) in &runs {
        let label = format!("listings_per_user {n}");
        results.info("W5", format!("cycle, {label}"), run.secs, "s", 1);
        results.info(
            "W5",
            format!("requests/s, {label}"),
            run.requests as f64 / run.secs,
            "req/s",
            1,
        );
        if let Some(b) = base {
            results.info(
                "W5",
                format!("speed-up vs listings_per_user 1, {label}"),
                b / run.secs,
                "x",
                2,
            );
        }
        if let Some(k) = run.peak_at_once {
            results.info(
                "W5",
                format!("  requests at once, at most, {label}"),
                k as f64,
                "",
                0,
            );
        }
    }
    let requests = runs.first().map_or(0, |(_, run)| run.requests);
    results.note(format!(
        "W5: one user's full first sync, {requests} API requests ({p} projects x RFIs and \
         submittals, {r} records each, plus the companies and projects listings), {ms} ms each, \
         stand-in rate limits raised out of the way, max_workers 1; listings_per_user set in \
         postgresql.conf of a fresh cluster per value; cycle = queue_procore_sync_for_all_users() \
         + process_procore_sync_queue() until the queue is empty; requests at once = the most \
         requests the stand-in received within {ms} ms of each other{}",
        if base.is_none() {
            "; no listings_per_user 1 in --w5-listings, so no speed-up"
        } else {
            ""
        }
    ));
    Ok(())
}

/// One user's full first sync with `listings_per_user` = `listings`, on a cluster and
/// stand-in of its own.
fn w5_cycle(cfg: &Config, lib: &LibDir, listings: u32, expected_records: u64) -> Result<W5Run> {
    let latency_ms = cfg.w5_latency_ms;
    let world = json!({
        "users": 1, "companies_per_user": 1, "projects_per_company": cfg.w5_projects,
        "records_per_resource": cfg.w5_records, "latency_ms": latency_ms,
        // As in W1: the user's rate limit would only measure the pacing.
        "rate_limit_spike": 1_000_000_000u64, "rate_limit_hour": 1_000_000_000u64,
        "access_token_ttl_s": 86_400,
    });
    let bench = start_env(
        world,
        lib,
        &[
            ("procore_sync.max_workers", "1".into()),
            ("procore_sync.listings_per_user", listings.to_string()),
        ],
        false,
    )?;
    let mut client = bench.client()?;
    disable_default_jobs(&mut client)?;
    client.batch_execute(
        "UPDATE procore_sync_resource SET enabled = name IN ('companies', 'projects', 'rfis', 'submittals')",
    )?;
    // In postgresql.conf, a build without the setting would take it as a placeholder and
    // read one listing at a time: make sure it is the extension's and in force.
    let in_force: Option<String> = client
        .query_opt(
            "SELECT setting FROM pg_settings WHERE name = 'procore_sync.listings_per_user'",
            &[],
        )?
        .map(|row| row.get(0));
    if in_force.as_deref() != Some(listings.to_string().as_str()) {
        bail!(
            "procore_sync.listings_per_user is {in_force:?} in the cluster, wanted {listings} \
             (does this build define the setting?)"
        );
    }
    connect_users(&bench.env, 1)?;
    let standin = &bench.env.standin;
    let seq0 = standin
        .requests_since(0)?
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0);
    let req0 = api_requests(standin)?;
    let t0 = Instant::now();
    start_cycle(&mut client)?;
    loop {
        if queue_counts(&mut client)?.open == 0 {
            break;
        }
        check_stop()?;
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("W5's sync at listings_per_user {listings} did not finish within an hour");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t0.elapsed().as_secs_f64();
    let requests = api_requests(standin)? - req0;
    let q = queue_counts(&mut client)?;
    if q.failed > 0 {
        bail!(
            "the W5 sync at listings_per_user {listings} failed: {}",
            first_failure(&mut client)?
        );
    }
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM procore_records WHERE deleted_at IS NULL",
            &[],
        )?
        .get(0);
    if stored as u64 != expected_records {
        bail!(
            "stored {stored} records at listings_per_user {listings}, expected {expected_records}"
        );
    }
    let peak_at_once = if latency_ms > 0 {
        let mut arrivals: Vec<i64> = standin
            .requests_since(seq0)?
            .iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| p.starts_with("/rest/")))
            .filter_map(|e| e["ts"].as_str())
            .filter_map(|ts| DateTime::parse_from_rfc3339(ts).ok())
            .map(|t| t.timestamp_millis())
            .collect();
        arrivals.sort_unstable();
        let window = latency_ms as i64;
        let mut peak = 0;
        let mut first = 0;
        for (i, &t) in arrivals.iter().enumerate() {
            while t - arrivals[first] >= window {
                first += 1;
            }
            peak = peak.max(i + 1 - first);
        }
        Some(peak)
    } else {
        None
    };
    Ok(W5Run {
        secs,
        requests,
        peak_at_once,
    })
}
