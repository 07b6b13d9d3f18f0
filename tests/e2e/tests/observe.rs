//! The listener's `GET /metrics` and `GET /` and `procore_sync_metrics()` end to end (README,
//! "Status page and metrics"): a real cluster with the worker preloaded and the built-in
//! listener on a free port, the Procore stand-in, and Debian's headless Chromium.
//!
//! Every test switches the jobs off, so nothing runs unless the test starts it: a sync is
//! `procore_sync_user()`, a job run is a job the test schedules. Counters are checked against
//! what the stand-in's request log and `procore_sync_job_run_details` say happened between
//! two scrapes, exactly. Tokens are never printed: failure output is scrubbed of every secret
//! the stand-in issued.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{PrometheusType, PrometheusValue};
use procore_sync_e2e::observe::{
    dump_dom, element_names, get, non_loopback_ipv4, png_dimensions, screenshot, target_dir,
};
use procore_sync_e2e::webhooks::{Reply, WEBHOOK_PATH};
use procore_sync_e2e::{wait_until, Env, LoggedRequest};
use serde_json::{json, Value};
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

/// A job name that is markup, shown on the page and used as a label value.
const HOSTILE_JOB: &str = "<script>alert(1)</script>";
/// What that job's command raises: its runs fail with this in `return_message`.
const HOSTILE_MESSAGE: &str = "<b>bold</b> & <img src=x onerror=alert(2)>";
const HOSTILE_COMMAND: &str =
    "DO $$BEGIN RAISE EXCEPTION '<b>bold</b> & <img src=x onerror=alert(2)>'; END$$";

/// The families the README promises.
const FAMILIES: [&str; 14] = [
    "procore_sync_procore_requests_total",
    "procore_sync_procore_rate_limited_total",
    "procore_sync_records_written_total",
    "procore_sync_token_refreshes_total",
    "procore_sync_job_runs_total",
    "procore_sync_scheduler_ticks_total",
    "procore_sync_scheduler_lateness_seconds_total",
    "procore_sync_scheduler_last_tick_lateness_seconds",
    "procore_sync_webhook_events_total",
    "procore_sync_queue_items",
    "procore_sync_queue_oldest_due_age_seconds",
    "procore_sync_users_in_flight",
    "procore_sync_webhook_inbox_backlog",
    "procore_sync_alerts_total",
];

// ---------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------

/// A small world: one company and one project per login, 6 records per resource at 4 a page,
/// so every list takes two requests. A client secret unique to the test.
fn world(users: usize) -> Value {
    json!({
        "users": users,
        "companies_per_user": 1,
        "projects_per_company": 1,
        "records_per_resource": 6,
        "per_page_default": 4,
        "rate_limit_spike": 100000,
        "rate_limit_hour": 1000000,
        "client_secret": format!("cs-{}", Uuid::new_v4().simple()),
    })
}

/// The stand-in's company of login `user-N`.
fn company_of(user_n: i64) -> i64 {
    user_n * 1000 + 1
}

/// A port free on `ip` a moment ago.
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot listen on {ip} here: {e}"))
}

struct O {
    env: Env,
    port: u16,
    users: Vec<(Uuid, String)>,
    /// Secrets the test made itself (the status token), redacted like the stand-in's.
    own_secrets: std::cell::RefCell<Vec<String>>,
}

/// What `procore_sync_user()` returned.
#[derive(Debug)]
struct Sync {
    status: String,
    records_written: i64,
    error_message: Option<String>,
}

/// A cluster after `populate`: what the page must show.
struct Populated {
    failure_reason: String,
    hook_secret: String,
}

impl O {
    /// The stand-in with `world`, a cluster with the listener on `listen_ip` and a free port,
    /// every job switched off, the catalog's page size the world's, logins `user-1..=users`
    /// connected, and the listener answering HTTP.
    fn start(world: Value, listen_ip: impl Into<IpAddr>, users: usize) -> O {
        let per_page = world["per_page_default"].as_i64().unwrap_or(100) as i32;
        let listen_ip = listen_ip.into();
        let port = free_port(listen_ip);
        let listen = SocketAddr::new(listen_ip, port).to_string();
        let env = Env::new(
            world,
            &[
                ("procore_sync.max_workers", "2"),
                ("procore_sync.http_listen", &listen),
            ],
        )
        .expect("start the stand-in and the cluster");
        let mut o = O {
            env,
            port,
            users: Vec::new(),
            own_secrets: Default::default(),
        };
        let mut c = o.client();
        o.ok(
            c.batch_execute(
                "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job",
            )
            .map_err(Into::into),
            "switch the jobs off",
        );
        o.ok(
            c.execute(
                "UPDATE procore_sync_resource SET per_page = $1 WHERE paginated",
                &[&per_page],
            )
            .map_err(Into::into),
            "set the catalog's page size",
        );
        o.users = o.ok(o.env.connect_users(users), "connect users");
        let url = o.local(WEBHOOK_PATH);
        o.wait(
            "the listener to answer HTTP",
            || Ok(get(&url, None).is_ok()),
        );
        o
    }

    fn client(&self) -> postgres::Client {
        self.ok(self.env.client(), "connect to the cluster")
    }

    fn user(&self, n: usize) -> Uuid {
        self.users[n - 1].0
    }

