//! HTTP API tests against the real router on a random port.

mod api;
mod common;
