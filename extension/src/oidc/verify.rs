//! ID tokens of OpenID Connect providers (Sign in with Apple, Google, any OIDC issuer):
//! the key sets the proxy fetches (`check_jwks`) and the tokens apps send (`verify`).
//! jsonwebtoken checks the signature only; every claim is checked here against the
//! caller's `now`, so the rules are ours and testable without a clock.
//! Plain Rust: no pgrx, tested by the #[test]s below (sql/oidc.sql calls it through
//! api/oidc.rs).
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Longest ID token accepted (Google's are ~1 KiB, Apple's ~0.8 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Largest key set kept, in keys and in bytes of JSON.
pub const MAX_KEYS: usize = 20;
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Clock skew allowed between the provider and this database, in seconds.
pub const LEEWAY: i64 = 60;

#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// 28000 invalid_id_token: the message names the check that failed.
    Invalid(String),
    /// 55000 oidc_keys_stale: the token names a key this set does not hold (the
    /// provider may have rotated its keys): fetch the set again and retry once.
    KeysStale(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError::Invalid(msg.into()))
}

const ALGS: &str = "RS256, RS384, RS512, ES256 or ES384";

fn alg_of(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        _ => return None,
    })
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// The key usable for signatures, reduced to the members we read, or why not.
fn usable_key(k: &Value) -> Result<Value, String> {
    let Some(o) = k.as_object() else {
        return Err("a key is not a JSON object".into());
    };
    let text = |name: &str| o.get(name).and_then(Value::as_str);
    if let Some(u) = o.get("use") {
        if u.as_str() != Some("sig") {
            return Err("key is not for signatures".into());
        }
    }
    let mut out = Map::new();
    match text("kty") {
        Some("RSA") => {
            let (Some(n), Some(e)) = (text("n").and_then(b64), text("e").and_then(b64)) else {
                return Err("RSA key without n and e".into());
            };
            let n = {
                let first = n.iter().position(|b| *b != 0).unwrap_or(n.len());
                &n[first..]
            };
            let bits = if n.is_empty() { 0 } else { (n.len() - 1) * 8 + (8 - n[0].leading_zeros() as usize) };
            if bits < 2048 {
                return Err("RSA key shorter than 2048 bits".into());
            }
            if e.is_empty() || e.len() > 8 {
                return Err("RSA key with an unusable exponent".into());
            }
            if let Some(a) = o.get("alg") {
                if !matches!(a.as_str(), Some("RS256" | "RS384" | "RS512")) {
                    return Err("RSA key for another algorithm".into());
                }
            }
            for m in ["kty", "n", "e"] {
                out.insert(m.into(), o[m].clone());
            }
        }
        Some("EC") => {
            let len = match text("crv") {
                Some("P-256") => 32,
                Some("P-384") => 48,
                _ => return Err("EC key on a curve other than P-256 or P-384".into()),
            };
            let (Some(x), Some(y)) = (text("x").and_then(b64), text("y").and_then(b64)) else {
                return Err("EC key without x and y".into());
            };
            if x.len() != len || y.len() != len {
                return Err("EC key of the wrong size for its curve".into());
            }
            let want = if len == 32 { "ES256" } else { "ES384" };
            if let Some(a) = o.get("alg") {
                if a.as_str() != Some(want) {
                    return Err("EC key for another algorithm".into());
                }
            }
            for m in ["kty", "crv", "x", "y"] {
                out.insert(m.into(), o[m].clone());
            }
        }
        _ => return Err("key type is not RSA or EC".into()),
    }
    for m in ["kid", "alg"] {
        if let Some(v) = o.get(m) {
            if !v.is_string() {
                return Err(format!("key member {m} is not a string"));
            }
            out.insert(m.into(), v.clone());
        }
    }
    Ok(Value::Object(out))
}

