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
    /// Only accounts the provider's organisation manages: the ID token's `hd` (Google
    /// Workspace's hosted domain) must be the email's domain. For Google: a private Google
    /// account can carry a verified address of the organisation's domain, without `hd`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_hosted_domain: bool,
}

/// Checks each provider: a name for URLs, once; an `https` issuer (`http` only on loopback, for
/// a provider on the same machine); a client id and the variable of its secret; the `openid`
/// scope. A failure gives the provider's index and what is wrong.
pub fn check_providers(providers: &[ProviderConfig]) -> Result<(), (usize, String)> {
    for (i, p) in providers.iter().enumerate() {
        let fail = |message: String| Err((i, message));
        let url_safe =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if p.name.is_empty() || !p.name.chars().all(url_safe) {
            return fail(format!(
                "name '{}' must be lower-case letters, digits, '-' or '_' (it is part of the redirect URI)",
                p.name
            ));
        }
        if providers[..i].iter().any(|q| q.name == p.name) {
            return fail(format!("the name '{}' is used twice", p.name));
        }
        let issuer = url::Url::parse(&p.issuer).ok();
        let loopback = issuer.as_ref().is_some_and(|u| match u.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        });
        match issuer.as_ref().map(url::Url::scheme) {
            Some("https") => {}
            Some("http") if loopback => {}
            _ => {
                return fail(format!(
                    "issuer '{}' must be an https URL such as https://accounts.google.com",
                    p.issuer
                ));
            }
        }
        if p.client_id.trim().is_empty() || p.client_secret_env.trim().is_empty() {
            return fail(
                "needs client_id and client_secret_env (the environment variable that holds the secret)".into(),
            );
        }
        if !p.scopes.iter().any(|s| s == "openid") {
            return fail("scopes must include 'openid'".into());
        }
    }
    Ok(())
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
    #[error("{0} is not an account managed by the provider's organisation (no matching hd claim)")]
    HostedDomain(String),
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
    /// The `hd` claim must name the email's domain ([`ProviderConfig::require_hosted_domain`]).
    pub hosted_domain: bool,
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
    if expected.hosted_domain
        && !claims
            .hd
            .as_deref()
            .is_some_and(|hd| hd.eq_ignore_ascii_case(domain))
    {
        return Err(TokenRefusal::HostedDomain(email));
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

    /// Verified as sign-ins of the client `dataport` with nonce `n-1` expect.
    fn verify_as(
        token: &str,
        domains: &[String],
        hosted_domain: bool,
    ) -> Result<IdClaims, TokenRefusal> {
        let keys: JwkSet = serde_json::from_str(JWKS).unwrap();
        verify_id_token(
            token,
            &keys,
            &Expected {
                issuer: ISSUER,
                client_id: "dataport",
                nonce: "n-1",
                domains,
                hosted_domain,
            },
        )
    }

    fn verify(token: &str) -> Result<IdClaims, TokenRefusal> {
        verify_as(token, &["example.com".to_string()], false)
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
    fn a_hosted_domain_must_be_the_emails_when_required() {
        let check = |token: &str| verify_as(token, &[], true);
        assert!(check(&with(|_| {})).is_ok());
        // a private account with a verified address of the organisation's domain
        let private = with(|c| c["hd"] = serde_json::Value::Null);
        assert_eq!(
            check(&private),
            Err(TokenRefusal::HostedDomain("ann@example.com".into()))
        );
        let other = with(|c| c["hd"] = json!("other.org"));
        assert!(matches!(check(&other), Err(TokenRefusal::HostedDomain(_))));
        // not required: the domain rules alone
        assert!(verify(&private).is_ok());
    }

    #[test]
    fn providers_are_checked_before_the_server_starts() {
        let google = ProviderConfig {
            name: "google".into(),
            label: Some("Google".into()),
            issuer: "https://accounts.google.com".into(),
            client_id: "id".into(),
            client_secret_env: "GOOGLE_SECRET".into(),
            scopes: default_scopes(),
            allowed_domains: None,
            require_hosted_domain: true,
        };
        let local = ProviderConfig {
            name: "local-test".into(),
            issuer: "http://127.0.0.1:9000".into(),
            ..google.clone()
        };
        assert_eq!(check_providers(&[google.clone(), local.clone()]), Ok(()));
        let broken = |change: fn(&mut ProviderConfig)| {
            let mut p = google.clone();
            change(&mut p);
            check_providers(&[local.clone(), p]).unwrap_err()
        };
        assert_eq!(broken(|p| p.name = "Google Inc".into()).0, 1);
        assert!(broken(|p| p.name = "local-test".into()).1.contains("twice"));
        assert!(
            broken(|p| p.issuer = "http://id.example.com".into())
                .1
                .contains("https")
        );
        assert!(
            broken(|p| p.client_secret_env = String::new())
                .1
                .contains("client_secret_env")
        );
        assert!(
            broken(|p| p.scopes = vec!["email".into()])
                .1
                .contains("openid")
        );
    }

    /// Servers run the sign-in on a multi-threaded runtime: its futures must be `Send`.
    #[allow(dead_code)]
    fn sign_in_futures_are_send(client: &OidcClient, secrets: &AuthorizationSecrets) {
        fn send<T: Send>(_: T) {}
        send(client.authorization_url("p", "r", secrets));
        send(client.exchange("p", "code", "r", "verifier", "nonce", &[]));
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

    /// A provider on loopback: discovery, keys and a token endpoint that checks the client's
    /// secret, the code and its PKCE verifier, and answers an ID token signed with the test key.
    async fn provider(nonce: &'static str, kid: &'static str) -> String {
        use axum::routing::{get, post};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let issuer = base.clone();
        let discovery = json!({
            "issuer": issuer, "authorization_endpoint": format!("{base}/authorize"),
            "token_endpoint": format!("{base}/token"), "jwks_uri": format!("{base}/jwks"),
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                get(|| async { ([("content-type", "application/json")], JWKS) }),
            )
            .route(
                "/token",
                post(
                    move |headers: axum::http::HeaderMap, body: String| async move {
                        let auth = headers["authorization"].to_str().unwrap().to_string();
                        let expected = format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode("dataport:s3cret")
                        );
                        let form: std::collections::HashMap<String, String> =
                            url::form_urlencoded::parse(body.as_bytes())
                                .into_owned()
                                .collect();
                        if auth != expected
                            || form["code"] != "the-code"
                            || pkce_challenge(&form["code_verifier"]) != form_challenge()
                        {
                            return axum::Json(json!({"error": "invalid_grant"}));
                        }
                        let mut c = claims();
                        c["iss"] = json!(issuer);
                        c["nonce"] = json!(nonce);
                        axum::Json(
                            json!({"id_token": sign(&c, KEY, Some(kid)), "token_type": "Bearer"}),
                        )
                    },
                ),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn form_challenge() -> String {
        pkce_challenge(VERIFIER)
    }

    fn client(issuer: &str) -> OidcClient {
        let config = ProviderConfig {
            name: "test".into(),
            label: None,
            issuer: issuer.into(),
            client_id: "dataport".into(),
            client_secret_env: "TEST_SECRET".into(),
            scopes: default_scopes(),
            allowed_domains: None,
            require_hosted_domain: false,
        };
        let env = |k: &str| (k == "TEST_SECRET").then(|| "s3cret".to_string());
        OidcClient::new(&[config], &env, std::time::Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn a_code_is_exchanged_for_a_verified_identity() {
        let issuer = provider("n-1", "test-key-1").await;
        let oidc = client(&issuer);
        let secrets = AuthorizationSecrets::new().unwrap();
        let url = oidc
            .authorization_url("test", "https://d.example.com/cb", &secrets)
            .await
            .unwrap();
        let url = url::Url::parse(&url).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(url.path(), "/authorize");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], secrets.challenge);
        assert_eq!(
            (q["state"].as_str(), q["nonce"].as_str()),
            (secrets.state.as_str(), secrets.nonce.as_str())
        );
        assert_eq!(q["scope"], "openid email profile");
        let domains = vec!["example.com".to_string()];
        let id = oidc
            .exchange(
                "test",
                "the-code",
                "https://d.example.com/cb",
                VERIFIER,
                "n-1",
                &domains,
            )
            .await
            .unwrap();
        assert_eq!(id.email, "ann@example.com");
        // a wrong verifier, code or nonce
        let refused = oidc
            .exchange(
                "test",
                "the-code",
                "https://d.example.com/cb",
                "wrong",
                "n-1",
                &domains,
            )
            .await;
        assert!(
            matches!(refused, Err(OidcError::TokenEndpoint { .. })),
            "{refused:?}"
        );
        let replayed = oidc
            .exchange(
                "test",
                "the-code",
                "https://d.example.com/cb",
                VERIFIER,
                "other",
                &domains,
            )
            .await;
        assert!(
            matches!(
                replayed,
                Err(OidcError::Refused {
                    refusal: TokenRefusal::Nonce,
                    ..
                })
            ),
            "{replayed:?}"
        );
        assert!(matches!(
            oidc.discovery("nope").await,
            Err(OidcError::UnknownProvider(_))
        ));
    }

    #[tokio::test]
    async fn an_unknown_key_is_looked_up_again_once_and_a_missing_secret_is_named() {
        let issuer = provider("n-1", "rotated-key").await;
        let oidc = client(&issuer);
        let domains = vec!["example.com".to_string()];
        let refused = oidc
            .exchange(
                "test",
                "the-code",
                "https://d/cb",
                VERIFIER,
                "n-1",
                &domains,
            )
            .await;
        assert!(
            matches!(&refused, Err(OidcError::Refused { refusal: TokenRefusal::UnknownKey(k), .. }) if k == "rotated-key"),
            "{refused:?}"
        );
        let config = ProviderConfig {
            name: "g".into(),
            label: None,
            issuer: issuer.clone(),
            client_id: "c".into(),
            client_secret_env: "NOT_SET_ANYWHERE".into(),
            scopes: default_scopes(),
            allowed_domains: None,
            require_hosted_domain: false,
        };
        let e =
            OidcClient::new(&[config], &|_| None, std::time::Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("NOT_SET_ANYWHERE"), "{e}");
        // a trailing slash names the same issuer
        let wrong = client(&format!("{issuer}/"));
        assert!(
            wrong.discovery("test").await.is_ok(),
            "a trailing slash is the same issuer"
        );
    }
}

/// What an OpenID Connect provider says of itself (`/.well-known/openid-configuration`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
}

/// Why a sign-in through a provider failed; the message says which step, never a token.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("there is no sign-in provider '{0}'")]
    UnknownProvider(String),
    #[error(
        "the client secret of provider '{provider}' is not set: put it in the environment variable {env}"
    )]
    NoSecret { provider: String, env: String },
    #[error("provider '{provider}' could not be reached or answered nonsense ({step}): {message}")]
    Unavailable {
        provider: String,
        step: &'static str,
        message: String,
    },
    #[error("provider '{provider}' describes the issuer {found}, not the configured {configured}")]
    IssuerMismatch {
        provider: String,
        configured: String,
        found: String,
    },
    #[error("provider '{provider}' refused the sign-in: {error}")]
    TokenEndpoint { provider: String, error: String },
    #[error("provider '{provider}': {refusal}")]
    Refused {
        provider: String,
        refusal: TokenRefusal,
    },
}

