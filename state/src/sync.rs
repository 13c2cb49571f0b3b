//! Analyst sync: the SHA-256 of each data file (computed when it is written, or once when a
//! file appears that Dataport did not write), each user's sync settings, and each user's pulls
//! as the server saw them.

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

/// A pull's file requests belong to the pull whose manifest came at most this long before.
pub const PULL_WINDOW_MS: i64 = 6 * 3600 * 1000;
/// Pulls kept per account.
const PULLS_KEPT: i64 = 50;

/// How one file request of a pull ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PulledFile {
    /// The file (or the asked range of it) was sent: so many bytes.
    Sent { bytes: u64 },
    /// The analyst had it already (`304 Not Modified`).
    Unchanged,
    /// Refused or failed, with what the analyst was told.
    Failed { error: String },
}

/// One pull of an analyst: the manifest fetched, and what followed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PullRecord {
    /// Unix milliseconds of the manifest fetch (or the first file request).
    pub started_at_ms: i64,
    /// Unix milliseconds of the last request of the pull.
    pub last_at_ms: i64,
    /// Tables, files and bytes in the manifest.
    pub tables: u64,
    pub manifest_files: u64,
    pub manifest_bytes: u64,
    /// Files (or ranges of them) sent, and their bytes.
    pub files_sent: u64,
    pub bytes_sent: u64,
    /// Files the analyst already had.
    pub files_unchanged: u64,
    /// Requests that failed, and the last one's error.
    pub errors: u64,
    pub last_error: Option<String>,
}

impl StateStore {
    /// A pull starts: `account` fetched a manifest of `tables` tables, `files` files and
    /// `bytes` bytes at `at_ms` (or failed to, with `error`). Older pulls beyond the last
    /// fifty are forgotten.
    pub fn begin_pull(
        &self,
        account: i64,
        at_ms: i64,
        (tables, files, bytes): (u64, u64, u64),
        error: Option<&str>,
    ) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO analyst_pulls (account_id, started_at, last_at, tables, manifest_files, \
             manifest_bytes, errors, last_error) \
             SELECT ?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?1)",
            params![
                account,
                at_ms,
                tables as i64,
                files as i64,
                bytes as i64,
                i64::from(error.is_some()),
                error
            ],
        )?;
        conn.execute(
            "DELETE FROM analyst_pulls WHERE account_id = ?1 AND id NOT IN \
             (SELECT id FROM analyst_pulls WHERE account_id = ?1 ORDER BY id DESC LIMIT ?2)",
            params![account, PULLS_KEPT],
        )?;
        Ok(())
    }

    /// A file request of `account`'s pull at `at_ms`: counted in the pull whose manifest came
    /// within [`PULL_WINDOW_MS`], else in a pull of its own (files fetched without a manifest).
    pub fn record_pulled_file(&self, account: i64, at_ms: i64, file: &PulledFile) -> Result<()> {
        let (sent, bytes, unchanged, errors, error) = match file {
            PulledFile::Sent { bytes } => (1, *bytes as i64, 0, 0, None),
            PulledFile::Unchanged => (0, 0, 1, 0, None),
            PulledFile::Failed { error } => (0, 0, 0, 1, Some(error.as_str())),
        };
        let conn = self.lock();
        let current: Option<i64> = conn
            .query_row(
                "SELECT id FROM analyst_pulls WHERE account_id = ?1 AND started_at >= ?2 \
                 ORDER BY id DESC LIMIT 1",
                params![account, at_ms - PULL_WINDOW_MS],
                |r| r.get(0),
            )
            .optional()?;
        match current {
            Some(id) => {
                conn.execute(
                    "UPDATE analyst_pulls SET last_at = max(last_at, ?2), \
                     files_sent = files_sent + ?3, bytes_sent = bytes_sent + ?4, \
                     files_unchanged = files_unchanged + ?5, errors = errors + ?6, \
                     last_error = coalesce(?7, last_error) WHERE id = ?1",
                    params![id, at_ms, sent, bytes, unchanged, errors, error],
                )?;
            }
            None => {
                conn.execute(
                    "INSERT INTO analyst_pulls (account_id, started_at, last_at, files_sent, \
                     bytes_sent, files_unchanged, errors, last_error) \
                     SELECT ?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7 \
                     WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?1)",
                    params![account, at_ms, sent, bytes, unchanged, errors, error],
                )?;
            }
        }
        Ok(())
    }

    /// `account`'s last `limit` pulls, newest first.
    pub fn pulls(&self, account: i64, limit: usize) -> Result<Vec<PullRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT started_at, last_at, tables, manifest_files, manifest_bytes, files_sent, \
             bytes_sent, files_unchanged, errors, last_error FROM analyst_pulls \
             WHERE account_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![account, limit as i64], |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
            Ok(PullRecord {
                started_at_ms: r.get(0)?,
                last_at_ms: r.get(1)?,
                tables: n(2)?,
                manifest_files: n(3)?,
                manifest_bytes: n(4)?,
                files_sent: n(5)?,
                bytes_sent: n(6)?,
                files_unchanged: n(7)?,
                errors: n(8)?,
                last_error: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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

    #[test]
    fn a_pull_counts_the_requests_that_follow_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.add_user("ann", "hash", &[]).unwrap();
        let ann = store.user("ann").unwrap().unwrap().id;
        assert!(store.pulls(ann, 5).unwrap().is_empty());
        let t0 = 1_000_000_000_000;
        store.begin_pull(ann, t0, (3, 4, 1000), None).unwrap();
        store
            .record_pulled_file(ann, t0 + 10, &PulledFile::Sent { bytes: 600 })
            .unwrap();
        store
            .record_pulled_file(ann, t0 + 20, &PulledFile::Unchanged)
            .unwrap();
        store
            .record_pulled_file(
                ann,
                t0 + 30,
                &PulledFile::Failed {
                    error: "file changed".into(),
                },
            )
            .unwrap();
        let pulls = store.pulls(ann, 5).unwrap();
        assert_eq!(
            pulls,
            [PullRecord {
                started_at_ms: t0,
                last_at_ms: t0 + 30,
                tables: 3,
                manifest_files: 4,
                manifest_bytes: 1000,
                files_sent: 1,
                bytes_sent: 600,
                files_unchanged: 1,
                errors: 1,
                last_error: Some("file changed".into()),
            }]
        );
        // A file much later, without a manifest, is a pull of its own; a failed manifest too.
        let later = t0 + PULL_WINDOW_MS + 1;
        store
            .record_pulled_file(ann, later, &PulledFile::Sent { bytes: 5 })
            .unwrap();
        store
            .begin_pull(ann, later + 1, (0, 0, 0), Some("the server is busy"))
            .unwrap();
        let pulls = store.pulls(ann, 5).unwrap();
        assert_eq!(pulls.len(), 3);
        assert_eq!(
            (pulls[0].errors, pulls[0].last_error.as_deref()),
            (1, Some("the server is busy"))
        );
        assert_eq!(
            (
                pulls[1].files_sent,
                pulls[1].bytes_sent,
                pulls[1].manifest_files
            ),
            (1, 5, 0)
        );
        // Only the last fifty are kept; an unknown account records nothing.
        for i in 0..60 {
            store
                .begin_pull(ann, later + 10 + i, (1, 1, 1), None)
                .unwrap();
        }
        assert_eq!(store.pulls(ann, 100).unwrap().len(), 50);
        store.begin_pull(ann + 1, later, (1, 1, 1), None).unwrap();
        assert!(store.pulls(ann + 1, 5).unwrap().is_empty());
    }
}
