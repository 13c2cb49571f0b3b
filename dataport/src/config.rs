//! `dataport serve` configuration: defaults < YAML file < `DATAPORT_*` env < command line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem; the message names the key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "config file {path}: ${{{var}}} is referenced but the environment variable {var} is not set"
    )]
    MissingEnv { path: PathBuf, var: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

/// `path` made absolute against the working directory, once, at start: every later use (object
/// store locations, links, child processes, the log) sees one unambiguous path. Nothing is
/// resolved through symbolic links, and the path need not exist yet.
fn absolute(key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    std::path::absolute(path).map_err(|e| {
        invalid(
            key,
            format!(
                "cannot resolve {} against the working directory: {e}",
                path.display()
            ),
        )
    })
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The YAML file. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileConfig {
    pub(crate) server: ServerSection,
    pub(crate) engine: EngineSection,
    pub(crate) catalog: CatalogSection,
    pub(crate) auth: AuthSection,
    pub(crate) log: LogSection,
    /// Where data comes from: `[{name, type: keboola, …}]` (see docs/connectors.md).
    pub(crate) sources: Vec<dataport_connectors::SourceConfig>,
    /// Schedules: `[{job: sync:NAME | profile:catalog | refresh:catalog, every: 15m | cron: "*/15 * * * *", jitter: 1m}]`.
    pub(crate) jobs: Vec<JobSection>,
}

/// One entry of `jobs:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobSection {
    /// `sync:<source>` or `refresh:catalog`.
    pub(crate) job: String,
    /// A fixed interval such as `15m`.
    pub(crate) every: Option<String>,
    /// A five-field cron expression (UTC).
    pub(crate) cron: Option<String>,
    /// Up to this much random delay per start, default `0s`.
    pub(crate) jitter: Option<String>,
}

/// A validated schedule of a job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobSchedule {
    pub(crate) job: String,
    pub(crate) schedule: dataport_engine::jobs::Schedule,
    pub(crate) jitter: Duration,
}

/// The job that syncs a source.
pub(crate) fn sync_job_name(source: &str) -> String {
    format!("sync:{source}")
}

/// The job that rescans the data dir.
pub(crate) const REFRESH_JOB: &str = "refresh:catalog";

/// The job that profiles changed tables.
pub(crate) const PROFILE_JOB: &str = "profile:catalog";

fn parse_jobs(
    sources: &[dataport_connectors::SourceConfig],
    jobs: &[JobSection],
) -> Result<Vec<JobSchedule>, ConfigError> {
    let mut names = std::collections::HashSet::new();
    for s in sources {
        if !names.insert(s.name.clone()) {
            return Err(invalid(
                "sources",
                format!("source '{}' is defined twice", s.name),
            ));
        }
    }
    let mut out: Vec<JobSchedule> = Vec::new();
    for j in jobs {
        let known = j.job == REFRESH_JOB
            || j.job == PROFILE_JOB
            || j.job
                .strip_prefix("sync:")
                .is_some_and(|s| names.contains(s));
        if !known {
            let mut list: Vec<String> = sources.iter().map(|s| sync_job_name(&s.name)).collect();
            list.push(PROFILE_JOB.into());
            list.push(REFRESH_JOB.into());
            return Err(invalid(
                "jobs",
                format!(
                    "there is no job '{}'; known jobs: {}",
                    j.job,
                    list.join(", ")
                ),
            ));
        }
        if out.iter().any(|o| o.job == j.job) {
            return Err(invalid(
                "jobs",
                format!("job '{}' is scheduled twice", j.job),
            ));
        }
        let key = format!("jobs[{}]", j.job);
        let schedule = match (&j.every, &j.cron) {
            (Some(every), None) => {
                let d = parse_duration(&format!("{key}.every"), every)?;
                if d < Duration::from_secs(1) {
                    return Err(invalid(&format!("{key}.every"), "must be at least 1s"));
                }
                dataport_engine::jobs::Schedule::Every(d)
            }
            (None, Some(cron)) => dataport_engine::jobs::Schedule::Cron(
                dataport_engine::jobs::Cron::parse(cron)
                    .map_err(|e| invalid(&format!("{key}.cron"), e.to_string()))?,
            ),
            _ => {
                return Err(invalid(
                    &key,
                    "give exactly one of every (e.g. 15m) or cron (e.g. \"*/15 * * * *\")",
                ));
            }
        };
        let jitter = parse_duration(
            &format!("{key}.jitter"),
            j.jitter.as_deref().unwrap_or("0s"),
        )?;
        out.push(JobSchedule {
            job: j.job.clone(),
            schedule,
            jitter,
        });
    }
    Ok(out)
}

