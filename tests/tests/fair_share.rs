//! Query cost bounded per caller (issue 13), against the real proxy and Postgres:
//! anonymous callers' queries run under a shorter statement timeout; database-bound
//! requests in flight are capped per client address, per user, and for anonymous
//! callers together, so an attacker flooding expensive filters from one address or a
//! few cannot take the pool from everyone else; a request that gets no pooled connection in time is a 503 with Retry-After.
//!
//! The tests of this file run one at a time: the flood test measures latencies.

mod common;
use common::*;
use pgbaas_testkit::Proxy;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Public documents in the expensive collection: enough that the filter below costs
/// seconds of CPU (measured 2.1 s for the page and the count together, signed in, on
/// this 2-core machine), yet loads in a second.
const DOCS: i64 = 4_000;

/// A listing of a collection anyone may read, of `DOCS` documents, with `$in` over
/// `values` values (none matching, so every row is compared with all of them) on an
/// unindexed field, and a count (a second scan). At 500 values, the longest list the
/// complexity bound allows, the most expensive listing it allows without an index.
fn listing(values: i64) -> String {
    let values: Vec<i64> = (1_000_000..1_000_000 + values).collect();
    let filter = json!({"n": {"$in": values}}).to_string();
    format!("{}?count=true&limit=20&where={}", docs_path(public_collection()), enc(&filter))
}

fn expensive() -> String {
    listing(500)
}

fn public_collection() -> &'static str {
    static C: OnceLock<String> = OnceLock::new();
    C.get_or_init(|| {
        let c = collection("fair", json!({}));
        admin()
            .execute(
                "insert into baas.documents (collection_id, id, data, acl_read)
                 select c.id, baas.uuid7(), jsonb_build_object('n', g), '{public}'
                   from baas.collections c, generate_series(1, $2::bigint) g where c.name = $1",
                &[&c, &DOCS],
            )
            .unwrap();
        admin().batch_execute("analyze baas.documents").unwrap();
        c
    })
}

fn from(ip: &str) -> [(&'static str, String); 1] {
    [("X-Forwarded-For", ip.to_string())]
}

fn get_from(base: &str, path: &str, token: Option<&str>, ip: &str) -> Resp {
    let h = from(ip);
    let headers: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    request_at(base, "GET", path, token, &headers, None)
}

/// The p99 of `samples` (nearest rank).
fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64) * 0.99).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

