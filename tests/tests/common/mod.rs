//! Shared by the end-to-end test binaries: one real cluster and one real proxy per
//! binary, an HTTP helper, and token forging helpers.
#![allow(dead_code)]

/// Uploads, downloads, tus and raw sockets for the file tests (tests/tests/files*.rs).
pub mod files;
/// The account email flows: a proxy with an SMTP sink (tests/tests/accounts_email.rs).
pub mod accounts_email;
/// Sessions, suspension and anonymous accounts (accounts_admin.rs, accounts_anonymous.rs).
pub mod lifecycle;

use pgbaas_testkit::{Cluster, Proxy};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

pub struct Env {
    pub cluster: Cluster,
    pub proxy: Proxy,
}

pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::temporary().expect("start a Postgres cluster");
        let url = cluster.authenticator_url().expect("authenticator password");
        // A small pool so that requests of different callers share connections.
        let proxy = Proxy::start(&url, &["--pool-size", "3"]).expect("start the proxy");
        Env { cluster, proxy }
    })
}

pub fn base() -> String {
    env().proxy.base()
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP request; the body is sent as application/json text when given.
pub fn call(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Resp {
    call_with(method, path, token, body, &[])
}

pub fn call_with(method: &str, path: &str, token: Option<&str>, body: Option<&str>, headers: &[(&str, &str)]) -> Resp {
    let r = request_at(&base(), method, path, token, headers, body);
    assert!(r.status < 500, "{method} {path} gave {}: {}", r.status, r.body);
    r
}

/// One HTTP request to the proxy at `base`, whatever its status; the body is sent as
/// application/json text when given and no Content-Type is.
pub fn request_at(base: &str, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let mut req = ureq::request(method, &format!("{base}{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let mut has_ct = false;
    for (k, v) in headers {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        req = req.set(k, v);
    }
    if body.is_some() && !has_ct {
        req = req.set("Content-Type", "application/json");
    }
    let result = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: transport error {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or("").to_string();
            (n, v)
        })
        .collect();
    let text = resp.into_string().unwrap_or_default();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Resp { status, body, headers }
}

pub fn post(path: &str, token: Option<&str>, body: Value) -> Resp {
    call("POST", path, token, Some(&body.to_string()))
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A fresh address per call, unique across test binaries running at the same time.
pub fn email(tag: &str) -> String {
    format!("{tag}-{}-{}@example.com", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

pub const PASSWORD: &str = "correct horse battery";

pub struct User {
    pub email: String,
    pub id: String,
    pub access: String,
    pub refresh: String,
}

pub fn signup(tag: &str) -> User {
    let email = email(tag);
    let r = post("/v1/auth/signup", None, json!({"email": email, "password": PASSWORD}));
    assert_eq!(r.status, 201, "{}", r.body);
    User {
        id: r.body["user"]["id"].as_str().unwrap().to_string(),
        access: r.body["access_token"].as_str().unwrap().to_string(),
        refresh: r.body["refresh_token"].as_str().unwrap().to_string(),
        email,
    }
}

pub fn admin() -> postgres::Client {
    env().cluster.connect("postgres", pgbaas_testkit::DB).expect("superuser connection")
}

/// Sign `claims` with the database's active private key, as only a superuser can:
/// lets tests make validly signed tokens with chosen `exp`, `aud`, `iss`.
pub fn sign_with_db_key(claims: &Value) -> String {
    admin()
        .query_one(
            "select baas._sign_jwt(kid, secret, $1) from baas._signing_keys
              where retired_at is null order by created_at desc limit 1",
            &[claims],
        )
        .expect("sign")
        .get(0)
}

/// Claims as pgbaas issues them for `user`, valid for 10 minutes.
pub fn claims_for(user: &User) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let sid = payload(&user.access)["sid"].clone();
    json!({"iss": "pgbaas", "aud": "pgbaas", "sub": user.id, "role": "baas_user", "sid": sid,
           "iat": now, "exp": now + 600})
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn payload(jwt: &str) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Raw HTTP/1.1 over a socket, for requests a client library would refuse to send.
pub fn raw(request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", env().proxy.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

pub fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A service token (baas_service: bypasses document ACLs), minted in SQL as a DBA would.
pub fn service_token() -> String {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            admin()
                .query_one("select baas.create_service_token('e2e-tests', '1 hour') ->> 'token'", &[])
                .expect("service token")
                .get(0)
        })
        .clone()
}

/// A fresh collection name, created with `options` through the service HTTP route.
pub fn collection(tag: &str, options: Value) -> String {
    let name = format!("{tag}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let r = post("/v1/collections", Some(&service_token()), json!({"name": name, "options": options}));
    assert_eq!(r.status, 201, "{}", r.body);
    name
}

pub fn docs_path(c: &str) -> String {
    format!("/v1/collections/{c}/documents")
}

pub fn doc_path(c: &str, id: &str) -> String {
    format!("/v1/collections/{c}/documents/{id}")
}

/// Create a document as `token`; returns its id.
pub fn create_doc(c: &str, token: Option<&str>, data: Value, acl: Option<Value>) -> String {
    let mut body = json!({"data": data});
    if let Some(a) = acl {
        body["acl"] = a;
    }
    let r = post(&docs_path(c), token, body);
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

/// Ids of the documents `token` sees in a listing.
pub fn listed_ids(c: &str, token: Option<&str>) -> Vec<String> {
    let r = call("GET", &format!("{}?limit=1000", docs_path(c)), token, None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["items"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect()
}

/// Poll `cond` every 20 ms until it holds; fail naming `what` after 10 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Poll an index's build (`GET …/indexes/{path}?kind=`) until it is no longer
/// `building`, and return its final state. Builds run in the background (issue 13), so
/// a test that needs the index waits for `ready`; 120 s covers a loaded 2-core machine.
#[allow(dead_code)]
pub fn wait_index(c: &str, path: &str, kind: &str, token: &str) -> Value {
    let url = format!("/v1/collections/{c}/indexes/{}?kind={kind}", urlencoding_path(path));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let r = call("GET", &url, Some(token), None);
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        if r.body["state"] != "building" {
            return r.body;
        }
        assert!(std::time::Instant::now() < deadline, "{url} still building: {}", r.body);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A dotted field path as one path segment.
#[allow(dead_code)]
fn urlencoding_path(path: &str) -> String {
    path.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"._-~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A query-string value, percent-encoded (every byte but RFC 3986's unreserved ones).
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The permission matrix shared by the documents' (permissions.rs) and the files'
/// (files_permissions.rs) tests: what B and the anonymous caller get for read, update
/// (or overwrite) and delete, as HTTP statuses, per case of `matrix_cases`.
pub fn matrix_expected(case: &str) -> ([u16; 3], [u16; 3]) {
    const HIDDEN: [u16; 3] = [404, 404, 404];
    match case {
        "private" | "revoked" | "role_removed" => (HIDDEN, HIDDEN),
        "read_b" | "role_read" | "nested_role_read" | "authenticated_read" => ([200, 403, 403], HIDDEN),
        "update_b" | "nested_role_update" => ([200, 200, 403], HIDDEN),
        "delete_b" | "role_delete" => ([200, 403, 204], HIDDEN),
        "public_read" => ([200, 403, 403], [200, 403, 403]),
        "public_update" => ([200, 200, 403], [200, 200, 403]),
        "public_delete" => ([200, 403, 204], [200, 403, 204]),
        other => panic!("no expectation for {other}"),
    }
}

/// The ids of `items` (case name, id) that a caller sees in a listing, by
/// `matrix_expected`: the owner (whose access token is `owner`) every one, B and the
/// anonymous caller those their read answers 200.
pub fn matrix_visible(items: &[(&'static str, String)], owner: &str, who: Option<&str>) -> std::collections::BTreeSet<String> {
    items
        .iter()
        .filter(|(name, _)| {
            let (b, anon) = matrix_expected(name);
            match who {
                Some(t) if t == owner => true,
                Some(_) => b[0] == 200,
                None => anon[0] == 200,
            }
        })
        .map(|(_, id)| id.clone())
        .collect()
}

/// The matrix's roles and ACLs for collection `c`: b is in team; org contains team; b
/// is in "gone", which the caller removes him from once the items exist (the case
/// role_removed), and "revoked" is the caller's to revoke. Returns the cases (name, ACL)
/// and the name of the "gone" role.
pub fn matrix_cases(c: &str, b: &User) -> (Vec<(&'static str, Value)>, String) {
    let s = service_token();
    let (team, org, gone) = (format!("{c}_team"), format!("{c}_org"), format!("{c}_gone"));
    for r in [&team, &org, &gone] {
        assert_eq!(post("/v1/roles", Some(&s), json!({"name": r})).status, 201);
    }
    assert_eq!(call("PUT", &format!("/v1/roles/{team}/members/{}", b.id), Some(&s), None).status, 204);
    assert_eq!(call("PUT", &format!("/v1/roles/{org}/roles/{team}"), Some(&s), None).status, 204);
    assert_eq!(call("PUT", &format!("/v1/roles/{gone}/members/{}", b.id), Some(&s), None).status, 204);
    let ub = format!("user:{}", b.id);
    let cases = vec![
        ("private", json!({})),
        ("read_b", json!({"read": [ub]})),
        ("update_b", json!({"update": [ub]})),
        ("delete_b", json!({"delete": [ub]})),
        ("role_read", json!({"read": [format!("role:{team}")]})),
        ("role_delete", json!({"delete": [format!("role:{team}")]})),
        ("nested_role_read", json!({"read": [format!("role:{org}")]})),
        ("nested_role_update", json!({"update": [format!("role:{org}")]})),
        ("authenticated_read", json!({"read": ["authenticated"]})),
        ("public_read", json!({"read": ["public"]})),
        ("public_update", json!({"update": ["public"]})),
        ("public_delete", json!({"delete": ["public"]})),
        ("revoked", json!({"read": [ub], "update": [ub]})),
        ("role_removed", json!({"read": [format!("role:{gone}")]})),
    ];
    (cases, gone)
}
