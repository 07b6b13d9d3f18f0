-- Procore webhooks: the hooks this database registered, their triggers, and the inbox of
-- events received, which the sync workers turn into one-record fetches.

-- One hook per company, registered by procore_sync_webhooks_enable() with a user's token.
-- `secret` is the Authorization value Procore sends back with every delivery: readable by
-- the extension owner only, like the tokens.
CREATE TABLE procore_sync_webhook_hook (
    company_id           bigint PRIMARY KEY,
    hook_id              bigint NOT NULL,
    registered_by        uuid NOT NULL,
    destination_url      text NOT NULL,
    secret               text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    -- The backstop's last look at the hook's deliveries listing, and what it found.
    checked_at           timestamptz,
    failing_deliveries   integer NOT NULL DEFAULT 0,
    discarded_deliveries integer NOT NULL DEFAULT 0,
    reconciled_at        timestamptz,
    check_error          text
);
REVOKE ALL ON procore_sync_webhook_hook FROM PUBLIC;

CREATE TABLE procore_sync_webhook_trigger (
    company_id    bigint NOT NULL REFERENCES procore_sync_webhook_hook ON DELETE CASCADE,
    resource_name text NOT NULL,
    event_type    text NOT NULL CHECK (event_type IN ('create', 'update', 'delete')),
    PRIMARY KEY (company_id, resource_name, event_type)
);

-- Every delivery received, once per event id (Procore delivers at least once), with
-- Procore's resource name as sent and the catalog's. `status`:
-- pending until a worker handles it; done; dropped (a company, project or resource that is
-- not synced, with `note` saying which); failed (given up, with `note`).
CREATE TABLE procore_sync_webhook_inbox (
    event_id        text PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    resource_name   text NOT NULL,
    resource        text NOT NULL,
    company_id      bigint,
    project_id      bigint,
    procore_id      bigint NOT NULL,
    event_type      text NOT NULL CHECK (event_type IN ('create', 'update', 'delete')),
    event_at        timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'done', 'dropped', 'failed')),
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts        integer NOT NULL DEFAULT 0,
    worker_pid      integer,
    handled_at      timestamptz,
    note            text
);
CREATE INDEX procore_sync_webhook_inbox_due ON procore_sync_webhook_inbox (next_attempt_at)
    WHERE status IN ('pending', 'processing');
-- A record's events: those a worker takes together, and the newest it handled.
CREATE INDEX procore_sync_webhook_inbox_record
    ON procore_sync_webhook_inbox (resource, company_id, procore_id);
CREATE INDEX procore_sync_webhook_inbox_handled_at ON procore_sync_webhook_inbox (handled_at);

SELECT pg_catalog.pg_extension_config_dump('procore_sync_webhook_hook', '');
SELECT pg_catalog.pg_extension_config_dump('procore_sync_webhook_trigger', '');

-- One row per hook: what it delivers, what arrived, and what the backstop found. The
-- secret is not shown.
CREATE VIEW procore_sync_webhooks AS
SELECT h.company_id, h.hook_id, h.destination_url, h.registered_by, h.created_at,
       coalesce(t.triggers, ARRAY[]::text[]) AS triggers,
       e.last_delivery_at,
       coalesce(e.events_received, 0) AS events_received,
       coalesce(e.events_pending, 0) AS events_pending,
       coalesce(e.events_done, 0) AS events_done,
       coalesce(e.events_dropped, 0) AS events_dropped,
       coalesce(e.events_failed, 0) AS events_failed,
       h.failing_deliveries, h.discarded_deliveries, h.checked_at, h.reconciled_at,
       h.check_error
FROM procore_sync_webhook_hook h
LEFT JOIN LATERAL (
    SELECT array_agg(tr.resource_name || ':' || tr.event_type
                     ORDER BY tr.resource_name, tr.event_type) AS triggers
    FROM procore_sync_webhook_trigger tr WHERE tr.company_id = h.company_id) t ON true
LEFT JOIN LATERAL (
    SELECT max(i.received_at) AS last_delivery_at, count(*) AS events_received,
           count(*) FILTER (WHERE i.status IN ('pending', 'processing')) AS events_pending,
           count(*) FILTER (WHERE i.status = 'done') AS events_done,
           count(*) FILTER (WHERE i.status = 'dropped') AS events_dropped,
           count(*) FILTER (WHERE i.status = 'failed') AS events_failed
    FROM procore_sync_webhook_inbox i WHERE i.company_id = h.company_id) e ON true;
