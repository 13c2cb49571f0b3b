//! The administrators' pages (`data-ops` only; anyone else gets 403 and an audit entry):
//! accounts (`/admin/accounts`: invite, groups, disable and enable, a new password link, end
//! sessions, delete, and the record of changes) and the audit log (`/admin/audit`, filtered).
//! They call the same functions as the admin API, with the administrator as the actor.

use askama::Template;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dataport_auth::{AccountState, AuditQuery};
use serde::{Deserialize, Serialize};

use super::{Chrome, PostedForm, Viewer, read_form, respond, when};
use crate::accounts::{invite_account, patch_account, run};
use crate::{ApiError, AppState, RequestId};

#[derive(Template)]
#[template(path = "forbidden.html")]
struct ForbiddenPage {
    chrome: Chrome,
}

/// None for an administrator; for anyone else the 403 answer, after recording the refusal.
pub(super) fn refuse_non_admin(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    what: &str,
) -> Option<Response> {
    if viewer.principal.admin {
        return None;
    }
    tracing::warn!(request_id, user = %viewer.principal.name, what, "an administrators' page was refused");
    state
        .auth
        .record_forbidden("portal", request_id, &viewer.principal, what);
    if viewer.json {
        return Some(
            ApiError::forbidden("this needs an administrator (a member of data-ops)")
                .with_request_id(request_id)
                .into_response(),
        );
    }
    let page = ForbiddenPage {
        chrome: Chrome::new(state, viewer, ""),
    };
    Some(respond(viewer, StatusCode::FORBIDDEN, &(), &page))
}

#[derive(Debug, Serialize)]
pub(crate) struct AccountLine {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) display_name: String,
    pub(crate) state: AccountState,
    pub(crate) state_text: &'static str,
    pub(crate) groups: Vec<String>,
    pub(crate) groups_text: String,
    pub(crate) created: String,
    pub(crate) sessions: usize,
    /// The viewer's own account.
    pub(crate) me: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChangeLine {
    pub(crate) at: String,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) account: String,
    pub(crate) detail: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct AccountsData {
    pub(crate) accounts: Vec<AccountLine>,
    pub(crate) changes: Vec<ChangeLine>,
    pub(crate) message: Option<String>,
    pub(crate) problem: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_accounts.html")]
struct AccountsPage<'a> {
    chrome: Chrome,
    data: &'a AccountsData,
}

async fn accounts_data(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    message: Option<String>,
    problem: Option<String>,
) -> Result<AccountsData, ApiError> {
    let users = run(state, request_id, |a| a.users()).await?;
    let changes = run(state, request_id, |a| a.changes(None, 30)).await?;
    let accounts = users
        .into_iter()
        .map(|u| AccountLine {
            sessions: state.auth.sessions(u.id).map(|s| s.len()).unwrap_or(0),
            me: u.id == viewer.principal.id,
            id: u.id,
            email: u.email.clone().unwrap_or_default(),
            display_name: u.display_name.clone(),
            state_text: match u.state {
                AccountState::Invited => "invited",
                AccountState::Active => "active",
                AccountState::Disabled => "disabled",
            },
            state: u.state,
            groups_text: u.groups.join(", "),
            groups: u.groups,
            created: when(u.created_at),
            name: u.name,
        })
        .collect();
    let changes = changes
        .into_iter()
        .map(|c| ChangeLine {
            at: when(c.at_ms / 1000),
            actor: c.actor,
            action: c.action,
            account: c.account,
            detail: c.detail,
        })
        .collect();
    Ok(AccountsData {
        accounts,
        changes,
        message,
        problem,
    })
}

