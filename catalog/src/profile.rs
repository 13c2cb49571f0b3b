//! Table profiles (the seed system's profile format; see docs/http.md): every column's
//! statistics, histograms, top values and alerts, computed on all rows with DataFusion.
//!
//! Passes over the data:
//! 1. one aggregate query for the simple statistics of every column together: non-null counts,
//!    distinct counts, min/max, mean, standard deviation, percentiles, zeros and negatives,
//!    string lengths, true/false counts;
//! 2. one query per histogram (numeric: 15 equal-width bins between min and max; dates and
//!    timestamps: calendar quarters) and per low-cardinality column's top values, each a
//!    small grouped aggregate;
//! 3. duplicate primary keys (`count(*) − count of distinct keys`) and 5 sample rows.
//!
//! Methods: percentiles (and the median) are approximate (t-digest,
//! `approx_percentile_cont`); distinct counts are exact up to
//! [`ProfileOptions::exact_distinct_rows`] rows and HyperLogLog estimates (`approx_distinct`)
//! above it. Floating-point NaN and infinities are left out of numeric statistics (they count as
//! present values); numbers are rounded to 2 places.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::{Deserialize, Serialize};

/// Histogram bins of numeric columns.
const NUMERIC_BINS: usize = 15;
/// Columns with at most this many distinct values get top values (and strings above it the
/// `high_cardinality` alert).
const TOP_VALUES_MAX_DISTINCT: u64 = 50;
/// How many top values are listed.
const TOP_VALUES: usize = 10;
/// Sample values per column and sample rows per table.
const SAMPLES: usize = 5;
/// Sample values are looked for in this many first rows.
const SAMPLE_SCAN: usize = 1000;

/// How to profile.
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    /// Up to this many rows, distinct counts are exact; above, estimated (HyperLogLog).
    pub exact_distinct_rows: u64,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        Self {
            exact_distinct_rows: 5_000_000,
        }
    }
}

/// What the catalog knows about the table, copied into its profile.
#[derive(Debug, Clone, Default)]
pub struct ProfileContext {
    pub table_id: String,
    pub description: Option<String>,
    pub primary_key: Vec<String>,
    pub sync_strategy: Option<String>,
    pub file_size_bytes: u64,
    pub last_sync: Option<String>,
    pub related_tables: Vec<RelatedTable>,
}

/// A join to another table, from a foreign key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelatedTable {
    pub table: String,
    pub join_column: String,
    pub foreign_column: String,
    /// `belongs_to` (this table references it) or `has_many` (it references this table).
    pub direction: String,
    pub description: Option<String>,
}

