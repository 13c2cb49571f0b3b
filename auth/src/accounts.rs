//! [`Accounts`]: managing users, groups, grants and API tokens, with every rule checked here
//! (names, password rules, the last administrator) so the CLI and the admin API agree.

use std::sync::Arc;
use std::time::Duration;

use dataport_state::{
    AccountChange, AccountState, ApiTokenRecord, GrantRecord, LinkRefusal, NewAccount,
    PasswordPurpose, StateStore, UserRecord, now_secs,
};

use crate::authenticator::{API_TOKEN_PREFIX, hash_secret};
use crate::password::{check_password_rules, hash_password};
use crate::{AuthError, DATA_OPS, Principal, normalize_email, username_for, valid_name};

/// Who makes a change to an account, for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub id: Option<i64>,
    pub name: String,
    /// The request that made it (empty for the command line).
    pub request_id: String,
}

impl Actor {
    /// Someone at the server's command line: `cli:<login>` (the `sudo` caller's, else the
    /// user's).
    pub fn command_line() -> Self {
        let name = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .map(|u| format!("cli:{u}"))
            .unwrap_or_else(|_| "cli".into());
        Self {
            id: None,
            name,
            request_id: String::new(),
        }
    }

    /// The server itself (the accounts it makes on its first start).
    pub fn server() -> Self {
        Self {
            id: None,
            name: "dataport".into(),
            request_id: String::new(),
        }
    }

    /// An administrator through the API.
    pub fn principal(principal: &Principal, request_id: &str) -> Self {
        Self {
            id: (principal.id > 0).then_some(principal.id),
            name: principal.name.clone(),
            request_id: request_id.to_string(),
        }
    }
}

/// Account administration over the state store.
#[derive(Debug, Clone)]
pub struct Accounts {
    store: Arc<StateStore>,
    /// The organisation's email domains (usernames from the local part).
    domains: Arc<[String]>,
    /// Groups of an invited account whose invitation names none.
    default_groups: Arc<[String]>,
    /// Outside emails that may register with a password (`auth.password_emails`).
    password_emails: Arc<[String]>,
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

/// How long a set-up or reset link is valid.
pub const PASSWORD_LINK_TTL: Duration = Duration::from_secs(3600);

/// Requests for password links per account and per client address within
/// [`LINK_REQUEST_WINDOW`] seconds.
const LINK_REQUESTS: u32 = 5;
const LINK_REQUEST_WINDOW: i64 = 60;

/// A one-time link to set a password: its token is shown (mailed) once, only its hash is kept.
#[derive(Clone)]
pub struct PasswordLink {
    pub account: UserRecord,
    pub purpose: PasswordPurpose,
    pub token: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for PasswordLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordLink")
            .field("account", &self.account.name)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
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
    /// Accounts of no organisation domain, invited into `dataread` by default.
    pub fn new(store: Arc<StateStore>) -> Self {
        Self {
            store,
            domains: Arc::from(Vec::new()),
            default_groups: Arc::from(vec![crate::DATAREAD.to_string()]),
            password_emails: Arc::from(Vec::new()),
        }
    }

    /// Outside `emails` that may register with a password (`auth.password_emails`): asking
    /// for a password link creates their account, invited into the default groups.
    pub fn with_password_emails(mut self, emails: &[String]) -> Self {
        self.password_emails = emails
            .iter()
            .filter_map(|e| normalize_email(e).ok())
            .collect();
        self
    }

