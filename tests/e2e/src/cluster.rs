//! A throwaway PostgreSQL 15 cluster, run as the `postgres` OS user because the server
//! refuses to run as root.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Where Debian puts the PostgreSQL 15 server binaries.
pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The server binaries the tests run: `PROCORE_E2E_PG_BIN` names a relocated copy of
/// PostgreSQL 15 (its `lib/` and `share/` beside each other, as Debian lays them out), so
/// two checkouts can install and test their own builds on one machine at once.
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("PROCORE_E2E_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PG_BIN_DIR))
}
/// The OS user that owns and runs every cluster.
pub const PG_OS_USER: &str = "postgres";

/// How `pg_ctl stop` shuts the server down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Clean shutdown: backends are terminated, a checkpoint is written.
    Fast,
    /// No checkpoint: the next start runs crash recovery, as after a power cut.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// What the cluster is started with.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Adds `shared_preload_libraries = 'procore_sync'`, which starts the scheduler.
    pub preload: bool,
    /// `name = value` lines for `postgresql.conf`; values are quoted by the harness.
    pub settings: Vec<(String, String)>,
    /// Raw lines appended to `postgresql.conf` after everything else.
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            preload: true,
            settings: Vec::new(),
            extra_conf: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// A cluster without the extension preloaded: only SQL functions, no scheduler.
    pub fn without_preload() -> Self {
        ClusterOptions {
            preload: false,
            ..Self::default()
        }
    }

    /// Adds one setting (for example `procore_sync.max_workers`, `"4"`).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_string(), value.to_string()));
        self
    }
}

/// A running (or stopped) throwaway cluster. Dropping it stops the server and removes its
/// directory, unless `PROCORE_E2E_KEEP=1`.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    running: bool,
}

impl Cluster {
    /// Creates a cluster in a fresh directory under `/tmp` and starts it.
    pub fn start(options: ClusterOptions) -> Result<Cluster> {
        if options.preload {
            ensure_extension_installed()?;
        }
        let dir = tempfile::Builder::new()
            .prefix("procore-e2e-")
            .tempdir_in("/tmp")
            .context("creating the cluster directory under /tmp")?
            .keep();
        // Built before initdb so that Drop removes the directory if anything below fails.
        let mut cluster = Cluster {
            dir,
            port: 0,
            running: false,
        };
        run_checked(
            Command::new("chown").arg(PG_OS_USER).arg(&cluster.dir),
            "chown",
        )?;
        cluster.initdb()?;

        let base_conf = base_conf(&cluster.dir, &options)?;
        // Another process can take the port between probing it and the postmaster binding
        // it (tests run in parallel), so a failed start is retried on a new port.
        let mut last_err = None;
        for _ in 0..3 {
            cluster.port = free_port()?;
            cluster.write_conf(&base_conf)?;
            match cluster.start_again() {
                Ok(()) => return Ok(cluster),
                Err(e) if cluster.log().contains("could not bind") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("could not start the cluster")))
    }

    fn initdb(&self) -> Result<()> {
        let data = self.data_dir();
        let out = self
            .pg_command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
                "-D",
            ])
            .arg(&data)
            .output()
            .context("running initdb")?;
        check_output(&out, "initdb")
    }

    fn write_conf(&self, base: &str) -> Result<()> {
        // The harness's settings live in their own included file so that a retry on a new
        // port can rewrite them; postgresql.auto.conf (ALTER SYSTEM) is read later and wins.
        let conf = format!("port = {}\n{base}", self.port);
        let harness_conf = self.data_dir().join("e2e.conf");
        std::fs::write(&harness_conf, conf)
            .with_context(|| format!("writing {}", harness_conf.display()))?;
        let main = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&main)
            .with_context(|| format!("reading {}", main.display()))?;
        if !text.contains("include = 'e2e.conf'") {
            text.push_str("\ninclude = 'e2e.conf'\n");
            std::fs::write(&main, text).with_context(|| format!("writing {}", main.display()))?;
        }
        Ok(())
    }

    /// Starts a stopped cluster and waits until it accepts connections. (Named so because
    /// `Cluster::start` is the constructor.)
    pub fn start_again(&mut self) -> Result<()> {
        let out = self
            .pg_command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}\n--- server log (tail) ---\n{}",
                describe_output(&out),
                tail(&self.log(), 40)
            );
        }
        self.running = true;
        Ok(())
    }

    /// Stops the server and waits until it has exited.
    pub fn stop(&mut self, mode: StopMode) -> Result<()> {
        let out = self
            .pg_command("pg_ctl")
            .args(["stop", "-w", "-t", "60", "-m", mode.as_arg(), "-D"])
            .arg(self.data_dir())
            .output()
            .context("running pg_ctl stop")?;
        check_output(&out, "pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    /// `stop(mode)` then `start_again()`; after `Immediate` the start runs crash recovery.
    pub fn restart(&mut self, mode: StopMode) -> Result<()> {
        self.stop(mode)?;
        self.start_again()
    }

    /// Whether the harness believes the server is up (it started it and has not stopped it).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// A connection to database `postgres` as superuser `postgres`.
    pub fn client(&self) -> Result<postgres::Client> {
        self.client_for("postgres", "postgres")
    }

    /// A connection to `db` as `user` (trust authentication, so no password).
    pub fn client_for(&self, db: &str, user: &str) -> Result<postgres::Client> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .dbname(db)
            .application_name("procore_sync_e2e")
            .connect_timeout(Duration::from_secs(10))
            .connect(postgres::NoTls)
            .with_context(|| {
                format!(
                    "connecting to database {db} as {user} on port {}",
                    self.port
                )
            })
    }

    /// `ALTER SYSTEM SET name = 'value'` and `pg_reload_conf()`: a SIGHUP change as an
    /// operator would make it.
    pub fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        let name = setting_name(name)?;
        let mut client = self.client()?;
        // ALTER SYSTEM takes no parameters, so the value is quoted as a literal here.
        client
            .batch_execute(&format!(
                "ALTER SYSTEM SET {name} = {}",
                quote_literal(value)
            ))
            .with_context(|| format!("ALTER SYSTEM SET {name}"))?;
        client
            .execute("SELECT pg_reload_conf()", &[])
            .context("pg_reload_conf()")?;
        Ok(())
    }

    /// The postmaster's pid, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Result<i32> {
        let path = self.data_dir().join("postmaster.pid");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (is the server running?)", path.display()))?;
        let first = text.lines().next().unwrap_or("").trim();
        first
            .parse()
            .with_context(|| format!("bad pid line {first:?} in {}", path.display()))
    }

    /// Everything the server has logged so far (empty if nothing was logged yet).
    pub fn log(&self) -> String {
        std::fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the server log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's root directory (data dir, socket and log live inside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The socket directory, for `psql -h`.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// The psql command line that reaches this cluster.
    pub fn psql_command(&self) -> String {
        format!("psql -h 127.0.0.1 -p {} -U postgres postgres", self.port)
    }

    fn pg_command(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", PG_OS_USER, "--"])
            .arg(pg_bin_dir().join(program));
        // The caller's cwd is usually unreadable for `postgres`, which makes initdb and
        // pg_ctl complain; the cluster dir is always theirs.
        cmd.current_dir(&self.dir);
        cmd
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            if let Err(e) = self.stop(StopMode::Immediate) {
                eprintln!(
                    "procore_sync_e2e: stopping cluster in {}: {e:#}",
                    self.dir.display()
                );
            }
        }
        if keep_requested() {
            eprintln!(
                "procore_sync_e2e: PROCORE_E2E_KEEP=1, leaving cluster in {} (log: {})",
                self.dir.display(),
                self.log_path().display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("procore_sync_e2e: removing {}: {e}", self.dir.display());
        }
    }
}

