//! Keeping the catalog fresh: file system events (debounced) plus a periodic rescan.

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::names::is_ignored;

/// Quiet time after the last event before a refresh runs, so a burst of writes costs one.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Start the background refresher. It stops when `cancel` fires.
pub fn spawn_refresher(catalog: Catalog, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let watcher = if catalog.options().watch {
            start_watcher(&catalog, tx)
        } else {
            None
        };
        let interval = catalog.options().refresh_interval;
        let mut ticker = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(()) = rx.recv() => {
                    // Let the burst settle.
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(DEBOUNCE) => break,
                            Some(()) = rx.recv() => continue,
                        }
                    }
                    run(&catalog, "file event").await;
                }
                _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending::<()>().await } } => {
                    run(&catalog, "interval").await;
                }
            }
        }
        drop(watcher);
    })
}

async fn run(catalog: &Catalog, trigger: &'static str) {
    match catalog.refresh().await {
        Ok(report) => {
            if !report.added.is_empty() || !report.changed.is_empty() || !report.removed.is_empty()
            {
                tracing::info!(
                    trigger,
                    version = report.snapshot_version,
                    added = ?report.added,
                    changed = ?report.changed,
                    removed = ?report.removed,
                    "catalog refreshed"
                );
            }
        }
        Err(e) => tracing::warn!(trigger, error = %e, "catalog refresh failed"),
    }
}

fn start_watcher(catalog: &Catalog, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let data_dir = catalog.data_dir().to_path_buf();
    let roots = [data_dir.join("parquet"), data_dir.join("docs")];
    let base = data_dir.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| relevant(&base, p)) {
            // A full channel already means "refresh pending".
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "file watching unavailable; relying on the periodic rescan");
            return None;
        }
    };
    for root in roots {
        if let Err(e) = std::fs::create_dir_all(&root) {
            tracing::warn!(path = %root.display(), error = %e, "cannot create folder to watch");
            continue;
        }
        if let Err(e) = watcher.watch(&root, RecursiveMode::Recursive) {
            tracing::warn!(path = %root.display(), error = %e, "cannot watch folder; relying on the periodic rescan");
        }
    }
    Some(watcher)
}

/// Events on temporary files (dot-files, `_` files, `*.tmp`) do not trigger a refresh.
fn relevant(base: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(base).unwrap_or(path);
    !rel.components()
        .any(|c| c.as_os_str().to_str().is_some_and(is_ignored))
}
