//! Running syncs: starting sync workers (`launch`), the users one worker carries at once
//! (`flight`), and one user's sync in Postgres terms (`user`). Below the SQL functions and
//! the workers' entry points, above the data layer.

pub mod alerts;
pub mod counters;
pub mod flight;
pub mod launch;
pub mod observe;
pub mod user;
pub mod wakeup;
pub mod webhooks;
