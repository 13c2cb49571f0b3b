//! The file-drop connector end to end: dropped CSV, JSON lines and Parquet files become typed
//! tables, declared types win over inferred ones, rejected files leave the table untouched,
//! and replace and append modes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type, Schema};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use dataport_connectors::{
    LogProgress, SourceConfig, SourceReport, SyncRequest, build, sync_source,
};
use dataport_state::StateStore;

/// A data dir with a description and an empty drop folder.
struct Env {
    dir: tempfile::TempDir,
    state: StateStore,
}

/// A description of `entries` (YAML list items) and one table that is never dropped.
fn description(entries: &str) -> String {
    format!(
        "# Uploads\n\n```yaml\ntables:\n  - {{id: drops.unused, name: unused, folder: uploads, description: Never dropped}}\n{entries}```\n"
    )
}

impl Env {
    fn new(entries: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("data_description.md"), description(entries)).unwrap();
        std::fs::create_dir_all(dir.path().join("drop")).unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        Self { dir, state }
    }

    fn drop_dir(&self) -> PathBuf {
        self.dir.path().join("drop")
    }

    /// Drops a file last modified `age_secs` ago.
    fn put(&self, name: &str, content: &[u8], age_secs: u64) {
        let path = self.drop_dir().join(name);
        std::fs::write(&path, content).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
    }

    fn table(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("parquet")
            .join("uploads")
            .join(format!("{name}.parquet"))
    }

    async fn sync(&self, mode: &str) -> SourceReport {
        let yaml = format!(
            "name: drops\ntype: files\npath: '{}'\nschema: uploads\nmode: {mode}\n",
            self.drop_dir().display()
        );
        let config: SourceConfig = yaml_serde::from_str(&yaml).unwrap();
        let state = std::sync::Arc::new(dataport_state::StateStore::open(self.dir.path()).unwrap());
        let dataport_connectors::Source::Pull(connector) =
            build(&config, self.dir.path(), &state, &|_: &str| None::<String>).unwrap()
        else {
            panic!("a files source is pulled")
        };
        sync_source(
            connector.as_ref(),
            self.dir.path(),
            &self.state,
            None,
            &SyncRequest::default(),
            &LogProgress,
        )
        .await
    }
}

fn ok(report: &SourceReport) {
    assert_eq!(report.outcome(), "ok", "{report:#?}");
}

/// Names of the files (not folders) directly in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Every file under `dir`, recursively, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `YYYYMMDDTHHMMSSZ-<original>`.
fn stamped(name: &str, original: &str) -> bool {
    let bytes = name.as_bytes();
    name.len() == 17 + original.len()
        && name.ends_with(&format!("-{original}"))
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[8] == b'T'
        && bytes[9..15].iter().all(u8::is_ascii_digit)
        && bytes[15] == b'Z'
}

async fn query(path: &Path, sql: &str) -> RecordBatch {
    let ctx = SessionContext::new();
    ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn data_type(batch: &RecordBatch, column: &str) -> DataType {
    batch
        .schema()
        .field_with_name(column)
        .unwrap()
        .data_type()
        .clone()
}

/// (DataFusion reads Parquet strings as views.)
fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View)
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<i64> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

/// A column's values as text.
fn text(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array =
        arrow::compute::cast(batch.column_by_name(column).unwrap(), &DataType::Utf8).unwrap();
    let strings = array.as_string::<i32>();
    (0..strings.len())
        .map(|i| strings.is_valid(i).then(|| strings.value(i).to_string()))
        .collect()
}

fn opt(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_string)).collect()
}

