//! The scheduler: one preloaded background worker that starts each active job when its
//! schedule says, in a job runner of its own, and keeps the queue healthy (orphaned items,
//! retention). It never runs a job's SQL itself, so a slow job never delays another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

use super::job_runner;
use crate::data::credentials;
use crate::data::installed::{self, Installed, LIBRARY_VERSION};
use crate::data::jobs::{self, Job};
use crate::data::queue;
use crate::data::transaction::in_transaction;
use crate::schedule::{self, Schedule};
use crate::settings;
use crate::sync::alerts::{self, AlertPass};
use crate::sync::counters;
use crate::sync::launch::{self, LIBRARY};
use crate::sync::wakeup;

/// Orphaned items and retention are looked after this often; it is also the longest sleep,
/// so a wakeup lost for any reason delays a job change by at most this much. Job changes
/// wake the scheduler at commit (`wakeup`), job runners' starts and exits through
/// `set_notify_pid`, and `process_procore_sync_queue` reaps orphans itself every minute.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
const NO_EXTENSION_RETRY: Duration = Duration::from_secs(5);
/// The longest sleep while the extension is ready: how late an alert can go out after its
/// window closes, and how soon a delivery's outcome is recorded.
const ALERT_PASS_EVERY: Duration = Duration::from_secs(1);

pub fn register() {
    BackgroundWorkerBuilder::new("procore_sync scheduler")
        .set_type("procore_sync scheduler")
        .set_library(LIBRARY)
        .set_function("procore_sync_scheduler_main")
        .set_argument(0i32.into_datum())
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// The zone schedules are read in, from `procore_sync.timezone`.
fn schedule_zone() -> Tz {
    let name = settings::timezone_name();
    name.parse::<Tz>().unwrap_or_else(|_| {
        log!("procore_sync: unknown procore_sync.timezone \"{name}\"; schedules run in UTC");
        Tz::UTC
    })
}

/// The next run after `after`, with the schedule read in `zone`'s wall-clock time.
fn next_run(schedule: &Schedule, after: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
    schedule
        .next_after(&after.with_timezone(&zone))
        .map(|t| t.with_timezone(&Utc))
}

struct JobState {
    schedule_text: String,
    schedule: Option<Schedule>,
    next_run: Option<DateTime<Utc>>,
    running: Option<(i64, DynamicBackgroundWorker)>,
    marked_running: bool,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn procore_sync_scheduler_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = settings::database_name();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("procore_sync scheduler started in database {database}");
    wakeup::announce_scheduler();

    let mut states: HashMap<i64, JobState> = HashMap::new();
    let mut zone = schedule_zone();
    let mut extension_ready = false;
    // The last state that kept the scheduler idle, so each is logged once, not per pass.
    let mut reported: Option<Installed> = None;
    let mut next_housekeeping = Utc::now();
    let mut known_jobs = KnownJobs::default();
    let mut seen_inbox_changes = wakeup::inbox_changes();
    let mut alert_pass: Option<AlertPass> = None;
    loop {
        // Reset before looking at anything: a wakeup that arrives while this pass runs
        // leaves the latch set, and the wait below returns at once.
        unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            let new_zone = schedule_zone();
            if new_zone != zone {
                // Every next run moves with the zone, without waiting for the old times.
                zone = new_zone;
                states.values_mut().for_each(|s| s.schedule_text.clear());
            }
        }
        // Checked on every pass, because neither DROP EXTENSION nor ALTER EXTENSION UPDATE
        // touches a job row (nothing wakes the scheduler), and a job started after a drop
        // would only fail to record its run, once per tick.
        let state = installed_here();
        if !matches!(state, Installed::Current { .. }) {
            if extension_ready || reported.as_ref() != Some(&state) {
                report_not_ready(&state, &database);
                reported = Some(state);
            }
            extension_ready = false;
            states.clear();
            known_jobs = KnownJobs::default();
            if !wait_for_wakeup(NO_EXTENSION_RETRY) {
                break;
            }
            continue;
        }
        if !extension_ready {
            if in_transaction(installed::use_extension_schema).is_err() {
                if !wait_for_wakeup(NO_EXTENSION_RETRY) {
                    break;
                }
                continue;
            }
            extension_ready = true;
            if reported.take().is_some() {
                log!("procore_sync scheduler: extension procore_sync {LIBRARY_VERSION} is ready in database {database}; running jobs");
            }
            recover_token_journal();
            job_runner::clear_run_files();
            match in_transaction(jobs::fail_interrupted_runs) {
                Ok(n) if n > 0 => {
                    log!("procore_sync: marked {n} interrupted job run(s) as failed")
                }
                Ok(_) => {}
                Err(e) => log!("procore_sync: could not close interrupted runs: {e}"),
            }
        }
        let housekeeping_due = Utc::now() >= next_housekeeping;
        match tick(&mut states, zone, &mut known_jobs, housekeeping_due) {
            Ok(()) => {}
            Err(e) => {
                // Most likely the extension was dropped: wait for it to come back.
                log!("procore_sync scheduler: {e}");
                extension_ready = false;
                states.clear();
                known_jobs = KnownJobs::default();
            }
        }
        if extension_ready && housekeeping_due {
            next_housekeeping = Utc::now() + HOUSEKEEPING_EVERY;
            look_after_queue();
        }
        let inbox_changes = wakeup::inbox_changes();
        if extension_ready && inbox_changes != seen_inbox_changes {
            seen_inbox_changes = inbox_changes;
            look_after_inbox();
        }
        let mut sleep = sleep_until_next(&states, next_housekeeping);
        if extension_ready {
            look_after_alerts(&mut alert_pass);
            sleep = sleep.min(ALERT_PASS_EVERY);
        }
        if !wait_for_wakeup(sleep) {
            break;
        }
    }
    log!("procore_sync scheduler stopping");
    // A non-zero exit makes the postmaster start the scheduler again after its restart
    // time if an administrator terminated it; at shutdown nothing is restarted anyway.
    unsafe { pg_sys::proc_exit(1) };
}

