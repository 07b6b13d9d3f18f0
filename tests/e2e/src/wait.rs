//! Polling for conditions that the background worker makes true eventually.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Calls `f` every `poll_interval` until it returns `Ok(true)`. An `Err` from `f` ends the
/// wait at once (a broken invariant should not be waited out); running out of time is an
/// error naming `what`.
pub fn wait_until(
    timeout: Duration,
    poll_interval: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if f().with_context(|| format!("while waiting for {what}"))? {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(poll_interval);
    }
}
