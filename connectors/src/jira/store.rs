//! The source's files: raw webhook bodies (`raw/<source>/events/<day>/…json`), each issue's
//! latest snapshot (`raw/<source>/issues/<KEY>.json`), downloaded attachments
//! (`raw/<source>/attachments/<KEY>/<id>`), and the six tables' month partitions
//! (`parquet/<schema>/<table>/<YYYY-MM>.parquet`), rebuilt for a set of issues at a time.
//!
//! Every name in a path is checked first (issue keys by their pattern, attachment ids as
//! numbers, months as `YYYY-MM`), and every write is atomic: a temporary file, synced, renamed;
//! partitions go through the catalog's commit journal.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, new_null_array};
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::datatypes::SchemaRef;
use dataport_catalog::write::{ParquetFileWriter, WriteError, commit_table, journal_path};
use dataport_common::fs::write_bytes_atomic;
use dataport_state::{FileDigest, StateStore};

use super::rows::{self, Bundle, RowContext, TABLES, TableRows};
use super::verify::{is_issue_key, is_numeric_id};
use crate::error::{ConnectorError, Result};

/// Where one Jira source keeps its files.
#[derive(Debug, Clone)]
pub struct Area {
    data_dir: PathBuf,
    source: String,
    schema: String,
}

impl Area {
    pub fn new(data_dir: &Path, source: &str, schema: &str) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            source: source.to_string(),
            schema: schema.to_string(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// `raw/<source>`, relative to the data dir.
    fn raw(&self) -> PathBuf {
        Path::new("raw").join(&self.source)
    }

    fn absolute(&self, relative: &Path) -> PathBuf {
        self.data_dir.join(relative)
    }

    /// Stores a webhook body before it is acknowledged; returns its path relative to the
    /// data dir.
    pub fn save_event(&self, body: &[u8], received_ms: i64, unique: &str) -> Result<String> {
        let day = chrono::DateTime::from_timestamp_millis(received_ms)
            .unwrap_or_default()
            .format("%Y-%m-%d")
            .to_string();
        // `unique` is a digest (hex), so the name is safe.
        let name = format!("{received_ms}-{unique}.json");
        let relative = self.raw().join("events").join(day).join(name);
        write_bytes_atomic(&self.absolute(&relative), body).map_err(WriteError::from)?;
        Ok(relative.to_string_lossy().into_owned())
    }

    /// Removes a stored webhook body (retention); a missing one is fine.
    pub fn remove_event(&self, relative: &str) -> Result<()> {
        let path = self.data_dir.join(relative);
        if !path.starts_with(self.data_dir.join(self.raw()).join("events"))
            || relative.contains("..")
        {
            return Ok(());
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::remove_dir(dir);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ConnectorError::io(path, e)),
        }
    }

    /// `raw/<source>/issues/<KEY>.json`, relative to the data dir.
    pub fn snapshot_path(&self, key: &str) -> Result<String> {
        let key = checked_key(key)?;
        Ok(self
            .raw()
            .join("issues")
            .join(format!("{key}.json"))
            .to_string_lossy()
            .into_owned())
    }

