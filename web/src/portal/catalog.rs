//! The catalog pages: `GET /catalog?q=…` (search over table and column names and descriptions,
//! ranked) and `GET /catalog/{schema}/{table}` (description, columns, keys and related tables,
//! freshness, the profile with histograms and top values, sample rows, ready-to-copy queries).
//! Both are built from the API's own listing and profile for the viewer
//! ([`crate::catalog`]): a table, column, value or row the viewer could not query is never on
//! them.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use dataport_catalog::metrics::BusinessMetric;
use dataport_catalog::profile::{ColumnProfile, Histogram, TableProfile};
use serde::{Deserialize, Serialize};

use super::{Chrome, Viewer, ago, not_found, respond, when};
use crate::catalog::{CatalogBody, TableBody, catalog_body, table_with_profile};
use crate::{AppState, RequestId};

#[derive(Debug, Deserialize)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// A table found by a search, with why.
#[derive(Debug, Serialize)]
pub(crate) struct Hit {
    pub(crate) schema: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    /// Columns whose name or description matched.
    pub(crate) columns: Vec<String>,
    pub(crate) score: u32,
    pub(crate) updated: String,
}

/// A business metric the viewer may use, as the catalog lists it.
#[derive(Debug, Serialize)]
pub(crate) struct MetricLink {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) table: String,
    pub(crate) owner: String,
    pub(crate) href: String,
}

impl MetricLink {
    pub(crate) fn new(m: &BusinessMetric) -> Self {
        Self {
            name: m.name.clone(),
            description: m.description.clone(),
            table: format!("{}.{}", m.schema, m.table),
            owner: m.owner.clone(),
            href: format!("/metrics/{}", m.name),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct SearchData {
    pub(crate) query: String,
    pub(crate) hits: Vec<Hit>,
    /// Tables the viewer may read in all.
    pub(crate) tables: usize,
    /// The viewer's business metrics matching the query (all of them for an empty one).
    pub(crate) metrics: Vec<MetricLink>,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct SearchPage<'a> {
    chrome: Chrome,
    data: &'a SearchData,
}

/// How well `table` matches every word of `query` (0: not at all). A word in the table's name
/// counts most, then in a column's name, then in a description.
fn score(table: &TableBody, words: &[String]) -> (u32, Vec<String>) {
    let mut total = 0;
    let mut columns: Vec<String> = Vec::new();
    for word in words {
        let name = table.name.to_lowercase();
        let qualified = format!("{}.{}", table.schema, table.name).to_lowercase();
        let mut best = if name == *word || qualified == *word {
            100
        } else if name.starts_with(word.as_str()) {
            60
        } else if qualified.contains(word.as_str()) {
            40
        } else {
            0
        };
        for c in &table.columns {
            let in_name = c.name.to_lowercase().contains(word.as_str());
            let in_description = c
                .description
                .as_deref()
                .is_some_and(|d| d.to_lowercase().contains(word.as_str()));
            if in_name || in_description {
                best = best.max(if in_name { 25 } else { 8 });
                if !columns.contains(&c.name) {
                    columns.push(c.name.clone());
                }
            }
        }
        if table
            .description
            .as_deref()
            .is_some_and(|d| d.to_lowercase().contains(word.as_str()))
        {
            best = best.max(15);
        }
        if best == 0 {
            return (0, Vec::new());
        }
        total += best;
    }
    (total, columns)
}

/// Whether every word of the query is in the metric's name, description or table.
fn metric_matches(m: &BusinessMetric, words: &[String]) -> bool {
    let text = format!("{} {} {}.{}", m.name, m.description, m.schema, m.table).to_lowercase();
    words.iter().all(|w| text.contains(w.as_str()))
}

/// The viewer's tables matching `query` (every table for an empty one), best first, and the
/// viewer's `metrics` that match it.
pub(crate) fn search(
    catalog: CatalogBody,
    metrics: &[std::sync::Arc<BusinessMetric>],
    query: &str,
    now: i64,
) -> SearchData {
    let words: Vec<String> = query
        .split_whitespace()
        .map(str::to_lowercase)
        .take(8)
        .collect();
    let tables = catalog.schemas.iter().map(|s| s.tables.len()).sum();
    let mut hits: Vec<Hit> = catalog
        .schemas
        .into_iter()
        .flat_map(|s| s.tables)
        .filter_map(|t| {
            let (score, columns) = if words.is_empty() {
                (1, Vec::new())
            } else {
                score(&t, &words)
            };
            (score > 0).then(|| Hit {
                updated: t.updated_at_ms.map_or("—".into(), |ms| ago(ms / 1000, now)),
                schema: t.schema,
                name: t.name,
                description: t.description,
                columns,
                score,
            })
        })
        .collect();
    hits.sort_by(|a, b| {
        b.score
            .cmp(&a.score)
            .then_with(|| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)))
    });
    SearchData {
        query: query.trim().to_string(),
        hits,
        tables,
        metrics: metrics
            .iter()
            .filter(|m| metric_matches(m, &words))
            .map(|m| MetricLink::new(m))
            .collect(),
    }
}

/// `GET /catalog?q=…`.
pub(crate) async fn get_search(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Query(query): Query<SearchQuery>,
) -> Response {
    let catalog = catalog_body(&state, &viewer.principal, &id);
    let metrics = state
        .engine
        .business_metrics(&crate::request_context(&viewer.principal, &id));
    let data = search(catalog, &metrics, &query.q, dataport_auth::now_secs());
    let page = SearchPage {
        chrome: Chrome::new(&state, &viewer, "/catalog"),
        data: &data,
    };
    respond(&viewer, StatusCode::OK, &data, &page)
}

/// One bar of a chart, placed in the SVG's coordinates.
#[derive(Debug, Serialize)]
pub(crate) struct Bar {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) label: String,
    pub(crate) value: String,
}

