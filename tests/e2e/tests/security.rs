//! SPEC §7 against hostile users: what a non-superuser can read and schedule, secrets in
//! every place they could leak to, TLS with and without the trusted CA, and input full of
//! quotes, semicolons and unicode. Every test ends with the leak check of `common`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use postgres::error::SqlState;
use procore_sync_e2e::{Env, Standin, REDIRECT_URI};
use serde_json::json;
use uuid::Uuid;

/// The tricky text the stand-in puts in record i = 3 of each resource.
const TRICKY: &str = "O'Brien \"quoted\"; DROP TABLE x; -- ünïcødé ✓";

fn create_login_role(client: &mut postgres::Client, name: &str) {
    // Role names are fixed identifiers of this file, not input.
    client
        .batch_execute(&format!("CREATE ROLE {name} LOGIN"))
        .unwrap_or_else(|e| panic!("CREATE ROLE {name}: {e}"));
}

fn expect_denied<T: std::fmt::Debug>(result: Result<T, postgres::Error>, what: &str) {
    let err = db_error(result, what);
    assert_eq!(
        err.code(),
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "{what}: expected 42501, got {:?}: {}",
        err.code(),
        err.message()
    );
}

/// All text a query returns, as one string per row (simple protocol: every type as text).
fn all_text(client: &mut postgres::Client, sql: &str) -> Result<Vec<String>, postgres::Error> {
    let mut out = Vec::new();
    for m in client.simple_query(sql)? {
        if let postgres::SimpleQueryMessage::Row(row) = m {
            let cells: Vec<&str> = (0..row.len()).map(|i| row.get(i).unwrap_or("")).collect();
            out.push(cells.join("|"));
        }
    }
    Ok(out)
}

fn wait_runs(env: &Env, jobname: &str, status: &str) -> Vec<String> {
    let mut messages = Vec::new();
    wait_for(
        &env.cluster,
        Duration::from_secs(60),
        &format!("a {status} run of job {jobname}"),
        || {
            let mut c = env.cluster.client()?;
            messages = c
                .query(
                    "SELECT coalesce(return_message, '') FROM procore_sync_job_run_details \
                     WHERE jobname = $1 AND status = $2",
                    &[&jobname, &status],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(!messages.is_empty())
        },
    );
    messages
}

// ---------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------

#[test]
fn a_non_superuser_cannot_read_tokens_or_the_client_secret() {
    let env = start_env(small_world(2, json!({})), &[]);
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(2).expect("connect users");
    let secret = env.standin.client_secret();
    let mut su = connect(&env.cluster);
    set_jobs(&mut su, None, None);
    create_login_role(&mut su, "app");
    // What the README tells operators to grant their application role.
    su.batch_execute(
        "GRANT EXECUTE ON FUNCTION procore_connect(uuid, text, text), procore_sync_user(uuid), \
         procore_disconnect(uuid), queue_procore_sync_for_all_users(), process_procore_sync_queue() TO app;
         ANALYZE procore_sync_credentials;",
    )
    .expect("grants");
    let mut app = connect_as(&env.cluster, "app");

    // Tokens: not through the table, its statistics or the journal on disk.
    expect_denied(
        app.query("SELECT * FROM procore_sync_credentials", &[]),
        "SELECT procore_sync_credentials",
    );
    expect_denied(
        app.query(
            "SELECT access_token, refresh_token FROM procore_sync_credentials",
            &[],
        ),
        "SELECT token columns",
    );
    let stats = all_text(
        &mut app,
        "SELECT * FROM pg_stats WHERE tablename = 'procore_sync_credentials'",
    )
    .expect("pg_stats is readable");
    assert!(
        stats.is_empty(),
        "column statistics of the token table are hidden: {stats:?}"
    );
    expect_denied(
        app.query("SELECT pg_read_file('pg_procore_sync', 0, 100)", &[]),
        "pg_read_file",
    );
    expect_denied(
        app.query("SELECT * FROM pg_ls_dir('pg_procore_sync')", &[]),
        "pg_ls_dir",
    );
    // The security definer functions hand out no tokens either.
    let row = app
        .query_one("SELECT * FROM procore_sync_user($1)", &[&users[0].0])
        .expect("app may sync a user");
    assert_eq!(row.get::<_, String>("status"), "completed");
    expect_denied(
        app.execute(
            "SELECT procore_set_tokens($1, 'a', 'b', 60)",
            &[&Uuid::new_v4()],
        ),
        "procore_set_tokens is not granted",
    );

    // The client secret: SHOW, current_setting, pg_settings, SHOW ALL, the config files.
    expect_denied(
        app.simple_query("SHOW procore_sync.client_secret"),
        "SHOW client_secret",
    );
    expect_denied(
        app.query("SELECT current_setting('procore_sync.client_secret')", &[]),
        "current_setting(client_secret)",
    );
    match app.query_one(
        "SELECT current_setting('procore_sync.client_secret', true)",
        &[],
    ) {
        Ok(row) => assert_ne!(
            row.get::<_, Option<String>>(0).as_deref(),
            Some(secret.as_str())
        ),
        Err(e) => assert_eq!(e.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE), "{e}"),
    }
    let settings = all_text(
        &mut app,
        "SELECT name, setting, reset_val, boot_val FROM pg_settings",
    )
    .expect("pg_settings");
    assert!(
        settings.iter().all(|r| !r.contains(&secret)),
        "pg_settings shows the client secret"
    );
    assert!(
        !settings
            .iter()
            .any(|r| r.starts_with("procore_sync.client_secret|")),
        "pg_settings lists procore_sync.client_secret to a non-superuser"
    );
    let show_all = all_text(&mut app, "SHOW ALL").expect("SHOW ALL");
    assert!(
        show_all.iter().all(|r| !r.contains(&secret)),
        "SHOW ALL shows the secret"
    );
    for sql in [
        "SELECT * FROM pg_file_settings",
        "SELECT pg_read_file('postgresql.conf')",
        "SELECT pg_read_file('e2e.conf')",
        "SELECT pg_read_file('postgresql.auto.conf')",
    ] {
        expect_denied(app.query(sql, &[]), sql);
    }

    // Settings that decide where tokens go, or crash the server, are superuser-only.
    for (name, value) in [
        ("procore_sync.client_secret", "x"),
        ("procore_sync.api_base_url", "http://attacker.invalid"),
        ("procore_sync.login_base_url", "http://attacker.invalid"),
        ("procore_sync.ca_file", "/tmp/attacker.pem"),
        ("procore_sync.failpoint", "crash_after_token_refresh"),
    ] {
        expect_denied(
            app.query("SELECT set_config($1, $2, false)", &[&name, &value]),
            &format!("set_config({name})"),
        );
        expect_denied(
            app.simple_query(&format!("ALTER SYSTEM SET {name} = '{value}'")),
            &format!("ALTER SYSTEM SET {name}"),
        );
    }
    // The queue and the per-user status are not the application's to read unless granted.
    expect_denied(
        app.query("SELECT * FROM procore_sync_user_status", &[]),
        "user status view",
    );

    watch.finish(&env.cluster, &[&env.standin]);
}

