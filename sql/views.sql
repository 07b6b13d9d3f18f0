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
