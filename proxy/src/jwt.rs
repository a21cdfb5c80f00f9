//! Access-token verification against the database's published keys (JWKS).
//!
//! Only EdDSA with a known `kid` is accepted: `alg: none`, HMAC with the public key as
//! secret, unknown keys and bad signatures are all refused before any database work.
//! Keys are cached; an unknown `kid` triggers a reload (single-flight, at most one per
//! second: a flood of forged kids costs the database one query a second, and a key
//! rotated in SQL is picked up at the first token it signed, waiting at most a second),
//! and the cache is also refreshed every `jwks_refresh` so retired keys drop out.

use crate::errors::ApiError;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Tokens we sign are ~500 bytes; anything far larger is not ours.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
const MIN_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Verified tokens remembered per key set (a client sends the same token for many
/// requests; an Ed25519 verification costs ~40 µs of CPU). Bounded; emptied when full.
const VERIFIED_CACHE_ENTRIES: usize = 4096;

/// A token this key set verified: its claims for baas.authenticate, its session, and
/// its time window.
struct Verified {
    claims: Claims,
    exp: u64,
    nbf: u64,
}

/// Verified claims: the JSON for `baas.authenticate`, and the session id (`sid`).
#[derive(Clone, Debug)]
pub struct Claims {
    pub json: String,
    pub sid: String,
}

impl std::fmt::Display for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.json)
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    /// The access tokens' audience (`baas.auth_settings()`); signed file links carry
    /// `<audience>:file` (verify_with_audience).
    pub audience: String,
    /// The JWKS document, served at /.well-known/jwks.json without a database call.
    pub jwks_body: Arc<Vec<u8>>,
    /// Exact token text -> what verifying it gave. Lives and dies with this key set,
    /// so a reload (rotation, retired key) forgets every cached verification.
    verified: Mutex<HashMap<String, Verified>>,
}

impl KeySet {
    /// Build from the JSON of `baas.jwks()` and `baas.auth_settings()`.
    pub fn from_json(jwks: &Value, settings: &Value) -> Result<KeySet, String> {
        let mut keys = HashMap::new();
        for k in jwks["keys"].as_array().ok_or("jwks has no keys array")? {
            let (Some(kid), Some(x)) = (k["kid"].as_str(), k["x"].as_str()) else {
                return Err(format!("malformed JWK: {k}"));
            };
            if k["alg"] != "EdDSA" || k["crv"] != "Ed25519" {
                return Err(format!("unsupported JWK (only EdDSA/Ed25519): {k}"));
            }
            let key = DecodingKey::from_ed_components(x).map_err(|e| format!("JWK {kid}: {e}"))?;
            keys.insert(kid.to_string(), key);
        }
        let issuer = settings["issuer"].as_str().ok_or("auth settings lack issuer")?;
        let audience = settings["audience"].as_str().ok_or("auth settings lack audience")?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.validate_nbf = true;
        // Postgres and the proxy read the same clock; no grace past `exp`.
        validation.leeway = 0;
        Ok(KeySet { keys, validation, audience: audience.to_string(), jwks_body: Arc::new(jwks.to_string().into_bytes()), verified: Mutex::new(HashMap::new()) })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }
}

pub enum Verdict<T = Claims> {
    /// Verified claims, re-serialised for `baas.authenticate`.
    Valid(T),
    /// Well-formed, but signed by a key we do not know (yet).
    UnknownKey,
    Invalid(ApiError),
}

/// The `kid` a token names, or an error for tokens that are not EdDSA JWTs at all.
pub fn kid_of(token: &str) -> Result<String, ApiError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(ApiError::invalid_token("token is too long"));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| ApiError::invalid_token("token is malformed"))?;
    if header.alg != Algorithm::EdDSA {
        return Err(ApiError::invalid_token("token algorithm is not accepted"));
    }
    header.kid.ok_or_else(|| ApiError::invalid_token("token names no key"))
}

