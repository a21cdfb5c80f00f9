//! Test clients for live change feeds (docs/api.md, "Live change feeds"): a WebSocket
//! client for `/v1/realtime` and a Server-Sent Events client for
//! `/v1/collections/{c}/events`. Synchronous, like the rest of the kit: each read takes
//! a timeout and returns None when nothing arrived in time, so a test can assert both
//! "this arrives" and "nothing else does".
//!
//! WebSocket framing is the `tungstenite` crate over a std TcpStream. SSE is parsed here
//! over a raw socket: it is a few lines of text framing, and a raw socket lets the tests
//! see the exact status, headers and frames the proxy sends (a client library would hide
//! reconnects and `Last-Event-ID` handling, which are what the tests are about).

use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// A WebSocket connection to `/v1/realtime`.
pub struct Ws {
    ws: WebSocket<TcpStream>,
    /// Set once the server closed the connection (or it broke).
    pub closed: bool,
}

impl Ws {
    /// Connect to the proxy on `port`, with `token` as `Authorization: Bearer` (None:
    /// anonymous). Err((status, body)) when the upgrade is refused.
    pub fn connect(port: u16, token: Option<&str>) -> Result<Ws, (u16, String)> {
        Self::connect_path(port, "/v1/realtime", token)
    }

    /// Connect to `path` (e.g. with `?access_token=`).
    pub fn connect_path(port: u16, path: &str, token: Option<&str>) -> Result<Ws, (u16, String)> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| (0, format!("connect: {e}")))?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(Duration::from_secs(20))).ok();
        let mut req = format!("ws://127.0.0.1:{port}{path}").into_client_request().map_err(|e| (0, e.to_string()))?;
        if let Some(t) = token {
            let v = format!("Bearer {t}").parse().map_err(|_| (0, "token is not a header value".to_string()))?;
            req.headers_mut().insert("Authorization", v);
        }
        match tungstenite::client(req, stream) {
            Ok((ws, _resp)) => Ok(Ws { ws, closed: false }),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                let body = resp.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                Err((resp.status().as_u16(), body))
            }
            Err(e) => Err((0, format!("handshake: {e}"))),
        }
    }

    /// A client again from a socket taken with `into_stream`.
    pub fn from_socket(ws: WebSocket<TcpStream>) -> Ws {
        Ws { ws, closed: false }
    }

    /// Send one JSON message.
    pub fn send(&mut self, msg: &Value) {
        self.ws.send(Message::text(msg.to_string())).expect("send a WebSocket message");
    }

    /// The next JSON message within `timeout`; None if none arrived (or the connection
    /// is closed: see `closed`). Pings are answered by tungstenite and skipped.
    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        if self.closed {
            return None;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.ws.get_mut().set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok();
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("server sent non-JSON {t:?}: {e}")))
                }
                Ok(Message::Binary(b)) => panic!("server sent a binary message ({} bytes)", b.len()),
                Ok(Message::Close(_)) => {
                    // Let tungstenite finish the closing handshake; then the next read ends.
                    continue;
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(_) => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    /// Messages until one of `kind` arrives (returned with those skipped), or None.
    pub fn until(&mut self, kind: &str, timeout: Duration) -> (Option<Value>, Vec<Value>) {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        while let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
            if m["type"] == kind {
                return (Some(m), skipped);
            }
            skipped.push(m);
        }
        (None, skipped)
    }

    /// The next message, which must be of type `kind`.
    pub fn expect(&mut self, kind: &str, timeout: Duration) -> Value {
        match self.next(timeout) {
            Some(m) if m["type"] == kind => m,
            Some(m) => panic!("expected a {kind} message, got {m}"),
            None => panic!("expected a {kind} message, got nothing in {timeout:?} (closed: {})", self.closed),
        }
    }

    /// Send `subscribe` (with `extra` keys merged in: where, fields, snapshot, resume) and
    /// wait for its answer. Ok((snapshot documents, position of `subscribed`)), or
    /// Err(the `error` message).
    pub fn subscribe(&mut self, sub: &str, collection: &str, extra: Value) -> Result<(Vec<Value>, u64), Value> {
        let mut m = json!({"type": "subscribe", "sub": sub, "collection": collection});
        if let Value::Object(o) = extra {
            for (k, v) in o {
                m[k] = v;
            }
        }
        self.send(&m);
        let mut snapshot = Vec::new();
        loop {
            let m = self.next(Duration::from_secs(20)).unwrap_or_else(|| panic!("no answer to {sub}'s subscribe"));
            match m["type"].as_str() {
                Some("snapshot") if m["sub"] == sub => snapshot.push(m["document"].clone()),
                Some("subscribed") if m["sub"] == sub => return Ok((snapshot, position(&m))),
                Some("error") if m["sub"] == sub || m.get("sub").is_none() => return Err(m),
                _ => panic!("unexpected message while subscribing {sub}: {m}"),
            }
        }
    }

    /// Close from the client side (a clean WebSocket close).
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }

    /// Stop reading for good without closing: the socket stays open, unread (a stalled
    /// client). Returns the raw stream so the caller keeps it alive.
    pub fn into_stream(self) -> WebSocket<TcpStream> {
        self.ws
    }
}