#[tokio::test]
async fn a_csv_drop_becomes_a_typed_table() {
    let env = Env::new("");
    let csv = "id,name,amount,day,active,note\n\
               1,\"Smith, John\",10.5,2024-06-01,true,\"line one\nline two\"\n\
               2,Anna,,2024-06-02,false,\n\
               3,\"Quote \"\"q\"\"\",3,,TRUE,plain\n";
    env.put("people.csv", csv.as_bytes(), 60);
    // Still uploading: left alone.
    env.put("people.csv.part", b"id\n99\n", 0);
    let report = env.sync("replace").await;
    ok(&report);
    assert_eq!(report.tables.len(), 1, "{report:#?}");
    assert_eq!(report.tables[0].table, "uploads.people");
    assert_eq!(report.tables[0].strategy, "replace");
    assert_eq!(report.tables[0].rows, 3);
    assert_eq!(report.tables[0].rows_received, 3);

    let b = query(&env.table("people"), "select * from t order by id").await;
    assert_eq!(data_type(&b, "id"), DataType::Int64);
    assert_eq!(data_type(&b, "amount"), DataType::Float64);
    assert_eq!(data_type(&b, "day"), DataType::Date32);
    assert_eq!(data_type(&b, "active"), DataType::Boolean);
    assert!(is_text(&data_type(&b, "name")));
    assert!(is_text(&data_type(&b, "note")));
    assert!(
        b.schema().field_with_name("__dp_seq").is_err(),
        "no internal column stored"
    );
    assert_eq!(ints(&b, "id"), vec![1, 2, 3]);
    let amount = b
        .column_by_name("amount")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert!((amount.value(0) - 10.5).abs() < 1e-9);
    assert!(amount.is_null(1), "empty field is NULL");
    assert!((amount.value(2) - 3.0).abs() < 1e-9);
    assert_eq!(
        text(&b, "day"),
        opt(&[Some("2024-06-01"), Some("2024-06-02"), None])
    );
    let active = b.column_by_name("active").unwrap().as_boolean();
    assert!(active.value(0) && !active.value(1) && active.value(2));
    assert_eq!(
        text(&b, "name"),
        opt(&[Some("Smith, John"), Some("Anna"), Some("Quote \"q\"")])
    );
    assert_eq!(
        text(&b, "note"),
        opt(&[Some("line one\nline two"), None, Some("plain")])
    );

    // The original went to processed/ with a time stamp; the upload in progress stays.
    assert_eq!(files_in(&env.drop_dir()), vec!["people.csv.part"]);
    let processed = files_in(&env.drop_dir().join("processed"));
    assert_eq!(processed.len(), 1, "{processed:?}");
    assert!(stamped(&processed[0], "people.csv"), "{processed:?}");

    // Nothing new: nothing to sync, the table stays.
    let report = env.sync("replace").await;
    ok(&report);
    assert!(report.tables.is_empty(), "{report:#?}");
    assert_eq!(
        ints(
            &query(&env.table("people"), "select id from t order by id").await,
            "id"
        ),
        vec![1, 2, 3]
    );
}

