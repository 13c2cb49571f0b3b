//! gRPC status codes: the one place they are derived from error kinds.

use std::path::PathBuf;

use dataport_auth::AuthError;
use dataport_engine::{EngineError, ErrorKind};
use tonic::{Code, Status};

/// gRPC code for an error kind. The only place codes are chosen.
pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
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

/// A status for an engine error, carrying its message and the request id. An internal error
/// (a bug, an unreadable file) shows the client only that it happened: its text is logged
/// under the same request id.
pub(crate) fn engine_status(e: &EngineError, request_id: &str) -> Status {
    let kind = e.kind();
    if kind == ErrorKind::Internal {
        tracing::error!(request_id, error = %e, "internal error");
        return Status::new(
            code_for(kind),
            format!("internal error; the server log has the details (request id {request_id})"),
        );
    }
    Status::new(code_for(kind), format!("{e} (request id {request_id})"))
}

pub(crate) fn auth_status(e: &AuthError) -> Status {
    match e {
        AuthError::TooManyAttempts { .. } => Status::resource_exhausted(e.to_string()),
        AuthError::Internal { .. } => {
            tracing::error!(error = %e, "authentication failed internally");
            Status::internal("internal error; the server log has the details")
        }
        _ => Status::unauthenticated(e.to_string()),
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
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
