//! Browser sessions: kept in the state store, carried by an `HttpOnly` cookie
//! (`<id>.<secret>`, only the secret's SHA-256 stored), with a CSRF token per session (only its
//! SHA-256 stored), idle and absolute expiry, and the account's state checked on every use (a
//! disabled account's sessions are removed; a password change ends the older ones).

use std::time::Duration;

use dataport_state::{BrowserSession, LoginCode, OidcFlow, now_secs};

use crate::authenticator::hash_secret;
use crate::oidc::{AuthorizationSecrets, pkce_challenge};
use crate::{AuthError, Authenticator, Principal, Session, constant_time_eq};

/// How long the command line has to redeem the code a browser approved for it.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(120);

/// How long a sign-in at an OpenID Connect provider may take, from the login page's button to
/// the provider's answer.
pub const OIDC_SIGN_IN_TTL: Duration = Duration::from_secs(600);

/// A new session's cookie value and CSRF token: shown once.
#[derive(Clone)]
pub struct SessionCookie {
    /// The session's public id (listings, revocation).
    pub id: String,
    /// The cookie's value.
    pub value: String,
    /// The token a cookie-authenticated request that changes something must send back.
    pub csrf: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCookie")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A request authenticated by its session cookie.
#[derive(Debug, Clone)]
pub struct SessionAuth {
    pub principal: Principal,
    pub session_id: String,
    csrf_hash: String,
}

impl SessionAuth {
    /// Whether `token` is this session's CSRF token.
    pub fn csrf_matches(&self, token: &str) -> bool {
        constant_time_eq(hash_secret(token).as_bytes(), self.csrf_hash.as_bytes())
    }
}

impl Authenticator {
    /// Opens a browser session for `principal` (after a login). `replacing`, the cookie the
    /// browser had, is ended: a session id is never carried across a login.
    pub fn start_session(
        &self,
        principal: &Principal,
        address: &str,
        user_agent: &str,
        replacing: Option<&str>,
    ) -> Result<SessionCookie, AuthError> {
        if let Some(old) = replacing {
            let _ = self.end_session(old);
        }
        let id = crate::random_token(8)?;
        let secret = crate::random_token(32)?;
        let csrf = crate::random_token(16)?;
        let now = now_secs();
        let idle = self.options().session_idle.as_secs() as i64;
        self.store().prune_browser_sessions(now, now - idle)?;
        let expires_at = now + self.options().session_lifetime.as_secs() as i64;
        self.store().add_browser_session(&BrowserSession {
            id: id.clone(),
            account_id: principal.id,
            secret_hash: hash_secret(&secret),
            csrf_hash: hash_secret(&csrf),
            created_at: now,
            last_seen_at: now,
            expires_at,
            address: address.to_string(),
            user_agent: user_agent.chars().take(200).collect(),
        })?;
        tracing::info!(user = %principal.name, session = %id, "browser session started");
        Ok(SessionCookie {
            value: format!("{id}.{secret}"),
            id,
            csrf,
            expires_at,
        })
    }

    /// The session a cookie carries: unexpired (idle and absolute), its account active and
    /// its password unchanged since.
    pub fn check_session(&self, cookie: &str) -> Result<SessionAuth, AuthError> {
        let session = self.session_of(cookie)?;
        let now = now_secs();
        let idle = self.options().session_idle.as_secs() as i64;
        if now >= session.expires_at || now - session.last_seen_at > idle {
            return Err(AuthError::InvalidToken);
        }
        let principal = self
            .account_principal(session.account_id, session.created_at)?
            .ok_or(AuthError::InvalidToken)?;
        self.touch_session(&session.id, now);
        Ok(SessionAuth {
            principal,
            session_id: session.id,
            csrf_hash: session.csrf_hash,
        })
    }

    /// Ends the session a cookie carries.
    pub fn end_session(&self, cookie: &str) -> Result<(), AuthError> {
        let session = self.session_of(cookie)?;
        self.store().remove_browser_session(&session.id, None)?;
        Ok(())
    }

    /// An account's sessions, newest first.
    pub fn sessions(&self, account: i64) -> Result<Vec<BrowserSession>, AuthError> {
        Ok(self.store().browser_sessions(account)?)
    }

