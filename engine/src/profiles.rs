//! Table profiles as the server keeps them: computed with [`dataport_catalog::profile`],
//! stored in the state store with the data version they describe, recomputed only when the
//! table changed, kept (marked stale) when recomputing fails, and for a caller with a
//! restricted grant computed on request over what they may see (cached per grant and data
//! version).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dataport_catalog::profile::{
    ProfileContext, ProfileOptions, RelatedTable, TableProfile, profile_table,
};
use dataport_catalog::{
    CatalogSnapshot, CatalogTable, ResolvedForeignKey, SnapshotCatalogProvider, TableAccess,
};
use dataport_common::{ErrorKind, HasKind};
use dataport_state::{StateStore, StoredProfile};
use serde::Serialize;

/// The `version` of the `profiles.json` export (the seed's format).
pub const EXPORT_VERSION: &str = "1.0";

/// Restricted profiles kept in memory.
const RESTRICTED_CACHE: usize = 256;

/// Why a profile could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profiling {table} failed: {message}")]
    Failed { table: String, message: String },
    #[error(transparent)]
    State(#[from] dataport_state::StateError),
}

impl HasKind for ProfileError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Failed { .. } => ErrorKind::Internal,
            Self::State(e) => e.kind(),
        }
    }
}

/// A profile as served: the profile and how current it is.
#[derive(Debug, Clone, Serialize)]
pub struct ServedProfile {
    pub schema: String,
    pub table: String,
    pub data_version: String,
    /// Seconds since the epoch.
    pub computed_at: i64,
    /// How long computing it took.
    pub duration_ms: u64,
    /// It describes an older version of the table (recomputing failed).
    pub stale: bool,
    pub error: Option<String>,
    /// Computed for the caller's restricted view of the table.
    pub restricted: bool,
    pub profile: TableProfile,
}

/// A profile in a few figures, for catalog listings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileSummary {
    /// Seconds since the epoch.
    pub computed_at: i64,
    pub stale: bool,
    pub row_count: u64,
    pub column_count: u64,
    pub avg_completeness: f64,
    pub missing_cells_pct: f64,
    pub duplicate_rows: u64,
    /// How many alerts of each type the table's columns raise.
    pub alerts: std::collections::BTreeMap<String, u64>,
}

impl ProfileSummary {
    fn of(p: &ServedProfile) -> Self {
        let mut alerts = std::collections::BTreeMap::new();
        for a in &p.profile.alerts {
            *alerts.entry(a.kind.clone()).or_insert(0) += 1;
        }
        Self {
            computed_at: p.computed_at,
            stale: p.stale,
            row_count: p.profile.row_count,
            column_count: p.profile.column_count,
            avg_completeness: p.profile.avg_completeness,
            missing_cells_pct: p.profile.missing_cells_pct,
            duplicate_rows: p.profile.duplicate_rows,
            alerts,
        }
    }
}

/// Every profile a caller may see, in the seed's `profiles.json` shape.
#[derive(Debug, Clone, Serialize)]
pub struct ProfilesExport {
    /// RFC 3339, UTC.
    pub generated_at: String,
    pub version: &'static str,
    /// By qualified table name (`schema.table`).
    pub tables: std::collections::BTreeMap<String, TableProfile>,
}

/// What a profiling run did.
#[derive(Debug, Clone, Default)]
pub struct ProfileRun {
    pub computed: Vec<String>,
    pub unchanged: usize,
    pub failed: Vec<(String, String)>,
}

/// Computes, stores and serves table profiles.
pub struct Profiler {
    state: Arc<StateStore>,
    options: ProfileOptions,
    restricted: Mutex<HashMap<String, ServedProfile>>,
    /// One computation at a time: profiling reads whole tables.
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Profiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profiler").finish_non_exhaustive()
    }
}

/// A fingerprint of what a profile depends on: the table's files (path, size, mtime) and its
/// description, primary key and strategy. FNV-1a, stable across builds.
pub fn data_version(t: &CatalogTable) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for (path, size, modified) in t.files() {
        feed(path.to_string_lossy().as_bytes());
        feed(&size.to_le_bytes());
        let nanos = modified
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        feed(&nanos.to_le_bytes());
    }
    feed(t.description().unwrap_or("").as_bytes());
    feed(t.primary_key().join(",").as_bytes());
    if let Some(s) = t.meta().and_then(|m| m.sync_strategy) {
        feed(format!("{s:?}").as_bytes());
    }
    format!("{h:016x}")
}

