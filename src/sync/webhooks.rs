//! Procore webhooks in the database: receiving a delivery (check, record, wake), and the
//! sync workers' side, which turns recorded events into one-record fetches and upserts
//! with the same rules as a sync. Procore delivers at least once, late or out of order,
//! and calls webhooks a best-effort signal: the periodic passes stay the backstop.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use pgrx::prelude::*;
use serde_json::Value;

use crate::data::transaction::in_transaction;
use crate::data::webhooks::{self as inbox, InboxEvent};
use crate::data::{catalog, queue, store};
use crate::errors::SyncError;
use crate::procore::{backoff, ProcoreError, RateLimit};
use crate::records::RecordRow;
use crate::settings;
use crate::sync::counters::{self, EventOutcome};
use crate::sync::wakeup;
use procore_sync_core::catalog::{Resource, Scope};
use procore_sync_core::fetch_pool::{FetchPool, Job};
use procore_sync_core::webhooks::{
    authorization_matches, catalog_resource_for, plan_work, record_path, Event, EventKind, Work,
    WorkItem,
};

/// What became of a delivery.
#[derive(Debug, PartialEq)]
pub enum Receipt {
    Recorded,
    /// Its event was recorded before: Procore delivered it again.
    Duplicate,
    /// Acknowledged and counted, not handled: the catalog does not sync its resource.
    Dropped(&'static str),
}

impl Receipt {
    pub fn as_str(&self) -> &'static str {
        match self {
            Receipt::Recorded => "recorded",
            Receipt::Duplicate => "duplicate",
            Receipt::Dropped(_) => "dropped",
        }
    }
}

/// Receives one delivery: the `Authorization` value must be one of the hooks' secrets
/// (compared in constant time, every one of them, so timing tells nothing), the payload an
/// event of a resource Procore announces. Records it once per event id and wakes the
/// scheduler at commit, which makes sure a sync worker takes it.
pub fn receive(payload: &Value, authorization: Option<&str>) -> Result<Receipt, SyncError> {
    let secrets = inbox::hook_secrets()?;
    let genuine = secrets.iter().fold(false, |found, s| {
        authorization_matches(authorization, s) | found
    });
    if !genuine {
        return Err(SyncError::NotAuthorized(
            "the Authorization header matches no webhook secret of this database".into(),
        ));
    }
    let event =
        Event::from_value(payload).map_err(|e| SyncError::InvalidArgument(e.to_string()))?;
    let Some(resource) = catalog_resource_for(&event.resource_name) else {
        return Err(SyncError::InvalidArgument(format!(
            "unknown webhook resource {}",
            quoted_excerpt(&event.resource_name)
        )));
    };
    let limit = settings::webhook_inbox_limit();
    if inbox::backlog(limit)? >= limit {
        return Err(SyncError::InboxFull(format!(
            "the webhook inbox holds {limit} events waiting (procore_sync.webhook_inbox_limit); \
             try again later"
        )));
    }
    let dropped = if !catalog::is_enabled(resource)? {
        Some("the catalog does not sync this resource")
    } else if event.company_id.is_none() {
        Some("the event names no company")
    } else {
        None
    };
    if !inbox::record_event(&event, resource, dropped, settings::webhook_settle_ms())? {
        counters::events(EventOutcome::Duplicate, 1);
        return Ok(Receipt::Duplicate);
    }
    match dropped {
        Some(reason) => {
            counters::events(EventOutcome::Dropped, 1);
            Ok(Receipt::Dropped(reason))
        }
        None => {
            counters::events(EventOutcome::Recorded, 1);
            wakeup::wake_scheduler_for_inbox_at_commit();
            Ok(Receipt::Recorded)
        }
    }
}

/// A name from outside, cut and quoted for an error message.
fn quoted_excerpt(text: &str) -> String {
    let cut: String = text
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    format!("\"{cut}\"")
}

/// Events taken per look at the inbox.
const TAKE: i64 = 64;
/// How soon to look at the inbox again after it had nothing due.
const EMPTY_INBOX_RETRY: Duration = Duration::from_millis(100);
/// How long events wait for a user's token to be refreshed by the sync queued for it.
const TOKEN_WAIT: TimeDelta = TimeDelta::seconds(30);

/// One record's fetch that is out, and the events it settles.
struct Out {
    item: WorkItem,
    resource: String,
    company_id: i64,
    project_id: Option<i64>,
    user_id: String,
    attempts: i32,
    /// Procore said the record was deleted (a delete tied with an update): a 404 confirms
    /// it. Without that, a 404 may only mean this user may not see the record, and another
    /// user's view must not lose it.
    deleted_by_event: bool,
}

