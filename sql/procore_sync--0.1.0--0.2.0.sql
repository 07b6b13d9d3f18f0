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
-- Child resources (issue 13): a child record knows its parent, and a user's cursor of a
-- child resource is per parent record.
ALTER TABLE procore_records ADD COLUMN parent_id bigint;
CREATE INDEX procore_records_parent ON procore_records (resource, parent_id, procore_id)
    WHERE parent_id IS NOT NULL;
ALTER TABLE procore_sync_cursor ADD COLUMN parent_id bigint NOT NULL DEFAULT 0;
ALTER TABLE procore_sync_cursor DROP CONSTRAINT procore_sync_cursor_pkey,
    ADD CONSTRAINT procore_sync_cursor_pkey PRIMARY KEY (user_id, resource, company_id, project_id, parent_id);
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
         AND c.project_id = coalesce(r.project_id, 0) AND c.parent_id = coalesce(r.parent_id, 0)
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
-- The records of those scopes the user may not see: their exceptions, records stored
-- after the user's last listing of their scope, and the children of every parent whose
-- listing the user holds no grant to: a child resource's scope above is granted by any one
-- of its parents', so a parent the user never listed (another user's private RFI) or was
-- refused must hide its children here.
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
     AND c.project_id = coalesce(r.project_id, 0) AND c.parent_id = coalesce(r.parent_id, 0)
    WHERE r.first_synced_at > (SELECT min(m.listed_at) FROM procore_sync_cursor m WHERE m.user_id = $1)
      AND r.first_synced_at > c.listed_at
    UNION ALL
    SELECT r.resource, r.company_id, r.procore_id
    FROM (SELECT DISTINCT g.resource, g.company_id, g.project_id FROM procore_sync_cursor g
          WHERE g.user_id = $1 AND g.parent_id <> 0 AND g.listed_at IS NOT NULL) s
    JOIN procore_records r ON r.resource = s.resource AND r.company_id = s.company_id
     AND coalesce(r.project_id, 0) = s.project_id
    WHERE r.parent_id IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM procore_sync_cursor c
          WHERE c.user_id = $1 AND c.resource = r.resource AND c.company_id = r.company_id
            AND c.project_id = s.project_id AND c.parent_id = r.parent_id
            AND c.listed_at IS NOT NULL)
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

-- The catalog (issue 13): child, dated and deleted-record listings, as a fresh install has
-- them (sql/schema.sql).
ALTER TABLE procore_sync_resource
    ADD COLUMN parent_resource text REFERENCES procore_sync_resource (name) ON UPDATE CASCADE,
    ADD COLUMN parent_placeholder text CHECK (parent_placeholder ~ '^[a-z][a-z0-9_]*$'
                                           AND parent_placeholder NOT IN ('company_id', 'project_id')),
    ADD COLUMN date_filter text CHECK (date_filter IN ('log_date', 'date_range')),
    ADD COLUMN history_on_first_sync boolean NOT NULL DEFAULT false,
    ADD COLUMN recycle_bin_path text CHECK (recycle_bin_path LIKE '/%'),
    ADD COLUMN include_deleted boolean NOT NULL DEFAULT false,
    ADD COLUMN records_key text,
    ADD CONSTRAINT procore_sync_resource_parent_pair
        CHECK ((parent_resource IS NULL) = (parent_placeholder IS NULL)),
    ADD CONSTRAINT procore_sync_resource_parent_in_path
        CHECK (parent_placeholder IS NULL
               OR strpos(path_template, '{' || parent_placeholder || '}') > 0),
    ADD CONSTRAINT procore_sync_resource_history_needs_date_range
        CHECK (NOT history_on_first_sync OR date_filter = 'date_range'),
    -- One object per answer has no next page to follow.
    ADD CONSTRAINT procore_sync_resource_records_key_unpaginated
        CHECK (records_key IS NULL OR NOT paginated);

-- The rules a constraint cannot state: a parent exists, has the child's scope, is not one of
-- the two resources the walk itself is built on, and no chain of parents loops.
CREATE FUNCTION procore_sync_resource_parents() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
DECLARE
    parent_scope text;
