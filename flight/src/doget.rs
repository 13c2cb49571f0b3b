//! `DoGet` answered on the HTTP/2 stream directly, so result bodies reach the socket without
//! being copied again.
//!
//! tonic's protobuf codec encodes every outgoing message into a fresh buffer: for a `FlightData`
//! that is a copy of its whole Arrow IPC body (megabytes per message) plus a new allocation,
//! made on the server's busiest path. [`FlightRoutes`] sits in front of the generated Flight
//! service, takes `DoGet` calls and lets every other call through. A `DoGet` is still
//! authenticated by the same interceptor and answered by the same service method; only the
//! framing differs. Each message goes out as two HTTP/2 data chunks: the gRPC frame header
//! with the protobuf encoding of everything but the body (a few hundred bytes), then the body
//! itself as the `Bytes` the IPC encoder produced. The bytes on the wire are exactly those
//! of prost's encoding (`data_body` has the highest field number, so it is encoded last).
//!
//! The body stays one chunk, one copy of the batch's buffers: hyper sends every chunk as its
//! own HTTP/2 DATA frame, and a body sent as the batch's own buffers (no copy at all, but
//! frames of a column buffer each) measured slower for server and client together than one
//! large frame per message.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{FlightData, Ticket};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::Stream;
use futures::future::BoxFuture;
use http::HeaderValue;
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};
use tower::Service;

use crate::auth::AuthInterceptor;
use crate::server::Dataport;

/// The gRPC path of `DoGet`.
const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";

/// Field number of `FlightData.data_body`: the last field, so it can follow the others.
const DATA_BODY_FIELD: u32 = 1000;

/// Length of a gRPC message prefix: compression flag and big-endian length.
const GRPC_PREFIX: usize = 5;

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

    async fn do_get(self, request: http::Request<Body>) -> http::Response<Body> {
        match self.start(request).await {
            Ok(response) => response,
            // a status before the first message is a trailers-only response, as tonic sends
            Err(status) => {
                let mut response = http::Response::new(Body::empty());
                *response.headers_mut() = status_headers(&status);
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                response
            }
        }
    }

    async fn start(mut self, request: http::Request<Body>) -> Result<http::Response<Body>, Status> {
        let (parts, body) = request.into_parts();
        if let Some(encoding) = parts.headers.get("grpc-encoding")
            && encoding != "identity"
        {
            return Err(Status::unimplemented(format!(
                "request compression {encoding:?} is not supported: send the ticket uncompressed"
            )));
        }
        let call = self
            .interceptor
            .call(Request::from_http(http::Request::from_parts(parts, ())))?;
        let ticket = read_ticket(body, self.max_decoding).await?;
        let (metadata, extensions, ()) = call.into_parts();
        let response = self
            .service
            .do_get(Request::from_parts(metadata, extensions, ticket))
            .await?;
        let (metadata, stream, _) = response.into_parts();
        let mut headers = metadata.into_headers();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let mut answer = http::Response::new(Body::new(FramedBody {
            messages: stream,
            max_message: self.max_encoding,
            body: None,
            ended: false,
        }));
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

impl NamedService for FlightRoutes {
    const NAME: &'static str = <FlightServiceServer<Dataport> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for FlightRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Generated as Service<http::Request<Body>>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() == DO_GET {
            let routes = self.clone();
            return Box::pin(async move { Ok(routes.do_get(request).await) });
        }
        let call = self.generated.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(Body::new))
        })
    }
}

/// The single `Ticket` message of a `DoGet` request body.
async fn read_ticket(body: Body, limit: usize) -> Result<Ticket, Status> {
    let mut bytes = Limited::new(body, limit + GRPC_PREFIX)
        .collect()
        .await
        .map_err(|e| {
            Status::resource_exhausted(format!(
                "reading the DoGet request failed (tickets are limited to {limit} bytes): {e}"
            ))
        })?
        .to_bytes();
    if bytes.len() < GRPC_PREFIX {
        return Err(Status::invalid_argument(
            "the DoGet request holds no ticket message",
        ));
    }
    if bytes.get_u8() != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not supported: send the ticket uncompressed",
        ));
    }
    let declared = bytes.get_u32() as usize;
    if declared != bytes.len() {
        return Err(Status::invalid_argument(format!(
            "the DoGet request must hold exactly one ticket message: {declared} bytes were declared, {} sent",
            bytes.len()
        )));
    }
    Ticket::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("the DoGet ticket is not a Ticket: {e}")))
}

