//! W1 ingest: many records with no latency; end to end vs the database alone (the same
//! rows upserted from one client) and the network alone (the same pages over plain HTTP).

use std::fmt::Write as _;
use std::io::Read as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use procore_sync_core::records::page_rows;
use procore_sync_core::statements::UPSERT_PAGE;
use procore_sync_e2e::{stop_requested, Standin};
use serde_json::{json, Value};

use crate::args::{Config, ProfileMode};
use crate::cluster::{
    api_requests, check_stop, connect_users, disable_default_jobs, first_failure, queue_counts,
    start_cycle, start_env, BenchEnv, LibDir,
};
use crate::profile::{pg_stat_statements_report, remove_perf_data, Perf, PidWatch};
use crate::report::Results;

const PROJECT_TOOLS: usize = 6;

struct PageBody {
    resource: String,
    company_id: Option<i64>,
    project_id: Option<i64>,
    body: String,
}

struct CatalogEntry {
    name: String,
    path_template: String,
    scope: String,
    paginated: bool,
}

fn w1_world(cfg: &Config) -> Value {
    json!({
        "users": cfg.w1_users, "companies_per_user": cfg.w1_companies,
        "projects_per_company": cfg.w1_projects, "records_per_resource": cfg.w1_records,
        "per_page_default": cfg.w1_per_page, "latency_ms": 0,
        // Rate limits are W2's subject; here they would only measure the pacing.
        "rate_limit_spike": 1_000_000_000u64, "rate_limit_hour": 1_000_000_000u64,
        "access_token_ttl_s": 86_400,
    })
}

/// A W1 cluster with every user connected and the default jobs off.
fn w1_env(cfg: &Config, lib: &LibDir, profiled: bool) -> Result<BenchEnv> {
    let workers = cfg.w1_workers;
    let bench = start_env(
        w1_world(cfg),
        lib,
        &[
            ("procore_sync.max_workers", workers.to_string()),
            ("procore_sync.batch_size", cfg.w1_users.max(10).to_string()),
            ("max_worker_processes", (workers + 8).to_string()),
        ],
        profiled,
    )?;
    let mut client = bench.client()?;
    disable_default_jobs(&mut client)?;
    client.execute(
        "UPDATE procore_sync_resource SET per_page = $1, enabled = true",
        &[&(cfg.w1_per_page as i32)],
    )?;
    connect_users(&bench.env, cfg.w1_users)?;
    Ok(bench)
}

struct Cycle {
    secs: f64,
    stored: i64,
    requests: i64,
    /// Sync worker processes seen during the cycle: the pool starts one per
    /// `users_per_worker` due users, up to `max_workers`.
    workers_seen: usize,
    profile: Option<String>,
}

