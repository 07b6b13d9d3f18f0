//! A crash journal for rotated refresh tokens. Procore invalidates the old refresh token the
//! moment it issues a new one, so a crash between receiving the new pair and committing it
//! to the credentials table would disconnect the user for good. The pair is written here
//! (fsynced, owner-only) as soon as it arrives, before the database transaction that stores
//! it, and replayed on the next refresh or when the scheduler starts. Pure file handling: no
//! Postgres here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use crate::procore::{Secret, TokenPair};

#[derive(Serialize, Deserialize)]
struct Entry {
    user_id: String,
    access_token: String,
    refresh_token: String,
    expires_at_epoch: i64,
}

#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

/// Only user ids that are plain UUIDs become file names, so nothing outside the journal
/// directory can ever be named.
fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

impl Journal {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Journal { dir: dir.into() }
    }

    fn path(&self, user_id: &str) -> io::Result<PathBuf> {
        if !is_uuid(user_id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "user id is not a uuid",
            ));
        }
        Ok(self.dir.join(format!("{user_id}.json")))
    }

    /// Durably records a freshly issued pair: written to a temporary file, fsynced, renamed
    /// into place, and the directory fsynced, so after a crash either the whole entry or none
    /// of it is there.
    pub fn record(&self, user_id: &str, tokens: &TokenPair) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let path = self.path(user_id)?;
        let temp = path.with_extension("tmp");
        let entry = Entry {
            user_id: user_id.to_string(),
            access_token: tokens.access_token.expose().to_string(),
            refresh_token: tokens.refresh_token.expose().to_string(),
            expires_at_epoch: tokens.expires_at.timestamp(),
        };
        let body = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&body)?;
            file.sync_all()?;
        }
        fs::rename(&temp, &path)?;
        File::open(&self.dir)?.sync_all()
    }

    /// The pair recorded for this user, if a crash left one behind.
    pub fn pending(&self, user_id: &str) -> Option<TokenPair> {
        read_entry(&self.path(user_id).ok()?).map(|(_, pair)| pair)
    }

    /// Every pair left behind, for recovery at start-up.
    pub fn all_pending(&self) -> Vec<(String, TokenPair)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| read_entry(&p))
            .collect()
    }

    /// Forgets a pair once the credentials table holds it.
    pub fn forget(&self, user_id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(user_id)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

fn read_entry(path: &Path) -> Option<(String, TokenPair)> {
    let entry: Entry = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    if !is_uuid(&entry.user_id) {
        return None;
    }
    Some((
        entry.user_id,
        TokenPair {
            access_token: Secret::new(entry.access_token),
            refresh_token: Secret::new(entry.refresh_token),
            expires_at: DateTime::from_timestamp(entry.expires_at_epoch, 0)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const USER: &str = "5b7c0b1e-0000-4000-8000-000000000001";

    fn pair(n: u32) -> TokenPair {
        TokenPair {
            access_token: Secret::new(format!("access-{n}")),
            refresh_token: Secret::new(format!("refresh-{n}")),
            expires_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        }
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "procore-journal-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        dir.join("journal")
    }

    #[test]
    fn a_recorded_pair_survives_until_forgotten() {
        let journal = Journal::new(scratch());
        assert!(journal.pending(USER).is_none());
        journal.record(USER, &pair(1)).unwrap();
        journal.record(USER, &pair(2)).unwrap();
        let pending = journal.pending(USER).unwrap();
        assert_eq!(pending.refresh_token.expose(), "refresh-2");
        assert_eq!(pending.expires_at, pair(2).expires_at);
        assert_eq!(journal.all_pending().len(), 1);
        journal.forget(USER).unwrap();
        journal.forget(USER).unwrap();
        assert!(journal.pending(USER).is_none());
    }

    #[test]
    fn entries_are_private_to_the_server_user() {
        let journal = Journal::new(scratch());
        journal.record(USER, &pair(1)).unwrap();
        let file_mode = fs::metadata(journal.path(USER).unwrap())
            .unwrap()
            .permissions()
            .mode();
        let dir_mode = fs::metadata(&journal.dir).unwrap().permissions().mode();
        assert_eq!(file_mode & 0o777, 0o600);
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn only_uuid_names_are_used() {
        let journal = Journal::new(scratch());
        assert!(journal.record("../../etc/passwd", &pair(1)).is_err());
        assert!(journal.pending("../x").is_none());
    }
}