    fn local(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every secret the stand-in issued (tokens, codes, client secret) and the test's own,
    /// replaced.
    fn redact(&self, text: &str) -> String {
        self.env.standin.redact(text, &self.own_secrets.borrow())
    }

    /// Sets `procore_sync.http_status_token` by `ALTER SYSTEM` and a reload, as an operator
    /// would; the value is redacted from failure output from now on.
    fn set_status_token(&self, token: &str) {
        self.own_secrets.borrow_mut().push(token.to_string());
        self.ok(
            self.env
                .cluster
                .set_setting("procore_sync.http_status_token", token),
            "ALTER SYSTEM SET procore_sync.http_status_token",
        );
    }

    fn fail(&self, what: &str, e: anyhow::Error) -> ! {
        panic!(
            "{what}: {}\n--- queue ---\n{}\n--- server log (tail, secrets redacted) ---\n{}",
            self.redact(&format!("{e:#}")),
            self.queue_dump(),
            self.redact(&self.env.cluster.log_tail(60))
        );
    }

    fn ok<R>(&self, r: Result<R>, what: &str) -> R {
        r.unwrap_or_else(|e| self.fail(what, e))
    }

    fn wait(&self, what: &str, f: impl FnMut() -> Result<bool>) {
        let r = wait_until(TIMEOUT, POLL, what, f);
        self.ok(r, what)
    }

    fn queue_dump(&self) -> String {
        let Ok(mut c) = self.env.client() else {
            return "(cluster unreachable)".into();
        };
        procore_sync_e2e::query_table(
            &mut c,
            "SELECT id, user_id, status, attempts, records_written, requests_made, \
             left(error_message, 160) AS error_message FROM procore_sync_queue ORDER BY id",
        )
        .map(|t| self.redact(&t))
        .unwrap_or_else(|e| format!("(queue unreadable: {e})"))
    }

    /// `GET /metrics` from loopback: 200, Prometheus text 0.0.4, parsed.
    fn scrape(&self) -> Scrape {
        let reply = self.ok(get(&self.local("/metrics"), None), "GET /metrics");
        assert_eq!(
            reply.status,
            200,
            "GET /metrics from loopback: {}",
            self.redact(&reply.body)
        );
        assert!(
            reply.content_type.starts_with("text/plain")
                && reply.content_type.contains("version=0.0.4"),
            "GET /metrics is Prometheus text 0.0.4, not {:?}",
            reply.content_type
        );
        Scrape::parse(reply.body).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `procore_sync_user()` for login `user-n`.
    fn sync(&self, c: &mut postgres::Client, n: usize) -> Sync {
        let row = self.ok(
            c.query_one(
                "SELECT status, records_written, error_message FROM procore_sync_user($1)",
                &[&self.user(n)],
            )
            .map_err(Into::into),
            &format!("procore_sync_user for user-{n}"),
        );
        Sync {
            status: row.get(0),
            records_written: row.get(1),
            error_message: row.get(2),
        }
    }

    fn requests_since(&self, seq: u64) -> Vec<LoggedRequest> {
        let v = self.ok(
            self.env.standin.requests_since(seq),
            "read the stand-in's request log",
        );
        LoggedRequest::parse_all(v)
    }

    fn last_seq(&self) -> u64 {
        self.requests_since(0).last().map_or(0, |r| r.seq)
    }

    fn schedule(&self, c: &mut postgres::Client, name: &str, command: &str) -> i64 {
        self.ok(
            c.query_one(
                "SELECT procore_sync_schedule($1, '1 seconds', $2)",
                &[&name, &command],
            )
            .map(|r| r.get(0))
            .map_err(Into::into),
            &format!("schedule job {name:?}"),
        )
    }

    fn deactivate(&self, c: &mut postgres::Client, jobid: i64) {
        self.ok(
            c.execute(
                "SELECT procore_sync_alter_job($1, active => false)",
                &[&jobid],
            )
            .map(drop)
            .map_err(Into::into),
            "deactivate a job",
        );
    }

    /// Runs of job `name` that ended with `status`.
    fn runs(&self, c: &mut postgres::Client, name: &str, status: &str) -> Result<i64> {
        Ok(c.query_one(
            "SELECT count(*) FROM procore_sync_job_run_details WHERE jobname = $1 AND status = $2",
            &[&name, &status],
        )?
        .get(0))
    }

    /// Runs that have not ended.
    fn unfinished_runs(&self, c: &mut postgres::Client) -> Result<i64> {
        Ok(c.query_one(
            "SELECT count(*) FROM procore_sync_job_run_details \
             WHERE status IS DISTINCT FROM 'succeeded' AND status IS DISTINCT FROM 'failed'",
            &[],
        )?
        .get(0))
    }

    fn last_runid(&self, c: &mut postgres::Client) -> i64 {
        self.ok(
            c.query_one(
                "SELECT coalesce(max(runid), 0) FROM procore_sync_job_run_details",
                &[],
            )
            .map(|r| r.get(0))
            .map_err(Into::into),
            "the last run id",
        )
    }

    /// Schedules `name` every second, waits for `runs` runs that ended with `status`, then
    /// switches it off and waits until no run is left unfinished.
    fn run_job(
        &self,
        c: &mut postgres::Client,
        name: &str,
        command: &str,
        status: &str,
        runs: i64,
    ) {
        let jobid = self.schedule(c, name, command);
        self.wait(&format!("{runs} {status} run(s) of job {name:?}"), || {
            Ok(self.runs(c, name, status)? >= runs)
        });
        self.deactivate(c, jobid);
        self.wait("no job run left unfinished", || {
            Ok(self.unfinished_runs(c)? == 0)
        });
    }

    /// User 1 synced fine; user 2's grant revoked at "Procore", so their sync failed with a
    /// reason; a job named like markup failed with a message that is markup; the company of
    /// user 1 has a webhook with a secret. Every job is off again at the end.
    fn populate(&self) -> Populated {
        let mut c = self.client();
        let s1 = self.sync(&mut c, 1);
        assert_eq!(
            s1.status, "completed",
            "user-1's sync: {:?}",
            s1.error_message
        );
        self.ok(self.env.standin.revoke("user-2"), "revoke user-2's grant");
        let s2 = self.sync(&mut c, 2);
        assert_eq!(s2.status, "failed", "user-2's sync after the revocation");
        let failure_reason = s2.error_message.unwrap_or_default();
        assert!(
            failure_reason.contains("invalid_grant"),
            "user-2's sync failed saying why: {}",
            self.redact(&failure_reason)
        );
        self.run_job(&mut c, HOSTILE_JOB, HOSTILE_COMMAND, "failed", 1);
        let destination = format!("http://127.0.0.1:{}{WEBHOOK_PATH}", self.port);
        self.ok(
            c.query_one(
                "SELECT procore_sync_webhooks_enable($1, $2, $3)",
                &[&self.user(1), &company_of(1), &destination],
            )
            .map(drop)
            .map_err(Into::into),
            "procore_sync_webhooks_enable",
        );
        self.ok(
            c.batch_execute(
                "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job",
            )
            .map_err(Into::into),
            "switch the backstop job off",
        );
        let hook_secret: String = self.ok(
            c.query_one(
                "SELECT secret FROM procore_sync_webhook_hook WHERE company_id = $1",
                &[&company_of(1)],
            )
            .map(|r| r.get(0))
            .map_err(Into::into),
            "read the hook's secret",
        );
        Populated {
            failure_reason,
            hook_secret,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------------------

type Labels = BTreeMap<String, String>;
type Key = (String, Labels);

/// One `GET /metrics`, parsed by openmetrics-parser.
struct Scrape {
    text: String,
    /// Family name → (type, help).
    families: BTreeMap<String, (PrometheusType, String)>,
    samples: BTreeMap<Key, f64>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Scrape {
    fn parse(text: String) -> Result<Scrape> {
        let exposition =
            parse_prometheus(&text).map_err(|e| anyhow!("not Prometheus text ({e:?}):\n{text}"))?;
        let mut families = BTreeMap::new();
        let mut samples = BTreeMap::new();
        for (name, family) in &exposition.families {
            families.insert(
                name.clone(),
                (family.family_type.clone(), family.help.clone()),
            );
            for sample in family.iter_samples() {
                let set = sample
                    .get_labelset()
                    .map_err(|e| anyhow!("labels of a {name} sample: {e:?}"))?;
                let labels: Labels = set.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let value = match &sample.value {
                    PrometheusValue::Counter(c) => c.value.as_f64(),
                    PrometheusValue::Gauge(n) => n.as_f64(),
                    other => bail!("{name}: neither a counter nor a gauge sample: {other:?}"),
                };
                if samples
                    .insert((name.clone(), labels.clone()), value)
                    .is_some()
                {
                    bail!("{name}{labels:?} appears twice:\n{text}");
                }
            }
        }
        Ok(Scrape {
            text,
            families,
            samples,
        })
    }

    /// A sample's value; a series not shown yet counts as 0.
    fn get(&self, name: &str, pairs: &[(&str, &str)]) -> f64 {
        self.samples
            .get(&(name.to_string(), labels(pairs)))
            .copied()
            .unwrap_or(0.0)
    }

    fn is_counter(&self, name: &str) -> bool {
        self.families
            .get(name)
            .is_some_and(|(t, _)| *t == PrometheusType::Counter)
    }

    /// The samples of `name`, by their value of label `label`.
    fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l.get(label).cloned().unwrap_or_default(), *v))
            .collect()
    }

    /// Every family has HELP and TYPE (counter or gauge), counters end in `_total` and
    /// gauges do not, and the README's families are all there.
    fn check_format(&self) {
        assert!(
            self.text.ends_with('\n'),
            "the exposition ends with a newline"
        );
        for (name, (kind, help)) in &self.families {
            assert!(name.starts_with("procore_sync_"), "family {name}");
            assert!(!help.trim().is_empty(), "family {name} has a HELP text");
            match kind {
                PrometheusType::Counter => {
                    assert!(name.ends_with("_total"), "counter {name} ends in _total")
                }
                PrometheusType::Gauge => {
                    assert!(
                        !name.ends_with("_total"),
                        "gauge {name} does not end in _total"
                    )
                }
                other => panic!("family {name} has no TYPE counter or gauge: {other:?}"),
            }
        }
        // The parser fills in what is missing; the text itself must say it, before samples.
        let mut helped = BTreeSet::new();
        let mut typed = BTreeSet::new();
        for line in self.text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap_or_default().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(helped.contains(name), "# HELP before # TYPE {name}");
                typed.insert(name.to_string());
            } else if !line.is_empty() && !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert!(
                    helped.contains(name) && typed.contains(name),
                    "sample line without HELP and TYPE before it: {line}"
                );
            }
        }
        for family in FAMILIES {
            assert!(
                self.families.contains_key(family) && typed.contains(family),
                "family {family} is in /metrics:\n{}",
                self.text
            );
        }
    }
}

