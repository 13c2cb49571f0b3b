//! Metadata commands, as ADBC's get_objects and the JDBC driver's DatabaseMetaData use them.

use arrow::array::{Array, AsArray, BinaryArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int32Type, UInt8Type};
use arrow_flight::sql::{
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, SqlInfo,
};
use dataport_flight::FlightOptions;

use crate::common::{client, fetch, rows, start};

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(column).unwrap();
        let col = col.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..col.len() {
            out.push(if col.is_null(i) {
                "<null>".into()
            } else {
                col.value(i).to_string()
            });
        }
    }
    out
}

#[tokio::test]
async fn catalogs_schemas_tables_and_types() {
    let server = start(FlightOptions::default()).await;
    let mut c = client(server.addr).await;

    let info = c.get_catalogs().await.unwrap();
    assert_eq!(
        strings(&fetch(&mut c, info).await, "catalog_name"),
        ["dataport"]
    );

    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("tp%".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        strings(&fetch(&mut c, info).await, "db_schema_name"),
        ["tpch"]
    );
    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some("nope%".into()),
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut c, info).await), 0);

    let info = c
        .get_tables(CommandGetTables {
            catalog: Some("dataport".into()),
            db_schema_filter_pattern: Some("tpch".into()),
            table_name_filter_pattern: Some("%item".into()),
            table_types: vec!["TABLE".into()],
            include_schema: true,
        })
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await;
    assert_eq!(strings(&batches, "table_name"), ["lineitem"]);
    assert_eq!(strings(&batches, "table_type"), ["TABLE"]);
    let schema_bytes = batches[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_any()
        .downcast_ref::<BinaryArray>()
        .unwrap()
        .value(0)
        .to_vec();
    let schema = arrow_flight::IpcMessage(schema_bytes.into());
    let schema: arrow::datatypes::Schema = schema.try_into().unwrap();
    assert_eq!(schema.field(0).name(), "l_orderkey");
    assert!(
        schema
            .fields()
            .iter()
            .all(|f| !matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView))
    );

    // all tables, no schema column; a table type we don't have matches nothing
    let info = c
        .get_tables(CommandGetTables {
            include_schema: false,
            ..Default::default()
        })
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await;
    assert_eq!(rows(&batches), 8);
    assert!(batches[0].column_by_name("table_schema").is_none());
    let info = c
        .get_tables(CommandGetTables {
            table_types: vec!["VIEW".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut c, info).await), 0);
    let info = c
        .get_tables(CommandGetTables {
            catalog: Some("other".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut c, info).await), 0);

    let info = c.get_table_types().await.unwrap();
    assert_eq!(strings(&fetch(&mut c, info).await, "table_type"), ["TABLE"]);
}

#[tokio::test]
async fn primary_and_foreign_keys() {
    let server = start(FlightOptions::default()).await;
    let mut c = client(server.addr).await;

    let info = c
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: Some("tpch".into()),
            table: "lineitem".into(),
        })
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await;
    assert_eq!(
        strings(&batches, "column_name"),
        ["l_orderkey", "l_linenumber"]
    );
    let seq = batches[0].column_by_name("key_sequence").unwrap();
    assert_eq!(seq.as_primitive::<Int32Type>().values().to_vec(), [1, 2]);

    let info = c
        .get_imported_keys(CommandGetImportedKeys {
            catalog: None,
            db_schema: None,
            table: "lineitem".into(),
        })
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await;
    let pk_tables = strings(&batches, "pk_table_name");
    assert_eq!(
        pk_tables,
        ["orders", "part", "supplier"],
        "ordered by pk table"
    );
    assert_eq!(
        strings(&batches, "fk_column_name"),
        ["l_orderkey", "l_partkey", "l_suppkey"]
    );
    assert_eq!(
        strings(&batches, "pk_column_name"),
        ["o_orderkey", "p_partkey", "s_suppkey"]
    );
    let rule = batches[0].column_by_name("update_rule").unwrap();
    assert_eq!(rule.as_primitive::<UInt8Type>().value(0), 3, "NO_ACTION");

    let info = c
        .get_exported_keys(CommandGetExportedKeys {
            catalog: Some("dataport".into()),
            db_schema: Some("tpch".into()),
            table: "nation".into(),
        })
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await;
    assert_eq!(strings(&batches, "fk_table_name"), ["customer", "supplier"]);
    assert!(
        strings(&batches, "pk_table_name")
            .iter()
            .all(|t| t == "nation")
    );

    let info = c
        .get_cross_reference(CommandGetCrossReference {
            pk_catalog: None,
            pk_db_schema: None,
            pk_table: "orders".into(),
            fk_catalog: None,
            fk_db_schema: None,
            fk_table: "lineitem".into(),
        })
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await;
    assert_eq!(strings(&batches, "fk_column_name"), ["l_orderkey"]);
    assert_eq!(
        strings(&batches, "fk_key_name"),
        ["lineitem_l_orderkey_fkey"]
    );
    assert_eq!(strings(&batches, "pk_key_name"), ["orders_pkey"]);

    // unknown tables have no keys, rather than an error
    let info = c
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "nope".into(),
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut c, info).await), 0);
}

#[tokio::test]
async fn sql_info_and_type_info() {
    let server = start(FlightOptions::default()).await;
    let mut c = client(server.addr).await;

    let info = c
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
            SqlInfo::SqlIdentifierQuoteChar,
            SqlInfo::SqlKeywords,
            SqlInfo::SqlNumericFunctions,
            SqlInfo::SqlTransactionsSupported,
        ])
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await;
    assert_eq!(rows(&batches), 6);
    let text = crate::common::pretty(&batches);
    assert!(text.contains("Dataport"), "{text}");
    assert!(text.contains("SELECT"), "{text}");
    assert!(text.contains("ABS"), "{text}");

    // everything at once: every id the spec defines is answered (91 in Flight SQL 59),
    // except the Substrait versions of a server without Substrait
    let info = c.get_sql_info(vec![]).await.unwrap();
    let all = rows(&fetch(&mut c, info).await);
    assert!(all >= 89, "only {all} SqlInfo values");

    let info = c
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let batches = fetch(&mut c, info).await;
    let names = strings(&batches, "type_name");
    for t in [
        "BIGINT",
        "VARCHAR",
        "DECIMAL",
        "TIMESTAMP",
        "BOOLEAN",
        "DATE",
    ] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }
    let info = c
        .get_xdbc_type_info(CommandGetXdbcTypeInfo {
            data_type: Some(12),
        })
        .await
        .unwrap();
    assert_eq!(
        strings(&fetch(&mut c, info).await, "type_name"),
        ["VARCHAR"]
    );
}
