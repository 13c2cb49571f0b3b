use std::sync::Arc;

use crate::common::*;

#[tokio::test]
async fn refresh_reads_only_changed_tables() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    for i in 0..20 {
        write_table(&p.join(format!("t{i}.parquet")), &[i]);
    }
    let catalog = open(dir.path()).await;
    assert_eq!(catalog.table_loads(), 20);
    let v1 = catalog.snapshot().version();

    // Nothing changed: no footer is read and the snapshot stays.
    let report = catalog.refresh().await.unwrap();
    assert_eq!(report.tables_reloaded, 0);
    assert_eq!(catalog.snapshot().version(), v1);

    // One changed, one added, one removed.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_table(&p.join("t3.parquet"), &[3, 33]);
    write_table(&p.join("new.parquet"), &[1]);
    std::fs::remove_file(p.join("t7.parquet")).unwrap();
    let report = catalog.refresh().await.unwrap();
    assert_eq!(report.tables_reloaded, 2);
    assert_eq!(report.added, ["s.new"]);
    assert_eq!(report.changed, ["s.t3"]);
    assert_eq!(report.removed, ["s.t7"]);
    assert_eq!(catalog.table_loads(), 22);
    let snap = catalog.snapshot();
    assert!(snap.version() > v1);
    assert_eq!(snap.table("s", "t3").unwrap().row_count(), Some(2));
}

#[tokio::test]
async fn old_snapshots_stay_whole_while_new_ones_swap_in() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    write_table(&p.join("t/a.parquet"), &[1, 2]);
    let catalog = open(dir.path()).await;
    let old = catalog.snapshot();
    write_table(&p.join("t/b.parquet"), &[3]);
    catalog.refresh().await.unwrap();
    let new = catalog.snapshot();
    assert_eq!(old.table("s", "t").unwrap().row_count(), Some(2));
    assert_eq!(new.table("s", "t").unwrap().row_count(), Some(3));
    // A query on the old snapshot's provider scans only the old file list.
    assert_eq!(
        old.table("s", "t").unwrap().provider().file_paths().count(),
        1
    );
    assert_eq!(
        new.table("s", "t").unwrap().provider().file_paths().count(),
        2
    );
}

#[tokio::test]
async fn concurrent_refreshes_are_serialised_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    for i in 0..10 {
        write_table(&p.join(format!("t{i}.parquet")), &[i]);
    }
    let catalog = open(dir.path()).await;
    for i in 10..20 {
        write_table(&p.join(format!("t{i}.parquet")), &[i]);
    }
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = catalog.clone();
            tokio::spawn(async move { c.refresh().await.map(|r| r.tables_reloaded) })
        })
        .collect();
    let mut loaded = 0;
    for t in tasks {
        loaded += t.await.unwrap().unwrap();
    }
    // The ten new tables were read exactly once in total.
    assert_eq!(loaded, 10);
    assert_eq!(catalog.snapshot().table_count(), 20);
}

#[tokio::test]
async fn the_watcher_picks_up_new_tables() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    write_table(&p.join("first.parquet"), &[1]);
    let mut o = options(dir.path());
    o.watch = true;
    let catalog = dataport_catalog::Catalog::open(
        o,
        Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default()),
        datafusion::prelude::SessionConfig::new(),
    )
    .await
    .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = dataport_catalog::spawn_refresher(catalog.clone(), cancel.clone());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    write_table(&p.join("second.parquet"), &[1]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while catalog.snapshot().table("s", "second").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "watcher did not refresh"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_table_being_changed_keeps_its_previous_version() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("parquet");
    let p = root.join("s");
    write_table(&p.join("t/2024_01.parquet"), &[1, 2]);
    write_table(&p.join("t/2024_02.parquet"), &[3]);
    let catalog = open(dir.path()).await;
    assert_eq!(
        catalog.snapshot().table("s", "t").unwrap().row_count(),
        Some(3)
    );

    // A multi-file change is under way (its journal exists): half of it is on disk.
    let journal = dataport_catalog::write::journal_path(&root, "s", "t");
    std::fs::write(&journal, b"{}").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::remove_file(p.join("t/2024_01.parquet")).unwrap();
    write_table(&p.join("t/2024_03.parquet"), &[4, 5, 6, 7]);
    // A new table being created is not shown before its change completes either.
    let new_journal = dataport_catalog::write::journal_path(&root, "s", "fresh");
    std::fs::write(&new_journal, b"{}").unwrap();
    write_table(&p.join("fresh.parquet"), &[1]);
    catalog.refresh().await.unwrap();
    let snap = catalog.snapshot();
    assert_eq!(snap.table("s", "t").unwrap().row_count(), Some(3));
    assert_eq!(snap.table("s", "t").unwrap().file_count(), 2);
    assert!(snap.table("s", "fresh").is_none());

    // The change completed: the next refresh serves the new version whole.
    std::fs::remove_file(&journal).unwrap();
    std::fs::remove_file(&new_journal).unwrap();
    catalog.refresh().await.unwrap();
    let snap = catalog.snapshot();
    assert_eq!(snap.table("s", "t").unwrap().row_count(), Some(5));
    assert!(snap.table("s", "fresh").is_some());
}

#[tokio::test]
async fn a_query_on_an_old_snapshot_reads_the_old_file_after_it_was_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    write_table(&p.join("t.parquet"), &[1, 2, 3]);
    let catalog = open(dir.path()).await;
    let old = catalog.snapshot();
    // A writer replaces the file (atomic rename over it), the catalog moves on.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_table(&p.join("t.parquet"), &(10..2000).collect::<Vec<_>>());
    catalog.refresh().await.unwrap();
    let before = sql_on(old, "select count(*) as n, sum(id) as s from s.t")
        .await
        .unwrap();
    assert!(before.contains("| 3 | 6 |"), "{before}");
    let now = sql(&catalog, "select count(*) as n from s.t")
        .await
        .unwrap();
    assert!(now.contains("1990"), "{now}");
    // Pinned links of data no snapshot uses any more are gone.
    let pinned = dir.path().join("tmp/pinned");
    let links: usize = std::fs::read_dir(&pinned)
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(links, 1, "only the current file stays linked");
}
