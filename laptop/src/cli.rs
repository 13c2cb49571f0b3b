//! `login`, `logout`, `pull`, `push`, `notify` and `mcp`: the analyst's commands, wired to the
//! `dataport-client` crate with a progress bar and one-line summaries.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use dataport_client::{
    Api, ClientError, Credentials, DuckDb, PullOptions, PullProgress, PullReport, PushOptions,
    ViewsOutcome, credentials_path,
};

use crate::term::{human_bytes, init_cli_logging, out, time};

/// The analyst's commands, as subcommands of `dataport` and of `dataport-client`.
///
/// A binary embeds them as its subcommands and hands the parsed one to [`run`]:
///
/// ```
/// use clap::Parser;
/// use dataport_laptop::ClientCommand;
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(subcommand)]
///     command: ClientCommand,
/// }
///
/// let cli = Cli::try_parse_from(["dataport-client", "pull", "--all", "--limit-rate", "2M"])?;
/// let ClientCommand::Pull(pull) = cli.command else {
///     return Err("`pull` parses as ClientCommand::Pull".into());
/// };
/// let parsed = format!("{pull:?}");
/// assert!(parsed.contains("all: true") && parsed.contains("limit_rate: Some(2097152)"));
///
/// // Mistakes are refused before anything runs, with what to write instead.
/// let error = Cli::try_parse_from(["dataport-client", "pull", "--limit-rate", "fast"])
///     .err()
///     .ok_or("'fast' is refused")?;
/// assert!(error.to_string().contains("'fast' is not a rate such as 500K or 2M"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Log in to a Dataport server and store the token for pull and push.
    Login(LoginArgs),
    /// Revoke the stored token and forget it.
    Logout,
    /// Download the tables you may read (only what changed) and write DuckDB views over them.
    Pull(PullArgs),
    /// Upload your notes file, session transcripts and notification scripts.
    Push(PushArgs),
    /// Your notification scripts on the server: list them, run them now, test one.
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Serve the data tools to a local AI assistant over MCP (standard input and output):
    /// through the server you logged in to, or from the pulled files when it cannot be reached.
    Mcp(McpArgs),
}