    /// The issue's stored snapshot, if any.
    pub fn read_snapshot(&self, key: &str) -> Result<Option<Bundle>> {
        let path = self.data_dir.join(self.snapshot_path(key)?);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ConnectorError::decode(&format!("{}.issues", self.schema), &path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ConnectorError::io(path, e)),
        }
    }

    pub fn write_snapshot(&self, bundle: &Bundle) -> Result<()> {
        let key = bundle.key().unwrap_or_default();
        let path = self.data_dir.join(self.snapshot_path(key)?);
        let bytes = serde_json::to_vec(bundle)
            .map_err(|e| ConnectorError::io(&path, std::io::Error::other(e)))?;
        Ok(write_bytes_atomic(&path, &bytes).map_err(WriteError::from)?)
    }

    /// Forgets a deleted issue: its snapshot and attachments.
    pub fn remove_issue(&self, key: &str) -> Result<()> {
        let snapshot = self.data_dir.join(self.snapshot_path(key)?);
        match std::fs::remove_file(&snapshot) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ConnectorError::io(snapshot, e)),
        }
        let dir = self.attachment_dir(key)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ConnectorError::io(dir, e)),
        }
    }

    fn attachment_dir(&self, key: &str) -> Result<PathBuf> {
        Ok(self
            .data_dir
            .join(self.raw())
            .join("attachments")
            .join(checked_key(key)?))
    }

    /// `raw/<source>/attachments/<KEY>/<id>`, relative to the data dir.
    pub fn attachment_path(&self, key: &str, id: &str) -> Result<String> {
        if !is_numeric_id(id) {
            return Err(invalid(format!("'{id}' is not an attachment id")));
        }
        Ok(self
            .raw()
            .join("attachments")
            .join(checked_key(key)?)
            .join(id)
            .to_string_lossy()
            .into_owned())
    }

    /// Stores an attachment's content; returns its relative path.
    pub fn save_attachment(&self, key: &str, id: &str, content: &[u8]) -> Result<String> {
        let relative = self.attachment_path(key, id)?;
        write_bytes_atomic(&self.data_dir.join(&relative), content).map_err(WriteError::from)?;
        Ok(relative)
    }

    /// Removes stored attachments of `key` that are no longer on the issue.
    pub fn prune_attachments(&self, key: &str, keep: &HashSet<String>) -> Result<()> {
        let dir = self.attachment_dir(key)?;
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                std::fs::remove_file(entry.path())
                    .map_err(|e| ConnectorError::io(entry.path(), e))?;
            }
        }
        Ok(())
    }

    /// The absolute path of a stored file named in the `attachments` table, if it is one of
    /// this source's attachments.
    pub fn attachment_file(&self, relative: &str) -> Option<PathBuf> {
        let base = self.raw().join("attachments");
        let rel = Path::new(relative);
        let parts: Vec<&str> = rel
            .strip_prefix(&base)
            .ok()?
            .iter()
            .filter_map(|p| p.to_str())
            .collect();
        match parts.as_slice() {
            [key, id] if is_issue_key(key) && is_numeric_id(id) => Some(self.data_dir.join(rel)),
            _ => None,
        }
    }

    fn partition(&self, table: &str, month: &str) -> Result<PathBuf> {
        if !is_month(month) {
            return Err(invalid(format!("'{month}' is not a month (YYYY-MM)")));
        }
        Ok(self
            .data_dir
            .join("parquet")
            .join(&self.schema)
            .join(table)
            .join(format!("{month}.parquet")))
    }

    /// Rebuilds month `month` of all six tables: rows of `keys` are dropped, then the rows of
    /// `bundles` (issues of that month; a key without a bundle stays removed) are added. Each
    /// table changes atomically; the caller holds the month's lock.
    pub fn rewrite_month(
        &self,
        month: &str,
        keys: &HashSet<String>,
        bundles: &[Bundle],
        ctx: &RowContext<'_>,
        state: &StateStore,
    ) -> Result<()> {
        let mut fresh = TableRows::default();
        for b in bundles {
            let raw_file = self.snapshot_path(b.key().unwrap_or_default())?;
            fresh.add(
                b,
                &RowContext {
                    raw_file: &raw_file,
                    ..ctx.clone()
                },
            );
        }
        let parquet_root = self.data_dir.join("parquet");
        for table in TABLES {
            let qualified = format!("{}.{table}", self.schema);
            let path = self.partition(table, month)?;
            let schema = rows::schema(table);
            let mut batches = Vec::new();
            if path.is_file() {
                for batch in read_file(&path, &qualified)? {
                    let kept = without_keys(&batch, keys, &qualified)?;
                    if kept.num_rows() > 0 {
                        batches.push(conform(&kept, &schema, &qualified)?);
                    }
                }
            }
            let new = fresh.batch(table).map_err(|e| arrow_error(&qualified, e))?;
            if new.num_rows() > 0 {
                batches.push(new);
            }
            let journal = journal_path(&parquet_root, &self.schema, table);
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            // An empty month goes, unless it is the table's only file: then it stays, empty,
            // so the table (and its columns) exists before its first row.
            if rows == 0 && has_other_partitions(&path) {
                if path.is_file() {
                    commit_table(&journal, Vec::new(), std::slice::from_ref(&path))?;
                }
                continue;
            }
            if rows == 0 && path.is_file() && read_rows(&path) == Some(0) {
                continue;
            }
            let all = concat_batches(&schema, &batches).map_err(|e| arrow_error(&qualified, e))?;
            let mut writer = ParquetFileWriter::try_new(&path, Arc::clone(&schema))?;
            writer.write(&all)?;
            let staged = writer.finish_staged()?;
            let digest = staged.sha256().to_string();
            commit_table(&journal, vec![staged], &[])?;
            match FileDigest::of_file(&self.data_dir, &path, digest) {
                Ok(Some(d)) => {
                    if let Err(e) = state.put_file_digest(&d) {
                        tracing::warn!(file = %path.display(), error = %e, "cannot record a file digest");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot record a file digest")
                }
            }
        }
        Ok(())
    }
}

