//! The gRPC server: authentication in front, TLS optional, and the two Flight RPCs the
//! Flight SQL dispatcher leaves out (`GetSchema`, `PollFlightInfo`), answered from
//! `GetFlightInfo` so every command supports them.

use dataport_common::ErrorKind;
use std::future::Future;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{Any, Command};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use prost::Message;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::AuthInterceptor;
use crate::doget::{FlightRoutes, OutgoingStream};
use crate::error::{FlightServeError, invalid};
use crate::http2;
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

/// The Flight SQL service plus `GetSchema` and `PollFlightInfo`.
#[derive(Clone)]
pub(crate) struct Dataport(FlightSqlServer);

type Inner = FlightSqlServer;

#[tonic::async_trait]
impl FlightService for Dataport {
    type HandshakeStream = <Inner as FlightService>::HandshakeStream;
    type ListFlightsStream = <Inner as FlightService>::ListFlightsStream;
    type DoGetStream = <Inner as FlightService>::DoGetStream;
    type DoPutStream = <Inner as FlightService>::DoPutStream;
    type DoActionStream = <Inner as FlightService>::DoActionStream;
    type ListActionsStream = <Inner as FlightService>::ListActionsStream;
    type DoExchangeStream = <Inner as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.0.handshake(request).await
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(crate::error::status(
            ErrorKind::Unimplemented,
            "ListFlights is not supported: list tables with the Flight SQL GetTables command",
        ))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        check_command(&request.get_ref().cmd, "the descriptor's command")?;
        self.0.get_flight_info(request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        // Queries are planned synchronously, so the first poll is also the last.
        let info = self.get_flight_info(request).await?.into_inner();
        Ok(Response::new(PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        }))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let info = self.get_flight_info(request).await?.into_inner();
        Ok(Response::new(SchemaResult {
            schema: info.schema,
        }))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        check_command(&request.get_ref().ticket, "the ticket")?;
        self.0.do_get(request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.0.do_put(request).await
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(crate::error::status(
            ErrorKind::Unimplemented,
            "DoExchange is not supported",
        ))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.0.do_action(request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.0.list_actions(request).await
    }
}

impl Dataport {
    /// `DoGet` for [`crate::doget`]: the same checks, the messages not yet framed.
    pub(crate) async fn do_get_outgoing(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<OutgoingStream>, Status> {
        // The service decodes the ticket once, with `parse_command`'s answers.
        self.0.do_get_outgoing(request).await
    }
}

/// Malformed commands are the client's error: refuse them with `INVALID_ARGUMENT` before the
/// Flight SQL dispatcher (which would answer `INTERNAL`) sees them.
fn check_command(bytes: &[u8], what: &str) -> Result<(), Status> {
    parse_command(bytes, what).map(|_| ())
}

/// The Flight SQL command in `bytes`; a malformed one is `INVALID_ARGUMENT` naming `what`.
pub(crate) fn parse_command(bytes: &[u8], what: &str) -> Result<Command, Status> {
    let any = Any::decode(bytes).map_err(|e| {
        invalid(format!(
            "{what} is not a Flight SQL message (protobuf Any): {e}"
        ))
    })?;
    Command::try_from(any)
        .map_err(|e| invalid(format!("{what} is not a valid Flight SQL message: {e}")))
}
