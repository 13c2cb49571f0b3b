//! Comparing a surface's answer with the reference's.
//!
//! - Types: a client receives every column in the classic Arrow types (`Utf8View` as `Utf8`,
//!   `BinaryView` as `Binary`, list views as lists) and nullable; anything else must be the
//!   reference's type exactly (dictionaries, large lists, decimals, time zones…).
//! - Values: floats equal within a relative 1e-9 (parallel aggregation adds in any order),
//!   `NaN` equal to `NaN`; everything else by its Arrow display text. Rows are compared as a
//!   multiset unless the query orders its result; an ordered result equal only as a multiset is
//!   reported as such (ties may come in any order).
//! - HTTP JSON: the JSON a value must have, derived here from the reference's Arrow value
//!   (numbers as numbers, non-finite floats as "NaN"/"Infinity"/"-Infinity", temporal values
//!   as Arrow prints them, binary as hex, lists as arrays, structs as objects, maps as objects
//!   or `{"key", "value"}` entry lists).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, FieldRef, Float16Type, Float32Type, Float64Type, Int8Type, Int16Type,
    Int32Type, Int64Type, SchemaRef, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// The type a client receives for a result column of type `dt`.
pub(crate) fn client_type(dt: &DataType) -> DataType {
    let field = |f: &FieldRef| -> FieldRef {
        Arc::new(Field::new(
            f.name(),
            client_type(f.data_type()),
            f.is_nullable(),
        ))
    };
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::ListView(f) | DataType::List(f) => DataType::List(field(f)),
        DataType::LargeListView(f) | DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        // Arrow IPC cannot carry a dictionary of dictionaries: the innermost values are sent.
        DataType::Dictionary(k, v) => {
            let mut values = v.as_ref();
            while let DataType::Dictionary(_, inner) = values {
                values = inner;
            }
            DataType::Dictionary(k.clone(), Box::new(client_type(values)))
        }
        other => other.clone(),
    }
}

/// Whether `got` is `want` up to the nullability of nested fields and the names of list items
/// (which a client does not rely on); struct field names and every leaf type must match.
fn same_type(want: &DataType, got: &DataType) -> bool {
    match (want, got) {
        (DataType::List(a), DataType::List(b))
        | (DataType::LargeList(a), DataType::LargeList(b))
        | (DataType::Map(a, _), DataType::Map(b, _)) => same_type(a.data_type(), b.data_type()),
        (DataType::FixedSizeList(a, n), DataType::FixedSizeList(b, m)) => {
            n == m && same_type(a.data_type(), b.data_type())
        }
        (DataType::Struct(a), DataType::Struct(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b.iter())
                    .all(|(x, y)| x.name() == y.name() && same_type(x.data_type(), y.data_type()))
        }
        (DataType::Dictionary(k, v), DataType::Dictionary(l, w)) => k == l && same_type(v, w),
        _ => want == got,
    }
}

/// Differences between the columns a client got and the ones it should get.
pub(crate) fn type_differences(expected: &SchemaRef, got: &SchemaRef) -> Vec<String> {
    if expected.fields().len() != got.fields().len() {
        return vec![format!(
            "{} columns instead of {}",
            got.fields().len(),
            expected.fields().len()
        )];
    }
    let mut out = Vec::new();
    for (e, g) in expected.fields().iter().zip(got.fields()) {
        let want = client_type(e.data_type());
        if !same_type(&want, g.data_type()) {
            out.push(format!(
                "column {}: {} instead of {}",
                e.name(),
                g.data_type(),
                want
            ));
        }
        if e.name() != g.name() {
            out.push(format!("column named {} instead of {}", g.name(), e.name()));
        }
    }
    out
}

/// Whether two schemas are the same for a strict client (ADBC compares the schema a `DoGet`
/// stream starts with against the one `GetFlightInfo` announced).
pub(crate) fn same_schema(announced: &SchemaRef, streamed: &SchemaRef) -> Option<String> {
    if announced.fields() == streamed.fields() {
        return None;
    }
    Some(format!(
        "announced {} but streamed {}",
        describe(announced),
        describe(streamed)
    ))
}

fn describe(schema: &SchemaRef) -> String {
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "{} {}{}",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " not null" }
            )
        })
        .collect();
    format!("({})", columns.join(", "))
}

/// One value, made comparable.
#[derive(Debug, Clone)]
enum Cell {
    Null,
    Float(f64),
    Text(String),
}

