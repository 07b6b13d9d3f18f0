//! The scheduler end to end (SPEC §3 "Scheduling", §7): pg_cron's interface and behaviours,
//! observed only through SQL, the server log and restarts of a throwaway cluster.
//!
//! Timing assertions are deliberately loose (the machine is small and shared): they tell
//! "on schedule" from "twice as often", "stuck" or "blocked by another job", never measure
//! milliseconds. Every wait polls with a generous timeout.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use postgres::error::SqlState;
use procore_sync_e2e::{Cluster, ClusterOptions, StopMode};

mod common;
use common::{db_error, wait_for};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A cluster with the scheduler preloaded and the extension created.
fn cluster_with(settings: &[(&str, &str)]) -> Cluster {
    let mut options = ClusterOptions::default().setting("procore_sync.database_name", "postgres");
    for (name, value) in settings {
        options = options.setting(name, value);
    }
    let cluster = Cluster::start(options).expect("start a cluster with procore_sync preloaded");
    cluster
        .client()
        .expect("connect")
        .batch_execute("CREATE EXTENSION procore_sync")
        .unwrap_or_else(|e| panic!("CREATE EXTENSION: {e}\n{}", cluster.log_tail(40)));
    cluster
}

/// Like `cluster_with`, without the two default jobs (they would only add noise).
fn quiet_cluster(settings: &[(&str, &str)]) -> Cluster {
    let cluster = cluster_with(settings);
    cluster
        .client()
        .expect("connect")
        .batch_execute(
            "SELECT procore_sync_unschedule(jobname) FROM procore_sync_job WHERE jobname LIKE 'procore-%'",
        )
        .expect("unschedule the default jobs");
    cluster
}

fn schedule(client: &mut postgres::Client, name: &str, schedule: &str, command: &str) -> i64 {
    client
        .query_one(
            "SELECT procore_sync_schedule($1, $2, $3)",
            &[&name, &schedule, &command],
        )
        .unwrap_or_else(|e| panic!("procore_sync_schedule({name}, {schedule}): {e}"))
        .get(0)
}

fn db_now(client: &mut postgres::Client) -> DateTime<Utc> {
    client
        .query_one("SELECT clock_timestamp()", &[])
        .expect("clock_timestamp()")
        .get(0)
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

#[derive(Debug, Clone)]
#[allow(dead_code)]
struct Run {
    runid: i64,
    jobid: Option<i64>,
    job_pid: Option<i32>,
    database: Option<String>,
    username: Option<String>,
    command: Option<String>,
    status: Option<String>,
    return_message: Option<String>,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    jobname: Option<String>,
}

impl Run {
    fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("")
    }
    fn message(&self) -> &str {
        self.return_message.as_deref().unwrap_or("")
    }
    fn open(&self) -> bool {
        matches!(self.status(), "starting" | "running")
    }
}

/// The run history of one job name, oldest first, as the connected role sees it.
fn runs(client: &mut postgres::Client, jobname: &str) -> Vec<Run> {
    client
        .query(
            "SELECT runid, jobid, job_pid, database, username, command, status, return_message,
                    start_time, end_time, jobname
             FROM procore_sync_job_run_details WHERE jobname = $1 ORDER BY runid",
            &[&jobname],
        )
        .expect("read procore_sync_job_run_details")
        .iter()
        .map(|r| Run {
            runid: r.get(0),
            jobid: r.get(1),
            job_pid: r.get(2),
            database: r.get(3),
            username: r.get(4),
            command: r.get(5),
            status: r.get(6),
            return_message: r.get(7),
            start_time: r.get(8),
            end_time: r.get(9),
            jobname: r.get(10),
        })
        .collect()
}

fn finished(client: &mut postgres::Client, jobname: &str) -> Vec<Run> {
    runs(client, jobname)
        .into_iter()
        .filter(|r| !r.open())
        .collect()
}

