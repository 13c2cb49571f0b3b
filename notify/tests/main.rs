//! The notify crate's integration tests: real processes under the sandbox's limits.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod sandbox;
