//! End-to-end (issue 19, package A): request ids taken from the client or made, echoed
//! on every answer, and handed to Postgres (baas.audit_log, pg_stat_activity); JSON
//! request log lines; Prometheus /metrics on its own listener only.

mod common;
use common::*;
use pgbaas_testkit::{free_port, Proxy};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A proxy with metrics on a port of their own and JSON logs written to a file.
struct Observed {
    proxy: Proxy,
    metrics: u16,
    log: PathBuf,
}

impl Drop for Observed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

fn observed(extra: &[&str]) -> Observed {
    observed_at(&env().cluster.authenticator_url().unwrap(), extra)
}

/// As `observed`, with the database URL `url`.
fn observed_at(url: &str, extra: &[&str]) -> Observed {
    let metrics = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let mut args: Vec<&str> = vec!["--metrics-listen", &metrics_addr, "--log-format", "json"];
    args.extend(extra);
    let mut o = logged(url, &args);
    o.metrics = metrics;
    let deadline = Instant::now() + Duration::from_secs(30);
    while pgbaas_testkit::http_status(metrics, "/metrics") != Some(200) {
        assert!(Instant::now() < deadline, "the metrics listener did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    o
}

/// A proxy whose stdout is written to a file (`log`), started with `extra`.
fn logged(url: &str, extra: &[&str]) -> Observed {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("pgbaas-observe-{}-{port}.log", std::process::id()));
    let out = std::fs::File::create(&log).unwrap();
    let mut args = vec!["--listen".to_string(), format!("127.0.0.1:{port}"), "--database-url".into(), url.to_string(), "--pool-size".into(), "3".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    if !extra.contains(&"--rate-limits") {
        args.extend(["--rate-limits", "off"].map(String::from));
    }
    let child = Command::new(pgbaas_testkit::proxy_bin())
        .args(&args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::from(out))
        .spawn()
        .unwrap();
    // Dropped (killed) whatever happens next.
    let o = Observed { proxy: Proxy { child, port }, metrics: 0, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pgbaas_testkit::http_status(port, "/healthz") != Some(200) {
        assert!(Instant::now() < deadline, "the proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    o
}

impl Observed {
    fn call(&self, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        request_at(&self.proxy.base(), method, path, token, headers, body)
    }

    /// The JSON log line of request `id` (waits for it: stdout is written after the answer).
    fn line(&self, id: &str) -> Value {
        let mut found = None;
        wait_until(&format!("a log line for request {id}"), || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            found = text
                .lines()
                .filter(|l| l.starts_with('{'))
                .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}")))
                .find(|v| v["request_id"] == id);
            found.is_some()
        });
        found.unwrap()
    }

    fn metrics_text(&self) -> String {
        ureq::get(&format!("http://127.0.0.1:{}/metrics", self.metrics)).call().unwrap().into_string().unwrap()
    }

    /// A series' value (0 when it is not there yet).
    fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text();
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).map(|v| v.parse().unwrap())).unwrap_or(0.0)
    }
}

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && s.chars().enumerate().all(|(i, c)| [8, 13, 18, 23].contains(&i) || c.is_ascii_hexdigit())
}

