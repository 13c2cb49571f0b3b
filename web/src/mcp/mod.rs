//! `/mcp`: the Model Context Protocol over Streamable HTTP (MCP 2025-11-25), for AI
//! assistants acting as the human whose token they hold.
//!
//! `POST /mcp` takes one JSON-RPC message. `initialize` opens a session (`Mcp-Session-Id`);
//! later requests name it and may name the protocol revision (`MCP-Protocol-Version`).
//! Requests are answered as `application/json`, or — for a tool call that asked for progress
//! (`_meta.progressToken`) from a client that accepts it — as a `text/event-stream` of
//! progress notifications ending in the response. Notifications and responses get 202;
//! `notifications/cancelled` stops the named call (its query is dropped, so cancelled).
//! `GET /mcp` is 405: this server starts no messages of its own. `DELETE /mcp` ends a session.
//!
//! Governance is the server's, not the protocol's: the bearer token is checked like on every
//! route (an assistant token is good only here; a script's token not at all), the tools see
//! the engine's catalog view for the caller, each token has a call rate and a cap on queries
//! running at once, and every call lands in the audit log (tool, SQL, rows) and in
//! `/metrics`.

mod backend;
pub(crate) mod catalog;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dataport_auth::{AuditEntry, AuthError, Principal};
use dataport_mcp::jsonrpc::{self, Incoming, RpcError};
use dataport_mcp::{Limits, McpServer, ServerInfo};
use futures::StreamExt as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use crate::auth::{bearer_of, client_ip, peer_of};
use crate::{AppState, RequestId};

/// The path of the endpoint.
pub const MCP_PATH: &str = "/mcp";

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

/// MCP settings (`mcp.*`).
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// Serve `/mcp` at all.
    pub enabled: bool,
    /// Rows and bytes a tool answers with.
    pub limits: Limits,
    /// Tool calls one token may make per minute (a burst of as many, refilled evenly).
    pub calls_per_minute: u32,
    /// Queries one token may run at once (`run_query`, `explain_query`, `run_metric`).
    pub max_concurrent: usize,
    /// A session unused this long is forgotten (the client then initializes again).
    pub session_idle: Duration,
    /// Origins besides the server's own (`server.public_url`) whose browsers may call.
    pub allowed_origins: Vec<String>,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            limits: Limits::default(),
            calls_per_minute: 120,
            max_concurrent: 2,
            session_idle: Duration::from_secs(3600),
            allowed_origins: Vec::new(),
        }
    }
}

/// Most sessions kept at once; the least recently used go first.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    account_id: i64,
    last_seen: Instant,
    /// Calls running, by their JSON-RPC id (as JSON text).
    in_flight: HashMap<String, CancellationToken>,
}

struct TokenUse {
    /// Calls left in the bucket.
    allowance: f64,
    refilled: Instant,
    /// Queries running now.
    running: usize,
}

/// MCP's state in the server: sessions, per-token limits and metrics.
pub(crate) struct Hub {
    server: McpServer,
    options: McpOptions,
    sessions: Mutex<HashMap<String, Session>>,
    tokens: Mutex<HashMap<String, TokenUse>>,
    metrics: ToolMetrics,
}

impl Hub {
    pub(crate) fn new(state: &AppState) -> Self {
        Self {
            server: McpServer {
                info: ServerInfo {
                    name: "dataport".into(),
                    title: state.options.instance_name.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                },
                limits: state.options.mcp.limits,
                knowledge: state.memory.is_some(),
            },
            options: state.options.mcp.clone(),
            sessions: Mutex::default(),
            tokens: Mutex::default(),
            metrics: ToolMetrics::default(),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_session(&self, account_id: i64) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut sessions = self.sessions();
        let idle = self.options.session_idle;
        sessions.retain(|_, s| s.last_seen.elapsed() < idle || !s.in_flight.is_empty());
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                account_id,
                last_seen: Instant::now(),
                in_flight: HashMap::new(),
            },
        );
        id
    }

    /// Takes one call from the token's allowance; `Err(seconds)` to wait when it is spent.
    fn take_call(&self, token_key: &str) -> Result<(), u64> {
        let rate = f64::from(self.options.calls_per_minute.max(1)) / 60.0;
        let burst = f64::from(self.options.calls_per_minute.max(1));
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() > 100_000 {
            tokens.retain(|_, t| t.running > 0 || t.refilled.elapsed() < Duration::from_secs(600));
        }
        let use_ = tokens.entry(token_key.to_string()).or_insert(TokenUse {
            allowance: burst,
            refilled: Instant::now(),
            running: 0,
        });
        let now = Instant::now();
        use_.allowance =
            (use_.allowance + now.duration_since(use_.refilled).as_secs_f64() * rate).min(burst);
        use_.refilled = now;
        if use_.allowance >= 1.0 {
            use_.allowance -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - use_.allowance) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Counts a query running for the token, if under the cap.
    fn start_query(self: &Arc<Self>, token_key: &str) -> Option<QuerySlot> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let use_ = tokens.entry(token_key.to_string()).or_insert(TokenUse {
            allowance: f64::from(self.options.calls_per_minute.max(1)),
            refilled: Instant::now(),
            running: 0,
        });
        if use_.running >= self.options.max_concurrent.max(1) {
            return None;
        }
        use_.running += 1;
        Some(QuerySlot {
            hub: Arc::clone(self),
            token_key: token_key.to_string(),
        })
    }
}

