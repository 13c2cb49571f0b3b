//! The Keboola Storage API client: table detail, async exports, job polling, file download.
//!
//! The token goes only to the stack's API (`/v2/storage/…` under the configured URL), never
//! to the storage provider's file URLs. Requests are retried on HTTP 5xx, 429, timeouts and
//! connection errors with exponential backoff honouring `Retry-After` ([`crate::http`]); other
//! answers fail at once.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::types::ColumnMetadata;
use crate::error::{ConnectorError, Result};
use crate::http::{self, RetryPolicy, redact, retryable, short};

/// Header carrying the token.
const TOKEN_HEADER: &str = "X-StorageApi-Token";

/// How requests are retried and jobs polled.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// First retry delay; doubles each time, capped at `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// First job poll delay; grows by half each poll, capped at `max_backoff`.
    pub poll_interval: Duration,
    /// Give up on an export job after this long.
    pub job_timeout: Duration,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(15),
            request_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            job_timeout: Duration::from_secs(3600),
        }
    }
}

/// `GET /v2/storage/tables/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TableDetail {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub primary_key: Vec<String>,
    #[serde(default)]
    pub rows_count: Option<u64>,
    #[serde(default)]
    pub is_alias: bool,
    #[serde(default)]
    pub column_metadata: ColumnMetadata,
    #[serde(default)]
    pub source_table: Option<SourceTableDetail>,
}

/// The source of an alias table.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceTableDetail {
    #[serde(default)]
    pub column_metadata: ColumnMetadata,
}

impl TableDetail {
    /// The table's own column metadata, or its source table's for an alias without any.
    pub fn metadata(&self) -> &ColumnMetadata {
        match &self.source_table {
            Some(s) if self.column_metadata.is_empty() => &s.column_metadata,
            _ => &self.column_metadata,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Job {
    id: u64,
    status: String,
    #[serde(default)]
    results: Option<JobResults>,
    #[serde(default)]
    error: Option<JobError>,
}

#[derive(Debug, Deserialize)]
struct JobResults {
    file: FileRef,
}

#[derive(Debug, Deserialize)]
struct FileRef {
    id: u64,
}

#[derive(Debug, Deserialize)]
struct JobError {
    #[serde(default)]
    message: String,
}

/// `GET /v2/storage/files/{id}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileInfo {
    url: String,
    #[serde(default)]
    is_sliced: bool,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    entries: Vec<ManifestEntry>,
}

#[derive(Debug, Deserialize)]
struct ManifestEntry {
    url: String,
}

/// A downloaded export: local files, and whether they carry a header row.
#[derive(Debug)]
pub struct Download {
    pub parts: Vec<crate::typed::CsvPart>,
    pub bytes: u64,
}

/// A client of one Keboola stack.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    policy: ClientPolicy,
    retry: RetryPolicy,
}

impl Client {
    pub fn new(base: &str, token: String, policy: ClientPolicy) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .connect_timeout(Duration::from_secs(30))
            .user_agent(concat!("dataport/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConnectorError::Unreachable {
                url: base.to_string(),
                message: format!("cannot create the HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            retry: RetryPolicy {
                attempts: policy.attempts,
                backoff: policy.backoff,
                max_backoff: policy.max_backoff,
                ..RetryPolicy::default()
            },
            policy,
        })
    }

    fn api(&self, path: &str) -> String {
        format!("{}/v2/storage/{path}", self.base)
    }

    /// Connection test: the buckets the token sees.
    pub async fn buckets(&self) -> Result<Vec<serde_json::Value>> {
        let url = self.api("buckets");
        self.json(&url, || self.http.get(&url)).await
    }

    pub async fn table(&self, id: &str) -> Result<TableDetail> {
        let url = self.api(&format!("tables/{id}"));
        self.json(&url, || self.http.get(&url)).await
    }

    /// Starts an export; returns the job id.
    pub async fn export(&self, id: &str, form: &[(String, String)]) -> Result<u64> {
        let url = self.api(&format!("tables/{id}/export-async"));
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let job: Job = self
            .json(&url, || {
                self.http
                    .post(&url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body.clone())
            })
            .await?;
        Ok(job.id)
    }

