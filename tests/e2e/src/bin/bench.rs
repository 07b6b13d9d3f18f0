//! `bench`: how fast a sync cycle is, against the ceilings, in one run (`make bench`).
//!
//! Five workloads, each against a fresh cluster running a release build of the extension
//! (loaded through `dynamic_library_path`, never the system-wide install) and the release
//! stand-in:
//!
//! * W1 ingest: many records with no latency; end to end vs the database alone (the same
//!   rows upserted from one client) and the network alone (the same pages over plain HTTP).
//! * W2 many users: 10,000 small users at 50 and 200 ms a request, one cycle per setting
//!   (default settings unless asked), with requests/s and users in flight sampled every
//!   second, the sync workers' CPU per 1,000 requests and their peak RSS.
//! * W3 one huge resource: the sync worker's memory while it reads 200,000 RFIs, and while
//!   every in-flight slot of one worker is busy on a large listing.
//! * W4 idle: the scheduler's CPU with nothing to do, and how punctual an `N seconds` job is.
//! * W5 one big user: one user with hundreds of projects at a realistic latency, one cycle
//!   per `procore_sync.listings_per_user`: does reading several of its listings at once help?
//!
//! Prints a table and writes `results.csv` and `chart.png` under `--out` (`target/bench`).
//! Nothing here asserts on time: a missed target is reported, not failed.
//! `bench --help` lists the sizes; every flag also reads from `BENCH_<FLAG>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use procore_sync_core::records::page_rows;
use procore_sync_core::statements::UPSERT_PAGE;
use procore_sync_e2e::{render_table, stop_on_signals, stop_requested, Env, Standin};
use serde_json::{json, Value};
use uuid::Uuid;

/// The stand-in caps a scope at this many records (ids stay below 2^53).
const MAX_RECORDS_PER_SCOPE: u64 = 99_999;
const FONT_CANDIDATES: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
const PROJECT_TOOLS: usize = 6;
/// `backend_type` of the pool's processes in `pg_stat_activity`.
const SYNC_WORKER_TYPE: &str = "procore_sync sync worker";
/// The shipped defaults of `procore_sync.max_workers` and `procore_sync.users_per_worker`.
const DEFAULT_MAX_WORKERS: u32 = 4;
const DEFAULT_USERS_PER_WORKER: u32 = 64;
/// `procore_sync.users_per_worker` accepts 1..=1024.
const MAX_USERS_PER_WORKER: u32 = 1024;
/// `procore_sync.listings_per_user` accepts 1..=16.
const MAX_LISTINGS_PER_USER: u32 = 16;
/// The stand-in caps a company at this many projects.
const MAX_PROJECTS_PER_COMPANY: u64 = 999;
/// Every workload, in the order they run.
const WORKLOADS: [&str; 5] = ["w1", "w2", "w3", "w4", "w5"];

// ---------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------

/// When the profilers (pg_stat_statements, perf) run: they cost a little, so by default
/// only in an extra pass after a missed target, never during the measured one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProfileMode {
    Off,
    Missed,
    All,
}

#[derive(Clone, Debug)]
struct Config {
    quick: bool,
    only: BTreeSet<String>,
    out_dir: PathBuf,
    extension_so: PathBuf,
    profile: ProfileMode,
    w1_users: u64,
    w1_companies: u64,
    w1_projects: u64,
    w1_records: u64,
    w1_per_page: u64,
    w1_workers: u32,
    w2_users: u64,
    w2_projects: u64,
    w2_records: u64,
    w2_latency_ms: Vec<u64>,
    w2_rate_hour: u64,
    w2_workers: Vec<u32>,
    /// `None`: the setting left at the server's default.
    w2_users_per_worker: Vec<Option<u32>>,
    w2_sample_secs: u64,
    w2_stop_secs: u64,
    w3_records: u64,
    w3_per_page: u64,
    w3_slots: u32,
    w3_slot_records: u64,
    w4_secs: u64,
    w4_interval: u64,
    w5_projects: u64,
    w5_records: u64,
    w5_latency_ms: u64,
    w5_listings: Vec<u32>,
}

const HELP: &str = "\
usage: bench [--quick] [--only w1,w2,w3,w4,w5] [--profile[=MODE]] [--FLAG VALUE ...]

Every flag can also be given as an environment variable BENCH_<FLAG> (upper case,
dashes as underscores), e.g. BENCH_W2_USERS=2000. Flags win over the environment.

  --quick               small sizes, W4 for 60 s: a couple of minutes, for development
  --only LIST           run only these workloads (default w1,w2,w3,w4,w5)
  --profile[=MODE]      when pg_stat_statements and perf (if it works here) watch:
                        missed (default) = after a missed W1, W3 or W4 target, in an extra
                        pass on a fresh cluster, never during the measured one;
                        all (plain --profile) = also during W1's and W2's cycles; off
  --out DIR             where results.csv and chart.png go (default target/bench)
  --extension-so PATH   the release build to benchmark (default target/release/libprocore_sync.so)

  W1 ingest:   --w1-users 50 --w1-companies 2 --w1-projects 10 --w1-records 82
               --w1-per-page 100 --w1-workers 4
  W2 users:    --w2-users 10000 --w2-projects 2 --w2-records 20 --w2-rate-hour 3600
               --w2-latency-ms 50,200      one stand-in (and cluster) per latency
               --w2-workers 4              procore_sync.max_workers, a list
               --w2-users-per-worker default
                                           procore_sync.users_per_worker, a list of 1..1024
                                           or `default` (left unset: the server's default)
               one cycle per latency x workers x users-per-worker; the defaults are the
               shipped settings at 50 and 200 ms (`--w2-workers 1,4,8,16` for the old sweep)
               --w2-sample-secs 120 --w2-stop-secs 720  (a cycle projected past stop-secs
               after sample-secs is stopped there and its time projected from its rate)
               Each cycle prints requests/s and users in flight (in all, per worker pid)
               per time bucket, from samples every second (also target/bench/w2_timeline.csv)
  W3 memory:   --w3-records 200000 --w3-per-page 100
               --w3-slots 64 --w3-slot-records 15000  then that many users, each with one
               project of that many RFIs, synced at once by one worker (max_workers 1,
               users_per_worker = slots): its peak RSS with every slot busy; 0 slots: skip
  W4 idle:     --w4-secs 300 --w4-interval 5   (half idle, half with the N-second job)
  W5 one user: --w5-projects 200 --w5-records 20 --w5-latency-ms 200
               --w5-listings 1,4,8         procore_sync.listings_per_user, a list of 1..16
               1 user x 1 company x that many projects x 2 project resources (RFIs,
               submittals), rate limits out of the way, max_workers 1; one full first sync
               per listings_per_user, each on a fresh cluster: cycle time, requests/s and
               the speed-up against listings_per_user 1
";

struct Args {
    flags: BTreeMap<String, String>,
}

impl Args {
    fn parse() -> Result<Option<Args>> {
        let mut flags = BTreeMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                print!("{HELP}");
                return Ok(None);
            }
            let Some(name) = arg.strip_prefix("--") else {
                bail!("unexpected argument {arg:?} (see --help)");
            };
            if let Some((name, value)) = name.split_once('=') {
                flags.insert(name.to_string(), value.to_string());
            } else if name == "quick" || name == "profile" {
                flags.insert(name.to_string(), "1".to_string());
            } else {
                let value = it.next().ok_or_else(|| anyhow!("--{name} needs a value"))?;
                flags.insert(name.to_string(), value);
            }
        }
        Ok(Some(Args { flags }))
    }

    fn raw(&self, name: &str) -> Option<String> {
        self.flags.get(name).cloned().or_else(|| {
            let env = format!("BENCH_{}", name.to_uppercase().replace('-', "_"));
            std::env::var(env).ok().filter(|v| !v.is_empty())
        })
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.raw(name) {
            Some(v) => v.parse().map_err(|e| anyhow!("--{name} {v:?}: {e}")),
            None => Ok(default),
        }
    }

    /// A comma-separated list; one value is a list of one, so `--w2-latency-ms 50` and
    /// `BENCH_W2_WORKERS=8` read as before.
    fn list<T: std::str::FromStr>(&self, name: &str, default: &str) -> Result<Vec<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.raw(name)
            .unwrap_or_else(|| default.to_string())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<T>().map_err(|e| anyhow!("--{name} {s:?}: {e}")))
            .collect()
    }

    fn flag(&self, name: &str) -> bool {
        self.raw(name)
            .is_some_and(|v| !matches!(v.as_str(), "0" | "false" | "no"))
    }
}

fn workspace_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// The release build: in `$CARGO_TARGET_DIR` if it is there, else in the workspace's `target/`.
fn default_extension_so(workspace: &Path) -> PathBuf {
    let in_workspace = workspace.join("target/release/libprocore_sync.so");
    std::env::var("CARGO_TARGET_DIR")
        .ok()
        .map(|d| PathBuf::from(d).join("release/libprocore_sync.so"))
        .filter(|p| p.is_file())
        .unwrap_or(in_workspace)
}

