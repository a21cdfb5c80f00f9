//! The key fetcher, a BackgroundService: every `oidc_poll_secs` it reads
//! `baas._oidc_jwks_targets()` and fetches the key sets that are missing or expire within
//! 5 minutes. A sign-in whose token names a key Postgres does not hold (55000
//! oidc_keys_stale: the provider rotated its keys) calls `refresh_stale`, which fetches
//! that provider's set at once, unless it was fetched less than
//! `oidc_refetch_floor_secs` ago: forged key ids cost the provider at most one request
//! per floor. A fetch: GET over https (http only to a loopback host), no redirects,
//! `200` only, at most 256 KiB within `oidc_fetch_timeout_secs`; the keys are kept for
//! `Cache-Control: max-age` clamped to 5 minutes .. 1 day (1 hour without one). A
//! failed fetch keeps the keys already stored.

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest key set read, in bytes.
pub const MAX_JWKS_BYTES: u64 = 256 * 1024;
/// Key sets expiring sooner than this are fetched by the poll.
const EXPIRY_MARGIN_SQL: &str = "5 minutes";

/// config.rs: oidc_poll_secs, oidc_refetch_floor_secs, oidc_fetch_timeout_secs.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub poll: Duration,
    pub refetch_floor: Duration,
    pub fetch_timeout: Duration,
}

pub struct JwksFetcher {
    pool: deadpool_postgres::Pool,
    cfg: OidcConfig,
    /// Per provider: held while it is fetched (one fetch at a time each); holds the
    /// time of its last attempt.
    providers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    /// Successful fetches so far (all providers): a caller that waited for another's
    /// fetch sees it changed and retries without fetching again.
    fetched: AtomicU64,
}

impl JwksFetcher {
    pub fn new(pool: deadpool_postgres::Pool, cfg: OidcConfig) -> Arc<JwksFetcher> {
        Arc::new(JwksFetcher { pool, cfg, providers: Mutex::new(HashMap::new()), fetched: AtomicU64::new(0) })
    }

    fn slot(&self, provider: &str) -> Arc<tokio::sync::Mutex<Option<Instant>>> {
        let mut map = self.providers.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded by the configured providers (names come from Postgres's answers, or
        // were looked up there first: refresh_stale).
        if map.len() > 1000 {
            map.clear();
        }
        map.entry(provider.to_string()).or_default().clone()
    }

    /// A sign-in's (or link's) answer `first`: when Postgres said a provider's keys are
    /// stale (it rotated them), fetch the keys of `providers` again (each at most once per
    /// refetch floor) and run `again` once; a token still naming no key it has is
    /// `invalid_id_token`. Shared by `/v1/auth/oidc` (server.rs) and the Parse door.
    pub async fn retry_stale<T, F, Fut>(&self, providers: &[&str], first: Result<T, crate::errors::ApiError>, again: F) -> Result<T, crate::errors::ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::errors::ApiError>>,
    {
        if !matches!(&first, Err(e) if e.code == "oidc_keys_stale") {
            return first;
        }
        let mut fetched = false;
        for p in providers.iter().take(4) {
            fetched |= self.refresh_stale(p).await;
        }
        let mut out = if fetched { again().await } else { first };
        if let Err(e) = &mut out {
            if e.code == "oidc_keys_stale" {
                *e = crate::errors::ApiError::coded("invalid_id_token", "the ID token names a key its provider does not have (kid)");
            }
        }
        out
    }

    /// After Postgres said oidc_keys_stale for `provider`: true when its keys were
    /// fetched again (by this call, or by another while this one waited), so the
    /// sign-in is worth running once more; false when they were fetched too recently
    /// to ask the provider again, or the fetch failed.
    pub async fn refresh_stale(&self, provider: &str) -> bool {
        let before = self.fetched.load(Ordering::SeqCst);
        // Only a provider Postgres knows gets a slot: a name a client made up (the Parse
        // door refetches the providers its authData names) must not fill the map.
        let Some(url) = self.url_of(provider).await else {
            return false;
        };
        let slot = self.slot(provider);
        let mut last = slot.lock().await;
        if self.fetched.load(Ordering::SeqCst) != before && last.is_some_and(|t| t.elapsed() < self.cfg.refetch_floor) {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < self.cfg.refetch_floor) {
            return false;
        }
        *last = Some(Instant::now());
        self.fetch_and_store(provider, &url).await
    }

    async fn url_of(&self, provider: &str) -> Option<String> {
        let client = self.pool.get().await.map_err(|e| log::warn!("oidc keys: no database connection: {e}")).ok()?;
        let row = client
            .query_opt("select jwks_url from baas._oidc_jwks_targets() where provider = $1", &[&provider])
            .await
            .map_err(|e| {
                let why = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string());
                log::warn!("oidc keys: reading provider {provider}: {why}")
            })
            .ok()??;
        Some(row.get(0))
    }

