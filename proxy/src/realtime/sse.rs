//! `GET /v1/collections/{c}/events`: one live change feed as Server-Sent Events
//! (docs/realtime-protocol.md). server.rs subscribes first (an error is the usual JSON
//! 4xx, before any byte of the stream) and writes the `200 text/event-stream` head
//! through pingora; then the raw connection is written here: `retry:` first, each
//! message as an `event:`/`id:`/`data:` block, `: keepalive` when idle. The response is
//! close-delimited and the connection never serves another request.

use super::transport::{self, After, Positions, Socket, Watch};
use super::{CloseReason, Conn, Frame, Subscribe};
use crate::errors::ApiError;
use crate::routes::input;
use crate::server::App;
use bytes::{BufMut, Bytes, BytesMut};
use pingora::server::ShutdownWatch;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// The subscription's name on an SSE stream (one per stream).
pub const SUB: &str = "events";

/// What the client is told to wait before reconnecting, in ms (the first line sent).
const RETRY_MS: u32 = 2000;

/// The subscription a request asks for, and the token from `?access_token=`.
/// `last_event_id`: the `Last-Event-ID` header, which a browser's EventSource sends on
/// reconnecting; it wins over `?last_event_id=` and over `snapshot=true` in the URL
/// (which stay as they were on the first connection).
pub fn params(collection: String, query: Option<&str>, last_event_id: Option<&str>) -> Result<(Subscribe, Option<String>), ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let mut s = Subscribe { sub: SUB.to_string(), collection, filter: serde_json::json!({}), fields: None, watch: None, snapshot: false, resume: None };
    let mut token = None;
    for (k, v) in input::pairs(query, &["where", "fields", "snapshot", "last_event_id", "access_token"])? {
        match k.as_ref() {
            "where" => s.filter = input::parse_where(&v)?,
            "fields" => s.fields = Some(input::parse_fields(&v)),
            "snapshot" => {
                s.snapshot = match v.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    _ => return Err(bad(format!("snapshot must be true or false, got {v:?}"))),
                }
            }
            "last_event_id" => s.resume = Some(position(&v)?),
            _ /* access_token */ => token = Some(v.into_owned()),
        }
    }
    if s.snapshot && s.resume.is_some() && last_event_id.is_none() {
        return Err(bad("send snapshot=true or last_event_id, not both: a resumed stream continues where it was".into()));
    }
    if let Some(id) = last_event_id {
        s.resume = Some(position(id.trim())?);
        s.snapshot = false;
    }
    Ok((s, token))
}

fn position(v: &str) -> Result<u64, ApiError> {
    super::ws::parse_position(v).ok_or_else(|| {
        ApiError::bad_request("invalid_request", format!("Last-Event-ID must be a position the stream sent (decimal digits), got {v:?}"))
    })
}

/// One message as an SSE block: `event: <type>`, `id: <position>` if it has one, the
/// JSON as `data:` (one line per line, though our JSON has none), and a blank line.
pub fn block(f: &Frame) -> Bytes {
    let mut b = BytesMut::with_capacity(f.json.len() + 48);
    b.put_slice(b"event: ");
    b.put_slice(f.kind.as_bytes());
    b.put_u8(b'\n');
    if let Some(p) = f.position {
        b.put_slice(format!("id: {p}\n").as_bytes());
    }
    for line in f.json.split(|c| *c == b'\n') {
        b.put_slice(b"data: ");
        b.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
        b.put_u8(b'\n');
    }
    b.put_u8(b'\n');
    b.freeze()
}

pub struct Sse {
    pub app: Arc<App>,
    pub conn: Arc<Conn>,
    pub slots: transport::Slots,
    pub shutdown: ShutdownWatch,
}

impl Sse {
    /// The stream's life after the response head; ends the subscription at the end.
    pub async fn run(self, mut stream: Socket) {
        let watch = Watch::new(self.app.keys.clone(), self.shutdown.clone(), &self.conn.caller());
        if let Err(e) = self.serve(&mut stream, watch).await {
            log::debug!("realtime: SSE stream ended: {e}");
        }
        self.app.feeds.disconnect(&self.conn);
        let _ = tokio::time::timeout(self.app.cfg.body_timeout, stream.shutdown()).await;
    }

