//! Analyst sync: the SHA-256 of each data file (computed when it is written, or once when a
//! file appears that Dataport did not write), and each user's sync settings.

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{OptionalExtension, params};

use crate::{Result, StateStore};

/// The digest of a file as it was when hashed: a different size or modification time means a
/// different file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// The file's path relative to the data dir.
    pub path: String,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Lowercase hex.
    pub sha256: String,
}

impl FileDigest {
    /// The digest record of `file` (under `data_dir`) as it is now on disk, with `sha256`
    /// taken of its bytes (by whoever wrote it). `None` when the file is not under `data_dir`.
    pub fn of_file(data_dir: &Path, file: &Path, sha256: String) -> std::io::Result<Option<Self>> {
        let Some(path) = relative_path(data_dir, file) else {
            return Ok(None);
        };
        let meta = std::fs::metadata(file)?;
        Ok(Some(Self {
            path,
            size: meta.len(),
            mtime_ns: mtime_ns(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
            sha256,
        }))
    }
}

/// `file` relative to `data_dir`, with `/` separators: how digests and sync manifests name
/// files.
pub fn relative_path(data_dir: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(data_dir).ok()?;
    Some(
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
    )
}

/// A modification time as nanoseconds since the epoch.
pub fn mtime_ns(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl StateStore {
    /// Record (or replace) the digest of a file.
    pub fn put_file_digest(&self, d: &FileDigest) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT OR REPLACE INTO file_digests (path, size, mtime_ns, sha256) \
             VALUES (?1, ?2, ?3, ?4)",
            params![
                d.path,
                i64::try_from(d.size).unwrap_or(i64::MAX),
                d.mtime_ns,
                d.sha256
            ],
        )?;
        Ok(())
    }

    /// The digest of `path` if it was taken of the file with this size and modification time.
    pub fn file_digest(&self, path: &str, size: u64, mtime_ns: i64) -> Result<Option<String>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT sha256 FROM file_digests WHERE path = ?1 AND size = ?2 AND mtime_ns = ?3",
                params![path, i64::try_from(size).unwrap_or(i64::MAX), mtime_ns],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Forget digests of files that are no longer there (`keep` says which paths remain).
    pub fn prune_file_digests(&self, keep: &dyn Fn(&str) -> bool) -> Result<usize> {
        let conn = self.lock();
        let paths: Vec<String> = {
            let mut stmt = conn.prepare("SELECT path FROM file_digests")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut removed = 0;
        for path in paths.iter().filter(|p| !keep(p)) {
            removed += conn.execute("DELETE FROM file_digests WHERE path = ?1", [path])?;
        }
        Ok(removed)
    }

    /// A user's sync settings (JSON), if they saved any.
    pub fn sync_settings(&self, account: i64) -> Result<Option<String>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT settings FROM account_sync_settings WHERE account_id = ?1",
                [account],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Save a user's sync settings (JSON).
    pub fn put_sync_settings(&self, account: i64, settings: &str, now: i64) -> Result<()> {
        let conn = self.lock();
        let n = conn.execute(
            "INSERT OR REPLACE INTO account_sync_settings (account_id, settings, updated_at) \
             SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?1)",
            params![account, settings, now],
        )?;
        if n == 0 {
            return Err(crate::StateError::NoSuchUser(format!("account {account}")));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_per_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let d = FileDigest {
            path: "parquet/s/t.parquet".into(),
            size: 10,
            mtime_ns: 5,
            sha256: "ab".into(),
        };
        store.put_file_digest(&d).unwrap();
        assert_eq!(
            store.file_digest(&d.path, 10, 5).unwrap().as_deref(),
            Some("ab")
        );
        assert_eq!(store.file_digest(&d.path, 11, 5).unwrap(), None);
        assert_eq!(store.file_digest(&d.path, 10, 6).unwrap(), None);
        assert_eq!(store.prune_file_digests(&|p| p != d.path).unwrap(), 1);
        assert_eq!(store.file_digest(&d.path, 10, 5).unwrap(), None);
    }

    #[test]
    fn settings_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.add_user("ann", "hash", &[]).unwrap();
        let ann = store.user("ann").unwrap().unwrap().id;
        assert_eq!(store.sync_settings(ann).unwrap(), None);
        store.put_sync_settings(ann, "{\"a\":1}", 7).unwrap();
        store.put_sync_settings(ann, "{\"a\":2}", 8).unwrap();
        assert!(store.put_sync_settings(ann + 1, "{}", 9).is_err());
        assert_eq!(
            store.sync_settings(ann).unwrap().as_deref(),
            Some("{\"a\":2}")
        );
    }
}