/// A query counted against its token's cap until dropped.
struct QuerySlot {
    hub: Arc<Hub>,
    token_key: String,
}

impl Drop for QuerySlot {
    fn drop(&mut self) {
        let mut tokens = self.hub.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = tokens.get_mut(&self.token_key) {
            t.running = t.running.saturating_sub(1);
        }
    }
}

/// Cancels a call's token when the call is dropped (the client went away) and forgets it.
struct InFlight {
    hub: Arc<Hub>,
    session: String,
    key: String,
    cancel: CancellationToken,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(s) = self.hub.sessions().get_mut(&self.session) {
            s.in_flight.remove(&self.key);
        }
    }
}

/// Calls by tool and outcome, and their time, for `/metrics`.
#[derive(Default)]
pub(crate) struct ToolMetrics {
    calls: Mutex<BTreeMap<(String, String), u64>>,
    seconds: Mutex<BTreeMap<String, (u64, f64)>>,
    rate_limited: AtomicU64,
    refused: AtomicU64,
}

impl ToolMetrics {
    fn call(&self, tool: &str, outcome: &str, elapsed: Duration) {
        if let Ok(mut calls) = self.calls.lock() {
            *calls
                .entry((tool.to_string(), outcome.to_string()))
                .or_default() += 1;
        }
        if let Ok(mut seconds) = self.seconds.lock() {
            let e = seconds.entry(tool.to_string()).or_default();
            e.0 += 1;
            e.1 += elapsed.as_secs_f64();
        }
    }

