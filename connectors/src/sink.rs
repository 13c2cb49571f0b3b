//! The one writer of connector output: staged rows become a table's files, replacing or
//! merging, as one atomic change to the catalog's data dir.
//!
//! Every connector first stages what it received as a typed Parquet file with a sequence
//! column ([`SEQ_COLUMN`], arrival order). [`Sink::write`] then:
//! - replaces the table, or merges the staged rows into the stored ones, keeping the newest
//!   row per primary key (a DataFusion window query: `row_number() OVER (PARTITION BY key
//!   ORDER BY seq DESC) = 1`, stored rows ranking below every new one);
//! - for a partitioned table, touches only the partition files the new rows fall into (one
//!   merge per partition), or rewrites them all on a replace;
//! - writes the results as staged files next to their destination and puts them into place
//!   with [`commit_table`], so a reader sees the whole old table or the whole new one, and a
//!   crash at any point leaves the old table (or a journal that recovery completes).
//!
//! Schema drift: a column new at the source is added (NULL in stored rows); a column that
//! disappeared stays (NULL in new rows); a type that widens (integer to float or decimal,
//! date to timestamp) is cast; any other type change fails the table and leaves it untouched.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{ExprFunctionExt, cast, col, lit};
use datafusion::prelude::{Expr, ParquetReadOptions, SessionConfig, SessionContext};
use dataport_catalog::description::PartitionGranularity;
use dataport_catalog::write::{
    ParquetFileWriter, StagedFile, WriteError, commit_table, journal_path,
};
use dataport_common::FsError;
use futures::StreamExt;

use crate::error::{ConnectorError, Result};

/// Arrival order of staged rows; higher wins in a merge. Never stored in a table.
pub const SEQ_COLUMN: &str = "__dp_seq";

/// Memory of a merge; sorts beyond it spill to the temporary directory, so merging a large
/// table needs disk, not RAM.
const MERGE_MEMORY: usize = 512 << 20;

/// The partition file key of rows whose partition column is NULL.
pub const NULL_PARTITION: &str = "unknown";

/// How a partitioned table splits into files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    pub column: String,
    pub granularity: PartitionGranularity,
}

/// Where and how staged rows land.
#[derive(Debug, Clone)]
pub struct TableTarget {
    /// Catalog schema (folder under `parquet/`).
    pub schema: String,
    /// Table name (file or folder name).
    pub name: String,
    /// Columns identifying a row; empty means no de-duplication.
    pub primary_key: Vec<String>,
    pub partitioning: Option<Partitioning>,
}

impl TableTarget {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Whether staged rows need [`SEQ_COLUMN`]: only a primary key's de-duplication ranks
    /// them. Without it, staged files may leave the column out.
    pub fn ranks_rows(&self) -> bool {
        !self.primary_key.is_empty()
    }
}

/// Replace the table with the staged rows, or merge them into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Replace,
    Merge,
}

/// The table after a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows in the whole table.
    pub rows: u64,
    pub columns: u64,
    /// Bytes of the whole table on disk.
    pub bytes: u64,
    /// Files written by this change.
    pub files_written: usize,
    /// Files removed by this change.
    pub files_removed: usize,
    /// Each written file and its SHA-256 (taken while writing), for the sync manifests.
    pub digests: Vec<(PathBuf, String)>,
}

/// Writes tables under `<data>/parquet/`.
#[derive(Debug, Clone)]
pub struct Sink {
    parquet_root: PathBuf,
}

