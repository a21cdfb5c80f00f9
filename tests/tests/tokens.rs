//! End-to-end: every forged or stale token is refused with 401 invalid_token, and key
//! rotation keeps old tokens working while new ones verify at once.

mod common;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

fn me(token: &str) -> Resp {
    call("GET", "/v1/auth/user", Some(token), None)
}

fn assert_refused(token: &str, why: &str) {
    let r = me(token);
    assert_eq!((r.status, r.code()), (401, "invalid_token"), "{why}: {}", r.body);
}

fn header_b64(h: Value) -> String {
    b64(h.to_string().as_bytes())
}

#[test]
fn a_token_signed_with_the_database_key_is_accepted() {
    // The control for every forgery below: same helper, correct claims, 200.
    let u = signup("control");
    let t = sign_with_db_key(&claims_for(&u));
    assert_eq!(me(&t).status, 200);
}

#[test]
fn alg_none_is_refused() {
    let u = signup("none");
    let body = b64(claims_for(&u).to_string().as_bytes());
    for alg in ["none", "None", "NONE"] {
        let t = format!("{}.{}.", header_b64(json!({"alg": alg, "typ": "JWT"})), body);
        assert_refused(&t, alg);
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let u = signup("hs256");
    let jwks = call("GET", "/.well-known/jwks.json", None, None).body;
    let key = &jwks["keys"][0];
    let kid = key["kid"].as_str().unwrap();
    let x = key["x"].as_str().unwrap();
    let body = b64(claims_for(&u).to_string().as_bytes());
    // Try the usual confusions: the x value, its decoded bytes, the JWK as JSON.
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(x).unwrap();
    for secret in [x.as_bytes().to_vec(), raw, key.to_string().into_bytes()] {
        let signing_input = format!("{}.{}", header_b64(json!({"alg": "HS256", "typ": "JWT", "kid": kid})), body);
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
        mac.update(signing_input.as_bytes());
        let t = format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()));
        assert_refused(&t, "HS256 with public key");
    }
}

#[test]
fn unknown_kid_and_foreign_key_are_refused() {
    use ed25519_dalek::Signer;
    let u = signup("kid");
    let mine = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let body = b64(claims_for(&u).to_string().as_bytes());
    let real_kid = call("GET", "/.well-known/jwks.json", None, None).body["keys"][0]["kid"].as_str().unwrap().to_string();
    for kid in ["no-such-key", real_kid.as_str()] {
        let input = format!("{}.{}", header_b64(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid})), body);
        let t = format!("{input}.{}", b64(&mine.sign(input.as_bytes()).to_bytes()));
        assert_refused(&t, kid);
    }
    // No kid at all.
    let input = format!("{}.{}", header_b64(json!({"alg": "EdDSA", "typ": "JWT"})), body);
    assert_refused(&format!("{input}.{}", b64(&mine.sign(input.as_bytes()).to_bytes())), "no kid");
}

#[test]
fn tampered_signature_or_claims_are_refused() {
    let u = signup("tamper");
    let parts: Vec<&str> = u.access.split('.').collect();
    let mut sig = parts[2].to_string();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, flipped);
    assert_refused(&format!("{}.{}.{}", parts[0], parts[1], sig), "flipped signature");
    let mut claims = payload(&u.access);
    claims["role"] = json!("baas_service");
    assert_refused(&format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2]), "edited claims");
}

/// The proxy remembers tokens it verified; a remembered token still stops working the
/// second it expires, and one not yet valid starts working only at its nbf.
#[test]
fn a_remembered_token_expires_on_time_and_an_early_one_waits_for_nbf() {
    let u = signup("cache");
    let mut c = claims_for(&u);
    let now = c["iat"].as_i64().unwrap();
    c["exp"] = json!(now + 2);
    let t = sign_with_db_key(&c);
    assert_eq!(me(&t).status, 200);
    assert_eq!(me(&t).status, 200, "second use, from the cache");
    let mut early = claims_for(&u);
    early["nbf"] = json!(now + 2);
    let e = sign_with_db_key(&early);
    assert_refused(&e, "nbf in 2 s");
    std::thread::sleep(std::time::Duration::from_millis(3100));
    assert_refused(&t, "expired while cached");
    assert_eq!(me(&e).status, 200, "valid once nbf has passed");
}

#[test]
fn expired_wrong_audience_wrong_issuer_and_not_yet_valid_are_refused() {
    let u = signup("claims");
    let good = claims_for(&u);
    let now = good["iat"].as_i64().unwrap();
    let cases = [
        ("expired", json!({"exp": now - 5})),
        ("wrong aud", json!({"aud": "someone-else"})),
        ("wrong iss", json!({"iss": "https://evil.example"})),
        ("nbf in the future", json!({"nbf": now + 3600})),
        ("foreign role", json!({"role": "postgres"})),
        ("service role", json!({"role": "baas_service"})),
        ("no exp", json!({"exp": null})),
    ];
    for (why, patch) in cases {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        assert_refused(&sign_with_db_key(&c), why);
    }
}

#[test]
fn malformed_authorization_headers_are_refused() {
    for h in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer not.a.jwt", "Bearer a.b", "bearer x.y.z", "Token abc"] {
        let r = call_with("GET", "/v1/auth/user", None, None, &[("Authorization", h)]);
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{h}");
    }
    let long = format!("Bearer {}", "a".repeat(20_000));
    let r = call_with("GET", "/v1/auth/user", None, None, &[("Authorization", &long)]);
    assert_eq!(r.status, 401);
}

#[test]
fn rotation_keeps_old_tokens_and_new_tokens_verify_at_once() {
    let u = signup("rotate");
    let kid_before = call("GET", "/.well-known/jwks.json", None, None).body["keys"][0]["kid"].clone();
    let new_kid: String = admin().query_one("select baas.rotate_signing_key()", &[]).unwrap().get(0);
    assert_ne!(json!(new_kid), kid_before);
    // A token signed by the new key works on the very next request (the proxy reloads
    // keys when it meets an unknown kid) ...
    let login = post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD}));
    let fresh = login.body["access_token"].as_str().unwrap();
    assert_eq!(payload(fresh)["sid"].is_string(), true);
    assert_eq!(me(fresh).status, 200, "token of the rotated key");
    // ... and the token signed before the rotation still verifies.
    assert_eq!(me(&u.access).status, 200, "token of the previous key");
    let kids: Vec<Value> = call("GET", "/.well-known/jwks.json", None, None).body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert!(kids.contains(&json!(new_kid)) && kids.contains(&kid_before), "{kids:?}");
}
