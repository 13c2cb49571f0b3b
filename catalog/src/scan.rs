//! Walking `<data-dir>/parquet/`: which tables exist and which files belong to each.
//!
//! Only `stat` calls happen here; footers are read later, and only for tables whose files
//! changed. That keeps a refresh of 10,000 files cheap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::names::{is_ignored, parquet_stem, sql_identifier};

/// A Parquet file of a table, as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScannedFile {
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) modified: SystemTime,
    /// Values of the hive partition keys of the table, in key order.
    pub(crate) partition_values: Vec<String>,
}

/// One table found on disk.
#[derive(Debug, Clone)]
pub(crate) struct ScannedTable {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// The `.parquet` file or the folder.
    pub(crate) location: PathBuf,
    pub(crate) files: Vec<ScannedFile>,
    /// Hive partition keys (`key=value/` folders), outermost first.
    pub(crate) partition_keys: Vec<String>,
}

impl ScannedTable {
    pub(crate) fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// Something on disk that could not become a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanIssue {
    pub(crate) source: String,
    pub(crate) message: String,
}

/// What a scan found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) tables: Vec<ScannedTable>,
    pub(crate) issues: Vec<ScanIssue>,
    /// `(schema, table)` of tables in the middle of a multi-file change (a commit journal
    /// exists): their previous version stays in force until the change is complete.
    pub(crate) changing: Vec<(String, String)>,
}

/// Scan the parquet root. Missing root means an empty catalog.
pub(crate) fn scan(root: &Path) -> Scan {
    let mut tables: BTreeMap<(String, String), ScannedTable> = BTreeMap::new();
    let mut issues = Vec::new();
    let mut changing = Vec::new();
    for (schema_dir, schema_raw) in sorted_entries(root, &mut issues) {
        if !schema_dir.is_dir() {
            continue;
        }
        let Some(schema) = sql_identifier(&schema_raw) else {
            issues.push(ScanIssue {
                source: schema_dir.display().to_string(),
                message: "folder name has no usable characters for a schema name".into(),
            });
            continue;
        };
        changing.extend(
            tables_being_changed(&schema_dir)
                .into_iter()
                .map(|t| (schema.clone(), t)),
        );
        for (path, raw) in sorted_entries(&schema_dir, &mut issues) {
            let (name_raw, table) = if path.is_dir() {
                (raw.as_str(), scan_folder(&schema, &raw, &path))
            } else if let Some(stem) = parquet_stem(&raw) {
                (stem, scan_single(&path))
            } else {
                continue;
            };
            let Some(name) = sql_identifier(name_raw) else {
                issues.push(ScanIssue {
                    source: path.display().to_string(),
                    message: "name has no usable characters for a table name".into(),
                });
                continue;
            };
            let key = (schema.clone(), name.clone());
            if let Some(existing) = tables.get(&key) {
                issues.push(ScanIssue {
                    source: path.display().to_string(),
                    message: format!(
                        "maps to table {schema}.{name}, already taken by {}; rename one of them",
                        existing.location.display()
                    ),
                });
                continue;
            }
            match table {
                Ok(Some((files, partition_keys))) => {
                    tables.insert(
                        key,
                        ScannedTable {
                            schema: schema.clone(),
                            name,
                            location: path,
                            files,
                            partition_keys,
                        },
                    );
                }
                Ok(None) => {}
                Err(message) => issues.push(ScanIssue {
                    source: format!("{schema}.{name}"),
                    message,
                }),
            }
        }
    }
    Scan {
        tables: tables.into_values().collect(),
        issues,
        changing,
    }
}

/// Names of the tables of a schema folder that have a commit journal (`.<table>.commit`).
fn tables_being_changed(schema_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(schema_dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let table = name
                .strip_prefix('.')?
                .strip_suffix(crate::write::JOURNAL_SUFFIX)?;
            sql_identifier(table)
        })
        .collect()
}

type Found = Option<(Vec<ScannedFile>, Vec<String>)>;

fn scan_single(path: &Path) -> Result<Found, String> {
    match file_entry(path, Vec::new()) {
        Ok(Some(file)) => Ok(Some((vec![file], Vec::new()))),
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    }
}

fn file_entry(path: &Path, partition_values: Vec<String>) -> Result<Option<ScannedFile>, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    // An empty file is one a writer has just created; it is not a table yet.
    if meta.len() == 0 {
        return Ok(None);
    }
    Ok(Some(ScannedFile {
        path: path.to_path_buf(),
        size: meta.len(),
        modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        partition_values,
    }))
}

/// A folder table: every `*.parquet` below it; `key=value` folders are hive partitions.
fn scan_folder(schema: &str, raw: &str, dir: &Path) -> Result<Found, String> {
    let mut files = Vec::new();
    let mut keys: Option<Vec<String>> = None;
    let mut stack = vec![(dir.to_path_buf(), Vec::<(String, String)>::new())];
    let mut ignored = Vec::new();
    while let Some((current, parts)) = stack.pop() {
        for (path, name) in sorted_entries(&current, &mut ignored) {
            if path.is_dir() {
                let Some((k, v)) = name.split_once('=') else {
                    return Err(format!(
                        "folder {} is neither a partition folder (key=value) nor a table file",
                        path.display()
                    ));
                };
                let mut next = parts.clone();
                next.push((k.to_string(), percent_decode(v)));
                stack.push((path, next));
            } else if parquet_stem(&name).is_some() {
                let these: Vec<String> = parts.iter().map(|(k, _)| k.clone()).collect();
                match &keys {
                    None => keys = Some(these),
                    Some(k) if *k == these => {}
                    Some(k) => {
                        return Err(format!(
                            "table {schema}.{raw}: file {} has partition keys [{}] but other files have [{}]",
                            path.display(),
                            these.join(", "),
                            k.join(", ")
                        ));
                    }
                }
                let values = parts.iter().map(|(_, v)| v.clone()).collect();
                if let Some(f) = file_entry(&path, values)? {
                    files.push(f);
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let keys = keys.unwrap_or_default();
    let mut out_keys = Vec::with_capacity(keys.len());
    for k in keys {
        match sql_identifier(&k) {
            Some(id) => out_keys.push(id),
            None => return Err(format!("partition key '{k}' is not a usable column name")),
        }
    }
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some((files, out_keys)))
}

/// Entries of a directory that are not ignored, sorted by name; unreadable dirs are reported.
fn sorted_entries(dir: &Path, issues: &mut Vec<ScanIssue>) -> Vec<(PathBuf, String)> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            issues.push(ScanIssue {
                source: dir.display().to_string(),
                message: format!("cannot list folder: {e}"),
            });
            return Vec::new();
        }
    };
    let mut out: Vec<(PathBuf, String)> = read
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            (!is_ignored(&name)).then(|| (e.path(), name))
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%2"), "%2");
        assert_eq!(percent_decode("x%3Dy"), "x=y");
    }
}
