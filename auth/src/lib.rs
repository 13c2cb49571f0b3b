//! Who is calling: principals, credential checks and bearer tokens, shared by every surface.
//!
//! An [`Authenticator`] turns the value of an `Authorization` header ([`Credentials`]) into a
//! [`Principal`]. Passwords are checked by a pluggable [`PasswordVerifier`]; until accounts
//! exist that is the [`BootstrapAdmin`]. Successful logins get a short-lived bearer token from
//! the [`TokenStore`], so clients do not resend passwords on every call.
//!
//! This crate knows nothing of DataFusion, gRPC or HTTP frameworks: transports parse their
//! headers into [`Credentials`] here and map [`AuthError`] to their own status codes.

mod credentials;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

pub use credentials::{Credentials, parse_authorization};
pub use tokens::TokenStore;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub admin: bool,
}

impl Principal {
    /// The bootstrap administrator.
    pub fn local_admin() -> Self {
        Self {
            name: BOOTSTRAP_ADMIN.into(),
            admin: true,
        }
    }
}

/// User name of the bootstrap administrator.
pub const BOOTSTRAP_ADMIN: &str = "admin";

/// Why a caller could not be authenticated. Every variant means "unauthenticated" to a client;
/// the messages say what to send instead and never echo secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "authentication required: send 'authorization: Basic <base64 user:password>' or 'authorization: Bearer <token>'"
    )]
    Missing,
    #[error("malformed authorization header: {reason}")]
    Malformed { reason: String },
    #[error("wrong user name or password")]
    InvalidCredentials,
    #[error("the bearer token is unknown or has expired; log in again with user name and password")]
    InvalidToken,
}

/// Checks a user name and password. Implementations must take the same time for an unknown
/// user as for a wrong password.
pub trait PasswordVerifier: Send + Sync + std::fmt::Debug {
    fn verify(&self, user: &str, password: &str) -> Result<Principal, AuthError>;
}

/// The one account that exists before user management: `admin` with a configured password.
pub struct BootstrapAdmin {
    password: String,
}

impl std::fmt::Debug for BootstrapAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapAdmin").finish_non_exhaustive()
    }
}

impl BootstrapAdmin {
    pub fn new(password: impl Into<String>) -> Self {
        Self {
            password: password.into(),
        }
    }
}

impl PasswordVerifier for BootstrapAdmin {
    fn verify(&self, user: &str, password: &str) -> Result<Principal, AuthError> {
        // Evaluate both comparisons so timing does not tell which one failed.
        let user_ok = constant_time_eq(user.as_bytes(), BOOTSTRAP_ADMIN.as_bytes());
        let password_ok = constant_time_eq(password.as_bytes(), self.password.as_bytes());
        if user_ok & password_ok {
            Ok(Principal::local_admin())
        } else {
            Err(AuthError::InvalidCredentials)
        }
    }
}

/// Compares in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0);
    }
    diff == 0
}

/// Authenticates callers of every surface: passwords through the verifier, tokens through
/// the store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Authenticator {
    verifier: Arc<dyn PasswordVerifier>,
    tokens: Arc<TokenStore>,
}

impl Authenticator {
    pub fn new(verifier: Arc<dyn PasswordVerifier>, token_ttl: Duration) -> Self {
        Self {
            verifier,
            tokens: Arc::new(TokenStore::new(token_ttl)),
        }
    }

    /// The principal behind `credentials`.
    pub fn authenticate(&self, credentials: &Credentials) -> Result<Principal, AuthError> {
        match credentials {
            Credentials::Basic { user, password } => self.verifier.verify(user, password),
            Credentials::Bearer(token) => self.tokens.lookup(token),
        }
    }

    /// The principal behind an `Authorization` header value (absent: [`AuthError::Missing`]).
    pub fn authenticate_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let credentials = parse_authorization(header.ok_or(AuthError::Missing)?)?;
        self.authenticate(&credentials)
    }

    /// A new bearer token for `principal`.
    pub fn issue_token(&self, principal: &Principal) -> String {
        self.tokens.issue(principal.clone())
    }

    /// Forget a token (logout). Unknown tokens are ignored.
    pub fn revoke_token(&self, token: &str) {
        self.tokens.revoke(token);
    }
}

#[cfg(test)]
mod tests;
