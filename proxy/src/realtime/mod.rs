//! Live change feeds (docs/realtime.md): what the transports (WebSocket `ws.rs`, Server-Sent
//! Events `sse.rs`) and the hub (`hub.rs`: capture reader, principal index, fan-out) share.
//!
//! A transport owns one client connection: it authenticates, parses client messages, and
//! drains the connection's `Outbox` to the socket. The hub owns subscriptions: it pushes
//! ready-made messages (one JSON object each) into the outboxes of the connections whose
//! callers may read a change. Neither knows the other's internals.

pub mod sse;
pub mod transport;
pub mod unavailable;
pub mod ws;

use crate::errors::ApiError;
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Who holds a connection: from a verified token, or anonymous.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// Verified claims JSON, as `baas.authenticate` takes it; None: anonymous.
    pub claims: Option<String>,
    /// `sub` of a user token (a uuid), or of a service token.
    pub subject: Option<String>,
    /// `sid`: the session the token belongs to (streams end when it ends).
    pub sid: Option<String>,
    /// A service token: reads every document.
    pub service: bool,
    /// `exp`, seconds since the epoch.
    pub exp: Option<u64>,
    /// An anonymous account's token (claim `is_anonymous`): principal `anonymous`
    /// instead of `registered`.
    pub anonymous: bool,
    /// The client's address (audit, limits).
    pub client_ip: String,
    /// Its per-IP limit key (ratelimit::ip_key).
    pub ip_key: String,
    /// A Parse LiveQuery connection opened with the master key (parse/live.rs): the
    /// service role through `baas._parse_authenticate`, which needs no service token.
    pub parse_master: bool,
}

impl Caller {
    /// A caller from verified claims JSON (None: anonymous).
    pub fn new(claims: Option<String>, client_ip: String, ip_key: String) -> Caller {
        let mut c = Caller { claims, client_ip, ip_key, ..Caller::default() };
        if let Some(v) = c.claims.as_deref().and_then(|j| serde_json::from_str::<Value>(j).ok()) {
            c.subject = v.get("sub").and_then(Value::as_str).map(str::to_string);
            c.sid = v.get("sid").and_then(Value::as_str).map(str::to_string);
            c.service = v.get("role").and_then(Value::as_str) == Some("baas_service");
            c.exp = v.get("exp").and_then(Value::as_u64);
            c.anonymous = v.get("is_anonymous").and_then(Value::as_bool) == Some(true);
        }
        c
    }

    /// The signed-in user's id (not for service tokens).
    pub fn user(&self) -> Option<&str> {
        if self.service {
            None
        } else {
            self.subject.as_deref()
        }
    }
}

/// One subscription request (WebSocket `subscribe` message, or the SSE route's query).
#[derive(Clone, Debug)]
pub struct Subscribe {
    /// The client's name for it, unique within its connection (SSE: "events").
    pub sub: String,
    pub collection: String,
    /// The `where` filter (query language, docs/query.md); `{}` for all.
    pub filter: Value,
    /// Top-level data fields to send; None: all.
    pub fields: Option<Vec<String>>,
    /// Top-level data fields to watch: an `insert` or `update` is sent only when one of
    /// them changed (was set, for an insert); `enter`, `leave` and `delete` always are.
    /// None: every change (Parse LiveQuery's `watch`).
    pub watch: Option<Vec<String>>,
    /// Send the current matching documents first.
    pub snapshot: bool,
    /// Continue after this position (exclusive with `snapshot`).
    pub resume: Option<u64>,
}

/// Why the server ends a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    TokenExpired,
    SessionEnded,
    SlowConsumer,
    Shutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TokenExpired => "token_expired",
            CloseReason::SessionEnded => "session_ended",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// One message for the client.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The message's `type` (the SSE `event:` name).
    pub kind: &'static str,
    /// The subscription it belongs to, if any.
    pub sub: Option<Arc<str>>,
    /// Its position, if it has one (the SSE `id:`; what a client resumes from).
    pub position: Option<u64>,
    /// The whole JSON object, `type` and `sub` included.
    pub json: Bytes,
}

/// A connection's bounded queue of frames: the hub pushes, the transport pops. Bounded in
/// bytes: a push that would exceed the bound marks the connection overflowed (the transport
/// then says `closing` with `slow_consumer` and the positions it actually wrote, and closes);
/// nothing ever waits for a client.
pub struct Outbox {
    /// The frames, the bytes queued, and how many of those were forced (not bounded).
    queue: Mutex<(VecDeque<Frame>, usize, usize)>,
    limit: usize,
    overflowed: AtomicBool,
    closed: Mutex<Option<CloseReason>>,
    ready: Notify,
}

impl Outbox {
    pub fn new(limit_bytes: usize) -> Outbox {
        Outbox { queue: Mutex::new((VecDeque::new(), 0, 0)), limit: limit_bytes, overflowed: AtomicBool::new(false), closed: Mutex::new(None), ready: Notify::new() }
    }

