//! The administrators' operations pages: jobs (`/admin/jobs`: each catalog job's schedule,
//! state, last run and its outcome; run one now; `/admin/jobs/{job}`: its history with each
//! run's summary and error) and health (`/admin/health`: the catalog and its problems, the
//! listeners, running queries, load, memory and the data dir's disk, each job's last success).

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dataport_common::host;
use dataport_engine::jobs::{JobRun, JobStatus};
use serde::Serialize;

use super::admin::refuse_non_admin;
use super::{Chrome, CsrfForm, Viewer, ago, read_form, respond, when};
use crate::health::{Health, health};
use crate::jobs::blocking;
use crate::{ApiError, AppState, RequestId};

/// A job run in words.
#[derive(Debug, Serialize)]
pub(crate) struct RunLine {
    pub(crate) id: i64,
    pub(crate) job: String,
    pub(crate) trigger: String,
    pub(crate) started: String,
    pub(crate) took: String,
    pub(crate) outcome: String,
    pub(crate) summary: String,
    pub(crate) error: String,
}

impl From<&JobRun> for RunLine {
    fn from(r: &JobRun) -> Self {
        Self {
            id: r.id,
            job: r.job.clone(),
            trigger: r.trigger.clone(),
            started: when(r.started_ms / 1000),
            took: r.finished_ms.map_or("running".into(), |f| {
                format!("{:.1} s", (f - r.started_ms) as f64 / 1000.0)
            }),
            outcome: r.outcome.clone(),
            summary: r.summary.clone(),
            error: r.error.clone().unwrap_or_default(),
        }
    }
}

