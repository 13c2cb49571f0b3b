//! The parts every command builds from the configuration the same way: authentication, the
//! query engine, the DataFusion settings. `serve` and the commands (`user`, `sync`,
//! `profile`, `rsync-filter`) use them; this module uses none of theirs.

use std::sync::Arc;

use anyhow::Context;
use dataport_auth::{Accounts, AuditLog, AuthOptions, Authenticator, StateStore};
use dataport_catalog::CatalogOptions;
use dataport_engine::{Engine, EngineOptions};

use crate::config::{Config, Secret};

/// Authentication as the configuration sets it up (the server's, and the commands that act
/// for a user).
pub(crate) fn authenticator(
    config: &Config,
    store: &Arc<StateStore>,
    audit: Option<AuditLog>,
) -> anyhow::Result<Authenticator> {
    Authenticator::new(
        Arc::clone(store),
        AuthOptions {
            issuer: config.settings.issuer.clone(),
            token_ttl: config.settings.token_ttl,
            refresh_grace: config.settings.refresh_grace,
            signing_key: config.settings.signing_key.clone().map(|Secret(k)| k),
            max_failed_logins: config.settings.max_failed_logins,
            audit,
            session_idle: config.settings.session_idle,
            session_lifetime: config.settings.session_lifetime,
        },
    )
    .context("cannot set up authentication")
}

/// Account administration with the organisation's domains, default groups and the outside
/// emails that may register.
pub(crate) fn accounts(config: &Config, store: &Arc<StateStore>) -> Accounts {
    Accounts::new(Arc::clone(store))
        .with_organisation(
            &config.settings.allowed_domains,
            &config.settings.default_groups,
        )
        .with_password_emails(&config.settings.password_emails)
}

/// The OpenID Connect providers of `auth.providers`, each with its client secret from the
/// environment.
pub(crate) fn oidc(config: &Config) -> anyhow::Result<dataport_auth::oidc::OidcClient> {
    dataport_auth::oidc::OidcClient::new(
        &config.settings.providers.0,
        &|name| std::env::var(name).ok().filter(|v| !v.is_empty()),
        std::time::Duration::from_secs(15),
    )
    .context("cannot set up OpenID Connect sign-in (auth.providers)")
}

/// Mail as `mail.*` configures it (the log when no SMTP host is set).
pub(crate) fn mailer(config: &Config) -> anyhow::Result<dataport_mail::Mailer> {
    let s = &config.settings;
    dataport_mail::Mailer::new(&dataport_mail::MailConfig {
        host: s.smtp_host.clone(),
        port: s.smtp_port,
        security: s.smtp_security.0,
        user: s.smtp_user.clone(),
        password: s.smtp_password.clone().map(|Secret(p)| p),
        from: s.from.clone(),
        ca_file: s.smtp_ca_file.clone(),
        timeout: std::time::Duration::from_secs(30),
    })
    .context("invalid mail settings")
}

/// The server's DataFusion settings, for commands that open the catalog on their own.
pub(crate) fn catalog_session_config(
    config: &Config,
) -> anyhow::Result<datafusion::prelude::SessionConfig> {
    let mut options = EngineOptions::new(&config.settings.data_dir);
    options.datafusion = config.settings.datafusion.clone().into_iter().collect();
    dataport_engine::session_config(&options).context("invalid engine.datafusion settings")
}

/// The query engine over the configured data dir, with `auth`'s grants. `serving`: the
/// server's own (it watches the data dir and holds the in-memory tables); commands that only
/// look (e.g. `rsync-filter`) pass false.
pub(crate) async fn engine(
    config: &Config,
    auth: &Authenticator,
    audit: Option<AuditLog>,
    serving: bool,
) -> anyhow::Result<Engine> {
    let mut engine_options = EngineOptions::new(&config.settings.data_dir);
    engine_options.grants = Some(Arc::new(auth.clone()));
    engine_options.audit = audit;
    engine_options.memory_limit = config.settings.memory_limit.bytes;
    engine_options.spill_dir = config.spill_dir.clone();
    engine_options.query_timeout = config.settings.query_timeout;
    engine_options.target_partitions = config.target_partitions;
    engine_options.datafusion = config.settings.datafusion.clone().into_iter().collect();
    let mut catalog_options = CatalogOptions::new(&config.settings.data_dir);
    catalog_options.refresh_interval = config.settings.refresh_interval;
    catalog_options.watch = serving && config.settings.watch;
    if serving {
        catalog_options.memory = config.memory_tables.clone();
    }
    Engine::try_new(engine_options, catalog_options)
        .await
        .context("cannot start the query engine")
}

/// The configured sources for the administrators' sources page: each one's settings as
/// written (they name the environment variables of secrets, never hold them), flattened to
/// `key → value` text.
pub(crate) fn source_summaries(config: &Config) -> Vec<dataport_web::SourceSummary> {
    config
        .settings
        .sources
        .0
        .iter()
        .map(|s| {
            let mut settings = Vec::new();
            let mut kind = String::new();
            if let Ok(serde_json::Value::Object(mut fields)) = serde_json::to_value(&s.kind) {
                if let Some(serde_json::Value::String(t)) = fields.remove("type") {
                    kind = t;
                }
                flatten_settings("", serde_json::Value::Object(fields), &mut settings);
            }
            dataport_web::SourceSummary {
                name: s.name.clone(),
                kind,
                settings,
            }
        })
        .collect()
}

/// Settings as `key → text`, nested sections as dotted keys (`fields.severity`); unset ones
/// left out.
fn flatten_settings(prefix: &str, value: serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Null => {}
        serde_json::Value::Object(fields) => {
            for (key, v) in fields {
                let key = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten_settings(&key, v, out);
            }
        }
        serde_json::Value::String(text) => out.push((prefix.to_string(), text)),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// The MCP endpoint's settings (`mcp.*`).
pub(crate) fn mcp_options(config: &Config) -> dataport_web::McpOptions {
    let s = &config.settings;
    dataport_web::McpOptions {
        enabled: s.enabled,
        limits: dataport_mcp::Limits {
            default_rows: s.default_rows,
            max_rows: s.max_rows,
            max_bytes: s.max_result_size.0,
        },
        calls_per_minute: s.calls_per_minute,
        max_concurrent: s.max_concurrent_queries,
        session_idle: s.session_timeout,
        allowed_origins: s.allowed_origins.clone(),
    }
}
