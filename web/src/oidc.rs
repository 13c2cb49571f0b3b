//! OpenID Connect sign-in in the browser: `GET /auth/oidc/<name>/start?next=…` sends the
//! browser to the provider (code flow with PKCE, `state`, `nonce`), and
//! `GET /auth/oidc/<name>/callback` takes its answer: the `state` must be the one this browser
//! started (a short-lived `dataport_oidc` cookie) and still kept (once, for ten minutes), the
//! code is exchanged and the ID token verified ([`dataport_auth::oidc::OidcClient`]), the
//! identity finds or creates its account ([`dataport_auth::Accounts::oidc_sign_in`]), and the
//! browser gets a session like any other sign-in.
//!
//! A failure sends the browser back to the login page with a code for a fixed sentence; the
//! server log says which check failed (never a token) and the audit log records the refusal.

use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::response::Response;
use dataport_auth::oidc::{OidcError, TokenRefusal};
use dataport_auth::{AuthError, Principal};
use serde::Deserialize;

use crate::auth::{client_ip, peer_of};
use crate::login::login_url;
use crate::pages::{local_path, see_other};
use crate::session::{self, set_cookie};
use crate::{AppState, RequestId};

/// Binds a sign-in to the browser that started it: holds the `state` sent to the provider.
const FLOW_COOKIE: &str = "dataport_oidc";

