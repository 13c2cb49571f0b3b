//! [`McpServer`]: MCP's methods over a [`Backend`], for any transport.
//!
//! The transports (the server's Streamable HTTP, `dataport mcp`'s stdio) keep sessions and
//! cancellation; this answers one request at a time.

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, ToolError};
use crate::jsonrpc::{INVALID_PARAMS, RESOURCE_NOT_FOUND, RpcError};
use crate::model::TableInfo;
use crate::tools::{CallInfo, Limits};
use crate::{profile, render, tools};

/// Protocol revisions this server speaks through the `initialize` handshake, newest first.
pub const PROTOCOL_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The revision answered to a client that asks for one we don't speak.
pub const LATEST_PROTOCOL_VERSION: &str = PROTOCOL_VERSIONS[0];

/// Resources per `resources/list` page.
const PAGE: usize = 100;

/// Who the server says it is.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `dataport`.
    pub name: String,
    /// The instance's name for people (`portal.name`).
    pub title: String,
    pub version: String,
}

/// MCP's methods, answered from a [`Backend`].
#[derive(Debug, Clone)]
pub struct McpServer {
    pub info: ServerInfo,
    pub limits: Limits,
    /// Whether `search_knowledge` is offered (corporate memory is on).
    pub knowledge: bool,
}

/// Whether `method` may come before `initialize` (or without a session).
pub fn is_sessionless(method: &str) -> bool {
    matches!(method, "initialize" | "ping" | "server/discover")
}

/// The protocol revision to answer a client that asked for `requested`.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| PROTOCOL_VERSIONS.iter().find(|v| **v == r))
        .copied()
        .unwrap_or(LATEST_PROTOCOL_VERSION)
}

/// The URI of a table's description.
pub fn table_uri(table: &str) -> String {
    format!("dataport://tables/{table}")
}

/// The URI of a table's profile.
pub fn profile_uri(table: &str) -> String {
    format!("dataport://profiles/{table}")
}

/// The URI of the catalog's index.
pub const CATALOG_URI: &str = "dataport://catalog";

impl McpServer {
    fn capabilities(&self) -> Value {
        json!({
            "tools": {"listChanged": false},
            "resources": {"listChanged": false, "subscribe": false},
            "prompts": {"listChanged": false},
        })
    }

    fn instructions(&self, dialect: &str) -> String {
        format!(
            "{} ({}): the team's governed data. You see only the tables your user may read. \
             To answer a question with data: search_catalog or list_tables to find tables, \
             describe_table for columns and how tables join, search_knowledge for the team's \
             definitions, list_metrics/run_metric for agreed metrics, then run_query with one \
             read-only query in {dialect}. Aggregate in SQL rather than fetching many rows, and \
             say which SQL gave your figures.",
            self.info.title, self.info.name
        )
    }

