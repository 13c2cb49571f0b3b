//! The Keboola connector end to end against the Storage API double: strategies, types,
//! quirks, retries, drift, failures.

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use dataport_connectors::{
    LogProgress, SourceConfig, SourceReport, SyncRequest, build, sync_source,
};
use dataport_state::{StateStore, now_secs};

use crate::keboola_double::{DoubleOptions, DoubleRow, DoubleTable, KeboolaDouble};

const DAY: i64 = 86_400;

fn row(values: &[Option<&str>], changed_at: i64) -> DoubleRow {
    DoubleRow {
        values: values.iter().map(|v| v.map(str::to_string)).collect(),
        changed_at,
    }
}

fn meta(column: &str, key: &str, value: &str, provider: &str) -> (String, String, String, String) {
    (column.into(), key.into(), value.into(), provider.into())
}

fn orders(rows: Vec<DoubleRow>) -> DoubleTable {
    DoubleTable {
        id: "in.c-crm.orders".into(),
        name: "orders".into(),
        bucket: "in.c-crm".into(),
        columns: vec![
            "id".into(),
            "amount".into(),
            "note".into(),
            "created_at".into(),
        ],
        primary_key: vec!["id".into()],
        column_metadata: vec![
            meta("id", "KBC.datatype.basetype", "INTEGER", "user"),
            meta("amount", "KBC.datatype.basetype", "NUMERIC", "user"),
            meta("created_at", "KBC.datatype.basetype", "DATE", "user"),
        ],
        rows,
    }
}

/// Rows `0..n`, created `n - i` days ago, changed at creation.
fn order_rows(n: i64, now: i64) -> Vec<DoubleRow> {
    (0..n)
        .map(|i| {
            let at = now - (n - i) * DAY;
            let date = chrono::DateTime::from_timestamp(at, 0)
                .unwrap()
                .format("%Y-%m-%d")
                .to_string();
            let id = i.to_string();
            let amount = format!("{}.5", i * 10);
            let note = format!("note {i}, \"quoted\"\nsecond line");
            row(&[Some(&id), Some(&amount), Some(&note), Some(&date)], at)
        })
        .collect()
}

pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) state: StateStore,
}

pub(crate) fn env(description: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("data_description.md"), description).unwrap();
    let state = StateStore::open(dir.path()).unwrap();
    Env { dir, state }
}

fn config(double: &KeboolaDouble) -> SourceConfig {
    let yaml = format!(
        "name: kbc\ntype: keboola\nurl: {}\ntoken_env: KBC_TOKEN\npoll_interval_ms: 5\nretry_backoff_ms: 5\njob_timeout_secs: 20\n",
        double.base_url
    );
    yaml_serde::from_str(&yaml).unwrap()
}

fn token(name: &str) -> Option<String> {
    (name == "KBC_TOKEN").then(|| "test-token".to_string())
}

pub(crate) async fn sync(env: &Env, double: &KeboolaDouble, request: SyncRequest) -> SourceReport {
    let state = std::sync::Arc::new(dataport_state::StateStore::open(env.dir.path()).unwrap());
    let dataport_connectors::Source::Pull(connector) =
        build(&config(double), env.dir.path(), &state, &token).unwrap()
    else {
        panic!("a Keboola source is pulled")
    };
    sync_source(
        connector.as_ref(),
        env.dir.path(),
        &env.state,
        None,
        &request,
        &LogProgress,
    )
    .await
}

pub(crate) fn ok(report: &SourceReport) {
    assert_eq!(report.outcome(), "ok", "{report:#?}");
}

pub(crate) async fn query(path: &Path, sql: &str) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

