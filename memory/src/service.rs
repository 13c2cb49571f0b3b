//! [`Memory`]: corporate memory as the server runs it. The collector (`memory:collect`) turns
//! each account's changed notes into items (with the LLM when one is configured, else the
//! offline extractor), screens them and merges them by id; the session collector
//! (`memory:sessions`) stores transcripts centrally, once per content. Readers' questions
//! (pages, votes, stats, reviews, moderation, rule files) go through here so that
//! [`visible`](crate::knowledge::visible) is applied on every path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dataport_common::FsError;
use dataport_common::sync::{RuleFile, upload_dir};
use dataport_state::{
    ExtractedItem, MemoryActor, MemoryAudit, MemoryCollection, MemoryItem, MemoryNotes, Moderation,
    StateError, StateStore, UserRecord,
};
use serde::Serialize;

use crate::extract::extract_offline;
use crate::item::{Category, Item};
use crate::knowledge::{
    self, KnowledgeItem, KnowledgePage, KnowledgeQuery, MyVote, Review, Stats, StoredFinding,
    Viewer,
};
use crate::llm::{LlmError, LlmExtractor, LlmOptions};
use crate::screen::screen;

/// Why a memory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("the state database failed: {0}")]
    State(#[from] StateError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    /// No such item, or not one the caller may see (the two are not told apart).
    #[error("no knowledge item '{0}' is visible to you")]
    NotFound(String),
    /// The request is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this; the message says why.
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("the background task failed: {0}")]
    Task(String),
}

impl dataport_common::error::HasKind for MemoryError {
    fn kind(&self) -> dataport_common::ErrorKind {
        use dataport_common::ErrorKind;
        match self {
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::Invalid(_) => ErrorKind::InvalidArgument,
            Self::Forbidden(_) => ErrorKind::PermissionDenied,
            Self::Llm(_) => ErrorKind::Unavailable,
            Self::State(_) | Self::Io { .. } | Self::Fs(_) | Self::Task(_) => ErrorKind::Internal,
        }
    }
}

impl MemoryError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How corporate memory runs.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    pub data_dir: PathBuf,
    /// The LLM to extract with; the offline extractor without one.
    pub llm: Option<LlmOptions>,
    /// Largest notes file collected (bytes).
    pub max_notes_bytes: usize,
}

/// Corporate memory; cheap to clone.
#[derive(Clone)]
pub struct Memory {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<StateStore>,
    data_dir: PathBuf,
    llm: Option<LlmExtractor>,
    max_notes_bytes: usize,
    /// One collection at a time (the job and a save in the portal).
    collecting: tokio::sync::Mutex<()>,
    sessions: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("data_dir", &self.inner.data_dir)
            .field("extractor", &self.extractor())
            .finish()
    }
}

/// What one collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CollectSummary {
    /// Accounts with notes.
    pub accounts: usize,
    /// Accounts whose changed notes were extracted.
    pub changed: usize,
    /// Accounts whose extraction failed (their previous items kept).
    pub failed: usize,
    pub new_items: usize,
    pub held: usize,
    pub retired: usize,
    /// The first failure, for the job's record.
    pub error: Option<String>,
}

impl CollectSummary {
    /// One line for the job history.
    pub fn line(&self) -> String {
        format!(
            "{} accounts with notes, {} changed, {} new items, {} held for review, {} retired{}",
            self.accounts,
            self.changed,
            self.new_items,
            self.held,
            self.retired,
            if self.failed > 0 {
                format!(", {} failed (previous items kept)", self.failed)
            } else {
                String::new()
            }
        )
    }
}

/// What one session collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SessionsSummary {
    /// Transcript files looked at.
    pub files: usize,
    /// Newly stored.
    pub stored: usize,
    /// Already stored (the same content, under any name).
    pub known: usize,
    /// Files that could not be read or stored.
    pub failed: usize,
    pub error: Option<String>,
}

impl SessionsSummary {
    pub fn line(&self) -> String {
        format!(
            "{} transcripts, {} stored, {} already stored{}",
            self.files,
            self.stored,
            self.known,
            if self.failed > 0 {
                format!(", {} failed", self.failed)
            } else {
                String::new()
            }
        )
    }
}