BEGIN
    IF EXISTS (SELECT 1 FROM procore_sync_resource c
               WHERE c.parent_resource = NEW.name AND c.name <> NEW.name AND c.scope <> NEW.scope) THEN
        RAISE EXCEPTION 'procore_sync_resource %: its child resources have another scope than %',
            NEW.name, NEW.scope USING ERRCODE = '23514';
    END IF;
    IF NEW.parent_resource IS NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.parent_resource IN ('companies', 'projects') THEN
        RAISE EXCEPTION 'procore_sync_resource %: % cannot be a parent resource', NEW.name, NEW.parent_resource
            USING ERRCODE = '23514',
                  HINT = 'A resource listed per company or per project uses scope ''company'' or ''project'' instead.';
    END IF;
    IF NEW.parent_resource = NEW.name THEN
        RAISE EXCEPTION 'procore_sync_resource %: a resource cannot be its own parent', NEW.name
            USING ERRCODE = '23514';
    END IF;
    SELECT r.scope INTO parent_scope FROM procore_sync_resource r WHERE r.name = NEW.parent_resource;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'procore_sync_resource %: parent resource % does not exist', NEW.name, NEW.parent_resource
            USING ERRCODE = '23503', HINT = 'Insert the parent resource first.';
    END IF;
    IF parent_scope <> NEW.scope THEN
        RAISE EXCEPTION 'procore_sync_resource %: scope % differs from its parent %''s scope %',
            NEW.name, NEW.scope, NEW.parent_resource, parent_scope USING ERRCODE = '23514';
    END IF;
    IF EXISTS (
        WITH RECURSIVE up (name) AS (
            SELECT NEW.parent_resource
            UNION
            SELECT r.parent_resource FROM up JOIN procore_sync_resource r ON r.name = up.name
            WHERE r.parent_resource IS NOT NULL)
        SELECT 1 FROM up WHERE up.name = NEW.name) THEN
        RAISE EXCEPTION 'procore_sync_resource %: parent resource % makes a cycle of parents', NEW.name, NEW.parent_resource
            USING ERRCODE = '23514';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER procore_sync_resource_parents
    BEFORE INSERT OR UPDATE ON procore_sync_resource
    FOR EACH ROW EXECUTE FUNCTION procore_sync_resource_parents();

-- 0.2.0's catalog: deletions where Procore lists them, and the resources a construction app
-- needs beyond the first nine. The new resources ship disabled: turned on by an upgrade
-- they would multiply every user's requests (one per drawing area, per folder, per RFI)
-- without anyone asking; `UPDATE procore_sync_resource SET enabled = true WHERE ...`.
UPDATE procore_sync_resource SET recycle_bin_path = v.bin
FROM (VALUES
    ('rfis',         '/rest/v1.0/projects/{project_id}/rfis/recycle_bin'),
    ('submittals',   '/rest/v1.1/projects/{project_id}/submittals/recycle_bin'),
    ('punch_items',  '/rest/v1.1/punch_items/recycle_bin?project_id={project_id}'),
    ('observations', '/rest/v1.0/projects/{project_id}/recycle_bin/observations/items')
) AS v (name, bin)
WHERE procore_sync_resource.name = v.name;
UPDATE procore_sync_resource SET include_deleted = true WHERE name = 'change_events';

INSERT INTO procore_sync_resource
    (name, path_template, scope, supports_updated_at_filter, paginated, enabled,
     parent_resource, parent_placeholder, date_filter, include_deleted, records_key) VALUES
    ('drawing_areas',            '/rest/v1.1/projects/{project_id}/drawing_areas',                              'project', false, true,  false, NULL,            NULL,              NULL,         false, NULL),
    ('drawings',                 '/rest/v1.1/drawing_areas/{drawing_area_id}/drawings?project_id={project_id}', 'project', false, true,  false, 'drawing_areas', 'drawing_area_id', NULL,         false, NULL),
    ('folders',                  '/rest/v1.0/folders?project_id={project_id}',                                  'project', false, false, false, NULL,            NULL,              NULL,         false, 'folders'),
    ('files',                    '/rest/v1.0/folders/{folder_id}?project_id={project_id}',                      'project', false, false, false, 'folders',       'folder_id',       NULL,         false, 'files'),
    ('manpower_logs',            '/rest/v1.0/projects/{project_id}/manpower_logs',                              'project', false, true,  false, NULL,            NULL,              'date_range', false, NULL),
    ('notes_logs',               '/rest/v1.0/projects/{project_id}/notes_logs',                                 'project', false, true,  false, NULL,            NULL,              'date_range', false, NULL),
    ('weather_logs',             '/rest/v1.0/projects/{project_id}/weather_logs',                               'project', false, true,  false, NULL,            NULL,              'date_range', false, NULL),
    ('work_order_contracts',     '/rest/v1.0/work_order_contracts?project_id={project_id}',                     'project', true,  true,  false, NULL,            NULL,              NULL,         true,  NULL),
    ('purchase_order_contracts', '/rest/v1.0/purchase_order_contracts?project_id={project_id}',                 'project', true,  true,  false, NULL,            NULL,              NULL,         true,  NULL),
    ('change_order_packages',    '/rest/v1.0/change_order_packages?project_id={project_id}',                    'project', true,  true,  false, NULL,            NULL,              NULL,         false, NULL),
    ('meetings',                 '/rest/v1.0/meetings?project_id={project_id}',                                 'project', true,  true,  false, NULL,            NULL,              NULL,         false, NULL),
    ('inspections',              '/rest/v1.0/checklist/lists?project_id={project_id}',                          'project', true,  true,  false, NULL,            NULL,              NULL,         false, NULL),
    ('rfi_replies',              '/rest/v1.0/projects/{project_id}/rfis/{rfi_id}/replies',                      'project', false, true,  false, 'rfis',          'rfi_id',          NULL,         false, NULL)
