//! The database side: two pools of `baas_authenticator` connections, and the one
//! transaction each request runs in.
//!
//! Requests use `RequestPool`, connections of our own wire client (pgwire.rs). Each
//! request sends `select baas.authenticate($claims)` (with its statement timeout and
//! client address) and the route's call as one pipelined batch of prepared statements
//! ended by a single Sync: one network round trip, one implicit transaction. Role and
//! claims are set with set_config(..., true), so they end with it. If the request is
//! abandoned half-way (client gone, panic), the connection is thrown away rather than
//! returned to the pool, so no state can leak.
//!
//! A request that fails because its connection's backend can no longer run the
//! extension (pgwire::backend_is_stale: the library was replaced under it, or a kept
//! statement no longer fits the schema) is run once more on a new connection: its
//! transaction was rolled back, so nothing of it happened. Every connection opened
//! before that moment is retired at its next checkout (`Retire`), as they are when
//! `ALTER EXTENSION pgbaas UPDATE` announces a new version (keys.rs listens).
//!
//! The small tokio-postgres `Pool` serves the proxy's own queries: key loads and
//! settings.

use crate::errors::ApiError;
use crate::pgconfig::{PgConfig, PoolConnect};
use crate::pgwire::{Conn, PgError};
use bytes::Bytes;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;

/// Connections of the proxy's own queries (key loads, settings); requests never wait
/// for them.
const ADMIN_POOL_SIZE: usize = 2;

/// The proxy's own connections (key loads, settings, LISTEN) show in
/// `pg_stat_activity` as "<application_name> (keys)"; requests' connections as the
/// URL's application_name, by default "pgbaas-proxy".
pub fn keys_config(url: &str) -> Result<PgConfig, String> {
    let pg = parse_url(url)?;
    let name = format!("{} (keys)", pg.pg.get_application_name().unwrap_or(crate::pgwire::APPLICATION_NAME));
    Ok(pg.with_application_name(&name))
}

/// Hosts, TLS and the rest of the URL: pgconfig.rs.
fn parse_url(url: &str) -> Result<PgConfig, String> {
    PgConfig::parse(url)
}

