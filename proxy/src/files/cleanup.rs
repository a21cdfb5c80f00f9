//! The background sweep of expired upload sessions: `baas.cleanup_uploads(100)`
//! until a sweep removes fewer than 100, every `upload_cleanup_secs` (±10 % jitter, so
//! several proxies do not sweep in step; they are safe together anyway: the function
//! takes rows FOR UPDATE SKIP LOCKED).

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;

pub struct Cleanup {
    pub pool: deadpool_postgres::Pool,
    pub every: Duration,
}

/// One sweep: how many sessions were removed.
pub async fn sweep(pool: &deadpool_postgres::Pool) -> Result<u64, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let stmt = client.prepare_cached(super::sql::CLEANUP).await.map_err(|e| e.to_string())?;
    let mut total = 0u64;
    loop {
        let n: i32 = client.query_one(&stmt, &[]).await.map_err(|e| e.to_string())?.get(0);
        total += n.max(0) as u64;
        if n < 100 {
            return Ok(total);
        }
    }
}

/// `every` ± 10 %, from the clock's nanoseconds (no rand dependency for this).
fn jittered(every: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let f = 0.9 + 0.2 * (nanos as f64 / 1e9);
    every.mul_f64(f)
}

pub async fn run(pool: deadpool_postgres::Pool, every: Duration, mut shutdown: ShutdownWatch) {
    if every.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(jittered(every)) => {}
            _ = shutdown.changed() => return,
        }
        match sweep(&pool).await {
            Ok(0) => {}
            Ok(n) => log::info!("removed {n} expired upload sessions"),
            Err(e) => log::warn!("sweeping expired uploads: {e}"),
        }
    }
}

#[async_trait]
impl BackgroundService for Cleanup {
    async fn start(&self, shutdown: ShutdownWatch) {
        run(self.pool.clone(), self.every, shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = super::jittered(std::time::Duration::from_secs(60));
            assert!(d >= std::time::Duration::from_secs(54) && d <= std::time::Duration::from_secs(66), "{d:?}");
        }
    }
}
