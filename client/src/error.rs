//! What can go wrong on the analyst's side, each with what to do about it.

use std::path::PathBuf;

use dataport_common::FsError;
use dataport_common::{ErrorKind, HasKind};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "not logged in (no credentials at {path}): run `dataport login --server URL --user NAME` first"
    )]
    NotLoggedIn { path: PathBuf },

    #[error("cannot use the credentials at {path}: {message}; run `dataport login` again")]
    Credentials { path: PathBuf, message: String },

    #[error(
        "cannot find a config dir for the credentials: set DATAPORT_HOME (or HOME) to a folder"
    )]
    NoConfigDir,

    #[error("'{url}' is not a server URL: give it as http://host:port or https://host")]
    BadServerUrl { url: String },

    #[error("cannot reach {url}: {source}; check the server URL and that the server is running")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("the server did not accept the credentials ({message}); run `dataport login` again")]
    Unauthorized { message: String },

    #[error("the server refused {what}: HTTP {status}: {message}")]
    Server {
        what: String,
        status: u16,
        message: String,
    },

    #[error(
        "the server sent an unusable manifest: {message}; is it a Dataport server of this version?"
    )]
    BadManifest { message: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Write(#[from] FsError),

    #[error(
        "{path} arrived damaged (SHA-256 {actual}, the manifest says {expected}); run the pull again"
    )]
    Checksum {
        path: String,
        expected: String,
        actual: String,
    },

    #[error(
        "{path} changed on the server during the pull; run the pull again to get the new version"
    )]
    Changed { path: String },

    #[error(
        "{count} of {total} files could not be downloaded (finished files are kept and partial ones resume on the next pull); first: {first}"
    )]
    Downloads {
        count: usize,
        total: usize,
        first: String,
    },

    #[error("{message}")]
    Input { message: String },

    #[error(
        "the sign-in through the browser did not finish: {message}; run `dataport login` again"
    )]
    BrowserSignIn { message: String },
}

impl HasKind for ClientError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotLoggedIn { .. }
            | Self::Credentials { .. }
            | Self::Unauthorized { .. }
            | Self::BrowserSignIn { .. } => ErrorKind::Unauthenticated,
            Self::NoConfigDir | Self::BadServerUrl { .. } | Self::Input { .. } => {
                ErrorKind::InvalidArgument
            }
            // The server's answer, by its status.
            Self::Server { status, .. } => match status {
                400 | 406 | 413 => ErrorKind::InvalidArgument,
                403 => ErrorKind::PermissionDenied,
                404 => ErrorKind::NotFound,
                409 => ErrorKind::AlreadyExists,
                429 => ErrorKind::ResourceExhausted,
                504 => ErrorKind::DeadlineExceeded,
                s if *s >= 500 => ErrorKind::Unavailable,
                _ => ErrorKind::InvalidArgument,
            },
            // The network, or a server that changed under the pull: run it again.
            Self::Http { .. }
            | Self::Checksum { .. }
            | Self::Changed { .. }
            | Self::Downloads { .. } => ErrorKind::Unavailable,
            Self::BadManifest { .. } | Self::Io { .. } => ErrorKind::Internal,
            Self::Write(e) => e.kind(),
        }
    }
}

impl ClientError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
