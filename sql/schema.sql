-- procore_sync schema: every table the extension owns, in the schema it is created in, so
-- the monitoring SQL of the old pg_cron + pg_net setup keeps working unchanged.

-- Procore OAuth credentials, one row per application user. Only the extension owner can
-- read it: tokens never leave this table except in the Authorization header.
CREATE TABLE procore_sync_credentials (
    user_id          uuid PRIMARY KEY,
    access_token     text NOT NULL,
    refresh_token    text NOT NULL,
    expires_at       timestamptz NOT NULL,
    needs_reconnect  boolean NOT NULL DEFAULT false,
    reconnect_reason text,
    connected_at     timestamptz NOT NULL DEFAULT now(),
    refreshed_at     timestamptz
);
REVOKE ALL ON procore_sync_credentials FROM PUBLIC;

-- The work queue. The column set is the old setup's, plus what retries and leases need.
CREATE TABLE procore_sync_queue (
    id               bigserial PRIMARY KEY,
    user_id          uuid NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz,
    error_message    text,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    worker_pid       integer,
    records_written  bigint NOT NULL DEFAULT 0,
    requests_made    bigint NOT NULL DEFAULT 0,
    -- Procore's X-Rate-Limit-* headers as last seen by this item's sync.
    rate_limit_remaining integer,
    rate_limit_limit     integer,
    rate_limit_reset_at  timestamptz,
    -- The session whose procore_sync_user() asked for this sync: how it finds its result.
    requested_by     integer
);
-- At most one open item per user: queuing twice is a no-op, and two workers can never hold
-- the same user.
CREATE UNIQUE INDEX procore_sync_queue_one_open_item_per_user
    ON procore_sync_queue (user_id) WHERE status IN ('pending', 'processing');
CREATE INDEX procore_sync_queue_due ON procore_sync_queue (next_attempt_at)
    WHERE status IN ('pending', 'processing');
CREATE INDEX procore_sync_queue_created_at ON procore_sync_queue (created_at);

-- What is synced. A user adds an endpoint with one INSERT; `companies` and `projects` are
-- always synced because every other resource hangs off them.
-- A child resource (`parent_resource`) is listed once per live record of its parent, in the
-- parent's scope, the parent's id filling `{parent_placeholder}` in its path. A dated one
-- (`date_filter`) is read by days. Its deleted records are read at every incremental pass
-- from `recycle_bin_path`, or from its list with `filters[include_deleted]=only`.
-- `records_key`: the endpoint answers one object whose records are the array under this key.
CREATE TABLE procore_sync_resource (
    name                       text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    path_template              text NOT NULL CHECK (path_template LIKE '/%'),
    scope                      text NOT NULL CHECK (scope IN ('user', 'company', 'project')),
    supports_updated_at_filter boolean NOT NULL DEFAULT false,
    paginated                  boolean NOT NULL DEFAULT true,
    per_page                   integer NOT NULL DEFAULT 100 CHECK (per_page BETWEEN 1 AND 10000),
    enabled                    boolean NOT NULL DEFAULT true,
    parent_resource            text REFERENCES procore_sync_resource (name) ON UPDATE CASCADE,
    parent_placeholder         text CHECK (parent_placeholder ~ '^[a-z][a-z0-9_]*$'
                                           AND parent_placeholder NOT IN ('company_id', 'project_id')),
    date_filter                text CHECK (date_filter IN ('log_date', 'date_range')),
    history_on_first_sync      boolean NOT NULL DEFAULT false,
    recycle_bin_path           text CHECK (recycle_bin_path LIKE '/%'),
    include_deleted            boolean NOT NULL DEFAULT false,
    records_key                text,
    CHECK (scope <> 'company' OR path_template LIKE '%{company_id}%'),
    CHECK (scope <> 'project' OR path_template LIKE '%{project_id}%'),
    CONSTRAINT procore_sync_resource_parent_pair
        CHECK ((parent_resource IS NULL) = (parent_placeholder IS NULL)),
    CONSTRAINT procore_sync_resource_parent_in_path
        CHECK (parent_placeholder IS NULL
               OR strpos(path_template, '{' || parent_placeholder || '}') > 0),
    CONSTRAINT procore_sync_resource_history_needs_date_range
        CHECK (NOT history_on_first_sync OR date_filter = 'date_range'),
    -- One object per answer has no next page to follow.
    CONSTRAINT procore_sync_resource_records_key_unpaginated
        CHECK (records_key IS NULL OR NOT paginated)
);

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

INSERT INTO procore_sync_resource (name, path_template, scope, supports_updated_at_filter, paginated) VALUES
    ('companies',     '/rest/v1.0/companies',                                'user',    false, false),
    ('projects',      '/rest/v1.0/projects?company_id={company_id}',         'company', true,  true),
    ('vendors',       '/rest/v1.0/vendors?company_id={company_id}',          'company', true,  true),
    ('project_users', '/rest/v1.0/projects/{project_id}/users',              'project', false, true),
    ('rfis',          '/rest/v1.0/projects/{project_id}/rfis',               'project', true,  true),
    ('submittals',    '/rest/v1.1/projects/{project_id}/submittals',         'project', true,  true),
    ('punch_items',   '/rest/v1.1/punch_items?project_id={project_id}',      'project', true,  true),
    ('observations',  '/rest/v1.0/observations/items?project_id={project_id}', 'project', true, true),
    ('change_events', '/rest/v1.0/change_events?project_id={project_id}',    'project', true,  true);
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
-- Every synced record, keyed the way Procore identifies it. The raw JSON is kept whole; the
-- columns are the ones users filter on.
CREATE TABLE procore_records (
    resource   text NOT NULL,
    company_id bigint NOT NULL,
    procore_id bigint NOT NULL,
    project_id bigint,
    name       text,
    status     text,
    updated_at timestamptz,
    synced_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    data       jsonb NOT NULL,
    -- When any user's sync first stored the record (or stored it again after a deletion):
    -- a user sees it only once one of their own listings ran after this (visibility.sql).
    first_synced_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Set when nobody connected can see the record's scope any more (a disconnect).
    orphaned_at timestamptz,
    -- A child resource's record: the parent record it was listed under.
    parent_id  bigint,
    PRIMARY KEY (resource, company_id, procore_id)
);
CREATE INDEX procore_records_project ON procore_records (resource, project_id);
-- Records stored since a user's last listing, which that user may not see yet.
CREATE INDEX procore_records_first_synced_at ON procore_records (first_synced_at);
-- A parent's children, and the parents whose children a sync lists next.
CREATE INDEX procore_records_parent ON procore_records (resource, parent_id, procore_id)
    WHERE parent_id IS NOT NULL;

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

