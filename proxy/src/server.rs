//! The pingora app: per request, route (router.rs over the table in routes/mod.rs),
//! count limits, verify the token, read and check the body, bind the plan
//! (routes/plan.rs), run it (db.rs), write the reply.
//!
//! The app is an `HttpServerApp` (not the whole-body `ServeHttp`): it writes the
//! response header and body itself, so a route kind may stream its reply, and after an
//! early answer it can keep reading what the client still sends (lingering close).

use crate::config::Config;
use crate::db;
use crate::errors::ApiError;
use crate::jwt::{self, KeyCache, Verdict};
use crate::ratelimit::{self, InFlightCaps, Limiter, Permit};
use crate::realtime::{self, sse, transport, ws, Caller, Conn};
use crate::router::{self, Auth, LimitKey, Match, Route, RouteKind, Shape};
use crate::routes::{input, plan, ROUTES};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use deadpool_postgres::Pool;
use http::{header, StatusCode};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::Value;
use std::sync::Arc;

pub struct App {
    pub timeouts: db::Timeouts,
    pub cfg: Config,
    /// The proxy's own queries (keys, settings).
    pub pool: Pool,
    /// Requests' transactions.
    pub requests: db::RequestPool,
    pub keys: Arc<KeyCache>,
    pub limiter: Limiter,
    /// Database-bound requests in flight per client address and per signed-in user.
    pub in_flight: InFlightCaps,
    /// /healthz's database check, one at a time and its answer shared for a second.
    pub health: HealthCheck,
    /// Live change feeds: subscriptions and fan-out (realtime/hub.rs).
    pub feeds: Arc<dyn realtime::Feeds>,
    /// Open realtime connections per client address and per user.
    pub realtime_caps: transport::Caps,
    /// File uploads and downloads in flight per address, per user and in all.
    pub transfers: crate::files::Transfers,
    /// Thumbnails being made and waiting (files/thumb.rs): bounded CPU work.
    pub thumbs: crate::files::thumb::ThumbPool,
    /// OpenID Connect providers' keys (oidc/jwks.rs): refetched for `.oidc_retry()` routes.
    pub oidc: Arc<crate::oidc::JwksFetcher>,
    /// CORS, TLS, graceful stop, connection caps (issue 19, edge).
    pub edge: crate::edge::Edge,
    /// Read replicas (issue 19, replicas): where route reads go; empty: all to `requests`.
    pub replicas: Arc<crate::replicas::Replicas>,
    /// The Parse REST API (issue 21, parse/): None unless parse_app_id is set.
    pub parse: Option<crate::parse::Door>,
}

/// /healthz answers before any rate limit (abuse.rs: monitors must always reach it),
/// so a flood of it must cost the database no more than one check a second: the check
/// runs one at a time (tokio's Mutex is fair: callers that arrive during a check wait
/// for it and take its answer) and its answer is reused for `fresh`. A database that
/// goes down is reported within `fresh` (plus the check's own time) of it.
pub struct HealthCheck {
    fresh: std::time::Duration,
    last: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), ApiError>)>>,
}

impl HealthCheck {
    pub fn new(fresh: std::time::Duration) -> Self {
        HealthCheck { fresh, last: tokio::sync::Mutex::new(None) }
    }

    /// The answer of a check finished less than `fresh` ago, or of `check` run now.
    pub async fn get<F: std::future::Future<Output = Result<(), ApiError>>>(&self, check: impl FnOnce() -> F) -> Result<(), ApiError> {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < self.fresh {
                return answer.clone();
            }
        }
        let answer = check().await;
        *last = Some((std::time::Instant::now(), answer.clone()));
        answer
    }
}

pub struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    pub(crate) content_type: Option<&'static str>,
    pub(crate) no_store: bool,
    pub(crate) allow: Option<String>,
    /// `ETag`: a document's version, quoted.
    pub(crate) etag: Option<String>,
    pub(crate) retry_after: Option<u64>,
    /// 426: `Upgrade: websocket` and `Sec-WebSocket-Version: 13` (the WebSocket route).
    upgrade_required: bool,
    /// Further headers (files: `Location`, tus's, `Content-Range` of a 416).
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn json(status: StatusCode, body: impl Into<Bytes>) -> Reply {
        Reply {
            headers: Vec::new(),
            status,
            body: body.into(),
            content_type: Some("application/json"),
            no_store: false,
            allow: None,
            etag: None,
            retry_after: None,
            upgrade_required: false,
        }
    }
    pub(crate) fn empty(status: StatusCode) -> Reply {
        Reply { body: Bytes::new(), content_type: None, ..Reply::json(status, Bytes::new()) }
    }
    pub(crate) fn error(e: ApiError) -> Reply {
        crate::observe::error_code(&e.code); // (issue 19, observe): a 429's kind
        let mut r = Reply::json(e.status, e.body());
        r.no_store = true;
        r.retry_after = e.retry_after;
        r.etag = e.etag;
        r
    }
    fn header(&self) -> pingora::Result<ResponseHeader> {
        let mut h = ResponseHeader::build(self.status, Some(6))?;
        // RFC 9110 8.6: no Content-Length on a 204.
        if self.status != StatusCode::NO_CONTENT {
            h.insert_header(header::CONTENT_LENGTH, self.body.len())?;
        }
        if let Some(ct) = self.content_type {
            h.insert_header(header::CONTENT_TYPE, ct)?;
        }
        if self.no_store {
            h.insert_header(header::CACHE_CONTROL, "no-store")?;
        }
        if let Some(allow) = &self.allow {
            h.insert_header(header::ALLOW, allow.as_str())?;
        }
        if let Some(etag) = &self.etag {
            h.insert_header(header::ETAG, etag.as_str())?;
        }
        if let Some(secs) = self.retry_after {
            h.insert_header(header::RETRY_AFTER, secs)?;
        }
        if self.upgrade_required {
            h.insert_header(header::UPGRADE, "websocket")?;
            h.insert_header(header::SEC_WEBSOCKET_VERSION, "13")?;
        }
        for (name, value) in &self.headers {
            h.insert_header(*name, value.as_str())?;
        }
        crate::observe::stamp(&mut h); // (issue 19, observe): X-Request-Id; status and length noted
        Ok(h)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("request body is larger than {limit} bytes"))
}

impl App {
    pub(crate) async fn read_body(&self, s: &mut ServerSession) -> Result<Vec<u8>, ApiError> {
        self.read_body_up_to(s, self.cfg.body_limit).await
    }