#[test]
fn anonymous_queries_are_cut_at_the_shorter_timeout_and_signing_in_lifts_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let path = &expensive();
    let url = env().cluster.authenticator_url().unwrap();
    // 10 ms for anonymous callers: far below the expensive filter's cost, and below
    // one password hash (~25 ms), which sign-up and login must still get.
    let p = Proxy::start(&url, &["--anon-statement-timeout-ms", "10", "--statement-timeout-ms", "60000"]).unwrap();
    let anon = request_at(&p.base(), "GET", path, None, &[], None);
    assert_eq!((anon.status, anon.code()), (503, "query_timeout"), "{}", anon.body);
    let message = anon.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("10 ms") && message.contains("sign in"), "{message}");
    let u = signup("fair-timeout");
    let started = Instant::now();
    let signed_in = request_at(&p.base(), "GET", path, Some(&u.access), &[], None);
    println!("the expensive filter signed in: {:?}", started.elapsed());
    assert_eq!(signed_in.status, 200, "the same query signed in: {}", signed_in.body);
    assert_eq!(signed_in.body["count"], 0, "no value of the list matches");
    // Sign-up and login cost one password hash whatever the client sends: they keep
    // the long timeout, though anonymous.
    let e = email("fair-timeout");
    let body = json!({"email": e, "password": PASSWORD}).to_string();
    let r = request_at(&p.base(), "POST", "/v1/auth/signup", None, &[], Some(&body));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = request_at(&p.base(), "POST", "/v1/auth/login", None, &[], Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_flood_of_expensive_anonymous_filters_from_one_address_leaves_a_signed_in_user_served() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let flood_path = &expensive();
    let url = env().cluster.authenticator_url().unwrap();
    // Production limits, except a pool of 6 and 3 requests in flight per address,
    // so that the attacker's 12 parallel requests are four times what one address may
    // have in flight and twice the pool: without the cap they would hold every
    // connection, and the user would queue behind them into 503s.
    let p = Proxy::start(
        &url,
        &["--rate-limits", "on", "--trusted-proxies", "127.0.0.1", "--pool-size", "6", "--max-db-requests-per-ip", "3"],
    )
    .unwrap();
    let base = p.base();
    let u = signup("fair-user");
    let mine = collection("fair_mine", json!({}));
    let doc = create_doc(&mine, Some(&u.access), json!({"title": "mine"}), None);
    let user_paths = [doc_path(&mine, &doc), format!("{}?limit=10", docs_path(&mine))];
    // Steady: one request every 30 ms (a page of an app polling), 100 of them: the
    // flood phase spans several of the attacker's one-second queries.
    let user_runs = |n: usize| -> Vec<Duration> {
        (0..n)
            .map(|i| {
                let started = Instant::now();
                let r = get_from(&base, &user_paths[i % 2], Some(&u.access), "192.0.2.50");
                let took = started.elapsed();
                assert_eq!(r.status, 200, "the user's request {i}: {}", r.body);
                std::thread::sleep(Duration::from_millis(30).saturating_sub(took));
                took
            })
            .collect()
    };
    user_runs(5); // warm-up: connections opened, plans cached
    let mut idle = user_runs(100);

    let stop = AtomicBool::new(false);
    let statuses: Mutex<Vec<(u16, String, Option<String>)>> = Mutex::new(Vec::new());
    let in_cap_refusals = AtomicUsize::new(0);
    let mut flood = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..12 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let r = get_from(&base, flood_path, None, "203.0.113.66");
                    let refused = r.status == 429;
                    if r.code() == "too_many_concurrent_requests" {
                        in_cap_refusals.fetch_add(1, Ordering::Relaxed);
                    }
                    statuses.lock().unwrap().push((r.status, r.code().to_string(), r.header("Retry-After").map(str::to_string)));
                    if refused {
                        // The test's own client must not take the cores the measurement
                        // needs; the proxy answers a refusal in microseconds either way.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            });
        }
        // The flood is on once the cap has refused someone.
        wait_until("the attacker is refused by the in-flight cap", || in_cap_refusals.load(Ordering::Relaxed) > 0);
        flood = user_runs(100);
        // /healthz is outside every per-address limit.
        let h = get_from(&base, "/healthz", None, "203.0.113.66");
        assert_eq!(h.status, 200, "{}", h.body);
        stop.store(true, Ordering::Relaxed);
    });

    let statuses = statuses.into_inner().unwrap();
    let count = |status: u16, code: &str| statuses.iter().filter(|(s, c, _)| *s == status && c == code).count();
    let (ok, capped, timed_out) = (count(200, ""), count(429, "too_many_concurrent_requests"), count(503, "query_timeout"));
    let rate_limited = count(429, "rate_limited");
    let (idle_p99, flood_p99) = (p99(&mut idle), p99(&mut flood));
    println!(
        "idle p99 {idle_p99:?}, flood p99 {flood_p99:?}; attacker: {} requests, {ok} answered, {capped} refused by the in-flight cap, \
         {rate_limited} by the rate limit, {timed_out} cut at the anonymous timeout",
        statuses.len()
    );
    for (status, code, retry_after) in &statuses {
        match (status, code.as_str()) {
            (200, _) | (503, "query_timeout") => {}
            (429, _) => assert_eq!(retry_after.as_deref().map(|v| v.parse::<u64>().is_ok()), Some(true), "429 without Retry-After"),
            other => panic!("the attacker got {other:?}: only answers, 429s and the anonymous timeout are expected"),
        }
    }
    assert!(capped > 0);
    // Generous: on 2 shared cores the attacker's 3 queries still compete with the
    // user's for CPU (measured: idle p99 2.5-23 ms, flood p99 17-78 ms); what the cap
    // removes is the wait behind the attacker for a connection: with the cap off
    // (`--max-db-requests-per-ip 0`) the same flood took the user's p99 from 2.3 ms to
    // 1.95 s. Below 10 ms a p99 is scheduler noise, so the idle figure counts as at
    // least 10 ms.
    let bound = idle_p99.max(Duration::from_millis(10)) * 30;
    assert!(flood_p99 <= bound, "the user's p99 under the flood {flood_p99:?} > 30 x idle p99 {idle_p99:?}");
}