async fn ids(path: &Path) -> Vec<i64> {
    let batches = query(path, "select id from t order by id").await;
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

fn description(entries: &str) -> String {
    format!(
        "# Test\n\n```yaml\nfolder_mapping: {{\"in.c-crm\": \"sales\"}}\ntables:\n{entries}```\n"
    )
}

#[tokio::test]
async fn full_refresh_types_quirks_and_token_hygiene() {
    let now = now_secs();
    let mut rows = order_rows(7, now);
    // NULL and empty both arrive as empty fields.
    rows.push(row(&[Some("100"), None, Some(""), None], now));
    let double = KeboolaDouble::start(
        vec![orders(rows)],
        DoubleOptions {
            sliced: true,
            slice_rows: 3,
            ..DoubleOptions::default()
        },
    )
    .await;
    let env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: Orders, primary_key: id, sync_strategy: full_refresh}\n",
    ));
    let report = sync(&env, &double, SyncRequest::default()).await;
    ok(&report);
    assert_eq!(report.tables[0].rows, 8);
    let file = env.dir.path().join("parquet/sales/orders.parquet");
    let batches = query(&file, "select * from t order by id").await;
    let schema = batches[0].schema();
    assert_eq!(
        schema.field_with_name("id").unwrap().data_type(),
        &DataType::Int64
    );
    assert_eq!(
        schema.field_with_name("amount").unwrap().data_type(),
        &DataType::Float64
    );
    // (DataFusion reads Parquet strings as views.)
    assert!(matches!(
        schema.field_with_name("note").unwrap().data_type(),
        DataType::Utf8 | DataType::Utf8View
    ));
    assert_eq!(
        schema.field_with_name("created_at").unwrap().data_type(),
        &DataType::Date32
    );
    assert!(
        schema.field_with_name("__dp_seq").is_err(),
        "no internal column stored"
    );
    let notes = arrow::compute::concat_batches(&schema, &batches).unwrap();
    let note =
        arrow::compute::cast(notes.column_by_name("note").unwrap(), &DataType::Utf8).unwrap();
    let note = note.as_string::<i32>();
    assert_eq!(note.value(3), "note 3, \"quoted\"\nsecond line");
    assert!(note.is_null(7), "empty field is NULL");
    // The token went to the API only, never to the storage provider's URLs.
    let requests = double.requests();
    assert!(requests.iter().any(|r| r.path.starts_with("/s3/")));
    for r in &requests {
        assert_eq!(r.had_token, r.path.starts_with("/v2/"), "{r:?}");
    }
    // The sync state is recorded.
    let state = env
        .state
        .sync_state("kbc", "in.c-crm.orders")
        .unwrap()
        .unwrap();
    assert_eq!(state.outcome, "ok");
    assert_eq!(state.rows, 8);
    assert_eq!(state.columns, 4);
    assert!(state.last_sync.is_some());
}

#[tokio::test]
async fn incremental_equals_full_refresh_of_the_same_source() {
    let now = now_secs();
    let double =
        KeboolaDouble::start(vec![orders(order_rows(40, now))], DoubleOptions::default()).await;
    // Two servers syncing the same source, one incrementally, one by full refreshes.
    let inc_env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: Inc, primary_key: id, sync_strategy: incremental, incremental_window_days: 2}\n",
    ));
    let full_env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: Full, primary_key: id, sync_strategy: full_refresh}\n",
    ));
    ok(&sync(&inc_env, &double, SyncRequest::default()).await);
    // Changes at the source: rows 5 and 39 updated just now, two new rows.
    let mut rows = order_rows(40, now);
    rows[5] = row(
        &[
            Some("5"),
            Some("999.5"),
            Some("changed"),
            Some("2020-01-01"),
        ],
        now,
    );
    rows[39] = row(
        &[
            Some("39"),
            Some("1.5"),
            Some("changed too"),
            Some("2020-01-02"),
        ],
        now,
    );
    rows.push(row(&[Some("40"), Some("2.5"), None, None], now));
    rows.push(row(&[Some("41"), Some("3.5"), None, None], now));
    double.set_rows("in.c-crm.orders", rows);
    double.clear_requests();
    ok(&sync(&inc_env, &double, SyncRequest::default()).await);
    // The second incremental export asked only for the window before the last sync.
    let exports = double.exports();
    let since: i64 = exports
        .last()
        .unwrap()
        .iter()
        .find(|(k, _)| k == "changedSince")
        .expect("an incremental export")
        .1
        .parse()
        .unwrap();
    assert!(
        since <= now - 2 * DAY + 5 && since >= now - 2 * DAY - 60,
        "since {since}"
    );
    ok(&sync(&full_env, &double, SyncRequest::default()).await);
    let inc = inc_env.dir.path().join("parquet/sales/orders.parquet");
    let full = full_env.dir.path().join("parquet/sales/orders.parquet");
    let sql = "select id, amount, note, created_at from t order by id";
    let a = arrow::util::pretty::pretty_format_batches(&query(&inc, sql).await)
        .unwrap()
        .to_string();
    let b = arrow::util::pretty::pretty_format_batches(&query(&full, sql).await)
        .unwrap()
        .to_string();
    assert_eq!(a, b);
    assert_eq!(ids(&inc).await, (0..42).collect::<Vec<_>>());
    assert!(a.contains("999.5") && a.contains("changed too"));
}

