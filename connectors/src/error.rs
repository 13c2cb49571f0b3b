//! Errors of connectors and of the table writer. Each says which table and what to do.

use std::path::{Path, PathBuf};

use dataport_catalog::write::WriteError;
use dataport_common::{ErrorKind, HasKind};

pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A source's configuration is wrong; the message names the key.
    #[error("source '{source_name}': {message}")]
    Config {
        source_name: String,
        message: String,
    },

    /// The remote system answered with an error that retrying did not fix.
    #[error("{url}: HTTP {status}: {message}")]
    Http {
        url: String,
        status: u16,
        message: String,
    },

    /// The remote system could not be reached (after retries).
    #[error("{url}: {message}; check the source's url and the network")]
    Unreachable { url: String, message: String },

    /// The remote system answered something that does not follow its API.
    #[error("{url}: unexpected answer: {message}")]
    Protocol { url: String, message: String },

    /// An export job of the source failed or took too long.
    #[error("table {table}: {message}")]
    Job { table: String, message: String },

    /// A value does not fit its column's type.
    #[error("table {table}: row {row}, column '{column}': {reason}")]
    BadValue {
        table: String,
        row: u64,
        column: String,
        reason: String,
    },

    /// The table's columns changed in a way the stored data cannot follow.
    #[error(
        "table {table}: {change}; the stored table was left unchanged — rebuild it with a full sync (`dataport sync SOURCE TABLE --full`) if the change is intended"
    )]
    SchemaDrift { table: String, change: String },

    /// The table's description does not allow this sync.
    #[error("table {table}: {message}")]
    Table { table: String, message: String },

    /// Reading or decoding received data failed.
    #[error("table {table}: cannot read {what}: {message}")]
    Decode {
        table: String,
        what: String,
        message: String,
    },

    /// Writing the table's files failed; the old table is intact.
    #[error(transparent)]
    Write(#[from] WriteError),

    /// Merging with the stored data failed.
    #[error("table {table}: merge failed: {source}")]
    Merge {
        table: String,
        source: datafusion::error::DataFusionError,
    },

    /// Local I/O failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Another sync of the same table is running.
    #[error("table {table} is being synced by another process or job; try again when it ends")]
    Busy { table: String },

    /// The state store failed.
    #[error(transparent)]
    State(#[from] dataport_state::StateError),

    /// The sync was cancelled (server shutdown).
    #[error("cancelled")]
    Cancelled,
}

impl HasKind for ConnectorError {
    fn kind(&self) -> ErrorKind {
        match self {
            // The configuration or the description asks for something impossible.
            Self::Config { .. } | Self::Table { .. } => ErrorKind::InvalidArgument,
            // The source failed or sent what cannot be used: retry, or fix the source.
            Self::Http { .. } | Self::Unreachable { .. } => ErrorKind::Unavailable,
            Self::Protocol { .. }
            | Self::Job { .. }
            | Self::BadValue { .. }
            | Self::Decode { .. }
            | Self::SchemaDrift { .. } => ErrorKind::InvalidArgument,
            Self::Busy { .. } => ErrorKind::AlreadyExists,
            Self::Cancelled => ErrorKind::Cancelled,
            Self::Write(e) => e.kind(),
            Self::State(e) => e.kind(),
            Self::Merge { .. } | Self::Io { .. } => ErrorKind::Internal,
        }
    }
}

impl ConnectorError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// The file at `path` of `table` cannot be read or decoded, because of `message`.
    pub(crate) fn decode(table: &str, path: &Path, message: impl std::fmt::Display) -> Self {
        Self::Decode {
            table: table.to_string(),
            what: path.display().to_string(),
            message: message.to_string(),
        }
    }
}