fn timestamps(client: &mut postgres::Client, sql: &str) -> Vec<DateTime<Utc>> {
    client
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn gaps(times: &[DateTime<Utc>]) -> Vec<f64> {
    times.windows(2).map(|w| secs(w[1] - w[0])).collect()
}

// ---------------------------------------------------------------------------------------
// 1. An 'N seconds' job runs on time and leaves complete history rows.
// ---------------------------------------------------------------------------------------

#[test]
fn interval_job_runs_on_time_and_records_history() {
    let cluster = quiet_cluster(&[]);
    let mut c = cluster.client().expect("connect");
    c.batch_execute("CREATE TABLE ticks (at timestamptz NOT NULL)")
        .unwrap();
    let command = "INSERT INTO ticks VALUES (clock_timestamp())";
    let jobid = schedule(&mut c, "tick", "2 seconds", command);

    wait_for(
        &cluster,
        Duration::from_secs(60),
        "the first run of 'tick'",
        || {
            Ok(c.query_one("SELECT count(*) FROM ticks", &[])?
                .get::<_, i64>(0)
                >= 1)
        },
    );
    let first: DateTime<Utc> = c
        .query_one("SELECT min(at) FROM ticks", &[])
        .unwrap()
        .get(0);
    let window_end = first + chrono::TimeDelta::seconds(12);
    // Leave room for a run that started inside the window to commit.
    wait_for(&cluster, Duration::from_secs(120), "15 s of runs", || {
        Ok(db_now(&mut c) >= first + chrono::TimeDelta::seconds(15))
    });

    let ticks = timestamps(
        &mut c,
        &format!(
            "SELECT at FROM ticks WHERE at <= '{}'::timestamptz ORDER BY at",
            window_end.to_rfc3339()
        ),
    );
    let g = gaps(&ticks);
    let mean = g.iter().sum::<f64>() / g.len().max(1) as f64;
    let summary = format!("{} runs in 12 s, gaps {g:.2?}", ticks.len());
    // On time: 7 (0, 2, ..., 12 s). Every 1 s would give 13, every 4 s 4.
    assert!(
        (5..=8).contains(&ticks.len()),
        "a '2 seconds' job runs about every 2 s: {summary}"
    );
    assert!((1.6..=3.2).contains(&mean), "mean gap about 2 s: {summary}");
    assert!(
        g.iter().all(|&x| x >= 1.0),
        "never two runs within 1 s: {summary}"
    );
    assert!(g.iter().all(|&x| x <= 6.0), "no gap wildly off: {summary}");

    // History: one row per run, complete.
    let history = runs(&mut c, "tick");
    let done: Vec<&Run> = history.iter().filter(|r| !r.open()).collect();
    assert!(
        done.len() >= ticks.len(),
        "every run has a history row: {} rows for {} runs: {history:#?}",
        done.len(),
        ticks.len()
    );
    for r in &done {
        assert_eq!(r.status(), "succeeded", "{r:#?}");
        assert!(!r.message().is_empty(), "return_message set: {r:#?}");
        assert_eq!(r.jobid, Some(jobid), "{r:#?}");
        assert_eq!(r.jobname.as_deref(), Some("tick"), "{r:#?}");
        assert_eq!(r.command.as_deref(), Some(command), "{r:#?}");
        assert_eq!(r.username.as_deref(), Some("postgres"), "{r:#?}");
        assert_eq!(r.database.as_deref(), Some("postgres"), "{r:#?}");
        assert!(r.job_pid.is_some_and(|p| p > 0), "job_pid set: {r:#?}");
        let (start, end) = (
            r.start_time.expect("start_time"),
            r.end_time.expect("end_time"),
        );
        assert!(end >= start, "end after start: {r:#?}");
        assert!(secs(end - start) < 10.0, "an INSERT takes no 10 s: {r:#?}");
    }
    // The history's start times show the same cadence as the table.
    let starts: Vec<DateTime<Utc>> = done
        .iter()
        .filter_map(|r| r.start_time)
        .filter(|t| *t <= window_end)
        .collect();
    let hg = gaps(&starts);
    assert!(
        hg.iter().all(|&x| (1.0..=6.0).contains(&x)),
        "history start times about 2 s apart: {hg:.2?}"
    );
    // The monitoring query of SPEC §6 runs as written on the same rows.
    c.query(
        "SELECT jobid, jobname, runid, status, return_message, start_time, end_time
         FROM procore_sync_job_run_details WHERE jobname LIKE 'procore%'
         ORDER BY start_time DESC LIMIT 20",
        &[],
    )
    .expect("SPEC §6 history query");
}

// ---------------------------------------------------------------------------------------
// 2. A job whose run is still going is not started again; it never delays another job.
// ---------------------------------------------------------------------------------------

#[test]
fn slow_job_never_overlaps_itself_nor_delays_another() {
    let cluster = quiet_cluster(&[]);
    let mut c = cluster.client().expect("connect");
    c.batch_execute("CREATE TABLE fast_ticks (at timestamptz NOT NULL)")
        .unwrap();
    let slow_cmd = "SELECT pg_sleep(5)";
    schedule(&mut c, "slow", "1 seconds", slow_cmd);
    schedule(
        &mut c,
        "fast",
        "1 seconds",
        "INSERT INTO fast_ticks VALUES (clock_timestamp())",
    );

    wait_for(
        &cluster,
        Duration::from_secs(60),
        "the first run of 'slow' to start",
        || Ok(runs(&mut c, "slow").iter().any(|r| r.status() == "running")),
    );
    let started = db_now(&mut c);

    // Watch for 17 s: never two open runs, never two backends running the command.
    let mut max_open = 0;
    let mut max_backends = 0;
    let deadline = Instant::now() + Duration::from_secs(17);
    while Instant::now() < deadline {
        let open = runs(&mut c, "slow").iter().filter(|r| r.open()).count();
        let backends: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND pid <> pg_backend_pid()",
                &[&slow_cmd],
            )
            .unwrap()
            .get(0);
        max_open = max_open.max(open);
        max_backends = max_backends.max(backends);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        max_open <= 1,
        "at most one open run of 'slow' at a time, saw {max_open}"
    );
    assert!(
        max_backends <= 1,
        "at most one backend running 'slow', saw {max_backends}"
    );

    let done = finished(&mut c, "slow");
    assert!(
        done.len() >= 2,
        "'slow' ran more than once in 17 s: {done:#?}\n{}",
        cluster.log_tail(40)
    );
    // Skipped slots leave no rows: 17 s of a 5 s job is at most 4 runs (pg_cron: no
    // history row for a skipped slot either).
    let all = runs(&mut c, "slow");
    assert!(
        all.len() <= 5,
        "no history rows for skipped slots: {all:#?}"
    );
    for r in &done {
        assert_eq!(r.status(), "succeeded", "{r:#?}");
    }
    for w in done.windows(2) {
        let (prev_end, next_start) = (w[0].end_time.unwrap(), w[1].start_time.unwrap());
        assert!(
            next_start >= prev_end,
            "run {} started before run {} ended: {w:#?}",
            w[1].runid,
            w[0].runid
        );
        // Once the run ends, the job is due again (its slots passed): it runs at once,
        // not 5 missed slots later.
        assert!(
            secs(next_start - prev_end) <= 4.0,
            "after a long run the job resumes on the next slot: {w:#?}"
        );
    }

    // Meanwhile 'fast' kept its 1 s cadence, including while 'slow' was running.
    let fast = timestamps(
        &mut c,
        &format!(
            "SELECT at FROM fast_ticks WHERE at >= '{}'::timestamptz ORDER BY at",
            started.to_rfc3339()
        ),
    );
    let g = gaps(&fast);
    assert!(
        fast.len() >= 9,
        "'fast' ran about every second: {} runs, gaps {g:.2?}",
        fast.len()
    );
    assert!(
        g.iter().all(|&x| x < 4.0),
        "'fast' was never held up for the length of a 'slow' run: gaps {g:.2?}"
    );
    for r in &done {
        let (s, e) = (r.start_time.unwrap(), r.end_time.unwrap());
        let during = fast.iter().filter(|t| **t > s && **t < e).count();
        assert!(
            during >= 2,
            "'fast' ran while 'slow' run {} ({s} .. {e}) was sleeping: {during} runs",
            r.runid
        );
    }
}

// ---------------------------------------------------------------------------------------
// 3. Results and failures in return_message.
// ---------------------------------------------------------------------------------------

