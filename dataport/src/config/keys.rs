//! Every configuration key, declared once: its path, type, default and doc line. The YAML
//! file, the environment variables and flags, `--help`, `dataport config` and the README's
//! reference table all come from these declarations.
//!
//! Names are derived from the path: a key of a section named in the environment by its own
//! name (`server.http_addr`) is `DATAPORT_HTTP_ADDR` and `--http-addr`; a key of a section
//! whose keys need their section to be understood (`log.format`) is `DATAPORT_LOG_FORMAT` and
//! `--log-format`. Secrets have no flag (a command line is visible to every local user);
//! maps and lists of records are read from the YAML file only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::JobSection;
use super::value::{Bytes, Form, LogFormat, MailSecurity, Memory, Secret, Setting, Yaml};

/// How a key's environment variable and flag are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming {
    /// `DATAPORT_<KEY>`: the key's name says what it is.
    Key,
    /// `DATAPORT_<SECTION>_<KEY>`.
    SectionKey,
    /// A top-level structure of the YAML file, with no environment variable or flag.
    File,
}

/// A key's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DefaultValue {
    /// Parsed like a value that was given.
    Value(&'static str),
    /// No value; the text says what happens then.
    Unset(&'static str),
}

const fn value(text: &'static str) -> DefaultValue {
    DefaultValue::Value(text)
}

const fn unset(meaning: &'static str) -> DefaultValue {
    DefaultValue::Unset(meaning)
}

/// One configuration key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    /// `section.name`, or `name` for a top-level structure.
    pub(crate) path: &'static str,
    pub(crate) naming: Naming,
    /// The doc comment, one line per source line.
    doc: &'static str,
    pub(crate) default: DefaultValue,
    pub(crate) form: Form,
    pub(crate) secret: bool,
    pub(crate) hint: &'static str,
}

impl Key {
    pub(crate) fn section(&self) -> Option<&'static str> {
        self.path.split_once('.').map(|(s, _)| s)
    }

    fn name(&self) -> &'static str {
        self.path.rsplit('.').next().unwrap_or(self.path)
    }

    /// The words of the environment variable and flag, or none.
    fn words(&self) -> Option<String> {
        if self.form == Form::Structured {
            return None;
        }
        match self.naming {
            Naming::Key => Some(self.name().to_string()),
            Naming::SectionKey => Some(self.path.replace('.', "_")),
            Naming::File => None,
        }
    }

    /// `DATAPORT_HTTP_ADDR`.
    pub(crate) fn env(&self) -> Option<String> {
        self.words()
            .map(|w| format!("DATAPORT_{}", w.to_ascii_uppercase()))
    }

    /// `http-addr` (without the dashes); secrets have none.
    pub(crate) fn flag(&self) -> Option<String> {
        if self.secret {
            return None;
        }
        self.words().map(|w| w.replace('_', "-"))
    }

    /// The doc comment as one line.
    pub(crate) fn doc(&self) -> String {
        self.doc
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The key with this path.
    pub(crate) fn named(path: &str) -> Option<&'static Key> {
        KEYS.iter().find(|k| k.path == path)
    }
}

/// `server.http_addr`, or `sources` for the top level.
macro_rules! key_path {
    (top, $section:ident, $name:ident) => {
        stringify!($name)
    };
    ($naming:ident, $section:ident, $name:ident) => {
        concat!(stringify!($section), ".", stringify!($name))
    };
}

macro_rules! naming {
    (key) => {
        Naming::Key
    };
    (section_key) => {
        Naming::SectionKey
    };
    (top) => {
        Naming::File
    };
}

macro_rules! key {
    ($naming:ident, $section:ident, $name:ident, $ty:ty, $default:expr, $($doc:literal)*) => {
        Key {
            path: key_path!($naming, $section, $name),
            naming: naming!($naming),
            doc: concat!($($doc, "\n"),*),
            default: $default,
            form: <$ty as Setting>::FORM,
            secret: <$ty as Setting>::SECRET,
            hint: <$ty as Setting>::HINT,
        }
    };
}

