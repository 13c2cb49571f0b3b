//! The analyst's end of Dataport: `dataport login`, `pull` and `push` on a laptop.
//!
//! It owns the local side of analyst sync: the stored credentials (a token in the user's config
//! dir, owner-only), the pull that mirrors the caller's manifest into a folder (only changed
//! files, by SHA-256, several at a time, resumable, verified, written atomically, with files no
//! longer listed removed) and keeps the caller's corporate-memory rule files in its `rules/`,
//! the DuckDB views over the pulled files, the upload of notes, transcripts and notification
//! scripts, the calls behind `dataport notify`, and `dataport mcp` ([`serve_mcp_stdio`]): the
//! server's MCP tools over stdio for a local assistant, answered from the pulled files when the
//! server cannot be reached. It speaks only the public HTTP API
//! (`/api/v1/auth/*`, `/api/v1/sync/*`, `/api/v1/notify/*`, `/mcp`) and must not know the server's
//! internals: the catalog, grants and restricted copies are the server's business; what reaches
//! this crate is exactly what the caller may have.

mod api;
mod browser;
mod credentials;
mod error;
mod mcp;
mod notify;
mod pull;
mod push;
mod views;

pub use api::{
    Api, Manifest, ManifestColumn, ManifestFile, ManifestTable, Me, RuleFile, RuleFiles, Session,
    Uploaded,
};
pub use browser::BrowserSignIn;
pub use credentials::{Credentials, credentials_path};
pub use error::ClientError;
pub use mcp::{McpOptions, RETRY_EVERY, serve as serve_mcp, serve_stdio as serve_mcp_stdio};
pub use notify::{ScriptsPushed, push_scripts, script_files};
pub use pull::{PullOptions, PullProgress, PullReport, pull};
pub use push::{PushOptions, PushReport, Sent, push};
pub use views::{DuckDb, INSTALL_DUCKDB, ViewsOutcome, views_sql};