    /// Fetch and store one provider's keys; false (logged) on any failure.
    async fn fetch_and_store(&self, provider: &str, url: &str) -> bool {
        let (u, timeout) = (url.to_string(), self.cfg.fetch_timeout);
        let fetched = tokio::task::spawn_blocking(move || fetch(&u, timeout)).await;
        let (body, max_age) = match fetched {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                log::warn!("oidc keys of provider {provider}: {e}; the stored keys stay");
                return false;
            }
            Err(e) => {
                log::warn!("oidc keys of provider {provider}: {e}");
                return false;
            }
        };
        let client = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("oidc keys: no database connection: {e}");
                return false;
            }
        };
        match client
            .execute("select baas._oidc_put_jwks($1, $2, $3::text::jsonb, $4::integer)", &[&provider, &url, &body, &(max_age as i32)])
            .await
        {
            Ok(_) => {
                self.fetched.fetch_add(1, Ordering::SeqCst);
                true
            }
            Err(e) => {
                let why = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string());
                log::warn!("oidc keys of provider {provider} not stored: {why}; the stored keys stay");
                false
            }
        }
    }

    /// One poll: every enabled provider whose keys are missing or about to expire.
    pub async fn poll_once(&self) {
        // A provider fetched after this moment (by a sign-in's refresh_stale while this
        // poll waited for its slot) is not fetched again.
        let read_at = Instant::now();
        let rows = match self.pool.get().await {
            Ok(client) => client
                .query(
                    &format!(
                        "select provider, jwks_url from baas._oidc_jwks_targets() \
                         where expires_at is null or expires_at < now() + interval '{EXPIRY_MARGIN_SQL}'"
                    ),
                    &[],
                )
                .await
                .map_err(|e| e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())),
            Err(e) => Err(e.to_string()),
        };
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                log::warn!("oidc keys: reading providers: {e}");
                return;
            }
        };
        for row in rows {
            let (provider, url): (String, String) = (row.get(0), row.get(1));
            let slot = self.slot(&provider);
            let mut last = slot.lock().await;
            if last.is_some_and(|t| t >= read_at) {
                continue;
            }
            *last = Some(Instant::now());
            self.fetch_and_store(&provider, &url).await;
        }
    }
}

/// The service main.rs registers: the poll loop of a shared fetcher.
pub struct JwksService(pub Arc<JwksFetcher>);

#[async_trait]
impl BackgroundService for JwksService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.0.poll_once().await;
            tokio::select! {
                _ = tokio::time::sleep(self.0.cfg.poll) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Whether the fetcher may GET this URL: https, or http to this host only.
pub fn url_allowed(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host_port = rest.split('/').next().unwrap_or("");
    let host = if host_port.starts_with('[') {
        host_port.split(']').next().map(|h| format!("{h}]")).unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or("").to_string()
    };
    matches!(host.as_str(), "127.0.0.1" | "[::1]" | "localhost")
}

/// `Cache-Control: max-age` in seconds, clamped to 300 ..= 86400; 3600 without one.
pub fn max_age(cache_control: Option<&str>) -> u64 {
    let given = cache_control.and_then(|v| {
        v.split(',').find_map(|d| {
            let (k, val) = d.trim().split_once('=')?;
            if k.trim().eq_ignore_ascii_case("max-age") {
                val.trim().trim_matches('"').parse::<u64>().ok()
            } else {
                None
            }
        })
    });
    given.unwrap_or(3600).clamp(300, 86_400)
}

/// GET a key set: (body, max_age seconds). Blocking (ureq): run in spawn_blocking.
pub fn fetch(url: &str, timeout: Duration) -> Result<(String, u64), String> {
    if !url_allowed(url) {
        return Err(format!("{url} is neither https nor http to this host"));
    }
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirects(0)
        .build();
    let resp = match agent.get(url).set("Accept", "application/json").call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => return Err(format!("GET {url}: HTTP {code}")),
        Err(e) => return Err(format!("GET {url}: {e}")),
    };
    if resp.status() != 200 {
        return Err(format!("GET {url}: HTTP {} (only 200 is used)", resp.status()));
    }
    let age = max_age(resp.header("cache-control"));
    let mut body = Vec::new();
    resp.into_reader()
        .take(MAX_JWKS_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    if body.len() as u64 > MAX_JWKS_BYTES {
        return Err(format!("GET {url}: the key set is larger than {MAX_JWKS_BYTES} bytes"));
    }
    let text = String::from_utf8(body).map_err(|_| format!("GET {url}: the key set is not UTF-8"))?;
    Ok((text, age))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(url_allowed("https://appleid.apple.com/auth/keys"));
        assert!(url_allowed("http://127.0.0.1:8080/jwks"));
        assert!(url_allowed("http://localhost/jwks"));
        assert!(url_allowed("http://[::1]:9/x"));
        assert!(!url_allowed("http://example.com/jwks"));
        assert!(!url_allowed("http://127.0.0.1.evil.example/jwks"));
        assert!(!url_allowed("http://localhost.evil.example:80/jwks"));
        assert!(!url_allowed("ftp://127.0.0.1/jwks"));
    }

    #[test]
    fn max_age_is_clamped() {
        assert_eq!(max_age(None), 3600);
        assert_eq!(max_age(Some("public, max-age=21600, must-revalidate")), 21600);
        assert_eq!(max_age(Some("max-age=5")), 300);
        assert_eq!(max_age(Some("max-age=99999999")), 86_400);
        assert_eq!(max_age(Some("no-cache")), 3600);
        assert_eq!(max_age(Some("max-age=abc")), 3600);
    }
}
