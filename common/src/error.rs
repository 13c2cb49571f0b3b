//! The error vocabulary of Dataport and the HTTP API's error body.
//!
//! Every error enum of every crate answers [`HasKind::kind`]; each transport turns a kind into
//! its own status in exactly one place (`web`'s `status_for`, `flight`'s `status_for`).

use serde::{Deserialize, Serialize};

/// Who is at fault and what the caller can do, independent of any transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is wrong (bad SQL, bad parameter, unsupported statement); rephrase it.
    InvalidArgument,
    /// The named object does not exist (or the caller may not know it exists).
    NotFound,
    /// The object already exists.
    AlreadyExists,
    /// The request conflicts with the current state (it would remove the last administrator);
    /// change that state first.
    Conflict,
    /// No valid credentials.
    Unauthenticated,
    /// Valid credentials, but the action is refused (read-only policy, missing grant).
    PermissionDenied,
    /// A limit was hit (memory, rate, result size); retry later or ask for less.
    ResourceExhausted,
    /// The server does not implement this.
    Unimplemented,
    /// The server cannot serve this now (shutting down, data dir unreadable); retry later.
    Unavailable,
    /// The request ran out of time.
    DeadlineExceeded,
    /// The caller went away or asked to stop.
    Cancelled,
    /// A bug in Dataport or a failure of its own storage: the client learns nothing more, the
    /// log has the detail.
    Internal,
}

impl ErrorKind {
    /// Every kind, for exhaustive tests of the transports' mappings.
    pub const ALL: [ErrorKind; 12] = [
        Self::InvalidArgument,
        Self::NotFound,
        Self::AlreadyExists,
        Self::Conflict,
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::Unimplemented,
        Self::Unavailable,
        Self::DeadlineExceeded,
        Self::Cancelled,
        Self::Internal,
    ];

    /// Stable snake_case code used in API error bodies.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::Conflict => "conflict",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Unimplemented => "unimplemented",
            Self::Unavailable => "unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Cancelled => "cancelled",
            Self::Internal => "internal",
        }
    }
}

/// An error that knows its [`ErrorKind`]. Implementations match every variant (no `_ =>`), so
/// a new variant must be classified where it is declared.
pub trait HasKind {
    fn kind(&self) -> ErrorKind;
}

/// The HTTP API's error answer: `{"error": {"code", "message", "request_id"}}`.
///
/// ```
/// use dataport_common::ErrorBody;
///
/// let body: ErrorBody = serde_json::from_str(
///     r#"{"error": {"code": "not_found", "message": "table 'x' not found"}}"#,
/// )?;
/// assert_eq!(body.error.message, "table 'x' not found");
/// assert_eq!(body.error.request_id, None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// An [`ErrorKind::code`], or a narrower code of one endpoint (`payload_too_large`, …).
    pub code: String,
    /// What went wrong and what to do; never internal detail.
    pub message: String,
    /// The id under which the server logged the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                request_id: None,
            },
        }
    }

    pub fn with_request_id(mut self, id: Option<String>) -> Self {
        self.error.request_id = id;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_serde_names() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", kind.code()));
        }
    }
}
