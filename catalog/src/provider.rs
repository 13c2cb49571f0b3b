//! The snapshot seen through DataFusion's catalog traits (read-only).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{Column, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};

use crate::error::CatalogError;
use crate::snapshot::{CatalogSnapshot, CatalogTable, ResolvedForeignKey};

/// The catalog name SQL sees.
pub const CATALOG_NAME: &str = "dataport";

/// Name of the virtual default schema that resolves unqualified table names through the
/// search path. It starts with `_`, so no data folder can ever take it.
pub const SEARCH_PATH_SCHEMA: &str = "_search_path";

/// What one caller may see of one table.
#[derive(Debug, Clone)]
pub enum TableAccess {
    /// The table does not exist for the caller.
    Denied,
    /// Every row and column.
    Full,
    /// Only rows matching `row_filter` (an expression over the table's columns), and none of
    /// `hidden_columns`.
    Restricted {
        row_filter: Option<Expr>,
        hidden_columns: Vec<String>,
    },
}

/// Decides, per caller, what each table looks like. Tables it denies do not exist for
/// that caller.
pub type TableFilter = Arc<dyn Fn(&CatalogTable) -> TableAccess + Send + Sync>;

/// One snapshot as a DataFusion catalog, filtered for one caller. Built per request; the
/// filter's answer for each table is computed once and shared by clones (listing, resolution,
/// metadata and planning all ask again).
#[derive(Clone)]
pub struct SnapshotCatalogProvider {
    snapshot: Arc<CatalogSnapshot>,
    visible: TableFilter,
    decided: Arc<Mutex<HashMap<(String, String), TableAccess>>>,
}

impl fmt::Debug for SnapshotCatalogProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotCatalogProvider")
            .field("version", &self.snapshot.version())
            .finish()
    }
}

impl SnapshotCatalogProvider {
    pub fn new(snapshot: Arc<CatalogSnapshot>, visible: TableFilter) -> Self {
        Self {
            snapshot,
            visible,
            decided: Arc::default(),
        }
    }

    /// The table `schema.name` (or unqualified through the search path) if the caller may see it.
    pub fn resolve(
        &self,
        schema: Option<&str>,
        name: &str,
    ) -> Result<Arc<CatalogTable>, CatalogError> {
        if schema.is_some() {
            let t = self.snapshot.resolve(schema, name)?;
            return if self.can_see(t) {
                Ok(Arc::clone(t))
            } else {
                Err(CatalogError::TableNotFound {
                    table: format!("{}.{}", schema.unwrap_or_default(), name),
                })
            };
        }
        let visible: Vec<&Arc<CatalogTable>> = self
            .snapshot
            .schema_names()
            .filter_map(|s| self.snapshot.table(s, name))
            .filter(|t| self.can_see(t))
            .collect();
        match visible.as_slice() {
            [] => Err(CatalogError::TableNotFound {
                table: name.to_string(),
            }),
            [one] => Ok(Arc::clone(one)),
            many => Err(CatalogError::AmbiguousTable {
                name: name.to_string(),
                candidates: many
                    .iter()
                    .map(|t| t.qualified_name())
                    .collect::<Vec<_>>()
                    .join(" and "),
            }),
        }
    }

