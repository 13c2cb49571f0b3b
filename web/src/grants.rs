//! Grants over HTTP, for administrators: `GET /api/v1/admin/grants`,
//! `PUT /api/v1/admin/grants` (a table or a schema to a group, possibly with a row filter and
//! hidden columns, checked against the table as it is now), `DELETE /api/v1/admin/grants`, and
//! `GET /api/v1/admin/preview?user=&table=` (the columns and first rows of a table as an account
//! would see them). The portal's grants page calls the same functions.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use dataport_auth::{Grant, Principal, TargetTable};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::accounts::run;
use crate::auth::{Admin, json_body};
use crate::{ApiError, AppState, RequestId};

/// Rows a preview shows.
pub(crate) const PREVIEW_ROWS: usize = 20;

#[derive(Debug, Serialize)]
pub(crate) struct GrantsBody {
    /// What every group may read without a grant.
    pub(crate) built_in: &'static str,
    pub(crate) grants: Vec<Grant>,
}

pub(crate) const BUILT_IN: &str =
    "data-ops and data-private read every table; dataread every table not marked private";

/// A grant to set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantInput {
    pub(crate) group: String,
    /// `schema.table` or `schema.*`.
    pub(crate) target: String,
    #[serde(default)]
    pub(crate) row_filter: Option<String>,
    #[serde(default)]
    pub(crate) hidden_columns: Vec<String>,
}

/// Sets (or replaces) a grant by `admin`: a row filter or hidden columns need one table, and
/// must fit it as it is now.
pub(crate) async fn set_grant(
    state: &AppState,
    request_id: &str,
    admin: &Principal,
    input: GrantInput,
) -> Result<Grant, ApiError> {
    let target: TargetTable = input
        .target
        .trim()
        .parse()
        .map_err(|e| ApiError::of(&e, request_id))?;
    let row_filter = input
        .row_filter
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty());
    let hidden: Vec<String> = input
        .hidden_columns
        .iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if row_filter.is_some() || !hidden.is_empty() {
        let Some(table) = target.table.as_deref() else {
            return Err(ApiError::bad_request(format!(
                "row filters and hidden columns need one table (SCHEMA.TABLE), not {target}"
            ))
            .with_request_id(request_id));
        };
        let snapshot = state.engine.catalog().snapshot();
        let t = snapshot.table(&target.schema, table).ok_or_else(|| {
            ApiError::of_kind(
                dataport_engine::ErrorKind::NotFound,
                format!("there is no table {target} to restrict"),
            )
            .with_request_id(request_id)
        })?;
        dataport_engine::check_grant(t, row_filter.as_deref(), &hidden)
            .map_err(|e| ApiError::of(&e, request_id))?;
    }
    let group = input.group.trim().to_string();
    let by = admin.name.clone();
    let (g, t) = (group.clone(), target.clone());
    run(state, request_id, move |a| {
        a.grant(&g, &t, row_filter.as_deref(), &hidden, &by)?;
        a.grants()
    })
    .await?
    .into_iter()
    .find(|x| x.group == group && x.schema == target.schema && x.table == target.table)
    .ok_or_else(|| ApiError::internal("the grant was not stored").with_request_id(request_id))
}

/// Revokes `group`'s grant on `target`.
pub(crate) async fn revoke_grant(
    state: &AppState,
    request_id: &str,
    group: String,
    target: &str,
) -> Result<(), ApiError> {
    let target: TargetTable = target
        .trim()
        .parse()
        .map_err(|e| ApiError::of(&e, request_id))?;
    run(state, request_id, move |a| {
        a.revoke_grant(group.trim(), &target)
    })
    .await
}

/// `GET /api/v1/admin/grants`.
pub(crate) async fn list(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(_): Admin,
) -> Result<Json<GrantsBody>, ApiError> {
    let grants = run(&state, &id, |a| a.grants()).await?;
    Ok(Json(GrantsBody {
        built_in: BUILT_IN,
        grants,
    }))
}

