//! The background sweep, every `upload_cleanup_secs` (±10 % jitter, so several proxies
//! do not sweep in step; they are safe together anyway: both functions take rows FOR
//! UPDATE SKIP LOCKED): expired upload sessions, `baas.cleanup_uploads(100)` until a
//! call removes fewer than 100; then the bytes of deleted or replaced files,
//! `baas.cleanup_blobs(64)` (at most 64 chunk rows, one short transaction, per call)
//! until a call removes fewer than 64. A delete or a replace
//! only moves the old blob to `baas._blob_trash` (its bytes unreadable and off the
//! quota at once), so that its transaction stays O(1) in the file's size.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::time::Duration;

pub struct Cleanup {
    pub pool: deadpool_postgres::Pool,
    pub every: Duration,
}

/// Chunk rows (of at most 1 MiB) `baas.cleanup_blobs` deletes per call.
const BLOB_BATCH: i32 = 64;
const CLEANUP_BLOBS: &str = "select baas.cleanup_blobs($1::integer)";

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired upload sessions.
    pub sessions: u64,
    /// Chunk and blob rows of deleted or replaced files.
    pub blob_rows: u64,
}

/// One sweep: the expired sessions, then the trashed blobs' bytes, batch by batch
/// (each call its own transaction).
pub async fn sweep(pool: &deadpool_postgres::Pool) -> Result<Swept, String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let stmt = client.prepare_cached(super::sql::CLEANUP).await.map_err(|e| e.to_string())?;
    let mut swept = Swept::default();
    loop {
        let n: i32 = client.query_one(&stmt, &[]).await.map_err(|e| e.to_string())?.get(0);
        swept.sessions += n.max(0) as u64;
        if n < 100 {
            break;
        }
    }
    let stmt = client.prepare_cached(CLEANUP_BLOBS).await.map_err(|e| e.to_string())?;
    loop {
        let n: i32 = client.query_one(&stmt, &[&BLOB_BATCH]).await.map_err(|e| e.to_string())?.get(0);
        swept.blob_rows += n.max(0) as u64;
        if n < BLOB_BATCH {
            return Ok(swept);
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
            Ok(s) if s == Swept::default() => {}
            Ok(s) => log::info!("removed {} expired upload sessions and {} rows of deleted files' bytes", s.sessions, s.blob_rows),
            Err(e) => log::warn!("sweeping expired uploads and deleted files' bytes: {e}"),
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
