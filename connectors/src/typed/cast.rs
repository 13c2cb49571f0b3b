//! Type stage: declared types, and text batches cast to a schema (naming a value that won't fit).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt64Array, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::FormatOptions;
use dataport_catalog::description::TableMeta;

use crate::error::{ConnectorError, Result};
use crate::sink::SEQ_COLUMN;

/// The description's `column_types` as Arrow types: they win over what a source says or what
/// inference finds, in every connector.
pub(crate) fn declared_types(meta: Option<&TableMeta>) -> BTreeMap<String, DataType> {
    meta.map(|m| {
        m.column_types
            .iter()
            .map(|(column, type_name)| (column.clone(), map_type(type_name, None)))
            .collect()
    })
    .unwrap_or_default()
}

/// The first column of `declared` the source does not have (`has` tells which it has): a
/// declaration that matches nothing is a mistake in the description, refused by the caller.
pub(crate) fn undeclared_column(
    declared: &BTreeMap<String, DataType>,
    has: impl Fn(&str) -> bool,
) -> Option<&str> {
    declared.keys().map(String::as_str).find(|c| !has(c))
}

/// The Arrow type of a type name as Keboola metadata and `column_types` in
/// `data_description.md` write them: STRING/VARCHAR/TEXT → Utf8; INTEGER/BIGINT → Int64;
/// NUMERIC/DECIMAL/NUMBER → Decimal128 when `p,s` is given (p ≤ 38), else Float64;
/// FLOAT/DOUBLE → Float64; BOOLEAN; DATE; TIMESTAMP/TIMESTAMP_NTZ → Timestamp(µs);
/// TIMESTAMP_TZ → Timestamp(µs, UTC). Unknown names are text.
pub fn map_type(name: &str, length: Option<&str>) -> DataType {
    let upper = name.trim().to_ascii_uppercase();
    // `NUMBER(38,2)` style names carry their own length.
    let (base, inline) = match upper.split_once('(') {
        Some((b, rest)) => (
            b.trim().to_string(),
            Some(rest.trim_end_matches(')').to_string()),
        ),
        None => (upper.clone(), None),
    };
    match base.as_str() {
        "INTEGER" | "INT" | "BIGINT" | "SMALLINT" | "TINYINT" | "BYTEINT" => DataType::Int64,
        "NUMERIC" | "DECIMAL" | "NUMBER" => {
            decimal(inline.as_deref().or(length)).unwrap_or(DataType::Float64)
        }
        "FLOAT" | "DOUBLE" | "REAL" | "FLOAT4" | "FLOAT8" | "DOUBLE PRECISION" => DataType::Float64,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "TIMESTAMP_NTZ" | "DATETIME" => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        "TIMESTAMP_TZ" | "TIMESTAMP_LTZ" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
        }
        _ => DataType::Utf8,
    }
}

fn decimal(length: Option<&str>) -> Option<DataType> {
    let (p, s) = length?.split_once(',')?;
    let p: u8 = p.trim().parse().ok()?;
    let s: i8 = s.trim().parse().ok()?;
    (1..=38).contains(&p).then_some(())?;
    (s >= 0 && s as u8 <= p).then_some(DataType::Decimal128(p, s))
}

/// The schema of a staged file of `schema`'s rows: plus the sequence column when the rows are
/// numbered (`seq` is the first row's number).
pub fn staged_schema(schema: &SchemaRef, seq: Option<u64>) -> SchemaRef {
    if seq.is_none() {
        return Arc::clone(schema);
    }
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(SEQ_COLUMN, DataType::UInt64, false)));
    Arc::new(Schema::new(fields))
}

/// Casts a batch of text columns to `schema` (by name) and appends the sequence column
/// numbering rows from `seq_start`, if given. `rows_before` numbers rows in error messages
/// (1-based over the whole input).
pub fn type_batch(
    table: &str,
    text: &RecordBatch,
    schema: &SchemaRef,
    rows_before: u64,
    seq_start: Option<u64>,
) -> Result<RecordBatch> {
    let n = text.num_rows();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len() + 1);
    for field in schema.fields() {
        let array = match text.column_by_name(field.name()) {
            None => new_null_array(field.data_type(), n),
            Some(col) => cast_column(table, col, field, rows_before)?,
        };
        arrays.push(array);
    }
    if let Some(start) = seq_start {
        arrays.push(Arc::new(UInt64Array::from_iter_values(
            start..start + n as u64,
        )));
    }
    let out_schema = staged_schema(schema, seq_start);
    RecordBatch::try_new(out_schema, arrays).map_err(|e| ConnectorError::Decode {
        table: table.to_string(),
        what: "a batch".into(),
        message: e.to_string(),
    })
}

fn cast_column(table: &str, col: &ArrayRef, field: &Field, rows_before: u64) -> Result<ArrayRef> {
    if col.data_type() == field.data_type() {
        return Ok(Arc::clone(col));
    }
    let strict = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    match cast_with_options(col, field.data_type(), &strict) {
        Ok(a) => Ok(a),
        Err(e) => {
            // Find the first value that did not convert, to say where it is.
            let lenient = cast_with_options(col, field.data_type(), &CastOptions::default()).ok();
            let bad = (0..col.len())
                .find(|&i| col.is_valid(i) && lenient.as_ref().is_none_or(|a| a.is_null(i)));
            let (row, value) = match bad {
                Some(i) => (
                    rows_before + i as u64 + 1,
                    arrow::util::display::array_value_to_string(col, i).unwrap_or_default(),
                ),
                None => (rows_before + 1, String::new()),
            };
            Err(ConnectorError::BadValue {
                table: table.to_string(),
                row,
                column: field.name().clone(),
                reason: format!(
                    "'{}' is not a valid {} ({e})",
                    truncate(&value, 80),
                    field.data_type()
                ),
            })
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
