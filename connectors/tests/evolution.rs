//! Schema evolution under every Keboola sync strategy: a column new at the source, a column
//! dropped at the source, a column whose type widens; and `column_types` winning over
//! Keboola's metadata.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use dataport_state::now_secs;

use crate::keboola::{Env, env, ok, query, sync};
use crate::keboola_double::{DoubleOptions, DoubleRow, DoubleTable, KeboolaDouble};
use dataport_connectors::SyncRequest;

const DAY: i64 = 86_400;
const TABLE: &str = "in.c-crm.items";
const ROWS: i64 = 40;

fn meta(column: &str, value: &str) -> (String, String, String, String) {
    (
        column.into(),
        "KBC.datatype.basetype".into(),
        value.into(),
        "user".into(),
    )
}

/// `items`: id, qty (INTEGER), note, created_at (DATE); row `i` created `ROWS - i` days ago.
fn items(now: i64) -> DoubleTable {
    let rows = (0..ROWS)
        .map(|i| {
            let at = now - (ROWS - i) * DAY;
            let date = chrono::DateTime::from_timestamp(at, 0)
                .unwrap()
                .format("%Y-%m-%d")
                .to_string();
            DoubleRow {
                values: vec![
                    Some(i.to_string()),
                    Some((i * 10).to_string()),
                    Some(format!("note {i}")),
                    Some(date),
                ],
                changed_at: at,
            }
        })
        .collect();
    DoubleTable {
        id: TABLE.into(),
        name: "items".into(),
        bucket: "in.c-crm".into(),
        columns: ["id", "qty", "note", "created_at"]
            .map(String::from)
            .to_vec(),
        primary_key: vec!["id".into()],
        column_metadata: vec![
            meta("id", "INTEGER"),
            meta("qty", "INTEGER"),
            meta("created_at", "DATE"),
        ],
        rows,
    }
}

fn description(strategy: &str) -> String {
    format!(
        "# Test\n\n```yaml\nfolder_mapping: {{\"in.c-crm\": \"sales\"}}\ntables:\n  - {{id: {TABLE}, name: items, description: I, primary_key: id, {strategy}}}\n```\n"
    )
}

/// Where the table is: one file, or a folder of partitions.
fn table_path(env: &Env, partitioned: bool) -> PathBuf {
    let base = env.dir.path().join("parquet/sales/items");
    if partitioned {
        base
    } else {
        base.with_extension("parquet")
    }
}

