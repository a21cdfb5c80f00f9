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
//! to the primary. No replica in rotation, or a position past the primary's last known
//! insert position (a made-up header): the primary at once. While reads wait, one of
//! them asks each replica for its position for all of them (`Replica::wait_for`).
//!
//! Health: `ReplicaWatch` looks at every replica at once each second, over a
//! connection of its own (a busy request pool does not make a replica look dead): its
//! replay position against the primary's insert position, and whether it answers at
//! all. One that is unreachable, no longer in recovery (promoted: it would drift), more
//! than `replica_max_lag_bytes` behind, or that has not replayed what the primary had
//! written `replica_max_lag_ms` ago (replay paused or stuck) leaves the rotation, with a
//! warning saying why, until it is healthy again. A read that fails on a replica for a
//! reason the primary may not share (connection lost or busy, conflict with recovery,
//! read-only, a token the replica has not replayed yet, an internal error such as
//! txid_current on a standby) is run once more on the primary; only the watch takes a
//! replica out.

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

const REPLAY_SQL: &str = "select pg_catalog.pg_last_wal_replay_lsn()::text, pg_catalog.pg_is_in_recovery()::text, \
     case when pg_catalog.pg_is_in_recovery() then pg_catalog.pg_is_wal_replay_paused()::text end, \
     (select extversion from pg_catalog.pg_extension where extname = 'pgbaas')";
/// WAL bytes a replica may be short of an old primary position and still count as
/// having replayed it: the insert position may point past a page header (24 or 40
/// bytes) that an idle replica never reaches.
const SLACK: u64 = 64;
const INSERT_SQL: &str = "select pg_catalog.pg_current_wal_insert_lsn()::text";

pub struct Replica {
    /// host:port of each host of its URL: the metrics' label and /healthz's name.
    pub label: String,
    pub pool: RequestPool,
    /// The watch's own connection (one), so that busy request connections do not make
    /// the replica look dead.
    watch_pool: RequestPool,
    in_rotation: AtomicBool,
    /// Held by the one waiting read that asks the replica its position for all.
    polling: tokio::sync::Mutex<()>,
    /// Told each time that read has asked.
    seen: tokio::sync::Notify,
    /// The extension's version there at the watch's last look: when it changes
    /// (`ALTER EXTENSION pgbaas UPDATE` replayed), the request connections are retired,
    /// as the primary's are (keys.rs).
    version: std::sync::Mutex<Option<String>>,
    /// The last replay position seen (by the watch or a read waiting for its commit).
    replayed: AtomicU64,
    /// Bytes behind the primary at the last look (-1: not known).
    lag: std::sync::atomic::AtomicI64,
}

impl Replica {
    pub fn in_rotation(&self) -> bool {
        self.in_rotation.load(Ordering::Relaxed)
    }

    /// In rotation (Ok) or out, with the reason, warned when it changes.
    fn set_rotation(&self, verdict: Result<(), String>) {
        let on = verdict.is_ok();
        let was = self.in_rotation.swap(on, Ordering::Relaxed);
        if was != on {
            match &verdict {
                Ok(()) => log::warn!("replica {} is in rotation", self.label),
                Err(why) => log::warn!("replica {} is out of rotation: {why}", self.label),
            }
        }
        crate::metrics::REPLICA_IN_ROTATION.with_label_values(&[&self.label]).set(i64::from(on));
    }

    /// Its lag is not known (it does not answer): not the last value seen.
    fn lag_unknown(&self) {
        self.lag.store(-1, Ordering::Relaxed);
        crate::metrics::REPLICA_LAG_BYTES.with_label_values(&[&self.label]).set(-1);
    }

    /// Its replay position, whether it is still a standby and whether replay is paused.
    async fn replay(&self, pool: &RequestPool, t: &Timeouts) -> Result<Replay, String> {
        let row = db::run_steps(pool, t, &[(REPLAY_SQL, &[])], 0).await.map_err(|e| e.message)?;
        let cols = row.ok_or("no row")?;
        let recovering = cols.get(1).cloned().flatten().as_deref() == Some("true");
        let paused = cols.get(2).cloned().flatten().as_deref() == Some("true");
        let version = cols.get(3).cloned().flatten();
        let lsn = cols.first().cloned().flatten().and_then(|s| parse_lsn(&s)).unwrap_or(0);
        if lsn > 0 {
            self.replayed.fetch_max(lsn, Ordering::Relaxed);
        }
        Ok(Replay { lsn, recovering, paused, version })
    }

    fn note_version(&self, now: Option<&str>) {
        let mut v = self.version.lock().unwrap_or_else(|e| e.into_inner());
        if v.is_some() && v.as_deref() != now {
            log::warn!("replica {}: pgbaas {:?} -> {:?}: its request connections are renewed", self.label, v.as_deref(), now);
            db::retire_handle(&self.pool).all_until_now();
        }
        *v = now.map(str::to_string);
    }

