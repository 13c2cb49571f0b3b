//! [`Authenticator`]: passwords, session tokens and API tokens to principals.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dataport_state::{
    AccountState, ApiTokenRecord, AuditEntry, AuditLog, LoginAttempt, StateStore, UserRecord,
    now_secs,
};
use sha2::{Digest, Sha256};

use crate::jwt::{Claims, TokenKeys, TokenScope};
use crate::password::{decoy_hash, verify_password};
use crate::{AuthError, Credentials, Grant, GrantSource, Principal, constant_time_eq};

/// The window of the login rate limit, in seconds.
const RATE_WINDOW: i64 = 60;
/// Prefix of API tokens: `dpk_<id>_<secret>`.
pub(crate) const API_TOKEN_PREFIX: &str = "dpk_";
/// Settings key of the generated signing key.
const SIGNING_KEY_SETTING: &str = "jwt_secret";

/// How tokens are issued.
#[derive(Clone)]
pub struct AuthOptions {
    /// `iss` of issued tokens; tokens from another issuer are refused.
    pub issuer: String,
    /// Lifetime of a session token.
    pub token_ttl: Duration,
    /// How long after expiry a token may still be refreshed.
    pub refresh_grace: Duration,
    /// HS256 key; when absent one is generated once and kept in the state store.
    pub signing_key: Option<String>,
    /// Failed password attempts allowed per account and per client address within a minute;
    /// beyond it every attempt is refused until the minute has passed.
    pub max_failed_logins: u32,
    /// Where refused authentications are recorded (see [`Authenticator::record_refusal`]).
    pub audit: Option<AuditLog>,
    /// A browser session ends after this long without a request…
    pub session_idle: Duration,
    /// …and this long after it started, whatever the activity.
    pub session_lifetime: Duration,
}

impl std::fmt::Debug for AuthOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthOptions")
            .field("issuer", &self.issuer)
            .field("token_ttl", &self.token_ttl)
            .field("refresh_grace", &self.refresh_grace)
            .field(
                "signing_key",
                &self.signing_key.as_ref().map(|_| "<redacted>"),
            )
            .field("max_failed_logins", &self.max_failed_logins)
            .field("audit", &self.audit.is_some())
            .field("session_idle", &self.session_idle)
            .field("session_lifetime", &self.session_lifetime)
            .finish()
    }
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            issuer: "dataport".into(),
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_grace: Duration::from_secs(7 * 24 * 3600),
            signing_key: None,
            max_failed_logins: 5,
            audit: None,
            session_idle: Duration::from_secs(12 * 3600),
            session_lifetime: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A logged-in session: the bearer token to send and who it is for.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub token: String,
    pub principal: Principal,
    /// Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Authenticates callers of every surface. Cheap to clone; clones share a cache of the
/// identities that reloads whenever the state store's identities change.
///
/// ```
/// use std::sync::Arc;
/// use dataport_auth::{Accounts, AuthOptions, Authenticator, DATAREAD, StateStore};
/// use dataport_auth::parse_authorization;
///
/// let data = tempfile::tempdir()?;
/// let store = Arc::new(StateStore::open(data.path())?);
/// let accounts = Accounts::new(Arc::clone(&store));
/// accounts.add_user("ana", "Correct-Horse-7", &[DATAREAD.to_string()])?;
///
/// let auth = Authenticator::new(store, AuthOptions::default())?;
/// let session = auth.login("ana", "Correct-Horse-7", "192.0.2.10")?;
///
/// // A transport parses its header and asks who is calling.
/// let credentials = parse_authorization(&format!("Bearer {}", session.token))?;
/// let ana = auth.authenticate(&credentials, "192.0.2.10")?;
/// assert_eq!(ana.name, "ana");
/// assert!(ana.in_group(DATAREAD) && !ana.admin);
///
/// // A wrong password, or a token after logout, is refused.
/// assert!(auth.login("ana", "guess", "192.0.2.10").is_err());
/// auth.revoke(&session.token)?;
/// assert!(auth.authenticate(&credentials, "192.0.2.10").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Authenticator(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Arc<StateStore>,
    keys: TokenKeys,
    options: AuthOptions,
    cache: RwLock<Arc<Identities>>,
    token_touches: Mutex<HashMap<String, i64>>,
}

