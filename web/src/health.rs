//! `GET /health` and `GET /metrics`.

use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use dataport_catalog::CatalogIssue;
use serde::Serialize;

use crate::AppState;

#[derive(Debug, Serialize)]
pub(crate) struct Health {
    pub(crate) status: &'static str,
    pub(crate) version: &'static str,
    pub(crate) uptime_seconds: u64,
    pub(crate) tables: usize,
    pub(crate) snapshot_version: u64,
    pub(crate) last_refresh: LastRefresh,
    pub(crate) queries_running: i64,
    pub(crate) error_count: usize,
    /// One entry per catalog problem. Only administrators see which table or file and why:
    /// the entries would otherwise name tables the caller may not read.
    pub(crate) errors: Vec<HealthError>,
    /// Push sources (webhooks): last delivery, queue, parked items, last poll.
    /// Administrators only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) sources: Vec<SourceHealth>,
    /// The notification gateway (the desktop app's WebSocket): `{status, connections, users}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) gateway: Option<crate::gateway::GatewayFigures>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SourceHealth {
    pub(crate) name: String,
    #[serde(flatten)]
    pub(crate) status: Option<crate::push::PushStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum HealthError {
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

#[derive(Debug, Serialize)]
pub(crate) struct LastRefresh {
    /// Seconds since the Unix epoch.
    pub(crate) at: Option<u64>,
    pub(crate) duration_ms: u64,
    pub(crate) refreshes: u64,
    pub(crate) failed: u64,
}

/// Open to everyone (load balancers, monitors); the catalog problems are listed only when
/// the request carries an administrator's bearer token.
pub(crate) async fn get_health(State(state): State<AppState>, headers: HeaderMap) -> Json<Health> {
    let admin = crate::auth::bearer_of(&headers)
        .and_then(|t| state.auth.check_bearer(&t))
        .is_ok_and(|p| p.admin && !p.assistant);
    Json(health(&state, admin).await)
}

/// The server's health; the catalog problems in full for an administrator (`/health` and the
/// portal's health page).
pub(crate) async fn health(state: &AppState, admin: bool) -> Health {
    let catalog = state.engine.catalog();
    let snapshot = catalog.snapshot();
    let status = catalog.status();
    let issues = snapshot.issues();
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
    let sources: Vec<SourceHealth> = state
        .options
        .push_sources
        .statuses()
        .await
        .into_iter()
        .map(|(name, status)| match status {
            Ok(s) => SourceHealth {
                name,
                status: Some(s),
                error: None,
            },
            Err(e) => SourceHealth {
                name,
                status: None,
                error: Some(e),
            },
        })
        .collect();
    // Parked items, given-up deliveries and unreadable sources degrade the server's health.
    let sources_ok = sources.iter().all(|s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.parked.is_empty() && st.failed == 0 && st.secret_configured)
    });
    Health {
        status: if issues.is_empty() && sources_ok {
            "ok"
        } else {
            "degraded"
        },
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
        sources: if admin { sources } else { Vec::new() },
        gateway: state.notify.as_ref().map(|n| n.gateway.figures()),
    }
}

pub(crate) async fn get_metrics(
    State(state): State<AppState>,
    axum::Extension(hub): axum::Extension<std::sync::Arc<crate::mcp::Hub>>,
) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        format!(
            "{}{}{}{}{}",
            state.engine.render_metrics(),
            crate::mcp::render_metrics(&hub),
            state.jobs.render_metrics(),
            crate::push::render_metrics(&state.options.push_sources).await,
            state
                .notify
                .as_ref()
                .map(|n| n.gateway.render_metrics())
                .unwrap_or_default()
        ),
    )
}
