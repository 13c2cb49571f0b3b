//! [`ServerBackend`]: the MCP tools' answers from the engine, as one caller — the same
//! catalog view, grants, read-only policy, limits and audit as every other surface.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use dataport_common::{ErrorKind, HasKind as _};
use dataport_engine::{EngineError, Principal, QueryRequest, RequestContext, Surface};
use dataport_mcp::{
    Backend, KnowledgeHit, MetricCall, MetricInfo, QueryCall, QueryResult, ResultColumn, TableInfo,
    ToolError,
};
use futures::StreamExt as _;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// One tool call's backend: the caller, the request and the tool (for the audit log).
pub(crate) struct ServerBackend {
    pub(crate) state: AppState,
    pub(crate) principal: Principal,
    pub(crate) request_id: String,
    pub(crate) tool: String,
    /// Set once a query reached the engine, which then wrote the call's audit entry.
    pub(crate) audited: Arc<AtomicBool>,
}

impl ServerBackend {
    fn context(&self) -> RequestContext {
        RequestContext::new(self.principal.clone(), Surface::Mcp, &self.request_id)
            .with_tool(&self.tool)
    }

    /// Runs `sql` for the caller, keeping `max_rows` rows and `max_bytes` of text.
    async fn query(
        &self,
        sql: String,
        max_rows: usize,
        max_bytes: usize,
        cancel: CancellationToken,
    ) -> Result<QueryResult, ToolError> {
        let started = Instant::now();
        let ctx = self.context();
        self.audited.store(true, Ordering::Relaxed);
        let request = QueryRequest::new(sql.clone());
        let mut stream = tokio::select! {
            () = cancel.cancelled() => return Err(ToolError::Cancelled),
            s = self.state.engine.execute(request, &ctx) => s.map_err(|e| tool_error(&e))?,
        };
        let schema = stream.schema();
        let columns: Vec<ResultColumn> = schema
            .fields()
            .iter()
            .map(|f| ResultColumn {
                name: f.name().clone(),
                data_type: dataport_engine::wire::client_type(f.data_type()).to_string(),
            })
            .collect();
        let mut rows: Vec<Vec<Value>> = Vec::new();
        let mut total: u64 = 0;
        let mut bytes = 0usize;
        let mut truncated: Option<String> = None;
        loop {
            let next = tokio::select! {
                // Dropping the stream cancels the query (recorded as cancelled).
                () = cancel.cancelled() => return Err(ToolError::Cancelled),
                n = stream.next() => n,
            };
            let Some(batch) = next else { break };
            let batch = batch.map_err(|e| tool_error(&e))?;
            total += batch.num_rows() as u64;
            if truncated.is_none() {
                let kept = keep_rows(
                    &batch,
                    max_rows - rows.len().min(max_rows),
                    max_bytes,
                    &mut bytes,
                )
                .map_err(|e| ToolError::internal(format!("cannot read the result: {e}")))?;
                rows.extend(kept.rows);
                if kept.over_bytes {
                    truncated = Some(format!(
                        "answers are limited to {} KiB of text; select fewer or shorter columns, or aggregate",
                        max_bytes >> 10
                    ));
                } else if rows.len() >= max_rows && total > rows.len() as u64 {
                    truncated = Some(format!(
                        "max_rows is {max_rows}; aggregate or add ORDER BY … LIMIT to see the rows that matter"
                    ));
                }
            }
        }
        if truncated.is_none() && total > rows.len() as u64 {
            truncated = Some(format!(
                "max_rows is {max_rows}; aggregate or add ORDER BY … LIMIT to see the rows that matter"
            ));
        }
        Ok(QueryResult {
            columns,
            rows,
            total_rows: total,
            truncated,
            sql,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }
}

struct Kept {
    rows: Vec<Vec<Value>>,
    over_bytes: bool,
}

/// The first `max_rows` rows of `batch` as JSON cells, while `bytes` (cell text so far) stays
/// within `max_bytes`.
fn keep_rows(
    batch: &RecordBatch,
    max_rows: usize,
    max_bytes: usize,
    bytes: &mut usize,
) -> Result<Kept, arrow::error::ArrowError> {
    let options = FormatOptions::default().with_null("");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rows = Vec::new();
    for row in 0..batch.num_rows().min(max_rows) {
        let mut cells = Vec::with_capacity(formatters.len());
        let mut size = 0;
        for (column, formatter) in batch.columns().iter().zip(&formatters) {
            if column.is_null(row) {
                cells.push(Value::Null);
                size += 4;
                continue;
            }
            let text = formatter.value(row).to_string();
            size += text.len();
            cells.push(cell(column.data_type(), text));
        }
        if *bytes + size > max_bytes {
            return Ok(Kept {
                rows,
                over_bytes: true,
            });
        }
        *bytes += size;
        rows.push(cells);
    }
    Ok(Kept {
        rows,
        over_bytes: false,
    })
}

/// A cell as JSON: integers and finite floats as numbers, booleans as booleans, everything
/// else (decimals, dates, text) as its text.
fn cell(data_type: &DataType, text: String) -> Value {
    use DataType::*;
    match data_type {
        Int8 | Int16 | Int32 | Int64 => {
            text.parse::<i64>().map_or(Value::String(text), Value::from)
        }
        UInt8 | UInt16 | UInt32 | UInt64 => {
            text.parse::<u64>().map_or(Value::String(text), Value::from)
        }
        Float16 | Float32 | Float64 => match text.parse::<f64>() {
            Ok(f) if f.is_finite() => {
                serde_json::Number::from_f64(f).map_or(Value::String(text), Value::Number)
            }
            _ => Value::String(text),
        },
        Boolean => Value::Bool(text == "true"),
        _ => Value::String(text),
    }
}

/// What the model reads when the engine refuses or fails: the engine's message, and what to
/// do about it.
pub(crate) fn tool_error(e: &EngineError) -> ToolError {
    let message = e.to_string();
    match e.kind() {
        ErrorKind::NotFound => ToolError::not_found(format!(
            "{message}. Only the tables listed by list_tables exist for you; check the name with search_catalog"
        )),
        ErrorKind::InvalidArgument => ToolError::input(format!(
            "{message}. Fix the SQL (describe_table shows the columns and their types) and call again"
        )),
        ErrorKind::PermissionDenied => ToolError::input(format!(
            "{message}. Only one read-only query (SELECT, WITH, VALUES, SHOW, DESCRIBE, EXPLAIN) is allowed, without file or URL table functions"
        )),
        ErrorKind::DeadlineExceeded | ErrorKind::ResourceExhausted => ToolError::limit(message),
        ErrorKind::Cancelled => ToolError::Cancelled,
        _ => ToolError::internal(message),
    }
}

#[async_trait::async_trait]
impl Backend for ServerBackend {
    async fn tables(&self) -> Result<Vec<TableInfo>, ToolError> {
        Ok(super::catalog::tables(
            &self.state,
            &self.principal,
            &self.request_id,
        ))
    }

    async fn metrics(&self) -> Result<Vec<MetricInfo>, ToolError> {
        Ok(super::catalog::metrics(
            &self.state,
            &self.principal,
            &self.request_id,
        ))
    }

    async fn profile(&self, table: &str) -> Result<Value, ToolError> {
        let view = self.state.engine.catalog_view(&self.context());
        let (schema, name) = table.split_once('.').unwrap_or(("", table));
        let schema = (!schema.is_empty()).then_some(schema);
        let t = view
            .resolve(schema, name)
            .map_err(|e| tool_error(&EngineError::from(e)))?;
        let profile = self
            .state
            .profiler
            .for_caller(&view, &t)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => {
                    ToolError::not_found(format!("{e}; the profiler has not profiled {table} yet"))
                }
                _ => {
                    ToolError::unavailable(format!("the profile of {table} is not available: {e}"))
                }
            })?;
        serde_json::to_value(&profile).map_err(|e| ToolError::internal(e.to_string()))
    }