impl Config {
    fn from_args(args: &Args) -> Result<Config> {
        let quick = args.flag("quick");
        let q = |full: u64, small: u64| if quick { small } else { full };
        let ws = workspace_dir();
        let known = [
            "quick",
            "only",
            "out",
            "extension-so",
            "profile",
            "w1-users",
            "w1-companies",
            "w1-projects",
            "w1-records",
            "w1-per-page",
            "w1-workers",
            "w2-users",
            "w2-projects",
            "w2-records",
            "w2-latency-ms",
            "w2-rate-hour",
            "w2-workers",
            "w2-users-per-worker",
            "w2-sample-secs",
            "w2-stop-secs",
            "w3-records",
            "w3-per-page",
            "w3-slots",
            "w3-slot-records",
            "w4-secs",
            "w4-interval",
            "w5-projects",
            "w5-records",
            "w5-latency-ms",
            "w5-listings",
        ];
        for name in args.flags.keys() {
            if !known.contains(&name.as_str()) {
                bail!("unknown flag --{name} (see --help)");
            }
        }
        let only: BTreeSet<String> = args
            .raw("only")
            .unwrap_or_else(|| "w1,w2,w3,w4,w5".into())
            .split(',')
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        for w in &only {
            if !WORKLOADS.contains(&w.as_str()) {
                bail!("--only: unknown workload {w:?}");
            }
        }
        let w2_workers: Vec<u32> = args.list("w2-workers", "4")?;
        let w2_latency_ms: Vec<u64> = args.list("w2-latency-ms", "50,200")?;
        let w2_users_per_worker: Vec<Option<u32>> = args
            .list::<String>("w2-users-per-worker", "default")?
            .iter()
            .map(|s| match s.as_str() {
                "default" => Ok(None),
                n => n
                    .parse::<u32>()
                    .map(Some)
                    .map_err(|e| anyhow!("--w2-users-per-worker {n:?}: {e}")),
            })
            .collect::<Result<_>>()?;
        let cfg = Config {
            quick,
            only,
            out_dir: args.get("out", ws.join("target/bench"))?,
            extension_so: args.get("extension-so", default_extension_so(&ws))?,
            profile: match args.raw("profile").as_deref() {
                None => ProfileMode::Missed,
                Some("1" | "all" | "yes" | "true") => ProfileMode::All,
                Some("missed") => ProfileMode::Missed,
                Some("0" | "off" | "no" | "false") => ProfileMode::Off,
                Some(other) => bail!("--profile {other:?}: expected off, missed or all"),
            },
            w1_users: args.get("w1-users", q(50, 10))?,
            w1_companies: args.get("w1-companies", 2)?,
            w1_projects: args.get("w1-projects", q(10, 5))?,
            w1_records: args.get("w1-records", q(82, 40))?,
            w1_per_page: args.get("w1-per-page", 100)?,
            w1_workers: args.get("w1-workers", 4)?,
            w2_users: args.get("w2-users", q(10_000, 100))?,
            w2_projects: args.get("w2-projects", 2)?,
            w2_records: args.get("w2-records", 20)?,
            w2_latency_ms,
            w2_rate_hour: args.get("w2-rate-hour", 3600)?,
            w2_workers,
            w2_users_per_worker,
            w2_sample_secs: args.get("w2-sample-secs", q(120, 10))?,
            w2_stop_secs: args.get("w2-stop-secs", q(720, 20))?,
            w3_records: args.get("w3-records", q(200_000, 20_000))?,
            w3_per_page: args.get("w3-per-page", 100)?,
            w3_slots: args.get("w3-slots", DEFAULT_USERS_PER_WORKER)?,
            w3_slot_records: args.get("w3-slot-records", q(15_000, 1_500))?,
            w4_secs: args.get("w4-secs", q(300, 60))?,
            w4_interval: args.get("w4-interval", 5)?,
            w5_projects: args.get("w5-projects", q(200, 50))?,
            w5_records: args.get("w5-records", 20)?,
            w5_latency_ms: args.get("w5-latency-ms", 200)?,
            w5_listings: args.list("w5-listings", "1,4,8")?,
        };
        if cfg.w2_workers.is_empty() || cfg.w2_workers.contains(&0) {
            bail!("--w2-workers needs positive numbers");
        }
        if cfg.w2_latency_ms.is_empty() {
            bail!("--w2-latency-ms needs at least one latency");
        }
        let upw_range = 1..=MAX_USERS_PER_WORKER;
        if cfg.w2_users_per_worker.is_empty()
            || cfg
                .w2_users_per_worker
                .iter()
                .flatten()
                .any(|n| !upw_range.contains(n))
        {
            bail!("--w2-users-per-worker takes `default` or numbers in 1..={MAX_USERS_PER_WORKER}");
        }
        if cfg.w3_slots > MAX_USERS_PER_WORKER {
            bail!("--w3-slots must be at most {MAX_USERS_PER_WORKER} (users_per_worker's range)");
        }
        if !(1..=59).contains(&cfg.w4_interval) {
            bail!("--w4-interval must be 1..=59 (an 'N seconds' schedule)");
        }
        if cfg.w5_listings.is_empty()
            || cfg
                .w5_listings
                .iter()
                .any(|n| !(1..=MAX_LISTINGS_PER_USER).contains(n))
        {
            bail!("--w5-listings takes numbers in 1..={MAX_LISTINGS_PER_USER} (listings_per_user's range)");
        }
        if !(1..=MAX_PROJECTS_PER_COMPANY).contains(&cfg.w5_projects) {
            bail!("--w5-projects must be 1..={MAX_PROJECTS_PER_COMPANY} (the stand-in's cap)");
        }
        if cfg.w1_records > MAX_RECORDS_PER_SCOPE
            || cfg.w2_records > MAX_RECORDS_PER_SCOPE
            || cfg.w3_slot_records > MAX_RECORDS_PER_SCOPE
            || cfg.w5_records > MAX_RECORDS_PER_SCOPE
        {
            bail!("records per resource are capped at {MAX_RECORDS_PER_SCOPE} by the stand-in");
        }
        Ok(cfg)
    }
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

struct Row {
    workload: &'static str,
    metric: String,
    value: f64,
    unit: &'static str,
    decimals: usize,
    target: String,
    met: Option<bool>,
}

#[derive(Default)]
struct ChartData {
    /// records/s: end to end, database alone, network alone.
    w1: Option<[f64; 3]>,
    w2: Vec<W2Bar>,
    /// Requests/s and users in flight over time, one series per W2 cycle.
    w2_timeline: Vec<W2Timeline>,
    /// (records synced, VmRSS MB, RssAnon MB)
    w3: Vec<(f64, f64, f64)>,
    /// The same with every in-flight slot of one worker busy: (records synced, VmRSS MB,
    /// RssAnon MB).
    w3_slots: Vec<(f64, f64, f64)>,
    /// (seconds since the first run, start lateness ms, command lateness ms)
    w4: Vec<(f64, f64, f64)>,
}

/// One W2 cycle in the chart.
struct W2Bar {
    label: String,
    secs: f64,
    projected: bool,
    target_min: Option<f64>,
}

#[derive(Default)]
struct Results {
    rows: Vec<Row>,
    notes: Vec<String>,
    /// (title, text chart) printed under the table: W2's cycles over time.
    timelines: Vec<(String, String)>,
    chart: ChartData,
}

impl Results {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        workload: &'static str,
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
        decimals: usize,
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        let row = Row {
            workload,
            metric: metric.into(),
            value,
            unit,
            decimals,
            target: target.into(),
            met,
        };
        println!(
            "  {:<3} {:<52} {:>12} {}",
            row.workload,
            row.metric,
            format_value(row.value, row.decimals),
            row.unit
        );
        self.rows.push(row);
    }

    fn info(
        &mut self,
        workload: &'static str,
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
        decimals: usize,
    ) {
        self.add(workload, metric, value, unit, decimals, "", None);
    }

    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  note: {text}");
        self.notes.push(text);
    }
}

fn format_value(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let s = format!("{v:.decimals$}");
    // Thousands separators on the integer part, for long numbers.
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), format!(".{f}")),
        None => (s.clone(), String::new()),
    };
    let (sign, digits) = match int.strip_prefix('-') {
        Some(d) => ("-", d.to_string()),
        None => ("", int),
    };
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}{frac}")
}

fn table_text(results: &Results) -> String {
    let header: Vec<String> = ["workload", "metric", "value", "target", "met?"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows: Vec<Vec<String>> = results
        .rows
        .iter()
        .map(|r| {
            vec![
                r.workload.to_string(),
                r.metric.clone(),
                format!("{} {}", format_value(r.value, r.decimals), r.unit)
                    .trim()
                    .to_string(),
                r.target.clone(),
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    render_table(&header, &rows)
}

fn markdown_table(results: &Results) -> String {
    let mut out = String::from(
        "| workload | metric | value | target | met? |\n| --- | --- | --: | --- | --- |\n",
    );
    for r in &results.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} | {} |",
            r.workload,
            r.metric,
            format_value(r.value, r.decimals),
            r.unit,
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            }
        );
    }
    out
}

