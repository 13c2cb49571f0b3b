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
async fn blocking<T: Send + 'static>(
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
    let (status, history) = blocking(&id, move || {
        Ok((jobs.job(&job)?, jobs.history(&job, limit)?))
    })
    .await?;
    Ok(Json(JobBody { status, history }))
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
