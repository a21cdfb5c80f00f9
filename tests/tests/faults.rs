//! Faults the proxy survives (issue 19, package D; docs/operations.md "Surviving
//! faults"). Each test has a cluster and a proxy of its own, so that stopping, killing
//! or cutting off Postgres touches no other test, and each is bounded in time.
//!
//! What a client may rely on, checked here: during an outage a request gets an answer,
//! `503 database_unavailable` with `Retry-After`, never later than its deadline (the
//! answer deadline, twice the statement timeout and 10 s, plus the pool timeout for
//! the wait for a connection); a write answered 2xx is there after a crash, whole; and
//! the same proxy process serves again once Postgres is back, without a restart.
//! (A connection the server drops, one at a time: connections.rs.)
mod common;

use pgbaas_testkit::relay::Relay;
use pgbaas_testkit::{pg_bindir, Cluster, Proxy, DB};
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A cluster of this test's own. Commits are durable against a killed server process:
/// the kit's throwaway clusters turn synchronous_commit off, which lost acknowledged
/// writes on `kill -9` (2 of 63 in a run of the test below); this turns it on.
fn cluster() -> Cluster {
    let c = Cluster::temporary_with_settings(true, "synchronous_commit = on").expect("start a Postgres cluster");
    let on: String = c.connect("postgres", DB).unwrap().query_one("show synchronous_commit", &[]).unwrap().get(0);
    assert_eq!(on, "on", "the cluster's settings turn synchronous_commit on");
    c
}

/// pg_ctl as the data directory's owner (Postgres refuses root).
fn pg_ctl(c: &Cluster, args: &[&str]) -> std::process::ExitStatus {
    let meta = std::fs::metadata(c.data()).unwrap();
    let mut cmd = Command::new(pg_bindir().join("pg_ctl"));
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(meta.uid()).gid(meta.gid());
    }
    cmd.env_remove("PGDATA").env("LC_ALL", "C.UTF-8").arg("-D").arg(c.data()).args(args).stdout(Stdio::null()).stderr(Stdio::null());
    cmd.status().expect("pg_ctl")
}

fn stop_pg(c: &Cluster) {
    assert!(pg_ctl(c, &["-m", "fast", "-w", "-t", "60", "stop"]).success(), "pg_ctl stop");
}

