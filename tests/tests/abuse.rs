//! End-to-end abuse resistance against the real proxy and Postgres: rate limits
//! (on, as in production), sign-in throttling, forged tokens that never reach the
//! database, injection and pg_sleep in every slot, slow and oversized clients.

mod common;
use common::*;
use pgbaas_testkit::Proxy;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct R {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

/// A request whose answer must not be a 5xx.
fn req(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> R {
    let r = req_any(base, method, path, headers, body);
    assert!(r.status < 500, "{method} {path}: {} {}", r.status, r.body);
    r
}

fn req_any(base: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> R {
    let r = request_at(base, method, path, None, headers, body);
    let retry_after = r.header("Retry-After").map(str::to_string);
    R { status: r.status, body: r.body, retry_after }
}

fn limited_proxy(extra: &[&str]) -> Proxy {
    let url = env().cluster.authenticator_url().unwrap();
    let mut args = vec!["--rate-limits", "on"];
    args.extend_from_slice(extra);
    Proxy::start(&url, &args).unwrap()
}

fn login_body(email: &str, password: &str) -> String {
    json!({"email": email, "password": password}).to_string()
}

#[test]
fn logins_are_limited_per_account_and_per_ip_with_retry_after() {
    let p = limited_proxy(&["--rate-limit-account-per-minute", "3", "--rate-limit-auth-per-minute", "6"]);
    let u = signup("rl-account");
    for i in 0..3 {
        let r = req(&p.base(), "POST", "/v1/auth/login", &[], Some(&login_body(&u.email, "wrong password 1")));
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
    }
    let r = req(&p.base(), "POST", "/v1/auth/login", &[], Some(&login_body(&u.email, PASSWORD)));
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (429, Some("rate_limited")), "{}", r.body);
    let wait: u64 = r.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // The same address, another account: the account limit is per account...
    let other = signup("rl-account-2");
    assert_eq!(req(&p.base(), "POST", "/v1/auth/login", &[], Some(&login_body(&other.email, PASSWORD))).status, 200);
    // ...and the per-IP limit (6) is reached after 6 attempts in all.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(req(&p.base(), "POST", "/v1/auth/login", &[], Some(&login_body(&other.email, "wrong password 1"))).status);
    }
    assert_eq!(statuses, [401, 429, 429], "the 6th auth attempt from this address is the last");
    // Limits are per proxy setting: the shared test proxy (limits off) still answers.
    assert_eq!(post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD})).status, 200);
}

#[test]
fn signups_are_limited_per_ip_and_a_spoofed_forwarded_for_changes_nothing() {
    let p = limited_proxy(&["--rate-limit-signups-per-hour", "2"]);
    let mut statuses = Vec::new();
    for i in 0..3 {
        let fake = format!("198.51.100.{i}");
        let body = json!({"email": email("rl-signup"), "password": PASSWORD}).to_string();
        statuses.push(req(&p.base(), "POST", "/v1/auth/signup", &[("X-Forwarded-For", &fake)], Some(&body)).status);
    }
    assert_eq!(statuses, [201, 201, 429], "X-Forwarded-For from an untrusted peer is ignored");
}

#[test]
fn a_trusted_proxy_forwards_the_client_address_to_limits_and_the_audit_log() {
    let p = limited_proxy(&["--rate-limit-signups-per-hour", "1", "--trusted-proxies", "127.0.0.1,::1"]);
    let mut emails = Vec::new();
    for ip in ["192.0.2.10", "192.0.2.11"] {
        let e = email("rl-trusted");
        let body = json!({"email": e, "password": PASSWORD}).to_string();
        let r = req(&p.base(), "POST", "/v1/auth/signup", &[("X-Forwarded-For", &format!("203.0.113.99, {ip}"))], Some(&body));
        assert_eq!(r.status, 201, "each client address has its own signup budget: {}", r.body);
        emails.push((e, ip));
    }
    let body = json!({"email": email("rl-trusted"), "password": PASSWORD}).to_string();
    let r = req(&p.base(), "POST", "/v1/auth/signup", &[("X-Forwarded-For", "192.0.2.10")], Some(&body));
    assert_eq!(r.status, 429, "the second signup from 192.0.2.10");
    for (e, ip) in emails {
        let logged: String = admin()
            .query_one("select host(ip) from baas.audit_log where action = 'signup' and details ->> 'email' = $1", &[&e])
            .unwrap()
            .get(0);
        assert_eq!(logged, ip, "the rightmost untrusted hop is the client");
    }
}