/// Counters never go down between two scrapes, and no counter series disappears.
fn assert_counters_never_decrease(before: &Scrape, after: &Scrape) {
    for ((name, labels), v) in &before.samples {
        if !before.is_counter(name) {
            continue;
        }
        match after.samples.get(&(name.clone(), labels.clone())) {
            Some(w) => assert!(w >= v, "counter {name}{labels:?} went down from {v} to {w}"),
            None => panic!("counter {name}{labels:?} ({v}) vanished from /metrics"),
        }
    }
}

/// How much each series of `name` grew, by `label`, leaving out those that did not move.
fn growth(before: &Scrape, after: &Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    let old = before.by_label(name, label);
    after
        .by_label(name, label)
        .into_iter()
        .map(|(k, v)| {
            let d = v - old.get(&k).copied().unwrap_or(0.0);
            (k, d)
        })
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// `procore_requests_total` growth by code, as whole counts.
fn code_growth(before: &Scrape, after: &Scrape) -> BTreeMap<u16, u64> {
    growth(before, after, "procore_sync_procore_requests_total", "code")
        .into_iter()
        .map(|(code, d)| {
            assert!(d > 0.0 && d.fract() == 0.0, "code {code} grew by {d}");
            (code.parse().expect("a numeric code label"), d as u64)
        })
        .collect()
}

/// How many Procore answers were counted between two scrapes.
fn log_len(before: &Scrape, after: &Scrape) -> u64 {
    code_growth(before, after).values().sum()
}

/// Procore REST requests in the stand-in's log, by answer status (token requests left out).
fn api_by_status(log: &[LoggedRequest]) -> BTreeMap<u16, u64> {
    let mut by = BTreeMap::new();
    for r in log.iter().filter(|r| r.is_api()) {
        *by.entry(r.status).or_insert(0) += 1;
    }
    by
}

/// `job_runs_total` growth by (job, status).
fn job_growth(before: &Scrape, after: &Scrape) -> BTreeMap<(String, String), i64> {
    let name = "procore_sync_job_runs_total";
    let mut out = BTreeMap::new();
    for ((n, l), v) in &after.samples {
        if n != name {
            continue;
        }
        let d = v - before
            .samples
            .get(&(n.clone(), l.clone()))
            .copied()
            .unwrap_or(0.0);
        if d != 0.0 {
            let job = l.get("job").cloned().unwrap_or_default();
            let status = l.get("status").cloned().unwrap_or_default();
            out.insert((job, status), d as i64);
        }
    }
    out
}

/// Finished runs after `runid`, by (job name, status).
fn runs_after(c: &mut postgres::Client, runid: i64) -> Result<BTreeMap<(String, String), i64>> {
    Ok(c.query(
        "SELECT coalesce(jobname, ''), status, count(*) FROM procore_sync_job_run_details \
         WHERE runid > $1 AND status IN ('succeeded', 'failed') GROUP BY 1, 2",
        &[&runid],
    )?
    .iter()
    .map(|r| ((r.get(0), r.get(1)), r.get(2)))
    .collect())
}

/// Runs started after `runid`, ended or not.
fn started_after(c: &mut postgres::Client, runid: i64) -> Result<i64> {
    Ok(c.query_one(
        "SELECT count(*) FROM procore_sync_job_run_details WHERE runid > $1",
        &[&runid],
    )?
    .get(0))
}

// ---------------------------------------------------------------------------------------
// 1. /metrics: the format, and counters that move by exactly what happened
// ---------------------------------------------------------------------------------------

#[test]
fn metrics_counters_move_by_exactly_what_a_sync_and_the_jobs_did() {
    let o = O::start(world(2), Ipv4Addr::LOCALHOST, 2);
    let mut c = o.client();
    let m0 = o.scrape();
    m0.check_format();

    // One plain sync: every answer a 200.
    let seq = o.last_seq();
    let s1 = o.sync(&mut c, 1);
    assert_eq!(s1.status, "completed", "user-1: {:?}", s1.error_message);
    assert!(s1.records_written > 0, "the sync wrote records");
    let m1 = o.scrape();
    m1.check_format();
    assert_counters_never_decrease(&m0, &m1);
    let log = o.requests_since(seq);
    let api = api_by_status(&log);
    assert!(
        api.get(&200).copied().unwrap_or(0) > 0,
        "the sync made requests: {api:?}"
    );
    let written = "procore_sync_records_written_total";
    assert_eq!(
        m1.get(written, &[]) - m0.get(written, &[]),
        s1.records_written as f64,
        "{written} grew by the sync's records_written"
    );
    let ok = &[("code", "200")];
    let requests = "procore_sync_procore_requests_total";
    assert_eq!(
        m1.get(requests, ok) - m0.get(requests, ok),
        api[&200] as f64,
        "{requests}{{code=\"200\"}} grew by the /rest/ requests the stand-in answered 200"
    );
    assert_eq!(
        code_growth(&m0, &m1),
        api,
        "{requests} grew by the stand-in's answers, code by code"
    );
    assert!(
        !log.iter().any(LoggedRequest::is_token_grant),
        "no token request in a sync with a fresh token"
    );
    let refreshes = "procore_sync_token_refreshes_total";
    assert!(
        growth(&m0, &m1, refreshes, "outcome").is_empty(),
        "{refreshes} did not move"
    );
    assert!(job_growth(&m0, &m1).is_empty(), "no job ran");

    // A sync whose access token "Procore" expired: a 401, one refresh, then 200s.
    o.ok(
        o.env.standin.expire_tokens("user-2"),
        "expire user-2's access token",
    );
    let seq = o.last_seq();
    let s2 = o.sync(&mut c, 2);
    assert_eq!(s2.status, "completed", "user-2: {:?}", s2.error_message);
    let m2 = o.scrape();
    m2.check_format();
    assert_counters_never_decrease(&m1, &m2);
    let log = o.requests_since(seq);
    let api = api_by_status(&log);
    assert!(
        api.get(&401).copied().unwrap_or(0) >= 1,
        "the expired token was answered 401: {api:?}"
    );
    assert_eq!(
        code_growth(&m1, &m2),
        api,
        "{requests} grew by the stand-in's answers, the 401 included"
    );
    let grants: Vec<&LoggedRequest> = log.iter().filter(|r| r.is_token_grant()).collect();
    let granted = grants.iter().filter(|r| r.status == 200).count() as f64;
    assert_eq!(granted, 1.0, "one refresh: {grants:?}");
    let outcomes = growth(&m1, &m2, refreshes, "outcome");
    assert_eq!(
        outcomes,
        BTreeMap::from([("ok".to_string(), granted)]),
        "{refreshes} grew by the refreshes in the stand-in's log"
    );
    assert_eq!(
        m2.get(written, &[]) - m1.get(written, &[]),
        s2.records_written as f64,
        "{written} grew by the second sync's records_written"
    );
    let limited = "procore_sync_procore_rate_limited_total";
    assert_eq!(
        m2.get(limited, &[]) - m0.get(limited, &[]),
        0.0,
        "no 429 was answered, none counted"
    );

    // Jobs: one that succeeds and one named like markup that fails, every second.
    const OK_JOB: &str = "observe-ok";
    let r0 = o.last_runid(&mut c);
    let seq = o.last_seq();
    let m3 = o.scrape();
    assert_counters_never_decrease(&m2, &m3);
    let ok_id = o.schedule(&mut c, OK_JOB, "SELECT 1");
    let bad_id = o.schedule(&mut c, HOSTILE_JOB, "SELECT 1/0");
    o.wait("3 succeeded and 2 failed runs", || {
        Ok(
            o.runs(&mut c, OK_JOB, "succeeded")? >= 3
                && o.runs(&mut c, HOSTILE_JOB, "failed")? >= 2,
        )
    });
    o.deactivate(&mut c, ok_id);
    o.deactivate(&mut c, bad_id);
    // A run ends in the table and in the counter in one transaction of the scheduler's;
    // compare once no run is open and the table reads the same before and after the scrape.
    let mut last = String::new();
    let mut settled = None;
    let r = wait_until(TIMEOUT, POLL, "the job runs to settle", || {
        let before = runs_after(&mut c, r0)?;
        let started = started_after(&mut c, r0)?;
        let m = o.scrape();
        let after = runs_after(&mut c, r0)?;
        let open = o.unfinished_runs(&mut c)?;
        let jobs = job_growth(&m3, &m);
        let ticks = m.get("procore_sync_scheduler_ticks_total", &[])
            - m3.get("procore_sync_scheduler_ticks_total", &[]);
        last = format!(
            "runs in the table {after:?} ({started} started, {open} open), \
             job_runs_total grew by {jobs:?}, scheduler_ticks_total by {ticks}"
        );
        if before != after || open > 0 || started_after(&mut c, r0)? != started {
            return Ok(false);
        }
        if jobs == after && ticks == started as f64 {
            settled = Some((m, after, started));
            return Ok(true);
        }
        Ok(false)
    });
    if let Err(e) = r {
        o.fail(
            "job_runs_total and scheduler_ticks_total against procore_sync_job_run_details",
            e.context(last.clone()),
        );
    }
    let (m4, runs, started) = settled.expect("settled");
    m4.check_format();
    assert_counters_never_decrease(&m3, &m4);
    assert!(
        runs[&(OK_JOB.to_string(), "succeeded".to_string())] >= 3
            && runs[&(HOSTILE_JOB.to_string(), "failed".to_string())] >= 2,
        "{runs:?}"
    );
    assert_eq!(
        started as usize,
        runs.values().sum::<i64>() as usize,
        "every run started also ended"
    );
    // The markup name round-trips through the label escaping.
    let hostile = m4.get(
        "procore_sync_job_runs_total",
        &[("job", HOSTILE_JOB), ("status", "failed")],
    );
    assert!(
        hostile >= 2.0,
        "job=\"{HOSTILE_JOB}\" parses back: {}",
        m4.text
    );
    eprintln!(
        "counted exactly: sync 1 wrote {} records in {} requests; sync 2 wrote {} after {:?}; \
         job runs {runs:?}",
        s1.records_written,
        log_len(&m0, &m1),
        s2.records_written,
        code_growth(&m1, &m2),
    );
    // SELECT 1 asks Procore nothing.
    assert_eq!(
        code_growth(&m2, &m4),
        api_by_status(&o.requests_since(seq)),
        "no Procore request while only the jobs ran"
    );
}

// ---------------------------------------------------------------------------------------
// 2. procore_sync_metrics(): the same names, labels and values
// ---------------------------------------------------------------------------------------

#[test]
fn sql_metrics_equal_the_listeners_when_nothing_runs() {
    let o = O::start(world(2), Ipv4Addr::LOCALHOST, 2);
    let mut c = o.client();
    let s = o.sync(&mut c, 1);
    assert_eq!(s.status, "completed", "user-1: {:?}", s.error_message);
    o.run_job(&mut c, "observe-sql", "SELECT 1", "succeeded", 2);
    o.run_job(&mut c, HOSTILE_JOB, "SELECT 1/0", "failed", 1);
    // A pending item not due for a day: a gauge that is not zero and does not move.
    o.ok(
        c.execute(
            "INSERT INTO procore_sync_queue (user_id, next_attempt_at) VALUES ($1, now() + interval '1 day')",
            &[&o.user(2)],
        )
        .map(drop)
        .map_err(Into::into),
        "queue user-2 for tomorrow",
    );
    // The counter of a run may trail its row by the scheduler's commit: wait for it.
    o.wait("the runs counted", || {
        let m = o.scrape();
        Ok(m.get(
            "procore_sync_job_runs_total",
            &[("job", HOSTILE_JOB), ("status", "failed")],
        ) >= 1.0)
    });

    let before = o.scrape();
    let rows = o.ok(
        c.query(
            "SELECT name, kind, labels, value FROM procore_sync_metrics()",
            &[],
        )
        .map_err(Into::into),
        "SELECT * FROM procore_sync_metrics()",
    );
    let after = o.scrape();
    assert_eq!(
        before.samples, after.samples,
        "nothing moves while nothing runs (two scrapes around the SQL call)"
    );
    before.check_format();

    let mut sql: BTreeMap<Key, (String, f64)> = BTreeMap::new();
    for r in &rows {
        let (name, kind, labels, value): (String, String, Value, f64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let labels: Labels = labels
            .as_object()
            .unwrap_or_else(|| panic!("labels of {name} are a JSON object: {labels}"))
            .iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .unwrap_or_else(|| panic!("label {k} of {name} is a string: {v}"));
                (k.clone(), v.to_string())
            })
            .collect();
        let key = (name, labels);
        assert!(
            sql.insert(key.clone(), (kind, value)).is_none(),
            "procore_sync_metrics() returns {key:?} twice"
        );
    }
    let http_keys: Vec<&Key> = before.samples.keys().collect();
    let sql_keys: Vec<&Key> = sql.keys().collect();
    assert_eq!(
        sql_keys, http_keys,
        "procore_sync_metrics() has the same series as /metrics"
    );
    for (key, value) in &before.samples {
        let (kind, sql_value) = &sql[key];
        assert_eq!(
            sql_value.to_bits(),
            value.to_bits(),
            "{key:?}: {sql_value} from SQL, {value} from /metrics"
        );
        let family_kind = match before.families[&key.0].0 {
            PrometheusType::Counter => "counter",
            PrometheusType::Gauge => "gauge",
            _ => "other",
        };
        assert_eq!(kind, family_kind, "kind of {key:?}");
    }
    // The interesting ones are really there, not just equal by being absent.
    let counters = sql.iter().filter(|(_, (k, _))| k == "counter").count();
    assert!(counters >= 10, "{counters} counter series");
    assert_eq!(
        sql[&(
            "procore_sync_job_runs_total".to_string(),
            labels(&[("job", HOSTILE_JOB), ("status", "failed")])
        )]
            .1,
        1.0,
        "the markup-named job's failed run"
    );
    assert_eq!(
        sql[&(
            "procore_sync_queue_items".to_string(),
            labels(&[("status", "pending")])
        )]
            .1,
        1.0
    );
    assert!(
        sql[&(
            "procore_sync_procore_requests_total".to_string(),
            labels(&[("code", "200")])
        )]
            .1
            > 0.0
    );

    // Counts of every role's jobs: not PUBLIC's to read.
    o.ok(
        c.batch_execute("CREATE ROLE observe_reader LOGIN")
            .map_err(Into::into),
        "create a role",
    );
    let mut reader = o.ok(
        o.env.cluster.client_for("postgres", "observe_reader"),
        "connect as observe_reader",
    );
    let denied = reader.query("SELECT * FROM procore_sync_metrics()", &[]);
    let code = denied
        .as_ref()
        .err()
        .and_then(|e| e.code().cloned())
        .map(|s| s.code().to_string());
    assert_eq!(
        code.as_deref(),
        Some("42501"),
        "procore_sync_metrics() is not PUBLIC's: {:?}",
        denied.map(|r| r.len())
    );
}