/// Everything needed to answer "who is this" without touching the database.
#[derive(Debug, Default)]
struct Identities {
    version: i64,
    /// By id.
    accounts: HashMap<i64, UserRecord>,
    /// Username → id.
    by_name: HashMap<String, i64>,
    /// Email (lower case) → id.
    by_email: HashMap<String, i64>,
    grants: Arc<[Grant]>,
    revoked: HashSet<String>,
    api_tokens: HashMap<String, ApiTokenRecord>,
}

impl Identities {
    /// The account a login names: a username, else an email in any case.
    fn by_login(&self, login: &str) -> Option<&UserRecord> {
        let id = self
            .by_name
            .get(login)
            .or_else(|| self.by_email.get(&login.to_ascii_lowercase()))?;
        self.accounts.get(id)
    }

    /// An active account as a principal.
    fn principal(&self, account: &UserRecord) -> Option<Principal> {
        (account.state == AccountState::Active)
            .then(|| Principal::account(account.id, &account.name, account.groups.clone()))
    }
}

impl Authenticator {
    pub fn new(store: Arc<StateStore>, options: AuthOptions) -> Result<Self, AuthError> {
        let key = match &options.signing_key {
            Some(k) if k.len() >= 32 => k.clone(),
            Some(_) => {
                return Err(AuthError::InvalidInput {
                    message: "auth.signing_key must have at least 32 characters".into(),
                });
            }
            None => store.setting_or_insert(SIGNING_KEY_SETTING, &crate::random_token(32)?)?,
        };
        let keys = TokenKeys::new(key.as_bytes(), &options.issuer);
        let auth = Self(Arc::new(Inner {
            store,
            keys,
            options,
            cache: RwLock::new(Arc::new(Identities {
                version: -1,
                ..Default::default()
            })),
            token_touches: Mutex::new(HashMap::new()),
        }));
        auth.identities()?;
        Ok(auth)
    }

    pub fn store(&self) -> &Arc<StateStore> {
        &self.0.store
    }

    pub(crate) fn options(&self) -> &AuthOptions {
        &self.0.options
    }

    /// The active account `id` as a principal, if its password has not changed since `since`.
    pub(crate) fn account_principal(
        &self,
        id: i64,
        since: i64,
    ) -> Result<Option<Principal>, AuthError> {
        let ids = self.identities()?;
        Ok(ids
            .accounts
            .get(&id)
            .filter(|u| since >= u.password_changed_at)
            .and_then(|u| ids.principal(u)))
    }

    /// Records a session's activity, at most once a minute.
    pub(crate) fn touch_session(&self, id: &str, now: i64) {
        let key = format!("session:{id}");
        let mut touches = self
            .0
            .token_touches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if touches.get(&key).is_some_and(|t| now - t < 60) {
            return;
        }
        touches.insert(key, now);
        drop(touches);
        if let Err(e) = self.0.store.touch_browser_session(id, now) {
            tracing::warn!(error = %e, "cannot record a session's activity");
        }
    }

