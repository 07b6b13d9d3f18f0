//! Data access: every SQL statement the extension runs on its tables, one module per part
//! of the schema. Nothing here knows of workers or of the SQL functions above it.

pub mod alerts;
pub mod catalog;
pub mod credentials;
pub mod installed;
pub mod jobs;
pub mod plans;
pub mod queue;
pub mod resync;
pub mod status;
pub mod store;
pub mod timestamps;
pub mod transaction;
pub mod visibility;
pub mod webhooks;
