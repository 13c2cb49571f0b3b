//! The sources page (`GET /admin/sources`, administrators only): each configured source with
//! its connector type and settings (secrets appear only as the name of the environment variable
//! that holds them), its jobs, a push source's webhook queue and parked items, and the sync
//! state of each of its tables as the connectors recorded it (last success, rows, size,
//! duration, outcome and error); tables of sources no longer configured are listed apart.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dataport_engine::jobs::SyncRecord;
use serde::Serialize;

use super::admin::refuse_non_admin;
use super::operations::JobLine;
use super::{Chrome, Viewer, ago, respond, size_text};
use crate::jobs::blocking;
use crate::push::PushStatus;
use crate::{AppState, RequestId, SourceSummary};

/// A table's sync state as the page shows it.
#[derive(Debug, Serialize)]
pub(crate) struct TableState {
    #[serde(flatten)]
    pub(crate) record: SyncRecord,
    pub(crate) last_sync_text: String,
    pub(crate) last_attempt_text: String,
    pub(crate) size_text: String,
    /// Where the table is in the catalog.
    pub(crate) href: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct SourceView {
    #[serde(flatten)]
    pub(crate) source: SourceSummary,
    /// The source's jobs (`sync:<name>`, or a push source's `sync:<name>:…`).
    pub(crate) jobs: Vec<JobLine>,
    /// A push source's webhook queue, parked items and last poll.
    pub(crate) push: Option<PushView>,
    pub(crate) tables: Vec<TableState>,
    pub(crate) failing: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct PushView {
    #[serde(flatten)]
    pub(crate) status: PushStatus,
    pub(crate) last_received_text: String,
    pub(crate) last_poll_text: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct SourcesData {
    pub(crate) sources: Vec<SourceView>,
    /// Tables synced by sources that are no longer configured.
    pub(crate) unconfigured: Vec<TableState>,
}

#[derive(Template)]
#[template(path = "admin_sources.html")]
struct SourcesPage<'a> {
    chrome: Chrome,
    data: &'a SourcesData,
}

fn table_state(r: SyncRecord, now: i64) -> TableState {
    TableState {
        last_sync_text: r.last_sync.map_or("never".into(), |t| ago(t, now)),
        last_attempt_text: ago(r.last_attempt, now),
        size_text: size_text(r.bytes),
        href: format!("/catalog/{}/{}", r.schema_name, r.table_name),
        record: r,
    }
}

/// `GET /admin/sources`.
pub(crate) async fn get_sources(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "the sources page") {
        return refused;
    }
    let store = std::sync::Arc::clone(state.auth.store());
    let jobs = state.jobs.clone();
    let found = blocking(&id, move || Ok((store.sync_states(None)?, jobs.jobs()?))).await;
    let (records, jobs) = match found {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let now = dataport_auth::now_secs();
    let mut pushed = std::collections::HashMap::new();
    for (name, status) in state.options.push_sources.statuses().await {
        match status {
            Ok(s) => {
                pushed.insert(name, s);
            }
            Err(e) => {
                tracing::warn!(request_id = %id, source = %name, error = %e, "the sources page shows no queue for a push source")
            }
        }
    }
    let when = |ms: Option<i64>| ms.map_or("never".to_string(), |ms| ago(ms / 1000, now));
    let mut records: Vec<Option<SyncRecord>> = records.into_iter().map(Some).collect();
    let sources = state
        .options
        .sources
        .iter()
        .map(|s| {
            let tables: Vec<TableState> = records
                .iter_mut()
                .filter(|r| r.as_ref().is_some_and(|r| r.source == s.name))
                .filter_map(Option::take)
                .map(|r| table_state(r, now))
                .collect();
            let job_name = format!("sync:{}", s.name);
            let prefix = format!("{job_name}:");
            let jobs = jobs
                .iter()
                .filter(|j| j.name == job_name || j.name.starts_with(&prefix))
                .cloned()
                .map(JobLine::from)
                .collect();
            let push = pushed.remove(&s.name).map(|status| PushView {
                last_received_text: when(status.last_received_ms),
                last_poll_text: when(status.last_poll_ms),
                status,
            });
            SourceView {
                failing: tables.iter().filter(|t| t.record.outcome != "ok").count()
                    + push.as_ref().map_or(0, |p| p.status.parked.len()),
                source: s.clone(),
                jobs,
                push,
                tables,
            }
        })
        .collect();
    let data = SourcesData {
        sources,
        unconfigured: records
            .into_iter()
            .flatten()
            .map(|r| table_state(r, now))
            .collect(),
    };
    let page = SourcesPage {
        chrome: Chrome::new(&state, &viewer, "/admin"),
        data: &data,
    };
    respond(&viewer, StatusCode::OK, &data, &page)
}
