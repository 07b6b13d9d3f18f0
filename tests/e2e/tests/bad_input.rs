//! SPEC §7: bad input gets a clear error with a specific SQLSTATE and changes nothing.

use postgres::error::SqlState;
use procore_sync_e2e::{Env, REDIRECT_URI};
use serde_json::json;
use uuid::Uuid;

fn env() -> Env {
    let world = json!({"users": 2, "companies_per_user": 1, "projects_per_company": 1, "records_per_resource": 3});
    Env::new(world, &[]).expect("start the stand-in and the cluster")
}

/// The server-side error of a failed statement, with a readable panic if it succeeded.
fn db_error(
    result: Result<impl std::fmt::Debug, postgres::Error>,
    what: &str,
) -> postgres::error::DbError {
    match result {
        Ok(v) => panic!("{what} succeeded ({v:?}) but should have failed"),
        Err(e) => e
            .as_db_error()
            .cloned()
            .unwrap_or_else(|| panic!("{what}: not a server error: {e}")),
    }
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
