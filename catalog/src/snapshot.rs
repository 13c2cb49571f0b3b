//! An immutable, consistent view of every table: what queries plan against.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arrow::datatypes::SchemaRef;
use serde::Serialize;

use crate::description::{Descriptions, TableMeta};
use crate::error::CatalogError;
use crate::metrics::BusinessMetrics;
use crate::table::{ParquetTable, TableData};

/// Something the last refresh could not use (a table, a description file), shown on `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogIssue {
    /// A table (`schema.table`), a path or `data_description`.
    pub source: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

/// Where a foreign key points, resolved against the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableRef {
    pub schema: String,
    pub table: String,
    pub columns: Vec<String>,
}

/// A foreign key of a table, resolved to a table of the same snapshot where possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedForeignKey {
    pub columns: Vec<String>,
    pub references: TableRef,
    pub description: Option<String>,
}

/// One file of a table in a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotFile<'a> {
    /// Where the file lives (under the data dir's `parquet/`).
    pub path: &'a Path,
    /// Where to read the snapshot's bytes of it: a pinned link, or `path` itself.
    pub read_from: &'a Path,
    pub size: u64,
    pub modified: SystemTime,
    /// Values of the table's hive partition keys for this file, in key order.
    pub partition_values: &'a [String],
}

/// One table of a snapshot.
#[derive(Debug)]
pub struct CatalogTable {
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) location: PathBuf,
    pub(crate) data: Arc<TableData>,
    pub(crate) provider: Arc<ParquetTable>,
    pub(crate) meta: Option<TableMeta>,
    pub(crate) foreign_keys: Vec<ResolvedForeignKey>,
}

impl CatalogTable {
    /// The table as a scan would find it, for reuse in the next snapshot.
    pub(crate) fn scanned(&self) -> crate::scan::ScannedTable {
        crate::scan::ScannedTable {
            schema: self.schema.clone(),
            name: self.name.clone(),
            location: self.location.clone(),
            files: self.data.scanned.clone(),
            partition_keys: self.data.partition_keys.clone(),
        }
    }

    /// Schema (catalog namespace) name.
    /// Bytes of this table's rows held in memory (see [`crate::memory`]), once its copy is
    /// complete.
    /// Estimated distinct values per column of this table's in-memory copy (see
    /// [`crate::memory`]); `None` when it has none.
    pub fn resident_distinct_counts(&self) -> Option<Arc<[Option<usize>]>> {
        match self.data.residency.get() {
            Some(crate::table::Residency::Loaded(r)) => Some(Arc::clone(&r.distinct)),
            _ => None,
        }
    }

    pub fn resident_bytes(&self) -> Option<u64> {
        match self.data.residency.get() {
            Some(crate::table::Residency::Loaded(r)) => Some(r.bytes),
            _ => None,
        }
    }

    pub fn schema_name(&self) -> &str {
        &self.schema
    }
    /// Table name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `schema.table`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    /// The `.parquet` file or the folder of the table.
    pub fn location(&self) -> &Path {
        &self.location
    }
    /// Arrow schema, partition columns last.
    pub fn arrow_schema(&self) -> SchemaRef {
        use datafusion::catalog::TableProvider;
        self.provider.schema()
    }
    /// The DataFusion provider that scans this snapshot's files.
    pub fn provider(&self) -> Arc<ParquetTable> {
        Arc::clone(&self.provider)
    }
    /// Rows, from the Parquet footers.
    pub fn row_count(&self) -> Option<u64> {
        self.data.rows
    }
    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.data.bytes
    }
    /// Number of Parquet files.
    pub fn file_count(&self) -> usize {
        self.data.scanned.len()
    }
    /// Hive partition columns.
    pub fn partition_columns(&self) -> &[String] {
        &self.data.partition_keys
    }
    /// When the table's newest file was written (its freshness); None without files.
    pub fn updated_at(&self) -> Option<SystemTime> {
        self.files().map(|(_, _, modified)| modified).max()
    }

    /// Paths of the files, with size and modification time.
    pub fn files(&self) -> impl Iterator<Item = (&Path, u64, SystemTime)> {
        self.data
            .scanned
            .iter()
            .map(|f| (f.path.as_path(), f.size, f.modified))
    }
    /// The files of this snapshot's version of the table, with where to read their bytes
    /// (which stay the same while the snapshot lives, even if a writer replaces the file).
    pub fn snapshot_files(&self) -> impl Iterator<Item = SnapshotFile<'_>> {
        self.data
            .scanned
            .iter()
            .zip(&self.data.read_from)
            .map(|(f, read_from)| SnapshotFile {
                path: f.path.as_path(),
                read_from: read_from.as_path(),
                size: f.size,
                modified: f.modified,
                partition_values: &f.partition_values,
            })
    }
    /// Metadata from `data_description.md`, if the table is described.
    pub fn meta(&self) -> Option<&TableMeta> {
        self.meta.as_ref()
    }
    pub fn description(&self) -> Option<&str> {
        self.meta.as_ref().map(|m| m.description.as_str())
    }
    pub fn column_description(&self, column: &str) -> Option<&str> {
        self.meta
            .as_ref()
            .and_then(|m| m.column_descriptions.get(column))
            .map(String::as_str)
    }
    pub fn primary_key(&self) -> &[String] {
        self.meta
            .as_ref()
            .map(|m| m.primary_key.as_slice())
            .unwrap_or_default()
    }
    pub fn foreign_keys(&self) -> &[ResolvedForeignKey] {
        &self.foreign_keys
    }
    /// Marked `private: true` in the description.
    pub fn is_private(&self) -> bool {
        self.meta.as_ref().is_some_and(|m| m.private)
    }
}

