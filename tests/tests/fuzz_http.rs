//! Random requests against the real proxy and Postgres: random routes and segments,
//! query strings, headers, tokens and bodies. Property: never a 5xx, and every
//! refusal is JSON `{"error": {"code", "message"}}` with a stable code.
//!
//!   PGBAAS_FUZZ_HTTP_ITERS=100000 cargo test --release -p pgbaas-tests --test fuzz_http
//!
//! (`make test` sends 1,500.)

mod common;
use common::*;
use serde_json::{json, Value};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
    fn junk(&mut self) -> String {
        const P: &[&str] = &["a", "%", "%zz", "%00", "%F0%9F%98%80", "'", "\"", "$gt", "..", "{", "}", "[", "]", ",",
            "-", "_", "1", "-1", "99999999999999999999", "null", "%7B%22a%22%3A1%7D", "é", "+", "=", "%2F", ";"];
        (0..self.below(6)).map(|_| self.pick(P)).collect()
    }
    /// Junk a client library will still put in a header (visible ASCII).
    fn header(&mut self) -> String {
        self.junk().chars().filter(|c| c.is_ascii_graphic() || *c == ' ').collect()
    }
    fn json(&mut self, depth: usize) -> Value {
        match self.below(if depth == 0 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.next() as i64 >> self.below(64)),
            3 => json!((self.next() as f64) / 9.0),
            4 => Value::String(self.junk()),
            5 => Value::Array((0..self.below(3)).map(|_| self.json(depth - 1)).collect()),
            _ => Value::Object((0..self.below(4)).map(|_| {
                let k = if self.below(2) == 0 { self.pick(&["email", "password", "data", "read", "name", "path", "kind", "owner", "$gt"]).to_string() } else { self.junk() };
                (k, self.json(depth - 1))
            }).collect()),
        }
    }
}

#[test]
fn random_requests_never_fail_on_the_server() {
    let iters: usize = std::env::var("PGBAAS_FUZZ_HTTP_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500);
    let u = signup("fuzz");
    let svc = service_token();
    let c = collection("fuzz", json!({"default_acl": {"read": ["authenticated"]}}));
    let doc = create_doc(&c, Some(&u.access), json!({"a": 1}), None);
    let mut r = Rng(0xf0f0_1234_5678_9abd);
    let agent = ureq::AgentBuilder::new().timeout(std::time::Duration::from_secs(20)).build();
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    let mut by_status = std::collections::BTreeMap::new();
    for i in 0..iters {
        let seg = |r: &mut Rng| -> String {
            match r.below(4) {
                0 => c.clone(),
                1 => doc.clone(),
                2 => r.pick(&["documents", "acl", "owner", "indexes", "members", "roles", "users", "a.b"]).to_string(),
                _ => r.junk(),
            }
        };
        let path = match r.below(6) {
            0 => format!("/v1/collections/{}/documents", seg(&mut r)),
            1 => format!("/v1/collections/{}/documents/{}", seg(&mut r), seg(&mut r)),
            2 => format!("/v1/collections/{}/documents/{}/{}", c, seg(&mut r), seg(&mut r)),
            3 => format!("/v1/auth/{}", r.pick(&["signup", "login", "refresh", "logout", "user", "x"])),
            4 => format!("/v1/{}/{}", r.pick(&["roles", "collections"]), seg(&mut r)),
            _ => format!("/{}/{}", r.junk(), r.junk()),
        };
        let query = if r.below(2) == 0 {
            let keys = ["where", "order", "limit", "offset", "count", "after", "fields", "x"];
            (0..r.below(4))
                .map(|_| {
                    let k = r.pick(&keys);
                    let v = if k == "where" && r.below(2) == 0 {
                        r.json(3).to_string().bytes().map(|b| format!("%{b:02X}")).collect()
                    } else {
                        r.junk()
                    };
                    format!("{k}={v}")
                })
                .collect::<Vec<_>>()
                .join("&")
        } else {
            String::new()
        };
        let url = format!("{}{}{}{}", base(), path, if query.is_empty() { "" } else { "?" }, query);
        let method = r.pick(&methods);
        let mut req = agent.request(method, &url);
        match r.below(5) {
            0 => {}
            1 => req = req.set("Authorization", &format!("Bearer {}", u.access)),
            2 => req = req.set("Authorization", &format!("Bearer {svc}")),
            3 => req = req.set("Authorization", &format!("Bearer {}", r.header())),
            _ => req = req.set("Authorization", &r.header()),
        }
        if r.below(4) == 0 {
            req = req.set("If-Match", &r.header());
        }
        req = req.set("Content-Type", r.pick(&["application/json", "application/json; charset=utf-8", "text/plain", "", "application/x-www-form-urlencoded"]));
        let body = match r.below(4) {
            0 => None,
            1 => Some(r.junk()),
            _ => Some(r.json(4).to_string()),
        };
        let resp = match body {
            Some(b) => req.send_string(&b),
            None => req.call(),
        };
        let (status, text) = match resp {
            Ok(x) => (x.status(), x.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(s, x)) => (s, x.into_string().unwrap_or_default()),
            Err(e) => panic!("case {i}: {method} {url}: transport error {e}"),
        };
        assert!(status < 500, "case {i}: {method} {url} -> {status} {text}");
        if status >= 400 && method != "HEAD" {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("case {i}: {method} {url}: non-JSON error {text:?}"));
            let code = v["error"]["code"].as_str().unwrap_or("");
            assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "case {i}: {method} {url}: {text}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "case {i}: {text}");
        }
        *by_status.entry(status).or_insert(0) += 1;
    }
    // The generator must reach past the router into handlers and the database.
    assert!(by_status.keys().any(|s| *s < 300), "{by_status:?}");
    assert!(by_status.len() >= 5, "too few kinds of answer: {by_status:?}");
}