/// `server:` — listeners and HTTP limits.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ServerSection {
    /// HTTP listen address (`DATAPORT_HTTP_ADDR`), default `127.0.0.1:8080`; port 0 picks one.
    pub(crate) http_addr: Option<String>,
    /// Flight SQL listen address (`DATAPORT_FLIGHT_ADDR`), default `127.0.0.1:50051`.
    pub(crate) flight_addr: Option<String>,
    /// How long running requests may continue after SIGINT/SIGTERM, default `30s`.
    pub(crate) shutdown_grace: Option<String>,
    /// Largest HTTP request body, default `1MiB`.
    pub(crate) max_body_size: Option<String>,
    /// Largest upload of notes or a transcript (`POST /api/v1/sync/upload`), default `64MiB`.
    pub(crate) max_upload_size: Option<String>,
    /// Largest gRPC message the Flight SQL server sends (`DATAPORT_FLIGHT_MAX_MESSAGE_BYTES`),
    /// default `4MiB`; result batches are split to stay under it.
    pub(crate) flight_max_message_bytes: Option<String>,
    /// PEM certificate chain for Flight SQL over TLS (`DATAPORT_FLIGHT_TLS_CERT`).
    pub(crate) flight_tls_cert: Option<PathBuf>,
    /// PEM private key for Flight SQL over TLS (`DATAPORT_FLIGHT_TLS_KEY`).
    pub(crate) flight_tls_key: Option<PathBuf>,
    /// Addresses or CIDR ranges that may read `/metrics` without a token (Prometheus).
    pub(crate) metrics_allow: Vec<String>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<String>,
}

/// `auth:` — credentials.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuthSection {
    /// Password of the `admin` account created on first start (`DATAPORT_ADMIN_PASSWORD`; in
    /// YAML use `${VAR}`). Unset: generated, printed once and kept in
    /// `<data-dir>/auth/admin-password`.
    pub(crate) admin_password: Option<String>,
    /// How long a session token from a login stays valid, default `30d`.
    pub(crate) token_ttl: Option<String>,
    /// How long after expiry a session token may still be refreshed, default `7d`.
    pub(crate) refresh_grace: Option<String>,
    /// `iss` of session tokens, default `dataport`.
    pub(crate) issuer: Option<String>,
    /// HS256 key of session tokens, at least 32 characters (`DATAPORT_SIGNING_KEY`; in YAML
    /// use `${VAR}`). Unset: generated once and kept in the state store.
    pub(crate) signing_key: Option<String>,
    /// Failed password attempts per account and per client address within a minute before
    /// logins are refused for the rest of it (`DATAPORT_MAX_FAILED_LOGINS`), default 5.
    pub(crate) max_failed_logins: Option<u32>,
}

/// `engine:` — query execution.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EngineSection {
    /// Memory for all queries (`DATAPORT_MEMORY_LIMIT`): bytes (`8GiB`, `512MB`) or a share of
    /// physical memory (`60%`, the default).
    pub(crate) memory_limit: Option<String>,
    /// Spill directory (`DATAPORT_SPILL_DIR`), default `<data-dir>/spill`.
    pub(crate) spill_dir: Option<PathBuf>,
    /// Query time limit (`DATAPORT_QUERY_TIMEOUT`), default `300s`.
    pub(crate) query_timeout: Option<String>,
    /// Row cap of JSON results (`DATAPORT_MAX_JSON_ROWS`), default 100000.
    pub(crate) max_json_rows: Option<usize>,
    /// Parallelism per query, default the number of cores.
    pub(crate) target_partitions: Option<usize>,
    /// Extra DataFusion settings, e.g. `datafusion.execution.batch_size: "16384"`.
    pub(crate) datafusion: BTreeMap<String, String>,
}

