//! A job runner: one background worker per job run, connected as the job's role so the
//! command has exactly that role's rights. The runner never touches the extension's tables:
//! the scheduler hands it the command and reads back the result through two files in the
//! data directory, and records the run history from its own session. Nothing the job's SQL
//! leaves behind in its session (temporary tables, triggers, settings) can ever meet a
//! statement that runs with more rights than the job's role.

use std::ffi::CStr;
use std::fs;
use std::path::PathBuf;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker};
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::jobs::Job;
use crate::data::transaction::in_transaction;
use crate::sync::launch::LIBRARY;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct RunResult {
    pub succeeded: bool,
    pub message: String,
    pub pid: i32,
}

fn runs_dir() -> PathBuf {
    let data_dir = unsafe { CStr::from_ptr(pg_sys::DataDir) }
        .to_string_lossy()
        .into_owned();
    PathBuf::from(data_dir).join("pg_procore_sync").join("runs")
}

fn command_path(runid: i64) -> PathBuf {
    runs_dir().join(format!("{runid}.command"))
}

fn result_path(runid: i64) -> PathBuf {
    runs_dir().join(format!("{runid}.result"))
}

/// Writes a file whole or not at all: a crash never leaves half a command or result.
fn write_atomically(path: &PathBuf, body: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let temp = path.with_extension("tmp");
    fs::write(&temp, body)?;
    fs::rename(&temp, path)
}

pub fn launch(job: &Job, runid: i64) -> Result<DynamicBackgroundWorker, String> {
    let label = if job.jobname.is_empty() {
        job.jobid.to_string()
    } else {
        job.jobname.clone()
    };
    let extra = format!("{}\t{}", job.database, job.username);
    if extra.len() >= 128 {
        return Err("database and role names are too long for a job runner".into());
    }
    write_atomically(&command_path(runid), job.command.as_bytes())
        .map_err(|e| format!("could not hand the command to a job runner: {e}"))?;
    BackgroundWorkerBuilder::new(&format!("procore_sync job {label}"))
        .set_type("procore_sync job runner")
        .set_library(LIBRARY)
        .set_function("procore_sync_job_runner_main")
        .set_argument(runid.into_datum())
        .set_extra(&extra)
        .enable_spi_access()
        .set_restart_time(None)
        // The postmaster wakes the scheduler when the runner starts and when it exits.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .map_err(|_| "could not start a job runner: max_worker_processes is exhausted".to_string())
}

/// The result a finished runner left, if any; its files are removed either way.
pub fn take_result(runid: i64) -> Option<RunResult> {
    let result = fs::read(result_path(runid))
        .ok()
        .and_then(|body| serde_json::from_slice(&body).ok());
    let _ = fs::remove_file(result_path(runid));
    let _ = fs::remove_file(command_path(runid));
    result
}

/// Leftovers of runs that a crash interrupted.
pub fn clear_run_files() {
    let _ = fs::remove_dir_all(runs_dir());
}

unsafe extern "C-unwind" {
    /// Postgres's backend SIGTERM handler (postgres.c), which pgrx only wraps for calling.
    #[link_name = "die"]
    fn postgres_die(signal: i32);
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn procore_sync_job_runner_main(arg: pg_sys::Datum) {
    // Postgres's own SIGTERM handling, as in any backend: pg_terminate_backend() and a fast
    // shutdown stop the job's SQL at once.
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(postgres_die));
        // The run shows as `running` as soon as this process exists; a pg_cancel_backend
        // that arrives while it still connects is held, and cancels the command itself.
        pg_sys::QueryCancelHoldoffCount += 1;
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    let runid = unsafe { i64::from_polymorphic_datum(arg, false, pg_sys::INT8OID) }.unwrap_or(0);
    let Some((database, username)) = BackgroundWorker::get_extra().split_once('\t') else {
        log!("procore_sync job runner started without a job; exiting");
        return;
    };
    let Ok(command) = fs::read_to_string(command_path(runid)) else {
        log!("procore_sync job runner: run {runid} has no command; exiting");
        return;
    };
    // Connecting as the job's role is what limits the command to that role's rights; a
    // dropped role makes this FATAL, which the scheduler records as a failed run.
    BackgroundWorker::connect_worker_to_spi(Some(database), Some(username));
    report_activity(&command);
    let outcome = in_transaction(|| {
        unsafe { pg_sys::QueryCancelHoldoffCount -= 1 };
        Ok::<_, String>(run_command(&command))
    });
    let result = RunResult {
        succeeded: outcome.is_ok(),
        message: outcome.unwrap_or_else(|error| error),
        pid: unsafe { pg_sys::MyProcPid },
    };
    match serde_json::to_vec(&result) {
        Ok(body) => {
            if let Err(e) = write_atomically(&result_path(runid), &body) {
                log!("procore_sync job runner: could not record the end of run {runid}: {e}");
            }
        }
        Err(e) => log!("procore_sync job runner: could not record the end of run {runid}: {e}"),
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
