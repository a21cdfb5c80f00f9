//! The Parse door (issue 21, docs/parse.md): Parse's REST API under `parse_mount`, for
//! apps built on the Parse SDKs. Each request is translated onto the same `baas.*` SQL
//! functions as pgbaas's own routes and runs in one transaction as its caller, so
//! Postgres decides every permission: a session token is resolved in Postgres
//! (`baas._parse_authenticate`, sql/parse.sql) to its user, the master key runs as the
//! service role, and objects are documents under their ACLs.
//!
//! Both request styles the SDKs use are taken: REST with `X-Parse-*` headers, and the
//! JavaScript SDK's `POST` of a `text/plain` JSON body carrying `_method`,
//! `_ApplicationId`, `_SessionToken`, `_MasterKey` … with a GET's parameters as body
//! fields. Errors are Parse's: `{"code": 101, "error": "Object not found."}`.

pub mod convert;
pub mod files;
pub mod live;
mod geo;
mod roles;
mod schemas;

use crate::db;
use crate::errors::ApiError;
use crate::ratelimit;
use crate::server::{App, Reply};
use convert::{ParseError, INVALID_JSON, INVALID_QUERY, MISSING_OBJECT_ID};
use http::{Method, StatusCode};
use pingora::protocols::http::ServerSession;
use serde_json::{json, Map, Value};

/// The door's settings, checked at start-up.
pub struct Door {
    pub mount: String,
    app_id: String,
    master_key: Option<String>,
}

impl Door {
    /// None when no application id is configured (no Parse door).
    pub fn from_config(cfg: &crate::config::Config) -> Result<Option<Door>, String> {
        let Some(app_id) = cfg.parse_app_id.clone().filter(|a| !a.is_empty()) else {
            if cfg.parse_master_key_file.is_some() {
                return Err("parse_master_key_file needs parse_app_id".into());
            }
            return Ok(None);
        };
        let master_key = match &cfg.parse_master_key_file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("parse_master_key_file {}: {e}", p.display()))?;
                let key = text.trim_end_matches(['\r', '\n']).to_string();
                if key.is_empty() {
                    return Err(format!("parse_master_key_file {} is empty", p.display()));
                }
                Some(key)
            }
            None => None,
        };
        if cfg.parse_public_url.is_none() && cfg.public_url.is_none() {
            log::warn!(
                "parse: neither parse_public_url nor public_url is set: Parse File URLs are made from each request's Host header, which the client sends; set one in production (docs/parse.md)"
            );
        }
        Ok(Some(Door { mount: cfg.parse_mount.clone(), app_id, master_key }))
    }

    /// Whether `sent` is the application id (compared in constant time).
    pub fn app_id_is(&self, sent: &str) -> bool {
        same_secret(sent, &self.app_id)
    }

    /// Whether `sent` is the master key (none configured: never).
    pub fn master_key_is(&self, sent: &str) -> bool {
        self.master_key.as_deref().is_some_and(|k| same_secret(sent, k))
    }

    /// The path under the mount, when the request is for the door.
    pub fn route<'p>(&self, path: &'p str) -> Option<&'p str> {
        let rest = path.strip_prefix(self.mount.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }
}

/// A Parse session token's claims, as the door's requests run with them
/// (`baas._parse_authenticate`): for LiveQuery connections and file downloads, which run
/// as claims. Err 209 (`invalid_session_token`) for an unknown or ended session.
pub async fn session_claims(app: &App, client_ip: &str, token: &str) -> Result<String, ApiError> {
    let caller = db::Caller { claims: None, client_ip, user_agent: "", short_timeout: false };
    let claims = db::call_parse(&app.requests, &app.timeouts, &caller, Some(token), false, "select pg_catalog.current_setting('baas.claims', true)", &[])
        .await?
        .filter(|c| !c.is_empty())
        .ok_or_else(ApiError::internal)?;
    // Only a user's live session resolves (`_parse_session_claims`); anything else here
    // would be a defect, refused rather than run with.
    let v: Value = serde_json::from_str(&claims).map_err(|_| ApiError::internal())?;
    if v.get("role").and_then(Value::as_str) != Some("baas_user") || v.get("sub").is_none() || v.get("sid").is_none() {
        log::error!("parse: a session token resolved to claims that are not a user's session");
        return Err(ApiError::internal());
    }
    Ok(claims)
}

/// Equal in time independent of where they differ (the master key).
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

/// One request, read into one shape whichever style it came in.
struct ParseRequest {
    method: Method,
    /// Path segments under the mount, percent-decoded.
    segments: Vec<String>,
    /// A GET's parameters (from the query string, or the JavaScript SDK's body fields).
    params: Map<String, Value>,
    /// A write's fields.
    body: Map<String, Value>,
    app_id: Option<String>,
    master_key: Option<String>,
    session_token: Option<String>,
    installation_id: Option<String>,
    /// A file upload's bytes (`POST /files/{name}`).
    raw: Option<files::Upload>,
    /// A file upload's place under the per-address transfer caps, held to its end.
    _slot: Option<crate::files::TransferSlot>,
}

fn header(s: &ServerSession, name: &str) -> Result<Option<String>, ParseError> {
    match s.req_header().headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|t| Some(t.to_string()))
            .map_err(|_| ParseError::bad(INVALID_JSON, format!("the {name} header is not readable text"))),
    }
}

/// Query-string parameters: `where` (and other JSON-valued ones) as their JSON, the
/// rest as text, as the JavaScript SDK would have sent them in its body.
fn query_params(query: Option<&str>) -> Result<Map<String, Value>, ParseError> {
    let mut out = Map::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = crate::routes::input::decode_query(k).map_err(|e| ParseError::bad(INVALID_QUERY, e.message))?;
        let v = crate::routes::input::decode_query(v).map_err(|e| ParseError::bad(INVALID_QUERY, e.message))?;
        let value = if k == "where" {
            serde_json::from_str(&v).map_err(|e| ParseError::bad(INVALID_JSON, format!("where is not JSON: {e}")))?
        } else {
            Value::String(v.into_owned())
        };
        out.insert(k.into_owned(), value);
    }
    Ok(out)
}

async fn read(app: &App, door: &Door, s: &mut ServerSession, rest: &str) -> Result<ParseRequest, ParseError> {
    let mut method = s.req_header().method.clone();
    let query = s.req_header().uri.query().map(str::to_string);
    let mut segments = Vec::new();
    for seg in rest.split('/').filter(|x| !x.is_empty()) {
        let d = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| ParseError::bad(INVALID_JSON, "the path is not percent-encoded UTF-8"))?;
        segments.push(d.into_owned());
    }
    let mut req = ParseRequest {
        method: method.clone(),
        segments,
        params: Map::new(),
        body: Map::new(),
        app_id: header(s, "x-parse-application-id")?,
        master_key: header(s, "x-parse-master-key")?,
        session_token: header(s, "x-parse-session-token")?,
        installation_id: header(s, "x-parse-installation-id")?,
        raw: None,
        _slot: None,
    };
    if method == Method::POST && req.segments.first().is_some_and(|s| s == "files") {
        read_upload(app, door, s, &mut req).await?;
        return Ok(req);
    }
    let bytes = if method == Method::GET || method == Method::HEAD {
        Vec::new()
    } else {
        app.read_body(s).await.map_err(|e| ParseError::from_api(&e))?
    };
    let mut body = if bytes.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(ParseError::bad(INVALID_JSON, "the body must be a JSON object")),
            Err(e) => return Err(ParseError::bad(INVALID_JSON, format!("invalid JSON: {e}"))),
        }
    };
    // The JavaScript SDK's style: everything in the body.
    if let Some(m) = body.remove("_method") {
        let m = m.as_str().unwrap_or("").to_ascii_uppercase();
        method = match m.as_str() {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "DELETE" => Method::DELETE,
            _ => return Err(ParseError::bad(INVALID_JSON, format!("_method {m:?} is not GET, POST, PUT or DELETE"))),
        };
    }
    let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_string));
    if let Some(a) = text(body.remove("_ApplicationId")) {
        req.app_id = Some(a);
    }
    if let Some(k) = text(body.remove("_MasterKey")) {
        req.master_key = Some(k);
    }
    if let Some(t) = text(body.remove("_SessionToken")) {
        req.session_token = Some(t);
    }
    if let Some(i) = text(body.remove("_InstallationId")) {
        req.installation_id = Some(i);
    }
    for k in ["_JavaScriptKey", "_ClientKey", "_RestAPIKey", "_ClientVersion", "_MaintenanceKey", "_RevocableSession", "_ContentType", "_context"] {
        body.remove(k);
    }
    req.session_token = req.session_token.filter(|t| !t.is_empty());
    req.method = method.clone();
    if method == Method::GET {
        req.params = query_params(query.as_deref())?;
        for (k, v) in body {
            req.params.insert(k, v);
        }
    } else {
        req.body = body;
    }
    let _ = door;
    Ok(req)
}

/// A file upload (`POST /files/{name}`), which may be larger than other bodies. As
/// Parse Server tells them apart: with `X-Parse-Application-Id` the body is the file's
/// bytes as they are (iOS, Android, REST; its `Content-Type` the file's), else the
/// JavaScript SDK's JSON with `base64`, `_ContentType` and the keys. Refused before its
/// body is read: a wrong application id in the header, and more uploads at once than
/// the address may hold (the files routes' transfer caps).
async fn read_upload(app: &App, door: &Door, s: &mut ServerSession, req: &mut ParseRequest) -> Result<(), ParseError> {
    if req.app_id.as_deref().is_some_and(|a| !door.app_id_is(a)) {
        return Err(ParseError::new(StatusCode::FORBIDDEN, convert::OPERATION_FORBIDDEN, "unauthorized"));
    }
    let (_, ip_key) = app.client(s);
    req._slot = Some(app.transfers.admit(&ip_key, None, false).map_err(|e| ParseError::from_api(&e))?);
    let limit = app.cfg.parse_file_max_bytes.min(usize::try_from(app.cfg.file_max_bytes).unwrap_or(usize::MAX));
    let bytes = app.read_body_up_to(s, limit).await.map_err(|e| ParseError::from_api(&e))?;
    if req.app_id.is_some() {
        let content_type = header(s, "content-type")?.map(|c| c.split(';').next().unwrap_or("").trim().to_string());
        req.raw = Some(files::Upload { bytes, content_type });
    } else {
        // Parsed once, into the fields it has (anything else is skipped, not built).
        let j: files::JsonUpload = serde_json::from_slice(&bytes).map_err(|e| ParseError::bad(INVALID_JSON, format!("invalid JSON: {e}")))?;
        // The body's keys win where it has them, as in `read`.
        req.app_id = j.app_id.clone().or(req.app_id.take());
        req.master_key = j.master_key.clone().or(req.master_key.take());
        req.session_token = j.session_token.clone().or(req.session_token.take());
        req.installation_id = j.installation_id.clone().or(req.installation_id.take());
        req.raw = Some(j.upload()?);
    }
    req.session_token = req.session_token.take().filter(|t| !t.is_empty());
    Ok(())
}

/// An answer's body: a value, or JSON text written as it is (a list page, convert::parse_page_text).
enum Out {
    Value(Value),
    Text(String),
}

/// The door's answer to a request under its mount.
pub async fn serve(app: &App, door: &Door, s: &mut ServerSession, rest: &str) -> Reply {
    match handle(app, door, s, rest).await {
        Ok((status, body)) => {
            let bytes = match body {
                Out::Value(v) => serde_json::to_vec(&v).unwrap_or_default(),
                Out::Text(t) => t.into_bytes(),
            };
            let mut r = Reply::json(status, bytes);
            r.no_store = true;
            r
        }
        Err(e) => {
            let mut r = Reply::json(e.status, e.body());
            r.no_store = true;
            r.retry_after = e.retry_after;
            r
        }
    }
}