/// A bar chart (a histogram, a metric over time) as bars of a 300×80 SVG.
#[derive(Debug, Serialize)]
pub(crate) struct Chart {
    pub(crate) bars: Vec<Bar>,
    pub(crate) first: String,
    pub(crate) last: String,
    pub(crate) summary: String,
}

pub(crate) const CHART_WIDTH: u32 = 300;
pub(crate) const CHART_HEIGHT: u32 = 80;

/// `points` (label, value) as bars scaled to the largest value; values at or below zero get
/// no bar. `None` when nothing is above zero.
pub(crate) fn bar_chart(points: &[(String, f64)], summary: String) -> Option<Chart> {
    let n = points.len();
    let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    if n == 0 || max <= 0.0 || !max.is_finite() {
        return None;
    }
    let step = (CHART_WIDTH / n as u32).max(1);
    let bars = points
        .iter()
        .enumerate()
        .map(|(i, (label, value))| {
            let height = ((value.max(0.0) / max) * f64::from(CHART_HEIGHT - 2)).round() as u32;
            let height = if *value > 0.0 { height.max(1) } else { 0 };
            Bar {
                x: i as u32 * step,
                y: CHART_HEIGHT - height,
                width: step.saturating_sub(1).max(1),
                height,
                label: label.clone(),
                value: number(*value),
            }
        })
        .collect();
    Some(Chart {
        bars,
        first: points[0].0.clone(),
        last: points[n - 1].0.clone(),
        summary,
    })
}

fn chart(histogram: &Histogram, column: &str) -> Option<Chart> {
    let n = histogram.counts.len().min(histogram.bins.len());
    let max = histogram.counts.iter().take(n).max()?;
    let points: Vec<(String, f64)> = (0..n)
        .map(|i| (histogram.bins[i].clone(), histogram.counts[i] as f64))
        .collect();
    bar_chart(
        &points,
        format!("Histogram of {column}: {n} bins, the fullest with {max} rows"),
    )
}

/// A column's line on the table page: its definition and its profile.
#[derive(Debug, Serialize)]
pub(crate) struct ColumnLine {
    pub(crate) name: String,
    pub(crate) data_type: String,
    pub(crate) nullable: bool,
    pub(crate) description: Option<String>,
    pub(crate) key: bool,
    pub(crate) profile: Option<ColumnProfile>,
    pub(crate) chart: Option<Chart>,
    /// Figures in words: `min 1 · max 9 · mean 4.2`, or the top values.
    pub(crate) figures: Vec<String>,
}

