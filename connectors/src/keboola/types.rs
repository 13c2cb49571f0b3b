//! Column types and descriptions from Keboola column metadata.
//!
//! Type: key `KBC.datatype.basetype`, else `KBC.datatype.type`; among several providers,
//! `user` wins, then `ai-metadata-enrichment`, then `keboola.snowflake-transformation`, then
//! any other; no type means STRING. A NUMERIC/DECIMAL with `KBC.datatype.length` `p,s`
//! (p ≤ 38) becomes a decimal, otherwise Float64.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

pub use crate::typed::map_type;
use serde::Deserialize;

/// One metadata entry of a column.
#[derive(Debug, Clone, Deserialize)]
pub struct MetadataEntry {
    pub key: String,
    #[serde(default)]
    pub value: serde_json::Value,
    #[serde(default)]
    pub provider: String,
}

/// `columnMetadata`: an object by column, or `[]` when there is none.
#[derive(Debug, Clone, Default)]
pub struct ColumnMetadata(pub BTreeMap<String, Vec<MetadataEntry>>);

impl<'de> Deserialize<'de> for ColumnMetadata {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Map(BTreeMap<String, Vec<MetadataEntry>>),
            List(Vec<serde_json::Value>),
        }
        match Raw::deserialize(d)? {
            Raw::Map(m) => Ok(Self(m)),
            Raw::List(l) if l.is_empty() => Ok(Self::default()),
            Raw::List(_) => Err(serde::de::Error::custom(
                "columnMetadata is a non-empty list; expected an object by column",
            )),
        }
    }
}

impl ColumnMetadata {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `key` for `column` from the most trusted provider.
    fn value(&self, column: &str, key: &str) -> Option<String> {
        let entries = self.0.get(column)?;
        entries
            .iter()
            .filter(|e| e.key == key)
            .min_by_key(|e| provider_rank(&e.provider))
            .map(|e| match &e.value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    }

    /// The Arrow type of `column`.
    pub fn data_type(&self, column: &str) -> DataType {
        let base = self
            .value(column, "KBC.datatype.basetype")
            .or_else(|| self.value(column, "KBC.datatype.type"));
        let length = self.value(column, "KBC.datatype.length");
        map_type(base.as_deref().unwrap_or("STRING"), length.as_deref())
    }

    /// `KBC.description` of `column`.
    pub fn description(&self, column: &str) -> Option<String> {
        self.value(column, "KBC.description")
            .filter(|d| !d.trim().is_empty())
    }
}

fn provider_rank(provider: &str) -> u8 {
    match provider {
        "user" => 0,
        "ai-metadata-enrichment" => 1,
        "keboola.snowflake-transformation" => 2,
        _ => 3,
    }
}

/// The typed schema of `columns` (all nullable: the source may send empty fields): the type
/// `declared` in `data_description.md`'s `column_types` where there is one, else the column
/// metadata's.
pub fn schema(
    metadata: &ColumnMetadata,
    declared: &BTreeMap<String, DataType>,
    columns: &[String],
) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| {
                let data_type = declared
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| metadata.data_type(c));
                Field::new(c, data_type, true)
            })
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    #[test]
    fn empty_list_means_no_metadata() {
        let m: ColumnMetadata = serde_json::from_str("[]").unwrap();
        assert!(m.is_empty());
        assert_eq!(m.data_type("x"), DataType::Utf8);
    }

    #[test]
    fn provider_priority_and_fallback_key() {
        let m: ColumnMetadata = serde_json::from_value(serde_json::json!({
            "amount": [
                {"key": "KBC.datatype.basetype", "value": "STRING", "provider": "keboola.snowflake-transformation"},
                {"key": "KBC.datatype.basetype", "value": "NUMERIC", "provider": "user"},
                {"key": "KBC.datatype.length", "value": "12,2", "provider": "user"},
                {"key": "KBC.description", "value": "Order total", "provider": "user"}
            ],
            "flag": [
                {"key": "KBC.datatype.basetype", "value": "STRING", "provider": "other"},
                {"key": "KBC.datatype.basetype", "value": "BOOLEAN", "provider": "ai-metadata-enrichment"}
            ],
            "at": [{"key": "KBC.datatype.type", "value": "TIMESTAMP_TZ", "provider": "x"}]
        }))
        .unwrap();
        assert_eq!(m.data_type("amount"), DataType::Decimal128(12, 2));
        assert_eq!(m.data_type("flag"), DataType::Boolean);
        assert_eq!(
            m.data_type("at"),
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
        );
        assert_eq!(m.description("amount").as_deref(), Some("Order total"));
    }

    #[test]
    fn type_names() {
        assert_eq!(map_type("bigint", None), DataType::Int64);
        assert_eq!(map_type("NUMERIC", None), DataType::Float64);
        assert_eq!(map_type("NUMBER(10,3)", None), DataType::Decimal128(10, 3));
        assert_eq!(map_type("DECIMAL", Some("40,2")), DataType::Float64);
        assert_eq!(map_type("DATE", None), DataType::Date32);
        assert_eq!(
            map_type("TIMESTAMP_NTZ", None),
            DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(map_type("VARCHAR", Some("255")), DataType::Utf8);
        assert_eq!(map_type("GEOGRAPHY", None), DataType::Utf8);
    }
}
