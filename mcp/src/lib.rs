//! The Model Context Protocol for Dataport: JSON-RPC messages, MCP's methods (initialize,
//! tools, resources, prompts), the tools an assistant uses on the catalog, profiles, SQL,
//! metrics and corporate memory, and the text they answer with (compact result tables,
//! Markdown descriptions, trimmed profiles).
//!
//! It owns what an assistant sees, not where answers come from: a [`Backend`] supplies them,
//! already filtered to what the caller may read — the server's engine (`dataport-web`, which
//! also owns the Streamable HTTP transport, sessions, limits and the audit) or the laptop's
//! pulled files (`dataport mcp`, over stdio). It must not know DataFusion, Arrow, HTTP
//! serving, grants or the state store; so the laptop's small binary can carry it.

pub mod backend;
pub mod jsonrpc;
pub mod model;
pub mod profile;
pub mod render;
pub mod search;
pub mod server;
pub mod tools;

pub use backend::{Backend, ToolError};
pub use jsonrpc::{Incoming, RpcError};
pub use model::{
    CatalogDocument, ColumnInfo, ForeignKeyInfo, KnowledgeHit, MetricCall, MetricInfo,
    ProfileBrief, QueryCall, QueryResult, ResultColumn, TableInfo,
};
pub use server::{McpServer, ServerInfo};
pub use tools::{CallInfo, Limits};
