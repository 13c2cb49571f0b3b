//! Discover stage: the files waiting in the drop folder, their tables, formats and skipped names.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::SystemTime;

use dataport_catalog::description::Descriptions;
use dataport_catalog::names::sql_identifier;

use super::{FilesConnector, FilesMode};
use crate::connector::SourceTable;
use crate::error::{ConnectorError, Result};
use crate::sink::TableTarget;

/// A file waiting in the drop folder.
#[derive(Debug, Clone)]
pub(super) struct DropFile {
    pub(super) path: PathBuf,
    pub(super) name: String,
    pub(super) table: String,
    pub(super) format: FileFormat,
    pub(super) modified: SystemTime,
    pub(super) size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileFormat {
    Csv,
    Json,
    Parquet,
}

impl FilesConnector {
    /// The tables the files waiting in the drop folder feed, with the primary keys `described`
    /// gives them.
    pub(super) fn tables(&self, described: Option<&Descriptions>) -> Result<Vec<SourceTable>> {
        let names: BTreeSet<String> = self.scan()?.into_iter().map(|f| f.table).collect();
        Ok(names
            .into_iter()
            .map(|name| {
                let primary_key = described
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

    /// The files waiting for `table`, oldest first (ties by name).
    pub(super) fn waiting_for(&self, table: &str) -> Result<Vec<DropFile>> {
        Ok(self
            .scan()?
            .into_iter()
            .filter(|f| f.table == table)
            .collect())
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
}

impl FilesMode {
    /// The files of a table (oldest first) to load, and those superseded, which are not read:
    /// in replace mode only the newest file is loaded.
    pub(super) fn split(self, mut files: Vec<DropFile>) -> (Vec<DropFile>, Vec<DropFile>) {
        match self {
            Self::Replace => {
                let newest = files.split_off(files.len().saturating_sub(1));
                (newest, files)
            }
            Self::Append => (files, Vec::new()),
        }
    }
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
}
