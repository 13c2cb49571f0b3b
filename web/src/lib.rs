//! The Dataport HTTP API (axum): SQL, catalog, health and metrics over one router.
//!
//! Start at [`router`]; [`serve`] runs it until shutdown. Handlers only parse, call the
//! [`Engine`](dataport_engine::Engine) and encode ([`format`]); statuses are chosen in one
//! place ([`error::status_for`]). This crate never plans SQL itself and knows nothing of
//! connectors or the command line: jobs are started through the engine's scheduler, and
//! webhooks go to whatever [`PushSource`] the binary registered under the source's name.

mod accounts;
pub mod auth;
pub mod brand;
mod business_metrics;
mod catalog;
mod cli_login;
pub mod error;
pub mod format;
pub mod gateway;
mod grants;
mod health;
mod jobs;
mod json;
mod login;
mod mcp;
mod memory;
mod notify;
mod oauth;
mod oidc;
mod pages;
mod params;
mod password;
mod portal;
pub mod push;
mod query;
mod session;
mod sync;
mod sync_docs;
mod tokens;
mod trace;
mod unread;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, Uri};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use dataport_auth::Authenticator;
use dataport_engine::{Engine, Principal, RequestContext, Surface};
use ipnet::IpNet;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use error::ApiError;
pub use gateway::{GATEWAY_PATH, Gateway, GatewayOptions};
pub use mcp::{MCP_PATH, McpOptions};
pub use notify::NotifyState;
pub use oidc::redirect_uri;
pub use password::{password_link_url, send_password_link};
pub use push::{ParkedItem, PushFile, PushRejection, PushSource, PushSources, PushStatus};

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Largest JSON (array) result; streaming formats are not capped.
    pub max_json_rows: usize,
    /// Client addresses that may read `/metrics` without a token.
    pub metrics_allow: Vec<IpNet>,
    /// Reverse proxies whose `X-Forwarded-For` names the real client (for login rate limits).
    pub trusted_proxies: Vec<IpNet>,
    /// Largest upload (`POST /api/v1/sync/upload`).
    pub max_upload_bytes: usize,
    /// Where users reach the server (`server.public_url`), for links in mail.
    pub public_url: String,
    /// Where Flight SQL clients connect (`grpc://…` or `grpc+tls://…`), for the portal's
    /// connection instructions.
    pub flight_url: String,
    /// The portal's name for this instance (`portal.name`).
    pub instance_name: String,
    /// The instance's logo (`portal.logo`), beside its name on every page.
    pub logo: Option<brand::Logo>,
    /// The configured sources (`sources`), for the administrators' sources page.
    pub sources: Vec<SourceSummary>,
    /// Sources that receive data by request (`POST /webhooks/{name}`).
    pub push_sources: PushSources,
    /// The MCP endpoint for AI assistants (`mcp.*`).
    pub mcp: McpOptions,
}

/// A configured source as administrators see it: its name, connector type and settings (which
/// name secrets' environment variables, never hold them).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SourceSummary {
    pub name: String,
    /// The connector type (`keboola`, `files`).
    pub kind: String,
    /// The source's settings as configured, `key → value`.
    pub settings: Vec<(String, String)>,
}

impl Default for WebOptions {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_json_rows: 100_000,
            metrics_allow: Vec::new(),
            trusted_proxies: Vec::new(),
            max_upload_bytes: 64 << 20,
            public_url: "http://127.0.0.1:8080".into(),
            flight_url: "grpc://127.0.0.1:50051".into(),
            instance_name: "Dataport".into(),
            logo: None,
            sources: Vec::new(),
            push_sources: PushSources::default(),
            mcp: McpOptions::default(),
        }
    }
}

