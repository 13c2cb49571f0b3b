//! The types results leave the engine with.
//!
//! DataFusion reads strings as `Utf8View`/`BinaryView`. Many clients (the Flight SQL JDBC
//! driver, older pyarrow, CSV/JSON tools) cannot read view types, and encoding sliced view
//! arrays to Arrow IPC can repeat whole data buffers in every message. So every result is
//! converted here, once, to the classic types: one rule for every transport.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
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
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(client_type(v))),
        other => other.clone(),
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
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(Arc::clone(target), columns)
}
