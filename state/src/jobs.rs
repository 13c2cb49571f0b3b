//! Connector sync state (one row per source table) and the run history of jobs.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use crate::{Result, StateStore};

/// The outcome of the last sync of one source table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncRecord {
    /// The configured source (`sources[].name`).
    pub source: String,
    /// The table's id at the source, e.g. `in.c-crm.orders`.
    pub table_id: String,
    /// Where it lands in the catalog.
    pub schema_name: String,
    pub table_name: String,
    /// `full_refresh`, `incremental`, `partitioned`, `append`, `replace`.
    pub strategy: String,
    /// Seconds since the epoch of the last successful sync (the point later increments start
    /// from); kept from the previous success when this attempt failed.
    pub last_sync: Option<i64>,
    /// Seconds since the epoch of this attempt.
    pub last_attempt: i64,
    /// Rows, columns and on-disk bytes of the table after the sync.
    pub rows: u64,
    pub columns: u64,
    pub bytes: u64,
    /// Bytes of the data as received (uncompressed CSV/JSON).
    pub uncompressed_bytes: u64,
    pub duration_ms: u64,
    /// `ok` or `error`.
    pub outcome: String,
    pub error: Option<String>,
}

/// One run of a scheduled or manually triggered job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    /// `schedule`, `manual`, `startup`, `cli`.
    pub trigger: String,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// `running`, `ok`, `partial` (some items failed), `error`, `interrupted`.
    pub outcome: String,
    /// What the run did, in a line.
    pub summary: String,
    pub error: Option<String>,
}

fn u64_col(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
}

fn sync_record(row: &Row<'_>) -> rusqlite::Result<SyncRecord> {
    Ok(SyncRecord {
        source: row.get(0)?,
        table_id: row.get(1)?,
        schema_name: row.get(2)?,
        table_name: row.get(3)?,
        strategy: row.get(4)?,
        last_sync: row.get(5)?,
        last_attempt: row.get(6)?,
        rows: u64_col(row, 7)?,
        columns: u64_col(row, 8)?,
        bytes: u64_col(row, 9)?,
        uncompressed_bytes: u64_col(row, 10)?,
        duration_ms: u64_col(row, 11)?,
        outcome: row.get(12)?,
        error: row.get(13)?,
    })
}

const SYNC_COLUMNS: &str = "source, table_id, schema_name, table_name, strategy, last_sync, \
     last_attempt, rows, columns, bytes, uncompressed_bytes, duration_ms, outcome, error";

fn job_run(row: &Row<'_>) -> rusqlite::Result<JobRun> {
    Ok(JobRun {
        id: row.get(0)?,
        job: row.get(1)?,
        trigger: row.get(2)?,
        started_ms: row.get(3)?,
        finished_ms: row.get(4)?,
        outcome: row.get(5)?,
        summary: row.get(6)?,
        error: row.get(7)?,
    })
}

