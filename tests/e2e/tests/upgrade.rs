//! Upgrades and the extension's life cycle under a running scheduler (issue 12):
//! a filled 0.1.0 database, served by the released 0.1.0 library, is restarted on the new
//! library (which must refuse clearly, not crash), updated with `ALTER EXTENSION … UPDATE`,
//! and then compared object by object with a fresh install, row by row with itself, and
//! run: jobs, credentials and a sync. Bad updates change nothing; `DROP EXTENSION` stops
//! the scheduler at once and `CREATE EXTENSION` brings it back.
//!
//! Needs what `make test-upgrade` prepares: the 0.1.0 library built from its release
//! commit in `target/v0.1.0/lib` and `procore_sync--0.1.0.sql` in the server's extension
//! directory, beside the new version installed by `make install`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use procore_sync_e2e::describe::{
    describe_extension, description_diff, fingerprint_again, fingerprint_rows, TableRows,
};
use procore_sync_e2e::{cluster, Env, Standin, StopMode};
use serde_json::json;
use uuid::Uuid;

const RELEASED: &str = "0.1.0";

/// The extension directory of the PostgreSQL the tests run (`PROCORE_E2E_PG_BIN` or the
/// system one), where test update scripts go beside the installed ones.
fn extension_dir() -> PathBuf {
    let pg_config = cluster::pg_bin_dir().join("pg_config");
    let out = std::process::Command::new(&pg_config)
        .arg("--sharedir")
        .output()
        .unwrap_or_else(|e| panic!("running {} --sharedir: {e}", pg_config.display()));
    assert!(
        out.status.success(),
        "{} --sharedir failed",
        pg_config.display()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("extension")
}

/// The directory holding the released 0.1.0 `procore_sync.so`.
fn released_library_dir() -> PathBuf {
    let dir = std::env::var_os("PROCORE_SYNC_V010_LIB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/v0.1.0/lib"));
    let dir = dir.canonicalize().unwrap_or(dir);
    let library = dir.join("procore_sync.so");
    let script = extension_dir().join(format!("procore_sync--{RELEASED}.sql"));
    for path in [&library, &script] {
        assert!(
            path.exists(),
            "{} is missing: run `make test-upgrade`, which builds the 0.1.0 library from its \
             release commit and installs the 0.1.0 script",
            path.display()
        );
    }
    dir
}

/// A cluster whose `procore_sync` is the released library, found first on
/// `dynamic_library_path`, with the extension created at 0.1.0.
fn released_env(users: usize) -> Env {
    let old_lib = released_library_dir();
    let path = format!("{}:$libdir", old_lib.display());
    let standin = Standin::start(small_world(users, json!({}))).expect("start the stand-in");
    let env = Env::without_extension(
        standin,
        &[
            ("dynamic_library_path", &path),
            ("procore_sync.max_workers", "2"),
        ],
    )
    .expect("start a cluster on the 0.1.0 library");
    let mut client = env.client().expect("connect");
    client
        .batch_execute("CREATE EXTENSION procore_sync VERSION '0.1.0'")
        .expect("CREATE EXTENSION procore_sync VERSION '0.1.0'");
    assert_eq!(extversion(&mut client), RELEASED);
    assert!(
        loaded_library(&env).starts_with(&old_lib),
        "the server runs the released library from {}, not {}",
        old_lib.display(),
        loaded_library(&env).display()
    );
    env
}

/// The version the installed control file makes current: the new library's.
fn new_version(client: &mut postgres::Client) -> String {
    client
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'procore_sync'",
            &[],
        )
        .expect("read default_version")
        .get(0)
}

fn extversion(client: &mut postgres::Client) -> String {
    client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'procore_sync'",
            &[],
        )
        .expect("read extversion")
        .get(0)
}

/// Where the running postmaster loaded `procore_sync.so` from, read from its memory map.
fn loaded_library(env: &Env) -> PathBuf {
    let pid = env.cluster.postmaster_pid().expect("postmaster pid");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read the memory map");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/procore_sync.so"))
        .map(PathBuf::from)
        .expect("procore_sync.so is loaded in the postmaster")
}

/// Restarts the server with only `$libdir` on the library path: the new library.
fn restart_on_new_library(env: &mut Env) {
    env.cluster
        .client()
        .expect("connect")
        .batch_execute("ALTER SYSTEM SET dynamic_library_path = '$libdir'")
        .expect("point the library path at the installed (new) library");
    env.cluster
        .restart(StopMode::Fast)
        .expect("restart on the new library");
    let installed_lib_dir = cluster::pg_bin_dir().with_file_name("lib");
    assert!(
        loaded_library(env).starts_with(&installed_lib_dir),
        "the server now runs the installed library, not {}",
        loaded_library(env).display()
    );
}

