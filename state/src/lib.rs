//! Dataport's state store: the one embedded SQLite database (WAL mode) under
//! `<data>/state/dataport.sqlite` that holds everything that is not table data: users, groups
//! and memberships, grants, API tokens (hashed), revoked token ids, login attempts, settings
//! such as the token-signing key, the audit log of every query, the sync state of every
//! connector table, the run history of jobs, table profiles, analysts' pulls, push sources'
//! queues of deliveries and the items they wrote, notifications (analysts' scripts, their
//! runs and cooldowns, what was sent, linked Telegram chats, desktop tokens), and corporate
//! memory (knowledge items, their sources and votes, collected notes and session transcripts),
//! and the OAuth clients of assistants with the authorization codes issued to them.
//!
//! [`StateStore`] owns the schema and its versioned migrations ([`migrations`]) and offers typed
//! operations; no other crate writes SQL against this database. It may be opened by several
//! processes at once (the server and the `dataport user …` commands): SQLite's locking keeps
//! every write atomic, and [`StateStore::data_version`] tells a long-running reader that another
//! process changed something.
//!
//! This crate knows nothing of DataFusion, HTTP, gRPC, password hashing or token formats: it
//! stores what it is given (hashes, never secrets) and answers questions about it.

mod audit;
mod error;
mod identity;
mod jobs;
mod memory;
mod migrations;
mod notify;
mod oauth;
mod profiles;
mod push;
mod sync;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

pub use audit::{AuditEntry, AuditLog, AuditQuery, DailyCount};
pub use error::{Result, StateError};
pub use identity::{
    AccountChange, AccountState, ApiTokenRecord, BrowserSession, GrantRecord, LinkRefusal,
    LoginAttempt, LoginCode, NewAccount, OidcFlow, PasswordPurpose, UserRecord,
};
pub use jobs::{JobRun, SyncRecord};
pub use memory::{
    ExtractedItem, MemoryActor, MemoryApplied, MemoryAudit, MemoryCollection, MemoryItem,
    MemoryNotes, MemorySource, MemoryTranscript, MemoryVote, Moderation,
};
pub use notify::{
    DesktopToken, NewNotifyRun, NotifyRun, NotifyRunEnd, NotifyScript, StoredNotification,
    TelegramLink,
};
pub use oauth::{CodeRedemption, OAuthClient, OAuthCode, RegistrationLimit};
pub use profiles::StoredProfile;
pub use push::{Enqueued, NewPushEvent, PushEvent, PushItem, PushQueue};
pub use sync::{FileDigest, PULL_WINDOW_MS, PullRecord, PulledFile, mtime_ns, relative_path};

/// How long a writer waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The state database. Cheap operations run under one connection's lock; audit entries are
/// written by a background thread with its own connection ([`StateStore::audit_log`]).
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl StateStore {
    /// Open (creating and migrating if needed) the store of a data dir.
    ///
    /// Several handles (in one process or several) may be open at once; each sees the others'
    /// commits, and [`data_version`](Self::data_version) says when there are new ones.
    ///
    /// ```
    /// use dataport_state::StateStore;
    ///
    /// let data = tempfile::tempdir()?;
    /// let server = StateStore::open(data.path())?;
    /// assert!(data.path().join("state/dataport.sqlite").is_file());
    /// let seen = server.data_version()?;
    ///
    /// // `dataport user add` in another process: its own handle on the same data dir.
    /// let cli = StateStore::open(data.path())?;
    /// cli.add_user("ana", "$argon2id$v=19$...", &["dataread".to_string()])?;
    ///
    /// assert_ne!(server.data_version()?, seen);
    /// let ana = server.user("ana")?.ok_or("ana was just added")?;
    /// assert_eq!(ana.groups, ["dataread"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("state");
        create_private_dir(&dir)?;
        Self::open_file(&dir.join("dataport.sqlite"))
    }

    /// Open the database at `path` (tests use a temp file).
    pub fn open_file(path: &Path) -> Result<Self> {
        let conn = connect(path)?;
        migrations::migrate(&conn, path)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A number that changes whenever another connection (another process, or the audit
    /// writer) commits: cheap to poll, so readers can cache and reload only on change.
    pub fn data_version(&self) -> Result<i64> {
        let conn = self.lock();
        Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// A setting, such as a generated key.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Store `value` under `key` unless a value is already there; returns the stored value.
    /// Two processes racing both end with the same value.
    pub fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            [key, value],
        )?;
        Ok(
            conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })?,
        )
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open: rusqlite rolls back
        // on drop, so the connection is consistent.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| StateError::Open {
        path: path.to_path_buf(),
        source: e,
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    restrict_file(path)?;
    Ok(conn)
}

/// Create `dir` readable only by the server's user.
fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| StateError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            StateError::Io {
                path: dir.to_path_buf(),
                source: e,
            }
        })?;
    }
    Ok(())
}

/// The database holds password hashes and audit entries: owner-only.
fn restrict_file(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| StateError::Io {
                    path: path.to_path_buf(),
                    source: e,
                },
            )?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests;
