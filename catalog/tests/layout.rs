use crate::common::*;

#[tokio::test]
async fn single_files_folders_and_hive_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet");
    write_table(&p.join("sales/orders.parquet"), &[1, 2, 3]);
    write_table(&p.join("sales/events/part-0.parquet"), &[1, 2]);
    write_table(&p.join("sales/events/part-1.parquet"), &[3]);
    write_table(&p.join("web/hits/day=2024-01-01/a.parquet"), &[1, 2]);
    write_table(&p.join("web/hits/day=2024-01-02/a.parquet"), &[3, 4, 5]);
    let catalog = open(dir.path()).await;
    assert_eq!(
        names(&catalog),
        ["sales.events", "sales.orders", "web.hits"]
    );
    let snap = catalog.snapshot();
    let orders = snap.table("sales", "orders").unwrap();
    assert_eq!(orders.row_count(), Some(3));
    assert_eq!(orders.file_count(), 1);
    let hits = snap.table("web", "hits").unwrap();
    assert_eq!(hits.partition_columns(), ["day"]);
    assert_eq!(hits.row_count(), Some(5));
    assert!(snap.issues().is_empty(), "{:?}", snap.issues());

    let out = sql(&catalog, "select count(*) as n from sales.events")
        .await
        .unwrap();
    assert!(out.contains("| 3 |"), "{out}");
    let out = sql(
        &catalog,
        "select day, count(*) as n from web.hits group by day order by day",
    )
    .await
    .unwrap();
    assert!(out.contains("2024-01-01 | 2"), "{out}");
    assert!(out.contains("2024-01-02 | 3"), "{out}");
    // Partition pruning: a filter on the partition column keeps only that folder.
    let out = sql(
        &catalog,
        "select sum(id) as s from web.hits where day = '2024-01-02'",
    )
    .await
    .unwrap();
    assert!(out.contains("| 12 |"), "{out}");
    let out = sql(
        &catalog,
        "explain select * from web.hits where day = '2024-01-02'",
    )
    .await
    .unwrap();
    assert!(
        !out.contains("day=2024-01-01"),
        "pruned folder still scanned: {out}"
    );
}

#[tokio::test]
async fn temporary_and_private_files_are_never_registered() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    write_table(&p.join("real.parquet"), &[1]);
    write_table(&p.join(".hidden.parquet"), &[1]);
    write_table(&p.join("_staging.parquet"), &[1]);
    write_table(&p.join("half.parquet.tmp"), &[1]);
    std::fs::write(p.join("empty.parquet"), b"").unwrap();
    write_table(&p.join("folder/ok.parquet"), &[1, 2]);
    write_table(&p.join("folder/.writing.parquet"), &[9, 9, 9]);
    write_table(&p.join("folder/_tmp/x.parquet"), &[9]);
    std::fs::write(p.join("folder/notes.txt"), b"hello").unwrap();
    write_table(&dir.path().join("parquet/_scratch/t.parquet"), &[1]);
    let catalog = open(dir.path()).await;
    assert_eq!(names(&catalog), ["s.folder", "s.real"]);
    assert_eq!(
        catalog.snapshot().table("s", "folder").unwrap().row_count(),
        Some(2)
    );
}

#[tokio::test]
async fn names_are_mapped_and_collisions_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet");
    write_table(&p.join("Sales Data/Orders 2024.parquet"), &[1]);
    write_table(&p.join("x/2024-report.parquet"), &[1]);
    write_table(&p.join("x/a-b.parquet"), &[1]);
    write_table(&p.join("x/a_b.parquet"), &[1]);
    let catalog = open(dir.path()).await;
    assert_eq!(
        names(&catalog),
        ["sales_data.orders_2024", "x._2024_report", "x.a_b"]
    );
    let snap = catalog.snapshot();
    let issue = &snap.issues()[0];
    assert!(issue.message.contains("x.a_b"), "{issue:?}");
    let out = sql(&catalog, "select count(*) from sales_data.orders_2024")
        .await
        .unwrap();
    assert!(out.contains("| 1 "), "{out}");
}

#[tokio::test]
async fn unqualified_names_use_the_search_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet");
    write_table(&p.join("a/only_a.parquet"), &[1]);
    write_table(&p.join("a/both.parquet"), &[1]);
    write_table(&p.join("b/both.parquet"), &[1, 2]);
    let catalog = open(dir.path()).await;
    let out = sql(&catalog, "select count(*) from only_a").await.unwrap();
    assert!(out.contains("| 1 "), "{out}");
    let err = sql(&catalog, "select * from both")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("a.both") && err.contains("b.both"), "{err}");
    let out = sql(&catalog, "select count(*) from b.both").await.unwrap();
    assert!(out.contains("| 2 "), "{out}");
}

#[tokio::test]
async fn inconsistent_partition_layout_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    write_table(&p.join("bad/day=1/a.parquet"), &[1]);
    write_table(&p.join("bad/month=1/a.parquet"), &[1]);
    write_table(&p.join("good.parquet"), &[1]);
    let catalog = open(dir.path()).await;
    assert_eq!(names(&catalog), ["s.good"]);
    let snap = catalog.snapshot();
    assert!(
        snap.issues()
            .iter()
            .any(|i| i.source == "s.bad" && i.message.contains("partition keys")),
        "{:?}",
        snap.issues()
    );
}

#[tokio::test]
async fn a_corrupt_file_skips_only_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet/s");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("broken.parquet"), b"this is not parquet at all").unwrap();
    write_table(&p.join("fine.parquet"), &[1]);
    let catalog = open(dir.path()).await;
    assert_eq!(names(&catalog), ["s.fine"]);
    assert!(
        catalog
            .snapshot()
            .issues()
            .iter()
            .any(|i| i.source == "s.broken")
    );
}

#[tokio::test]
async fn damaged_files_are_reported_and_the_rest_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("parquet");
    write_table(&p.join("s/good.parquet"), &[1, 2, 3]);
    std::fs::create_dir_all(p.join("s")).unwrap();
    // A footer whose metadata length points before the start of the file: the Parquet reader
    // would subtract past zero.
    std::fs::write(p.join("s/lying.parquet"), b"PAR1 not parquet PAR1").unwrap();
    std::fs::write(p.join("s/short.parquet"), b"PAR1").unwrap();
    std::fs::write(p.join("s/text.parquet"), b"id,name\n1,a\n2,b\n").unwrap();
    let good = std::fs::read(p.join("s/good.parquet")).unwrap();
    std::fs::write(p.join("s/truncated.parquet"), &good[..good.len() / 2]).unwrap();
    let catalog = open(dir.path()).await;
    assert_eq!(names(&catalog), ["s.good"]);
    let snap = catalog.snapshot();
    let mut issues: Vec<(String, String)> = snap
        .issues()
        .iter()
        .map(|i| (i.source.clone(), i.message.clone()))
        .collect();
    issues.sort();
    let sources: Vec<&str> = issues.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sources, ["s.lying", "s.short", "s.text", "s.truncated"]);
    for (source, message) in &issues {
        assert!(
            message.contains("not a usable Parquet file"),
            "{source}: {message}"
        );
        assert!(
            message.contains(".parquet"),
            "{source} names its file: {message}"
        );
        assert!(
            !message.contains("pinned"),
            "{source} names the pin: {message}"
        );
    }
    assert!(issues[0].1.contains("metadata"), "{:?}", issues[0]);
    assert!(
        snap.issues()
            .iter()
            .all(|i| i.hint.contains("replace or remove"))
    );
    let out = sql(&catalog, "select count(*) from s.good").await.unwrap();
    assert!(out.contains("| 3 "), "{out}");
}
