//! The SQL page (`/sql`): a query box that runs through the same engine, read-only policy,
//! grants, limits and audit as `POST /api/v1/query`; the result as a table, a page of rows at a
//! time (each page runs the query again and stops reading after it); a running query cancelled
//! from the page (`POST /sql/cancel`); downloads as CSV, Parquet or Arrow (`POST /sql/download`,
//! the API's encoders); and the viewer's own recent queries from the audit log.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dataport_auth::AuditQuery;
use dataport_engine::QueryRequest;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use tokio_util::sync::CancellationToken;

use super::{Chrome, PostedForm, Viewer, read_form, respond, when};
use crate::format::Format;
use crate::login::form_from_client;
use crate::{ApiError, AppState, RequestId};

/// Rows on a page of results.
pub(crate) const PAGE_ROWS: usize = 100;
/// Longest value shown in a cell (the downloads have it whole).
const CELL_CHARS: usize = 200;

/// The page's queries running now, by the id each page gave its form: what `POST /sql/cancel`
/// stops. Only the account that started a query may cancel it.
#[derive(Debug, Default)]
pub(crate) struct RunningQueries {
    running: std::sync::Mutex<HashMap<String, (i64, CancellationToken)>>,
}

impl RunningQueries {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (i64, CancellationToken)>> {
        match self.running.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Registers the query `id` of `account` until the returned guard is dropped.
    fn start(self: &Arc<Self>, id: &str, account: i64) -> Running {
        let token = CancellationToken::new();
        self.map().insert(id.to_string(), (account, token.clone()));
        Running {
            queries: Arc::clone(self),
            id: id.to_string(),
            token,
        }
    }

    /// Cancels `account`'s query `id`; whether there was one.
    fn cancel(&self, id: &str, account: i64) -> bool {
        match self.map().get(id) {
            Some((owner, token)) if *owner == account => {
                token.cancel();
                true
            }
            _ => false,
        }
    }
}

/// A query of the page while it runs.
struct Running {
    queries: Arc<RunningQueries>,
    id: String,
    token: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.queries.map().remove(&self.id);
    }
}

/// The id a rendered page gives its next query.
fn new_query_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[derive(Debug, Deserialize, Default)]
pub(crate) struct SqlForm {
    #[serde(default)]
    csrf: String,
    /// The page's id for this run (what its Cancel button names).
    #[serde(default)]
    query_id: String,
    #[serde(default)]
    sql: String,
    /// The page of results, from 0.
    #[serde(default)]
    page: usize,
    /// `csv`, `parquet` or `arrow` (downloads).
    #[serde(default)]
    format: String,
}

/// A page of a query's result.
#[derive(Debug, Serialize)]
pub(crate) struct ResultPage {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) page: usize,
    pub(crate) first_row: usize,
    /// More rows follow this page.
    pub(crate) more: bool,
}

/// One of the viewer's recent queries.
#[derive(Debug, Serialize)]
pub(crate) struct HistoryLine {
    pub(crate) sql: String,
    pub(crate) at: String,
    pub(crate) at_ms: i64,
    pub(crate) surface: String,
    pub(crate) rows: u64,
    pub(crate) duration_ms: u64,
    pub(crate) outcome: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct SqlData {
    pub(crate) sql: String,
    pub(crate) result: Option<ResultPage>,
    pub(crate) error: Option<String>,
    pub(crate) history: Vec<HistoryLine>,
}

#[derive(Template)]
#[template(path = "sql.html")]
struct SqlPage<'a> {
    chrome: Chrome,
    data: &'a SqlData,
    page_rows: usize,
    /// The id of the page's next run.
    query_id: String,
}

fn history(state: &AppState, viewer: &Viewer) -> Vec<HistoryLine> {
    let query = AuditQuery {
        user: Some(viewer.principal.name.clone()),
        limit: 200,
    };
    match state.auth.store().audit_entries(&query) {
        Ok(entries) => entries
            .into_iter()
            .filter(|e| e.account_id == Some(viewer.principal.id) && !e.sql.trim().is_empty())
            .take(20)
            .map(|e| HistoryLine {
                at: when(e.at_ms / 1000),
                at_ms: e.at_ms,
                sql: e.sql,
                surface: e.surface,
                rows: e.rows,
                duration_ms: e.duration_ms,
                outcome: e.outcome,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "the SQL page shows no history");
            Vec::new()
        }
    }
}

/// A value cut to [`CELL_CHARS`].
fn cut(value: String) -> String {
    if value.chars().count() > CELL_CHARS {
        let kept: String = value.chars().take(CELL_CHARS).collect();
        format!("{kept}…")
    } else {
        value
    }
}

/// The values of a page of rows, as text (what the API's CSV would say).
pub(super) async fn run_page(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    sql: &str,
    page: usize,
) -> Result<ResultPage, ApiError> {
    let ctx = crate::request_context(&viewer.principal, request_id);
    let request = QueryRequest {
        sql: sql.to_string(),
        params: Vec::new(),
        max_rows: None,
    };
    let mut stream = state.engine.execute(request, &ctx).await?;
    let schema = stream.schema();
    let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
    let skip = page.saturating_mul(PAGE_ROWS);
    let mut seen = 0usize;
    let mut rows: Vec<Vec<String>> = Vec::new();
    while let Some(batch) = stream.next().await {
        for row in crate::format::text_rows(&batch?)? {
            if seen >= skip && rows.len() <= PAGE_ROWS {
                rows.push(row.into_iter().map(cut).collect());
            }
            seen += 1;
        }
        if rows.len() > PAGE_ROWS {
            // Dropping the stream cancels the rest of the query.
            break;
        }
    }
    let more = rows.len() > PAGE_ROWS;
    rows.truncate(PAGE_ROWS);
    Ok(ResultPage {
        columns,
        rows,
        page,
        first_row: skip + 1,
        more,
    })
}

