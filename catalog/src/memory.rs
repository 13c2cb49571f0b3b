//! In-memory acceleration: chosen tables held as Arrow next to their Parquet files.
//!
//! A table matching [`MemoryOptions::tables`] is read whole into memory after the refresh that
//! (re)loaded it, within [`MemoryOptions::budget`] bytes for all resident tables together. The
//! copy belongs to the table's [`TableData`](crate::table::TableData): a snapshot whose files
//! are unchanged shares it, and a change of files makes new data that is read again, so a
//! query sees either the old files (and their copy) or the new ones, never a mix. Until a copy
//! is complete, and for tables over the budget, queries read the Parquet files as usual.
//!
//! Tables with hive partitions stay on their files: the partition-column filters they answer
//! exactly are applied by pruning files, which a copy in memory does not have.
//!
//! Loading also estimates each key-like column's distinct values (HyperLogLog, DataFusion's
//! `approx_distinct`, one pass over the copy), which Parquet statistics lack. The engine gives
//! them to the planner with the scan's row counts ([`crate::CatalogSnapshot::resident_distinct_counts_for`]),
//! so join and aggregate estimates, and with them each hash join's build side, rest on the
//! data rather than on guesses.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryViewArray, RecordBatch, StringViewArray, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::Column;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::functions_aggregate::expr_fn::approx_distinct;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::snapshot::CatalogTable;
use crate::table::Resident;

/// Which tables to hold in memory, and how much memory they may take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryOptions {
    /// `schema.table`, `schema.*` or `*`; empty: none.
    pub tables: Vec<String>,
    /// Bytes of Arrow data for all resident tables together; 0: none.
    pub budget: u64,
}

impl MemoryOptions {
    pub fn enabled(&self) -> bool {
        self.budget > 0 && !self.tables.is_empty()
    }

    /// Whether `schema.table` is one of the chosen tables.
    pub fn wants(&self, schema: &str, table: &str) -> bool {
        self.tables.iter().any(|p| match p.split_once('.') {
            _ if p == "*" => true,
            Some((s, "*")) => s == schema,
            Some((s, t)) => s == schema && t == table,
            None => false,
        })
    }

    /// Checks the patterns' shape.
    pub fn validate(&self) -> Result<(), String> {
        for p in &self.tables {
            let ok = p == "*"
                || p.split_once('.').is_some_and(|(s, t)| {
                    !s.is_empty() && !t.is_empty() && !s.contains('*') && !t.contains('.')
                });
            if !ok {
                return Err(format!(
                    "'{p}' is not a table pattern: use schema.table, schema.* or *"
                ));
            }
        }
        Ok(())
    }
}

/// What [`crate::Catalog::load_resident`] did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ResidentReport {
    /// `schema.table` read into memory by this call.
    pub loaded: Vec<String>,
    /// Every chosen `schema.table` in memory afterwards.
    pub resident: Vec<String>,
    /// Chosen `schema.table` left on their files, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Bytes held by all resident tables of the snapshot afterwards.
    pub resident_bytes: u64,
}

/// View arrays from Parquet decoding can point into large shared buffers; a compact copy
/// holds only its own strings.
fn compact(batch: RecordBatch) -> RecordBatch {
    let needs = batch
        .columns()
        .iter()
        .any(|c| matches!(c.data_type(), DataType::Utf8View | DataType::BinaryView));
    if !needs {
        return batch;
    }
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8View => c
                .as_any()
                .downcast_ref::<StringViewArray>()
                .map_or_else(|| Arc::clone(c), |a| Arc::new(a.gc()) as ArrayRef),
            DataType::BinaryView => c
                .as_any()
                .downcast_ref::<BinaryViewArray>()
                .map_or_else(|| Arc::clone(c), |a| Arc::new(a.gc()) as ArrayRef),
            _ => Arc::clone(c),
        })
        .collect();
    RecordBatch::try_new(batch.schema(), columns).unwrap_or(batch)
}