/// The caller's notes and where the collector stands with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MyNotes {
    pub text: String,
    pub sha256: Option<String>,
    pub bytes: usize,
    /// Items were extracted from exactly this text.
    pub collected: bool,
    pub collected_at: Option<String>,
    pub extractor: Option<String>,
    /// Why the last extraction failed, if it did.
    pub error: Option<String>,
}

/// A source as an item's page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceView {
    pub user: String,
    pub display_name: String,
    pub first_seen_at: String,
    pub last_seen_at: String,
}

/// An item with its sources and (for admins and its authors) its history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemDetail {
    pub item: KnowledgeItem,
    pub sources: Vec<SourceView>,
    pub history: Vec<HistoryEntry>,
    /// The caller's own version is held: why, and whether they may release it.
    pub review: Option<Review>,
}

/// A change by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

impl From<MemoryAudit> for HistoryEntry {
    fn from(a: MemoryAudit) -> Self {
        Self {
            at: knowledge::rfc3339(a.at_ms),
            actor: a.actor,
            action: a.action,
            detail: a.detail,
        }
    }
}

/// A stored transcript as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TranscriptView {
    pub user: String,
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    pub stored_at: String,
}

/// An admin's edit of an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemEdit {
    pub title: String,
    pub content: String,
    pub category: String,
    pub tags: Vec<String>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Notes as the LLM gets them: lines marked private, and sections under a `(private)`
/// heading, left out; a line the screen flags replaced by a placeholder. Nothing the screen
/// would hold leaves the server.
pub fn notes_for_llm(notes: &str, author_emails: &[&str]) -> String {
    let mut kept = Vec::new();
    let mut private_section = false;
    for line in notes.lines() {
        let t = line.trim_start();
        let hashes = t.bytes().take_while(|&b| b == b'#').count();
        if (1..=6).contains(&hashes) && t[hashes..].starts_with(' ') {
            private_section = t.to_ascii_lowercase().contains("(private)");
            if private_section {
                continue;
            }
        }
        if private_section || t.contains("<!-- private -->") {
            continue;
        }
        if screen(line, author_emails).is_empty() {
            kept.push(line.to_string());
        } else {
            kept.push("[a line with sensitive content was removed here]".to_string());
        }
    }
    kept.join("\n")
}