#[tokio::test]
async fn chunked_initial_load_loses_and_duplicates_nothing() {
    let now = now_secs();
    // 150 rows, one per day back to 150 days ago: 5+ chunks of 30 days, then 2 empty ones.
    let double =
        KeboolaDouble::start(vec![orders(order_rows(150, now))], DoubleOptions::default()).await;
    let env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: O, primary_key: id, sync_strategy: incremental, partition_by: created_at, partition_granularity: month, initial_load_chunk_days: 30}\n",
    ));
    let report = sync(&env, &double, SyncRequest::default()).await;
    ok(&report);
    let windows: Vec<(i64, i64)> = double
        .exports()
        .iter()
        .map(|f| {
            let get = |k: &str| {
                f.iter()
                    .find(|(n, _)| n == k)
                    .unwrap()
                    .1
                    .parse::<i64>()
                    .unwrap()
            };
            (get("changedSince"), get("changedUntil"))
        })
        .collect();
    assert!(windows.len() >= 7, "{windows:?}");
    for pair in windows.windows(2) {
        // Walking back, each chunk overlaps the next older one by one day.
        assert_eq!(pair[1].1, pair[0].0 + DAY, "{windows:?}");
        assert_eq!(pair[0].1 - pair[0].0, 30 * DAY);
    }
    // Stopped after two empty chunks.
    let oldest_row = now - 150 * DAY;
    let empty: Vec<_> = windows.iter().filter(|w| w.1 <= oldest_row).collect();
    assert_eq!(empty.len(), 2, "{windows:?}");
    let dir = env.dir.path().join("parquet/sales/orders");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.len() >= 5, "{files:?}");
    assert!(
        files
            .iter()
            .all(|f| f.len() == "2026_01.parquet".len() && f.ends_with(".parquet")),
        "{files:?}"
    );
    assert_eq!(ids(&dir).await, (0..150).collect::<Vec<_>>());
}

