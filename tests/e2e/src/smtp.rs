//! A real SMTP server for the alert tests: aiosmtpd (from PyPI, installed by
//! `.ci/install-prerequisites`) running the core crate's recorder script, which appends each
//! accepted message to a file as one JSON line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

const SERVER_SCRIPT: &str =
    include_str!("../../../procore_sync_core/src/alerts/smtp_test_server.py");

pub struct MailServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl MailServer {
    /// A plain-text SMTP server on 127.0.0.1 and a free port.
    pub fn start() -> Result<MailServer> {
        let dir = tempfile::tempdir().context("a directory for the mail server")?;
        let script = dir.path().join("smtp_test_server.py");
        std::fs::write(&script, SERVER_SCRIPT)?;
        let stderr = std::fs::File::create(dir.path().join("stderr"))?;
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--out")
            .arg(dir.path().join("mail.jsonl"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context(
                "starting python3 smtp_test_server.py (needs aiosmtpd: `make prerequisites`)",
            )?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(port) = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
        else {
            let _ = child.kill();
            bail!(
                "the SMTP server printed {line:?}; stderr:\n{}",
                std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
            );
        };
        Ok(MailServer { child, port, dir })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `procore_sync.smtp_url` for this server: plain SMTP on loopback.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far: `subject`, `to`, `body`, `data` (the whole message).
    pub fn messages(&self) -> Result<Vec<Value>> {
        let path: PathBuf = self.dir.path().join("mail.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        text.lines()
            .map(|l| serde_json::from_str(l).context("a line of mail.jsonl"))
            .collect()
    }

    /// Stops the server: connections to its port are refused from now on.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        self.stop();
    }
}
