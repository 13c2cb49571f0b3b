//! Helpers the crates' integration tests share (a dev-dependency only; nothing of the server
//! depends on it): small Parquet tables, a TPC-H data dir generated once per test binary, and
//! ways to count and print result batches.
//!
//! It must not be a normal dependency of any crate; the helpers panic on failure, as tests want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

/// Writes a small Parquet table at `path`: `id` (int64, the given values) and `name`
/// (utf8, `n<id>`), through the project's own writer.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("s").join("t.parquet");
/// dataport_testkit::write_table(&path, &[1, 2, 3]);
/// assert!(path.is_file());
/// ```
pub fn write_table(path: &Path, ids: &[i64]) {
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

/// A data dir with TPC-H at scale 0.01 and its `data_description.md`, generated once per test
/// binary and removed when it exits.
pub fn tpch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        dataport_demo::generate_tpch(dir.path(), 0.01).unwrap();
        dir
    })
    .path()
}

/// Rows over all `batches`.
pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// `batches` as a text table, for assertions and failure messages.
pub fn pretty(batches: &[RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string()
}
