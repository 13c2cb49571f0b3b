//! `data_description.md`: table metadata written by people, parsed into [`Descriptions`].
//!
//! The format is the seed system's (README, "Data directory"): fenced ```` ```yaml ```` blocks with
//! `folder_mapping` and `tables`, prose in between. Dataport reads
//! `<data-dir>/docs/data_description.md` and every `<data-dir>/docs/datasets/*.md`.
//! Extension keys accepted on a table: `column_descriptions` (column → text),
//! `column_types` (column → type name such as `INTEGER`, `NUMERIC(12,2)`, `DATE`,
//! `TIMESTAMP`, `BOOLEAN`, `STRING`: overrides what a connector infers) and
//! `access: public|private` (or `private: true`): private tables are readable only by
//! `data-private` and `data-ops`, enforced by the engine's access rules; and `source` (the
//! configured source that writes the table, e.g. a Jira source's generated entries), which
//! other connectors leave alone.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A `data_description.md` problem. The message names the file and, when it can, the table.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct DescriptionError {
    /// The file that is wrong.
    pub file: PathBuf,
    /// What is wrong, naming the table where one is involved.
    pub message: String,
}

impl crate::HasKind for DescriptionError {
    fn kind(&self) -> crate::ErrorKind {
        // The file is wrong: whoever wrote it can fix it.
        crate::ErrorKind::InvalidArgument
    }
}

impl DescriptionError {
    fn new(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }
}

/// How a connector keeps the table up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStrategy {
    /// Replace the whole table on every sync.
    FullRefresh,
    /// Fetch rows changed within a window and merge by primary key.
    Incremental,
    /// One file per period of `partition_by`.
    Partitioned,
}

/// Period of a partitioned table's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionGranularity {
    Day,
    Month,
    Year,
}

/// A join from one column to a column of another table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignKey {
    /// The referencing column.
    pub column: String,
    /// Referenced schema, when the reference names one (`schema.table.column`).
    pub references_schema: Option<String>,
    /// Referenced table.
    pub references_table: String,
    /// Referenced column.
    pub references_column: String,
    /// What the join means.
    pub description: Option<String>,
}

/// Comparison of an export filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOperator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// An export filter (used by pull connectors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhereFilter {
    pub column: String,
    pub operator: FilterOperator,
    pub values: Vec<String>,
}

/// Everything `data_description.md` says about one table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableMeta {
    /// Source id, e.g. `in.c-crm.orders`.
    pub id: String,
    /// Table name in the catalog.
    pub name: String,
    /// Output folder (catalog schema) if known from `folder` or `folder_mapping`.
    pub folder: Option<String>,
    pub description: String,
    pub primary_key: Vec<String>,
    pub sync_strategy: Option<SyncStrategy>,
    pub incremental_window_days: Option<u32>,
    pub partition_by: Option<String>,
    pub partition_granularity: Option<PartitionGranularity>,
    pub max_history_days: Option<u32>,
    pub initial_load_chunk_days: Option<u32>,
    pub foreign_keys: Vec<ForeignKey>,
    pub where_filters: Vec<WhereFilter>,
    pub dataset: Option<String>,
    /// Subset of columns to sync, if restricted.
    pub columns: Option<Vec<String>>,
    pub row_filter: Option<String>,
    /// Readable only by members of `data-private` (and admins).
    pub private: bool,
    /// The configured source that writes this table, when it is not the pull connectors'
    /// (a push source's generated entry).
    pub source: Option<String>,
    pub column_descriptions: BTreeMap<String, String>,
    /// Declared column types (type names as in Keboola metadata), overriding inference.
    pub column_types: BTreeMap<String, String>,
    /// The file this entry came from.
    pub source_file: PathBuf,
}

/// All table metadata of the data dir, plus the prose for humans.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Descriptions {
    pub tables: Vec<TableMeta>,
    /// Prose between the YAML blocks, per file, in file order.
    pub prose: Vec<(PathBuf, String)>,
}

