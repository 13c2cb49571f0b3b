//! `dataport pull`: mirror the caller's manifest into a folder.
//!
//! Local layout:
//! - `<dir>/<schema>/<table>.parquet` (or a folder of partition files);
//! - `views.sql` and `analytics.duckdb`;
//! - `rules/<id>.md`: the caller's corporate-memory rule files (items they upvoted, and the pinned
//!   ones), named by item id only (`km_` + 12 hex digits), never by anything in the item. A file
//!   whose rule is no longer listed (a vote taken back) goes at the next full pull; other files in
//!   `rules/` are the analyst's and are left alone;
//! - `docs/`: what an assistant needs to work here (`README.md`: the caller's catalog and how to
//!   query it with DuckDB; `catalog.json`; `tables/<schema>.<table>.md` and
//!   `profiles/<schema>.<table>.json` for the pulled tables), rewritten by every complete pull
//!   where its content changed. A file pull wrote that the server no longer lists (a revoked or
//!   unsynced table) goes; other files in `docs/` are left alone;
//! - `.dataport/` with the record of what the last pull wrote (`state.json`: table files, rule
//!   files and doc files) and partial downloads (`parts/<sha256>-<place>.part`, named by the content they will
//!   hold, so a resumed download can never mix two versions).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use dataport_common::sync::DocFile;
use futures::StreamExt as _;
use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

use crate::api::{Api, Manifest, ManifestFile, RuleFile};
use crate::error::ClientError;
use crate::views::{DuckDb, ViewsOutcome};

const META_DIR: &str = ".dataport";
const STATE_FILE: &str = "state.json";
const VIEWS_FILE: &str = "views.sql";
const DATABASE_FILE: &str = "analytics.duckdb";
/// The folder of rule files, in the pull folder.
const RULES_DIR: &str = "rules";
/// The folder of the assistant's docs, in the pull folder.
const DOCS_DIR: &str = "docs";
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
    /// Rule files from the server now in `rules/` (corporate-memory items the caller upvoted,
    /// and the pinned ones).
    pub rules: usize,
    /// Rule files this pull wrote: new ones, and ones whose content changed.
    pub rules_written: usize,
    /// Rule files of earlier pulls this pull removed (no longer listed: a vote taken back).
    pub rules_removed: usize,
    /// Files from the server now in `docs/` (the catalog, and the pulled tables' pages and
    /// profiles).
    pub docs: usize,
    /// Doc files this pull wrote: new ones, and ones whose content changed.
    pub docs_written: usize,
    /// Doc files of earlier pulls this pull removed (no longer listed: a table revoked or no
    /// longer pulled).
    pub docs_removed: usize,
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
    /// The rule files pull wrote into `rules/`: item id → SHA-256 of their content.
    #[serde(default)]
    rules: BTreeMap<String, String>,
    /// The files pull wrote into `docs/`: path under `docs/` → SHA-256 of their content.
    #[serde(default)]
    docs: BTreeMap<String, String>,
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
/// #     memory: None,
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
        // Until the rules and docs are synced (after a complete pull), what the last pull
        // wrote.
        rules: old.rules.clone(),
        docs: old.docs.clone(),
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

    // The rule files, once the tables are complete. A server without them (older, or without
    // corporate memory) leaves `rules/` as it is.
    let mut rules = Synced::default();
    if let Some(listed) = api.rules().await? {
        let listed: Vec<Listed<'_>> = listed.rules.iter().map(Listed::rule).collect();
        rules = keep_owned(&dir, &state_path, &mut state, &RULES, &listed)?;
    }
    // The docs, after the tables they describe. An older server leaves `docs/` as it is.
    let mut docs = Synced::default();
    if let Some(listed) = api.docs(options.all).await? {
        let listed: Vec<Listed<'_>> = listed.files.iter().map(Listed::doc).collect();
        docs = keep_owned(&dir, &state_path, &mut state, &DOCS, &listed)?;
    }

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
        rules: state.rules.len(),
        rules_written: rules.written,
        rules_removed: rules.removed,
        docs: state.docs.len(),
        docs_written: docs.written,
        docs_removed: docs.removed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What [`sync_owned`] did.
#[derive(Debug, Default, PartialEq, Eq)]
struct Synced {
    /// The files pull now owns in the folder: key (a rule's id, a doc's path) → SHA-256 of
    /// their content.
    present: BTreeMap<String, String>,
    /// Files written: new ones, and ones whose content differed.
    written: usize,
    /// Files of earlier pulls removed because the server no longer lists them.
    removed: usize,
}

