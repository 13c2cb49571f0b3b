//! Users, groups, grants, API tokens, revoked token ids and login attempts.

use rusqlite::{OptionalExtension, params};

use crate::error::{Result, StateError};
use crate::{StateStore, now_secs};

/// A user account with its groups (sorted). Serializes without the hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRecord {
    pub name: String,
    pub groups: Vec<String>,
    /// A PHC string (Argon2id); never the password.
    #[serde(skip)]
    pub password_hash: String,
    pub created_at: i64,
    /// Tokens issued before this moment are no longer accepted.
    pub password_changed_at: i64,
}

/// Access to a table (or, with `table: None`, every table of a schema) for a group,
/// optionally limited to rows matching `row_filter` and without `hidden_columns`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrantRecord {
    pub group: String,
    pub schema: String,
    pub table: Option<String>,
    pub row_filter: Option<String>,
    pub hidden_columns: Vec<String>,
    pub created_at: i64,
    pub created_by: String,
}

/// A long-lived API token. The secret is stored only as a hash (not serialized either).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiTokenRecord {
    pub id: String,
    pub user: String,
    pub label: String,
    #[serde(skip)]
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// One password login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAttempt {
    pub at: i64,
    pub user: String,
    pub address: String,
    pub ok: bool,
}

const ALL_TABLES: &str = "*";

