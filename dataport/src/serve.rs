//! `dataport serve`: start the engine, the HTTP API and Flight SQL; stop them on
//! SIGINT/SIGTERM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use dataport_auth::{Accounts, StateStore};
use dataport_engine::Engine;
use dataport_flight::{FlightOptions, FlightSqlServer, TlsFiles};
use dataport_web::{AppState, WebOptions};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, LogFormat, Overrides};
use crate::wiring::{authenticator, engine};

/// Keep login attempts this long (the rate limit looks back one minute).
const LOGIN_ATTEMPTS_KEPT: i64 = 7 * 24 * 3600;

/// How long the process waits, after serving stopped, for query threads busy in a long
/// computation; they are abandoned after it.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    overrides: Overrides,
    /// Generate a TPC-H demo dataset in the data dir on first start.
    #[arg(long)]
    demo: bool,
    /// TPC-H scale factor of the demo dataset (1 is about 6M lineitem rows, 250 MB of Parquet)
    #[arg(long, default_value_t = 0.1, requires = "demo", value_name = "SF")]
    demo_scale: f64,
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.overrides).context("invalid configuration")?;
    let job_logs = init_logging(&config)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("dataport")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(
        config,
        args.demo.then_some(args.demo_scale),
        job_logs,
    ));
    // A cancelled query may still be inside one long CPU-bound step; don't wait for it.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

/// The server's log on stderr (human or JSON lines), and the log of each job run kept for the
/// jobs page (the returned [`JobLogs`](dataport_engine::jobs::JobLogs)), both under the one
/// filter (`RUST_LOG`, else `log.level`).
fn init_logging(config: &Config) -> anyhow::Result<dataport_engine::jobs::JobLogs> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.settings.level))
        .context("log.level is not a valid filter")?;
    // Colours only on a terminal: a log file or journal gets plain text.
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let output = match config.settings.format {
        LogFormat::Human => output.boxed(),
        LogFormat::Json => output.json().boxed(),
    };
    let job_logs = dataport_engine::jobs::JobLogs::new();
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(job_logs.layer())
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    Ok(job_logs)
}

/// How often restricted copies (`sync/views/`) that no account's manifest can list any more
/// are removed, and how old such a copy must be.
const SYNC_VIEWS_PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Every [`SYNC_VIEWS_PRUNE_EVERY`]: each account's view of the current snapshot decides
/// which restricted copies are still current; the rest (older data versions, changed or
/// revoked grants) are removed.
async fn prune_sync_views(
    sync: Arc<dataport_engine::sync::SyncFiles>,
    engine: Engine,
    accounts: Accounts,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(SYNC_VIEWS_PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let users = match accounts.users() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list accounts; restricted copies are kept");
                continue;
            }
        };
        let views: Vec<_> = users
            .into_iter()
            .map(|u| {
                engine.catalog_view(&dataport_engine::RequestContext::new(
                    dataport_engine::Principal::new(u.name, u.groups),
                    dataport_engine::Surface::Internal,
                    "prune-sync-views",
                ))
            })
            .collect();
        let sync = Arc::clone(&sync);
        let removed =
            tokio::task::spawn_blocking(move || sync.prune_views(&views, SYNC_VIEWS_PRUNE_EVERY))
                .await
                .unwrap_or(0);
        if removed > 0 {
            tracing::info!(
                removed,
                "removed restricted sync copies no manifest lists any more"
            );
        }
    }
}

