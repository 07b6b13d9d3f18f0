//! The settings: `bench --help` lists the sizes; every flag also reads from `BENCH_<FLAG>`.
//!
//! [`Args`] is what the command line and the environment say, [`Config`] what the workloads
//! run with: `--quick`'s smaller sizes filled in where no size was given, and checked.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Result};
use clap::{CommandFactory, Parser, ValueEnum};

/// The stand-in caps a scope at this many records (ids stay below 2^53).
pub const MAX_RECORDS_PER_SCOPE: u64 = 99_999;

/// The shipped defaults of `procore_sync.max_workers` and `procore_sync.users_per_worker`.
pub const DEFAULT_MAX_WORKERS: u32 = 4;
const DEFAULT_USERS_PER_WORKER: u32 = 64;
/// `procore_sync.users_per_worker` accepts 1..=1024.
const MAX_USERS_PER_WORKER: u32 = 1024;
/// `procore_sync.listings_per_user` accepts 1..=16.
const MAX_LISTINGS_PER_USER: u32 = 16;
/// The stand-in caps a world at this many users.
const MAX_USERS: u64 = 90_000;
/// The stand-in caps a company at this many projects.
const MAX_PROJECTS_PER_COMPANY: u64 = 999;
/// Every workload, in the order they run.
pub const WORKLOADS: [&str; 6] = ["w1", "w2", "w3", "w4", "w5", "w6"];

/// When the profilers (pg_stat_statements, perf) run: they cost a little, so by default
/// only in an extra pass after a missed target, never during the measured one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProfileMode {
    // The aliases are the yes/no spellings the bench took before it had named modes.
    #[value(alias = "0", alias = "no", alias = "false")]
    Off,
    Missed,
    #[value(alias = "1", alias = "yes", alias = "true")]
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
    pub w3_tree_projects: u64,
    pub w4_secs: u64,
    pub w4_interval: u64,
    pub w5_projects: u64,
    pub w5_records: u64,
    pub w5_latency_ms: u64,
    pub w5_listings: Vec<u32>,
    pub w6_changes: u64,
    pub w6_cold_changes: u64,
    pub w6_busy_users: u64,
    pub w6_latency_ms: u64,
    pub w6_burst: u64,
    pub w6_concurrency: u32,
}

const AFTER_HELP: &str = "\
Every flag can also be given as an environment variable BENCH_<FLAG> (upper case,
dashes as underscores), e.g. BENCH_W2_USERS=2000; an empty one counts as unset.
Flags win over the environment, and sizes given either way win over --quick's.
A list is comma-separated, and one value is a list of one.";

