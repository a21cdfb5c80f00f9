//! `GET /v1/realtime`: live change feeds over one WebSocket (docs/realtime-protocol.md).
//!
//! pingora reads the request and writes the `101` (server.rs checks the handshake here
//! first and verifies the token before it); then the raw connection is handed to
//! tokio-tungstenite for the framing (masking, fragments, control frames, close
//! handshake, size limits), and this loop speaks the protocol: client messages in, the
//! hub's frames (the connection's `Outbox`) out.

use super::transport::{self, After, Positions, Slots, Socket, Watch};
use super::{Caller, CloseReason, Conn, Frame, Subscribe};
use crate::errors::ApiError;
use crate::parse::convert::{ParseError, INVALID_SESSION_TOKEN};
use crate::ratelimit;
use crate::routes::input;
use crate::server::App;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use http::{header, StatusCode};
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A handshake the server will not accept.
#[derive(Debug)]
pub enum Refusal {
    /// 400 with this error.
    Bad(ApiError),
    /// 426 Upgrade Required, with `Upgrade: websocket` and `Sec-WebSocket-Version: 13`.
    UpgradeRequired(ApiError),
}

fn tokens(req: &RequestHeader, name: header::HeaderName) -> impl Iterator<Item = String> + '_ {
    req.headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>())
}

/// Check the opening handshake (RFC 6455 4.2.1); Ok: the `Sec-WebSocket-Accept` value.
pub fn handshake(req: &RequestHeader) -> Result<String, Refusal> {
    let upgrade = || {
        Refusal::UpgradeRequired(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this route is a WebSocket: send an HTTP/1.1 GET with Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key (or use the SSE route, GET /v1/collections/{c}/events)",
        ))
    };
    if req.version != http::Version::HTTP_11 || !tokens(req, header::UPGRADE).any(|t| t == "websocket") {
        return Err(upgrade());
    }
    if !tokens(req, header::CONNECTION).any(|t| t == "upgrade") {
        return Err(upgrade());
    }
    let version = req.headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()).map(str::trim);
    if version != Some("13") {
        return Err(Refusal::UpgradeRequired(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported_websocket_version",
            format!("Sec-WebSocket-Version must be 13, got {}", version.map_or("none".to_string(), |v| format!("{v:?}"))),
        )));
    }
    let mut keys = req.headers.get_all(header::SEC_WEBSOCKET_KEY).into_iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.as_bytes(),
        _ => return Err(Refusal::Bad(ApiError::bad_request("invalid_request", "send exactly one Sec-WebSocket-Key"))),
    };
    // RFC 6455 4.1: the base64 of 16 random bytes.
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.trim_ascii()).ok();
    if decoded.is_none_or(|k| k.len() != 16) {
        return Err(Refusal::Bad(ApiError::bad_request("invalid_request", "Sec-WebSocket-Key must be the base64 of 16 bytes")));
    }
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim_ascii()))
}

/// The route's query: only `access_token` (browsers cannot set headers on a WebSocket).
pub fn query(query: Option<&str>) -> Result<Option<String>, ApiError> {
    Ok(input::pairs(query, &["access_token"])?.into_iter().next().map(|(_, v)| v.into_owned()))
}

/// A client message.
#[derive(Debug)]
pub enum ClientMsg {
    Subscribe(Subscribe),
    Unsubscribe(String),
    Auth(String),
    Ping,
}

/// Longest subscription name.
const MAX_SUB_LEN: usize = 128;

/// Most fields a subscription watches (`watch`).
pub const MAX_WATCH: usize = 64;

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_message", m)
}

/// Parse a text message. Err: the error to answer with, and the subscription it names.
pub fn parse(text: &str) -> Result<ClientMsg, (Option<String>, ApiError)> {
    let v: Value = serde_json::from_str(text).map_err(|e| (None, invalid(format!("a message must be a JSON object: {e}"))))?;
    let Value::Object(m) = v else {
        return Err((None, invalid("a message must be a JSON object")));
    };
    let sub = m.get("sub").and_then(Value::as_str).map(str::to_string);
    let fail = |e: ApiError| (sub.clone(), e);
    let kind = m.get("type").and_then(Value::as_str).ok_or_else(|| fail(invalid("a message needs \"type\": subscribe, unsubscribe, auth or ping")))?;
    let allowed: &[&str] = match kind {
        "subscribe" => &["type", "sub", "collection", "where", "fields", "watch", "snapshot", "resume"],
        "unsubscribe" => &["type", "sub"],
        "auth" => &["type", "token"],
        "ping" => &["type"],
        other => return Err(fail(invalid(format!("unknown message type {other:?}; the types are subscribe, unsubscribe, auth and ping")))),
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(fail(invalid(format!("unknown field {k:?} in {kind}; it takes: {}", allowed.join(", ")))));
    }
    let name = || -> Result<String, ApiError> {
        match m.get("sub") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUB_LEN => Ok(s.clone()),
            Some(_) => Err(invalid(format!("\"sub\" must be a string of 1 to {MAX_SUB_LEN} bytes"))),
            None => Err(invalid(format!("{kind} needs \"sub\": the subscription's name"))),
        }
    };
    match kind {
        "ping" => Ok(ClientMsg::Ping),
        "auth" => match m.get("token") {
            Some(Value::String(t)) if !t.is_empty() => Ok(ClientMsg::Auth(t.clone())),
            _ => Err(fail(invalid("auth needs \"token\": an access token"))),
        },
        "unsubscribe" => Ok(ClientMsg::Unsubscribe(name().map_err(fail)?)),
        _ => {
            let sub = name().map_err(fail)?;
            let collection = match m.get("collection") {
                Some(Value::String(c)) if !c.is_empty() => c.clone(),
                _ => return Err(fail(invalid("subscribe needs \"collection\": a collection name"))),
            };
            let filter = match m.get("where") {
                None | Some(Value::Null) => json!({}),
                Some(w @ Value::Object(_)) => w.clone(),
                Some(_) => return Err(fail(invalid("\"where\" must be a JSON object (docs/query.md)"))),
            };
            let fields = match m.get("fields") {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) => Some(
                    a.iter()
                        .map(|f| f.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| fail(invalid("\"fields\" must be an array of field names")))?,
                ),
                Some(_) => return Err(fail(invalid("\"fields\" must be an array of field names"))),
            };
            let watch = match m.get("watch") {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_WATCH => Some(
                    a.iter()
                        // Top-level fields: a dotted name would never change.
                        .map(|f| f.as_str().filter(|s| !s.is_empty() && !s.contains('.')).map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| fail(invalid("\"watch\" must be an array of top-level field names")))?,
                ),
                Some(_) => return Err(fail(invalid(format!("\"watch\" must be an array of 1 to {MAX_WATCH} field names")))),
            };
            let snapshot = match m.get("snapshot") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(fail(invalid("\"snapshot\" must be true or false"))),
            };
            let resume = match m.get("resume") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(parse_position(s).ok_or_else(|| fail(invalid(format!("\"resume\" must be a position, e.g. \"123\", got {s:?}"))))?),
                Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| fail(invalid("\"resume\" must be a position, e.g. \"123\"")))?),
                Some(_) => return Err(fail(invalid("\"resume\" must be a position, e.g. \"123\""))),
            };
            if snapshot && resume.is_some() {
                return Err(fail(invalid("send \"snapshot\" or \"resume\", not both: a resumed subscription continues where it was")));
            }
            Ok(ClientMsg::Subscribe(Subscribe { sub, collection, filter, fields, watch, snapshot, resume }))
        }
    }
}

