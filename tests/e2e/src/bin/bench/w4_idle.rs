//! W4 idle: the scheduler's CPU with nothing to do, and how punctual an `N seconds` job is.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::args::{Config, ProfileMode};
use crate::cluster::{sleep_checked, start_env, LibDir};
use crate::profile::{remove_perf_data, Perf};
use crate::report::Results;
use crate::sampling::{clock_ticks_per_second, cpu_nanos, cpu_ticks};

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The idle scheduler again, on a fresh cluster, with pg_stat_statements and perf watching
/// it for `secs`: which statements and which of the extension's functions cost its CPU.
fn w4_profile(lib: &LibDir, perf: bool, secs: Duration) -> Result<String> {
    let bench = start_env(json!({"users": 1}), lib, &[], true)?;
    let mut client = bench.client()?;
    let sched = bench.wait_for_backend("procore_sync scheduler", Duration::from_secs(30))?;
    sleep_checked(Duration::from_secs(3))?;
    client.batch_execute("SELECT pg_stat_statements_reset()")?;
    let perf_run = if perf {
        Some(Perf::start(
            &std::env::temp_dir().join("procore-bench-w4.perf"),
            Some(sched),
            4999,
        )?)
    } else {
        None
    };
    let n0 = cpu_nanos(sched);
    let t0 = Instant::now();
    sleep_checked(secs)?;
    let idle_secs = t0.elapsed().as_secs_f64();
    let cpu = match (n0, cpu_nanos(sched)) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => f64::NAN,
    };
    let perf_data = perf_run.map(Perf::stop).transpose()?;
    let mut text = format!(
        "profile of the idle scheduler ({idle_secs:.0} s on a fresh cluster, {:.2} s/hour of CPU with the profilers on):\n",
        cpu * 3600.0 / idle_secs
    );
    let rows = client.query(
        "SELECT calls, total_exec_time::float8, regexp_replace(left(query, 80), '\\s+', ' ', 'g')
         FROM pg_stat_statements
         WHERE query NOT LIKE '%pg_stat_statements%'
         ORDER BY calls DESC LIMIT 8",
        &[],
    )?;
    let _ = writeln!(
        text,
        "    statements in the cluster (scheduler and job runners) by calls, per hour:"
    );
    for r in rows {
        let (calls, ms, q): (i64, f64, String) = (r.get(0), r.get(1), r.get(2));
        let _ = writeln!(
            text,
            "    {:>8.0} calls/h {:>8.0} ms/h  {q}",
            calls as f64 * 3600.0 / idle_secs,
            ms * 3600.0 / idle_secs
        );
    }
    if let Some(data) = &perf_data {
        let _ = writeln!(text, "    perf, scheduler CPU samples by shared object:");
        text.push_str(&Perf::report(data, &[sched], "dso", 10)?);
        let _ = writeln!(text, "\n    perf, top symbols:");
        text.push_str(&Perf::report(data, &[sched], "dso,sym", 10)?);
        let _ = writeln!(
            text,
            "\n    perf, inclusive share of the extension's functions (callees included):"
        );
        text.push_str(&Perf::report_inclusive(data, &[sched], 12)?);
        remove_perf_data(data);
    }
    Ok(text)
}