#[test]
fn request_ids_are_kept_or_made_echoed_on_every_answer_and_recorded_in_the_audit_log() {
    let o = observed(&["--body-limit", "2048"]);
    let pid = std::process::id();
    // The client's id, when it is safe, comes back as sent.
    let mine = format!("client-{pid}.a:b/c+d=e_f");
    let r = o.call("GET", "/healthz", None, &[("X-Request-Id", &mine)], None);
    assert_eq!((r.status, r.header("x-request-id")), (200, Some(mine.as_str())));
    // None sent: a new UUID v4, a different one each time.
    let a = o.call("GET", "/healthz", None, &[], None);
    let b = o.call("GET", "/healthz", None, &[], None);
    let (a, b) = (a.header("x-request-id").unwrap().to_string(), b.header("x-request-id").unwrap().to_string());
    assert!(is_uuid_v4(&a) && is_uuid_v4(&b) && a != b, "{a} {b}");
    // Unsafe or too long: replaced, never refused.
    for bad in ["has space", "quote\"d", &"x".repeat(129)] {
        let r = o.call("GET", "/healthz", None, &[("X-Request-Id", bad)], None);
        assert_eq!(r.status, 200);
        let id = r.header("x-request-id").unwrap();
        assert!(is_uuid_v4(id), "{bad:?} was replaced by {id}");
    }
    assert_eq!(o.call("GET", "/healthz", None, &[("X-Request-Id", &"y".repeat(128))], None).header("x-request-id"), Some(&*"y".repeat(128)));
    // Early answers carry it too: 404, 405, 413, 401 (a refused token).
    let nf = o.call("GET", "/v1/no/such/route", None, &[("X-Request-Id", "nf-1")], None);
    assert_eq!((nf.status, nf.header("x-request-id")), (404, Some("nf-1")));
    let na = o.call("DELETE", "/healthz", None, &[("X-Request-Id", "na-1")], None);
    assert_eq!((na.status, na.header("x-request-id")), (405, Some("na-1")));
    let big = format!("{{\"email\": \"{}\"}}", "a".repeat(4000));
    let tl = o.call("POST", "/v1/auth/signup", None, &[("X-Request-Id", "tl-1")], Some(&big));
    assert_eq!((tl.status, tl.header("x-request-id")), (413, Some("tl-1")));
    let bt = o.call("GET", "/v1/auth/user", Some("not-a-token"), &[("X-Request-Id", "bt-1")], None);
    assert_eq!((bt.status, bt.header("x-request-id")), (401, Some("bt-1")));

    // A sign-up and a login: their audit entries carry the requests' ids.
    let email = email("observe");
    let (signup_id, login_id) = (format!("signup-{pid}-{}", o.proxy.port), format!("login-{pid}-{}", o.proxy.port));
    let s = o.call("POST", "/v1/auth/signup", None, &[("X-Request-Id", &signup_id)], Some(&json!({"email": email, "password": PASSWORD}).to_string()));
    assert_eq!((s.status, s.header("x-request-id")), (201, Some(signup_id.as_str())), "{}", s.body);
    let user = s.body["user"]["id"].as_str().unwrap().to_string();
    let l = o.call("POST", "/v1/auth/login", None, &[("X-Request-Id", &login_id)], Some(&json!({"email": email, "password": PASSWORD}).to_string()));
    assert_eq!((l.status, l.header("x-request-id")), (200, Some(login_id.as_str())), "{}", l.body);
    let rows = admin()
        .query("select action, request_id from baas.audit_log where user_id = $1::text::uuid order by id", &[&user])
        .unwrap();
    let rows: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(rows.contains(&("login".into(), Some(login_id.clone()))), "{rows:?}");
    assert!(rows.iter().all(|(_, id)| id.as_deref() == Some(signup_id.as_str()) || id.as_deref() == Some(login_id.as_str())), "{rows:?}");
    // Entries written from SQL (a DBA) have none.
    let mut dba = admin();
    dba.execute("select baas._audit('observe_test_from_sql', $1::text::uuid)", &[&user]).unwrap();
    let from_sql: Option<String> = dba
        .query_one("select request_id from baas.audit_log where action = 'observe_test_from_sql' and user_id = $1::text::uuid", &[&user])
        .unwrap()
        .get(0);
    assert_eq!(from_sql, None);
}

