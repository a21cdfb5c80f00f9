//! The pingora app: read the request, verify the token, dispatch, write JSON.

use crate::config::Config;
use crate::db;
use crate::errors::ApiError;
use crate::jwt::{self, KeyCache, Verdict};
use crate::ratelimit::{self, Kind, Limiter};
use crate::router::{self, Match, Route};
use crate::routes::{admin, auth, documents};
use async_trait::async_trait;
use bytes::BytesMut;
use deadpool_postgres::Pool;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub struct App {
    pub statement_timeout: String,
    /// See `Ctx::db_deadline`.
    pub db_deadline: std::time::Duration,
    pub cfg: Config,
    /// The proxy's own queries (keys, settings).
    pub pool: Pool,
    /// Requests' transactions.
    pub requests: crate::db::RequestPool,
    pub keys: Arc<KeyCache>,
    pub limiter: Limiter,
}

/// What a route handler sees.
pub struct Ctx<'a> {
    pub pool: &'a crate::db::RequestPool,
    /// `statement_timeout` for this request's transaction, e.g. "5000ms".
    pub statement_timeout: &'a str,
    /// How long the proxy waits for the database's answer before giving up on the
    /// connection: twice the statement timeout (a request runs two statements) and a
    /// margin, so only a database host gone silent reaches it.
    pub db_deadline: std::time::Duration,
    /// Verified claims JSON, None when anonymous.
    pub claims: Option<&'a str>,
    /// The client's address (ratelimit::client_ip), for the audit log, and the key its
    /// per-IP limits count under (ratelimit::ip_key).
    pub client_ip: &'a str,
    pub ip_key: &'a str,
    pub limiter: &'a Limiter,
}

impl Ctx<'_> {
    /// Count this request against a per-IP or per-account limit.
    pub fn limit(&self, kind: Kind, key: &str) -> Result<(), ApiError> {
        self.limiter.check(kind, key).map_err(ApiError::rate_limited)
    }
}