#[test]
fn results_and_failures_are_recorded() {
    let cluster = quiet_cluster(&[]);
    let mut c = cluster.client().expect("connect");
    c.batch_execute("CREATE TABLE t (x int)").unwrap();
    schedule(&mut c, "divide", "2 seconds", "SELECT 1/0");
    schedule(
        &mut c,
        "half-done",
        "2 seconds",
        "INSERT INTO t VALUES (1); SELECT 1/0",
    );
    schedule(&mut c, "answer", "2 seconds", "SELECT 40 + 2");
    schedule(&mut c, "three", "2 seconds", "SELECT generate_series(1, 3)");

    wait_for(
        &cluster,
        Duration::from_secs(90),
        "two finished runs of every job",
        || {
            Ok(["divide", "half-done", "answer", "three"]
                .iter()
                .all(|j| finished(&mut c, j).len() >= 2))
        },
    );
    for job in ["divide", "half-done"] {
        for r in finished(&mut c, job) {
            assert_eq!(r.status(), "failed", "{r:#?}");
            assert!(
                r.message().contains("division by zero"),
                "the error message is in return_message: {r:#?}"
            );
            assert!(r.start_time.is_some() && r.end_time.is_some(), "{r:#?}");
        }
    }
    let rows: i64 = c.query_one("SELECT count(*) FROM t", &[]).unwrap().get(0);
    assert_eq!(rows, 0, "a failed run's writes are rolled back");
    for r in finished(&mut c, "answer") {
        assert_eq!((r.status(), r.message()), ("succeeded", "42"), "{r:#?}");
    }
    for r in finished(&mut c, "three") {
        assert_eq!((r.status(), r.message()), ("succeeded", "3 rows"), "{r:#?}");
    }
    // A failing job stays scheduled and active.
    let active: bool = c
        .query_one(
            "SELECT active FROM procore_sync_job WHERE jobname = 'divide'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(active);
}

// ---------------------------------------------------------------------------------------
// 4. A run interrupted by a crash is marked failed on restart.
// ---------------------------------------------------------------------------------------

#[test]
fn run_interrupted_by_crash_is_marked_failed() {
    let mut cluster = quiet_cluster(&[]);
    let mut c = cluster.client().expect("connect");
    schedule(&mut c, "sleeper", "2 seconds", "SELECT pg_sleep(30)");
    wait_for(
        &cluster,
        Duration::from_secs(60),
        "'sleeper' running",
        || {
            Ok(runs(&mut c, "sleeper")
                .iter()
                .any(|r| r.status() == "running" && r.job_pid.is_some()))
        },
    );
    let before = runs(&mut c, "sleeper");
    let last_runid = before.iter().map(|r| r.runid).max().unwrap();
    let interrupted: Vec<i64> = before
        .iter()
        .filter(|r| r.open())
        .map(|r| r.runid)
        .collect();
    drop(c);

    cluster
        .restart(StopMode::Immediate)
        .expect("immediate restart");
    let mut c = cluster.client().expect("connect after the crash");
    wait_for(
        &cluster,
        Duration::from_secs(60),
        "the interrupted run to be closed",
        || {
            Ok(runs(&mut c, "sleeper")
                .iter()
                .filter(|r| r.runid <= last_runid)
                .all(|r| !r.open()))
        },
    );
    for r in runs(&mut c, "sleeper")
        .iter()
        .filter(|r| interrupted.contains(&r.runid))
    {
        assert_eq!(r.status(), "failed", "{r:#?}");
        let m = r.message().to_lowercase();
        assert!(
            m.contains("interrupt") || m.contains("restart") || m.contains("crash"),
            "the message says the run was interrupted: {r:#?}"
        );
        assert!(r.end_time.is_some(), "end_time set: {r:#?}");
    }
    // Whatever else is open now was started after the restart, by the new scheduler, and
    // there is at most one of it.
    let open: Vec<Run> = runs(&mut c, "sleeper")
        .into_iter()
        .filter(|r| r.open())
        .collect();
    assert!(open.iter().all(|r| r.runid > last_runid), "{open:#?}");
    assert!(open.len() <= 1, "{open:#?}");
}

// ---------------------------------------------------------------------------------------
// 5. Schedule changes take effect at once; the runbook's statements work.
// ---------------------------------------------------------------------------------------

#[test]
fn schedule_changes_take_effect_at_once() {
    let cluster = cluster_with(&[]);
    let mut c = cluster.client().expect("connect");

    // The runbook's "disable", verbatim.
    c.batch_execute(
        "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job WHERE jobname LIKE 'procore%';",
    )
    .expect("runbook: disable");
    let states: Vec<(String, String, bool)> = c
        .query(
            "SELECT jobname, schedule, active FROM procore_sync_job WHERE jobname LIKE 'procore%' ORDER BY jobname",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        states,
        vec![
            (
                "procore-process-queue-every-minute".to_string(),
                "* * * * *".to_string(),
                false
            ),
            (
                "procore-queue-sync-every-10-minutes".to_string(),
                "*/10 * * * *".to_string(),
                false
            ),
        ]
    );
    // The runbook's frequency change, verbatim: same job, new schedule.
    let process_id: i64 = c
        .query_one(
            "SELECT jobid FROM procore_sync_job WHERE jobname = 'procore-process-queue-every-minute'",
            &[],
        )
        .unwrap()
        .get(0);
    let same: i64 = c
        .query_one(
            "SELECT procore_sync_schedule('procore-process-queue-every-minute', '30 seconds', 'SELECT process_procore_sync_queue()');",
            &[],
        )
        .expect("runbook: change frequency")
        .get(0);
    assert_eq!(
        same, process_id,
        "scheduling an existing name updates that job"
    );
    let (sched, jobs): (String, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT schedule FROM procore_sync_job WHERE jobid = $1), (SELECT count(*) FROM procore_sync_job)",
                &[&process_id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((sched.as_str(), jobs), ("30 seconds", 2));

    // A job whose next run is a minute away...
    let jobid = schedule(&mut c, "flex", "59 seconds", "SELECT 1");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        runs(&mut c, "flex").is_empty(),
        "'59 seconds' does not run within 3 s"
    );
    // ...runs within seconds of becoming '1 seconds', without waiting for the old slot.
    let changed_at = Instant::now();
    assert_eq!(schedule(&mut c, "flex", "1 seconds", "SELECT 2"), jobid);
    wait_for(
        &cluster,
        Duration::from_secs(20),
        "'flex' to run after its schedule became '1 seconds'",
        || Ok(finished(&mut c, "flex").iter().any(|r| r.message() == "2")),
    );
    let took = changed_at.elapsed();
    // The scheduler sleeps up to a minute between due runs: only the commit's wakeup gets
    // the change seen this soon.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    wait_for(
        &cluster,
        Duration::from_secs(30),
        "'flex' to run at least three times",
        || Ok(finished(&mut c, "flex").len() >= 3),
    );

    // alter_job(active => false) stops it.
    c.execute(
        "SELECT procore_sync_alter_job($1, active => false)",
        &[&jobid],
    )
    .expect("deactivate");
    wait_for(
        &cluster,
        Duration::from_secs(30),
        "no open run of 'flex'",
        || Ok(runs(&mut c, "flex").iter().all(|r| !r.open())),
    );
    std::thread::sleep(Duration::from_secs(2)); // a start already decided may still land
    let stopped = runs(&mut c, "flex").len();
    std::thread::sleep(Duration::from_secs(5));
    let after = runs(&mut c, "flex");
    assert_eq!(
        after.len(),
        stopped,
        "an inactive job does not run: {after:#?}"
    );

    // alter_job(command) and (active => true): resumes at once with the new command.
    c.execute(
        "SELECT procore_sync_alter_job($1, command => 'SELECT 3', active => true)",
        &[&jobid],
    )
    .expect("reactivate");
    wait_for(
        &cluster,
        Duration::from_secs(20),
        "'flex' to run again with its new command",
        || Ok(finished(&mut c, "flex").iter().any(|r| r.message() == "3")),
    );

    // alter_job(schedule) back to a long interval stops the quick runs.
    c.execute(
        "SELECT procore_sync_alter_job($1, schedule => '59 seconds')",
        &[&jobid],
    )
    .expect("alter schedule");
    wait_for(
        &cluster,
        Duration::from_secs(30),
        "no open run of 'flex'",
        || Ok(runs(&mut c, "flex").iter().all(|r| !r.open())),
    );
    std::thread::sleep(Duration::from_secs(2));
    let slowed = runs(&mut c, "flex").len();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        runs(&mut c, "flex").len(),
        slowed,
        "'59 seconds' took effect at once"
    );

    // unschedule removes it, and it runs no more.
    c.execute(
        "SELECT procore_sync_alter_job($1, schedule => '1 seconds')",
        &[&jobid],
    )
    .unwrap();
    let before_removal = runs(&mut c, "flex").len();
    wait_for(
        &cluster,
        Duration::from_secs(20),
        "'flex' running every second again",
        || Ok(runs(&mut c, "flex").len() >= before_removal + 2),
    );
    let removed: bool = c
        .query_one("SELECT procore_sync_unschedule('flex')", &[])
        .expect("unschedule")
        .get(0);
    assert!(removed);
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM procore_sync_job WHERE jobname = 'flex'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    wait_for(
        &cluster,
        Duration::from_secs(30),
        "no open run of 'flex'",
        || Ok(runs(&mut c, "flex").iter().all(|r| !r.open())),
    );
    std::thread::sleep(Duration::from_secs(2));
    let gone = runs(&mut c, "flex").len();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        runs(&mut c, "flex").len(),
        gone,
        "an unscheduled job does not run"
    );

    // The two defaults stayed disabled: no run of theirs.
    let defaults: i64 = c
        .query_one(
            "SELECT count(*) FROM procore_sync_job_run_details WHERE jobname LIKE 'procore%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(defaults, 0, "disabled default jobs did not run");
}

// ---------------------------------------------------------------------------------------
// 6. Jobs run as the role that scheduled them; roles manage only their own jobs.
// ---------------------------------------------------------------------------------------