async fn handle(app: &App, door: &Door, s: &mut ServerSession, rest: &str) -> Result<(StatusCode, Out), ParseError> {
    let (client_ip, ip_key) = app.client(s);
    app.limiter.check(ratelimit::Kind::Request, &ip_key).map_err(|secs| ParseError::from_api(&ApiError::rate_limited(secs)))?;
    let req = read(app, door, s, rest).await?;
    // Parse Server's answer to a missing or wrong application id.
    if !req.app_id.as_deref().is_some_and(|a| same_secret(a, &door.app_id)) {
        return Err(ParseError::new(StatusCode::FORBIDDEN, convert::OPERATION_FORBIDDEN, "unauthorized"));
    }
    let master = match (&req.master_key, &door.master_key) {
        (None, _) => false,
        (Some(sent), Some(key)) if same_secret(sent, key) => true,
        (Some(_), _) => {
            return Err(ParseError::new(StatusCode::FORBIDDEN, convert::OPERATION_FORBIDDEN, "unauthorized: master key is not accepted"))
        }
    };
    // A Parse.File in a write is kept as its name and this server's URL for it, never
    // a URL the client sent (which every reader's SDK would follow).
    let base = files::base_url(app, door, s);
    let mut req = req;
    // (Not a cloud function's arguments, which are the function's to read as sent.)
    if req.method != Method::GET && req.segments.first().is_none_or(|s| s != "functions") {
        files::canonical_urls(&mut req.body, &base, &door.app_id);
    }
    let segs: Vec<&str> = alias(req.segments.iter().map(String::as_str).collect());
    let m = req.method.clone();
    // Sign-up and sign-in cost a password hash: their own per-address limits.
    let kind = match (&m, segs.as_slice()) {
        (&Method::POST, ["users"]) => Some(ratelimit::Kind::Signup),
        // An anonymous user's sign-up (a password to hash).
        (&Method::PUT, ["users", _]) if req.body.contains_key("password") => Some(ratelimit::Kind::Signup),
        (_, ["login" | "requestPasswordReset" | "verificationEmailRequest"]) => Some(ratelimit::Kind::Auth),
        _ => None,
    };
    if let Some(kind) = kind {
        app.limiter.check(kind, &ip_key).map_err(|secs| ParseError::from_api(&ApiError::rate_limited(secs)))?;
    }
    let user_agent = db::user_agent(s.req_header().headers.get(http::header::USER_AGENT));
    let short_timeout = req.session_token.is_none() && !master && kind.is_none();
    let caller = db::Caller { claims: None, client_ip: &client_ip, user_agent: &user_agent, short_timeout };
    let admitted = if master {
        Some(r#"{"role":"baas_service"}"#.to_string())
    } else {
        req.session_token.as_ref().map(|t| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            t.hash(&mut h);
            format!(r#"{{"sub":"parse-{:x}"}}"#, h.finish())
        })
    };
    let _permits = crate::server::admit(&app.in_flight, &ip_key, admitted.as_deref()).map_err(|e| ParseError::from_api(&e))?;
    let call = Call { app, ip_key: &ip_key, caller: &caller, token: req.session_token.as_deref(), master, installation: req.installation_id.as_deref() };
    match (&m, segs.as_slice()) {
        (&Method::POST, ["batch"]) => batch(&call, door, &req.body).await.map(|(st, v)| (st, Out::Value(v))),
        (&Method::POST, ["files", name]) => {
            let up = req.raw.ok_or_else(|| ParseError::bad(files::FILE_SAVE_ERROR, "a file upload needs its bytes"))?;
            files::upload(&call, &base, &door.app_id, name, up).await.map(|(st, v)| (st, Out::Value(v)))
        }
        (&Method::DELETE, ["files", name]) => files::delete(&call, name).await.map(|(st, v)| (st, Out::Value(v))),
        (&Method::GET, ["classes", class]) => find_text(&call, class, &req.params).await,
        _ => dispatch(&call, &m, &segs, &req.params, &req.body).await.map(|(st, v)| (st, Out::Value(v))),
    }
}

/// The SDKs reach users, installations and roles through /classes/_User,
/// /classes/_Installation and /classes/_Role: the same routes (and limits) as /users,
/// /installations and the roles (roles.rs).
fn alias(segs: Vec<&str>) -> Vec<&str> {
    match segs.as_slice() {
        ["classes", "_User", rest @ ..] => [&["users"][..], rest].concat(),
        ["classes", "_Installation", rest @ ..] => [&["installations"][..], rest].concat(),
        ["classes", "_Role", rest @ ..] => [&["roles"][..], rest].concat(),
        ["classes", "_Session", rest @ ..] => [&["sessions"][..], rest].concat(),
        _ => segs,
    }
}

/// One operation of the REST API (a request, or one of a batch's).
async fn dispatch(call: &Call<'_>, m: &Method, segs: &[&str], params: &Map<String, Value>, body: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let segs = alias(segs.to_vec());
    match (m, segs.as_slice()) {
        (&Method::POST, ["classes", class]) => create(call, class, body).await,
        (&Method::GET, ["classes", class]) => find(call, class, params).await,
        (&Method::GET, ["classes", class, id]) => get(call, class, id, params).await,
        (&Method::PUT, ["classes", class, id]) => update(call, class, id, body).await,
        (&Method::DELETE, ["classes", class, id]) => delete(call, class, id).await,
        (&Method::PUT | &Method::DELETE, ["classes", _]) => Err(ParseError::bad(MISSING_OBJECT_ID, "objectId is required.")),
        (&Method::POST, ["users"]) => signup(call, body).await,
        (&Method::GET, ["users"]) => find_users(call, params).await,
        (&Method::GET, ["users", "me"]) => me(call).await,
        (&Method::GET, ["users", id]) => get_user(call, id).await,
        (&Method::PUT, ["users", id]) => update_user(call, id, body).await,
        (&Method::DELETE, ["users", id]) => delete_user(call, id).await,
        (&Method::GET, ["schemas"]) => schemas::all(call).await,
        (&Method::GET, ["schemas", class]) => schemas::get(call, class).await,
        (&Method::POST, ["schemas"]) => schemas::create(call, None, body).await,
        (&Method::POST, ["schemas", class]) => schemas::create(call, Some(class), body).await,
        (&Method::PUT, ["schemas", class]) => schemas::update(call, class, body).await,
        (&Method::DELETE, ["schemas", class]) => schemas::delete(call, class).await,
        (&Method::GET, ["roles"]) => roles::find(call, params).await,
        (&Method::GET, ["roles", id]) => roles::get(call, id, params).await,
        (&Method::POST, ["roles"]) => roles::save(call, None, body).await,
        (&Method::PUT, ["roles", id]) => roles::save(call, Some(id), body).await,
        (&Method::DELETE, ["roles", id]) => roles::delete(call, id).await,
        (&Method::POST, ["installations"]) => save_installation(call, None, body).await,
        (&Method::PUT, ["installations", id]) => save_installation(call, Some(id), body).await,
        (&Method::GET, ["installations"]) => installations(call, None, params).await,
        (&Method::GET, ["installations", id]) => installations(call, Some(id), &Map::new()).await,
        (&Method::GET, ["config"]) => Ok((StatusCode::OK, call.run("select baas.parse_config()::text", &[]).await?)),
        (&Method::PUT, ["config"]) => {
            let params = json_text(body.get("params").unwrap_or(&Value::Null));
            let only = json_text(body.get("masterKeyOnly").unwrap_or(&json!({})));
            Ok((StatusCode::OK, call.run("select baas.parse_set_config($1::text::jsonb, $2::text::jsonb)::text", &[&params, &only]).await?))
        }
        (&Method::GET | &Method::POST, ["login"]) => {
            let fields = if m == Method::GET { params } else { body };
            login(call, fields).await
        }
        (&Method::POST, ["logout"]) => logout(call).await,
        (&Method::GET, ["sessions", "me"]) => session_me(call).await,
        (&Method::GET, ["sessions"]) => sessions(call, None, params).await,
        (&Method::GET, ["sessions", id]) => sessions(call, Some(id), params).await,
        (&Method::DELETE, ["sessions", id]) => end_session(call, id).await,
        (&Method::POST, ["requestPasswordReset"]) => email_request(call, body, "recover", "request_password_reset").await,
        (&Method::POST, ["verificationEmailRequest"]) => email_request(call, body, "resend_verification", "request_verification").await,
        (&Method::POST, ["functions", name]) => function(call, name, body).await,
        _ => Err(ParseError::new(
            StatusCode::NOT_FOUND,
            convert::INVALID_JSON,
            format!("{m} /{} is not served by pgbaas's Parse door (docs/parse.md lists what is)", segs.join("/")),
        )),
    }
}

/// Most operations in one batch (Parse's SDKs send 20 at a time by default).
const MAX_BATCH: usize = 50;

/// `POST /batch`: each operation in order, each in a transaction of its own, answered
/// `{"success": …}` or `{"error": {code, error}}` one by one, as Parse Server does.
/// `"transaction": true` (all or nothing) is refused until it runs in one transaction.
async fn batch(call: &Call<'_>, door: &Door, body: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let Some(Value::Array(requests)) = body.get("requests") else {
        return Err(ParseError::bad(INVALID_JSON, "requests must be an array"));
    };
    if requests.len() > MAX_BATCH {
        return Err(ParseError::bad(INVALID_JSON, format!("a batch holds at most {MAX_BATCH} requests")));
    }
    let transaction = body.get("transaction") == Some(&Value::Bool(true));
    // Charged as that many requests of the per-address rate, as POST /v1/batch is.
    if let Err(refusal) = call.app.limiter.check_batch(ratelimit::Kind::Request, call.ip_key, requests.len() as u32) {
        let secs = match refusal {
            ratelimit::BatchRefusal::Wait(secs) => secs,
            ratelimit::BatchRefusal::TooLarge { .. } => {
                return Err(ParseError::bad(INVALID_JSON, "this batch is larger than the per-minute request allowance"));
            }
        };
        return Err(ParseError::from_api(&ApiError::rate_limited(secs)));
    }
    // Every operation is checked before any runs: a malformed batch changes nothing.
    let mut ops = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let method = match r.get("method").and_then(Value::as_str) {
            Some("GET") => Method::GET,
            Some("POST") => Method::POST,
            Some("PUT") => Method::PUT,
            Some("DELETE") => Method::DELETE,
            _ => return Err(ParseError::bad(INVALID_JSON, format!("batch request {i}: method must be GET, POST, PUT or DELETE"))),
        };
        let Some(path) = r.get("path").and_then(Value::as_str) else {
            return Err(ParseError::bad(INVALID_JSON, format!("batch request {i}: path is required")));
        };
        let rest = door.route(path).unwrap_or(path);
        let segs: Vec<String> = rest.split('/').filter(|x| !x.is_empty()).map(str::to_string).collect();
        // Sign-up and sign-in have limits of their own per address and account; in a
        // batch they would pass them. Only object operations are batched.
        if segs.first().map(String::as_str) != Some("classes") || segs.get(1).is_some_and(|c| c.starts_with('_')) {
            return Err(ParseError::bad(INVALID_JSON, format!("batch request {i}: only /classes operations may be batched")));
        }
        let body = match r.get("body") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(b)) => b.clone(),
            Some(_) => return Err(ParseError::bad(INVALID_JSON, format!("batch request {i}: body must be an object"))),
        };
        ops.push((method, segs, body));
    }
    if transaction {
        return batch_transaction(call, &ops).await;
    }
    let mut out = Vec::with_capacity(ops.len());
    for (method, segs, body) in &ops {
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let (params, body) = if *method == Method::GET { (body.clone(), Map::new()) } else { (Map::new(), body.clone()) };
        out.push(match dispatch(call, method, &segs, &params, &body).await {
            Ok((_, v)) => json!({"success": v}),
            Err(e) => json!({"error": {"code": e.code, "error": e.message}}),
        });
    }
    Ok((StatusCode::OK, Value::Array(out)))
}

struct Call<'a> {
    app: &'a App,
    /// The per-address limits' key (a batch is charged per operation).
    ip_key: &'a str,
    caller: &'a db::Caller<'a>,
    token: Option<&'a str>,
    master: bool,
    /// The app install's id (X-Parse-Installation-Id): a sign-in ends the user's
    /// earlier sessions from the same installation, as in Parse Server.
    installation: Option<&'a str>,
}

