//! `sources: [{type: jira, …}]`: where the Jira site is, whose credentials, which custom
//! fields hold what, and how the webhook queue behaves.

use serde::{Deserialize, Serialize};

/// A Jira Cloud source.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JiraConfig {
    /// The site, e.g. `https://example.atlassian.net`.
    pub site: String,
    /// The account the REST calls are made as.
    pub email: String,
    /// Name of the environment variable holding that account's API token.
    pub token_env: String,
    /// Name of the environment variable holding the webhook secret. Without a secret every
    /// webhook is refused (503).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A second account that may read the SLA fields (Jira Service Management agents).
    #[serde(default)]
    pub sla_account: Option<JiraAccount>,
    /// The catalog schema of the six tables (default `jira`).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Projects `dataport sync SOURCE --backfill` loads (default: every project's issues
    /// that the account sees).
    #[serde(default)]
    pub projects: Vec<String>,
    /// The custom fields behind severity, request type, satisfaction and the SLAs.
    #[serde(default)]
    pub fields: JiraFields,
    /// Largest webhook body accepted, in bytes (default 1 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest attachment downloaded, in bytes (default 25 MiB); larger ones are listed
    /// without a local copy.
    #[serde(default = "default_attachment_limit")]
    pub attachment_max_bytes: u64,
    /// Days raw webhook bodies are kept after processing (default 30).
    #[serde(default = "default_retention")]
    pub raw_retention_days: u32,
    /// The consistency check looks at issues updated in this many days (default 7).
    #[serde(default = "default_window")]
    pub consistency_days: u32,
    /// Deliveries processed at once (default 4).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Attempts per REST request (default 5).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// First retry delay in milliseconds (default 500); doubles up to `max_backoff_ms`.
    #[serde(default = "default_backoff")]
    pub retry_backoff_ms: u64,
    /// Longest retry delay in milliseconds (default 60000), also between attempts at a
    /// delivery whose processing failed.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Attempts at a delivery before its issue is parked (default 8); the consistency job
    /// tries parked issues again.
    #[serde(default = "default_event_attempts")]
    pub event_attempts: u32,
    /// Timeout of one REST request in seconds (default 60).
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
}

/// Credentials of an additional account.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JiraAccount {
    pub email: String,
    /// Name of the environment variable holding its API token.
    pub token_env: String,
}

/// Custom field ids (`customfield_NNNNN`); they differ from site to site.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JiraFields {
    pub severity: Option<String>,
    pub request_type: Option<String>,
    pub satisfaction: Option<String>,
    pub first_response: Option<String>,
    pub time_to_resolution: Option<String>,
}

impl Default for JiraFields {
    fn default() -> Self {
        Self {
            severity: Some("customfield_10050".into()),
            request_type: Some("customfield_10010".into()),
            satisfaction: Some("customfield_10060".into()),
            first_response: Some("customfield_10161".into()),
            time_to_resolution: Some("customfield_10328".into()),
        }
    }
}

impl JiraFields {
    /// The SLA fields, for the SLA account's request.
    pub fn sla(&self) -> Vec<&str> {
        [&self.first_response, &self.time_to_resolution]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

fn default_schema() -> String {
    "jira".into()
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_attachment_limit() -> u64 {
    25 << 20
}
fn default_retention() -> u32 {
    30
}
fn default_window() -> u32 {
    7
}
fn default_workers() -> usize {
    4
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> u64 {
    500
}
fn default_max_backoff() -> u64 {
    60_000
}
fn default_event_attempts() -> u32 {
    8
}
fn default_timeout() -> u64 {
    60
}