impl Memory {
    pub fn new(state: Arc<StateStore>, options: MemoryOptions) -> Result<Self, MemoryError> {
        let llm = options.llm.map(LlmExtractor::new).transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                state,
                data_dir: options.data_dir,
                llm,
                max_notes_bytes: options.max_notes_bytes,
                collecting: tokio::sync::Mutex::new(()),
                sessions: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// `offline` or `llm:<model>`.
    pub fn extractor(&self) -> String {
        self.inner
            .llm
            .as_ref()
            .map_or_else(|| "offline".to_string(), |l| format!("llm:{}", l.model()))
    }

    fn state(&self) -> &StateStore {
        &self.inner.state
    }

    fn notes_path(&self, user: &str) -> Option<PathBuf> {
        upload_dir(&self.inner.data_dir, user).map(|d| d.join("notes.md"))
    }

    /// Central storage of a transcript.
    fn transcript_path(&self, account: i64, sha256: &str) -> PathBuf {
        self.inner
            .data_dir
            .join("memory")
            .join("transcripts")
            .join(account.to_string())
            .join(format!("{sha256}.jsonl"))
    }

    fn read_notes(&self, user: &UserRecord) -> Result<Option<String>, MemoryError> {
        let Some(path) = self.notes_path(&user.name) else {
            return Ok(None);
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                if bytes.len() > self.inner.max_notes_bytes {
                    return Err(MemoryError::Invalid(format!(
                        "the notes are {} bytes; the limit is {} (memory.max_notes_size): split them or raise the limit",
                        bytes.len(),
                        self.inner.max_notes_bytes
                    )));
                }
                Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(MemoryError::io(&path, e)),
        }
    }

    /// `memory:collect`: every account whose notes changed since they were last collected.
    pub async fn collect(&self) -> CollectSummary {
        self.collect_where(None).await
    }

    /// Collect one account's notes now (after they were saved in the portal).
    pub async fn collect_account(&self, account: i64) -> CollectSummary {
        self.collect_where(Some(account)).await
    }

    async fn collect_where(&self, only: Option<i64>) -> CollectSummary {
        let _one = self.inner.collecting.lock().await;
        let started = now_ms();
        let mut summary = CollectSummary::default();
        let users = match self.state().users() {
            Ok(u) => u,
            Err(e) => {
                summary.error = Some(format!("cannot list accounts: {e}"));
                return summary;
            }
        };
        for user in users
            .iter()
            .filter(|u| only.is_none_or(|id| u.id == id))
            .filter(|u| u.state.as_str() != "disabled")
        {
            if let Err(e) = self.collect_user(user, &mut summary).await {
                tracing::warn!(user = %user.name, error = %e, "memory: extraction failed; previous items kept");
                summary.failed += 1;
                let message = e.to_string();
                if let Err(e) = self.state().fail_memory_notes(user.id, &message, now_ms()) {
                    tracing::warn!(error = %e, "memory: cannot record the failure");
                }
                summary
                    .error
                    .get_or_insert_with(|| format!("{}: {message}", user.name));
            }
        }
        if only.is_none() {
            match self.state().refresh_memory_states(now_ms()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(items = n, "memory: items of deleted accounts updated"),
                Err(e) => tracing::warn!(error = %e, "memory: cannot refresh item states"),
            }
            let record = MemoryCollection {
                started_ms: started,
                finished_ms: now_ms(),
                accounts: summary.accounts as i64,
                changed: summary.changed as i64,
                failed: summary.failed as i64,
                extractor: self.extractor(),
            };
            if let Err(e) = self.state().record_memory_collection(&record) {
                tracing::warn!(error = %e, "memory: cannot record the collection");
            }
        }
        summary
    }

    async fn collect_user(
        &self,
        user: &UserRecord,
        summary: &mut CollectSummary,
    ) -> Result<(), MemoryError> {
        let notes = self.read_notes(user)?;
        let status = self.state().memory_notes(user.id)?;
        if notes.is_none() && status.is_none() {
            return Ok(());
        }
        if notes.is_some() {
            summary.accounts += 1;
        }
        // No notes file any more: an empty text, so the account's items lose this source.
        let text = notes.unwrap_or_default();
        let sha = dataport_common::digest::sha256_hex(text.as_bytes());
        if status
            .as_ref()
            .is_some_and(|s| s.collected_sha256.as_deref() == Some(sha.as_str()))
        {
            return Ok(());
        }
        summary.changed += 1;
        let emails: Vec<&str> = user.email.as_deref().into_iter().collect();
        let extracted: Vec<(Item, bool)> = match &self.inner.llm {
            None => extract_offline(&text)
                .into_iter()
                .map(|e| (e.item, e.private))
                .collect(),
            Some(llm) => {
                let known = self.items_of(user.id)?;
                llm.extract(&notes_for_llm(&text, &emails), &known)
                    .await?
                    .into_iter()
                    .map(|i| (i, false))
                    .collect()
            }
        };
        let items: Vec<ExtractedItem> = extracted
            .into_iter()
            .map(|(item, private)| {
                let findings = screen(&format!("{}\n{}", item.title, item.content), &emails);
                ExtractedItem {
                    findings: serde_json::to_string(&findings).unwrap_or_else(|_| "[]".into()),
                    tags: serde_json::to_string(&item.tags).unwrap_or_else(|_| "[]".into()),
                    id: item.id,
                    title: item.title,
                    content: item.content,
                    category: item.category.as_str().to_string(),
                    private,
                }
            })
            .collect();
        let applied = self.state().apply_memory_extraction(
            user.id,
            &sha,
            &self.extractor(),
            &items,
            now_ms(),
        )?;
        tracing::info!(
            user = %user.name,
            items = applied.items,
            new = applied.new,
            held = applied.held,
            retired = applied.retired,
            extractor = %self.extractor(),
            "memory: notes collected"
        );
        summary.new_items += applied.new;
        summary.held += applied.held;
        summary.retired += applied.retired;
        Ok(())
    }

    /// The items `account`'s notes currently give (for the LLM to keep word for word).
    fn items_of(&self, account: i64) -> Result<Vec<Item>, MemoryError> {
        Ok(self
            .state()
            .memory_items(account)?
            .into_iter()
            .filter(|i| i.sources.iter().any(|s| s.account_id == account))
            .map(|i| Item {
                category: Category::parse(&i.category)
                    .unwrap_or_else(|| Category::known("data_analysis")),
                id: i.id,
                title: i.title,
                content: i.content,
                tags: i.tags,
            })
            .collect())
    }

    /// `memory:sessions`: every account's uploaded transcripts (or one account's), stored
    /// centrally once per content.
    pub async fn collect_sessions(&self, only: Option<i64>) -> SessionsSummary {
        let _one = self.inner.sessions.lock().await;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.collect_sessions_blocking(only))
            .await
            .unwrap_or_else(|e| SessionsSummary {
                error: Some(format!("the session collector stopped: {e}")),
                ..Default::default()
            })
    }

