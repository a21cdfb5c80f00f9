//! The webhook worker, a BackgroundService: poll the outbox every `poll` (captured
//! writes notify nobody: a notification would take Postgres's cluster-wide notify lock
//! at each writer's commit), and LISTEN `baas_webhooks` on a connection of its own
//! (reconnecting after 1 s, doubling to 30 s) for the DBA's resume and replays. A
//! dispatcher claims due events (`baas._webhook_claim`) whenever a delivery slot is free
//! (at most `concurrency` POSTs at once, at most half of them for one webhook, so a slow
//! or dead endpoint leaves the others slots), and each delivery reports its own attempt
//! as soon as it ends (`_webhook_delivered` / `_webhook_failed`) and wakes the
//! dispatcher: a hanging endpoint holds only its own slots, never the others'.
//!
//! A POST runs in a blocking thread (ureq) within `timeout` (connect at most 5 s of it);
//! redirects are not followed (a 3xx is a failure, like any status outside 2xx). A
//! pooled database connection is held only to claim and to report, never during a POST.

use super::sign;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_postgres::AsyncMessage;

const CLAIM_SQL: &str = "select id, url, secret, body, attempt, msg_id from baas._webhook_claim($1::integer, $2::integer, $3::integer)";
const DELIVERED_SQL: &str = "select baas._webhook_delivered($1::bigint, $2::integer, $3::integer)";
const FAILED_SQL: &str = "select baas._webhook_failed($1::bigint, $2::integer, $3::integer, $4::text)";

/// The worker's settings (config.rs: webhook_*).
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub poll: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
}

impl WebhookConfig {
    /// How long a claimed event is kept from other proxies: the POST's timeout and a
    /// minute to report it.
    fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(60)
    }

    /// Most POSTs in flight for one webhook: half the slots (at least one).
    fn per_webhook(&self) -> usize {
        self.concurrency.div_ceil(2).max(1)
    }
}

/// One claimed event.
struct Claimed {
    id: i64,
    url: String,
    secret: String,
    body: String,
    attempt: i32,
    /// The webhook-id header: msg_<uuid>, the same on every attempt.
    msg_id: String,
}

/// Never the secret, the URL (it may hold credentials) or the body.
impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed").field("id", &self.id).field("attempt", &self.attempt).field("msg_id", &self.msg_id).finish_non_exhaustive()
    }
}

/// A transport error without its URL (which may hold credentials or a token): its kind
/// and the underlying cause.
fn transport_error(t: &ureq::Transport) -> String {
    let mut s = t.kind().to_string();
    if let Some(cause) = std::error::Error::source(t) {
        s.push_str(": ");
        s.push_str(&cause.to_string());
    }
    s.chars().take(500).collect()
}

/// How one POST ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered(u16),
    /// `status`: the HTTP status if there was an answer.
    Failed { status: Option<u16>, error: String },
}

/// POST `body` to `url`, signed. Blocking: run in spawn_blocking.
pub fn post(agent: &ureq::Agent, url: &str, secret: &str, id: &str, body: &str) -> Outcome {
    let key = match sign::key_of(secret) {
        Ok(k) => k,
        Err(error) => return Outcome::Failed { status: None, error },
    };
    let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let signature = sign::signature(&key, id, timestamp, body);
    let sent = agent
        .post(url)
        .set("content-type", "application/json")
        .set("user-agent", concat!("pgbaas-webhooks/", env!("CARGO_PKG_VERSION")))
        .set("webhook-id", id)
        .set("webhook-timestamp", &timestamp.to_string())
        .set("webhook-signature", &signature)
        .send_string(body);
    match sent {
        Ok(resp) => {
            let status = resp.status();
            // Read (a little of) the answer, so that the connection can be reused.
            let mut text = String::new();
            let _ = resp.into_reader().take(1024).read_to_string(&mut text);
            if (200..300).contains(&status) {
                Outcome::Delivered(status)
            } else if (300..400).contains(&status) {
                Outcome::Failed { status: Some(status), error: format!("HTTP {status}: redirects are not followed") }
            } else {
                Outcome::Failed { status: Some(status), error: format!("HTTP {status}") }
            }
        }
        Err(ureq::Error::Status(status, resp)) => {
            let mut text = String::new();
            let _ = resp.into_reader().take(200).read_to_string(&mut text);
            let text: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
            let error = if text.trim().is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {}", text.trim()) };
            Outcome::Failed { status: Some(status), error }
        }
        Err(ureq::Error::Transport(t)) => Outcome::Failed { status: None, error: transport_error(&t) },
    }
}

