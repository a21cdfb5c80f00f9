//! Read replicas and read-your-writes (issue 19, package E): a real primary, a real
//! streaming replica of it (`pg_basebackup -R`, tests/src/replica.rs) and the real proxy
//! given both. Which server answered a read is shown the only way a client can see it:
//! with the replica's replay paused, a read the replica answers lacks the newest write,
//! and one the primary answers has it.

mod common;

use common::{request_at, Resp, PASSWORD};
use pgbaas_testkit::replica::Replica;
use pgbaas_testkit::{Cluster, Proxy, DB};
use serde_json::{json, Value};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

struct Env {
    cluster: Cluster,
    replica: Replica,
    proxy: Proxy,
    service: String,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::temporary().expect("start a Postgres cluster");
        let url = cluster.authenticator_url().expect("authenticator password");
        let service: String = cluster
            .connect("postgres", DB)
            .unwrap()
            .query_one("select baas.create_service_token('replica-tests', '1 hour') ->> 'token'", &[])
            .unwrap()
            .get(0);
        let replica = Replica::of(&cluster).expect("start a streaming replica");
        let replica_url = replica.authenticator_url(&cluster).unwrap();
        // A long time bound: the tests pause replay to show who answered (one test
        // starts a proxy of its own with a short one).
        let proxy = Proxy::start(&url, &["--pool-size", "4", "--replica-urls", &replica_url, "--replica-max-lag-ms", "60000"]).expect("start the proxy");
        Env { cluster, replica, proxy, service }
    })
}

/// The tests pause and stop the one replica: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn req(method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Option<Value>) -> Resp {
    let body = body.map(|b| b.to_string());
    let r = request_at(&env().proxy.base(), method, path, token, headers, body.as_deref());
    assert!(r.status < 500, "{method} {path} gave {}: {}", r.status, r.body);
    r
}

fn signup(tag: &str) -> String {
    let r = req("POST", "/v1/auth/signup", None, &[], Some(json!({"email": common::email(tag), "password": PASSWORD})));
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["access_token"].as_str().unwrap().to_string()
}

fn collection(tag: &str) -> String {
    let name = format!("{tag}_{}", std::process::id());
    let r = req("POST", "/v1/collections", Some(&env().service), &[], Some(json!({"name": name})));
    assert_eq!(r.status, 201, "{}", r.body);
    name
}

/// Create a document; its id and the write's commit position.
fn create(c: &str, token: &str, data: Value) -> (String, String) {
    let r = req("POST", &format!("/v1/collections/{c}/documents"), Some(token), &[], Some(json!({"data": data})));
    assert_eq!(r.status, 201, "{}", r.body);
    let lsn = r.header("pgbaas-commit-lsn").unwrap_or_else(|| panic!("a write answers its commit position: {:?}", r.headers)).to_string();
    (r.body["id"].as_str().unwrap().to_string(), lsn)
}