/// Reads `table` whole through its Parquet provider, `partitions` ways.
pub(crate) async fn read(
    table: &CatalogTable,
    partitions: usize,
) -> Result<Resident, datafusion::error::DataFusionError> {
    let config = datafusion::prelude::SessionConfig::new().with_target_partitions(partitions);
    let ctx = SessionContext::new_with_config(config);
    let state = ctx.state();
    let provider = Arc::clone(&table.provider);
    let plan: Arc<dyn ExecutionPlan> =
        datafusion::catalog::TableProvider::scan(provider.as_ref(), &state, None, &[], None)
            .await?;
    let parts = datafusion::physical_plan::collect_partitioned(plan, ctx.task_ctx()).await?;
    let mut bytes = 0u64;
    let parts: Vec<Vec<RecordBatch>> = parts
        .into_iter()
        .map(|p| {
            p.into_iter()
                .filter(|b| b.num_rows() > 0)
                .map(compact)
                .inspect(|b| bytes += b.get_array_memory_size() as u64)
                .collect()
        })
        .collect();
    let distinct = match distinct_counts(&ctx, &table.arrow_schema(), &parts).await {
        Ok(d) => d,
        Err(e) => {
            // only estimates are lost: the copy serves queries all the same
            tracing::warn!(table = %table.qualified_name(), error = %e, "cannot estimate distinct values");
            vec![None; table.arrow_schema().fields().len()]
        }
    };
    Ok(Resident {
        partitions: parts,
        bytes,
        distinct: distinct.into(),
    })
}

/// Whether a column of this type gets a distinct-count estimate: the types of join and
/// grouping keys.
fn countable(data_type: &DataType) -> bool {
    data_type.is_integer()
        || matches!(
            data_type,
            DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
                | DataType::Decimal32(_, _)
                | DataType::Decimal64(_, _)
                | DataType::Decimal128(_, _)
                | DataType::Decimal256(_, _)
                | DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::BinaryView
        )
}

/// Distinct values per column of `schema` in `parts`, estimated in one aggregate pass.
async fn distinct_counts(
    ctx: &SessionContext,
    schema: &SchemaRef,
    parts: &[Vec<RecordBatch>],
) -> Result<Vec<Option<usize>>, DataFusionError> {
    let mut out = vec![None; schema.fields().len()];
    let counted: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| countable(schema.field(i).data_type()))
        .collect();
    if counted.is_empty() || parts.iter().all(Vec::is_empty) {
        return Ok(out);
    }
    let exprs: Vec<Expr> = counted
        .iter()
        .map(|&i| {
            approx_distinct(Expr::Column(Column::new_unqualified(
                schema.field(i).name(),
            )))
            .alias(format!("c{i}"))
        })
        .collect();
    let table = MemTable::try_new(Arc::clone(schema), parts.to_vec())?;
    let batches = ctx
        .read_table(Arc::new(table))?
        .aggregate(vec![], exprs)?
        .collect()
        .await?;
    if let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) {
        for (k, &i) in counted.iter().enumerate() {
            let estimate = batch
                .column(k)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .filter(|a| a.is_valid(0))
                .and_then(|a| usize::try_from(a.value(0)).ok());
            out[i] = estimate;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::MemoryOptions;

    #[test]
    fn patterns_choose_tables() {
        let o = MemoryOptions {
            tables: vec!["tpch.lineitem".into(), "sales.*".into()],
            budget: 1,
        };
        assert!(o.wants("tpch", "lineitem"));
        assert!(!o.wants("tpch", "orders"));
        assert!(o.wants("sales", "orders"));
        assert!(o.validate().is_ok());
        let all = MemoryOptions {
            tables: vec!["*".into()],
            budget: 0,
        };
        assert!(all.wants("x", "y") && !all.enabled());
        for bad in ["tpch", "*.x", "a.b.c", ".x"] {
            let o = MemoryOptions {
                tables: vec![bad.into()],
                budget: 1,
            };
            assert!(o.validate().is_err(), "{bad}");
        }
    }
}
