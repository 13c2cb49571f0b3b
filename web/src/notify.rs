//! Notifications over HTTP: my scripts (`/api/v1/notify/scripts…`: list, upload, download,
//! remove, run, test), my runs, my notifications and their images, my Telegram link, my
//! desktop tokens, and the desktop app's own endpoints (`/api/v1/desktop/…`, which also take
//! a desktop token). Everything is the caller's own: another account's script, run,
//! notification or image is simply not found.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dataport_auth::Principal;
use dataport_common::ErrorKind;
use dataport_notify::{
    DesktopToken, Notifier, NotifyRun, NotifyScript, RunReport, ScriptInfo, StoredNotification,
    TelegramLink, Trigger,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Caller, json_body};
use crate::gateway::Gateway;
use crate::{ApiError, AppState, RequestId};

/// The notifier and the gateway that delivers to live connections.
#[derive(Debug, Clone)]
pub struct NotifyState {
    pub notifier: Notifier,
    pub gateway: Arc<Gateway>,
}

pub(crate) fn not_configured(id: &str) -> ApiError {
    ApiError::of_kind(
        ErrorKind::Unavailable,
        "notifications are not set up on this server",
    )
    .with_request_id(id)
}

fn notifier(state: &AppState, id: &str) -> Result<Notifier, ApiError> {
    state
        .notify
        .as_ref()
        .map(|n| n.notifier.clone())
        .ok_or_else(|| not_configured(id))
}

fn account(principal: &Principal, id: &str) -> Result<i64, ApiError> {
    if principal.id > 0 {
        Ok(principal.id)
    } else {
        Err(
            ApiError::forbidden("notifications belong to accounts; sign in as one")
                .with_request_id(id),
        )
    }
}

/// Middleware of the desktop app's routes: a desktop token, a session or API token, or the
/// browser's session; never a script's token.
pub(crate) async fn require_desktop(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = crate::auth::request_id_of(request.headers());
    let principal = match crate::auth::bearer_of(request.headers()) {
        Err(dataport_auth::AuthError::Missing) => {
            crate::session::authenticate(&state, request.method(), request.headers())
                .map(|s| s.principal.clone())
        }
        other => other.and_then(|t| state.auth.check_desktop(&t)),
    };
    match principal {
        Ok(p) => {
            crate::trace::record_user(&p.name);
            request.extensions_mut().insert(Caller(p));
            next.run(request).await
        }
        Err(e) => ApiError::of(&e, &id).into_response(),
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ScriptsBody {
    scripts: Vec<ScriptInfo>,
}

/// `GET /api/v1/notify/scripts` (and `/api/v1/desktop/scripts`): mine, with their last runs.
pub(crate) async fn list_scripts(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
) -> Result<Json<ScriptsBody>, ApiError> {
    let n = notifier(&state, &id)?;
    let scripts = n
        .scripts(account(&principal, &id)?)
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(Json(ScriptsBody { scripts }))
}

/// `GET /api/v1/notify/scripts/{name}`: the script's content.
pub(crate) async fn get_script(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let n = notifier(&state, &id)?;
    let (record, content) = n
        .script_content(account(&principal, &id)?, &name)
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (header::ETAG, format!("\"{}\"", record.sha256)),
        ],
        content,
    )
        .into_response())
}

#[derive(Debug, Serialize)]
pub(crate) struct PutBody {
    script: NotifyScript,
    /// False: this content was the current version already.
    changed: bool,
}

/// `PUT /api/v1/notify/scripts/{name}` with the content as the body: the new current version.
pub(crate) async fn put_script(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<PutBody>), ApiError> {
    let n = notifier(&state, &id)?;
    let (script, changed) = n
        .put_script(account(&principal, &id)?, &name, &body)
        .map_err(|e| ApiError::of(&e, &id))?;
    tracing::info!(request_id = %id, user = %principal.name, script = %name, changed, "notification script uploaded");
    let status = if changed {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(PutBody { script, changed })))
}

/// `DELETE /api/v1/notify/scripts/{name}`.
pub(crate) async fn delete_script(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let n = notifier(&state, &id)?;
    match n.delete_script(account(&principal, &id)?, &name) {
        Ok(true) => Ok(StatusCode::NO_CONTENT),
        Ok(false) => Err(ApiError::of(
            &dataport_notify::NotifyError::NoSuchScript { name },
            &id,
        )),
        Err(e) => Err(ApiError::of(&e, &id)),
    }
}