fn ids(r: &Resp) -> Vec<String> {
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["items"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect()
}

fn list(c: &str, token: &str, headers: &[(&str, &str)]) -> Vec<String> {
    ids(&req("GET", &format!("/v1/collections/{c}/documents"), Some(token), headers, None))
}

fn replica_state() -> Value {
    let r = req("GET", "/healthz", None, &[], None);
    r.body["replicas"][0].clone()
}

/// Wait until /healthz says the replica is (or is not) in rotation.
fn wait_rotation(on: bool, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = replica_state();
        if s["in_rotation"] == json!(on) {
            return;
        }
        assert!(Instant::now() < deadline, "the replica's rotation did not become {on} within {within:?}: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Replay paused for the guard's life (resumed when dropped, also when a test fails).
struct Paused;
impl Paused {
    fn new() -> Paused {
        env().replica.catch_up(&env().cluster).unwrap();
        env().replica.pause_replay().unwrap();
        Paused
    }
}
impl Drop for Paused {
    fn drop(&mut self) {
        let _ = env().replica.resume_replay();
    }
}

#[test]
fn reads_are_answered_by_the_replica_writes_by_the_primary_under_the_same_permissions() {
    let _s = serial();
    let c = collection("rr_reads");
    let (alice, bob) = (signup("rr-alice"), signup("rr-bob"));
    let (first, _) = create(&c, &alice, json!({"n": 1}));
    wait_rotation(true, Duration::from_secs(10));
    let s = replica_state();
    assert_eq!(s["replica"], json!(1), "named by its place in replica_urls: {s}");
    assert!(s["lag_bytes"].is_u64(), "{s}");
    let all = req("GET", "/healthz", None, &[], None).body.to_string();
    assert!(!all.contains(&format!(":{}", env().replica.port)) && !all.contains("127.0.0.1"), "anyone reads /healthz: no host or port there: {all}");

    let paused = Paused::new();
    // The write goes to the primary (a replica refuses writes): it succeeds and is there.
    let (second, _) = create(&c, &alice, json!({"n": 2}));
    let on_primary: i64 = env()
        .cluster
        .connect("postgres", DB)
        .unwrap()
        .query_one("select count(*) from baas.documents where id = $1::text::uuid", &[&second])
        .unwrap()
        .get(0);
    assert_eq!(on_primary, 1);
    // Reads without a commit position are the replica's: it has not replayed the write.
    assert_eq!(list(&c, &alice, &[]), vec![first.clone()], "the list was answered by the paused replica");
    let r = req("GET", &format!("/v1/collections/{c}/documents/{second}"), Some(&alice), &[], None);
    assert_eq!(r.status, 404, "a document GET is the replica's too: {}", r.body);
    // The same row-level security there: Bob cannot read Alice's document, she can.
    let r = req("GET", &format!("/v1/collections/{c}/documents/{first}"), Some(&alice), &[], None);
    assert_eq!((r.status, r.body["data"]["n"].clone()), (200, json!(1)), "{}", r.body);
    let r = req("GET", &format!("/v1/collections/{c}/documents/{first}"), Some(&bob), &[], None);
    assert_eq!(r.status, 404, "another user's private document stays hidden on the replica: {}", r.body);
    assert!(list(&c, &bob, &[]).is_empty(), "and out of his list");
    let r = req("GET", &format!("/v1/collections/{c}/documents"), None, &[], None);
    assert!(r.status == 401 || r.status == 403 || ids(&r).is_empty(), "anonymous callers see nothing: {} {}", r.status, r.body);
    drop(paused);
    env().replica.catch_up(&env().cluster).unwrap();
    let mut both = list(&c, &alice, &[]);
    both.sort();
    let mut want = vec![first, second];
    want.sort();
    assert_eq!(both, want, "replayed, the replica has the write");
}

#[test]
fn a_read_carrying_the_writes_commit_position_sees_the_write() {
    let _s = serial();
    let c = collection("rr_ryw");
    let alice = signup("rr-ryw");
    wait_rotation(true, Duration::from_secs(10));
    let paused = Paused::new();
    let (id, lsn) = create(&c, &alice, json!({"n": 3}));
    let path = format!("/v1/collections/{c}/documents/{id}");
    // Without the position: the paused replica answers, without the write.
    assert_eq!(req("GET", &path, Some(&alice), &[], None).status, 404);
    // With it (header or cookie): the replica has not replayed it within the wait, so
    // the primary answers.
    let r = req("GET", &path, Some(&alice), &[("Pgbaas-Commit-Lsn", &lsn)], None);
    assert_eq!((r.status, r.body["data"]["n"].clone()), (200, json!(3)), "{}", r.body);
    assert_eq!(list(&c, &alice, &[("Cookie", &format!("theme=dark; pgbaas_lsn={lsn}"))]), vec![id.clone()]);
    assert!(list(&c, &alice, &[]).is_empty(), "still the replica's answer without it");
    // A position that is not one is the client's mistake.
    let r = req("GET", &path, Some(&alice), &[("Pgbaas-Commit-Lsn", "yesterday")], None);
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
    // A position past anything the primary wrote: the primary answers (at once).
    let r = req("GET", &path, Some(&alice), &[("Pgbaas-Commit-Lsn", "FFFFFFFF/FFFFFFFF")], None);
    assert_eq!(r.status, 200, "{}", r.body);
    drop(paused);
    // Replayed, the replica itself answers reads carrying the position: shown with its
    // replay paused again and a newer write that only the primary has.
    let _paused = Paused::new();
    let (newer, _) = create(&c, &alice, json!({"n": 4}));
    let seen = list(&c, &alice, &[("Pgbaas-Commit-Lsn", &lsn)]);
    assert_eq!(seen, vec![id.clone()], "the replica answered (it lacks {newer}), and it had the write the position named");
}

#[test]
fn a_read_right_after_sign_in_is_answered_though_the_replica_has_not_seen_the_session() {
    let _s = serial();
    let c = collection("rr_login");
    let email = common::email("rr-login");
    let r = req("POST", "/v1/auth/signup", None, &[], Some(json!({"email": email, "password": PASSWORD})));
    assert_eq!(r.status, 201, "{}", r.body);
    let old = r.body["access_token"].as_str().unwrap().to_string();
    let (first, _) = create(&c, &old, json!({"n": 1}));
    wait_rotation(true, Duration::from_secs(10));
    let _paused = Paused::new();
    // Sign in: a new session, on the primary only.
    let r = req("POST", "/v1/auth/login", None, &[], Some(json!({"email": email, "password": PASSWORD})));
    let fresh = r.body["access_token"].as_str().unwrap_or_else(|| panic!("login: {} {}", r.status, r.body)).to_string();
    let r = req("GET", "/v1/auth/user", Some(&fresh), &[], None);
    assert_eq!(r.status, 200, "the first read after sign-in works: {}", r.body);
    assert!(r.body.to_string().contains(&email), "the caller's own account: {}", r.body);
    let r = req("GET", &format!("/v1/collections/{c}/documents/{first}"), Some(&fresh), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    // And the replica was in rotation all along: it answers the older session's reads,
    // without a write it has not replayed.
    let (second, _) = create(&c, &old, json!({"n": 2}));
    assert_eq!(list(&c, &old, &[]), vec![first], "the paused replica answered, without {second}");
}

#[test]
fn an_indexs_state_is_the_primarys() {
    let _s = serial();
    let c = collection("rr_index");
    let service = env().service.clone();
    wait_rotation(true, Duration::from_secs(10));
    let _paused = Paused::new();
    let r = req("POST", &format!("/v1/collections/{c}/indexes"), Some(&service), &[], Some(json!({"path": "title"})));
    assert_eq!(r.status, 202, "{}", r.body);
    // The paused replica has not heard of the index: the primary answers.
    let r = req("GET", &format!("/v1/collections/{c}/indexes/title"), Some(&service), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = req("GET", &format!("/v1/collections/{c}/indexes"), Some(&service), &[], None);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1), "{}", r.body);
}

#[test]
fn a_replica_that_does_not_replay_leaves_the_rotation_after_replica_max_lag_ms() {
    let _s = serial();
    let e = env();
    let url = e.cluster.authenticator_url().unwrap();
    let replica_url = e.replica.authenticator_url(&e.cluster).unwrap();
    let strict = Proxy::start(&url, &["--pool-size", "2", "--replica-urls", &replica_url, "--replica-max-lag-ms", "1000"]).unwrap();
    let state = || request_at(&strict.base(), "GET", "/healthz", None, &[], None).body["replicas"][0].clone();
    let wait_strict = |on: bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = state();
            if s["in_rotation"] == json!(on) {
                return s;
            }
            assert!(Instant::now() < deadline, "the strict proxy's replica did not become in_rotation={on}: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let c = collection("rr_lag");
    let alice = signup("rr-lag");
    wait_strict(true);
    wait_rotation(true, Duration::from_secs(10));
    let paused = Paused::new();
    let (id, _) = create(&c, &alice, json!({"n": 1}));
    // A few kB behind, far under replica_max_lag_bytes, but not replaying: out.
    let s = wait_strict(false);
    assert!(s["lag_bytes"].as_u64().is_some_and(|l| l < 16 << 20), "{s}");
    let r = request_at(&strict.base(), "GET", &format!("/v1/collections/{c}/documents"), Some(&alice), &[], None);
    assert_eq!(ids(&r), vec![id.clone()], "out of rotation, the primary answers, with the write");
    // The proxy allowing 60 s keeps it for now: its answer lacks the write.
    assert!(list(&c, &alice, &[]).is_empty(), "the other proxy's replica answered");
    drop(paused);
    wait_strict(true);
}

#[test]
fn without_replicas_a_commit_position_is_ignored() {
    let url = env().cluster.authenticator_url().unwrap();
    let plain = Proxy::start(&url, &["--pool-size", "2"]).unwrap();
    let alice = signup("rr-plain");
    let r = request_at(&plain.base(), "GET", "/v1/auth/user", Some(&alice), &[("Pgbaas-Commit-Lsn", "yesterday")], None);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_stopped_replica_leaves_the_rotation_reads_go_on_and_it_comes_back() {
    let _s = serial();
    let c = collection("rr_health");
    let alice = signup("rr-health");
    let (first, _) = create(&c, &alice, json!({"n": 1}));
    wait_rotation(true, Duration::from_secs(10));
    env().replica.catch_up(&env().cluster).unwrap();
    env().replica.stop().unwrap();
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = env().replica.start();
            }
        }
    }
    let restart = Restart;
    // Every read succeeds: the first ones may meet the dead replica and are run again
    // on the primary.
    for _ in 0..10 {
        assert_eq!(list(&c, &alice, &[]), vec![first.clone()]);
    }
    wait_rotation(false, Duration::from_secs(5));
    assert!(replica_state()["lag_bytes"].is_null(), "a replica that does not answer has no known lag: {}", replica_state());
    let (second, _) = create(&c, &alice, json!({"n": 2}));
    assert_eq!(list(&c, &alice, &[]).len(), 2, "out of rotation, the primary answers, newest write included");
    let r = req("GET", &format!("/v1/collections/{c}/documents/{second}"), Some(&alice), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);

    env().replica.start().unwrap();
    drop(restart);
    wait_rotation(true, Duration::from_secs(15));
    // Back in rotation: it answers reads again (shown with its replay paused).
    let _paused = Paused::new();
    let (third, _) = create(&c, &alice, json!({"n": 3}));
    let seen = list(&c, &alice, &[]);
    assert_eq!(seen.len(), 2, "the replica answered again, without the newest write: {seen:?}");
    assert!(!seen.contains(&third));
}

#[test]
fn a_stable_function_over_get_is_a_replica_read_and_a_post_goes_to_the_primary() {
    let _s = serial();
    let admin = || env().cluster.connect("postgres", DB).unwrap();
    admin()
        .batch_execute(
            "create schema rr_api;
             grant usage on schema rr_api to baas_anon, baas_user, baas_service;
             select baas.expose_schema('rr_api');
             create table rr_api.marks (n integer);
             insert into rr_api.marks values (1);
             grant select on rr_api.marks to baas_anon, baas_user, baas_service;
             create function rr_api.marks_seen() returns integer language sql stable as 'select count(*)::integer from rr_api.marks';
             create function rr_api.xid_now() returns text language sql stable as 'select txid_current()::text';
             create function rr_api.refuse() returns void language plpgsql stable
                 as $$begin raise exception 'in recovery: %', pg_is_in_recovery(); end$$;",
        )
        .unwrap();
    let alice = signup("rr-rpc");
    wait_rotation(true, Duration::from_secs(10));
    let _paused = Paused::new();
    admin().execute("insert into rr_api.marks values (2)", &[]).unwrap();
    // A GET calls only STABLE and IMMUTABLE functions: a read, which the paused replica
    // answers (without the newest row).
    let r = req("GET", "/v1/rpc/marks_seen", Some(&alice), &[], None);
    assert_eq!((r.status, r.body.clone()), (200, json!(1)), "GET of a stable function: answered by the replica");
    // A POST may call any function: the primary answers.
    let r = req("POST", "/v1/rpc/marks_seen", Some(&alice), &[], Some(json!({})));
    assert_eq!((r.status, r.body.clone()), (200, json!(2)), "POST: the primary answered");
    // Read-your-writes holds for RPC reads too: with the primary's commit position, the
    // replica cannot answer in time and the primary does.
    let lsn: String = admin().query_one("select pg_catalog.pg_current_wal_lsn()::text", &[]).unwrap().get(0);
    let r = req("GET", "/v1/rpc/marks_seen", Some(&alice), &[("Pgbaas-Commit-Lsn", &lsn)], None);
    assert_eq!((r.status, r.body.clone()), (200, json!(2)), "GET after the write's position: the primary answered");
    // txid_current cannot run on a standby (XX000 there): run again on the primary.
    let r = req("GET", "/v1/rpc/xid_now", Some(&alice), &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.as_str().is_some_and(|x| x.parse::<u64>().is_ok()), "{}", r.body);
    // A function's own error is its answer, given by the replica: not run again on the
    // primary (which would double the work of every refusal).
    let r = req("GET", "/v1/rpc/refuse", Some(&alice), &[], None);
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("raised")), "{}", r.body);
    assert_eq!(r.body["error"]["message"], "in recovery: t", "answered by the replica alone: {}", r.body);
}

#[test]
fn an_upload_answers_its_commit_position() {
    let _s = serial();
    let c = format!("rr_files_{}", std::process::id());
    let r = req("POST", "/v1/collections", Some(&env().service), &[], Some(json!({"name": c, "options": {"bucket": true}})));
    assert_eq!(r.status, 201, "{}", r.body);
    let alice = signup("rr-files");
    wait_rotation(true, Duration::from_secs(10));
    let _paused = Paused::new();
    let r = common::files::upload_at(&env().proxy.base(), Some(&alice), &c, "a.txt", b"hello", "text/plain");
    assert_eq!(r.status, 201, "{}", r.body);
    let lsn = r.header("pgbaas-commit-lsn").unwrap_or_else(|| panic!("an upload answers its commit position: {:?}", r.headers)).to_string();
    let meta = format!("/v1/files/{}/meta", r.body["id"].as_str().unwrap());
    assert_eq!(req("GET", &meta, Some(&alice), &[], None).status, 404, "without it the paused replica answers");
    let r = req("GET", &meta, Some(&alice), &[("Pgbaas-Commit-Lsn", &lsn)], None);
    assert_eq!(r.status, 200, "{}", r.body);
}
