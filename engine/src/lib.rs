//! The Dataport query engine: owns the DataFusion runtime and runs SQL for every surface.
//!
//! Start at [`Engine`]: [`Engine::execute`] parses one statement, applies the read-only
//! [`policy`], resolves every table through the caller's view of the catalog snapshot,
//! plans with parameters, and returns a [`QueryStream`] of client-facing batches ([`wire`])
//! bounded by the query timeout and the shared memory pool. Errors carry an
//! [`ErrorKind`](dataport_catalog::ErrorKind) that each transport maps once.
//!
//! [`jobs`] runs catalog maintenance (connector syncs, catalog refreshes) on schedules and on
//! demand, recording each run in the state store.
//!
//! Tables, metadata and refresh live in `dataport-catalog`; connectors in
//! `dataport-connectors`; HTTP and Flight encoding live in
//! their own crates. This crate knows nothing of axum, tonic or command lines.

mod access;
mod cooperative;
mod engine;
mod error;
pub mod jobs;
mod metrics;
mod placeholders;
pub mod policy;
pub mod profiles;
mod statistics;
pub mod sync;
pub mod telemetry;
pub mod wire;

pub use dataport_auth::Principal;
pub use dataport_catalog::{ErrorKind, HasKind};
pub use engine::{
    Described, Engine, EngineOptions, QueryRequest, QueryStream, RequestContext, SqlFunctions,
    check_grant, check_row_filter, session_config,
};
pub use error::{EngineError, Result};
pub use metrics::{Metrics, Outcome, Surface};
