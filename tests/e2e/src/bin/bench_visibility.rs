//! `bench_visibility`: what per-user visibility costs (issue 15), on a throwaway cluster.
//!
//! 1. Storage: many users sharing a few companies, with the grants and exceptions a sync
//!    would leave (each user lists every project of their companies, some users are kept
//!    out of some projects, some RFIs are private to a few users), against the records.
//! 2. The row-level-security predicate: a user's page of 100 RFIs through the typed view,
//!    as the superuser (no policy) and as an app role under the documented policy, with
//!    both plans.
//!
//! The rows are generated in SQL in the shapes the sync writes: syncing 1,000 users through
//! the stand-in would take hours and measure the network instead. Nothing asserts on time.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use procore_sync_e2e::rls::{APP_ROLE_SETUP, POLICY_PER_ROW, POLICY_SETS, SET_SIGNED_IN_USER};
use procore_sync_e2e::{Cluster, ClusterOptions};

#[derive(Parser, Debug)]
#[command(about = "Storage and RLS cost of per-user visibility")]
struct Args {
    /// App users, each a member of every company.
    #[arg(long, default_value_t = 1000)]
    users: i64,
    #[arg(long, default_value_t = 10)]
    companies: i64,
    #[arg(long, default_value_t = 10)]
    projects_per_company: i64,
    /// Records of each of the 6 project tools per project (834: about 500,000 records).
    #[arg(long, default_value_t = 834)]
    records_per_tool: i64,
    /// Size of a record's JSON; Procore's RFIs and submittals run to several KB.
    #[arg(long, default_value_t = 1000)]
    json_bytes: i64,
    /// Percent of users kept out of 2 projects of each company.
    #[arg(long, default_value_t = 20)]
    restricted_percent: i64,
    /// Private RFIs per thousand, each visible to 5 users.
    #[arg(long, default_value_t = 5)]
    private_per_mille: i64,
    /// Timed runs of each page query.
    #[arg(long, default_value_t = 200)]
    runs: usize,
}

const PROJECT_TOOLS: &str =
    "ARRAY['project_users', 'rfis', 'submittals', 'punch_items', 'observations', 'change_events']";

fn main() -> Result<()> {
    let args = Args::parse();
    let mut options = ClusterOptions::without_preload();
    options.extra_conf.push("shared_buffers = '1GB'".into());
    options
        .extra_conf
        .push("max_parallel_workers_per_gather = 0".into());
    let cluster = Cluster::start(options)?;
    let mut db = cluster.client()?;
    db.batch_execute("CREATE EXTENSION procore_sync")?;

    let started = Instant::now();
    generate(&mut db, &args)?;
    println!("generated in {:.0} s", started.elapsed().as_secs_f64());
    report_storage(&mut db, &args)?;
    report_rls(&cluster, &mut db, &args)?;
    Ok(())
}