/// Start the cluster again as the kit does. After a `kill -9` of the postmaster its
/// backends may hold the shared memory for a moment ("pre-existing shared memory block
/// is still in use"): tried again for up to 30 s.
fn start_pg(c: &Cluster) {
    let opts = format!("-p {} -k {}", c.port, c.dir.join("run").display());
    let log = c.dir.join("postgres.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pg_ctl(c, &["-l", log.to_str().unwrap(), "-o", &opts, "-w", "-t", "60", "start"]).success() {
        assert!(Instant::now() < deadline, "Postgres did not start again: {}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn kill9_postmaster(c: &Cluster) {
    let pidfile = std::fs::read_to_string(c.data().join("postmaster.pid")).unwrap();
    let pid: i32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill -9 {pid}");
    // Gone when its pid no longer answers signal 0.
    let deadline = Instant::now() + Duration::from_secs(10);
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(Instant::now() < deadline, "postmaster {pid} survived kill -9");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One answer as a client sees it, with how long it took.
#[derive(Debug, Clone)]
struct Answer {
    start: Instant,
    took: Duration,
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// A request with a client-side timeout far past any deadline the proxy has (a hang
/// shows as status 0 and a long `took`, and fails the deadline check).
fn send(base: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(90)).build();
    let mut req = agent.request(method, &format!("{base}{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let start = Instant::now();
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) | Err(ureq::Error::Status(_, r)) => Some(r),
        Err(_) => None,
    };
    let (status, retry_after, body) = match resp {
        Some(r) => {
            let status = r.status();
            let retry_after = r.header("Retry-After").map(str::to_string);
            let text = r.into_string().unwrap_or_default();
            (status, retry_after, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        None => (0, None, Value::Null),
    };
    Answer { start, took: start.elapsed(), status, retry_after, body }
}

/// Fields drop in order: the proxy before its cluster.
struct Setup {
    proxy: Proxy,
    cluster: Cluster,
    token: String,
    collection: String,
}

/// A cluster, a proxy (through `relay` when given) started with `args`, a user and a
/// collection.
fn setup(args: &[&str], via_relay: bool) -> (Setup, Option<Relay>) {
    let cluster = cluster();
    let mut url = cluster.authenticator_url().unwrap();
    let relay = via_relay.then(|| {
        let r = Relay::start(cluster.port).unwrap();
        url = url.replace(&format!(":{}/", cluster.port), &format!(":{}/", r.port));
        r
    });
    let proxy = Proxy::start(&url, args).unwrap();
    let base = proxy.base();
    let email = format!("faults-{}-{}@example.com", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let r = send(&base, "POST", "/v1/auth/signup", None, Some(&json!({"email": email, "password": "correct horse battery"}).to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    let token = r.body["access_token"].as_str().unwrap().to_string();
    let service: String = cluster
        .connect("postgres", DB)
        .unwrap()
        .query_one("select baas.create_service_token('faults', '1 hour') ->> 'token'", &[])
        .unwrap()
        .get(0);
    let collection = format!("faults_{}", N.fetch_add(1, Ordering::Relaxed));
    let r = send(&base, "POST", "/v1/collections", Some(&service), Some(&json!({"name": collection, "options": {}}).to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    (Setup { cluster, proxy, token, collection }, relay)
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A 503 a client can act on: the JSON error shape, `database_unavailable`, and a
/// Retry-After of whole seconds.
fn assert_retryable(a: &Answer, what: &str) {
    assert_eq!(a.status, 503, "{what}: {a:?}");
    assert_eq!(a.body["error"]["code"], "database_unavailable", "{what}: {a:?}");
    let secs: u64 = a.retry_after.as_deref().unwrap_or_else(|| panic!("{what}: a 503 without Retry-After: {a:?}")).parse().unwrap();
    assert!(secs >= 1, "{what}: {a:?}");
}

/// Requests from `clients` threads, each one at a time, until `stop`: every answer.
fn load<F>(clients: usize, stop: &AtomicBool, log: &Mutex<Vec<Answer>>, one: F)
where
    F: Fn(usize, usize) -> Answer + Sync,
{
    std::thread::scope(|s| {
        for k in 0..clients {
            let one = &one;
            s.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let a = one(k, i);
                    log.lock().unwrap().push(a);
                    i += 1;
                    // A client that was told to retry waits a little (not the whole
                    // Retry-After: this test wants many requests during the outage).
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
    });
}

/// Wait (bounded) until `cond` holds.
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `POST /v1/rpc/slow {"secs": n}`: a statement that takes n seconds.
fn slow_function(c: &Cluster) {
    c.connect("postgres", DB)
        .unwrap()
        .batch_execute(
            "create schema api; grant usage on schema api to baas_anon, baas_user, baas_service;
             select baas.expose_schema('api');
             create function api.slow(secs float8) returns void language sql volatile as 'select pg_sleep(secs)';",
        )
        .unwrap();
}

#[test]
fn postgres_restarted_under_load_gives_503s_with_retry_after_and_the_proxy_recovers() {
    // Deadline of a request: the answer deadline (2 x 6 s + 10 s) and the pool wait (2 s).
    let deadline = Duration::from_secs(2 * 6 + 10 + 2);
    // Rate limits on (per-account limits counted in Postgres before a sign-in's call),
    // with the per-address limits and in-flight caps out of the load's way.
    let (s, _) = setup(&["--pool-size", "5", "--pool-timeout-secs", "2", "--statement-timeout-ms", "6000",
        "--rate-limits", "on", "--rate-limit-requests-per-minute", "100000", "--rate-limit-auth-per-minute", "1000",
        "--rate-limit-signups-per-hour", "1000", "--max-db-requests-per-ip", "0", "--max-db-requests-per-user", "0",
        "--max-anonymous-db-requests", "0"], false);
    slow_function(&s.cluster);
    let base = s.proxy.base();
    let stop = AtomicBool::new(false);
    let log = Mutex::new(Vec::<Answer>::new());
    let ok = || log.lock().unwrap().iter().filter(|a| a.status == 200).count();
    let (mut stopped_at, mut started_at) = (None, None);
    let mut in_flight = None;
    std::thread::scope(|sc| {

        sc.spawn(|| {
            load(4, &stop, &log, |k, i| {
                if (k + i) % 2 == 0 {
                    send(&base, "GET", "/v1/auth/user", Some(&s.token), None)
                } else {
                    send(&base, "GET", &format!("/v1/collections/{}/documents?limit=5", s.collection), Some(&s.token), None)
                }
            })
        });
        wait_for("20 answers before the restart", 30, || ok() >= 20);
        // A statement running when Postgres stops (the server ends it: 57P01).
        let slow = sc.spawn(|| send(&base, "POST", "/v1/rpc/slow", Some(&s.token), Some(r#"{"secs": 5}"#)));
        let mut admin = s.cluster.connect("postgres", DB).unwrap();
        wait_for("the slow call running", 20, || {
            admin.query_one("select count(*) from pg_stat_activity where wait_event = 'PgSleep'", &[]).unwrap().get::<_, i64>(0) == 1
        });
        drop(admin);
        stopped_at = Some(Instant::now());
        stop_pg(&s.cluster);
        // Down for 3 s under load; a sign-in meanwhile (its per-account count is in
        // Postgres too): the same 503, not 429, within the same deadline.
        let login = send(&base, "POST", "/v1/auth/login", None, Some(r#"{"email": "nobody@example.com", "password": "not this one"}"#));
        assert_retryable(&login, "a login while Postgres is down");
        assert!(login.took <= deadline + Duration::from_secs(5), "a login later than its deadline: {login:?}");
        std::thread::sleep(Duration::from_secs(3).saturating_sub(login.took));
        in_flight = Some(slow.join().unwrap());
        start_pg(&s.cluster);
        started_at = Some(Instant::now());
        let before = ok();
        wait_for("20 answers after the restart", 40, || ok() >= before + 20);
        stop.store(true, Ordering::Relaxed);
    });
    assert_retryable(&in_flight.unwrap(), "a request in flight when Postgres stopped");
    let log = log.into_inner().unwrap();
    let (stopped_at, started_at) = (stopped_at.unwrap(), started_at.unwrap());
    let failed: Vec<&Answer> = log.iter().filter(|a| a.status != 200).collect();
    eprintln!("{} requests, {} not 200", log.len(), failed.len());
    for a in &log {
        assert!(a.took <= deadline + Duration::from_secs(5), "an answer later than its deadline: {a:?}");
        if a.status != 200 {
            assert_retryable(a, "during the restart");
        }
    }
    assert!(log.iter().any(|a| a.status == 503 && a.start >= stopped_at && a.start < started_at), "no request met the outage");
    // Recovered by itself: the last answers of every client are 200s.
    let last: Vec<&Answer> = log.iter().rev().take(8).collect();
    assert!(last.iter().all(|a| a.status == 200), "not recovered: {last:?}");
    let mut proxy = s.proxy;
    assert!(proxy.child.try_wait().unwrap().is_none(), "the proxy exited");
}

#[test]
fn after_kill_9_of_postgres_every_acknowledged_write_is_there_whole() {
    let (s, _) = setup(&["--pool-size", "4", "--pool-timeout-secs", "2", "--statement-timeout-ms", "2000"], false);
    let base = s.proxy.base();
    let stop = AtomicBool::new(false);
    // (batch number, status, the created ids when 2xx)
    let acked = Mutex::new(Vec::<(String, Vec<String>)>::new());
    let sent = Mutex::new(Vec::<String>::new());
    let log = Mutex::new(Vec::<Answer>::new());
    let pid = std::process::id();
    // Each write is a batch of two documents with the same tag, one all or none: a
    // half-applied write would leave one without the other.
    let write = |k: usize, i: usize| {
        let tag = format!("w-{k}-{i}");
        let (a, b) = (format!("01900000-0000-7000-8000-{:04x}{:04x}{:04x}", pid & 0xffff, k, 2 * i), format!("01900000-0000-7000-8000-{:04x}{:04x}{:04x}", pid & 0xffff, k, 2 * i + 1));
        sent.lock().unwrap().push(tag.clone());
        let ops = json!({"operations": [
            {"op": "create", "collection": s.collection, "id": a, "data": {"tag": tag, "part": 1, "text": format!("first of {tag}")}},
            {"op": "create", "collection": s.collection, "id": b, "data": {"tag": tag, "part": 2, "text": format!("second of {tag}")}},
        ]});
        let r = send(&base, "POST", "/v1/batch", Some(&s.token), Some(&ops.to_string()));
        if (200..300).contains(&r.status) {
            acked.lock().unwrap().push((tag, vec![a, b]));
        }
        r
    };
    std::thread::scope(|sc| {
        sc.spawn(|| load(4, &stop, &log, write));
        wait_for("30 acknowledged writes before the kill", 30, || acked.lock().unwrap().len() >= 30);
        kill9_postmaster(&s.cluster);
        std::thread::sleep(Duration::from_secs(1));
        start_pg(&s.cluster);
        let before = acked.lock().unwrap().len();
        wait_for("20 acknowledged writes after recovery", 40, || acked.lock().unwrap().len() >= before + 20);
        stop.store(true, Ordering::Relaxed);
    });
    for a in log.lock().unwrap().iter().filter(|a| !(200..300).contains(&a.status)) {
        assert_retryable(a, "a write during the crash");
    }
    // Every document, read back through the proxy, page by page (a page ends at the
    // response budget; `next` continues after it).
    let mut items = Vec::new();
    let mut after = String::new();
    loop {
        let r = send(&base, "GET", &format!("/v1/collections/{}/documents?limit=1000{after}", s.collection), Some(&s.token), None);
        assert_eq!(r.status, 200, "{:?}", r);
        items.extend(r.body["items"].as_array().unwrap().iter().cloned());
        match r.body["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let acked = acked.into_inner().unwrap();
    let sent = sent.into_inner().unwrap();
    eprintln!("{} writes sent, {} acknowledged, {} documents", sent.len(), acked.len(), items.len());
    assert!(sent.len() > acked.len(), "no write met the crash");
    for (tag, ids) in &acked {
        for (n, id) in ids.iter().enumerate() {
            let d = items.iter().find(|d| d["id"] == id.as_str()).unwrap_or_else(|| panic!("acknowledged write {tag} lost its document {id}"));
            let want = json!({"tag": tag, "part": n + 1, "text": format!("{} of {tag}", if n == 0 { "first" } else { "second" })});
            assert_eq!(d["data"], want, "{tag}");
        }
    }
    // None half-applied: the documents come in whole pairs, acknowledged or not.
    for tag in &sent {
        let parts = items.iter().filter(|d| d["data"]["tag"] == tag.as_str()).count();
        assert!(parts == 0 || parts == 2, "write {tag} is half there ({parts} of 2 documents)");
    }
}

#[test]
fn a_pool_held_by_slow_queries_answers_others_with_503_in_time_and_recovers() {
    let pool_timeout = Duration::from_secs(2);
    let (s, _) = setup(&["--pool-size", "2", "--pool-timeout-secs", "2", "--statement-timeout-ms", "20000"], false);
    slow_function(&s.cluster);
    let base = s.proxy.base();
    std::thread::scope(|sc| {
        let slow: Vec<_> = (0..2).map(|_| sc.spawn(|| send(&base, "POST", "/v1/rpc/slow", Some(&s.token), Some(r#"{"secs": 8}"#)))).collect();
        let mut admin = s.cluster.connect("postgres", DB).unwrap();
        wait_for("both slow queries running", 20, || {
            admin.query_one("select count(*) from pg_stat_activity where wait_event = 'PgSleep' and usename = 'baas_authenticator'", &[]).unwrap().get::<_, i64>(0) == 2
        });
        let others: Vec<Answer> = (0..3).map(|_| send(&base, "GET", "/v1/auth/user", Some(&s.token), None)).collect();
        for a in &others {
            assert_retryable(a, "while the pool is held");
            assert!(a.took <= pool_timeout + Duration::from_secs(3), "answered later than pool_timeout_secs: {a:?}");
        }
        for h in slow {
            let a = h.join().unwrap();
            assert!((200..300).contains(&a.status), "the slow call: {a:?}");
        }
    });
    // Recovered: the slow queries gave their connections back.
    let a = send(&base, "GET", "/v1/auth/user", Some(&s.token), None);
    assert_eq!(a.status, 200, "{a:?}");
}

#[test]
fn a_black_holed_network_fails_requests_within_their_deadline_and_connections_are_replaced_when_it_heals() {
    // Deadline: the answer deadline (2 x 1 s + 10 s) and the pool wait (2 s).
    let answer_deadline = Duration::from_secs(2 + 10);
    let pool_timeout = Duration::from_secs(2);
    let deadline = answer_deadline + pool_timeout;
    // A connection given up on keeps its pool slot while its cancel is tried (5 s) and
    // its answer drained (10 s, pgwire::ABANDON_DRAIN), then it is closed.
    let given_up = Duration::from_secs(5 + 10);
    let (s, relay) = setup(&["--pool-size", "2", "--pool-timeout-secs", "2", "--statement-timeout-ms", "1000"], true);
    let relay = relay.unwrap();
    // `POST /v1/rpc/backend_pid`: which server process served the request.
    slow_function(&s.cluster);
    s.cluster
        .connect("postgres", DB)
        .unwrap()
        .batch_execute("create function api.backend_pid() returns int language sql volatile as 'select pg_backend_pid()';")
        .unwrap();
    let base = s.proxy.base();
    let me = || send(&base, "GET", "/v1/auth/user", Some(&s.token), None);
    let pid = || {
        let a = send(&base, "POST", "/v1/rpc/backend_pid", Some(&s.token), Some("{}"));
        assert_eq!(a.status, 200, "{a:?}");
        a.body.as_i64().unwrap_or_else(|| panic!("a pid: {a:?}"))
    };
    // Warm: both connections open; every backend that served a request.
    let mut before: Vec<i64> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2).map(|_| sc.spawn(|| (0..5).map(|_| pid()).collect::<Vec<_>>())).collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    before.extend(
        s.cluster
            .connect("postgres", DB)
            .unwrap()
            .query("select pid from pg_stat_activity where usename = 'baas_authenticator' and application_name like 'pgbaas-proxy%'", &[])
            .unwrap()
            .iter()
            .map(|r| i64::from(r.get::<_, i32>(0))),
    );
    assert!(!before.is_empty());
    relay.blackhole();
    let blackholed_at = Instant::now();
    // Requests over pooled connections (silent) and waiting for them (pool timeout).
    let answers: Vec<Answer> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4).map(|_| sc.spawn(me)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for a in &answers {
        assert_retryable(a, "while the network is black-holed");
        assert!(a.took <= deadline + Duration::from_secs(5), "answered later than its deadline: {a:?}");
    }
    // Still black-holed once the connections given up on are closed: the pool is cold,
    // and a request needing a new connection gets its 503 within pool_timeout_secs.
    let cold = answer_deadline + given_up + Duration::from_secs(5);
    std::thread::sleep(cold.saturating_sub(blackholed_at.elapsed()));
    let a = me();
    assert_retryable(&a, "a cold pool while the network is black-holed");
    assert!(a.took <= pool_timeout + Duration::from_secs(3), "answered later than pool_timeout_secs: {a:?}");
    relay.heal();
    // Served again by the same proxy, on connections opened after the heal: none of
    // the server processes that served before the black hole.
    wait_for("a request succeeding after the heal", 40, || me().status == 200);
    let after: Vec<i64> = (0..6).map(|_| pid()).collect();
    assert!(after.iter().all(|p| !before.contains(p)), "a connection from before the black hole served after it: before {before:?}, after {after:?}");
    let mut proxy = s.proxy;
    assert!(proxy.child.try_wait().unwrap().is_none(), "the proxy exited");
}