    async fn serve(&self, stream: &mut Socket, mut watch: Watch) -> std::io::Result<()> {
        let every = self.app.cfg.realtime_keepalive;
        let mut keepalive = tokio::time::interval_at(Instant::now() + every, every);
        let mut positions = Positions::default();
        self.write(stream, format!("retry: {RETRY_MS}\n\n").as_bytes()).await?;
        let mut scratch = [0u8; 512];
        loop {
            let frames = self.conn.outbox.drain();
            if !frames.is_empty() {
                match self.send(stream, &frames, &mut positions, Some(&mut watch)).await? {
                    Sent::All => {}
                    Sent::Ended => return Ok(()),
                    Sent::Cut(r) => return self.closing(stream, &positions, r).await,
                }
                keepalive.reset();
            }
            if let After::Close(r) = transport::hub_verdict(&self.conn) {
                return self.closing(stream, &positions, r).await;
            }
            enum Event {
                End(CloseReason),
                Queued,
                Read(std::io::Result<usize>),
                Keepalive,
            }
            // Biased: the end of the credentials or of the server is seen first.
            let event = tokio::select! {
                biased;
                r = watch.reason() => Event::End(r),
                _ = self.conn.outbox.wait() => Event::Queued,
                // The client sends nothing after its request: a read ends when it goes.
                n = stream.read(&mut scratch) => Event::Read(n),
                _ = keepalive.tick() => Event::Keepalive,
            };
            match event {
                Event::End(r) => {
                    // Whatever the hub queued before goes out first, then `closing`.
                    let frames = self.conn.outbox.drain();
                    return match self.send(stream, &frames, &mut positions, None).await? {
                        Sent::Ended => Ok(()),
                        Sent::All => self.closing(stream, &positions, r).await,
                        Sent::Cut(cut) => self.closing(stream, &positions, cut).await,
                    };
                }
                Event::Queued => {}
                Event::Read(Ok(0)) | Event::Read(Err(_)) => return Ok(()),
                Event::Read(Ok(_)) => {}
                Event::Keepalive => self.write(stream, b": keepalive\n\n").await?,
            }
        }
    }

    /// Write `frames` as blocks, in order, each recorded in `positions` once all of it
    /// was written. A block is never cut: when the socket blocks while the stream must
    /// end (the outbox overflowed, the hub closed it, `watch` fired) the block being
    /// written is finished and the rest dropped (`Cut`), so that `closing` follows
    /// whole blocks and names exactly what the client was sent. Err: the socket failed,
    /// or took more than `body_timeout` for the batch (a block may be torn: no `closing`).
    async fn send(&self, stream: &mut Socket, frames: &[Frame], positions: &mut Positions, mut watch: Option<&mut Watch>) -> std::io::Result<Sent> {
        let deadline = Instant::now() + self.app.cfg.body_timeout;
        let late = || std::io::Error::new(std::io::ErrorKind::TimedOut, "client did not read in time");
        let conn = &self.conn;
        for f in frames {
            let b = block(f);
            let write = async {
                stream.write_all(&b).await?;
                stream.flush().await
            };
            tokio::pin!(write);
            let stop = transport::must_end(conn, watch.as_deref_mut());
            let cut = tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, &mut write) => {
                    r.map_err(|_| late())??;
                    None
                }
                r = stop => Some(r),
            };
            if let Some(r) = cut {
                // The stream ends now: the client gets body_timeout from here to read
                // the block in progress and `closing`.
                tokio::time::timeout(self.app.cfg.body_timeout, write).await.map_err(|_| late())??;
                positions.wrote(f);
                return Ok(Sent::Cut(r));
            }
            positions.wrote(f);
            // The stream's one subscription ended (its feed was switched off, its
            // collection dropped): the stream ends with it.
            if f.kind == "error" || f.kind == "unsubscribed" {
                return Ok(Sent::Ended);
            }
        }
        Ok(Sent::All)
    }

    async fn write(&self, stream: &mut Socket, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let write = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        tokio::time::timeout(self.app.cfg.body_timeout, write)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "client did not read in time")))
    }

    async fn closing(&self, stream: &mut Socket, positions: &Positions, reason: CloseReason) -> std::io::Result<()> {
        self.write(stream, &block(&positions.closing(reason))).await?;
        if reason == CloseReason::Shutdown {
            // The server is restarting (issue 19): reconnect (to another one) at once.
            self.write(stream, b"event: reconnect\ndata: {}\n\n").await?;
        }
        Ok(())
    }
}

