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
///
/// ```
/// use arrow::array::AsArray;
/// use arrow::datatypes::Int64Type;
/// use arrow_flight::sql::client::FlightSqlServiceClient;
/// use dataport_flight::{FlightOptions, FlightSqlServer, serve};
/// use futures::TryStreamExt as _;
/// use tonic::transport::Channel;
/// # use std::sync::Arc;
/// # use dataport_auth::{Accounts, Authenticator, DATAREAD, StateStore};
/// # use dataport_engine::{Engine, EngineOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let data = tempfile::tempdir()?;
/// # dataport_testkit::write_table(&data.path().join("parquet/sales/orders.parquet"), &[1, 2, 3]);
/// # let mut catalog = dataport_catalog::CatalogOptions::new(data.path());
/// # catalog.watch = false;
/// # let engine = Engine::try_new(EngineOptions::new(data.path()), catalog).await?;
/// # let store = Arc::new(StateStore::open(data.path())?);
/// # Accounts::new(Arc::clone(&store)).add_user("ana", "Correct-Horse-7", &[DATAREAD.into()])?;
/// # let auth = Authenticator::new(store, Default::default())?;
/// // `engine` serves a data dir with `sales.orders` (3 rows); `auth` knows the user `ana`.
/// let server = FlightSqlServer::try_new(engine, auth, FlightOptions::default())?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let address = listener.local_addr()?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let running = tokio::spawn(serve(listener, server, async { stopped.await.unwrap_or(()) })?);
///
/// // What an ADBC or JDBC driver does: handshake with the password, then run SQL.
/// let channel = Channel::from_shared(format!("http://{address}"))?.connect().await?;
/// let mut client = FlightSqlServiceClient::new(channel);
/// client.handshake("ana", "Correct-Horse-7").await?;
/// let info = client.execute("SELECT count(*) FROM sales.orders".into(), None).await?;
/// let ticket = info.endpoint[0].ticket.clone().ok_or("an endpoint has a ticket")?;
/// let batches: Vec<_> = client.do_get(ticket).await?.try_collect().await?;
/// assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 3);
///
/// stop.send(()).ok();
/// running.await?; // the server has shut down
/// # Ok(())
/// # }
/// ```
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
