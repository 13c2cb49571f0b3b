//! The snapshot seen through DataFusion's catalog traits (read-only).

use std::fmt;
use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result as DfResult};

use crate::error::CatalogError;
use crate::snapshot::{CatalogSnapshot, CatalogTable};

/// The catalog name SQL sees.
pub const CATALOG_NAME: &str = "dataport";

/// Name of the virtual default schema that resolves unqualified table names through the
/// search path. It starts with `_`, so no data folder can ever take it.
pub const SEARCH_PATH_SCHEMA: &str = "_search_path";

/// Decides which tables a caller may see. Tables it rejects do not exist for that caller.
pub type TableFilter = Arc<dyn Fn(&CatalogTable) -> bool + Send + Sync>;

/// One snapshot as a DataFusion catalog, filtered for one caller.
#[derive(Clone)]
pub struct SnapshotCatalogProvider {
    snapshot: Arc<CatalogSnapshot>,
    visible: TableFilter,
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
        Self { snapshot, visible }
    }

    /// The table `schema.name` (or unqualified through the search path) if the caller may see it.
    pub fn resolve(
        &self,
        schema: Option<&str>,
        name: &str,
    ) -> Result<Arc<CatalogTable>, CatalogError> {
        if schema.is_some() {
            let t = self.snapshot.resolve(schema, name)?;
            return if (self.visible)(t) {
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
            .filter(|t| (self.visible)(t))
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
        self.snapshot.tables().filter(|t| (self.visible)(t))
    }

    pub fn snapshot(&self) -> &Arc<CatalogSnapshot> {
        &self.snapshot
    }
}

impl CatalogProvider for SnapshotCatalogProvider {
    fn schema_names(&self) -> Vec<String> {
        self.snapshot
            .schema_names()
            .filter(|s| self.snapshot.tables_in(s).any(|t| (self.visible)(t)))
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
                .filter(|t| (self.catalog.visible)(t))
                .map(|t| t.name().to_string())
                .collect(),
            None => Vec::new(),
        }
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match self.catalog.resolve(self.schema.as_deref(), name) {
            Ok(t) => Ok(Some(t.provider() as Arc<dyn TableProvider>)),
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