/// The flags. Sizes that `--quick` makes smaller are `Option`s: a size given on the command
/// line or in the environment wins over `--quick`'s.
#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "How fast a sync cycle is, against the ceilings, in one run (`make bench`)",
    after_help = AFTER_HELP,
    // A flag given twice takes its last value, as it always has.
    args_override_self = true,
    // Help under each flag: without clap's `wrap_help` (another dependency) nothing wraps it.
    next_line_help = true
)]
pub struct Args {
    /// Small sizes, W4 for 60 s: a couple of minutes, for development;
    /// `--quick=0` (or `false`, `no`) is off
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_QUICK",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = switch,
        action = clap::ArgAction::Set
    )]
    quick: bool,

    /// Run only these workloads
    #[arg(
        long,
        env = "BENCH_ONLY",
        value_name = "LIST",
        default_value = "w1,w2,w3,w4,w5,w6"
    )]
    only: String,

    /// When pg_stat_statements and perf (if it works here) watch:
    /// `missed` = after a missed W1, W3 or W4 target, in an extra pass on a fresh cluster,
    /// never during the measured one; `all` (plain --profile) = also during W1's and W2's
    /// cycles; `off`
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_PROFILE",
        value_enum,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_value = "missed",
        default_missing_value = "all"
    )]
    profile: ProfileMode,

    /// Where results.csv, results.md and chart.png go
    #[arg(long, env = "BENCH_OUT", value_name = "DIR",
          default_value_os_t = workspace_dir().join("target/bench"))]
    out: PathBuf,

    /// The release build to benchmark
    #[arg(long, env = "BENCH_EXTENSION_SO", value_name = "PATH",
          default_value_os_t = default_extension_so(&workspace_dir()))]
    extension_so: PathBuf,

    /// Users [default: 50, 10 with --quick]
    #[arg(
        long,
        env = "BENCH_W1_USERS",
        value_name = "N",
        help_heading = "W1 ingest"
    )]
    w1_users: Option<u64>,
    /// Companies per user
    #[arg(
        long,
        env = "BENCH_W1_COMPANIES",
        value_name = "N",
        default_value_t = 2,
        help_heading = "W1 ingest"
    )]
    w1_companies: u64,
    /// Projects per company [default: 10, 5 with --quick]
    #[arg(
        long,
        env = "BENCH_W1_PROJECTS",
        value_name = "N",
        help_heading = "W1 ingest"
    )]
    w1_projects: Option<u64>,
    /// Records per resource, every catalog resource [default: 82, 40 with --quick]
    #[arg(
        long,
        env = "BENCH_W1_RECORDS",
        value_name = "N",
        help_heading = "W1 ingest"
    )]
    w1_records: Option<u64>,
    /// Records per page (the catalog's per_page)
    #[arg(
        long,
        env = "BENCH_W1_PER_PAGE",
        value_name = "N",
        default_value_t = 100,
        help_heading = "W1 ingest"
    )]
    w1_per_page: u64,
    /// procore_sync.max_workers, and the network ceiling's threads
    #[arg(
        long,
        env = "BENCH_W1_WORKERS",
        value_name = "N",
        default_value_t = 4,
        help_heading = "W1 ingest"
    )]
    w1_workers: u32,

    /// Users, each with 1 company [default: 10000, 100 with --quick]
    #[arg(
        long,
        env = "BENCH_W2_USERS",
        value_name = "N",
        help_heading = "W2 many users"
    )]
    w2_users: Option<u64>,
    /// Projects per company, each with RFIs and submittals
    #[arg(
        long,
        env = "BENCH_W2_PROJECTS",
        value_name = "N",
        default_value_t = 2,
        help_heading = "W2 many users"
    )]
    w2_projects: u64,
    /// Records per resource
    #[arg(
        long,
        env = "BENCH_W2_RECORDS",
        value_name = "N",
        default_value_t = 20,
        help_heading = "W2 many users"
    )]
    w2_records: u64,
    /// The stand-in's latency per request, a list: one stand-in (and cluster) per latency
    #[arg(
        long,
        env = "BENCH_W2_LATENCY_MS",
        value_name = "LIST",
        default_value = "50,200",
        help_heading = "W2 many users"
    )]
    w2_latency_ms: List<u64>,
    /// The stand-in's rate limit per token and hour
    #[arg(
        long,
        env = "BENCH_W2_RATE_HOUR",
        value_name = "N",
        default_value_t = 3600,
        help_heading = "W2 many users"
    )]
    w2_rate_hour: u64,
    /// procore_sync.max_workers, a list (`1,4,8,16` for the old sweep)
    #[arg(
        long,
        env = "BENCH_W2_WORKERS",
        value_name = "LIST",
        default_value = "4",
        help_heading = "W2 many users"
    )]
    w2_workers: List<u32>,
    /// procore_sync.users_per_worker, a list of 1..1024 or `default` (left unset: the
    /// server's default). One cycle per latency x workers x users-per-worker; the defaults
    /// are the shipped settings at 50 and 200 ms
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_W2_USERS_PER_WORKER",
        value_name = "LIST",
        default_value = "default",
        help_heading = "W2 many users"
    )]
    w2_users_per_worker: List<UsersPerWorker>,
    /// A cycle still projected past --w2-stop-secs after this many seconds is stopped
    /// there and its time projected from its rate [default: 120, 10 with --quick]
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_W2_SAMPLE_SECS",
        value_name = "SECS",
        help_heading = "W2 many users"
    )]
    w2_sample_secs: Option<u64>,
    /// See --w2-sample-secs [default: 720, 20 with --quick]
    #[arg(
        long,
        env = "BENCH_W2_STOP_SECS",
        value_name = "SECS",
        help_heading = "W2 many users"
    )]
    w2_stop_secs: Option<u64>,

    /// RFIs of one user, read by one worker (split over projects past 99,999)
    /// [default: 200000, 20000 with --quick]
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_W3_RECORDS",
        value_name = "N",
        help_heading = "W3 one huge resource"
    )]
    w3_records: Option<u64>,
    /// Records per page
    #[arg(
        long,
        env = "BENCH_W3_PER_PAGE",
        value_name = "N",
        default_value_t = 100,
        help_heading = "W3 one huge resource"
    )]
    w3_per_page: u64,
    /// Then that many users, each with one project of --w3-slot-records RFIs, synced at
    /// once by one worker (max_workers 1, users_per_worker = slots): its peak RSS with
    /// every slot busy; 0: skip
    #[arg(verbatim_doc_comment, long, env = "BENCH_W3_SLOTS", value_name = "N",
          default_value_t = DEFAULT_USERS_PER_WORKER, help_heading = "W3 one huge resource")]
    w3_slots: u32,
    /// RFIs of each of those users [default: 15000, 1500 with --quick]
    #[arg(
        long,
        env = "BENCH_W3_SLOT_RECORDS",
        value_name = "N",
        help_heading = "W3 one huge resource"
    )]
    w3_slot_records: Option<u64>,
    /// Then one user with that many projects x 20 drawing areas x 200 drawings (child
    /// listings, one per area): the worker's peak RSS on a tree; 0: skip
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_W3_TREE_PROJECTS",
        value_name = "N",
        default_value_t = 50,
        help_heading = "W3 one huge resource"
    )]
    w3_tree_projects: u64,

    /// Seconds in all: half idle, half with the 'N seconds' job [default: 300, 60 with --quick]
    #[arg(
        long,
        env = "BENCH_W4_SECS",
        value_name = "SECS",
        help_heading = "W4 idle"
    )]
    w4_secs: Option<u64>,
    /// N of the 'N seconds' job, 1..59
    #[arg(
        long,
        env = "BENCH_W4_INTERVAL",
        value_name = "N",
        default_value_t = 5,
        help_heading = "W4 idle"
    )]
    w4_interval: u64,

    /// Projects of the one user (1 company, RFIs and submittals each; rate limits out
    /// of the way, max_workers 1), 1..999 [default: 200, 50 with --quick]
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_W5_PROJECTS",
        value_name = "N",
        help_heading = "W5 one big user"
    )]
    w5_projects: Option<u64>,
    /// Records per resource
    #[arg(
        long,
        env = "BENCH_W5_RECORDS",
        value_name = "N",
        default_value_t = 20,
        help_heading = "W5 one big user"
    )]
    w5_records: u64,
    /// The stand-in's latency per request
    #[arg(
        long,
        env = "BENCH_W5_LATENCY_MS",
        value_name = "MS",
        default_value_t = 200,
        help_heading = "W5 one big user"
    )]
    w5_latency_ms: u64,
    /// procore_sync.listings_per_user, a list of 1..16: one full first sync per value,
    /// each on a fresh cluster, with its speed-up against 1
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_W5_LISTINGS",
        value_name = "LIST",
        default_value = "1,4,8",
        help_heading = "W5 one big user"
    )]
    w5_listings: List<u32>,

    /// Changes (RFI edits) timed from the stand-in to their row, with the fleet idle and
    /// again while full sync cycles run [default: 300, 50 with --quick]
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_W6_CHANGES",
        value_name = "N",
        help_heading = "W6 webhooks"
    )]
    w6_changes: Option<u64>,
    /// Changes each made once no sync worker runs, so that its event starts one
    /// [default: 30, 10 with --quick]
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_W6_COLD_CHANGES",
        value_name = "N",
        help_heading = "W6 webhooks"
    )]
    w6_cold_changes: Option<u64>,
    /// Users whose full passes run back to back during the second set of changes
    /// [default: 500, 50 with --quick]
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_W6_BUSY_USERS",
        value_name = "N",
        help_heading = "W6 webhooks"
    )]
    w6_busy_users: Option<u64>,
    /// The stand-in's latency per request (the record reads and the syncs)
    #[arg(
        long,
        env = "BENCH_W6_LATENCY_MS",
        value_name = "MS",
        default_value_t = 50,
        help_heading = "W6 webhooks"
    )]
    w6_latency_ms: u64,
    /// Synthetic deliveries POSTed at once to measure how many a second are recorded
    /// [default: 10000, 2000 with --quick]
    #[arg(
        verbatim_doc_comment,
        long,
        env = "BENCH_W6_BURST",
        value_name = "N",
        help_heading = "W6 webhooks"
    )]
    w6_burst: Option<u64>,
    /// Threads POSTing the burst
    #[arg(
        long,
        env = "BENCH_W6_CONCURRENCY",
        value_name = "N",
        default_value_t = 16,
        help_heading = "W6 webhooks"
    )]
    w6_concurrency: u32,
}

