//! In-memory tables: the same answers as from the files, a copy per data version, the budget.

use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;
use dataport_catalog::{Catalog, MemoryOptions};

use crate::common::*;

async fn open_with(dir: &std::path::Path, memory: MemoryOptions) -> Catalog {
    let mut o = options(dir);
    o.memory = memory;
    Catalog::open(o, Arc::new(RuntimeEnv::default()), SessionConfig::new())
        .await
        .unwrap()
}

fn all(budget: u64) -> MemoryOptions {
    MemoryOptions {
        tables: vec!["s.*".into()],
        budget,
    }
}

#[tokio::test]
async fn resident_tables_answer_like_their_files_and_follow_changes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    write_table(&p.join("t/a.parquet"), &[1, 2, 3]);
    write_table(&p.join("t/b.parquet"), &[4, 5]);
    write_table(&p.join("parted/k=x/a.parquet"), &[7]);
    write_table(&dir.path().join("parquet/other/u.parquet"), &[9]);
    let query = "select count(*) c, sum(id) s, max(name) m from s.t where id > 1";
    let catalog = open_with(dir.path(), all(1 << 30)).await;
    let from_files = sql(&catalog, query).await.unwrap();

    // the refresh of `open` started loading in the background; this waits for it
    let report = catalog.load_resident().await;
    assert_eq!(report.resident, ["s.t"]);
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert_eq!(report.skipped[0].0, "s.parted");
    let snap = catalog.snapshot();
    let bytes = snap.table("s", "t").unwrap().resident_bytes().unwrap();
    assert!(bytes > 0 && report.resident_bytes == bytes);
    assert!(snap.table("other", "u").unwrap().resident_bytes().is_none());
    assert_eq!(sql(&catalog, query).await.unwrap(), from_files);
    let plan = sql(&catalog, "explain select * from s.t").await.unwrap();
    assert!(
        plan.contains("partition_sizes") && !plan.contains("parquet"),
        "{plan}"
    );
    // limit and projection
    assert!(
        sql(&catalog, "select name from s.t limit 1")
            .await
            .unwrap()
            .contains('n')
    );

    // a second call changes nothing
    assert_eq!(catalog.load_resident().await.loaded.len(), 0);

    // new files make new data, read from the files until its copy is loaded
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_table(&p.join("t/c.parquet"), &[100]);
    catalog.refresh().await.unwrap();
    let changed = "select count(*) c, sum(id) s from s.t";
    let expect = "+---+-----+\n| c | s   |\n+---+-----+\n| 6 | 115 |\n+---+-----+";
    assert_eq!(sql(&catalog, changed).await.unwrap(), expect);
    catalog.load_resident().await;
    assert!(
        catalog
            .snapshot()
            .table("s", "t")
            .unwrap()
            .resident_bytes()
            .is_some()
    );
    assert_eq!(sql(&catalog, changed).await.unwrap(), expect);
    // the old snapshot kept its own copy
    assert_eq!(
        sql_on(Arc::clone(&snap), changed).await.unwrap(),
        "+---+----+\n| c | s  |\n+---+----+\n| 5 | 15 |\n+---+----+"
    );
}

#[tokio::test]
async fn tables_over_the_budget_stay_on_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    write_table(&p.join("t.parquet"), &(0..10_000).collect::<Vec<_>>());
    let catalog = open_with(dir.path(), all(1024)).await;
    let report = catalog.load_resident().await;
    assert!(report.resident.is_empty() && report.loaded.is_empty());
    assert_eq!(report.skipped.len(), 1);
    assert!(report.skipped[0].1.contains("budget"), "{report:?}");
    assert!(
        catalog
            .snapshot()
            .table("s", "t")
            .unwrap()
            .resident_bytes()
            .is_none()
    );
    assert!(
        sql(&catalog, "select count(*) from s.t")
            .await
            .unwrap()
            .contains("10000")
    );
}

#[tokio::test]
async fn loading_estimates_distinct_values_per_column() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<i64> = (0..3000).map(|i| i % 1000).collect();
    write_table(&dir.path().join("parquet/s/t.parquet"), &ids);
    let catalog = open_with(dir.path(), all(1 << 30)).await;
    catalog.load_resident().await;
    let snap = catalog.snapshot();
    let table = snap.table("s", "t").unwrap();
    let distinct = table.resident_distinct_counts().unwrap();
    // `id` repeats 1,000 values; `name` is "n<id>" (HyperLogLog: within a few percent)
    assert_eq!(distinct.len(), 2);
    for estimate in distinct.iter() {
        let n = estimate.unwrap();
        assert!((950..=1050).contains(&n), "{distinct:?}");
    }
    // a scan finds them by the schema it carries; another schema finds nothing
    assert_eq!(
        snap.resident_distinct_counts_for(&table.arrow_schema()),
        Some(distinct)
    );
    let other = Arc::new(arrow::datatypes::Schema::clone(&table.arrow_schema()));
    assert!(snap.resident_distinct_counts_for(&other).is_none());
}