fn show(state: &AppState, viewer: &Viewer, status: StatusCode, data: &SqlData) -> Response {
    let page = SqlPage {
        chrome: Chrome::new(state, viewer, "/sql"),
        data,
        page_rows: PAGE_ROWS,
        query_id: new_query_id(),
    };
    respond(viewer, status, data, &page)
}

/// `GET /sql`: the query box and my recent queries.
pub(crate) async fn get_sql(State(state): State<AppState>, viewer: Viewer) -> Response {
    let data = SqlData {
        sql: String::new(),
        result: None,
        error: None,
        history: history(&state, &viewer),
    };
    show(&state, &viewer, StatusCode::OK, &data)
}

/// `POST /sql` (the form): a page of the result, unless the page cancels the query first.
pub(crate) async fn post_sql(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Extension(running): Extension<Arc<RunningQueries>>,
    viewer: Viewer,
    request: Request,
) -> Response {
    let form = match form_from_client::<SqlForm>(&state, request).await {
        Some((_, headers, form)) => match viewer.check_form(&state, &headers, &form.csrf) {
            Ok(()) => Ok(form),
            Err(e) => Err((StatusCode::FORBIDDEN, e.to_string(), form.sql)),
        },
        None => Err((
            StatusCode::BAD_REQUEST,
            "The form could not be read; try again.".into(),
            String::new(),
        )),
    };
    let (status, result, error, sql) = match form {
        Ok(form) if form.sql.trim().is_empty() => (
            StatusCode::BAD_REQUEST,
            None,
            Some("Write a query first.".to_string()),
            form.sql,
        ),
        Ok(form) => {
            let query_id = if form.query_id.is_empty() {
                new_query_id()
            } else {
                form.query_id.clone()
            };
            let run = running.start(&query_id, viewer.principal.id);
            // Cancelling drops the query's stream, which stops it (and audits it as cancelled).
            let result = tokio::select! {
                r = run_page(&state, &viewer, &id, &form.sql, form.page) => Some(r),
                () = run.token.cancelled() => None,
            };
            drop(run);
            match result {
                Some(Ok(page)) => (StatusCode::OK, Some(page), None, form.sql),
                Some(Err(e)) => (e.status(), None, Some(e.to_string()), form.sql),
                None => (
                    StatusCode::OK,
                    None,
                    Some("The query was cancelled.".to_string()),
                    form.sql,
                ),
            }
        }
        Err((status, message, sql)) => (status, None, Some(message), sql),
    };
    let data = SqlData {
        sql,
        result,
        error,
        history: history(&state, &viewer),
    };
    show(&state, &viewer, status, &data)
}

#[derive(Debug, Deserialize)]
pub(crate) struct CancelForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    query_id: String,
}

impl PostedForm for CancelForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /sql/cancel` (the page's Cancel button): stops the viewer's running query of that page.
/// `202` when it was running, `404` when it had finished (or was never the viewer's).
pub(crate) async fn post_cancel(
    State(state): State<AppState>,
    Extension(running): Extension<Arc<RunningQueries>>,
    viewer: Viewer,
    request: Request,
) -> Response {
    let form: CancelForm = match read_form(&state, &viewer, request).await {
        Ok(f) => f,
        Err((status, message)) => return (status, message).into_response(),
    };
    if running.cancel(&form.query_id, viewer.principal.id) {
        tracing::info!(user = %viewer.principal.name, query = %form.query_id, "query cancelled from the SQL page");
        (StatusCode::ACCEPTED, "Cancelling the query.").into_response()
    } else {
        (StatusCode::NOT_FOUND, "That query is not running.").into_response()
    }
}

/// `POST /sql/download` (the result's download buttons): the whole result in the chosen
/// format, as an attachment.
pub(crate) async fn post_download(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    request: Request,
) -> Response {
    let Some((_, headers, form)) = form_from_client::<SqlForm>(&state, request).await else {
        return ApiError::bad_request("the form could not be read").into_response();
    };
    if let Err(e) = viewer.check_form(&state, &headers, &form.csrf) {
        return ApiError::from(e).with_request_id(&id).into_response();
    }
    let format = match Format::negotiate(Some(&form.format), &Default::default()) {
        Ok(f @ (Format::Csv | Format::Parquet | Format::Arrow)) => f,
        _ => {
            return ApiError::bad_request("download as csv, parquet or arrow").into_response();
        }
    };
    let request = QueryRequest {
        sql: form.sql,
        params: Vec::new(),
        max_rows: None,
    };
    match crate::query::respond(&state, &viewer.principal, &id, None, request, format).await {
        Ok(mut response) => {
            let name = format!(
                "attachment; filename=\"result.{}\"",
                if format == Format::Arrow {
                    "arrows"
                } else {
                    format.name()
                }
            );
            if let Ok(value) = HeaderValue::from_str(&name) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        Err(e) => e.into_response(),
    }
}