/// The command line and the `BENCH_*` environment; exits on `--help` and on a bad flag.
pub fn parse() -> Args {
    unset_empty_env();
    Args::parse()
}

/// clap reads an empty variable as an empty value, which no size parses; the bench has
/// always taken `BENCH_X=` as unset, so those are removed before clap reads them.
fn unset_empty_env() {
    for arg in Args::command().get_arguments() {
        if let Some(name) = arg.get_env() {
            if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
                std::env::remove_var(name);
            }
        }
    }
}

/// `--quick`'s value: anything but `0`, `false` and `no` turns it on, as before clap.
fn switch(s: &str) -> Result<bool, std::convert::Infallible> {
    Ok(!matches!(s, "0" | "false" | "no"))
}

/// A comma-separated list; one value is a list of one, so `--w2-latency-ms 50` and
/// `BENCH_W2_WORKERS=8` read as before. Spaces around the commas are ignored.
#[derive(Clone, Debug)]
pub struct List<T>(pub Vec<T>);

impl<T: FromStr> FromStr for List<T>
where
    T::Err: Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<T>().map_err(|e| format!("{s:?}: {e}")))
            .collect::<Result<_, _>>()
            .map(List)
    }
}

/// One value of `--w2-users-per-worker`: a number, or `default` for the setting left unset.
#[derive(Clone, Copy, Debug)]
pub struct UsersPerWorker(Option<u32>);

