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
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{
    DEFAULT_DICTIONARY_PAGE_SIZE_LIMIT, EnabledStatistics, WriterProperties,
};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

/// Zstandard level used for every Parquet file written by Dataport: Arrow's default. Level 3
/// makes `lineitem` about 6 % smaller and costs a fifth more encoding time.
pub const PARQUET_ZSTD_LEVEL: i32 = 1;

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

    /// A complete file could not be linked under a temporary name next to its destination.
    #[error("failed to link {from} as {to}: {source}")]
    Link {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },

    /// Reading the size of the finished file failed.
    #[error("failed to read metadata of {path}: {source}")]
    Metadata { path: PathBuf, source: io::Error },

    /// A file of a table change lies outside the table's schema folder.
    #[error("{path} is outside {dir}; a table change may only touch files of its own folder")]
    OutsideTable { path: PathBuf, dir: PathBuf },

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
    /// SHA-256 of the file's bytes (lowercase hex), computed while writing.
    pub sha256: String,
}

/// A file that hashes (SHA-256) what is written to it.
struct HashingFile {
    file: File,
    hasher: sha2::Sha256,
}

impl io::Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// SHA-256 of a file's bytes (lowercase hex), read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A relative path of plain names: no `..`, no root, no empty parts, no backslashes.
pub fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\\')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Atomically replaces `path` with `bytes`.
///
/// Creates missing parent directories, writes a dot-prefixed temporary file in the same
/// directory, syncs it, renames it over `path` and syncs the directory. The temporary file is
/// removed on any error.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with_mode(path, bytes, None)
}

/// [`write_bytes_atomic`] for secrets: the file (and its temporary file, from the moment it
/// exists) is readable by its owner only (mode 0600 on Unix).
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with_mode(path, bytes, Some(0o600))
}

/// Moves a finished, synced file to `dest` (creating `dest`'s folder) and syncs the folder, so
/// `dest` holds either its old content or the whole new file, even after a crash.
pub fn commit_file(from: &Path, dest: &Path) -> Result<(), WriteError> {
    let dir = create_parent(dest)?;
    fs::rename(from, dest).map_err(|source| WriteError::Rename {
        from: from.to_path_buf(),
        to: dest.to_path_buf(),
        source,
    })?;
    sync_dir(&dir)
}

fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), WriteError> {
    let (dir, mut temp, mut file) = create_temp_with_mode(path, mode)?;
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
    file: SerializedFileWriter<HashingFile>,
    groups: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// Row groups handed out so far (by [`row_group`](Self::row_group) or for `write`).
    started: usize,
    /// Rows per row group.
    group_rows: usize,
    /// The row group [`write`](Self::write) fills.
    current: Option<RowGroupEncoder>,
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
        let (dir, temp, file) = create_temp(path)?;
        // On error `temp` is dropped here and removes the temporary file.
        let file = HashingFile {
            file,
            hasher: sha2::Sha256::default(),
        };
        // The Arrow writer sets up the Parquet schema and the embedded Arrow schema; row
        // groups are encoded through the lower-level writer so they can be built anywhere.
        let (file, groups) = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(parquet)?;
        Ok(Self {
            path: path.to_path_buf(),
            dir,
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
        staged.temp.commit(&staged.dest, &staged.dir)?;
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
            dir,
            mut file,
            temp,
            rows,
            ..
        } = this;
        let metadata = file
            .finish()
            .map_err(|source| parquet_error(&path, source))?;
        let hashing = file.inner();
        let sha256 = {
            use sha2::Digest as _;
            hex::encode(hashing.hasher.clone().finalize())
        };
        let handle = &hashing.file;
        handle.sync_all().map_err(|source| WriteError::Sync {
            path: temp.path.clone(),
            source,
        })?;
        let bytes = handle
            .metadata()
            .map_err(|source| WriteError::Metadata {
                path: temp.path.clone(),
                source,
            })?
            .len();
        drop(file);
        let rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(rows);
        Ok(StagedFile {
            temp,
            dest: path,
            dir,
            rows,
            bytes,
            sha256,
        })
    }
}

