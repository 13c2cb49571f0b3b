//! The Jira Cloud push source: signed webhooks in, six tables out, kept right by polling.
//!
//! - [`JiraSource::accept`] (`queue`) verifies a delivery ([`verify`]), stores its body atomically under
//!   `raw/<source>/events/` and queues it in the state store, unique per Jira delivery id, so a
//!   retried delivery changes nothing. Only then is it acknowledged.
//! - [`JiraSource::run_queue`] (`queue`, `issues`) processes queued deliveries (also those accepted before a
//!   restart or a crash): it fetches each issue named ([`client`]), stores the issue's snapshot
//!   and attachments ([`store`]), and rebuilds the month partitions of the six tables that hold
//!   the issue ([`rows`]), under per-issue and per-month locks. A failed delivery is retried
//!   with backoff; after `event_attempts` its issues are parked until a poll succeeds.
//! - [`JiraSource::sla_poll`], [`JiraSource::consistency_check`] and [`JiraSource::backfill`]
//!   are the source's jobs (`polls`).
//!
//! It knows nothing of HTTP serving: the server hands it a body and headers.

pub mod adf;
pub mod client;
pub mod config;
mod describe;
mod issues;
mod polls;
mod queue;
pub mod rows;
pub mod store;
pub mod verify;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataport_catalog::Catalog;
use dataport_state::{Enqueued, NewPushEvent, PushItem, PushQueue, StateStore};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

pub use config::{JiraAccount, JiraConfig, JiraFields};

use self::client::{Credentials, Fetched, JiraClient};
use self::rows::{Bundle, RowContext};
use self::store::Area;
use self::verify::{SIGNATURE_HEADERS, check_signature, is_issue_key, is_numeric_id};
use crate::error::{ConnectorError, Result};
use crate::http::RetryPolicy;

/// The delivery id header of Jira webhooks; a retry carries the same value.
pub const DELIVERY_HEADER: &str = "x-atlassian-webhook-identifier";

/// Why a delivery was refused. Each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No secret is configured: every delivery is refused (503) until one is.
    #[error(
        "source '{0}' has no webhook secret; set the environment variable named by its secret_env and restart"
    )]
    NoSecret(String),
    /// The signature is missing or wrong (401).
    #[error("{0}")]
    Signature(verify::SignatureError),
    /// The body is not a Jira webhook (400).
    #[error("{0}")]
    Invalid(String),
    /// Storing the delivery failed (500); the sender will retry.
    #[error("the delivery could not be stored: {0}")]
    Store(String),
}

/// A stored delivery's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// Always `ok`.
    pub status: &'static str,
    /// `webhookEvent`.
    pub event: String,
    /// The issue key, when the delivery names one.
    pub issue: Option<String>,
    /// The same delivery was accepted before; nothing changed.
    pub duplicate: bool,
}

/// A source's state at a glance, for health and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JiraStatus {
    pub queue: PushQueue,
    /// Issues given up on, with their errors.
    pub parked: Vec<PushItem>,
    /// Issues with rows.
    pub issues: u64,
    /// When a poll (SLA or consistency) last succeeded (Unix ms).
    pub last_poll_ms: Option<i64>,
    /// Whether a webhook secret is configured.
    pub secret_configured: bool,
}

/// What a batch of issue refreshes did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchReport {
    /// Issues written.
    pub synced: usize,
    /// Issues found gone, their rows removed.
    pub removed: usize,
    /// Issues skipped because what is stored is newer.
    pub unchanged: usize,
    /// `(issue, error)`.
    pub failed: Vec<(String, String)>,
    /// Month partitions rebuilt.
    pub months: usize,
}

impl BatchReport {
    fn merge(&mut self, other: BatchReport) {
        self.synced += other.synced;
        self.removed += other.removed;
        self.unchanged += other.unchanged;
        self.failed.extend(other.failed);
        self.months += other.months;
    }

    /// One line for job history.
    pub fn summary(&self) -> String {
        format!(
            "{} issues written, {} removed, {} unchanged, {} failed, {} month partitions rebuilt",
            self.synced,
            self.removed,
            self.unchanged,
            self.failed.len(),
            self.months
        )
    }

    /// The failures as one error text, if any.
    pub fn error(&self) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        let shown: Vec<String> = self
            .failed
            .iter()
            .take(20)
            .map(|(k, e)| format!("{k}: {e}"))
            .collect();
        let more = self.failed.len().saturating_sub(shown.len());
        Some(if more > 0 {
            format!("{} (and {more} more)", shown.join("; "))
        } else {
            shown.join("; ")
        })
    }
}

/// Progress of a long job (the backfill command draws it).
pub trait JobProgress: Send + Sync {
    fn message(&self, _text: &str) {}
    /// `done` of `total` issues.
    fn issues(&self, _done: usize, _total: usize) {}
}

/// Progress only to the log.
#[derive(Debug, Default)]
pub struct LogJobProgress;
impl JobProgress for LogJobProgress {
    fn message(&self, text: &str) {
        tracing::info!("{text}");
    }
}

/// A configured Jira source.
pub struct JiraSource {
    name: String,
    config: JiraConfig,
    secret: Option<Vec<u8>>,
    client: JiraClient,
    area: Area,
    state: Arc<StateStore>,
    issue_locks: issues::KeyedLocks,
    wake: Notify,
    catalog: Mutex<Option<Catalog>>,
}