fn scheduler_pids(client: &mut postgres::Client) -> Vec<i32> {
    backends(client, "procore_sync scheduler")
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

fn job_id(client: &mut postgres::Client, name: &str) -> i64 {
    client
        .query_one(
            "SELECT jobid FROM procore_sync_job WHERE jobname = $1",
            &[&name],
        )
        .unwrap_or_else(|e| panic!("find job {name}: {e}"))
        .get(0)
}

fn succeeded_runs(client: &mut postgres::Client, jobid: i64) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM procore_sync_job_run_details WHERE jobid = $1 AND status = 'succeeded'",
            &[&jobid],
        )
        .expect("count runs")
        .get(0)
}

/// The catalog's rows, the columns 0.1.0 has, by name (only `names` when given).
fn catalog_rows(
    client: &mut impl postgres::GenericClient,
    names: Option<&Vec<String>>,
) -> Vec<(String, String)> {
    client
        .query(
            "SELECT name, ROW(path_template, scope, supports_updated_at_filter, paginated,
                              per_page, enabled)::text
             FROM procore_sync_resource WHERE $1::text[] IS NULL OR name = ANY ($1)
             ORDER BY name",
            &[&names],
        )
        .expect("read the catalog")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn assert_same_rows(
    before: &BTreeMap<String, TableRows>,
    after: &BTreeMap<String, TableRows>,
    when: &str,
) {
    for (table, rows) in before {
        let now = &after[table];
        assert_eq!(
            (rows.count, &rows.md5),
            (now.count, &now.md5),
            "{when}: the rows of {table} changed ({} rows before, {} after)",
            rows.count,
            now.count
        );
    }
}

/// The description without the settings the library registers: for comparisons of one
/// schema served by two libraries.
fn schema_only(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| !l.starts_with("setting "))
        .collect()
}

fn assert_same_description(expected: &[String], actual: &[String], what: &str) {
    let diff = description_diff(expected, actual);
    assert!(
        diff.is_empty(),
        "{what}: {} line(s) differ (- expected, + actual):\n{}",
        diff.len(),
        diff.join("\n")
    );
}

/// What a user of 0.1.0 has in the database: connected users with tokens and synced
/// records, queue rows in every status, changed and added jobs (one of a non-superuser
/// role), run history, and a catalog row of their own. Returns the connected users.
fn fill_released_database(env: &Env) -> Vec<(Uuid, String)> {
    let mut client = env.client().expect("connect");
    let users = env
        .connect_users(3)
        .expect("connect 3 users through procore_connect");
    let since = now(&mut client);
    queue_all(&mut client);
    client
        .query_one("SELECT process_procore_sync_queue()", &[])
        .expect("process the queue");
    wait_cycle_done(&env.cluster, &users, since, CYCLE_TIMEOUT);

    // Queue rows in the statuses a finished cycle does not leave, for users the scheduler
    // will not touch during the test (no credentials, far in the future).
    client
        .batch_execute(
            "INSERT INTO procore_sync_queue (user_id, status, next_attempt_at)
                 VALUES ('00000000-0000-0000-0000-0000000000b1', 'pending', now() + interval '30 days');
             INSERT INTO procore_sync_queue (user_id, status, started_at, next_attempt_at, lease_expires_at)
                 VALUES ('00000000-0000-0000-0000-0000000000b2', 'processing', now(),
                         now() + interval '30 days', now() + interval '30 days');
             INSERT INTO procore_sync_queue (user_id, status, completed_at, error_message, attempts)
                 VALUES ('00000000-0000-0000-0000-0000000000b3', 'failed', now(), 'gave up after 5 attempts', 5);
             INSERT INTO procore_sync_resource (name, path_template, scope, supports_updated_at_filter, enabled)
                 VALUES ('inspections', '/rest/v1.0/checklist/lists?project_id={project_id}', 'project', true, false);
             CREATE ROLE app_scheduler LOGIN;
             GRANT EXECUTE ON FUNCTION procore_sync_schedule(text, text, text) TO app_scheduler;",
        )
        .expect("fill the queue, the catalog and a role");
    // The default jobs, rescheduled so that neither fires during the test.
    set_jobs(&mut client, Some("30 4 1 1 *"), Some("45 4 1 1 *"));
    let mut app = connect_as(&env.cluster, "app_scheduler");
    app.query_one(
        "SELECT procore_sync_schedule('app-nightly', '0 3 * * *', 'SELECT 2')",
        &[],
    )
    .expect("a non-superuser schedules a job");
    client
        .query_one(
            "SELECT procore_sync_schedule('every-2s', '2 seconds', 'SELECT 1')",
            &[],
        )
        .expect("schedule a frequent job");
    let every_2s = job_id(&mut client, "every-2s");
    wait_for(
        &env.cluster,
        Duration::from_secs(30),
        "two runs of every-2s",
        || Ok(succeeded_runs(&mut client, every_2s) >= 2),
    );
    // Paused so that nothing changes the rows between the snapshots below; resumed after
    // the update to show the scheduler runs jobs again.
    client
        .query_one(
            "SELECT procore_sync_alter_job($1, active => false)",
            &[&every_2s],
        )
        .expect("pause every-2s");
    wait_for(
        &env.cluster,
        Duration::from_secs(30),
        "no job run in progress",
        || {
            let open: i64 = client
            .query_one(
                "SELECT count(*) FROM procore_sync_job_run_details WHERE status IN ('starting', 'running')",
                &[],
            )?
            .get(0);
            Ok(open == 0)
        },
    );
    users
}

