//! The administrators' account API: list, invite, disable and enable, change groups, delete,
//! and the record of those changes. Every rule (usernames, the last active administrator)
//! is `dataport_auth::Accounts`'s, so the command line and this API agree; each change is
//! recorded with the administrator and the request id.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use dataport_auth::{AccountChange, AccountState, Accounts, Actor, AuthError, UserRecord};
use serde::{Deserialize, Serialize};

use crate::auth::{Admin, json_body};
use crate::{ApiError, AppState, RequestId};

#[derive(Debug, Serialize)]
pub(crate) struct UsersBody {
    users: Vec<UserRecord>,
}

#[derive(Debug, Serialize)]
pub(crate) struct UserBody {
    user: UserRecord,
}

#[derive(Debug, Serialize)]
pub(crate) struct LinkedUserBody {
    user: UserRecord,
    /// What became of the password link: `sent`, `logged` (no SMTP server; in the server log)
    /// or `failed` (see the server log).
    mail: &'static str,
}

/// Makes a set-up (or reset) link for `user` and mails it; what became of the mail.
pub(crate) async fn mail_link(
    state: &AppState,
    request_id: &str,
    user: &UserRecord,
) -> Result<&'static str, ApiError> {
    let login = user.name.clone();
    let Some(link) = run(state, request_id, move |a| a.password_link(&login)).await? else {
        return Err(ApiError::of(
            &AuthError::Conflict {
                message: format!("{} is disabled: enable it before sending a link", user.name),
            },
            request_id,
        ));
    };
    Ok(match crate::password::send_link(state, &link).await {
        Ok(dataport_mail::Delivery::Sent) => "sent",
        Ok(dataport_mail::Delivery::Logged) => "logged",
        Err(e) => {
            tracing::error!(request_id, error = %e, user = %user.name, "cannot send a password link");
            "failed"
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Invitation {
    email: String,
    /// Display name.
    #[serde(default)]
    name: String,
    /// Default: `auth.default_groups`.
    groups: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountPatch {
    /// `active` or `disabled`.
    state: Option<AccountState>,
    groups: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChangesParams {
    account: Option<i64>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChangesBody {
    changes: Vec<AccountChange>,
}

/// Runs an account operation off the async runtime (SQLite) and tags its error.
pub(crate) async fn run<T: Send + 'static>(
    state: &AppState,
    request_id: &str,
    op: impl FnOnce(&Accounts) -> Result<T, AuthError> + Send + 'static,
) -> Result<T, ApiError> {
    let accounts = state.accounts.clone();
    tokio::task::spawn_blocking(move || op(&accounts))
        .await
        .map_err(|e| {
            ApiError::internal(format!("account task failed: {e}")).with_request_id(request_id)
        })?
        .map_err(|e| ApiError::of(&e, request_id))
}

/// `GET /api/v1/admin/users`.
pub(crate) async fn list(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(_): Admin,
) -> Result<Json<UsersBody>, ApiError> {
    let users = run(&state, &id, |a| a.users()).await?;
    Ok(Json(UsersBody { users }))
}

/// `POST /api/v1/admin/users`: invite `{email, name?, groups?}`.
pub(crate) async fn invite(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(admin): Admin,
    body: Result<Json<Invitation>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<LinkedUserBody>), ApiError> {
    let invitation = json_body(
        &state,
        &id,
        body,
        "{\"email\": \"…\", \"name\": \"…\", \"groups\": […]}",
    )?;
    let (user, mail) = invite_account(
        &state,
        &id,
        &admin,
        invitation.email,
        invitation.name,
        invitation.groups,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(LinkedUserBody { user, mail })))
}

/// Invites `email` by `admin` and mails the set-up link: the account and what became of the
/// mail (the API's and the portal's invitation).
pub(crate) async fn invite_account(
    state: &AppState,
    request_id: &str,
    admin: &dataport_auth::Principal,
    email: String,
    name: String,
    groups: Option<Vec<String>>,
) -> Result<(UserRecord, &'static str), ApiError> {
    let by = Actor::principal(admin, request_id);
    let user = run(state, request_id, move |a| {
        a.invite(&email, &name, groups.as_deref(), &by)
    })
    .await?;
    let mail = mail_link(state, request_id, &user).await?;
    Ok((user, mail))
}

/// `POST /api/v1/admin/users/{id}/link`: mail the account a new set-up (invited) or reset
/// (active) link.
pub(crate) async fn post_link(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(_): Admin,
    Path(account): Path<i64>,
) -> Result<Json<LinkedUserBody>, ApiError> {
    let user = run(&state, &id, move |a| a.account_by_id(account)).await?;
    let mail = mail_link(&state, &id, &user).await?;
    Ok(Json(LinkedUserBody { user, mail }))
}

/// `GET /api/v1/admin/users/{id}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(_): Admin,
    Path(account): Path<i64>,
) -> Result<Json<UserBody>, ApiError> {
    let user = run(&state, &id, move |a| a.account_by_id(account)).await?;
    Ok(Json(UserBody { user }))
}

/// `PATCH /api/v1/admin/users/{id}`: `{state?: "active" | "disabled", groups?: […]}`.
pub(crate) async fn patch(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(admin): Admin,
    Path(account): Path<i64>,
    body: Result<Json<AccountPatch>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<UserBody>, ApiError> {
    let patch = json_body(
        &state,
        &id,
        body,
        "{\"state\": \"active\" | \"disabled\", \"groups\": […]}",
    )?;
    let user = patch_account(&state, &id, &admin, account, patch.state, patch.groups).await?;
    Ok(Json(UserBody { user }))
}

/// Changes an account's groups and state, by `admin` (the API's and the portal's).
pub(crate) async fn patch_account(
    state: &AppState,
    request_id: &str,
    admin: &dataport_auth::Principal,
    account: i64,
    new_state: Option<AccountState>,
    groups: Option<Vec<String>>,
) -> Result<UserRecord, ApiError> {
    let by = Actor::principal(admin, request_id);
    run(state, request_id, move |a| {
        let mut user = a.account_by_id(account)?;
        if let Some(groups) = &groups {
            user = a.change_groups(&user.name, groups, &by)?;
        }
        if let Some(new_state) = new_state {
            user = a.set_state(&user.name, new_state, &by)?;
        }
        Ok(user)
    })
    .await
}

/// `DELETE /api/v1/admin/users/{id}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(admin): Admin,
    Path(account): Path<i64>,
) -> Result<StatusCode, ApiError> {
    let by = Actor::principal(&admin, &id);
    run(&state, &id, move |a| {
        let user = a.account_by_id(account)?;
        a.delete(&user.name, &by)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/admin/changes?account=&limit=`: changes to accounts, newest first.
pub(crate) async fn changes(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(_): Admin,
    Query(params): Query<ChangesParams>,
) -> Result<Json<ChangesBody>, ApiError> {
    let limit = params.limit.unwrap_or(100).min(10_000);
    let changes = run(&state, &id, move |a| a.changes(params.account, limit)).await?;
    Ok(Json(ChangesBody { changes }))
}
