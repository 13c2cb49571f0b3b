//! My API tokens: `GET /api/v1/auth/tokens`, `POST /api/v1/auth/tokens` (the secret shown
//! once; `"scope": "assistant"` for a token that works only at `/mcp`),
//! `DELETE /api/v1/auth/tokens/{id}`. Anyone signed in manages their own; the portal's home and
//! assistants pages use the same functions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use dataport_auth::{ApiTokenRecord, AuthError, NewApiToken, Principal};
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, json_body};
use crate::{ApiError, AppState, RequestId};

/// Longest lifetime of a token made here (an administrator's `dataport token create` may set
/// none).
pub(crate) const MAX_TOKEN_DAYS: u32 = 365;
/// Lifetime when none is asked for.
pub(crate) const DEFAULT_TOKEN_DAYS: u32 = 90;

#[derive(Debug, Serialize)]
pub(crate) struct TokensBody {
    pub(crate) tokens: Vec<ApiTokenRecord>,
}

/// `principal`'s tokens that still work, newest first.
pub(crate) fn my_tokens(
    state: &AppState,
    principal: &Principal,
) -> Result<Vec<ApiTokenRecord>, AuthError> {
    let now = dataport_auth::now_secs();
    Ok(state
        .accounts
        .api_tokens(Some(&principal.name))?
        .into_iter()
        .filter(|t| t.account_id == principal.id && t.revoked_at.is_none())
        .filter(|t| t.expires_at.is_none_or(|at| at > now))
        .collect())
}

/// A new token of the whole API for `principal`: a label of 1–80 characters, 1–365 days.
pub(crate) fn create_token(
    state: &AppState,
    principal: &Principal,
    label: &str,
    days: Option<u32>,
) -> Result<NewApiToken, AuthError> {
    create_scoped_token(state, principal, label, days, None)
}

/// A new token for `principal` as [`create_token`], of `scope` (none: the whole API;
/// [`ASSISTANT_SCOPE`](dataport_auth::ASSISTANT_SCOPE): only `/mcp`).
pub(crate) fn create_scoped_token(
    state: &AppState,
    principal: &Principal,
    label: &str,
    days: Option<u32>,
    scope: Option<&str>,
) -> Result<NewApiToken, AuthError> {
    let label = label.trim();
    if label.is_empty() || label.chars().count() > 80 {
        return Err(AuthError::InvalidInput {
            message: "give the token a name of 1 to 80 characters (where it is used)".into(),
        });
    }
    let days = days.unwrap_or(DEFAULT_TOKEN_DAYS);
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        return Err(AuthError::InvalidInput {
            message: format!("a token lasts 1 to {MAX_TOKEN_DAYS} days"),
        });
    }
    let ttl = std::time::Duration::from_secs(u64::from(days) * 86_400);
    state
        .accounts
        .create_scoped_api_token(&principal.name, label, Some(ttl), scope)
}

/// `GET /api/v1/auth/tokens`: my tokens (never their secrets).
pub(crate) async fn list(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
) -> Result<Json<TokensBody>, ApiError> {
    my_tokens(&state, &principal)
        .map(|tokens| Json(TokensBody { tokens }))
        .map_err(|e| ApiError::of(&e, &id))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    label: String,
    #[serde(default)]
    expires_in_days: Option<u32>,
    /// None: the whole API; `assistant`: only `/mcp`.
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CreatedBody {
    id: String,
    /// Shown this once: only its hash is kept.
    token: String,
    label: String,
    expires_at: Option<i64>,
    scope: Option<String>,
}

/// `POST /api/v1/auth/tokens` `{"label", "expires_in_days"?, "scope"?}` → 201 with the token,
/// once.
pub(crate) async fn create(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CreatedBody>), ApiError> {
    let body = json_body(
        &state,
        &id,
        body,
        "{\"label\": \"laptop\", \"expires_in_days\": 90, \"scope\": null or \"assistant\"}",
    )?;
    let created = create_scoped_token(
        &state,
        &principal,
        &body.label,
        body.expires_in_days,
        body.scope.as_deref(),
    )
    .map_err(|e| ApiError::of(&e, &id))?;
    tracing::info!(request_id = %id, user = %principal.name, token_id = %created.id, scope = body.scope.as_deref().unwrap_or("api"), "API token created by its owner");
    Ok((
        StatusCode::CREATED,
        Json(CreatedBody {
            id: created.id,
            token: created.token,
            label: body.label.trim().to_string(),
            expires_at: created.expires_at,
            scope: body.scope,
        }),
    ))
}

/// `DELETE /api/v1/auth/tokens/{id}`: revoke one of mine.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(token): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .accounts
        .revoke_own_api_token(principal.id, &token)
        .map_err(|e| ApiError::of(&e, &id))?;
    Ok(StatusCode::NO_CONTENT)
}
