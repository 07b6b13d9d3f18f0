//! Procore webhooks: hooks and triggers (`/rest/v1.0/webhooks/...`), the events that
//! admin mutations raise, and their delivery to each hook's destination.
//!
//! Delivery is modelled on what Procore documents: at least once, one endpoint paused
//! as a whole while it fails, exponential backoff between tries, events discarded once
//! they have waited too long. Duplicates and reordering, which Procore warns about but
//! never produces on demand, happen here at configurable rates so that a receiver can
//! be tested against them. Everything lives in `State` behind the server's one mutex;
//! the `delivery` thread takes due work out of it and puts results back.

mod admin;
mod api;
mod delivery;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::clock::{iso_millis, now};
use crate::world::Resource;

pub use admin::{capture, handle as handle_admin};
pub use api::{handle as handle_api, is_api_path};
pub use delivery::spawn;

/// Procore's documented limit for one bulk trigger call.
pub const MAX_BULK_TRIGGERS: usize = 500;
/// A receiver's answer is kept for the deliveries listing up to this size.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Delivery behaviour, set through `POST /__admin/webhooks/config`. Defaults are
/// Procore's documented timings, with no duplicates or reordering so that tests which
/// do not ask for them see one delivery per event, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub duplicate_rate: f64,
    pub reorder_rate: f64,
    pub reorder_window_ms: u64,
    pub backoff_start_ms: u64,
    pub backoff_cap_ms: u64,
    pub discard_after_ms: u64,
    pub timeout_ms: u64,
    pub paused: bool,
    pub seed: u64,
    pub ca_file: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
            reorder_window_ms: 1_000,
            backoff_start_ms: 1_000,
            backoff_cap_ms: 3_600_000,
            discard_after_ms: 12 * 3_600_000,
            timeout_ms: 5_000,
            paused: false,
            seed: 1,
            ca_file: None,
        }
    }
}

/// Tells an explicit `null` (clear the setting) from a key that was left out.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A partial config: only the keys given change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    duplicate_rate: Option<f64>,
    reorder_rate: Option<f64>,
    reorder_window_ms: Option<u64>,
    backoff_start_ms: Option<u64>,
    backoff_cap_ms: Option<u64>,
    discard_after_ms: Option<u64>,
    timeout_ms: Option<u64>,
    paused: Option<bool>,
    seed: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    ca_file: Option<Option<String>>,
}

