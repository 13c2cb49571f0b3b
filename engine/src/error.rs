//! Engine errors and the one place DataFusion errors are classified.

use std::time::Duration;

use datafusion::error::DataFusionError;
use dataport_catalog::{CatalogError, ErrorKind, HasKind};

/// Result of engine operations.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// What went wrong running a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The SQL is not valid, or cannot be planned (unknown column, wrong types, …).
    #[error("{message}")]
    InvalidQuery { message: String },
    /// The statement is not allowed by the read-only policy.
    #[error("{message}")]
    Refused { message: String },
    /// A catalog lookup failed (unknown or ambiguous table, read-only catalog).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A query parameter is missing, extra or of an unusable type.
    #[error("invalid query parameters: {message}")]
    InvalidParameters { message: String },
    /// The query ran longer than the configured timeout and was stopped.
    #[error("query exceeded the time limit of {}s and was stopped; add filters or a LIMIT, or ask for a longer timeout", after.as_secs_f64())]
    Timeout { after: Duration },
    /// Memory or disk limits were hit even with spilling.
    #[error("query needs more resources than the server allows: {message}")]
    ResourcesExhausted { message: String },
    /// The query failed while running on valid input (overflow, bad cast, division by zero).
    #[error("query failed: {message}")]
    Execution { message: String },
    /// Configuration of the engine is invalid.
    #[error("invalid engine configuration: {message}")]
    Config { message: String },
    /// A bug or an unreadable data file.
    #[error("internal error: {message}")]
    Internal { message: String },
    /// No business metric of this name that the caller may see.
    #[error("metric '{name}' not found; GET /api/v1/metrics lists the metrics you can use")]
    MetricNotFound { name: String },
    /// A request a business metric cannot answer (a dimension it lacks, an empty range).
    #[error(transparent)]
    Metric(#[from] dataport_catalog::metrics::MetricQueryError),
}

impl HasKind for EngineError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidQuery { .. } => ErrorKind::InvalidArgument,
            Self::Refused { .. } => ErrorKind::PermissionDenied,
            Self::Catalog(e) => e.kind(),
            Self::InvalidParameters { .. } => ErrorKind::InvalidArgument,
            Self::Timeout { .. } => ErrorKind::DeadlineExceeded,
            Self::ResourcesExhausted { .. } => ErrorKind::ResourceExhausted,
            Self::Execution { .. } => ErrorKind::InvalidArgument,
            Self::Config { .. } => ErrorKind::InvalidArgument,
            Self::Internal { .. } => ErrorKind::Internal,
            Self::MetricNotFound { .. } => ErrorKind::NotFound,
            Self::Metric(e) => e.kind(),
        }
    }
}

impl EngineError {
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        Self::Refused {
            message: message.into(),
        }
    }
}

impl From<DataFusionError> for EngineError {
    /// Classify by the root cause. No wildcard arm: a new DataFusion variant must be placed.
    fn from(err: DataFusionError) -> Self {
        let root = err.find_root();
        let message = clean_message(root);
        match root {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => Self::InvalidQuery { message },
            DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => {
                Self::Execution { message }
            }
            DataFusionError::ResourcesExhausted(_) => Self::ResourcesExhausted { message },
            DataFusionError::External(inner) => match inner.downcast_ref::<CatalogError>() {
                Some(CatalogError::TableNotFound { table }) => {
                    Self::Catalog(CatalogError::TableNotFound {
                        table: table.clone(),
                    })
                }
                Some(CatalogError::AmbiguousTable { name, candidates }) => {
                    Self::Catalog(CatalogError::AmbiguousTable {
                        name: name.clone(),
                        candidates: candidates.clone(),
                    })
                }
                Some(CatalogError::ReadOnly { action }) => Self::Refused {
                    message: format!("the Dataport catalog is read-only: {action} is not allowed"),
                },
                Some(_) | None => Self::Internal { message },
            },
            DataFusionError::ParquetError(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::IoError(_)
            | DataFusionError::ExecutionJoin(_)
            | DataFusionError::Internal(_)
            | DataFusionError::Substrait(_)
            | DataFusionError::Ffi(_)
            | DataFusionError::Context(..)
            | DataFusionError::Diagnostic(..)
            | DataFusionError::Collection(_)
            | DataFusionError::Shared(_) => Self::Internal { message },
        }
    }
}

/// What DataFusion writes around the sentence a user needs, and what it becomes: its variant
/// prefixes (also inside nested messages, "…, errors: Error during planning: …") and the
/// request to report a bug that ends an internal error.
const DATAFUSION_NOISE: [(&str, &str); 10] = [
    (
        ".\nThis issue was likely caused by a bug in DataFusion's code. Please help us to \
         resolve this by filing a bug report in our issue tracker: \
         https://github.com/apache/datafusion/issues",
        "",
    ),
    ("Internal error: ", ""),
    ("Error during planning: ", ""),
    ("Execution error: ", ""),
    ("Arrow error: ", ""),
    ("Schema error: ", ""),
    ("SQL error: ", ""),
    ("This feature is not implemented: ", "not supported: "),
    ("Invalid or Unsupported Configuration: ", ""),
    ("Resources exhausted: ", ""),
];

/// DataFusion prefixes messages with its variant ("Error during planning: …"); callers want
/// the sentence, and must never see the virtual search-path schema.
fn clean_message(err: &DataFusionError) -> String {
    let text = match err {
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::NotImplemented(m)
        | DataFusionError::Configuration(m)
        | DataFusionError::ResourcesExhausted(m) => m.clone(),
        DataFusionError::SQL(e, _) => e.to_string(),
        DataFusionError::SchemaError(e, _) => e.to_string(),
        DataFusionError::ArrowError(e, _) => e.to_string(),
        other => other.to_string(),
    };
    let text = DATAFUSION_NOISE
        .iter()
        .fold(text, |text, (noise, instead)| text.replace(noise, instead));
    text.replace(
        &format!(
            "{}.{}.",
            dataport_catalog::CATALOG_NAME,
            dataport_catalog::SEARCH_PATH_SCHEMA
        ),
        "",
    )
    .replace(&format!("{}.", dataport_catalog::SEARCH_PATH_SCHEMA), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datafusion_noise_is_removed_from_messages() {
        let nested = DataFusionError::Plan(
            "Internal error: Function 'round' failed to match any signature, errors: Error \
             during planning: Function 'round' expects 2 arguments but received 3.\nThis issue \
             was likely caused by a bug in DataFusion's code. Please help us to resolve this by \
             filing a bug report in our issue tracker: https://github.com/apache/datafusion/issues"
                .into(),
        );
        let e = EngineError::from(nested);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            e.to_string(),
            "Function 'round' failed to match any signature, errors: Function 'round' expects \
             2 arguments but received 3"
        );
        let unsupported = EngineError::from(DataFusionError::NotImplemented(
            "This feature is not implemented: Unsupported SQL type Foo".into(),
        ));
        assert_eq!(
            unsupported.to_string(),
            "not supported: Unsupported SQL type Foo"
        );
    }
}
