-- Typed views over procore_records, one per shipped resource. Casts that data from the API
-- could break (dates, booleans) are guarded so that one odd record never makes a view fail.
-- They read procore_records with the querying role's rights (security_invoker), so a
-- row-level-security policy on procore_records applies through them too.

CREATE VIEW procore_companies WITH (security_invoker = true) AS
SELECT procore_id AS id, name,
       CASE jsonb_typeof(data->'is_active') WHEN 'boolean' THEN (data->'is_active')::boolean END AS is_active,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'companies';

CREATE VIEW procore_projects WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, name,
       data->>'display_name' AS display_name,
       data->>'project_number' AS project_number,
       CASE jsonb_typeof(data->'active') WHEN 'boolean' THEN (data->'active')::boolean END AS active,
       coalesce(data->'stage'->>'name', data->>'stage') AS stage,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'projects';

CREATE VIEW procore_vendors WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, name,
       data->>'abbreviated_name' AS abbreviated_name,
       data->>'trade_name' AS trade_name,
       CASE jsonb_typeof(data->'is_active') WHEN 'boolean' THEN (data->'is_active')::boolean END AS is_active,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'vendors';

CREATE VIEW procore_project_users WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id, name,
       data->>'email_address' AS email_address,
       data->>'job_title' AS job_title,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'project_users';

CREATE VIEW procore_rfis WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       data->>'number' AS number, name AS subject, status,
       data->>'due_date' AS due_date,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'rfis';

CREATE VIEW procore_submittals WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       data->>'number' AS number, name AS title, status,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'submittals';

CREATE VIEW procore_punch_items WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id, name, status,
       data->>'priority' AS priority, data->>'position' AS position,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'punch_items';

CREATE VIEW procore_observations WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       data->>'number' AS number, name, status, data->>'priority' AS priority,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'observations';

CREATE VIEW procore_change_events WITH (security_invoker = true) AS
SELECT procore_id AS id, company_id, project_id,
       data->>'number' AS number, name AS title, status,
       updated_at, synced_at, deleted_at, data
FROM procore_records WHERE resource = 'change_events';

-- One row per connected user: the operator's first stop when someone says "my data is stale".
CREATE VIEW procore_sync_user_status AS
SELECT c.user_id,
       NOT c.needs_reconnect AS connected,
       c.reconnect_reason,
       last_ok.completed_at AS last_success,
       last_err.completed_at AS last_error_at,
       last_err.error_message AS last_error,
       open_item.status AS queue_status,
       open_item.next_attempt_at AS next_attempt,
       open_item.attempts,
       last_ok.records_written AS last_records_written,
       last_ok.requests_made AS last_requests_made,
       p.rate_limit_remaining,
       p.rate_limit_limit,
       p.rate_limit_reset_at
FROM procore_sync_credentials c
LEFT JOIN LATERAL (
    SELECT q.completed_at, q.records_written, q.requests_made FROM procore_sync_queue q
    WHERE q.user_id = c.user_id AND q.status = 'completed'
    ORDER BY q.completed_at DESC LIMIT 1) last_ok ON true
LEFT JOIN LATERAL (
    SELECT q.completed_at, q.error_message FROM procore_sync_queue q
    WHERE q.user_id = c.user_id AND q.status = 'failed'
    ORDER BY q.completed_at DESC LIMIT 1) last_err ON true
LEFT JOIN LATERAL (
    SELECT q.status, q.next_attempt_at, q.attempts FROM procore_sync_queue q
    WHERE q.user_id = c.user_id AND q.status IN ('pending', 'processing') LIMIT 1) open_item ON true
LEFT JOIN LATERAL (
    -- a running sync's live figures first, else what the last finished one saw
    SELECT rl.rate_limit_remaining, rl.rate_limit_limit, rl.rate_limit_reset_at FROM (
        SELECT pr.rate_limit_remaining, pr.rate_limit_limit, NULL::timestamptz AS rate_limit_reset_at,
               pr.updated_at AS seen_at
        FROM procore_sync_progress pr
        WHERE pr.user_id = c.user_id AND pr.rate_limit_limit IS NOT NULL
        UNION ALL
        SELECT q.rate_limit_remaining, q.rate_limit_limit, q.rate_limit_reset_at,
               coalesce(q.completed_at, q.started_at) AS seen_at
        FROM procore_sync_queue q
        WHERE q.user_id = c.user_id AND q.rate_limit_limit IS NOT NULL) rl
    ORDER BY rl.seen_at DESC NULLS LAST LIMIT 1) p ON true;

-- Syncs running right now, with where they are.
CREATE VIEW procore_sync_running AS
SELECT pr.queue_id, pr.user_id, pr.worker_pid, pr.resource, pr.company_id, pr.project_id,
       pr.pages, pr.records, pr.requests, q.started_at, now() - q.started_at AS running_for,
       pr.updated_at AS last_progress_at
FROM procore_sync_progress pr
JOIN procore_sync_queue q ON q.id = pr.queue_id AND q.status = 'processing';
