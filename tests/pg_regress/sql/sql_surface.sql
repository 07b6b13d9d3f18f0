-- The SQL surface as a user meets it, without the background worker (not preloaded here):
-- CREATE EXTENSION warns once, and every function still works.
CREATE EXTENSION procore_sync;
\set VERBOSITY default

-- The two jobs of the old setup, names and schedules unchanged (SPEC §3, §6).
SELECT jobname, schedule, command, active FROM procore_sync_job WHERE jobname LIKE 'procore%' ORDER BY jobname;

-- The shipped catalog and its typed views.
SELECT name, scope, supports_updated_at_filter, paginated, enabled FROM procore_sync_resource ORDER BY scope, name;
SELECT viewname FROM pg_views WHERE viewname LIKE 'procore\_%' ORDER BY viewname;

-- Adding an endpoint is one INSERT; a path that cannot be filled in is refused.
INSERT INTO procore_sync_resource (name, path_template, scope) VALUES ('timesheets', '/rest/v1.0/projects/{project_id}/timesheets', 'project');
INSERT INTO procore_sync_resource (name, path_template, scope) VALUES ('broken', '/rest/v1.0/companies/vendors', 'company');
-- A child resource names a parent that exists.
INSERT INTO procore_sync_resource (name, path_template, scope, parent_resource, parent_placeholder) VALUES ('orphan', '/rest/v1.0/x/{thing_id}?project_id={project_id}', 'project', 'nothing', 'thing_id');

-- Re-syncing one resource resets its cursors (none yet here); an unknown one is refused.
SELECT procore_sync_resync('rfis') AS scopes;
SELECT procore_sync_resync('no_such_resource');

-- Scheduling, pg_cron style.
SELECT procore_sync_schedule('nightly-report', '30 2 * * *', 'SELECT 1') > 0 AS scheduled;
SELECT procore_sync_schedule('nightly-report', '45 2 * * *', 'SELECT 2') = jobid AS same_job FROM procore_sync_job WHERE jobname = 'nightly-report';
SELECT schedule, command FROM procore_sync_job WHERE jobname = 'nightly-report';
SELECT procore_sync_alter_job(jobid, schedule => '15 seconds', active => false) FROM procore_sync_job WHERE jobname = 'nightly-report';
SELECT schedule, active FROM procore_sync_job WHERE jobname = 'nightly-report';
SELECT procore_sync_unschedule('nightly-report');
SELECT procore_sync_unschedule('nightly-report');

-- Bad schedules say which field and where.
SELECT procore_sync_schedule('bad', '61 * * * *', 'SELECT 1');
SELECT procore_sync_schedule('bad', '* * 1-40 * *', 'SELECT 1');
SELECT procore_sync_schedule('bad', '*/0 * * * *', 'SELECT 1');
SELECT procore_sync_schedule('bad', '60 seconds', 'SELECT 1');
SELECT procore_sync_schedule('bad', '* * * *', 'SELECT 1');
SELECT procore_sync_schedule('bad', '* * * * *', '');
SELECT count(*) AS bad_jobs FROM procore_sync_job WHERE jobname = 'bad';

-- The three schedules of pg_cron's regression suite that used to get another verdict here:
-- a step beyond its field, a number too large for any integer, and @restart (no time: the
-- job runs once each time the scheduler starts).
SELECT procore_sync_schedule('bad', '*/60 10 * * *', 'SELECT 1');
SELECT procore_sync_schedule('bad', '*/5000000000 10 * * *', 'SELECT 1');
SELECT procore_sync_schedule('at-start', '@restart', 'SELECT 1') > 0 AS scheduled;
SELECT procore_sync_schedule('at-start-too', '@reboot', 'SELECT 1') > 0 AS scheduled;
SELECT jobname, schedule FROM procore_sync_job WHERE jobname LIKE 'at-start%' ORDER BY jobname;
SELECT procore_sync_unschedule('at-start');
SELECT procore_sync_unschedule('at-start-too');