/// A folder of the pull folder whose files the server lists by name and content (`rules/`,
/// `docs/`), among files of the analyst's own that pull leaves alone.
struct OwnedFolder {
    /// Its name in the pull folder.
    name: &'static str,
    /// What its files are, for the log.
    what: &'static str,
    /// Where the file recorded as `key` goes, relative to the folder; `None` for a key that
    /// could name no safe file (it is never written nor removed).
    file_of: fn(&str) -> Option<String>,
    /// Its files in the pull record.
    record: fn(&mut LocalState) -> &mut BTreeMap<String, String>,
}

fn rule_file(id: &str) -> Option<String> {
    RuleFile::valid_id(id).then(|| format!("{id}.md"))
}

fn doc_file(path: &str) -> Option<String> {
    DocFile::valid_path(path).then(|| path.to_string())
}

fn rules_record(state: &mut LocalState) -> &mut BTreeMap<String, String> {
    &mut state.rules
}

fn docs_record(state: &mut LocalState) -> &mut BTreeMap<String, String> {
    &mut state.docs
}

/// `rules/<id>.md`: the caller's rule files.
const RULES: OwnedFolder = OwnedFolder {
    name: RULES_DIR,
    what: "rule file",
    file_of: rule_file,
    record: rules_record,
};

/// `docs/<path>`: the caller's catalog, table pages and profiles.
const DOCS: OwnedFolder = OwnedFolder {
    name: DOCS_DIR,
    what: "doc file",
    file_of: doc_file,
    record: docs_record,
};

/// A file the server lists for an [`OwnedFolder`].
struct Listed<'a> {
    /// What pull records it by: a rule's id, a doc's path.
    key: &'a str,
    /// SHA-256 of `content`, as the server sent it.
    sha256: &'a str,
    content: &'a str,
}

impl<'a> Listed<'a> {
    fn rule(r: &'a RuleFile) -> Self {
        Self {
            key: &r.id,
            sha256: &r.sha256,
            content: &r.content,
        }
    }

    fn doc(d: &'a DocFile) -> Self {
        Self {
            key: &d.path,
            sha256: &d.sha256,
            content: &d.content,
        }
    }
}

