//! The Procore stand-in (`procore-standin`) as a child process, and its admin API.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

/// How long the stand-in may take to print its `LISTENING` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A record's identity, as `procore_records` keys it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub struct RecordKey {
    pub resource: String,
    pub company_id: i64,
    pub id: i64,
}

/// A running stand-in. Dropping it kills the process.
pub struct Standin {
    child: Child,
    base_url: String,
    world: Value,
    agent: ureq::Agent,
    ca_file: Option<PathBuf>,
    // Holds the world file and the stand-in's stderr; taken on drop to keep or remove it.
    files: Option<tempfile::TempDir>,
    files_dir: PathBuf,
}

impl Standin {
    /// Starts a plain-HTTP stand-in serving `world` (see `tests/standin/API.md`).
    pub fn start(world: Value) -> Result<Standin> {
        Self::spawn(world, None)
    }

    /// Starts an HTTPS-only stand-in; it writes its CA to `dir/ca.pem`.
    pub fn start_tls(world: Value, dir: &Path) -> Result<Standin> {
        Self::spawn(world, Some(dir))
    }

    fn spawn(world: Value, tls_dir: Option<&Path>) -> Result<Standin> {
        let bin = standin_binary()?;
        let files = tempfile::Builder::new()
            .prefix("procore-e2e-standin-")
            .tempdir_in("/tmp")
            .context("creating the stand-in's temp dir")?;
        let world_path = files.path().join("world.json");
        std::fs::write(&world_path, serde_json::to_vec_pretty(&world)?)
            .with_context(|| format!("writing {}", world_path.display()))?;
        let stderr_path = files.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;

        let mut cmd = Command::new(&bin);
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--world")
            .arg(&world_path)
            // Our end of stdin closes when this process dies however it dies, so the
            // stand-in never outlives a killed test.
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(dir) = tls_dir {
            cmd.arg("--tls-dir").arg(dir);
        }
        // Its own process group: a Ctrl-C in the demo's terminal must not kill it before
        // the demo has shut down cleanly.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;

        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("stand-in stdout not captured"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(first);
            // Keep draining so that a chatty stand-in never blocks on a full pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => {
                let _ = child.kill();
                bail!("reading the stand-in's stdout: {e}");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "procore-standin did not print LISTENING within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                    read_lossy(&stderr_path)
                );
            }
        };
        let Some(base_url) = line.trim().strip_prefix("LISTENING ").map(str::to_string) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "procore-standin printed {:?} instead of `LISTENING <url>`; stderr:\n{}",
                line.trim(),
                read_lossy(&stderr_path)
            );
        };

        let ca_file = tls_dir.map(|d| d.join("ca.pem"));
        let agent = match &ca_file {
            Some(ca) => tls_agent(ca)?,
            None => ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        };
        let files_dir = files.path().to_path_buf();
        Ok(Standin {
            child,
            base_url,
            world,
            agent,
            ca_file,
            files: Some(files),
            files_dir,
        })
    }

    /// `http://127.0.0.1:PORT` (or `https://...`): both the API and the login base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The CA the stand-in generated, in TLS mode.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The world it was started with (or last given to `set_world`).
    pub fn world(&self) -> &Value {
        &self.world
    }

    pub fn client_id(&self) -> String {
        self.world_str("client_id", "standin-client")
    }

    pub fn client_secret(&self) -> String {
        self.world_str("client_secret", "standin-secret")
    }

    fn world_str(&self, key: &str, default: &str) -> String {
        self.world
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string()
    }

    /// What the stand-in wrote to stderr so far.
    pub fn stderr_log(&self) -> String {
        read_lossy(&self.files_dir.join("stderr.log"))
    }

    /// Replaces the world and forgets every token, code and counter.
    pub fn set_world(&mut self, world: Value) -> Result<()> {
        self.admin("PUT", "/__admin/world", Some(&world))?;
        self.world = world;
        Ok(())
    }

    /// An authorization code for `login`, valid once with exactly this `redirect_uri`.
    pub fn mint_code(&self, login: &str, redirect_uri: &str) -> Result<String> {
        let v = self.admin(
            "POST",
            "/__admin/codes",
            Some(&json!({"login": login, "redirect_uri": redirect_uri})),
        )?;
        v.get("code")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("/__admin/codes answered without a code: {v}"))
    }

    /// A token pair for `login`, issued without the OAuth dance (the token response JSON).
    pub fn issue_tokens(&self, login: &str) -> Result<Value> {
        self.admin("POST", "/__admin/tokens", Some(&json!({"login": login})))
    }

    /// Every access token of `login` expires now.
    pub fn expire_tokens(&self, login: &str) -> Result<()> {
        self.admin(
            "POST",
            "/__admin/expire_tokens",
            Some(&json!({"login": login})),
        )
        .map(drop)
    }

    /// Revokes every token of `login`: its refresh token now gets `invalid_grant`.
    pub fn revoke(&self, login: &str) -> Result<()> {
        self.admin("POST", "/__admin/revoke", Some(&json!({"login": login})))
            .map(drop)
    }

    /// Appends fault rules; takes one rule object or an array of them.
    pub fn add_faults(&self, rules: Value) -> Result<()> {
        let rules = if rules.is_array() {
            rules
        } else {
            Value::Array(vec![rules])
        };
        self.admin("POST", "/__admin/faults", Some(&json!({"rules": rules})))
            .map(drop)
    }

    pub fn clear_faults(&self) -> Result<()> {
        self.admin("DELETE", "/__admin/faults", None).map(drop)
    }

    /// `{"action": "edit"|"delete"|"restore"|"add", "resource", "company_id", "project_id", "id"}`.
    pub fn mutate(&self, change: Value) -> Result<Value> {
        self.admin("POST", "/__admin/mutate", Some(&change))
    }

    /// Request counters (`requests`, `api_requests`, `by_status`, `rate_limited`, ...).
    /// What the stand-in's test receiver got at `/__capture/{name}`, oldest first: each
    /// with `headers` and `body` (JSON when it parsed).
    pub fn captures(&self, name: &str) -> Result<Vec<Value>> {
        let v = self.admin("GET", &format!("/__admin/captures/{name}"), None)?;
        serde_json::from_value(v).context("decoding /__admin/captures")
    }

    pub fn stats(&self) -> Result<Value> {
        self.admin("GET", "/__admin/stats", None)
    }

    /// The request log after sequence number `seq` (0 for everything).
    pub fn requests_since(&self, seq: u64) -> Result<Vec<Value>> {
        let v = self.admin("GET", &format!("/__admin/requests?since={seq}"), None)?;
        serde_json::from_value(v).context("decoding /__admin/requests")
    }

    /// Every record that currently exists, for every login.
    pub fn records(&self) -> Result<Vec<RecordKey>> {
        let v = self.admin("GET", "/__admin/records", None)?;
        serde_json::from_value(v).context("decoding /__admin/records")
    }

    /// Every record that currently exists with its `project_id` and `updated_at`.
    pub fn records_detailed(&self) -> Result<Vec<Value>> {
        let v = self.admin("GET", "/__admin/records", None)?;
        serde_json::from_value(v).context("decoding /__admin/records")
    }

    /// Gives `login` access to `company_id`, limited to `projects` (`Some(&[])` for none
    /// of them), or takes the company away with `None`. Takes effect on the next
    /// request; tokens stay valid.
    pub fn set_access(&self, login: &str, company_id: i64, projects: Option<&[i64]>) -> Result<()> {
        self.admin(
            "POST",
            "/__admin/access",
            Some(&json!({"login": login, "company_id": company_id, "projects": projects})),
        )
        .map(drop)
    }

    /// Makes a record private to `visible_to`, or public again with `None`.
    pub fn set_private(&self, resource: &str, id: i64, visible_to: Option<&[&str]>) -> Result<()> {
        self.admin(
            "POST",
            "/__admin/private",
            Some(&json!({"resource": resource, "id": id, "visible_to": visible_to})),
        )
        .map(drop)
    }

    /// Exactly the records `login`'s API listings return now.
    pub fn records_for(&self, login: &str) -> Result<Vec<RecordKey>> {
        let path = format!("/__admin/records?login={}", query_escape(login));
        let v = self.admin("GET", &path, None)?;
        serde_json::from_value(v).with_context(|| format!("decoding {path}"))
    }

    /// Every distinct record served in a 200 response so far.
    pub fn served(&self) -> Result<Vec<RecordKey>> {
        let v = self.admin("GET", "/__admin/served", None)?;
        serde_json::from_value(v).context("decoding /__admin/served")
    }

    /// Every token, code and the client secret ever issued, for leak checks.
    pub fn secrets(&self) -> Result<Vec<String>> {
        let v = self.admin("GET", "/__admin/secrets", None)?;
        serde_json::from_value(v).context("decoding /__admin/secrets")
    }

    /// `text` with every secret the stand-in ever issued (tokens, codes, the client secret,
    /// hook secrets) and every one of `more` replaced by `<secret>`: for failure messages
    /// that quote logs. Values under 8 characters are left, as they match too much.
    pub fn redact(&self, text: &str, more: &[String]) -> String {
        let mut text = text.to_string();
        let mut secrets = self.secrets().unwrap_or_default();
        secrets.extend(more.iter().cloned());
        for s in secrets.iter().filter(|s| s.len() >= 8) {
            text = text.replace(s.as_str(), "<secret>");
        }
        text
    }

    pub fn health(&self) -> Result<bool> {
        let v = self.admin("GET", "/__admin/health", None)?;
        Ok(v.get("ok").and_then(Value::as_bool).unwrap_or(false))
    }

    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base_url);
        let request = self.agent.request(method, &url);
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                bail!("{method} {path} -> {code}: {text}");
            }
            Err(e) => return Err(anyhow!(e).context(format!("{method} {path}"))),
        };
        let text = response
            .into_string()
            .with_context(|| format!("reading {method} {path}"))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path} answered non-JSON: {text:.200}"))
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if crate::cluster::keep_requested() {
            if let Some(files) = self.files.take() {
                let _ = files.keep();
                eprintln!(
                    "procore_sync_e2e: PROCORE_E2E_KEEP=1, leaving stand-in files in {}",
                    self.files_dir.display()
                );
            }
        }
    }
}

