use std::path::Path;
use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};
use dataport_catalog::{Catalog, CatalogOptions, SEARCH_PATH_SCHEMA, SnapshotCatalogProvider};

pub(crate) use dataport_testkit::write_table;

pub(crate) fn options(dir: &Path) -> CatalogOptions {
    let mut o = CatalogOptions::new(dir);
    o.watch = false;
    o.refresh_interval = std::time::Duration::ZERO;
    o
}

pub(crate) async fn open(dir: &Path) -> Catalog {
    Catalog::open(
        options(dir),
        Arc::new(RuntimeEnv::default()),
        SessionConfig::new(),
    )
    .await
    .unwrap()
}

/// Run SQL on the current snapshot, returning the pretty-printed result.
pub(crate) async fn sql(catalog: &Catalog, query: &str) -> datafusion::error::Result<String> {
    sql_on(catalog.snapshot(), query).await
}

/// Run SQL on a given snapshot.
pub(crate) async fn sql_on(
    snapshot: Arc<dataport_catalog::CatalogSnapshot>,
    query: &str,
) -> datafusion::error::Result<String> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(dataport_catalog::CATALOG_NAME, SEARCH_PATH_SCHEMA)
        .with_create_default_catalog_and_schema(false)
        .with_target_partitions(2);
    let ctx = SessionContext::new_with_config(config);
    ctx.register_catalog(
        dataport_catalog::CATALOG_NAME,
        Arc::new(SnapshotCatalogProvider::new(
            snapshot,
            Arc::new(|_| dataport_catalog::TableAccess::Full),
        )),
    );
    let batches = ctx.sql(query).await?.collect().await?;
    Ok(arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
}

pub(crate) fn names(catalog: &Catalog) -> Vec<String> {
    catalog
        .snapshot()
        .tables()
        .map(|t| t.qualified_name())
        .collect()
}
