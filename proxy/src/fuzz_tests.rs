//! Property tests over everything a client controls before the database, checking
//! behaviour against the route table: every generated valid path routes to the route
//! it was made from with its parameters; wrong methods get the table's `Allow`; a
//! list query string parses back to the parameters it was rendered from; a body built
//! from a route's declared fields is accepted and one with an unknown or missing field
//! is refused naming it; random tokens never verify. Random junk must not panic.
//!
//!   PGBAAS_FUZZ_ITERS=1000000 cargo test --release -p pgbaas-proxy fuzz_
//!
//! (`make test` runs 20,000 cases per target.)

use crate::jwt::{self, KeySet, Verdict};
use crate::router::{self, FieldType, Match, Need, ParamType, Seg};
use crate::routes::input::{self, ListParams};
use crate::routes::ROUTES;
use http::Method;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
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

/// What a client may leave unencoded in a path segment, as browsers do; `%` and `/`
/// must be encoded, `+` may go either way (a path has no form rules).
const SEGMENT: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'/').add(b'?').add(b'<').add(b'>').add(b'`').add(b'{').add(b'}');

fn uuid(r: &mut Rng) -> String {
    let h = format!("{:016x}{:016x}", r.next(), r.next());
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A valid value for a path parameter of type `ty`: any non-empty text, or a uuid.
fn param_value(r: &mut Rng, ty: ParamType) -> String {
    match ty {
        ParamType::Uuid => uuid(r),
        ParamType::Text => loop {
            // NUL is refused in paths (Postgres text cannot hold it): tested apart.
            let s = r.string(4).replace('\0', "");
            if !s.is_empty() {
                return s;
            }
        },
    }
}

#[test]
fn fuzz_every_generated_path_routes_to_its_route_with_its_parameters() {
    let mut r = Rng::new(0xf00d_0001);
    for _ in 0..iters() {
        let route = r.pick(ROUTES);
        let mut path = String::new();
        let mut values = Vec::new();
        for seg in route.path {
            path.push('/');
            match seg {
                Seg::Lit(l) => path.push_str(l),
                Seg::Param(_, ty) => {
                    let v = param_value(&mut r, *ty);
                    let set = if r.below(2) == 0 { SEGMENT } else { NON_ALPHANUMERIC };
                    path.extend(utf8_percent_encode(&v, set));
                    values.push(v);
                }
            }
        }
        match router::route(ROUTES, &route.method, &path) {
            Match::Found(found, params) => {
                assert_eq!(found.name, route.name, "{path}");
                let got: Vec<String> = (0..params.len()).map(|i| params.get(i).unwrap().into_owned()).collect();
                assert_eq!(got, values, "{path}");
            }
            other => panic!("{} {path} -> {other:?}", route.method),
        }
    }
}

#[test]
fn wrong_methods_get_the_tables_allow() {
    let methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::HEAD, Method::OPTIONS];
    for route in ROUTES {
        let path: String = route.path.iter().map(|s| match s {
            Seg::Lit(l) => format!("/{l}"),
            Seg::Param(_, ParamType::Uuid) => "/00000000-0000-7000-8000-000000000001".to_string(),
            Seg::Param(..) => "/x".to_string(),
        }).collect();
        let same_path: Vec<&str> =
            ROUTES.iter().filter(|o| router::pattern(o) == router::pattern(route)).map(|o| o.method.as_str()).collect();
        for m in methods.iter().filter(|m| !same_path.contains(&m.as_str())) {
            match router::route(ROUTES, m, &path) {
                Match::WrongMethod(allow) => assert_eq!(allow, same_path.join(", "), "{m} {path}"),
                other => panic!("{m} {path} -> {other:?}"),
            }
        }
    }
}

#[test]
fn fuzz_random_paths_never_panic() {
    let mut r = Rng::new(0xf00d_0006);
    let methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    for _ in 0..iters() {
        let path = format!("/{}", r.string(8));
        if let Match::Found(_, p) = router::route(ROUTES, r.pick(&methods), &path) {
            for i in 0..p.len() {
                let _ = p.get(i);
            }
        }
    }
}

/// Form encoding of a query component: space as `+`, everything else not
/// alphanumeric percent-encoded.
fn form(s: &str) -> String {
    s.split(' ').map(|part| utf8_percent_encode(part, NON_ALPHANUMERIC).to_string()).collect::<Vec<_>>().join("+")
}

fn random_list_params(r: &mut Rng) -> ListParams {
    let mut p = ListParams::default();
    if r.below(2) == 0 {
        let mut f = serde_json::Map::new();
        for _ in 0..r.below(3) {
            f.insert(r.string(2).replace('\0', ""), strip_nul(r.json(3)));
        }
        p.filter = Value::Object(f);
    }
    if r.below(2) == 0 {
        p.order = Some(r.string(3).replace('\0', ""));
    }
    p.limit = r.below(1001) as i32;
    p.offset = (r.next() >> 34) as i32;
    p.count = r.below(2) == 0;
    if r.below(2) == 0 {
        p.after = Some(uuid(r));
    }
    if r.below(2) == 0 {
        let n = 1 + r.below(3);
        p.fields = Some((0..n).map(|_| r.string(2).replace([',', '\0'], "").trim().to_string()).collect());
    }
    p
}

/// JSON without what does not survive a round trip for reasons of its own: NULs
/// (refused on purpose) and floats (serde_json's default float parsing may differ from
/// the shortest rendering in the last bit).
fn strip_nul(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => json!(n.as_f64().unwrap_or(0.0) as i64),
        Value::String(s) => Value::String(s.replace('\0', "")),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nul).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k.replace('\0', ""), strip_nul(v))).collect()),
        other => other,
    }
}