#[test]
fn jobs_run_with_the_rights_of_the_role_that_scheduled_them() {
    let env = start_env(small_world(1, json!({})), &[]);
    let watch = LeakWatch::start(&env.cluster);
    env.connect_users(1).expect("connect a user");
    let mut su = connect(&env.cluster);
    set_jobs(&mut su, None, None);
    for role in ["alice", "bob", "carol"] {
        create_login_role(&mut su, role);
        su.batch_execute(&format!(
            "GRANT EXECUTE ON FUNCTION procore_sync_schedule(text, text, text), \
             procore_sync_unschedule(text), procore_sync_unschedule(bigint), \
             procore_sync_alter_job(bigint, text, text, text, text, boolean) TO {role}"
        ))
        .expect("grant scheduling");
    }
    su.batch_execute("CREATE SCHEMA alice AUTHORIZATION alice")
        .expect("alice's schema");
    let defaults_before = all_text(
        &mut su,
        "SELECT jobid, jobname, schedule, command, username, active FROM procore_sync_job ORDER BY jobid",
    )
    .expect("jobs");
    let process_job: i64 = su
        .query_one(
            "SELECT jobid FROM procore_sync_job WHERE jobname = $1",
            &[&PROCESS_JOB],
        )
        .expect("process job")
        .get(0);

    let mut alice = connect_as(&env.cluster, "alice");
    alice
        .batch_execute("CREATE TABLE alice.seen (who text)")
        .expect("alice's table");
    let schedule = |c: &mut postgres::Client, name: &str, command: &str| -> i64 {
        c.query_one(
            "SELECT procore_sync_schedule($1, '1 seconds', $2)",
            &[&name, &command],
        )
        .unwrap_or_else(|e| panic!("schedule {name}: {e}"))
        .get(0)
    };
    let whoami = schedule(
        &mut alice,
        "alice-whoami",
        "INSERT INTO alice.seen SELECT current_user || ',' || session_user || ',' || \
         (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) RETURNING who",
    );
    schedule(
        &mut alice,
        "alice-steal",
        "SELECT count(*) FROM procore_sync_credentials",
    );
    schedule(&mut alice, "alice-escalate", "ALTER ROLE alice SUPERUSER");
    schedule(&mut alice, "alice-set-role", "SET ROLE postgres");
    // Same name as the superuser's job: a job of her own, the default one is untouched.
    schedule(&mut alice, PROCESS_JOB, "SELECT 1");

    // Her job cannot be made to run as someone else, and the others' jobs are not hers.
    expect_denied(
        alice.execute(
            "SELECT procore_sync_alter_job($1, username => 'postgres')",
            &[&whoami],
        ),
        "alter_job(username => postgres)",
    );
    expect_denied(
        alice.execute(
            "SELECT procore_sync_alter_job($1, command => 'DROP TABLE procore_records')",
            &[&process_job],
        ),
        "alter the superuser's job",
    );
    expect_denied(
        alice.execute(
            "SELECT procore_sync_unschedule($1::bigint)",
            &[&process_job],
        ),
        "unschedule the superuser's job",
    );
    expect_denied(
        alice.execute(
            "INSERT INTO procore_sync_job (schedule, command, username) VALUES ('1 seconds', 'SELECT 1', 'postgres')",
            &[],
        ),
        "INSERT INTO procore_sync_job",
    );
    expect_denied(
        alice.execute("UPDATE procore_sync_job SET username = 'postgres'", &[]),
        "UPDATE procore_sync_job",
    );
    expect_denied(
        alice.execute(
            "UPDATE procore_sync_job_run_details SET status = 'succeeded'",
            &[],
        ),
        "UPDATE procore_sync_job_run_details",
    );

    // A job of a role that is then dropped fails its runs without a crash loop.
    let mut carol = connect_as(&env.cluster, "carol");
    schedule(&mut carol, "carol-job", "SELECT 1");
    drop(carol);
    let scheduler_before = backends(&mut su, "procore_sync scheduler");
    su.batch_execute(
        "REVOKE ALL ON FUNCTION procore_sync_schedule(text, text, text), \
                      procore_sync_unschedule(text), procore_sync_unschedule(bigint), \
                      procore_sync_alter_job(bigint, text, text, text, text, boolean) FROM carol; \
                      DROP ROLE carol",
    )
    .expect("drop carol");

    let seen = wait_runs(&env, "alice-whoami", "succeeded");
    assert_eq!(
        seen[0], "alice,alice,false",
        "the job ran as alice, without superuser rights"
    );
    for job in ["alice-steal", "alice-escalate", "alice-set-role"] {
        let messages = wait_runs(&env, job, "failed");
        assert!(
            messages[0].contains("permission denied") || messages[0].contains("must be superuser"),
            "{job} failed for lack of rights: {}",
            messages[0]
        );
    }
    assert!(
        wait_runs(&env, "carol-job", "failed")[0].len() > 5,
        "the dropped role's run failed with a message"
    );
    let alice_super: bool = su
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'", &[])
        .expect("alice")
        .get(0);
    assert!(!alice_super, "alice is still not a superuser");
    let creds: i64 = su
        .query_one("SELECT count(*) FROM procore_sync_credentials", &[])
        .expect("count")
        .get(0);
    assert_eq!(creds, 1, "the user's credentials are intact");

    // Each role sees only its own jobs and runs.
    let mut bob = connect_as(&env.cluster, "bob");
    let bob_jobs = all_text(&mut bob, "SELECT jobname FROM procore_sync_job").expect("bob jobs");
    assert!(bob_jobs.is_empty(), "bob sees nobody's jobs: {bob_jobs:?}");
    let bob_runs =
        all_text(&mut bob, "SELECT jobname FROM procore_sync_job_run_details").expect("bob runs");
    assert!(bob_runs.is_empty(), "bob sees nobody's runs: {bob_runs:?}");
    let alice_jobs: BTreeSet<String> =
        all_text(&mut alice, "SELECT username FROM procore_sync_job")
            .expect("alice jobs")
            .into_iter()
            .collect();
    assert_eq!(
        alice_jobs,
        BTreeSet::from(["alice".to_string()]),
        "alice sees her jobs only"
    );
    let alice_runs: BTreeSet<String> = all_text(
        &mut alice,
        "SELECT username FROM procore_sync_job_run_details",
    )
    .expect("alice runs")
    .into_iter()
    .collect();
    assert_eq!(
        alice_runs,
        BTreeSet::from(["alice".to_string()]),
        "alice sees her runs only"
    );

    // The superuser's jobs are exactly as they were.
    let defaults_after = all_text(
        &mut su,
        "SELECT jobid, jobname, schedule, command, username, active FROM procore_sync_job \
         WHERE username = 'postgres' ORDER BY jobid",
    )
    .expect("jobs");
    assert_eq!(
        defaults_after, defaults_before,
        "the superuser's jobs are untouched"
    );
    // No crash loop: the same scheduler, no reinitialization.
    assert_eq!(
        backends(&mut su, "procore_sync scheduler"),
        scheduler_before
    );
    assert_eq!(
        count_in_log(&env.cluster, "reinitializing"),
        0,
        "the dropped role crashed nothing"
    );
    // Stop the jobs so that the leak check reads a quiet cluster.
    su.batch_execute("UPDATE procore_sync_job SET active = false")
        .expect("stop jobs");
    watch.finish(&env.cluster, &[&env.standin]);
}

