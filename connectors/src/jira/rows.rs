//! A fetched issue ([`Bundle`]) as rows of the six tables: `issues`, `comments`,
//! `attachments`, `changelog`, `issuelinks` and `remote_links` (columns in
//! `docs/jira.md`). Timestamps become UTC, arrays JSON text, ADF plain text.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::adf;
use super::config::JiraFields;

/// Everything fetched for one issue: the issue (with `changelog` expanded), every comment and
/// history (paged in), its remote links, the SLA fields read by the SLA account, and where its
/// attachments were stored. Kept as the issue's snapshot under the source's raw area.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    pub issue: Value,
    #[serde(default)]
    pub comments: Vec<Value>,
    #[serde(default)]
    pub histories: Vec<Value>,
    #[serde(default)]
    pub remote_links: Vec<Value>,
    /// The SLA fields as the SLA account sees them (`{field id: value}`), if one is set up.
    #[serde(default)]
    pub sla: Option<Value>,
    /// Attachment id → stored path (relative to the data dir).
    #[serde(default)]
    pub attachments: BTreeMap<String, String>,
}

impl Bundle {
    pub fn key(&self) -> Option<&str> {
        self.issue.get("key").and_then(Value::as_str)
    }
    pub fn id(&self) -> Option<&str> {
        self.issue.get("id").and_then(Value::as_str)
    }
    fn fields(&self) -> &Value {
        self.issue.get("fields").unwrap_or(&Value::Null)
    }
    /// Jira's `updated`, the version of the issue.
    pub fn updated(&self) -> Option<&str> {
        self.fields().get("updated").and_then(Value::as_str)
    }
    /// The created month (UTC), `YYYY-MM`: the partition of all the issue's rows.
    pub fn month(&self) -> Option<String> {
        let created = self.fields().get("created").and_then(Value::as_str)?;
        Some(timestamp(created)?.format("%Y-%m").to_string())
    }
    /// Not done (the SLA poll follows open issues).
    pub fn is_open(&self) -> bool {
        str_at(self.fields(), &["status", "statusCategory", "key"]) != Some("done")
    }
    /// The issue's attachments as listed on the issue.
    pub fn attachment_list(&self) -> &[Value] {
        self.fields()
            .get("attachment")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// The six tables.
pub const TABLES: [&str; 6] = [
    "issues",
    "comments",
    "attachments",
    "changelog",
    "issuelinks",
    "remote_links",
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    Ts,
    Date,
}

const ISSUES: &[(&str, Kind)] = &[
    ("issue_key", Kind::Str),
    ("issue_id", Kind::Str),
    ("issue_url", Kind::Str),
    ("summary", Kind::Str),
    ("description", Kind::Str),
    ("issue_type", Kind::Str),
    ("status", Kind::Str),
    ("status_category", Kind::Str),
    ("priority", Kind::Str),
    ("resolution", Kind::Str),
    ("project_key", Kind::Str),
    ("project_name", Kind::Str),
    ("creator_email", Kind::Str),
    ("creator_name", Kind::Str),
    ("reporter_email", Kind::Str),
    ("reporter_name", Kind::Str),
    ("assignee_email", Kind::Str),
    ("assignee_name", Kind::Str),
    ("created_at", Kind::Ts),
    ("updated_at", Kind::Ts),
    ("resolved_at", Kind::Ts),
    ("due_date", Kind::Date),
    ("labels", Kind::Str),
    ("attachment_count", Kind::Int),
    ("comment_count", Kind::Int),
    ("issuelink_count", Kind::Int),
    ("request_type", Kind::Str),
    ("request_status", Kind::Str),
    ("severity", Kind::Str),
    ("satisfaction", Kind::Int),
    ("first_response_breached", Kind::Bool),
    ("first_response_goal_millis", Kind::Int),
    ("first_response_elapsed_millis", Kind::Int),
    ("time_to_resolution_breached", Kind::Bool),
    ("time_to_resolution_goal_millis", Kind::Int),
    ("time_to_resolution_elapsed_millis", Kind::Int),
    ("_synced_at", Kind::Ts),
    ("_raw_file", Kind::Str),
];

const COMMENTS: &[(&str, Kind)] = &[
    ("comment_id", Kind::Str),
    ("issue_key", Kind::Str),
    ("author_email", Kind::Str),
    ("author_name", Kind::Str),
    ("body", Kind::Str),
    ("created_at", Kind::Ts),
    ("updated_at", Kind::Ts),
    ("update_author_email", Kind::Str),
];

const ATTACHMENTS: &[(&str, Kind)] = &[
    ("attachment_id", Kind::Str),
    ("issue_key", Kind::Str),
    ("filename", Kind::Str),
    ("local_path", Kind::Str),
    ("size_bytes", Kind::Int),
    ("mime_type", Kind::Str),
    ("author_email", Kind::Str),
    ("created_at", Kind::Ts),
    ("content_url", Kind::Str),
    ("thumbnail_url", Kind::Str),
];

const CHANGELOG: &[(&str, Kind)] = &[
    ("change_id", Kind::Str),
    ("issue_key", Kind::Str),
    ("author_email", Kind::Str),
    ("author_name", Kind::Str),
    ("field_name", Kind::Str),
    ("field_type", Kind::Str),
    ("from_value", Kind::Str),
    ("to_value", Kind::Str),
    ("changed_at", Kind::Ts),
];

const ISSUELINKS: &[(&str, Kind)] = &[
    ("issue_key", Kind::Str),
    ("link_id", Kind::Str),
    ("link_type", Kind::Str),
    ("direction", Kind::Str),
    ("linked_issue_key", Kind::Str),
    ("linked_issue_summary", Kind::Str),
    ("linked_issue_status", Kind::Str),
    ("linked_issue_priority", Kind::Str),
];

const REMOTE_LINKS: &[(&str, Kind)] = &[
    ("issue_key", Kind::Str),
    ("remote_link_id", Kind::Str),
    ("url", Kind::Str),
    ("title", Kind::Str),
    ("application_name", Kind::Str),
    ("application_type", Kind::Str),
];

fn columns_of(table: &str) -> &'static [(&'static str, Kind)] {
    match table {
        "issues" => ISSUES,
        "comments" => COMMENTS,
        "attachments" => ATTACHMENTS,
        "changelog" => CHANGELOG,
        "issuelinks" => ISSUELINKS,
        _ => REMOTE_LINKS,
    }
}

