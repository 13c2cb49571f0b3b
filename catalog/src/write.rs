//! The one atomic file writer of the project.
//!
//! Every file Dataport produces (Parquet tables, Markdown descriptions, markers) is written to a
//! dot-prefixed temporary file in the destination directory, synced, renamed over the destination
//! and followed by a sync of the directory. Readers therefore see either the old file or the
//! complete new one, never a partial write, and the catalog never registers the temporary file
//! because its name starts with a dot.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

/// Zstandard level used for every Parquet file written by Dataport.
pub const PARQUET_ZSTD_LEVEL: i32 = 3;

/// Maximum number of rows in one Parquet row group.
pub const PARQUET_MAX_ROW_GROUP_ROWS: usize = 1_000_000;

/// How often a fresh temporary name is tried when one is already taken.
const TEMP_NAME_ATTEMPTS: u32 = 16;

/// Distinguishes temporary files created by this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why writing a file failed; every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The destination has no file name (e.g. it is `/` or ends in `..`).
    #[error("cannot write to {path}: the path has no file name")]
    NoFileName { path: PathBuf },

    /// The destination's parent directory could not be created.
    #[error("failed to create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },

    /// The temporary file next to the destination could not be created.
    #[error("failed to create temporary file {path}: {source}")]
    CreateTemp { path: PathBuf, source: io::Error },

    /// Writing bytes into the temporary file failed.
    #[error("failed to write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },

    /// Flushing the temporary file to stable storage failed.
    #[error("failed to sync {path} to disk: {source}")]
    Sync { path: PathBuf, source: io::Error },

    /// Renaming the temporary file over the destination failed.
    #[error("failed to rename {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },

    /// Syncing the destination directory after the rename failed.
    #[error("failed to sync directory {path} after renaming into it: {source}")]
    SyncDir { path: PathBuf, source: io::Error },

    /// Reading the size of the finished file failed.
    #[error("failed to read metadata of {path}: {source}")]
    Metadata { path: PathBuf, source: io::Error },

    /// The Parquet encoder failed (bad schema, batch not matching the schema, I/O inside parquet).
    #[error("failed to write Parquet file {path}: {source}")]
    Parquet { path: PathBuf, source: ParquetError },
}

/// A file that was atomically written into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Final location of the file.
    pub path: PathBuf,
    /// Number of rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// Atomically replaces `path` with `bytes`.
///
/// Creates missing parent directories, writes a dot-prefixed temporary file in the same
/// directory, syncs it, renames it over `path` and syncs the directory. The temporary file is
/// removed on any error.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let (dir, mut temp, mut file) = create_temp(path)?;
    file.write_all(bytes).map_err(|source| WriteError::Io {
        path: temp.path.clone(),
        source,
    })?;
    file.sync_all().map_err(|source| WriteError::Sync {
        path: temp.path.clone(),
        source,
    })?;
    drop(file);
    temp.commit(path, &dir)
}

/// Streams [`RecordBatch`]es into a Parquet file that appears at its destination atomically.
///
/// Files are compressed with ZSTD (level [`PARQUET_ZSTD_LEVEL`]), carry page-level statistics
/// (so they include a column index and an offset index) and have row groups of at most
/// [`PARQUET_MAX_ROW_GROUP_ROWS`] rows. Nothing appears at the destination until
/// [`finish`](Self::finish) succeeds; dropping the writer before that removes the temporary file.
pub struct ParquetFileWriter {
    path: PathBuf,
    dir: PathBuf,
    /// Declared before `temp` so the file handle is closed before the temporary file is removed
    /// on drop.
    writer: ArrowWriter<File>,
    /// Removes the temporary file on drop unless it was renamed into place.
    temp: TempGuard,
    rows: u64,
}

impl std::fmt::Debug for ParquetFileWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetFileWriter")
            .field("path", &self.path)
            .field("temp_path", &self.temp.path)
            .field("rows", &self.rows)
            .finish()
    }
}

impl ParquetFileWriter {
    /// Opens a temporary file next to `path` and prepares to write batches of `schema`.
    pub fn try_new(path: &Path, schema: SchemaRef) -> Result<Self, WriteError> {
        let props = writer_properties().map_err(|source| WriteError::Parquet {
            path: path.to_path_buf(),
            source,
        })?;
        let (dir, temp, file) = create_temp(path)?;
        // On error `temp` is dropped here and removes the temporary file.
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|source| {
            WriteError::Parquet {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            dir,
            writer,
            temp,
            rows: 0,
        })
    }

    /// Final location of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows written so far.
    pub fn rows_written(&self) -> u64 {
        self.rows
    }

    /// Appends `batch`; its schema must match the one given to [`try_new`](Self::try_new).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        self.writer
            .write(batch)
            .map_err(|source| WriteError::Parquet {
                path: self.path.clone(),
                source,
            })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Writes the Parquet footer, syncs the file, renames it into place and syncs the directory.
    ///
    /// On error the temporary file is removed and nothing changes at the destination.
    pub fn finish(self) -> Result<WrittenFile, WriteError> {
        let Self {
            path,
            dir,
            writer,
            temp,
            rows,
        } = self;
        // Locals drop in reverse order of declaration: on an early return the file handle
        // (owned by `writer`) is closed before `temp` removes the temporary file.
        let mut temp = temp;
        let mut writer = writer;
        let metadata = writer.finish().map_err(|source| WriteError::Parquet {
            path: path.clone(),
            source,
        })?;
        // `finish` flushed everything into the file; the handle stays owned by `writer`.
        let file = writer.inner();
        file.sync_all().map_err(|source| WriteError::Sync {
            path: temp.path.clone(),
            source,
        })?;
        let bytes = file
            .metadata()
            .map_err(|source| WriteError::Metadata {
                path: temp.path.clone(),
                source,
            })?
            .len();
        drop(writer);
        temp.commit(&path, &dir)?;
        let rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(rows);
        Ok(WrittenFile { path, rows, bytes })
    }
}

