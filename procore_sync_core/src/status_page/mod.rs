//! The live status page that the listener serves at `/`: one self-contained HTML page an
//! operator can open in a browser during an incident, with no I/O here.
//!
//! The page is served from inside the database server, often to whoever can reach the
//! listener, and shows text that Procore and users wrote (error messages, user ids, job names
//! and their messages, resource names). So every such value goes through maud, which escapes
//! whatever is spliced into a template, and the page loads nothing from anywhere: inline CSS,
//! charts drawn here as inline SVG, no script, refreshed by `<meta http-equiv="refresh">`.
//! An operator behind a firewall gets the whole page, and a hostile error message gets no
//! network request and no markup.

mod chart;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::metrics::QueueCounts;

/// How many recent failures and job runs the page lists: enough to see a pattern, short
/// enough to read; the tables keep the rest.
pub const RECENT_ROWS: usize = 20;

// Long messages (an HTML error page Procore sent instead of JSON) would push the tables off
// the screen; the cell shows the start and its tooltip a longer part.
const REASON_CHARS: usize = 300;
const REASON_TOOLTIP_CHARS: usize = 2_000;

/// Everything the status page shows, gathered by the extension in one go.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPage {
    pub generated_at: DateTime<Utc>,
    pub users: Vec<UserStatus>,
    pub queue: QueueStatus,
    pub running: Vec<RunningSync>,
    /// Failed queue items; the page shows the [`RECENT_ROWS`] latest, whatever the order.
    pub recent_failures: Vec<SyncFailure>,
    /// Job runs; the page shows the [`RECENT_ROWS`] latest, whatever the order.
    pub job_runs: Vec<JobRun>,
    pub webhooks: Vec<CompanyWebhooks>,
    /// Per hour. Hours left out count as zero, hours outside the last 24 are ignored, and
    /// two entries for one hour add up, so a `GROUP BY date_trunc('hour', …)` is enough.
    pub hourly: Vec<HourStats>,
}

/// One app user, as `procore_sync_user_status` describes them.
#[derive(Debug, Clone, PartialEq)]
pub struct UserStatus {
    pub user_id: String,
    pub connected: bool,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<UserError>,
    pub next_attempt: Option<DateTime<Utc>>,
    /// Procore's `X-Rate-Limit-Remaining` / `X-Rate-Limit-Limit` at the user's last request.
    pub rate_limit: Option<RateLimitHeadroom>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserError {
    pub at: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitHeadroom {
    pub remaining: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueStatus {
    pub counts: QueueCounts,
    /// When the oldest due item not yet taken became due.
    pub oldest_due: Option<DateTime<Utc>>,
}

/// A sync running now, as `procore_sync_running` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningSync {
    pub user_id: String,
    pub resource: String,
    pub pages: u64,
    pub records: u64,
    pub requests: u64,
    pub started_at: DateTime<Utc>,
}

/// A failed queue item.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncFailure {
    pub user_id: String,
    pub at: DateTime<Utc>,
    pub attempts: u32,
    pub reason: String,
}

/// One row of `procore_sync_job_run_details`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRun {
    pub job: String,
    /// pg_cron's words: starting, running, sending, connecting, succeeded, failed.
    pub status: String,
    pub start: DateTime<Utc>,
    /// `None` while the run has not ended.
    pub duration: Option<Duration>,
    pub message: Option<String>,
}

/// One company's hook, as `procore_sync_webhooks` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompanyWebhooks {
    pub company_id: i64,
    pub last_delivery: Option<DateTime<Utc>>,
    pub pending: u64,
    pub dropped: u64,
    pub failed: u64,
    /// Deliveries Procore discarded after retrying, as the backstop last found.
    pub discarded: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourStats {
    /// Any instant in the hour; it is truncated to the hour.
    pub hour: DateTime<Utc>,
    pub syncs_completed: u64,
    pub records_written: u64,
    pub failures: u64,
}

