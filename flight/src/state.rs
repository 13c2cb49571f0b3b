//! The little state a Flight SQL server keeps: prepared statements and running queries.

use dataport_common::ErrorKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow_flight::CancelStatus;
use datafusion::common::ScalarValue;
use dataport_auth::Principal;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Most prepared statements kept at once; beyond it the least recently used are closed.
const MAX_PREPARED: usize = 10_000;
/// Most announced-but-not-yet-fetched queries remembered for cancellation.
const MAX_PENDING: usize = 10_000;
/// How long an announced query waits for its `DoGet` before it is forgotten.
const PENDING_TTL: Duration = Duration::from_secs(600);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves the maps consistent, even if it panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One prepared statement: its SQL and the parameter values bound to it.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) sql: String,
    pub(crate) params: Vec<ScalarValue>,
    owner: String,
    last_used: Instant,
}

#[derive(Debug)]
pub(crate) struct PreparedStatements {
    idle: Duration,
    map: Mutex<HashMap<String, Prepared>>,
}

impl PreparedStatements {
    pub(crate) fn new(idle: Duration) -> Self {
        Self {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Keep `sql` for `owner`; returns the handle.
    pub(crate) fn insert(&self, sql: String, owner: &Principal) -> String {
        let handle = format!("ps-{}", uuid::Uuid::new_v4().simple());
        let now = Instant::now();
        let mut map = lock(&self.map);
        map.retain(|_, p| now.duration_since(p.last_used) < self.idle);
        while map.len() >= MAX_PREPARED {
            let oldest = map
                .iter()
                .min_by_key(|(_, p)| p.last_used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            handle.clone(),
            Prepared {
                sql,
                params: Vec::new(),
                owner: owner.name.clone(),
                last_used: now,
            },
        );
        handle
    }

    /// The statement behind `handle`, if it is `caller`'s.
    pub(crate) fn get(&self, handle: &[u8], caller: &Principal) -> Result<Prepared, Status> {
        let mut map = lock(&self.map);
        let p = Self::entry(&mut map, handle, caller)?;
        p.last_used = Instant::now();
        Ok(p.clone())
    }

    pub(crate) fn bind(
        &self,
        handle: &[u8],
        caller: &Principal,
        params: Vec<ScalarValue>,
    ) -> Result<(), Status> {
        let mut map = lock(&self.map);
        let p = Self::entry(&mut map, handle, caller)?;
        p.params = params;
        p.last_used = Instant::now();
        Ok(())
    }

    pub(crate) fn close(&self, handle: &[u8], caller: &Principal) -> Result<(), Status> {
        let mut map = lock(&self.map);
        Self::entry(&mut map, handle, caller)?;
        map.remove(String::from_utf8_lossy(handle).as_ref());
        Ok(())
    }

    fn entry<'a>(
        map: &'a mut HashMap<String, Prepared>,
        handle: &[u8],
        caller: &Principal,
    ) -> Result<&'a mut Prepared, Status> {
        let key = std::str::from_utf8(handle).unwrap_or("");
        match map.get_mut(key) {
            // Another user's handle is reported exactly like an unknown one.
            Some(p) if p.owner == caller.name => Ok(p),
            _ => Err(crate::error::status(
                ErrorKind::NotFound,
                "prepared statement not found: it was closed, expired after being idle, or the server restarted; prepare it again",
            )),
        }
    }
}

#[derive(Debug)]
struct Execution {
    owner: String,
    token: CancellationToken,
    announced: Instant,
    running: usize,
}

/// Queries announced by `GetFlightInfo` or running in `DoGet`, by ticket id, so
/// `CancelFlightInfo` can stop them.
#[derive(Debug, Default)]
pub(crate) struct Executions {
    map: Mutex<HashMap<String, Execution>>,
}

impl Executions {
    /// Remember an announced query so it can be cancelled before its `DoGet`.
    pub(crate) fn announce(&self, id: &str, owner: &Principal) {
        let now = Instant::now();
        let mut map = lock(&self.map);
        if map.len() >= MAX_PENDING {
            map.retain(|_, e| e.running > 0 || now.duration_since(e.announced) < PENDING_TTL);
        }
        if map.len() >= MAX_PENDING {
            // Still full of fresh announcements: forget the oldest idle one.
            let oldest = map
                .iter()
                .filter(|(_, e)| e.running == 0)
                .min_by_key(|(_, e)| e.announced)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            id.to_owned(),
            Execution {
                owner: owner.name.clone(),
                token: CancellationToken::new(),
                announced: now,
                running: 0,
            },
        );
    }

