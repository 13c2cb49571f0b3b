//! [`Accounts`]: managing users, groups, grants and API tokens, with every rule checked here
//! (names, password rules, the last administrator) so the CLI and the admin API agree.

use std::sync::Arc;
use std::time::Duration;

use dataport_state::{ApiTokenRecord, GrantRecord, StateStore, UserRecord, now_secs};

use crate::authenticator::{API_TOKEN_PREFIX, hash_secret};
use crate::password::{check_password_rules, hash_password};
use crate::{AuthError, DATA_OPS, valid_name};

/// Account administration over the state store.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Arc<StateStore>,
}

/// A table, or with `table: None` every table of a schema, as a grant target
/// (`schema.table` or `schema.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTable {
    pub schema: String,
    pub table: Option<String>,
}

impl std::str::FromStr for TargetTable {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, AuthError> {
        let invalid = || AuthError::InvalidInput {
            message: format!(
                "'{s}' is not a table: write SCHEMA.TABLE or SCHEMA.* (lower-case SQL names)"
            ),
        };
        let (schema, table) = s.split_once('.').ok_or_else(invalid)?;
        let ident = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !ident(schema) || !(table == "*" || ident(table)) {
            return Err(invalid());
        }
        Ok(Self {
            schema: schema.to_string(),
            table: (table != "*").then(|| table.to_string()),
        })
    }
}

impl std::fmt::Display for TargetTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}",
            self.schema,
            self.table.as_deref().unwrap_or("*")
        )
    }
}

/// A freshly created API token: the secret is shown once and only its hash is kept.
#[derive(Clone)]
pub struct NewApiToken {
    pub id: String,
    pub token: String,
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for NewApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Accounts {
    pub fn new(store: Arc<StateStore>) -> Self {
        Self { store }
    }

    pub fn store(&self) -> &Arc<StateStore> {
        &self.store
    }

    /// Every user (with groups), sorted by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, AuthError> {
        Ok(self.store.users()?)
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, AuthError> {
        Ok(self.store.user(name)?)
    }

    pub fn has_users(&self) -> Result<bool, AuthError> {
        Ok(self.store.user_count()? > 0)
    }

    /// Create a user. The password must follow the rules; groups must be valid names.
    pub fn add_user(&self, name: &str, password: &str, groups: &[String]) -> Result<(), AuthError> {
        check_user_name(name)?;
        check_groups(groups)?;
        check_password_rules(password)?;
        let hash = hash_password(password)?;
        self.store.add_user(name, &hash, groups)?;
        tracing::info!(user = name, groups = ?groups, "user created");
        Ok(())
    }

    /// Set a new password; sessions opened before it end.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AuthError> {
        check_password_rules(password)?;
        let hash = hash_password(password)?;
        self.store.set_password_hash(name, &hash)?;
        tracing::info!(user = name, "password changed");
        Ok(())
    }

    /// Replace a user's groups. The last administrator cannot leave `data-ops`.
    pub fn set_groups(&self, name: &str, groups: &[String]) -> Result<(), AuthError> {
        check_groups(groups)?;
        if !groups.iter().any(|g| g == DATA_OPS) {
            self.keep_an_admin(name)?;
        }
        self.store.set_groups(name, groups)?;
        tracing::info!(user = name, groups = ?groups, "groups changed");
        Ok(())
    }

    /// Delete a user with their tokens. The last administrator cannot be removed.
    pub fn remove_user(&self, name: &str) -> Result<(), AuthError> {
        self.keep_an_admin(name)?;
        if !self.store.remove_user(name)? {
            return Err(AuthError::NotFound {
                message: format!("user '{name}' does not exist"),
            });
        }
        tracing::info!(user = name, "user removed");
        Ok(())
    }

    fn keep_an_admin(&self, leaving: &str) -> Result<(), AuthError> {
        let users = self.store.users()?;
        let admins: Vec<&UserRecord> = users
            .iter()
            .filter(|u| u.groups.iter().any(|g| g == DATA_OPS))
            .collect();
        if admins.len() == 1 && admins[0].name == leaving {
            return Err(AuthError::InvalidInput {
                message: format!(
                    "'{leaving}' is the last member of data-ops; add another administrator first"
                ),
            });
        }
        Ok(())
    }