/// One end-to-end cycle; with `profiled`, pg_stat_statements (and perf, if `perf`) watch it.
fn w1_cycle(
    bench: &BenchEnv,
    cfg: &Config,
    expected: u64,
    profiled: bool,
    perf: bool,
) -> Result<Cycle> {
    let mut client = bench.client()?;
    let req0 = api_requests(&bench.env.standin)?;
    if profiled {
        client.batch_execute("SELECT pg_stat_statements_reset()")?;
    }
    let perf_run = if profiled && perf {
        Some(Perf::start(
            &std::env::temp_dir().join("procore-bench-w1.perf"),
            None,
            499,
        )?)
    } else {
        None
    };
    let mut watch = PidWatch::default();
    let t0 = Instant::now();
    start_cycle(&mut client)?;
    loop {
        watch.sample(bench, &mut client)?;
        let q = queue_counts(&mut client)?;
        if q.open == 0 {
            break;
        }
        check_stop()?;
        if t0.elapsed() > Duration::from_secs(7200) {
            bail!("the W1 cycle did not finish within 2 h: {q:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let secs = t0.elapsed().as_secs_f64();
    let perf_data = perf_run.map(Perf::stop).transpose()?;
    let q = queue_counts(&mut client)?;
    if q.failed > 0 {
        bail!("{} users failed: {}", q.failed, first_failure(&mut client)?);
    }
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM procore_records WHERE deleted_at IS NULL",
            &[],
        )?
        .get(0);
    if stored as u64 != expected {
        bail!("stored {stored} records, expected {expected}");
    }
    let requests = api_requests(&bench.env.standin)? - req0;
    let profile = if profiled {
        let mut text = format!("profile of a W1 end-to-end cycle ({secs:.1} s):\n");
        text.push_str(&pg_stat_statements_report(
            &mut client,
            secs,
            cfg.w1_workers,
        )?);
        if let Some(data) = &perf_data {
            let pids: Vec<i32> = watch.pids.iter().copied().collect();
            let _ = writeln!(
                text,
                "    perf, CPU samples of the sync workers by shared object:"
            );
            text.push_str(&Perf::report(data, &pids, "dso", 12)?);
            let _ = writeln!(text, "\n    perf, top symbols in the sync workers:");
            text.push_str(&Perf::report(data, &pids, "dso,sym", 25)?);
            let _ = writeln!(
                text,
                "\n    perf, CPU samples: sync workers vs the stand-in:"
            );
            let mut both = pids.clone();
            both.push(standin_pid()?);
            text.push_str(&Perf::report(data, &both, "comm", 6)?);
            remove_perf_data(data);
        }
        Some(text)
    } else {
        None
    };
    Ok(Cycle {
        secs,
        stored,
        requests,
        workers_seen: watch.pids.len(),
        profile,
    })
}

/// End to end against the lower ceiling (the database's, in every run so far): many users in
/// flight per worker must not cost the ingest path more than this.
const W1_TARGET: f64 = 0.80;

pub fn run(cfg: &Config, lib: &LibDir, perf: bool, results: &mut Results) -> Result<()> {
    let (u, c, p, r) = (
        cfg.w1_users,
        cfg.w1_companies,
        cfg.w1_projects,
        cfg.w1_records,
    );
    let expected = u * (c + c * p + c * r + c * p * PROJECT_TOOLS as u64 * r);
    let workers = cfg.w1_workers;
    println!(
        "W1 ingest: {u} users x {c} companies x {p} projects, {r} records per resource, every \
         catalog resource, {} per page, max_workers {workers}: {expected} records",
        cfg.w1_per_page
    );
    let profile_all = cfg.profile == ProfileMode::All;
    let bench = w1_env(cfg, lib, profile_all)?;
    let mut client = bench.client()?;

    // End to end.
    let cycle = w1_cycle(&bench, cfg, expected, profile_all, perf)?;
    let e2e_rate = cycle.stored as f64 / cycle.secs;
    println!(
        "  end to end: {} records, {} requests in {:.1}s",
        cycle.stored, cycle.requests, cycle.secs
    );
    if let Some(p) = &cycle.profile {
        println!("{p}");
    }

    // The same pages, fetched by a plain HTTP client.
    let catalog = read_catalog(&mut client)?;
    let logins: Vec<String> = (1..=u).map(|i| format!("user-{i}")).collect();
    let t1 = Instant::now();
    let pages = fetch_all_pages(
        &bench.env.standin,
        &logins,
        &catalog,
        cfg.w1_per_page,
        workers as usize,
    )?;
    let net_secs = t1.elapsed().as_secs_f64();
    let bytes: usize = pages.iter().map(|p| p.body.len()).sum();
    println!(
        "  network alone: {} pages, {:.1} MB in {net_secs:.1}s ({workers} threads, plain HTTP, no database)",
        pages.len(),
        bytes as f64 / 1e6
    );

    // The same rows, upserted by one client in one batched statement per page.
    client.batch_execute("TRUNCATE procore_records")?;
    let batches = pages_to_batches(pages)?;
    let rows: usize = batches.iter().map(|b| b.ids.len()).sum();
    if rows as u64 != expected {
        bail!("the plain HTTP client got {rows} records, expected {expected}");
    }
    let statement = client.prepare(UPSERT_PAGE)?;
    let t2 = Instant::now();
    for b in &batches {
        client.query_one(
            &statement,
            &[
                &b.resource,
                &b.company_id,
                &b.project_id,
                &b.ids,
                &b.names,
                &b.statuses,
                &b.updated,
                &b.data,
                &None::<i64>,
            ],
        )?;
        check_stop()?;
    }
    let db_secs = t2.elapsed().as_secs_f64();
    let stored_again: i64 = client
        .query_one("SELECT count(*) FROM procore_records", &[])?
        .get(0);
    if stored_again as u64 != expected {
        bail!("the database ceiling stored {stored_again} records, expected {expected}");
    }
    println!(
        "  database alone: {rows} rows in {} INSERT ... ON CONFLICT statements from one client in {db_secs:.1}s",
        batches.len()
    );
    drop(client);
    drop(bench);

    let db_rate = rows as f64 / db_secs;
    let net_rate = rows as f64 / net_secs;
    let lower = db_rate.min(net_rate);
    let fraction = e2e_rate / lower;
    let lower_name = if db_rate <= net_rate {
        "database"
    } else {
        "network"
    };
    results.info(
        "W1",
        format!(
            "records synced ({} per page, max_workers {workers})",
            cfg.w1_per_page
        ),
        cycle.stored as f64,
        "",
        0,
    );
    results.info("W1", "end to end", e2e_rate, "records/s", 0);
    results.info(
        "W1",
        "  sync worker processes that ran",
        cycle.workers_seen as f64,
        "",
        0,
    );
    results.info(
        "W1",
        "ceiling: database alone (1 client, 1 upsert per page)",
        db_rate,
        "records/s",
        0,
    );
    results.info(
        "W1",
        format!("ceiling: network alone ({workers} threads, plain HTTP)"),
        net_rate,
        "records/s",
        0,
    );
    results.add(
        "W1",
        format!("end to end / lower ceiling ({lower_name})"),
        fraction,
        "",
        3,
        format!(">= {W1_TARGET:.2}"),
        Some(fraction >= W1_TARGET),
    );
    results.chart.w1 = Some([e2e_rate, db_rate, net_rate]);
    results.note(format!(
        "W1: {} API requests, {:.1} MB of JSON; stand-in rate limits raised out of the way; \
         catalog per_page = {}",
        cycle.requests,
        bytes as f64 / 1e6,
        cfg.w1_per_page
    ));
    if fraction < W1_TARGET {
        // Measured without the profilers; now once more with them, to say where time goes.
        let profile = match (&cycle.profile, cfg.profile) {
            (Some(p), _) => Some(p.clone()),
            (None, ProfileMode::Missed) => {
                println!("  target missed: profiling another cycle on a fresh cluster");
                let bench = w1_env(cfg, lib, true)?;
                let again = w1_cycle(&bench, cfg, expected, true, perf)?;
                again.profile
            }
            _ => None,
        };
        if let Some(p) = profile {
            println!("{p}");
            results.note(format!("W1 {p}"));
        }
    }
    Ok(())
}

/// The stand-in is a child of this process (one at a time).
fn standin_pid() -> Result<i32> {
    let me = std::process::id() as i32;
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|s| s.parse::<i32>().ok());
        if ppid != Some(me) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("procore-standin") {
            return Ok(pid);
        }
    }
    bail!("stand-in process not found")
}

