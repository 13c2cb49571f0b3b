//! The atomic file writes of the project.
//!
//! Every file Dataport produces (Parquet tables, Markdown descriptions, credentials, pulled
//! files) is written to a dot-prefixed temporary file in the destination directory
//! (`.<name>.<pid>.<n>.tmp`), synced, renamed over the destination, and the directory is synced.
//! Readers therefore see either the old file or the complete new one, never a partial write;
//! the catalog never registers a temporary file because its name starts with a dot; and a
//! sweep can tell from the name whether its writer still runs ([`temp_writer_pid`],
//! [`other_process_alive`]).

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{ErrorKind, HasKind};

/// How often a fresh temporary name is tried when one is already taken.
const TEMP_NAME_ATTEMPTS: u32 = 16;

/// Distinguishes temporary files created by this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why writing a file failed; every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The destination has no file name (e.g. it is `/` or ends in `..`).
    #[error("cannot write to {path}: the path has no file name")]
    NoFileName { path: PathBuf },

    /// The destination's parent directory could not be created.
    #[error("failed to create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },

    /// The temporary file next to the destination could not be created.
    #[error("failed to create temporary file {path}: {source}")]
    CreateTemp { path: PathBuf, source: io::Error },

    /// Reading or writing bytes of a file failed.
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
}

impl FsError {
    /// The underlying I/O error, when there is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Self::NoFileName { .. } => None,
            Self::CreateDir { source, .. }
            | Self::CreateTemp { source, .. }
            | Self::Io { source, .. }
            | Self::Sync { source, .. }
            | Self::Rename { source, .. }
            | Self::SyncDir { source, .. }
            | Self::Link { source, .. }
            | Self::Metadata { source, .. } => Some(source),
        }
    }
}

impl HasKind for FsError {
    fn kind(&self) -> ErrorKind {
        match self {
            // A destination without a name is a caller's mistake.
            Self::NoFileName { .. } => ErrorKind::InvalidArgument,
            // Storage failing under the server: nothing the client can change.
            Self::CreateDir { .. }
            | Self::CreateTemp { .. }
            | Self::Io { .. }
            | Self::Sync { .. }
            | Self::Rename { .. }
            | Self::SyncDir { .. }
            | Self::Link { .. }
            | Self::Metadata { .. } => ErrorKind::Internal,
        }
    }
}

/// A relative path of plain names: no `..`, no root, no empty parts, no backslashes.
///
/// ```
/// use dataport_common::fs::is_plain_relative;
/// assert!(is_plain_relative("tpch/lineitem.parquet"));
/// assert!(!is_plain_relative("../etc/passwd"));
/// assert!(!is_plain_relative("/etc/passwd"));
/// ```
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
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    write_atomic_with_mode(path, bytes, None)
}

/// [`write_bytes_atomic`] for secrets: the file (and its temporary file, from the moment it
/// exists) is readable by its owner only (mode 0600 on Unix).
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    write_atomic_with_mode(path, bytes, Some(0o600))
}

/// Moves a finished, synced file to `dest` (creating `dest`'s folder) and syncs the folder, so
/// `dest` holds either its old content or the whole new file, even after a crash.
pub fn commit_file(from: &Path, dest: &Path) -> Result<(), FsError> {
    let dir = create_parent(dest)?;
    fs::rename(from, dest).map_err(|source| FsError::Rename {
        from: from.to_path_buf(),
        to: dest.to_path_buf(),
        source,
    })?;
    sync_dir(&dir)
}

fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), FsError> {
    let (mut temp, mut file) = TempFile::create_with_mode(path, mode)?;
    file.write_all(bytes).map_err(|source| FsError::Io {
        path: temp.path().to_path_buf(),
        source,
    })?;
    file.sync_all().map_err(|source| FsError::Sync {
        path: temp.path().to_path_buf(),
        source,
    })?;
    drop(file);
    temp.commit(path)
}

