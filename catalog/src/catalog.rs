//! [`Catalog`]: owns the current snapshot and builds new ones.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;
use futures::{FutureExt, StreamExt};
use serde::Serialize;

use crate::description::{self, Descriptions};
use crate::error::{CatalogError, Result};
use crate::memory::{MemoryOptions, ResidentReport};
use crate::provider::{CATALOG_NAME, SEARCH_PATH_SCHEMA};
use crate::scan::{self, ScannedTable};
use crate::snapshot::{CatalogIssue, CatalogSnapshot, CatalogTable, resolve_foreign_keys};
use crate::table::Residency;
use crate::table::{ParquetTable, TableData};

/// Where the catalog lives and how it stays fresh.
#[derive(Debug, Clone)]
pub struct CatalogOptions {
    /// The data dir; tables are under `<data_dir>/parquet/`.
    pub data_dir: PathBuf,
    /// Rescan this often even if no file event arrived (0 disables the timer).
    pub refresh_interval: Duration,
    /// React to file system events under `parquet/` and `docs/`.
    pub watch: bool,
    /// How many footers are read at once when a table changed.
    pub footer_concurrency: usize,
    /// Tables held in memory as Arrow after each refresh (none by default).
    pub memory: MemoryOptions,
}

impl CatalogOptions {
    /// Defaults for a data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            refresh_interval: Duration::from_secs(60),
            watch: true,
            footer_concurrency: 16,
            memory: MemoryOptions::default(),
        }
    }

    /// `<data_dir>/parquet`.
    pub fn parquet_root(&self) -> PathBuf {
        self.data_dir.join("parquet")
    }
}

/// What one refresh did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshReport {
    /// Version in force after the refresh.
    pub snapshot_version: u64,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Tables whose footers were read (added or changed); unchanged tables are reused.
    pub tables_reloaded: usize,
    pub tables: usize,
    pub errors: Vec<CatalogIssue>,
    pub duration_ms: u64,
}

/// Refresh history, for `/health` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshStatus {
    pub last_refresh_at: Option<SystemTime>,
    pub last_duration_ms: u64,
    pub snapshot_version: u64,
    pub refreshes: u64,
    pub failed_refreshes: u64,
}

/// The live catalog. Clone it freely: clones share one current snapshot.
#[derive(Clone, Debug)]
pub struct Catalog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: CatalogOptions,
    runtime: Arc<RuntimeEnv>,
    config: SessionConfig,
    current: RwLock<Arc<CatalogSnapshot>>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// One in-memory load at a time.
    resident_lock: tokio::sync::Mutex<()>,
    status: Mutex<RefreshStatus>,
    footer_loads: AtomicU64,
}

