//! End-to-end: the edge (issue 19, package C). CORS: preflights answered by the proxy
//! before any route, rate limit or database work; CORS headers on answers, errors
//! included; credentials refused with `*`.

mod common;
use common::*;
use pgbaas_testkit::{proxy_bin, Proxy};

const ALLOWED: &str = "https://app.example.com";

fn cors_proxy(extra: &[&str]) -> Proxy {
    let url = env().cluster.authenticator_url().unwrap();
    let mut args = vec!["--cors-origins", "https://app.example.com, https://*.example.org", "--cors-max-age-secs", "120"];
    args.extend_from_slice(extra);
    Proxy::start(&url, &args).unwrap()
}

fn preflight(p: &Proxy, path: &str, origin: &str) -> Resp {
    request_at(&p.base(), "OPTIONS", path, None, &[("Origin", origin), ("Access-Control-Request-Method", "PATCH"), ("Access-Control-Request-Headers", "authorization, content-type")], None)
}

#[test]
fn preflights_are_answered_before_any_route_or_rate_limit() {
    // One request a minute per address: the second ordinary request is refused, but
    // preflights are answered before the limit is counted (and before routing: the
    // path does not exist).
    let p = cors_proxy(&["--rate-limits", "on", "--rate-limit-requests-per-minute", "1"]);
    for path in ["/v1/no/such/route", "/v1/collections/x/documents/1"] {
        for _ in 0..5 {
            let r = preflight(&p, path, ALLOWED);
            assert_eq!(r.status, 204, "{path}: {:?}", r.headers);
            assert_eq!(r.header("access-control-allow-origin"), Some(ALLOWED));
            let methods = r.header("access-control-allow-methods").unwrap_or("");
            assert!(methods.contains("PATCH") && methods.contains("DELETE"), "{methods}");
            let headers = r.header("access-control-allow-headers").unwrap_or("").to_ascii_lowercase();
            assert!(headers.contains("authorization") && headers.contains("content-type") && headers.contains("if-match"), "{headers}");
            assert_eq!(r.header("access-control-max-age"), Some("120"));
            assert_eq!(r.header("vary"), Some("Origin"));
            assert_eq!(r.header("access-control-allow-credentials"), None, "credentials are off by default");
        }
    }
    let first = request_at(&p.base(), "GET", "/v1/auth/user", None, &[("Origin", ALLOWED)], None);
    let second = request_at(&p.base(), "GET", "/v1/auth/user", None, &[("Origin", ALLOWED)], None);
    assert_eq!((first.status, second.status), (401, 429), "ordinary requests are counted: {}", second.body);
    // The refusal carries the CORS headers too, so the page's script can read it.
    assert_eq!(second.header("access-control-allow-origin"), Some(ALLOWED));
    assert!(second.header("access-control-expose-headers").unwrap_or("").contains("Retry-After"));
    // A tus OPTIONS (no Access-Control-Request-Method) is not a preflight: routed as before.
    let tus = request_at(&p.base(), "OPTIONS", "/v1/no/such/route", None, &[("Origin", ALLOWED)], None);
    assert_ne!(tus.status, 204);
}