/// A message's `position` (a decimal string) as a number; 0 if it has none.
pub fn position(m: &Value) -> u64 {
    m["position"].as_str().and_then(|p| p.parse().ok()).unwrap_or(0)
}

/// One Server-Sent Events frame.
#[derive(Clone, Debug, Default)]
pub struct SseFrame {
    pub event: String,
    pub id: Option<String>,
    /// The `data:` lines joined by newlines.
    pub data: String,
}

impl SseFrame {
    /// The data as JSON (every pgbaas frame carries one JSON object).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", self.data))
    }
}

/// One SSE stream (`GET /v1/collections/{c}/events`).
pub struct Sse {
    stream: TcpStream,
    chunked: bool,
    /// Bytes read but not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked body text not yet parsed into frames.
    text: Vec<u8>,
    /// The status line and headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The server ended the stream (or it broke).
    pub ended: bool,
    /// `retry:` values and comment lines seen (e.g. keepalives), for tests that look.
    pub comments: Vec<String>,
}

impl Sse {
    /// Open a stream on `collection` with `query` (already URL-encoded, without `?`;
    /// "" for none), `token` as `Authorization: Bearer`, and `last_event_id` as the
    /// `Last-Event-ID` header. Err((status, body)) when the answer is not a 200 stream.
    pub fn open(port: u16, collection: &str, query: &str, token: Option<&str>, last_event_id: Option<&str>) -> Result<Sse, (u16, String)> {
        let path = if query.is_empty() {
            format!("/v1/collections/{collection}/events")
        } else {
            format!("/v1/collections/{collection}/events?{query}")
        };
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| (0, format!("connect: {e}")))?;
        stream.set_nodelay(true).ok();
        stream.write_all(req.as_bytes()).map_err(|e| (0, format!("write: {e}")))?;
        let mut s = Sse { stream, chunked: false, raw: Vec::new(), text: Vec::new(), headers: Vec::new(), ended: false, comments: Vec::new() };
        // The head.
        let deadline = Instant::now() + Duration::from_secs(20);
        let head_end = loop {
            if let Some(i) = find(&s.raw, b"\r\n\r\n") {
                break i;
            }
            if !s.fill(deadline) {
                return Err((0, format!("no response head: {:?}", String::from_utf8_lossy(&s.raw))));
            }
        };
        let head = String::from_utf8_lossy(&s.raw[..head_end]).into_owned();
        s.raw.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                s.headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        s.chunked = s.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if status != 200 {
            // Read the error body: by length, by chunks, or to the end.
            let len = s.header("content-length").and_then(|v| v.parse::<usize>().ok());
            loop {
                s.dechunk();
                if len.is_some_and(|n| s.text.len() >= n) || s.ended {
                    break;
                }
                if !s.fill(deadline) {
                    break;
                }
            }
            return Err((status, String::from_utf8_lossy(&s.text).into_owned()));
        }
        Ok(s)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Read more bytes into `raw` before `deadline`; false on timeout or end of stream.
    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || self.ended {
            return false;
        }
        self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).ok();
        let mut buf = [0u8; 16384];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.ended = true;
                false
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => false,
            Err(_) => {
                self.ended = true;
                false
            }
        }
    }

    /// Move complete chunks (or everything, if not chunked) from `raw` to `text`.
    fn dechunk(&mut self) {
        if !self.chunked {
            self.text.append(&mut self.raw);
            return;
        }
        loop {
            let Some(eol) = find(&self.raw, b"\r\n") else { return };
            let size_text = String::from_utf8_lossy(&self.raw[..eol]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_text:?}"));
            if size == 0 {
                // The last chunk: the stream is over.
                self.raw.clear();
                self.ended = true;
                return;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.text.extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The next frame carrying data within `timeout`, or None (see `ended`).
    pub fn next(&mut self, timeout: Duration) -> Option<SseFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            self.dechunk();
            while let Some(frame) = self.take_frame() {
                if !frame.data.is_empty() || !frame.event.is_empty() {
                    return Some(frame);
                }
            }
            if !self.fill(deadline) {
                self.dechunk();
                // A last frame may have arrived with the end of the stream.
                while let Some(frame) = self.take_frame() {
                    if !frame.data.is_empty() || !frame.event.is_empty() {
                        return Some(frame);
                    }
                }
                return None;
            }
        }
    }

    /// The next frame's JSON within `timeout`, skipping `subscribed`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.next_json(deadline.saturating_duration_since(Instant::now()))?;
            if m["type"] != "subscribed" {
                return Some(m);
            }
        }
    }

    /// The next frame's JSON within `timeout`.
    pub fn next_json(&mut self, timeout: Duration) -> Option<Value> {
        self.next(timeout).map(|f| {
            let v = f.json();
            assert_eq!(v["type"].as_str(), Some(f.event.as_str()), "SSE event name and JSON type differ: {f:?}");
            if let Some(p) = v.get("position").and_then(Value::as_str) {
                assert_eq!(f.id.as_deref(), Some(p), "SSE id differs from the message's position: {f:?}");
            }
            v
        })
    }

    /// One frame (up to a blank line) from `text`, if complete.
    fn take_frame(&mut self) -> Option<SseFrame> {
        // Lines end in \n, \r\n or \r (the SSE spec allows all three).
        let normalized_end = {
            let t = &self.text;
            let mut i = 0;
            let mut prev_newline = false;
            let mut end = None;
            while i < t.len() {
                let (is_nl, width) = match t[i] {
                    b'\r' if t.get(i + 1) == Some(&b'\n') => (true, 2),
                    b'\r' | b'\n' => (true, 1),
                    _ => (false, 1),
                };
                if is_nl && prev_newline {
                    end = Some(i + width);
                    break;
                }
                prev_newline = is_nl;
                i += width;
            }
            end
        }?;
        let block: Vec<u8> = self.text.drain(..normalized_end).collect();
        let block = String::from_utf8_lossy(&block).replace("\r\n", "\n").replace('\r', "\n");
        let mut f = SseFrame::default();
        let mut data: Vec<&str> = Vec::new();
        for line in block.split('\n').filter(|l| !l.is_empty()) {
            if let Some(c) = line.strip_prefix(':') {
                self.comments.push(c.trim().to_string());
                continue;
            }
            let (field, value) = line.split_once(':').map(|(f, v)| (f, v.strip_prefix(' ').unwrap_or(v))).unwrap_or((line, ""));
            match field {
                "event" => f.event = value.to_string(),
                "id" => f.id = Some(value.to_string()),
                "data" => data.push(value),
                "retry" => self.comments.push(format!("retry: {value}")),
                _ => {}
            }
        }
        f.data = data.join("\n");
        Some(f)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