#[test]
fn update_from_0_1_0_keeps_every_row_and_equals_a_fresh_install() {
    let mut env = released_env(3);
    let users = fill_released_database(&env);
    let mut client = env.client().expect("connect");
    let rows_on_010 = fingerprint_rows(&mut client).expect("fingerprint the 0.1.0 rows");
    let described_010 = describe_extension(&mut client).expect("describe 0.1.0");
    drop(client);

    // The new library before the update: it must refuse clearly and change nothing.
    let log_mark = env.cluster.log().len();
    restart_on_new_library(&mut env);
    let mut client = connect(&env.cluster);
    let new = new_version(&mut client);
    assert_ne!(new, RELEASED, "the installed library is a newer version");
    let warning = format!(
        "database postgres has extension procore_sync {RELEASED}, but the server runs the {new} library"
    );
    wait_for(
        &env.cluster,
        Duration::from_secs(20),
        "the scheduler's refusal",
        || Ok(env.cluster.log()[log_mark..].contains(&warning)),
    );
    let schedulers = scheduler_pids(&mut client);
    assert_eq!(
        schedulers.len(),
        1,
        "one scheduler runs, waiting for the update"
    );
    let refused = client
        .query_one("SELECT process_procore_sync_queue()", &[])
        .expect_err("the new library refuses to sync against the 0.1.0 schema");
    let refused = refused.as_db_error().expect("a database error");
    assert_eq!(refused.code().code(), "55000", "{refused:?}");
    assert!(
        refused
            .message()
            .contains("ALTER EXTENSION procore_sync UPDATE"),
        "the error says what to do: {}",
        refused.message()
    );
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        scheduler_pids(&mut client),
        schedulers,
        "the scheduler neither crashed nor restarted while waiting"
    );
    // From the new postmaster's start: the old server's shutdown logs its workers' exits.
    let log = env.cluster.log()[log_mark..].to_string();
    let log = &log[log.find("starting PostgreSQL").unwrap_or(0)..];
    assert_eq!(
        log.matches(&warning).count(),
        1,
        "the refusal is logged once, not once per pass:\n{log}"
    );
    for crash in ["terminated by signal", "PANIC", "exited with exit code"] {
        assert!(
            !log.contains(crash),
            "no crash on the new library ({crash}):\n{log}"
        );
    }
    assert_same_rows(
        &rows_on_010,
        &fingerprint_again(&mut client, &rows_on_010).expect("fingerprint"),
        "the new library before the update",
    );
    assert_same_description(
        &schema_only(described_010),
        &schema_only(describe_extension(&mut client).expect("describe")),
        "the new library before the update",
    );

    // The catalog's rows as 0.1.0 has them: the update adds resources beside them.
    let catalog_010 = catalog_rows(&mut client, None);
    let names_010: Vec<String> = catalog_010.iter().map(|(n, _)| n.clone()).collect();

    // The update, with the scheduler up; the rows are read inside its transaction, before
    // the scheduler can act on the new version.
    let update_started = now(&mut client);
    let mut tx = client.transaction().expect("begin");
    tx.batch_execute("ALTER EXTENSION procore_sync UPDATE")
        .expect("ALTER EXTENSION procore_sync UPDATE");
    let version: String = tx
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'procore_sync'",
            &[],
        )
        .expect("read extversion")
        .get(0);
    let rows_updated =
        fingerprint_again(&mut tx, &rows_on_010).expect("fingerprint inside the update");
    let catalog_kept = catalog_rows(&mut tx, Some(&names_010));
    let catalog_count: i64 = tx
        .query_one("SELECT count(*) FROM procore_sync_resource", &[])
        .expect("count the catalog")
        .get(0);
    tx.commit().expect("commit the update");
    assert_eq!(version, new);
    // Every table's rows are kept as they were, except the catalog's, which grows: 13
    // resources, less the user's own `inspections`, which stays as the user wrote it.
    let mut kept_tables = rows_on_010.clone();
    kept_tables.remove("procore_sync_resource");
    assert_same_rows(&kept_tables, &rows_updated, "ALTER EXTENSION UPDATE");
    assert_eq!(catalog_kept, catalog_010, "the 0.1.0 catalog rows are kept");
    assert_eq!(catalog_count, catalog_010.len() as i64 + 12);
    eprintln!("rows kept by the update (table: before -> after):");
    for (table, before) in &rows_on_010 {
        eprintln!(
            "  {table}: {} -> {}",
            before.count, rows_updated[table].count
        );
    }

    // (a) The updated schema is the fresh install's, object by object.
    client
        .batch_execute("CREATE DATABASE fresh_install")
        .expect("create a database for a fresh install");
    let mut fresh = env
        .cluster
        .client_for("fresh_install", "postgres")
        .expect("connect to fresh_install");
    // With the grant the filled database's user made, which is theirs, not the schema's.
    fresh
        .batch_execute(
            "CREATE EXTENSION procore_sync;
             GRANT EXECUTE ON FUNCTION procore_sync_schedule(text, text, text) TO app_scheduler;",
        )
        .expect("a fresh CREATE EXTENSION");
    let described_fresh = describe_extension(&mut fresh).expect("describe the fresh install");
    let described_updated = describe_extension(&mut client).expect("describe the update");
    assert_same_description(
        &described_fresh,
        &described_updated,
        "0.1.0 + ALTER EXTENSION UPDATE vs a fresh install",
    );
    eprintln!(
        "described {} objects and properties: updated == fresh install",
        described_fresh.len()
    );

    // (b) It runs: the scheduler runs jobs again, and the stored credentials still work
    // for a sync, through a refresh (Procore expired the access token meanwhile).
    wait_for(
        &env.cluster,
        Duration::from_secs(20),
        "the scheduler to resume",
        || Ok(env.cluster.log()[log_mark..].contains("is ready in database postgres; running jobs")),
    );
    let every_2s = job_id(&mut client, "every-2s");
    client
        .query_one(
            "SELECT procore_sync_alter_job($1, active => true)",
            &[&every_2s],
        )
        .expect("resume every-2s");
    wait_for(
        &env.cluster,
        Duration::from_secs(30),
        "a run after the update",
        || {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM procore_sync_job_run_details
                 WHERE jobid = $1 AND status = 'succeeded' AND start_time > $2",
                    &[&every_2s, &update_started],
                )?
                .get(0);
            Ok(n >= 2)
        },
    );
    let (user, login) = &users[0];
    env.standin
        .expire_tokens(login)
        .expect("expire the access token");
    let row = client
        .query_one(
            "SELECT status, records_written, requests_made, coalesce(error_message, '')
             FROM procore_sync_user($1)",
            &[user],
        )
        .expect("sync a user connected under 0.1.0");
    let (status, requests, error): (String, i64, String) = (row.get(0), row.get(2), row.get(3));
    assert_eq!(status, "completed", "sync after the update: {error}");
    assert!(requests > 0, "the sync asked Procore");
    let refreshed: bool = client
        .query_one(
            "SELECT refreshed_at > $2 FROM procore_sync_credentials WHERE user_id = $1",
            &[user, &update_started],
        )
        .expect("read the credentials")
        .get(0);
    assert!(refreshed, "the 0.1.0 refresh token was used and rotated");
    let log = env.cluster.log()[log_mark..].to_string();
    assert!(
        !log.contains("could not record a run"),
        "no run was lost to the update:\n{log}"
    );
}