/// A finding worth a look.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub column: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bins: Vec<String>,
    pub counts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericStats {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub median: Option<f64>,
    pub stddev: Option<f64>,
    pub p5: Option<f64>,
    pub p25: Option<f64>,
    pub p75: Option<f64>,
    pub p95: Option<f64>,
    pub zeros: u64,
    pub zeros_pct: f64,
    pub negative: u64,
    pub negative_pct: f64,
    pub histogram: Histogram,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopValue {
    pub value: String,
    pub count: u64,
    pub pct: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StringStats {
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub avg_length: Option<f64>,
    pub top_values: Vec<TopValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DateStats {
    pub earliest: Option<String>,
    pub latest: Option<String>,
    pub span_days: Option<i64>,
    pub histogram: Histogram,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BooleanStats {
    pub true_count: u64,
    pub false_count: u64,
    pub true_pct: f64,
}

/// One column's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
    /// NUMERIC, STRING, DATE, TIMESTAMP or BOOLEAN.
    pub type_category: String,
    pub completeness_pct: f64,
    pub null_count: u64,
    pub unique_count: u64,
    pub unique_pct: f64,
    pub sample_values: Vec<String>,
    pub is_primary_key: bool,
    pub alerts: Vec<Alert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numeric_stats: Option<NumericStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_stats: Option<StringStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_stats: Option<DateStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boolean_stats: Option<BooleanStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DateRange {
    pub earliest: String,
    pub latest: String,
    pub span_days: i64,
}

/// A table's profile, in the seed's `profiles.json` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableProfile {
    pub table_id: String,
    pub description: Option<String>,
    pub primary_key: Vec<String>,
    pub sync_strategy: Option<String>,
    pub row_count: u64,
    pub column_count: u64,
    pub file_size_mb: f64,
    pub avg_completeness: f64,
    pub missing_cells: u64,
    pub missing_cells_pct: f64,
    pub duplicate_rows: u64,
    pub variable_types: BTreeMap<String, u64>,
    pub date_range: Option<DateRange>,
    pub alerts: Vec<Alert>,
    pub last_sync: Option<String>,
    pub related_tables: Vec<RelatedTable>,
    pub columns: Vec<ColumnProfile>,
    pub sample_rows: Vec<BTreeMap<String, Option<String>>>,
}

/// The kind of statistics a column gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Numeric { float: bool },
    String,
    Date,
    Timestamp,
    Boolean,
}

impl Category {
    fn of(t: &DataType) -> Self {
        use DataType::*;
        match t {
            Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Decimal32(_, _)
            | Decimal64(_, _)
            | Decimal128(_, _)
            | Decimal256(_, _) => Self::Numeric { float: false },
            Float16 | Float32 | Float64 => Self::Numeric { float: true },
            Date32 | Date64 => Self::Date,
            Timestamp(_, _) => Self::Timestamp,
            Boolean => Self::Boolean,
            _ => Self::String,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Numeric { .. } => "NUMERIC",
            Self::String => "STRING",
            Self::Date => "DATE",
            Self::Timestamp => "TIMESTAMP",
            Self::Boolean => "BOOLEAN",
        }
    }
}

/// The column as a double, with NaN and infinities as NULL (they stay out of statistics).
fn finite_number(c: &str, float: bool) -> String {
    if float {
        format!(
            "CASE WHEN isnan(CAST({c} AS DOUBLE)) OR abs(CAST({c} AS DOUBLE)) = CAST('Infinity' AS DOUBLE) THEN NULL ELSE CAST({c} AS DOUBLE) END"
        )
    } else {
        format!("CAST({c} AS DOUBLE)")
    }
}

/// Quotes an identifier for SQL.
fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Profiles the rows of `table` (any provider: a table, or a caller's restricted view).
pub async fn profile_table(
    table: Arc<dyn TableProvider>,
    context: &ProfileContext,
    options: &ProfileOptions,
) -> Result<TableProfile> {
    let mut config = SessionConfig::new().with_target_partitions(2);
    // DataFusion 55's grouped top-k (the sample values' `SELECT DISTINCT … ORDER BY … LIMIT`)
    // panics on float columns holding NaN; plain aggregation is correct.
    config.options_mut().optimizer.enable_topk_aggregation = false;
    let ctx = SessionContext::new_with_config(config);
    ctx.register_table("t", Arc::clone(&table))?;
    let schema: SchemaRef = table.schema();
    let columns: Vec<(String, DataType, Category)> = schema
        .fields()
        .iter()
        .map(|f| {
            (
                f.name().clone(),
                f.data_type().clone(),
                Category::of(f.data_type()),
            )
        })
        .collect();

    let started = std::time::Instant::now();
    // Pass 1: every simple statistic of every column, in one aggregate.
    let rows = scalar_u64(&ctx, "SELECT count(*) FROM t")
        .await?
        .unwrap_or(0);
    let exact = rows <= options.exact_distinct_rows;
    let mut inner = vec!["*".to_string()];
    let mut select = vec!["count(*)".to_string()];
    for (i, (name, _, cat)) in columns.iter().enumerate() {
        let c = q(name);
        select.push(format!("count({c})"));
        select.push(if exact {
            format!("count(DISTINCT {c})")
        } else {
            format!("approx_distinct({c})")
        });
        match cat {
            Category::Numeric { float } => {
                let v = format!("\"__n{i}\"");
                inner.push(format!("{} AS {v}", finite_number(&c, *float)));
                select.push(format!("min({v})"));
                select.push(format!("max({v})"));
                select.push(format!("avg({v})"));
                select.push(format!("stddev({v})"));
                for p in ["0.5", "0.05", "0.25", "0.75", "0.95"] {
                    select.push(format!(
                        "approx_percentile_cont({p}) WITHIN GROUP (ORDER BY {v})"
                    ));
                }
                select.push(format!("sum(CASE WHEN {v} = 0 THEN 1 ELSE 0 END)"));
                select.push(format!("sum(CASE WHEN {v} < 0 THEN 1 ELSE 0 END)"));
            }
            Category::String => {
                let len = format!("character_length(CAST({c} AS VARCHAR))");
                select.push(format!("min({len})"));
                select.push(format!("max({len})"));
                select.push(format!("avg({len})"));
            }
            Category::Date | Category::Timestamp => {
                select.push(format!("CAST(min({c}) AS VARCHAR)"));
                select.push(format!("CAST(max({c}) AS VARCHAR)"));
            }
            Category::Boolean => {
                select.push(format!("sum(CASE WHEN {c} THEN 1 ELSE 0 END)"));
                select.push(format!("sum(CASE WHEN NOT {c} THEN 1 ELSE 0 END)"));
            }
        }
    }
    let sql = format!(
        "SELECT {} FROM (SELECT {} FROM t)",
        select.join(", "),
        inner.join(", ")
    );
    let stats = one_row(&ctx, &sql).await?;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "profile pass 1 done"
    );
    let mut at = 1usize;
    let mut next = || {
        let v = Arc::clone(stats.column(at));
        at += 1;
        v
    };

    let mut profiles = Vec::with_capacity(columns.len());
    // numeric columns' finite minimum and maximum, unrounded (the histograms' range)
    let mut ranges: Vec<Option<(f64, f64)>> = Vec::with_capacity(columns.len());
    for (name, data_type, cat) in &columns {
        ranges.push(None);
        let non_null = u64_at(&next(), 0).unwrap_or(0);
        let unique = u64_at(&next(), 0).unwrap_or(0).min(non_null);
        let null_count = rows - non_null.min(rows);
        let mut p = ColumnProfile {
            name: name.clone(),
            data_type: data_type.to_string(),
            type_category: cat.name().to_string(),
            completeness_pct: pct(non_null, rows),
            null_count,
            unique_count: unique,
            unique_pct: pct(unique, non_null),
            sample_values: Vec::new(),
            is_primary_key: context.primary_key.iter().any(|k| k == name),
            alerts: Vec::new(),
            numeric_stats: None,
            string_stats: None,
            date_stats: None,
            boolean_stats: None,
        };
        match cat {
            Category::Numeric { .. } => {
                let min = f64_at(&next(), 0);
                let max = f64_at(&next(), 0);
                let mean = f64_at(&next(), 0);
                let stddev = f64_at(&next(), 0);
                let median = f64_at(&next(), 0);
                let p5 = f64_at(&next(), 0);
                let p25 = f64_at(&next(), 0);
                let p75 = f64_at(&next(), 0);
                let p95 = f64_at(&next(), 0);
                let zeros = u64_at(&next(), 0).unwrap_or(0);
                let negative = u64_at(&next(), 0).unwrap_or(0);
                if let Some(range) = ranges.last_mut() {
                    *range = min.zip(max);
                }
                p.numeric_stats = Some(NumericStats {
                    min: round(min),
                    max: round(max),
                    mean: round(mean),
                    median: round(median),
                    stddev: round(stddev),
                    p5: round(p5),
                    p25: round(p25),
                    p75: round(p75),
                    p95: round(p95),
                    zeros,
                    zeros_pct: pct(zeros, non_null),
                    negative,
                    negative_pct: pct(negative, non_null),
                    histogram: Histogram {
                        bins: Vec::new(),
                        counts: Vec::new(),
                    },
                });
            }
            Category::String => {
                let min_length = u64_at(&next(), 0);
                let max_length = u64_at(&next(), 0);
                let avg_length = f64_at(&next(), 0);
                p.string_stats = Some(StringStats {
                    min_length,
                    max_length,
                    avg_length: round(avg_length),
                    top_values: Vec::new(),
                });
            }
            Category::Date | Category::Timestamp => {
                let earliest = string_at(&next(), 0);
                let latest = string_at(&next(), 0);
                let span_days = match (&earliest, &latest) {
                    (Some(a), Some(b)) => days_between(a, b),
                    _ => None,
                };
                p.date_stats = Some(DateStats {
                    earliest,
                    latest,
                    span_days,
                    histogram: Histogram {
                        bins: Vec::new(),
                        counts: Vec::new(),
                    },
                });
            }
            Category::Boolean => {
                let true_count = u64_at(&next(), 0).unwrap_or(0);
                let false_count = u64_at(&next(), 0).unwrap_or(0);
                p.boolean_stats = Some(BooleanStats {
                    true_count,
                    false_count,
                    true_pct: pct(true_count, non_null),
                });
            }
        }
        profiles.push(p);
    }

    // Pass 2: histograms and top values.
    let mut specs = Vec::new();
    let mut with_histogram = Vec::new();
    for (i, p) in profiles.iter().enumerate() {
        if let (Category::Numeric { float }, Some(_), Some((min, max))) =
            (columns[i].2, &p.numeric_stats, ranges[i])
        {
            specs.push(HistogramSpec {
                column: q(&columns[i].0),
                float,
                min,
                max,
            });
            with_histogram.push(i);
        }
    }
    for (i, histogram) in with_histogram
        .into_iter()
        .zip(numeric_histograms(&ctx, &specs).await?)
    {
        if let Some(stats) = profiles[i].numeric_stats.as_mut() {
            stats.histogram = histogram;
        }
    }
    for (i, p) in profiles.iter_mut().enumerate() {
        let (name, _, cat) = &columns[i];
        let c = q(name);
        match cat {
            Category::Date | Category::Timestamp => {
                if let Some(stats) = p.date_stats.as_mut() {
                    stats.histogram = quarter_histogram(&ctx, &c).await?;
                }
            }
            _ => {}
        }
        if p.unique_count <= TOP_VALUES_MAX_DISTINCT
            && p.unique_count > 0
            && let Some(s) = p.string_stats.as_mut()
        {
            s.top_values = top_values(&ctx, &c, rows - p.null_count).await?;
        }
    }
    let unique: Vec<u64> = profiles.iter().map(|p| p.unique_count).collect();
    let (sample_rows, sample_values) = samples(&ctx, &unique).await?;
    for (p, values) in profiles.iter_mut().zip(sample_values) {
        p.sample_values = values;
    }

    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "profile pass 2 done"
    );
    // Pass 3: duplicate keys and sample rows.
    let duplicate_rows = if context.primary_key.is_empty()
        || context
            .primary_key
            .iter()
            .any(|k| schema.field_with_name(k).is_err())
    {
        0
    } else {
        let keys: Vec<String> = context.primary_key.iter().map(|k| q(k)).collect();
        let distinct = scalar_u64(
            &ctx,
            &format!(
                "SELECT count(*) FROM (SELECT DISTINCT {} FROM t)",
                keys.join(", ")
            ),
        )
        .await?
        .unwrap_or(0);
        rows.saturating_sub(distinct)
    };
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "profile duplicate keys done"
    );

    for p in &mut profiles {
        p.alerts = column_alerts(p, rows);
    }
    let cells = rows * columns.len() as u64;
    let missing: u64 = profiles.iter().map(|p| p.null_count).sum();
    let mut variable_types = BTreeMap::new();
    for p in &profiles {
        *variable_types.entry(p.type_category.clone()).or_insert(0) += 1;
    }
    let date_range = date_range(&profiles);
    let avg_completeness = if profiles.is_empty() {
        0.0
    } else {
        r2(profiles.iter().map(|p| p.completeness_pct).sum::<f64>() / profiles.len() as f64)
    };
    let mut alerts: Vec<Alert> = profiles.iter().flat_map(|p| p.alerts.clone()).collect();
    if duplicate_rows > 0 {
        alerts.push(Alert {
            column: context.primary_key.join(", "),
            kind: "duplicate_keys".into(),
            message: format!("{duplicate_rows} rows repeat a primary key"),
        });
    }
    Ok(TableProfile {
        table_id: context.table_id.clone(),
        description: context.description.clone(),
        primary_key: context.primary_key.clone(),
        sync_strategy: context.sync_strategy.clone(),
        row_count: rows,
        column_count: columns.len() as u64,
        file_size_mb: r2(context.file_size_bytes as f64 / (1024.0 * 1024.0)),
        avg_completeness,
        missing_cells: missing,
        missing_cells_pct: pct(missing, cells),
        duplicate_rows,
        variable_types,
        date_range,
        alerts,
        last_sync: context.last_sync.clone(),
        related_tables: context.related_tables.clone(),
        columns: profiles,
        sample_rows,
    })
}

