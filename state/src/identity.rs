//! Users, groups, grants, API tokens, revoked token ids and login attempts.

use rusqlite::{OptionalExtension, params};

use crate::error::{Result, StateError};
use crate::{StateStore, now_secs};

/// Whether an account may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountState {
    /// Created by an administrator; becomes active at its first sign-in (a password set
    /// through a set-up link, or an OpenID Connect login).
    Invited,
    Active,
    /// May not sign in; its sessions and tokens are refused.
    Disabled,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invited => "invited",
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "invited" => Self::Invited,
            "disabled" => Self::Disabled,
            _ => Self::Active,
        }
    }
}

impl std::fmt::Display for AccountState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account with its groups (sorted). Serializes without the password hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserRecord {
    /// Stable and never reused: memberships, tokens and the audit log are keyed by it.
    pub id: i64,
    /// The username (`alice`, or `ann_example_org` for an outside email).
    pub name: String,
    /// The login email, unique regardless of case; none for a username-only account.
    pub email: Option<String>,
    pub display_name: String,
    pub picture_url: Option<String>,
    pub state: AccountState,
    pub groups: Vec<String>,
    /// A PHC string (Argon2id); never the password. None: no password is set.
    #[serde(skip)]
    pub password_hash: Option<String>,
    pub created_at: i64,
    /// Tokens issued before this moment are no longer accepted.
    pub password_changed_at: i64,
}

/// An account to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub username: String,
    pub email: Option<String>,
    pub display_name: String,
    pub picture_url: Option<String>,
    pub state: AccountState,
    pub password_hash: Option<String>,
    pub groups: Vec<String>,
}

