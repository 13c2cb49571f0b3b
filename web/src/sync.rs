//! Analyst sync over HTTP: the caller's manifest, the files it lists (with `ETag` and `Range`),
//! the caller's sync settings, and uploads of their notes and session transcripts.

use std::io::SeekFrom;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dataport_common::sync::Uploaded;
use dataport_engine::sync::{Manifest, PulledFile, SyncError, SyncSettings, is_plain_relative};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::auth::Caller;
use crate::{ApiError, AppState, RequestId, request_context};

/// Bytes read from a file per chunk of a download.
const CHUNK: usize = 256 * 1024;

fn settings_of(state: &AppState, account: i64, request_id: &str) -> Result<SyncSettings, ApiError> {
    match state.auth.store().sync_settings(account) {
        Ok(Some(json)) => Ok(serde_json::from_str(&json).unwrap_or_default()),
        Ok(None) => Ok(SyncSettings::default()),
        Err(e) => Err(ApiError::internal(e).with_request_id(request_id)),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ManifestParams {
    /// Every readable table, ignoring the caller's settings.
    #[serde(default)]
    pub(crate) all: bool,
}

/// What the caller pulls: their sync settings, or every readable table (`all`).
pub(crate) fn settings_for(
    state: &AppState,
    account: i64,
    all: bool,
    request_id: &str,
) -> Result<SyncSettings, ApiError> {
    if all {
        Ok(SyncSettings::default())
    } else {
        settings_of(state, account, request_id)
    }
}

/// `GET /api/v1/sync/manifest`.
pub(crate) async fn get_manifest(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Query(params): Query<ManifestParams>,
) -> Result<Json<Manifest>, ApiError> {
    let settings = settings_for(&state, principal.id, params.all, &request_id)?;
    let view = state
        .engine
        .catalog_view(&request_context(&principal, &request_id));
    let manifest = state.sync.manifest(&view, &settings).await;
    state.sync.note_manifest(principal.id, manifest.as_ref());
    manifest
        .map(Json)
        .map_err(|e| ApiError::of(&e, &request_id))
}

/// `GET /api/v1/sync/files/{*path}`: a file of the caller's manifest, counted in the caller's
/// pull (sent, unchanged or failed).
pub(crate) async fn get_file(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let served = serve_file(&state, &request_id, &principal, path, &headers).await;
    let outcome = match &served {
        Ok(r) if r.status() == StatusCode::NOT_MODIFIED => PulledFile::Unchanged,
        Ok(r) if r.status().is_success() => PulledFile::Sent {
            bytes: r
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        },
        Ok(r) => PulledFile::Failed {
            error: format!("{} for the range asked", r.status()),
        },
        Err(e) => PulledFile::Failed {
            error: e.to_string(),
        },
    };
    state.sync.note_file(principal.id, &outcome);
    served
}

async fn serve_file(
    state: &AppState,
    request_id: &str,
    principal: &dataport_engine::Principal,
    path: String,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let request_id = request_id.to_string();
    if !is_plain_relative(&path) {
        return Err(ApiError::of(&SyncError::NotFound { path }, &request_id));
    }
    let view = state
        .engine
        .catalog_view(&request_context(principal, &request_id));
    let file = state
        .sync
        .resolve(&view, &path)
        .await
        .map_err(|e| ApiError::of(&e, &request_id))?;
    let etag = format!("\"{}\"", file.entry.sha256);
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::internal)?;
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    let len = file.entry.size;
    // A range applies only to the version the client has (If-Range names it).
    let range_applies = headers
        .get(header::IF_RANGE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == etag);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) if range_applies => match parse_range(r, len) {
            Ok(range) => range,
            Err(()) => {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [
                        (
                            header::CONTENT_RANGE,
                            HeaderValue::from_str(&format!("bytes */{len}"))
                                .map_err(ApiError::internal)?,
                        ),
                        (header::ETAG, etag_value),
                    ],
                )
                    .into_response());
            }
        },
        _ => None,
    };
    let (start, end) = range.unwrap_or((0, len.saturating_sub(1)));
    let count = if len == 0 { 0 } else { end - start + 1 };
    let mut f = tokio::fs::File::open(&file.read_from)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", file.read_from.display())))?;
    f.seek(SeekFrom::Start(start))
        .await
        .map_err(ApiError::internal)?;
    let body = Body::from_stream(futures::stream::unfold(
        (f, count),
        |(mut f, left)| async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
            match f.read(&mut buf).await {
                Ok(0) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file is shorter than listed",
                    )),
                    (f, 0),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (f, left - n as u64)))
                }
                Err(e) => Some((Err(e), (f, 0))),
            }
        },
    ));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::ETAG, etag_value);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apache.parquet"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                .map_err(ApiError::internal)?,
        );
    }
    Ok(response)
}

/// One `bytes=` range of a `len`-byte file, inclusive; `Ok(None)` for a header this server
/// answers with the whole file (several ranges, other units); `Err` when unsatisfiable.
pub(crate) fn parse_range(header: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        // bytes=-n: the last n bytes
        (Err(_), Ok(n)) if a.is_empty() => {
            if n == 0 || len == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len - 1)
        }
        (Ok(start), Err(_)) if b.is_empty() => (start, len.saturating_sub(1)),
        (Ok(start), Ok(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        _ => return Ok(None),
    };
    if range.0 >= len {
        return Err(());
    }
    Ok(Some(range))
}

