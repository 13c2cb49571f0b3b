//! `dataport pull`: mirror the caller's manifest into a folder.
//!
//! Local layout: `<dir>/<schema>/<table>.parquet` (or a folder of partition files), `views.sql`,
//! `analytics.duckdb`, and `.dataport/` with the record of what the last pull wrote
//! (`state.json`) and partial downloads (`parts/<sha256>-<place>.part`, named by the content they
//! will hold, so a resumed download can never mix two versions).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use futures::StreamExt as _;
use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

use crate::api::{Api, Manifest, ManifestFile};
use crate::error::ClientError;
use crate::views::{DuckDb, ViewsOutcome};

const META_DIR: &str = ".dataport";
const STATE_FILE: &str = "state.json";
const VIEWS_FILE: &str = "views.sql";
const DATABASE_FILE: &str = "analytics.duckdb";
/// Attempts per file: network errors resume, a damaged download starts over.
const ATTEMPTS: usize = 3;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub dir: PathBuf,
    /// Every readable table, ignoring the sync settings.
    pub all: bool,
    /// Downloads at a time.
    pub jobs: usize,
    /// Re-hash every local file instead of trusting unchanged size and modification time.
    pub verify: bool,
    /// Bytes per second for all downloads together.
    pub limit_rate: Option<u64>,
    pub duckdb: DuckDb,
}

/// Progress callbacks (the command line draws a bar from them).
pub trait PullProgress: Send + Sync {
    /// `files` files of `bytes` bytes will be downloaded.
    fn planned(&self, _files: usize, _bytes: u64) {}
    /// Bytes received (or found in a partial file being resumed).
    fn advanced(&self, _bytes: u64) {}
    fn finished_file(&self, _local_path: &str) {}
}

impl PullProgress for () {}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub server: String,
    pub user: String,
    pub dir: PathBuf,
    pub snapshot_version: u64,
    pub tables: usize,
    pub files: usize,
    pub downloaded: usize,
    pub downloaded_bytes: u64,
    /// Bytes that were already in partial files and were not fetched again.
    pub resumed_bytes: u64,
    pub unchanged: usize,
    /// Local files that failed their checksum and were fetched again.
    pub repaired: usize,
    pub removed: usize,
    pub removed_tables: Vec<String>,
    pub views: ViewsOutcome,
    pub seconds: f64,
}

