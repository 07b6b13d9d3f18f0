use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::*;
use crate::metrics::QueueCounts;

const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "\"><img src=x onerror=alert(1)>";
const SCRIPT_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";
const IMG_ESCAPED: &str = "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;";

fn now() -> DateTime<Utc> {
    match Utc.with_ymd_and_hms(2026, 12, 2, 12, 34, 56) {
        chrono::LocalResult::Single(t) => t,
        other => panic!("fixed test time: {other:?}"),
    }
}

fn ago(seconds: i64) -> DateTime<Utc> {
    now() - TimeDelta::seconds(seconds)
}

fn user(id: &str) -> UserStatus {
    UserStatus {
        user_id: id.to_string(),
        connected: true,
        last_success: Some(ago(300)),
        last_error: None,
        next_attempt: Some(ago(-240)),
        rate_limit: Some(RateLimitHeadroom {
            remaining: 3_412,
            limit: 3_600,
        }),
    }
}

fn sample_page() -> StatusPage {
    let failing = UserStatus {
        last_error: Some(UserError {
            at: ago(90),
            reason: "Procore answered 503 Service Unavailable after 5 attempts".to_string(),
        }),
        rate_limit: Some(RateLimitHeadroom {
            remaining: 120,
            limit: 3_600,
        }),
        ..user("7d0c2f9e-5b1a-4d53-9a51-0f3e5c1b2a44")
    };
    let disconnected = UserStatus {
        connected: false,
        last_success: None,
        next_attempt: None,
        rate_limit: None,
        ..user("1f5b8a3c-2e7d-4c9a-8b6f-3d2e1c0b9a87")
    };
    let hourly = (0..24)
        .map(|back| HourStats {
            hour: now() - TimeDelta::hours(back),
            syncs_completed: 40 + (back as u64 * 7) % 23,
            records_written: 1_000 + (back as u64 * 3_917) % 9_000,
            failures: if back % 5 == 0 { 3 } else { 0 },
        })
        .collect();
    StatusPage {
        generated_at: now(),
        users: vec![
            user("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
            failing,
            disconnected,
        ],
        queue: QueueStatus {
            counts: QueueCounts {
                pending: 12,
                processing: 3,
                completed: 4_210,
                failed: 7,
            },
            oldest_due: Some(ago(95)),
        },
        running: vec![RunningSync {
            user_id: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".to_string(),
            resource: "rfis".to_string(),
            pages: 14,
            records: 1_312,
            requests: 31,
            started_at: ago(200),
        }],
        recent_failures: vec![SyncFailure {
            user_id: "7d0c2f9e-5b1a-4d53-9a51-0f3e5c1b2a44".to_string(),
            at: ago(90),
            attempts: 5,
            reason: "Procore answered 503 Service Unavailable after 5 attempts".to_string(),
        }],
        job_runs: vec![
            JobRun {
                job: "procore-process-queue-every-minute".to_string(),
                status: "succeeded".to_string(),
                start: ago(56),
                duration: Some(Duration::from_millis(41)),
                message: Some("1 row".to_string()),
            },
            JobRun {
                job: "procore-queue-sync-every-10-minutes".to_string(),
                status: "failed".to_string(),
                start: ago(2_096),
                duration: Some(Duration::from_secs(2)),
                message: Some("ERROR: canceling statement due to statement timeout".to_string()),
            },
        ],
        webhooks: vec![
            CompanyWebhooks {
                company_id: 1_234_567,
                last_delivery: Some(ago(20)),
                pending: 2,
                dropped: 14,
                failed: 0,
                discarded: 0,
            },
            CompanyWebhooks {
                company_id: 7_654_321,
                last_delivery: Some(ago(7_300)),
                pending: 0,
                dropped: 0,
                failed: 1,
                discarded: 3,
            },
        ],
        hourly,
    }
}

fn empty_page() -> StatusPage {
    StatusPage {
        generated_at: now(),
        users: Vec::new(),
        queue: QueueStatus::default(),
        running: Vec::new(),
        recent_failures: Vec::new(),
        job_runs: Vec::new(),
        webhooks: Vec::new(),
        hourly: Vec::new(),
    }
}

fn hostile_page() -> StatusPage {
    let mut page = sample_page();
    for (i, id) in [SCRIPT, IMG].into_iter().enumerate() {
        page.users.push(UserStatus {
            last_error: Some(UserError {
                at: ago(10),
                reason: format!("{SCRIPT} and {IMG}"),
            }),
            ..user(id)
        });
        page.running.push(RunningSync {
            user_id: id.to_string(),
            resource: [IMG, SCRIPT][i].to_string(),
            pages: 1,
            records: 2,
            requests: 3,
            started_at: ago(5),
        });
        page.recent_failures.push(SyncFailure {
            user_id: id.to_string(),
            at: ago(1),
            attempts: 1,
            reason: format!("{IMG}{SCRIPT}"),
        });
        page.job_runs.push(JobRun {
            job: id.to_string(),
            status: [IMG, SCRIPT][i].to_string(),
            start: ago(2),
            duration: None,
            message: Some(format!("{SCRIPT}{IMG}")),
        });
    }
    page
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn status_page_escapes_values_from_procore_and_users() {
    let html = render_html(&hostile_page(), 30);
    assert_eq!(count(&html, "<script"), 0, "{html}");
    assert_eq!(count(&html, "<img"), 0, "{html}");
    // Users, running syncs, failures, jobs: each hostile value shows up, escaped, in text and
    // in the reasons' tooltips.
    assert!(count(&html, SCRIPT_ESCAPED) >= 8, "{html}");
    assert!(count(&html, IMG_ESCAPED) >= 8, "{html}");
    assert!(html.contains(&format!("title=\"{SCRIPT_ESCAPED} and {IMG_ESCAPED}\"")));
    // No attribute was closed early by a value: the only quote-bracket is maud's own.
    assert!(!html.contains("\"><img"));
}

#[test]
fn status_page_loads_nothing_from_outside() {
    for html in [
        render_html(&sample_page(), 30),
        render_html(&hostile_page(), 30),
        render_html(&empty_page(), 30),
    ] {
        for forbidden in [
            "src=\"http",
            "href=\"http",
            "@import",
            "url(",
            "http://",
            "https://",
            "<script",
            "<link",
            "<iframe",
            "<img",
        ] {
            assert!(!html.contains(forbidden), "{forbidden} in the page");
        }
        // Links only move within the page.
        for link in html.split("href=\"").skip(1) {
            assert!(link.starts_with('#'), "link to {link:.40}");
        }
    }
}

#[test]
fn status_page_charts_have_one_bar_per_hour() {
    let mut page = sample_page();
    // Hours left out count as zero; an hour outside the window is ignored; two entries for
    // one hour add up.
    page.hourly = vec![
        HourStats {
            hour: now(),
            syncs_completed: 5,
            records_written: 50,
            failures: 1,
        },
        HourStats {
            hour: now() - TimeDelta::minutes(10),
            syncs_completed: 7,
            records_written: 70,
            failures: 0,
        },
        HourStats {
            hour: now() - TimeDelta::hours(30),
            syncs_completed: 999,
            records_written: 999,
            failures: 999,
        },
    ];
    let html = render_html(&page, 30);
    assert_eq!(count(&html, "<svg "), 3);
    for chart in html.split("<svg ").skip(1) {
        let chart = chart.split("</svg>").next().unwrap_or_default();
        assert_eq!(count(chart, "<rect class=\"bar\""), 24, "{chart}");
        assert_eq!(count(chart, "</rect>"), 24);
    }
    assert!(
        html.contains("2026-12-02T12:00Z: 12 syncs completed"),
        "{html}"
    );
    assert!(html.contains("2026-12-02T11:00Z: 0 syncs completed"));
    assert!(
        html.contains("2026-12-01T13:00Z: 0 failures"),
        "oldest hour shown"
    );
    assert!(!html.contains("999"));
    assert!(!html.contains("2026-12-01T12:00Z"), "25 hours back is out");
}

#[test]
fn status_page_without_users_says_so() {
    let html = render_html(&empty_page(), 30);
    assert!(html.contains("No users connected."), "{html}");
    assert!(html.contains("No sync is running."));
    assert!(html.contains("No failures recorded."));
    assert!(html.contains("No job has run yet."));
    assert!(html.contains("No webhooks registered."));
    assert!(html.contains("none waiting"));
    assert_eq!(count(&html, "<rect class=\"bar\""), 72);

    let mut all_disconnected = empty_page();
    all_disconnected.users.push(UserStatus {
        connected: false,
        ..user("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
    });
    let html = render_html(&all_disconnected, 30);
    assert!(html.contains("No users connected."));
    assert!(html.contains("0 of 1 users connected"));
    assert!(html.contains(">disconnected</span>"));
}

#[test]
fn status_page_refreshes_itself() {
    let html = render_html(&sample_page(), 30);
    assert_eq!(
        count(&html, "<meta http-equiv=\"refresh\" content=\"30\">"),
        1
    );
    assert!(html.contains("refreshed every 30 s"));
    let html = render_html(&sample_page(), 0);
    assert!(
        !html.contains("http-equiv"),
        "0 leaves reloading to the reader"
    );
}

#[test]
fn status_page_reads_as_a_document() {
    let html = render_html(&sample_page(), 30);
    assert!(html.starts_with("<!DOCTYPE html><html lang=\"en\">"));
    assert!(html.contains("<meta charset=\"utf-8\">"));
    assert!(html.contains("<title>procore_sync status</title>"));
    assert!(html.ends_with("</html>"));
    assert_eq!(count(&html, "<h1>"), 1);
    for heading in [
        "Queue",
        "Running syncs",
        "Last 24 hours",
        "Recent failures",
        "Users",
        "Job runs",
        "Webhooks",
    ] {
        assert!(html.contains(&format!("<h2>{heading}</h2>")), "{heading}");
    }
    assert_eq!(count(&html, "<table>"), count(&html, "<table><caption>"));
    assert_eq!(count(&html, "<table>"), 7);
    // Numbers right-aligned, grouped; states as words in colour.
    assert!(html.contains("<td class=\"num\">4\u{202F}210</td>"));
    assert!(html.contains("<span class=\"pill bad\">failed</span>"));
    assert!(html.contains("<span class=\"pill ok\">succeeded</span>"));
    assert!(html.contains("<span class=\"pill bad\">failing</span>"));
    assert!(html.contains("<span class=\"pill warn\">low</span>"));
    assert!(html.contains("<span class=\"pill bad\">needs attention</span>"));
    // Times in UTC ISO 8601 with how long ago, or how soon.
    assert!(html.contains(
        "<time datetime=\"2026-12-02T12:33:26Z\">2026-12-02T12:33:26Z</time> <span class=\"ago\">(1 min ago)</span>"
    ));
    assert!(html.contains("(in 4 min)"));
    assert!(html.contains("(2 h 1 min ago)"));
    // The failing user comes before the healthy one listed first.
    let failing =
        html.find("7d0c2f9e-5b1a-4d53-9a51-0f3e5c1b2a44</td><td><span class=\"pill bad\">");
    let healthy =
        html.find("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d</td><td><span class=\"pill ok\">");
    assert!(
        matches!((failing, healthy), (Some(f), Some(h)) if f < h),
        "{failing:?} {healthy:?}"
    );
}

#[test]
fn status_page_lists_the_latest_failures_and_runs_only() {
    let mut page = empty_page();
    for i in 0..25 {
        page.recent_failures.push(SyncFailure {
            user_id: format!("user-{i:02}"),
            at: ago(i * 60),
            attempts: 1,
            reason: "timeout".to_string(),
        });
        page.job_runs.push(JobRun {
            job: format!("job-{i:02}"),
            status: "succeeded".to_string(),
            start: ago(i * 60),
            duration: None,
            message: None,
        });
    }
    page.recent_failures.reverse();
    let html = render_html(&page, 30);
    assert!(html.contains("The latest failed queue items, newest first (20 shown)"));
    assert!(html.contains("The latest job runs, newest first (20 shown)"));
    assert!(html.contains(">user-00<") && html.contains(">user-19<"));
    assert!(!html.contains(">user-20<") && !html.contains(">job-24<"));
    assert!(
        html.find(">user-00<") < html.find(">user-19<"),
        "newest first"
    );
    assert!(html.contains("not ended"));
}

#[test]
fn status_page_shortens_long_messages_on_character_boundaries() {
    let long = "é".repeat(REASON_TOOLTIP_CHARS + 10);
    let mut page = empty_page();
    page.recent_failures.push(SyncFailure {
        user_id: "u".to_string(),
        at: ago(1),
        attempts: 1,
        reason: long,
    });
    let html = render_html(&page, 30);
    assert!(html.contains(&format!(">{}…</span>", "é".repeat(REASON_CHARS))));
    assert!(html.contains(&format!("title=\"{}…\"", "é".repeat(REASON_TOOLTIP_CHARS))));
    assert_eq!(shorten("short", 10), "short");
}

#[test]
fn status_page_spans_and_numbers() {
    assert_eq!(span(TimeDelta::seconds(-5)), "0 s");
    assert_eq!(span(TimeDelta::seconds(42)), "42 s");
    assert_eq!(span(TimeDelta::seconds(200)), "3 min");
    assert_eq!(span(TimeDelta::seconds(7_500)), "2 h 5 min");
    assert_eq!(span(TimeDelta::seconds(273_600)), "3 d 4 h");
    assert_eq!(run_duration(Duration::from_millis(41)), "41 ms");
    assert_eq!(run_duration(Duration::from_millis(2_345)), "2.3 s");
    assert_eq!(run_duration(Duration::from_secs(200)), "3 min");
    assert_eq!(run_duration(Duration::MAX), span(TimeDelta::MAX));
    assert_eq!(number(0), "0");
    assert_eq!(number(999), "999");
    assert_eq!(number(1_000), "1\u{202F}000");
    assert_eq!(number(1_234_567), "1\u{202F}234\u{202F}567");
}

/// Leaves the sample page in target/ for a person to open in a browser.
#[test]
fn status_page_sample_written_for_people() {
    let html = render_html(&sample_page(), 30);
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    // Best effort: a read-only checkout must not fail the suite over a convenience file.
    if std::fs::create_dir_all(&target).is_ok() {
        let _ = std::fs::write(target.join("status-sample.html"), html);
    }
}