/// gRPC prefix plus the protobuf encoding of `data` up to its body, and the body itself:
/// concatenated, they are the framed message prost and tonic would send.
fn frame(mut data: FlightData, max_message: usize) -> Result<(Bytes, Bytes), Status> {
    let body = std::mem::take(&mut data.data_body);
    let body_len = body.len();
    let mut body_key = BytesMut::new();
    if body_len > 0 {
        encode_key(DATA_BODY_FIELD, WireType::LengthDelimited, &mut body_key);
        encode_varint(body_len as u64, &mut body_key);
    }
    let head = data.encoded_len();
    let length = head + body_key.len() + body_len;
    let declared = u32::try_from(length)
        .ok()
        .filter(|_| length <= max_message)
        .ok_or_else(|| {
            Status::resource_exhausted(format!(
                "a result message of {length} bytes exceeds the limit of {max_message} bytes"
            ))
        })?;
    let mut prefix = BytesMut::with_capacity(GRPC_PREFIX + head + body_key.len());
    prefix.put_u8(0);
    prefix.put_u32(declared);
    data.encode(&mut prefix)
        .map_err(|e| Status::internal(format!("encoding a result message: {e}")))?;
    prefix.put_slice(&body_key);
    Ok((prefix.freeze(), body))
}

/// The response body: each message as its prefix and its body, then the status trailers.
struct FramedBody<S> {
    messages: S,
    max_message: usize,
    /// The body of the message whose prefix went out last.
    body: Option<Bytes>,
    ended: bool,
}

impl<S> FramedBody<S> {
    fn trailers(&mut self, status: &Status) -> Frame<Bytes> {
        self.ended = true;
        Frame::trailers(status_headers(status))
    }
}

/// `grpc-status` and the rest of `status` as headers (or trailers).
fn status_headers(status: &Status) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Err(unencodable) = status.add_header(&mut headers) {
        // only a status whose metadata cannot be sent as headers gets here
        tracing::warn!(error = %unencodable, "a DoGet status could not be encoded");
        headers = http::HeaderMap::new();
        headers.insert(
            "grpc-status",
            HeaderValue::from(tonic::Code::Internal as i32),
        );
    }
    headers
}

impl<S> http_body::Body for FramedBody<S>
where
    S: Stream<Item = Result<FlightData, Status>> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(body) = this.body.take() {
            return Poll::Ready(Some(Ok(Frame::data(body))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = match futures::ready!(Pin::new(&mut this.messages).poll_next(cx)) {
            Some(Ok(data)) => match frame(data, this.max_message) {
                Ok((prefix, body)) => {
                    this.body = (!body.is_empty()).then_some(body);
                    Frame::data(prefix)
                }
                Err(status) => this.trailers(&status),
            },
            Some(Err(status)) => this.trailers(&status),
            None => this.trailers(&Status::ok("")),
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.body.is_none()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use arrow_flight::FlightDescriptor;

    fn framed(data: FlightData) -> Vec<u8> {
        let (prefix, body) = frame(data, usize::MAX >> 1).unwrap();
        [prefix.as_ref(), body.as_ref()].concat()
    }

    fn prost_framed(data: &FlightData) -> Vec<u8> {
        let encoded = data.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&encoded);
        out
    }

    #[test]
    fn frames_equal_prost_encoding() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let cases = [
            FlightData::default(),
            FlightData {
                data_header: Bytes::from_static(b"header"),
                ..FlightData::default()
            },
            FlightData {
                data_header: Bytes::from_static(b"header"),
                data_body: Bytes::from(body.clone()),
                ..FlightData::default()
            },
            FlightData {
                flight_descriptor: Some(FlightDescriptor::new_cmd(b"cmd".to_vec())),
                data_header: Bytes::from_static(b"h"),
                app_metadata: Bytes::from_static(b"meta"),
                data_body: Bytes::from_static(b"x"),
            },
        ];
        for data in cases {
            assert_eq!(framed(data.clone()), prost_framed(&data));
        }
    }

    #[test]
    fn a_body_is_sent_without_copying() {
        let body = Bytes::from(vec![7u8; 1 << 20]);
        let data = FlightData {
            data_header: Bytes::from_static(b"header"),
            data_body: body.clone(),
            ..FlightData::default()
        };
        let (_, sent) = frame(data, usize::MAX >> 1).unwrap();
        assert_eq!(sent.as_ptr(), body.as_ptr());
    }

    #[test]
    fn an_oversized_message_is_refused() {
        let data = FlightData {
            data_body: Bytes::from(vec![0u8; 1000]),
            ..FlightData::default()
        };
        let err = frame(data, 999).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }
}
