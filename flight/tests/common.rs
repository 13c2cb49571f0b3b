use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use dataport_auth::{Accounts, AuthOptions, Authenticator, StateStore};
use dataport_catalog::CatalogOptions;
use dataport_engine::{Engine, EngineOptions};
use dataport_flight::{FlightOptions, FlightSqlServer};
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub(crate) use dataport_testkit::{pretty, rows, tpch_dir};

pub(crate) const PASSWORD: &str = "Test-Password-12";

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) async fn start(options: FlightOptions) -> TestServer {
    start_with(options, |_| {}).await
}

/// A query that runs for minutes but yields often, so cancellation is prompt.
pub(crate) const SLOW: &str = "select count(*) from generate_series(1, 1000000000000) as t";

pub(crate) async fn start_with(
    options: FlightOptions,
    tweak: impl FnOnce(&mut EngineOptions),
) -> TestServer {
    let dir = tpch_dir();
    let mut engine_options = EngineOptions::new(dir);
    engine_options.target_partitions = 2;
    engine_options.spill_dir = tempfile::tempdir().unwrap().keep();
    tweak(&mut engine_options);
    let mut catalog = CatalogOptions::new(dir);
    catalog.watch = false;
    catalog.refresh_interval = Duration::ZERO;
    let engine = Engine::try_new(engine_options, catalog).await.unwrap();
    let state_dir = tempfile::tempdir().unwrap().keep();
    let store = Arc::new(StateStore::open(&state_dir).unwrap());
    Accounts::new(Arc::clone(&store))
        .add_user("admin", PASSWORD, &[dataport_auth::DATA_OPS.to_string()])
        .unwrap();
    let auth = Authenticator::new(store, AuthOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = FlightSqlServer::try_new(engine, auth, options).unwrap();
    let stop = CancellationToken::new();
    let serve = dataport_flight::serve(listener, server, stop.clone().cancelled_owned()).unwrap();
    tokio::spawn(serve);
    TestServer { addr, stop }
}

pub(crate) async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A client logged in as admin (handshake with Basic, then Bearer).
pub(crate) async fn client(addr: SocketAddr) -> FlightSqlServiceClient<Channel> {
    let mut c = FlightSqlServiceClient::new(channel(addr).await);
    c.handshake("admin", PASSWORD).await.unwrap();
    assert!(
        c.token().is_some(),
        "the handshake must answer a bearer token"
    );
    c
}

/// All batches of all endpoints of `info`.
pub(crate) async fn fetch(
    c: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("endpoint without ticket");
        let batches: Vec<RecordBatch> =
            c.do_get(ticket).await.unwrap().try_collect().await.unwrap();
        out.extend(batches);
    }
    out
}

pub(crate) async fn query(c: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = c.execute(sql.to_string(), None).await.unwrap();
    fetch(c, info).await
}

/// The gRPC status inside a client error.
pub(crate) fn code_of(e: &(dyn std::error::Error + 'static)) -> tonic::Code {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(status) = err.downcast_ref::<tonic::Status>() {
            return status.code();
        }
        if let Some(arrow_flight::error::FlightError::Tonic(status)) =
            err.downcast_ref::<arrow_flight::error::FlightError>()
        {
            return status.code();
        }
        source = err.source();
    }
    panic!("no gRPC status in error: {e:?}");
}