/// A link to a related table the viewer may read.
#[derive(Debug, Serialize)]
pub(crate) struct Related {
    pub(crate) table: String,
    pub(crate) href: String,
    pub(crate) how: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Snippets {
    pub(crate) adbc: String,
    pub(crate) duckdb: String,
    pub(crate) curl: String,
}

/// What the table page shows (and its JSON twin answers).
#[derive(Debug, Serialize)]
pub(crate) struct TableData {
    pub(crate) table: TableBody,
    pub(crate) updated: String,
    pub(crate) columns: Vec<ColumnLine>,
    pub(crate) related: Vec<Related>,
    /// The profile's computation, when there is one (`restricted`: of the viewer's rows).
    pub(crate) profiled_at: Option<String>,
    pub(crate) profile_restricted: bool,
    pub(crate) profile_problem: Option<String>,
    pub(crate) alerts: Vec<String>,
    pub(crate) sample_columns: Vec<String>,
    pub(crate) sample_rows: Vec<Vec<String>>,
    pub(crate) snippets: Snippets,
    /// The business metrics computed from this table that the viewer may use.
    pub(crate) metrics: Vec<MetricLink>,
}

#[derive(Template)]
#[template(path = "table.html")]
struct TablePage<'a> {
    chrome: Chrome,
    data: &'a TableData,
}

