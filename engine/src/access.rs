//! Table access: the one place that decides what a principal may read.
//!
//! Rules, in order:
//! 1. `data-ops` (administrators) and `data-private` read every table.
//! 2. `dataread` reads every table not marked `access: private` in `data_description.md`.
//! 3. Grants give a group a table (or every table of a schema), possibly only some rows (a
//!    row filter) and without some columns (hidden columns). Several grants of one principal
//!    on one table combine safely: rows matching any of their filters, and only the columns
//!    that none of them hides; a grant without filter or hidden columns gives the whole
//!    table.
//! 4. A grant that cannot be applied (its row filter no longer fits the table) gives
//!    nothing, and says so in the log.
//! 5. Anything else does not exist for the principal: same error, same listings, as a table
//!    that is not there.
//!
//! The result is a [`TableFilter`] for the caller's catalog view, which every surface plans
//! and lists through, so SQL, `information_schema`, Flight metadata and the HTTP catalog
//! cannot disagree.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, ExprSchemable, or};
use dataport_auth::{DATA_PRIVATE, DATAREAD, Grant, Principal};
use dataport_catalog::{CatalogTable, TableAccess, TableFilter};

/// The table filter of `principal`, given the current grants. `state` parses row filters.
pub(crate) fn table_filter(
    principal: &Principal,
    grants: Arc<[Grant]>,
    state: Arc<SessionState>,
) -> TableFilter {
    if principal.admin || principal.in_group(DATA_PRIVATE) {
        return Arc::new(|_: &CatalogTable| TableAccess::Full);
    }
    let reads_public = principal.in_group(DATAREAD);
    let groups = principal.groups.clone();
    Arc::new(move |table: &CatalogTable| {
        if reads_public && !table.is_private() {
            return TableAccess::Full;
        }
        let applicable: Vec<&Grant> = grants
            .iter()
            .filter(|g| {
                groups.contains(&g.group)
                    && g.schema == table.schema_name()
                    && g.table.as_deref().is_none_or(|t| t == table.name())
            })
            .collect();
        combine(&applicable, table, &state)
    })
}

fn combine(grants: &[&Grant], table: &CatalogTable, state: &SessionState) -> TableAccess {
    if grants.is_empty() {
        return TableAccess::Denied;
    }
    if grants
        .iter()
        .any(|g| g.row_filter.is_none() && g.hidden_columns.is_empty())
    {
        return TableAccess::Full;
    }
    let schema = table.arrow_schema();
    let mut hidden: Vec<String> = grants
        .iter()
        .flat_map(|g| g.hidden_columns.iter())
        .filter(|c| schema.field_with_name(c).is_ok())
        .cloned()
        .collect();
    hidden.sort();
    hidden.dedup();
    if hidden.len() == schema.fields().len() {
        return broken(table, "the grants hide every column");
    }
    // A grant without a row filter shares every row.
    let row_filter = if grants.iter().any(|g| g.row_filter.is_none()) {
        None
    } else {
        let df_schema = match DFSchema::try_from(schema.as_ref().clone()) {
            Ok(s) => s,
            Err(e) => return broken(table, &e.to_string()),
        };
        let mut combined: Option<Expr> = None;
        for g in grants {
            let sql = g.row_filter.as_deref().unwrap_or("true");
            match parse_row_filter(sql, &df_schema, state) {
                Ok(e) => combined = Some(combined.map_or(e.clone(), |c| or(c, e))),
                Err(reason) => {
                    return broken(table, &format!("row filter of group {}: {reason}", g.group));
                }
            }
        }
        combined
    };
    TableAccess::Restricted {
        row_filter,
        hidden_columns: hidden,
    }
}

/// A grant that cannot be applied (a row filter that no longer fits the table) shares
/// nothing: the table is denied, never served with more than granted.
fn broken(table: &CatalogTable, reason: &str) -> TableAccess {
    tracing::warn!(table = %table.qualified_name(), reason, "a grant cannot be applied; the table is withheld (fix it with dataport grant)");
    TableAccess::Denied
}

/// Parse a row filter against the columns of a table. Refuses what is not a plain predicate
/// over the row (subqueries, aggregates, window functions).
pub(crate) fn parse_row_filter(
    sql: &str,
    schema: &DFSchema,
    state: &SessionState,
) -> Result<Expr, String> {
    let expr = state
        .create_logical_expr(sql, schema)
        .map_err(|e| e.strip_backtrace())?;
    let mut problem = None;
    let _ = expr.apply(|e| {
        let bad = match e {
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) => Some("a subquery"),
            Expr::AggregateFunction(_) => Some("an aggregate"),
            Expr::WindowFunction(_) => Some("a window function"),
            Expr::Placeholder(_) => Some("a parameter"),
            _ => None,
        };
        if let Some(b) = bad {
            problem = Some(b);
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if let Some(p) = problem {
        return Err(format!("a row filter cannot contain {p}"));
    }
    match expr.get_type(schema) {
        Ok(arrow::datatypes::DataType::Boolean) | Ok(arrow::datatypes::DataType::Null) => Ok(expr),
        Ok(other) => Err(format!(
            "a row filter must be true or false per row, not {other}"
        )),
        Err(e) => Err(e.strip_backtrace()),
    }
}