// ---------------------------------------------------------------------------------------
// 3. The status page in a real browser
// ---------------------------------------------------------------------------------------

/// Text as a serialized DOM shows it: `&`, `<`, `>` and no-break spaces escaped.
fn as_dom_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}

/// The serialized `<section id="…">` of the DOM, up to its end.
fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("<section id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("the page has a section {id}:\n{dom}"));
    let end = dom[start..]
        .find("</section>")
        .map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// The table row of `section` that mentions `needle`.
fn row_with<'a>(section: &'a str, needle: &str) -> &'a str {
    section
        .split("<tr")
        .find(|row| row.contains(needle))
        .unwrap_or_else(|| panic!("a row with {needle} in:\n{section}"))
}

#[test]
fn status_page_in_a_browser_shows_users_failures_and_markup_as_text() {
    let o = O::start(world(2), Ipv4Addr::LOCALHOST, 2);
    let p = o.populate();
    let url = o.local("/");
    let reply = o.ok(get(&url, None), "GET /");
    assert_eq!(reply.status, 200, "GET / from loopback");
    assert!(
        reply.content_type.starts_with("text/html"),
        "{}",
        reply.content_type
    );

    let dom = o.ok(dump_dom(&url), "chromium --dump-dom");
    let redacted = o.redact(&dom);
    assert!(
        dom.contains("procore_sync status"),
        "the browser shows the page:\n{redacted}"
    );
    let elements = element_names(&dom);
    for tag in ["script", "b", "img", "iframe", "object"] {
        assert!(
            !elements.iter().any(|e| e == tag),
            "no <{tag}> element from data in the page:\n{redacted}"
        );
    }
    for tag in ["table", "svg"] {
        assert!(
            elements.iter().any(|e| e == tag),
            "the page has a <{tag}> (tables and charts):\n{redacted}"
        );
    }

    // Both users, one fine and one failing with the reason.
    let users = section(&dom, "users");
    let (u1, u2) = (o.user(1).to_string(), o.user(2).to_string());
    let fine = row_with(users, &u1);
    assert!(
        fine.contains(">ok<"),
        "user-1 is shown ok: {}",
        o.redact(fine)
    );
    let failing = row_with(users, &u2);
    assert!(
        failing.contains(">disconnected<"),
        "user-2 is shown disconnected: {}",
        o.redact(failing)
    );
    let reason: String = p.failure_reason.chars().take(200).collect();
    let shown = as_dom_text(&reason);
    assert!(
        failing.contains(&shown),
        "user-2's row gives the reason {:?}: {}",
        o.redact(&reason),
        o.redact(failing)
    );
    let failures = section(&dom, "failures");
    assert!(
        row_with(failures, &u2).contains(&shown),
        "the recent failures show user-2's reason: {}",
        o.redact(failures)
    );

    // The markup-named job and its markup message, as text.
    let jobs = section(&dom, "jobs");
    let hostile_row = row_with(jobs, &as_dom_text(HOSTILE_JOB));
    assert!(
        hostile_row.contains(">failed<"),
        "the markup-named job's run is shown failed: {hostile_row}"
    );
    assert!(
        hostile_row.contains(&as_dom_text(HOSTILE_MESSAGE)),
        "its message is shown as text: {hostile_row}"
    );

    let hooks = section(&dom, "webhooks");
    assert!(
        hooks.contains(&company_of(1).to_string()),
        "the webhook of company {} is listed: {hooks}",
        company_of(1)
    );
    assert!(
        !dom.contains(&p.hook_secret),
        "the hook's secret is not on the page"
    );

    // A picture for people (README, "Status page and metrics").
    let path = target_dir().join("status-page.png");
    o.ok(screenshot(&url, &path, 1280, 2000), "chromium --screenshot");
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        png_dimensions(&png),
        Some((1280, 2000)),
        "{} is a 1280×2000 PNG ({} bytes)",
        path.display(),
        png.len()
    );
    eprintln!("status page screenshot: {}", path.display());
}

