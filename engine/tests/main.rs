//! Integration tests of the engine: policy, resolution, parameters, limits, snapshots.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod access;
mod common;
mod execution;
mod policy;