/// The scheduler, job runners and sync workers run the extension's own SQL as a superuser
/// with `search_path = <extension schema>, pg_catalog`. A role that may create objects in
/// that schema (the database owner in PostgreSQL 15, or everyone on databases created
/// before it) must not be able to slip a function of its own into that SQL.
#[test]
fn a_role_that_can_create_in_the_extension_schema_does_not_gain_superuser() {
    let env = start_env(small_world(1, json!({})), &[]);
    let watch = LeakWatch::start(&env.cluster);
    env.connect_users(1).expect("connect a user");
    let mut su = connect(&env.cluster);
    set_jobs(&mut su, None, None);
    create_login_role(&mut su, "mallory");
    su.batch_execute(
        "GRANT CREATE ON SCHEMA public TO mallory;
         GRANT EXECUTE ON FUNCTION procore_sync_schedule(text, text, text) TO mallory;
         CREATE TABLE public.hijack_log (who text, superuser boolean, at timestamptz DEFAULT pg_catalog.clock_timestamp());
         GRANT INSERT ON public.hijack_log TO PUBLIC;",
    )
    .expect("set up mallory");
    let mut mallory = connect_as(&env.cluster, "mallory");
    // A now() that, called by a superuser, makes mallory one.
    mallory
        .batch_execute(
            "CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
             DECLARE su boolean;
             BEGIN
                 SELECT rolsuper INTO su FROM pg_catalog.pg_roles WHERE rolname = pg_catalog.current_user();
                 INSERT INTO public.hijack_log (who, superuser)
                 SELECT pg_catalog.current_user() || ' in ' || backend_type, su
                 FROM pg_catalog.pg_stat_activity WHERE pid = pg_catalog.pg_backend_pid();
                 IF su THEN
                     EXECUTE 'ALTER ROLE mallory SUPERUSER';
                 END IF;
                 RETURN pg_catalog.statement_timestamp();
             END $$;",
        )
        .expect("mallory creates public.now()");
    mallory
        .query_one(
            "SELECT procore_sync_schedule('mallory-job', '1 seconds', 'SELECT 1')",
            &[],
        )
        .expect("mallory schedules a harmless job");
    let mut called_by_superuser = Vec::new();
    let mut became_superuser = false;
    // Two runs of her job mean the scheduler and two job runners have run their SQL.
    wait_for(
        &env.cluster,
        Duration::from_secs(60),
        "two runs of mallory's job (or mallory a superuser)",
        || {
            called_by_superuser = all_text(
                &mut su,
                "SELECT DISTINCT who FROM public.hijack_log WHERE superuser",
            )?;
            became_superuser = su
                .query_one(
                    "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'",
                    &[],
                )?
                .get(0);
            let runs: i64 = su
                .query_one(
                    "SELECT count(*) FROM procore_sync_job_run_details \
                     WHERE jobname = 'mallory-job' AND status = 'succeeded'",
                    &[],
                )?
                .get(0);
            Ok(became_superuser || runs >= 2)
        },
    );
    su.batch_execute("ALTER ROLE mallory NOSUPERUSER; DROP FUNCTION public.now(); UPDATE procore_sync_job SET active = false")
        .expect("clean up");
    assert!(
        !became_superuser && called_by_superuser.is_empty(),
        "PRIVILEGE ESCALATION: mallory's public.now() ran as superuser {called_by_superuser:?} \
         inside the extension's own SQL and made mallory a superuser \
         (became superuser: {became_superuser})"
    );
    watch.finish(&env.cluster, &[&env.standin]);
}

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

