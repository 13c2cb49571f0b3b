//! Corporate memory's durable state: which version of each account's notes was collected (and
//! why the last attempt failed), the knowledge items with the accounts whose notes they came
//! from (and what the sensitive-content screen found there), votes, admins' moderation, the
//! collector's runs, and the session transcripts stored centrally.
//!
//! An item's `state` is derived here, in one place ([`STATE_SQL`]), whenever its sources or
//! moderation change: `retired` when an admin retired it or no notes hold it any more,
//! `published` when at least one source is clean (or its author released it), else `held`.
//! Who may see what is the memory crate's rule, not this one's.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Row, params, params_from_iter};
use serde::Serialize;

use crate::{Result, StateStore};

/// Where an account's notes stand with the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryNotes {
    pub account_id: i64,
    /// The SHA-256 of the notes items were last extracted from.
    pub collected_sha256: Option<String>,
    pub collected_ms: Option<i64>,
    /// `offline` or `llm:<model>`.
    pub extractor: Option<String>,
    pub attempted_ms: Option<i64>,
    /// Why the last attempt failed (the previous items were kept); None after a success.
    pub error: Option<String>,
}

/// One item as one account's notes gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedItem {
    pub id: String,
    pub title: String,
    pub content: String,
    pub category: String,
    /// JSON array of strings.
    pub tags: String,
    /// JSON array of the screen's findings; not `[]` holds the item for this source.
    pub findings: String,
    /// The author marked the lines private.
    pub private: bool,
}

/// What applying one account's extraction changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemoryApplied {
    /// Items no account had before.
    pub new: usize,
    /// Items this account now holds (new to it or not).
    pub items: usize,
    /// Of those, how many are held for this account's review.
    pub held: usize,
    /// Items that lost their last source with this extraction.
    pub retired: usize,
}

/// A source of an item: an account whose notes hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemorySource {
    pub account_id: i64,
    pub username: String,
    pub display_name: String,
    /// JSON array of the screen's findings in this account's version.
    pub findings: String,
    pub private: bool,
    /// The author reviewed the findings and published the item anyway.
    pub released: bool,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

impl MemorySource {
    /// Whether this source lets the item be published.
    pub fn clean(&self) -> bool {
        self.released || (!self.private && self.findings == "[]")
    }
}

/// An item with its votes (and one viewer's) and sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryItem {
    pub id: String,
    pub title: String,
    pub content: String,
    pub category: String,
    pub tags: Vec<String>,
    /// `published`, `held` or `retired`.
    pub state: String,
    pub pinned: bool,
    pub extracted_ms: i64,
    pub updated_ms: i64,
    pub edited_by: Option<i64>,
    pub edited_ms: Option<i64>,
    pub retired_by: Option<i64>,
    pub retired_ms: Option<i64>,
    pub upvotes: i64,
    pub downvotes: i64,
    /// The viewer's vote: -1, 0 or 1.
    pub my_vote: i64,
    pub sources: Vec<MemorySource>,
}

/// An admin's change to an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moderation {
    Pin(bool),
    /// Retire (true) or restore (false).
    Retire(bool),
    Edit {
        title: String,
        content: String,
        category: String,
        tags: String,
    },
}

/// Who changed an item by hand, for the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryActor<'a> {
    pub id: i64,
    pub name: &'a str,
    pub request_id: &'a str,
}

/// A recorded change by hand: an admin's moderation or an author's review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryAudit {
    pub item_id: String,
    pub actor_id: Option<i64>,
    pub actor: String,
    /// `pin`, `unpin`, `retire`, `restore`, `edit`, `release`, `hold`.
    pub action: String,
    pub detail: String,
    pub request_id: String,
    pub at_ms: i64,
}

fn audit(
    conn: &rusqlite::Connection,
    id: &str,
    by: &MemoryActor<'_>,
    action: &str,
    detail: &str,
    now: i64,
) -> Result<()> {
    conn.execute(
        "INSERT INTO memory_moderation (item_id, actor_id, actor, action, detail, request_id, \
         at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, by.id, by.name, action, detail, by.request_id, now],
    )?;
    Ok(())
}

impl Moderation {
    /// The audit's name of the change.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Pin(true) => "pin",
            Self::Pin(false) => "unpin",
            Self::Retire(true) => "retire",
            Self::Retire(false) => "restore",
            Self::Edit { .. } => "edit",
        }
    }
}

