//! `DoGet` answered on the HTTP/2 stream directly: result buffers reach the socket without
//! being copied.
//!
//! Two copies stood between a result batch and the socket. arrow-ipc's encoder copies every
//! buffer of a batch into one new body, and tonic's protobuf codec copies that body again into
//! a fresh buffer per message: megabytes per message, on the server's busiest path.
//! `routes::FlightRoutes` sits in front of the generated Flight service, takes `DoGet` calls and
//! lets every other call through. A `DoGet` is still authenticated by the same interceptor and
//! answered by the same service; only the encoding and the framing, which live here, differ:
//!
//! - a result batch of flat columns is encoded by [`ipc`], whose message body is the batch's
//!   own buffers; other results, and the metadata commands, go through arrow-flight's encoder;
//! - each message goes out as one [`Rope`]: the gRPC frame header with the protobuf encoding of
//!   everything but the body (a few hundred bytes), then the body's pieces. The bytes on the
//!   wire are exactly prost's encoding (`data_body` has the highest field number, so it is
//!   encoded last). [`crate::http2`] serves these bodies, so one message is one chunk that h2
//!   cuts into frames of the size the client accepts.

use dataport_common::ErrorKind;
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow_flight::FlightData;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use http::HeaderValue;
use http_body::{Frame, SizeHint};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::Status;
use tonic::body::Body;

use crate::ipc;
use crate::rope::Rope;

/// Field number of `FlightData.data_body`: the last field, so it can follow the others.
const DATA_BODY_FIELD: u32 = 1000;

/// Length of a gRPC message prefix: compression flag and big-endian length.
pub(crate) const GRPC_PREFIX: usize = 5;

/// One `FlightData` as it goes out: its fields but the body, and the body in pieces that
/// share memory with the result (see [`ipc`]).
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// Everything but `data_body`, which stays empty.
    pub(crate) data: FlightData,
    pub(crate) body: Vec<Bytes>,
}

impl From<FlightData> for Outgoing {
    fn from(mut data: FlightData) -> Self {
        let body = std::mem::take(&mut data.data_body);
        Self {
            data,
            body: vec![body],
        }
    }
}

impl From<Outgoing> for FlightData {
    /// The message as one `FlightData`; joins (copies) a body of more than one piece.
    fn from(outgoing: Outgoing) -> Self {
        let Outgoing { mut data, body } = outgoing;
        data.data_body = match <[Bytes; 1]>::try_from(body) {
            Ok([one]) => one,
            Err(pieces) => pieces.concat().into(),
        };
        data
    }
}

/// Messages of a `DoGet` response.
pub(crate) type OutgoingStream = Pin<Box<dyn Stream<Item = Result<Outgoing, Status>> + Send>>;

/// A query result as Flight messages of at most about `target` bytes each: the schema, then
/// the batches (with their dictionaries), encoded by [`ipc::ResultEncoder`]: without copies
/// where [`ipc::supports`] the schema.
pub(crate) fn encode_results<S>(schema: SchemaRef, batches: S, target: usize) -> OutgoingStream
where
    S: Stream<Item = Result<RecordBatch, Status>> + Send + 'static,
{
    let (mut encoder, schema_message) = ipc::ResultEncoder::for_schema(&schema);
    let messages = batches
        .map(move |batch| batch.and_then(|batch| encode_batch(&batch, target, &mut encoder)))
        .map_ok(|messages| futures::stream::iter(messages.into_iter().map(Ok)))
        .try_flatten();
    Box::pin(
        futures::stream::once(async move { Ok(Outgoing::from(schema_message)) }).chain(messages),
    )
}

impl From<ipc::Message> for Outgoing {
    fn from(message: ipc::Message) -> Self {
        Self {
            data: FlightData {
                data_header: message.header,
                ..FlightData::default()
            },
            body: message.body,
        }
    }
}

/// `batch` as record-batch messages, split by rows so each body is about `target` bytes.
fn encode_batch(
    batch: &RecordBatch,
    target: usize,
    encoder: &mut ipc::ResultEncoder,
) -> Result<Vec<Outgoing>, Status> {
    // A result that cannot be encoded is the server's fault; the client learns only that.
    let encoding_error = |e: ArrowError| {
        tracing::error!(error = %e, "cannot encode a result batch for Flight");
        crate::error::internal("internal error encoding the result; the server log has the details")
    };
    let rows = batch.num_rows();
    let size = ipc::body_size(batch).map_err(encoding_error)?;
    let pieces = size.div_ceil(target.max(1)).max(1);
    let per_piece = rows.div_ceil(pieces).max(1);
    let mut messages = Vec::with_capacity(pieces);
    let mut offset = 0;
    loop {
        let len = per_piece.min(rows - offset);
        let encoded = encoder
            .encode(&batch.slice(offset, len))
            .map_err(encoding_error)?;
        messages.extend(encoded.into_iter().map(Outgoing::from));
        offset += len;
        if offset >= rows {
            return Ok(messages);
        }
    }
}

/// The framed message prost and tonic would send, as one rope: the gRPC prefix and the
/// protobuf encoding of the message up to its body, then the body's pieces.
fn frame(outgoing: Outgoing, max_message: usize) -> Result<Rope, Status> {
    let Outgoing { data, body } = outgoing;
    let body_len: usize = body.iter().map(Bytes::len).sum();
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
            crate::error::status(
                ErrorKind::ResourceExhausted,
                format!(
                    "a result message of {length} bytes exceeds the limit of {max_message} bytes"
                ),
            )
        })?;
    let mut prefix = BytesMut::with_capacity(GRPC_PREFIX + head + body_key.len());
    prefix.put_u8(0);
    prefix.put_u32(declared);
    data.encode(&mut prefix)
        .map_err(|e| crate::error::internal(format!("encoding a result message: {e}")))?;
    prefix.put_slice(&body_key);
    let mut rope = Rope::with_capacity(1 + body.len());
    rope.push(prefix.freeze());
    for piece in body {
        rope.push(piece);
    }
    Ok(rope)
}

