//! End-to-end: restarting without failed requests (issue 19, package C). Two proxies
//! behind a real HAProxy (the configuration docs/operations.md gives), a steady load of
//! reads and writes through it, each proxy stopped with SIGTERM and started again in
//! turn: no request fails. And what a graceful stop does to one proxy: a request in
//! flight is answered during the grace, WebSocket clients get close 1012, SSE clients a
//! final `event: reconnect`, new connections are refused, and the process exits.

mod common;
use common::*;
use pgbaas_testkit::realtime::{Sse, Ws};
use pgbaas_testkit::{free_port, http_status, proxy_bin};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A proxy on a port of our choosing (restarted on the same port), killed on drop.
struct Node {
    port: u16,
    child: Option<Child>,
    /// `--shutdown-delay-secs`.
    delay: u64,
}

impl Node {
    fn start(port: u16) -> Node {
        Node::with_delay(port, 0)
    }

    fn with_delay(port: u16, delay: u64) -> Node {
        let mut n = Node { port, child: None, delay };
        n.spawn();
        n
    }

    fn spawn(&mut self) {
        let child = Command::new(proxy_bin())
            .args(["--listen", &format!("127.0.0.1:{}", self.port), "--database-url", &env().cluster.authenticator_url().unwrap()])
            .args(["--rate-limits", "off", "--shutdown-grace-secs", "5", "--pool-size", "4"])
            .args(["--shutdown-delay-secs", &self.delay.to_string()])
            .env("RUST_LOG", std::env::var("PGBAAS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_status(self.port, "/healthz") != Some(200) {
            assert!(Instant::now() < deadline, "proxy on {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigterm(&self) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// Wait for the process to exit after SIGTERM; its exit status and how long it took.
    fn wait_exit(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < within, "the proxy did not exit within {within:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real HAProxy in front of `backends`, killed on drop.
struct Haproxy {
    port: u16,
    child: Child,
    _dir: std::path::PathBuf,
}

impl Haproxy {
    fn start(backends: &[u16]) -> Haproxy {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pgbaas-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let servers: String = backends.iter().enumerate().map(|(i, p)| format!("    server proxy{i} 127.0.0.1:{p} check\n")).collect();
        // The configuration of docs/operations.md ("Restarting without failed requests"),
        // with test ports and a faster health check.
        let cfg = format!(
            "global\n    maxconn 2000\n\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    timeout tunnel 1h\n    retries 3\n    option redispatch 1\n    retry-on conn-failure empty-response\n    option http-server-close\n\nlisten pgbaas\n    bind 127.0.0.1:{port}\n    http-request disable-l7-retry unless METH_GET || METH_HEAD\n    balance roundrobin\n    option httpchk GET /healthz\n    http-check expect status 200\n    default-server inter 300ms fall 1 rise 2\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let check = Command::new("/usr/sbin/haproxy").args(["-c", "-q", "-f"]).arg(&path).output().unwrap();
        assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new("/usr/sbin/haproxy").args(["-db", "-f"]).arg(&path).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let h = Haproxy { port, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while http_status(port, "/healthz") != Some(200) {
            assert!(Instant::now() < deadline, "haproxy did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        h
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

#[test]
fn two_proxies_behind_haproxy_restart_in_turn_under_load_without_failed_requests() {
    let u = signup("rolling");
    let c = collection("rolling", json!({}));
    // Two seconds' delay after SIGTERM: HAProxy's check (every 300 ms, one failure marks
    // a server down) takes the proxy out before its listener closes.
    let mut nodes = [Node::with_delay(free_port(), 2), Node::with_delay(free_port(), 2)];
    let lb = Haproxy::start(&[nodes[0].port, nodes[1].port]);
    let base = format!("http://127.0.0.1:{}", lb.port);
    // Wait until HAProxy has both proxies up.
    std::thread::sleep(Duration::from_secs(1));
    // A live SSE stream through the balancer, read all along (it carries every write):
    // told to reconnect when its proxy stops, and opened again through the balancer.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, port, c, token) = (stop.clone(), lb.port, c.clone(), u.access.clone());
        let open = move || Sse::open(port, &c, "", Some(&token), None).expect("an SSE stream through HAProxy");
        let mut sse = open();
        std::thread::spawn(move || {
            let (mut ends, mut last) = (Vec::new(), String::new());
            while !stop.load(Ordering::SeqCst) {
                if let Some(f) = sse.next(Duration::from_millis(200)) {
                    last = f.event;
                }
                if sse.ended {
                    ends.push(std::mem::take(&mut last));
                    sse = open();
                }
            }
            (sse, ends)
        })
    };

    let (ok, writes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, ok, writes, failures, base, token, c) = (stop.clone(), ok.clone(), writes.clone(), failures.clone(), base.clone(), u.access.clone(), c.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                let mut created = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let r = if i % 3 == 0 {
                        let body = json!({"data": {"worker": w, "i": i}}).to_string();
                        let r = try_request(&base, "POST", &docs_path(&c), &token, Some(&body));
                        if let Ok((201, ref b)) = r {
                            writes.fetch_add(1, Ordering::SeqCst);
                            created.push((b["id"].as_str().unwrap_or("").to_string(), i));
                        }
                        r
                    } else if let Some((id, _)) = created.last() {
                        try_request(&base, "GET", &doc_path(&c, id), &token, None)
                    } else {
                        try_request(&base, "GET", "/healthz", &token, None)
                    };
                    match r {
                        Ok((200 | 201, _)) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok((status, body)) => failures.lock().unwrap().push(format!("{status}: {body}")),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
                created
            })
        })
        .collect();

    for node in nodes.iter_mut() {
        std::thread::sleep(Duration::from_millis(1500));
        let before = ok.load(Ordering::SeqCst);
        node.sigterm();
        let (status, _) = node.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "a graceful stop exits 0: {status}");
        assert_eq!(http_status(node.port, "/healthz"), None, "the stopped proxy accepts nothing");
        // The other proxy carries the load meanwhile.
        std::thread::sleep(Duration::from_millis(500));
        assert!(ok.load(Ordering::SeqCst) > before, "requests went on while one proxy was down");
        node.spawn();
        // HAProxy takes it back after two good health checks.
        std::thread::sleep(Duration::from_millis(1500));
    }
    stop.store(true, Ordering::SeqCst);
    let created: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let (mut sse, ends) = reader.join().unwrap();
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} of {} requests failed: {:?}", failures.len(), ok.load(Ordering::SeqCst) + failures.len(), &failures[..failures.len().min(10)]);
    assert!(ok.load(Ordering::SeqCst) > 50 && writes.load(Ordering::SeqCst) > 10, "a load ran: {ok:?} answers, {writes:?} writes");
    // Every acknowledged write is there, once.
    let mut db = admin();
    let stored: i64 = db
        .query_one("select count(*) from baas.documents d join baas.collections c on c.id = d.collection_id where c.name = $1", &[&c])
        .map(|r| r.get(0))
        .unwrap_or(-1);
    assert_eq!(stored as usize, created.len(), "acknowledged writes stored once each");
    // The stream was on one of the two proxies, so it was told to reconnect at least
    // once; the one open now gets the next change.
    assert!(!ends.is_empty(), "the SSE stream through HAProxy was told to reconnect");
    assert!(ends.iter().all(|e| e == "reconnect"), "a stream ends with `reconnect`: {ends:?}");
    let id = create_doc(&c, Some(&u.access), json!({"last": true}), None);
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let f = sse.next(Duration::from_secs(1));
        if f.as_ref().is_some_and(|f| f.data.contains(&id)) {
            break;
        }
        assert!(Instant::now() < until && !sse.ended, "the reopened stream through HAProxy did not carry the change");
    }
}

/// One request; Ok((status, body)) for any HTTP answer, Err for a transport failure.
fn try_request(base: &str, method: &str, path: &str, token: &str, body: Option<&str>) -> Result<(u16, serde_json::Value), String> {
    let req = ureq::request(method, &format!("{base}{path}")).set("Authorization", &format!("Bearer {token}")).timeout(Duration::from_secs(20));
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("{method} {path}: {e}")),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))))
}

#[test]
fn sigterm_finishes_a_request_in_flight_and_tells_streams_to_reconnect() {
    let u = signup("graceful");
    let c = collection("graceful", json!({}));
    let id = create_doc(&c, Some(&u.access), json!({"n": 1}), None);
    let mut node = Node::start(free_port());
    let port = node.port;

    // Streams open on the proxy.
    let ws = Ws::connect(port, Some(&u.access)).unwrap();
    let mut sse = Sse::open(port, &c, "", Some(&u.access), None).unwrap();
    // A request in flight: it waits for a row a DBA has locked.
    let mut dba = admin();
    let mut tx = dba.transaction().unwrap();
    tx.execute("select 1 from baas.documents where id = $1::text::uuid for update", &[&id]).unwrap();
    // Sent on a kept-alive connection: its answer, written during the stop, must close it.
    let (path, token) = (doc_path(&c, &id), u.access.clone());
    let patch = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let body = r#"{"data": {"n": 2}}"#;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!("PATCH {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        // Read to the end: only a closed connection ends it.
        let mut text = String::new();
        s.read_to_string(&mut text).map(|_| text).map_err(|e| e.to_string())
    });
    wait_until("the PATCH waits for the lock", || {
        admin()
            .query_one("select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%patch_document%'", &[])
            .map(|r| r.get::<_, i64>(0) == 1)
            .unwrap_or(false)
    });

    node.sigterm();
    // The WebSocket is closed with 1012 (service restart), after `closing`.
    let mut socket = ws.into_stream();
    let code = loop {
        match socket.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("the WebSocket broke without a close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1012));
    // The SSE stream ends with `closing` then `reconnect`.
    let mut events = Vec::new();
    while let Some(f) = sse.next(Duration::from_secs(10)) {
        events.push(f.event);
    }
    assert_eq!(events.last().map(String::as_str), Some("reconnect"), "{events:?}");
    assert!(events.iter().any(|e| e == "closing"), "{events:?}");
    // New connections are refused while the request in flight is still running...
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http_status(port, "/healthz"), None, "no new connections after SIGTERM");
    assert!(!patch.is_finished());
    // ... which is answered once the lock goes, within the grace (5 s).
    tx.commit().unwrap();
    let text = patch.join().unwrap().expect("the answer, then the connection closed");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "an answer during the stop closes its connection: {text}");
    assert!(text.replace(' ', "").contains(r#""n":2"#), "{text}");
    // Then the proxy exits (well before the grace when nothing is left).
    let (status, _) = node.wait_exit(Duration::from_secs(8));
    assert!(status.success(), "{status}");
    drop(socket);
}

#[test]
fn sigterm_with_a_delay_fails_health_checks_while_still_answering_requests() {
    let u = signup("delayed");
    let c = collection("delayed", json!({}));
    let id = create_doc(&c, Some(&u.access), json!({"n": 1}), None);
    let mut node = Node::with_delay(free_port(), 30);
    let port = node.port;
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(http_status(port, "/healthz"), Some(200));

    node.sigterm();
    // Within the delay the health check fails, with a readable reason...
    wait_until("/healthz answers 503 after SIGTERM", || http_status(port, "/healthz") == Some(503));
    let health = ureq::get(&format!("{base}/healthz")).call().err().and_then(|e| match e {
        ureq::Error::Status(503, r) => r.into_json::<serde_json::Value>().ok(),
        _ => None,
    });
    let health = health.expect("a JSON 503 from /healthz");
    assert_eq!(health["status"], "stopping", "{health}");
    assert_eq!(health["error"]["code"], "stopping", "{health}");
    // ... while a request that still reaches the proxy (on a new connection) is
    // answered, and its connection is not kept for another.
    let r = ureq::get(&format!("{base}{}", doc_path(&c, &id))).set("Authorization", &format!("Bearer {}", u.access)).call().expect("a request during the delay is answered");
    assert_eq!(r.status(), 200);
    assert_eq!(r.header("connection").map(str::to_ascii_lowercase).as_deref(), Some("close"));
    assert_eq!(r.into_json::<serde_json::Value>().unwrap()["data"]["n"], 1);
    // A second SIGTERM ends the delay (30 s) at once: the graceful stop follows and
    // the proxy exits.
    node.sigterm();
    let (status, _) = node.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert_eq!(http_status(port, "/healthz"), None, "the stopped proxy accepts nothing");

    // SIGINT during the delay exits at once too.
    let mut node = Node::with_delay(free_port(), 30);
    let port = node.port;
    node.sigterm();
    wait_until("/healthz answers 503 after SIGTERM", || http_status(port, "/healthz") == Some(503));
    let pid = node.child.as_ref().unwrap().id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    node.wait_exit(Duration::from_secs(10));
}