#[test]
fn bad_updates_change_nothing() {
    let mut env = released_env(1);
    let mut client = env.client().expect("connect");
    client
        .batch_execute(
            "SELECT procore_set_tokens('00000000-0000-0000-0000-0000000000c1', 'a', 'r', 3600);
             SELECT queue_procore_sync_for_all_users();",
        )
        .expect("a row or two");
    let rows = fingerprint_rows(&mut client).expect("fingerprint");
    let described = describe_extension(&mut client).expect("describe 0.1.0");

    // Updating before the restart: the server still runs the 0.1.0 library, which lacks
    // the new functions' symbols, so the script fails part way and nothing is kept.
    let err = client
        .batch_execute("ALTER EXTENSION procore_sync UPDATE")
        .expect_err("the 0.1.0 library cannot serve the 0.2.0 functions");
    let err = err.as_db_error().expect("a database error");
    assert_eq!(err.code().code(), "42883", "{err:?}");
    assert_eq!(extversion(&mut client), RELEASED, "still 0.1.0");
    drop(client);
    restart_on_new_library(&mut env);
    let mut client = connect(&env.cluster);

    // A version that does not exist: Postgres's own error.
    let err = client
        .batch_execute("ALTER EXTENSION procore_sync UPDATE TO '9.9.9'")
        .expect_err("no such version");
    let err = err.as_db_error().expect("a database error");
    assert_eq!(err.code().code(), "22023", "{err:?}");
    assert!(
        err.message().contains("no update path"),
        "{}",
        err.message()
    );

    // An update script that fails halfway, after it changed things: all of it rolls back.
    let real = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql/procore_sync--0.1.0--0.2.0.sql"),
    )
    .expect("read the real update script");
    let failing = ScriptFile::new(
        "procore_sync--0.1.0--0.2.0-halfway.sql",
        &format!(
            "{real}\nALTER TABLE procore_sync_queue ADD COLUMN halfway integer;\n\
             DELETE FROM procore_sync_job;\n\
             DO $$ BEGIN RAISE EXCEPTION 'update failed halfway'; END $$;\n"
        ),
    );
    let err = client
        .batch_execute("ALTER EXTENSION procore_sync UPDATE TO '0.2.0-halfway'")
        .expect_err("the script fails");
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.message().contains("update failed halfway")),
        "{err:?}"
    );
    drop(failing);

    assert_eq!(extversion(&mut client), RELEASED, "still 0.1.0");
    assert_same_rows(
        &rows,
        &fingerprint_again(&mut client, &rows).expect("fingerprint"),
        "after the failed updates",
    );
    assert_same_description(
        &schema_only(described),
        &schema_only(describe_extension(&mut client).expect("describe")),
        "after the failed updates",
    );
}

