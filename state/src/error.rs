//! Errors of the state store.

use dataport_common::{ErrorKind, HasKind};
use std::path::PathBuf;

pub type Result<T, E = StateError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "cannot open the state database {path}: {source}; check the data dir's permissions and free space"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "state database {path} has schema version {found}, newer than this binary knows ({known}); run a newer dataport"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("user '{0}' does not exist")]
    NoSuchUser(String),
    #[error("user '{0}' already exists")]
    UserExists(String),
    #[error("the email {0} already belongs to an account")]
    EmailTaken(String),
    #[error(
        "'{account}' is the last active member of {group}; make another account an active member first"
    )]
    LastMember { account: String, group: String },
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl HasKind for StateError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchUser(_) => ErrorKind::NotFound,
            Self::UserExists(_) | Self::EmailTaken(_) => ErrorKind::AlreadyExists,
            Self::LastMember { .. } => ErrorKind::Conflict,
            // The server's own database failing under it: nothing a client can change.
            Self::Open { .. } | Self::TooNew { .. } | Self::Io { .. } | Self::Sqlite(_) => {
                ErrorKind::Internal
            }
        }
    }
}