/// The alerts of a column, by the spec's thresholds.
fn column_alerts(p: &ColumnProfile, rows: u64) -> Vec<Alert> {
    let mut out = Vec::new();
    let mut alert = |kind: &str, message: String| {
        out.push(Alert {
            column: p.name.clone(),
            kind: kind.into(),
            message,
        })
    };
    if rows == 0 {
        return out;
    }
    let null_pct = 100.0 - p.completeness_pct;
    if p.unique_count == 1 && p.null_count == 0 {
        alert("constant", "every row has the same value".into());
    }
    if p.unique_count == rows && p.null_count == 0 && rows > 1 {
        alert("unique", "every value is distinct".into());
    }
    if null_pct > 30.0 {
        alert(
            "high_missing",
            format!("{null_pct:.2}% of values are missing"),
        );
    } else if null_pct > 5.0 {
        alert("missing", format!("{null_pct:.2}% of values are missing"));
    }
    if let Some(n) = &p.numeric_stats
        && n.zeros_pct > 50.0
    {
        alert("zeros", format!("{:.2}% of values are zero", n.zeros_pct));
    }
    if let Some(s) = &p.string_stats {
        if let Some(top) = s.top_values.first()
            && top.pct > 60.0
            && p.unique_count > 1
        {
            alert(
                "imbalance",
                format!("'{}' is {:.2}% of values", top.value, top.pct),
            );
        }
        if p.unique_count > TOP_VALUES_MAX_DISTINCT {
            alert(
                "high_cardinality",
                format!("{} distinct values", p.unique_count),
            );
        }
    }
    if let Some(b) = &p.boolean_stats {
        let top = b.true_pct.max(100.0 - b.true_pct);
        if top > 60.0 && b.true_count > 0 && b.false_count > 0 {
            alert("imbalance", format!("one value is {top:.2}% of values"));
        }
    }
    out
}

