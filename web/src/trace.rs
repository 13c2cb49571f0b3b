//! One trace per HTTP request: the span every handler runs in, ended when the response body
//! ends ([`dataport_engine::telemetry`]). Its method is the matched route, so the request
//! counters of `/metrics` have one series per route and status.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use dataport_engine::Surface;
use dataport_engine::telemetry::{RequestTrace, TracedBody};
use tracing::Instrument;

use crate::{AppState, REQUEST_ID};

/// Middleware: runs the request in its span and hands the trace to the response body.
pub(crate) async fn trace_request(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    // A path no route matched is not a label: it could be anything a client sends.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let method = format!("{} {route}", request.method());
    let mut trace = RequestTrace::start(state.engine.shared_metrics(), Surface::Http, method, &id);
    request.extensions_mut().insert(trace.tally());
    let span = trace.span().clone();
    let response = next.run(request).instrument(span).await;
    trace.set_status(response.status().as_str());
    response.map(|body| axum::body::Body::new(TracedBody::new(body, trace, None)))
}

/// Names the authenticated user on the request's span.
pub(crate) fn record_user(name: &str) {
    tracing::Span::current().record("user", name);
}
