//! Everything in procore_sync that needs no Postgres: the cron schedules, the Procore client,
//! the record mapping, the token journal, the resource catalog's shape and the per-user
//! sync walk. Plain Rust, tested with plain `cargo test -p procore_sync_core` in seconds;
//! the extension is a thin layer over it.

pub mod alerts;
pub mod catalog;
pub mod fetch_pool;
pub mod listener;
pub mod metrics;
pub mod procore;
pub mod records;
pub mod schedule;
pub mod statements;
pub mod status_page;
pub mod token_journal;
pub mod walk;
#[cfg(test)]
mod walk_tests;
pub mod webhooks;
