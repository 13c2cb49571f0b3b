//! A catalog table's files, read once per change, and the DataFusion provider over them.
//!
//! [`ParquetTable`] scans exactly the files of the snapshot it belongs to, with statistics
//! gathered when the table was (re)loaded, so a query never lists directories, never sees a
//! half-written file and never re-reads footers that the metadata cache already holds.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore};

use crate::error::CatalogError;
use crate::scan::{ScannedFile, ScannedTable};

/// What a table's files hold: schema, per-file statistics, totals. Shared by every snapshot
/// in which the table's files are unchanged.
#[derive(Debug)]
pub(crate) struct TableData {
    pub(crate) scanned: Vec<ScannedFile>,
    pub(crate) partition_keys: Vec<String>,
    pub(crate) file_schema: SchemaRef,
    pub(crate) files: Vec<PartitionedFile>,
    pub(crate) rows: Option<u64>,
    pub(crate) bytes: u64,
    /// Where this data's bytes are read from, one per scanned file: its pinned link, or the
    /// file itself where it could not be linked.
    pub(crate) read_from: Vec<PathBuf>,
    /// The in-memory copy of these files' rows, once decided (see [`crate::memory`]).
    pub(crate) residency: std::sync::OnceLock<Residency>,
    /// Keeps the files queries read (hard links) alive as long as this data is in use.
    _pins: crate::pin::Pins,
}

impl TableData {
    /// Whether `scanned` describes exactly the files this data was read from.
    pub(crate) fn same_files(&self, scanned: &ScannedTable) -> bool {
        self.scanned == scanned.files && self.partition_keys == scanned.partition_keys
    }

    /// Read schema and statistics from the footers (through the runtime's metadata cache).
    pub(crate) async fn load(
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table: &ScannedTable,
        concurrency: usize,
        pin_root: &std::path::Path,
    ) -> Result<Self, CatalogError> {
        let wrap = |source| CatalogError::TableFiles {
            table: table.qualified(),
            source,
        };
        let format =
            Arc::new(ParquetFormat::default().with_options(state.table_options().parquet.clone()));
        // Read (and later scan) pinned links of the files, so this data stays readable when a
        // writer replaces a file at its path.
        let paths: Vec<PathBuf> = table.files.iter().map(|f| f.path.clone()).collect();
        let (pins, pinned) =
            crate::pin::Pins::create(pin_root, &paths).map_err(|e| CatalogError::TableFiles {
                table: table.qualified(),
                source: datafusion::error::DataFusionError::IoError(e),
            })?;
        // The pinned link is read; the error names the table's own file.
        let checked: Vec<(PathBuf, PathBuf, u64)> = table
            .files
            .iter()
            .zip(&pinned)
            .map(|(file, pin)| (file.path.clone(), pin.path.clone(), pin.size))
            .collect();
        let qualified = table.qualified();
        tokio::task::spawn_blocking(move || {
            checked
                .iter()
                .try_for_each(|(shown, read, size)| check_footer(&qualified, shown, read, *size))
        })
        .await
        .map_err(|e| CatalogError::Internal(format!("footer check task failed: {e}")))??;
        let metas = pinned
            .iter()
            .map(|f| object_meta(&f.path, f.size, f.modified))
            .collect::<Result<Vec<_>, _>>()?;
        let file_schema = format
            .infer_schema(state, store, &metas)
            .await
            .map_err(wrap)?;
        for key in &table.partition_keys {
            if file_schema.field_with_name(key).is_ok() {
                return Err(CatalogError::Layout {
                    table: table.qualified(),
                    detail: format!(
                        "partition key '{key}' is also a column inside the files; rename the folders"
                    ),
                });
            }
        }
        let pending: Vec<_> = table
            .files
            .iter()
            .zip(metas)
            .map(|(scanned, meta)| {
                let format = Arc::clone(&format);
                let store = Arc::clone(store);
                let schema = Arc::clone(&file_schema);
                let values: Vec<ScalarValue> = scanned
                    .partition_values
                    .iter()
                    .map(|v| ScalarValue::Utf8(Some(v.clone())))
                    .collect();
                async move {
                    let stats = format.infer_stats(state, &store, schema, &meta).await?;
                    let mut file = PartitionedFile::from(meta);
                    file.partition_values = values;
                    Ok::<_, datafusion::error::DataFusionError>(
                        file.with_statistics(Arc::new(stats)),
                    )
                }
            })
            .collect();
        let files: Vec<PartitionedFile> = futures::stream::iter(pending)
            .buffered(concurrency.max(1))
            .try_collect()
            .await
            .map_err(wrap)?;
        let rows = files
            .iter()
            .map(|f| {
                f.statistics
                    .as_ref()
                    .and_then(|s| s.num_rows.get_value().map(|n| *n as u64))
            })
            .sum::<Option<u64>>();
        Ok(Self {
            scanned: table.files.clone(),
            partition_keys: table.partition_keys.clone(),
            file_schema,
            files,
            rows,
            bytes: table.files.iter().map(|f| f.size).sum(),
            read_from: pinned.into_iter().map(|p| p.path).collect(),
            residency: std::sync::OnceLock::new(),
            _pins: pins,
        })
    }
}