/// An update script written into the server's extension directory for one test.
struct ScriptFile(PathBuf);

impl ScriptFile {
    fn new(name: &str, text: &str) -> ScriptFile {
        let path = extension_dir().join(name);
        std::fs::write(&path, text).expect("write an update script");
        ScriptFile(path)
    }
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn create_drop_and_create_again_under_a_running_scheduler() {
    let env = Env::new(small_world(1, json!({})), &[]).expect("start the cluster");
    let mut client = env.client().expect("connect");
    let start_tick = |client: &mut postgres::Client| {
        client
            .query_one(
                "SELECT procore_sync_schedule('tick', '2 seconds', 'SELECT 1')",
                &[],
            )
            .expect("schedule a 2-second job");
        let jobid = job_id(client, "tick");
        wait_for(
            &env.cluster,
            Duration::from_secs(30),
            "a run of tick",
            || Ok(succeeded_runs(client, jobid) >= 1),
        );
    };
    start_tick(&mut client);
    let scheduler = scheduler_pids(&mut client);
    assert_eq!(scheduler.len(), 1);

    for round in 1..=2 {
        // ALTER EXTENSION UPDATE to the installed version is a no-op Postgres accepts.
        client
            .batch_execute("ALTER EXTENSION procore_sync UPDATE")
            .expect("ALTER EXTENSION UPDATE with the scheduler up");
        let mark = env.cluster.log().len();
        client
            .batch_execute("DROP EXTENSION procore_sync")
            .expect("DROP EXTENSION with the scheduler up");
        let dropped_at = Instant::now();
        // The job ran every 2 s: four of its slots pass before the next look.
        std::thread::sleep(Duration::from_secs(8));
        let log = env.cluster.log()[mark..].to_string();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("procore_sync")).collect();
        assert!(
            lines.len() == 1 && lines[0].contains("is not installed in database postgres"),
            "round {round}: one line says the scheduler is idle, nothing per tick; {:?} after the drop:\n{log}",
            dropped_at.elapsed()
        );
        assert_eq!(
            scheduler_pids(&mut client),
            scheduler,
            "round {round}: the same scheduler waits"
        );

        client
            .batch_execute("CREATE EXTENSION procore_sync")
            .expect("CREATE EXTENSION again");
        start_tick(&mut client);
        assert!(
            env.cluster.log()[mark..].contains("is ready in database postgres; running jobs"),
            "round {round}: the scheduler says it resumed"
        );
    }
}
