//! Read replicas (issue 19, package E): streaming replicas of the database that answer
//! the route table's reads (`Route::read`), so that reads scale past one server.
//!
//! A replica is a physical copy: the same roles, grants, claims and row-level security
//! as the primary, so a read there is the read on the primary at an earlier commit
//! (Postgres decides, as everywhere). Which replica: round robin among those in
//! rotation; none in rotation, the primary.
//!
//! Read-your-writes: a 2xx write answers `Pgbaas-Commit-Lsn`, the primary's WAL insert
//! position read after its commit (so at or past its commit record). A read carrying it
//! (header, or cookie `pgbaas_lsn`) goes to a replica only once that replica's
//! `pg_last_wal_replay_lsn()` has reached it, waiting at most `replica_wait_ms`; else
//! to the primary.
//!
//! Health: `ReplicaWatch` looks at each replica every second (its replay position
//! against the primary's insert position, and whether it answers at all); one that is
//! unreachable, no longer in recovery (promoted: it would drift) or more than
//! `replica_max_lag_bytes` behind leaves the rotation until it is healthy again. A read
//! that fails on a replica for a replica's reason (connection lost, conflict with
//! recovery, read-only) takes it out at once and is run once more on the primary.

use crate::db::{self, Caller, Out, RequestPool, Returns, Timeouts};
use crate::errors::ApiError;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;

/// The response header of a write, and the request header of a read.
pub const COMMIT_LSN_HEADER: &str = "pgbaas-commit-lsn";
/// The same position as a cookie (browsers: set it from the header).
pub const COMMIT_LSN_COOKIE: &str = "pgbaas_lsn";
/// How often a read waiting for its commit asks the replicas again.
const RECHECK: Duration = Duration::from_millis(10);
/// How often each replica is looked at.
const POLL_EVERY: Duration = Duration::from_secs(1);

const REPLAY_SQL: &str = "select pg_catalog.pg_last_wal_replay_lsn()::text, pg_catalog.pg_is_in_recovery()::text";
const INSERT_SQL: &str = "select pg_catalog.pg_current_wal_insert_lsn()::text";

pub struct Replica {
    /// host:port of each host of its URL: the metrics' label and /healthz's name.
    pub label: String,
    pub pool: RequestPool,
    in_rotation: AtomicBool,
    /// The last replay position seen (by the watch or a read waiting for its commit).
    replayed: AtomicU64,
    /// Bytes behind the primary at the last look (-1: not known).
    lag: std::sync::atomic::AtomicI64,
}

impl Replica {
    pub fn in_rotation(&self) -> bool {
        self.in_rotation.load(Ordering::Relaxed)
    }

    fn set_rotation(&self, on: bool) {
        let was = self.in_rotation.swap(on, Ordering::Relaxed);
        if was != on {
            if on {
                log::warn!("replica {} is in rotation", self.label);
            } else {
                log::warn!("replica {} is out of rotation", self.label);
            }
        }
        crate::metrics::REPLICA_IN_ROTATION.with_label_values(&[&self.label]).set(i64::from(on));
    }

    /// Its replay position and whether it is still a standby.
    async fn replay(&self, t: &Timeouts) -> Result<(u64, bool), String> {
        let row = db::run_steps(&self.pool, t, &[(REPLAY_SQL, &[])], 0).await.map_err(|e| e.message)?;
        let cols = row.ok_or("no row")?;
        let recovering = cols.get(1).cloned().flatten().as_deref() == Some("true");
        let lsn = cols.first().cloned().flatten().and_then(|s| parse_lsn(&s)).unwrap_or(0);
        if lsn > 0 {
            self.replayed.fetch_max(lsn, Ordering::Relaxed);
        }
        Ok((lsn, recovering))
    }
}

pub struct Replicas {
    pub list: Vec<Replica>,
    next: AtomicUsize,
    wait: Duration,
    max_lag: u64,
}

