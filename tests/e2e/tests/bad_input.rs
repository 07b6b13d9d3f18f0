//! SPEC §7: bad input gets a clear error with a specific SQLSTATE and changes nothing.

use postgres::error::SqlState;
use procore_sync_e2e::{Env, REDIRECT_URI};
use serde_json::json;
use uuid::Uuid;

use common::db_error;

fn env() -> Env {
    let world = json!({"users": 2, "companies_per_user": 1, "projects_per_company": 1, "records_per_resource": 3});
    Env::new(world, &[]).expect("start the stand-in and the cluster")
}

fn assert_specific_sqlstate(err: &postgres::error::DbError, what: &str) {
    assert_ne!(
        err.code(),
        &SqlState::INTERNAL_ERROR,
        "{what}: generic XX000 instead of a specific SQLSTATE: {}",
        err.message()
    );
}

#[test]
fn bad_input_is_rejected_with_clear_errors() {
    let env = env();
    let mut client = env.client().expect("connect");
    let secret = env.standin.client_secret();

    // An unknown user.
    let stranger = Uuid::new_v4();
    let err = db_error(
        client.query("SELECT * FROM procore_sync_user($1)", &[&stranger]),
        "procore_sync_user(unknown)",
    );
    assert_specific_sqlstate(&err, "procore_sync_user(unknown)");
    assert!(
        err.message().contains(&stranger.to_string()),
        "the error names the user: {}",
        err.message()
    );

    // A user whose tokens are gone.
    let users = env.connect_users(1).expect("connect user-1");
    let (user_id, _login) = &users[0];
    let removed: bool = client
        .query_one("SELECT procore_disconnect($1)", &[user_id])
        .expect("disconnect")
        .get(0);
    assert!(removed, "procore_disconnect removes stored tokens");
    let again: bool = client
        .query_one("SELECT procore_disconnect($1)", &[user_id])
        .expect("disconnect again")
        .get(0);
    assert!(!again, "a second procore_disconnect has nothing to remove");
    let err = db_error(
        client.query("SELECT * FROM procore_sync_user($1)", &[user_id]),
        "procore_sync_user(no tokens)",
    );
    assert_specific_sqlstate(&err, "procore_sync_user(no tokens)");
    assert!(
        err.message().contains(&user_id.to_string()),
        "the error names the user: {}",
        err.message()
    );
    let queued: i32 = client
        .query_one("SELECT queue_procore_sync_for_all_users()", &[])
        .expect("queue")
        .get(0);
    assert_eq!(queued, 0, "a user without tokens is not queued");

    // A bad authorization code.
    let newcomer = Uuid::new_v4();
    let err = db_error(
        client.execute(
            "SELECT procore_connect($1, $2, $3)",
            &[&newcomer, &"not-a-real-code", &REDIRECT_URI],
        ),
        "procore_connect(bad code)",
    );
    assert_specific_sqlstate(&err, "procore_connect(bad code)");
    assert!(
        err.message().contains("invalid_grant")
            || err.detail().unwrap_or("").contains("invalid_grant"),
        "the error says Procore answered invalid_grant: {}",
        err.message()
    );
    assert!(
        !err.message().contains(&secret),
        "the client secret never appears in an error"
    );
    let stored: i64 = client
        .query_one("SELECT count(*) FROM procore_sync_credentials", &[])
        .expect("count")
        .get(0);
    assert_eq!(stored, 0, "a failed procore_connect stores nothing");

    // A code minted for another redirect URI is as bad as a made-up one.
    let code = env
        .standin
        .mint_code("user-2", "http://elsewhere/callback")
        .expect("mint");
    let err = db_error(
        client.execute(
            "SELECT procore_connect($1, $2, $3)",
            &[&newcomer, &code, &REDIRECT_URI],
        ),
        "procore_connect(wrong redirect_uri)",
    );
    assert_specific_sqlstate(&err, "procore_connect(wrong redirect_uri)");
    assert!(
        !err.message().contains(&code),
        "the code never appears in an error"
    );

    // Bad schedules name what is wrong and create no job.
    for (schedule, must_mention) in [("61 * * * *", "minute"), ("60 seconds", "second")] {
        let what = format!("procore_sync_schedule('{schedule}')");
        let err = db_error(
            client.query_one(
                "SELECT procore_sync_schedule('e2e-bad', $1, 'SELECT 1')",
                &[&schedule],
            ),
            &what,
        );
        assert_specific_sqlstate(&err, &what);
        let text = format!("{} {}", err.message(), err.detail().unwrap_or("")).to_lowercase();
        assert!(
            text.contains(must_mention),
            "{what}: the error names the {must_mention} field: {}",
            err.message()
        );
    }
    let jobs: i64 = client
        .query_one(
            "SELECT count(*) FROM procore_sync_job WHERE jobname = 'e2e-bad'",
            &[],
        )
        .expect("count jobs")
        .get(0);
    assert_eq!(jobs, 0, "a rejected schedule creates no job");

    let log = env.cluster.log();
    assert!(
        !log.contains(&secret),
        "the client secret never appears in the server log"
    );
}