    /// Wait until it has replayed `after`, at most until `deadline`. One waiting read at
    /// a time asks the replica (every RECHECK); the others wait for its answer.
    async fn wait_for(&self, t: &Timeouts, after: u64, deadline: Instant) -> bool {
        loop {
            if self.replayed.load(Ordering::Relaxed) >= after {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.in_rotation() {
                return false;
            }
            let seen = self.seen.notified();
            tokio::pin!(seen);
            seen.as_mut().enable();
            if let Ok(one) = self.polling.try_lock() {
                let _ = tokio::time::timeout(left, self.replay(&self.pool, t)).await;
                self.seen.notify_waiters();
                if self.replayed.load(Ordering::Relaxed) < after {
                    tokio::time::sleep(RECHECK.min(deadline.saturating_duration_since(Instant::now()))).await;
                }
                drop(one);
                // Whoever waits longer takes over the asking.
                self.seen.notify_waiters();
            } else {
                let _ = tokio::time::timeout(left, seen).await;
            }
        }
    }
}

struct Replay {
    lsn: u64,
    recovering: bool,
    paused: bool,
    version: Option<String>,
}

pub struct Replicas {
    pub list: Vec<Replica>,
    next: AtomicUsize,
    wait: Duration,
    max_lag: u64,
    /// How long ago the primary may have written WAL a replica has not replayed.
    max_lag_time: Duration,
    /// The primary's insert position last seen (watch, or a write's commit position).
    primary_lsn: AtomicU64,
}

impl Replicas {
    /// One request pool per replica, `size` connections each.
    pub fn new(urls: &[String], size: usize, pool_wait: Duration, max_result_bytes: usize, wait: Duration, max_lag: u64, max_lag_time: Duration) -> Result<Replicas, String> {
        let mut list = Vec::new();
        for url in urls {
            let cfg = crate::pgconfig::PgConfig::parse(url)?;
            let label = cfg.targets.iter().map(|t| format!("{}:{}", t.name, t.port)).collect::<Vec<_>>().join(",");
            let pool = db::make_request_pool(url, size, pool_wait, max_result_bytes)?;
            let watch_pool = db::make_request_pool(url, 1, POLL_EVERY, 4096)?;
            crate::metrics::REPLICA_IN_ROTATION.with_label_values(&[&label]).set(0);
            list.push(Replica {
                label,
                pool,
                watch_pool,
                in_rotation: AtomicBool::new(false),
                polling: tokio::sync::Mutex::new(()),
                seen: tokio::sync::Notify::new(),
                version: Default::default(),
                replayed: AtomicU64::new(0),
                lag: (-1).into(),
            });
        }
        Ok(Replicas { list, next: AtomicUsize::new(0), wait, max_lag, max_lag_time, primary_lsn: AtomicU64::new(0) })
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
        // A position the primary has not been seen to reach (a made-up header, or a
        // write through another proxy within the last second) or no replica in
        // rotation: no waiting, the primary answers now.
        let known = self.primary_lsn.load(Ordering::Relaxed);
        if known == 0 || after > known {
            return None;
        }
        let r = self.in_turn().max_by_key(|r| r.replayed.load(Ordering::Relaxed))?;
        r.wait_for(t, after, Instant::now() + self.wait).await.then_some(r)
    }

    /// The primary's insert position after a write (its `Pgbaas-Commit-Lsn`), as for
    /// `commit_lsn`; also remembered as the newest position known.
    pub async fn commit_lsn(&self, primary: &RequestPool, t: &Timeouts) -> Option<String> {
        let lsn = commit_lsn(primary, t).await?;
        if let Some(n) = parse_lsn(&lsn) {
            self.primary_lsn.fetch_max(n, Ordering::Relaxed);
        }
        Some(lsn)
    }

    /// /healthz's view (anyone may read it: no host or port): each replica by its place
    /// in replica_urls (from 1), whether it takes reads and its lag in bytes (null: not
    /// known, e.g. it does not answer).
    pub fn status(&self) -> serde_json::Value {
        self.list
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let lag = r.lag.load(Ordering::Relaxed);
                serde_json::json!({"replica": i + 1, "in_rotation": r.in_rotation(), "lag_bytes": (lag >= 0).then_some(lag)})
            })
            .collect()
    }
}

/// A read's failure that the primary may not share: the replica's connection is gone,
/// refused or busy (503), a conflict with recovery cancelled it (40001 without a code
/// of ours), it refused a write (25006), it does not know the caller's token yet (401:
/// a session made since its last replay), or Postgres's internal error XX000 (e.g.
/// txid_current, which a standby cannot run). Run again on the primary. Never for the
/// caller's own errors: a function's plain RAISE (P0001, also `internal_error` until
/// the RPC door words it) or any other SQLSTATE would run the call twice.
pub fn replica_reason(e: &ApiError) -> bool {
    // A function's own answer (baas.raise: PT4xx, or a plain RAISE): the primary's would be the same.
    if e.sqlstate.as_deref().is_some_and(|s| s.starts_with("PT") || s == "P0001") {
        return false;
    }
    e.status == http::StatusCode::UNAUTHORIZED
        || matches!(e.code.as_str(), "database_unavailable" | "serialization_failure" | "read_only" | "service_unavailable")
        || (e.code == "internal_error" && e.sqlstate.as_deref() == Some("XX000"))
}