/// `GET /api/v1/sync/settings`.
pub(crate) async fn get_settings(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
) -> Result<Json<SyncSettings>, ApiError> {
    settings_of(&state, principal.id, &request_id).map(Json)
}

/// `PUT /api/v1/sync/settings`.
pub(crate) async fn put_settings(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    body: Bytes,
) -> Result<Json<SyncSettings>, ApiError> {
    let settings: SyncSettings = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid sync settings ({e}); expected {{\"schemas\": [...], \"tables\": [\"schema.table\"], \"exclude\": [...]}}"
        ))
        .with_request_id(&request_id)
    })?;
    settings
        .validate()
        .map_err(|e| ApiError::of(&e, &request_id))?;
    let json = serde_json::to_string(&settings).map_err(ApiError::internal)?;
    state
        .auth
        .store()
        .put_sync_settings(principal.id, &json, chrono_now())
        .map_err(|e| ApiError::internal(e).with_request_id(&request_id))?;
    Ok(Json(settings))
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Deserialize)]
pub(crate) struct UploadParams {
    /// `notes` (the analyst's notes file) or `transcript` (a session transcript, `*.jsonl`).
    kind: String,
    /// The transcript's file name.
    name: Option<String>,
}

/// `POST /api/v1/sync/upload?kind=notes|transcript[&name=F.jsonl]`: stores the body in the
/// caller's upload folder, atomically; sending the same content again changes nothing.
pub(crate) async fn post_upload(
    State(state): State<AppState>,
    RequestId(request_id): RequestId,
    Caller(principal): Caller,
    Query(params): Query<UploadParams>,
    body: Bytes,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let bad = |m: String| ApiError::bad_request(m).with_request_id(&request_id);
    let (relative, name) = match (params.kind.as_str(), params.name) {
        ("notes", None) => ("notes.md".to_string(), "notes.md".to_string()),
        ("transcript", Some(name)) => {
            let stem_ok = name.strip_suffix(".jsonl").is_some_and(|s| {
                !s.is_empty()
                    && !s.starts_with('.')
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            });
            if !stem_ok {
                return Err(bad(format!(
                    "transcript name '{name}' must be a plain file name ending in .jsonl (letters, digits, '-', '_', '.')"
                )));
            }
            let text =
                std::str::from_utf8(&body).map_err(|_| bad(format!("{name} is not UTF-8 text")))?;
            for (i, line) in text.lines().enumerate() {
                if !line.trim().is_empty()
                    && let Err(e) = serde_json::from_str::<serde_json::Value>(line)
                {
                    return Err(bad(format!("{name} line {}: not JSON ({e})", i + 1)));
                }
            }
            (format!("transcripts/{name}"), name)
        }
        ("notes", Some(_)) => return Err(bad("notes take no name".into())),
        ("transcript", None) => return Err(bad("a transcript needs ?name=<file>.jsonl".into())),
        (other, _) => {
            return Err(bad(format!(
                "unknown upload kind '{other}'; use notes or transcript"
            )));
        }
    };
    let user_dir = upload_dir(&state, &principal.name)
        .ok_or_else(|| ApiError::forbidden("this user name cannot have an upload folder"))?;
    let dest = user_dir.join(&relative);
    let sha256 = dataport_common::digest::sha256_hex(&body);
    let bytes = body.len() as u64;
    // File work off the async runtime: reading the old version and the atomic write both fsync.
    let unchanged = tokio::task::spawn_blocking(move || {
        let unchanged = std::fs::read(&dest).is_ok_and(|old| old == body.as_ref());
        if !unchanged {
            dataport_common::fs::write_bytes_atomic(&dest, &body)?;
        }
        Ok::<bool, dataport_common::FsError>(unchanged)
    })
    .await
    .map_err(|e| ApiError::internal(e).with_request_id(&request_id))?
    .map_err(|e| ApiError::internal(e).with_request_id(&request_id))?;
    if !unchanged {
        tracing::info!(user = %principal.name, file = %relative, bytes, "upload stored");
        // The session collector runs on push too, for this account only.
        if params.kind == "transcript"
            && let Some(memory) = state.memory.clone()
        {
            let account = principal.id;
            tokio::spawn(async move {
                let summary = memory.collect_sessions(Some(account)).await;
                tracing::debug!(summary = %summary.line(), "memory: pushed transcripts collected");
            });
        }
    }
    Ok((
        if unchanged {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Json(Uploaded {
            kind: params.kind,
            name,
            bytes,
            sha256,
            unchanged,
        }),
    ))
}

/// `<data-dir>/uploads/<user>/`: what the user pushed (notes, transcripts).
pub(crate) fn upload_dir(state: &AppState, user: &str) -> Option<std::path::PathBuf> {
    dataport_common::sync::upload_dir(state.engine.catalog().data_dir(), user)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=9-3", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-", 0), Err(()));
    }
}
