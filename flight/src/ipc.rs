//! Arrow IPC record-batch messages whose body is the batch's own buffers.
//!
//! arrow-ipc's encoder copies every buffer of a batch into one new body vector. For a result
//! of a gigabyte that is a gigabyte of copying and of fresh memory on the server's busiest
//! path, only to hand the bytes to the socket. [`encode`] writes the IPC header (the
//! flatbuffer `Message`) itself and returns the body as a list of chunks that share memory
//! with the batch: a buffer is sliced, never copied, unless its slice cannot be expressed
//! (a validity bitmap that starts inside a byte, offsets that do not start at zero). Chunks
//! below [`COALESCE_BELOW`] are gathered into one, so small columns cost no extra frames.
//!
//! Only flat columns are written this way: booleans, fixed-width numbers and temporals,
//! decimals, fixed-size binary, and (large) UTF-8 and binary. [`supports`] tells whether a
//! schema qualifies; a result with any other type (lists, structs, maps, dictionaries…) is
//! encoded by arrow-ipc's generator ([`ResultEncoder`]), with the exact schema it announces:
//! arrow-flight's own encoder rewrites a `LargeList` field as `List` in the schema message
//! while sending 64-bit offsets, which clients then misread.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::buffer::{BooleanBuffer, Buffer};
use arrow::datatypes::{
    ArrowNativeType, BinaryType, ByteArrayType, LargeBinaryType, LargeUtf8Type, Utf8Type,
};
use arrow::datatypes::{DataType, Schema};
use arrow::error::ArrowError;
use arrow::ipc::writer::{
    DictionaryTracker, EncodedData, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};
use arrow::ipc::{
    Buffer as BufferSpec, FieldNode, MessageBuilder, MessageHeader, MetadataVersion,
    RecordBatchBuilder,
};
use bytes::{BufMut, Bytes, BytesMut};
use flatbuffers::FlatBufferBuilder;

/// Alignment of every buffer in a body, as the IPC format requires.
const ALIGN: usize = 8;

/// Buffers smaller than this are copied into a shared chunk instead of sent on their own.
const COALESCE_BELOW: usize = 64 << 10;

static PADDING: [u8; ALIGN] = [0; ALIGN];

/// One record-batch message: the flatbuffer header and the body's chunks, in order.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) header: Bytes,
    pub(crate) body: Vec<Bytes>,
}

/// Turns the batches of one result into IPC messages: the schema first, then per batch its
/// dictionaries (when they changed) and the record batch.
pub(crate) enum ResultEncoder {
    /// Flat columns: the batch's own buffers ([`encode`]).
    Buffers,
    /// Everything else, through arrow-ipc's generator.
    Generated(Box<Generated>),
}

pub(crate) struct Generated {
    data_gen: IpcDataGenerator,
    tracker: DictionaryTracker,
    options: IpcWriteOptions,
    context: IpcWriteContext,
}

impl ResultEncoder {
    /// The encoder for a result of `schema`, and the schema message to send first.
    pub(crate) fn for_schema(schema: &Schema) -> (Self, Message) {
        let options = IpcWriteOptions::default();
        if supports(schema) {
            let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
                schema,
                &mut DictionaryTracker::new(false),
                &options,
            );
            return (Self::Buffers, Message::from(encoded));
        }
        let data_gen = IpcDataGenerator::default();
        // Replacement dictionaries are allowed: each batch may carry its own.
        let mut tracker = DictionaryTracker::new(false);
        let encoded =
            data_gen.schema_to_bytes_with_dictionary_tracker(schema, &mut tracker, &options);
        let generated = Generated {
            data_gen,
            tracker,
            options,
            context: IpcWriteContext::default(),
        };
        (Self::Generated(Box::new(generated)), Message::from(encoded))
    }

    /// The messages of one batch: its dictionaries that are new or changed, then the batch.
    pub(crate) fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<Message>, ArrowError> {
        match self {
            Self::Buffers => Ok(vec![encode(batch)?]),
            Self::Generated(g) => {
                let (dictionaries, encoded) =
                    g.data_gen
                        .encode(batch, &mut g.tracker, &g.options, &mut g.context)?;
                let mut out: Vec<Message> = dictionaries.into_iter().map(Message::from).collect();
                out.push(Message::from(encoded));
                Ok(out)
            }
        }
    }
}

impl From<EncodedData> for Message {
    fn from(encoded: EncodedData) -> Self {
        let body = if encoded.arrow_data.is_empty() {
            Vec::new()
        } else {
            vec![Bytes::from(encoded.arrow_data)]
        };
        Self {
            header: Bytes::from(encoded.ipc_message),
            body,
        }
    }
}

/// Whether [`encode`] can write every column of `schema`.
pub(crate) fn supports(schema: &Schema) -> bool {
    schema.fields().iter().all(|f| flat(f.data_type()))
}

