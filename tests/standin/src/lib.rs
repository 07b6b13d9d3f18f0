//! A stand-in for the parts of Procore that `procore_sync` relies on (API, OAuth), plus
//! admin routes for tests, served on a loopback port. See `API.md` for the contract.

mod access;
mod admin;
mod admin_access;
mod api;
mod catalog;
mod clock;
mod faults;
mod filters;
mod http;
mod oauth;
mod pagination;
mod rate_limit;
mod records;
pub mod scripted;
mod server;
mod state;
mod tls;
mod tokens;
mod webhooks;
mod world;

pub use catalog::Catalog;
pub use server::{start, Options, Running};
pub use world::World;
