//! The work of the built-in jobs.

use std::sync::Arc;

use async_trait::async_trait;
use dataport_catalog::Catalog;

use super::{JobAction, JobOutcome, JobResult};
use crate::profiles::Profiler;

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
