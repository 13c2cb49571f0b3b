//! `dataport mcp`: the server's MCP tools over standard input and output, for assistants that
//! start a local process (Claude Desktop, Claude Code, …), with the pulled files as a fallback.
//!
//! The stdio transport: one JSON-RPC message per line in, one per line out, nothing else on
//! standard output (logs go to standard error). The process answers `initialize` and `ping`
//! itself, so it starts and stays responsive without a network. Every other request is sent
//! to the server's `/mcp` ([`remote`]) as it came, with the stored login, and every message of
//! the answer (progress notifications, then the response) is passed back in order. When the
//! server cannot be used (no connection, a timeout, 5xx, a login it refuses, no `/mcp`), the
//! request is answered from the pull folder instead ([`offline`]), each tool answer opening
//! with a notice that says so; the server is tried again at most every
//! [`RETRY_EVERY`] and used again as soon as it answers.
//!
//! Requests run concurrently (a slow query holds up neither a `ping` nor its own
//! `notifications/cancelled`, which stops it here and is passed on to the server); one task
//! writes standard output.

mod duck;
mod offline;
mod remote;
mod sse;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dataport_mcp::jsonrpc::{self, Id};
use dataport_mcp::{Incoming, Limits, McpServer, ServerInfo};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::ClientError;
use crate::views::{DuckDb, Runner};
use offline::Offline;
use remote::{Remote, RemoteError};

/// How often, at most, the server is tried again while it is not answering.
pub const RETRY_EVERY: Duration = Duration::from_secs(30);

/// How long one offline query may run.
const OFFLINE_TIMEOUT: Duration = Duration::from_secs(60);

/// How `initialize` describes the SQL before it is known where answers will come from.
const DIALECT: &str = "Apache DataFusion SQL (PostgreSQL-like) on the server; DuckDB SQL when \
    the server cannot be reached (the answers then say so)";

/// How `dataport mcp` runs.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// The server to use; the stored login must be for it. `None`: the stored login's.
    pub server: Option<String>,
    /// The pull folder, answered from when the server cannot be reached.
    pub dir: PathBuf,
    /// The stored login ([`crate::credentials_path`]).
    pub credentials: PathBuf,
    /// The DuckDB for offline queries (as `dataport pull` finds it).
    pub duckdb: DuckDb,
    /// How often, at most, an unreachable server is tried again ([`RETRY_EVERY`]).
    pub retry_every: Duration,
}

/// Whether the server answers.
#[derive(Debug, Clone)]
enum Link {
    /// Not tried yet, or answering.
    Online,
    /// Not answering, since the try at `tried`; `why` completes "Offline: …".
    Offline { why: String, tried: Instant },
}

/// Serves MCP on this process's standard input and output until the input ends.
pub async fn serve_stdio(options: McpOptions) -> Result<(), ClientError> {
    serve(options, tokio::io::stdin(), tokio::io::stdout()).await
}

/// Serves MCP on `input` and `output` (one JSON-RPC message per line each way) until `input`
/// ends and the requests under way are answered.
pub async fn serve<R, W>(options: McpOptions, input: R, output: W) -> Result<(), ClientError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, messages) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_lines(output, messages));
    let proxy = Arc::new(Proxy::new(options, out)?);
    let mut tasks = JoinSet::new();
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| ClientError::io("standard input", e))?;
        if n == 0 {
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        Arc::clone(&proxy).dispatch(&line, &mut tasks);
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    proxy.remote.close().await;
    drop(proxy);
    match writer.await {
        Ok(Ok(())) => Ok(()),
        // The client closed its end: nothing left to tell it.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Ok(Err(e)) => Err(ClientError::io("standard output", e)),
        Err(e) => Err(ClientError::Input {
            message: format!("the output task failed: {e}"),
        }),
    }
}