/// The proxy's per-account login limit counts per account *and* address: with a limit
/// per account alone (10/min, the old lockout threshold), anyone could spend the
/// owner's attempts and keep them out with 429s.
#[test]
fn the_per_account_login_limit_is_per_address_too() {
    let p = limited_proxy(&["--rate-limit-account-per-minute", "3", "--trusted-proxies", "127.0.0.1,::1"]);
    let u = signup("rl-account-ip");
    let from = |ip: &str, password: &str| {
        req(&p.base(), "POST", "/v1/auth/login", &[("X-Forwarded-For", ip)], Some(&login_body(&u.email, password)))
    };
    let statuses: Vec<u16> = (0..4).map(|_| from("203.0.113.60", "wrong password 1").status).collect();
    assert_eq!(statuses, [401, 401, 401, 429], "the attacker's address spends its own budget");
    assert_eq!(from("198.51.100.30", PASSWORD).status, 200, "the owner's address has its own");
}

#[test]
fn every_request_counts_against_the_per_ip_limit() {
    let p = limited_proxy(&["--rate-limit-requests-per-minute", "5"]);
    let statuses: Vec<u16> = (0..7).map(|_| req(&p.base(), "GET", "/v1/collections/none/documents", &[], None).status).collect();
    assert_eq!(&statuses[5..], [429, 429], "{statuses:?}");
    assert!(statuses[..5].iter().all(|s| *s != 429), "{statuses:?}");
    // Health checks are never limited (load balancers poll them).
    assert_eq!(req(&p.base(), "GET", "/healthz", &[], None).status, 200);
}

