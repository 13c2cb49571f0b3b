//! Multi-file changes to one table: files staged under temporary names ([`StagedFile`]), a
//! commit journal that puts them into place as one change ([`commit_table`]), and the
//! [`recover`]y that finishes a change whose writer died half-way.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use dataport_common::digest::sha256_file;
use dataport_common::fs::{
    FsError, TempFile, is_temp_name, other_process_alive, remove_file_synced, sync_dir,
    temp_writer_pid, write_bytes_atomic,
};

use super::WriteError;

/// A complete, synced file waiting under a temporary name for [`commit_table`]. Dropping it
/// removes the temporary file.
#[derive(Debug)]
pub struct StagedFile {
    pub(super) temp: TempFile,
    pub(super) dest: PathBuf,
    pub(super) rows: u64,
    pub(super) bytes: u64,
    pub(super) sha256: String,
}

impl StagedFile {
    /// Stages the complete Parquet file `from`, already synced (as
    /// [`ParquetFileWriter::finish`] leaves it), for `dest` without copying it: it gets a
    /// temporary name in `dest`'s folder (a hard link, then `from` is removed), so
    /// [`commit_table`] can put it into place. `from` must be on the same file system as
    /// `dest` ([`FsError::Link`] with [`io::ErrorKind::CrossesDevices`] otherwise, and
    /// `from` is left as it was).
    pub fn adopt(from: &Path, dest: &Path) -> Result<Self, WriteError> {
        let temp = TempFile::link(from, dest)?;
        // The new name is durable (its folder is synced); the journal of the commit is written
        // into the same folder.
        let io_error = |source: io::Error| FsError::Io {
            path: temp.path().to_path_buf(),
            source,
        };
        let sha256 = sha256_file(temp.path()).map_err(io_error)?;
        let file = File::open(temp.path()).map_err(io_error)?;
        let bytes = file.metadata().map_err(io_error)?.len();
        let reader = parquet::file::reader::SerializedFileReader::new(file).map_err(|source| {
            WriteError::Parquet {
                path: temp.path().to_path_buf(),
                source,
            }
        })?;
        let rows = parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .num_rows();
        fs::remove_file(from).map_err(|source| FsError::Io {
            path: from.to_path_buf(),
            source,
        })?;
        Ok(Self {
            temp,
            dest: dest.to_path_buf(),
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
pub(super) struct Journal {
    /// The writing process; recovery leaves journals of live writers alone.
    pub(super) pid: u32,
    /// `(temporary, final)` names, relative to the journal's directory.
    pub(super) renames: Vec<(PathBuf, PathBuf)>,
    /// Files to remove, relative to the journal's directory.
    pub(super) deletes: Vec<PathBuf>,
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
            .push((relative(file.temp.path())?, relative(&file.dest)?));
    }
    for d in deletes {
        if staged.iter().any(|s| s.dest == *d) {
            continue;
        }
        record.deletes.push(relative(d)?);
    }
    let body = serde_json::to_vec(&record).map_err(|e| FsError::Io {
        path: journal.to_path_buf(),
        source: io::Error::other(e),
    })?;
    write_bytes_atomic(journal, &body)?;
    // From here on the journal owns the temporary files: a failure leaves them for recovery.
    let mut staged = staged;
    for file in &mut staged {
        file.temp.keep();
    }
    apply_journal(base, &record)?;
    Ok(remove_file_synced(journal)?)
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
            Err(source) => return Err(FsError::Rename { from, to, source }.into()),
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
            Err(source) => return Err(FsError::Io { path, source }.into()),
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
            } else if is_temp_name(&name) {
                temps.push(path);
            }
        }
    }
    let mut owned_by_live: Vec<PathBuf> = Vec::new();
    for journal in journals {
        let base = journal.parent().unwrap_or(Path::new(".")).to_path_buf();
        let bytes = fs::read(&journal).map_err(|source| FsError::Io {
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
        if temp_writer_pid(&name).is_some_and(other_process_alive) {
            continue;
        }
        match fs::remove_file(&temp) {
            Ok(()) => report.removed.push(temp),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(FsError::Io { path: temp, source }.into()),
        }
    }
    Ok(report)
}
