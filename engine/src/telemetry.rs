//! One tracing span per request on every transport, and the request counters of `/metrics`.
//!
//! A transport starts a [`RequestTrace`] when a request arrives (an HTTP request, a Flight
//! RPC), runs the request inside its span, and hands the trace to the response body
//! ([`TracedBody`]), which counts the bytes it sends and ends the trace when the body ends or
//! is dropped: the span then carries the request id, the user, the method, the status, the rows
//! its queries served, the bytes sent and the duration, one `request finished` event is logged
//! with them, and the request is counted in `dataport_requests_total` and
//! `dataport_request_duration_seconds`. The transports name their methods and statuses; this
//! module knows no protocol.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use tracing::field::Empty;

use crate::metrics::{Metrics, Surface};

/// What one request's queries served; shared by the request's [`crate::RequestContext`] and
/// its trace.
#[derive(Debug, Default)]
pub struct Tally {
    rows: AtomicU64,
}

impl Tally {
    pub(crate) fn add_rows(&self, rows: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Rows sent so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

/// The status of a request whose response was dropped before its end (the client went away).
pub const CANCELLED: &str = "cancelled";

/// One request's span and counters, ended once.
#[derive(Debug)]
pub struct RequestTrace {
    metrics: Arc<Metrics>,
    span: tracing::Span,
    surface: Surface,
    method: String,
    started: Instant,
    tally: Arc<Tally>,
    bytes: u64,
    status: Option<String>,
    ended: bool,
}

impl RequestTrace {
    /// Opens the span of request `request_id`: `method` names what was asked with few
    /// distinct values (an HTTP route, a Flight RPC), as it becomes a metric label.
    pub fn start(
        metrics: Arc<Metrics>,
        surface: Surface,
        method: impl Into<String>,
        request_id: &str,
    ) -> Self {
        let method = method.into();
        let span = tracing::info_span!(
            "request",
            surface = surface.as_str(),
            request_id,
            method = %method,
            user = Empty,
            status = Empty,
            rows = Empty,
            bytes = Empty,
            duration_ms = Empty,
        );
        Self {
            metrics,
            span,
            surface,
            method,
            started: Instant::now(),
            tally: Arc::default(),
            bytes: 0,
            status: None,
            ended: false,
        }
    }

    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The tally the request's [`crate::RequestContext`] adds its rows to.
    pub fn tally(&self) -> Arc<Tally> {
        Arc::clone(&self.tally)
    }

    /// The status the request ends with, unless a later one replaces it.
    pub fn set_status(&mut self, status: impl Into<String>) {
        self.status = Some(status.into());
    }

    fn sent(&mut self, bytes: u64) {
        self.bytes += bytes;
    }

    /// Records the outcome on the span, logs it and counts it; later calls do nothing.
    pub fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        let elapsed = self.started.elapsed();
        let status = self.status.as_deref().unwrap_or(CANCELLED);
        let rows = self.tally.rows();
        self.span.record("status", status);
        self.span.record("rows", rows);
        self.span.record("bytes", self.bytes);
        self.span
            .record("duration_ms", elapsed.as_secs_f64() * 1000.0);
        tracing::info!(parent: &self.span, "request finished");
        self.metrics
            .request_finished(self.surface, &self.method, status, elapsed);
    }
}

impl Drop for RequestTrace {
    fn drop(&mut self) {
        self.end();
    }
}

/// Reads a status from a response's trailers (gRPC sends its status there).
pub type TrailerStatus = fn(&http::HeaderMap) -> Option<String>;

/// A response body that counts what it sends and ends its request's trace with it.
pub struct TracedBody<B: Body> {
    inner: B,
    trace: RequestTrace,
    trailer_status: Option<TrailerStatus>,
}

impl<B: Body> TracedBody<B> {
    pub fn new(inner: B, trace: RequestTrace, trailer_status: Option<TrailerStatus>) -> Self {
        Self {
            inner,
            trace,
            trailer_status,
        }
    }
}

impl<B: Body + Unpin> Body for TracedBody<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.trace.sent(data.remaining() as u64);
                }
                if let (Some(trailers), Some(read)) = (frame.trailers_ref(), this.trailer_status)
                    && let Some(status) = read(trailers)
                {
                    this.trace.set_status(status);
                }
                if this.inner.is_end_stream() {
                    this.trace.end();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.trace.set_status("error");
                this.trace.end();
            }
            Poll::Ready(None) => this.trace.end(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for TracedBody<B> {
    fn drop(&mut self) {
        if !self.trace.ended && !self.inner.is_end_stream() {
            // The body went before its end: the client went away.
            self.trace.status = Some(CANCELLED.to_string());
        }
        self.trace.end();
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    type Frames =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    fn body(frames: Vec<Frame<Bytes>>) -> Frames {
        StreamBody::new(futures::stream::iter(
            frames.into_iter().map(Ok).collect::<Vec<_>>(),
        ))
    }

    fn trailer_status(h: &http::HeaderMap) -> Option<String> {
        h.get("status")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_counts_its_bytes_rows_and_status() {
        let metrics = Arc::new(Metrics::default());
        let mut trace = RequestTrace::start(Arc::clone(&metrics), Surface::Flight, "DoGet", "r1");
        trace.tally().add_rows(7);
        trace.set_status("OK");
        let mut trailers = http::HeaderMap::new();
        trailers.insert("status", http::HeaderValue::from_static("NOT_FOUND"));
        let frames = vec![
            Frame::data(Bytes::from_static(b"abc")),
            Frame::data(Bytes::from_static(b"de")),
            Frame::trailers(trailers),
        ];
        let traced = TracedBody::new(body(frames), trace, Some(trailer_status));
        let collected = traced.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abcde");
        // the trailers' status replaced the headers' one
        assert_eq!(metrics.requests(Surface::Flight, "DoGet", "NOT_FOUND"), 1);
        assert_eq!(metrics.requests(Surface::Flight, "DoGet", "OK"), 0);
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(
            text.contains(
                "dataport_requests_total{surface=\"flight\",method=\"DoGet\",status=\"NOT_FOUND\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("dataport_request_duration_seconds_count{surface=\"flight\"} 1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_is_a_cancelled_request_counted_once() {
        let metrics = Arc::new(Metrics::default());
        let mut trace = RequestTrace::start(Arc::clone(&metrics), Surface::Http, "POST /q", "r2");
        trace.set_status("200");
        let frames = vec![
            Frame::data(Bytes::from_static(b"first")),
            Frame::data(Bytes::from_static(b"second")),
        ];
        let mut traced = TracedBody::new(body(frames), trace, None);
        let first = traced.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap(), &Bytes::from_static(b"first"));
        drop(traced);
        assert_eq!(metrics.requests(Surface::Http, "POST /q", CANCELLED), 1);
        assert_eq!(metrics.requests(Surface::Http, "POST /q", "200"), 0);
    }

    #[test]
    fn an_empty_body_never_polled_ends_with_its_status() {
        let metrics = Arc::new(Metrics::default());
        let mut trace = RequestTrace::start(Arc::clone(&metrics), Surface::Http, "GET /x", "r3");
        trace.set_status("404");
        drop(TracedBody::new(
            http_body_util::Empty::<Bytes>::new(),
            trace,
            None,
        ));
        assert_eq!(metrics.requests(Surface::Http, "GET /x", "404"), 1);
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.request_finished(
            Surface::Http,
            "GET /a\"b\\c",
            "200",
            std::time::Duration::ZERO,
        );
        let mut text = String::new();
        metrics.render(&mut text);
        assert!(text.contains(r#"method="GET /a\"b\\c""#), "{text}");
    }
}