    /// Ends one of `account`'s sessions by its public id.
    pub fn end_session_of(&self, account: i64, id: &str) -> Result<(), AuthError> {
        if self.store().remove_browser_session(id, Some(account))? {
            Ok(())
        } else {
            Err(AuthError::NotFound {
                message: format!("you have no session '{id}'"),
            })
        }
    }

    fn session_of(&self, cookie: &str) -> Result<BrowserSession, AuthError> {
        let (id, secret) = cookie
            .trim()
            .split_once('.')
            .ok_or(AuthError::InvalidToken)?;
        let session = self
            .store()
            .browser_session(id)?
            .ok_or(AuthError::InvalidToken)?;
        if !constant_time_eq(
            hash_secret(secret).as_bytes(),
            session.secret_hash.as_bytes(),
        ) {
            return Err(AuthError::InvalidToken);
        }
        Ok(session)
    }

    /// Starts a sign-in at OpenID Connect `provider`: new `state`, `nonce` and PKCE secrets,
    /// kept (the state only as a hash) with where the browser goes afterwards, for
    /// [`OIDC_SIGN_IN_TTL`].
    pub fn begin_oidc_sign_in(
        &self,
        provider: &str,
        next: &str,
    ) -> Result<AuthorizationSecrets, AuthError> {
        let secrets = AuthorizationSecrets::new()?;
        let now = now_secs();
        self.store().add_oidc_flow(
            &OidcFlow {
                state_hash: hash_secret(&secrets.state),
                provider: provider.to_string(),
                nonce: secrets.nonce.clone(),
                verifier: secrets.verifier.clone(),
                next: next.to_string(),
                created_at: now,
            },
            now - OIDC_SIGN_IN_TTL.as_secs() as i64,
        )?;
        Ok(secrets)
    }

    /// The sign-in a provider's answer with `state` belongs to, taken: a second answer with
    /// the same `state` (a replay) or one after [`OIDC_SIGN_IN_TTL`] finds none.
    pub fn take_oidc_sign_in(&self, state: &str) -> Result<Option<OidcFlow>, AuthError> {
        let stale_before = now_secs() - OIDC_SIGN_IN_TTL.as_secs() as i64;
        Ok(self
            .store()
            .take_oidc_flow(&hash_secret(state.trim()), stale_before)?)
    }

    /// A one-time code for a program on the user's machine (`dataport login` through the
    /// browser) to sign in as `principal`, who approved it in a browser session. Only the
    /// program that sent `challenge` (PKCE `S256`) can redeem it, within [`LOGIN_CODE_TTL`].
    pub fn grant_login_code(
        &self,
        principal: &Principal,
        challenge: &str,
    ) -> Result<String, AuthError> {
        let well_formed = challenge.len() == 43
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(AuthError::InvalidInput {
                message:
                    "the challenge must be the base64url SHA-256 of a verifier (43 characters)"
                        .into(),
            });
        }
        let code = crate::random_token(32)?;
        let now = now_secs();
        self.store().add_login_code(
            &LoginCode {
                code_hash: hash_secret(&code),
                account_id: principal.id,
                challenge: challenge.to_string(),
                created_at: now,
            },
            now - LOGIN_CODE_TTL.as_secs() as i64,
        )?;
        tracing::info!(user = %principal.name, "command-line sign-in approved in the browser");
        Ok(code)
    }

    /// A session token for the program that holds the verifier of a code's challenge: once,
    /// within [`LOGIN_CODE_TTL`], for an account that is still active.
    pub fn redeem_login_code(&self, code: &str, verifier: &str) -> Result<Session, AuthError> {
        let stale_before = now_secs() - LOGIN_CODE_TTL.as_secs() as i64;
        let unusable = || AuthError::InvalidInput {
            message: "the sign-in code is unknown, used or expired: run dataport login again"
                .into(),
        };
        let found = self
            .store()
            .take_login_code(&hash_secret(code.trim()), stale_before)?
            .ok_or_else(unusable)?;
        if !constant_time_eq(
            pkce_challenge(verifier).as_bytes(),
            found.challenge.as_bytes(),
        ) {
            return Err(unusable());
        }
        let principal = self
            .account_principal(found.account_id, found.created_at)?
            .ok_or(AuthError::Disabled)?;
        self.issue(principal)
    }
}
