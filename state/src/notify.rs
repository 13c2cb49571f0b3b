//! Notifications' durable state: analysts' alert scripts (which content is current), the run
//! history, each script's cooldown, the notifications sent, Telegram chats linked to accounts
//! (and the one-time codes that link them) and the desktop app's tokens.

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use crate::{Result, StateStore};

/// The current version of an account's script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotifyScript {
    pub account_id: i64,
    /// The file name (`revenue_drop.py`).
    pub name: String,
    /// SHA-256 of the content: the version, and the name of the stored file.
    pub sha256: String,
    pub bytes: u64,
    /// `python` (run with the configured interpreter) or `executable` (its shebang).
    pub kind: String,
    /// Its own schedule (`every 1h`), if it names one.
    pub schedule: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A run starting.
#[derive(Debug, Clone)]
pub struct NewNotifyRun<'a> {
    pub account_id: i64,
    pub script: &'a str,
    pub sha256: &'a str,
    /// What started it: `schedule`, `manual`, `test`, `telegram`, `desktop`.
    pub trigger: &'a str,
    pub started_ms: i64,
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct NotifyRunEnd {
    pub duration_ms: i64,
    pub exit_code: Option<i32>,
    /// `sent`, `quiet` (nothing to say), `cooldown`, `tested`, `failed`, `delivery_failed`.
    pub outcome: String,
    pub reason: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub notification: Option<String>,
    /// Where it was delivered, as JSON (`[{"channel":"telegram","ok":true}, …]`).
    pub deliveries: String,
}

impl NotifyRunEnd {
    /// A run that failed before the script could report, for `reason`.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self {
            outcome: "failed".into(),
            reason: Some(reason.into()),
            deliveries: "[]".into(),
            ..Default::default()
        }
    }
}

/// A recorded run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotifyRun {
    pub id: i64,
    pub account_id: i64,
    pub script: String,
    pub sha256: String,
    pub trigger: String,
    pub started_ms: i64,
    pub duration_ms: i64,
    pub exit_code: Option<i32>,
    /// `running` until it ends; `interrupted` when the server stopped during it.
    pub outcome: String,
    pub reason: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub notification: Option<String>,
    pub deliveries: serde_json::Value,
}

/// A notification as stored for its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredNotification {
    /// A UUID.
    pub id: String,
    pub account_id: i64,
    pub script: String,
    pub run_id: Option<i64>,
    pub title: String,
    pub message: String,
    /// The stored image's file name, if it has one.
    pub image: Option<String>,
    /// The script's `data`, as JSON text.
    pub data: String,
    pub created_ms: i64,
}

/// An account's Telegram chat, or why it was unlinked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TelegramLink {
    pub account_id: i64,
    /// None once unlinked.
    pub chat_id: Option<i64>,
    /// The chat's name as Telegram gave it (`@ana`).
    pub chat_name: String,
    pub linked_ms: Option<i64>,
    pub unlinked_ms: Option<i64>,
    pub unlinked_reason: Option<String>,
}

/// A desktop app's token (the token itself is a JWT whose id this is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesktopToken {
    pub id: String,
    pub account_id: i64,
    pub label: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
}

const SCRIPT_COLUMNS: &str =
    "account_id, name, sha256, bytes, kind, schedule, created_ms, updated_ms";

fn script(row: &Row<'_>) -> rusqlite::Result<NotifyScript> {
    Ok(NotifyScript {
        account_id: row.get(0)?,
        name: row.get(1)?,
        sha256: row.get(2)?,
        bytes: row.get::<_, i64>(3)?.max(0) as u64,
        kind: row.get(4)?,
        schedule: row.get(5)?,
        created_ms: row.get(6)?,
        updated_ms: row.get(7)?,
    })
}

const RUN_COLUMNS: &str = "id, account_id, script, sha256, trigger, started_ms, duration_ms, \
     exit_code, outcome, reason, stdout, stderr, notification, deliveries";

fn run(row: &Row<'_>) -> rusqlite::Result<NotifyRun> {
    let deliveries: String = row.get(13)?;
    Ok(NotifyRun {
        id: row.get(0)?,
        account_id: row.get(1)?,
        script: row.get(2)?,
        sha256: row.get(3)?,
        trigger: row.get(4)?,
        started_ms: row.get(5)?,
        duration_ms: row.get(6)?,
        exit_code: row.get(7)?,
        outcome: row.get(8)?,
        reason: row.get(9)?,
        stdout: row.get(10)?,
        stderr: row.get(11)?,
        notification: row.get(12)?,
        deliveries: serde_json::from_str(&deliveries).unwrap_or(serde_json::Value::Null),
    })
}

