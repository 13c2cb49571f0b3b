//! The types results leave the engine with.
//!
//! Tables are read with strings as `Utf8` (Dataport's default for
//! `datafusion.execution.parquet.schema_force_view_types`), but functions, casts and that
//! setting can still produce `Utf8View`/`BinaryView`. Many clients (the Flight SQL JDBC
//! driver, older pyarrow, CSV/JSON tools) cannot read view types, and encoding sliced view
//! arrays to Arrow IPC can repeat whole data buffers in every message. So every result is
//! converted here, once, to the classic types: one rule for every transport. A batch already
//! in those types passes through without a copy.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, ByteView, RecordBatch, StringArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;

/// The client-facing type of a column type: view types become their classic forms, nested
/// types are converted inside.
pub fn client_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::ListView(f) => DataType::List(client_field(f)),
        DataType::LargeListView(f) => DataType::LargeList(client_field(f)),
        DataType::List(f) => DataType::List(client_field(f)),
        DataType::LargeList(f) => DataType::LargeList(client_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(client_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(client_field).collect()),
        DataType::Map(f, sorted) => DataType::Map(client_field(f), *sorted),
        DataType::Dictionary(k, v) => {
            DataType::Dictionary(k.clone(), Box::new(dictionary_values(v)))
        }
        other => other.clone(),
    }
}

/// The values of a dictionary as clients receive them: a dictionary of dictionaries (which
/// DataFusion can produce) is sent as a dictionary of the innermost values, since Arrow IPC
/// cannot carry a dictionary whose values are a dictionary.
fn dictionary_values(values: &DataType) -> DataType {
    match values {
        DataType::Dictionary(_, inner) => dictionary_values(inner),
        other => client_type(other),
    }
}

fn client_field(f: &FieldRef) -> FieldRef {
    Arc::new(
        Field::new(f.name(), client_type(f.data_type()), f.is_nullable())
            .with_metadata(f.metadata().clone()),
    )
}

/// The client-facing schema of a result schema.
pub fn client_schema(schema: &SchemaRef) -> SchemaRef {
    if schema
        .fields()
        .iter()
        .all(|f| client_type(f.data_type()) == *f.data_type())
    {
        return Arc::clone(schema);
    }
    Arc::new(Schema::new_with_metadata(
        schema.fields().iter().map(client_field).collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// The schema a query result is announced and streamed with: [`client_schema`] with every
/// column nullable. Whether a column can be null depends on bound parameter values and on
/// plan rewrites, so a schema announced before execution (Flight SQL `GetFlightInfo`, prepared
/// statements) could otherwise differ from the streamed one, which strict clients (ADBC)
/// reject. Table schemas in the catalog keep their declared nullability.
pub fn result_schema(schema: &SchemaRef) -> SchemaRef {
    let client = client_schema(schema);
    if client.fields().iter().all(|f| f.is_nullable()) {
        return client;
    }
    Arc::new(Schema::new_with_metadata(
        client
            .fields()
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
            .collect::<Vec<FieldRef>>(),
        client.metadata().clone(),
    ))
}

/// Convert a batch to `target` (a [`client_schema`]); a no-op when nothing differs.
pub fn to_client_batch(batch: RecordBatch, target: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema_ref().fields() == target.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| to_client_array(c, f.data_type()))
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(Arc::clone(target), columns)
}

fn to_client_array(array: &ArrayRef, target: &DataType) -> Result<ArrayRef, ArrowError> {
    match (array.data_type(), target) {
        (from, to) if from == to => Ok(Arc::clone(array)),
        (DataType::Utf8View, DataType::Utf8) => {
            let views = array.as_string_view();
            let (offsets, values) = view_bytes(views.views(), views.data_buffers(), views.nulls())?;
            Ok(Arc::new(StringArray::try_new(
                offsets,
                values,
                views.nulls().cloned(),
            )?))
        }
        (DataType::BinaryView, DataType::Binary) => {
            let views = array.as_binary_view();
            let (offsets, values) = view_bytes(views.views(), views.data_buffers(), views.nulls())?;
            Ok(Arc::new(BinaryArray::try_new(
                offsets,
                values,
                views.nulls().cloned(),
            )?))
        }
        _ => cast(array, target),
    }
}

/// The offsets and bytes of a view array's values, laid out as a classic byte array's: two
/// passes over the views (lengths, then bytes copied inline or from the data buffers). Arrow's
/// cast appends value by value through a builder; this was a fifth of the server's time when
/// streaming a table with text columns.
fn view_bytes(
    views: &[u128],
    buffers: &[Buffer],
    nulls: Option<&NullBuffer>,
) -> Result<(OffsetBuffer<i32>, Buffer), ArrowError> {
    let length = |i: usize, view: u128| -> usize {
        if nulls.is_some_and(|n| n.is_null(i)) {
            0
        } else {
            // The low 32 bits of a view are the value's length.
            view as u32 as usize
        }
    };
    let too_large = || {
        ArrowError::ComputeError(
            "a result batch holds over 2 GiB of text in one column; ask for fewer rows at a time"
                .into(),
        )
    };
    let mut offsets: Vec<i32> = Vec::with_capacity(views.len() + 1);
    offsets.push(0);
    let mut total = 0usize;
    for (i, view) in views.iter().enumerate() {
        total += length(i, *view);
        offsets.push(i32::try_from(total).map_err(|_| too_large())?);
    }
    // Room for one whole inline value past the end (see below).
    let mut values: Vec<u8> = Vec::with_capacity(total + 12);
    for (i, view) in views.iter().enumerate() {
        let len = length(i, *view);
        if len <= 12 {
            // Short values live in the view itself, after the length: copy all 12 bytes (a
            // fixed-size copy, no call) and keep `len` of them.
            values.extend_from_slice(&view.to_le_bytes()[4..16]);
            values.truncate(values.len() - (12 - len));
        } else {
            let view = ByteView::from(*view);
            let start = view.offset as usize;
            let bytes = buffers
                .get(view.buffer_index as usize)
                .and_then(|b| b.get(start..start + len))
                .ok_or_else(|| {
                    ArrowError::ComputeError("a view points outside its data buffers".into())
                })?;
            values.extend_from_slice(bytes);
        }
    }
    Ok((
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Buffer::from_vec(values),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use arrow::array::{BinaryViewArray, StringViewArray};

    #[test]
    fn view_arrays_become_classic_arrays_with_the_same_values() {
        let long = "a value longer than twelve bytes";
        let strings: StringViewArray = [
            Some("short"),
            None,
            Some(long),
            Some(""),
            Some("exactly12byt"),
            Some("thirteen byte"),
            None,
            Some("é ü 日本語, and more than twelve bytes"),
        ]
        .into_iter()
        .collect();
        let binaries: BinaryViewArray = [Some(&b"\x00\x01"[..]), None, Some(long.as_bytes())]
            .into_iter()
            .collect();
        let arrays: [ArrayRef; 4] = [
            Arc::new(strings.clone()),
            // A slice keeps the whole data buffers; only its own values come out.
            Arc::new(strings.slice(2, 4)),
            Arc::new(binaries.clone()),
            Arc::new(binaries.slice(1, 2)),
        ];
        for array in arrays {
            let target = client_type(array.data_type());
            let ours = to_client_array(&array, &target).unwrap();
            let arrows = cast(&array, &target).unwrap();
            assert_eq!(ours.data_type(), &target);
            assert_eq!(ours.to_data(), arrows.to_data(), "{array:?}");
        }
    }
}
