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
CREATE TABLE procore_sync_resource (
    name                       text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    path_template              text NOT NULL CHECK (path_template LIKE '/%'),
    scope                      text NOT NULL CHECK (scope IN ('user', 'company', 'project')),
    supports_updated_at_filter boolean NOT NULL DEFAULT false,
    paginated                  boolean NOT NULL DEFAULT true,
    per_page                   integer NOT NULL DEFAULT 100 CHECK (per_page BETWEEN 1 AND 10000),
    enabled                    boolean NOT NULL DEFAULT true,
    CHECK (scope <> 'company' OR path_template LIKE '%{company_id}%'),
    CHECK (scope <> 'project' OR path_template LIKE '%{project_id}%')
);

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
    PRIMARY KEY (resource, company_id, procore_id)
);
CREATE INDEX procore_records_project ON procore_records (resource, project_id);
-- Records stored since a user's last listing, which that user may not see yet.
CREATE INDEX procore_records_first_synced_at ON procore_records (first_synced_at);

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
    PRIMARY KEY (user_id, resource, company_id, project_id)
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