    /// The cached identities, reloaded if anything changed since they were read.
    fn identities(&self) -> Result<Arc<Identities>, AuthError> {
        let version = self.0.store.identity_version()?;
        {
            let cache = self.0.cache.read().unwrap_or_else(|p| p.into_inner());
            if cache.version == version {
                return Ok(Arc::clone(&cache));
            }
        }
        let store = &self.0.store;
        let now = now_secs();
        let grace = self.0.options.refresh_grace.as_secs() as i64;
        let accounts: HashMap<i64, UserRecord> =
            store.users()?.into_iter().map(|u| (u.id, u)).collect();
        let loaded = Arc::new(Identities {
            version,
            by_name: accounts.values().map(|u| (u.name.clone(), u.id)).collect(),
            by_email: accounts
                .values()
                .filter_map(|u| Some((u.email.as_ref()?.to_ascii_lowercase(), u.id)))
                .collect(),
            accounts,
            grants: store.grants()?.into(),
            revoked: store.revoked_jtis(now - grace)?.into_iter().collect(),
            api_tokens: store
                .api_tokens(None)?
                .into_iter()
                .map(|t| (t.id.clone(), t))
                .collect(),
        });
        let mut cache = self.0.cache.write().unwrap_or_else(|p| p.into_inner());
        // Another thread may have loaded a newer version meanwhile.
        if cache.version <= version {
            *cache = Arc::clone(&loaded);
        }
        Ok(loaded)
    }

    /// The principal behind `credentials`. Passwords count towards the rate limit of the
    /// account and of `address` (the client's IP address).
    pub fn authenticate(
        &self,
        credentials: &Credentials,
        address: &str,
    ) -> Result<Principal, AuthError> {
        match credentials {
            Credentials::Basic { user, password } => self.check_password(user, password, address),
            // An assistant's token is good only at the MCP endpoint, which asks check_bearer.
            Credentials::Bearer(token) => match self.check_bearer(token)? {
                p if p.assistant => Err(assistant_elsewhere()),
                p => Ok(p),
            },
        }
    }

    /// The principal behind a bearer token (a session token, an API token, or a script's
    /// token, whose principal is [`limited`](Principal::limited)). A desktop token is refused
    /// here: it is good only where [`check_desktop`](Self::check_desktop) is asked. An
    /// assistant's API token ([`ASSISTANT_SCOPE`](crate::ASSISTANT_SCOPE)) answers a principal
    /// with [`assistant`](Principal::assistant) set: the caller must refuse it unless it is the
    /// MCP endpoint.
    pub fn check_bearer(&self, token: &str) -> Result<Principal, AuthError> {
        if token.starts_with(API_TOKEN_PREFIX) {
            return self.check_api_token(token);
        }
        let claims = self.0.keys.verify(token, true)?;
        match claims.scope {
            None => self.principal_for_claims(&claims),
            Some(TokenScope::Script) => {
                let mut principal = self.principal_for_claims(&claims)?;
                principal.limited = true;
                Ok(principal)
            }
            Some(TokenScope::Desktop) => Err(AuthError::InvalidToken),
        }
    }

    /// The principal behind a token presented to the desktop app's endpoints and the
    /// notification gateway: a desktop token, or any token [`check_bearer`](Self::check_bearer)
    /// takes except a script's.
    pub fn check_desktop(&self, token: &str) -> Result<Principal, AuthError> {
        if token.starts_with(API_TOKEN_PREFIX) {
            return match self.check_api_token(token)? {
                p if p.assistant => Err(assistant_elsewhere()),
                p => Ok(p),
            };
        }
        let claims = self.0.keys.verify(token, true)?;
        match claims.scope {
            None | Some(TokenScope::Desktop) => self.principal_for_claims(&claims),
            Some(TokenScope::Script) => Err(AuthError::InvalidToken),
        }
    }

    /// A limited token for `principal`, valid for `ttl`, and its id (to revoke it with
    /// [`revoke_id`](Self::revoke_id)). It cannot be refreshed.
    pub fn issue_scoped(
        &self,
        principal: Principal,
        scope: TokenScope,
        ttl: Duration,
    ) -> Result<(Session, String), AuthError> {
        let now = now_secs();
        let expires_at = now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        let jti = crate::random_token(16)?;
        let claims = Claims {
            sub: principal.name.clone(),
            uid: (principal.id > 0).then_some(principal.id),
            exp: expires_at,
            iat: now,
            iss: self.0.keys.issuer().to_string(),
            jti: jti.clone(),
            scope: Some(scope),
        };
        let session = Session {
            token: self.0.keys.sign(&claims)?,
            principal,
            expires_at,
        };
        Ok((session, jti))
    }

