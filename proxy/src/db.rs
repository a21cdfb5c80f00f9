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
//! The small tokio-postgres `Pool` serves the proxy's own queries: key loads and
//! settings.

use crate::errors::ApiError;
use crate::pgconfig::{PgConfig, PoolConnect};
use crate::pgwire::{Conn, PgError};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
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
}

impl managed::Manager for WireManager {
    type Type = Conn;
    type Error = PgError;

    async fn create(&self) -> Result<Conn, PgError> {
        Conn::connect_limited(&self.cfg, self.connect_timeout, self.max_result_bytes).await
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<PgError> {
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
    managed::Pool::builder(WireManager { cfg: parse_url(url)?, connect_timeout: wait, max_result_bytes })
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(wait))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| format!("pool: {e}"))
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

pub fn map_pg_error(e: &tokio_postgres::Error, anonymous: bool) -> ApiError {
    match e.as_db_error() {
        Some(db) => from_db(db.code().code(), db.message(), db.detail(), anonymous),
        None => {
            log::warn!("database connection error: {e}");
            ApiError::unavailable("the database is unavailable")
        }
    }
}

fn from_db(code: &str, message: &str, detail: Option<&str>, anonymous: bool) -> ApiError {
    let err = ApiError::from_sqlstate(code, message, detail, anonymous);
    if err.status.is_server_error() {
        log::error!("database error {code}: {message} ({detail:?})");
    }
    err
}

fn map_wire_error(e: &PgError, anonymous: bool) -> ApiError {
    match e {
        PgError::Db { code, message, detail } => from_db(code, message, detail.as_deref(), anonymous),
        PgError::Conn(m) => {
            log::warn!("database connection error: {m}");
            ApiError::unavailable("the database is unavailable")
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

fn no_connection(e: impl std::fmt::Display) -> ApiError {
    log::warn!("no database connection: {e}");
    ApiError::unavailable("no database connection available")
}

/// Every statement of the request runs under the configured statement_timeout; the
/// client's address is there for the audit log.
const AUTHENTICATE: &str = "select baas.authenticate($1::text::jsonb), pg_catalog.set_config('statement_timeout', $2, true), \
     pg_catalog.set_config('baas.client_ip', $3, true)";

/// Run `sql` with `params` in one transaction as the caller (`ctx.claims`: verified
/// JWT claims JSON, or None for anonymous).
pub async fn call(
    ctx: &crate::server::Ctx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    returns: Returns,
) -> Result<Option<Out>, ApiError> {
    let anonymous = ctx.claims.is_none();
    let deadline = ctx.db_deadline;
    let conn = ctx.pool.get().await.map_err(no_connection)?;
    let mut guard = Guard { conn: Some(conn) };
    let Some(conn) = guard.conn.as_mut() else {
        return Err(ApiError::internal()); // unreachable: set on the line above
    };
    let auth_params: [&(dyn ToSql + Sync); 3] = [&ctx.claims, &ctx.statement_timeout, &ctx.client_ip];
    let Ok(result) = tokio::time::timeout(deadline, conn.run(&[(AUTHENTICATE, &auth_params), (sql, params)], 1)).await else {
        // The guard cancels the statement: its answer may still come.
        log::warn!("the database did not answer within {deadline:?}");
        return Err(ApiError::unavailable("the database did not answer in time"));
    };
    // Finished: back to the pool (recycling drops a connection that is not reusable).
    guard.conn.take();
    let row = result.map_err(|e| map_wire_error(&e, anonymous))?;
    Ok(match returns {
        Returns::Void => None,
        Returns::Json => row.and_then(|mut cols| {
            let body = cols.first_mut()?.take()?;
            Some(Out { body, extra: cols.into_iter().skip(1).collect() })
        }),
    })
}

/// A plain query as baas_authenticator (no role switch), e.g. health and key loads.
pub async fn query_json(pool: &Pool, sql: &str) -> Result<Vec<Value>, ApiError> {
    let conn = get(pool).await?;
    let row = conn.query_one(sql, &[]).await.map_err(|e| map_pg_error(&e, false))?;
    Ok((0..row.len()).map(|i| row.get::<_, Value>(i)).collect())
}
