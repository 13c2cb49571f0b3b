//! Catalog maintenance jobs: syncing a source, refreshing the catalog (and, later, profiling),
//! run on schedules inside the server or on demand.
//!
//! [`Scheduler`] owns the jobs. Each scheduled job has one timer task that waits for the next
//! due time (plus a random jitter, so jobs sharing a schedule don't start together) and starts
//! a run unless the previous one is still going: runs of one job never overlap, whether
//! started by the timer or by hand ([`Scheduler::trigger`]). Every run is recorded in the
//! state store's job history; counters feed `/metrics`.

mod actions;
mod logs;
mod schedule;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use dataport_common::{ErrorKind, HasKind};
use dataport_state::StateStore;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use actions::{ProfileCatalogJob, RefreshCatalogJob};
pub use dataport_state::{JobRun, SyncRecord};
pub use logs::{JobLogs, MAX_LINES, RUN_SPAN};
pub use schedule::{Cron, CronError, Schedule};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Ok,
    /// Some items failed, the rest succeeded.
    Partial,
    Error,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Partial => "partial",
            Self::Error => "error",
        }
    }
}

/// What a run reports.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub outcome: JobOutcome,
    /// One line: what was done.
    pub summary: String,
    pub error: Option<String>,
}

/// The work of a job.
#[async_trait]
pub trait JobAction: Send + Sync {
    /// What the job does, for listings.
    fn describe(&self) -> String;
    /// Do the work once.
    async fn run(&self) -> JobResult;
}

/// A job: a unique name (`sync:<source>`, `refresh:catalog`), an optional schedule, and its
/// work.
#[derive(Clone)]
pub struct JobSpec {
    pub name: String,
    pub schedule: Option<Schedule>,
    /// Up to this much random delay is added to each scheduled start.
    pub jitter: Duration,
    pub action: Arc<dyn JobAction>,
}

impl std::fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSpec")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

/// Why a job could not be started or listed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("there is no job '{0}'; GET /api/v1/jobs lists them")]
    NotFound(String),
    #[error("job '{0}' is already running; runs of one job never overlap")]
    AlreadyRunning(String),
    #[error("job '{0}' is defined twice")]
    Duplicate(String),
    #[error(transparent)]
    State(#[from] dataport_state::StateError),
}

impl HasKind for JobError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::AlreadyRunning(_) => ErrorKind::AlreadyExists,
            // Two jobs of one name is a wiring bug.
            Self::Duplicate(_) => ErrorKind::Internal,
            Self::State(e) => e.kind(),
        }
    }
}

/// A job as listed by `GET /api/v1/jobs`.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub name: String,
    pub description: String,
    pub schedule: Option<String>,
    pub running: bool,
    /// When the timer will next start it (UTC, RFC 3339).
    pub next_run: Option<String>,
    pub last_run: Option<JobRun>,
    pub runs: u64,
    pub failures: u64,
}

struct Entry {
    spec: JobSpec,
    running: AtomicBool,
    next_run: Mutex<Option<DateTime<Utc>>>,
    runs: [AtomicU64; 3],
    last_success_secs: AtomicI64,
    last_duration_ms: AtomicU64,
}

struct Inner {
    state: Arc<StateStore>,
    jobs: BTreeMap<String, Arc<Entry>>,
    /// Where each run's log lines are gathered, when the server keeps them.
    logs: std::sync::OnceLock<JobLogs>,
}