#[tokio::test]
async fn json_lines_parquet_and_gzip_drops() {
    let env = Env::new("");
    env.put(
        "clicks.jsonl",
        b"{\"id\": 1, \"page\": \"/a\", \"ms\": 1.5, \"ok\": true, \"extra\": null}\n\n{\"id\": 2, \"page\": \"/b\", \"ms\": 2, \"ok\": false}\n",
        30,
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("n", DataType::Int32, false),
        Field::new("label", DataType::Utf8, true),
        Field::new("v", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("x"), None, Some("z")])),
            Arc::new(Float64Array::from(vec![0.5, 1.5, 2.5])),
        ],
    )
    .unwrap();
    let mut parquet_bytes = Vec::new();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut parquet_bytes, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    env.put("metrics.parquet", &parquet_bytes, 30);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"code,qty\nA,1\nB,2\nC,\n").unwrap();
    env.put("stock.csv.gz", &gz.finish().unwrap(), 30);

    let report = env.sync("replace").await;
    ok(&report);
    let tables: Vec<&str> = report.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(
        tables,
        vec!["uploads.clicks", "uploads.metrics", "uploads.stock"]
    );

    let b = query(&env.table("clicks"), "select * from t order by id").await;
    assert_eq!(data_type(&b, "id"), DataType::Int64);
    assert_eq!(data_type(&b, "ms"), DataType::Float64);
    assert_eq!(data_type(&b, "ok"), DataType::Boolean);
    assert!(is_text(&data_type(&b, "page")));
    assert!(
        is_text(&data_type(&b, "extra")),
        "an all-null column is text"
    );
    assert_eq!(ints(&b, "id"), vec![1, 2]);
    assert_eq!(text(&b, "page"), opt(&[Some("/a"), Some("/b")]));
    let ms = b
        .column_by_name("ms")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert!((ms.value(0) - 1.5).abs() < 1e-9 && (ms.value(1) - 2.0).abs() < 1e-9);
    assert_eq!(text(&b, "extra"), opt(&[None, None]));

    let b = query(&env.table("metrics"), "select * from t order by n").await;
    assert_eq!(data_type(&b, "n"), DataType::Int32);
    assert_eq!(
        b.column_by_name("n")
            .unwrap()
            .as_primitive::<Int32Type>()
            .values()
            .to_vec(),
        vec![1, 2, 3]
    );
    assert_eq!(text(&b, "label"), opt(&[Some("x"), None, Some("z")]));
    assert_eq!(data_type(&b, "v"), DataType::Float64);

    let b = query(&env.table("stock"), "select * from t order by code").await;
    assert_eq!(data_type(&b, "qty"), DataType::Int64);
    assert_eq!(text(&b, "code"), opt(&[Some("A"), Some("B"), Some("C")]));
    assert_eq!(text(&b, "qty"), opt(&[Some("1"), Some("2"), None]));

    assert!(files_in(&env.drop_dir()).is_empty());
    assert_eq!(files_in(&env.drop_dir().join("processed")).len(), 3);
}

#[tokio::test]
async fn declared_column_types_override_inference() {
    let env = Env::new(concat!(
        "  - {id: drops.orders, name: orders, folder: uploads, description: Orders, primary_key: id, column_types: {code: STRING, price: \"NUMERIC(10,2)\"}}\n",
        "  - {id: drops.codes, name: codes, folder: uploads, description: Codes, column_types: {zip: INTEGER, amount: \"NUMERIC(10,2)\"}}\n",
    ));
    env.put(
        "orders.csv",
        b"id,code,price\n1,007,12.50\n2,042,3.1\n3,100,\n",
        30,
    );
    env.put(
        "codes.jsonl",
        b"{\"zip\": \"00501\", \"amount\": 12.5}\n{\"zip\": \"10001\", \"amount\": 7}\n",
        30,
    );
    ok(&env.sync("replace").await);

    let b = query(&env.table("orders"), "select * from t order by id").await;
    assert_eq!(data_type(&b, "id"), DataType::Int64);
    assert!(is_text(&data_type(&b, "code")));
    assert_eq!(data_type(&b, "price"), DataType::Decimal128(10, 2));
    assert_eq!(
        text(&b, "code"),
        opt(&[Some("007"), Some("042"), Some("100")])
    );
    assert_eq!(text(&b, "price"), opt(&[Some("12.50"), Some("3.10"), None]));

    let b = query(&env.table("codes"), "select * from t order by zip").await;
    assert_eq!(data_type(&b, "zip"), DataType::Int64);
    assert_eq!(data_type(&b, "amount"), DataType::Decimal128(10, 2));
    assert_eq!(ints(&b, "zip"), vec![501, 10001]);
    assert_eq!(text(&b, "amount"), opt(&[Some("12.50"), Some("7.00")]));
}

