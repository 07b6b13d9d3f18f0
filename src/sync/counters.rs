//! Counters that only grow, in shared memory, for `/metrics` and `procore_sync_metrics()`:
//! what the workers did since the server started. Tables would not do: retention deletes
//! run history and inbox rows, and a count that drops reads as a restart to Prometheus.
//! They exist only with the preload; without it every counter reads 0. Incremented on a
//! process's main thread only (an LWLock is a Postgres call).

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use crate::procore::{Client, StatusLog};

/// HTTP status codes kept one by one; 0 stands for no usable answer (a timeout, a broken
/// connection, a body that could not be read).
const CODES: usize = 600;
/// Jobs whose runs are counted one by one; a server with more keeps counting the first ones.
const JOB_SLOTS: usize = 64;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct Counters {
    pub requests_by_code: [u64; CODES],
    pub rate_limited: u64,
    pub records_written: u64,
    pub refreshes_ok: u64,
    pub refreshes_failed: u64,
    /// (jobid, succeeded, failed); jobid 0 marks a free slot.
    pub job_runs: [(i64, u64, u64); JOB_SLOTS],
    pub scheduler_ticks: u64,
    pub scheduler_lateness_us_total: u64,
    pub scheduler_last_lateness_us: u64,
    pub events_recorded: u64,
    pub events_duplicate: u64,
    pub events_dropped: u64,
    pub events_done: u64,
    pub events_failed: u64,
    pub alerts_sent: u64,
    pub alerts_failed: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests_by_code: [0; CODES],
            rate_limited: 0,
            records_written: 0,
            refreshes_ok: 0,
            refreshes_failed: 0,
            job_runs: [(0, 0, 0); JOB_SLOTS],
            scheduler_ticks: 0,
            scheduler_lateness_us_total: 0,
            scheduler_last_lateness_us: 0,
            events_recorded: 0,
            events_duplicate: 0,
            events_dropped: 0,
            events_done: 0,
            events_failed: 0,
            alerts_sent: 0,
            alerts_failed: 0,
        }
    }
}

unsafe impl PGRXSharedMemory for Counters {}

static COUNTERS: PgLwLock<Counters> = unsafe { PgLwLock::new(c"procore_sync_counters") };

/// Called from `_PG_init` while the postmaster loads preloaded libraries.
pub fn request_shared_memory() {
    pg_shmem_init!(COUNTERS);
}

fn with(change: impl FnOnce(&mut Counters)) {
    if super::wakeup::preloaded() {
        change(&mut COUNTERS.exclusive());
    }
}

/// A snapshot of every counter.
pub fn read() -> Counters {
    if super::wakeup::preloaded() {
        *COUNTERS.share()
    } else {
        Counters::default()
    }
}

/// One answer from Procore: its status, or None when no usable one came.
pub fn request(status: Option<u16>) {
    with(|c| {
        let code = status.map_or(0, usize::from).min(CODES - 1);
        c.requests_by_code[code] += 1;
        if code == 429 {
            c.rate_limited += 1;
        }
    });
}

/// A client whose single API calls are counted when this goes out of scope, also when the
/// SQL function that made them raises an ERROR: the calls happened all the same.
pub struct CountedClient {
    pub client: Client,
    statuses: StatusLog,
}

impl CountedClient {
    pub fn new(mut client: Client) -> CountedClient {
        let statuses = client.record_statuses();
        CountedClient { client, statuses }
    }
}

impl Drop for CountedClient {
    fn drop(&mut self) {
        for status in self.statuses.take() {
            request(status);
        }
    }
}

pub fn records_written(n: i64) {
    with(|c| c.records_written += n.max(0) as u64);
}

pub fn token_refresh(ok: bool) {
    with(|c| match ok {
        true => c.refreshes_ok += 1,
        false => c.refreshes_failed += 1,
    });
}

pub fn job_run(jobid: i64, succeeded: bool) {
    with(|c| {
        let slot = match c.job_runs.iter().position(|s| s.0 == jobid) {
            Some(at) => at,
            None => match c.job_runs.iter().position(|s| s.0 == 0) {
                Some(free) => {
                    c.job_runs[free].0 = jobid;
                    free
                }
                None => return,
            },
        };
        match succeeded {
            true => c.job_runs[slot].1 += 1,
            false => c.job_runs[slot].2 += 1,
        }
    });
}

/// How late the scheduler started a run against its due time.
pub fn scheduler_tick(lateness_us: u64) {
    with(|c| {
        c.scheduler_ticks += 1;
        c.scheduler_lateness_us_total += lateness_us;
        c.scheduler_last_lateness_us = lateness_us;
    });
}

pub enum EventOutcome {
    Recorded,
    Duplicate,
    Dropped,
    Done,
    Failed,
}

pub fn events(outcome: EventOutcome, n: usize) {
    let n = n as u64;
    with(|c| match outcome {
        EventOutcome::Recorded => c.events_recorded += n,
        EventOutcome::Duplicate => c.events_duplicate += n,
        EventOutcome::Dropped => c.events_dropped += n,
        EventOutcome::Done => c.events_done += n,
        EventOutcome::Failed => c.events_failed += n,
    });
}

/// One alert delivery ended: sent, or failed for good after its last try.
pub fn alert_delivery(sent: bool) {
    with(|c| {
        if sent {
            c.alerts_sent += 1;
        } else {
            c.alerts_failed += 1;
        }
    });
}