impl Config {
    fn patched(&self, patch: ConfigPatch) -> Result<Config, String> {
        let c = Config {
            duplicate_rate: patch.duplicate_rate.unwrap_or(self.duplicate_rate),
            reorder_rate: patch.reorder_rate.unwrap_or(self.reorder_rate),
            reorder_window_ms: patch.reorder_window_ms.unwrap_or(self.reorder_window_ms),
            backoff_start_ms: patch.backoff_start_ms.unwrap_or(self.backoff_start_ms),
            backoff_cap_ms: patch.backoff_cap_ms.unwrap_or(self.backoff_cap_ms),
            discard_after_ms: patch.discard_after_ms.unwrap_or(self.discard_after_ms),
            timeout_ms: patch.timeout_ms.unwrap_or(self.timeout_ms),
            paused: patch.paused.unwrap_or(self.paused),
            seed: patch.seed.unwrap_or(self.seed),
            ca_file: patch.ca_file.unwrap_or_else(|| self.ca_file.clone()),
        };
        for (name, rate) in [
            ("duplicate_rate", c.duplicate_rate),
            ("reorder_rate", c.reorder_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if c.backoff_start_ms == 0 || c.timeout_ms == 0 || c.reorder_window_ms == 0 {
            return Err(
                "backoff_start_ms, timeout_ms and reorder_window_ms must be positive".to_string(),
            );
        }
        if c.backoff_cap_ms < c.backoff_start_ms {
            return Err("backoff_cap_ms must be at least backoff_start_ms".to_string());
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventType {
    Create,
    Update,
    Delete,
}

impl EventType {
    pub fn name(self) -> &'static str {
        match self {
            EventType::Create => "create",
            EventType::Update => "update",
            EventType::Delete => "delete",
        }
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        [EventType::Create, EventType::Update, EventType::Delete]
            .into_iter()
            .find(|t| t.name() == name)
    }
}

/// The resource names Procore's webhooks use for the stand-in's resources. Companies
/// have none: Procore publishes no webhook resource for them. Nor, here, do the
/// catalog's resources (drawings, documents, daily logs, commitments, ...): their
/// Procore names are not confirmed, so triggers cannot name them and their mutations
/// raise no events.
pub fn webhook_name(resource: Resource) -> Option<&'static str> {
    Some(match resource {
        Resource::Companies
        | Resource::DrawingAreas
        | Resource::Drawings
        | Resource::Folders
        | Resource::Files
        | Resource::RfiReplies
        | Resource::ManpowerLogs
        | Resource::NotesLogs
        | Resource::WeatherLogs
        | Resource::WorkOrderContracts
        | Resource::PurchaseOrderContracts
        | Resource::ChangeOrderPackages
        | Resource::Meetings
        | Resource::Inspections => return None,
        Resource::Projects => "Projects",
        Resource::Vendors => "Company Vendors",
        Resource::ProjectUsers => "Project Users",
        Resource::Rfis => "RFIs",
        Resource::Submittals => "Submittals",
        Resource::PunchItems => "Punch Items",
        Resource::Observations => "Observation Items",
        Resource::ChangeEvents => "Change Events",
    })
}

pub fn resource_from_webhook_name(name: &str) -> Option<Resource> {
    Resource::ALL
        .into_iter()
        .find(|r| webhook_name(*r) == Some(name))
}

/// Not every resource emits every event type: Procore lists projects and company
/// vendors as create/update only. A trigger for the missing type is accepted and
/// simply never fires, so a client that relies on it finds out only by reconciling.
pub fn emits(resource: Resource, event_type: EventType) -> bool {
    webhook_name(resource).is_some()
        && !(event_type == EventType::Delete
            && matches!(resource, Resource::Projects | Resource::Vendors))
}

/// Whether a resource's records live at company level (a project hook cannot watch them).
fn company_level(resource: Resource) -> bool {
    resource.parent() == Some(Resource::Companies)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadVersion {
    V2,
    V3,
    V4,
}

impl PayloadVersion {
    /// Procore's guide writes `v2` in one place and `v2.0` in another; both are taken.
    pub fn parse(api_version: &str) -> Option<PayloadVersion> {
        match api_version {
            "v2" | "v2.0" => Some(PayloadVersion::V2),
            "v3" | "v3.0" => Some(PayloadVersion::V3),
            "v4" | "v4.0" => Some(PayloadVersion::V4),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub id: u64,
    pub resource: Resource,
    pub event_type: EventType,
    pub created_at: String,
}

impl Trigger {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "resource_name": webhook_name(self.resource),
            "event_type": self.event_type.name(),
            "created_at": self.created_at,
        })
    }
}

/// What a hook is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Company(u64),
    Project(u64),
}

impl Owner {
    pub fn company_id(self) -> u64 {
        match self {
            Owner::Company(c) => c,
            Owner::Project(p) => Resource::Projects.company_of(p),
        }
    }

    pub fn project_id(self) -> Option<u64> {
        match self {
            Owner::Company(_) => None,
            Owner::Project(p) => Some(p),
        }
    }
}

/// A change worth an event: what the admin mutation did, and who did it.
#[derive(Debug, Clone)]
pub struct Change {
    pub resource: Resource,
    pub id: u64,
    pub event_type: EventType,
    pub user_id: u64,
    pub source_application_id: Option<String>,
}

#[derive(Debug)]
pub struct Event {
    pub id: u64,
    pub ulid: String,
    pub timestamp: DateTime<Utc>,
    pub user_id: u64,
    pub company_id: u64,
    pub project_id: Option<u64>,
    pub event_type: EventType,
    pub resource: Resource,
    pub resource_id: u64,
    pub source_application_id: Option<String>,
    pub hook_ids: Vec<u64>,
}

impl Event {
    /// The body POSTed to a hook, in the shape its payload version asks for.
    pub fn payload(&self, api_version: &str, version: PayloadVersion) -> Value {
        let resource_name = webhook_name(self.resource).unwrap_or("");
        let timestamp = self.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true);
        if version == PayloadVersion::V4 {
            // Procore's v4.0 sample: string ids, the ULID as `id`, and nothing else
            // (no ulid, api_version or metadata).
            return json!({
                "id": self.ulid,
                "timestamp": timestamp,
                "reason": self.event_type.name(),
                "company_id": self.company_id.to_string(),
                "project_id": self.project_id.map(|p| p.to_string()),
                "user_id": self.user_id.to_string(),
                "resource_type": resource_name,
                "resource_id": self.resource_id.to_string(),
            });
        }
        let mut payload = json!({
            "id": self.id,
            "ulid": self.ulid,
            "timestamp": timestamp,
            "metadata": {
                "source_user_id": self.user_id,
                "source_project_id": self.project_id,
                "source_operation_id": null,
                "source_company_id": self.company_id,
                "source_application_id": self.source_application_id,
            },
            "user_id": self.user_id,
            "company_id": self.company_id,
            "project_id": self.project_id,
            "api_version": api_version,
            "event_type": self.event_type.name(),
            "resource_name": resource_name,
            "resource_id": self.resource_id,
        });
        if version == PayloadVersion::V3 {
            if let Value::Object(map) = &mut payload {
                map.insert("related_resources".to_string(), json!([]));
            }
        }
        payload
    }

    pub fn to_admin_json(&self) -> Value {
        json!({
            "id": self.id,
            "ulid": self.ulid,
            "timestamp": self.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
            "resource": self.resource.name(),
            "resource_name": webhook_name(self.resource),
            "resource_id": self.resource_id,
            "event_type": self.event_type.name(),
            "company_id": self.company_id,
            "project_id": self.project_id,
            "user_id": self.user_id,
            "source_application_id": self.source_application_id,
            "hook_ids": self.hook_ids,
        })
    }
}

/// One copy of an event waiting for its hook.
#[derive(Debug)]
struct Queued {
    event: Arc<Event>,
    /// When the event was queued: its discard deadline counts from here.
    enqueued: Instant,
    /// Held back until then to reorder it against later events.
    not_before: Instant,
    duplicate: bool,
}

#[derive(Debug)]
struct InFlight {
    token: u64,
    entry: Queued,
    started_at: DateTime<Utc>,
    payload: Value,
    url: String,
}

#[derive(Debug)]
pub struct Hook {
    pub id: u64,
    pub api_version: String,
    pub version: PayloadVersion,
    pub namespace: String,
    pub destination_url: String,
    /// Sent with every delivery; never shown back (the Authorization value is a secret).
    pub destination_headers: Vec<(String, String)>,
    pub owner: Owner,
    pub created_at: String,
    pub updated_at: String,
    pub triggers: BTreeMap<u64, Trigger>,
    queue: VecDeque<Queued>,
    in_flight: Option<InFlight>,
    /// Set after a failed try: nothing goes to this hook before then.
    paused_until: Option<Instant>,
    /// Wait after the next failure.
    next_backoff: Duration,
}

impl Hook {
    pub fn new(id: u64, fields: HookFields, owner: Owner, config: &Config) -> Hook {
        let at = iso_millis(now());
        Hook {
            id,
            api_version: fields.api_version,
            version: fields.version,
            namespace: fields.namespace,
            destination_url: fields.destination_url,
            destination_headers: fields.destination_headers,
            owner,
            created_at: at.clone(),
            updated_at: at,
            triggers: BTreeMap::new(),
            queue: VecDeque::new(),
            in_flight: None,
            paused_until: None,
            next_backoff: Duration::from_millis(config.backoff_start_ms),
        }
    }