/// `.dataport/state.json`: what the last pull put where.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LocalState {
    #[serde(default)]
    server: String,
    #[serde(default)]
    user: String,
    /// By local path.
    #[serde(default)]
    files: BTreeMap<String, LocalFile>,
    /// `(schema, table)` of every view the last pull created.
    #[serde(default)]
    tables: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct LocalFile {
    sha256: String,
    size: u64,
    mtime_ns: i128,
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

/// A relative path of plain names, not inside `.dataport`, ending in `.parquet`.
fn is_safe_local_path(path: &str) -> bool {
    dataport_common::fs::is_plain_relative(path)
        && path.ends_with(".parquet")
        && path.split('/').all(|part| !part.starts_with('.'))
}

/// Mirrors the caller's manifest into `options.dir`, then writes (and applies) the views.
///
/// ```
/// use dataport_client::{Api, DuckDb, PullOptions, pull};
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
/// # Accounts::new(Arc::clone(&store)).add_user("ana", "Correct-Horse-7", &[DATAREAD.into()])?;
/// # let app = dataport_web::router(dataport_web::AppState {
/// #     auth: Authenticator::new(Arc::clone(&store), Default::default())?,
/// #     accounts: Accounts::new(Arc::clone(&store)),
/// #     mailer: dataport_mail::Mailer::new(&Default::default())?,
/// #     oidc: Arc::new(dataport_auth::oidc::OidcClient::new(&[], &|_| None, Default::default())?),
/// #     jobs: Scheduler::new(Arc::clone(&store), Vec::new())?,
/// #     profiler: Arc::new(Profiler::new(Arc::clone(&store))),
/// #     sync: Arc::new(SyncFiles::new(Arc::clone(&store), data.path())),
/// #     engine,
/// #     notify: None,
/// #     options: Default::default(),
/// # });
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let server = format!("http://{}", listener.local_addr()?);
/// # tokio::spawn(dataport_web::serve(listener, app, std::future::pending(), Default::default()));
/// // `server` is a Dataport server whose one table, `sales.orders`, `ana` may read.
/// let api = Api::new(&server, None)?;
/// let session = api.login("ana", "Correct-Horse-7").await?;
/// let api = api.with_token(session.token);
///
/// let laptop = tempfile::tempdir()?;
/// let options = PullOptions {
///     dir: laptop.path().to_path_buf(),
///     all: true,
///     jobs: 4,
///     verify: false,
///     limit_rate: None,
///     duckdb: DuckDb::Off, // only write views.sql
/// };
/// let report = pull(&api, &session.user, &options, &()).await?;
/// assert_eq!((report.tables, report.downloaded), (1, 1));
/// assert!(laptop.path().join("sales/orders.parquet").is_file());
/// assert!(std::fs::read_to_string(laptop.path().join("views.sql"))?.contains("orders"));
///
/// // Nothing changed on the server: the next pull downloads nothing.
/// let again = pull(&api, &session.user, &options, &()).await?;
/// assert_eq!((again.downloaded, again.unchanged), (0, 1));
/// # Ok(())
/// # }
/// ```
pub async fn pull(
    api: &Api,
    user: &str,
    options: &PullOptions,
    progress: &dyn PullProgress,
) -> Result<PullReport, ClientError> {
    let started = Instant::now();
    let dir = &options.dir;
    std::fs::create_dir_all(dir.join(META_DIR).join("parts"))
        .map_err(|e| ClientError::io(dir.join(META_DIR), e))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| ClientError::io(dir.clone(), e))?;
    // One pull per folder at a time (a cron pull and a manual one); the OS drops the lock
    // when a pull dies.
    let lock_path = dir.join(META_DIR).join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ClientError::io(&lock_path, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(ClientError::Input {
                message: format!(
                    "another pull into {} is running; wait for it to finish",
                    dir.display()
                ),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(ClientError::io(&lock_path, e)),
    }
    let manifest = api.manifest(options.all).await?;
    check_manifest(&manifest)?;
    let state_path = dir.join(META_DIR).join(STATE_FILE);
    let old = load_state(&state_path);

    // What is already here, by content.
    let mut state = LocalState {
        server: api.server(),
        user: user.to_string(),
        files: BTreeMap::new(),
        tables: manifest
            .tables
            .iter()
            .map(|t| (t.schema.clone(), t.table.clone()))
            .collect(),
    };
    let mut wanted: Vec<&ManifestFile> = Vec::new();
    let mut unchanged = 0;
    let mut repaired = 0;
    for f in manifest.tables.iter().flat_map(|t| &t.files) {
        match local_status(&dir, f, old.files.get(&f.local_path), options.verify).await? {
            Local::Same(record) => {
                unchanged += 1;
                state.files.insert(f.local_path.clone(), record);
            }
            Local::Missing => wanted.push(f),
            Local::Damaged => {
                repaired += 1;
                wanted.push(f);
            }
        }
    }
    progress.planned(wanted.len(), wanted.iter().map(|f| f.size).sum());

    let limiter = options.limit_rate.map(RateLimit::new);
    let root: &Path = &dir;
    let results: Vec<(&ManifestFile, Result<Fetched, ClientError>)> =
        futures::stream::iter(wanted.iter().map(|f| {
            let limiter = limiter.as_ref();
            async move { (*f, fetch(api, root, f, limiter, progress).await) }
        }))
        .buffer_unordered(options.jobs.max(1))
        .collect()
        .await;
    let mut downloaded = 0;
    let mut downloaded_bytes = 0;
    let mut resumed_bytes = 0;
    let mut failures = Vec::new();
    for (f, r) in results {
        match r {
            Ok(fetched) => {
                downloaded += 1;
                downloaded_bytes += fetched.received;
                resumed_bytes += fetched.resumed;
                state.files.insert(f.local_path.clone(), fetched.record);
            }
            Err(e) => {
                tracing::warn!(file = %f.local_path, error = %e, "download failed");
                failures.push(format!("{}: {e}", f.local_path));
            }
        }
    }
    if !failures.is_empty() {
        // Keep what arrived, and everything the old record still owns, for the next attempt.
        for (path, record) in old.files {
            state.files.entry(path).or_insert(record);
        }
        state.tables = old.tables;
        save_state(&state_path, &state)?;
        return Err(ClientError::Downloads {
            count: failures.len(),
            total: wanted.len(),
            first: failures.swap_remove(0),
        });
    }

    // Files of the last pull that are no longer listed (revoked, dropped, re-partitioned).
    let mut removed = 0;
    for path in old.files.keys() {
        if state.files.contains_key(path) || !is_safe_local_path(path) {
            continue;
        }
        let file = dir.join(path);
        match std::fs::remove_file(&file) {
            Ok(()) => {
                removed += 1;
                remove_empty_parents(&dir, &file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ClientError::io(file, e)),
        }
    }
    sweep_parts(&dir, &manifest);
    let kept: BTreeSet<&(String, String)> = state.tables.iter().collect();
    let dropped: Vec<(String, String)> = old
        .tables
        .iter()
        .filter(|t| !kept.contains(t))
        .cloned()
        .collect();
    save_state(&state_path, &state)?;

    let header = format!(
        "DuckDB views over the tables {user} pulled from {} (snapshot {}, {}).\n\
         Written by `dataport pull`; the next pull rewrites it. Run it with: duckdb {DATABASE_FILE} < {VIEWS_FILE}",
        api.server(),
        manifest.snapshot_version,
        manifest.generated_at
    );
    let sql = crate::views::views_sql(&dir, &manifest, &dropped, &header);
    let script = dir.join(VIEWS_FILE);
    dataport_common::fs::write_bytes_atomic(&script, sql.as_bytes())?;
    let views = crate::views::apply(&options.duckdb, &dir.join(DATABASE_FILE), &script);

    Ok(PullReport {
        server: api.server(),
        user: user.to_string(),
        dir: dir.clone(),
        snapshot_version: manifest.snapshot_version,
        tables: manifest.tables.len(),
        files: state.files.len(),
        downloaded,
        downloaded_bytes,
        resumed_bytes,
        unchanged,
        repaired,
        removed,
        removed_tables: dropped.iter().map(|(s, t)| format!("{s}.{t}")).collect(),
        views,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Refuses manifests that would write outside the folder or twice to one file.
fn check_manifest(manifest: &Manifest) -> Result<(), ClientError> {
    let mut seen = BTreeSet::new();
    for t in &manifest.tables {
        for f in &t.files {
            let bad = |why: &str| ClientError::BadManifest {
                message: format!("{} of {}: {why}", f.local_path, t.qualified_name()),
            };
            if !is_safe_local_path(&f.local_path) {
                return Err(bad("not a plain relative path to a .parquet file"));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("no SHA-256 digest"));
            }
            if !seen.insert(f.local_path.as_str()) {
                return Err(bad("listed twice"));
            }
        }
    }
    Ok(())
}

fn load_state(path: &Path) -> LocalState {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable pull record; local files will be re-checked");
            LocalState::default()
        }),
        Err(_) => LocalState::default(),
    }
}

fn save_state(path: &Path, state: &LocalState) -> Result<(), ClientError> {
    let body = serde_json::to_vec_pretty(state).map_err(|e| ClientError::Input {
        message: format!("cannot encode the pull record: {e}"),
    })?;
    dataport_common::fs::write_bytes_atomic(path, &body)?;
    Ok(())
}

enum Local {
    Same(LocalFile),
    Missing,
    /// There, with the right size, but not the listed content.
    Damaged,
}

/// Whether the local copy of `f` is already right: by the record of the last pull when size
/// and modification time still match it (unless `verify`), else by hashing it.
async fn local_status(
    dir: &Path,
    f: &ManifestFile,
    record: Option<&LocalFile>,
    verify: bool,
) -> Result<Local, ClientError> {
    let file = dir.join(&f.local_path);
    let meta = match std::fs::metadata(&file) {
        Ok(m) if m.is_file() => m,
        _ => return Ok(Local::Missing),
    };
    let now = LocalFile {
        sha256: f.sha256.clone(),
        size: meta.len(),
        mtime_ns: mtime_ns(&meta),
    };
    if !verify && record == Some(&now) {
        return Ok(Local::Same(now));
    }
    if meta.len() != f.size {
        return Ok(if record.is_some() {
            Local::Damaged
        } else {
            Local::Missing
        });
    }
    let path = file.clone();
    let sha = tokio::task::spawn_blocking(move || dataport_common::digest::sha256_file(&path))
        .await
        .map_err(|e| ClientError::Input {
            message: format!("hashing task failed: {e}"),
        })?
        .map_err(|e| ClientError::io(&file, e))?;
    Ok(if sha == f.sha256 {
        Local::Same(now)
    } else {
        Local::Damaged
    })
}

struct Fetched {
    record: LocalFile,
    received: u64,
    resumed: u64,
}

/// Downloads `f` into its part file (resuming it), verifies it and moves it into place.
async fn fetch(
    api: &Api,
    dir: &Path,
    f: &ManifestFile,
    limiter: Option<&RateLimit>,
    progress: &dyn PullProgress,
) -> Result<Fetched, ClientError> {
    let part = dir.join(META_DIR).join("parts").join(part_name(f));
    let mut received = 0;
    let mut resumed = 0;
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        match fetch_once(api, &part, f, limiter, progress).await {
            Ok((got, had)) => {
                received += got;
                resumed += had;
                last = None;
                break;
            }
            Err(e @ (ClientError::Http { .. } | ClientError::Checksum { .. })) => {
                tracing::debug!(file = %f.local_path, attempt, error = %e, "retrying");
                if matches!(e, ClientError::Checksum { .. }) {
                    let _ = std::fs::remove_file(&part);
                }
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(e) = last {
        return Err(e);
    }
    let dest = dir.join(&f.local_path);
    dataport_common::fs::commit_file(&part, &dest)?;
    let meta = std::fs::metadata(&dest).map_err(|e| ClientError::io(&dest, e))?;
    progress.finished_file(&f.local_path);
    Ok(Fetched {
        record: LocalFile {
            sha256: f.sha256.clone(),
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
        },
        received,
        resumed,
    })
}

/// One attempt: returns (bytes received, bytes resumed from the part file).
async fn fetch_once(
    api: &Api,
    part: &Path,
    f: &ManifestFile,
    limiter: Option<&RateLimit>,
    progress: &dyn PullProgress,
) -> Result<(u64, u64), ClientError> {
    let mut have = std::fs::metadata(part).map_or(0, |m| m.len());
    if have > f.size {
        have = 0;
    }
    // The digest of what is already there, continued with what arrives.
    let mut hasher = sha2::Sha256::new();
    if have > 0 {
        let path = part.to_path_buf();
        let (h, n) = tokio::task::spawn_blocking(move || hash_prefix(&path, have))
            .await
            .map_err(|e| ClientError::Input {
                message: format!("hashing task failed: {e}"),
            })?
            .map_err(|e| ClientError::io(part, e))?;
        hasher = h;
        have = n;
    }
    let mut resumed = have;
    let mut received = 0;
    if have < f.size {
        let response = api.download(&f.path, have, &f.sha256).await?;
        let etag = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_string());
        if etag.as_deref().is_some_and(|e| e != f.sha256) {
            let _ = std::fs::remove_file(part);
            return Err(ClientError::Changed {
                path: f.local_path.clone(),
            });
        }
        let append = response.status() == StatusCode::PARTIAL_CONTENT && have > 0;
        if !append {
            hasher = sha2::Sha256::new();
            resumed = 0;
        } else {
            progress.advanced(have);
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .await
            .map_err(|e| ClientError::io(part, e))?;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| ClientError::Http {
                url: format!("{} ({})", api.server(), f.path),
                source,
            })?;
            file.write_all(&chunk)
                .await
                .map_err(|e| ClientError::io(part, e))?;
            hasher.update(&chunk);
            received += chunk.len() as u64;
            progress.advanced(chunk.len() as u64);
            if let Some(l) = limiter {
                l.take(chunk.len() as u64).await;
            }
        }
        file.sync_all()
            .await
            .map_err(|e| ClientError::io(part, e))?;
    } else {
        progress.advanced(have);
    }
    let actual = hex::encode(hasher.finalize());
    let size = std::fs::metadata(part).map_or(0, |m| m.len());
    if actual != f.sha256 || size != f.size {
        return Err(ClientError::Checksum {
            path: f.local_path.clone(),
            expected: f.sha256.clone(),
            actual,
        });
    }
    Ok((received, resumed))
}

/// The digest state after the first `len` bytes of `path`, and how many there were.
fn hash_prefix(path: &Path, len: u64) -> std::io::Result<(sha2::Sha256, u64)> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?.take(len);
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = file.read(&mut buf)?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hasher, n))
}