/// How long discovery documents and keys are kept before they are fetched again.
const CACHE_FOR: std::time::Duration = std::time::Duration::from_secs(3600);
/// Keys are fetched again for an unknown key id at most this often.
const REFETCH_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

struct Cached<T> {
    value: T,
    at: std::time::Instant,
}

/// One configured provider with its secret and caches.
struct Provider {
    config: ProviderConfig,
    secret: String,
    discovery: tokio::sync::Mutex<Option<Cached<Discovery>>>,
    keys: tokio::sync::Mutex<Option<Cached<JwkSet>>>,
}

/// The configured OpenID Connect providers, talking to them over HTTPS.
pub struct OidcClient {
    http: reqwest::Client,
    providers: Vec<Provider>,
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field(
                "providers",
                &self
                    .providers
                    .iter()
                    .map(|p| &p.config.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl OidcClient {
    /// The providers of `configs`, each secret read through `env` (its `client_secret_env`).
    pub fn new(
        configs: &[ProviderConfig],
        env: &dyn Fn(&str) -> Option<String>,
        timeout: std::time::Duration,
    ) -> Result<Self, OidcError> {
        let providers = configs
            .iter()
            .map(|c| {
                let secret = env(&c.client_secret_env).ok_or_else(|| OidcError::NoSecret {
                    provider: c.name.clone(),
                    env: c.client_secret_env.clone(),
                })?;
                Ok(Provider {
                    config: c.clone(),
                    secret,
                    discovery: tokio::sync::Mutex::new(None),
                    keys: tokio::sync::Mutex::new(None),
                })
            })
            .collect::<Result<Vec<_>, OidcError>>()?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| OidcError::Unavailable {
                provider: String::new(),
                step: "HTTP client",
                message: e.to_string(),
            })?;
        Ok(Self { http, providers })
    }

    /// The providers, in the configured order.
    pub fn providers(&self) -> impl Iterator<Item = &ProviderConfig> {
        self.providers.iter().map(|p| &p.config)
    }

    fn provider(&self, name: &str) -> Result<&Provider, OidcError> {
        self.providers
            .iter()
            .find(|p| p.config.name == name)
            .ok_or_else(|| OidcError::UnknownProvider(name.to_string()))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        provider: &str,
        step: &'static str,
        url: &str,
    ) -> Result<T, OidcError> {
        let unavailable = |message: String| OidcError::Unavailable {
            provider: provider.to_string(),
            step,
            message,
        };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        response
            .json()
            .await
            .map_err(|e| unavailable(e.to_string()))
    }

    /// The provider's discovery document (cached for an hour).
    pub async fn discovery(&self, name: &str) -> Result<Discovery, OidcError> {
        let provider = self.provider(name)?;
        let mut cached = provider.discovery.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.at.elapsed() < CACHE_FOR) {
            return Ok(c.value.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            provider.config.issuer.trim_end_matches('/')
        );
        let found: Discovery = self.get_json(name, "discovery", &url).await?;
        if found.issuer.trim_end_matches('/') != provider.config.issuer.trim_end_matches('/') {
            return Err(OidcError::IssuerMismatch {
                provider: name.to_string(),
                configured: provider.config.issuer.clone(),
                found: found.issuer,
            });
        }
        *cached = Some(Cached {
            value: found.clone(),
            at: std::time::Instant::now(),
        });
        Ok(found)
    }

    /// The provider's keys: cached for an hour, fetched again when `refresh` (an unknown key
    /// id) and the copy is older than a minute.
    async fn keys(&self, name: &str, refresh: bool) -> Result<JwkSet, OidcError> {
        let provider = self.provider(name)?;
        let mut cached = provider.keys.lock().await;
        if let Some(c) = cached.as_ref() {
            let limit = if refresh { REFETCH_AFTER } else { CACHE_FOR };
            if c.at.elapsed() < limit {
                return Ok(c.value.clone());
            }
        }
        let url = self.discovery(name).await?.jwks_uri;
        let keys: JwkSet = self.get_json(name, "keys (JWKS)", &url).await?;
        *cached = Some(Cached {
            value: keys.clone(),
            at: std::time::Instant::now(),
        });
        Ok(keys)
    }

    /// Where to send the browser to sign in: the authorization code flow with PKCE (`S256`),
    /// `state` and `nonce`.
    pub async fn authorization_url(
        &self,
        name: &str,
        redirect_uri: &str,
        secrets: &AuthorizationSecrets,
    ) -> Result<String, OidcError> {
        let provider = self.provider(name)?;
        let discovery = self.discovery(name).await?;
        let mut url = url::Url::parse(&discovery.authorization_endpoint).map_err(|e| {
            OidcError::Unavailable {
                provider: name.to_string(),
                step: "discovery",
                message: format!("authorization_endpoint: {e}"),
            }
        })?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &provider.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &provider.config.scopes.join(" "))
            .append_pair("state", &secrets.state)
            .append_pair("nonce", &secrets.nonce)
            .append_pair("code_challenge", &secrets.challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Exchanges an authorization code (with its PKCE verifier) for an ID token and verifies
    /// it ([`verify_id_token`]); an unknown key id fetches the provider's keys again once.
    pub async fn exchange(
        &self,
        name: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &str,
        domains: &[String],
    ) -> Result<IdClaims, OidcError> {
        let provider = self.provider(name)?;
        let discovery = self.discovery(name).await?;
        let unavailable = |message: String| OidcError::Unavailable {
            provider: name.to_string(),
            step: "token",
            message,
        };
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier)
            .finish();
        let response = self
            .http
            .post(&discovery.token_endpoint)
            .basic_auth(
                url::form_urlencoded::byte_serialize(provider.config.client_id.as_bytes())
                    .collect::<String>(),
                Some(
                    url::form_urlencoded::byte_serialize(provider.secret.as_bytes())
                        .collect::<String>(),
                ),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| unavailable(format!("HTTP {status}: {e}")))?;
        let token = match (answer.id_token, answer.error) {
            (Some(token), None) if status.is_success() => token,
            (_, error) => {
                return Err(OidcError::TokenEndpoint {
                    provider: name.to_string(),
                    error: match (error, answer.error_description) {
                        (Some(e), Some(d)) => format!("{e}: {d}"),
                        (Some(e), None) => e,
                        (None, _) => format!("HTTP {status} without an ID token"),
                    },
                });
            }
        };
        let expected = Expected {
            issuer: &provider.config.issuer,
            client_id: &provider.config.client_id,
            nonce,
            domains: provider
                .config
                .allowed_domains
                .as_deref()
                .unwrap_or(domains),
            hosted_domain: provider.config.require_hosted_domain,
        };
        let refused = |refusal| OidcError::Refused {
            provider: name.to_string(),
            refusal,
        };
        let keys = self.keys(name, false).await?;
        match verify_id_token(&token, &keys, &expected) {
            Err(TokenRefusal::UnknownKey(_)) => {
                let keys = self.keys(name, true).await?;
                verify_id_token(&token, &keys, &expected).map_err(refused)
            }
            other => other.map_err(refused),
        }
    }
}