#[tokio::test]
async fn where_filters_are_encoded_as_the_spec_says() {
    let now = now_secs();
    let double =
        KeboolaDouble::start(vec![orders(order_rows(20, now))], DoubleOptions::default()).await;
    let env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: O, primary_key: id, sync_strategy: incremental, columns: [id, created_at], where_filters: [{column: created_at, operator: ge, values: [\"{{last_week}}\"]}, {column: id, operator: ne, values: [\"3\", \"4\"]}]}\n",
    ));
    let report = sync(&env, &double, SyncRequest::default()).await;
    ok(&report);
    let week_ago = (chrono::Utc::now() - chrono::Duration::days(7))
        .format("%Y-%m-%d")
        .to_string();
    let form = &double.exports()[0];
    let expect: Vec<(String, String)> = [
        ("format", "rfc"),
        ("gzip", "1"),
        ("columns", "id,created_at"),
        ("whereFilters[0][column]", "created_at"),
        ("whereFilters[0][operator]", "ge"),
        ("whereFilters[0][values][0]", week_ago.as_str()),
        ("whereFilters[1][column]", "id"),
        ("whereFilters[1][operator]", "ne"),
        ("whereFilters[1][values][0]", "3"),
        ("whereFilters[1][values][1]", "4"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(form, &expect);
    let file = env.dir.path().join("parquet/sales/orders.parquet");
    let got = ids(&file).await;
    assert!(!got.is_empty() && got.len() <= 8, "{got:?}");
    let cols = query(&file, "select * from t").await[0].schema();
    assert_eq!(cols.fields().len(), 2);
    // A second run uses the plain export path again (no changedSince).
    ok(&sync(&env, &double, SyncRequest::default()).await);
    assert!(double.exports()[1].iter().all(|(k, _)| k != "changedSince"));
}

#[tokio::test]
async fn intermittent_server_errors_are_retried() {
    let now = now_secs();
    let double = KeboolaDouble::start(
        vec![orders(order_rows(10, now))],
        DoubleOptions {
            fail_every_nth_request: Some(3),
            sliced: true,
            ..DoubleOptions::default()
        },
    )
    .await;
    let env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: O, primary_key: id, sync_strategy: full_refresh}\n",
    ));
    ok(&sync(&env, &double, SyncRequest::default()).await);
    assert!(double.requests().iter().any(|r| r.status == 500));
    assert_eq!(
        ids(&env.dir.path().join("parquet/sales/orders.parquet"))
            .await
            .len(),
        10
    );
}

#[tokio::test]
async fn schema_drift_adds_columns_and_refuses_incompatible_types() {
    let now = now_secs();
    let double =
        KeboolaDouble::start(vec![orders(order_rows(5, now))], DoubleOptions::default()).await;
    let env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: O, primary_key: id, sync_strategy: incremental}\n",
    ));
    ok(&sync(&env, &double, SyncRequest::default()).await);
    double.add_column("in.c-crm.orders", "channel", Some("web"));
    let mut rows = order_rows(5, now);
    for r in &mut rows {
        r.values.push(Some("web".into()));
    }
    rows.push(row(&[Some("9"), Some("1"), None, None, Some("shop")], now));
    double.set_rows("in.c-crm.orders", rows);
    ok(&sync(&env, &double, SyncRequest::default()).await);
    let file = env.dir.path().join("parquet/sales/orders.parquet");
    let batches = query(&file, "select id, channel from t order by id").await;
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(text.contains("shop"), "{text}");
    assert_eq!(ids(&file).await, vec![0, 1, 2, 3, 4, 9]);

    // `amount` becomes text at the source: the table fails, the stored one is unchanged.
    let before = std::fs::read(&file).unwrap();
    double.set_column_metadata(
        "in.c-crm.orders",
        vec![
            meta("id", "KBC.datatype.basetype", "INTEGER", "user"),
            meta("amount", "KBC.datatype.basetype", "STRING", "user"),
        ],
    );
    let report = sync(&env, &double, SyncRequest::default()).await;
    assert_eq!(report.outcome(), "error");
    let error = report.tables[0].error.clone().unwrap();
    assert!(
        error.contains("'amount'") && error.contains("Float64") && error.contains("Utf8"),
        "{error}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let state = env
        .state
        .sync_state("kbc", "in.c-crm.orders")
        .unwrap()
        .unwrap();
    assert_eq!(state.outcome, "error");
    assert!(state.last_sync.is_some(), "the last success is kept");
}

