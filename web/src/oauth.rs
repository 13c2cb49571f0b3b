//! The OAuth 2.1 authorization server that assistants (MCP clients) sign in through, as the
//! MCP authorization specification (2025-06-18, 2025-11-25) asks:
//!
//! - `GET /.well-known/oauth-protected-resource[/mcp]` (RFC 9728): `/mcp` is the resource, this
//!   server its authorization server;
//! - `GET /.well-known/oauth-authorization-server` (RFC 8414): the endpoints below;
//! - `POST /oauth/register` (RFC 7591): a public client registers its redirect URIs (https, or
//!   http on the loopback address), limited per client address and in total;
//! - `GET /oauth/authorize`: a signed-in person sees who asks and what it gets (the consent
//!   page, a portal form with the session's CSRF token), and `POST /oauth/authorize` sends the
//!   browser back with a single-use code (60 s, bound to the PKCE `S256` challenge) or
//!   `error=access_denied`. An unknown client or redirect URI gets an error page, never a
//!   redirect;
//! - `POST /oauth/token`: the code and its verifier become an API token of scope `assistant`
//!   (good only at `/mcp`) for the approving account, for 30 days; a code used twice is refused
//!   and revokes the token of its first use;
//! - `POST /oauth/revoke` (RFC 7009).
//!
//! The errors of the token and registration endpoints are the JSON of RFC 6749 and RFC 7591
//! (`{"error", "error_description"}`), which OAuth clients read: the one place in this crate
//! that answers errors in another shape than [`ApiError`](crate::ApiError)'s. Codes, verifiers
//! and tokens are never logged. The records (clients, codes, tokens) are `dataport-auth`'s.

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dataport_auth::{
    AuthError, OAUTH_TOKEN_TTL, OAuthClient, OAuthGrant, OAuthRedemption, constant_time_eq,
    oidc::pkce_challenge,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{client_ip, peer_of};
use crate::login::{form_from_client, login_url};
use crate::mcp::MCP_PATH;
use crate::pages::{FormTarget, page, problem};
use crate::portal::{Chrome, Viewer, read_form, respond};
use crate::session;
use crate::{AppState, RequestId};

/// The one scope there is: using the MCP endpoint.
pub(crate) const MCP_SCOPE: &str = "mcp";
const AUTHORIZE_PATH: &str = "/oauth/authorize";
const TOKEN_PATH: &str = "/oauth/token";
const REGISTER_PATH: &str = "/oauth/register";
const REVOKE_PATH: &str = "/oauth/revoke";
const PROTECTED_RESOURCE_PATH: &str = "/.well-known/oauth-protected-resource";

/// Most redirect URIs a client may register.
const MAX_REDIRECT_URIS: usize = 5;
/// Longest redirect URI.
const MAX_REDIRECT_URI_LEN: usize = 2000;
/// Longest client name.
const MAX_CLIENT_NAME: usize = 100;
/// The name of a client that gave none.
const UNNAMED_CLIENT: &str = "An unnamed MCP client";
/// Longest `state` echoed back.
const MAX_STATE_LEN: usize = 1000;

/// The routes of the authorization server. They check what they need themselves (a browser
/// session for the consent page, the code and verifier for a token), so none is behind the
/// bearer middleware.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            PROTECTED_RESOURCE_PATH,
            get(get_protected_resource).options(preflight),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(get_protected_resource).options(preflight),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(get_authorization_server).options(preflight),
        )
        .route(REGISTER_PATH, post(post_register).options(preflight))
        .route(AUTHORIZE_PATH, get(get_authorize).post(post_authorize))
        .route(TOKEN_PATH, post(post_token).options(preflight))
        .route(REVOKE_PATH, post(post_revoke).options(preflight))
}

/// This server's public address without a trailing slash: the issuer.
fn issuer(state: &AppState) -> String {
    state.options.public_url.trim_end_matches('/').to_string()
}

/// The MCP endpoint's URL: the protected resource, and what `resource` must name.
pub(crate) fn mcp_url(state: &AppState) -> String {
    format!("{}{MCP_PATH}", issuer(state))
}

/// The URL of the protected resource metadata of `/mcp`, for its `WWW-Authenticate: Bearer
/// resource_metadata="…"` on 401.
#[allow(
    dead_code,
    reason = "for /mcp (web/src/mcp), which still has a copy of its own"
)]
pub(crate) fn resource_metadata_url(state: &AppState) -> String {
    format!("{}{PROTECTED_RESOURCE_PATH}{MCP_PATH}", issuer(state))
}

// ---------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------

