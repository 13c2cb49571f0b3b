//! The server's configuration: each key declared once ([`keys`]), its value taken from the
//! default < the YAML file < a `DATAPORT_*` environment variable < a flag ([`layers`]), parsed
//! by its type ([`value`]), then checked as a whole into a [`Config`]. `dataport config` shows
//! the effective values and where each came from ([`show`]).

mod keys;
mod layers;
mod show;
mod value;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use keys::Settings;
pub(crate) use layers::Effective;
pub(crate) use show::{ConfigArgs, render};
use value::invalid;
pub(crate) use value::{LogFormat, Secret, parse_duration};

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

/// One entry of `jobs:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobSection {
    /// `sync:<source>` or `refresh:catalog`.
    pub(crate) job: String,
    /// A fixed interval such as `15m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) every: Option<String>,
    /// A five-field cron expression (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cron: Option<String>,
    /// Up to this much random delay per start, default `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// A push source's SLA poll (every 5 minutes unless scheduled otherwise).
pub(crate) fn sla_job_name(source: &str) -> String {
    format!("sync:{source}:sla")
}

/// A push source's consistency check (every 6 hours unless scheduled otherwise).
pub(crate) fn consistency_job_name(source: &str) -> String {
    format!("sync:{source}:consistency")
}

/// The jobs a source brings: `sync:<name>` for a pulled source; the SLA poll and the
/// consistency check for a Jira source.
pub(crate) fn source_jobs(source: &dataport_connectors::SourceConfig) -> Vec<String> {
    match source.kind {
        dataport_connectors::SourceKind::Jira(_) => vec![
            sla_job_name(&source.name),
            consistency_job_name(&source.name),
        ],
        _ => vec![sync_job_name(&source.name)],
    }
}

/// The job that rescans the data dir.
pub(crate) const REFRESH_JOB: &str = "refresh:catalog";

/// The job that profiles changed tables.
pub(crate) const PROFILE_JOB: &str = "profile:catalog";

/// The job that runs notification scripts (every 15 minutes unless scheduled otherwise).
pub(crate) const NOTIFY_JOB: &str = "notify:run";

/// The corporate-memory collector (every 30 minutes unless scheduled otherwise).
pub(crate) const MEMORY_COLLECT_JOB: &str = "memory:collect";

/// The session-transcript collector (every 6 hours unless scheduled otherwise).
pub(crate) const MEMORY_SESSIONS_JOB: &str = "memory:sessions";

