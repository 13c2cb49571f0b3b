//! Wiring of connectors and jobs: the server's job list from the configuration, and
//! `dataport sync` on the command line.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use dataport_catalog::Catalog;
use dataport_connectors::{
    Connector, LogProgress, Progress, Source, SyncRequest, TableReport, sync_source,
};
use dataport_engine::jobs::{
    JobAction, JobOutcome, JobResult, JobSpec, ProfileCatalogJob, RefreshCatalogJob,
};
use dataport_engine::profiles::Profiler;
use dataport_state::StateStore;

use crate::config::{Config, PROFILE_JOB, REFRESH_JOB, sync_job_name};
use dataport_laptop::term::{human_bytes, init_cli_logging};

/// `sync:<source>`: every table of a source, then the catalog refreshed and the changed
/// tables profiled. The engine runs jobs through its `JobAction` trait and knows no connector;
/// this is where the two meet.
struct SyncSourceJob {
    connector: Arc<dyn Connector>,
    data_dir: std::path::PathBuf,
    state: Arc<StateStore>,
    catalog: Catalog,
    profiler: Option<Arc<Profiler>>,
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

/// Every configured source, built.
pub(crate) fn sources(config: &Config, state: &Arc<StateStore>) -> anyhow::Result<Vec<Source>> {
    config
        .settings
        .sources
        .0
        .iter()
        .map(|s| {
            dataport_connectors::build(s, &config.settings.data_dir, state, &|v| {
                std::env::var(v).ok()
            })
            .with_context(|| format!("cannot set up source '{}'", s.name))
        })
        .collect()
}

/// Finish table changes a crashed writer left half-done and sweep its temporary files; the
/// server and `dataport sync` do this before writing anything.
pub(crate) fn recover(data_dir: &Path) -> anyhow::Result<()> {
    let report = dataport_catalog::write::recover(&data_dir.join("parquet"))
        .context("cannot recover interrupted table changes")?;
    if !report.completed.is_empty() || !report.removed.is_empty() {
        tracing::warn!(
            completed = report.completed.len(),
            removed = report.removed.len(),
            "recovered from an interrupted write: changes completed, temporary files removed"
        );
    }
    dataport_connectors::sweep_staging(data_dir);
    Ok(())
}

/// The server's jobs: `sync:<source>` for every pulled source, the SLA poll and consistency
/// check of every Jira source, `profile:catalog`, `refresh:catalog`, with the schedules of
/// `jobs:`.
pub(crate) fn server_jobs(
    config: &Config,
    store: &Arc<StateStore>,
    catalog: &Catalog,
    profiler: &Arc<Profiler>,
    sources: &[Source],
) -> anyhow::Result<Vec<JobSpec>> {
    let schedule_of = |name: &str| config.jobs.iter().find(|j| j.job == name);
    let mut jobs = Vec::new();
    for source in sources {
        let connector = match source {
            Source::Pull(c) => Arc::clone(c),
            Source::Jira(j) => {
                jobs.extend(crate::push::jira_jobs(j, &config.jobs, catalog, profiler));
                continue;
            }
        };
        let name = sync_job_name(connector.source());
        let s = schedule_of(&name);
        jobs.push(JobSpec {
            name,
            schedule: s.map(|s| s.schedule.clone()),
            jitter: s.map(|s| s.jitter).unwrap_or_default(),
            action: Arc::new(SyncSourceJob {
                connector,
                data_dir: config.settings.data_dir.clone(),
                state: Arc::clone(store),
                catalog: catalog.clone(),
                profiler: Some(Arc::clone(profiler)),
            }),
        });
    }
    let s = schedule_of(PROFILE_JOB);
    jobs.push(JobSpec {
        name: PROFILE_JOB.into(),
        schedule: s.map(|s| s.schedule.clone()),
        jitter: s.map(|s| s.jitter).unwrap_or_default(),
        action: Arc::new(ProfileCatalogJob {
            catalog: catalog.clone(),
            profiler: Arc::clone(profiler),
        }),
    });
    let s = schedule_of(REFRESH_JOB);
    jobs.push(JobSpec {
        name: REFRESH_JOB.into(),
        schedule: s.map(|s| s.schedule.clone()),
        jitter: s.map(|s| s.jitter).unwrap_or_default(),
        action: Arc::new(RefreshCatalogJob {
            catalog: catalog.clone(),
        }),
    });
    Ok(jobs)
}

#[derive(Debug, clap::Args)]
pub(crate) struct SyncArgs {
    /// The source to sync (default: every configured source)
    source: Option<String>,
    /// Only this table (its source id, `schema.table` or name)
    table: Option<String>,
    /// Rebuild from scratch instead of fetching increments
    #[arg(long)]
    full: bool,
    /// Jira sources: load every issue from scratch (of `projects`, or of --project)
    #[arg(long)]
    backfill: bool,
    /// Jira sources: with --backfill, only this project
    #[arg(long, requires = "backfill")]
    project: Option<String>,
    /// Print only failures and the summary
    #[arg(long, short)]
    quiet: bool,
}

/// `dataport sync [SOURCE [TABLE]]`: runs in this process, next to a running server (whose
/// catalog picks the new files up); per-table locks keep it from colliding with the
/// server's own sync jobs.
pub(crate) fn sync(store: &crate::admin::StoreArgs, args: SyncArgs) -> anyhow::Result<()> {
    let config = store.config()?;
    init_cli_logging(args.quiet);
    if config.settings.sources.0.is_empty() {
        anyhow::bail!(
            "no sources are configured; add a `sources:` list to the config file (see docs/connectors.md)"
        );
    }
    recover(&config.settings.data_dir)?;
    let state = Arc::new(
        StateStore::open(&config.settings.data_dir).context("cannot open the state store")?,
    );
    let all = sources(&config, &state)?;
    let selected: Vec<Source> = match &args.source {
        None => all,
        Some(name) => {
            let found: Vec<_> = all.into_iter().filter(|c| c.name() == name).collect();
            if found.is_empty() {
                let names: Vec<&str> = config
                    .settings
                    .sources
                    .0
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                anyhow::bail!(
                    "there is no source '{name}'; configured: {}",
                    names.join(", ")
                );
            }
            found
        }
    };
    if args.backfill && selected.iter().all(|s| matches!(s, Source::Pull(_))) {
        anyhow::bail!(
            "--backfill applies to Jira sources; name one (`dataport sync SOURCE --backfill`)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let progress = Bar::new(args.quiet);
    let mut failed = 0;
    for source in selected {
        let connector = match source {
            Source::Pull(c) => c,
            Source::Jira(j) => {
                if let Some(table) = &args.table {
                    anyhow::bail!(
                        "source '{}' is a Jira source: it syncs issues into all its tables at once, not '{table}' alone; run `dataport sync {}` (the consistency check) or add --backfill",
                        j.name(),
                        j.name()
                    );
                }
                let ok = runtime.block_on(crate::push::sync_jira_cli(
                    &j,
                    &state,
                    args.backfill,
                    args.project.as_deref(),
                    args.quiet,
                ))?;
                if !ok {
                    failed += 1;
                }
                continue;
            }
        };
        let job = sync_job_name(connector.source());
        let run = state.start_job_run(&job, "cli", chrono::Utc::now().timestamp_millis())?;
        let request = SyncRequest {
            table: args.table.clone(),
            full: args.full,
        };
        let report = runtime.block_on(sync_source(
            connector.as_ref(),
            &config.settings.data_dir,
            &state,
            None,
            &request,
            &progress,
        ));
        progress.clear();
        let error = report.error.clone().or_else(|| {
            (report.failed() > 0).then(|| format!("{} tables failed", report.failed()))
        });
        state.finish_job_run(
            run,
            chrono::Utc::now().timestamp_millis(),
            report.outcome(),
            &report.summary(),
            error.as_deref(),
            "",
        )?;
        if let Some(e) = &report.error {
            eprintln!("error: {e}");
        }
        eprintln!("{}", report.summary());
        if report.outcome() != "ok" {
            failed += 1;
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} source(s) did not sync completely; see the messages above");
    }
    Ok(())
}

/// A one-line progress display on a terminal, plain lines otherwise.
struct Bar {
    quiet: bool,
    tty: bool,
    line: Mutex<BarState>,
}

#[derive(Default)]
struct BarState {
    table: String,
    index: usize,
    total: usize,
    bytes: u64,
    step: String,
    shown: bool,
}

impl Bar {
    fn new(quiet: bool) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
            line: Mutex::new(BarState::default()),
        }
    }

    fn draw(&self, s: &mut BarState) {
        if self.quiet || !self.tty {
            return;
        }
        let width = 24;
        let done = (s.index.saturating_sub(1) * width)
            .checked_div(s.total)
            .unwrap_or(0);
        let bar: String = (0..width)
            .map(|i| if i < done { '#' } else { '-' })
            .collect();
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r\x1b[2K[{bar}] {}/{} {} — {} ({})",
            s.index,
            s.total,
            s.table,
            s.step,
            human_bytes(s.bytes)
        );
        let _ = err.flush();
        s.shown = true;
    }

    fn clear(&self) {
        let mut s = lock(&self.line);
        if s.shown {
            eprint!("\r\x1b[2K");
            s.shown = false;
        }
    }
}

fn lock(m: &Mutex<BarState>) -> std::sync::MutexGuard<'_, BarState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Progress for Bar {
    fn table_started(&self, table: &str, index: usize, total: usize) {
        let mut s = lock(&self.line);
        *s = BarState {
            table: table.to_string(),
            index,
            total,
            shown: s.shown,
            ..BarState::default()
        };
        self.draw(&mut s);
    }

