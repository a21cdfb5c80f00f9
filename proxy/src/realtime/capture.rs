//! The capture's two loops, one background service (docs/realtime-delivery.md):
//!
//! - Leader: calls `baas._realtime_pull(10000)` on a dedicated connection, which moves
//!   the slot's decoded messages into `baas.realtime_events` and notifies
//!   `baas_realtime`. Every proxy runs it; a transaction-level advisory lock in the
//!   function lets one work and the others return NULL at once. Again at once after it
//!   advanced, else every 2 ms (an idle pull is one cheap statement: the WAL did not
//!   move past the slot). The pull starts the extension's capture worker, which then
//!   decodes and appends on its own (docs/realtime.md, "Capture"): while one runs, the
//!   leader only watches, a pull every 250 ms (one that finds the worker gone starts the
//!   next). Without `wal_level = logical` (SQLSTATE 55000) it says so once, marks the
//!   feeds unavailable and retries every 10 s.
//! - Reader: LISTENs on `baas_realtime` on its own connection (a 1 s timer is the
//!   safety net for a notification lost with a connection) and reads the new events with
//!   `baas._realtime_read(after, 1000)`, in order, into the hub.
//!
//! Neither ever waits for a subscriber: the hub only queues frames.

use super::event::Event;
use super::hub::{Hub, Snap};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, IsolationLevel};

const PULL: &str = "select baas._realtime_pull(10000)";
/// Whether this database's capture worker runs: it holds the slot for its life (a pull
/// holds it only while it peeks). pg_replication_slots is readable by any role, unlike
/// pg_stat_activity's backend_type of another role's process (NULL: seen at 150 pulls/s).
const WORKER: &str = "select exists (select from pg_catalog.pg_replication_slots s \
    where s.database = pg_catalog.current_database() and pg_catalog.starts_with(s.slot_name::text, 'baas_rt_') and s.active)";
/// The leader's pace while the worker runs: it only relaunches a worker that died.
const WATCH: Duration = Duration::from_millis(250);
const WORKER_CHECK: Duration = Duration::from_secs(1);
/// The sixth column: seconds from the event's commit to now, both by the database's
/// clock (the proxy's may differ), for `pgbaas_realtime_lag_seconds`.
const READ: &str = "select position, xid::text, kind, collection, body::text, \
    extract(epoch from pg_catalog.clock_timestamp() - committed_at)::float8 from baas._realtime_read($1, $2)";
/// An extension before 0.10.0 (proxies upgraded before `ALTER EXTENSION pgbaas UPDATE`):
/// no commit time, no lag.
const READ_BEFORE_0_10: &str = "select position, xid::text, kind, collection, body::text, null::float8 from baas._realtime_read($1, $2)";
const READ_BATCH: i32 = 1000;
const START: &str = "select baas.realtime_position(), \
    (select coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(n.member_role, n.role)), '[]')::text from baas._realtime_role_nesting() n), \
    pg_catalog.pg_current_snapshot()::text";

const ROLES: &str = "select \
    (select coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(n.member_role, n.role)), '[]')::text from baas._realtime_role_nesting() n), \
    (select coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(m.user_id::text, m.role)), '[]')::text \
       from baas._realtime_role_members($1::text[]::uuid[]) m)";

