//! Signing in with a browser: the login page (`GET /login`: a button per OpenID Connect
//! provider in the configured order, the password form, the link to set or reset a password),
//! its form (`POST /login`) and signing out (`POST /logout`). Every way in ends in the same
//! browser session ([`crate::session`]); the browser then goes to `next`, a path on this server
//! only.
//!
//! A provider's failure comes back as `?error=<code>`: the page shows a fixed sentence for the
//! code, never text from the URL, so a link cannot make the page say something else.

use axum::Form;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use dataport_auth::{AuthError, Credentials, SessionAuth};
use dataport_mail::escape;
use serde::Deserialize;

use crate::auth::{client_ip, peer_of};
use crate::pages::{FormTarget, local_path, page, problem, query_value, see_other};
use crate::session::{self, CSRF_COOKIE};
use crate::{AppState, RequestId};

/// The login page.
pub(crate) const LOGIN_PAGE: &str = "/login";

/// Why a sign-in came back to the login page, as the page says it.
pub(crate) fn failure_sentence(code: &str) -> &'static str {
    match code {
        "denied" => "The sign-in was cancelled or refused at the provider.",
        "expired" => "That sign-in took too long or was already used. Start again from this page.",
        "domain" => {
            "This account may not sign in here. Use your organisation's account, or ask an administrator to invite your email."
        }
        "unverified" => "The provider has not verified this account's email address.",
        "disabled" => "This account is disabled. Ask an administrator (data-ops).",
        "token" => {
            "The provider's answer could not be verified, so you are not signed in. Try again; if it happens again, tell an administrator."
        }
        "unknown" => "There is no such sign-in provider.",
        _ => {
            "The sign-in provider could not be reached or gave an answer that cannot be used. Try again later, or sign in with your password."
        }
    }
}

/// The login page's address with `next` and a failure `code`.
pub(crate) fn login_url(next: &str, code: Option<&str>) -> String {
    let mut url = format!("{LOGIN_PAGE}?next={}", query_value(next));
    if let Some(code) = code {
        url.push_str("&error=");
        url.push_str(&query_value(code));
    }
    url
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
    error: Option<String>,
}

/// `GET /login?next=…&error=…`.
pub(crate) async fn get_login(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let next = local_path(query.next.as_deref());
    if let Ok(session) = session::authenticate(&state, &Method::GET, &headers) {
        if query.next.is_some() && query.error.is_none() {
            return see_other(&next);
        }
        return signed_in_page(&state, &session, &headers);
    }
    let trouble = query.error.as_deref().map(failure_sentence);
    login_page(&state, StatusCode::OK, &next, trouble, "")
}

fn login_page(
    state: &AppState,
    status: StatusCode,
    next: &str,
    trouble: Option<&str>,
    login: &str,
) -> Response {
    let providers: String = state
        .oidc
        .providers()
        .map(|p| {
            format!(
                "<a class=\"button provider\" href=\"/auth/oidc/{}/start?next={}\">Sign in with {}</a>",
                escape(&p.name),
                escape(&query_value(next)),
                escape(p.label.as_deref().unwrap_or(&p.name))
            )
        })
        .collect();
    let or = if providers.is_empty() {
        String::new()
    } else {
        "<p class=\"or\">or with your password</p>".to_string()
    };
    let body = format!(
        "<h1>Sign in to {}</h1>{}{providers}{or}\
         <form method=\"post\" action=\"{LOGIN_PAGE}\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>Email or username <input type=\"text\" name=\"login\" value=\"{}\" autocomplete=\"username\" required autofocus></label>\
         <label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\"><a href=\"{}\">Forgot your password, or invited without one?</a></p>",
        escape(&state.options.instance_name),
        problem(trouble),
        escape(next),
        escape(login),
        crate::password::PASSWORD_PAGE,
    );
    page(state, status, "Sign in", &body, FormTarget::SelfOnly)
}

fn signed_in_page(state: &AppState, session: &SessionAuth, headers: &HeaderMap) -> Response {
    let csrf = session::cookie(headers, CSRF_COOKIE).unwrap_or_default();
    let groups = if session.principal.groups.is_empty() {
        "no groups yet: ask an administrator for access".to_string()
    } else {
        session.principal.groups.join(", ")
    };
    let body = format!(
        "<h1>Signed in</h1><p>You are <b>{}</b> ({}).</p>\
         <form method=\"post\" action=\"/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" class=\"secondary\">Sign out</button></form>",
        escape(&session.principal.name),
        escape(&groups),
        escape(&csrf),
    );
    page(
        state,
        StatusCode::OK,
        "Signed in",
        &body,
        FormTarget::SelfOnly,
    )
}