pub(crate) fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn figures(p: &ColumnProfile) -> Vec<String> {
    let mut out = vec![format!(
        "{}% complete · {} distinct",
        number(p.completeness_pct),
        p.unique_count
    )];
    if let Some(n) = &p.numeric_stats {
        let parts: Vec<String> = [
            ("min", n.min),
            ("median", n.median),
            ("mean", n.mean),
            ("max", n.max),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k} {}", number(v))))
        .collect();
        out.push(parts.join(" · "));
    }
    if let Some(s) = &p.string_stats
        && !s.top_values.is_empty()
    {
        out.push(format!(
            "top: {}",
            s.top_values
                .iter()
                .take(5)
                .map(|t| format!("{} ({}%)", t.value, number(t.pct)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(d) = &p.date_stats
        && let (Some(a), Some(b)) = (&d.earliest, &d.latest)
    {
        out.push(format!("{a} to {b}"));
    }
    if let Some(b) = &p.boolean_stats {
        out.push(format!("{}% true", number(b.true_pct)));
    }
    out
}

fn snippets(state: &AppState, schema: &str, name: &str) -> Snippets {
    let http = state.options.public_url.trim_end_matches('/');
    let sql = format!("select * from {schema}.{name} limit 10");
    Snippets {
        adbc: format!(
            "import adbc_driver_flightsql.dbapi as flight_sql\n\
             conn = flight_sql.connect(\"{}\", db_kwargs={{\n    \
             \"adbc.flight.sql.authorization_header\": \"Bearer YOUR_API_TOKEN\"}})\n\
             table = conn.cursor().execute(\"{sql}\").fetch_arrow_table()",
            state.options.flight_url
        ),
        duckdb: format!(
            "dataport pull --dir ~/dataport\nduckdb ~/dataport/analytics.duckdb -c \"select * from {name} limit 10\""
        ),
        curl: format!(
            "curl -H \"Authorization: Bearer YOUR_API_TOKEN\" \\\n  -d '{{\"sql\": \"{sql}\"}}' '{http}/api/v1/query?format=csv'"
        ),
    }
}

fn table_data(
    state: &AppState,
    table: TableBody,
    profile: Result<TableProfileView, String>,
    metrics: Vec<MetricLink>,
) -> TableData {
    let now = dataport_auth::now_secs();
    let (profile, profiled_at, restricted, problem) = match profile {
        Ok(p) => (
            Some(p.profile),
            Some(when(p.computed_at)),
            p.restricted,
            None,
        ),
        Err(problem) => (None, None, false, Some(problem)),
    };
    let columns = table
        .columns
        .iter()
        .map(|c| {
            let column_profile = profile
                .as_ref()
                .and_then(|p| p.columns.iter().find(|cp| cp.name == c.name).cloned());
            let histogram = column_profile.as_ref().and_then(|p| {
                p.numeric_stats
                    .as_ref()
                    .map(|n| &n.histogram)
                    .or(p.date_stats.as_ref().map(|d| &d.histogram))
            });
            ColumnLine {
                chart: histogram.and_then(|h| chart(h, &c.name)),
                figures: column_profile.as_ref().map(figures).unwrap_or_default(),
                name: c.name.clone(),
                data_type: c.data_type.clone(),
                nullable: c.nullable,
                description: c.description.clone(),
                key: table.primary_key.contains(&c.name),
                profile: column_profile,
            }
        })
        .collect();
    let related = profile
        .as_ref()
        .map(|p| {
            p.related_tables
                .iter()
                .map(|r| Related {
                    href: format!("/catalog/{}", r.table.replacen('.', "/", 1)),
                    how: format!(
                        "{} ({} = {})",
                        if r.direction == "belongs_to" {
                            "references"
                        } else {
                            "referenced by"
                        },
                        r.join_column,
                        r.foreign_column
                    ),
                    table: r.table.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let sample_columns: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let sample_rows = profile
        .as_ref()
        .map(|p| {
            p.sample_rows
                .iter()
                .map(|row| {
                    sample_columns
                        .iter()
                        .map(|c| row.get(c).cloned().flatten().unwrap_or_default())
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default();
    let alerts = profile
        .as_ref()
        .map(|p| {
            p.alerts
                .iter()
                .map(|a| format!("{}: {}", a.column, a.message))
                .collect()
        })
        .unwrap_or_default();
    TableData {
        updated: table.updated_at_ms.map_or("—".into(), |ms| {
            format!("{} ({})", when(ms / 1000), ago(ms / 1000, now))
        }),
        snippets: snippets(state, &table.schema, &table.name),
        columns,
        related,
        profiled_at,
        profile_restricted: restricted,
        profile_problem: problem,
        alerts,
        sample_columns,
        sample_rows,
        metrics,
        table,
    }
}

/// A profile as the table page uses it.
pub(crate) struct TableProfileView {
    pub(crate) profile: TableProfile,
    pub(crate) computed_at: i64,
    pub(crate) restricted: bool,
}

/// `GET /catalog/{schema}/{table}`.
pub(crate) async fn get_table(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path((schema, name)): Path<(String, String)>,
) -> Response {
    let (table, profile) =
        match table_with_profile(&state, &viewer.principal, &id, &schema, &name).await {
            Ok(found) => found,
            Err(e) => {
                return not_found(
                    &state,
                    &viewer,
                    e,
                    "There is no such table, or you may not read it.",
                );
            }
        };
    let profile = profile
        .map(|p| TableProfileView {
            computed_at: p.computed_at,
            restricted: p.restricted,
            profile: p.profile,
        })
        .map_err(|e| {
            tracing::warn!(request_id = %id, error = %e, "the table page shows no profile");
            "No profile could be computed for this table yet.".to_string()
        });
    let metrics = state
        .engine
        .business_metrics(&crate::request_context(&viewer.principal, &id))
        .iter()
        .filter(|m| m.schema == table.schema && m.table == table.name)
        .map(|m| MetricLink::new(m))
        .collect();
    let data = table_data(&state, table, profile, metrics);
    let page = TablePage {
        chrome: Chrome::new(&state, &viewer, "/catalog"),
        data: &data,
    };
    respond(&viewer, StatusCode::OK, &data, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_fills_the_chart_in_proportion() {
        let h = Histogram {
            bins: vec!["0".into(), "10".into(), "20".into()],
            counts: vec![5, 10, 0],
        };
        let c = chart(&h, "qty").unwrap();
        let heights: Vec<u32> = c.bars.iter().map(|b| b.height).collect();
        assert_eq!(heights, vec![39, 78, 0]);
        assert!(c.bars.iter().all(|b| b.y + b.height == CHART_HEIGHT));
        assert_eq!((c.first.as_str(), c.last.as_str()), ("0", "20"));
        let empty = Histogram {
            bins: vec![],
            counts: vec![],
        };
        assert!(chart(&empty, "x").is_none());
    }

    #[test]
    fn numbers_read_plainly() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(1.0 / 3.0), "0.333");
    }
}