    /// The hook as the API shows it: header names, never their values.
    pub fn to_json(&self) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .destination_headers
            .iter()
            .map(|(name, _)| (name.clone(), json!("[FILTERED]")))
            .collect();
        json!({
            "id": self.id,
            "api_version": self.api_version,
            "namespace": self.namespace,
            "destination_url": self.destination_url,
            "destination_headers": headers,
            "owned_by_company_id": self.owner.company_id(),
            "owned_by_project_id": self.owner.project_id(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    fn has_authorization(&self) -> bool {
        self.destination_headers
            .iter()
            .any(|(name, value)| name.eq_ignore_ascii_case("authorization") && !value.is_empty())
    }

    fn wants(
        &self,
        resource: Resource,
        event_type: EventType,
        company: u64,
        project: Option<u64>,
    ) -> bool {
        let in_scope = match self.owner {
            Owner::Company(c) => c == company,
            Owner::Project(p) => project == Some(p) && !company_level(resource),
        };
        in_scope
            && self
                .triggers
                .values()
                .any(|t| t.resource == resource && t.event_type == event_type)
    }
}

/// Validated hook attributes, from a create or update call.
#[derive(Debug, Clone)]
pub struct HookFields {
    pub api_version: String,
    pub version: PayloadVersion,
    pub namespace: String,
    pub destination_url: String,
    pub destination_headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The receiver answered 2xx.
    Ok,
    /// Failed; the event stays queued and is tried again after the backoff.
    Retried,
    /// Failed, and the event's time ran out meanwhile: it is discarded (a `discarded`
    /// record follows).
    Failed,
    /// Given up without a try: undelivered when its time ran out.
    Discarded,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
            Outcome::Discarded => "discarded",
        }
    }
}

/// One delivery attempt (or discard), as both listings show it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: u64,
    pub hook_id: u64,
    pub event_id: u64,
    pub ulid: String,
    pub duplicate: bool,
    pub destination_url: String,
    pub payload: Value,
    pub started_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub response_status: Option<u16>,
    pub response_headers: BTreeMap<String, String>,
    pub response_body: String,
    pub response_error: Option<String>,
    pub outcome: Outcome,
}

impl Attempt {
    /// Procore's delivery shape (`GET .../deliveries`).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "event_id": self.event_id,
            "started_at": iso_millis(self.started_at),
            "completed_at": iso_millis(self.completed_at),
            "response_status": self.response_status,
            "response_headers": self.response_headers,
            "response_body": self.response_body,
            "response_error": self.response_error,
            "outcome": self.outcome,
            "event": self.payload,
        })
    }

    pub fn to_admin_json(&self) -> Value {
        let duration = (self.completed_at - self.started_at)
            .num_milliseconds()
            .max(0);
        json!({
            "id": self.id,
            "hook_id": self.hook_id,
            "event_id": self.event_id,
            "ulid": self.ulid,
            "duplicate": self.duplicate,
            "destination_url": self.destination_url,
            "payload": self.payload,
            "started_at": iso_millis(self.started_at),
            "completed_at": iso_millis(self.completed_at),
            "duration_ms": duration,
            "response_status": self.response_status,
            "response_error": self.response_error,
            "outcome": self.outcome,
        })
    }
}

