//! The webhook tables: hooks and their secrets, triggers, and the inbox of events. Every
//! delivery is recorded once per event id; the sync workers take the inbox's due events in
//! batches, and the backstop records what the deliveries listing said.

use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::timestamps;
use crate::errors::SyncError;
use crate::procore::Secret;
use procore_sync_core::webhooks::{Event, EventKind};

/// A hook this database registered.
pub struct Hook {
    pub company_id: i64,
    pub hook_id: i64,
    pub registered_by: String,
}

/// Every hook's secret: a delivery is genuine when its `Authorization` matches one.
pub fn hook_secrets() -> Result<Vec<Secret>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select("SELECT secret FROM procore_sync_webhook_hook", None, &[])?;
        let mut secrets = Vec::new();
        for row in rows {
            secrets.push(Secret::new(row.get::<String>(1)?.unwrap_or_default()));
        }
        Ok(secrets)
    })
}

pub fn hook(company_id: i64) -> Result<Option<Hook>, SyncError> {
    Ok(hooks()?.into_iter().find(|h| h.company_id == company_id))
}

pub fn hooks() -> Result<Vec<Hook>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT company_id, hook_id, registered_by::text FROM procore_sync_webhook_hook
             ORDER BY company_id",
            None,
            &[],
        )?;
        let mut hooks = Vec::new();
        for row in rows {
            hooks.push(Hook {
                company_id: row.get(1)?.unwrap_or(0),
                hook_id: row.get(2)?.unwrap_or(0),
                registered_by: row.get(3)?.unwrap_or_default(),
            });
        }
        Ok(hooks)
    })
}

/// Records a hook Procore created, with its triggers, replacing any earlier one of the
/// company.
pub fn save_hook(
    company_id: i64,
    hook_id: i64,
    registered_by: &str,
    destination_url: &str,
    secret: &Secret,
    triggers: &[(&str, EventKind)],
) -> Result<(), SyncError> {
    Spi::run_with_args(
        "INSERT INTO procore_sync_webhook_hook
             (company_id, hook_id, registered_by, destination_url, secret)
         VALUES ($1, $2, $3::uuid, $4, $5)
         ON CONFLICT (company_id) DO UPDATE
         SET hook_id = EXCLUDED.hook_id, registered_by = EXCLUDED.registered_by,
             destination_url = EXCLUDED.destination_url, secret = EXCLUDED.secret,
             created_at = now(), checked_at = NULL, failing_deliveries = 0,
             discarded_deliveries = 0, reconciled_at = NULL, check_error = NULL",
        &[
            company_id.into(),
            hook_id.into(),
            registered_by.into(),
            destination_url.into(),
            secret.expose().into(),
        ],
    )?;
    Spi::run_with_args(
        "DELETE FROM procore_sync_webhook_trigger WHERE company_id = $1",
        &[company_id.into()],
    )?;
    let names: Vec<String> = triggers.iter().map(|(n, _)| n.to_string()).collect();
    let kinds: Vec<String> = triggers
        .iter()
        .map(|(_, k)| k.as_str().to_string())
        .collect();
    Spi::run_with_args(
        "INSERT INTO procore_sync_webhook_trigger (company_id, resource_name, event_type)
         SELECT $1, n, k FROM unnest($2::text[], $3::text[]) AS t(n, k)",
        &[company_id.into(), names.into(), kinds.into()],
    )?;
    Ok(())
}

/// Forgets the company's hook and its triggers; false when there was none.
pub fn delete_hook(company_id: i64) -> Result<bool, SyncError> {
    Ok(Spi::get_one_with_args::<i64>(
        "WITH gone AS (DELETE FROM procore_sync_webhook_hook WHERE company_id = $1 RETURNING 1)
         SELECT count(*) FROM gone",
        &[company_id.into()],
    )?
    .unwrap_or(0)
        > 0)
}

