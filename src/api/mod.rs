//! The SQL interface: every `#[pg_extern]` of the extension. A function here checks its
//! arguments, calls the data layer (or starts a sync worker through `sync::launch`), and
//! turns the error into a Postgres ERROR with its SQLSTATE, once.

mod credentials;
mod jobs;
mod manual_sync;
mod observe;
mod queue;
mod resync;
mod webhooks;
