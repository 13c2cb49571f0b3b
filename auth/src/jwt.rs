//! Signed session tokens (JWT, HS256) issued at login.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// The claims of a session token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The username.
    pub sub: String,
    /// The account's stable id; tokens issued before accounts had ids have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<i64>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub jti: String,
    /// What a limited token is for ([`TokenScope`]); none on a session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<TokenScope>,
}

/// What a limited token may do.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// Given to a notification script for one run: reads data as its owner (query, catalog,
    /// sync), manages nothing and cannot be refreshed.
    Script,
    /// The desktop app's token: accepted only by the notification gateway and
    /// `/api/v1/desktop/…` ([`Authenticator::check_desktop`](crate::Authenticator::check_desktop)).
    Desktop,
}

/// Signs and checks tokens with one HS256 key and issuer.
pub(crate) struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub(crate) fn new(secret: &[u8], issuer: &str) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            issuer: issuer.to_string(),
        }
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(|e| {
            AuthError::Internal {
                message: format!("signing a token: {e}"),
            }
        })
    }

    /// The claims of a token signed with this key by this issuer with HS256 (any other
    /// algorithm, `none` included, is refused). With `check_expiry` false, an expired token
    /// is accepted here and the caller applies its own limit (refresh grace).
    pub(crate) fn verify(&self, token: &str, check_expiry: bool) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = 0;
        validation.validate_exp = check_expiry;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|d| d.claims)
            .map_err(|e| {
                tracing::debug!(error = %e, "bearer token rejected");
                AuthError::InvalidToken
            })
    }
}