fn flat(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Boolean
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::FixedSizeBinary(_)
    ) || data_type.primitive_width().is_some()
}

/// Bytes the body of `batch` takes, before alignment: the size to split results by (arrow's
/// own measure of a slice, the one arrow-flight's encoder splits by).
pub(crate) fn body_size(batch: &RecordBatch) -> Result<usize, ArrowError> {
    batch
        .columns()
        .iter()
        .map(|column| column.to_data().get_slice_memory_size())
        .sum()
}

/// The IPC record-batch message of `batch`, whose schema [`supports`] must accept.
pub(crate) fn encode(batch: &RecordBatch) -> Result<Message, ArrowError> {
    let mut body = Body::default();
    let mut nodes = Vec::with_capacity(batch.num_columns());
    for column in batch.columns() {
        nodes.push(FieldNode::new(
            count(column.len())?,
            count(column.null_count())?,
        ));
        match column.nulls() {
            Some(nulls) if nulls.null_count() > 0 => body.push(bitmap(nulls.inner())),
            _ => body.push_empty(),
        }
        write_values(column, &mut body)?;
    }
    let (specs, chunks, body_len) = body.finish();

    let mut fbb = FlatBufferBuilder::new();
    let nodes = fbb.create_vector(&nodes);
    let specs = fbb.create_vector(&specs);
    let mut record = RecordBatchBuilder::new(&mut fbb);
    record.add_length(count(batch.num_rows())?);
    record.add_nodes(nodes);
    record.add_buffers(specs);
    let record = record.finish();
    let mut message = MessageBuilder::new(&mut fbb);
    message.add_version(MetadataVersion::V5);
    message.add_header_type(MessageHeader::RecordBatch);
    message.add_header(record.as_union_value());
    message.add_bodyLength(count(body_len)?);
    let message = message.finish();
    fbb.finish(message, None);
    Ok(Message {
        header: Bytes::copy_from_slice(fbb.finished_data()),
        body: chunks,
    })
}

fn write_values(column: &ArrayRef, body: &mut Body) -> Result<(), ArrowError> {
    match column.data_type() {
        DataType::Boolean => body.push(bitmap(column.as_boolean().values())),
        DataType::Utf8 => byte_values::<Utf8Type>(column, body),
        DataType::LargeUtf8 => byte_values::<LargeUtf8Type>(column, body),
        DataType::Binary => byte_values::<BinaryType>(column, body),
        DataType::LargeBinary => byte_values::<LargeBinaryType>(column, body),
        DataType::FixedSizeBinary(width) => {
            let a = column.as_fixed_size_binary();
            let width = usize::try_from(*width).unwrap_or(0);
            // `value_data` is the whole buffer; the array's slice starts at its offset
            let start = a.offset() * width;
            body.push(a.values().slice_with_length(start, a.len() * width));
        }
        other => {
            let width = other.primitive_width().ok_or_else(|| {
                ArrowError::NotYetImplemented(format!("zero-copy IPC of {other}"))
            })?;
            let data = column.to_data();
            let values = data.buffers().first().ok_or_else(|| {
                ArrowError::InvalidArgumentError(format!("a {other} array without values"))
            })?;
            body.push(values.slice_with_length(data.offset() * width, data.len() * width));
        }
    }
    Ok(())
}

/// Offsets (rebased to start at zero when the array is a slice) and the values they cover.
fn byte_values<T: ByteArrayType>(column: &ArrayRef, body: &mut Body) {
    let array = column.as_bytes::<T>();
    let offsets = array.value_offsets();
    let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else {
        // an empty array may have no offsets at all; IPC wants the one zero
        body.push(Buffer::from_slice_ref([T::Offset::usize_as(0)]));
        body.push_empty();
        return;
    };
    if first == T::Offset::usize_as(0) {
        body.push(array.offsets().inner().inner().clone());
    } else {
        body.push(Buffer::from_iter(offsets.iter().map(|o| *o - first)));
    }
    body.push(
        array
            .values()
            .slice_with_length(first.as_usize(), (last - first).as_usize()),
    );
}

/// A bitmap as a buffer that starts at its first bit: shared if it starts on a byte.
fn bitmap(bits: &BooleanBuffer) -> Buffer {
    if bits.offset().is_multiple_of(8) {
        bits.inner()
            .slice_with_length(bits.offset() / 8, bits.len().div_ceil(8))
    } else {
        bits.sliced()
    }
}

fn count(n: usize) -> Result<i64, ArrowError> {
    i64::try_from(n).map_err(|_| ArrowError::InvalidArgumentError(format!("{n} exceeds i64")))
}

/// A body being laid out: buffer positions, and chunks with small ones gathered.
#[derive(Default)]
struct Body {
    specs: Vec<BufferSpec>,
    chunks: Vec<Bytes>,
    small: BytesMut,
    len: usize,
}

