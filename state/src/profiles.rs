//! Stored table profiles: the JSON of each table's latest profile with the data version it
//! describes; a failed recomputation marks it stale and keeps it.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::{Result, StateStore};

/// A stored profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredProfile {
    pub schema_name: String,
    pub table_name: String,
    /// Fingerprint of the table's files when it was computed.
    pub data_version: String,
    /// Seconds since the epoch.
    pub computed_at: i64,
    pub duration_ms: u64,
    /// The profile as JSON.
    pub profile: String,
    /// The table changed and recomputing failed: this describes an older version.
    pub stale: bool,
    pub error: Option<String>,
}

impl StateStore {
    /// Store a freshly computed profile.
    pub fn put_profile(&self, p: &StoredProfile) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "INSERT OR REPLACE INTO profiles (schema_name, table_name, data_version, computed_at, \
             duration_ms, profile, stale, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                p.schema_name,
                p.table_name,
                p.data_version,
                p.computed_at,
                i64::try_from(p.duration_ms).unwrap_or(i64::MAX),
                p.profile,
                p.stale,
                p.error,
            ],
        )?;
        Ok(())
    }

    /// Mark a table's stored profile stale (recomputing failed); no-op without one.
    pub fn mark_profile_stale(&self, schema: &str, table: &str, error: &str) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.execute(
            "UPDATE profiles SET stale = 1, error = ?3 WHERE schema_name = ?1 AND table_name = ?2",
            params![schema, table, error],
        )? > 0)
    }

    /// The stored profile of a table.
    pub fn profile(&self, schema: &str, table: &str) -> Result<Option<StoredProfile>> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT schema_name, table_name, data_version, computed_at, duration_ms, profile, \
                 stale, error FROM profiles WHERE schema_name = ?1 AND table_name = ?2",
                [schema, table],
                |r| {
                    Ok(StoredProfile {
                        schema_name: r.get(0)?,
                        table_name: r.get(1)?,
                        data_version: r.get(2)?,
                        computed_at: r.get(3)?,
                        duration_ms: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                        profile: r.get(5)?,
                        stale: r.get(6)?,
                        error: r.get(7)?,
                    })
                },
            )
            .optional()?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stale_profiles_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        assert!(!store.mark_profile_stale("s", "t", "boom").unwrap());
        store
            .put_profile(&StoredProfile {
                schema_name: "s".into(),
                table_name: "t".into(),
                data_version: "v1".into(),
                computed_at: 5,
                duration_ms: 7,
                profile: "{}".into(),
                stale: false,
                error: None,
            })
            .unwrap();
        assert!(store.mark_profile_stale("s", "t", "boom").unwrap());
        let p = store.profile("s", "t").unwrap().unwrap();
        assert!(p.stale);
        assert_eq!(p.data_version, "v1");
        assert_eq!(p.error.as_deref(), Some("boom"));
    }
}