fn invalid(message: String) -> ConnectorError {
    ConnectorError::Protocol {
        url: "webhook".into(),
        message,
    }
}

fn checked_key(key: &str) -> Result<&str> {
    if is_issue_key(key) {
        Ok(key)
    } else {
        Err(invalid(format!(
            "'{}' is not a Jira issue key",
            key.escape_debug()
        )))
    }
}

/// `YYYY-MM`.
pub fn is_month(m: &str) -> bool {
    let b = m.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[5..].iter().all(u8::is_ascii_digit)
}

fn arrow_error(table: &str, e: arrow::error::ArrowError) -> ConnectorError {
    ConnectorError::Table {
        table: table.to_string(),
        message: e.to_string(),
    }
}

impl Area {
    /// Rows, columns and bytes of a whole table (every partition's footer), if it exists.
    pub fn table_totals(&self, table: &str) -> Option<(u64, u64, u64)> {
        let dir = self.data_dir.join("parquet").join(&self.schema).join(table);
        let entries = std::fs::read_dir(&dir).ok()?;
        let (mut rows, mut bytes) = (0u64, 0u64);
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".parquet") || dataport_catalog::names::is_ignored(&name) {
                continue;
            }
            rows += read_rows(&entry.path()).unwrap_or(0).max(0) as u64;
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
        Some((rows, rows::schema(table).fields().len() as u64, bytes))
    }
}

/// Whether the partition folder of `path` holds other partition files.
fn has_other_partitions(path: &Path) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            e.path() != path
                && name.ends_with(".parquet")
                && !dataport_catalog::names::is_ignored(&name)
        })
    })
}

/// Rows of a Parquet file, from its footer.
fn read_rows(path: &Path) -> Option<i64> {
    let file = File::open(path).ok()?;
    let reader = parquet::file::reader::SerializedFileReader::new(file).ok()?;
    Some(
        parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .num_rows(),
    )
}

fn read_file(path: &Path, table: &str) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| ConnectorError::io(path, e))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| ConnectorError::decode(table, path, e))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectorError::decode(table, path, e))
}

/// `batch` without the rows whose `issue_key` is in `keys`.
fn without_keys(batch: &RecordBatch, keys: &HashSet<String>, table: &str) -> Result<RecordBatch> {
    let Some(column) = batch.column_by_name("issue_key") else {
        return Ok(batch.clone());
    };
    let column =
        cast(column, &arrow::datatypes::DataType::Utf8).map_err(|e| arrow_error(table, e))?;
    let strings = column.as_string::<i32>();
    let mask: BooleanArray = (0..strings.len())
        .map(|i| Some(strings.is_null(i) || !keys.contains(strings.value(i))))
        .collect();
    filter_record_batch(batch, &mask).map_err(|e| arrow_error(table, e))
}

/// Stored rows in the current schema: columns matched by name, missing ones null, types cast
/// (files written by an earlier version keep working).
fn conform(batch: &RecordBatch, schema: &SchemaRef, table: &str) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch.clone());
    }
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
            Some(c) => cast(c, f.data_type()).map_err(|e| arrow_error(table, e)),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<_>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| arrow_error(table, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_built_only_from_checked_names() {
        let area = Area::new(Path::new("/data"), "jira", "jira");
        assert_eq!(
            area.snapshot_path("SUP-1").unwrap(),
            "raw/jira/issues/SUP-1.json"
        );
        assert!(area.snapshot_path("../SUP-1").is_err());
        assert!(area.snapshot_path("SUP-1/../../x").is_err());
        assert_eq!(
            area.attachment_path("SUP-1", "10001").unwrap(),
            "raw/jira/attachments/SUP-1/10001"
        );
        assert!(area.attachment_path("SUP-1", "../1").is_err());
        assert!(area.partition("issues", "2024-13/../x").is_err());
        assert!(
            area.attachment_file("raw/jira/attachments/SUP-1/10001")
                .is_some()
        );
        assert!(
            area.attachment_file("raw/jira/attachments/../issues/SUP-1.json")
                .is_none()
        );
        assert!(
            area.attachment_file("raw/other/attachments/SUP-1/10001")
                .is_none()
        );
        assert!(area.attachment_file("/etc/passwd").is_none());
    }
}
