//! `GET /health` and `GET /metrics`.

use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use dataport_catalog::CatalogIssue;
use serde::Serialize;

use crate::AppState;

#[derive(Serialize)]
pub(crate) struct Health {
    status: &'static str,
    version: &'static str,
    uptime_seconds: u64,
    tables: usize,
    snapshot_version: u64,
    last_refresh: LastRefresh,
    queries_running: i64,
    error_count: usize,
    /// One entry per catalog problem. Only administrators see which table or file and why:
    /// the entries would otherwise name tables the caller may not read.
    errors: Vec<HealthError>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum HealthError {
    Full(CatalogIssue),
    Hidden {
        source: &'static str,
        message: &'static str,
    },
}

impl HealthError {
    fn hidden() -> Self {
        Self::Hidden {
            source: "hidden",
            message: "a catalog problem; send an administrator's bearer token to see which \
                      table or file it concerns, why, and what to do",
        }
    }
}

#[derive(Serialize)]
struct LastRefresh {
    /// Seconds since the Unix epoch.
    at: Option<u64>,
    duration_ms: u64,
    refreshes: u64,
    failed: u64,
}

/// Open to everyone (load balancers, monitors); the catalog problems are listed only when
/// the request carries an administrator's bearer token.
pub(crate) async fn get_health(State(state): State<AppState>, headers: HeaderMap) -> Json<Health> {
    let catalog = state.engine.catalog();
    let snapshot = catalog.snapshot();
    let status = catalog.status();
    let issues = snapshot.issues();
    let admin = crate::auth::bearer_of(&headers)
        .and_then(|t| state.auth.check_bearer(&t))
        .is_ok_and(|p| p.admin);
    let errors = issues
        .iter()
        .map(|issue| {
            if admin {
                HealthError::Full(issue.clone())
            } else {
                HealthError::hidden()
            }
        })
        .collect();
    Json(Health {
        status: if issues.is_empty() { "ok" } else { "degraded" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.engine.uptime().as_secs(),
        tables: snapshot.table_count(),
        snapshot_version: snapshot.version(),
        last_refresh: LastRefresh {
            at: status
                .last_refresh_at
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            duration_ms: status.last_duration_ms,
            refreshes: status.refreshes,
            failed: status.failed_refreshes,
        },
        queries_running: state.engine.metrics().running(),
        error_count: issues.len(),
        errors,
    })
}

pub(crate) async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        format!(
            "{}{}",
            state.engine.render_metrics(),
            state.jobs.render_metrics()
        ),
    )
}