impl FromStr for UsersPerWorker {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(UsersPerWorker(None)),
            n => n.parse().map(|n| UsersPerWorker(Some(n))),
        }
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
    pub fn from_args(args: Args) -> Result<Config> {
        let quick = args.quick;
        let q = |given: Option<u64>, full: u64, small: u64| {
            given.unwrap_or(if quick { small } else { full })
        };
        let only: BTreeSet<String> = args
            .only
            .split(',')
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        for w in &only {
            if !WORKLOADS.contains(&w.as_str()) {
                bail!("--only: unknown workload {w:?}");
            }
        }
        let cfg = Config {
            quick,
            only,
            out_dir: args.out,
            extension_so: args.extension_so,
            profile: args.profile,
            w1_users: q(args.w1_users, 50, 10),
            w1_companies: args.w1_companies,
            w1_projects: q(args.w1_projects, 10, 5),
            w1_records: q(args.w1_records, 82, 40),
            w1_per_page: args.w1_per_page,
            w1_workers: args.w1_workers,
            w2_users: q(args.w2_users, 10_000, 100),
            w2_projects: args.w2_projects,
            w2_records: args.w2_records,
            w2_latency_ms: args.w2_latency_ms.0,
            w2_rate_hour: args.w2_rate_hour,
            w2_workers: args.w2_workers.0,
            w2_users_per_worker: args.w2_users_per_worker.0.iter().map(|u| u.0).collect(),
            w2_sample_secs: q(args.w2_sample_secs, 120, 10),
            w2_stop_secs: q(args.w2_stop_secs, 720, 20),
            w3_records: q(args.w3_records, 200_000, 20_000),
            w3_per_page: args.w3_per_page,
            w3_slots: args.w3_slots,
            w3_slot_records: q(args.w3_slot_records, 15_000, 1_500),
            w3_tree_projects: args.w3_tree_projects,
            w4_secs: q(args.w4_secs, 300, 60),
            w4_interval: args.w4_interval,
            w5_projects: q(args.w5_projects, 200, 50),
            w5_records: args.w5_records,
            w5_latency_ms: args.w5_latency_ms,
            w5_listings: args.w5_listings.0,
            w6_changes: q(args.w6_changes, 300, 50),
            w6_cold_changes: q(args.w6_cold_changes, 30, 10),
            w6_busy_users: q(args.w6_busy_users, 500, 50),
            w6_latency_ms: args.w6_latency_ms,
            w6_burst: q(args.w6_burst, 10_000, 2_000),
            w6_concurrency: args.w6_concurrency,
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
        if cfg.w6_changes == 0
            || cfg.w6_cold_changes == 0
            || cfg.w6_burst == 0
            || cfg.w6_concurrency == 0
        {
            bail!(
                "--w6-changes, --w6-cold-changes, --w6-burst and --w6-concurrency must be positive"
            );
        }
        if cfg.w6_busy_users + 1 > MAX_USERS {
            bail!("--w6-busy-users must be below {MAX_USERS} (the stand-in's cap on users)");
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// The flags of the hand-written parser clap replaced, word for word.
    const FLAGS_BEFORE_CLAP: [&str; 30] = [
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

    /// The flags added since, each with its `BENCH_` variable too.
    const FLAGS_SINCE_CLAP: [&str; 7] = [
        "w3-tree-projects",
        "w6-changes",
        "w6-cold-changes",
        "w6-busy-users",
        "w6-latency-ms",
        "w6-burst",
        "w6-concurrency",
    ];

    /// clap reads the environment when it builds the command: tests that set variables and
    /// parse run one at a time, each from an environment without `BENCH_*`.
    static ENV: Mutex<()> = Mutex::new(());

    fn config(env: &[(&str, &str)], argv: &[&str]) -> Result<Config> {
        let _one_at_a_time = ENV.lock().unwrap_or_else(|e| e.into_inner());
        for (name, _) in std::env::vars() {
            if name.starts_with("BENCH_") {
                std::env::remove_var(name);
            }
        }
        for (name, value) in env {
            std::env::set_var(name, value);
        }
        unset_empty_env();
        let parsed = Args::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()));
        for (name, _) in env {
            std::env::remove_var(name);
        }
        Config::from_args(parsed?)
    }

    #[test]
    fn the_flags_are_the_ones_before_clap_each_with_its_bench_variable() {
        let command = Args::command();
        let mut flags = BTreeSet::new();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let env = format!("BENCH_{}", long.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(env.as_str()),
                "--{long}"
            );
            flags.insert(long.to_string());
        }
        assert_eq!(
            flags,
            FLAGS_BEFORE_CLAP
                .iter()
                .chain(&FLAGS_SINCE_CLAP)
                .map(|f| f.to_string())
                .collect()
        );
    }

    #[test]
    fn the_environment_fills_what_the_command_line_leaves() {
        let cfg = config(
            &[
                ("BENCH_W2_USERS", "123"),
                ("BENCH_W2_LATENCY_MS", "200"),
                ("BENCH_W2_USERS_PER_WORKER", " 16, default "),
                ("BENCH_ONLY", "W2"),
                ("BENCH_PROFILE", "0"),
                ("BENCH_W5_LISTINGS", "2"),
                ("BENCH_W4_SECS", "100"),
                // Empty: unset, as before clap.
                ("BENCH_W1_USERS", ""),
                ("BENCH_W5_RECORDS", ""),
            ],
            &["--w4-secs", "30"],
        )
        .unwrap();
        assert_eq!(cfg.w2_users, 123);
        assert_eq!(cfg.w2_latency_ms, [200]);
        assert_eq!(cfg.w2_users_per_worker, [Some(16), None]);
        assert_eq!(cfg.only, BTreeSet::from(["w2".to_string()]));
        assert_eq!(cfg.profile, ProfileMode::Off);
        assert_eq!(cfg.w5_listings, [2]);
        assert_eq!(cfg.w4_secs, 30, "the command line wins");
        assert_eq!(cfg.w1_users, 50);
        assert_eq!(cfg.w5_records, 20);
    }

    #[test]
    fn quick_makes_the_sizes_nobody_gave_smaller() {
        let full = config(&[], &[]).unwrap();
        assert!(!full.quick);
        assert_eq!(
            (
                full.w1_users,
                full.w2_users,
                full.w3_records,
                full.w4_secs,
                full.w5_projects
            ),
            (50, 10_000, 200_000, 300, 200)
        );
        let quick = config(&[], &["--quick", "--w2-users", "7"]).unwrap();
        assert!(quick.quick);
        assert_eq!(
            (
                quick.w1_users,
                quick.w2_users,
                quick.w3_records,
                quick.w4_secs,
                quick.w5_projects
            ),
            (10, 7, 20_000, 60, 50)
        );
        let from_env = config(&[("BENCH_QUICK", "1"), ("BENCH_W1_USERS", "3")], &[]).unwrap();
        assert_eq!(
            (from_env.quick, from_env.w1_users, from_env.w1_projects),
            (true, 3, 5)
        );
        for off in ["--quick=0", "--quick=false", "--quick=no"] {
            assert!(!config(&[], &[off]).unwrap().quick, "{off}");
        }
        assert!(!config(&[("BENCH_QUICK", "no")], &[]).unwrap().quick);
    }

    #[test]
    fn profile_takes_a_mode_after_an_equals_sign() {
        let mode = |env: &[(&str, &str)], argv: &[&str]| config(env, argv).unwrap().profile;
        assert_eq!(mode(&[], &[]), ProfileMode::Missed);
        assert_eq!(mode(&[], &["--profile"]), ProfileMode::All);
        assert_eq!(mode(&[], &["--profile=off"]), ProfileMode::Off);
        assert_eq!(mode(&[], &["--profile=missed"]), ProfileMode::Missed);
        assert_eq!(mode(&[("BENCH_PROFILE", "yes")], &[]), ProfileMode::All);
        assert!(config(&[], &["--profile", "all"]).is_err());
        assert!(config(&[], &["--profile=sometimes"]).is_err());
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        let cfg = config(
            &[],
            &["--w2-users", "1", "--w2-users=2", "--quick", "--quick=0"],
        );
        let cfg = cfg.unwrap();
        assert_eq!((cfg.w2_users, cfg.quick), (2, false));
    }

    #[test]
    fn bad_values_are_refused() {
        for argv in [
            &["--w2-workers", "4,0"][..],
            &["--w2-workers", "four"],
            &["--w2-users-per-worker", "2000"],
            &["--w5-listings", "17"],
            &["--w4-interval", "60"],
            &["--only", "w1,w9"],
            &["--w2-records", "100000"],
            &["--no-such-flag", "1"],
        ] {
            assert!(config(&[], argv).is_err(), "{argv:?}");
        }
    }
}