/// What came back from one POST.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: Option<u16>,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub error: Option<String>,
}

impl Response {
    fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// One POST for the delivery thread to make, outside the lock.
pub struct Job {
    pub token: u64,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub agent: ureq::Agent,
}

/// A body POSTed to `/__capture/{name}`.
#[derive(Debug, Clone, Serialize)]
pub struct Capture {
    pub seq: u64,
    pub ts: String,
    pub method: String,
    pub query: String,
    pub headers: BTreeMap<String, String>,
    /// The body as JSON when it parses, otherwise as text.
    pub body: Value,
}

/// In-flight results are matched by a token unique for the process, so a result that
/// arrives after its hook was deleted or the world reset lands nowhere.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

pub struct Webhooks {
    pub config: Config,
    agent: ureq::Agent,
    rng: StdRng,
    pub hooks: BTreeMap<u64, Hook>,
    pub events: Vec<Arc<Event>>,
    pub attempts: Vec<Attempt>,
    pub captures: BTreeMap<String, Vec<Capture>>,
    next_hook_id: u64,
    next_trigger_id: u64,
    next_capture_seq: u64,
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.config)
            .field("hooks", &self.hooks.len())
            .field("events", &self.events.len())
            .field("attempts", &self.attempts.len())
            .finish_non_exhaustive()
    }
}

impl Default for Webhooks {
    fn default() -> Webhooks {
        let config = Config::default();
        Webhooks {
            // The default config has no CA file, so building its agent cannot fail.
            agent: delivery::agent(&config).unwrap_or_else(|_| ureq::Agent::new()),
            rng: StdRng::seed_from_u64(config.seed),
            config,
            hooks: BTreeMap::new(),
            events: Vec::new(),
            attempts: Vec::new(),
            captures: BTreeMap::new(),
            next_hook_id: 1,
            next_trigger_id: 1,
            next_capture_seq: 1,
        }
    }
}

impl Webhooks {
    /// Applies a partial config; the agent is rebuilt so timeout and CA take effect on
    /// the next try, and a new seed restarts the random sequence.
    pub fn configure(&mut self, patch: ConfigPatch) -> Result<(), String> {
        let reseed = patch.seed.is_some();
        let config = self.config.patched(patch)?;
        self.agent = delivery::agent(&config)?;
        if reseed {
            self.rng = StdRng::seed_from_u64(config.seed);
        }
        let start = Duration::from_millis(config.backoff_start_ms);
        let cap = Duration::from_millis(config.backoff_cap_ms);
        for hook in self.hooks.values_mut() {
            hook.next_backoff = hook.next_backoff.clamp(start, cap);
        }
        self.config = config;
        Ok(())
    }

    pub fn add_hook(&mut self, fields: HookFields, owner: Owner) -> &Hook {
        let id = self.next_hook_id;
        self.next_hook_id += 1;
        self.hooks
            .entry(id)
            .or_insert_with(|| Hook::new(id, fields, owner, &self.config))
    }

    pub fn next_trigger_id(&mut self) -> u64 {
        let id = self.next_trigger_id;
        self.next_trigger_id += 1;
        id
    }