/// A Flight response body: a `DoGet`'s messages, or what the generated service answers.
pub(crate) enum ResponseBody {
    Generated(Body),
    DoGet(FramedBody<OutgoingStream>),
}

impl http_body::Body for ResponseBody {
    type Data = Rope;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Rope>, Status>>> {
        match self.get_mut() {
            Self::Generated(body) => Pin::new(body)
                .poll_frame(cx)
                .map_ok(|frame| frame.map_data(Rope::from)),
            Self::DoGet(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Generated(body) => body.is_end_stream(),
            Self::DoGet(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Generated(body) => body.size_hint(),
            Self::DoGet(body) => body.size_hint(),
        }
    }
}

/// The body of a `DoGet`: each message as one rope, then the status trailers.
pub(crate) struct FramedBody<S> {
    messages: S,
    max_message: usize,
    ended: bool,
}

impl<S> FramedBody<S> {
    /// The body of a `DoGet` answer: `messages` framed, none over `max_message` bytes.
    pub(crate) fn new(messages: S, max_message: usize) -> Self {
        Self {
            messages,
            max_message,
            ended: false,
        }
    }

    fn trailers(&mut self, status: &Status) -> Frame<Rope> {
        self.ended = true;
        Frame::trailers(status_headers(status))
    }
}

/// `grpc-status` and the rest of `status` as headers (or trailers).
pub(crate) fn status_headers(status: &Status) -> http::HeaderMap {
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
    S: Stream<Item = Result<Outgoing, Status>> + Unpin,
{
    type Data = Rope;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Rope>, Status>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let frame = match futures::ready!(Pin::new(&mut this.messages).poll_next(cx)) {
            Some(Ok(outgoing)) => match frame(outgoing, this.max_message) {
                Ok(rope) => Frame::data(rope),
                Err(status) => this.trailers(&status),
            },
            Some(Err(status)) => this.trailers(&status),
            None => this.trailers(&crate::error::ok()),
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow_flight::FlightDescriptor;

    use super::*;
    use bytes::Buf as _;

    fn framed(data: FlightData) -> Vec<u8> {
        let mut rope = frame(Outgoing::from(data), usize::MAX >> 1).unwrap();
        rope.copy_to_bytes(rope.remaining()).to_vec()
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
        let pieces = [
            Bytes::from(vec![7u8; 1 << 20]),
            Bytes::from(vec![8u8; 1 << 19]),
        ];
        let outgoing = Outgoing {
            data: FlightData {
                data_header: Bytes::from_static(b"header"),
                ..FlightData::default()
            },
            body: pieces.to_vec(),
        };
        let rope = frame(outgoing, usize::MAX >> 1).unwrap();
        let mut slots = [std::io::IoSlice::new(&[]); 4];
        assert_eq!(rope.chunks_vectored(&mut slots), 3);
        assert_eq!(slots[1].as_ptr(), pieces[0].as_ptr());
        assert_eq!(slots[2].as_ptr(), pieces[1].as_ptr());
    }

    #[test]
    fn an_oversized_message_is_refused() {
        let data = FlightData {
            data_body: Bytes::from(vec![0u8; 1000]),
            ..FlightData::default()
        };
        let err = frame(Outgoing::from(data), 999).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    }

    /// `batches` through [`encode_results`] and back through arrow-flight's decoder: the
    /// number of messages and the batches decoded.
    async fn round_trip(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        target: usize,
    ) -> (usize, Vec<RecordBatch>) {
        let stream = encode_results(
            schema,
            futures::stream::iter(batches.into_iter().map(Ok)),
            target,
        );
        let messages: Vec<FlightData> =
            stream.map_ok(FlightData::from).try_collect().await.unwrap();
        let count = messages.len();
        let decoded = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            futures::stream::iter(messages.into_iter().map(Ok)),
        )
        .try_collect()
        .await
        .unwrap();
        (count, decoded)
    }

    fn strings(data_type: &DataType) -> RecordBatch {
        let text =
            StringArray::from_iter((0..10_000).map(|i| (i % 3 != 0).then(|| format!("row {i}"))));
        let text: ArrayRef = arrow::compute::cast(&text, data_type).unwrap();
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", data_type.clone(), true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(Int64Array::from_iter_values(0..10_000)), text],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn results_are_split_and_decode_to_the_same_rows() {
        let batch = strings(&DataType::Utf8);
        let sent = [batch.clone(), batch.slice(10, 5)];
        let (messages, decoded) = round_trip(batch.schema(), sent.to_vec(), 16 << 10).await;
        // the schema, about ten pieces of the first batch, one of the second
        assert!(messages > 8, "{messages} messages");
        let schema = batch.schema();
        assert_eq!(
            arrow::compute::concat_batches(&schema, &decoded).unwrap(),
            arrow::compute::concat_batches(&schema, &sent).unwrap()
        );
    }

    #[tokio::test]
    async fn other_types_go_through_arrow_flight() {
        let batch = strings(&DataType::Utf8View);
        let (messages, decoded) = round_trip(batch.schema(), vec![batch.clone()], 4 << 20).await;
        assert_eq!(messages, 2);
        assert_eq!(decoded, vec![batch]);
    }

    #[tokio::test]
    async fn an_empty_result_is_its_schema() {
        let batch = strings(&DataType::Utf8);
        let (messages, decoded) = round_trip(batch.schema(), vec![], 4 << 20).await;
        assert_eq!(messages, 1);
        assert!(decoded.is_empty());
    }
}
