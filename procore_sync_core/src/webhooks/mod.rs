//! Procore webhooks without Postgres: reading a delivery, checking its `Authorization`,
//! mapping Procore's resource names to the catalog's, and turning a batch of events into
//! the fewest record fetches.
//!
//! Procore delivers each event at least once (duplicates, even with equal timestamps, and
//! no ordering promise), retries a failing endpoint for up to 12 hours and pauses *every*
//! delivery to that endpoint while one fails. So the receiver records what it was sent and
//! answers at once; the real work happens later, batch by batch, through [`plan_work`]. A
//! payload it cannot read (a [`PayloadError`] is permanent: the same bytes would come back)
//! is answered 400 as the product specifies, which makes Procore retry it and hold that
//! endpoint's later deliveries meanwhile; the README says so. Webhooks are a best-effort
//! signal: the periodic sync stays the source of completeness.

mod authorization;
mod event;
mod resources;
mod work;

pub use authorization::{
    authorization_matches, check_authorization_secret, new_authorization_secret,
};
pub(crate) use event::json_kind;
pub(crate) use event::parse_timestamp;
pub use event::{Event, EventKind, PayloadError, MAX_PAYLOAD_BYTES};
pub use resources::{
    catalog_resource_for, record_path, triggers_for, WebhookResource, WEBHOOK_RESOURCES,
};
pub use work::{plan_work, Plan, RecordRef, Work, WorkItem};