fn read_catalog(client: &mut postgres::Client) -> Result<Vec<CatalogEntry>> {
    Ok(client
        .query(
            "SELECT name, path_template, scope, paginated FROM procore_sync_resource
             WHERE enabled ORDER BY name",
            &[],
        )?
        .iter()
        .map(|r| CatalogEntry {
            name: r.get(0),
            path_template: r.get(1),
            scope: r.get(2),
            paginated: r.get(3),
        })
        .collect())
}

/// Walks every login's companies, their company resources, their projects and every
/// project resource, with `threads` threads, following `Link: rel="next"`; returns the pages.
fn fetch_all_pages(
    standin: &Standin,
    logins: &[String],
    catalog: &[CatalogEntry],
    per_page: u64,
    threads: usize,
) -> Result<Vec<PageBody>> {
    let next = AtomicUsize::new(0);
    let pages: Mutex<Vec<PageBody>> = Mutex::new(Vec::new());
    // Tokens first, outside the timed part is not possible without a second walk; they are
    // one small admin request per user.
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(60))
                        .build();
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= logins.len() || stop_requested() {
                            break;
                        }
                        let token = standin.issue_tokens(&logins[i])?["access_token"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        walk_user(
                            &agent,
                            standin.base_url(),
                            &token,
                            catalog,
                            per_page,
                            &mut mine,
                        )?;
                    }
                    pages.lock().unwrap().extend(mine);
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("fetch thread panicked"))??;
        }
        Ok(())
    })?;
    check_stop()?;
    Ok(pages.into_inner().unwrap())
}

