//! pgbaas's own housekeeping (issue 18), a BackgroundService: every `housekeeping_secs`
//! (±10 % jitter, so several proxies do not run in step) one call of
//! `baas.housekeeping()`, which removes a batch of each kind of garbage pgbaas leaves
//! (ended sessions, expired tokens and uploads, old outbox rows) in one short
//! transaction and answers the counts. Several proxies are safe together: a run that
//! finds another one going answers `{"skipped": true}`. A failure is logged and the
//! next period tries again; nothing here stops the proxy. 0 turns it off (then run
//! `baas.housekeeping()` from pg_cron: docs/schedules.md).

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;

const HOUSEKEEPING_SQL: &str = "select baas.housekeeping()::text";
/// A run's ceiling: a statement_timeout set inside a function does not fire, so the run
/// goes in a transaction of its own with this as its local statement_timeout (the
/// function itself waits at most 5 s for any lock: sql/housekeeping.sql).
const RUN_TIMEOUT_SQL: &str = "set local statement_timeout = '60s'";
/// Consecutive skipped runs (another run holding the lock) after which each further
/// skip is logged as a warning: a run stuck somewhere stops housekeeping everywhere.
const SKIPS_BEFORE_WARNING: u32 = 3;

pub struct Housekeeping {
    pub pool: deadpool_postgres::Pool,
    pub every: Duration,
}

/// One run's answer: the counts per kind, or None when another run held the lock.
pub async fn run_once(pool: &deadpool_postgres::Pool) -> Result<Option<Vec<(String, u64)>>, String> {
    // tokio-postgres shows a server error as just "db error": say which.
    fn db_err(e: tokio_postgres::Error) -> String {
        match e.as_db_error() {
            Some(d) => format!("{} {}", d.code().code(), d.message()),
            None => e.to_string(),
        }
    }
    let mut client = pool.get().await.map_err(|e| e.to_string())?;
    // Dropped without commit (an error), the transaction rolls back.
    let tx = client.transaction().await.map_err(db_err)?;
    tx.batch_execute(RUN_TIMEOUT_SQL).await.map_err(db_err)?;
    let row = tx.query_one(HOUSEKEEPING_SQL, &[]).await.map_err(db_err)?;
    tx.commit().await.map_err(db_err)?;
    let text: String = row.get(0);
    counts(&text)
}

/// `{"sessions": 2, "auth_tokens": 0, …}` → the kinds in name order; `{"skipped": true}` → None.
fn counts(text: &str) -> Result<Option<Vec<(String, u64)>>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("unexpected answer {text}: {e}"))?;
    let obj = v.as_object().ok_or_else(|| format!("unexpected answer {text}"))?;
    if obj.get("skipped").and_then(|s| s.as_bool()) == Some(true) {
        return Ok(None);
    }
    let mut out: Vec<(String, u64)> = obj.iter().map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0))).collect();
    out.sort();
    Ok(Some(out))
}

/// How loudly the `skips`-th skip in a row is logged.
fn skip_level(skips: u32) -> log::Level {
    if skips >= SKIPS_BEFORE_WARNING { log::Level::Warn } else { log::Level::Debug }
}

/// `every` ± 10 %, from the clock's nanoseconds.
fn jittered(every: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    every.mul_f64(0.9 + 0.2 * (nanos as f64 / 1e9))
}

pub async fn run(pool: deadpool_postgres::Pool, every: Duration, mut shutdown: ShutdownWatch) {
    if every.is_zero() {
        return;
    }
    let mut skips: u32 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(jittered(every)) => {}
            _ = shutdown.changed() => return,
        }
        let outcome = run_once(&pool).await;
        skips = if matches!(outcome, Ok(None)) { skips.saturating_add(1) } else { 0 };
        match outcome {
            Ok(None) if skip_level(skips) == log::Level::Warn => log::warn!(
                "housekeeping skipped {skips} times in a row: another run (a proxy or pg_cron) has held its lock all along; \
                 look for a stuck baas.housekeeping() in pg_stat_activity"
            ),
            Ok(None) => log::debug!("housekeeping: another run is going; skipped"),
            Ok(Some(c)) if c.iter().all(|(_, n)| *n == 0) => {}
            Ok(Some(c)) => {
                let what: Vec<String> = c.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect();
                log::info!("housekeeping removed: {}", what.join(", "));
            }
            Err(e) => log::warn!("housekeeping (baas.housekeeping()) failed, trying again in {}s: {e}", every.as_secs()),
        }
    }
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, shutdown: ShutdownWatch) {
        run(self.pool.clone(), self.every, shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_and_skips() {
        assert_eq!(super::counts(r#"{"skipped": true}"#).unwrap(), None);
        assert_eq!(
            super::counts(r#"{"uploads": 0, "sessions": 2}"#).unwrap(),
            Some(vec![("sessions".to_string(), 2), ("uploads".to_string(), 0)])
        );
        assert!(super::counts("[1]").is_err());
    }

    #[test]
    fn repeated_skips_become_a_warning() {
        assert_eq!(super::skip_level(1), log::Level::Debug);
        assert_eq!(super::skip_level(2), log::Level::Debug);
        assert_eq!(super::skip_level(3), log::Level::Warn);
        assert_eq!(super::skip_level(40), log::Level::Warn);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = super::jittered(std::time::Duration::from_secs(300));
            assert!(d >= std::time::Duration::from_secs(270) && d <= std::time::Duration::from_secs(330), "{d:?}");
        }
    }
}