fn render(p: &ListParams, r: &mut Rng) -> String {
    let d = ListParams::default();
    let mut parts = Vec::new();
    if p.filter != d.filter || r.below(2) == 0 {
        parts.push(format!("where={}", form(&p.filter.to_string())));
    }
    if let Some(o) = &p.order {
        parts.push(format!("order={}", form(o)));
    }
    if p.limit != d.limit || r.below(2) == 0 {
        parts.push(format!("limit={}", p.limit));
    }
    if p.offset != d.offset || r.below(2) == 0 {
        parts.push(format!("offset={}", p.offset));
    }
    if p.count || r.below(2) == 0 {
        parts.push(format!("count={}", p.count));
    }
    if let Some(a) = &p.after {
        parts.push(format!("after={a}"));
    }
    if let Some(f) = &p.fields {
        parts.push(format!("fields={}", form(&f.join(","))));
    }
    // Parameter order does not matter.
    for i in (1..parts.len()).rev() {
        parts.swap(i, r.below(i + 1));
    }
    parts.join("&")
}

#[test]
fn fuzz_list_query_parse_of_render_is_identity() {
    let mut r = Rng::new(0xf00d_0002);
    for _ in 0..iters() {
        let p = random_list_params(&mut r);
        if p.filter.to_string().len() > input::MAX_WHERE_BYTES || p.fields.as_ref().is_some_and(|f| f.iter().any(String::is_empty)) {
            continue;
        }
        let q = render(&p, &mut r);
        let parsed = input::list_params(Some(&q));
        assert!(parsed.as_ref() == Ok(&p), "{q:.300}: {parsed:.300?}");
    }
}

#[test]
fn fuzz_random_query_strings_never_panic() {
    let mut r = Rng::new(0xf00d_0007);
    for _ in 0..iters() {
        let q = r.string(12);
        let _ = input::list_params(Some(&q));
        let _ = input::index_kind(Some(&q));
    }
}

/// A valid value of a body field's type.
fn field_value(r: &mut Rng, ty: FieldType) -> Value {
    match ty {
        FieldType::Text => Value::String(r.string(3).replace('\0', "")),
        FieldType::Uuid => Value::String(uuid(r)),
        FieldType::Object | FieldType::Data => json!({"k": strip_nul(r.json(2))}),
        FieldType::Any => strip_nul(r.json(2)),
    }
}

#[test]
fn fuzz_bodies_follow_each_routes_declared_fields() {
    let mut r = Rng::new(0xf00d_0003);
    let with_body: Vec<_> = ROUTES.iter().filter_map(|rt| rt.body.map(|f| (rt.name, f))).collect();
    for _ in 0..iters() {
        let (name, fields) = *r.pick(&with_body);
        let mut body = serde_json::Map::new();
        for f in fields.iter() {
            let v = field_value(&mut r, f.ty);
            if f.need == Need::Optional && r.below(2) == 0 || v.is_null() && f.need != Need::Required {
                continue;
            }
            body.insert(f.name.to_string(), v);
        }
        let one_of = fields.iter().filter(|f| f.need == Need::OneOf).count();
        let sent_one = fields.iter().any(|f| f.need == Need::OneOf && body.contains_key(f.name));
        let required_null = fields.iter().any(|f| f.need == Need::Required && body[f.name].is_null());
        let text = Value::Object(body.clone()).to_string();
        let accepted = input::parse_body(fields, text.as_bytes());
        if required_null || (one_of > 0 && !sent_one) {
            assert!(accepted.is_err(), "{name}: {text}");
            continue;
        }
        assert!(accepted.is_ok(), "{name}: {text}: {accepted:?}");
        // One field more, not declared: refused, naming it (an open body, ANY_FIELDS,
        // takes any name: Postgres checks those).
        let extra = format!("x{}", r.string(2).replace(['\0', '"', '\\'], ""));
        // (A body of any field names, ANY_FIELDS, takes it: Postgres names it.)
        if !fields.iter().any(|f| f.name == extra || f.name == input::ANY_FIELD) {
            let mut more = body.clone();
            more.insert(extra.clone(), json!(1));
            let e = input::parse_body(fields, Value::Object(more).to_string().as_bytes()).unwrap_err();
            assert!(e.message.contains(&format!("'{extra}'")), "{name}: {}", e.message);
        }
        // A required field left out: refused, naming it.
        if let Some(f) = fields.iter().find(|f| f.need == Need::Required) {
            let mut less = body.clone();
            less.remove(f.name);
            let e = input::parse_body(fields, Value::Object(less).to_string().as_bytes()).unwrap_err();
            assert!(e.message.contains(&format!("'{}'", f.name)), "{name}: {}", e.message);
        }
    }
}

#[test]
fn fuzz_random_bodies_and_if_match_never_panic() {
    let mut r = Rng::new(0xf00d_0004);
    for i in 0..iters() {
        let body: Vec<u8> = match i % 3 {
            0 => (0..r.below(64)).map(|_| r.next() as u8).collect(),
            1 => r.string(10).into_bytes(),
            _ => r.json(5).to_string().into_bytes(),
        };
        let route = r.pick(ROUTES);
        let _ = input::parse_body(route.body.unwrap_or(&[]), &body);
        let h = r.string(4);
        match input::if_match(Some(&h)) {
            Ok(Some(v)) => assert!(v >= 1, "{h:?} -> {v}"),
            Ok(None) => assert!(h.trim() == "*", "{h:?} taken as no condition"),
            Err(_) => {}
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
            Verdict::Invalid(e) => assert_eq!(e.status, http::StatusCode::UNAUTHORIZED, "{token:?}"),
        }
    }
}
