//! Assistants (AI clients over MCP): their API tokens, good only at the MCP endpoint, and the
//! records of the OAuth 2.1 authorization server they sign in through: clients that register
//! themselves, and single-use authorization codes bound to a PKCE challenge. The protocol
//! (what a request must say, redirects, the JSON answers) is the HTTP layer's; this module
//! keeps the records, makes the secrets and issues the tokens.

use std::time::Duration;

use dataport_state::{
    AccountState, CodeRedemption, OAuthClient, OAuthCode, RegistrationLimit, now_secs,
};

use crate::accounts::new_token_record;
use crate::authenticator::hash_secret;
use crate::{Accounts, AuthError, NewApiToken, Principal};

/// The scope of an API token that works only at the MCP endpoint, reading data as its account.
pub const ASSISTANT_SCOPE: &str = "assistant";

/// What an assistant's token is told anywhere but the MCP endpoint.
pub const ASSISTANT_ONLY_AT_MCP: &str = "an assistant's token works only at /mcp (the MCP endpoint); use a session or an API token of the whole API here";

/// How long an authorization code may wait for its exchange.
pub const OAUTH_CODE_TTL: Duration = Duration::from_secs(60);

/// How long a token issued through OAuth lasts.
pub const OAUTH_TOKEN_TTL: Duration = Duration::from_secs(30 * 86_400);

/// The window of the registration limits.
pub const REGISTRATION_WINDOW: Duration = Duration::from_secs(3600);
/// Registrations per client address within [`REGISTRATION_WINDOW`].
const REGISTRATIONS_PER_ADDRESS: u32 = 20;
/// Registrations from all addresses within [`REGISTRATION_WINDOW`].
const REGISTRATIONS_TOTAL: u32 = 500;

/// A scope an API token may have: none (the whole API) or [`ASSISTANT_SCOPE`].
pub(crate) fn check_scope(scope: Option<&str>) -> Result<Option<&'static str>, AuthError> {
    match scope {
        None => Ok(None),
        Some(ASSISTANT_SCOPE) => Ok(Some(ASSISTANT_SCOPE)),
        Some(other) => Err(AuthError::InvalidInput {
            message: format!(
                "'{other}' is not a token scope: leave it out for the whole API, or say '{ASSISTANT_SCOPE}' for a token that works only at /mcp"
            ),
        }),
    }
}

/// What the signed-in account approved for a client: the authorization request's parameters
/// that the token request must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthGrant<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    /// The PKCE `S256` challenge (43 characters of base64url).
    pub code_challenge: &'a str,
    pub scope: &'a str,
    pub resource: Option<&'a str>,
}

/// What exchanging a code gave.
#[derive(Debug)]
pub enum OAuthRedemption {
    /// A new assistant token (shown once).
    Issued(NewApiToken),
    /// The code had been used before: nothing is issued, and the token of its first use is
    /// revoked.
    Reused,
    /// The code is unknown, expired, or its account can no longer sign in.
    Unusable,
}

impl Accounts {
    /// Registers a public client named `name` with `redirect_uris` (checked by the caller),
    /// from client address `address`; refused with [`AuthError::TooManyAttempts`] beyond 20
    /// registrations an hour from one address or 500 from all.
    pub fn register_oauth_client(
        &self,
        name: &str,
        redirect_uris: Vec<String>,
        address: &str,
    ) -> Result<OAuthClient, AuthError> {
        let now = now_secs();
        let client = OAuthClient {
            client_id: format!("dpc_{}", crate::random_token(16)?),
            client_name: name.to_string(),
            redirect_uris,
            created_at: now,
            last_used_at: None,
            address: address.to_string(),
        };
        let window = REGISTRATION_WINDOW.as_secs();
        let limit = RegistrationLimit {
            since: now - window as i64,
            per_address: REGISTRATIONS_PER_ADDRESS,
            total: REGISTRATIONS_TOTAL,
        };
        if !self.store().add_oauth_client(&client, &limit)? {
            tracing::warn!(
                address,
                "OAuth client registration refused: too many registrations"
            );
            return Err(AuthError::TooManyAttempts {
                retry_after_secs: window,
            });
        }
        tracing::info!(client_id = %client.client_id, client_name = %client.client_name, address, "OAuth client registered");
        Ok(client)
    }

