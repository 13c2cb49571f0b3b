//! The Dataport catalog: every Parquet table under the data dir, with its metadata, as
//! immutable snapshots that are swapped atomically on refresh.
//!
//! Start at [`Catalog`]: [`Catalog::open`] scans `<data-dir>/parquet/<schema>/<table>.parquet`
//! (or `<table>/` folders, with hive `key=value/` partitions), reads `data_description.md`
//! ([`description`]) and the business [`metrics`] defined beside it, and builds a [`CatalogSnapshot`]; [`Catalog::refresh`] re-reads only what
//! changed; [`spawn_refresher`] keeps it fresh from file events and a timer. The snapshot is
//! exposed to DataFusion through [`SnapshotCatalogProvider`], whose tables scan exactly the
//! files of their snapshot.
//!
//! This crate knows nothing of SQL policy, principals, HTTP or Flight: those live in
//! `dataport-engine` and the protocol crates. The one atomic file writer of the project lives
//! in [`write`], for connectors and the demo generator.

mod catalog;
pub mod description;
mod error;
pub mod memory;
pub mod metrics;
pub mod names;
mod pin;
pub mod profile;
mod provider;
mod scan;
mod snapshot;
mod table;
mod watch;
pub mod write;

pub use catalog::{Catalog, CatalogOptions, RefreshReport, RefreshStatus};
pub use error::{CatalogError, ErrorKind, HasKind, Result};
pub use memory::{MemoryOptions, ResidentReport};
pub use provider::{
    CATALOG_NAME, SEARCH_PATH_SCHEMA, SnapshotCatalogProvider, TableAccess, TableFilter,
};
pub use snapshot::{
    CatalogIssue, CatalogSnapshot, CatalogTable, ResolvedForeignKey, SnapshotFile, TableRef,
};
pub use table::ParquetTable;
pub use watch::spawn_refresher;
