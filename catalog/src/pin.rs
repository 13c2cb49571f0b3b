//! Pinning a snapshot's files, so a query keeps reading the version it planned against even
//! when a writer replaces or removes the file at its path meanwhile.
//!
//! When a table's data is loaded, each of its files is hard-linked into a private folder
//! `<data-dir>/tmp/pinned/<process>-<n>/`; queries read the links. A writer's rename over
//! `parquet/…/x.parquet` then leaves the linked (old) inode intact for the queries still running
//! on the old snapshot, and the next snapshot links the new file. The folder is removed when
//! the last snapshot using that table data is dropped, and folders of processes that are gone
//! are swept when a catalog opens. Hard links cost no copy and no open file descriptors; where
//! they are impossible (another file system, no permission) the table reads its files in place.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Distinguishes pin folders of this process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<pid>-<start time>`: unique to this process even when a pid is reused.
fn process_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{}-{started:x}", std::process::id())
    })
}

/// `<data-dir>/tmp/pinned`.
pub(crate) fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("tmp").join("pinned")
}

/// A pinned file: where to read it, and what it is.
#[derive(Debug, Clone)]
pub(crate) struct PinnedFile {
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) modified: SystemTime,
}

/// The pin folder of one table's data; removed on drop.
#[derive(Debug)]
pub(crate) struct Pins {
    dir: Option<PathBuf>,
}

impl Pins {
    /// Links `files` into a new folder under `root`. A file that cannot be linked is read in
    /// place (its current size and time are returned either way).
    pub(crate) fn create(
        root: &Path,
        files: &[PathBuf],
    ) -> std::io::Result<(Self, Vec<PinnedFile>)> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{}-{n}", process_token()));
        let mut pins = Self { dir: None };
        let mut out = Vec::with_capacity(files.len());
        let mut linking = fs::create_dir_all(&dir).is_ok();
        if linking {
            pins.dir = Some(dir.clone());
        }
        for (i, file) in files.iter().enumerate() {
            let mut path = file.clone();
            if linking {
                let link = dir.join(format!("{i}.parquet"));
                match fs::hard_link(file, &link) {
                    Ok(()) => path = link,
                    Err(e) => {
                        tracing::debug!(file = %file.display(), error = %e, "cannot pin by hard link; reading in place");
                        linking = false;
                    }
                }
            }
            let meta = fs::metadata(&path)?;
            out.push(PinnedFile {
                path,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        Ok((pins, out))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take()
            && let Err(e) = fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove pinned files");
        }
    }
}

/// Removes pin folders left by processes that are gone (crashed servers). Folders of this
/// process and of other live processes stay.
pub(crate) fn sweep(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let mine = process_token();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(mine) {
            continue;
        }
        let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if !pid.is_some_and(dataport_common::fs::other_process_alive) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pinned_files_survive_replacement_and_vanish_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("t.parquet");
        fs::write(&data, b"old contents").unwrap();
        let root = root(tmp.path());
        let (pins, files) = Pins::create(&root, std::slice::from_ref(&data)).unwrap();
        assert_ne!(files[0].path, data);
        assert_eq!(files[0].size, 12);
        // A writer replaces the file (rename over it).
        let new = tmp.path().join(".t.parquet.tmp");
        fs::write(&new, b"new").unwrap();
        fs::rename(&new, &data).unwrap();
        assert_eq!(fs::read(&files[0].path).unwrap(), b"old contents");
        drop(pins);
        assert!(!files[0].path.exists());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn sweep_removes_folders_of_dead_processes_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = root(tmp.path());
        let (_pins, _) = Pins::create(&root, &[]).unwrap();
        fs::create_dir_all(root.join("4000000000-abc-0")).unwrap();
        sweep(&root);
        let left: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 1);
        assert!(left[0].starts_with(process_token()));
    }
}