    /// Polls the job until it succeeds (returns the file id), fails or times out.
    pub async fn wait_for_job(&self, table: &str, job: u64) -> Result<u64> {
        let url = self.api(&format!("jobs/{job}"));
        let started = Instant::now();
        let mut delay = self.policy.poll_interval;
        loop {
            let j: Job = self.json(&url, || self.http.get(&url)).await?;
            match j.status.as_str() {
                "success" => {
                    return j
                        .results
                        .map(|r| r.file.id)
                        .ok_or_else(|| ConnectorError::Protocol {
                            url: url.clone(),
                            message: "a successful export job without results.file.id".into(),
                        });
                }
                "error" => {
                    return Err(ConnectorError::Job {
                        table: table.to_string(),
                        message: format!(
                            "export job {} failed: {}",
                            j.id,
                            j.error.map(|e| e.message).unwrap_or_default()
                        ),
                    });
                }
                _ => {}
            }
            if started.elapsed() + delay > self.policy.job_timeout {
                return Err(ConnectorError::Job {
                    table: table.to_string(),
                    message: format!(
                        "export job {job} still '{}' after {}s; raise the source's job_timeout",
                        j.status,
                        self.policy.job_timeout.as_secs()
                    ),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(self.policy.max_backoff);
        }
    }

    /// Downloads the export file (all slices of a sliced one) into `dir`.
    pub async fn download(
        &self,
        file: u64,
        dir: &Path,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Download> {
        let url = self.api(&format!("files/{file}?federationToken=1"));
        let info: FileInfo = self.json(&url, || self.http.get(&url)).await?;
        let mut parts = Vec::new();
        let mut bytes = 0;
        if info.is_sliced {
            let manifest: Manifest = self
                .json_plain(&info.url, || self.http.get(&info.url))
                .await?;
            for (i, entry) in manifest.entries.iter().enumerate() {
                let path = dir.join(format!("slice-{i:05}"));
                bytes += self.fetch_to_file(&entry.url, &path, on_bytes).await?;
                parts.push(crate::typed::CsvPart {
                    path,
                    has_header: false,
                });
            }
        } else {
            let path = dir.join("export");
            bytes += self.fetch_to_file(&info.url, &path, on_bytes).await?;
            parts.push(crate::typed::CsvPart {
                path,
                has_header: true,
            });
        }
        Ok(Download { parts, bytes })
    }

    /// Streams a file URL (no token) to `path`, retrying from scratch on transient errors.
    async fn fetch_to_file(
        &self,
        url: &str,
        path: &Path,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<u64> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.fetch_once(url, path, on_bytes).await {
                Ok(n) => return Ok(n),
                Err(Transient(e)) if attempt < self.policy.attempts => {
                    tracing::debug!(url = %redact(url), error = %e, attempt, "download failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(Transient(e) | Fatal(e)) => return Err(e),
            }
        }
    }

    async fn fetch_once(
        &self,
        url: &str,
        path: &Path,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> std::result::Result<u64, Fetch> {
        let response = self.http.get(url).send().await.map_err(|e| {
            Transient(ConnectorError::Unreachable {
                url: redact(url),
                message: e.to_string(),
            })
        })?;
        let status = response.status();
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            let err = ConnectorError::Http {
                url: redact(url),
                status: status.as_u16(),
                message: short(&message),
            };
            return Err(if retryable(status) {
                Transient(err)
            } else {
                Fatal(err)
            });
        }
        let mut file = tokio::fs::File::create(path)
            .await
            .map_err(|e| Fatal(ConnectorError::io(path, e)))?;
        let mut stream = response.bytes_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                Transient(ConnectorError::Unreachable {
                    url: redact(url),
                    message: format!("download interrupted: {e}"),
                })
            })?;
            file.write_all(&chunk)
                .await
                .map_err(|e| Fatal(ConnectorError::io(path, e)))?;
            total += chunk.len() as u64;
            on_bytes(chunk.len() as u64);
        }
        file.flush()
            .await
            .map_err(|e| Fatal(ConnectorError::io(path, e)))?;
        Ok(total)
    }

    /// An API call with the token, decoded as JSON, with retries.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T> {
        self.send_json(url, || request().header(TOKEN_HEADER, &self.token))
            .await
    }

    /// A call to a file URL (no token), decoded as JSON, with retries.
    async fn json_plain<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T> {
        self.send_json(url, request).await
    }

    async fn send_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T> {
        let shown = redact(url);
        let body = http::send(&self.retry, &shown, request).await?;
        serde_json::from_slice(&body).map_err(|e| ConnectorError::Protocol {
            url: shown,
            message: e.to_string(),
        })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.retry.delay(attempt, None)
    }
}

/// Whether a failed download is worth another attempt.
enum Fetch {
    Transient(ConnectorError),
    Fatal(ConnectorError),
}
use Fetch::{Fatal, Transient};
