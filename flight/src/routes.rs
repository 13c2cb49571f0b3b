//! Which call goes where: [`FlightRoutes`] takes `DoGet` and frames its results without copies
//! ([`crate::doget`]), and hands every other call to the generated Flight service over
//! [`Dataport`]: the Flight SQL service plus the two RPCs its dispatcher leaves out
//! (`GetSchema`, `PollFlightInfo`), answered from `GetFlightInfo`.

use std::convert::Infallible;
use std::task::{Context, Poll};

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaResult, Ticket,
};
use bytes::Buf;
use dataport_common::ErrorKind;
use dataport_engine::Surface;
use dataport_engine::telemetry::{RequestTrace, TracedBody};
use futures::future::BoxFuture;
use http::HeaderValue;
use http_body_util::{BodyExt, Limited};
use prost::Message;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};
use tower::Service;
use tracing::Instrument;

use crate::auth::AuthInterceptor;
use crate::doget::{FramedBody, GRPC_PREFIX, OutgoingStream, ResponseBody, status_headers};
use crate::service::FlightSqlServer;

/// The gRPC path of `DoGet`.
const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";

type Generated = InterceptedService<FlightServiceServer<Dataport>, AuthInterceptor>;

/// The Flight service with `DoGet` framed without copies; see the module docs.
#[derive(Clone)]
pub(crate) struct FlightRoutes {
    generated: Generated,
    service: Dataport,
    interceptor: AuthInterceptor,
    max_decoding: usize,
    max_encoding: usize,
}

impl FlightRoutes {
    pub(crate) fn new(
        service: Dataport,
        interceptor: AuthInterceptor,
        max_decoding: usize,
        max_encoding: usize,
    ) -> Self {
        let generated = FlightServiceServer::new(service.clone())
            .max_decoding_message_size(max_decoding)
            .max_encoding_message_size(max_encoding);
        Self {
            generated: InterceptedService::new(generated, interceptor.clone()),
            service,
            interceptor,
            max_decoding,
            max_encoding,
        }
    }

    async fn do_get(self, request: http::Request<Body>) -> http::Response<ResponseBody> {
        match self.start(request).await {
            Ok(response) => response,
            // a status before the first message is a trailers-only response, as tonic sends
            Err(status) => {
                let mut response = http::Response::new(ResponseBody::Generated(Body::empty()));
                *response.headers_mut() = status_headers(&status);
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                response
            }
        }
    }

