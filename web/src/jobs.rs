//! `GET /api/v1/jobs`, `GET /api/v1/jobs/{job}`, `POST /api/v1/jobs/{job}/run`: catalog
//! maintenance jobs, for administrators.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use dataport_engine::jobs::{JobError, JobRun, JobStatus};
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::{ApiError, AppState, RequestId};

#[derive(Serialize)]
pub(crate) struct JobsBody {
    jobs: Vec<JobStatus>,
}

#[derive(Serialize)]
pub(crate) struct JobBody {
    #[serde(flatten)]
    status: JobStatus,
    history: Vec<JobRun>,
    /// What the last finished run logged.
    last_log: Option<RunLog>,
}

/// The log of one run: a line per event the run logged.
#[derive(Debug, Serialize)]
pub(crate) struct RunLog {
    pub(crate) run_id: i64,
    pub(crate) started_ms: i64,
    pub(crate) outcome: String,
    pub(crate) log: String,
}

/// The log of the newest finished run in `history` (newest first), read from `jobs`.
pub(crate) fn last_run_log(
    jobs: &dataport_engine::jobs::Scheduler,
    job: &str,
    history: &[JobRun],
) -> Result<Option<RunLog>, JobError> {
    let Some(run) = history.iter().find(|r| r.outcome != "running") else {
        return Ok(None);
    };
    Ok(Some(RunLog {
        run_id: run.id,
        started_ms: run.started_ms,
        outcome: run.outcome.clone(),
        log: jobs.run_log(job, run.id)?,
    }))
}

#[derive(Serialize)]
pub(crate) struct StartedBody {
    job: String,
    run_id: i64,
    status: &'static str,
}

#[derive(Deserialize)]
pub(crate) struct HistoryParams {
    limit: Option<usize>,
}

/// Runs a blocking scheduler call (it reads the state store) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    id: &str,
    f: impl FnOnce() -> Result<T, JobError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("jobs task failed: {e}")).with_request_id(id))?
        .map_err(|e| ApiError::of(&e, id))
}

pub(crate) async fn get_jobs(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(_): Admin,
) -> Result<Json<JobsBody>, ApiError> {
    let jobs = state.jobs.clone();
    let jobs = blocking(&id, move || jobs.jobs()).await?;
    Ok(Json(JobsBody { jobs }))
}

pub(crate) async fn get_job(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(_): Admin,
    Path(job): Path<String>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<JobBody>, ApiError> {
    let jobs = state.jobs.clone();
    let limit = params.limit.unwrap_or(50).clamp(1, 1000);
    let (status, history, last_log) = blocking(&id, move || {
        let history = jobs.history(&job, limit)?;
        let last_log = last_run_log(&jobs, &job, &history)?;
        Ok((jobs.job(&job)?, history, last_log))
    })
    .await?;
    Ok(Json(JobBody {
        status,
        history,
        last_log,
    }))
}

pub(crate) async fn post_run(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    Admin(admin): Admin,
    Path(job): Path<String>,
) -> Result<(StatusCode, Json<StartedBody>), ApiError> {
    let run_id = state
        .jobs
        .trigger(&job, "manual")
        .map_err(|e| ApiError::of(&e, &id))?;
    tracing::info!(job, run_id, user = %admin.name, "job started by hand");
    Ok((
        StatusCode::ACCEPTED,
        Json(StartedBody {
            job,
            run_id,
            status: "running",
        }),
    ))
}
