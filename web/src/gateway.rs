//! The notification gateway: the desktop app's WebSocket at [`GATEWAY_PATH`], on the same
//! listener as everything else (one reverse-proxy rule serves it).
//!
//! The contract (`docs/notifications.md`): the client connects and must send
//! `{"type":"auth","token":"<JWT>"}` within the auth timeout (10 s); the server answers
//! `{"type":"auth_ok","username":…}`, or `{"type":"auth_error","message":…}` and closes. The
//! server sends `{"type":"ping"}` every ping interval (30 s) and closes a connection that
//! left three of them without a `{"type":"pong"}`. An account has at most five connections;
//! a sixth is refused with a message saying so. Every notification of the account goes to all
//! of its connections as `{"type":"notification",…}`. The token is checked again at every
//! ping: a revoked token or a disabled account ends the connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::{IntoResponse, Response};
use dataport_auth::Authenticator;
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{ApiError, AppState, RequestId};

/// Where the desktop app connects.
pub const GATEWAY_PATH: &str = "/api/v1/desktop/ws";
/// Messages queued for one connection; a client that falls this far behind is closed.
const QUEUE: usize = 256;
/// Largest message a client may send.
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;

/// The gateway's rules.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    /// Pings left unanswered before the connection is closed.
    pub missed_pongs: u32,
    pub max_connections_per_account: usize,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            auth_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(30),
            missed_pongs: 3,
            max_connections_per_account: 5,
        }
    }
}

struct Connection {
    id: u64,
    tx: mpsc::Sender<Message>,
}

/// The open connections, by account. Cheap to share (`Arc`).
#[derive(Default)]
pub struct Gateway {
    options: GatewayOptions,
    connections: Mutex<HashMap<i64, Vec<Connection>>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    refused_auth: AtomicU64,
    refused_limit: AtomicU64,
    closed_silent: AtomicU64,
    delivered: AtomicU64,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("options", &self.options)
            .field("figures", &self.figures())
            .finish_non_exhaustive()
    }
}

/// The gateway at a glance (`/health`).
#[derive(Debug, Clone, Serialize)]
pub struct GatewayFigures {
    pub status: &'static str,
    pub connections: usize,
    pub users: usize,
}

impl Gateway {
    pub fn new(options: GatewayOptions) -> Self {
        Self {
            options,
            ..Self::default()
        }
    }

    pub fn figures(&self) -> GatewayFigures {
        let conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        GatewayFigures {
            status: "ok",
            connections: conns.values().map(Vec::len).sum(),
            users: conns.values().filter(|v| !v.is_empty()).count(),
        }
    }