/// The magic numbers a Parquet file starts and ends with: plain, and with an encrypted footer.
const PARQUET_MAGICS: [&[u8; 4]; 2] = [b"PAR1", b"PARE"];

/// Check that the table's file `shown` (read at `read`, its pinned link, `size` bytes) is
/// framed as a Parquet file before its footer is decoded: magic at both ends, and a metadata
/// length that fits inside the file. A damaged or foreign file then gets a clear error; the
/// Parquet reader itself does not check that the length points inside the file.
fn check_footer(
    table: &str,
    shown: &std::path::Path,
    read: &std::path::Path,
    size: u64,
) -> Result<(), CatalogError> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |detail: String| CatalogError::BadFile {
        table: table.to_string(),
        path: shown.to_path_buf(),
        detail,
    };
    let io = |e: std::io::Error| CatalogError::Io {
        path: shown.to_path_buf(),
        source: e,
    };
    if size < 12 {
        return Err(bad(format!(
            "{size} bytes is too short for a Parquet file (at least 12)"
        )));
    }
    let mut file = std::fs::File::open(read).map_err(io)?;
    let mut head = [0u8; 4];
    file.read_exact(&mut head).map_err(io)?;
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8)).map_err(io)?;
    file.read_exact(&mut tail).map_err(io)?;
    let magic = |bytes: &[u8]| PARQUET_MAGICS.iter().any(|m| m.as_slice() == bytes);
    if !magic(&head) || !magic(&tail[4..]) {
        return Err(bad(
            "it does not start and end with Parquet's magic number: not a Parquet file, or a \
             truncated one"
                .into(),
        ));
    }
    let metadata = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if metadata > size - 12 {
        return Err(bad(format!(
            "its footer gives {metadata} bytes of metadata, more than the {size}-byte file \
             holds: the file is damaged or truncated"
        )));
    }
    Ok(())
}

fn object_meta(
    path: &std::path::Path,
    size: u64,
    modified: std::time::SystemTime,
) -> Result<ObjectMeta, CatalogError> {
    let location = object_store::path::Path::from_absolute_path(path).map_err(|e| {
        CatalogError::Internal(format!(
            "path {} is not a valid object path: {e}",
            path.display()
        ))
    })?;
    Ok(ObjectMeta {
        location,
        last_modified: chrono::DateTime::<chrono::Utc>::from(modified),
        size,
        e_tag: None,
        version: None,
    })
}

/// A Parquet table of one catalog snapshot: the files it was built with, nothing else.
#[derive(Debug)]
pub struct ParquetTable {
    data: Arc<TableData>,
    schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    statistics: Statistics,
}