    async fn start(
        mut self,
        request: http::Request<Body>,
    ) -> Result<http::Response<ResponseBody>, Status> {
        let (parts, body) = request.into_parts();
        if let Some(encoding) = parts.headers.get("grpc-encoding")
            && encoding != "identity"
        {
            return Err(crate::error::status(
                ErrorKind::Unimplemented,
                format!(
                    "request compression {encoding:?} is not supported: send the ticket uncompressed"
                ),
            ));
        }
        let call = self
            .interceptor
            .call(Request::from_http(http::Request::from_parts(parts, ())))?;
        let ticket = read_ticket(body, self.max_decoding).await?;
        let (metadata, extensions, ()) = call.into_parts();
        let response = self
            .service
            .do_get_outgoing(Request::from_parts(metadata, extensions, ticket))
            .await?;
        let (metadata, stream, _) = response.into_parts();
        let mut headers = metadata.into_headers();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let mut answer = http::Response::new(ResponseBody::DoGet(FramedBody::new(
            stream,
            self.max_encoding,
        )));
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

impl NamedService for FlightRoutes {
    const NAME: &'static str = <FlightServiceServer<Dataport> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for FlightRoutes {
    type Response = http::Response<TracedBody<ResponseBody>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Generated as Service<http::Request<Body>>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let mut trace = start_trace(self.service.0.engine(), &mut request);
        let span = trace.span().clone();
        let future: BoxFuture<'static, http::Response<ResponseBody>> = if request.uri().path()
            == DO_GET
        {
            let routes = self.clone();
            Box::pin(async move { routes.do_get(request).await })
        } else {
            // The interceptor runs in `call`: it names the user on the span.
            let call = span.in_scope(|| self.generated.call(request));
            Box::pin(async move {
                match call.await {
                    Ok(response) => response.map(|body| ResponseBody::Generated(Body::new(body))),
                    Err(never) => match never {},
                }
            })
        };
        Box::pin(
            async move {
                let response = future.await;
                // A status before the first message comes in the headers (trailers-only).
                if let Some(status) = grpc_status(response.headers()) {
                    trace.set_status(status);
                }
                Ok(response.map(|body| TracedBody::new(body, trace, Some(grpc_status))))
            }
            .instrument(span),
        )
    }
}

/// The trace of one RPC: its request id (the client's `x-request-id`, else a new one, set on
/// the request for the interceptor and the error messages) and its method.
fn start_trace(
    engine: &dataport_engine::Engine,
    request: &mut http::Request<Body>,
) -> RequestTrace {
    let given = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned);
    let id = given.unwrap_or_else(|| {
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(value) = HeaderValue::from_str(&id) {
            request.headers_mut().insert("x-request-id", value);
        }
        id
    });
    // Only the service's own RPCs are labels; any other path is one value.
    let method = request
        .uri()
        .path()
        .strip_prefix(concat!("/", "arrow.flight.protocol.FlightService", "/"))
        .filter(|m| RPCS.contains(m))
        .unwrap_or("unknown")
        .to_string();
    let trace = RequestTrace::start(engine.shared_metrics(), Surface::Flight, method, &id);
    request.extensions_mut().insert(trace.tally());
    trace
}

/// The RPCs of the Flight service.
const RPCS: &[&str] = &[
    "Handshake",
    "ListFlights",
    "GetFlightInfo",
    "PollFlightInfo",
    "GetSchema",
    "DoGet",
    "DoPut",
    "DoExchange",
    "DoAction",
    "ListActions",
];

/// The gRPC status in `headers` (or trailers), by its canonical name (`NOT_FOUND`).
fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let name = format!("{:?}", tonic::Code::from_i32(code));
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    Some(out)
}

/// The single `Ticket` message of a `DoGet` request body.
async fn read_ticket(body: Body, limit: usize) -> Result<Ticket, Status> {
    let mut bytes = Limited::new(body, limit + GRPC_PREFIX)
        .collect()
        .await
        .map_err(|e| {
            crate::error::status(
                ErrorKind::ResourceExhausted,
                format!(
                    "reading the DoGet request failed (tickets are limited to {limit} bytes): {e}"
                ),
            )
        })?
        .to_bytes();
    if bytes.len() < GRPC_PREFIX {
        return Err(crate::error::status(
            ErrorKind::InvalidArgument,
            "the DoGet request holds no ticket message",
        ));
    }
    if bytes.get_u8() != 0 {
        return Err(crate::error::status(
            ErrorKind::Unimplemented,
            "compressed requests are not supported: send the ticket uncompressed",
        ));
    }
    let declared = bytes.get_u32() as usize;
    if declared != bytes.len() {
        return Err(crate::error::status(
            ErrorKind::InvalidArgument,
            format!(
                "the DoGet request must hold exactly one ticket message: {declared} bytes were declared, {} sent",
                bytes.len()
            ),
        ));
    }
    Ticket::decode(bytes).map_err(|e| {
        crate::error::status(
            ErrorKind::InvalidArgument,
            format!("the DoGet ticket is not a Ticket: {e}"),
        )
    })
}

/// The Flight SQL service plus `GetSchema` and `PollFlightInfo`.
#[derive(Clone)]
pub(crate) struct Dataport(pub(crate) FlightSqlServer);

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
    crate::command::parse_command(bytes, what).map(|_| ())
}