impl Replicas {
    /// One request pool per replica, `size` connections each.
    pub fn new(urls: &[String], size: usize, pool_wait: Duration, max_result_bytes: usize, wait: Duration, max_lag: u64) -> Result<Replicas, String> {
        let mut list = Vec::new();
        for url in urls {
            let cfg = crate::pgconfig::PgConfig::parse(url)?;
            let label = cfg.targets.iter().map(|t| format!("{}:{}", t.name, t.port)).collect::<Vec<_>>().join(",");
            let pool = db::make_request_pool(url, size, pool_wait, max_result_bytes)?;
            crate::metrics::REPLICA_IN_ROTATION.with_label_values(&[&label]).set(0);
            list.push(Replica { label, pool, in_rotation: AtomicBool::new(false), replayed: AtomicU64::new(0), lag: (-1).into() });
        }
        Ok(Replicas { list, next: AtomicUsize::new(0), wait, max_lag })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The replicas in rotation, starting at the next in turn (round robin).
    fn in_turn(&self) -> impl Iterator<Item = &Replica> {
        let n = self.list.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..self.list.len()).map(move |i| &self.list[(start + i) % n]).filter(|r| r.in_rotation())
    }

    /// Where a read goes: a replica, or None for the primary. `after`: the commit
    /// position the client must see (read-your-writes).
    pub async fn choose(&self, t: &Timeouts, after: Option<u64>) -> Option<&Replica> {
        let Some(after) = after else {
            return self.in_turn().next();
        };
        if let Some(r) = self.in_turn().find(|r| r.replayed.load(Ordering::Relaxed) >= after) {
            return Some(r);
        }
        let deadline = Instant::now() + self.wait;
        loop {
            for r in self.in_turn() {
                let left = deadline.saturating_duration_since(Instant::now());
                if let Ok(Ok((lsn, true))) = tokio::time::timeout(left, r.replay(t)).await {
                    if lsn >= after {
                        return Some(r);
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            tokio::time::sleep(RECHECK.min(left)).await;
        }
    }

    /// /healthz's view: each replica, whether it takes reads and its lag in bytes.
    pub fn status(&self) -> serde_json::Value {
        self.list
            .iter()
            .map(|r| {
                let lag = r.lag.load(Ordering::Relaxed);
                serde_json::json!({"replica": r.label, "in_rotation": r.in_rotation(), "lag_bytes": (lag >= 0).then_some(lag)})
            })
            .collect()
    }
}

/// A read's failure that says the replica, not the request, is the trouble: its
/// connection is gone or refused (503), a conflict with recovery cancelled it (40001
/// without a code of ours), or it refused a write (25006). Run again on the primary.
pub fn replica_reason(e: &ApiError) -> bool {
    matches!(e.code.as_str(), "database_unavailable" | "serialization_failure" | "read_only" | "service_unavailable")
}

/// Run a route's call: a read on a replica in rotation (retried once on the primary
/// for a replica's reason), everything else on the primary.
#[allow(clippy::too_many_arguments)]
pub async fn call(
    replicas: &Replicas,
    primary: &RequestPool,
    read: bool,
    after: Option<u64>,
    t: &Timeouts,
    caller: &Caller<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    returns: Returns,
) -> Result<Option<Out>, ApiError> {
    if read && !replicas.is_empty() {
        if let Some(r) = replicas.choose(t, after).await {
            let out = db::call(&r.pool, t, caller, sql, params, returns).await;
            match &out {
                Err(e) if replica_reason(e) => {
                    log::warn!("a read failed on replica {} ({}: {}); running it on the primary", r.label, e.code, e.message);
                    if e.code == "database_unavailable" || e.code == "service_unavailable" {
                        r.set_rotation(false);
                    }
                }
                _ => return out,
            }
        }
    }
    db::call(primary, t, caller, sql, params, returns).await
}

/// The primary's WAL insert position now, as the `Pgbaas-Commit-Lsn` of a write that
/// has committed: one more statement on a request connection of the primary (any
/// connection: the position is the server's). None when it cannot be had (the write
/// stands; the client simply gets no position).
pub async fn commit_lsn(primary: &RequestPool, t: &Timeouts) -> Option<String> {
    match db::run_steps(primary, t, &[(INSERT_SQL, &[])], 0).await {
        Ok(Some(cols)) => cols.into_iter().next().flatten(),
        Ok(None) => None,
        Err(e) => {
            log::warn!("reading the commit position: {}", e.message);
            None
        }
    }
}

/// The commit position a read must see: `Pgbaas-Commit-Lsn`, else cookie `pgbaas_lsn`.
/// A malformed header is the client's mistake (400); a malformed cookie is ignored.
pub fn client_lsn(headers: &http::HeaderMap) -> Result<Option<u64>, ApiError> {
    if let Some(v) = headers.get(COMMIT_LSN_HEADER) {
        return v.to_str().ok().and_then(parse_lsn).map(Some).ok_or_else(|| {
            ApiError::bad_request("invalid_request", "Pgbaas-Commit-Lsn must be a WAL position such as 0/16B3748, as a write answered it")
        });
    }
    for v in headers.get_all(http::header::COOKIE) {
        let Ok(text) = v.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if name == COMMIT_LSN_COOKIE {
                    return Ok(parse_lsn(value.trim()));
                }
            }
        }
    }
    Ok(None)
}

/// `16/B374D848` (Postgres's pg_lsn text) as a number.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
        return None;
    }
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    Some((hi << 32) | lo)
}

