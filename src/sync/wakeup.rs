//! Waking the scheduler when the job table changes, so it can sleep until its next due run
//! instead of re-reading the table every second, and when a webhook event arrives, so a
//! sync worker handles it at once. Its pid lives in shared memory, which only exists when
//! the library is preloaded; without the preload there is nobody to wake.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic, PgXactCallbackEvent};

static SCHEDULER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"procore_sync_scheduler_pid") };

/// How many committed transactions changed jobs, so the scheduler re-reads the job table
/// only when it changed, not on every wakeup (job runners' starts and exits wake it too).
static JOB_CHANGES: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"procore_sync_job_changes") };

/// How many committed transactions recorded webhook events, and when one last woke the
/// scheduler (milliseconds since the epoch): a flood of deliveries wakes it ten times a
/// second at most, since one wakeup is enough to start a worker that takes them all.
static INBOX_CHANGES: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"procore_sync_inbox_changes") };
static INBOX_WOKEN_AT_MS: PgAtomic<AtomicU64> =
    unsafe { PgAtomic::new(c"procore_sync_inbox_woken_at") };
const INBOX_WAKE_EVERY_MS: u64 = 100;

/// Set in the postmaster while preloading; every backend inherits it through fork.
static SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init` while the postmaster loads preloaded libraries.
pub fn request_shared_memory() {
    pg_shmem_init!(SCHEDULER_PID);
    pg_shmem_init!(JOB_CHANGES);
    pg_shmem_init!(INBOX_CHANGES);
    pg_shmem_init!(INBOX_WOKEN_AT_MS);
    SHARED_MEMORY.store(true, Ordering::Relaxed);
}

/// Whether shared memory exists: the library was preloaded.
pub fn preloaded() -> bool {
    SHARED_MEMORY.load(Ordering::Relaxed)
}

/// The running scheduler makes itself known to the backends that change jobs.
pub fn announce_scheduler() {
    if SHARED_MEMORY.load(Ordering::Relaxed) {
        SCHEDULER_PID
            .get()
            .store(unsafe { pg_sys::MyProcPid }, Ordering::Relaxed);
    }
}

/// The count of committed job changes (always 0 without the preload).
pub fn job_changes() -> u64 {
    if SHARED_MEMORY.load(Ordering::Relaxed) {
        JOB_CHANGES.get().load(Ordering::SeqCst)
    } else {
        0
    }
}

/// Sets the scheduler's latch, if it runs. A stale pid finds no process, or at worst wakes
/// an unrelated backend for nothing.
fn wake_scheduler() {
    if !SHARED_MEMORY.load(Ordering::Relaxed) {
        return;
    }
    let pid = SCHEDULER_PID.get().load(Ordering::Relaxed);
    if pid == 0 {
        return;
    }
    unsafe {
        let proc = pg_sys::BackendPidGetProc(pid);
        if !proc.is_null() {
            pg_sys::SetLatch(&raw mut (*proc).procLatch);
        }
    }
}

thread_local! {
    static JOB_WAKE_PENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static INBOX_WAKE_PENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The scheduler re-reads the jobs once this transaction commits (before, it would still
/// see the old rows; on rollback there is nothing to see). One wakeup per transaction,
/// however many rows it changed.
pub fn wake_scheduler_for_jobs_at_commit() {
    at_commit(&JOB_WAKE_PENDING, || {
        if SHARED_MEMORY.load(Ordering::Relaxed) {
            JOB_CHANGES.get().fetch_add(1, Ordering::SeqCst);
        }
        wake_scheduler();
    });
}

/// The count of committed transactions that recorded webhook events (0 without the
/// preload).
pub fn inbox_changes() -> u64 {
    if SHARED_MEMORY.load(Ordering::Relaxed) {
        INBOX_CHANGES.get().load(Ordering::SeqCst)
    } else {
        0
    }
}

/// The scheduler makes sure a sync worker takes the webhook events this transaction
/// recorded, once it commits.
pub fn wake_scheduler_for_inbox_at_commit() {
    at_commit(&INBOX_WAKE_PENDING, || {
        if !SHARED_MEMORY.load(Ordering::Relaxed) {
            return;
        }
        INBOX_CHANGES.get().fetch_add(1, Ordering::SeqCst);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let woken = INBOX_WOKEN_AT_MS.get();
        let last = woken.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= INBOX_WAKE_EVERY_MS
            && woken
                .compare_exchange(last, now_ms, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            wake_scheduler();
        }
    });
}

fn at_commit(pending: &'static std::thread::LocalKey<std::cell::Cell<bool>>, wake: fn()) {
    if pending.get() {
        return;
    }
    pending.set(true);
    pgrx::register_xact_callback(PgXactCallbackEvent::Commit, move || {
        pending.set(false);
        wake();
    });
    pgrx::register_xact_callback(PgXactCallbackEvent::Abort, move || pending.set(false));
}
