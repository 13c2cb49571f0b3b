//! The connector model: what a connector does ([`Connector`]) and how a source is synced table
//! by table ([`sync_source`]). It knows no connector: they implement the trait in their own
//! modules, and `registry` names the compiled-in ones.

use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use dataport_catalog::Catalog;
use dataport_catalog::description::{self, Descriptions};
use dataport_state::{StateStore, SyncRecord, now_secs};
use serde::Serialize;

use crate::error::{ConnectorError, Result};
use crate::sink::{Sink, TableTarget, Written};

/// One table a source offers, and where it lands.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// The id at the source, e.g. `in.c-crm.orders`.
    pub id: String,
    pub target: TableTarget,
    /// The sync strategy's name, for state and reports.
    pub strategy: String,
}

/// What a connector needs while syncing one table.
pub struct SyncContext<'a> {
    pub sink: &'a Sink,
    /// The table's previous sync, if any.
    pub previous: Option<&'a SyncRecord>,
    /// A private, empty folder for downloads and staged files; removed afterwards.
    pub staging: &'a Path,
    /// Rebuild from scratch instead of fetching increments.
    pub full: bool,
    /// When this sync started (seconds since the epoch); increments are relative to it.
    pub now: i64,
    pub progress: &'a dyn Progress,
}

/// What a table sync did.
#[derive(Debug, Clone, Default)]
pub struct TableSync {
    pub written: Written,
    /// Bytes received (uncompressed text).
    pub text_bytes: u64,
    /// Rows received.
    pub rows_received: u64,
}

/// Progress of a run, for a progress bar or logs.
pub trait Progress: Send + Sync {
    /// A table's sync started (`index` of `total`).
    fn table_started(&self, _table: &str, _index: usize, _total: usize) {}
    /// Something happened within the table's sync (an export job, a download, a merge).
    fn step(&self, _table: &str, _message: &str) {}
    /// Bytes arrived for the table.
    fn bytes(&self, _table: &str, _bytes: u64) {}
    /// A table's sync ended.
    fn table_finished(&self, _report: &TableReport) {}
}

/// Progress reported only to the log.
#[derive(Debug, Default)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn step(&self, table: &str, message: &str) {
        tracing::debug!(table, "{message}");
    }
    fn table_finished(&self, r: &TableReport) {
        match &r.error {
            None => tracing::info!(
                source = %r.source, table = %r.table, rows = r.rows, bytes = r.bytes,
                duration_ms = r.duration_ms, "table synced"
            ),
            Some(e) => {
                tracing::warn!(source = %r.source, table = %r.table, error = %e, "table sync failed")
            }
        }
    }
}

/// A compiled-in connector, configured for one source.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The source's configured name.
    fn source(&self) -> &str;
    /// The connector type (`keboola`, `files`).
    fn kind(&self) -> &'static str;
    /// The tables this source offers.
    async fn discover(&self) -> Result<Vec<SourceTable>>;
    /// Fetch one table and write it through the sink.
    async fn sync_table(&self, table: &SourceTable, ctx: &SyncContext<'_>) -> Result<TableSync>;
}

/// The table descriptions of the data dir, if any, read off the async threads; an error names
/// the source `source_name`.
pub(crate) async fn load_descriptions(
    source_name: &str,
    data_dir: &Path,
) -> Result<Option<Descriptions>> {
    let data_dir = data_dir.to_path_buf();
    let config = |message: String| ConnectorError::Config {
        source_name: source_name.to_string(),
        message,
    };
    tokio::task::spawn_blocking(move || description::load(&data_dir))
        .await
        .map_err(|e| config(format!("reading the data description failed: {e}")))?
        .map_err(|e| config(e.to_string()))
}

/// The outcome of one table in a run.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub source: String,
    pub id: String,
    /// `schema.table` in the catalog.
    pub table: String,
    pub strategy: String,
    pub rows: u64,
    pub bytes: u64,
    pub rows_received: u64,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// The outcome of syncing a source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub source: String,
    pub tables: Vec<TableReport>,
    /// Discovery failed: nothing was synced.
    pub error: Option<String>,
}

