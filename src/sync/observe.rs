//! What operators see: the metrics (counters from shared memory, gauges from the tables)
//! and the status page's contents, gathered in one read-only pass.

use chrono::Utc;

use super::counters;
use crate::data::status;
use crate::errors::SyncError;
use procore_sync_core::metrics::{
    AlertCounts, Metrics, SchedulerLateness, TokenRefreshes, WebhookEvents,
};
use procore_sync_core::status_page::StatusPage;

pub fn metrics() -> Result<Metrics, SyncError> {
    let c = counters::read();
    let queue = status::queue()?;
    let names = status::job_names()?;
    let mut metrics = Metrics {
        queue: queue.counts,
        oldest_due_age_seconds: queue
            .oldest_due
            .map(|at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0),
        users_in_flight: status::users_in_flight()?,
        procore_rate_limited: c.rate_limited,
        records_written: c.records_written,
        token_refreshes: TokenRefreshes {
            ok: c.refreshes_ok,
            failed: c.refreshes_failed,
        },
        scheduler: SchedulerLateness {
            last_tick_seconds: c.scheduler_last_lateness_us as f64 / 1e6,
            ticks: c.scheduler_ticks,
            total_seconds: c.scheduler_lateness_us_total as f64 / 1e6,
        },
        alerts: AlertCounts {
            sent: c.alerts_sent,
            failed: c.alerts_failed,
        },
        webhook_events: WebhookEvents {
            recorded: c.events_recorded,
            duplicate: c.events_duplicate,
            dropped: c.events_dropped,
            done: c.events_done,
            failed: c.events_failed,
        },
        webhook_inbox_backlog: status::inbox_backlog()?,
        ..Metrics::default()
    };
    for (code, n) in c.requests_by_code.iter().enumerate() {
        if *n > 0 {
            metrics.procore_requests.insert(code as u16, *n);
        }
    }
    for (jobid, succeeded, failed) in c.job_runs.iter().filter(|slot| slot.0 != 0) {
        // A deleted job keeps its counts under its id: counters never go back.
        let job = names
            .iter()
            .find(|(id, _)| id == jobid)
            .map_or_else(|| format!("job {jobid}"), |(_, name)| name.clone());
        for (state, n) in [("succeeded", *succeeded), ("failed", *failed)] {
            *metrics
                .job_runs
                .entry((job.clone(), state.to_string()))
                .or_insert(0) += n;
        }
    }
    Ok(metrics)
}

pub fn status_page() -> Result<StatusPage, SyncError> {
    Ok(StatusPage {
        generated_at: Utc::now(),
        users: status::users()?,
        queue: status::queue()?,
        running: status::running()?,
        recent_failures: status::recent_failures()?,
        job_runs: status::job_runs()?,
        webhooks: status::webhooks()?,
        hourly: status::hourly()?,
    })
}