/// `PROCORE_E2E_KEEP=1` keeps clusters and stand-in files for a post-mortem.
pub fn keep_requested() -> bool {
    std::env::var("PROCORE_E2E_KEEP").is_ok_and(|v| v == "1")
}

/// Fails with a pointer to `make install` unless the extension's library and control file
/// are in the system PostgreSQL directories.
pub fn ensure_extension_installed() -> Result<()> {
    let pg_config = pg_bin_dir().join("pg_config");
    let query = |flag: &str| -> Result<PathBuf> {
        let out = Command::new(&pg_config)
            .arg(flag)
            .output()
            .with_context(|| format!("running {} {flag}", pg_config.display()))?;
        check_output(&out, "pg_config")?;
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let library = query("--pkglibdir")?.join("procore_sync.so");
    let control = query("--sharedir")?
        .join("extension")
        .join("procore_sync.control");
    for path in [&library, &control] {
        if !path.exists() {
            bail!(
                "the procore_sync extension is not installed ({} is missing): run `make install` \
                   (cargo pgrx install --pg-config {}/pg_config --release) first",
                path.display(),
                pg_bin_dir().display()
            );
        }
    }
    Ok(())
}

fn base_conf(dir: &Path, options: &ClusterOptions) -> Result<String> {
    let mut conf = String::new();
    let socket_dir = dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 temp dir {}", dir.display()))?;
    let lines = [
        "listen_addresses = '127.0.0.1'".to_string(),
        format!("unix_socket_directories = {}", quote_literal(socket_dir)),
        "max_worker_processes = 32".to_string(),
        "max_connections = 60".to_string(),
        // Small and unsynced: the clusters are thrown away and the machine has 2 cores.
        // fsync = off still survives a server crash (the OS keeps the writes); an async
        // commit would not, and crash tests must see every acknowledged commit.
        "shared_buffers = '32MB'".to_string(),
        "fsync = off".to_string(),
        "full_page_writes = off".to_string(),
        "logging_collector = off".to_string(),
        "log_min_messages = info".to_string(),
        // %q: background processes (the scheduler, sync workers) get no empty user@db.
        "log_line_prefix = '%m [%p] %b %q%u@%d %a '".to_string(),
        "log_timezone = 'UTC'".to_string(),
    ];
    for line in lines {
        writeln!(conf, "{line}")?;
    }
    if options.preload {
        writeln!(conf, "shared_preload_libraries = 'procore_sync'")?;
    }
    for (name, value) in &options.settings {
        writeln!(conf, "{} = {}", setting_name(name)?, quote_literal(value))?;
    }
    for line in &options.extra_conf {
        writeln!(conf, "{line}")?;
    }
    Ok(conf)
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Setting names go into SQL and config text unquoted, so only plain names are accepted.
fn setting_name(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !ok {
        bail!("not a plain setting name: {name:?}");
    }
    Ok(name)
}

/// A single-quoted literal for config files and `ALTER SYSTEM` (standard_conforming_strings
/// is on, so doubling quotes is enough).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    check_output(&out, what)
}

fn check_output(out: &Output, what: &str) -> Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        bail!("{what} failed: {}", describe_output(out))
    }
}

fn describe_output(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
