//! Errors of the catalog, and the [`ErrorKind`] every Dataport transport maps from.

use std::path::PathBuf;

use datafusion::error::DataFusionError;

pub use dataport_common::{ErrorKind, HasKind};

/// Result of catalog operations.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// What went wrong while building or reading the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A file or directory of the data dir could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The configured data directory is unusable.
    #[error("data directory {path} is not usable: {reason}")]
    DataDir { path: PathBuf, reason: String },
    /// A `data_description.md` file is invalid; the message names the table when it can.
    #[error("{0}")]
    Description(#[from] crate::description::DescriptionError),
    /// A table's Parquet files could not be read (bad footer, incompatible schemas).
    #[error("table {table}: cannot read its Parquet files: {source}")]
    TableFiles {
        table: String,
        #[source]
        source: DataFusionError,
    },
    /// A file of a table is not a readable Parquet file.
    #[error("table {table}: {} is not a usable Parquet file: {detail}", path.display())]
    BadFile {
        table: String,
        path: PathBuf,
        detail: String,
    },
    /// The folder layout of a table is inconsistent (mixed partition keys, …).
    #[error("table {table}: {detail}")]
    Layout { table: String, detail: String },
    /// No such table in the catalog.
    #[error("table '{table}' not found")]
    TableNotFound { table: String },
    /// An unqualified name matched tables in several schemas.
    #[error(
        "table name '{name}' is ambiguous: it exists as {candidates}; qualify it with its schema"
    )]
    AmbiguousTable { name: String, candidates: String },
    /// The catalog is read-only through SQL.
    #[error("the Dataport catalog is read-only: {action} is not allowed")]
    ReadOnly { action: String },
    /// A bug.
    #[error("internal catalog error: {0}")]
    Internal(String),
}

impl HasKind for CatalogError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Io { .. } => ErrorKind::Unavailable,
            Self::DataDir { .. } => ErrorKind::Unavailable,
            Self::Description(_) => ErrorKind::InvalidArgument,
            Self::TableFiles { .. } => ErrorKind::Internal,
            Self::BadFile { .. } => ErrorKind::Internal,
            Self::Layout { .. } => ErrorKind::InvalidArgument,
            Self::TableNotFound { .. } => ErrorKind::NotFound,
            Self::AmbiguousTable { .. } => ErrorKind::InvalidArgument,
            Self::ReadOnly { .. } => ErrorKind::PermissionDenied,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }
}