    fn collect_sessions_blocking(&self, only: Option<i64>) -> SessionsSummary {
        let mut summary = SessionsSummary::default();
        let users = match self.state().users() {
            Ok(u) => u,
            Err(e) => {
                summary.error = Some(format!("cannot list accounts: {e}"));
                return summary;
            }
        };
        for user in users.iter().filter(|u| only.is_none_or(|id| u.id == id)) {
            let Some(dir) = upload_dir(&self.inner.data_dir, &user.name) else {
                continue;
            };
            let dir = dir.join("transcripts");
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".jsonl") && !n.starts_with('.'))
                .collect();
            names.sort();
            for name in names {
                summary.files += 1;
                match self.store_transcript(user.id, &dir.join(&name), &name) {
                    Ok(true) => summary.stored += 1,
                    Ok(false) => summary.known += 1,
                    Err(e) => {
                        tracing::warn!(user = %user.name, file = %name, error = %e, "memory: transcript not stored");
                        summary.failed += 1;
                        summary
                            .error
                            .get_or_insert_with(|| format!("{}/{name}: {e}", user.name));
                    }
                }
            }
        }
        summary
    }

    /// Store one transcript: the copy first (atomically), then its record, so a crash in
    /// between only means the next run records it.
    fn store_transcript(&self, account: i64, path: &Path, name: &str) -> Result<bool, MemoryError> {
        let bytes = std::fs::read(path).map_err(|e| MemoryError::io(path, e))?;
        let sha = dataport_common::digest::sha256_hex(&bytes);
        let dest = self.transcript_path(account, &sha);
        if !dest.is_file() {
            dataport_common::fs::write_bytes_atomic(&dest, &bytes)?;
        }
        Ok(self
            .state()
            .put_memory_transcript(account, &sha, name, bytes.len() as u64, now_ms())?)
    }

    fn items(&self, viewer: &Viewer) -> Result<Vec<MemoryItem>, MemoryError> {
        Ok(self.state().memory_items(viewer.id)?)
    }

    /// `GET /api/corporate-memory/knowledge`.
    pub fn knowledge(
        &self,
        viewer: &Viewer,
        query: &KnowledgeQuery,
    ) -> Result<KnowledgePage, MemoryError> {
        knowledge::knowledge(&self.items(viewer)?, viewer, query)
    }

    /// `GET /api/corporate-memory/stats`.
    pub fn stats(&self, viewer: &Viewer) -> Result<Stats, MemoryError> {
        let last = self
            .state()
            .last_memory_collection()?
            .map(|c| c.finished_ms);
        Ok(knowledge::stats(&self.items(viewer)?, viewer, last))
    }

    /// `GET /api/corporate-memory/my-votes`.
    pub fn my_votes(&self, viewer: &Viewer) -> Result<Vec<MyVote>, MemoryError> {
        let votes = self.state().memory_votes(viewer.id)?;
        Ok(knowledge::my_votes(&self.items(viewer)?, viewer, &votes))
    }

    fn visible_item(&self, viewer: &Viewer, id: &str) -> Result<MemoryItem, MemoryError> {
        self.state()
            .memory_item(viewer.id, id)?
            .filter(|i| knowledge::visible(i, viewer))
            .ok_or_else(|| MemoryError::NotFound(id.to_string()))
    }

    /// `POST /api/corporate-memory/vote`: the item as it now stands.
    pub fn vote(&self, viewer: &Viewer, id: &str, vote: i64) -> Result<KnowledgeItem, MemoryError> {
        if !(-1..=1).contains(&vote) {
            return Err(MemoryError::Invalid(format!(
                "vote must be -1, 0 or 1, not {vote}"
            )));
        }
        // Taking back a vote is always possible, even on an item since retired.
        let item = match self.state().memory_item(viewer.id, id)? {
            Some(i) if vote == 0 && i.my_vote != 0 => i,
            _ => self.visible_item(viewer, id)?,
        };
        if item.state != "published" && vote != 0 {
            return Err(MemoryError::Invalid(format!(
                "item {id} is {}; only published items take votes (0 still takes yours back)",
                item.state
            )));
        }
        self.state()
            .set_memory_vote(id, viewer.id, vote, now_ms())?;
        let item = self
            .state()
            .memory_item(viewer.id, id)?
            .ok_or_else(|| MemoryError::NotFound(id.to_string()))?;
        Ok(knowledge::view(&item, viewer))
    }

    /// An item's page: the item, its sources, and its history for admins and its authors.
    pub fn item(&self, viewer: &Viewer, id: &str) -> Result<ItemDetail, MemoryError> {
        let item = self.visible_item(viewer, id)?;
        let author = item.sources.iter().any(|s| s.account_id == viewer.id);
        let history = if viewer.admin || author {
            self.state()
                .memory_audit(Some(id), 50)?
                .into_iter()
                .map(HistoryEntry::from)
                .collect()
        } else {
            Vec::new()
        };
        let review = knowledge::review_queue(std::slice::from_ref(&item), viewer)
            .into_iter()
            .next();
        Ok(ItemDetail {
            item: knowledge::view(&item, viewer),
            sources: item
                .sources
                .iter()
                .filter(|s| s.clean() || s.account_id == viewer.id)
                .map(|s| SourceView {
                    user: s.username.clone(),
                    display_name: s.display_name.clone(),
                    first_seen_at: knowledge::rfc3339(s.first_seen_ms),
                    last_seen_at: knowledge::rfc3339(s.last_seen_ms),
                })
                .collect(),
            history,
            review,
        })
    }

    /// The caller's held items, for review.
    pub fn review_queue(&self, viewer: &Viewer) -> Result<Vec<Review>, MemoryError> {
        Ok(knowledge::review_queue(&self.items(viewer)?, viewer))
    }

    /// The author's decision on their held item: publish it despite the findings, or hold it
    /// again. Secrets, passwords and private lines cannot be published this way.
    pub fn review(
        &self,
        viewer: &Viewer,
        request_id: &str,
        id: &str,
        publish: bool,
    ) -> Result<ItemDetail, MemoryError> {
        let item = self.visible_item(viewer, id)?;
        let Some(mine) = item.sources.iter().find(|s| s.account_id == viewer.id) else {
            return Err(MemoryError::Forbidden(format!(
                "item {id} is not from your notes; only its authors review it"
            )));
        };
        if publish {
            let findings: Vec<StoredFinding> =
                serde_json::from_str(&mine.findings).unwrap_or_default();
            if let Some(why) = knowledge::release_blocker(&findings, mine.private) {
                return Err(MemoryError::Forbidden(format!(
                    "item {id} cannot be published: {why}"
                )));
            }
        }
        let by = MemoryActor {
            id: viewer.id,
            name: &viewer.name,
            request_id,
        };
        self.state()
            .release_memory_source(id, &by, publish, now_ms())?;
        self.item(viewer, id)
    }

    /// An admin's pin, unpin, retire, restore or edit; recorded in the item's history.
    pub fn moderate(
        &self,
        viewer: &Viewer,
        request_id: &str,
        id: &str,
        change: ModerationRequest,
    ) -> Result<ItemDetail, MemoryError> {
        if !viewer.admin {
            return Err(MemoryError::Forbidden(
                "moderating corporate memory needs an administrator (a member of data-ops)".into(),
            ));
        }
        let item = self.visible_item(viewer, id)?;
        let (change, detail) = match change {
            ModerationRequest::Pin(p) => (Moderation::Pin(p), String::new()),
            ModerationRequest::Retire(r) => (Moderation::Retire(r), String::new()),
            ModerationRequest::Edit(edit) => {
                let edit = validate_edit(edit)?;
                let mut changed = Vec::new();
                if edit.title != item.title {
                    changed.push("title");
                }
                if edit.content != item.content {
                    changed.push("content");
                }
                if edit.category != item.category {
                    changed.push("category");
                }
                if edit.tags != item.tags {
                    changed.push("tags");
                }
                let detail = if changed.is_empty() {
                    "no change".to_string()
                } else {
                    format!("changed {}", changed.join(", "))
                };
                (
                    Moderation::Edit {
                        title: edit.title,
                        content: edit.content,
                        category: edit.category,
                        tags: serde_json::to_string(&edit.tags).unwrap_or_else(|_| "[]".into()),
                    },
                    detail,
                )
            }
        };
        if item.state == "held" {
            return Err(MemoryError::NotFound(id.to_string()));
        }
        let by = MemoryActor {
            id: viewer.id,
            name: &viewer.name,
            request_id,
        };
        self.state()
            .moderate_memory_item(id, &by, &change, &detail, now_ms())?;
        tracing::info!(item = %id, admin = %viewer.name, action = change.action(), "memory: item moderated");
        self.item(viewer, id)
    }

    /// The caller's rule files: `GET /api/v1/sync/rules`.
    pub fn rules(&self, viewer: &Viewer) -> Result<Vec<RuleFile>, MemoryError> {
        Ok(knowledge::rule_files(&self.items(viewer)?))
    }

    /// The caller's notes and how the collector stands with them.
    pub fn my_notes(&self, viewer: &Viewer) -> Result<MyNotes, MemoryError> {
        let path = self
            .notes_path(&viewer.name)
            .ok_or_else(|| MemoryError::Forbidden("this user name cannot have notes".into()))?;
        let text = match std::fs::read(&path) {
            Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(MemoryError::io(&path, e)),
        };
        let status: Option<MemoryNotes> = self.state().memory_notes(viewer.id)?;
        let sha = text
            .as_ref()
            .map(|t| dataport_common::digest::sha256_hex(t.as_bytes()));
        Ok(MyNotes {
            bytes: text.as_ref().map_or(0, String::len),
            collected: sha.is_some() && status.as_ref().is_some_and(|s| s.collected_sha256 == sha),
            collected_at: status
                .as_ref()
                .and_then(|s| s.collected_ms)
                .map(knowledge::rfc3339),
            extractor: status.as_ref().and_then(|s| s.extractor.clone()),
            error: status.and_then(|s| s.error),
            text: text.unwrap_or_default(),
            sha256: sha,
        })
    }

    /// Replace the caller's notes (the portal's editor), atomically; what `dataport push`
    /// uploads goes to the same file.
    pub fn save_notes(&self, viewer: &Viewer, text: &str) -> Result<MyNotes, MemoryError> {
        if text.len() > self.inner.max_notes_bytes {
            return Err(MemoryError::Invalid(format!(
                "the notes are {} bytes; the limit is {} (memory.max_notes_size)",
                text.len(),
                self.inner.max_notes_bytes
            )));
        }
        let path = self
            .notes_path(&viewer.name)
            .ok_or_else(|| MemoryError::Forbidden("this user name cannot have notes".into()))?;
        dataport_common::fs::write_bytes_atomic(&path, text.as_bytes())?;
        tracing::info!(user = %viewer.name, bytes = text.len(), "memory: notes saved in the portal");
        self.my_notes(viewer)
    }

    /// Stored transcripts: the caller's, or (`everyone`, admins only) everyone's.
    pub fn transcripts(
        &self,
        viewer: &Viewer,
        everyone: bool,
    ) -> Result<Vec<TranscriptView>, MemoryError> {
        if everyone && !viewer.admin {
            return Err(MemoryError::Forbidden(
                "everyone's transcripts are for administrators; leave out all=true for yours"
                    .into(),
            ));
        }
        Ok(self
            .state()
            .memory_transcripts((!everyone).then_some(viewer.id))?
            .into_iter()
            .map(|t| TranscriptView {
                user: t.username,
                name: t.name,
                sha256: t.sha256,
                bytes: t.bytes,
                stored_at: knowledge::rfc3339(t.stored_ms),
            })
            .collect())
    }

    /// A stored transcript's content, for its owner or an admin.
    pub fn transcript(
        &self,
        viewer: &Viewer,
        user: &str,
        sha256: &str,
    ) -> Result<(String, Vec<u8>), MemoryError> {
        let not_found = || MemoryError::NotFound(format!("transcript {user}/{sha256}"));
        let owner = self.state().user(user)?.ok_or_else(not_found)?;
        if owner.id != viewer.id && !viewer.admin {
            return Err(not_found());
        }
        let record = self
            .state()
            .memory_transcripts(Some(owner.id))?
            .into_iter()
            .find(|t| t.sha256 == sha256)
            .ok_or_else(not_found)?;
        let path = self.transcript_path(owner.id, &record.sha256);
        let bytes = std::fs::read(&path).map_err(|e| MemoryError::io(&path, e))?;
        Ok((record.name, bytes))
    }
}

