//! The file-drop connector: CSV, JSON lines and Parquet files dropped into a folder become
//! typed tables of one catalog schema.
//!
//! - Files directly in the drop folder are read (not subfolders). The table is the SQL
//!   identifier of the file name up to its first `.`, so `orders.csv` and
//!   `orders.2024-06-01.csv` both feed the table `orders`.
//! - Formats by extension: `.csv` and `.csv.gz` (a header row is required), `.jsonl`,
//!   `.ndjson` and `.json` (JSON lines: one object per line), `.parquet`.
//! - A writer still uploading must use a name the connector skips and rename the file when it
//!   is complete: names starting with `.` or `_`, or ending in `.tmp` or `.part`.
//! - Types are the whole file's (CSV: integers, floats, booleans, dates and timestamps, else
//!   text, by the rules of [`Inference`](crate::typed::Inference); JSON: its own types), then
//!   the table's `column_types` in `data_description.md` override them (e.g. `STRING` keeps
//!   the leading zeros of codes, `NUMERIC(10,2)` gives decimals). A declared column a file
//!   does not have rejects the file.
//! - `mode: replace` (default): the newest file (by modification time, then name) replaces the
//!   table; older files of the same table in the same run are superseded and moved to
//!   `processed/` without being read. `mode: append`: every file's rows are merged into the
//!   table in one write, de-duplicated by the description's `primary_key` when it has one (the
//!   newest file wins); a full sync (`--full`) replaces the table with this run's files. In
//!   append mode a column whose type is inferred takes the stored table's type, unless the
//!   inferred type widens it.
//! - After a successful write the originals are moved to `processed/` (default
//!   `<path>/processed`) as `YYYYMMDDTHHMMSSZ-<name>`. A file that cannot be read or converted
//!   (a malformed row, a value that does not fit its column's type) is moved to `rejected/`
//!   (default `<path>/rejected`) with a `<name>.error.txt` report saying the row, column and
//!   reason; nothing of it is loaded, the table's sync fails, and the other files of the table
//!   stay in the drop folder for the next run, so nothing is applied by halves.
//! - Relative `path`, `processed` and `rejected` are resolved against the data dir.
//!
//! A table's sync runs by stage: `discover` (the files waiting and the tables they feed),
//! `read` (each file's columns and types), `schema` (the checks, and the one schema of the run),
//! `convert` (each file staged as typed Parquet), the sink's write, and `moved` (originals to
//! `processed/` or `rejected/`).

mod convert;
mod discover;
mod moved;
mod read;
mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use dataport_catalog::names::sql_identifier;
use serde::{Deserialize, Serialize};

use crate::connector::{Connector, SourceTable, SyncContext, TableSync, load_descriptions};
use crate::error::{ConnectorError, Result};
use crate::sink::{TableTarget, WriteMode, Written};
use crate::typed::declared_types;
use discover::DropFile;

/// Files rejected, each with what was wrong with it.
type Rejected = Vec<(DropFile, ConnectorError)>;

/// `sources: [{type: files, …}]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The drop folder (relative paths are under the data dir).
    pub path: PathBuf,
    /// Catalog schema (folder under `parquet/`) the tables land in.
    pub schema: String,
    /// `replace` (default): each dropped file replaces its table; `append`: rows are added
    /// (de-duplicated by the description's `primary_key` when it has one, newest wins).
    #[serde(default)]
    pub mode: FilesMode,
    /// Where processed originals go (default `<path>/processed`).
    #[serde(default)]
    pub processed: Option<PathBuf>,
    /// Where rejected originals and their error reports go (default `<path>/rejected`).
    #[serde(default)]
    pub rejected: Option<PathBuf>,
}

/// How a dropped file changes its table.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FilesMode {
    /// The newest file replaces the table.
    #[default]
    Replace,
    /// Rows are merged into the table (by primary key when the description has one).
    Append,
}

impl FilesMode {
    fn name(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Append => "append",
        }
    }
}

/// A configured drop folder.
#[derive(Debug)]
pub struct FilesConnector {
    name: String,
    config: FilesConfig,
    data_dir: PathBuf,
    /// `config.path`, resolved.
    drop_dir: PathBuf,
    processed: PathBuf,
    rejected: PathBuf,
}