// ---------------------------------------------------------------------------------------
// 4. Who may look
// ---------------------------------------------------------------------------------------

#[test]
fn another_host_needs_the_bearer_token_and_loopback_does_not() {
    let ip = non_loopback_ipv4().unwrap_or_else(|e| panic!("{e:#}"));
    let o = O::start(world(1), Ipv4Addr::UNSPECIFIED, 0);
    let remote = |path: &str| format!("http://{ip}:{}{path}", o.port);
    let fetch =
        |url: &str, auth: Option<&str>| -> Reply { o.ok(get(url, auth), &format!("GET {url}")) };
    let paths = ["/", "/metrics"];

    for path in paths {
        assert_eq!(
            fetch(&o.local(path), None).status,
            200,
            "GET {path} from loopback needs no token"
        );
    }
    // No token configured: nobody else gets in, whatever they send.
    for path in paths {
        for auth in [None, Some("Bearer "), Some("Bearer guess")] {
            let r = fetch(&remote(path), auth);
            assert_eq!(
                r.status, 401,
                "GET {path} from {ip} with {auth:?} and no token configured: {}",
                r.body
            );
        }
    }

    let token = format!("st-{}", Uuid::new_v4().simple());
    let bearer = format!("Bearer {token}");
    o.set_status_token(&token);
    o.wait("the listener to take the token", || {
        Ok(get(&remote("/metrics"), Some(&bearer))?.status == 200)
    });
    for path in paths {
        let r = fetch(&remote(path), Some(&bearer));
        assert_eq!(r.status, 200, "GET {path} from {ip} with the token");
        let expected = if path == "/" {
            "text/html"
        } else {
            "text/plain"
        };
        assert!(
            r.content_type.starts_with(expected),
            "GET {path}: {}",
            r.content_type
        );
        let cut = &token[..token.len() - 1];
        for wrong in [
            None,
            Some("Bearer wrong".to_string()),
            Some(format!("Bearer {cut}")),
            Some(format!("Bearer {token}x")),
            Some(token.clone()),
            Some(format!("Basic {token}")),
        ] {
            let r = fetch(&remote(path), wrong.as_deref());
            let what = wrong.as_deref().map(|w| w.replace(&token, "<token>"));
            assert_eq!(r.status, 401, "GET {path} from {ip} with {what:?}");
            assert!(
                !r.body.contains(&token) && !r.body.contains(cut),
                "the 401 does not echo the token"
            );
        }
        assert_eq!(
            fetch(&o.local(path), None).status,
            200,
            "loopback still needs no token"
        );
    }

    // Only superusers may read or set it.
    let mut c = o.client();
    o.ok(
        c.batch_execute("CREATE ROLE observe_peer LOGIN")
            .map_err(Into::into),
        "create a role",
    );
    let mut peer = o.ok(
        o.env.cluster.client_for("postgres", "observe_peer"),
        "connect as observe_peer",
    );
    let shown = peer.query_one("SHOW procore_sync.http_status_token", &[]);
    assert!(
        shown
            .as_ref()
            .is_err_and(|e| e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)),
        "a non-superuser cannot read the token: {:?}",
        shown.map(|r| r.get::<_, String>(0).replace(&token, "<token>"))
    );
    let settings = o.ok(
        peer.query(
            "SELECT setting FROM pg_settings WHERE name = 'procore_sync.http_status_token'",
            &[],
        )
        .map_err(Into::into),
        "pg_settings as observe_peer",
    );
    assert!(
        settings
            .iter()
            .all(|r| r.get::<_, Option<String>>(0).as_deref() != Some(&token)),
        "pg_settings does not show the token to a non-superuser"
    );

    // Taken away again: the token no longer opens anything.
    o.ok(
        c.batch_execute("ALTER SYSTEM RESET procore_sync.http_status_token")
            .and_then(|()| c.batch_execute("SELECT pg_reload_conf()"))
            .map_err(Into::into),
        "ALTER SYSTEM RESET procore_sync.http_status_token",
    );
    o.wait("the listener to drop the token", || {
        Ok(get(&remote("/metrics"), Some(&bearer))?.status == 401)
    });
    assert_eq!(fetch(&remote("/"), Some(&bearer)).status, 401);
}

