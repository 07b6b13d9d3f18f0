//! The procore_sync demo: a "Procore" with 36 users, a throwaway cluster with the extension
//! preloaded, everyone connected through SQL, and the scheduled jobs syncing them all.
//!
//! `demo [--keep]`: with `--keep` the cluster and the stand-in stay up until Enter or Ctrl-C.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use procore_sync_e2e::{
    cluster::tail, query_table, stop_on_signals, stop_requested, stored_record_keys, Env,
    MONITORING_QUERIES,
};
use serde_json::json;

const USERS: usize = 36;
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let mut keep = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--keep" => keep = true,
            "-h" | "--help" => {
                println!("usage: demo [--keep]\n  --keep  leave the cluster and the stand-in running until Enter or Ctrl-C");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("demo: unknown argument {other:?} (usage: demo [--keep])");
                return ExitCode::from(2);
            }
        }
    }
    stop_on_signals();
    // `run` owns the cluster and the stand-in, so both are cleaned up before we exit.
    match run(keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nDEMO FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(keep: bool) -> Result<()> {
    let world = json!({
        "users": USERS,
        "companies_per_user": 2,
        "projects_per_company": 3,
        "records_per_resource": 40,
        "per_page_default": 20,
        "rate_limit_spike": 100,
    });
    println!("== procore_sync demo ==\n");
    println!(
        "Starting the Procore stand-in: {USERS} users, 2 companies each, 3 projects per company,"
    );
    println!("40 records per resource, 20 per page, 100 requests per 10 s per user.");
    let env = Env::new(world, &[("procore_sync.max_workers", "4")])?;
    println!("  stand-in at {}", env.standin.base_url());
    println!(
        "Started PostgreSQL 15 on port {} with shared_preload_libraries = 'procore_sync',",
        env.cluster.port()
    );
    println!("procore_sync.max_workers = 4, and ran CREATE EXTENSION procore_sync.\n");

    let mut client = env.client()?;
    let users = env.connect_users(USERS)?;
    println!(
        "Connected {} users with SELECT procore_connect(user_id, code, redirect_uri)",
        users.len()
    );
    println!("  (each code minted by the stand-in's OAuth server, exchanged by the extension).\n");

    println!("Shortening the two default jobs so a whole cycle fits in a demo; in production they");
    println!("run every 10 minutes and every minute:");
    for (job, schedule, command) in [
        (
            "procore-queue-sync-every-10-minutes",
            "20 seconds",
            "SELECT queue_procore_sync_for_all_users()",
        ),
        (
            "procore-process-queue-every-minute",
            "5 seconds",
            "SELECT process_procore_sync_queue()",
        ),
    ] {
        println!("  SELECT procore_sync_schedule('{job}', '{schedule}', '{command}');");
        client
            .query_one(
                "SELECT procore_sync_schedule($1, $2, $3)",
                &[&job, &schedule, &command],
            )
            .with_context(|| format!("procore_sync_schedule({job})"))?;
    }
    println!("The first queueing run comes up to 20 s after that; from then on the pool of 4");
    println!("workers drains the queue without waiting for the next tick.\n");

    let expected: std::collections::BTreeSet<_> = env.standin.records()?.into_iter().collect();
    println!(
        "Waiting for the scheduled jobs to sync everyone ({} records in the stand-in, timeout {}s):",
        expected.len(),
        SYNC_TIMEOUT.as_secs()
    );
    let start = Instant::now();
    loop {
        if stop_requested() {
            bail!("interrupted");
        }
        let counts = queue_counts(&mut client)?;
        let stored: i64 = client
            .query_one(
                "SELECT count(*) FROM procore_records WHERE deleted_at IS NULL",
                &[],
            )?
            .get(0);
        let users_done: i64 = client
            .query_one(
                "SELECT count(DISTINCT user_id) FROM procore_sync_queue WHERE status = 'completed'",
                &[],
            )?
            .get(0);
        println!("  [{:>4}s] queue: {} | users synced {users_done}/{USERS} | records stored {stored} / {} in the stand-in",
                 start.elapsed().as_secs(), format_counts(&counts), expected.len());
        if users_done as usize >= USERS && stored as usize == expected.len() {
            let stored_keys = stored_record_keys(&mut client)?;
            if stored_keys == expected {
                println!(
                    "\nEvery user is synced: {} of {} stand-in records stored, in {}s.\n",
                    stored_keys.len(),
                    expected.len(),
                    start.elapsed().as_secs()
                );
                break;
            }
        }
        if start.elapsed() >= SYNC_TIMEOUT {
            bail!(
                "{}",
                timeout_report(&env, &mut client, &counts, stored, expected.len())?
            );
        }
        sleep_unless_stopped(PROGRESS_EVERY);
    }

    println!("The monitoring queries of the old setup, run verbatim (SPEC §6):\n");
    for sql in MONITORING_QUERIES {
        println!("{sql}\n");
        println!("{}", query_table(&mut client, sql)?);
    }
    println!("A few synced rows:\n");
    for sql in [
        "SELECT id, company_id, name, project_number, stage, updated_at FROM procore_projects ORDER BY id LIMIT 5",
        "SELECT id, project_id, number, subject, status, due_date FROM procore_rfis ORDER BY id LIMIT 5",
    ] {
        println!("{sql};\n");
        println!("{}", query_table(&mut client, sql)?);
    }
    let stats = env.standin.stats()?;
    println!(
        "The stand-in answered {} API requests ({} rate-limited).",
        stats["api_requests"], stats["rate_limited"]
    );

    if keep {
        println!("\nThe cluster and the stand-in keep running:");
        println!("  {}", env.cluster.psql_command());
        println!(
            "  stand-in: {} (admin: {}/__admin/stats)",
            env.standin.base_url(),
            env.standin.base_url()
        );
        println!("  server log: {}", env.cluster.log_path().display());
        println!("Press Enter or Ctrl-C to stop and clean up.");
        wait_for_enter_or_signal();
        println!("Stopping.");
    }
    Ok(())
}

fn queue_counts(client: &mut postgres::Client) -> Result<BTreeMap<String, i64>> {
    let rows = client.query(
        "SELECT status, count(*) FROM procore_sync_queue GROUP BY status",
        &[],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn format_counts(counts: &BTreeMap<String, i64>) -> String {
    ["pending", "processing", "completed", "failed"]
        .iter()
        .map(|s| format!("{s} {}", counts.get(*s).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn timeout_report(
    env: &Env,
    client: &mut postgres::Client,
    counts: &BTreeMap<String, i64>,
    stored: i64,
    expected: usize,
) -> Result<String> {
    let mut report = format!(
        "not everyone was synced within {}s: queue {}, {stored} of {expected} records stored.\n",
        SYNC_TIMEOUT.as_secs(),
        format_counts(counts)
    );
    let failures = client.query(
        "SELECT user_id::text, attempts, coalesce(error_message, '') FROM procore_sync_queue \
         WHERE status = 'failed' ORDER BY completed_at DESC NULLS LAST LIMIT 5",
        &[],
    )?;
    for row in &failures {
        let (user, attempts, message): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
        report.push_str(&format!(
            "  failed: user {user} after {attempts} attempts: {message}\n"
        ));
    }
    report.push_str(&format!(
        "--- server log (tail) ---\n{}",
        tail(&env.cluster.log(), 30)
    ));
    Ok(report)
}

fn sleep_unless_stopped(duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until && !stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_enter_or_signal() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        // On EOF (no terminal) only a signal ends the wait, so nothing is sent.
        if matches!(std::io::stdin().lock().read_line(&mut line), Ok(n) if n > 0) {
            let _ = tx.send(());
        }
    });
    while !stop_requested() {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(200))
            }
        }
    }
}