/// One change to an account, for the administrators' record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccountChange {
    pub at_ms: i64,
    /// Who made it: an account id, or none for the server itself or the command line.
    pub actor_id: Option<i64>,
    pub actor: String,
    /// `invite`, `create`, `disable`, `enable`, `delete`, `groups`, `password`, …
    pub action: String,
    pub account_id: Option<i64>,
    pub account: String,
    pub detail: String,
    pub request_id: String,
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
    /// The account it signs in as.
    pub account_id: i64,
    /// That account's username (for listing).
    pub user: String,
    pub label: String,
    #[serde(skip)]
    pub secret_hash: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// What the token may do: none for the whole API, `assistant` for the MCP endpoint only.
    pub scope: Option<String>,
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
    /// Every account with its groups, sorted by username.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("{ACCOUNT_COLUMNS} ORDER BY a.username"))?;
        let rows = stmt.query_map([], user_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// The account with this username, if any.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.account_where("a.username = ?1", name)
    }

    /// The account with this id, if any.
    pub fn user_by_id(&self, id: i64) -> Result<Option<UserRecord>> {
        self.account_where("a.id = ?1", id)
    }

    /// The account a login names: its username, else its email (any case).
    pub fn user_by_login(&self, login: &str) -> Result<Option<UserRecord>> {
        match self.user(login)? {
            Some(user) => Ok(Some(user)),
            None => self.account_where("a.email = ?1 COLLATE NOCASE", login),
        }
    }

    fn account_where(
        &self,
        condition: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<Option<UserRecord>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("{ACCOUNT_COLUMNS} WHERE {condition}"),
                [value],
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
        let n: i64 = conn.query_row("SELECT count(*) FROM accounts", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Create an active username-only account with a password hash and groups. Fails if the
    /// name is taken.
    pub fn add_user(&self, name: &str, password_hash: &str, groups: &[String]) -> Result<i64> {
        self.add_account(&NewAccount {
            username: name.to_string(),
            email: None,
            display_name: String::new(),
            picture_url: None,
            state: AccountState::Active,
            password_hash: Some(password_hash.to_string()),
            groups: groups.to_vec(),
        })
    }

    /// Create an account; its id is the answer. Fails if the username or the email is taken.
    pub fn add_account(&self, account: &NewAccount) -> Result<i64> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let now = now_secs();
        if let Some(email) = &account.email {
            let taken = tx
                .query_row(
                    "SELECT 1 FROM accounts WHERE email = ?1 COLLATE NOCASE",
                    [email],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if taken {
                return Err(StateError::EmailTaken(email.clone()));
            }
        }
        let inserted = tx.execute(
            "INSERT INTO accounts (username, email, display_name, picture_url, state,
                                   password_hash, created_at, password_changed_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7) ON CONFLICT (username) DO NOTHING",
            params![
                account.username,
                account.email,
                account.display_name,
                account.picture_url,
                account.state.as_str(),
                account.password_hash,
                now
            ],
        )?;
        if inserted == 0 {
            return Err(StateError::UserExists(account.username.clone()));
        }
        let id = tx.last_insert_rowid();
        set_memberships(&tx, id, &account.groups)?;
        tx.commit()?;
        Ok(id)
    }

    /// Delete an account with its memberships, tokens and settings; returns whether it
    /// existed. With `keep` (a group), refused when it would leave the group without an
    /// active member.
    pub fn remove_account(&self, id: i64, keep: Option<&str>) -> Result<bool> {
        self.change_account(id, keep, |tx| {
            Ok(tx.execute("DELETE FROM accounts WHERE id = ?1", [id])? > 0)
        })
    }

    /// Delete the account with this username; returns whether it existed.
    pub fn remove_user(&self, name: &str) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.execute("DELETE FROM accounts WHERE username = ?1", [name])? > 0)
    }

    /// Set an account's state; with `keep`, as for [`remove_account`](Self::remove_account).
    pub fn set_account_state(
        &self,
        id: i64,
        state: AccountState,
        keep: Option<&str>,
    ) -> Result<bool> {
        self.change_account(id, keep, |tx| {
            Ok(tx.execute(
                "UPDATE accounts SET state = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, state.as_str(), now_secs()],
            )? > 0)
        })
    }

    /// Replace an account's groups; with `keep`, as for [`remove_account`](Self::remove_account).
    pub fn set_account_groups(
        &self,
        id: i64,
        groups: &[String],
        keep: Option<&str>,
    ) -> Result<bool> {
        self.change_account(id, keep, |tx| {
            let exists = tx
                .query_row("SELECT 1 FROM accounts WHERE id = ?1", [id], |_| Ok(()))
                .optional()?
                .is_some();
            if exists {
                tx.execute("DELETE FROM account_groups WHERE account_id = ?1", [id])?;
                set_memberships(tx, id, groups)?;
            }
            Ok(exists)
        })
    }

    /// Runs `change` in one transaction, which is rolled back if it leaves `keep` without an
    /// active member.
    fn change_account(
        &self,
        id: i64,
        keep: Option<&str>,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<bool>,
    ) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let username: Option<String> = tx
            .query_row("SELECT username FROM accounts WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let changed = change(&tx)?;
        if let Some(group) = keep {
            let active: i64 = tx.query_row(
                "SELECT count(*) FROM account_groups g JOIN accounts a ON a.id = g.account_id
                 WHERE g.group_name = ?1 AND a.state = 'active'",
                [group],
                |r| r.get(0),
            )?;
            if active == 0 {
                return Err(StateError::LastMember {
                    account: username.unwrap_or_else(|| format!("account {id}")),
                    group: group.to_string(),
                });
            }
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Set an account's password hash (and activate an invited account); tokens issued before
    /// now end.
    pub fn set_password_hash(&self, name: &str, password_hash: &str) -> Result<()> {
        let conn = self.lock();
        let n = conn.execute(
            "UPDATE accounts SET password_hash = ?2, password_changed_at = ?3, updated_at = ?3,
                    state = CASE state WHEN 'invited' THEN 'active' ELSE state END
             WHERE username = ?1",
            params![name, password_hash, now_secs()],
        )?;
        if n == 0 {
            return Err(StateError::NoSuchUser(name.to_string()));
        }
        Ok(())
    }

    /// Replace a user's groups.
    pub fn set_groups(&self, name: &str, groups: &[String]) -> Result<()> {
        let id = self
            .user(name)?
            .ok_or_else(|| StateError::NoSuchUser(name.to_string()))?
            .id;
        self.set_account_groups(id, groups, None)?;
        Ok(())
    }

    /// Record a change to an account.
    pub fn record_account_change(&self, change: &AccountChange) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO account_changes (at_ms, actor_id, actor, action, account_id, account,
                                          detail, request_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                change.at_ms,
                change.actor_id,
                change.actor,
                change.action,
                change.account_id,
                change.account,
                change.detail,
                change.request_id
            ],
        )?;
        Ok(())
    }

    /// The newest changes to accounts (of one account, or of all), newest first.
    pub fn account_changes(&self, account: Option<i64>, limit: u32) -> Result<Vec<AccountChange>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT at_ms, actor_id, actor, action, account_id, account, detail, request_id
             FROM account_changes WHERE ?1 IS NULL OR account_id = ?1
             ORDER BY at_ms DESC, id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![account, limit], |r| {
            Ok(AccountChange {
                at_ms: r.get(0)?,
                actor_id: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                account_id: r.get(4)?,
                account: r.get(5)?,
                detail: r.get(6)?,
                request_id: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
            INSERT_TOKEN,
            params![
                token.id,
                token.account_id,
                token.label,
                token.secret_hash,
                token.created_at,
                token.expires_at,
                token.scope
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
                &format!("{TOKEN_COLUMNS} WHERE t.id = ?1"),
                [id],
                token_from_row,
            )
            .optional()?)
    }

    /// API tokens, of one user or of all, newest first.
    pub fn api_tokens(&self, user: Option<&str>) -> Result<Vec<ApiTokenRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "{TOKEN_COLUMNS} WHERE ?1 IS NULL OR a.username = ?1 ORDER BY t.created_at DESC, t.id"
        ))?;
        let rows = stmt.query_map([user], token_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Mark an API token revoked; returns whether a live token was revoked.
    pub fn revoke_api_token(&self, id: &str) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.execute(
            "UPDATE account_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_secs()],
        )? > 0)
    }

    /// Record that a token was used (at most once a minute per token, to spare writes).
    pub fn touch_api_token(&self, id: &str, at: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE account_tokens SET last_used_at = ?2
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
        conn.execute(
            "DELETE FROM password_requests WHERE at < ?1",
            [attempts_before],
        )?;
        conn.execute(
            "DELETE FROM password_tokens WHERE expires_at < ?1",
            [now - 7 * 86_400],
        )?;
        Ok(())
    }
}

