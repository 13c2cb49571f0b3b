//! Flight SQL integration tests through arrow-flight's `FlightSqlServiceClient` and the raw
//! Flight client, against a real server on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
mod metadata;
mod protocol;
mod statements;