/// A position as clients send it back: the decimal digits of a bigint.
pub fn parse_position(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|p| *p <= i64::MAX as u64)
}

/// tungstenite's read buffer per connection (its default is 128 KiB), allocated when the
/// connection starts and kept: 1 KiB holds a usual client message (a subscribe with a
/// filter) in one read; a larger one is read in 1 KiB steps into a buffer reserved for
/// it whole. 4 KiB cost an idle subscriber 3 KiB more (heaptrack, docs/benchmarks.md).
const READ_BUFFER: usize = 1024;
/// Frames are batched up to this before a write to the socket (default 128 KiB).
const WRITE_BUFFER: usize = 8192;
/// Subscribes of one connection being started at once (each may run start-up SQL and a
/// replay for up to 10 s); a client sending more waits until one finishes: its further
/// messages are not read meanwhile.
const MAX_PENDING_SUBSCRIBES: usize = 4;

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What ends the loop.
enum End {
    /// Say `closing` with the reason, then close with its code.
    Closing(CloseReason),
    /// Close with this code and reason (a protocol error, a refused `auth`...).
    Close(u16, &'static str),
    /// The client closed, or the socket failed: nothing more to say.
    Gone,
}

/// One WebSocket connection's life after the 101. `preread`: bytes the client sent
/// after its request head, already read by pingora.
pub struct Ws {
    pub app: Arc<App>,
    pub conn: Arc<Conn>,
    pub slots: Slots,
    pub shutdown: ShutdownWatch,
    /// Subscriptions whose subscribe is still starting, and whether an `unsubscribe`
    /// came for them meanwhile.
    pub starting: Starting,
    /// A Parse LiveQuery connection (parse/live.rs): its state; None for pgbaas's own
    /// protocol. Boxed: an idle subscriber's task stays small (the test below).
    pub parse: Option<Box<crate::parse::live::Live>>,
}

/// See `Ws::starting`.
pub type Starting = Arc<Mutex<HashMap<String, bool>>>;

impl Ws {
    pub async fn run(mut self, stream: Socket, preread: Vec<u8>) {
        let cfg = &self.app.cfg;
        // Small buffers: an idle subscriber should cost a few KiB, not tungstenite's
        // default 128 KiB read buffer (allocated up front per connection). Client
        // messages are small; a large event goes out as it is written (the write buffer
        // only batches small frames, and grows past its size only while the socket is
        // blocked: one message beyond it, see `send`).
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_message_size(Some(cfg.realtime_max_message_bytes))
            .max_frame_size(Some(cfg.realtime_max_message_bytes));
        let mut ws = WebSocketStream::from_partially_read(stream, preread, Role::Server, Some(config)).await;
        let watch = Watch::new(self.app.keys.clone(), self.shutdown.clone(), &self.conn.caller());
        let gone = Arc::new(AtomicBool::new(false));
        let mut pending = JoinSet::new();
        let end = self.serve(&mut ws, watch, &mut pending, &gone).await;
        // A subscribe still starting registers after this; its task sees `gone` and ends it.
        gone.store(true, Ordering::SeqCst);
        pending.detach_all();
        self.app.feeds.disconnect(&self.conn);
        if let End::Closing(CloseReason::SessionEnded | CloseReason::TokenExpired) = end {
            if self.parse.is_some() {
                // Nothing of the connection is left but its socket: no subscriptions, no
                // per-address or per-user slot.
                drop(std::mem::take(&mut self.slots));
                if Box::pin(self.linger(&mut ws)).await {
                    // The client closed; its close was answered.
                    return;
                }
            }
        }
        let (code, reason) = match end {
            End::Gone => return,
            End::Closing(r) => (transport::close_code(r), r.as_str()),
            End::Close(code, reason) => (code, reason),
        };
        let close = async {
            ws.close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })).await?;
            // The client answers with its close frame (RFC 6455 5.5.1); then the socket ends.
            while ws.next().await.is_some_and(|m| m.is_ok()) {}
            Ok::<(), WsError>(())
        };
        let _ = tokio::time::timeout(self.app.cfg.body_timeout.min(Duration::from_secs(2)), close).await;
    }

    async fn serve(&mut self, ws: &mut WebSocketStream<Socket>, mut watch: Watch, pending: &mut JoinSet<()>, gone: &Arc<AtomicBool>) -> End {
        let app = self.app.clone();
        let ping_every = app.cfg.realtime_ping;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let mut last_pong = Instant::now();
        let mut positions = Positions::default();
        let mut subscribed = false;
        loop {
            let frames = self.conn.outbox.drain();
            if !frames.is_empty() {
                match Box::pin(self.send(ws, &frames, &mut positions, Some(&mut watch))).await {
                    Ok(None) => {}
                    Ok(Some(r)) => return self.closing(ws, &positions, r).await,
                    Err(e) => {
                        log::debug!("realtime: writing to a WebSocket: {e}");
                        return End::Gone;
                    }
                }
            }
            if let After::Close(r) = transport::hub_verdict(&self.conn) {
                return self.closing(ws, &positions, r).await;
            }
            enum Event {
                End(CloseReason),
                Queued,
                Msg(Option<Result<Message, WsError>>),
                Ping,
                Started,
            }
            let reading = pending.len() < MAX_PENDING_SUBSCRIBES;
            // Biased: the end of the credentials or of the server is seen first, whatever
            // else is ready.
            let event = tokio::select! {
                biased;
                r = watch.reason() => Event::End(r),
                _ = self.conn.outbox.wait() => Event::Queued,
                Some(_) = pending.join_next(), if !pending.is_empty() => Event::Started,
                m = ws.next(), if reading => Event::Msg(m),
                _ = ping.tick() => Event::Ping,
            };
            let reply = match event {
                Event::End(CloseReason::TokenExpired) if self.parse.as_ref().is_some_and(|l| l.token.is_some()) => {
                    match Box::pin(self.recheck(&mut watch)).await {
                        None => continue,
                        Some(r) => {
                            let frames = self.conn.outbox.drain();
                            return match Box::pin(self.send(ws, &frames, &mut positions, None)).await {
                                Ok(cut) => self.closing(ws, &positions, cut.unwrap_or(r)).await,
                                Err(_) => End::Gone,
                            };
                        }
                    }
                }
                Event::End(r) => {
                    // Whatever the hub queued before goes out first, then `closing`.
                    let frames = self.conn.outbox.drain();
                    return match Box::pin(self.send(ws, &frames, &mut positions, None)).await {
                        Ok(cut) => self.closing(ws, &positions, cut.unwrap_or(r)).await,
                        Err(_) => End::Gone,
                    };
                }
                Event::Queued | Event::Started => continue,
                Event::Ping => {
                    if !reading {
                        // Pongs are not read while subscribes start: not the client's fault.
                        last_pong = Instant::now();
                    }
                    if last_pong.elapsed() > ping_every * 2 {
                        log::debug!("realtime: no pong for {:?}; closing", last_pong.elapsed());
                        return End::Close(1001, "no pong");
                    }
                    match tokio::time::timeout(app.cfg.body_timeout, ws.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => continue,
                        _ => return End::Gone,
                    }
                }
                Event::Msg(None) => return End::Gone,
                Event::Msg(Some(Err(e))) => return on_error(e),
                Event::Msg(Some(Ok(m))) => match m {
                    // A Parse LiveQuery connection (parse/live.rs).
                    Message::Text(t) if self.parse.is_some() => {
                        let (reply, end) = Box::pin(self.parse_message(t.as_str(), &mut watch, &mut subscribed, pending, gone)).await;
                        if let Some(end) = end {
                            if let Some(f) = reply {
                                if Box::pin(self.send(ws, &[f], &mut positions, None)).await.is_err() {
                                    return End::Gone;
                                }
                            }
                            return end;
                        }
                        reply
                    }
                    Message::Text(t) => match parse(t.as_str()) {
                        Err((sub, e)) => Some(transport::error(sub.as_deref(), &e)),
                        Ok(ClientMsg::Ping) => Some(transport::own("pong", json!({"type": "pong"}))),
                        Ok(ClientMsg::Unsubscribe(sub)) => self.unsubscribe(sub),
                        Ok(ClientMsg::Subscribe(req)) => self.subscribe(req, &mut subscribed, pending, gone),
                        Ok(ClientMsg::Auth(token)) => match Box::pin(self.auth(&token, subscribed)).await {
                            Ok(caller) => {
                                watch.caller(&caller);
                                Some(transport::own("authenticated", json!({"type": "authenticated", "expires_at": caller.exp})))
                            }
                            Err((e, fatal)) => {
                                let f = transport::error(None, &e);
                                if Box::pin(self.send(ws, &[f], &mut positions, None)).await.is_err() {
                                    return End::Gone;
                                }
                                if fatal {
                                    return End::Close(1008, "auth refused");
                                }
                                None
                            }
                        },
                    },
                    Message::Binary(_) => return End::Close(1003, "send JSON text messages"),
                    Message::Pong(_) => {
                        last_pong = Instant::now();
                        None
                    }
                    // tungstenite answers pings itself, and completes a close handshake.
                    Message::Ping(_) | Message::Frame(_) => None,
                    Message::Close(_) => {
                        while ws.next().await.is_some_and(|m| m.is_ok()) {}
                        return End::Gone;
                    }
                },
            };
            if let Some(f) = reply {
                match Box::pin(self.send(ws, &[f], &mut positions, Some(&mut watch))).await {
                    Ok(None) => {}
                    Ok(Some(r)) => return self.closing(ws, &positions, r).await,
                    Err(_) => return End::Gone,
                }
            }
        }
    }

    /// `unsubscribe`: the answer, if not through the outbox.
    fn unsubscribe(&self, sub: String) -> Option<Frame> {
        let mut starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cancel) = starting.get_mut(&sub) {
            // Its subscribe is still starting: it ends as soon as it has
            // (`unsubscribed` after its `subscribed`, as sent).
            *cancel = true;
            None
        } else if self.app.feeds.unsubscribe(&self.conn, &sub) {
            // Through the outbox: after the frames queued before it.
            let f = transport::own("unsubscribed", json!({"type": "unsubscribed", "sub": sub}));
            let f = Frame { sub: Some(Arc::from(sub.as_str())), ..f };
            self.conn.outbox.push(f, true);
            None
        } else {
            let e = ApiError::new(StatusCode::NOT_FOUND, "not_subscribed", format!("there is no subscription {sub:?} on this connection"));
            Some(transport::error(Some(&sub), &e))
        }
    }

    /// `subscribe`: started on its own task; the answer, if refused at once.
    fn subscribe(&self, req: Subscribe, subscribed: &mut bool, pending: &mut JoinSet<()>, gone: &Arc<AtomicBool>) -> Option<Frame> {
        let sub = req.sub.clone();
        // Each subscribe counts as a request against the per-IP limit.
        let caller = self.conn.caller();
        if let Err(secs) = self.app.limiter.check(ratelimit::Kind::Request, &caller.ip_key) {
            return Some(transport::error(Some(&sub), &ApiError::rate_limited(secs)));
        }
        *subscribed = true;
        // Started on its own task (start-up SQL, a replay: up to 10 s) so that this loop
        // keeps writing, answering and watching the token meanwhile; an error goes
        // through the outbox like the hub's frames.
        self.starting.lock().unwrap_or_else(|e| e.into_inner()).entry(sub.clone()).or_insert(false);
        let (feeds, conn, gone, starting) = (self.app.feeds.clone(), self.conn.clone(), gone.clone(), self.starting.clone());
        pending.spawn(async move {
            let r = feeds.subscribe(&conn, req).await;
            // Under the lock the loop checks an unsubscribe with.
            let mut starting = starting.lock().unwrap_or_else(|e| e.into_inner());
            let cancelled = starting.remove(&sub).unwrap_or(false);
            match r {
                Ok(()) if gone.load(Ordering::SeqCst) => {
                    feeds.unsubscribe(&conn, &sub);
                }
                Ok(()) if cancelled => {
                    if feeds.unsubscribe(&conn, &sub) {
                        let f = transport::own("unsubscribed", json!({"type": "unsubscribed", "sub": sub}));
                        conn.outbox.push(Frame { sub: Some(Arc::from(sub.as_str())), ..f }, true);
                    }
                }
                Ok(()) => {}
                Err(e) => {
                    conn.outbox.push(transport::error(Some(&sub), &e), true);
                }
            }
        });
        None
    }

    /// A Parse LiveQuery message (parse/live.rs): the answer, and whether the connection
    /// ends after it.
    async fn parse_message(&mut self, text: &str, watch: &mut Watch, subscribed: &mut bool, pending: &mut JoinSet<()>, gone: &Arc<AtomicBool>) -> (Option<Frame>, Option<End>) {
        use crate::parse::live::{self, LiveError, Msg, LQ_BAD_KEY, LQ_NOT_CONNECTED};
        let client = self.conn.id;
        let Some(live) = self.parse.as_ref() else { return (None, None) };
        let msg = match live::read(text) {
            Ok(m) => m,
            Err(e) => return (Some(e.frame(client)), None),
        };
        let fatal = |e: LiveError| (Some(e.frame(client)), Some(End::Close(1008, "connect refused")));
        match msg {
            Msg::Connect { app_id, master_key, token } => {
                let door = self.app.parse.as_ref();
                let key_ok = door.is_some_and(|d| d.app_id_is(&app_id) && master_key.as_deref().is_none_or(|k| d.master_key_is(k)));
                if !key_ok {
                    return fatal(LiveError::new(None, LQ_BAD_KEY, "Key in request is not valid"));
                }
                if live.connected {
                    return (Some(LiveError::new(None, LQ_BAD_KEY, "this connection is already connected").frame(client)), None);
                }
                let old = self.conn.caller();
                let new = if master_key.is_some() {
                    // The master key reads every object, as in Parse Server: the hub runs
                    // the subscriptions' start-up SQL through baas._parse_authenticate.
                    let mut c = Caller::new(Some(r#"{"role":"baas_service","parse":"master"}"#.into()), old.client_ip.clone(), old.ip_key.clone());
                    c.parse_master = true;
                    Some(c)
                } else if let Some(t) = &token {
                    match self.parse_session(t, true).await {
                        Ok(c) => Some(c),
                        // An ended session: said, and the socket stays open unconnected
                        // (as Parse Server keeps it), since closing it would make the SDK
                        // reconnect with the same token again and again.
                        Err(e) if e.code == INVALID_SESSION_TOKEN => return (Some(e.frame(client)), None),
                        // The database or a limit: try again on a new connection.
                        Err(e) => return (Some(LiveError { reconnect: true, ..e }.frame(client)), Some(End::Close(1013, "try again later"))),
                    }
                } else {
                    None
                };
                if let Some(new) = new {
                    match self.adopt(new, *subscribed) {
                        Ok(c) => watch.caller(&c),
                        Err((e, _)) => {
                            let p = ParseError::from_api(&e);
                            return fatal(LiveError::new(None, p.code, p.message));
                        }
                    }
                }
                let Some(live) = self.parse.as_mut() else { return (None, None) };
                live.connected = true;
                live.master = master_key.is_some();
                live.token = token;
                (Some(live::own(json!({"op": "connected", "clientId": client}))), None)
            }
            Msg::Subscribe { request_id, class, req, ids, token } => {
                if !live.connected {
                    let e = LiveError::new(Some(request_id), LQ_NOT_CONNECTED, "Can not find this client, make sure you connect to server before subscribing");
                    return (Some(e.frame(client)), None);
                }
                if live.has(request_id) {
                    let e = LiveError::new(Some(request_id), LQ_NOT_CONNECTED, format!("this connection already has a subscription {request_id}"));
                    return (Some(e.frame(client)), None);
                }
                // One connection serves one caller (the hub's principal index is per
                // connection): its connect's session, or the first subscribe's.
                match (token, live.token.clone()) {
                    (Some(t), Some(held)) if t != held => {
                        let e = LiveError::new(Some(request_id), INVALID_SESSION_TOKEN, "this LiveQuery connection serves another session token; open a LiveQueryClient per session (docs/parse.md)");
                        return (Some(e.frame(client)), None);
                    }
                    (Some(_), None) if !live.master && *subscribed => {
                        let e = LiveError::new(Some(request_id), INVALID_SESSION_TOKEN, "this LiveQuery connection already subscribed without a session token; open a new LiveQueryClient for the signed-in user (docs/parse.md)");
                        return (Some(e.frame(client)), None);
                    }
                    (Some(t), None) if !live.master => {
                        let adopted = match self.parse_session(&t, true).await {
                            Ok(c) => self.adopt(c, *subscribed).map_err(|(e, _)| {
                                let p = ParseError::from_api(&e);
                                LiveError::new(Some(request_id), p.code, p.message)
                            }),
                            Err(e) => Err(LiveError { request_id: Some(request_id), ..e }),
                        };
                        match adopted {
                            Ok(c) => watch.caller(&c),
                            Err(e) => return (Some(e.frame(client)), None),
                        }
                        if let Some(live) = self.parse.as_mut() {
                            live.token = Some(t);
                        }
                    }
                    _ => {}
                }
                if let Some(live) = self.parse.as_ref() {
                    live.add(request_id, class, ids);
                }
                (self.subscribe(req, subscribed, pending, gone), None)
            }
            Msg::Unsubscribe(request_id) => (self.unsubscribe(request_id.to_string()), None),
        }
    }

    /// A Parse session token's caller: its claims as Postgres resolves them for every
    /// request of the door (`baas._parse_authenticate`). Charged to the per-IP limit.
    async fn parse_session(&self, token: &str, charge: bool) -> Result<Caller, crate::parse::live::LiveError> {
        use crate::parse::live::LiveError;
        let old = self.conn.caller();
        let err = |e: &ApiError| {
            let p = ParseError::from_api(e);
            LiveError::new(None, p.code, p.message)
        };
        if charge {
            self.app.limiter.check(ratelimit::Kind::Request, &old.ip_key).map_err(|secs| err(&ApiError::rate_limited(secs)))?;
        }
        let claims = crate::parse::session_claims(&self.app, &old.client_ip, token).await.map_err(|e| err(&e))?;
        let mut caller = Caller::new(Some(claims), old.client_ip.clone(), old.ip_key.clone());
        // A Parse session's claims carry no expiry (the session's end is announced, and
        // checked by each subscribe's start-up): the loop checks the session again at
        // this time (`recheck`), so a connection outlives its session by at most
        // parse_live_recheck even if an announcement were missed or it simply expired.
        caller.exp = Some(now_secs() + self.app.cfg.parse_live_recheck.as_secs());
        Ok(caller)
    }

    /// The Parse session's connection reached its check time (`parse_session`): a live
    /// session goes on with a new check time; an ended one ends the connection.
    /// Not charged to the per-address limit (the server's own check; a client keeping
    /// its address limited must not keep its session's connection alive). A check that
    /// gets no answer (bounded by `body_timeout`, at most 5 s: the loop waits for it) is
    /// tried again in 10 s, three times; then the connection ends with `reconnect`.
    async fn recheck(&mut self, watch: &mut Watch) -> Option<CloseReason> {
        let token = self.parse.as_ref().and_then(|l| l.token.clone())?;
        let wait = self.app.cfg.body_timeout.min(Duration::from_secs(5));
        let checked = match tokio::time::timeout(wait, self.parse_session(&token, false)).await {
            Ok(r) => r,
            Err(_) => Err(crate::parse::live::LiveError::new(None, crate::parse::live::LQ_INTERNAL, "the session check timed out")),
        };
        match checked {
            Ok(c) => match self.adopt(c, true) {
                Ok(c) => {
                    if let Some(l) = self.parse.as_mut() {
                        l.recheck_failures = 0;
                    }
                    watch.caller(&c);
                    None
                }
                Err(_) => Some(CloseReason::SessionEnded),
            },
            Err(e) if e.code == INVALID_SESSION_TOKEN => Some(CloseReason::SessionEnded),
            Err(_) => {
                let failures = self.parse.as_mut().map(|l| {
                    l.recheck_failures += 1;
                    l.recheck_failures
                });
                if failures.unwrap_or(u32::MAX) >= 3 {
                    log::warn!("realtime: a Parse LiveQuery connection's session could not be checked three times; closing it (the client reconnects)");
                    return Some(CloseReason::Shutdown);
                }
                let mut c = self.conn.caller();
                c.exp = Some(now_secs() + 10);
                *self.conn.caller.lock().unwrap_or_else(|e| e.into_inner()) = c.clone();
                watch.caller(&c);
                None
            }
        }
    }

    /// An in-band `auth`: a fresh token for the same subject, role and session (a
    /// refresh keeps the session id, sql/auth.sql), or the first token of an anonymous
    /// connection that has not subscribed yet. Err(error, close?): a token that does not
    /// verify is refused and the connection goes on with the old one; one for someone
    /// else, or for another session of the same user (whose end the stream would then
    /// no longer follow), closes it.
    async fn auth(&mut self, token: &str, subscribed: bool) -> Result<Caller, (ApiError, bool)> {
        let claims = self.app.verify_token(token).await.map_err(|e| (e, false))?;
        let old = self.conn.caller();
        self.adopt(Caller::new(Some(claims), old.client_ip.clone(), old.ip_key.clone()), subscribed)
    }

    /// Make `new` the connection's caller, if it may be (see `auth`).
    fn adopt(&mut self, new: Caller, subscribed: bool) -> Result<Caller, (ApiError, bool)> {
        let old = self.conn.caller();
        let refuse = |m: &str| (ApiError::new(StatusCode::FORBIDDEN, "auth_rejected", m), true);
        if old.claims.is_none() {
            if subscribed {
                return Err(refuse("an anonymous connection may only authenticate before its first subscribe; open a new connection"));
            }
            self.app.realtime_caps.admit_user(&new, &mut self.slots).map_err(|e| (e, true))?;
        } else if old.subject != new.subject || old.service != new.service {
            return Err(refuse("auth must carry a token of the same subject and role as the connection's"));
        } else if old.sid != new.sid {
            return Err(refuse("auth must carry a token of the connection's session (a refreshed one); for another session open a new connection"));
        }
        *self.conn.caller.lock().unwrap_or_else(|e| e.into_inner()) = new.clone();
        Ok(new)
    }

    /// Write `frames` in order, recording each frame's position once tungstenite has
    /// taken it (what it took goes out before anything written later, `closing` included).
    /// Ok(Some(reason)): the socket blocked while the connection had to end (the outbox
    /// overflowed, the hub closed it, `watch` fired) or for longer than `body_timeout`
    /// (a client that stopped reading: a slow consumer): the rest was not written; the
    /// caller says `closing`. Err: the socket failed.
    async fn send(&self, ws: &mut WebSocketStream<Socket>, frames: &[Frame], positions: &mut Positions, mut watch: Option<&mut Watch>) -> Result<Option<CloseReason>, WsError> {
        let write = async {
            for f in frames {
                let text = match (&self.parse, std::str::from_utf8(&f.json)) {
                    // Parse's shape (parse/live.rs); some frames have none.
                    (Some(live), _) => match live.render(self.conn.id, f) {
                        Some(t) => t,
                        None => {
                            positions.wrote(f);
                            continue;
                        }
                    },
                    (None, Ok(t)) => t.to_string(),
                    (None, Err(_)) => {
                        log::error!("realtime: a {} frame is not UTF-8; dropped", f.kind);
                        continue;
                    }
                };
                ws.feed(Message::text(text)).await?;
                positions.wrote(f);
            }
            ws.flush().await
        };
        let stop = transport::must_end(&self.conn, watch.as_deref_mut());
        // Biased towards writing: while the socket takes frames they all go out (the
        // order and positions stay exact); `stop` only cuts a write that is blocked.
        tokio::select! {
            biased;
            r = tokio::time::timeout(self.app.cfg.body_timeout, write) => match r {
                Ok(r) => r.map(|()| None),
                Err(_) => Ok(Some(CloseReason::SlowConsumer)),
            },
            r = stop => Ok(Some(r)),
        }
    }

    /// Say `closing` with the positions written, after what tungstenite already holds.
    /// The hub forgets the connection first: nothing more is queued for it, and what was
    /// queued is dropped (`closing` names what was written, so the client resumes with
    /// the rest). A client that stopped reading has a full socket: `closing` waits
    /// behind the bytes it has not read and goes out when it reads them, for as long as
    /// the socket takes a byte at least every `body_timeout`; a client that reads nothing
    /// for that long is dropped without it (it resumes from the position of the last
    /// message it received, which is what `closing` says).
    async fn closing(&self, ws: &mut WebSocketStream<Socket>, positions: &Positions, reason: CloseReason) -> End {
        self.app.feeds.disconnect(&self.conn);
        drop(self.conn.outbox.drain());
        let f = positions.closing(reason);
        let text = match &self.parse {
            Some(live) => live.render(self.conn.id, &f).unwrap_or_default(),
            None => String::from_utf8_lossy(&f.json).into_owned(),
        };
        let msg = Message::text(text);
        let mut fed = false;
        loop {
            let before = ws.get_ref().written();
            let step = async {
                if !fed {
                    ws.feed(msg.clone()).await?;
                    fed = true;
                }
                ws.flush().await
            };
            match tokio::time::timeout(self.app.cfg.body_timeout, step).await {
                Ok(Ok(())) => return End::Closing(reason),
                Ok(Err(e)) => {
                    log::debug!("realtime: writing `closing` ({}): {e}", reason.as_str());
                    return End::Gone;
                }
                Err(_) if ws.get_ref().written() != before => continue,
                Err(_) => {
                    log::debug!("realtime: a client cut off ({}) read nothing for {:?}: dropped without `closing`", reason.as_str(), self.app.cfg.body_timeout);
                    return End::Gone;
                }
            }
        }
    }
}

/// How long a Parse LiveQuery connection whose session ended (error 209 sent) stays open
/// for its client to close.
const PARSE_LINGER: Duration = Duration::from_secs(60);

impl Ws {
    /// After a Parse session ends, the socket stays open (its subscriptions gone) until
    /// the client closes it, for at most PARSE_LINGER or until the server shuts down. The
    /// Parse SDK reconnects whenever its socket closes, with the dead session token, and a
    /// `LiveQueryClient` closed while that reconnect is pending rejects a promise nobody
    /// holds (an unhandled rejection ends a Node process); Parse Server never closes it.
    /// True when the client closed (or went away) meanwhile.
    async fn linger(&self, ws: &mut WebSocketStream<Socket>) -> bool {
        let mut shutdown = self.shutdown.clone();
        let read = async {
            while let Some(Ok(m)) = ws.next().await {
                if m.is_close() {
                    // tungstenite queued the answering close frame: send it.
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.flush()).await;
                    break;
                }
            }
        };
        tokio::select! {
            _ = read => true,
            _ = tokio::time::sleep(PARSE_LINGER) => false,
            _ = shutdown.wait_for(|s| *s) => false,
        }
    }
}