    /// Prometheus text.
    pub(crate) fn render(&self, sessions: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP dataport_mcp_tool_calls_total MCP tool calls by tool and outcome.\n# TYPE dataport_mcp_tool_calls_total counter\n");
        let calls = self.calls.lock().map(|c| c.clone()).unwrap_or_default();
        for tool in dataport_mcp::tools::TOOLS {
            if !calls.keys().any(|(t, _)| t == tool) {
                let _ = writeln!(
                    out,
                    "dataport_mcp_tool_calls_total{{tool=\"{tool}\",outcome=\"ok\"}} 0"
                );
            }
        }
        for ((tool, outcome), n) in &calls {
            let _ = writeln!(
                out,
                "dataport_mcp_tool_calls_total{{tool=\"{tool}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP dataport_mcp_tool_call_seconds Time spent in MCP tool calls.\n# TYPE dataport_mcp_tool_call_seconds summary\n");
        let seconds = self.seconds.lock().map(|s| s.clone()).unwrap_or_default();
        for (tool, (count, sum)) in &seconds {
            let _ = writeln!(
                out,
                "dataport_mcp_tool_call_seconds_sum{{tool=\"{tool}\"}} {sum}\ndataport_mcp_tool_call_seconds_count{{tool=\"{tool}\"}} {count}"
            );
        }
        let _ = write!(
            out,
            "# HELP dataport_mcp_rate_limited_total MCP calls refused by a token's rate or concurrency limit.\n# TYPE dataport_mcp_rate_limited_total counter\ndataport_mcp_rate_limited_total {}\n\
             # HELP dataport_mcp_refused_total MCP requests refused before a session (authentication, origin, protocol).\n# TYPE dataport_mcp_refused_total counter\ndataport_mcp_refused_total {}\n\
             # HELP dataport_mcp_sessions MCP sessions open.\n# TYPE dataport_mcp_sessions gauge\ndataport_mcp_sessions {sessions}\n",
            self.rate_limited.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        );
        out
    }
}

/// `/metrics` lines of MCP.
pub(crate) fn render_metrics(hub: &Hub) -> String {
    let sessions = hub.sessions().len();
    hub.metrics.render(sessions)
}

/// A JSON-RPC answer with an HTTP status.
fn answer(status: StatusCode, body: &Value) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn rpc_error(status: StatusCode, id: &Value, error: &RpcError) -> Response {
    answer(status, &jsonrpc::error(id, error))
}

fn unauthorized(state: &AppState, message: &str) -> Response {
    let mut response = rpc_error(
        StatusCode::UNAUTHORIZED,
        &Value::Null,
        &RpcError::new(-32001, message),
    );
    let challenge = format!(
        "Bearer resource_metadata=\"{}\", scope=\"mcp\"",
        crate::oauth::resource_metadata_url(state)
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// Browsers may call only from the server's own origin or a configured one (DNS rebinding).
fn origin_allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let own = url::Url::parse(&state.options.public_url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    origin == own
        || state
            .options
            .mcp
            .allowed_origins
            .iter()
            .any(|o| o.trim_end_matches('/') == origin)
}

/// The caller, from the bearer token: any token of an account except a notification
/// script's (which reads through the query API only).
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    request_id: &str,
) -> Result<(Principal, String), Box<Response>> {
    let token = bearer_of(headers).map_err(|e| {
        if !matches!(e, AuthError::Missing) {
            let address = client_ip(state, headers, peer);
            state
                .auth
                .record_refusal("mcp", request_id, None, &address, &e);
        }
        Box::new(unauthorized(
            state,
            "send 'Authorization: Bearer <token>': an assistant token from the portal's Assistants page, an API token, or one from the OAuth flow this server describes at /.well-known/oauth-protected-resource",
        ))
    })?;
    let principal = state.auth.check_bearer(&token).map_err(|e| {
        let address = client_ip(state, headers, peer);
        state
            .auth
            .record_refusal("mcp", request_id, None, &address, &e);
        Box::new(unauthorized(state, "the token is invalid, expired or revoked: create a new one on the portal's Assistants page or sign in again"))
    })?;
    if principal.limited {
        return Err(Box::new(rpc_error(
            StatusCode::FORBIDDEN,
            &Value::Null,
            &RpcError::new(
                -32001,
                "a notification script's token cannot use MCP; use an assistant token",
            ),
        )));
    }
    let key = hex::encode(&sha2::Sha256::digest(token.as_bytes())[..12]);
    Ok((principal, key))
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Tools that run a query, and so count against a token's concurrent-query cap.
fn runs_query(tool: &str) -> bool {
    matches!(tool, "run_query" | "explain_query" | "run_metric")
}

/// `POST /mcp`.
pub(crate) async fn post(
    State(state): State<AppState>,
    axum::Extension(hub): axum::Extension<Arc<Hub>>,
    RequestId(request_id): RequestId,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let peer = peer_of(&parts.extensions);
    if !state.options.mcp.enabled {
        return rpc_error(
            StatusCode::NOT_FOUND,
            &Value::Null,
            &RpcError::new(-32001, "MCP is switched off on this server (mcp.enabled)"),
        );
    }
    if !origin_allowed(&state, &headers) {
        hub.metrics.refused.fetch_add(1, Ordering::Relaxed);
        return rpc_error(
            StatusCode::FORBIDDEN,
            &Value::Null,
            &RpcError::new(
                -32001,
                "this Origin may not call the MCP endpoint (mcp.allowed_origins)",
            ),
        );
    }
    let (principal, token_key) = match authenticate(&state, &headers, peer, &request_id) {
        Ok(p) => p,
        Err(response) => {
            hub.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return *response;
        }
    };
    crate::trace::record_user(&principal.name);
    let Ok(body) = axum::body::to_bytes(body, state.options.max_body_bytes).await else {
        return rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &Value::Null,
            &RpcError::new(
                jsonrpc::REQUEST_TOO_LARGE,
                format!(
                    "the request is over {} bytes (server.max_body_size); send shorter SQL or arguments",
                    state.options.max_body_bytes
                ),
            ),
        );
    };
    let message = match Incoming::parse(&body) {
        Ok(m) => m,
        Err((id, e)) => return rpc_error(StatusCode::BAD_REQUEST, &id, &e),
    };
    let session_id = headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(v) = headers.get(VERSION_HEADER).and_then(|v| v.to_str().ok())
        && !dataport_mcp::server::PROTOCOL_VERSIONS.contains(&v)
    {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            &RpcError::new(
                jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                format!("unsupported MCP-Protocol-Version '{v}'"),
            )
            .with_data(json!({"supported": dataport_mcp::server::PROTOCOL_VERSIONS})),
        );
    }
    // A session belongs to the account that opened it.
    let session_ok = |id: &str| {
        hub.sessions().get_mut(id).is_some_and(|s| {
            let mine = s.account_id == principal.id;
            if mine {
                s.last_seen = Instant::now();
            }
            mine
        })
    };
    match message {
        Incoming::Response { .. } => StatusCode::ACCEPTED.into_response(),
        Incoming::Notification { method, params } => {
            if let Some(id) = &session_id {
                if !session_ok(id) {
                    return session_gone();
                }
                if method == "notifications/cancelled"
                    && let Some(target) = params.as_ref().and_then(|p| p.get("requestId"))
                    && let Some(s) = hub.sessions().get(id)
                    && let Some(cancel) = s.in_flight.get(&target.to_string())
                {
                    tracing::info!(request_id = %request_id, user = %principal.name, call = %target, "MCP call cancelled by the client");
                    cancel.cancel();
                }
            }
            StatusCode::ACCEPTED.into_response()
        }
        Incoming::Request { id, method, params } => {
            if method == "initialize" {
                let (result, version) = hub
                    .server
                    .initialize(params.as_ref(), dataport_mcp::backend::SERVER_DIALECT);
                let session = hub.open_session(principal.id);
                tracing::info!(request_id = %request_id, user = %principal.name, version, "MCP session opened");
                let mut response = answer(StatusCode::OK, &jsonrpc::result(&id, result));
                if let Ok(v) = HeaderValue::from_str(&session) {
                    response.headers_mut().insert(SESSION_HEADER, v);
                }
                return response;
            }
            let session = match (&session_id, dataport_mcp::server::is_sessionless(&method)) {
                (Some(s), _) if session_ok(s) => Some(s.clone()),
                (Some(_), _) => return session_gone(),
                (None, true) => None,
                (None, false) => {
                    return rpc_error(
                        StatusCode::BAD_REQUEST,
                        &id,
                        &RpcError::new(
                            jsonrpc::NOT_INITIALIZED,
                            "no Mcp-Session-Id: send initialize first, then the header it answered on every request",
                        ),
                    );
                }
            };
            if method == "tools/call" {
                let Some(session) = session else {
                    return session_gone();
                };
                call_tool(
                    state, hub, request_id, principal, token_key, session, id, params, &headers,
                )
                .await
            } else {
                let backend = backend::ServerBackend {
                    state: state.clone(),
                    principal,
                    request_id,
                    tool: method.clone(),
                    audited: Arc::default(),
                };
                let (result, _) = hub
                    .server
                    .handle(&backend, &method, params, CancellationToken::new())
                    .await;
                match result {
                    Ok(r) => answer(StatusCode::OK, &jsonrpc::result(&id, r)),
                    Err(e) => answer(StatusCode::OK, &jsonrpc::error(&id, &e)),
                }
            }
        }
    }
}

fn session_gone() -> Response {
    rpc_error(
        StatusCode::NOT_FOUND,
        &Value::Null,
        &RpcError::new(
            -32001,
            "unknown or expired MCP session: send initialize again",
        ),
    )
}

#[allow(clippy::too_many_arguments)]
async fn call_tool(
    state: AppState,
    hub: Arc<Hub>,
    request_id: String,
    principal: Principal,
    token_key: String,
    session: String,
    id: Value,
    params: Option<Value>,
    headers: &HeaderMap,
) -> Response {
    let tool = params
        .as_ref()
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Err(wait) = hub.take_call(&token_key) {
        hub.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut response = rpc_error(
            StatusCode::TOO_MANY_REQUESTS,
            &id,
            &RpcError::rate_limited(
                format!(
                    "this token may make {} tool calls a minute (mcp.calls_per_minute); retry in {wait} s",
                    hub.options.calls_per_minute
                ),
                wait,
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let slot = if runs_query(&tool) {
        match hub.start_query(&token_key) {
            Some(slot) => Some(slot),
            None => {
                hub.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
                return answer(
                    StatusCode::OK,
                    &jsonrpc::error(
                        &id,
                        &RpcError::rate_limited(
                            format!(
                                "this token already runs {} queries (mcp.max_concurrent_queries); wait for one to finish",
                                hub.options.max_concurrent
                            ),
                            1,
                        ),
                    ),
                );
            }
        }
    } else {
        None
    };
    let cancel = CancellationToken::new();
    let key = id.to_string();
    if let Some(s) = hub.sessions().get_mut(&session) {
        s.in_flight.insert(key.clone(), cancel.clone());
    }
    let guard = InFlight {
        hub: Arc::clone(&hub),
        session,
        key,
        cancel: cancel.clone(),
    };
    let progress = params
        .as_ref()
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("progressToken"))
        .cloned()
        .filter(|t| t.is_string() || t.is_number());
    let audited = Arc::new(AtomicBool::new(false));
    let backend = backend::ServerBackend {
        state: state.clone(),
        principal: principal.clone(),
        request_id: request_id.clone(),
        tool: tool.clone(),
        audited: Arc::clone(&audited),
    };
    let work = async move {
        let started = Instant::now();
        let at_ms = chrono::Utc::now().timestamp_millis();
        let (result, info) = hub
            .server
            .handle(&backend, "tools/call", params, cancel)
            .await;
        drop(slot);
        let elapsed = started.elapsed();
        if let Some(info) = &info {
            hub.metrics.call(&info.tool, &info.outcome, elapsed);
            tracing::info!(request_id = %request_id, user = %principal.name, tool = %info.tool, outcome = %info.outcome, rows = info.rows, ms = elapsed.as_millis() as u64, "MCP tool call");
            if !audited.load(Ordering::Relaxed)
                && let Some(audit) = &state.engine.options().audit
            {
                audit.record(AuditEntry {
                    at_ms,
                    account_id: (principal.id > 0).then_some(principal.id),
                    user: principal.name.clone(),
                    surface: "mcp".into(),
                    request_id: request_id.clone(),
                    sql: info.sql.clone().unwrap_or_default(),
                    tables: Vec::new(),
                    rows: info.rows,
                    bytes: 0,
                    duration_ms: elapsed.as_millis() as u64,
                    outcome: if info.outcome == "ok" { "ok" } else { "error" }.into(),
                    error: (info.outcome != "ok").then(|| info.outcome.clone()),
                    tool: Some(info.tool.clone()),
                });
            }
        }
        drop(guard);
        match result {
            Ok(r) => jsonrpc::result(&id, r),
            Err(e) => jsonrpc::error(&id, &e),
        }
    };
    match progress {
        Some(token) if accepts_event_stream(headers) => event_stream(work, token),
        _ => answer(StatusCode::OK, &work.await),
    }
}

/// The call as server-sent events: a progress notification every few seconds while it runs,
/// then its response. Dropping the stream (the client went away) drops the call.
fn event_stream(
    work: impl std::future::Future<Output = Value> + Send + 'static,
    token: Value,
) -> Response {
    let started = Instant::now();
    let work = Box::pin(work);
    let stream = futures::stream::unfold((Some(work), 0u64), move |(work, n)| {
        let token = token.clone();
        async move {
            let mut work = work?;
            tokio::select! {
                message = &mut work => Some((event(&message), (None, n))),
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    let note = jsonrpc::notification("notifications/progress", json!({
                        "progressToken": token,
                        "progress": n + 1,
                        "message": format!("still running after {} s", started.elapsed().as_secs()),
                    }));
                    Some((event(&note), (Some(work), n + 1)))
                }
            }
        }
    })
    .map(Ok::<_, std::convert::Infallible>);
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn event(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

/// `GET /mcp`: no stream of server-initiated messages here (the spec's 405).
pub(crate) async fn get() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "POST, DELETE")],
        "this MCP server sends no messages of its own; POST requests to /mcp",
    )
        .into_response()
}

/// `DELETE /mcp`: end the session named by `Mcp-Session-Id` (its running calls are
/// cancelled).
pub(crate) async fn delete(
    State(state): State<AppState>,
    axum::Extension(hub): axum::Extension<Arc<Hub>>,
    RequestId(request_id): RequestId,
    request: axum::extract::Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let (principal, _) = match authenticate(
        &state,
        &parts.headers,
        peer_of(&parts.extensions),
        &request_id,
    ) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let Some(id) = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            &RpcError::new(
                jsonrpc::INVALID_REQUEST,
                "name the session to end in Mcp-Session-Id",
            ),
        );
    };
    let mut sessions = hub.sessions();
    match sessions.get(id) {
        Some(s) if s.account_id == principal.id => {
            if let Some(s) = sessions.remove(id) {
                for cancel in s.in_flight.values() {
                    cancel.cancel();
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => {
            drop(sessions);
            session_gone()
        }
    }
}
