//! The analyst-sync wire types: what `GET /api/v1/sync/manifest` and
//! `POST /api/v1/sync/upload` answer. The server writes them, `dataport pull`/`push` read them.

use serde::{Deserialize, Serialize};

/// A caller's manifest: the tables they may read, each with its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub snapshot_version: u64,
    pub tables: Vec<ManifestTable>,
}

/// A table in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTable {
    pub schema: String,
    pub table: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub columns: Vec<ManifestColumn>,
    /// Hive partition columns (`key=value/` folders in `local_path`s).
    #[serde(default)]
    pub partition_columns: Vec<String>,
    /// The caller's own copy: their rows and columns only.
    #[serde(default)]
    pub restricted: bool,
    pub files: Vec<ManifestFile>,
}

impl ManifestTable {
    /// `schema.table`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// A column of a [`ManifestTable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestColumn {
    pub name: String,
    /// The Arrow type as DataFusion prints it.
    #[serde(rename = "type")]
    pub data_type: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// A file in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its name on the server (relative to the data dir), for `GET /api/v1/sync/files/{path}`.
    pub path: String,
    /// Where it goes under the client's folder: `<schema>/<table>.parquet` or
    /// `<schema>/<table>/<key=value/…>/<file>.parquet`.
    pub local_path: String,
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// RFC 3339, UTC.
    pub modified: String,
}

/// `POST /api/v1/sync/upload`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    /// `notes` or `transcript`.
    #[serde(default)]
    pub kind: String,
    pub name: String,
    pub bytes: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    #[serde(default)]
    pub sha256: String,
    /// The server already had these bytes.
    pub unchanged: bool,
}

/// `<data-dir>/uploads/<user>/`: what the user pushed (`notes.md`, `transcripts/*.jsonl`).
/// None for a name that could not be a single folder.
pub fn upload_dir(data_dir: &std::path::Path, user: &str) -> Option<std::path::PathBuf> {
    (crate::fs::is_plain_relative(user) && !user.contains('/'))
        .then(|| data_dir.join("uploads").join(user))
}

/// `GET /api/v1/sync/rules`: the caller's rule files (corporate-memory items they upvoted,
/// and the pinned ones), which `dataport pull` keeps in `rules/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFiles {
    pub rules: Vec<RuleFile>,
}

/// One rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFile {
    /// The item's id (`km_` + 12 hex digits); the file is `rules/<id>.md`.
    pub id: String,
    /// SHA-256 of `content`, hex.
    pub sha256: String,
    /// The Markdown to write.
    pub content: String,
}

impl RuleFile {
    /// Whether `id` is an item id, and so a safe file name.
    pub fn valid_id(id: &str) -> bool {
        id.strip_prefix("km_").is_some_and(|h| {
            h.len() == 12
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
    }
}
