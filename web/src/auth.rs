//! Authentication over HTTP: the bearer check in front of every API route, login, refresh,
//! logout, `me`, and the admin audit log.
//!
//! Every route except `/health` and `POST /api/v1/auth/login` (and `/metrics` from the
//! configured address ranges) goes through [`require_bearer`], which puts the caller's
//! [`Principal`] into the request; handlers read it with the [`Caller`] extractor, so a
//! route cannot forget to authenticate.

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dataport_auth::{AuditQuery, AuthError, Credentials, Principal, Session, parse_authorization};
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState, RequestId};

/// The authenticated caller of a request (set by [`require_bearer`]).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::from(AuthError::Missing).with_request_id(&request_id_of(&parts.headers))
        })
    }
}

/// An authenticated caller who is an administrator (`data-ops`).
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        if principal.admin {
            Ok(Self(principal))
        } else {
            Err(
                ApiError::forbidden("this needs an administrator (a member of data-ops)")
                    .with_request_id(&request_id_of(&parts.headers)),
            )
        }
    }
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the address it
/// forwarded (the right-most `X-Forwarded-For` entry not itself a trusted proxy).
pub(crate) fn client_ip(
    state: &AppState,
    parts_headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> String {
    let Some(peer) = peer else {
        return "unknown".into();
    };
    let trusted = |ip: &IpAddr| state.options.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return peer.to_string();
    }
    let forwarded = parts_headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted(ip))
        .unwrap_or(peer)
        .to_string()
}

/// The client's address (see [`client_ip`]) and the request's JSON body, within
/// `server.max_body_size`; `shape` shows the expected body in the error.
pub(crate) async fn json_from_client<T: serde::de::DeserializeOwned>(
    state: &AppState,
    id: &str,
    request: Request,
    shape: &str,
) -> Result<(String, T), ApiError> {
    let (parts, body) = request.into_parts();
    let address = client_ip(state, &parts.headers, peer_of(&parts.extensions));
    let bytes = axum::body::to_bytes(body, state.options.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::payload_too_large(state.options.max_body_bytes).with_request_id(id)
        })?;
    let body = serde_json::from_slice(&bytes).map_err(|e| bad_json(shape, e, id))?;
    Ok((address, body))
}

/// A JSON body that axum's extractor read: a rejection becomes 413 when the body was over
/// `server.max_body_size`, else 400 showing the expected `shape`.
pub(crate) fn json_body<T>(
    state: &AppState,
    id: &str,
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
    shape: &str,
) -> Result<T, ApiError> {
    match body {
        Ok(Json(value)) => Ok(value),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::payload_too_large(state.options.max_body_bytes).with_request_id(id))
        }
        Err(rejection) => Err(bad_json(shape, rejection, id)),
    }
}

fn bad_json(shape: &str, e: impl std::fmt::Display, id: &str) -> ApiError {
    ApiError::bad_request(format!("the body must be JSON {shape}: {e}")).with_request_id(id)
}

pub(crate) fn peer_of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
}

pub(crate) fn bearer_of(headers: &HeaderMap) -> Result<String, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed {
            reason: "the header is not valid ASCII".into(),
        })?;
    match parse_authorization(value)? {
        Credentials::Bearer(token) => Ok(token),
        Credentials::Basic { .. } => Err(AuthError::Malformed {
            reason: "the HTTP API takes bearer tokens: log in at POST /api/v1/auth/login and send 'authorization: Bearer <token>'".into(),
        }),
    }
}

/// Middleware: authenticate the bearer token (or the browser session's cookie), or answer 401.
pub(crate) async fn require_bearer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request_id_of(request.headers());
    // A bearer token when there is one, else the browser session's cookie.
    let principal = match bearer_of(request.headers()) {
        Err(AuthError::Missing) => {
            crate::session::authenticate(&state, request.method(), request.headers()).map(|s| {
                let principal = s.principal.clone();
                request.extensions_mut().insert(s);
                principal
            })
        }
        other => other.and_then(|t| state.auth.check_bearer(&t)),
    };
    match principal {
        // An assistant's token is good only at /mcp, which is not behind this middleware.
        Ok(p) if p.assistant => {
            tracing::info!(request_id = %id, user = %p.name, path = request.uri().path(), "request refused: an assistant's token outside /mcp");
            ApiError::forbidden(dataport_auth::ASSISTANT_ONLY_AT_MCP)
                .with_request_id(&id)
                .into_response()
        }
        Ok(p) if p.limited && !script_may_reach(request.uri().path()) => {
            ApiError::forbidden(
                "a notification script's token reads data (query, catalog, metrics, sync) and nothing else",
            )
            .with_request_id(&id)
            .into_response()
        }
        Ok(p) => {
            crate::trace::record_user(&p.name);
            request.extensions_mut().insert(Caller(p));
            next.run(request).await
        }
        Err(e) => {
            tracing::info!(request_id = %id, error = %e, path = request.uri().path(), "request refused: not authenticated");
            refused(&state, &id, &request, e).into_response()
        }
    }
}