    async fn run_query(
        &self,
        call: QueryCall,
        cancel: CancellationToken,
    ) -> Result<QueryResult, ToolError> {
        self.query(call.sql, call.max_rows, call.max_bytes, cancel)
            .await
    }

    async fn explain_query(
        &self,
        sql: &str,
        cancel: CancellationToken,
    ) -> Result<String, ToolError> {
        let trimmed = sql.trim_start();
        if trimmed
            .get(..7)
            .is_some_and(|w| w.eq_ignore_ascii_case("explain"))
        {
            return Err(ToolError::input(
                "pass the query itself, without EXPLAIN: explain_query adds it",
            ));
        }
        let result = self
            .query(format!("EXPLAIN {sql}"), 100, 1 << 20, cancel)
            .await?;
        let mut out = String::new();
        for row in &result.rows {
            let kind = row.first().and_then(Value::as_str).unwrap_or("");
            let plan = row.get(1).and_then(Value::as_str).unwrap_or("");
            out.push_str(&format!("{kind}:\n{plan}\n\n"));
        }
        Ok(out.trim_end().to_string())
    }

    async fn run_metric(
        &self,
        call: MetricCall,
        max_rows: usize,
        max_bytes: usize,
        cancel: CancellationToken,
    ) -> Result<QueryResult, ToolError> {
        // The same request the metric API reads from a query string: one rule for grains,
        // dimensions and dates.
        let query = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if let Some(grain) = &call.grain {
                query.append_pair("grain", grain);
            }
            if !call.dimensions.is_empty() {
                query.append_pair("dimensions", &call.dimensions.join(","));
            }
            for (key, value) in [("from", &call.from), ("to", &call.to)] {
                if let Some(value) = value {
                    query.append_pair(key, value);
                }
            }
            query.finish()
        };
        let params = crate::business_metrics::MetricParams::parse(Some(&query))
            .map_err(|e| ToolError::input(e.message()))?;
        let (_, sql) = crate::business_metrics::metric_sql(
            &self.state,
            &self.principal,
            &self.request_id,
            &call.name,
            &params,
        )
        .map_err(|e| match e.status() {
            axum::http::StatusCode::NOT_FOUND => ToolError::not_found(format!(
                "no metric '{}' among those you may run; call list_metrics",
                call.name
            )),
            _ => ToolError::input(e.message()),
        })?;
        self.query(sql, max_rows, max_bytes, cancel).await
    }

    async fn search_knowledge(
        &self,
        query: &str,
        category: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KnowledgeHit>, ToolError> {
        let q = dataport_memory::knowledge::KnowledgeQuery {
            category: category.map(str::to_string),
            search: Some(query.to_string()),
            per_page: Some(limit),
            ..Default::default()
        };
        let Some(memory) = self.state.memory.clone() else {
            return Err(ToolError::unavailable(
                "corporate memory is off on this server",
            ));
        };
        let viewer = crate::memory::viewer(&self.state, &self.principal, &self.request_id)
            .map_err(|_| {
                ToolError::unavailable("corporate memory belongs to accounts; this caller is none")
            })?;
        let page = tokio::task::spawn_blocking(move || memory.knowledge(&viewer, &q))
            .await
            .map_err(|e| ToolError::internal(format!("knowledge search failed: {e}")))?
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidArgument => ToolError::input(e.to_string()),
                _ => ToolError::internal(e.to_string()),
            })?;
        Ok(page
            .items
            .into_iter()
            .map(|i| KnowledgeHit {
                id: i.id,
                title: i.title,
                content: i.content,
                category: i.category,
                tags: i.tags,
                score: i.score,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};

    fn batch() -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]));
        let xs: ArrayRef = Arc::new(Float64Array::from(vec![1.5, f64::NAN, 2.0]));
        let ok: ArrayRef = Arc::new(BooleanArray::from(vec![true, false, true]));
        let s: ArrayRef = Arc::new(StringArray::from(vec!["a", "bb", "ccc"]));
        RecordBatch::try_from_iter([("id", ids), ("x", xs), ("ok", ok), ("s", s)]).unwrap()
    }

    #[test]
    fn cells_keep_their_json_types() {
        let mut bytes = 0;
        let kept = keep_rows(&batch(), 10, 1 << 20, &mut bytes).unwrap();
        assert!(!kept.over_bytes);
        assert_eq!(
            kept.rows,
            vec![
                vec![
                    Value::from(1),
                    Value::from(1.5),
                    Value::Bool(true),
                    Value::from("a")
                ],
                vec![
                    Value::Null,
                    Value::from("NaN"),
                    Value::Bool(false),
                    Value::from("bb")
                ],
                vec![
                    Value::from(3),
                    Value::from(2.0),
                    Value::Bool(true),
                    Value::from("ccc")
                ],
            ]
        );
    }

    #[test]
    fn rows_stop_at_the_row_and_byte_limits() {
        let mut bytes = 0;
        assert_eq!(
            keep_rows(&batch(), 2, 1 << 20, &mut bytes)
                .unwrap()
                .rows
                .len(),
            2
        );
        let mut bytes = 0;
        let kept = keep_rows(&batch(), 10, 23, &mut bytes).unwrap();
        assert!(kept.over_bytes);
        assert_eq!(
            kept.rows.len(),
            2,
            "9 + 14 bytes fit in 23, the third row's 11 do not"
        );
    }
}