/// Every table at one moment. Cheap to clone (`Arc`), never mutated after it is built.
#[derive(Debug, Default)]
pub struct CatalogSnapshot {
    pub(crate) version: u64,
    pub(crate) created_at: Option<SystemTime>,
    pub(crate) schemas: BTreeMap<String, BTreeMap<String, Arc<CatalogTable>>>,
    pub(crate) descriptions: Option<Arc<Descriptions>>,
    pub(crate) metrics: Arc<BusinessMetrics>,
    pub(crate) issues: Vec<CatalogIssue>,
}

impl CatalogSnapshot {
    /// Increases by one with every refresh that changed something.
    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn created_at(&self) -> Option<SystemTime> {
        self.created_at
    }
    /// Schema names, sorted.
    pub fn schema_names(&self) -> impl Iterator<Item = &str> {
        self.schemas.keys().map(String::as_str)
    }
    /// Tables of one schema, sorted by name.
    pub fn tables_in(&self, schema: &str) -> impl Iterator<Item = &Arc<CatalogTable>> {
        self.schemas
            .get(schema)
            .into_iter()
            .flat_map(|t| t.values())
    }
    /// Every table, sorted by schema then name.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<CatalogTable>> {
        self.schemas.values().flat_map(|t| t.values())
    }
    pub fn table_count(&self) -> usize {
        self.schemas.values().map(BTreeMap::len).sum()
    }
    /// Estimated distinct values per column of the in-memory table whose scans carry
    /// `schema`, the very `Arc` its provider hands out (a scan knows its schema, not its
    /// table's name). Linear in the number of tables; the planner asks a few times per join.
    pub fn resident_distinct_counts_for(&self, schema: &SchemaRef) -> Option<Arc<[Option<usize>]>> {
        self.tables()
            .find(|t| Arc::ptr_eq(&t.arrow_schema(), schema))
            .and_then(|t| t.resident_distinct_counts())
    }
    /// The table `schema.name`.
    pub fn table(&self, schema: &str, name: &str) -> Option<&Arc<CatalogTable>> {
        self.schemas.get(schema).and_then(|t| t.get(name))
    }
    /// Resolve a possibly unqualified name. Unqualified names are looked up in every schema
    /// (the search path); a name found in several schemas is an error listing them.
    pub fn resolve(
        &self,
        schema: Option<&str>,
        name: &str,
    ) -> Result<&Arc<CatalogTable>, CatalogError> {
        let not_found = || CatalogError::TableNotFound {
            table: match schema {
                Some(s) => format!("{s}.{name}"),
                None => name.to_string(),
            },
        };
        if let Some(schema) = schema {
            return self.table(schema, name).ok_or_else(not_found);
        }
        let mut found = self.schemas.values().filter_map(|t| t.get(name));
        let first = found.next().ok_or_else(not_found)?;
        let rest: Vec<_> = found.collect();
        if rest.is_empty() {
            return Ok(first);
        }
        let candidates = std::iter::once(first)
            .chain(rest)
            .map(|t| t.qualified_name())
            .collect::<Vec<_>>()
            .join(" and ");
        Err(CatalogError::AmbiguousTable {
            name: name.to_string(),
            candidates,
        })
    }
    /// The parsed description files in force (the last good ones).
    pub fn descriptions(&self) -> Option<&Descriptions> {
        self.descriptions.as_deref()
    }
    /// The business metrics defined beside the descriptions, checked against these tables.
    pub fn metrics(&self) -> &BusinessMetrics {
        &self.metrics
    }
    /// What could not be used at the last refresh.
    pub fn issues(&self) -> &[CatalogIssue] {
        &self.issues
    }
    /// Number of files and bytes of all tables.
    pub fn totals(&self) -> (usize, u64) {
        self.tables()
            .fold((0, 0), |(f, b), t| (f + t.file_count(), b + t.size_bytes()))
    }
}

/// Resolve the foreign keys of `meta` for a table in `schema`, against the tables known.
pub(crate) fn resolve_foreign_keys(
    schema: &str,
    meta: &TableMeta,
    exists: impl Fn(&str, &str) -> bool,
    unique_schema_of: impl Fn(&str) -> Option<String>,
) -> Vec<ResolvedForeignKey> {
    meta.foreign_keys
        .iter()
        .map(|fk| {
            let target_schema = fk.references_schema.clone().unwrap_or_else(|| {
                if exists(schema, &fk.references_table) {
                    schema.to_string()
                } else {
                    unique_schema_of(&fk.references_table).unwrap_or_else(|| schema.to_string())
                }
            });
            ResolvedForeignKey {
                columns: vec![fk.column.clone()],
                references: TableRef {
                    schema: target_schema,
                    table: fk.references_table.clone(),
                    columns: vec![fk.references_column.clone()],
                },
                description: fk.description.clone(),
            }
        })
        .collect()
}
