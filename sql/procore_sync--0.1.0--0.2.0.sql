-- procore_sync 0.1.0 -> 0.2.0, run by ALTER EXTENSION procore_sync UPDATE.
-- Written by hand (pgrx does not generate upgrade scripts). The upgrade test
-- (tests/e2e/tests/upgrade.rs) checks that 0.1.0 plus this script describes exactly the
-- same objects as a fresh CREATE EXTENSION of 0.2.0.
\echo Use "ALTER EXTENSION procore_sync UPDATE" to load this file. \quit

-- procore_sync_schedule_in_database (issue 14), as pgrx generates it for a fresh install;
-- like the other scheduling functions, not executable by PUBLIC.
CREATE  FUNCTION "procore_sync_schedule_in_database"(
	"job_name" TEXT, /* Option < & str > */
	"schedule" TEXT, /* Option < & str > */
	"command" TEXT, /* Option < & str > */
	"database" TEXT, /* Option < & str > */
	"username" TEXT DEFAULT NULL, /* Option < & str > */
	"active" bool DEFAULT true /* Option < bool > */
) RETURNS bigint /* i64 */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'procore_sync_schedule_in_database_wrapper';
REVOKE EXECUTE ON FUNCTION procore_sync_schedule_in_database(text, text, text, text, text, boolean) FROM PUBLIC;

-- Per-user visibility (issue 15). Columns are added where a fresh install has them: last.
-- Records of 0.1.0 get first_synced_at '-infinity' without rewriting the table; no user
-- holds a grant yet (listed_at is NULL), so each user's next sync reads every scope in full
-- before they see anything through procore_sync_visible.
ALTER TABLE procore_records
    ADD COLUMN first_synced_at timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN orphaned_at timestamptz;
ALTER TABLE procore_records ALTER COLUMN first_synced_at SET DEFAULT clock_timestamp();
CREATE INDEX procore_records_first_synced_at ON procore_records (first_synced_at);
ALTER TABLE procore_sync_cursor ADD COLUMN listed_at timestamptz;
CREATE INDEX procore_sync_cursor_scope ON procore_sync_cursor (resource, company_id, project_id);
-- procore_sync_user() finds the item its worker finished by the asking session's pid.
ALTER TABLE procore_sync_queue ADD COLUMN requested_by integer;

CREATE TABLE procore_sync_hidden (
    resource   text NOT NULL,
    company_id bigint NOT NULL,
    procore_id bigint NOT NULL,
    user_ids   uuid[] NOT NULL,
    PRIMARY KEY (resource, company_id, procore_id)
);
CREATE INDEX procore_sync_hidden_users ON procore_sync_hidden USING gin (user_ids);
REVOKE ALL ON procore_sync_hidden FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('procore_sync_hidden', '');

-- The typed views read procore_records with the querying role's rights, so a row-level
-- security policy there applies through them.
ALTER VIEW procore_companies SET (security_invoker = true);
ALTER VIEW procore_projects SET (security_invoker = true);
ALTER VIEW procore_vendors SET (security_invoker = true);
ALTER VIEW procore_project_users SET (security_invoker = true);
ALTER VIEW procore_rfis SET (security_invoker = true);
ALTER VIEW procore_submittals SET (security_invoker = true);
ALTER VIEW procore_punch_items SET (security_invoker = true);
ALTER VIEW procore_observations SET (security_invoker = true);
ALTER VIEW procore_change_events SET (security_invoker = true);

CREATE FUNCTION procore_sync_visible(user_id uuid, resource text, company_id bigint, procore_id bigint)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1
        FROM procore_records r
        JOIN procore_sync_cursor c
          ON c.user_id = $1 AND c.resource = r.resource AND c.company_id = r.company_id
         AND c.project_id = coalesce(r.project_id, 0)
        WHERE r.resource = $2 AND r.company_id = $3 AND r.procore_id = $4
          AND c.listed_at >= r.first_synced_at
          AND NOT EXISTS (
              SELECT 1 FROM procore_sync_hidden h
              WHERE h.resource = $2 AND h.company_id = $3 AND h.procore_id = $4
                AND $1 = ANY (h.user_ids)))
$$;
REVOKE EXECUTE ON FUNCTION procore_sync_visible(uuid, text, bigint, bigint) FROM PUBLIC;

