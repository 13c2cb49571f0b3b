//! Table profiles as the server keeps them: computed with [`dataport_catalog::profile`],
//! stored in the state store with the data version they describe, recomputed only when the
//! table changed, kept (marked stale) when recomputing fails, and for a caller with a
//! restricted grant computed on request over what they may see (cached per grant and data
//! version).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dataport_catalog::profile::{ProfileContext, ProfileOptions, RelatedTable, profile_table};
use dataport_catalog::{CatalogSnapshot, CatalogTable, SnapshotCatalogProvider, TableAccess};
use dataport_state::{StateStore, StoredProfile};
use serde::Serialize;

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

/// A profile as served: the profile and how current it is.
#[derive(Debug, Clone, Serialize)]
pub struct ServedProfile {
    pub schema: String,
    pub table: String,
    pub data_version: String,
    /// Seconds since the epoch.
    pub computed_at: i64,
    /// It describes an older version of the table (recomputing failed).
    pub stale: bool,
    pub error: Option<String>,
    /// Computed for the caller's restricted view of the table.
    pub restricted: bool,
    pub profile: serde_json::Value,
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
            return Ok(served(p, false));
        }
        self.compute_and_store(snapshot, table, &version).await?;
        match self.stored(table)? {
            Some(p) => Ok(served(p, false)),
            None => Err(ProfileError::Failed {
                table: table.qualified_name(),
                message: "the profile was not stored".into(),
            }),
        }
    }

    /// The profile `view`'s caller may see: the full one, or one computed over their
    /// restricted view of the table (row filter applied, hidden columns absent).
    pub async fn for_caller(
        &self,
        view: &SnapshotCatalogProvider,
        table: &Arc<CatalogTable>,
    ) -> Result<ServedProfile, ProfileError> {
        let access = view.access(table);
        let TableAccess::Restricted { .. } = &access else {
            return self.full(view.snapshot(), table).await;
        };
        let version = data_version(table);
        let key = format!("{}|{version}|{access:?}", table.qualified_name());
        if let Some(p) = self.cached(&key) {
            return Ok(p);
        }
        let provider = view.provider_for(table).map_err(|e| ProfileError::Failed {
            table: table.qualified_name(),
            message: e.to_string(),
        })?;
        let visible = view.visible_schema(table);
        let mut context = context_of(view.snapshot(), table);
        context.primary_key = view.primary_key(table);
        context.file_size_bytes = 0;
        context.related_tables.retain(|r| {
            visible.field_with_name(&r.join_column).is_ok()
                && view
                    .foreign_keys(table)
                    .iter()
                    .any(|fk| fk.columns.contains(&r.join_column))
                || r.direction == "has_many" && visible.field_with_name(&r.join_column).is_ok()
        });
        let _one = self.running.lock().await;
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
            stale: false,
            error: None,
            restricted: true,
            profile: serde_json::to_value(&profile).unwrap_or_default(),
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

    fn stored(&self, table: &CatalogTable) -> Result<Option<StoredProfile>, ProfileError> {
        Ok(self.state.profile(table.schema_name(), table.name())?)
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
        let context = context_of(snapshot, table);
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

fn served(p: StoredProfile, restricted: bool) -> ServedProfile {
    ServedProfile {
        schema: p.schema_name,
        table: p.table_name,
        data_version: p.data_version,
        computed_at: p.computed_at,
        stale: p.stale,
        error: p.error,
        restricted,
        profile: serde_json::from_str(&p.profile).unwrap_or_default(),
    }
}

/// What the catalog knows about a table, for its profile.
fn context_of(snapshot: &CatalogSnapshot, table: &CatalogTable) -> ProfileContext {
    let mut related: Vec<RelatedTable> = table
        .foreign_keys()
        .iter()
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
            if fk.references.schema == table.schema_name() && fk.references.table == table.name() {
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
        last_sync: None,
        related_tables: related,
    }
}