/// Verify `token`: from the key set's cache when this exact token was verified before
/// and is inside its validity window now, else in full (and cached on success).
pub fn verify(keys: &KeySet, token: &str) -> Verdict {
    let now = now_secs();
    if let Some(v) = keys.verified.lock().unwrap_or_else(|e| e.into_inner()).get(token) {
        if now < v.exp && v.nbf <= now {
            return Verdict::Valid(v.claims.clone());
        }
    }
    match verify_uncached(keys, token) {
        Verdict::Valid((claims, exp, nbf)) => {
            let mut cache = keys.verified.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= VERIFIED_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(token.to_string(), Verified { claims: claims.clone(), exp, nbf });
            Verdict::Valid(claims)
        }
        Verdict::UnknownKey => Verdict::UnknownKey,
        Verdict::Invalid(e) => Verdict::Invalid(e),
    }
}

fn verify_uncached(keys: &KeySet, token: &str) -> Verdict<(Claims, u64, u64)> {
    let kid = match kid_of(token) {
        Ok(k) => k,
        Err(e) => return Verdict::Invalid(e),
    };
    let Some(key) = keys.keys.get(&kid) else {
        return Verdict::UnknownKey;
    };
    let data = match jsonwebtoken::decode::<Map<String, Value>>(token, key, &keys.validation) {
        Ok(d) => d,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind as K;
            let msg = match e.kind() {
                K::ExpiredSignature => "token has expired",
                K::ImmatureSignature => "token is not valid yet",
                K::InvalidAudience => "token audience is not accepted",
                K::InvalidIssuer => "token issuer is not accepted",
                K::InvalidSignature => "token signature is invalid",
                K::MissingRequiredClaim(_) => "token lacks a required claim",
                _ => "token is invalid",
            };
            return Verdict::Invalid(ApiError::invalid_token(msg));
        }
    };
    let claims = data.claims;
    // A JSON object with a key twice means different things to different parsers
    // (first or last wins); we never issue one, so nobody else should be believed.
    if payload_has_duplicate_keys(token) {
        return Verdict::Invalid(ApiError::invalid_token("token claims are not accepted"));
    }
    // Only roles we issue tokens for; baas.authenticate checks it again.
    if !matches!(claims.get("role").and_then(Value::as_str), Some("baas_user" | "baas_service"))
        || claims.get("sub").and_then(Value::as_str).is_none()
        || claims.get("sid").and_then(Value::as_str).is_none()
    {
        return Verdict::Invalid(ApiError::invalid_token("token claims are not accepted"));
    }
    // exp is required and was validated as a number; nbf is optional.
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    let nbf = claims.get("nbf").and_then(Value::as_u64).unwrap_or(0);
    let sid = claims.get("sid").and_then(Value::as_str).unwrap_or_default().to_string();
    Verdict::Valid((Claims { json: Value::Object(claims).to_string(), sid }, exp, nbf))
}

/// Verify a token of another audience than access tokens' (a signed file link's
/// `<audience>:file`) with the same keys, issuer and rules (EdDSA, known kid, no
/// duplicate claims, exp required, no leeway). Its claims as they are: the caller
/// checks their shape. Never cached (links are single-purpose and short-lived).
pub fn verify_with_audience(keys: &KeySet, token: &str, aud: &str) -> Verdict<Map<String, Value>> {
    let kid = match kid_of(token) {
        Ok(k) => k,
        Err(e) => return Verdict::Invalid(e),
    };
    let Some(key) = keys.keys.get(&kid) else {
        return Verdict::UnknownKey;
    };
    let mut validation = keys.validation.clone();
    validation.set_audience(&[aud]);
    validation.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation) {
        Ok(d) if !payload_has_duplicate_keys(token) => Verdict::Valid(d.claims),
        Ok(_) => Verdict::Invalid(ApiError::invalid_token("token claims are not accepted")),
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind as K;
            let msg = match e.kind() {
                K::ExpiredSignature => "token has expired",
                K::ImmatureSignature => "token is not valid yet",
                K::InvalidAudience => "token audience is not accepted",
                K::InvalidSignature => "token signature is invalid",
                _ => "token is invalid",
            };
            Verdict::Invalid(ApiError::invalid_token(msg))
        }
    }
}

