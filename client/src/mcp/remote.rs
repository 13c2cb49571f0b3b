//! The server's `/mcp` endpoint (MCP's Streamable HTTP transport, 2025-11-25) as this
//! process's client: one session, opened on first use with the stored login, re-opened when
//! the server forgets it (404), each message POSTed and each answer (one JSON body, or a stream
//! of server-sent events) handed on message by message.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::{StatusCode, Url, header};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::sse;
use crate::api::Api;
use crate::credentials::Credentials;
use crate::error::ClientError;

/// The session header.
const SESSION_HEADER: &str = "mcp-session-id";
/// The header with the protocol revision agreed in `initialize`.
const VERSION_HEADER: &str = "mcp-protocol-version";
/// How often a login whose token expires is read again (and refreshed when its expiry is near).
const RELOAD_LOGIN: Duration = Duration::from_secs(3600);
/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a message got no answer from the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RemoteError {
    /// The server cannot be used now (no connection, a timeout, 5xx, a login it refuses, no
    /// MCP endpoint): answer offline. The text completes "Offline: …".
    #[error("{why}")]
    Unreachable { why: String },
    /// The server answered, but not with a JSON-RPC message: the client gets this as an error.
    #[error("{message}")]
    Refused { message: String },
}

/// What the proxy's client said in its `initialize`, repeated in the server's.
#[derive(Debug, Clone)]
struct Hello {
    protocol_version: String,
    capabilities: Value,
    client_info: Value,
}

/// The stored login, for the endpoint (no `Debug`: it holds the token).
#[derive(Clone)]
struct Login {
    server: String,
    endpoint: Url,
    token: String,
    /// Whether the token expires (a session token, refreshed as `pull` refreshes it).
    expires: bool,
    /// When it was read (and refreshed if due).
    loaded: Instant,
}

/// A session with the server (no `Debug`: it holds the token it was opened with).
#[derive(Clone)]
struct Session {
    /// `Mcp-Session-Id`, when the server gave one.
    id: Option<String>,
    /// The token it was opened with: a new token (a refresh, a new login) opens a new one.
    token: String,
    version: String,
    /// Which session this is (a 404 forgets only the one it was sent with).
    generation: u64,
}

/// The server side of the proxy.
pub(crate) struct Remote {
    http: reqwest::Client,
    credentials: PathBuf,
    /// `--server`: the server to use, which the stored login must be for.
    server: Option<String>,
    login: Mutex<Option<Login>>,
    session: Mutex<Option<Session>>,
    generation: AtomicU64,
    hello: std::sync::Mutex<Hello>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("credentials", &self.credentials)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The innermost cause of a request error: `Connection refused (os error 111)` rather than
/// `error sending request for url (…)`.
fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer in time".into();
    }
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// "The server at URL could not be reached (reason)".
fn unreachable(server: &str, reason: &str) -> RemoteError {
    RemoteError::Unreachable {
        why: format!("the server at {server} could not be reached ({reason})"),
    }
}

fn same_id(message: &Value, id: &Value) -> bool {
    message.get("id") == Some(id)
        && (message.get("result").is_some() || message.get("error").is_some())
}