/// What the backstop's look at a hook's deliveries found.
pub fn record_check(
    company_id: i64,
    failing: i64,
    discarded: i64,
    reconciled: bool,
    error: Option<&str>,
) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_webhook_hook
         SET checked_at = now(), check_error = $5,
             failing_deliveries = CASE WHEN $5::text IS NULL THEN $2 ELSE failing_deliveries END,
             discarded_deliveries = CASE WHEN $5::text IS NULL THEN $3 ELSE discarded_deliveries END,
             reconciled_at = CASE WHEN $4 THEN now() ELSE reconciled_at END
         WHERE company_id = $1",
        &[
            company_id.into(),
            (failing.min(i32::MAX as i64) as i32).into(),
            (discarded.min(i32::MAX as i64) as i32).into(),
            reconciled.into(),
            error.into(),
        ],
    )?;
    Ok(())
}

/// Open events, counted up to `limit`: how full the inbox is, at a bounded cost.
pub fn backlog(limit: i64) -> Result<i64, SyncError> {
    Ok(Spi::get_one_with_args::<i64>(
        "SELECT count(*) FROM (
             SELECT 1 FROM procore_sync_webhook_inbox
             WHERE status IN ('pending', 'processing') LIMIT $1) open",
        &[limit.into()],
    )?
    .unwrap_or(0))
}

/// Records a delivery; false when its event was recorded before (a redelivery). An event
/// for a resource the catalog does not sync is recorded as dropped, with the reason.
/// `settle`: how long a new event waits for more of the same record's, so that a burst
/// of edits costs one fetch.
pub fn record_event(
    event: &Event,
    resource: &str,
    dropped: Option<&str>,
    settle_ms: i64,
) -> Result<bool, SyncError> {
    Ok(Spi::get_one_with_args::<i64>(
        "WITH recorded AS (
             INSERT INTO procore_sync_webhook_inbox
                 (event_id, resource_name, resource, company_id, project_id, procore_id,
                  event_type, event_at, status, note, handled_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                     CASE WHEN $9::text IS NULL THEN 'pending' ELSE 'dropped' END, $9,
                     CASE WHEN $9::text IS NULL THEN NULL ELSE clock_timestamp() END,
                     clock_timestamp() + make_interval(secs => $10 / 1000.0))
             ON CONFLICT (event_id) DO NOTHING
             RETURNING 1)
         SELECT count(*) FROM recorded",
        &[
            event.event_id.as_str().into(),
            event.resource_name.as_str().into(),
            resource.into(),
            event.company_id.into(),
            event.project_id.into(),
            event.resource_id.into(),
            event.kind.as_str().into(),
            timestamps::to_sql(event.timestamp).into(),
            dropped.into(),
            (settle_ms as f64).into(),
        ],
    )?
    .unwrap_or(0)
        > 0)
}

/// An event as the inbox holds it.
pub struct InboxEvent {
    pub event: Event,
    /// Times a worker took it, this time included.
    pub attempts: i32,
}