    /// Mark `id` running; the guard unregisters it when the stream ends. Fails if the
    /// query was cancelled before it started.
    pub(crate) fn start(self: &Arc<Self>, id: &str, owner: &Principal) -> Result<RunGuard, Status> {
        let mut map = lock(&self.map);
        let e = map.entry(id.to_owned()).or_insert_with(|| Execution {
            owner: owner.name.clone(),
            token: CancellationToken::new(),
            announced: Instant::now(),
            running: 0,
        });
        if e.token.is_cancelled() {
            map.remove(id);
            return Err(crate::error::status(
                ErrorKind::Cancelled,
                "the query was cancelled before it started",
            ));
        }
        e.running += 1;
        Ok(RunGuard {
            executions: Arc::clone(self),
            id: id.to_owned(),
            token: e.token.clone(),
        })
    }

    /// Cancel `id` on behalf of `caller` (its owner or an admin).
    pub(crate) fn cancel(&self, id: &str, caller: &Principal) -> CancelStatus {
        let map = lock(&self.map);
        match map.get(id) {
            Some(e) if e.owner == caller.name || caller.admin => {
                e.token.cancel();
                CancelStatus::Cancelled
            }
            _ => CancelStatus::NotCancellable,
        }
    }

    fn finish(&self, id: &str) {
        let mut map = lock(&self.map);
        if let Some(e) = map.get_mut(id) {
            e.running = e.running.saturating_sub(1);
            if e.running == 0 {
                map.remove(id);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

/// A running `DoGet`; dropping it (stream finished, failed or abandoned) unregisters it.
#[derive(Debug)]
pub(crate) struct RunGuard {
    executions: Arc<Executions>,
    id: String,
    token: CancellationToken,
}

impl RunGuard {
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.executions.finish(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Principal {
        Principal::new(name, vec!["dataread".into()])
    }

    #[test]
    fn prepared_statements_belong_to_their_owner() {
        let ps = PreparedStatements::new(Duration::from_secs(60));
        let h = ps.insert("select 1".into(), &user("a"));
        assert_eq!(ps.get(h.as_bytes(), &user("a")).unwrap().sql, "select 1");
        assert_eq!(
            ps.get(h.as_bytes(), &user("b")).unwrap_err().code(),
            tonic::Code::NotFound
        );
        ps.bind(h.as_bytes(), &user("a"), vec![ScalarValue::Int32(Some(1))])
            .unwrap();
        assert_eq!(ps.get(h.as_bytes(), &user("a")).unwrap().params.len(), 1);
        assert!(ps.close(h.as_bytes(), &user("b")).is_err());
        ps.close(h.as_bytes(), &user("a")).unwrap();
        assert!(ps.get(h.as_bytes(), &user("a")).is_err());
        assert!(ps.get(b"\xff\xfe", &user("a")).is_err());
    }

    #[test]
    fn idle_prepared_statements_expire() {
        let ps = PreparedStatements::new(Duration::from_millis(1));
        let h = ps.insert("select 1".into(), &user("a"));
        std::thread::sleep(Duration::from_millis(5));
        ps.insert("select 2".into(), &user("a"));
        assert!(ps.get(h.as_bytes(), &user("a")).is_err());
    }

    #[test]
    fn cancel_before_and_during_run() {
        let ex = Arc::new(Executions::default());
        ex.announce("q1", &user("a"));
        assert_eq!(ex.cancel("q1", &user("b")), CancelStatus::NotCancellable);
        assert_eq!(ex.cancel("q1", &user("a")), CancelStatus::Cancelled);
        assert_eq!(
            ex.start("q1", &user("a")).unwrap_err().code(),
            tonic::Code::Cancelled
        );

        ex.announce("q2", &user("a"));
        let guard = ex.start("q2", &user("a")).unwrap();
        assert!(!guard.token().is_cancelled());
        let admin = Principal::local_admin();
        assert_eq!(ex.cancel("q2", &admin), CancelStatus::Cancelled);
        assert!(guard.token().is_cancelled());
        drop(guard);
        assert_eq!(ex.len(), 0);
        assert_eq!(ex.cancel("q2", &user("a")), CancelStatus::NotCancellable);
    }
}