impl Cell {
    fn key(&self) -> String {
        match self {
            Cell::Null => "\u{0}null".into(),
            Cell::Float(f) if f.is_nan() => "NaN".into(),
            // Sort floats by a rounded form so near-equal values pair up.
            Cell::Float(f) => format!("{f:.6e}"),
            Cell::Text(t) => t.clone(),
        }
    }

    fn same(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Float(a), Cell::Float(b)) => floats_equal(*a, *b),
            (Cell::Text(a), Cell::Text(b)) => a == b,
            _ => false,
        }
    }
}

pub(crate) fn floats_equal(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() {
        return false;
    }
    let scale = a.abs().max(b.abs());
    (a - b).abs() <= 1e-9 * scale.max(1e-300)
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Cell>>, String> {
    let options = FormatOptions::default().with_null("\u{0}null");
    let mut out = Vec::new();
    for batch in batches {
        let columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Dictionary(_, v) => cast(c, v).map_err(|e| e.to_string()),
                _ => Ok(Arc::clone(c)),
            })
            .collect::<Result<_, _>>()?;
        let formatters: Vec<ArrayFormatter<'_>> = columns
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            let mut cells = Vec::with_capacity(columns.len());
            for (column, formatter) in columns.iter().zip(&formatters) {
                cells.push(if column.is_null(row) {
                    Cell::Null
                } else if let Some(f) = float_at(column.as_ref(), row) {
                    Cell::Float(f)
                } else {
                    Cell::Text(formatter.value(row).to_string())
                });
            }
            out.push(cells);
        }
    }
    Ok(out)
}