#[tokio::test]
async fn a_malformed_csv_is_rejected_and_the_table_kept() {
    let env = Env::new(
        "  - {id: drops.orders, name: orders, folder: uploads, description: Orders, column_types: {qty: INTEGER}}\n",
    );
    env.put("orders.csv", b"id,qty\n1,10\n2,20\n", 60);
    ok(&env.sync("replace").await);
    let table = env.table("orders");
    let before = std::fs::read(&table).unwrap();

    env.put("orders.csv", b"id,qty\n1,10\n2,20\n3,abc\n4,40\n", 30);
    let report = env.sync("replace").await;
    assert_eq!(report.outcome(), "error", "{report:#?}");
    let error = report.tables[0].error.clone().unwrap();
    assert!(
        error.contains("row 3") && error.contains("column 'qty'") && error.contains("abc"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&table).unwrap(),
        before,
        "the table is unchanged"
    );
    let state = env.state.sync_state("drops", "orders").unwrap().unwrap();
    assert_eq!(state.outcome, "error");

    // The file and its report are in rejected/.
    assert!(files_in(&env.drop_dir()).is_empty());
    let rejected_dir = env.drop_dir().join("rejected");
    let rejected = files_in(&rejected_dir);
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(stamped(&rejected[0], "orders.csv"), "{rejected:?}");
    assert_eq!(rejected[1], format!("{}.error.txt", rejected[0]));
    assert_eq!(
        std::fs::read(rejected_dir.join(&rejected[0])).unwrap(),
        b"id,qty\n1,10\n2,20\n3,abc\n4,40\n"
    );
    let report_text = std::fs::read_to_string(rejected_dir.join(&rejected[1])).unwrap();
    assert!(
        report_text.contains("uploads.orders")
            && report_text.contains("row: 3")
            && report_text.contains("column: qty")
            && report_text.contains("abc"),
        "{report_text}"
    );

    // Nothing staged or temporary is left behind.
    assert_eq!(walk(&env.dir.path().join("parquet")), vec![table.clone()]);
    assert!(walk(&env.dir.path().join("tmp")).is_empty());

    // A declared column the file does not have rejects it too.
    env.put("orders.csv", b"id,quantity\n5,50\n", 10);
    let report = env.sync("replace").await;
    let error = report.tables[0].error.clone().unwrap();
    assert!(
        error.contains("'qty'") && error.contains("column_types"),
        "{error}"
    );
    assert_eq!(std::fs::read(&table).unwrap(), before);
    assert_eq!(files_in(&rejected_dir).len(), 4);
}

