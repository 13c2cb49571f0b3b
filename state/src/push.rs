//! Push sources' durable state: the queue of accepted deliveries (a webhook's body is a file;
//! its row here says whether it was processed) and, per item a source writes (a Jira issue),
//! what was last written, or that it was deleted, or parked after failing.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use crate::{Result, StateStore};

/// A delivery to record: the caller has already written its body to `raw_path`.
#[derive(Debug, Clone)]
pub struct NewPushEvent<'a> {
    pub source: &'a str,
    /// The sender's delivery id (Jira's `X-Atlassian-Webhook-Identifier`); a retry repeats it.
    pub delivery: &'a str,
    pub received_ms: i64,
    /// The event's name (`jira:issue_updated`).
    pub event: &'a str,
    /// The items it touches (issue keys or ids).
    pub items: &'a [String],
    /// The stored body, relative to the data dir.
    pub raw_path: &'a str,
}

/// What [`StateStore::enqueue_push_event`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued under this id.
    New(i64),
    /// The delivery was seen before (id and its state); nothing changed.
    Duplicate { id: i64, state: String },
}

/// A queued or processed delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushEvent {
    pub id: i64,
    pub source: String,
    pub delivery: String,
    pub received_ms: i64,
    pub event: String,
    pub items: Vec<String>,
    pub raw_path: String,
    /// `queued`, `done`, `ignored` or `failed`.
    pub state: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub error: Option<String>,
}

/// The queue of a source at a glance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PushQueue {
    /// Deliveries waiting (including those waiting for a retry).
    pub queued: u64,
    /// Deliveries given up on (their items are parked).
    pub failed: u64,
    /// The last delivery received (Unix ms).
    pub last_received_ms: Option<i64>,
    /// The last delivery processed (Unix ms).
    pub last_done_ms: Option<i64>,
}

/// What was last written for one item of a push source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PushItem {
    pub source: String,
    /// The item's key (`SUP-123`).
    pub item: String,
    /// The source's own id for it (`10001`).
    pub item_id: Option<String>,
    /// The partition its rows live in (`2024-03`).
    pub partition: Option<String>,
    /// The source's version of what was written (Jira's `updated`).
    pub version: Option<String>,
    /// Still open (the SLA poll refreshes open items).
    pub open: bool,
    pub synced_ms: Option<i64>,
    /// Deleted at the source: its rows are gone.
    pub deleted_ms: Option<i64>,
    /// Given up on after repeated failures, until a later attempt succeeds.
    pub parked_ms: Option<i64>,
    pub failures: u32,
    pub error: Option<String>,
}

const EVENT_COLUMNS: &str = "id, source, delivery, received_ms, event, items, raw_path, state, attempts, next_attempt_ms, error";

fn push_event(row: &Row<'_>) -> rusqlite::Result<PushEvent> {
    let items: String = row.get(5)?;
    Ok(PushEvent {
        id: row.get(0)?,
        source: row.get(1)?,
        delivery: row.get(2)?,
        received_ms: row.get(3)?,
        event: row.get(4)?,
        items: serde_json::from_str(&items).unwrap_or_default(),
        raw_path: row.get(6)?,
        state: row.get(7)?,
        attempts: row.get(8)?,
        next_attempt_ms: row.get(9)?,
        error: row.get(10)?,
    })
}

const ITEM_COLUMNS: &str = "source, item, item_id, partition, version, open, synced_ms, \
     deleted_ms, parked_ms, failures, error";

fn push_item(row: &Row<'_>) -> rusqlite::Result<PushItem> {
    Ok(PushItem {
        source: row.get(0)?,
        item: row.get(1)?,
        item_id: row.get(2)?,
        partition: row.get(3)?,
        version: row.get(4)?,
        open: row.get::<_, i64>(5)? != 0,
        synced_ms: row.get(6)?,
        deleted_ms: row.get(7)?,
        parked_ms: row.get(8)?,
        failures: row.get(9)?,
        error: row.get(10)?,
    })
}