    /// `read_body` with a limit of its own (the Parse door's file uploads).
    pub(crate) async fn read_body_up_to(&self, s: &mut ServerSession, limit: usize) -> Result<Vec<u8>, ApiError> {
        let declared = s
            .req_header()
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let mut buf = BytesMut::new();
        let read = async {
            loop {
                match s.read_request_body().await {
                    Ok(Some(chunk)) => {
                        if buf.len() + chunk.len() > limit {
                            return Err(too_large(limit));
                        }
                        buf.extend_from_slice(&chunk);
                    }
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        log::debug!("reading body: {e}");
                        return Err(ApiError::bad_request("invalid_request", "request body could not be read"));
                    }
                }
            }
        };
        let result = match tokio::time::timeout(self.cfg.body_timeout, read).await {
            Ok(Ok(())) => Ok(Vec::from(buf)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "request body was not received in time")),
        };
        if result.is_err() {
            // pingora marks a body with broken chunked framing as done: whatever follows
            // it on the socket must never be read as the next request.
            s.set_keepalive(None);
        }
        result
    }

    /// The client's address (the socket peer, or what a trusted proxy forwarded) and
    /// the key its per-IP limits count under.
    pub(crate) fn client(&self, s: &ServerSession) -> (String, String) {
        let Some(peer) = s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()) else {
            return ("unix".to_string(), "unix".to_string());
        };
        let ip = if self.cfg.trusted_proxies.is_empty() {
            ratelimit::client_ip(peer, None, &[])
        } else {
            // Every X-Forwarded-For line, in order (proxies may add a line of their own
            // rather than append); an unreadable one is a hop that stops the walk.
            let xff: Vec<&str> = s
                .req_header()
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .map(|v| v.to_str().unwrap_or("unreadable"))
                .collect();
            let xff = (!xff.is_empty()).then(|| xff.join(","));
            ratelimit::client_ip(peer, xff.as_deref(), &self.cfg.trusted_proxies)
        };
        (ip.to_string(), ratelimit::ip_key(ip))
    }

    /// The bearer token's verified claims; None when no Authorization header was sent.
    async fn authenticate(&self, s: &ServerSession) -> Result<Option<String>, ApiError> {
        match bearer(s)? {
            Some(token) => self.verify_token(token).await.map(Some),
            None => Ok(None),
        }
    }

    /// A token's verified claims JSON (as `baas.authenticate` takes it), or 401. For the
    /// Authorization header, `?access_token=` of the realtime routes, and a WebSocket's
    /// `auth` message.
    pub async fn verify_token(&self, token: &str) -> Result<String, ApiError> {
        // (issue 19, observe): the log line's user id, or a refusal counted by its code.
        let verdict = self.verify_token_unobserved(token).await;
        crate::observe::token(verdict.as_deref().map_err(|e| e.code.as_str()));
        verdict
    }

    async fn verify_token_unobserved(&self, token: &str) -> Result<String, ApiError> {
        let keys = self.keys.get();
        let live = |c: jwt::Claims| -> Result<String, ApiError> {
            if self.keys.is_session_ended(&c.sid) {
                return Err(ApiError::invalid_token("the session of this token has ended"));
            }
            Ok(c.json)
        };
        match jwt::verify(&keys, token) {
            Verdict::Valid(claims) => live(claims),
            Verdict::Invalid(e) => Err(e),
            Verdict::UnknownKey => {
                // Perhaps a key rotated since our last load: reload (rate-limited), retry once.
                let kid = jwt::kid_of(token)?;
                self.keys
                    .reload_for_kid(&kid, || async {
                        if let Err(e) = crate::keys::reload_keys(&self.pool, &self.keys, Some(std::time::Duration::ZERO)).await {
                            log::warn!("reloading signing keys: {}", e.message);
                        }
                    })
                    .await;
                match jwt::verify(&self.keys.get(), token) {
                    Verdict::Valid(claims) => live(claims),
                    Verdict::Invalid(e) => Err(e),
                    Verdict::UnknownKey => Err(ApiError::invalid_token("token is signed by an unknown key")),
                }
            }
        }
    }

    async fn handle(&self, s: &mut ServerSession) -> Result<Reply, ApiError> {
        // Owned copies (no allocation for a standard method; the URI shares its bytes),
        // so the path parameters do not borrow the session the body is read from.
        let (method, uri) = (s.req_header().method.clone(), s.req_header().uri.clone());
        let (route, params) = match router::route(ROUTES, &method, uri.path()) {
            Match::Found(r, p) => (r, p),
            Match::WrongMethod(allow) => {
                let e = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} is not allowed on {}", uri.path()));
                let mut r = Reply::error(e);
                r.allow = Some(allow);
                return Ok(r);
            }
            Match::NotFound => {
                return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {}", uri.path())));
            }
        };
        if self.keys.claim_reload() {
            let (pool, keys) = (self.pool.clone(), self.keys.clone());
            tokio::spawn(async move {
                if let Err(e) = crate::keys::reload_keys(&pool, &keys, None).await {
                    log::warn!("periodic key reload: {}", e.message);
                }
            });
        }
        match route.kind {
            RouteKind::Health => return Ok(self.health().await),
            RouteKind::Jwks => return Ok(Reply::json(StatusCode::OK, self.keys.get().jwks_body.as_ref().clone())),
            // --- B describe (issue 19): after the per-address request limit below.
            RouteKind::Json | RouteKind::OpenApi => {}
            // Dispatched before (process_new_http); not reached.
            RouteKind::WebSocket | RouteKind::Sse | RouteKind::File(_) => return Err(ApiError::internal()),
        }
        // Limits come first: a refused request costs no token check, body or connection.
        let (client_ip, ip_key) = self.client(s);
        self.limiter.check(ratelimit::Kind::Request, &ip_key).map_err(ApiError::rate_limited)?;
        // --- B describe (issue 19): the OpenAPI document, made at start-up; no database.
        if route.kind == RouteKind::OpenApi {
            return Ok(Reply::json(StatusCode::OK, crate::openapi::document()));
        }
        for l in route.limits.iter().filter(|l| l.when.is_none() && matches!(l.key, LimitKey::Ip)) {
            self.limiter.check(l.kind, &ip_key).map_err(ApiError::rate_limited)?;
        }
        // Tokens are checked before the body is read or a connection is taken.
        let claims = self.authenticate(s).await?;
        let mut raw_body = None;
        let body = match route.body {
            Some(fields) => {
                check_content_type(s)?;
                let bytes = self.read_body(s).await?;
                // A body Postgres reads as sent: its numbers bounded, and checked without
                // f64 conversion (input::parse_raw_body).
                let checked = if route.args.iter().any(|a| matches!(a, router::Arg::RawBody)) {
                    input::parse_raw_body(fields, &bytes)?
                } else {
                    input::parse_body(fields, &bytes)?
                };
                // Kept as sent for Arg::RawBody (valid JSON, so UTF-8).
                raw_body = String::from_utf8(bytes).ok();
                Some(checked)
            }
            None => None,
        };
        let account_keys = self.late_limits(route, body.as_ref(), claims.as_deref(), &ip_key)?;
        let if_match = match s.req_header().headers.get(header::IF_MATCH) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| ApiError::bad_request("invalid_request", "If-Match is malformed"))?),
        };
        let req = plan::Request { params, query: uri.query(), if_match, body: body.as_ref(), raw_body: raw_body.as_deref() };
        let plan = plan::plan(route, &req)?;
        // Held until the call is done, or dropped with this future if the request is
        // abandoned: either way the slot is freed.
        let _permits = admit(&self.in_flight, &ip_key, claims.as_deref())?;
        // Sign-up, login and refresh cost one password hash whatever the client sends
        // (and have rate limits of their own): only queries whose cost an anonymous
        // client chooses run under the shorter timeout.
        let fixed_cost = route.limits.iter().any(|l| matches!(l.kind, ratelimit::Kind::Signup | ratelimit::Kind::Auth));
        // --- D (issue 19): the per-account limits of the sign-in routes (fixed_cost)
        // again, counted in Postgres so that every proxy shares them; each its own
        // statement before the request's transaction, so a failed attempt still counts.
        // After admit(): the in-flight caps bound these connections too. One answer
        // deadline for the request: the call gets what the counts left of it.
        let (started, mut timeouts) = (std::time::Instant::now(), self.timeouts.clone());
        if self.cfg.rate_limits && fixed_cost {
            let max = self.cfg.rate_limit_account_per_minute;
            for key in &account_keys {
                timeouts.answer = self.timeouts.answer.saturating_sub(started.elapsed());
                if let Some(secs) = db::account_limit_hit(&self.requests, &timeouts, key, max, 60).await? {
                    crate::observe::limited("account"); // (issue 19, observe)
                    return Err(ApiError::rate_limited(secs));
                }
            }
            timeouts.answer = self.timeouts.answer.saturating_sub(started.elapsed());
            if timeouts.answer.is_zero() {
                let mut e = ApiError::unavailable("the database did not answer in time");
                e.retry_after = Some(1);
                return Err(e);
            }
        }
        let short_timeout = claims.is_none() && !fixed_cost;
        let user_agent = db::user_agent(s.req_header().headers.get(header::USER_AGENT));
        let caller = db::Caller { claims: claims.as_deref(), client_ip: &client_ip, user_agent: &user_agent, short_timeout };
        let returns = if route.answer.shape == Shape::Void { db::Returns::Void } else { db::Returns::Json };
        let args = plan.args();
        // (issue 19, replicas) a read may go to a replica that has the caller's commit.
        // Read only when there are replicas: without them a malformed one is harmless.
        let after = if route.read && !self.replicas.is_empty() { crate::replicas::client_lsn(&s.req_header().headers)? } else { None };
        let mut out = crate::replicas::call(&self.replicas, &self.requests, route.read, after, &timeouts, &caller, route.sql, &args[..plan.arg_count()], returns).await;
        if route.oidc_retry {
            // The provider may have rotated its keys: fetch them again and try once more.
            let provider = body.as_ref().and_then(|b| b.get("provider")).and_then(Value::as_str).unwrap_or("");
            out = self.oidc.retry_stale(&[provider], out, || db::call(&self.requests, &timeouts, &caller, route.sql, &args[..plan.arg_count()], returns)).await;
        }
        let out = out
            // On the RPC door a plain RAISE EXCEPTION is the function's answer: 400 raised.
            .map_err(|e| match e.raised {
                Some(raised) if route.answer.shape == Shape::Rpc => *raised,
                raised => ApiError { raised, ..e },
            })
            .map_err(|e| if route.answer.shape == Shape::Batch { e.batch_operation() } else { e })
            .map_err(|e| reword_refusal(e, route, claims.is_some()))
            .map_err(|e| if short_timeout { self.reword_anonymous_timeout(e) } else { e })?;
        let mut reply = answer(route, out)?;
        // (issue 19, replicas) a write's commit position, for reads that must see it.
        if !route.read && !self.replicas.is_empty() && reply.status.is_success() {
            if let Some(lsn) = self.replicas.commit_lsn(&self.requests, &self.timeouts).await {
                reply.headers.push((crate::replicas::COMMIT_LSN_HEADER, lsn));
            }
        }
        Ok(reply)
    }

    /// Postgres says "canceling statement due to statement timeout": say which limit
    /// an anonymous caller met, and that signing in gets a longer one.
    fn reword_anonymous_timeout(&self, mut e: ApiError) -> ApiError {
        if e.code == "query_timeout" {
            let anon = self.cfg.anon_statement_timeout.min(self.cfg.statement_timeout).as_millis();
            e.message = format!(
                "the query ran longer than the {anon} ms allowed to anonymous callers (signed-in callers: {} ms); narrow the filter or sign in",
                self.cfg.statement_timeout.as_millis()
            );
        }
        e
    }

    /// Limits keyed by the body or the caller, or only for some bodies: after the body.
    /// Returns the keys of the per-account limits it checked (shared in Postgres: D, issue 19).
    fn late_limits(&self, route: &Route, body: Option<&Value>, claims: Option<&str>, ip_key: &str) -> Result<Vec<String>, ApiError> {
        let mut account_keys = Vec::new();
        let field = |name: &str| body.and_then(|b| b.get(name)).filter(|v| !v.is_null());
        for l in route.limits {
            if l.when.is_some_and(|f| field(f).is_none()) {
                continue;
            }
            let key = match l.key {
                LimitKey::Ip if l.when.is_none() => continue, // counted before the token check
                LimitKey::Ip => ip_key.to_string(),
                LimitKey::Body(prefix, name) => match field(name).and_then(Value::as_str) {
                    Some(v) => ratelimit::account_key(prefix, v),
                    None => continue,
                },
                LimitKey::BodyAndIp(prefix, name) => match field(name).and_then(Value::as_str) {
                    Some(v) => format!("{}@{ip_key}", ratelimit::account_key(prefix, v)),
                    None => continue,
                },
                LimitKey::IpPerItem(name) => {
                    let n = field(name).and_then(Value::as_array).map_or(0, Vec::len);
                    self.limiter.check_batch(l.kind, ip_key, u32::try_from(n).unwrap_or(u32::MAX)).map_err(|r| match r {
                        ratelimit::BatchRefusal::Wait(secs) => ApiError::rate_limited(secs),
                        ratelimit::BatchRefusal::TooLarge { allowed, per_secs } => ApiError::bad_request(
                            "invalid_batch",
                            format!("a batch of {n} operations costs {n} requests, but the request rate limit allows at most {allowed} per {per_secs} s per address: send at most {allowed} operations per batch"),
                        ),
                    })?;
                    continue;
                }
                LimitKey::Subject(prefix) => {
                    let sub = claims.and_then(|c| serde_json::from_str::<Value>(c).ok()).and_then(|c| c["sub"].as_str().map(str::to_string));
                    ratelimit::account_key(prefix, &sub.unwrap_or_default())
                }
            };
            self.limiter.check(l.kind, &key).map_err(ApiError::rate_limited)?;
            if l.kind == ratelimit::Kind::Account {
                account_keys.push(key);
            }
        }
        Ok(account_keys)
    }

    /// /healthz: a statement over a request connection (shared by concurrent callers and
    /// for a second: `HealthCheck`), and the request pool's use now.
    async fn health(&self) -> Reply {
        let p = db::pool_use(&self.requests);
        let pool = serde_json::json!({"size": p.size, "max_size": p.max_size, "in_use": p.size - p.available.min(p.size),
                                      "available": p.available, "waiting": p.waiting});
        // From SIGTERM on (during shutdown_delay_secs: edge::Signals) a balancer's health
        // check fails while the proxy still answers what reaches it.
        let (status, mut body) = if self.edge.stopping() {
            let error = serde_json::json!({"code": "stopping", "message": "the proxy is stopping: send requests to another one"});
            (StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"status": "stopping", "error": error, "pool": pool}))
        } else {
            match self.health.get(|| db::check_requests(&self.requests, &self.timeouts)).await {
                Ok(()) => (StatusCode::OK, serde_json::json!({"status": "ok", "database": "ok", "pool": pool})),
                Err(e) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "unavailable", "error": {"code": e.code, "message": e.message}, "pool": pool}),
                ),
            }
        };
        // (issue 19, replicas) each replica, in rotation or not, and its lag.
        if !self.replicas.is_empty() {
            body["replicas"] = self.replicas.status();
        }
        let mut r = Reply::json(status, body.to_string());
        r.no_store = true;
        r
    }

    /// After an early answer the client may still be sending its body (it writes it
    /// whole before reading: no `Expect: 100-continue`). Closing with those bytes
    /// unread makes the kernel send a reset, which can destroy the answer before the
    /// client reads it (RFC 9112 9.6). So: end our side (FIN after the answer), read
    /// and discard at most linger_bytes for at most linger, then close. The discarded
    /// bytes are never parsed as a request: the connection is not reused.
    async fn linger(&self, s: &mut ServerSession) {
        s.shutdown().await;
        let mut left = self.cfg.linger_bytes;
        let discard = async {
            while left > 0 {
                match s.read_request_body().await {
                    Ok(Some(chunk)) => left = left.saturating_sub(chunk.len()),
                    Ok(None) | Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(self.cfg.linger, discard).await;
    }
}

/// A slot for a database-bound request under the caps on requests in flight: per
/// client address, and also per user for a user's token (so neither many accounts
/// behind one address nor one account from many addresses can hold more), and for all
/// requests without a token together (so that however many addresses anonymous
/// callers use, signed-in users find connections; see docs/security.md). Service
/// tokens are the operator's own backends, trusted with every collection: not capped.
/// Over a cap: 429 with Retry-After. `claims` are verified.
pub(crate) fn admit(caps: &InFlightCaps, ip_key: &str, claims: Option<&str>) -> Result<(Option<Permit>, Option<Permit>), ApiError> {
    let claims = claims.and_then(|c| serde_json::from_str::<Value>(c).ok());
    if claims.as_ref().and_then(|c| c["role"].as_str()) == Some("baas_service") {
        return Ok((None, None));
    }
    let ip = caps
        .per_ip
        .try_acquire(ip_key)
        .map_err(|wait| too_many_in_flight(wait, format!("this client address already has {} requests in flight", caps.per_ip.max())))?;
    let other = match &claims {
        Some(c) => match c["sub"].as_str() {
            Some(sub) => Some(
                caps.per_user
                    .try_acquire(&format!("user:{sub}"))
                    .map_err(|wait| too_many_in_flight(wait, format!("this user already has {} requests in flight", caps.per_user.max())))?,
            ),
            None => None,
        },
        None => Some(caps.anonymous.try_acquire(ratelimit::ANONYMOUS).map_err(|wait| {
            too_many_in_flight(
                wait,
                format!("{} requests without a token are in flight, the most the server runs at once; sign in, or", caps.anonymous.max()),
            )
        })?),
    };
    Ok((Some(ip), other))
}

/// 429 for a caller over a cap on requests in flight (not a rate: it clears as soon as
/// one of its requests finishes).
fn too_many_in_flight(retry_after: u64, why: String) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_concurrent_requests",
        format!("{why}; wait for one to finish (retry in {retry_after} s)"),
    );
    e.retry_after = Some(retry_after);
    e
}