/// What an admin asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModerationRequest {
    Pin(bool),
    Retire(bool),
    Edit(ItemEdit),
}

impl ModerationRequest {
    /// The request an action names (`pin`, `unpin`, `retire`, `restore`, `edit`); `edit`
    /// gives the new values when the action is `edit`.
    pub fn parse(action: &str, edit: impl FnOnce() -> ItemEdit) -> Result<Self, MemoryError> {
        Ok(match action {
            "pin" => Self::Pin(true),
            "unpin" => Self::Pin(false),
            "retire" => Self::Retire(true),
            "restore" => Self::Retire(false),
            "edit" => Self::Edit(edit()),
            other => {
                return Err(MemoryError::Invalid(format!(
                    "unknown action '{other}'; use pin, unpin, retire, restore or edit"
                )));
            }
        })
    }
}

fn validate_edit(edit: ItemEdit) -> Result<ItemEdit, MemoryError> {
    let title = edit.title.trim().to_string();
    let content = edit.content.trim().to_string();
    if title.is_empty() || title.chars().count() > 200 {
        return Err(MemoryError::Invalid(
            "the title must have 1 to 200 characters".into(),
        ));
    }
    if content.is_empty() || content.chars().count() > 4000 {
        return Err(MemoryError::Invalid(
            "the content must have 1 to 4000 characters".into(),
        ));
    }
    let category = Category::parse(&edit.category).ok_or_else(|| {
        MemoryError::Invalid(format!(
            "unknown category '{}'; use one of {}",
            edit.category,
            crate::CATEGORIES.join(", ")
        ))
    })?;
    let mut tags: Vec<String> = Vec::new();
    for t in edit.tags {
        let t = t.trim().to_lowercase();
        if !t.is_empty() && t.chars().count() <= 40 && !tags.contains(&t) && tags.len() < 8 {
            tags.push(t);
        }
    }
    Ok(ItemEdit {
        title,
        content,
        category: category.as_str().to_string(),
        tags,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_llm_never_gets_private_or_flagged_lines() {
        let notes = "# Orders\n- status 7 means refunded\n- ask bob@corp.example about it\n\
                     - the key is AKIAIOSFODNN7EXAMPLE\n- keep this <!-- private -->\n\
                     ## Salaries (private)\n- the CEO earns a lot\n## Later\n- ana@corp.example wrote this";
        let sent = notes_for_llm(notes, &["ana@corp.example"]);
        assert!(sent.contains("status 7 means refunded"));
        assert!(sent.contains("ana@corp.example wrote this"));
        for secret in ["bob@corp", "AKIA", "keep this", "CEO", "Salaries"] {
            assert!(!sent.contains(secret), "{secret} leaked into {sent}");
        }
        assert_eq!(sent.matches("sensitive content was removed").count(), 2);
    }

    #[test]
    fn edits_are_checked() {
        let edit = |title: &str, category: &str| ItemEdit {
            title: title.into(),
            content: "c".into(),
            category: category.into(),
            tags: vec![" A ".into(), "a".into(), "b".into()],
        };
        assert!(validate_edit(edit("", "workflow")).is_err());
        assert!(validate_edit(edit("t", "gossip")).is_err());
        let ok = validate_edit(edit(" t ", "Workflow")).unwrap();
        assert_eq!((ok.title.as_str(), ok.category.as_str()), ("t", "workflow"));
        assert_eq!(ok.tags, ["a", "b"]);
    }

    #[test]
    fn summaries_read_as_sentences() {
        let s = CollectSummary {
            accounts: 3,
            changed: 2,
            failed: 1,
            new_items: 5,
            held: 1,
            retired: 0,
            error: None,
        };
        assert_eq!(
            s.line(),
            "3 accounts with notes, 2 changed, 5 new items, 1 held for review, 0 retired, 1 failed (previous items kept)"
        );
    }
}