impl ParquetTable {
    /// Primary keys from `data_description.md` are metadata, not constraints DataFusion may
    /// rely on: nothing guarantees their uniqueness (a full refresh takes the source's rows as
    /// they are; duplicate keys are what the profiler reports). Declared to the optimizer, a
    /// key would let it drop a `DISTINCT` over it and answer wrongly.
    pub(crate) fn new(data: Arc<TableData>) -> Self {
        let partition_fields: Vec<FieldRef> = data
            .partition_keys
            .iter()
            .map(|k| Arc::new(Field::new(k, DataType::Utf8, false)))
            .collect();
        let mut fields: Vec<FieldRef> = data.file_schema.fields().iter().cloned().collect();
        fields.extend(partition_fields.iter().cloned());
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            data.file_schema.metadata().clone(),
        ));
        let statistics = Statistics::try_merge_iter(
            data.files.iter().filter_map(|f| f.statistics.as_deref()),
            &schema,
        )
        .unwrap_or_else(|_| Statistics::new_unknown(&schema));
        Self {
            data,
            schema,
            partition_fields,
            statistics,
        }
    }

    /// Files of the table, in path order.
    pub fn file_paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.data.scanned.iter().map(|f| &f.path)
    }

    fn partition_names(&self) -> Vec<&str> {
        self.partition_fields
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }
}

#[async_trait::async_trait]
impl TableProvider for ParquetTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn statistics(&self) -> Option<Statistics> {
        Some(self.statistics.clone())
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let names = self.partition_names();
        Ok(filters
            .iter()
            .map(|f| {
                if !names.is_empty()
                    && datafusion::datasource::listing::helpers::expr_applicable_for_cols(&names, f)
                {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // A table with partition columns is never resident (its partition filters are exact
        // by file pruning, which only the file scan does).
        if self.partition_fields.is_empty()
            && let Some(Residency::Loaded(resident)) = self.data.residency.get()
        {
            let source = datafusion_datasource::memory::MemorySourceConfig::try_new(
                &resident.partitions,
                Arc::clone(&self.schema),
                projection.cloned(),
            )?
            .with_limit(limit);
            return Ok(datafusion_datasource::source::DataSourceExec::from_data_source(source));
        }
        let names = self.partition_names();
        let partition_filters: Vec<Expr> = if names.is_empty() {
            Vec::new()
        } else {
            filters
                .iter()
                .filter(|f| {
                    datafusion::datasource::listing::helpers::expr_applicable_for_cols(&names, f)
                })
                .cloned()
                .collect()
        };
        let files: Vec<PartitionedFile> = if partition_filters.is_empty() {
            self.data.files.clone()
        } else {
            let df_schema = DFSchema::from_unqualified_fields(
                self.partition_fields.clone().into(),
                Default::default(),
            )?;
            let mut kept = Vec::with_capacity(self.data.files.len());
            for f in &self.data.files {
                if let Some(f) = datafusion::datasource::listing::helpers::filter_partitioned_file(
                    f.clone(),
                    &partition_filters,
                    &df_schema,
                )? {
                    kept.push(f);
                }
            }
            kept
        };
        if files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let groups = FileGroup::new(files).split_files(state.config().target_partitions());
        let (groups, statistics) = datafusion_datasource::compute_all_files_statistics(
            groups,
            Arc::clone(&self.schema),
            true,
            false,
        )?;
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let table_schema = TableSchema::builder(Arc::clone(&self.data.file_schema))
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let source = format.file_source(table_schema);
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::local_filesystem(), source)
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

/// A table's rows in memory: one list of batches per scan partition.
#[derive(Debug)]
pub(crate) struct Resident {
    pub(crate) partitions: Vec<Vec<RecordBatch>>,
    pub(crate) bytes: u64,
    /// Estimated distinct values per column of the table's schema; `None` where not counted.
    pub(crate) distinct: Arc<[Option<usize>]>,
}

/// What a table's copy is, once decided (by [`crate::memory`], which loads it).
#[derive(Debug)]
pub(crate) enum Residency {
    Loaded(Arc<Resident>),
    /// Over the budget, or the read failed: it stays on its files.
    Skipped(String),
}