async fn count(path: &Path) -> i64 {
    let b = query(path, "select count(*) from t").await;
    b[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn text(path: &Path, sql: &str) -> Option<String> {
    let b = query(path, sql).await;
    let c = b[0].column(0);
    let c = arrow::compute::cast(c, &DataType::Utf8).unwrap();
    let s = c.as_string::<i32>();
    (!s.is_null(0)).then(|| s.value(0).to_string())
}

/// Changes row `id` at the source: `f` edits its values, and it counts as changed `at`.
fn change(
    double: &KeboolaDouble,
    rows: &mut [DoubleRow],
    id: usize,
    at: i64,
    f: impl FnOnce(&mut Vec<Option<String>>),
) {
    f(&mut rows[id].values);
    rows[id].changed_at = at;
    double.set_rows(TABLE, rows.to_vec());
}

/// What a strategy's later syncs do with the stored table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Later {
    /// Replace it: a dropped column leaves the table.
    Replace,
    /// Merge every row of the source into it: the column stays, empty in every re-sent row.
    MergeAll,
    /// Merge the rows changed since the last sync: stored rows keep their values.
    MergeChanged,
}

/// One strategy through the three kinds of drift.
async fn evolve(strategy: &str, partitioned: bool, later: Later) {
    let now = now_secs();
    let double = KeboolaDouble::start(vec![items(now)], DoubleOptions::default()).await;
    let env = env(&description(strategy));
    ok(&sync(&env, &double, SyncRequest::default()).await);
    let path = table_path(&env, partitioned);
    assert_eq!(count(&path).await, ROWS, "{strategy}: first sync");
    let mut rows = items(now).rows;

    // A column new at the source.
    double.add_column(TABLE, "channel", Some("web"));
    for r in &mut rows {
        r.values.push(Some("web".into()));
    }
    change(&double, &mut rows, 39, now, |v| v[4] = Some("shop".into()));
    ok(&sync(&env, &double, SyncRequest::default()).await);
    assert_eq!(count(&path).await, ROWS, "{strategy}: new column");
    assert_eq!(
        text(&path, "select channel from t where id = 39")
            .await
            .as_deref(),
        Some("shop"),
        "{strategy}: new column"
    );

    // A column dropped at the source.
    double.drop_column(TABLE, "note");
    for r in &mut rows {
        r.values.remove(2);
    }
    change(&double, &mut rows, 38, now + 1, |v| {
        v[1] = Some("1000".into())
    });
    ok(&sync(&env, &double, SyncRequest::default()).await);
    assert_eq!(count(&path).await, ROWS, "{strategy}: dropped column");
    assert_eq!(
        text(&path, "select qty from t where id = 38")
            .await
            .as_deref(),
        Some("1000"),
        "{strategy}: dropped column"
    );
    let columns = query(&path, "select * from t limit 1").await[0].schema();
    let note_of_0 = text(&path, "select note from t where id = 0");
    match later {
        Later::Replace => {
            assert!(
                columns.field_with_name("note").is_err(),
                "{strategy}: {columns:?}"
            );
        }
        Later::MergeAll => assert_eq!(note_of_0.await, None, "{strategy}: dropped column"),
        Later::MergeChanged => {
            assert_eq!(
                note_of_0.await.as_deref(),
                Some("note 0"),
                "{strategy}: dropped column"
            );
        }
    }
    if later != Later::Replace {
        // Rows received without the column have no value in it.
        assert_eq!(
            text(&path, "select note from t where id = 38").await,
            None,
            "{strategy}: dropped column"
        );
    }

    // A column whose type widens (INTEGER -> NUMERIC).
    double.set_column_metadata(
        TABLE,
        vec![
            meta("id", "INTEGER"),
            meta("qty", "NUMERIC"),
            meta("created_at", "DATE"),
        ],
    );
    change(&double, &mut rows, 37, now + 2, |v| {
        v[1] = Some("2.5".into())
    });
    ok(&sync(&env, &double, SyncRequest::default()).await);
    assert_eq!(count(&path).await, ROWS, "{strategy}: widened type");
    let b = query(&path, "select qty from t where id in (0, 37) order by id").await;
    assert_eq!(
        b[0].schema().field(0).data_type(),
        &DataType::Float64,
        "{strategy}"
    );
    let qty = b[0].column(0).as_primitive::<Float64Type>();
    assert_eq!(
        (qty.value(0), qty.value(1)),
        (0.0, 2.5),
        "{strategy}: widened type"
    );
}

#[tokio::test]
async fn full_refresh_follows_every_drift() {
    evolve("sync_strategy: full_refresh", false, Later::Replace).await;
}

#[tokio::test]
async fn incremental_follows_every_drift() {
    evolve("sync_strategy: incremental", false, Later::MergeChanged).await;
}

#[tokio::test]
async fn partitioned_follows_every_drift() {
    evolve(
        "sync_strategy: partitioned, partition_by: created_at",
        true,
        Later::MergeAll,
    )
    .await;
}

#[tokio::test]
async fn incremental_with_partition_by_follows_every_drift() {
    evolve(
        "sync_strategy: incremental, partition_by: created_at",
        true,
        Later::MergeChanged,
    )
    .await;
}

#[tokio::test]
async fn column_types_win_over_keboola_metadata() {
    let now = now_secs();
    let double = KeboolaDouble::start(vec![items(now)], DoubleOptions::default()).await;
    let env = env(&description(
        "sync_strategy: full_refresh, column_types: {qty: \"NUMERIC(12,2)\", id: STRING}",
    ));
    ok(&sync(&env, &double, SyncRequest::default()).await);
    let path = table_path(&env, false);
    let b = query(&path, "select id, qty from t limit 1").await;
    let schema = b[0].schema();
    assert!(
        matches!(
            schema.field(0).data_type(),
            DataType::Utf8 | DataType::Utf8View
        ),
        "{schema:?}"
    );
    assert_eq!(schema.field(1).data_type(), &DataType::Decimal128(12, 2));

    // A declared column the source does not export is a clear error; the table stays.
    let env2 = crate::keboola::env(&description(
        "sync_strategy: full_refresh, column_types: {qtty: INTEGER}",
    ));
    let report = sync(&env2, &double, SyncRequest::default()).await;
    assert_eq!(report.outcome(), "error", "{report:#?}");
    let error = report.tables[0].error.clone().unwrap();
    assert!(
        error.contains("column_types for 'qtty'") && error.contains(TABLE) && error.contains("qty"),
        "{error}"
    );
}