    /// Queue a frame; false (and the connection marked overflowed) if it does not fit.
    /// `force`: queue regardless of the bound (a snapshot, which is bounded on its own by
    /// snapshot_max); forced bytes do not count against the bound for the frames after
    /// them, so a large snapshot does not cut its reader off at the first live change.
    /// A frame alone in the (unforced) queue always fits: one document larger than the
    /// bound would otherwise cut every reader off, and again at each resume that
    /// replays it.
    pub fn push(&self, frame: Frame, force: bool) -> bool {
        if self.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let bounded = q.1 - q.2;
        if force {
            q.2 += frame.json.len();
        } else if bounded > 0 && bounded + frame.json.len() > self.limit {
            self.overflowed.store(true, Ordering::Relaxed);
            drop(q);
            self.ready.notify_one();
            return false;
        }
        q.1 += frame.json.len();
        q.0.push_back(frame);
        drop(q);
        self.ready.notify_one();
        true
    }

    /// Ask the transport to close the connection.
    pub fn close(&self, reason: CloseReason) {
        let mut c = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        c.get_or_insert(reason);
        drop(c);
        self.ready.notify_one();
    }

    /// The bound in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything queued now (possibly nothing).
    pub fn drain(&self) -> Vec<Frame> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.1 = 0;
        q.2 = 0;
        q.0.drain(..).collect()
    }

    /// Wait until something was pushed, or overflow/close was signalled.
    pub async fn wait(&self) {
        self.ready.notified().await
    }

    pub fn queued_bytes(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// The outbox bound a connection gets: the configured one, but at least two of the
/// largest documents (an update frame of one) plus the message's envelope, so that a
/// reader keeping up is never cut off by document size alone.
pub fn outbox_bytes(configured: usize, body_limit: usize) -> usize {
    configured.max(body_limit.saturating_mul(2).saturating_add(4096))
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// One client connection (a WebSocket, or one SSE stream).
pub struct Conn {
    pub id: u64,
    /// Replaced when a WebSocket client sends `auth` with a fresh token (same subject).
    pub caller: Mutex<Caller>,
    pub outbox: Outbox,
}

impl Conn {
    pub fn new(caller: Caller, outbox_bytes: usize) -> Arc<Conn> {
        crate::metrics::REALTIME_CONNECTIONS.inc(); // (issue 19, observe): until dropped
        Arc::new(Conn { id: NEXT_CONN.fetch_add(1, Ordering::Relaxed), caller: Mutex::new(caller), outbox: Outbox::new(outbox_bytes) })
    }

    pub fn caller(&self) -> Caller {
        self.caller.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        crate::metrics::REALTIME_CONNECTIONS.dec(); // (issue 19, observe)
    }
}

/// The hub, as the transports see it (hub.rs implements it).
#[async_trait]
pub trait Feeds: Send + Sync {
    /// Start a subscription on `conn`. On success the hub has pushed, in this order: the
    /// snapshot frames (if asked), `subscribed` with the position, and from then on the
    /// subscription's events. On error nothing was pushed and nothing is registered: the
    /// transport reports the error (WebSocket: an `error` message; SSE: the HTTP status).
    /// Errors: 404 `not_found` (no such collection), 400 `invalid_query` (filter, fields),
    /// 403 `feed_disabled`, 409 `subscription_exists`, 400 `snapshot_too_large`, 429
    /// `too_many_subscriptions`, 503 `realtime_unavailable` (no capture: wal_level).
    async fn subscribe(&self, conn: &Arc<Conn>, req: Subscribe) -> Result<(), ApiError>;
    /// End one subscription; false if there was none of that name.
    fn unsubscribe(&self, conn: &Arc<Conn>, sub: &str) -> bool;
    /// The connection is gone: drop all its subscriptions.
    fn disconnect(&self, conn: &Arc<Conn>);
}

pub mod capture;
pub mod event;
pub mod hub;
pub mod principals;

#[cfg(test)]
mod outbox_tests {
    use super::*;

    fn frame(n: usize) -> Frame {
        Frame { kind: "insert", sub: None, position: Some(1), json: Bytes::from(vec![b' '; n]) }
    }

    #[test]
    fn a_frame_larger_than_the_bound_fits_an_empty_queue() {
        let o = Outbox::new(100);
        assert!(o.push(frame(500), false), "alone: sent, not a cut-off");
        assert!(!o.push(frame(1), false), "behind it, the bound holds");
        assert!(o.overflowed());
    }

    #[test]
    fn forced_bytes_do_not_count_against_later_frames() {
        let o = Outbox::new(100);
        assert!(o.push(frame(1000), true), "a snapshot");
        assert!(o.push(frame(60), false));
        assert!(o.push(frame(40), false), "100 bounded bytes fit");
        assert!(!o.push(frame(1), false), "101 do not");
        let o = Outbox::new(100);
        o.push(frame(80), false);
        o.drain();
        assert!(o.push(frame(100), false) && o.push(frame(0), false) && !o.overflowed(), "drained: the count starts again");
    }

    #[test]
    fn the_bound_holds_two_of_the_largest_documents() {
        assert_eq!(outbox_bytes(1 << 20, 1 << 20), (2 << 20) + 4096);
        assert_eq!(outbox_bytes(1 << 30, 1 << 20), 1 << 30);
    }
}
