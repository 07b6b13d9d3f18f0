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
