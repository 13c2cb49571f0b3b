//! Cardinality estimates for choosing each hash join's build side.
//!
//! DataFusion puts the side it estimates smaller on a hash join's build side. Its default
//! estimates know nothing past a join (the output of a join has no row count), so a join whose
//! other input is small but derived (a `HAVING` filter over an aggregate, TPC-H q18) keeps the
//! six-million-row side as the build side and spends seconds hashing it. DataFusion's
//! statistics registry (`datafusion.optimizer.use_statistics_registry`) estimates through
//! filters, aggregates and joins, but for an equi-join whose key columns have no distinct count
//! it falls back to the Cartesian product of the inputs, which turns the build side the wrong
//! way for ordinary key joins (TPC-H q3, q5, q21).
//!
//! Two providers sit in front of the registry's own:
//! - [`ResidentStatistics`] gives the scans of in-memory tables the distinct counts estimated
//!   when they were loaded (`dataport_catalog::memory`). With them the registry's filter,
//!   aggregate and join estimates work as designed.
//! - [`KeyJoinStatistics`] covers join keys that still have no distinct count (tables read from
//!   Parquet, computed columns): it estimates a key/foreign-key join, where each row of the
//!   larger side finds at most one partner, instead of the cross product.

use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::{HashJoinExec, SortMergeJoinExec};
use datafusion::physical_plan::operator_statistics::{
    ExtendedStatistics, JoinStatisticsProvider, StatisticsProvider, StatisticsRegistry,
    StatisticsResult,
};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use dataport_catalog::CatalogSnapshot;
use std::sync::Arc;

/// The registry a query on `snapshot` plans with: DataFusion's built-in providers behind
/// [`ResidentStatistics`] and [`KeyJoinStatistics`].
pub(crate) fn registry(snapshot: Arc<CatalogSnapshot>) -> StatisticsRegistry {
    let mut registry = with_key_joins();
    registry.register(Arc::new(ResidentStatistics { snapshot }));
    registry
}

/// DataFusion's built-in providers behind [`KeyJoinStatistics`].
fn with_key_joins() -> StatisticsRegistry {
    let mut registry = StatisticsRegistry::default_with_builtin_providers();
    registry.register(Arc::new(KeyJoinStatistics));
    registry
}

/// A scan of an in-memory table, with the distinct counts estimated when it was loaded.
#[derive(Debug)]
pub(crate) struct ResidentStatistics {
    snapshot: Arc<CatalogSnapshot>,
}

impl StatisticsProvider for ResidentStatistics {
    fn compute_statistics(
        &self,
        plan: &dyn ExecutionPlan,
        _child_stats: &[ExtendedStatistics],
    ) -> Result<StatisticsResult> {
        let Some(memory) = plan
            .downcast_ref::<DataSourceExec>()
            .and_then(|exec| exec.data_source().downcast_ref::<MemorySourceConfig>())
        else {
            return Ok(StatisticsResult::Delegate);
        };
        let Some(distinct) = self
            .snapshot
            .resident_distinct_counts_for(&memory.original_schema())
        else {
            return Ok(StatisticsResult::Delegate);
        };
        let mut stats =
            Arc::unwrap_or_clone(StatisticsContext::new().compute(plan, &StatisticsArgs::new())?);
        let columns: Vec<usize> = match memory.projection() {
            Some(p) => p.clone(),
            None => (0..distinct.len()).collect(),
        };
        for (column_stats, table_column) in stats.column_statistics.iter_mut().zip(columns) {
            if let Some(&Some(n)) = distinct.get(table_column)
                && column_stats.distinct_count.get_value().is_none()
            {
                column_stats.distinct_count = Precision::Inexact(n);
            }
        }
        Ok(StatisticsResult::Computed(ExtendedStatistics::new(stats)))
    }
}

/// Equi-join estimates that treat a join without distinct counts as a key/foreign-key join.
#[derive(Debug, Default)]
pub(crate) struct KeyJoinStatistics;