/// A sync worker's webhook work: events taken from the inbox, their fetches out on the
/// worker's HTTP threads, and their upserts on its main thread.
pub struct EventWork {
    out: HashMap<u64, Out>,
    next_work: u64,
    next_take_at: Instant,
}

impl Default for EventWork {
    fn default() -> Self {
        EventWork {
            out: HashMap::new(),
            next_work: 0,
            next_take_at: Instant::now(),
        }
    }
}

impl EventWork {
    /// Fetches out and not answered yet.
    pub fn outstanding(&self) -> usize {
        self.out.len()
    }

    /// Takes due events and starts their work. Returns how many events it took.
    pub fn take(&mut self, pool: &mut FetchPool) -> usize {
        if Instant::now() < self.next_take_at {
            return 0;
        }
        let events = match in_transaction(|| inbox::take_events(TAKE)) {
            Ok(events) => events,
            Err(e) => {
                log!("procore_sync: could not take webhook events: {e}");
                Vec::new()
            }
        };
        if events.is_empty() {
            self.next_take_at = Instant::now() + EMPTY_INBOX_RETRY;
            return 0;
        }
        let taken = events.len();
        let resources = match in_transaction(catalog::enabled_resources) {
            Ok(resources) => resources,
            Err(e) => {
                log!("procore_sync: could not read the catalog for webhook events: {e}");
                let ids: Vec<String> = events.into_iter().map(|e| e.event.event_id).collect();
                retry(&ids, Utc::now() + TOKEN_WAIT, "could not read the catalog");
                return taken;
            }
        };
        let attempts: HashMap<String, i32> = events
            .iter()
            .map(|e| (e.event.event_id.clone(), e.attempts))
            .collect();
        let deletes: HashSet<String> = events
            .iter()
            .filter(|e| e.event.kind == EventKind::Delete)
            .map(|e| e.event.event_id.clone())
            .collect();
        let plain: Vec<Event> = events.into_iter().map(|e: InboxEvent| e.event).collect();
        let plan = plan_work(&plain);
        finish(
            &plan.ignored_event_ids,
            "dropped",
            Some("the catalog does not sync this resource"),
        );
        for item in plan.items {
            let attempts = item
                .event_ids
                .iter()
                .filter_map(|id| attempts.get(id))
                .copied()
                .max()
                .unwrap_or(1);
            let deleted_by_event = item.event_ids.iter().any(|id| deletes.contains(id));
            self.start(item, &resources, attempts, deleted_by_event, pool);
        }
        taken
    }

    fn start(
        &mut self,
        item: WorkItem,
        resources: &[Resource],
        attempts: i32,
        deleted_by_event: bool,
        pool: &mut FetchPool,
    ) {
        let record = &item.record;
        let Some(resource) = resources.iter().find(|r| r.name == record.resource) else {
            return finish(
                &item.event_ids,
                "dropped",
                Some("the catalog does not sync this resource"),
            );
        };
        let Some(company_id) = record.company_id else {
            return finish(
                &item.event_ids,
                "dropped",
                Some("the event names no company"),
            );
        };
        let scope_project = match resource.scope {
            Scope::Project => match record.project_id {
                Some(project) => project,
                None => {
                    return finish(
                        &item.event_ids,
                        "dropped",
                        Some("the event names no project"),
                    )
                }
            },
            _ => 0,
        };
        if item.work == Work::MarkDeleted {
            return mark_deleted(&item, &resource.name, company_id, false);
        }
        let fetcher = match in_transaction(|| {
            inbox::fetcher_for(&resource.name, company_id, scope_project)
        }) {
            Ok(fetcher) => fetcher,
            Err(e) => return retry(&item.event_ids, Utc::now() + TOKEN_WAIT, &e.to_string()),
        };
        let Some(fetcher) = fetcher else {
            let note = if scope_project == 0 {
                format!("no connected user syncs company {company_id}")
            } else {
                format!("no connected user syncs project {scope_project} of company {company_id}")
            };
            return finish(&item.event_ids, "dropped", Some(&note));
        };
        if let Some(until) = fetcher.rate_limited_until {
            return retry(
                &item.event_ids,
                until,
                "waiting for the user's Procore rate limit",
            );
        }
        let Some(access_token) = fetcher.access_token else {
            // The user's next sync refreshes the token; the events wait for it.
            if let Err(e) = in_transaction(|| queue::enqueue_user(&fetcher.user_id)) {
                log!(
                    "procore_sync: could not queue user {} for a token refresh: {e}",
                    fetcher.user_id
                );
            }
            return retry(
                &item.event_ids,
                Utc::now() + TOKEN_WAIT,
                "waiting for a token refresh",
            );
        };
        let path = match record_path(
            &resource.path_template,
            Some(company_id),
            record.project_id,
            record.resource_id,
        ) {
            Ok(path) => path,
            Err(e) => return finish(&item.event_ids, "failed", Some(&e)),
        };
        self.next_work += 1;
        let work = self.next_work;
        pool.submit(Job::Record {
            work,
            access_token,
            company_id,
            path,
        });
        let project_id = (resource.scope == Scope::Project).then_some(scope_project);
        self.out.insert(
            work,
            Out {
                item,
                resource: resource.name.clone(),
                company_id,
                project_id,
                user_id: fetcher.user_id,
                attempts,
                deleted_by_event,
            },
        );
    }

