//! The OAuth 2.1 authorization server's records: clients that registered themselves (RFC 7591)
//! and the authorization codes issued to them (only their SHA-256; single use).

use rusqlite::{OptionalExtension, params};

use crate::StateStore;
use crate::error::Result;
use crate::identity::{ApiTokenRecord, INSERT_TOKEN};

/// A registered OAuth client: a public client (no secret), known by its id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OAuthClient {
    pub client_id: String,
    /// The name it gave itself (shown on the consent page and in token labels).
    pub client_name: String,
    /// Where codes may be sent, exactly as registered.
    pub redirect_uris: Vec<String>,
    pub created_at: i64,
    /// When it last exchanged a code for a token.
    pub last_used_at: Option<i64>,
    /// The client address it registered from (for the rate limit).
    #[serde(skip)]
    pub address: String,
}

/// An authorization code (its SHA-256) for `client_id`, approved by `account_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthCode {
    pub code_hash: String,
    pub client_id: String,
    pub account_id: i64,
    /// The redirect URI of the authorization request; the token request must repeat it.
    pub redirect_uri: String,
    /// The PKCE `S256` challenge.
    pub code_challenge: String,
    pub scope: String,
    /// The resource (RFC 8707) the client asked for, if it named one.
    pub resource: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    /// The token issued for it.
    pub token_id: Option<String>,
}

/// How many registrations are allowed since a moment ([`StateStore::add_oauth_client`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationLimit {
    /// Registrations counted from this moment (Unix seconds).
    pub since: i64,
    /// At most this many from one client address.
    pub per_address: u32,
    /// At most this many from all addresses together.
    pub total: u32,
}

/// What [`StateStore::redeem_oauth_code`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// The code was unused and current: it is used now, and the token was stored.
    Issued,
    /// The code had been used already: nothing was issued, and the token issued for its first
    /// use (its id, if one was) is revoked.
    Reused { revoked: Option<String> },
    /// No such code, or it expired.
    Unusable,
}

/// Clients that never exchanged a code are forgotten after a day.
const UNUSED_CLIENT_SECS: i64 = 86_400;
/// Codes are kept this long after they expire, so that a late second use is still recognised
/// (and revokes the token of the first).
const USED_CODE_SECS: i64 = 86_400;

impl StateStore {
    /// Registers `client` unless `limit` is reached (from its address, or in total): whether
    /// it was registered. Clients that never exchanged a code within a day are removed first.
    pub fn add_oauth_client(
        &self,
        client: &OAuthClient,
        limit: &RegistrationLimit,
    ) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM oauth_clients WHERE last_used_at IS NULL AND created_at < ?1",
            [client.created_at - UNUSED_CLIENT_SECS],
        )?;
        let (by_address, total): (u32, u32) = tx.query_row(
            "SELECT coalesce(sum(address = ?2), 0), count(*)
             FROM oauth_clients WHERE created_at >= ?1",
            params![limit.since, client.address],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if by_address >= limit.per_address || total >= limit.total {
            return Ok(false);
        }
        let uris = serde_json::to_string(&client.redirect_uris)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        tx.execute(
            "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, created_at,
                                        last_used_at, address)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                client.client_id,
                client.client_name,
                uris,
                client.created_at,
                client.last_used_at,
                client.address
            ],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// The client registered as `client_id`, if any.
    pub fn oauth_client(&self, client_id: &str) -> Result<Option<OAuthClient>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT client_id, client_name, redirect_uris, created_at, last_used_at, address
                 FROM oauth_clients WHERE client_id = ?1",
                [client_id],
                |r| {
                    let uris: String = r.get(2)?;
                    Ok(OAuthClient {
                        client_id: r.get(0)?,
                        client_name: r.get(1)?,
                        redirect_uris: serde_json::from_str(&uris).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                2,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })?,
                        created_at: r.get(3)?,
                        last_used_at: r.get(4)?,
                        address: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    /// Keeps an authorization code; codes that expired more than a day before it are dropped.
    pub fn add_oauth_code(&self, code: &OAuthCode) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM oauth_codes WHERE expires_at < ?1",
            [code.created_at - USED_CODE_SECS],
        )?;
        conn.execute(
            "INSERT INTO oauth_codes (code_hash, client_id, account_id, redirect_uri,
                                      code_challenge, scope, resource, created_at, expires_at,
                                      used_at, token_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                code.code_hash,
                code.client_id,
                code.account_id,
                code.redirect_uri,
                code.code_challenge,
                code.scope,
                code.resource,
                code.created_at,
                code.expires_at,
                code.used_at,
                code.token_id
            ],
        )?;
        Ok(())
    }

    /// The code with this hash (used or not, expired or not), if it is kept.
    pub fn oauth_code(&self, code_hash: &str) -> Result<Option<OAuthCode>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT code_hash, client_id, account_id, redirect_uri, code_challenge, scope,
                        resource, created_at, expires_at, used_at, token_id
                 FROM oauth_codes WHERE code_hash = ?1",
                [code_hash],
                |r| {
                    Ok(OAuthCode {
                        code_hash: r.get(0)?,
                        client_id: r.get(1)?,
                        account_id: r.get(2)?,
                        redirect_uri: r.get(3)?,
                        code_challenge: r.get(4)?,
                        scope: r.get(5)?,
                        resource: r.get(6)?,
                        created_at: r.get(7)?,
                        expires_at: r.get(8)?,
                        used_at: r.get(9)?,
                        token_id: r.get(10)?,
                    })
                },
            )
            .optional()?)
    }

    /// Uses the code with this hash for `token`, in one transaction: when it is unused and
    /// unexpired at `now`, it is marked used (with the token's id), the token is stored and the
    /// client's last use recorded. A code used before is refused, and the token issued for its
    /// first use revoked (OAuth 2.1, section 4.1.3).
    pub fn redeem_oauth_code(
        &self,
        code_hash: &str,
        now: i64,
        token: &ApiTokenRecord,
    ) -> Result<CodeRedemption> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let used = tx.execute(
            "UPDATE oauth_codes SET used_at = ?2, token_id = ?3
             WHERE code_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
            params![code_hash, now, token.id],
        )?;
        if used == 1 {
            let stored = tx.execute(
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
            if stored == 0 {
                // The account is gone: the code is used up all the same.
                tx.commit()?;
                return Ok(CodeRedemption::Unusable);
            }
            tx.execute(
                "UPDATE oauth_clients SET last_used_at = ?2
                 WHERE client_id = (SELECT client_id FROM oauth_codes WHERE code_hash = ?1)",
                params![code_hash, now],
            )?;
            tx.commit()?;
            return Ok(CodeRedemption::Issued);
        }
        let earlier: Option<(Option<i64>, Option<String>)> = tx
            .query_row(
                "SELECT used_at, token_id FROM oauth_codes WHERE code_hash = ?1",
                [code_hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match earlier {
            Some((Some(_), token_id)) => {
                if let Some(id) = &token_id {
                    tx.execute(
                        "UPDATE account_tokens SET revoked_at = ?2
                         WHERE id = ?1 AND revoked_at IS NULL",
                        params![id, now],
                    )?;
                }
                tx.commit()?;
                Ok(CodeRedemption::Reused { revoked: token_id })
            }
            _ => Ok(CodeRedemption::Unusable),
        }
    }
}