mod common;

/// Everything a bad call could have changed, as text: the extension's tables (run history
/// aside, which the scheduler writes on its own), `postgresql.auto.conf` and the settings.
fn state(env: &Env, client: &mut postgres::Client) -> String {
    let mut out = String::new();
    for sql in [
        "SELECT user_id, access_token, refresh_token, expires_at, needs_reconnect, reconnect_reason, \
                refreshed_at FROM procore_sync_credentials ORDER BY user_id",
        "SELECT id, user_id, status, started_at, completed_at, error_message, attempts, \
                next_attempt_at, worker_pid FROM procore_sync_queue ORDER BY id",
        "SELECT jobid, jobname, schedule, command, database, username, active \
         FROM procore_sync_job ORDER BY jobid",
        "SELECT * FROM procore_sync_resource ORDER BY name",
        "SELECT resource, company_id, procore_id, xmin FROM procore_records ORDER BY 1, 2, 3",
        "SELECT * FROM procore_sync_cursor ORDER BY 1, 2, 3, 4",
        "SELECT name, setting FROM pg_settings WHERE name LIKE 'procore_sync.%' ORDER BY name",
    ] {
        for message in client.simple_query(sql).expect(sql) {
            if let postgres::SimpleQueryMessage::Row(row) = message {
                for i in 0..row.len() {
                    out.push_str(row.get(i).unwrap_or("NULL"));
                    out.push('|');
                }
                out.push('\n');
            }
        }
    }
    out.push_str(
        &std::fs::read_to_string(env.cluster.data_dir().join("postgresql.auto.conf"))
            .unwrap_or_default(),
    );
    out
}