/// `PUT /api/v1/admin/grants` `{group, target, row_filter?, hidden_columns?}`.
pub(crate) async fn put(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(admin): Admin,
    body: Result<Json<GrantInput>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Grant>, ApiError> {
    let input = json_body(
        &state,
        &id,
        body,
        "{\"group\": \"eu\", \"target\": \"sales.orders\", \"row_filter\": \"region = 'EU'\", \"hidden_columns\": [\"email\"]}",
    )?;
    let grant = set_grant(&state, &id, &admin, input).await?;
    tracing::info!(request_id = %id, by = %admin.name, group = %grant.group, "grant set over HTTP");
    Ok(Json(grant))
}

#[derive(Debug, Deserialize)]
pub(crate) struct GrantKey {
    group: String,
    target: String,
}

/// `DELETE /api/v1/admin/grants?group=&target=`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(admin): Admin,
    Query(key): Query<GrantKey>,
) -> Result<StatusCode, ApiError> {
    revoke_grant(&state, &id, key.group.clone(), &key.target).await?;
    tracing::info!(request_id = %id, by = %admin.name, group = %key.group, target = %key.target, "grant revoked over HTTP");
    Ok(StatusCode::NO_CONTENT)
}

/// A table as an account would see it.
#[derive(Debug, Serialize)]
pub(crate) struct Preview {
    pub(crate) user: String,
    pub(crate) table: String,
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    /// Rows beyond those shown.
    pub(crate) more: bool,
}

/// The columns and first rows of `table` as account `login` may read them: the query runs as
/// that account (its grants, row filters and hidden columns), under a request id that names
/// the administrator who asked (`preview-by-<admin>-…`), and is audited so.
pub(crate) async fn preview(
    state: &AppState,
    request_id: &str,
    admin: &Principal,
    login: &str,
    table: &str,
) -> Result<Preview, ApiError> {
    let login = login.trim().to_string();
    let account = run(state, request_id, move |a| a.account(&login)).await?;
    let principal = state
        .auth
        .principal(&account.name)
        .map_err(|e| ApiError::of(&e, request_id))?
        .ok_or_else(|| {
            ApiError::bad_request(format!("{} is not active: it sees nothing", account.name))
                .with_request_id(request_id)
        })?;
    let target: TargetTable = table
        .trim()
        .parse()
        .map_err(|e| ApiError::of(&e, request_id))?;
    let Some(name) = target.table.as_deref() else {
        return Err(
            ApiError::bad_request("preview one table (SCHEMA.TABLE)").with_request_id(request_id)
        );
    };
    let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let sql = format!(
        "select * from {}.{} limit {}",
        quoted(&target.schema),
        quoted(name),
        PREVIEW_ROWS + 1
    );
    let as_user = format!("preview-by-{}-{request_id}", admin.name);
    let ctx = crate::request_context(&principal, &as_user);
    let request = dataport_engine::QueryRequest {
        sql,
        params: Vec::new(),
        max_rows: None,
    };
    let mut stream = state.engine.execute(request, &ctx).await?;
    let columns = stream
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows = Vec::new();
    while let Some(batch) = stream.next().await {
        rows.extend(crate::format::text_rows(&batch?)?);
    }
    let more = rows.len() > PREVIEW_ROWS;
    rows.truncate(PREVIEW_ROWS);
    Ok(Preview {
        user: account.name,
        table: format!("{}.{name}", target.schema),
        columns,
        rows,
        more,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct PreviewParams {
    user: String,
    table: String,
}

/// `GET /api/v1/admin/preview?user=&table=`.
pub(crate) async fn get_preview(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(admin): Admin,
    Query(params): Query<PreviewParams>,
) -> Result<Json<Preview>, ApiError> {
    preview(&state, &id, &admin, &params.user, &params.table)
        .await
        .map(Json)
}
