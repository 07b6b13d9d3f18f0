//! What the operator's Prometheus scrapes from `/metrics`, and what `procore_sync_metrics()`
//! returns as rows: one snapshot of numbers, rendered two ways from the same list of
//! families so the two can never disagree.
//!
//! The extension gathers the numbers (SQL for what the tables hold now, shared-memory
//! counters for what happened since the server started); this module only names and
//! renders them, with no I/O, so the format is tested here with plain `cargo test`.
//!
//! Counters must only ever be fed monotonic values. Prometheus reads a counter that goes
//! down as a restart and adds the whole new value to `rate()` and `increase()`, so a
//! `count(*)` over `procore_sync_job_run_details` or the webhook inbox, which `retention`
//! prunes, would show phantom bursts of activity. Those numbers come from shared-memory
//! counters (reset only by a server restart, which Prometheus handles); what a table holds
//! right now is a gauge.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Queue items by status, as `procore_sync_queue` holds them right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub pending: u64,
    pub processing: u64,
    pub completed: u64,
    pub failed: u64,
}

/// Token refreshes since the server started (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenRefreshes {
    pub ok: u64,
    pub failed: u64,
}

/// Failure alerts (email and JSON webhook) since the server started (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertCounts {
    pub sent: u64,
    pub failed: u64,
}

/// Webhook events since the server started (monotonic), by what became of them: the
/// receiver's answer (`recorded`, `duplicate`, `dropped`) and then the worker's (`done`,
/// `failed`). Not a count of inbox rows, which retention deletes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookEvents {
    pub recorded: u64,
    pub duplicate: u64,
    pub dropped: u64,
    pub done: u64,
    pub failed: u64,
}

/// How late the scheduler's ticks start. The last tick alone hides a bad minute between
/// scrapes, so the sum and count of all ticks ride along: `rate(lateness_seconds_total) /
/// rate(ticks_total)` is the mean lateness over any window, with no histogram to keep in
/// shared memory.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SchedulerLateness {
    /// The last tick's lateness, in seconds (a gauge).
    pub last_tick_seconds: f64,
    /// Ticks since the server started (monotonic).
    pub ticks: u64,
    /// The ticks' lateness added up, in seconds (monotonic: negative lateness counts as 0).
    pub total_seconds: f64,
}

/// One snapshot of everything `/metrics` shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Gauge: queue items by status.
    pub queue: QueueCounts,
    /// Gauge: age of the oldest item that is due and not yet taken; `None` when nothing waits.
    pub oldest_due_age_seconds: Option<f64>,
    /// Gauge: users whose sync is running now, across the workers.
    pub users_in_flight: u64,
    /// Counter: HTTP responses from Procore by status code.
    pub procore_requests: BTreeMap<u16, u64>,
    /// Counter: 429 responses from Procore (also counted under code 429 above).
    pub procore_rate_limited: u64,
    /// Counter: records upserted, by syncs and webhook fetches.
    pub records_written: u64,
    pub token_refreshes: TokenRefreshes,
    /// Counter: finished job runs by (job name, status). Job names are the operator's own
    /// text, so they are escaped like any label value.
    pub job_runs: BTreeMap<(String, String), u64>,
    pub scheduler: SchedulerLateness,
    pub alerts: AlertCounts,
    pub webhook_events: WebhookEvents,
    /// Gauge: webhook events in the inbox still waiting to be done (pending or processing).
    pub webhook_inbox_backlog: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

/// One sample as `procore_sync_metrics()` returns it: the same name, labels and value as the
/// line `/metrics` shows for it.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub name: String,
    pub kind: MetricKind,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

struct Family {
    name: &'static str,
    kind: MetricKind,
    help: &'static str,
    samples: Vec<Sample>,
}