-- Where each user's sync of one resource stands, for incremental reads and deletions.
CREATE TABLE procore_sync_cursor (
    user_id           uuid NOT NULL,
    resource          text NOT NULL,
    company_id        bigint NOT NULL,
    project_id        bigint NOT NULL DEFAULT 0,
    last_synced_at    timestamptz,
    last_full_sync_at timestamptz,
    last_error        text,
    -- When this user's last successful listing of the scope ended; NULL while Procore
    -- refuses them the scope (403/404). A row with it set is the user's grant to see the
    -- scope's records. For user-level resources (companies) there is one row per record's
    -- company, so a user sees exactly the companies their own listing returned.
    listed_at         timestamptz,
    -- A child resource's scope is one parent record's children: 0 for every other.
    parent_id         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, resource, company_id, project_id, parent_id)
);
-- Who can see a scope, for honest deletions.
CREATE INDEX procore_sync_cursor_scope ON procore_sync_cursor (resource, company_id, project_id);

-- The exceptions to users' grants: per record, the users whose own listing of a scope they
-- can list left it out (private items, records of projects they cannot see). One row per
-- record with an array of users: a private item hidden from most of a large team costs
-- 16 bytes a user, not a row a user.
CREATE TABLE procore_sync_hidden (
    resource   text NOT NULL,
    company_id bigint NOT NULL,
    procore_id bigint NOT NULL,
    user_ids   uuid[] NOT NULL,
    PRIMARY KEY (resource, company_id, procore_id)
);
CREATE INDEX procore_sync_hidden_users ON procore_sync_hidden USING gin (user_ids);
REVOKE ALL ON procore_sync_hidden FROM PUBLIC;

-- pg_cron's cron.job, column for column.
CREATE TABLE procore_sync_job (
    jobid    bigserial PRIMARY KEY,
    schedule text NOT NULL,
    command  text NOT NULL,
    nodename text NOT NULL DEFAULT 'localhost',
    nodeport integer NOT NULL DEFAULT coalesce(inet_server_port(), 5432),
    database text NOT NULL DEFAULT current_database(),
    username text NOT NULL DEFAULT current_user,
    active   boolean NOT NULL DEFAULT true,
    jobname  text,
    UNIQUE (jobname, username)
);

-- pg_cron's cron.job_run_details, plus the job's name.
CREATE TABLE procore_sync_job_run_details (
    jobid          bigint,
    runid          bigserial PRIMARY KEY,
    job_pid        integer,
    database       text,
    username       text,
    command        text,
    status         text,
    return_message text,
    start_time     timestamptz,
    end_time       timestamptz,
    jobname        text
);
CREATE INDEX procore_sync_job_run_details_start_time ON procore_sync_job_run_details (start_time);
CREATE INDEX procore_sync_job_run_details_open ON procore_sync_job_run_details (runid)
    WHERE status IN ('starting', 'running');

-- Live progress of running syncs, written by the sync workers between pages.
CREATE TABLE procore_sync_progress (
    queue_id      bigint PRIMARY KEY,
    user_id       uuid NOT NULL,
    worker_pid    integer NOT NULL,
    resource      text,
    company_id    bigint,
    project_id    bigint,
    pages         bigint NOT NULL DEFAULT 0,
    records       bigint NOT NULL DEFAULT 0,
    requests      bigint NOT NULL DEFAULT 0,
    rate_limit_remaining integer,
    rate_limit_limit     integer,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Keep the data users put in across pg_dump/restore, as extension tables are not dumped
-- otherwise.
SELECT pg_catalog.pg_extension_config_dump('procore_sync_credentials', '');
SELECT pg_catalog.pg_extension_config_dump('procore_records', '');
SELECT pg_catalog.pg_extension_config_dump('procore_sync_cursor', '');
SELECT pg_catalog.pg_extension_config_dump('procore_sync_hidden', '');
SELECT pg_catalog.pg_extension_config_dump('procore_sync_queue', '');
SELECT pg_catalog.pg_extension_config_dump('procore_sync_job', '');
SELECT pg_catalog.pg_extension_config_dump('procore_sync_job_run_details', '');

-- As with pg_cron, every role may look at its own jobs and their history, and only at
-- those; changes go through the scheduling functions, which check the caller.
GRANT SELECT ON procore_sync_job, procore_sync_job_run_details TO PUBLIC;
ALTER TABLE procore_sync_job ENABLE ROW LEVEL SECURITY;
CREATE POLICY procore_sync_job_owner ON procore_sync_job USING (username = current_user);
ALTER TABLE procore_sync_job_run_details ENABLE ROW LEVEL SECURITY;
CREATE POLICY procore_sync_job_run_details_owner ON procore_sync_job_run_details
    USING (username = current_user);