    /// Raises an event for a change if some hook has a trigger for it, and queues it
    /// for each such hook (with the configured duplicates and hold-backs).
    pub fn publish(&mut self, change: Change) -> Option<Arc<Event>> {
        if !emits(change.resource, change.event_type) {
            return None;
        }
        let company = change.resource.company_of(change.id);
        let project = match change.resource {
            Resource::Projects => Some(change.id),
            r => r.project_of(change.id),
        };
        let hook_ids: Vec<u64> = self
            .hooks
            .values()
            .filter(|h| h.wants(change.resource, change.event_type, company, project))
            .map(|h| h.id)
            .collect();
        if hook_ids.is_empty() {
            return None;
        }
        let timestamp = now();
        let event = Arc::new(Event {
            id: self.events.len() as u64 + 1,
            ulid: ulid(timestamp, &mut self.rng),
            timestamp,
            user_id: change.user_id,
            company_id: company,
            project_id: project,
            event_type: change.event_type,
            resource: change.resource,
            resource_id: change.id,
            source_application_id: change.source_application_id,
            hook_ids: hook_ids.clone(),
        });
        self.events.push(Arc::clone(&event));
        let at = Instant::now();
        for id in hook_ids {
            let copies = if self.rng.gen_bool(self.config.duplicate_rate) {
                2
            } else {
                1
            };
            for copy in 0..copies {
                let not_before = at + self.hold_back();
                if let Some(hook) = self.hooks.get_mut(&id) {
                    hook.queue.push_back(Queued {
                        event: Arc::clone(&event),
                        enqueued: at,
                        not_before,
                        duplicate: copy > 0,
                    });
                }
            }
        }
        Some(event)
    }

    /// A random delay for events picked for reordering: later events overtake them.
    fn hold_back(&mut self) -> Duration {
        if self.rng.gen_bool(self.config.reorder_rate) {
            Duration::from_millis(self.rng.gen_range(1..=self.config.reorder_window_ms))
        } else {
            Duration::ZERO
        }
    }

    /// Discards what waited too long and takes the next try of every idle hook. Returns
    /// the POSTs to make and when something next falls due.
    pub fn due(&mut self, at: Instant) -> (Vec<Job>, Option<Instant>) {
        let discard_after = Duration::from_millis(self.config.discard_after_ms);
        let mut jobs = Vec::new();
        let mut next: Option<Instant> = None;
        let mut soonest = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        let mut discarded = Vec::new();
        for hook in self.hooks.values_mut() {
            let mut kept = VecDeque::with_capacity(hook.queue.len());
            while let Some(entry) = hook.queue.pop_front() {
                if entry.enqueued + discard_after <= at {
                    let payload = entry.event.payload(&hook.api_version, hook.version);
                    discarded.push((hook.id, hook.destination_url.clone(), payload, entry));
                } else {
                    soonest(entry.enqueued + discard_after);
                    kept.push_back(entry);
                }
            }
            hook.queue = kept;
            if hook.in_flight.is_some() || self.config.paused {
                continue;
            }
            if let Some(until) = hook.paused_until {
                if until > at {
                    soonest(until);
                    continue;
                }
            }
            let Some(index) = hook.queue.iter().position(|q| q.not_before <= at) else {
                if let Some(t) = hook.queue.iter().map(|q| q.not_before).min() {
                    soonest(t);
                }
                continue;
            };
            let Some(entry) = hook.queue.remove(index) else {
                continue;
            };
            let payload = entry.event.payload(&hook.api_version, hook.version);
            let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
            jobs.push(Job {
                token,
                url: hook.destination_url.clone(),
                headers: hook.destination_headers.clone(),
                body: serde_json::to_vec(&payload).unwrap_or_default(),
                agent: self.agent.clone(),
            });
            hook.in_flight = Some(InFlight {
                token,
                entry,
                started_at: now(),
                payload,
                url: hook.destination_url.clone(),
            });
        }
        for (hook_id, url, payload, entry) in discarded {
            self.discard(hook_id, url, &entry, payload);
        }
        (jobs, next)
    }

