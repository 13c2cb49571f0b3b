//! Who is calling, and what they are: users, groups, passwords, session and API tokens,
//! shared by every surface.
//!
//! An [`Authenticator`] turns what a caller presents ([`Credentials`]: a user name and
//! password, a signed session token, or an API token) into a [`Principal`] with its groups.
//! Passwords are Argon2id hashes ([`password`]), logins are rate limited per account and per
//! client address, session tokens are HS256 JWTs that can be refreshed and revoked, API
//! tokens are random secrets stored hashed (an assistant's token, [`ASSISTANT_SCOPE`], is good
//! only at the MCP endpoint). [`Accounts`] manages users, groups, grants and API tokens (the
//! `dataport user|grant|token` commands and the admin API use it), and the records of the
//! OAuth 2.1 authorization server that assistants sign in through (clients, codes). Everything is
//! kept in the state store (`dataport-state`), so changes made by another process apply at
//! once.
//!
//! This crate decides who someone is, never what a table contains: the engine turns a
//! principal's groups and the [`Grant`]s into table access. It knows nothing of DataFusion,
//! gRPC or HTTP frameworks: transports parse their headers into [`Credentials`] here and map
//! [`AuthError`] to their own status codes.

mod accounts;
mod assistants;
mod authenticator;
mod credentials;
mod identity;
mod jwt;
pub mod oidc;
pub mod password;
mod sessions;

use dataport_common::{ErrorKind, HasKind};
use std::sync::Arc;

pub use accounts::{
    Accounts, Actor, NewApiToken, PASSWORD_LINK_TTL, PasswordLink, TargetTable, generate_password,
};
pub use assistants::{
    ASSISTANT_ONLY_AT_MCP, ASSISTANT_SCOPE, OAUTH_CODE_TTL, OAUTH_TOKEN_TTL, OAuthGrant,
    OAuthRedemption, REGISTRATION_WINDOW,
};
pub use authenticator::{AuthOptions, Authenticator, Session};
pub use credentials::{Credentials, parse_authorization};
pub use dataport_state::{
    AccountChange, AccountState, ApiTokenRecord, AuditEntry, AuditLog, AuditQuery, BrowserSession,
    DailyCount, GrantRecord as Grant, LoginCode, OAuthClient, OAuthCode, OidcFlow, PasswordPurpose,
    StateError, StateStore, UserRecord, now_secs,
};
pub use identity::{normalize_email, username_for};
pub use jwt::{Claims, TokenScope};
pub use sessions::{LOGIN_CODE_TTL, OIDC_SIGN_IN_TTL, SessionAuth, SessionCookie};

/// Group whose members may read public tables.
pub const DATAREAD: &str = "dataread";
/// Group whose members may read public and private tables.
pub const DATA_PRIVATE: &str = "data-private";
/// Administrators: users, grants, jobs, and all data.
pub const DATA_OPS: &str = "data-ops";

/// User name of the administrator created on first start.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The account's stable id; 0 for the server itself (jobs, the command line).
    pub id: i64,
    /// The username.
    pub name: String,
    /// Sorted group names.
    pub groups: Vec<String>,
    /// Member of [`DATA_OPS`].
    pub admin: bool,
    /// Authenticated by a script's token ([`TokenScope::Script`]): it may read data as the
    /// account does, and nothing else.
    pub limited: bool,
    /// Authenticated by an assistant's API token ([`ASSISTANT_SCOPE`]): it reads data as the
    /// account does through the MCP endpoint, and may do nothing else. Only
    /// [`Authenticator::check_bearer`] answers such a principal; every other way in refuses
    /// the token.
    pub assistant: bool,
}

impl Principal {
    /// A principal that is no account (the server's own work, tests); see [`Principal::account`].
    pub fn new(name: impl Into<String>, groups: Vec<String>) -> Self {
        Self::account(0, name, groups)
    }

    /// The account `id`, named `name`, in `groups`.
    pub fn account(id: i64, name: impl Into<String>, mut groups: Vec<String>) -> Self {
        groups.sort();
        groups.dedup();
        let admin = groups.iter().any(|g| g == DATA_OPS);
        Self {
            id,
            name: name.into(),
            groups,
            admin,
            limited: false,
            assistant: false,
        }
    }

    /// An administrator (member of `data-ops`) named `admin`; for tests and internal jobs.
    pub fn local_admin() -> Self {
        Self::new(BOOTSTRAP_ADMIN, vec![DATA_OPS.to_string()])
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Why a caller could not be authenticated, or an account change was refused. The messages
/// say what to do and never echo secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "authentication required: send 'authorization: Bearer <token>' (log in at POST /api/v1/auth/login) or, for Flight SQL, user name and password"
    )]
    Missing,
    #[error("malformed authorization header: {reason}")]
    Malformed { reason: String },
    #[error("wrong user name or password")]
    InvalidCredentials,
    #[error("this account is disabled; ask an administrator (a member of data-ops)")]
    Disabled,
    #[error("the bearer token is invalid, expired or revoked; log in again")]
    InvalidToken,
    #[error("too many failed logins; try again in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("the password is too weak: {reason}")]
    WeakPassword { reason: String },
    #[error("{message}")]
    InvalidInput { message: String },
    #[error("{message}")]
    NotFound { message: String },
    #[error("{message}")]
    AlreadyExists { message: String },
    #[error("{message}")]
    Conflict { message: String },
    #[error("{message}")]
    Forbidden { message: String },
    #[error("internal authentication error: {message}")]
    Internal { message: String },
}

impl HasKind for AuthError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Missing
            | Self::Malformed { .. }
            | Self::InvalidCredentials
            | Self::InvalidToken => ErrorKind::Unauthenticated,
            Self::Disabled | Self::Forbidden { .. } => ErrorKind::PermissionDenied,
            Self::TooManyAttempts { .. } => ErrorKind::ResourceExhausted,
            Self::WeakPassword { .. } | Self::InvalidInput { .. } => ErrorKind::InvalidArgument,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::Conflict { .. } => ErrorKind::Conflict,
            Self::Internal { .. } => ErrorKind::Internal,
        }
    }
}

impl From<StateError> for AuthError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::NoSuchUser(_) => Self::NotFound {
                message: e.to_string(),
            },
            StateError::UserExists(_) | StateError::EmailTaken(_) => Self::AlreadyExists {
                message: e.to_string(),
            },
            StateError::LastMember { .. } => Self::Conflict {
                message: e.to_string(),
            },
            other => Self::Internal {
                message: other.to_string(),
            },
        }
    }
}

/// Where grants come from: the engine asks on every query, so implementations cache.
pub trait GrantSource: Send + Sync + std::fmt::Debug {
    fn grants(&self) -> Arc<[Grant]>;
}

/// `bytes` random bytes from the OS, hex encoded: salts of secrets, token ids, keys.
pub(crate) fn random_token(bytes: usize) -> Result<String, AuthError> {
    random_bytes(bytes).map(hex::encode)
}

/// `n` random bytes from the OS.
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>, AuthError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Internal {
        message: format!("the operating system's random source failed: {e}"),
    })?;
    Ok(buf)
}

/// Compares in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

/// Whether `name` is a valid user or group name: 1–64 of `a-z 0-9 . _ -`, starting with a
/// letter or digit (the spec's user names: an e-mail's local part, or the e-mail with `@` and
/// `.` replaced by `_`).
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
}

#[cfg(test)]
mod tests;