async fn run_as(
    state: &AppState,
    id: &str,
    principal: &Principal,
    name: &str,
    trigger: Trigger,
) -> Result<Json<RunReport>, ApiError> {
    let n = notifier(state, id)?;
    account(principal, id)?;
    let report = n
        .run_script(principal, name, trigger)
        .await
        .map_err(|e| ApiError::of(&e, id))?;
    Ok(Json(report))
}

/// `POST /api/v1/notify/scripts/{name}/run`: run it now and deliver what it reports (the
/// cooldown does not hold a run by hand back; a delivery starts it).
pub(crate) async fn post_run(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(name): Path<String>,
) -> Result<Json<RunReport>, ApiError> {
    run_as(&state, &id, &principal, &name, Trigger::Manual).await
}

/// `POST /api/v1/desktop/scripts/{name}/run`: the same from the desktop app; the result also
/// goes to its gateway connections.
pub(crate) async fn post_desktop_run(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(name): Path<String>,
) -> Result<Json<RunReport>, ApiError> {
    run_as(&state, &id, &principal, &name, Trigger::Desktop).await
}

/// `POST /api/v1/notify/scripts/{name}/test`: run it and show what it would send; nothing is
/// sent and the cooldown is untouched.
pub(crate) async fn post_test(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(name): Path<String>,
) -> Result<Json<RunReport>, ApiError> {
    run_as(&state, &id, &principal, &name, Trigger::Test).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct TestQuery {
    name: String,
}

/// `POST /api/v1/notify/test?name=F` with a script as the body: test it without storing it.
pub(crate) async fn post_test_content(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    query: Result<Query<TestQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Json<RunReport>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request("name the script: POST /api/v1/notify/test?name=check.py")
            .with_request_id(&id)
    })?;
    let n = notifier(&state, &id)?;
    account(&principal, &id)?;
    let report = n
        .test_content(&principal, &q.name, body.to_vec())
        .await
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(Json(report))
}