/// What every handler gets.
#[derive(Clone, Debug)]
pub struct AppState {
    pub engine: Engine,
    pub auth: Authenticator,
    /// Account administration (the admin API).
    pub accounts: dataport_auth::Accounts,
    /// Set-up and reset links by mail.
    pub mailer: dataport_mail::Mailer,
    /// OpenID Connect sign-in providers (none: passwords only).
    pub oidc: std::sync::Arc<dataport_auth::oidc::OidcClient>,
    /// Catalog maintenance jobs (connector syncs, refreshes, profiles).
    pub jobs: dataport_engine::jobs::Scheduler,
    /// Table profiles.
    pub profiler: std::sync::Arc<dataport_engine::profiles::Profiler>,
    /// Analyst sync manifests and files.
    pub sync: std::sync::Arc<dataport_engine::sync::SyncFiles>,
    /// Notification scripts and their delivery (none: the routes answer 503).
    pub notify: Option<NotifyState>,
    /// Corporate memory (none: the routes answer 503).
    pub memory: Option<dataport_memory::Memory>,
    pub options: WebOptions,
}

/// The engine context of an HTTP request by `principal`.
fn request_context(principal: &Principal, request_id: &str) -> RequestContext {
    RequestContext::new(principal.clone(), Surface::Http, request_id)
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id set by the request-id layer (or sent by the client).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string(),
        ))
    }
}