/// NULL arguments, unknown users and jobs, malformed schedules, empty strings and absurd
/// settings: each is refused with the SQLSTATE the README documents, and nothing changes.
#[test]
fn null_unknown_malformed_and_absurd_input_gets_a_sqlstate_and_changes_nothing() {
    let env = env();
    let users = env.connect_users(1).expect("connect user-1");
    let user = users[0].0;
    let mut client = env.client().expect("connect");
    common::set_jobs(&mut client, None, None);
    let stranger = Uuid::new_v4();
    let job: i64 = client
        .query_one(
            "SELECT procore_sync_schedule('e2e-good', '5 * * * *', 'SELECT 1')",
            &[],
        )
        .expect("a job to alter")
        .get(0);
    let before = state(&env, &mut client);

    let null_value = SqlState::NULL_VALUE_NOT_ALLOWED;
    let no_data = SqlState::NO_DATA_FOUND;
    let invalid = SqlState::INVALID_PARAMETER_VALUE;
    let mut cases: Vec<(String, SqlState, Option<&str>)> = vec![
        // NULL arguments: 22004, naming the argument.
        (
            "SELECT * FROM procore_sync_user(NULL)".into(),
            null_value.clone(),
            Some("user_id"),
        ),
        (
            format!("SELECT procore_connect(NULL, 'c', '{REDIRECT_URI}')"),
            null_value.clone(),
            Some("user_id"),
        ),
        (
            format!("SELECT procore_connect('{user}', NULL, '{REDIRECT_URI}')"),
            null_value.clone(),
            Some("code"),
        ),
        (
            format!("SELECT procore_connect('{user}', 'c', NULL)"),
            null_value.clone(),
            Some("redirect_uri"),
        ),
        (
            "SELECT procore_set_tokens(NULL, 'a', 'r', 60)".into(),
            null_value.clone(),
            Some("user_id"),
        ),
        (
            format!("SELECT procore_set_tokens('{user}', NULL, 'r', 60)"),
            null_value.clone(),
            Some("access_token"),
        ),
        (
            format!("SELECT procore_set_tokens('{user}', 'a', NULL, 60)"),
            null_value.clone(),
            Some("refresh_token"),
        ),
        (
            format!("SELECT procore_set_tokens('{user}', 'a', 'r', NULL)"),
            null_value.clone(),
            Some("expires_in"),
        ),
        (
            "SELECT procore_disconnect(NULL)".into(),
            null_value.clone(),
            Some("user_id"),
        ),
        (
            "SELECT procore_sync_schedule(NULL, '* * * * *', 'SELECT 1')".into(),
            null_value.clone(),
            Some("job_name"),
        ),
        (
            "SELECT procore_sync_schedule('e2e-x', NULL, 'SELECT 1')".into(),
            null_value.clone(),
            Some("schedule"),
        ),
        (
            "SELECT procore_sync_schedule('e2e-x', '* * * * *', NULL)".into(),
            null_value.clone(),
            Some("command"),
        ),
        (
            "SELECT procore_sync_unschedule(NULL::text)".into(),
            null_value.clone(),
            Some("job_name"),
        ),
        (
            "SELECT procore_sync_unschedule(NULL::bigint)".into(),
            null_value.clone(),
            Some("job_id"),
        ),
        (
            "SELECT procore_sync_alter_job(NULL, active => false)".into(),
            null_value.clone(),
            Some("job_id"),
        ),
        // Unknown users and jobs: P0002, naming them.
        (
            format!("SELECT * FROM procore_sync_user('{stranger}')"),
            no_data.clone(),
            Some(stranger.to_string().leak()),
        ),
        (
            "SELECT procore_sync_unschedule('e2e-no-such-job')".into(),
            no_data.clone(),
            Some("e2e-no-such-job"),
        ),
        (
            "SELECT procore_sync_unschedule(987654321::bigint)".into(),
            no_data.clone(),
            Some("987654321"),
        ),
        (
            "SELECT procore_sync_alter_job(987654321, active => false)".into(),
            no_data.clone(),
            Some("987654321"),
        ),
        // Empty or impossible values: 22023.
        (
            format!("SELECT procore_connect('{user}', '', '{REDIRECT_URI}')"),
            invalid.clone(),
            None,
        ),
        (
            format!("SELECT procore_set_tokens('{user}', '', 'r', 60)"),
            invalid.clone(),
            None,
        ),
        (
            format!("SELECT procore_set_tokens('{user}', 'a', 'r', -1)"),
            invalid.clone(),
            Some("expires_in"),
        ),
        (
            "SELECT procore_sync_schedule('', '* * * * *', 'SELECT 1')".into(),
            invalid.clone(),
            None,
        ),
        (
            "SELECT procore_sync_schedule('e2e-x', '* * * * *', '  ')".into(),
            invalid.clone(),
            Some("command"),
        ),
        (
            format!("SELECT procore_sync_alter_job({job}, schedule => '*/0 * * * *')"),
            invalid.clone(),
            Some("position"),
        ),
        (
            format!("SELECT procore_sync_alter_job({job}, username => 'no_such_role')"),
            invalid.clone(),
            Some("no_such_role"),
        ),
        (
            format!("SELECT procore_sync_alter_job({job}, database => 'no_such_db')"),
            invalid.clone(),
            Some("no_such_db"),
        ),
        // Absurd settings: refused by the setting's own range, 22023.
        (
            "ALTER SYSTEM SET procore_sync.max_workers = 0".into(),
            invalid.clone(),
            Some("procore_sync.max_workers"),
        ),
        (
            "ALTER SYSTEM SET procore_sync.http_timeout_ms = -1".into(),
            invalid.clone(),
            Some("procore_sync.http_timeout_ms"),
        ),
        (
            "ALTER SYSTEM SET procore_sync.http_timeout_ms = 'soon'".into(),
            invalid.clone(),
            Some("procore_sync.http_timeout_ms"),
        ),
        (
            "ALTER SYSTEM SET procore_sync.lease_timeout = -5".into(),
            invalid.clone(),
            Some("procore_sync.lease_timeout"),
        ),
        (
            "ALTER SYSTEM SET procore_sync.max_attempts = 0".into(),
            invalid.clone(),
            Some("procore_sync.max_attempts"),
        ),
        (
            "ALTER SYSTEM SET procore_sync.max_response_size = 0".into(),
            invalid.clone(),
            Some("procore_sync.max_response_size"),
        ),
        (
            "ALTER SYSTEM SET procore_sync.retention = -1".into(),
            invalid.clone(),
            Some("procore_sync.retention"),
        ),
        (
            "ALTER SYSTEM SET procore_sync.full_sync_interval = -1".into(),
            invalid.clone(),
            Some("procore_sync.full_sync_interval"),
        ),
        (
            "SET procore_sync.batch_size = 0".into(),
            invalid.clone(),
            Some("procore_sync.batch_size"),
        ),
        (
            "SET procore_sync.batch_size = -10".into(),
            invalid.clone(),
            Some("procore_sync.batch_size"),
        ),
    ];
    // Malformed schedules: 22023, quoting the schedule, and where a field is wrong, its
    // position.
    for (schedule, position) in [
        ("", false),
        ("* * * *", false),
        ("* * * * * *", true),
        ("61 * * * *", true),
        ("*/0 * * * *", true),
        ("5-1 * * * *", true),
        ("* * 32 * *", true),
        ("* * * 13 *", true),
        ("* * * * 8", true),
        ("1,,2 * * * *", true),
        ("0 seconds", true),
        ("60 seconds", true),
        ("-1 seconds", false),
        ("every minute", false),
    ] {
        let sql = format!("SELECT procore_sync_schedule('e2e-bad', '{schedule}', 'SELECT 1')");
        cases.push((
            sql,
            invalid.clone(),
            Some(if position {
                "position"
            } else {
                "invalid schedule"
            }),
        ));
    }

    // Every case runs, and every way one goes wrong is reported together.
    let mut problems = Vec::new();
    for (sql, code, needle) in &cases {
        let err = match client.simple_query(sql) {
            Ok(_) => {
                problems.push(format!("{sql}: succeeded"));
                continue;
            }
            Err(e) => match e.as_db_error() {
                Some(db) => db.clone(),
                None => panic!("{sql}: not a server error: {e}"),
            },
        };
        if err.code() != code {
            problems.push(format!(
                "{sql}: SQLSTATE {} instead of {}: {}",
                err.code().code(),
                code.code(),
                err.message()
            ));
        } else if let Some(needle) = needle {
            if !err.message().contains(needle) {
                problems.push(format!(
                    "{sql}: the message does not name {needle:?}: {}",
                    err.message()
                ));
            }
        }
        if state(&env, &mut client) != before {
            problems.push(format!("{sql}: changed something"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} bad calls were not refused as documented:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
    // An unknown user is not an error for procore_disconnect (nothing to remove), and
    // changes nothing either.
    let removed: bool = client
        .query_one("SELECT procore_disconnect($1)", &[&stranger])
        .expect("disconnect a stranger")
        .get(0);
    assert!(!removed);
    assert_eq!(state(&env, &mut client), before);
    eprintln!("bad_input: {} bad calls refused", cases.len());
}