/// The admin pool's tokio-postgres connections go the requests' way to the server
/// (hosts in order, TLS, the password rule): PoolConnect.
pub fn make_pool(url: &str, wait: Duration) -> Result<Pool, String> {
    let pg = keys_config(url)?;
    let inner = pg.pg.clone();
    let connect = PoolConnect(Arc::new(pg), wait);
    let mgr = Manager::from_connect(inner, connect, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(mgr)
        .max_size(ADMIN_POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| format!("pool: {e}"))
}

pub struct WireManager {
    cfg: PgConfig,
    connect_timeout: Duration,
    max_result_bytes: usize,
    retire: Arc<Retire>,
}

/// "Connections opened before now are not to be reused": one atomic store to set, one
/// atomic load per checkout to check (no round trip). Set when a backend shows it runs
/// a replaced library (every backend that loaded the old file is affected, not just
/// the one that said so) and when the extension is updated.
pub struct Retire {
    base: Instant,
    /// Nanoseconds after `base`; connections created before it are retired. 0: none.
    before: AtomicU64,
    /// Nanoseconds after `base` of the last retirement for a stale error. 0: none.
    last_stale: AtomicU64,
}

/// At most one retire-all per this for stale errors: each failing request reports
/// one, and a burst of them (a whole warm pool failing at once) needs one retirement,
/// not one per request, each making every connection reconnect.
const STALE_RETIRE_EVERY: Duration = Duration::from_secs(1);

impl Retire {
    pub fn new() -> Self {
        Retire { base: Instant::now(), before: AtomicU64::new(0), last_stale: AtomicU64::new(0) }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// Retire every connection opened until now.
    pub fn all_until_now(&self) {
        self.before.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// Retire every connection opened until now for a stale error, unless one was
    /// retired so within STALE_RETIRE_EVERY (those opened since are new enough that
    /// their own failure says the database, not the backend, is not ready). True if
    /// this call retired them.
    pub fn all_until_now_for_stale(&self) -> bool {
        let now = self.now();
        let last = self.last_stale.load(Ordering::Relaxed);
        let every = u64::try_from(STALE_RETIRE_EVERY.as_nanos()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < every {
            return false;
        }
        // One of several concurrent failures wins; the others' retirement is this one.
        if self.last_stale.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return false;
        }
        self.all_until_now();
        true
    }

    fn retired(&self, created: Instant) -> bool {
        let before = self.before.load(Ordering::Relaxed);
        before != 0 && u64::try_from(created.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX) < before
    }
}

impl Default for Retire {
    fn default() -> Self {
        Self::new()
    }
}

impl managed::Manager for WireManager {
    type Type = Conn;
    type Error = PgError;

    async fn create(&self) -> Result<Conn, PgError> {
        Conn::connect_limited(&self.cfg, self.connect_timeout, self.max_result_bytes).await
    }

    async fn recycle(&self, conn: &mut Conn, metrics: &Metrics) -> RecycleResult<PgError> {
        if self.retire.retired(metrics.created) {
            return Err(RecycleError::message("connection opened before the extension changed"));
        }
        if !conn.is_usable() {
            return Err(RecycleError::message("connection not reusable"));
        }
        Ok(())
    }
}

pub type RequestPool = managed::Pool<WireManager>;
type RequestConn = managed::Object<WireManager>;

/// The requests' pool: `size` connections at most, opened when first needed; one
/// request's result at most `max_result_bytes`.
pub fn make_request_pool(url: &str, size: usize, wait: Duration, max_result_bytes: usize) -> Result<RequestPool, String> {
    let retire = Arc::new(Retire::new());
    let cfg = parse_url(url)?;
    let _ = APP_NAME.set(cfg.pg.get_application_name().unwrap_or(crate::pgwire::APPLICATION_NAME).to_string()); // (issue 19, observe)
    managed::Pool::builder(WireManager { cfg, connect_timeout: wait, max_result_bytes, retire })
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| format!("pool: {e}"))
}

/// Retires the requests' connections (keys.rs, on `ALTER EXTENSION pgbaas UPDATE`).
pub fn retire_handle(pool: &RequestPool) -> Arc<Retire> {
    pool.manager().retire.clone()
}

/// What the route's SQL function returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    /// A row whose first column is the response body as text (`jsonb::text`), and any
    /// further text columns the route wants (a version for ETag, an error code).
    Json,
    Void,
}

/// The body passes through as Postgres wrote it: never re-parsed here, so documents
/// nested deeper than serde_json's limit cannot trip the proxy, and no time is spent
/// re-encoding.
pub struct Out {
    pub body: String,
    pub extra: Vec<Option<String>>,
}

/// Who calls and under which limits: plain values, no HTTP type.
pub struct Caller<'a> {
    /// Verified JWT claims JSON; None for anonymous.
    pub claims: Option<&'a str>,
    /// The client's address, for the audit log.
    pub client_ip: &'a str,
    /// The User-Agent header as `user_agent` made it: what a new session records
    /// (shown in baas.list_sessions); '' when none.
    pub user_agent: &'a str,
    /// Run under `Timeouts::anon_statement`: an anonymous caller whose query's cost
    /// the client chooses (a filter, an order), not a sign-in's fixed cost.
    pub short_timeout: bool,
}

/// Limits every request's transaction runs under.
#[derive(Clone)] // (issue 19, D) a request's own answer deadline: server.rs
pub struct Timeouts {
    /// `statement_timeout` for the request's transaction, e.g. "5000ms".
    pub statement: String,
    /// ... for anonymous callers (`Caller::short_timeout`), e.g. "1000ms"; never longer
    /// than `statement`.
    pub anon_statement: String,
    /// How long the proxy waits for the database's answer before giving up on the
    /// connection: twice the statement timeout (a request runs two statements) and a
    /// margin, so only a database host gone silent reaches it.
    pub answer: Duration,
}

pub fn map_pg_error(e: &tokio_postgres::Error, anonymous: bool) -> ApiError {
    match e.as_db_error() {
        Some(db) => from_db(db.code().code(), db.message(), db.detail(), db.hint(), anonymous),
        None => {
            log::warn!("database connection error: {e}");
            ApiError::unavailable("the database is unavailable")
        }
    }
}