const TOKEN_COLUMNS: &str = "SELECT t.id, t.account_id, a.username, t.label, t.secret_hash,
        t.created_at, t.expires_at, t.last_used_at, t.revoked_at, t.scope
        FROM account_tokens t JOIN accounts a ON a.id = t.account_id";

/// Inserts an API token (`?1`–`?7`: id, account, label, secret hash, created, expires, scope)
/// when its account exists.
pub(crate) const INSERT_TOKEN: &str = "INSERT INTO account_tokens (id, account_id, label,
        secret_hash, created_at, expires_at, scope)
        SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?2)";

fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiTokenRecord> {
    Ok(ApiTokenRecord {
        id: r.get(0)?,
        account_id: r.get(1)?,
        user: r.get(2)?,
        label: r.get(3)?,
        secret_hash: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        last_used_at: r.get(7)?,
        revoked_at: r.get(8)?,
        scope: r.get(9)?,
    })
}

const ACCOUNT_COLUMNS: &str = "SELECT a.id, a.username, a.email, a.display_name, a.picture_url,
        a.state, a.password_hash, a.created_at, a.password_changed_at,
        COALESCE((SELECT group_concat(group_name, ',') FROM
            (SELECT group_name FROM account_groups g WHERE g.account_id = a.id
             ORDER BY group_name)), '')
        FROM accounts a";

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    let state: String = r.get(5)?;
    let groups: String = r.get(9)?;
    let mut groups = split_list(&groups);
    groups.sort();
    Ok(UserRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        email: r.get(2)?,
        display_name: r.get(3)?,
        picture_url: r.get(4)?,
        state: AccountState::parse(&state),
        password_hash: r.get(6)?,
        created_at: r.get(7)?,
        password_changed_at: r.get(8)?,
        groups,
    })
}

fn set_memberships(tx: &rusqlite::Transaction<'_>, account: i64, groups: &[String]) -> Result<()> {
    for group in groups {
        tx.execute(
            "INSERT INTO groups (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            [group],
        )?;
        tx.execute(
            "INSERT INTO account_groups (account_id, group_name) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
            params![account, group],
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

/// What a one-time password link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordPurpose {
    /// The first password of an invited account.
    Setup,
    /// A forgotten password.
    Reset,
}

impl PasswordPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Reset => "reset",
        }
    }
}

/// Why a password link was not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// Unknown, expired or already used (one answer for all three).
    Invalid,
    /// The account is disabled.
    Disabled,
}

