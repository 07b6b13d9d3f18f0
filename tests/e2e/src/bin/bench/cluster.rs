//! The release library and the clusters that load it: each workload runs against a fresh
//! cluster running a release build of the extension (loaded through `dynamic_library_path`,
//! never the system-wide install) and the release stand-in, and drives the queue itself.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use procore_sync_e2e::{stop_requested, Env, Standin};
use serde_json::Value;
use uuid::Uuid;

/// A private directory holding the release build as `procore_sync.so`.
pub struct LibDir {
    dir: tempfile::TempDir,
}

impl LibDir {
    pub fn prepare(so: &Path) -> Result<LibDir> {
        if !so.is_file() {
            bail!(
                "{} does not exist: build it with `cargo build --release -p procore_sync` (make bench does)",
                so.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("procore-bench-lib-")
            .tempdir_in("/tmp")
            .context("creating the library directory")?;
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let dest = dir.path().join("procore_sync.so");
        std::fs::copy(so, &dest).with_context(|| format!("copying {}", so.display()))?;
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        Ok(LibDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn so_path(&self) -> PathBuf {
        self.dir.path().join("procore_sync.so")
    }
}

pub struct BenchEnv {
    pub env: Env,
    lib_path: PathBuf,
}

/// Starts the stand-in with `world` and a cluster that loads the release library, creates the
/// extension and checks that the scheduler really runs the release `.so`.
pub fn start_env(
    world: Value,
    lib: &LibDir,
    settings: &[(&str, String)],
    with_pg_stat_statements: bool,
) -> Result<BenchEnv> {
    let standin = Standin::start(world)?;
    let dlp = format!("{}:$libdir", lib.path().display());
    let mut all: Vec<(&str, String)> = vec![("dynamic_library_path", dlp)];
    if with_pg_stat_statements {
        all.push((
            "shared_preload_libraries",
            "procore_sync,pg_stat_statements".into(),
        ));
        all.push(("pg_stat_statements.track", "all".into()));
        all.push(("pg_stat_statements.max", "1000".into()));
    }
    all.extend(settings.iter().cloned());
    let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let env = Env::with_standin(standin, &refs)?;
    let bench = BenchEnv {
        env,
        lib_path: lib.so_path(),
    };
    let pid = bench.wait_for_backend("procore_sync scheduler", Duration::from_secs(30))?;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let ours = bench.lib_path.to_string_lossy().to_string();
    if !maps.contains(&ours) {
        bail!("the scheduler (pid {pid}) did not load {ours}: is dynamic_library_path honoured?");
    }
    if with_pg_stat_statements {
        bench
            .client()?
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
    }
    Ok(bench)
}

impl BenchEnv {
    pub fn client(&self) -> Result<postgres::Client> {
        self.env.client()
    }

    pub fn backend_pids(
        &self,
        client: &mut postgres::Client,
        backend_type: &str,
    ) -> Result<Vec<i32>> {
        Ok(client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = $1 ORDER BY pid",
                &[&backend_type],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub fn wait_for_backend(&self, backend_type: &str, timeout: Duration) -> Result<i32> {
        let mut client = self.client()?;
        let start = Instant::now();
        loop {
            if let Some(pid) = self.backend_pids(&mut client, backend_type)?.first() {
                return Ok(*pid);
            }
            check_stop()?;
            if start.elapsed() > timeout {
                bail!("no {backend_type:?} process after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until no sync worker is left (pool workers exit after a few idle seconds).
    pub fn wait_pool_gone(&self, timeout: Duration) -> Result<()> {
        let mut client = self.client()?;
        let start = Instant::now();
        while !self
            .backend_pids(&mut client, "procore_sync sync worker")?
            .is_empty()
        {
            check_stop()?;
            if start.elapsed() > timeout {
                bail!("sync workers still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }
}

pub fn check_stop() -> Result<()> {
    if stop_requested() {
        bail!("interrupted");
    }
    Ok(())
}

pub fn sleep_checked(d: Duration) -> Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        check_stop()?;
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
    }
    Ok(())
}

/// Both default jobs off: the bench drives the queue itself.
pub fn disable_default_jobs(client: &mut postgres::Client) -> Result<()> {
    client
        .batch_execute(
            "SELECT procore_sync_alter_job(jobid, active => false) FROM procore_sync_job",
        )
        .context("disabling the default jobs")
}

/// Connects logins `user-1..=n` with tokens issued by the stand-in's admin API and stored
/// with `procore_set_tokens`, many per statement.
pub fn connect_users(env: &Env, n: u64) -> Result<Vec<Uuid>> {
    let t = Instant::now();
    let next = AtomicUsize::new(1);
    let pairs: Mutex<Vec<(u64, String, String, i32)>> = Mutex::new(Vec::with_capacity(n as usize));
    let standin = &env.standin;
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst) as u64;
                        if i > n || stop_requested() {
                            return Ok(());
                        }
                        let v = standin.issue_tokens(&format!("user-{i}"))?;
                        let access = v["access_token"].as_str().unwrap_or_default().to_string();
                        let refresh = v["refresh_token"].as_str().unwrap_or_default().to_string();
                        let expires = v["expires_in"].as_i64().unwrap_or(3600) as i32;
                        pairs.lock().unwrap().push((i, access, refresh, expires));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("token thread panicked"))??;
        }
        Ok(())
    })?;
    check_stop()?;
    let mut pairs = pairs.into_inner().unwrap();
    pairs.sort_by_key(|p| p.0);
    let mut client = env.client()?;
    let mut ids = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(1000) {
        let users: Vec<Uuid> = chunk.iter().map(|_| Uuid::new_v4()).collect();
        let access: Vec<&str> = chunk.iter().map(|p| p.1.as_str()).collect();
        let refresh: Vec<&str> = chunk.iter().map(|p| p.2.as_str()).collect();
        let expires: Vec<i32> = chunk.iter().map(|p| p.3).collect();
        client
            .execute(
                "SELECT count(*) FROM (SELECT procore_set_tokens(u, a, r, e)
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[]) AS t(u, a, r, e)) s",
                &[&users, &access, &refresh, &expires],
            )
            .context("procore_set_tokens")?;
        ids.extend(users);
    }
    println!(
        "  connected {} users in {:.1}s",
        ids.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(ids)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct QueueCounts {
    pub open: i64,
    pub completed: i64,
    pub failed: i64,
}

pub fn queue_counts(client: &mut postgres::Client) -> Result<QueueCounts> {
    let row = client.query_one(
        "SELECT count(*) FILTER (WHERE status IN ('pending', 'processing')),
                count(*) FILTER (WHERE status = 'completed'),
                count(*) FILTER (WHERE status = 'failed')
         FROM procore_sync_queue",
        &[],
    )?;
    Ok(QueueCounts {
        open: row.get(0),
        completed: row.get(1),
        failed: row.get(2),
    })
}

/// `queue_procore_sync_for_all_users()` then `process_procore_sync_queue()`, as the two
/// default jobs would run them; returns when both have returned.
pub fn start_cycle(client: &mut postgres::Client) -> Result<(i32, i32)> {
    let queued: i32 = client
        .query_one("SELECT queue_procore_sync_for_all_users()", &[])?
        .get(0);
    let taken: i32 = client
        .query_one("SELECT process_procore_sync_queue()", &[])?
        .get(0);
    Ok((queued, taken))
}

pub fn first_failure(client: &mut postgres::Client) -> Result<String> {
    Ok(client
        .query(
            "SELECT coalesce(error_message, '') FROM procore_sync_queue
             WHERE status = 'failed' OR error_message IS NOT NULL LIMIT 1",
            &[],
        )?
        .first()
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default())
}

pub fn api_requests(standin: &Standin) -> Result<i64> {
    Ok(standin.stats()?["api_requests"].as_i64().unwrap_or(0))
}

/// `procore_sync.users_per_worker` as a fresh session sees it; None where the build does
/// not define it (a placeholder nobody set reads as NULL).
pub fn users_per_worker_setting(client: &mut postgres::Client) -> Result<Option<u32>> {
    let v: Option<String> = client
        .query_one(
            "SELECT current_setting('procore_sync.users_per_worker', true)",
            &[],
        )?
        .get(0);
    Ok(v.and_then(|s| s.trim().parse().ok()))
}