/// A frame the client sent broke the protocol: the close code that says how.
fn on_error(e: WsError) -> End {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => End::Close(1009, "message too big"),
        WsError::Capacity(_) => End::Close(1009, "message too big"),
        WsError::Utf8(_) => End::Close(1007, "text is not UTF-8"),
        WsError::Protocol(p) => {
            log::debug!("realtime: WebSocket protocol error: {p}");
            End::Close(1002, "protocol error")
        }
        _ => End::Gone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/v1/realtime", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    const GOOD: &[(&str, &str)] = &[
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn a_valid_handshake_gets_the_rfc_accept_key() {
        // RFC 6455 1.3's example.
        assert_eq!(handshake(&req(GOOD)).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn handshake_refusals() {
        let without = |name: &str| req(&GOOD.iter().copied().filter(|(k, _)| *k != name).collect::<Vec<_>>());
        let with = |name: &str, value: &'static str| {
            req(&GOOD.iter().map(|(k, v)| if *k == name { (*k, value) } else { (*k, *v) }).collect::<Vec<_>>())
        };
        for r in [without("Upgrade"), without("Connection"), with("Upgrade", "h2c"), with("Connection", "keep-alive")] {
            assert!(matches!(handshake(&r), Err(Refusal::UpgradeRequired(e)) if e.code == "upgrade_required"));
        }
        for r in [without("Sec-WebSocket-Version"), with("Sec-WebSocket-Version", "8")] {
            assert!(matches!(handshake(&r), Err(Refusal::UpgradeRequired(e)) if e.code == "unsupported_websocket_version"));
        }
        for r in [without("Sec-WebSocket-Key"), with("Sec-WebSocket-Key", "not base64!"), with("Sec-WebSocket-Key", "YWJj")] {
            assert!(matches!(handshake(&r), Err(Refusal::Bad(e)) if e.status == StatusCode::BAD_REQUEST));
        }
        let mut old = req(GOOD);
        old.set_version(http::Version::HTTP_10);
        assert!(matches!(handshake(&old), Err(Refusal::UpgradeRequired(_))));
    }

    fn bad(text: &str) -> (Option<String>, String) {
        match parse(text) {
            Err((sub, e)) => {
                assert_eq!(e.code, "invalid_message", "{text}");
                (sub, e.message)
            }
            Ok(m) => panic!("{text} parsed as {m:?}"),
        }
    }

    #[test]
    fn client_messages() {
        let Ok(ClientMsg::Subscribe(s)) =
            parse(r#"{"type":"subscribe","sub":"s1","collection":"todos","where":{"done":false},"fields":["title"],"resume":"42"}"#)
        else {
            panic!()
        };
        assert_eq!((s.sub.as_str(), s.collection.as_str(), s.resume, s.snapshot), ("s1", "todos", Some(42), false));
        assert_eq!((s.filter, s.fields), (json!({"done": false}), Some(vec!["title".to_string()])));
        let Ok(ClientMsg::Subscribe(s)) = parse(r#"{"type":"subscribe","sub":"s","collection":"c","snapshot":true}"#) else { panic!() };
        assert!(s.snapshot && s.resume.is_none() && s.filter == json!({}) && s.fields.is_none());
        let Ok(ClientMsg::Subscribe(s)) = parse(r#"{"type":"subscribe","sub":"s","collection":"c","watch":["a","b"]}"#) else { panic!() };
        assert_eq!(s.watch, Some(vec!["a".to_string(), "b".into()]));
        assert!(matches!(parse(r#"{"type":"ping"}"#), Ok(ClientMsg::Ping)));
        assert!(matches!(parse(r#"{"type":"unsubscribe","sub":"s1"}"#), Ok(ClientMsg::Unsubscribe(s)) if s == "s1"));
        assert!(matches!(parse(r#"{"type":"auth","token":"t"}"#), Ok(ClientMsg::Auth(t)) if t == "t"));
    }

    #[test]
    fn invalid_client_messages_say_what_is_wrong_and_name_their_subscription() {
        assert!(bad("{").1.contains("JSON object"));
        assert!(bad("[1]").1.contains("JSON object"));
        assert!(bad(r#"{"sub":"x"}"#).1.contains("needs \"type\""));
        assert!(bad(r#"{"type":"hello"}"#).1.contains("unknown message type \"hello\""));
        assert_eq!(bad(r#"{"type":"subscribe","sub":"s9"}"#), (Some("s9".into()), "subscribe needs \"collection\": a collection name".into()));
        assert!(bad(r#"{"type":"subscribe","collection":"c"}"#).1.contains("needs \"sub\""));
        assert!(bad(r#"{"type":"subscribe","sub":"s","collection":"c","filter":{}}"#).1.contains("unknown field \"filter\""));
        assert!(bad(r#"{"type":"subscribe","sub":"s","collection":"c","where":[1]}"#).1.contains("\"where\" must be a JSON object"));
        assert!(bad(r#"{"type":"subscribe","sub":"s","collection":"c","fields":"a"}"#).1.contains("\"fields\""));
        for w in [r#""a""#, "[]", "[1]", r#"[""]"#, r#"["a.b"]"#] {
            let m = format!(r#"{{"type":"subscribe","sub":"s","collection":"c","watch":{w}}}"#);
            assert!(bad(&m).1.contains("\"watch\""), "{m}");
        }
        assert!(bad(r#"{"type":"subscribe","sub":"s","collection":"c","snapshot":true,"resume":"1"}"#).1.contains("not both"));
        for r in [r#""-1""#, r#""1.5""#, r#""""#, r#""99999999999999999999""#, "-3", "true"] {
            let m = format!(r#"{{"type":"subscribe","sub":"s","collection":"c","resume":{r}}}"#);
            assert!(bad(&m).1.contains("\"resume\" must be a position"), "{m}");
        }
        assert!(bad(r#"{"type":"auth"}"#).1.contains("needs \"token\""));
        let long = format!(r#"{{"type":"unsubscribe","sub":"{}"}}"#, "x".repeat(MAX_SUB_LEN + 1));
        assert!(bad(&long).1.contains("1 to 128 bytes"));
    }

    #[test]
    fn only_access_token_in_the_query() {
        assert_eq!(query(Some("access_token=a.b.c")).unwrap().as_deref(), Some("a.b.c"));
        assert_eq!(query(None).unwrap(), None);
        assert_eq!(query(Some("x=1")).unwrap_err().code, "invalid_query");
    }

    /// The loop over a real socket with a scripted hub: a subscription's frames in
    /// order, `unsubscribed` after them, pong; then a subscription whose outbox
    /// overflows: `closing` slow_consumer with the last positions written, close 1013.
    #[tokio::test]
    async fn frames_replies_and_a_slow_consumers_closing() {
        use super::transport::testing::{self, event};
        let feeds = Arc::new(testing::Scripted::default());
        feeds.scripts.lock().unwrap().extend([
            vec![event("subscribed", "a", 3, 0), event("insert", "a", 4, 0)],
            vec![event("subscribed", "b", 7, 0), event("insert", "b", 8, 5000)],
        ]);
        let app = testing::app(feeds.clone());
        let (server, client) = testing::socket_pair().await;
        let conn = Conn::new(Caller::default(), 4096);
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(Ws { app, conn, slots: Default::default(), shutdown, starting: Default::default(), parse: None }.run(server, Vec::new()));
        let mut c = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let send = |v: Value| Message::text(v.to_string());
        c.send(send(json!({"type": "subscribe", "sub": "a", "collection": "c"}))).await.unwrap();
        c.send(send(json!({"type": "unsubscribe", "sub": "a"}))).await.unwrap();
        c.send(send(json!({"type": "ping"}))).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            match tokio::time::timeout(Duration::from_secs(20), c.next()).await.unwrap().unwrap().unwrap() {
                Message::Text(t) => got.push(serde_json::from_str::<Value>(t.as_str()).unwrap()),
                _ => {}
            }
        }
        // The subscribe starts on its own task: the pong may come first; the unsubscribe
        // sent while it started ends it after its frames.
        let kinds: Vec<&str> = got.iter().map(|m| m["type"].as_str().unwrap()).filter(|k| *k != "pong").collect();
        assert_eq!(kinds, ["subscribed", "insert", "unsubscribed"], "{got:?}");
        assert!(got.iter().any(|m| m["type"] == "pong"));
        assert_eq!(got.iter().find(|m| m["type"] == "insert").unwrap()["position"], "4");
        c.send(send(json!({"type": "subscribe", "sub": "b", "collection": "c"}))).await.unwrap();
        let mut got = Vec::new();
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(20), c.next()).await.unwrap().unwrap().unwrap() {
                Message::Text(t) => got.push(serde_json::from_str::<Value>(t.as_str()).unwrap()),
                Message::Close(f) => break f.map(|f| u16::from(f.code)),
                _ => {}
            }
        };
        assert_eq!(got[0]["type"], "subscribed");
        assert_eq!(got[1], json!({"type": "closing", "reason": "slow_consumer", "positions": {"b": "7"}}), "{got:?}");
        assert_eq!(code, Some(1013));
        assert!(feeds.disconnected());
    }

    /// A hub whose subscribes never finish starting (start-up SQL stuck).
    struct Stuck;

    #[async_trait::async_trait]
    impl crate::realtime::Feeds for Stuck {
        async fn subscribe(&self, _conn: &Arc<Conn>, _req: Subscribe) -> Result<(), ApiError> {
            std::future::pending().await
        }
        fn unsubscribe(&self, _conn: &Arc<Conn>, _sub: &str) -> bool {
            false
        }
        fn disconnect(&self, _conn: &Arc<Conn>) {}
    }

    async fn text(c: &mut WebSocketStream<tokio::net::TcpStream>) -> Value {
        loop {
            match tokio::time::timeout(Duration::from_secs(20), c.next()).await.expect("a message in time").unwrap().unwrap() {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// The messages up to `closing` (returned with the last position read), a pause
    /// after each; their positions run 1, 2, 3... with none skipped.
    async fn until_closing(c: &mut WebSocketStream<tokio::net::TcpStream>, pause: Duration) -> (Value, u64) {
        let mut last = 0;
        loop {
            let m = text(c).await;
            if m["type"] == "closing" {
                return (m, last);
            }
            let p: u64 = m["position"].as_str().unwrap().parse().unwrap();
            assert_eq!(p, last + 1, "in order, none skipped");
            last = p;
            tokio::time::sleep(pause).await;
        }
    }

    /// While a subscribe is starting the connection goes on: pings are answered, the
    /// hub's frames written, and the server's shutdown ends it with `closing`.
    #[tokio::test]
    async fn a_starting_subscribe_does_not_hold_up_the_connection() {
        use super::transport::testing::{self, event};
        let app = testing::app(Arc::new(Stuck));
        let (server, client) = testing::socket_pair().await;
        let conn = Conn::new(Caller::default(), 1 << 20);
        let (tx, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(Ws { app, conn: conn.clone(), slots: Default::default(), shutdown, starting: Default::default(), parse: None }.run(server, Vec::new()));
        let mut c = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        c.send(Message::text(json!({"type": "subscribe", "sub": "stuck", "collection": "c"}).to_string())).await.unwrap();
        c.send(Message::text(json!({"type": "ping"}).to_string())).await.unwrap();
        assert_eq!(text(&mut c).await, json!({"type": "pong"}));
        conn.outbox.push(event("insert", "other", 5, 0), false);
        assert_eq!(text(&mut c).await["position"], "5");
        tx.send(true).unwrap();
        assert_eq!(text(&mut c).await, json!({"type": "closing", "reason": "shutdown", "positions": {"other": "5"}}));
    }

    /// A client that stops reading for longer than body_timeout, whose outbox then
    /// overflows, still gets `closing` when it reads again (within body_timeout of the
    /// overflow), naming the last position it was sent: everything before it arrives.
    /// (It used to be dropped when the blocked write timed out: no resume position.)
    #[tokio::test]
    async fn a_stalled_client_reads_closing_with_the_last_position_it_was_sent() {
        use super::transport::testing::{self, event};
        let feeds = Arc::new(testing::Scripted::default());
        // Timeline (s): 0 the writes block; 3 the outbox overflows; 6 the blocked write's
        // timeout; 7.5 the client reads; 9 the `closing` write's timeout.
        let app = testing::app_with(feeds, &["--body-timeout-secs", "6"]);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let client = socket.connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let server = Socket::tcp(server);
        let conn = Conn::new(Caller::default(), 1 << 20);
        // 16 MiB queued (forced past the bound, as a snapshot is): more than the sockets hold.
        for p in 1..=256 {
            assert!(conn.outbox.push(event("insert", "s", p, 64 * 1024), true));
        }
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(Ws { app, conn: conn.clone(), slots: Default::default(), shutdown, starting: Default::default(), parse: None }.run(server, Vec::new()));
        let mut c = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Forced (snapshot) bytes do not count against the bound: live frames queued
        // behind the blocked write do, until one no longer fits.
        assert!((257..400).any(|p| !conn.outbox.push(event("insert", "s", p, 64 * 1024), false)), "over the bound");
        tokio::time::sleep(Duration::from_millis(4500)).await;
        let (closing, last) = until_closing(&mut c, Duration::ZERO).await;
        assert!(last > 0 && last < 256, "some were sent, not all: {last}");
        assert_eq!(closing, json!({"type": "closing", "reason": "slow_consumer", "positions": {"s": last.to_string()}}));
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(20), c.next()).await.unwrap() {
                Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(code, Some(1013));
    }

    /// A client cut off while it reads slowly gets the rest and `closing` however long
    /// that takes, as long as it keeps reading (here a message per 600 ms, for more than
    /// twice body_timeout: a deadline for the whole `closing` write dropped it).
    #[tokio::test]
    async fn a_slow_reader_cut_off_gets_closing_while_it_keeps_reading() {
        use super::transport::testing::{self, event};
        let app = testing::app_with(Arc::new(testing::Scripted::default()), &["--body-timeout-secs", "1"]);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let client = socket.connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        // A fixed, small send buffer: the backlog the client must read stays ~20 messages.
        socket2::SockRef::from(&server).set_send_buffer_size(64 * 1024).unwrap();
        let conn = Conn::new(Caller::default(), 1 << 20);
        for p in 1..=40 {
            assert!(conn.outbox.push(event("insert", "s", p, 16 * 1024), true));
        }
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(Ws { app, conn: conn.clone(), slots: Default::default(), shutdown, starting: Default::default(), parse: None }.run(Socket::tcp(server), Vec::new()));
        let mut c = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!((41..200).any(|p| !conn.outbox.push(event("insert", "s", p, 16 * 1024), false)), "over the bound: cut off");
        let started = std::time::Instant::now();
        let (closing, last) = until_closing(&mut c, Duration::from_millis(600)).await;
        assert!(started.elapsed() > Duration::from_secs(2), "the reading took longer than body_timeout: {:?}", started.elapsed());
        assert!(last < 40, "the frames queued after the cut were dropped: {last}");
        assert_eq!(closing, json!({"type": "closing", "reason": "slow_consumer", "positions": {"s": last.to_string()}}));
    }

    /// An idle connection's memory is mostly its task: the loop's future. It was 3,712
    /// bytes with the rare paths (an `auth`, a batch's write) inline; boxed when taken,
    /// 2,136 (WebSocket) and 1,920 (SSE). 10,000 idle subscribers hold 10,000 of these.
    #[tokio::test]
    async fn an_idle_connections_task_is_small() {
        use super::transport::testing;
        let app = testing::app(Arc::new(testing::Scripted::default()));
        let (server, _client) = testing::socket_pair().await;
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let ws = Ws { app: app.clone(), conn: Conn::new(Caller::default(), 4096), slots: Default::default(), shutdown: shutdown.clone(), starting: Default::default(), parse: None };
        let ws = ws.run(server, Vec::new());
        let (server, _client) = testing::socket_pair().await;
        let sse = crate::realtime::sse::Sse { app, conn: Conn::new(Caller::default(), 4096), slots: Default::default(), shutdown }.run(server);
        let (ws, sse) = (std::mem::size_of_val(&ws), std::mem::size_of_val(&sse));
        assert!(ws <= 2560 && sse <= 2560, "WebSocket {ws} bytes, SSE {sse} bytes");
    }
}