-- A row a user added under one of these names before 0.2.0 is theirs: it stays as it is.
ON CONFLICT (name) DO NOTHING;

-- A record marked deleted takes the records listed under it along (a drawing area's
-- drawings, an RFI's replies), down the whole tree: a sync reads children only under live
-- parents, so nothing would ever mark them. A restored parent's children come back as its
-- listings return them.
CREATE FUNCTION procore_sync_delete_children() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, @extschema@, pg_temp
AS $$
BEGIN
    UPDATE procore_records c SET deleted_at = NEW.deleted_at
    FROM procore_sync_resource r
    WHERE r.parent_resource = NEW.resource AND r.name <> NEW.resource
      AND c.resource = r.name AND c.parent_id = NEW.procore_id
      AND c.company_id = NEW.company_id AND c.deleted_at IS NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER procore_records_delete_children
    AFTER UPDATE OF deleted_at ON procore_records
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION procore_sync_delete_children();

-- Operator alerts (sql/alerts.sql).
-- The state the alert policies weigh the next observation against, per subject:
-- 'user:<uuid>' (healthy, failing, must_reconnect), 'job:<jobid>' (failed_runs in a row)
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

-- Typed views of the catalog's new resources (issue 13), as sql/views.sql creates them.
-- The catalog's resources (issue 13). Values the API sends as text or as numbers are
-- typed only when they parse: a field holding something else reads NULL, and the raw value
-- stays in `data`. Ids and counts must be plain integers (at most 18 digits for bigint, 9
-- for integer), amounts plain decimals, dates YYYY-MM-DD of a real day, booleans JSON
-- booleans. Each guard is a CASE, evaluated before the cast it protects.
CREATE VIEW procore_drawing_areas WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id, name,
       data->>'description' AS description,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'drawing_areas';

CREATE VIEW procore_drawings WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       -- The drawing area whose listing returned it; the record's own field where older rows lack it.
       coalesce(parent_id, CASE WHEN data->>'drawing_area_id' ~ '^-?[0-9]{1,18}$' THEN (data->>'drawing_area_id')::bigint END) AS drawing_area_id,
       data->>'number' AS number, name AS title,
       coalesce(data->'discipline'->>'name', data->>'discipline') AS discipline,
       CASE jsonb_typeof(data->'obsolete') WHEN 'boolean' THEN (data->'obsolete')::boolean END AS obsolete,
       CASE WHEN data->'current_revision'->>'id' ~ '^-?[0-9]{1,18}$' THEN (data->'current_revision'->>'id')::bigint END AS current_revision_id,
       data->'current_revision'->>'revision_number' AS current_revision_number,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'drawings';

CREATE VIEW procore_folders WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       CASE WHEN data->>'parent_id' ~ '^-?[0-9]{1,18}$' THEN (data->>'parent_id')::bigint END AS parent_id,
       name, data->>'name_with_path' AS name_with_path,
       CASE jsonb_typeof(data->'private') WHEN 'boolean' THEN (data->'private')::boolean END AS private,
       CASE jsonb_typeof(data->'read_only') WHEN 'boolean' THEN (data->'read_only')::boolean END AS read_only,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'folders';

CREATE VIEW procore_files WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       coalesce(parent_id, CASE WHEN data->>'parent_id' ~ '^-?[0-9]{1,18}$' THEN (data->>'parent_id')::bigint END) AS folder_id,
       name, data->>'name_with_path' AS name_with_path,
       data->>'description' AS description,
       data->>'file_type' AS file_type,
       CASE WHEN data->>'size' ~ '^-?[0-9]{1,18}$' THEN (data->>'size')::bigint END AS size,
       CASE jsonb_typeof(data->'private') WHEN 'boolean' THEN (data->'private')::boolean END AS private,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'files';

CREATE VIEW procore_rfi_replies WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       coalesce(parent_id, CASE WHEN data->>'rfi_id' ~ '^-?[0-9]{1,18}$' THEN (data->>'rfi_id')::bigint END) AS rfi_id,
       data->>'plain_text_body' AS body,
       CASE jsonb_typeof(data->'official') WHEN 'boolean' THEN (data->'official')::boolean END AS official,
       CASE WHEN coalesce(data->'created_by'->>'id', data->>'created_by_id') ~ '^-?[0-9]{1,18}$'
            THEN coalesce(data->'created_by'->>'id', data->>'created_by_id')::bigint END AS created_by_id,
       coalesce(data->'created_by'->>'name', data->>'created_by') AS created_by,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'rfi_replies';

-- Daily logs: `log_date` is the day logged (Procore's `date`), not when it was entered.
-- The day check is nested: a month's last day is only asked of a string already known to
-- be a date of a real month.
CREATE VIEW procore_manpower_logs WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       CASE WHEN data->>'date' ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$' THEN
           CASE WHEN right(data->>'date', 2)::integer
                     <= extract(day from (left(data->>'date', 8) || '01')::date + interval '1 month - 1 day')
                THEN (data->>'date')::date END END AS log_date,
       status, data->>'notes' AS notes,
       CASE WHEN data->>'num_workers' ~ '^-?[0-9]{1,9}$' THEN (data->>'num_workers')::integer END AS num_workers,
       CASE WHEN data->>'num_hours' ~ '^-?[0-9]{1,30}(\.[0-9]{1,30})?$' THEN (data->>'num_hours')::numeric END AS num_hours,
       CASE WHEN data->>'man_hours' ~ '^-?[0-9]{1,30}(\.[0-9]{1,30})?$' THEN (data->>'man_hours')::numeric END AS man_hours,
       CASE WHEN data->'vendor'->>'id' ~ '^-?[0-9]{1,18}$' THEN (data->'vendor'->>'id')::bigint END AS vendor_id,
       coalesce(data->'vendor'->>'name', data->'vendor'->>'company') AS vendor_name,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'manpower_logs';

CREATE VIEW procore_notes_logs WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       CASE WHEN data->>'date' ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$' THEN
           CASE WHEN right(data->>'date', 2)::integer
                     <= extract(day from (left(data->>'date', 8) || '01')::date + interval '1 month - 1 day')
                THEN (data->>'date')::date END END AS log_date,
       status, data->>'comment' AS comment,
       CASE jsonb_typeof(data->'is_issue_day') WHEN 'boolean' THEN (data->'is_issue_day')::boolean END AS is_issue_day,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'notes_logs';

-- Procore sends weather readings as text ("72", "Yes"): the temperature is a number only
-- when it is one, the delay flag a boolean for a JSON boolean or yes/no.
CREATE VIEW procore_weather_logs WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       CASE WHEN data->>'date' ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$' THEN
           CASE WHEN right(data->>'date', 2)::integer
                     <= extract(day from (left(data->>'date', 8) || '01')::date + interval '1 month - 1 day')
                THEN (data->>'date')::date END END AS log_date,
       status, data->>'comments' AS comments,
       data->>'sky' AS sky,
       CASE WHEN data->>'temperature' ~ '^-?[0-9]{1,30}(\.[0-9]{1,30})?$' THEN (data->>'temperature')::numeric END AS temperature,
       data->>'precipitation' AS precipitation,
       data->>'wind' AS wind,
       data->>'ground' AS ground,
       CASE WHEN jsonb_typeof(data->'is_weather_delay') = 'boolean' THEN (data->'is_weather_delay')::boolean
            WHEN lower(data->>'is_weather_delay') IN ('yes', 'true') THEN true
            WHEN lower(data->>'is_weather_delay') IN ('no', 'false') THEN false END AS is_weather_delay,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'weather_logs';

-- Commitments: Procore sends amounts as decimal strings ("1000.00").
CREATE VIEW procore_work_order_contracts WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       data->>'number' AS number, name AS title, status,
       CASE jsonb_typeof(data->'executed') WHEN 'boolean' THEN (data->'executed')::boolean END AS executed,
       CASE jsonb_typeof(data->'private') WHEN 'boolean' THEN (data->'private')::boolean END AS private,
       CASE WHEN data->'vendor'->>'id' ~ '^-?[0-9]{1,18}$' THEN (data->'vendor'->>'id')::bigint END AS vendor_id,
       coalesce(data->'vendor'->>'name', data->'vendor'->>'company') AS vendor_name,
       CASE WHEN data->>'grand_total' ~ '^-?[0-9]{1,30}(\.[0-9]{1,30})?$' THEN (data->>'grand_total')::numeric END AS grand_total,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'work_order_contracts';

CREATE VIEW procore_purchase_order_contracts WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       data->>'number' AS number, name AS title, status,
       CASE jsonb_typeof(data->'executed') WHEN 'boolean' THEN (data->'executed')::boolean END AS executed,
       CASE jsonb_typeof(data->'private') WHEN 'boolean' THEN (data->'private')::boolean END AS private,
       CASE WHEN data->'vendor'->>'id' ~ '^-?[0-9]{1,18}$' THEN (data->'vendor'->>'id')::bigint END AS vendor_id,
       coalesce(data->'vendor'->>'name', data->'vendor'->>'company') AS vendor_name,
       CASE WHEN data->>'grand_total' ~ '^-?[0-9]{1,30}(\.[0-9]{1,30})?$' THEN (data->>'grand_total')::numeric END AS grand_total,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'purchase_order_contracts';

CREATE VIEW procore_change_order_packages WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       data->>'number' AS number, name AS title, status,
       CASE WHEN data->>'grand_total' ~ '^-?[0-9]{1,30}(\.[0-9]{1,30})?$' THEN (data->>'grand_total')::numeric END AS grand_total,
       CASE WHEN data->>'due_date' ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$' THEN
           CASE WHEN right(data->>'due_date', 2)::integer
                     <= extract(day from (left(data->>'due_date', 8) || '01')::date + interval '1 month - 1 day')
                THEN (data->>'due_date')::date END END AS due_date,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'change_order_packages';

CREATE VIEW procore_meetings WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       name AS title, data->>'group_title' AS group_title, status,
       CASE WHEN data->>'meeting_date' ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$' THEN
           CASE WHEN right(data->>'meeting_date', 2)::integer
                     <= extract(day from (left(data->>'meeting_date', 8) || '01')::date + interval '1 month - 1 day')
                THEN (data->>'meeting_date')::date END END AS meeting_date,
       CASE WHEN data->>'position' ~ '^-?[0-9]{1,9}$' THEN (data->>'position')::integer END AS position,
       CASE jsonb_typeof(data->'is_private') WHEN 'boolean' THEN (data->'is_private')::boolean END AS is_private,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'meetings';

-- Inspections are Procore's checklist lists.
CREATE VIEW procore_inspections WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       data->>'number' AS number, name, status,
       CASE WHEN data->>'inspection_date' ~ '^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$' THEN
           CASE WHEN right(data->>'inspection_date', 2)::integer
                     <= extract(day from (left(data->>'inspection_date', 8) || '01')::date + interval '1 month - 1 day')
                THEN (data->>'inspection_date')::date END END AS inspection_date,
       coalesce(data->'list_template'->>'name', data->>'list_template_name') AS list_template_name,
       CASE WHEN data->'inspector'->>'id' ~ '^-?[0-9]{1,18}$' THEN (data->'inspector'->>'id')::bigint END AS inspector_id,
       data->'inspector'->>'name' AS inspector_name,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'inspections';

-- procore_sync_resync (issue 13), as pgrx generates it; an administration function, not
-- executable by PUBLIC.
CREATE  FUNCTION "procore_sync_resync"(
	"resource" TEXT, /* Option < & str > */
	"company_id" bigint DEFAULT NULL /* Option < i64 > */
) RETURNS INT /* i32 */
VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, @extschema@, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'procore_sync_resync_wrapper';
REVOKE EXECUTE ON FUNCTION procore_sync_resync(text, bigint) FROM PUBLIC;
