//! Analyst sync: which files a caller may copy to their laptop, and where to read them.
//!
//! A caller's manifest lists every file of every table they may read (after their sync
//! settings), with its SHA-256. Digests are taken once per file version (path, size,
//! modification time) and kept in the state store: files Dataport writes are hashed while
//! written, others the first time they are listed. A table the caller may read only in part
//! (a row filter or hidden columns) is never handed out as its raw files: the caller's rows and
//! columns are written to a Parquet file of their own under `<data-dir>/sync/views/<key>/`,
//! keyed by the table's data version and the grant, and listed instead.
//!
//! Paths in a manifest are relative to the data dir and are the only names
//! [`SyncFiles::resolve`] accepts: anything else is "not found", exactly like a file of a
//! table the caller may not read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datafusion::prelude::SessionContext;
use dataport_catalog::write::ParquetFileWriter;
use dataport_catalog::{CatalogTable, SnapshotCatalogProvider, TableAccess};
pub use dataport_common::sync::{Manifest, ManifestColumn, ManifestFile, ManifestTable};
use dataport_common::{ErrorKind, HasKind};
use dataport_state::{FileDigest, StateStore, mtime_ns, relative_path};
pub use dataport_state::{PullRecord, PulledFile};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

/// Folder (under the data dir) of the callers' restricted copies.
pub const VIEWS_DIR: &str = "sync/views";

/// Why a sync request failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("not found: {path}")]
    NotFound { path: String },
    #[error("invalid sync settings: {message}")]
    InvalidSettings { message: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot prepare the restricted copy of {table}: {message}")]
    Materialize { table: String, message: String },
    #[error(transparent)]
    State(#[from] dataport_state::StateError),
}

impl HasKind for SyncError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::InvalidSettings { .. } => ErrorKind::InvalidArgument,
            Self::Io { .. } | Self::Materialize { .. } => ErrorKind::Internal,
            Self::State(e) => e.kind(),
        }
    }
}