/// The earliest and latest of every date and timestamp column.
fn date_range(profiles: &[ColumnProfile]) -> Option<DateRange> {
    let mut earliest: Option<String> = None;
    let mut latest: Option<String> = None;
    for d in profiles.iter().filter_map(|p| p.date_stats.as_ref()) {
        if let Some(e) = &d.earliest
            && earliest
                .as_ref()
                .is_none_or(|x| e[..10.min(e.len())] < x[..10.min(x.len())])
        {
            earliest = Some(e.clone());
        }
        if let Some(l) = &d.latest
            && latest
                .as_ref()
                .is_none_or(|x| l[..10.min(l.len())] > x[..10.min(x.len())])
        {
            latest = Some(l.clone());
        }
    }
    let (e, l) = (earliest?, latest?);
    let span_days = days_between(&e, &l)?;
    Some(DateRange {
        earliest: e,
        latest: l,
        span_days,
    })
}

fn days_between(a: &str, b: &str) -> Option<i64> {
    let day = |s: &str| chrono::NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok();
    Some((day(b)? - day(a)?).num_days())
}

/// A numeric column's histogram to compute: the column (quoted), whether it is a float, and
/// its finite minimum and maximum.
struct HistogramSpec {
    column: String,
    float: bool,
    min: f64,
    max: f64,
}

