//! `dataport login` through the browser, for accounts without a password (OpenID Connect):
//! the command line listens on a loopback port and opens
//! `/auth/cli?port=…&state=…&challenge=…`; the signed-in user approves it (a form with the
//! session's CSRF token); the browser is sent to `http://127.0.0.1:<port>/callback` with a
//! one-time code, which the command line redeems with its PKCE verifier at
//! `POST /api/v1/auth/cli/token` for a session token. The code only ever goes to the user's
//! own machine, and only the program that made the challenge can use it.

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use dataport_auth::AuthError;
use dataport_mail::escape;
use serde::Deserialize;

use crate::auth::{SessionBody, json_from_client};
use crate::login::{form_from_client, login_url};
use crate::pages::{FormTarget, page, problem, query_value, see_other};
use crate::session::{self, CSRF_COOKIE};
use crate::{ApiError, AppState, RequestId};

/// The approval page.
pub(crate) const CLI_PAGE: &str = "/auth/cli";

/// What the command line sends: where it listens, its `state`, and its PKCE challenge.
#[derive(Debug, Deserialize)]
pub(crate) struct CliRequest {
    #[serde(default)]
    port: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    challenge: String,
}

impl CliRequest {
    /// The loopback port (unprivileged) and a `state` of URL-safe characters.
    fn check(&self) -> Result<u16, &'static str> {
        let port = self
            .port
            .parse::<u16>()
            .ok()
            .filter(|p| *p >= 1024)
            .ok_or("the port is not one the command line can listen on")?;
        let state_ok = (16..=128).contains(&self.state.len())
            && self
                .state
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !state_ok || self.challenge.len() != 43 {
            return Err("this link was not made by dataport login");
        }
        Ok(port)
    }
}

fn show(state: &AppState, status: StatusCode, body: &str) -> Response {
    page(
        state,
        status,
        "Command-line sign-in",
        body,
        FormTarget::AlsoLoopback,
    )
}

fn broken(state: &AppState, reason: &str) -> Response {
    show(
        state,
        StatusCode::BAD_REQUEST,
        &format!(
            "<h1>This sign-in link does not work</h1>{}<p>Run <code>dataport login</code> again.</p>",
            problem(Some(reason))
        ),
    )
}

/// `GET /auth/cli?port=…&state=…&challenge=…`: approve the command line (after signing in).
pub(crate) async fn get_page(
    State(state): State<AppState>,
    uri: Uri,
    Query(request): Query<CliRequest>,
    headers: HeaderMap,
) -> Response {
    if let Err(reason) = request.check() {
        return broken(&state, reason);
    }
    let Ok(session) = session::authenticate(&state, &Method::GET, &headers) else {
        let here = uri
            .path_and_query()
            .map_or(CLI_PAGE, |pq| pq.as_str())
            .to_string();
        return see_other(&login_url(&here, None));
    };
    let csrf = session::cookie(&headers, CSRF_COOKIE).unwrap_or_default();
    let hidden = |name: &str, value: &str| {
        format!(
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        )
    };
    let body = format!(
        "<h1>Sign in the command line?</h1>\
         <p>A <code>dataport login</code> on this computer asks to act as <b>{}</b>, with your \
         access to data. Continue only if you just ran it.</p>\
         <form method=\"post\" action=\"{CLI_PAGE}\">{}{}{}{}\
         <button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button> \
         <button type=\"submit\" name=\"decision\" value=\"cancel\" class=\"secondary\">Cancel</button>\
         </form>",
        escape(&session.principal.name),
        hidden("csrf", &csrf),
        hidden("port", &request.port),
        hidden("state", &request.state),
        hidden("challenge", &request.challenge),
    );
    show(&state, StatusCode::OK, &body)
}

#[derive(Debug, Deserialize)]
pub(crate) struct Approval {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(flatten)]
    request: CliRequest,
}

/// `POST /auth/cli` (the approval form): to the command line's loopback port with a code, or
/// with `error=access_denied`.
pub(crate) async fn post_page(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Response {
    let Some((_, headers, form)) = form_from_client::<Approval>(&state, request).await else {
        return broken(&state, "the form could not be read");
    };
    let port = match form.request.check() {
        Ok(port) => port,
        Err(reason) => return broken(&state, reason),
    };
    let Ok(session) = session::authenticate(&state, &Method::GET, &headers) else {
        return see_other(&login_url(CLI_PAGE, Some("expired")));
    };
    if let Err(e) = session::check_csrf_token(&state, &headers, &session, &form.csrf) {
        tracing::warn!(request_id = %id, error = %e, "command-line approval without the session's CSRF token refused");
        return broken(&state, "this form is stale or from another site");
    }
    let callback = format!("http://127.0.0.1:{port}/callback");
    let the_state = query_value(&form.request.state);
    if form.decision != "allow" {
        return see_other(&format!("{callback}?error=access_denied&state={the_state}"));
    }
    match state
        .auth
        .grant_login_code(&session.principal, &form.request.challenge)
    {
        Ok(code) => see_other(&format!(
            "{callback}?code={}&state={the_state}",
            query_value(&code)
        )),
        Err(e) => {
            tracing::warn!(request_id = %id, error = %e, "cannot approve a command-line sign-in");
            broken(&state, &e.to_string())
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redeem {
    code: String,
    verifier: String,
}

/// `POST /api/v1/auth/cli/token` `{"code", "verifier"}` → a session token, like a login.
pub(crate) async fn post_token(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Result<Json<SessionBody>, ApiError> {
    let (address, body): (String, Redeem) =
        json_from_client(&state, &id, request, "{\"code\": …, \"verifier\": …}").await?;
    let session = state
        .auth
        .redeem_login_code(&body.code, &body.verifier)
        .map_err(|e: AuthError| {
            state.auth.record_refusal("http", &id, None, &address, &e);
            ApiError::of(&e, &id)
        })?;
    crate::trace::record_user(&session.principal.name);
    tracing::info!(request_id = %id, user = %session.principal.name, "logged in (command line, through the browser)");
    Ok(Json(session.into()))
}