    /// `initialize`'s result, and the protocol revision agreed.
    pub fn initialize(&self, params: Option<&Value>, dialect: &str) -> (Value, &'static str) {
        let requested = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str);
        let version = negotiate(requested);
        let result = json!({
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": {
                "name": self.info.name,
                "title": self.info.title,
                "version": self.info.version,
            },
            "instructions": self.instructions(dialect),
        });
        (result, version)
    }

    /// `server/discover` (MCP 2026-07-28's probe): the revisions spoken here, all through the
    /// `initialize` handshake, so a newer client falls back to it.
    pub fn discover(&self, dialect: &str) -> Value {
        json!({
            "supportedVersions": PROTOCOL_VERSIONS,
            "capabilities": self.capabilities(),
            "serverInfo": {"name": self.info.name, "title": self.info.title, "version": self.info.version},
            "instructions": self.instructions(dialect),
        })
    }

    /// Answers one request (not `initialize`, which the transport answers through
    /// [`McpServer::initialize`] to keep the revision). The [`CallInfo`] is set for
    /// `tools/call`.
    pub async fn handle(
        &self,
        backend: &dyn Backend,
        method: &str,
        params: Option<Value>,
        cancel: CancellationToken,
    ) -> (Result<Value, RpcError>, Option<CallInfo>) {
        match method {
            "initialize" => (
                Ok(self.initialize(params.as_ref(), backend.dialect()).0),
                None,
            ),
            "server/discover" => (Ok(self.discover(backend.dialect())), None),
            "ping" => (Ok(json!({})), None),
            "tools/list" => (
                Ok(
                    json!({"tools": tools::definitions(&self.limits, backend.dialect(), self.knowledge)}),
                ),
                None,
            ),
            "tools/call" => {
                let Some(name) = params
                    .as_ref()
                    .and_then(|p| p.get("name"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                else {
                    return (
                        Err(RpcError::invalid_params(
                            "tools/call needs params {\"name\": <tool>, \"arguments\": {…}}",
                        )),
                        None,
                    );
                };
                if name == "search_knowledge" && !self.knowledge {
                    return (
                        Err(RpcError::invalid_params(
                            "unknown tool 'search_knowledge': corporate memory is off on this server",
                        )),
                        None,
                    );
                }
                let arguments = params.and_then(|mut p| p.get_mut("arguments").map(Value::take));
                if arguments
                    .as_ref()
                    .is_some_and(|a| !a.is_object() && !a.is_null())
                {
                    return (
                        Err(RpcError::invalid_params("\"arguments\" must be an object")),
                        None,
                    );
                }
                let arguments = arguments.filter(|a| !a.is_null());
                let (result, info) =
                    tools::call(backend, &self.limits, &name, arguments, cancel).await;
                (result, Some(info))
            }
            "resources/list" => (self.resources(backend, params.as_ref()).await, None),
            "resources/templates/list" => (
                Ok(json!({"resourceTemplates": [
                    {"uriTemplate": "dataport://tables/{table}", "name": "table", "title": "A table's description", "description": "Columns, keys, related tables, metrics and profile highlights of schema.table, as Markdown.", "mimeType": "text/markdown"},
                    {"uriTemplate": "dataport://profiles/{table}", "name": "profile", "title": "A table's profile", "description": "The trimmed statistical profile of schema.table, as JSON.", "mimeType": "application/json"},
                ]})),
                None,
            ),
            "resources/read" => (self.read(backend, params.as_ref()).await, None),
            "prompts/list" => (Ok(prompts()), None),
            "prompts/get" => (prompt(params.as_ref(), backend.dialect()), None),
            "notifications/initialized" => (Ok(json!({})), None),
            other => (Err(RpcError::method_not_found(other)), None),
        }
    }

    async fn resources(
        &self,
        backend: &dyn Backend,
        params: Option<&Value>,
    ) -> Result<Value, RpcError> {
        let tables = backend.tables().await.map_err(backend_error)?;
        let mut all = vec![json!({
            "uri": CATALOG_URI,
            "name": "catalog",
            "title": "The catalog",
            "description": "Every table you may query, with its columns, and the business metrics.",
            "mimeType": "text/markdown",
        })];
        for t in &tables {
            let name = t.qualified();
            all.push(json!({
                "uri": table_uri(&name),
                "name": name,
                "title": format!("{name} (description)"),
                "description": t.description.as_deref().map(|d| d.lines().next().unwrap_or("")).unwrap_or(""),
                "mimeType": "text/markdown",
            }));
            if t.profile.is_some() {
                all.push(json!({
                    "uri": profile_uri(&name),
                    "name": format!("{name} profile"),
                    "title": format!("{name} (profile)"),
                    "mimeType": "application/json",
                }));
            }
        }
        let start = match params.and_then(|p| p.get("cursor")).and_then(Value::as_str) {
            None => 0,
            Some(c) => c
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= all.len())
                .ok_or_else(|| {
                    RpcError::invalid_params(
                        "invalid cursor: pass the nextCursor of the previous page",
                    )
                })?,
        };
        let end = (start + PAGE).min(all.len());
        let mut result = json!({"resources": all[start..end]});
        if end < all.len() {
            result["nextCursor"] = json!(end.to_string());
        }
        Ok(result)
    }

    async fn read(&self, backend: &dyn Backend, params: Option<&Value>) -> Result<Value, RpcError> {
        let uri = params
            .and_then(|p| p.get("uri"))
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::invalid_params("resources/read needs params {\"uri\": …}"))?;
        let not_found = || {
            RpcError::new(
                RESOURCE_NOT_FOUND,
                format!("no resource {uri}: see resources/list"),
            )
            .with_data(json!({"uri": uri}))
        };
        let tables = backend.tables().await.map_err(backend_error)?;
        let metrics = backend.metrics().await.unwrap_or_default();
        let (text, mime) = if uri == CATALOG_URI {
            (
                render::catalog_markdown(
                    &format!("{} catalog", self.info.title),
                    &tables,
                    &metrics,
                    &format!(
                        "Query these tables with run_query in {}.",
                        backend.dialect()
                    ),
                ),
                "text/markdown",
            )
        } else if let Some(name) = uri.strip_prefix("dataport://tables/") {
            let t = find(&tables, name).ok_or_else(not_found)?;
            let profile = match &t.profile {
                Some(_) => backend
                    .profile(&t.qualified())
                    .await
                    .ok()
                    .map(|p| profile::trim(&p)),
                None => None,
            };
            (
                render::table_markdown(t, &tables, &metrics, profile.as_ref()),
                "text/markdown",
            )
        } else if let Some(name) = uri.strip_prefix("dataport://profiles/") {
            let t = find(&tables, name).ok_or_else(not_found)?;
            let p = backend.profile(&t.qualified()).await.map_err(|e| match e {
                ToolError::NotFound { .. } => not_found(),
                other => backend_error(other),
            })?;
            (
                serde_json::to_string_pretty(&profile::trim(&p)).unwrap_or_default(),
                "application/json",
            )
        } else {
            return Err(not_found());
        };
        Ok(json!({"contents": [{"uri": uri, "mimeType": mime, "text": text}]}))
    }
}

