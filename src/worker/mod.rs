//! Background processes' entry points: the scheduler (one, preloaded), job runners (one per
//! job run), sync workers (a pool that drains the queue and the webhook inbox, plus one per
//! manual `procore_sync_user`) and the HTTP listener (preloaded, when configured). What they
//! run lives in `sync` and `data`.

pub mod job_runner;
pub mod listener;
pub mod scheduler;
pub mod sync_worker;