/// The extension in the scheduler's database; a failed look-up counts as absent.
fn installed_here() -> Installed {
    in_transaction(installed::installed).unwrap_or(Installed::Absent)
}

/// One line for each time the scheduler goes idle, saying what brings it back.
fn report_not_ready(state: &Installed, database: &str) {
    match state {
        Installed::Absent => log!(
            "procore_sync scheduler: extension procore_sync is not installed in database {database}; \
             no job runs until CREATE EXTENSION procore_sync"
        ),
        Installed::OtherVersion(version) => warning!(
            "procore_sync scheduler: database {database} has extension procore_sync {version}, but \
             the server runs the {LIBRARY_VERSION} library; no job or sync runs until \
             ALTER EXTENSION procore_sync UPDATE"
        ),
        Installed::Current { .. } => {}
    }
}

/// Tokens Procore issued just before a crash are put back before anything else runs.
fn recover_token_journal() {
    let journal = credentials::token_journal();
    for (user, tokens) in journal.all_pending() {
        match in_transaction(|| credentials::restore_tokens(&user, &tokens)) {
            Ok(()) => {
                log!("procore_sync: user {user}: restored the tokens Procore issued before a crash");
                if let Err(e) = journal.forget(&user) {
                    log!("procore_sync: user {user}: could not clear the token journal: {e}");
                }
            }
            _ => log!("procore_sync: user {user}: could not restore journaled tokens; will retry at the next refresh"),
        }
    }
}

/// Orphaned items back to the queue, and retention.
fn look_after_queue() {
    match in_transaction(queue::reap_orphaned_items) {
        Ok(n) if n > 0 => {
            log!("procore_sync: {n} queue item(s) of stopped workers returned to the queue")
        }
        _ => {}
    }
    if let Err(e) = in_transaction(queue::purge_old_rows) {
        log!("procore_sync: retention cleanup failed: {e}");
    }
}