/// `demo`: the scale of the demo dataset to make sure of, if any.
async fn serve(
    config: Config,
    demo: Option<f64>,
    job_logs: dataport_engine::jobs::JobLogs,
) -> anyhow::Result<()> {
    // Settings that are files are read first: a wrong one stops the start before anything runs.
    let logo = config
        .settings
        .logo
        .as_deref()
        .map(dataport_web::brand::Logo::from_file)
        .transpose()?;
    let data_dir = config.settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let addresses = data_dir.join("run").join("addresses.json");
    remove_if_exists(&addresses)?;

    if let Some(scale) = demo {
        if !(scale.is_finite() && scale > 0.0) {
            anyhow::bail!("--demo-scale must be a positive number, not {scale}");
        }
        let dir = data_dir.clone();
        let outcome = tokio::task::spawn_blocking(move || dataport_demo::ensure_tpch(&dir, scale))
            .await
            .context("demo generation task failed")?
            .context("cannot generate the demo dataset")?;
        match outcome {
            dataport_demo::DemoOutcome::Reused => {
                tracing::info!("demo dataset found (schema tpch); reusing it")
            }
            dataport_demo::DemoOutcome::Generated(report) => tracing::info!(
                rows = report.total_rows(),
                bytes = report.total_bytes(),
                elapsed_ms = report.elapsed.as_millis() as u64,
                "demo dataset generated (TPC-H scale {scale} as schema tpch)"
            ),
        }
    }

    crate::jobs::recover(&data_dir)?;
    let store = Arc::new(StateStore::open(&data_dir).context("cannot open the state store")?);
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = store.prune(now - LOGIN_ATTEMPTS_KEPT, now) {
        tracing::warn!(error = %e, "cannot prune old login attempts");
    }
    crate::admin::bootstrap(
        &config,
        &crate::wiring::accounts(&config, &store),
        demo.is_some(),
    )
    .context("cannot create the first accounts")?;
    let audit = store.audit_log().context("cannot start the audit log")?;
    let auth = authenticator(&config, &store, Some(audit.clone()))?;
    let engine = engine(&config, &auth, Some(audit), true).await?;
    let snapshot = engine.catalog().snapshot();
    tracing::info!(
        data_dir = %data_dir.display(),
        config_file = %config.config_file.as_deref().map_or_else(|| "none".into(), |p| p.display().to_string()),
        tables = snapshot.table_count(),
        issues = snapshot.issues().len(),
        "catalog loaded"
    );
    for issue in snapshot.issues() {
        tracing::error!(
            source = %issue.source,
            problem = %issue.message,
            what_to_do = %issue.hint,
            "catalog problem"
        );
    }
    if !snapshot.issues().is_empty() {
        tracing::error!(
            problems = snapshot.issues().len(),
            "the catalog loaded with problems (listed above); the server runs without what \
             they name, and /health reports them (in full with an administrator's token)"
        );
    }

    let cancel = CancellationToken::new();
    let refresher = dataport_catalog::spawn_refresher(engine.catalog().clone(), cancel.clone());
    let profiler = Arc::new(dataport_engine::profiles::Profiler::new(Arc::clone(&store)));
    let sources = crate::jobs::sources(&config, &store)?;
    let mut push_sources: Vec<(String, Arc<dyn dataport_web::PushSource>)> = Vec::new();
    let mut queues = Vec::new();
    for source in &sources {
        if let dataport_connectors::Source::Jira(jira) = source {
            jira.set_catalog(engine.catalog().clone());
            push_sources.push((
                jira.name().to_string(),
                Arc::new(crate::push::JiraPush {
                    source: Arc::clone(jira),
                    state: Arc::clone(&store),
                }),
            ));
            let cancel = cancel.clone();
            queues.push(tokio::spawn(
                Arc::clone(jira).run_queue(async move { cancel.cancelled().await }),
            ));
        }
    }
    let listener = tokio::net::TcpListener::bind(config.settings.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.http_addr)",
                config.settings.http_addr
            )
        })?;
    let http_addr = listener.local_addr().context("listener has no address")?;

    // Notifications: scripts reach this server over HTTP; live deliveries go through the
    // gateway on the same listener.
    let gateway = Arc::new(dataport_web::Gateway::new(crate::notify::gateway(&config)));
    let notifier = dataport_notify::Notifier::new(
        crate::notify::options(&config, http_addr),
        Arc::clone(&store),
        auth.clone(),
        Arc::clone(&gateway) as Arc<dyn dataport_notify::LiveChannel>,
    )
    .context("cannot set up notifications (notify.*)")?;
    let bot = tokio::spawn(dataport_notify::telegram::bot::run(
        notifier.clone(),
        cancel.clone(),
    ));
    let mut server_jobs =
        crate::jobs::server_jobs(&config, &store, engine.catalog(), &profiler, &sources)?;
    server_jobs.push(crate::notify::job(&config, &notifier));
    let memory = crate::memory::memory(&config, &store)?;
    if demo.is_some() {
        // The demo analysts' notes become items right away, not at the first scheduled run.
        let memory = memory.clone();
        tokio::spawn(async move {
            let summary = memory.collect().await;
            tracing::info!(summary = %summary.line(), "memory: demo notes collected");
        });
    }
    server_jobs.extend(crate::memory::jobs(&config, &memory));
    let jobs = dataport_engine::jobs::Scheduler::new(Arc::clone(&store), server_jobs)
        .context("cannot set up the jobs")?;
    jobs.keep_logs(job_logs);
    let timers = jobs.start(cancel.clone());

    let flight_listener = tokio::net::TcpListener::bind(config.settings.flight_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.flight_addr)",
                config.settings.flight_addr
            )
        })?;
    let flight_addr = flight_listener
        .local_addr()
        .context("listener has no address")?;
    let flight_options = FlightOptions {
        max_message_bytes: config.settings.flight_max_message_bytes.0,
        tls: config
            .flight_tls
            .clone()
            .map(|(cert, key)| TlsFiles { cert, key }),
        ..FlightOptions::default()
    };
    let tls = flight_options.tls.is_some();
    let flight_server = FlightSqlServer::try_new(engine.clone(), auth.clone(), flight_options)
        .context("cannot set up the Flight SQL service")?;
    let flight = dataport_flight::serve(flight_listener, flight_server, {
        let cancel = cancel.clone();
        async move { cancel.cancelled().await }
    })
    .context("cannot start Flight SQL")?;
    let mut flight = tokio::spawn(flight);

    let body = serde_json::json!({
        "http": http_addr.to_string(),
        "flight": flight_addr.to_string(),
    });
    dataport_common::fs::write_bytes_atomic(&addresses, format!("{body}\n").as_bytes())
        .with_context(|| format!("cannot write {}", addresses.display()))?;
    tracing::info!(
        url = %format!("http://{http_addr}"),
        "Dataport is serving HTTP: log in with POST http://{http_addr}/api/v1/auth/login"
    );
    let scheme = if tls { "grpc+tls" } else { "grpc" };
    tracing::info!(
        uri = %format!("{scheme}://{flight_addr}"),
        "Dataport is serving Flight SQL (ADBC, JDBC)"
    );

    let sync = Arc::new(dataport_engine::sync::SyncFiles::new(
        Arc::clone(&store),
        &data_dir,
    ));
    let pruner = tokio::spawn(prune_sync_views(
        Arc::clone(&sync),
        engine.clone(),
        crate::wiring::accounts(&config, &store),
        cancel.clone(),
    ));
    let oidc = crate::wiring::oidc(&config)?;
    for provider in oidc.providers() {
        tracing::info!(
            provider = %provider.name,
            issuer = %provider.issuer,
            redirect_uri = %dataport_web::redirect_uri(&config.public_url_or(http_addr), &provider.name),
            "OpenID Connect sign-in provider"
        );
    }
    let app = dataport_web::router(AppState {
        engine: engine.clone(),
        auth,
        accounts: crate::wiring::accounts(&config, &store),
        mailer: crate::wiring::mailer(&config)?,
        oidc: Arc::new(oidc),
        jobs,
        profiler,
        sync,
        notify: Some(dataport_web::NotifyState { notifier, gateway }),
        memory: Some(memory),
        options: WebOptions {
            max_body_bytes: config.settings.max_body_size.0,
            max_upload_bytes: config.settings.max_upload_size.0,
            max_json_rows: config.settings.max_json_rows,
            public_url: config.public_url_or(http_addr),
            flight_url: format!("{scheme}://{flight_addr}"),
            instance_name: config.settings.name.clone(),
            logo,
            sources: crate::wiring::source_summaries(&config),
            push_sources: dataport_web::PushSources::new(push_sources),
            metrics_allow: config.settings.metrics_allow.clone(),
            trusted_proxies: config.settings.trusted_proxies.clone(),
            mcp: crate::wiring::mcp_options(&config),
        },
    });
    let shutdown = {
        let cancel = cancel.clone();
        async move {
            tokio::select! {
                _ = wait_for_signal() => {}
                _ = cancel.cancelled() => {}
            }
            tracing::info!("shutting down: no new requests; running ones get the grace period");
            cancel.cancel();
        }
    };
    let http = dataport_web::serve(listener, app, shutdown, config.settings.shutdown_grace);
    tokio::pin!(http);
    let served = tokio::select! {
        r = &mut http => r.context("HTTP server failed"),
        r = &mut flight => {
            // Flight stops first on a normal shutdown (it has no grace period of its own
            // here); without a shutdown under way, stopping is a failure. Either way HTTP
            // gets its grace period.
            let stopping = cancel.is_cancelled();
            cancel.cancel();
            let http_result = tokio::time::timeout(config.settings.shutdown_grace, &mut http).await;
            match r {
                Ok(()) if stopping => match http_result {
                    Ok(r) => r.context("HTTP server failed"),
                    Err(_) => Ok(()),
                },
                Ok(()) => Err(anyhow::anyhow!("Flight SQL server stopped unexpectedly")),
                Err(e) => Err(e).context("Flight SQL server task failed"),
            }
        }
    };
    cancel.cancel();
    if !flight.is_finished() {
        match tokio::time::timeout(config.settings.shutdown_grace, &mut flight).await {
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Flight SQL server task failed while stopping")
            }
            Ok(Ok(())) => {}
            Err(_) => {
                tracing::warn!(
                    "Flight SQL streams still running after the grace period; closing them"
                );
                flight.abort();
            }
        }
    }
    let _ = refresher.await;
    let _ = pruner.await;
    let _ = bot.await;
    for q in queues {
        let _ = q.await;
    }
    for t in timers {
        let _ = t.await;
    }
    remove_if_exists(&addresses)?;
    served?;
    drop(engine);
    tracing::info!("stopped");
    Ok(())
}

fn remove_if_exists(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