#[test]
fn jobs_run_as_their_role_and_roles_only_touch_their_own() {
    let cluster = quiet_cluster(&[]);
    let mut admin = cluster.client().expect("connect as postgres");
    admin
        .batch_execute(
            "CREATE ROLE alice LOGIN;
             CREATE TABLE secret (x int);
             CREATE TABLE alice_table (who text);
             GRANT INSERT, SELECT ON alice_table TO alice;",
        )
        .unwrap();
    let admin_job = schedule(&mut admin, "admin-job", "59 seconds", "SELECT 1");
    let mut alice = cluster
        .client_for("postgres", "alice")
        .expect("connect as alice");

    // Not executable by PUBLIC.
    for (what, sql) in [
        (
            "schedule",
            "SELECT procore_sync_schedule('a', '1 seconds', 'SELECT 1')",
        ),
        ("unschedule(text)", "SELECT procore_sync_unschedule('a')"),
        (
            "unschedule(bigint)",
            "SELECT procore_sync_unschedule(1::bigint)",
        ),
        (
            "alter_job",
            "SELECT procore_sync_alter_job(1::bigint, active => false)",
        ),
    ] {
        let err = db_error(alice.query(sql, &[]), what);
        assert_eq!(
            err.code(),
            &SqlState::INSUFFICIENT_PRIVILEGE,
            "{what}: {}",
            err.message()
        );
        assert!(
            err.message().contains("permission denied"),
            "{what}: {}",
            err.message()
        );
    }
    admin
        .batch_execute(
            "GRANT EXECUTE ON FUNCTION procore_sync_schedule(text, text, text),
                                       procore_sync_unschedule(text),
                                       procore_sync_unschedule(bigint),
                                       procore_sync_alter_job(bigint, text, text, text, text, boolean)
             TO alice",
        )
        .unwrap();

    // The job has alice's rights, not the extension's.
    let secret_job = schedule(
        &mut alice,
        "alice-secret",
        "1 seconds",
        "INSERT INTO secret VALUES (1)",
    );
    let whoami_job = schedule(
        &mut alice,
        "alice-whoami",
        "1 seconds",
        "SELECT current_user || ':' || session_user || ':' || current_setting('is_superuser')",
    );
    schedule(
        &mut alice,
        "alice-write",
        "1 seconds",
        "INSERT INTO alice_table SELECT current_user",
    );
    wait_for(
        &cluster,
        Duration::from_secs(60),
        "a finished run of each of alice's jobs",
        || {
            Ok(["alice-secret", "alice-whoami", "alice-write"]
                .iter()
                .all(|j| !finished(&mut alice, j).is_empty()))
        },
    );
    for r in finished(&mut alice, "alice-secret") {
        assert_eq!(r.status(), "failed", "{r:#?}");
        assert!(
            r.message().contains("permission denied for table secret"),
            "{r:#?}"
        );
        assert_eq!(r.username.as_deref(), Some("alice"));
    }
    let leaked: i64 = admin
        .query_one("SELECT count(*) FROM secret", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        leaked, 0,
        "alice's job could not write to a table alice cannot write"
    );
    for r in finished(&mut alice, "alice-whoami") {
        assert_eq!(
            (r.status(), r.message()),
            ("succeeded", "alice:alice:off"),
            "{r:#?}"
        );
    }
    let writers: Vec<String> = admin
        .query("SELECT DISTINCT who FROM alice_table", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(writers, vec!["alice".to_string()]);

    // alice cannot touch the superuser's job.
    for (what, sql) in [
        (
            "deactivate",
            "SELECT procore_sync_alter_job($1, active => false)",
        ),
        (
            "change command",
            "SELECT procore_sync_alter_job($1, command => 'SELECT 666')",
        ),
        (
            "change schedule",
            "SELECT procore_sync_alter_job($1, schedule => '1 seconds')",
        ),
        (
            "unschedule by id",
            "SELECT procore_sync_unschedule($1::bigint)",
        ),
    ] {
        let err = db_error(alice.query(sql, &[&admin_job]), what);
        assert_eq!(
            err.code(),
            &SqlState::INSUFFICIENT_PRIVILEGE,
            "{what}: {}",
            err.message()
        );
    }
    db_error(
        alice.query("SELECT procore_sync_unschedule('admin-job')", &[]),
        "unschedule another role's job by name",
    );
    // Same name from alice: her own job, the superuser's is unchanged.
    schedule(&mut alice, "admin-job", "59 seconds", "SELECT 2");
    // Direct writes to the tables are refused.
    for sql in [
        "UPDATE procore_sync_job SET command = 'SELECT 666'",
        "DELETE FROM procore_sync_job",
        "INSERT INTO procore_sync_job (schedule, command, username) VALUES ('1 seconds', 'SELECT 1', 'postgres')",
        "DELETE FROM procore_sync_job_run_details",
        "UPDATE procore_sync_job_run_details SET status = 'succeeded'",
    ] {
        let err = db_error(alice.execute(sql, &[]), sql);
        assert_eq!(err.code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{sql}: {}", err.message());
    }
    let admin_state: (String, String, bool, String) = {
        let r = admin
            .query_one(
                "SELECT schedule, command, active, username FROM procore_sync_job WHERE jobid = $1",
                &[&admin_job],
            )
            .expect("the superuser's job still exists");
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(
        admin_state,
        (
            "59 seconds".into(),
            "SELECT 1".into(),
            true,
            "postgres".into()
        ),
        "the superuser's job is untouched"
    );

    // alice cannot make her job run as another role.
    let err = db_error(
        alice.query(
            "SELECT procore_sync_alter_job($1, username => 'postgres')",
            &[&whoami_job],
        ),
        "alter_job(username => postgres) by alice",
    );
    assert_eq!(
        err.code(),
        &SqlState::INSUFFICIENT_PRIVILEGE,
        "{}",
        err.message()
    );
    let owner: String = admin
        .query_one(
            "SELECT username FROM procore_sync_job WHERE jobid = $1",
            &[&whoami_job],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "alice");

    // She sees only her own jobs and runs (RLS), the superuser sees all.
    let mine: BTreeSet<String> = alice
        .query("SELECT jobname FROM procore_sync_job", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: BTreeSet<String> = ["alice-secret", "alice-whoami", "alice-write", "admin-job"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(mine, expected);
    let alien: i64 = alice
        .query_one(
            "SELECT count(*) FROM procore_sync_job WHERE username <> 'alice'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(alien, 0);
    admin
        .execute(
            "SELECT procore_sync_alter_job($1, schedule => '1 seconds')",
            &[&admin_job],
        )
        .unwrap();
    wait_for(
        &cluster,
        Duration::from_secs(30),
        "a run of the superuser's job",
        || {
            Ok(!finished(&mut admin, "admin-job")
                .iter()
                .filter(|r| r.username.as_deref() == Some("postgres"))
                .collect::<Vec<_>>()
                .is_empty())
        },
    );
    let foreign_runs: i64 = alice
        .query_one(
            "SELECT count(*) FROM procore_sync_job_run_details WHERE username <> 'alice'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(foreign_runs, 0, "alice sees no other role's runs");
    let own_runs: i64 = alice
        .query_one("SELECT count(*) FROM procore_sync_job_run_details", &[])
        .unwrap()
        .get(0);
    assert!(own_runs > 0, "alice sees her own runs");

    // Her own jobs she can manage; a superuser can manage hers too.
    alice
        .execute(
            "SELECT procore_sync_alter_job($1, active => false)",
            &[&whoami_job],
        )
        .expect("alice deactivates her job");
    alice
        .execute("SELECT procore_sync_unschedule($1::bigint)", &[&secret_job])
        .expect("alice unschedules her job by id");
    alice
        .execute("SELECT procore_sync_unschedule('alice-write')", &[])
        .expect("alice unschedules her job by name");
    admin
        .execute("SELECT procore_sync_unschedule($1::bigint)", &[&whoami_job])
        .expect("a superuser unschedules alice's job");
    let left: i64 = admin
        .query_one(
            "SELECT count(*) FROM procore_sync_job WHERE username = 'alice'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "only alice's 'admin-job' is left");
}

// ---------------------------------------------------------------------------------------
// 7. Bad schedules are rejected with the field and position.
// ---------------------------------------------------------------------------------------

#[test]
fn bad_schedules_are_rejected_with_field_and_position() {
    // (Validation needs no scheduler, but without the preload loading the library is FATAL
    // today, see the report; so this runs on a normal cluster.)
    let cluster = quiet_cluster(&[]);
    let mut c = cluster.client().expect("connect");
    let jobs_before: i64 = c
        .query_one("SELECT count(*) FROM procore_sync_job", &[])
        .unwrap()
        .get(0);

    let cases: &[(&str, &[&str])] = &[
        ("*/0 * * * *", &["minute", "position 3"]),
        ("60 seconds", &["60", "position 1", "1-59"]),
        ("0 seconds", &["position 1", "1-59"]),
        ("* * * *", &["5 fields", "4"]),
        ("* 24 * * *", &["hour", "24", "position 3"]),
        ("0 0 32 * *", &["day of month", "32", "position 5"]),
        ("0 0 * 13 *", &["month", "13", "position 7"]),
        ("0 0 * * 8", &["day of week", "8", "position 9"]),
        ("0 0 * * foo", &["day of week", "foo", "position 9"]),
        ("0 0 * * * *", &["6", "position 11"]),
        ("x * * * *", &["minute", "position 1"]),
        ("1 minutes", &["minutes", "position 3"]),
        ("", &["empty"]),
    ];
    for (expr, needles) in cases {
        let err = db_error(
            c.query(
                "SELECT procore_sync_schedule('bad', $1, 'SELECT 1')",
                &[expr],
            ),
            &format!("schedule {expr:?}"),
        );
        assert_eq!(
            err.code(),
            &SqlState::INVALID_PARAMETER_VALUE,
            "{expr:?}: {}",
            err.message()
        );
        for n in *needles {
            assert!(
                err.message().contains(n),
                "the error for {expr:?} mentions {n:?}: {}",
                err.message()
            );
        }
    }
    let jobs_after: i64 = c
        .query_one("SELECT count(*) FROM procore_sync_job", &[])
        .unwrap()
        .get(0);
    assert_eq!(jobs_after, jobs_before, "no bad schedule was saved");

    // alter_job rejects them too and leaves the job as it was.
    let jobid = schedule(&mut c, "good", "*/5 * * * *", "SELECT 1");
    let err = db_error(
        c.query(
            "SELECT procore_sync_alter_job($1, schedule => '*/0 * * * *')",
            &[&jobid],
        ),
        "alter_job with a bad schedule",
    );
    assert!(err.message().contains("position 3"), "{}", err.message());
    let sched: String = c
        .query_one(
            "SELECT schedule FROM procore_sync_job WHERE jobid = $1",
            &[&jobid],
        )
        .unwrap()
        .get(0);
    assert_eq!(sched, "*/5 * * * *");

    // What pg_cron accepts is accepted.
    for expr in [
        "1 seconds",
        "59 seconds",
        "1 second",
        "* * * * *",
        "0 9 * * mon-fri",
        "0 0 $ * *",
        "0,30 8-18/2 1-15 jan,jul sun",
        "@hourly",
        "*/10 * * * *",
    ] {
        c.query(
            "SELECT procore_sync_schedule('good', $1, 'SELECT 1')",
            &[&expr],
        )
        .unwrap_or_else(|e| panic!("{expr:?} is a valid schedule: {e}"));
    }
}

// ---------------------------------------------------------------------------------------
// 8. Retention: finished queue rows and run history older than procore_sync.retention go.
// ---------------------------------------------------------------------------------------

#[test]
fn old_finished_rows_are_purged_by_retention() {
    let cluster = quiet_cluster(&[]);
    let mut c = cluster.client().expect("connect");
    // Rows on both sides of a 5 min retention. (The minimum, 60 s, would leave no room
    // for "recent" rows to outlive a purge that runs once a minute.)
    c.batch_execute(
        "INSERT INTO procore_sync_queue (user_id, status, created_at, started_at, completed_at, error_message) VALUES
           (gen_random_uuid(), 'completed', now() - interval '2 hours', now() - interval '2 hours', now() - interval '1 hour', 'old-completed'),
           (gen_random_uuid(), 'failed',    now() - interval '10 minutes', now() - interval '10 minutes', now() - interval '10 minutes', 'old-failed'),
           (gen_random_uuid(), 'completed', now() - interval '3 minutes', now() - interval '3 minutes', now() - interval '2 minutes', 'recent-completed'),
           (gen_random_uuid(), 'pending',   now() - interval '2 hours', NULL, NULL, 'old-pending');
         INSERT INTO procore_sync_job_run_details (jobid, status, return_message, start_time, end_time, jobname) VALUES
           (999999, 'succeeded', 'old-succeeded', now() - interval '1 hour', now() - interval '1 hour', 'retention-test'),
           (999999, 'failed',    'old-failed',    now() - interval '10 minutes', now() - interval '10 minutes', 'retention-test'),
           (999999, 'succeeded', 'recent-succeeded', now() - interval '2 minutes', now() - interval '2 minutes', 'retention-test');",
    )
    .unwrap();
    cluster
        .set_setting("procore_sync.retention", "5min")
        .expect("set retention");
    let started = Instant::now();

    let snapshot = |c: &mut postgres::Client| -> (BTreeSet<String>, BTreeSet<String>) {
        // One statement, one snapshot: the purge is seen whole or not at all.
        let rows = c
            .query(
                "SELECT 'q', error_message FROM procore_sync_queue
                 UNION ALL
                 SELECT 'r', return_message FROM procore_sync_job_run_details WHERE jobname = 'retention-test'",
                &[],
            )
            .unwrap();
        let mut q = BTreeSet::new();
        let mut r = BTreeSet::new();
        for row in rows {
            let (kind, text): (String, String) = (row.get(0), row.get(1));
            if kind == "q" {
                q.insert(text);
            } else {
                r.insert(text);
            }
        }
        (q, r)
    };
    let mut last = (BTreeSet::new(), BTreeSet::new());
    wait_for(
        &cluster,
        Duration::from_secs(150),
        "old finished rows to be purged",
        || {
            last = snapshot(&mut c);
            Ok(!last
                .0
                .iter()
                .any(|m| m.starts_with("old-completed") || m == "old-failed")
                && !last.1.iter().any(|m| m.starts_with("old-")))
        },
    );
    let took = started.elapsed();
    let strs = |v: &[&str]| {
        v.iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<String>>()
    };
    assert_eq!(
        last.0,
        strs(&["recent-completed", "old-pending"]),
        "recent finished and unfinished queue rows stay (purge after {took:?})"
    );
    assert_eq!(last.1, strs(&["recent-succeeded"]), "recent history stays");
    assert!(
        took < Duration::from_secs(150),
        "purged within a couple of minutes: {took:?}"
    );
    eprintln!("retention purge after {took:?}");
    assert!(
        !cluster.log().contains("retention cleanup failed"),
        "{}",
        cluster.log_tail(40)
    );
}

// ---------------------------------------------------------------------------------------
// 9. After downtime, a missed run happens once, not once per missed slot.
// ---------------------------------------------------------------------------------------

#[test]
fn missed_runs_after_downtime_happen_once() {
    let mut cluster = quiet_cluster(&[]);
    // The "downtime": the scheduler serves another database (without the extension), so
    // nothing runs here while the history says the jobs last ran 5 minutes ago.
    let mut c = cluster.client().unwrap();
    c.batch_execute("CREATE DATABASE elsewhere").unwrap();
    c.batch_execute("ALTER SYSTEM SET procore_sync.database_name = 'elsewhere'")
        .unwrap();
    drop(c);
    cluster
        .restart(StopMode::Fast)
        .expect("restart with the scheduler elsewhere");
    let mut c = cluster.client().expect("connect");
    let schedulers: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE backend_type = 'procore_sync scheduler' AND datname = 'postgres'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(schedulers, 0, "no scheduler in this database");

    c.batch_execute("CREATE TABLE seen (job text, at timestamptz)")
        .unwrap();
    // Slots at each of the four minutes before this one and none for the next 55 minutes:
    // any run after the restart is a catch-up run, and a pile-up would be four of them.
    let minutes: String = c
        .query_one(
            "SELECT string_agg(extract(minute FROM now() - make_interval(mins => i))::int::text, ',' ORDER BY i DESC)
             FROM generate_series(1, 4) i",
            &[],
        )
        .unwrap()
        .get(0);
    let missed = schedule(
        &mut c,
        "missed",
        &format!("{minutes} * * * *"),
        "INSERT INTO seen VALUES ('missed', clock_timestamp())",
    );
    let every = schedule(
        &mut c,
        "every-minute",
        "* * * * *",
        "INSERT INTO seen VALUES ('every-minute', clock_timestamp())",
    );
    for jobid in [missed, every] {
        c.execute(
            "INSERT INTO procore_sync_job_run_details (jobid, database, username, command, status, return_message, start_time, end_time, jobname)
             SELECT jobid, database, username, command, 'succeeded', 'fake', now() - interval '5 minutes', now() - interval '299 seconds', jobname
             FROM procore_sync_job WHERE jobid = $1",
            &[&jobid],
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        runs(&mut c, "missed").iter().all(|r| r.message() == "fake"),
        "nothing ran during the downtime"
    );
    c.batch_execute("ALTER SYSTEM RESET procore_sync.database_name")
        .unwrap();
    drop(c);
    cluster
        .restart(StopMode::Fast)
        .expect("restart with the scheduler");
    let mut c = cluster.client().expect("connect after the restart");

    wait_for(
        &cluster,
        Duration::from_secs(60),
        "the catch-up runs after the restart",
        || {
            Ok(c.query_one("SELECT count(DISTINCT job) FROM seen", &[])?
                .get::<_, i64>(0)
                == 2)
        },
    );
    let first: DateTime<Utc> = c.query_one("SELECT max(at) FROM seen", &[]).unwrap().get(0);
    wait_for(
        &cluster,
        Duration::from_secs(60),
        "12 s after the catch-up",
        || Ok(db_now(&mut c) >= first + chrono::TimeDelta::seconds(12)),
    );

    let missed_runs = timestamps(
        &mut c,
        "SELECT at FROM seen WHERE job = 'missed' ORDER BY at",
    );
    assert_eq!(
        missed_runs.len(),
        1,
        "four missed slots make one run, not one each: {missed_runs:?}"
    );
    let every_runs = timestamps(
        &mut c,
        "SELECT at FROM seen WHERE job = 'every-minute' ORDER BY at",
    );
    let distinct_minutes: BTreeSet<i64> = every_runs.iter().map(|t| t.timestamp() / 60).collect();
    assert!(
        every_runs.len() <= 2 && distinct_minutes.len() == every_runs.len(),
        "'* * * * *' runs once for its missed slots, then on whole minutes only: {every_runs:?}"
    );
    let history: Vec<Run> = runs(&mut c, "missed")
        .into_iter()
        .filter(|r| r.message() != "fake")
        .collect();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0].status(), "succeeded", "{history:#?}");
}

// ---------------------------------------------------------------------------------------
// 10. procore_sync.timezone: cron fields are read in that zone.
// ---------------------------------------------------------------------------------------

#[test]
fn cron_fields_follow_the_configured_time_zone() {
    // +05:45: its minutes differ from UTC's, so a job matching its wall clock cannot fire
    // by accident if the zone were ignored.
    const ZONE: &str = "Asia/Kathmandu";
    let cluster = quiet_cluster(&[("procore_sync.timezone", ZONE)]);
    let mut c = cluster.client().expect("connect");
    let shown: String = c
        .query_one("SHOW procore_sync.timezone", &[])
        .unwrap()
        .get(0);
    assert_eq!(shown, ZONE);
    c.batch_execute("CREATE TABLE fired (job text, at timestamptz)")
        .unwrap();
    schedule(
        &mut c,
        "tz-tick",
        "1 seconds",
        "INSERT INTO fired VALUES ('tick', clock_timestamp())",
    );

    // The next whole minute with at least ~15 s to spare, as UTC and as Kathmandu fields.
    let row = c
        .query_one(
            "WITH t AS (SELECT date_trunc('minute', now())
                               + CASE WHEN extract(second FROM now()) < 40 THEN interval '1 minute'
                                      ELSE interval '2 minutes' END AS at)
             SELECT at,
                    extract(minute FROM at AT TIME ZONE 'UTC')::int, extract(hour FROM at AT TIME ZONE 'UTC')::int,
                    extract(minute FROM at AT TIME ZONE $1)::int, extract(hour FROM at AT TIME ZONE $1)::int
             FROM t",
            &[&ZONE],
        )
        .unwrap();
    let (target, utc_m, utc_h, loc_m, loc_h): (DateTime<Utc>, i32, i32, i32, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    schedule(
        &mut c,
        "tz-local",
        &format!("{loc_m} {loc_h} * * *"),
        "INSERT INTO fired VALUES ('local', clock_timestamp())",
    );
    schedule(
        &mut c,
        "tz-utc-fields",
        &format!("{utc_m} {utc_h} * * *"),
        "INSERT INTO fired VALUES ('utc-fields', clock_timestamp())",
    );

    wait_for(
        &cluster,
        Duration::from_secs(180),
        "the job whose fields are Kathmandu time",
        || {
            Ok(
                c.query_one("SELECT count(*) FROM fired WHERE job = 'local'", &[])?
                    .get::<_, i64>(0)
                    >= 1,
            )
        },
    );
    let local: DateTime<Utc> = c
        .query_one("SELECT min(at) FROM fired WHERE job = 'local'", &[])
        .unwrap()
        .get(0);
    assert!(
        local >= target && secs(local - target) < 45.0,
        "'{loc_m} {loc_h} * * *' in {ZONE} fired at {local}, due at {target}"
    );
    wait_for(
        &cluster,
        Duration::from_secs(60),
        "10 s past the slot",
        || Ok(db_now(&mut c) >= target + chrono::TimeDelta::seconds(10)),
    );
    let utc_fired: i64 = c
        .query_one("SELECT count(*) FROM fired WHERE job = 'utc-fields'", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        utc_fired, 0,
        "'{utc_m} {utc_h} * * *' means {utc_h}:{utc_m:02} in {ZONE}, not in UTC"
    );
    let ticks: i64 = c
        .query_one("SELECT count(*) FROM fired WHERE job = 'tick'", &[])
        .unwrap()
        .get(0);
    assert!(ticks >= 10, "interval jobs run as usual: {ticks}");
    let log = cluster.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            ((l.contains("ERROR") || l.contains("FATAL")) && l.contains("procore_sync"))
                || l.contains("unknown procore_sync.timezone")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "the scheduler logged problems:\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// 11. A long job can be stopped as in pg_cron: pg_cancel_backend / pg_terminate_backend on
//     its pid, and a fast shutdown does not wait for it.
// ---------------------------------------------------------------------------------------

#[test]
fn long_job_can_be_cancelled_and_terminated() {
    let cluster = quiet_cluster(&[]);
    let mut c = cluster.client().expect("connect");
    schedule(&mut c, "long", "1 seconds", "SELECT pg_sleep(120)");

    let running_pid = |c: &mut postgres::Client| -> Option<(i64, i32)> {
        runs(c, "long")
            .into_iter()
            .find(|r| r.status() == "running" && r.job_pid.is_some())
            .map(|r| (r.runid, r.job_pid.unwrap()))
    };
    let mut current = None;
    wait_for(&cluster, Duration::from_secs(60), "'long' running", || {
        current = running_pid(&mut c);
        Ok(current.is_some())
    });
    let (runid, pid) = current.unwrap();
    let cancelled: bool = c
        .query_one("SELECT pg_cancel_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(cancelled);
    wait_for(
        &cluster,
        Duration::from_secs(20),
        "the cancelled run to end",
        || {
            Ok(runs(&mut c, "long")
                .iter()
                .any(|r| r.runid == runid && !r.open()))
        },
    );
    let r = runs(&mut c, "long")
        .into_iter()
        .find(|r| r.runid == runid)
        .unwrap();
    assert_eq!(r.status(), "failed", "{r:#?}");
    assert!(r.message().contains("cancel"), "{r:#?}");

    let mut current = None;
    wait_for(
        &cluster,
        Duration::from_secs(60),
        "the next run of 'long'",
        || {
            current = running_pid(&mut c).filter(|(id, _)| *id > runid);
            Ok(current.is_some())
        },
    );
    let (runid, pid) = current.unwrap();
    let terminated: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(terminated);
    wait_for(
        &cluster,
        Duration::from_secs(30),
        "the terminated run to end",
        || {
            let gone: bool = c
                .query_one(
                    "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                    &[&pid],
                )?
                .get(0);
            Ok(gone
                && runs(&mut c, "long")
                    .iter()
                    .any(|r| r.runid == runid && !r.open()))
        },
    );
    let r = runs(&mut c, "long")
        .into_iter()
        .find(|r| r.runid == runid)
        .unwrap();
    assert_eq!(r.status(), "failed", "{r:#?}");
}

#[test]
fn fast_shutdown_does_not_wait_for_a_long_job() {
    let mut cluster = quiet_cluster(&[]);
    let mut c = cluster.client().expect("connect");
    schedule(&mut c, "long", "1 seconds", "SELECT pg_sleep(120)");
    wait_for(&cluster, Duration::from_secs(60), "'long' running", || {
        Ok(runs(&mut c, "long").iter().any(|r| r.status() == "running"))
    });
    drop(c);
    let t = Instant::now();
    let stopped = cluster.stop(StopMode::Fast);
    let took = t.elapsed();
    assert!(
        stopped.is_ok() && took < Duration::from_secs(30),
        "pg_ctl stop -m fast with a job running: {stopped:?} after {took:?}\n{}",
        cluster.log_tail(30)
    );
    cluster.start_again().expect("start again");
    let mut c = cluster.client().expect("connect");
    c.execute("SELECT procore_sync_unschedule('long')", &[])
        .unwrap();
    // The restarted scheduler may start a new run before the unschedule lands (a missed
    // slot runs once); only the run the shutdown interrupted matters here.
    wait_for(
        &cluster,
        Duration::from_secs(60),
        "the interrupted run of 'long' closed",
        || Ok(runs(&mut c, "long").first().is_some_and(|r| !r.open())),
    );
    let first = runs(&mut c, "long").into_iter().next().unwrap();
    assert_eq!(first.status(), "failed", "{first:#?}");
}

// ---------------------------------------------------------------------------------------
// 6b. A job's command cannot borrow the runner's bookkeeping rights. The runner records the
//     end of a run as a superuser in the same session the job's command ran in, so anything
//     the command leaves in that session (here: a temporary table shadowing the history
//     table, with a trigger) must not run with those rights.
// ---------------------------------------------------------------------------------------

#[test]
fn job_command_cannot_escalate_through_the_runner_session() {
    let cluster = quiet_cluster(&[]);
    let mut admin = cluster.client().expect("connect as postgres");
    admin
        .batch_execute(
            "CREATE ROLE mallory LOGIN;
             GRANT EXECUTE ON FUNCTION procore_sync_schedule(text, text, text) TO mallory;",
        )
        .unwrap();
    let mut mallory = cluster
        .client_for("postgres", "mallory")
        .expect("connect as mallory");
    schedule(
        &mut mallory,
        "shadow",
        "2 seconds",
        "CREATE TEMP TABLE IF NOT EXISTS procore_sync_job_run_details
             (runid bigint, jobid bigint, job_pid int, status text, return_message text,
              start_time timestamptz, end_time timestamptz, command text);
         CREATE OR REPLACE FUNCTION pg_temp.escalate() RETURNS trigger LANGUAGE plpgsql AS
             $f$ BEGIN EXECUTE 'ALTER ROLE mallory SUPERUSER'; RETURN NULL; END $f$;
         DROP TRIGGER IF EXISTS escalate ON procore_sync_job_run_details;
         CREATE TRIGGER escalate AFTER UPDATE ON procore_sync_job_run_details
             FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.escalate();
         SELECT 'planted'",
    );
    wait_for(
        &cluster,
        Duration::from_secs(60),
        "two finished runs of 'shadow'",
        || Ok(finished(&mut admin, "shadow").len() >= 2),
    );
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'",
            &[],
        )
        .unwrap()
        .get(0);
    let history = finished(&mut admin, "shadow");
    assert!(
        !superuser,
        "a job's command made its role superuser through the runner's bookkeeping: {history:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// 12. '@restart' (pg_cron's @reboot): once per scheduler start, whatever starts it, and
//     never again within one start.
// ---------------------------------------------------------------------------------------

/// Pid of the one running scheduler.
fn scheduler_pid(client: &mut postgres::Client) -> Option<i32> {
    client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'procore_sync scheduler'",
            &[],
        )
        .expect("read pg_stat_activity")
        .first()
        .map(|r| r.get(0))
}

fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[test]
fn restart_job_runs_once_per_scheduler_start() {
    let mut cluster = quiet_cluster(&[]);
    let mut c = cluster.client().expect("connect");
    c.batch_execute(
        "CREATE TABLE boots (job text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE TABLE beats (at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .unwrap();
    // A heartbeat shows that the scheduler keeps passing over the jobs meanwhile.
    schedule(
        &mut c,
        "beat",
        "1 seconds",
        "INSERT INTO beats DEFAULT VALUES",
    );
    let beats = |c: &mut postgres::Client| count(c, "SELECT count(*) FROM beats");
    let wait_beats = |c: &mut postgres::Client, cluster: &Cluster, n: i64, what: &str| {
        let target = beats(c) + n;
        wait_for(cluster, Duration::from_secs(60), what, || {
            Ok(beats(c) >= target)
        });
    };
    wait_beats(
        &mut c,
        &cluster,
        1,
        "the heartbeat (the scheduler's start pass is over)",
    );

    // Created while the scheduler runs: as in pg_cron, it waits for the next start.
    let jobid = schedule(
        &mut c,
        "boot",
        "@restart",
        "INSERT INTO boots (job) VALUES ('boot')",
    );
    wait_beats(&mut c, &cluster, 3, "3 heartbeats after scheduling 'boot'");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM boots"),
        0,
        "a @restart job created while the scheduler runs waits for its next start"
    );

    let boots = |c: &mut postgres::Client| count(c, "SELECT count(*) FROM boots");
    let wait_boots = |cluster: &Cluster, n: i64, what: &str| {
        let mut c = common::connect(cluster);
        wait_for(cluster, Duration::from_secs(90), what, || {
            Ok(boots(&mut c) >= n)
        });
    };

    // 1. The server restarts: one run.
    drop(c);
    cluster.restart(StopMode::Fast).expect("restart");
    wait_boots(
        &cluster,
        1,
        "the @restart run after the first server restart",
    );
    let mut c = common::connect(&cluster);
    // Nothing meanwhile brings it back: job-table re-reads (the heartbeat's own runs, an
    // altered command, a new job), a configuration reload with a new time zone.
    wait_beats(
        &mut c,
        &cluster,
        2,
        "heartbeats after the first @restart run",
    );
    c.execute(
        "SELECT procore_sync_alter_job($1, command => $2)",
        &[&jobid, &"INSERT INTO boots (job) VALUES ('boot, altered')"],
    )
    .expect("alter the @restart job");
    schedule(&mut c, "other", "0 0 1 1 *", "SELECT 1");
    c.batch_execute("ALTER SYSTEM SET procore_sync.timezone = 'America/New_York'")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    wait_beats(
        &mut c,
        &cluster,
        4,
        "heartbeats after the alter and the reload",
    );
    assert_eq!(
        boots(&mut c),
        1,
        "one run per start: {:?}",
        runs(&mut c, "boot")
    );

    // 2. Another server restart: one more, with the altered command.
    drop(c);
    cluster.restart(StopMode::Fast).expect("second restart");
    wait_boots(
        &cluster,
        2,
        "the @restart run after the second server restart",
    );
    let mut c = common::connect(&cluster);
    wait_beats(
        &mut c,
        &cluster,
        3,
        "heartbeats after the second @restart run",
    );
    assert_eq!(boots(&mut c), 2);

    // 3. Only the scheduler restarts (terminated; the postmaster starts it after 5 s).
    let old = scheduler_pid(&mut c).expect("a scheduler runs");
    let terminated: bool = c
        .query_one("SELECT pg_terminate_backend($1)", &[&old])
        .unwrap()
        .get(0);
    assert!(terminated);
    wait_for(
        &cluster,
        Duration::from_secs(60),
        "a new scheduler after pg_terminate_backend",
        || Ok(scheduler_pid(&mut c).is_some_and(|p| p != old)),
    );
    wait_boots(
        &cluster,
        3,
        "the @restart run after the scheduler restarted",
    );
    wait_beats(
        &mut c,
        &cluster,
        4,
        "heartbeats after the third @restart run",
    );
    assert_eq!(boots(&mut c), 3, "{:?}", runs(&mut c, "boot"));

    let jobs: Vec<String> = c
        .query("SELECT job FROM boots ORDER BY at", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(jobs, ["boot", "boot, altered", "boot, altered"]);
    // Each run is in the history like any other.
    let history = runs(&mut c, "boot");
    assert_eq!(history.len(), 3, "{history:#?}");
    for r in &history {
        assert_eq!(r.status(), "succeeded", "{r:#?}");
        assert_eq!(r.jobid, Some(jobid), "{r:#?}");
        assert!(r.end_time.is_some() && r.job_pid.is_some(), "{r:#?}");
    }
}

// ---------------------------------------------------------------------------------------
// 13. procore_sync_schedule_in_database: the job runs in that database, as that role.
// ---------------------------------------------------------------------------------------

#[test]
fn job_scheduled_in_another_database_runs_there() {
    let cluster = quiet_cluster(&[]);
    let mut c = cluster.client().expect("connect");
    c.batch_execute("CREATE DATABASE elsewhere").unwrap();
    c.batch_execute("CREATE ROLE reporter LOGIN").unwrap();
    let mut other = cluster
        .client_for("elsewhere", "postgres")
        .expect("connect to elsewhere");
    other
        .batch_execute(
            "CREATE TABLE seen (db text, who text, at timestamptz DEFAULT clock_timestamp());
             GRANT INSERT ON seen TO reporter",
        )
        .unwrap();
    let command = "INSERT INTO seen (db, who) VALUES (current_database(), current_user)";
    let jobid: i64 = c
        .query_one(
            "SELECT procore_sync_schedule_in_database($1, $2, $3, $4, $5)",
            &[&"remote", &"1 seconds", &command, &"elsewhere", &"reporter"],
        )
        .expect("procore_sync_schedule_in_database")
        .get(0);
    let row = c
        .query_one(
            "SELECT database, username, active FROM procore_sync_job WHERE jobid = $1",
            &[&jobid],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, bool>(2)
        ),
        ("elsewhere".to_string(), "reporter".to_string(), true)
    );

    wait_for(
        &cluster,
        Duration::from_secs(60),
        "two runs in 'elsewhere'",
        || Ok(count(&mut other, "SELECT count(*) FROM seen") >= 2),
    );
    let seen: BTreeSet<(String, String)> = other
        .query("SELECT db, who FROM seen", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        seen,
        BTreeSet::from([("elsewhere".to_string(), "reporter".to_string())]),
        "every run is in 'elsewhere' as 'reporter'"
    );
    // Its history is kept with the scheduler, in the extension's database.
    let done = finished(&mut c, "remote");
    assert!(!done.is_empty());
    for r in &done {
        assert_eq!(r.status(), "succeeded", "{r:#?}");
        assert_eq!(r.database.as_deref(), Some("elsewhere"), "{r:#?}");
        assert_eq!(r.username.as_deref(), Some("reporter"), "{r:#?}");
    }

    // Inactive from the start: scheduled, never run.
    c.execute(
        "SELECT procore_sync_schedule_in_database($1, $2, $3, $4, active => false)",
        &[&"dormant", &"1 seconds", &"SELECT 1", &"elsewhere"],
    )
    .expect("schedule an inactive job");
    let before = count(&mut other, "SELECT count(*) FROM seen");
    wait_for(
        &cluster,
        Duration::from_secs(60),
        "two more runs of 'remote'",
        || Ok(count(&mut other, "SELECT count(*) FROM seen") >= before + 2),
    );
    assert!(
        runs(&mut c, "dormant").is_empty(),
        "an inactive job never runs"
    );

    // A database that does not exist is refused when scheduling, not at each run.
    let e = db_error(
        c.query_one(
            "SELECT procore_sync_schedule_in_database($1, $2, $3, $4)",
            &[&"nowhere", &"1 seconds", &"SELECT 1", &"no_such_database"],
        ),
        "a job in a missing database",
    );
    assert_eq!(e.code(), &SqlState::INVALID_PARAMETER_VALUE, "{e:?}");
    assert!(e.message().contains("no_such_database"), "{e:?}");
}
