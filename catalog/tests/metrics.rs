use crate::common::*;
use dataport_catalog::metrics::MetricQuery;

const METRICS: &str = "\
metrics:
  - name: customers
    description: Customers with a name
    owner: sales@example.com
    table: sales.customers
    expression: count(DISTINCT id)
    filter: name IS NOT NULL
    dimensions: [name]
  - name: wrong_column
    description: counts a column the table lacks
    owner: sales@example.com
    table: customers
    expression: sum(amount)
  - name: not_an_aggregate
    description: a plain column, no aggregate
    owner: sales@example.com
    table: customers
    expression: id
    dimensions: [name]
  - name: nowhere
    description: a table that is not in the catalog
    owner: sales@example.com
    table: sales.missing
    expression: count(*)
";

#[tokio::test]
async fn metrics_are_checked_against_their_tables_and_the_rest_load() {
    let dir = tempfile::tempdir().unwrap();
    write_table(
        &dir.path().join("parquet/sales/customers.parquet"),
        &[1, 2, 3],
    );
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("metrics.yml"), METRICS).unwrap();
    let catalog = open(dir.path()).await;
    let snap = catalog.snapshot();
    let metrics = snap.metrics();
    let names: Vec<&str> = metrics.all().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["customers"]);
    let m = metrics.get("customers").unwrap();
    assert_eq!(
        (m.schema.as_str(), m.table.as_str()),
        ("sales", "customers")
    );
    assert_eq!(m.columns.iter().collect::<Vec<_>>(), ["id", "name"]);
    assert_eq!(metrics.on_table("sales", "customers").count(), 1);

    let problems: Vec<(usize, &str, &str)> = metrics
        .problems()
        .iter()
        .map(|p| (p.line, p.metric.as_deref().unwrap(), p.reason.as_str()))
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert_eq!(problems[0].0, 9);
    assert!(problems[0].2.contains("amount"), "{problems:?}");
    assert_eq!(problems[1].0, 14);
    assert!(problems[1].2.contains("does not plan"), "{problems:?}");
    assert_eq!(problems[2].0, 20);
    assert!(problems[2].2.contains("sales.missing"), "{problems:?}");
    // On /health with everything else the refresh could not use.
    let issues: Vec<_> = snap
        .issues()
        .iter()
        .filter(|i| i.source == "metrics")
        .collect();
    assert_eq!(issues.len(), 3);
    assert!(
        issues[0]
            .message
            .starts_with("docs/metrics.yml line 9: metric 'wrong_column'")
    );

    // The metric's query runs on the snapshot and answers it.
    let sql = m
        .sql(&MetricQuery {
            dimensions: vec!["name".into()],
            ..Default::default()
        })
        .unwrap();
    let out = sql_on(std::sync::Arc::clone(&snap), &sql).await.unwrap();
    assert!(out.contains("| n2   | 1         |"), "{out}");
}

#[tokio::test]
async fn a_fixed_definition_and_a_new_table_are_picked_up_on_refresh() {
    let dir = tempfile::tempdir().unwrap();
    write_table(&dir.path().join("parquet/sales/customers.parquet"), &[1]);
    let docs = dir.path().join("docs").join("metrics");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("orders.yml"), "metrics:\n  - {name: orders, description: d, owner: o, table: sales.orders, expression: count(*)}\n").unwrap();
    let catalog = open(dir.path()).await;
    let v1 = catalog.snapshot().version();
    assert!(catalog.snapshot().metrics().get("orders").is_none());
    assert_eq!(catalog.snapshot().metrics().problems().len(), 1);

    write_table(&dir.path().join("parquet/sales/orders.parquet"), &[1, 2]);
    catalog.refresh().await.unwrap();
    let snap = catalog.snapshot();
    assert!(snap.version() > v1);
    assert!(snap.metrics().get("orders").is_some());
    assert!(snap.metrics().problems().is_empty());
    assert!(snap.issues().is_empty(), "{:?}", snap.issues());

    // Unchanged definitions on an unchanged catalog: no new snapshot.
    let v2 = snap.version();
    catalog.refresh().await.unwrap();
    assert_eq!(catalog.snapshot().version(), v2);
}
