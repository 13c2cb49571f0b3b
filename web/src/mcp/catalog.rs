//! The caller's catalog and metrics in the shapes an assistant reads ([`TableInfo`],
//! [`MetricInfo`]): from the same listing as `GET /api/v1/catalog` and `GET /api/v1/metrics`,
//! so the MCP tools and the laptop's docs can show nothing those would not.

use dataport_engine::Principal;
use dataport_mcp::{ColumnInfo, ForeignKeyInfo, MetricInfo, ProfileBrief, TableInfo};

use crate::catalog::{TableBody, catalog_body};
use crate::{AppState, request_context};

/// RFC 3339 (UTC, seconds) of Unix milliseconds.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    dataport_memory::knowledge::rfc3339(ms)
}

fn table_info(t: TableBody) -> TableInfo {
    TableInfo {
        foreign_keys: t
            .foreign_keys
            .into_iter()
            .map(|fk| ForeignKeyInfo {
                columns: fk.columns,
                references: format!("{}.{}", fk.references.schema, fk.references.table),
                referenced_columns: fk.references.columns,
                description: fk.description,
            })
            .collect(),
        columns: t
            .columns
            .into_iter()
            .map(|c| ColumnInfo {
                name: c.name,
                data_type: c.data_type,
                nullable: c.nullable,
                description: c.description,
            })
            .collect(),
        profile: t.profile.map(|p| ProfileBrief {
            computed_at: rfc3339_ms(p.computed_at.saturating_mul(1000)),
            row_count: p.row_count,
            avg_completeness_pct: (p.avg_completeness * 100.0).round() / 100.0,
            stale: p.stale,
            alerts: p
                .alerts
                .iter()
                .map(|(kind, n)| format!("{kind} on {n} column{}", if *n == 1 { "" } else { "s" }))
                .collect(),
        }),
        updated_at: t.updated_at_ms.map(rfc3339_ms),
        schema: t.schema,
        name: t.name,
        description: t.description,
        row_count: t.row_count,
        primary_key: t.primary_key,
        partition_columns: t.partition_columns,
    }
}

/// Every table `principal` may read, as they may see it, in catalog order.
pub(crate) fn tables(state: &AppState, principal: &Principal, request_id: &str) -> Vec<TableInfo> {
    catalog_body(state, principal, request_id)
        .schemas
        .into_iter()
        .flat_map(|s| s.tables)
        .map(table_info)
        .collect()
}

/// The business metrics `principal` may run.
pub(crate) fn metrics(
    state: &AppState,
    principal: &Principal,
    request_id: &str,
) -> Vec<MetricInfo> {
    let ctx = request_context(principal, request_id);
    state
        .engine
        .business_metrics(&ctx)
        .into_iter()
        .map(|m| MetricInfo {
            name: m.name.clone(),
            description: m.description.clone(),
            table: format!("{}.{}", m.schema, m.table),
            expression: m.expression.clone(),
            filter: m.filter.clone(),
            time_column: m.time_column.clone(),
            grain: m.grain.map(|g| g.as_str().to_string()),
            dimensions: m.dimensions.clone(),
            owner: m.owner.clone(),
        })
        .collect()
}
