//! Browser sessions over HTTP: signing in sets an `HttpOnly`, `SameSite=Lax`, host-only
//! session cookie (`Secure` when `server.public_url` is `https`) and a readable CSRF cookie;
//! a cookie-authenticated request that changes something must send that CSRF token back in
//! `X-CSRF-Token` and, when it has an `Origin`, come from the server's own origin. Bearer
//! tokens work as before and need neither.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use dataport_auth::{
    AuthError, BrowserSession, Credentials, Principal, SessionAuth, SessionCookie,
};
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, json_from_client};
use crate::{ApiError, AppState, RequestId};

pub(crate) const SESSION_COOKIE: &str = "dataport_session";
pub(crate) const CSRF_COOKIE: &str = "dataport_csrf";
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// The session a request's cookie carries, checked for CSRF when the request changes
/// something.
pub(crate) fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<SessionAuth, AuthError> {
    let value = cookie(headers, SESSION_COOKIE).ok_or(AuthError::Missing)?;
    let session = state.auth.check_session(&value)?;
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        check_csrf(state, headers, &session)?;
    }
    Ok(session)
}

/// The session's CSRF token sent back (in `X-CSRF-Token`, or a form's `csrf` field as
/// `token`) from this server's own pages.
pub(crate) fn check_csrf_token(
    state: &AppState,
    headers: &HeaderMap,
    session: &SessionAuth,
    token: &str,
) -> Result<(), AuthError> {
    if !session.csrf_matches(token) {
        return Err(AuthError::Forbidden {
            message: "this form is stale or from another site: reload the page and try again"
                .into(),
        });
    }
    same_origin(state, headers)
}

fn check_csrf(
    state: &AppState,
    headers: &HeaderMap,
    session: &SessionAuth,
) -> Result<(), AuthError> {
    let token = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !session.csrf_matches(token) {
        return Err(AuthError::Forbidden {
            message: "a request signed in by the session cookie that changes something needs the session's CSRF token in X-CSRF-Token (the dataport_csrf cookie)".into(),
        });
    }
    same_origin(state, headers)
}

/// Refuses a request whose `Origin` is not this server's (`server.public_url`, or the `Host`
/// it was sent to); a request without one (not from a browser's cross-site page) passes.
pub(crate) fn same_origin(state: &AppState, headers: &HeaderMap) -> Result<(), AuthError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let own = origin == state.options.public_url.trim_end_matches('/')
        || origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            == Some(host);
    if own {
        Ok(())
    } else {
        Err(AuthError::Forbidden {
            message: format!("requests from {origin} may not use this server's session"),
        })
    }
}

fn secure(state: &AppState) -> bool {
    state.options.public_url.starts_with("https://")
}

pub(crate) fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age: i64,
    http_only: bool,
) -> Option<HeaderValue> {
    let mut cookie = format!("{name}={value}; Path=/; Max-Age={max_age}; SameSite=Lax");
    if http_only {
        cookie.push_str("; HttpOnly");
    }
    if secure(state) {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).ok()
}

fn with_cookies(
    state: &AppState,
    mut response: Response,
    session: Option<&SessionCookie>,
) -> Response {
    let (value, csrf, max_age) = match session {
        Some(s) => (
            s.value.as_str(),
            s.csrf.as_str(),
            (s.expires_at - dataport_auth::now_secs()).max(0),
        ),
        None => ("", "", 0),
    };
    for cookie in [
        set_cookie(state, SESSION_COOKIE, value, max_age, true),
        set_cookie(state, CSRF_COOKIE, csrf, max_age, false),
    ]
    .into_iter()
    .flatten()
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Debug, Deserialize)]
struct SignIn {
    #[serde(alias = "user")]
    username: String,
    password: String,
}

#[derive(Debug, Serialize)]
struct SignedIn {
    user: String,
    groups: Vec<String>,
    admin: bool,
    /// Send it back in `X-CSRF-Token` (it is also in the `dataport_csrf` cookie).
    csrf_token: String,
    expires_at: i64,
}