/// The page, as `text/html; charset=utf-8`. `refresh_seconds` is how often the browser
/// reloads it; 0 leaves reloading to the reader.
pub fn render_html(page: &StatusPage, refresh_seconds: u32) -> String {
    let now = page.generated_at;
    let hours = last_24_hours(page);
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh_seconds > 0 {
                    meta http-equiv="refresh" content=(refresh_seconds);
                }
                title { "procore_sync status" }
                style { (PreEscaped(include_str!("style.css"))) }
            }
            body {
                header {
                    h1 { "procore_sync status" }
                    p {
                        "Generated " (when(now, now))
                        @if refresh_seconds > 0 {
                            ", refreshed every " (refresh_seconds) " s"
                        }
                        ". All times UTC."
                    }
                    nav aria-label="Sections" {
                        a href="#queue" { "Queue" }
                        a href="#running" { "Running" }
                        a href="#last-24-hours" { "Last 24 hours" }
                        a href="#failures" { "Failures" }
                        a href="#users" { "Users" }
                        a href="#jobs" { "Jobs" }
                        a href="#webhooks" { "Webhooks" }
                    }
                }
                main {
                    (queue_section(&page.queue, now))
                    (running_section(&page.running, now))
                    (hours_section(&hours))
                    (failures_section(&page.recent_failures, now))
                    (users_section(&page.users, now))
                    (jobs_section(&page.job_runs, now))
                    (webhooks_section(&page.webhooks, now))
                }
            }
        }
    }
    .into_string()
}

/// Colours for states; every use also prints the state as a word, so the page reads the
/// same to someone who cannot tell red from green, and on paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tone {
    Ok,
    Info,
    Warn,
    Bad,
    Idle,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Ok => "pill ok",
            Tone::Info => "pill info",
            Tone::Warn => "pill warn",
            Tone::Bad => "pill bad",
            Tone::Idle => "pill idle",
        }
    }
}

fn pill(tone: Tone, label: &str) -> Markup {
    html! { span class=(tone.class()) { (label) } }
}

fn queue_section(queue: &QueueStatus, now: DateTime<Utc>) -> Markup {
    let c = &queue.counts;
    let rows = [
        ("pending", Tone::Info, c.pending),
        ("processing", Tone::Info, c.processing),
        ("completed", Tone::Ok, c.completed),
        ("failed", Tone::Bad, c.failed),
    ];
    html! {
        section id="queue" {
            h2 { "Queue" }
            table {
                caption { "Queue items by status" }
                thead { tr { th scope="col" { "Status" } th.num scope="col" { "Items" } } }
                tbody {
                    @for (status, tone, n) in rows {
                        tr { td { (pill(tone, status)) } td.num { (number(n)) } }
                    }
                }
            }
            p {
                "Oldest due item: "
                @match queue.oldest_due {
                    Some(t) => { "due since " (when(t, now)) },
                    None => { "none waiting." },
                }
            }
        }
    }
}