#[test]
fn a_running_request_shows_its_id_in_pg_stat_activity_until_it_ends() {
    // The URL's application_name, then the id (issue 19 review: not a fixed "pgbaas-proxy").
    let url = format!("{}?application_name=obs-app", env().cluster.authenticator_url().unwrap());
    let o = observed_at(&url, &["--statement-timeout-ms", "60000"]);
    let u = signup("observe-slow");
    let c = collection("observe", json!({}));
    let id = create_doc(&c, Some(&u.access), json!({"n": 1}), None);
    // A DBA holds the document's row: the PATCH waits, its transaction open.
    let mut dba = admin();
    let mut tx = dba.transaction().unwrap();
    tx.execute("select 1 from baas.documents where id = $1::text::uuid for update", &[&id]).unwrap();
    let rid = format!("slow-{}-{}", std::process::id(), o.proxy.port);
    let (base, path, token, hdr) = (o.proxy.base(), doc_path(&c, &id), u.access.clone(), rid.clone());
    let patch = std::thread::spawn(move || request_at(&base, "PATCH", &path, Some(&token), &[("X-Request-Id", &hdr)], Some(r#"{"data": {"n": 2}}"#)));
    let app = format!("obs-app {rid}");
    let seen = |waiting: bool| {
        admin()
            .query_one(
                "select count(*) from pg_stat_activity where application_name = $1 and ($2 = false or wait_event_type = 'Lock')",
                &[&app, &waiting],
            )
            .unwrap()
            .get::<_, i64>(0)
    };
    wait_until("the waiting PATCH shows its request id as application_name", || seen(true) == 1);
    tx.commit().unwrap();
    let r = patch.join().unwrap();
    assert_eq!((r.status, r.header("x-request-id")), (200, Some(rid.as_str())), "{}", r.body);
    // At commit the connection is back under the pool's name.
    wait_until("the id leaves pg_stat_activity with the request", || seen(false) == 0);
}

#[test]
fn json_log_lines_and_metrics_describe_each_request_and_metrics_stay_off_the_public_port() {
    let o = observed(&["--rate-limits", "on", "--rate-limit-signups-per-hour", "2"]);
    let before = o.metric(r#"pgbaas_http_requests_total{route="get_document",status="200"}"#);
    let u = signup("observe-log");
    let c = collection("observe", json!({}));
    let id = create_doc(&c, Some(&u.access), json!({"n": 1}), None);
    let r = o.call("GET", &doc_path(&c, &id), Some(&u.access), &[("X-Request-Id", "log-get-1")], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let line = o.line("log-get-1");
    assert_eq!(line["level"], "info", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["route"], "get_document", "{line}");
    assert_eq!(line["path"], doc_path(&c, &id), "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["user_id"], u.id.as_str(), "{line}");
    assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    assert!(line["bytes"].as_u64().unwrap() > 10, "{line}");
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0, "{line}");
    let ts = line["ts"].as_str().unwrap();
    assert!(ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    // The query string (which may hold a token) is never logged.
    let q = o.call("GET", &format!("{}?access_token=secret-{}", doc_path(&c, &id), std::process::id()), Some(&u.access), &[("X-Request-Id", "log-q")], None);
    assert_eq!(q.status, 400, "{}", q.body);
    let line = o.line("log-q");
    assert_eq!((line["path"].as_str(), line["status"].as_u64()), (Some(doc_path(&c, &id).as_str()), Some(400)), "{line}");
    assert!(!std::fs::read_to_string(&o.log).unwrap().contains("secret-"), "no query string in the log");
    // An unknown route: "unknown", no user.
    let nf = o.call("GET", "/v1/nothing-here", None, &[("X-Request-Id", "log-404")], None);
    assert_eq!(nf.status, 404);
    let line = o.line("log-404");
    assert_eq!((line["route"].as_str(), line["status"].as_u64(), line["level"].as_str()), (Some("unknown"), Some(404), Some("warn")), "{line}");
    assert!(line["user_id"].is_null(), "{line}");

    // Metrics: the request counted by route and status, its latency observed.
    assert_eq!(o.metric(r#"pgbaas_http_requests_total{route="get_document",status="200"}"#), before + 1.0);
    assert!(o.metric(r#"pgbaas_http_requests_total{route="unknown",status="404"}"#) >= 1.0);
    assert!(o.metric(r#"pgbaas_http_request_duration_seconds_count{route="get_document"}"#) >= 1.0);
    let text = o.metrics_text();
    for series in ["pgbaas_pool_connections_in_use ", "pgbaas_pool_waiting ", "pgbaas_realtime_connections ", "pgbaas_realtime_subscriptions "] {
        assert!(text.contains(series), "{series} in {text}");
    }
    // A refused bearer token, counted by its code.
    let bad = o.metric(r#"pgbaas_token_verification_failures_total{code="invalid_token"}"#);
    let r = o.call("GET", &doc_path(&c, &id), Some("not.a.token"), &[], None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(o.metric(r#"pgbaas_token_verification_failures_total{code="invalid_token"}"#), bad + 1.0);
    // A 429 of the sign-up limit (2 an hour from this address), counted by kind, with its id.
    let mut limited = None;
    for i in 0..4 {
        let r = o.call("POST", "/v1/auth/signup", None, &[("X-Request-Id", &format!("limited-{i}"))], Some(&json!({"email": email("observe-rl"), "password": PASSWORD}).to_string()));
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let limited = limited.expect("the third sign-up is refused");
    let rid = limited.header("x-request-id").unwrap_or_default().to_string();
    assert!(rid.starts_with("limited-"), "{rid}");
    // A request is counted with its log line, once its answer went out (observe::finish):
    // the client can ask for the metrics before that; the line says it happened.
    o.line(&rid);
    assert_eq!(o.metric(r#"pgbaas_rate_limited_total{kind="signup"}"#), 1.0);
    assert!(o.metric(r#"pgbaas_http_requests_total{route="signup",status="429"}"#) >= 1.0);

    // Other paths of the metrics listener: 404. The public listener never serves metrics.
    assert_eq!(pgbaas_testkit::http_status(o.metrics, "/"), Some(404));
    assert_eq!(pgbaas_testkit::http_status(o.metrics, "/v1/collections"), Some(404));
    let public = o.call("GET", "/metrics", None, &[], None);
    assert_eq!(public.status, 404, "{}", public.body);
    assert!(!public.body.to_string().contains("pgbaas_http_requests_total"));
}

#[test]
fn without_the_flags_there_is_no_metrics_listener_and_no_json_line() {
    let url = env().cluster.authenticator_url().unwrap();
    let o = logged(&url, &[]);
    let p = &o.proxy;
    let r = request_at(&p.base(), "GET", "/healthz", None, &[("X-Request-Id", "plain-1")], None);
    assert_eq!((r.status, r.header("x-request-id")), (200, Some("plain-1")), "ids are echoed whatever the flags");
    assert_eq!(request_at(&p.base(), "GET", "/metrics", None, &[], None).status, 404);
    // stdout is captured (its start-up line is there) and holds no JSON line.
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&o.log).unwrap();
    assert!(text.contains("listening on"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with('{')) && !text.contains("plain-1"), "{text}");
}

/// (issue 19 review): answers written outside a route also carry an id and are counted
/// and logged: a CORS preflight, and the per-address connection cap's 429.
#[test]
fn preflights_and_connection_cap_refusals_carry_an_id_and_are_counted_and_logged() {
    let o = observed(&["--cors-origins", "https://app.example.com", "--max-connections-per-ip", "2"]);
    let before = o.metric(r#"pgbaas_http_requests_total{route="unknown",status="204"}"#);
    let pf = o.call(
        "OPTIONS",
        "/v1/auth/signup",
        None,
        &[("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "POST"), ("X-Request-Id", "preflight-1")],
        None,
    );
    assert_eq!((pf.status, pf.header("x-request-id")), (204, Some("preflight-1")), "{}", pf.body);
    assert!(pf.header("access-control-allow-origin").is_some(), "a preflight answer");
    let line = o.line("preflight-1");
    assert_eq!((line["method"].as_str(), line["status"].as_u64()), (Some("OPTIONS"), Some(204)), "{line}");
    let route = line["route"].as_str().unwrap().to_string();
    if route == "unknown" {
        assert_eq!(o.metric(r#"pgbaas_http_requests_total{route="unknown",status="204"}"#), before + 1.0);
    } else {
        assert!(o.metric(&format!(r#"pgbaas_http_requests_total{{route="{route}",status="204"}}"#)) >= 1.0);
    }

    // Two connections held open, a third refused with an id of its own.
    use std::io::{Read, Write};
    let limited = r#"pgbaas_rate_limited_total{kind="tcp_connections"}"#;
    let held: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(("127.0.0.1", o.proxy.port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut third = std::net::TcpStream::connect(("127.0.0.1", o.proxy.port)).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = third.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    // A browser app can read it: the CORS headers of an ordinary answer.
    assert!(answer.contains("\r\nAccess-Control-Allow-Origin: https://app.example.com\r\n"), "{answer}");
    assert!(answer.contains("\r\nVary: Origin\r\n"), "{answer}");
    let id = answer
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-request-id: ").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no X-Request-Id in {answer}"));
    assert!(is_uuid_v4(&id), "{id}");
    drop(held);
    let line = o.line(&id);
    assert_eq!(line["status"].as_u64(), Some(429), "{line}");
    assert!(o.metric(limited) >= 1.0, "{}", o.metrics_text());
}

#[test]
fn the_webhook_outbox_backlog_is_a_gauge() {
    let o = observed(&[]);
    // What was already waiting (other tests' hooks): this test's three come on top.
    let before: i64 = admin().query_one("select coalesce(baas._outbox_backlog('webhooks'), 0)::bigint", &[]).unwrap().get(0);
    let c = collection("observe_hooks", json!({}));
    // Nothing listens there: the events stay undelivered (retried later).
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    admin().execute("select baas.create_webhook($1, $2, collection => $3)", &[&format!("observe_{c}"), &url, &c]).unwrap();
    let u = signup("observe-hooks");
    for n in 0..3 {
        create_doc(&c, Some(&u.access), json!({"n": n}), None);
    }
    let series = r#"pgbaas_outbox_backlog{outbox="webhooks"}"#;
    // Counted at most every 10 s by the worker.
    let deadline = Instant::now() + Duration::from_secs(30);
    while o.metric(series) < before as f64 + 3.0 {
        assert!(Instant::now() < deadline, "{series} never reached {before} + 3: {}", o.metrics_text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn each_change_read_into_the_hub_is_observed_as_realtime_lag() {
    let o = observed(&[]);
    // A proxy's hub starts at the log's end: only changes from now on are read and timed.
    let u = signup("observe-lag");
    let c = collection("observe_lag", json!({}));
    for n in 0..3 {
        create_doc(&c, Some(&u.access), json!({"n": n}), None);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while o.metric("pgbaas_realtime_lag_seconds_count") < 3.0 {
        assert!(Instant::now() < deadline, "three document changes never observed: {}", o.metrics_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Commit to the hub on one machine: well under a second each on average (the
    // capture pulls every few milliseconds), never negative.
    let (sum, count) = (o.metric("pgbaas_realtime_lag_seconds_sum"), o.metric("pgbaas_realtime_lag_seconds_count"));
    assert!(sum >= 0.0 && sum / count < 5.0, "lag sum {sum} over {count} events");
    assert!(o.metric(r#"pgbaas_realtime_lag_seconds_bucket{le="30"}"#) >= 3.0, "{}", o.metrics_text());
}