/// The Authorization header's bearer token; None when there is no such header.
pub(crate) fn bearer(s: &ServerSession) -> Result<Option<&str>, ApiError> {
    let Some(value) = s.req_header().headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ApiError::invalid_token("Authorization header is malformed"));
    let token = value.and_then(|value| match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(ApiError::invalid_token("Authorization must be 'Bearer <token>'")),
    });
    if let Err(e) = &token {
        crate::observe::token(Err(&e.code)); // (issue 19, observe)
    }
    token
}

/// A realtime request that passed every check: its stream starts.
struct Started {
    kind: RouteKind,
    conn: Arc<Conn>,
    slots: transport::Slots,
    /// A Parse LiveQuery WebSocket (parse/live.rs).
    parse: bool,
}

impl App {
    /// The realtime routes (route kinds WebSocket and Sse): the same per-IP request limit
    /// and token check as every route (the token may also be `?access_token=`), the
    /// handshake or the subscription, the caps on open feeds; then the response head (101,
    /// or 200 text/event-stream). Err: the usual reply, before any byte of a stream.
    async fn start_realtime(&self, s: &mut ServerSession, route: &'static Route, collection: Option<String>) -> Result<Started, Option<Reply>> {
        self.check_realtime(s, route, collection).await.map_err(Some)?.start(self, s).await
    }