/// Writes each message as one line, flushed.
async fn write_lines<W: AsyncWrite + Unpin>(
    mut output: W,
    mut messages: mpsc::UnboundedReceiver<Value>,
) -> std::io::Result<()> {
    while let Some(message) = messages.recv().await {
        let mut line = message.to_string();
        line.push('\n');
        output.write_all(line.as_bytes()).await?;
        output.flush().await?;
    }
    Ok(())
}

/// The timeout of a request to the server: a query may run as long as the server lets it.
fn timeout_for(method: &str) -> Duration {
    match method {
        "tools/call" => Duration::from_secs(330),
        _ => Duration::from_secs(60),
    }
}

/// A request id as a map key (`1` and `"1"` are different ids).
fn id_key(id: &Id) -> String {
    id.to_string()
}

struct Proxy {
    dir: PathBuf,
    duckdb: DuckDb,
    retry_every: Duration,
    local: McpServer,
    remote: Remote,
    link: std::sync::Mutex<Link>,
    /// The DuckDB found for offline queries, once found.
    runner: std::sync::Mutex<Option<Runner>>,
    /// Requests under way: id → (their number, their cancel).
    running: std::sync::Mutex<HashMap<String, (u64, CancellationToken)>>,
    sequence: AtomicU64,
    out: mpsc::UnboundedSender<Value>,
}

impl Proxy {
    fn new(options: McpOptions, out: mpsc::UnboundedSender<Value>) -> Result<Self, ClientError> {
        Ok(Self {
            remote: Remote::new(options.credentials, options.server)?,
            dir: options.dir,
            duckdb: options.duckdb,
            retry_every: options.retry_every,
            local: McpServer {
                info: ServerInfo {
                    name: "dataport".into(),
                    title: "Dataport".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                },
                limits: Limits::default(),
                knowledge: false,
            },
            link: std::sync::Mutex::new(Link::Online),
            runner: std::sync::Mutex::new(None),
            running: std::sync::Mutex::new(HashMap::new()),
            sequence: AtomicU64::new(0),
            out,
        })
    }

