//! A job runner: one background worker per job run, connected as the job's role so the
//! command has exactly that role's rights. Only the runner's own bookkeeping of the run
//! history is done with the extension owner's rights.

use std::ffi::CStr;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;

use super::{in_transaction, LIBRARY};
use crate::errors::SyncError;
use crate::jobs::Job;

pub fn launch(job: &Job, runid: i64) -> Result<DynamicBackgroundWorker, String> {
    let name = format!(
        "procore_sync job {}",
        if job.jobname.is_empty() {
            job.jobid.to_string()
        } else {
            job.jobname.clone()
        }
    );
    let extra = format!("{}\t{}", job.database, job.username);
    if extra.len() >= 128 {
        return Err("database and role names are too long for a job runner".into());
    }
    BackgroundWorkerBuilder::new(&name)
        .set_type("procore_sync job runner")
        .set_library(LIBRARY)
        .set_function("procore_sync_job_runner_main")
        .set_argument(runid.into_datum())
        .set_extra(&extra)
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic()
        .map_err(|_| "could not start a job runner: max_worker_processes is exhausted".to_string())
}

/// Runs `body` with the bootstrap superuser's rights, for the runner's own statements on the
/// extension's tables. A Postgres ERROR inside aborts the transaction, which restores the
/// previous user id by itself.
fn as_extension_owner<R>(body: impl FnOnce() -> R) -> R {
    let (mut user, mut context) = (pg_sys::Oid::INVALID, 0i32);
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            pg_sys::BOOTSTRAP_SUPERUSERID.into(),
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let result = body();
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    result
}

/// The extension's schema for this transaction only, so the job's own command keeps the
/// role's search_path.
fn bookkeeping<R>(body: impl FnOnce() -> Result<R, SyncError>) -> Result<R, SyncError> {
    as_extension_owner(|| {
        Spi::run(
            "SELECT set_config('search_path', quote_ident(n.nspname) || ', pg_catalog', true)
             FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
             WHERE e.extname = 'procore_sync'",
        )?;
        body()
    })
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn procore_sync_job_runner_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let runid = unsafe { i64::from_polymorphic_datum(arg, false, pg_sys::INT8OID) }.unwrap_or(0);
    let Some((database, username)) = BackgroundWorker::get_extra().split_once('\t') else {
        log!("procore_sync job runner started without a job; exiting");
        return;
    };
    // Connecting as the job's role is what limits the command to that role's rights; a
    // dropped role makes this FATAL, which the scheduler records as a failed run.
    BackgroundWorker::connect_worker_to_spi(Some(database), Some(username));

    let command = in_transaction(|| {
        bookkeeping(|| {
            Ok(Spi::get_one_with_args::<String>(
                "UPDATE procore_sync_job_run_details
                 SET status = 'running', job_pid = pg_backend_pid(), start_time = now()
                 WHERE runid = $1 AND status = 'starting'
                 RETURNING command",
                &[runid.into()],
            )?)
        })
    });
    let command = match command {
        Ok(Ok(Some(command))) => command,
        other => {
            log!("procore_sync job runner: run {runid} is not waiting to start: {other:?}");
            return;
        }
    };
    report_activity(&command);
    let outcome = in_transaction(|| run_command(&command));
    let (status, message) = match outcome {
        Ok(message) => ("succeeded", message),
        Err(error) => ("failed", error),
    };
    let recorded = in_transaction(|| {
        bookkeeping(|| {
            Spi::run_with_args(
                "UPDATE procore_sync_job_run_details
                 SET status = $2, return_message = $3, end_time = now()
                 WHERE runid = $1",
                &[runid.into(), status.into(), message.as_str().into()],
            )?;
            Ok(())
        })
    });
    if !matches!(recorded, Ok(Ok(()))) {
        log!("procore_sync job runner: could not record the end of run {runid}");
    }
}

fn report_activity(command: &str) {
    if let Ok(text) = std::ffi::CString::new(command) {
        unsafe {
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr())
        };
    }
}

/// Runs the job's SQL and describes its result like a psql user would want to read it: the
/// value when there is exactly one, otherwise the row count.
fn run_command(command: &str) -> String {
    Spi::connect_mut(|client| match client.update(command, None, &[]) {
        Ok(table) => {
            let rows = table.len();
            let single = unsafe { single_value_text() };
            match (rows, single) {
                (1, Some(value)) => value,
                (n, _) => format!("{n} row{}", if n == 1 { "" } else { "s" }),
            }
        }
        Err(e) => pgrx::error!("{e}"),
    })
}

/// The text of the only column of the only row SPI just returned, if that is the shape.
unsafe fn single_value_text() -> Option<String> {
    let table = pg_sys::SPI_tuptable;
    if table.is_null() || pg_sys::SPI_processed != 1 {
        return None;
    }
    let tupdesc = (*table).tupdesc;
    if tupdesc.is_null() || (*tupdesc).natts != 1 {
        return None;
    }
    let value = pg_sys::SPI_getvalue(*(*table).vals, tupdesc, 1);
    if value.is_null() {
        return Some("NULL".into());
    }
    Some(CStr::from_ptr(value).to_string_lossy().into_owned())
}