    /// Prometheus lines.
    pub fn render_metrics(&self) -> String {
        let f = self.figures();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP dataport_gateway_connections Open notification gateway (WebSocket) connections.\n\
             # TYPE dataport_gateway_connections gauge\n\
             dataport_gateway_connections {}\n\
             # HELP dataport_gateway_users Accounts with an open gateway connection.\n\
             # TYPE dataport_gateway_users gauge\n\
             dataport_gateway_users {}\n\
             # HELP dataport_gateway_connections_total Gateway connections by how they ended or were refused.\n\
             # TYPE dataport_gateway_connections_total counter\n\
             dataport_gateway_connections_total{{result=\"accepted\"}} {}\n\
             dataport_gateway_connections_total{{result=\"refused_auth\"}} {}\n\
             dataport_gateway_connections_total{{result=\"refused_limit\"}} {}\n\
             dataport_gateway_connections_total{{result=\"closed_silent\"}} {}\n\
             # HELP dataport_gateway_notifications_total Notifications sent to gateway connections.\n\
             # TYPE dataport_gateway_notifications_total counter\n\
             dataport_gateway_notifications_total {}\n",
            f.connections,
            f.users,
            load(&self.accepted),
            load(&self.refused_auth),
            load(&self.refused_limit),
            load(&self.closed_silent),
            load(&self.delivered),
        )
    }

    /// Registers a connection of `account`, unless it has the most it may have.
    fn register(&self, account: i64, tx: mpsc::Sender<Message>) -> Option<u64> {
        let mut conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let list = conns.entry(account).or_default();
        list.retain(|c| !c.tx.is_closed());
        if list.len() >= self.options.max_connections_per_account {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push(Connection { id, tx });
        Some(id)
    }

    fn unregister(&self, account: i64, id: u64) {
        let mut conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = conns.get_mut(&account) {
            list.retain(|c| c.id != id);
            if list.is_empty() {
                conns.remove(&account);
            }
        }
    }

    async fn serve(self: Arc<Self>, socket: WebSocket, auth: Authenticator) {
        let (mut sink, mut stream) = socket.split();
        // 1. The auth message, in time.
        let first = tokio::time::timeout(self.options.auth_timeout, stream.next()).await;
        let token = match first {
            Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Value>(&text)
                .ok()
                .filter(|v| v["type"] == "auth")
                .and_then(|v| v["token"].as_str().map(str::to_string)),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
            _ => None,
        };
        let Some(token) = token else {
            self.refused_auth.fetch_add(1, Ordering::Relaxed);
            let secs = self.options.auth_timeout.as_secs();
            let message = format!(
                "send {{\"type\":\"auth\",\"token\":\"<JWT>\"}} as the first message, within {secs} s"
            );
            refuse(&mut sink, &message, "authentication failed").await;
            return;
        };
        let principal = match auth.check_desktop(&token) {
            Ok(p) if p.id > 0 => p,
            Ok(_) => {
                self.refused_auth.fetch_add(1, Ordering::Relaxed);
                refuse(
                    &mut sink,
                    "this token is not an account's",
                    "authentication failed",
                )
                .await;
                return;
            }
            Err(e) => {
                self.refused_auth.fetch_add(1, Ordering::Relaxed);
                tracing::info!(error = %e, "gateway connection refused");
                refuse(&mut sink, &e.to_string(), "authentication failed").await;
                return;
            }
        };
        // 2. Room for one more connection of the account.
        let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
        let Some(id) = self.register(principal.id, tx) else {
            self.refused_limit.fetch_add(1, Ordering::Relaxed);
            let most = self.options.max_connections_per_account;
            let message = format!(
                "{} has {most} gateway connections open, the most an account may have; close one first",
                principal.name
            );
            refuse(&mut sink, &message, "too many connections").await;
            return;
        };
        self.accepted.fetch_add(1, Ordering::Relaxed);
        tracing::info!(user = %principal.name, connection = id, "gateway connection opened");
        let ok = json!({"type": "auth_ok", "username": principal.name}).to_string();
        if sink.send(Message::Text(ok.into())).await.is_err() {
            self.unregister(principal.id, id);
            return;
        }
        // 3. Pings, pongs and notifications until one side stops.
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.options.ping_interval,
            self.options.ping_interval,
        );
        let mut unanswered = 0u32;
        let ended = loop {
            tokio::select! {
                outgoing = rx.recv() => match outgoing {
                    Some(m) => {
                        if sink.send(m).await.is_err() {
                            break "the client went away";
                        }
                    }
                    None => break "the server closed it",
                },
                _ = ticker.tick() => {
                    if unanswered >= self.options.missed_pongs {
                        self.closed_silent.fetch_add(1, Ordering::Relaxed);
                        let _ = sink.send(close(close_code::POLICY, "no pong to three pings")).await;
                        break "no pong to three pings";
                    }
                    if auth.check_desktop(&token).is_err() {
                        refuse(&mut sink, "the token was revoked or the account disabled", "token no longer valid").await;
                        break "its token is no longer valid";
                    }
                    unanswered += 1;
                    if sink.send(Message::Text(json!({"type": "ping"}).to_string().into())).await.is_err() {
                        break "the client went away";
                    }
                }
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let kind = serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|v| v["type"].as_str().map(str::to_string));
                        if kind.as_deref() == Some("pong") {
                            unanswered = 0;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break "the client closed it",
                    Some(Ok(_)) => {}
                },
            }
        };
        self.unregister(principal.id, id);
        tracing::info!(user = %principal.name, connection = id, reason = ended, "gateway connection closed");
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.chars().take(120).collect::<String>()),
    }))
}

/// Tell the client why, then close.
async fn refuse(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    message: &str,
    reason: &str,
) {
    let text = json!({"type": "auth_error", "message": message}).to_string();
    let _ = sink.send(Message::Text(text.into())).await;
    let _ = sink.send(close(close_code::POLICY, reason)).await;
}

impl dataport_notify::LiveChannel for Gateway {
    fn publish(&self, account_id: i64, message: &Value) -> usize {
        let text = message.to_string();
        let mut conns = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = conns.get_mut(&account_id) else {
            return 0;
        };
        // A connection whose queue is full is too far behind: dropping its sender ends it.
        list.retain(|c| c.tx.try_send(Message::Text(text.clone().into())).is_ok());
        let n = list.len();
        if message["type"] == "notification" {
            self.delivered.fetch_add(n as u64, Ordering::Relaxed);
        }
        n
    }
}

/// `GET /api/v1/desktop/ws`: the WebSocket upgrade; authentication is the first message.
pub(crate) async fn get_ws(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Some(notify) = state.notify.clone() else {
        return crate::notify::not_configured(&id).into_response();
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return ApiError::bad_request(format!(
                "this is the notification gateway: connect with a WebSocket client ({e})"
            ))
            .with_request_id(&id)
            .into_response();
        }
    };
    let auth = state.auth.clone();
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| notify.gateway.serve(socket, auth))
}