    fn send(&self, message: Value) {
        // The writer only stops when standard output is gone; then nobody reads answers.
        let _ = self.out.send(message);
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_online(&self) -> bool {
        matches!(*self.link(), Link::Online)
    }

    /// Whether to try the server now: yes unless it failed less than `retry_every` ago.
    fn try_server(&self) -> bool {
        match &*self.link() {
            Link::Online => true,
            Link::Offline { tried, .. } => tried.elapsed() >= self.retry_every,
        }
    }

    fn went_online(&self) {
        let mut link = self.link();
        if let Link::Offline { .. } = &*link {
            tracing::info!("the server answers again: back online");
        }
        *link = Link::Online;
    }

    fn went_offline(&self, why: &str) {
        let mut link = self.link();
        if !matches!(&*link, Link::Offline { why: w, .. } if w == why) {
            tracing::info!(%why, "answering from the pulled files");
        }
        *link = Link::Offline {
            why: why.to_string(),
            tried: Instant::now(),
        };
    }

    fn offline_why(&self) -> String {
        match &*self.link() {
            Link::Offline { why, .. } => why.clone(),
            Link::Online => "the server could not be reached".into(),
        }
    }

    /// The DuckDB for offline queries: found once (looking may start Python), then kept.
    async fn runner(&self) -> Option<Runner> {
        if let Some(r) = &*self.runner.lock().unwrap_or_else(|p| p.into_inner()) {
            return Some(r.clone());
        }
        let duckdb = self.duckdb.clone();
        let found = tokio::task::spawn_blocking(move || crate::views::find(&duckdb))
            .await
            .ok()
            .flatten();
        if let Some(r) = &found {
            *self.runner.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
        }
        found
    }

    /// Handles one line of input: answers what is answered here, starts a task for the rest.
    fn dispatch(self: Arc<Self>, line: &[u8], tasks: &mut JoinSet<()>) {
        let message = match Incoming::parse(line) {
            Ok(m) => m,
            Err((id, e)) => return self.send(jsonrpc::error(&id, &e)),
        };
        // As it came, for the server.
        let raw: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
        match message {
            Incoming::Request { id, method, params } => match method.as_str() {
                "initialize" => {
                    let (result, version) = self.local.initialize(params.as_ref(), DIALECT);
                    self.remote.set_hello(params.as_ref(), version);
                    self.send(jsonrpc::result(&id, result));
                }
                "ping" => self.send(jsonrpc::result(&id, json!({}))),
                _ => {
                    let cancel = CancellationToken::new();
                    let number = self.sequence.fetch_add(1, Ordering::Relaxed);
                    self.running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id_key(&id), (number, cancel.clone()));
                    tasks.spawn(async move {
                        let answer = tokio::select! {
                            biased;
                            // A cancelled request gets no answer (MCP's rule).
                            () = cancel.cancelled() => None,
                            a = self.answer(&id, &method, params, &raw, &cancel) => a,
                        };
                        {
                            let mut running =
                                self.running.lock().unwrap_or_else(|p| p.into_inner());
                            if running.get(&id_key(&id)).is_some_and(|(n, _)| *n == number) {
                                running.remove(&id_key(&id));
                            }
                        }
                        if let Some(message) = answer {
                            self.send(message);
                        }
                    });
                }
            },
            Incoming::Notification { method, params } => match method.as_str() {
                // This process's own session is initialized by itself.
                "notifications/initialized" => {}
                "notifications/cancelled" => {
                    let request = params.as_ref().and_then(|p| p.get("requestId"));
                    if let Some(id) = request {
                        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some((_, cancel)) = running.get(&id_key(id)) {
                            cancel.cancel();
                        }
                    }
                    self.forward(raw, tasks);
                }
                _ => self.forward(raw, tasks),
            },
            // Answers to the server's own requests (if it sends any) go back to it.
            Incoming::Response { .. } => self.forward(raw, tasks),
        }
    }

    /// Passes a notification or response on to the server, when it is answering.
    fn forward(self: Arc<Self>, raw: Value, tasks: &mut JoinSet<()>) {
        if !self.is_online() {
            return;
        }
        tasks.spawn(async move {
            let result = self
                .remote
                .send(&raw, None, Duration::from_secs(30), &mut |m| {
                    tracing::debug!(message = %m, "the server answered a notification");
                })
                .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "could not pass a message on to the server");
            }
        });
    }

    /// The answer to a request: `None` when the server's answer was already passed on.
    async fn answer(
        &self,
        id: &Id,
        method: &str,
        params: Option<Value>,
        raw: &Value,
        cancel: &CancellationToken,
    ) -> Option<Value> {
        if self.try_server() {
            let out = self.out.clone();
            let mut pass_on = move |m: Value| {
                let _ = out.send(m);
            };
            match self
                .remote
                .send(raw, Some(id), timeout_for(method), &mut pass_on)
                .await
            {
                Ok(()) => {
                    self.went_online();
                    return None;
                }
                Err(RemoteError::Unreachable { why }) => self.went_offline(&why),
                Err(RemoteError::Refused { message }) => {
                    self.went_online();
                    return Some(jsonrpc::error(id, &jsonrpc::RpcError::internal(message)));
                }
            }
        }
        let backend = Offline::open(
            &self.dir,
            &self.offline_why(),
            self.runner().await,
            OFFLINE_TIMEOUT,
        );
        let server = McpServer {
            knowledge: self.dir.join(offline::RULES_DIR).is_dir(),
            ..self.local.clone()
        };
        let (result, _) = server
            .handle(&backend, method, params, cancel.clone())
            .await;
        Some(match result {
            Ok(v) => jsonrpc::result(id, v),
            Err(e) => jsonrpc::error(id, &e),
        })
    }
}

#[cfg(test)]
mod tests;
