use std::path::Path;

use arrow::array::RecordBatch;
use dataport_catalog::CatalogOptions;
use dataport_engine::{
    Engine, EngineError, EngineOptions, Principal, QueryRequest, RequestContext, Surface,
};
use futures::TryStreamExt;

pub(crate) use dataport_testkit::{pretty, rows, tpch_dir, write_table};

pub(crate) fn ctx() -> RequestContext {
    RequestContext::new(Principal::local_admin(), Surface::Internal, "test")
}

pub(crate) async fn engine_with(dir: &Path, tweak: impl FnOnce(&mut EngineOptions)) -> Engine {
    let mut options = EngineOptions::new(dir);
    options.target_partitions = 2;
    tweak(&mut options);
    let mut catalog = CatalogOptions::new(dir);
    catalog.watch = false;
    catalog.refresh_interval = std::time::Duration::ZERO;
    Engine::try_new(options, catalog).await.unwrap()
}

pub(crate) async fn run(engine: &Engine, sql: &str) -> Result<Vec<RecordBatch>, EngineError> {
    run_request(engine, QueryRequest::new(sql)).await
}

pub(crate) async fn run_request(
    engine: &Engine,
    request: QueryRequest,
) -> Result<Vec<RecordBatch>, EngineError> {
    engine.execute(request, &ctx()).await?.try_collect().await
}