const NOTIFICATION_COLUMNS: &str =
    "id, account_id, script, run_id, title, message, image, data, created_ms";

fn notification(row: &Row<'_>) -> rusqlite::Result<StoredNotification> {
    Ok(StoredNotification {
        id: row.get(0)?,
        account_id: row.get(1)?,
        script: row.get(2)?,
        run_id: row.get(3)?,
        title: row.get(4)?,
        message: row.get(5)?,
        image: row.get(6)?,
        data: row.get(7)?,
        created_ms: row.get(8)?,
    })
}

const LINK_COLUMNS: &str =
    "account_id, chat_id, chat_name, linked_ms, unlinked_ms, unlinked_reason";

fn link(row: &Row<'_>) -> rusqlite::Result<TelegramLink> {
    Ok(TelegramLink {
        account_id: row.get(0)?,
        chat_id: row.get(1)?,
        chat_name: row.get(2)?,
        linked_ms: row.get(3)?,
        unlinked_ms: row.get(4)?,
        unlinked_reason: row.get(5)?,
    })
}

const DESKTOP_COLUMNS: &str = "id, account_id, label, created_ms, expires_ms, revoked_ms";

fn desktop(row: &Row<'_>) -> rusqlite::Result<DesktopToken> {
    Ok(DesktopToken {
        id: row.get(0)?,
        account_id: row.get(1)?,
        label: row.get(2)?,
        created_ms: row.get(3)?,
        expires_ms: row.get(4)?,
        revoked_ms: row.get(5)?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl StateStore {
    /// Make `script` the current version of its name; false when it already was (same
    /// content and schedule).
    pub fn put_notify_script(&self, s: &NotifyScript) -> Result<bool> {
        let conn = self.lock();
        let changed = conn.execute(
            "INSERT INTO notify_scripts (account_id, name, sha256, bytes, kind, schedule, \
             created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) \
             ON CONFLICT (account_id, name) DO UPDATE SET sha256 = excluded.sha256, \
             bytes = excluded.bytes, kind = excluded.kind, schedule = excluded.schedule, \
             updated_ms = excluded.updated_ms \
             WHERE sha256 IS NOT excluded.sha256 OR kind IS NOT excluded.kind \
             OR schedule IS NOT excluded.schedule",
            params![
                s.account_id,
                s.name,
                s.sha256,
                i64::try_from(s.bytes).unwrap_or(i64::MAX),
                s.kind,
                s.schedule,
                s.updated_ms
            ],
        )?;
        Ok(changed == 1)
    }

    /// The scripts of `account` (every account's with `None`), by account then name.
    pub fn notify_scripts(&self, account: Option<i64>) -> Result<Vec<NotifyScript>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SCRIPT_COLUMNS} FROM notify_scripts \
             WHERE ?1 IS NULL OR account_id = ?1 ORDER BY account_id, name"
        ))?;
        let rows = stmt.query_map([account], script)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn notify_script(&self, account: i64, name: &str) -> Result<Option<NotifyScript>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {SCRIPT_COLUMNS} FROM notify_scripts \
                     WHERE account_id = ?1 AND name = ?2"
                ),
                params![account, name],
                script,
            )
            .optional()?)
    }

    /// Remove a script and its cooldown (its runs and notifications stay in the history);
    /// false when there was none.
    pub fn delete_notify_script(&self, account: i64, name: &str) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM notify_scripts WHERE account_id = ?1 AND name = ?2",
            params![account, name],
        )?;
        tx.execute(
            "DELETE FROM notify_cooldowns WHERE account_id = ?1 AND script = ?2",
            params![account, name],
        )?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// The content hashes any script still refers to (stored files not among them can go).
    pub fn notify_script_hashes(&self, account: i64) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT DISTINCT sha256 FROM notify_scripts WHERE account_id = ?1")?;
        let rows = stmt.query_map([account], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Record a run starting; its id.
    pub fn start_notify_run(&self, r: &NewNotifyRun<'_>) -> Result<i64> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO notify_runs (account_id, script, sha256, trigger, started_ms, outcome) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
            params![r.account_id, r.script, r.sha256, r.trigger, r.started_ms],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Record how run `id` ended.
    pub fn finish_notify_run(&self, id: i64, end: &NotifyRunEnd) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE notify_runs SET duration_ms = ?2, exit_code = ?3, outcome = ?4, reason = ?5, \
             stdout = ?6, stderr = ?7, notification = ?8, deliveries = ?9 WHERE id = ?1",
            params![
                id,
                end.duration_ms,
                end.exit_code,
                end.outcome,
                end.reason,
                end.stdout,
                end.stderr,
                end.notification,
                end.deliveries
            ],
        )?;
        Ok(())
    }

    /// Runs left `running` by a server that stopped: marked `interrupted`; how many.
    pub fn interrupt_notify_runs(&self) -> Result<usize> {
        let conn = self.lock();
        Ok(conn.execute(
            "UPDATE notify_runs SET outcome = 'interrupted', \
             reason = 'the server stopped during the run' WHERE outcome = 'running'",
            [],
        )?)
    }

    /// Runs, latest first: of `account` (all with `None`), of one script if named.
    pub fn notify_runs(
        &self,
        account: Option<i64>,
        script_name: Option<&str>,
        n: usize,
    ) -> Result<Vec<NotifyRun>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM notify_runs \
             WHERE (?1 IS NULL OR account_id = ?1) AND (?2 IS NULL OR script = ?2) \
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![account, script_name, limit(n)], run)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn notify_run(&self, id: i64) -> Result<Option<NotifyRun>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM notify_runs WHERE id = ?1"),
                [id],
                run,
            )
            .optional()?)
    }

    /// The latest run of each of `account`'s scripts.
    pub fn last_notify_runs(&self, account: i64) -> Result<Vec<NotifyRun>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {RUN_COLUMNS} FROM notify_runs WHERE id IN \
             (SELECT max(id) FROM notify_runs WHERE account_id = ?1 GROUP BY script)"
        ))?;
        let rows = stmt.query_map([account], run)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The latest run of `script` started by `trigger` (when a scheduled script last ran).
    pub fn last_notify_run_by(
        &self,
        account: i64,
        script_name: &str,
        trigger: &str,
    ) -> Result<Option<i64>> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT max(started_ms) FROM notify_runs \
             WHERE account_id = ?1 AND script = ?2 AND trigger = ?3",
            params![account, script_name, trigger],
            |r| r.get(0),
        )?)
    }

    /// Keep the latest `keep` runs of each script; how many were removed.
    pub fn prune_notify_runs(&self, keep: usize) -> Result<usize> {
        let conn = self.lock();
        Ok(conn.execute(
            "DELETE FROM notify_runs WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER \
             (PARTITION BY account_id, script ORDER BY id DESC) AS k FROM notify_runs) \
             WHERE k > ?1)",
            [limit(keep)],
        )?)
    }

    /// When `script` last notified (Unix ms) and the cooldown it asked for (seconds).
    pub fn notify_cooldown(&self, account: i64, script_name: &str) -> Result<Option<(i64, i64)>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT last_sent_ms, cooldown_s FROM notify_cooldowns \
                 WHERE account_id = ?1 AND script = ?2",
                params![account, script_name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn set_notify_cooldown(
        &self,
        account: i64,
        script_name: &str,
        last_sent_ms: i64,
        cooldown_s: i64,
    ) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO notify_cooldowns (account_id, script, last_sent_ms, cooldown_s) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (account_id, script) DO UPDATE SET \
             last_sent_ms = excluded.last_sent_ms, cooldown_s = excluded.cooldown_s",
            params![account, script_name, last_sent_ms, cooldown_s],
        )?;
        Ok(())
    }

    pub fn insert_notification(&self, n: &StoredNotification) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            &format!(
                "INSERT INTO notifications ({NOTIFICATION_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                n.id,
                n.account_id,
                n.script,
                n.run_id,
                n.title,
                n.message,
                n.image,
                n.data,
                n.created_ms
            ],
        )?;
        Ok(())
    }

    /// `account`'s notifications, latest first, created before `before_ms` when given.
    pub fn notifications(
        &self,
        account: i64,
        before_ms: Option<i64>,
        n: usize,
    ) -> Result<Vec<StoredNotification>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications \
             WHERE account_id = ?1 AND (?2 IS NULL OR created_ms < ?2) \
             ORDER BY created_ms DESC, rowid DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![account, before_ms, limit(n)], notification)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn notification(&self, id: &str) -> Result<Option<StoredNotification>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = ?1"),
                [id],
                notification,
            )
            .optional()?)
    }

    /// Notifications created before `before_ms`, removed; the image files they named (for
    /// the caller to delete).
    pub fn prune_notifications(&self, before_ms: i64) -> Result<Vec<(i64, String)>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let images = {
            let mut stmt = tx.prepare(
                "SELECT account_id, image FROM notifications \
                 WHERE created_ms < ?1 AND image IS NOT NULL",
            )?;
            let rows = stmt.query_map([before_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.execute(
            "DELETE FROM notifications WHERE created_ms < ?1",
            [before_ms],
        )?;
        tx.commit()?;
        Ok(images)
    }

    /// `account`'s Telegram link (linked or not), if it ever had one.
    pub fn telegram_link(&self, account: i64) -> Result<Option<TelegramLink>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {LINK_COLUMNS} FROM telegram_links WHERE account_id = ?1"),
                [account],
                link,
            )
            .optional()?)
    }

    /// The account linked to Telegram chat `chat_id`.
    pub fn telegram_link_by_chat(&self, chat_id: i64) -> Result<Option<TelegramLink>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("SELECT {LINK_COLUMNS} FROM telegram_links WHERE chat_id = ?1"),
                [chat_id],
                link,
            )
            .optional()?)
    }

    /// Keep a code (its hash) that links `chat_id` until `expires_ms`; the chat's earlier
    /// codes and every expired code are dropped.
    pub fn put_telegram_code(
        &self,
        code_hash: &str,
        chat_id: i64,
        chat_name: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM telegram_codes WHERE chat_id = ?1 OR expires_ms <= ?2",
            params![chat_id, now_ms],
        )?;
        tx.execute(
            "INSERT INTO telegram_codes (code_hash, chat_id, chat_name, expires_ms) \
             VALUES (?1, ?2, ?3, ?4)",
            params![code_hash, chat_id, chat_name, expires_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Link the chat of a valid code to `account`, using the code up. The chat leaves any
    /// other account it was linked to. None when no unexpired code has this hash.
    pub fn link_telegram(
        &self,
        account: i64,
        code_hash: &str,
        now_ms: i64,
    ) -> Result<Option<TelegramLink>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let found: Option<(i64, String)> = tx
            .query_row(
                "SELECT chat_id, chat_name FROM telegram_codes \
                 WHERE code_hash = ?1 AND expires_ms > ?2",
                params![code_hash, now_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((chat_id, chat_name)) = found else {
            return Ok(None);
        };
        tx.execute(
            "DELETE FROM telegram_codes WHERE code_hash = ?1",
            [code_hash],
        )?;
        tx.execute(
            "UPDATE telegram_links SET chat_id = NULL, unlinked_ms = ?2, \
             unlinked_reason = 'the chat was linked to another account' \
             WHERE chat_id = ?1 AND account_id != ?3",
            params![chat_id, now_ms, account],
        )?;
        tx.execute(
            "INSERT INTO telegram_links (account_id, chat_id, chat_name, linked_ms) \
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (account_id) DO UPDATE SET \
             chat_id = excluded.chat_id, chat_name = excluded.chat_name, \
             linked_ms = excluded.linked_ms, unlinked_ms = NULL, unlinked_reason = NULL",
            params![account, chat_id, chat_name, now_ms],
        )?;
        let linked = tx.query_row(
            &format!("SELECT {LINK_COLUMNS} FROM telegram_links WHERE account_id = ?1"),
            [account],
            link,
        )?;
        tx.commit()?;
        Ok(Some(linked))
    }

    /// Unlink `account`'s chat, saying why; false when it had none linked.
    pub fn unlink_telegram(&self, account: i64, reason: &str, now_ms: i64) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.execute(
            "UPDATE telegram_links SET chat_id = NULL, unlinked_ms = ?2, unlinked_reason = ?3 \
             WHERE account_id = ?1 AND chat_id IS NOT NULL",
            params![account, now_ms, reason],
        )? == 1)
    }

    pub fn add_desktop_token(&self, t: &DesktopToken) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            &format!(
                "INSERT INTO desktop_tokens ({DESKTOP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![
                t.id,
                t.account_id,
                t.label,
                t.created_ms,
                t.expires_ms,
                t.revoked_ms
            ],
        )?;
        Ok(())
    }

    /// `account`'s desktop tokens, newest first.
    pub fn desktop_tokens(&self, account: i64) -> Result<Vec<DesktopToken>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {DESKTOP_COLUMNS} FROM desktop_tokens WHERE account_id = ?1 \
             ORDER BY created_ms DESC, id"
        ))?;
        let rows = stmt.query_map([account], desktop)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Mark `account`'s desktop token `id` revoked; the token, or None when it has none by
    /// that id. (The caller also revokes the JWT's id.)
    pub fn revoke_desktop_token(
        &self,
        account: i64,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<DesktopToken>> {
        let conn = self.lock();
        conn.execute(
            "UPDATE desktop_tokens SET revoked_ms = ?3 \
             WHERE account_id = ?1 AND id = ?2 AND revoked_ms IS NULL",
            params![account, id, now_ms],
        )?;
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {DESKTOP_COLUMNS} FROM desktop_tokens \
                     WHERE account_id = ?1 AND id = ?2"
                ),
                params![account, id],
                desktop,
            )
            .optional()?)
    }

    /// Set a setting (replacing its value).
    pub fn put_setting(&self, key: &str, value: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }
}