-- pg_cron's schedule_in_database: a job in another database, as another role.
CREATE DATABASE procore_sync_regress_other;
CREATE DATABASE procore_sync_regress_closed;
REVOKE CONNECT ON DATABASE procore_sync_regress_closed FROM PUBLIC;
CREATE ROLE procore_sync_regress_runner LOGIN;
CREATE ROLE procore_sync_regress_peer LOGIN;
CREATE ROLE procore_sync_regress_nologin NOLOGIN;
SELECT procore_sync_schedule_in_database('elsewhere', '0 3 * * *', 'VACUUM', 'procore_sync_regress_other', 'procore_sync_regress_runner') > 0 AS scheduled;
SELECT jobname, schedule, command, database, username, active FROM procore_sync_job WHERE jobname = 'elsewhere';
-- The same name and role again changes that job's schedule, command and database.
SELECT procore_sync_schedule_in_database('elsewhere', '0 4 * * *', 'ANALYZE', current_database(), 'procore_sync_regress_runner') = jobid AS same_job FROM procore_sync_job WHERE jobname = 'elsewhere';
SELECT schedule, command, database = current_database() AS here FROM procore_sync_job WHERE jobname = 'elsewhere';
-- Defaults: the caller's role; NULL database is this one; inactive on request.
SELECT procore_sync_schedule_in_database('paused', '@daily', 'SELECT 1', NULL, active => false) > 0 AS scheduled;
SELECT database = current_database() AS here, username = current_user AS mine, active FROM procore_sync_job WHERE jobname = 'paused';
-- What cannot run is refused now, not at every run.
SELECT procore_sync_schedule_in_database('nowhere', '0 3 * * *', 'VACUUM', 'procore_sync_regress_missing');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT procore_sync_schedule_in_database('nobody', '0 3 * * *', 'VACUUM', current_database(), 'procore_sync_regress_missing');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT procore_sync_schedule_in_database('nologin', '0 3 * * *', 'VACUUM', current_database(), 'procore_sync_regress_nologin');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT procore_sync_schedule_in_database('closed', '0 3 * * *', 'VACUUM', 'procore_sync_regress_closed', 'procore_sync_regress_runner');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT procore_sync_schedule_in_database('bad', '*/60 * * * *', 'VACUUM', current_database());
-- Not public, as in pg_cron; once granted, a role schedules for itself and nobody else.
SET ROLE procore_sync_regress_runner;
SELECT procore_sync_schedule_in_database('mine', '0 3 * * *', 'SELECT 1', 'procore_sync_regress_other');
RESET ROLE;
GRANT EXECUTE ON FUNCTION procore_sync_schedule_in_database(text, text, text, text, text, boolean) TO procore_sync_regress_runner;
SET ROLE procore_sync_regress_runner;
SELECT procore_sync_schedule_in_database('theirs', '0 3 * * *', 'SELECT 1', 'procore_sync_regress_other', 'procore_sync_regress_peer');
SELECT :'LAST_ERROR_SQLSTATE' AS sqlstate;
SELECT procore_sync_schedule_in_database('mine', '0 3 * * *', 'SELECT 1', 'procore_sync_regress_other', 'procore_sync_regress_runner') > 0 AS scheduled;
SELECT procore_sync_schedule_in_database('mine-too', '0 3 * * *', 'SELECT 1', 'procore_sync_regress_other') > 0 AS scheduled;
SELECT procore_sync_schedule_in_database('closed', '0 3 * * *', 'SELECT 1', 'procore_sync_regress_closed');
SELECT jobname, database, username FROM procore_sync_job ORDER BY jobname;
RESET ROLE;
SELECT jobname, username FROM procore_sync_job WHERE username <> current_user ORDER BY jobname;
SELECT count(*) AS refused_jobs FROM procore_sync_job WHERE jobname IN ('nowhere', 'nobody', 'nologin', 'closed', 'theirs', 'bad');
DELETE FROM procore_sync_job WHERE jobname IN ('elsewhere', 'paused', 'mine', 'mine-too');

-- Credentials and the queue.
SELECT procore_set_tokens('00000000-0000-0000-0000-00000000000a', 'access-a', 'refresh-a', 3600);
SELECT procore_set_tokens('00000000-0000-0000-0000-00000000000b', 'access-b', 'refresh-b', 3600);
SELECT procore_set_tokens(NULL, 'access', 'refresh', 3600);
SELECT procore_set_tokens('00000000-0000-0000-0000-00000000000c', 'access', 'refresh', 0);
SELECT queue_procore_sync_for_all_users();
SELECT queue_procore_sync_for_all_users();
-- The monitoring queries of SPEC §6, verbatim (times left out of the comparison).
SELECT status, count FROM (
SELECT status, count(*) AS count, max(created_at) AS last_created
FROM procore_sync_queue GROUP BY status
) q ORDER BY status;
SELECT user_id, status, completed_at, error_message FROM (
SELECT user_id, status, created_at, completed_at, error_message
FROM procore_sync_queue ORDER BY created_at DESC LIMIT 20
) q ORDER BY user_id;
SELECT jobname, schedule, active FROM procore_sync_job WHERE jobname LIKE 'procore%' ORDER BY jobname;
SELECT count(*) AS runs FROM (
SELECT jobid, jobname, runid, status, return_message, start_time, end_time
FROM procore_sync_job_run_details WHERE jobname LIKE 'procore%'
ORDER BY start_time DESC LIMIT 20
) r;
SELECT user_id, connected, queue_status FROM procore_sync_user_status ORDER BY user_id;

-- Disconnecting removes the tokens; the open item stays for the runbook to see. (It also
-- asks Procore to revoke them, which cannot succeed here: that warning is not compared.)
-- A closed local port instead of Procore: no DNS lookup, no waiting.
SET procore_sync.login_base_url = 'http://127.0.0.1:9';
SET client_min_messages = error;
SELECT procore_disconnect('00000000-0000-0000-0000-00000000000b');
RESET client_min_messages;
SELECT procore_disconnect('00000000-0000-0000-0000-00000000000b');
SELECT count(*) AS credentials FROM procore_sync_credentials;

-- A manual sync of a user with no credentials is refused before anything starts.
SELECT * FROM procore_sync_user('00000000-0000-0000-0000-0000000000ff');
SELECT * FROM procore_sync_user(NULL);

-- The old runbook's statements still run.
UPDATE procore_sync_queue SET status = 'pending', started_at = NULL
WHERE status = 'processing' AND started_at < now() - interval '30 minutes';
DELETE FROM procore_sync_queue WHERE status IN ('completed', 'failed') AND completed_at < now() - interval '7 days';

DROP EXTENSION procore_sync;
DROP DATABASE procore_sync_regress_other;
DROP DATABASE procore_sync_regress_closed;
DROP ROLE procore_sync_regress_runner;
DROP ROLE procore_sync_regress_peer;
DROP ROLE procore_sync_regress_nologin;