    async fn check_realtime(&self, s: &mut ServerSession, route: &'static Route, collection: Option<String>) -> Result<Checked, Reply> {
        let (client_ip, ip_key) = self.client(s);
        self.limiter.check(ratelimit::Kind::Request, &ip_key).map_err(|secs| Reply::error(ApiError::rate_limited(secs)))?;
        let query = s.req_header().uri.query().map(str::to_string);
        let (accept, subscribe, query_token) = match route.kind {
            RouteKind::WebSocket => {
                let accept = ws::handshake(s.req_header()).map_err(|r| match r {
                    ws::Refusal::Bad(e) => Reply::error(e),
                    ws::Refusal::UpgradeRequired(e) => Reply { upgrade_required: true, ..Reply::error(e) },
                })?;
                (Some(accept), None, ws::query(query.as_deref()).map_err(Reply::error)?)
            }
            _ => {
                let last_event_id = match s.req_header().headers.get("last-event-id") {
                    None => None,
                    Some(v) => Some(v.to_str().map_err(|_| Reply::error(ApiError::bad_request("invalid_request", "Last-Event-ID is malformed")))?.to_string()),
                };
                let (sub, token) = sse::params(collection.unwrap_or_default(), query.as_deref(), last_event_id.as_deref()).map_err(Reply::error)?;
                (None, Some(sub), token)
            }
        };
        let token = match (bearer(s).map_err(Reply::error)?, query_token.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(Reply::error(ApiError::bad_request("invalid_request", "send the token once: Authorization or access_token, not both")))
            }
            (h, q) => h.or(q).map(str::to_string),
        };
        let claims = match token {
            Some(t) => Some(self.verify_token(&t).await.map_err(Reply::error)?),
            None => None,
        };
        let caller = Caller::new(claims, client_ip, ip_key);
        let slots = self.realtime_caps.admit(&caller).map_err(Reply::error)?;
        let conn = Conn::new(caller, crate::realtime::outbox_bytes(self.cfg.realtime_outbox_bytes, self.cfg.body_limit));
        Ok(Checked { kind: route.kind, conn, slots, accept, subscribe, parse: false })
    }

    /// A Parse LiveQuery WebSocket at the door's mount: the same per-IP limit, handshake
    /// and caps on open feeds as `/v1/realtime`; the caller comes in band (`connect`,
    /// `subscribe` with a session token or the master key, parse/live.rs).
    async fn parse_live(self: &Arc<Self>, mut s: ServerSession, shutdown: &ShutdownWatch, started: std::time::Instant) -> Option<ReusedHttpStream> {
        let checked = (|| {
            let (client_ip, ip_key) = self.client(&s);
            self.limiter.check(ratelimit::Kind::Request, &ip_key).map_err(|secs| Reply::error(ApiError::rate_limited(secs)))?;
            if s.is_http2() {
                return Err(Reply::error(http1_required()));
            }
            let accept = ws::handshake(s.req_header()).map_err(|r| match r {
                ws::Refusal::Bad(e) => Reply::error(e),
                ws::Refusal::UpgradeRequired(e) => Reply { upgrade_required: true, ..Reply::error(e) },
            })?;
            let caller = Caller::new(None, client_ip, ip_key);
            let slots = self.realtime_caps.admit(&caller).map_err(Reply::error)?;
            let conn = Conn::new(caller, crate::realtime::outbox_bytes(self.cfg.realtime_outbox_bytes, self.cfg.body_limit));
            Ok(Checked { kind: RouteKind::WebSocket, conn, slots, accept: Some(accept), subscribe: None, parse: true })
        })();
        let result = match checked {
            Ok(c) => c.start(self, &mut s).await,
            Err(reply) => Err(Some(reply)),
        };
        match result {
            Ok(st) => {
                log::info!("GET {} -> Parse LiveQuery stream", s.req_header().uri.path());
                self.stream(s, st, shutdown).await;
                None
            }
            Err(None) => None,
            Err(Some(reply)) => {
                s.set_keepalive(None);
                self.respond(s, reply, started).await
            }
        }
    }
}