pub fn run(cfg: &Config, lib: &LibDir, perf: bool, results: &mut Results) -> Result<()> {
    let half = Duration::from_secs((cfg.w4_secs / 2).max(5));
    let n = cfg.w4_interval;
    println!(
        "W4 idle: no users, the two default jobs active; {}s idle, then {}s with a '{n} seconds' job",
        half.as_secs(),
        half.as_secs()
    );
    let bench = start_env(json!({"users": 1}), lib, &[], false)?;
    let mut client = bench.client()?;
    let sched = bench.wait_for_backend("procore_sync scheduler", Duration::from_secs(30))?;
    // Let start-up work (first ticks, catalog reads) pass before measuring.
    sleep_checked(Duration::from_secs(3))?;
    let hz = clock_ticks_per_second();

    let c0 = cpu_ticks(sched)?;
    let n0 = cpu_nanos(sched);
    let t0 = Instant::now();
    sleep_checked(half)?;
    let idle_ticks_cpu = (cpu_ticks(sched)? - c0) as f64 / hz;
    // schedstat counts nanoseconds; utime+stime only 10 ms ticks, too coarse for minutes.
    let idle_cpu = match (n0, cpu_nanos(sched)) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => idle_ticks_cpu,
    };
    let idle_secs = t0.elapsed().as_secs_f64();
    let idle_per_hour = idle_cpu * 3600.0 / idle_secs;

    client.batch_execute("CREATE TABLE bench_ticks (t timestamptz NOT NULL);")?;
    let c1 = cpu_ticks(sched)?;
    let n1 = cpu_nanos(sched);
    let t1 = Instant::now();
    client.execute(
        "SELECT procore_sync_schedule('bench-tick', $1, 'INSERT INTO bench_ticks VALUES (clock_timestamp())')",
        &[&format!("{n} seconds")],
    )?;
    sleep_checked(half)?;
    client.execute("SELECT procore_sync_unschedule('bench-tick')", &[])?;
    let job_cpu = match (n1, cpu_nanos(sched)) {
        (Some(a), Some(b)) => (b - a) as f64 / 1e9,
        _ => (cpu_ticks(sched)? - c1) as f64 / hz,
    };
    let job_secs = t1.elapsed().as_secs_f64();
    let job_per_hour = job_cpu * 3600.0 / job_secs;
    if cpu_ticks(sched).is_err() {
        bail!("the scheduler (pid {sched}) exited during W4");
    }

    let starts: Vec<DateTime<Utc>> = client
        .query(
            "SELECT start_time FROM procore_sync_job_run_details WHERE jobname = 'bench-tick'
             ORDER BY start_time",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ticks: Vec<DateTime<Utc>> = client
        .query("SELECT t FROM bench_ticks ORDER BY t", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if starts.len() < 2 || ticks.len() < 2 {
        bail!(
            "the '{n} seconds' job ran only {} times ({} ticks)",
            starts.len(),
            ticks.len()
        );
    }
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    let step = chrono::TimeDelta::seconds(n as i64);
    // Each run is due N seconds after the previous one started (pg_cron's rule).
    let mut start_late = Vec::new();
    let mut cmd_late = Vec::new();
    for k in 1..starts.len() {
        let due = starts[k - 1] + step;
        start_late.push(ms(starts[k] - due));
        if let Some(t) = ticks.get(k) {
            cmd_late.push(ms(*t - due));
        }
        results.chart.w4.push((
            ms(starts[k] - starts[0]) / 1000.0,
            ms(starts[k] - due),
            ticks.get(k).map(|t| ms(*t - due)).unwrap_or(f64::NAN),
        ));
    }
    let drift = ms(*starts.last().unwrap() - (starts[0] + step * (starts.len() as i32 - 1)));
    let max = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max);
    let (start_max, cmd_max) = (max(&start_late), max(&cmd_late));
    let (start_med, cmd_med) = (
        median(&mut start_late.clone()),
        median(&mut cmd_late.clone()),
    );
    println!(
        "  scheduler CPU {idle_cpu:.2}s in {idle_secs:.0}s idle, {job_cpu:.2}s in {job_secs:.0}s with the job; \
         {} runs, lateness median {cmd_med:.0} ms, max {cmd_max:.0} ms",
        starts.len()
    );
    results.add(
        "W4",
        format!("scheduler CPU, idle ({idle_secs:.0} s measured, schedstat)"),
        idle_per_hour,
        "s/hour",
        2,
        "< 1 s/hour",
        Some(idle_per_hour < 1.0),
    );
    results.info(
        "W4",
        "  the same from utime+stime (10 ms ticks)",
        idle_ticks_cpu * 3600.0 / idle_secs,
        "s/hour",
        2,
    );
    results.info(
        "W4",
        format!("scheduler CPU with the '{n} seconds' job"),
        job_per_hour,
        "s/hour",
        2,
    );
    results.add(
        "W4",
        format!("'{n} seconds' job: median lateness (command ran)"),
        cmd_med,
        "ms",
        0,
        "< 1000 ms",
        Some(cmd_med < 1000.0),
    );
    results.add(
        "W4",
        format!(
            "'{n} seconds' job: max lateness (command ran, {} runs)",
            cmd_late.len()
        ),
        cmd_max,
        "ms",
        0,
        "< 1000 ms",
        Some(cmd_max < 1000.0),
    );
    results.info("W4", "start_time lateness: median", start_med, "ms", 0);
    results.info("W4", "start_time lateness: max", start_max, "ms", 0);
    results.info(
        "W4",
        "drift of the last run from a fixed N-second grid",
        drift,
        "ms",
        0,
    );
    drop(client);
    drop(bench);
    let missed = idle_per_hour >= 1.0;
    if cfg.profile == ProfileMode::All || (missed && cfg.profile == ProfileMode::Missed) {
        if missed {
            println!("  target missed: profiling the idle scheduler on a fresh cluster");
        }
        let p = w4_profile(lib, perf, half.min(Duration::from_secs(120)))?;
        println!("{p}");
        if missed {
            results.note(format!("W4 {p}"));
        }
    }
    results.note(format!(
        "W4: lateness = when the run started (job_run_details.start_time) or its command ran \
         (clock_timestamp() in the row it inserted) minus the previous run's start + {n} s"
    ));
    Ok(())
}
