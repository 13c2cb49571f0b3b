//! Where push sources meet the server: each Jira source as the web crate's [`PushSource`]
//! (webhooks, stored files, health), its jobs (SLA poll, consistency check) for the engine's
//! scheduler, and `dataport sync <jira source> [--backfill]` on the command line.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dataport_catalog::Catalog;
use dataport_connectors::jira::{BatchReport, JiraSource, JobProgress, LogJobProgress, Rejection};
use dataport_engine::jobs::{JobAction, JobOutcome, JobResult, JobSpec, Schedule};
use dataport_engine::profiles::Profiler;
use dataport_state::StateStore;
use dataport_web::{ParkedItem, PushFile, PushRejection, PushSource, PushStatus};

use crate::config::{JobSchedule, consistency_job_name, sla_job_name};

/// Default schedules: the SLA poll every 5 minutes, the consistency check every 6 hours.
const SLA_EVERY: Duration = Duration::from_secs(5 * 60);
const CONSISTENCY_EVERY: Duration = Duration::from_secs(6 * 3600);

/// A Jira source behind `POST /webhooks/<name>`.
pub(crate) struct JiraPush {
    pub(crate) source: Arc<JiraSource>,
    pub(crate) state: Arc<StateStore>,
}

#[async_trait]
impl PushSource for JiraPush {
    fn max_body_bytes(&self) -> usize {
        self.source.config().max_body_bytes
    }