const JOB_COLUMNS: &str = "id, job, trigger_kind, started_ms, finished_ms, outcome, summary, error";

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl StateStore {
    /// Store the outcome of a sync attempt. A failed attempt keeps the previous
    /// `last_sync` and size figures, so the next increment starts where the last success left.
    pub fn record_sync(&self, r: &SyncRecord) -> Result<()> {
        let conn = self.lock();
        if r.outcome == "ok" {
            conn.execute(
                &format!(
                    "INSERT OR REPLACE INTO sync_state ({SYNC_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
                ),
                params![
                    r.source,
                    r.table_id,
                    r.schema_name,
                    r.table_name,
                    r.strategy,
                    r.last_sync,
                    r.last_attempt,
                    i64_of(r.rows),
                    i64_of(r.columns),
                    i64_of(r.bytes),
                    i64_of(r.uncompressed_bytes),
                    i64_of(r.duration_ms),
                    r.outcome,
                    r.error,
                ],
            )?;
        } else {
            conn.execute(
                &format!(
                    "INSERT INTO sync_state ({SYNC_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, 0, 0, 0, 0, ?7, ?8, ?9) \
                     ON CONFLICT (source, table_id) DO UPDATE SET \
                       schema_name = excluded.schema_name, table_name = excluded.table_name, \
                       strategy = excluded.strategy, last_attempt = excluded.last_attempt, \
                       duration_ms = excluded.duration_ms, outcome = excluded.outcome, \
                       error = excluded.error"
                ),
                params![
                    r.source,
                    r.table_id,
                    r.schema_name,
                    r.table_name,
                    r.strategy,
                    r.last_attempt,
                    i64_of(r.duration_ms),
                    r.outcome,
                    r.error,
                ],
            )?;
        }
        Ok(())
    }

    /// The sync state of one source table.
    pub fn sync_state(&self, source: &str, table_id: &str) -> Result<Option<SyncRecord>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {SYNC_COLUMNS} FROM sync_state WHERE source = ?1 AND table_id = ?2"
                ),
                [source, table_id],
                sync_record,
            )
            .optional()?)
    }

    /// Every table's sync state, optionally of one source, ordered by source and table.
    pub fn sync_states(&self, source: Option<&str>) -> Result<Vec<SyncRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SYNC_COLUMNS} FROM sync_state WHERE ?1 IS NULL OR source = ?1 \
             ORDER BY source, table_id"
        ))?;
        let rows = stmt.query_map([source], sync_record)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the catalog table `schema.table` was last synced successfully (seconds since the
    /// epoch), by whichever source writes it.
    pub fn last_sync_of(&self, schema: &str, table: &str) -> Result<Option<i64>> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT max(last_sync) FROM sync_state WHERE schema_name = ?1 AND table_name = ?2",
            [schema, table],
            |r| r.get(0),
        )?)
    }

    /// Forget a table's sync state (the next sync starts from scratch).
    pub fn forget_sync(&self, source: &str, table_id: &str) -> Result<bool> {
        let conn = self.lock();
        let n = conn.execute(
            "DELETE FROM sync_state WHERE source = ?1 AND table_id = ?2",
            [source, table_id],
        )?;
        Ok(n > 0)
    }

    /// Record that `job` started; returns the run's id for [`finish_job_run`](Self::finish_job_run).
    pub fn start_job_run(&self, job: &str, trigger: &str, started_ms: i64) -> Result<i64> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO job_runs (job, trigger_kind, started_ms, outcome) \
             VALUES (?1, ?2, ?3, 'running')",
            params![job, trigger, started_ms],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Record how a run ended, and what it logged (lines, possibly none).
    pub fn finish_job_run(
        &self,
        id: i64,
        finished_ms: i64,
        outcome: &str,
        summary: &str,
        error: Option<&str>,
        log: &str,
    ) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE job_runs SET finished_ms = ?2, outcome = ?3, summary = ?4, error = ?5, \
             log = ?6 WHERE id = ?1",
            params![id, finished_ms, outcome, summary, error, log],
        )?;
        Ok(())
    }

    /// What run `id` logged (empty when nothing was kept); `None` for an unknown run.
    pub fn job_run_log(&self, id: i64) -> Result<Option<String>> {
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT log FROM job_runs WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }

    /// Runs left `running` by a process that died are marked `interrupted`; returns how many.
    /// Call once at startup, before any job runs.
    pub fn interrupt_stale_job_runs(&self, now_ms: i64) -> Result<usize> {
        let conn = self.lock();
        Ok(conn.execute(
            "UPDATE job_runs SET outcome = 'interrupted', finished_ms = ?1, \
             error = 'the process stopped while the job ran' WHERE outcome = 'running'",
            [now_ms],
        )?)
    }

    /// The latest runs, newest first, optionally of one job.
    pub fn job_runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<JobRun>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM job_runs WHERE ?1 IS NULL OR job = ?1 \
             ORDER BY started_ms DESC, id DESC LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![job, limit], job_run)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Keep the newest `keep` runs of each job.
    pub fn prune_job_runs(&self, keep: usize) -> Result<usize> {
        let conn = self.lock();
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        Ok(conn.execute(
            "DELETE FROM job_runs WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER \
             (PARTITION BY job ORDER BY started_ms DESC, id DESC) AS n FROM job_runs) WHERE n > ?1)",
            [keep],
        )?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(outcome: &str, last_sync: Option<i64>, rows: u64) -> SyncRecord {
        SyncRecord {
            source: "kbc".into(),
            table_id: "in.c-crm.orders".into(),
            schema_name: "sales".into(),
            table_name: "orders".into(),
            strategy: "incremental".into(),
            last_sync,
            last_attempt: 100,
            rows,
            columns: 3,
            bytes: 1000,
            uncompressed_bytes: 5000,
            duration_ms: 12,
            outcome: outcome.into(),
            error: (outcome != "ok").then(|| "boom".to_string()),
        }
    }

    #[test]
    fn failed_sync_keeps_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.record_sync(&record("ok", Some(50), 10)).unwrap();
        store.record_sync(&record("error", None, 0)).unwrap();
        let got = store.sync_state("kbc", "in.c-crm.orders").unwrap().unwrap();
        assert_eq!(got.last_sync, Some(50));
        assert_eq!(got.rows, 10);
        assert_eq!(got.outcome, "error");
        assert_eq!(got.error.as_deref(), Some("boom"));
        assert_eq!(store.sync_states(Some("kbc")).unwrap().len(), 1);
        assert_eq!(store.last_sync_of("sales", "orders").unwrap(), Some(50));
        assert_eq!(store.last_sync_of("sales", "other").unwrap(), None);
        assert!(store.sync_states(Some("other")).unwrap().is_empty());
        assert!(store.forget_sync("kbc", "in.c-crm.orders").unwrap());
        assert!(
            store
                .sync_state("kbc", "in.c-crm.orders")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_first_failure_has_no_last_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.record_sync(&record("error", Some(77), 9)).unwrap();
        let got = store.sync_state("kbc", "in.c-crm.orders").unwrap().unwrap();
        assert_eq!(got.last_sync, None);
        assert_eq!(got.rows, 0);
    }

    #[test]
    fn job_runs_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let a = store.start_job_run("sync:kbc", "manual", 1000).unwrap();
        let b = store.start_job_run("sync:kbc", "schedule", 2000).unwrap();
        store
            .finish_job_run(
                a,
                1500,
                "ok",
                "3 tables",
                None,
                "10:00:00.000  INFO x: synced",
            )
            .unwrap();
        assert_eq!(store.interrupt_stale_job_runs(3000).unwrap(), 1);
        let runs = store.job_runs(Some("sync:kbc"), 10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].id, b);
        assert_eq!(runs[0].outcome, "interrupted");
        assert_eq!(runs[1].outcome, "ok");
        assert_eq!(runs[1].summary, "3 tables");
        assert_eq!(
            store.job_run_log(a).unwrap().as_deref(),
            Some("10:00:00.000  INFO x: synced")
        );
        assert_eq!(store.job_run_log(b).unwrap().as_deref(), Some(""));
        assert_eq!(store.job_run_log(b + 1).unwrap(), None);
        assert_eq!(store.prune_job_runs(1).unwrap(), 1);
        assert_eq!(store.job_runs(None, 10).unwrap().len(), 1);
    }
}
