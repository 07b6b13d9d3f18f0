//! The job table and its run history: what `procore_sync_schedule` and friends write (after
//! checking that the calling role may), and what the scheduler and job runners read and
//! record. Names and columns follow pg_cron's `cron.job` and `cron.job_run_details`.

use chrono::{DateTime, Utc};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::timestamps;
use crate::errors::SyncError;
use crate::schedule;

struct Caller {
    name: String,
    superuser: bool,
}

/// The role that called us, looked through security definer (the role after SET ROLE).
fn caller() -> Result<Caller, SyncError> {
    let oid = unsafe { pg_sys::GetOuterUserId() };
    let name = Spi::get_one_with_args::<String>(
        "SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = $1",
        &[oid.into()],
    )?
    .ok_or_else(|| SyncError::Internal("the calling role does not exist".into()))?;
    Ok(Caller {
        name,
        superuser: unsafe { pg_sys::superuser_arg(oid) },
    })
}

/// No row is an answer, not an error.
fn optional<T>(result: Result<Option<T>, pgrx::spi::Error>) -> Result<Option<T>, SyncError> {
    match result {
        Err(pgrx::spi::Error::InvalidPosition) => Ok(None),
        other => Ok(other?),
    }
}

fn validate_schedule(expr: &str) -> Result<(), SyncError> {
    schedule::parse(expr)
        .map(|_| ())
        .map_err(|e| SyncError::InvalidSchedule(e.to_string()))
}

fn validate_command(command: &str) -> Result<(), SyncError> {
    if command.trim().is_empty() {
        return Err(SyncError::InvalidArgument(
            "a job's command cannot be empty".into(),
        ));
    }
    Ok(())
}

pub fn schedule_job(job_name: &str, schedule: &str, command: &str) -> Result<i64, SyncError> {
    if job_name.trim().is_empty() {
        return Err(SyncError::InvalidArgument("a job needs a name".into()));
    }
    validate_schedule(schedule)?;
    validate_command(command)?;
    let caller = caller()?;
    Spi::get_one_with_args::<i64>(
        "INSERT INTO procore_sync_job (jobname, schedule, command, username)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (jobname, username) DO UPDATE
         SET schedule = EXCLUDED.schedule, command = EXCLUDED.command
         RETURNING jobid",
        &[
            job_name.into(),
            schedule.into(),
            command.into(),
            caller.name.into(),
        ],
    )?
    .ok_or_else(|| SyncError::Internal("the job was not saved".into()))
}

pub fn schedule_job_in_database(
    job_name: &str,
    schedule: &str,
    command: &str,
    database: Option<&str>,
    username: Option<&str>,
    active: bool,
) -> Result<i64, SyncError> {
    if job_name.trim().is_empty() {
        return Err(SyncError::InvalidArgument("a job needs a name".into()));
    }
    validate_schedule(schedule)?;
    validate_command(command)?;
    let caller = caller()?;
    let username = username.unwrap_or(&caller.name);
    if username != caller.name && !caller.superuser {
        return Err(SyncError::NotAllowed(format!(
            "only a superuser can schedule a job for another role (\"{username}\")"
        )));
    }
    // Role names are compared as stored, so "CaseOwner" and caseowner stay two roles.
    let can_login = Spi::get_one_with_args::<bool>(
        "SELECT (SELECT rolcanlogin FROM pg_catalog.pg_roles WHERE rolname = $1)",
        &[username.into()],
    )?;
    match can_login {
        None => {
            return Err(SyncError::InvalidArgument(format!(
                "role \"{username}\" does not exist"
            )))
        }
        // A job runner connects as the role, which Postgres refuses to a NOLOGIN role.
        Some(false) => {
            return Err(SyncError::InvalidArgument(format!(
                "role \"{username}\" cannot log in, so a job cannot run as it"
            )))
        }
        Some(true) => {}
    }
    let database = match database {
        Some(d) => d.to_string(),
        None => Spi::get_one::<String>("SELECT pg_catalog.current_database()::text")?
            .ok_or_else(|| SyncError::Internal("no current database".into()))?,
    };
    let may_connect = Spi::get_one_with_args::<bool>(
        "SELECT (SELECT pg_catalog.has_database_privilege(r.oid, d.oid, 'CONNECT')
                 FROM pg_catalog.pg_roles r, pg_catalog.pg_database d
                 WHERE r.rolname = $1 AND d.datname = $2)",
        &[username.into(), database.as_str().into()],
    )?;
    match may_connect {
        None => {
            return Err(SyncError::InvalidArgument(format!(
                "database \"{database}\" does not exist"
            )))
        }
        Some(false) => {
            return Err(SyncError::NotAllowed(format!(
                "role \"{username}\" does not have CONNECT privilege on database \"{database}\""
            )))
        }
        Some(true) => {}
    }
    Spi::get_one_with_args::<i64>(
        "INSERT INTO procore_sync_job (jobname, schedule, command, database, username, active)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (jobname, username) DO UPDATE
         SET schedule = EXCLUDED.schedule, command = EXCLUDED.command,
             database = EXCLUDED.database
         RETURNING jobid",
        &[
            job_name.into(),
            schedule.into(),
            command.into(),
            database.as_str().into(),
            username.into(),
            active.into(),
        ],
    )?
    .ok_or_else(|| SyncError::Internal("the job was not saved".into()))
}

