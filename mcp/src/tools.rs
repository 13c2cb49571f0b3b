//! The tools: their names, descriptions and input schemas (written for a model to choose and
//! fill well), and each call from arguments to an answer.
//!
//! A call's answer is MCP's `CallToolResult`: the text a model reads (compact tables,
//! Markdown), the same data as `structuredContent`, and `isError: true` when the tool ran but
//! failed, with a message that says what to fix. Arguments that do not fit the schema, an
//! unknown tool and limits asked over their maximum are JSON-RPC errors instead.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, ToolError};
use crate::jsonrpc::RpcError;
use crate::model::{MetricCall, QueryCall, QueryResult, TableInfo};
use crate::{profile, render, search};

/// How much of a result a tool answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows of a result shown when the call does not say.
    pub default_rows: usize,
    /// Most rows a call may ask for.
    pub max_rows: usize,
    /// Most bytes of cell text in one answer.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_rows: 50,
            max_rows: 500,
            max_bytes: 64 << 10,
        }
    }
}

/// The names of the tools, in the order they are listed.
pub const TOOLS: [&str; 9] = [
    "list_tables",
    "describe_table",
    "profile",
    "search_catalog",
    "run_query",
    "explain_query",
    "list_metrics",
    "run_metric",
    "search_knowledge",
];

/// What the transport records of a call (metrics, audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub tool: String,
    /// `ok`, or a [`ToolError::outcome`], or `invalid` for arguments refused.
    pub outcome: String,
    /// Rows (or items) answered.
    pub rows: u64,
    /// The SQL that ran, for the query tools.
    pub sql: Option<String>,
}

fn read_only() -> Value {
    json!({ "readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false })
}

fn tool(name: &str, title: &str, description: String, schema: Value) -> Value {
    json!({
        "name": name,
        "title": title,
        "description": description,
        "inputSchema": schema,
        "annotations": read_only(),
    })
}

/// `tools/list`'s tools.
pub fn definitions(limits: &Limits, dialect: &str, knowledge: bool) -> Vec<Value> {
    let table_arg = json!({
        "type": "string",
        "description": "The table as schema.table (for example tpch.orders); a bare table name works when it is unique.",
        "minLength": 1,
        "maxLength": 200,
    });
    let sql_arg = json!({
        "type": "string",
        "description": format!("One read-only SQL statement (SELECT, WITH … SELECT, VALUES, SHOW, DESCRIBE, EXPLAIN) in {dialect}."),
        "minLength": 1,
        "maxLength": 100000,
    });
    let mut tools = vec![
        tool(
            "list_tables",
            "List tables",
            "List every table you may query, with its description, row count, column count and when it was last updated (freshness), and the business metrics you may run. Start here, or with search_catalog when you know what you look for.".into(),
            json!({
                "type": "object",
                "properties": {
                    "schema": {"type": "string", "description": "Only tables of this schema."}
                },
                "additionalProperties": false,
            }),
        ),
        tool(
            "describe_table",
            "Describe a table",
            "Describe one table before querying it: columns with types and descriptions, primary key, foreign keys and the tables that refer to it (how to join), business metrics computed from it, and the profile's highlights and alerts.".into(),
            json!({
                "type": "object",
                "properties": {"table": table_arg},
                "required": ["table"],
                "additionalProperties": false,
            }),
        ),
        tool(
            "profile",
            "Profile a table",
            "The table's stored statistical profile, trimmed: per column completeness, distinct counts, min/max/mean, date ranges and most common values, plus the table's alerts (nulls, constant or skewed columns, duplicates). Use it to pick filters and spot data quality problems.".into(),
            json!({
                "type": "object",
                "properties": {"table": table_arg},
                "required": ["table"],
                "additionalProperties": false,
            }),
        ),
        tool(
            "search_catalog",
            "Search the catalog",
            "Find the tables, columns and metrics that match words of a question (names and descriptions), best first.".into(),
            json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Words or a question, for example 'customers by nation'.", "minLength": 1, "maxLength": 1000},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}
                },
                "required": ["query"],
                "additionalProperties": false,
            }),
        ),
        tool(
            "run_query",
            "Run a SQL query",
            format!(
                "Run one read-only SQL query in {dialect} and get the first rows as a table plus the total row count. Aggregate in SQL (GROUP BY, ORDER BY … LIMIT) rather than fetching many rows: at most {} rows are shown ({} by default) and {} KiB of text. Statements that change data and file or URL table functions are refused. On an error, read the message, fix the SQL and call again.",
                limits.max_rows,
                limits.default_rows,
                limits.max_bytes >> 10
            ),
            json!({
                "type": "object",
                "properties": {
                    "sql": sql_arg,
                    "max_rows": {"type": "integer", "minimum": 1, "maximum": limits.max_rows, "default": limits.default_rows, "description": "Rows to show; the rest are only counted."}
                },
                "required": ["sql"],
                "additionalProperties": false,
            }),
        ),
        tool(
            "explain_query",
            "Explain a SQL query",
            "Show how a read-only SQL query would run (its plan), without running it: to check that it parses, which tables and filters it uses, and whether a join or scan is expensive.".into(),
            json!({
                "type": "object",
                "properties": {"sql": sql_arg},
                "required": ["sql"],
                "additionalProperties": false,
            }),
        ),
        tool(
            "list_metrics",
            "List business metrics",
            "List the team's business metrics you may run: each one's definition (aggregate, filter, table), time column, default grain and dimensions. Prefer a metric to your own SQL when one answers the question: it is the agreed definition.".into(),
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
        ),
        tool(
            "run_metric",
            "Run a business metric",
            "Compute a business metric by its agreed definition, optionally by period (grain), by dimensions and between dates.".into(),
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "The metric's name, from list_metrics.", "minLength": 1},
                    "grain": {"type": "string", "enum": ["day", "week", "month", "quarter", "year", "total"], "description": "Group by this period of the metric's time column; 'total' for one value."},
                    "dimensions": {"type": "array", "items": {"type": "string"}, "description": "Group by these of the metric's dimensions."},
                    "from": {"type": "string", "description": "First day counted, YYYY-MM-DD (inclusive)."},
                    "to": {"type": "string", "description": "Last day counted, YYYY-MM-DD (inclusive)."},
                    "max_rows": {"type": "integer", "minimum": 1, "maximum": limits.max_rows, "default": limits.default_rows}
                },
                "required": ["name"],
                "additionalProperties": false,
            }),
        ),
    ];
    if knowledge {
        tools.push(tool(
            "search_knowledge",
            "Search the team's knowledge",
            "Search the team's corporate memory: agreed definitions, business rules, known data problems and how-tos that analysts wrote down, ranked by relevance and votes. Check it before answering a business question: it says how the team computes things.".into(),
            json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Words to look for.", "minLength": 1, "maxLength": 1000},
                    "category": {"type": "string", "description": "Only this category (data_analysis, api_notes, troubleshooting, business_logic, workflow, best_practices, configuration)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 30, "default": 10}
                },
                "required": ["query"],
                "additionalProperties": false,
            }),
        ));
    }
    tools
}