pub struct WebhookWorker {
    database_url: String,
    pool: deadpool_postgres::Pool,
    cfg: WebhookConfig,
    wake: Arc<Notify>,
    agent: ureq::Agent,
}

impl WebhookWorker {
    pub fn new(database_url: String, pool: deadpool_postgres::Pool, cfg: WebhookConfig) -> WebhookWorker {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(cfg.timeout.min(Duration::from_secs(5)))
            .timeout(cfg.timeout)
            .redirects(0)
            .max_idle_connections_per_host(4)
            .build();
        WebhookWorker { database_url, pool, cfg, wake: Arc::new(Notify::new()), agent }
    }

    /// Claim up to `max` due events.
    async fn claim(&self, max: usize) -> Result<Vec<Claimed>, String> {
        let client = self.pool.get().await.map_err(|e| format!("no database connection: {e}"))?;
        let max = max.clamp(1, 1000) as i32;
        let lease = i32::try_from(self.cfg.lease().as_secs()).unwrap_or(86_400).min(86_400);
        let per = self.cfg.per_webhook().min(1000) as i32;
        let rows = client.query(CLAIM_SQL, &[&max, &lease, &per]).await.map_err(|e| format!("claiming webhook events: {e}"))?;
        rows.iter()
            .map(|r| Ok(Claimed { id: r.try_get(0)?, url: r.try_get(1)?, secret: r.try_get(2)?, body: r.try_get(3)?, attempt: r.try_get(4)?, msg_id: r.try_get(5)? }))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| format!("reading claimed webhook events: {e}"))
    }

    /// One event: POST it, then report how it went.
    async fn deliver(pool: deadpool_postgres::Pool, agent: ureq::Agent, timeout: Duration, ev: Claimed) {
        let (url, secret, body, hook_id) = (ev.url.clone(), ev.secret.clone(), ev.body.clone(), ev.msg_id.clone());
        let task = tokio::task::spawn_blocking(move || post(&agent, &url, &secret, &hook_id, &body));
        // ureq's own timeout ends the POST; this one only guards against a thread that
        // does not come back.
        let outcome = match tokio::time::timeout(timeout + Duration::from_secs(5), task).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => Outcome::Failed { status: None, error: format!("delivery task failed: {e}") },
            Err(_) => Outcome::Failed { status: None, error: format!("no answer within {} s", timeout.as_secs()) },
        };
        let client = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                // The lease lapses and the event goes again (same webhook-id).
                log::warn!("webhook event {}: cannot record the attempt ({outcome:?}): no database connection: {e}", ev.id);
                return;
            }
        };
        let reported = match &outcome {
            Outcome::Delivered(status) => client.execute(DELIVERED_SQL, &[&ev.id, &ev.attempt, &(*status as i32)]).await,
            Outcome::Failed { status, error } => {
                log::info!("webhook event {}: attempt {} failed: {error}", ev.id, ev.attempt);
                client.execute(FAILED_SQL, &[&ev.id, &ev.attempt, &status.map(|s| s as i32), error]).await
            }
        };
        if let Err(e) = reported {
            log::warn!("webhook event {}: cannot record the attempt ({outcome:?}): {e}", ev.id);
        }
    }

    /// Claim while slots are free and events come; each delivery wakes this loop when it
    /// ends (its slot is free, and the next event of its key may be due).
    async fn dispatcher_loop(&self, mut shutdown: ShutdownWatch) {
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency));
        loop {
            loop {
                let free = slots.available_permits();
                if free == 0 {
                    break;
                }
                let claimed = match self.claim(free).await {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("webhook worker: {e}");
                        break;
                    }
                };
                let n = claimed.len();
                for ev in claimed {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        // Not expected (only this loop takes slots); the lease lapses.
                        log::warn!("webhook event {}: no free slot", ev.id);
                        continue;
                    };
                    let (pool, agent, timeout, wake) = (self.pool.clone(), self.agent.clone(), self.cfg.timeout, self.wake.clone());
                    tokio::spawn(async move {
                        Self::deliver(pool, agent, timeout, ev).await;
                        drop(permit);
                        wake.notify_one();
                    });
                }
                if n < free {
                    break;
                }
            }
            crate::observe::WEBHOOK_BACKLOG.refresh(&self.pool).await; // (issue 19, observe)
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.poll) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Hold a LISTEN connection; wake the dispatcher at each notification. Returns when
    /// the connection ends (Err) or at shutdown (Ok).
    async fn listen(&self, shutdown: &mut ShutdownWatch) -> Result<(), String> {
        let cfg = crate::db::keys_config(&self.database_url)?;
        let (client, mut connection) = crate::pgconfig::connect_client(&cfg, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        let wake = self.wake.clone();
        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
        let pump = tokio::spawn(async move {
            while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = closed_tx.send(());
        });
        client.batch_execute("listen baas_webhooks").await.map_err(|e| e.to_string())?;
        // Anything captured while this connection was down.
        self.wake.notify_one();
        let r = tokio::select! {
            _ = &mut closed => Err("connection closed".to_string()),
            _ = shutdown.changed() => Ok(()),
        };
        pump.abort();
        r
    }

    async fn listener_loop(&self, mut shutdown: ShutdownWatch) {
        let mut pause = Duration::from_secs(1);
        loop {
            let started = std::time::Instant::now();
            match self.listen(&mut shutdown).await {
                Ok(()) => return,
                Err(e) => log::warn!("webhook worker: LISTEN baas_webhooks: {e}; reconnecting in {} s", pause.as_secs()),
            }
            if started.elapsed() > Duration::from_secs(60) {
                pause = Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }
}

#[async_trait]
impl pingora::services::background::BackgroundService for WebhookWorker {
    async fn start(&self, shutdown: ShutdownWatch) {
        tokio::join!(self.listener_loop(shutdown.clone()), self.dispatcher_loop(shutdown));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_webhook_gets_at_most_half_the_slots() {
        let c = |n| WebhookConfig { poll: Duration::from_secs(5), timeout: Duration::from_secs(10), concurrency: n };
        assert_eq!(c(1).per_webhook(), 1);
        assert_eq!(c(8).per_webhook(), 4);
        assert_eq!(c(5).per_webhook(), 3);
        assert!(c(8).lease() > Duration::from_secs(10));
    }

    #[test]
    fn an_unreachable_endpoint_is_a_failure_without_status_nor_url() {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).redirects(0).build();
        // Port 9 (discard) on loopback: nothing listens in the test environment.
        let o = post(&agent, "http://user:hunter2@127.0.0.1:9/hook?token=tok3n", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1", "{}");
        let Outcome::Failed { status: None, error } = &o else { panic!("{o:?}") };
        assert!(!error.contains("hunter2") && !error.contains("tok3n") && !error.contains("127.0.0.1"), "{error}");
        assert!(!error.is_empty());
    }

    #[test]
    fn a_claimed_event_never_prints_its_secret_or_url() {
        let c = Claimed { id: 7, url: "https://u:pw@x.test/h?k=tok3n".into(), secret: "whsec_s3cret".into(), body: "{}".into(), attempt: 1, msg_id: "msg_1".into() };
        let d = format!("{c:?}");
        assert!(d.contains("msg_1") && !d.contains("s3cret") && !d.contains("pw@") && !d.contains("tok3n"), "{d}");
    }
}
