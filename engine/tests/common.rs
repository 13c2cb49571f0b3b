use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use dataport_catalog::CatalogOptions;
use dataport_engine::{
    Engine, EngineError, EngineOptions, Principal, QueryRequest, RequestContext, Surface,
};
use futures::TryStreamExt;

pub(crate) fn write_table(path: &Path, ids: &[i64]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]));
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap();
    let mut w = dataport_catalog::write::ParquetFileWriter::try_new(path, schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}

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

/// A data dir with TPC-H at a small scale, generated once per test binary.
pub(crate) fn tpch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        dataport_demo::generate_tpch(dir.path(), 0.01).unwrap();
        dir
    })
    .path()
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

pub(crate) fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

pub(crate) fn pretty(batches: &[RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string()
}
