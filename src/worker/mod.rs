//! Background processes' entry points: the scheduler (one, preloaded), job runners (one per
//! job run) and sync workers (a pool that drains the queue, plus one per manual
//! `procore_sync_user`). What they run lives in `sync` and `data`.

pub mod job_runner;
pub mod scheduler;
pub mod sync_worker;