fn generate(db: &mut postgres::Client, a: &Args) -> Result<()> {
    let run = |db: &mut postgres::Client,
               what: &str,
               sql: &str,
               params: &[&(dyn postgres::types::ToSql + Sync)]| {
        db.execute(sql, params).with_context(|| what.to_string())
    };
    run(db, "companies and projects",
        "INSERT INTO procore_records (resource, company_id, procore_id, project_id, name, updated_at, data)
         SELECT 'companies', c, c, NULL::bigint, 'Company ' || c, now(), jsonb_build_object('id', c, 'name', 'Company ' || c)
         FROM generate_series(1, $1::bigint) c
         UNION ALL
         SELECT 'projects', c, c * 1000 + p, NULL::bigint, 'Project ' || p, now(),
                jsonb_build_object('id', c * 1000 + p, 'name', 'Project ' || p)
         FROM generate_series(1, $1::bigint) c, generate_series(1, $2::bigint) p",
        &[&a.companies, &a.projects_per_company])?;
    run(db, "project tools",
        &format!("INSERT INTO procore_records (resource, company_id, procore_id, project_id, name, status, updated_at, data)
         SELECT t, c, (c * 1000 + p) * 100000 + i, c * 1000 + p, 'Item ' || i, 'open',
                now() - make_interval(mins => i::int),
                jsonb_build_object('id', (c * 1000 + p) * 100000 + i, 'number', i, 'subject', 'Item ' || i,
                                   'status', 'open', 'body', repeat(md5(i::text), ($4::bigint / 32)::int))
         FROM generate_series(1, $1::bigint) c, generate_series(1, $2::bigint) p,
              unnest({PROJECT_TOOLS}) t, generate_series(1, $3::bigint) i"),
        &[&a.companies, &a.projects_per_company, &a.records_per_tool, &a.json_bytes])?;
    // Grants: every user lists every company (companies, projects, vendors) and every
    // project they are not kept out of (each tool); a restricted user misses projects 1-2.
    // Rows land in the order syncs write them: 4 workers, so 4 users' rows interleave.
    run(
        db,
        "grants",
        &format!(
            "WITH users AS (
            SELECT u, md5(u::text)::uuid AS id, u % 100 < $4::bigint AS restricted
            FROM generate_series(1, $1::bigint) u)
         INSERT INTO procore_sync_cursor (user_id, resource, company_id, project_id,
                                          last_synced_at, last_full_sync_at, listed_at)
         SELECT id, r, c, p, now(), now(), now() FROM (
             SELECT u, id, 'companies' AS r, 0::bigint AS c, 0::bigint AS p FROM users
             UNION ALL
             SELECT u, id, r, c, 0 FROM users, generate_series(1, $2::bigint) c,
                    unnest(ARRAY['companies', 'projects', 'vendors']) r
             UNION ALL
             SELECT u, id, t, c, c * 1000 + p
             FROM users, generate_series(1, $2::bigint) c, generate_series(1, $3::bigint) p,
                  unnest({PROJECT_TOOLS}) t
             WHERE NOT (restricted AND p <= 2)) g
         ORDER BY (u - 1) / 4, random()"
        ),
        &[
            &a.users,
            &a.companies,
            &a.projects_per_company,
            &a.restricted_percent,
        ],
    )?;
    // Exceptions: the project records a restricted user's listing leaves out, and private
    // RFIs hidden from everyone but 5 users.
    run(
        db,
        "exceptions",
        "WITH users AS (
            SELECT u, md5(u::text)::uuid AS id, u % 100 < $3::bigint AS restricted
            FROM generate_series(1, $1::bigint) u)
         INSERT INTO procore_sync_hidden (resource, company_id, procore_id, user_ids)
         SELECT 'projects', c, c * 1000 + p, array_agg(id ORDER BY u)
         FROM users, generate_series(1, $2::bigint) c, generate_series(1, 2) p
         WHERE restricted
         GROUP BY c, p
         UNION ALL
         SELECT 'rfis', r.company_id, r.procore_id, array_agg(users.id ORDER BY users.u)
         FROM procore_records r, users
         WHERE r.resource = 'rfis' AND (r.procore_id % 1000) < $4::bigint
           AND NOT (users.restricted AND r.project_id % 1000 <= 2)
           AND (users.u + r.procore_id) % ($1::bigint / 5) <> 0
         GROUP BY r.company_id, r.procore_id",
        &[
            &a.users,
            &a.companies,
            &a.restricted_percent,
            &a.private_per_mille,
        ],
    )?;
    db.batch_execute("VACUUM ANALYZE procore_records, procore_sync_cursor, procore_sync_hidden")?;
    Ok(())
}