/// `catalog:` — the data dir and refresh.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CatalogSection {
    /// Data directory (`DATAPORT_DATA_DIR`), default `./dataport-data`.
    pub(crate) data_dir: Option<PathBuf>,
    /// Periodic rescan (`DATAPORT_REFRESH_INTERVAL`), default `60s`; `0s` disables it.
    pub(crate) refresh_interval: Option<String>,
    /// Refresh on file events, default true.
    pub(crate) watch: Option<bool>,
    /// Tables held in memory as Arrow (`schema.table`, `schema.*`, `*`), default none
    /// (`DATAPORT_MEMORY_TABLES`, comma separated).
    pub(crate) memory_tables: Option<Vec<String>>,
    /// Memory for those tables together: bytes or a share of RAM, default `25%`
    /// (`DATAPORT_MEMORY_BUDGET`).
    pub(crate) memory_budget: Option<String>,
}

/// `log:` — logging.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSection {
    /// `human` (default) or `json` (`DATAPORT_LOG_FORMAT`).
    pub(crate) format: Option<String>,
    /// A tracing filter, default `info` (`RUST_LOG` wins when set).
    pub(crate) level: Option<String>,
}

/// Values from the environment and command line (clap merges the two, CLI first).
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct Overrides {
    /// YAML config file.
    #[arg(long, env = "DATAPORT_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Data directory holding parquet/, docs/, run/ [default: ./dataport-data]
    #[arg(long, env = "DATAPORT_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// HTTP listen address; port 0 picks a free port [default: 127.0.0.1:8080]
    #[arg(long, env = "DATAPORT_HTTP_ADDR")]
    pub(crate) http_addr: Option<String>,
    /// Flight SQL listen address [default: 127.0.0.1:50051]
    #[arg(long, env = "DATAPORT_FLIGHT_ADDR")]
    pub(crate) flight_addr: Option<String>,
    /// Memory for all queries: bytes (8GiB, 512MB) or share of RAM (60%) [default: 60%]
    #[arg(long, env = "DATAPORT_MEMORY_LIMIT")]
    pub(crate) memory_limit: Option<String>,
    /// Where large sorts, aggregates and joins spill [default: <data-dir>/spill]
    #[arg(long, env = "DATAPORT_SPILL_DIR")]
    pub(crate) spill_dir: Option<PathBuf>,
    /// Query time limit, e.g. 30s, 5m [default: 300s]
    #[arg(long, env = "DATAPORT_QUERY_TIMEOUT")]
    pub(crate) query_timeout: Option<String>,
    /// Row cap of JSON results (streaming formats are uncapped) [default: 100000]
    #[arg(long, env = "DATAPORT_MAX_JSON_ROWS")]
    pub(crate) max_json_rows: Option<usize>,
    /// Periodic catalog rescan; 0s disables it [default: 60s]
    #[arg(long, env = "DATAPORT_REFRESH_INTERVAL")]
    pub(crate) refresh_interval: Option<String>,
    /// Tables to hold in memory as Arrow, comma separated: schema.table, schema.* or * [default: none]
    #[arg(long, env = "DATAPORT_MEMORY_TABLES", value_delimiter = ',')]
    pub(crate) memory_tables: Option<Vec<String>>,
    /// Memory for the in-memory tables together: bytes (4GiB) or share of RAM (25%) [default: 25%]
    #[arg(long, env = "DATAPORT_MEMORY_BUDGET")]
    pub(crate) memory_budget: Option<String>,
    /// Log format: human or json [default: human]
    #[arg(long, env = "DATAPORT_LOG_FORMAT")]
    pub(crate) log_format: Option<String>,
    /// Largest gRPC message Flight SQL sends, e.g. 4MiB [default: 4MiB]
    #[arg(long, env = "DATAPORT_FLIGHT_MAX_MESSAGE_BYTES")]
    pub(crate) flight_max_message_bytes: Option<String>,
    /// PEM certificate chain: serve Flight SQL over TLS (with --flight-tls-key)
    #[arg(long, env = "DATAPORT_FLIGHT_TLS_CERT")]
    pub(crate) flight_tls_cert: Option<PathBuf>,
    /// PEM private key for --flight-tls-cert
    #[arg(long, env = "DATAPORT_FLIGHT_TLS_KEY")]
    pub(crate) flight_tls_key: Option<PathBuf>,
    /// Password of the bootstrap admin account (environment only, never a flag)
    #[arg(skip = std::env::var("DATAPORT_ADMIN_PASSWORD").ok())]
    pub(crate) admin_password: Option<String>,
    /// Failed logins per account and per address within a minute before logins are refused
    #[arg(long, env = "DATAPORT_MAX_FAILED_LOGINS")]
    pub(crate) max_failed_logins: Option<u32>,
    /// Key that signs session tokens (environment only, never a flag)
    #[arg(skip = std::env::var("DATAPORT_SIGNING_KEY").ok())]
    pub(crate) signing_key: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

/// The resolved, validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The YAML file the configuration came from (absolute), if any.
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) data_dir: PathBuf,
    pub(crate) http_addr: SocketAddr,
    pub(crate) flight_addr: SocketAddr,
    pub(crate) shutdown_grace: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_upload_bytes: usize,
    pub(crate) memory_limit: usize,
    pub(crate) spill_dir: PathBuf,
    pub(crate) query_timeout: Duration,
    pub(crate) max_json_rows: usize,
    pub(crate) target_partitions: usize,
    pub(crate) datafusion: Vec<(String, String)>,
    pub(crate) refresh_interval: Duration,
    pub(crate) watch: bool,
    pub(crate) memory_tables: dataport_catalog::MemoryOptions,
    pub(crate) log_format: LogFormat,
    pub(crate) log_level: String,
    pub(crate) flight_max_message_bytes: usize,
    /// Certificate and key, both or neither.
    pub(crate) flight_tls: Option<(PathBuf, PathBuf)>,
    pub(crate) admin_password: Option<Secret>,
    pub(crate) token_ttl: Duration,
    pub(crate) refresh_grace: Duration,
    pub(crate) issuer: String,
    pub(crate) signing_key: Option<Secret>,
    pub(crate) max_failed_logins: u32,
    pub(crate) metrics_allow: Vec<ipnet::IpNet>,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    pub(crate) sources: Vec<dataport_connectors::SourceConfig>,
    pub(crate) jobs: Vec<JobSchedule>,
}