/// The keys of a JWKS document (RFC 7517) usable for ID tokens: RSA (≥ 2048 bits) and
/// EC P-256/P-384 signature keys, each with only the members verification reads.
/// Refused (22023 invalid_jwks): not `{"keys": [...]}`, more than 20 keys, more than
/// 64 KiB, no usable key.
pub fn check_jwks(jwks: &Value) -> Result<Value, String> {
    let size = jwks.to_string().len();
    if size > MAX_JWKS_BYTES {
        return Err(format!("the key set is {size} bytes; at most {MAX_JWKS_BYTES} are kept"));
    }
    let Some(keys) = jwks.get("keys").and_then(Value::as_array) else {
        return Err("a key set is a JSON object {\"keys\": [...]}".into());
    };
    if keys.len() > MAX_KEYS {
        return Err(format!("the key set holds {} keys; at most {MAX_KEYS} are kept", keys.len()));
    }
    let kept: Vec<Value> = keys.iter().filter_map(|k| usable_key(k).ok()).collect();
    if kept.is_empty() {
        let why = keys.first().map(|k| usable_key(k).err().unwrap_or_default()).unwrap_or_else(|| "it is empty".into());
        return Err(format!("the key set holds no usable signature key ({why})"));
    }
    Ok(serde_json::json!({ "keys": kept }))
}

/// What an ID token must satisfy besides its signature.
pub struct Expect<'a> {
    pub issuers: &'a [String],
    pub client_ids: &'a [String],
    /// Oldest `iat` accepted, in seconds before `now`.
    pub max_age: i64,
    /// Unix seconds.
    pub now: i64,
}

fn segment_json(seg: &str) -> Option<Map<String, Value>> {
    serde_json::from_slice::<Value>(&b64(seg)?).ok()?.as_object().cloned()
}

/// True when the JSON object in this segment names a member twice (or is unreadable):
/// different parsers would take different values (as proxy/src/jwt.rs refuses).
fn has_duplicate_keys(seg: &str) -> bool {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Dup;
    impl<'de> Visitor<'de> for Dup {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<bool, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut dup = false;
            while let Some(k) = m.next_key::<String>()? {
                dup |= !seen.insert(k);
                m.next_value::<IgnoredAny>()?;
            }
            Ok(dup)
        }
    }
    let Some(bytes) = b64(seg) else { return true };
    serde_json::Deserializer::from_slice(&bytes).deserialize_map(Dup).unwrap_or(true)
}

fn number(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    claims.get(name).and_then(Value::as_f64).filter(|f| f.is_finite()).map(|f| f as i64)
}

/// Verify an ID token against the provider's key set `jwks` (as `check_jwks` kept it)
/// and `expect`; its claims when every check passes.
pub fn verify(token: &str, jwks: &Value, expect: &Expect) -> Result<Map<String, Value>, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return invalid("the ID token is longer than 16 KiB");
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return invalid("the ID token is not a signed JWT (three base64url parts)");
    }
    let Some(header) = segment_json(parts[0]) else {
        return invalid("the ID token's header is not base64url JSON");
    };
    if has_duplicate_keys(parts[0]) || has_duplicate_keys(parts[1]) {
        return invalid("the ID token names a header member or claim twice");
    }
    let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let Some(alg) = alg_of(alg_name) else {
        return invalid(format!("the ID token's algorithm (alg {alg_name:?}) is not accepted: {ALGS} only"));
    };
    if header.contains_key("crit") {
        return invalid("the ID token's header has critical extensions (crit)");
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return invalid("the ID token's key id (kid) is not a string"),
    };
    let keys: &[Value] = jwks.get("keys").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
    let key = match kid {
        Some(kid) => match keys.iter().find(|k| k.get("kid").and_then(Value::as_str) == Some(kid)) {
            Some(k) => k,
            None => return Err(VerifyError::KeysStale(format!("the provider's keys hold no key with kid {kid:?}"))),
        },
        None if keys.len() == 1 => &keys[0],
        None if keys.is_empty() => return Err(VerifyError::KeysStale("no keys of this provider are known yet".into())),
        None => return invalid("the ID token names no key (kid) and the provider has several"),
    };
    let text = |name: &str| key.get(name).and_then(Value::as_str).unwrap_or("");
    if let Some(a) = key.get("alg").and_then(Value::as_str) {
        if a != alg_name {
            return invalid(format!("the ID token's algorithm {alg_name} is not its key's ({a})"));
        }
    }
    let decoding = match (alg, text("kty"), text("crv")) {
        (Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512, "RSA", _) => {
            DecodingKey::from_rsa_components(text("n"), text("e"))
        }
        (Algorithm::ES256, "EC", "P-256") | (Algorithm::ES384, "EC", "P-384") => {
            DecodingKey::from_ec_components(text("x"), text("y"))
        }
        _ => return invalid(format!("the ID token's algorithm {alg_name} does not fit its key")),
    };
    let Ok(decoding) = decoding else {
        return invalid("the provider's key is unusable");
    };
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation.required_spec_claims.clear();
    let claims = match jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation) {
        Ok(d) => d.claims,
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind as K;
            return invalid(match e.kind() {
                K::InvalidSignature | K::InvalidEcdsaKey | K::InvalidRsaKey(_) => "the ID token's signature is not valid",
                _ => "the ID token is malformed",
            });
        }
    };
    check_claims(&claims, expect)?;
    Ok(claims)
}