impl RunLine {
    /// Without what the run did: its summary and error can name any table.
    pub(crate) fn without_details(self) -> Self {
        Self {
            summary: String::new(),
            error: String::new(),
            ..self
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct JobLine {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) schedule: String,
    pub(crate) running: bool,
    pub(crate) next_run: String,
    pub(crate) runs: u64,
    pub(crate) failures: u64,
    pub(crate) last: Option<RunLine>,
}

impl From<JobStatus> for JobLine {
    fn from(j: JobStatus) -> Self {
        Self {
            last: j.last_run.as_ref().map(RunLine::from),
            name: j.name,
            description: j.description,
            schedule: j.schedule.unwrap_or_else(|| "by hand".into()),
            running: j.running,
            next_run: j.next_run.unwrap_or_default(),
            runs: j.runs,
            failures: j.failures,
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct JobsData {
    pub(crate) jobs: Vec<JobLine>,
    pub(crate) message: Option<String>,
    pub(crate) problem: Option<String>,
}

#[derive(Template)]
#[template(path = "admin_jobs.html")]
struct JobsPage<'a> {
    chrome: Chrome,
    data: &'a JobsData,
}

async fn show_jobs(
    state: &AppState,
    viewer: &Viewer,
    request_id: &str,
    status: StatusCode,
    message: Option<String>,
    problem: Option<String>,
) -> Response {
    let jobs = state.jobs.clone();
    match blocking(request_id, move || jobs.jobs()).await {
        Ok(jobs) => {
            let data = JobsData {
                jobs: jobs.into_iter().map(JobLine::from).collect(),
                message,
                problem,
            };
            let page = JobsPage {
                chrome: Chrome::new(state, viewer, "/admin"),
                data: &data,
            };
            respond(viewer, status, &data, &page)
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /admin/jobs`.
pub(crate) async fn get_jobs(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "the jobs page") {
        return refused;
    }
    show_jobs(&state, &viewer, &id, StatusCode::OK, None, None).await
}

/// `POST /admin/jobs/{job}/run`: start a job now.
pub(crate) async fn post_run(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(job): Path<String>,
    request: Request,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "running a job") {
        return refused;
    }
    if let Err((status, problem)) = read_form::<CsrfForm>(&state, &viewer, request).await {
        return show_jobs(&state, &viewer, &id, status, None, Some(problem)).await;
    }
    match state.jobs.trigger(&job, "manual") {
        Ok(run_id) => {
            tracing::info!(request_id = %id, job, run_id, user = %viewer.principal.name, "job started from the portal");
            let message = Some(format!("{job} started (run {run_id})."));
            show_jobs(&state, &viewer, &id, StatusCode::ACCEPTED, message, None).await
        }
        Err(e) => {
            let e = ApiError::of(&e, &id);
            let status = e.status();
            show_jobs(&state, &viewer, &id, status, None, Some(e.to_string())).await
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct JobData {
    pub(crate) job: JobLine,
    pub(crate) history: Vec<RunLine>,
    /// What the last finished run logged, and when it started.
    pub(crate) last_log: Option<crate::jobs::RunLog>,
    pub(crate) last_log_started: String,
}

#[derive(Template)]
#[template(path = "admin_job.html")]
struct JobPage<'a> {
    chrome: Chrome,
    data: &'a JobData,
}

/// `GET /admin/jobs/{job}`: a job and its last 50 runs.
pub(crate) async fn get_job(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
    Path(job): Path<String>,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "a job's page") {
        return refused;
    }
    let jobs = state.jobs.clone();
    let found = blocking(&id, move || {
        let history = jobs.history(&job, 50)?;
        let last_log = crate::jobs::last_run_log(&jobs, &job, &history)?;
        Ok((jobs.job(&job)?, history, last_log))
    })
    .await;
    match found {
        Ok((status, history, last_log)) => {
            let data = JobData {
                job: status.into(),
                history: history.iter().map(RunLine::from).collect(),
                last_log_started: last_log
                    .as_ref()
                    .map(|l| when(l.started_ms / 1000))
                    .unwrap_or_default(),
                last_log,
            };
            let page = JobPage {
                chrome: Chrome::new(&state, &viewer, "/admin"),
                data: &data,
            };
            respond(&viewer, StatusCode::OK, &data, &page)
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct HostView {
    pub(crate) load: Option<[f64; 3]>,
    pub(crate) memory: Option<host::Memory>,
    pub(crate) disk: Option<host::Disk>,
    pub(crate) data_dir: String,
    pub(crate) load_text: String,
    pub(crate) memory_text: String,
    pub(crate) disk_text: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct HealthData {
    pub(crate) health: Health,
    pub(crate) uptime: String,
    pub(crate) last_refresh: String,
    pub(crate) http: String,
    pub(crate) flight: String,
    pub(crate) host: HostView,
    /// Each job and when it last succeeded.
    pub(crate) jobs: Vec<(String, String)>,
    /// The catalog's problems, in words.
    pub(crate) problems: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin_health.html")]
struct HealthPage<'a> {
    chrome: Chrome,
    data: &'a HealthData,
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// `GET /admin/health`.
pub(crate) async fn get_health(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    viewer: Viewer,
) -> Response {
    if let Some(refused) = refuse_non_admin(&state, &viewer, &id, "the health page") {
        return refused;
    }
    let now = dataport_auth::now_secs();
    let health = health(&state, true).await;
    let data_dir = state.engine.catalog().data_dir().to_path_buf();
    let jobs = state.jobs.clone();
    let histories = blocking(&id, move || {
        let all = jobs.jobs()?;
        all.into_iter()
            .map(|j| {
                let last_ok = jobs
                    .history(&j.name, 200)?
                    .into_iter()
                    .find(|r| r.outcome == "ok")
                    .map_or("never (in the last 200 runs)".to_string(), |r| {
                        let at = r.finished_ms.unwrap_or(r.started_ms) / 1000;
                        format!("{} ({})", when(at), ago(at, now))
                    });
                Ok((j.name, last_ok))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await;
    let jobs = match histories {
        Ok(jobs) => jobs,
        Err(e) => return e.into_response(),
    };
    let load = host::load_average();
    let memory = host::memory();
    let disk = host::disk(&data_dir);
    let problems = state
        .engine
        .catalog()
        .snapshot()
        .issues()
        .iter()
        .map(|i| format!("{}: {} ({})", i.source, i.message, i.hint))
        .collect();
    let data = HealthData {
        uptime: {
            let s = health.uptime_seconds;
            format!("{}d {}h {}m", s / 86_400, s % 86_400 / 3600, s % 3600 / 60)
        },
        last_refresh: health.last_refresh.at.map_or("never".into(), |at| {
            format!(
                "{} ({} ms)",
                ago(at as i64, now),
                health.last_refresh.duration_ms
            )
        }),
        http: state.options.public_url.clone(),
        flight: state.options.flight_url.clone(),
        host: HostView {
            load_text: load.map_or("unknown".into(), |l| {
                format!("{:.2} · {:.2} · {:.2}", l[0], l[1], l[2])
            }),
            memory_text: memory.map_or("unknown".into(), |m| {
                format!("{} available of {}", gib(m.available), gib(m.total))
            }),
            disk_text: disk.map_or("unknown".into(), |d| {
                format!("{} free of {}", gib(d.available), gib(d.total))
            }),
            load,
            memory,
            disk,
            data_dir: data_dir.display().to_string(),
        },
        jobs,
        problems,
        health,
    };
    let page = HealthPage {
        chrome: Chrome::new(&state, &viewer, "/admin"),
        data: &data,
    };
    respond(&viewer, StatusCode::OK, &data, &page)
}