    /// Writes what a fetch brought, with the same upsert as a sync's pages.
    pub fn on_answer(
        &mut self,
        work: u64,
        result: Result<Option<Vec<RecordRow>>, ProcoreError>,
        _rate_limit: Option<RateLimit>,
    ) {
        let Some(out) = self.out.remove(&work) else {
            return;
        };
        let ids = &out.item.event_ids;
        match result {
            Ok(Some(rows)) => {
                let written = in_transaction(|| -> Result<i64, SyncError> {
                    let written = store::upsert_page(
                        &out.resource,
                        Some(out.company_id),
                        out.project_id,
                        None,
                        rows,
                    )?;
                    inbox::finish_events(ids, "done", None)?;
                    Ok(written)
                });
                match written {
                    Ok(written) => {
                        counters::records_written(written);
                        counters::events(EventOutcome::Done, ids.len());
                    }
                    Err(e) => retry_later(&out, &format!("could not write the record: {e}")),
                }
            }
            Ok(None) if out.deleted_by_event => {
                mark_deleted(&out.item, &out.resource, out.company_id, true)
            }
            Ok(None) => finish(
                ids,
                "done",
                Some("Procore answered 404 to this user; the next sync decides whether it is gone"),
            ),
            Err(ProcoreError::Unauthorized) => {
                if let Err(e) = in_transaction(|| queue::enqueue_user(&out.user_id)) {
                    log!(
                        "procore_sync: could not queue user {} for a token refresh: {e}",
                        out.user_id
                    );
                }
                retry(ids, Utc::now() + TOKEN_WAIT, "waiting for a token refresh");
            }
            Err(e) => match e.retry_at() {
                Some(at) => retry(ids, at, &e.to_string()),
                None if e.is_retryable() => retry_later(&out, &e.to_string()),
                None => finish(ids, "failed", Some(&e.to_string())),
            },
        }
    }
}

/// `confirmed`: Procore answered 404 just now, so the record is gone whatever the events'
/// order; otherwise only the delete event says so, as of its time.
fn mark_deleted(item: &WorkItem, resource: &str, company_id: i64, confirmed: bool) {
    let as_of = (!confirmed).then_some(item.latest_event_at);
    let marked = in_transaction(|| -> Result<(), SyncError> {
        inbox::mark_deleted(resource, company_id, item.record.resource_id, as_of)?;
        inbox::finish_events(&item.event_ids, "done", None)
    });
    if marked.is_ok() {
        counters::events(EventOutcome::Done, item.event_ids.len());
    }
    if let Err(e) = marked {
        retry(
            &item.event_ids,
            Utc::now() + TOKEN_WAIT,
            &format!("could not mark the record deleted: {e}"),
        );
    }
}

/// A transient failure: again after a backoff, up to `max_attempts`, then failed.
fn retry_later(out: &Out, reason: &str) {
    if out.attempts >= settings::max_attempts() {
        return finish(&out.item.event_ids, "failed", Some(reason));
    }
    let delay = backoff::retry_delay(
        out.attempts.max(1) as u32,
        Duration::from_secs(5),
        Duration::from_secs(600),
        &mut rand::thread_rng(),
    );
    let at: DateTime<Utc> = Utc::now() + TimeDelta::from_std(delay).unwrap_or(TOKEN_WAIT);
    retry(&out.item.event_ids, at, reason);
}

fn retry(event_ids: &[String], at: DateTime<Utc>, reason: &str) {
    if let Err(e) = in_transaction(|| inbox::retry_events(event_ids, at, reason)) {
        log!(
            "procore_sync: could not put {} webhook event(s) back: {e}",
            event_ids.len()
        );
    }
}

fn finish(event_ids: &[String], status: &str, note: Option<&str>) {
    if event_ids.is_empty() {
        return;
    }
    let outcome = match status {
        "done" => EventOutcome::Done,
        "dropped" => EventOutcome::Dropped,
        _ => EventOutcome::Failed,
    };
    match in_transaction(|| inbox::finish_events(event_ids, status, note)) {
        Ok(()) => counters::events(outcome, event_ids.len()),
        Err(e) => log!(
            "procore_sync: could not record the end of {} webhook event(s): {e}",
            event_ids.len()
        ),
    }
}