#[tokio::test]
async fn a_broken_json_line_rejects_only_its_file() {
    let env = Env::new("");
    env.put("clicks.jsonl", b"{\"id\": 1, \"page\": \"/a\"}\n", 90);
    ok(&env.sync("append").await);
    let table = env.table("clicks");
    let before = std::fs::read(&table).unwrap();

    env.put("clicks.a.jsonl", b"{\"id\": 2, \"page\": \"/b\"}\n", 60);
    env.put(
        "clicks.b.jsonl",
        b"{\"id\": 3, \"page\": \"/c\"}\n{\"id\": 4, \"page\": }\n{\"id\": 5}\n",
        30,
    );
    let report = env.sync("append").await;
    assert_eq!(report.outcome(), "error", "{report:#?}");
    let error = report.tables[0].error.clone().unwrap();
    assert!(
        error.contains("row 2") && error.contains("(line)"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(&table).unwrap(),
        before,
        "the table is unchanged"
    );

    // The good file waits for the next run; the bad one is rejected with its report.
    assert_eq!(files_in(&env.drop_dir()), vec!["clicks.a.jsonl"]);
    let rejected = files_in(&env.drop_dir().join("rejected"));
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(stamped(&rejected[0], "clicks.b.jsonl"), "{rejected:?}");
    assert!(rejected[1].ends_with("-clicks.b.jsonl.error.txt"));
    assert!(walk(&env.dir.path().join("tmp")).is_empty());

    // The next run loads the good file.
    ok(&env.sync("append").await);
    let b = query(&table, "select id from t order by id").await;
    assert_eq!(ints(&b, "id"), vec![1, 2]);
    assert!(files_in(&env.drop_dir()).is_empty());
}

#[tokio::test]
async fn append_merges_by_primary_key_and_replace_replaces() {
    let env = Env::new(
        "  - {id: drops.events, name: events, folder: uploads, description: Events, primary_key: id}\n",
    );
    let table = env.table("events");
    env.put("events.csv", b"id,v\n1,a\n2,b\n", 100);
    ok(&env.sync("append").await);

    // The second drop updates key 2 and adds key 3.
    env.put("events.csv", b"id,v\n2,B\n3,c\n", 90);
    let report = env.sync("append").await;
    ok(&report);
    assert_eq!(report.tables[0].strategy, "append");
    assert_eq!(report.tables[0].rows, 3);
    let b = query(&table, "select id, v from t order by id").await;
    assert_eq!(ints(&b, "id"), vec![1, 2, 3]);
    assert_eq!(text(&b, "v"), opt(&[Some("a"), Some("B"), Some("c")]));
    assert_eq!(files_in(&env.drop_dir().join("processed")).len(), 2);

    // Two drops in one run: the newer one wins, whatever the names.
    env.put("events.b.csv", b"id,v\n3,older\n4,d\n", 60);
    env.put("events.a.csv", b"id,v\n3,newer\n", 30);
    ok(&env.sync("append").await);
    let b = query(&table, "select id, v from t order by id").await;
    assert_eq!(ints(&b, "id"), vec![1, 2, 3, 4]);
    assert_eq!(
        text(&b, "v"),
        opt(&[Some("a"), Some("B"), Some("newer"), Some("d")])
    );

    // In replace mode a drop replaces the table.
    env.put("events.csv", b"id,v\n9,z\n", 10);
    ok(&env.sync("replace").await);
    let b = query(&table, "select id, v from t order by id").await;
    assert_eq!(ints(&b, "id"), vec![9]);
    assert_eq!(text(&b, "v"), opt(&[Some("z")]));
    assert!(files_in(&env.drop_dir()).is_empty());
}

#[tokio::test]
async fn in_replace_mode_the_newest_file_wins() {
    let env = Env::new("");
    // The names sort the other way round from the ages.
    env.put("items.a.csv", b"id,name\n2,new\n", 10);
    env.put("items.b.csv", b"id,name\n1,old\n", 100);
    let report = env.sync("replace").await;
    ok(&report);
    assert_eq!(report.tables.len(), 1, "{report:#?}");
    let b = query(&env.table("items"), "select id, name from t").await;
    assert_eq!(ints(&b, "id"), vec![2]);
    assert_eq!(text(&b, "name"), opt(&[Some("new")]));
    // Both are done with: the older one was superseded.
    assert!(files_in(&env.drop_dir()).is_empty());
    let processed = files_in(&env.drop_dir().join("processed"));
    assert_eq!(processed.len(), 2, "{processed:?}");
    assert!(
        processed.iter().any(|n| stamped(n, "items.a.csv")),
        "{processed:?}"
    );
    assert!(
        processed.iter().any(|n| stamped(n, "items.b.csv")),
        "{processed:?}"
    );
}

#[test]
fn a_schema_that_is_no_identifier_is_refused() {
    let config: SourceConfig =
        yaml_serde::from_str("name: drops\ntype: files\npath: drop\nschema: Up Loads\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = std::sync::Arc::new(dataport_state::StateStore::open(dir.path()).unwrap());
    match build(&config, dir.path(), &state, &|_: &str| None::<String>) {
        Ok(_) => panic!("a bad schema name was accepted"),
        Err(e) => assert!(e.to_string().contains("schema 'Up Loads'"), "{e}"),
    }
}

/// A CSV of `rows` rows, `id` numbering them from 0, then the columns `other` gives per row.
fn numbered_csv(header: &str, rows: usize, other: impl Fn(usize) -> String) -> Vec<u8> {
    let mut csv = format!("id,{header}\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},{}\n", other(i)));
    }
    csv.into_bytes()
}

