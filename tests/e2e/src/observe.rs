//! Helpers for the status page and metrics tests (`tests/observe.rs`): a plain GET to the
//! built-in listener from any of this machine's addresses, the machine's own non-loopback
//! IPv4 address (so that the listener sees a peer that is not loopback), and Debian's
//! headless Chromium for the page as a browser builds it and for a screenshot.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::webhooks::Reply;

/// How long one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

/// `GET url` with `authorization` as the `Authorization` header (none if `None`). Any HTTP
/// status is a `Reply`; only a transport failure is an error.
pub fn get(url: &str, authorization: Option<&str>) -> Result<Reply> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build();
    let mut request = agent.get(url);
    if let Some(a) = authorization {
        request = request.set("Authorization", a);
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(anyhow!(e).context(format!("GET {url}"))),
    };
    let status = response.status();
    let content_type = response.header("content-type").unwrap_or("").to_string();
    let body = response
        .into_string()
        .with_context(|| format!("reading the answer to GET {url}"))?;
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

/// An IPv4 address of one of this machine's interfaces that is up and is not loopback: a
/// connection to it from this machine comes from that address, not from 127.0.0.1.
pub fn non_loopback_ipv4() -> Result<Ipv4Addr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that we only read and then free
    // once with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        bail!("getifaddrs: {}", std::io::Error::last_os_error());
    }
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*at };
        let up = ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
        // SAFETY: ifa_addr is null or points at a sockaddr whose family tells its shape.
        if up
            && !ifa.ifa_addr.is_null()
            && unsafe { (*ifa.ifa_addr).sa_family } as i32 == libc::AF_INET
        {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !ip.is_loopback() && !ip.is_unspecified() {
                found.push(ip);
            }
        }
        at = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs above, freed once.
    unsafe { libc::freeifaddrs(list) };
    found.sort();
    found.first().copied().ok_or_else(|| {
        anyhow!(
            "this machine has no non-loopback IPv4 address (only loopback interfaces are up): \
             the access test needs one to reach the listener from an address that is not \
             127.0.0.1; run it on a machine (or container) with a network interface"
        )
    })
}

/// The workspace's `target/` (or `$CARGO_TARGET_DIR`): where the screenshot goes.
pub fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest_dir)
        .join("target")
}

/// Debian's `chromium` on the PATH, or a message saying how to install it.
pub fn chromium_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("chromium");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "chromium is not installed: the status page test renders the page in Debian's headless \
         Chromium (apt-get install chromium; .ci/install-prerequisites installs it)"
    )
}

/// The page at `url` as Chromium builds it, serialized (`--dump-dom`).
pub fn dump_dom(url: &str) -> Result<String> {
    let out = run_chromium(&["--dump-dom".to_string(), url.to_string()])?;
    if out.trim().is_empty() {
        bail!("chromium --dump-dom {url} printed nothing");
    }
    Ok(out)
}

/// A `width`×`height` PNG screenshot of the page at `url`, written to `path`.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    run_chromium(&[
        format!("--screenshot={}", path.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".to_string(),
        url.to_string(),
    ])?;
    if !path.is_file() {
        bail!("chromium --screenshot did not write {}", path.display());
    }
    Ok(())
}

/// Runs headless Chromium with `args` in a fresh profile and returns its stdout. It runs in
/// its own process group, killed whole if it outlives `CHROMIUM_TIMEOUT`.
fn run_chromium(args: &[String]) -> Result<String> {
    let bin = chromium_binary()?;
    let profile = tempfile::Builder::new()
        .prefix("procore-e2e-chromium-")
        .tempdir_in("/tmp")
        .context("creating a Chromium profile directory")?;
    let stderr_path = profile.path().join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path)
        .with_context(|| format!("creating {}", stderr_path.display()))?;
    let mut cmd = Command::new(&bin);
    // --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
    ])
    .arg(format!(
        "--user-data-dir={}",
        profile.path().join("profile").display()
    ))
    .args(args)
    .env("HOME", profile.path())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(stderr);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("chromium stdout not captured"))?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for chromium")? {
            break status;
        }
        if start.elapsed() > CHROMIUM_TIMEOUT {
            // SAFETY: kill(2) of the process group this function started (its leader is
            // the child, whose pid is its group id).
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            bail!(
                "chromium {} did not finish within {CHROMIUM_TIMEOUT:?}; stderr (tail):\n{}",
                args.join(" "),
                crate::cluster::tail(&read_lossy(&stderr_path), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "chromium {} failed ({status}); stderr (tail):\n{}",
            args.join(" "),
            crate::cluster::tail(&read_lossy(&stderr_path), 30)
        );
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Width and height from a PNG's IHDR chunk, if `bytes` starts like a PNG.
pub fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || &bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24])))
}

/// The names (lower case) of the elements in serialized HTML, in order: the start tags, with
/// text, comments, attribute values and raw text (`<style>`, `<script>`) skipped, so a `<`
/// that is data never counts as a tag.
pub fn element_names(html: &str) -> Vec<String> {
    let bytes = html.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        if html[i..].starts_with("<!--") {
            i = html[i..].find("-->").map_or(bytes.len(), |end| i + end + 3);
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'-') {
            end += 1;
        }
        if end == start {
            // `</x>`, `<!DOCTYPE>` or a stray `<`: no element starts here.
            i = start;
            if let Some(close) = html[i..].find('>') {
                i += close + 1;
            }
            continue;
        }
        let name = html[start..end].to_ascii_lowercase();
        // Skip to the end of the tag, past quoted attribute values.
        let mut quote = None;
        i = end;
        while i < bytes.len() {
            match (quote, bytes[i]) {
                (None, b'"' | b'\'') => quote = Some(bytes[i]),
                (Some(q), c) if c == q => quote = None,
                (None, b'>') => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
        if name == "style" || name == "script" {
            let close = format!("</{name}");
            i = html[i.min(bytes.len())..]
                .to_ascii_lowercase()
                .find(&close)
                .map_or(bytes.len(), |at| i + at);
        }
        names.push(name);
    }
    names
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_names_skip_text_attributes_and_raw_text() {
        let html = "<!DOCTYPE html><html><head><style>a > b { }</style></head><body>\
                    <!-- <script> --><p title=\"<b>x</b>\">&lt;script&gt; <span>y</span></p>\
                    </body></html>";
        assert_eq!(
            element_names(html),
            ["html", "head", "style", "body", "p", "span"]
        );
    }

    #[test]
    fn png_dimensions_read_ihdr() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend_from_slice(&1280u32.to_be_bytes());
        png.extend_from_slice(&2000u32.to_be_bytes());
        assert_eq!(png_dimensions(&png), Some((1280, 2000)));
        assert_eq!(png_dimensions(b"GIF89a"), None);
    }
}