impl Call<'_> {
    /// One statement as the caller; its JSON answer.
    async fn run(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Value, ParseError> {
        self.run_api(sql, params).await.map_err(|e| ParseError::from_api(&e))
    }

    /// One statement as the caller; its text answer as it is.
    async fn run_text(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<String, ParseError> {
        let out = db::call_parse(&self.app.requests, &self.app.timeouts, self.caller, self.token, self.master, sql, params)
            .await
            .map_err(|e| ParseError::from_api(&e))?;
        Ok(out.unwrap_or_default())
    }

    /// As `run`, with pgbaas's error as it came (the function door words its own).
    async fn run_api(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Value, ApiError> {
        let out = db::call_parse(&self.app.requests, &self.app.timeouts, self.caller, self.token, self.master, sql, params).await?;
        match out {
            Some(text) if text.is_empty() => Ok(Value::Null),
            Some(text) => convert::from_db_text(&text).map_err(|_| ApiError::internal()),
            None => Ok(Value::Null),
        }
    }
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

async fn create(c: &Call<'_>, class: &str, body: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let collection = convert::collection_of(class)?;
    let (data, acl) = convert::create_body(body)?;
    let (data, acl) = (json_text(&data), acl.as_ref().map(json_text));
    let doc = c.run("select baas.create_document($1, $2::text::jsonb, $3::text::jsonb)::text", &[&collection, &data, &acl]).await?;
    let obj = convert::object_from_doc(&doc);
    Ok((StatusCode::CREATED, json!({"objectId": obj["objectId"], "createdAt": obj["createdAt"]})))
}

async fn get(c: &Call<'_>, class: &str, id: &str, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let collection = convert::collection_of(class)?;
    let id = convert::object_id(id)?;
    check_params(params, &["keys", "include", "excludeKeys"])?;
    let doc = c.run("select baas.get_document($1, $2)::text", &[&collection, &id]).await?;
    let mut obj = convert::object_from_doc(&doc);
    select_keys(&mut obj, params);
    let mut objs = vec![obj];
    include(c, params, &mut objs).await?;
    Ok((StatusCode::OK, objs.pop().unwrap_or(Value::Null)))
}

/// `keys` and `excludeKeys` on one object (the system fields always stay).
fn select_keys(obj: &mut Value, params: &Map<String, Value>) {
    let Some(o) = obj.as_object_mut() else { return };
    let list = |k: &str| params.get(k).and_then(Value::as_str).map(convert::fields_of);
    if let Some(keep) = list("keys") {
        o.retain(|k, _| ["objectId", "createdAt", "updatedAt", "ACL"].contains(&k.as_str()) || keep.contains(k));
    }
    // As Parse Server: objectId, the times and the ACL are always selected.
    if let Some(drop) = list("excludeKeys") {
        o.retain(|k, _| ["objectId", "createdAt", "updatedAt", "ACL"].contains(&k.as_str()) || !drop.contains(k));
    }
}

fn check_params(params: &Map<String, Value>, known: &[&str]) -> Result<(), ParseError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ParseError::bad(INVALID_QUERY, format!("the parameter {k} is not supported by pgbaas's Parse door yet (docs/parse.md)"))),
        None => Ok(()),
    }
}

/// A number parameter, sent as a number (JavaScript SDK) or text (query string).
fn number(params: &Map<String, Value>, k: &str) -> Result<Option<i64>, ParseError> {
    match params.get(k) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| ParseError::bad(INVALID_QUERY, format!("{k} must be a whole number"))),
        Some(Value::String(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| ParseError::bad(INVALID_QUERY, format!("{k} must be a whole number"))),
        Some(_) => Err(ParseError::bad(INVALID_QUERY, format!("{k} must be a whole number"))),
    }
}

/// The longest page pgbaas lists (docs/query.md).
const MAX_LIMIT: i64 = 1000;

/// A query's answer, written as text when nothing asks for objects to be reshaped
/// (`keys`, `excludeKeys`, `include`, a query by objectId): the `/v1` list route's own
/// page text (`baas._list_documents_text`, the same SQL and pages as
/// `baas.list_documents`) rewritten object by object without parsing their data.
async fn find_text(c: &Call<'_>, class: &str, params: &Map<String, Value>) -> Result<(StatusCode, Out), ParseError> {
    let params = &*with_subqueries(c, params).await?;
    let reshaped = ["keys", "excludeKeys", "include"].iter().any(|k| params.contains_key(*k));
    // `near` is ordered here, not in SQL (geo.rs).
    let geo = params.get("where").is_some_and(|w| match w {
        Value::String(s) => s.contains("$near"),
        w => !matches!(geo::near_of(w), Ok(None)),
    });
    if !reshaped && !geo {
        if let Some(ListArgs { collection, filter, order, limit, skip, count, after }) = list_args(class, params)? {
            let (filter, limit_text, skip) = (json_text(&filter), limit.to_string(), skip.to_string());
            let count_text = count.to_string();
            let no_fields: Option<Vec<String>> = None;
            let page = c
                .run_text(
                    "select baas._list_documents_text($1, $2::text::jsonb, $3, $4::text::int, $5::text::int, $6::text::boolean, $8::text::uuid, $7::text[])",
                    &[&collection, &filter, &order, &limit_text, &skip, &count_text, &no_fields, &after],
                )
                .await;
            match page {
                Err(e) if e.from == "collection_not_found" && c.master => {
                    return Ok((StatusCode::OK, Out::Value(if count { json!({"results": [], "count": 0}) } else { json!({"results": []}) })));
                }
                Err(e) => return Err(e),
                Ok(text) => {
                    if let Some(t) = convert::parse_page_text(&text) {
                        if t.items < limit as usize && t.next {
                            return Err(budget_cut());
                        }
                        return Ok((StatusCode::OK, Out::Text(t.body)));
                    }
                }
            }
        }
    }
    find(c, class, params).await.map(|(st, v)| (st, Out::Value(v)))
}

/// Most objects a subquery may match (`$inQuery`, `$select` …): its answers become one
/// `$in` list of pointers (~95 bytes each), inside a filter of at most 16 KiB of JSON
/// (docs/query.md): 150 leave room for the rest of the query.
const MAX_SUBQUERY: usize = 150;

/// Parse's subqueries — `$inQuery`/`$notInQuery` (pointers to the objects another query
/// finds) and `$select`/`$dontSelect` (a key's values in them) — each run first, as the
/// caller, under row-level security, and replaced by the `$in`/`$nin` list of what it
/// found; the outer query is then an ordinary filter. Nested at most 3 deep.
/// `params` with their subqueries resolved as the caller, or as they are when they have none.
async fn with_subqueries<'a>(c: &Call<'_>, params: &'a Map<String, Value>) -> Result<std::borrow::Cow<'a, Map<String, Value>>, ParseError> {
    if may_have_subquery(params) {
        Ok(std::borrow::Cow::Owned(resolve_subqueries(c, params, 0).await?))
    } else {
        Ok(std::borrow::Cow::Borrowed(params))
    }
}

fn resolve_subqueries<'a>(
    c: &'a Call<'_>,
    params: &'a Map<String, Value>,
    depth: usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Map<String, Value>, ParseError>> + Send + 'a>> {
    Box::pin(async move {
        let mut count = 0;
        let out = resolve_counted(c, params, depth, &mut count).await?;
        // Each subquery is a query: charged to the per-address rate like a batch's operations.
        if count > 0 {
            if let Err(refusal) = c.app.limiter.check_batch(ratelimit::Kind::Request, c.ip_key, count as u32 + 1) {
                let secs = match refusal {
                    ratelimit::BatchRefusal::Wait(secs) => secs,
                    ratelimit::BatchRefusal::TooLarge { .. } => 60,
                };
                return Err(ParseError::from_api(&ApiError::rate_limited(secs)));
            }
        }
        Ok(out)
    })
}

/// `resolve_subqueries` with one count of subqueries for the whole request (at most 4,
/// whatever their nesting).
fn resolve_counted<'a>(
    c: &'a Call<'_>,
    params: &'a Map<String, Value>,
    depth: usize,
    count: &'a mut usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Map<String, Value>, ParseError>> + Send + 'a>> {
    Box::pin(async move {
        if !may_have_subquery(params) {
            return Ok(params.clone());
        }
        let mut w = where_of(params)?;
        // `$relatedTo` (relation.query()): the relation's ids, read from its object as the
        // caller, become an objectId lookup (each object then read as the caller too). A
        // role's members are not a relation field: find_users answers them (role_users).
        let of_role = w.get("$relatedTo").and_then(|r| r.get("object")).and_then(pointer).is_some_and(|(class, _)| class == "_Role");
        if let Some(rel) = w.as_object_mut().filter(|_| !of_role).and_then(|m| m.remove("$relatedTo")) {
            let bad = || ParseError::bad(INVALID_QUERY, "$relatedTo takes an object (a pointer) and a key");
            let (class, id) = pointer(rel.get("object").ok_or_else(bad)?).ok_or_else(bad)?;
            let key = rel.get("key").and_then(Value::as_str).ok_or_else(bad)?;
            let ids = match convert::object_id(&id) {
                Ok(id) => documents_by_id(c, &convert::collection_of(&class)?, &[id]).await?,
                Err(_) => Vec::new(),
            };
            let members: Vec<Value> = ids
                .first()
                .and_then(|d| d.pointer(&format!("/data/{}/objects", key.replace('~', "~0").replace('/', "~1"))))
                .and_then(Value::as_object)
                .map(|m| m.keys().map(|k| Value::String(k.clone())).collect())
                .unwrap_or_default();
            if members.len() > MAX_SUBQUERY {
                return Err(ParseError::bad(INVALID_QUERY, format!("the relation holds more than {MAX_SUBQUERY} objects; query them another way")));
            }
            if let Some(m) = w.as_object_mut() {
                if m.contains_key("objectId") {
                    return Err(ParseError::bad(INVALID_QUERY, "$relatedTo with an objectId condition is not supported by pgbaas's Parse door yet"));
                }
                m.insert("objectId".into(), json!({"$in": members}));
            }
        }
        if depth >= 3 {
            return Err(ParseError::bad(INVALID_QUERY, "subqueries may be nested at most 3 deep"));
        }
        resolve_in(c, &mut w, depth, count).await?;
        let mut out = params.clone();
        out.insert("where".into(), w);
        Ok(out)
    })
}

fn resolve_in<'a>(
    c: &'a Call<'_>,
    w: &'a mut Value,
    depth: usize,
    count: &'a mut usize,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ParseError>> + Send + 'a>> {
    Box::pin(async move {
        let bad = |m: &str| ParseError::bad(INVALID_QUERY, m.to_string());
        let Some(m) = w.as_object_mut() else { return Ok(()) };
        for (k, v) in m.iter_mut() {
            if matches!(k.as_str(), "$or" | "$and" | "$nor") {
                if let Some(list) = v.as_array_mut() {
                    for f in list {
                        resolve_in(c, f, depth, count).await?;
                    }
                }
                continue;
            }
            let Some(ops) = v.as_object_mut() else { continue };
            for op in ["$inQuery", "$notInQuery", "$select", "$dontSelect"] {
                let Some(arg) = ops.remove(op) else { continue };
                *count += 1;
                if *count > 4 {
                    return Err(bad("a query may hold at most 4 subqueries"));
                }
                let (query, key) = match op {
                    "$inQuery" | "$notInQuery" => (&arg, None),
                    _ => (arg.get("query").ok_or_else(|| bad(&format!("{op} needs a query and a key")))?, Some(arg.get("key").and_then(Value::as_str).ok_or_else(|| bad(&format!("{op} needs a query and a key")))?)),
                };
                let class = query.get("className").and_then(Value::as_str).ok_or_else(|| bad(&format!("{op}: the query needs a className")))?;
                let mut inner = Map::new();
                inner.insert("where".into(), query.get("where").cloned().unwrap_or_else(|| json!({})));
                inner.insert("limit".into(), json!(MAX_SUBQUERY + 1));
                let inner = resolve_counted(c, &inner, depth + 1, count).await?;
                // Users are found as a _User query finds them (its own rules in Postgres).
                let (_, found) = if class == "_User" { Box::pin(find_users(c, &inner)).await? } else { Box::pin(find(c, class, &inner)).await? };
                let results = found.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
                if results.len() > MAX_SUBQUERY {
                    return Err(bad(&format!("{op}: the subquery matches more than {MAX_SUBQUERY} objects; narrow it")));
                }
                let values: Vec<Value> = match key {
                    None => results.iter().map(|o| json!({"__type": "Pointer", "className": class, "objectId": o["objectId"]})).collect(),
                    Some(key) => results.iter().filter_map(|o| o.get(key).cloned()).collect(),
                };
                let target = if matches!(op, "$inQuery" | "$select") { "$in" } else { "$nin" };
                // Two subqueries on one field (say $inQuery and $select) keep both conditions.
                match ops.get_mut(target).and_then(Value::as_array_mut) {
                    Some(list) => {
                        let keep: Vec<Value> = list.iter().filter(|x| values.contains(x)).cloned().collect();
                        if target == "$in" {
                            *list = keep;
                        } else {
                            list.extend(values);
                        }
                    }
                    None => {
                        ops.insert(target.into(), Value::Array(values));
                    }
                }
            }
        }
        Ok(())
    })
}

