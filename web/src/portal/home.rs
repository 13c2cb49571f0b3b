//! The home page (`GET /`): the data I may read and how fresh it is, my API tokens (create one,
//! shown once; revoke), my browser sessions (end one), my last analyst sync as the server saw it,
//! and how to connect with this server's addresses filled in.

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use dataport_auth::NewApiToken;
use dataport_engine::sync::PullRecord;
use serde::{Deserialize, Serialize};

use super::{Chrome, CsrfForm, PostedForm, Viewer, ago, read_form, respond, size_text, when};
use crate::catalog::catalog_body;
use crate::pages::see_other;
use crate::tokens::{DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, create_token, my_tokens};
use crate::{ApiError, AppState, RequestId};

#[derive(Debug, Serialize)]
pub(crate) struct UserView {
    pub(crate) name: String,
    pub(crate) groups: Vec<String>,
    pub(crate) groups_text: String,
    pub(crate) admin: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct TableLine {
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    /// None for a row-filtered share (its size would tell about rows it hides).
    pub(crate) rows: Option<u64>,
    pub(crate) updated_at_ms: Option<i64>,
    pub(crate) updated: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct SchemaLines {
    pub(crate) name: String,
    pub(crate) tables: Vec<TableLine>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TokenLine {
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) created_at: i64,
    pub(crate) expires_at: Option<i64>,
    pub(crate) last_used_at: Option<i64>,
    pub(crate) created: String,
    pub(crate) expires: String,
    pub(crate) last_used: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct SessionLine {
    pub(crate) id: String,
    pub(crate) created_at: i64,
    pub(crate) last_seen_at: i64,
    pub(crate) address: String,
    pub(crate) agent: String,
    pub(crate) current: bool,
    pub(crate) created: String,
    pub(crate) last_seen: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Connect {
    pub(crate) http: String,
    pub(crate) flight: String,
    pub(crate) jdbc: String,
}

/// My last analyst sync, as the server saw it.
#[derive(Debug, Serialize)]
pub(crate) struct PullLine {
    #[serde(flatten)]
    pub(crate) record: PullRecord,
    pub(crate) when: String,
    pub(crate) ago: String,
    pub(crate) bytes_sent_text: String,
    pub(crate) manifest_bytes_text: String,
}

/// What the home page shows (and its JSON twin answers).
#[derive(Debug, Serialize)]
pub(crate) struct HomeData {
    pub(crate) user: UserView,
    pub(crate) tables: usize,
    pub(crate) schemas: Vec<SchemaLines>,
    pub(crate) tokens: Vec<TokenLine>,
    pub(crate) sessions: Vec<SessionLine>,
    /// My last `dataport pull` (none yet: `null`).
    pub(crate) last_pull: Option<PullLine>,
    pub(crate) connect: Connect,
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage<'a> {
    chrome: Chrome,
    data: &'a HomeData,
    new_token: Option<NewTokenView>,
    problem: Option<String>,
    max_days: u32,
    default_days: u32,
}

struct NewTokenView {
    label: String,
    token: String,
}

fn home_data(state: &AppState, viewer: &Viewer, request_id: &str) -> Result<HomeData, ApiError> {
    let principal = &viewer.principal;
    let now = dataport_auth::now_secs();
    let catalog = catalog_body(state, principal, request_id);
    let schemas: Vec<SchemaLines> = catalog
        .schemas
        .into_iter()
        .map(|s| SchemaLines {
            name: s.name,
            tables: s
                .tables
                .into_iter()
                .map(|t| TableLine {
                    updated: t.updated_at_ms.map_or("—".into(), |ms| ago(ms / 1000, now)),
                    schema: t.schema,
                    name: t.name,
                    description: t.description,
                    rows: t.row_count,
                    updated_at_ms: t.updated_at_ms,
                })
                .collect(),
        })
        .collect();
    let tokens = my_tokens(state, principal)
        .map_err(|e| ApiError::of(&e, request_id))?
        .into_iter()
        .map(|t| TokenLine {
            created: when(t.created_at),
            expires: t.expires_at.map_or("never".into(), when),
            last_used: t.last_used_at.map_or("never".into(), |at| ago(at, now)),
            id: t.id,
            label: t.label,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        })
        .collect();
    let sessions = state
        .auth
        .sessions(principal.id)
        .map_err(|e| ApiError::of(&e, request_id))?
        .into_iter()
        .map(|s| SessionLine {
            current: viewer
                .session
                .as_ref()
                .is_some_and(|v| v.session_id == s.id),
            created: when(s.created_at),
            last_seen: ago(s.last_seen_at, now),
            id: s.id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            address: s.address,
            agent: s.user_agent,
        })
        .collect();
    let last_pull = state
        .sync
        .pulls(principal.id, 1)
        .map_err(|e| ApiError::of(&e, request_id))?
        .into_iter()
        .next()
        .map(|p| PullLine {
            when: when(p.started_at_ms / 1000),
            ago: ago(p.started_at_ms / 1000, now),
            bytes_sent_text: size_text(p.bytes_sent),
            manifest_bytes_text: size_text(p.manifest_bytes),
            record: p,
        });
    let http = state.options.public_url.trim_end_matches('/').to_string();
    let flight = state.options.flight_url.clone();
    let jdbc = format!(
        "jdbc:arrow-flight-sql://{}/?useEncryption={}",
        flight
            .split_once("://")
            .map_or(flight.as_str(), |(_, rest)| rest),
        flight.starts_with("grpc+tls://")
    );
    Ok(HomeData {
        user: UserView {
            name: principal.name.clone(),
            groups: principal.groups.clone(),
            groups_text: if principal.groups.is_empty() {
                "none".into()
            } else {
                principal.groups.join(", ")
            },
            admin: principal.admin,
        },
        tables: schemas.iter().map(|s| s.tables.len()).sum(),
        schemas,
        tokens,
        sessions,
        last_pull,
        connect: Connect { http, flight, jdbc },
    })
}

fn render(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    status: StatusCode,
    new_token: Option<(String, NewApiToken)>,
    problem: Option<String>,
) -> Response {
    let data = match home_data(state, viewer, request_id) {
        Ok(data) => data,
        Err(e) => return axum::response::IntoResponse::into_response(e),
    };
    let page = HomePage {
        chrome: Chrome::new(state, viewer, "/"),
        data: &data,
        new_token: new_token.map(|(label, t)| NewTokenView {
            label,
            token: t.token,
        }),
        problem,
        max_days: MAX_TOKEN_DAYS,
        default_days: DEFAULT_TOKEN_DAYS,
    };
    respond(viewer, status, &data, &page)
}

/// `GET /`: the home page.
pub(crate) async fn get_home(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
) -> Response {
    render(&state, &viewer, &id, StatusCode::OK, None, None)
}

#[derive(Debug, Deserialize)]
pub(crate) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    days: Option<u32>,
}

impl PostedForm for TokenForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /tokens` (the home page's form): the new token, shown on the page once.
pub(crate) async fn post_token(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    request: Request,
) -> Response {
    let form: TokenForm = match read_form(&state, &viewer, request).await {
        Ok(form) => form,
        Err((status, problem)) => return render(&state, &viewer, &id, status, None, Some(problem)),
    };
    match create_token(&state, &viewer.principal, &form.label, form.days) {
        Ok(created) => {
            tracing::info!(request_id = %id, user = %viewer.principal.name, token_id = %created.id, "API token created in the portal");
            let label = form.label.trim().to_string();
            render(
                &state,
                &viewer,
                &id,
                StatusCode::CREATED,
                Some((label, created)),
                None,
            )
        }
        Err(e) => {
            let status = crate::error::status_for(dataport_common::HasKind::kind(&e));
            render(&state, &viewer, &id, status, None, Some(e.to_string()))
        }
    }
}

/// `POST /tokens/{id}/revoke`.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    if let Err((status, problem)) = read_form::<CsrfForm>(&state, &viewer, request).await {
        return render(&state, &viewer, &id, status, None, Some(problem));
    }
    match state
        .accounts
        .revoke_own_api_token(viewer.principal.id, &token)
    {
        Ok(()) => see_other("/"),
        Err(e) => render(
            &state,
            &viewer,
            &id,
            StatusCode::NOT_FOUND,
            None,
            Some(e.to_string()),
        ),
    }
}

/// `POST /sessions/{id}/end`.
pub(crate) async fn end_session(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(session): Path<String>,
    request: Request,
) -> Response {
    if let Err((status, problem)) = read_form::<CsrfForm>(&state, &viewer, request).await {
        return render(&state, &viewer, &id, status, None, Some(problem));
    }
    match state.auth.end_session_of(viewer.principal.id, &session) {
        Ok(()) => see_other("/"),
        Err(e) => render(
            &state,
            &viewer,
            &id,
            StatusCode::NOT_FOUND,
            None,
            Some(e.to_string()),
        ),
    }
}
