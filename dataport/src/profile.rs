//! `dataport profile`: table profiles from the command line, computed in this process on the
//! data dir (next to a running server, which shares the stored profiles through the state
//! store).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use dataport_catalog::{
    Catalog, CatalogOptions, CatalogTable, SnapshotCatalogProvider, TableAccess,
};
use dataport_engine::profiles::Profiler;
use dataport_state::StateStore;

use crate::admin::StoreArgs;
use dataport_laptop::term::{init_cli_logging, out, time};

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["table", "all", "export"]))]
pub(crate) struct ProfileArgs {
    /// The table to print, as SCHEMA.TABLE (profiled first if its data changed)
    table: Option<String>,
    /// Print the profile as JSON, as `GET /api/v1/catalog/{schema}/{table}/profile` serves it
    #[arg(long, requires = "table")]
    json: bool,
    /// Profile every table whose data changed since its last profile
    #[arg(long)]
    all: bool,
    /// Recompute TABLE's profile even if its data did not change
    #[arg(long, requires = "table")]
    force: bool,
    /// Write every table's profile to FILE in the `profiles.json` shape (`-`: standard output)
    #[arg(long, value_name = "FILE")]
    export: Option<PathBuf>,
}

pub(crate) fn profile(store: &StoreArgs, args: ProfileArgs) -> anyhow::Result<()> {
    let config = store.config()?;
    init_cli_logging(true);
    let state = Arc::new(
        StateStore::open(&config.settings.data_dir).context("cannot open the state store")?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let catalog = Catalog::open(
            CatalogOptions::new(&config.settings.data_dir),
            Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default()),
            crate::wiring::catalog_session_config(&config)?,
        )
        .await
        .context("cannot open the catalog")?;
        let snapshot = catalog.snapshot();
        let profiler = Profiler::new(state);
        // the command line reads the data dir directly: everything is visible
        let view = SnapshotCatalogProvider::new(
            Arc::clone(&snapshot),
            Arc::new(|_: &CatalogTable| TableAccess::Full),
        );
        if args.all {
            let run = profiler.refresh_all(&snapshot).await;
            for t in &run.computed {
                out(format!("profiled {t}"))?;
            }
            for (t, e) in &run.failed {
                out(format!("failed {t}: {e}"))?;
            }
            out(format!(
                "{} profiled, {} unchanged, {} failed",
                run.computed.len(),
                run.unchanged,
                run.failed.len()
            ))?;
            if !run.failed.is_empty() {
                anyhow::bail!("{} tables could not be profiled", run.failed.len());
            }
            return Ok(());
        }
        if let Some(path) = &args.export {
            let export = profiler.export(&view).await;
            let body = serde_json::to_string_pretty(&export).context("cannot encode the export")?;
            if path.as_os_str() == "-" {
                out(body)?;
            } else {
                dataport_common::fs::write_bytes_atomic(path, format!("{body}\n").as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!(
                    "wrote {} profiles to {}",
                    export.tables.len(),
                    path.display()
                );
            }
            return Ok(());
        }
        let Some(name) = &args.table else {
            return Ok(());
        };
        let (schema, table) = match name.split_once('.') {
            Some((s, t)) => (Some(s), t),
            None => (None, name.as_str()),
        };
        let t = view.resolve(schema, table).map_err(|e| {
            anyhow::anyhow!(
                "{e} (tables are named SCHEMA.TABLE; `dataport profile --export -` lists all)"
            )
        })?;
        if args.force {
            profiler.recompute(&snapshot, &t).await?;
        }
        let served = profiler.for_caller(&view, &t).await?;
        if args.json {
            out(serde_json::to_string_pretty(&served).context("cannot encode the profile")?)?;
        } else {
            let mut text =
                dataport_catalog::profile::render_text(&t.qualified_name(), &served.profile);
            text.push_str(&format!(
                "\nprofiled {} in {:.1} s (data version {}){}",
                time(served.computed_at),
                served.duration_ms as f64 / 1000.0,
                served.data_version,
                match (&served.stale, &served.error) {
                    (true, Some(e)) => format!("; STALE, the last recompute failed: {e}"),
                    (true, None) => "; STALE".to_string(),
                    _ => String::new(),
                }
            ));
            out(text)?;
        }
        Ok(())
    })
}
