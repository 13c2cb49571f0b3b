//! Profiles of small constructed tables with exactly known statistics.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use dataport_catalog::profile::{ProfileContext, ProfileOptions, TableProfile, profile_table};

async fn profile(columns: Vec<(&str, ArrayRef)>, key: &[&str]) -> TableProfile {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
    let context = ProfileContext {
        table_id: "s.t".into(),
        primary_key: key.iter().map(|k| k.to_string()).collect(),
        ..ProfileContext::default()
    };
    profile_table(Arc::new(table), &context, &ProfileOptions::default())
        .await
        .unwrap()
}

fn kinds(p: &TableProfile, column: &str) -> Vec<String> {
    p.columns
        .iter()
        .find(|c| c.name == column)
        .unwrap()
        .alerts
        .iter()
        .map(|a| a.kind.clone())
        .collect()
}

#[tokio::test]
async fn numeric_statistics_are_exact_on_a_small_table() {
    let ids: Vec<i64> = (1..=10).collect();
    let values = vec![0, 0, 0, 0, 0, 0, -5, 10, 20, 30];
    let p = profile(
        vec![
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("v", Arc::new(Int64Array::from(values))),
        ],
        &["id"],
    )
    .await;
    assert_eq!(p.row_count, 10);
    assert_eq!(p.column_count, 2);
    assert_eq!(p.duplicate_rows, 0);
    let v = &p.columns[1];
    assert_eq!(v.type_category, "NUMERIC");
    assert_eq!(v.unique_count, 5);
    let n = v.numeric_stats.as_ref().unwrap();
    assert_eq!(n.min, Some(-5.0));
    assert_eq!(n.max, Some(30.0));
    assert_eq!(n.mean, Some(5.5));
    assert_eq!(n.zeros, 6);
    assert_eq!(n.zeros_pct, 60.0);
    assert_eq!(n.negative, 1);
    assert_eq!(n.histogram.counts.iter().sum::<u64>(), 10);
    assert_eq!(n.histogram.bins.len(), 15);
    assert_eq!(n.histogram.bins[0], "-5--2.67");
    assert!(kinds(&p, "v").contains(&"zeros".to_string()));
    assert!(kinds(&p, "id").contains(&"unique".to_string()));
    assert!(p.columns[0].is_primary_key);
}

#[tokio::test]
async fn empty_table_and_all_null_column() {
    let p = profile(
        vec![(
            "x",
            Arc::new(Int64Array::from(Vec::<i64>::new())) as ArrayRef,
        )],
        &[],
    )
    .await;
    assert_eq!(p.row_count, 0);
    assert_eq!(p.columns[0].null_count, 0);
    assert!(p.alerts.is_empty());

    let p = profile(
        vec![
            (
                "x",
                Arc::new(Int64Array::from(vec![None::<i64>; 4])) as ArrayRef,
            ),
            ("s", Arc::new(StringArray::from(vec![None::<&str>; 4]))),
        ],
        &[],
    )
    .await;
    let x = &p.columns[0];
    assert_eq!(x.null_count, 4);
    assert_eq!(x.completeness_pct, 0.0);
    assert_eq!(x.numeric_stats.as_ref().unwrap().min, None);
    assert_eq!(kinds(&p, "x"), vec!["high_missing"]);
    assert_eq!(p.missing_cells, 8);
    assert_eq!(p.missing_cells_pct, 100.0);
}

#[tokio::test]
async fn nan_and_infinities_are_left_out_of_numeric_statistics() {
    let p = profile(
        vec![(
            "f",
            Arc::new(Float64Array::from(vec![
                1.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                3.0,
            ])) as ArrayRef,
        )],
        &[],
    )
    .await;
    let n = p.columns[0].numeric_stats.as_ref().unwrap();
    assert_eq!(n.min, Some(1.0));
    assert_eq!(n.max, Some(3.0));
    assert_eq!(n.mean, Some(2.0));
    assert_eq!(n.histogram.counts.iter().sum::<u64>(), 2);
    let json = serde_json::to_string(&p).unwrap();
    assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
}

#[tokio::test]
async fn constant_decimal_column_and_missing_thresholds() {
    let dec = Decimal128Array::from(vec![Some(1234), Some(1234), Some(1234), Some(1234)])
        .with_precision_and_scale(10, 2)
        .unwrap();
    // 1 of 20 missing is 5 %: no alert; 2 of 20 is 10 %: `missing`; 7 of 20 (35 %): `high_missing`.
    let mk = |nulls: usize| {
        Arc::new(Int64Array::from(
            (0..20)
                .map(|i| if i < nulls { None } else { Some(i as i64) })
                .collect::<Vec<_>>(),
        )) as ArrayRef
    };
    let p = profile(vec![("a", mk(1)), ("b", mk(2)), ("c", mk(7))], &[]).await;
    assert!(!kinds(&p, "a").iter().any(|k| k.contains("missing")));
    assert!(kinds(&p, "b").contains(&"missing".to_string()));
    assert!(kinds(&p, "c").contains(&"high_missing".to_string()));

    let p = profile(vec![("d", Arc::new(dec) as ArrayRef)], &[]).await;
    let d = &p.columns[0];
    assert_eq!(d.numeric_stats.as_ref().unwrap().mean, Some(12.34));
    assert_eq!(kinds(&p, "d"), vec!["constant"]);
}