/// A form posted by a browser: its client address, headers and fields; None when the body is
/// not the form.
pub(crate) async fn form_from_client<T: serde::de::DeserializeOwned>(
    state: &AppState,
    request: Request,
) -> Option<(String, HeaderMap, T)> {
    let address = client_ip(state, request.headers(), peer_of(request.extensions()));
    let headers = request.headers().clone();
    let Form(fields) = Form::<T>::from_request(request, state).await.ok()?;
    Some((address, headers, fields))
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login` (the page's form): a browser session, then `next`.
pub(crate) async fn post_login(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Response {
    let Some((address, headers, form)) = form_from_client::<LoginForm>(&state, request).await
    else {
        return login_page(
            &state,
            StatusCode::BAD_REQUEST,
            "/",
            Some("The form could not be read; try again."),
            "",
        );
    };
    let next = local_path(form.next.as_deref());
    // No signing a browser in from another site's page (login CSRF).
    if let Err(e) = session::same_origin(&state, &headers) {
        tracing::warn!(request_id = %id, error = %e, "a sign-in form from another site was refused");
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            &next,
            Some("Sign in from this server's own page."),
            "",
        );
    }
    let auth = state.auth.clone();
    let credentials = Credentials::Basic {
        user: form.login.clone(),
        password: form.password,
    };
    let from = address.clone();
    let outcome = tokio::task::spawn_blocking(move || auth.authenticate(&credentials, &from))
        .await
        .unwrap_or_else(|e| {
            Err(AuthError::Internal {
                message: format!("sign-in task failed: {e}"),
            })
        });
    let principal = match outcome {
        Ok(principal) => principal,
        Err(e) => {
            state
                .auth
                .record_refusal("http", &id, Some(&form.login), &address, &e);
            let status = crate::error::status_for(dataport_common::HasKind::kind(&e));
            let sentence = match &e {
                AuthError::Internal { .. } => "Something went wrong; try again later.".to_string(),
                e => capitalized(&e.to_string()),
            };
            return login_page(&state, status, &next, Some(&sentence), &form.login);
        }
    };
    crate::trace::record_user(&principal.name);
    match session::open_session(&state, &principal, &address, &headers) {
        Ok(cookie) => {
            tracing::info!(request_id = %id, user = %principal.name, session = %cookie.id, "signed in (login page)");
            session::with_session(&state, see_other(&next), Some(&cookie))
        }
        Err(e) => {
            tracing::error!(request_id = %id, error = %e, "cannot open a browser session");
            login_page(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                &next,
                Some("Something went wrong; try again later."),
                &form.login,
            )
        }
    }
}

fn capitalized(sentence: &str) -> String {
    let mut chars = sentence.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /logout` (the signed-in page's form, with the session's CSRF token): ends the session.
pub(crate) async fn post_logout(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Response {
    let Some((_, headers, form)) = form_from_client::<LogoutForm>(&state, request).await else {
        return see_other(LOGIN_PAGE);
    };
    let Ok(session) = session::authenticate(&state, &Method::GET, &headers) else {
        // Signed out already (or expired): clear what the browser has.
        return session::with_session(&state, see_other(LOGIN_PAGE), None);
    };
    if let Err(e) = session::check_csrf_token(&state, &headers, &session, &form.csrf) {
        tracing::warn!(request_id = %id, error = %e, "sign-out without the session's CSRF token refused");
        return page(
            &state,
            StatusCode::FORBIDDEN,
            "Sign out",
            &format!(
                "<h1>Not signed out</h1>{}<p><a href=\"{LOGIN_PAGE}\">Back</a></p>",
                problem(Some(&capitalized(&e.to_string())))
            ),
            FormTarget::SelfOnly,
        );
    }
    if let Some(value) = session::cookie(&headers, session::SESSION_COOKIE)
        && let Err(e) = state.auth.end_session(&value)
    {
        tracing::warn!(request_id = %id, error = %e, "cannot end a browser session");
    }
    tracing::info!(request_id = %id, user = %session.principal.name, "signed out (browser session)");
    session::with_session(&state, see_other(LOGIN_PAGE), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_code_shows_a_fixed_sentence() {
        assert!(failure_sentence("domain").contains("may not sign in here"));
        // Unknown codes (anything a link could put there) say the generic sentence.
        assert_eq!(failure_sentence("<script>"), failure_sentence("provider"),);
        assert_eq!(
            login_url("/a b", Some("expired")),
            "/login?next=%2Fa+b&error=expired"
        );
    }
}