/// Every numeric column's histogram: [`NUMERIC_BINS`] equal-width bins from min to max (the
/// maximum in the last), each a small grouped count over one column. (One scan with a
/// conditional count per bin and column was measured slower: 15 `CASE`s per row and column
/// cost more than a second read of the column.)
async fn numeric_histograms(
    ctx: &SessionContext,
    specs: &[HistogramSpec],
) -> Result<Vec<Histogram>> {
    let last = NUMERIC_BINS - 1;
    let mut out = Vec::with_capacity(specs.len());
    for h in specs {
        let v = finite_number(&h.column, h.float);
        let width = (h.max - h.min) / NUMERIC_BINS as f64;
        let mut counts = vec![0u64; NUMERIC_BINS];
        let bin = if width > 0.0 && width.is_finite() {
            format!(
                "least(CAST(floor(({v} - {min:e}) / {width:e}) AS BIGINT), {last})",
                min = h.min
            )
        } else {
            // one value: everything in the first bin
            "CAST(0 AS BIGINT)".to_string()
        };
        let sql = format!(
            "SELECT {bin} AS __dp_bin, count(*) FROM t WHERE {v} IS NOT NULL GROUP BY __dp_bin"
        );
        for batch in ctx.sql(&sql).await?.collect().await? {
            for row in 0..batch.num_rows() {
                if let (Some(b), Some(n)) =
                    (i64_at(batch.column(0), row), u64_at(batch.column(1), row))
                    && let Ok(b) = usize::try_from(b)
                    && b < NUMERIC_BINS
                {
                    counts[b] += n;
                }
            }
        }
        let bins = (0..NUMERIC_BINS)
            .map(|i| {
                let lo = h.min + width * i as f64;
                let hi = if i == last {
                    h.max
                } else {
                    h.min + width * (i + 1) as f64
                };
                format!("{}-{}", short_number(lo), short_number(hi))
            })
            .collect();
        out.push(Histogram { bins, counts });
    }
    Ok(out)
}