fn running_section(running: &[RunningSync], now: DateTime<Utc>) -> Markup {
    let mut running: Vec<&RunningSync> = running.iter().collect();
    // Longest-running first: a stuck sync is what someone opening this page looks for.
    running.sort_by(|a, b| (a.started_at, &a.user_id).cmp(&(b.started_at, &b.user_id)));
    html! {
        section id="running" {
            h2 { "Running syncs" }
            @if running.is_empty() {
                p.empty { "No sync is running." }
            } @else {
                table {
                    caption { (running.len()) " running now" }
                    thead {
                        tr {
                            th scope="col" { "User" }
                            th scope="col" { "Resource" }
                            th.num scope="col" { "Pages" }
                            th.num scope="col" { "Records" }
                            th.num scope="col" { "Requests" }
                            th.num scope="col" { "Running for" }
                            th scope="col" { "Started" }
                        }
                    }
                    tbody {
                        @for sync in running {
                            tr {
                                td.id { (sync.user_id) }
                                td { (sync.resource) }
                                td.num { (number(sync.pages)) }
                                td.num { (number(sync.records)) }
                                td.num { (number(sync.requests)) }
                                td.num { (span(now - sync.started_at)) }
                                td { (when(sync.started_at, now)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One hour of the last 24, oldest first, the current hour last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hour {
    start: DateTime<Utc>,
    syncs_completed: u64,
    records_written: u64,
    failures: u64,
}

fn last_24_hours(page: &StatusPage) -> Vec<Hour> {
    let current = truncate_to_hour(page.generated_at);
    let mut hours: Vec<Hour> = (0..24)
        .rev()
        .map(|back| Hour {
            start: current - TimeDelta::hours(back),
            syncs_completed: 0,
            records_written: 0,
            failures: 0,
        })
        .collect();
    for stats in &page.hourly {
        let start = truncate_to_hour(stats.hour);
        if let Some(hour) = hours.iter_mut().find(|h| h.start == start) {
            hour.syncs_completed = hour.syncs_completed.saturating_add(stats.syncs_completed);
            hour.records_written = hour.records_written.saturating_add(stats.records_written);
            hour.failures = hour.failures.saturating_add(stats.failures);
        }
    }
    hours
}

fn truncate_to_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    // Only fails for instants near the ends of chrono's range, which no clock produces.
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

fn hours_section(hours: &[Hour]) -> Markup {
    let series = |pick: fn(&Hour) -> u64| -> Vec<(DateTime<Utc>, u64)> {
        hours.iter().map(|h| (h.start, pick(h))).collect()
    };
    let total = |pick: fn(&Hour) -> u64| hours.iter().map(pick).fold(0u64, u64::saturating_add);
    let charts = [
        (
            "Syncs completed",
            chart::Style::Plain,
            series(|h| h.syncs_completed),
            total(|h| h.syncs_completed),
        ),
        (
            "Records written",
            chart::Style::Plain,
            series(|h| h.records_written),
            total(|h| h.records_written),
        ),
        (
            "Failures",
            chart::Style::Failures,
            series(|h| h.failures),
            total(|h| h.failures),
        ),
    ];
    html! {
        section id="last-24-hours" {
            h2 { "Last 24 hours" }
            div.charts {
                @for (label, style, points, sum) in &charts {
                    figure {
                        (chart::bars(label, *style, points))
                        figcaption { (label) " per hour: " (number(*sum)) " in all" }
                    }
                }
            }
            details {
                summary { "The same numbers as a table" }
                table {
                    caption { "Per hour, last 24 hours" }
                    thead {
                        tr {
                            th scope="col" { "Hour starting" }
                            th.num scope="col" { "Syncs completed" }
                            th.num scope="col" { "Records written" }
                            th.num scope="col" { "Failures" }
                        }
                    }
                    tbody {
                        @for hour in hours.iter().rev() {
                            tr {
                                td { time datetime=(iso(hour.start)) { (iso(hour.start)) } }
                                td.num { (number(hour.syncs_completed)) }
                                td.num { (number(hour.records_written)) }
                                td.num { (number(hour.failures)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn failures_section(failures: &[SyncFailure], now: DateTime<Utc>) -> Markup {
    let mut recent: Vec<&SyncFailure> = failures.iter().collect();
    recent.sort_by(|a, b| (b.at, &b.user_id).cmp(&(a.at, &a.user_id)));
    recent.truncate(RECENT_ROWS);
    html! {
        section id="failures" {
            h2 { "Recent failures" }
            @if recent.is_empty() {
                p.empty { "No failures recorded." }
            } @else {
                table {
                    caption { "The latest failed queue items, newest first (" (recent.len()) " shown)" }
                    thead {
                        tr {
                            th scope="col" { "Failed" }
                            th scope="col" { "User" }
                            th.num scope="col" { "Attempts" }
                            th scope="col" { "Reason" }
                        }
                    }
                    tbody {
                        @for failure in recent {
                            tr {
                                td { (when(failure.at, now)) }
                                td.id { (failure.user_id) }
                                td.num { (failure.attempts) }
                                td.reason { (reason(&failure.reason)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What a user's row says about them, in one word.
fn user_state(user: &UserStatus) -> (Tone, &'static str) {
    let failing = match (&user.last_error, user.last_success) {
        (Some(error), Some(success)) => error.at > success,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !user.connected {
        (Tone::Idle, "disconnected")
    } else if failing {
        (Tone::Bad, "failing")
    } else if user.last_success.is_some() {
        (Tone::Ok, "ok")
    } else {
        (Tone::Idle, "never synced")
    }
}

fn users_section(users: &[UserStatus], now: DateTime<Utc>) -> Markup {
    let mut sorted: Vec<&UserStatus> = users.iter().collect();
    // Failing users first, so they are on screen without scrolling past the healthy ones.
    sorted.sort_by(|a, b| {
        let rank = |u: &UserStatus| u8::from(user_state(u).0 != Tone::Bad);
        (rank(a), &a.user_id).cmp(&(rank(b), &b.user_id))
    });
    let connected = users.iter().filter(|u| u.connected).count();
    html! {
        section id="users" {
            h2 { "Users" }
            @if connected == 0 {
                p.empty { "No users connected." }
            }
            @if !sorted.is_empty() {
                table {
                    caption { (number(connected as u64)) " of " (number(sorted.len() as u64)) " users connected" }
                    thead {
                        tr {
                            th scope="col" { "User" }
                            th scope="col" { "State" }
                            th scope="col" { "Last success" }
                            th scope="col" { "Last error" }
                            th scope="col" { "Reason" }
                            th scope="col" { "Next attempt" }
                            th.num scope="col" { "Rate-limit headroom" }
                        }
                    }
                    tbody {
                        @for user in sorted {
                            @let (tone, state) = user_state(user);
                            tr {
                                td.id { (user.user_id) }
                                td { (pill(tone, state)) }
                                td { (when_or(user.last_success, now, "never")) }
                                @match &user.last_error {
                                    Some(error) => {
                                        td { (when(error.at, now)) }
                                        td.reason { (reason(&error.reason)) }
                                    },
                                    None => { td { "none" } td {} },
                                }
                                td { (when_or(user.next_attempt, now, "not scheduled")) }
                                td.num { (headroom(user.rate_limit)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn headroom(rate_limit: Option<RateLimitHeadroom>) -> Markup {
    match rate_limit {
        None => html! { "unknown" },
        Some(RateLimitHeadroom { remaining, limit }) => {
            // Below a tenth of the limit the client is already slowing down for it (§4.5).
            let low = limit > 0 && remaining.saturating_mul(10) < limit;
            html! {
                (number(remaining)) " / " (number(limit))
                @if low { " " (pill(Tone::Warn, "low")) }
            }
        }
    }
}

fn job_tone(status: &str) -> Tone {
    match status {
        "succeeded" => Tone::Ok,
        "failed" => Tone::Bad,
        "starting" | "running" | "sending" | "connecting" => Tone::Info,
        _ => Tone::Idle,
    }
}

fn jobs_section(runs: &[JobRun], now: DateTime<Utc>) -> Markup {
    let mut recent: Vec<&JobRun> = runs.iter().collect();
    recent.sort_by(|a, b| (b.start, &b.job).cmp(&(a.start, &a.job)));
    recent.truncate(RECENT_ROWS);
    html! {
        section id="jobs" {
            h2 { "Job runs" }
            @if recent.is_empty() {
                p.empty { "No job has run yet." }
            } @else {
                table {
                    caption { "The latest job runs, newest first (" (recent.len()) " shown)" }
                    thead {
                        tr {
                            th scope="col" { "Job" }
                            th scope="col" { "Status" }
                            th scope="col" { "Started" }
                            th.num scope="col" { "Duration" }
                            th scope="col" { "Message" }
                        }
                    }
                    tbody {
                        @for run in recent {
                            tr {
                                td { (run.job) }
                                td { (pill(job_tone(&run.status), &run.status)) }
                                td { (when(run.start, now)) }
                                td.num {
                                    @match run.duration {
                                        Some(d) => { (run_duration(d)) },
                                        None => { "not ended" },
                                    }
                                }
                                td.reason {
                                    @if let Some(message) = &run.message { (reason(message)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn webhooks_section(hooks: &[CompanyWebhooks], now: DateTime<Utc>) -> Markup {
    let mut hooks: Vec<&CompanyWebhooks> = hooks.iter().collect();
    hooks.sort_by_key(|h| h.company_id);
    html! {
        section id="webhooks" {
            h2 { "Webhooks" }
            @if hooks.is_empty() {
                p.empty { "No webhooks registered." }
            } @else {
                table {
                    caption { "Procore webhooks per company" }
                    thead {
                        tr {
                            th.num scope="col" { "Company" }
                            th scope="col" { "State" }
                            th scope="col" { "Last delivery" }
                            th.num scope="col" { "Pending" }
                            th.num scope="col" { "Dropped" }
                            th.num scope="col" { "Failed" }
                            th.num scope="col" { "Discarded by Procore" }
                        }
                    }
                    tbody {
                        @for hook in hooks {
                            tr {
                                td.num { (hook.company_id) }
                                td {
                                    // Failed and discarded events are what the backstop has to
                                    // make up for; dropped ones were never ours to sync.
                                    @if hook.failed > 0 || hook.discarded > 0 {
                                        (pill(Tone::Bad, "needs attention"))
                                    } @else if hook.last_delivery.is_none() {
                                        (pill(Tone::Idle, "no delivery yet"))
                                    } @else {
                                        (pill(Tone::Ok, "ok"))
                                    }
                                }
                                td { (when_or(hook.last_delivery, now, "never")) }
                                td.num { (number(hook.pending)) }
                                td.num { (number(hook.dropped)) }
                                td.num { (number(hook.failed)) }
                                td.num { (number(hook.discarded)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An instant as UTC ISO 8601 and how long ago (or how soon) it is.
fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    let relative = if t <= now {
        format!("{} ago", span(now - t))
    } else {
        format!("in {}", span(t - now))
    };
    html! { time datetime=(iso(t)) { (iso(t)) } " " span.ago { "(" (relative) ")" } }
}

fn when_or(t: Option<DateTime<Utc>>, now: DateTime<Utc>, none: &str) -> Markup {
    match t {
        Some(t) => when(t, now),
        None => html! { (none) },
    }
}

/// A length of time in its two largest units: "42 s", "3 min", "2 h 5 min", "3 d 4 h".
fn span(d: TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days} d {hours} h")
    } else if hours > 0 {
        format!("{hours} h {minutes} min")
    } else if minutes > 0 {
        format!("{minutes} min")
    } else {
        format!("{seconds} s")
    }
}

/// A job run's length: most runs take milliseconds, which [`span`] would show as "0 s".
fn run_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d < Duration::from_secs(60) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        span(TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX))
    }
}

/// Thousands grouped with a narrow no-break space (U+202F), which reads the same in every
/// locale and never wraps.
fn number(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 * 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202F}');
        }
        out.push(c);
    }
    out
}

fn shorten(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
        None => Cow::Borrowed(text),
    }
}

/// A message from Procore or a user: escaped by maud like everything spliced, shortened on
/// screen with a longer part in the tooltip.
fn reason(text: &str) -> Markup {
    let shown = shorten(text, REASON_CHARS);
    let tooltip = shorten(text, REASON_TOOLTIP_CHARS);
    html! { span title=(tooltip) { (shown) } }
}