-- The same answer as sets, for policies over many rows. A per-row function call costs a
-- query of its own (tens of microseconds); these are each evaluated once per query, and
-- the policy probes them as hashed sets (see the README for the policy).
-- The scopes the user holds a grant to.
CREATE FUNCTION procore_sync_visible_scopes(for_user uuid)
RETURNS TABLE (resource text, company_id bigint, project_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
    SELECT c.resource, c.company_id, c.project_id FROM procore_sync_cursor c
    WHERE c.user_id = $1 AND c.listed_at IS NOT NULL
$$;
-- The records of those scopes the user may not see: their exceptions, and records stored
-- after the user's last listing of their scope.
-- The exceptions are found through their GIN index: a sequential scan, which the planner
-- picks for a table of few rows, would unpack every row's array of user ids.
CREATE FUNCTION procore_sync_invisible_records(for_user uuid)
RETURNS TABLE (resource text, company_id bigint, procore_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, @extschema@, pg_temp
SET enable_seqscan = off
AS $$
    SELECT h.resource, h.company_id, h.procore_id FROM procore_sync_hidden h
    WHERE h.user_ids @> ARRAY[$1]
    UNION ALL
    SELECT r.resource, r.company_id, r.procore_id
    FROM procore_records r
    JOIN procore_sync_cursor c
      ON c.user_id = $1 AND c.resource = r.resource AND c.company_id = r.company_id
     AND c.project_id = coalesce(r.project_id, 0)
    WHERE r.first_synced_at > (SELECT min(m.listed_at) FROM procore_sync_cursor m WHERE m.user_id = $1)
      AND r.first_synced_at > c.listed_at
$$;
REVOKE EXECUTE ON FUNCTION procore_sync_visible_scopes(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_invisible_records(uuid) FROM PUBLIC;

-- Procore webhooks (sql/webhooks.sql, as a fresh install creates it).

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

CREATE FUNCTION "procore_sync_webhook"("payload" jsonb, "authorization" TEXT) RETURNS TEXT
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'procore_sync_webhook_wrapper';
CREATE FUNCTION "procore_sync_webhooks_enable"("user_id" uuid, "company_id" bigint, "destination_url" TEXT)
RETURNS bigint
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'procore_sync_webhooks_enable_wrapper';
CREATE FUNCTION "procore_sync_webhooks_disable"("company_id" bigint) RETURNS bool
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'procore_sync_webhooks_disable_wrapper';
CREATE FUNCTION "procore_sync_webhooks_check"() RETURNS INT
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'procore_sync_webhooks_check_wrapper';
REVOKE EXECUTE ON FUNCTION procore_sync_webhook(jsonb, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_webhooks_check() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_webhooks_enable(uuid, bigint, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_webhooks_disable(bigint) FROM PUBLIC;

-- The metrics as SQL (the same values as the listener's GET /metrics).
CREATE FUNCTION "procore_sync_metrics"() RETURNS TABLE (
	"name" TEXT,
	"kind" TEXT,
	"labels" jsonb,
	"value" double precision
)
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', 'procore_sync_metrics_wrapper';
REVOKE EXECUTE ON FUNCTION procore_sync_metrics() FROM PUBLIC;

-- Operator alerts (sql/alerts.sql).
-- The state the alert policies weigh the next observation against, per subject:
-- 'user:<uuid>' (healthy, failing, must_reconnect), 'job:<jobname>' (failed_runs in a row)
-- and 'queue' (draining, stalled).
CREATE TABLE procore_sync_alert_streak (
    subject     text PRIMARY KEY,
    state       text NOT NULL,
    failed_runs integer NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every alert raised; `details` holds what the message will say. `composed_at` is set once
-- the alert went into a message, alone or in a digest, whether or not a channel is set.
CREATE TABLE procore_sync_alert (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    subject     text NOT NULL,
    details     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    composed_at timestamptz
);
CREATE INDEX procore_sync_alert_uncomposed ON procore_sync_alert (created_at)
    WHERE composed_at IS NULL;
CREATE INDEX procore_sync_alert_created_at ON procore_sync_alert (created_at);

-- One message on one channel. `status`: pending until sent (or until its next try, after
-- a failed one), sent, or failed once the retries ran out, with the last error.
CREATE TABLE procore_sync_alert_delivery (
    id              bigserial PRIMARY KEY,
    alert_ids       bigint[] NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('email', 'webhook')),
    subject         text NOT NULL,
    body            text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at     timestamptz,
    last_error      text
);
CREATE INDEX procore_sync_alert_delivery_due ON procore_sync_alert_delivery (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX procore_sync_alert_delivery_finished_at ON procore_sync_alert_delivery (finished_at);
