//! Push sources over HTTP: `POST /webhooks/{source}` hands the raw body and headers to the
//! source's [`PushSource`] (the binary wires each configured push connector to one; this crate
//! knows none of them), and `GET /api/v1/sources/{source}/files/{id}` serves the files a
//! source stored (Jira attachments) to callers whose grants let them see the file's row.
//!
//! A body over the source's limit is refused with 413 before it is read whole; a refused
//! delivery gets one clear status (503 when the source cannot verify anything, 401 for a bad
//! signature, 400 for a body that is not the source's format).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dataport_common::ErrorKind;
use futures::StreamExt;
use serde::Serialize;

use crate::auth::Caller;
use crate::{ApiError, AppState, RequestId, request_context};

/// A source that receives its data by request.
#[async_trait]
pub trait PushSource: Send + Sync {
    /// The largest body accepted.
    fn max_body_bytes(&self) -> usize;
    /// Verify and store one delivery; `headers` are `(lowercase name, value)`. The answer is
    /// the JSON acknowledgement.
    async fn accept(
        &self,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<serde_json::Value, PushRejection>;
    /// The source's state for health and metrics.
    async fn status(&self) -> Result<PushStatus, String>;
    /// A stored file by id, and a query that returns a row only to callers who may see it
    /// (their grants and row filters apply); `None` for an unknown id.
    async fn file(&self, id: &str) -> Result<Option<PushFile>, String>;
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushRejection {
    /// The source cannot accept anything (no secret configured): 503.
    Unavailable(String),
    /// The delivery's signature is missing or wrong: 401.
    Unauthorized(String),
    /// The body is not a delivery of this source: 400.
    Invalid(String),
    /// Storing it failed; the sender should retry: 500.
    Internal(String),
}

/// A push source's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushStatus {
    /// The connector type (`jira`).
    pub kind: String,
    /// The last delivery received (Unix ms).
    pub last_received_ms: Option<i64>,
    /// Deliveries waiting to be processed.
    pub queued: u64,
    /// Deliveries given up on.
    pub failed: u64,
    /// Items given up on after repeated failures, with their errors.
    pub parked: Vec<ParkedItem>,
    /// Items with rows.
    pub items: u64,
    /// The last successful poll (Unix ms).
    pub last_poll_ms: Option<i64>,
    /// Whether deliveries can be verified at all.
    pub secret_configured: bool,
}

/// An item a push source gave up on for now.
#[derive(Debug, Clone, Serialize)]
pub struct ParkedItem {
    pub item: String,
    pub error: Option<String>,
    pub since_ms: Option<i64>,
    pub failures: u32,
}

/// A stored file of a push source.
#[derive(Debug, Clone)]
pub struct PushFile {
    pub path: PathBuf,
    pub filename: String,
    pub content_type: String,
    /// SQL that returns at least one row when the caller may see this file.
    pub visible_if: String,
}

/// The configured push sources by name.
#[derive(Clone, Default)]
pub struct PushSources(Arc<BTreeMap<String, Arc<dyn PushSource>>>);

impl std::fmt::Debug for PushSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl PushSources {
    pub fn new(sources: impl IntoIterator<Item = (String, Arc<dyn PushSource>)>) -> Self {
        Self(Arc::new(sources.into_iter().collect()))
    }

    fn get(&self, name: &str) -> Option<&Arc<dyn PushSource>> {
        self.0.get(name)
    }

    /// Every source's state, by name.
    pub(crate) async fn statuses(&self) -> Vec<(String, Result<PushStatus, String>)> {
        let mut out = Vec::with_capacity(self.0.len());
        for (name, source) in self.0.iter() {
            out.push((name.clone(), source.status().await));
        }
        out
    }
}

/// `POST /webhooks/{source}`.
pub(crate) async fn post_webhook(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(source) = state.options.push_sources.get(&name).cloned() else {
        return ApiError::route_not_found(&format!("/webhooks/{name}"))
            .with_request_id(&request_id)
            .into_response();
    };
    let limit = source.max_body_bytes();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::payload_too_large(limit)
            .with_request_id(&request_id)
            .into_response();
    }
    // Streamed past the limit: 413 as soon as it is passed, the rest unread.
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::payload_too_large(limit)
                .with_request_id(&request_id)
                .into_response();
        }
    };
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    match source.accept(pairs, body).await {
        Ok(receipt) => (StatusCode::OK, Json(receipt)).into_response(),
        Err(rejection) => {
            let error = match rejection {
                PushRejection::Unavailable(m) => ApiError::of_kind(ErrorKind::Unavailable, m),
                PushRejection::Unauthorized(m) => ApiError::of_kind(ErrorKind::Unauthenticated, m),
                PushRejection::Invalid(m) => ApiError::of_kind(ErrorKind::InvalidArgument, m),
                // Logged in full by `internal`; the sender only learns to retry.
                PushRejection::Internal(m) => ApiError::internal(format!(
                    "webhook of source '{name}' could not be stored: {m}"
                )),
            };
            tracing::info!(request_id = %request_id, source = %name, status = error.status().as_u16(), "webhook refused");
            error.with_request_id(&request_id).into_response()
        }
    }
}

