//! Type stage: each file's columns normalized and checked, and the one schema of a run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::convert::Outcome;
use super::discover::DropFile;
use super::read::Probe;
use crate::error::{ConnectorError, Result};
use crate::sink::SEQ_COLUMN;
use crate::typed::undeclared_column;

/// Nullable fields; timestamps in microseconds (as declared types are), strings as `Utf8`.
pub(super) fn normalized(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Timestamp(_, tz) => {
                    DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
                }
                DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
                other => other.clone(),
            };
            Field::new(f.name(), t, true)
        })
        .collect();
    Schema::new(fields)
}

/// A file must name its columns, each once.
pub(super) fn check_names(table: &str, path: &Path, schema: &Schema) -> Result<()> {
    let problem = |message: String| ConnectorError::decode(table, path, message);
    if schema.fields().is_empty() {
        return Err(problem(
            "the file has no columns (it is empty; a CSV file needs a header row naming its columns)"
                .into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if f.name().trim().is_empty() {
            return Err(problem(format!("column {} has no name", i + 1)));
        }
        if f.name() == SEQ_COLUMN {
            return Err(problem(format!(
                "the column name '{SEQ_COLUMN}' is reserved"
            )));
        }
        if !seen.insert(f.name().as_str()) {
            return Err(problem(format!("column '{}' appears twice", f.name())));
        }
    }
    Ok(())
}

/// Every declared column, and the primary key, must be in the file.
pub(super) fn check_columns(
    table: &str,
    file: &DropFile,
    schema: &Schema,
    declared: &BTreeMap<String, DataType>,
    key: &[String],
) -> Result<()> {
    let has = |c: &str| schema.field_with_name(c).is_ok();
    let names = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(column) = undeclared_column(declared, has) {
        return Err(ConnectorError::Table {
            table: table.to_string(),
            message: format!(
                "data_description.md declares column_types for '{column}', which {} does not have (it has: {})",
                file.name,
                names()
            ),
        });
    }
    for column in key {
        if !has(column.as_str()) {
            return Err(ConnectorError::Table {
                table: table.to_string(),
                message: format!(
                    "primary key column '{column}' is missing from {} (it has: {})",
                    file.name,
                    names()
                ),
            });
        }
    }
    Ok(())
}

/// The schema every file of the run is converted to: columns in order of first appearance;
/// declared types win; otherwise the inferred types of all files unified, and in a merge the
/// stored type unless the inferred one widens it. All-empty columns are text.
pub(super) fn final_schema<'a>(
    schemas: impl Iterator<Item = &'a Schema>,
    declared: &BTreeMap<String, DataType>,
    stored: Option<&Schema>,
) -> SchemaRef {
    let mut order: Vec<String> = Vec::new();
    let mut types: HashMap<String, DataType> = HashMap::new();
    for schema in schemas {
        for f in schema.fields() {
            match types.get_mut(f.name()) {
                Some(t) => *t = unify(t, f.data_type()),
                None => {
                    order.push(f.name().clone());
                    types.insert(f.name().clone(), f.data_type().clone());
                }
            }
        }
    }
    let fields: Vec<Field> = order
        .into_iter()
        .map(|name| {
            let inferred = types.remove(&name).unwrap_or(DataType::Null);
            let t = match declared.get(&name) {
                Some(t) => t.clone(),
                None => match stored.and_then(|s| s.field_with_name(&name).ok()) {
                    Some(s)
                        if inferred != DataType::Null
                            && (*s.data_type() == inferred
                                || crate::sink::widens(s.data_type(), &inferred)) =>
                    {
                        inferred
                    }
                    Some(s) => s.data_type().clone(),
                    None if inferred == DataType::Null => DataType::Utf8,
                    None => inferred,
                },
            };
            Field::new(name, t, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The type holding values of both: integers widen to floats, dates to timestamps, anything
/// else that differs is text.
fn unify(a: &DataType, b: &DataType) -> DataType {
    let number = |t: &DataType| t.is_integer() || t.is_floating();
    match (a, b) {
        _ if a == b => a.clone(),
        (DataType::Null, other) | (other, DataType::Null) => other.clone(),
        _ if a.is_integer() && b.is_integer() => DataType::Int64,
        _ if number(a) && number(b) => DataType::Float64,
        (DataType::Date32, t @ DataType::Timestamp(_, _))
        | (t @ DataType::Timestamp(_, _), DataType::Date32) => t.clone(),
        _ => DataType::Utf8,
    }
}

/// The types of every row of the files converted so far: those a conversion inferred, else
/// the probe's (which then saw every row). Files that failed have none.
pub(super) fn whole_schemas(probed: &[(DropFile, Probe)], outcomes: &[Outcome]) -> Vec<Schema> {
    probed
        .iter()
        .zip(outcomes)
        .filter_map(|((_, probe), outcome)| match outcome {
            Some(Ok(done)) => Some(
                done.inferred
                    .as_ref()
                    .map_or_else(|| probe.schema.clone(), normalized),
            ),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_unify_and_follow_the_stored_table() {
        assert_eq!(
            unify(&DataType::Int64, &DataType::Float64),
            DataType::Float64
        );
        assert_eq!(unify(&DataType::Null, &DataType::Date32), DataType::Date32);
        assert_eq!(unify(&DataType::Boolean, &DataType::Int64), DataType::Utf8);
        let a = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("x", DataType::Null, true),
            Field::new("v", DataType::Float64, true),
        ]);
        let stored = Schema::new(vec![
            Field::new("id", DataType::Float64, false),
            Field::new("v", DataType::Int64, false),
        ]);
        let declared = BTreeMap::from([("code".to_string(), DataType::Utf8)]);
        let s = final_schema([&a].into_iter(), &declared, Some(&stored));
        let types: Vec<&DataType> = s.fields().iter().map(|f| f.data_type()).collect();
        // The stored float holds the inferred integers; the float widens the stored integers.
        assert_eq!(
            types,
            vec![&DataType::Float64, &DataType::Utf8, &DataType::Float64]
        );
        assert!(s.fields().iter().all(|f| f.is_nullable()));
    }
}
