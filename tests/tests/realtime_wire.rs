//! End-to-end: the realtime transports on the real proxy (docs/realtime-protocol.md):
//! the WebSocket handshake and its refusals, tokens (header, ?access_token=, in-band
//! `auth`), message errors that keep the connection, close codes, server pings, caps,
//! and the SSE route's errors before the stream. What needs the hub (events, snapshot,
//! resume) is tested where the hub is.

mod common;
use common::*;
use pgbaas_testkit::Proxy;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

/// A WebSocket to the proxy at `port`; `token` as a bearer header. Err: the refusal.
fn connect_at(port: u16, query: &str, token: Option<&str>) -> Result<Ws, (u16, Value)> {
    let mut req = format!("ws://127.0.0.1:{port}/v1/realtime{query}").into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    match tungstenite::client(req, tcp) {
        Ok((ws, resp)) => {
            assert_eq!(resp.status(), 101);
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp.body().as_deref().map(|b| serde_json::from_slice(b).unwrap_or(Value::Null)).unwrap_or(Value::Null);
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

fn connect(query: &str, token: Option<&str>) -> Ws {
    connect_at(env().proxy.port, query, token).unwrap_or_else(|(s, b)| panic!("refused {s}: {b}"))
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

/// The next JSON message (pings are answered by the client library on the way).
fn next(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }
}

/// Read until the server closes; its close code (None: no close frame).
fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match ws.read() {
            Ok(Message::Close(f)) => return f.map(|f| f.code),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn round_trip(ws: &mut Ws) {
    send(ws, json!({"type": "ping"}));
    assert_eq!(next(ws), json!({"type": "pong"}));
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn a_websocket_upgrade_is_answered_with_101_and_pings_are_answered() {
    let u = signup("ws-ok");
    let mut ws = connect("", Some(&u.access));
    round_trip(&mut ws);
    round_trip(&mut ws);
    // Browsers cannot set headers on a WebSocket: ?access_token= does the same.
    let mut ws = connect(&format!("?access_token={}", u.access), None);
    round_trip(&mut ws);
    // No token at all: an anonymous connection.
    let mut ws = connect("", None);
    round_trip(&mut ws);
    ws.close(Some(tungstenite::protocol::CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).unwrap();
    assert_eq!(close_code(&mut ws), Some(CloseCode::Normal), "the close handshake completes");
}

#[test]
fn handshakes_that_are_not_websocket_upgrades_are_refused() {
    let head = |extra: &str| format!("GET /v1/realtime HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    // A plain GET: 426 saying how to upgrade.
    let r = raw(head("").as_bytes());
    assert_eq!(raw_status(&r), 426, "{r}");
    let lower = r.to_ascii_lowercase();
    assert!(lower.contains("\r\nupgrade: websocket\r\n") && lower.contains("\r\nsec-websocket-version: 13\r\n"), "{r}");
    assert!(r.contains("\"upgrade_required\""), "{r}");
    // Another version: 426 naming the one supported.
    let r = raw(head(&format!("{upgrade}{key}Sec-WebSocket-Version: 8\r\n")).as_bytes());
    assert_eq!(raw_status(&r), 426, "{r}");
    assert!(r.contains("\"unsupported_websocket_version\"") && r.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{r}");
    // A key that is not the base64 of 16 bytes, or none: 400.
    for k in ["Sec-WebSocket-Key: c2hvcnQ=\r\n", ""] {
        let r = raw(head(&format!("{upgrade}{k}Sec-WebSocket-Version: 13\r\n")).as_bytes());
        assert_eq!(raw_status(&r), 400, "{r}");
        assert!(r.contains("\"invalid_request\""), "{r}");
    }
    // Other methods: 405 with Allow.
    let r = call("POST", "/v1/realtime", None, Some("{}"));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    // Unknown query parameters are refused as everywhere.
    let r = raw(head(&format!("{upgrade}{key}Sec-WebSocket-Version: 13\r\n")).replace("/v1/realtime", "/v1/realtime?x=1").as_bytes());
    assert_eq!(raw_status(&r), 400, "{r}");
    assert!(r.contains("\"invalid_query\""), "{r}");
}

#[test]
fn forged_or_expired_tokens_are_refused_before_the_upgrade() {
    let u = signup("ws-forged");
    let mut expired = claims_for(&u);
    expired["exp"] = json!(now() - 60);
    expired["iat"] = json!(now() - 120);
    let expired = sign_with_db_key(&expired);
    let forged = format!("{}x", &u.access[..u.access.len() - 1]);
    for t in [expired.as_str(), forged.as_str(), "not-a-token"] {
        let (status, body) = connect_at(env().proxy.port, "", Some(t)).err().expect("refused");
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")), "{body}");
        let (status, _) = connect_at(env().proxy.port, &format!("?access_token={t}"), None).err().expect("refused");
        assert_eq!(status, 401);
    }
    // The SSE route likewise, before any byte of a stream.
    let c = collection("sse_tok", json!({}));
    let r = call("GET", &format!("/v1/collections/{c}/events?access_token={forged}"), None, None);
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    let r = call("GET", &format!("/v1/collections/{c}/events"), Some(&expired), None);
    assert_eq!((r.status, r.code()), (401, "invalid_token"));
    // One token, one place.
    let (status, body) = connect_at(env().proxy.port, &format!("?access_token={}", u.access), Some(&u.access)).err().expect("refused");
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")));
}

#[test]
fn invalid_messages_are_answered_and_the_connection_stays() {
    let u = signup("ws-bad");
    let mut ws = connect("", Some(&u.access));
    let cases = [
        ("{", None, "JSON object"),
        ("[1, 2]", None, "JSON object"),
        (r#"{"type": "hello"}"#, None, "unknown message type"),
        (r#"{"sub": "s1"}"#, Some("s1"), "needs \"type\""),
        (r#"{"type": "subscribe", "sub": "s2"}"#, Some("s2"), "needs \"collection\""),
        (r#"{"type": "subscribe", "sub": "s3", "collection": "c", "snapshot": true, "resume": "5"}"#, Some("s3"), "not both"),
        (r#"{"type": "subscribe", "sub": "s4", "collection": "c", "resume": "five"}"#, Some("s4"), "\"resume\" must be a position"),
        (r#"{"type": "unsubscribe"}"#, None, "needs \"sub\""),
    ];
    for (text, sub, says) in cases {
        ws.send(Message::text(text)).unwrap();
        let m = next(&mut ws);
        assert_eq!((m["type"].as_str(), m["error"]["code"].as_str()), (Some("error"), Some("invalid_message")), "{text}: {m}");
        assert_eq!(m["sub"].as_str(), sub, "{text}: {m}");
        assert!(m["error"]["message"].as_str().unwrap().contains(says), "{text}: {m}");
    }
    // Unsubscribing from nothing says so.
    send(&mut ws, json!({"type": "unsubscribe", "sub": "nope"}));
    let m = next(&mut ws);
    assert_eq!((m["sub"].as_str(), m["error"]["code"].as_str()), (Some("nope"), Some("not_subscribed")), "{m}");
    // A subscription the server cannot start is an error message on the same connection.
    send(&mut ws, json!({"type": "subscribe", "sub": "x", "collection": "no_such_collection_here"}));
    let m = next(&mut ws);
    assert_eq!((m["type"].as_str(), m["sub"].as_str()), (Some("error"), Some("x")), "{m}");
    // The hub: not_found; without it (wal_level, or the stand-in): realtime_unavailable.
    assert!(["not_found", "realtime_unavailable"].contains(&m["error"]["code"].as_str().unwrap()), "{m}");
    round_trip(&mut ws);
}

#[test]
fn auth_in_band_replaces_the_token_of_the_same_user_only() {
    let u = signup("ws-auth");
    let other = signup("ws-auth-other");
    let mut ws = connect("", Some(&u.access));
    // An expired token: refused, the connection goes on with the one it has.
    let mut expired = claims_for(&u);
    expired["exp"] = json!(now() - 60);
    send(&mut ws, json!({"type": "auth", "token": sign_with_db_key(&expired)}));
    let m = next(&mut ws);
    assert_eq!((m["type"].as_str(), m["error"]["code"].as_str()), (Some("error"), Some("invalid_token")), "{m}");
    round_trip(&mut ws);
    // A fresh token of the same user: accepted, with its expiry.
    let fresh = claims_for(&u);
    let exp = fresh["exp"].clone();
    send(&mut ws, json!({"type": "auth", "token": sign_with_db_key(&fresh)}));
    assert_eq!(next(&mut ws), json!({"type": "authenticated", "expires_at": exp}));
    // Someone else's: refused, and the connection is closed (policy).
    send(&mut ws, json!({"type": "auth", "token": other.access}));
    let m = next(&mut ws);
    assert_eq!(m["error"]["code"].as_str(), Some("auth_rejected"), "{m}");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Policy));

    // The same user's token from another session (a second login): refused and closed
    // too, or the stream would outlive the end (logout) of the session it was opened in.
    let r = post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD}));
    assert_eq!(r.status, 200, "{}", r.body);
    let second = r.body["access_token"].as_str().unwrap().to_string();
    assert_ne!(payload(&second)["sid"], payload(&u.access)["sid"]);
    let mut ws = connect("", Some(&u.access));
    send(&mut ws, json!({"type": "auth", "token": second}));
    let m = next(&mut ws);
    assert_eq!(m["error"]["code"].as_str(), Some("auth_rejected"), "{m}");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Policy));
    // A refreshed token keeps the session: accepted.
    let r = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
    assert_eq!(r.status, 200, "{}", r.body);
    let refreshed = r.body["access_token"].as_str().unwrap().to_string();
    let mut ws = connect("", Some(&u.access));
    send(&mut ws, json!({"type": "auth", "token": refreshed}));
    assert_eq!(next(&mut ws)["type"], "authenticated");
    round_trip(&mut ws);

    // An anonymous connection may sign in once, before it subscribes...
    let mut ws = connect("", None);
    send(&mut ws, json!({"type": "auth", "token": u.access}));
    assert_eq!(next(&mut ws)["type"], "authenticated");
    round_trip(&mut ws);
    // ...but not after.
    let mut ws = connect("", None);
    send(&mut ws, json!({"type": "subscribe", "sub": "s", "collection": "whatever"}));
    assert_eq!(next(&mut ws)["type"], "error");
    send(&mut ws, json!({"type": "auth", "token": u.access}));
    assert_eq!(next(&mut ws)["error"]["code"], "auth_rejected");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Policy));
}

#[test]
fn oversize_and_binary_messages_close_with_their_codes() {
    let mut ws = connect("", None);
    // The default limit is 64 KiB.
    let big = json!({"type": "ping", "pad": "x".repeat(70 * 1024)}).to_string();
    ws.send(Message::text(big)).unwrap();
    assert_eq!(close_code(&mut ws), Some(CloseCode::Size));
    let mut ws = connect("", None);
    ws.send(Message::binary(b"{\"type\":\"ping\"}".to_vec())).unwrap();
    assert_eq!(close_code(&mut ws), Some(CloseCode::Unsupported));
}

#[test]
fn a_token_that_expires_ends_the_stream_with_closing() {
    let u = signup("ws-exp");
    let mut claims = claims_for(&u);
    let exp = now() + 3;
    claims["exp"] = json!(exp);
    let mut ws = connect("", Some(&sign_with_db_key(&claims)));
    round_trip(&mut ws);
    let m = next(&mut ws);
    assert_eq!(m, json!({"type": "closing", "reason": "token_expired", "positions": {}}));
    assert!(now() >= exp, "not before the token's exp");
    assert_eq!(close_code(&mut ws), Some(CloseCode::Policy));
}

#[test]
fn logging_out_ends_the_sessions_streams() {
    let u = signup("ws-logout");
    let mut ws = connect("", Some(&u.access));
    round_trip(&mut ws);
    let started = Instant::now();
    assert_eq!(call("POST", "/v1/auth/logout", Some(&u.access), None).status, 204);
    let m = next(&mut ws);
    assert_eq!(m, json!({"type": "closing", "reason": "session_ended", "positions": {}}));
    eprintln!("closing after logout: {:?}", started.elapsed());
    assert_eq!(close_code(&mut ws), Some(CloseCode::Policy));
    // And its tokens open no new ones.
    let (status, _) = connect_at(env().proxy.port, "", Some(&u.access)).err().expect("refused");
    assert_eq!(status, 401);
}

#[test]
fn sse_errors_come_before_the_stream_as_json() {
    let c = collection("sse_err", json!({}));
    let path = format!("/v1/collections/{c}/events");
    for (q, code) in [
        ("?where=%7B", "invalid_query"),
        ("?order=a", "invalid_query"),
        ("?snapshot=maybe", "invalid_query"),
        ("?last_event_id=abc", "invalid_request"),
        ("?snapshot=true&last_event_id=5", "invalid_query"),
    ] {
        let r = call("GET", &format!("{path}{q}"), None, None);
        assert_eq!((r.status, r.code()), (400, code), "{q}: {}", r.body);
    }
    let r = call_with("GET", &path, None, None, &[("Last-Event-ID", "-1")]);
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
    // A subscription the server cannot start is the usual JSON error, not a stream.
    let r = request_at(&base(), "GET", "/v1/collections/no_such_collection/events", None, &[], None);
    assert!(matches!((r.status, r.code()), (404, "not_found") | (503, "realtime_unavailable")), "{} {}", r.status, r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
}

/// A proxy of its own: short pings, small caps, rate limits on.
fn tight() -> &'static Proxy {
    static P: std::sync::OnceLock<Proxy> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let url = env().cluster.authenticator_url().unwrap();
        Proxy::start(
            &url,
            &["--rate-limits", "on", "--realtime-ping-secs", "1", "--realtime-max-connections-per-ip", "3", "--realtime-max-connections-per-user", "2"],
        )
        .expect("start the proxy")
    })
}

#[test]
fn the_server_pings_and_drops_clients_that_never_answer() {
    let port = tight().port;
    let mut ws = connect_at(port, "", None).unwrap();
    // A live client sees the pings (and the library answers them).
    loop {
        if let Message::Ping(_) = ws.read().unwrap() {
            break;
        }
    }
    round_trip(&mut ws);
    // One that reads nothing answers nothing: after twice the interval it is closed.
    let mut mute = connect_at(port, "", None).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(close_code(&mut mute), Some(CloseCode::Away));
}

#[test]
fn open_feeds_are_capped_per_address_and_per_user() {
    let port = tight().port;
    let u = signup("ws-caps");
    let a = connect_at(port, "", Some(&u.access)).unwrap();
    let b = connect_at(port, "", Some(&u.access)).unwrap();
    let (status, body) = connect_at(port, "", Some(&u.access)).err().expect("per-user cap");
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_connections")), "{body}");
    let c = connect_at(port, "", None).unwrap();
    let (status, _) = connect_at(port, "", None).err().expect("per-address cap");
    assert_eq!(status, 429);
    drop((a, b, c));
    // Closed ones give their places back (the server notices the close first).
    wait_until("a place frees", || connect_at(port, "", None).is_ok());
}

#[test]
fn shutdown_says_closing_before_the_connection_ends() {
    let url = env().cluster.authenticator_url().unwrap();
    let mut p = Proxy::start(&url, &[]).expect("start the proxy");
    let mut ws = connect_at(p.port, "", None).unwrap();
    round_trip(&mut ws);
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    assert_eq!(next(&mut ws), json!({"type": "closing", "reason": "shutdown", "positions": {}}));
    // 1012 "service restart" (issue 19): the client reconnects, to another proxy if it likes.
    assert_eq!(close_code(&mut ws), Some(CloseCode::Restart));
    let _ = p.child.wait();
}