/// One run of the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryCollection {
    pub started_ms: i64,
    pub finished_ms: i64,
    /// Accounts with notes.
    pub accounts: i64,
    /// Accounts whose changed notes were extracted.
    pub changed: i64,
    /// Accounts whose extraction failed (their previous items kept).
    pub failed: i64,
    pub extractor: String,
}

/// A vote of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryVote {
    pub item_id: String,
    pub vote: i64,
    pub voted_ms: i64,
}

/// A session transcript stored centrally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryTranscript {
    pub account_id: i64,
    pub username: String,
    pub sha256: String,
    pub name: String,
    pub bytes: u64,
    pub stored_ms: i64,
}

/// Recomputes the state of the items whose ids are bound as `?2…`; `?1` is now.
const STATE_SQL: &str = "UPDATE memory_items SET state = n.state, \
     updated_ms = CASE WHEN n.state = memory_items.state THEN memory_items.updated_ms ELSE ?1 END \
     FROM (SELECT i.id, CASE \
         WHEN i.retired_ms IS NOT NULL THEN 'retired' \
         WHEN NOT EXISTS (SELECT 1 FROM memory_sources s WHERE s.item_id = i.id) THEN 'retired' \
         WHEN EXISTS (SELECT 1 FROM memory_sources s WHERE s.item_id = i.id \
             AND (s.released = 1 OR (s.private = 0 AND s.findings = '[]'))) THEN 'published' \
         ELSE 'held' END AS state \
         FROM memory_items i WHERE i.id IN (SELECT value FROM json_each(?2))) AS n \
     WHERE memory_items.id = n.id";

fn refresh_states(conn: &rusqlite::Connection, ids: &[String], now: i64) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
    conn.execute(STATE_SQL, params![now, list])?;
    Ok(())
}

const ITEM_COLUMNS: &str = "i.id, i.title, i.content, i.category, i.tags, i.state, i.pinned, \
     i.extracted_ms, i.updated_ms, i.edited_by, i.edited_ms, i.retired_by, i.retired_ms, \
     (SELECT count(*) FROM memory_votes v WHERE v.item_id = i.id AND v.vote = 1), \
     (SELECT count(*) FROM memory_votes v WHERE v.item_id = i.id AND v.vote = -1), \
     COALESCE((SELECT v.vote FROM memory_votes v WHERE v.item_id = i.id AND v.account_id = ?1), 0)";

fn item(row: &Row<'_>) -> rusqlite::Result<MemoryItem> {
    let tags: String = row.get(4)?;
    Ok(MemoryItem {
        id: row.get(0)?,
        title: row.get(1)?,
        content: row.get(2)?,
        category: row.get(3)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        state: row.get(5)?,
        pinned: row.get(6)?,
        extracted_ms: row.get(7)?,
        updated_ms: row.get(8)?,
        edited_by: row.get(9)?,
        edited_ms: row.get(10)?,
        retired_by: row.get(11)?,
        retired_ms: row.get(12)?,
        upvotes: row.get(13)?,
        downvotes: row.get(14)?,
        my_vote: row.get(15)?,
        sources: Vec::new(),
    })
}

fn source(row: &Row<'_>) -> rusqlite::Result<(String, MemorySource)> {
    Ok((
        row.get(0)?,
        MemorySource {
            account_id: row.get(1)?,
            username: row.get(2)?,
            display_name: row.get(3)?,
            findings: row.get(4)?,
            private: row.get(5)?,
            released: row.get(6)?,
            first_seen_ms: row.get(7)?,
            last_seen_ms: row.get(8)?,
        },
    ))
}

const SOURCE_SELECT: &str = "SELECT s.item_id, s.account_id, a.username, a.display_name, \
     s.findings, s.private, s.released, s.first_seen_ms, s.last_seen_ms \
     FROM memory_sources s JOIN accounts a ON a.id = s.account_id";

