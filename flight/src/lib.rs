//! The Arrow Flight SQL surface of Dataport, for ADBC, JDBC and BI tools.
//!
//! [`serve`] runs an HTTP/2 server (hyper, with tonic's generated service) whose every call is
//! authenticated by [`dataport_auth`] (HTTP Basic, padded or not, answered with a bearer token
//! at the handshake) and answered by [`FlightSqlServer`]: statements and prepared statements
//! run through the same [`Engine`](dataport_engine::Engine) as every other surface; metadata (catalogs, schemas,
//! tables, keys, SQL info, XDBC types) is derived from the caller's view of the catalog, so a
//! table the caller cannot read is never listed. Results are streamed with backpressure and
//! split so no gRPC message exceeds [`FlightOptions::max_message_bytes`]; their buffers reach
//! the socket without being copied.
//!
//! This crate owns the wire protocol only: tickets, protobuf messages, gRPC status codes
//! ([`error::code_for`] is the one mapping), TLS. It must not know SQL policy, grants or how
//! tables are stored; those are the engine's and the catalog's.

mod auth;
mod command;
mod doget;
pub mod error;
mod http2;
mod ipc;
mod metadata;
mod rope;
mod routes;
mod server;
mod service;
mod sql_info;
mod state;
mod ticket;

use std::path::PathBuf;
use std::time::Duration;

pub use error::FlightServeError;
pub use server::serve;
pub use service::FlightSqlServer;

/// How the Flight SQL endpoint behaves.
#[derive(Debug, Clone)]
pub struct FlightOptions {
    /// Largest gRPC message the server sends: result batches are split to stay under it.
    /// ADBC's default receive limit is 16 MiB; keep well below that.
    pub max_message_bytes: usize,
    /// Serve TLS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// How long a prepared statement lives without being used.
    pub prepared_statement_idle: Duration,
}

impl Default for FlightOptions {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 << 20,
            tls: None,
            prepared_statement_idle: Duration::from_secs(3600),
        }
    }
}

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}
