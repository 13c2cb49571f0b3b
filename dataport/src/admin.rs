//! `dataport user|grant|revoke|grants|token|audit`: account administration against a data
//! dir's state store. Safe while the server runs: the store is SQLite, and the server picks
//! changes up on its next request.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use dataport_auth::{
    AccountState, Accounts, Actor, AuditQuery, DATA_OPS, DATA_PRIVATE, DATAREAD, StateStore,
    TargetTable, generate_password,
};

use crate::config::{Config, Overrides, Secret, parse_duration};
use dataport_laptop::term::{out, time};

/// Where the state store is: the data dir (flag, `DATAPORT_DATA_DIR`, or the config file).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StoreArgs {
    /// YAML config file (for its data dir)
    #[arg(long, env = "DATAPORT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory [env: DATAPORT_DATA_DIR] [default: ./dataport-data]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn accounts(&self) -> anyhow::Result<Accounts> {
        let config = self.config()?;
        let store = StateStore::open(&config.settings.data_dir).with_context(|| {
            format!(
                "cannot open the state store of {}",
                config.settings.data_dir.display()
            )
        })?;
        Ok(crate::wiring::accounts(&config, &Arc::new(store)))
    }

    pub(crate) fn config(&self) -> anyhow::Result<Config> {
        let mut overrides = Overrides {
            config: self.config.clone(),
            ..Overrides::default()
        };
        if let Some(dir) = &self.data_dir {
            overrides = overrides.with("catalog.data_dir", dir.to_string_lossy());
        }
        Config::load(&overrides).context("invalid configuration")
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user. Without --password-stdin a password is generated and printed.
    Add {
        name: String,
        /// Comma-separated groups, e.g. dataread,data-private
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
    },
    /// Invite someone by email: an account without a password (state invited) that becomes
    /// active at its first sign-in. The username is the email's local part for the
    /// organisation's domains (auth.allowed_domains), else the whole email with '@' and '.' as
    /// '_'.
    Invite {
        email: String,
        /// Comma-separated groups [default: auth.default_groups]
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
        /// Display name
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List accounts: username, state, email and groups.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete an account (username or email) with its API tokens and sessions; never the
    /// last active member of data-ops.
    Remove { name: String },
    /// Mail the account a new one-time link to set its password (set-up when invited, else a
    /// reset); without an SMTP server the link is printed.
    Link { name: String },
    /// Disable an account: it cannot sign in, and its sessions and tokens stop working.
    Disable { name: String },
    /// Enable a disabled account again.
    Enable { name: String },
    /// Set a new password (ends the user's sessions; activates an invited account). Without
    /// --password-stdin one is generated and printed.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace a user's groups (comma-separated; empty string for none).
    SetGroups { name: String, groups: String },
    /// The record of changes to accounts (who invited, disabled, … whom), newest last.
    Changes {
        /// Only the changes to this account (username or email)
        name: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Create an API token for USER; it is printed once.
    Create {
        user: String,
        /// What the token is for
        #[arg(long, default_value = "api")]
        label: String,
        /// Lifetime such as 90d or 12h (default: until revoked)
        #[arg(long)]
        expires: Option<String>,
    },
    /// List API tokens (ids, never secrets).
    List {
        user: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API token by id.
    Revoke { id: String },
}

#[derive(Debug, clap::Args)]
pub(crate) struct GrantArgs {
    /// The group that gets access
    group: String,
    /// SCHEMA.TABLE, or SCHEMA.* for every table of a schema
    target: String,
    /// Only rows matching this SQL predicate, e.g. "region = 'EU'"
    #[arg(long)]
    row_filter: Option<String>,
    /// Comma-separated columns the group does not see
    #[arg(long, value_delimiter = ',')]
    hide_columns: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    group: String,
    /// SCHEMA.TABLE or SCHEMA.*
    target: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// Only this user's queries
    #[arg(long)]
    user: Option<String>,
    /// Newest entries to show
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

/// The password to set: the first line of standard input, or generated (`true`: print it).
fn new_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        Ok((read_password_line()?, false))
    } else {
        Ok((generate_password()?, true))
    }
}

fn read_password_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(!password.is_empty(), "standard input had no password");
    Ok(password)
}

pub(crate) fn user(store: &StoreArgs, command: UserCommand) -> anyhow::Result<()> {
    let accounts = store.accounts()?;
    match command {
        UserCommand::Add {
            name,
            groups,
            password_stdin,
        } => {
            let (password, generated) = new_password(password_stdin)?;
            accounts.add_user(&name, &password, &groups)?;
            out(format!(
                "created user {name} (groups: {})",
                groups.join(",")
            ))?;
            if generated {
                out(format!("password: {password}"))?;
            }
        }
        UserCommand::Invite {
            email,
            groups,
            name,
        } => {
            let account =
                accounts.invite(&email, &name, groups.as_deref(), &Actor::command_line())?;
            out(format!(
                "invited {} as {} (groups: {}); the account becomes active at its first sign-in",
                account.email.as_deref().unwrap_or_default(),
                account.name,
                account.groups.join(","),
            ))?;
            send_link(store, &accounts, &account.name)?;
        }
        UserCommand::List { json } => {
            let users = accounts.users()?;
            if json {
                out(serde_json::to_string(&users)?)?;
            } else {
                for u in users {
                    out(format!(
                        "{:<24} {:<9} {:<32} {}",
                        u.name,
                        u.state,
                        u.email.as_deref().unwrap_or("-"),
                        u.groups.join(",")
                    ))?;
                }
            }
        }
        UserCommand::Remove { name } => {
            accounts.remove_user(&name)?;
            out(format!("removed user {name}"))?;
        }
        UserCommand::Link { name } => send_link(store, &accounts, &name)?,
        UserCommand::Disable { name } => {
            let account =
                accounts.set_state(&name, AccountState::Disabled, &Actor::command_line())?;
            out(format!(
                "disabled {}; its sessions and tokens no longer work",
                account.name
            ))?;
        }
        UserCommand::Enable { name } => {
            let account =
                accounts.set_state(&name, AccountState::Active, &Actor::command_line())?;
            out(format!("{} is {}", account.name, account.state))?;
        }
        UserCommand::Changes { name, limit, json } => {
            let id = name
                .map(|n| accounts.account(&n))
                .transpose()?
                .map(|a| a.id);
            let changes = accounts.changes(id, limit)?;
            if json {
                return out(serde_json::to_string(&changes)?);
            }
            for c in changes.iter().rev() {
                out(format!(
                    "{} {:<20} {:<9} {:<24} {}",
                    time(c.at_ms / 1000),
                    c.actor,
                    c.action,
                    c.account,
                    c.detail
                ))?;
            }
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let (password, generated) = new_password(password_stdin)?;
            accounts.set_password(&name, &password)?;
            out(format!("password of {name} changed; their sessions ended"))?;
            if generated {
                out(format!("password: {password}"))?;
            }
        }
        UserCommand::SetGroups { name, groups } => {
            let groups: Vec<String> = groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect();
            accounts.set_groups(&name, &groups)?;
            out(format!("groups of {name}: {}", groups.join(",")))?;
        }
    }
    Ok(())
}

/// Mails `login`'s account a password link; prints it when no SMTP server is configured.
fn send_link(store: &StoreArgs, accounts: &Accounts, login: &str) -> anyhow::Result<()> {
    let config = store.config()?;
    let Some(link) = accounts.password_link(login)? else {
        anyhow::bail!("{login} is disabled: enable it before sending a link");
    };
    // A running server's own address, else the configured one.
    let running = std::fs::read_to_string(config.settings.data_dir.join("run/addresses.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v["http"].as_str()?.parse().ok());
    let public_url = config.public_url_or(running.unwrap_or(config.settings.http_addr));
    let mailer = crate::wiring::mailer(&config)?;
    if !mailer.delivers() {
        return out(format!(
            "no SMTP server is configured (mail.smtp_host): give {} this link (it works once, for one hour):\n{}",
            link.account.name,
            dataport_web::password_link_url(&public_url, &link)
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(dataport_web::send_password_link(
            &mailer,
            &public_url,
            &link,
        ))
        .context("cannot send the link")?;
    out(format!(
        "mailed {} a link to set the password",
        link.account.email.as_deref().unwrap_or(&link.account.name)
    ))
}

pub(crate) fn token(store: &StoreArgs, command: TokenCommand) -> anyhow::Result<()> {
    let accounts = store.accounts()?;
    match command {
        TokenCommand::Create {
            user,
            label,
            expires,
        } => {
            let ttl = expires
                .as_deref()
                .map(|e| parse_duration("--expires", e))
                .transpose()?;
            let token = accounts.create_api_token(&user, &label, ttl)?;
            out(format!(
                "created API token {} for {user}{}; it is shown only now:",
                token.id,
                token
                    .expires_at
                    .map(|e| format!(" (expires {})", time(e)))
                    .unwrap_or_default()
            ))?;
            out(token.token)?;
        }
        TokenCommand::List { user, json } => {
            let tokens = accounts.api_tokens(user.as_deref())?;
            if json {
                out(serde_json::to_string(&tokens)?)?;
            } else {
                for t in tokens {
                    let state = if t.revoked_at.is_some() {
                        "revoked".to_string()
                    } else if let Some(e) = t.expires_at {
                        format!("expires {}", time(e))
                    } else {
                        "live".to_string()
                    };
                    out(format!(
                        "{}  {:<16} {:<16} created {}  {state}",
                        t.id,
                        t.user,
                        t.label,
                        time(t.created_at)
                    ))?;
                }
            }
        }
        TokenCommand::Revoke { id } => {
            accounts.revoke_api_token(&id)?;
            out(format!("revoked API token {id}"))?;
        }
    }
    Ok(())
}

pub(crate) fn grant(store: &StoreArgs, args: GrantArgs) -> anyhow::Result<()> {
    let accounts = store.accounts()?;
    let target: TargetTable = args.target.parse()?;
    let restricted = args.row_filter.is_some() || !args.hide_columns.is_empty();
    if restricted {
        let Some(table) = target.table.as_deref() else {
            anyhow::bail!(
                "row filters and hidden columns need one table (SCHEMA.TABLE), not {target}"
            );
        };
        check_against_table(store, &target.schema, table, &args)?;
    }
    accounts.grant(
        &args.group,
        &target,
        args.row_filter.as_deref(),
        &args.hide_columns,
        &whoami(),
    )?;
    let mut what = format!("granted {target} to group {}", args.group);
    if let Some(f) = &args.row_filter {
        what.push_str(&format!(", rows where {f}"));
    }
    if !args.hide_columns.is_empty() {
        what.push_str(&format!(", without {}", args.hide_columns.join(",")));
    }
    out(what)
}

/// A row filter and hidden columns must fit the table as it is now.
fn check_against_table(
    store: &StoreArgs,
    schema: &str,
    table: &str,
    args: &GrantArgs,
) -> anyhow::Result<()> {
    let config = store.config()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut options = dataport_catalog::CatalogOptions::new(&config.settings.data_dir);
    options.watch = false;
    options.refresh_interval = std::time::Duration::ZERO;
    let catalog = runtime
        .block_on(dataport_catalog::Catalog::open(
            options,
            Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default()),
            crate::wiring::catalog_session_config(&config)?,
        ))
        .context("cannot read the catalog")?;
    let snapshot = catalog.snapshot();
    let t = snapshot
        .table(schema, table)
        .with_context(|| format!("table {schema}.{table} not found in the catalog"))?;
    dataport_engine::check_grant(t, args.row_filter.as_deref(), &args.hide_columns)?;
    Ok(())
}

pub(crate) fn revoke(store: &StoreArgs, args: RevokeArgs) -> anyhow::Result<()> {
    let accounts = store.accounts()?;
    let target: TargetTable = args.target.parse()?;
    accounts.revoke_grant(&args.group, &target)?;
    out(format!("revoked {target} from group {}", args.group))
}

pub(crate) fn grants(store: &StoreArgs, json: bool) -> anyhow::Result<()> {
    let accounts = store.accounts()?;
    let grants = accounts.grants()?;
    if json {
        return out(serde_json::to_string(&grants)?);
    }
    out(format!(
        "built in: {DATA_OPS} and {DATA_PRIVATE} read every table, {DATAREAD} every table not marked private"
    ))?;
    for g in grants {
        let mut line = format!(
            "{:<20} {}.{}",
            g.group,
            g.schema,
            g.table.as_deref().unwrap_or("*")
        );
        if let Some(f) = &g.row_filter {
            line.push_str(&format!("  rows: {f}"));
        }
        if !g.hidden_columns.is_empty() {
            line.push_str(&format!("  hidden: {}", g.hidden_columns.join(",")));
        }
        out(line)?;
    }
    Ok(())
}

pub(crate) fn audit(store: &StoreArgs, args: AuditArgs) -> anyhow::Result<()> {
    let accounts = store.accounts()?;
    let entries = accounts.store().audit_entries(&AuditQuery {
        user: args.user,
        limit: args.limit,
    })?;
    if args.json {
        return out(serde_json::to_string(&entries)?);
    }
    for e in entries.iter().rev() {
        out(format!(
            "{} {:<12} {:<6} {:<9} {:>8} rows {:>6} ms  {}",
            time(e.at_ms / 1000),
            e.user,
            e.surface,
            e.outcome,
            e.rows,
            e.duration_ms,
            e.sql.replace('\n', " ")
        ))?;
    }
    Ok(())
}

/// Who runs the command, for the grant's `created_by`.
fn whoami() -> String {
    Actor::command_line().name
}

/// Users made on first start: `admin` (and with `--demo`, `analyst` and `insider`, with their
/// notes for corporate memory), with a
/// password from the configuration or generated, printed once and kept in
/// `<data-dir>/auth/<user>-password` (owner-only).
pub(crate) fn bootstrap(config: &Config, accounts: &Accounts, demo: bool) -> anyhow::Result<()> {
    let mut created = Vec::new();
    if !accounts.has_users()? {
        let password = match &config.settings.admin_password {
            Some(Secret(p)) => p.clone(),
            None => {
                let p = generate_password()?;
                keep_password(config, "admin", &p)?;
                created.push(("admin", p.clone()));
                p
            }
        };
        accounts.create_user(
            "admin",
            &password,
            &[DATA_OPS.to_string()],
            &Actor::server(),
        )?;
        tracing::info!("created the administrator 'admin' (group data-ops)");
    } else if config.settings.admin_password.is_some() {
        tracing::info!(
            "DATAPORT_ADMIN_PASSWORD only sets the first administrator's password; users exist, so it is not used (change passwords with: dataport user passwd NAME)"
        );
    }
    if demo {
        for (name, groups) in [
            ("analyst", vec![DATAREAD.to_string()]),
            (
                "insider",
                vec![DATAREAD.to_string(), DATA_PRIVATE.to_string()],
            ),
        ] {
            if accounts.user(name)?.is_some() {
                continue;
            }
            let p = generate_password()?;
            accounts.create_user(name, &p, &groups, &Actor::server())?;
            keep_password(config, name, &p)?;
            created.push((name, p));
            // Their notes, as if pushed, for corporate memory's collector.
            if let Some((_, notes)) = dataport_demo::DEMO_NOTES.iter().find(|(u, _)| *u == name)
                && let Some(dir) =
                    dataport_common::sync::upload_dir(&config.settings.data_dir, name)
            {
                let path = dir.join("notes.md");
                dataport_common::fs::write_bytes_atomic(&path, notes.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
    }
    if !created.is_empty() {
        // Shown once, on the terminal that started the server; never in the log.
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "\nDataport created these accounts:");
        for (name, password) in &created {
            let _ = writeln!(err, "  {name:<8} password: {password}");
        }
        let _ = writeln!(
            err,
            "(also in {}/<user>-password; change them with: dataport user passwd NAME)\n",
            config.settings.data_dir.join("auth").display()
        );
    }
    Ok(())
}

fn keep_password(config: &Config, user: &str, password: &str) -> anyhow::Result<()> {
    let dir = config.settings.data_dir.join("auth");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    let path = dir.join(format!("{user}-password"));
    dataport_common::fs::write_bytes_atomic(&path, format!("{password}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    Ok(())
}