/// The reader's statement, and whether it is the one without commit times (an
/// extension older than this proxy: `READ` names a column it lacks, 42703).
async fn prepare_read(client: &tokio_postgres::Client) -> Result<(tokio_postgres::Statement, bool), String> {
    match client.prepare(READ).await {
        Ok(s) => Ok((s, false)),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN) => {
            Ok((client.prepare(READ_BEFORE_0_10).await.map_err(|e| e.to_string())?, true))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// What one read hands the hub: events in order, or a capture reset at a position.
#[derive(Debug)]
pub enum Chunk {
    Events(Vec<Arc<Event>>),
    /// Everything up to this position is unknown to this reader.
    Reset(u64),
}

/// Split a read after `after` into events and resets. Positions are given one by one
/// (`_realtime_state.last_position`), so the first event not at `after + 1`, or any
/// later jump, means events this reader never saw were deleted (retention ran while it
/// was behind or away): a reset at the last lost position, then the events go on. An
/// event it cannot parse is a reset at its own position: never silently dropped, since
/// it may be a role change whose loss would leave a principal that grants reads.
pub fn chunks(after: u64, read: Vec<(u64, Result<Event, String>)>) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut events = Vec::new();
    let mut expect = after + 1;
    for (position, parsed) in read {
        if position != expect {
            log::warn!("realtime: events {expect}..={} were deleted before this proxy read them; every subscription is reset", position.saturating_sub(1));
            out.push(Chunk::Events(std::mem::take(&mut events)));
            out.push(Chunk::Reset(position.saturating_sub(1)));
        }
        expect = position + 1;
        match parsed {
            Ok(e) => events.push(Arc::new(e)),
            Err(e) => {
                log::error!("realtime event {position} unreadable: {e}; every subscription is reset");
                out.push(Chunk::Events(std::mem::take(&mut events)));
                out.push(Chunk::Reset(position));
            }
        }
    }
    out.push(Chunk::Events(events));
    out.retain(|c| !matches!(c, Chunk::Events(v) if v.is_empty()));
    out
}

pub struct Capture {
    pub database_url: String,
    pub hub: Arc<Hub>,
}

fn config(url: &str) -> Result<crate::pgconfig::PgConfig, String> {
    let pg = crate::pgconfig::PgConfig::parse(url)?;
    let name = format!("{} (realtime)", pg.pg.get_application_name().unwrap_or(crate::pgwire::APPLICATION_NAME));
    Ok(pg.with_application_name(&name))
}

type Client = tokio_postgres::Client;

async fn connect(url: &str, notify: Option<tokio::sync::mpsc::UnboundedSender<()>>) -> Result<Client, String> {
    let cfg = config(url)?;
    let (client, mut connection) = crate::pgconfig::connect_client(&cfg, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
    tokio::spawn(async move {
        while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match m {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(tx) = &notify {
                        if tx.send(()).is_err() {
                            break;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok(client)
}

impl Capture {
    /// One leader connection's life; Ok(true) on shutdown.
    async fn lead(&self, shutdown: &mut ShutdownWatch) -> Result<bool, String> {
        let client = connect(&self.database_url, None).await?;
        let stmt = client.prepare(PULL).await.map_err(|e| e.to_string())?;
        let worker_stmt = client.prepare(WORKER).await.map_err(|e| e.to_string())?;
        let mut last: Option<i64> = None;
        let mut warned = false;
        let mut worker = false;
        let mut checked = tokio::time::Instant::now();
        loop {
            if checked.elapsed() >= WORKER_CHECK {
                checked = tokio::time::Instant::now();
                worker = client.query_one(&worker_stmt, &[]).await.map_err(|e| e.to_string())?.try_get(0).unwrap_or(false);
            }
            let pause = match client.query_one(&stmt, &[]).await {
                Ok(row) => {
                    self.hub.set_unavailable(false);
                    warned = false;
                    let now: Option<i64> = row.try_get(0).map_err(|e| e.to_string())?;
                    let advanced = now.is_some() && now > last;
                    if now.is_some() {
                        last = now;
                    }
                    if worker {
                        WATCH
                    } else if advanced {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(2)
                    }
                }
                Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "55000") => {
                    if !warned {
                        log::error!("live feeds are unavailable: {}", e.as_db_error().map(|d| d.message()).unwrap_or_default());
                        warned = true;
                    }
                    self.hub.set_unavailable(true);
                    Duration::from_secs(10)
                }
                Err(e) => return Err(e.to_string()),
            };
            if pause.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return Ok(true),
            }
        }
    }

    /// One reader connection's life; Ok(true) on shutdown.
    async fn read(&self, shutdown: &mut ShutdownWatch) -> Result<bool, String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut client = connect(&self.database_url, Some(tx)).await?;
        client.batch_execute("listen baas_realtime").await.map_err(|e| e.to_string())?;
        if self.hub.position() == 0 {
            // Start at the log's end, with the role graph as of then, in one snapshot:
            // the events before concern no subscription of this proxy.
            let t = client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).start().await.map_err(|e| e.to_string())?;
            let row = t.query_one(START, &[]).await.map_err(|e| e.to_string())?;
            let pos: i64 = row.try_get(0).map_err(|e| e.to_string())?;
            let nesting: String = row.try_get(1).map_err(|e| e.to_string())?;
            let snap: String = row.try_get(2).map_err(|e| e.to_string())?;
            t.commit().await.map_err(|e| e.to_string())?;
            let nesting: Vec<(String, String)> = serde_json::from_str(&nesting).map_err(|e| e.to_string())?;
            let snap = Snap::parse(&snap).ok_or_else(|| format!("snapshot {snap:?}"))?;
            self.hub.start_at(pos.max(0) as u64, &nesting);
            self.hub.start_snapshot(&snap);
        }
        // With an extension older than this proxy, read without commit times and try
        // the full read again every RETRY_READ, so that the lag is observed soon after
        // ALTER EXTENSION pgbaas UPDATE, without a restart.
        const RETRY_READ: Duration = Duration::from_secs(30);
        let (mut stmt, older) = prepare_read(&client).await?;
        if older {
            log::warn!("realtime: the pgbaas extension is older than this proxy (no commit times): pgbaas_realtime_lag_seconds stays empty until ALTER EXTENSION pgbaas UPDATE (tried again every 30 s)");
        }
        let mut older_since = older.then(tokio::time::Instant::now);
        loop {
            if older_since.is_some_and(|t| t.elapsed() >= RETRY_READ) {
                let (s, older) = prepare_read(&client).await?;
                if !older {
                    log::info!("realtime: the pgbaas extension now gives commit times: pgbaas_realtime_lag_seconds is observed");
                }
                (stmt, older_since) = (s, older.then(tokio::time::Instant::now));
            }
            loop {
                let after = self.hub.position() as i64;
                let rows = client.query(&stmt, &[&after, &READ_BATCH]).await.map_err(|e| e.to_string())?;
                let n = rows.len();
                let mut read = Vec::with_capacity(n);
                for r in rows {
                    let position: i64 = r.try_get(0).map_err(|e| e.to_string())?;
                    let xid: String = r.try_get(1).map_err(|e| e.to_string())?;
                    let kind: String = r.try_get(2).map_err(|e| e.to_string())?;
                    let collection: Option<String> = r.try_get(3).map_err(|e| e.to_string())?;
                    let body: String = r.try_get(4).map_err(|e| e.to_string())?;
                    let lag: Option<f64> = r.try_get(5).map_err(|e| e.to_string())?;
                    if let Some(lag) = lag {
                        crate::metrics::REALTIME_LAG.observe(lag.max(0.0));
                    }
                    let xid: u64 = xid.parse().map_err(|_| format!("xid {xid:?}"))?;
                    read.push((position as u64, Event::parse(position as u64, xid, &kind, collection.as_deref(), &body)));
                }
                for chunk in chunks(after as u64, read) {
                    match chunk {
                        Chunk::Events(events) => self.hub.apply(events),
                        Chunk::Reset(at) => {
                            let (nesting, members) = self.roles_now(&client).await?;
                            self.hub.capture_reset(at, &nesting, &members);
                        }
                    }
                }
                if n < READ_BATCH as usize {
                    break;
                }
            }
            tokio::select! {
                m = rx.recv() => if m.is_none() { return Ok(false) },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return Ok(true),
            }
            // A burst of notifications is one read.
            while rx.try_recv().is_ok() {}
        }
    }

    /// The role graph and the direct roles of every user the hub holds subscriptions
    /// of, in one snapshot (for a capture reset).
    async fn roles_now(&self, client: &Client) -> Result<(Vec<(String, String)>, Vec<(String, String)>), String> {
        let users = self.hub.users();
        let row = client.query_one(ROLES, &[&users]).await.map_err(|e| e.to_string())?;
        let nesting: String = row.try_get(0).map_err(|e| e.to_string())?;
        let members: String = row.try_get(1).map_err(|e| e.to_string())?;
        Ok((serde_json::from_str(&nesting).map_err(|e| e.to_string())?, serde_json::from_str(&members).map_err(|e| e.to_string())?))
    }

    /// Run one loop's sessions until shutdown. A failure repeating itself (the database
    /// down, an extension older than 0.4.0 without the functions) is logged when it
    /// first happens and retried with a growing pause, 1 s up to 10 s, not every second.
    async fn forever<'a, F, Fut>(name: &str, mut shutdown: ShutdownWatch, f: F)
    where
        F: Fn(ShutdownWatch) -> Fut,
        Fut: std::future::Future<Output = (Result<bool, String>, ShutdownWatch)> + 'a,
    {
        let mut last_error = String::new();
        let mut pause = Duration::from_secs(1);
        loop {
            let (r, s) = f(shutdown).await;
            shutdown = s;
            match r {
                Ok(true) => return,
                Ok(false) => {
                    log::warn!("realtime {name}: connection closed; reconnecting");
                    pause = Duration::from_secs(1);
                }
                Err(e) if e == last_error => pause = (pause * 2).min(Duration::from_secs(10)),
                Err(e) => {
                    log::warn!("realtime {name}: {e}; retrying");
                    last_error = e;
                    pause = Duration::from_secs(1);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Capture {
    async fn start(&self, shutdown: ShutdownWatch) {
        let lead = Capture::forever("leader", shutdown.clone(), |mut s| async move { (self.lead(&mut s).await, s) });
        let read = Capture::forever("reader", shutdown, |mut s| async move { (self.read(&mut s).await, s) });
        tokio::join!(lead, read);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(p: u64) -> (u64, Result<Event, String>) {
        (p, Event::parse(p, p, "member", None, r#"{"user":"u","role":"r","op":"remove"}"#))
    }

    fn shape(c: &[Chunk]) -> Vec<String> {
        c.iter()
            .map(|c| match c {
                Chunk::Events(v) => format!("{:?}", v.iter().map(|e| e.position).collect::<Vec<_>>()),
                Chunk::Reset(p) => format!("reset@{p}"),
            })
            .collect()
    }

    #[test]
    fn a_gap_or_an_unreadable_event_is_a_reset_never_a_silent_skip() {
        assert_eq!(shape(&chunks(10, vec![ev(11), ev(12)])), ["[11, 12]"]);
        assert_eq!(shape(&chunks(10, vec![ev(15), ev(16)])), ["reset@14", "[15, 16]"], "11..14 pruned unread");
        assert_eq!(shape(&chunks(10, vec![ev(11), ev(13)])), ["[11]", "reset@12", "[13]"]);
        let bad = (12, Err("member event: missing field".to_string()));
        assert_eq!(shape(&chunks(10, vec![ev(11), bad, ev(13)])), ["[11]", "reset@12", "[13]"], "the unreadable event is the reset");
        assert!(chunks(10, vec![]).is_empty());
    }
}