impl std::fmt::Debug for JiraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JiraSource")
            .field("name", &self.name)
            .field("site", &self.config.site)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// One issue to refresh: by key, or by id (link events name issues by id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct IssueRef(String);

impl JiraSource {
    /// Sets up the source `name`. `env` resolves the token and secret variables.
    pub fn new(
        name: &str,
        config: &JiraConfig,
        data_dir: &Path,
        state: Arc<StateStore>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let bad = |message: String| ConnectorError::Config {
            source_name: name.to_string(),
            message,
        };
        if !(config.site.starts_with("https://") || config.site.starts_with("http://")) {
            return Err(bad(format!(
                "site '{}' must start with https:// (or http://)",
                config.site
            )));
        }
        if crate::registry::check_name(&config.schema).is_err() {
            return Err(bad(format!(
                "schema '{}' may only use letters, digits, '_' and '-'",
                config.schema
            )));
        }
        let secret_of = |var: &str, what: &str| {
            env(var)
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    bad(format!(
                        "the environment variable {var} ({what}) is not set; put the API token there"
                    ))
                })
        };
        let main = Credentials {
            email: config.email.clone(),
            token: secret_of(&config.token_env, "token_env")?,
        };
        let sla = match &config.sla_account {
            Some(a) => Some(Credentials {
                email: a.email.clone(),
                token: secret_of(&a.token_env, "sla_account.token_env")?,
            }),
            None => None,
        };
        let secret = config
            .secret_env
            .as_deref()
            .and_then(env)
            .map(|s| s.trim().as_bytes().to_vec())
            .filter(|s| !s.is_empty());
        if secret.is_none() {
            tracing::warn!(
                source = name,
                "no webhook secret is configured (secret_env): every webhook will be refused with 503"
            );
        }
        let retry = RetryPolicy {
            attempts: config.attempts.max(1),
            backoff: Duration::from_millis(config.retry_backoff_ms),
            max_backoff: Duration::from_millis(config.max_backoff_ms.max(config.retry_backoff_ms)),
            ..RetryPolicy::default()
        };
        let client = JiraClient::new(
            &config.site,
            main,
            sla,
            retry,
            Duration::from_secs(config.request_timeout_secs.max(1)),
        )?;
        Ok(Self {
            name: name.to_string(),
            config: config.clone(),
            secret,
            client,
            area: Area::new(data_dir, name, &config.schema),
            state,
            issue_locks: issues::KeyedLocks::default(),
            wake: Notify::new(),
            catalog: Mutex::new(None),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &JiraConfig {
        &self.config
    }

    /// The catalog to refresh after tables change (the server's).
    pub fn set_catalog(&self, catalog: Catalog) {
        *self.catalog.lock().unwrap_or_else(|p| p.into_inner()) = Some(catalog);
    }

    /// The table readers of attachments must be able to read: `<schema>.issues`.
    pub fn issues_table(&self) -> (String, String) {
        (self.config.schema.clone(), "issues".into())
    }

    async fn refresh_catalog(&self) {
        let catalog = self
            .catalog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(c) = catalog
            && let Err(e) = c.refresh().await
        {
            tracing::warn!(source = %self.name, error = %e, "catalog refresh after a webhook failed");
        }
    }

    /// The source's state for health and metrics; `last_poll_ms` is filled by the caller
    /// (it knows the jobs).
    pub fn status(&self) -> Result<JiraStatus> {
        Ok(JiraStatus {
            queue: self.state.push_queue(&self.name)?,
            parked: self.state.parked_push_items(&self.name)?,
            issues: self.state.push_item_count(&self.name)?,
            last_poll_ms: None,
            secret_configured: self.secret.is_some(),
        })
    }

    /// An attachment by id: its stored file, file name and content type, if it was
    /// downloaded. Blocking.
    pub fn attachment(&self, id: &str) -> Result<Option<StoredAttachment>> {
        if !is_numeric_id(id) {
            return Ok(None);
        }
        // The issue is found through the state store's items, then its snapshot.
        let Some(key) = self.find_attachment_issue(id)? else {
            return Ok(None);
        };
        let Some(bundle) = self.area.read_snapshot(&key)? else {
            return Ok(None);
        };
        let Some(relative) = bundle.attachments.get(id) else {
            return Ok(None);
        };
        let Some(path) = self.area.attachment_file(relative) else {
            return Ok(None);
        };
        let meta = bundle.attachment_list().iter().find(|a| match a.get("id") {
            Some(Value::String(s)) => s == id,
            Some(Value::Number(n)) => n.to_string() == id,
            _ => false,
        });
        let text = |f: &str| {
            meta.and_then(|m| m.get(f))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(path.is_file().then(|| StoredAttachment {
            path,
            filename: text("filename").unwrap_or_else(|| id.to_string()),
            content_type: text("mimeType").unwrap_or_else(|| "application/octet-stream".into()),
        }))
    }

    fn find_attachment_issue(&self, id: &str) -> Result<Option<String>> {
        let dir = self
            .area
            .data_dir()
            .join("raw")
            .join(&self.name)
            .join("attachments");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(None);
        };
        for entry in entries.flatten() {
            let key = entry.file_name().to_string_lossy().into_owned();
            if is_issue_key(&key) && entry.path().join(id).is_file() {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }
}

/// A downloaded attachment.
#[derive(Debug, Clone)]
pub struct StoredAttachment {
    pub path: std::path::PathBuf,
    pub filename: String,
    pub content_type: String,
}

/// Runs blocking file and database work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConnectorError::io("worker", std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests;
