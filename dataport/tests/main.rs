//! End-to-end tests of the `dataport` binary that need Rust-side doubles (the Python suite
//! in `tests/e2e` covers the rest through real clients).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../connectors/tests/keboola_double.rs"]
mod keboola_double;
mod sync;
