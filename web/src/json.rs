//! JSON for the values JSON has no literal for, layered over arrow-json's encoders (one rule for
//! the `json` and `ndjson` formats, at any nesting depth):
//!
//! - Floating-point `NaN`, `Infinity` and `-Infinity` become the strings `"NaN"`, `"Infinity"`
//!   and `"-Infinity"` (arrow-json writes `null`, which silently turns a value into a missing
//!   one). Finite numbers are written exactly as arrow-json writes them.
//! - A `MAP` whose keys are strings stays a JSON object; any other map (integer, date, struct
//!   or null keys) becomes an array of `{"key": …, "value": …}` objects in the map's order,
//!   since JSON object keys can only be strings (arrow-json refuses such maps).
//! - A decimal is a JSON number with all its digits. Arrow prints a zero of a negative scale
//!   as `0000`, which is not JSON; such text is written as a valid number.

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, AsArray, MapArray, PrimitiveArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, FieldRef, Float16Type, Float32Type, Float64Type,
};
use arrow::error::ArrowError;
use arrow::json::writer::{Encoder, EncoderFactory, EncoderOptions, NullableEncoder};
use arrow::util::display::{ArrayFormatter, FormatOptions};

/// The encoder factory of every JSON result.
pub(crate) fn factory() -> Arc<dyn EncoderFactory> {
    static FACTORY: LazyLock<Arc<dyn EncoderFactory>> =
        LazyLock::new(|| Arc::new(JsonValues) as Arc<dyn EncoderFactory>);
    Arc::clone(&FACTORY)
}

/// Options without the factory: arrow-json's own encoding, for the finite numbers.
static PLAIN: LazyLock<EncoderOptions> = LazyLock::new(EncoderOptions::default);

#[derive(Debug)]
struct JsonValues;

impl EncoderFactory for JsonValues {
    fn make_default_encoder<'a>(
        &self,
        field: &'a FieldRef,
        array: &'a dyn Array,
        options: &'a EncoderOptions,
    ) -> Result<Option<NullableEncoder<'a>>, ArrowError> {
        let nulls = array.nulls().cloned();
        let encoder: Box<dyn Encoder + 'a> = match array.data_type() {
            DataType::Float16 => float(field, array.as_primitive::<Float16Type>(), |v| v.to_f64())?,
            DataType::Float32 => float(field, array.as_primitive::<Float32Type>(), f64::from)?,
            DataType::Float64 => float(field, array.as_primitive::<Float64Type>(), |v| v)?,
            DataType::Map(entries, _) if !string_keyed(entries) => {
                Box::new(EntriesEncoder::try_new(field, array.as_map(), options)?)
            }
            DataType::Decimal32(_, scale)
            | DataType::Decimal64(_, scale)
            | DataType::Decimal128(_, scale)
            | DataType::Decimal256(_, scale)
                if *scale < 0 =>
            {
                Box::new(DecimalEncoder(ArrayFormatter::try_new(
                    array,
                    &FormatOptions::default(),
                )?))
            }
            _ => return Ok(None),
        };
        Ok(Some(NullableEncoder::new(encoder, nulls)))
    }
}

fn string_keyed(entries: &FieldRef) -> bool {
    match entries.data_type() {
        DataType::Struct(fields) => fields.first().is_some_and(|key| {
            matches!(
                key.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        }),
        _ => false,
    }
}

fn float<'a, T: ArrowPrimitiveType>(
    field: &'a FieldRef,
    array: &'a PrimitiveArray<T>,
    as_f64: fn(T::Native) -> f64,
) -> Result<Box<dyn Encoder + 'a>, ArrowError> {
    let finite = arrow::json::writer::make_encoder(field, array, &PLAIN)?;
    Ok(Box::new(FloatEncoder {
        array,
        as_f64,
        finite,
    }))
}

struct FloatEncoder<'a, T: ArrowPrimitiveType> {
    array: &'a PrimitiveArray<T>,
    as_f64: fn(T::Native) -> f64,
    finite: NullableEncoder<'a>,
}

impl<T: ArrowPrimitiveType> Encoder for FloatEncoder<'_, T> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let value = (self.as_f64)(self.array.value(idx));
        if value.is_nan() {
            out.extend_from_slice(b"\"NaN\"");
        } else if value == f64::INFINITY {
            out.extend_from_slice(b"\"Infinity\"");
        } else if value == f64::NEG_INFINITY {
            out.extend_from_slice(b"\"-Infinity\"");
        } else {
            self.finite.encode(idx, out);
        }
    }
}

/// A decimal as a JSON number: Arrow's text without the leading zeros JSON forbids.
struct DecimalEncoder<'a>(ArrayFormatter<'a>);

impl Encoder for DecimalEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let text = self.0.value(idx).to_string();
        out.extend_from_slice(json_number(&text).as_bytes());
    }
}

/// `text` (digits with an optional sign and fraction) as a valid JSON number.
fn json_number(text: &str) -> String {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let zero = whole == "0" && fraction.bytes().all(|b| b == b'0');
    let sign = if zero { "" } else { sign };
    if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

/// A map as `[{"key": k, "value": v}, …]`.
struct EntriesEncoder<'a> {
    offsets: OffsetBuffer<i32>,
    keys: NullableEncoder<'a>,
    values: NullableEncoder<'a>,
}