impl Descriptions {
    /// Metadata for the table `schema.name`: an entry whose folder is `schema` wins over an
    /// entry without a folder.
    pub fn for_table(&self, schema: &str, name: &str) -> Option<&TableMeta> {
        self.tables
            .iter()
            .find(|t| t.name == name && t.folder.as_deref() == Some(schema))
            .or_else(|| {
                self.tables
                    .iter()
                    .find(|t| t.name == name && t.folder.is_none())
            })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    #[serde(default)]
    folder_mapping: BTreeMap<String, String>,
    #[serde(default)]
    tables: Option<Vec<RawTable>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn columns(self) -> Vec<String> {
        match self {
            Self::One(s) => s
                .split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
            Self::Many(v) => v.into_iter().map(|c| c.trim().to_string()).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForeignKey {
    column: String,
    references: String,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    id: String,
    name: String,
    description: Option<String>,
    #[serde(default)]
    primary_key: Option<StringOrList>,
    #[serde(default)]
    sync_strategy: Option<String>,
    #[serde(default)]
    incremental_window_days: Option<u32>,
    #[serde(default)]
    partition_by: Option<String>,
    #[serde(default)]
    partition_granularity: Option<String>,
    #[serde(default)]
    max_history_days: Option<u32>,
    #[serde(default)]
    initial_load_chunk_days: Option<u32>,
    #[serde(default)]
    foreign_keys: Vec<RawForeignKey>,
    #[serde(default)]
    where_filters: Vec<WhereFilter>,
    #[serde(default)]
    folder: Option<String>,
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    row_filter: Option<String>,
    #[serde(default)]
    private: bool,
    #[serde(default)]
    access: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    column_descriptions: BTreeMap<String, String>,
    #[serde(default)]
    column_types: BTreeMap<String, String>,
}

/// The description files of a data dir, in the order they are merged.
pub fn description_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let main = data_dir.join("docs").join("data_description.md");
    if main.is_file() {
        files.push(main);
    }
    if let Ok(entries) = std::fs::read_dir(data_dir.join("docs").join("datasets")) {
        let mut extra: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "md")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !crate::names::is_ignored(n))
            })
            .collect();
        extra.sort();
        files.extend(extra);
    }
    files
}

/// Read and merge every description file of the data dir. `Ok(None)` when there is none.
pub fn load(data_dir: &Path) -> Result<Option<Descriptions>, DescriptionError> {
    let files = description_files(data_dir);
    if files.is_empty() {
        return Ok(None);
    }
    let mut merged = Descriptions::default();
    let mut seen: HashSet<(Option<String>, String)> = HashSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| DescriptionError::new(&file, format!("cannot read: {e}")))?;
        let parsed = parse(&file, &text)?;
        for table in parsed.tables {
            if !seen.insert((table.folder.clone(), table.name.clone())) {
                return Err(DescriptionError::new(
                    &file,
                    format!("table '{}' is described twice", table.name),
                ));
            }
            merged.tables.push(table);
        }
        merged.prose.extend(parsed.prose);
    }
    Ok(Some(merged))
}

/// Parse one description file's text.
pub fn parse(file: &Path, text: &str) -> Result<Descriptions, DescriptionError> {
    let (blocks, prose) = split_blocks(text);
    if blocks.is_empty() {
        return Err(DescriptionError::new(
            file,
            "no ```yaml block found; table metadata must be inside fenced yaml blocks",
        ));
    }
    let mut raw_tables = Vec::new();
    let mut folder_mapping = BTreeMap::new();
    for (line, block) in blocks {
        let raw: RawBlock = yaml_serde::from_str(&block).map_err(|e| {
            DescriptionError::new(file, format!("yaml block starting at line {line}: {e}"))
        })?;
        folder_mapping.extend(raw.folder_mapping);
        raw_tables.extend(raw.tables.unwrap_or_default());
    }
    if raw_tables.is_empty() {
        return Err(DescriptionError::new(file, "no tables are described"));
    }
    let mut tables = Vec::with_capacity(raw_tables.len());
    let mut names = HashSet::new();
    for raw in raw_tables {
        let table = validate(file, raw, &folder_mapping)?;
        if !names.insert((table.folder.clone(), table.name.clone())) {
            return Err(DescriptionError::new(
                file,
                format!("table '{}': duplicate table name", table.name),
            ));
        }
        tables.push(table);
    }
    let prose = prose.trim();
    Ok(Descriptions {
        tables,
        prose: if prose.is_empty() {
            Vec::new()
        } else {
            vec![(file.to_path_buf(), prose.to_string())]
        },
    })
}