/// A realtime request whose checks passed.
struct Checked {
    kind: RouteKind,
    conn: Arc<Conn>,
    slots: transport::Slots,
    accept: Option<String>,
    subscribe: Option<realtime::Subscribe>,
    parse: bool,
}

impl Checked {
    /// Subscribe (SSE: its errors are the usual JSON 4xx, before the first byte) and write
    /// the response head. Err(None): the head could not be written.
    async fn start(self, app: &App, s: &mut ServerSession) -> Result<Started, Option<Reply>> {
        let Checked { kind, conn, slots, accept, subscribe, parse } = self;
        s.set_keepalive(None);
        let head = match (accept, subscribe) {
            (Some(accept), _) => {
                let mut h = ResponseHeader::build(StatusCode::SWITCHING_PROTOCOLS, Some(3)).map_err(|_| Some(Reply::error(ApiError::internal())))?;
                let _ = h.insert_header(header::UPGRADE, "websocket");
                let _ = h.insert_header(header::CONNECTION, "Upgrade");
                let _ = h.insert_header(header::SEC_WEBSOCKET_ACCEPT, accept);
                h
            }
            (None, Some(sub)) => {
                // Subscribed before the first byte: its errors are the usual JSON 4xx.
                app.feeds.subscribe(&conn, sub).await.map_err(|e| Some(Reply::error(e)))?;
                let mut h = ResponseHeader::build(StatusCode::OK, Some(4)).map_err(|_| Some(Reply::error(ApiError::internal())))?;
                let _ = h.insert_header(header::CONTENT_TYPE, "text/event-stream");
                let _ = h.insert_header(header::CACHE_CONTROL, "no-store");
                // nginx and others would otherwise buffer the stream.
                let _ = h.insert_header("x-accel-buffering", "no");
                app.edge.headers(s.req_header(), &mut h); // (issue 19, edge)
                h
            }
            (None, None) => return Err(Some(Reply::error(ApiError::internal()))),
        };
        let mut head = head;
        crate::observe::stamp(&mut head); // (issue 19, observe): X-Request-Id
        if let Err(e) = s.write_response_header(Box::new(head)).await {
            log::debug!("writing a realtime response head: {e}");
            app.feeds.disconnect(&conn);
            return Err(None);
        }
        Ok(Started { kind, conn, slots, parse })
    }
}

impl App {