impl StateStore {
    /// Keep a one-time password link (by the SHA-256 of its token) for `account`.
    pub fn add_password_token(
        &self,
        token_hash: &str,
        account: i64,
        purpose: PasswordPurpose,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO password_tokens (token_hash, account_id, purpose, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token_hash, account, purpose.as_str(), now, expires_at],
        )?;
        Ok(())
    }

    /// Sets the password of the account whose unused, unexpired link has `token_hash`, in one
    /// transaction: the account becomes active if it was invited, tokens issued before now end,
    /// and every link of the account (this one and any older) is used up. The answer is the
    /// account's id, or why nothing was done.
    pub fn use_password_token(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<std::result::Result<i64, LinkRefusal>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let found: Option<(i64, String)> = tx
            .query_row(
                "SELECT t.account_id, a.state FROM password_tokens t
                 JOIN accounts a ON a.id = t.account_id
                 WHERE t.token_hash = ?1 AND t.used_at IS NULL AND t.expires_at > ?2",
                params![token_hash, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((account, state)) = found else {
            return Ok(Err(LinkRefusal::Invalid));
        };
        if state == AccountState::Disabled.as_str() {
            return Ok(Err(LinkRefusal::Disabled));
        }
        tx.execute(
            "UPDATE accounts SET password_hash = ?2, password_changed_at = ?3, updated_at = ?3,
                    state = 'active'
             WHERE id = ?1",
            params![account, password_hash, now],
        )?;
        tx.execute(
            "UPDATE password_tokens SET used_at = ?2 WHERE account_id = ?1 AND used_at IS NULL",
            params![account, now],
        )?;
        tx.commit()?;
        Ok(Ok(account))
    }

    /// Record a request for a password link for `account` (as given) from `address`.
    pub fn record_password_request(&self, at: i64, account: &str, address: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO password_requests (at, account, address) VALUES (?1, ?2, ?3)",
            params![at, account, address],
        )?;
        Ok(())
    }

    /// Requests for password links since `since`: for `account` and from `address`.
    pub fn password_requests_since(
        &self,
        account: &str,
        address: &str,
        since: i64,
    ) -> Result<(u32, u32)> {
        let conn = self.lock();
        let by_account = conn.query_row(
            "SELECT count(*) FROM password_requests WHERE account = ?1 AND at >= ?2",
            params![account, since],
            |r| r.get(0),
        )?;
        let by_address = conn.query_row(
            "SELECT count(*) FROM password_requests WHERE address = ?1 AND at >= ?2",
            params![address, since],
            |r| r.get(0),
        )?;
        Ok((by_account, by_address))
    }
}

/// A browser session (its secrets only as hashes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BrowserSession {
    /// Public: shown in listings, used to revoke.
    pub id: String,
    pub account_id: i64,
    #[serde(skip)]
    pub secret_hash: String,
    #[serde(skip)]
    pub csrf_hash: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// The absolute end, whatever the activity.
    pub expires_at: i64,
    pub address: String,
    pub user_agent: String,
}

const SESSION_COLUMNS: &str = "SELECT id, account_id, secret_hash, csrf_hash, created_at,
        last_seen_at, expires_at, address, user_agent FROM browser_sessions";

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BrowserSession> {
    Ok(BrowserSession {
        id: r.get(0)?,
        account_id: r.get(1)?,
        secret_hash: r.get(2)?,
        csrf_hash: r.get(3)?,
        created_at: r.get(4)?,
        last_seen_at: r.get(5)?,
        expires_at: r.get(6)?,
        address: r.get(7)?,
        user_agent: r.get(8)?,
    })
}

impl StateStore {
    pub fn add_browser_session(&self, session: &BrowserSession) -> Result<()> {
        let conn = self.lock();
        let n = conn.execute(
            "INSERT INTO browser_sessions (id, account_id, secret_hash, csrf_hash, created_at,
                                           last_seen_at, expires_at, address, user_agent)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
             WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?2)",
            params![
                session.id,
                session.account_id,
                session.secret_hash,
                session.csrf_hash,
                session.created_at,
                session.last_seen_at,
                session.expires_at,
                session.address,
                session.user_agent
            ],
        )?;
        if n == 0 {
            return Err(StateError::NoSuchUser(format!(
                "account {}",
                session.account_id
            )));
        }
        Ok(())
    }

    pub fn browser_session(&self, id: &str) -> Result<Option<BrowserSession>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                &format!("{SESSION_COLUMNS} WHERE id = ?1"),
                [id],
                session_from_row,
            )
            .optional()?)
    }

    /// An account's sessions, newest first.
    pub fn browser_sessions(&self, account: i64) -> Result<Vec<BrowserSession>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "{SESSION_COLUMNS} WHERE account_id = ?1 ORDER BY created_at DESC, id"
        ))?;
        let rows = stmt.query_map([account], session_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Record activity (the caller throttles).
    pub fn touch_browser_session(&self, id: &str, at: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "UPDATE browser_sessions SET last_seen_at = ?2 WHERE id = ?1 AND last_seen_at < ?2",
            params![id, at],
        )?;
        Ok(())
    }

    /// End a session (of `account`, when given); whether it existed.
    pub fn remove_browser_session(&self, id: &str, account: Option<i64>) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.execute(
            "DELETE FROM browser_sessions WHERE id = ?1 AND (?2 IS NULL OR account_id = ?2)",
            params![id, account],
        )? > 0)
    }

    /// End every session of an account; how many there were.
    pub fn remove_browser_sessions_of(&self, account: i64) -> Result<usize> {
        let conn = self.lock();
        Ok(conn.execute(
            "DELETE FROM browser_sessions WHERE account_id = ?1",
            [account],
        )?)
    }

    /// Drop sessions past their absolute end or idle since before `idle_before`.
    pub fn prune_browser_sessions(&self, now: i64, idle_before: i64) -> Result<usize> {
        let conn = self.lock();
        Ok(conn.execute(
            "DELETE FROM browser_sessions WHERE expires_at <= ?1 OR last_seen_at < ?2",
            params![now, idle_before],
        )?)
    }
}