/// A setting changed for one test, put back when it ends (or fails).
struct Setting(&'static str, String);
impl Setting {
    fn set(name: &'static str, value: &str) -> Setting {
        let old: String = admin().query_one(&format!("select {name}::text from baas.settings"), &[]).unwrap().get(0);
        admin().execute(&format!("update baas.settings set {name} = $1::text::interval"), &[&value]).unwrap();
        Setting(name, old)
    }
}
impl Drop for Setting {
    fn drop(&mut self) {
        let _ = admin().execute(&format!("update baas.settings set {} = $1::text::interval", self.0), &[&self.1]);
    }
}

/// Issue 13: ten wrong passwords locked any account for everyone, again and again. Now
/// the attacker's own address waits longer and longer, an unknown email answers the
/// same, the owner's own client signs in at once, and the DBA sees and lifts it.
#[test]
fn an_attacker_cannot_keep_the_owner_out_and_waits_longer_and_longer() {
    // Rate limits off (like the shared proxy): only Postgres's throttling acts. The test
    // client is a trusted proxy, so X-Forwarded-For names each client's address.
    let url = env().cluster.authenticator_url().unwrap();
    let p = Proxy::start(&url, &["--trusted-proxies", "127.0.0.1,::1"]).unwrap();
    let login = |ip: &str, body: Value| req(&p.base(), "POST", "/v1/auth/login", &[("X-Forwarded-For", ip)], Some(&body.to_string()));
    let victim = signup("throttle-victim");
    let nobody = email("throttle-nobody");
    let (attacker, phone) = ("203.0.113.50", "198.51.100.20");
    // The owner's phone signed in before: its address and its device id are known.
    assert_eq!(login(phone, json!({"email": victim.email, "password": PASSWORD, "device_id": "phone-1"})).status, 200);

    // Five wrong passwords are answered; a known and an unknown email alike.
    for i in 0..5 {
        let k = login(attacker, json!({"email": victim.email, "password": format!("guess {i}")}));
        let u = login(attacker, json!({"email": nobody, "password": format!("guess {i}")}));
        assert_eq!((k.status, &k.body), (401, &u.body), "attempt {i}: the same answer for an unknown email");
    }
    // Then the attacker must wait, longer after each further failure.
    let mut waits = Vec::new();
    for round in 0..3 {
        let k = login(attacker, json!({"email": victim.email, "password": PASSWORD}));
        let u = login(attacker, json!({"email": nobody, "password": PASSWORD}));
        assert_eq!((k.status, k.body["error"]["code"].as_str()), (429, Some("too_many_attempts")), "even the right password waits: {}", k.body);
        assert_eq!((u.status, &u.body["error"]["code"]), (429, &k.body["error"]["code"]), "an unknown email waits the same");
        let secs: u64 = k.retry_after.expect("Retry-After").parse().unwrap();
        let other: u64 = u.retry_after.expect("Retry-After").parse().unwrap();
        assert!(secs.abs_diff(other) <= 1, "the same wait for an unknown email: {secs} vs {other}");
        waits.push(secs);
        // Meanwhile the owner signs in at once: on her phone's address, and on another
        // network (an address that has not failed; the account-wide count is not reached).
        assert_eq!(login(phone, json!({"email": victim.email, "password": PASSWORD})).status, 200, "round {round}");
        let elsewhere = login("100.64.7.7", json!({"email": victim.email, "password": PASSWORD, "device_id": "phone-1"}));
        assert_eq!(elsewhere.status, 200, "round {round}: {}", elsewhere.body);
        if round < 2 {
            std::thread::sleep(Duration::from_secs(secs.max(other)));
            assert_eq!(login(attacker, json!({"email": victim.email, "password": "one more guess"})).status, 401);
            assert_eq!(login(attacker, json!({"email": nobody, "password": "one more guess"})).status, 401);
        }
    }
    // 1 s, then 2 s, then 4 s; compared loosely, as a busy machine may take a second.
    assert!(waits[2] > waits[0] && waits[0] >= 1, "the waits grow: {waits:?}");

    // Many addresses, one guess each: after login_account_failures (20) from unknown
    // clients, every unknown client waits too; the owner's clients still do not. Waits of
    // a minute here, so that no check depends on how fast this machine is.
    let _slow = Setting::set("login_delay", "1 minute");
    let mut refused = None;
    for i in 0..40 {
        let r = login(&format!("192.0.2.{}", 100 + i), json!({"email": victim.email, "password": "distributed guess"}));
        if r.status == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let refused = refused.expect("unknown clients wait once the account has seen many failures");
    assert_eq!(refused.body["error"]["code"], "too_many_attempts");
    let stranger = login("192.0.2.250", json!({"email": victim.email, "password": PASSWORD}));
    assert_eq!(stranger.status, 429, "a client that never signed in waits, even with the right password");
    // A device id travels in every request: whoever learned the phone's id gains nothing
    // with it from elsewhere, and cannot make the phone wait.
    let thief = login("192.0.2.251", json!({"email": victim.email, "password": PASSWORD, "device_id": "phone-1"}));
    assert_eq!(thief.status, 429, "the phone's id from another address waits like a stranger: {}", thief.body);
    for i in 0..6 {
        let r = login("192.0.2.252", json!({"email": victim.email, "password": format!("id guess {i}"), "device_id": "phone-1"}));
        assert!(r.status == 401 || r.status == 429, "{}", r.body);
    }
    let own = login(phone, json!({"email": victim.email, "password": PASSWORD, "device_id": "phone-1"}));
    assert_eq!(own.status, 200, "the phone with its id at its address does not wait for them: {}", own.body);
    assert_eq!(login(phone, json!({"email": victim.email, "password": PASSWORD})).status, 200, "the owner's phone does not");
    assert_eq!(post("/v1/auth/refresh", None, json!({"refresh_token": victim.refresh})).status, 200, "nor does a refresh");

    // The DBA sees the waits (the attacker's address and the account's) and lifts them.
    let waiting: Vec<String> = admin()
        .query("select source from baas.login_throttles where email = $1 and retry_after > 0 order by source", &[&victim.email])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(waiting.contains(&"*".to_string()), "{waiting:?}");
    let audited: i64 = admin()
        .query_one("select count(*) from baas.audit_log where action = 'login.throttle' and user_id = $1::text::uuid and host(ip) = $2",
                   &[&victim.id, &attacker])
        .unwrap()
        .get(0);
    assert!(audited >= 3, "every wait of the attacker's address is in the audit log, with its address: {audited}");
    let lifted: bool = admin().query_one("select baas.unlock_account($1::text::uuid)", &[&victim.id]).unwrap().get(0);
    assert!(lifted);
    assert_eq!(login("192.0.2.250", json!({"email": victim.email, "password": PASSWORD})).status, 200, "lifted");
}

/// Two failed sign-ins at once must not wait on each other: each forgets a few stale
/// counts, and before it skipped rows another failed sign-in held, two of them could
/// lock each other's rows (40P01) and the loser's failure went uncounted. Here the
/// first holds its rows open; the second must finish without waiting for them.
#[test]
fn concurrent_failed_sign_ins_do_not_wait_on_each_other() {
    let mut setup = admin();
    setup
        .batch_execute(
            "insert into baas._login_throttles (email, source, failures, last_failure_at)
             select 'stale-' || g || '@concurrent.test', 'ip:192.0.2.1', 1, now() - interval '30 days'
               from generate_series(1, 40) g",
        )
        .unwrap();
    let mut first = admin();
    let mut tx = first.transaction().unwrap();
    tx.batch_execute("select baas._login_failed('first@concurrent.test', null, 'ip:192.0.2.2', false)").unwrap();
    // The first still holds the stale rows it deleted. Without skipping them the second
    // waited for the first to end: lock_timeout turns that wait into an error.
    let mut second = admin();
    second.batch_execute("set lock_timeout = '20s'").unwrap();
    second
        .batch_execute("select baas._login_failed('second@concurrent.test', null, 'ip:192.0.2.3', false)")
        .expect("the second failed sign-in does not wait for the first");
    let counted: i64 = second
        .query_one("select count(*) from baas._login_throttles where email = 'second@concurrent.test'", &[])
        .unwrap()
        .get(0);
    assert_eq!(counted, 2, "the second failure counts (its source and the account)");
    tx.commit().unwrap();
}

/// The proxy's only database connection is held by a request blocked on a lock, so a
/// request that needed the database would wait and fail with 503 after the 3 s pool
/// timeout. Forged, malformed and oversized credentials must be answered at once.
#[test]
fn bad_tokens_are_refused_without_a_database_connection() {
    let url = env().cluster.authenticator_url().unwrap();
    let p = Proxy::start(&url, &["--pool-size", "1", "--pool-timeout-secs", "3"]).unwrap();
    let u = signup("no-db");
    // Two sessions that end before the lock: one by deleting its account, one by
    // logging out. Postgres announces both (NOTIFY baas_sessions) to every proxy.
    let deleted = signup("no-db-deleted");
    assert_eq!(call("DELETE", "/v1/auth/user", Some(&deleted.access), None).status, 204);
    let logged_out = signup("no-db-logout");
    assert_eq!(call("POST", "/v1/auth/logout", Some(&logged_out.access), None).status, 204);
    let c = collection("nodb", json!({"default_acl": {"read": ["authenticated"]}}));
    let doc = create_doc(&c, Some(&u.access), json!({"x": 1}), None);

    let mut dba = admin();
    let mut tx = dba.transaction().unwrap();
    tx.batch_execute("lock table baas.documents in access exclusive mode").unwrap();
    let (base, path, token) = (p.base(), doc_path(&c, &doc), u.access.clone());
    let blocked = std::thread::spawn(move || req(&base, "GET", &path, &[("Authorization", &format!("Bearer {token}"))], None).status);
    // Wait until that request sits on the lock, holding the pool's one connection.
    wait_until("the blocking request never reached the lock", || {
        admin()
            .query_one("select count(*) from pg_stat_activity where usename = 'baas_authenticator' and wait_event_type = 'Lock'", &[])
            .unwrap()
            .get::<_, i64>(0)
            > 0
    });

    // The control: a valid token needs the database, and there is none to be had.
    let r = req_any(&p.base(), "GET", "/v1/auth/user", &[("Authorization", &format!("Bearer {}", u.access))], None);
    assert_eq!(r.status, 503, "control: {}", r.body);

    let now = payload(&u.access)["iat"].as_i64().unwrap();
    let good = claims_for(&u);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        sign_with_db_key(&c)
    };
    let (h, b) = (b64(br#"{"alg":"none","typ":"JWT"}"#), b64(good.to_string().as_bytes()));
    let hs256 = {
        use hmac::{Hmac, Mac};
        let jwk = &call("GET", "/.well-known/jwks.json", None, None).body["keys"][0];
        let input = format!("{}.{b}", b64(json!({"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}).to_string().as_bytes()));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(jwk["x"].as_str().unwrap().as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    };
    let cases: Vec<(&str, String)> = vec![
        ("alg none", format!("{h}.{b}.")),
        ("HS256 keyed with the public key", hs256),
        ("expired", with("exp", json!(now - 10))),
        ("nbf in the future", with("nbf", json!(now + 3600))),
        ("wrong audience", with("aud", json!("elsewhere"))),
        ("wrong issuer", with("iss", json!("https://evil.example"))),
        ("unknown kid", {
            let parts: Vec<&str> = u.access.split('.').collect();
            format!("{}.{}.{}", b64(br#"{"alg":"EdDSA","typ":"JWT","kid":"no-such-key"}"#), parts[1], parts[2])
        }),
        ("duplicated claims", duplicated_role_token(&good)),
        ("tampered payload", {
            let parts: Vec<&str> = u.access.split('.').collect();
            let mut c = payload(&u.access);
            c["role"] = json!("baas_service");
            format!("{}.{}.{}", parts[0], b64(c.to_string().as_bytes()), parts[2])
        }),
        ("1 MB token", "A".repeat(1024 * 1024 - 200)),
        ("token of a deleted account", deleted.access.clone()),
        ("token of a logged-out session", logged_out.access.clone()),
    ];
    for (why, t) in &cases {
        let started = Instant::now();
        let r = req(&p.base(), "GET", "/v1/auth/user", &[("Authorization", &format!("Bearer {t}"))], None);
        assert!(matches!(r.status, 401 | 431), "{why}: {} {}", r.status, r.body);
        assert!(started.elapsed() < Duration::from_secs(2), "{why} waited for the database: {:?}", started.elapsed());
    }
    // Over pingora's 1 MiB header limit the connection is refused outright.
    let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let huge = format!("GET /v1/auth/user HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", "A".repeat(1024 * 1024 + 10));
    let _ = s.write_all(huge.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let head = String::from_utf8_lossy(&out);
    assert!(!head.starts_with("HTTP/1.1 2") && !head.starts_with("HTTP/1.1 5"), "{head:.80}");

    tx.rollback().unwrap();
    assert_eq!(blocked.join().unwrap(), 200, "the blocked request completes once the lock is gone");
}

/// A validly signed token whose payload names "role" twice (first baas_service, then
/// baas_user): signed here with the database's key, as only a key holder could.
fn duplicated_role_token(good: &Value) -> String {
    use ed25519_dalek::{Signer, SigningKey};
    let (kid, secret): (String, Vec<u8>) = {
        let row = admin()
            .query_one("select kid, secret from baas._signing_keys where retired_at is null order by created_at desc limit 1", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    let key = SigningKey::from_bytes(&secret.try_into().unwrap());
    let sign = |claims: &str| {
        let head = b64(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}).to_string().as_bytes());
        let input = format!("{head}.{}", b64(claims.as_bytes()));
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", b64(&sig.to_bytes()))
    };
    let plain = good.to_string();
    // The control: the same signing, without the duplicate, is accepted.
    assert_eq!(call("GET", "/v1/auth/user", Some(&sign(&plain)), None).status, 200, "control token");
    let dup = format!("{{\"role\":\"baas_service\",{}", &plain[1..]);
    sign(&dup)
}

#[test]
fn a_token_of_a_deleted_account_is_refused() {
    let u = signup("deleted");
    assert_eq!(call("DELETE", "/v1/auth/user", Some(&u.access), None).status, 204);
    let r = call("GET", "/v1/auth/user", Some(&u.access), None);
    assert_eq!((r.status, r.code()), (401, "invalid_token"), "{}", r.body);
}

/// Injection strings and pg_sleep in every slot a client controls: each is refused or
/// stored as data, nothing sleeps, nothing is a 5xx.
#[test]
fn injection_and_pg_sleep_in_every_slot_have_no_effect() {
    let u = signup("inject");
    let svc = service_token();
    let c = collection("inject", json!({"default_acl": {"read": ["authenticated"]}}));
    let doc = create_doc(&c, Some(&u.access), json!({"a": 1}), None);
    let evil = [
        "'; select pg_sleep(3); --",
        "\"); select pg_sleep(3); --",
        "$$; select pg_sleep(3); $$",
        "a' || (select pg_sleep(3)) || '",
        "1; select pg_sleep(3)",
        "x\\' or 1=1; select pg_sleep(3) --",
    ];
    let enc = |s: &str| -> String { s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect() };
    let started = Instant::now();
    let mut n = 0;
    for e in evil {
        let q = enc(e);
        let filt_key = enc(&json!({ e: 1 }).to_string());
        let filt_val = enc(&json!({"a": e}).to_string());
        let filt_op = enc(&json!({"a": {"$gt": e}}).to_string());
        let requests: Vec<(&str, String, Option<String>, Option<String>)> = vec![
            ("GET", format!("/v1/collections/{q}/documents"), None, None),
            ("GET", format!("{}/{q}", docs_path(&c)), None, None),
            ("GET", format!("{}?where={filt_key}", docs_path(&c)), None, None),
            ("GET", format!("{}?where={filt_val}", docs_path(&c)), None, None),
            ("GET", format!("{}?where={filt_op}", docs_path(&c)), None, None),
            ("GET", format!("{}?order={q}", docs_path(&c)), None, None),
            ("GET", format!("{}?fields={q}", docs_path(&c)), None, None),
            ("GET", format!("{}?limit={q}&offset={q}", docs_path(&c)), None, None),
            ("GET", format!("{}?after={q}", docs_path(&c)), None, None),
            ("POST", docs_path(&c), Some(json!({"data": {e: e}}).to_string()), None),
            ("PATCH", doc_path(&c, &doc), Some(json!({"data": {e: e}}).to_string()), Some(e.to_string())),
            ("PUT", format!("{}/acl", doc_path(&c, &doc)), Some(json!({"read": [e]}).to_string()), None),
            ("PATCH", "/v1/auth/user".to_string(), Some(json!({"data": {e: e}}).to_string()), None),
        ];
        for (m, path, body, if_match) in requests {
            let mut h = vec![("Authorization".to_string(), format!("Bearer {}", u.access))];
            if let Some(v) = if_match {
                h.push(("If-Match".to_string(), v));
            }
            let hs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let r = req(&base(), m, &path, &hs, body.as_deref());
            assert!(r.status < 500, "{m} {path}: {}", r.status);
            n += 1;
        }
        // Service-token slots: collection and index administration.
        let auth = [("Authorization", format!("Bearer {svc}"))];
        let hs: Vec<(&str, &str)> = auth.iter().map(|(a, b)| (*a, b.as_str())).collect();
        for (m, path, body) in [
            ("POST", "/v1/collections".to_string(), Some(json!({"name": e}).to_string())),
            ("POST", format!("/v1/collections/{c}/indexes"), Some(json!({"path": e}).to_string())),
            ("DELETE", format!("/v1/collections/{c}/indexes/{q}"), None),
            ("POST", "/v1/roles".to_string(), Some(json!({"name": e}).to_string())),
        ] {
            let r = req(&base(), m, &path, &hs, body.as_deref());
            assert!(r.status < 500, "{m} {path}: {}", r.status);
            n += 1;
        }
    }
    // 6 strings x 17 slots, each of which would sleep 3 s if it ever reached SQL text.
    assert!(n >= 100);
    assert!(started.elapsed() < Duration::from_secs(30), "something slept: {:?} for {n} requests", started.elapsed());
    let tables: i64 = admin().query_one("select count(*) from baas.users", &[]).unwrap().get(0);
    assert!(tables > 0, "baas.users is still there");
}

/// Clients that dribble a request, send too much, or never finish do not slow anybody
/// else down, and each is cut off by a limit.
#[test]
fn slow_and_oversized_clients_are_cut_off_without_affecting_others() {
    let url = env().cluster.authenticator_url().unwrap();
    let p = Proxy::start(&url, &["--header-timeout-secs", "2", "--body-timeout-secs", "2", "--body-limit", "65536"]).unwrap();
    let u = signup("slow");
    // 50 slow-loris clients: a request line, then one more header line every 300 ms,
    // never the blank line that ends the head. Each must be cut off at the 2 s head
    // deadline (pingora alone would wait as long as bytes keep trickling in).
    let port = p.port;
    let lorises: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                let started = Instant::now();
                s.write_all(b"GET /v1/auth/user HTTP/1.1\r\nHost: x\r\n").unwrap();
                while started.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(300));
                    if s.write_all(b"X-Slow: still here\r\n").is_err() {
                        return Some(started.elapsed());
                    }
                }
                None
            })
        })
        .collect();
    // A slow body: headers promise 1000 bytes, 10 arrive.
    let mut slow_body = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    slow_body.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    slow_body
        .write_all(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"email\":")
        .unwrap();
    let t = Instant::now();
    // Meanwhile an ordinary client is served at once, again and again.
    for _ in 0..20 {
        let s = Instant::now();
        let r = req(&p.base(), "GET", "/v1/auth/user", &[("Authorization", &format!("Bearer {}", u.access))], None);
        assert_eq!(r.status, 200);
        // Generous for a shared 2-core machine; a server stuck behind the slow clients
        // would take the 2 s head deadline or more.
        assert!(s.elapsed() < Duration::from_millis(1500), "an ordinary request took {:?}", s.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The slow body is cut off with 408 at the body timeout.
    let mut out = Vec::new();
    let _ = slow_body.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:.120}");
    // 2 s body timeout; 6 s leaves 4 s for a loaded machine, while a proxy without the
    // timeout would hold the connection until the 10 s read timeout above.
    assert!(t.elapsed() < Duration::from_secs(6), "cut off after {:?}", t.elapsed());
    for l in lorises {
        let cut = l.join().unwrap().expect("a slow-loris connection was never cut off");
        // 2 s head deadline: not before it (less a write's slack), and well before the
        // 10 s the client keeps writing, with room for a loaded machine.
        assert!(cut >= Duration::from_millis(1500) && cut < Duration::from_secs(8), "cut off after {cut:?}");
    }
    // An oversized body is refused from its Content-Length, before a byte of it is read.
    let mut big = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    big.write_all(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 70000000\r\n\r\n").unwrap();
    let mut out = [0u8; 512];
    let n = big.read(&mut out).unwrap_or(0);
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.starts_with("HTTP/1.1 413") && text.contains("payload_too_large"), "{text}");
}