/// Columns that identify a row and may never be null.
fn required(column: &str) -> bool {
    matches!(
        column,
        "issue_key" | "comment_id" | "attachment_id" | "change_id" | "link_id" | "remote_link_id"
    )
}

static SCHEMAS: LazyLock<BTreeMap<&'static str, SchemaRef>> = LazyLock::new(|| {
    TABLES
        .iter()
        .map(|t| {
            let fields: Vec<Field> = columns_of(t)
                .iter()
                .map(|(name, kind)| {
                    let data_type = match kind {
                        Kind::Str => DataType::Utf8,
                        Kind::Int => DataType::Int64,
                        Kind::Bool => DataType::Boolean,
                        Kind::Ts => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                        Kind::Date => DataType::Date32,
                    };
                    Field::new(*name, data_type, !required(name))
                })
                .collect();
            (*t, Arc::new(Schema::new(fields)))
        })
        .collect()
});

/// The Arrow schema of one of the six tables.
pub fn schema(table: &str) -> SchemaRef {
    SCHEMAS
        .get(table)
        .cloned()
        .unwrap_or_else(|| Arc::new(Schema::empty()))
}

/// What rows need besides the bundle.
#[derive(Debug, Clone)]
pub struct RowContext<'a> {
    /// The site URL without a trailing slash (for `issue_url`).
    pub site: &'a str,
    pub fields: &'a JiraFields,
    /// When the rows are written (µs since the epoch).
    pub synced_at_us: i64,
    /// The snapshot the rows come from, relative to the data dir.
    pub raw_file: &'a str,
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Str(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    /// µs since the epoch.
    Ts(Option<i64>),
    /// Days since the epoch.
    Date(Option<i32>),
}

/// Rows of one table, cell by cell.
#[derive(Debug, Default)]
pub struct Rows {
    rows: Vec<Vec<Cell>>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    fn extend(&mut self, other: Rows) {
        self.rows.extend(other.rows);
    }
}

/// Rows of the six tables, by table name.
#[derive(Debug, Default)]
pub struct TableRows {
    pub tables: BTreeMap<&'static str, Rows>,
}

impl TableRows {
    /// Add the rows of one issue.
    pub fn add(&mut self, bundle: &Bundle, ctx: &RowContext<'_>) {
        let Some(key) = bundle.key() else {
            return;
        };
        let parts = [
            ("issues", issue_rows(bundle, key, ctx)),
            ("comments", comment_rows(bundle, key)),
            ("attachments", attachment_rows(bundle, key)),
            ("changelog", changelog_rows(bundle, key)),
            ("issuelinks", link_rows(bundle, key)),
            ("remote_links", remote_link_rows(bundle, key)),
        ];
        for (table, rows) in parts {
            self.tables.entry(table).or_default().extend(rows);
        }
    }

    /// The rows of `table` as one batch of its schema.
    pub fn batch(&self, table: &str) -> Result<RecordBatch, arrow::error::ArrowError> {
        let schema = schema(table);
        let empty = Rows::default();
        let rows = self.tables.get(table).unwrap_or(&empty);
        let columns: Vec<ArrayRef> = (0..schema.fields().len())
            .map(|i| column(rows, i, columns_of(table)[i].1))
            .collect();
        RecordBatch::try_new(schema, columns)
    }
}