impl FilesConnector {
    /// Checks the settings; the `processed` and `rejected` folders are created when first used.
    pub fn new(name: &str, config: &FilesConfig, data_dir: &Path) -> Result<Self> {
        let bad = |message: String| ConnectorError::Config {
            source_name: name.to_string(),
            message,
        };
        if sql_identifier(&config.schema).as_deref() != Some(config.schema.as_str()) {
            return Err(bad(format!(
                "schema '{}' must be an SQL identifier: lower-case letters, digits and '_', not starting with a digit (e.g. '{}')",
                config.schema,
                sql_identifier(&config.schema).unwrap_or_else(|| "uploads".to_string())
            )));
        }
        if config.path.as_os_str().is_empty() {
            return Err(bad("path (the drop folder) is empty".into()));
        }
        let drop_dir = resolve(data_dir, &config.path);
        let processed = match &config.processed {
            Some(p) => resolve(data_dir, p),
            None => drop_dir.join("processed"),
        };
        let rejected = match &config.rejected {
            Some(p) => resolve(data_dir, p),
            None => drop_dir.join("rejected"),
        };
        if processed == drop_dir || rejected == drop_dir {
            return Err(bad(
                "processed and rejected must be folders other than the drop folder (path)".into(),
            ));
        }
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            data_dir: data_dir.to_path_buf(),
            drop_dir,
            processed,
            rejected,
        })
    }

    /// The description's `column_types` of `target`, as Arrow types.
    async fn declared(&self, target: &TableTarget) -> Result<BTreeMap<String, DataType>> {
        let described = load_descriptions(&self.name, &self.data_dir).await?;
        let meta = described
            .as_ref()
            .and_then(|d| d.for_table(&target.schema, &target.name));
        Ok(declared_types(meta))
    }
}

/// `p`, or `p` under the data dir when relative.
fn resolve(data_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        data_dir.join(p)
    }
}

#[async_trait]
impl Connector for FilesConnector {
    fn source(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "files"
    }

    async fn discover(&self) -> Result<Vec<SourceTable>> {
        let described = load_descriptions(&self.name, &self.data_dir).await?;
        self.tables(described.as_ref())
    }

    async fn sync_table(&self, table: &SourceTable, ctx: &SyncContext<'_>) -> Result<TableSync> {
        let declared = self.declared(&table.target).await?;
        let files = self.waiting_for(&table.target.name)?;
        if files.is_empty() {
            // Taken by another run since discovery: the table is as it was.
            return unchanged(ctx, &table.target);
        }
        let (to_load, superseded) = self.config.mode.split(files);
        let run = Run::new(self, &table.target, ctx, declared)?;
        let (probed, mut rejected) = run.read(to_load).await?;
        let outcomes = run.convert(&probed).await?;
        let loaded = run.collect(probed, outcomes, &mut rejected);
        if !rejected.is_empty() {
            return Err(run.reject(rejected, loaded.files.len() + superseded.len()));
        }
        ctx.progress.step(&run.qualified, "writing");
        let written = ctx
            .sink
            .write(&table.target, &loaded.staged, run.mode)
            .await?;
        // Only now are the originals done with.
        run.move_processed(&loaded.files, &superseded)?;
        Ok(TableSync {
            written,
            text_bytes: loaded.bytes,
            rows_received: loaded.rows,
        })
    }
}

/// One table's sync: what its stages share.
struct Run<'a> {
    files: &'a FilesConnector,
    target: &'a TableTarget,
    ctx: &'a SyncContext<'a>,
    /// `schema.table`, as progress and errors name it.
    qualified: String,
    /// The description's `column_types`.
    declared: BTreeMap<String, DataType>,
    /// The stored table's schema, in a merge (the inferred types follow it).
    stored: Option<SchemaRef>,
    mode: WriteMode,
}

impl<'a> Run<'a> {
    /// A merge in append mode (but for a full sync), else a replace.
    fn new(
        files: &'a FilesConnector,
        target: &'a TableTarget,
        ctx: &'a SyncContext<'a>,
        declared: BTreeMap<String, DataType>,
    ) -> Result<Self> {
        let mode = match (files.config.mode, ctx.full) {
            (FilesMode::Append, false) => WriteMode::Merge,
            _ => WriteMode::Replace,
        };
        let stored = match mode {
            WriteMode::Merge => ctx.sink.current_schema(target)?,
            WriteMode::Replace => None,
        };
        Ok(Self {
            files,
            target,
            ctx,
            qualified: target.qualified(),
            declared,
            stored,
            mode,
        })
    }
}

/// The table as it is, when there was nothing to load.
fn unchanged(ctx: &SyncContext<'_>, target: &TableTarget) -> Result<TableSync> {
    let (rows, bytes) = ctx.sink.totals(target)?;
    let columns = ctx
        .sink
        .current_schema(target)?
        .map_or(0, |s| s.fields().len() as u64);
    Ok(TableSync {
        written: Written {
            rows,
            columns,
            bytes,
            files_written: 0,
            files_removed: 0,
            digests: Vec::new(),
        },
        text_bytes: 0,
        rows_received: 0,
    })
}

/// Runs blocking file work off the async threads.
async fn blocking<T, F>(table: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConnectorError::Decode {
            table: table.to_string(),
            what: "a dropped file".into(),
            message: format!("the conversion task failed: {e}"),
        })?
}
