//! The source's jobs: the SLA poll, the consistency check and the backfill.

use super::*;

impl JiraSource {
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
    pub(super) async fn refresh_in_chunks(
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
}