pub struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    no_store: bool,
    allow: Option<&'static str>,
    /// `ETag` of a document response: its version, quoted.
    pub etag: Option<String>,
    retry_after: Option<u64>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Vec<u8>) -> Reply {
        Reply { status, body, content_type: Some("application/json"), no_store: false, allow: None, etag: None, retry_after: None }
    }
    pub fn empty(status: StatusCode) -> Reply {
        Reply { status, body: Vec::new(), content_type: None, no_store: false, allow: None, etag: None, retry_after: None }
    }
    /// Responses that carry tokens or account data must not be cached by anything.
    pub fn no_store(mut self) -> Reply {
        self.no_store = true;
        self
    }
    fn error(e: &ApiError) -> Reply {
        let mut r = Reply::json(e.status, e.body()).no_store();
        r.retry_after = e.retry_after;
        r
    }
    fn into_response(self) -> Response<Vec<u8>> {
        let mut b = Response::builder()
            .status(self.status)
            .header(header::CONTENT_LENGTH, self.body.len());
        if let Some(ct) = self.content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        if self.no_store {
            b = b.header(header::CACHE_CONTROL, "no-store");
        }
        if let Some(allow) = self.allow {
            b = b.header(header::ALLOW, allow);
        }
        if let Some(etag) = self.etag {
            b = b.header(header::ETAG, etag);
        }
        if let Some(secs) = self.retry_after {
            b = b.header(header::RETRY_AFTER, secs);
        }
        b.body(self.body).unwrap_or_else(|e| {
            // Only our own header values go in; should one ever be invalid, answer 500
            // without it rather than panic.
            log::error!("building a response: {e}");
            let mut r = Response::new(ApiError::internal().body());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}

enum Body {
    Ok(Vec<u8>),
    Err(ApiError),
}

impl App {
    async fn read_body(&self, s: &mut ServerSession) -> Body {
        let limit = self.cfg.body_limit;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body is larger than {limit} bytes"),
            )
        };
        let declared = s
            .req_header()
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Body::Err(too_large());
        }
        let mut buf = BytesMut::new();
        let read = async {
            loop {
                match s.read_request_body().await {
                    Ok(Some(chunk)) => {
                        if buf.len() + chunk.len() > limit {
                            return Err(too_large());
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
        match tokio::time::timeout(self.cfg.body_timeout, read).await {
            Ok(Ok(())) => Body::Ok(buf.to_vec()),
            Ok(Err(e)) => Body::Err(e),
            Err(_) => Body::Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "request body was not received in time",
            )),
        }
    }

    /// The client's address (the socket peer, or what a trusted proxy forwarded) and
    /// the key its per-IP limits count under.
    fn client(&self, s: &ServerSession) -> (String, String) {
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
        let Some(value) = s.req_header().headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let value = value.to_str().map_err(|_| ApiError::invalid_token("Authorization header is malformed"))?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(ApiError::invalid_token("Authorization must be 'Bearer <token>'")),
        };
        let keys = self.keys.get();
        let live = |c: jwt::Claims| -> Result<Option<String>, ApiError> {
            if self.keys.is_session_ended(&c.sid) {
                return Err(ApiError::invalid_token("the session of this token has ended"));
            }
            Ok(Some(c.json))
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

    async fn handle(&self, s: &mut ServerSession) -> Reply {
        let method = s.req_header().method.clone();
        let uri = s.req_header().uri.clone();
        let path = uri.path();
        let route = match router::route(&method, path) {
            Match::Found(r) => r,
            Match::WrongMethod(allow) => {
                let e = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} is not allowed on {path}"));
                let mut r = Reply::error(&e);
                r.allow = Some(allow);
                return r;
            }
            Match::NotFound => {
                return Reply::error(&ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no route for {path}")));
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
        match route {
            Route::Health => return self.health().await,
            Route::Jwks => {
                let body = self.keys.get().jwks_body.as_ref().clone();
                return Reply::json(StatusCode::OK, body);
            }
            _ => {}
        }
        // Limits come first: a refused request costs no token check, body or connection.
        let (client_ip, ip_key) = self.client(s);
        let per_ip = match route {
            Route::Signup => Some(Kind::Signup),
            Route::Login | Route::Refresh => Some(Kind::Auth),
            _ => None,
        };
        for kind in std::iter::once(Kind::Request).chain(per_ip) {
            if let Err(secs) = self.limiter.check(kind, &ip_key) {
                return Reply::error(&ApiError::rate_limited(secs));
            }
        }
        // Tokens are checked before the body is read or a connection is taken.
        let claims = match self.authenticate(s).await {
            Ok(c) => c,
            Err(e) => return Reply::error(&e),
        };
        let body = if route.has_body() {
            if let Some(ct) = s.req_header().headers.get(header::CONTENT_TYPE) {
                let ok = ct
                    .to_str()
                    .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
                    .unwrap_or(false);
                if !ok {
                    return Reply::error(&ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        "send the body as application/json",
                    ));
                }
            }
            match self.read_body(s).await {
                Body::Ok(b) => b,
                Body::Err(e) => {
                    // The rest of the body is unread: do not reuse this connection.
                    s.set_keepalive(None);
                    return Reply::error(&e);
                }
            }
        } else {
            Vec::new()
        };
        let version = match s.req_header().headers.get(header::IF_MATCH) {
            None => None,
            Some(h) => match h.to_str().map_err(|_| ApiError::bad_request("invalid_request", "If-Match is malformed")).and_then(|v| documents::if_match(Some(v))) {
                Ok(v) => v,
                Err(e) => return Reply::error(&e),
            },
        };
        let ctx = Ctx {
            pool: &self.requests,
            claims: claims.as_deref(),
            statement_timeout: &self.statement_timeout,
            db_deadline: self.db_deadline,
            client_ip: &client_ip,
            ip_key: &ip_key,
            limiter: &self.limiter,
        };
        let b = &body;
        let result = match route {
            Route::Signup => auth::signup(&ctx, b).await,
            Route::Login => auth::login(&ctx, b).await,
            Route::Refresh => auth::refresh(&ctx, b).await,
            Route::Logout => auth::logout(&ctx).await,
            Route::GetUser => auth::get_user(&ctx).await,
            Route::UpdateUser => auth::update_user(&ctx, b).await,
            Route::DeleteUser => auth::delete_user(&ctx).await,
            Route::ListCollections => admin::list_collections(&ctx).await,
            Route::CreateCollection => admin::create_collection(&ctx, b).await,
            Route::GetCollection(c) => admin::get_collection(&ctx, c).await,
            Route::DropCollection(c) => admin::drop_collection(&ctx, c).await,
            Route::ListDocuments(c) => documents::list(&ctx, c, uri.query()).await,
            Route::CreateDocument(c) => documents::create(&ctx, c, b).await,
            Route::GetDocument(c, id) => documents::get(&ctx, c, id).await,
            Route::ReplaceDocument(c, id) => documents::replace(&ctx, c, id, b, version).await,
            Route::PatchDocument(c, id) => documents::patch(&ctx, c, id, b, version).await,
            Route::DeleteDocument(c, id) => documents::delete(&ctx, c, id, version).await,
            Route::GetAcl(c, id) => documents::get_acl(&ctx, c, id).await,
            Route::SetAcl(c, id) => documents::set_acl(&ctx, c, id, b).await,
            Route::SetOwner(c, id) => documents::set_owner(&ctx, c, id, b).await,
            Route::ListIndexes(c) => admin::list_indexes(&ctx, c).await,
            Route::CreateIndex(c) => admin::create_index(&ctx, c, b).await,
            Route::DropIndex(c, p) => admin::drop_index(&ctx, c, p, uri.query()).await,
            Route::ListRoles => admin::list_roles(&ctx).await,
            Route::CreateRole => admin::create_role(&ctx, b).await,
            Route::DropRole(r) => admin::drop_role(&ctx, r).await,
            Route::AddRoleMember(r, u) => admin::membership(&ctx, "select baas.add_role_member($1, $2::text::uuid)", r, u).await,
            Route::RemoveRoleMember(r, u) => admin::membership(&ctx, "select baas.remove_role_member($1, $2::text::uuid)", r, u).await,
            Route::AddRoleToRole(r, m) => admin::membership(&ctx, "select baas.add_role_to_role($1, $2)", r, m).await,
            Route::RemoveRoleFromRole(r, m) => admin::membership(&ctx, "select baas.remove_role_from_role($1, $2)", r, m).await,
            Route::Health | Route::Jwks => unreachable!("answered above"),
        };
        result.unwrap_or_else(|e| Reply::error(&e))
    }

    async fn health(&self) -> Reply {
        match db::query_json(&self.pool, "select baas.auth_settings()").await {
            Ok(_) => Reply::json(StatusCode::OK, br#"{"status":"ok","database":"ok"}"#.to_vec()),
            Err(e) => Reply::error(&ApiError::unavailable(format!("database check failed: {}", e.message))),
        }
    }
}

#[async_trait]
impl ServeHttp for App {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let started = std::time::Instant::now();
        let reply = self.handle(s).await;
        // Answered without reading the whole body (an early 401, 404, 413, 429...):
        // close rather than let the server drain the rest, which a client could use
        // to pass body bytes off as the next request's head (deadline.rs).
        if !s.is_body_done() {
            s.set_keepalive(None);
        }
        log::info!(
            "{} {} -> {} in {:?}",
            s.req_header().method,
            s.req_header().uri.path(),
            reply.status.as_u16(),
            started.elapsed()
        );
        reply.into_response()
    }
}