    /// Run a started stream to its end on the raw connection (never reused after).
    async fn stream(self: &Arc<Self>, s: ServerSession, started: Started, shutdown: &ShutdownWatch) {
        let Started { kind, conn, slots, parse } = started;
        let mut s = s;
        // Bytes the client sent after its head (a WebSocket client must wait for the 101,
        // RFC 6455 4.1, but may not): pingora holds them; they are the first frames.
        let preread = match kind {
            RouteKind::WebSocket => match tokio::time::timeout(std::time::Duration::ZERO, s.read_request_body()).await {
                Ok(Ok(Some(b))) => b.to_vec(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        let ServerSession::H1(h1) = s else {
            self.feeds.disconnect(&conn);
            return;
        };
        let stream = h1.into_inner();
        let (app, shutdown) = (self.clone(), shutdown.clone());
        let busy = self.edge.busy(); // until the stream has said goodbye (issue 19, edge)
        // On a task of its own, so that pingora's task for this connection ends here, and
        // with it the request path's futures it holds boxed (~12.6 KiB of an idle
        // subscriber's ~28 KiB, heaptrack; docs/benchmarks.md): a stream's task holds
        // only the stream's loop. The loop watches `shutdown` itself.
        // (issue 19, observe): the stream's SQL (a WebSocket's subscriptions) keeps the id.
        tokio::spawn(crate::observe::carry(async move {
            let mut preread = preread;
            let _busy = busy;
            let stream = transport::Socket::detach(stream, &mut preread, app.cfg.realtime_max_message_bytes + 14).await;
            match kind {
                RouteKind::WebSocket => {
                    let parse = parse.then(Box::default);
                    ws::Ws { app, conn, slots, shutdown, starting: Default::default(), parse }.run(stream, preread).await
                }
                _ => sse::Sse { app, conn, slots, shutdown }.run(stream).await,
            }
        }));
    }
}

/// A live feed asked for over HTTP/2 (issue 19, edge).
fn http1_required() -> ApiError {
    ApiError::new(
        StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        "http1_required",
        "live feeds (WebSocket, server-sent events) need HTTP/1.1; this request came over HTTP/2",
    )
}

fn check_content_type(s: &ServerSession) -> Result<(), ApiError> {
    let Some(ct) = s.req_header().headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let json = ct.to_str().is_ok_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the body as application/json"));
    }
    Ok(())
}

/// A call Postgres refused by its GRANTs (42501 without a code of ours) reads
/// "permission denied for function collections": say instead what the route needs,
/// as the table declares it. Postgres decided; this only words the answer.
fn reword_refusal(mut e: ApiError, route: &Route, signed_in: bool) -> ApiError {
    if !e.grant_refused {
        return e;
    }
    e.message = match (route.auth, signed_in) {
        (Auth::Service, _) => "this call needs a service token: send Authorization: Bearer <service token>".into(),
        (Auth::User, true) => "this call needs a user's access token (a service token acts for no user)".into(),
        (_, false) => "this call needs a signed-in user: send Authorization: Bearer <access_token>".into(),
        (Auth::Anyone, true) => "this token may not make this call".into(),
    };
    e
}

/// The SQL call's answer as the route's reply.
fn answer(route: &Route, out: Option<db::Out>) -> Result<Reply, ApiError> {
    let a = &route.answer;
    if a.shape == Shape::Void {
        return Ok(Reply::empty(a.status));
    }
    let Some(out) = out else {
        log::error!("route {}: its SQL returned no row", route.name);
        return Err(ApiError::internal());
    };
    let mut etag = None;
    match a.shape {
        Shape::Document => etag = out.extra.first().cloned().flatten().map(|v| format!("\"{v}\"")),
        Shape::ErrorResult(fallback) => {
            if let Some(Some(code)) = out.extra.first() {
                let message = out.extra.get(1).cloned().flatten().unwrap_or_else(|| fallback.into());
                // A throttled attempt says how long to wait; a wrong one is a 401.
                if let Some(secs) = out.extra.get(2).cloned().flatten().and_then(|s| s.parse::<u64>().ok()) {
                    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message);
                    e.retry_after = Some(secs.max(1));
                    return Err(e);
                }
                // The credentials were right but the account may not sign in (yet): 403.
                let status = match code.as_str() {
                    "account_suspended" | "email_not_verified" => StatusCode::FORBIDDEN,
                    _ => StatusCode::UNAUTHORIZED,
                };
                return Err(ApiError::new(status, code, message));
            }
        }
        // The RPC door: a void function is 204.
        Shape::Rpc => {
            if out.extra.first().cloned().flatten().as_deref() == Some("true") {
                return Ok(Reply::empty(StatusCode::NO_CONTENT));
            }
        }
        Shape::Json | Shape::Void | Shape::Batch => {}
    }
    // An ErrorResult route whose success has no body (a password reset).
    if a.status == StatusCode::NO_CONTENT {
        return Ok(Reply::empty(a.status));
    }
    let mut r = Reply::json(a.status, out.body.into_bytes());
    r.no_store = a.no_store;
    r.etag = etag;
    Ok(r)
}

#[async_trait]
impl HttpServerApp for App {
    async fn process_new_http(self: &Arc<Self>, mut s: ServerSession, shutdown: &ShutdownWatch) -> Option<ReusedHttpStream> {
        match s.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                log::debug!("reading a request head: {e}");
                // --- B describe (issue 19): a head pingora refuses as malformed (e.g. a
                // URL over the http crate's 65534 bytes; schemathesis sent a 196 KB `where`)
                // is answered 400 in the house shape, not by a closed connection.
                if e.etype == pingora::ErrorType::InvalidHTTPHeader {
                    // (issue 19, observe): a fresh id, counted and logged.
                    crate::observe::scope(crate::observe::State::bare(), async {
                        s.set_write_timeout(Some(self.cfg.body_timeout)); // a client that does not read
                        let r = Reply::error(ApiError::bad_request("invalid_request", "the request head is malformed or too long (a URL may have at most 65534 bytes)"));
                        if let Ok(h) = r.header() {
                            if s.write_error_response(h, r.body.clone()).await.is_ok() {
                                crate::observe::written();
                                // The client may still be sending (the rest of the head, a
                                // body): closing with bytes unread resets the connection and
                                // can destroy the 400. End our side, then discard raw bytes
                                // for at most linger / linger_bytes (as `linger` does).
                                if let ServerSession::H1(v1) = s {
                                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                                    let mut io = v1.into_inner();
                                    let (mut left, mut buf) = (self.cfg.linger_bytes, vec![0u8; 16 * 1024]);
                                    let discard = async {
                                        let _ = io.flush().await;
                                        let _ = io.shutdown().await;
                                        while left > 0 {
                                            match io.read(&mut buf).await {
                                                Ok(0) | Err(_) => return,
                                                Ok(n) => left = left.saturating_sub(n),
                                            }
                                        }
                                    };
                                    let _ = tokio::time::timeout(self.cfg.linger, discard).await;
                                }
                            }
                        }
                    })
                    .await;
                }
                return None;
            }
        }
        // (issue 19, observe): the request's id, route and answer, counted and logged
        // once it is answered (observe.rs).
        let state = crate::observe::State::new(&s, || self.client(&s).0);
        crate::observe::scope(state, self.serve(s, shutdown)).await
    }
}

