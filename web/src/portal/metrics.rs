//! A business metric's page (`GET /metrics/{name}`): its definition and owner, a form to pick
//! the grain, dimensions and date range among the metric's own, its values as a table (a page
//! at a time) and, by period, as an SVG bar chart; downloads and the API call that answers the
//! same. The values come from the API's own query for the metric
//! ([`crate::business_metrics::metric_sql`]) run as the viewer, so their grants and row filters
//! hold; a metric the viewer may not use is "not found".

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use dataport_catalog::metrics::{Grain, PERIOD_COLUMN};
use serde::Serialize;

use super::catalog::{Chart, bar_chart};
use super::sql::{ResultPage, run_page};
use super::{Chrome, Viewer, not_found, respond};
use crate::business_metrics::{MetricBody, MetricParams, metric_sql};
use crate::{AppState, RequestId};

const GONE: &str = "There is no such metric, or you may not read the data it is computed from.";

/// An option of the grain list.
#[derive(Debug, Serialize)]
pub(crate) struct GrainOption {
    pub(crate) value: &'static str,
    pub(crate) label: String,
    pub(crate) selected: bool,
}

/// A dimension the viewer may group by, and whether this request does.
#[derive(Debug, Serialize)]
pub(crate) struct DimensionOption {
    pub(crate) name: String,
    pub(crate) checked: bool,
}

/// A download of the values shown.
#[derive(Debug, Serialize)]
pub(crate) struct Download {
    pub(crate) label: &'static str,
    pub(crate) href: String,
}

/// What the metric page shows (and its JSON twin answers).
#[derive(Debug, Serialize)]
pub(crate) struct MetricData {
    pub(crate) metric: MetricBody,
    pub(crate) params: MetricParams,
    pub(crate) grains: Vec<GrainOption>,
    pub(crate) dimensions: Vec<DimensionOption>,
    /// The query that computed the values (the viewer's grants applied when it ran).
    pub(crate) sql: String,
    pub(crate) result: Option<ResultPage>,
    pub(crate) error: Option<String>,
    pub(crate) chart: Option<Chart>,
    pub(crate) downloads: Vec<Download>,
    /// The same values over HTTP.
    pub(crate) curl: String,
    /// Links to the previous and next page of values.
    pub(crate) previous: Option<String>,
    pub(crate) next: Option<String>,
}

#[derive(Template)]
#[template(path = "metric.html")]
struct MetricPage<'a> {
    chrome: Chrome,
    data: &'a MetricData,
}

/// The page number asked for (`page=`, from 0).
fn page_of(query: Option<&str>) -> usize {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// The values by period as a chart, when the result is one series (a period and the value).
fn series_chart(result: &ResultPage, name: &str, grain: Grain) -> Option<Chart> {
    if result.columns.len() != 2 || result.columns[0] != PERIOD_COLUMN {
        return None;
    }
    let points: Vec<(String, f64)> = result
        .rows
        .iter()
        .filter_map(|r| Some((r[0].clone(), r[1].parse::<f64>().ok()?)))
        .collect();
    let (first, last) = (points.first()?.0.clone(), points.last()?.0.clone());
    let summary = format!(
        "{name} by {}: {} values from {first} to {last}",
        grain.as_str(),
        points.len()
    );
    bar_chart(&points, summary)
}

/// `GET /metrics/{name}`.
pub(crate) async fn get_metric(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = MetricParams::parse(query.as_deref());
    let page = page_of(query.as_deref());
    // A request the form could not have made still shows the metric, with the reason.
    let (params, mut error) = match params {
        Ok(p) => (p, None),
        Err(e) => (MetricParams::default(), Some(e.to_string())),
    };
    let (metric, sql) = match metric_sql(&state, &viewer.principal, &id, &name, &params) {
        Ok(found) => (found.0, Ok(found.1)),
        Err(e) if e.status() == StatusCode::NOT_FOUND => {
            return not_found(&state, &viewer, e, GONE);
        }
        Err(e) => match metric_sql(
            &state,
            &viewer.principal,
            &id,
            &name,
            &MetricParams::default(),
        ) {
            Ok((metric, _)) => (metric, Err(e)),
            Err(e) => return not_found(&state, &viewer, e, GONE),
        },
    };
    let (sql, result) = match sql {
        Ok(sql) => {
            let result = run_page(&state, &viewer, &id, &sql, page).await;
            (sql, result)
        }
        Err(e) => (String::new(), Err(e)),
    };
    let result = match result {
        Ok(r) => Some(r),
        Err(e) => {
            error.get_or_insert_with(|| e.to_string());
            None
        }
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let grain = params.grain.or(metric.grain);
    let chart = result
        .as_ref()
        .zip(grain.filter(|_| !params.total))
        .and_then(|(r, g)| series_chart(r, &metric.name, g));
    let mut grains: Vec<GrainOption> = Vec::new();
    if metric.time_column.is_some() {
        grains.extend(Grain::ALL.into_iter().map(|g| GrainOption {
            value: g.as_str(),
            label: if Some(g) == metric.grain {
                format!("{} (the metric's)", g.as_str())
            } else {
                g.as_str().to_string()
            },
            selected: !params.total && grain == Some(g),
        }));
    }
    grains.push(GrainOption {
        value: "total",
        label: "total (no periods)".into(),
        selected: params.total || grain.is_none(),
    });
    let dimensions = metric
        .dimensions
        .iter()
        .map(|d| DimensionOption {
            name: d.clone(),
            checked: params.dimensions.contains(d),
        })
        .collect();
    let asked = params.to_query_string();
    let api = format!("/api/v1/metrics/{}", metric.name);
    let with = |extra: &str| {
        let joined = [asked.as_str(), extra]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("&");
        format!("{api}?{joined}")
    };
    let downloads = [("CSV", "csv"), ("Parquet", "parquet"), ("Arrow", "arrow")]
        .into_iter()
        .map(|(label, format)| Download {
            label,
            href: with(&format!("format={format}")),
        })
        .collect();
    let public = state.options.public_url.trim_end_matches('/');
    let curl = format!(
        "curl -H \"Authorization: Bearer YOUR_API_TOKEN\" '{public}{}'",
        with("format=csv")
    );
    let here = |p: usize| {
        let mut q = asked.clone();
        if !q.is_empty() {
            q.push('&');
        }
        format!("/metrics/{}?{q}page={p}", metric.name)
    };
    let previous = result
        .as_ref()
        .filter(|r| r.page > 0)
        .map(|r| here(r.page - 1));
    let next = result.as_ref().filter(|r| r.more).map(|r| here(r.page + 1));
    let data = MetricData {
        metric: MetricBody::new(metric),
        params,
        grains,
        dimensions,
        sql,
        result,
        error,
        chart,
        downloads,
        curl,
        previous,
        next,
    };
    let page = MetricPage {
        chrome: Chrome::new(&state, &viewer, "/catalog"),
        data: &data,
    };
    respond(&viewer, status, &data, &page)
}
