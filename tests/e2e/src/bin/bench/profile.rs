//! Profiling: perf (system-wide cpu-clock samples, filtered to our pids) and
//! pg_stat_statements. They cost a little, so by default they run only in an extra pass
//! after a missed target, never during the measured one (`--profile`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::cluster::BenchEnv;

/// The page-fault profile records every 8th fault: bursts of faults overflow perf's buffers
/// when it unwinds each one.
pub const FAULT_PERIOD: u32 = 8;

pub struct Perf {
    child: Child,
    data: PathBuf,
}

impl Perf {
    pub fn available() -> bool {
        Command::new("perf")
            .args(["stat", "-e", "cpu-clock", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Samples every CPU (`pid` None) or one process, until `stop`.
    pub fn start(data: &Path, pid: Option<i32>, freq: u32) -> Result<Perf> {
        Self::record(data, pid, &["-e", "cpu-clock", "-F", &freq.to_string()])
    }

    /// Records every page fault of one process: where its memory grows, by call stack.
    pub fn start_page_faults(data: &Path, pid: i32) -> Result<Perf> {
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

    pub fn stop(mut self) -> Result<PathBuf> {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        Ok(self.data.clone())
    }

    /// Inclusive share of samples (callees included) of this extension's own functions.
    pub fn report_inclusive(data: &Path, pids: &[i32], limit: usize) -> Result<String> {
        let text = Self::report_text(data, pids, &["--children", "--sort", "sym"])?;
        Ok(indented(
            text.lines()
                .filter(|l| l.contains("procore_sync::") && !l.contains("{{closure}}")),
            limit,
        ))
    }

    /// Page faults (4 KB of newly touched memory each) under each of `frames`, callees
    /// included: which step of the sync the worker's memory growth comes from.
    pub fn report_fault_frames(data: &Path, pid: i32, frames: &[(&str, &str)]) -> Result<String> {
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
    pub fn report(data: &Path, pids: &[i32], sort: &str, limit: usize) -> Result<String> {
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
pub struct PidWatch {
    pub pids: BTreeSet<i32>,
}

impl PidWatch {
    pub fn sample(&mut self, bench: &BenchEnv, client: &mut postgres::Client) -> Result<()> {
        self.pids
            .extend(bench.backend_pids(client, "procore_sync sync worker")?);
        Ok(())
    }
}

/// The statements that took the most time inside the cluster, and their total.
/// The bench's own polling, left out of the statement profile.
const BENCH_OWN_QUERIES: &str =
    "pg_stat_statements|pg_stat_activity|FILTER \\(WHERE status|procore_sync_progress LIMIT";

pub fn pg_stat_statements_report(
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

/// perf data files are large; `BENCH_KEEP_PERF=1` keeps them for a closer look.
pub fn remove_perf_data(path: &Path) {
    if std::env::var("BENCH_KEEP_PERF").is_ok_and(|v| v == "1") {
        println!("    (perf data kept: {})", path.display());
    } else {
        let _ = std::fs::remove_file(path);
    }
}
