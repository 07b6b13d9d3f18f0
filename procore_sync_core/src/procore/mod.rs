//! The Procore API client: HTTP, OAuth, pagination, rate limits and retry timing.
//!
//! Plain Rust with no pgrx, so that everything here runs under `cargo test` without a
//! database. The sync layer decides *when* to call; this module only knows *how*.

pub mod backoff;
pub mod error;
pub mod hooks;
pub mod http;
pub mod oauth;
pub mod pagination;
pub mod rate_limit;
pub mod secret;

mod sanitize;

#[cfg(test)]
mod client_tests;

pub use error::ProcoreError;
pub use http::{Client, ClientConfig, Page, PageRequest, StatusLog};
pub use oauth::TokenPair;
pub use rate_limit::RateLimit;
pub use secret::Secret;