fn find<'a>(tables: &'a [TableInfo], name: &str) -> Option<&'a TableInfo> {
    tables
        .iter()
        .find(|t| t.qualified().eq_ignore_ascii_case(name))
}

fn backend_error(e: ToolError) -> RpcError {
    match e {
        ToolError::Cancelled => RpcError::cancelled(),
        ToolError::Input { message } => RpcError::invalid_params(message),
        other => RpcError::internal(other.to_string()),
    }
}

fn prompts() -> Value {
    json!({"prompts": [
        {
            "name": "explore_table",
            "title": "Explore a table",
            "description": "Get to know a table: what it holds, its columns and keys, data quality, and a few example queries.",
            "arguments": [{"name": "table", "description": "The table, schema.table", "required": true}],
        },
        {
            "name": "answer_with_sql",
            "title": "Answer a question with SQL",
            "description": "Answer a business question from the data: find the tables, check the team's definitions, write and run one query, and show the SQL with the answer.",
            "arguments": [{"name": "question", "description": "The question to answer", "required": true}],
        },
    ]})
}

fn prompt(params: Option<&Value>, dialect: &str) -> Result<Value, RpcError> {
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("prompts/get needs params {\"name\": …}"))?;
    let arg = |key: &str| {
        params
            .and_then(|p| p.get("arguments"))
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                RpcError::new(
                    INVALID_PARAMS,
                    format!("prompt '{name}' needs the argument '{key}'"),
                )
            })
    };
    let (description, text) = match name {
        "explore_table" => {
            let table = arg("table")?;
            (
                format!("Explore {table}"),
                format!(
                    "Explore the table {table} for me.\n\n\
                     1. Call describe_table for {table}: what it holds, its columns, keys and the tables it joins to.\n\
                     2. Call profile for {table}: completeness, ranges, common values and alerts.\n\
                     3. Run two or three small queries with run_query ({dialect}; aggregate, or LIMIT 10) that show what a typical row looks like and how the main columns are distributed.\n\
                     4. Call search_knowledge with the table's name for what the team knows about it.\n\n\
                     Then summarise: what one row is, the important columns, how to join it, data quality caveats, and three questions it can answer (with their SQL)."
                ),
            )
        }
        "answer_with_sql" => {
            let question = arg("question")?;
            (
                "Answer a question with SQL".to_string(),
                format!(
                    "Answer this question from the data: {question}\n\n\
                     1. Find the tables: search_catalog with the question's key words (or list_tables).\n\
                     2. describe_table for each candidate: the columns, and how the tables join (foreign keys).\n\
                     3. search_knowledge and list_metrics: if the team defined the measure, use its definition (run_metric when a metric answers it).\n\
                     4. Write one read-only query in {dialect}; check it with explain_query if unsure; run it with run_query. Aggregate in SQL.\n\
                     5. If the query fails, read the error, fix the SQL and run it again.\n\n\
                     Answer with the figures, the SQL you ran, and any caveat (filters, data quality alerts, freshness)."
                ),
            )
        }
        other => {
            return Err(RpcError::invalid_params(format!(
                "unknown prompt '{other}': the prompts are explore_table and answer_with_sql"
            )));
        }
    };
    Ok(json!({
        "description": description,
        "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ColumnInfo, KnowledgeHit, MetricCall, MetricInfo, QueryCall, QueryResult};

    /// Two tables, no metrics; queries answer their SQL's length.
    struct Fake;

    fn table(name: &str) -> TableInfo {
        TableInfo {
            schema: "s".into(),
            name: name.into(),
            description: Some(format!("The {name} table")),
            row_count: Some(1),
            updated_at: None,
            columns: vec![ColumnInfo {
                name: "id".into(),
                data_type: "Int64".into(),
                nullable: false,
                description: None,
            }],
            primary_key: vec!["id".into()],
            foreign_keys: Vec::new(),
            partition_columns: Vec::new(),
            profile: None,
        }
    }

    #[async_trait::async_trait]
    impl Backend for Fake {
        async fn tables(&self) -> Result<Vec<TableInfo>, ToolError> {
            Ok(vec![table("a"), table("b")])
        }
        async fn metrics(&self) -> Result<Vec<MetricInfo>, ToolError> {
            Ok(Vec::new())
        }
        async fn profile(&self, table: &str) -> Result<Value, ToolError> {
            Err(ToolError::not_found(format!("no profile of {table}")))
        }
        async fn run_query(
            &self,
            call: QueryCall,
            cancel: CancellationToken,
        ) -> Result<QueryResult, ToolError> {
            if call.sql.contains("sleep") {
                cancel.cancelled().await;
                return Err(ToolError::Cancelled);
            }
            Ok(QueryResult {
                columns: Vec::new(),
                rows: Vec::new(),
                total_rows: call.sql.len() as u64,
                truncated: None,
                sql: call.sql,
                elapsed_ms: 0,
            })
        }
        async fn explain_query(
            &self,
            sql: &str,
            _: CancellationToken,
        ) -> Result<String, ToolError> {
            Ok(format!("plan of {sql}"))
        }
        async fn run_metric(
            &self,
            call: MetricCall,
            _: usize,
            _: usize,
            _: CancellationToken,
        ) -> Result<QueryResult, ToolError> {
            Err(ToolError::not_found(format!("no metric {}", call.name)))
        }
        async fn search_knowledge(
            &self,
            _: &str,
            _: Option<&str>,
            _: usize,
        ) -> Result<Vec<KnowledgeHit>, ToolError> {
            Ok(Vec::new())
        }
        fn notice(&self) -> Option<String> {
            Some("Offline.".into())
        }
    }

    fn server(knowledge: bool) -> McpServer {
        McpServer {
            info: ServerInfo {
                name: "dataport".into(),
                title: "Test".into(),
                version: "0".into(),
            },
            limits: Limits::default(),
            knowledge,
        }
    }

    async fn call(
        s: &McpServer,
        method: &str,
        params: Value,
    ) -> (Result<Value, RpcError>, Option<CallInfo>) {
        s.handle(&Fake, method, Some(params), CancellationToken::new())
            .await
    }

    #[test]
    fn versions_are_negotiated() {
        let s = server(true);
        let (r, v) = s.initialize(Some(&json!({"protocolVersion": "2025-06-18"})), "sql");
        assert_eq!(v, "2025-06-18");
        assert_eq!(r["protocolVersion"], "2025-06-18");
        assert_eq!(
            s.initialize(Some(&json!({"protocolVersion": "1999-01-01"})), "sql")
                .1,
            LATEST_PROTOCOL_VERSION
        );
        assert_eq!(s.initialize(None, "sql").1, LATEST_PROTOCOL_VERSION);
        assert!(is_sessionless("ping") && !is_sessionless("tools/call"));
    }

    #[tokio::test]
    async fn tools_are_listed_and_called() {
        let s = server(false);
        let (r, _) = call(&s, "tools/list", json!({})).await;
        let names: Vec<String> = r.unwrap()["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names.len(),
            8,
            "no search_knowledge without memory: {names:?}"
        );
        let (r, info) = call(
            &s,
            "tools/call",
            json!({"name": "run_query", "arguments": {"sql": "select 1"}}),
        )
        .await;
        let r = r.unwrap();
        assert_eq!(r["isError"], false);
        assert!(
            r["content"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("Offline.\n\n")
        );
        assert_eq!(r["structuredContent"]["notice"], "Offline.");
        let info = info.unwrap();
        assert_eq!(
            (info.tool.as_str(), info.outcome.as_str(), info.rows),
            ("run_query", "ok", 8)
        );
        let (r, info) = call(
            &s,
            "tools/call",
            json!({"name": "describe_table", "arguments": {"table": "zzz"}}),
        )
        .await;
        assert_eq!(r.unwrap()["isError"], true);
        assert_eq!(info.unwrap().outcome, "not_found");
        let (r, _) = call(
            &s,
            "tools/call",
            json!({"name": "run_query", "arguments": {"sql": "x", "max_rows": 9999}}),
        )
        .await;
        assert_eq!(r.unwrap_err().code, crate::jsonrpc::INVALID_PARAMS);
        let (r, _) = call(
            &s,
            "tools/call",
            json!({"name": "search_knowledge", "arguments": {"query": "x"}}),
        )
        .await;
        assert_eq!(r.unwrap_err().code, crate::jsonrpc::INVALID_PARAMS);
        let (r, _) = call(&s, "nope/nope", json!({})).await;
        assert_eq!(r.unwrap_err().code, crate::jsonrpc::METHOD_NOT_FOUND);
    }

    #[tokio::test]
    async fn a_cancelled_call_is_a_cancelled_error() {
        let s = server(true);
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            s.handle(
                &Fake,
                "tools/call",
                Some(json!({"name": "run_query", "arguments": {"sql": "sleep"}})),
                c,
            )
            .await
        });
        cancel.cancel();
        let (r, info) = task.await.unwrap();
        assert_eq!(r.unwrap_err().code, crate::jsonrpc::REQUEST_CANCELLED);
        assert_eq!(info.unwrap().outcome, "cancelled");
    }

    #[tokio::test]
    async fn resources_and_prompts() {
        let s = server(true);
        let (r, _) = call(&s, "resources/list", json!({})).await;
        let uris: Vec<String> = r.unwrap()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["uri"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            uris,
            [
                "dataport://catalog",
                "dataport://tables/s.a",
                "dataport://tables/s.b"
            ]
        );
        let (r, _) = call(
            &s,
            "resources/read",
            json!({"uri": "dataport://tables/s.b"}),
        )
        .await;
        assert!(
            r.unwrap()["contents"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("# s.b")
        );
        let (r, _) = call(
            &s,
            "resources/read",
            json!({"uri": "dataport://tables/s.zzz"}),
        )
        .await;
        assert_eq!(r.unwrap_err().code, RESOURCE_NOT_FOUND);
        let (r, _) = call(&s, "resources/list", json!({"cursor": "99"})).await;
        assert_eq!(r.unwrap_err().code, INVALID_PARAMS);
        let (r, _) = call(
            &s,
            "prompts/get",
            json!({"name": "explore_table", "arguments": {"table": "s.a"}}),
        )
        .await;
        assert!(
            r.unwrap()["messages"][0]["content"]["text"]
                .as_str()
                .unwrap()
                .contains("s.a")
        );
        let (r, _) = call(&s, "prompts/get", json!({"name": "explore_table"})).await;
        assert_eq!(r.unwrap_err().code, INVALID_PARAMS);
    }
}
