//! End-to-end harness for `procore_sync`: a throwaway PostgreSQL cluster with the extension
//! preloaded, the Procore stand-in as a child process, and polling helpers. The tests in
//! `tests/` and the `demo` binary drive the product only through SQL and the stand-in.
//!
//! Prerequisites: PostgreSQL 15 in `/usr/lib/postgresql/15/bin`, the extension installed
//! (`make install`), and `cargo build -p procore-standin` (or `PROCORE_STANDIN_BIN`). Then
//! `cargo test -p procore_sync_e2e`; `PROCORE_E2E_KEEP=1` keeps clusters for a post-mortem.

pub mod cluster;
pub mod describe;
pub mod env;
pub mod observe;
pub mod request_log;
pub mod rls;
pub mod schema_doc;
pub mod smtp;
pub mod standin;
pub mod stop;
pub mod table;
pub mod wait;
pub mod webhooks;

pub use cluster::{ensure_extension_installed, Cluster, ClusterOptions, StopMode};
pub use env::{Env, REDIRECT_URI};
pub use request_log::LoggedRequest;
pub use standin::{standin_binary, RecordKey, Standin};
pub use stop::{stop_on_signals, stop_requested};
pub use table::{query_table, render_table};
pub use wait::wait_until;

/// The SPEC §6 monitoring queries, verbatim.
pub const MONITORING_QUERIES: [&str; 4] = [
    "SELECT status, count(*) AS count, max(created_at) AS last_created\n\
     FROM procore_sync_queue GROUP BY status;",
    "SELECT user_id, status, created_at, completed_at, error_message\n\
     FROM procore_sync_queue ORDER BY created_at DESC LIMIT 20;",
    "SELECT jobname, schedule, active FROM procore_sync_job WHERE jobname LIKE 'procore%';",
    "SELECT jobid, jobname, runid, status, return_message, start_time, end_time\n\
     FROM procore_sync_job_run_details WHERE jobname LIKE 'procore%'\n\
     ORDER BY start_time DESC LIMIT 20;",
];

/// The set of `(resource, company_id, procore_id)` keys stored in `procore_records`
/// (live rows only), in the stand-in's `RecordKey` shape for direct comparison.
pub fn stored_record_keys(
    client: &mut postgres::Client,
) -> anyhow::Result<std::collections::BTreeSet<RecordKey>> {
    let rows = client.query(
        "SELECT resource, company_id, procore_id FROM procore_records WHERE deleted_at IS NULL",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| RecordKey {
            resource: r.get(0),
            company_id: r.get(1),
            id: r.get(2),
        })
        .collect())
}