fn csv_text(results: &Results) -> String {
    let esc = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("workload,metric,value,unit,target,met\n");
    for r in &results.rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            r.workload,
            esc(&r.metric),
            if r.value.is_finite() {
                format!("{:.*}", r.decimals.max(1), r.value)
            } else {
                String::new()
            },
            esc(r.unit),
            esc(&r.target),
            match r.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "",
            }
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cfg = match Config::from_args(&args) {
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
            "w1" => w1_ingest(cfg, &lib, perf, &mut results),
            "w2" => w2_many_users(cfg, &lib, perf, &mut results),
            "w3" => w3_huge_resource(cfg, &lib, perf, &mut results),
            "w4" => w4_idle(cfg, &lib, perf, &mut results),
            _ => w5_one_big_user(cfg, &lib, &mut results),
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

    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let csv_path = cfg.out_dir.join("results.csv");
    std::fs::write(&csv_path, csv_text(&results))?;
    if !results.chart.w3.is_empty() {
        let mut text = String::from("records,vmrss_mb,rssanon_mb\n");
        for (r, rss, anon) in &results.chart.w3 {
            let _ = writeln!(text, "{r},{rss:.1},{anon:.1}");
        }
        std::fs::write(cfg.out_dir.join("w3_memory.csv"), text)?;
    }
    if !results.chart.w3_slots.is_empty() {
        let mut text = String::from("records,vmrss_mb,rssanon_mb\n");
        for (r, rss, anon) in &results.chart.w3_slots {
            let _ = writeln!(text, "{r},{rss:.1},{anon:.1}");
        }
        std::fs::write(cfg.out_dir.join("w3_slots_memory.csv"), text)?;
    }
    if !results.chart.w2_timeline.is_empty() {
        std::fs::write(
            cfg.out_dir.join("w2_timeline.csv"),
            timeline_csv(&results.chart.w2_timeline),
        )?;
    }
    let md_path = cfg.out_dir.join("results.md");
    let mut md = format!(
        "Machine: {machine}. Run {} ({}), {:.0} min.\n\n",
        Utc::now().format("%Y-%m-%d"),
        if cfg.quick {
            "`--quick`"
        } else {
            "full defaults"
        },
        total.as_secs_f64() / 60.0
    );
    md.push_str(&markdown_table(&results));
    if !results.notes.is_empty() {
        md.push('\n');
        for n in &results.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    for (title, text) in &results.timelines {
        let _ = write!(md, "\n{title}, over time:\n\n```\n{text}```\n");
    }
    std::fs::write(&md_path, md)?;
    let chart_path = cfg.out_dir.join("chart.png");
    let chart = draw_chart(&chart_path, &results.chart, &machine, cfg.quick);

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
    print!("{}", table_text(&results));
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

// ---------------------------------------------------------------------------------------
// The release library and the clusters that load it
// ---------------------------------------------------------------------------------------

/// A private directory holding the release build as `procore_sync.so`.
struct LibDir {
    dir: tempfile::TempDir,
}

impl LibDir {
    fn prepare(so: &Path) -> Result<LibDir> {
        if !so.is_file() {
            bail!(
                "{} does not exist: build it with `cargo build --release -p procore_sync` (make bench does)",
                so.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("procore-bench-lib-")
            .tempdir_in("/tmp")
            .context("creating the library directory")?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let dest = dir.path().join("procore_sync.so");
        std::fs::copy(so, &dest).with_context(|| format!("copying {}", so.display()))?;
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(LibDir { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn so_path(&self) -> PathBuf {
        self.dir.path().join("procore_sync.so")
    }
}

struct BenchEnv {
    env: Env,
    lib_path: PathBuf,
}

/// Starts the stand-in with `world` and a cluster that loads the release library, creates the
/// extension and checks that the scheduler really runs the release `.so`.
fn start_env(
    world: Value,
    lib: &LibDir,
    settings: &[(&str, String)],
    with_pg_stat_statements: bool,
) -> Result<BenchEnv> {
    let standin = Standin::start(world)?;
    let dlp = format!("{}:$libdir", lib.path().display());
    let mut all: Vec<(&str, String)> = vec![("dynamic_library_path", dlp)];
    if with_pg_stat_statements {
        all.push((
            "shared_preload_libraries",
            "procore_sync,pg_stat_statements".into(),
        ));
        all.push(("pg_stat_statements.track", "all".into()));
        all.push(("pg_stat_statements.max", "1000".into()));
    }
    all.extend(settings.iter().cloned());
    let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = Env::with_standin(standin, &refs)?;
    let bench = BenchEnv {
        env,
        lib_path: lib.so_path(),
    };
    let pid = bench.wait_for_backend("procore_sync scheduler", Duration::from_secs(30))?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let ours = bench.lib_path.to_string_lossy().to_string();
    if !maps.contains(&ours) {
        bail!("the scheduler (pid {pid}) did not load {ours}: is dynamic_library_path honoured?");
    }
    if with_pg_stat_statements {
        bench
            .client()?
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
    }
    Ok(bench)
}

impl BenchEnv {
    fn client(&self) -> Result<postgres::Client> {
        self.env.client()
    }

    fn backend_pids(&self, client: &mut postgres::Client, backend_type: &str) -> Result<Vec<i32>> {
        Ok(client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = $1 ORDER BY pid",
                &[&backend_type],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn wait_for_backend(&self, backend_type: &str, timeout: Duration) -> Result<i32> {
        let mut client = self.client()?;
        let start = Instant::now();
        loop {
            if let Some(pid) = self.backend_pids(&mut client, backend_type)?.first() {
                return Ok(*pid);
            }
            check_stop()?;
            if start.elapsed() > timeout {
                bail!("no {backend_type:?} process after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until no sync worker is left (pool workers exit after a few idle seconds).
    fn wait_pool_gone(&self, timeout: Duration) -> Result<()> {
        let mut client = self.client()?;
        let start = Instant::now();
        while !self
            .backend_pids(&mut client, "procore_sync sync worker")?
            .is_empty()
        {
            check_stop()?;
            if start.elapsed() > timeout {
                bail!("sync workers still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

fn check_stop() -> Result<()> {
    if stop_requested() {
        bail!("interrupted");
    }
    Ok(())
}

fn sleep_checked(d: Duration) -> Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        check_stop()?;
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
    Ok(())
}

/// Both default jobs off: the bench drives the queue itself.
fn disable_default_jobs(client: &mut postgres::Client) -> Result<()> {
    client
        .batch_execute(
            "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job",
        )
        .context("disabling the default jobs")
}

/// Connects logins `user-1..=n` with tokens issued by the stand-in's admin API and stored
/// with `procore_set_tokens`, many per statement.
fn connect_users(bench: &BenchEnv, n: u64) -> Result<Vec<Uuid>> {
    let t = Instant::now();
    let next = AtomicUsize::new(1);
    let pairs: Mutex<Vec<(u64, String, String, i32)>> = Mutex::new(Vec::with_capacity(n as usize));
    let standin = &bench.env.standin;
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst) as u64;
                        if i > n || stop_requested() {
                            return Ok(());
                        }
                        let v = standin.issue_tokens(&format!("user-{i}"))?;
                        let access = v["access_token"].as_str().unwrap_or_default().to_string();
                        let refresh = v["refresh_token"].as_str().unwrap_or_default().to_string();
                        let expires = v["expires_in"].as_i64().unwrap_or(3600) as i32;
                        pairs.lock().unwrap().push((i, access, refresh, expires));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("token thread panicked"))??;
        }
        Ok(())
    })?;
    check_stop()?;
    let mut pairs = pairs.into_inner().unwrap();
    pairs.sort_by_key(|p| p.0);
    let mut client = bench.client()?;
    let mut ids = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(1000) {
        let users: Vec<Uuid> = chunk.iter().map(|_| Uuid::new_v4()).collect();
        let access: Vec<&str> = chunk.iter().map(|p| p.1.as_str()).collect();
        let refresh: Vec<&str> = chunk.iter().map(|p| p.2.as_str()).collect();
        let expires: Vec<i32> = chunk.iter().map(|p| p.3).collect();
        client.execute(
            "SELECT count(*) FROM (SELECT procore_set_tokens(u, a, r, e)
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[]) AS t(u, a, r, e)) s",
            &[&users, &access, &refresh, &expires],
        )?;
        ids.extend(users);
    }
    println!(
        "  connected {} users in {:.1}s",
        ids.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(ids)
}

#[derive(Debug, Default, Clone, Copy)]
struct QueueCounts {
    open: i64,
    completed: i64,
    failed: i64,
}

fn queue_counts(client: &mut postgres::Client) -> Result<QueueCounts> {
    let row = client.query_one(
        "SELECT count(*) FILTER (WHERE status IN ('pending', 'processing')),
                count(*) FILTER (WHERE status = 'completed'),
                count(*) FILTER (WHERE status = 'failed')
         FROM procore_sync_queue",
        &[],
    )?;
    Ok(QueueCounts {
        open: row.get(0),
        completed: row.get(1),
        failed: row.get(2),
    })
}

/// `queue_procore_sync_for_all_users()` then `process_procore_sync_queue()`, as the two
/// default jobs would run them; returns when both have returned.
fn start_cycle(client: &mut postgres::Client) -> Result<(i32, i32)> {
    let queued: i32 = client
        .query_one("SELECT queue_procore_sync_for_all_users()", &[])?
        .get(0);
    let taken: i32 = client
        .query_one("SELECT process_procore_sync_queue()", &[])?
        .get(0);
    Ok((queued, taken))
}

fn first_failure(client: &mut postgres::Client) -> Result<String> {
    Ok(client
        .query(
            "SELECT coalesce(error_message, '') FROM procore_sync_queue
             WHERE status = 'failed' OR error_message IS NOT NULL LIMIT 1",
            &[],
        )?
        .first()
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default())
}

fn api_requests(standin: &Standin) -> Result<i64> {
    Ok(standin.stats()?["api_requests"].as_i64().unwrap_or(0))
}

// ---------------------------------------------------------------------------------------
// Profiling: perf (system-wide cpu-clock samples, filtered to our pids) and
// pg_stat_statements
// ---------------------------------------------------------------------------------------

/// The page-fault profile records every 8th fault: bursts of faults overflow perf's buffers
/// when it unwinds each one.
const FAULT_PERIOD: u32 = 8;

struct Perf {
    child: Child,
    data: PathBuf,
}

impl Perf {
    fn available() -> bool {
        Command::new("perf")
            .args(["stat", "-e", "cpu-clock", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Samples every CPU (`pid` None) or one process, until `stop`.
    fn start(data: &Path, pid: Option<i32>, freq: u32) -> Result<Perf> {
        Self::record(data, pid, &["-e", "cpu-clock", "-F", &freq.to_string()])
    }

    /// Records every page fault of one process: where its memory grows, by call stack.
    fn start_page_faults(data: &Path, pid: i32) -> Result<Perf> {
        Self::record(
            data,
            Some(pid),
            &[
                "-e",
                "page-faults",
                "-c",
                &FAULT_PERIOD.to_string(),
                "-m",
                "4096",
            ],
        )
    }

    fn record(data: &Path, pid: Option<i32>, event: &[&str]) -> Result<Perf> {
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-q"]).args(event).arg("-o").arg(data);
        // One process: DWARF unwinding, so inclusive costs reach the Rust functions (release
        // builds have no frame pointers). System-wide: frame pointers, to keep the data small.
        match pid {
            Some(p) => cmd
                .args(["--call-graph", "dwarf,16384", "-p"])
                .arg(p.to_string()),
            None => cmd.args(["-g", "-a"]),
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf record")?;
        Ok(Perf {
            child,
            data: data.to_path_buf(),
        })
    }

    fn stop(mut self) -> Result<PathBuf> {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        Ok(self.data.clone())
    }

    /// Inclusive share of samples (callees included) of this extension's own functions.
    fn report_inclusive(data: &Path, pids: &[i32], limit: usize) -> Result<String> {
        let text = Self::report_text(data, pids, &["--children", "--sort", "sym"])?;
        Ok(indented(
            text.lines()
                .filter(|l| l.contains("procore_sync::") && !l.contains("{{closure}}")),
            limit,
        ))
    }

    /// Page faults (4 KB of newly touched memory each) under each of `frames`, callees
    /// included: which step of the sync the worker's memory growth comes from.
    fn report_fault_frames(data: &Path, pid: i32, frames: &[(&str, &str)]) -> Result<String> {
        let text = Self::report_text(data, &[pid], &["--children", "--sort", "sym"])?;
        let total: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("# Event count (approx.):"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        let lost: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("# Total Lost Samples:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
            * FAULT_PERIOD as f64;
        let mut lines = vec![format!(
            "    {:.0}k page faults recorded (~{:.0} MB of first touches, memory freed and touched again \
             included; {:.0}k more lost by perf)",
            total / 1000.0,
            total * 4.0 / 1024.0,
            lost / 1000.0
        )];
        for (frame, what) in frames {
            let share = text
                .lines()
                .find(|l| l.trim_end().ends_with(&format!("[.] {frame}")))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok())
                .unwrap_or(0.0);
            let faults = share / 100.0 * total;
            lines.push(format!(
                "    {share:>6.2}%  {:>6.1}k faults ~{:>5.1} MB  {frame}: {what}",
                faults / 1000.0,
                faults * 4.0 / 1024.0
            ));
        }
        Ok(lines.join("\n"))
    }

    /// Share of CPU samples per `sort` key (command, shared object, symbol) for `pids`.
    fn report(data: &Path, pids: &[i32], sort: &str, limit: usize) -> Result<String> {
        let text = Self::report_text(
            data,
            pids,
            &["--no-children", "--percent-limit", "1.5", "--sort", sort],
        )?;
        Ok(indented(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty()),
            limit,
        ))
    }

    /// `perf report --stdio` of `pids` in `data`, call graphs folded, with `options`.
    fn report_text(data: &Path, pids: &[i32], options: &[&str]) -> Result<String> {
        let list = pids
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let out = Command::new("perf")
            .args(["report", "--stdio", "-g", "none"])
            .args(options)
            .arg("-i")
            .arg(data)
            .arg("--pid")
            .arg(&list)
            .output()
            .context("perf report")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The first `limit` lines, indented under the profile's heading.
fn indented<'a>(lines: impl Iterator<Item = &'a str>, limit: usize) -> String {
    lines
        .take(limit)
        .map(|l| format!("    {}", l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collects the pids of sync workers while a cycle runs (they come and go).
#[derive(Default)]
struct PidWatch {
    pids: BTreeSet<i32>,
}

impl PidWatch {
    fn sample(&mut self, bench: &BenchEnv, client: &mut postgres::Client) -> Result<()> {
        self.pids
            .extend(bench.backend_pids(client, "procore_sync sync worker")?);
        Ok(())
    }
}

/// The statements that took the most time inside the cluster, and their total.
/// The bench's own polling, left out of the statement profile.
const BENCH_OWN_QUERIES: &str =
    "pg_stat_statements|pg_stat_activity|FILTER \\(WHERE status|procore_sync_progress LIMIT";

fn pg_stat_statements_report(
    client: &mut postgres::Client,
    wall_secs: f64,
    workers: u32,
) -> Result<String> {
    let total: f64 = client
        .query_one(
            "SELECT coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements WHERE NOT (query ~* $1)",
            &[&BENCH_OWN_QUERIES],
        )?
        .get(0);
    let rows = client.query(
        "SELECT calls, total_exec_time::float8, (total_exec_time / greatest(calls, 1))::float8,
                regexp_replace(left(query, 70), '\\s+', ' ', 'g')
         FROM pg_stat_statements WHERE NOT (query ~* $1)
         ORDER BY total_exec_time DESC LIMIT 10",
        &[&BENCH_OWN_QUERIES],
    )?;
    let mut out = format!(
        "    SQL run by the extension (bench's own polling left out): {:.1}s in all = {:.0}% of {} worker(s) x {:.1}s wall\n",
        total / 1000.0,
        100.0 * total / 1000.0 / (wall_secs * workers as f64).max(1e-9),
        workers,
        wall_secs
    );
    for r in rows {
        let (calls, ms, per, q): (i64, f64, f64, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let _ = writeln!(
            out,
            "    {:>8} calls {:>9.1}s {:>8.3}ms/call  {q}",
            calls,
            ms / 1000.0,
            per
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// W1: ingest against the ceilings
// ---------------------------------------------------------------------------------------

struct PageBody {
    resource: String,
    company_id: Option<i64>,
    project_id: Option<i64>,
    body: String,
}

struct CatalogEntry {
    name: String,
    path_template: String,
    scope: String,
    paginated: bool,
}

fn w1_world(cfg: &Config) -> Value {
    json!({
        "users": cfg.w1_users, "companies_per_user": cfg.w1_companies,
        "projects_per_company": cfg.w1_projects, "records_per_resource": cfg.w1_records,
        "per_page_default": cfg.w1_per_page, "latency_ms": 0,
        // Rate limits are W2's subject; here they would only measure the pacing.
        "rate_limit_spike": 1_000_000_000u64, "rate_limit_hour": 1_000_000_000u64,
        "access_token_ttl_s": 86_400,
    })
}

/// A W1 cluster with every user connected and the default jobs off.
fn w1_env(cfg: &Config, lib: &LibDir, profiled: bool) -> Result<BenchEnv> {
    let workers = cfg.w1_workers;
    let bench = start_env(
        w1_world(cfg),
        lib,
        &[
            ("procore_sync.max_workers", workers.to_string()),
            ("procore_sync.batch_size", cfg.w1_users.max(10).to_string()),
            ("max_worker_processes", (workers + 8).to_string()),
        ],
        profiled,
    )?;
    let mut client = bench.client()?;
    disable_default_jobs(&mut client)?;
    client.execute(
        "UPDATE procore_sync_resource SET per_page = $1, enabled = true",
        &[&(cfg.w1_per_page as i32)],
    )?;
    connect_users(&bench, cfg.w1_users)?;
    Ok(bench)
}

struct Cycle {
    secs: f64,
    stored: i64,
    requests: i64,
    /// Sync worker processes seen during the cycle: the pool starts one per
    /// `users_per_worker` due users, up to `max_workers`.
    workers_seen: usize,
    profile: Option<String>,
}

/// One end-to-end cycle; with `profiled`, pg_stat_statements (and perf, if `perf`) watch it.
fn w1_cycle(
    bench: &BenchEnv,
    cfg: &Config,
    expected: u64,
    profiled: bool,
    perf: bool,
) -> Result<Cycle> {
    let mut client = bench.client()?;
    let req0 = api_requests(&bench.env.standin)?;
    if profiled {
        client.batch_execute("SELECT pg_stat_statements_reset()")?;
    }
    let perf_run = if profiled && perf {
        Some(Perf::start(
            &std::env::temp_dir().join("procore-bench-w1.perf"),
            None,
            499,
        )?)
    } else {
        None
    };
    let mut watch = PidWatch::default();
    let t0 = Instant::now();
    start_cycle(&mut client)?;
    loop {
        watch.sample(bench, &mut client)?;
        let q = queue_counts(&mut client)?;
        if q.open == 0 {
            break;
        }
        check_stop()?;
        if t0.elapsed() > Duration::from_secs(7200) {
            bail!("the W1 cycle did not finish within 2 h: {q:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t0.elapsed().as_secs_f64();
    let perf_data = perf_run.map(Perf::stop).transpose()?;
    let q = queue_counts(&mut client)?;
    if q.failed > 0 {
        bail!("{} users failed: {}", q.failed, first_failure(&mut client)?);
    }
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM procore_records WHERE deleted_at IS NULL",
            &[],
        )?
        .get(0);
    if stored as u64 != expected {
        bail!("stored {stored} records, expected {expected}");
    }
    let requests = api_requests(&bench.env.standin)? - req0;
    let profile = if profiled {
        let mut text = format!("profile of a W1 end-to-end cycle ({secs:.1} s):\n");
        text.push_str(&pg_stat_statements_report(
            &mut client,
            secs,
            cfg.w1_workers,
        )?);
        if let Some(data) = &perf_data {
            let pids: Vec<i32> = watch.pids.iter().copied().collect();
            let _ = writeln!(
                text,
                "    perf, CPU samples of the sync workers by shared object:"
            );
            text.push_str(&Perf::report(data, &pids, "dso", 12)?);
            let _ = writeln!(text, "\n    perf, top symbols in the sync workers:");
            text.push_str(&Perf::report(data, &pids, "dso,sym", 25)?);
            let _ = writeln!(
                text,
                "\n    perf, CPU samples: sync workers vs the stand-in:"
            );
            let mut both = pids.clone();
            both.push(standin_pid()?);
            text.push_str(&Perf::report(data, &both, "comm", 6)?);
            remove_perf_data(data);
        }
        Some(text)
    } else {
        None
    };
    Ok(Cycle {
        secs,
        stored,
        requests,
        workers_seen: watch.pids.len(),
        profile,
    })
}

/// End to end against the lower ceiling (the database's, in every run so far): many users in
/// flight per worker must not cost the ingest path more than this.
const W1_TARGET: f64 = 0.80;

fn w1_ingest(cfg: &Config, lib: &LibDir, perf: bool, results: &mut Results) -> Result<()> {
    let (u, c, p, r) = (
        cfg.w1_users,
        cfg.w1_companies,
        cfg.w1_projects,
        cfg.w1_records,
    );
    let expected = u * (c + c * p + c * r + c * p * PROJECT_TOOLS as u64 * r);
    let workers = cfg.w1_workers;
    println!(
        "W1 ingest: {u} users x {c} companies x {p} projects, {r} records per resource, every \
         catalog resource, {} per page, max_workers {workers}: {expected} records",
        cfg.w1_per_page
    );
    let profile_all = cfg.profile == ProfileMode::All;
    let bench = w1_env(cfg, lib, profile_all)?;
    let mut client = bench.client()?;

    // End to end.
    let cycle = w1_cycle(&bench, cfg, expected, profile_all, perf)?;
    let e2e_rate = cycle.stored as f64 / cycle.secs;
    println!(
        "  end to end: {} records, {} requests in {:.1}s",
        cycle.stored, cycle.requests, cycle.secs
    );
    if let Some(p) = &cycle.profile {
        println!("{p}");
    }

    // The same pages, fetched by a plain HTTP client.
    let catalog = read_catalog(&mut client)?;
    let logins: Vec<String> = (1..=u).map(|i| format!("user-{i}")).collect();
    let t1 = Instant::now();
    let pages = fetch_all_pages(
        &bench.env.standin,
        &logins,
        &catalog,
        cfg.w1_per_page,
        workers as usize,
    )?;
    let net_secs = t1.elapsed().as_secs_f64();
    let bytes: usize = pages.iter().map(|p| p.body.len()).sum();
    println!(
        "  network alone: {} pages, {:.1} MB in {net_secs:.1}s ({workers} threads, plain HTTP, no database)",
        pages.len(),
        bytes as f64 / 1e6
    );

    // The same rows, upserted by one client in one batched statement per page.
    client.batch_execute("TRUNCATE procore_records")?;
    let batches = pages_to_batches(pages)?;
    let rows: usize = batches.iter().map(|b| b.ids.len()).sum();
    if rows as u64 != expected {
        bail!("the plain HTTP client got {rows} records, expected {expected}");
    }
    let statement = client.prepare(UPSERT_PAGE)?;
    let t2 = Instant::now();
    for b in &batches {
        client.query_one(
            &statement,
            &[
                &b.resource,
                &b.company_id,
                &b.project_id,
                &b.ids,
                &b.names,
                &b.statuses,
                &b.updated,
                &b.data,
            ],
        )?;
        check_stop()?;
    }
    let db_secs = t2.elapsed().as_secs_f64();
    let stored_again: i64 = client
        .query_one("SELECT count(*) FROM procore_records", &[])?
        .get(0);
    if stored_again as u64 != expected {
        bail!("the database ceiling stored {stored_again} records, expected {expected}");
    }
    println!(
        "  database alone: {rows} rows in {} INSERT ... ON CONFLICT statements from one client in {db_secs:.1}s",
        batches.len()
    );
    drop(client);
    drop(bench);

    let db_rate = rows as f64 / db_secs;
    let net_rate = rows as f64 / net_secs;
    let lower = db_rate.min(net_rate);
    let fraction = e2e_rate / lower;
    let lower_name = if db_rate <= net_rate {
        "database"
    } else {
        "network"
    };
    results.info(
        "W1",
        format!(
            "records synced ({} per page, max_workers {workers})",
            cfg.w1_per_page
        ),
        cycle.stored as f64,
        "",
        0,
    );
    results.info("W1", "end to end", e2e_rate, "records/s", 0);
    results.info(
        "W1",
        "  sync worker processes that ran",
        cycle.workers_seen as f64,
        "",
        0,
    );
    results.info(
        "W1",
        "ceiling: database alone (1 client, 1 upsert per page)",
        db_rate,
        "records/s",
        0,
    );
    results.info(
        "W1",
        format!("ceiling: network alone ({workers} threads, plain HTTP)"),
        net_rate,
        "records/s",
        0,
    );
    results.add(
        "W1",
        format!("end to end / lower ceiling ({lower_name})"),
        fraction,
        "",
        3,
        format!(">= {W1_TARGET:.2}"),
        Some(fraction >= W1_TARGET),
    );
    results.chart.w1 = Some([e2e_rate, db_rate, net_rate]);
    results.note(format!(
        "W1: {} API requests, {:.1} MB of JSON; stand-in rate limits raised out of the way; \
         catalog per_page = {}",
        cycle.requests,
        bytes as f64 / 1e6,
        cfg.w1_per_page
    ));
    if fraction < W1_TARGET {
        // Measured without the profilers; now once more with them, to say where time goes.
        let profile = match (&cycle.profile, cfg.profile) {
            (Some(p), _) => Some(p.clone()),
            (None, ProfileMode::Missed) => {
                println!("  target missed: profiling another cycle on a fresh cluster");
                let bench = w1_env(cfg, lib, true)?;
                let again = w1_cycle(&bench, cfg, expected, true, perf)?;
                again.profile
            }
            _ => None,
        };
        if let Some(p) = profile {
            println!("{p}");
            results.note(format!("W1 {p}"));
        }
    }
    Ok(())
}

/// The stand-in is a child of this process (one at a time).
fn standin_pid() -> Result<i32> {
    let me = std::process::id() as i32;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|s| s.parse::<i32>().ok());
        if ppid != Some(me) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("procore-standin") {
            return Ok(pid);
        }
    }
    bail!("stand-in process not found")
}

fn read_catalog(client: &mut postgres::Client) -> Result<Vec<CatalogEntry>> {
    Ok(client
        .query(
            "SELECT name, path_template, scope, paginated FROM procore_sync_resource
             WHERE enabled ORDER BY name",
            &[],
        )?
        .iter()
        .map(|r| CatalogEntry {
            name: r.get(0),
            path_template: r.get(1),
            scope: r.get(2),
            paginated: r.get(3),
        })
        .collect())
}

/// Walks every login's companies, their company resources, their projects and every
/// project resource, with `threads` threads, following `Link: rel="next"`; returns the pages.
fn fetch_all_pages(
    standin: &Standin,
    logins: &[String],
    catalog: &[CatalogEntry],
    per_page: u64,
    threads: usize,
) -> Result<Vec<PageBody>> {
    let next = AtomicUsize::new(0);
    let pages: Mutex<Vec<PageBody>> = Mutex::new(Vec::new());
    // Tokens first, outside the timed part is not possible without a second walk; they are
    // one small admin request per user.
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(60))
                        .build();
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= logins.len() || stop_requested() {
                            break;
                        }
                        let token = standin.issue_tokens(&logins[i])?["access_token"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        walk_user(
                            &agent,
                            standin.base_url(),
                            &token,
                            catalog,
                            per_page,
                            &mut mine,
                        )?;
                    }
                    pages.lock().unwrap().extend(mine);
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("fetch thread panicked"))??;
        }
        Ok(())
    })?;
    check_stop()?;
    Ok(pages.into_inner().unwrap())
}

fn walk_user(
    agent: &ureq::Agent,
    base: &str,
    token: &str,
    catalog: &[CatalogEntry],
    per_page: u64,
    out: &mut Vec<PageBody>,
) -> Result<()> {
    let companies = get_list(agent, &format!("{base}/rest/v1.0/companies"), token, None)?;
    let company_ids = ids_of(&companies.0)?;
    out.push(PageBody {
        resource: "companies".into(),
        company_id: None,
        project_id: None,
        body: companies.0,
    });
    for &company in &company_ids {
        let mut project_ids = Vec::new();
        for entry in catalog.iter().filter(|e| e.scope == "company") {
            let path = entry
                .path_template
                .replace("{company_id}", &company.to_string());
            for body in get_all(
                agent,
                base,
                &path,
                token,
                company,
                entry.paginated,
                per_page,
            )? {
                if entry.name == "projects" {
                    project_ids.extend(ids_of(&body)?);
                }
                out.push(PageBody {
                    resource: entry.name.clone(),
                    company_id: Some(company),
                    project_id: None,
                    body,
                });
            }
        }
        for &project in &project_ids {
            for entry in catalog.iter().filter(|e| e.scope == "project") {
                let path = entry
                    .path_template
                    .replace("{company_id}", &company.to_string())
                    .replace("{project_id}", &project.to_string());
                for body in get_all(
                    agent,
                    base,
                    &path,
                    token,
                    company,
                    entry.paginated,
                    per_page,
                )? {
                    out.push(PageBody {
                        resource: entry.name.clone(),
                        company_id: Some(company),
                        project_id: Some(project),
                        body,
                    });
                }
            }
        }
    }
    Ok(())
}

fn get_all(
    agent: &ureq::Agent,
    base: &str,
    path: &str,
    token: &str,
    company: i64,
    paginated: bool,
    per_page: u64,
) -> Result<Vec<String>> {
    let mut url = format!("{base}{path}");
    if paginated {
        let sep = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{sep}per_page={per_page}");
    }
    let mut bodies = Vec::new();
    let mut next = Some(url);
    while let Some(url) = next.take() {
        let (body, link) = get_list(agent, &url, token, Some(company))?;
        bodies.push(body);
        next = link.as_deref().and_then(next_link);
    }
    Ok(bodies)
}

fn get_list(
    agent: &ureq::Agent,
    url: &str,
    token: &str,
    company: Option<i64>,
) -> Result<(String, Option<String>)> {
    let mut req = agent
        .get(url)
        .set("Authorization", &format!("Bearer {token}"));
    if let Some(c) = company {
        req = req.set("Procore-Company-Id", &c.to_string());
    }
    let resp = req.call().with_context(|| format!("GET {url}"))?;
    let link = resp.header("Link").map(str::to_string);
    let mut body = String::new();
    resp.into_reader()
        .take(256 << 20)
        .read_to_string(&mut body)
        .with_context(|| format!("reading {url}"))?;
    Ok((body, link))
}

fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let part = part.trim();
        if !part.contains("rel=\"next\"") {
            return None;
        }
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_string())
    })
}

fn ids_of(body: &str) -> Result<Vec<i64>> {
    let v: Value = serde_json::from_str(body).context("a list page is not JSON")?;
    Ok(v.as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_i64()).collect())
        .unwrap_or_default())
}

struct Batch {
    resource: String,
    company_id: Option<i64>,
    project_id: Option<i64>,
    ids: Vec<i64>,
    names: Vec<Option<String>>,
    statuses: Vec<Option<String>>,
    updated: Vec<Option<String>>,
    data: Vec<Value>,
}

/// The rows the extension makes of each page (`procore_sync_core::records`), so the database
/// ceiling writes exactly the rows the sync wrote.
fn pages_to_batches(pages: Vec<PageBody>) -> Result<Vec<Batch>> {
    let mut out = Vec::with_capacity(pages.len());
    for page in pages {
        let records: Vec<Value> = serde_json::from_str(&page.body).context("page JSON")?;
        let rows = page_rows(records).context("a page the sync would refuse")?;
        if rows.is_empty() {
            continue;
        }
        let mut b = Batch {
            resource: page.resource,
            company_id: page.company_id,
            project_id: page.project_id,
            ids: Vec::with_capacity(rows.len()),
            names: Vec::with_capacity(rows.len()),
            statuses: Vec::with_capacity(rows.len()),
            updated: Vec::with_capacity(rows.len()),
            data: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            b.ids.push(row.procore_id);
            b.names.push(row.name);
            b.statuses.push(row.status);
            b.updated.push(row.updated_at);
            b.data.push(row.data);
        }
        out.push(b);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Sync workers while a cycle runs: users in flight, requests/s, CPU and memory
// ---------------------------------------------------------------------------------------

/// One look at the queue and at the live sync workers.
#[derive(Debug, Default, Clone)]
struct FleetSample {
    queue: QueueCounts,
    /// Queue rows a worker holds (`processing` with its pid): the users in flight.
    in_flight: i64,
    /// Rows of `procore_sync_progress`: the users in flight as the workers report them.
    progress_rows: i64,
    /// Records written so far: by completed items, and by items in flight (their progress).
    records: i64,
    /// Each live sync worker's pid and how many users it holds.
    per_worker: Vec<(i32, i64)>,
}

fn fleet_sample(client: &mut postgres::Client) -> Result<FleetSample> {
    // `processing` without a pid is an item claimed for the pool that no worker took yet.
    let row = client.query_one(
        "SELECT count(*) FILTER (WHERE status IN ('pending', 'processing')),
                count(*) FILTER (WHERE status = 'completed'),
                count(*) FILTER (WHERE status = 'failed'),
                count(*) FILTER (WHERE status = 'processing' AND worker_pid IS NOT NULL),
                (SELECT count(*) FROM procore_sync_progress),
                (coalesce(sum(records_written) FILTER (WHERE status = 'completed'), 0)
                 + (SELECT coalesce(sum(records), 0) FROM procore_sync_progress))::bigint
         FROM procore_sync_queue",
        &[],
    )?;
    let per_worker = client
        .query(
            "SELECT a.pid, count(q.id) FROM pg_stat_activity a
             LEFT JOIN procore_sync_queue q ON q.worker_pid = a.pid AND q.status = 'processing'
             WHERE a.backend_type = $1 GROUP BY a.pid ORDER BY a.pid",
            &[&SYNC_WORKER_TYPE],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(FleetSample {
        queue: QueueCounts {
            open: row.get(0),
            completed: row.get(1),
            failed: row.get(2),
        },
        in_flight: row.get(3),
        progress_rows: row.get(4),
        records: row.get(5),
        per_worker,
    })
}

/// One point of a cycle's timeline, about a second after the previous one.
#[derive(Debug, Clone)]
struct TimelinePoint {
    secs: f64,
    /// API requests the stand-in answered since the cycle started.
    requests: i64,
    in_flight: i64,
    progress_rows: i64,
    /// Users completed or failed.
    done: i64,
    per_worker: Vec<(i32, i64)>,
}

/// What `/proc` says of one sync worker: CPU so far (utime + stime, whole thread group) and
/// its peak resident set.
#[derive(Debug, Default, Clone, Copy)]
struct WorkerUsage {
    cpu_ticks: u64,
    hwm_kb: u64,
}

/// Watches a cycle: each look reads the queue, the live sync workers and their `/proc`
/// entries; about once a second it also reads the stand-in's request counter for the
/// timeline. Worker pids are kept after their process exits, with the last values read.
struct FleetWatch {
    t0: Instant,
    requests0: i64,
    workers: BTreeMap<i32, WorkerUsage>,
    /// (seconds since the start, users in flight) of every look.
    in_flight: Vec<(f64, i64)>,
    peak_in_flight: i64,
    peak_per_worker: i64,
    timeline: Vec<TimelinePoint>,
    next_point: f64,
}

impl FleetWatch {
    fn start(standin: &Standin) -> Result<FleetWatch> {
        let requests0 = api_requests(standin)?;
        Ok(FleetWatch {
            t0: Instant::now(),
            requests0,
            workers: BTreeMap::new(),
            in_flight: Vec::new(),
            peak_in_flight: 0,
            peak_per_worker: 0,
            timeline: vec![TimelinePoint {
                secs: 0.0,
                requests: 0,
                in_flight: 0,
                progress_rows: 0,
                done: 0,
                per_worker: Vec::new(),
            }],
            next_point: 1.0,
        })
    }

    fn secs(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn look(&mut self, client: &mut postgres::Client, standin: &Standin) -> Result<FleetSample> {
        let s = fleet_sample(client)?;
        let secs = self.secs();
        for &(pid, _) in &s.per_worker {
            self.workers.entry(pid).or_default();
        }
        self.read_workers();
        self.peak_in_flight = self.peak_in_flight.max(s.in_flight);
        let busiest = s.per_worker.iter().map(|w| w.1).max().unwrap_or(0);
        self.peak_per_worker = self.peak_per_worker.max(busiest);
        self.in_flight.push((secs, s.in_flight));
        // The last look of a cycle (queue empty) always ends the timeline.
        if secs >= self.next_point || s.queue.open == 0 {
            self.next_point = secs.floor() + 1.0;
            self.timeline.push(TimelinePoint {
                secs,
                requests: api_requests(standin)? - self.requests0,
                in_flight: s.in_flight,
                progress_rows: s.progress_rows,
                done: s.queue.completed + s.queue.failed,
                per_worker: s.per_worker.clone(),
            });
        }
        Ok(s)
    }

    /// Reads `/proc` of every worker seen so far; one that exited keeps its last values.
    fn read_workers(&mut self) {
        for (&pid, usage) in self.workers.iter_mut() {
            if let Ok(ticks) = cpu_ticks(pid) {
                usage.cpu_ticks = usage.cpu_ticks.max(ticks);
            }
            if let Some(m) = read_mem(pid) {
                usage.hwm_kb = usage.hwm_kb.max(m.hwm_kb);
            }
        }
    }

    /// After the queue emptied: reads the workers until they exit (pool workers do after a
    /// few idle seconds), so their CPU is counted to the end. False if some outlived
    /// `timeout`; their CPU then stops at the last read.
    fn until_workers_exit(&mut self, bench: &BenchEnv, timeout: Duration) -> Result<bool> {
        let mut client = bench.client()?;
        let start = Instant::now();
        loop {
            let live = bench.backend_pids(&mut client, SYNC_WORKER_TYPE)?;
            for &pid in &live {
                self.workers.entry(pid).or_default();
            }
            self.read_workers();
            if live.is_empty() {
                return Ok(true);
            }
            if start.elapsed() > timeout {
                return Ok(false);
            }
            check_stop()?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cpu_secs(&self) -> f64 {
        self.workers.values().map(|u| u.cpu_ticks).sum::<u64>() as f64 / clock_ticks_per_second()
    }

    fn peak_hwm_kb(&self) -> u64 {
        self.workers.values().map(|u| u.hwm_kb).max().unwrap_or(0)
    }

    /// Mean users in flight over the looks up to `until` seconds.
    fn mean_in_flight(&self, until: f64) -> f64 {
        let v: Vec<i64> = self
            .in_flight
            .iter()
            .filter(|(t, _)| *t <= until)
            .map(|(_, n)| *n)
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<i64>() as f64 / v.len() as f64
        }
    }
}

/// The timeline as text, one line per bucket of whole points (at most `max_lines`):
/// requests/s over the bucket with a bar, mean users in flight in all and per worker pid.
fn timeline_text(points: &[TimelinePoint], max_lines: usize) -> String {
    if points.len() < 2 {
        return "    (shorter than a second: no timeline)\n".into();
    }
    let per_bucket = (points.len() - 1).div_ceil(max_lines.max(1)).max(1);
    struct Line {
        secs: f64,
        rps: f64,
        in_flight: f64,
        per_worker: Vec<(i32, f64)>,
        done: i64,
    }
    let mut lines = Vec::new();
    let mut start = 0;
    while start + 1 < points.len() {
        let end = (start + per_bucket).min(points.len() - 1);
        let (a, b) = (&points[start], &points[end]);
        let bucket = &points[start + 1..=end];
        let mut by_pid: BTreeMap<i32, (i64, usize)> = BTreeMap::new();
        for p in bucket {
            for &(pid, n) in &p.per_worker {
                let e = by_pid.entry(pid).or_default();
                e.0 += n;
                e.1 += 1;
            }
        }
        lines.push(Line {
            secs: b.secs,
            rps: (b.requests - a.requests) as f64 / (b.secs - a.secs).max(1e-9),
            in_flight: bucket.iter().map(|p| p.in_flight).sum::<i64>() as f64 / bucket.len() as f64,
            // Averaged over the whole bucket: a worker present in part of it counts 0 elsewhere.
            per_worker: by_pid
                .into_iter()
                .map(|(pid, (sum, _))| (pid, sum as f64 / bucket.len() as f64))
                .collect(),
            done: b.done,
        });
        start = end;
    }
    let top = lines.iter().map(|l| l.rps).fold(1e-9, f64::max);
    let mut out = format!(
        "    {:>6} {:>8} {:<30} {:>9} {:>7}  users in flight per worker (pid:users), mean over {} s\n",
        "t", "req/s", "", "in flight", "done", per_bucket
    );
    for l in &lines {
        let bar = "#".repeat(((l.rps / top) * 30.0).round() as usize);
        let workers = l
            .per_worker
            .iter()
            .map(|(pid, n)| format!("{pid}:{n:.0}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "    {:>5.0}s {:>8.1} {:<30} {:>9.0} {:>7}  {workers}",
            l.secs, l.rps, bar, l.in_flight, l.done
        );
    }
    out
}

fn timeline_csv(cases: &[W2Timeline]) -> String {
    let mut out = String::from(
        "case,secs,requests,req_per_s,in_flight,progress_rows,done,workers,per_worker\n",
    );
    for case in cases {
        for w in case.points.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let per_worker = b
                .per_worker
                .iter()
                .map(|(pid, n)| format!("{pid}:{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            let _ = writeln!(
                out,
                "\"{}\",{:.2},{},{:.1},{},{},{},{},{per_worker}",
                case.label,
                b.secs,
                b.requests,
                (b.requests - a.requests) as f64 / (b.secs - a.secs).max(1e-9),
                b.in_flight,
                b.progress_rows,
                b.done,
                b.per_worker.len()
            );
        }
    }
    out
}

/// `procore_sync.users_per_worker` as a fresh session sees it; None where the build does
/// not define it (a placeholder nobody set reads as NULL).
fn users_per_worker_setting(client: &mut postgres::Client) -> Result<Option<u32>> {
    let v: Option<String> = client
        .query_one(
            "SELECT current_setting('procore_sync.users_per_worker', true)",
            &[],
        )?
        .get(0);
    Ok(v.and_then(|s| s.trim().parse().ok()))
}

// ---------------------------------------------------------------------------------------
// W2: many users
// ---------------------------------------------------------------------------------------

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

    /// The issue's targets, for the shipped settings: 50 ms under 2 min, 200 ms under 5.
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

/// A cycle's samples, kept for the CSV and the chart.
struct W2Timeline {
    label: String,
    points: Vec<TimelinePoint>,
}

fn w2_many_users(cfg: &Config, lib: &LibDir, perf: bool, results: &mut Results) -> Result<()> {
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
    connect_users(&bench, n)?;
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

// ---------------------------------------------------------------------------------------
// W3: one huge resource, the worker's memory
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
    anon_kb: u64,
    shmem_kb: u64,
}

fn read_mem(pid: i32) -> Option<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Some(Mem {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
        anon_kb: field("RssAnon:"),
        shmem_kb: field("RssShmem:"),
    })
}

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
    client.execute(
        "UPDATE procore_sync_resource SET per_page = $1,
                enabled = name IN ('companies', 'projects', 'rfis')",
        &[&(cfg.w3_per_page as i32)],
    )?;
    connect_users(&bench, 1)?;
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
            "SELECT count(*) FROM procore_records WHERE resource = 'rfis'",
            &[],
        )?
        .get(0);
    if stored as u64 != total {
        bail!("stored {stored} RFIs, expected {total}");
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

fn w3_huge_resource(cfg: &Config, lib: &LibDir, perf: bool, results: &mut Results) -> Result<()> {
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
    let run = w3_sync(cfg, lib, world.clone(), total, false)?;
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
        let again = w3_sync(cfg, lib, world, total, true)?;
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
    connect_users(&bench, u64::from(slots))?;
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

// ---------------------------------------------------------------------------------------
// W4: idle
// ---------------------------------------------------------------------------------------

fn cpu_ticks(pid: i32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow!("bad stat"))? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state(3) ... utime(14) stime(15).
    let utime: u64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0);
    let stime: u64 = f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
}

/// CPU time in nanoseconds from `/proc/<pid>/schedstat` (exact, where the kernel has it).
fn cpu_nanos(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

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

fn w4_idle(cfg: &Config, lib: &LibDir, perf: bool, results: &mut Results) -> Result<()> {
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

// ---------------------------------------------------------------------------------------
// W5: one big user, several of its listings at once
// ---------------------------------------------------------------------------------------

/// One W5 cycle: one user's full first sync.
struct W5Run {
    secs: f64,
    requests: i64,
    /// The most API requests that reached the stand-in within one latency of each other
    /// (each is held that long, so they were out at the same time); None at latency 0.
    peak_at_once: Option<usize>,
}

fn w5_one_big_user(cfg: &Config, lib: &LibDir, results: &mut Results) -> Result<()> {
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
    connect_users(&bench, 1)?;
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

// ---------------------------------------------------------------------------------------
// The chart
// ---------------------------------------------------------------------------------------

fn draw_chart(path: &Path, data: &ChartData, machine: &str, quick: bool) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let font = FONT_CANDIDATES
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or_else(|| anyhow!("no DejaVuSans.ttf (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("DejaVuSans.ttf is not a usable font"))?;
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the chart: {e:?}");

    let root = BitMapBackend::new(path, (1400, 1500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            &format!(
                "procore_sync benchmarks{} - {machine}",
                if quick { " (quick sizes)" } else { "" }
            ),
            ("sans-serif", 24),
        )
        .map_err(err)?;
    let panels = root.split_evenly((3, 2));
    let label = ("sans-serif", 16);
    let caption = ("sans-serif", 20);
    let blue = RGBColor(52, 101, 164);
    let orange = RGBColor(230, 126, 34);
    let green = RGBColor(46, 139, 87);
    let red = RGBColor(200, 40, 40);
    let centered =
        TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));

    // W1: bars.
    if let Some(w1) = data.w1 {
        let names = ["end to end", "database alone", "network alone"];
        let top = w1.iter().cloned().fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("W1 ingest: records/s (higher is better)", caption)
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d((0..2usize).into_segmented(), 0.0..top.max(1.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_style(label)
            .y_label_style(label)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).unwrap_or(&"").to_string(),
                _ => String::new(),
            })
            .draw()
            .map_err(err)?;
        let colors = [blue, orange, green];
        chart
            .draw_series(w1.iter().enumerate().map(|(i, v)| {
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    colors[i].filled(),
                );
                r.set_margin(0, 0, 30, 30);
                r
            }))
            .map_err(err)?;
        chart
            .draw_series(w1.iter().enumerate().map(|(i, v)| {
                Text::new(
                    format!("{:.0}", v),
                    (SegmentValue::CenterOf(i), *v * 1.02 + top * 0.01),
                    centered.clone(),
                )
            }))
            .map_err(err)?;
    }

    // W2: one cycle per setting, minutes, with each bar's target where it has one.
    if !data.w2.is_empty() {
        let n = data.w2.len();
        let top = data
            .w2
            .iter()
            .map(|b| (b.secs / 60.0).max(b.target_min.unwrap_or(0.0)))
            .fold(1.0, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(&panels[1])
            .caption("W2 many users: one cycle, minutes (red: target)", caption)
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
            .map_err(err)?;
        let labels: Vec<String> = data
            .w2
            .iter()
            .map(|b| format!("{}{}", b.label, if b.projected { " (proj.)" } else { "" }))
            .collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_style(("sans-serif", 13))
            .y_label_style(label)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(err)?;
        chart
            .draw_series(data.w2.iter().enumerate().map(|(i, b)| {
                let style = if b.projected {
                    blue.mix(0.35).filled()
                } else {
                    blue.filled()
                };
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), b.secs / 60.0),
                    ],
                    style,
                );
                r.set_margin(0, 0, 20, 20);
                r
            }))
            .map_err(err)?;
        chart
            .draw_series(data.w2.iter().enumerate().map(|(i, b)| {
                Text::new(
                    format!("{:.1}", b.secs / 60.0),
                    (SegmentValue::CenterOf(i), b.secs / 60.0 + top * 0.02),
                    centered.clone(),
                )
            }))
            .map_err(err)?;
        for (i, b) in data.w2.iter().enumerate() {
            if let Some(t) = b.target_min {
                chart
                    .draw_series(LineSeries::new(
                        vec![(SegmentValue::Exact(i), t), (SegmentValue::Exact(i + 1), t)],
                        red.stroke_width(2),
                    ))
                    .map_err(err)?;
            }
        }
    }

    // W2 over time: requests/s, and users in flight, one line per cycle.
    if !data.w2_timeline.is_empty() {
        let palette = [blue, orange, green, red, RGBColor(120, 80, 160), BLACK];
        type Line = Vec<(f64, f64)>;
        let series: Vec<(&str, Line, Line)> = data
            .w2_timeline
            .iter()
            .map(|c| {
                let rps = c
                    .points
                    .windows(2)
                    .map(|w| {
                        let dt = (w[1].secs - w[0].secs).max(1e-9);
                        (w[1].secs, (w[1].requests - w[0].requests) as f64 / dt)
                    })
                    .collect();
                let in_flight = c
                    .points
                    .iter()
                    .map(|p| (p.secs, p.in_flight as f64))
                    .collect();
                (c.label.as_str(), rps, in_flight)
            })
            .collect();
        let xmax = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        for (panel, title, pick) in [
            (&panels[2], "W2 over time: requests/s", 1usize),
            (&panels[3], "W2 over time: users in flight", 2),
        ] {
            let points = |s: &(&str, Line, Line)| {
                if pick == 1 {
                    s.1.clone()
                } else {
                    s.2.clone()
                }
            };
            let ymax = series
                .iter()
                .flat_map(|s| points(s).into_iter().map(|p| p.1))
                .fold(1.0, f64::max)
                * 1.15;
            let mut chart = ChartBuilder::on(panel)
                .caption(title, caption)
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..xmax * 1.02, 0.0..ymax)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("seconds since the cycle started")
                .x_label_style(label)
                .y_label_style(label)
                .axis_desc_style(label)
                .draw()
                .map_err(err)?;
            for (i, s) in series.iter().enumerate() {
                let color = palette[i % palette.len()];
                chart
                    .draw_series(LineSeries::new(points(s), color.stroke_width(2)))
                    .map_err(err)?
                    .label(s.0)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
        }
    }

    // W3: RSS against records synced, one user and every slot busy.
    if !data.w3.is_empty() || !data.w3_slots.is_empty() {
        let both = || data.w3.iter().chain(data.w3_slots.iter());
        let xmax = both().map(|s| s.0).fold(1.0, f64::max) / 1000.0;
        let ymax = both().map(|s| s.1.max(s.2)).fold(100.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&panels[4])
            .caption(
                "W3 one huge resource: worker memory, MB (target < 100)",
                caption,
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax * 1.02, 0.0..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("records synced (thousands)")
            .x_label_style(label)
            .y_label_style(label)
            .axis_desc_style(label)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                data.w3.iter().map(|s| (s.0 / 1000.0, s.1)),
                blue.stroke_width(2),
            ))
            .map_err(err)?
            .label("VmRSS")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(
                data.w3.iter().map(|s| (s.0 / 1000.0, s.2)),
                orange.stroke_width(2),
            ))
            .map_err(err)?
            .label("RssAnon (private)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(2))
            });
        if !data.w3_slots.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    data.w3_slots.iter().map(|s| (s.0 / 1000.0, s.1)),
                    green.stroke_width(2),
                ))
                .map_err(err)?
                .label("VmRSS, every slot busy")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], green.stroke_width(2))
                });
            chart
                .draw_series(LineSeries::new(
                    data.w3_slots.iter().map(|s| (s.0 / 1000.0, s.2)),
                    green.mix(0.5).stroke_width(2),
                ))
                .map_err(err)?
                .label("RssAnon, every slot busy")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], green.mix(0.5).stroke_width(2))
                });
        }
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 100.0), (xmax * 1.02, 100.0)],
                red.stroke_width(2),
            ))
            .map_err(err)?
            .label("target")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
        chart
            .configure_series_labels()
            .label_font(label)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::MiddleRight)
            .draw()
            .map_err(err)?;
    }

    // W4: lateness of each run.
    if !data.w4.is_empty() {
        let xmax = data.w4.iter().map(|s| s.0).fold(1.0, f64::max);
        let ymax = data
            .w4
            .iter()
            .map(|s| s.1.max(if s.2.is_finite() { s.2 } else { 0.0 }))
            .fold(10.0, f64::max)
            * 1.2;
        let ymin = data.w4.iter().map(|s| s.1.min(0.0)).fold(0.0, f64::min) * 1.2;
        let mut chart = ChartBuilder::on(&panels[5])
            .caption(
                "W4 idle: lateness of each 'N seconds' run, ms (target < 1000)",
                caption,
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax * 1.02, ymin..ymax)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the first run")
            .x_label_style(label)
            .y_label_style(label)
            .axis_desc_style(label)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(
                data.w4
                    .iter()
                    .map(|s| Circle::new((s.0, s.1), 4, blue.filled())),
            )
            .map_err(err)?
            .label("start_time")
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, blue.filled()));
        chart
            .draw_series(
                data.w4
                    .iter()
                    .filter(|s| s.2.is_finite())
                    .map(|s| Circle::new((s.0, s.2), 4, orange.filled())),
            )
            .map_err(err)?
            .label("command ran")
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, orange.filled()));
        chart
            .configure_series_labels()
            .label_font(label)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// perf data files are large; `BENCH_KEEP_PERF=1` keeps them for a closer look.
fn remove_perf_data(path: &Path) {
    if std::env::var("BENCH_KEEP_PERF").is_ok_and(|v| v == "1") {
        println!("    (perf data kept: {})", path.display());
    } else {
        let _ = std::fs::remove_file(path);
    }
}