/// Takes up to `limit` due events for this worker, and every other open event of the same
/// records, so a burst of edits to one record is settled by one fetch. Events whose worker
/// died are due again.
pub fn take_events(limit: i64) -> Result<Vec<InboxEvent>, SyncError> {
    Spi::connect_mut(|client| {
        let rows = client.update(
            "WITH due AS (
                 SELECT resource, company_id, procore_id FROM procore_sync_webhook_inbox
                 WHERE (status = 'pending' AND next_attempt_at <= clock_timestamp())
                    OR (status = 'processing' AND NOT procore_sync_backend_alive(worker_pid))
                 ORDER BY next_attempt_at
                 LIMIT $1),
             taken AS (
                 SELECT i.event_id FROM procore_sync_webhook_inbox i
                 JOIN (SELECT DISTINCT * FROM due) d
                   ON (i.resource, i.company_id, i.procore_id)
                      IS NOT DISTINCT FROM (d.resource, d.company_id, d.procore_id)
                 WHERE i.status = 'pending'
                    OR (i.status = 'processing' AND NOT procore_sync_backend_alive(i.worker_pid))
                 FOR UPDATE OF i SKIP LOCKED)
             UPDATE procore_sync_webhook_inbox i
             SET status = 'processing', worker_pid = pg_backend_pid(), attempts = i.attempts + 1
             FROM taken WHERE i.event_id = taken.event_id
             RETURNING i.event_id, i.resource_name, i.resource, i.company_id, i.project_id,
                       i.procore_id, i.event_type, i.event_at, i.attempts",
            None,
            &[limit.into()],
        )?;
        let mut events = Vec::new();
        for row in rows {
            let kind = match row.get::<String>(7)?.as_deref() {
                Some("create") => EventKind::Create,
                Some("delete") => EventKind::Delete,
                _ => EventKind::Update,
            };
            events.push(InboxEvent {
                attempts: row.get(9)?.unwrap_or(1),
                event: Event {
                    event_id: row.get(1)?.unwrap_or_default(),
                    kind,
                    resource_name: row.get(2)?.unwrap_or_default(),
                    resource_id: row.get(6)?.unwrap_or(0),
                    company_id: row.get(4)?,
                    project_id: row.get(5)?,
                    user_id: None,
                    timestamp: row
                        .get::<TimestampWithTimeZone>(8)?
                        .and_then(timestamps::from_sql)
                        .unwrap_or_else(Utc::now),
                },
            });
        }
        Ok(events)
    })
}

/// Ends events: `done`, `dropped` or `failed`, with a note for the last two.
pub fn finish_events(
    event_ids: &[String],
    status: &str,
    note: Option<&str>,
) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_webhook_inbox
         SET status = $2, note = $3, handled_at = clock_timestamp(), worker_pid = NULL
         WHERE event_id = ANY ($1) AND worker_pid = pg_backend_pid()",
        &[event_ids.to_vec().into(), status.into(), note.into()],
    )?;
    Ok(())
}

/// Puts events back until `at`: a rate limit, a token being refreshed, a failed fetch.
pub fn retry_events(event_ids: &[String], at: DateTime<Utc>, note: &str) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_webhook_inbox
         SET status = 'pending', next_attempt_at = $2, note = $3, worker_pid = NULL
         WHERE event_id = ANY ($1) AND worker_pid = pg_backend_pid()",
        &[
            event_ids.to_vec().into(),
            timestamps::to_sql(at).into(),
            note.into(),
        ],
    )?;
    Ok(())
}

/// Who can fetch a record of this scope for an event: a connected user whose own listing
/// of the scope succeeded (so Procore lets them see it), with a token valid for a minute
/// more, freshest listing first; and when their rate limit, as last seen, is spent, when
/// it resets. None: nobody syncs this scope.
pub struct Fetcher {
    pub user_id: String,
    pub access_token: Option<Secret>,
    pub rate_limited_until: Option<DateTime<Utc>>,
}

pub fn fetcher_for(
    resource: &str,
    company_id: i64,
    project_id: i64,
) -> Result<Option<Fetcher>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT c.user_id::text,
                    CASE WHEN cr.expires_at > now() + interval '1 minute' THEN cr.access_token END,
                    (SELECT CASE WHEN q.rate_limit_remaining <= 1 AND q.rate_limit_reset_at > now()
                                 THEN q.rate_limit_reset_at END
                     FROM procore_sync_queue q
                     WHERE q.user_id = c.user_id AND q.rate_limit_limit IS NOT NULL
                     ORDER BY coalesce(q.completed_at, q.started_at) DESC NULLS LAST LIMIT 1)
             FROM procore_sync_cursor c
             JOIN procore_sync_credentials cr ON cr.user_id = c.user_id AND NOT cr.needs_reconnect
             WHERE c.resource = $1 AND c.company_id = $2 AND c.project_id = $3
               AND c.listed_at IS NOT NULL
             ORDER BY (cr.expires_at > now() + interval '1 minute') DESC, c.listed_at DESC
             LIMIT 1",
            Some(1),
            &[resource.into(), company_id.into(), project_id.into()],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(Fetcher {
            user_id: row.get(1)?.unwrap_or_default(),
            access_token: row.get::<String>(2)?.map(Secret::new),
            rate_limited_until: row
                .get::<TimestampWithTimeZone>(3)?
                .and_then(timestamps::from_sql),
        }))
    })
}