/// A complete, synced file waiting under a temporary name for [`commit_table`]. Dropping it
/// removes the temporary file.
#[derive(Debug)]
pub struct StagedFile {
    temp: TempGuard,
    dest: PathBuf,
    /// The destination's directory (synced after the rename).
    dir: PathBuf,
    rows: u64,
    bytes: u64,
    sha256: String,
}

impl StagedFile {
    /// Stages the complete Parquet file `from`, already synced (as
    /// [`ParquetFileWriter::finish`] leaves it), for `dest` without copying it: it gets a
    /// temporary name in `dest`'s folder (a hard link, then `from` is removed), so
    /// [`commit_table`] can put it into place. `from` must be on the same file system as
    /// `dest` ([`WriteError::Link`] with [`io::ErrorKind::CrossesDevices`] otherwise, and
    /// `from` is left as it was).
    pub fn adopt(from: &Path, dest: &Path) -> Result<Self, WriteError> {
        let file_name = dest.file_name().ok_or_else(|| WriteError::NoFileName {
            path: dest.to_path_buf(),
        })?;
        let dir = create_parent(dest)?;
        let mut attempt = 0;
        let temp = loop {
            let path = temp_name(&dir, file_name);
            match fs::hard_link(from, &path) {
                Ok(()) => break TempGuard { path, armed: true },
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists && attempt < TEMP_NAME_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(source) => {
                    return Err(WriteError::Link {
                        from: from.to_path_buf(),
                        to: path,
                        source,
                    });
                }
            }
        };
        // The new name is durable once the folder is; the journal of the commit is written
        // into the same folder.
        sync_dir(&dir)?;
        let io_error = |source: io::Error| WriteError::Io {
            path: temp.path.clone(),
            source,
        };
        let sha256 = sha256_file(&temp.path).map_err(io_error)?;
        let file = File::open(&temp.path).map_err(io_error)?;
        let bytes = file.metadata().map_err(io_error)?.len();
        let reader = parquet::file::reader::SerializedFileReader::new(file).map_err(|source| {
            WriteError::Parquet {
                path: temp.path.clone(),
                source,
            }
        })?;
        let rows = parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .num_rows();
        fs::remove_file(from).map_err(|source| WriteError::Io {
            path: from.to_path_buf(),
            source,
        })?;
        Ok(Self {
            temp,
            dest: dest.to_path_buf(),
            dir,
            rows: u64::try_from(rows).unwrap_or(0),
            bytes,
            sha256,
        })
    }

