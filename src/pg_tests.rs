//! In-database tests (`#[pg_test]`): the SQL surface, run inside a transaction that is
//! rolled back. Behaviour that needs the background worker is tested end to end in
//! `tests/e2e`.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).expect("query runs").unwrap_or(0)
    }

    #[pg_test]
    fn default_jobs_exist_with_the_old_names_and_schedules() {
        let jobs = Spi::get_one::<String>(
            "SELECT string_agg(jobname || ' ' || schedule || ' ' || command, '; ' ORDER BY jobname)
             FROM procore_sync_job WHERE jobname LIKE 'procore%'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            jobs,
            "procore-process-queue-every-minute * * * * * SELECT process_procore_sync_queue(); \
             procore-queue-sync-every-10-minutes */10 * * * * SELECT queue_procore_sync_for_all_users()"
        );
    }

    #[pg_test]
    fn queuing_skips_revoked_users_and_never_duplicates_an_open_item() {
        Spi::run(
            "SELECT procore_set_tokens('00000000-0000-0000-0000-000000000001', 'a1', 'r1', 3600);
             SELECT procore_set_tokens('00000000-0000-0000-0000-000000000002', 'a2', 'r2', 3600);
             SELECT procore_set_tokens('00000000-0000-0000-0000-000000000003', 'a3', 'r3', 3600);
             UPDATE procore_sync_credentials SET needs_reconnect = true
             WHERE user_id = '00000000-0000-0000-0000-000000000003';",
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<i32>("SELECT queue_procore_sync_for_all_users()").unwrap(),
            Some(2)
        );
        assert_eq!(
            Spi::get_one::<i32>("SELECT queue_procore_sync_for_all_users()").unwrap(),
            Some(0)
        );
        assert_eq!(
            count("SELECT count(*) FROM procore_sync_queue WHERE status = 'pending'"),
            2
        );
    }

    #[pg_test]
    fn processing_takes_at_most_batch_size_and_never_an_item_already_taken() {
        Spi::run(
            "SET procore_sync.batch_size = 3;
             INSERT INTO procore_sync_credentials (user_id, access_token, refresh_token, expires_at)
             SELECT gen_random_uuid(), 'a', 'r', now() + interval '1 hour' FROM generate_series(1, 5);",
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<i32>("SELECT queue_procore_sync_for_all_users()").unwrap(),
            Some(5)
        );
        assert_eq!(
            Spi::get_one::<i32>("SELECT process_procore_sync_queue()").unwrap(),
            Some(3)
        );
        assert_eq!(
            Spi::get_one::<i32>("SELECT process_procore_sync_queue()").unwrap(),
            Some(2)
        );
        assert_eq!(
            Spi::get_one::<i32>("SELECT process_procore_sync_queue()").unwrap(),
            Some(0)
        );
        assert_eq!(
            count("SELECT count(*) FROM procore_sync_queue WHERE status = 'processing'"),
            5
        );
    }

    #[pg_test]
    fn the_old_runbook_sql_runs_verbatim() {
        Spi::run(
            "SELECT status, count(*) AS count, max(created_at) AS last_created
             FROM procore_sync_queue GROUP BY status;
             SELECT user_id, status, created_at, completed_at, error_message
             FROM procore_sync_queue ORDER BY created_at DESC LIMIT 20;
             SELECT jobname, schedule, active FROM procore_sync_job WHERE jobname LIKE 'procore%';
             SELECT jobid, jobname, runid, status, return_message, start_time, end_time
             FROM procore_sync_job_run_details WHERE jobname LIKE 'procore%'
             ORDER BY start_time DESC LIMIT 20;
             UPDATE procore_sync_queue SET status = 'pending', started_at = NULL
             WHERE status = 'processing' AND started_at < now() - interval '10 minutes';
             DELETE FROM procore_sync_queue
             WHERE status IN ('completed', 'failed') AND created_at < now() - interval '7 days';",
        )
        .unwrap();
    }

    #[pg_test(error = "no Procore credentials for user 00000000-0000-0000-0000-0000000000aa")]
    fn manual_sync_of_an_unknown_user_is_a_clear_error() {
        Spi::run("SELECT * FROM procore_sync_user('00000000-0000-0000-0000-0000000000aa')")
            .unwrap();
    }

    #[pg_test]
    fn schedules_are_validated_and_jobs_upserted_by_name() {
        let id =
            Spi::get_one::<i64>("SELECT procore_sync_schedule('nightly', '0 3 * * *', 'SELECT 1')")
                .unwrap()
                .unwrap();
        let again = Spi::get_one::<i64>(
            "SELECT procore_sync_schedule('nightly', '30 seconds', 'SELECT 2')",
        )
        .unwrap()
        .unwrap();
        assert_eq!(id, again);
        assert_eq!(
            Spi::get_one::<String>(
                "SELECT schedule || '|' || command FROM procore_sync_job WHERE jobname = 'nightly'"
            )
            .unwrap(),
            Some("30 seconds|SELECT 2".into())
        );
        Spi::run(&format!(
            "SELECT procore_sync_alter_job({id}, active => false)"
        ))
        .unwrap();
        assert_eq!(
            count("SELECT count(*) FROM procore_sync_job WHERE jobname = 'nightly' AND NOT active"),
            1
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT procore_sync_unschedule('nightly')").unwrap(),
            Some(true)
        );
        assert_eq!(
            count("SELECT count(*) FROM procore_sync_job WHERE jobname = 'nightly'"),
            0
        );
    }

    #[pg_test(
        error = "invalid schedule \"61 * * * *\": minute field \"61\" at position 1 is out of range 0-59"
    )]
    fn a_bad_schedule_is_rejected_with_the_field_and_position() {
        Spi::run("SELECT procore_sync_schedule('bad', '61 * * * *', 'SELECT 1')").unwrap();
    }

    #[pg_test]
    fn upserting_the_same_page_twice_changes_nothing() {
        use crate::records::page_rows;
        use serde_json::json;
        let page = || {
            page_rows(vec![
                json!({"id": 1, "subject": "Door", "status": "open", "updated_at": "2026-01-01T00:00:00Z"}),
                json!({"id": 2, "subject": "O'Brien \"quoted\"; DROP TABLE x; -- ünïcødé", "status": {"name": "Closed"}}),
            ])
            .unwrap()
        };
        assert_eq!(
            crate::data::store::upsert_page("rfis", Some(10), Some(20), None, page()).unwrap(),
            2
        );
        assert_eq!(
            crate::data::store::upsert_page("rfis", Some(10), Some(20), None, page()).unwrap(),
            0
        );
        assert_eq!(
            Spi::get_one::<String>("SELECT subject FROM procore_rfis WHERE id = 2").unwrap(),
            Some("O'Brien \"quoted\"; DROP TABLE x; -- ünïcødé".into())
        );
        assert_eq!(
            Spi::get_one::<String>("SELECT status FROM procore_rfis WHERE id = 2").unwrap(),
            Some("Closed".into())
        );
    }

    #[pg_test]
    fn tokens_and_scheduling_are_not_open_to_other_roles() {
        Spi::run("CREATE ROLE procore_sync_test_app").unwrap();
        let allowed = |check: &str| Spi::get_one::<bool>(check).unwrap().unwrap();
        assert!(!allowed("SELECT has_table_privilege('procore_sync_test_app', 'procore_sync_credentials', 'SELECT')"));
        assert!(!allowed(
            "SELECT has_function_privilege('procore_sync_test_app', 'procore_sync_schedule(text, text, text)', 'EXECUTE')"
        ));
        assert!(!allowed(
            "SELECT has_function_privilege('procore_sync_test_app', 'procore_connect(uuid, text, text)', 'EXECUTE')"
        ));
    }

    const USER_U: &str = "00000000-0000-0000-0000-0000000000d1";
    const USER_V: &str = "00000000-0000-0000-0000-0000000000d2";

    fn full_listing(user: &str, project: i64) -> crate::data::visibility::Listing<'_> {
        crate::data::visibility::Listing {
            user_id: user,
            resource: "rfis",
            company_id: 7,
            project_id: Some(project),
            window_from: None,
            parent_id: None,
            dates: None,
        }
    }

    fn csv(sql: &str) -> String {
        Spi::get_one::<String>(sql).unwrap().unwrap_or_default()
    }

    /// Both ways of holding a listing's ids (in memory, spilled to a temporary table past
    /// 10,000) mark exactly the records the listing did not return, and nothing elsewhere,
    /// when nobody else can see the scope.
    #[pg_test]
    fn deletion_pass_marks_exactly_the_unseen_records_however_large_the_listing() {
        use crate::data::visibility::{ListingEnd, SeenIds};
        let has_seen_table = || {
            Spi::get_one::<bool>("SELECT to_regclass('pg_temp.procore_sync_seen') IS NOT NULL")
                .unwrap()
                .unwrap()
        };
        for (n, spills) in [(500i64, false), (25_000, true)] {
            Spi::run("DELETE FROM procore_records").unwrap();
            for project in [70i64, 71] {
                Spi::run_with_args(
                    "INSERT INTO procore_records (resource, company_id, procore_id, project_id, data)
                     SELECT 'rfis', 7, $2 * 1000000 + g, $2, '{}' FROM generate_series(1, $1) g",
                    &[n.into(), project.into()],
                )
                .unwrap();
            }
            let gone = [1, n / 2, n].map(|i| 70 * 1000000 + i);
            let listed: Vec<i64> = (1..=n)
                .map(|i| 70 * 1000000 + i)
                .filter(|id| !gone.contains(id))
                .collect();
            let mut seen = SeenIds::new();
            for page in listed.chunks(100) {
                seen.add(page).unwrap();
            }
            seen.add(&listed[..100]).unwrap(); // a page read twice after a retry
            assert_eq!(has_seen_table(), spills, "{n} ids spill: {spills}");
            assert_eq!(
                seen.finish(&full_listing(USER_U, 70)).unwrap(),
                ListingEnd {
                    deleted: 3,
                    hidden: 0
                }
            );
            let marked = csv(
                "SELECT string_agg(procore_id::text, ',' ORDER BY procore_id)
                 FROM procore_records WHERE deleted_at IS NOT NULL",
            );
            assert_eq!(marked, gone.map(|id| id.to_string()).join(","));
            if spills {
                assert_eq!(
                    count("SELECT count(*) FROM pg_temp.procore_sync_seen"),
                    0,
                    "the spilled ids are dropped after the pass"
                );
            }
        }
    }

    /// A record one user's full listing leaves out stays live while another user who can
    /// see the scope still sees it: it is only hidden from the first. Once the second
    /// user's listing leaves it out too, it is deleted, and the exceptions go with it.
    #[pg_test]
    fn a_record_is_deleted_only_when_nobody_who_can_see_its_scope_still_sees_it() {
        use crate::data::visibility::{ListingEnd, SeenIds};
        Spi::run(
            "INSERT INTO procore_records (resource, company_id, procore_id, project_id, data, first_synced_at)
             SELECT 'rfis', 7, g, 70, '{}', now() - interval '1 hour' FROM generate_series(1, 5) g;
             INSERT INTO procore_sync_cursor (user_id, resource, company_id, project_id, listed_at)
             VALUES ('00000000-0000-0000-0000-0000000000d1', 'rfis', 7, 70, now()),
                    ('00000000-0000-0000-0000-0000000000d2', 'rfis', 7, 70, now())",
        )
        .unwrap();
        let visible = |user: &str, id: i64| {
            Spi::get_one_with_args::<bool>(
                "SELECT procore_sync_visible($1::uuid, 'rfis', 7, $2)",
                &[user.into(), id.into()],
            )
            .unwrap()
            .unwrap()
        };
        assert!(visible(USER_U, 5) && visible(USER_V, 5));

        // U no longer gets record 5 (V still may): hidden from U, live for V.
        let mut seen = SeenIds::new();
        seen.add(&[1, 2, 3, 4]).unwrap();
        let end = seen.finish(&full_listing(USER_U, 70)).unwrap();
        assert_eq!(
            end,
            ListingEnd {
                deleted: 0,
                hidden: 1
            }
        );
        assert!(!visible(USER_U, 5) && visible(USER_V, 5));
        assert_eq!(
            count("SELECT count(*) FROM procore_records WHERE deleted_at IS NOT NULL"),
            0
        );

        // V's listing leaves it out too: gone for everyone, and nobody keeps an exception.
        let mut seen = SeenIds::new();
        seen.add(&[1, 2, 3, 4]).unwrap();
        let end = seen.finish(&full_listing(USER_V, 70)).unwrap();
        assert_eq!(
            end,
            ListingEnd {
                deleted: 1,
                hidden: 0
            }
        );
        assert_eq!(
            csv("SELECT string_agg(procore_id::text, ',') FROM procore_records WHERE deleted_at IS NOT NULL"),
            "5"
        );
        assert_eq!(count("SELECT count(*) FROM procore_sync_hidden"), 0);

        // A record U's listing returns again is shown again.
        Spi::run(
            "INSERT INTO procore_sync_hidden VALUES ('rfis', 7, 4, '{00000000-0000-0000-0000-0000000000d1}')",
        )
        .unwrap();
        assert!(!visible(USER_U, 4));
        let mut seen = SeenIds::new();
        seen.add(&[1, 2, 3, 4]).unwrap();
        seen.finish(&full_listing(USER_U, 70)).unwrap();
        assert!(visible(USER_U, 4));
        assert_eq!(
            count("SELECT count(*) FROM procore_sync_hidden"),
            0,
            "an exception nobody holds any more goes"
        );
        // Nobody without a grant sees anything; a record stored after a user's last listing
        // waits for their next one.
        assert!(!visible("00000000-0000-0000-0000-0000000000d3", 1));
        Spi::run("UPDATE procore_records SET first_synced_at = now() + interval '1 minute' WHERE procore_id = 1")
            .unwrap();
        assert!(!visible(USER_U, 1));
    }

    /// An incremental listing hides what it could have returned but did not: a record
    /// another user's sync stored since this user's last listing (a private item) stays
    /// hidden, while one it returns becomes visible once its listing ends.
    #[pg_test]
    fn an_incremental_listing_hides_new_records_it_did_not_return() {
        use crate::data::visibility::{Listing, ListingEnd, SeenIds};
        Spi::run(
            "INSERT INTO procore_records (resource, company_id, procore_id, project_id, data, updated_at, first_synced_at)
             SELECT 'rfis', 7, g, 70, '{}', now() - interval '2 hours', now() - interval '1 hour'
             FROM generate_series(1, 3) g;
             INSERT INTO procore_sync_cursor (user_id, resource, company_id, project_id, listed_at)
             VALUES ('00000000-0000-0000-0000-0000000000d1', 'rfis', 7, 70, now() - interval '30 minutes');
             -- stored by another user's sync since: 4 private (old), 5 public (new)
             INSERT INTO procore_records (resource, company_id, procore_id, project_id, data, updated_at, first_synced_at)
             VALUES ('rfis', 7, 4, 70, '{}', now() - interval '2 hours', clock_timestamp()),
                    ('rfis', 7, 5, 70, '{}', clock_timestamp(), clock_timestamp())",
        )
        .unwrap();
        let visible = |id: i64| {
            Spi::get_one_with_args::<bool>(
                "SELECT procore_sync_visible($1::uuid, 'rfis', 7, $2)",
                &[USER_U.into(), id.into()],
            )
            .unwrap()
            .unwrap()
        };
        assert!(
            visible(1) && !visible(4) && !visible(5),
            "new records wait for U's listing"
        );
        let mut seen = SeenIds::new();
        seen.add(&[5]).unwrap();
        let end = seen
            .finish(&Listing {
                window_from: Some(chrono::Utc::now() - chrono::TimeDelta::minutes(40)),
                ..full_listing(USER_U, 70)
            })
            .unwrap();
        assert_eq!(
            end,
            ListingEnd {
                deleted: 0,
                hidden: 1
            },
            "only record 4 is hidden"
        );
        crate::data::store::save_cursor(
            USER_U,
            "rfis",
            (7, 70, 0),
            chrono::Utc::now(),
            false,
            None,
        )
        .unwrap();
        assert!(visible(1) && !visible(4) && visible(5));
    }
}