/// Declares the keys: generates [`KEYS`] and [`Settings`], whose fields are the keys' values.
macro_rules! settings {
    ($(
        $section:ident ($naming:ident) {
            $( $(#[doc = $doc:literal])* $name:ident: $ty:ty = $default:expr; )*
        }
    )*) => {
        /// Every key, in the order of the declarations.
        pub(crate) const KEYS: &[Key] = &[
            $($( key!($naming, $section, $name, $ty, $default, $($doc)*), )*)*
        ];

        /// Every key's value: a flag, else the environment, else the file, else the default.
        #[derive(Debug, Clone)]
        pub(crate) struct Settings {
            $($( pub(crate) $name: $ty, )*)*
        }

        impl Settings {
            /// Each key's value from the layers; `shown` gets each key's effective value
            /// and where it came from, in declaration order.
            pub(crate) fn resolve(
                layers: &super::layers::Layers<'_>,
                shown: &mut Vec<super::layers::Effective>,
            ) -> Result<Self, super::ConfigError> {
                // KEYS and these fields come from the same declarations, in the same order.
                let mut keys = KEYS.iter();
                let mut next = || {
                    keys.next().ok_or_else(|| {
                        super::value::invalid("config", "the keys and the settings differ")
                    })
                };
                Ok(Self {
                    $($( $name: layers.value::<$ty>(next()?, shown)?, )*)*
                })
            }
        }
    };
}

settings! {
    catalog (key) {
        /// data directory
        data_dir: PathBuf = value("./dataport-data");
        /// periodic rescan; `0s` disables
        refresh_interval: Duration = value("60s");
        /// refresh on file events
        watch: bool = value("true");
        /// tables held in memory as Arrow after each refresh: `schema.table`, `schema.*` or `*`;
        /// queries read the files until a table's copy is loaded, and a change of files loads
        /// it again. Tables with hive partitions stay on their files
        memory_tables: Vec<String> = unset("none");
        /// memory for those tables together (bytes like `4GiB`, or a share of RAM); a table
        /// that does not fit stays on its files. This memory is outside `engine.memory_limit`
        memory_budget: Memory = value("25%");
    }
    server (key) {
        /// the address users reach the server at, for the links in mail, e.g.
        /// `https://data.example.com` (behind a proxy)
        public_url: Option<String> = unset("`http://` + `server.http_addr`");
        /// HTTP address; port `0` picks a free port (see `run/addresses.json`)
        http_addr: SocketAddr = value("127.0.0.1:8080");
        /// Flight SQL address; port `0` picks a free port
        flight_addr: SocketAddr = value("127.0.0.1:50051");
        /// largest gRPC message Flight SQL sends; result batches are split below it
        /// (64KiB–256MiB; ADBC accepts 16MiB)
        flight_max_message_bytes: Bytes = value("4MiB");
        /// PEM certificate chain: Flight SQL over TLS (`grpc+tls://`), with `server.flight_tls_key`
        flight_tls_cert: Option<PathBuf> = unset("plain gRPC");
        /// PEM private key of `server.flight_tls_cert`
        flight_tls_key: Option<PathBuf> = unset("plain gRPC");
        /// addresses/CIDR ranges that may read `/metrics` without an admin token
        metrics_allow: Vec<ipnet::IpNet> = unset("none");
        /// reverse proxies whose `X-Forwarded-For` gives the client address (login rate limit)
        trusted_proxies: Vec<ipnet::IpNet> = unset("none");
        /// how long running requests may finish after SIGINT/SIGTERM
        shutdown_grace: Duration = value("30s");
        /// largest request body (413 beyond)
        max_body_size: Bytes = value("1MiB");
        /// largest notes or transcript upload (`POST /api/v1/sync/upload`)
        max_upload_size: Bytes = value("64MiB");
    }
    auth (key) {
        /// password of the `admin` account created on first start (8+ characters, upper,
        /// lower, digit); unset: generated, printed once, kept in `<data-dir>/auth/admin-password`
        admin_password: Option<Secret> = unset("generated");
        /// lifetime of session tokens (login, Flight handshake)
        token_ttl: Duration = value("30d");
        /// how long after expiry a session token can still be refreshed
        refresh_grace: Duration = value("7d");
        /// a browser session ends after this long without a request
        session_idle: Duration = value("12h");
        /// a browser session ends this long after its sign-in, whatever the activity
        session_lifetime: Duration = value("7d");
        /// `iss` of session tokens; others are refused
        issuer: String = value("dataport");
        /// HS256 key of session tokens (32+ characters); unset: generated once, kept in the
        /// state store
        signing_key: Option<Secret> = unset("generated");
        /// the organisation's email domains: an account whose email is of one of them gets the
        /// email's local part as its username (`ann`), any other the whole email with `@` and
        /// `.` as `_` (`bob_partner_io`)
        allowed_domains: Vec<String> = unset("none");
        /// groups of an invited account when the invitation names none, and of an
        /// organisation account at its first OpenID Connect sign-in
        default_groups: Vec<String> = value("dataread");
        /// OpenID Connect sign-in (Google, any standard issuer), in the login page's order:
        /// `[{name, issuer, client_id, client_secret_env, label, scopes, allowed_domains,
        /// require_hosted_domain}]` — [docs/access.md](docs/access.md)
        providers: Yaml<Vec<dataport_auth::oidc::ProviderConfig>> = unset("none: passwords only");
        /// outside emails (not of `auth.allowed_domains`) that may register with a password:
        /// asking for a password link creates the account
        password_emails: Vec<String> = unset("none");
        /// failed password attempts per account and per client address within 60 s before
        /// logins are refused (429 / RESOURCE_EXHAUSTED) for the rest of the minute
        max_failed_logins: u32 = value("5");
    }
    engine (key) {
        /// memory for all queries: bytes (`8GiB`) or share of RAM; sorts, aggregates and joins
        /// spill beyond it
        memory_limit: Memory = value("60%");
        /// spill files (cleared at start)
        spill_dir: Option<PathBuf> = unset("`<data-dir>/spill`");
        /// per query, planning and streaming included
        query_timeout: Duration = value("300s");
        /// row cap of JSON results (other formats stream uncapped)
        max_json_rows: usize = value("100000");
        /// parallelism per query
        target_partitions: Option<usize> = unset("cores");
        /// map of extra DataFusion settings, e.g. `datafusion.execution.batch_size: "16384"`;
        /// they override Dataport's own defaults (Parquet filter pushdown and page index on,
        /// `datafusion.optimizer.use_statistics_registry: "true"`, strings read as `Utf8`
        /// rather than views: `datafusion.execution.parquet.schema_force_view_types: "false"`)
        datafusion: BTreeMap<String, String> = unset("none");
    }
    mail (section_key) {
        /// SMTP server for set-up and reset links; unset, each message is written to the server
        /// log at `warn` instead
        smtp_host: Option<String> = unset("none: to the log");
        /// SMTP port
        smtp_port: Option<u16> = unset("587, 465 with `tls`, 25 with `none`");
        /// `starttls` (the server must offer it), `tls` (from the first byte) or `none`
        smtp_security: MailSecurity = value("starttls");
        /// SMTP login
        smtp_user: Option<String> = unset("none");
        /// SMTP password (environment or `${VAR}` in YAML)
        smtp_password: Option<Secret> = unset("none");
        /// PEM certificates of a private CA that signs the SMTP server's certificate (the public
        /// roots are trusted too)
        smtp_ca_file: Option<PathBuf> = unset("none");
        /// the sender of Dataport's mail
        from: String = value("Dataport <dataport@localhost>");
    }
    portal (section_key) {
        /// the instance's name in the portal's pages and titles
        name: String = value("Dataport");
        /// an image file (SVG, PNG, JPEG or WebP, at most 512 KiB) shown beside the name on
        /// every page, the sign-in page too; read at start
        logo: Option<PathBuf> = unset("none: the name alone");
    }
    notify (section_key) {
        /// interpreter of `*.py` notification scripts (a virtualenv's `bin/python` gives
        /// scripts its packages)
        python: PathBuf = value("python3");
        /// let scripts other than Python run: any file with a `#!` line
        allow_executables: bool = value("false");
        /// wall-clock limit of one script run
        timeout: Duration = value("60s");
        /// CPU time limit of one run
        cpu_time: Duration = value("60s");
        /// address-space limit of one run
        script_memory: Bytes = value("1GiB");
        /// processes a script's user may have (when the server runs as root, each account's
        /// scripts have their own user)
        max_processes: u32 = value("64");
        /// stdout and stderr of one run together; a script that writes more is stopped
        max_output: Bytes = value("1MiB");
        /// largest file a script may write
        max_file_size: Bytes = value("64MiB");
        /// largest script
        max_script_size: Bytes = value("256KiB");
        /// largest image a notification may carry
        max_image_size: Bytes = value("10MiB");
        /// `auto` (bubblewrap where the machine has `bwrap`), `required` or `off`
        sandbox: String = value("auto");
        /// folders shown read-only in the sandbox besides the system's (a virtualenv)
        sandbox_paths: Vec<String> = unset("none");
        /// where scripts run: `home/<account id>/` is each account's working folder
        work_dir: Option<PathBuf> = unset("`<data-dir>/notify/work`");
        /// as root, account N's scripts run as user and group id `uid_base + N`
        uid_base: u32 = value("2000000000");
        /// `DATAPORT_URL` given to scripts: how they reach this server
        server_url: Option<String> = unset("`http://` + `server.http_addr` (loopback)");
        /// runs kept per script
        keep_runs: usize = value("200");
        /// days a notification (and its image) is kept
        keep_days: u32 = value("90");
        /// the Telegram bot's token (from BotFather); unset: no Telegram
        telegram_token: Option<Secret> = unset("none: no Telegram");
        /// the Bot API's base URL
        telegram_api_url: String = value("https://api.telegram.org");
        /// how long one `getUpdates` long poll waits
        telegram_poll_timeout: Duration = value("30s");
        /// lifetime of a desktop app's token
        desktop_token_ttl: Duration = value("90d");
        /// the gateway's time for a connection's auth message
        gateway_auth_timeout: Duration = value("10s");
        /// the gateway's ping interval (three unanswered pings close a connection)
        gateway_ping_interval: Duration = value("30s");
        /// gateway connections per account
        gateway_max_connections: usize = value("5");
    }
    memory (section_key) {
        /// how items are extracted from analysts' notes: `offline` (headings and bullet points)
        /// or `llm` (an Anthropic-Messages-compatible API; [docs/memory.md](docs/memory.md))
        extractor: String = value("offline");
        /// the Messages API's base URL (`/v1/messages` is appended)
        llm_base_url: String = value("https://api.anthropic.com");
        /// the model that extracts items
        llm_model: String = value("claude-haiku-4-5");
        /// the environment variable that holds the API key (the key itself is never in the
        /// configuration)
        llm_api_key_env: String = value("ANTHROPIC_API_KEY");
        /// time limit of one request to the LLM
        llm_timeout: Duration = value("120s");
        /// the longest answer asked for
        llm_max_tokens: u32 = value("8192");
        /// largest notes file collected
        max_notes_size: Bytes = value("1MiB");
    }
    mcp (section_key) {
        /// serve the Model Context Protocol at `/mcp` for AI assistants
        /// ([docs/mcp.md](docs/mcp.md))
        enabled: bool = value("true");
        /// rows a query tool shows when the call does not say
        default_rows: usize = value("50");
        /// most rows a call may ask a query tool for
        max_rows: usize = value("500");
        /// most cell text in one tool answer
        max_result_size: Bytes = value("64KiB");
        /// tool calls one token may make per minute
        calls_per_minute: u32 = value("120");
        /// queries one token may run at once
        max_concurrent_queries: usize = value("2");
        /// an MCP session unused this long is forgotten
        session_timeout: Duration = value("1h");
        /// browser origins besides `server.public_url`'s that may call `/mcp`
        allowed_origins: Vec<String> = unset("none");
    }
    log (section_key) {
        /// `human` or `json`
        format: LogFormat = value("human");
        /// tracing filter, e.g. `info,dataport_engine=debug`; `RUST_LOG` wins when it is set
        level: String = value("info");
    }
    file (top) {
        /// where data comes from: `[{name, type: keboola|files|jira, …}]` —
        /// [docs/connectors.md](docs/connectors.md)
        sources: Yaml<Vec<dataport_connectors::SourceConfig>> = unset("none");
        /// schedules: `[{job: sync:NAME|sync:NAME:sla|sync:NAME:consistency|profile:catalog|refresh:catalog|notify:run|memory:collect|memory:sessions,
        /// every: 15m | cron: "0 * * * *", jitter: 1m}]`
        jobs: Yaml<Vec<JobSection>> = unset("none");
    }
}
