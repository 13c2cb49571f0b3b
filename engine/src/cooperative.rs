//! Making every operator yield, so a cancelled or timed-out query really stops.
//!
//! Dropping a query's stream aborts its tasks, but a tokio task only notices at its next
//! `Pending`. DataFusion makes leaves (scans) and exchanges cooperative; an operator that
//! produces many batches from one input batch (a nested-loop join emitting the cross product of
//! a probe batch with the whole build side, a wide `UNNEST`) can then run for minutes without
//! touching the budget, and the aborted query keeps a core busy long after the client was told
//! it stopped. Wrapping every operator's output in `CooperativeExec` spends tokio's budget per
//! batch everywhere, so each task yields every 128 batches and an abort takes effect at once.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;

/// `plan` with a `CooperativeExec` above every operator that has inputs and is not one already.
pub(crate) fn everywhere(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let already = node.is::<CooperativeExec>();
        if already || node.children().is_empty() {
            return Ok(Transformed::no(node));
        }
        Ok(Transformed::yes(Arc::new(CooperativeExec::new(node))))
    })
    .map(|t| t.data)
}