    /// Revoke the token with id `jti` that expires at `expires_at` (Unix seconds).
    pub fn revoke_id(&self, jti: &str, expires_at: i64) -> Result<(), AuthError> {
        self.0.store.revoke_jti(jti, expires_at)?;
        Ok(())
    }

    /// Log in with a password: a new session token.
    pub fn login(&self, user: &str, password: &str, address: &str) -> Result<Session, AuthError> {
        let principal = self.check_password(user, password, address)?;
        self.issue(principal)
    }

    /// A session token for a principal who was authenticated otherwise (Flight handshake).
    pub fn issue(&self, principal: Principal) -> Result<Session, AuthError> {
        let now = now_secs();
        let expires_at = now + self.0.options.token_ttl.as_secs() as i64;
        let claims = Claims {
            sub: principal.name.clone(),
            uid: (principal.id > 0).then_some(principal.id),
            exp: expires_at,
            iat: now,
            iss: self.0.keys.issuer().to_string(),
            jti: crate::random_token(16)?,
            scope: None,
        };
        Ok(Session {
            token: self.0.keys.sign(&claims)?,
            principal,
            expires_at,
        })
    }

    /// Exchange a session token — valid, or expired for less than the refresh grace — for a
    /// new one; the old one is revoked.
    pub fn refresh(&self, token: &str) -> Result<Session, AuthError> {
        let claims = self.claims_within_grace(token)?;
        let principal = self.principal_for_claims(&claims)?;
        self.revoke_claims(&claims)?;
        self.issue(principal)
    }

    /// Revoke a session token (logout) or an API token. The token must be one the caller
    /// could still use or refresh.
    pub fn revoke(&self, token: &str) -> Result<(), AuthError> {
        if token.starts_with(API_TOKEN_PREFIX) {
            let (id, _) = self.api_token_record(token)?;
            self.0.store.revoke_api_token(&id)?;
            return Ok(());
        }
        let claims = self.claims_within_grace(token)?;
        // Only a token that still stands can be revoked: a second logout is refused.
        self.principal_for_claims(&claims)?;
        self.revoke_claims(&claims)
    }

    /// Record a refused authentication in the audit log: `user` is the name the caller
    /// claimed (password logins), `address` where the call came from. Calls that presented
    /// no credentials at all are not recorded (they are not attempts).
    pub fn record_refusal(
        &self,
        surface: &str,
        request_id: &str,
        user: Option<&str>,
        address: &str,
        error: &AuthError,
    ) {
        let Some(audit) = &self.0.options.audit else {
            return;
        };
        if matches!(error, AuthError::Missing) {
            return;
        }
        let outcome = match error {
            AuthError::TooManyAttempts { .. } => "rate_limited",
            AuthError::Forbidden { message } if message == crate::ASSISTANT_ONLY_AT_MCP => {
                "refused"
            }
            _ => "unauthenticated",
        };
        audit.record(AuditEntry {
            at_ms: chrono::Utc::now().timestamp_millis(),
            account_id: None,
            user: user.unwrap_or("-").to_string(),
            surface: surface.to_string(),
            request_id: request_id.to_string(),
            sql: String::new(),
            tables: Vec::new(),
            rows: 0,
            bytes: 0,
            duration_ms: 0,
            outcome: outcome.to_string(),
            error: Some(format!("{error} (client {address})")),
            tool: None,
        });
    }