/// A query's `where`: JSON text (a query string) or the JavaScript SDK's object; `{}` when none.
fn where_of(params: &Map<String, Value>) -> Result<Value, ParseError> {
    match params.get("where") {
        None => Ok(json!({})),
        Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| ParseError::bad(INVALID_JSON, format!("where is not JSON: {e}"))),
        Some(w) => Ok(w.clone()),
    }
}

/// The operators resolve_subqueries replaces before a query is compiled.
const SUBQUERY_OPS: [&str; 5] = ["$inQuery", "$notInQuery", "$select", "$dontSelect", "$relatedTo"];

/// Whether `where` may hold a subquery: a look at its text or keys, so that the plain
/// queries (nearly all) are not parsed twice or copied on their way to SQL.
fn may_have_subquery(params: &Map<String, Value>) -> bool {
    fn keys(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.iter().any(|(k, v)| SUBQUERY_OPS.contains(&k.as_str()) || keys(v)),
            Value::Array(a) => a.iter().any(keys),
            _ => false,
        }
    }
    match params.get("where") {
        Some(Value::String(s)) => SUBQUERY_OPS.iter().any(|op| s.contains(op)),
        Some(w) => keys(w),
        None => false,
    }
}

fn budget_cut() -> ParseError {
    // The page was cut by the response budget; Parse has no way to say so.
    ParseError::bad(INVALID_QUERY, "the results are larger than the response budget (baas.max_response_bytes): ask for fewer objects or fewer keys")
}

/// A query's list arguments; None for a query by objectId (find_by_ids).
struct ListArgs {
    collection: String,
    filter: Value,
    order: Option<String>,
    limit: i64,
    skip: i64,
    count: bool,
    after: Option<String>,
}

fn list_args(class: &str, params: &Map<String, Value>) -> Result<Option<ListArgs>, ParseError> {
    let collection = convert::collection_of(class)?;
    check_params(params, &["where", "order", "limit", "skip", "keys", "excludeKeys", "count", "include"])?;
    let where_ = where_of(params)?;
    // The SDK's each()/eachBatch()/findAll() page with order=objectId and
    // objectId > the last id seen: pgbaas's keyset cursor (`after`), which must be a
    // document the caller can read; the previous page's last one is.
    let mut after: Option<String> = None;
    let mut where_ = where_;
    if let Some(Value::Object(o)) = where_.get("objectId") {
        let ascending_id = params.get("order").and_then(Value::as_str).map(str::trim) == Some("objectId");
        if let (1, Some(Value::String(last)), true) = (o.len(), o.get("$gt"), ascending_id) {
            after = Some(convert::object_id(last).map_err(|_| ParseError::bad(INVALID_QUERY, "objectId $gt takes an objectId"))?);
            if let Some(m) = where_.as_object_mut() {
                m.remove("objectId");
            }
        }
    }
    if where_.get("objectId").is_some() {
        return Ok(None);
    }
    let filter = convert::filter_of(&where_)?;
    let order = match params.get("order") {
        None => None,
        Some(Value::String(o)) => Some(convert::order_of(o)?).filter(|o| !o.is_empty()),
        Some(_) => return Err(ParseError::bad(INVALID_QUERY, "order must be text such as score,-createdAt")),
    };
    let (limit, skip) = page_args(params)?;
    Ok(Some(ListArgs { collection, filter, order, limit, skip, count: count_wanted(params), after }))
}

/// A list's `limit` (0 to 1000, 100 when absent) and `skip` (0 to Postgres's largest
/// integer), as every list of the door takes them; 102 otherwise.
fn page_args(params: &Map<String, Value>) -> Result<(i64, i64), ParseError> {
    let limit = number(params, "limit")?.unwrap_or(100);
    if !(0..=MAX_LIMIT).contains(&limit) {
        return Err(ParseError::bad(INVALID_QUERY, format!("limit must be 0 to {MAX_LIMIT} (pgbaas pages at most {MAX_LIMIT} objects; page with skip or an order)")));
    }
    let skip = number(params, "skip")?.unwrap_or(0);
    if !(0..=i64::from(i32::MAX)).contains(&skip) {
        return Err(ParseError::bad(INVALID_QUERY, "skip must be 0 to 2147483647"));
    }
    Ok((limit, skip))
}

async fn find(c: &Call<'_>, class: &str, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let params = &*with_subqueries(c, params).await?;
    // (issue 21) `near`: geo.rs, which lists its candidates with find_listed.
    if let Some((field, centre)) = geo::near_of(&where_of(params)?)? {
        return Box::pin(geo::find_near(c, class, params, &field, centre)).await;
    }
    if let Some((excluded, gt)) = excluded_ids(&where_of(params)?)? {
        return Box::pin(find_excluding(c, class, params, excluded, gt)).await;
    }
    find_listed(c, class, params).await
}

/// A query as the list route (or, by objectId, `find_by_ids`) answers it, its subqueries
/// resolved; a `$nearSphere` in it is a condition only (geo.rs `filter`).
async fn find_listed(c: &Call<'_>, class: &str, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let Some(ListArgs { collection, filter, order, limit, skip, count, after }) = list_args(class, params)? else {
        let where_ = where_of(params)?;
        return find_by_ids(c, &convert::collection_of(class)?, &where_["objectId"], &where_, params).await;
    };
    let fields = params.get("keys").and_then(Value::as_str).map(convert::fields_of);
    let (filter, limit, skip) = (json_text(&filter), limit.to_string(), skip.to_string());
    let count_text = count.to_string();
    let page = c
        .run(
            "select baas.list_documents($1, $2::text::jsonb, $3, $4::text::int, $5::text::int, $6::text::boolean, $8::text::uuid, $7::text[])::text",
            &[&collection, &filter, &order, &limit, &skip, &count_text, &fields, &after],
        )
        .await;
    let page = match page {
        // A class without its collection: for the master key an empty list, as Parse
        // Server answers it (for others 119, as Parse Server with client class creation off).
        Err(e) if e.from == "collection_not_found" && c.master => {
            json!({"items": [], "count": 0})
        }
        other => other?,
    };
    let items = page.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    if items.len() < limit.parse::<usize>().unwrap_or(0) && page.get("next").is_some_and(|n| !n.is_null()) {
        return Err(budget_cut());
    }
    let mut results = Vec::with_capacity(items.len());
    for d in &items {
        let mut o = convert::object_from_doc(d);
        select_keys(&mut o, params);
        results.push(o);
    }
    include(c, params, &mut results).await?;
    let mut out = json!({"results": results});
    if count {
        out["count"] = page.get("count").cloned().unwrap_or(json!(0));
    }
    Ok((StatusCode::OK, out))
}

/// `objectId` `$ne` (notEqualTo) or `$nin` (notContainedIn, at most 500 ids): the ids a
/// query leaves out (lower case, once each), and the SDK's `each()` bound beside them
/// (`$gt` the last id seen), or None when its objectId condition is another (or none).
pub(super) fn excluded_ids(where_: &Value) -> Result<Option<(Vec<String>, Option<Value>)>, ParseError> {
    let bad = || ParseError::bad(INVALID_QUERY, "objectId $ne takes an id, $nin an array of at most 500 ids");
    let Some(Value::Object(o)) = where_.get("objectId") else { return Ok(None) };
    let gt = o.get("$gt").cloned();
    if o.len() != 1 + usize::from(gt.is_some()) {
        return Ok(None);
    }
    let ids: Vec<&Value> = match (o.get("$ne"), o.get("$nin")) {
        (Some(one), None) => vec![one],
        (None, Some(Value::Array(list))) if list.len() <= pgbaas_query::parse::MAX_LIST => list.iter().collect(),
        (None, Some(_)) => return Err(bad()),
        _ => return Ok(None),
    };
    // Ids that are no UUID name no object: nothing to leave out for them.
    let mut out = Vec::new();
    for v in ids {
        if let Some(id) = convert::object_id(v.as_str().ok_or_else(bad)?).ok().filter(|i| !out.contains(i)) {
            out.push(id);
        }
    }
    Ok(Some((out, gt)))
}

