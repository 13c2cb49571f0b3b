use super::*;

fn p(text: &str) -> Result<Descriptions, DescriptionError> {
    parse(Path::new("data_description.md"), text)
}

const GOOD: &str = r#"
# Sales data

Orders come from the CRM.

```yaml
folder_mapping: {"in.c-crm": "sales"}
tables:
  - id: "in.c-crm.orders"
    name: orders
    description: "Orders, one row per order"
    primary_key: "id"
    sync_strategy: incremental
    partition_by: created_at
    foreign_keys: [{column: company_id, references: company.id}]
    where_filters: [{column: created_at, operator: ge, values: ["{{last_year}}"]}]
    column_descriptions: {id: "Order id"}
  - id: "in.c-crm.company"
    name: company
    description: "Companies"
    primary_key: "id, region"
    private: true
```
"#;

#[test]
fn parses_the_spec_example() {
    let d = p(GOOD).unwrap();
    assert_eq!(d.tables.len(), 2);
    let orders = d.for_table("sales", "orders").unwrap();
    assert_eq!(orders.folder.as_deref(), Some("sales"));
    assert_eq!(orders.primary_key, vec!["id"]);
    assert_eq!(orders.sync_strategy, Some(SyncStrategy::Incremental));
    assert_eq!(orders.incremental_window_days, Some(7));
    assert_eq!(
        orders.partition_granularity,
        Some(PartitionGranularity::Month)
    );
    assert_eq!(orders.foreign_keys[0].references_table, "company");
    assert_eq!(orders.foreign_keys[0].references_column, "id");
    assert_eq!(orders.column_descriptions["id"], "Order id");
    let company = d.for_table("sales", "company").unwrap();
    assert_eq!(company.primary_key, vec!["id", "region"]);
    assert!(company.private);
    assert!(d.prose[0].1.contains("Orders come from the CRM"));
    assert!(d.for_table("other", "orders").is_none());
}

fn table_yaml(extra: &str) -> String {
    format!("```yaml\ntables:\n  - id: a.b.t\n    name: t\n    description: d\n{extra}```\n")
}

#[test]
fn rejects_what_the_spec_rejects() {
    let e = p(&table_yaml("    sync_strategy: sometimes\n")).unwrap_err();
    assert!(
        e.message.contains("table 't'") && e.message.contains("sometimes"),
        "{e}"
    );
    let e = p(&table_yaml("    sync_strategy: partitioned\n")).unwrap_err();
    assert!(
        e.message.contains("table 't'") && e.message.contains("partition_by"),
        "{e}"
    );
    let e = p(&table_yaml("    partition_granularity: week\n")).unwrap_err();
    assert!(
        e.message.contains("table 't'") && e.message.contains("week"),
        "{e}"
    );
    let e = p("# just prose\n").unwrap_err();
    assert!(e.message.contains("no ```yaml block"), "{e}");
    let e = p("```yaml\nfolder_mapping: {}\n```\n").unwrap_err();
    assert!(e.message.contains("no tables"), "{e}");
    let dup = "```yaml\ntables:\n  - {id: a.t, name: t, description: d}\n  - {id: b.t, name: t, description: d}\n```\n";
    let e = p(dup).unwrap_err();
    assert!(
        e.message.contains("duplicate") && e.message.contains("'t'"),
        "{e}"
    );
    let e = p("```yaml\ntables: [ {id: x, name: t\n```\n").unwrap_err();
    assert!(e.message.contains("yaml block starting at line 1"), "{e}");
    let e = p(&table_yaml("    colour: blue\n")).unwrap_err();
    assert!(e.message.contains("colour"), "{e}");
}

#[test]
fn optional_keys_are_optional() {
    let d = p("```yaml\ntables:\n  - {id: x.t, name: t, description: d}\n```\n").unwrap();
    let t = &d.tables[0];
    assert!(t.primary_key.is_empty());
    assert_eq!(t.sync_strategy, None);
    assert_eq!(t.folder, None);
    assert!(d.for_table("anything", "t").is_some());
}

#[test]
fn access_marks_tables_private() {
    let private = p(&table_yaml("    access: private\n")).unwrap();
    assert!(private.tables[0].private);
    let public = p(&table_yaml("    access: public\n")).unwrap();
    assert!(!public.tables[0].private);
    assert!(!p(&table_yaml("")).unwrap().tables[0].private);
    let bad = p(&table_yaml("    access: secret\n")).unwrap_err();
    assert!(bad.to_string().contains("unknown access 'secret'"), "{bad}");
    assert!(p(&table_yaml("    access: public\n    private: true\n")).is_err());
}