/// Where a notification script's token is good: reading data as its owner, nothing that
/// manages credentials, scripts or accounts.
fn script_may_reach(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/query"
            | "/api/v1/catalog"
            | "/api/v1/metrics"
            | "/api/v1/auth/me"
            | "/api/v1/sync/manifest"
            | "/api/v1/sync/rules"
            | "/api/v1/sync/docs"
    ) || ([
        "/api/v1/catalog/",
        "/api/v1/metrics/",
        "/api/v1/sync/files/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
        && path != "/api/v1/catalog/refresh")
}

/// Middleware for `/metrics`: open to the configured address ranges, otherwise for
/// administrators with a bearer token.
pub(crate) async fn metrics_gate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = peer_of(request.extensions())
        .is_some_and(|ip| state.options.metrics_allow.iter().any(|n| n.contains(&ip)));
    if allowed {
        return next.run(request).await;
    }
    let id = request_id_of(request.headers());
    match bearer_of(request.headers()).and_then(|t| state.auth.check_bearer(&t)) {
        Ok(p) if p.admin && !p.assistant => next.run(request).await,
        Ok(_) => ApiError::forbidden("metrics are for administrators and the configured scrape addresses (server.metrics_allow)")
            .with_request_id(&id)
            .into_response(),
        Err(e) => ApiError::from(e).with_request_id(&id).into_response(),
    }
}

pub(crate) fn request_id_of(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    #[serde(alias = "user")]
    username: String,
    password: String,
}

impl std::fmt::Debug for LoginBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginBody")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
pub(crate) struct SessionBody {
    token: String,
    token_type: &'static str,
    /// Unix seconds.
    expires_at: i64,
    expires_in: i64,
    user: String,
    groups: Vec<String>,
    admin: bool,
}

impl From<Session> for SessionBody {
    fn from(s: Session) -> Self {
        Self {
            expires_in: s.expires_at - dataport_auth::now_secs(),
            token: s.token,
            token_type: "Bearer",
            expires_at: s.expires_at,
            user: s.principal.name,
            groups: s.principal.groups,
            admin: s.principal.admin,
        }
    }
}

/// `POST /api/v1/auth/login` `{"username", "password"}` → a session token.
pub(crate) async fn post_login(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Result<Json<SessionBody>, ApiError> {
    let (address, body): (String, LoginBody) =
        json_from_client(&state, &id, request, "{\"username\": …, \"password\": …}").await?;
    let auth = state.auth.clone();
    let (user, from) = (body.username.clone(), address.clone());
    // Argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let session =
        tokio::task::spawn_blocking(move || auth.login(&body.username, &body.password, &address))
            .await
            .map_err(|e| {
                ApiError::internal(format!("login task failed: {e}")).with_request_id(&id)
            })?
            .map_err(|e| {
                state
                    .auth
                    .record_refusal("http", &id, Some(&user), &from, &e);
                ApiError::from(e).with_request_id(&id)
            })?;
    crate::trace::record_user(&session.principal.name);
    tracing::info!(request_id = %id, user = %session.principal.name, "logged in");
    Ok(Json(session.into()))
}

/// `POST /api/v1/auth/refresh` with a session token (expired up to the grace period) → a
/// new token; the old one is revoked.
pub(crate) async fn post_refresh(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Result<Json<SessionBody>, ApiError> {
    let session = bearer_of(request.headers())
        .and_then(|token| state.auth.refresh(&token))
        .map_err(|e| refused(&state, &id, &request, e))?;
    Ok(Json(session.into()))
}

/// `POST /api/v1/auth/logout`: revoke the presented token (session or API token).
pub(crate) async fn post_logout(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Result<StatusCode, ApiError> {
    bearer_of(request.headers())
        .and_then(|token| state.auth.revoke(&token))
        .map_err(|e| refused(&state, &id, &request, e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Record a refused token in the audit log and make the error answer.
fn refused(state: &AppState, id: &str, request: &Request, e: AuthError) -> ApiError {
    let address = client_ip(state, request.headers(), peer_of(request.extensions()));
    state.auth.record_refusal("http", id, None, &address, &e);
    ApiError::from(e).with_request_id(id)
}

#[derive(Serialize)]
pub(crate) struct MeBody {
    user: String,
    groups: Vec<String>,
    admin: bool,
}

/// `GET /api/v1/auth/me`: who the token belongs to.
pub(crate) async fn get_me(Caller(p): Caller) -> Json<MeBody> {
    Json(MeBody {
        user: p.name,
        groups: p.groups,
        admin: p.admin,
    })
}

#[derive(Deserialize)]
pub(crate) struct AuditParams {
    user: Option<String>,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub(crate) struct AuditBody {
    entries: Vec<dataport_auth::AuditEntry>,
}

/// `GET /api/v1/admin/audit?user=&limit=`: the newest audit entries (administrators).
pub(crate) async fn get_audit(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(_): Admin,
    Query(params): Query<AuditParams>,
) -> Result<Json<AuditBody>, ApiError> {
    let query = AuditQuery {
        user: params.user,
        limit: params.limit.unwrap_or(100).min(10_000),
    };
    let store = std::sync::Arc::clone(state.auth.store());
    let entries = tokio::task::spawn_blocking(move || store.audit_entries(&query))
        .await
        .map_err(|e| ApiError::internal(format!("audit task failed: {e}")).with_request_id(&id))?
        .map_err(|e| ApiError::internal(e.to_string()).with_request_id(&id))?;
    Ok(Json(AuditBody { entries }))
}