/// True when the payload's top-level object names a claim more than once (or cannot
/// be read as an object at all).
fn payload_has_duplicate_keys(token: &str) -> bool {
    use base64::Engine;
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Dup;
    impl<'de> Visitor<'de> for Dup {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<bool, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut dup = false;
            while let Some(k) = m.next_key::<String>()? {
                dup |= !seen.insert(k);
                m.next_value::<IgnoredAny>()?;
            }
            Ok(dup)
        }
    }
    let Some(payload) = token.split('.').nth(1) else {
        return true;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return true;
    };
    serde_json::Deserializer::from_slice(&bytes).deserialize_map(Dup).unwrap_or(true)
}

/// Shared key cache with reload bookkeeping.
pub struct KeyCache {
    current: RwLock<Arc<KeySet>>,
    /// Milliseconds since `epoch` of the last periodic reload: checked on every request,
    /// so an atomic rather than a lock.
    last_reload_ms: AtomicU64,
    epoch: Instant,
    /// Held while an unknown-kid reload runs; holds the time of the last such reload.
    kid_reload: tokio::sync::Mutex<Instant>,
    pub refresh_every: Duration,
    /// Sessions Postgres reported ended (NOTIFY baas_sessions, keys.rs), until their
    /// tokens must have expired anyway: their tokens are refused without a database
    /// round trip. Only an optimisation: Postgres checks every session on every request.
    ended_sessions: Mutex<HashMap<String, Instant>>,
    /// The same news for live streams (realtime/transport.rs), which must end within a
    /// second of their session: each watches this channel for its `sid`.
    ended_tx: tokio::sync::broadcast::Sender<Arc<str>>,
}

/// Access tokens live at most 24 h (baas.settings); an ended session is remembered that long.
const ENDED_SESSION_MEMORY: Duration = Duration::from_secs(24 * 3600 + 60);
const ENDED_SESSIONS_MAX: usize = 100_000;

