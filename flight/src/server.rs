//! The gRPC server: authentication in front, TLS optional, and the two Flight RPCs the
//! Flight SQL dispatcher leaves out (`GetSchema`, `PollFlightInfo`), answered from
//! `GetFlightInfo` so every command supports them.

use std::future::Future;

use tokio::net::TcpListener;

use crate::auth::AuthInterceptor;
use crate::error::FlightServeError;
use crate::http2;
use crate::routes::{Dataport, FlightRoutes};
use crate::service::FlightSqlServer;

/// Largest message a client may send (bound parameters, commands).
const MAX_DECODING_BYTES: usize = 16 << 20;

/// Set up Flight SQL on `listener` (TLS files are read and checked now) and return the
/// future that serves it until `shutdown` resolves; running calls may then finish.
pub fn serve(
    listener: TcpListener,
    server: FlightSqlServer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = ()> + Send, FlightServeError> {
    let options = server.options().clone();
    let tls = options.tls.as_ref().map(http2::tls_acceptor).transpose()?;
    let interceptor = AuthInterceptor::new(server.authenticator().clone());
    let routes = FlightRoutes::new(
        Dataport(server),
        interceptor,
        MAX_DECODING_BYTES,
        // Batches are already split below max_message_bytes; this is the hard stop.
        options.max_message_bytes.max(MAX_DECODING_BYTES),
    );
    Ok(http2::serve(listener, routes, tls, shutdown))
}
