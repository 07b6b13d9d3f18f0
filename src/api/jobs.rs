//! pg_cron's job functions: `procore_sync_schedule`, `procore_sync_schedule_in_database`,
//! `procore_sync_unschedule` and `procore_sync_alter_job`. They run as the extension owner
//! (security definer); the data layer checks the calling role, so a role manages its own
//! jobs and nobody else's.

use std::convert::Infallible;

use pgrx::prelude::*;

use crate::data::jobs;
use crate::errors::{required, OrRaise};
use crate::sync::wakeup;

/// Creates a job, or changes the schedule and command of the caller's job of that name.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_schedule(
    job_name: Option<&str>,
    schedule: Option<&str>,
    command: Option<&str>,
) -> i64 {
    let job_name = required(job_name, "job_name");
    jobs::schedule_job(
        job_name,
        required(schedule, "schedule"),
        required(command, "command"),
    )
    .or_raise()
}

/// pg_cron's `schedule_in_database`: creates a job that runs in `database` as `username`
/// (default: the caller), or changes the schedule, command and database of that role's job
/// of that name. Both are checked now, so a job that could never start is refused here
/// rather than failing at every run.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_schedule_in_database(
    job_name: Option<&str>,
    schedule: Option<&str>,
    command: Option<&str>,
    database: Option<&str>,
    username: default!(Option<&str>, "NULL"),
    active: default!(Option<bool>, "true"),
) -> i64 {
    let job_name = required(job_name, "job_name");
    jobs::schedule_job_in_database(
        job_name,
        required(schedule, "schedule"),
        required(command, "command"),
        database,
        username,
        // NULL is the default, as in pg_cron, which reads the argument only when it is set.
        active.unwrap_or(true),
    )
    .or_raise()
}

/// Removes the caller's job of that name.
#[pg_extern(volatile, security_definer, name = "procore_sync_unschedule")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_unschedule_by_name(job_name: Option<&str>) -> bool {
    jobs::unschedule_by_name(required(job_name, "job_name")).or_raise();
    true
}

/// Removes a job by id: the caller's own, or any job for a superuser.
#[pg_extern(volatile, security_definer, name = "procore_sync_unschedule")]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_unschedule_by_id(job_id: Option<i64>) -> bool {
    jobs::unschedule_by_id(required(job_id, "job_id")).or_raise();
    true
}

/// pg_cron's `alter_job`: changes what is given, keeps the rest.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn procore_sync_alter_job(
    job_id: Option<i64>,
    schedule: default!(Option<&str>, "NULL"),
    command: default!(Option<&str>, "NULL"),
    database: default!(Option<&str>, "NULL"),
    username: default!(Option<&str>, "NULL"),
    active: default!(Option<bool>, "NULL"),
) {
    jobs::alter_job(
        required(job_id, "job_id"),
        schedule,
        command,
        database,
        username,
        active,
    )
    .or_raise()
}

/// Trigger on `procore_sync_job`: the scheduler re-reads the jobs once the change commits.
#[pg_trigger]
fn procore_sync_job_changed<'a>(
    _trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, Infallible> {
    wakeup::wake_scheduler_for_jobs_at_commit();
    Ok(None)
}
