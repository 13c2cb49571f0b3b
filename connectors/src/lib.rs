//! Dataport's connectors: how data arrives. Each connector turns a source into typed Parquet
//! tables under the data dir, as a catalog maintenance job.
//!
//! Connectors: [`keboola`] (pull from the Keboola Storage API), [`files`] (a drop folder
//! of CSV, JSON lines and Parquet files) and [`jira`] (push: signed webhooks from Jira Cloud,
//! kept right by polling its REST API).
//!
//! It owns the connector model ([`Connector`], the compiled-in registry [`build`] selected by
//! `sources[].type`, and [`sync_source`], which syncs table by table, records each table's
//! sync state in the state store and goes on when one fails), the conversion of received text
//! to typed Arrow ([`typed`]), and the one writer of connector output ([`sink`]): staged rows
//! replace or merge into a table (newest row per primary key, by a DataFusion query), written
//! with the catalog's atomic file writer and commit journal, so readers see a whole old or a
//! whole new table and a crash leaves no torn or stray file registered.
//!
//! This crate knows nothing of SQL policy, principals, HTTP serving or Flight: the server
//! schedules its jobs and the protocol crates never call it.

mod connector;
mod error;
pub mod files;
mod http;
pub mod jira;
pub mod keboola;
mod registry;
pub mod sink;
pub mod typed;

pub use connector::{
    Connector, LogProgress, Progress, SourceReport, SourceTable, SyncContext, SyncRequest,
    TableReport, TableSync, sweep_staging, sync_source,
};
pub use error::{ConnectorError, Result};
pub use registry::{CONNECTOR_TYPES, Source, SourceConfig, SourceKind, build};