fn column(rows: &Rows, i: usize, kind: Kind) -> ArrayRef {
    let cells = rows.rows.iter().map(|r| &r[i]);
    match kind {
        Kind::Str => {
            let mut b = StringBuilder::new();
            for c in cells {
                b.append_option(match c {
                    Cell::Str(v) => v.as_deref(),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        Kind::Int => {
            let mut b = Int64Builder::new();
            for c in cells {
                b.append_option(match c {
                    Cell::Int(v) => *v,
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        Kind::Bool => {
            let mut b = BooleanBuilder::new();
            for c in cells {
                b.append_option(match c {
                    Cell::Bool(v) => *v,
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        Kind::Ts => {
            let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
            for c in cells {
                b.append_option(match c {
                    Cell::Ts(v) => *v,
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        Kind::Date => {
            let mut b = Date32Builder::new();
            for c in cells {
                b.append_option(match c {
                    Cell::Date(v) => *v,
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn s(v: &Value, path: &[&str]) -> Cell {
    Cell::Str(str_at(v, path).map(str::to_string))
}

/// A string or a number as text (Jira sends some ids as numbers).
fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Jira's `2024-03-05T14:22:10.123+0100` (or RFC 3339) in UTC.
pub fn timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn ts(v: &Value, path: &[&str]) -> Cell {
    Cell::Ts(
        str_at(v, path)
            .and_then(timestamp)
            .map(|t| t.timestamp_micros()),
    )
}

fn user(v: &Value, field: &str) -> [Cell; 2] {
    [
        s(v, &[field, "emailAddress"]),
        s(v, &[field, "displayName"]),
    ]
}

/// `{ongoingCycle?, completedCycles[]}` → (breached, goal ms, elapsed ms) of the ongoing
/// cycle, else of the last completed one.
fn sla(value: Option<&Value>) -> [Cell; 3] {
    let cycle = value.and_then(|v| {
        v.get("ongoingCycle")
            .filter(|c| c.is_object())
            .or_else(|| v.get("completedCycles")?.as_array()?.last())
    });
    let int = |path: &[&str]| {
        let mut cur = cycle?;
        for p in path {
            cur = cur.get(p)?;
        }
        cur.as_i64()
    };
    [
        Cell::Bool(
            cycle
                .and_then(|c| c.get("breached"))
                .and_then(Value::as_bool),
        ),
        Cell::Int(int(&["goalDuration", "millis"])),
        Cell::Int(int(&["elapsedTime", "millis"])),
    ]
}

fn custom<'a>(fields: &'a Value, id: &Option<String>) -> Option<&'a Value> {
    fields.get(id.as_deref()?).filter(|v| !v.is_null())
}

fn count(v: Option<&Value>) -> Cell {
    Cell::Int(Some(
        v.and_then(Value::as_array).map_or(0, |a| a.len() as i64),
    ))
}

fn issue_rows(b: &Bundle, key: &str, ctx: &RowContext<'_>) -> Rows {
    let f = b.fields();
    let ids = ctx.fields;
    let labels = f
        .get("labels")
        .filter(|l| l.is_array())
        .map_or_else(|| "[]".to_string(), Value::to_string);
    let request = custom(f, &ids.request_type);
    let severity = custom(f, &ids.severity).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        v => v
            .get("value")
            .or_else(|| v.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string),
    });
    let satisfaction = custom(f, &ids.satisfaction).and_then(|v| match v {
        Value::Number(n) => n.as_i64(),
        v => v.get("rating").and_then(Value::as_i64),
    });
    // SLA fields come from the SLA account when there is one, else from the issue itself.
    let sla_fields = b.sla.as_ref().unwrap_or(f);
    let due = str_at(f, &["duedate"])
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .map(|d| (d - NaiveDate::default()).num_days() as i32);
    let mut row = vec![
        Cell::Str(Some(key.to_string())),
        Cell::Str(b.id().map(str::to_string)),
        Cell::Str(Some(format!("{}/browse/{key}", ctx.site))),
        s(f, &["summary"]),
        Cell::Str(adf::to_text(f.get("description").unwrap_or(&Value::Null))),
        s(f, &["issuetype", "name"]),
        s(f, &["status", "name"]),
        s(f, &["status", "statusCategory", "name"]),
        s(f, &["priority", "name"]),
        s(f, &["resolution", "name"]),
        s(f, &["project", "key"]),
        s(f, &["project", "name"]),
    ];
    row.extend(user(f, "creator"));
    row.extend(user(f, "reporter"));
    row.extend(user(f, "assignee"));
    row.extend([
        ts(f, &["created"]),
        ts(f, &["updated"]),
        ts(f, &["resolutiondate"]),
        Cell::Date(due),
        Cell::Str(Some(labels)),
        count(f.get("attachment")),
        Cell::Int(Some(b.comments.len() as i64)),
        count(f.get("issuelinks")),
        Cell::Str(request.and_then(|r| str_at(r, &["requestType", "name"]).map(str::to_string))),
        Cell::Str(
            request.and_then(|r| str_at(r, &["currentStatus", "status"]).map(str::to_string)),
        ),
        Cell::Str(severity),
        Cell::Int(satisfaction),
    ]);
    row.extend(sla(custom(sla_fields, &ids.first_response)));
    row.extend(sla(custom(sla_fields, &ids.time_to_resolution)));
    row.extend([
        Cell::Ts(Some(ctx.synced_at_us)),
        Cell::Str(Some(ctx.raw_file.to_string())),
    ]);
    Rows { rows: vec![row] }
}

fn comment_rows(b: &Bundle, key: &str) -> Rows {
    let rows = b
        .comments
        .iter()
        .filter_map(|c| {
            Some(vec![
                Cell::Str(Some(id_text(c.get("id"))?)),
                Cell::Str(Some(key.to_string())),
                s(c, &["author", "emailAddress"]),
                s(c, &["author", "displayName"]),
                Cell::Str(adf::to_text(c.get("body").unwrap_or(&Value::Null))),
                ts(c, &["created"]),
                ts(c, &["updated"]),
                s(c, &["updateAuthor", "emailAddress"]),
            ])
        })
        .collect();
    Rows { rows }
}

fn attachment_rows(b: &Bundle, key: &str) -> Rows {
    let rows = b
        .attachment_list()
        .iter()
        .filter_map(|a| {
            let id = id_text(a.get("id"))?;
            Some(vec![
                Cell::Str(Some(id.clone())),
                Cell::Str(Some(key.to_string())),
                s(a, &["filename"]),
                Cell::Str(b.attachments.get(&id).cloned()),
                Cell::Int(a.get("size").and_then(Value::as_i64)),
                s(a, &["mimeType"]),
                s(a, &["author", "emailAddress"]),
                ts(a, &["created"]),
                s(a, &["content"]),
                s(a, &["thumbnail"]),
            ])
        })
        .collect();
    Rows { rows }
}

fn changelog_rows(b: &Bundle, key: &str) -> Rows {
    let mut rows = Vec::new();
    for h in &b.histories {
        let Some(id) = id_text(h.get("id")) else {
            continue;
        };
        let items = h.get("items").and_then(Value::as_array);
        for item in items.map(Vec::as_slice).unwrap_or(&[]) {
            let value = |text: &str, raw: &str| {
                Cell::Str(
                    str_at(item, &[text])
                        .or_else(|| str_at(item, &[raw]))
                        .map(str::to_string),
                )
            };
            rows.push(vec![
                Cell::Str(Some(id.clone())),
                Cell::Str(Some(key.to_string())),
                s(h, &["author", "emailAddress"]),
                s(h, &["author", "displayName"]),
                s(item, &["field"]),
                s(item, &["fieldtype"]),
                value("fromString", "from"),
                value("toString", "to"),
                ts(h, &["created"]),
            ]);
        }
    }
    Rows { rows }
}

fn link_rows(b: &Bundle, key: &str) -> Rows {
    let links = b.fields().get("issuelinks").and_then(Value::as_array);
    let rows = links
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|l| {
            let (direction, other) = match l.get("inwardIssue") {
                Some(i) if i.is_object() => ("inward", i),
                _ => ("outward", l.get("outwardIssue")?),
            };
            Some(vec![
                Cell::Str(Some(key.to_string())),
                Cell::Str(Some(id_text(l.get("id"))?)),
                s(l, &["type", "name"]),
                Cell::Str(Some(direction.to_string())),
                s(other, &["key"]),
                s(other, &["fields", "summary"]),
                s(other, &["fields", "status", "name"]),
                s(other, &["fields", "priority", "name"]),
            ])
        })
        .collect();
    Rows { rows }
}

fn remote_link_rows(b: &Bundle, key: &str) -> Rows {
    let rows = b
        .remote_links
        .iter()
        .filter_map(|r| {
            Some(vec![
                Cell::Str(Some(key.to_string())),
                Cell::Str(Some(id_text(r.get("id"))?)),
                s(r, &["object", "url"]),
                s(r, &["object", "title"]),
                s(r, &["application", "name"]),
                s(r, &["application", "type"]),
            ])
        })
        .collect();
    Rows { rows }
}

#[cfg(test)]
mod tests;