/// The server's own jobs, which `jobs:` may schedule.
const SERVER_JOBS: &[&str] = &[
    PROFILE_JOB,
    REFRESH_JOB,
    NOTIFY_JOB,
    MEMORY_COLLECT_JOB,
    MEMORY_SESSIONS_JOB,
];

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
        let known = SERVER_JOBS.contains(&j.job.as_str())
            || sources.iter().any(|s| source_jobs(s).contains(&j.job));
        if !known {
            let mut list: Vec<String> = sources.iter().flat_map(source_jobs).collect();
            list.extend(SERVER_JOBS.iter().map(|j| (*j).to_string()));
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

/// The config file and the flags of the command line (`--http-addr`, …, one per key that
/// has a flag, generated from the declarations).
#[derive(Debug, Default, Clone)]
pub(crate) struct Overrides {
    /// The YAML config file (`--config` / `DATAPORT_CONFIG`).
    pub(crate) config: Option<PathBuf>,
    /// Flag values by key path.
    pub(crate) flags: BTreeMap<String, String>,
}

impl Overrides {
    /// `self` with a key's value given as if by its flag.
    pub(crate) fn with(mut self, path: &str, value: impl Into<String>) -> Self {
        self.flags.insert(path.to_string(), value.into());
        self
    }
}

impl clap::FromArgMatches for Overrides {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut o = Overrides {
            config: m.get_one::<PathBuf>("config").cloned(),
            flags: BTreeMap::new(),
        };
        for key in keys::KEYS.iter().filter(|k| k.flag().is_some()) {
            if let Some(v) = m.get_one::<String>(key.path) {
                o.flags.insert(key.path.to_string(), v.clone());
            }
        }
        Ok(o)
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for Overrides {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let config = clap::Arg::new("config")
            .long("config")
            .env("DATAPORT_CONFIG")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("YAML config file");
        keys::KEYS.iter().fold(cmd.arg(config), |cmd, key| {
            let Some(flag) = key.flag() else { return cmd };
            cmd.arg(
                clap::Arg::new(key.path)
                    .long(flag)
                    .value_name(key.hint)
                    .help(show::help_line(key)),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The resolved, validated configuration: every key's value, and what follows from them.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The YAML file the configuration came from (absolute), if any.
    pub(crate) config_file: Option<PathBuf>,
    /// Every key's value.
    pub(crate) settings: Settings,
    /// `engine.spill_dir`, else `<data-dir>/spill`.
    pub(crate) spill_dir: PathBuf,
    /// `engine.target_partitions`, else the number of cores.
    pub(crate) target_partitions: usize,
    /// `server.flight_tls_cert` and `_key`: both or neither.
    pub(crate) flight_tls: Option<(PathBuf, PathBuf)>,
    /// `catalog.memory_tables` and the budget they share.
    pub(crate) memory_tables: dataport_catalog::MemoryOptions,
    /// `jobs`, checked against `sources`.
    pub(crate) jobs: Vec<JobSchedule>,
    /// `server.public_url` without a trailing `/` (see [`Config::public_url_or`]).
    pub(crate) public_url: Option<String>,
    /// Each key's effective value and its source, for `dataport config`.
    pub(crate) effective: Vec<Effective>,
    /// `DATAPORT_*` variables that look like a mistyped key's, to be logged.
    pub(crate) warnings: Vec<String>,
}

impl Config {
    /// Resolve against the process's environment.
    pub(crate) fn load(o: &Overrides) -> Result<Self, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let mut config = Self::resolve(o, &env)?;
        config.warnings = layers::mistyped_env(std::env::vars().map(|(k, _)| k))
            .into_iter()
            .map(|(given, meant)| {
                format!("environment variable {given} is not a setting; did you mean {meant}?")
            })
            .collect();
        Ok(config)
    }

    /// Resolve every key (default < file < `env` < flags), then check them together.
    pub(crate) fn resolve(
        o: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let config_file = o.config.as_deref().map(layers::config_path).transpose()?;
        let file = match &config_file {
            Some(path) => layers::read_file(path, env)?,
            None => BTreeMap::new(),
        };
        let mut effective = Vec::new();
        let layers = layers::Layers {
            file,
            env,
            flags: &o.flags,
        };
        let s = Settings::resolve(&layers, &mut effective)?;
        check(&s)?;
        let memory_tables = dataport_catalog::MemoryOptions {
            budget: if s.memory_tables.is_empty() {
                0
            } else {
                s.memory_budget.bytes as u64
            },
            tables: s.memory_tables.clone(),
        };
        memory_tables
            .validate()
            .map_err(|m| invalid("catalog.memory_tables", m))?;
        let flight_tls = match (&s.flight_tls_cert, &s.flight_tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
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
        let spill_dir = s
            .spill_dir
            .clone()
            .unwrap_or_else(|| s.data_dir.join("spill"));
        let target_partitions = s.target_partitions.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        });
        // What an unset key came to, for `dataport config`.
        for e in effective
            .iter_mut()
            .filter(|e| e.source == layers::Source::Default)
        {
            match e.key.path {
                "engine.spill_dir" => e.value = spill_dir.display().to_string(),
                "engine.target_partitions" => e.value = format!("{target_partitions} (cores)"),
                _ => {}
            }
        }
        let public_url = s
            .public_url
            .as_ref()
            .map(|url| url.trim().trim_end_matches('/').to_string());
        Ok(Self {
            config_file,
            public_url,
            spill_dir,
            target_partitions,
            flight_tls,
            memory_tables,
            jobs: parse_jobs(&s.sources.0, &s.jobs.0)?,
            settings: s,
            effective,
            warnings: Vec::new(),
        })
    }
}

impl Config {
    /// The address in links: `server.public_url`, else the HTTP listener `http` (with
    /// 127.0.0.1 for an unspecified address such as 0.0.0.0, which a browser cannot open).
    pub(crate) fn public_url_or(&self, http: std::net::SocketAddr) -> String {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let mut http = http;
        if http.ip().is_unspecified() {
            http.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{http}")
    }
}

/// The rules a key's type does not say.
fn check(s: &Settings) -> Result<(), ConfigError> {
    let rule = |ok: bool, key: &str, message: &str| {
        if ok {
            Ok(())
        } else {
            Err(invalid(key, message))
        }
    };
    rule(
        !s.query_timeout.is_zero(),
        "engine.query_timeout",
        "must be greater than zero",
    )?;
    rule(
        s.max_json_rows > 0,
        "engine.max_json_rows",
        "must be at least 1",
    )?;
    rule(
        s.target_partitions != Some(0),
        "engine.target_partitions",
        "must be at least 1",
    )?;
    rule(
        dataport_notify::SandboxMode::parse(&s.sandbox).is_some(),
        "notify.sandbox",
        "is auto, required or off",
    )?;
    rule(
        !s.timeout.is_zero() && !s.cpu_time.is_zero(),
        "notify.timeout",
        "notify.timeout and notify.cpu_time must be greater than zero",
    )?;
    rule(
        matches!(s.extractor.as_str(), "offline" | "llm"),
        "memory.extractor",
        "is offline or llm",
    )?;
    rule(
        !s.llm_timeout.is_zero() && s.llm_max_tokens > 0,
        "memory.llm_timeout",
        "memory.llm_timeout and memory.llm_max_tokens must be greater than zero",
    )?;
    rule(
        s.default_rows >= 1 && s.default_rows <= s.max_rows,
        "mcp.default_rows",
        "must be at least 1 and at most mcp.max_rows",
    )?;
    rule(
        s.calls_per_minute > 0 && s.max_concurrent_queries > 0 && s.max_result_size.0 >= 1024,
        "mcp.calls_per_minute",
        "mcp.calls_per_minute and mcp.max_concurrent_queries must be at least 1, mcp.max_result_size at least 1KiB",
    )?;
    rule(
        s.gateway_max_connections > 0 && !s.gateway_ping_interval.is_zero(),
        "notify.gateway_max_connections",
        "the gateway needs at least one connection per account and a ping interval",
    )?;
    if let Some(key) = s.datafusion.keys().find(|k| !k.starts_with("datafusion.")) {
        return Err(invalid(
            &format!("engine.datafusion.{key}"),
            "DataFusion settings start with 'datafusion.' (e.g. datafusion.execution.batch_size)",
        ));
    }
    rule(
        (64 * 1024..=256 << 20).contains(&s.flight_max_message_bytes.0),
        "server.flight_max_message_bytes",
        "must be between 64KiB and 256MiB (clients such as ADBC accept 16MiB by default)",
    )?;
    if let Some(Secret(password)) = &s.admin_password {
        dataport_auth::password::check_password_rules(password)
            .map_err(|e| invalid("auth.admin_password", e.to_string()))?;
    }
    rule(
        !s.token_ttl.is_zero(),
        "auth.token_ttl",
        "must be greater than zero",
    )?;
    rule(
        !s.issuer.trim().is_empty(),
        "auth.issuer",
        "must not be empty",
    )?;
    rule(
        s.signing_key.as_ref().is_none_or(|Secret(k)| k.len() >= 32),
        "auth.signing_key",
        "must have at least 32 characters (for example: openssl rand -hex 32)",
    )?;
    if let Some(url) = &s.public_url {
        let url = url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or_default();
        rule(
            !rest.is_empty() && !rest.contains(char::is_whitespace) && !rest.contains(['?', '#']),
            "server.public_url",
            "must be an address like https://data.example.com (http or https, no query)",
        )?;
    }
    dataport_auth::oidc::check_providers(&s.providers.0)
        .map_err(|(i, message)| invalid(&format!("auth.providers[{i}]"), message))?;
    rule(
        s.max_failed_logins > 0,
        "auth.max_failed_logins",
        "must be at least 1",
    )
}

#[cfg(test)]
mod tests;
