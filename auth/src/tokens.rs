//! Short-lived opaque bearer tokens handed out at login.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{AuthError, Principal};

/// Most live tokens kept; beyond it the oldest are dropped (their holders log in again).
const MAX_TOKENS: usize = 100_000;

/// Issued tokens, in memory: a restart logs everyone out, which clients handle by logging in
/// again with their password.
#[derive(Debug)]
pub struct TokenStore {
    ttl: Duration,
    tokens: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    principal: Principal,
    expires: Instant,
}

impl TokenStore {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// A new random token for `principal`, valid for the store's time to live.
    pub fn issue(&self, principal: Principal) -> String {
        let token = format!(
            "dpt_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = Instant::now();
        let mut tokens = self.lock();
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, e| e.expires > now);
            while tokens.len() >= MAX_TOKENS {
                let oldest = tokens
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => tokens.remove(&k),
                    None => break,
                };
            }
        }
        tokens.insert(
            token.clone(),
            Entry {
                principal,
                expires: now + self.ttl,
            },
        );
        token
    }

    /// The principal a live token was issued to.
    pub fn lookup(&self, token: &str) -> Result<Principal, AuthError> {
        let mut tokens = self.lock();
        match tokens.get(token) {
            Some(e) if e.expires > Instant::now() => Ok(e.principal.clone()),
            Some(_) => {
                tokens.remove(token);
                Err(AuthError::InvalidToken)
            }
            None => Err(AuthError::InvalidToken),
        }
    }

    pub fn revoke(&self, token: &str) {
        self.lock().remove(token);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}
