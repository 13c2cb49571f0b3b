//! [`ParquetFileWriter`]: batches into one Parquet file that appears at its destination
//! atomically, encoded on one thread or in row groups on many.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use dataport_common::digest::HashingWriter;
use dataport_common::fs::{FsError, TempFile};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use super::WriteError;
use super::journal::StagedFile;
use super::layout::ParquetLayout;

/// Zstandard level used for every Parquet file written by Dataport: Arrow's default. Level 3
/// makes `lineitem` about 6 % smaller and costs a fifth more encoding time.
pub const PARQUET_ZSTD_LEVEL: i32 = 1;

/// Maximum number of rows in one Parquet row group.
pub const PARQUET_MAX_ROW_GROUP_ROWS: usize = 1_000_000;

/// A file that was atomically written into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Final location of the file.
    pub path: PathBuf,
    /// Number of rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// SHA-256 of the file's bytes (lowercase hex), computed while writing.
    pub sha256: String,
}

/// Streams [`RecordBatch`]es into a Parquet file that appears at its destination atomically.
///
/// Files are compressed with ZSTD (level [`PARQUET_ZSTD_LEVEL`]), carry page-level statistics
/// (so they include a column index and an offset index) and have row groups of at most
/// [`PARQUET_MAX_ROW_GROUP_ROWS`] rows. Nothing appears at the destination until
/// [`finish`](Self::finish) succeeds; dropping the writer before that removes the temporary file.
pub struct ParquetFileWriter {
    path: PathBuf,
    /// Declared before `temp` so the file handle is closed before the temporary file is removed
    /// on drop.
    file: SerializedFileWriter<HashingWriter<File>>,
    groups: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// Row groups handed out so far (by [`row_group`](Self::row_group) or for `write`).
    started: usize,
    /// Rows per row group.
    group_rows: usize,
    /// The row group [`write`](Self::write) fills.
    current: Option<RowGroupEncoder>,
    /// Removes the temporary file on drop unless it was renamed into place.
    temp: TempFile,
    rows: u64,
}

impl std::fmt::Debug for ParquetFileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetFileWriter")
            .field("path", &self.path)
            .field("temp_path", &self.temp.path())
            .field("rows", &self.rows)
            .finish()
    }
}

impl ParquetFileWriter {
    /// Opens a temporary file next to `path` and prepares to write batches of `schema`.
    pub fn try_new(path: &Path, schema: SchemaRef) -> Result<Self, WriteError> {
        Self::try_new_with_layout(path, schema, &ParquetLayout::default())
    }

    /// [`try_new`](Self::try_new) with the column choices of `layout`.
    pub fn try_new_with_layout(
        path: &Path,
        schema: SchemaRef,
        layout: &ParquetLayout,
    ) -> Result<Self, WriteError> {
        let parquet = |source| parquet_error(path, source);
        let props = writer_properties(layout).map_err(parquet)?;
        let (temp, file) = TempFile::create(path)?;
        // On error `temp` is dropped here and removes the temporary file.
        let file = HashingWriter::new(file);
        // The Arrow writer sets up the Parquet schema and the embedded Arrow schema; row
        // groups are encoded through the lower-level writer so they can be built anywhere.
        let (file, groups) = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(parquet)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            groups,
            schema,
            started: 0,
            group_rows: PARQUET_MAX_ROW_GROUP_ROWS,
            current: None,
            temp,
            rows: 0,
        })
    }

    /// Row groups of at most `rows` rows (at least one) instead of
    /// [`PARQUET_MAX_ROW_GROUP_ROWS`]; set before the first row.
    pub fn with_row_group_rows(mut self, rows: usize) -> Self {
        self.group_rows = rows.max(1);
        self
    }

    /// Final location of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows written so far (including those of the row group `write` has open).
    pub fn rows_written(&self) -> u64 {
        self.rows + self.current.as_ref().map_or(0, |open| open.rows as u64)
    }

    /// Appends `batch`; its schema must match the one given to [`try_new`](Self::try_new).
    /// Rows are encoded on the calling thread, into full row groups.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let mut current = match self.current.take() {
                Some(group) => group,
                None => self.row_group()?,
            };
            let len = current.room().min(batch.num_rows() - offset);
            current.write(&batch.slice(offset, len))?;
            offset += len;
            if current.room() == 0 {
                let encoded = current.finish()?;
                self.append_row_group(encoded)?;
            } else {
                self.current = Some(current);
            }
        }
        Ok(())
    }

    /// An empty row group of this file, to be filled on any thread and added with
    /// [`append_row_group`](Self::append_row_group), in the order they were handed out. This
    /// is how several threads encode one file at once.
    pub fn row_group(&mut self) -> Result<RowGroupEncoder, WriteError> {
        let writers = self
            .groups
            .create_column_writers(self.started)
            .map_err(|source| self.parquet(source))?;
        self.started += 1;
        Ok(RowGroupEncoder {
            path: self.path.clone(),
            schema: Arc::clone(&self.schema),
            writers,
            rows: 0,
            capacity: self.group_rows,
        })
    }

    /// Writes an encoded row group after the ones written so far (first the one
    /// [`write`](Self::write) has open, if any).
    pub fn append_row_group(&mut self, group: EncodedRowGroup) -> Result<(), WriteError> {
        if let Some(open) = self.current.take() {
            let open = open.finish()?;
            self.append_encoded(open)?;
        }
        self.append_encoded(group)
    }

    fn append_encoded(&mut self, group: EncodedRowGroup) -> Result<(), WriteError> {
        if group.rows == 0 {
            return Ok(());
        }
        let appended = self.file.next_row_group().and_then(|mut row_group| {
            for chunk in group.chunks {
                chunk.append_to_row_group(&mut row_group)?;
            }
            row_group.close().map(|_| ())
        });
        appended.map_err(|source| self.parquet(source))?;
        self.rows += group.rows;
        Ok(())
    }

    fn parquet(&self, source: ParquetError) -> WriteError {
        parquet_error(&self.path, source)
    }

    /// Writes the Parquet footer, syncs the file, renames it into place and syncs the directory.
    ///
    /// On error the temporary file is removed and nothing changes at the destination.
    pub fn finish(self) -> Result<WrittenFile, WriteError> {
        let mut staged = self.finish_staged()?;
        staged.temp.commit(&staged.dest)?;
        Ok(WrittenFile {
            path: staged.dest.clone(),
            rows: staged.rows,
            bytes: staged.bytes,
            sha256: staged.sha256.clone(),
        })
    }
}