#[test]
fn answers_carry_cors_headers_for_allowed_origins_only() {
    let p = cors_proxy(&[]);
    let u = signup("edge-cors");
    // A wildcard subdomain, any depth; a success with a body.
    for origin in ["https://a.example.org", "https://b.c.example.org", ALLOWED] {
        let r = request_at(&p.base(), "GET", "/v1/auth/user", Some(&u.access), &[("Origin", origin)], None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("vary"), Some("Origin"));
        let expose = r.header("access-control-expose-headers").unwrap_or("");
        for h in ["X-Request-Id", "ETag", "Pgbaas-Commit-Lsn"] {
            assert!(expose.contains(h), "{h} not in {expose}");
        }
    }
    // An error answer (401) has them too.
    let r = request_at(&p.base(), "GET", "/v1/auth/user", Some("not-a-token"), &[("Origin", ALLOWED)], None);
    assert_eq!((r.status, r.header("access-control-allow-origin")), (401, Some(ALLOWED)));
    // Origins not allowed: no Allow-Origin (the browser hides the answer), but Vary.
    for origin in ["https://example.org", "https://evil-example.org", "http://app.example.com", "https://app.example.com.evil.test", "null"] {
        let r = request_at(&p.base(), "GET", "/v1/auth/user", Some(&u.access), &[("Origin", origin)], None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
        assert_eq!(r.header("vary"), Some("Origin"));
        let pf = preflight(&p, "/v1/auth/user", origin);
        assert_eq!(pf.status, 204);
        assert_eq!((pf.header("access-control-allow-origin"), pf.header("access-control-allow-methods")), (None, None), "{origin}");
    }
    // Without cors_origins: no CORS headers at all (the suite's own proxy).
    let r = request_at(&base(), "GET", "/v1/auth/user", Some(&u.access), &[("Origin", ALLOWED)], None);
    assert_eq!((r.header("access-control-allow-origin"), r.header("vary")), (None, None));
}

#[test]
fn credentials_are_sent_when_on_and_refused_with_any_origin() {
    let p = cors_proxy(&["--cors-credentials", "on"]);
    let r = preflight(&p, "/v1/auth/user", "https://x.example.org");
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-allow-origin"), Some("https://x.example.org"));
    let any = cors_any();
    let r = preflight(&any, "/v1/auth/user", "https://anything.test");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    // `*` with credentials: the proxy does not start, and says why.
    let out = std::process::Command::new(proxy_bin())
        .args(["--database-url", &env().cluster.authenticator_url().unwrap(), "--cors-origins", "*", "--cors-credentials", "on"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cors_credentials"), "{err}");
}

fn cors_any() -> Proxy {
    Proxy::start(&env().cluster.authenticator_url().unwrap(), &["--cors-origins", "*"]).unwrap()
}

#[test]
fn connections_over_the_per_address_cap_get_429_then_close() {
    use std::io::{Read, Write};
    let mport = pgbaas_testkit::free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let p = Proxy::start(&env().cluster.authenticator_url().unwrap(), &["--max-connections-per-ip", "2", "--metrics-listen", &maddr]).unwrap();
    let refused = || {
        let text = ureq::get(&format!("http://{maddr}/metrics")).call().unwrap().into_string().unwrap();
        text.lines().find(|l| l.starts_with(r#"pgbaas_rate_limited_total{kind="tcp_connections"}"#)).map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let open = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        s
    };
    // Reads one answer of a kept-alive connection (its head and the JSON body).
    let answer = |s: &mut std::net::TcpStream| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if n == 0 || (text.contains("\r\n\r\n") && text.trim_end().ends_with('}')) {
                return text;
            }
        }
    };
    // Two kept-alive connections from this address: both served.
    let mut held: Vec<_> = (0..2).map(|_| open()).collect();
    for s in held.iter_mut() {
        s.write_all(get.as_bytes()).unwrap();
        assert!(answer(s).starts_with("HTTP/1.1 200"));
    }
    // A third: 429 with the usual error body, then closed.
    let mut third = open();
    third.write_all(get.as_bytes()).unwrap();
    let mut text = String::new();
    third.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(text.contains("Retry-After: 1") && text.contains(r#""code":"too_many_connections""#), "{text}");
    assert_eq!(refused().as_deref(), Some("1"), "the 429 is counted");
    // One over the cap that sends no request: closed within about a second, no answer,
    // not counted.
    let mut silent = open();
    let t = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = silent.read_to_end(&mut rest);
    assert!(rest.is_empty() && t.elapsed() < std::time::Duration::from_secs(8), "{:?} after {:?}", String::from_utf8_lossy(&rest), t.elapsed());
    assert_eq!(refused().as_deref(), Some("1"), "a connection closed without a 429 is not counted");
    // The two still work; once one closes, a new connection is served.
    for s in held.iter_mut() {
        s.write_all(get.as_bytes()).unwrap();
        assert!(answer(s).starts_with("HTTP/1.1 200"));
    }
    drop(held.pop());
    wait_until("a closed connection frees its place", || pgbaas_testkit::http_status(p.port, "/healthz") == Some(200));
}

#[test]
fn live_feeds_hold_their_connection_slot_until_closed() {
    use std::io::{Read, Write};
    let p = Proxy::start(&env().cluster.authenticator_url().unwrap(), &["--max-connections-per-ip", "2"]).unwrap();
    let u = signup("edge-cap-feeds");
    let c = collection("edge_cap_feeds", serde_json::json!({}));
    let ws = pgbaas_testkit::realtime::Ws::connect(p.port, Some(&u.access)).unwrap();
    let sse = pgbaas_testkit::realtime::Sse::open(p.port, &c, "", Some(&u.access), None).unwrap();
    // A WebSocket and an SSE stream fill the cap: a third connection is refused.
    let third = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    };
    let t = third();
    assert!(t.starts_with("HTTP/1.1 429"), "{t}");
    // Closing the WebSocket frees its slot; then the SSE stream's.
    ws.close();
    wait_until("a closed WebSocket frees its place", || third().starts_with("HTTP/1.1 200"));
    drop(sse);
    // Both places free: two connections held open at once are served.
    wait_until("a closed SSE stream frees its place", || {
        let held: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap()).collect();
        let mut ok = true;
        for mut s in held {
            s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut buf = [0u8; 12];
            ok &= s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/1.1 200";
        }
        ok
    });
}