/// What a user wants on their laptop; by default every table they may read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSettings {
    /// Only these schemas (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schemas: Option<Vec<String>>,
    /// Only these tables, as `schema.table` (all of the chosen schemas when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// Never these tables (`schema.table`).
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl SyncSettings {
    /// Whether `table` is wanted.
    pub fn wants(&self, table: &CatalogTable) -> bool {
        let name = table.qualified_name();
        self.schemas
            .as_ref()
            .is_none_or(|s| s.iter().any(|s| s == table.schema_name()))
            && self.tables.as_ref().is_none_or(|t| t.contains(&name))
            && !self.exclude.contains(&name)
    }

    /// Checks the names' shape (they need not exist: a table may be granted later).
    pub fn validate(&self) -> Result<(), SyncError> {
        let bad = |message: String| Err(SyncError::InvalidSettings { message });
        for s in self.schemas.iter().flatten() {
            if s.is_empty() || s.contains('.') {
                return bad(format!("'{s}' is not a schema name"));
            }
        }
        for t in self.tables.iter().flatten().chain(&self.exclude) {
            match t.split_once('.') {
                Some((s, n)) if !s.is_empty() && !n.is_empty() && !n.contains('.') => {}
                _ => {
                    return bad(format!(
                        "'{t}' is not a table name of the form schema.table"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A file of a manifest as the server serves it: its entry, and where its bytes are read from
/// (a snapshot's pinned link, or a restricted copy).
#[derive(Debug, Clone)]
pub struct ServedFile {
    pub entry: ManifestFile,
    pub read_from: PathBuf,
}

/// Builds manifests and resolves their files.
#[derive(Debug)]
pub struct SyncFiles {
    state: Arc<StateStore>,
    data_dir: PathBuf,
    /// One restricted copy is written at a time.
    writing: tokio::sync::Mutex<()>,
}

impl SyncFiles {
    pub fn new(state: Arc<StateStore>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            state,
            data_dir: data_dir.into(),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// Every file of every table `view`'s caller may read and wants.
    pub async fn manifest(
        &self,
        view: &SnapshotCatalogProvider,
        settings: &SyncSettings,
    ) -> Result<Manifest, SyncError> {
        let mut tables = Vec::new();
        for table in view.tables() {
            if settings.wants(table) {
                tables.push(self.table_entry(view, table).await?);
            }
        }
        Ok(Manifest {
            generated_at: rfc3339(SystemTime::now()),
            snapshot_version: view.snapshot().version(),
            tables,
        })
    }

    /// Remembers that `account`'s pull began: the manifest it was sent, or why it got none.
    /// What the server saw of each analyst's pulls is shown on their home page; a failure to
    /// remember is logged and never fails the pull.
    pub fn note_manifest(&self, account: i64, manifest: Result<&Manifest, &SyncError>) {
        let (counts, error) = match manifest {
            Ok(m) => {
                let files = m.tables.iter().flat_map(|t| &t.files);
                let (n, bytes) = files.fold((0u64, 0u64), |(n, b), f| (n + 1, b + f.size));
                ((m.tables.len() as u64, n, bytes), None)
            }
            Err(e) => ((0, 0, 0), Some(e.to_string())),
        };
        if let Err(e) =
            self.state
                .begin_pull(account, crate::jobs::now_ms(), counts, error.as_deref())
        {
            tracing::warn!(error = %e, account, "cannot record the start of a pull");
        }
    }

    /// Remembers one file request of `account`'s pull and how it ended.
    pub fn note_file(&self, account: i64, file: &PulledFile) {
        if let Err(e) = self
            .state
            .record_pulled_file(account, crate::jobs::now_ms(), file)
        {
            tracing::warn!(error = %e, account, "cannot record a file of a pull");
        }
    }

    /// `account`'s last `limit` pulls, newest first.
    pub fn pulls(&self, account: i64, limit: usize) -> Result<Vec<PullRecord>, SyncError> {
        Ok(self.state.pulls(account, limit)?)
    }

    /// The manifest file named `path`, if the caller may have it (whatever their settings).
    pub async fn resolve(
        &self,
        view: &SnapshotCatalogProvider,
        path: &str,
    ) -> Result<ServedFile, SyncError> {
        let not_found = || SyncError::NotFound {
            path: path.to_string(),
        };
        if !is_plain_relative(path) {
            return Err(not_found());
        }
        for table in view.tables() {
            if !self.may_contain(table, path) {
                continue;
            }
            let files = self.files_of(view, table).await?;
            if let Some(f) = files.into_iter().find(|f| f.entry.path == path) {
                return Ok(f);
            }
        }
        Err(not_found())
    }

    /// Whether `path` could be one of `table`'s files (cheap, before building its entry).
    fn may_contain(&self, table: &CatalogTable, path: &str) -> bool {
        if path.starts_with(VIEWS_DIR) {
            path.ends_with(&format!(
                "/{}/{}.parquet",
                table.schema_name(),
                table.name()
            ))
        } else {
            table
                .files()
                .any(|(p, _, _)| self.relative(p).as_deref() == Some(path))
        }
    }

    async fn table_entry(
        &self,
        view: &SnapshotCatalogProvider,
        table: &Arc<CatalogTable>,
    ) -> Result<ManifestTable, SyncError> {
        let schema = view.visible_schema(table);
        let restricted = matches!(view.access(table), TableAccess::Restricted { .. });
        let files = self.files_of(view, table).await?;
        Ok(ManifestTable {
            schema: table.schema_name().to_string(),
            table: table.name().to_string(),
            description: table.description().map(str::to_string),
            columns: schema
                .fields()
                .iter()
                .map(|f| ManifestColumn {
                    name: f.name().clone(),
                    data_type: crate::wire::client_type(f.data_type()).to_string(),
                    description: table.column_description(f.name()).map(str::to_string),
                })
                .collect(),
            partition_columns: if restricted {
                Vec::new()
            } else {
                table.partition_columns().to_vec()
            },
            restricted,
            files: files.into_iter().map(|f| f.entry).collect(),
        })
    }

    /// The files the caller gets of `table`: its own, or their restricted copy.
    async fn files_of(
        &self,
        view: &SnapshotCatalogProvider,
        table: &Arc<CatalogTable>,
    ) -> Result<Vec<ServedFile>, SyncError> {
        let access = view.access(table);
        if matches!(access, TableAccess::Restricted { .. }) {
            Ok(vec![self.restricted_copy(view, table, &access).await?])
        } else {
            self.raw_files(table).await
        }
    }

    /// The table's own files, each with its digest.
    async fn raw_files(&self, table: &CatalogTable) -> Result<Vec<ServedFile>, SyncError> {
        let parquet_root = self.data_dir.join("parquet");
        let mut out = Vec::new();
        for f in table.snapshot_files() {
            let Some(path) = self.relative(f.path) else {
                continue;
            };
            // A link out of the data dir is never served.
            if !self.inside_data_dir(f.path) {
                tracing::warn!(file = %f.path.display(), "a table file leads out of the data dir; not offered for sync");
                continue;
            }
            let local_path = relative_path(&parquet_root, f.path).unwrap_or_else(|| path.clone());
            let sha256 = self.digest(&path, f.read_from, f.size, f.modified).await?;
            out.push(ServedFile {
                entry: ManifestFile {
                    path,
                    local_path,
                    size: f.size,
                    sha256,
                    modified: rfc3339(f.modified),
                },
                read_from: f.read_from.to_path_buf(),
            });
        }
        Ok(out)
    }

    /// The digest of a file version: stored, or computed now and stored.
    async fn digest(
        &self,
        path: &str,
        read_from: &Path,
        size: u64,
        modified: SystemTime,
    ) -> Result<String, SyncError> {
        let mtime_ns = mtime_ns(modified);
        if let Some(d) = self.state.file_digest(path, size, mtime_ns)? {
            return Ok(d);
        }
        let source = read_from.to_path_buf();
        let sha256 =
            tokio::task::spawn_blocking(move || dataport_common::digest::sha256_file(&source))
                .await
                .map_err(|e| SyncError::Io {
                    path: read_from.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                })?
                .map_err(|source| SyncError::Io {
                    path: read_from.to_path_buf(),
                    source,
                })?;
        self.state.put_file_digest(&FileDigest {
            path: path.to_string(),
            size,
            mtime_ns,
            sha256: sha256.clone(),
        })?;
        Ok(sha256)
    }

    /// The caller's copy of a restricted table: written once per data version and grant.
    async fn restricted_copy(
        &self,
        view: &SnapshotCatalogProvider,
        table: &Arc<CatalogTable>,
        access: &TableAccess,
    ) -> Result<ServedFile, SyncError> {
        let key = view_key(table, access);
        let local_path = format!("{}/{}.parquet", table.schema_name(), table.name());
        let path = format!("{VIEWS_DIR}/{key}/{local_path}");
        let file = self.data_dir.join(&path);
        let failed = |message: String| SyncError::Materialize {
            table: table.qualified_name(),
            message,
        };
        let _one = self.writing.lock().await;
        if !file.is_file() {
            let provider = view
                .provider_for(table)
                .map_err(|e| failed(e.to_string()))?;
            let ctx = SessionContext::new();
            let df = ctx
                .read_table(provider)
                .map_err(|e| failed(e.to_string()))?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df
                .execute_stream()
                .await
                .map_err(|e| failed(e.to_string()))?;
            let mut writer =
                ParquetFileWriter::try_new(&file, schema).map_err(|e| failed(e.to_string()))?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| failed(e.to_string()))?;
                writer.write(&batch).map_err(|e| failed(e.to_string()))?;
            }
            let written = writer.finish().map_err(|e| failed(e.to_string()))?;
            let meta = std::fs::metadata(&file).map_err(|source| SyncError::Io {
                path: file.clone(),
                source,
            })?;
            self.state.put_file_digest(&FileDigest {
                path: path.clone(),
                size: written.bytes,
                mtime_ns: mtime_ns(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
                sha256: written.sha256,
            })?;
            tracing::info!(table = %table.qualified_name(), rows = written.rows, "restricted copy written for sync");
        }
        let meta = std::fs::metadata(&file).map_err(|source| SyncError::Io {
            path: file.clone(),
            source,
        })?;
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let sha256 = self.digest(&path, &file, meta.len(), modified).await?;
        Ok(ServedFile {
            entry: ManifestFile {
                path,
                local_path,
                size: meta.len(),
                sha256,
                modified: rfc3339(modified),
            },
            read_from: file,
        })
    }

    /// Removes the restricted copies no manifest of `views` (one per account, on the current
    /// snapshot) can list any more: older data versions, changed or revoked grants. Copies
    /// younger than `min_age` stay, so one being written for a newer snapshot is never pulled
    /// from under its writer or its first download.
    pub fn prune_views(&self, views: &[SnapshotCatalogProvider], min_age: Duration) -> usize {
        let keep: BTreeSet<String> = views
            .iter()
            .flat_map(|view| {
                view.tables().filter_map(move |t| {
                    let access = view.access(t);
                    matches!(access, TableAccess::Restricted { .. }).then(|| view_key(t, &access))
                })
            })
            .collect();
        let root = self.data_dir.join(VIEWS_DIR);
        let Ok(entries) = std::fs::read_dir(&root) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < min_age);
            if keep.contains(&name) || young {
                continue;
            }
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an old restricted copy")
                }
            }
        }
        removed
    }

    /// `path` relative to the data dir, with `/` separators.
    fn relative(&self, path: &Path) -> Option<String> {
        relative_path(&self.data_dir, path)
    }

    fn inside_data_dir(&self, path: &Path) -> bool {
        match (path.canonicalize(), self.data_dir.canonicalize()) {
            (Ok(p), Ok(root)) => p.starts_with(root),
            _ => false,
        }
    }
}

pub use dataport_common::fs::is_plain_relative;

/// The folder of `table`'s restricted copy for `access`: one per table, data version and
/// grant.
fn view_key(table: &CatalogTable, access: &TableAccess) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(
        format!(
            "{}|{}|{access:?}",
            table.qualified_name(),
            crate::profiles::data_version(table)
        )
        .as_bytes(),
    );
    hex::encode(h.finalize())[..24].to_string()
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths() {
        for ok in ["parquet/a/b.parquet", "sync/views/k/s/t.parquet", "a"] {
            assert!(is_plain_relative(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "parquet/../../x",
            "parquet//x",
            "parquet/./x",
            "a\\b",
            "parquet/x/",
        ] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }

    #[test]
    fn settings_choose_tables() {
        let s: SyncSettings =
            serde_json::from_str(r#"{"schemas": ["tpch"], "exclude": ["tpch.lineitem"]}"#)
                .unwrap_or_default();
        assert_eq!(s.schemas.as_deref(), Some(&["tpch".to_string()][..]));
        assert!(s.validate().is_ok());
        let bad = SyncSettings {
            tables: Some(vec!["nodot".into()]),
            ..SyncSettings::default()
        };
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<SyncSettings>(r#"{"tabels": []}"#).is_err());
    }
}
