//! gRPC statuses: the one place they are made, from error kinds. No other module of this crate
//! builds a `Status` (a test checks it), so every answer follows the same rules: the kind
//! chooses the code, and an internal error shows the client only a request id.

use std::path::PathBuf;

use std::fmt::Display;

use dataport_auth::AuthError;
use dataport_engine::{ErrorKind, HasKind};
use tonic::{Code, Status};

/// gRPC code for an error kind. The only place codes are chosen.
pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Conflict => Code::FailedPrecondition,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Internal => Code::Internal,
    }
}

/// A status of `kind` with `message`, for errors the client can act on. An
/// [`ErrorKind::Internal`] status is made by [`internal`] instead, whatever `message` says.
pub(crate) fn status(kind: ErrorKind, message: impl Into<String>) -> Status {
    if kind == ErrorKind::Internal {
        return internal(message.into());
    }
    Status::new(code_for(kind), message.into())
}

/// An internal error (a bug, an unreadable file, an encoding failure): the client learns only
/// that it happened and the id under which the log holds `detail`.
pub(crate) fn internal(detail: impl Display) -> Status {
    internal_with_id(&detail, &uuid::Uuid::new_v4().to_string())
}

fn internal_with_id(detail: &dyn Display, request_id: &str) -> Status {
    tracing::error!(request_id, error = %detail, "internal error");
    Status::new(
        Code::Internal,
        format!("internal error; the server log has the details (request id {request_id})"),
    )
}

/// The status of any Dataport error in the call `request_id`: its kind gives the code, its
/// message the text, followed by the request id; an internal error shows no text at all.
pub(crate) fn status_of<E: HasKind + Display + ?Sized>(e: &E, request_id: &str) -> Status {
    match e.kind() {
        ErrorKind::Internal => internal_with_id(&e, request_id),
        kind => Status::new(code_for(kind), format!("{e} (request id {request_id})")),
    }
}

/// The status of an authentication failure: its kind's code and message (no request id, so
/// a rejected caller learns nothing to correlate).
pub(crate) fn auth_status(e: &AuthError) -> Status {
    status(e.kind(), e.to_string())
}

pub(crate) fn invalid(message: impl Into<String>) -> Status {
    status(ErrorKind::InvalidArgument, message)
}

/// The trailing status of a stream that ended well.
pub(crate) fn ok() -> Status {
    Status::ok("")
}

/// Errors that stop the Flight server from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum FlightServeError {
    #[error("cannot read TLS file {}: {source}; check flight_tls_cert / flight_tls_key", path.display())]
    TlsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS file {} holds no usable {what}: {detail}; flight_tls_cert must be a PEM certificate chain, flight_tls_key its PEM private key", path.display())]
    TlsPem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error(
        "invalid TLS configuration: {0}; check that flight_tls_key is the key of flight_tls_cert"
    )]
    Tls(tokio_rustls::rustls::Error),
}

impl HasKind for FlightServeError {
    fn kind(&self) -> ErrorKind {
        match self {
            // The configuration names unusable files.
            Self::TlsFile { .. } | Self::TlsPem { .. } | Self::Tls(_) => ErrorKind::InvalidArgument,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `Status` of the crate is made here: no other source file names one.
    #[test]
    fn no_status_is_built_outside_this_module() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "error.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (i, line) in text.lines().enumerate() {
                // `CancelStatus::…` is a Flight SQL enum, not a gRPC status.
                if line.replace("CancelStatus::", "").contains("Status::") {
                    offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "build statuses in error.rs: {offenders:#?}"
        );
    }

    #[test]
    fn an_internal_error_shows_only_a_request_id() {
        let s = internal("disk /secret/path failed");
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/secret"), "{}", s.message());
        assert!(s.message().contains("request id"), "{}", s.message());
        let s = status(
            ErrorKind::Internal,
            "table file /secret/x.parquet is damaged",
        );
        assert!(!s.message().contains("/secret"), "{}", s.message());
    }

    #[test]
    fn every_kind_has_its_code() {
        for kind in ErrorKind::ALL {
            let s = status(kind, "m");
            assert_eq!(s.code(), code_for(kind));
        }
    }
}