impl StateStore {
    /// Every user with their groups, sorted by name.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT u.name, u.password_hash, u.created_at, u.password_changed_at,
                    COALESCE((SELECT group_concat(group_name, ',') FROM
                        (SELECT group_name FROM memberships m WHERE m.user_name = u.name
                         ORDER BY group_name)), '')
             FROM users u ORDER BY u.name",
        )?;
        let rows = stmt.query_map([], user_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// One user, if it exists.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT u.name, u.password_hash, u.created_at, u.password_changed_at,
                    COALESCE((SELECT group_concat(group_name, ',') FROM
                        (SELECT group_name FROM memberships m WHERE m.user_name = u.name
                         ORDER BY group_name)), '')
                 FROM users u WHERE u.name = ?1",
                [name],
                user_from_row,
            )
            .optional()?)
    }

    /// Changes whenever users, memberships, grants, API tokens or revocations change, in
    /// this process or another.
    pub fn identity_version(&self) -> Result<i64> {
        let conn = self.lock();
        let v: String = conn.query_row(
            "SELECT value FROM settings WHERE key = 'identity_version'",
            [],
            |r| r.get(0),
        )?;
        Ok(v.parse().unwrap_or_default())
    }

    pub fn user_count(&self) -> Result<u64> {
        let conn = self.lock();
        let n: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Create a user with a password hash and groups. Fails if the name is taken.
    pub fn add_user(&self, name: &str, password_hash: &str, groups: &[String]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = now_secs();
        let inserted = tx.execute(
            "INSERT INTO users (name, password_hash, created_at, password_changed_at)
             VALUES (?1, ?2, ?3, ?3) ON CONFLICT (name) DO NOTHING",
            params![name, password_hash, now],
        )?;
        if inserted == 0 {
            return Err(StateError::UserExists(name.to_string()));
        }
        set_memberships(&tx, name, groups)?;
        tx.commit()?;
        Ok(())
    }

    /// Delete a user, their memberships and API tokens. Returns whether it existed.
    pub fn remove_user(&self, name: &str) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.execute("DELETE FROM users WHERE name = ?1", [name])? > 0)
    }

    pub fn set_password_hash(&self, name: &str, password_hash: &str) -> Result<()> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE users SET password_hash = ?2, password_changed_at = ?3 WHERE name = ?1",
            params![name, password_hash, now_secs()],
        )?;
        if n == 0 {
            return Err(StateError::NoSuchUser(name.to_string()));
        }
        Ok(())
    }

    /// Replace a user's groups.
    pub fn set_groups(&self, name: &str, groups: &[String]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let exists = tx
            .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            return Err(StateError::NoSuchUser(name.to_string()));
        }
        tx.execute("DELETE FROM memberships WHERE user_name = ?1", [name])?;
        set_memberships(&tx, name, groups)?;
        tx.commit()?;
        Ok(())
    }

    /// Every group name (the built-in ones and any used in a membership or grant), sorted.
    pub fn groups(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT name FROM groups ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Every grant, sorted by group, schema, table.
    pub fn grants(&self) -> Result<Vec<GrantRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT group_name, schema_name, table_name, row_filter, hidden_columns,
                    created_at, created_by
             FROM grants ORDER BY group_name, schema_name, table_name",
        )?;
        let rows = stmt.query_map([], |r| {
            let table: String = r.get(2)?;
            let hidden: String = r.get(4)?;
            Ok(GrantRecord {
                group: r.get(0)?,
                schema: r.get(1)?,
                table: (table != ALL_TABLES).then_some(table),
                row_filter: r.get(3)?,
                hidden_columns: split_list(&hidden),
                created_at: r.get(5)?,
                created_by: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Add or replace the grant of `grant.group` on its schema/table.
    pub fn put_grant(&self, grant: &GrantRecord) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO groups (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            [&grant.group],
        )?;
        tx.execute(
            "INSERT INTO grants (group_name, schema_name, table_name, row_filter,
                                 hidden_columns, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (group_name, schema_name, table_name) DO UPDATE SET
                row_filter = excluded.row_filter, hidden_columns = excluded.hidden_columns,
                created_at = excluded.created_at, created_by = excluded.created_by",
            params![
                grant.group,
                grant.schema,
                grant.table.as_deref().unwrap_or(ALL_TABLES),
                grant.row_filter,
                grant.hidden_columns.join(","),
                grant.created_at,
                grant.created_by,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Remove a grant; returns whether it existed.
    pub fn remove_grant(&self, group: &str, schema: &str, table: Option<&str>) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.execute(
            "DELETE FROM grants WHERE group_name = ?1 AND schema_name = ?2 AND table_name = ?3",
            params![group, schema, table.unwrap_or(ALL_TABLES)],
        )? > 0)
    }

    pub fn add_api_token(&self, token: &ApiTokenRecord) -> Result<()> {
        let conn = self.lock();
        let n = conn.execute(
            "INSERT INTO api_tokens (id, user_name, label, secret_hash, created_at, expires_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM users WHERE name = ?2)",
            params![
                token.id,
                token.user,
                token.label,
                token.secret_hash,
                token.created_at,
                token.expires_at
            ],
        )?;
        if n == 0 {
            return Err(StateError::NoSuchUser(token.user.clone()));
        }
        Ok(())
    }

    pub fn api_token(&self, id: &str) -> Result<Option<ApiTokenRecord>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("{TOKEN_COLUMNS} WHERE id = ?1"),
                [id],
                token_from_row,
            )
            .optional()?)
    }

    /// API tokens, of one user or of all, newest first.
    pub fn api_tokens(&self, user: Option<&str>) -> Result<Vec<ApiTokenRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "{TOKEN_COLUMNS} WHERE ?1 IS NULL OR user_name = ?1 ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt.query_map([user], token_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Mark an API token revoked; returns whether a live token was revoked.
    pub fn revoke_api_token(&self, id: &str) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_secs()],
        )? > 0)
    }

    /// Record that a token was used (at most once a minute per token, to spare writes).
    pub fn touch_api_token(&self, id: &str, at: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE api_tokens SET last_used_at = ?2
             WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2 - 60)",
            params![id, at],
        )?;
        Ok(())
    }

    /// Revoke a signed token by its id until it would have expired anyway.
    pub fn revoke_jti(&self, jti: &str, expires_at: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2)
             ON CONFLICT (jti) DO NOTHING",
            params![jti, expires_at],
        )?;
        Ok(())
    }

    /// Revoked token ids whose tokens could still be presented at `now` (refresh grace
    /// included by the caller through `not_before`).
    pub fn revoked_jtis(&self, not_before: i64) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT jti FROM revoked_tokens WHERE expires_at >= ?1")?;
        let rows = stmt.query_map([not_before], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn is_jti_revoked(&self, jti: &str) -> Result<bool> {
        let conn = self.lock();
        Ok(conn
            .query_row("SELECT 1 FROM revoked_tokens WHERE jti = ?1", [jti], |_| {
                Ok(())
            })
            .optional()?
            .is_some())
    }

    pub fn record_login_attempt(&self, attempt: &LoginAttempt) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO login_attempts (at, user_name, address, ok) VALUES (?1, ?2, ?3, ?4)",
            params![attempt.at, attempt.user, attempt.address, attempt.ok],
        )?;
        Ok(())
    }

    /// Failed attempts since `since` for the account and for the address.
    pub fn failed_logins_since(&self, user: &str, address: &str, since: i64) -> Result<(u32, u32)> {
        let conn = self.lock();
        let by_user = conn.query_row(
            "SELECT count(*) FROM login_attempts WHERE user_name = ?1 AND at >= ?2 AND ok = 0",
            params![user, since],
            |r| r.get(0),
        )?;
        let by_address = conn.query_row(
            "SELECT count(*) FROM login_attempts WHERE address = ?1 AND at >= ?2 AND ok = 0",
            params![address, since],
            |r| r.get(0),
        )?;
        Ok((by_user, by_address))
    }

    /// The most recent login attempts, newest first.
    pub fn login_attempts(&self, limit: u32) -> Result<Vec<LoginAttempt>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT at, user_name, address, ok FROM login_attempts
             ORDER BY at DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(LoginAttempt {
                at: r.get(0)?,
                user: r.get(1)?,
                address: r.get(2)?,
                ok: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Drop login attempts and revoked ids that no longer matter.
    pub fn prune(&self, attempts_before: i64, now: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM login_attempts WHERE at < ?1",
            [attempts_before],
        )?;
        conn.execute("DELETE FROM revoked_tokens WHERE expires_at < ?1", [now])?;
        Ok(())
    }
}

const TOKEN_COLUMNS: &str = "SELECT id, user_name, label, secret_hash, created_at, expires_at,
        last_used_at, revoked_at FROM api_tokens";

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiTokenRecord> {
    Ok(ApiTokenRecord {
        id: r.get(0)?,
        user: r.get(1)?,
        label: r.get(2)?,
        secret_hash: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        last_used_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    let groups: String = r.get(4)?;
    let mut groups = split_list(&groups);
    groups.sort();
    Ok(UserRecord {
        name: r.get(0)?,
        password_hash: r.get(1)?,
        created_at: r.get(2)?,
        password_changed_at: r.get(3)?,
        groups,
    })
}

fn set_memberships(tx: &rusqlite::Transaction<'_>, user: &str, groups: &[String]) -> Result<()> {
    for group in groups {
        tx.execute(
            "INSERT INTO groups (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            [group],
        )?;
        tx.execute(
            "INSERT INTO memberships (user_name, group_name) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
            [user, group],
        )?;
    }
    Ok(())
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}