fn float_at(array: &dyn Array, row: usize) -> Option<f64> {
    match array.data_type() {
        DataType::Float16 => Some(array.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => Some(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => Some(array.as_primitive::<Float64Type>().value(row)),
        _ => None,
    }
}

/// How two results relate.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Equality {
    Identical,
    /// The same rows, in another order where the query's ORDER BY has ties.
    SameRowsOtherOrder,
    Different(String),
}

fn same_row(a: &[Cell], b: &[Cell]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
}

fn row_text(row: &[Cell]) -> String {
    let cells: Vec<String> = row
        .iter()
        .map(|c| match c {
            Cell::Null => "NULL".into(),
            Cell::Float(f) => f.to_string(),
            Cell::Text(t) => t.clone(),
        })
        .collect();
    format!("[{}]", cells.join(", "))
}

/// Compare the values of `got` with `expected`'s.
pub(crate) fn values(expected: &[RecordBatch], got: &[RecordBatch], ordered: bool) -> Equality {
    let (want, have) = match (rows(expected), rows(got)) {
        (Ok(w), Ok(h)) => (w, h),
        (Err(e), _) | (_, Err(e)) => return Equality::Different(format!("cannot compare: {e}")),
    };
    if want.len() != have.len() {
        return Equality::Different(format!(
            "{} rows instead of {}{}",
            have.len(),
            want.len(),
            first_rows(&want, &have)
        ));
    }
    if ordered && want.iter().zip(&have).all(|(w, h)| same_row(w, h)) {
        return Equality::Identical;
    }
    let sort = |mut rows: Vec<Vec<Cell>>| {
        rows.sort_by_cached_key(|r| r.iter().map(Cell::key).collect::<Vec<_>>());
        rows
    };
    let (want, have) = (sort(want), sort(have));
    match want.iter().zip(&have).find(|(w, h)| !same_row(w, h)) {
        None if ordered => Equality::SameRowsOtherOrder,
        None => Equality::Identical,
        Some((w, h)) => {
            Equality::Different(format!("row {} instead of {}", row_text(h), row_text(w)))
        }
    }
}

fn first_rows(want: &[Vec<Cell>], have: &[Vec<Cell>]) -> String {
    let show = |rows: &[Vec<Cell>]| {
        rows.iter()
            .take(3)
            .map(|r| row_text(r))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(" (expected {} …, got {} …)", show(want), show(have))
}

/// The JSON value the HTTP API must give `array[row]`.
pub(crate) fn expected_json(array: &dyn Array, row: usize) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    macro_rules! int {
        ($t:ty) => {
            Value::from(array.as_primitive::<$t>().value(row))
        };
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let f = float_at(array, row).unwrap_or(f64::NAN);
            // A 16- or 32-bit float's JSON is its shortest decimal at its own precision.
            let f = match array.data_type() {
                DataType::Float64 => f,
                _ => (f as f32).to_string().parse().unwrap_or(f),
            };
            if f.is_nan() {
                Value::from("NaN")
            } else if f.is_infinite() {
                Value::from(if f > 0.0 { "Infinity" } else { "-Infinity" })
            } else {
                serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
            }
        }
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::from(array.as_string_view().value(row)),
        DataType::Binary => Value::from(hex(array.as_binary::<i32>().value(row))),
        DataType::LargeBinary => Value::from(hex(array.as_binary::<i64>().value(row))),
        DataType::BinaryView => Value::from(hex(array.as_binary_view().value(row))),
        DataType::FixedSizeBinary(_) => Value::from(hex(array.as_fixed_size_binary().value(row))),
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            // A number in JSON with every digit; Arrow's text of a negative scale's zero
            // ("0000") has leading zeros JSON does not allow.
            let text = display(array, row)?;
            let (sign, digits) = text
                .strip_prefix('-')
                .map_or(("", text.as_str()), |d| ("-", d));
            let trimmed = digits.trim_start_matches('0');
            let digits = if trimmed.is_empty() || trimmed.starts_with('.') {
                format!("0{trimmed}")
            } else {
                trimmed.to_string()
            };
            let number = format!("{sign}{digits}");
            Value::Number(
                number
                    .parse::<serde_json::Number>()
                    .map_err(|e| format!("decimal {text}: {e}"))?,
            )
        }
        DataType::List(_) => list(&array.as_list::<i32>().value(row))?,
        DataType::LargeList(_) => list(&array.as_list::<i64>().value(row))?,
        DataType::FixedSizeList(..) => list(&array.as_fixed_size_list().value(row))?,
        DataType::ListView(_) => list(&array.as_list_view::<i32>().value(row))?,
        DataType::LargeListView(_) => list(&array.as_list_view::<i64>().value(row))?,
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut map = serde_json::Map::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                map.insert(f.name().clone(), expected_json(c.as_ref(), row)?);
            }
            Value::Object(map)
        }
        DataType::Map(..) => {
            let m = array.as_map();
            let entries = m.value(row);
            let keys = entries.column(0);
            let vals = entries.column(1);
            let string_keys = matches!(
                keys.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            if string_keys {
                let mut map = serde_json::Map::new();
                for i in 0..entries.len() {
                    let key = expected_json(keys.as_ref(), i)?;
                    map.insert(
                        key.as_str().unwrap_or_default().to_string(),
                        expected_json(vals.as_ref(), i)?,
                    );
                }
                Value::Object(map)
            } else {
                let mut out = Vec::new();
                for i in 0..entries.len() {
                    out.push(serde_json::json!({
                        "key": expected_json(keys.as_ref(), i)?,
                        "value": expected_json(vals.as_ref(), i)?,
                    }));
                }
                Value::Array(out)
            }
        }
        DataType::Dictionary(_, value) => {
            let plain = cast(&array.slice(row, 1), value).map_err(|e| e.to_string())?;
            expected_json(plain.as_ref(), 0)?
        }
        DataType::RunEndEncoded(_, value) => {
            let plain = cast(&array.slice(row, 1), value.data_type()).map_err(|e| e.to_string())?;
            expected_json(plain.as_ref(), 0)?
        }
        // Dates, times, timestamps, durations, intervals: Arrow's text for them.
        _ => Value::from(display(array, row)?),
    })
}

fn list(values: &ArrayRef) -> Result<serde_json::Value, String> {
    (0..values.len())
        .map(|i| expected_json(values.as_ref(), i))
        .collect::<Result<Vec<_>, _>>()
        .map(serde_json::Value::Array)
}

fn display(array: &dyn Array, row: usize) -> Result<String, String> {
    let formatter =
        ArrayFormatter::try_new(array, &FormatOptions::default()).map_err(|e| e.to_string())?;
    Ok(formatter.value(row).to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether two JSON values are equal, numbers within the float tolerance.
pub(crate) fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y
                || match (x.as_f64(), y.as_f64()) {
                    (Some(p), Some(q)) => floats_equal(p, q),
                    _ => false,
                }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// The rows of `batches` as the JSON the HTTP API must give.
pub(crate) fn expected_json_rows(
    batches: &[RecordBatch],
) -> Result<Vec<Vec<serde_json::Value>>, String> {
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| expected_json(c.as_ref(), row))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
    }
    Ok(out)
}

