//! procore_sync: keeps a Postgres database in sync with the Procore API from inside the
//! database. The pure parts live in the `procore_sync_core` crate and know nothing of
//! Postgres; this crate is the thin pgrx layer around them.

use pgrx::prelude::*;
use procore_sync_core::{procore, records, schedule, token_journal};

// Layers, top down: `api` (SQL functions) and `worker` (background entry points) call
// `sync`, which calls `data`; `settings`, `errors` and the core crate serve them all. No
// module imports a layer above its own (checked by tests/e2e/tests/layers.rs).
mod api;
mod data;
mod errors;
mod log_redaction;
mod settings;
mod sync;
mod worker;

::pgrx::pg_module_magic!();

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/views.sql", name = "views", requires = ["schema"]);
extension_sql_file!(
    "../sql/visibility.sql",
    name = "visibility",
    requires = ["schema"]
);
extension_sql_file!(
    "../sql/webhooks.sql",
    name = "webhooks",
    requires = ["schema"]
);
extension_sql_file!("../sql/alerts.sql", name = "alerts", requires = ["schema"]);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[allow(non_snake_case)]
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
    log_redaction::install();
    // The scheduler can only be registered while the postmaster loads preloaded libraries;
    // a library loaded later by a backend still offers every SQL function.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        sync::wakeup::request_shared_memory();
        sync::counters::request_shared_memory();
        worker::scheduler::register();
        worker::listener::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'procore_sync'",
            "max_worker_processes = 32",
            // The in-database tests run in `pgrx_tests` inside transactions that roll back;
            // the scheduler stays in its default database so it never races them.
            "procore_sync.database_name = 'postgres'",
        ]
    }
}