/// Webhook events arrived: a pool worker takes them, started now if none runs. The pool
/// worker then keeps looking at the inbox until it stays empty.
fn look_after_inbox() {
    if let Err(e) = in_transaction(|| launch::ensure_pool(0)) {
        log!("procore_sync: could not start a sync worker for webhook events: {e}");
    }
}

/// Alerts: the queue watched, messages composed, deliveries handed to the sending thread
/// and their outcomes recorded. A failure is logged unless the extension just went away
/// (which the loop reports once itself).
fn look_after_alerts(pass: &mut Option<AlertPass>) {
    if pass.is_none() {
        match AlertPass::start() {
            Ok(started) => *pass = Some(started),
            Err(e) => {
                log!("procore_sync alerts: {e}");
                return;
            }
        }
    }
    if let Some(pass) = pass {
        let outcome = pass.run();
        // Once per distinct failure, not once a second while it lasts.
        if let Some(e) = pass.failure_to_report(outcome) {
            if in_transaction(installed::require_current_version).is_ok() {
                log!("procore_sync alerts: {e}");
            }
        }
    }
}

/// Until the earliest due run or housekeeping.
fn sleep_until_next(states: &HashMap<i64, JobState>, housekeeping: DateTime<Utc>) -> Duration {
    let now = Utc::now();
    states
        .values()
        .filter_map(|s| s.next_run)
        .chain([housekeeping])
        .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
        .min()
        .unwrap_or(HOUSEKEEPING_EVERY)
        .clamp(Duration::from_millis(10), HOUSEKEEPING_EVERY)
}

/// Sleeps on the latch without resetting it (the loop resets it first thing), so no wakeup
/// falls between waking and resetting. False once the scheduler must stop.
fn wait_for_wakeup(timeout: Duration) -> bool {
    let events = unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_POSTMASTER_DEATH) as i32,
            timeout.as_millis() as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        )
    };
    pg_sys::check_for_interrupts!();
    events & pg_sys::WL_POSTMASTER_DEATH as i32 == 0 && !BackgroundWorker::sigterm_received()
}

/// The active jobs as last read, and the count of job changes they reflect.
#[derive(Default)]
struct KnownJobs {
    jobs: Vec<Job>,
    changes: Option<u64>,
}