impl Body {
    fn push_empty(&mut self) {
        self.specs.push(BufferSpec::new(self.offset(), 0));
    }

    fn push(&mut self, buffer: Buffer) {
        let len = buffer.len();
        self.specs.push(BufferSpec::new(self.offset(), len as i64));
        let padding = len.next_multiple_of(ALIGN) - len;
        if len < COALESCE_BELOW {
            self.small.put_slice(buffer.as_slice());
        } else {
            self.flush();
            self.chunks.push(Bytes::from_owner(Shared(buffer)));
        }
        self.small.put_slice(&PADDING[..padding]);
        self.len += len + padding;
    }

    fn offset(&self) -> i64 {
        self.len as i64
    }

    fn flush(&mut self) {
        if !self.small.is_empty() {
            self.chunks.push(self.small.split().freeze());
        }
    }

    fn finish(mut self) -> (Vec<BufferSpec>, Vec<Bytes>, usize) {
        self.flush();
        (self.specs, self.chunks, self.len)
    }
}

/// An Arrow buffer lent to `Bytes` without a copy.
struct Shared(Buffer);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
        Float64Array, Int8Array, Int64Array, LargeStringArray, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Field, SchemaRef};
    use arrow::ipc::reader::read_record_batch;
    use arrow::ipc::root_as_message;

    use super::*;

    fn decode(message: &Message, schema: &SchemaRef) -> RecordBatch {
        let body: Vec<u8> = message
            .body
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect();
        assert_eq!(body.len() % ALIGN, 0);
        let header = root_as_message(&message.header).unwrap();
        assert_eq!(header.bodyLength() as usize, body.len());
        let record = header.header_as_record_batch().unwrap();
        read_record_batch(
            &Buffer::from(body),
            record,
            Arc::clone(schema),
            &HashMap::new(),
            None,
            &header.version(),
        )
        .unwrap()
    }

    fn batch() -> RecordBatch {
        let long: String = "x".repeat(100_000);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter(
                (0..300).map(|i| (i % 7 != 0).then_some(i)),
            )),
            Arc::new(Int8Array::from_iter_values(
                (0..300).map(|i| (i % 100) as i8),
            )),
            Arc::new(Float64Array::from_iter_values((0..300).map(f64::from))),
            Arc::new(BooleanArray::from_iter(
                (0..300).map(|i| (i % 5 != 0).then_some(i % 3 == 0)),
            )),
            Arc::new(StringArray::from_iter((0..300).map(|i| match i % 4 {
                0 => None,
                1 => Some(long.clone()),
                _ => Some(format!("v{i}")),
            }))),
            Arc::new(LargeStringArray::from_iter_values(
                (0..300).map(|i| format!("l{i}")),
            )),
            Arc::new(BinaryArray::from_iter_values(
                (0..300).map(|i| vec![i as u8; (i % 9) as usize]),
            )),
            Arc::new(
                FixedSizeBinaryArray::try_from_iter((0..300).map(|i| [i as u8, 1, 2])).unwrap(),
            ),
            Arc::new(
                Decimal128Array::from_iter_values((0..300).map(i128::from))
                    .with_precision_and_scale(15, 2)
                    .unwrap(),
            ),
            Arc::new(Date32Array::from_iter_values(0..300)),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..300).map(i64::from))
                    .with_timezone("UTC"),
            ),
        ];
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn every_flat_type_round_trips() {
        let batch = batch();
        assert!(supports(&batch.schema()));
        let message = encode(&batch).unwrap();
        assert_eq!(decode(&message, &batch.schema()), batch);
    }

    #[test]
    fn slices_round_trip_at_every_offset() {
        let batch = batch();
        for (offset, len) in [
            (0, 0),
            (0, 1),
            (1, 10),
            (3, 200),
            (8, 17),
            (13, 287),
            (299, 1),
        ] {
            let slice = batch.slice(offset, len);
            let message = encode(&slice).unwrap();
            assert_eq!(
                decode(&message, &batch.schema()),
                slice,
                "slice {offset}+{len}"
            );
        }
    }

    #[test]
    fn large_buffers_are_shared_not_copied() {
        let values: Vec<i64> = (0..100_000).collect();
        let column = Int64Array::from(values);
        let pointer = column.values().inner().as_ptr();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(column)]).unwrap();
        let message = encode(&batch).unwrap();
        assert!(message.body.iter().any(|c| c.as_ptr() == pointer));
        assert_eq!(body_size(&batch).unwrap(), 800_000);
        assert_eq!(message.body.iter().map(Bytes::len).sum::<usize>(), 800_000);
    }

    #[test]
    fn nested_and_view_types_are_left_to_arrow_flight() {
        for data_type in [
            DataType::Utf8View,
            DataType::Null,
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
        ] {
            let schema = Schema::new(vec![Field::new("c", data_type, true)]);
            assert!(!supports(&schema));
        }
    }
}