    /// Takes a POST's result back: success resets the hook's backoff; failure pauses
    /// the hook and puts the event back at the head of its queue.
    pub fn finish(&mut self, token: u64, response: Response, at: Instant) {
        let Some(hook) = self
            .hooks
            .values_mut()
            .find(|h| h.in_flight.as_ref().is_some_and(|f| f.token == token))
        else {
            return;
        };
        let Some(flight) = hook.in_flight.take() else {
            return;
        };
        let start = Duration::from_millis(self.config.backoff_start_ms);
        let cap = Duration::from_millis(self.config.backoff_cap_ms);
        let hook_id = hook.id;
        let completed = now();
        let outcome = if response.ok() {
            hook.paused_until = None;
            hook.next_backoff = start;
            Outcome::Ok
        } else {
            hook.paused_until = Some(at + hook.next_backoff);
            hook.next_backoff = hook.next_backoff.saturating_mul(2).clamp(start, cap);
            let deadline =
                flight.entry.enqueued + Duration::from_millis(self.config.discard_after_ms);
            if deadline <= at {
                Outcome::Failed
            } else {
                Outcome::Retried
            }
        };
        let InFlight {
            entry,
            started_at,
            payload,
            url,
            ..
        } = flight;
        match outcome {
            Outcome::Retried => {
                self.record(
                    hook_id, url, &entry, payload, started_at, completed, response, outcome,
                );
                if let Some(hook) = self.hooks.get_mut(&hook_id) {
                    hook.queue.push_front(entry);
                }
            }
            Outcome::Failed => {
                self.record(
                    hook_id,
                    url.clone(),
                    &entry,
                    payload.clone(),
                    started_at,
                    completed,
                    response,
                    outcome,
                );
                self.discard(hook_id, url, &entry, payload);
            }
            Outcome::Ok | Outcome::Discarded => {
                self.record(
                    hook_id, url, &entry, payload, started_at, completed, response, outcome,
                );
            }
        }
    }

