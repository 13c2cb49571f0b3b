//! The portal: server-rendered pages for analysts and administrators, on the same identity,
//! grants and API functions as every other surface. Each page's handler builds one data value
//! (what the page shows, and nothing its viewer could not read through the API) and answers it
//! as HTML (an askama template in `web/templates/`, escaped everywhere) or, asked with
//! `?format=json` or `Accept: application/json`, as the JSON it was built from.
//!
//! Pages need a browser session (else to `/login?next=…`) or a bearer token (JSON); forms carry
//! the session's CSRF token, and a form that changed something may send the browser back to its
//! page with a one-time message ([`act_on_form`], the flash). No page runs inline script: the
//! Content-Security-Policy allows only this server's own files, which are served with content
//! hashes ([`assets`]).

mod activity;
mod admin;
pub(crate) mod assets;
mod assistants;
mod catalog;
mod home;
mod memory;
mod metrics;
mod notifications;
mod operations;
mod sources;
mod sql;

use std::future::Future;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use dataport_auth::Principal;
use serde::Serialize;

use crate::brand;
use crate::login::login_url;
use crate::pages::{local_path, see_other};
use crate::session::{self, CSRF_COOKIE};
use crate::{ApiError, AppState};

pub(crate) use activity::get_activity;
pub(crate) use admin::{
    get_accounts, get_audit, get_grants, post_account, post_grant, post_invite,
};
pub(crate) use assistants::{get_assistants, post_assistant, post_assistant_revoke};
pub(crate) use catalog::{get_search, get_table};
pub(crate) use home::{end_session, get_home, post_token, revoke_token};
pub(crate) use memory::{
    get_admin_memory, get_memory, get_memory_item, get_memory_notes, post_memory_moderate,
    post_memory_notes, post_memory_review, post_memory_vote,
};
pub(crate) use metrics::get_metric;
pub(crate) use notifications::{
    get_notifications, post_desktop, post_desktop_revoke, post_script, post_script_action,
    post_telegram, post_telegram_unlink,
};
pub(crate) use operations::{get_health, get_job, get_jobs, post_run};
pub(crate) use sources::get_sources;
pub(crate) use sql::{RunningQueries, get_sql, post_cancel, post_download, post_sql};

/// The cookie that carries a flash: what a form did, shown once on the page it returns to.
const FLASH_COOKIE: &str = "dataport_flash";
/// Longest flash shown.
const MAX_FLASH: usize = 500;

/// The portal's policy: this server's own styles, scripts and images, nothing inline.
pub(crate) const POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data: https:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Who is looking at a page: signed in by the browser session (with its CSRF token for the
/// page's forms), or by a bearer token (the JSON twins).
pub(crate) struct Viewer {
    pub(crate) principal: Principal,
    /// The session's CSRF token; empty for a bearer token.
    pub(crate) csrf: String,
    /// The browser session (none for a bearer token).
    pub(crate) session: Option<dataport_auth::SessionAuth>,
    pub(crate) json: bool,
    /// What the form posted just before said it did (the flash), shown once on this page.
    pub(crate) flash: Option<String>,
}

/// Whether the request asks for the page's JSON (`?format=json`, or JSON preferred to HTML).
fn wants_json(parts: &Parts) -> bool {
    let query = parts.uri.query().unwrap_or_default();
    if query.split('&').any(|p| p == "format=json") {
        return true;
    }
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    accept.contains("application/json") && !accept.contains("text/html")
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let json = wants_json(parts);
        if let Ok(token) = crate::auth::bearer_of(&parts.headers) {
            return match state.auth.check_bearer(&token) {
                Ok(principal) if principal.limited => Err(ApiError::forbidden(
                    "the portal is for people; a notification script's token reads data only",
                )
                .into_response()),
                Ok(principal) if principal.assistant => {
                    Err(ApiError::forbidden(dataport_auth::ASSISTANT_ONLY_AT_MCP).into_response())
                }
                Ok(principal) => {
                    crate::trace::record_user(&principal.name);
                    Ok(Self {
                        principal,
                        csrf: String::new(),
                        session: None,
                        json: true,
                        flash: None,
                    })
                }
                Err(e) => Err(ApiError::from(e).into_response()),
            };
        }
        match session::authenticate(state, &Method::GET, &parts.headers) {
            Ok(auth) => Ok(Self::of_session(auth, &parts.headers, json)),
            Err(e) if json => Err(ApiError::from(e).into_response()),
            Err(_) => {
                let here = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str())
                    .to_string();
                Err(see_other(&login_url(&here, None)))
            }
        }
    }
}