    /// Record in the audit log that `principal` was refused `what` (a page or route for
    /// administrators only), with outcome `refused`.
    pub fn record_forbidden(
        &self,
        surface: &str,
        request_id: &str,
        principal: &Principal,
        what: &str,
    ) {
        let Some(audit) = &self.0.options.audit else {
            return;
        };
        audit.record(AuditEntry {
            at_ms: chrono::Utc::now().timestamp_millis(),
            account_id: (principal.id != 0).then_some(principal.id),
            user: principal.name.clone(),
            surface: surface.to_string(),
            request_id: request_id.to_string(),
            sql: String::new(),
            tables: Vec::new(),
            rows: 0,
            bytes: 0,
            duration_ms: 0,
            outcome: "refused".to_string(),
            error: Some(format!("{what} is for administrators (data-ops)")),
            tool: None,
        });
    }

    /// The current principal of user `name`, if the account exists.
    pub fn principal(&self, name: &str) -> Result<Option<Principal>, AuthError> {
        let ids = self.identities()?;
        Ok(ids
            .by_name
            .get(name)
            .and_then(|id| ids.accounts.get(id))
            .and_then(|u| ids.principal(u)))
    }

    /// The active account `id` as a principal (none when it is disabled or gone).
    pub fn principal_by_id(&self, id: i64) -> Result<Option<Principal>, AuthError> {
        let ids = self.identities()?;
        Ok(ids.accounts.get(&id).and_then(|u| ids.principal(u)))
    }

    fn claims_within_grace(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = self.0.keys.verify(token, false)?;
        // Limited tokens live as long as they were issued for.
        if claims.scope.is_some() {
            return Err(AuthError::InvalidToken);
        }
        let grace = self.0.options.refresh_grace.as_secs() as i64;
        if claims.exp.saturating_add(grace) < now_secs() {
            return Err(AuthError::InvalidToken);
        }
        Ok(claims)
    }

    fn revoke_claims(&self, claims: &Claims) -> Result<(), AuthError> {
        let grace = self.0.options.refresh_grace.as_secs() as i64;
        self.0
            .store
            .revoke_jti(&claims.jti, claims.exp.saturating_add(grace))?;
        Ok(())
    }

    /// The principal a session token stands for: its account (by id; a token from before
    /// accounts had ids by username, issued after that account was created), active, and the
    /// token issued after its last password change.
    fn principal_for_claims(&self, claims: &Claims) -> Result<Principal, AuthError> {
        let ids = self.identities()?;
        if ids.revoked.contains(&claims.jti) {
            return Err(AuthError::InvalidToken);
        }
        let account = match claims.uid {
            Some(id) => ids.accounts.get(&id).filter(|u| u.name == claims.sub),
            None => ids
                .by_name
                .get(&claims.sub)
                .and_then(|id| ids.accounts.get(id))
                .filter(|u| claims.iat >= u.created_at),
        };
        account
            .filter(|u| claims.iat >= u.password_changed_at)
            .and_then(|u| ids.principal(u))
            .ok_or(AuthError::InvalidToken)
    }

    fn api_token_record(&self, token: &str) -> Result<(String, ApiTokenRecord), AuthError> {
        let rest = token
            .strip_prefix(API_TOKEN_PREFIX)
            .ok_or(AuthError::InvalidToken)?;
        let (id, secret) = rest.split_once('_').ok_or(AuthError::InvalidToken)?;
        let ids = self.identities()?;
        let record = ids.api_tokens.get(id).ok_or(AuthError::InvalidToken)?;
        let hash = hash_secret(secret);
        if !constant_time_eq(hash.as_bytes(), record.secret_hash.as_bytes()) {
            return Err(AuthError::InvalidToken);
        }
        if record.revoked_at.is_some() || record.expires_at.is_some_and(|e| e <= now_secs()) {
            return Err(AuthError::InvalidToken);
        }
        Ok((id.to_string(), record.clone()))
    }