impl Catalog {
    /// Open the data dir and build the first snapshot. `runtime` is shared with query execution
    /// so Parquet footers read here are cached for queries; `config` carries the Parquet reading
    /// options queries use.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use arrow::array::{ArrayRef, Int64Array, RecordBatch};
    /// use datafusion::execution::runtime_env::RuntimeEnv;
    /// use datafusion::prelude::SessionConfig;
    /// use dataport_catalog::write::ParquetFileWriter;
    /// use dataport_catalog::{Catalog, CatalogOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let data = tempfile::tempdir()?;
    /// let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    /// let batch = RecordBatch::try_from_iter([("id", ids)])?;
    /// let write_table = |path: &str| -> Result<_, Box<dyn std::error::Error>> {
    ///     let mut file = ParquetFileWriter::try_new(&data.path().join(path), batch.schema())?;
    ///     file.write(&batch)?;
    ///     Ok(file.finish()?)
    /// };
    /// write_table("parquet/sales/orders.parquet")?;
    ///
    /// let mut options = CatalogOptions::new(data.path());
    /// options.watch = false; // no file events: this example refreshes by hand
    /// let runtime = Arc::new(RuntimeEnv::default());
    /// let catalog = Catalog::open(options, runtime, SessionConfig::new()).await?;
    /// let first = catalog.snapshot();
    /// let orders = first.table("sales", "orders").ok_or("sales.orders is listed")?;
    /// assert_eq!(orders.row_count(), Some(3));
    ///
    /// // A new table appears: a refresh reads only it and swaps in a new snapshot.
    /// write_table("parquet/sales/customers.parquet")?;
    /// let report = catalog.refresh().await?;
    /// assert_eq!(report.added, ["sales.customers"]);
    /// assert_eq!((first.table_count(), catalog.snapshot().table_count()), (1, 2));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open(
        options: CatalogOptions,
        runtime: Arc<RuntimeEnv>,
        config: SessionConfig,
    ) -> Result<Self> {
        let mut options = options;
        // Files are read through the object store, whose locations are absolute: a relative
        // data dir is taken against the working directory now, once.
        options.data_dir =
            std::path::absolute(&options.data_dir).map_err(|e| CatalogError::DataDir {
                path: options.data_dir.clone(),
                reason: format!("cannot resolve it against the working directory: {e}"),
            })?;
        let root = options.parquet_root();
        crate::pin::sweep(&crate::pin::root(&options.data_dir));
        std::fs::create_dir_all(&root).map_err(|e| CatalogError::DataDir {
            path: root.clone(),
            reason: format!("cannot create it: {e}"),
        })?;
        let catalog = Self {
            inner: Arc::new(Inner {
                options,
                runtime,
                config,
                current: RwLock::new(Arc::new(CatalogSnapshot::default())),
                refresh_lock: tokio::sync::Mutex::new(()),
                resident_lock: tokio::sync::Mutex::new(()),
                status: Mutex::new(RefreshStatus::default()),
                footer_loads: AtomicU64::new(0),
            }),
        };
        catalog.refresh().await?;
        Ok(catalog)
    }

    pub fn options(&self) -> &CatalogOptions {
        &self.inner.options
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.options.data_dir
    }

    /// The snapshot in force now. Hold it for the life of a query.
    pub fn snapshot(&self) -> Arc<CatalogSnapshot> {
        match self.inner.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn status(&self) -> RefreshStatus {
        match self.inner.status.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// How many tables had their footers read since start (for tests and metrics).
    pub fn table_loads(&self) -> u64 {
        self.inner.footer_loads.load(Ordering::Relaxed)
    }

    /// Rescan the data dir and swap in a new snapshot if anything changed. Only added or
    /// changed tables are re-read. Concurrent calls are serialised.
    pub async fn refresh(&self) -> Result<RefreshReport> {
        let _guard = self.inner.refresh_lock.lock().await;
        let started = Instant::now();
        let result = self.refresh_locked().await;
        let elapsed = started.elapsed();
        let mut status = match self.inner.status.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        status.refreshes += 1;
        status.last_refresh_at = Some(SystemTime::now());
        status.last_duration_ms = elapsed.as_millis() as u64;
        match result {
            Ok(mut report) => {
                status.snapshot_version = report.snapshot_version;
                report.duration_ms = elapsed.as_millis() as u64;
                drop(status);
                if self.inner.options.memory.enabled() {
                    // Copies of new or changed tables are read in the background; queries use
                    // the files until a copy is complete.
                    let catalog = self.clone();
                    tokio::spawn(async move {
                        let r = catalog.load_resident().await;
                        if !r.loaded.is_empty() {
                            tracing::info!(
                                loaded = ?r.loaded,
                                skipped = ?r.skipped,
                                resident_bytes = r.resident_bytes,
                                "in-memory tables updated"
                            );
                        }
                    });
                }
                Ok(report)
            }
            Err(e) => {
                status.failed_refreshes += 1;
                Err(e)
            }
        }
    }

    /// Reads the chosen tables of the current snapshot into memory, within the budget
    /// (see [`crate::memory`]); tables already decided are left as they are. The server calls
    /// it after every refresh; it is idempotent.
    pub async fn load_resident(&self) -> ResidentReport {
        let options = &self.inner.options.memory;
        let mut report = ResidentReport::default();
        if !options.enabled() {
            return report;
        }
        let _one = self.inner.resident_lock.lock().await;
        let snapshot = self.snapshot();
        let mut used: u64 = snapshot.tables().filter_map(|t| t.resident_bytes()).sum();
        let partitions = self.inner.config.target_partitions();
        for t in snapshot.tables() {
            if !options.wants(t.schema_name(), t.name()) || t.data.residency.get().is_some() {
                continue;
            }
            let name = t.qualified_name();
            let skip = |why: String| {
                let _ = t.data.residency.set(Residency::Skipped(why));
            };
            if !t.data.partition_keys.is_empty() {
                skip("hive partitions: read from its files".into());
                continue;
            }
            let left = options.budget.saturating_sub(used);
            let estimate = datafusion::catalog::TableProvider::statistics(t.provider.as_ref())
                .and_then(|s| s.total_byte_size.get_value().copied())
                .unwrap_or(0) as u64;
            if estimate > left {
                skip(format!(
                    "about {estimate} bytes uncompressed, {left} left of the memory budget"
                ));
                continue;
            }
            match crate::memory::read(t, partitions).await {
                Ok(r) if r.bytes <= left => {
                    used += r.bytes;
                    let _ = t.data.residency.set(Residency::Loaded(Arc::new(r)));
                    report.loaded.push(name);
                }
                Ok(r) => skip(format!(
                    "{} bytes in memory, {left} left of the memory budget",
                    r.bytes
                )),
                // not remembered: the next refresh tries again
                Err(e) => {
                    tracing::warn!(table = %name, error = %e, "cannot read the table into memory");
                    report.skipped.push((name, e.to_string()));
                }
            }
        }
        for t in snapshot.tables() {
            match t.data.residency.get() {
                Some(Residency::Loaded(_)) => report.resident.push(t.qualified_name()),
                Some(Residency::Skipped(why)) => {
                    report.skipped.push((t.qualified_name(), why.clone()))
                }
                None => {}
            }
        }
        report.resident_bytes = used;
        report
    }

    async fn refresh_locked(&self) -> Result<RefreshReport> {
        let previous = self.snapshot();
        let root = self.inner.options.parquet_root();
        let data_dir = self.inner.options.data_dir.clone();
        let (scanned, described, (drafts, metric_problems)) =
            tokio::task::spawn_blocking(move || {
                (
                    scan::scan(&root),
                    description::load(&data_dir),
                    crate::metrics::read(&data_dir),
                )
            })
            .await
            .map_err(|e| CatalogError::Internal(format!("catalog scan task failed: {e}")))?;
        let scan::Scan {
            tables: scanned,
            issues: scan_issues,
            changing,
        } = scanned;

        let mut issues: Vec<CatalogIssue> = scan_issues
            .into_iter()
            .map(|i| CatalogIssue {
                source: i.source,
                message: i.message,
                hint: "rename, move or fix the file or folder under parquet/; the catalog \
                       refreshes by itself"
                    .into(),
            })
            .collect();
        let descriptions: Option<Arc<Descriptions>> = match described {
            Ok(d) => d.map(Arc::new),
            Err(e) => {
                tracing::warn!(error = %e, "data description is invalid; keeping the last good one");
                issues.push(CatalogIssue {
                    source: "data_description".into(),
                    message: e.to_string(),
                    hint: "fix the file under docs/; until then the last valid description \
                           stays in force"
                        .into(),
                });
                previous.descriptions.clone()
            }
        };

        // Reuse table data whose files are unchanged; read footers of the rest.
        // A table in the middle of a multi-file change keeps its previous version (or stays
        // absent if it is new) until the change is complete.
        let is_changing =
            |schema: &str, name: &str| changing.iter().any(|(s, n)| s == schema && n == name);
        let mut reused: Vec<(ScannedTable, Arc<TableData>)> = Vec::new();
        let mut to_load: Vec<ScannedTable> = Vec::new();
        for (schema, name) in &changing {
            if let Some(old) = previous.table(schema, name) {
                reused.push((old.scanned(), Arc::clone(&old.data)));
            }
        }
        for table in scanned {
            if is_changing(&table.schema, &table.name) {
                continue;
            }
            match previous.table(&table.schema, &table.name) {
                Some(old) if old.data.same_files(&table) => {
                    let data = Arc::clone(&old.data);
                    reused.push((table, data));
                }
                _ => to_load.push(table),
            }
        }
        let state = SessionStateBuilder::new()
            .with_config(self.inner.config.clone())
            .with_runtime_env(Arc::clone(&self.inner.runtime))
            .build();
        let store = self
            .inner
            .runtime
            .object_store(ObjectStoreUrl::local_filesystem())
            .map_err(|e| CatalogError::Internal(format!("no local object store: {e}")))?;
        let concurrency = self.inner.options.footer_concurrency;
        let pin_root = crate::pin::root(&self.inner.options.data_dir);
        let state = Arc::new(state);
        let pending: Vec<_> = to_load
            .into_iter()
            .map(|t| {
                let state = Arc::clone(&state);
                let store = Arc::clone(&store);
                let pin_root = pin_root.clone();
                async move {
                    // A reader that panics on a damaged file loses that table, not the server.
                    let load = TableData::load(state.as_ref(), &store, &t, concurrency, &pin_root);
                    let r = std::panic::AssertUnwindSafe(load)
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| {
                            Err(CatalogError::Internal(format!(
                                "reading its files panicked: {}",
                                panic_message(panic.as_ref())
                            )))
                        });
                    (t, r)
                }
            })
            .collect();
        let loaded: Vec<(ScannedTable, Result<TableData>)> = futures::stream::iter(pending)
            .buffer_unordered(4)
            .collect()
            .await;
        let tables_reloaded = loaded.len();
        self.inner
            .footer_loads
            .fetch_add(tables_reloaded as u64, Ordering::Relaxed);
        let mut all: Vec<(ScannedTable, Arc<TableData>)> = reused;
        for (t, r) in loaded {
            match r {
                Ok(data) => all.push((t, Arc::new(data))),
                Err(e) => {
                    let issue = CatalogIssue {
                        source: t.qualified(),
                        message: e.to_string(),
                        hint: format!(
                            "the table is left out of the catalog until its files under {} \
                             can be read: replace or remove the broken file; the catalog \
                             refreshes by itself (or POST /api/v1/catalog/refresh)",
                            t.location.display()
                        ),
                    };
                    tracing::warn!(table = %issue.source, error = %issue.message, hint = %issue.hint, "table skipped");
                    issues.push(issue);
                }
            }
        }

        // Names for foreign key resolution.
        let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
        for (t, _) in &all {
            by_name
                .entry(t.name.clone())
                .or_default()
                .push(t.schema.clone());
        }
        let exists = |s: &str, n: &str| by_name.get(n).is_some_and(|v| v.iter().any(|x| x == s));
        let unique_schema_of = |n: &str| match by_name.get(n).map(Vec::as_slice) {
            Some([only]) => Some(only.clone()),
            _ => None,
        };

        let mut schemas: BTreeMap<String, BTreeMap<String, Arc<CatalogTable>>> = BTreeMap::new();
        for (t, data) in all {
            let meta = descriptions
                .as_deref()
                .and_then(|d| d.for_table(&t.schema, &t.name))
                .cloned();
            if let Some(m) = &meta {
                let schema = data.file_schema.as_ref();
                let known = |c: &str| {
                    schema.field_with_name(c).is_ok() || t.partition_keys.iter().any(|k| k == c)
                };
                for c in m
                    .primary_key
                    .iter()
                    .chain(m.foreign_keys.iter().map(|f| &f.column))
                {
                    if !known(c) {
                        issues.push(CatalogIssue {
                            source: t.qualified(),
                            message: format!(
                                "data description names column '{c}', which the table does not have"
                            ),
                            hint: "correct the key in data_description.md (the table is served \
                                   without it)"
                                .into(),
                        });
                    }
                }
            }
            let foreign_keys = meta
                .as_ref()
                .map(|m| resolve_foreign_keys(&t.schema, m, exists, unique_schema_of))
                .unwrap_or_default();
            let provider = Arc::new(ParquetTable::new(Arc::clone(&data)));
            let table = CatalogTable {
                schema: t.schema.clone(),
                name: t.name.clone(),
                location: t.location,
                data,
                provider,
                meta,
                foreign_keys,
            };
            schemas
                .entry(t.schema)
                .or_default()
                .insert(t.name, Arc::new(table));
        }

        // Diff against the previous snapshot.
        let mut report = RefreshReport {
            tables_reloaded,
            ..Default::default()
        };
        for t in schemas.values().flat_map(|m| m.values()) {
            match previous.table(&t.schema, &t.name) {
                None => report.added.push(t.qualified_name()),
                Some(old) if !Arc::ptr_eq(&old.data, &t.data) => {
                    report.changed.push(t.qualified_name())
                }
                Some(old) if old.meta != t.meta => report.changed.push(t.qualified_name()),
                Some(_) => {}
            }
        }
        for t in previous.tables() {
            if !schemas
                .get(&t.schema)
                .is_some_and(|m| m.contains_key(&t.name))
            {
                report.removed.push(t.qualified_name());
            }
        }
        // Business metrics, each checked by planning it against these tables: again only when
        // the tables or the definitions changed.
        let tables_same = previous.created_at.is_some()
            && report.added.is_empty()
            && report.changed.is_empty()
            && report.removed.is_empty();
        let metrics = if tables_same && previous.metrics.read_from(&drafts, &metric_problems) {
            Arc::clone(&previous.metrics)
        } else {
            let probe = Arc::new(CatalogSnapshot {
                schemas: schemas.clone(),
                ..Default::default()
            });
            let planner = SessionStateBuilder::new()
                .with_config(
                    self.inner
                        .config
                        .clone()
                        .with_default_catalog_and_schema(CATALOG_NAME, SEARCH_PATH_SCHEMA),
                )
                .with_runtime_env(Arc::clone(&self.inner.runtime))
                .with_default_features()
                .build();
            let metrics = crate::metrics::check(drafts, metric_problems, probe, planner).await;
            for p in metrics.problems() {
                tracing::warn!(problem = %p, "metric definition left out");
            }
            if *previous.metrics == metrics {
                Arc::clone(&previous.metrics)
            } else {
                Arc::new(metrics)
            }
        };
        for p in metrics.problems() {
            issues.push(CatalogIssue {
                source: "metrics".into(),
                message: p.to_string(),
                hint: "fix the definition under docs/ (the other metrics are served); the \
                       catalog refreshes by itself"
                    .into(),
            });
        }
        let descriptions_changed = match (&previous.descriptions, &descriptions) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b) && a != b,
            (None, None) => false,
            _ => true,
        };
        let changed = !report.added.is_empty()
            || !report.changed.is_empty()
            || !report.removed.is_empty()
            || descriptions_changed
            || !Arc::ptr_eq(&previous.metrics, &metrics)
            || previous.issues != issues
            || previous.created_at.is_none();
        report.errors = issues.clone();
        if changed {
            let next = Arc::new(CatalogSnapshot {
                version: previous.version + 1,
                created_at: Some(SystemTime::now()),
                schemas,
                descriptions,
                metrics,
                issues,
            });
            report.snapshot_version = next.version;
            report.tables = next.table_count();
            tracing::info!(
                version = next.version,
                tables = report.tables,
                added = report.added.len(),
                changed = report.changed.len(),
                removed = report.removed.len(),
                errors = report.errors.len(),
                "catalog snapshot swapped in"
            );
            match self.inner.current.write() {
                Ok(mut g) => *g = next,
                Err(p) => *p.into_inner() = next,
            }
        } else {
            report.snapshot_version = previous.version;
            report.tables = previous.table_count();
        }
        Ok(report)
    }
}

/// The text of a panic's payload, when it has one.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}