/// The per-address cap alone let a few addresses hold every connection (two at the
/// old default of 8 with a pool of 16; one IPv6 customer's /56 is one address now).
/// Requests without a token share one cap besides, half the pool by default: an
/// anonymous attacker on two addresses, each within its own cap, holds half the pool,
/// and a signed-in user keeps being served from the other half.
#[test]
fn an_anonymous_flood_from_two_addresses_leaves_a_signed_in_user_connections() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let flood_path = &expensive();
    let url = env().cluster.authenticator_url().unwrap();
    // A pool of 4 and 2 requests in flight per address: the two addresses' 4 would be
    // the whole pool. The attacker's queries may run 5 s (the expensive filter takes
    // about 2), longer than the 1 s a request waits for a connection: without the
    // anonymous cap (2 by default: half the pool) the user's requests got 503s.
    let p = Proxy::start(
        &url,
        &[
            "--rate-limits", "on", "--trusted-proxies", "127.0.0.1", "--pool-size", "4", "--max-db-requests-per-ip", "2",
            "--pool-timeout-secs", "1", "--anon-statement-timeout-ms", "5000",
        ],
    )
    .unwrap();
    let base = p.base();
    let u = signup("fair-two");
    let mine = collection("fair_two", json!({}));
    let doc = create_doc(&mine, Some(&u.access), json!({"title": "mine"}), None);
    let path = doc_path(&mine, &doc);
    let stop = AtomicBool::new(false);
    let anonymous_refusals = AtomicUsize::new(0);
    let unexpected: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut user_failures = Vec::new();
    std::thread::scope(|s| {
        for i in 0..6 {
            let (stop, anonymous_refusals, unexpected, base) = (&stop, &anonymous_refusals, &unexpected, &base);
            s.spawn(move || {
                let ip = ["203.0.113.80", "203.0.113.81"][i % 2];
                while !stop.load(Ordering::Relaxed) {
                    let r = get_from(base, flood_path, None, ip);
                    match (r.status, r.code()) {
                        (200, _) | (503, "query_timeout") => {}
                        (429, "too_many_concurrent_requests") => {
                            let m = r.body["error"]["message"].as_str().unwrap_or_default().to_string();
                            if m.contains("requests without a token are in flight") {
                                anonymous_refusals.fetch_add(1, Ordering::Relaxed);
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        _ => unexpected.lock().unwrap().push(r.body.to_string()),
                    }
                }
            });
        }
        // (A panic here would leave the attacker's threads running: no wait_until.)
        let deadline = Instant::now() + Duration::from_secs(20);
        while anonymous_refusals.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if anonymous_refusals.load(Ordering::Relaxed) == 0 {
            user_failures.push("the attacker was never refused by the anonymous cap".to_string());
        }
        // The user, from a third address, while both of the attacker's hold requests.
        for _ in 0..30 {
            let r = get_from(&base, &path, Some(&u.access), "192.0.2.51");
            if r.status != 200 {
                user_failures.push(format!("{} {}", r.status, r.body));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(user_failures.is_empty(), "the signed-in user's requests under the flood failed: {user_failures:?}");
    let unexpected = unexpected.into_inner().unwrap();
    assert!(unexpected.is_empty(), "the attacker got other answers than results, 429s and timeouts: {unexpected:?}");
}

#[test]
fn one_user_is_capped_whatever_the_address_and_service_tokens_are_not() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A tenth of the worst filter (~0.2 s): long enough that five requests started
    // together overlap, short enough that five at once stay far from the timeout.
    let path = &listing(50);
    let url = env().cluster.authenticator_url().unwrap();
    let p = Proxy::start(
        &url,
        &["--rate-limits", "on", "--trusted-proxies", "127.0.0.1", "--max-db-requests-per-user", "2", "--pool-size", "8", "--statement-timeout-ms", "60000"],
    )
    .unwrap();
    let base = p.base();
    let u = signup("fair-capped");
    let service = service_token();
    let run = |token: &str| -> Vec<Resp> {
        let barrier = Arc::new(Barrier::new(5));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..5)
                .map(|i| {
                    let (barrier, base) = (barrier.clone(), base.clone());
                    s.spawn(move || {
                        barrier.wait();
                        // Each from its own address: the cap is the user's.
                        get_from(&base, path, Some(token), &format!("198.51.100.{i}"))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    let user = run(&u.access);
    let refused: Vec<&Resp> = user.iter().filter(|r| r.status == 429).collect();
    assert!(!refused.is_empty(), "5 at once against a cap of 2: {:?}", user.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in &refused {
        assert_eq!(r.code(), "too_many_concurrent_requests", "{}", r.body);
        assert_eq!(r.header("Retry-After"), Some("1"));
        assert!(r.body["error"]["message"].as_str().unwrap().contains("this user already has 2 requests in flight"), "{}", r.body);
    }
    assert!(user.iter().all(|r| r.status == 200 || r.status == 429), "{:?}", user.iter().map(|r| &r.body).collect::<Vec<_>>());
    // A service token is the operator's own backend: not capped.
    let backend = run(&service);
    assert!(backend.iter().all(|r| r.status == 200), "{:?}", backend.iter().map(|r| &r.body).collect::<Vec<_>>());
}

#[test]
fn a_request_that_gets_no_connection_within_the_pool_timeout_is_503_with_retry_after() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let url = env().cluster.authenticator_url().unwrap();
    let p = Proxy::start(&url, &["--pool-size", "1", "--pool-timeout-secs", "1"]).unwrap();
    let base = p.base();
    let u = signup("fair-pool");
    let c = collection("fair_pool", json!({}));
    let doc = create_doc(&c, Some(&u.access), json!({"v": 1}), None);
    // The one connection waits on a row lock held here.
    let mut db = admin();
    let mut tx = db.transaction().unwrap();
    let uuid: Value = json!(doc);
    tx.execute("select 1 from baas.documents where id = $1::text::uuid for update", &[&uuid.as_str().unwrap()]).unwrap();
    let me: i32 = tx.query_one("select pg_backend_pid()", &[]).unwrap().get(0);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let body = json!({"data": {"v": 2}}).to_string();
            request_at(&base, "PUT", &doc_path(&c, &doc), Some(&u.access), &[], Some(&body))
        });
        let mut watch = admin();
        wait_until("the write waits on the row lock", || {
            watch.query_one("select count(*) from pg_stat_activity where $1 = any(pg_blocking_pids(pid))", &[&me]).unwrap().get::<_, i64>(0) > 0
        });
        let r = request_at(&base, "GET", &doc_path(&c, &doc), Some(&u.access), &[], None);
        assert_eq!((r.status, r.code()), (503, "database_unavailable"), "{}", r.body);
        assert_eq!(r.header("Retry-After"), Some("1"));
        tx.commit().unwrap();
        let w = writer.join().unwrap();
        assert_eq!(w.status, 200, "the write finishes once the lock is gone: {}", w.body);
    });
    let r = request_at(&base, "GET", &doc_path(&c, &doc), Some(&u.access), &[], None);
    assert_eq!((r.status, &r.body["data"]["v"]), (200, &json!(2)));
}

#[test]
fn a_request_whose_client_went_away_frees_its_slot() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let path = expensive();
    let url = env().cluster.authenticator_url().unwrap();
    let p = Proxy::start(&url, &["--rate-limits", "on", "--trusted-proxies", "127.0.0.1", "--max-db-requests-per-ip", "1"]).unwrap();
    let base = p.base();
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n").unwrap();
        s.flush().unwrap();
        let mut db = admin();
        wait_until("the listing runs", || {
            let running: i64 = db
                .query_one("select count(*) from pg_stat_activity where state = 'active' and query like '%baas.list_documents%' and pid <> pg_backend_pid()", &[])
                .unwrap()
                .get(0);
            running > 0
        });
    } // the client goes away before the answer
    let cheap = "/v1/collections/none/documents";
    // The abandoned request holds the address's one slot while its query runs (cut at
    // the anonymous timeout, 1 s)...
    let r = get_from(&base, cheap, None, "203.0.113.7");
    assert_eq!(r.code(), "too_many_concurrent_requests", "{}", r.body);
    // ...and frees it when it ends.
    wait_until("the slot is freed", || get_from(&base, cheap, None, "203.0.113.7").status != 429);
}