/// `1.2K`, `3.4M`, `5.6B`, or the number with up to 2 decimals.
fn short_number(v: f64) -> String {
    let a = v.abs();
    let (scaled, unit) = if a >= 1e9 {
        (v / 1e9, "B")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "K")
    } else {
        (v, "")
    };
    let s = if unit.is_empty() {
        format!("{:.2}", scaled)
    } else {
        format!("{:.1}", scaled)
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{unit}")
}

async fn quarter_histogram(ctx: &SessionContext, c: &str) -> Result<Histogram> {
    let sql = format!(
        "SELECT CAST(date_trunc('quarter', {c}) AS DATE) AS __dp_q, count(*) FROM t \
         WHERE {c} IS NOT NULL GROUP BY __dp_q ORDER BY __dp_q"
    );
    let mut bins = Vec::new();
    let mut counts = Vec::new();
    for batch in ctx.sql(&sql).await?.collect().await? {
        for row in 0..batch.num_rows() {
            if let (Some(start), Some(n)) = (
                string_at(batch.column(0), row),
                u64_at(batch.column(1), row),
            ) && let Some((year, month)) = start.split('-').next().zip(start.split('-').nth(1))
                && let Ok(month) = month.parse::<u32>()
            {
                bins.push(format!("{year}-Q{}", month.div_ceil(3)));
                counts.push(n);
            }
        }
    }
    Ok(Histogram { bins, counts })
}

async fn top_values(ctx: &SessionContext, c: &str, non_null: u64) -> Result<Vec<TopValue>> {
    let sql = format!(
        "SELECT CAST({c} AS VARCHAR) AS __dp_v, count(*) AS __dp_n FROM t WHERE {c} IS NOT NULL \
         GROUP BY __dp_v ORDER BY __dp_n DESC, __dp_v LIMIT {TOP_VALUES}"
    );
    let mut out = Vec::new();
    for batch in ctx.sql(&sql).await?.collect().await? {
        for row in 0..batch.num_rows() {
            if let (Some(value), Some(count)) = (
                string_at(batch.column(0), row),
                u64_at(batch.column(1), row),
            ) {
                out.push(TopValue {
                    value,
                    count,
                    pct: pct(count, non_null),
                });
            }
        }
    }
    Ok(out)
}