impl StateStore {
    /// Queue a delivery, unless the same delivery id of the source is already known.
    pub fn enqueue_push_event(&self, e: &NewPushEvent<'_>) -> Result<Enqueued> {
        let conn = self.lock();
        let items = serde_json::to_string(e.items).unwrap_or_else(|_| "[]".into());
        let inserted = conn.execute(
            "INSERT INTO push_events (source, delivery, received_ms, event, items, raw_path) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (source, delivery) DO NOTHING",
            params![
                e.source,
                e.delivery,
                e.received_ms,
                e.event,
                items,
                e.raw_path
            ],
        )?;
        if inserted == 1 {
            return Ok(Enqueued::New(conn.last_insert_rowid()));
        }
        let (id, state) = conn.query_row(
            "SELECT id, state FROM push_events WHERE source = ?1 AND delivery = ?2",
            [e.source, e.delivery],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Enqueued::Duplicate { id, state })
    }

    /// Queued deliveries of `source` due at `now_ms`, oldest first.
    pub fn due_push_events(
        &self,
        source: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<PushEvent>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM push_events \
             WHERE source = ?1 AND state = 'queued' AND next_attempt_ms <= ?2 \
             ORDER BY id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![source, now_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
            push_event,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the next queued delivery of `source` other than those in `busy` (being
    /// processed) is due (Unix ms), if any is queued.
    pub fn next_push_due(&self, source: &str, busy: &[i64]) -> Result<Option<i64>> {
        let conn = self.lock();
        let busy = serde_json::to_string(busy).unwrap_or_else(|_| "[]".into());
        Ok(conn.query_row(
            "SELECT min(next_attempt_ms) FROM push_events WHERE source = ?1 AND state = 'queued' \
             AND id NOT IN (SELECT value FROM json_each(?2))",
            params![source, busy],
            |r| r.get(0),
        )?)
    }

    /// Items of `source` with rows (written and not deleted).
    pub fn push_item_count(&self, source: &str) -> Result<u64> {
        let conn = self.lock();
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM push_items \
             WHERE source = ?1 AND partition IS NOT NULL AND deleted_ms IS NULL",
            [source],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// A delivery, by id.
    pub fn push_event(&self, id: i64) -> Result<Option<PushEvent>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {EVENT_COLUMNS} FROM push_events WHERE id = ?1"),
                [id],
                push_event,
            )
            .optional()?)
    }

    /// The newest deliveries of `source`, newest first.
    pub fn recent_push_events(&self, source: &str, limit: usize) -> Result<Vec<PushEvent>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM push_events WHERE source = ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(
            params![source, i64::try_from(limit).unwrap_or(i64::MAX)],
            push_event,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A delivery was processed: `state` is `done` or `ignored`.
    pub fn finish_push_event(&self, id: i64, state: &str, now_ms: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE push_events SET state = ?2, done_ms = ?3, attempts = attempts + 1, \
             error = NULL WHERE id = ?1",
            params![id, state, now_ms],
        )?;
        Ok(())
    }

    /// A delivery failed; it is tried again at `next_attempt_ms`, or, with `None`, given up
    /// on (`failed`). Returns the attempts so far.
    pub fn retry_push_event(
        &self,
        id: i64,
        error: &str,
        next_attempt_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<u32> {
        let conn = self.lock();
        match next_attempt_ms {
            Some(at) => conn.execute(
                "UPDATE push_events SET attempts = attempts + 1, error = ?2, \
                 next_attempt_ms = ?3 WHERE id = ?1",
                params![id, error, at],
            )?,
            None => conn.execute(
                "UPDATE push_events SET attempts = attempts + 1, error = ?2, state = 'failed', \
                 done_ms = ?3 WHERE id = ?1",
                params![id, error, now_ms],
            )?,
        };
        Ok(conn.query_row(
            "SELECT attempts FROM push_events WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?)
    }

    /// The queue of `source` at a glance.
    pub fn push_queue(&self, source: &str) -> Result<PushQueue> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT coalesce(sum(state = 'queued'), 0), coalesce(sum(state = 'failed'), 0), \
                    max(received_ms), max(done_ms) \
             FROM push_events WHERE source = ?1",
            [source],
            |r| {
                Ok(PushQueue {
                    queued: r.get::<_, i64>(0)?.max(0) as u64,
                    failed: r.get::<_, i64>(1)?.max(0) as u64,
                    last_received_ms: r.get(2)?,
                    last_done_ms: r.get(3)?,
                })
            },
        )?)
    }

    /// Processed (or failed) deliveries of `source` received before `before_ms`: their raw
    /// bodies may go. Returns `(id, raw_path)`.
    pub fn expired_push_events(
        &self,
        source: &str,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, raw_path FROM push_events \
             WHERE source = ?1 AND state <> 'queued' AND received_ms < ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(
            params![source, before_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forget a delivery (after its raw body was removed).
    pub fn delete_push_event(&self, id: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute("DELETE FROM push_events WHERE id = ?1", [id])?;
        Ok(())
    }

    /// What was last written for an item.
    pub fn push_item(&self, source: &str, item: &str) -> Result<Option<PushItem>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {ITEM_COLUMNS} FROM push_items WHERE source = ?1 AND item = ?2"),
                [source, item],
                push_item,
            )
            .optional()?)
    }

    /// The item whose source id is `item_id`.
    pub fn push_item_by_id(&self, source: &str, item_id: &str) -> Result<Option<PushItem>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {ITEM_COLUMNS} FROM push_items WHERE source = ?1 AND item_id = ?2"
                ),
                [source, item_id],
                push_item,
            )
            .optional()?)
    }

    /// The item was written: its partition, version and openness; clears deletion, parking
    /// and failures.
    pub fn record_push_item(&self, r: &PushItem) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO push_items (source, item, item_id, partition, version, open, synced_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (source, item) DO UPDATE SET item_id = excluded.item_id, \
               partition = excluded.partition, version = excluded.version, open = excluded.open, \
               synced_ms = excluded.synced_ms, deleted_ms = NULL, parked_ms = NULL, \
               failures = 0, error = NULL",
            params![
                r.source,
                r.item,
                r.item_id,
                r.partition,
                r.version,
                i64::from(r.open),
                r.synced_ms
            ],
        )?;
        Ok(())
    }

    /// The item is gone at the source; its rows were removed.
    pub fn delete_push_item(&self, source: &str, item: &str, now_ms: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO push_items (source, item, deleted_ms, synced_ms) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (source, item) DO UPDATE SET deleted_ms = excluded.deleted_ms, \
               synced_ms = excluded.synced_ms, open = 0, partition = NULL, parked_ms = NULL, \
               failures = 0, error = NULL",
            params![source, item, now_ms],
        )?;
        Ok(())
    }

    /// Give up on an item for now: its error is shown until a later attempt succeeds.
    pub fn park_push_item(&self, source: &str, item: &str, error: &str, now_ms: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO push_items (source, item, parked_ms, failures, error) \
             VALUES (?1, ?2, ?3, 1, ?4) \
             ON CONFLICT (source, item) DO UPDATE SET parked_ms = coalesce(parked_ms, ?3), \
               failures = failures + 1, error = excluded.error",
            params![source, item, now_ms, error],
        )?;
        Ok(())
    }

    /// Items of `source` that are parked.
    pub fn parked_push_items(&self, source: &str) -> Result<Vec<PushItem>> {
        self.push_items_where(source, "parked_ms IS NOT NULL ORDER BY parked_ms, item")
    }

    /// Open, not deleted items of `source`.
    pub fn open_push_items(&self, source: &str) -> Result<Vec<PushItem>> {
        self.push_items_where(source, "open = 1 AND deleted_ms IS NULL ORDER BY item")
    }

    /// Every item of `source` that has rows (written and not deleted).
    pub fn live_push_items(&self, source: &str) -> Result<Vec<PushItem>> {
        self.push_items_where(
            source,
            "partition IS NOT NULL AND deleted_ms IS NULL ORDER BY item",
        )
    }

    fn push_items_where(&self, source: &str, condition: &str) -> Result<Vec<PushItem>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {ITEM_COLUMNS} FROM push_items WHERE source = ?1 AND {condition}"
        ))?;
        let rows = stmt.query_map([source], push_item)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