/// Logging at its most verbose, as an operator chasing a problem would set it.
const VERBOSE_LOGGING: [(&str, &str); 6] = [
    ("log_statement", "all"),
    ("log_min_duration_statement", "0"),
    ("log_parameter_max_length", "-1"),
    ("log_error_verbosity", "verbose"),
    ("log_min_error_statement", "debug5"),
    ("log_min_messages", "debug1"),
];

/// The SMTP URL (with its password) and the chat webhook URL (itself the credential), set
/// by `ALTER SYSTEM` under the most verbose logging: neither the statement nor the reload
/// writes them to the log, and no other role can read them back.
#[test]
fn alert_urls_stay_out_of_the_log_and_out_of_reach() {
    let env = start_env(small_world(1, json!({})), &VERBOSE_LOGGING);
    let password = format!("pw{}", Uuid::new_v4().simple());
    let hook_path = format!("services/{}", Uuid::new_v4().simple());
    let smtp_url = format!("smtps://alerts:{password}@mail.example.invalid:465");
    let hook_url = format!("https://hooks.example.invalid/{hook_path}");
    let mut su = connect(&env.cluster);
    // The second spelled as Postgres also accepts it: quoted parts, spaces around the dot.
    for (name, value) in [
        ("procore_sync.smtp_url", &smtp_url),
        ("\"procore_sync\" . \"alert_webhook_url\"", &hook_url),
    ] {
        su.batch_execute(&format!("ALTER SYSTEM SET {name} = '{value}'"))
            .expect("ALTER SYSTEM");
    }
    su.execute("SELECT pg_reload_conf()", &[]).expect("reload");
    wait_for(
        &env.cluster,
        Duration::from_secs(20),
        "the reload's log lines",
        || {
            let log = env.cluster.log();
            Ok(
                log.contains("parameter \"procore_sync.smtp_url\" changed (value hidden)")
                    && log.contains(
                        "parameter \"procore_sync.alert_webhook_url\" changed (value hidden)",
                    ),
            )
        },
    );
    let log = env.cluster.log();
    assert!(
        log.contains("statement hidden"),
        "log_statement = all logged the ALTER SYSTEM statements, hidden"
    );
    for secret in [&password, &hook_path] {
        assert!(
            !log.contains(secret.as_str()),
            "the log holds an alert secret"
        );
    }
    create_login_role(&mut su, "app");
    let mut app = connect_as(&env.cluster, "app");
    for name in ["procore_sync.smtp_url", "procore_sync.alert_webhook_url"] {
        expect_denied(app.simple_query(&format!("SHOW {name}")), name);
        // Where alerts go is a superuser's choice.
        expect_denied(
            app.simple_query(&format!(
                "ALTER SYSTEM SET {name} = 'http://attacker.invalid'"
            )),
            &format!("ALTER SYSTEM SET {name}"),
        );
    }
    let show_all = all_text(&mut app, "SHOW ALL").expect("SHOW ALL");
    assert!(
        show_all
            .iter()
            .all(|r| !r.contains(&password) && !r.contains(&hook_path)),
        "SHOW ALL shows an alert secret"
    );
}

