//! OpenID Connect sign-in, the checks that do not need the network: a provider's
//! configuration, the PKCE pair, `state` and `nonce` of an authorization request, and the
//! verification of an ID token against the provider's keys (JWKS). Each refusal names the check
//! that failed, never the token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AuthError;

/// How far a token's times may be off the server's clock.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// One OpenID Connect provider (`auth.providers`), in the order the login page shows them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// In URLs (`/auth/oidc/<name>/…`): `google`.
    pub name: String,
    /// On the login page's button; default: the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The issuer URL; `<issuer>/.well-known/openid-configuration` describes the provider.
    pub issuer: String,
    pub client_id: String,
    /// The environment variable that holds the client secret (never the secret itself).
    pub client_secret_env: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Email domains that may sign in through this provider; default: `auth.allowed_domains`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_domains: Option<Vec<String>>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}

/// Why an ID token was refused: which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the ID token is not a signed JWT")]
    Malformed,
    #[error("the ID token's algorithm {0} is not an asymmetric signature")]
    Algorithm(String),
    #[error("the provider has no key '{0}' (after fetching its keys again)")]
    UnknownKey(String),
    #[error("the ID token's signature does not verify with the provider's key")]
    Signature,
    #[error("the ID token was issued by another issuer")]
    Issuer,
    #[error("the ID token is for another client (audience)")]
    Audience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is not valid yet")]
    NotYetValid,
    #[error("the ID token's nonce is not this sign-in's")]
    Nonce,
    #[error("the ID token lacks a claim: {0}")]
    Missing(String),
    #[error("the provider has not verified the email address")]
    EmailUnverified,
    #[error("email addresses of {0} may not sign in here")]
    Domain(String),
}

/// The identity an ID token vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IdClaims {
    pub sub: String,
    pub email: String,
    /// Normalized (lower case).
    #[serde(default)]
    pub email_verified: Option<serde_json::Value>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub picture: Option<String>,
    /// Google's hosted domain (Workspace).
    #[serde(default)]
    pub hd: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// What a sign-in expects of its ID token.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Email domains that may sign in; empty: any (outside accounts are checked later).
    pub domains: &'a [String],
}

/// The key id an ID token names (to fetch the provider's keys again when it is unknown).
pub fn key_id(token: &str) -> Result<Option<String>, TokenRefusal> {
    jsonwebtoken::decode_header(token)
        .map(|h| h.kid)
        .map_err(|_| TokenRefusal::Malformed)
}

/// Verifies an ID token: an asymmetric signature by one of `keys`, issuer, audience, expiry
/// and not-before (within [`CLOCK_SKEW_SECS`]), the nonce, a verified email and its domain.
pub fn verify_id_token(
    token: &str,
    keys: &JwkSet,
    expected: &Expected<'_>,
) -> Result<IdClaims, TokenRefusal> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRefusal::Malformed)?;
    let algorithm = header.alg;
    if matches!(
        algorithm,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    ) {
        return Err(TokenRefusal::Algorithm(format!("{algorithm:?}")));
    }
    let kid = header.kid.unwrap_or_default();
    let jwk = match keys.find(&kid) {
        Some(jwk) => jwk,
        // A provider with one key may leave the kid out.
        None if kid.is_empty() && keys.keys.len() == 1 => &keys.keys[0],
        None => return Err(TokenRefusal::UnknownKey(kid)),
    };
    if let Some(declared) = jwk.common.key_algorithm
        && format!("{declared:?}") != format!("{algorithm:?}")
    {
        return Err(TokenRefusal::Algorithm(format!("{algorithm:?}")));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenRefusal::Signature)?;
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[expected.issuer]);
    validation.set_audience(&[expected.client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.leeway = CLOCK_SKEW_SECS;
    validation.validate_nbf = true;
    let claims = jsonwebtoken::decode::<IdClaims>(token, &key, &validation)
        .map_err(|e| refusal(e.kind()))?
        .claims;
    if claims.nonce.as_deref() != Some(expected.nonce) {
        return Err(TokenRefusal::Nonce);
    }
    let verified = match &claims.email_verified {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    };
    if !verified {
        return Err(TokenRefusal::EmailUnverified);
    }
    let email = claims.email.trim().to_ascii_lowercase();
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if !expected.domains.is_empty() {
        let allowed = |d: &str| expected.domains.iter().any(|a| a.eq_ignore_ascii_case(d));
        // Google Workspace says which organisation vouches for the account in `hd`.
        if !allowed(domain) || claims.hd.as_deref().is_some_and(|hd| !allowed(hd)) {
            return Err(TokenRefusal::Domain(domain.to_string()));
        }
    }
    Ok(IdClaims { email, ..claims })
}

fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> TokenRefusal {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => TokenRefusal::Signature,
        K::InvalidIssuer => TokenRefusal::Issuer,
        K::InvalidAudience => TokenRefusal::Audience,
        K::ExpiredSignature => TokenRefusal::Expired,
        K::ImmatureSignature => TokenRefusal::NotYetValid,
        K::MissingRequiredClaim(claim) => TokenRefusal::Missing(claim.clone()),
        K::InvalidAlgorithm => TokenRefusal::Algorithm("mismatch".into()),
        _ => TokenRefusal::Malformed,
    }
}

