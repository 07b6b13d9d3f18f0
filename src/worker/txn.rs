//! Transactions in background workers that survive a Postgres ERROR. pgrx's own
//! `BackgroundWorker::transaction` lets an ERROR end the process, which would turn one bad
//! record or one failed job into a crash loop.

use std::panic::AssertUnwindSafe;

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::PgTryBuilder;

/// Runs `body` in its own transaction: committed if it returns, rolled back if it raises an
/// ERROR or panics, in which case the error's message comes back.
pub fn in_transaction<R>(body: impl FnOnce() -> R) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(AssertUnwindSafe(|| Ok(body())))
        .catch_others(|e| Err(caught_message(&e)))
        .execute();
    unsafe {
        match outcome {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    outcome
}

fn caught_message(e: &CaughtError) -> String {
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_string(),
        CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
    }
}