/// `procore_sync.http_listen = '[::]:PORT'` takes IPv4 too (Linux's default dual stack);
/// a connection from 127.0.0.1 then comes from `::ffff:127.0.0.1`, which is this machine all
/// the same.
#[test]
fn dual_stack_listener_counts_ipv4_loopback_as_loopback() {
    let o = O::start(world(1), Ipv6Addr::UNSPECIFIED, 0);
    let ipv6 = format!("http://[::1]:{}/metrics", o.port);
    let r = o.ok(get(&ipv6, None), "GET /metrics over ::1");
    assert_eq!(r.status, 200, "GET /metrics from ::1: {}", r.body);
    for path in ["/metrics", "/"] {
        let r = o.ok(get(&o.local(path), None), "GET over 127.0.0.1");
        assert_eq!(
            r.status, 200,
            "GET {path} from 127.0.0.1 (peer ::ffff:127.0.0.1) on a [::] listener: {}",
            r.body
        );
    }
}

// ---------------------------------------------------------------------------------------
// 5. No secret on the page or in /metrics
// ---------------------------------------------------------------------------------------

#[test]
fn no_token_or_secret_on_the_status_page_or_in_metrics() {
    let o = O::start(world(2), Ipv4Addr::LOCALHOST, 2);
    let p = o.populate();
    let mut c = o.client();
    let status_token = format!("st-{}", Uuid::new_v4().simple());
    o.set_status_token(&status_token);
    let shown: String = o.wait_setting(&mut c, &status_token);
    assert_eq!(shown, status_token);

    let mut secrets: BTreeSet<String> = o
        .ok(o.env.standin.secrets(), "the stand-in's secrets")
        .into_iter()
        .collect();
    secrets.insert(o.env.standin.client_secret());
    secrets.insert(p.hook_secret.clone());
    secrets.insert(status_token.clone());
    for r in o.ok(
        c.query(
            "SELECT access_token, refresh_token FROM procore_sync_credentials",
            &[],
        )
        .map_err(Into::into),
        "the stored tokens",
    ) {
        secrets.insert(r.get(0));
        secrets.insert(r.get(1));
    }
    secrets.retain(|s| s.len() >= 8);
    assert!(secrets.len() >= 6, "tokens, codes and secrets to look for");

    let page = o.ok(get(&o.local("/"), None), "GET /");
    let metrics = o.ok(get(&o.local("/metrics"), None), "GET /metrics");
    assert_eq!((page.status, metrics.status), (200, 200));
    // The page is the populated one, not an empty shell.
    for user in [o.user(1), o.user(2)] {
        assert!(page.body.contains(&user.to_string()), "{user} on the page");
    }
    assert!(
        page.body.contains("invalid_grant"),
        "the failure on the page"
    );
    for (what, text) in [("the status page", &page.body), ("/metrics", &metrics.body)] {
        let leaks = secrets.iter().filter(|s| text.contains(s.as_str())).count();
        assert_eq!(
            leaks,
            0,
            "{what} contains {leaks} of {} tokens or secrets",
            secrets.len()
        );
    }
}

