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
//!   text, by the rules of [`Inference`]; JSON: its own types), then the table's `column_types` in
//!   `data_description.md` override them (e.g. `STRING` keeps the leading zeros of codes,
//!   `NUMERIC(10,2)` gives decimals). A declared column a file does not have rejects the file.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use dataport_catalog::description::{self, Descriptions};
use dataport_catalog::names::sql_identifier;
use dataport_catalog::write::ParquetFileWriter;
use flate2::read::MultiGzDecoder;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use crate::connector::{Connector, SourceTable, SyncContext, TableSync};
use crate::error::{ConnectorError, Result};
use crate::sink::{SEQ_COLUMN, TableTarget, WriteMode, Written};
use crate::typed::{
    CsvOptions, CsvPart, Inference, SAMPLE_ROWS, csv_to_parquet, declared_types, read_header,
    staged_schema, text_batches, type_batch, undeclared_column,
};

/// Rows per batch while converting.
const BATCH_ROWS: usize = 8192;

/// Read buffer size.
const BUFFER: usize = 1 << 20;

/// The UTF-8 byte order mark some tools put at the start of text files.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

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

    /// The table descriptions of the data dir, if any.
    async fn descriptions(&self) -> Result<Option<Descriptions>> {
        let data_dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || description::load(&data_dir))
            .await
            .map_err(|e| ConnectorError::Config {
                source_name: self.name.clone(),
                message: format!("reading the data description failed: {e}"),
            })?
            .map_err(|e| ConnectorError::Config {
                source_name: self.name.clone(),
                message: e.to_string(),
            })
    }

    /// The files waiting in the drop folder, oldest first (ties by name).
    fn scan(&self) -> Result<Vec<DropFile>> {
        let dir = &self.drop_dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConnectorError::Config {
                    source_name: self.name.clone(),
                    message: format!(
                        "the drop folder {} (path) does not exist; create it",
                        dir.display()
                    ),
                });
            }
            Err(e) => return Err(ConnectorError::io(dir, e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| ConnectorError::io(dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                tracing::warn!(source = %self.name, path = %path.display(), "skipping a dropped file whose name is not UTF-8");
                continue;
            };
            if is_in_progress(&name) {
                continue;
            }
            let Some(format) = format_of(&name) else {
                tracing::debug!(source = %self.name, file = %name, "skipping a file of unknown type");
                continue;
            };
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ConnectorError::io(&path, e)),
            };
            if !meta.is_file() {
                continue;
            }
            let Some(table) = table_of(&name) else {
                tracing::warn!(source = %self.name, file = %name, "skipping a dropped file whose name gives no table name");
                continue;
            };
            let modified = meta.modified().map_err(|e| ConnectorError::io(&path, e))?;
            files.push(DropFile {
                path,
                name,
                table,
                format,
                modified,
                size: meta.len(),
            });
        }
        files.sort_by(|a, b| {
            a.modified
                .cmp(&b.modified)
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(files)
    }

    /// Moves rejected files to the rejected folder with their reports; the error to return.
    fn reject(
        &self,
        qualified: &str,
        rejected: Vec<(DropFile, ConnectorError)>,
        kept: usize,
    ) -> ConnectorError {
        let stamp = stamp();
        let count = rejected.len();
        let mut first: Option<ConnectorError> = None;
        for (file, error) in rejected {
            let text = error.to_string();
            let note = match move_into(&self.rejected, &file.path, &file.name, &stamp) {
                Ok(dest) => {
                    let report = report_path(&dest);
                    if let Err(e) =
                        std::fs::write(&report, report_text(qualified, &file, &error, &stamp))
                    {
                        tracing::warn!(path = %report.display(), error = %e, "cannot write the rejection report");
                    }
                    tracing::info!(
                        source = %self.name, table = %qualified, file = %file.name,
                        to = %dest.display(), error = %text, "dropped file rejected"
                    );
                    format!("{} was moved to {}", file.name, dest.display())
                }
                Err(e) => {
                    tracing::warn!(
                        source = %self.name, table = %qualified, file = %file.name,
                        error = %text, move_error = %e, "dropped file rejected but not moved"
                    );
                    format!(
                        "{} stays in the drop folder: moving it to the rejected folder failed ({e})",
                        file.name
                    )
                }
            };
            if first.is_none() {
                first = Some(annotate(error, &note));
            }
        }
        let mut error = first.unwrap_or_else(|| ConnectorError::Table {
            table: qualified.to_string(),
            message: "a dropped file was rejected".into(),
        });
        if count > 1 {
            error = annotate(error, &format!("{} more files were rejected", count - 1));
        }
        if kept > 0 {
            error = annotate(
                error,
                &format!(
                    "{kept} other files of the table stay in the drop folder for the next run"
                ),
            );
        }
        error
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
        let described = self.descriptions().await?;
        let names: BTreeSet<String> = self.scan()?.into_iter().map(|f| f.table).collect();
        Ok(names
            .into_iter()
            .map(|name| {
                let primary_key = described
                    .as_ref()
                    .and_then(|d| d.for_table(&self.config.schema, &name))
                    .map(|m| m.primary_key.clone())
                    .unwrap_or_default();
                SourceTable {
                    id: name.clone(),
                    target: TableTarget {
                        schema: self.config.schema.clone(),
                        name,
                        primary_key,
                        partitioning: None,
                    },
                    strategy: self.config.mode.name().to_string(),
                }
            })
            .collect())
    }

    async fn sync_table(&self, table: &SourceTable, ctx: &SyncContext<'_>) -> Result<TableSync> {
        let qualified = table.target.qualified();
        let described = self.descriptions().await?;
        let meta = described
            .as_ref()
            .and_then(|d| d.for_table(&table.target.schema, &table.target.name));
        let declared = declared_types(meta);
        let mut files: Vec<DropFile> = self
            .scan()?
            .into_iter()
            .filter(|f| f.table == table.target.name)
            .collect();
        if files.is_empty() {
            // Taken by another run since discovery: the table is as it was.
            return unchanged(ctx, &table.target);
        }
        let (to_load, superseded) = match self.config.mode {
            FilesMode::Replace => {
                let newest = files.split_off(files.len() - 1);
                (newest, files)
            }
            FilesMode::Append => (files, Vec::new()),
        };
        let mode = match (self.config.mode, ctx.full) {
            (FilesMode::Append, false) => WriteMode::Merge,
            _ => WriteMode::Replace,
        };
        let stored = match mode {
            WriteMode::Merge => ctx.sink.current_schema(&table.target)?,
            WriteMode::Replace => None,
        };

        // Read each file's columns and types.
        let mut rejected: Vec<(DropFile, ConnectorError)> = Vec::new();
        let mut probed: Vec<(DropFile, Probe)> = Vec::new();
        for file in to_load {
            ctx.progress
                .step(&qualified, &format!("reading {}", file.name));
            let (t, p, format) = (qualified.clone(), file.path.clone(), file.format);
            match blocking(&qualified, move || probe(&t, &p, format)).await {
                Ok(probe) => match check_columns(
                    &qualified,
                    &file,
                    &probe.schema,
                    &declared,
                    &table.target.primary_key,
                ) {
                    Ok(()) => probed.push((file, probe)),
                    Err(e) => rejected.push((file, e)),
                },
                Err(e) if is_file_fault(&e) => rejected.push((file, e)),
                Err(e) => return Err(e),
            }
        }

        // One schema for every file of the run. CSV types come from a sample of each file
        // first; the conversion checks every row against them and, where the whole file
        // gives other types, everything is converted again with those.
        let ranked = table.target.ranks_rows();
        let mut schema = final_schema(
            probed.iter().map(|(_, p)| &p.schema),
            &declared,
            stored.as_deref(),
        );
        let mut outcomes: Vec<Option<Result<Staged>>> = probed.iter().map(|_| None).collect();
        let mut first_pass = true;
        loop {
            let mut seq = 1u64;
            for (i, (file, probe)) in probed.iter().enumerate() {
                if matches!(outcomes[i], Some(Err(_))) {
                    continue;
                }
                let verb = if first_pass {
                    "converting"
                } else {
                    "converting again (types of all rows)"
                };
                ctx.progress
                    .step(&qualified, &format!("{verb} {}", file.name));
                let job = Convert {
                    table: qualified.clone(),
                    file: file.clone(),
                    probe: probe.clone(),
                    schema: Arc::clone(&schema),
                    declared: declared.clone(),
                    out: ctx.staging.join(format!("part-{i:05}.parquet")),
                    seq: ranked.then_some(seq),
                    infer: first_pass && !probe.complete,
                };
                let outcome = match blocking(&qualified, move || job.run()).await {
                    Ok(done) => {
                        seq += done.rows;
                        Ok(done)
                    }
                    Err(e) if is_file_fault(&e) => Err(e),
                    Err(e) => return Err(e),
                };
                outcomes[i] = Some(outcome);
            }
            if !first_pass || probed.iter().all(|(_, p)| p.complete) {
                break;
            }
            first_pass = false;
            let whole: Vec<Schema> = probed
                .iter()
                .zip(&outcomes)
                .filter_map(|((_, probe), outcome)| match outcome {
                    Some(Ok(done)) => Some(
                        done.inferred
                            .as_ref()
                            .map_or_else(|| probe.schema.clone(), normalized),
                    ),
                    _ => None,
                })
                .collect();
            let retyped = final_schema(whole.iter(), &declared, stored.as_deref());
            if retyped == schema {
                break;
            }
            tracing::info!(
                source = %self.name, table = %qualified,
                "later rows do not fit the types of the first {SAMPLE_ROWS}; converting again with the types of all rows"
            );
            schema = retyped;
        }

        let mut staged: Vec<PathBuf> = Vec::new();
        let mut loaded: Vec<DropFile> = Vec::new();
        let mut rows = 0u64;
        let mut bytes = 0u64;
        for ((file, _), outcome) in probed.into_iter().zip(outcomes) {
            match outcome {
                Some(Ok(Staged { unfit: Some(e), .. })) | Some(Err(e)) => rejected.push((file, e)),
                Some(Ok(done)) => {
                    rows += done.rows;
                    bytes += file.size;
                    ctx.progress.bytes(&qualified, file.size);
                    staged.push(done.path);
                    loaded.push(file);
                }
                None => {}
            }
        }
        if !rejected.is_empty() {
            let kept = loaded.len() + superseded.len();
            return Err(self.reject(&qualified, rejected, kept));
        }

        ctx.progress.step(&qualified, "writing");
        let written = ctx.sink.write(&table.target, &staged, mode).await?;

        // Only now are the originals done with.
        let stamp = stamp();
        let mut failed: Option<ConnectorError> = None;
        let done = loaded
            .iter()
            .map(|f| (f, "loaded"))
            .chain(superseded.iter().map(|f| (f, "superseded")));
        for (file, how) in done {
            match move_into(&self.processed, &file.path, &file.name, &stamp) {
                Ok(dest) => tracing::info!(
                    source = %self.name, table = %qualified, file = %file.name,
                    to = %dest.display(), "dropped file {how}"
                ),
                Err(e) => {
                    tracing::warn!(
                        source = %self.name, table = %qualified, file = %file.name, error = %e,
                        "dropped file {how}, but moving it to the processed folder failed"
                    );
                    if failed.is_none() {
                        failed = Some(e);
                    }
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(TableSync {
            written,
            text_bytes: bytes,
            rows_received: rows,
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

/// A file waiting in the drop folder.
#[derive(Debug, Clone)]
struct DropFile {
    path: PathBuf,
    name: String,
    table: String,
    format: FileFormat,
    modified: SystemTime,
    size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    Csv,
    Json,
    Parquet,
}

fn format_of(name: &str) -> Option<FileFormat> {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".csv") || lower.ends_with(".csv.gz") {
        Some(FileFormat::Csv)
    } else if [".jsonl", ".ndjson", ".json"]
        .iter()
        .any(|s| lower.ends_with(s))
    {
        Some(FileFormat::Json)
    } else if lower.ends_with(".parquet") {
        Some(FileFormat::Parquet)
    } else {
        None
    }
}

/// Names of files still being written (or private by convention), which are left alone.
fn is_in_progress(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || name.starts_with('_')
        || lower.ends_with(".tmp")
        || lower.ends_with(".part")
}

/// The table a file feeds: the identifier of its name up to the first `.`.
fn table_of(name: &str) -> Option<String> {
    sql_identifier(name.split('.').next().unwrap_or_default())
}

/// What reading a file's columns found.
#[derive(Debug, Clone)]
struct Probe {
    /// The file's columns with their inferred types (all nullable).
    schema: Schema,
    /// The text starts with a UTF-8 byte order mark.
    bom: bool,
    /// The types were inferred from every row (else from the first [`SAMPLE_ROWS`]).
    complete: bool,
}

fn probe(table: &str, path: &Path, format: FileFormat) -> Result<Probe> {
    let probe = match format {
        FileFormat::Csv => probe_csv(table, path)?,
        FileFormat::Json => probe_json(table, path)?,
        FileFormat::Parquet => probe_parquet(table, path)?,
    };
    check_names(table, path, &probe.schema)?;
    Ok(probe)
}

fn probe_csv(table: &str, path: &Path) -> Result<Probe> {
    let mut reader = BufReader::with_capacity(BUFFER, open_decoded(path)?);
    let bom = skip_bom(&mut reader).map_err(|e| ConnectorError::io(path, e))?;
    let Some(names) = read_header(&mut reader).map_err(|e| ConnectorError::io(path, e))? else {
        return Ok(Probe {
            schema: Schema::empty(),
            bom,
            complete: true,
        });
    };
    let mut inference = Inference::new(names.clone());
    let mut rows = 0usize;
    let mut complete = true;
    for batch in text_batches(&names, &mut reader).map_err(|e| decode(table, path, e))? {
        let batch = batch.map_err(|e| decode(table, path, e))?;
        rows += batch.num_rows();
        inference.observe(&batch);
        if rows >= SAMPLE_ROWS {
            complete = false;
            break;
        }
    }
    Ok(Probe {
        schema: normalized(&inference.schema()),
        bom,
        complete,
    })
}

fn probe_json(table: &str, path: &Path) -> Result<Probe> {
    let mut reader = BufReader::with_capacity(BUFFER, open_decoded(path)?);
    let bom = skip_bom(&mut reader).map_err(|e| ConnectorError::io(path, e))?;
    let (schema, _) = arrow::json::reader::infer_json_schema(&mut reader, None)
        .map_err(|e| json_error(table, path, e))?;
    Ok(Probe {
        schema: normalized(&schema),
        bom,
        complete: true,
    })
}

fn probe_parquet(table: &str, path: &Path) -> Result<Probe> {
    let file = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| decode(table, path, e))?;
    // A sequence column of a copied staging file is not data.
    let fields: Vec<Field> = builder
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != SEQ_COLUMN)
        .map(|f| f.as_ref().clone())
        .collect();
    Ok(Probe {
        schema: normalized(&Schema::new(fields)),
        bom: false,
        complete: true,
    })
}

/// Nullable fields; timestamps in microseconds (as declared types are), strings as `Utf8`.
fn normalized(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Timestamp(_, tz) => {
                    DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
                }
                DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
                other => other.clone(),
            };
            Field::new(f.name(), t, true)
        })
        .collect();
    Schema::new(fields)
}

/// A file must name its columns, each once.
fn check_names(table: &str, path: &Path, schema: &Schema) -> Result<()> {
    let problem = |message: String| ConnectorError::Decode {
        table: table.to_string(),
        what: path.display().to_string(),
        message,
    };
    if schema.fields().is_empty() {
        return Err(problem(
            "the file has no columns (it is empty; a CSV file needs a header row naming its columns)"
                .into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if f.name().trim().is_empty() {
            return Err(problem(format!("column {} has no name", i + 1)));
        }
        if f.name() == SEQ_COLUMN {
            return Err(problem(format!(
                "the column name '{SEQ_COLUMN}' is reserved"
            )));
        }
        if !seen.insert(f.name().as_str()) {
            return Err(problem(format!("column '{}' appears twice", f.name())));
        }
    }
    Ok(())
}

/// Every declared column, and the primary key, must be in the file.
fn check_columns(
    table: &str,
    file: &DropFile,
    schema: &Schema,
    declared: &BTreeMap<String, DataType>,
    key: &[String],
) -> Result<()> {
    let has = |c: &str| schema.field_with_name(c).is_ok();
    let names = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(column) = undeclared_column(declared, has) {
        return Err(ConnectorError::Table {
            table: table.to_string(),
            message: format!(
                "data_description.md declares column_types for '{column}', which {} does not have (it has: {})",
                file.name,
                names()
            ),
        });
    }
    for column in key {
        if !has(column.as_str()) {
            return Err(ConnectorError::Table {
                table: table.to_string(),
                message: format!(
                    "primary key column '{column}' is missing from {} (it has: {})",
                    file.name,
                    names()
                ),
            });
        }
    }
    Ok(())
}

/// The schema every file of the run is converted to: columns in order of first appearance;
/// declared types win; otherwise the inferred types of all files unified, and in a merge the
/// stored type unless the inferred one widens it. All-empty columns are text.
fn final_schema<'a>(
    schemas: impl Iterator<Item = &'a Schema>,
    declared: &BTreeMap<String, DataType>,
    stored: Option<&Schema>,
) -> SchemaRef {
    let mut order: Vec<String> = Vec::new();
    let mut types: HashMap<String, DataType> = HashMap::new();
    for schema in schemas {
        for f in schema.fields() {
            match types.get_mut(f.name()) {
                Some(t) => *t = unify(t, f.data_type()),
                None => {
                    order.push(f.name().clone());
                    types.insert(f.name().clone(), f.data_type().clone());
                }
            }
        }
    }
    let fields: Vec<Field> = order
        .into_iter()
        .map(|name| {
            let inferred = types.remove(&name).unwrap_or(DataType::Null);
            let t = match declared.get(&name) {
                Some(t) => t.clone(),
                None => match stored.and_then(|s| s.field_with_name(&name).ok()) {
                    Some(s)
                        if inferred != DataType::Null
                            && (*s.data_type() == inferred
                                || crate::sink::widens(s.data_type(), &inferred)) =>
                    {
                        inferred
                    }
                    Some(s) => s.data_type().clone(),
                    None if inferred == DataType::Null => DataType::Utf8,
                    None => inferred,
                },
            };
            Field::new(name, t, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The type holding values of both: integers widen to floats, dates to timestamps, anything
/// else that differs is text.
fn unify(a: &DataType, b: &DataType) -> DataType {
    let number = |t: &DataType| t.is_integer() || t.is_floating();
    match (a, b) {
        _ if a == b => a.clone(),
        (DataType::Null, other) | (other, DataType::Null) => other.clone(),
        _ if a.is_integer() && b.is_integer() => DataType::Int64,
        _ if number(a) && number(b) => DataType::Float64,
        (DataType::Date32, t @ DataType::Timestamp(_, _))
        | (t @ DataType::Timestamp(_, _), DataType::Date32) => t.clone(),
        _ => DataType::Utf8,
    }
}

/// One file to stage as typed Parquet.
struct Convert {
    table: String,
    file: DropFile,
    probe: Probe,
    schema: SchemaRef,
    declared: BTreeMap<String, DataType>,
    out: PathBuf,
    /// The sequence number of the file's first row, when rows are ranked ([`SEQ_COLUMN`]).
    seq: Option<u64>,
    /// Infer CSV types over every row while converting (the probe saw a sample).
    infer: bool,
}

/// A converted file.
struct Staged {
    path: PathBuf,
    rows: u64,
    /// With [`Convert::infer`]: the types of all the file's rows.
    inferred: Option<Schema>,
    /// With [`Convert::infer`]: a value that did not fit (nothing was staged).
    unfit: Option<ConnectorError>,
}

impl Convert {
    fn run(self) -> Result<Staged> {
        let (rows, inferred, unfit) = match self.file.format {
            FileFormat::Csv => self.csv()?,
            FileFormat::Json => (self.json()?, None, None),
            FileFormat::Parquet => (self.parquet()?, None, None),
        };
        Ok(Staged {
            path: self.out,
            rows,
            inferred,
            unfit,
        })
    }

    fn csv(&self) -> Result<(u64, Option<Schema>, Option<ConnectorError>)> {
        // `csv_to_parquet` matches columns by the header's names, which must not carry a BOM.
        let source = if self.probe.bom {
            let copy = self.out.with_extension("csv");
            copy_without_bom(&self.file.path, &copy)?;
            copy
        } else {
            self.file.path.clone()
        };
        let parts = [CsvPart {
            path: source.clone(),
            has_header: true,
        }];
        let options = CsvOptions {
            seq: self.seq,
            infer: self.infer,
        };
        let original = |e: ConnectorError| match e {
            ConnectorError::Decode {
                table,
                what,
                message,
            } if what == source.display().to_string() => ConnectorError::Decode {
                table,
                what: self.file.path.display().to_string(),
                message,
            },
            other => other,
        };
        let converted = csv_to_parquet(&self.table, &parts, &[], &self.schema, &self.out, options)
            .map_err(original)?;
        Ok((
            converted.rows,
            converted.inferred,
            converted.unfit.map(original),
        ))
    }

    fn json(&self) -> Result<u64> {
        let path = &self.file.path;
        // Declared columns are decoded as text (numbers keep their digits), then cast.
        let fields: Vec<Field> = self
            .probe
            .schema
            .fields()
            .iter()
            .map(|f| {
                let as_text = self.declared.contains_key(f.name()) && !f.data_type().is_nested();
                let t = if as_text {
                    DataType::Utf8
                } else {
                    f.data_type().clone()
                };
                Field::new(f.name(), t, true)
            })
            .collect();
        let mut reader = BufReader::with_capacity(BUFFER, open_decoded(path)?);
        if self.probe.bom {
            skip_bom(&mut reader).map_err(|e| ConnectorError::io(path, e))?;
        }
        let json = arrow::json::ReaderBuilder::new(Arc::new(Schema::new(fields)))
            .with_batch_size(BATCH_ROWS)
            .with_coerce_primitive(true)
            .build(reader)
            .map_err(|e| decode(&self.table, path, e))?;
        let mut writer =
            ParquetFileWriter::try_new(&self.out, staged_schema(&self.schema, self.seq))?;
        let mut rows = 0u64;
        for batch in json {
            let batch = batch.map_err(|e| json_error(&self.table, path, e))?;
            let seq = self.seq.map(|s| s + rows);
            let typed = type_batch(&self.table, &batch, &self.schema, rows, seq)?;
            writer.write(&typed)?;
            rows += batch.num_rows() as u64;
        }
        writer.finish()?;
        Ok(rows)
    }

    fn parquet(&self) -> Result<u64> {
        let path = &self.file.path;
        let file = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
            .map_err(|e| decode(&self.table, path, e))?;
        let mut writer =
            ParquetFileWriter::try_new(&self.out, staged_schema(&self.schema, self.seq))?;
        let mut rows = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| decode(&self.table, path, e))?;
            let seq = self.seq.map(|s| s + rows);
            let typed = type_batch(&self.table, &batch, &self.schema, rows, seq)?;
            writer.write(&typed)?;
            rows += batch.num_rows() as u64;
        }
        writer.finish()?;
        Ok(rows)
    }
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

/// Errors that are the file's fault: the file is rejected. Others (local I/O, writing the
/// staged file) leave it in the drop folder.
fn is_file_fault(e: &ConnectorError) -> bool {
    match e {
        ConnectorError::BadValue { .. }
        | ConnectorError::Decode { .. }
        | ConnectorError::Table { .. } => true,
        ConnectorError::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// `e` with `note` appended to its message.
fn annotate(e: ConnectorError, note: &str) -> ConnectorError {
    match e {
        ConnectorError::BadValue {
            table,
            row,
            column,
            reason,
        } => ConnectorError::BadValue {
            table,
            row,
            column,
            reason: format!("{reason}; {note}"),
        },
        ConnectorError::Decode {
            table,
            what,
            message,
        } => ConnectorError::Decode {
            table,
            what,
            message: format!("{message}; {note}"),
        },
        ConnectorError::Table { table, message } => ConnectorError::Table {
            table,
            message: format!("{message}; {note}"),
        },
        ConnectorError::Io { path, source } => ConnectorError::Io {
            path,
            source: std::io::Error::new(source.kind(), format!("{source}; {note}")),
        },
        other => other,
    }
}

fn decode(table: &str, path: &Path, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Decode {
        table: table.to_string(),
        what: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A JSON lines failure, located at the first line that is not a JSON object when there is
/// one.
fn json_error(table: &str, path: &Path, e: arrow::error::ArrowError) -> ConnectorError {
    match first_bad_line(path) {
        Ok(Some((line, reason))) => ConnectorError::BadValue {
            table: table.to_string(),
            row: line,
            column: "(line)".into(),
            reason,
        },
        Ok(None) => decode(table, path, e),
        Err(io) => ConnectorError::io(path, io),
    }
}

/// The first non-blank line (1-based) that is not one JSON object, and why.
fn first_bad_line(path: &Path) -> std::io::Result<Option<(u64, String)>> {
    let mut reader = BufReader::with_capacity(BUFFER, open_decoded_io(path)?);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        line += 1;
        let bytes = match buf.strip_prefix(&BOM) {
            Some(rest) if line == 1 => rest,
            _ => buf.as_slice(),
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Ok(Some((line, "the line is not valid UTF-8".into())));
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(_)) => {}
            Ok(other) => {
                let kind = match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                return Ok(Some((
                    line,
                    format!(
                        "expected a JSON object, found {kind} (files are read as JSON lines: one object per line)"
                    ),
                )));
            }
            Err(e) => {
                return Ok(Some((
                    line,
                    format!(
                        "not valid JSON: {e} (files are read as JSON lines: one complete object per line)"
                    ),
                )));
            }
        }
    }
}

/// The file's bytes, decompressed when it starts with the gzip magic bytes.
fn open_decoded_io(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let mut filled = 0;
    while filled < magic.len() {
        match file.read(&mut magic[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    file.seek(SeekFrom::Start(0))?;
    if filled == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(MultiGzDecoder::new(BufReader::new(file))))
    } else {
        Ok(Box::new(file))
    }
}

fn open_decoded(path: &Path) -> Result<Box<dyn Read + Send>> {
    open_decoded_io(path).map_err(|e| ConnectorError::io(path, e))
}

/// Skips a UTF-8 byte order mark; whether there was one.
fn skip_bom(reader: &mut impl BufRead) -> std::io::Result<bool> {
    let bom = reader.fill_buf()?.starts_with(&BOM);
    if bom {
        reader.consume(BOM.len());
    }
    Ok(bom)
}

/// Writes the decompressed text of `from` without its byte order mark to `to`.
fn copy_without_bom(from: &Path, to: &Path) -> Result<()> {
    let mut reader = BufReader::with_capacity(BUFFER, open_decoded(from)?);
    skip_bom(&mut reader).map_err(|e| ConnectorError::io(from, e))?;
    let mut out = File::create(to).map_err(|e| ConnectorError::io(to, e))?;
    std::io::copy(&mut reader, &mut out).map_err(|e| ConnectorError::io(from, e))?;
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ`, prefixed to processed and rejected files.
fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

/// Moves `from` into `dir` as `<stamp>-<name>` (with a counter when that is taken).
fn move_into(dir: &Path, from: &Path, name: &str, stamp: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| ConnectorError::io(dir, e))?;
    let mut dest = dir.join(format!("{stamp}-{name}"));
    let mut n = 1u32;
    while dest.exists() || report_path(&dest).exists() {
        dest = dir.join(format!("{stamp}-{n}-{name}"));
        n += 1;
    }
    if let Err(e) = std::fs::rename(from, &dest) {
        // Another file system: copy, then remove the original.
        if std::fs::copy(from, &dest).is_err() {
            let _ = std::fs::remove_file(&dest);
            return Err(ConnectorError::io(from, e));
        }
        std::fs::remove_file(from).map_err(|e| ConnectorError::io(from, e))?;
    }
    Ok(dest)
}

/// `<file>.error.txt` next to a rejected file.
fn report_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".error.txt");
    PathBuf::from(name)
}

fn report_text(table: &str, file: &DropFile, error: &ConnectorError, stamp: &str) -> String {
    let mut text = format!(
        "file: {}\ntable: {table}\nrejected: {stamp}\n",
        file.path.display()
    );
    if let ConnectorError::BadValue {
        row,
        column,
        reason,
        ..
    } = error
    {
        text.push_str(&format!("row: {row}\ncolumn: {column}\nreason: {reason}\n"));
    }
    text.push_str(&format!(
        "error: {error}\n\nNothing of this file was loaded. Correct it and drop it again.\n"
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_tables_and_formats() {
        assert_eq!(table_of("orders.csv").as_deref(), Some("orders"));
        assert_eq!(table_of("Orders.2024-06-01.csv").as_deref(), Some("orders"));
        assert_eq!(table_of("2024 sales.jsonl").as_deref(), Some("_2024_sales"));
        assert_eq!(format_of("a.CSV"), Some(FileFormat::Csv));
        assert_eq!(format_of("a.csv.gz"), Some(FileFormat::Csv));
        assert_eq!(format_of("a.ndjson"), Some(FileFormat::Json));
        assert_eq!(format_of("a.json"), Some(FileFormat::Json));
        assert_eq!(format_of("a.parquet"), Some(FileFormat::Parquet));
        assert_eq!(format_of("a.txt"), None);
        assert!(is_in_progress(".a.csv"));
        assert!(is_in_progress("_a.csv"));
        assert!(is_in_progress("a.csv.tmp"));
        assert!(is_in_progress("a.csv.part"));
        assert!(!is_in_progress("a.csv"));
    }

    #[test]
    fn types_unify_and_follow_the_stored_table() {
        assert_eq!(
            unify(&DataType::Int64, &DataType::Float64),
            DataType::Float64
        );
        assert_eq!(unify(&DataType::Null, &DataType::Date32), DataType::Date32);
        assert_eq!(unify(&DataType::Boolean, &DataType::Int64), DataType::Utf8);
        let a = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("x", DataType::Null, true),
            Field::new("v", DataType::Float64, true),
        ]);
        let stored = Schema::new(vec![
            Field::new("id", DataType::Float64, false),
            Field::new("v", DataType::Int64, false),
        ]);
        let declared = BTreeMap::from([("code".to_string(), DataType::Utf8)]);
        let s = final_schema([&a].into_iter(), &declared, Some(&stored));
        let types: Vec<&DataType> = s.fields().iter().map(|f| f.data_type()).collect();
        // The stored float holds the inferred integers; the float widens the stored integers.
        assert_eq!(
            types,
            vec![&DataType::Float64, &DataType::Utf8, &DataType::Float64]
        );
        assert!(s.fields().iter().all(|f| f.is_nullable()));
    }
}
