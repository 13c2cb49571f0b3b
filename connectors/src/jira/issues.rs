//! Issues refreshed from the API and written: fetched under a per-issue lock, kept as
//! snapshots with their attachments, then each affected month of the six tables rebuilt under
//! a per-month lock held across processes; deleted issues removed everywhere.

use super::*;

impl JiraSource {
    /// Refreshes issues from the API: fetch (per-issue locked), snapshot, then one rebuild per
    /// affected month.
    pub(super) async fn refresh(&self, refs: Vec<IssueRef>) -> BatchReport {
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
    pub(super) async fn remove(&self, keys: &[String]) -> BatchReport {
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
    pub(super) async fn forget(&self, key: &str) -> Result<Option<String>> {
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
    pub(super) async fn rewrite(
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
    pub(super) async fn record_tables(
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
    pub(super) async fn fetch_one(&self, r: &IssueRef) -> Result<Fetch> {
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
    pub(super) async fn store_attachments(
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

    pub(super) fn park(&self, report: &BatchReport) {
        let now = chrono::Utc::now().timestamp_millis();
        for (item, error) in &report.failed {
            if is_issue_key(item)
                && let Err(e) = self.state.park_push_item(&self.name, item, error, now)
            {
                tracing::warn!(source = %self.name, error = %e, "cannot park an issue");
            }
        }
    }
}

pub(super) enum Fetch {
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
pub(super) fn newer(a: Option<&str>, b: Option<&str>) -> bool {
    match (a.and_then(rows::timestamp), b.and_then(rows::timestamp)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// In-process locks by name (one issue at a time), dropped when nobody holds them.
#[derive(Debug, Default)]
pub(super) struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub(super) struct KeyedGuard<'a> {
    owner: &'a KeyedLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    pub(super) async fn lock(&self, key: &str) -> KeyedGuard<'_> {
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
pub(super) struct MonthLock {
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
        let (file, path) = crate::connector::lock_file(data_dir, &format!("{source}.{month}"))?;
        file.lock().map_err(|e| ConnectorError::io(&path, e))?;
        Ok(Self { _file: file })
    }
}
