//! The sync workers while a cycle runs: users in flight, requests/s, CPU and memory, from
//! the queue, `pg_stat_activity`, the stand-in's request counter and `/proc`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use procore_sync_e2e::Standin;

use crate::cluster::{api_requests, check_stop, BenchEnv, QueueCounts};

/// `backend_type` of the pool's processes in `pg_stat_activity`.
const SYNC_WORKER_TYPE: &str = "procore_sync sync worker";

/// One look at the queue and at the live sync workers.
#[derive(Debug, Default, Clone)]
pub struct FleetSample {
    pub queue: QueueCounts,
    /// Queue rows a worker holds (`processing` with its pid): the users in flight.
    pub in_flight: i64,
    /// Rows of `procore_sync_progress`: the users in flight as the workers report them.
    progress_rows: i64,
    /// Records written so far: by completed items, and by items in flight (their progress).
    pub records: i64,
    /// Each live sync worker's pid and how many users it holds.
    pub per_worker: Vec<(i32, i64)>,
}

pub fn fleet_sample(client: &mut postgres::Client) -> Result<FleetSample> {
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
pub struct TimelinePoint {
    pub secs: f64,
    /// API requests the stand-in answered since the cycle started.
    pub requests: i64,
    pub in_flight: i64,
    progress_rows: i64,
    /// Users completed or failed.
    done: i64,
    per_worker: Vec<(i32, i64)>,
}

/// What `/proc` says of one sync worker: CPU so far (utime + stime, whole thread group) and
/// its peak resident set.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerUsage {
    cpu_ticks: u64,
    pub hwm_kb: u64,
}

/// Watches a cycle: each look reads the queue, the live sync workers and their `/proc`
/// entries; about once a second it also reads the stand-in's request counter for the
/// timeline. Worker pids are kept after their process exits, with the last values read.
pub struct FleetWatch {
    t0: Instant,
    pub requests0: i64,
    pub workers: BTreeMap<i32, WorkerUsage>,
    /// (seconds since the start, users in flight) of every look.
    in_flight: Vec<(f64, i64)>,
    pub peak_in_flight: i64,
    pub peak_per_worker: i64,
    pub timeline: Vec<TimelinePoint>,
    next_point: f64,
}

impl FleetWatch {
    pub fn start(standin: &Standin) -> Result<FleetWatch> {
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

    pub fn secs(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub fn look(
        &mut self,
        client: &mut postgres::Client,
        standin: &Standin,
    ) -> Result<FleetSample> {
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
    pub fn until_workers_exit(&mut self, bench: &BenchEnv, timeout: Duration) -> Result<bool> {
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

    pub fn cpu_secs(&self) -> f64 {
        self.workers.values().map(|u| u.cpu_ticks).sum::<u64>() as f64 / clock_ticks_per_second()
    }

    pub fn peak_hwm_kb(&self) -> u64 {
        self.workers.values().map(|u| u.hwm_kb).max().unwrap_or(0)
    }

    /// Mean users in flight over the looks up to `until` seconds.
    pub fn mean_in_flight(&self, until: f64) -> f64 {
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
pub fn timeline_text(points: &[TimelinePoint], max_lines: usize) -> String {
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

pub fn timeline_csv(cases: &[W2Timeline]) -> String {
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

/// A cycle's samples, kept for the CSV and the chart.
pub struct W2Timeline {
    pub label: String,
    pub points: Vec<TimelinePoint>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub anon_kb: u64,
    pub shmem_kb: u64,
}

pub fn read_mem(pid: i32) -> Option<Mem> {
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

pub fn cpu_ticks(pid: i32) -> Result<u64> {
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
pub fn cpu_nanos(pid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}