/// A query leaving some objects out by id (`excluded_ids`): the same query without that
/// condition (with `each()`'s bound kept), its objects' ids alone, from its start to past
/// `skip + limit` by as many objects as are left out; those taken away, the page cut and
/// then read as asked. Its count is the query's less the left-out objects it counted (as
/// the caller). All within one list page: `skip + limit` plus the ids at most 1000.
async fn find_excluding(c: &Call<'_>, class: &str, params: &Map<String, Value>, excluded: Vec<String>, gt: Option<Value>) -> Result<(StatusCode, Value), ParseError> {
    let bad = |m: &str| ParseError::bad(INVALID_QUERY, m.to_string());
    let (limit, skip) = page_args(params)?;
    let span = skip + limit + excluded.len() as i64;
    if span > MAX_LIMIT {
        return Err(bad("with objectId $ne or $nin, skip + limit + the ids left out is at most 1000 in pgbaas's Parse door"));
    }
    if gt.is_some() && count_wanted(params) {
        return Err(bad("a count with objectId $gt and $ne/$nin is not served by pgbaas's Parse door"));
    }
    let Value::Object(mut rest) = where_of(params)? else { return Err(bad("where must be a JSON object")) };
    rest.remove("objectId");
    let mut wide_where = rest.clone();
    if let Some(last) = gt {
        wide_where.insert("objectId".into(), json!({"$gt": last}));
    }
    let mut wide = Map::new();
    wide.insert("where".into(), Value::Object(wide_where));
    wide.insert("skip".into(), json!(0));
    wide.insert("limit".into(), json!(span));
    wide.insert("keys".into(), json!("objectId"));
    for k in ["order", "count"] {
        if let Some(v) = params.get(k) {
            wide.insert(k.into(), v.clone());
        }
    }
    let (_, mut found) = find(c, class, &wide).await?;
    let ids: Vec<Value> = found["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["objectId"].as_str())
        .filter(|i| !excluded.iter().any(|x| x.eq_ignore_ascii_case(i)))
        .skip(skip as usize)
        .take(limit as usize)
        .map(|i| json!(i))
        .collect();
    let collection = convert::collection_of(class)?;
    let page = read_page(c, &collection, &ids, params).await?;
    let mut out = json!({"results": page});
    if count_wanted(params) {
        let all = found["count"].take().as_i64().unwrap_or(0);
        let mut among = Map::new();
        among.insert("count".into(), json!(1));
        among.insert("limit".into(), json!(0));
        let left_out = if excluded.is_empty() {
            0
        } else {
            let (_, n) = find_by_ids(c, &collection, &json!({"$in": excluded}), &Value::Object(rest), &among).await?;
            n["count"].as_i64().unwrap_or(0)
        };
        out["count"] = json!((all - left_out).max(0));
    }
    Ok((StatusCode::OK, out))
}

/// A page of objects found by id (a query's second read, after one of ids alone), read
/// as asked (`keys`, `excludeKeys`, `include`) and in the order of `ids`; one that went
/// between the two reads is left out. An objectId list takes at most 500 ids (the query
/// language's MAX_LIST), so in chunks.
async fn read_page(c: &Call<'_>, collection: &str, ids: &[Value], params: &Map<String, Value>) -> Result<Vec<Value>, ParseError> {
    let mut read = Map::new();
    for k in ["keys", "excludeKeys", "include"] {
        if let Some(v) = params.get(k) {
            read.insert(k.into(), v.clone());
        }
    }
    let mut by_id: Map<String, Value> = Map::new();
    for chunk in ids.chunks(pgbaas_query::parse::MAX_LIST) {
        read.insert("limit".into(), json!(chunk.len()));
        let (_, got) = find_by_ids(c, collection, &json!({"$in": chunk}), &json!({}), &read).await?;
        for o in got["results"].as_array().into_iter().flatten() {
            if let Some(id) = o["objectId"].as_str() {
                by_id.insert(id.to_string(), o.clone());
            }
        }
    }
    Ok(ids.iter().filter_map(|i| i.as_str().and_then(|i| by_id.remove(i))).collect())
}

/// A document's times (as GET shows them) for the evaluator's `$created_at`/`$updated_at`.
fn doc_times(d: &Value) -> Option<pgbaas_query::eval::Times> {
    pgbaas_query::eval::Times::from_text(d.get("created_at").and_then(Value::as_str), d.get("updated_at").and_then(Value::as_str))
}

/// A query naming its objects by id (the SDK's `get`, `fetch`, `containedIn("objectId",
/// …)`): those documents, read as the caller (row-level security decides), then the
/// rest of `where` checked with the query language's own evaluator, whose agreement
/// with the compiled SQL the extension's property tests check.
async fn find_by_ids(c: &Call<'_>, collection: &str, ids: &Value, where_: &Value, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let bad = |m: &str| ParseError::bad(INVALID_QUERY, m.to_string());
    let wanted: Vec<&Value> = match ids {
        Value::String(_) => vec![ids],
        Value::Object(o) if o.len() == 1 => match (o.get("$eq"), o.get("$in")) {
            (Some(v), _) => vec![v],
            (_, Some(Value::Array(list))) if list.len() <= pgbaas_query::parse::MAX_LIST => list.iter().collect(),
            _ => return Err(bad("objectId takes an id, $eq or $in (of at most 500 ids) in pgbaas's Parse door")),
        },
        _ => return Err(bad("objectId takes an id, $eq or $in (of at most 500 ids) in pgbaas's Parse door")),
    };
    if params.contains_key("order") {
        return Err(bad("order with a query on objectId is not supported by pgbaas's Parse door yet (docs/parse.md)"));
    }
    // Ids that are no UUID name no document.
    let uuids: Vec<String> = wanted.iter().filter_map(|v| v.as_str()).filter_map(|s| convert::object_id(s).ok()).collect();
    let mut rest = where_.as_object().cloned().unwrap_or_default();
    rest.remove("objectId");
    let filter = convert::filter_of(&Value::Object(rest))?;
    let filter = pgbaas_query::parse::parse(&filter).map_err(|e| ParseError::bad(INVALID_QUERY, e.message))?;
    let limit = number(params, "limit")?.unwrap_or(100).clamp(0, MAX_LIMIT) as usize;
    let skip = number(params, "skip")?.unwrap_or(0).max(0) as usize;
    let docs = documents_by_id(c, collection, &uuids).await?;
    let matching: Vec<&Value> = docs.iter().filter(|d| pgbaas_query::eval::matches_at(&filter, &d["data"], doc_times(d))).collect();
    let mut results = Vec::new();
    for d in matching.iter().skip(skip).take(limit) {
        let mut o = convert::object_from_doc(d);
        select_keys(&mut o, params);
        results.push(o);
    }
    include(c, params, &mut results).await?;
    let mut out = json!({"results": results});
    if count_wanted(params) {
        out["count"] = json!(matching.len());
    }
    Ok((StatusCode::OK, out))
}

/// Documents of `collection` by id, read as the caller (row-level security decides);
/// missing and unreadable ones are left out. In creation order.
async fn documents_by_id(c: &Call<'_>, collection: &str, ids: &[String]) -> Result<Vec<Value>, ParseError> {
    let list = format!("{{{}}}", ids.join(","));
    let docs = c
        .run(
            "select coalesce(jsonb_agg(baas._document_json(d, c.name) order by d.created_at, d.id), '[]')::text
               from baas.documents d join baas.collections c on c.id = d.collection_id
              where c.name = $1 and d.id = any($2::text::uuid[])",
            &[&collection, &list],
        )
        .await?;
    Ok(match docs {
        Value::Array(a) => a,
        _ => Vec::new(),
    })
}

/// Most pointers one `include` path resolves (each a UUID in one bind parameter).
const MAX_INCLUDE: usize = 1000;

/// `include=post,post.author`: each pointer at those keys (or in an array there) is
/// replaced by its object, read as the caller; one the caller may not read (or that is
/// gone) is dropped, as Parse Server drops it. Paths are resolved shortest first, so
/// `post.author` looks inside the included posts.
async fn include(c: &Call<'_>, params: &Map<String, Value>, objs: &mut [Value]) -> Result<(), ParseError> {
    let Some(spec) = params.get("include") else { return Ok(()) };
    let Some(spec) = spec.as_str() else {
        return Err(ParseError::bad(INVALID_QUERY, "include must be text such as post,post.author"));
    };
    let mut paths: Vec<Vec<&str>> = Vec::new();
    for p in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parts: Vec<&str> = p.split('.').collect();
        // `a.b` includes `a` too, as in Parse Server.
        for n in 1..=parts.len() {
            if !paths.contains(&parts[..n].to_vec()) {
                paths.push(parts[..n].to_vec());
            }
        }
    }
    if paths.len() > 16 {
        return Err(ParseError::bad(INVALID_QUERY, "include names at most 16 paths"));
    }
    paths.sort_by_key(Vec::len);
    for path in &paths {
        // The pointers at this path: (className, objectId).
        let mut wanted: Vec<(String, String)> = Vec::new();
        for o in objs.iter_mut() {
            visit(o, path, &mut |v| {
                if let Some((class, id)) = pointer(v) {
                    if !wanted.contains(&(class.clone(), id.clone())) {
                        wanted.push((class, id));
                    }
                }
            });
        }
        if wanted.len() > MAX_INCLUDE {
            return Err(ParseError::bad(INVALID_QUERY, format!("include would resolve more than {MAX_INCLUDE} objects")));
        }
        let mut found: Map<String, Value> = Map::new();
        let mut classes: Vec<&String> = wanted.iter().map(|(c, _)| c).collect();
        classes.sort();
        classes.dedup();
        // Classes that are no collection (_User, _Role …) are not looked up: their
        // pointers stay as they are.
        let mut looked_up: Vec<String> = Vec::new();
        for class in classes {
            let Ok(collection) = convert::collection_of(class) else { continue };
            looked_up.push(class.clone());
            let ids: Vec<String> = wanted.iter().filter(|(c, _)| c == class).filter_map(|(_, id)| convert::object_id(id).ok()).collect();
            if ids.is_empty() {
                continue;
            }
            for d in documents_by_id(c, &collection, &ids).await? {
                let mut o = convert::object_from_doc(&d);
                if let Some(m) = o.as_object_mut() {
                    m.insert("__type".into(), json!("Object"));
                    m.insert("className".into(), json!(class));
                }
                let key = format!("{class}/{}", o["objectId"].as_str().unwrap_or(""));
                found.insert(key, o);
            }
        }
        for o in objs.iter_mut() {
            if let Some(new) = replace_pointers(o, path, &found, &looked_up) {
                *o = new;
            }
        }
    }
    Ok(())
}

/// Parse Server's replacePointers: the pointers at `path` become their objects; one
/// whose object was not found (missing, or not readable by the caller) is dropped: the
/// key goes, or the element leaves its array. None: drop `o` itself.
fn replace_pointers(o: &Value, path: &[&str], found: &Map<String, Value>, looked_up: &[String]) -> Option<Value> {
    match o {
        Value::Array(items) => Some(Value::Array(items.iter().filter_map(|i| replace_pointers(i, path, found, looked_up)).collect())),
        Value::Object(m) => match path.split_first() {
            None => match pointer(o) {
                Some((class, id)) if looked_up.contains(&class) => found.get(&format!("{class}/{}", id.to_ascii_lowercase())).cloned(),
                _ => Some(o.clone()),
            },
            Some((first, rest)) => {
                let Some(sub) = m.get(*first) else { return Some(o.clone()) };
                let mut out = m.clone();
                match replace_pointers(sub, rest, found, looked_up) {
                    Some(v) => out.insert(first.to_string(), v),
                    None => out.remove(*first),
                };
                Some(Value::Object(out))
            }
        },
        other => Some(other.clone()),
    }
}

/// A Parse pointer's class and id.
fn pointer(v: &Value) -> Option<(String, String)> {
    if v.get("__type")?.as_str()? != "Pointer" {
        return None;
    }
    Some((v.get("className")?.as_str()?.to_string(), v.get("objectId")?.as_str()?.to_string()))
}

/// Call `f` on the value at `path` in `o` (through included objects and arrays of them),
/// and on each element when that value is an array.
fn visit(o: &mut Value, path: &[&str], f: &mut dyn FnMut(&mut Value)) {
    let Some((first, rest)) = path.split_first() else { return };
    match o {
        Value::Array(items) => items.iter_mut().for_each(|i| visit(i, path, f)),
        Value::Object(m) => {
            if let Some(v) = m.get_mut(*first) {
                if rest.is_empty() {
                    match v {
                        Value::Array(items) => items.iter_mut().for_each(|i| f(i)),
                        other => f(other),
                    }
                } else {
                    visit(v, rest, f);
                }
            }
        }
        _ => {}
    }
}

fn count_wanted(params: &Map<String, Value>) -> bool {
    match params.get("count") {
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "1" || s == "true",
        _ => false,
    }
}

/// `POST /functions/{name}` (`Parse.Cloud.run`): the exposed SQL function of that name
/// (docs/rpc.md), called as the caller with the params as named arguments; `{"result": …}`.
/// Its errors are Parse's SCRIPT_FAILED (141), with the function's own message.
async fn function(c: &Call<'_>, name: &str, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let args = json_text(&Value::Object(params.clone()));
    let out = c
        .run_api(
            "select pg_catalog.jsonb_build_object('result', case when x.is_void then null else x.body::jsonb end)::text
               from baas.rpc($1, $2::text::jsonb, false) x",
            &[&name, &args],
        )
        .await;
    match out {
        Ok(v) => Ok((StatusCode::OK, v)),
        Err(e) => {
            let p = ParseError::from_api(&e);
            // Session, rate and server errors keep their codes; the function's own (a
            // plain RAISE is one, though a 500 elsewhere) become 141.
            if e.raised.is_none() && [convert::INVALID_SESSION_TOKEN, convert::REQUEST_LIMIT_EXCEEDED, convert::INTERNAL_SERVER_ERROR].contains(&p.code) {
                return Err(p);
            }
            let message = match (e.code.as_str(), e.raised) {
                ("function_not_found", _) => format!("Invalid function: \"{name}\""),
                (_, Some(raised)) => raised.message,
                _ => e.message,
            };
            Err(ParseError::bad(convert::SCRIPT_FAILED, message))
        }
    }
}

async fn update(c: &Call<'_>, class: &str, id: &str, body: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let collection = convert::collection_of(class)?;
    let id = convert::object_id(id)?;
    let (patch, acl, changed) = convert::update_body(body)?;
    let acl_only = acl.is_some() && patch.as_object().is_some_and(|p| p.is_empty());
    let (patch, acl) = (json_text(&patch), acl.as_ref().map(json_text));
    let doc = if acl_only {
        // Only the ACL: one write, so a LiveQuery subscriber hears one event, as from
        // Parse Server (set_acl: owner or service, else 119). Its time is the
        // transaction's (the row keeps the later of it and its previous time; the row
        // cannot be read back here once the ACL may have taken the caller's read away).
        c.run(
            "select pg_catalog.jsonb_build_object('acl', baas.set_acl($1, $2, $3::text::jsonb), 'updated_at', pg_catalog.now())::text",
            &[&collection, &id, &acl],
        )
        .await?
    } else {
        // One statement: the fields and the ACL when one was sent (set_acl: owner or
        // service; two writes, so a LiveQuery subscriber hears of both, docs/parse.md).
        c.run(
            "select (select d from (select baas.patch_document($1, $2, $3::text::jsonb) d) p \
               where $4::text is null or baas.set_acl($1, $2, $4::text::jsonb) is not null)::text",
            &[&collection, &id, &patch, &acl],
        )
        .await?
    };
    let obj = convert::object_from_doc(&doc);
    let mut out = json!({"updatedAt": obj["updatedAt"]});
    for k in changed {
        if let Some(v) = obj.get(&k) {
            out[k] = v.clone();
        }
    }
    Ok((StatusCode::OK, out))
}