impl StatisticsProvider for KeyJoinStatistics {
    fn compute_statistics(
        &self,
        plan: &dyn ExecutionPlan,
        child_stats: &[ExtendedStatistics],
    ) -> Result<StatisticsResult> {
        let on = if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
            join.on()
        } else if let Some(join) = plan.downcast_ref::<SortMergeJoinExec>() {
            join.on()
        } else {
            return Ok(StatisticsResult::Delegate);
        };
        let [left, right] = child_stats else {
            return Ok(StatisticsResult::Delegate);
        };
        let (Some(&left_rows), Some(&right_rows)) = (
            left.base().num_rows.get_value(),
            right.base().num_rows.get_value(),
        ) else {
            return Ok(StatisticsResult::Delegate);
        };
        let mut filled = [left.base().clone(), right.base().clone()];
        for (i, (left_key, right_key)) in on.iter().enumerate() {
            let left_ndv = distinct_count(&filled[0], left_key);
            let right_ndv = distinct_count(&filled[1], right_key);
            let (left_fill, right_fill) = match (left_ndv, right_ndv) {
                // The columns of a composite key together form the key: the first carries it,
                // the others do not divide the estimate again.
                (None, None) if i > 0 => (1, 1),
                _ => (
                    left_rows.min(right_ndv.unwrap_or(right_rows)),
                    right_rows.min(left_ndv.unwrap_or(left_rows)),
                ),
            };
            set_distinct_count(&mut filled[0], left_key, left_ndv.unwrap_or(left_fill));
            set_distinct_count(&mut filled[1], right_key, right_ndv.unwrap_or(right_fill));
        }
        let [l, r] = filled;
        let mut filled = [ExtendedStatistics::new(l), ExtendedStatistics::new(r)];
        filled[0].merge_extensions(left);
        filled[1].merge_extensions(right);
        JoinStatisticsProvider.compute_statistics(plan, &filled)
    }
}

/// The known distinct count of a plain column key.
fn distinct_count(stats: &Statistics, key: &PhysicalExprRef) -> Option<usize> {
    let column = key.downcast_ref::<Column>()?;
    let count = *stats
        .column_statistics
        .get(column.index())?
        .distinct_count
        .get_value()?;
    (count > 0).then_some(count)
}

/// Gives a plain column key `count` as its distinct count when it has none.
fn set_distinct_count(stats: &mut Statistics, key: &PhysicalExprRef, count: usize) {
    let Some(column) = key.downcast_ref::<Column>() else {
        return;
    };
    if let Some(column_stats) = stats.column_statistics.get_mut(column.index())
        && column_stats
            .distinct_count
            .get_value()
            .is_none_or(|&n| n == 0)
    {
        column_stats.distinct_count = Precision::Inexact(count.max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::{JoinType, NullEquality};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::joins::PartitionMode;

    fn table(name: &str, rows: i64) -> Arc<dyn ExecutionPlan> {
        let second = format!("{name}2");
        let schema = Arc::new(Schema::new(vec![
            Field::new(name, DataType::Int64, false),
            Field::new(second, DataType::Int64, false),
        ]));
        let column: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows));
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::clone(&column), column]).unwrap();
        MemorySourceConfig::try_new_exec(&[vec![batch]], schema, None).unwrap()
    }

    /// `left` and `right` rows joined on the first `keys` columns of each.
    fn join(left: i64, right: i64, keys: usize) -> Arc<dyn ExecutionPlan> {
        let (l, r) = (table("a", left), table("b", right));
        let on = (0..keys)
            .map(|i| {
                let name = |table: &str| match i {
                    0 => table.to_string(),
                    _ => format!("{table}2"),
                };
                (
                    Arc::new(Column::new(&name("a"), i)) as PhysicalExprRef,
                    Arc::new(Column::new(&name("b"), i)) as PhysicalExprRef,
                )
            })
            .collect();
        Arc::new(
            HashJoinExec::try_new(
                l,
                r,
                on,
                None,
                &JoinType::Inner,
                None,
                PartitionMode::CollectLeft,
                NullEquality::NullEqualsNothing,
                false,
            )
            .unwrap(),
        )
    }

    fn estimated_rows(registry: &StatisticsRegistry, plan: &dyn ExecutionPlan) -> Option<usize> {
        registry
            .compute(plan)
            .unwrap()
            .base()
            .num_rows
            .get_value()
            .copied()
    }

    #[test]
    fn a_key_join_is_estimated_as_its_larger_side_not_the_cross_product() {
        let builtin = StatisticsRegistry::default_with_builtin_providers();
        let plan = join(1000, 30, 1);
        assert_eq!(estimated_rows(&builtin, plan.as_ref()), Some(30_000));
        assert_eq!(estimated_rows(&with_key_joins(), plan.as_ref()), Some(1000));
        let plan = join(30, 1000, 1);
        assert_eq!(estimated_rows(&with_key_joins(), plan.as_ref()), Some(1000));
    }

    #[test]
    fn a_composite_key_divides_once() {
        let plan = join(1000, 30, 2);
        assert_eq!(estimated_rows(&with_key_joins(), plan.as_ref()), Some(1000));
    }

    #[test]
    fn other_operators_keep_the_builtin_estimates() {
        let scan = table("a", 500);
        assert_eq!(estimated_rows(&with_key_joins(), scan.as_ref()), Some(500));
    }
}