impl Profiler {
    pub fn new(state: Arc<StateStore>) -> Self {
        Self {
            state,
            options: ProfileOptions::default(),
            restricted: Mutex::new(HashMap::new()),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The table's full profile: the stored one when it describes the current data, else
    /// computed now and stored.
    pub async fn full(
        &self,
        snapshot: &CatalogSnapshot,
        table: &Arc<CatalogTable>,
    ) -> Result<ServedProfile, ProfileError> {
        let version = data_version(table);
        if let Some(p) = self.stored(table)?
            && p.data_version == version
        {
            return Ok(p);
        }
        let computed = self.compute_and_store(snapshot, table, &version).await;
        match (computed, self.stored(table)?) {
            // a failure keeps the last profile, marked stale
            (_, Some(p)) => Ok(p),
            (Err(e), None) => Err(e),
            (Ok(()), None) => Err(ProfileError::Failed {
                table: table.qualified_name(),
                message: "the profile was not stored".into(),
            }),
        }
    }

    /// Computes the table's full profile now even if the stored one is current (after a
    /// change of the profiler, or to time it), and stores it.
    pub async fn recompute(
        &self,
        snapshot: &CatalogSnapshot,
        table: &Arc<CatalogTable>,
    ) -> Result<(), ProfileError> {
        self.compute_and_store(snapshot, table, &data_version(table))
            .await
    }

    /// The profile `view`'s caller may see: the full one, or one computed over their
    /// restricted view of the table (row filter applied, hidden columns absent).
    pub async fn for_caller(
        &self,
        view: &SnapshotCatalogProvider,
        table: &Arc<CatalogTable>,
    ) -> Result<ServedProfile, ProfileError> {
        let mut served = self.unpersonalised(view, table).await?;
        served.profile.related_tables = related_tables(view.snapshot(), table, &|owner, fk| {
            view.resolve(Some(owner.schema_name()), owner.name())
                .is_ok()
                && view.foreign_key_visible(owner, fk)
        });
        served.profile.last_sync = self.last_sync(table);
        Ok(served)
    }

    /// The table's summary for `view`'s caller, if there is a profile to summarise: the
    /// stored one, or for a restricted grant one already computed for it (listings never
    /// compute).
    pub fn summary(
        &self,
        view: &SnapshotCatalogProvider,
        table: &CatalogTable,
    ) -> Option<ProfileSummary> {
        let access = view.access(table);
        let served = match access {
            TableAccess::Full => self.stored(table).ok().flatten()?,
            TableAccess::Restricted { .. } => self.cached(&restricted_key(table, &access))?,
            TableAccess::Denied => return None,
        };
        Some(ProfileSummary::of(&served))
    }

    /// Every profile `view`'s caller may see, computing those that are missing or out of date.
    /// A table whose profile can't be produced is left out (and logged).
    pub async fn export(&self, view: &SnapshotCatalogProvider) -> ProfilesExport {
        let mut tables = std::collections::BTreeMap::new();
        for table in view.tables() {
            match self.for_caller(view, table).await {
                Ok(p) => {
                    tables.insert(table.qualified_name(), p.profile);
                }
                Err(e) => {
                    tracing::warn!(table = %table.qualified_name(), error = %e, "profile left out of the export");
                }
            }
        }
        ProfilesExport {
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            version: EXPORT_VERSION,
            tables,
        }
    }

    /// The profile for the caller's rows and columns, before the catalog facts that depend on
    /// what else the caller may see (related tables) and the sync state are filled in.
    async fn unpersonalised(
        &self,
        view: &SnapshotCatalogProvider,
        table: &Arc<CatalogTable>,
    ) -> Result<ServedProfile, ProfileError> {
        let access = view.access(table);
        let TableAccess::Restricted { .. } = &access else {
            return self.full(view.snapshot(), table).await;
        };
        let version = data_version(table);
        let key = restricted_key(table, &access);
        if let Some(p) = self.cached(&key) {
            return Ok(p);
        }
        let provider = view.provider_for(table).map_err(|e| ProfileError::Failed {
            table: table.qualified_name(),
            message: e.to_string(),
        })?;
        let mut context = self.context_of(view.snapshot(), table);
        context.primary_key = view.primary_key(table);
        context.file_size_bytes = 0;
        // filled in per caller by `for_caller`
        context.related_tables.clear();
        let _one = self.running.lock().await;
        let started = Instant::now();
        let profile = profile_table(provider, &context, &self.options)
            .await
            .map_err(|e| ProfileError::Failed {
                table: table.qualified_name(),
                message: e.to_string(),
            })?;
        let served = ServedProfile {
            schema: table.schema_name().to_string(),
            table: table.name().to_string(),
            data_version: version,
            computed_at: chrono::Utc::now().timestamp(),
            duration_ms: started.elapsed().as_millis() as u64,
            stale: false,
            error: None,
            restricted: true,
            profile,
        };
        let mut cache = self.restricted.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= RESTRICTED_CACHE {
            cache.clear();
        }
        cache.insert(key, served.clone());
        Ok(served)
    }

    fn cached(&self, key: &str) -> Option<ServedProfile> {
        let cache = self.restricted.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).cloned()
    }

    /// The stored profile; one that no longer parses (written by another version) counts as
    /// missing and is recomputed.
    fn stored(&self, table: &CatalogTable) -> Result<Option<ServedProfile>, ProfileError> {
        Ok(self
            .state
            .profile(table.schema_name(), table.name())?
            .and_then(served))
    }

    /// When the table was last synced, as RFC 3339.
    fn last_sync(&self, table: &CatalogTable) -> Option<String> {
        match self.state.last_sync_of(table.schema_name(), table.name()) {
            Ok(t) => t
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the sync state");
                None
            }
        }
    }