async fn delete(c: &Call<'_>, class: &str, id: &str) -> Result<(StatusCode, Value), ParseError> {
    let collection = convert::collection_of(class)?;
    let id = convert::object_id(id)?;
    c.run("select baas.delete_document($1, $2)::text", &[&collection, &id]).await?;
    Ok((StatusCode::OK, json!({})))
}

/// `"transaction": true`: the operations as one `baas.batch` (sql/batch.sql), all or
/// none, in one transaction as the caller. A failing operation is the whole request's
/// error, as Parse Server answers it.
async fn batch_transaction(call: &Call<'_>, ops: &[(Method, Vec<String>, Map<String, Value>)]) -> Result<(StatusCode, Value), ParseError> {
    /// What Parse answers for each kind of operation.
    enum Kind {
        Create,
        Update(Vec<String>),
        Delete,
        Get,
    }
    let mut batch = Vec::with_capacity(ops.len());
    let mut kinds = Vec::with_capacity(ops.len());
    for (method, segs, body) in ops {
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let (op, kind) = match (method, segs.as_slice()) {
            (&Method::POST, ["classes", class]) => {
                let (data, acl) = convert::create_body(body)?;
                let mut op = json!({"op": "create", "collection": convert::collection_of(class)?, "data": data});
                if let Some(acl) = acl {
                    op["acl"] = acl;
                }
                (op, Kind::Create)
            }
            (&Method::PUT, ["classes", class, id]) => {
                let (patch, acl, changed) = convert::update_body(body)?;
                if acl.is_some() {
                    return Err(ParseError::bad(convert::OTHER_CAUSE, "an ACL change in a batch with transaction: true is not supported by pgbaas's Parse door yet"));
                }
                (json!({"op": "patch", "collection": convert::collection_of(class)?, "id": convert::object_id(id)?, "data": patch}), Kind::Update(changed))
            }
            (&Method::DELETE, ["classes", class, id]) => (json!({"op": "delete", "collection": convert::collection_of(class)?, "id": convert::object_id(id)?}), Kind::Delete),
            (&Method::GET, ["classes", class, id]) => (json!({"op": "get", "collection": convert::collection_of(class)?, "id": convert::object_id(id)?}), Kind::Get),
            _ => return Err(ParseError::bad(INVALID_JSON, format!("{method} /{} is not taken in a batch with transaction: true", segs.join("/")))),
        };
        batch.push(op);
        kinds.push(kind);
    }
    let text = json_text(&Value::Array(batch));
    // A failing operation's error as that operation alone would answer it.
    let out = call.run_api("select baas.batch($1::text::jsonb)::text", &[&text]).await.map_err(|e| ParseError::from_api(&e.batch_operation()))?;
    let results = out.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut answers = Vec::with_capacity(results.len());
    for (r, kind) in results.iter().zip(&kinds) {
        let o = r.get("document").map(convert::object_from_doc).unwrap_or_else(|| json!({}));
        answers.push(json!({"success": match kind {
            Kind::Create => json!({"objectId": o["objectId"], "createdAt": o["createdAt"]}),
            Kind::Update(changed) => {
                let mut s = json!({"updatedAt": o["updatedAt"]});
                for k in changed {
                    if let Some(v) = o.get(k) {
                        s[k] = v.clone();
                    }
                }
                s
            }
            Kind::Delete => json!({}),
            Kind::Get => o,
        }}));
    }
    Ok((StatusCode::OK, Value::Array(answers)))
}

fn text_field(body: &Map<String, Value>, k: &str) -> Result<Option<String>, ParseError> {
    match body.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ParseError::bad(INVALID_JSON, format!("{k} must be a string"))),
    }
}

/// A `{"error": {...}}` answer of a sign-in function, as Parse words it.
fn refused(v: &Value) -> Option<ParseError> {
    let e = v.get("error")?;
    let mut api = ApiError::coded(e.get("code").and_then(Value::as_str).unwrap_or("invalid_request"), e.get("message").and_then(Value::as_str).unwrap_or(""));
    api.retry_after = e.get("retry_after").and_then(Value::as_u64);
    Some(ParseError::from_api(&api))
}

async fn signup(c: &Call<'_>, body: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let username = text_field(body, "username")?;
    let password = text_field(body, "password")?;
    let email = text_field(body, "email")?;
    if let Some(auth) = body.get("authData") {
        return auth_data_login(c, auth).await;
    }
    let mut data = Map::new();
    for (k, v) in body {
        if !["username", "password", "email", "ACL", "objectId", "createdAt", "updatedAt", "sessionToken", "emailVerified"].contains(&k.as_str()) {
            data.insert(k.clone(), v.clone());
        }
    }
    let data = json_text(&Value::Object(data));
    let user = c
        .run("select baas.parse_signup($1, $2, $3, $4::text::jsonb, $5)::text", &[&username, &password, &email, &data, &c.installation])
        .await?;
    Ok((StatusCode::CREATED, user))
}

/// `POST /users` with `authData` (`Parse.AnonymousUtils.logIn`, `logInWith`): the
/// anonymous provider signs in the account linked to its id, made on first use (201) or
/// found (200); an OpenID Connect provider configured in pgbaas (Apple, Google, any
/// issuer: docs/oidc.md) signs in with its ID token, by `baas.oidc_sign_in`'s rules.
/// Other providers answer 252, as from Parse Server without them.
async fn auth_data_login(c: &Call<'_>, auth: &Value) -> Result<(StatusCode, Value), ParseError> {
    let Some(providers) = auth.as_object() else {
        return Err(ParseError::bad(convert::INVALID_JSON, "authData must be an object"));
    };
    let linked: Vec<(&String, &Value)> = providers.iter().filter(|(_, v)| !v.is_null()).collect();
    let mut user = match linked.as_slice() {
        [(name, data)] if name.as_str() == "anonymous" => {
            let Some(Value::String(id)) = data.get("id") else {
                return Err(ParseError::bad(convert::INVALID_JSON, "authData.anonymous needs its id (a string)"));
            };
            c.run("select baas.parse_login_anonymous($1, $2)::text", &[id, &c.installation]).await?
        }
        [(name, data)] => {
            let data = json_text(data);
            let provider = name.as_str();
            run_oidc(c, &[name.to_string()], "select baas.parse_login_auth_data($1, $2::text::jsonb, $3)::text", &[&provider, &data, &c.installation]).await?
        }
        [] => return Err(ParseError::bad(convert::USERNAME_MISSING, "bad or missing username")),
        _ => return Err(ParseError::bad(convert::UNSUPPORTED_SERVICE, "sign in with one authData provider at a time")),
    };
    if let Some(e) = refused(&user) {
        return Err(e);
    }
    let created = user.as_object_mut().and_then(|o| o.remove("created")) == Some(Value::Bool(true));
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, user))
}

/// A statement that verifies ID tokens of `providers` (authData's entries with a token):
/// when Postgres says a provider's keys are stale (it rotated them), they are fetched
/// again, at most once per refetch floor per provider, and the statement runs once more,
/// as `/v1/auth/oidc` does (server.rs).
async fn run_oidc(c: &Call<'_>, providers: &[String], sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Value, ParseError> {
    let names: Vec<&str> = providers.iter().map(String::as_str).collect();
    let first = c.run_api(sql, params).await;
    c.app.oidc.retry_stale(&names, first, || c.run_api(sql, params)).await.map_err(|e| ParseError::from_api(&e))
}

/// One attempt against the per-account limit `key`, as the `/v1` sign-in routes count
/// it: in this proxy, then in Postgres, so that every proxy shares the count (sql/limits.sql).
async fn account_limit(c: &Call<'_>, key: &str) -> Result<(), ParseError> {
    let limited = |secs| ParseError::from_api(&ApiError::rate_limited(secs));
    c.app.limiter.check(ratelimit::Kind::Account, key).map_err(limited)?;
    if c.app.cfg.rate_limits {
        let max = c.app.cfg.rate_limit_account_per_minute;
        if let Some(secs) = db::account_limit_hit(&c.app.requests, &c.app.timeouts, key, max, 60).await.map_err(|e| ParseError::from_api(&e))? {
            return Err(limited(secs));
        }
    }
    Ok(())
}

async fn login(c: &Call<'_>, fields: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let username = text_field(fields, "username")?;
    let password = text_field(fields, "password")?;
    // Per account, as POST /v1/auth/login.
    if let Some(name) = username.as_deref() {
        account_limit(c, &ratelimit::account_key("parse", name)).await?;
    }
    let user = c.run("select baas.parse_login($1, $2, $3)::text", &[&username, &password, &c.installation]).await?;
    if let Some(e) = refused(&user) {
        return Err(e);
    }
    Ok((StatusCode::OK, user))
}

async fn me(c: &Call<'_>) -> Result<(StatusCode, Value), ParseError> {
    let Some(token) = c.token else {
        return Err(ParseError::bad(convert::INVALID_SESSION_TOKEN, "Invalid session token"));
    };
    let mut user = c.run("select baas.parse_me()::text", &[]).await?;
    user["sessionToken"] = Value::String(token.to_string());
    Ok((StatusCode::OK, user))
}

/// `user.destroy()`: a user deletes its own account (`baas.delete_user`, with every
/// session); anyone else's answers 206, as from Parse Server. The master key deletes no
/// account through the door: pgbaas deletes another's account only in SQL (docs/parse.md).
async fn delete_user(c: &Call<'_>, id: &str) -> Result<(StatusCode, Value), ParseError> {
    let id = convert::object_id(id)?;
    if c.master {
        // Any account (baas.parse_delete_user: the service role's only).
        c.run("select baas.parse_delete_user($1::text::uuid)::text", &[&id]).await?;
        return Ok((StatusCode::OK, json!({})));
    }
    let deleted = c
        .run("select case when baas.uid() = $1::text::uuid then (select true from baas.delete_user()) else false end::text", &[&id])
        .await?;
    if deleted != Value::Bool(true) {
        return Err(ParseError::bad(convert::SESSION_MISSING, "Permission denied: a user may delete only its own account"));
    }
    Ok((StatusCode::OK, json!({})))
}