    async fn accept(
        &self,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<serde_json::Value, PushRejection> {
        let source = Arc::clone(&self.source);
        let accepted = tokio::task::spawn_blocking(move || source.accept(&headers, &body))
            .await
            .map_err(|e| PushRejection::Internal(e.to_string()))?;
        match accepted {
            Ok(receipt) => {
                serde_json::to_value(receipt).map_err(|e| PushRejection::Internal(e.to_string()))
            }
            Err(r @ Rejection::NoSecret(_)) => Err(PushRejection::Unavailable(r.to_string())),
            Err(r @ Rejection::Signature(_)) => Err(PushRejection::Unauthorized(r.to_string())),
            Err(r @ Rejection::Invalid(_)) => Err(PushRejection::Invalid(r.to_string())),
            Err(r @ Rejection::Store(_)) => Err(PushRejection::Internal(r.to_string())),
        }
    }

    async fn status(&self) -> Result<PushStatus, String> {
        let source = Arc::clone(&self.source);
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || {
            let s = source.status().map_err(|e| e.to_string())?;
            let mut last_poll = None;
            for job in [
                sla_job_name(source.name()),
                consistency_job_name(source.name()),
            ] {
                let runs = state.job_runs(Some(&job), 50).map_err(|e| e.to_string())?;
                let ok = runs
                    .iter()
                    .filter(|r| r.outcome == "ok")
                    .filter_map(|r| r.finished_ms)
                    .max();
                last_poll = last_poll.max(ok);
            }
            Ok(PushStatus {
                kind: "jira".into(),
                last_received_ms: s.queue.last_received_ms,
                queued: s.queue.queued,
                failed: s.queue.failed,
                parked: s
                    .parked
                    .into_iter()
                    .map(|p| ParkedItem {
                        item: p.item,
                        error: p.error,
                        since_ms: p.parked_ms,
                        failures: p.failures,
                    })
                    .collect(),
                items: s.issues,
                last_poll_ms: last_poll,
                secret_configured: s.secret_configured,
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn file(&self, id: &str) -> Result<Option<PushFile>, String> {
        let source = Arc::clone(&self.source);
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            let Some(found) = source.attachment(&id).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let (schema, _) = source.issues_table();
            let schema = schema.replace('"', "\"\"");
            // `id` is digits only (checked by `attachment`); the caller's grants and row
            // filters decide whether the attachment's row and its issue are visible.
            let visible_if = format!(
                "SELECT 1 FROM \"{schema}\".\"attachments\" a \
                 WHERE a.attachment_id = '{id}' \
                 AND a.issue_key IN (SELECT i.issue_key FROM \"{schema}\".\"issues\" i) LIMIT 1"
            );
            Ok(Some(PushFile {
                path: found.path,
                filename: found.filename,
                content_type: found.content_type,
                visible_if,
            }))
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

#[derive(Debug, Clone, Copy)]
enum JiraJobKind {
    Sla,
    Consistency,
}

/// `sync:<source>:sla` and `sync:<source>:consistency`.
struct JiraJob {
    source: Arc<JiraSource>,
    kind: JiraJobKind,
    catalog: Catalog,
    profiler: Arc<Profiler>,
}

#[async_trait]
impl JobAction for JiraJob {
    fn describe(&self) -> String {
        match self.kind {
            JiraJobKind::Sla => format!(
                "read the SLA fields of the open issues of Jira source '{}' again",
                self.source.name()
            ),
            JiraJobKind::Consistency => format!(
                "fetch the issues of Jira source '{}' updated in the last {} days that are missing or stale, and every parked issue",
                self.source.name(),
                self.source.config().consistency_days
            ),
        }
    }

    async fn run(&self) -> JobResult {
        let report = match self.kind {
            JiraJobKind::Sla => self.source.sla_poll().await,
            JiraJobKind::Consistency => self.source.consistency_check(&LogJobProgress).await,
        };
        if report.months > 0 {
            let run = self.profiler.refresh_all(&self.catalog.snapshot()).await;
            if !run.failed.is_empty() {
                tracing::warn!(
                    failed = run.failed.len(),
                    "some tables could not be profiled after a Jira poll"
                );
            }
        }
        job_result(&report)
    }
}

fn job_result(report: &BatchReport) -> JobResult {
    let error = report.error();
    let outcome = match (&error, report.synced + report.removed + report.unchanged) {
        (None, _) => JobOutcome::Ok,
        (Some(_), 0) => JobOutcome::Error,
        (Some(_), _) => JobOutcome::Partial,
    };
    JobResult {
        outcome,
        summary: report.summary(),
        error,
    }
}

/// The jobs of a Jira source, with the schedules of `jobs:` or the defaults.
pub(crate) fn jira_jobs(
    source: &Arc<JiraSource>,
    schedules: &[JobSchedule],
    catalog: &Catalog,
    profiler: &Arc<Profiler>,
) -> Vec<JobSpec> {
    [
        (sla_job_name(source.name()), JiraJobKind::Sla, SLA_EVERY),
        (
            consistency_job_name(source.name()),
            JiraJobKind::Consistency,
            CONSISTENCY_EVERY,
        ),
    ]
    .into_iter()
    .map(|(name, kind, every)| {
        let configured = schedules.iter().find(|j| j.job == name);
        JobSpec {
            schedule: Some(configured.map_or(Schedule::Every(every), |s| s.schedule.clone())),
            jitter: configured.map(|s| s.jitter).unwrap_or_default(),
            name,
            action: Arc::new(JiraJob {
                source: Arc::clone(source),
                kind,
                catalog: catalog.clone(),
                profiler: Arc::clone(profiler),
            }),
        }
    })
    .collect()
}

/// Progress of a backfill on the terminal: a redrawn line, or plain lines when not a terminal.
struct CliProgress {
    quiet: bool,
    tty: bool,
}

impl JobProgress for CliProgress {
    fn message(&self, text: &str) {
        if !self.quiet {
            if self.tty {
                eprint!("\r\x1b[2K");
            }
            eprintln!("{text}");
        }
    }

    fn issues(&self, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        let line = if total == 0 {
            format!("{done} issues listed")
        } else {
            format!("{done}/{total} issues loaded")
        };
        if self.tty {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        } else if total > 0 {
            eprintln!("{line}");
        }
    }
}

/// `dataport sync <jira source>`: the consistency check, or with `backfill` every issue
/// loaded from scratch. Recorded in the job history; returns whether it succeeded.
pub(crate) async fn sync_jira_cli(
    source: &Arc<JiraSource>,
    state: &StateStore,
    backfill: bool,
    project: Option<&str>,
    quiet: bool,
) -> anyhow::Result<bool> {
    let progress = CliProgress {
        quiet,
        tty: std::io::stderr().is_terminal(),
    };
    let job = if backfill {
        format!("sync:{}:backfill", source.name())
    } else {
        consistency_job_name(source.name())
    };
    let run = state.start_job_run(&job, "cli", chrono::Utc::now().timestamp_millis())?;
    let report = if backfill {
        match source.backfill(project, &progress).await {
            Ok(r) => r,
            Err(e) => {
                state.finish_job_run(
                    run,
                    chrono::Utc::now().timestamp_millis(),
                    "error",
                    "backfill failed",
                    Some(&e.to_string()),
                    "",
                )?;
                anyhow::bail!("{}: {e}", source.name());
            }
        }
    } else {
        source.consistency_check(&progress).await
    };
    if progress.tty && !quiet {
        eprint!("\r\x1b[2K");
    }
    let result = job_result(&report);
    let outcome = result.outcome.as_str();
    state.finish_job_run(
        run,
        chrono::Utc::now().timestamp_millis(),
        outcome,
        &result.summary,
        result.error.as_deref(),
        "",
    )?;
    if let Some(e) = &result.error {
        eprintln!("error: {e}");
    }
    eprintln!("{}: {}", source.name(), result.summary);
    Ok(outcome == "ok")
}