/// Writer properties shared by every Parquet file Dataport writes.
fn writer_properties() -> Result<WriterProperties, ParquetError> {
    let level = ZstdLevel::try_new(PARQUET_ZSTD_LEVEL)?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(PARQUET_MAX_ROW_GROUP_ROWS))
        .build())
}

/// Removes a temporary file on drop unless it was committed (renamed into place).
struct TempGuard {
    path: PathBuf,
    armed: bool,
}

impl TempGuard {
    /// Renames the temporary file over `dest`, syncs `dir` and disarms the guard.
    ///
    /// The file must already be synced and closed.
    fn commit(&mut self, dest: &Path, dir: &Path) -> Result<(), WriteError> {
        fs::rename(&self.path, dest).map_err(|source| WriteError::Rename {
            from: self.path.clone(),
            to: dest.to_path_buf(),
            source,
        })?;
        // The temporary name is gone; nothing is left to clean up even if the sync fails.
        self.armed = false;
        sync_dir(dir)
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %e, "failed to remove temporary file");
        }
    }
}

/// Creates the parent directory of `dest` and a fresh `.<name>.<pid>.<n>.tmp` file in it.
///
/// Returns the directory (for the final sync), the guard owning the temporary name, and the
/// open file.
fn create_temp(dest: &Path) -> Result<(PathBuf, TempGuard, File), WriteError> {
    let file_name = dest.file_name().ok_or_else(|| WriteError::NoFileName {
        path: dest.to_path_buf(),
    })?;
    let dir = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|source| WriteError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let mut attempt = 0;
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut name = OsString::from(".");
        name.push(file_name);
        name.push(format!(".{}.{n}.tmp", std::process::id()));
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => {
                let guard = TempGuard { path, armed: true };
                return Ok((dir, guard, file));
            }
            // A stale file from a crashed process that had the same pid: pick another name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < TEMP_NAME_ATTEMPTS => {
                attempt += 1;
            }
            Err(source) => return Err(WriteError::CreateTemp { path, source }),
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WriteError::SyncDir {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), WriteError> {
    // Directories cannot be opened for syncing on this platform.
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use std::sync::Arc;

    fn sample_batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            ],
        )
        .unwrap()
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn parquet_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("nested/dir/t.parquet");
        let batch = sample_batch();
        let mut writer = ParquetFileWriter::try_new(&path, batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.write(&batch).unwrap();
        assert_eq!(writer.rows_written(), 6);
        assert!(!path.exists(), "nothing appears before finish");
        let written = writer.finish().unwrap();

        assert_eq!(written.path, path);
        assert_eq!(written.rows, 6);
        assert_eq!(written.bytes, fs::metadata(&path).unwrap().len());
        assert_eq!(dir_entries(path.parent().unwrap()), vec!["t.parquet"]);

        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 6);
        assert_eq!(batches[0].schema(), batch.schema());
        assert_eq!(batches[0].slice(0, 3), batch);

        // Properties: ZSTD, page statistics (column + offset index).
        let file_reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let meta = file_reader.metadata();
        let column = meta.row_group(0).column(0);
        assert!(matches!(column.compression(), Compression::ZSTD(_)));
        assert!(column.column_index_offset().is_some());
        assert!(column.offset_index_offset().is_some());
    }

    #[test]
    fn dropped_writer_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.parquet");
        let batch = sample_batch();
        let mut writer = ParquetFileWriter::try_new(&path, batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        assert_eq!(
            dir_entries(tmp.path()).len(),
            1,
            "temp file exists while writing"
        );
        assert!(dir_entries(tmp.path())[0].starts_with(".t.parquet."));
        drop(writer);
        assert!(dir_entries(tmp.path()).is_empty());
    }

    #[test]
    fn mismatched_batch_is_an_error_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.parquet");
        let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)]));
        let mut writer = ParquetFileWriter::try_new(&path, other).unwrap();
        let err = writer.write(&sample_batch()).unwrap_err();
        assert!(matches!(err, WriteError::Parquet { .. }), "{err}");
        assert!(err.to_string().contains("t.parquet"));
        drop(writer);
        assert!(dir_entries(tmp.path()).is_empty());
    }

    #[test]
    fn write_bytes_atomic_replaces_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("docs/readme.md");
        write_bytes_atomic(&path, b"first version, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first version, longer");
        write_bytes_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(dir_entries(path.parent().unwrap()), vec!["readme.md"]);
    }

    #[test]
    fn write_bytes_atomic_rejects_path_without_file_name() {
        let err = write_bytes_atomic(Path::new("/"), b"x").unwrap_err();
        assert!(matches!(err, WriteError::NoFileName { .. }), "{err}");
    }
}
