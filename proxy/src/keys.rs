//! Keeping the signing keys current without making requests wait for the database.
//!
//! - `KeyListener`: a background service holding one dedicated connection that
//!   LISTENs on `baas_keys` (baas.rotate_signing_key() notifies it) and reloads the
//!   keys over that same connection, and on `baas_sessions` (a session ended: logout,
//!   password change, deleted account, refresh reuse), whose tokens are then refused
//!   without a round trip. Reconnects with a pause when the database goes.
//! - The same connection LISTENs on `baas_extension`: every upgrade script sends
//!   `pg_notify('baas_extension', '<version>')`; the listener then reads the installed
//!   version from pg_extension and, if it changed, the requests' connections opened
//!   before are retired at their next checkout (db::Retire), so none runs on with a
//!   backend that cached the old version's plans and functions. (Any role may notify:
//!   a notification alone retires nothing.) A version changed while the listener was
//!   disconnected is noticed when it reconnects.
//! - `reload_keys`: a reload over a pooled connection (periodic, or for an unknown
//!   `kid` only if a connection is free right now; otherwise the token is refused).

use crate::db;
use crate::errors::ApiError;
use crate::jwt::{KeyCache, KeySet};
use async_trait::async_trait;
use deadpool_postgres::{Pool, Timeouts};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::AsyncMessage;

pub const KEYS_SQL: &str = "select baas.jwks(), baas.auth_settings()";

pub fn key_set(row: &tokio_postgres::Row) -> Result<KeySet, String> {
    let jwks: serde_json::Value = row.try_get(0).map_err(|e| e.to_string())?;
    let settings: serde_json::Value = row.try_get(1).map_err(|e| e.to_string())?;
    KeySet::from_json(&jwks, &settings)
}

/// Reload the keys over a pooled connection. `wait`: how long to wait for one
/// (`Some(ZERO)`: only if one is free this instant, for the unknown-kid reload that a
/// request triggers; `None`: the pool's own timeout, for the periodic reload).
pub async fn reload_keys(pool: &Pool, cache: &KeyCache, wait: Option<Duration>) -> Result<(), ApiError> {
    let conn = match wait {
        Some(w) => {
            let t = Timeouts { wait: Some(w), ..pool.timeouts() };
            pool.timeout_get(&t).await.map_err(|_| ApiError::unavailable("no idle database connection"))?
        }
        None => db::get(pool).await?,
    };
    let row = match conn.query_one(KEYS_SQL, &[]).await {
        Ok(row) => row,
        Err(e) => {
            if e.as_db_error().is_some_and(|d| crate::pgwire::backend_is_stale(d.code().code(), d.message(), false)) {
                // Its backend runs a replaced library: never back into the pool.
                drop(deadpool_postgres::Object::take(conn));
            }
            return Err(db::map_pg_error(&e, false));
        }
    };
    let ks = key_set(&row).map_err(|e| {
        log::error!("signing keys from the database are unusable: {e}");
        ApiError::internal()
    })?;
    cache.replace(ks);
    Ok(())
}

pub struct KeyListener {
    pub database_url: String,
    pub keys: Arc<KeyCache>,
    /// Retires the requests' connections when the extension's version changes.
    pub retire: Arc<db::Retire>,
    /// The extension's version as last seen (None before the first connection).
    pub version: std::sync::Mutex<Option<String>>,
}

/// The installed version, read at each (re)connection of the listener and at each
/// notification on `baas_extension`.
const VERSION_SQL: &str = "select extversion from pg_catalog.pg_extension where extname = 'pgbaas'";

/// The C symbols of the functions in pgbaas's library (module_pathname in the control
/// file is `$libdir/pgbaas`).
const SYMBOLS_SQL: &str =
    "select coalesce(array_agg(prosrc), '{}') from pg_catalog.pg_proc where probin = '$libdir/pgbaas' and prolang = (select oid from pg_catalog.pg_language where lanname = 'c')";

impl KeyListener {
    /// The extension is at `version` now, as read from pg_extension: if it was at
    /// another version when last seen, retire the requests' connections. A
    /// notification's payload is not believed: any role may `pg_notify`, and retiring
    /// every connection on its word would let it make the whole pool reconnect at will.
    fn saw_version(&self, version: &str) {
        let mut last = self.version.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref().is_some_and(|v| v != version) {
            log::warn!("pgbaas extension at {version} (was {}): retiring the connections opened before", last.as_deref().unwrap_or("?"));
            self.retire.all_until_now();
        }
        *last = Some(version.to_string());
    }

    /// Read the installed version and act on it (`saw_version`), and the C symbols of
    /// its library, by which pgwire::backend_is_stale tells a 42P13 of ours.
    async fn check_version(&self, client: &tokio_postgres::Client) -> Result<(), String> {
        let symbols = client.query_one(SYMBOLS_SQL, &[]).await.map_err(|e| e.to_string())?;
        crate::pgwire::set_library_symbols(symbols.try_get(0).map_err(|e| e.to_string())?);
        if let Some(row) = client.query_opt(VERSION_SQL, &[]).await.map_err(|e| e.to_string())? {
            self.saw_version(row.try_get(0).map_err(|e| e.to_string())?);
        }
        Ok(())
    }
}

impl KeyListener {
    /// One connection's life: LISTEN, reload once (a rotation may have been missed
    /// while disconnected), then reload at each notification. Returns on shutdown (true)
    /// or when the connection ends (false).
    async fn session(&self, shutdown: &mut ShutdownWatch) -> Result<bool, String> {
        let cfg = crate::db::keys_config(&self.database_url)?;
        let (client, mut connection) = crate::pgconfig::connect_client(&cfg, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (vtx, mut vrx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let keys = self.keys.clone();
        tokio::spawn(async move {
            while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match m {
                    Ok(AsyncMessage::Notification(n)) if n.channel() == "baas_sessions" => keys.session_ended(n.payload()),
                    Ok(AsyncMessage::Notification(n)) if n.channel() == "baas_extension" => {
                        if vtx.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(AsyncMessage::Notification(_)) => {
                        if tx.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        client.batch_execute("listen baas_keys; listen baas_sessions; listen baas_extension").await.map_err(|e| e.to_string())?;
        self.check_version(&client).await?;
        loop {
            let row = client.query_one(KEYS_SQL, &[]).await.map_err(|e| e.to_string())?;
            match key_set(&row) {
                Ok(ks) => self.keys.replace(ks),
                Err(e) => log::error!("signing keys from the database are unusable: {e}"),
            }
            loop {
                tokio::select! {
                    m = rx.recv() => if m.is_none() { return Ok(false) } else { break },
                    v = vrx.recv() => match v {
                        Some(()) => {
                            // Coalesce a burst (any role may send them) into one read.
                            while vrx.try_recv().is_ok() {}
                            self.check_version(&client).await?;
                        }
                        None => return Ok(false),
                    },
                    _ = shutdown.changed() => return Ok(true),
                }
            }
            // Coalesce a burst of notifications into one reload.
            while rx.try_recv().is_ok() {}
        }
    }
}

#[async_trait]
impl BackgroundService for KeyListener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            match self.session(&mut shutdown).await {
                Ok(true) => return,
                Ok(false) => log::warn!("key listener: connection closed; reconnecting"),
                Err(e) => log::warn!("key listener: {e}; retrying in 1 s"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