fn walk_user(
    agent: &ureq::Agent,
    base: &str,
    token: &str,
    catalog: &[CatalogEntry],
    per_page: u64,
    out: &mut Vec<PageBody>,
) -> Result<()> {
    let companies = get_list(agent, &format!("{base}/rest/v1.0/companies"), token, None)?;
    let company_ids = ids_of(&companies.0)?;
    out.push(PageBody {
        resource: "companies".into(),
        company_id: None,
        project_id: None,
        body: companies.0,
    });
    for &company in &company_ids {
        let mut project_ids = Vec::new();
        for entry in catalog.iter().filter(|e| e.scope == "company") {
            let path = entry
                .path_template
                .replace("{company_id}", &company.to_string());
            for body in get_all(
                agent,
                base,
                &path,
                token,
                company,
                entry.paginated,
                per_page,
            )? {
                if entry.name == "projects" {
                    project_ids.extend(ids_of(&body)?);
                }
                out.push(PageBody {
                    resource: entry.name.clone(),
                    company_id: Some(company),
                    project_id: None,
                    body,
                });
            }
        }
        for &project in &project_ids {
            for entry in catalog.iter().filter(|e| e.scope == "project") {
                let path = entry
                    .path_template
                    .replace("{company_id}", &company.to_string())
                    .replace("{project_id}", &project.to_string());
                for body in get_all(
                    agent,
                    base,
                    &path,
                    token,
                    company,
                    entry.paginated,
                    per_page,
                )? {
                    out.push(PageBody {
                        resource: entry.name.clone(),
                        company_id: Some(company),
                        project_id: Some(project),
                        body,
                    });
                }
            }
        }
    }
    Ok(())
}

fn get_all(
    agent: &ureq::Agent,
    base: &str,
    path: &str,
    token: &str,
    company: i64,
    paginated: bool,
    per_page: u64,
) -> Result<Vec<String>> {
    let mut url = format!("{base}{path}");
    if paginated {
        let sep = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{sep}per_page={per_page}");
    }
    let mut bodies = Vec::new();
    let mut next = Some(url);
    while let Some(url) = next.take() {
        let (body, link) = get_list(agent, &url, token, Some(company))?;
        bodies.push(body);
        next = link.as_deref().and_then(next_link);
    }
    Ok(bodies)
}

fn get_list(
    agent: &ureq::Agent,
    url: &str,
    token: &str,
    company: Option<i64>,
) -> Result<(String, Option<String>)> {
    let mut req = agent
        .get(url)
        .set("Authorization", &format!("Bearer {token}"));
    if let Some(c) = company {
        req = req.set("Procore-Company-Id", &c.to_string());
    }
    let resp = req.call().with_context(|| format!("GET {url}"))?;
    let link = resp.header("Link").map(str::to_string);
    let mut body = String::new();
    resp.into_reader()
        .take(256 << 20)
        .read_to_string(&mut body)
        .with_context(|| format!("reading {url}"))?;
    Ok((body, link))
}

fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let part = part.trim();
        if !part.contains("rel=\"next\"") {
            return None;
        }
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_string())
    })
}

fn ids_of(body: &str) -> Result<Vec<i64>> {
    let v: Value = serde_json::from_str(body).context("a list page is not JSON")?;
    Ok(v.as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_i64()).collect())
        .unwrap_or_default())
}

struct Batch {
    resource: String,
    company_id: Option<i64>,
    project_id: Option<i64>,
    ids: Vec<i64>,
    names: Vec<Option<String>>,
    statuses: Vec<Option<String>>,
    updated: Vec<Option<String>>,
    data: Vec<Value>,
}

/// The rows the extension makes of each page (`procore_sync_core::records`), so the database
/// ceiling writes exactly the rows the sync wrote.
fn pages_to_batches(pages: Vec<PageBody>) -> Result<Vec<Batch>> {
    let mut out = Vec::with_capacity(pages.len());
    for page in pages {
        let records: Vec<Value> = serde_json::from_str(&page.body).context("page JSON")?;
        let rows = page_rows(records).context("a page the sync would refuse")?;
        if rows.is_empty() {
            continue;
        }
        let mut b = Batch {
            resource: page.resource,
            company_id: page.company_id,
            project_id: page.project_id,
            ids: Vec::with_capacity(rows.len()),
            names: Vec::with_capacity(rows.len()),
            statuses: Vec::with_capacity(rows.len()),
            updated: Vec::with_capacity(rows.len()),
            data: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            b.ids.push(row.procore_id);
            b.names.push(row.name);
            b.statuses.push(row.status);
            b.updated.push(row.updated_at);
            b.data.push(row.data);
        }
        out.push(b);
    }
    Ok(out)
}