/// The partial download of `f`: named by the content it will hold (so a resume never mixes two
/// versions) and by where it goes (two files with equal content download separately).
fn part_name(f: &ManifestFile) -> String {
    let place = hex::encode(sha2::Sha256::digest(f.local_path.as_bytes()));
    format!("{}-{}.part", f.sha256, &place[..16])
}

/// Removes part files no listed file will continue.
fn sweep_parts(dir: &Path, manifest: &Manifest) {
    let keep: BTreeSet<String> = manifest
        .tables
        .iter()
        .flat_map(|t| &t.files)
        .map(part_name)
        .collect();
    let parts = dir.join(META_DIR).join("parts");
    for entry in std::fs::read_dir(&parts).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes `file`'s parent folders up to (not including) `root` while they are empty.
fn remove_empty_parents(root: &Path, file: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// A shared bandwidth cap: each caller waits until the bytes taken so far fit the rate.
struct RateLimit {
    bytes_per_sec: u64,
    start: Instant,
    taken: Mutex<u64>,
}

impl RateLimit {
    fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1),
            start: Instant::now(),
            taken: Mutex::new(0),
        }
    }

    async fn take(&self, n: u64) {
        let due = {
            let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
            *taken += n;
            std::time::Duration::from_secs_f64(*taken as f64 / self.bytes_per_sec as f64)
        };
        let elapsed = self.start.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_stay_inside_the_folder() {
        assert!(is_safe_local_path("tpch/nation.parquet"));
        assert!(is_safe_local_path("s/t/k=1/part-0.parquet"));
        for bad in [
            "../x.parquet",
            "/etc/x.parquet",
            "s/../../x.parquet",
            ".dataport/state.parquet",
            "s/./t.parquet",
            "s//t.parquet",
            "views.sql",
            "s\\t.parquet",
            "",
        ] {
            assert!(!is_safe_local_path(bad), "{bad}");
        }
    }

    #[test]
    fn empty_parents_go_up_to_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let file = root.join("s/t/k=1/a.parquet");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(root.join("s/keep.parquet"), b"x").unwrap();
        remove_empty_parents(root, &file);
        assert!(!root.join("s/t").exists());
        assert!(root.join("s/keep.parquet").exists());
    }
}
