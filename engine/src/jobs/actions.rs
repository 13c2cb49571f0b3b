//! The work of the built-in jobs.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use dataport_catalog::Catalog;
use dataport_connectors::{Connector, LogProgress, SyncRequest, sync_source};
use dataport_state::StateStore;

use super::{JobAction, JobOutcome, JobResult};
use crate::profiles::Profiler;

/// `sync:<source>`: every table of a source, then the catalog refreshed and the changed
/// tables profiled.
pub struct SyncSourceJob {
    pub connector: Arc<dyn Connector>,
    pub data_dir: PathBuf,
    pub state: Arc<StateStore>,
    pub catalog: Catalog,
    pub profiler: Option<Arc<Profiler>>,
}

#[async_trait]
impl JobAction for SyncSourceJob {
    fn describe(&self) -> String {
        format!(
            "sync the {} source '{}' into the catalog",
            self.connector.kind(),
            self.connector.source()
        )
    }

    async fn run(&self) -> JobResult {
        let report = sync_source(
            self.connector.as_ref(),
            &self.data_dir,
            &self.state,
            Some(&self.catalog),
            &SyncRequest::default(),
            &LogProgress,
        )
        .await;
        let outcome = match report.outcome() {
            "ok" => JobOutcome::Ok,
            "partial" => JobOutcome::Partial,
            _ => JobOutcome::Error,
        };
        if let Some(p) = &self.profiler
            && report.tables.iter().any(|t| t.error.is_none())
        {
            let run = p.refresh_all(&self.catalog.snapshot()).await;
            if !run.failed.is_empty() {
                tracing::warn!(
                    failed = run.failed.len(),
                    "some tables could not be profiled after the sync"
                );
            }
        }
        let error = report.error.clone().or_else(|| {
            let failed: Vec<String> = report
                .tables
                .iter()
                .filter_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.table)))
                .collect();
            (!failed.is_empty()).then(|| failed.join("; "))
        });
        JobResult {
            outcome,
            summary: report.summary(),
            error,
        }
    }
}

/// `refresh:catalog`: rescan the data dir.
pub struct RefreshCatalogJob {
    pub catalog: Catalog,
}

#[async_trait]
impl JobAction for RefreshCatalogJob {
    fn describe(&self) -> String {
        "rescan the data dir and swap in a new catalog snapshot".into()
    }

    async fn run(&self) -> JobResult {
        match self.catalog.refresh().await {
            Ok(r) => JobResult {
                outcome: if r.errors.is_empty() {
                    JobOutcome::Ok
                } else {
                    JobOutcome::Partial
                },
                summary: format!(
                    "snapshot {}: {} tables, {} added, {} changed, {} removed",
                    r.snapshot_version,
                    r.tables,
                    r.added.len(),
                    r.changed.len(),
                    r.removed.len()
                ),
                error: (!r.errors.is_empty()).then(|| {
                    r.errors
                        .iter()
                        .map(|e| format!("{}: {}", e.source, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                }),
            },
            Err(e) => JobResult {
                outcome: JobOutcome::Error,
                summary: "catalog refresh failed".into(),
                error: Some(e.to_string()),
            },
        }
    }
}

/// `profile:catalog`: profile every table whose data changed since its stored profile.
pub struct ProfileCatalogJob {
    pub catalog: Catalog,
    pub profiler: Arc<Profiler>,
}

#[async_trait]
impl JobAction for ProfileCatalogJob {
    fn describe(&self) -> String {
        "profile every table whose data changed (statistics, histograms, alerts)".into()
    }

    async fn run(&self) -> JobResult {
        let run = self.profiler.refresh_all(&self.catalog.snapshot()).await;
        let summary = format!(
            "{} tables profiled, {} unchanged, {} failed",
            run.computed.len(),
            run.unchanged,
            run.failed.len()
        );
        let outcome = if run.failed.is_empty() {
            JobOutcome::Ok
        } else if run.computed.is_empty() && run.unchanged == 0 {
            JobOutcome::Error
        } else {
            JobOutcome::Partial
        };
        JobResult {
            outcome,
            summary,
            error: (!run.failed.is_empty()).then(|| {
                run.failed
                    .iter()
                    .map(|(t, e)| format!("{t}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
        }
    }
}