/// Brings `folder` in line with `listed` ([`sync_owned`]) and the pull record with it. The
/// files about to be written are claimed in the record first, so that a pull that dies halfway
/// still knows them as its own (and removes them once they are no longer listed).
fn keep_owned(
    dir: &Path,
    state_path: &Path,
    state: &mut LocalState,
    folder: &OwnedFolder,
    listed: &[Listed<'_>],
) -> Result<Synced, ClientError> {
    let before = (folder.record)(state).clone();
    let record = (folder.record)(state);
    for f in listed.iter().filter(|f| (folder.file_of)(f.key).is_some()) {
        record.entry(f.key.to_string()).or_default();
    }
    if *record != before {
        save_state(state_path, state)?;
    }
    let synced = sync_owned(dir, folder, &before, listed)?;
    let record = (folder.record)(state);
    if synced.present != *record {
        record.clone_from(&synced.present);
        save_state(state_path, state)?;
    }
    Ok(synced)
}

/// Brings `<dir>/rules/` in line with the server's list of rule files ([`sync_owned`]).
#[cfg(test)]
fn sync_rules(
    dir: &Path,
    old: &BTreeMap<String, String>,
    rules: &[RuleFile],
) -> Result<Synced, ClientError> {
    let listed: Vec<Listed<'_>> = rules.iter().map(Listed::rule).collect();
    sync_owned(dir, &RULES, old, &listed)
}

/// Brings `<dir>/<folder>/` in line with the server's list of its files.
///
/// Writes each listed file (atomically) whose local copy is missing or has other content, and
/// removes the files of `old` (what earlier pulls wrote: key → SHA-256) that are no longer
/// listed, with the folders that removing them left empty (the folder itself included). It
/// touches no other file. A file whose key names no safe file, or whose content does not match
/// its SHA-256 (a damaged answer), is skipped with a warning; a damaged file keeps the copy an
/// earlier pull wrote.
fn sync_owned(
    dir: &Path,
    folder: &OwnedFolder,
    old: &BTreeMap<String, String>,
    listed: &[Listed<'_>],
) -> Result<Synced, ClientError> {
    let root = dir.join(folder.name);
    let what = folder.what;
    let mut synced = Synced::default();
    let mut seen = BTreeSet::new();
    for f in listed {
        let Some(name) = (folder.file_of)(f.key) else {
            tracing::warn!(key = %f.key.escape_debug(), "skipping a {what} whose name is not a safe file name");
            continue;
        };
        if !seen.insert(f.key) {
            tracing::warn!(key = %f.key, "skipping a {what} listed twice");
            continue;
        }
        let sha256 = dataport_common::digest::sha256_hex(f.content.as_bytes());
        if !sha256.eq_ignore_ascii_case(f.sha256) {
            tracing::warn!(
                key = %f.key,
                expected = %f.sha256.escape_debug(),
                actual = %sha256,
                "skipping a damaged {what}: its content does not match its SHA-256"
            );
            if let Some(had) = old.get(f.key) {
                synced.present.insert(f.key.to_string(), had.clone());
            }
            continue;
        }
        let file = root.join(&name);
        let current = std::fs::read(&file)
            .ok()
            .map(|bytes| dataport_common::digest::sha256_hex(&bytes));
        if current.as_deref() != Some(sha256.as_str()) {
            dataport_common::fs::write_bytes_atomic(&file, f.content.as_bytes())?;
            synced.written += 1;
        }
        synced.present.insert(f.key.to_string(), sha256);
    }
    for key in old.keys() {
        if seen.contains(key.as_str()) {
            continue;
        }
        let Some(name) = (folder.file_of)(key) else {
            continue;
        };
        let file = root.join(name);
        match std::fs::remove_file(&file) {
            Ok(()) => {
                synced.removed += 1;
                // Fails, as it should, while anything is left in them.
                remove_empty_parents(dir, &file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ClientError::io(file, e)),
        }
    }
    Ok(synced)
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

    fn rule(id: &str, content: &str) -> RuleFile {
        RuleFile {
            id: id.to_string(),
            sha256: dataport_common::digest::sha256_hex(content.as_bytes()),
            content: content.to_string(),
        }
    }

    const A: &str = "km_0123456789ab";
    const B: &str = "km_00000000000b";
    const C: &str = "km_00000000000c";

    fn read(root: &Path, id: &str) -> String {
        std::fs::read_to_string(root.join(RULES_DIR).join(format!("{id}.md"))).unwrap()
    }

    #[test]
    fn rules_are_written_kept_rewritten_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let rules = root.join(RULES_DIR);

        // A first pull writes every rule.
        let first = sync_rules(
            root,
            &BTreeMap::new(),
            &[rule(A, "# a\n"), rule(B, "# b\n")],
        )
        .unwrap();
        assert_eq!((first.written, first.removed), (2, 0));
        assert_eq!(first.present.len(), 2);
        assert_eq!(first.present[A], rule(A, "# a\n").sha256);
        assert_eq!(read(root, A), "# a\n");
        assert_eq!(read(root, B), "# b\n");

        // The analyst's own file in rules/.
        std::fs::write(rules.join("my-notes.md"), "mine").unwrap();

        // Unchanged: not written again (its modification time stays).
        let a_file = rules.join(format!("{A}.md"));
        let old_time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(&a_file)
            .unwrap()
            .set_modified(old_time)
            .unwrap();
        // B changed, C is new.
        let second = sync_rules(
            root,
            &first.present,
            &[rule(A, "# a\n"), rule(B, "# b, edited\n"), rule(C, "# c\n")],
        )
        .unwrap();
        assert_eq!((second.written, second.removed), (2, 0));
        assert_eq!(
            std::fs::metadata(&a_file).unwrap().modified().unwrap(),
            old_time
        );
        assert_eq!(read(root, B), "# b, edited\n");
        assert_eq!(read(root, C), "# c\n");
        assert_eq!(second.present.len(), 3);

        // A file pull wrote that was edited or deleted locally comes back.
        std::fs::write(rules.join(format!("{C}.md")), "scribbled").unwrap();
        std::fs::remove_file(rules.join(format!("{B}.md"))).unwrap();
        let third = sync_rules(
            root,
            &second.present,
            &[rule(A, "# a\n"), rule(B, "# b, edited\n"), rule(C, "# c\n")],
        )
        .unwrap();
        assert_eq!((third.written, third.removed), (2, 0));
        assert_eq!(read(root, C), "# c\n");

        // Votes taken back: A and C go, the analyst's file stays.
        let fourth = sync_rules(root, &third.present, &[rule(B, "# b, edited\n")]).unwrap();
        assert_eq!((fourth.written, fourth.removed), (0, 2));
        assert!(!a_file.exists());
        assert!(!rules.join(format!("{C}.md")).exists());
        assert_eq!(fourth.present.keys().collect::<Vec<_>>(), [B]);
        assert_eq!(
            std::fs::read_to_string(rules.join("my-notes.md")).unwrap(),
            "mine"
        );

        // None left: the folder stays while the analyst's file is in it…
        let fifth = sync_rules(root, &fourth.present, &[]).unwrap();
        assert_eq!((fifth.written, fifth.removed), (0, 1));
        assert!(fifth.present.is_empty());
        assert!(rules.join("my-notes.md").exists());

        // …and goes once it is empty.
        let sixth = sync_rules(root, &BTreeMap::new(), &[rule(A, "# a\n")]).unwrap();
        std::fs::remove_file(rules.join("my-notes.md")).unwrap();
        let seventh = sync_rules(root, &sixth.present, &[]).unwrap();
        assert_eq!(seventh.removed, 1);
        assert!(!rules.exists());
    }

    #[test]
    fn no_rules_no_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let synced = sync_rules(tmp.path(), &BTreeMap::new(), &[]).unwrap();
        assert_eq!(synced, Synced::default());
        assert!(!tmp.path().join(RULES_DIR).exists());
        // An empty rules/ the analyst made is not pull's to remove.
        std::fs::create_dir(tmp.path().join(RULES_DIR)).unwrap();
        sync_rules(tmp.path(), &BTreeMap::new(), &[]).unwrap();
        assert!(tmp.path().join(RULES_DIR).is_dir());
    }

    #[test]
    fn rules_with_bad_ids_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join(RULES_DIR)).unwrap();
        std::fs::write(root.join(RULES_DIR).join("my-notes.md"), "mine").unwrap();
        let bad = [
            "../x",
            "km_ZZZ",
            "km_0123456789AB",
            "km_0123456789abc",
            "km_../../x12",
            "my-notes",
            "",
            "/tmp/x",
        ];
        let rules: Vec<RuleFile> = bad.iter().map(|id| rule(id, "evil")).collect();
        let synced = sync_rules(root, &BTreeMap::new(), &rules).unwrap();
        assert_eq!(synced, Synced::default());
        assert!(!root.join("x").exists() && !root.join("x.md").exists());
        assert_eq!(std::fs::read_dir(root.join(RULES_DIR)).unwrap().count(), 1);
        assert_eq!(
            std::fs::read_to_string(root.join(RULES_DIR).join("my-notes.md")).unwrap(),
            "mine"
        );

        // Nor does a bad id in the record remove anything.
        let old: BTreeMap<String, String> = [("my-notes".to_string(), String::new())].into();
        let synced = sync_rules(root, &old, &[]).unwrap();
        assert_eq!(synced.removed, 0);
        assert!(root.join(RULES_DIR).join("my-notes.md").exists());
    }

    #[test]
    fn damaged_rules_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut damaged = rule(A, "# a\n");
        damaged.content = "# a, truncated".to_string();
        let synced =
            sync_rules(root, &BTreeMap::new(), &[damaged.clone(), rule(B, "# b\n")]).unwrap();
        assert_eq!((synced.written, synced.removed), (1, 0));
        assert!(!root.join(RULES_DIR).join(format!("{A}.md")).exists());
        assert_eq!(synced.present.keys().collect::<Vec<_>>(), [B]);

        // A damaged answer for a rule an earlier pull wrote keeps that file.
        let first = sync_rules(root, &BTreeMap::new(), &[rule(A, "# a\n")]).unwrap();
        let again = sync_rules(root, &first.present, &[damaged]).unwrap();
        assert_eq!((again.written, again.removed), (0, 0));
        assert_eq!(read(root, A), "# a\n");
        assert_eq!(again.present, first.present);
    }

    fn doc(path: &str, content: &str) -> DocFile {
        DocFile::new(path, content)
    }

    fn sync_docs(
        root: &Path,
        old: &BTreeMap<String, String>,
        docs: &[DocFile],
    ) -> Result<Synced, ClientError> {
        let listed: Vec<Listed<'_>> = docs.iter().map(Listed::doc).collect();
        sync_owned(root, &DOCS, old, &listed)
    }

    fn read_doc(root: &Path, path: &str) -> String {
        std::fs::read_to_string(root.join(DOCS_DIR).join(path)).unwrap()
    }

    #[test]
    fn docs_are_written_kept_rewritten_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let docs = root.join(DOCS_DIR);
        let first = sync_docs(
            root,
            &BTreeMap::new(),
            &[
                doc("README.md", "# catalog\n"),
                doc("tables/s.a.md", "# s.a\n"),
                doc("tables/s.b.md", "# s.b\n"),
                doc("profiles/s.a.json", "{}\n"),
            ],
        )
        .unwrap();
        assert_eq!((first.written, first.removed), (4, 0));
        assert_eq!(read_doc(root, "tables/s.a.md"), "# s.a\n");
        std::fs::write(docs.join("my-notes.md"), "mine").unwrap();

        // Unchanged files are not written again (their modification time stays).
        let readme = docs.join("README.md");
        let old_time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::options()
            .write(true)
            .open(&readme)
            .unwrap()
            .set_modified(old_time)
            .unwrap();
        // s.b is no longer pulled (its page and the only profile go), s.a's page changed.
        let second = sync_docs(
            root,
            &first.present,
            &[
                doc("README.md", "# catalog\n"),
                doc("tables/s.a.md", "# s.a, profiled\n"),
            ],
        )
        .unwrap();
        assert_eq!((second.written, second.removed), (1, 2));
        assert_eq!(
            std::fs::metadata(&readme).unwrap().modified().unwrap(),
            old_time
        );
        assert_eq!(read_doc(root, "tables/s.a.md"), "# s.a, profiled\n");
        assert!(!docs.join("tables/s.b.md").exists());
        // The folder that emptied goes; the one still in use stays.
        assert!(!docs.join("profiles").exists());
        assert!(docs.join("tables").is_dir());
        assert_eq!(
            second.present.keys().collect::<Vec<_>>(),
            ["README.md", "tables/s.a.md"]
        );

        // Nothing listed: pull's files go, the analyst's file and so docs/ stay…
        let third = sync_docs(root, &second.present, &[]).unwrap();
        assert_eq!((third.written, third.removed), (0, 2));
        assert!(!docs.join("tables").exists());
        assert_eq!(read_doc(root, "my-notes.md"), "mine");
        // …until it is empty.
        let fourth = sync_docs(root, &BTreeMap::new(), &[doc("README.md", "x")]).unwrap();
        std::fs::remove_file(docs.join("my-notes.md")).unwrap();
        sync_docs(root, &fourth.present, &[]).unwrap();
        assert!(!docs.exists());
    }

    #[test]
    fn docs_outside_the_folder_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("views.sql"), "mine").unwrap();
        let bad = [
            "../views.sql",
            "/tmp/x.md",
            "tables/../../views.sql",
            ".hidden",
            "tables/.x.md",
            "a b.md",
            "",
        ];
        let docs: Vec<DocFile> = bad.iter().map(|p| doc(p, "evil")).collect();
        let synced = sync_docs(root, &BTreeMap::new(), &docs).unwrap();
        assert_eq!(synced, Synced::default());
        assert_eq!(
            std::fs::read_to_string(root.join("views.sql")).unwrap(),
            "mine"
        );
        assert!(!root.join(DOCS_DIR).exists());
        // Nor does a bad path in the record remove anything.
        let old: BTreeMap<String, String> = [("../views.sql".to_string(), String::new())].into();
        assert_eq!(sync_docs(root, &old, &[]).unwrap().removed, 0);
        assert!(root.join("views.sql").exists());

        // A damaged doc is skipped, and keeps what an earlier pull wrote.
        let first = sync_docs(root, &BTreeMap::new(), &[doc("README.md", "# a\n")]).unwrap();
        let mut damaged = doc("README.md", "# a\n");
        damaged.content = "# a, truncated".into();
        let again = sync_docs(root, &first.present, &[damaged]).unwrap();
        assert_eq!((again.written, again.removed), (0, 0));
        assert_eq!(read_doc(root, "README.md"), "# a\n");
        assert_eq!(again.present, first.present);
    }

    #[test]
    fn claimed_docs_are_recorded_before_they_are_written() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let state_path = root.join("state.json");
        let mut state = LocalState::default();
        let files = [doc("README.md", "# a\n"), doc("../x", "evil")];
        let listed: Vec<Listed<'_>> = files.iter().map(Listed::doc).collect();
        let synced = keep_owned(root, &state_path, &mut state, &DOCS, &listed).unwrap();
        assert_eq!(synced.written, 1);
        assert_eq!(state.docs, synced.present);
        assert_eq!(load_state(&state_path).docs, synced.present);
        assert!(state.rules.is_empty());
    }

    #[test]
    fn the_record_of_rules_defaults_to_none() {
        let state: LocalState = serde_json::from_str(r#"{"server": "s", "user": "u"}"#).unwrap();
        assert!(state.rules.is_empty());
        assert!(state.docs.is_empty());
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
