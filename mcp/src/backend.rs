//! [`Backend`]: where the tools get their answers — the server's engine (in `dataport-web`)
//! or the laptop's pulled files (in `dataport mcp`'s offline mode).

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::model::{KnowledgeHit, MetricCall, MetricInfo, QueryCall, QueryResult, TableInfo};

/// The server's SQL, as the tools describe it.
pub const SERVER_DIALECT: &str = "Apache DataFusion SQL (PostgreSQL-like); tables are schema.table";

/// Why a backend could not answer. The message is shown to the model: it says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The caller's input was wrong (bad SQL, an unknown column, a refused statement): the
    /// model should fix it and try again.
    #[error("{message}")]
    Input { message: String },
    /// A table, metric or item the caller cannot see (or that does not exist: the same
    /// answer, so nothing leaks).
    #[error("{message}")]
    NotFound { message: String },
    /// Over a limit (time, memory); the message says which and how to stay under it.
    #[error("{message}")]
    Limit { message: String },
    /// This backend cannot do it (offline, or a feature that is off).
    #[error("{message}")]
    Unavailable { message: String },
    /// The server failed; retrying later may help.
    #[error("{message}")]
    Internal { message: String },
    /// The client cancelled the call.
    #[error("cancelled")]
    Cancelled,
}

impl ToolError {
    pub fn input(message: impl Into<String>) -> Self {
        Self::Input {
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound {
            message: message.into(),
        }
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal {
            message: message.into(),
        }
    }
    pub fn limit(message: impl Into<String>) -> Self {
        Self::Limit {
            message: message.into(),
        }
    }

    /// `error`, `not_found`, … for metrics and the audit log.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Input { .. } => "error",
            Self::NotFound { .. } => "not_found",
            Self::Limit { .. } => "limit",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal { .. } => "internal",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The answers behind the tools, for one caller: everything is already filtered by what the
/// caller may read, so a tool cannot leak what the backend does not return.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Every table the caller may read, with columns, keys and profile figures.
    async fn tables(&self) -> Result<Vec<TableInfo>, ToolError>;

    /// The business metrics the caller may run.
    async fn metrics(&self) -> Result<Vec<MetricInfo>, ToolError>;

    /// The stored profile of `table` (`schema.table`, as [`Backend::tables`] names it), as
    /// JSON in the profile API's shape; the tools trim it for a model's context.
    async fn profile(&self, table: &str) -> Result<Value, ToolError>;

    /// Runs `call` read-only, keeping its first rows and counting the rest. Cancelling
    /// `cancel` stops the query.
    async fn run_query(
        &self,
        call: QueryCall,
        cancel: CancellationToken,
    ) -> Result<QueryResult, ToolError>;

    /// The plan of `sql`, as text (not run).
    async fn explain_query(
        &self,
        sql: &str,
        cancel: CancellationToken,
    ) -> Result<String, ToolError>;

    /// Runs a business metric, keeping at most `max_bytes` of cell text.
    async fn run_metric(
        &self,
        call: MetricCall,
        max_rows: usize,
        max_bytes: usize,
        cancel: CancellationToken,
    ) -> Result<QueryResult, ToolError>;

    /// Corporate-memory items matching `query`, best first.
    async fn search_knowledge(
        &self,
        query: &str,
        category: Option<&str>,
        limit: usize,
    ) -> Result<Vec<KnowledgeHit>, ToolError>;

    /// Said at the top of every answer when set: where the answers come from when that is not
    /// the live server (the offline fallback).
    fn notice(&self) -> Option<String> {
        None
    }

    /// How the SQL of `run_query` is read (shown in the tool's description and prompts).
    fn dialect(&self) -> &'static str {
        SERVER_DIALECT
    }
}
