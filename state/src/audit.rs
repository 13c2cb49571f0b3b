//! The audit log: one entry per query on any surface, written off the request path.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use rusqlite::params;

use crate::error::Result;
use crate::{StateStore, connect};

/// Entries waiting for the writer before new ones are dropped (and counted).
const QUEUE: usize = 10_000;
/// Most entries written in one transaction.
const BATCH: usize = 500;

/// One query: who ran what, where, on which tables, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch, when the query arrived.
    pub at_ms: i64,
    /// The account that asked (none for the server's own work and unknown callers).
    pub account_id: Option<i64>,
    /// Its username at the time, or the name a refused caller gave.
    pub user: String,
    /// `http`, `flight`, …
    pub surface: String,
    pub request_id: String,
    pub sql: String,
    /// Qualified names of the tables the statement referenced (as written, resolved or not).
    pub tables: Vec<String>,
    pub rows: u64,
    /// Bytes of result data (Arrow, in memory) sent.
    pub bytes: u64,
    pub duration_ms: u64,
    /// `ok`, `error`, `refused`, `timeout`, `cancelled`.
    pub outcome: String,
    pub error: Option<String>,
    /// The MCP tool that ran the statement (an assistant's call); none for other surfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// Which entries to read back.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub user: Option<String>,
    pub limit: u32,
}

/// Statements of one day ([`StateStore::audit_daily_counts`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DailyCount {
    pub day: String,
    pub statements: u64,
    pub failed: u64,
}

/// Handle for recording audit entries; clones share one background writer.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: SyncSender<AuditEntry>,
    dropped: Arc<AtomicU64>,
}

impl AuditLog {
    /// Queue `entry`; never blocks. If the writer is far behind, the entry is dropped and
    /// counted ([`AuditLog::dropped`]) rather than slowing queries down.
    pub fn record(&self, entry: AuditEntry) {
        match self.tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    dropped = n,
                    "audit log writer is behind; an entry was dropped"
                );
            }
        }
    }

    /// Entries that could not be queued.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl StateStore {
    /// Start the audit writer: a thread with its own connection that writes queued entries
    /// in batches. It stops when every [`AuditLog`] clone is dropped, after writing what is
    /// queued.
    pub fn audit_log(&self) -> Result<AuditLog> {
        let conn = connect(self.path())?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let path = self.path().to_path_buf();
        std::thread::Builder::new()
            .name("dataport-audit".into())
            .spawn(move || write_loop(conn, rx, path))
            .map_err(|e| crate::StateError::Io {
                path: self.path().to_path_buf(),
                source: e,
            })?;
        Ok(AuditLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Statements per UTC day since `since_ms` (oldest first): the day (`YYYY-MM-DD`), how
    /// many, and how many did not end `ok`. Sign-in refusals (no statement) are not counted.
    pub fn audit_daily_counts(&self, since_ms: i64) -> Result<Vec<DailyCount>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT date(at_ms / 1000, 'unixepoch') AS day, count(*), sum(outcome != 'ok')
             FROM audit_log WHERE at_ms >= ?1 AND sql != ''
             GROUP BY day ORDER BY day",
        )?;
        let rows = stmt.query_map([since_ms], |r| {
            Ok(DailyCount {
                day: r.get(0)?,
                statements: r.get::<_, i64>(1)? as u64,
                failed: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Recent entries, newest first.
    pub fn audit_entries(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT at_ms, user_name, surface, request_id, sql, tables, rows, bytes,
                    duration_ms, outcome, error, account_id, tool
             FROM audit_log WHERE ?1 IS NULL OR user_name = ?1
             ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![query.user, query.limit.max(1)], |r| {
            let tables: String = r.get(5)?;
            Ok(AuditEntry {
                at_ms: r.get(0)?,
                account_id: r.get(11)?,
                user: r.get(1)?,
                surface: r.get(2)?,
                request_id: r.get(3)?,
                sql: r.get(4)?,
                tables: tables
                    .split('\n')
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect(),
                rows: r.get::<_, i64>(6)? as u64,
                bytes: r.get::<_, i64>(7)? as u64,
                duration_ms: r.get::<_, i64>(8)? as u64,
                outcome: r.get(9)?,
                error: r.get(10)?,
                tool: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

fn write_loop(mut conn: rusqlite::Connection, rx: Receiver<AuditEntry>, path: PathBuf) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        if let Err(e) = write_batch(&mut conn, &batch) {
            tracing::error!(path = %path.display(), error = %e, entries = batch.len(), "cannot write audit entries");
        }
    }
}

fn write_batch(conn: &mut rusqlite::Connection, batch: &[AuditEntry]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO audit_log (at_ms, user_name, surface, request_id, sql, tables, rows,
                                    bytes, duration_ms, outcome, error, account_id, tool)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        for e in batch {
            stmt.execute(params![
                e.at_ms,
                e.user,
                e.surface,
                e.request_id,
                e.sql,
                e.tables.join("\n"),
                e.rows as i64,
                e.bytes as i64,
                e.duration_ms as i64,
                e.outcome,
                e.error,
                e.account_id,
                e.tool,
            ])?;
        }
    }
    tx.commit()
}