#[tokio::test]
async fn types_come_from_every_row_not_only_the_first() {
    let env = Env::new("");
    let sample = dataport_connectors::typed::SAMPLE_ROWS;
    // Past the rows that decide the types first: a float among integers, a code among
    // numbers, the first value of a column empty until then.
    let csv = numbered_csv("n,code,late,day", sample + 10, |i| {
        let n = if i == sample + 5 {
            "1.5".to_string()
        } else {
            i.to_string()
        };
        let code = if i == sample + 7 {
            "A7".to_string()
        } else {
            (i % 100).to_string()
        };
        let late = if i == sample + 3 { "42" } else { "" };
        format!("{n},{code},{late},2024-06-01")
    });
    env.put("big.csv", &csv, 60);
    let report = env.sync("replace").await;
    ok(&report);
    assert_eq!(report.tables[0].rows, (sample + 10) as u64);
    let b = query(
        &env.table("big"),
        &format!(
            "select * from t where id in (5, {}, {}, {}) order by id",
            sample + 3,
            sample + 5,
            sample + 7
        ),
    )
    .await;
    assert_eq!(data_type(&b, "id"), DataType::Int64);
    assert_eq!(data_type(&b, "n"), DataType::Float64);
    assert!(is_text(&data_type(&b, "code")));
    assert_eq!(data_type(&b, "late"), DataType::Int64);
    assert_eq!(data_type(&b, "day"), DataType::Date32);
    assert_eq!(
        text(&b, "n"),
        opt(&[
            Some("5.0"),
            Some(&format!("{}.0", sample + 3)),
            Some("1.5"),
            Some(&format!("{}.0", sample + 7))
        ])
    );
    let code = |i: usize| (i % 100).to_string();
    assert_eq!(
        text(&b, "code"),
        opt(&[
            Some("5"),
            Some(&code(sample + 3)),
            Some(&code(sample + 5)),
            Some("A7")
        ])
    );
    assert_eq!(text(&b, "late"), opt(&[None, Some("42"), None, None]));
    // Only the table is left: no staged or temporary file of either conversion.
    assert_eq!(
        walk(&env.dir.path().join("parquet")),
        vec![env.table("big")]
    );
    assert!(walk(&env.dir.path().join("tmp")).is_empty());
}

#[tokio::test]
async fn a_bad_value_after_the_first_rows_rejects_the_file_with_its_row() {
    let env = Env::new("");
    let sample = dataport_connectors::typed::SAMPLE_ROWS;
    // Shaped like a date, so the column stays a date column, but no day of the calendar.
    let csv = numbered_csv("day", sample + 10, |i| {
        if i == sample + 4 {
            "2024-13-45".into()
        } else {
            "2024-06-01".into()
        }
    });
    env.put("days.csv", &csv, 60);
    let report = env.sync("replace").await;
    assert_eq!(report.outcome(), "error", "{report:#?}");
    let error = report.tables[0].error.clone().unwrap();
    assert!(
        error.contains(&format!("row {}", sample + 5))
            && error.contains("column 'day'")
            && error.contains("2024-13-45"),
        "{error}"
    );
    assert!(!env.table("days").exists());
    assert!(walk(&env.dir.path().join("parquet")).is_empty());
    assert_eq!(files_in(&env.drop_dir().join("rejected")).len(), 2);
}

#[tokio::test]
async fn append_without_a_primary_key_keeps_every_row() {
    let env = Env::new("");
    let table = env.table("log");
    env.put("log.csv", b"id,v\n1,a\n", 100);
    ok(&env.sync("append").await);
    env.put("log.csv", b"id,v\n1,a\n2,b\n", 50);
    ok(&env.sync("append").await);
    let b = query(&table, "select id, v from t order by id, v").await;
    assert_eq!(ints(&b, "id"), vec![1, 1, 2]);
    assert_eq!(text(&b, "v"), opt(&[Some("a"), Some("a"), Some("b")]));
    assert!(b.schema().field_with_name("__dp_seq").is_err());
}