/// The sample rows (the first [`SAMPLES`]) and every column's sample values: up to
/// [`SAMPLES`] distinct non-null values, as the first [`SAMPLE_SCAN`] rows hold them (a column
/// that has too few there gets a small query of its own). `unique` is each column's distinct
/// count, so a column with fewer values is not searched for more.
async fn samples(
    ctx: &SessionContext,
    unique: &[u64],
) -> Result<(Vec<BTreeMap<String, Option<String>>>, Vec<Vec<String>>)> {
    let batches = ctx
        .sql(&format!("SELECT * FROM t LIMIT {SAMPLE_SCAN}"))
        .await?
        .collect()
        .await?;
    let mut rows = Vec::new();
    let mut values: Vec<Vec<String>> = vec![Vec::new(); unique.len()];
    for batch in &batches {
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            if rows.len() < SAMPLES {
                let mut m = BTreeMap::new();
                for (i, f) in schema.fields().iter().enumerate() {
                    m.insert(f.name().clone(), string_at(batch.column(i), row));
                }
                rows.push(m);
            }
            for (i, found) in values.iter_mut().enumerate() {
                if found.len() < SAMPLES
                    && let Some(v) = string_at(batch.column(i), row)
                    && !found.contains(&v)
                {
                    found.push(v);
                }
            }
        }
    }
    let names: Vec<String> = ctx
        .table("t")
        .await?
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    for (i, found) in values.iter_mut().enumerate() {
        let wanted = usize::try_from(unique[i])
            .unwrap_or(usize::MAX)
            .min(SAMPLES);
        if found.len() >= wanted {
            continue;
        }
        let c = q(&names[i]);
        let sql = format!("SELECT DISTINCT {c} FROM t WHERE {c} IS NOT NULL LIMIT {SAMPLES}");
        for batch in ctx.sql(&sql).await?.collect().await? {
            for row in 0..batch.num_rows() {
                if let Some(v) = string_at(batch.column(0), row)
                    && found.len() < SAMPLES
                    && !found.contains(&v)
                {
                    found.push(v);
                }
            }
        }
    }
    Ok((rows, values))
}

async fn one_row(ctx: &SessionContext, sql: &str) -> Result<RecordBatch> {
    let batches = ctx.sql(sql).await?.collect().await?;
    batches
        .into_iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| DataFusionError::Internal("an aggregate returned no row".into()))
}

async fn scalar_u64(ctx: &SessionContext, sql: &str) -> Result<Option<u64>> {
    Ok(u64_at(one_row(ctx, sql).await?.column(0), 0))
}

fn u64_at(a: &ArrayRef, row: usize) -> Option<u64> {
    f64_at(a, row).map(|v| v.max(0.0).round() as u64)
}

fn i64_at(a: &ArrayRef, row: usize) -> Option<i64> {
    f64_at(a, row).map(|v| v.round() as i64)
}

fn f64_at(a: &ArrayRef, row: usize) -> Option<f64> {
    if a.is_null(row) {
        return None;
    }
    let v = arrow::compute::cast(&a.slice(row, 1), &DataType::Float64).ok()?;
    let v = v.as_any().downcast_ref::<arrow::array::Float64Array>()?;
    if v.is_null(0) {
        return None;
    }
    let x = v.value(0);
    x.is_finite().then_some(x)
}

/// A value as text; NULL, NaN and infinities are `None`.
fn string_at(a: &ArrayRef, row: usize) -> Option<String> {
    if a.is_null(row) {
        return None;
    }
    if matches!(
        a.data_type(),
        DataType::Float16 | DataType::Float32 | DataType::Float64
    ) && f64_at(a, row).is_none()
    {
        return None;
    }
    let options = FormatOptions::default();
    let f = ArrayFormatter::try_new(a.as_ref(), &options).ok()?;
    Some(f.value(row).to_string())
}