impl O {
    /// Waits until the server reads `value` for the status token, and returns it.
    fn wait_setting(&self, c: &mut postgres::Client, value: &str) -> String {
        let mut seen = String::new();
        self.wait("the status token to be reloaded", || {
            seen = c
                .query_one(
                    "SELECT current_setting('procore_sync.http_status_token')",
                    &[],
                )?
                .get(0);
            Ok(seen == value)
        });
        seen
    }
}

// ---------------------------------------------------------------------------------------
// 6. Requests made from SQL count too
// ---------------------------------------------------------------------------------------

/// `procore_sync_webhooks_enable`, `_check` and `_disable` talk to Procore's REST API from
/// the caller's backend; their answers are Procore answers like a sync's.
#[test]
fn procore_requests_total_counts_the_webhook_calls_made_from_sql() {
    let o = O::start(world(1), Ipv4Addr::LOCALHOST, 1);
    let mut c = o.client();
    let s = o.sync(&mut c, 1);
    assert_eq!(s.status, "completed", "user-1: {:?}", s.error_message);
    let m0 = o.scrape();
    let seq = o.last_seq();
    let destination = o.local(WEBHOOK_PATH);
    o.ok(
        c.query_one(
            "SELECT procore_sync_webhooks_enable($1, $2, $3)",
            &[&o.user(1), &company_of(1), &destination],
        )
        .map(drop)
        .map_err(Into::into),
        "procore_sync_webhooks_enable",
    );
    o.ok(
        c.batch_execute(
            "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job",
        )
        .map_err(Into::into),
        "switch the backstop job off",
    );
    o.ok(
        c.query_one("SELECT procore_sync_webhooks_check()", &[])
            .map(drop)
            .map_err(Into::into),
        "procore_sync_webhooks_check",
    );
    o.ok(
        c.query_one(
            "SELECT procore_sync_webhooks_disable($1)",
            &[&company_of(1)],
        )
        .map(drop)
        .map_err(Into::into),
        "procore_sync_webhooks_disable",
    );
    let m1 = o.scrape();
    let api = api_by_status(&o.requests_since(seq));
    assert!(!api.is_empty(), "the webhook calls reached the stand-in");
    assert_counters_never_decrease(&m0, &m1);
    assert_eq!(
        code_growth(&m0, &m1),
        api,
        "procore_sync_procore_requests_total grew by the webhook calls' answers, code by code"
    );
}
