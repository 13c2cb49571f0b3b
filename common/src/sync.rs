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

/// `GET /api/v1/sync/docs`: what an assistant needs to work on the caller's laptop (their
/// catalog, with a page and a profile for each table they pull), which `dataport pull` keeps
/// in `docs/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocFiles {
    pub files: Vec<DocFile>,
}

/// One file of `docs/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocFile {
    /// Where it goes under `docs/` (`README.md`, `tables/<schema>.<table>.md`, …): see
    /// [`DocFile::valid_path`].
    pub path: String,
    /// SHA-256 of `content`, hex.
    pub sha256: String,
    /// The text to write.
    pub content: String,
}

impl DocFile {
    /// The file `path` holding `content`, with its digest.
    pub fn new(path: impl Into<String>, content: impl Into<String>) -> Self {
        let content = content.into();
        Self {
            path: path.into(),
            sha256: crate::digest::sha256_hex(content.as_bytes()),
            content,
        }
    }

    /// Whether `path` is safe to write under `docs/`: a relative path of plain names made of
    /// ASCII letters, digits, `.`, `_` and `-` (none starting with `.`, so no `..` and no
    /// hidden or temporary file), at most 255 bytes.
    pub fn valid_path(path: &str) -> bool {
        path.len() <= 255
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
            && crate::fs::is_plain_relative(path)
            && path.split('/').all(|part| !part.starts_with('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::DocFile;

    #[test]
    fn doc_paths_are_plain_relative_names() {
        for good in [
            "README.md",
            "catalog.json",
            "tables/tpch.orders.md",
            "profiles/s_1.t-2.json",
        ] {
            assert!(DocFile::valid_path(good), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x.md",
            "tables/../../x.md",
            "tables/./x.md",
            "tables//x.md",
            ".hidden.md",
            "tables/.x.md.tmp",
            "tables\\x.md",
            "tables/a b.md",
            "tables/é.md",
            "tables/x.md\0",
            "tables/",
            &"a".repeat(256),
        ] {
            assert!(!DocFile::valid_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_doc_file_carries_the_digest_of_its_content() {
        let f = DocFile::new("README.md", "# hi\n");
        assert_eq!(f.sha256, crate::digest::sha256_hex(b"# hi\n"));
    }
}