impl<'a> EntriesEncoder<'a> {
    fn try_new(
        field: &'a FieldRef,
        array: &'a MapArray,
        options: &'a EncoderOptions,
    ) -> Result<Self, ArrowError> {
        Ok(Self {
            offsets: array.offsets().clone(),
            keys: arrow::json::writer::make_encoder(field, array.keys(), options)?,
            values: arrow::json::writer::make_encoder(field, array.values(), options)?,
        })
    }
}

impl Encoder for EntriesEncoder<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        let (start, end) = (self.offsets[idx], self.offsets[idx + 1]);
        out.push(b'[');
        for (n, entry) in (start..end).enumerate() {
            // Offsets of a valid map array are non-negative.
            let entry = usize::try_from(entry).unwrap_or_default();
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"key\":");
            write_value(&mut self.keys, entry, out);
            out.extend_from_slice(b",\"value\":");
            write_value(&mut self.values, entry, out);
            out.push(b'}');
        }
        out.push(b']');
    }
}

fn write_value(encoder: &mut NullableEncoder<'_>, idx: usize, out: &mut Vec<u8>) {
    if encoder.is_null(idx) {
        out.extend_from_slice(b"null");
    } else {
        encoder.encode(idx, out);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Float32Array, Float64Array, Int32Array, Int32Builder, ListArray, MapBuilder,
        RecordBatch, StringBuilder,
    };
    use arrow::datatypes::Float64Type;

    fn json(columns: Vec<(&str, ArrayRef)>) -> serde_json::Value {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut buf = Vec::new();
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .with_encoder_factory(super::factory())
            .build::<_, arrow::json::writer::JsonArray>(&mut buf);
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        serde_json::from_slice(&buf).unwrap()
    }

    #[test]
    fn non_finite_floats_are_strings_and_finite_ones_numbers() {
        let doubles = Float64Array::from(vec![
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
            Some(1.5),
            None,
            Some(-0.0),
        ]);
        let floats = Float32Array::from(vec![
            Some(f32::NAN),
            Some(f32::INFINITY),
            Some(f32::NEG_INFINITY),
            Some(0.25),
            None,
            Some(3.0),
        ]);
        let out = json(vec![
            ("d", Arc::new(doubles) as ArrayRef),
            ("f", Arc::new(floats) as ArrayRef),
        ]);
        let column = |name: &str| -> Vec<serde_json::Value> {
            out.as_array()
                .unwrap()
                .iter()
                .map(|row| row[name].clone())
                .collect()
        };
        let expected = serde_json::json!(["NaN", "Infinity", "-Infinity"]);
        assert_eq!(column("d")[..3], expected.as_array().unwrap()[..]);
        assert_eq!(column("f")[..3], expected.as_array().unwrap()[..]);
        assert_eq!(column("d")[3], serde_json::json!(1.5));
        assert_eq!(column("f")[3], serde_json::json!(0.25));
        assert!(column("d")[4].is_null() && column("f")[4].is_null());
        assert_eq!(column("d")[5].as_f64(), Some(0.0));
        assert_eq!(column("f")[5], serde_json::json!(3.0));
    }

    #[test]
    fn floats_inside_lists_follow_the_same_rule() {
        let list = ListArray::from_iter_primitive::<Float64Type, _, _>(vec![
            Some(vec![Some(f64::NAN), Some(2.0), None]),
            None,
        ]);
        let out = json(vec![("l", Arc::new(list) as ArrayRef)]);
        assert_eq!(
            out,
            serde_json::json!([{"l": ["NaN", 2.0, null]}, {"l": null}])
        );
    }

    #[test]
    fn maps_with_string_keys_are_objects_and_others_entry_lists() {
        let mut by_name = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
        by_name.keys().append_value("a");
        by_name.values().append_value(1);
        by_name.append(true).unwrap();
        by_name.append(false).unwrap();
        let mut by_number = MapBuilder::new(None, Int32Builder::new(), StringBuilder::new());
        by_number.keys().append_value(7);
        by_number.values().append_value("seven");
        by_number.keys().append_value(8);
        by_number.values().append_null();
        by_number.append(true).unwrap();
        by_number.append(true).unwrap();
        let out = json(vec![
            ("s", Arc::new(by_name.finish()) as ArrayRef),
            ("n", Arc::new(by_number.finish()) as ArrayRef),
        ]);
        assert_eq!(
            out,
            serde_json::json!([
                {"s": {"a": 1}, "n": [{"key": 7, "value": "seven"}, {"key": 8, "value": null}]},
                {"s": null, "n": []},
            ])
        );
    }

    #[test]
    fn decimals_of_negative_scale_are_valid_numbers() {
        use arrow::array::Decimal128Array;
        let decimals = Decimal128Array::from(vec![Some(0), Some(4), Some(-5), None])
            .with_precision_and_scale(10, -3)
            .unwrap();
        let out = json(vec![("d", Arc::new(decimals) as ArrayRef)]);
        assert_eq!(
            out,
            serde_json::json!([{"d": 0}, {"d": 4000}, {"d": -5000}, {"d": null}])
        );
        assert_eq!(super::json_number("-0000"), "0");
        assert_eq!(super::json_number("007.50"), "7.50");
        assert_eq!(super::json_number("-0.25"), "-0.25");
    }

    #[test]
    fn other_types_are_left_to_arrow() {
        let out = json(vec![(
            "i",
            Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef,
        )]);
        assert_eq!(out, serde_json::json!([{"i": 1}, {"i": null}]));
    }
}