#[tokio::test]
async fn strings_top_values_imbalance_and_cardinality() {
    let mut v: Vec<String> = vec!["a".into(); 7];
    v.extend(["b", "b", "c"].iter().map(|s| s.to_string()));
    let long = "x".repeat(5000);
    let p = profile(
        vec![
            ("s", Arc::new(StringArray::from(v)) as ArrayRef),
            (
                "l",
                Arc::new(StringArray::from(vec![long.as_str(); 10])) as ArrayRef,
            ),
        ],
        &[],
    )
    .await;
    let s = p.columns[0].string_stats.as_ref().unwrap();
    assert_eq!(s.top_values[0].value, "a");
    assert_eq!(s.top_values[0].count, 7);
    assert_eq!(s.top_values[0].pct, 70.0);
    assert_eq!(s.min_length, Some(1));
    assert!(kinds(&p, "s").contains(&"imbalance".to_string()));
    assert_eq!(
        p.columns[1].string_stats.as_ref().unwrap().max_length,
        Some(5000)
    );

    // 51 distinct strings: no top values, a high-cardinality alert; 50: top values, no alert.
    for (n, expect_alert) in [(51, true), (50, false)] {
        let v: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
        let mut rows = v.clone();
        rows.extend(v);
        let p = profile(
            vec![("s", Arc::new(StringArray::from(rows)) as ArrayRef)],
            &[],
        )
        .await;
        let s = p.columns[0].string_stats.as_ref().unwrap();
        assert_eq!(s.top_values.is_empty(), expect_alert);
        assert_eq!(
            kinds(&p, "s").contains(&"high_cardinality".to_string()),
            expect_alert
        );
    }
}

#[tokio::test]
async fn dates_timestamps_and_booleans() {
    let days = Date32Array::from(vec![19723, 19800, 20000]); // 2024-01-01, 2024-03-18, 2024-10-04
    let ts = TimestampMicrosecondArray::from(vec![1_704_067_200_000_000, 1_735_689_599_000_000]);
    let ts_tz = TimestampMicrosecondArray::from(vec![1_704_067_200_000_000, 1_735_689_599_000_000])
        .with_timezone("UTC");
    let p = profile(
        vec![
            ("d", Arc::new(days) as ArrayRef),
            (
                "b",
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(true),
                    Some(false),
                ])),
            ),
        ],
        &[],
    )
    .await;
    let d = p.columns[0].date_stats.as_ref().unwrap();
    assert_eq!(d.earliest.as_deref(), Some("2024-01-01"));
    assert_eq!(d.latest.as_deref(), Some("2024-10-04"));
    assert_eq!(d.span_days, Some(277));
    assert_eq!(d.histogram.bins, vec!["2024-Q1", "2024-Q4"]);
    assert_eq!(d.histogram.counts, vec![2, 1]);
    let b = p.columns[1].boolean_stats.as_ref().unwrap();
    assert_eq!((b.true_count, b.false_count, b.true_pct), (2, 1, 66.67));
    assert_eq!(p.date_range.as_ref().unwrap().span_days, 277);
    assert_eq!(p.variable_types.get("DATE"), Some(&1));
    assert_eq!(p.variable_types.get("BOOLEAN"), Some(&1));

    let p = profile(
        vec![("t", Arc::new(ts) as ArrayRef), ("tz", Arc::new(ts_tz))],
        &[],
    )
    .await;
    for c in &p.columns {
        assert_eq!(c.type_category, "TIMESTAMP");
        let d = c.date_stats.as_ref().unwrap();
        assert_eq!(d.span_days, Some(365), "{c:?}");
        assert_eq!(d.histogram.bins, vec!["2024-Q1", "2024-Q4"]);
    }
    let _ = DataType::Timestamp(TimeUnit::Microsecond, None);
}

#[tokio::test]
async fn duplicate_primary_keys_are_counted() {
    let p = profile(
        vec![
            (
                "id",
                Arc::new(Int64Array::from(vec![1, 1, 2, 3, 3, 3])) as ArrayRef,
            ),
            ("x", Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6]))),
        ],
        &["id"],
    )
    .await;
    assert_eq!(p.duplicate_rows, 3);
    assert!(p.alerts.iter().any(|a| a.kind == "duplicate_keys"));
    assert_eq!(p.sample_rows.len(), 5);
    assert_eq!(p.columns[0].sample_values, vec!["1", "2", "3"]);
}

#[tokio::test]
async fn many_distinct_floats_with_nan_and_the_text_form() {
    // DataFusion's grouped top-k panicked on this shape (NaN among more values than a LIMIT).
    let mut values: Vec<Option<f64>> = (0..200).map(|i| Some(f64::from(i) / 4.0)).collect();
    values[3] = Some(f64::NAN);
    values[150] = Some(f64::NAN);
    values[7] = None;
    let p = profile(
        vec![
            (
                "id",
                Arc::new(Int64Array::from((0..200).collect::<Vec<i64>>())) as ArrayRef,
            ),
            ("f", Arc::new(Float64Array::from(values))),
        ],
        &["id"],
    )
    .await;
    let f = &p.columns[1];
    assert_eq!(f.null_count, 1);
    // 197 finite distinct values and NaN
    assert_eq!(f.unique_count, 198);
    // the first distinct values of the first rows (NaN and NULL are not samples)
    assert_eq!(f.sample_values, ["0.0", "0.25", "0.5", "1.0", "1.25"]);
    let n = f.numeric_stats.as_ref().unwrap();
    assert_eq!((n.min, n.max), (Some(0.0), Some(49.75)));
    assert_eq!(n.histogram.counts.iter().sum::<u64>(), 197);

    // The stored form reads back as the same profile.
    let json = serde_json::to_string(&p).unwrap();
    let back: TableProfile = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p);

    let text = dataport_catalog::profile::render_text("s.t", &p);
    assert!(text.starts_with("s.t: 200 rows, 2 columns"), "{text}");
    assert!(text.contains("id (key)"), "{text}");
    assert!(text.contains("min 0 max 49.75"), "{text}");
    assert!(text.contains("unique"), "{text}");
}