async fn show_accounts(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    status: StatusCode,
    message: Option<String>,
    problem: Option<String>,
) -> Response {
    match accounts_data(state, viewer, request_id, message, problem).await {
        Ok(data) => {
            let page = AccountsPage {
                chrome: Chrome::new(state, viewer, "/admin"),
                data: &data,
            };
            respond(viewer, status, &data, &page)
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /admin` and `GET /admin/accounts`.
pub(crate) async fn get_accounts(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "the accounts page") {
        return refused;
    }
    show_accounts(&state, &viewer, &id, StatusCode::OK, None, None).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    /// Comma-separated; empty: the default groups.
    #[serde(default)]
    groups: String,
}

impl PostedForm for InviteForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

fn group_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(String::from)
        .collect()
}

/// `POST /admin/accounts/invite`.
pub(crate) async fn post_invite(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    request: Request,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "inviting an account") {
        return refused;
    }
    let form: InviteForm = match read_form(&state, &viewer, request).await {
        Ok(form) => form,
        Err((status, problem)) => {
            return show_accounts(&state, &viewer, &id, status, None, Some(problem)).await;
        }
    };
    let groups = Some(group_list(&form.groups)).filter(|g| !g.is_empty());
    match invite_account(
        &state,
        &id,
        &viewer.principal,
        form.email,
        form.name,
        groups,
    )
    .await
    {
        Ok((user, mail)) => {
            let how = match mail {
                "sent" => "the set-up link was mailed",
                "logged" => "no mail server is set up: the set-up link is in the server log",
                _ => "the set-up link could not be mailed (see the server log)",
            };
            let message = Some(format!(
                "Invited {} as {}; {how}.",
                user.email.unwrap_or_default(),
                user.name
            ));
            show_accounts(&state, &viewer, &id, StatusCode::CREATED, message, None).await
        }
        Err(e) => {
            let status = e.status();
            show_accounts(&state, &viewer, &id, status, None, Some(e.to_string())).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AccountForm {
    #[serde(default)]
    csrf: String,
    /// `disable`, `enable`, `groups`, `link`, `sessions` or `delete`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    groups: String,
}

impl PostedForm for AccountForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /admin/accounts/{id}`: one change to an account.
pub(crate) async fn post_account(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(account): Path<i64>,
    request: Request,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "changing an account") {
        return refused;
    }
    let form: AccountForm = match read_form(&state, &viewer, request).await {
        Ok(form) => form,
        Err((status, problem)) => {
            return show_accounts(&state, &viewer, &id, status, None, Some(problem)).await;
        }
    };
    let admin = &viewer.principal;
    let done: Result<String, ApiError> = match form.action.as_str() {
        "disable" | "enable" => {
            let (new_state, word) = if form.action == "disable" {
                (AccountState::Disabled, "disabled")
            } else {
                (AccountState::Active, "enabled")
            };
            patch_account(&state, &id, admin, account, Some(new_state), None)
                .await
                .map(|u| format!("{} is now {word}.", u.name))
        }
        "groups" => patch_account(
            &state,
            &id,
            admin,
            account,
            None,
            Some(group_list(&form.groups)),
        )
        .await
        .map(|u| {
            format!(
                "{} is now in: {}.",
                u.name,
                if u.groups.is_empty() {
                    "no group".into()
                } else {
                    u.groups.join(", ")
                }
            )
        }),
        "link" => match run(&state, &id, move |a| a.account_by_id(account)).await {
            Ok(user) => crate::accounts::mail_link(&state, &id, &user)
                .await
                .map(|mail| format!("A password link for {} was {mail}.", user.name)),
            Err(e) => Err(e),
        },
        "sessions" => match run(&state, &id, move |a| {
            a.store()
                .remove_browser_sessions_of(account)
                .map_err(dataport_auth::AuthError::from)
        })
        .await
        {
            Ok(n) => Ok(format!("{n} browser session(s) ended.")),
            Err(e) => Err(e),
        },
        "delete" => {
            let by = dataport_auth::Actor::principal(admin, &id);
            run(&state, &id, move |a| {
                let user = a.account_by_id(account)?;
                a.delete(&user.name, &by).map(|()| user.name)
            })
            .await
            .map(|name| format!("{name} was deleted."))
        }
        other => Err(ApiError::bad_request(format!("unknown action '{other}'"))),
    };
    match done {
        Ok(message) => {
            show_accounts(&state, &viewer, &id, StatusCode::OK, Some(message), None).await
        }
        Err(e) => {
            let status = e.status();
            show_accounts(&state, &viewer, &id, status, None, Some(e.to_string())).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AuditFilter {
    #[serde(default)]
    user: String,
    #[serde(default)]
    surface: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AuditLine {
    pub(crate) at: String,
    pub(crate) at_ms: i64,
    pub(crate) user: String,
    pub(crate) surface: String,
    /// The assistant's tool, for MCP calls ("" otherwise).
    pub(crate) tool: String,
    pub(crate) outcome: String,
    pub(crate) sql: String,
    pub(crate) tables: String,
    pub(crate) rows: u64,
    pub(crate) duration_ms: u64,
    pub(crate) error: String,
    pub(crate) request_id: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct AuditData {
    pub(crate) user: String,
    pub(crate) surface: String,
    pub(crate) outcome: String,
    pub(crate) limit: u32,
    pub(crate) entries: Vec<AuditLine>,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage<'a> {
    chrome: Chrome,
    data: &'a AuditData,
}

/// `GET /admin/audit?user=&surface=&outcome=&limit=`.
pub(crate) async fn get_audit(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Query(filter): Query<AuditFilter>,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "the audit log") {
        return refused;
    }
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
    let user = filter.user.trim().to_string();
    let query = AuditQuery {
        user: Some(user.clone()).filter(|u| !u.is_empty()),
        // Surface and outcome are filtered here, from a wider window.
        limit: if filter.surface.is_empty() && filter.outcome.is_empty() {
            limit
        } else {
            10_000
        },
    };
    let store = std::sync::Arc::clone(state.auth.store());
    let entries = match tokio::task::spawn_blocking(move || store.audit_entries(&query)).await {
        Ok(Ok(entries)) => entries,
        Ok(Err(e)) => {
            return ApiError::internal(e.to_string())
                .with_request_id(&id)
                .into_response();
        }
        Err(e) => {
            return ApiError::internal(e.to_string())
                .with_request_id(&id)
                .into_response();
        }
    };
    let entries = entries
        .into_iter()
        .filter(|e| filter.surface.is_empty() || e.surface == filter.surface)
        .filter(|e| filter.outcome.is_empty() || e.outcome == filter.outcome)
        .take(limit as usize)
        .map(|e| AuditLine {
            at: when(e.at_ms / 1000),
            at_ms: e.at_ms,
            user: e.user,
            surface: e.surface,
            tool: e.tool.unwrap_or_default(),
            outcome: e.outcome,
            sql: e.sql,
            tables: e.tables.join(", "),
            rows: e.rows,
            duration_ms: e.duration_ms,
            error: e.error.unwrap_or_default(),
            request_id: e.request_id,
        })
        .collect();
    let data = AuditData {
        user,
        surface: filter.surface,
        outcome: filter.outcome,
        limit,
        entries,
    };
    let page = AuditPage {
        chrome: Chrome::new(&state, &viewer, "/admin"),
        data: &data,
    };
    respond(&viewer, StatusCode::OK, &data, &page)
}

#[derive(Debug, Serialize)]
pub(crate) struct GrantLine {
    pub(crate) group: String,
    pub(crate) target: String,
    pub(crate) row_filter: String,
    pub(crate) hidden_columns: String,
    pub(crate) by: String,
    pub(crate) at: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct GrantsData {
    pub(crate) built_in: &'static str,
    pub(crate) grants: Vec<GrantLine>,
    /// Every table, for the target and preview choices (administrators read them all).
    pub(crate) tables: Vec<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) users: Vec<String>,
    pub(crate) preview_user: String,
    pub(crate) preview_table: String,
    pub(crate) preview: Option<crate::grants::Preview>,
    pub(crate) message: Option<String>,
    pub(crate) problem: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_grants.html")]
struct GrantsPage<'a> {
    chrome: Chrome,
    data: &'a GrantsData,
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct PreviewQuery {
    #[serde(default)]
    preview_user: String,
    #[serde(default)]
    preview_table: String,
}

async fn show_grants(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    status: StatusCode,
    preview: PreviewQuery,
    message: Option<String>,
    mut problem: Option<String>,
) -> Response {
    let listed = run(state, request_id, |a| Ok((a.grants()?, a.users()?))).await;
    let (grants, users) = match listed {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let mut groups: Vec<String> = users.iter().flat_map(|u| u.groups.clone()).collect();
    groups.extend(grants.iter().map(|g| g.group.clone()));
    groups.sort();
    groups.dedup();
    let snapshot = state.engine.catalog().snapshot();
    let mut tables: Vec<String> = snapshot.tables().map(|t| t.qualified_name()).collect();
    tables.sort();
    let shown = if preview.preview_user.is_empty() || preview.preview_table.is_empty() {
        None
    } else {
        match crate::grants::preview(
            state,
            request_id,
            &viewer.principal,
            &preview.preview_user,
            &preview.preview_table,
        )
        .await
        {
            Ok(p) => Some(p),
            Err(e) => {
                problem = Some(format!(
                    "{} cannot read {}: {e}",
                    preview.preview_user, preview.preview_table
                ));
                None
            }
        }
    };
    let data = GrantsData {
        built_in: crate::grants::BUILT_IN,
        grants: grants
            .into_iter()
            .map(|g| GrantLine {
                target: format!("{}.{}", g.schema, g.table.as_deref().unwrap_or("*")),
                row_filter: g.row_filter.unwrap_or_default(),
                hidden_columns: g.hidden_columns.join(", "),
                by: g.created_by,
                at: when(g.created_at),
                group: g.group,
            })
            .collect(),
        tables,
        groups,
        users: users.into_iter().map(|u| u.name).collect(),
        preview_user: preview.preview_user,
        preview_table: preview.preview_table,
        preview: shown,
        message,
        problem,
    };
    let page = GrantsPage {
        chrome: Chrome::new(state, viewer, "/admin"),
        data: &data,
    };
    respond(viewer, status, &data, &page)
}

/// `GET /admin/grants?preview_user=&preview_table=`.
pub(crate) async fn get_grants(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Query(preview): Query<PreviewQuery>,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "the grants page") {
        return refused;
    }
    show_grants(&state, &viewer, &id, StatusCode::OK, preview, None, None).await
}

#[derive(Debug, Deserialize)]
pub(crate) struct GrantForm {
    #[serde(default)]
    csrf: String,
    /// `set` or `revoke`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    row_filter: String,
    /// Comma-separated.
    #[serde(default)]
    hidden_columns: String,
}

impl PostedForm for GrantForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /admin/grants`: set or revoke a grant.
pub(crate) async fn post_grant(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    request: Request,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "changing grants") {
        return refused;
    }
    let none = PreviewQuery::default;
    let form: GrantForm = match read_form(&state, &viewer, request).await {
        Ok(form) => form,
        Err((status, problem)) => {
            return show_grants(&state, &viewer, &id, status, none(), None, Some(problem)).await;
        }
    };
    let done = if form.action == "revoke" {
        crate::grants::revoke_grant(&state, &id, form.group.clone(), &form.target)
            .await
            .map(|()| format!("Revoked {} from {}.", form.target, form.group))
    } else {
        let input = crate::grants::GrantInput {
            group: form.group,
            target: form.target,
            row_filter: Some(form.row_filter),
            hidden_columns: group_list(&form.hidden_columns),
        };
        crate::grants::set_grant(&state, &id, &viewer.principal, input)
            .await
            .map(|g| {
                format!(
                    "Granted {}.{} to {}.",
                    g.schema,
                    g.table.as_deref().unwrap_or("*"),
                    g.group
                )
            })
    };
    match done {
        Ok(message) => {
            show_grants(
                &state,
                &viewer,
                &id,
                StatusCode::OK,
                none(),
                Some(message),
                None,
            )
            .await
        }
        Err(e) => {
            let status = e.status();
            show_grants(
                &state,
                &viewer,
                &id,
                status,
                none(),
                None,
                Some(e.to_string()),
            )
            .await
        }
    }
}