    fn check_api_token(&self, token: &str) -> Result<Principal, AuthError> {
        let (id, record) = self.api_token_record(token)?;
        let ids = self.identities()?;
        let mut principal = ids
            .accounts
            .get(&record.account_id)
            .and_then(|u| ids.principal(u))
            .ok_or(AuthError::InvalidToken)?;
        principal.assistant = match record.scope.as_deref() {
            None => false,
            Some(crate::ASSISTANT_SCOPE) => true,
            // A scope this binary does not know: the token is good for nothing here.
            Some(_) => return Err(AuthError::InvalidToken),
        };
        self.touch(&id);
        Ok(principal)
    }

    /// Revokes `token` if it is a live assistant's token (RFC 7009: whatever else it is, or
    /// if it is nothing, nothing happens); whether it was revoked.
    pub fn revoke_assistant_token(&self, token: &str) -> Result<bool, AuthError> {
        let (id, record) = match self.api_token_record(token.trim()) {
            Ok(found) => found,
            Err(AuthError::InvalidToken) => return Ok(false),
            Err(e) => return Err(e),
        };
        if record.scope.as_deref() != Some(crate::ASSISTANT_SCOPE) {
            return Ok(false);
        }
        let revoked = self.0.store.revoke_api_token(&id)?;
        if revoked {
            tracing::info!(token_id = %id, user = %record.user, "assistant token revoked by its client");
        }
        Ok(revoked)
    }

    /// Note the token's last use, at most once a minute.
    fn touch(&self, id: &str) {
        let now = now_secs();
        let mut touches = self
            .0
            .token_touches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if touches.get(id).is_some_and(|t| now - t < 60) {
            return;
        }
        touches.insert(id.to_string(), now);
        drop(touches);
        if let Err(e) = self.0.store.touch_api_token(id, now) {
            tracing::warn!(error = %e, "cannot record an API token's last use");
        }
    }

    fn check_password(
        &self,
        user: &str,
        password: &str,
        address: &str,
    ) -> Result<Principal, AuthError> {
        let store = &self.0.store;
        let now = now_secs();
        let ids = self.identities()?;
        let known = ids.by_login(user);
        // One count per account, whether it is named by username or by email.
        let key = known.map_or_else(|| user.to_ascii_lowercase(), |u| u.name.clone());
        let (by_user, by_address) = store.failed_logins_since(&key, address, now - RATE_WINDOW)?;
        let max = self.0.options.max_failed_logins;
        if by_user >= max || by_address >= max {
            tracing::warn!(user, address, "login refused: too many failed attempts");
            return Err(AuthError::TooManyAttempts {
                retry_after_secs: RATE_WINDOW as u64,
            });
        }
        let hash = known
            .and_then(|u| u.password_hash.as_deref())
            .unwrap_or(decoy_hash());
        let ok =
            verify_password(hash, password) && known.is_some_and(|u| u.password_hash.is_some());
        store.record_login_attempt(&LoginAttempt {
            at: now,
            user: key,
            address: address.to_string(),
            ok,
        })?;
        match known {
            Some(u) if ok => ids.principal(u).ok_or_else(|| {
                tracing::info!(user, address, state = %u.state, "login refused: the account is not active");
                AuthError::Disabled
            }),
            _ => {
                tracing::info!(user, address, "login failed: wrong user name or password");
                Err(AuthError::InvalidCredentials)
            }
        }
    }
}

impl GrantSource for Authenticator {
    fn grants(&self) -> Arc<[Grant]> {
        match self.identities() {
            Ok(ids) => Arc::clone(&ids.grants),
            Err(e) => {
                // Fail closed: without the grants, only group rules apply.
                tracing::error!(error = %e, "cannot read grants; applying none");
                Arc::from(Vec::new())
            }
        }
    }
}

/// The refusal of an assistant's token anywhere but the MCP endpoint.
fn assistant_elsewhere() -> AuthError {
    AuthError::Forbidden {
        message: crate::ASSISTANT_ONLY_AT_MCP.to_string(),
    }
}

/// SHA-256 (hex) of an API token's secret: the secrets are long and random, so a fast hash
/// is enough and lookups stay cheap.
pub(crate) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