    /// The client registered as `client_id`, if any.
    pub fn oauth_client(&self, client_id: &str) -> Result<Option<OAuthClient>, AuthError> {
        Ok(self.store().oauth_client(client_id)?)
    }

    /// A single-use authorization code for what `principal` approved in a browser session,
    /// valid for [`OAUTH_CODE_TTL`]; only its SHA-256 is kept.
    pub fn grant_oauth_code(
        &self,
        principal: &Principal,
        grant: &OAuthGrant<'_>,
    ) -> Result<String, AuthError> {
        if principal.limited || principal.assistant || principal.id <= 0 {
            return Err(AuthError::Forbidden {
                message: "only a person signed in to the portal may approve an assistant".into(),
            });
        }
        if !well_formed_challenge(grant.code_challenge) {
            return Err(AuthError::InvalidInput {
                message:
                    "the code challenge must be the base64url SHA-256 of a verifier (43 characters)"
                        .into(),
            });
        }
        let code = crate::random_token(32)?;
        let now = now_secs();
        self.store().add_oauth_code(&OAuthCode {
            code_hash: hash_secret(&code),
            client_id: grant.client_id.to_string(),
            account_id: principal.id,
            redirect_uri: grant.redirect_uri.to_string(),
            code_challenge: grant.code_challenge.to_string(),
            scope: grant.scope.to_string(),
            resource: grant.resource.map(str::to_string),
            created_at: now,
            expires_at: now + OAUTH_CODE_TTL.as_secs() as i64,
            used_at: None,
            token_id: None,
        })?;
        tracing::info!(user = %principal.name, client_id = grant.client_id, "assistant approved (OAuth code issued)");
        Ok(code)
    }

    /// The code `code` (used or not, expired or not), if it is known: the caller checks the
    /// token request against it before [`redeem_oauth_code`](Self::redeem_oauth_code).
    pub fn oauth_code(&self, code: &str) -> Result<Option<OAuthCode>, AuthError> {
        Ok(self.store().oauth_code(&hash_secret(code.trim()))?)
    }

    /// Exchanges `code` (as [`oauth_code`](Self::oauth_code) found it, checked by the caller)
    /// for an assistant token of its account, named `label`, valid for [`OAUTH_TOKEN_TTL`].
    /// Once: a second exchange is refused and revokes the token of the first.
    pub fn redeem_oauth_code(
        &self,
        code: &OAuthCode,
        label: &str,
    ) -> Result<OAuthRedemption, AuthError> {
        let Some(account) = self.store().user_by_id(code.account_id)? else {
            return Ok(OAuthRedemption::Unusable);
        };
        if account.state != AccountState::Active {
            return Ok(OAuthRedemption::Unusable);
        }
        let (record, created) = new_token_record(
            &account,
            label,
            Some(OAUTH_TOKEN_TTL),
            Some(ASSISTANT_SCOPE),
        )?;
        match self
            .store()
            .redeem_oauth_code(&code.code_hash, now_secs(), &record)?
        {
            CodeRedemption::Issued => {
                tracing::info!(user = %account.name, client_id = %code.client_id, token_id = %created.id, "assistant token issued through OAuth");
                Ok(OAuthRedemption::Issued(created))
            }
            CodeRedemption::Reused { revoked } => {
                tracing::warn!(user = %account.name, client_id = %code.client_id, revoked_token = revoked.as_deref().unwrap_or("-"), "an OAuth code was used twice: refused, and the token of its first use revoked");
                Ok(OAuthRedemption::Reused)
            }
            CodeRedemption::Unusable => Ok(OAuthRedemption::Unusable),
        }
    }
}

/// Whether `challenge` looks like an `S256` challenge: 43 characters of base64url.
fn well_formed_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
