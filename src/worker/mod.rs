//! Background processes: the scheduler (one, preloaded), job runners (one per job run) and
//! sync workers (a pool that drains the queue, plus one per manual `procore_sync_user`).

mod flight;
pub mod job_runner;
pub mod scheduler;
pub mod sync_worker;
mod txn;
pub mod wakeup;

pub use txn::in_transaction;

/// The library every background worker entry point lives in.
pub const LIBRARY: &str = "procore_sync";