/// A Parquet failure while writing `path`.
fn parquet_error(path: &Path, source: ParquetError) -> WriteError {
    WriteError::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

/// One row group of a [`ParquetFileWriter`]'s file, encoded apart from it: `Send`, so it can
/// be filled on another thread. Holds up to [`PARQUET_MAX_ROW_GROUP_ROWS`] rows (or the
/// file's [`with_row_group_rows`](ParquetFileWriter::with_row_group_rows)).
pub struct RowGroupEncoder {
    path: PathBuf,
    schema: SchemaRef,
    writers: Vec<ArrowColumnWriter>,
    rows: usize,
    capacity: usize,
}

impl std::fmt::Debug for RowGroupEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowGroupEncoder")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl RowGroupEncoder {
    /// Rows this group can still take.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.rows)
    }

    /// Encodes `batch` (of the file's schema, at most [`room`](Self::room) rows).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if batch.num_rows() > self.room() {
            return Err(self.parquet(ParquetError::General(format!(
                "a row group holds at most {} rows; {} more do not fit",
                self.capacity,
                batch.num_rows()
            ))));
        }
        let fits = batch.num_columns() == self.schema.fields().len()
            && self
                .schema
                .fields()
                .iter()
                .zip(batch.columns())
                .all(|(field, column)| field.data_type() == column.data_type());
        if !fits {
            return Err(self.parquet(ParquetError::General(format!(
                "the batch's columns ({}) do not match the file's schema ({})",
                batch.schema(),
                self.schema
            ))));
        }
        let mut writers = self.writers.iter_mut();
        let written = self
            .schema
            .fields()
            .iter()
            .zip(batch.columns())
            .try_for_each(|(field, column)| {
                compute_leaves(field, column)?.iter().try_for_each(|leaf| {
                    writers
                        .next()
                        .ok_or_else(|| {
                            ParquetError::General("the batch has more columns than the file".into())
                        })?
                        .write(leaf)
                })
            });
        written.map_err(|source| self.parquet(source))?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// The encoded column chunks, for [`ParquetFileWriter::append_row_group`].
    pub fn finish(self) -> Result<EncodedRowGroup, WriteError> {
        let chunks = self
            .writers
            .into_iter()
            .map(ArrowColumnWriter::close)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| parquet_error(&self.path, source))?;
        Ok(EncodedRowGroup {
            chunks,
            rows: self.rows as u64,
        })
    }

    fn parquet(&self, source: ParquetError) -> WriteError {
        parquet_error(&self.path, source)
    }
}

/// A row group's compressed column chunks, waiting to be appended to its file.
pub struct EncodedRowGroup {
    chunks: Vec<ArrowColumnChunk>,
    rows: u64,
}

impl std::fmt::Debug for EncodedRowGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedRowGroup")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ParquetFileWriter {
    /// Writes the footer and syncs the file but leaves it under its temporary name, for a
    /// [`commit_table`] that puts several files into place as one change.
    pub fn finish_staged(self) -> Result<StagedFile, WriteError> {
        let mut this = self;
        if let Some(open) = this.current.take() {
            let open = open.finish()?;
            this.append_encoded(open)?;
        }
        let Self {
            path,
            mut file,
            temp,
            rows,
            ..
        } = this;
        let metadata = file
            .finish()
            .map_err(|source| parquet_error(&path, source))?;
        let hashing = file.inner();
        let sha256 = hashing.sha256();
        let handle = hashing.get_ref();
        handle.sync_all().map_err(|source| FsError::Sync {
            path: temp.path().to_path_buf(),
            source,
        })?;
        let bytes = handle
            .metadata()
            .map_err(|source| FsError::Metadata {
                path: temp.path().to_path_buf(),
                source,
            })?
            .len();
        drop(file);
        let rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(rows);
        Ok(StagedFile {
            temp,
            dest: path,
            rows,
            bytes,
            sha256,
        })
    }
}

/// Writer properties shared by every Parquet file Dataport writes, with `layout`'s choices.
fn writer_properties(layout: &ParquetLayout) -> Result<WriterProperties, ParquetError> {
    let level = ZstdLevel::try_new(PARQUET_ZSTD_LEVEL)?;
    let builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(PARQUET_MAX_ROW_GROUP_ROWS));
    let builder = layout.without_dictionary.iter().fold(builder, |b, column| {
        b.set_column_dictionary_enabled(ColumnPath::from(column.as_str()), false)
    });
    Ok(builder.build())
}
