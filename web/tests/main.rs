//! HTTP API tests against the real router on a random port.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod api;
mod common;
mod sync;
