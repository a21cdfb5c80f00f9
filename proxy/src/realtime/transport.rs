//! What the two transports (ws.rs, sse.rs) share: the caps on open connections, the
//! watch that ends a stream (token expiry, session end, shutdown, the hub's close), the
//! positions written per subscription, and the server's own messages.

use super::{Caller, CloseReason, Conn, Frame};
use crate::errors::ApiError;
use crate::jwt::KeyCache;
use crate::ratelimit::{InFlight, Permit};
use bytes::Bytes;
use http::StatusCode;
use pingora::server::ShutdownWatch;
use serde_json::{json, Map, Value};
use futures_util::FutureExt;
use pingora::protocols::Stream;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::broadcast;
use tokio::time::{Instant, Sleep};

/// Open realtime connections per client address and per user (config.rs).
pub struct Caps {
    pub per_ip: InFlight,
    pub per_user: InFlight,
}

/// A connection's places under the caps, given back when it is dropped.
#[derive(Default)]
pub struct Slots {
    _ip: Option<Permit>,
    user: Option<Permit>,
}

impl Caps {
    /// Places for a new connection of `caller`, or 429 `too_many_connections`. Service
    /// tokens are the operator's own backends: not capped (as for requests in flight).
    pub fn admit(&self, caller: &Caller) -> Result<Slots, ApiError> {
        if caller.service {
            return Ok(Slots::default());
        }
        let ip = self
            .per_ip
            .try_acquire(&caller.ip_key)
            .map_err(|_| too_many(format!("this client address already has {} live feeds open", self.per_ip.max())))?;
        let mut slots = Slots { _ip: Some(ip), user: None };
        self.admit_user(caller, &mut slots)?;
        Ok(slots)
    }

    /// A place for the caller's user (after a WebSocket's in-band `auth` made an
    /// anonymous connection a user's).
    pub fn admit_user(&self, caller: &Caller, slots: &mut Slots) -> Result<(), ApiError> {
        if let (Some(user), None) = (caller.user(), &slots.user) {
            let p = self
                .per_user
                .try_acquire(&format!("user:{user}"))
                .map_err(|_| too_many(format!("this user already has {} live feeds open", self.per_user.max())))?;
            slots.user = Some(p);
        }
        Ok(())
    }
}

fn too_many(why: String) -> ApiError {
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", format!("{why}; close one first"));
    e.retry_after = Some(1);
    e
}

/// Why a stream must end now, besides the hub's own `Outbox::close`: its token expired
/// (and was not replaced in band), its session ended, or the server is shutting down.
pub struct Watch {
    keys: Arc<KeyCache>,
    ended: broadcast::Receiver<Arc<str>>,
    shutdown: ShutdownWatch,
    sid: Option<String>,
    expiry: Option<Pin<Box<Sleep>>>,
}

impl Watch {
    pub fn new(keys: Arc<KeyCache>, shutdown: ShutdownWatch, caller: &Caller) -> Watch {
        let ended = keys.watch_ended_sessions();
        let mut w = Watch { keys, ended, shutdown, sid: None, expiry: None };
        w.caller(caller);
        w
    }

    /// The connection's caller changed (a WebSocket `auth` with a fresh token).
    pub fn caller(&mut self, caller: &Caller) {
        self.sid = caller.sid.clone();
        self.expiry = caller.exp.map(|exp| Box::pin(tokio::time::sleep_until(expiry_instant(exp))));
    }