fn args<T: DeserializeOwned>(tool: &str, arguments: Option<Value>) -> Result<T, RpcError> {
    let value = arguments.unwrap_or_else(|| json!({}));
    serde_json::from_value(value).map_err(|e| {
        RpcError::invalid_params(format!(
            "invalid arguments for {tool}: {e}; see the tool's inputSchema in tools/list"
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaArgs {
    schema: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableArgs {
    table: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    query: String,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryArgs {
    sql: String,
    max_rows: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlArgs {
    sql: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KnowledgeArgs {
    query: String,
    category: Option<String>,
    limit: Option<usize>,
}

/// A tool's answer before it is wrapped: text, structured data and the rows it counts.
struct Answer {
    text: String,
    structured: Value,
    rows: u64,
    sql: Option<String>,
}

fn rows_limit(limits: &Limits, asked: Option<usize>) -> Result<usize, RpcError> {
    match asked {
        None => Ok(limits.default_rows),
        Some(0) => Err(RpcError::invalid_params("max_rows must be at least 1")),
        Some(n) if n > limits.max_rows => Err(RpcError::invalid_params(format!(
            "max_rows may be at most {} (asked {n}): aggregate or filter in SQL (GROUP BY, WHERE, ORDER BY … LIMIT) so that fewer rows answer the question",
            limits.max_rows
        ))),
        Some(n) => Ok(n),
    }
}

/// The table `name` names among `tables`, or an error that lists near names.
pub fn find_table<'a>(tables: &'a [TableInfo], name: &str) -> Result<&'a TableInfo, ToolError> {
    let found: Vec<&TableInfo> = tables.iter().filter(|t| t.is_named(name)).collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => {
            let wanted = name.rsplit('.').next().unwrap_or(name).to_lowercase();
            let near: Vec<String> = tables
                .iter()
                .filter(|t| {
                    let n = t.name.to_lowercase();
                    n.contains(&wanted) || wanted.contains(&n)
                })
                .map(TableInfo::qualified)
                .take(5)
                .collect();
            let hint = if near.is_empty() {
                "call list_tables or search_catalog to see the tables you may query".to_string()
            } else {
                format!("did you mean {}?", near.join(", "))
            };
            Err(ToolError::not_found(format!(
                "no table '{name}' among the tables you may query; {hint}"
            )))
        }
        many => Err(ToolError::input(format!(
            "'{name}' names more than one table ({}); give it as schema.table",
            many.iter()
                .map(|t| t.qualified())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn query_answer(result: QueryResult) -> Answer {
    Answer {
        text: render::result_table(&result),
        rows: result.total_rows,
        sql: Some(result.sql.clone()),
        structured: serde_json::to_value(&result).unwrap_or(Value::Null),
    }
}

async fn answer(
    backend: &dyn Backend,
    limits: &Limits,
    tool: &str,
    arguments: Option<Value>,
    cancel: CancellationToken,
) -> Result<Result<Answer, ToolError>, RpcError> {
    Ok(match tool {
        "list_tables" => {
            let a: SchemaArgs = args(tool, arguments)?;
            async {
                let mut tables = backend.tables().await?;
                if let Some(s) = &a.schema {
                    tables.retain(|t| t.schema.eq_ignore_ascii_case(s));
                }
                let metrics = backend.metrics().await.unwrap_or_default();
                let mut text = render::table_list(&tables);
                if !metrics.is_empty() {
                    text.push_str("\nBusiness metrics (run_metric):\n");
                    for m in &metrics {
                        text.push_str(&format!("- {}\n", render::metric_line(m)));
                    }
                }
                let listed: Vec<Value> = tables
                    .iter()
                    .map(|t| {
                        json!({
                            "table": t.qualified(),
                            "description": t.description,
                            "row_count": t.row_count,
                            "column_count": t.columns.len(),
                            "updated_at": t.updated_at,
                        })
                    })
                    .collect();
                Ok(Answer {
                    rows: tables.len() as u64,
                    text,
                    structured: json!({"tables": listed, "metrics": metrics.iter().map(|m| &m.name).collect::<Vec<_>>()}),
                    sql: None,
                })
            }
            .await
        }
        "describe_table" => {
            let a: TableArgs = args(tool, arguments)?;
            async {
                let tables = backend.tables().await?;
                let table = find_table(&tables, &a.table)?;
                let metrics = backend.metrics().await.unwrap_or_default();
                let profile = match &table.profile {
                    Some(_) => backend
                        .profile(&table.qualified())
                        .await
                        .ok()
                        .map(|p| profile::trim(&p)),
                    None => None,
                };
                let text = render::table_markdown(table, &tables, &metrics, profile.as_ref());
                let referenced_by: Vec<Value> = render::referenced_by(table, &tables)
                    .into_iter()
                    .map(|(t, c)| json!({"table": t.qualified(), "columns": c}))
                    .collect();
                let on_table: Vec<&str> = metrics
                    .iter()
                    .filter(|m| m.table.eq_ignore_ascii_case(&table.qualified()))
                    .map(|m| m.name.as_str())
                    .collect();
                let mut structured = serde_json::to_value(table).unwrap_or(Value::Null);
                if let Value::Object(o) = &mut structured {
                    o.insert("referenced_by".into(), Value::Array(referenced_by));
                    o.insert("metrics".into(), json!(on_table));
                }
                Ok(Answer {
                    rows: table.columns.len() as u64,
                    text,
                    structured,
                    sql: None,
                })
            }
            .await
        }
        "profile" => {
            let a: TableArgs = args(tool, arguments)?;
            async {
                let tables = backend.tables().await?;
                let table = find_table(&tables, &a.table)?;
                let full = backend.profile(&table.qualified()).await?;
                let trimmed = profile::trim(&full);
                let mut text = format!("Profile of {}: ", table.qualified());
                text.push_str(&profile::highlights(&full));
                text.push_str("\nColumns:\n");
                for c in trimmed
                    .get("columns")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                    let kind = c.get("data_type").and_then(Value::as_str).unwrap_or("");
                    text.push_str(&format!(
                        "- {name} ({kind}): {}\n",
                        profile::column_summary(c).unwrap_or_default()
                    ));
                }
                Ok(Answer {
                    rows: trimmed
                        .get("columns")
                        .and_then(Value::as_array)
                        .map_or(0, |c| c.len() as u64),
                    text,
                    structured: trimmed,
                    sql: None,
                })
            }
            .await
        }
        "search_catalog" => {
            let a: SearchArgs = args(tool, arguments)?;
            let limit = a.limit.unwrap_or(10).clamp(1, 50);
            async {
                let tables = backend.tables().await?;
                let metrics = backend.metrics().await.unwrap_or_default();
                let hits = search::search(&a.query, &tables, &metrics, limit);
                let text = if hits.is_empty() {
                    "Nothing matches; call list_tables to see every table you may query."
                        .to_string()
                } else {
                    hits.iter()
                        .map(|h| {
                            let mut line = format!("- {}", h.table);
                            if let Some(d) = &h.description {
                                line.push_str(&format!(": {}", d.lines().next().unwrap_or("")));
                            }
                            if !h.columns.is_empty() {
                                line.push_str(&format!(" [columns: {}]", h.columns.join(", ")));
                            }
                            if !h.metrics.is_empty() {
                                line.push_str(&format!(" [metrics: {}]", h.metrics.join(", ")));
                            }
                            line + "\n"
                        })
                        .collect()
                };
                Ok(Answer {
                    rows: hits.len() as u64,
                    text,
                    structured: json!({"results": hits}),
                    sql: None,
                })
            }
            .await
        }
        "run_query" => {
            let a: QueryArgs = args(tool, arguments)?;
            let max_rows = rows_limit(limits, a.max_rows)?;
            let call = QueryCall {
                sql: a.sql,
                max_rows,
                max_bytes: limits.max_bytes,
            };
            backend.run_query(call, cancel).await.map(query_answer)
        }
        "explain_query" => {
            let a: SqlArgs = args(tool, arguments)?;
            let sql = a.sql.clone();
            backend
                .explain_query(&a.sql, cancel)
                .await
                .map(|plan| Answer {
                    rows: plan.lines().count() as u64,
                    structured: json!({"plan": plan}),
                    text: plan,
                    sql: Some(sql),
                })
        }
        "list_metrics" => {
            let _: NoArgs = args(tool, arguments)?;
            backend.metrics().await.map(|metrics| Answer {
                rows: metrics.len() as u64,
                text: if metrics.is_empty() {
                    "No business metrics are defined on tables you may read.".into()
                } else {
                    metrics
                        .iter()
                        .map(|m| format!("- {}\n", render::metric_line(m)))
                        .collect()
                },
                structured: json!({"metrics": metrics}),
                sql: None,
            })
        }
        "run_metric" => {
            let call: MetricCall = args(tool, arguments)?;
            let max_rows = rows_limit(limits, call.max_rows)?;
            backend
                .run_metric(call, max_rows, limits.max_bytes, cancel)
                .await
                .map(query_answer)
        }
        "search_knowledge" => {
            let a: KnowledgeArgs = args(tool, arguments)?;
            let limit = a.limit.unwrap_or(10).clamp(1, 30);
            backend
                .search_knowledge(&a.query, a.category.as_deref(), limit)
                .await
                .map(|hits| Answer {
                    rows: hits.len() as u64,
                    text: render::knowledge_list(&hits),
                    structured: json!({"items": hits}),
                    sql: None,
                })
        }
        other => {
            return Err(RpcError::invalid_params(format!(
                "unknown tool '{other}': the tools are {}",
                TOOLS.join(", ")
            )));
        }
    })
}

/// Calls `tool` with `arguments`: the `CallToolResult`, and what to record of the call.
pub async fn call(
    backend: &dyn Backend,
    limits: &Limits,
    tool: &str,
    arguments: Option<Value>,
    cancel: CancellationToken,
) -> (Result<Value, RpcError>, CallInfo) {
    let mut info = CallInfo {
        tool: if TOOLS.contains(&tool) {
            tool.to_string()
        } else {
            "unknown".into()
        },
        outcome: "ok".into(),
        rows: 0,
        sql: arguments
            .as_ref()
            .and_then(|a| a.get("sql"))
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let answered = tokio::select! {
        biased;
        () = cancel.cancelled() => Ok(Err(ToolError::Cancelled)),
        a = answer(backend, limits, tool, arguments, cancel.clone()) => a,
    };
    let notice = backend.notice();
    let result = match answered {
        Err(e) => {
            info.outcome = "invalid".into();
            Err(e)
        }
        Ok(Err(ToolError::Cancelled)) => {
            info.outcome = "cancelled".into();
            Err(RpcError::cancelled())
        }
        Ok(Err(e)) => {
            info.outcome = e.outcome().into();
            let mut text = e.to_string();
            if let Some(n) = &notice {
                text = format!("{n}\n\n{text}");
            }
            Ok(json!({
                "content": [{"type": "text", "text": text}],
                "isError": true,
            }))
        }
        Ok(Ok(answer)) => {
            info.rows = answer.rows;
            if answer.sql.is_some() {
                info.sql = answer.sql;
            }
            let mut text = answer.text;
            let mut structured = answer.structured;
            if let Some(n) = &notice {
                text = format!("{n}\n\n{text}");
                if let Value::Object(o) = &mut structured {
                    o.insert("notice".into(), json!(n));
                }
            }
            Ok(json!({
                "content": [{"type": "text", "text": text}],
                "structuredContent": structured,
                "isError": false,
            }))
        }
    };
    (result, info)
}