impl Remote {
    pub(crate) fn new(credentials: PathBuf, server: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("dataport-mcp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError::Http {
                url: server.clone().unwrap_or_default(),
                source,
            })?;
        Ok(Self {
            http,
            credentials,
            server,
            login: Mutex::new(None),
            session: Mutex::new(None),
            generation: AtomicU64::new(0),
            hello: std::sync::Mutex::new(Hello {
                protocol_version: dataport_mcp::server::LATEST_PROTOCOL_VERSION.into(),
                capabilities: json!({}),
                client_info: json!({"name": "dataport-mcp", "version": env!("CARGO_PKG_VERSION")}),
            }),
        })
    }

    /// Keeps the client's `initialize` (and the revision agreed with it) for the server's.
    pub(crate) fn set_hello(&self, params: Option<&Value>, version: &str) {
        let mut hello = self.hello.lock().unwrap_or_else(|p| p.into_inner());
        hello.protocol_version = version.to_string();
        if let Some(c) = params.and_then(|p| p.get("capabilities")) {
            hello.capabilities = c.clone();
        }
        if let Some(i) = params.and_then(|p| p.get("clientInfo")) {
            hello.client_info = i.clone();
        }
    }

    /// The stored login (its token refreshed when it expires soon), for the server asked for.
    async fn load_login(&self) -> Result<Login, RemoteError> {
        let (api, creds) = match Credentials::connect(&self.credentials).await {
            Ok(c) => c,
            Err(ClientError::NotLoggedIn { .. }) => {
                return Err(RemoteError::Unreachable {
                    why: format!(
                        "not logged in (no login stored at {}; run `dataport login --server URL`)",
                        self.credentials.display()
                    ),
                });
            }
            Err(e) => {
                let server = self
                    .server
                    .clone()
                    .or_else(|| Credentials::load(&self.credentials).ok().map(|c| c.server))
                    .unwrap_or_else(|| "?".into());
                return Err(unreachable(&server, &e.to_string()));
            }
        };
        if let Some(want) = &self.server {
            let want = Api::new(want, None)
                .map_err(|e| RemoteError::Unreachable { why: e.to_string() })?
                .server();
            if want != api.server() {
                return Err(RemoteError::Unreachable {
                    why: format!(
                        "not logged in to {want} (the stored login is for {}; run `dataport login --server {want}`)",
                        api.server()
                    ),
                });
            }
        }
        Ok(Login {
            server: api.server(),
            endpoint: api.url(&["mcp"]),
            token: creds.token,
            expires: creds.expires_at.is_some(),
            loaded: Instant::now(),
        })
    }

    /// The login to send: read once, and again every [`RELOAD_LOGIN`] for a token that
    /// expires, so that a process that runs for days refreshes it in time.
    async fn login(&self) -> Result<Login, RemoteError> {
        let mut login = self.login.lock().await;
        if let Some(l) = &*login
            && (!l.expires || l.loaded.elapsed() < RELOAD_LOGIN)
        {
            return Ok(l.clone());
        }
        let l = self.load_login().await?;
        *login = Some(l.clone());
        Ok(l)
    }

    /// After the server refused `old`'s token: the stored login again (`dataport login` may have
    /// run meanwhile), or why there is none it accepts.
    async fn relogin(&self, old: &Login, status: StatusCode) -> Result<(), RemoteError> {
        let mut login = self.login.lock().await;
        if login.as_ref().is_some_and(|l| l.token != old.token) {
            return Ok(()); // another call already has a new one
        }
        *login = None;
        let fresh = self.load_login().await?;
        if fresh.token == old.token {
            return Err(RemoteError::Unreachable {
                why: format!(
                    "the server at {} refused the stored login (HTTP {}; run `dataport login` again)",
                    old.server,
                    status.as_u16()
                ),
            });
        }
        *login = Some(fresh);
        Ok(())
    }

    async fn post(
        &self,
        login: &Login,
        session: Option<&Session>,
        message: &Value,
        timeout: Duration,
    ) -> Result<reqwest::Response, RemoteError> {
        let mut request = self
            .http
            .post(login.endpoint.clone())
            .bearer_auth(&login.token)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .timeout(timeout)
            .body(message.to_string());
        if let Some(s) = session {
            if let Some(id) = &s.id {
                request = request.header(SESSION_HEADER, id);
            }
            request = request.header(VERSION_HEADER, &s.version);
        }
        match request.send().await {
            Ok(r) => Ok(r),
            Err(e) => Err(unreachable(&login.server, &cause(&e))),
        }
    }

    /// Reads an answer: one JSON message, or a stream of events, each handed to `on_message`
    /// as it arrives. With `id`, it stops at the response to that request.
    async fn read(
        &self,
        login: &Login,
        response: reqwest::Response,
        id: Option<&Value>,
        on_message: &mut (dyn FnMut(Value) + Send),
    ) -> Result<(), RemoteError> {
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            let mut parser = sse::Parser::default();
            let mut response = response;
            let mut answered = false;
            loop {
                let chunk = match response.chunk().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) if answered => {
                        tracing::debug!(error = %e, "the event stream broke off after the answer");
                        return Ok(());
                    }
                    Err(e) => {
                        return Err(unreachable(
                            &login.server,
                            &format!("the answer broke off: {}", cause(&e)),
                        ));
                    }
                };
                for event in parser.feed(&chunk) {
                    answered |= self.event(event, id, on_message);
                }
                if answered {
                    return Ok(()); // the response ends the request's stream
                }
            }
            if let Some(event) = parser.finish() {
                answered |= self.event(event, id, on_message);
            }
            return match (id, answered) {
                (Some(_), false) => Err(RemoteError::Refused {
                    message: "the server ended its answer without a response; ask again".into(),
                }),
                _ => Ok(()),
            };
        }
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Err(unreachable(&login.server, &cause(&e))),
        };
        match serde_json::from_slice::<Value>(&body) {
            Ok(message) if message.get("jsonrpc").is_some() => {
                on_message(message);
                Ok(())
            }
            _ if body.is_empty() && id.is_none() => Ok(()),
            _ => Err(RemoteError::Refused {
                message: format!(
                    "the server answered HTTP {} ({}) with no JSON-RPC message: {}",
                    status.as_u16(),
                    if content_type.is_empty() {
                        "no content type"
                    } else {
                        &content_type
                    },
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(300)
                        .collect::<String>()
                ),
            }),
        }
    }

    /// Hands on one event's message; whether it is the response to `id`.
    fn event(
        &self,
        event: sse::Event,
        id: Option<&Value>,
        on_message: &mut (dyn FnMut(Value) + Send),
    ) -> bool {
        if event.event.as_deref().is_some_and(|e| e != "message") || event.data.is_empty() {
            return false;
        }
        match serde_json::from_str::<Value>(&event.data) {
            Ok(message) => {
                let done = id.is_some_and(|id| same_id(&message, id));
                on_message(message);
                done
            }
            Err(e) => {
                tracing::warn!(error = %e, "skipping an event that is not JSON");
                false
            }
        }
    }

    /// Opens a session: `initialize` with the client's hello, then `notifications/initialized`.
    async fn handshake(&self, login: &Login) -> Result<Session, HandshakeError> {
        let hello = self.hello.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let id = json!(format!("dataport-mcp-initialize-{generation}"));
        let message = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "initialize",
            "params": {
                "protocolVersion": hello.protocol_version,
                "capabilities": hello.capabilities,
                "clientInfo": hello.client_info,
            },
        });
        let response = self
            .post(login, None, &message, HANDSHAKE_TIMEOUT)
            .await
            .map_err(HandshakeError::Remote)?;
        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(HandshakeError::Login(status));
        }
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) {
            return Err(HandshakeError::Remote(RemoteError::Unreachable {
                why: format!(
                    "the server at {} has no MCP endpoint (POST /mcp answered HTTP {}; it may be older than this client)",
                    login.server,
                    status.as_u16()
                ),
            }));
        }
        if !status.is_success() {
            return Err(HandshakeError::Remote(unreachable(
                &login.server,
                &format!("HTTP {} to initialize", status.as_u16()),
            )));
        }
        let session_id = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut answer = None;
        self.read(login, response, Some(&id), &mut |m| {
            if same_id(&m, &id) {
                answer = Some(m);
            }
        })
        .await
        .map_err(|e| match e {
            RemoteError::Refused { message } => RemoteError::Unreachable {
                why: format!(
                    "the server at {} did not open an MCP session ({message})",
                    login.server
                ),
            },
            e => e,
        })
        .map_err(HandshakeError::Remote)?;
        let refused = |why: String| {
            HandshakeError::Remote(RemoteError::Unreachable {
                why: format!(
                    "the server at {} refused the MCP session ({why})",
                    login.server
                ),
            })
        };
        let answer = answer.ok_or_else(|| refused("no answer to initialize".into()))?;
        if let Some(e) = answer.get("error") {
            return Err(refused(
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("an error")
                    .to_string(),
            ));
        }
        let version = answer
            .pointer("/result/protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(&hello.protocol_version)
            .to_string();
        let session = Session {
            id: session_id,
            token: login.token.clone(),
            version,
            generation,
        };
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let response = self
            .post(login, Some(&session), &initialized, HANDSHAKE_TIMEOUT)
            .await
            .map_err(HandshakeError::Remote)?;
        if !response.status().is_success() {
            return Err(refused(format!(
                "HTTP {} to notifications/initialized",
                response.status().as_u16()
            )));
        }
        tracing::info!(server = %login.server, session = session.id.is_some(), version = %session.version, "MCP session opened");
        Ok(session)
    }

    async fn session(&self, login: &Login) -> Result<Session, HandshakeError> {
        let mut session = self.session.lock().await;
        if let Some(s) = &*session
            && s.token == login.token
        {
            return Ok(s.clone());
        }
        let s = self.handshake(login).await?;
        *session = Some(s.clone());
        Ok(s)
    }

    async fn forget(&self, generation: u64) {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|s| s.generation == generation) {
            *session = None;
        }
    }

    /// Sends one client message (as it came) to the server and hands every message of the
    /// answer to `on_message`, in order. `id` is the request's (none for a notification or a
    /// response, which the server only acknowledges).
    pub(crate) async fn send(
        &self,
        message: &Value,
        id: Option<&Value>,
        timeout: Duration,
        on_message: &mut (dyn FnMut(Value) + Send),
    ) -> Result<(), RemoteError> {
        let mut relogged = false;
        let mut reopened = false;
        loop {
            let login = self.login().await?;
            let session = match self.session(&login).await {
                Ok(s) => s,
                Err(HandshakeError::Login(status)) if !relogged => {
                    relogged = true;
                    self.relogin(&login, status).await?;
                    continue;
                }
                Err(HandshakeError::Login(status)) => {
                    return Err(RemoteError::Unreachable {
                        why: format!(
                            "the server at {} refused the stored login (HTTP {}; run `dataport login` again)",
                            login.server,
                            status.as_u16()
                        ),
                    });
                }
                Err(HandshakeError::Remote(e)) => return Err(e),
            };
            let response = self.post(&login, Some(&session), message, timeout).await?;
            let status = response.status();
            match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    self.forget(session.generation).await;
                    if relogged {
                        return Err(RemoteError::Unreachable {
                            why: format!(
                                "the server at {} refused the stored login (HTTP {}; run `dataport login` again)",
                                login.server,
                                status.as_u16()
                            ),
                        });
                    }
                    relogged = true;
                    self.relogin(&login, status).await?;
                }
                StatusCode::NOT_FOUND if session.id.is_some() && !reopened => {
                    // The server forgot the session (a restart): open a new one and resend.
                    tracing::info!("the server forgot the MCP session; opening a new one");
                    reopened = true;
                    self.forget(session.generation).await;
                }
                s if s.is_server_error() => {
                    return Err(unreachable(&login.server, &format!("HTTP {}", s.as_u16())));
                }
                StatusCode::ACCEPTED => return Ok(()),
                s if s.is_success() => return self.read(&login, response, id, on_message).await,
                s => {
                    // A refusal with a JSON-RPC error (429, 400, …) goes to the client as it is.
                    let mut answer = None;
                    let read = self
                        .read(&login, response, None, &mut |m| answer = Some(m))
                        .await;
                    return match (answer, read) {
                        (Some(m), _) if id.is_none_or(|id| same_id(&m, id)) => {
                            on_message(m);
                            Ok(())
                        }
                        (_, Err(e)) => Err(e),
                        _ => Err(RemoteError::Refused {
                            message: format!(
                                "the server refused the request (HTTP {})",
                                s.as_u16()
                            ),
                        }),
                    };
                }
            }
        }
    }

    /// Ends the session (`DELETE`), when there is one; errors only logged.
    pub(crate) async fn close(&self) {
        let Some(session) = self.session.lock().await.take() else {
            return;
        };
        let Some(id) = session.id else { return };
        let Some(login) = self.login.lock().await.clone() else {
            return;
        };
        let result = self
            .http
            .delete(login.endpoint)
            .bearer_auth(&login.token)
            .header(SESSION_HEADER, id)
            .header(VERSION_HEADER, session.version)
            .timeout(Duration::from_secs(3))
            .send()
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %cause(&e), "could not end the MCP session");
        }
    }
}

/// Why a session could not be opened.
enum HandshakeError {
    /// The token was refused (401, 403).
    Login(StatusCode),
    Remote(RemoteError),
}