/// Remembers the parts of a client-side error the server composed (message, detail,
/// hint), for the leak check. `where_` is left out: with
/// `log_parameter_max_length_on_error` it echoes the caller's own bind parameters back to
/// the caller, which the server log check covers.
fn note_error(watch: &LeakWatch, r: Result<u64, postgres::Error>) {
    if let Err(e) = r {
        match e.as_db_error() {
            Some(db) => watch.note(format!(
                "{} {} {}",
                db.message(),
                db.detail().unwrap_or(""),
                db.hint().unwrap_or("")
            )),
            None => watch.note(e.to_string()),
        }
    }
}

/// Credentials through the error paths that carry them: a real code refused, real tokens
/// with a bad argument (bound, literal, and in a statement with a syntax error).
fn credential_error_paths(env: &Env, watch: &LeakWatch, su: &mut postgres::Client, user: Uuid) {
    let code = env
        .standin
        .mint_code("user-1", "http://elsewhere/cb")
        .expect("code");
    note_error(
        watch,
        su.execute(
            "SELECT procore_connect($1, $2, $3)",
            &[&Uuid::new_v4(), &code, &REDIRECT_URI],
        ),
    );
    let code2 = env
        .standin
        .mint_code("user-1", "http://elsewhere/cb")
        .expect("code");
    let literal = format!(
        "SELECT procore_connect('{}', '{code2}', '{REDIRECT_URI}')",
        Uuid::new_v4()
    );
    note_error(watch, su.batch_execute(&literal).map(|_| 0));
    let pair = env.standin.issue_tokens("user-2").expect("tokens");
    let (access, refresh) = (
        pair["access_token"].as_str().unwrap().to_string(),
        pair["refresh_token"].as_str().unwrap().to_string(),
    );
    note_error(
        watch,
        su.execute(
            "SELECT procore_set_tokens($1, $2, $3, $4)",
            &[&user, &access, &refresh, &-5i32],
        ),
    );
    note_error(
        watch,
        su.batch_execute(&format!(
            "SELECT procore_set_tokens('not-a-uuid', '{access}', '{refresh}', 3600)"
        ))
        .map(|_| 0),
    );
    note_error(
        watch,
        su.batch_execute(&format!(
            "SELECT procore_set_tokens('{user}', '{access}', '{refresh}', 3600"
        ))
        .map(|_| 0),
    );
}

/// Every statement and every bind parameter logged, errors at their most verbose: tokens,
/// codes and the client secret still appear nowhere, through every path that carries them:
/// the code exchange, bad codes, bad token arguments, syncs that refresh, a revoked refresh
/// token, a disconnect.
#[test]
fn secrets_stay_out_of_the_most_verbose_logs() {
    let env = start_env(small_world(3, json!({})), &VERBOSE_LOGGING);
    let watch = LeakWatch::start(&env.cluster);
    let users = env
        .connect_users(3)
        .expect("connect users through procore_connect");
    let mut su = connect(&env.cluster);
    set_jobs(&mut su, None, None);
    credential_error_paths(&env, &watch, &mut su, users[1].0);

    // Tokens from elsewhere, accepted (bound), then refreshed by a sync.
    let pair = env.standin.issue_tokens("user-2").expect("tokens");
    su.execute(
        "SELECT procore_set_tokens($1, $2, $3, $4)",
        &[
            &users[1].0,
            &pair["access_token"].as_str().unwrap(),
            &pair["refresh_token"].as_str().unwrap(),
            &5400i32,
        ],
    )
    .expect("procore_set_tokens");
    env.standin.expire_tokens("user-2").expect("expire");
    env.standin.revoke("user-1").expect("revoke");
    for (user, login) in &users {
        let row = su
            .query_one(
                "SELECT status, error_message FROM procore_sync_user($1)",
                &[user],
            )
            .unwrap_or_else(|e| panic!("sync {login}: {e}"));
        let status: String = row.get(0);
        if login == "user-1" {
            assert_eq!(status, "failed", "the revoked user's sync fails");
            let message: String = row.get(1);
            assert!(message.contains("invalid_grant"), "{message}");
        } else {
            assert_eq!(status, "completed", "{login}");
        }
    }
    assert!(
        env.standin.stats().expect("stats")["refreshes"].as_u64() >= Some(1),
        "a refresh happened"
    );
    let removed: bool = su
        .query_one("SELECT procore_disconnect($1)", &[&users[2].0])
        .expect("disconnect")
        .get(0);
    assert!(removed);

    assert!(
        env.cluster.log().contains("procore_sync_user"),
        "log_statement = all really logged statements"
    );
    let lines = env.cluster.log().lines().count();
    assert!(lines > 200, "the verbose log was written ({lines} lines)");
    watch.finish(&env.cluster, &[&env.standin]);
}