#[derive(Debug, Deserialize)]
pub(crate) struct RunsQuery {
    #[serde(default)]
    script: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RunsBody {
    runs: Vec<NotifyRun>,
}

/// `GET /api/v1/notify/runs?script=&limit=`: my runs, latest first.
pub(crate) async fn list_runs(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Query(q): Query<RunsQuery>,
) -> Result<Json<RunsBody>, ApiError> {
    let n = notifier(&state, &id)?;
    let runs = n
        .runs(
            account(&principal, &id)?,
            q.script.as_deref(),
            q.limit.unwrap_or(50).clamp(1, 500),
        )
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(Json(RunsBody { runs }))
}

/// `GET /api/v1/notify/runs/{id}`.
pub(crate) async fn get_run(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(run): Path<i64>,
) -> Result<Json<NotifyRun>, ApiError> {
    let n = notifier(&state, &id)?;
    n.run_record(account(&principal, &id)?, run)
        .map_err(|e| ApiError::of(&e, &id))?
        .map(Json)
        .ok_or_else(|| {
            ApiError::of_kind(ErrorKind::NotFound, format!("no run {run} of yours"))
                .with_request_id(&id)
        })
}

#[derive(Debug, Deserialize)]
pub(crate) struct InboxQuery {
    /// Older than this (Unix ms), for paging.
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A notification as its owner reads it.
#[derive(Debug, Serialize)]
pub(crate) struct NotificationView {
    #[serde(flatten)]
    pub(crate) notification: StoredNotification,
    pub(crate) timestamp: String,
    pub(crate) image_url: Option<String>,
    pub(crate) data_value: Value,
}

pub(crate) fn view(n: &Notifier, stored: StoredNotification) -> NotificationView {
    let message = n.live_message(&stored);
    NotificationView {
        timestamp: message["timestamp"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        image_url: message["image_url"].as_str().map(str::to_string),
        data_value: serde_json::from_str(&stored.data).unwrap_or(Value::Null),
        notification: stored,
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct InboxBody {
    notifications: Vec<NotificationView>,
}

/// `GET /api/v1/notify/notifications?before=&limit=`: mine, latest first.
pub(crate) async fn list_notifications(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Query(q): Query<InboxQuery>,
) -> Result<Json<InboxBody>, ApiError> {
    let n = notifier(&state, &id)?;
    let list = n
        .notifications(
            account(&principal, &id)?,
            q.before,
            q.limit.unwrap_or(50).clamp(1, 500),
        )
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(Json(InboxBody {
        notifications: list.into_iter().map(|s| view(&n, s)).collect(),
    }))
}

/// `GET /api/v1/notify/notifications/{id}/image`: the image, to its owner only.
pub(crate) async fn get_image(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(notification): Path<String>,
) -> Result<Response, ApiError> {
    let n = notifier(&state, &id)?;
    let (path, mime) = n
        .image(account(&principal, &id)?, &notification)
        .map_err(|e| ApiError::of(&e, &id))?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| {
        ApiError::of_kind(ErrorKind::NotFound, format!("the image is gone ({e})"))
            .with_request_id(&id)
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "private, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Serialize)]
pub(crate) struct TelegramBody {
    /// Whether this server has a Telegram bot.
    configured: bool,
    link: Option<TelegramLink>,
}

/// `GET /api/v1/notify/telegram`: my link (or why it ended).
pub(crate) async fn get_telegram(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
) -> Result<Json<TelegramBody>, ApiError> {
    let n = notifier(&state, &id)?;
    let link = n
        .telegram_link(account(&principal, &id)?)
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(Json(TelegramBody {
        configured: n.telegram().is_some(),
        link,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkBody {
    code: String,
}

/// `POST /api/v1/notify/telegram/link` `{"code": "123456"}`: link the chat the bot gave the
/// code to.
pub(crate) async fn post_telegram_link(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    body: Result<Json<LinkBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<TelegramLink>, ApiError> {
    let body = json_body(&state, &id, body, "{\"code\": \"123456\"}")?;
    let n = notifier(&state, &id)?;
    let link = n
        .link_telegram(account(&principal, &id)?, &body.code)
        .await
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(Json(link))
}

/// `DELETE /api/v1/notify/telegram/link`.
pub(crate) async fn delete_telegram_link(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
) -> Result<StatusCode, ApiError> {
    let n = notifier(&state, &id)?;
    n.unlink_telegram(account(&principal, &id)?)
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub(crate) struct DesktopTokensBody {
    tokens: Vec<DesktopToken>,
}

/// `GET /api/v1/desktop/tokens`: my desktop tokens.
pub(crate) async fn list_desktop_tokens(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
) -> Result<Json<DesktopTokensBody>, ApiError> {
    let n = notifier(&state, &id)?;
    let tokens = n
        .desktop_tokens(account(&principal, &id)?)
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(Json(DesktopTokensBody { tokens }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DesktopBody {
    #[serde(default)]
    label: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct DesktopCreated {
    /// Shown this once.
    token: String,
    #[serde(flatten)]
    record: DesktopToken,
    /// Where the desktop app connects.
    gateway_path: &'static str,
}

/// `POST /api/v1/desktop/tokens` `{"label"}` → 201 with a desktop token (shown once).
pub(crate) async fn post_desktop_token(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    body: Option<Json<DesktopBody>>,
) -> Result<(StatusCode, Json<DesktopCreated>), ApiError> {
    let n = notifier(&state, &id)?;
    account(&principal, &id)?;
    let label = body.map(|Json(b)| b.label).unwrap_or_default();
    let (token, record) = n
        .issue_desktop_token(&principal, &label)
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok((
        StatusCode::CREATED,
        Json(DesktopCreated {
            token,
            record,
            gateway_path: crate::gateway::GATEWAY_PATH,
        }),
    ))
}

/// `DELETE /api/v1/desktop/tokens/{id}`: the token stops working at once, also on open
/// gateway connections (at their next ping).
pub(crate) async fn delete_desktop_token(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    let n = notifier(&state, &id)?;
    if n.revoke_desktop_token(account(&principal, &id)?, &token)
        .map_err(|e| ApiError::of(&e, &id))?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(
            ApiError::of_kind(ErrorKind::NotFound, "no desktop token of yours by that id")
                .with_request_id(&id),
        )
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct DesktopMe {
    username: String,
    gateway_path: &'static str,
}

/// `GET /api/v1/desktop/me`: who the desktop token is for.
pub(crate) async fn get_desktop_me(Caller(principal): Caller) -> Json<DesktopMe> {
    Json(DesktopMe {
        username: principal.name,
        gateway_path: crate::gateway::GATEWAY_PATH,
    })
}
