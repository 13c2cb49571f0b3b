//! The activity page (`/activity`): what happened to the data lately, as its viewer may see it —
//! the last syncs of tables they may read, the catalog jobs' recent runs (their summaries and
//! errors for administrators only: they can name any table), the tables with profile alerts,
//! the team's query volume by day (counts only), and the tables that changed last.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::operations::RunLine;
use super::{Chrome, Viewer, ago, respond};
use crate::catalog::catalog_body;
use crate::{ApiError, AppState, RequestId};

/// Days of query volume shown.
const VOLUME_DAYS: i64 = 14;

#[derive(Debug, Serialize)]
pub(crate) struct SyncLine {
    pub(crate) table: String,
    pub(crate) source: String,
    pub(crate) strategy: String,
    pub(crate) at: String,
    pub(crate) rows: u64,
    pub(crate) took_ms: u64,
    pub(crate) outcome: String,
    pub(crate) error: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct AlertLine {
    pub(crate) table: String,
    pub(crate) href: String,
    pub(crate) alerts: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct DayBar {
    pub(crate) day: String,
    pub(crate) statements: u64,
    pub(crate) failed: u64,
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) height: u32,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChangedLine {
    pub(crate) table: String,
    pub(crate) href: String,
    pub(crate) updated: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct ActivityData {
    pub(crate) syncs: Vec<SyncLine>,
    pub(crate) runs: Vec<RunLine>,
    pub(crate) alerts: Vec<AlertLine>,
    pub(crate) volume: Vec<DayBar>,
    pub(crate) volume_total: u64,
    pub(crate) changed: Vec<ChangedLine>,
}

#[derive(Template)]
#[template(path = "activity.html")]
struct ActivityPage<'a> {
    chrome: Chrome,
    data: &'a ActivityData,
}

const BAR_WIDTH: u32 = 20;
const CHART_HEIGHT: u32 = 80;

/// The last [`VOLUME_DAYS`] days, each with its count (zero when nothing ran), as SVG bars.
fn volume_bars(counts: &[dataport_auth::DailyCount], today: chrono::NaiveDate) -> Vec<DayBar> {
    let max = counts
        .iter()
        .map(|c| c.statements)
        .max()
        .unwrap_or(0)
        .max(1);
    (0..VOLUME_DAYS)
        .rev()
        .enumerate()
        .map(|(i, back)| {
            let day = (today - chrono::Duration::days(back))
                .format("%Y-%m-%d")
                .to_string();
            let found = counts.iter().find(|c| c.day == day);
            let statements = found.map_or(0, |c| c.statements);
            let height =
                ((statements as f64 / max as f64) * f64::from(CHART_HEIGHT - 2)).round() as u32;
            DayBar {
                failed: found.map_or(0, |c| c.failed),
                x: i as u32 * (BAR_WIDTH + 2),
                y: CHART_HEIGHT - height,
                height,
                statements,
                day,
            }
        })
        .collect()
}

/// `GET /activity`.
pub(crate) async fn get_activity(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
) -> Response {
    let now = dataport_auth::now_secs();
    let catalog = catalog_body(&state, &viewer.principal, &id);
    let tables: Vec<_> = catalog.schemas.into_iter().flat_map(|s| s.tables).collect();
    let readable: std::collections::HashSet<String> = tables
        .iter()
        .map(|t| format!("{}.{}", t.schema, t.name))
        .collect();
    let store = std::sync::Arc::clone(state.auth.store());
    let since_ms = (now - VOLUME_DAYS * 86_400) * 1000;
    let read = tokio::task::spawn_blocking(move || {
        Ok::<_, dataport_auth::StateError>((
            store.sync_states(None)?,
            store.job_runs(None, 20)?,
            store.audit_daily_counts(since_ms)?,
        ))
    })
    .await;
    let (syncs, runs, counts) = match read {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            return ApiError::internal(e.to_string())
                .with_request_id(&id)
                .into_response();
        }
        Err(e) => {
            return ApiError::internal(e.to_string())
                .with_request_id(&id)
                .into_response();
        }
    };
    let mut syncs: Vec<_> = syncs
        .into_iter()
        .filter(|s| readable.contains(&format!("{}.{}", s.schema_name, s.table_name)))
        .collect();
    syncs.sort_by_key(|s| std::cmp::Reverse(s.last_attempt));
    let admin = viewer.principal.admin;
    let mut alerts: Vec<AlertLine> = tables
        .iter()
        .filter_map(|t| {
            let p = t.profile.as_ref()?;
            let total: u64 = p.alerts.values().sum();
            (total > 0).then(|| AlertLine {
                table: format!("{}.{}", t.schema, t.name),
                href: format!("/catalog/{}/{}", t.schema, t.name),
                alerts: p
                    .alerts
                    .iter()
                    .map(|(kind, n)| format!("{n} {}", kind.replace('_', " ")))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        })
        .collect();
    alerts.sort_by(|a, b| a.table.cmp(&b.table));
    let mut changed: Vec<_> = tables
        .iter()
        .filter_map(|t| t.updated_at_ms.map(|ms| (ms, t)))
        .collect();
    changed.sort_by_key(|(ms, _)| std::cmp::Reverse(*ms));
    let volume = volume_bars(&counts, chrono::Utc::now().date_naive());
    let data = ActivityData {
        syncs: syncs
            .into_iter()
            .take(20)
            .map(|s| SyncLine {
                table: format!("{}.{}", s.schema_name, s.table_name),
                at: ago(s.last_attempt, now),
                rows: s.rows,
                took_ms: s.duration_ms,
                error: s.error.unwrap_or_default(),
                source: s.source,
                strategy: s.strategy,
                outcome: s.outcome,
            })
            .collect(),
        runs: runs
            .iter()
            .map(RunLine::from)
            .map(|r| if admin { r } else { r.without_details() })
            .collect(),
        alerts,
        volume_total: volume.iter().map(|d| d.statements).sum(),
        volume,
        changed: changed
            .into_iter()
            .take(10)
            .map(|(ms, t)| ChangedLine {
                table: format!("{}.{}", t.schema, t.name),
                href: format!("/catalog/{}/{}", t.schema, t.name),
                updated: ago(ms / 1000, now),
            })
            .collect(),
    };
    let page = ActivityPage {
        chrome: Chrome::new(&state, &viewer, "/activity"),
        data: &data,
    };
    respond(&viewer, StatusCode::OK, &data, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_day_has_a_bar_and_the_busiest_fills_the_chart() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 7).unwrap_or_default();
        let counts = vec![
            dataport_auth::DailyCount {
                day: "2026-12-01".into(),
                statements: 10,
                failed: 1,
            },
            dataport_auth::DailyCount {
                day: "2026-12-07".into(),
                statements: 5,
                failed: 0,
            },
        ];
        let bars = volume_bars(&counts, today);
        assert_eq!(bars.len(), 14);
        assert_eq!(bars[0].day, "2026-11-24");
        assert_eq!(bars[13].day, "2026-12-07");
        let busiest = bars
            .iter()
            .find(|b| b.day == "2026-12-01")
            .map(|b| b.height);
        assert_eq!(busiest, Some(CHART_HEIGHT - 2));
        assert_eq!(bars[13].height, 39);
        assert_eq!(bars.iter().filter(|b| b.statements == 0).count(), 12);
    }
}