/// How a batch of frames was written (`Sse::send`).
enum Sent {
    All,
    /// The stream's subscription ended with one of them (error, unsubscribed).
    Ended,
    /// The stream must end for this reason; the rest of the batch was dropped.
    Cut(CloseReason),
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn blocks_carry_the_type_the_position_and_the_json() {
        let f = Frame { kind: "insert", sub: Some(Arc::from(SUB)), position: Some(42), json: Bytes::from_static(br#"{"type":"insert"}"#) };
        assert_eq!(&block(&f)[..], b"event: insert\nid: 42\ndata: {\"type\":\"insert\"}\n\n");
        let f = Frame { kind: "snapshot", sub: None, position: None, json: Bytes::from_static(b"{\n\"a\": 1}") };
        assert_eq!(&block(&f)[..], b"event: snapshot\ndata: {\ndata: \"a\": 1}\n\n", "no id without a position; a line per line");
    }

    #[test]
    fn query_and_last_event_id() {
        let (s, t) = params("todos".into(), Some("where=%7B%22done%22%3Afalse%7D&fields=a,b&snapshot=true&access_token=x.y.z"), None).unwrap();
        assert_eq!((s.sub.as_str(), s.collection.as_str(), s.snapshot, s.resume), (SUB, "todos", true, None));
        assert_eq!((s.filter, s.fields, t.as_deref()), (serde_json::json!({"done": false}), Some(vec!["a".into(), "b".into()]), Some("x.y.z")));
        let (s, _) = params("c".into(), Some("last_event_id=17"), None).unwrap();
        assert_eq!(s.resume, Some(17));
        // A browser reconnecting sends Last-Event-ID; the URL still asks for a snapshot.
        let (s, _) = params("c".into(), Some("snapshot=true&last_event_id=3"), Some("99")).unwrap();
        assert_eq!((s.resume, s.snapshot), (Some(99), false));
        let e = params("c".into(), Some("snapshot=true&last_event_id=3"), None).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_query"));
        for id in ["abc", "-1", "1.0", ""] {
            let e = params("c".into(), None, Some(id)).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_request"), "{id:?}");
        }
        assert_eq!(params("c".into(), Some("last_event_id=x"), None).unwrap_err().code, "invalid_request");
        for q in ["order=a", "where={", "snapshot=yes", "fields=a&fields=b"] {
            assert_eq!(params("c".into(), Some(q), None).unwrap_err().code, "invalid_query", "{q}");
        }
    }

    /// The stream over a real socket: the hub's frames in order with their ids, then,
    /// once the outbox overflowed, `closing` with the last position written, and the end.
    #[tokio::test]
    async fn a_slow_consumer_gets_closing_with_the_positions_it_received() {
        use super::transport::testing::{self, event};
        let feeds = Arc::new(testing::Scripted::default());
        let app = testing::app(feeds.clone());
        let (server, mut client) = testing::socket_pair().await;
        let conn = Conn::new(super::super::Caller::default(), 400);
        assert!(conn.outbox.push(event("subscribed", SUB, 5, 0), false));
        assert!(conn.outbox.push(event("insert", SUB, 6, 10), false));
        assert!(!conn.outbox.push(event("insert", SUB, 7, 400), false), "over the bound");
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(Sse { app, conn, slots: Default::default(), shutdown }.run(server));
        let mut out = String::new();
        tokio::time::timeout(std::time::Duration::from_secs(20), client.read_to_string(&mut out)).await.unwrap().unwrap();
        let blocks: Vec<&str> = out.split("\n\n").filter(|b| !b.is_empty()).collect();
        assert_eq!(blocks[0], "retry: 2000");
        assert!(blocks[1].starts_with("event: subscribed\nid: 5\ndata: {"), "{out}");
        assert!(blocks[2].starts_with("event: insert\nid: 6\ndata: {"), "{out}");
        let closing = blocks[3].strip_prefix("event: closing\ndata: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(closing).unwrap();
        assert_eq!(v, serde_json::json!({"type": "closing", "reason": "slow_consumer", "positions": {"events": "6"}}));
        assert_eq!(blocks.len(), 4, "then the stream ends: {out}");
        assert!(feeds.disconnected(), "the hub is told");
    }

    async fn read_block(c: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> String {
        let mut b = String::new();
        loop {
            let mut line = String::new();
            tokio::io::AsyncBufReadExt::read_line(c, &mut line).await.unwrap();
            if line.is_empty() || line == "\n" {
                return b;
            }
            b.push_str(&line);
        }
    }

    /// Frames pushed while the stream waits are written at once; the hub's close
    /// reason ends it with `closing`; a feed that ends with an error ends the stream.
    #[tokio::test]
    async fn frames_are_written_as_pushed_and_the_hubs_close_ends_the_stream() {
        use super::transport::testing::{self, event};
        let feeds = Arc::new(testing::Scripted::default());
        let app = testing::app(feeds.clone());
        let (server, client) = testing::socket_pair().await;
        let conn = Conn::new(super::super::Caller::default(), 1 << 20);
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(Sse { app: app.clone(), conn: conn.clone(), slots: Default::default(), shutdown }.run(server));
        let mut client = tokio::io::BufReader::new(client);
        assert_eq!(read_block(&mut client).await, "retry: 2000\n");
        conn.outbox.push(event("insert", SUB, 9, 0), false);
        assert!(read_block(&mut client).await.starts_with("event: insert\nid: 9\n"));
        conn.outbox.close(CloseReason::SessionEnded);
        let b = read_block(&mut client).await;
        assert!(b.contains(r#""reason":"session_ended""#) && b.contains(r#""positions":{"events":"9"}"#), "{b}");
        assert_eq!(read_block(&mut client).await, "", "the stream ended");

        let (server, mut client) = testing::socket_pair().await;
        let conn = Conn::new(super::super::Caller::default(), 1 << 20);
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let err = transport::error(Some(SUB), &ApiError::new(http::StatusCode::FORBIDDEN, "feed_disabled", "off"));
        conn.outbox.push(err, false);
        tokio::spawn(Sse { app, conn, slots: Default::default(), shutdown }.run(server));
        let mut out = String::new();
        tokio::time::timeout(std::time::Duration::from_secs(20), client.read_to_string(&mut out)).await.unwrap().unwrap();
        assert!(out.ends_with("\n\n") && out.contains("event: error\n") && !out.contains("closing"), "{out}");
    }

    /// An idle stream gets `: keepalive` comments; server shutdown ends it with `closing`
    /// shutdown, its token's `exp` with token_expired, its session's end with
    /// session_ended.
    #[tokio::test]
    async fn keepalives_token_expiry_and_shutdown() {
        use super::transport::testing;
        let feeds = Arc::new(testing::Scripted::default());
        let app = testing::app_with(feeds.clone(), &["--realtime-keepalive-secs", "1"]);
        let (server, client) = testing::socket_pair().await;
        let conn = Conn::new(super::super::Caller::default(), 1 << 20);
        let (tx, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(Sse { app: app.clone(), conn, slots: Default::default(), shutdown }.run(server));
        let mut client = tokio::io::BufReader::new(client);
        assert_eq!(read_block(&mut client).await, "retry: 2000\n");
        assert_eq!(read_block(&mut client).await, ": keepalive\n");
        tx.send(true).unwrap();
        let b = read_block(&mut client).await;
        assert!(b.starts_with("event: closing\n") && b.contains(r#""reason":"shutdown""#), "{b}");
        assert_eq!(read_block(&mut client).await, "event: reconnect\ndata: {}\n", "a restart says reconnect (issue 19)");
        assert_eq!(read_block(&mut client).await, "", "the stream ended");

        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims = format!(r#"{{"sub":"u1","role":"baas_user","sid":"s1","exp":{}}}"#, now + 1);
        let caller = super::super::Caller::new(Some(claims), "127.0.0.1".into(), "127.0.0.1".into());
        let (server, client) = testing::socket_pair().await;
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(Sse { app: app.clone(), conn: Conn::new(caller, 1 << 20), slots: Default::default(), shutdown }.run(server));
        let mut client = tokio::io::BufReader::new(client);
        let mut b = read_block(&mut client).await;
        while b.starts_with("retry") || b.starts_with(": keepalive") {
            b = read_block(&mut client).await;
        }
        assert!(b.starts_with("event: closing\n") && b.contains(r#""reason":"token_expired""#), "{b}");
        let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(after >= now + 1, "not before exp");

        // Its session ends (keys.rs hears baas_sessions): closing session_ended.
        let claims = format!(r#"{{"sub":"u1","role":"baas_user","sid":"s2","exp":{}}}"#, now + 3600);
        let caller = super::super::Caller::new(Some(claims), "127.0.0.1".into(), "127.0.0.1".into());
        let (server, client) = testing::socket_pair().await;
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(Sse { app: app.clone(), conn: Conn::new(caller, 1 << 20), slots: Default::default(), shutdown }.run(server));
        let mut client = tokio::io::BufReader::new(client);
        assert_eq!(read_block(&mut client).await, "retry: 2000\n");
        app.keys.session_ended("another");
        app.keys.session_ended("s2");
        let mut b = read_block(&mut client).await;
        while b.starts_with(": keepalive") {
            b = read_block(&mut client).await;
        }
        assert!(b.starts_with("event: closing\n") && b.contains(r#""reason":"session_ended""#), "{b}");
    }

    /// A client that stops reading for longer than body_timeout, whose outbox then
    /// overflows, still gets `closing` when it reads again (within body_timeout of the
    /// overflow), after whole blocks, naming the last id it was sent. (It used to be
    /// dropped when the blocked write timed out: no resume position.)
    #[tokio::test]
    async fn a_stalled_client_reads_closing_with_the_last_id_it_was_sent() {
        use super::transport::testing::{self, event};
        let feeds = Arc::new(testing::Scripted::default());
        // Timeline (s): 0 the writes block; 3 the outbox overflows; 6 the blocked write's
        // timeout; 7.5 the client reads; 9 the end of the last write's timeout.
        let app = testing::app_with(feeds, &["--body-timeout-secs", "6"]);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket.connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let server = Socket::tcp(server);
        let conn = Conn::new(super::super::Caller::default(), 1 << 20);
        for p in 1..=256 {
            assert!(conn.outbox.push(event("insert", SUB, p, 64 * 1024), true));
        }
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(Sse { app, conn: conn.clone(), slots: Default::default(), shutdown }.run(server));
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        // Forced (snapshot) bytes do not count against the bound: live frames queued
        // behind the blocked write do, until one no longer fits.
        assert!((257..400).any(|p| !conn.outbox.push(event("insert", SUB, p, 64 * 1024), false)), "over the bound");
        tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
        let mut out = String::new();
        tokio::time::timeout(std::time::Duration::from_secs(20), client.read_to_string(&mut out)).await.unwrap().unwrap();
        let blocks: Vec<&str> = out.split("\n\n").filter(|b| !b.is_empty()).collect();
        assert_eq!(blocks[0], "retry: 2000");
        let mut last = 0;
        for b in &blocks[1..blocks.len() - 1] {
            let id: u64 = b.strip_prefix("event: insert\nid: ").and_then(|r| r.split('\n').next()).and_then(|i| i.parse().ok()).expect("a whole insert block");
            assert_eq!(id, last + 1, "in order, none skipped");
            last = id;
        }
        assert!(last > 0 && last < 256, "some were sent, not all: {last}");
        let closing = blocks.last().unwrap().strip_prefix("event: closing\ndata: ").expect("closing last");
        let v: serde_json::Value = serde_json::from_str(closing).unwrap();
        assert_eq!(v, serde_json::json!({"type": "closing", "reason": "slow_consumer", "positions": {"events": last.to_string()}}));
    }
}
