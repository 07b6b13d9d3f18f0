//! Each app user sees what their own Procore account sees (issue 15), checked the way an app
//! uses it: a non-superuser app role, row-level security on `procore_records` through
//! `procore_sync_visible`, and `auth.uid()` stood in by a function that reads a setting, as
//! Supabase does. The stand-in gives two logins one company with different project access
//! and a private RFI, and later takes access away, deletes a record and loses a user.

mod common;

use std::collections::BTreeSet;

use common::*;
use procore_sync_e2e::rls::{APP_ROLE_SETUP, POLICY_PER_ROW, POLICY_SETS, SET_SIGNED_IN_USER};
use procore_sync_e2e::{Env, RecordKey};
use serde_json::json;
use uuid::Uuid;

/// user-1 owns company 1001 (projects 1001001, 1001002); user-2 owns 2001 and is a member
/// of 1001 with project 1001001 only. RFI 3 of project 1001001 is private to user-1.
const SHARED_COMPANY: i64 = 1001;
const SHARED_PROJECT: i64 = 1_001_001;
const PRIVATE_RFI: i64 = SHARED_PROJECT * 100_000 + 3;
const PUBLIC_RFI: i64 = SHARED_PROJECT * 100_000 + 1;

const TYPED_VIEWS: [(&str, &str); 9] = [
    ("companies", "procore_companies"),
    ("projects", "procore_projects"),
    ("vendors", "procore_vendors"),
    ("project_users", "procore_project_users"),
    ("rfis", "procore_rfis"),
    ("submittals", "procore_submittals"),
    ("punch_items", "procore_punch_items"),
    ("observations", "procore_observations"),
    ("change_events", "procore_change_events"),
];

/// The two documented policies: one call per row, and the same answer as hashed sets.
const POLICIES: [(&str, &str); 2] = [("per-row function", POLICY_PER_ROW), ("sets", POLICY_SETS)];

struct App {
    env: Env,
    users: Vec<(Uuid, String)>,
    policy: &'static str,
}

