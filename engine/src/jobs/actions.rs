//! The work of the built-in jobs.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use dataport_catalog::Catalog;
use dataport_connectors::{Connector, LogProgress, SyncRequest, sync_source};
use dataport_state::StateStore;

use super::{JobAction, JobOutcome, JobResult};

/// `sync:<source>`: every table of a source, then the catalog refreshed.
pub struct SyncSourceJob {
    pub connector: Arc<dyn Connector>,
    pub data_dir: PathBuf,
    pub state: Arc<StateStore>,
    pub catalog: Catalog,
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
