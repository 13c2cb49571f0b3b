//! JSON query parameters to SQL values.

use datafusion::common::ScalarValue;

/// A JSON value as a SQL parameter value: integers become `BIGINT`, other numbers `DOUBLE`,
/// strings `VARCHAR`, booleans `BOOLEAN`, `null` a typed-later NULL.
pub(crate) fn json_to_scalar(v: &serde_json::Value) -> Result<ScalarValue, String> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => ScalarValue::Null,
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int64(Some(i))
            } else if let Some(u) = n.as_u64() {
                ScalarValue::UInt64(Some(u))
            } else if let Some(f) = n.as_f64() {
                ScalarValue::Float64(Some(f))
            } else {
                return Err(format!("number {n} is out of range"));
            }
        }
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Array(_) | Value::Object(_) => {
            return Err(
                "arrays and objects are not supported; pass a number, string, boolean or null"
                    .into(),
            );
        }
    })
}