/// `GET /api/v1/sources/{source}/files/{id}`: a stored file, to callers who may see its row;
/// anyone else gets the same 404 as for an unknown id.
pub(crate) async fn get_file(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::of_kind(
            ErrorKind::NotFound,
            format!("source '{name}' has no file '{id}' that you may read"),
        )
        .with_request_id(&request_id)
    };
    let Some(source) = state.options.push_sources.get(&name).cloned() else {
        return Err(not_found());
    };
    let file = match source.file(&id).await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(not_found()),
        Err(e) => return Err(ApiError::internal(e).with_request_id(&request_id)),
    };
    let ctx = request_context(&principal, &request_id);
    let request = dataport_engine::QueryRequest {
        sql: file.visible_if.clone(),
        params: Vec::new(),
        max_rows: Some(1),
    };
    let visible = match state.engine.execute(request, &ctx).await {
        Ok(mut stream) => {
            let mut rows = 0;
            while let Some(batch) = stream.next().await {
                match batch {
                    Ok(b) => rows += b.num_rows(),
                    Err(_) => return Err(not_found()),
                }
            }
            rows > 0
        }
        // Not allowed to read the tables: the same answer as an unknown file.
        Err(_) => false,
    };
    if !visible {
        return Err(not_found());
    }
    let handle = tokio::fs::File::open(&file.path)
        .await
        .map_err(|_| not_found())?;
    let len = handle
        .metadata()
        .await
        .map_err(|e| ApiError::internal(e).with_request_id(&request_id))?
        .len();
    let mut response = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(handle)));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&file.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&content_disposition(&file.filename))
            .unwrap_or(HeaderValue::from_static("attachment")),
    );
    // Never rendered by the browser as a page of ours.
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    Ok(response)
}

/// `attachment; filename="…"; filename*=UTF-8''…` (RFC 6266): an ASCII fallback and the
/// exact name percent-encoded.
fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// Prometheus lines for every push source.
pub(crate) async fn render_metrics(sources: &PushSources) -> String {
    use std::fmt::Write as _;
    let statuses = sources.statuses().await;
    if statuses.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let mut family =
        |name: &str, help: &str, kind: &str, value: &dyn Fn(&PushStatus) -> Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (source, status) in &statuses {
                if let Ok(s) = status
                    && let Some(v) = value(s)
                {
                    let _ = writeln!(out, "{name}{{source=\"{source}\"}} {v}");
                }
            }
        };
    let secs = |ms: Option<i64>| ms.map(|m| m as f64 / 1000.0);
    family(
        "dataport_push_last_received_timestamp_seconds",
        "When the push source last received a delivery.",
        "gauge",
        &|s| secs(s.last_received_ms),
    );
    family(
        "dataport_push_events_queued",
        "Deliveries accepted and waiting to be processed.",
        "gauge",
        &|s| Some(s.queued as f64),
    );
    family(
        "dataport_push_events_failed",
        "Deliveries given up on after repeated failures.",
        "gauge",
        &|s| Some(s.failed as f64),
    );
    family(
        "dataport_push_items_parked",
        "Items (issues) parked after repeated failures.",
        "gauge",
        &|s| Some(s.parked.len() as f64),
    );
    family(
        "dataport_push_last_poll_timestamp_seconds",
        "When the push source's last poll succeeded.",
        "gauge",
        &|s| secs(s.last_poll_ms),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn file_names_are_quoted_and_encoded() {
        assert_eq!(
            content_disposition("log 1.txt"),
            "attachment; filename=\"log 1.txt\"; filename*=UTF-8''log%201.txt"
        );
        assert_eq!(
            content_disposition("a\"b\r\n.č"),
            "attachment; filename=\"a_b__._\"; filename*=UTF-8''a%22b%0D%0A.%C4%8D"
        );
    }
}
