//! A deadline for the request head: from its first byte to its blank line, at most
//! `header_timeout`. pingora only times out a read that waits 60 s for *any* byte, so
//! a client dribbling a header line every few seconds (slow-loris) would hold its
//! connection for as long as it liked. This wraps each accepted connection: while a
//! request head is being read, reads past the deadline fail and pingora closes the
//! connection. The clock starts at the first byte of each request (idle keep-alive time
//! is pingora's own timeout) and stops at the end of the head; the body has the app's
//! `body_timeout`.

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest};
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use pingora::server::ShutdownWatch;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The app that wraps every connection before the HTTP server sees it.
pub struct HeadDeadline<A> {
    pub inner: Arc<A>,
    pub limit: Duration,
    /// Open connections per client address (issue 19, edge); None: no cap.
    pub conns: Option<Arc<crate::edge::ConnCap>>,
    /// TLS on this listener (issue 19, edge; tls.rs); None: plain HTTP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeadDeadline<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // The cap on open connections per address (issue 19, edge): the slot lives in
        // the stream, so a live feed detached from pingora keeps holding it.
        let mut slot = None;
        let mut stream = stream;
        let mut h2 = false;
        if let Some(cap) = &self.conns {
            let peer = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
            // Trusted proxies (a balancer's health checks) are not capped (issue 19, edge).
            if let Some(ip) = peer.filter(|ip| !cap.exempt(*ip)) {
                match cap.acquire(ip) {
                    Some(s) => slot = Some(s),
                    None => {
                        // Over TLS the 429 goes inside it (issue 19, edge).
                        if let Some(tls) = &self.tls {
                            stream = Box::new(crate::tls::accept(tls, stream, self.limit).await?);
                        }
                        cap.refuse(stream, self.limit).await;
                        return None;
                    }
                }
            }
        }
        // TLS (issue 19, edge): the handshake within the head's deadline; pingora then
        // reads the ALPN from the stream and speaks HTTP/2 when it is h2.
        if let Some(tls) = &self.tls {
            let conn = crate::tls::accept(tls, stream, self.limit).await?;
            h2 = conn.is_h2();
            stream = Box::new(conn);
        }
        let mut wrapped = DeadlineStream::new(stream, self.limit);
        if h2 {
            // HTTP/2 frames are no HTTP/1 heads: no scanning for a blank line.
            wrapped.in_head = false;
            wrapped.upgraded = true;
        }
        wrapped.slot = slot;
        let wrapped: Stream = Box::new(wrapped);
        self.inner.process_new(wrapped, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

pub struct DeadlineStream {
    inner: Stream,
    limit: Duration,
    /// Armed from a request head's first byte until its end.
    deadline: Option<Pin<Box<Sleep>>>,
    in_head: bool,
    /// Whether the head's request line has begun: empty lines before it are skipped,
    /// as the HTTP parser skips them (so they cannot end a head).
    line_started: bool,
    /// 0: inside a line; 1: just after LF; 2: after LF, CR. A head ends with LF (CR) LF.
    state: u8,
    /// A `101 Switching Protocols` went out: the bytes are WebSocket frames from now on,
    /// never a request head (realtime/ws.rs has its own timeouts).
    upgraded: bool,
    /// This connection's place under `max_connections_per_ip` (issue 19, edge).
    pub(crate) slot: Option<crate::edge::ConnSlot>,
}

impl DeadlineStream {
    pub fn new(inner: Stream, limit: Duration) -> DeadlineStream {
        DeadlineStream { inner, limit, deadline: None, in_head: true, line_started: false, state: 0, upgraded: false, slot: None }
    }

    /// Feed newly read bytes: arm the clock at a head's first byte (blank lines
    /// included), disarm at its end. A head that arrives whole in one read (nearly
    /// every request) never arms it, so it costs no timer.
    fn saw(&mut self, bytes: &[u8]) {
        if !self.in_head || bytes.is_empty() {
            return;
        }
        for &b in bytes {
            if !self.line_started {
                if b == b'\r' || b == b'\n' {
                    continue;
                }
                self.line_started = true;
            }
            self.state = match (self.state, b) {
                (1 | 2, b'\n') => {
                    self.in_head = false;
                    self.deadline = None;
                    return;
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        // The head goes on past these bytes: it has `limit` from its first byte.
        if self.deadline.is_none() {
            self.deadline = Some(Box::pin(tokio::time::sleep_until(Instant::now() + self.limit)));
        }
    }

    /// A response went out: the next bytes read are a new request's head. (A body left
    /// unread is never taken for one: server.rs only reads it on to discard it, with
    /// its own bounds, and then closes the connection. Should header_timeout be the
    /// shorter bound, it merely ends that lingering read sooner.)
    fn next_request(&mut self) {
        if self.upgraded {
            return;
        }
        self.in_head = true;
        self.line_started = false;
        self.state = 0;
        self.deadline = None;
    }
}

impl std::fmt::Debug for DeadlineStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineStream").field("inner", &self.inner).field("in_head", &self.in_head).finish()
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")));
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

use std::future::Future;

impl AsyncWrite for DeadlineStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                // pingora writes a response head in one piece, status line first.
                if data.starts_with(b"HTTP/1.1 101 ") {
                    self.in_head = false;
                    self.deadline = None;
                    self.upgraded = true;
                }
                self.next_request();
            }
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for DeadlineStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for DeadlineStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for DeadlineStream {
    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for DeadlineStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for DeadlineStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for DeadlineStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for DeadlineStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn stream() -> DeadlineStream {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        DeadlineStream::new(Box::new(pingora::protocols::l4::stream::Stream::from(tcp)), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn the_head_end_is_found_across_reads() {
        let mut d = stream().await;
        for b in b"GET / HTTP/1.1\r\nHost: x\r\n\r" {
            d.saw(&[*b]);
            assert!(d.in_head && d.deadline.is_some());
        }
        d.saw(b"\n");
        assert!(!d.in_head && d.deadline.is_none(), "end of head found across reads");
        d.saw(b"body\r\n\r\nmore");
        assert!(d.deadline.is_none(), "body bytes never re-arm the clock");
        d.next_request();
        d.saw(b"GET / HTTP/1.1\nHost: x\n\n");
        assert!(!d.in_head, "bare LF line ends are heads too");
    }

    /// After a 101 the bytes are WebSocket frames: no head deadline, ever again.
    #[tokio::test]
    async fn an_upgraded_connection_has_no_head_deadline() {
        use tokio::io::AsyncWriteExt;
        let (server, _client) = crate::realtime::transport::testing::tcp_pair().await;
        let mut d = DeadlineStream::new(server, Duration::from_secs(5));
        d.saw(b"GET /v1/realtime HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        d.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").await.unwrap();
        d.saw(b"\x81\x85frame bytes without a blank line");
        assert!(!d.in_head && d.deadline.is_none());
        d.write_all(b"\x81\x05hello").await.unwrap();
        d.saw(b"\x81\x85more");
        assert!(d.deadline.is_none(), "writes after the upgrade start no new head");
    }

    #[tokio::test]
    async fn blank_lines_before_the_request_line_do_not_end_a_head() {
        let mut d = stream().await;
        d.saw(b"\r\n\r\n\n\n\r\n");
        assert!(d.in_head && d.deadline.is_some(), "leading empty lines start the clock but end nothing");
        d.saw(b"GET / HTTP/1.1\r\nX-a: b\r\n");
        assert!(d.in_head);
        d.saw(b"\r\n");
        assert!(!d.in_head);
    }
}