fn tick(
    states: &mut HashMap<i64, JobState>,
    zone: Tz,
    known: &mut KnownJobs,
    reread: bool,
) -> Result<(), String> {
    // Read the count before the table: a change committed meanwhile bumps it again and
    // brings another read. Once a minute the table is read anyway.
    let changes = wakeup::job_changes();
    if reread || known.changes != Some(changes) {
        known.jobs = in_transaction(jobs::active_jobs).map_err(|e| e.to_string())?;
        known.changes = Some(changes);
    }
    let jobs = &known.jobs;
    let start_pass = !RESTART_JOBS_STARTED.load(Ordering::Relaxed);
    states.retain(|jobid, state| jobs.iter().any(|j| j.jobid == *jobid) || state.running.is_some());
    let now = Utc::now();
    for job in jobs {
        let state = states.entry(job.jobid).or_insert_with(|| JobState {
            schedule_text: String::new(),
            schedule: None,
            next_run: None,
            running: None,
            marked_running: false,
        });
        if state.schedule_text != job.schedule {
            // A changed schedule takes effect now, not after the old next run.
            state.schedule_text = job.schedule.clone();
            state.schedule = schedule::parse(&job.schedule).ok();
            state.next_run = state
                .schedule
                .as_ref()
                .and_then(|s| first_run(job, s, now, zone, start_pass));
        }
        reap_finished_run(job.jobid, state);
        let Some(due) = state.next_run else { continue };
        if due > now {
            continue;
        }
        // However many slots passed (a long run, downtime), the job runs once and the next
        // run is the next slot from now: no pile-up of missed runs.
        state.next_run = state.schedule.as_ref().and_then(|s| next_run(s, now, zone));
        if state.running.is_some() {
            continue; // previous run still going: this slot is skipped, as in pg_cron
        }
        let lateness = (Utc::now() - due).num_microseconds().unwrap_or(0).max(0);
        counters::scheduler_tick(lateness as u64);
        state.running = start_job(job);
    }
    // Runs of jobs deleted while running still need their end recorded.
    for (jobid, state) in states.iter_mut() {
        reap_finished_run(*jobid, state);
    }
    RESTART_JOBS_STARTED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Whether this scheduler has had its start pass: the first pass that read the job table,
/// where `@restart` jobs run. A scheduler start is a process start (the postmaster forks a
/// new one after a server restart or after this one exits), so a static is exactly "once
/// per start", and it outlives everything the main loop resets: job states after the
/// extension went away, schedules after a time zone reload. As in pg_cron (its
/// `RebootJobsScheduled`), a `@restart` job created, activated or re-scheduled after the
/// start pass waits for the next start.
static RESTART_JOBS_STARTED: AtomicBool = AtomicBool::new(false);

/// The first run of a job the scheduler (re)discovers: if a slot passed since its last run
/// (say, during downtime), run once now; otherwise wait for the next slot. A `@restart` job
/// runs now in the start pass and never otherwise.
fn first_run(
    job: &Job,
    schedule: &Schedule,
    now: DateTime<Utc>,
    zone: Tz,
    start_pass: bool,
) -> Option<DateTime<Utc>> {
    if schedule.runs_at_scheduler_start() {
        return start_pass.then_some(now);
    }
    let last = in_transaction(|| jobs::last_start(job.jobid)).unwrap_or(None);
    match last.and_then(|l| next_run(schedule, l, zone)) {
        Some(missed) if missed <= now => Some(now),
        _ => next_run(schedule, now, zone),
    }
}

/// Follows a job's runner: `running` once it is up, and its reported end once it is gone.
fn reap_finished_run(jobid: i64, state: &mut JobState) {
    let Some((runid, worker)) = &state.running else {
        return;
    };
    let runid = *runid;
    match worker.pid() {
        Ok(pid) => {
            if !state.marked_running {
                state.marked_running = true;
                let _ = in_transaction(|| jobs::mark_running(runid, pid));
            }
        }
        // Not started yet is not finished: only a stopped worker has ended.
        Err(BackgroundWorkerStatus::Stopped | BackgroundWorkerStatus::PostmasterDied) => {
            state.running = None;
            state.marked_running = false;
            let (succeeded, message, pid) = match job_runner::take_result(runid) {
                Some(result) => (result.succeeded, result.message, Some(result.pid)),
                // Killed, role dropped, database gone: the runner never reported.
                None => (
                    false,
                    "job runner exited before recording a result (see the server log)".to_owned(),
                    None,
                ),
            };
            counters::job_run(jobid, succeeded);
            let _ = in_transaction(|| match pid {
                Some(pid) => jobs::finish_run(runid, succeeded, &message, pid),
                None => jobs::fail_run(runid, &message),
            });
            note_job_run_for_alerts(jobid, succeeded, &message);
        }
        Err(_) => {}
    }
}

/// Apart from recording the run, so that a failure here never leaves a run unrecorded.
fn note_job_run_for_alerts(jobid: i64, succeeded: bool, message: &str) {
    if let Err(e) = in_transaction(|| alerts::note_job_run(jobid, succeeded, message)) {
        log!("procore_sync: could not weigh job {jobid}'s run for alerts: {e}");
    }
}

fn start_job(job: &Job) -> Option<(i64, DynamicBackgroundWorker)> {
    let runid = match in_transaction(|| jobs::start_run(job)) {
        Ok(runid) => runid,
        Err(e) => {
            log!(
                "procore_sync: could not record a run of job {}: {e}",
                job.jobid
            );
            return None;
        }
    };
    // The handle must outlive every transaction: keep it in the top memory context.
    let launched =
        unsafe { PgMemoryContexts::TopMemoryContext.switch_to(|_| job_runner::launch(job, runid)) };
    match launched {
        Ok(worker) => Some((runid, worker)),
        Err(message) => {
            let _ = in_transaction(|| jobs::fail_run(runid, &message));
            note_job_run_for_alerts(job.jobid, false, &message);
            None
        }
    }
}