/// The `state`, `nonce` and PKCE verifier of one authorization request, and the challenge
/// (`S256`) sent with it.
#[derive(Clone)]
pub struct AuthorizationSecrets {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub challenge: String,
}

impl std::fmt::Debug for AuthorizationSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthorizationSecrets(<redacted>)")
    }
}

impl AuthorizationSecrets {
    pub fn new() -> Result<Self, AuthError> {
        let verifier = URL_SAFE_NO_PAD.encode(crate::random_bytes(32)?);
        let challenge = pkce_challenge(&verifier);
        Ok(Self {
            state: crate::random_token(32)?,
            nonce: crate::random_token(16)?,
            verifier,
            challenge,
        })
    }
}

/// The `S256` challenge of a PKCE verifier (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    /// Test-only RSA keys (PKCS#1 DER); the JWKS holds the first one's public half.
    const KEY: &[u8] = include_bytes!("../tests/fixtures/oidc-test-key.der");
    const OTHER_KEY: &[u8] = include_bytes!("../tests/fixtures/oidc-other-key.der");
    const JWKS: &str = include_str!("../tests/fixtures/oidc-test-jwks.json");
    const ISSUER: &str = "https://id.example.com";

    fn now() -> i64 {
        dataport_state::now_secs()
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": ISSUER, "aud": "dataport", "sub": "1234", "iat": now(), "exp": now() + 300,
            "nonce": "n-1", "email": "Ann@Example.com", "email_verified": true, "name": "Ann Lee",
            "hd": "example.com",
        })
    }

    fn sign(claims: &serde_json::Value, key: &[u8], kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(String::from);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(key)).unwrap()
    }

    fn verify(token: &str) -> Result<IdClaims, TokenRefusal> {
        let keys: JwkSet = serde_json::from_str(JWKS).unwrap();
        let domains = vec!["example.com".to_string()];
        verify_id_token(
            token,
            &keys,
            &Expected {
                issuer: ISSUER,
                client_id: "dataport",
                nonce: "n-1",
                domains: &domains,
            },
        )
    }

    fn with(change: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut c = claims();
        change(&mut c);
        sign(&c, KEY, Some("test-key-1"))
    }

    #[test]
    fn a_good_token_gives_its_identity() {
        let id = verify(&with(|_| {})).unwrap();
        assert_eq!(
            (id.sub.as_str(), id.email.as_str()),
            ("1234", "ann@example.com")
        );
        assert_eq!(id.name.as_deref(), Some("Ann Lee"));
        // within the clock skew
        assert!(verify(&with(|c| c["exp"] = json!(now() - 30))).is_ok());
    }

    #[test]
    fn each_failed_check_is_named() {
        let cases: Vec<(String, TokenRefusal)> = vec![
            (
                sign(&claims(), OTHER_KEY, Some("test-key-1")),
                TokenRefusal::Signature,
            ),
            (
                sign(&claims(), KEY, Some("rotated")),
                TokenRefusal::UnknownKey("rotated".into()),
            ),
            (
                with(|c| c["iss"] = json!("https://evil.example")),
                TokenRefusal::Issuer,
            ),
            (
                with(|c| c["aud"] = json!("another-client")),
                TokenRefusal::Audience,
            ),
            (
                with(|c| c["exp"] = json!(now() - 120)),
                TokenRefusal::Expired,
            ),
            (
                with(|c| c["nbf"] = json!(now() + 600)),
                TokenRefusal::NotYetValid,
            ),
            (
                with(|c| c["nonce"] = json!("replayed")),
                TokenRefusal::Nonce,
            ),
            (
                with(|c| c["email_verified"] = json!(false)),
                TokenRefusal::EmailUnverified,
            ),
            (
                with(|c| {
                    c["email"] = json!("eve@evil.com");
                    c["hd"] = serde_json::Value::Null;
                }),
                TokenRefusal::Domain("evil.com".into()),
            ),
            (
                with(|c| c["hd"] = json!("evil.com")),
                TokenRefusal::Domain("example.com".into()),
            ),
            ("not.a.token".into(), TokenRefusal::Malformed),
        ];
        for (token, refusal) in cases {
            assert_eq!(verify(&token), Err(refusal.clone()), "{refusal}");
        }
        // a symmetric algorithm signed with the public key's bytes is refused outright
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(JWKS.as_bytes()),
        )
        .unwrap();
        assert!(matches!(verify(&hs), Err(TokenRefusal::Algorithm(_))));
        assert_eq!(
            key_id(&with(|_| {})).unwrap().as_deref(),
            Some("test-key-1")
        );
    }

    #[test]
    fn pkce_follows_rfc_7636() {
        // RFC 7636, appendix B
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let a = AuthorizationSecrets::new().unwrap();
        let b = AuthorizationSecrets::new().unwrap();
        assert_ne!(a.state, b.state);
        assert!(a.verifier.len() >= 43 && a.challenge == pkce_challenge(&a.verifier));
    }
}
