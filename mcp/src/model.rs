//! What a backend tells the tools: the caller's catalog, metrics, query results and knowledge.
//!
//! The same types are written to the laptop (`docs/catalog.json`, by the server's sync) and
//! read back by the offline backend of `dataport mcp`, so an assistant sees one shape online
//! and offline.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A table as the caller may see it (hidden columns and keys into tables they can't read
/// already left out by the backend).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Rows in the table (none for a row-filtered share, whose whole size is not theirs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<u64>,
    /// When its newest data was written (RFC 3339, UTC): its freshness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    pub columns: Vec<ColumnInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub primary_key: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub foreign_keys: Vec<ForeignKeyInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_columns: Vec<String>,
    /// The stored profile in a few figures, when one was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileBrief>,
}

impl TableInfo {
    /// `schema.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Whether `name` (`table` or `schema.table`, any case) names this table.
    pub fn is_named(&self, name: &str) -> bool {
        let name = name.trim().trim_matches('"');
        match name.split_once('.') {
            Some((s, t)) => {
                s.trim_matches('"').eq_ignore_ascii_case(&self.schema)
                    && t.trim_matches('"').eq_ignore_ascii_case(&self.name)
            }
            None => name.eq_ignore_ascii_case(&self.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForeignKeyInfo {
    pub columns: Vec<String>,
    /// The table referenced, `schema.table`.
    pub references: String,
    /// The referenced table's key columns, when it declares one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referenced_columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A profile in a few figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileBrief {
    /// RFC 3339, UTC.
    pub computed_at: String,
    pub row_count: u64,
    pub avg_completeness_pct: f64,
    #[serde(default)]
    pub stale: bool,
    /// Alerts raised by its columns, as one line each (`column: message`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
}

/// A business metric the caller may run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricInfo {
    pub name: String,
    pub description: String,
    /// The table it is computed from, `schema.table`.
    pub table: String,
    /// The aggregate, as SQL.
    pub expression: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_column: Option<String>,
    /// Its default grain (`day` … `year`); none: one total unless a call asks for a grain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

/// What `run_metric` asks for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricCall {
    pub name: String,
    /// `day`, `week`, `month`, `quarter`, `year` or `total`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<String>,
    /// First day counted, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Last day counted, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<usize>,
}

/// A query to run: the SQL and how much of its result to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryCall {
    pub sql: String,
    /// Rows kept in the answer; the rest are counted, not kept.
    pub max_rows: usize,
    /// Bytes of cell text kept in the answer (the rows stop at the first one over it).
    pub max_bytes: usize,
}

/// A query's result as the tools answer it: the first rows, and how many there were.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    pub columns: Vec<ResultColumn>,
    /// The first rows, each cell as JSON (numbers, strings, booleans, null; dates and
    /// timestamps as ISO text).
    pub rows: Vec<Vec<Value>>,
    /// Every row the query returned.
    pub total_rows: u64,
    /// Why fewer rows than `total_rows` are here (the row or byte limit), if they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
    /// The SQL that ran (for a metric: the query generated for it).
    pub sql: String,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A corporate-memory item found by `search_knowledge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeHit {
    pub id: String,
    pub title: String,
    pub content: String,
    pub category: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Votes from the team (up minus down).
    pub score: i64,
}

/// The laptop's copy of what the tools need offline: `docs/catalog.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogDocument {
    /// The server it came from.
    pub server: String,
    pub user: String,
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub tables: Vec<TableInfo>,
    #[serde(default)]
    pub metrics: Vec<MetricInfo>,
}