/// Opens a session for `principal` after any sign-in (the browser's old session, if any, is
/// ended: the id rotates).
pub(crate) fn open_session(
    state: &AppState,
    principal: &Principal,
    address: &str,
    headers: &HeaderMap,
) -> Result<SessionCookie, AuthError> {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let old = cookie(headers, SESSION_COOKIE);
    state
        .auth
        .start_session(principal, address, agent, old.as_deref())
}

/// `response` with the session's cookies set (or, without a session, cleared).
pub(crate) fn with_session(
    state: &AppState,
    response: Response,
    session: Option<&SessionCookie>,
) -> Response {
    with_cookies(state, response, session)
}

/// Opens a session for `principal` and answers with its cookies and its CSRF token as JSON.
fn signed_in(
    state: &AppState,
    principal: &Principal,
    address: &str,
    headers: &HeaderMap,
) -> Result<(SessionCookie, Response), AuthError> {
    let session = open_session(state, principal, address, headers)?;
    let body = Json(SignedIn {
        user: principal.name.clone(),
        groups: principal.groups.clone(),
        admin: principal.admin,
        csrf_token: session.csrf.clone(),
        expires_at: session.expires_at,
    });
    let response = with_cookies(state, body.into_response(), Some(&session));
    Ok((session, response))
}

/// `POST /api/v1/auth/session` `{"username", "password"}` (username or email): a browser
/// session.
pub(crate) async fn post_session(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers().clone();
    // No signing a browser in from another site's page (login CSRF).
    same_origin(&state, &headers).map_err(|e| ApiError::of(&e, &id))?;
    let (address, body): (String, SignIn) =
        json_from_client(&state, &id, request, "{\"username\": …, \"password\": …}").await?;
    let auth = state.auth.clone();
    let (user, from) = (body.username.clone(), address.clone());
    let credentials = Credentials::Basic {
        user: body.username,
        password: body.password,
    };
    let principal = tokio::task::spawn_blocking(move || auth.authenticate(&credentials, &address))
        .await
        .map_err(|e| ApiError::internal(format!("sign-in task failed: {e}")).with_request_id(&id))?
        .map_err(|e| {
            state
                .auth
                .record_refusal("http", &id, Some(&user), &from, &e);
            ApiError::of(&e, &id)
        })?;
    crate::trace::record_user(&principal.name);
    let (session, response) =
        signed_in(&state, &principal, &from, &headers).map_err(|e| ApiError::of(&e, &id))?;
    tracing::info!(request_id = %id, user = %principal.name, session = %session.id, "signed in (browser session)");
    Ok(response)
}

/// `DELETE /api/v1/auth/session`: sign out (ends the cookie's session, clears the cookies).
pub(crate) async fn delete_session(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(value) = cookie(&headers, SESSION_COOKIE) {
        match state.auth.end_session(&value) {
            Ok(()) | Err(AuthError::InvalidToken) => {}
            Err(e) => return Err(ApiError::of(&e, &id)),
        }
    }
    Ok(with_cookies(
        &state,
        StatusCode::NO_CONTENT.into_response(),
        None,
    ))
}

#[derive(Debug, Serialize)]
struct SessionEntry {
    #[serde(flatten)]
    session: BrowserSession,
    /// The session of this request.
    current: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct SessionsBody {
    sessions: Vec<SessionEntry>,
}

/// `GET /api/v1/auth/sessions`: my browser sessions.
pub(crate) async fn get_sessions(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    current: Option<axum::Extension<SessionAuth>>,
) -> Result<Json<SessionsBody>, ApiError> {
    let current = current.map(|axum::Extension(s)| s.session_id);
    let sessions = state
        .auth
        .sessions(principal.id)
        .map_err(|e| ApiError::of(&e, &id))?
        .into_iter()
        .map(|session| SessionEntry {
            current: current.as_deref() == Some(session.id.as_str()),
            session,
        })
        .collect();
    Ok(Json(SessionsBody { sessions }))
}

/// `DELETE /api/v1/auth/sessions/{id}`: end one of my sessions.
pub(crate) async fn delete_one(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(session): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .end_session_of(principal.id, &session)
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(StatusCode::NO_CONTENT)
}