    /// SHA-256 of the file's bytes (lowercase hex).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Where the file will appear.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Rows in the file.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The journal of a multi-file change to one table: `<parquet>/<schema>/.<table>.commit`.
///
/// While it exists the catalog keeps serving the table's previous version; [`recover`] finishes
/// a change whose writer died half-way.
pub fn journal_path(parquet_root: &Path, schema: &str, table: &str) -> PathBuf {
    parquet_root
        .join(schema)
        .join(format!(".{table}{JOURNAL_SUFFIX}"))
}

/// File name ending of commit journals.
pub const JOURNAL_SUFFIX: &str = ".commit";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Journal {
    /// The writing process; recovery leaves journals of live writers alone.
    pid: u32,
    /// `(temporary, final)` names, relative to the journal's directory.
    renames: Vec<(PathBuf, PathBuf)>,
    /// Files to remove, relative to the journal's directory.
    deletes: Vec<PathBuf>,
}

/// Puts `staged` files into place and removes `deletes` as one change to a table.
///
/// The change is first recorded in the journal at `journal` (see [`journal_path`]), written
/// atomically; then files are renamed and removed, directories synced and the journal removed.
/// A crash before the journal exists leaves the old table (the staged temporary files are
/// swept by [`recover`]); a crash after it is rolled forward by [`recover`]. The catalog keeps
/// the old version while the journal exists, so readers never see a mix.
pub fn commit_table(
    journal: &Path,
    staged: Vec<StagedFile>,
    deletes: &[PathBuf],
) -> Result<(), WriteError> {
    let base = journal.parent().unwrap_or(Path::new("."));
    let relative = |p: &Path| -> Result<PathBuf, WriteError> {
        p.strip_prefix(base)
            .map(Path::to_path_buf)
            .map_err(|_| WriteError::OutsideTable {
                path: p.to_path_buf(),
                dir: base.to_path_buf(),
            })
    };
    let mut record = Journal {
        pid: std::process::id(),
        renames: Vec::with_capacity(staged.len()),
        deletes: Vec::with_capacity(deletes.len()),
    };
    for file in &staged {
        record
            .renames
            .push((relative(&file.temp.path)?, relative(&file.dest)?));
    }
    for d in deletes {
        if staged.iter().any(|s| s.dest == *d) {
            continue;
        }
        record.deletes.push(relative(d)?);
    }
    let body = serde_json::to_vec(&record).map_err(|e| WriteError::Io {
        path: journal.to_path_buf(),
        source: io::Error::other(e),
    })?;
    write_bytes_atomic(journal, &body)?;
    // From here on the journal owns the temporary files: a failure leaves them for recovery.
    let mut staged = staged;
    for file in &mut staged {
        file.temp.armed = false;
    }
    apply_journal(base, &record)?;
    remove_file_synced(journal)
}

/// Rename what is still under a temporary name, remove what is to be removed, sync.
fn apply_journal(base: &Path, record: &Journal) -> Result<(), WriteError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (from, to) in &record.renames {
        let (from, to) = (base.join(from), base.join(to));
        match fs::rename(&from, &to) {
            Ok(()) => {}
            // Already renamed by an earlier, interrupted attempt.
            Err(e) if e.kind() == io::ErrorKind::NotFound && to.exists() => {}
            Err(source) => return Err(WriteError::Rename { from, to, source }),
        }
        if let Some(d) = to.parent() {
            dirs.push(d.to_path_buf());
        }
    }
    for rel in &record.deletes {
        let path = base.join(rel);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(WriteError::Io { path, source }),
        }
        if let Some(d) = path.parent() {
            dirs.push(d.to_path_buf());
            remove_empty_dir(d);
        }
    }
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        if d.exists() {
            sync_dir(&d)?;
        }
    }
    Ok(())
}

/// Remove a table folder left empty by a change (a partitioned table that became one file).
fn remove_empty_dir(dir: &Path) {
    let empty = fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none());
    if empty {
        let _ = fs::remove_dir(dir);
    }
}

fn remove_file_synced(path: &Path) -> Result<(), WriteError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(WriteError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    match path.parent() {
        Some(d) => sync_dir(d),
        None => Ok(()),
    }
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Journals of interrupted changes that were completed.
    pub completed: Vec<PathBuf>,
    /// Temporary files of dead writers that were removed.
    pub removed: Vec<PathBuf>,
}

/// Finish interrupted table changes and sweep temporary files of writers that died.
///
/// Call it at startup, before this process writes anything: a journal or temporary file
/// carrying this process's own id is then a leftover of an earlier process that had the same
/// id (common in containers) and is treated as dead. Journals and files of other live
/// processes (a `dataport sync` running next to the server) are left alone.
pub fn recover(parquet_root: &Path) -> Result<Recovery, WriteError> {
    let mut report = Recovery::default();
    let Ok(schemas) = fs::read_dir(parquet_root) else {
        return Ok(report);
    };
    let mut journals = Vec::new();
    let mut temps = Vec::new();
    let mut dirs: Vec<PathBuf> = schemas
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
            } else if name.starts_with('.') && name.ends_with(JOURNAL_SUFFIX) {
                journals.push(path);
            } else if name.starts_with('.') && name.ends_with(".tmp") {
                temps.push(path);
            }
        }
    }
    let mut owned_by_live: Vec<PathBuf> = Vec::new();
    for journal in journals {
        let base = journal.parent().unwrap_or(Path::new(".")).to_path_buf();
        let bytes = fs::read(&journal).map_err(|source| WriteError::Io {
            path: journal.clone(),
            source,
        })?;
        let record: Journal = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                // Journals are written atomically, so this is not ours: leave it, loudly.
                tracing::warn!(journal = %journal.display(), error = %e, "unreadable commit journal left in place");
                continue;
            }
        };
        if other_process_alive(record.pid) {
            owned_by_live.extend(record.renames.iter().map(|(from, _)| base.join(from)));
            continue;
        }
        apply_journal(&base, &record)?;
        remove_file_synced(&journal)?;
        tracing::info!(journal = %journal.display(), "completed an interrupted table change");
        report.completed.push(journal);
    }
    for temp in temps {
        if owned_by_live.contains(&temp) || !temp.exists() {
            continue;
        }
        let name = temp
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if temp_pid(&name).is_some_and(other_process_alive) {
            continue;
        }
        match fs::remove_file(&temp) {
            Ok(()) => report.removed.push(temp),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(WriteError::Io { path: temp, source }),
        }
    }
    Ok(report)
}