struct Sample {
    labels: Vec<(&'static str, String)>,
    value: f64,
}

impl Family {
    fn new(name: &'static str, kind: MetricKind, help: &'static str) -> Self {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    fn single(name: &'static str, kind: MetricKind, help: &'static str, value: f64) -> Self {
        Family::new(name, kind, help).with(Vec::new(), value)
    }

    fn with(mut self, labels: Vec<(&'static str, String)>, value: f64) -> Self {
        self.samples.push(Sample { labels, value });
        self
    }
}

// Counts become f64 here, exactly up to 2^53: more than any of these reaches.
fn count(n: u64) -> f64 {
    n as f64
}

fn label(name: &'static str, value: impl Into<String>) -> Vec<(&'static str, String)> {
    vec![(name, value.into())]
}

/// Every family, sorted by name. Fixed label sets (queue statuses, outcomes) are always all
/// present, at zero if need be: a series that appears only on the first failure makes
/// `rate()` and `absent()` alerts miss it.
fn families(m: &Metrics) -> Vec<Family> {
    use MetricKind::{Counter, Gauge};

    let mut queue = Family::new(
        "procore_sync_queue_items",
        Gauge,
        "Queue items by status, as procore_sync_queue holds them now.",
    );
    for (status, n) in [
        ("pending", m.queue.pending),
        ("processing", m.queue.processing),
        ("completed", m.queue.completed),
        ("failed", m.queue.failed),
    ] {
        queue = queue.with(label("status", status), count(n));
    }

    let mut requests = Family::new(
        "procore_sync_procore_requests_total",
        Counter,
        "HTTP responses from Procore by status code.",
    );
    for (code, n) in &m.procore_requests {
        requests = requests.with(label("code", code.to_string()), count(*n));
    }

    let mut refreshes = Family::new(
        "procore_sync_token_refreshes_total",
        Counter,
        "OAuth token refreshes by outcome.",
    );
    for (outcome, n) in [
        ("ok", m.token_refreshes.ok),
        ("failed", m.token_refreshes.failed),
    ] {
        refreshes = refreshes.with(label("outcome", outcome), count(n));
    }

    let mut job_runs = Family::new(
        "procore_sync_job_runs_total",
        Counter,
        "Finished runs of scheduled jobs by job name and status.",
    );
    for ((job, status), n) in &m.job_runs {
        job_runs = job_runs.with(
            vec![("job", job.clone()), ("status", status.clone())],
            count(*n),
        );
    }

    let mut alerts = Family::new(
        "procore_sync_alerts_total",
        Counter,
        "Failure alerts (email and webhook) by outcome.",
    );
    for (outcome, n) in [("sent", m.alerts.sent), ("failed", m.alerts.failed)] {
        alerts = alerts.with(label("outcome", outcome), count(n));
    }

    let mut webhook_events = Family::new(
        "procore_sync_webhook_events_total",
        Counter,
        "Procore webhook events by outcome: the receiver's (recorded, duplicate, dropped) and the worker's (done, failed).",
    );
    let w = &m.webhook_events;
    for (outcome, n) in [
        ("recorded", w.recorded),
        ("duplicate", w.duplicate),
        ("dropped", w.dropped),
        ("done", w.done),
        ("failed", w.failed),
    ] {
        webhook_events = webhook_events.with(label("outcome", outcome), count(n));
    }

    let mut all = vec![
        queue,
        Family::single(
            "procore_sync_queue_oldest_due_age_seconds",
            Gauge,
            // 0 rather than no sample when nothing waits: an alert on `> 600` then simply
            // stays quiet instead of seeing the series vanish.
            "Age of the oldest due queue item not yet taken, in seconds (0 when none waits).",
            m.oldest_due_age_seconds.unwrap_or(0.0),
        ),
        Family::single(
            "procore_sync_users_in_flight",
            Gauge,
            "Users whose sync is running now.",
            count(m.users_in_flight),
        ),
        requests,
        Family::single(
            "procore_sync_procore_rate_limited_total",
            Counter,
            "429 Too Many Requests responses from Procore.",
            count(m.procore_rate_limited),
        ),
        Family::single(
            "procore_sync_records_written_total",
            Counter,
            "Records upserted by syncs and webhook fetches.",
            count(m.records_written),
        ),
        refreshes,
        job_runs,
        Family::single(
            "procore_sync_scheduler_last_tick_lateness_seconds",
            Gauge,
            "How late the scheduler's last tick started, in seconds.",
            m.scheduler.last_tick_seconds,
        ),
        Family::single(
            "procore_sync_scheduler_ticks_total",
            Counter,
            "Scheduler ticks.",
            count(m.scheduler.ticks),
        ),
        Family::single(
            "procore_sync_scheduler_lateness_seconds_total",
            Counter,
            "The scheduler ticks' lateness added up, in seconds.",
            // A negative or NaN sum would make the counter go down or vanish.
            if m.scheduler.total_seconds >= 0.0 {
                m.scheduler.total_seconds
            } else {
                0.0
            },
        ),
        alerts,
        webhook_events,
        Family::single(
            "procore_sync_webhook_inbox_backlog",
            Gauge,
            "Webhook events in the inbox not yet done (pending or processing).",
            count(m.webhook_inbox_backlog),
        ),
    ];
    all.sort_by(|a, b| a.name.cmp(b.name));
    all
}

/// `/metrics` in Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4`).
pub fn render_prometheus(m: &Metrics) -> String {
    let mut out = String::new();
    for family in families(m) {
        // Writing to a String cannot fail; the results are ignored for that reason alone.
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind.as_str());
        for sample in &family.samples {
            out.push_str(family.name);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape_label_value(value));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(sample.value));
        }
    }
    out
}