fn round(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite()).map(r2)
}

fn r2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        r2(part as f64 * 100.0 / whole as f64)
    }
}

/// The profile as text for a terminal: the table's figures, its alerts and one line per
/// column (`dataport profile`).
pub fn render_text(name: &str, p: &TableProfile) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{name}: {} rows, {} columns, {:.2} MB",
        p.row_count, p.column_count, p.file_size_mb
    );
    if let Some(d) = &p.description {
        let _ = writeln!(out, "  {d}");
    }
    let mut facts = vec![format!(
        "completeness {:.2} % ({} missing cells)",
        p.avg_completeness, p.missing_cells
    )];
    if !p.primary_key.is_empty() {
        facts.push(format!(
            "primary key {} ({} duplicate rows)",
            p.primary_key.join(", "),
            p.duplicate_rows
        ));
    }
    if let Some(s) = &p.sync_strategy {
        facts.push(format!("strategy {s}"));
    }
    if let Some(s) = &p.last_sync {
        facts.push(format!("last sync {s}"));
    }
    if let Some(r) = &p.date_range {
        facts.push(format!(
            "dates {} to {} ({} days)",
            r.earliest, r.latest, r.span_days
        ));
    }
    let _ = writeln!(out, "  {}", facts.join("; "));
    for r in &p.related_tables {
        let _ = writeln!(
            out,
            "  {} {} ({} = {})",
            r.direction, r.table, r.join_column, r.foreign_column
        );
    }
    if !p.alerts.is_empty() {
        let _ = writeln!(out, "\nalerts:");
        let width = p.alerts.iter().map(|a| a.column.len()).max().unwrap_or(0);
        for a in &p.alerts {
            let _ = writeln!(out, "  {:<width$}  {:<16}  {}", a.column, a.kind, a.message);
        }
    }
    let header = ["column", "type", "complete %", "distinct", "summary"];
    let rows: Vec<[String; 5]> = p
        .columns
        .iter()
        .map(|c| {
            let key = if c.is_primary_key { " (key)" } else { "" };
            [
                format!("{}{key}", c.name),
                c.data_type.clone(),
                format!("{:.2}", c.completeness_pct),
                c.unique_count.to_string(),
                column_summary(c),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let _ = writeln!(out);
    let line = |cells: [&str; 5]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row.each_ref().map(String::as_str)));
    }
    out
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// One column's figures in a line.
fn column_summary(c: &ColumnProfile) -> String {
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut parts = Vec::new();
    if let Some(n) = &c.numeric_stats {
        parts.push(format!(
            "min {} max {} mean {} median {}",
            num(n.min),
            num(n.max),
            num(n.mean),
            num(n.median)
        ));
        if n.zeros > 0 {
            parts.push(format!("zeros {:.2} %", n.zeros_pct));
        }
    }
    if let Some(s) = &c.string_stats {
        if let (Some(lo), Some(hi)) = (s.min_length, s.max_length) {
            parts.push(format!("length {lo}-{hi}"));
        }
        if !s.top_values.is_empty() {
            let top: Vec<String> = s
                .top_values
                .iter()
                .take(3)
                .map(|t| format!("{} {:.2} %", shorten(&t.value, 24), t.pct))
                .collect();
            parts.push(format!("top {}", top.join(", ")));
        }
    }
    if let Some(d) = &c.date_stats
        && let (Some(a), Some(b)) = (&d.earliest, &d.latest)
    {
        parts.push(format!("{a} to {b}"));
    }
    if let Some(b) = &c.boolean_stats {
        parts.push(format!(
            "true {} false {} ({:.2} % true)",
            b.true_count, b.false_count, b.true_pct
        ));
    }
    for a in &c.alerts {
        parts.push(format!("[{}]", a.kind));
    }
    parts.join("; ")
}