impl KeyCache {
    pub fn new(initial: KeySet, refresh_every: Duration) -> Self {
        KeyCache {
            current: RwLock::new(Arc::new(initial)),
            last_reload_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            kid_reload: tokio::sync::Mutex::new(Instant::now() - MIN_RELOAD_INTERVAL),
            refresh_every,
            ended_sessions: Mutex::new(HashMap::new()),
            // A stream that falls this many endings behind re-checks `is_session_ended`.
            ended_tx: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Remember that a session has ended. Bounded: forgetting only costs a round trip.
    pub fn session_ended(&self, sid: &str) {
        let mut m = self.ended_sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if m.len() >= ENDED_SESSIONS_MAX {
            m.retain(|_, until| *until > now);
            if m.len() >= ENDED_SESSIONS_MAX {
                m.clear();
            }
        }
        let sid: String = sid.chars().take(64).collect();
        m.insert(sid.clone(), now + ENDED_SESSION_MEMORY);
        drop(m);
        // No receiver (no live stream) is no error.
        let _ = self.ended_tx.send(sid.into());
    }

    /// Sessions ended from now on, as `session_ended` hears of them.
    pub fn watch_ended_sessions(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.ended_tx.subscribe()
    }

    pub fn is_session_ended(&self, sid: &str) -> bool {
        let m = self.ended_sessions.lock().unwrap_or_else(|e| e.into_inner());
        m.get(sid).is_some_and(|until| *until > Instant::now())
    }

    pub fn get(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a valid key set: use it rather than panic.
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, keys: KeySet) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    /// A token names a key we do not have: perhaps one rotated in since our last load.
    /// Reload, unless a reload is running or ran less than a second ago, in which case
    /// return at once: a flood of forged kids costs at most one query a second and
    /// never makes a request wait (rotations also arrive by LISTEN/NOTIFY, keys.rs).
    pub async fn reload_for_kid<F, Fut>(&self, kid: &str, reload: F)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        if self.get().has_kid(kid) {
            return;
        }
        let Ok(mut last) = self.kid_reload.try_lock() else {
            return; // a reload is in flight
        };
        if last.elapsed() < MIN_RELOAD_INTERVAL {
            return;
        }
        reload().await;
        *last = Instant::now();
    }

    /// Claim the periodic reload: true at most once per refresh period.
    pub fn claim_reload(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_reload_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= self.refresh_every.as_millis() as u64
            && self.last_reload_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_claims_are_detected() {
        use base64::Engine;
        let t = |payload: &str| format!("h.{}.s", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload));
        assert!(!payload_has_duplicate_keys(&t(r#"{"sub":"a","role":"baas_user"}"#)));
        assert!(payload_has_duplicate_keys(&t(r#"{"sub":"a","role":"baas_user","role":"baas_service"}"#)));
        assert!(!payload_has_duplicate_keys(&t(r#"{"a":{"x":1},"b":{"x":2}}"#)), "nested keys are separate objects");
        assert!(payload_has_duplicate_keys(&t("[1,2]")));
        assert!(payload_has_duplicate_keys("no-dots"));
    }

    #[test]
    fn garbage_is_refused_before_key_lookup() {
        for t in ["", "abc", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", &"x".repeat(9000)] {
            assert!(kid_of(t).is_err(), "{t:.20}");
        }
        // alg none, well-formed
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIn0.";
        assert!(kid_of(none).is_err());
    }

    #[test]
    fn keyset_rejects_foreign_key_types() {
        let settings = json!({"issuer": "i", "audience": "a"});
        let rsa = json!({"keys": [{"kty": "RSA", "kid": "k", "alg": "RS256", "n": "x", "e": "AQAB"}]});
        assert!(KeySet::from_json(&rsa, &settings).is_err());
        let empty = json!({"keys": []});
        let ks = KeySet::from_json(&empty, &settings).unwrap();
        assert!(!ks.has_kid("k"));
    }

    #[test]
    fn periodic_reload_is_claimed_once_per_period() {
        let ks = KeySet::from_json(&json!({"keys": []}), &json!({"issuer": "i", "audience": "a"})).unwrap();
        let cache = KeyCache::new(ks, Duration::from_secs(30));
        assert!(!cache.claim_reload(), "just loaded");
        // Pretend the last reload was 31 s before the cache's clock started.
        cache.last_reload_ms.store(0, Ordering::Relaxed);
        let cache = KeyCache { epoch: Instant::now() - Duration::from_secs(31), ..cache };
        assert!(cache.claim_reload());
        assert!(!cache.claim_reload());
    }

    #[tokio::test]
    async fn unknown_kid_reloads_are_spaced_and_never_wait() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ks = KeySet::from_json(&json!({"keys": []}), &json!({"issuer": "i", "audience": "a"})).unwrap();
        let cache = KeyCache::new(ks, Duration::from_secs(30));
        let count = AtomicUsize::new(0);
        let t0 = Instant::now();
        for _ in 0..3 {
            cache.reload_for_kid("nope", || async { count.fetch_add(1, Ordering::SeqCst); }).await;
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "one reload a second at most");
        assert!(t0.elapsed() < Duration::from_millis(500), "nobody waited: {:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        cache.reload_for_kid("nope", || async { count.fetch_add(1, Ordering::SeqCst); }).await;
        assert_eq!(count.load(Ordering::SeqCst), 2, "a second later, the next one");
    }

    #[tokio::test]
    async fn concurrent_unknown_kids_share_one_reload() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ks = KeySet::from_json(&json!({"keys": []}), &json!({"issuer": "i", "audience": "a"})).unwrap();
        let cache = Arc::new(KeyCache::new(ks, Duration::from_secs(30)));
        let count = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, count) = (cache.clone(), count.clone());
                tokio::spawn(async move {
                    cache
                        .reload_for_kid("forged", || async {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            count.fetch_add(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // 50 forged tokens at once: one reload, and nobody queues behind it.
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
    }
}