/// The writer's process id in a temporary name `.<name>.<pid>.<n>.tmp`.
fn temp_pid(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".tmp")?;
    let mut parts = stem.rsplit('.');
    let _counter = parts.next()?;
    parts.next()?.parse().ok()
}

/// Whether another live process with this id exists. This process counts as dead: its own id
/// on a leftover file means an earlier process that had the same id (see [`recover`]). Used by
/// every sweep of files named after their writer's process.
pub fn other_process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        Path::new("/proc").join(pid.to_string()).exists()
    }
    #[cfg(not(target_os = "linux"))]
    {
        // Without a cheap liveness check, assume the writer may still run.
        true
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

/// Per-file column choices of a [`ParquetFileWriter`], beyond the properties every file
/// shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParquetLayout {
    /// Top-level columns encoded without a dictionary.
    pub without_dictionary: Vec<String>,
}

impl ParquetLayout {
    /// The layout for a file whose first rows are `sample`, in row groups of `group_rows`.
    ///
    /// A column goes without a dictionary when most of its values are distinct (the
    /// dictionary would repeat them), or when its dictionary would outgrow the dictionary
    /// page within a row group: the writer would then spend a hash lookup per value only to
    /// fall back to plain encoding mid-group. The sample's second half tells how fast new
    /// values still arrive, and the row group is assumed to keep that pace, so keys that
    /// repeat (a supplier, a date) keep their dictionary and ever-new ones (an order, a
    /// comment) do not. Types the writer never gives a dictionary are left alone.
    pub fn for_sample(sample: &RecordBatch, group_rows: usize) -> Self {
        let without_dictionary = sample
            .schema()
            .fields()
            .iter()
            .zip(sample.columns())
            .filter(|(_, column)| dictionary_outgrows_page(column, group_rows))
            .map(|(field, _)| field.name().clone())
            .collect();
        Self { without_dictionary }
    }
}

/// Whether `column`'s values are mostly distinct, or, continued to `group_rows` rows at the
/// pace of the second half of the column, make a dictionary larger than the page limit.
fn dictionary_outgrows_page(column: &arrow::array::ArrayRef, group_rows: usize) -> bool {
    use arrow::datatypes::DataType;
    use arrow::row::{RowConverter, SortField};
    let n = column.len();
    let data_type = column.data_type();
    let eligible = data_type.is_primitive()
        || matches!(
            data_type,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::FixedSizeBinary(_)
        );
    if n < 2 || !eligible {
        return false;
    }
    let Ok(rows) = RowConverter::new(vec![SortField::new(data_type.clone())])
        .and_then(|c| c.convert_columns(&[Arc::clone(column)]))
    else {
        return false;
    };
    let half = n / 2;
    let mut seen = std::collections::HashSet::with_capacity(n);
    seen.extend((0..half).map(|i| rows.row(i)));
    let first_half = seen.len();
    seen.extend((half..n).map(|i| rows.row(i)));
    let distinct = seen.len();
    if distinct > n / 2 {
        return true;
    }
    let pace = (distinct - first_half) as f64 / (n - half) as f64;
    let projected = distinct as f64 + pace * group_rows.saturating_sub(n) as f64;
    // bytes per value as the column holds them: about what a dictionary entry takes
    let width = column.to_data().get_slice_memory_size().unwrap_or(0) as f64 / n as f64;
    projected * width > DEFAULT_DICTIONARY_PAGE_SIZE_LIMIT as f64
}