    /// Profiles every table whose data changed since its stored profile.
    pub async fn refresh_all(&self, snapshot: &CatalogSnapshot) -> ProfileRun {
        let mut run = ProfileRun::default();
        for table in snapshot.tables() {
            let version = data_version(table);
            match self.stored(table) {
                Ok(Some(p)) if p.data_version == version => {
                    run.unchanged += 1;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    run.failed.push((table.qualified_name(), e.to_string()));
                    continue;
                }
            }
            match self.compute_and_store(snapshot, table, &version).await {
                Ok(()) => run.computed.push(table.qualified_name()),
                Err(e) => run.failed.push((table.qualified_name(), e.to_string())),
            }
        }
        run
    }

    async fn compute_and_store(
        &self,
        snapshot: &CatalogSnapshot,
        table: &Arc<CatalogTable>,
        version: &str,
    ) -> Result<(), ProfileError> {
        let _one = self.running.lock().await;
        let started = Instant::now();
        let context = self.context_of(snapshot, table);
        let result = profile_table(
            table.provider() as Arc<dyn datafusion::catalog::TableProvider>,
            &context,
            &self.options,
        )
        .await;
        match result {
            Ok(profile) => {
                let json = serde_json::to_string(&profile).map_err(|e| ProfileError::Failed {
                    table: table.qualified_name(),
                    message: e.to_string(),
                })?;
                self.state.put_profile(&StoredProfile {
                    schema_name: table.schema_name().to_string(),
                    table_name: table.name().to_string(),
                    data_version: version.to_string(),
                    computed_at: chrono::Utc::now().timestamp(),
                    duration_ms: started.elapsed().as_millis() as u64,
                    profile: json,
                    stale: false,
                    error: None,
                })?;
                tracing::info!(table = %table.qualified_name(), duration_ms = started.elapsed().as_millis() as u64, "table profiled");
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                self.state
                    .mark_profile_stale(table.schema_name(), table.name(), &message)?;
                tracing::warn!(table = %table.qualified_name(), error = %message, "profiling failed; the last profile is kept, marked stale");
                Err(ProfileError::Failed {
                    table: table.qualified_name(),
                    message,
                })
            }
        }
    }
}

fn served(p: StoredProfile) -> Option<ServedProfile> {
    let profile = serde_json::from_str(&p.profile).ok()?;
    Some(ServedProfile {
        schema: p.schema_name,
        table: p.table_name,
        data_version: p.data_version,
        computed_at: p.computed_at,
        duration_ms: p.duration_ms,
        stale: p.stale,
        error: p.error,
        restricted: false,
        profile,
    })
}

fn restricted_key(table: &CatalogTable, access: &TableAccess) -> String {
    format!(
        "{}|{}|{access:?}",
        table.qualified_name(),
        data_version(table)
    )
}

/// The joins of `table` to other tables from foreign keys either way, of the keys `visible`
/// lets through (given the table that holds the key).
fn related_tables(
    snapshot: &CatalogSnapshot,
    table: &CatalogTable,
    visible: &dyn Fn(&CatalogTable, &ResolvedForeignKey) -> bool,
) -> Vec<RelatedTable> {
    let mut related: Vec<RelatedTable> = table
        .foreign_keys()
        .iter()
        .filter(|fk| visible(table, fk))
        .map(|fk| RelatedTable {
            table: format!("{}.{}", fk.references.schema, fk.references.table),
            join_column: fk.columns.join(", "),
            foreign_column: fk.references.columns.join(", "),
            direction: "belongs_to".into(),
            description: fk.description.clone(),
        })
        .collect();
    for other in snapshot.tables() {
        for fk in other.foreign_keys() {
            if fk.references.schema == table.schema_name()
                && fk.references.table == table.name()
                && visible(other, fk)
            {
                related.push(RelatedTable {
                    table: other.qualified_name(),
                    join_column: fk.references.columns.join(", "),
                    foreign_column: fk.columns.join(", "),
                    direction: "has_many".into(),
                    description: fk.description.clone(),
                });
            }
        }
    }
    related
}

impl Profiler {
    /// What the catalog and the sync state know about a table, for its full profile.
    fn context_of(&self, snapshot: &CatalogSnapshot, table: &CatalogTable) -> ProfileContext {
        ProfileContext {
            table_id: table
                .meta()
                .map(|m| m.id.clone())
                .unwrap_or_else(|| table.qualified_name()),
            description: table.description().map(str::to_string),
            primary_key: table.primary_key().to_vec(),
            sync_strategy: table
                .meta()
                .and_then(|m| m.sync_strategy)
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_string)),
            file_size_bytes: table.size_bytes(),
            last_sync: self.last_sync(table),
            related_tables: related_tables(snapshot, table, &|_, _| true),
        }
    }
}
