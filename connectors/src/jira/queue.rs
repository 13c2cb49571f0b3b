//! Deliveries: verified and stored by [`JiraSource::accept`], processed from the durable
//! queue by [`JiraSource::run_queue`] (retried with backoff, given up on after
//! `event_attempts`), and removed after their retention.

use super::*;

/// How often raw bodies past their retention are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The longest written tables wait for a catalog refresh while deliveries keep coming.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

impl JiraSource {
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
    /// first, then each as it arrives. Also removes raw bodies past their retention. Tables
    /// written are made visible by a catalog refresh when the queue is idle, and at least
    /// every [`REFRESH_EVERY`] under a steady stream.
    pub async fn run_queue(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        describe::ensure(&self.area, &self.name).await;
        tokio::pin!(shutdown);
        let mut running = tokio::task::JoinSet::new();
        // Task → delivery, so a task that panicked still releases its delivery.
        let mut in_flight: HashMap<tokio::task::Id, i64> = HashMap::new();
        let mut last_sweep: Option<std::time::Instant> = None;
        let mut last_refresh = std::time::Instant::now();
        let mut changed = false;
        loop {
            if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
                last_sweep = Some(std::time::Instant::now());
                self.sweep_raw().await;
            }
            let busy: Vec<i64> = in_flight.values().copied().collect();
            let room = self.config.workers.max(1).saturating_sub(running.len());
            if room > 0 {
                for event in self.due(room, &busy).await {
                    let id = event.id;
                    let me = Arc::clone(&self);
                    let task = running.spawn(async move { me.process(event).await });
                    in_flight.insert(task.id(), id);
                }
            }
            let busy: Vec<i64> = in_flight.values().copied().collect();
            let next_due = self.next_due_in(&busy).await;
            tokio::select! {
                _ = &mut shutdown => break,
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let task = match done {
                        Ok((task, wrote)) => {
                            changed |= wrote;
                            task
                        }
                        Err(e) => {
                            tracing::error!(source = %self.name, error = %e, "processing a webhook failed unexpectedly; it stays queued");
                            e.id()
                        }
                    };
                    in_flight.remove(&task);
                    if changed && (running.is_empty() || last_refresh.elapsed() >= REFRESH_EVERY) {
                        changed = false;
                        last_refresh = std::time::Instant::now();
                        self.refresh_catalog().await;
                    }
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(next_due) => {}
            }
        }
        running.abort_all();
    }

    /// Up to `room` queued deliveries due now, other than those in `busy`.
    async fn due(&self, room: usize, busy: &[i64]) -> Vec<dataport_state::PushEvent> {
        let now = chrono::Utc::now().timestamp_millis();
        let state = Arc::clone(&self.state);
        let source = self.name.clone();
        let limit = room + busy.len();
        let due = tokio::task::spawn_blocking(move || state.due_push_events(&source, now, limit))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match due {
            Ok(events) => events
                .into_iter()
                .filter(|e| !busy.contains(&e.id))
                .take(room)
                .collect(),
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "cannot read the webhook queue");
                Vec::new()
            }
        }
    }

    /// How long until the next queued delivery other than those in `busy` is due (at most a
    /// minute).
    pub(super) async fn next_due_in(&self, busy: &[i64]) -> Duration {
        let state = Arc::clone(&self.state);
        let source = self.name.clone();
        let busy = busy.to_vec();
        let next = tokio::task::spawn_blocking(move || state.next_push_due(&source, &busy))
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

    /// Processes one delivery; returns whether tables changed.
    pub(super) async fn process(&self, event: dataport_state::PushEvent) -> bool {
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

    /// Removes raw webhook bodies (and their queue rows) past `raw_retention_days`.
    pub(super) async fn sweep_raw(&self) {
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
}

/// The issue key a delivery names (for the answer) and the issues to refresh.
pub(super) fn issue_refs(
    event: &str,
    payload: &Value,
) -> Result<(Option<String>, Vec<String>), Rejection> {
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

pub(super) fn numeric(v: &Value, what: &str) -> Result<String, Rejection> {
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

pub(super) fn short_json(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
