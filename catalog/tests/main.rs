//! Integration tests of the catalog: layouts, metadata and refresh, on real Parquet files.

mod common;
mod layout;
mod metadata;
mod refresh;
