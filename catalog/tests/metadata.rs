use crate::common::*;

const DESCRIPTION: &str = r#"
Company sales.

```yaml
tables:
  - id: in.c-crm.orders
    name: orders
    folder: sales
    description: One row per order
    primary_key: id
    foreign_keys: [{column: id, references: customers.id, description: who ordered}]
    column_descriptions: {id: Order id, name: Customer name}
  - id: in.c-crm.customers
    name: customers
    folder: sales
    description: Customers
    primary_key: id
    private: true
```
"#;

#[tokio::test]
async fn descriptions_keys_and_foreign_keys_are_attached() {
    let dir = tempfile::tempdir().unwrap();
    write_table(&dir.path().join("parquet/sales/orders.parquet"), &[1, 2]);
    write_table(&dir.path().join("parquet/sales/customers.parquet"), &[1]);
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/data_description.md"), DESCRIPTION).unwrap();
    let catalog = open(dir.path()).await;
    let snap = catalog.snapshot();
    let orders = snap.table("sales", "orders").unwrap();
    assert_eq!(orders.description(), Some("One row per order"));
    assert_eq!(orders.primary_key(), ["id"]);
    assert_eq!(orders.column_description("name"), Some("Customer name"));
    let fk = &orders.foreign_keys()[0];
    assert_eq!(fk.columns, ["id"]);
    assert_eq!(fk.references.schema, "sales");
    assert_eq!(fk.references.table, "customers");
    assert!(snap.table("sales", "customers").unwrap().is_private());
    assert!(!orders.is_private());
    assert!(snap.issues().is_empty(), "{:?}", snap.issues());
}

#[tokio::test]
async fn a_bad_description_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    write_table(&dir.path().join("parquet/sales/orders.parquet"), &[1, 2]);
    write_table(&dir.path().join("parquet/sales/customers.parquet"), &[1]);
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("data_description.md"), DESCRIPTION).unwrap();
    let catalog = open(dir.path()).await;
    let v1 = catalog.snapshot().version();

    std::fs::write(
        docs.join("data_description.md"),
        "```yaml\ntables:\n  - id: x\n    name: orders\n    description: d\n    sync_strategy: hourly\n```\n",
    )
    .unwrap();
    catalog.refresh().await.unwrap();
    let snap = catalog.snapshot();
    assert!(snap.version() > v1);
    let issue = snap
        .issues()
        .iter()
        .find(|i| i.source == "data_description")
        .expect("description error reported");
    assert!(issue.message.contains("table 'orders'"), "{issue:?}");
    assert!(issue.message.contains("hourly"), "{issue:?}");
    // The last good metadata is still attached.
    assert_eq!(
        snap.table("sales", "orders").unwrap().description(),
        Some("One row per order")
    );

    std::fs::write(
        docs.join("data_description.md"),
        DESCRIPTION.replace("One row per order", "Orders v2"),
    )
    .unwrap();
    catalog.refresh().await.unwrap();
    let snap = catalog.snapshot();
    assert!(snap.issues().is_empty(), "{:?}", snap.issues());
    assert_eq!(
        snap.table("sales", "orders").unwrap().description(),
        Some("Orders v2")
    );
}

#[tokio::test]
async fn datasets_folder_is_merged() {
    let dir = tempfile::tempdir().unwrap();
    write_table(&dir.path().join("parquet/s/t.parquet"), &[1]);
    let ds = dir.path().join("docs/datasets");
    std::fs::create_dir_all(&ds).unwrap();
    std::fs::write(
        ds.join("extra.md"),
        "```yaml\ntables:\n  - {id: a.t, name: t, folder: s, description: from datasets}\n```\n",
    )
    .unwrap();
    let catalog = open(dir.path()).await;
    assert_eq!(
        catalog.snapshot().table("s", "t").unwrap().description(),
        Some("from datasets")
    );
}

#[tokio::test]
async fn a_declared_primary_key_is_not_trusted_by_queries() {
    let dir = tempfile::tempdir().unwrap();
    // `id` is declared the key, but the data repeats it
    write_table(&dir.path().join("parquet/sales/orders.parquet"), &[1, 1, 2]);
    write_table(&dir.path().join("parquet/sales/customers.parquet"), &[1]);
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/data_description.md"), DESCRIPTION).unwrap();
    let catalog = open(dir.path()).await;
    let snapshot = catalog.snapshot();
    assert_eq!(
        snapshot.table("sales", "orders").unwrap().primary_key(),
        ["id"]
    );
    // A key the optimizer trusted would let it drop this DISTINCT and count 3.
    let out = sql(
        &catalog,
        "select count(*) as n from (select distinct id from sales.orders)",
    )
    .await
    .unwrap();
    assert!(out.contains("| 2 |"), "{out}");
}