    /// Records that an event was given up on for this hook.
    fn discard(&mut self, hook_id: u64, url: String, entry: &Queued, payload: Value) {
        let at = now();
        let response = Response {
            error: Some(format!(
                "undelivered after {} ms: discarded",
                self.config.discard_after_ms
            )),
            ..Response::default()
        };
        let outcome = Outcome::Discarded;
        self.record(hook_id, url, entry, payload, at, at, response, outcome);
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        hook_id: u64,
        destination_url: String,
        entry: &Queued,
        payload: Value,
        started_at: DateTime<Utc>,
        completed_at: DateTime<Utc>,
        response: Response,
        outcome: Outcome,
    ) {
        let mut body = response.body;
        if body.len() > MAX_RESPONSE_BODY {
            let mut cut = MAX_RESPONSE_BODY;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        self.attempts.push(Attempt {
            id: self.attempts.len() as u64 + 1,
            hook_id,
            event_id: entry.event.id,
            ulid: entry.event.ulid.clone(),
            duplicate: entry.duplicate,
            destination_url,
            payload,
            started_at,
            completed_at,
            response_status: response.status,
            response_headers: response.headers,
            response_body: body,
            response_error: response.error,
            outcome,
        });
    }

    /// The hooks for the admin listing: delivery state and whether an Authorization
    /// header is set, never its value.
    pub fn admin_hooks(&self, at: Instant) -> Value {
        Value::Array(
            self.hooks
                .values()
                .map(|h| {
                    let mut value = h.to_json();
                    if let Value::Object(map) = &mut value {
                        map.insert(
                            "has_authorization".to_string(),
                            json!(h.has_authorization()),
                        );
                        map.insert(
                            "triggers".to_string(),
                            Value::Array(h.triggers.values().map(Trigger::to_json).collect()),
                        );
                        map.insert("queued".to_string(), json!(h.queue.len()));
                        map.insert("in_flight".to_string(), json!(h.in_flight.is_some()));
                        map.insert(
                            "paused_for_ms".to_string(),
                            json!(h
                                .paused_until
                                .filter(|u| *u > at)
                                .map(|u| (u - at).as_millis() as u64)),
                        );
                        map.insert(
                            "next_backoff_ms".to_string(),
                            json!(h.next_backoff.as_millis() as u64),
                        );
                    }
                    value
                })
                .collect(),
        )
    }

    pub fn capture(&mut self, name: &str, mut capture: Capture) {
        capture.seq = self.next_capture_seq;
        self.next_capture_seq += 1;
        self.captures
            .entry(name.to_string())
            .or_default()
            .push(capture);
    }

    /// Forgets hooks, events and deliveries and restores the default config; captures
    /// have their own reset.
    pub fn reset(&mut self) {
        let captures = std::mem::take(&mut self.captures);
        let next_capture_seq = self.next_capture_seq;
        *self = Webhooks {
            captures,
            next_capture_seq,
            ..Webhooks::default()
        };
    }
}

/// A ULID (https://github.com/ulid/spec): 48 bits of milliseconds, 80 random bits, 26
/// characters of Crockford base 32. Drawn from the seeded generator so that a run's
/// events are reproducible apart from the clock.
pub fn ulid(at: DateTime<Utc>, rng: &mut StdRng) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = u128::try_from(at.timestamp_millis()).unwrap_or(0) & ((1 << 48) - 1);
    let random = rng.gen::<u128>() & ((1 << 80) - 1);
    let value = (millis << 80) | random;
    (0..26)
        .map(|i| ALPHABET[((value >> (5 * (25 - i))) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fields(version: &str) -> HookFields {
        HookFields {
            api_version: version.to_string(),
            version: PayloadVersion::parse(version).unwrap(),
            namespace: "procore".to_string(),
            destination_url: "http://127.0.0.1:9/hook".to_string(),
            destination_headers: vec![("Authorization".to_string(), "Bearer s3cret".to_string())],
        }
    }

    fn with_trigger(
        w: &mut Webhooks,
        owner: Owner,
        resource: Resource,
        event_type: EventType,
    ) -> u64 {
        let id = w.add_hook(fields("v2.0"), owner).id;
        let trigger_id = w.next_trigger_id();
        if let Some(hook) = w.hooks.get_mut(&id) {
            hook.triggers.insert(
                trigger_id,
                Trigger {
                    id: trigger_id,
                    resource,
                    event_type,
                    created_at: String::new(),
                },
            );
        }
        id
    }

    fn change(resource: Resource, id: u64, event_type: EventType) -> Change {
        Change {
            resource,
            id,
            event_type,
            user_id: 1,
            source_application_id: None,
        }
    }

    #[test]
    fn ulids_are_26_crockford_characters_that_sort_by_time() {
        let mut rng = StdRng::seed_from_u64(7);
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap();
        let a = ulid(t, &mut rng);
        let b = ulid(t + chrono::Duration::milliseconds(1), &mut rng);
        assert_eq!(a.len(), 26);
        assert!(a
            .chars()
            .all(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c)));
        assert!(a < b);
        assert_eq!(ulid(t, &mut StdRng::seed_from_u64(7)), a, "seeded");
    }

    #[test]
    fn payloads_follow_the_hooks_version() {
        let event = Event {
            id: 42,
            ulid: "01JMYXMZRBVKK0PC6XS8SA4QRE".to_string(),
            timestamp: Utc.with_ymd_and_hms(2026, 2, 3, 4, 5, 6).single().unwrap(),
            user_id: 1,
            company_id: 1001,
            project_id: Some(1_001_001),
            event_type: EventType::Update,
            resource: Resource::Rfis,
            resource_id: 100_100_100_003,
            source_application_id: Some("app".to_string()),
            hook_ids: vec![1],
        };
        let v2 = event.payload("v2.0", PayloadVersion::V2);
        assert_eq!(v2["id"], 42);
        assert_eq!(v2["api_version"], "v2.0");
        assert_eq!(v2["event_type"], "update");
        assert_eq!(v2["resource_name"], "RFIs");
        assert_eq!(v2["resource_id"], 100_100_100_003u64);
        assert_eq!(v2["timestamp"], "2026-02-03T04:05:06.000000Z");
        assert_eq!(v2["metadata"]["source_application_id"], "app");
        assert!(v2.get("related_resources").is_none());
        assert_eq!(
            event.payload("v3.0", PayloadVersion::V3)["related_resources"],
            json!([])
        );
        let v4 = event.payload("v4.0", PayloadVersion::V4);
        assert_eq!(v4["id"], "01JMYXMZRBVKK0PC6XS8SA4QRE");
        assert_eq!(v4["reason"], "update");
        assert_eq!(v4["resource_type"], "RFIs");
        assert_eq!(v4["resource_id"], "100100100003");
        assert_eq!(v4["company_id"], "1001");
        assert_eq!(v4["project_id"], "1001001");
        assert!(v4.get("event_type").is_none() && v4.get("resource_name").is_none());
    }

    #[test]
    fn config_patches_validate_and_keep_what_is_not_given() {
        let c = Config::default();
        let patch: ConfigPatch =
            serde_json::from_str(r#"{"backoff_start_ms": 10, "backoff_cap_ms": 40}"#).unwrap();
        let p = c.patched(patch).unwrap();
        assert_eq!(
            (p.backoff_start_ms, p.backoff_cap_ms, p.timeout_ms),
            (10, 40, 5_000)
        );
        let bad = |json: &str| c.patched(serde_json::from_str(json).unwrap()).is_err();
        assert!(bad(r#"{"duplicate_rate": 1.5}"#));
        assert!(bad(r#"{"backoff_start_ms": 0}"#));
        assert!(bad(r#"{"backoff_cap_ms": 10}"#));
        assert!(serde_json::from_str::<ConfigPatch>(r#"{"backof_cap_ms": 1}"#).is_err());
        let cleared: ConfigPatch = serde_json::from_str(r#"{"ca_file": null}"#).unwrap();
        assert_eq!(cleared.ca_file, Some(None));
    }

    #[test]
    fn events_go_to_hooks_whose_scope_and_triggers_match() {
        let mut w = Webhooks::default();
        let company = with_trigger(
            &mut w,
            Owner::Company(1001),
            Resource::Rfis,
            EventType::Update,
        );
        let project = with_trigger(
            &mut w,
            Owner::Project(1_001_002),
            Resource::Rfis,
            EventType::Update,
        );
        let rfi = Resource::Rfis.id(1_001_001, 1);
        let event = w
            .publish(change(Resource::Rfis, rfi, EventType::Update))
            .unwrap();
        assert_eq!(event.hook_ids, vec![company]);
        assert!(w
            .publish(change(Resource::Rfis, rfi, EventType::Delete))
            .is_none());
        let other = Resource::Rfis.id(1_001_002, 1);
        let event = w
            .publish(change(Resource::Rfis, other, EventType::Update))
            .unwrap();
        assert_eq!(event.hook_ids, vec![company, project]);
        assert!(w
            .publish(change(
                Resource::Rfis,
                Resource::Rfis.id(2_001_001, 1),
                EventType::Update
            ))
            .is_none());

        with_trigger(
            &mut w,
            Owner::Company(1001),
            Resource::Projects,
            EventType::Delete,
        );
        assert!(
            w.publish(change(Resource::Projects, 1_001_001, EventType::Delete))
                .is_none(),
            "never emitted"
        );
    }

    #[test]
    fn failures_pause_the_hook_with_doubling_backoff_up_to_the_cap() {
        let mut w = Webhooks::default();
        w.configure(
            serde_json::from_str(r#"{"backoff_start_ms": 100, "backoff_cap_ms": 300}"#).unwrap(),
        )
        .unwrap();
        let hook = with_trigger(
            &mut w,
            Owner::Company(1001),
            Resource::Rfis,
            EventType::Update,
        );
        let rfi = Resource::Rfis.id(1_001_001, 1);
        w.publish(change(Resource::Rfis, rfi, EventType::Update));
        w.publish(change(Resource::Rfis, rfi, EventType::Update));
        let t0 = Instant::now();
        let failure = || Response {
            status: Some(500),
            ..Response::default()
        };
        let mut at = t0;
        for wait in [100, 200, 300, 300] {
            let (jobs, _) = w.due(at);
            assert_eq!(jobs.len(), 1);
            w.finish(jobs[0].token, failure(), at);
            let (jobs, next) = w.due(at);
            assert!(jobs.is_empty(), "paused");
            assert_eq!(next, Some(at + Duration::from_millis(wait)));
            at += Duration::from_millis(wait);
        }
        let (jobs, _) = w.due(at);
        w.finish(
            jobs[0].token,
            Response {
                status: Some(204),
                ..Response::default()
            },
            at,
        );
        let (jobs, _) = w.due(at);
        assert_eq!(jobs.len(), 1, "the second event follows at once");
        let outcomes: Vec<Outcome> = w.attempts.iter().map(|a| a.outcome).collect();
        assert_eq!(
            outcomes,
            [vec![Outcome::Retried; 4], vec![Outcome::Ok]].concat()
        );
        assert!(w
            .attempts
            .iter()
            .all(|a| a.event_id == 1 && a.hook_id == hook));
        assert_eq!(w.hooks[&hook].next_backoff, Duration::from_millis(100));
    }

    #[test]
    fn undelivered_events_are_discarded_when_their_time_runs_out() {
        let mut w = Webhooks::default();
        w.configure(serde_json::from_str(r#"{"discard_after_ms": 1000, "paused": true}"#).unwrap())
            .unwrap();
        with_trigger(
            &mut w,
            Owner::Company(1001),
            Resource::Rfis,
            EventType::Create,
        );
        w.publish(change(
            Resource::Rfis,
            Resource::Rfis.id(1_001_001, 26),
            EventType::Create,
        ));
        let t0 = Instant::now();
        let (jobs, next) = w.due(t0);
        assert!(jobs.is_empty());
        assert!(next.is_some_and(|n| n > t0));
        w.due(t0 + Duration::from_millis(1000));
        assert_eq!(w.attempts.len(), 1);
        assert_eq!(w.attempts[0].outcome, Outcome::Discarded);
        assert_eq!(w.due(t0 + Duration::from_secs(5)).1, None, "nothing left");
    }
}