fn json_key(row: &[serde_json::Value]) -> String {
    serde_json::to_string(row).unwrap_or_default()
}

/// Compare HTTP JSON rows (values in column order) with the expected ones.
pub(crate) fn json_rows(
    expected: Vec<Vec<serde_json::Value>>,
    mut got: Vec<Vec<serde_json::Value>>,
    ordered: bool,
) -> Equality {
    if expected.len() != got.len() {
        return Equality::Different(format!(
            "{} JSON rows instead of {}",
            got.len(),
            expected.len()
        ));
    }
    let same = |a: &[serde_json::Value], b: &[serde_json::Value]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_equal(x, y))
    };
    if expected.iter().zip(&got).all(|(e, g)| same(e, g)) {
        return Equality::Identical;
    }
    let mut expected = expected;
    expected.sort_by_cached_key(|r| json_key(r));
    got.sort_by_cached_key(|r| json_key(r));
    match expected.iter().zip(&got).find(|(e, g)| !same(e, g)) {
        None if ordered => Equality::SameRowsOtherOrder,
        None => Equality::Identical,
        Some((e, g)) => Equality::Different(format!(
            "JSON row {} instead of {}",
            serde_json::Value::Array(g.clone()),
            serde_json::Value::Array(e.clone())
        )),
    }
}

/// Text that must never reach a client: an internal error's or a panic's.
pub(crate) fn internal_text(message: &str) -> Option<&'static str> {
    [
        "Internal error",
        "This issue was likely caused by a bug",
        "panicked at",
        "stack backtrace",
        "RUST_BACKTRACE",
        ".rs:",
    ]
    .into_iter()
    .find(|needle| message.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, StringViewArray};

    #[test]
    fn floats_compare_within_tolerance_and_nan_equals_nan() {
        assert!(floats_equal(0.1 + 0.2, 0.3));
        assert!(floats_equal(f64::NAN, f64::NAN));
        assert!(!floats_equal(1.0, 1.0001));
        assert!(floats_equal(f64::INFINITY, f64::INFINITY));
        assert!(!floats_equal(f64::INFINITY, f64::NEG_INFINITY));
    }

    #[test]
    fn view_types_are_received_as_classic_types() {
        assert_eq!(client_type(&DataType::Utf8View), DataType::Utf8);
        let expected = Arc::new(arrow::datatypes::Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let got = Arc::new(arrow::datatypes::Schema::new(vec![Field::new(
            "s",
            DataType::Utf8,
            true,
        )]));
        assert!(type_differences(&expected, &got).is_empty());
    }

    #[test]
    fn unordered_rows_compare_as_multisets() {
        let batch = |values: Vec<f64>, names: Vec<&str>| {
            RecordBatch::try_from_iter(vec![
                ("f", Arc::new(Float64Array::from(values)) as ArrayRef),
                ("s", Arc::new(StringViewArray::from(names)) as ArrayRef),
            ])
            .unwrap()
        };
        let a = batch(vec![1.0, f64::NAN], vec!["x", "y"]);
        let b = batch(vec![f64::NAN, 1.0 + 1e-12], vec!["y", "x"]);
        assert_eq!(
            values(std::slice::from_ref(&a), std::slice::from_ref(&b), false),
            Equality::Identical
        );
        assert_eq!(
            values(std::slice::from_ref(&a), &[b], true),
            Equality::SameRowsOtherOrder
        );
        let c = batch(vec![1.0, 2.0], vec!["x", "y"]);
        assert!(matches!(values(&[a], &[c], false), Equality::Different(_)));
    }

    #[test]
    fn json_of_non_finite_floats_and_maps() {
        let floats = Float64Array::from(vec![Some(f64::NAN), Some(f64::NEG_INFINITY), Some(2.5)]);
        assert_eq!(expected_json(&floats, 0).unwrap(), serde_json::json!("NaN"));
        assert_eq!(
            expected_json(&floats, 1).unwrap(),
            serde_json::json!("-Infinity")
        );
        assert_eq!(expected_json(&floats, 2).unwrap(), serde_json::json!(2.5));
        assert!(json_equal(
            &serde_json::json!([1.0000000000001]),
            &serde_json::json!([1.0])
        ));
    }

    #[test]
    fn internal_text_is_recognised() {
        assert!(internal_text("Internal error: invoke should not be called").is_some());
        assert!(internal_text("table 'x' not found").is_none());
    }
}
