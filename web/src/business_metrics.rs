//! `GET /api/v1/metrics`: the business metrics the caller may use (and, for administrators, the
//! definitions that could not be loaded); `GET /api/v1/metrics/{name}`: one metric's values,
//! run as the caller's query (their grants, row filters, limits and audit) and answered in the
//! negotiated format.
//!
//! A request picks among the metric's own options: `grain` (`day` … `year`; default the
//! metric's), `total=true` (one value, no periods), `dimensions` (comma-separated or repeated),
//! `from` and `to` (dates, inclusive, on its time column).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::NaiveDate;
use dataport_catalog::metrics::{BusinessMetric, Grain, MetricProblem, MetricQuery};
use dataport_engine::QueryRequest;
use serde::Serialize;

use crate::auth::Caller;
use crate::format::Format;
use crate::{ApiError, AppState, RequestId, request_context};

/// A metric as the API lists it: its definition and the options a request may choose.
#[derive(Debug, Serialize)]
pub(crate) struct MetricBody {
    #[serde(flatten)]
    pub(crate) metric: std::sync::Arc<BusinessMetric>,
    /// The grains a request may ask for (none without a time column).
    pub(crate) grains: Vec<Grain>,
    /// Where to run it.
    pub(crate) href: String,
}

impl MetricBody {
    pub(crate) fn new(metric: std::sync::Arc<BusinessMetric>) -> Self {
        Self {
            grains: if metric.time_column.is_some() {
                Grain::ALL.to_vec()
            } else {
                Vec::new()
            },
            href: format!("/api/v1/metrics/{}", metric.name),
            metric,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct MetricsBody {
    metrics: Vec<MetricBody>,
    /// Definitions left out, with file, line and reason (administrators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    problems: Option<Vec<MetricProblem>>,
}

/// `GET /api/v1/metrics`.
pub(crate) async fn get_metrics(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
) -> Json<MetricsBody> {
    let ctx = request_context(&principal, &id);
    let metrics = state
        .engine
        .business_metrics(&ctx)
        .into_iter()
        .map(MetricBody::new)
        .collect();
    let problems = principal.admin.then(|| {
        state
            .engine
            .catalog()
            .snapshot()
            .metrics()
            .problems()
            .to_vec()
    });
    Json(MetricsBody { metrics, problems })
}

/// A metric request read from a query string (`grain`, `total`, `dimensions`, `from`, `to`,
/// and `format`, which the caller of this reads).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MetricParams {
    pub(crate) grain: Option<Grain>,
    pub(crate) total: bool,
    pub(crate) dimensions: Vec<String>,
    pub(crate) from: Option<NaiveDate>,
    pub(crate) to: Option<NaiveDate>,
    pub(crate) format: Option<String>,
}

impl MetricParams {
    /// Reads `query` (the raw query string); a value that cannot be read is a 400 that says
    /// what is expected.
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let pairs = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        let date = |key: &str, v: &str| {
            NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
                ApiError::bad_request(format!("{key} must be a date as YYYY-MM-DD, not '{v}'"))
            })
        };
        let mut out = Self::default();
        for (key, value) in pairs {
            let value = value.trim();
            match key.as_ref() {
                "grain" if value.is_empty() => {}
                "grain" if value == "total" => out.total = true,
                "grain" => {
                    out.grain = Some(Grain::parse(value).ok_or_else(|| {
                        ApiError::bad_request(
                            "grain must be day, week, month, quarter, year or total",
                        )
                    })?);
                }
                "total" => out.total = matches!(value, "true" | "1" | "yes" | "on"),
                "dimensions" | "dimension" => out.dimensions.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .map(str::to_string),
                ),
                "from" if !value.is_empty() => out.from = Some(date("from", value)?),
                "to" if !value.is_empty() => out.to = Some(date("to", value)?),
                "format" => out.format = Some(value.to_string()),
                _ => {}
            }
        }
        out.dimensions.dedup();
        Ok(out)
    }

    pub(crate) fn query(&self) -> MetricQuery {
        MetricQuery {
            grain: self.grain,
            total: self.total,
            dimensions: self.dimensions.clone(),
            from: self.from,
            to: self.to,
        }
    }

    /// The query string that asks for this again (for links), without `format`.
    pub(crate) fn to_query_string(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if self.total {
            pairs.push(("grain", "total".into()));
        } else if let Some(g) = self.grain {
            pairs.push(("grain", g.as_str().into()));
        }
        if !self.dimensions.is_empty() {
            pairs.push(("dimensions", self.dimensions.join(",")));
        }
        if let Some(d) = self.from {
            pairs.push(("from", d.to_string()));
        }
        if let Some(d) = self.to {
            pairs.push(("to", d.to_string()));
        }
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
    }
}

/// The SQL that answers `params` of the metric `name`, if the caller may see it.
pub(crate) fn metric_sql(
    state: &AppState,
    principal: &dataport_engine::Principal,
    request_id: &str,
    name: &str,
    params: &MetricParams,
) -> Result<(std::sync::Arc<BusinessMetric>, String), ApiError> {
    let ctx = request_context(principal, request_id);
    let metric = state.engine.business_metric(&ctx, name)?;
    let sql = metric
        .sql(&params.query())
        .map_err(dataport_engine::EngineError::from)?;
    Ok((metric, sql))
}

/// `GET /api/v1/metrics/{name}`.
pub(crate) async fn get_metric(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Caller(principal): Caller,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    tally: Option<axum::Extension<std::sync::Arc<dataport_engine::telemetry::Tally>>>,
) -> Result<Response, ApiError> {
    let tag = |e: ApiError| e.with_request_id(&id);
    let params = MetricParams::parse(query.as_deref()).map_err(tag)?;
    let format = Format::negotiate(params.format.as_deref(), &headers).map_err(tag)?;
    let (_, sql) = metric_sql(&state, &principal, &id, &name, &params).map_err(tag)?;
    let tally = tally.map(|axum::Extension(t)| t);
    crate::query::respond(
        &state,
        &principal,
        &id,
        tally,
        QueryRequest::new(sql),
        format,
    )
    .await
}