impl SourceReport {
    pub fn failed(&self) -> usize {
        self.tables.iter().filter(|t| t.error.is_some()).count()
    }
    /// `ok`, `partial` (some tables failed) or `error` (all failed, or discovery failed).
    pub fn outcome(&self) -> &'static str {
        let failed = self.failed();
        if self.error.is_some() || (failed > 0 && failed == self.tables.len()) {
            "error"
        } else if failed > 0 {
            "partial"
        } else {
            "ok"
        }
    }
    /// One line for logs, job history and the command line.
    pub fn summary(&self) -> String {
        if let Some(e) = &self.error {
            return format!("{}: {e}", self.source);
        }
        let rows: u64 = self.tables.iter().map(|t| t.rows_received).sum();
        format!(
            "{}: {} tables synced, {} failed, {rows} rows received",
            self.source,
            self.tables.len() - self.failed(),
            self.failed()
        )
    }
}

/// What to sync.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    /// Only this table (source id, or catalog `schema.table`, or table name).
    pub table: Option<String>,
    /// Rebuild instead of fetching increments.
    pub full: bool,
}

/// Syncs the tables of a source one after the other. A table that fails is recorded and
/// reported; the others go on. After each written table the catalog (if given) is refreshed.
///
/// ```
/// use dataport_connectors::files::{FilesConfig, FilesConnector};
/// use dataport_connectors::{LogProgress, SyncRequest, sync_source};
/// use dataport_state::StateStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let data = tempfile::tempdir()?;
/// std::fs::create_dir(data.path().join("drop"))?;
/// std::fs::write(data.path().join("drop/orders.csv"), "id,amount\n1,9.50\n2,12.00\n")?;
///
/// // `sources: [{name: drops, type: files, path: drop, schema: uploads}]`
/// let config = FilesConfig {
///     path: "drop".into(),
///     schema: "uploads".into(),
///     mode: Default::default(),
///     processed: None,
///     rejected: None,
/// };
/// let drops = FilesConnector::new("drops", &config, data.path())?;
/// let state = StateStore::open(data.path())?;
/// let request = SyncRequest::default();
/// let report = sync_source(&drops, data.path(), &state, None, &request, &LogProgress).await;
///
/// assert_eq!(report.outcome(), "ok", "{}", report.summary());
/// assert_eq!((report.tables[0].table.as_str(), report.tables[0].rows), ("uploads.orders", 2));
/// assert!(data.path().join("parquet/uploads/orders.parquet").is_file());
/// assert!(!data.path().join("drop/orders.csv").exists()); // moved to drop/processed/
/// # Ok(())
/// # }
/// ```
pub async fn sync_source(
    connector: &dyn Connector,
    data_dir: &Path,
    state: &StateStore,
    catalog: Option<&Catalog>,
    request: &SyncRequest,
    progress: &dyn Progress,
) -> SourceReport {
    let source = connector.source().to_string();
    let mut report = SourceReport {
        source: source.clone(),
        tables: Vec::new(),
        error: None,
    };
    let tables = match connector.discover().await {
        Ok(t) => t,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let selected: Vec<SourceTable> = match &request.table {
        None => tables,
        Some(want) => tables
            .into_iter()
            .filter(|t| t.id == *want || t.target.qualified() == *want || t.target.name == *want)
            .collect(),
    };
    if selected.is_empty()
        && let Some(want) = &request.table
    {
        report.error = Some(format!(
            "source '{source}' has no table '{want}'; `dataport sync {source}` lists what it syncs"
        ));
        return report;
    }
    let sink = Sink::new(data_dir);
    let total = selected.len();
    for (i, table) in selected.iter().enumerate() {
        progress.table_started(&table.target.qualified(), i + 1, total);
        let r = sync_one(
            connector,
            data_dir,
            state,
            &sink,
            table,
            request.full,
            progress,
        )
        .await;
        if r.error.is_none()
            && let Some(c) = catalog
            && let Err(e) = c.refresh().await
        {
            tracing::warn!(error = %e, "catalog refresh after a sync failed");
        }
        progress.table_finished(&r);
        report.tables.push(r);
    }
    report
}

async fn sync_one(
    connector: &dyn Connector,
    data_dir: &Path,
    state: &StateStore,
    sink: &Sink,
    table: &SourceTable,
    full: bool,
    progress: &dyn Progress,
) -> TableReport {
    let started = Instant::now();
    let now = now_secs();
    let source = connector.source();
    let qualified = table.target.qualified();
    let result = async {
        let _lock = TableLock::acquire(data_dir, &qualified)?;
        let previous = state.sync_state(source, &table.id)?;
        let staging = StagingDir::create(data_dir, source, &table.target.name)?;
        let ctx = SyncContext {
            sink,
            previous: previous.as_ref(),
            staging: &staging.path,
            full,
            now,
            progress,
        };
        connector.sync_table(table, &ctx).await
    }
    .await;
    let duration_ms = started.elapsed().as_millis() as u64;
    let (done, error) = match result {
        Ok(done) => (done, None),
        Err(e) => (TableSync::default(), Some(e.to_string())),
    };
    let record = SyncRecord {
        source: source.to_string(),
        table_id: table.id.clone(),
        schema_name: table.target.schema.clone(),
        table_name: table.target.name.clone(),
        strategy: table.strategy.clone(),
        last_sync: error.is_none().then_some(now),
        last_attempt: now,
        rows: done.written.rows,
        columns: done.written.columns,
        bytes: done.written.bytes,
        uncompressed_bytes: done.text_bytes,
        duration_ms,
        outcome: if error.is_none() { "ok" } else { "error" }.into(),
        error: error.clone(),
    };
    let report = TableReport {
        source: source.to_string(),
        id: table.id.clone(),
        table: qualified.clone(),
        strategy: table.strategy.clone(),
        rows: done.written.rows,
        bytes: done.written.bytes,
        rows_received: done.rows_received,
        duration_ms,
        error,
    };
    if let Err(e) = state.record_sync(&record) {
        tracing::warn!(table = %qualified, error = %e, "cannot record the sync state");
    }
    // The digests taken while writing spare the sync manifests reading the files again.
    for (file, sha256) in &done.written.digests {
        let recorded = dataport_state::FileDigest::of_file(data_dir, file, sha256.clone())
            .map_err(|e| e.to_string())
            .and_then(|d| match d {
                Some(d) => state.put_file_digest(&d).map_err(|e| e.to_string()),
                None => Ok(()),
            });
        if let Err(e) = recorded {
            tracing::warn!(file = %file.display(), error = %e, "cannot record a file digest");
        }
    }
    report
}

/// An exclusive lock on one table's writes, held across processes (the server's jobs and a
/// `dataport sync` on the command line). Released on drop.
struct TableLock {
    _file: std::fs::File,
}

/// `<data>/state/locks/<name>.lock`, opened (created if missing) for locking.
pub(crate) fn lock_file(data_dir: &Path, name: &str) -> Result<(std::fs::File, PathBuf)> {
    let dir = data_dir.join("state").join("locks");
    std::fs::create_dir_all(&dir).map_err(|e| ConnectorError::io(&dir, e))?;
    let path = dir.join(format!("{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ConnectorError::io(&path, e))?;
    Ok((file, path))
}

impl TableLock {
    fn acquire(data_dir: &Path, table: &str) -> Result<Self> {
        let (file, path) = lock_file(data_dir, table)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(ConnectorError::Busy {
                table: table.to_string(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(ConnectorError::io(&path, e)),
        }
    }
}

/// `<data>/tmp/sync/<source>-<table>-<pid>/`, removed on drop; leftovers of dead processes
/// are swept by [`sweep_staging`].
struct StagingDir {
    path: PathBuf,
}

impl StagingDir {
    fn create(data_dir: &Path, source: &str, table: &str) -> Result<Self> {
        let path = data_dir
            .join("tmp")
            .join("sync")
            .join(format!("{source}-{table}-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| ConnectorError::io(&path, e))?;
        }
        std::fs::create_dir_all(&path).map_err(|e| ConnectorError::io(&path, e))?;
        Ok(Self { path })
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove staging folder");
        }
    }
}

/// Removes staging folders of processes that no longer run (after a crash). Call at startup.
pub fn sweep_staging(data_dir: &Path) {
    let root = data_dir.join("tmp").join("sync");
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if !pid.is_some_and(dataport_common::fs::other_process_alive) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