/// Removes the caller's job of that name.
pub fn unschedule_by_name(job_name: &str) -> Result<(), SyncError> {
    let caller = caller()?;
    let deleted = optional(Spi::get_one_with_args::<i64>(
        "DELETE FROM procore_sync_job WHERE jobname = $1 AND username = $2 RETURNING jobid",
        &[job_name.into(), caller.name.clone().into()],
    ))?;
    match deleted {
        Some(_) => Ok(()),
        None => Err(SyncError::UnknownJob(format!(
            "could not find a job named '{job_name}' owned by {}",
            caller.name
        ))),
    }
}

/// Removes a job by id: the caller's own, or any job for a superuser.
pub fn unschedule_by_id(job_id: i64) -> Result<(), SyncError> {
    job_owner(job_id)?;
    Spi::run_with_args(
        "DELETE FROM procore_sync_job WHERE jobid = $1",
        &[job_id.into()],
    )?;
    Ok(())
}

/// The owner of a job the caller may change, or an error saying why not.
fn job_owner(job_id: i64) -> Result<String, SyncError> {
    let caller = caller()?;
    let owner = optional(Spi::get_one_with_args::<String>(
        "SELECT username FROM procore_sync_job WHERE jobid = $1",
        &[job_id.into()],
    ))?;
    match owner {
        None => Err(SyncError::UnknownJob(format!(
            "could not find job {job_id}"
        ))),
        Some(owner) if owner != caller.name && !caller.superuser => Err(SyncError::NotAllowed(
            format!("job {job_id} belongs to role {owner}; only it or a superuser can change it"),
        )),
        Some(owner) => Ok(owner),
    }
}

pub fn alter_job(
    job_id: i64,
    schedule: Option<&str>,
    command: Option<&str>,
    database: Option<&str>,
    username: Option<&str>,
    active: Option<bool>,
) -> Result<(), SyncError> {
    job_owner(job_id)?;
    if let Some(s) = schedule {
        validate_schedule(s)?;
    }
    if let Some(c) = command {
        validate_command(c)?;
    }
    let caller = caller()?;
    if let Some(u) = username {
        if u != caller.name && !caller.superuser {
            return Err(SyncError::NotAllowed(
                "only a superuser can make a job run as another role".into(),
            ));
        }
        let exists = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)",
            &[u.into()],
        )?;
        if exists != Some(true) {
            return Err(SyncError::InvalidArgument(format!(
                "role \"{u}\" does not exist"
            )));
        }
    }
    if let Some(d) = database {
        let exists = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1)",
            &[d.into()],
        )?;
        if exists != Some(true) {
            return Err(SyncError::InvalidArgument(format!(
                "database \"{d}\" does not exist"
            )));
        }
    }
    Spi::run_with_args(
        "UPDATE procore_sync_job
         SET schedule = coalesce($2, schedule), command = coalesce($3, command),
             database = coalesce($4, database), username = coalesce($5, username),
             active = coalesce($6, active)
         WHERE jobid = $1",
        &[
            job_id.into(),
            schedule.into(),
            command.into(),
            database.into(),
            username.into(),
            active.into(),
        ],
    )?;
    Ok(())
}

