-- Runs after every function exists: default jobs, privileges, and the preload check.

-- Any change to the jobs wakes the scheduler when it commits, so it can sleep until its
-- next due run instead of polling the table. Row triggers, because a statement trigger
-- never fires for an INSERT ... RETURNING that SPI stops after its first row.
CREATE TRIGGER procore_sync_job_changed
    AFTER INSERT OR UPDATE OR DELETE ON procore_sync_job
    FOR EACH ROW EXECUTE FUNCTION procore_sync_job_changed();
CREATE TRIGGER procore_sync_job_truncated
    AFTER TRUNCATE ON procore_sync_job
    FOR EACH STATEMENT EXECUTE FUNCTION procore_sync_job_changed();
REVOKE EXECUTE ON FUNCTION procore_sync_job_changed() FROM PUBLIC;

INSERT INTO procore_sync_job (schedule, command, jobname) VALUES
    ('*/10 * * * *', 'SELECT queue_procore_sync_for_all_users()', 'procore-queue-sync-every-10-minutes'),
    ('* * * * *',    'SELECT process_procore_sync_queue()',       'procore-process-queue-every-minute');

-- Like pg_cron, scheduling is granted, not public; credentials functions run as the owner
-- so an application role can connect users without reading the token table.
REVOKE EXECUTE ON FUNCTION procore_sync_schedule(text, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_schedule_in_database(text, text, text, text, text, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_unschedule(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_unschedule(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_alter_job(bigint, text, text, text, text, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_connect(uuid, text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_set_tokens(uuid, text, text, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_disconnect(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_user(uuid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION queue_procore_sync_for_all_users() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION process_procore_sync_queue() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_resync(text, bigint) FROM PUBLIC;
-- The receiver checks the secret itself, but which role may call it is the owner's choice
-- (GRANT it to the role behind PostgREST or the application's API).
REVOKE EXECUTE ON FUNCTION procore_sync_webhook(jsonb, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_webhooks_enable(uuid, bigint, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_webhooks_disable(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION procore_sync_webhooks_check() FROM PUBLIC;
-- Counts only, but of every role's jobs: granted to the exporter's role, not to PUBLIC.
REVOKE EXECUTE ON FUNCTION procore_sync_metrics() FROM PUBLIC;

DO $$
BEGIN
    IF NOT ('procore_sync' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ','))) THEN
        RAISE WARNING 'procore_sync is not in shared_preload_libraries: its SQL functions work, but no job will run on schedule'
            USING HINT = 'Add procore_sync to shared_preload_libraries and restart PostgreSQL.';
    END IF;
END
$$;