/// The same samples as [`render_prometheus`], one row each, for `procore_sync_metrics()`.
pub fn rows(m: &Metrics) -> Vec<MetricRow> {
    families(m)
        .into_iter()
        .flat_map(|family| {
            let (name, kind) = (family.name, family.kind);
            family.samples.into_iter().map(move |sample| MetricRow {
                name: name.to_string(),
                kind,
                labels: sample
                    .labels
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                value: sample.value,
            })
        })
        .collect()
}

fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

// HELP text escapes only backslash and newline: a quote there is literal in 0.0.4.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

// Go's ParseFloat spellings, which is what Prometheus reads; whole numbers without ".0" so
// counters read as the integers they are.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmetrics_parser::{prometheus::parse_prometheus, PrometheusType, PrometheusValue};

    const HOSTILE_JOB: &str = "a\"b\nc\\d";

    fn sample_metrics() -> Metrics {
        let mut m = Metrics {
            queue: QueueCounts {
                pending: 12,
                processing: 3,
                completed: 4_210,
                failed: 7,
            },
            oldest_due_age_seconds: Some(93.5),
            users_in_flight: 3,
            procore_rate_limited: 9,
            records_written: 1_234_567,
            token_refreshes: TokenRefreshes { ok: 40, failed: 1 },
            scheduler: SchedulerLateness {
                last_tick_seconds: 0.25,
                ticks: 1_440,
                total_seconds: 61.75,
            },
            alerts: AlertCounts { sent: 5, failed: 1 },
            webhook_events: WebhookEvents {
                recorded: 300,
                duplicate: 12,
                dropped: 4,
                done: 290,
                failed: 2,
            },
            webhook_inbox_backlog: 6,
            ..Metrics::default()
        };
        m.procore_requests = BTreeMap::from([(200, 10_000), (404, 3), (429, 9), (500, 2)]);
        m.job_runs = BTreeMap::from([
            (
                (
                    "procore-process-queue-every-minute".to_string(),
                    "succeeded".to_string(),
                ),
                1_439,
            ),
            (
                (
                    "procore-process-queue-every-minute".to_string(),
                    "failed".to_string(),
                ),
                1,
            ),
            ((HOSTILE_JOB.to_string(), "succeeded".to_string()), 2),
        ]);
        m
    }

    fn family_names(text: &str, kind: &str) -> Vec<String> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_once(' '))
            .filter(|(_, k)| *k == kind)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    #[test]
    fn metrics_output_parses_as_prometheus_text() {
        let text = render_prometheus(&sample_metrics());
        let exposition = match parse_prometheus(&text) {
            Ok(e) => e,
            Err(e) => panic!("not Prometheus text ({e:?}):\n{text}"),
        };
        let requests = &exposition.families["procore_sync_procore_requests_total"];
        assert_eq!(requests.family_type, PrometheusType::Counter);
        let ok = requests
            .iter_samples()
            .find(|s| {
                s.get_labelset()
                    .is_ok_and(|l| l.get_label_value("code") == Some("200"))
            })
            .map(|s| s.value.clone());
        match ok {
            Some(PrometheusValue::Counter(c)) => assert_eq!(c.value.as_f64(), 10_000.0),
            other => panic!("code 200: {other:?}"),
        }
        let queue = &exposition.families["procore_sync_queue_items"];
        assert_eq!(queue.family_type, PrometheusType::Gauge);
        assert_eq!(queue.iter_samples().count(), 4);
        assert!(text.ends_with('\n') && !text.ends_with("\n\n"));
    }

    #[test]
    fn metrics_empty_snapshot_parses_with_every_family() {
        let text = render_prometheus(&Metrics::default());
        assert!(parse_prometheus(&text).is_ok(), "{text}");
        // Families without samples (no requests, no job runs yet) still say what they are.
        assert!(text.contains("# TYPE procore_sync_job_runs_total counter\n"));
        assert!(text.contains("# TYPE procore_sync_procore_requests_total counter\n"));
        assert!(text.contains("procore_sync_queue_oldest_due_age_seconds 0\n"));
    }

    #[test]
    fn metrics_hostile_job_name_round_trips() {
        let text = render_prometheus(&sample_metrics());
        assert!(text.contains(r#"job="a\"b\nc\\d""#), "{text}");
        let exposition = match parse_prometheus(&text) {
            Ok(e) => e,
            Err(e) => panic!("not Prometheus text ({e:?}):\n{text}"),
        };
        let jobs: Vec<String> = exposition.families["procore_sync_job_runs_total"]
            .iter_samples()
            .filter_map(|s| {
                s.get_labelset()
                    .ok()
                    .and_then(|l| l.get_label_value("job").map(str::to_string))
            })
            .collect();
        assert!(jobs.iter().any(|j| j == HOSTILE_JOB), "{jobs:?}");
    }

    #[test]
    fn metrics_counters_end_in_total_and_gauges_do_not() {
        let text = render_prometheus(&sample_metrics());
        let counters = family_names(&text, "counter");
        let gauges = family_names(&text, "gauge");
        assert!(
            counters.len() >= 8 && gauges.len() >= 4,
            "{counters:?} {gauges:?}"
        );
        for name in &counters {
            assert!(name.ends_with("_total"), "counter {name}");
        }
        for name in &gauges {
            assert!(!name.ends_with("_total"), "gauge {name}");
        }
        for name in counters.iter().chain(&gauges) {
            assert!(name.starts_with("procore_sync_"), "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        // Nothing but counters and gauges: every TYPE line is one or the other.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(types, counters.len() + gauges.len());
    }

    #[test]
    fn metrics_help_and_type_once_per_family_in_sorted_order() {
        let text = render_prometheus(&sample_metrics());
        let helps: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        assert_eq!(helps, types);
        let mut sorted = helps.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(helps, sorted, "families sorted, none twice");
        // Every sample line belongs to a family announced right before it.
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap_or_default();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert_eq!(name, current, "{line}");
            }
        }
        assert_eq!(text, render_prometheus(&sample_metrics()), "deterministic");
    }

    #[test]
    fn metrics_rows_are_the_rendered_samples() {
        let m = sample_metrics();
        let text = render_prometheus(&m);
        let sample_lines = text.lines().filter(|l| !l.starts_with('#')).count();
        let rows = rows(&m);
        assert_eq!(rows.len(), sample_lines);
        let hostile = rows
            .iter()
            .find(|r| r.name == "procore_sync_job_runs_total" && r.labels[0].1 == HOSTILE_JOB);
        match hostile {
            Some(row) => {
                assert_eq!(row.value, 2.0);
                assert_eq!(row.kind, MetricKind::Counter);
                assert_eq!(
                    row.labels[1],
                    ("status".to_string(), "succeeded".to_string())
                );
            }
            None => panic!("no row for the hostile job: {rows:?}"),
        }
        let lateness = rows
            .iter()
            .find(|r| r.name == "procore_sync_scheduler_last_tick_lateness_seconds");
        assert_eq!(
            lateness.map(|r| (r.kind, r.value)),
            Some((MetricKind::Gauge, 0.25))
        );
    }

    #[test]
    fn metrics_values_use_prometheus_spellings() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(-0.0), "0");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        let m = Metrics {
            scheduler: SchedulerLateness {
                last_tick_seconds: f64::NAN,
                ticks: 1,
                total_seconds: f64::NAN,
            },
            ..Metrics::default()
        };
        let text = render_prometheus(&m);
        assert!(parse_prometheus(&text).is_ok(), "{text}");
        assert!(text.contains("procore_sync_scheduler_lateness_seconds_total 0\n"));
    }
}