/// OAuth clients may run in a browser (another origin): the public documents and endpoints
/// answer any origin. None of them reads cookies.
fn cross_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// `OPTIONS` of the cross-origin endpoints (a browser's preflight).
async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, authorization, mcp-protocol-version"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    cross_origin(response)
}

#[derive(Debug, Serialize)]
struct ProtectedResource {
    resource: String,
    authorization_servers: Vec<String>,
    bearer_methods_supported: [&'static str; 1],
    scopes_supported: [&'static str; 1],
    resource_name: String,
}

/// `GET /.well-known/oauth-protected-resource[/mcp]` (RFC 9728).
async fn get_protected_resource(State(state): State<AppState>) -> Response {
    cross_origin(
        Json(ProtectedResource {
            resource: mcp_url(&state),
            authorization_servers: vec![issuer(&state)],
            bearer_methods_supported: ["header"],
            scopes_supported: [MCP_SCOPE],
            resource_name: state.options.instance_name.clone(),
        })
        .into_response(),
    )
}

#[derive(Debug, Serialize)]
struct AuthorizationServer {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    registration_endpoint: String,
    revocation_endpoint: String,
    response_types_supported: [&'static str; 1],
    grant_types_supported: [&'static str; 1],
    code_challenge_methods_supported: [&'static str; 1],
    token_endpoint_auth_methods_supported: [&'static str; 1],
    revocation_endpoint_auth_methods_supported: [&'static str; 1],
    scopes_supported: [&'static str; 1],
    authorization_response_iss_parameter_supported: bool,
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
async fn get_authorization_server(State(state): State<AppState>) -> Response {
    let base = issuer(&state);
    cross_origin(
        Json(AuthorizationServer {
            authorization_endpoint: format!("{base}{AUTHORIZE_PATH}"),
            token_endpoint: format!("{base}{TOKEN_PATH}"),
            registration_endpoint: format!("{base}{REGISTER_PATH}"),
            revocation_endpoint: format!("{base}{REVOKE_PATH}"),
            issuer: base,
            response_types_supported: ["code"],
            grant_types_supported: ["authorization_code"],
            code_challenge_methods_supported: ["S256"],
            token_endpoint_auth_methods_supported: ["none"],
            revocation_endpoint_auth_methods_supported: ["none"],
            scopes_supported: [MCP_SCOPE],
            authorization_response_iss_parameter_supported: true,
        })
        .into_response(),
    )
}

// ---------------------------------------------------------------------------------------------
// Errors of the JSON endpoints
// ---------------------------------------------------------------------------------------------

/// An error of the token, registration or revocation endpoint: `{"error", "error_description"}`
/// (RFC 6749 section 5.2, RFC 7591 section 3.2.2).
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    /// The server's own failure: logged under the request id, not shown.
    fn server(request_id: &str, e: &AuthError) -> Self {
        tracing::error!(request_id, error = %e, "the OAuth endpoint failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: format!("the server failed; the request id is {request_id}"),
            retry_after: None,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut response = no_store((self.status, Json(body)).into_response());
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        cross_origin(response)
    }
}

/// An answer that carries a secret (or a refusal about one): never stored by a cache.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

/// What a client asks to register as. Other metadata (logo, URIs, contacts) is ignored; what
/// this server does not offer (secrets, other grants) is replaced by what it does (RFC 7591
/// section 3.2.1 allows that), and the answer says so.
#[derive(Debug, Deserialize)]
struct Registration {
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    client_name: Option<String>,
}

#[derive(Debug, Serialize)]
struct Registered {
    client_id: String,
    client_id_issued_at: i64,
    client_name: String,
    redirect_uris: Vec<String>,
    grant_types: [&'static str; 1],
    response_types: [&'static str; 1],
    token_endpoint_auth_method: &'static str,
    scope: &'static str,
}

/// `POST /oauth/register` (RFC 7591), JSON → 201 with the client's id.
async fn post_register(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Response {
    let address = client_ip(&state, request.headers(), peer_of(request.extensions()));
    let bytes = match axum::body::to_bytes(request.into_body(), state.options.max_body_bytes).await
    {
        Ok(bytes) => bytes,
        Err(_) => {
            return OAuthError::new(
                "invalid_client_metadata",
                format!(
                    "the registration is larger than {} bytes",
                    state.options.max_body_bytes
                ),
            )
            .into_response();
        }
    };
    let registration: Registration = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return OAuthError::new(
                "invalid_client_metadata",
                format!(
                    "the registration must be JSON like {{\"client_name\": \"…\", \"redirect_uris\": [\"http://127.0.0.1:33418/callback\"]}}: {e}"
                ),
            )
            .into_response();
        }
    };
    let name = match client_name(registration.client_name.as_deref()) {
        Ok(name) => name,
        Err(e) => return OAuthError::new("invalid_client_metadata", e).into_response(),
    };
    if let Err(e) = check_redirect_uris(&registration.redirect_uris) {
        return OAuthError::new("invalid_redirect_uri", e).into_response();
    }
    let accounts = state.accounts.clone();
    let uris = registration.redirect_uris;
    let registered =
        tokio::task::spawn_blocking(move || accounts.register_oauth_client(&name, uris, &address))
            .await
            .unwrap_or_else(|e| {
                Err(AuthError::Internal {
                    message: format!("the registration task failed: {e}"),
                })
            });
    match registered {
        Ok(client) => {
            let body = Registered {
                client_id: client.client_id,
                client_id_issued_at: client.created_at,
                client_name: client.client_name,
                redirect_uris: client.redirect_uris,
                grant_types: ["authorization_code"],
                response_types: ["code"],
                token_endpoint_auth_method: "none",
                scope: MCP_SCOPE,
            };
            cross_origin(no_store((StatusCode::CREATED, Json(body)).into_response()))
        }
        Err(AuthError::TooManyAttempts { retry_after_secs }) => OAuthError {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "temporarily_unavailable",
            description: "too many clients registered from here lately; try again later".into(),
            retry_after: Some(retry_after_secs),
        }
        .into_response(),
        Err(e) => OAuthError::server(&id, &e).into_response(),
    }
}

/// The client's name: trimmed, at most 100 characters, no control characters; a stand-in when
/// it gave none.
fn client_name(name: Option<&str>) -> Result<String, String> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Ok(UNNAMED_CLIENT.to_string());
    }
    if name.chars().count() > MAX_CLIENT_NAME {
        return Err(format!(
            "client_name has more than {MAX_CLIENT_NAME} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("client_name may not contain control characters".into());
    }
    Ok(name.to_string())
}

/// Every redirect URI is one a code may safely go to, and there are 1 to 5 of them.
fn check_redirect_uris(uris: &[String]) -> Result<(), String> {
    if uris.is_empty() || uris.len() > MAX_REDIRECT_URIS {
        return Err(format!(
            "register 1 to {MAX_REDIRECT_URIS} redirect_uris (you sent {})",
            uris.len()
        ));
    }
    uris.iter()
        .try_for_each(|uri| check_redirect_uri(uri).map(|_| ()))
}

/// A redirect URI a code may go to: an absolute `https` URL, `http` on the loopback address
/// (`127.0.0.1`, `[::1]`, `localhost`: a program on the user's own machine), or a desktop
/// app's own scheme (reverse-domain, or a known MCP client's such as `cursor:`), without a
/// fragment or credentials.
fn check_redirect_uri(uri: &str) -> Result<url::Url, String> {
    if uri.len() > MAX_REDIRECT_URI_LEN {
        return Err(format!(
            "a redirect URI has more than {MAX_REDIRECT_URI_LEN} characters"
        ));
    }
    let parsed =
        url::Url::parse(uri).map_err(|e| format!("'{uri}' is not an absolute URL: {e}"))?;
    if parsed.fragment().is_some() || uri.contains('#') {
        return Err(format!(
            "'{uri}' has a fragment (#…); redirect URIs may not"
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "'{uri}' carries credentials; redirect URIs may not"
        ));
    }
    match parsed.scheme() {
        "https" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        "http" => Err(format!(
            "'{uri}' is plain http on another host than the loopback address: use https, or http://127.0.0.1:<port>/… for a program on your computer"
        )),
        // A desktop app's own scheme (RFC 8252, 7.1): reverse-domain, or a known MCP client's.
        scheme if scheme.contains('.') || PRIVATE_SCHEMES.contains(&scheme) => Ok(parsed),
        _ => Err(format!(
            "'{uri}' is neither https, nor http on the loopback address, nor a desktop app's own scheme (reverse-domain like com.example.app:/callback)"
        )),
    }
}

/// Schemes of MCP clients that register redirect URIs of their own (not reverse-domain).
const PRIVATE_SCHEMES: [&str; 5] = ["cursor", "vscode", "vscode-insiders", "windsurf", "claude"];

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether `given` (an authorization request's redirect URI) is `registered`: the same string,
/// or for a loopback URI the same but for the port, which a native program picks when it
/// starts (OAuth 2.1, section 8.4.2).
fn redirect_matches(registered: &str, given: &str) -> bool {
    if registered == given {
        return true;
    }
    let (Ok(mut a), Ok(mut b)) = (url::Url::parse(registered), url::Url::parse(given)) else {
        return false;
    };
    if a.scheme() != "http" || !is_loopback(&a) || !is_loopback(&b) || given.contains('#') {
        return false;
    }
    // Ports of loopback URIs do not count.
    if a.set_port(None).is_err() || b.set_port(None).is_err() {
        return false;
    }
    a == b
}

// ---------------------------------------------------------------------------------------------
// PKCE
// ---------------------------------------------------------------------------------------------

/// Whether `verifier` is a PKCE verifier (RFC 7636: 43 to 128 of `A-Z a-z 0-9 - . _ ~`) whose
/// `S256` challenge is `challenge`, compared in constant time.
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    // Compare even when malformed, so the time says nothing about which check failed.
    let same = constant_time_eq(pkce_challenge(verifier).as_bytes(), challenge.as_bytes());
    well_formed && same
}

/// Whether `challenge` is an `S256` challenge: 43 characters of base64url.
fn well_formed_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---------------------------------------------------------------------------------------------
// Authorization
// ---------------------------------------------------------------------------------------------

/// The parameters of an authorization request (the query of `GET /oauth/authorize`, and the
/// hidden fields of the consent form).
#[derive(Debug, Clone, Default, Deserialize)]
struct AuthorizeParams {
    #[serde(default)]
    response_type: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    code_challenge_method: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    resource: Option<String>,
}

impl AuthorizeParams {
    /// The request as a query string (to come back to after signing in).
    fn query(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in self.pairs() {
            query.append_pair(key, value);
        }
        query.finish()
    }

    fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("response_type", &self.response_type),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.redirect_uri),
            ("code_challenge", &self.code_challenge),
            ("code_challenge_method", &self.code_challenge_method),
            ("state", &self.state),
            ("scope", &self.scope),
            ("resource", &self.resource),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }
}

/// An authorization request that names a registered client and one of its redirect URIs, and
/// asks for what this server gives.
#[derive(Debug)]
struct Approvable {
    client: OAuthClient,
    /// The redirect URI as the request gave it (the token request must repeat it exactly).
    redirect_text: String,
    redirect_uri: url::Url,
    code_challenge: String,
    state: Option<String>,
    resource: Option<String>,
}

/// Why an authorization request cannot be approved.
#[derive(Debug)]
enum Refusal {
    /// The client or the redirect URI is not known: say so on a page, never redirect.
    Page(String),
    /// Anything else: back to the client's redirect URI with an OAuth error.
    Redirect {
        redirect_uri: Box<url::Url>,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
    /// The server's own failure.
    Internal(AuthError),
}

/// Checks an authorization request: first the client and its redirect URI (which decide
/// whether errors may go back to the client at all), then the rest.
fn check_authorization(state: &AppState, params: &AuthorizeParams) -> Result<Approvable, Refusal> {
    let client_id = params.client_id.as_deref().unwrap_or_default();
    if client_id.is_empty() {
        return Err(Refusal::Page(
            "The request names no client (client_id). Start connecting the assistant again.".into(),
        ));
    }
    let client = match state.accounts.oauth_client(client_id) {
        Ok(Some(client)) => client,
        Ok(None) => {
            return Err(Refusal::Page(
                "This assistant is not registered here (or its registration expired). Start connecting it again: it registers itself anew."
                    .into(),
            ));
        }
        Err(e) => return Err(Refusal::Internal(e)),
    };
    let chosen = match params.redirect_uri.as_deref() {
        Some(given) => client
            .redirect_uris
            .iter()
            .any(|r| redirect_matches(r, given))
            .then(|| given.to_string()),
        None if client.redirect_uris.len() == 1 => client.redirect_uris.first().cloned(),
        None => None,
    };
    let Some((redirect_text, redirect_uri)) =
        chosen.and_then(|uri| check_redirect_uri(&uri).ok().map(|parsed| (uri, parsed)))
    else {
        return Err(Refusal::Page(
            "The address this request would send you back to is not one the assistant registered, so it is not followed."
                .into(),
        ));
    };
    let the_state = params.state.clone().filter(|s| s.len() <= MAX_STATE_LEN);
    let back = |error: &'static str, description: String| Refusal::Redirect {
        redirect_uri: Box::new(redirect_uri.clone()),
        state: the_state.clone(),
        error,
        description,
    };
    if params
        .state
        .as_ref()
        .is_some_and(|s| s.len() > MAX_STATE_LEN)
    {
        return Err(back(
            "invalid_request",
            format!("state is longer than {MAX_STATE_LEN} characters"),
        ));
    }
    if params.response_type.as_deref() != Some("code") {
        return Err(back(
            "unsupported_response_type",
            "this server answers response_type=code only".into(),
        ));
    }
    let challenge = params.code_challenge.as_deref().unwrap_or_default();
    if challenge.is_empty() {
        return Err(back(
            "invalid_request",
            "PKCE is required: send code_challenge and code_challenge_method=S256".into(),
        ));
    }
    if params.code_challenge_method.as_deref() != Some("S256") {
        return Err(back(
            "invalid_request",
            "code_challenge_method must be S256".into(),
        ));
    }
    if !well_formed_challenge(challenge) {
        return Err(back(
            "invalid_request",
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)".into(),
        ));
    }
    let resource = params
        .resource
        .as_deref()
        .map(|r| r.trim_end_matches('/').to_string());
    if let Some(r) = &resource
        && *r != mcp_url(state)
    {
        return Err(back(
            "invalid_target",
            format!(
                "this server is the authorization server of {} only",
                mcp_url(state)
            ),
        ));
    }
    Ok(Approvable {
        client,
        redirect_text,
        redirect_uri,
        code_challenge: challenge.to_string(),
        state: the_state,
        resource,
    })
}

/// The client's redirect URI with `pairs` (and this server as `iss`, RFC 9207) added.
fn back_to_client(state: &AppState, redirect_uri: &url::Url, pairs: &[(&str, &str)]) -> String {
    let mut url = redirect_uri.clone();
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in pairs {
            query.append_pair(key, value);
        }
        query.append_pair("iss", &issuer(state));
    }
    url.into()
}

/// `302 Found` to `location` (the client's redirect URI), never cached.
fn found(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => no_store((StatusCode::FOUND, [(header::LOCATION, value)]).into_response()),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

fn refusal_response(state: &AppState, request_id: &str, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Page(message) => error_page(state, StatusCode::BAD_REQUEST, &message),
        Refusal::Redirect {
            redirect_uri,
            state: the_state,
            error,
            description,
        } => {
            let mut pairs = vec![
                ("error", error),
                ("error_description", description.as_str()),
            ];
            if let Some(s) = &the_state {
                pairs.push(("state", s));
            }
            found(&back_to_client(state, &redirect_uri, &pairs))
        }
        Refusal::Internal(e) => {
            tracing::error!(request_id, error = %e, "the authorization request failed");
            error_page(
                state,
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!(
                    "Something went wrong on the server; try again later (request {request_id})."
                ),
            )
        }
    }
}

/// A page saying why an assistant cannot be connected (in the shell of the sign-in pages).
fn error_page(state: &AppState, status: StatusCode, message: &str) -> Response {
    page(
        state,
        status,
        "Connect an assistant",
        &format!(
            "<h1>This assistant cannot be connected</h1>{}<p><a href=\"/assistants\">Assistants</a></p>",
            problem(Some(message))
        ),
        FormTarget::SelfOnly,
    )
}

#[derive(askama::Template)]
#[template(path = "oauth_consent.html")]
struct ConsentPage<'a> {
    chrome: Chrome,
    client_name: &'a str,
    redirect_host: String,
    /// The redirect goes to a program on the user's own computer (a loopback address).
    redirect_local: bool,
    days: u64,
    params: Vec<(&'static str, String)>,
}

/// `GET /oauth/authorize`: the consent page for a signed-in person (else to sign in and back).
async fn get_authorize(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    uri: Uri,
    headers: HeaderMap,
    params: Result<Query<AuthorizeParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "The request's parameters cannot be read (one may be given twice). Start connecting the assistant again.",
        );
    };
    let approvable = match check_authorization(&state, &params) {
        Ok(a) => a,
        Err(refusal) => return refusal_response(&state, &id, refusal),
    };
    let Ok(auth) = session::authenticate(&state, &Method::GET, &headers) else {
        let here = uri
            .path_and_query()
            .map_or(AUTHORIZE_PATH, |pq| pq.as_str())
            .to_string();
        return crate::pages::see_other(&login_url(&here, None));
    };
    let viewer = Viewer::of_session(auth, &headers, false);
    consent(&state, &viewer, &params, &approvable)
}

fn consent(
    state: &AppState,
    viewer: &Viewer,
    params: &AuthorizeParams,
    approvable: &Approvable,
) -> Response {
    let page = ConsentPage {
        chrome: Chrome::new(state, viewer, "/assistants"),
        client_name: &approvable.client.client_name,
        redirect_host: approvable
            .redirect_uri
            .host_str()
            .unwrap_or_default()
            .to_string(),
        redirect_local: is_loopback(&approvable.redirect_uri),
        days: OAUTH_TOKEN_TTL.as_secs() / 86_400,
        params: params.pairs().map(|(k, v)| (k, v.to_string())).collect(),
    };
    let mut response = respond(viewer, StatusCode::OK, &(), &page);
    // The form's answer redirects to the client: the policy must let the form go there.
    let target = match approvable.redirect_uri.scheme() {
        "http" | "https" => approvable.redirect_uri.origin().ascii_serialization(),
        // A desktop app's scheme has no origin: allow the scheme itself.
        scheme => format!("{scheme}:"),
    };
    let policy = crate::portal::POLICY.replace(
        "form-action 'self'",
        &format!("form-action 'self' {target}"),
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// The consent form: the decision, the session's CSRF token and the request again.
#[derive(Debug, Deserialize)]
struct ConsentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(flatten)]
    params: AuthorizeParams,
}

impl crate::portal::PostedForm for ConsentForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// `POST /oauth/authorize` (the consent form): back to the client with a code, or with
/// `error=access_denied`.
async fn post_authorize(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let Ok(auth) = session::authenticate(&state, &Method::GET, &headers) else {
        // Signed out meanwhile: sign in and see the request again.
        let Some((_, _, form)) = form_from_client::<ConsentForm>(&state, request).await else {
            return error_page(
                &state,
                StatusCode::BAD_REQUEST,
                "The form could not be read.",
            );
        };
        let again = format!("{AUTHORIZE_PATH}?{}", form.params.query());
        return crate::pages::see_other(&login_url(&again, None));
    };
    let viewer = Viewer::of_session(auth, &headers, false);
    let form: ConsentForm = match read_form(&state, &viewer, request).await {
        Ok(form) => form,
        Err((status, message)) => {
            tracing::warn!(request_id = %id, "an assistant's consent form without the session's CSRF token was refused");
            return error_page(&state, status, &message);
        }
    };
    let approvable = match check_authorization(&state, &form.params) {
        Ok(a) => a,
        Err(refusal) => return refusal_response(&state, &id, refusal),
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if form.decision != "allow" {
        tracing::info!(request_id = %id, user = %viewer.principal.name, client_id = %approvable.client.client_id, "assistant not approved");
        pairs.push(("error", "access_denied"));
        pairs.push((
            "error_description",
            "the user did not approve the assistant",
        ));
        if let Some(s) = &approvable.state {
            pairs.push(("state", s));
        }
        return crate::pages::see_other(&back_to_client(&state, &approvable.redirect_uri, &pairs));
    }
    let grant = OAuthGrant {
        client_id: &approvable.client.client_id,
        redirect_uri: &approvable.redirect_text,
        code_challenge: &approvable.code_challenge,
        scope: MCP_SCOPE,
        resource: approvable.resource.as_deref(),
    };
    let code = match state.accounts.grant_oauth_code(&viewer.principal, &grant) {
        Ok(code) => code,
        Err(e) => return refusal_response(&state, &id, Refusal::Internal(e)),
    };
    pairs.push(("code", &code));
    if let Some(s) = &approvable.state {
        pairs.push(("state", s));
    }
    crate::pages::see_other(&back_to_client(&state, &approvable.redirect_uri, &pairs))
}

// ---------------------------------------------------------------------------------------------
// Token and revocation
// ---------------------------------------------------------------------------------------------

/// A token request (form-encoded). Unknown parameters are ignored, as OAuth asks.
#[derive(Deserialize)]
struct TokenRequest {
    #[serde(default)]
    grant_type: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
    #[serde(default)]
    resource: Option<String>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("grant_type", &self.grant_type)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct TokenAnswer {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    scope: &'static str,
}

/// `POST /oauth/token` with `grant_type=authorization_code`, the code, the redirect URI, the
/// client's id and the PKCE verifier → an assistant token of the approving account.
async fn post_token(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Response {
    let Some((_, _, form)) = form_from_client::<TokenRequest>(&state, request).await else {
        return OAuthError::invalid_request(
            "send the token request form-encoded (application/x-www-form-urlencoded), each parameter once",
        )
        .into_response();
    };
    let (state2, id2) = (state.clone(), id.clone());
    let answered = tokio::task::spawn_blocking(move || exchange(&state2, &id2, &form))
        .await
        .unwrap_or_else(|e| {
            Err(OAuthError::server(
                &id,
                &AuthError::Internal {
                    message: format!("the token task failed: {e}"),
                },
            ))
        });
    match answered {
        Ok(answer) => cross_origin(no_store(Json(answer).into_response())),
        Err(e) => {
            tracing::info!(request_id = %id, error = e.error, reason = %e.description, "OAuth token request refused");
            e.into_response()
        }
    }
}

/// The checks of a token request, in the order RFC 6749 section 4.1.3 gives them, and the
/// exchange.
fn exchange(
    state: &AppState,
    request_id: &str,
    form: &TokenRequest,
) -> Result<TokenAnswer, OAuthError> {
    let internal = |e: AuthError| OAuthError::server(request_id, &e);
    match form.grant_type.as_deref() {
        None => return Err(OAuthError::invalid_request("grant_type is missing")),
        Some("authorization_code") => {}
        Some(_) => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                "this server answers grant_type=authorization_code only",
            ));
        }
    }
    let required = |value: &Option<String>, name: &str| {
        value
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is missing")))
    };
    let client_id = required(&form.client_id, "client_id")?;
    let code = required(&form.code, "code")?;
    let verifier = required(&form.code_verifier, "code_verifier")?;
    let Some(client) = state.accounts.oauth_client(&client_id).map_err(internal)? else {
        return Err(OAuthError::new(
            "invalid_client",
            "this client is not registered here (or its registration expired); register again",
        ));
    };
    let Some(found) = state.accounts.oauth_code(&code).map_err(internal)? else {
        return Err(OAuthError::invalid_grant(
            "the code is unknown or expired; authorize again",
        ));
    };
    if found.used_at.is_some() {
        // Used before: refuse, and revoke what its first use got (OAuth 2.1, section 4.1.3).
        state
            .accounts
            .redeem_oauth_code(&found, "")
            .map_err(internal)?;
        return Err(OAuthError::invalid_grant(
            "the code was used already; the token issued for it is revoked. Authorize again",
        ));
    }
    if found.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    let redirect_ok = match form.redirect_uri.as_deref() {
        Some(given) => given == found.redirect_uri,
        // Left out: only when it could not have been otherwise at the authorization.
        None => client.redirect_uris == [found.redirect_uri.clone()],
    };
    if !redirect_ok {
        return Err(OAuthError::invalid_grant(
            "redirect_uri is not the one of the authorization request",
        ));
    }
    if found.expires_at <= dataport_auth::now_secs() {
        return Err(OAuthError::invalid_grant(
            "the code expired; authorize again",
        ));
    }
    if !pkce_matches(&verifier, &found.code_challenge) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge of the authorization request",
        ));
    }
    if let Some(resource) = form.resource.as_deref() {
        let resource = resource.trim_end_matches('/');
        let asked = found.resource.as_deref().unwrap_or(resource);
        if resource != mcp_url(state) || resource != asked {
            return Err(OAuthError::new(
                "invalid_target",
                format!("this server issues tokens for {} only", mcp_url(state)),
            ));
        }
    }
    let label = format!("{} (OAuth)", client.client_name);
    match state
        .accounts
        .redeem_oauth_code(&found, &label)
        .map_err(internal)?
    {
        OAuthRedemption::Issued(token) => Ok(TokenAnswer {
            access_token: token.token,
            token_type: "Bearer",
            expires_in: token
                .expires_at
                .map_or(OAUTH_TOKEN_TTL.as_secs() as i64, |at| {
                    at - dataport_auth::now_secs()
                }),
            scope: MCP_SCOPE,
        }),
        OAuthRedemption::Reused => Err(OAuthError::invalid_grant(
            "the code was used already; the token issued for it is revoked. Authorize again",
        )),
        OAuthRedemption::Unusable => Err(OAuthError::invalid_grant(
            "the code expired or its account can no longer sign in; authorize again",
        )),
    }
}

#[derive(Deserialize)]
struct RevokeRequest {
    #[serde(default)]
    token: Option<String>,
}

/// `POST /oauth/revoke` with `token=…` (RFC 7009): an assistant's token is revoked; anything
/// else is left alone. 200 either way.
async fn post_revoke(
    State(state): State<AppState>,
    RequestId(id): RequestId,
    request: Request,
) -> Response {
    let Some((_, _, form)) = form_from_client::<RevokeRequest>(&state, request).await else {
        return OAuthError::invalid_request("send token=… form-encoded").into_response();
    };
    let Some(token) = form.token.filter(|t| !t.is_empty()) else {
        return OAuthError::invalid_request("token is missing").into_response();
    };
    let auth = state.auth.clone();
    let revoked = tokio::task::spawn_blocking(move || auth.revoke_assistant_token(&token))
        .await
        .unwrap_or_else(|e| {
            Err(AuthError::Internal {
                message: format!("the revocation task failed: {e}"),
            })
        });
    match revoked {
        Ok(_) => cross_origin(no_store(StatusCode::OK.into_response())),
        Err(e) => {
            let mut e = OAuthError::server(&id, &e);
            // RFC 7009 section 2.2.1: the client may try again later.
            e.status = StatusCode::SERVICE_UNAVAILABLE;
            e.error = "temporarily_unavailable";
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_https_or_loopback_without_fragments() {
        for good in [
            "https://claude.ai/api/mcp/auth_callback",
            "https://vscode.dev/redirect",
            "http://127.0.0.1:33418/callback",
            "http://127.0.0.1/callback?x=1",
            "http://[::1]:8080/cb",
            "http://localhost:6274/oauth/callback",
            "https://example.com:8443/cb",
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "com.example.app:/oauth/callback",
        ] {
            assert!(check_redirect_uri(good).is_ok(), "{good}");
        }
        for bad in [
            "http://example.com/cb",
            "http://10.0.0.1/cb",
            "http://localhost.evil.example/cb",
            "http://127.0.0.1.evil.example/cb",
            "https://example.com/cb#frag",
            "https://example.com/cb#",
            "https://user:pw@example.com/cb",
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "myapp://callback",
            "/relative/cb",
            "ftp://127.0.0.1/cb",
            "",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2000));
        assert!(check_redirect_uri(&long).is_err());
        assert!(check_redirect_uris(&[]).is_err());
        let five = vec!["https://a.example/cb".to_string(); 5];
        assert!(check_redirect_uris(&five).is_ok());
        let six = vec!["https://a.example/cb".to_string(); 6];
        assert!(check_redirect_uris(&six).is_err());
        let one_bad = vec![
            "https://a.example/cb".to_string(),
            "http://a.example/cb".into(),
        ];
        assert!(check_redirect_uris(&one_bad).is_err());
    }

    #[test]
    fn a_loopback_redirect_matches_on_any_port_and_nothing_else_does() {
        let registered = "http://127.0.0.1:33418/callback";
        assert!(redirect_matches(registered, registered));
        assert!(redirect_matches(
            registered,
            "http://127.0.0.1:50000/callback"
        ));
        assert!(redirect_matches(registered, "http://127.0.0.1/callback"));
        assert!(!redirect_matches(
            registered,
            "http://127.0.0.1:50000/other"
        ));
        assert!(!redirect_matches(
            registered,
            "http://localhost:33418/callback"
        ));
        assert!(!redirect_matches(
            registered,
            "http://127.0.0.1:5/callback#x"
        ));
        let https = "https://claude.ai/api/mcp/auth_callback";
        assert!(redirect_matches(https, https));
        assert!(!redirect_matches(
            https,
            "https://claude.ai:444/api/mcp/auth_callback"
        ));
        assert!(!redirect_matches(
            https,
            "https://claude.ai/api/mcp/auth_callback?x=1"
        ));
        assert!(!redirect_matches(
            https,
            "https://evil.example/api/mcp/auth_callback"
        ));
    }

    #[test]
    fn pkce_follows_rfc_7636_s256() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(well_formed_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            challenge
        ));
        assert!(!pkce_matches(challenge, challenge));
        assert!(!pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        // Too short, too long, or with characters a verifier may not have.
        assert!(!pkce_matches("short", &pkce_challenge("short")));
        let long = "a".repeat(129);
        assert!(!pkce_matches(&long, &pkce_challenge(&long)));
        let spaced = format!("{} x", "a".repeat(50));
        assert!(!pkce_matches(&spaced, &pkce_challenge(&spaced)));
        let longest = "~".repeat(128);
        assert!(pkce_matches(&longest, &pkce_challenge(&longest)));
        assert!(!well_formed_challenge("plain-challenge"));
        assert!(!well_formed_challenge(&"a".repeat(44)));
    }

    #[test]
    fn client_names_are_short_and_printable() {
        assert_eq!(client_name(None).unwrap(), UNNAMED_CLIENT);
        assert_eq!(client_name(Some("  ")).unwrap(), UNNAMED_CLIENT);
        assert_eq!(client_name(Some(" Claude Code ")).unwrap(), "Claude Code");
        assert!(client_name(Some(&"x".repeat(101))).is_err());
        assert!(client_name(Some(&"é".repeat(100))).is_ok());
        assert!(client_name(Some("a\nb")).is_err());
    }

    #[test]
    fn the_authorization_request_comes_back_as_it_was() {
        let params = AuthorizeParams {
            response_type: Some("code".into()),
            client_id: Some("dpc_1".into()),
            redirect_uri: Some("http://127.0.0.1:5000/cb".into()),
            state: Some("a b&c".into()),
            ..AuthorizeParams::default()
        };
        assert_eq!(
            params.query(),
            "response_type=code&client_id=dpc_1&redirect_uri=http%3A%2F%2F127.0.0.1%3A5000%2Fcb&state=a+b%26c"
        );
    }
}
