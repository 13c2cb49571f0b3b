//! The Jira Cloud push source: signed webhooks in, six tables out, kept right by polling.
//!
//! - [`JiraSource::accept`] verifies a delivery ([`verify`]), stores its body atomically under
//!   `raw/<source>/events/` and queues it in the state store, unique per Jira delivery id, so a
//!   retried delivery changes nothing. Only then is it acknowledged.
//! - [`JiraSource::run_queue`] processes queued deliveries (also those accepted before a
//!   restart or a crash): it fetches each issue named ([`client`]), stores the issue's snapshot
//!   and attachments ([`store`]), and rebuilds the month partitions of the six tables that hold
//!   the issue ([`rows`]), under per-issue and per-month locks. A failed delivery is retried
//!   with backoff; after `event_attempts` its issues are parked until a poll succeeds.
//! - [`JiraSource::sla_poll`], [`JiraSource::consistency_check`] and [`JiraSource::backfill`]
//!   are the source's jobs.
//!
//! It knows nothing of HTTP serving: the server hands it a body and headers.

pub mod adf;
pub mod client;
pub mod config;
mod describe;
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
    issue_locks: KeyedLocks,
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
            issue_locks: KeyedLocks::default(),
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

    /// Verifies and stores one delivery; `headers` are `(lowercase name, value)`. Blocking
    /// (file and database writes): call it off the async threads.
    pub fn accept(&self, headers: &[(String, String)], body: &[u8]) -> Result<Receipt, Rejection> {
        let Some(secret) = &self.secret else {
            return Err(Rejection::NoSecret(self.name.clone()));
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let signature = SIGNATURE_HEADERS.iter().find_map(|h| header(h));
        check_signature(secret, body, signature).map_err(Rejection::Signature)?;
        let payload: Value = serde_json::from_slice(body)
            .map_err(|e| Rejection::Invalid(format!("the body is not JSON: {e}")))?;
        let event = payload
            .get("webhookEvent")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty() && e.len() <= 100)
            .ok_or_else(|| Rejection::Invalid("the body has no webhookEvent".into()))?
            .to_string();
        let (key, items) = issue_refs(&event, &payload)?;
        let delivery = match header(DELIVERY_HEADER) {
            Some(d)
                if !d.is_empty() && d.len() <= 200 && d.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                d.to_string()
            }
            Some(_) => {
                return Err(Rejection::Invalid(format!(
                    "the {DELIVERY_HEADER} header is not a delivery id"
                )));
            }
            // Without an id, the same body is the same delivery.
            None => format!("sha256:{}", hex::encode(Sha256::digest(body))),
        };
        let receipt = |duplicate| Receipt {
            status: "ok",
            event: event.clone(),
            issue: key.clone(),
            duplicate,
        };
        let store = |e: &dyn std::fmt::Display| Rejection::Store(e.to_string());
        let received_ms = chrono::Utc::now().timestamp_millis();
        let unique = hex::encode(&Sha256::digest(delivery.as_bytes())[..12]);
        let raw_path = self
            .area
            .save_event(body, received_ms, &unique)
            .map_err(|e| store(&e))?;
        let queued = self
            .state
            .enqueue_push_event(&NewPushEvent {
                source: &self.name,
                delivery: &delivery,
                received_ms,
                event: &event,
                items: &items,
                raw_path: &raw_path,
            })
            .map_err(|e| store(&e));
        match queued {
            Ok(Enqueued::New(id)) => {
                tracing::debug!(source = %self.name, id, event = %event, "webhook queued");
                self.wake.notify_one();
                Ok(receipt(false))
            }
            Ok(Enqueued::Duplicate { id, state }) => {
                tracing::debug!(source = %self.name, id, state = %state, "webhook delivered again; ignored");
                let _ = self.area.remove_event(&raw_path);
                Ok(receipt(true))
            }
            Err(e) => {
                let _ = self.area.remove_event(&raw_path);
                Err(e)
            }
        }
    }

    /// Processes queued deliveries until `shutdown` resolves: those accepted before a restart
    /// first, then each as it arrives. Also removes raw bodies past their retention.
    pub async fn run_queue(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        describe::ensure(&self.area, &self.name).await;
        tokio::pin!(shutdown);
        let mut running = tokio::task::JoinSet::new();
        let mut in_flight: HashSet<i64> = HashSet::new();
        let mut last_sweep = std::time::Instant::now() - Duration::from_secs(3600);
        let mut changed = false;
        loop {
            if last_sweep.elapsed() >= Duration::from_secs(3600) {
                last_sweep = std::time::Instant::now();
                self.sweep_raw().await;
            }
            let room = self.config.workers.max(1).saturating_sub(running.len());
            if room > 0 {
                let now = chrono::Utc::now().timestamp_millis();
                let state = Arc::clone(&self.state);
                let source = self.name.clone();
                let limit = room + in_flight.len();
                let due =
                    tokio::task::spawn_blocking(move || state.due_push_events(&source, now, limit))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                match due {
                    Ok(events) => {
                        let fresh: Vec<_> = events
                            .into_iter()
                            .filter(|e| !in_flight.contains(&e.id))
                            .take(room)
                            .collect();
                        for event in fresh {
                            in_flight.insert(event.id);
                            let me = Arc::clone(&self);
                            running.spawn(async move {
                                let id = event.id;
                                let wrote = me.process(event).await;
                                (id, wrote)
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(source = %self.name, error = %e, "cannot read the webhook queue")
                    }
                }
            }
            let next_due = self.next_due_in().await;
            tokio::select! {
                _ = &mut shutdown => break,
                Some(done) = running.join_next(), if !running.is_empty() => {
                    if let Ok((id, wrote)) = done {
                        in_flight.remove(&id);
                        changed |= wrote;
                    }
                    if running.is_empty() && changed {
                        changed = false;
                        self.refresh_catalog().await;
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(next_due) => {}
            }
        }
        running.abort_all();
    }

    /// How long until the next queued delivery is due (at most a minute).
    async fn next_due_in(&self) -> Duration {
        let state = Arc::clone(&self.state);
        let source = self.name.clone();
        let next = tokio::task::spawn_blocking(move || state.next_push_due(&source))
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten();
        let now = chrono::Utc::now().timestamp_millis();
        match next {
            Some(at) => Duration::from_millis((at - now).clamp(10, 60_000) as u64),
            None => Duration::from_secs(60),
        }
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

    /// Processes one delivery; returns whether tables changed.
    async fn process(&self, event: dataport_state::PushEvent) -> bool {
        let now = || chrono::Utc::now().timestamp_millis();
        let report = if event.items.is_empty() {
            None
        } else if event.event == "jira:issue_deleted" {
            Some(self.remove(&event.items).await)
        } else {
            let refs = event.items.iter().cloned().map(IssueRef).collect();
            Some(self.refresh(refs).await)
        };
        let state = Arc::clone(&self.state);
        let source = self.name.clone();
        let (max_attempts, base, cap) = (
            self.config.event_attempts.max(1),
            self.config.retry_backoff_ms,
            self.config.max_backoff_ms,
        );
        let wrote = report.as_ref().is_some_and(|r| r.synced + r.removed > 0);
        let result = tokio::task::spawn_blocking(move || -> dataport_state::Result<()> {
            match report {
                None => state.finish_push_event(event.id, "ignored", now()),
                Some(r) => match r.error() {
                    None => state.finish_push_event(event.id, "done", now()),
                    Some(error) => {
                        let attempt = event.attempts + 1;
                        if attempt >= max_attempts {
                            state.retry_push_event(event.id, &error, None, now())?;
                            for (item, e) in &r.failed {
                                state.park_push_item(&source, item, e, now())?;
                            }
                            tracing::warn!(source = %source, event = event.id, error = %error, "giving up on a webhook; its issues are parked until the consistency job succeeds");
                        } else {
                            let delay = RetryPolicy {
                                attempts: max_attempts,
                                backoff: Duration::from_millis(base),
                                max_backoff: Duration::from_millis(cap.max(base)),
                                ..RetryPolicy::default()
                            }
                            .delay(attempt, None);
                            state.retry_push_event(event.id, &error, Some(now() + delay.as_millis() as i64), now())?;
                            tracing::info!(source = %source, event = event.id, attempt, error = %error, "webhook processing failed; will retry");
                        }
                        Ok(())
                    }
                },
            }
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(source = %self.name, error = %e, "cannot record a webhook's outcome")
            }
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "recording a webhook's outcome failed")
            }
        }
        wrote
    }

    /// Refreshes issues from the API: fetch (per-issue locked), snapshot, then one rebuild per
    /// affected month.
    async fn refresh(&self, refs: Vec<IssueRef>) -> BatchReport {
        let mut report = BatchReport::default();
        let workers = self.config.workers.max(1);
        let results: Vec<(IssueRef, Result<Fetch>)> = futures::stream::iter(refs)
            .map(|r| async move {
                let out = self.fetch_one(&r).await;
                (r, out)
            })
            .buffer_unordered(workers)
            .collect()
            .await;
        let mut months: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let mut written = Vec::new();
        let mut gone = Vec::new();
        for (r, result) in results {
            match result {
                Ok(Fetch::Written {
                    key,
                    month,
                    old_month,
                    item,
                }) => {
                    months.entry(month).or_default().insert(key.clone());
                    if let Some(old) = old_month {
                        months.entry(old).or_default().insert(key.clone());
                    }
                    written.push(item);
                }
                Ok(Fetch::Gone { key, month }) => {
                    if let Some(m) = month {
                        months.entry(m).or_default().insert(key.clone());
                    }
                    gone.push(key);
                }
                Ok(Fetch::Unchanged) => report.unchanged += 1,
                Err(e) => report.failed.push((r.0, e.to_string())),
            }
        }
        let failed_months = self.rewrite(months, &mut report).await;
        let now = chrono::Utc::now().timestamp_millis();
        for item in written {
            if item
                .partition
                .as_ref()
                .is_some_and(|m| failed_months.contains(m))
            {
                continue;
            }
            report.synced += 1;
            if let Err(e) = self.state.record_push_item(&item) {
                report.failed.push((item.item.clone(), e.to_string()));
            }
        }
        for key in gone {
            report.removed += 1;
            if let Err(e) = self.state.delete_push_item(&self.name, &key, now) {
                report.failed.push((key, e.to_string()));
            }
        }
        report
    }

    /// Removes deleted issues' rows everywhere.
    async fn remove(&self, keys: &[String]) -> BatchReport {
        let mut report = BatchReport::default();
        let mut months: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let mut gone = Vec::new();
        for key in keys {
            let _lock = self.issue_locks.lock(key).await;
            match self.forget(key).await {
                Ok(month) => {
                    if let Some(m) = &month {
                        months.entry(m.clone()).or_default().insert(key.clone());
                    }
                    gone.push((key.clone(), month));
                }
                Err(e) => report.failed.push((key.clone(), e.to_string())),
            }
        }
        let failed_months = self.rewrite(months, &mut report).await;
        let now = chrono::Utc::now().timestamp_millis();
        for (key, month) in gone {
            // A month that failed keeps the item's partition, so a retry finds the rows.
            if month.is_some_and(|m| failed_months.contains(&m)) {
                continue;
            }
            report.removed += 1;
            if let Err(e) = self.state.delete_push_item(&self.name, &key, now) {
                report.failed.push((key, e.to_string()));
            }
        }
        report
    }

    /// Drops an issue's snapshot and attachments; returns the month its rows are in.
    async fn forget(&self, key: &str) -> Result<Option<String>> {
        let area = self.area.clone();
        let state = Arc::clone(&self.state);
        let (source, key) = (self.name.clone(), key.to_string());
        blocking(move || {
            let stored = state.push_item(&source, &key)?;
            let month = match stored.and_then(|i| i.partition) {
                Some(m) => Some(m),
                None => area.read_snapshot(&key)?.and_then(|b| b.month()),
            };
            area.remove_issue(&key)?;
            Ok(month)
        })
        .await
    }

    /// Rebuilds each month for its issues (each under the month's lock); returns the months
    /// that failed (their errors are in `report`).
    async fn rewrite(
        &self,
        months: BTreeMap<String, HashSet<String>>,
        report: &mut BatchReport,
    ) -> HashSet<String> {
        let started = std::time::Instant::now();
        let mut failed = HashSet::new();
        for (month, keys) in months {
            let area = self.area.clone();
            let state = Arc::clone(&self.state);
            let site = self.client.site().to_string();
            let fields = self.config.fields.clone();
            let source = self.name.clone();
            let m = month.clone();
            let ks = keys.clone();
            let result = blocking(move || {
                let _lock = MonthLock::acquire(area.data_dir(), &source, &m)?;
                let mut bundles = Vec::new();
                for k in &ks {
                    if let Some(b) = area.read_snapshot(k)?
                        && b.month().as_deref() == Some(m.as_str())
                    {
                        bundles.push(b);
                    }
                }
                let ctx = RowContext {
                    site: &site,
                    fields: &fields,
                    synced_at_us: chrono::Utc::now().timestamp_micros(),
                    raw_file: "",
                };
                area.rewrite_month(&m, &ks, &bundles, &ctx, &state)
            })
            .await;
            match result {
                Ok(()) => report.months += 1,
                Err(e) => {
                    let text = e.to_string();
                    for k in keys {
                        report.failed.push((k, text.clone()));
                    }
                    failed.insert(month);
                }
            }
        }
        if report.months > 0 || !failed.is_empty() {
            self.record_tables(
                started,
                failed.is_empty().then_some(()).ok_or_else(|| {
                    format!("{} month partitions could not be rebuilt", failed.len())
                }),
            )
            .await;
        }
        failed
    }

    /// Each table's size and outcome in the sync state (the sources page, freshness).
    async fn record_tables(
        &self,
        started: std::time::Instant,
        outcome: std::result::Result<(), String>,
    ) {
        let area = self.area.clone();
        let state = Arc::clone(&self.state);
        let source = self.name.clone();
        let duration_ms = started.elapsed().as_millis() as u64;
        let recorded = blocking(move || {
            let now = dataport_state::now_secs();
            for table in rows::TABLES {
                let (rows, columns, bytes) = area.table_totals(table).unwrap_or_default();
                state.record_sync(&dataport_state::SyncRecord {
                    source: source.clone(),
                    table_id: format!("{source}.{table}"),
                    schema_name: area.schema().to_string(),
                    table_name: table.to_string(),
                    strategy: "push".into(),
                    last_sync: outcome.is_ok().then_some(now),
                    last_attempt: now,
                    rows,
                    columns,
                    bytes,
                    uncompressed_bytes: 0,
                    duration_ms,
                    outcome: if outcome.is_ok() { "ok" } else { "error" }.into(),
                    error: outcome.clone().err(),
                })?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = recorded {
            tracing::warn!(source = %self.name, error = %e, "cannot record the Jira tables' sync state");
        }
    }

    /// Fetches one issue and stores its snapshot and attachments (under the issue's lock).
    async fn fetch_one(&self, r: &IssueRef) -> Result<Fetch> {
        let _lock = self.issue_locks.lock(&r.0).await;
        let fetched = self.client.issue(&r.0, &self.config.fields).await?;
        let mut bundle = match fetched {
            Fetched::Found(b) => *b,
            Fetched::Gone => {
                let key = if is_issue_key(&r.0) {
                    Some(r.0.clone())
                } else {
                    let state = Arc::clone(&self.state);
                    let (source, id) = (self.name.clone(), r.0.clone());
                    blocking(move || Ok(state.push_item_by_id(&source, &id)?.map(|i| i.item)))
                        .await?
                };
                return match key {
                    Some(key) => {
                        let month = self.forget(&key).await?;
                        Ok(Fetch::Gone { key, month })
                    }
                    None => Ok(Fetch::Unchanged),
                };
            }
        };
        let key = bundle
            .key()
            .filter(|k| is_issue_key(k))
            .ok_or_else(|| ConnectorError::Protocol {
                url: self.client.site().to_string(),
                message: format!("issue {} came back without a valid key", r.0),
            })?
            .to_string();
        let month = bundle.month().ok_or_else(|| ConnectorError::Protocol {
            url: self.client.site().to_string(),
            message: format!("issue {key} has no created date"),
        })?;
        let previous = {
            let area = self.area.clone();
            let k = key.clone();
            blocking(move || area.read_snapshot(&k)).await?
        };
        if let Some(prev) = &previous
            && newer(prev.updated(), bundle.updated())
        {
            // A slower fetch of an older version: what is stored stays.
            return Ok(Fetch::Unchanged);
        }
        self.store_attachments(&key, &mut bundle, previous.as_ref())
            .await?;
        let old_month = {
            let state = Arc::clone(&self.state);
            let (source, k) = (self.name.clone(), key.clone());
            blocking(move || Ok(state.push_item(&source, &k)?.and_then(|i| i.partition))).await?
        }
        .filter(|m| *m != month);
        let item = Box::new(PushItem {
            source: self.name.clone(),
            item: key.clone(),
            item_id: bundle.id().map(str::to_string),
            partition: Some(month.clone()),
            version: bundle.updated().map(str::to_string),
            open: bundle.is_open(),
            synced_ms: Some(chrono::Utc::now().timestamp_millis()),
            ..PushItem::default()
        });
        let area = self.area.clone();
        blocking(move || area.write_snapshot(&bundle)).await?;
        Ok(Fetch::Written {
            key,
            month,
            old_month,
            item,
        })
    }

    /// Downloads attachments not stored yet (within the size limit) and drops removed ones.
    async fn store_attachments(
        &self,
        key: &str,
        bundle: &mut Bundle,
        previous: Option<&Bundle>,
    ) -> Result<()> {
        let limit = self.config.attachment_max_bytes;
        let mut keep = HashSet::new();
        let list: Vec<(String, u64)> = bundle
            .attachment_list()
            .iter()
            .filter_map(|a| {
                let id = match a.get("id")? {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                let size = a.get("size").and_then(Value::as_u64).unwrap_or(0);
                is_numeric_id(&id).then_some((id, size))
            })
            .collect();
        for (id, size) in list {
            if size > limit {
                continue;
            }
            let relative = self.area.attachment_path(key, &id)?;
            let stored = previous.and_then(|p| p.attachments.get(&id)) == Some(&relative)
                && self.area.data_dir().join(&relative).is_file();
            if !stored {
                let Some(content) = self.client.attachment(&id, limit).await? else {
                    continue;
                };
                let area = self.area.clone();
                let (k, i) = (key.to_string(), id.clone());
                blocking(move || area.save_attachment(&k, &i, &content)).await?;
            }
            keep.insert(id.clone());
            bundle.attachments.insert(id, relative);
        }
        let area = self.area.clone();
        let k = key.to_string();
        blocking(move || area.prune_attachments(&k, &keep)).await
    }

    /// `sync:<source>:sla`: the SLA fields of every open issue read again (a search per 50
    /// issues, not a request per issue); months whose issues changed are rebuilt.
    pub async fn sla_poll(&self) -> BatchReport {
        const BATCH: usize = 50;
        let mut report = BatchReport::default();
        let open = match self.state.open_push_items(&self.name) {
            Ok(o) => o,
            Err(e) => {
                report.failed.push(("*".into(), e.to_string()));
                return report;
            }
        };
        let mut months: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let partitions: HashMap<String, Option<String>> = open
            .iter()
            .map(|i| (i.item.clone(), i.partition.clone()))
            .collect();
        let keys: Vec<String> = open
            .into_iter()
            .map(|i| i.item)
            .filter(|k| is_issue_key(k))
            .collect();
        for chunk in keys.chunks(BATCH) {
            let found = match self.client.sla_of(chunk, &self.config.fields).await {
                Ok(f) => f,
                Err(e) => {
                    let text = e.to_string();
                    report
                        .failed
                        .extend(chunk.iter().map(|k| (k.clone(), text.clone())));
                    continue;
                }
            };
            for (key, fields) in found {
                let _lock = self.issue_locks.lock(&key).await;
                let area = self.area.clone();
                let k = key.clone();
                let changed = blocking(move || {
                    let Some(mut b) = area.read_snapshot(&k)? else {
                        return Ok(false);
                    };
                    if b.sla.as_ref() == Some(&fields) {
                        return Ok(false);
                    }
                    b.sla = Some(fields);
                    area.write_snapshot(&b)?;
                    Ok(true)
                })
                .await;
                match changed {
                    Ok(true) => {
                        if let Some(Some(m)) = partitions.get(&key) {
                            months.entry(m.clone()).or_default().insert(key);
                            report.synced += 1;
                        }
                    }
                    Ok(false) => report.unchanged += 1,
                    Err(e) => report.failed.push((key, e.to_string())),
                }
            }
        }
        self.rewrite(months, &mut report).await;
        if report.months > 0 {
            self.refresh_catalog().await;
        }
        report
    }

    /// `sync:<source>:consistency`: issues updated in the last `consistency_days` days that are
    /// missing or stale here, and every parked issue, fetched again.
    pub async fn consistency_check(&self, progress: &dyn JobProgress) -> BatchReport {
        let jql = format!(
            "updated >= -{}d ORDER BY key ASC",
            self.config.consistency_days.max(1)
        );
        let mut report = BatchReport::default();
        let hits = match self.client.search(&jql, |n| progress.issues(n, 0)).await {
            Ok(h) => h,
            Err(e) => {
                report.failed.push(("search".into(), e.to_string()));
                Vec::new()
            }
        };
        let mut refs: Vec<IssueRef> = Vec::new();
        let mut seen = HashSet::new();
        for hit in &hits {
            let stored = self.state.push_item(&self.name, &hit.key).ok().flatten();
            let current = stored.as_ref().is_some_and(|s| {
                s.parked_ms.is_none()
                    && s.deleted_ms.is_none()
                    && s.partition.is_some()
                    && s.version == hit.updated
            });
            if !current && seen.insert(hit.key.clone()) {
                refs.push(IssueRef(hit.key.clone()));
            }
        }
        let unchanged = hits.len().saturating_sub(refs.len());
        if let Ok(parked) = self.state.parked_push_items(&self.name) {
            for p in parked {
                if seen.insert(p.item.clone()) {
                    refs.push(IssueRef(p.item));
                }
            }
        }
        progress.message(&format!(
            "{} issues updated in the last {} days; {} to fetch",
            hits.len(),
            self.config.consistency_days,
            refs.len()
        ));
        let mut done = self.refresh_in_chunks(refs, progress).await;
        done.unchanged += unchanged;
        report.merge(done);
        self.park(&report);
        if report.months > 0 {
            self.refresh_catalog().await;
        }
        report
    }

    /// `dataport sync <source> --backfill [--project KEY]`: every issue of the projects loaded
    /// again; issues stored for a project that Jira no longer lists are removed.
    pub async fn backfill(
        &self,
        project: Option<&str>,
        progress: &dyn JobProgress,
    ) -> Result<BatchReport> {
        describe::ensure(&self.area, &self.name).await;
        let projects: Vec<String> = match project {
            Some(p) => vec![p.to_string()],
            // Jira refuses unbounded searches: a backfill names its projects.
            None if self.config.projects.is_empty() => {
                return Err(ConnectorError::Config {
                    source_name: self.name.clone(),
                    message: "a backfill needs projects: set `projects: [KEY, …]` on the source, or pass --project KEY".into(),
                });
            }
            None => self.config.projects.clone(),
        };
        let mut report = BatchReport::default();
        for project in projects {
            if project.is_empty()
                || !project
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(ConnectorError::Config {
                    source_name: self.name.clone(),
                    message: format!("'{project}' is not a Jira project key"),
                });
            }
            let jql = format!("project = \"{project}\" ORDER BY key ASC");
            progress.message(&format!("listing the issues of {project}"));
            let hits = self.client.search(&jql, |n| progress.issues(0, n)).await?;
            let listed: HashSet<&str> = hits.iter().map(|h| h.key.as_str()).collect();
            let prefix = format!("{project}-");
            let vanished: Vec<String> = self
                .state
                .live_push_items(&self.name)?
                .into_iter()
                .map(|i| i.item)
                .filter(|k| k.starts_with(prefix.as_str()))
                .filter(|k| !listed.contains(k.as_str()))
                .collect();
            progress.message(&format!(
                "{} issues to load{}",
                hits.len(),
                if vanished.is_empty() {
                    String::new()
                } else {
                    format!(", {} to remove", vanished.len())
                }
            ));
            let refs = hits.iter().map(|h| IssueRef(h.key.clone())).collect();
            report.merge(self.refresh_in_chunks(refs, progress).await);
            if !vanished.is_empty() {
                report.merge(self.remove(&vanished).await);
            }
        }
        self.park(&report);
        if report.months > 0 {
            self.refresh_catalog().await;
        }
        Ok(report)
    }

    /// Large refreshes in chunks: snapshots of a chunk, then its months.
    async fn refresh_in_chunks(
        &self,
        refs: Vec<IssueRef>,
        progress: &dyn JobProgress,
    ) -> BatchReport {
        const CHUNK: usize = 200;
        let total = refs.len();
        let mut report = BatchReport::default();
        let mut done = 0;
        for chunk in refs.chunks(CHUNK) {
            report.merge(self.refresh(chunk.to_vec()).await);
            done += chunk.len();
            progress.issues(done, total);
        }
        report
    }

    fn park(&self, report: &BatchReport) {
        let now = chrono::Utc::now().timestamp_millis();
        for (item, error) in &report.failed {
            if is_issue_key(item)
                && let Err(e) = self.state.park_push_item(&self.name, item, error, now)
            {
                tracing::warn!(source = %self.name, error = %e, "cannot park an issue");
            }
        }
    }

    /// Removes raw webhook bodies (and their queue rows) past `raw_retention_days`.
    async fn sweep_raw(&self) {
        let cutoff = chrono::Utc::now().timestamp_millis()
            - i64::from(self.config.raw_retention_days) * 86_400_000;
        let state = Arc::clone(&self.state);
        let area = self.area.clone();
        let source = self.name.clone();
        let swept = blocking(move || {
            let mut n = 0;
            loop {
                let batch = state.expired_push_events(&source, cutoff, 500)?;
                if batch.is_empty() {
                    return Ok(n);
                }
                for (id, path) in batch {
                    area.remove_event(&path)?;
                    state.delete_push_event(id)?;
                    n += 1;
                }
            }
        })
        .await;
        match swept {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(source = %self.name, removed = n, "raw webhook bodies past their retention removed")
            }
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot remove old raw webhook bodies")
            }
        }
    }

    /// The source's state for health and metrics; `last_poll_ms` is filled by the caller
    /// (it knows the jobs).
    pub fn status(&self) -> Result<JiraStatus> {
        Ok(JiraStatus {
            queue: self.state.push_queue(&self.name)?,
            parked: self.state.parked_push_items(&self.name)?,
            issues: self.state.live_push_items(&self.name)?.len() as u64,
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

enum Fetch {
    Written {
        key: String,
        month: String,
        old_month: Option<String>,
        item: Box<PushItem>,
    },
    Gone {
        key: String,
        month: Option<String>,
    },
    Unchanged,
}

/// Whether Jira timestamp `a` is later than `b`.
fn newer(a: Option<&str>, b: Option<&str>) -> bool {
    match (a.and_then(rows::timestamp), b.and_then(rows::timestamp)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// The issue key a delivery names (for the answer) and the issues to refresh.
fn issue_refs(event: &str, payload: &Value) -> Result<(Option<String>, Vec<String>), Rejection> {
    let issue = payload.get("issue");
    let key = match issue.and_then(|i| i.get("key")) {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if is_issue_key(k) => Some(k.clone()),
        Some(k) => {
            return Err(Rejection::Invalid(format!(
                "issue.key {} is not a Jira issue key",
                short_json(k)
            )));
        }
    };
    let mut items: Vec<String> = Vec::new();
    if let Some(k) = &key {
        items.push(k.clone());
    } else if let Some(id) = issue.and_then(|i| i.get("id")) {
        items.push(numeric(id, "issue.id")?);
    }
    if event.starts_with("issuelink_")
        && let Some(link) = payload.get("issueLink")
    {
        for field in ["sourceIssueId", "destinationIssueId"] {
            if let Some(id) = link.get(field).filter(|v| !v.is_null()) {
                items.push(numeric(id, field)?);
            }
        }
    }
    if event == "jira:issue_deleted" && key.is_none() {
        return Err(Rejection::Invalid(
            "a jira:issue_deleted delivery must name the issue's key".into(),
        ));
    }
    items.dedup();
    Ok((key, items))
}

fn numeric(v: &Value, what: &str) -> Result<String, Rejection> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    if is_numeric_id(&text) {
        Ok(text)
    } else {
        Err(Rejection::Invalid(format!(
            "{what} {} is not a Jira id",
            short_json(v)
        )))
    }
}

fn short_json(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Runs blocking file and database work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConnectorError::io("worker", std::io::Error::other(e)))?
}

/// In-process locks by name (one issue at a time), dropped when nobody holds them.
#[derive(Debug, Default)]
struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

struct KeyedGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(key.to_string()).or_default())
        };
        let guard = lock.lock_owned().await;
        KeyedGuard {
            owner: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// An exclusive lock on one month of a source's tables, across processes (the server's
/// queue and a `dataport sync --backfill`). Blocking; released on drop.
struct MonthLock {
    _file: std::fs::File,
}

impl MonthLock {
    fn acquire(data_dir: &Path, source: &str, month: &str) -> Result<Self> {
        if !store::is_month(month) {
            return Err(ConnectorError::Protocol {
                url: source.to_string(),
                message: format!("'{month}' is not a month (YYYY-MM)"),
            });
        }
        let dir = data_dir.join("state").join("locks");
        std::fs::create_dir_all(&dir).map_err(|e| ConnectorError::io(&dir, e))?;
        let path = dir.join(format!("{source}.{month}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ConnectorError::io(&path, e))?;
        file.lock().map_err(|e| ConnectorError::io(&path, e))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests;