/// The jobs of a server. Clone freely.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("jobs", &self.inner.jobs.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Clears the running flag when a run ends, however it ends.
struct RunningGuard(Arc<Entry>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

impl Scheduler {
    /// A scheduler of `jobs`. Runs left `running` by a process that died are marked
    /// `interrupted` in the history.
    pub fn new(state: Arc<StateStore>, jobs: Vec<JobSpec>) -> Result<Self, JobError> {
        let mut map = BTreeMap::new();
        for spec in jobs {
            let name = spec.name.clone();
            let entry = Arc::new(Entry {
                spec,
                running: AtomicBool::new(false),
                next_run: Mutex::new(None),
                runs: Default::default(),
                last_success_secs: AtomicI64::new(0),
                last_duration_ms: AtomicU64::new(0),
            });
            if map.insert(name.clone(), entry).is_some() {
                return Err(JobError::Duplicate(name));
            }
        }
        let interrupted = state.interrupt_stale_job_runs(now_ms())?;
        if interrupted > 0 {
            tracing::warn!(
                runs = interrupted,
                "job runs were interrupted by the previous process stopping"
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                state,
                jobs: map,
                logs: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Start the timers of scheduled jobs; they stop when `cancel` fires.
    pub fn start(&self, cancel: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        self.inner
            .jobs
            .values()
            .filter(|e| e.spec.schedule.is_some())
            .map(|entry| {
                let this = self.clone();
                let entry = Arc::clone(entry);
                let cancel = cancel.clone();
                tokio::spawn(async move { this.timer(entry, cancel).await })
            })
            .collect()
    }

    async fn timer(&self, entry: Arc<Entry>, cancel: CancellationToken) {
        let Some(schedule) = entry.spec.schedule.clone() else {
            return;
        };
        loop {
            let now = Utc::now();
            let Some(due) = schedule.next_after(now) else {
                tracing::warn!(job = %entry.spec.name, "the schedule never fires again");
                return;
            };
            let due = due + jitter(entry.spec.jitter);
            set(&entry.next_run, Some(due));
            let wait = (due - now).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match self.start_run(&entry, "schedule") {
                Ok((_, run)) => {
                    // Wait for the run so the next due time counts from its end.
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = run => {}
                    }
                }
                Err(JobError::AlreadyRunning(_)) => {
                    tracing::info!(job = %entry.spec.name, "previous run still going; this start is skipped");
                }
                Err(e) => tracing::warn!(job = %entry.spec.name, error = %e, "cannot start job"),
            }
        }
    }

    /// Start a run of `job` now (by hand); returns its run id without waiting for it.
    pub fn trigger(&self, job: &str, trigger: &str) -> Result<i64, JobError> {
        let entry = self
            .inner
            .jobs
            .get(job)
            .ok_or_else(|| JobError::NotFound(job.to_string()))?;
        self.start_run(entry, trigger).map(|(id, _)| id)
    }

    /// Run `job` now and wait for it to end.
    pub async fn run_now(&self, job: &str, trigger: &str) -> Result<JobRun, JobError> {
        let entry = self
            .inner
            .jobs
            .get(job)
            .ok_or_else(|| JobError::NotFound(job.to_string()))?;
        let (id, handle) = self.start_run(entry, trigger)?;
        let _ = handle.await;
        let runs = self.inner.state.job_runs(Some(job), 20)?;
        runs.into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| JobError::NotFound(job.to_string()))
    }

    fn start_run(
        &self,
        entry: &Arc<Entry>,
        trigger: &str,
    ) -> Result<(i64, tokio::task::JoinHandle<()>), JobError> {
        if entry
            .running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(JobError::AlreadyRunning(entry.spec.name.clone()));
        }
        let guard = RunningGuard(Arc::clone(entry));
        let id = self
            .inner
            .state
            .start_job_run(&entry.spec.name, trigger, now_ms())?;
        let state = Arc::clone(&self.inner.state);
        let entry = Arc::clone(entry);
        let trigger = trigger.to_string();
        let logs = self.inner.logs.get().cloned();
        if let Some(logs) = &logs {
            logs.begin(id);
        }
        let span = tracing::info_span!(RUN_SPAN, job = %entry.spec.name, run = id);
        let handle = tokio::spawn(async move {
            let _guard = guard;
            let started = Instant::now();
            let result = async {
                tracing::info!(job = %entry.spec.name, run = id, trigger, "job started");
                let result = entry.spec.action.run().await;
                let ms = started.elapsed().as_millis() as u64;
                match result.outcome {
                    JobOutcome::Ok => {
                        tracing::info!(job = %entry.spec.name, run = id, duration_ms = ms, summary = %result.summary, "job finished")
                    }
                    _ => {
                        tracing::warn!(job = %entry.spec.name, run = id, duration_ms = ms, outcome = result.outcome.as_str(), summary = %result.summary, error = ?result.error, "job finished with errors")
                    }
                }
                result
            }
            .instrument(span)
            .await;
            let ms = started.elapsed().as_millis() as u64;
            entry.last_duration_ms.store(ms, Ordering::Relaxed);
            let slot = match result.outcome {
                JobOutcome::Ok => 0,
                JobOutcome::Partial => 1,
                JobOutcome::Error => 2,
            };
            entry.runs[slot].fetch_add(1, Ordering::Relaxed);
            if result.outcome == JobOutcome::Ok {
                entry
                    .last_success_secs
                    .store(Utc::now().timestamp(), Ordering::Relaxed);
            }
            let log = logs.map(|l| l.take(id)).unwrap_or_default();
            if let Err(e) = state.finish_job_run(
                id,
                now_ms(),
                result.outcome.as_str(),
                &result.summary,
                result.error.as_deref(),
                &log,
            ) {
                tracing::warn!(job = %entry.spec.name, error = %e, "cannot record the job run");
            }
        });
        Ok((id, handle))
    }

    /// Keep what each run logs (gathered by `logs`' layer, which the binary installs), stored
    /// with the run. Set once; a second call changes nothing.
    pub fn keep_logs(&self, logs: JobLogs) {
        let _ = self.inner.logs.set(logs);
    }

    /// What run `id` of `job` logged, one line per event (empty when nothing was kept).
    pub fn run_log(&self, job: &str, id: i64) -> Result<String, JobError> {
        let run = self
            .inner
            .state
            .job_runs(Some(job), usize::MAX)?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| JobError::NotFound(format!("{job} run {id}")))?;
        Ok(self.inner.state.job_run_log(run.id)?.unwrap_or_default())
    }

    /// Every job with its state and last run.
    pub fn jobs(&self) -> Result<Vec<JobStatus>, JobError> {
        self.inner
            .jobs
            .values()
            .map(|e| self.status_of(e))
            .collect()
    }

    /// One job's status.
    pub fn job(&self, name: &str) -> Result<JobStatus, JobError> {
        let entry = self
            .inner
            .jobs
            .get(name)
            .ok_or_else(|| JobError::NotFound(name.to_string()))?;
        self.status_of(entry)
    }

    /// A job's newest runs.
    pub fn history(&self, name: &str, limit: usize) -> Result<Vec<JobRun>, JobError> {
        if !self.inner.jobs.contains_key(name) {
            return Err(JobError::NotFound(name.to_string()));
        }
        Ok(self.inner.state.job_runs(Some(name), limit)?)
    }

    fn status_of(&self, e: &Entry) -> Result<JobStatus, JobError> {
        let last_run = self
            .inner
            .state
            .job_runs(Some(&e.spec.name), 1)?
            .into_iter()
            .next();
        let runs: u64 = e.runs.iter().map(|r| r.load(Ordering::Relaxed)).sum();
        Ok(JobStatus {
            name: e.spec.name.clone(),
            description: e.spec.action.describe(),
            schedule: e.spec.schedule.as_ref().map(ToString::to_string),
            running: e.running.load(Ordering::Acquire),
            next_run: get(&e.next_run).map(|t| t.to_rfc3339()),
            last_run,
            runs,
            failures: runs - e.runs[0].load(Ordering::Relaxed),
        })
    }

    /// Prometheus text for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP dataport_job_runs_total Job runs by outcome since the server started.\n# TYPE dataport_job_runs_total counter\n");
        for (name, e) in &self.inner.jobs {
            for (i, outcome) in ["ok", "partial", "error"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "dataport_job_runs_total{{job=\"{}\",outcome=\"{outcome}\"}} {}",
                    escape(name),
                    e.runs[i].load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP dataport_job_running Whether the job is running now.\n# TYPE dataport_job_running gauge\n");
        for (name, e) in &self.inner.jobs {
            let _ = writeln!(
                out,
                "dataport_job_running{{job=\"{}\"}} {}",
                escape(name),
                u8::from(e.running.load(Ordering::Acquire))
            );
        }
        out.push_str("# HELP dataport_job_last_success_timestamp_seconds When the job last succeeded (0: not since start).\n# TYPE dataport_job_last_success_timestamp_seconds gauge\n");
        for (name, e) in &self.inner.jobs {
            let _ = writeln!(
                out,
                "dataport_job_last_success_timestamp_seconds{{job=\"{}\"}} {}",
                escape(name),
                e.last_success_secs.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP dataport_job_last_duration_seconds How long the last run took.\n# TYPE dataport_job_last_duration_seconds gauge\n");
        for (name, e) in &self.inner.jobs {
            let _ = writeln!(
                out,
                "dataport_job_last_duration_seconds{{job=\"{}\"}} {:.3}",
                escape(name),
                e.last_duration_ms.load(Ordering::Relaxed) as f64 / 1000.0
            );
        }
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn set<T>(m: &Mutex<T>, v: T) {
    match m.lock() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
}

fn get<T: Clone>(m: &Mutex<T>) -> T {
    match m.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A random delay in `[0, max)`.
fn jitter(max: Duration) -> chrono::Duration {
    use std::hash::{BuildHasher, Hasher};
    if max.is_zero() {
        return chrono::Duration::zero();
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let ms = (h.finish() % (max.as_millis().max(1) as u64)) as i64;
    chrono::Duration::milliseconds(ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Counts runs; each takes `delay` and fails when `fail` is set.
    struct Counting {
        runs: AtomicU64,
        delay: Duration,
        fail: bool,
    }

    #[async_trait]
    impl JobAction for Counting {
        fn describe(&self) -> String {
            "counts".into()
        }
        async fn run(&self) -> JobResult {
            self.runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            JobResult {
                outcome: if self.fail {
                    JobOutcome::Error
                } else {
                    JobOutcome::Ok
                },
                summary: "counted".into(),
                error: self.fail.then(|| "it failed".to_string()),
            }
        }
    }

    fn scheduler(
        dir: &std::path::Path,
        action: Arc<Counting>,
        schedule: Option<Schedule>,
    ) -> Scheduler {
        let state = Arc::new(StateStore::open(dir).unwrap());
        Scheduler::new(
            state,
            vec![JobSpec {
                name: "count".into(),
                schedule,
                jitter: Duration::ZERO,
                action,
            }],
        )
        .unwrap()
    }

    #[tokio::test]
    async fn manual_runs_never_overlap_and_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let action = Arc::new(Counting {
            runs: AtomicU64::new(0),
            delay: Duration::from_millis(300),
            fail: false,
        });
        let s = scheduler(dir.path(), Arc::clone(&action), None);
        let id = s.trigger("count", "manual").unwrap();
        assert!(matches!(
            s.trigger("count", "manual"),
            Err(JobError::AlreadyRunning(_))
        ));
        assert!(s.job("count").unwrap().running);
        assert!(matches!(
            s.trigger("nope", "manual"),
            Err(JobError::NotFound(_))
        ));
        let run = s.run_now("count", "manual").await;
        assert!(matches!(run, Err(JobError::AlreadyRunning(_))));
        // Wait for the first run to end.
        for _ in 0..100 {
            if !s.job("count").unwrap().running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let history = s.history("count", 10).unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].id, id);
        assert_eq!(history[0].outcome, "ok");
        assert_eq!(history[0].trigger, "manual");
        assert_eq!(action.runs.load(Ordering::SeqCst), 1);
        let again = s.run_now("count", "manual").await.unwrap();
        assert_eq!(again.outcome, "ok");
        assert_eq!(again.summary, "counted");
        let metrics = s.render_metrics();
        assert!(
            metrics.contains("dataport_job_runs_total{job=\"count\",outcome=\"ok\"} 2"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn scheduled_runs_fire_and_skip_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let action = Arc::new(Counting {
            runs: AtomicU64::new(0),
            delay: Duration::from_millis(10),
            fail: true,
        });
        let s = scheduler(
            dir.path(),
            Arc::clone(&action),
            Some(Schedule::Every(Duration::from_millis(1100))),
        );
        let cancel = CancellationToken::new();
        let timers = s.start(cancel.clone());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(s.job("count").unwrap().next_run.is_some());
        tokio::time::sleep(Duration::from_millis(2400)).await;
        cancel.cancel();
        for t in timers {
            t.await.unwrap();
        }
        let runs = action.runs.load(Ordering::SeqCst);
        assert!((1..=2).contains(&runs), "{runs} runs");
        let status = s.job("count").unwrap();
        assert_eq!(status.failures, runs);
        assert_eq!(status.last_run.unwrap().error.as_deref(), Some("it failed"));
    }

    #[test]
    fn stale_runs_are_marked_interrupted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateStore::open(dir.path()).unwrap();
        state.start_job_run("count", "schedule", 1).unwrap();
        drop(state);
        let action = Arc::new(Counting {
            runs: AtomicU64::new(0),
            delay: Duration::ZERO,
            fail: false,
        });
        let s = scheduler(dir.path(), action, None);
        assert_eq!(s.history("count", 5).unwrap()[0].outcome, "interrupted");
    }
}
