//! The HTTP error body and the one place HTTP statuses are chosen.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dataport_auth::AuthError;
use dataport_common::HasKind;
use dataport_engine::{EngineError, ErrorKind};
use serde::Serialize;

/// An error answered to an HTTP client as `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    request_id: Option<String>,
    /// `WWW-Authenticate` for 401s, `Retry-After` for rate limits.
    challenge: bool,
    retry_after: Option<u64>,
}

/// HTTP status for an error kind. The only place statuses are derived from kinds.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // nginx's "client closed request"; the client rarely sees it.
        ErrorKind::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            request_id: None,
            challenge: status == StatusCode::UNAUTHORIZED,
            retry_after: None,
        }
    }

    /// An error of a given kind. An internal one shows the client no text: `message` goes
    /// to the log.
    pub fn of_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        if kind == ErrorKind::Internal {
            return Self::internal(message.into());
        }
        Self::new(status_for(kind), kind.code(), message)
    }

    /// The one way a Dataport error becomes an HTTP answer: its kind chooses the status and
    /// code, its message is the text, except that an internal error's text goes to the log
    /// (in the request's span, under its request id) and the client gets a generic message.
    pub fn of<E: HasKind + std::fmt::Display + ?Sized>(e: &E, request_id: &str) -> Self {
        Self::of_error(e).with_request_id(request_id)
    }

    fn of_error<E: HasKind + std::fmt::Display + ?Sized>(e: &E) -> Self {
        match e.kind() {
            ErrorKind::Internal => Self::internal(e),
            kind => Self::of_kind(kind, e.to_string()),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::of_kind(ErrorKind::InvalidArgument, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::of_kind(ErrorKind::PermissionDenied, message)
    }

    /// A bug or an unavailable dependency; the details go to the log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        let kind = ErrorKind::Internal;
        Self::new(
            status_for(kind),
            kind.code(),
            "internal error; the server log has the details",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, "not_acceptable", message)
    }

    pub fn result_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "result_too_large",
            format!(
                "the result has more than {limit} rows, the limit for JSON; add a LIMIT or ask for a streaming format (?format=ndjson, csv, arrow or parquet)"
            ),
        )
    }

    pub fn route_not_found(path: &str) -> Self {
        Self::of_kind(ErrorKind::NotFound, format!("no API route at {path}"))
    }

    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = Some(id.to_string());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What the client is told.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        Self::of_error(&e)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            // The one answer with more than its kind: when to try again.
            AuthError::TooManyAttempts { retry_after_secs } => {
                let mut err = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    e.to_string(),
                );
                err.retry_after = Some(retry_after_secs);
                err
            }
            e => Self::of_error(&e),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                request_id: self.request_id.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dataport\""),
            );
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
