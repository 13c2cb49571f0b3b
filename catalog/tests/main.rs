//! Integration tests of the catalog: layouts, metadata and refresh, on real Parquet files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
mod layout;
mod memory;
mod metadata;
mod metrics;
mod profile;
mod refresh;