impl App {
    async fn serve(self: &Arc<Self>, mut s: ServerSession, shutdown: &ShutdownWatch) -> Option<ReusedHttpStream> {
        s.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let _busy = self.edge.busy(); // a graceful stop waits for it (issue 19, edge)
        // A client that stops reading its answer cannot pin the task and its buffer.
        s.set_write_timeout(Some(self.cfg.body_timeout));
        // CORS preflight: answered before any route, limit or database work (issue 19, edge).
        if let Some(cors) = self.edge.cors.as_ref().filter(|_| crate::edge::Cors::is_preflight(s.req_header())) {
            log::debug!("OPTIONS {} -> preflight", s.req_header().uri.path());
            let head = cors.preflight(s.req_header());
            return self.respond_head(s, head).await;
        }
        let started = std::time::Instant::now();
        // The Parse door (issue 21): its own shapes, the same SQL functions and limits.
        if let Some(door) = self.parse.as_ref() {
            let path = s.req_header().uri.path().to_string();
            if let Some(rest) = door.route(&path) {
                if crate::parse::live::is_upgrade(s.req_header()) {
                    // Parse LiveQuery (parse/live.rs): a live feed in Parse's dialect.
                    return self.parse_live(s, shutdown, started).await;
                }
                if let Some(id) = crate::parse::files::download_target(door, s.req_header(), rest) {
                    // A Parse file's URL (parse/files.rs): the files module's download.
                    let uri = s.req_header().uri.path().to_string();
                    return match crate::parse::files::download(self, &mut s, id).await {
                        Ok(()) => {
                            log::info!("GET {uri} -> Parse file in {:?}", started.elapsed());
                            self.finish_streamed(s).await
                        }
                        Err(reply) => self.respond(s, reply, started).await,
                    };
                }
                let reply = crate::parse::serve(self, door, &mut s, rest).await;
                if *shutdown.borrow() {
                    s.set_keepalive(None);
                }
                return self.respond(s, reply, started).await;
            }
        }
        if let Some((route, collection)) = realtime_route(&s) {
            // Live feeds run on the raw HTTP/1 connection (`stream`): over HTTP/2 they
            // are refused plainly (issue 19, edge; browsers open WebSockets over HTTP/1.1).
            let collection = if s.is_http2() { Err(http1_required()) } else { collection };
            let result = match collection {
                Ok(c) => self.start_realtime(&mut s, route, c).await,
                Err(e) => Err(Some(Reply::error(e))),
            };
            match result {
                Ok(st) => {
                    log::info!("{} {} -> stream", s.req_header().method, s.req_header().uri.path());
                    self.stream(s, st, shutdown).await;
                    return None;
                }
                Err(None) => return None,
                Err(Some(reply)) => {
                    // A refused handshake or stream: the client is not speaking plain
                    // requests on this connection; it is not kept.
                    s.set_keepalive(None);
                    return self.respond(s, reply, started).await;
                }
            }
        }
        if let Some(route) = file_route(&s) {
            let uri = s.req_header().uri.clone();
            let params = match router::route(ROUTES, &s.req_header().method.clone(), uri.path()) {
                Match::Found(_, p) => p,
                _ => return None, // file_route found it
            };
            return match crate::files::serve(self, &mut s, route, params).await {
                Ok(()) => {
                    log::info!("{} {} -> file in {:?}", s.req_header().method, uri.path(), started.elapsed());
                    self.finish_streamed(s).await
                }
                Err(reply) => self.respond(s, reply, started).await,
            };
        }
        let reply = self.handle(&mut s).await.unwrap_or_else(Reply::error);
        if *shutdown.borrow() {
            s.set_keepalive(None); // stopping: `Connection: close` (issue 19, edge)
        }
        self.respond(s, reply, started).await
    }
}

/// The file route (uploads, downloads, tus) a request is for; None for the rest.
fn file_route(s: &ServerSession) -> Option<&'static Route> {
    let h = s.req_header();
    match router::route(ROUTES, &h.method, h.uri.path()) {
        Match::Found(r, _) if matches!(r.kind, RouteKind::File(_)) => Some(r),
        _ => None,
    }
}

/// The realtime route a request is for, and its collection (SSE); None for the rest.
type Collection = Result<Option<String>, ApiError>;

fn realtime_route(s: &ServerSession) -> Option<(&'static Route, Collection)> {
    let h = s.req_header();
    match router::route(ROUTES, &h.method, h.uri.path()) {
        Match::Found(r, p) if matches!(r.kind, RouteKind::WebSocket | RouteKind::Sse) => {
            let collection = if r.kind == RouteKind::Sse { p.get(0).map(|c| Some(c.into_owned())) } else { Ok(None) };
            Some((r, collection))
        }
        _ => None,
    }
}

impl App {
    /// After a file route wrote its whole answer itself: keep the connection iff the
    /// request body was read to its end and the answer was complete (a cut download
    /// turned keep-alive off), else close it.
    async fn finish_streamed(&self, mut s: ServerSession) -> Option<ReusedHttpStream> {
        if self.edge.stopping() {
            s.set_keepalive(None); // (issue 19, edge): stopping, the connection closes
        }
        crate::observe::written(); // (issue 19, observe): latency ends before any linger
        if !s.is_body_done() {
            s.set_keepalive(None);
            if self.cfg.linger_bytes > 0 {
                self.linger(&mut s).await;
            }
        }
        let settings = HttpPersistentSettings::for_session(&s);
        match s.finish().await {
            Ok(stream) => stream.map(|st| ReusedHttpStream::from_reusable_stream(st, settings)),
            Err(e) => {
                log::debug!("finishing a file request: {e}");
                None
            }
        }
    }

    /// A bodiless answer built by the edge (a CORS preflight), then keep or close (issue 19, edge).
    async fn respond_head(&self, mut s: ServerSession, head: pingora::Result<ResponseHeader>) -> Option<ReusedHttpStream> {
        let Ok(mut head) = head else { return None };
        self.edge.secure(&mut head); // HSTS (issue 19, edge)
        crate::observe::stamp(&mut head); // (issue 19, observe): X-Request-Id; counted and logged
        let early = !s.is_body_done();
        if early || self.edge.stopping() {
            s.set_keepalive(None);
        }
        if let Err(e) = s.write_response_header(Box::new(head)).await {
            log::debug!("writing a preflight answer: {e}");
            return None;
        }
        crate::observe::written(); // (issue 19, observe)
        // A preflight with a body left unread: linger so that closing does not reset the answer.
        if early && self.cfg.linger_bytes > 0 {
            self.linger(&mut s).await;
        }
        let settings = HttpPersistentSettings::for_session(&s);
        s.finish().await.ok().flatten().map(|st| ReusedHttpStream::from_reusable_stream(st, settings))
    }

