//! My notifications (`GET /notifications`): what my scripts sent (latest first, with images),
//! my scripts with their last runs (run now, test, remove, add or replace one), the history of
//! runs (duration, exit, output, deliveries), my Telegram link (enter the bot's code, unlink,
//! or why it ended) and my desktop tokens. Everything is the viewer's own, through the same
//! [`Notifier`] as the API.

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use dataport_notify::{
    DesktopToken, Notifier, NotifyRun, RunReport, ScriptInfo, TelegramLink, Trigger,
};
use serde::{Deserialize, Serialize};

use super::{Chrome, CsrfForm, PostedForm, Viewer, ago, read_form, respond, size_text, when};
use crate::notify::{NotificationView, view};
use crate::pages::see_other;
use crate::{AppState, RequestId};

/// Notifications shown on the page.
const SHOWN: usize = 30;
/// Runs shown on the page.
const RUNS_SHOWN: usize = 40;

#[derive(Debug, Serialize)]
pub(crate) struct ScriptLine {
    #[serde(flatten)]
    info: ScriptInfo,
    size_text: String,
    updated: String,
    last_run_text: String,
    cooldown_text: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RunLine {
    #[serde(flatten)]
    run: NotifyRun,
    when: String,
    exit_text: String,
    deliveries_text: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct NoteLine {
    #[serde(flatten)]
    note: NotificationView,
    ago: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct TelegramView {
    configured: bool,
    link: Option<TelegramLink>,
    /// The linked chat's name and since when.
    linked: Option<(String, String)>,
    unlinked_text: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct DesktopLine {
    #[serde(flatten)]
    token: DesktopToken,
    created: String,
    expires: String,
}

/// What the page shows (and its JSON twin answers).
#[derive(Debug, Serialize)]
pub(crate) struct NotificationsData {
    notifications: Vec<NoteLine>,
    scripts: Vec<ScriptLine>,
    runs: Vec<RunLine>,
    telegram: TelegramView,
    desktop_tokens: Vec<DesktopLine>,
    gateway_url: String,
    sandboxed: bool,
}

#[derive(Template)]
#[template(path = "notifications.html")]
struct NotificationsPage<'a> {
    chrome: Chrome,
    data: &'a NotificationsData,
    result: Option<ResultView>,
    new_desktop_token: Option<String>,
    problem: Option<String>,
    draft_name: String,
    draft_content: String,
}

/// A run started from the page, shown on top.
struct ResultView {
    script: String,
    outcome: String,
    reason: String,
    preview_title: Option<String>,
    preview_message: Option<String>,
    stdout: String,
    stderr: String,
}

fn outcome_text(run: &NotifyRun) -> String {
    match &run.reason {
        Some(r) => format!("{} — {r}", run.outcome),
        None => run.outcome.clone(),
    }
}

fn page_data(
    state: &AppState,
    notifier: &Notifier,
    account: i64,
) -> Result<NotificationsData, String> {
    let now = dataport_auth::now_secs();
    let scripts = notifier
        .scripts(account)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|info| ScriptLine {
            size_text: size_text(info.script.bytes),
            updated: when(info.script.updated_ms / 1000),
            last_run_text: info.last_run.as_ref().map_or("never run".into(), |r| {
                format!("{}, {}", outcome_text(r), ago(r.started_ms / 1000, now))
            }),
            cooldown_text: info.cooldown_until_ms.map(|ms| when(ms / 1000)),
            info,
        })
        .collect();
    let runs = notifier
        .runs(account, None, RUNS_SHOWN)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|run| RunLine {
            when: ago(run.started_ms / 1000, now),
            exit_text: run
                .exit_code
                .map_or_else(|| "—".to_string(), |c| c.to_string()),
            deliveries_text: run
                .deliveries
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|d| {
                            let ok = d["ok"] == true;
                            match d["channel"].as_str().unwrap_or("?") {
                                "websocket" if ok => format!(
                                    "desktop app ✓ ({})",
                                    d["connections"].as_u64().unwrap_or(0)
                                ),
                                "websocket" => "desktop app: none connected".to_string(),
                                channel => format!("{channel} {}", if ok { "✓" } else { "✗" }),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
            run,
        })
        .collect();
    let notifications = notifier
        .notifications(account, None, SHOWN)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|n| NoteLine {
            ago: ago(n.created_ms / 1000, now),
            note: view(notifier, n),
        })
        .collect();
    let link = notifier.telegram_link(account).map_err(|e| e.to_string())?;
    let telegram = TelegramView {
        configured: notifier.telegram().is_some(),
        linked: link.as_ref().filter(|l| l.chat_id.is_some()).map(|l| {
            (
                l.chat_name.clone(),
                l.linked_ms.map_or("—".into(), |ms| when(ms / 1000)),
            )
        }),
        unlinked_text: link.as_ref().filter(|l| l.chat_id.is_none()).map(|l| {
            format!(
                "Unlinked {}: {}",
                l.unlinked_ms.map_or("—".into(), |ms| when(ms / 1000)),
                l.unlinked_reason.as_deref().unwrap_or("unknown reason")
            )
        }),
        link,
    };
    let desktop_tokens = notifier
        .desktop_tokens(account)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|t| t.revoked_ms.is_none() && t.expires_ms > now * 1000)
        .map(|token| DesktopLine {
            created: when(token.created_ms / 1000),
            expires: when(token.expires_ms / 1000),
            token,
        })
        .collect();
    let gateway_url = format!(
        "{}{}",
        state
            .options
            .public_url
            .trim_end_matches('/')
            .replacen("http", "ws", 1),
        crate::gateway::GATEWAY_PATH
    );
    Ok(NotificationsData {
        notifications,
        scripts,
        runs,
        telegram,
        desktop_tokens,
        gateway_url,
        sandboxed: notifier.sandboxed(),
    })
}

#[derive(Default)]
struct Extra {
    result: Option<ResultView>,
    new_desktop_token: Option<String>,
    problem: Option<String>,
    draft: Option<(String, String)>,
}

fn render(state: &AppState, viewer: &Viewer, status: StatusCode, extra: Extra) -> Response {
    let Some(notify) = &state.notify else {
        return super::not_found(
            state,
            viewer,
            crate::notify::not_configured("-"),
            "Notifications are not set up on this server.",
        );
    };
    let data = match page_data(state, &notify.notifier, viewer.principal.id) {
        Ok(d) => d,
        Err(e) => {
            return axum::response::IntoResponse::into_response(crate::ApiError::internal(e));
        }
    };
    let (draft_name, draft_content) = extra.draft.unwrap_or_default();
    let page = NotificationsPage {
        chrome: Chrome::new(state, viewer, "/notifications"),
        data: &data,
        result: extra.result,
        new_desktop_token: extra.new_desktop_token,
        problem: extra.problem,
        draft_name,
        draft_content,
    };
    respond(viewer, status, &data, &page)
}

fn problem(state: &AppState, viewer: &Viewer, status: StatusCode, message: String) -> Response {
    render(
        state,
        viewer,
        status,
        Extra {
            problem: Some(message),
            ..Extra::default()
        },
    )
}

fn status_of(e: &dataport_notify::NotifyError) -> StatusCode {
    crate::error::status_for(dataport_common::HasKind::kind(e))
}

/// `GET /notifications`.
pub(crate) async fn get_notifications(State(state): State<AppState>, viewer: Viewer) -> Response {
    render(&state, &viewer, StatusCode::OK, Extra::default())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ScriptForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    content: String,
}

impl PostedForm for ScriptForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /notifications/scripts`: add or replace a script (name and content).
pub(crate) async fn post_script(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    request: Request,
) -> Response {
    let form: ScriptForm = match read_form(&state, &viewer, request).await {
        Ok(f) => f,
        Err((status, message)) => return problem(&state, &viewer, status, message),
    };
    let Some(notify) = &state.notify else {
        return get_notifications(State(state.clone()), viewer).await;
    };
    // Browsers send text areas with CRLF line ends; scripts want LF.
    let content = form.content.replace("\r\n", "\n");
    match notify
        .notifier
        .put_script(viewer.principal.id, form.name.trim(), content.as_bytes())
    {
        Ok(_) => {
            tracing::info!(request_id = %id, user = %viewer.principal.name, script = %form.name.trim(), "notification script saved in the portal");
            see_other("/notifications")
        }
        Err(e) => render(
            &state,
            &viewer,
            status_of(&e),
            Extra {
                problem: Some(e.to_string()),
                draft: Some((form.name, form.content)),
                ..Extra::default()
            },
        ),
    }
}

/// `POST /notifications/scripts/{name}/{action}`: `run` (deliver), `test` (show what it would
/// send) or `delete`.
pub(crate) async fn post_script_action(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((name, action)): Path<(String, String)>,
    request: Request,
) -> Response {
    if let Err((status, message)) = read_form::<CsrfForm>(&state, &viewer, request).await {
        return problem(&state, &viewer, status, message);
    }
    let Some(notify) = state.notify.clone() else {
        return get_notifications(State(state.clone()), viewer).await;
    };
    let notifier = &notify.notifier;
    let trigger = match action.as_str() {
        "run" => Trigger::Manual,
        "test" => Trigger::Test,
        "delete" => {
            return match notifier.delete_script(viewer.principal.id, &name) {
                Ok(_) => see_other("/notifications"),
                Err(e) => problem(&state, &viewer, status_of(&e), e.to_string()),
            };
        }
        _ => {
            return problem(
                &state,
                &viewer,
                StatusCode::NOT_FOUND,
                "No such action: a script can be run, tested or deleted.".into(),
            );
        }
    };
    match notifier.run_script(&viewer.principal, &name, trigger).await {
        Ok(report) => render(
            &state,
            &viewer,
            StatusCode::OK,
            Extra {
                result: Some(result_view(&report)),
                ..Extra::default()
            },
        ),
        Err(e) => problem(&state, &viewer, status_of(&e), e.to_string()),
    }
}

fn result_view(report: &RunReport) -> ResultView {
    let preview = report.preview.as_ref();
    ResultView {
        script: report.run.script.clone(),
        outcome: report.run.outcome.clone(),
        reason: report.run.reason.clone().unwrap_or_default(),
        preview_title: preview.and_then(|p| p["title"].as_str().map(str::to_string)),
        preview_message: preview.and_then(|p| p["message"].as_str().map(str::to_string)),
        stdout: report.run.stdout.clone(),
        stderr: report.run.stderr.clone(),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

impl PostedForm for CodeForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /notifications/telegram`: link the chat the bot gave this code to.
pub(crate) async fn post_telegram(
    State(state): State<AppState>,
    viewer: Viewer,
    request: Request,
) -> Response {
    let form: CodeForm = match read_form(&state, &viewer, request).await {
        Ok(f) => f,
        Err((status, message)) => return problem(&state, &viewer, status, message),
    };
    let Some(notify) = state.notify.clone() else {
        return get_notifications(State(state.clone()), viewer).await;
    };
    match notify
        .notifier
        .link_telegram(viewer.principal.id, &form.code)
        .await
    {
        Ok(_) => see_other("/notifications"),
        Err(e) => problem(&state, &viewer, status_of(&e), e.to_string()),
    }
}

/// `POST /notifications/telegram/unlink`.
pub(crate) async fn post_telegram_unlink(
    State(state): State<AppState>,
    viewer: Viewer,
    request: Request,
) -> Response {
    if let Err((status, message)) = read_form::<CsrfForm>(&state, &viewer, request).await {
        return problem(&state, &viewer, status, message);
    }
    let Some(notify) = state.notify.clone() else {
        return get_notifications(State(state.clone()), viewer).await;
    };
    match notify.notifier.unlink_telegram(viewer.principal.id) {
        Ok(_) => see_other("/notifications"),
        Err(e) => problem(&state, &viewer, status_of(&e), e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct LabelForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
}

impl PostedForm for LabelForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /notifications/desktop`: a desktop token, shown on the page once.
pub(crate) async fn post_desktop(
    State(state): State<AppState>,
    viewer: Viewer,
    request: Request,
) -> Response {
    let form: LabelForm = match read_form(&state, &viewer, request).await {
        Ok(f) => f,
        Err((status, message)) => return problem(&state, &viewer, status, message),
    };
    let Some(notify) = state.notify.clone() else {
        return get_notifications(State(state.clone()), viewer).await;
    };
    match notify
        .notifier
        .issue_desktop_token(&viewer.principal, &form.label)
    {
        Ok((token, _)) => render(
            &state,
            &viewer,
            StatusCode::CREATED,
            Extra {
                new_desktop_token: Some(token),
                ..Extra::default()
            },
        ),
        Err(e) => problem(&state, &viewer, status_of(&e), e.to_string()),
    }
}

/// `POST /notifications/desktop/{id}/revoke`.
pub(crate) async fn post_desktop_revoke(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    if let Err((status, message)) = read_form::<CsrfForm>(&state, &viewer, request).await {
        return problem(&state, &viewer, status, message);
    }
    let Some(notify) = state.notify.clone() else {
        return get_notifications(State(state.clone()), viewer).await;
    };
    match notify
        .notifier
        .revoke_desktop_token(viewer.principal.id, &token)
    {
        Ok(true) => see_other("/notifications"),
        Ok(false) => problem(
            &state,
            &viewer,
            StatusCode::NOT_FOUND,
            "No desktop token of yours by that id.".into(),
        ),
        Err(e) => problem(&state, &viewer, status_of(&e), e.to_string()),
    }
}