/// Finds `procore-standin`: `$PROCORE_STANDIN_BIN`, else the release then the debug build
/// (in `$CARGO_TARGET_DIR` first, then the workspace's `target/`).
pub fn standin_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("PROCORE_STANDIN_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("PROCORE_STANDIN_BIN={} does not exist", path.display());
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // tests/e2e -> the workspace root.
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest_dir);
    let mut target_dirs = Vec::new();
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        target_dirs.push(PathBuf::from(dir));
    }
    target_dirs.push(workspace.join("target"));
    let candidates: Vec<PathBuf> = target_dirs
        .iter()
        .flat_map(|t| {
            [
                t.join("release/procore-standin"),
                t.join("debug/procore-standin"),
            ]
        })
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow!("procore-standin binary not found (looked at {}): build it with `cargo build -p procore-standin` \
                 or set PROCORE_STANDIN_BIN",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))
    })
}

fn tls_agent(ca_file: &Path) -> Result<ureq::Agent> {
    let pem = std::fs::read(ca_file)
        .with_context(|| format!("reading the stand-in CA {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(cert.context("parsing the stand-in CA")?)
            .context("trusting the stand-in CA")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("configuring TLS")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .tls_config(Arc::new(config))
        .build())
}

/// Logins are `user-N` today, but a test may pass anything.
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
