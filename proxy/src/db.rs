//! The database side: a pool of `baas_authenticator` connections and the one
//! transaction each request runs in.
//!
//! Each request sends BEGIN; `select baas.authenticate($claims)`; the route's call;
//! COMMIT as one pipelined batch of prepared statements: one network round trip. Role
//! and claims are set with set_config(..., true), so they end with the transaction.
//! If the request is abandoned half-way (client gone, panic), the connection is thrown
//! away rather than returned to the pool, so no transaction state can leak.

use crate::errors::ApiError;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

pub fn make_pool(url: &str, size: usize, wait: Duration) -> Result<Pool, String> {
    let pg: tokio_postgres::Config = url.parse().map_err(|e| format!("database_url: {e}"))?;
    let mgr = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
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
        Some(db) => {
            let err = ApiError::from_sqlstate(db.code().code(), db.message(), db.detail(), anonymous);
            if err.status.is_server_error() {
                log::error!("database error {}: {} ({:?})", db.code().code(), db.message(), db.detail());
            }
            err
        }
        None => {
            log::warn!("database connection error: {e}");
            ApiError::unavailable("the database is unavailable")
        }
    }
}

struct Guard {
    conn: Option<Object>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Not finished cleanly: close the connection instead of pooling it.
            drop(Object::take(conn));
        }
    }
}

pub async fn get(pool: &Pool) -> Result<Object, ApiError> {
    pool.get().await.map_err(|e| {
        log::warn!("no database connection: {e}");
        ApiError::unavailable("no database connection available")
    })
}

/// Run `sql` with `params` in one transaction as the caller (`claims` = verified JWT
/// claims JSON, or None for anonymous).
pub async fn call(
    ctx: &crate::server::Ctx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    returns: Returns,
) -> Result<Option<Out>, ApiError> {
    call_as(ctx.pool, ctx.claims, ctx.statement_timeout, ctx.client_ip, sql, params, returns).await
}

#[allow(clippy::too_many_arguments)]
pub async fn call_as(
    pool: &Pool,
    claims: Option<&str>,
    statement_timeout: &str,
    client_ip: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    returns: Returns,
) -> Result<Option<Out>, ApiError> {
    let anonymous = claims.is_none();
    let mut guard = Guard { conn: Some(get(pool).await?) };
    let Some(client) = guard.conn.as_ref() else {
        return Err(ApiError::internal()); // unreachable: set on the line above
    };
    let prep = |e: tokio_postgres::Error| map_pg_error(&e, anonymous);
    let begin = client.prepare_cached("begin").await.map_err(prep)?;
    // Every statement of the request runs under the configured statement_timeout; the
    // client's address is there for the audit log.
    let auth = client
        .prepare_cached(
            "select baas.authenticate($1::text::jsonb), pg_catalog.set_config('statement_timeout', $2, true), \
             pg_catalog.set_config('baas.client_ip', $3, true)",
        )
        .await
        .map_err(prep)?;
    let stmt = client.prepare_cached(sql).await.map_err(prep)?;
    let commit = client.prepare_cached("commit").await.map_err(prep)?;

    let auth_params: [&(dyn ToSql + Sync); 3] = [&claims, &statement_timeout, &client_ip];
    // Pipelined: all four are written before the first answer is read.
    let (r_begin, r_auth, r_call, r_commit) = tokio::join!(
        client.execute(&begin, &[]),
        client.execute(&auth, &auth_params),
        async {
            match returns {
                Returns::Json => client.query_opt(&stmt, params).await.map(|row| {
                    row.and_then(|r| {
                        let body = r.try_get::<_, Option<String>>(0).ok().flatten()?;
                        let extra = (1..r.len()).map(|i| r.try_get::<_, Option<String>>(i).ok().flatten()).collect();
                        Some(Out { body, extra })
                    })
                }),
                Returns::Void => client.execute(&stmt, params).await.map(|_| None),
            }
        },
        client.execute(&commit, &[]),
    );
    // The first error is the cause; later ones are "transaction aborted".
    let result = r_begin
        .and(r_auth)
        .and(r_call)
        .and_then(|v| r_commit.map(|_| v))
        .map_err(|e| map_pg_error(&e, anonymous));
    // COMMIT of an aborted transaction rolls back, so the connection is idle again.
    if let Some(conn) = guard.conn.take() {
        if conn.is_closed() {
            drop(Object::take(conn));
        }
    }
    result
}

/// A plain query as baas_authenticator (no role switch), e.g. health and key loads.
pub async fn query_json(pool: &Pool, sql: &str) -> Result<Vec<Value>, ApiError> {
    let conn = get(pool).await?;
    let row = conn.query_one(sql, &[]).await.map_err(|e| map_pg_error(&e, false))?;
    Ok((0..row.len()).map(|i| row.get::<_, Value>(i)).collect())
}