    /// The organisation's email `domains` (`auth.allowed_domains`) and the groups of an
    /// invitation that names none (`auth.default_groups`).
    pub fn with_organisation(mut self, domains: &[String], default_groups: &[String]) -> Self {
        self.domains = domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
            .collect();
        self.default_groups = default_groups.into();
        self
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

    /// The account a login names: its username, else its email (any case).
    pub fn account(&self, login: &str) -> Result<UserRecord, AuthError> {
        self.store
            .user_by_login(login)?
            .ok_or_else(|| AuthError::NotFound {
                message: format!("no account '{login}' (give a username or an email)"),
            })
    }

    /// The account with this id.
    pub fn account_by_id(&self, id: i64) -> Result<UserRecord, AuthError> {
        self.store
            .user_by_id(id)?
            .ok_or_else(|| AuthError::NotFound {
                message: format!("no account with id {id}"),
            })
    }

    /// Create an active username-only account with a password. The password must follow
    /// the rules; groups must be valid names.
    pub fn add_user(&self, name: &str, password: &str, groups: &[String]) -> Result<(), AuthError> {
        self.create_user(name, password, groups, &Actor::command_line())
            .map(|_| ())
    }

    /// [`add_user`](Self::add_user), recorded as made by `by`; the new account's id.
    pub fn create_user(
        &self,
        name: &str,
        password: &str,
        groups: &[String],
        by: &Actor,
    ) -> Result<i64, AuthError> {
        check_user_name(name)?;
        check_groups(groups)?;
        check_password_rules(password)?;
        let hash = hash_password(password)?;
        let id = self.store.add_user(name, &hash, groups)?;
        tracing::info!(user = name, groups = ?groups, "user created");
        self.record(
            by,
            "create",
            id,
            name,
            &format!("groups: {}", groups.join(",")),
        )?;
        Ok(id)
    }

    /// Invite `email` into `groups` (else the default groups): an account in state `invited`,
    /// without a password, that becomes active at its first sign-in. The organisation's
    /// domains decide its username.
    pub fn invite(
        &self,
        email: &str,
        display_name: &str,
        groups: Option<&[String]>,
        by: &Actor,
    ) -> Result<UserRecord, AuthError> {
        self.add_invited(email, display_name, groups, by, "invite")
    }

    fn add_invited(
        &self,
        email: &str,
        display_name: &str,
        groups: Option<&[String]>,
        by: &Actor,
        action: &str,
    ) -> Result<UserRecord, AuthError> {
        let email = normalize_email(email)?;
        let groups = groups.unwrap_or(&self.default_groups);
        check_groups(groups)?;
        let username = username_for(&email, &self.domains, |name| {
            self.store.user(name).ok().flatten().is_some()
        })?;
        let id = self.store.add_account(&NewAccount {
            username: username.clone(),
            email: Some(email.clone()),
            display_name: display_name.trim().to_string(),
            picture_url: None,
            state: AccountState::Invited,
            password_hash: None,
            groups: groups.to_vec(),
        })?;
        tracing::info!(user = %username, groups = ?groups, action, "account invited");
        self.record(
            by,
            action,
            id,
            &username,
            &format!("{email}; groups: {}", groups.join(",")),
        )?;
        self.account_by_id(id)
    }

    /// Disable (no sign-in; its sessions and tokens are refused) or enable an account. The
    /// last active administrator cannot be disabled.
    pub fn set_state(
        &self,
        login: &str,
        state: AccountState,
        by: &Actor,
    ) -> Result<UserRecord, AuthError> {
        let account = self.account(login)?;
        if state == AccountState::Invited {
            return Err(AuthError::InvalidInput {
                message: "an account can be set active or disabled".into(),
            });
        }
        // Enabling an invited account that has no password would leave it unable to sign in
        // with one: it stays invited until its first sign-in.
        let state = match (account.state, state) {
            (AccountState::Invited, AccountState::Active) => AccountState::Invited,
            _ => state,
        };
        self.store
            .set_account_state(account.id, state, Some(DATA_OPS))?;
        if state == AccountState::Disabled {
            // Enabling the account again must not bring its browser sessions back.
            self.store.remove_browser_sessions_of(account.id)?;
        }
        let action = match state {
            AccountState::Disabled => "disable",
            _ => "enable",
        };
        tracing::info!(user = %account.name, state = %state, "account state changed");
        self.record(by, action, account.id, &account.name, "")?;
        self.account_by_id(account.id)
    }

    /// Set a new password; sessions opened before it end. An invited account becomes active.
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AuthError> {
        check_password_rules(password)?;
        let hash = hash_password(password)?;
        let account = self.account(name)?;
        self.store.set_password_hash(&account.name, &hash)?;
        tracing::info!(user = %account.name, "password changed");
        self.record(
            &Actor::command_line(),
            "password",
            account.id,
            &account.name,
            "",
        )
    }

    /// Replace a user's groups. The last active administrator cannot leave `data-ops`.
    pub fn set_groups(&self, name: &str, groups: &[String]) -> Result<(), AuthError> {
        self.change_groups(name, groups, &Actor::command_line())
            .map(|_| ())
    }

    /// [`set_groups`](Self::set_groups), recorded as made by `by`.
    pub fn change_groups(
        &self,
        login: &str,
        groups: &[String],
        by: &Actor,
    ) -> Result<UserRecord, AuthError> {
        check_groups(groups)?;
        let account = self.account(login)?;
        self.store
            .set_account_groups(account.id, groups, Some(DATA_OPS))?;
        tracing::info!(user = %account.name, groups = ?groups, "groups changed");
        self.record(by, "groups", account.id, &account.name, &groups.join(","))?;
        self.account_by_id(account.id)
    }

    /// Delete a user with their tokens. The last active administrator cannot be removed.
    pub fn remove_user(&self, name: &str) -> Result<(), AuthError> {
        self.delete(name, &Actor::command_line())
    }

    /// [`remove_user`](Self::remove_user), recorded as made by `by`.
    pub fn delete(&self, login: &str, by: &Actor) -> Result<(), AuthError> {
        let account = self.account(login)?;
        self.store.remove_account(account.id, Some(DATA_OPS))?;
        tracing::info!(user = %account.name, "account deleted");
        let detail = account.email.clone().unwrap_or_default();
        self.record(by, "delete", account.id, &account.name, &detail)
    }

    /// The newest changes to accounts, newest first.
    pub fn changes(
        &self,
        account: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AccountChange>, AuthError> {
        Ok(self.store.account_changes(account, limit)?)
    }

    fn record(
        &self,
        by: &Actor,
        action: &str,
        id: i64,
        name: &str,
        detail: &str,
    ) -> Result<(), AuthError> {
        self.store.record_account_change(&AccountChange {
            at_ms: chrono::Utc::now().timestamp_millis(),
            actor_id: by.id,
            actor: by.name.clone(),
            action: action.to_string(),
            account_id: Some(id),
            account: name.to_string(),
            detail: detail.to_string(),
            request_id: by.request_id.clone(),
        })?;
        Ok(())
    }

    /// The account an identity verified by an OpenID Connect `provider` signs in as: the
    /// account with its email (an invited one becomes active; its display name and picture
    /// follow the provider's), else, for an email of the organisation's domains, a new active
    /// account in the default groups. Anyone else is refused: an administrator invites outside
    /// emails.
    pub fn oidc_sign_in(
        &self,
        provider: &str,
        email: &str,
        name: Option<&str>,
        picture: Option<&str>,
    ) -> Result<UserRecord, AuthError> {
        let email = normalize_email(email)?;
        let by = Actor {
            id: None,
            name: format!("oidc:{provider}"),
            request_id: String::new(),
        };
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        if let Some(account) = self.store.user_by_login(&email)? {
            if account.state == AccountState::Disabled {
                return Err(AuthError::Disabled);
            }
            let display = name.unwrap_or(&account.display_name).to_string();
            self.store.set_account_profile(
                account.id,
                &display,
                picture.or(account.picture_url.as_deref()),
            )?;
            if account.state == AccountState::Invited {
                self.record(&by, "activate", account.id, &account.name, &email)?;
            }
            return self.account_by_id(account.id);
        }
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if !self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Err(AuthError::Forbidden {
                message: format!("{email} has no account here; an administrator can invite it"),
            });
        }
        let username = username_for(&email, &self.domains, |n| {
            self.store.user(n).ok().flatten().is_some()
        })?;
        let id = self.store.add_account(&NewAccount {
            username: username.clone(),
            email: Some(email.clone()),
            display_name: name.unwrap_or_default().to_string(),
            picture_url: picture.map(String::from),
            state: AccountState::Active,
            password_hash: None,
            groups: self.default_groups.to_vec(),
        })?;
        tracing::info!(user = %username, provider, "account created at its first sign-in");
        self.record(&by, "create", id, &username, &email)?;
        self.account_by_id(id)
    }

    /// The normalized `login` when it is an email of `auth.password_emails`.
    fn registering(&self, login: &str) -> Option<String> {
        let email = normalize_email(login).ok()?;
        self.password_emails.contains(&email).then_some(email)
    }

    /// Counts a request for a password link for `login` from `address`; refused beyond the
    /// limit (per account and per address), whether or not the account exists.
    pub fn check_link_request(&self, login: &str, address: &str) -> Result<(), AuthError> {
        let now = now_secs();
        let key = login.trim().to_ascii_lowercase();
        let (by_account, by_address) =
            self.store
                .password_requests_since(&key, address, now - LINK_REQUEST_WINDOW)?;
        if by_account >= LINK_REQUESTS || by_address >= LINK_REQUESTS {
            tracing::warn!(address, "password link refused: too many requests");
            return Err(AuthError::TooManyAttempts {
                retry_after_secs: LINK_REQUEST_WINDOW as u64,
            });
        }
        self.store.record_password_request(now, &key, address)?;
        Ok(())
    }

    /// A one-time link for the account `login` names (username or email): to set up the first
    /// password of an invited account, else to reset it. An email of `auth.password_emails`
    /// without an account registers: it is invited into the default groups. None when there is
    /// no such account or it is disabled: the caller answers the same either way.
    pub fn password_link(&self, login: &str) -> Result<Option<PasswordLink>, AuthError> {
        let account = match self.store.user_by_login(login.trim())? {
            Some(account) => account,
            None => match self.registering(login) {
                Some(email) => {
                    let by = Actor {
                        id: None,
                        name: "self-registration".into(),
                        request_id: String::new(),
                    };
                    self.add_invited(&email, "", None, &by, "register")?
                }
                None => return Ok(None),
            },
        };
        let purpose = match account.state {
            AccountState::Disabled => return Ok(None),
            AccountState::Invited => PasswordPurpose::Setup,
            AccountState::Active => PasswordPurpose::Reset,
        };
        let token = crate::random_token(32)?;
        let now = now_secs();
        let expires_at = now + PASSWORD_LINK_TTL.as_secs() as i64;
        self.store.add_password_token(
            &hash_secret(&token),
            account.id,
            purpose,
            now,
            expires_at,
        )?;
        tracing::info!(user = %account.name, purpose = purpose.as_str(), "password link issued");
        Ok(Some(PasswordLink {
            account,
            purpose,
            token,
            expires_at,
        }))
    }

    /// Sets the password through a link's token: once, within its hour; every other link of
    /// the account ends with it, and so do its sessions. An invited account becomes active.
    pub fn set_password_with_link(
        &self,
        token: &str,
        password: &str,
    ) -> Result<UserRecord, AuthError> {
        check_password_rules(password)?;
        let hash = hash_password(password)?;
        match self
            .store
            .use_password_token(&hash_secret(token.trim()), &hash, now_secs())?
        {
            Ok(id) => {
                let account = self.account_by_id(id)?;
                tracing::info!(user = %account.name, "password set through a link");
                let by = Actor {
                    id: Some(id),
                    name: account.name.clone(),
                    request_id: String::new(),
                };
                self.record(
                    &by,
                    "password",
                    id,
                    &account.name,
                    "through an emailed link",
                )?;
                Ok(account)
            }
            Err(LinkRefusal::Disabled) => Err(AuthError::Disabled),
            Err(LinkRefusal::Invalid) => Err(AuthError::InvalidInput {
                message: "this link is invalid, expired or already used; ask for a new one".into(),
            }),
        }
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

    /// A new API token for `user`, valid for `ttl` (or until revoked), for the whole API.
    pub fn create_api_token(
        &self,
        user: &str,
        label: &str,
        ttl: Option<Duration>,
    ) -> Result<NewApiToken, AuthError> {
        self.create_scoped_api_token(user, label, ttl, None)
    }

    /// A new API token for `user`, valid for `ttl` (or until revoked), for the whole API
    /// (`scope` none) or only for an assistant at the MCP endpoint
    /// ([`ASSISTANT_SCOPE`](crate::ASSISTANT_SCOPE)).
    pub fn create_scoped_api_token(
        &self,
        user: &str,
        label: &str,
        ttl: Option<Duration>,
        scope: Option<&str>,
    ) -> Result<NewApiToken, AuthError> {
        let scope = crate::assistants::check_scope(scope)?;
        let account = self.account(user)?;
        let (record, created) = new_token_record(&account, label, ttl, scope)?;
        self.store.add_api_token(&record)?;
        tracing::info!(user, token_id = %created.id, scope = scope.unwrap_or("api"), "API token created");
        Ok(created)
    }

    pub fn api_tokens(&self, user: Option<&str>) -> Result<Vec<ApiTokenRecord>, AuthError> {
        Ok(self.store.api_tokens(user)?)
    }

    /// Revokes one of `account`'s own API tokens; another account's is "not found".
    pub fn revoke_own_api_token(&self, account: i64, id: &str) -> Result<(), AuthError> {
        let owned = self
            .store
            .api_tokens(None)?
            .iter()
            .any(|t| t.id == id && t.account_id == account && t.revoked_at.is_none());
        if !owned {
            return Err(AuthError::NotFound {
                message: format!("you have no live API token with id '{id}'"),
            });
        }
        self.revoke_api_token(id)
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

/// A new token's record (only the secret's hash) for `account`, and the token to show once.
pub(crate) fn new_token_record(
    account: &UserRecord,
    label: &str,
    ttl: Option<Duration>,
    scope: Option<&str>,
) -> Result<(ApiTokenRecord, NewApiToken), AuthError> {
    let id = crate::random_token(8)?;
    let secret = crate::random_token(32)?;
    let now = now_secs();
    let expires_at =
        ttl.map(|t| now.saturating_add(i64::try_from(t.as_secs()).unwrap_or(i64::MAX)));
    let record = ApiTokenRecord {
        id: id.clone(),
        account_id: account.id,
        user: account.name.clone(),
        label: label.to_string(),
        secret_hash: hash_secret(&secret),
        created_at: now,
        expires_at,
        last_used_at: None,
        revoked_at: None,
        scope: scope.map(str::to_string),
    };
    let created = NewApiToken {
        token: format!("{API_TOKEN_PREFIX}{id}_{secret}"),
        id,
        expires_at,
    };
    Ok((record, created))
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