/// Run a route's call: a read on a replica in rotation (retried once on the primary
/// for a replica's reason; the replica stays in rotation: only the watch, over its own
/// connection, takes it out), everything else on the primary.
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
                    log::info!("a read failed on replica {} ({}: {}); running it on the primary", r.label, e.code, e.message);
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
/// standby, is at most `max_lag` bytes behind the primary's insert position and has
/// replayed what the primary had written `max_lag_time` ago.
pub struct ReplicaWatch {
    pub replicas: Arc<Replicas>,
    pub primary: RequestPool,
    pub timeouts: Timeouts,
    /// The primary's insert positions seen, oldest first, back to `max_lag_time` ago.
    history: std::sync::Mutex<std::collections::VecDeque<(Instant, u64)>>,
}

impl ReplicaWatch {
    pub fn new(replicas: Arc<Replicas>, primary: RequestPool, timeouts: Timeouts) -> ReplicaWatch {
        ReplicaWatch { replicas, primary, timeouts, history: Default::default() }
    }

    async fn look(&self) {
        let primary = commit_lsn(&self.primary, &self.timeouts).await.and_then(|s| parse_lsn(&s));
        let now = Instant::now();
        let max_time = self.replicas.max_lag_time;
        // The primary's position `max_time` ago: the newest sample at least that old.
        let old = {
            let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = primary {
                h.push_back((now, p));
                self.replicas.primary_lsn.fetch_max(p, Ordering::Relaxed);
            }
            while h.len() >= 2 && now.duration_since(h[1].0) >= max_time {
                h.pop_front();
            }
            h.front().filter(|(at, _)| now.duration_since(*at) >= max_time).map(|(_, p)| *p)
        };
        let t = &self.timeouts;
        let looks = futures_util::future::join_all(
            self.replicas.list.iter().map(|r| async move { (r, tokio::time::timeout(POLL_EVERY, r.replay(&r.watch_pool, t)).await) }),
        )
        .await;
        for (r, seen) in looks {
            if let Ok(Ok(s)) = &seen {
                r.note_version(s.version.as_deref());
            }
            let verdict = match seen {
                Ok(Ok(s)) if s.recovering => {
                    r.replayed.store(s.lsn, Ordering::Relaxed);
                    match primary {
                        Some(p) => {
                            let lag = p.saturating_sub(s.lsn);
                            r.lag.store(i64::try_from(lag).unwrap_or(i64::MAX), Ordering::Relaxed);
                            crate::metrics::REPLICA_LAG_BYTES.with_label_values(&[&r.label]).set(i64::try_from(lag).unwrap_or(i64::MAX));
                            if lag > self.replicas.max_lag {
                                Err(format!("{lag} bytes behind the primary (replica_max_lag_bytes {})", self.replicas.max_lag))
                            } else if old.is_some_and(|o| o > s.lsn.saturating_add(SLACK)) {
                                let paused = if s.paused { " (its replay is paused)" } else { "" };
                                Err(format!("it has not replayed what the primary wrote {} ms ago (replica_max_lag_ms){paused}", max_time.as_millis()))
                            } else {
                                Ok(())
                            }
                        }
                        // The primary did not answer: its replicas' lag is not known,
                        // and the reads they serve are no staler than before.
                        None if r.in_rotation() => Ok(()),
                        None => Err("the primary's position is not known".into()),
                    }
                }
                Ok(Ok(_)) => Err("it is not in recovery (promoted?): it takes no reads".into()),
                Ok(Err(e)) => {
                    r.lag_unknown();
                    Err(e)
                }
                Err(_) => {
                    r.lag_unknown();
                    Err(format!("no answer within {} ms", POLL_EVERY.as_millis()))
                }
            };
            r.set_rotation(verdict);
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

    /// Which failures on a replica run the read again on the primary: the replica's own
    /// troubles, never the caller's or its function's answer.
    #[test]
    fn only_a_replicas_own_failures_go_again_to_the_primary() {
        let db = |state: &str| ApiError::from_sqlstate(state, "m", None, None, false);
        assert!(replica_reason(&db("XX000")), "txid_current on a standby");
        assert!(replica_reason(&db("25006")), "a write refused");
        assert!(replica_reason(&db("40001")), "a conflict with recovery");
        assert!(!replica_reason(&db("P0001")), "a plain RAISE is the function's answer");
        assert!(!replica_reason(&db("PT401")), "baas.raise(401, ...) too");
        assert!(!replica_reason(&db("PT409")));
        assert!(!replica_reason(&db("42883")), "another SQLSTATE the proxy does not map: the primary says the same");
        assert!(!replica_reason(&db("22023")));
    }

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
        // (server.rs reads it only when replicas are configured.)
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
