//! `bench`: how fast a sync cycle is, against the ceilings, in one run (`make bench`).
//!
//! Six workloads, each against a fresh cluster running a release build of the extension
//! (loaded through `dynamic_library_path`, never the system-wide install) and the release
//! stand-in, one module each:
//!
//! * [`w1_ingest`]: many records with no latency, end to end vs the ceilings.
//! * [`w2_many_users`]: 10,000 small users at 50 and 200 ms a request.
//! * [`w3_huge_resource`]: the sync worker's memory on one huge resource, and with every
//!   in-flight slot busy.
//! * [`w4_idle`]: the scheduler's CPU with nothing to do, and how punctual a job is.
//! * [`w5_one_big_user`]: one user with hundreds of projects, per `listings_per_user`.
//! * [`w6_webhooks`]: a change in Procore to its row through the webhook listener, idle and
//!   under load, and the deliveries a second the listener absorbs.
//!
//! The plumbing they share: [`args`] (the flags), [`cluster`] (the release library, the
//! clusters that load it and the stand-in), [`sampling`] (the sync workers while a cycle
//! runs), [`profile`] (perf and pg_stat_statements), [`report`] (the table, `results.csv`,
//! `results.md`) and [`chart`] (`chart.png`).
//!
//! Prints a table and writes `results.csv` and `chart.png` under `--out` (`target/bench`).
//! Nothing here asserts on time: a missed target is reported, not failed.

mod args;
mod chart;
mod cluster;
mod profile;
mod report;
mod sampling;
mod w1_ingest;
mod w2_many_users;
mod w3_huge_resource;
mod w4_idle;
mod w5_one_big_user;
mod w6_webhooks;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use procore_sync_e2e::{stop_on_signals, stop_requested};

use crate::args::{Config, ProfileMode, WORKLOADS};
use crate::cluster::LibDir;
use crate::profile::Perf;
use crate::report::Results;

fn main() -> ExitCode {
    let cfg = match Config::from_args(args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    stop_on_signals();
    match run(&cfg) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("\nBENCH FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cores} cores ({model}), {mem_gib:.0} GiB RAM")
}

fn run(cfg: &Config) -> Result<bool> {
    let machine = machine_description();
    println!(
        "== procore_sync benchmarks{} ==",
        if cfg.quick { " (quick)" } else { "" }
    );
    println!("machine: {machine}");
    let lib = LibDir::prepare(&cfg.extension_so)?;
    println!(
        "extension: {} (copied to {}, loaded through dynamic_library_path)",
        cfg.extension_so.display(),
        lib.so_path().display()
    );
    let standin_bin = procore_sync_e2e::standin_binary()?;
    println!("stand-in: {}", standin_bin.display());
    if !standin_bin.to_string_lossy().contains("/release/") {
        println!("  warning: this is not a release build of the stand-in");
    }
    let perf = cfg.profile != ProfileMode::Off && Perf::available();
    if cfg.profile != ProfileMode::Off && !perf {
        println!("  perf is not usable here: profiles come from pg_stat_statements only");
    }
    let started = Instant::now();
    let mut results = Results::default();
    let mut failures = Vec::new();
    for w in WORKLOADS {
        if !cfg.only.contains(w) {
            continue;
        }
        if stop_requested() {
            bail!("interrupted");
        }
        let t = Instant::now();
        let outcome = match w {
            "w1" => w1_ingest::run(cfg, &lib, perf, &mut results),
            "w2" => w2_many_users::run(cfg, &lib, perf, &mut results),
            "w3" => w3_huge_resource::run(cfg, &lib, perf, &mut results),
            "w4" => w4_idle::run(cfg, &lib, perf, &mut results),
            "w5" => w5_one_big_user::run(cfg, &lib, &mut results),
            _ => w6_webhooks::run(cfg, &lib, &mut results),
        };
        match outcome {
            Ok(()) => println!("  ({w} took {:.0}s)\n", t.elapsed().as_secs_f64()),
            Err(e) => {
                if stop_requested() {
                    return Err(e);
                }
                eprintln!("  {w} FAILED: {e:#}\n");
                results.note(format!("{w} did not complete: {e:#}"));
                failures.push(w);
            }
        }
    }
    let total = started.elapsed();

    let (csv_path, md_path) =
        report::write_files(&cfg.out_dir, &results, &machine, cfg.quick, total)?;
    let chart_path = cfg.out_dir.join("chart.png");
    let chart = chart::draw_chart(&chart_path, &results.chart, &machine, cfg.quick);

    println!(
        "== results ({}) ==",
        if cfg.quick {
            "quick sizes"
        } else {
            "full sizes"
        }
    );
    println!(
        "machine: {machine}; total {:.1} min\n",
        total.as_secs_f64() / 60.0
    );
    print!("{}", report::table_text(&results));
    if !results.notes.is_empty() {
        println!("\nnotes:");
        for n in &results.notes {
            println!("  - {n}");
        }
    }
    println!("\nwrote {}, {}", csv_path.display(), md_path.display());
    match chart {
        Ok(()) => println!("wrote {}", chart_path.display()),
        Err(e) => println!("chart not drawn: {e:#}"),
    }
    Ok(failures.is_empty())
}