impl Viewer {
    /// The viewer a browser session (`auth`, of a request with `headers`) makes.
    pub(crate) fn of_session(
        auth: dataport_auth::SessionAuth,
        headers: &HeaderMap,
        json: bool,
    ) -> Self {
        crate::trace::record_user(&auth.principal.name);
        let csrf = session::cookie(headers, CSRF_COOKIE)
            .filter(|c| auth.csrf_matches(c))
            .unwrap_or_default();
        Self {
            principal: auth.principal.clone(),
            csrf,
            session: Some(auth),
            json,
            flash: session::cookie(headers, FLASH_COOKIE)
                .as_deref()
                .and_then(flash_text),
        }
    }

    /// A form of this page posted back: the session's CSRF token and this server's origin
    /// (the session itself was checked when the request arrived).
    pub(crate) fn check_form(
        &self,
        state: &AppState,
        headers: &HeaderMap,
        token: &str,
    ) -> Result<(), dataport_auth::AuthError> {
        let auth = self
            .session
            .as_ref()
            .ok_or_else(|| dataport_auth::AuthError::Forbidden {
                message: "the portal's forms are for a signed-in browser, not a bearer token"
                    .into(),
            })?;
        session::check_csrf_token(state, headers, auth, token)
    }
}

/// A form of a portal page: its fields, among them the session's CSRF token.
pub(crate) trait PostedForm: serde::de::DeserializeOwned {
    fn csrf(&self) -> &str;

    /// The page the form came from, to send the browser back to ([`act_on_form`]).
    fn back(&self) -> Option<&str> {
        None
    }
}

/// A form that carries nothing but the CSRF token (a button).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

impl PostedForm for CsrfForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// Reads a form `viewer` posted from a page of this server, its CSRF token checked; else the
/// status and what went wrong, in words for the page.
pub(crate) async fn read_form<T: PostedForm>(
    state: &AppState,
    viewer: &Viewer,
    request: axum::extract::Request,
) -> Result<T, (StatusCode, String)> {
    let Some((_, headers, form)) = crate::login::form_from_client::<T>(state, request).await else {
        return Err((
            StatusCode::BAD_REQUEST,
            "The form could not be read; try again.".into(),
        ));
    };
    viewer
        .check_form(state, &headers, form.csrf())
        .map_err(|e| (StatusCode::FORBIDDEN, e.to_string()))?;
    Ok(form)
}

/// What went wrong with a posted form, for its page to show again: the status, the words, the
/// page the form came from, and the form as sent (none when it could not be read, or its CSRF
/// token was wrong), so that the page can keep what was typed.
pub(crate) struct FormProblem<T> {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) back: String,
    pub(crate) form: Option<T>,
}

/// The steps of a form that changes something: read it with its CSRF token checked
/// ([`read_form`]), `act` on it, and send the browser back to the page it came from
/// ([`PostedForm::back`], a path on this server; `fallback` without one) with what `act` says
/// it did as a flash ([`see_other_with_flash`]). What went wrong — reading the form or acting on
/// it — is the caller's to show on its page.
pub(crate) async fn act_on_form<T, F, Fut>(
    state: &AppState,
    viewer: &Viewer,
    request: axum::extract::Request,
    fallback: &str,
    act: F,
) -> Result<Response, FormProblem<T>>
where
    T: PostedForm,
    F: FnOnce(&T) -> Fut,
    Fut: Future<Output = Result<String, ApiError>>,
{
    let form: T = read_form(state, viewer, request)
        .await
        .map_err(|(status, message)| FormProblem {
            status,
            message,
            back: fallback.to_string(),
            form: None,
        })?;
    let back = form
        .back()
        .filter(|b| !b.is_empty())
        .map_or_else(|| fallback.to_string(), |b| local_path(Some(b)));
    match act(&form).await {
        Ok(done) => Ok(see_other_with_flash(state, &back, &done)),
        Err(e) => Err(FormProblem {
            status: e.status(),
            message: e.to_string(),
            back,
            form: Some(form),
        }),
    }
}