/// Looks at every replica each second: in rotation iff it answers, is still a
/// standby and is at most `max_lag` bytes behind the primary's insert position.
pub struct ReplicaWatch {
    pub replicas: Arc<Replicas>,
    pub primary: RequestPool,
    pub timeouts: Timeouts,
}

impl ReplicaWatch {
    async fn look(&self) {
        let primary = commit_lsn(&self.primary, &self.timeouts).await.and_then(|s| parse_lsn(&s));
        for r in &self.replicas.list {
            let seen = tokio::time::timeout(POLL_EVERY, r.replay(&self.timeouts)).await;
            let healthy = match seen {
                Ok(Ok((lsn, true))) => {
                    r.replayed.store(lsn, Ordering::Relaxed);
                    match primary {
                        Some(p) => {
                            let lag = p.saturating_sub(lsn);
                            r.lag.store(i64::try_from(lag).unwrap_or(i64::MAX), Ordering::Relaxed);
                            crate::metrics::REPLICA_LAG_BYTES.with_label_values(&[&r.label]).set(i64::try_from(lag).unwrap_or(i64::MAX));
                            if lag > self.replicas.max_lag {
                                log::warn!("replica {} is {lag} bytes behind the primary (replica_max_lag_bytes {})", r.label, self.replicas.max_lag);
                            }
                            lag <= self.replicas.max_lag
                        }
                        // The primary did not answer: its replicas' lag is not known,
                        // and the reads they serve are no staler than before.
                        None => r.in_rotation(),
                    }
                }
                Ok(Ok((_, false))) => {
                    log::warn!("replica {} is not in recovery (promoted?): it takes no reads", r.label);
                    false
                }
                Ok(Err(e)) => {
                    log::debug!("replica {}: {e}", r.label);
                    false
                }
                Err(_) => false,
            };
            r.set_rotation(healthy);
        }
    }
}

#[async_trait]
impl BackgroundService for ReplicaWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if self.replicas.is_empty() {
            return;
        }
        loop {
            self.look().await;
            tokio::select! {
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_as_postgres_writes_them() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert!(parse_lsn("16/B374D848").unwrap() > parse_lsn("15/FFFFFFFF").unwrap());
        for bad in ["", "0", "/1", "1/", "x/1", "1/2/3", "123456789/0", "-1/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_header_wins_over_the_cookie_and_a_bad_header_is_refused() {
        let mut h = http::HeaderMap::new();
        assert_eq!(client_lsn(&h).unwrap(), None);
        h.insert(http::header::COOKIE, "a=b; pgbaas_lsn=0/10".parse().unwrap());
        assert_eq!(client_lsn(&h).unwrap(), Some(0x10));
        h.insert(COMMIT_LSN_HEADER, "0/20".parse().unwrap());
        assert_eq!(client_lsn(&h).unwrap(), Some(0x20));
        h.insert(COMMIT_LSN_HEADER, "soon".parse().unwrap());
        assert_eq!(client_lsn(&h).unwrap_err().status, http::StatusCode::BAD_REQUEST);
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, "pgbaas_lsn=junk".parse().unwrap());
        assert_eq!(client_lsn(&h).unwrap(), None, "a bad cookie is ignored");
    }
}