/// All HTTP routes.
///
/// ```
/// use axum::body::{Body, to_bytes};
/// use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
/// use axum::http::{Request, StatusCode};
/// use dataport_web::{AppState, WebOptions, router};
/// use tower::ServiceExt as _;
/// # use std::sync::Arc;
/// # use dataport_auth::{Accounts, Authenticator, DATAREAD, StateStore};
/// # use dataport_engine::{Engine, EngineOptions};
/// # use dataport_engine::{jobs::Scheduler, profiles::Profiler, sync::SyncFiles};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let data = tempfile::tempdir()?;
/// # dataport_testkit::write_table(&data.path().join("parquet/sales/orders.parquet"), &[1, 2, 3]);
/// # let mut catalog = dataport_catalog::CatalogOptions::new(data.path());
/// # catalog.watch = false;
/// # let engine = Engine::try_new(EngineOptions::new(data.path()), catalog).await?;
/// # let store = Arc::new(StateStore::open(data.path())?);
/// # let accounts = Accounts::new(Arc::clone(&store));
/// # let mailer = dataport_mail::Mailer::new(&Default::default())?;
/// # let oidc = Arc::new(dataport_auth::oidc::OidcClient::new(&[], &|_| None, Default::default())?);
/// # accounts.add_user("ana", "Correct-Horse-7", &[DATAREAD.into()])?;
/// # let auth = Authenticator::new(Arc::clone(&store), Default::default())?;
/// # let jobs = Scheduler::new(Arc::clone(&store), Vec::new())?;
/// # let profiler = Arc::new(Profiler::new(Arc::clone(&store)));
/// # let sync = Arc::new(SyncFiles::new(Arc::clone(&store), data.path()));
/// // `engine` serves a data dir with `sales.orders` (3 rows); `auth` knows the user `ana`.
/// let options = WebOptions::default();
/// let app = router(AppState { engine, auth, accounts, mailer, oidc, jobs, profiler, sync, notify: None, memory: None, options });
///
/// let login = Request::post("/api/v1/auth/login")
///     .header(CONTENT_TYPE, "application/json")
///     .body(Body::from(r#"{"username": "ana", "password": "Correct-Horse-7"}"#))?;
/// let response = app.clone().oneshot(login).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// let body = to_bytes(response.into_body(), 4096).await?;
/// let session: serde_json::Value = serde_json::from_slice(&body)?;
/// let token = session["token"].as_str().ok_or("a login answers a token")?;
///
/// let query = Request::post("/api/v1/query?format=csv")
///     .header(AUTHORIZATION, format!("Bearer {token}"))
///     .header(CONTENT_TYPE, "application/json")
///     .body(Body::from(r#"{"sql": "SELECT count(*) AS n FROM sales.orders"}"#))?;
/// let response = app.oneshot(query).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// assert_eq!(to_bytes(response.into_body(), 4096).await?, "n\n3\n");
/// # Ok(())
/// # }
/// ```
pub fn router(state: AppState) -> Router {
    let body_limit = state.options.max_body_bytes;
    let upload_limit = state.options.max_upload_bytes;
    let traced = state.clone();
    let hub = std::sync::Arc::new(mcp::Hub::new(&state));
    // Everything here needs a bearer token: new routes are protected by default.
    let protected = Router::new()
        .route("/api/v1/query", post(query::post_query))
        .route("/api/v1/catalog", get(catalog::get_catalog))
        .route("/api/v1/catalog/refresh", post(catalog::post_refresh))
        .route(
            "/api/v1/catalog/profiles.json",
            get(catalog::get_profiles_export),
        )
        .route("/api/v1/catalog/{schema}/{table}", get(catalog::get_table))
        .route(
            "/api/v1/catalog/{schema}/{table}/profile",
            get(catalog::get_profile),
        )
        .route("/api/v1/auth/me", get(auth::get_me))
        .route("/api/v1/auth/sessions", get(session::get_sessions))
        .route(
            "/api/v1/auth/tokens",
            get(tokens::list).post(tokens::create),
        )
        .route(
            "/api/v1/auth/tokens/{id}",
            axum::routing::delete(tokens::revoke),
        )
        .route(
            "/api/v1/auth/sessions/{id}",
            axum::routing::delete(session::delete_one),
        )
        .route("/api/v1/admin/audit", get(auth::get_audit))
        .route(
            "/api/v1/admin/users",
            get(accounts::list).post(accounts::invite),
        )
        .route(
            "/api/v1/admin/users/{id}",
            get(accounts::get)
                .patch(accounts::patch)
                .delete(accounts::delete),
        )
        .route("/api/v1/admin/users/{id}/link", post(accounts::post_link))
        .route("/api/v1/admin/changes", get(accounts::changes))
        .route(
            "/api/v1/admin/grants",
            get(grants::list).put(grants::put).delete(grants::delete),
        )
        .route("/api/v1/admin/preview", get(grants::get_preview))
        .route("/api/v1/metrics", get(business_metrics::get_metrics))
        .route("/api/v1/metrics/{name}", get(business_metrics::get_metric))
        .route("/api/v1/jobs", get(jobs::get_jobs))
        .route("/api/v1/jobs/{job}", get(jobs::get_job))
        .route("/api/v1/jobs/{job}/run", post(jobs::post_run))
        .route("/api/v1/sources/{source}/files/{id}", get(push::get_file))
        .route("/api/v1/sync/manifest", get(sync::get_manifest))
        .route("/api/v1/sync/files/{*path}", get(sync::get_file))
        .route(
            "/api/v1/sync/settings",
            get(sync::get_settings).put(sync::put_settings),
        )
        .route(
            "/api/v1/sync/upload",
            post(sync::post_upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/api/v1/sync/rules", get(memory::get_rules))
        .route("/api/v1/sync/docs", get(sync_docs::get_docs))
        .route(
            "/api/corporate-memory/knowledge",
            get(memory::get_knowledge),
        )
        .route("/api/corporate-memory/vote", post(memory::post_vote))
        .route("/api/corporate-memory/stats", get(memory::get_stats))
        .route("/api/corporate-memory/my-votes", get(memory::get_my_votes))
        .route("/api/corporate-memory/review", get(memory::get_review))
        .route("/api/corporate-memory/items/{id}", get(memory::get_item))
        .route(
            "/api/corporate-memory/items/{id}/review",
            post(memory::post_review),
        )
        .route(
            "/api/corporate-memory/items/{id}/moderate",
            post(memory::post_moderate),
        )
        .route(
            "/api/corporate-memory/notes",
            get(memory::get_notes).put(memory::put_notes),
        )
        .route(
            "/api/corporate-memory/transcripts",
            get(memory::get_transcripts),
        )
        .route(
            "/api/corporate-memory/transcripts/{user}/{sha256}",
            get(memory::get_transcript),
        )
        .route("/api/v1/notify/scripts", get(notify::list_scripts))
        .route(
            "/api/v1/notify/scripts/{name}",
            get(notify::get_script)
                .put(notify::put_script)
                .delete(notify::delete_script),
        )
        .route("/api/v1/notify/scripts/{name}/run", post(notify::post_run))
        .route(
            "/api/v1/notify/scripts/{name}/test",
            post(notify::post_test),
        )
        .route("/api/v1/notify/test", post(notify::post_test_content))
        .route("/api/v1/notify/runs", get(notify::list_runs))
        .route("/api/v1/notify/runs/{id}", get(notify::get_run))
        .route(
            "/api/v1/notify/notifications",
            get(notify::list_notifications),
        )
        .route("/api/v1/notify/telegram", get(notify::get_telegram))
        .route(
            "/api/v1/notify/telegram/link",
            post(notify::post_telegram_link).delete(notify::delete_telegram_link),
        )
        .route(
            "/api/v1/desktop/tokens",
            get(notify::list_desktop_tokens).post(notify::post_desktop_token),
        )
        .route(
            "/api/v1/desktop/tokens/{id}",
            axum::routing::delete(notify::delete_desktop_token),
        )
        .route_layer(from_fn_with_state(state.clone(), auth::require_bearer));
    // The desktop app's routes also take its own token; images are fetched by the app and
    // the portal alike.
    let desktop = Router::new()
        .route("/api/v1/desktop/me", get(notify::get_desktop_me))
        .route("/api/v1/desktop/scripts", get(notify::list_scripts))
        .route(
            "/api/v1/desktop/scripts/{name}/run",
            post(notify::post_desktop_run),
        )
        .route(
            "/api/v1/desktop/notifications",
            get(notify::list_notifications),
        )
        .route(
            "/api/v1/notify/notifications/{id}/image",
            get(notify::get_image),
        )
        .route_layer(from_fn_with_state(state.clone(), notify::require_desktop));
    let metrics = Router::new()
        .route("/metrics", get(health::get_metrics))
        .route_layer(from_fn_with_state(state.clone(), auth::metrics_gate));
    let api = Router::new()
        .merge(protected)
        .merge(desktop)
        .merge(metrics)
        // Authenticated by its first message.
        .route(gateway::GATEWAY_PATH, get(gateway::get_ws))
        // AI assistants: bearer tokens checked by the endpoint, answered as JSON-RPC.
        .route(
            mcp::MCP_PATH,
            post(mcp::post).get(mcp::get).delete(mcp::delete),
        )
        // These check credentials themselves.
        .route("/api/v1/auth/login", post(auth::post_login))
        .route("/api/v1/auth/refresh", post(auth::post_refresh))
        .route("/api/v1/auth/logout", post(auth::post_logout))
        .route(
            "/api/v1/auth/session",
            post(session::post_session).delete(session::delete_session),
        )
        .route("/api/v1/auth/password/forgot", post(password::post_forgot))
        .route("/api/v1/auth/password/reset", post(password::post_reset))
        .route(
            password::PASSWORD_PAGE,
            get(password::get_page).post(password::post_page),
        )
        // The portal (its pages authenticate themselves: a session, or a bearer for JSON).
        .route("/", get(portal::get_home))
        .route("/catalog", get(portal::get_search))
        .route("/catalog/{schema}/{table}", get(portal::get_table))
        .route("/metrics/{name}", get(portal::get_metric))
        .route("/sql", get(portal::get_sql).post(portal::post_sql))
        .route("/sql/download", post(portal::post_download))
        .route("/sql/cancel", post(portal::post_cancel))
        .route("/activity", get(portal::get_activity))
        .route("/notifications", get(portal::get_notifications))
        .route("/notifications/scripts", post(portal::post_script))
        .route(
            "/notifications/scripts/{name}/{action}",
            post(portal::post_script_action),
        )
        .route("/notifications/telegram", post(portal::post_telegram))
        .route(
            "/notifications/telegram/unlink",
            post(portal::post_telegram_unlink),
        )
        .route("/notifications/desktop", post(portal::post_desktop))
        .route(
            "/notifications/desktop/{id}/revoke",
            post(portal::post_desktop_revoke),
        )
        .route("/memory", get(portal::get_memory))
        .route(
            "/memory/notes",
            get(portal::get_memory_notes).post(portal::post_memory_notes),
        )
        .route("/memory/items/{id}", get(portal::get_memory_item))
        .route("/memory/items/{id}/vote", post(portal::post_memory_vote))
        .route(
            "/memory/items/{id}/review",
            post(portal::post_memory_review),
        )
        .route(
            "/memory/items/{id}/moderate",
            post(portal::post_memory_moderate),
        )
        .route("/admin/memory", get(portal::get_admin_memory))
        .route("/admin", get(portal::get_accounts))
        .route("/admin/accounts", get(portal::get_accounts))
        .route("/admin/accounts/invite", post(portal::post_invite))
        .route("/admin/accounts/{id}", post(portal::post_account))
        .route("/admin/audit", get(portal::get_audit))
        .route("/admin/jobs", get(portal::get_jobs))
        .route("/admin/jobs/{job}", get(portal::get_job))
        .route("/admin/jobs/{job}/run", post(portal::post_run))
        .route("/admin/health", get(portal::get_health))
        .route("/admin/sources", get(portal::get_sources))
        .route(
            "/admin/grants",
            get(portal::get_grants).post(portal::post_grant),
        )
        .route("/tokens", post(portal::post_token))
        .route("/tokens/{id}/revoke", post(portal::revoke_token))
        .route("/sessions/{id}/end", post(portal::end_session))
        // Assistants (MCP): the portal's page, and the OAuth 2.1 authorization server that
        // MCP clients sign in through (discovery, registration, consent, token, revocation).
        .route(
            "/assistants",
            get(portal::get_assistants).post(portal::post_assistant),
        )
        .route(
            "/assistants/{id}/revoke",
            post(portal::post_assistant_revoke),
        )
        .merge(oauth::router())
        .route("/static/{file}", get(portal::assets::get))
        // The browser's way in.
        .route(
            login::LOGIN_PAGE,
            get(login::get_login).post(login::post_login),
        )
        .route("/logout", post(login::post_logout))
        .route("/auth/oidc/{name}/start", get(oidc::start))
        .route("/auth/oidc/{name}/callback", get(oidc::callback))
        .route(
            cli_login::CLI_PAGE,
            get(cli_login::get_page).post(cli_login::post_page),
        )
        .route("/api/v1/auth/cli/token", post(cli_login::post_token))
        .route("/health", get(health::get_health))
        // Signed by the sender, not authenticated by us; the body limit is the source's own.
        .route(
            "/webhooks/{source}",
            post(push::post_webhook).layer(DefaultBodyLimit::disable()),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(std::sync::Arc::new(
            portal::RunningQueries::default(),
        )))
        .layer(axum::Extension(hub))
        .with_state(state);
    api.layer(axum::middleware::from_fn(unread::close_if_unread))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(from_fn_with_state(traced, trace::trace_request))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn not_found(uri: Uri, RequestId(id): RequestId) -> ApiError {
    ApiError::route_not_found(uri.path()).with_request_id(&id)
}

/// Serve `app` on `listener` until `shutdown` resolves, then let running requests finish for
/// at most `grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    use axum::serve::ListenerExt as _;
    // Small responses and streamed chunks go out at once, not after a delayed ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let server = async move { server.await };
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        _ = async {
            let _ = rx.await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "requests still running after the shutdown grace period; closing them");
            Ok(())
        }
    }
}