    pub fn grants(&self) -> Result<Vec<GrantRecord>, AuthError> {
        Ok(self.store.grants()?)
    }

    /// Give `group` read access to `target`, optionally only to rows matching `row_filter`
    /// (a SQL predicate, checked by the engine before it gets here) and without
    /// `hidden_columns`. Replaces an existing grant of the group on the same target.
    pub fn grant(
        &self,
        group: &str,
        target: &TargetTable,
        row_filter: Option<&str>,
        hidden_columns: &[String],
        by: &str,
    ) -> Result<(), AuthError> {
        check_groups(&[group.to_string()])?;
        for c in hidden_columns {
            if c.is_empty() || c.contains(',') {
                return Err(AuthError::InvalidInput {
                    message: format!("'{c}' is not a column name"),
                });
            }
        }
        let row_filter = row_filter.map(str::trim).filter(|f| !f.is_empty());
        self.store.put_grant(&GrantRecord {
            group: group.to_string(),
            schema: target.schema.clone(),
            table: target.table.clone(),
            row_filter: row_filter.map(str::to_string),
            hidden_columns: hidden_columns.to_vec(),
            created_at: now_secs(),
            created_by: by.to_string(),
        })?;
        tracing::info!(group, target = %target, row_filter = row_filter.is_some(), hidden = hidden_columns.len(), by, "grant set");
        Ok(())
    }

    pub fn revoke_grant(&self, group: &str, target: &TargetTable) -> Result<(), AuthError> {
        if !self
            .store
            .remove_grant(group, &target.schema, target.table.as_deref())?
        {
            return Err(AuthError::NotFound {
                message: format!("group '{group}' has no grant on {target}"),
            });
        }
        tracing::info!(group, target = %target, "grant revoked");
        Ok(())
    }

    /// A new API token for `user`, valid for `ttl` (or until revoked).
    pub fn create_api_token(
        &self,
        user: &str,
        label: &str,
        ttl: Option<Duration>,
    ) -> Result<NewApiToken, AuthError> {
        let id = crate::random_token(8)?;
        let secret = crate::random_token(32)?;
        let now = now_secs();
        let expires_at = ttl.map(|t| now + t.as_secs() as i64);
        self.store.add_api_token(&ApiTokenRecord {
            id: id.clone(),
            user: user.to_string(),
            label: label.to_string(),
            secret_hash: hash_secret(&secret),
            created_at: now,
            expires_at,
            last_used_at: None,
            revoked_at: None,
        })?;
        tracing::info!(user, token_id = %id, "API token created");
        Ok(NewApiToken {
            token: format!("{API_TOKEN_PREFIX}{id}_{secret}"),
            id,
            expires_at,
        })
    }

    pub fn api_tokens(&self, user: Option<&str>) -> Result<Vec<ApiTokenRecord>, AuthError> {
        Ok(self.store.api_tokens(user)?)
    }

    pub fn revoke_api_token(&self, id: &str) -> Result<(), AuthError> {
        if !self.store.revoke_api_token(id)? {
            return Err(AuthError::NotFound {
                message: format!("no live API token with id '{id}'"),
            });
        }
        tracing::info!(token_id = id, "API token revoked");
        Ok(())
    }
}

/// A random password that follows the rules (72 random bits), for generated accounts.
pub fn generate_password() -> Result<String, AuthError> {
    Ok(format!("Dp{}x7", crate::random_token(9)?))
}

fn check_user_name(name: &str) -> Result<(), AuthError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(AuthError::InvalidInput {
            message: format!(
                "'{name}' is not a valid user name: use 1-64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
            ),
        })
    }
}

fn check_groups(groups: &[String]) -> Result<(), AuthError> {
    match groups.iter().find(|g| !valid_name(g)) {
        None => Ok(()),
        Some(g) => Err(AuthError::InvalidInput {
            message: format!(
                "'{g}' is not a valid group name: use 1-64 of a-z, 0-9, '.', '_' and '-'"
            ),
        }),
    }
}