impl StateStore {
    /// Where `account`'s notes stand with the collector.
    pub fn memory_notes(&self, account: i64) -> Result<Option<MemoryNotes>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT account_id, collected_sha256, collected_ms, extractor, attempted_ms, \
                 error FROM memory_notes WHERE account_id = ?1",
                [account],
                |r| {
                    Ok(MemoryNotes {
                        account_id: r.get(0)?,
                        collected_sha256: r.get(1)?,
                        collected_ms: r.get(2)?,
                        extractor: r.get(3)?,
                        attempted_ms: r.get(4)?,
                        error: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// An extraction of `account`'s notes failed: the reason is kept, the items are not
    /// touched, and the same notes are tried again at the next run.
    pub fn fail_memory_notes(&self, account: i64, error: &str, now: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO memory_notes (account_id, attempted_ms, error) VALUES (?1, ?2, ?3) \
             ON CONFLICT (account_id) DO UPDATE SET attempted_ms = ?2, error = ?3",
            params![account, now, error],
        )?;
        Ok(())
    }

    /// Replace what `account`'s notes (of hash `sha256`) contribute with `items`, in one
    /// transaction: new items are added, sources updated, this account's sources of items no
    /// longer in its notes removed (an item left with no source is retired, its votes kept).
    pub fn apply_memory_extraction(
        &self,
        account: i64,
        sha256: &str,
        extractor: &str,
        items: &[ExtractedItem],
        now: i64,
    ) -> Result<MemoryApplied> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut applied = MemoryApplied::default();
        let before: Vec<String> = {
            let mut stmt =
                tx.prepare("SELECT item_id FROM memory_sources WHERE account_id = ?1")?;
            let rows = stmt.query_map([account], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut touched: Vec<String> = before.clone();
        for it in items {
            let inserted = tx.execute(
                "INSERT INTO memory_items (id, title, content, category, tags, extracted_ms, \
                 updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT (id) DO NOTHING",
                params![it.id, it.title, it.content, it.category, it.tags, now],
            )?;
            applied.new += inserted;
            // The extractor's category and tags follow the latest notes, unless an admin
            // edited the item.
            tx.execute(
                "UPDATE memory_items SET category = ?2, tags = ?3, updated_ms = ?4 \
                 WHERE id = ?1 AND edited_by IS NULL AND edited_ms IS NULL \
                 AND (category IS NOT ?2 OR tags IS NOT ?3)",
                params![it.id, it.category, it.tags, now],
            )?;
            let new_source = tx.execute(
                "INSERT INTO memory_sources (item_id, account_id, findings, private, \
                 first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
                 ON CONFLICT (item_id, account_id) DO UPDATE SET \
                 released = CASE WHEN findings IS excluded.findings \
                     AND private = excluded.private THEN released ELSE 0 END, \
                 findings = excluded.findings, private = excluded.private, \
                 last_seen_ms = excluded.last_seen_ms",
                params![it.id, account, it.findings, it.private, now],
            )?;
            if new_source == 1 && inserted == 0 && !before.contains(&it.id) {
                // A new contributor: the item changed for its readers.
                tx.execute(
                    "UPDATE memory_items SET updated_ms = ?2 WHERE id = ?1",
                    params![it.id, now],
                )?;
            }
            applied.items += 1;
            if it.private || it.findings != "[]" {
                applied.held += 1;
            }
            touched.push(it.id.clone());
        }
        let keep = serde_json::to_string(&items.iter().map(|i| &i.id).collect::<Vec<_>>())
            .unwrap_or_else(|_| "[]".into());
        tx.execute(
            "DELETE FROM memory_sources WHERE account_id = ?1 \
             AND item_id NOT IN (SELECT value FROM json_each(?2))",
            params![account, keep],
        )?;
        touched.sort();
        touched.dedup();
        let retired_before: i64 = count_retired(&tx, &touched)?;
        refresh_states(&tx, &touched, now)?;
        let retired_after: i64 = count_retired(&tx, &touched)?;
        applied.retired = usize::try_from(retired_after - retired_before).unwrap_or(0);
        tx.execute(
            "INSERT INTO memory_notes (account_id, collected_sha256, collected_ms, extractor, \
             attempted_ms, error) VALUES (?1, ?2, ?3, ?4, ?3, NULL) \
             ON CONFLICT (account_id) DO UPDATE SET collected_sha256 = ?2, collected_ms = ?3, \
             extractor = ?4, attempted_ms = ?3, error = NULL",
            params![account, sha256, now, extractor],
        )?;
        tx.commit()?;
        Ok(applied)
    }

    /// Recompute every item's state (accounts deleted since take their sources with them);
    /// how many items changed state.
    pub fn refresh_memory_states(&self, now: i64) -> Result<usize> {
        let conn = self.lock();
        let ids: Vec<String> = {
            let mut stmt = conn.prepare("SELECT id FROM memory_items")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let before: i64 = conn.query_row("SELECT total_changes()", [], |r| r.get(0))?;
        let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
        conn.execute(
            &format!("{STATE_SQL} AND memory_items.state IS NOT n.state"),
            params![now, list],
        )?;
        let after: i64 = conn.query_row("SELECT total_changes()", [], |r| r.get(0))?;
        Ok(usize::try_from(after - before).unwrap_or(0))
    }

    /// Every item (any state) with its votes, `viewer`'s vote and its sources; the memory
    /// crate decides what the viewer may see.
    pub fn memory_items(&self, viewer: i64) -> Result<Vec<MemoryItem>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {ITEM_COLUMNS} FROM memory_items i ORDER BY i.id"
        ))?;
        let mut items: Vec<MemoryItem> = stmt
            .query_map([viewer], item)?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = conn.prepare(&format!("{SOURCE_SELECT} ORDER BY s.first_seen_ms, a.id"))?;
        let mut by_item: HashMap<String, Vec<MemorySource>> = HashMap::new();
        for row in stmt.query_map([], source)? {
            let (id, s) = row?;
            by_item.entry(id).or_default().push(s);
        }
        for it in &mut items {
            it.sources = by_item.remove(&it.id).unwrap_or_default();
        }
        Ok(items)
    }

    /// One item (any state) as [`memory_items`](Self::memory_items) gives it.
    pub fn memory_item(&self, viewer: i64, id: &str) -> Result<Option<MemoryItem>> {
        let conn = self.lock();
        let Some(mut it) = conn
            .query_row(
                &format!("SELECT {ITEM_COLUMNS} FROM memory_items i WHERE i.id = ?2"),
                params![viewer, id],
                item,
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = conn.prepare(&format!(
            "{SOURCE_SELECT} WHERE s.item_id = ?1 ORDER BY s.first_seen_ms, a.id"
        ))?;
        it.sources = stmt
            .query_map([id], source)?
            .map(|r| r.map(|(_, s)| s))
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(it))
    }

    /// `account`'s vote on `item`: -1 or 1, or 0 to take it back. False when the item does
    /// not exist.
    pub fn set_memory_vote(
        &self,
        item_id: &str,
        account: i64,
        vote: i64,
        now: i64,
    ) -> Result<bool> {
        let conn = self.lock();
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM memory_items WHERE id = ?1)",
            [item_id],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(false);
        }
        if vote == 0 {
            conn.execute(
                "DELETE FROM memory_votes WHERE item_id = ?1 AND account_id = ?2",
                params![item_id, account],
            )?;
        } else {
            conn.execute(
                "INSERT INTO memory_votes (item_id, account_id, vote, voted_ms) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (item_id, account_id) DO UPDATE SET \
                 vote = excluded.vote, voted_ms = CASE WHEN vote = excluded.vote \
                 THEN voted_ms ELSE excluded.voted_ms END",
                params![item_id, account, vote.signum(), now],
            )?;
        }
        Ok(true)
    }

    /// `account`'s votes, latest first.
    pub fn memory_votes(&self, account: i64) -> Result<Vec<MemoryVote>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT item_id, vote, voted_ms FROM memory_votes WHERE account_id = ?1 \
             ORDER BY voted_ms DESC, item_id",
        )?;
        let rows = stmt.query_map([account], |r| {
            Ok(MemoryVote {
                item_id: r.get(0)?,
                vote: r.get(1)?,
                voted_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// An admin's change to an item; false when there is no such item.
    /// The change and its audit entry are one transaction.
    pub fn moderate_memory_item(
        &self,
        id: &str,
        by: &MemoryActor<'_>,
        change: &Moderation,
        detail: &str,
        now: i64,
    ) -> Result<bool> {
        let admin = by.id;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = match change {
            Moderation::Pin(pinned) => tx.execute(
                "UPDATE memory_items SET pinned = ?2, updated_ms = ?3 WHERE id = ?1",
                params![id, pinned, now],
            )?,
            Moderation::Retire(true) => tx.execute(
                "UPDATE memory_items SET retired_by = ?2, retired_ms = ?3 WHERE id = ?1",
                params![id, admin, now],
            )?,
            Moderation::Retire(false) => tx.execute(
                "UPDATE memory_items SET retired_by = NULL, retired_ms = NULL WHERE id = ?1",
                params![id],
            )?,
            Moderation::Edit {
                title,
                content,
                category,
                tags,
            } => tx.execute(
                "UPDATE memory_items SET title = ?2, content = ?3, category = ?4, tags = ?5, \
                 edited_by = ?6, edited_ms = ?7, updated_ms = ?7 WHERE id = ?1",
                params![id, title, content, category, tags, admin, now],
            )?,
        };
        if n == 1 {
            refresh_states(&tx, &[id.to_string()], now)?;
            audit(&tx, id, by, change.action(), detail, now)?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// The audit of `item` (every item's with `None`), latest first.
    pub fn memory_audit(&self, item: Option<&str>, n: usize) -> Result<Vec<MemoryAudit>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT item_id, actor_id, actor, action, detail, request_id, at_ms \
             FROM memory_moderation WHERE ?1 IS NULL OR item_id = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![item, i64::try_from(n).unwrap_or(i64::MAX)], |r| {
            Ok(MemoryAudit {
                item_id: r.get(0)?,
                actor_id: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                detail: r.get(4)?,
                request_id: r.get(5)?,
                at_ms: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The author's review: publish (`true`) or hold again (`false`) `account`'s version of
    /// an item. False when the account is not one of its sources.
    pub fn release_memory_source(
        &self,
        id: &str,
        by: &MemoryActor<'_>,
        released: bool,
        now: i64,
    ) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE memory_sources SET released = ?3 WHERE item_id = ?1 AND account_id = ?2",
            params![id, by.id, released],
        )?;
        if n == 1 {
            refresh_states(&tx, &[id.to_string()], now)?;
            let action = if released { "release" } else { "hold" };
            audit(&tx, id, by, action, "", now)?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// Record a run of the collector (the last 100 are kept).
    pub fn record_memory_collection(&self, c: &MemoryCollection) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO memory_collections (started_ms, finished_ms, accounts, changed, failed, \
             extractor) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                c.started_ms,
                c.finished_ms,
                c.accounts,
                c.changed,
                c.failed,
                c.extractor
            ],
        )?;
        conn.execute(
            "DELETE FROM memory_collections WHERE id <= (SELECT max(id) - 100 FROM memory_collections)",
            [],
        )?;
        Ok(())
    }

    /// The collector's last run.
    pub fn last_memory_collection(&self) -> Result<Option<MemoryCollection>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT started_ms, finished_ms, accounts, changed, failed, extractor \
                 FROM memory_collections ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(MemoryCollection {
                        started_ms: r.get(0)?,
                        finished_ms: r.get(1)?,
                        accounts: r.get(2)?,
                        changed: r.get(3)?,
                        failed: r.get(4)?,
                        extractor: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Record a stored transcript; false when this account already had this content.
    pub fn put_memory_transcript(
        &self,
        account: i64,
        sha256: &str,
        name: &str,
        bytes: u64,
        now: i64,
    ) -> Result<bool> {
        let conn = self.lock();
        let n = conn.execute(
            "INSERT INTO memory_transcripts (account_id, sha256, name, bytes, stored_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (account_id, sha256) DO NOTHING",
            params![
                account,
                sha256,
                name,
                i64::try_from(bytes).unwrap_or(i64::MAX),
                now
            ],
        )?;
        Ok(n == 1)
    }

    /// Stored transcripts, latest first: of `account`, or everyone's with `None`.
    pub fn memory_transcripts(&self, account: Option<i64>) -> Result<Vec<MemoryTranscript>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT t.account_id, a.username, t.sha256, t.name, t.bytes, t.stored_ms \
             FROM memory_transcripts t JOIN accounts a ON a.id = t.account_id \
             WHERE ?1 IS NULL OR t.account_id = ?1 ORDER BY t.stored_ms DESC, t.name",
        )?;
        let rows = stmt.query_map(params_from_iter([account]), |r| {
            Ok(MemoryTranscript {
                account_id: r.get(0)?,
                username: r.get(1)?,
                sha256: r.get(2)?,
                name: r.get(3)?,
                bytes: r.get::<_, i64>(4)?.max(0) as u64,
                stored_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn count_retired(conn: &rusqlite::Connection, ids: &[String]) -> Result<i64> {
    let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
    Ok(conn.query_row(
        "SELECT count(*) FROM memory_items WHERE state = 'retired' \
         AND id IN (SELECT value FROM json_each(?1))",
        [list],
        |r| r.get(0),
    )?)
}