/// An OpenID Connect sign-in under way (its `state` only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcFlow {
    pub state_hash: String,
    pub provider: String,
    pub nonce: String,
    /// The PKCE verifier.
    pub verifier: String,
    /// Where the browser goes after signing in.
    pub next: String,
    pub created_at: i64,
}

impl StateStore {
    /// Keep a sign-in under way; older ones than `stale_before` are dropped.
    pub fn add_oidc_flow(&self, flow: &OidcFlow, stale_before: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM oidc_flows WHERE created_at < ?1",
            [stale_before],
        )?;
        conn.execute(
            "INSERT INTO oidc_flows (state_hash, provider, nonce, verifier, next, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                flow.state_hash,
                flow.provider,
                flow.nonce,
                flow.verifier,
                flow.next,
                flow.created_at
            ],
        )?;
        Ok(())
    }

    /// Takes the sign-in with this `state` hash: it is deleted, so a second callback with the
    /// same `state` finds nothing. None also when it started before `stale_before`.
    pub fn take_oidc_flow(&self, state_hash: &str, stale_before: i64) -> Result<Option<OidcFlow>> {
        let conn = self.lock();
        let flow = conn
            .query_row(
                "DELETE FROM oidc_flows WHERE state_hash = ?1
                 RETURNING state_hash, provider, nonce, verifier, next, created_at",
                [state_hash],
                |r| {
                    Ok(OidcFlow {
                        state_hash: r.get(0)?,
                        provider: r.get(1)?,
                        nonce: r.get(2)?,
                        verifier: r.get(3)?,
                        next: r.get(4)?,
                        created_at: r.get(5)?,
                    })
                },
            )
            .optional()?;
        Ok(flow.filter(|f| f.created_at >= stale_before))
    }
}

/// A one-time code that lets a program on the user's machine (the command line) sign in as
/// the account that approved it in the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCode {
    pub code_hash: String,
    pub account_id: i64,
    /// The PKCE challenge (`S256`) the program sent; it redeems the code with the verifier.
    pub challenge: String,
    pub created_at: i64,
}

impl StateStore {
    /// Keep a login code; older ones than `stale_before` are dropped.
    pub fn add_login_code(&self, code: &LoginCode, stale_before: i64) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM login_codes WHERE created_at < ?1",
            [stale_before],
        )?;
        conn.execute(
            "INSERT INTO login_codes (code_hash, account_id, challenge, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                code.code_hash,
                code.account_id,
                code.challenge,
                code.created_at
            ],
        )?;
        Ok(())
    }

    /// Takes the login code with this hash (it is deleted: a code works once). None also when
    /// it was made before `stale_before`.
    pub fn take_login_code(&self, code_hash: &str, stale_before: i64) -> Result<Option<LoginCode>> {
        let conn = self.lock();
        let code = conn
            .query_row(
                "DELETE FROM login_codes WHERE code_hash = ?1
                 RETURNING code_hash, account_id, challenge, created_at",
                [code_hash],
                |r| {
                    Ok(LoginCode {
                        code_hash: r.get(0)?,
                        account_id: r.get(1)?,
                        challenge: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
            .optional()?;
        Ok(code.filter(|c| c.created_at >= stale_before))
    }
}

impl StateStore {
    /// Sets an account's display name and picture (as its identity provider gives them), and
    /// makes an invited account active.
    pub fn set_account_profile(
        &self,
        id: i64,
        display_name: &str,
        picture_url: Option<&str>,
    ) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.execute(
            "UPDATE accounts SET display_name = ?2, picture_url = ?3, updated_at = ?4,
                    state = CASE state WHEN 'invited' THEN 'active' ELSE state END
             WHERE id = ?1",
            params![id, display_name, picture_url, now_secs()],
        )? > 0)
    }
}
