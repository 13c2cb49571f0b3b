//! `POST /api/v1/query`: run SQL, stream the result in the negotiated format.

use crate::params::json_to_scalar;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use dataport_engine::{QueryRequest, QueryStream, Surface};
use futures::{Stream, StreamExt};
use serde::Deserialize;

use crate::format::{Encoder, Format};
use crate::{ApiError, AppState, RequestId};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryBody {
    sql: String,
    #[serde(default)]
    params: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct QueryParams {
    format: Option<String>,
}

pub(crate) async fn post_query(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    crate::auth::Caller(principal): crate::auth::Caller,
    tally: Option<axum::Extension<std::sync::Arc<dataport_engine::telemetry::Tally>>>,
    Query(query): Query<QueryParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tag = |e: ApiError| e.with_request_id(&request_id);
    let format = Format::negotiate(query.format.as_deref(), &headers).map_err(tag)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            tag(ApiError::payload_too_large(state.options.max_body_bytes))
        } else {
            tag(ApiError::bad_request(format!(
                "cannot read request body: {rejection}"
            )))
        }
    })?;
    let body: QueryBody = serde_json::from_slice(&body).map_err(|e| {
        tag(ApiError::bad_request(format!(
            "request body must be JSON {{\"sql\": \"…\", \"params\": […]}}: {e}"
        )))
    })?;
    let params = body
        .params
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json_to_scalar(v)
                .map_err(|m| ApiError::bad_request(format!("parameter ${}: {m}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(tag)?;
    let request = QueryRequest {
        sql: body.sql,
        params,
        max_rows: None,
    };
    let tally = tally.map(|axum::Extension(t)| t);
    respond(&state, &principal, &request_id, tally, request, format).await
}

/// Runs `request` for `principal` and answers its result in `format`, streamed (JSON whole,
/// within `engine.max_json_rows`): the API's and the portal's downloads.
pub(crate) async fn respond(
    state: &AppState,
    principal: &dataport_engine::Principal,
    request_id: &str,
    tally: Option<std::sync::Arc<dataport_engine::telemetry::Tally>>,
    request: QueryRequest,
    format: Format,
) -> Result<Response, ApiError> {
    let request_id = request_id.to_string();
    let tag = |e: ApiError| e.with_request_id(&request_id);
    let cap = state.options.max_json_rows;
    // Every format runs the same plan: JSON's row cap is enforced while reading (the query is
    // dropped, and so cancelled, at the first row over it), not by a LIMIT in the plan, which
    // could change the answer of a query that depends on row order (a window frame over ties).
    let mut ctx = crate::request_context(principal, &request_id);
    if let Some(tally) = tally {
        ctx = ctx.with_tally(tally);
    }
    let mut stream = state
        .engine
        .execute(request, &ctx)
        .await
        .map_err(|e| tag(e.into()))?;
    let schema = stream.schema();
    let mut encoder = format.encoder(&schema).map_err(|e| {
        tag(ApiError::from(dataport_engine::EngineError::Internal {
            message: e.to_string(),
        }))
    })?;

    let body = if format == Format::Json {
        // JSON is one document: build it whole (bounded by the row cap) so a too-large result
        // is a clean error instead of a truncated array.
        let mut out = Vec::new();
        out.extend_from_slice(&encode(encoder.begin(), &request_id)?);
        let mut rows = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| tag(e.into()))?;
            rows += batch.num_rows();
            if rows > cap {
                return Err(tag(ApiError::result_too_large(cap)));
            }
            out.extend_from_slice(&encode(encoder.batch(&batch), &request_id)?);
        }
        out.extend_from_slice(&encode(encoder.finish(), &request_id)?);
        state
            .engine
            .metrics()
            .bytes_served(Surface::Http, out.len() as u64);
        Body::from(out)
    } else {
        // Wait for the first batch so errors found early still get an honest status.
        let first = match stream.next().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return Err(tag(e.into())),
            None => None,
        };
        let head = encode(encoder.begin(), &request_id)?;
        let first = match first {
            Some(b) => encode(encoder.batch(&b), &request_id)?,
            None => Bytes::new(),
        };
        Body::from_stream(stream_body(
            state.clone(),
            head,
            first,
            stream,
            encoder,
            request_id.clone(),
        ))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", v);
    }
    Ok(response)
}

fn encode(r: Result<Bytes, arrow::error::ArrowError>, request_id: &str) -> Result<Bytes, ApiError> {
    r.map_err(|e| {
        ApiError::from(dataport_engine::EngineError::Internal {
            message: format!("encoding the result: {e}"),
        })
        .with_request_id(request_id)
    })
}

/// The rest of the result as body chunks. An error after the status line was sent can only
/// abort the body; the client sees an incomplete response, never a silently short one.
fn stream_body(
    state: AppState,
    head: Bytes,
    first: Bytes,
    stream: QueryStream,
    encoder: Box<dyn Encoder>,
    request_id: String,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct St {
        state: AppState,
        stream: QueryStream,
        encoder: Box<dyn Encoder>,
        pending: Vec<Bytes>,
        done: bool,
        request_id: String,
    }
    let st = St {
        state,
        stream,
        encoder,
        pending: vec![first, head],
        done: false,
        request_id,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(chunk) = st.pending.pop() {
                if chunk.is_empty() {
                    continue;
                }
                st.state
                    .engine
                    .metrics()
                    .bytes_served(Surface::Http, chunk.len() as u64);
                return Some((Ok(chunk), st));
            }
            if st.done {
                return None;
            }
            let next = match st.stream.next().await {
                Some(Ok(batch)) => st.encoder.batch(&batch),
                Some(Err(e)) => {
                    tracing::warn!(request_id = %st.request_id, error = %e, "query failed while streaming; aborting the response");
                    st.done = true;
                    return Some((Err(std::io::Error::other(e.to_string())), st));
                }
                None => {
                    st.done = true;
                    st.encoder.finish()
                }
            };
            match next {
                Ok(chunk) => st.pending.push(chunk),
                Err(e) => {
                    tracing::error!(request_id = %st.request_id, error = %e, "encoding failed; aborting the response");
                    st.done = true;
                    return Some((Err(std::io::Error::other(e.to_string())), st));
                }
            }
        }
    })
}