#[tokio::test]
async fn one_failing_table_does_not_stop_the_others() {
    let now = now_secs();
    let mut customers = orders(order_rows(3, now));
    customers.id = "in.c-crm.customers".into();
    customers.name = "customers".into();
    let double = KeboolaDouble::start(
        vec![orders(order_rows(3, now)), customers],
        DoubleOptions {
            fail_jobs_for: ["in.c-crm.orders".to_string()].into_iter().collect(),
            ..DoubleOptions::default()
        },
    )
    .await;
    let env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: O, primary_key: id, sync_strategy: full_refresh}\n  - {id: in.c-crm.customers, name: customers, description: C, primary_key: id, sync_strategy: full_refresh}\n",
    ));
    let report = sync(&env, &double, SyncRequest::default()).await;
    assert_eq!(report.outcome(), "partial", "{report:#?}");
    assert!(
        report.tables[0]
            .error
            .as_deref()
            .unwrap()
            .contains("failed")
    );
    assert!(report.tables[1].error.is_none());
    assert!(
        env.dir
            .path()
            .join("parquet/sales/customers.parquet")
            .exists()
    );
    assert!(!env.dir.path().join("parquet/sales/orders.parquet").exists());
    // Only one table on request.
    let report = sync(
        &env,
        &double,
        SyncRequest {
            table: Some("sales.customers".into()),
            full: false,
        },
    )
    .await;
    ok(&report);
    assert_eq!(report.tables.len(), 1);
}

#[tokio::test]
async fn partitioned_tables_split_by_month_and_merge() {
    let now = now_secs();
    let double =
        KeboolaDouble::start(vec![orders(order_rows(90, now))], DoubleOptions::default()).await;
    let env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: O, primary_key: id, sync_strategy: partitioned, partition_by: created_at}\n",
    ));
    ok(&sync(&env, &double, SyncRequest::default()).await);
    let dir = env.dir.path().join("parquet/sales/orders");
    let count = std::fs::read_dir(&dir).unwrap().count();
    assert!((3..=5).contains(&count), "{count} partition files");
    // The source now only has the last 10 days (plus one row changed): older partitions stay.
    let mut rows = order_rows(90, now);
    rows.drain(..80);
    rows[0].values[1] = Some("12345.5".into());
    double.set_rows("in.c-crm.orders", rows);
    ok(&sync(&env, &double, SyncRequest::default()).await);
    assert_eq!(ids(&dir).await, (0..90).collect::<Vec<_>>());
    let batches = query(&dir, "select amount from t where id = 80").await;
    assert_eq!(
        batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Float64Type>()
            .value(0),
        12345.5
    );
    // No journals, temporary files or staging left behind.
    let leftovers: Vec<_> = walk(env.dir.path())
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with('.')
                || n.ends_with(".tmp")
                || p.starts_with(env.dir.path().join("tmp/sync")) && p.is_file()
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_missing_token_is_a_clear_configuration_error() {
    let double = KeboolaDouble::start(vec![], DoubleOptions::default()).await;
    let env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: O}\n",
    ));
    let state = std::sync::Arc::new(dataport_state::StateStore::open(env.dir.path()).unwrap());
    let Err(err) = build(&config(&double), env.dir.path(), &state, &|_| None) else {
        panic!("a missing token must fail");
    };
    let err = err.to_string();
    assert!(err.contains("KBC_TOKEN") && err.contains("kbc"), "{err}");
}

#[tokio::test]
async fn a_table_without_column_metadata_is_text() {
    let now = now_secs();
    let mut t = orders(order_rows(4, now));
    t.column_metadata.clear(); // the API answers `columnMetadata: []`
    let double = KeboolaDouble::start(vec![t], DoubleOptions::default()).await;
    let env = env(&description(
        "  - {id: in.c-crm.orders, name: orders, description: O, primary_key: id, sync_strategy: full_refresh}\n",
    ));
    ok(&sync(&env, &double, SyncRequest::default()).await);
    let file = env.dir.path().join("parquet/sales/orders.parquet");
    let batches = query(&file, "select * from t order by id").await;
    for f in batches[0].schema().fields() {
        assert!(
            matches!(f.data_type(), DataType::Utf8 | DataType::Utf8View),
            "{f:?}"
        );
    }
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
}