impl Sink {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            parquet_root: data_dir.join("parquet"),
        }
    }

    pub fn parquet_root(&self) -> &Path {
        &self.parquet_root
    }

    /// The single file of an unpartitioned table.
    pub fn file_of(&self, t: &TableTarget) -> PathBuf {
        self.parquet_root
            .join(&t.schema)
            .join(format!("{}.parquet", t.name))
    }

    /// The folder of a partitioned table.
    pub fn dir_of(&self, t: &TableTarget) -> PathBuf {
        self.parquet_root.join(&t.schema).join(&t.name)
    }

    /// The table's current files (a single file, or the partition files of its folder).
    pub fn current_files(&self, t: &TableTarget) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let single = self.file_of(t);
        if single.is_file() {
            files.push(single);
        }
        let dir = self.dir_of(t);
        if dir.is_dir() {
            let entries = std::fs::read_dir(&dir).map_err(|e| ConnectorError::io(&dir, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| ConnectorError::io(&dir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".parquet") && !dataport_catalog::names::is_ignored(&name) {
                    files.push(entry.path());
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// The stored schema, if the table exists.
    pub fn current_schema(&self, t: &TableTarget) -> Result<Option<SchemaRef>> {
        let files = self.current_files(t)?;
        let Some(first) = files.first() else {
            return Ok(None);
        };
        let file = File::open(first).map_err(|e| ConnectorError::io(first, e))?;
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| ConnectorError::Decode {
                table: t.qualified(),
                what: first.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(Some(Arc::clone(builder.schema())))
    }

    /// Puts the staged rows (Parquet files with [`SEQ_COLUMN`], one schema) into the table.
    pub async fn write(
        &self,
        t: &TableTarget,
        staged: &[PathBuf],
        mode: WriteMode,
    ) -> Result<Written> {
        let table = t.qualified();
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(MERGE_MEMORY)))
            .build_arc()
            .map_err(|e| merge_error(&table, e))?;
        let ctx = SessionContext::new_with_config_rt(
            SessionConfig::new().with_target_partitions(2),
            runtime,
        );
        let new = read_many(&ctx, staged, &table).await?;
        let new_schema: SchemaRef = Arc::new(new.schema().as_arrow().clone());
        for k in &t.primary_key {
            if new_schema.field_with_name(k).is_err() {
                return Err(ConnectorError::Table {
                    table,
                    message: format!("primary key column '{k}' is not among the received columns"),
                });
            }
        }
        let current = self.current_files(t)?;
        if let Some(written) = self.put_in_place(t, staged, &new_schema, mode, &current)? {
            return Ok(written);
        }
        let stored = match mode {
            WriteMode::Merge => self.current_schema(t)?,
            WriteMode::Replace => None,
        };
        let target = target_schema(&table, stored.as_deref(), &new_schema)?;
        let new = align(new, &target, true)?;

        let mut staged_files: Vec<StagedFile> = Vec::new();
        let mut deletes: Vec<PathBuf> = Vec::new();
        match &t.partitioning {
            None => {
                let dest = self.file_of(t);
                let old = match mode {
                    WriteMode::Merge if !current.is_empty() => Some(align(
                        read_many(&ctx, &current, &table).await?,
                        &target,
                        false,
                    )?),
                    _ => None,
                };
                let merged =
                    dedupe(new, old, &t.primary_key).map_err(|e| merge_error(&table, e))?;
                // An empty source still gives a table (with its columns), not none.
                if let Some(f) = write_df(merged, &dest, &target, &table, true).await? {
                    staged_files.push(f);
                }
                deletes.extend(current.into_iter().filter(|p| *p != dest));
            }
            Some(p) => {
                if target.field_with_name(&p.column).is_err() {
                    return Err(ConnectorError::Table {
                        table,
                        message: format!(
                            "partition_by column '{}' is not among the received columns",
                            p.column
                        ),
                    });
                }
                let dir = self.dir_of(t);
                let new = new
                    .with_column(KEY_COLUMN, key_expr(p))
                    .map_err(|e| merge_error(&table, e))?;
                let keys = distinct_keys(&new, &table).await?;
                for key in &keys {
                    let dest = dir.join(format!("{key}.parquet"));
                    let part_new = new
                        .clone()
                        .filter(col(KEY_COLUMN).eq(lit(key.as_str())))
                        .and_then(|df| df.drop_columns(&[KEY_COLUMN]))
                        .map_err(|e| merge_error(&table, e))?;
                    let old = match mode {
                        WriteMode::Merge if dest.is_file() => {
                            Some(align(read(&ctx, &dest, &table).await?, &target, false)?)
                        }
                        _ => None,
                    };
                    let merged = dedupe(part_new, old, &t.primary_key)
                        .map_err(|e| merge_error(&table, e))?;
                    if let Some(f) = write_df(merged, &dest, &target, &table, false).await? {
                        staged_files.push(f);
                    }
                }
                // A replace drops the partitions the new data does not have; a merge keeps
                // them. A single-file version of the table goes either way.
                let single = self.file_of(t);
                for f in current {
                    let is_new_key = f
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .is_some_and(|s| keys.iter().any(|k| k == s));
                    if f == single || (mode == WriteMode::Replace && !is_new_key) {
                        deletes.push(f);
                    }
                }
                // Partitions without new rows keep the schema they were written with; a merge
                // that adds, widens or reorders columns rewrites them to the table's one schema
                // (a folder of partitions with different schemas cannot be read as one table).
                if mode == WriteMode::Merge {
                    for f in self.current_files(t)? {
                        let key = f.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                        if keys.iter().any(|k| k == key) || f == single {
                            continue;
                        }
                        let old = read(&ctx, &f, &table).await?;
                        if same_columns(old.schema().as_arrow(), &target) {
                            continue;
                        }
                        // Rewritten as they are: the target's columns, no ranking column.
                        let old = align(old, &target, false)?
                            .drop_columns(&[SEQ_COLUMN])
                            .map_err(|e| merge_error(&table, e))?;
                        if let Some(s) = write_df(old, &f, &target, &table, false).await? {
                            staged_files.push(s);
                        }
                    }
                }
            }
        }
        let files_written = staged_files.len();
        let files_removed = deletes.len();
        let digests: Vec<(PathBuf, String)> = staged_files
            .iter()
            .map(|s| (s.dest().to_path_buf(), s.sha256().to_string()))
            .collect();
        commit_table(
            &journal_path(&self.parquet_root, &t.schema, &t.name),
            staged_files,
            &deletes,
        )?;
        let (rows, bytes) = self.totals(t)?;
        Ok(Written {
            rows,
            columns: target.fields().len() as u64,
            bytes,
            files_written,
            files_removed,
            digests,
        })
    }

    /// Replaces an unpartitioned table without a primary key by its one staged file without
    /// [`SEQ_COLUMN`], which is already the table (same columns, types and writer settings):
    /// the file is moved into place instead of being read and written again. `None` when
    /// that does not apply (or the staging folder is on another file system).
    fn put_in_place(
        &self,
        t: &TableTarget,
        staged: &[PathBuf],
        staged_schema: &Schema,
        mode: WriteMode,
        current: &[PathBuf],
    ) -> Result<Option<Written>> {
        let [file] = staged else {
            return Ok(None);
        };
        if mode != WriteMode::Replace
            || t.partitioning.is_some()
            || t.ranks_rows()
            || staged_schema.field_with_name(SEQ_COLUMN).is_ok()
        {
            return Ok(None);
        }
        let dest = self.file_of(t);
        let adopted = match StagedFile::adopt(file, &dest) {
            Ok(f) => f,
            Err(WriteError::Fs(FsError::Link { source, .. }))
                if source.kind() == std::io::ErrorKind::CrossesDevices =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let digests = vec![(dest.clone(), adopted.sha256().to_string())];
        let deletes: Vec<PathBuf> = current.iter().filter(|p| **p != dest).cloned().collect();
        let files_removed = deletes.len();
        commit_table(
            &journal_path(&self.parquet_root, &t.schema, &t.name),
            vec![adopted],
            &deletes,
        )?;
        let (rows, bytes) = self.totals(t)?;
        Ok(Some(Written {
            rows,
            columns: staged_schema.fields().len() as u64,
            bytes,
            files_written: 1,
            files_removed,
            digests,
        }))
    }

    /// Rows and bytes of the table's files, from their footers.
    pub fn totals(&self, t: &TableTarget) -> Result<(u64, u64)> {
        let mut rows = 0u64;
        let mut bytes = 0u64;
        for f in self.current_files(t)? {
            let file = File::open(&f).map_err(|e| ConnectorError::io(&f, e))?;
            bytes += file
                .metadata()
                .map_err(|e| ConnectorError::io(&f, e))?
                .len();
            let meta = parquet::file::reader::FileReader::metadata(
                &parquet::file::reader::SerializedFileReader::new(file).map_err(|e| {
                    ConnectorError::Decode {
                        table: t.qualified(),
                        what: f.display().to_string(),
                        message: e.to_string(),
                    }
                })?,
            )
            .file_metadata()
            .num_rows();
            rows += u64::try_from(meta).unwrap_or(0);
        }
        Ok((rows, bytes))
    }
}

/// The partition key of a row, computed in a merge.
const KEY_COLUMN: &str = "__dp_key";

/// `YYYY`, `YYYY_MM` or `YYYY_MM_DD` of the partition column (typed date/timestamp or text
/// starting with an ISO date), or [`NULL_PARTITION`].
fn key_expr(p: &Partitioning) -> Expr {
    use datafusion::functions::expr_fn::{coalesce, left, replace};
    let len = match p.granularity {
        PartitionGranularity::Year => 4i64,
        PartitionGranularity::Month => 7,
        PartitionGranularity::Day => 10,
    };
    let text = cast(col(quoted(&p.column)), DataType::Utf8);
    coalesce(vec![
        replace(left(text, lit(len)), lit("-"), lit("_")),
        lit(NULL_PARTITION),
    ])
}

async fn distinct_keys(df: &DataFrame, table: &str) -> Result<Vec<String>> {
    let batches = df
        .clone()
        .select(vec![col(KEY_COLUMN)])
        .and_then(|d| d.distinct())
        .map_err(|e| merge_error(table, e))?
        .collect()
        .await
        .map_err(|e| merge_error(table, e))?;
    let mut keys = BTreeSet::new();
    for b in &batches {
        let values = arrow::compute::cast(b.column(0), &DataType::Utf8)
            .map_err(|e| merge_error(table, e.into()))?;
        let values = values
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .ok_or_else(|| ConnectorError::Table {
                table: table.to_string(),
                message: "partition keys are not text".into(),
            })?;
        for v in values.iter().flatten() {
            keys.insert(v.to_string());
        }
    }
    for k in &keys {
        let ok = k == NULL_PARTITION
            || (k.len() >= 4
                && k.chars().all(|c| c.is_ascii_digit() || c == '_')
                && k.as_bytes()[..4].iter().all(u8::is_ascii_digit));
        if !ok {
            return Err(ConnectorError::Table {
                table: table.to_string(),
                message: format!(
                    "partition_by column holds '{k}', which does not start with a date (YYYY-MM-DD)"
                ),
            });
        }
    }
    Ok(keys.into_iter().collect())
}

/// The schema after the write: stored columns first (widened where the source widened them),
/// then columns new at the source (nullable). Errors on an incompatible type change.
fn target_schema(table: &str, stored: Option<&Schema>, new: &Schema) -> Result<SchemaRef> {
    let data_fields = |s: &Schema| -> Vec<Field> {
        s.fields()
            .iter()
            .filter(|f| f.name() != SEQ_COLUMN)
            .map(|f| f.as_ref().clone())
            .collect()
    };
    let Some(stored) = stored else {
        return Ok(Arc::new(Schema::new(data_fields(new))));
    };
    let mut fields: Vec<Field> = Vec::new();
    let mut changes = Vec::new();
    for old in data_fields(stored) {
        match new.field_with_name(old.name()) {
            Ok(n) if n.data_type() == old.data_type() => fields.push(old.with_nullable(true)),
            Ok(n) if widens(old.data_type(), n.data_type()) => {
                fields.push(Field::new(old.name(), n.data_type().clone(), true));
            }
            Ok(n) => changes.push(format!(
                "column '{}' was {} and is now {}",
                old.name(),
                old.data_type(),
                n.data_type()
            )),
            Err(_) => fields.push(old.with_nullable(true)),
        }
    }
    if !changes.is_empty() {
        return Err(ConnectorError::SchemaDrift {
            table: table.to_string(),
            change: changes.join("; "),
        });
    }
    for f in data_fields(new) {
        if stored.field_with_name(f.name()).is_err() {
            fields.push(f.with_nullable(true));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Whether `have` has exactly `target`'s columns: names and types, in order.
fn same_columns(have: &Schema, target: &Schema) -> bool {
    have.fields().len() == target.fields().len()
        && have
            .fields()
            .iter()
            .zip(target.fields())
            .all(|(h, t)| h.name() == t.name() && h.data_type() == t.data_type())
}

/// Type changes that lose nothing, so stored values are cast.
pub(crate) fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    matches!(
        (from, to),
        (
            Int8 | Int16 | Int32 | Int64,
            Int64 | Float64 | Decimal128(_, _)
        ) | (Float32, Float64)
            | (Date32, Timestamp(_, None))
            | (Utf8, Utf8View | LargeUtf8)
            | (Utf8View, Utf8 | LargeUtf8)
    )
}

/// `df` with exactly `target`'s columns (missing ones NULL, types cast), plus the sequence
/// column: kept when `keep_seq` (new rows) and `df` has one, 0 otherwise (stored rows rank
/// below new ones; rows staged without one are not ranked).
fn align(df: DataFrame, target: &Schema, keep_seq: bool) -> Result<DataFrame> {
    let have = df.schema().clone();
    let mut exprs: Vec<Expr> = Vec::with_capacity(target.fields().len() + 1);
    for f in target.fields() {
        let e = if have.field_with_unqualified_name(f.name()).is_ok() {
            cast(col(quoted(f.name())), f.data_type().clone())
        } else {
            match ScalarValue::try_from(f.data_type()) {
                Ok(typed_null) => lit(typed_null),
                Err(_) => cast(lit(ScalarValue::Null), f.data_type().clone()),
            }
        };
        exprs.push(e.alias(f.name()));
    }
    let has_seq = have.field_with_unqualified_name(SEQ_COLUMN).is_ok();
    exprs.push(if keep_seq && has_seq {
        col(SEQ_COLUMN)
    } else {
        lit(0u64).alias(SEQ_COLUMN)
    });
    df.select(exprs).map_err(|e| merge_error("(align)", e))
}

/// New rows (and stored ones) reduced to the newest row per key, without the sequence column.
fn dedupe(
    new: DataFrame,
    old: Option<DataFrame>,
    key: &[String],
) -> datafusion::error::Result<DataFrame> {
    let all = match old {
        Some(old) => old.union(new)?,
        None => new,
    };
    let columns: Vec<Expr> = all
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != SEQ_COLUMN)
        .map(|f| col(quoted(f.name())))
        .collect();
    if key.is_empty() {
        return all.select(columns);
    }
    let rank = row_number()
        .partition_by(key.iter().map(|k| col(quoted(k))).collect())
        .order_by(vec![col(SEQ_COLUMN).sort(false, false)])
        .build()?
        .alias("__dp_rank");
    all.window(vec![rank])?
        .filter(col("__dp_rank").eq(lit(1u64)))?
        .select(columns)
}

/// Streams `df` into a staged file at `dest`; `None` when it has no rows, unless
/// `even_empty`.
async fn write_df(
    df: DataFrame,
    dest: &Path,
    schema: &SchemaRef,
    table: &str,
    even_empty: bool,
) -> Result<Option<StagedFile>> {
    let mut stream = df
        .execute_stream()
        .await
        .map_err(|e| merge_error(table, e))?;
    let mut writer: Option<ParquetFileWriter> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| merge_error(table, e))?;
        if batch.num_rows() == 0 {
            continue;
        }
        // Same columns in the same order as `schema`; nullability as declared there.
        let batch =
            arrow::record_batch::RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec())
                .map_err(|e| merge_error(table, e.into()))?;
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(ParquetFileWriter::try_new(dest, Arc::clone(schema))?),
        };
        w.write(&batch)?;
    }
    match writer {
        Some(w) => Ok(Some(w.finish_staged()?)),
        None if even_empty => Ok(Some(
            ParquetFileWriter::try_new(dest, Arc::clone(schema))?.finish_staged()?,
        )),
        None => Ok(None),
    }
}