    /// Visible tables, sorted by schema then name.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<CatalogTable>> {
        self.snapshot.tables().filter(|t| self.can_see(t))
    }

    /// What the caller may see of `table`.
    pub fn access(&self, table: &CatalogTable) -> TableAccess {
        let key = (table.schema_name().to_string(), table.name().to_string());
        let mut decided = self.decided.lock().unwrap_or_else(|p| p.into_inner());
        decided
            .entry(key)
            .or_insert_with(|| (self.visible)(table))
            .clone()
    }

    fn can_see(&self, table: &CatalogTable) -> bool {
        !matches!(self.access(table), TableAccess::Denied)
    }

    /// Whether the caller sees `table` with rows or columns withheld.
    pub fn is_restricted(&self, table: &CatalogTable) -> bool {
        matches!(self.access(table), TableAccess::Restricted { .. })
    }

    /// The columns of `table` the caller may see.
    pub fn visible_schema(&self, table: &CatalogTable) -> SchemaRef {
        let schema = table.arrow_schema();
        match self.access(table) {
            TableAccess::Restricted { hidden_columns, .. } if !hidden_columns.is_empty() => {
                Arc::new(Schema::new_with_metadata(
                    schema
                        .fields()
                        .iter()
                        .filter(|f| !hidden_columns.iter().any(|h| h == f.name()))
                        .cloned()
                        .collect::<Vec<_>>(),
                    schema.metadata().clone(),
                ))
            }
            _ => schema,
        }
    }

    /// The primary key of `table`, unless one of its columns is hidden from the caller.
    pub fn primary_key(&self, table: &CatalogTable) -> Vec<String> {
        let schema = self.visible_schema(table);
        let key = table.primary_key();
        if key.iter().all(|c| schema.field_with_name(c).is_ok()) {
            key.to_vec()
        } else {
            Vec::new()
        }
    }

    /// Foreign keys of `table` the caller may see (see [`Self::foreign_key_visible`]).
    pub fn foreign_keys(&self, table: &CatalogTable) -> Vec<ResolvedForeignKey> {
        table
            .foreign_keys()
            .iter()
            .filter(|fk| self.foreign_key_visible(table, fk))
            .cloned()
            .collect()
    }

    /// Whether the caller sees the referenced table and every column on both sides of `fk`:
    /// a key never reveals a table or column the caller can't read.
    pub fn foreign_key_visible(&self, table: &CatalogTable, fk: &ResolvedForeignKey) -> bool {
        let own = self.visible_schema(table);
        fk.columns.iter().all(|c| own.field_with_name(c).is_ok())
            && self
                .resolve(Some(&fk.references.schema), &fk.references.table)
                .is_ok_and(|target| {
                    let theirs = self.visible_schema(&target);
                    fk.references
                        .columns
                        .iter()
                        .all(|c| theirs.field_with_name(c).is_ok())
                })
    }

    /// The table provider queries of this caller read `table` through: the table itself, or
    /// a view with the caller's row filter and without their hidden columns.
    pub fn provider_for(&self, table: &Arc<CatalogTable>) -> DfResult<Arc<dyn TableProvider>> {
        match self.access(table) {
            TableAccess::Full => Ok(table.provider() as Arc<dyn TableProvider>),
            TableAccess::Denied => Err(DataFusionError::External(Box::new(
                CatalogError::TableNotFound {
                    table: table.qualified_name(),
                },
            ))),
            TableAccess::Restricted {
                row_filter,
                hidden_columns,
            } => {
                let reference =
                    TableReference::full(CATALOG_NAME, table.schema_name(), table.name());
                let source = provider_as_source(table.provider() as Arc<dyn TableProvider>);
                let mut plan = LogicalPlanBuilder::scan(reference.clone(), source, None)?;
                if let Some(filter) = row_filter {
                    plan = plan.filter(filter)?;
                }
                let columns: Vec<Expr> = table
                    .arrow_schema()
                    .fields()
                    .iter()
                    .filter(|f| !hidden_columns.iter().any(|h| h == f.name()))
                    .map(|f| Expr::Column(Column::new(Some(reference.clone()), f.name())))
                    .collect();
                let plan = plan.project(columns)?.build()?;
                Ok(Arc::new(ViewTable::new(plan, None)))
            }
        }
    }

    pub fn snapshot(&self) -> &Arc<CatalogSnapshot> {
        &self.snapshot
    }
}

impl CatalogProvider for SnapshotCatalogProvider {
    fn schema_names(&self) -> Vec<String> {
        self.snapshot
            .schema_names()
            .filter(|s| self.snapshot.tables_in(s).any(|t| self.can_see(t)))
            .map(str::to_string)
            .collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == SEARCH_PATH_SCHEMA {
            return Some(Arc::new(SnapshotSchema {
                catalog: self.clone(),
                schema: None,
            }));
        }
        self.snapshot.schema_names().find(|s| *s == name)?;
        Some(Arc::new(SnapshotSchema {
            catalog: self.clone(),
            schema: Some(name.to_string()),
        }))
    }

    fn register_schema(
        &self,
        name: &str,
        _schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        Err(read_only(format!("creating schema '{name}'")))
    }
}

/// A schema of the snapshot, or (with `schema: None`) the search path.
#[derive(Debug)]
struct SnapshotSchema {
    catalog: SnapshotCatalogProvider,
    schema: Option<String>,
}

fn read_only(action: String) -> DataFusionError {
    DataFusionError::External(Box::new(CatalogError::ReadOnly { action }))
}

#[async_trait::async_trait]
impl SchemaProvider for SnapshotSchema {
    fn table_names(&self) -> Vec<String> {
        match &self.schema {
            Some(s) => self
                .catalog
                .snapshot
                .tables_in(s)
                .filter(|t| self.catalog.can_see(t))
                .map(|t| t.name().to_string())
                .collect(),
            None => Vec::new(),
        }
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match self.catalog.resolve(self.schema.as_deref(), name) {
            Ok(t) => self.catalog.provider_for(&t).map(Some),
            Err(CatalogError::TableNotFound { .. }) => Ok(None),
            Err(e) => Err(DataFusionError::External(Box::new(e))),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.catalog.resolve(self.schema.as_deref(), name).is_ok()
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(read_only(format!("creating table '{name}'")))
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(read_only(format!("dropping table '{name}'")))
    }
}