    fn step(&self, _table: &str, message: &str) {
        let mut s = lock(&self.line);
        s.step = message.to_string();
        self.draw(&mut s);
    }

    fn bytes(&self, _table: &str, bytes: u64) {
        let mut s = lock(&self.line);
        s.bytes += bytes;
        self.draw(&mut s);
    }

    fn table_finished(&self, r: &TableReport) {
        let mut s = lock(&self.line);
        if s.shown {
            eprint!("\r\x1b[2K");
            s.shown = false;
        }
        match &r.error {
            Some(e) => eprintln!("✗ {} ({}): {e}", r.table, r.id),
            None if !self.quiet => eprintln!(
                "✓ {} ({}): {} rows received, {} rows, {} in {:.1}s",
                r.table,
                r.strategy,
                r.rows_received,
                r.rows,
                human_bytes(r.bytes),
                Duration::from_millis(r.duration_ms).as_secs_f64()
            ),
            None => {}
        }
    }
}

/// A server job (`notify:run`, `memory:collect`, …): every `every` unless `jobs:` gives it a
/// schedule of its own.
pub(crate) fn scheduled(
    config: &Config,
    name: &str,
    every: std::time::Duration,
    action: std::sync::Arc<dyn dataport_engine::jobs::JobAction>,
) -> JobSpec {
    let configured = config.jobs.iter().find(|j| j.job == name);
    JobSpec {
        name: name.into(),
        schedule: Some(
            configured.map_or(dataport_engine::jobs::Schedule::Every(every), |s| {
                s.schedule.clone()
            }),
        ),
        jitter: configured.map(|s| s.jitter).unwrap_or_default(),
        action,
    }
}