impl App {
    fn start(policy: (&'static str, &str)) -> App {
        App::start_with(policy, json!({}), &[])
    }

    /// [`App::start`] with more of the world (`extra`) and the catalog's `enable`d too.
    fn start_with(policy: (&'static str, &str), extra: serde_json::Value, enable: &[&str]) -> App {
        let mut world = json!({
            "records_per_resource": 6,
            "members": [{"login": "user-2", "company_id": SHARED_COMPANY, "projects": [SHARED_PROJECT]}],
            "private_records": [{"resource": "rfis", "id": PRIVATE_RFI, "visible_to": ["user-1"]}],
        });
        if let (Some(world), Some(extra)) = (world.as_object_mut(), extra.as_object()) {
            world.extend(extra.clone());
        }
        let world = small_world(2, world);
        // Every listing full, so that deletions show at once.
        let env = start_env(world, &[("procore_sync.full_sync_interval", "0")]);
        let mut client = env.client().expect("connect");
        set_jobs(&mut client, None, None);
        let names: Vec<String> = enable.iter().map(|n| n.to_string()).collect();
        client
            .execute(
                "UPDATE procore_sync_resource SET enabled = true WHERE name = ANY ($1)",
                &[&names],
            )
            .expect("enable catalog resources");
        let users = env.connect_users(2).expect("connect user-1 and user-2");
        client
            .batch_execute(APP_ROLE_SETUP)
            .expect("the app's RLS set-up");
        client.batch_execute(policy.1).expect("the policy");
        App {
            env,
            users,
            policy: policy.0,
        }
    }

    fn sync(&self, i: usize) {
        let mut client = self.env.client().expect("connect");
        let row = client
            .query_one(
                "SELECT status, coalesce(error_message, '') FROM procore_sync_user($1)",
                &[&self.users[i].0],
            )
            .expect("procore_sync_user");
        let (status, error): (String, String) = (row.get(0), row.get(1));
        assert_eq!(status, "completed", "sync of {}: {error}", self.users[i].1);
    }

    /// The app role's session for the signed-in user `user` (None: nobody signed in).
    fn app_session(&self, user: Option<Uuid>) -> postgres::Client {
        let mut app = connect_as(&self.env.cluster, "app_user");
        let sub = user.map(|u| u.to_string()).unwrap_or_default();
        app.execute(SET_SIGNED_IN_USER, &[&sub])
            .expect("set the signed-in user");
        app
    }

    /// What the app shows `user` through `procore_records` (live records).
    fn seen_by(&self, user: Option<Uuid>) -> BTreeSet<RecordKey> {
        let mut app = self.app_session(user);
        keys(
            &mut app,
            "SELECT resource, company_id, procore_id FROM procore_records WHERE deleted_at IS NULL",
        )
    }

    /// What the stand-in shows that login now.
    fn procore_shows(&self, i: usize) -> BTreeSet<RecordKey> {
        self.env
            .standin
            .records_for(&self.users[i].1)
            .expect("the stand-in's records for a login")
            .into_iter()
            .collect()
    }

    /// The app shows user `i` exactly what Procore shows them, through the table, every
    /// typed view and a bare COUNT(*).
    fn assert_sees_what_procore_shows(&self, i: usize, when: &str) {
        let when = &format!("{} (policy: {})", when, self.policy);
        let (user, login) = &self.users[i];
        let expected = self.procore_shows(i);
        assert!(
            !expected.is_empty(),
            "{when}: {login} sees something in Procore"
        );
        let seen = self.seen_by(Some(*user));
        assert_eq!(
            seen,
            expected,
            "{when}: {login} sees exactly their Procore records (missing: {:?}; extra: {:?})",
            expected.difference(&seen).take(5).collect::<Vec<_>>(),
            seen.difference(&expected).take(5).collect::<Vec<_>>()
        );
        let mut app = self.app_session(Some(*user));
        for (resource, view) in TYPED_VIEWS {
            let ids: BTreeSet<i64> = app
                .query(
                    &format!("SELECT id FROM {view} WHERE deleted_at IS NULL"),
                    &[],
                )
                .unwrap_or_else(|e| panic!("{when}: read {view}: {e}"))
                .iter()
                .map(|r| r.get(0))
                .collect();
            let want: BTreeSet<i64> = expected
                .iter()
                .filter(|k| k.resource == resource)
                .map(|k| k.id)
                .collect();
            assert_eq!(ids, want, "{when}: {login} through {view}");
        }
        let count: i64 = app
            .query_one(
                "SELECT count(*) FROM procore_records WHERE deleted_at IS NULL",
                &[],
            )
            .expect("count")
            .get(0);
        assert_eq!(
            count as usize,
            expected.len(),
            "{when}: COUNT(*) reveals nothing more"
        );
    }
}

fn keys(client: &mut postgres::Client, sql: &str) -> BTreeSet<RecordKey> {
    client
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| RecordKey {
            resource: r.get(0),
            company_id: r.get(1),
            id: r.get(2),
        })
        .collect()
}

fn rfi(id: i64) -> RecordKey {
    RecordKey {
        resource: "rfis".into(),
        company_id: SHARED_COMPANY,
        id,
    }
}

fn deleted_at_set(client: &mut postgres::Client, id: i64) -> bool {
    client
        .query_one(
            "SELECT deleted_at IS NOT NULL FROM procore_records
             WHERE resource = 'rfis' AND company_id = $1 AND procore_id = $2",
            &[&SHARED_COMPANY, &id],
        )
        .expect("read the record")
        .get(0)
}

#[test]
fn each_user_sees_what_their_procore_account_sees() {
    for policy in POLICIES {
        each_user_sees_what_their_procore_account_sees_under(policy);
    }
}

fn each_user_sees_what_their_procore_account_sees_under(policy: (&'static str, &str)) {
    let app = App::start(policy);
    app.sync(0);
    app.sync(1);
    app.assert_sees_what_procore_shows(0, "after the first syncs");
    app.assert_sees_what_procore_shows(1, "after the first syncs");
    let (u1, u2) = (app.users[0].0, app.users[1].0);
    assert!(
        app.seen_by(Some(u1)).contains(&rfi(PRIVATE_RFI)),
        "the owner sees the private RFI"
    );
    assert!(
        !app.seen_by(Some(u2)).contains(&rfi(PRIVATE_RFI)),
        "the member does not"
    );
    assert!(
        !app.seen_by(Some(u2))
            .iter()
            .any(|k| k.resource == "projects" && k.id == SHARED_PROJECT + 1),
        "the member does not see the project they have no access to"
    );

    // Nobody signed in sees nothing; the superuser (and owner) sees everything.
    assert!(app.seen_by(None).is_empty(), "no signed-in user, no rows");
    let mut admin = app.env.client().expect("connect");
    let all = keys(
        &mut admin,
        "SELECT resource, company_id, procore_id FROM procore_records WHERE deleted_at IS NULL",
    );
    let union: BTreeSet<RecordKey> = app
        .procore_shows(0)
        .union(&app.procore_shows(1))
        .cloned()
        .collect();
    assert_eq!(all, union, "the superuser's view is not filtered");
}

/// A child resource's scope is granted by any one of its parents' listings, so the replies
/// to an RFI that a user has never listed (another user's private RFI, stored after the
/// member's last sync) must stay hidden from them under both policies.
#[test]
fn children_of_a_parent_the_user_never_listed_stay_hidden() {
    for policy in POLICIES {
        let app = App::start_with(policy, json!({"catalog": {}}), &["rfi_replies"]);
        app.sync(1);
        app.sync(0);
        let mut admin = app.env.client().expect("connect");
        let private_replies = keys(
            &mut admin,
            &format!(
                "SELECT resource, company_id, procore_id FROM procore_records
                 WHERE resource = 'rfi_replies' AND parent_id = {PRIVATE_RFI}"
            ),
        );
        assert!(
            !private_replies.is_empty(),
            "the owner's sync stored the private RFI's replies"
        );
        let member_sees = app.seen_by(Some(app.users[1].0));
        assert!(
            member_sees.iter().any(|k| k.resource == "rfi_replies"),
            "the member sees the replies of the RFIs they listed"
        );
        assert!(
            member_sees.is_disjoint(&private_replies),
            "{}: the member sees {} replies to the private RFI they never listed",
            app.policy,
            member_sees.intersection(&private_replies).count()
        );
        // Each sees exactly the replies Procore shows them.
        for i in 0..2 {
            let replies = |keys: BTreeSet<RecordKey>| -> BTreeSet<i64> {
                keys.into_iter()
                    .filter(|k| k.resource == "rfi_replies")
                    .map(|k| k.id)
                    .collect()
            };
            let seen = replies(app.seen_by(Some(app.users[i].0)));
            let shown = replies(app.procore_shows(i));
            assert_eq!(
                seen,
                shown,
                "{}: {} sees exactly the replies Procore shows them ({} seen, {} shown)",
                app.policy,
                app.users[i].1,
                seen.len(),
                shown.len()
            );
        }
    }
}

#[test]
fn access_removed_deletions_and_disconnects_are_honest() {
    for policy in POLICIES {
        access_removed_deletions_and_disconnects_are_honest_under(policy);
    }
}

fn access_removed_deletions_and_disconnects_are_honest_under(policy: (&'static str, &str)) {
    let app = App::start(policy);
    app.sync(0);
    app.sync(1);
    let (u1, u2) = (app.users[0].0, app.users[1].0);
    let mut admin = app.env.client().expect("connect");

    // A record deleted in Procore: one user's full listing alone does not delete it while
    // the other, who can see the project, has not listed since; after both, it is deleted.
    app.env
        .standin
        .mutate(json!({"action": "delete", "resource": "rfis", "id": PUBLIC_RFI}))
        .expect("delete an RFI in Procore");
    app.sync(0);
    assert!(
        !deleted_at_set(&mut admin, PUBLIC_RFI),
        "user-2 has not listed since: still live"
    );
    assert!(
        !app.seen_by(Some(u1)).contains(&rfi(PUBLIC_RFI)),
        "but gone for user-1"
    );
    app.sync(1);
    assert!(
        deleted_at_set(&mut admin, PUBLIC_RFI),
        "nobody gets it any more: deleted"
    );
    app.assert_sees_what_procore_shows(0, "after the deletion");
    app.assert_sees_what_procore_shows(1, "after the deletion");

    // The private RFI user-2 never sees is not deleted by user-2's listings.
    assert!(!deleted_at_set(&mut admin, PRIVATE_RFI));

    // user-2 loses the shared project: gone for them after their next sync, not deleted,
    // still there for user-1.
    app.env
        .standin
        .set_access("user-2", SHARED_COMPANY, Some(&[]))
        .expect("take the project away from user-2");
    app.sync(1);
    app.assert_sees_what_procore_shows(1, "after losing the project");
    assert!(!app
        .seen_by(Some(u2))
        .iter()
        .any(|k| k.id / 100_000 == SHARED_PROJECT));
    let still: i64 = admin
        .query_one(
            "SELECT count(*) FROM procore_records WHERE project_id = $1 AND deleted_at IS NOT NULL
             AND procore_id <> $2",
            &[&SHARED_PROJECT, &PUBLIC_RFI],
        )
        .expect("count")
        .get(0);
    assert_eq!(still, 0, "losing access deletes nothing");
    app.sync(0);
    app.assert_sees_what_procore_shows(0, "after user-2 lost the project");

    // Another user's id in the app setting shows exactly that user's data, never more.
    assert_eq!(app.seen_by(Some(u2)), app.procore_shows(1));
    assert_ne!(app.procore_shows(0), app.procore_shows(1));

    // Ways around the policy fail: the grants, the exceptions, the tokens, the sync
    // functions (security definer, not granted), and the status views.
    let mut app_u1 = app.app_session(Some(u1));
    for sql in [
        "SELECT count(*) FROM procore_sync_hidden",
        "SELECT count(*) FROM procore_sync_cursor",
        "SELECT count(*) FROM procore_sync_credentials",
        "SELECT count(*) FROM procore_sync_user_status",
        "SELECT * FROM procore_sync_user('00000000-0000-0000-0000-000000000001')",
        "SELECT procore_disconnect('00000000-0000-0000-0000-000000000001')",
    ] {
        let err = app_u1.query(sql, &[]).expect_err(sql);
        assert_eq!(
            err.as_db_error().map(|e| e.code().code()),
            Some("42501"),
            "{sql}: {err}"
        );
    }
    // NOTIFY payloads say which user's sync finished, never what it synced.
    app_u1
        .batch_execute("LISTEN procore_sync")
        .expect("LISTEN as the app");
    app.sync(0);
    let notes: Vec<String> = {
        use postgres::fallible_iterator::FallibleIterator;
        app_u1
            .notifications()
            .timeout_iter(std::time::Duration::from_secs(5))
            .iterator()
            .filter_map(|n| n.ok())
            .map(|n| n.payload().to_string())
            .take(1)
            .collect()
    };
    assert!(!notes.is_empty(), "the app hears about the sync");
    for note in &notes {
        assert!(
            !note.contains(&PRIVATE_RFI.to_string())
                && !note.contains("O'Brien")
                && !note.contains("subject"),
            "no record data in NOTIFY: {note}"
        );
    }

    // Disconnecting: user-2 sees nothing; what only they could see is kept, orphaned.
    admin
        .query_one("SELECT procore_disconnect($1)", &[&u2])
        .expect("disconnect user-2");
    assert!(
        app.seen_by(Some(u2)).is_empty(),
        "a disconnected user sees nothing"
    );
    let orphaned: i64 = admin
        .query_one(
            "SELECT count(*) FROM procore_records WHERE company_id = 2001 AND orphaned_at IS NOT NULL",
            &[],
        )
        .expect("count orphans")
        .get(0);
    let own: i64 = admin
        .query_one(
            "SELECT count(*) FROM procore_records WHERE company_id = 2001",
            &[],
        )
        .expect("count")
        .get(0);
    assert!(
        own > 0 && orphaned == own,
        "user-2's own company is orphaned ({orphaned}/{own})"
    );
    app.assert_sees_what_procore_shows(0, "after user-2 disconnected");
    let shared_orphans: i64 = admin
        .query_one(
            "SELECT count(*) FROM procore_records WHERE company_id = $1 AND orphaned_at IS NOT NULL",
            &[&SHARED_COMPANY],
        )
        .expect("count")
        .get(0);
    assert_eq!(shared_orphans, 0, "what user-1 still sees is not orphaned");
}