fn from_db(code: &str, message: &str, detail: Option<&str>, hint: Option<&str>, anonymous: bool) -> ApiError {
    let mut err = ApiError::from_sqlstate(code, message, detail, hint, anonymous);
    // (issue 19, faults) The server going away under a request (57P01 on a restart,
    // 08xxx, 53xxx): 503 with Retry-After, as for the other outages below.
    if err.code == "database_unavailable" {
        err.retry_after.get_or_insert(1);
    }
    if err.code == "query_timeout" {
        // The client's query met its limit: an answer, not a fault of ours (and a
        // flood of them must not fill the error log).
        log::info!("database error {code}: {message}");
    } else if err.status.is_server_error() {
        log::error!("database error {code}: {message} ({detail:?})");
    }
    err
}

fn map_wire_error(e: &PgError, anonymous: bool) -> ApiError {
    match e {
        PgError::Db { code, message, detail, hint } => from_db(code, message, detail.as_deref(), hint.as_deref(), anonymous),
        PgError::Conn(m) => {
            log::warn!("database connection error: {m}");
            // (issue 19, faults) A lost connection (Postgres restarted or killed): a
            // client may retry, and is told when.
            // (issue 19, failover) Also a primary killed or demoted under the request:
            // nothing was acknowledged, and the next try gets a new connection to
            // whichever host is the primary then.
            let mut e = ApiError::unavailable("the database is unavailable");
            e.retry_after = Some(1);
            e
        }
        PgError::Internal(m) => {
            log::error!("request statement: {m}");
            ApiError::internal()
        }
    }
}

/// Holds the request's connection; dropped before the request finished (client gone,
/// deadline, panic), its statement is cancelled on the server and the connection
/// keeps its pool slot until the server is done (pgwire::abandon).
struct Guard {
    conn: Option<RequestConn>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            crate::pgwire::abandon(conn);
        }
    }
}

pub async fn get(pool: &Pool) -> Result<deadpool_postgres::Object, ApiError> {
    pool.get().await.map_err(no_connection)
}

/// No connection (the database is down or refused, or every connection stayed busy):
/// 503 with Retry-After, as for any load shed (RFC 9110 10.2.3).
fn no_connection(e: impl std::fmt::Display) -> ApiError {
    log::warn!("no database connection: {e}");
    let mut e = ApiError::unavailable("no database connection available");
    e.retry_after = Some(1);
    e
}

/// Every statement of the request runs under the configured statement_timeout; the
/// client's address is there for the audit log. (issue 19, observe): $5 is the request
/// id (observe::id): in the audit log, and in pg_stat_activity's application_name while
/// the request runs, after the URL's application_name, $6 (local: the pool's name is back at commit).
pub const AUTHENTICATE: &str = "select baas.authenticate($1::text::jsonb), pg_catalog.set_config('statement_timeout', $2, true), \
     pg_catalog.set_config('baas.client_ip', $3, true), pg_catalog.set_config('baas.user_agent', $4, true), \
     pg_catalog.set_config('baas.request_id', $5::text, true), pg_catalog.set_config('application_name', \
     case when $5::text = '' then $6::text else $6::text || ' ' || $5::text end, true)";

/// (issue 19, observe): the requests' application_name (the URL's, by default
/// "pgbaas-proxy"), AUTHENTICATE's $6; set when the requests' pool is made.
static APP_NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn app_name() -> &'static str {
    APP_NAME.get().map(String::as_str).unwrap_or(crate::pgwire::APPLICATION_NAME)
}

/// The User-Agent header as sessions record it: at most 256 bytes (cut at a character
/// boundary), control characters removed, '' when absent.
pub fn user_agent(header: Option<&http::HeaderValue>) -> String {
    let Some(v) = header else { return String::new() };
    let text = String::from_utf8_lossy(v.as_bytes());
    let mut out = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > 256 {
            break;
        }
        out.push(c);
    }
    out
}

/// One try at a request: its answer, or the error of a backend that can no longer run
/// it (its connection already retired).
enum Attempt<T> {
    Answer(Result<Option<Vec<Option<T>>>, PgError>),
    Stale(PgError),
}

/// The columns of a row as text (JSON routes) or binary (file pieces).
type Rows<T> = Result<Option<Vec<Option<T>>>, PgError>;

trait Column: Sized + Send {
    fn run<'a>(conn: &'a mut Conn, steps: &'a [crate::pgwire::Step<'a>], rows_of: usize, binary_max: usize) -> impl std::future::Future<Output = Rows<Self>> + Send + 'a;
}