/// The registered claims of a signed token, against `expect`.
pub fn check_claims(claims: &Map<String, Value>, expect: &Expect) -> Result<(), VerifyError> {
    let now = expect.now;
    match claims.get("iss").and_then(Value::as_str) {
        Some(iss) if expect.issuers.iter().any(|i| i == iss) => {}
        Some(iss) => return invalid(format!("the ID token's issuer (iss {iss:?}) is not this provider's")),
        None => return invalid("the ID token has no issuer (iss)"),
    }
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.iter().filter_map(Value::as_str).collect(),
        _ => return invalid("the ID token has no audience (aud)"),
    };
    let ours = |a: &str| expect.client_ids.iter().any(|c| c == a);
    if !auds.iter().any(|a| ours(a)) {
        return invalid("the ID token's audience (aud) is none of this provider's client ids");
    }
    if auds.len() > 1 && !claims.get("azp").and_then(Value::as_str).is_some_and(ours) {
        return invalid("the ID token has several audiences and its authorized party (azp) is not one of this provider's client ids");
    }
    let Some(exp) = number(claims, "exp") else {
        return invalid("the ID token has no expiry (exp)");
    };
    if exp <= now - LEEWAY {
        return invalid("the ID token has expired (exp)");
    }
    let Some(iat) = number(claims, "iat") else {
        return invalid("the ID token has no issue time (iat)");
    };
    if iat > now + LEEWAY {
        return invalid("the ID token was issued in the future (iat)");
    }
    if iat < now - expect.max_age {
        return invalid("the ID token was issued longer ago than this provider's max_token_age (iat)");
    }
    if claims.contains_key("nbf") {
        match number(claims, "nbf") {
            Some(nbf) if nbf <= now + LEEWAY => {}
            _ => return invalid("the ID token is not valid yet (nbf)"),
        }
    }
    match claims.get("sub").and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s.len() <= 255 => {}
        _ => return invalid("the ID token's subject (sub) is missing or longer than 255 bytes"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::sync::OnceLock;

    struct Rsa {
        enc: EncodingKey,
        jwk: Value,
    }

    fn rsa_key() -> &'static Rsa {
        static K: OnceLock<Rsa> = OnceLock::new();
        K.get_or_init(|| {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            use rsa::traits::PublicKeyParts;
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
            let e64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            Rsa {
                enc: EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes()),
                jwk: json!({"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256",
                            "n": e64(key.n().to_bytes_be()), "e": e64(key.e().to_bytes_be())}),
            }
        })
    }

    fn ec_key() -> (EncodingKey, Value) {
        use p256::pkcs8::EncodePrivateKey;
        let key = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
        let point = key.verifying_key().to_encoded_point(false);
        let e64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        (
            EncodingKey::from_ec_der(key.to_pkcs8_der().unwrap().as_bytes()),
            json!({"kty": "EC", "kid": "e1", "crv": "P-256", "x": e64(point.x().unwrap()), "y": e64(point.y().unwrap())}),
        )
    }

    const NOW: i64 = 1_800_000_000;

    fn claims() -> Value {
        json!({"iss": "https://issuer.example", "aud": "app", "sub": "user-1",
               "iat": NOW - 10, "exp": NOW + 600, "email": "a@example.com"})
    }

    fn mint(alg: Algorithm, kid: Option<&str>, enc: &EncodingKey, c: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, c, enc).unwrap()
    }

    fn expect() -> (Vec<String>, Vec<String>) {
        (vec!["https://issuer.example".into()], vec!["app".into(), "web".into()])
    }

    fn run(token: &str, jwks: &Value) -> Result<Map<String, Value>, VerifyError> {
        let (iss, aud) = expect();
        verify(token, jwks, &Expect { issuers: &iss, client_ids: &aud, max_age: 3600, now: NOW })
    }

    fn rsa_set() -> Value {
        check_jwks(&json!({"keys": [rsa_key().jwk]})).unwrap()
    }

    fn msg(r: Result<Map<String, Value>, VerifyError>) -> String {
        match r {
            Err(VerifyError::Invalid(m)) => m,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn rs256_token_verifies_and_returns_its_claims() {
        let t = mint(Algorithm::RS256, Some("r1"), &rsa_key().enc, &claims());
        let c = run(&t, &rsa_set()).unwrap();
        assert_eq!(c["sub"], "user-1");
        assert_eq!(c["email"], "a@example.com");
    }

    #[test]
    fn es256_token_verifies() {
        let (enc, jwk) = ec_key();
        let set = check_jwks(&json!({"keys": [jwk]})).unwrap();
        let t = mint(Algorithm::ES256, Some("e1"), &enc, &claims());
        assert_eq!(run(&t, &set).unwrap()["sub"], "user-1");
        // Another key of the same kid: the signature fails.
        let (other, _) = ec_key();
        let t = mint(Algorithm::ES256, Some("e1"), &other, &claims());
        assert!(msg(run(&t, &set)).contains("signature"));
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let t = mint(Algorithm::RS256, Some("r1"), &rsa_key().enc, &claims());
        let mut c = claims();
        c["sub"] = json!("someone-else");
        let forged_payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string());
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(msg(run(&forged, &rsa_set())).contains("signature"));
    }

    #[test]
    fn none_and_hmac_algorithms_are_refused() {
        let e64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", e64(r#"{"alg":"none","kid":"r1"}"#), e64(&claims().to_string()));
        assert!(msg(run(&none, &rsa_set())).contains("alg \"none\""));
        // HS256 keyed with the RSA key's public modulus: the classic confusion.
        let hs = mint(Algorithm::HS256, Some("r1"), &EncodingKey::from_secret(b"n"), &claims());
        assert!(msg(run(&hs, &rsa_set())).contains("alg \"HS256\""));
    }

    #[test]
    fn an_unknown_kid_asks_for_fresh_keys() {
        let t = mint(Algorithm::RS256, Some("rotated"), &rsa_key().enc, &claims());
        assert!(matches!(run(&t, &rsa_set()), Err(VerifyError::KeysStale(_))));
        // No keys at all yet: stale too.
        let t = mint(Algorithm::RS256, None, &rsa_key().enc, &claims());
        assert!(matches!(run(&t, &json!({"keys": []})), Err(VerifyError::KeysStale(_))));
        // No kid and one key: that key.
        assert!(run(&t, &rsa_set()).is_ok());
    }

    #[test]
    fn algorithm_must_fit_the_key() {
        let t = mint(Algorithm::RS384, Some("r1"), &rsa_key().enc, &claims());
        // The key says alg RS256.
        assert!(msg(run(&t, &rsa_set())).contains("not its key's"));
        let mut jwk = rsa_key().jwk.clone();
        jwk.as_object_mut().unwrap().remove("alg");
        let set = check_jwks(&json!({"keys": [jwk]})).unwrap();
        assert!(run(&t, &set).is_ok());
        let t = mint(Algorithm::ES256, Some("r1"), &ec_key().0, &claims());
        assert!(msg(run(&t, &set)).contains("does not fit"));
    }

    #[test]
    fn each_claim_check_names_itself() {
        let key = &rsa_key().enc;
        let set = rsa_set();
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            msg(run(&mint(Algorithm::RS256, Some("r1"), key, &c), &set))
        };
        let without = |k: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(k);
            msg(run(&mint(Algorithm::RS256, Some("r1"), key, &c), &set))
        };
        assert!(with("iss", json!("https://evil.example")).contains("issuer (iss"));
        assert!(without("iss").contains("issuer"));
        assert!(with("aud", json!("other-app")).contains("audience (aud)"));
        assert!(with("aud", json!(["other", "x"])).contains("audience (aud)"));
        assert!(with("aud", json!(["app", "other"])).contains("azp"));
        assert!(with("exp", json!(NOW - 61)).contains("expired (exp)"));
        assert!(without("exp").contains("exp"));
        assert!(with("iat", json!(NOW - 3601)).contains("max_token_age"));
        assert!(with("iat", json!(NOW + 61)).contains("future (iat)"));
        assert!(without("iat").contains("iat"));
        assert!(with("nbf", json!(NOW + 61)).contains("nbf"));
        assert!(with("sub", json!("")).contains("sub"));
        assert!(with("sub", json!("x".repeat(256))).contains("sub"));
        // Within the 60 s leeway: accepted.
        let mut c = claims();
        c["exp"] = json!(NOW - 59);
        c["nbf"] = json!(NOW + 59);
        assert!(run(&mint(Algorithm::RS256, Some("r1"), key, &c), &set).is_ok());
        // Several audiences with an accepted azp: accepted.
        let mut c = claims();
        c["aud"] = json!(["app", "other"]);
        c["azp"] = json!("app");
        assert!(run(&mint(Algorithm::RS256, Some("r1"), key, &c), &set).is_ok());
    }

    #[test]
    fn duplicate_claims_are_refused() {
        // Signed by the right key, but "sub" twice: which one counts depends on the parser.
        let e64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let header = e64(br#"{"alg":"RS256","kid":"r1"}"#);
        let body = format!(
            r#"{{"iss":"https://issuer.example","aud":"app","sub":"a","sub":"b","iat":{},"exp":{}}}"#,
            NOW,
            NOW + 600
        );
        let payload = e64(body.as_bytes());
        let signing_input = format!("{header}.{payload}");
        let sig = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &rsa_key().enc, Algorithm::RS256).unwrap();
        let t = format!("{signing_input}.{sig}");
        assert!(msg(run(&t, &rsa_set())).contains("twice"));
    }

    #[test]
    fn oversized_and_malformed_tokens_are_refused() {
        assert!(msg(run(&"a".repeat(MAX_TOKEN_LEN + 1), &rsa_set())).contains("16 KiB"));
        assert!(msg(run("abc", &rsa_set())).contains("three"));
        assert!(msg(run("!!.!!.!!", &rsa_set())).contains("header"));
    }

    #[test]
    fn key_sets_keep_only_usable_signature_keys() {
        let rsa = rsa_key().jwk.clone();
        let (_, ec) = ec_key();
        let weak = json!({"kty": "RSA", "kid": "w", "n": "AQAB", "e": "AQAB"});
        let enc = json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa["n"], "e": "AQAB"});
        let oct = json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"});
        let kept = check_jwks(&json!({"keys": [rsa, ec, weak, enc, oct, 7]})).unwrap();
        let kids: Vec<&str> = kept["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, ["r1", "e1"]);
        assert!(check_jwks(&json!({"keys": [weak]})).unwrap_err().contains("2048"));
        assert!(check_jwks(&json!({"keys": []})).is_err());
        assert!(check_jwks(&json!([rsa])).is_err());
        let many: Vec<Value> = (0..21).map(|_| rsa_key().jwk.clone()).collect();
        assert!(check_jwks(&json!({"keys": many})).unwrap_err().contains("21 keys"));
        let big = json!({"keys": [rsa_key().jwk], "pad": "x".repeat(MAX_JWKS_BYTES)});
        assert!(check_jwks(&big).unwrap_err().contains("bytes"));
    }
}