/// A record deleted in Procore: marked, never dropped, as a full pass would. `deleted_at`:
/// when the delete event happened, if only an event says so. Deliveries come in any order,
/// so a record whose newer create or update event was handled already (a restore) stays
/// live. Procore's `updated_at` cannot tell: it has whole seconds, and an edit and a delete
/// often share one.
pub fn mark_deleted(
    resource: &str,
    company_id: i64,
    procore_id: i64,
    deleted_at: Option<DateTime<Utc>>,
) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_records SET deleted_at = now()
         WHERE resource = $1 AND company_id = $2 AND procore_id = $3 AND deleted_at IS NULL
           AND ($4::timestamptz IS NULL OR NOT EXISTS (
                 SELECT 1 FROM procore_sync_webhook_inbox i
                 WHERE i.resource = $1 AND i.company_id = $2 AND i.procore_id = $3
                   AND i.status = 'done' AND i.event_type <> 'delete' AND i.event_at > $4))",
        &[
            resource.into(),
            company_id.into(),
            procore_id.into(),
            deleted_at.map(timestamps::to_sql).into(),
        ],
    )?;
    Ok(())
}

/// The backstop's job: `procore_sync_webhooks_enable` schedules it with the first hook, and
/// it goes with the last.
pub const BACKSTOP_JOB: &str = "procore-webhooks-backstop";
pub const BACKSTOP_SCHEDULE: &str = "*/15 * * * *";
pub const BACKSTOP_COMMAND: &str = "SELECT procore_sync_webhooks_check()";

pub fn unschedule_backstop_without_hooks() -> Result<(), SyncError> {
    Spi::run_with_args(
        "DELETE FROM procore_sync_job
         WHERE jobname = $1 AND NOT EXISTS (SELECT 1 FROM procore_sync_webhook_hook)",
        &[BACKSTOP_JOB.into()],
    )?;
    Ok(())
}

/// Deliveries Procore gave up on or keeps failing mean events that may never arrive: every
/// connected user of the company gets a full pass at their next sync, queued now, which
/// reads every record again and marks what is gone. Returns how many users were queued.
pub fn reconcile_company(company_id: i64) -> Result<i64, SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_cursor SET last_full_sync_at = NULL WHERE company_id = $1",
        &[company_id.into()],
    )?;
    Ok(Spi::get_one_with_args::<i64>(
        "WITH queued AS (
             INSERT INTO procore_sync_queue (user_id)
             SELECT DISTINCT c.user_id FROM procore_sync_cursor c
             JOIN procore_sync_credentials cr ON cr.user_id = c.user_id AND NOT cr.needs_reconnect
             WHERE c.company_id = $1
             ON CONFLICT (user_id) WHERE status IN ('pending', 'processing') DO NOTHING
             RETURNING 1)
         SELECT count(*) FROM queued",
        &[company_id.into()],
    )?
    .unwrap_or(0))
}

/// When the company's hook was last reconciled, or created: deliveries older than that
/// are already covered.
pub fn covered_until(company_id: i64) -> Result<Option<DateTime<Utc>>, SyncError> {
    Ok(Spi::get_one_with_args::<TimestampWithTimeZone>(
        "SELECT coalesce(reconciled_at, created_at) FROM procore_sync_webhook_hook
         WHERE company_id = $1",
        &[company_id.into()],
    )?
    .and_then(timestamps::from_sql))
}