/// Fenced yaml blocks (with the line they start on) and the prose around them.
fn split_blocks(text: &str) -> (Vec<(usize, String)>, String) {
    let mut blocks = Vec::new();
    let mut prose = String::new();
    let mut current: Option<(usize, String)> = None;
    for (idx, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        match current.as_mut() {
            Some((_, body)) => {
                if trimmed.starts_with("```") {
                    if let Some(done) = current.take() {
                        blocks.push(done);
                    }
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
            None => {
                let lang = trimmed.strip_prefix("```").map(str::trim);
                if matches!(lang, Some("yaml" | "yml")) {
                    current = Some((idx + 1, String::new()));
                } else {
                    prose.push_str(line);
                    prose.push('\n');
                }
            }
        }
    }
    // An unterminated block still counts: the YAML parser reports what is wrong inside.
    if let Some(open) = current {
        blocks.push(open);
    }
    (blocks, prose)
}

fn validate(
    file: &Path,
    raw: RawTable,
    folder_mapping: &BTreeMap<String, String>,
) -> Result<TableMeta, DescriptionError> {
    let name = raw.name.trim().to_string();
    let err = |msg: String| DescriptionError::new(file, format!("table '{name}': {msg}"));
    if name.is_empty() {
        return Err(DescriptionError::new(
            file,
            format!("table with id '{}' has an empty name", raw.id),
        ));
    }
    let description = raw
        .description
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .ok_or_else(|| err("description is required".into()))?;
    let sync_strategy = match raw.sync_strategy.as_deref().map(str::trim) {
        None => None,
        Some("full_refresh") => Some(SyncStrategy::FullRefresh),
        Some("incremental") => Some(SyncStrategy::Incremental),
        Some("partitioned") => Some(SyncStrategy::Partitioned),
        Some(other) => {
            return Err(err(format!(
                "unknown sync_strategy '{other}' (expected full_refresh, incremental or partitioned)"
            )));
        }
    };
    let partition_granularity = match raw.partition_granularity.as_deref().map(str::trim) {
        None => None,
        Some("day") => Some(PartitionGranularity::Day),
        Some("month") => Some(PartitionGranularity::Month),
        Some("year") => Some(PartitionGranularity::Year),
        Some(other) => {
            return Err(err(format!(
                "unknown partition_granularity '{other}' (expected day, month or year)"
            )));
        }
    };
    if sync_strategy == Some(SyncStrategy::Partitioned) && raw.partition_by.is_none() {
        return Err(err("sync_strategy 'partitioned' needs partition_by".into()));
    }
    let partition_granularity = partition_granularity.or((sync_strategy
        == Some(SyncStrategy::Partitioned)
        || raw.partition_by.is_some())
    .then_some(PartitionGranularity::Month));
    let incremental_window_days = raw
        .incremental_window_days
        .or((sync_strategy == Some(SyncStrategy::Incremental)).then_some(7));
    let mut foreign_keys = Vec::with_capacity(raw.foreign_keys.len());
    for fk in raw.foreign_keys {
        let parts: Vec<&str> = fk.references.split('.').map(str::trim).collect();
        let (schema, table, column) = match parts.as_slice() {
            [t, c] if !t.is_empty() && !c.is_empty() => (None, *t, *c),
            [s, t, c] if !s.is_empty() && !t.is_empty() && !c.is_empty() => (Some(*s), *t, *c),
            _ => {
                return Err(err(format!(
                    "foreign key on '{}': references '{}' must be 'table.column' or 'schema.table.column'",
                    fk.column, fk.references
                )));
            }
        };
        foreign_keys.push(ForeignKey {
            column: fk.column.trim().to_string(),
            references_schema: schema.map(str::to_string),
            references_table: table.to_string(),
            references_column: column.to_string(),
            description: fk.description,
        });
    }
    let private = match raw.access.as_deref().map(str::trim) {
        None => raw.private,
        Some("public") if raw.private => {
            return Err(err("access: public contradicts private: true".into()));
        }
        Some("public") => false,
        Some("private") => true,
        Some(other) => {
            return Err(err(format!(
                "unknown access '{other}' (expected public or private)"
            )));
        }
    };
    let folder = raw.folder.or_else(|| {
        raw.id
            .rsplit_once('.')
            .and_then(|(bucket, _)| folder_mapping.get(bucket).cloned())
    });
    Ok(TableMeta {
        id: raw.id,
        name,
        folder,
        description,
        primary_key: raw
            .primary_key
            .map(StringOrList::columns)
            .unwrap_or_default(),
        sync_strategy,
        incremental_window_days,
        partition_by: raw.partition_by,
        partition_granularity,
        max_history_days: raw.max_history_days,
        initial_load_chunk_days: raw.initial_load_chunk_days,
        foreign_keys,
        where_filters: raw.where_filters,
        dataset: raw.dataset,
        columns: raw.columns,
        row_filter: raw.row_filter,
        private,
        source: raw.source,
        column_descriptions: raw.column_descriptions,
        column_types: raw.column_types,
        source_file: file.to_path_buf(),
    })
}

#[cfg(test)]
mod tests;
