//! The settings: `bench --help` lists the sizes; every flag also reads from `BENCH_<FLAG>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

/// The stand-in caps a scope at this many records (ids stay below 2^53).
pub const MAX_RECORDS_PER_SCOPE: u64 = 99_999;

/// The shipped defaults of `procore_sync.max_workers` and `procore_sync.users_per_worker`.
pub const DEFAULT_MAX_WORKERS: u32 = 4;
const DEFAULT_USERS_PER_WORKER: u32 = 64;
/// `procore_sync.users_per_worker` accepts 1..=1024.
const MAX_USERS_PER_WORKER: u32 = 1024;
/// `procore_sync.listings_per_user` accepts 1..=16.
const MAX_LISTINGS_PER_USER: u32 = 16;
/// The stand-in caps a company at this many projects.
const MAX_PROJECTS_PER_COMPANY: u64 = 999;
/// Every workload, in the order they run.
pub const WORKLOADS: [&str; 5] = ["w1", "w2", "w3", "w4", "w5"];

/// When the profilers (pg_stat_statements, perf) run: they cost a little, so by default
/// only in an extra pass after a missed target, never during the measured one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileMode {
    Off,
    Missed,
    All,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub quick: bool,
    pub only: BTreeSet<String>,
    pub out_dir: PathBuf,
    pub extension_so: PathBuf,
    pub profile: ProfileMode,
    pub w1_users: u64,
    pub w1_companies: u64,
    pub w1_projects: u64,
    pub w1_records: u64,
    pub w1_per_page: u64,
    pub w1_workers: u32,
    pub w2_users: u64,
    pub w2_projects: u64,
    pub w2_records: u64,
    pub w2_latency_ms: Vec<u64>,
    pub w2_rate_hour: u64,
    pub w2_workers: Vec<u32>,
    /// `None`: the setting left at the server's default.
    pub w2_users_per_worker: Vec<Option<u32>>,
    pub w2_sample_secs: u64,
    pub w2_stop_secs: u64,
    pub w3_records: u64,
    pub w3_per_page: u64,
    pub w3_slots: u32,
    pub w3_slot_records: u64,
    pub w4_secs: u64,
    pub w4_interval: u64,
    pub w5_projects: u64,
    pub w5_records: u64,
    pub w5_latency_ms: u64,
    pub w5_listings: Vec<u32>,
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

pub struct Args {
    pub flags: BTreeMap<String, String>,
}

impl Args {
    pub fn parse() -> Result<Option<Args>> {
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

    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T>
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
    pub fn list<T: std::str::FromStr>(&self, name: &str, default: &str) -> Result<Vec<T>>
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
    pub fn from_args(args: &Args) -> Result<Config> {
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