/// `log_parameter_max_length_on_error` (PostgreSQL 13+) adds the bind parameters of a
/// failed statement to the log line's CONTEXT. The log hook hides the statement and its
/// DETAIL, but credentials passed as parameters must not come back through CONTEXT.
#[test]
fn bind_parameters_logged_on_error_carry_no_credentials() {
    let mut settings = VERBOSE_LOGGING.to_vec();
    settings.push(("log_parameter_max_length_on_error", "-1"));
    let env = start_env(small_world(2, json!({})), &settings);
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(2).expect("connect users");
    let mut su = connect(&env.cluster);
    set_jobs(&mut su, None, None);
    credential_error_paths(&env, &watch, &mut su, users[1].0);
    let setting: String = su
        .query_one("SHOW log_parameter_max_length_on_error", &[])
        .expect("show setting")
        .get(0);
    assert_eq!(setting, "-1", "the setting is in effect");
    watch.finish(&env.cluster, &[&env.standin]);
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

fn set_and_wait(env: &Env, name: &str, value: &str) {
    env.cluster.set_setting(name, value).expect("ALTER SYSTEM");
    wait_for(
        &env.cluster,
        Duration::from_secs(20),
        &format!("{name} = {value:?} to be in effect"),
        || {
            let v: String = env
                .cluster
                .client()?
                .query_one("SELECT current_setting($1)", &[&name])?
                .get(0);
            Ok(v == value)
        },
    );
}

/// The stand-in serves HTTPS with its own CA: with `procore_sync.ca_file` the sync works,
/// without it (or with another CA, or an unreadable file) it fails with a clear certificate
/// error, and it works again once the CA is back.
#[test]
fn tls_works_with_the_ca_file_and_fails_clearly_without_it() {
    let world = small_world(2, json!({}));
    let env = Env::new_tls(world, &[("procore_sync.max_workers", "2")])
        .expect("start the TLS stand-in and the cluster");
    assert!(
        env.standin.base_url().starts_with("https://"),
        "{}",
        env.standin.base_url()
    );
    let watch = LeakWatch::start(&env.cluster);
    let ca = env.standin.ca_file().expect("CA").display().to_string();
    let users = env.connect_users(2).expect("connect over TLS with the CA");
    let mut su = connect(&env.cluster);
    set_jobs(&mut su, None, None);
    let sync = |c: &mut postgres::Client, user: &Uuid| -> (String, String) {
        let row = c
            .query_one(
                "SELECT status, coalesce(error_message, '') FROM procore_sync_user($1)",
                &[user],
            )
            .expect("procore_sync_user");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        sync(&mut su, &users[0].0),
        ("completed".into(), String::new())
    );

    // Another CA: a man in the middle with a certificate of its own.
    let other_dir = tempfile::Builder::new()
        .prefix("procore-e2e-tls-other-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    std::fs::set_permissions(
        other_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let other = Standin::start_tls(json!({"users": 1}), other_dir.path()).expect("other stand-in");
    let other_ca = other.ca_file().expect("other CA").display().to_string();
    let missing = "/tmp/procore-e2e-no-such-ca.pem".to_string();
    for (value, needle) in [
        ("", "certificate"),
        (other_ca.as_str(), "certificate"),
        (missing.as_str(), "CA file"),
    ] {
        set_and_wait(&env, "procore_sync.ca_file", value);
        let mut c = connect(&env.cluster);
        let (status, message) = sync(&mut c, &users[1].0);
        assert_eq!(status, "failed", "ca_file = {value:?}: {message}");
        assert!(
            message.contains(needle),
            "ca_file = {value:?}: the error says what is wrong ({needle:?}): {message}"
        );
        // procore_connect too, with a SQLSTATE.
        let code = env.standin.mint_code("user-2", REDIRECT_URI).expect("code");
        let err = db_error(
            c.execute(
                "SELECT procore_connect($1, $2, $3)",
                &[&Uuid::new_v4(), &code, &REDIRECT_URI],
            ),
            "procore_connect without the CA",
        );
        assert_ne!(err.code(), &SqlState::INTERNAL_ERROR, "{}", err.message());
        assert!(err.message().contains(needle), "{}", err.message());
        watch.note(err.message().to_string());
    }
    let verified: i64 = su
        .query_one(
            "SELECT count(*) FROM procore_sync_queue WHERE error_message LIKE '%certificate verification failed%'",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(
        verified, 2,
        "both wrong-CA syncs name certificate verification"
    );

    set_and_wait(&env, "procore_sync.ca_file", &ca);
    let mut c = connect(&env.cluster);
    assert_eq!(
        sync(&mut c, &users[1].0),
        ("completed".into(), String::new())
    );
    assert_records_exactly_once(&env, &mut c);
    assert_every_item_finished(&mut c);
    watch.finish(&env.cluster, &[&env.standin, &other]);
}

// ---------------------------------------------------------------------------------------
// Injection
// ---------------------------------------------------------------------------------------

/// Quotes, semicolons, comment markers and non-ASCII in a catalog path, in Procore's JSON,
/// in a job name and in an OAuth code reach their destination as data and change nothing
/// else.
#[test]
fn quotes_semicolons_and_unicode_change_nothing_they_should_not() {
    let env = start_env(small_world(2, json!({})), &[]);
    let watch = LeakWatch::start(&env.cluster);
    let users = env.connect_users(2).expect("connect users");
    let mut su = connect(&env.cluster);
    set_jobs(&mut su, None, None);

    // A resource whose path carries the tricky text as a query value, and one whose path
    // itself is broken by a quote.
    let note = format!("{TRICKY} ' \" ; --");
    su.execute(
        "INSERT INTO procore_sync_resource (name, path_template, scope, supports_updated_at_filter) \
         VALUES ('rfis_noted', $1, 'project', false), ('rfis_quote_path', $2, 'project', false)",
        &[
            &format!("/rest/v1.0/projects/{{project_id}}/rfis?note={note}"),
            &"/rest/v1.0/projects/{project_id}/rfis'; DROP TABLE procore_records; --",
        ],
    )
    .expect("add resources");
    let err = db_error(
        su.execute(
            "INSERT INTO procore_sync_resource (name, path_template, scope) VALUES ($1, '/x', 'user')",
            &[&"x'; DROP TABLE procore_records; --"],
        ),
        "a resource name with a quote",
    );
    assert_eq!(err.code(), &SqlState::CHECK_VIOLATION, "{}", err.message());

    for (user, login) in &users {
        let row = su
            .query_one(
                "SELECT status, coalesce(error_message, '') FROM procore_sync_user($1)",
                &[user],
            )
            .unwrap_or_else(|e| panic!("sync {login}: {e}"));
        let (status, message): (String, String) = (row.get(0), row.get(1));
        assert_eq!(status, "completed", "{login}: {message}");
        assert!(
            message.contains("rfis_quote_path") && !message.contains("rfis_noted"),
            "{login}: only the broken path failed, and is named: {message}"
        );
    }
    // The query value arrived byte for byte.
    let noted: Vec<String> = request_log(&env.standin)
        .iter()
        .filter(|e| e["resource"] == "rfis" && e["query"].as_str().unwrap_or("").contains("note="))
        .map(|e| e["query"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(!noted.is_empty(), "the noted resource was requested");
    for q in &noted {
        assert!(
            q.contains(&format!("note={note}")),
            "query sent as data: {q}"
        );
    }
    // Its records are stored under its own name, the same ones as rfis.
    let per_resource = |c: &mut postgres::Client, r: &str| -> i64 {
        c.query_one(
            "SELECT count(*) FROM procore_records WHERE resource = $1",
            &[&r],
        )
        .expect("count")
        .get(0)
    };
    assert_eq!(
        per_resource(&mut su, "rfis_noted"),
        per_resource(&mut su, "rfis")
    );
    assert!(per_resource(&mut su, "rfis") > 0);

    // The tricky JSON values survive byte for byte, in the column and in the JSON.
    let projects = 2 * users.len() as i64;
    for (resource, field) in [
        ("rfis", "subject"),
        ("submittals", "title"),
        ("punch_items", "name"),
        ("observations", "name"),
        ("change_events", "title"),
    ] {
        let row = su
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE data->>$2 = name) FROM procore_records \
                 WHERE resource = $1 AND name LIKE '%' || $3 || '%'",
                &[&resource, &field, &TRICKY],
            )
            .expect("tricky rows");
        let (n, same): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            n, projects,
            "{resource}: one tricky record per project, intact"
        );
        assert_eq!(same, n, "{resource}: name column equals data->>'{field}'");
    }

    // A job name full of SQL is a name.
    let jobname = format!("job {TRICKY}");
    su.query_one(
        "SELECT procore_sync_schedule($1, '59 seconds', 'SELECT 1')",
        &[&jobname],
    )
    .expect("schedule a tricky name");
    let found: i64 = su
        .query_one(
            "SELECT count(*) FROM procore_sync_job WHERE jobname = $1",
            &[&jobname],
        )
        .expect("find job")
        .get(0);
    assert_eq!(found, 1);
    let removed: bool = su
        .query_one("SELECT procore_sync_unschedule($1::text)", &[&jobname])
        .expect("unschedule it")
        .get(0);
    assert!(removed);

    // An OAuth code full of SQL is refused by "Procore", and stores nothing.
    let before: i64 = su
        .query_one("SELECT count(*) FROM procore_sync_credentials", &[])
        .expect("count")
        .get(0);
    let err = db_error(
        su.execute(
            "SELECT procore_connect($1, $2, $3)",
            &[
                &Uuid::new_v4(),
                &format!("code'; DELETE FROM procore_sync_credentials; -- {TRICKY}"),
                &REDIRECT_URI,
            ],
        ),
        "procore_connect with a SQL-laden code",
    );
    assert!(err.message().contains("invalid_grant"), "{}", err.message());
    let after: i64 = su
        .query_one("SELECT count(*) FROM procore_sync_credentials", &[])
        .expect("count")
        .get(0);
    assert_eq!(after, before, "nothing stored, nothing deleted");

    // Every table is still there, and the standard data is exactly the stand-in's.
    for table in [
        "procore_records",
        "procore_sync_queue",
        "procore_sync_credentials",
        "procore_sync_job",
        "procore_sync_resource",
    ] {
        let exists: bool = su
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .expect("regclass")
            .get(0);
        assert!(exists, "{table} still exists");
    }
    su.execute(
        "DELETE FROM procore_records WHERE resource = 'rfis_noted'",
        &[],
    )
    .expect("drop the extra resource's rows");
    assert_records_exactly_once(&env, &mut su);
    assert_every_item_finished(&mut su);
    watch.finish(&env.cluster, &[&env.standin]);
}

/// STYLE.md: every SQL statement is parameterised, none built with `format!` from input.
/// Reads the extension's source: any SQL text built with `format!` may only splice in
/// constants, and only three calls run SQL that is not a literal: the job runner (a job's
/// command is SQL by definition), the credentials reader and the token writer (each given
/// one of two constants by its callers).
#[test]
fn every_sql_statement_in_the_extension_is_parameterised() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../src");
    let mut files = Vec::new();
    collect_rs(&src, &mut files);
    assert!(
        files.len() > 10,
        "found the extension's source in {}",
        src.display()
    );
    let sql_word = |s: &str| {
        [
            "SELECT ", "INSERT ", "UPDATE ", "DELETE ", " FROM ", " WHERE ", " SET ",
        ]
        .iter()
        .any(|k| s.contains(k))
    };
    let mut problems = Vec::new();
    let mut dynamic_calls = Vec::new();
    for file in &files {
        let name = file.strip_prefix(&src).unwrap().display().to_string();
        if [
            "pg_tests.rs",
            "procore/client_tests.rs",
            "procore/test_server.rs",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let text = strip_cfg_test(&text);
        // format!("...") whose text looks like SQL may only interpolate CONSTANTS.
        for (pos, _) in text.match_indices("format!(") {
            let rest = &text[pos + 8..];
            let Some(lit) = string_literal(rest) else {
                continue;
            };
            if !sql_word(&lit) {
                continue;
            }
            for hole in holes(&lit) {
                let ok = !hole.is_empty()
                    && hole
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit());
                if !ok {
                    problems.push(format!(
                        "{name}: format!(\"{lit}\") splices {{{hole}}} into SQL"
                    ));
                }
            }
            if holes(&lit).is_empty()
                && rest.trim_start()[lit.len() + 2..]
                    .trim_start()
                    .starts_with(',')
            {
                problems.push(format!(
                    "{name}: format!(\"{lit}\") builds SQL from arguments"
                ));
            }
        }
        // Calls that run SQL with something other than a string literal.
        for call in [
            "Spi::run(",
            "Spi::run_with_args(",
            "Spi::get_one(",
            "Spi::get_one_with_args::<",
            "Spi::get_two_with_args::<",
            "client.update(",
            "client.select(",
            "plans::run_kept(",
            "plans::get_one_kept::<",
            "plans::get_two_kept::<",
        ] {
            for (pos, _) in text.match_indices(call) {
                let mut rest = &text[pos + call.len()..];
                if call.ends_with('<') {
                    // skip the turbofish: `...>(`
                    let Some(open) = rest.find(">(") else {
                        continue;
                    };
                    rest = &rest[open + 2..];
                }
                let arg = rest.trim_start();
                if !arg.starts_with('"') {
                    let first: String =
                        arg.chars().take_while(|c| *c != ',' && *c != ')').collect();
                    dynamic_calls.push(format!("{name}: {call}{first}"));
                }
            }
        }
    }
    let allowed = [
        "worker/job_runner.rs: client.update(command",
        "data/credentials.rs: client.update(sql",
        "data/credentials.rs: Spi::run_with_args(sql",
        // Two variants of one statement each, chosen at run time: constants that
        // `macro_rules!` with `$part:literal` builds by `concat!`, so only literals fit.
        "data/visibility.rs: plans::get_two_kept::<sql",
        "data/visibility.rs: Spi::get_one_with_args::<sql",
        // Kept plans run the caller's statement, a `&'static str`: the calls above are
        // checked to pass literals (or the two `concat!` constants).
        "data/plans.rs: client.update(&kept[sql]",
        // The page upsert, a literal in procore_sync_core::statements shared with the bench.
        "data/store.rs: plans::get_one_kept::<UPSERT_PAGE",
    ];
    for call in &dynamic_calls {
        if !allowed.iter().any(|a| call == a) {
            problems.push(format!("SQL that is not a literal: {call}"));
        }
    }
    assert!(
        problems.is_empty(),
        "unparameterised SQL:\n{}",
        problems.join("\n")
    );
    // The one non-literal credentials query is built from constants only.
    let store =
        std::fs::read_to_string(src.join("data/credentials.rs")).expect("data/credentials.rs");
    assert!(store.contains("read_credentials(SELECT_CREDENTIALS, user_id)"));
    assert!(
        store.contains("read_credentials(&format!(\"{SELECT_CREDENTIALS} FOR UPDATE\"), user_id)")
    );
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without its `#[cfg(test)] mod tests { ... }` block (unit tests may build SQL
/// however they like).
fn strip_cfg_test(text: &str) -> String {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text.to_string(),
    }
}

/// The contents of the string literal `rest` starts with (after whitespace), if any.
fn string_literal(rest: &str) -> Option<String> {
    let rest = rest.trim_start();
    let body = rest.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                out.push(chars.next()?);
            }
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// The `{...}` placeholders of a format string (`{{` escapes excluded), names only.
fn holes(lit: &str) -> Vec<String> {
    let mut out = Vec::new();
    let cleaned = lit.replace("{{", "").replace("}}", "");
    let mut rest = cleaned.as_str();
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let inner = &after[..close];
        out.push(inner.split(':').next().unwrap_or("").to_string());
        rest = &after[close + 1..];
    }
    out
}