/// The redirect URI of provider `name` (register it at the provider).
pub fn redirect_uri(public_url: &str, name: &str) -> String {
    format!(
        "{}/auth/oidc/{name}/callback",
        public_url.trim_end_matches('/')
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct StartQuery {
    next: Option<String>,
}

/// `GET /auth/oidc/<name>/start?next=…`: to the provider.
pub(crate) async fn start(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Path(name): Path<String>,
    Query(query): Query<StartQuery>,
) -> Response {
    let next = local_path(query.next.as_deref());
    if !state.oidc.providers().any(|p| p.name == name) {
        return see_other(&login_url(&next, Some("unknown")));
    }
    let secrets = match state.auth.begin_oidc_sign_in(&name, &next) {
        Ok(secrets) => secrets,
        Err(e) => {
            tracing::error!(request_id = %id, provider = %name, error = %e, "cannot keep an OpenID Connect sign-in");
            return see_other(&login_url(&next, Some("provider")));
        }
    };
    let redirect = redirect_uri(&state.options.public_url, &name);
    match state
        .oidc
        .authorization_url(&name, &redirect, &secrets)
        .await
    {
        Ok(url) => {
            let mut response = see_other(&url);
            let max_age = dataport_auth::OIDC_SIGN_IN_TTL.as_secs() as i64;
            if let Some(cookie) = set_cookie(&state, FLOW_COOKIE, &secrets.state, max_age, true) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            tracing::info!(request_id = %id, provider = %name, "OpenID Connect sign-in started");
            response
        }
        Err(e) => {
            tracing::warn!(request_id = %id, provider = %name, error = %e, "OpenID Connect sign-in cannot start");
            see_other(&login_url(&next, Some(code_of(&e))))
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// The answering issuer (RFC 9207), when the provider names it.
    iss: Option<String>,
}

/// Why a provider's answer did not sign anyone in.
struct Failure {
    /// The login page's code.
    code: &'static str,
    /// The check that failed (logged and audited).
    reason: String,
    /// Where the browser was going.
    next: String,
    /// The verified email, once known.
    email: Option<String>,
}

/// `GET /auth/oidc/<name>/callback?code=…&state=…` (or `?error=…`): the provider's answer.
pub(crate) async fn callback(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Path(name): Path<String>,
    Query(query): Query<CallbackQuery>,
    request: Request,
) -> Response {
    // Only the parts: the body is not `Sync` and must not be held across the awaits.
    let (parts, _) = request.into_parts();
    let headers = &parts.headers;
    let address = client_ip(&state, headers, peer_of(&parts.extensions));
    let response = match finish(&state, &name, &query, headers).await {
        Ok((principal, next)) => match session::open_session(&state, &principal, &address, headers)
        {
            Ok(cookie) => {
                crate::trace::record_user(&principal.name);
                tracing::info!(request_id = %id, provider = %name, user = %principal.name, session = %cookie.id, "signed in (OpenID Connect)");
                session::with_session(&state, see_other(&next), Some(&cookie))
            }
            Err(e) => {
                tracing::error!(request_id = %id, error = %e, "cannot open a browser session");
                see_other(&login_url(&next, Some("provider")))
            }
        },
        Err(failure) => {
            tracing::warn!(
                request_id = %id,
                provider = %name,
                check = %failure.reason,
                email = failure.email.as_deref().unwrap_or("-"),
                "OpenID Connect sign-in refused"
            );
            state.auth.record_refusal(
                "oidc",
                &id,
                failure.email.as_deref(),
                &address,
                &AuthError::Forbidden {
                    message: format!("sign-in through {name} refused: {}", failure.reason),
                },
            );
            see_other(&login_url(&failure.next, Some(failure.code)))
        }
    };
    clear_flow_cookie(&state, response)
}

fn clear_flow_cookie(state: &AppState, mut response: Response) -> Response {
    if let Some(cookie) = set_cookie(state, FLOW_COOKIE, "", 0, true) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The checks of an answer, in order: this browser's `state`, kept and not used before, from
/// this provider; no error; the code exchanged and the ID token verified; an account.
async fn finish(
    state: &AppState,
    name: &str,
    query: &CallbackQuery,
    headers: &axum::http::HeaderMap,
) -> Result<(Principal, String), Failure> {
    let mut next = "/".to_string();
    let fail = |code, reason: String, next: &str| Failure {
        code,
        reason,
        next: next.to_string(),
        email: None,
    };
    let sent = query.state.as_deref().unwrap_or_default();
    if sent.is_empty() {
        return Err(fail("expired", "the answer has no state".into(), &next));
    }
    let browser = session::cookie(headers, FLOW_COOKIE).unwrap_or_default();
    if !dataport_auth::constant_time_eq(browser.as_bytes(), sent.as_bytes()) {
        return Err(fail(
            "expired",
            "the state is not the one this browser started (no dataport_oidc cookie, or another sign-in since)".into(),
            &next,
        ));
    }
    let flow = match state.auth.take_oidc_sign_in(sent) {
        Ok(Some(flow)) => flow,
        Ok(None) => {
            return Err(fail(
                "expired",
                "the state is unknown, used before (a replay) or older than ten minutes".into(),
                &next,
            ));
        }
        Err(e) => return Err(fail("provider", format!("state store: {e}"), &next)),
    };
    next = local_path(Some(&flow.next));
    if flow.provider != name {
        return Err(fail(
            "expired",
            format!("the state belongs to provider '{}'", flow.provider),
            &next,
        ));
    }
    if let Some(iss) = &query.iss
        && let Some(provider) = state.oidc.providers().find(|p| p.name == name)
        && iss.trim_end_matches('/') != provider.issuer.trim_end_matches('/')
    {
        return Err(fail(
            "token",
            format!("the answer names the issuer {iss}, not this provider's"),
            &next,
        ));
    }
    if let Some(error) = &query.error {
        let detail = query.error_description.as_deref().unwrap_or_default();
        let code = if error == "access_denied" {
            "denied"
        } else {
            "provider"
        };
        return Err(fail(
            code,
            format!("the provider answered {error} {detail}")
                .trim()
                .into(),
            &next,
        ));
    }
    let Some(code) = query.code.as_deref().filter(|c| !c.is_empty()) else {
        return Err(fail("provider", "the answer has no code".into(), &next));
    };
    let redirect = redirect_uri(&state.options.public_url, name);
    // The domain rules of the provider itself; the organisation's are the accounts'.
    let claims = state
        .oidc
        .exchange(name, code, &redirect, &flow.verifier, &flow.nonce, &[])
        .await
        .map_err(|e| fail(code_of(&e), e.to_string(), &next))?;
    let accounts = state.accounts.clone();
    let provider = name.to_string();
    let email = claims.email.clone();
    let account = tokio::task::spawn_blocking(move || {
        accounts.oidc_sign_in(
            &provider,
            &claims.email,
            claims.name.as_deref(),
            claims.picture.as_deref(),
        )
    })
    .await
    .unwrap_or_else(|e| {
        Err(AuthError::Internal {
            message: format!("sign-in task failed: {e}"),
        })
    });
    let with_email = |code, reason: String| Failure {
        code,
        reason,
        next: next.clone(),
        email: Some(email.clone()),
    };
    let account = account.map_err(|e| {
        let code = match e {
            AuthError::Disabled => "disabled",
            AuthError::Forbidden { .. } => "domain",
            _ => "provider",
        };
        with_email(code, e.to_string())
    })?;
    match state.auth.principal(&account.name) {
        Ok(Some(principal)) => Ok((principal, next)),
        Ok(None) => Err(with_email("disabled", "the account is not active".into())),
        Err(e) => Err(with_email("provider", e.to_string())),
    }
}

/// The login page's code for a provider failure.
fn code_of(e: &OidcError) -> &'static str {
    match e {
        OidcError::UnknownProvider(_) => "unknown",
        OidcError::Refused { refusal, .. } => match refusal {
            TokenRefusal::Domain(_) | TokenRefusal::HostedDomain(_) => "domain",
            TokenRefusal::EmailUnverified => "unverified",
            _ => "token",
        },
        _ => "provider",
    }
}