/// A temporary file next to its destination, removed on drop unless it was committed
/// (renamed into place) or [`kept`](Self::keep) for someone else to finish.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    /// The destination's directory, synced after the rename.
    dir: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Creates `dest`'s folder and a fresh `.<name>.<pid>.<n>.tmp` file in it.
    pub fn create(dest: &Path) -> Result<(Self, File), FsError> {
        Self::create_with_mode(dest, None)
    }

    /// [`create`](Self::create) with the new file's permission bits (Unix; ignored elsewhere).
    pub fn create_with_mode(dest: &Path, mode: Option<u32>) -> Result<(Self, File), FsError> {
        let file_name = file_name(dest)?;
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
                    let dir = dir.clone();
                    return Ok((Self::armed(path, dir), file));
                }
                // A stale file from a crashed process that had the same pid: pick another name.
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists && attempt < TEMP_NAME_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(source) => return Err(FsError::CreateTemp { path, source }),
            }
        }
    }

    /// Gives the complete file `from` a temporary name next to `dest` without copying it (a
    /// hard link) and syncs that folder. `from` must be on the same file system as `dest`
    /// ([`FsError::Link`] with [`io::ErrorKind::CrossesDevices`] otherwise); it stays where it
    /// is.
    pub fn link(from: &Path, dest: &Path) -> Result<Self, FsError> {
        let file_name = file_name(dest)?;
        let dir = create_parent(dest)?;
        let mut attempt = 0;
        let temp = loop {
            let path = temp_name(&dir, file_name);
            match fs::hard_link(from, &path) {
                Ok(()) => break Self::armed(path, dir.clone()),
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists && attempt < TEMP_NAME_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(source) => {
                    return Err(FsError::Link {
                        from: from.to_path_buf(),
                        to: path,
                        source,
                    });
                }
            }
        };
        sync_dir(&dir)?;
        Ok(temp)
    }

    fn armed(path: PathBuf, dir: PathBuf) -> Self {
        Self {
            path,
            dir,
            armed: true,
        }
    }

    /// The temporary name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder it lies in (the destination's).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Renames the temporary file over `dest` (in [`dir`](Self::dir)), syncs the folder and
    /// disarms the guard. The file must already be synced and closed.
    pub fn commit(&mut self, dest: &Path) -> Result<(), FsError> {
        fs::rename(&self.path, dest).map_err(|source| FsError::Rename {
            from: self.path.clone(),
            to: dest.to_path_buf(),
            source,
        })?;
        // The temporary name is gone; nothing is left to clean up even if the sync fails.
        self.armed = false;
        sync_dir(&self.dir)
    }

    /// Leaves the file in place on drop: someone else (a commit journal) now owns it.
    pub fn keep(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
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

fn file_name(dest: &Path) -> Result<&OsStr, FsError> {
    dest.file_name().ok_or_else(|| FsError::NoFileName {
        path: dest.to_path_buf(),
    })
}

/// Creates `dest`'s folder (`.` for a bare file name) and returns it.
pub fn create_parent(dest: &Path) -> Result<PathBuf, FsError> {
    let dir = match dest.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|source| FsError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// A fresh `.<name>.<pid>.<n>.tmp` path in `dir`.
fn temp_name(dir: &Path, file_name: &OsStr) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(".");
    name.push(file_name);
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    dir.join(name)
}

/// Whether a file name is one of [`TempFile`]'s temporary names.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// The writer's process id in a temporary name `.<name>.<pid>.<n>.tmp`.
///
/// ```
/// use dataport_common::fs::temp_writer_pid;
/// assert_eq!(temp_writer_pid(".orders.parquet.4242.7.tmp"), Some(4242));
/// assert_eq!(temp_writer_pid("orders.parquet"), None);
/// ```
pub fn temp_writer_pid(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".tmp")?;
    let mut parts = stem.rsplit('.');
    let _counter = parts.next()?;
    parts.next()?.parse().ok()
}

/// Whether another live process with this id exists. This process counts as dead: its own id
/// on a leftover file means an earlier process that had the same id (pids repeat in
/// containers). Used by every sweep of files named after their writer's process.
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

/// Removes `path` (already gone is fine) and syncs its folder.
pub fn remove_file_synced(path: &Path) -> Result<(), FsError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(FsError::Io {
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

/// Syncs a directory, so renames and removals in it survive a crash.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| FsError::SyncDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Syncs a directory (a no-op where directories cannot be opened for syncing).
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> Result<(), FsError> {
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
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

    #[test]
    fn write_bytes_atomic_rejects_path_without_file_name() {
        let err = write_bytes_atomic(Path::new("/"), b"x").unwrap_err();
        assert!(matches!(err, FsError::NoFileName { .. }), "{err}");
    }

    #[test]
    fn a_dropped_temp_file_is_removed_and_a_kept_one_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("t.parquet");
        let (temp, _file) = TempFile::create(&dest).unwrap();
        let name = temp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(is_temp_name(&name), "{name}");
        assert_eq!(temp_writer_pid(&name), Some(std::process::id()));
        drop(temp);
        assert!(dir_entries(tmp.path()).is_empty());
        let (mut temp, _file) = TempFile::create(&dest).unwrap();
        temp.keep();
        drop(temp);
        assert_eq!(dir_entries(tmp.path()).len(), 1);
    }
}