fn mb(bytes: i64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn report_storage(db: &mut postgres::Client, a: &Args) -> Result<()> {
    let size = |db: &mut postgres::Client, sql: &str| -> Result<i64> {
        Ok(db
            .query_one(sql, &[])
            .with_context(|| sql.to_string())?
            .get(0))
    };
    let records = size(db, "SELECT pg_total_relation_size('procore_records')")?;
    let record_count = size(db, "SELECT count(*) FROM procore_records")?;
    let cursor = size(db, "SELECT pg_total_relation_size('procore_sync_cursor')")?;
    let cursor_rows = size(db, "SELECT count(*) FROM procore_sync_cursor")?;
    let scope_index = size(db, "SELECT pg_relation_size('procore_sync_cursor_scope')")?;
    let first_synced_index = size(
        db,
        "SELECT pg_relation_size('procore_records_first_synced_at')",
    )?;
    let hidden = size(db, "SELECT pg_total_relation_size('procore_sync_hidden')")?;
    let hidden_rows = size(
        db,
        "SELECT coalesce(sum(cardinality(user_ids)), 0)::bigint FROM procore_sync_hidden",
    )?;
    // The two columns 0.2.0 adds to every record, and listed_at on every cursor row.
    let record_columns = size(db, "SELECT sum(pg_column_size(first_synced_at) + coalesce(pg_column_size(orphaned_at), 0))::bigint FROM procore_records")?;
    let listed_at = size(
        db,
        "SELECT sum(pg_column_size(listed_at))::bigint FROM procore_sync_cursor",
    )?;
    let added = hidden + scope_index + first_synced_index + record_columns + listed_at;
    // "The records themselves": the table as 0.1.0 had it, without what visibility added.
    let records = records - first_synced_index - record_columns;
    println!(
        "\nstorage: {} users x {} companies x {} projects; {} records of ~{} B JSON",
        a.users, a.companies, a.projects_per_company, record_count, a.json_bytes
    );
    println!("| what | rows | MB | of the records |");
    println!("| --- | --: | --: | --: |");
    let line = |what: &str, rows: Option<i64>, bytes: i64| {
        println!(
            "| {what} | {} | {:.1} | {:.1}% |",
            rows.map(|r| r.to_string()).unwrap_or_default(),
            mb(bytes),
            100.0 * bytes as f64 / records as f64
        );
    };
    line(
        "procore_records without visibility's columns and index (heap, TOAST, indexes)",
        Some(record_count),
        records,
    );
    line("grants: procore_sync_cursor, whole (per user x resource x scope; its rows existed in 0.1.0 as sync cursors)", Some(cursor_rows), cursor);
    line(
        "exceptions: procore_sync_hidden (rows: users x records hidden from them)",
        Some(hidden_rows),
        hidden,
    );
    line(
        "added by visibility: exceptions + 2 indexes + listed_at + 2 record columns",
        None,
        added,
    );
    line(
        "all per-user state: cursor + exceptions + record columns",
        None,
        cursor + hidden + record_columns,
    );
    Ok(())
}

fn report_rls(cluster: &Cluster, db: &mut postgres::Client, a: &Args) -> Result<()> {
    // Two app roles, one under each documented policy, so that the three queries can take
    // turns in one loop and meet the same machine (this VM's timings drift between runs).
    db.batch_execute(APP_ROLE_SETUP)?;
    db.batch_execute(POLICY_PER_ROW)?;
    db.batch_execute(
        // Not a member of app_user: policies TO app_user would apply to it as well.
        "CREATE ROLE app_sets LOGIN;
         GRANT USAGE ON SCHEMA auth TO app_sets;
         GRANT SELECT ON procore_records, procore_rfis TO app_sets;
         GRANT EXECUTE ON FUNCTION procore_sync_visible_scopes(uuid),
             procore_sync_invisible_records(uuid) TO app_sets",
    )?;
    db.batch_execute(
        &POLICY_SETS
            .replace("procore_records_visible", "procore_records_visible_sets")
            .replace("TO app_user", "TO app_sets"),
    )?;
    // User 1 is unrestricted; project 3 of company 1 has private RFIs hidden from them.
    let user: String = db.query_one("SELECT md5('1')::uuid::text", &[])?.get(0);
    let page = "SELECT id, number, subject, status, updated_at FROM procore_rfis
                WHERE company_id = 1 AND project_id = 1003 AND deleted_at IS NULL
                ORDER BY updated_at DESC LIMIT 100";
    let mut per_row = cluster.client_for("postgres", "app_user")?;
    let mut sets = cluster.client_for("postgres", "app_sets")?;
    for session in [&mut per_row, &mut sets] {
        session.execute(SET_SIGNED_IN_USER, &[&user])?;
    }
    let plan = |db: &mut postgres::Client| -> Result<String> {
        Ok(db
            .query(
                &format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {page}"),
                &[],
            )?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n"))
    };
    let runs = a.runs.max(1);
    let mut times: [Vec<Duration>; 3] = Default::default();
    let mut rows = [0usize; 3];
    for round in 0..runs + 20 {
        for (i, session) in [&mut *db, &mut per_row, &mut sets].into_iter().enumerate() {
            let t = Instant::now();
            rows[i] = session.query(page, &[])?.len();
            // The first 20 rounds warm the caches and plans.
            if round >= 20 {
                times[i].push(t.elapsed());
            }
        }
    }
    let [plain, rls, sets_median] = times.map(|mut t| {
        t.sort();
        t[t.len() / 2]
    });
    let [plain_rows, rls_rows, sets_rows] = rows;
    let plain_plan = plan(db)?;
    let rls_plan = plan(&mut per_row)?;
    let sets_plan = plan(&mut sets)?;
    let sets = sets_median;
    let visible_one = {
        let t = Instant::now();
        let n = 1000;
        for _ in 0..n {
            per_row.query_one(
                "SELECT procore_sync_visible(auth.uid(), 'rfis', 1, 100300001)",
                &[],
            )?;
        }
        t.elapsed() / n
    };
    println!(
        "\nrow-level security: a user's page of 100 RFIs through procore_rfis (median of {runs}, the three queries taking turns)"
    );
    println!("| query | rows | median | vs no RLS |");
    println!("| --- | --: | --: | --: |");
    println!(
        "| superuser, no policy | {plain_rows} | {:.2} ms | 1.00x |",
        plain.as_secs_f64() * 1e3
    );
    println!("| app_user, policy procore_sync_visible(auth.uid(), ...) | {rls_rows} | {:.2} ms | {:.2}x |",
        rls.as_secs_f64() * 1e3, rls.as_secs_f64() / plain.as_secs_f64());
    println!(
        "| one SELECT procore_sync_visible(...) round trip | 1 | {:.3} ms | |",
        visible_one.as_secs_f64() * 1e3
    );
    println!(
        "| app_user, policy over procore_sync_visible_scopes / procore_sync_invisible_records | {sets_rows} | {:.2} ms | {:.2}x |",
        sets.as_secs_f64() * 1e3,
        sets.as_secs_f64() / plain.as_secs_f64()
    );
    println!("\nplan without RLS:\n{plain_plan}\n\nplan with the per-row policy:\n{rls_plan}\n\nplan with the set policy:\n{sets_plan}");
    Ok(())
}