impl Column for String {
    fn run<'a>(conn: &'a mut Conn, steps: &'a [crate::pgwire::Step<'a>], rows_of: usize, _: usize) -> impl std::future::Future<Output = Rows<String>> + Send + 'a {
        conn.run(steps, rows_of)
    }
}

impl Column for Bytes {
    fn run<'a>(conn: &'a mut Conn, steps: &'a [crate::pgwire::Step<'a>], rows_of: usize, max: usize) -> impl std::future::Future<Output = Rows<Bytes>> + Send + 'a {
        conn.run_binary(steps, rows_of, max)
    }
}

/// Run `steps` on a request connection within `deadline`; the connection goes back to
/// the pool only when the run finished.
async fn attempt<T: Column>(pool: &RequestPool, deadline: Duration, steps: &[crate::pgwire::Step<'_>], rows_of: usize, binary_max: usize) -> Result<Attempt<T>, ApiError> {
    let conn = pool.get().await.map_err(|e| match e {
        managed::PoolError::Timeout(managed::TimeoutType::Wait) => {
            let mut e = ApiError::unavailable("every database connection stayed busy for the pool timeout");
            e.retry_after = Some(1);
            log::warn!("no database connection: every one stayed busy for the pool timeout");
            e
        }
        other => no_connection(other),
    })?;
    let mut guard = Guard { conn: Some(conn) };
    let Some(conn) = guard.conn.as_mut() else {
        return Err(ApiError::internal()); // unreachable: set on the line above
    };
    let Ok(result) = tokio::time::timeout(deadline, T::run(conn, steps, rows_of, binary_max)).await else {
        // The guard cancels the statement: its answer may still come.
        log::warn!("the database did not answer within {deadline:?}");
        // (issue 19, faults) A silent network or host: retryable, on another connection.
        let mut e = ApiError::unavailable("the database did not answer in time");
        e.retry_after = Some(1);
        return Err(e);
    };
    // Finished: back to the pool (recycling drops a connection that is not reusable).
    let Some(conn) = guard.conn.take() else {
        return Err(ApiError::internal()); // unreachable: set above
    };
    match result {
        Err(e) if conn.is_stale() => {
            // Out of the pool now, so that the next try cannot be given it back.
            drop(managed::Object::take(conn));
            Ok(Attempt::Stale(e))
        }
        r => Ok(Attempt::Answer(r)),
    }
}

/// Run `steps` on a request connection within `deadline` each try. A backend that can
/// no longer run the extension's functions rolled the request back: every connection
/// opened until then is retired and the request runs once more, on a connection opened
/// since; if that fails the same way, the database is not ready for us (the library
/// is missing or does not match the installed SQL): 503 with Retry-After.
async fn run(
    pool: &RequestPool,
    deadline: Duration,
    steps: &[crate::pgwire::Step<'_>],
    rows_of: usize,
    anonymous: bool,
) -> Result<Option<Vec<Option<String>>>, ApiError> {
    run_any(pool, deadline, steps, rows_of, anonymous, 0).await
}

async fn run_any<T: Column>(
    pool: &RequestPool,
    deadline: Duration,
    steps: &[crate::pgwire::Step<'_>],
    rows_of: usize,
    anonymous: bool,
    binary_max: usize,
) -> Result<Option<Vec<Option<T>>>, ApiError> {
    let answer = match attempt::<T>(pool, deadline, steps, rows_of, binary_max).await? {
        Attempt::Answer(r) => r,
        Attempt::Stale(e) => {
            if pool.manager().retire.all_until_now_for_stale() {
                log::warn!("a database connection can no longer run the extension ({e}); retiring older connections and retrying");
            } else {
                log::warn!("a database connection can no longer run the extension ({e}); retrying (connections were retired less than a second ago)");
            }
            match attempt::<T>(pool, deadline, steps, rows_of, binary_max).await? {
                Attempt::Answer(r) => r,
                Attempt::Stale(e) => {
                    log::error!("a new database connection cannot run the extension either: {e}");
                    let mut err = ApiError::unavailable("the database cannot run pgbaas right now (is an upgrade under way?)");
                    err.retry_after = Some(STALE_RETRY_AFTER);
                    return Err(err);
                }
            }
        }
    };
    answer.map_err(|e| map_wire_error(&e, anonymous))
}

/// Retry-After when even a new connection cannot run the extension: a package
/// upgrade's window (file renamed over, ALTER EXTENSION UPDATE) lasts seconds.
const STALE_RETRY_AFTER: u64 = 5;

/// Run `steps` (one batch, one Sync) on a request connection and return the first row
/// of step `rows_of`: for statements that are not one route's call (the live feeds'
/// start-up transaction, realtime/hub.rs).
pub async fn run_steps(pool: &RequestPool, t: &Timeouts, steps: &[crate::pgwire::Step<'_>], rows_of: usize) -> Result<Option<Vec<Option<String>>>, ApiError> {
    run(pool, t.answer, steps, rows_of, false).await
}

/// Run `sql` with `params` in one transaction as `caller`.
pub async fn call(
    pool: &RequestPool,
    t: &Timeouts,
    caller: &Caller<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    returns: Returns,
) -> Result<Option<Out>, ApiError> {
    let timeout = if caller.short_timeout { t.anon_statement.as_str() } else { t.statement.as_str() };
    let (request_id, app) = (crate::observe::id(), app_name()); // (issue 19, observe)
    let auth_params: [&(dyn ToSql + Sync); 6] = [&caller.claims, &timeout, &caller.client_ip, &caller.user_agent, &request_id, &app];
    let row = run(pool, t.answer, &[(AUTHENTICATE, &auth_params), (sql, params)], 1, caller.claims.is_none()).await?;
    Ok(match returns {
        Returns::Void => None,
        Returns::Json => row.and_then(|mut cols| {
            let body = cols.first_mut()?.take()?;
            Some(Out { body, extra: cols.into_iter().skip(1).collect() })
        }),
    })
}

/// The Parse door's first statement (issue 21, sql/parse.sql): AUTHENTICATE with
/// `baas._parse_authenticate(session token, master)` in place of `baas.authenticate`;
/// the same settings after it.
pub const PARSE_AUTHENTICATE: &str = "select baas._parse_authenticate($1::text, $7::text::boolean), pg_catalog.set_config('statement_timeout', $2, true), \
     pg_catalog.set_config('baas.client_ip', $3, true), pg_catalog.set_config('baas.user_agent', $4, true), \
     pg_catalog.set_config('baas.request_id', $5::text, true), pg_catalog.set_config('application_name', \
     case when $5::text = '' then $6::text else $6::text || ' ' || $5::text end, true)";

/// Run `sql` with `params` in one transaction for the Parse door: as the user of
/// `session_token`, as the service role when `master` (the proxy checked the master
/// key), else anonymous. `caller.claims` is unused. Returns the first row's first column.
pub async fn call_parse(
    pool: &RequestPool,
    t: &Timeouts,
    caller: &Caller<'_>,
    session_token: Option<&str>,
    master: bool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<String>, ApiError> {
    let anonymous = session_token.is_none() && !master;
    let timeout = if anonymous && caller.short_timeout { t.anon_statement.as_str() } else { t.statement.as_str() };
    let (request_id, app) = (crate::observe::id(), app_name());
    let master = if master { "true" } else { "false" };
    let auth_params: [&(dyn ToSql + Sync); 7] = [&session_token, &timeout, &caller.client_ip, &caller.user_agent, &request_id, &app, &master];
    let row = run(pool, t.answer, &[(PARSE_AUTHENTICATE, &auth_params), (sql, params)], 1, anonymous).await?;
    Ok(row.and_then(|mut cols| cols.first_mut()?.take()))
}

/// Run `sql` with `params` in one transaction as `caller` (the same authenticate step,
/// retry on a stale backend and abandon guard as `call`), its first row's columns in
/// binary: file pieces and their metadata (files/). `max_result` bounds this call's
/// result, independent of max_result_bytes.
pub async fn call_binary(
    pool: &RequestPool,
    t: &Timeouts,
    caller: &Caller<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    max_result: usize,
) -> Result<Option<Vec<Option<Bytes>>>, ApiError> {
    let timeout = if caller.short_timeout { t.anon_statement.as_str() } else { t.statement.as_str() };
    let (request_id, app) = (crate::observe::id(), app_name()); // (issue 19, observe)
    let auth_params: [&(dyn ToSql + Sync); 6] = [&caller.claims, &timeout, &caller.client_ip, &caller.user_agent, &request_id, &app];
    run_any(pool, t.answer, &[(AUTHENTICATE, &auth_params), (sql, params)], 1, caller.claims.is_none(), max_result).await
}

/// (issue 19, D) One attempt against the per-account limit `key`, counted in Postgres
/// (sql/limits.sql) so that every proxy on the database shares the count: None while
/// at most `max` attempts fell in the current window of `window_secs`, else the
/// seconds until it ends. Its own statement and transaction (as baas_authenticator,
/// no caller's role), run before the request's, so the request's rollback cannot
/// undo it.
pub async fn account_limit_hit(pool: &RequestPool, t: &Timeouts, key: &str, max: u32, window_secs: u32) -> Result<Option<u64>, ApiError> {
    let (max, window) = (max.to_string(), window_secs.to_string());
    let params: [&(dyn ToSql + Sync); 3] = [&key, &max.as_str(), &window.as_str()];
    let sql = "select baas._account_limit_hit($1, $2::text::integer, $3::text::integer)::text";
    let row = run(pool, t.answer, &[(sql, &params)], 0, false).await?;
    // Anything but a count of seconds is a fault, never a pass (fail closed): 503.
    let Some(secs) = row.and_then(|mut cols| cols.first_mut()?.take()).and_then(|v| v.parse::<u64>().ok()) else {
        log::error!("baas._account_limit_hit gave no count of seconds");
        let mut e = ApiError::unavailable("the per-account limit could not be counted");
        e.retry_after = Some(1);
        return Err(e);
    };
    Ok((secs > 0).then_some(secs))
}

/// The requests' pool, as /healthz reports it.
pub struct PoolUse {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
}

pub fn pool_use(pool: &RequestPool) -> PoolUse {
    let s = pool.status();
    PoolUse { max_size: s.max_size, size: s.size, available: s.available, waiting: s.waiting }
}

/// One statement over a request connection, as baas_authenticator (no role switch):
/// Ok when a request connection could be had within the pool timeout and the
/// extension answered.
pub async fn check_requests(pool: &RequestPool, t: &Timeouts) -> Result<(), ApiError> {
    run(pool, t.answer, &[("select baas.auth_settings()::text", &[])], 0, false).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::Retire;

    #[test]
    fn user_agents_are_cut_to_256_bytes_without_controls() {
        use http::HeaderValue;
        assert_eq!(super::user_agent(None), "");
        assert_eq!(super::user_agent(Some(&HeaderValue::from_static("curl/8.5.0"))), "curl/8.5.0");
        assert_eq!(super::user_agent(Some(&HeaderValue::from_bytes(b"a\tb\tc").unwrap())), "abc");
        let long = "\u{e9}".repeat(200);
        let cut = super::user_agent(Some(&HeaderValue::from_bytes(long.as_bytes()).unwrap()));
        assert_eq!(cut.len(), 256);
        assert!(cut.chars().all(|c| c == '\u{e9}'));
    }
    use std::time::{Duration, Instant};

    #[test]
    fn connections_opened_before_a_retirement_are_retired_and_later_ones_kept() {
        let r = Retire::new();
        let opened = Instant::now();
        assert!(!r.retired(opened), "nothing is retired until something changes");
        r.all_until_now();
        assert!(r.retired(opened));
        let later = Instant::now() + Duration::from_micros(1);
        assert!(!r.retired(later), "a connection opened since is kept");
        // A second change retires the connections opened between the two.
        std::thread::sleep(Duration::from_millis(2));
        r.all_until_now();
        assert!(r.retired(later));
    }

    /// Every failing request of a burst reports a stale backend: one retirement a
    /// second, not one per request (each would make every connection reconnect).
    #[test]
    fn retirements_for_stale_errors_are_at_most_one_a_second() {
        let r = Retire::new();
        let opened = Instant::now();
        assert!(r.all_until_now_for_stale());
        assert!(r.retired(opened));
        let later = Instant::now() + Duration::from_micros(1);
        std::thread::sleep(Duration::from_millis(2));
        assert!(!r.all_until_now_for_stale(), "a second one within a second is not made");
        assert!(!r.retired(later), "the connections opened since are kept");
        r.all_until_now();
        assert!(r.retired(later), "an announced update is never throttled");
    }
}