/// `GET /classes/_User` (`/users`, `new Parse.Query(Parse.User)`): accounts as Parse
/// users (`baas.parse_find_users`). With the master key, any account: those a plain
/// `objectId`, `username` or `email` condition names (equality or `$in`), the rest of
/// `where` then checked here with the query language's evaluator; with conditions on
/// the accounts' own fields alone, every account Postgres finds for them
/// (`baas.parse_scan_users`); with no other condition, every account a page at a time.
/// Anyone else gets its own account if it meets `where`: pgbaas shows no account to
/// another. A top-level `near` sorts what is found by distance.
async fn find_users(c: &Call<'_>, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let bad = |m: &str| ParseError::bad(INVALID_QUERY, m.to_string());
    check_params(params, &["where", "order", "limit", "skip", "count", "keys", "excludeKeys"])?;
    let params = &*role_users(c, params).await?;
    let params = &*with_subqueries(c, params).await?;
    let Value::Object(mut rest) = where_of(params)? else {
        return Err(bad("where must be a JSON object"));
    };
    let (limit, skip) = page_args(params)?;
    // `near` (a top-level $nearSphere): the users found, nearest first.
    let near = geo::near_of(&Value::Object(rest.clone()))?;
    if near.is_some() && params.contains_key("order") {
        return Err(bad("$nearSphere orders by distance: no order with it"));
    }
    // A plain condition naming users (text equality or `$in` of texts) becomes a list
    // Postgres looks them up by.
    let mut named = |k: &str| -> Result<Option<Vec<String>>, ParseError> {
        let list = match rest.get(k) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Object(o)) if o.len() == 1 => match (o.get("$eq"), o.get("$in")) {
                (Some(Value::String(s)), _) => vec![s.clone()],
                (_, Some(Value::Array(a))) if a.len() <= pgbaas_query::parse::MAX_LIST && a.iter().all(Value::is_string) => {
                    a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
                }
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        rest.remove(k);
        Ok(Some(list))
    };
    // Ids that are no UUID name no user.
    let ids = named("objectId")?.map(|l| l.iter().filter_map(|i| convert::object_id(i).ok()).collect::<Vec<_>>());
    let (usernames, emails) = (named("username")?, named("email")?);
    let narrowed = ids.is_some() || usernames.is_some() || emails.is_some();
    let order: Vec<(bool, String)> = match params.get("order") {
        None => Vec::new(),
        Some(Value::String(o)) => o.split(',').map(str::trim).filter(|k| !k.is_empty()).map(|k| k.strip_prefix('-').map_or((false, k.to_string()), |f| (true, f.to_string()))).collect(),
        Some(_) => return Err(bad("order must be text such as username,-createdAt")),
    };
    if let Some((_, k)) = order.iter().find(|(_, k)| !["createdAt", "updatedAt", "username", "email", "objectId"].contains(&k.as_str())) {
        return Err(bad(&format!("a _User query is ordered by createdAt, updatedAt, username, email or objectId, not {k}")));
    }
    let in_sql_order = near.is_none() && (order.is_empty() || order == [(false, "createdAt".to_string())]);
    let ids_sql = ids.as_ref().map(|l| l.to_vec());
    let run = |lim: i64, off: i64, want_count: bool| {
        let (lim, off, want_count) = (lim.to_string(), off.to_string(), want_count.to_string());
        let (ids, usernames, emails) = (ids_sql.clone(), usernames.clone(), emails.clone());
        async move {
            c.run(
                "select baas.parse_find_users($1::text[]::uuid[], $2::text[], $3::text[], $4::text::int, $5::text::int, $6::text::boolean)::text",
                &[&ids, &usernames, &emails, &lim, &off, &want_count],
            )
            .await
        }
    };
    // The master key on the accounts' own fields (no user named): Postgres scans every
    // account, as Parse Server does (baas.parse_scan_users).
    let scan = c.master && !narrowed;
    let where_rest = Value::Object(rest);
    let scan_users = |lim: i64, off: i64, want_count: bool| {
        let shown = USER_SHOWN.iter().find(|k| where_names(&where_rest, k));
        let filter = convert::filter_of(&where_rest).map(|f| json_text(&f));
        let (lim, off, want) = (lim.to_string(), off.to_string(), want_count.to_string());
        async move {
            if let Some(k) = shown {
                return Err(bad(&format!(
                    "a master-key _User query on the accounts' own fields does not take {k} (objectId, username and email name users by equality or $in; emailVerified and authData are not queried)"
                )));
            }
            let filter = filter?;
            c.run("select baas.parse_scan_users($1::text::jsonb, $2::text::int, $3::text::int, $4::text::boolean)::text", &[&filter, &lim, &off, &want]).await
        }
    };
    let mut out = if scan && where_rest.as_object().is_some_and(Map::is_empty) && in_sql_order {
        // Every account, a page at a time, in Postgres: nothing to check here.
        run(limit, skip, count_wanted(params)).await?
    } else if scan && in_sql_order {
        scan_users(limit, skip, count_wanted(params)).await?
    } else {
        // A few accounts (those named, the caller's own, or at most 1000 the scan found
        // for another order): the rest of `where` and the order here.
        let filter = pgbaas_query::parse::parse(&convert::filter_of(&where_rest)?).map_err(|e| bad(&e.message))?;
        let found = if scan { scan_users(MAX_LIMIT + 1, 0, false).await? } else { run(MAX_LIMIT, 0, false).await? };
        let mut users: Vec<Value> = found["results"].as_array().cloned().unwrap_or_default();
        if users.len() >= MAX_LIMIT as usize && near.is_some() {
            return Err(bad("1000 or more users match the near query: narrow it ($maxDistance, withinKilometers) or add conditions"));
        }
        if users.len() > MAX_LIMIT as usize {
            return Err(bad("more than 1000 users match: so many are paged in creation order only (no order, or createdAt)"));
        }
        users.retain(|u| {
            let times = pgbaas_query::eval::Times::from_text(u["createdAt"].as_str(), u["updatedAt"].as_str());
            pgbaas_query::eval::matches_at(&filter, u, times)
        });
        for (desc, k) in order.iter().rev() {
            users.sort_by(|a, b| {
                let (x, y) = (a.get(k).and_then(Value::as_str).unwrap_or(""), b.get(k).and_then(Value::as_str).unwrap_or(""));
                if *desc { y.cmp(x) } else { x.cmp(y) }
            });
        }
        if let Some((field, centre)) = &near {
            geo::sort_by_distance(&mut users, field, *centre);
        }
        let count = users.len();
        let page: Vec<Value> = users.into_iter().skip(skip as usize).take(limit as usize).collect();
        json!({"results": page, "count": count})
    };
    let results = out["results"].as_array_mut().map(std::mem::take).unwrap_or_default();
    let results: Vec<Value> = results
        .into_iter()
        .map(|mut u| {
            select_keys(&mut u, params);
            u
        })
        .collect();
    let mut answer = json!({"results": results});
    if count_wanted(params) {
        answer["count"] = out["count"].take();
    }
    Ok((StatusCode::OK, answer))
}

/// What a Parse user shows from outside its data (baas._parse_user_json): a master-key
/// scan cannot match these against `data`.
const USER_SHOWN: &[&str] = &["username", "email", "emailVerified", "authData", "sessionToken", "password", "ACL", "objectId"];

/// Whether `where` has a condition on top-level field `k`, anywhere in it.
fn where_names(w: &Value, k: &str) -> bool {
    match w {
        Value::Object(m) => m.iter().any(|(key, v)| key.split('.').next() == Some(k) || (key.starts_with('$') && where_names(v, k))),
        Value::Array(a) => a.iter().any(|v| where_names(v, k)),
        _ => false,
    }
}

/// `$relatedTo` a role's `users` (`role.getUsers().query()`): the role's direct members
/// as Postgres shows them to the caller (baas.parse_roles: every member to the master
/// key, else the caller itself in a role it holds), as an `objectId` list.
async fn role_users<'a>(c: &Call<'_>, params: &'a Map<String, Value>) -> Result<std::borrow::Cow<'a, Map<String, Value>>, ParseError> {
    let mut w = where_of(params)?;
    // Another object's relation of users (`post.relation("likers").query()`): a relation
    // field, as with_subqueries reads any.
    if !w.get("$relatedTo").and_then(|r| r.get("object")).and_then(pointer).is_some_and(|(class, _)| class == "_Role") {
        return Ok(std::borrow::Cow::Borrowed(params));
    }
    let Some(rel) = w.as_object_mut().and_then(|m| m.remove("$relatedTo")) else {
        return Ok(std::borrow::Cow::Borrowed(params));
    };
    let bad = || ParseError::bad(INVALID_QUERY, "$relatedTo a _Role on _User takes the key \"users\"");
    let (_, role) = rel.get("object").and_then(pointer).ok_or_else(bad)?;
    if rel.get("key").and_then(Value::as_str) != Some("users") {
        return Err(bad());
    }
    let roles = c.run("select baas.parse_roles()::text", &[]).await?;
    let members: Vec<Value> = roles
        .as_array()
        .and_then(|all| all.iter().find(|r| r["name"].as_str() == Some(role.as_str())))
        .and_then(|r| r["users"].as_array().cloned())
        .unwrap_or_default();
    if members.len() > pgbaas_query::parse::MAX_LIST {
        return Err(ParseError::bad(INVALID_QUERY, format!("the role has more than {} direct members; query them by username or objectId", pgbaas_query::parse::MAX_LIST)));
    }
    let m = w.as_object_mut().ok_or_else(bad)?;
    if m.contains_key("objectId") {
        return Err(ParseError::bad(INVALID_QUERY, "$relatedTo with an objectId condition is not supported by pgbaas's Parse door yet"));
    }
    m.insert("objectId".into(), json!({"$in": members}));
    let mut out = params.clone();
    out.insert("where".into(), w);
    Ok(std::borrow::Cow::Owned(out))
}

async fn get_user(c: &Call<'_>, id: &str) -> Result<(StatusCode, Value), ParseError> {
    let id = convert::object_id(id)?;
    let mut user = c.run("select baas.parse_get_user($1::text::uuid)::text", &[&id]).await?;
    if let (Some(t), false) = (c.token, c.master) {
        user["sessionToken"] = Value::String(t.to_string());
    }
    Ok((StatusCode::OK, user))
}

/// `PUT /users/{id}` (`user.save()`): the user's own fields and username. The email and
/// the password change through pgbaas's own flows, which ask for a verification mail and
/// the current password; a Parse session alone does not change them.
async fn update_user(c: &Call<'_>, id: &str, body: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let id = convert::object_id(id)?;
    let username = text_field(body, "username")?;
    let password = text_field(body, "password")?;
    // The SDK's signUp of an anonymous user sends `{"anonymous": null}` (unlinking it);
    // any other entry links (or, null, unlinks) a provider: baas.parse_set_auth_data, in
    // the statement that saves the rest.
    let auth = match body.get("authData") {
        None => None,
        Some(Value::Object(o)) if o.iter().all(|(k, v)| k == "anonymous" && v.is_null()) => None,
        Some(a @ Value::Object(o)) => {
            if password.is_some() {
                return Err(ParseError::bad(convert::VALIDATION_ERROR, "sign up first, then link a provider"));
            }
            // The providers whose tokens Postgres will verify (an entry that is an object).
            let providers: Vec<String> = o.iter().filter(|(k, v)| *k != "anonymous" && v.is_object()).map(|(k, _)| k.clone()).collect();
            Some((providers, json_text(a)))
        }
        Some(_) => return Err(ParseError::bad(convert::INVALID_JSON, "authData must be an object")),
    };
    let mut fields = body.clone();
    for k in ["username", "password", "authData", "sessionToken", "emailVerified", "ACL"] {
        fields.remove(k);
    }
    if let Some(password) = password {
        // An anonymous account signing up keeps its id and session; any other account's
        // password changes through pgbaas's own flow (the SQL refuses it: not_anonymous).
        if c.master {
            return Err(ParseError::bad(convert::VALIDATION_ERROR, "a password is set through pgbaas's own flows (a reset mail), not with the master key (docs/parse.md)"));
        }
        let email = match fields.remove("email") {
            None | Some(Value::Null) => None,
            Some(Value::String(e)) => Some(e),
            Some(_) => return Err(ParseError::bad(convert::INVALID_JSON, "email must be a string")),
        };
        let me = c.run("select baas.parse_me()::text", &[]).await?;
        if me.get("objectId").and_then(Value::as_str) != Some(id.as_str()) {
            return Err(ParseError::bad(convert::SESSION_MISSING, format!("Cannot modify user {id}.")));
        }
        let (patch, _, _) = convert::update_body(&fields)?;
        let patch = json_text(&patch);
        let user = c
            .run("select baas.parse_upgrade_anonymous($1, $2, $3, $4::text::jsonb)::text", &[&username, &password, &email, &patch])
            .await?;
        return Ok((StatusCode::OK, json!({"updatedAt": user["updatedAt"]})));
    }
    if let Some(email) = fields.remove("email") {
        // The SDK sends back what it holds; only a change is refused.
        let current = c.run("select baas.parse_get_user($1::text::uuid)::text", &[&id]).await?;
        if current.get("email") != Some(&email) {
            return Err(ParseError::bad(convert::VALIDATION_ERROR, "an email is changed through POST /v1/auth/email (a verification mail; docs/parse.md)"));
        }
    }
    let (patch, _, _) = convert::update_body(&fields)?;
    let patch = json_text(&patch);
    let user = match auth {
        // The links first (a sub-select Postgres runs before the row that uses it), then
        // the fields; one statement, so a refusal of either changes nothing.
        Some((providers, auth)) => {
            let sql = "select baas.parse_update_user($1::text::uuid, $2, $3::text::jsonb)::text
                         from (select baas.parse_set_auth_data($1::text::uuid, $4::text::jsonb)) linked";
            run_oidc(c, &providers, sql, &[&id, &username, &patch, &auth]).await?
        }
        None => c.run("select baas.parse_update_user($1::text::uuid, $2, $3::text::jsonb)::text", &[&id, &username, &patch]).await?,
    };
    Ok((StatusCode::OK, json!({"updatedAt": user["updatedAt"]})))
}