/// Removes a temporary file on drop unless it was committed (renamed into place).
#[derive(Debug)]
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
    create_temp_with_mode(dest, None)
}

/// Creates `dest`'s folder (`.` for a bare file name) and returns it.
fn create_parent(dest: &Path) -> Result<PathBuf, WriteError> {
    let dir = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|source| WriteError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// A fresh `.<name>.<pid>.<n>.tmp` path in `dir`.
fn temp_name(dir: &Path, file_name: &std::ffi::OsStr) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(".");
    name.push(file_name);
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    dir.join(name)
}

/// [`create_temp`] with the new file's permission bits (Unix; ignored elsewhere).
fn create_temp_with_mode(
    dest: &Path,
    mode: Option<u32>,
) -> Result<(PathBuf, TempGuard, File), WriteError> {
    let file_name = dest.file_name().ok_or_else(|| WriteError::NoFileName {
        path: dest.to_path_buf(),
    })?;
    let dir = create_parent(dest)?;
    let mut attempt = 0;
    loop {
        let path = temp_name(&dir, file_name);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if let Some(mode) = mode {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&path) {
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

    fn numbers(range: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(range.clone())),
                Arc::new(StringArray::from_iter(
                    range.map(|i| (i % 3 != 0).then(|| format!("n{i}"))),
                )),
            ],
        )
        .unwrap()
    }

    fn read_back(path: &Path) -> (Vec<i64>, Vec<usize>) {
        let file_reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
        let groups = (0..file_reader.metadata().num_row_groups())
            .map(|i| file_reader.metadata().row_group(i).num_rows() as usize)
            .collect();
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let mut ids = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            ids.extend(column.values().iter().copied());
        }
        (ids, groups)
    }

    #[test]
    fn writes_split_into_row_groups_of_the_set_size() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.parquet");
        let mut writer = ParquetFileWriter::try_new(&path, numbers(0..0).schema())
            .unwrap()
            .with_row_group_rows(40);
        writer.write(&numbers(0..25)).unwrap();
        writer.write(&numbers(25..100)).unwrap();
        let written = writer.finish().unwrap();
        assert_eq!(written.rows, 100);
        let (ids, groups) = read_back(&path);
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert_eq!(groups, vec![40, 40, 20]);
        assert_eq!(written.sha256, sha256_file(&path).unwrap());
    }

    #[test]
    fn row_groups_encoded_on_other_threads_are_appended_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.parquet");
        let mut writer = ParquetFileWriter::try_new(&path, numbers(0..0).schema())
            .unwrap()
            .with_row_group_rows(50);
        let groups: Vec<RowGroupEncoder> = (0..3).map(|_| writer.row_group().unwrap()).collect();
        // encode them at once, finishing in reverse order
        let encoded: Vec<EncodedRowGroup> = std::thread::scope(|scope| {
            let handles: Vec<_> = groups
                .into_iter()
                .enumerate()
                .map(|(i, mut group)| {
                    scope.spawn(move || {
                        let start = i as i64 * 50;
                        assert_eq!(group.room(), 50);
                        group.write(&numbers(start..start + 30)).unwrap();
                        group.write(&numbers(start + 30..start + 50)).unwrap();
                        assert_eq!(group.room(), 0);
                        let err = group.write(&numbers(0..1)).unwrap_err();
                        assert!(err.to_string().contains("at most 50 rows"), "{err}");
                        std::thread::sleep(std::time::Duration::from_millis(30 * (3 - i as u64)));
                        group.finish().unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for group in encoded {
            writer.append_row_group(group).unwrap();
        }
        // rows written the ordinary way follow the appended groups
        writer.write(&numbers(150..160)).unwrap();
        assert_eq!(writer.rows_written(), 160);
        let written = writer.finish().unwrap();
        assert_eq!(written.rows, 160);
        let (ids, groups) = read_back(&path);
        assert_eq!(ids, (0..160).collect::<Vec<_>>());
        assert_eq!(groups, vec![50, 50, 50, 10]);
    }

    #[test]
    fn columns_whose_dictionary_would_not_pay_go_without() {
        use arrow::array::ArrayRef;
        let n = 65_536_i64;
        // a key of four rows each (like an order's lines), ever new
        let order = Int64Array::from_iter_values((0..n).map(|i| i / 4));
        // 5,000 keys in a scrambled order: all seen early, then only repeated
        let supplier = Int64Array::from_iter_values((0..n).map(|i| i * 7_919 % 5_000));
        // unique text
        let comment = StringArray::from_iter_values((0..n).map(|i| format!("comment {i}")));
        let flag = StringArray::from_iter_values((0..n).map(|i| ["A", "N", "R"][i as usize % 3]));
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("order", Arc::new(order)),
            ("supplier", Arc::new(supplier)),
            ("comment", Arc::new(comment)),
            ("flag", Arc::new(flag)),
        ];
        let sample = RecordBatch::try_from_iter(columns).unwrap();
        let layout = ParquetLayout::for_sample(&sample, PARQUET_MAX_ROW_GROUP_ROWS);
        assert_eq!(layout.without_dictionary, ["order", "comment"]);
        // in row groups the size of the sample, the order key's dictionary fits its page
        let small = ParquetLayout::for_sample(&sample, 65_536);
        assert_eq!(small.without_dictionary, ["comment"]);
        // the choice reaches the file
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.parquet");
        let mut writer =
            ParquetFileWriter::try_new_with_layout(&path, sample.schema(), &layout).unwrap();
        writer.write(&sample).unwrap();
        writer.finish().unwrap();
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        let with_dictionary: Vec<bool> = group
            .columns()
            .iter()
            .map(|c| c.dictionary_page_offset().is_some())
            .collect();
        assert_eq!(with_dictionary, [false, true, false, true]);
    }

    #[test]
    fn a_row_group_refuses_a_batch_of_another_schema() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.parquet");
        let mut writer = ParquetFileWriter::try_new(&path, numbers(0..0).schema()).unwrap();
        let mut group = writer.row_group().unwrap();
        let err = group
            .write(&sample_batch().project(&[1]).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
        drop(group);
        drop(writer);
        assert!(dir_entries(tmp.path()).is_empty());
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

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only_even_when_replacing_a_shared_one() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("home/credentials.json");
        write_bytes_atomic(&path, b"old").unwrap();
        write_private_atomic(&path, b"{\"token\": \"t\"}").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{\"token\": \"t\"}");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            dir_entries(path.parent().unwrap()),
            vec!["credentials.json"]
        );
    }

    #[test]
    fn commit_file_moves_into_a_new_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("part");
        fs::write(&from, b"bytes").unwrap();
        let dest = tmp.path().join("a/b/file.parquet");
        commit_file(&from, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"bytes");
        assert!(!from.exists());
    }

    fn staged(path: &Path, batch: &RecordBatch) -> StagedFile {
        let mut w = ParquetFileWriter::try_new(path, batch.schema()).unwrap();
        w.write(batch).unwrap();
        w.finish_staged().unwrap()
    }

    #[test]
    fn an_adopted_file_is_committed_as_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("parquet");
        let dest = root.join("s/t.parquet");
        let old = staged(&dest, &sample_batch());
        commit_table(&journal_path(&root, "s", "t"), vec![old], &[]).unwrap();

        // A complete file staged elsewhere on the same file system.
        let source = tmp.path().join("tmp/sync/part-00000.parquet");
        let mut w = ParquetFileWriter::try_new(&source, sample_batch().schema()).unwrap();
        w.write(&sample_batch()).unwrap();
        w.write(&sample_batch()).unwrap();
        let written = w.finish().unwrap();
        let bytes = fs::read(&source).unwrap();

        let adopted = StagedFile::adopt(&source, &dest).unwrap();
        assert!(!source.exists(), "the staged name is gone");
        assert_eq!(adopted.sha256(), written.sha256);
        assert_eq!(adopted.rows(), 6);
        assert_eq!(adopted.bytes(), bytes.len() as u64);
        assert_ne!(
            fs::read(&dest).unwrap(),
            bytes,
            "not in place before the commit"
        );
        commit_table(&journal_path(&root, "s", "t"), vec![adopted], &[]).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        assert_eq!(
            dir_entries(&root.join("s")),
            vec!["t.parquet"],
            "no temporary file or journal left"
        );

        // Dropped before a commit, an adopted file leaves nothing behind.
        let mut w = ParquetFileWriter::try_new(&source, sample_batch().schema()).unwrap();
        w.write(&sample_batch()).unwrap();
        w.finish().unwrap();
        drop(StagedFile::adopt(&source, &dest).unwrap());
        assert_eq!(dir_entries(&root.join("s")), vec!["t.parquet"]);
        assert_eq!(fs::read(&dest).unwrap(), bytes);
    }

    #[test]
    fn commit_table_puts_files_in_place_and_removes_others() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("parquet");
        let t = root.join("s/t");
        let batch = sample_batch();
        let first = staged(&t.join("2024_01.parquet"), &batch);
        assert!(!first.dest().exists(), "a staged file is not in place yet");
        commit_table(&journal_path(&root, "s", "t"), vec![first], &[]).unwrap();
        let second = staged(&t.join("2024_02.parquet"), &batch);
        commit_table(
            &journal_path(&root, "s", "t"),
            vec![second],
            &[t.join("2024_01.parquet")],
        )
        .unwrap();
        assert_eq!(dir_entries(&t), vec!["2024_02.parquet"]);
        assert_eq!(dir_entries(&root.join("s")), vec!["t"], "no journal left");
        // Files outside the journal's folder are refused.
        let outside = staged(&tmp.path().join("x.parquet"), &batch);
        let err = commit_table(&journal_path(&root, "s", "t"), vec![outside], &[]).unwrap_err();
        assert!(matches!(err, WriteError::OutsideTable { .. }), "{err}");
    }

    #[test]
    fn recover_rolls_forward_a_dead_writers_change_and_sweeps_its_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("parquet");
        let t = root.join("s/t");
        let batch = sample_batch();
        let old = staged(&t.join("2024_01.parquet"), &batch);
        commit_table(&journal_path(&root, "s", "t"), vec![old], &[]).unwrap();
        // A change recorded in its journal, renames not done: the writer died (its pid is
        // this process's, which recovery treats as a previous incarnation).
        let mut new = staged(&t.join("2024_02.parquet"), &batch);
        new.temp.armed = false;
        let record = Journal {
            pid: std::process::id(),
            renames: vec![(
                new.temp
                    .path
                    .strip_prefix(root.join("s"))
                    .unwrap()
                    .to_path_buf(),
                PathBuf::from("t/2024_02.parquet"),
            )],
            deletes: vec![PathBuf::from("t/2024_01.parquet")],
        };
        write_bytes_atomic(
            &journal_path(&root, "s", "t"),
            &serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        // And a stray temporary file of a dead writer with no journal.
        let mut stray = staged(&t.join("2024_09.parquet"), &batch);
        stray.temp.armed = false;
        drop(new);
        drop(stray);
        let report = recover(&root).unwrap();
        assert_eq!(report.completed.len(), 1);
        assert_eq!(report.removed.len(), 1);
        assert_eq!(dir_entries(&t), vec!["2024_02.parquet"]);
        assert_eq!(dir_entries(&root.join("s")), vec!["t"]);
        // Idempotent.
        assert_eq!(recover(&root).unwrap(), Recovery::default());
    }

    #[test]
    fn temp_names_carry_the_writer_pid() {
        assert_eq!(temp_pid(".t.parquet.4242.7.tmp"), Some(4242));
        assert_eq!(temp_pid(".x.tmp"), None);
    }

    #[test]
    fn write_bytes_atomic_rejects_path_without_file_name() {
        let err = write_bytes_atomic(Path::new("/"), b"x").unwrap_err();
        assert!(matches!(err, WriteError::NoFileName { .. }), "{err}");
    }
}