    /// Resolves when the stream must end, with the reason. Cancel-safe (used in select!).
    pub async fn reason(&mut self) -> CloseReason {
        if *self.shutdown.borrow() {
            return CloseReason::Shutdown;
        }
        if self.sid.as_deref().is_some_and(|sid| self.keys.is_session_ended(sid)) {
            return CloseReason::SessionEnded;
        }
        let Watch { keys, ended, shutdown, sid, expiry } = self;
        let expired = async {
            match expiry.as_mut() {
                Some(at) => at.await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        loop {
            tokio::select! {
                _ = &mut expired => return CloseReason::TokenExpired,
                r = ended.recv() => match r {
                    Ok(ended) if sid.as_deref() == Some(&*ended) => return CloseReason::SessionEnded,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if sid.as_deref().is_some_and(|sid| keys.is_session_ended(sid)) {
                            return CloseReason::SessionEnded;
                        }
                    }
                    // The key cache lives as long as the server: only at exit.
                    Err(broadcast::error::RecvError::Closed) => return CloseReason::Shutdown,
                },
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return CloseReason::Shutdown;
                    }
                }
            }
        }
    }
}

/// The monotonic instant of `exp` (seconds since the epoch), to the millisecond.
fn expiry_instant(exp: u64) -> Instant {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Instant::now() + Duration::from_millis(exp.saturating_mul(1000).saturating_sub(now_ms))
}

/// A stream's connection once pingora handed it over: the plain TCP socket on its own, or
/// (a TLS stream, a failed `dup`) pingora's stream as it was; with the count of bytes the
/// socket took, which tells a client that reads slowly from one that reads nothing.
pub struct Socket {
    io: Io,
    written: u64,
    /// The connection's place under max_connections_per_ip, taken from pingora's
    /// stream when it is left behind (issue 19, edge): a live feed keeps holding it.
    _slot: Option<crate::edge::ConnSlot>,
}

enum Io {
    Tcp(TcpStream),
    Kept(Stream),
}

impl Socket {
    pub fn tcp(s: TcpStream) -> Socket {
        Socket { io: Io::Tcp(s), written: 0, _slot: None }
    }

    fn kept(s: Stream) -> Socket {
        Socket { io: Io::Kept(s), written: 0, _slot: None }
    }

    /// Whether pingora's stream was left behind (the usual case).
    pub fn is_detached(&self) -> bool {
        matches!(self.io, Io::Tcp(_))
    }