/// `dataport notify …`.
#[derive(Debug, clap::Subcommand)]
pub enum NotifyCommand {
    /// Your scripts on the server, with their last runs.
    List {
        /// Print the server's answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// Run a script now (every script of yours, in name order, without one) and deliver what
    /// it reports; the cooldown does not hold a run by hand back.
    Run {
        script: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run a script and show what it would send, without sending anything or touching its
    /// cooldown: a file path tests that file's content (not yet pushed), a name the stored
    /// script.
    Test {
        script: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs one of the analyst's commands.
pub fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Login(args) => login(args),
        ClientCommand::Logout => logout(),
        ClientCommand::Pull(args) => pull(args),
        ClientCommand::Push(args) => push(args),
        ClientCommand::Notify(command) => notify(command),
        ClientCommand::Mcp(args) => mcp(args),
    }
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The server's HTTP address, e.g. https://data.example.com or http://127.0.0.1:8080
    #[arg(long, env = "DATAPORT_SERVER")]
    server: String,
    /// Your user name or email (asks for the password); without it, and without
    /// --token-stdin, you sign in through the browser (for accounts without a password)
    #[arg(long)]
    user: Option<String>,
    /// Browser sign-in: only print the address to open, do not start a browser
    #[arg(long, conflicts_with_all = ["user", "token_stdin"])]
    no_browser: bool,
    /// Read the password from the first line of standard input (for scripts)
    #[arg(long, conflicts_with = "token_stdin")]
    password_stdin: bool,
    /// Store an API token read from standard input instead of logging in with a password
    #[arg(long, conflicts_with = "user")]
    token_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The folder to pull into [default: ~/dataport]
    #[arg(long, env = "DATAPORT_DIR")]
    dir: Option<PathBuf>,
    /// Every table you may read, ignoring your sync settings
    #[arg(long)]
    all: bool,
    /// Downloads at a time
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Re-hash every local file instead of trusting unchanged size and modification time
    #[arg(long)]
    verify: bool,
    /// Bandwidth cap for all downloads together, in bytes per second (suffixes K, M, G)
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    limit_rate: Option<u64>,
    /// The duckdb executable that applies views.sql to DIR/analytics.duckdb (default: duckdb
    /// on PATH, if any)
    #[arg(long, value_name = "PATH", conflicts_with = "no_duckdb")]
    duckdb: Option<PathBuf>,
    /// Only write views.sql
    #[arg(long)]
    no_duckdb: bool,
    /// No progress and no summary; errors and warnings only (for hooks and cron)
    #[arg(long, short)]
    quiet: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The pull folder, where --notes and --transcripts are by default [default: ~/dataport]
    #[arg(long, env = "DATAPORT_DIR")]
    dir: Option<PathBuf>,
    /// Your notes file [default: DIR/notes.md]
    #[arg(long, value_name = "FILE")]
    notes: Option<PathBuf>,
    /// Folder of session transcripts, *.jsonl [default: DIR/transcripts]
    #[arg(long, value_name = "DIR")]
    transcripts: Option<PathBuf>,
    /// Folder of notification scripts, *.py and files with a #! line [default:
    /// DIR/notifications]
    #[arg(long, value_name = "DIR")]
    notifications: Option<PathBuf>,
    /// Also remove your scripts on the server that the notifications folder no longer has
    #[arg(long)]
    prune_scripts: bool,
    #[arg(long, short)]
    quiet: bool,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// The server's HTTP address [default: the one you logged in to; the login must be for it]
    #[arg(long)]
    server: Option<String>,
    /// The pull folder, answered from when the server cannot be reached [default: ~/dataport]
    #[arg(long, env = "DATAPORT_DIR")]
    dir: Option<PathBuf>,
    /// The duckdb executable for offline queries (default: duckdb on PATH, else Python's
    /// duckdb module, as pull finds it)
    #[arg(long, value_name = "PATH")]
    duckdb: Option<PathBuf>,
    /// Log to standard error when the server stops or starts answering (standard output
    /// carries only MCP messages)
    #[arg(long, short)]
    verbose: bool,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != '.')
    {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: f64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a rate such as 500K or 2M"))?;
    let mult = match unit
        .to_ascii_uppercase()
        .trim_end_matches("B")
        .trim_end_matches("I")
    {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024.0 * 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("'{s}': the unit must be K, M or G")),
    };
    let rate = (n * mult) as u64;
    if rate == 0 {
        return Err("the rate must be above 0".into());
    }
    Ok(rate)
}

/// `--dir`, else `~/dataport`.
fn pull_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match dir {
        Some(d) => Ok(d),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join("dataport"))
            .context("no HOME to put ~/dataport in: give --dir DIR"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn login(args: LoginArgs) -> anyhow::Result<()> {
    init_cli_logging(true);
    let path = credentials_path()?;
    let api = Api::new(&args.server, None)?;
    let creds = runtime()?.block_on(async {
        if args.token_stdin {
            let token = read_stdin_line().context("cannot read the token from standard input")?;
            let api = api.with_token(token.clone());
            let me = api.me().await?;
            anyhow::Ok((
                Credentials {
                    server: api.server(),
                    user: me.user,
                    token,
                    expires_at: None,
                },
                me.groups,
            ))
        } else {
            let session = match args.user.clone() {
                None => browser_sign_in(&api, !args.no_browser).await?,
                Some(user) => password_login(&api, &user, args.password_stdin).await?,
            };
            Ok((
                Credentials {
                    server: api.server(),
                    user: session.user,
                    token: session.token,
                    expires_at: Some(session.expires_at),
                },
                session.groups,
            ))
        }
    })?;
    let (creds, groups) = creds;
    creds.save(&path)?;
    out(format!(
        "logged in to {} as {} ({}); token {}; saved in {}",
        creds.server,
        creds.user,
        if groups.is_empty() {
            "no groups".to_string()
        } else {
            format!("groups: {}", groups.join(", "))
        },
        creds
            .expires_at
            .map_or("without a known expiry".to_string(), |t| format!(
                "valid until {}",
                time(t)
            )),
        path.display()
    ))
}

/// Logs in with `user`'s password, asked for at the terminal or read from standard input.
async fn password_login(
    api: &Api,
    user: &str,
    from_stdin: bool,
) -> anyhow::Result<dataport_client::Session> {
    let password = if from_stdin {
        read_stdin_line().context("cannot read the password from standard input")?
    } else {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("no terminal to ask for the password: use --password-stdin");
        }
        rpassword::prompt_password(format!("Password for {user} at {}: ", api.server()))
            .context("cannot read the password")?
    };
    Ok(api.login(user, &password).await?)
}

/// Signs in through the browser: prints the approval page's address (and opens it when
/// `open`), then waits up to five minutes for the browser to come back.
async fn browser_sign_in(api: &Api, open: bool) -> anyhow::Result<dataport_client::Session> {
    let sign_in = dataport_client::BrowserSignIn::start(api).await?;
    eprintln!(
        "To sign in, open this address in your browser (on this computer):\n\n    {}\n",
        sign_in.url()
    );
    if open && !open_browser(sign_in.url()) {
        eprintln!("(no browser could be started here: open the address yourself)");
    }
    Ok(sign_in
        .finish(api, std::time::Duration::from_secs(300))
        .await?)
}

/// Starts the desktop's browser on `url`; false when there is none.
fn open_browser(url: &str) -> bool {
    let mut command = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("rundll32");
        c.arg("url.dll,FileProtocolHandler");
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    command
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

fn read_stdin_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim_end_matches(['\n', '\r']).to_string();
    if line.is_empty() {
        anyhow::bail!("standard input was empty");
    }
    Ok(line)
}

fn logout() -> anyhow::Result<()> {
    init_cli_logging(true);
    let path = credentials_path()?;
    let creds = match Credentials::load(&path) {
        Ok(c) => c,
        Err(ClientError::NotLoggedIn { .. }) => return out("not logged in"),
        Err(e) => return Err(e.into()),
    };
    let api = Api::new(&creds.server, Some(creds.token.clone()))?;
    match runtime()?.block_on(api.logout()) {
        Ok(()) | Err(ClientError::Unauthorized { .. }) => {}
        Err(e) => eprintln!("warning: the server did not revoke the token: {e}"),
    }
    Credentials::remove(&path)?;
    out(format!("logged out of {} ({})", creds.server, creds.user))
}

fn pull(args: PullArgs) -> anyhow::Result<()> {
    init_cli_logging(true);
    let path = credentials_path()?;
    let options = PullOptions {
        dir: pull_dir(args.dir.clone())?,
        all: args.all,
        jobs: usize::from(args.jobs),
        verify: args.verify,
        limit_rate: args.limit_rate,
        duckdb: match (&args.duckdb, args.no_duckdb) {
            (_, true) => DuckDb::Off,
            (Some(p), _) => DuckDb::Path(p.clone()),
            (None, false) => DuckDb::Auto,
        },
    };
    let bar = ByteBar::new(args.quiet || args.json);
    let report = runtime()?.block_on(async {
        let (api, creds) = Credentials::connect(&path).await?;
        dataport_client::pull(&api, &creds.user, &options, &bar).await
    });
    bar.clear();
    let report = report?;
    if args.json {
        out(serde_json::to_string_pretty(&report).context("cannot encode the report")?)?;
    } else if !args.quiet {
        out(summary(&report))?;
    }
    match &report.views {
        ViewsOutcome::NoDuckDb if !args.quiet && !args.json => {
            eprintln!("no DuckDB found: {}", dataport_client::INSTALL_DUCKDB)
        }
        ViewsOutcome::Failed { duckdb, message } => eprintln!(
            "warning: {} could not apply views.sql ({message}); the files are pulled, run it again once the database is not in use",
            duckdb.display()
        ),
        _ => {}
    }
    Ok(())
}

fn summary(r: &PullReport) -> String {
    let mut s = format!(
        "pulled {} tables ({} files) from {} as {} into {}: {} downloaded ({}",
        r.tables,
        r.files,
        r.server,
        r.user,
        r.dir.display(),
        r.downloaded,
        human_bytes(r.downloaded_bytes)
    );
    if r.resumed_bytes > 0 {
        s.push_str(&format!(", {} resumed", human_bytes(r.resumed_bytes)));
    }
    s.push_str(&format!("), {} unchanged", r.unchanged));
    if r.repaired > 0 {
        s.push_str(&format!(", {} damaged and replaced", r.repaired));
    }
    s.push_str(&format!(", {} removed", r.removed));
    if !r.removed_tables.is_empty() {
        s.push_str(&format!(
            " (no longer yours: {})",
            r.removed_tables.join(", ")
        ));
    }
    s.push_str(&match &r.views {
        ViewsOutcome::Applied { database, .. } => {
            format!("; views in {}", database.display())
        }
        _ => "; views in views.sql".to_string(),
    });
    s.push_str(&format!(" ({:.1} s)", r.seconds));
    if let Some(line) = rules_line(r) {
        s.push('\n');
        s.push_str(&line);
    }
    s
}

/// `rules: 3 in rules/ (1 new or changed, 1 removed)` and `docs: 12 in docs/ (unchanged)`,
/// each when there are such files or some went.
fn rules_line(r: &PullReport) -> Option<String> {
    let folders = [
        ("rules", r.rules, r.rules_written, r.rules_removed),
        ("docs", r.docs, r.docs_written, r.docs_removed),
    ];
    let lines: Vec<String> = folders
        .into_iter()
        .filter(|&(_, n, written, removed)| n > 0 || written > 0 || removed > 0)
        .map(|(name, n, written, removed)| {
            let mut changes = Vec::new();
            if written > 0 {
                changes.push(format!("{written} new or changed"));
            }
            if removed > 0 {
                changes.push(format!("{removed} removed"));
            }
            let changes = if changes.is_empty() {
                "unchanged".to_string()
            } else {
                changes.join(", ")
            };
            format!("{name}: {n} in {name}/ ({changes})")
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// `dataport mcp`: MCP over standard input and output until the assistant closes it.
fn mcp(args: McpArgs) -> anyhow::Result<()> {
    init_cli_logging(!args.verbose);
    let options = dataport_client::McpOptions {
        server: args.server,
        dir: pull_dir(args.dir)?,
        credentials: credentials_path()?,
        duckdb: args.duckdb.map_or(DuckDb::Auto, DuckDb::Path),
        retry_every: dataport_client::RETRY_EVERY,
    };
    runtime()?.block_on(dataport_client::serve_mcp_stdio(options))?;
    Ok(())
}

fn push(args: PushArgs) -> anyhow::Result<()> {
    init_cli_logging(true);
    let path = credentials_path()?;
    let dir = pull_dir(args.dir)?;
    let options = PushOptions {
        notes: args.notes.unwrap_or_else(|| dir.join("notes.md")),
        transcripts: args.transcripts.unwrap_or_else(|| dir.join("transcripts")),
        notifications: args
            .notifications
            .unwrap_or_else(|| dir.join("notifications")),
        prune_scripts: args.prune_scripts,
    };
    let (report, server) = runtime()?.block_on(async {
        let (api, _) = Credentials::connect(&path).await?;
        let report = dataport_client::push(&api, &options).await?;
        anyhow::Ok((report, api.server()))
    })?;
    if args.json {
        return out(serde_json::to_string_pretty(&report).context("cannot encode the report")?);
    }
    if args.quiet {
        return Ok(());
    }
    let stored = report.transcripts.iter().filter(|t| !t.unchanged).count();
    let scripts = &report.notifications;
    let new_scripts = scripts.scripts.iter().filter(|s| !s.unchanged).count();
    let mut line = format!(
        "pushed to {server}: notes {}, {} transcripts ({stored} stored, {} unchanged), {} scripts ({new_scripts} stored, {} unchanged)",
        match &report.notes {
            None => format!("not found at {}", options.notes.display()),
            Some(n) if n.unchanged => "unchanged".to_string(),
            Some(n) => format!("stored ({})", human_bytes(n.bytes)),
        },
        report.transcripts.len(),
        report.transcripts.len() - stored,
        scripts.scripts.len(),
        scripts.scripts.len() - new_scripts,
    );
    if !scripts.removed.is_empty() {
        line.push_str(&format!(
            "; removed from the server: {}",
            scripts.removed.join(", ")
        ));
    }
    for (name, why) in &scripts.refused {
        line.push_str(&format!("\nscript {name} refused: {why}"));
    }
    out(line)?;
    if scripts.refused.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{} scripts were refused (see above)", scripts.refused.len())
    }
}

fn notify(command: NotifyCommand) -> anyhow::Result<()> {
    init_cli_logging(true);
    let path = credentials_path()?;
    runtime()?.block_on(async {
        let (api, _) = Credentials::connect(&path).await?;
        match command {
            NotifyCommand::List { json } => {
                let answer = api.notify_scripts().await?;
                if json {
                    return out(serde_json::to_string_pretty(&answer)?);
                }
                let scripts = answer["scripts"].as_array().cloned().unwrap_or_default();
                if scripts.is_empty() {
                    return out(format!(
                        "no scripts on {}: put them in your notifications/ folder and run `dataport push`",
                        api.server()
                    ));
                }
                for s in scripts {
                    out(script_line(&s))?;
                }
                Ok(())
            }
            NotifyCommand::Run { script, json } => {
                let names = match script {
                    Some(name) => vec![name],
                    None => api.notify_scripts().await?["scripts"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s["name"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                let mut failed = 0;
                for name in names {
                    let report = api.run_script(&name).await?;
                    if json {
                        out(serde_json::to_string_pretty(&report)?)?;
                    } else {
                        out(run_line(&report))?;
                    }
                    if matches!(report["run"]["outcome"].as_str(), Some("failed" | "delivery_failed")) {
                        failed += 1;
                    }
                }
                if failed > 0 {
                    anyhow::bail!("{failed} runs failed");
                }
                Ok(())
            }
            NotifyCommand::Test { script, json } => {
                let local = std::path::Path::new(&script);
                let report = if local.is_file() {
                    let name = local
                        .file_name()
                        .and_then(|n| n.to_str())
                        .context("the script's file name is not UTF-8")?;
                    let content = std::fs::read(local)
                        .with_context(|| format!("cannot read {}", local.display()))?;
                    api.test_content(name, content).await?
                } else {
                    api.test_script(&script).await?
                };
                if json {
                    return out(serde_json::to_string_pretty(&report)?);
                }
                out(run_line(&report))?;
                if let Some(p) = report.get("preview").filter(|p| !p.is_null()) {
                    out(format!(
                        "would send: {}\n{}",
                        p["title"].as_str().unwrap_or_default(),
                        p["message"].as_str().unwrap_or_default()
                    ))?;
                }
                if report["run"]["outcome"] == "failed" {
                    anyhow::bail!("the test run failed");
                }
                Ok(())
            }
        }
    })
}

/// `name  kind  schedule  last run …` for `dataport notify list`.
fn script_line(s: &serde_json::Value) -> String {
    let last = match s.get("last_run").filter(|r| !r.is_null()) {
        Some(r) => format!(
            "last run {} ({})",
            r["outcome"].as_str().unwrap_or("?"),
            r["reason"].as_str().unwrap_or("")
        ),
        None => "never run".into(),
    };
    format!(
        "{:<32} {:<10} {:<12} {}",
        s["name"].as_str().unwrap_or("?"),
        s["kind"].as_str().unwrap_or("?"),
        s["schedule"].as_str().unwrap_or("-"),
        last
    )
}

/// One line of a run's outcome, and the end of its stderr when it failed.
fn run_line(report: &serde_json::Value) -> String {
    let run = &report["run"];
    let mut line = format!(
        "{}: {}",
        run["script"].as_str().unwrap_or("?"),
        run["outcome"].as_str().unwrap_or("?")
    );
    if let Some(reason) = run["reason"].as_str() {
        line.push_str(&format!(" — {reason}"));
    }
    if let Some(list) = run["deliveries"].as_array().filter(|l| !l.is_empty()) {
        let parts: Vec<String> = list
            .iter()
            .map(|d| {
                format!(
                    "{} {}",
                    d["channel"].as_str().unwrap_or("?"),
                    if d["ok"] == true { "ok" } else { "failed" }
                )
            })
            .collect();
        line.push_str(&format!(" [{}]", parts.join(", ")));
    }
    line.push_str(&format!(
        " ({} ms)",
        run["duration_ms"].as_i64().unwrap_or(0)
    ));
    if run["outcome"] == "failed"
        && let Some(err) = run["stderr"].as_str().filter(|e| !e.trim().is_empty())
    {
        let tail: Vec<&str> = err.trim_end().lines().rev().take(5).collect();
        for l in tail.into_iter().rev() {
            line.push_str(&format!("\n  {l}"));
        }
    }
    line
}

/// A byte-progress line on a terminal: nothing otherwise.
struct ByteBar {
    on: bool,
    state: Mutex<ByteState>,
}

struct ByteState {
    files: usize,
    finished: usize,
    total: u64,
    done: u64,
    started: Instant,
    drawn: Option<Instant>,
}

impl ByteBar {
    fn new(quiet: bool) -> Self {
        Self {
            on: !quiet && std::io::stderr().is_terminal(),
            state: Mutex::new(ByteState {
                files: 0,
                finished: 0,
                total: 0,
                done: 0,
                started: Instant::now(),
                drawn: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ByteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn draw(&self, s: &mut ByteState, force: bool) {
        if !self.on || s.files == 0 {
            return;
        }
        if !force && s.drawn.is_some_and(|t| t.elapsed().as_millis() < 100) {
            return;
        }
        s.drawn = Some(Instant::now());
        let width = 24u64;
        let filled = (s.done.min(s.total) * width)
            .checked_div(s.total)
            .unwrap_or(0);
        let bar: String = (0..width)
            .map(|i| if i < filled { '#' } else { '-' })
            .collect();
        let secs = s.started.elapsed().as_secs_f64().max(0.001);
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r\x1b[2K[{bar}] {} / {}  {}/{} files  {}/s",
            human_bytes(s.done),
            human_bytes(s.total),
            s.finished,
            s.files,
            human_bytes((s.done as f64 / secs) as u64)
        );
        let _ = err.flush();
    }

    fn clear(&self) {
        let s = self.lock();
        if self.on && s.drawn.is_some() {
            eprint!("\r\x1b[2K");
        }
    }
}

impl PullProgress for ByteBar {
    fn planned(&self, files: usize, bytes: u64) {
        let mut s = self.lock();
        s.files = files;
        s.total = bytes;
        s.started = Instant::now();
        self.draw(&mut s, true);
    }

    fn advanced(&self, bytes: u64) {
        let mut s = self.lock();
        s.done += bytes;
        self.draw(&mut s, false);
    }

    fn finished_file(&self, _local_path: &str) {
        let mut s = self.lock();
        s.finished += 1;
        self.draw(&mut s, true);
    }
}

#[cfg(test)]
mod tests {
    use super::{PullReport, ViewsOutcome, parse_rate, rules_line, summary};

    fn report(rules: usize, rules_written: usize, rules_removed: usize) -> PullReport {
        PullReport {
            server: "https://data.example.com".into(),
            user: "alice".into(),
            dir: "/home/alice/dataport".into(),
            snapshot_version: 1,
            tables: 1,
            files: 1,
            downloaded: 0,
            downloaded_bytes: 0,
            resumed_bytes: 0,
            unchanged: 1,
            repaired: 0,
            removed: 0,
            removed_tables: Vec::new(),
            views: ViewsOutcome::Off,
            rules,
            rules_written,
            rules_removed,
            docs: 0,
            docs_written: 0,
            docs_removed: 0,
            seconds: 0.5,
        }
    }

    #[test]
    fn the_summary_mentions_rules_when_there_are_any() {
        assert_eq!(rules_line(&report(0, 0, 0)), None);
        assert!(!summary(&report(0, 0, 0)).contains("rules"));
        assert_eq!(
            rules_line(&report(3, 0, 0)).as_deref(),
            Some("rules: 3 in rules/ (unchanged)")
        );
        assert_eq!(
            rules_line(&report(3, 1, 1)).as_deref(),
            Some("rules: 3 in rules/ (1 new or changed, 1 removed)")
        );
        assert_eq!(
            rules_line(&report(0, 0, 2)).as_deref(),
            Some("rules: 0 in rules/ (2 removed)")
        );
        assert!(
            summary(&report(3, 1, 1))
                .ends_with("\nrules: 3 in rules/ (1 new or changed, 1 removed)")
        );
        let mut both = report(3, 0, 0);
        (both.docs, both.docs_written, both.docs_removed) = (12, 2, 1);
        assert!(summary(&both).ends_with(
            "\nrules: 3 in rules/ (unchanged)\ndocs: 12 in docs/ (2 new or changed, 1 removed)"
        ));
    }

    #[test]
    fn rates_take_binary_suffixes() {
        assert_eq!(parse_rate("500"), Ok(500));
        assert_eq!(parse_rate("500K"), Ok(500 * 1024));
        assert_eq!(parse_rate("2M"), Ok(2 << 20));
        assert_eq!(parse_rate("1.5MiB"), Ok(1_572_864));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("3X").is_err());
    }
}