/// `POST /installations`, `PUT /installations/{id}`: an app install, created or updated
/// by its installationId (201 when created).
async fn save_installation(c: &Call<'_>, id: Option<&str>, body: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let id = id.map(convert::object_id).transpose()?;
    let fields = json_text(&Value::Object(body.clone()));
    let out = c.run("select baas.parse_save_installation($1::text::uuid, $2::text::jsonb)::text", &[&id, &fields]).await?;
    let i = &out["installation"];
    Ok(if out["created"] == true {
        (StatusCode::CREATED, json!({"objectId": i["objectId"], "createdAt": i["createdAt"]}))
    } else {
        (StatusCode::OK, json!({"updatedAt": i["updatedAt"]}))
    })
}

/// `GET /installations[/{id}]`: the master key's only.
async fn installations(c: &Call<'_>, id: Option<&str>, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let id = id.map(convert::object_id).transpose()?;
    // Only paging for now: a `where` the door would ignore is refused rather than answered wrong.
    check_params(params, &["limit", "skip"])?;
    let limit = number(params, "limit")?.unwrap_or(100);
    if !(0..=MAX_LIMIT).contains(&limit) {
        return Err(ParseError::bad(INVALID_QUERY, format!("limit must be 0 to {MAX_LIMIT}")));
    }
    let skip = number(params, "skip")?.unwrap_or(0).max(0);
    let (limit, skip) = (limit.to_string(), skip.to_string());
    let list = c.run("select baas.parse_installations($1::text::uuid, $2::text::int, $3::text::int)::text", &[&id, &limit, &skip]).await?;
    match id {
        None => Ok((StatusCode::OK, json!({"results": list}))),
        Some(_) => list.as_array().and_then(|a| a.first().cloned()).map(|o| (StatusCode::OK, o)).ok_or_else(ParseError::not_found),
    }
}

/// `POST /requestPasswordReset`, `/verificationEmailRequest` `{"email"}`: pgbaas's own
/// mails (docs/accounts.md), under the same per-address and per-address-of-mail limits as
/// `/v1/auth/recover` and `/v1/auth/verify/resend`. `{}` whether or not the address has an
/// account, as those routes answer.
async fn email_request(c: &Call<'_>, body: &Map<String, Value>, limit: &str, function: &str) -> Result<(StatusCode, Value), ParseError> {
    let Some(email) = text_field(body, "email")? else {
        return Err(ParseError::bad(convert::EMAIL_MISSING, "you must provide an email"));
    };
    account_limit(c, &ratelimit::account_key(limit, &email)).await?;
    // `function` is one of the two names above, never the client's.
    let sql = format!("select baas.{function}($1)::text");
    c.run(&sql, &[&email]).await?;
    Ok((StatusCode::OK, json!({})))
}

/// `GET /sessions/me` (`Parse.Session.current()`): the caller's own session as a Parse
/// `_Session`, from `baas.list_sessions` (its pgbaas session: id, times, device).
/// A pgbaas session (`baas.list_sessions`' shape) as a Parse `_Session`. Its token only
/// for the current one, which the caller sent: pgbaas keeps tokens' hashes only.
fn session_object(s: &Value, user: &Value, token: Option<&str>) -> Value {
    let time = |k: &str| s.get(k).and_then(Value::as_str).map(convert::parse_date);
    let mut out = json!({
        "objectId": s["id"],
        "user": {"__type": "Pointer", "className": "_User", "objectId": user},
        "createdWith": {"action": "login", "authProvider": "password"},
        "restricted": false,
        "createdAt": time("created_at"),
        "updatedAt": time("last_used_at").or_else(|| time("created_at")),
    });
    if let (Some(t), true) = (token, s["current"] == Value::Bool(true)) {
        out["sessionToken"] = Value::String(t.to_string());
    }
    if let Some(d) = s.get("device_id").and_then(Value::as_str) {
        out["installationId"] = Value::String(d.to_string());
    }
    out
}

/// The caller's live sessions (every device it is signed in on, by any door), newest
/// first, and its id.
async fn own_sessions(c: &Call<'_>) -> Result<(Value, Vec<Value>), ParseError> {
    let v = c.run("select pg_catalog.jsonb_build_object('user', baas.uid(), 'sessions', baas.list_sessions())::text", &[]).await?;
    let items = v.pointer("/sessions/items").and_then(Value::as_array).cloned().unwrap_or_default();
    Ok((v["user"].clone(), items))
}

async fn session_me(c: &Call<'_>) -> Result<(StatusCode, Value), ParseError> {
    let no_session = || ParseError::bad(convert::INVALID_SESSION_TOKEN, "Session token required.");
    let Some(token) = c.token else {
        return Err(no_session());
    };
    let (user, items) = own_sessions(c).await?;
    let s = items.iter().find(|s| s["current"] == Value::Bool(true)).ok_or_else(no_session)?;
    Ok((StatusCode::OK, session_object(s, &user, Some(token))))
}

/// `GET /sessions[/{id}]`, `/classes/_Session` (`new Parse.Query(Parse.Session)`): the
/// signed-in user's live sessions (`baas.list_sessions`), as Parse Server shows a user
/// its own; `where` checked by the query language's evaluator, `objectId` by equality or
/// `$in`. The master key lists any account's live sessions (`baas.parse_sessions`),
/// those of the users a `user` condition names when it names some.
async fn sessions(c: &Call<'_>, id: Option<&str>, params: &Map<String, Value>) -> Result<(StatusCode, Value), ParseError> {
    let bad = |m: &str| ParseError::bad(INVALID_QUERY, m.to_string());
    if c.token.is_none() && !c.master {
        return Err(ParseError::bad(convert::INVALID_SESSION_TOKEN, "Session token required."));
    }
    match id {
        Some(_) => check_params(params, &["keys", "excludeKeys"])?,
        None => check_params(params, &["where", "order", "limit", "skip", "count", "keys", "excludeKeys"])?,
    }
    let Value::Object(mut rest) = where_of(params)? else {
        return Err(bad("where must be a JSON object"));
    };
    let ids: Option<Vec<String>> = match (id, rest.remove("objectId")) {
        (Some(i), None) => Some(vec![i.to_ascii_lowercase()]),
        (_, Some(Value::String(s))) => Some(vec![s.to_ascii_lowercase()]),
        (_, Some(Value::Object(o))) if o.len() == 1 => match (o.get("$eq"), o.get("$in")) {
            (Some(Value::String(s)), _) => Some(vec![s.to_ascii_lowercase()]),
            (_, Some(Value::Array(a))) => Some(a.iter().filter_map(|v| v.as_str().map(str::to_ascii_lowercase)).collect()),
            _ => return Err(bad("objectId takes an id, $eq or $in on _Session")),
        },
        (_, Some(_)) => return Err(bad("objectId takes an id, $eq or $in on _Session")),
        (None, None) => None,
    };
    // The master key: any account's sessions, those of `user` (a pointer, `$eq` or `$in`
    // of them) when it is named; for anyone else `user` is one more condition.
    let users: Option<Vec<String>> = match rest.get("user").filter(|_| c.master).cloned() {
        None => None,
        Some(u) => {
            rest.remove("user");
            let list: Vec<&Value> = match u.as_object() {
                Some(o) if o.len() == 1 && o.contains_key("$eq") => vec![&o["$eq"]],
                Some(o) if o.len() == 1 && o.contains_key("$in") => match o["$in"].as_array() {
                    Some(a) if a.len() <= pgbaas_query::parse::MAX_LIST => a.iter().collect(),
                    _ => return Err(bad("user.$in takes at most 500 _User pointers")),
                },
                _ => vec![&u],
            };
            let mut ids = Vec::new();
            for p in list {
                match pointer(p) {
                    // An id that is no UUID names no account.
                    Some((class, id)) if class == "_User" => ids.extend(convert::object_id(&id).ok()),
                    _ => return Err(bad("user takes a _User pointer, $eq or $in of them")),
                }
            }
            Some(ids)
        }
    };
    let filter = pgbaas_query::parse::parse(&convert::filter_of(&Value::Object(rest))?).map_err(|e| bad(&e.message))?;
    let (limit, skip) = page_args(params)?;
    let (limit, skip) = (limit as usize, skip as usize);
    let shown: Vec<Value> = if c.master {
        // Ids that are no UUID name no session.
        let ids_sql: Option<Vec<String>> = ids.as_ref().map(|l| l.iter().filter_map(|i| convert::object_id(i).ok()).collect());
        let v = c.run("select baas.parse_sessions($1::text[]::uuid[], $2::text[]::uuid[])::text", &[&users, &ids_sql]).await?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() > MAX_LIMIT as usize {
            return Err(bad("more than 1000 live sessions match: name their users (equalTo or containedIn user)"));
        }
        items.iter().map(|s| session_object(s, &s["user_id"], None)).collect()
    } else {
        let (user, items) = own_sessions(c).await?;
        items.iter().map(|s| session_object(s, &user, c.token)).collect()
    };
    let mut found: Vec<Value> = shown
        .into_iter()
        .filter(|o| ids.as_ref().is_none_or(|l| o["objectId"].as_str().is_some_and(|i| l.iter().any(|x| x == i))))
        .filter(|o| pgbaas_query::eval::matches_at(&filter, o, pgbaas_query::eval::Times::from_text(o["createdAt"].as_str(), o["updatedAt"].as_str())))
        .collect();
    let order = match params.get("order") {
        None => None,
        Some(Value::String(o)) => Some(o.as_str()),
        Some(_) => return Err(bad("order must be text such as -createdAt")),
    };
    if let Some(order) = order {
        for key in order.split(',').rev().map(str::trim).filter(|k| !k.is_empty()) {
            let (desc, k) = key.strip_prefix('-').map_or((false, key), |f| (true, f));
            if !["createdAt", "updatedAt", "objectId", "installationId"].contains(&k) {
                return Err(bad(&format!("a _Session query is ordered by createdAt, updatedAt, objectId or installationId, not {k}")));
            }
            let get = |o: &Value| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            found.sort_by(|a, b| if desc { get(b).cmp(&get(a)) } else { get(a).cmp(&get(b)) });
        }
    }
    if id.is_some() {
        let mut one = found.into_iter().next().ok_or_else(ParseError::not_found)?;
        select_keys(&mut one, params);
        return Ok((StatusCode::OK, one));
    }
    let count = found.len();
    let results: Vec<Value> = found
        .into_iter()
        .skip(skip)
        .take(limit)
        .map(|mut o| {
            select_keys(&mut o, params);
            o
        })
        .collect();
    let mut out = json!({"results": results});
    if count_wanted(params) {
        out["count"] = json!(count);
    }
    Ok((StatusCode::OK, out))
}

/// `DELETE /sessions/{id}` (`session.destroy()`): ends one of the caller's own live
/// sessions (`baas.end_session`: another device, or this one); another's or an ended
/// one is `101`.
async fn end_session(c: &Call<'_>, id: &str) -> Result<(StatusCode, Value), ParseError> {
    let id = convert::object_id(id)?;
    if c.master {
        c.run("select baas.parse_end_session($1::text::uuid)::text", &[&id]).await?;
        return Ok((StatusCode::OK, json!({})));
    }
    if c.token.is_none() {
        return Err(ParseError::bad(convert::INVALID_SESSION_TOKEN, "Session token required."));
    }
    c.run("select baas.end_session($1::text::uuid)::text", &[&id]).await?;
    Ok((StatusCode::OK, json!({})))
}

async fn logout(c: &Call<'_>) -> Result<(StatusCode, Value), ParseError> {
    // Without a session there is nothing to end: Parse Server answers {} too.
    if c.token.is_none() {
        return Ok((StatusCode::OK, json!({})));
    }
    c.run("select baas.logout()::text", &[]).await?;
    Ok((StatusCode::OK, json!({})))
}