    /// Bytes written to the socket so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Take the TCP socket out of pingora's stream, with the bytes the client sent that
    /// pingora's buffers hold appended to `preread`. pingora's stream keeps a read buffer
    /// (4 KiB, main.rs), a write buffer (1,460 bytes), the socket's digests and our
    /// head-deadline wrapper for the connection's life: ~6 KiB of each idle subscriber's
    /// ~28 KiB (heaptrack, 2,000 subscribers; docs/benchmarks.md). pingora offers no way to
    /// unwrap its stream, so the socket is `dup`ed and the stream dropped (its fd closed;
    /// the connection lives on in the duplicate).
    pub async fn detach(mut stream: Stream, preread: &mut Vec<u8>, max_preread: usize) -> Socket {
        // The 101 (or the SSE head) may still sit in pingora's write buffer.
        if stream.flush().await.is_err() || stream.get_ssl_digest().is_some() {
            return Socket::kept(stream);
        }
        // Whatever pingora's read buffer holds, without waiting for more. A client that
        // floods before its first frame was answered keeps pingora's stream (nothing lost).
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).now_or_never() {
                Some(Ok(n)) if n > 0 => {
                    preread.extend_from_slice(&buf[..n]);
                    if preread.len() > max_preread {
                        return Socket::kept(stream);
                    }
                }
                // Nothing more now (or the client is gone: the socket says so again).
                _ => break,
            }
        }
        // SAFETY: the fd is `stream`'s own socket, open for as long as `stream` lives,
        // which outlives this borrow; `try_clone_to_owned` dups it (F_DUPFD_CLOEXEC).
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.id()) };
        let tcp = fd.try_clone_to_owned().map(std::net::TcpStream::from);
        // peer_addr: the fd is a connected TCP socket (not, say, a Unix socket).
        match tcp.and_then(|t| t.peer_addr().and_then(|_| t.set_nonblocking(true)).map(|()| t)).and_then(TcpStream::from_std) {
            Ok(tcp) => {
                // (issue 19, edge): the cap's slot travels from pingora's stream to ours.
                let slot = stream.into_any().downcast::<crate::deadline::DeadlineStream>().ok().and_then(|mut d| d.slot.take());
                Socket { _slot: slot, ..Socket::tcp(tcp) }
            }
            Err(e) => {
                log::debug!("realtime: keeping pingora's stream: {e}");
                Socket::kept(stream)
            }
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Kept(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = match &mut this.io {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Io::Kept(s) => Pin::new(s).poll_write(cx, data),
        };
        if let Poll::Ready(Ok(n)) = &r {
            this.written += *n as u64;
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Kept(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Kept(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The last position written to the client, per subscription: what `closing` reports,
/// so that the client resumes exactly after what it received.
#[derive(Default)]
pub struct Positions(HashMap<Arc<str>, u64>);

impl Positions {
    /// `frame` was written.
    pub fn wrote(&mut self, frame: &Frame) {
        match (&frame.sub, frame.position, frame.kind) {
            // A subscription that ended has no position to resume from.
            (Some(sub), _, "unsubscribed") => {
                self.0.remove(sub);
            }
            (Some(sub), Some(p), _) => {
                self.0.insert(sub.clone(), p);
            }
            _ => {}
        }
    }

    /// `{"type":"closing","reason":..,"positions":{sub: "position"}}`.
    pub fn closing(&self, reason: CloseReason) -> Frame {
        let positions: Map<String, Value> = self.0.iter().map(|(s, p)| (s.to_string(), Value::String(p.to_string()))).collect();
        own("closing", json!({"type": "closing", "reason": reason.as_str(), "positions": positions}))
    }
}

/// A message of the transport's own (not the hub's).
pub fn own(kind: &'static str, v: Value) -> Frame {
    Frame { kind, sub: None, position: None, json: Bytes::from(v.to_string()) }
}

/// `{"type":"error","sub"?,"error":{"code","message"}}`.
pub fn error(sub: Option<&str>, e: &ApiError) -> Frame {
    let mut v = json!({"type": "error", "error": {"code": e.code, "message": e.message}});
    if let Some(sub) = sub {
        v["sub"] = Value::String(sub.to_string());
    }
    let mut f = own("error", v);
    f.sub = sub.map(Arc::from);
    f
}

/// What a transport does with the frames the hub queued, after writing them: go on,
/// or end with `closing` (overflow, or the hub asked), or end quietly (an SSE stream
/// whose one subscription ended with an error).
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    Close(CloseReason),
}

/// Checked after each drain: the hub's verdicts on this connection.
pub fn hub_verdict(conn: &Conn) -> After {
    if conn.outbox.overflowed() {
        return After::Close(CloseReason::SlowConsumer);
    }
    match conn.outbox.close_reason() {
        Some(r) => After::Close(r),
        None => After::Continue,
    }
}

/// Resolves when the connection must end: the hub's verdict (overflow, close) or, with
/// `watch`, the token's or the server's end. Raced against a write that may block, so a
/// stalled client cannot keep its connection past the moment it must end.
pub async fn must_end(conn: &Conn, mut watch: Option<&mut Watch>) -> CloseReason {
    loop {
        if let After::Close(r) = hub_verdict(conn) {
            return r;
        }
        match watch.as_deref_mut() {
            Some(w) => tokio::select! {
                r = w.reason() => return r,
                _ = conn.outbox.wait() => {}
            },
            None => conn.outbox.wait().await,
        }
    }
}

/// The close code a WebSocket ends with for each reason (docs/realtime-protocol.md).
pub fn close_code(reason: CloseReason) -> u16 {
    match reason {
        // Policy: the credentials no longer hold.
        CloseReason::TokenExpired | CloseReason::SessionEnded => 1008,
        // Try again later (and resume from the positions).
        CloseReason::SlowConsumer => 1013,
        // Service restart (issue 19): reconnect, to another server or this one restarted.
        CloseReason::Shutdown => 1012,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &'static str, sub: &str, position: Option<u64>) -> Frame {
        Frame { kind, sub: Some(Arc::from(sub)), position, json: Bytes::from_static(b"{}") }
    }

    #[test]
    fn closing_reports_the_last_position_written_per_subscription() {
        let mut p = Positions::default();
        p.wrote(&frame("snapshot", "a", None));
        p.wrote(&frame("subscribed", "a", Some(7)));
        p.wrote(&frame("insert", "a", Some(9)));
        p.wrote(&frame("subscribed", "b", Some(9)));
        p.wrote(&frame("subscribed", "c", Some(9)));
        p.wrote(&frame("unsubscribed", "c", None));
        let v: Value = serde_json::from_slice(&p.closing(CloseReason::SlowConsumer).json).unwrap();
        assert_eq!(v, json!({"type": "closing", "reason": "slow_consumer", "positions": {"a": "9", "b": "9"}}));
    }

    #[test]
    fn error_messages_name_their_subscription() {
        let e = ApiError::bad_request("invalid_message", "no");
        let v: Value = serde_json::from_slice(&error(Some("s1"), &e).json).unwrap();
        assert_eq!(v, json!({"type": "error", "sub": "s1", "error": {"code": "invalid_message", "message": "no"}}));
        let v: Value = serde_json::from_slice(&error(None, &e).json).unwrap();
        assert!(v.get("sub").is_none());
    }

    /// The socket taken out of pingora's stream carries the connection on: the bytes
    /// the client sent before are in `preread`, later ones are read from it, writes reach
    /// the client, and dropping pingora's stream (its fd) did not close anything.
    #[tokio::test]
    async fn a_detached_socket_keeps_the_connection_and_the_bytes_sent_before() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (server, mut client) = testing::tcp_pair().await;
        client.write_all(b"early").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut preread = b"head:".to_vec();
        let mut socket = Socket::detach(server, &mut preread, 1024).await;
        assert!(socket.is_detached(), "a plain TCP stream is detached");
        assert_eq!(preread, b"head:early");
        client.write_all(b"later").await.unwrap();
        let mut got = [0u8; 5];
        socket.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"later");
        socket.write_all(b"to the client").await.unwrap();
        socket.shutdown().await.unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "to the client");
    }

    #[tokio::test]
    async fn a_client_flooding_before_the_first_frame_keeps_pingoras_stream() {
        use tokio::io::AsyncWriteExt;
        let (server, mut client) = testing::tcp_pair().await;
        client.write_all(&[b'x'; 3000]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut preread = Vec::new();
        let socket = Socket::detach(server, &mut preread, 1024).await;
        assert!(!socket.is_detached(), "what it read is kept with the stream it came from");
    }

    #[test]
    fn caps_count_addresses_and_users_but_not_service_tokens() {
        let caps = Caps { per_ip: InFlight::new(2, 100), per_user: InFlight::new(1, 100) };
        let user = Caller::new(Some(r#"{"sub":"u1","role":"baas_user","sid":"s"}"#.into()), "1.1.1.1".into(), "1.1.1.1".into());
        let anon = Caller::new(None, "1.1.1.1".into(), "1.1.1.1".into());
        let a = caps.admit(&user).unwrap();
        let e = caps.admit(&user).err().unwrap();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::TOO_MANY_REQUESTS, "too_many_connections"));
        let b = caps.admit(&anon).unwrap();
        assert!(caps.admit(&anon).is_err(), "two feeds from this address are open");
        let service = Caller::new(Some(r#"{"sub":"t","role":"baas_service","sid":"s"}"#.into()), "1.1.1.1".into(), "1.1.1.1".into());
        assert!(caps.admit(&service).is_ok());
        drop((a, b));
        assert!(caps.admit(&user).is_ok(), "closed feeds give their places back");
    }
}

/// A real `App` around a test `Feeds` (its pools never connect), and a connected pair of
/// local TCP sockets: for the transports' loops, tested in ws.rs and sse.rs.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::realtime::{Feeds, Subscribe};
    use crate::server::App;
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// Answers each subscribe by pushing its script of frames (the hub's part), in order.
    #[derive(Default)]
    pub struct Scripted {
        pub scripts: Mutex<Vec<Vec<Frame>>>,
        pub disconnected: AtomicBool,
    }

    #[async_trait]
    impl Feeds for Scripted {
        async fn subscribe(&self, conn: &Arc<Conn>, _req: Subscribe) -> Result<(), ApiError> {
            let script = self.scripts.lock().unwrap().remove(0);
            for f in script {
                conn.outbox.push(f, false);
            }
            Ok(())
        }
        fn unsubscribe(&self, _conn: &Arc<Conn>, _sub: &str) -> bool {
            true
        }
        fn disconnect(&self, _conn: &Arc<Conn>) {
            self.disconnected.store(true, Ordering::SeqCst);
        }
    }

    impl Scripted {
        pub fn disconnected(&self) -> bool {
            self.disconnected.load(Ordering::SeqCst)
        }
    }

    /// A hub message with a position.
    pub fn event(kind: &'static str, sub: &str, position: u64, pad: usize) -> Frame {
        let v = json!({"type": kind, "sub": sub, "position": position.to_string(), "pad": "x".repeat(pad)});
        Frame { kind, sub: Some(Arc::from(sub)), position: Some(position), json: Bytes::from(v.to_string()) }
    }

    pub fn app(feeds: Arc<dyn Feeds>) -> Arc<App> {
        app_with(feeds, &[])
    }

    /// The same with settings, e.g. `["--realtime-keepalive-secs", "1"]`.
    pub fn app_with(feeds: Arc<dyn Feeds>, args: &[&str]) -> Arc<App> {
        let url = "postgres://baas_authenticator@127.0.0.1:1/none";
        let cfg = crate::config::Config::load_from(["pgbaas-proxy", "--database-url", url].iter().chain(args)).unwrap();
        let keys = crate::jwt::KeySet::from_json(&json!({"keys": []}), &json!({"issuer": "i", "audience": "a"})).unwrap();
        Arc::new(App {
            timeouts: crate::db::Timeouts { statement: "1s".into(), anon_statement: "1s".into(), answer: Duration::from_secs(1) },
            pool: crate::db::make_pool(url, Duration::from_secs(1)).unwrap(),
            requests: crate::db::make_request_pool(url, 1, Duration::from_secs(1), 1 << 20).unwrap(),
            keys: Arc::new(KeyCache::new(keys, Duration::from_secs(3600))),
            limiter: crate::ratelimit::Limiter::new(cfg.limits()),
            in_flight: cfg.in_flight_caps(),
            health: crate::server::HealthCheck::new(Duration::from_secs(1)),
            realtime_caps: cfg.realtime_caps(),
            transfers: cfg.transfers(),
            thumbs: cfg.thumbs(),
            oidc: crate::oidc::JwksFetcher::new(crate::db::make_pool(url, Duration::from_secs(1)).unwrap(), cfg.oidc()),
            edge: crate::edge::Edge::new(&cfg), // (issue 19, edge)
            feeds,
            // (issue 19, replicas) none.
            replicas: Arc::new(crate::replicas::Replicas::new(&[], 1, Duration::from_secs(1), 1 << 20, Duration::ZERO, 0, Duration::from_secs(5)).unwrap()),
            parse: None,
            cfg,
        })
    }

    /// (the server's end as pingora hands it over, the client's end)
    pub async fn tcp_pair() -> (pingora::protocols::Stream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (Box::new(pingora::protocols::l4::stream::Stream::from(server)), client)
    }

    /// The same as the transports run on it once detached from pingora.
    pub async fn socket_pair() -> (Socket, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (Socket::tcp(server), client)
    }
}