    /// Write a reply, then keep, linger on or close the connection.
    async fn respond(&self, mut s: ServerSession, reply: Reply, started: std::time::Instant) -> Option<ReusedHttpStream> {
        // Answered without reading the whole body (an early 401, 404, 413, 429...):
        // never reuse the connection, which a client could use to pass body bytes off
        // as the next request's head (deadline.rs); linger so the answer arrives.
        let early = !s.is_body_done();
        if early || self.edge.stopping() {
            s.set_keepalive(None); // (issue 19, edge): or stopping, the connection closes
        }
        let written = match reply.header() {
            Ok(mut h) => {
                self.edge.headers(s.req_header(), &mut h); // (issue 19, edge)
                s.write_response_header(Box::new(h)).await
            }
            Err(e) => {
                // Only our own header values go in; should one be invalid, a bare 500.
                log::error!("building a response: {e}");
                s.set_keepalive(None);
                // (issue 19, observe): the bare 500 carries the id too, and is counted.
                match ResponseHeader::build(StatusCode::INTERNAL_SERVER_ERROR, Some(2)) {
                    Ok(mut h) => {
                        let _ = h.insert_header(header::CONTENT_LENGTH, 0);
                        crate::observe::stamp(&mut h);
                        s.write_response_header(Box::new(h)).await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let written = match written {
            Ok(()) if !reply.body.is_empty() => s.write_response_body(reply.body, true).await,
            other => other,
        };
        if let Err(e) = written {
            log::debug!("writing a response: {e}");
            return None;
        }
        crate::observe::written(); // (issue 19, observe): latency ends before any linger
        log::info!("{} {} -> {} in {:?}", s.req_header().method, s.req_header().uri.path(), reply.status.as_u16(), started.elapsed());
        // A client that is slow sending its body (408) or sent a broken one gets no more time.
        if early && reply.status != StatusCode::REQUEST_TIMEOUT && self.cfg.linger_bytes > 0 {
            self.linger(&mut s).await;
        }
        let settings = HttpPersistentSettings::for_session(&s);
        match s.finish().await {
            Ok(stream) => stream.map(|st| ReusedHttpStream::from_reusable_stream(st, settings)),
            Err(e) => {
                log::debug!("finishing a request: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = r#"{"sub": "u1", "role": "baas_user", "sid": "s"}"#;
    const OTHER: &str = r#"{"sub": "u2", "role": "baas_user", "sid": "s"}"#;
    const SERVICE: &str = r#"{"sub": "t1", "role": "baas_service", "sid": "s"}"#;

    #[test]
    fn requests_in_flight_are_capped_per_address_and_per_user_but_not_for_service_tokens() {
        let caps = caps(3, 2, 100);
        // A user's requests count against the user and the address.
        let a = admit(&caps, "1.1.1.1", Some(USER)).unwrap();
        let b = admit(&caps, "2.2.2.2", Some(USER)).unwrap();
        let e = admit(&caps, "3.3.3.3", Some(USER)).err().unwrap();
        assert_eq!((e.status, e.code.as_str(), e.retry_after), (StatusCode::TOO_MANY_REQUESTS, "too_many_concurrent_requests", Some(1)));
        assert!(e.message.contains("this user already has 2 requests in flight"), "{}", e.message);
        // The address 1.1.1.1 has one slot of three taken by the user; two more callers.
        let c = admit(&caps, "1.1.1.1", None).unwrap();
        let d = admit(&caps, "1.1.1.1", Some(OTHER)).unwrap();
        let e = admit(&caps, "1.1.1.1", None).err().unwrap();
        assert!(e.message.contains("this client address already has 3 requests in flight"), "{}", e.message);
        // A refusal by the user cap leaves no address slot taken.
        assert!(admit(&caps, "4.4.4.4", Some(USER)).is_err());
        let held: Vec<_> = (0..3).map(|_| admit(&caps, "4.4.4.4", None).unwrap()).collect();
        // Service tokens take no slot anywhere.
        let service: Vec<_> = (0..10).map(|_| admit(&caps, "1.1.1.1", Some(SERVICE)).unwrap()).collect();
        assert!(service.iter().all(|(ip, user)| ip.is_none() && user.is_none()));
        // Finished requests free their slots.
        drop((a, c));
        assert!(admit(&caps, "1.1.1.1", Some(USER)).is_ok());
        drop((b, d, held));
    }

    fn caps(per_ip: u32, per_user: u32, anonymous: u32) -> InFlightCaps {
        use crate::ratelimit::InFlight;
        InFlightCaps { per_ip: InFlight::new(per_ip, 100), per_user: InFlight::new(per_user, 100), anonymous: InFlight::new(anonymous, 100) }
    }

    /// Two addresses (or one IPv6 customer's /64s) within their own caps could still
    /// hold every connection: requests without a token share one cap besides, and
    /// signed-in users are not under it.
    #[test]
    fn anonymous_requests_in_flight_share_one_cap_that_signed_in_users_are_not_under() {
        let caps = caps(3, 2, 4);
        let held: Vec<_> = ["1.1.1.1", "1.1.1.1", "2.2.2.2", "3.3.3.3"].iter().map(|ip| admit(&caps, ip, None).unwrap()).collect();
        let e = admit(&caps, "4.4.4.4", None).err().unwrap();
        assert_eq!((e.status, e.code.as_str(), e.retry_after), (StatusCode::TOO_MANY_REQUESTS, "too_many_concurrent_requests", Some(1)));
        assert!(e.message.contains("4 requests without a token are in flight"), "{}", e.message);
        assert_eq!(caps.per_ip.in_flight("4.4.4.4"), 0, "a refusal by the anonymous cap leaves no address slot taken");
        // A signed-in user, even from an address with anonymous requests in flight.
        let user = admit(&caps, "1.1.1.1", Some(USER)).unwrap();
        drop(held);
        assert!(admit(&caps, "4.4.4.4", None).is_ok(), "finished requests free the shared slots");
        drop(user);
    }

    /// A flood of /healthz runs one database check, not one per caller.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_health_checks_share_one_check_and_its_answer_expires() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let runs = Arc::new(AtomicU32::new(0));
        let check = |runs: Arc<AtomicU32>| async move {
            runs.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Err(ApiError::unavailable("down"))
        };
        let h = Arc::new(HealthCheck::new(std::time::Duration::from_secs(3600)));
        let callers: Vec<_> = (0..50)
            .map(|_| {
                let (h, runs) = (h.clone(), runs.clone());
                tokio::spawn(async move { h.get(|| check(runs)).await })
            })
            .collect();
        for c in callers {
            assert!(c.await.unwrap().is_err_and(|e| e.message == "down"), "each caller gets the check's answer");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "50 concurrent callers, one check");
        let h = HealthCheck::new(std::time::Duration::ZERO);
        let _ = h.get(|| check(runs.clone())).await;
        let _ = h.get(|| check(runs.clone())).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "an expired answer is checked again");
    }
}