/// A job as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Job {
    pub jobid: i64,
    pub jobname: String,
    pub schedule: String,
    pub command: String,
    pub database: String,
    pub username: String,
}

pub fn active_jobs() -> Result<Vec<Job>, SyncError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT jobid, coalesce(jobname, ''), schedule, command, database, username
             FROM procore_sync_job WHERE active ORDER BY jobid",
            None,
            &[],
        )?;
        let mut jobs = Vec::new();
        for row in rows {
            jobs.push(Job {
                jobid: row.get(1)?.unwrap_or(0),
                jobname: row.get(2)?.unwrap_or_default(),
                schedule: row.get(3)?.unwrap_or_default(),
                command: row.get(4)?.unwrap_or_default(),
                database: row.get(5)?.unwrap_or_default(),
                username: row.get(6)?.unwrap_or_default(),
            });
        }
        Ok(jobs)
    })
}

/// When each job last started, so a run missed during downtime happens once on start.
pub fn last_start(jobid: i64) -> Result<Option<DateTime<Utc>>, SyncError> {
    Ok(Spi::get_one_with_args::<TimestampWithTimeZone>(
        "SELECT max(start_time) FROM procore_sync_job_run_details WHERE jobid = $1",
        &[jobid.into()],
    )?
    .and_then(timestamps::from_sql))
}

pub fn start_run(job: &Job) -> Result<i64, SyncError> {
    Spi::get_one_with_args::<i64>(
        "INSERT INTO procore_sync_job_run_details
             (jobid, database, username, command, status, start_time, jobname)
         VALUES ($1, $2, $3, $4, 'starting', now(), nullif($5, ''))
         RETURNING runid",
        &[
            job.jobid.into(),
            job.database.as_str().into(),
            job.username.as_str().into(),
            job.command.as_str().into(),
            job.jobname.as_str().into(),
        ],
    )?
    .ok_or_else(|| SyncError::Internal("run not recorded".into()))
}

/// The runner is up: the run is `running` under its pid.
pub fn mark_running(runid: i64, pid: i32) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_job_run_details SET status = 'running', job_pid = $2
         WHERE runid = $1 AND status = 'starting'",
        &[runid.into(), pid.into()],
    )?;
    Ok(())
}

/// Records the end a runner reported.
pub fn finish_run(runid: i64, succeeded: bool, message: &str, pid: i32) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_job_run_details
         SET status = CASE WHEN $2 THEN 'succeeded' ELSE 'failed' END, return_message = $3,
             job_pid = coalesce(job_pid, $4), end_time = now()
         WHERE runid = $1 AND status IN ('starting', 'running')",
        &[runid.into(), succeeded.into(), message.into(), pid.into()],
    )?;
    Ok(())
}

/// Ends a run that never reported its own end (its process is gone).
pub fn fail_run(runid: i64, message: &str) -> Result<(), SyncError> {
    Spi::run_with_args(
        "UPDATE procore_sync_job_run_details
         SET status = 'failed', return_message = $2, end_time = now()
         WHERE runid = $1 AND status IN ('starting', 'running')",
        &[runid.into(), message.into()],
    )?;
    Ok(())
}

/// After a crash or restart no run can still be going: pg_cron leaves such rows `running`
/// forever, which is what operators had to clean by hand.
pub fn fail_interrupted_runs() -> Result<i64, SyncError> {
    Ok(Spi::get_one::<i64>(
        "WITH interrupted AS (
            UPDATE procore_sync_job_run_details
            SET status = 'failed', end_time = now(),
                return_message = 'interrupted: the server or the scheduler restarted during the run'
            WHERE status IN ('starting', 'running')
              AND (job_pid IS NULL OR NOT procore_sync_backend_alive(job_pid))
            RETURNING 1)
         SELECT count(*) FROM interrupted",
    )?
    .unwrap_or(0))
}