async fn read(ctx: &SessionContext, path: &Path, table: &str) -> Result<DataFrame> {
    read_many(ctx, &[path.to_path_buf()], table).await
}

async fn read_many(ctx: &SessionContext, paths: &[PathBuf], table: &str) -> Result<DataFrame> {
    let urls = paths
        .iter()
        .map(|p| file_url(p))
        .collect::<Result<Vec<String>>>()?;
    ctx.read_parquet(urls, ParquetReadOptions::default())
        .await
        .map_err(|e| merge_error(table, e))
}

/// A file as DataFusion must be given it: a `file://` URL of its absolute path. A bare path
/// would be taken as a glob where its name has `*`, `?` or `[`, and resolved against whatever
/// directory the process is in.
fn file_url(path: &Path) -> Result<String> {
    let absolute = std::path::absolute(path).map_err(|e| ConnectorError::io(path, e))?;
    url::Url::from_file_path(&absolute)
        .map(String::from)
        .map_err(|()| {
            ConnectorError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a local file path"),
            )
        })
}

/// A column name as DataFusion's `col()` must see it (kept exactly, not lower-cased).
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn merge_error(table: &str, source: datafusion::error::DataFusionError) -> ConnectorError {
    ConnectorError::Merge {
        table: table.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn a_file_whose_name_looks_like_a_glob_is_read_as_itself() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, rows: i64| {
            let ids: Vec<i64> = (0..rows).collect();
            let batch =
                RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(ids)) as ArrayRef)])
                    .unwrap();
            let path = dir.path().join(name);
            let file = std::fs::File::create(&path).unwrap();
            let mut writer =
                parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            path
        };
        let odd = write("we[ir]d #1 ?.parquet", 3);
        // What the name would match as a glob must not be read instead.
        write("weid #1 x.parquet", 5);
        let frame = super::read(&SessionContext::new(), &odd, "t")
            .await
            .unwrap();
        assert_eq!(frame.count().await.unwrap(), 3);
    }
}