/// `303 See Other` to `location`, with `message` shown once on the page there (the flash: a
/// short-lived cookie, cleared by the page that shows it).
pub(crate) fn see_other_with_flash(state: &AppState, location: &str, message: &str) -> Response {
    let mut response = see_other(location);
    let message: String = message.chars().take(MAX_FLASH).collect();
    let value: String = url::form_urlencoded::byte_serialize(message.as_bytes()).collect();
    if let Some(cookie) = session::set_cookie(state, FLASH_COOKIE, &value, 60, true) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The flash cookie's text.
fn flash_text(value: &str) -> Option<String> {
    let text: String = url::form_urlencoded::parse(format!("f={value}").as_bytes())
        .next()
        .map(|(_, v)| v.chars().take(MAX_FLASH).collect())?;
    Some(text).filter(|t| !t.trim().is_empty())
}

/// A link of the main navigation.
#[derive(Debug, Serialize)]
pub(crate) struct NavItem {
    pub(crate) href: &'static str,
    pub(crate) label: &'static str,
    pub(crate) current: bool,
}

/// What every page's frame shows: the instance, the navigation, who is signed in.
#[derive(Debug)]
pub(crate) struct Chrome {
    pub(crate) instance: String,
    /// The instance's logo (`portal.logo`), if it has one.
    pub(crate) logo: Option<String>,
    pub(crate) css: String,
    pub(crate) script: String,
    pub(crate) nav: Vec<NavItem>,
    pub(crate) user: String,
    pub(crate) admin: bool,
    pub(crate) csrf: String,
    /// The flash: what the form posted just before did.
    pub(crate) flash: Option<String>,
}

impl Chrome {
    pub(crate) fn new(state: &AppState, viewer: &Viewer, current: &str) -> Self {
        let admin = [("/admin", "Admin")];
        let nav = [
            ("/", "Home"),
            ("/catalog", "Catalog"),
            ("/sql", "SQL"),
            ("/activity", "Activity"),
            ("/notifications", "Notifications"),
            ("/memory", "Memory"),
            ("/assistants", "Assistants"),
        ]
        .into_iter()
        .chain(admin.into_iter().filter(|_| viewer.principal.admin))
        .map(|(href, label)| NavItem {
            href,
            label,
            current: href == current,
        })
        .collect();
        Self {
            instance: state.options.instance_name.clone(),
            logo: state.options.logo.as_ref().map(brand::Logo::url),
            css: assets::url("portal.css"),
            script: assets::url("htmx.js"),
            nav,
            user: viewer.principal.name.clone(),
            admin: viewer.principal.admin,
            csrf: viewer.csrf.clone(),
            flash: viewer.flash.clone(),
        }
    }
}

/// The page as HTML, or its data as JSON when the viewer asked for that.
pub(crate) fn respond<D: Serialize, T: Template>(
    viewer: &Viewer,
    status: StatusCode,
    data: &D,
    page: &T,
) -> Response {
    if viewer.json {
        return (status, axum::Json(data)).into_response();
    }
    match page.render() {
        Ok(html) => {
            let mut response = (status, Html(html)).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            );
            if viewer.flash.is_some() {
                // Shown: once is enough.
                headers.append(
                    header::SET_COOKIE,
                    HeaderValue::from_static(
                        "dataport_flash=; Path=/; Max-Age=0; SameSite=Lax; HttpOnly",
                    ),
                );
            }
            response
        }
        Err(e) => {
            ApiError::internal(format!("a portal page failed to render: {e}")).into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage<'a> {
    chrome: Chrome,
    message: &'a str,
}

/// A catalog page for something the viewer cannot see (or that does not exist: the same
/// answer), saying `message`; the API's error as JSON.
pub(crate) fn not_found(state: &AppState, viewer: &Viewer, e: ApiError, message: &str) -> Response {
    if viewer.json {
        return e.into_response();
    }
    let page = NotFoundPage {
        chrome: Chrome::new(state, viewer, "/catalog"),
        message,
    };
    respond(viewer, e.status(), &(), &page)
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn when(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// A size in bytes as people read it (`512 B`, `3.4 KiB`, `12.0 MiB`, `1.5 GiB`).
pub(crate) fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago `secs` was, in words (`3 min ago`, `5 h ago`, `12 days ago`).
pub(crate) fn ago(secs: i64, now: i64) -> String {
    let d = (now - secs).max(0);
    match d {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", d / 60),
        3600..86_400 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_people_write_them() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(1_796_601_600), "2026-12-07 00:00 UTC");
        assert_eq!(when(951_782_400 + 3_723), "2000-02-29 01:02 UTC");
        assert_eq!(ago(1_000, 1_030), "just now");
        assert_eq!(ago(0, 7_300), "2 h ago");
        assert_eq!(ago(0, 3 * 86_400 + 5), "3 days ago");
        assert_eq!(size_text(512), "512 B");
        assert_eq!(size_text(3_500), "3.4 KiB");
        assert_eq!(size_text(12 << 20), "12.0 MiB");
        assert_eq!(size_text(3 << 39), "1.5 TiB");
    }
}
