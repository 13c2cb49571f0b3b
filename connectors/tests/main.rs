//! Integration tests of the connectors: the Keboola connector against an in-process double of
//! the Storage API, and the sink's replace/merge/partition behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod evolution;
mod files;
mod keboola;
mod keboola_double;