/// A secret value whose `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Config {
    /// Resolve: defaults, then the YAML file (if any), then env/CLI overrides; validate all.
    pub(crate) fn load(o: &Overrides) -> Result<Self, ConfigError> {
        let config_file = o
            .config
            .as_deref()
            .map(|path| absolute("--config", path))
            .transpose()?;
        let file = match &config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = absolute(
            "catalog.data_dir",
            &o.data_dir
                .clone()
                .or(file.catalog.data_dir)
                .unwrap_or_else(|| PathBuf::from("./dataport-data")),
        )?;
        let http_addr = parse_addr(
            "server.http_addr",
            o.http_addr
                .as_deref()
                .or(file.server.http_addr.as_deref())
                .unwrap_or("127.0.0.1:8080"),
        )?;
        let flight_addr = parse_addr(
            "server.flight_addr",
            o.flight_addr
                .as_deref()
                .or(file.server.flight_addr.as_deref())
                .unwrap_or("127.0.0.1:50051"),
        )?;
        let memory = o
            .memory_limit
            .as_deref()
            .or(file.engine.memory_limit.as_deref())
            .unwrap_or("60%");
        let memory_limit = parse_memory("engine.memory_limit", memory)?;
        let query_timeout = parse_duration(
            "engine.query_timeout",
            o.query_timeout
                .as_deref()
                .or(file.engine.query_timeout.as_deref())
                .unwrap_or("300s"),
        )?;
        if query_timeout.is_zero() {
            return Err(invalid("engine.query_timeout", "must be greater than zero"));
        }
        let max_json_rows = o
            .max_json_rows
            .or(file.engine.max_json_rows)
            .unwrap_or(100_000);
        if max_json_rows == 0 {
            return Err(invalid("engine.max_json_rows", "must be at least 1"));
        }
        let target_partitions = file.engine.target_partitions.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        if target_partitions == 0 {
            return Err(invalid("engine.target_partitions", "must be at least 1"));
        }
        for key in file.engine.datafusion.keys() {
            if !key.starts_with("datafusion.") {
                return Err(invalid(
                    &format!("engine.datafusion.{key}"),
                    "DataFusion settings start with 'datafusion.' (e.g. datafusion.execution.batch_size)",
                ));
            }
        }
        let refresh_interval = parse_duration(
            "catalog.refresh_interval",
            o.refresh_interval
                .as_deref()
                .or(file.catalog.refresh_interval.as_deref())
                .unwrap_or("60s"),
        )?;
        let tables: Vec<String> = o
            .memory_tables
            .clone()
            .or(file.catalog.memory_tables.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        let memory_tables = dataport_catalog::MemoryOptions {
            budget: if tables.is_empty() {
                0
            } else {
                parse_memory(
                    "catalog.memory_budget",
                    o.memory_budget
                        .as_deref()
                        .or(file.catalog.memory_budget.as_deref())
                        .unwrap_or("25%"),
                )? as u64
            },
            tables,
        };
        memory_tables
            .validate()
            .map_err(|m| invalid("catalog.memory_tables", m))?;
        let log_format = match o
            .log_format
            .as_deref()
            .or(file.log.format.as_deref())
            .unwrap_or("human")
        {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("'{other}' is not one of human, json"),
                ));
            }
        };
        let shutdown_grace = parse_duration(
            "server.shutdown_grace",
            file.server.shutdown_grace.as_deref().unwrap_or("30s"),
        )?;
        let max_body_bytes = parse_size(
            "server.max_body_size",
            file.server.max_body_size.as_deref().unwrap_or("1MiB"),
        )?;
        let max_upload_bytes = parse_size(
            "server.max_upload_size",
            file.server.max_upload_size.as_deref().unwrap_or("64MiB"),
        )?;
        let flight_max_message_bytes = parse_size(
            "server.flight_max_message_bytes",
            o.flight_max_message_bytes
                .as_deref()
                .or(file.server.flight_max_message_bytes.as_deref())
                .unwrap_or("4MiB"),
        )?;
        if !(64 * 1024..=256 << 20).contains(&flight_max_message_bytes) {
            return Err(invalid(
                "server.flight_max_message_bytes",
                "must be between 64KiB and 256MiB (clients such as ADBC accept 16MiB by default)",
            ));
        }
        let cert = o.flight_tls_cert.clone().or(file.server.flight_tls_cert);
        let key = o.flight_tls_key.clone().or(file.server.flight_tls_key);
        let flight_tls = match (cert, key) {
            (Some(c), Some(k)) => Some((
                absolute("server.flight_tls_cert", &c)?,
                absolute("server.flight_tls_key", &k)?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "server.flight_tls_key",
                    "a TLS certificate was given without its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "server.flight_tls_cert",
                    "a TLS private key was given without its certificate",
                ));
            }
        };
        let admin_password = o.admin_password.clone().or(file.auth.admin_password);
        if let Some(Err(e)) = admin_password
            .as_deref()
            .map(dataport_auth::password::check_password_rules)
        {
            return Err(invalid("auth.admin_password", e.to_string()));
        }
        let token_ttl = parse_duration(
            "auth.token_ttl",
            file.auth.token_ttl.as_deref().unwrap_or("30d"),
        )?;
        if token_ttl.is_zero() {
            return Err(invalid("auth.token_ttl", "must be greater than zero"));
        }
        let refresh_grace = parse_duration(
            "auth.refresh_grace",
            file.auth.refresh_grace.as_deref().unwrap_or("7d"),
        )?;
        let issuer = file.auth.issuer.unwrap_or_else(|| "dataport".into());
        if issuer.trim().is_empty() {
            return Err(invalid("auth.issuer", "must not be empty"));
        }
        let signing_key = o.signing_key.clone().or(file.auth.signing_key);
        if signing_key.as_deref().is_some_and(|k| k.len() < 32) {
            return Err(invalid(
                "auth.signing_key",
                "must have at least 32 characters (for example: openssl rand -hex 32)",
            ));
        }
        let max_failed_logins = o
            .max_failed_logins
            .or(file.auth.max_failed_logins)
            .unwrap_or(5);
        if max_failed_logins == 0 {
            return Err(invalid("auth.max_failed_logins", "must be at least 1"));
        }
        let metrics_allow = parse_nets("server.metrics_allow", &file.server.metrics_allow)?;
        let trusted_proxies = parse_nets("server.trusted_proxies", &file.server.trusted_proxies)?;
        let jobs = parse_jobs(&file.sources, &file.jobs)?;
        let spill_dir = match o.spill_dir.clone().or(file.engine.spill_dir) {
            Some(dir) => absolute("engine.spill_dir", &dir)?,
            None => data_dir.join("spill"),
        };
        Ok(Self {
            config_file,
            data_dir,
            http_addr,
            flight_addr,
            shutdown_grace,
            max_body_bytes,
            max_upload_bytes,
            memory_limit,
            spill_dir,
            query_timeout,
            max_json_rows,
            target_partitions,
            datafusion: file.engine.datafusion.into_iter().collect(),
            refresh_interval,
            watch: file.catalog.watch.unwrap_or(true),
            memory_tables,
            log_format,
            log_level: file.log.level.unwrap_or_else(|| "info".into()),
            flight_max_message_bytes,
            flight_tls,
            admin_password: admin_password.map(Secret),
            token_ttl,
            refresh_grace,
            issuer,
            signing_key: signing_key.map(Secret),
            max_failed_logins,
            metrics_allow,
            trusted_proxies,
            sources: file.sources,
            jobs,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = substitute_env(&text, |v| std::env::var(v).ok()).map_err(|var| {
        ConfigError::MissingEnv {
            path: path.to_path_buf(),
            var,
        }
    })?;
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    yaml_serde::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Replace `${NAME}` with the variable's value; the error is the first missing name.
pub(crate) fn substitute_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Addresses (`10.0.0.5`) or CIDR ranges (`10.0.0.0/8`).
fn parse_nets(key: &str, values: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    values
        .iter()
        .map(|v| {
            v.parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| invalid(key, format!("'{v}' is not an address or CIDR range")))
        })
        .collect()
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    let value = value.trim();
    let candidate = value
        .strip_prefix("localhost:")
        .map(|p| format!("127.0.0.1:{p}"));
    candidate.as_deref().unwrap_or(value).parse().map_err(|_| {
        invalid(
            key,
            format!("'{value}' is not an address like 127.0.0.1:8080"),
        )
    })
}

/// `250ms`, `30s`, `5m`, `1h`, or plain seconds.
pub(crate) fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let v = value.trim();
    let (num, unit) = split_unit(v);
    let n: f64 = num.parse().map_err(|_| {
        invalid(
            key,
            format!("'{value}' is not a duration like 30s, 5m or 250ms"),
        )
    })?;
    let secs = match unit.to_ascii_lowercase().as_str() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => {
            return Err(invalid(
                key,
                format!("'{value}' has an unknown unit (use ms, s, m, h or d)"),
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(invalid(key, format!("'{value}' must be zero or positive")));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `1024`, `512KiB`, `64MB`, `8GiB`, `1TB`.
pub(crate) fn parse_size(key: &str, value: &str) -> Result<usize, ConfigError> {
    let v = value.trim();
    let (num, unit) = split_unit(v);
    let n: f64 = num
        .parse()
        .map_err(|_| invalid(key, format!("'{value}' is not a size like 512MiB or 8GiB")))?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0f64.powi(4),
        _ => {
            return Err(invalid(
                key,
                format!("'{value}' has an unknown unit (use B, KiB, MiB, GiB, KB, MB, GB)"),
            ));
        }
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(invalid(key, format!("'{value}' must be at least 1 byte")));
    }
    Ok(bytes as usize)
}

fn parse_memory(key: &str, value: &str) -> Result<usize, ConfigError> {
    if let Some(p) = value.trim().strip_suffix('%') {
        let pct: f64 = p
            .trim()
            .parse()
            .map_err(|_| invalid(key, format!("'{value}' is not a percentage like 60%")))?;
        if !(1.0..=95.0).contains(&pct) {
            return Err(invalid(
                key,
                format!("'{value}' must be between 1% and 95% of memory"),
            ));
        }
        let total = physical_memory().unwrap_or(8 << 30);
        return Ok((total as f64 * pct / 100.0) as usize);
    }
    parse_size(key, value)
}

fn split_unit(v: &str) -> (&str, &str) {
    let idx = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    (v[..idx].trim(), v[idx..].trim())
}

/// Total physical memory from `/proc/meminfo` (Linux).
fn physical_memory() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests;
