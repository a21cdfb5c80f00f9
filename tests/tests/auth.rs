//! End-to-end: the auth routes over real HTTP, through the real proxy, into a real
//! Postgres with the extension.

mod common;
use common::*;
use serde_json::json;

#[test]
fn signup_returns_user_and_token_pair() {
    let e = email("Shape");
    let r = post("/v1/auth/signup", None, json!({"email": e, "password": PASSWORD, "data": {"name": "Ada"}}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["user"]["email"], e.to_lowercase());
    assert_eq!(r.body["user"]["data"], json!({"name": "Ada"}));
    assert_eq!(r.body["token_type"], "bearer");
    assert_eq!(r.body["expires_in"], 900);
    assert!(r.body["refresh_token"].as_str().unwrap().len() >= 40);
    assert!(r.body["user"].get("password_hash").is_none(), "hash must never leave the database");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let claims = payload(r.body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], r.body["user"]["id"]);
    for k in ["role", "exp", "iat", "sid", "aud", "iss"] {
        assert!(claims.get(k).is_some(), "claim {k} missing: {claims}");
    }
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
}

#[test]
fn duplicate_email_is_409_case_insensitively() {
    let u = signup("dup");
    let r = post("/v1/auth/signup", None, json!({"email": u.email.to_uppercase(), "password": PASSWORD}));
    assert_eq!((r.status, r.code()), (409, "email_taken"));
}

#[test]
fn password_is_stored_as_argon2id() {
    let u = signup("hash");
    let hash: String = admin()
        .query_one("select password_hash from baas.users where id = $1::text::uuid", &[&u.id])
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
}

#[test]
fn login_and_wrong_password() {
    let u = signup("login");
    let ok = post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD}));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["user"]["id"], u.id.as_str());
    let me = call("GET", "/v1/auth/user", Some(ok.body["access_token"].as_str().unwrap()), None);
    assert_eq!((me.status, me.body["email"].as_str()), (200, Some(u.email.as_str())));

    let wrong = post("/v1/auth/login", None, json!({"email": u.email, "password": "not the password"}));
    let unknown = post("/v1/auth/login", None, json!({"email": email("nobody"), "password": "not the password"}));
    assert_eq!((wrong.status, wrong.code()), (401, "invalid_credentials"));
    assert_eq!(wrong.body, unknown.body, "unknown email and wrong password must look the same");
    assert_eq!(unknown.status, 401);
}

#[test]
fn unknown_email_costs_about_as_much_as_a_wrong_password() {
    // Not a speed target: a ratio within one run. Without the dummy hash an unknown
    // email answers ~20x faster than a wrong password (no argon2id at all).
    let u = signup("timing");
    let time = |email: &str| {
        // Five: the free failures one client has per account before it must wait
        // (baas.settings.login_source_failures); a sixth would be answered unverified.
        let mut v: Vec<f64> = (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                let r = post("/v1/auth/login", None, json!({"email": email, "password": "wrong password!"}));
                assert_eq!(r.status, 401);
                t.elapsed().as_secs_f64()
            })
            .collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[2]
    };
    let known = time(&u.email);
    let unknown = time(&email("ghost"));
    let ratio = unknown / known;
    assert!(ratio > 0.4 && ratio < 2.5, "unknown/known login time ratio {ratio:.2} ({unknown:.4}s vs {known:.4}s)");
}

#[test]
fn refresh_rotates_and_reuse_revokes_the_session() {
    let u = signup("refresh");
    let r1 = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
    assert_eq!(r1.status, 200, "{}", r1.body);
    let rt2 = r1.body["refresh_token"].as_str().unwrap().to_string();
    let at2 = r1.body["access_token"].as_str().unwrap().to_string();
    assert_ne!(rt2, u.refresh);
    assert_eq!(payload(&at2)["sid"], payload(&u.access)["sid"], "same session family");
    assert_eq!(call("GET", "/v1/auth/user", Some(&at2), None).status, 200);

    // A retry within the reuse interval (default 10 s) gets the same refresh token and a
    // working access token: a flaky network does not end the session.
    let retry = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["refresh_token"].as_str(), Some(rt2.as_str()));
    let at_retry = retry.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(call("GET", "/v1/auth/user", Some(&at_retry), None).status, 200);

    // Past the interval (its first use made a minute older), the spent token coming back
    // is a copy in someone else's hands: 401, and everything of that session dies.
    let aged = admin()
        .execute(
            "update baas.refresh_tokens set used_at = used_at - interval '1 minute' where token_hash = baas._hash_token($1)",
            &[&u.refresh],
        )
        .unwrap();
    assert_eq!(aged, 1);
    let reuse = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
    assert_eq!((reuse.status, reuse.code()), (401, "refresh_token_reused"));
    let later = post("/v1/auth/refresh", None, json!({"refresh_token": rt2}));
    assert_eq!((later.status, later.code()), (401, "invalid_refresh_token"));
    for t in [&u.access, &at2, &at_retry] {
        let me = call("GET", "/v1/auth/user", Some(t), None);
        assert_eq!((me.status, me.code()), (401, "invalid_token"));
    }
    // Other sessions of the same account are untouched.
    let again = post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD}));
    assert_eq!(again.status, 200);
}

#[test]
fn two_refreshes_racing_with_one_token_both_get_the_same_pair() {
    // Two tabs, or a retry after a timeout, refresh with the same token at once.
    let u = signup("race");
    let answers: Vec<Resp> = std::thread::scope(|s| {
        let a = s.spawn(|| post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh})));
        let b = s.spawn(|| post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh})));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.body);
        let at = r.body["access_token"].as_str().unwrap();
        assert_eq!(call("GET", "/v1/auth/user", Some(at), None).status, 200, "the session lives on");
    }
    assert_eq!(answers[0].body["refresh_token"], answers[1].body["refresh_token"]);
    // And the one refresh token both hold keeps working.
    let next = post("/v1/auth/refresh", None, json!({"refresh_token": answers[0].body["refresh_token"]}));
    assert_eq!(next.status, 200, "{}", next.body);
}

#[test]
fn refresh_with_garbage_is_401() {
    for t in ["", "nope", &"x".repeat(300)] {
        let r = post("/v1/auth/refresh", None, json!({"refresh_token": t}));
        assert_eq!((r.status, r.code()), (401, "invalid_refresh_token"), "{t:.10}");
    }
}

#[test]
fn logout_ends_the_session_at_once() {
    let u = signup("logout");
    let other = post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD}));
    let other_token = other.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(call("GET", "/v1/auth/user", Some(&u.access), None).status, 200);
    let out = call("POST", "/v1/auth/logout", Some(&u.access), None);
    assert_eq!(out.status, 204);
    assert_eq!(out.body, serde_json::Value::Null);
    let me = call("GET", "/v1/auth/user", Some(&u.access), None);
    assert_eq!((me.status, me.code()), (401, "invalid_token"));
    let r = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
    assert_eq!(r.status, 401);
    // Only that session: the other sign-in still works.
    assert_eq!(call("GET", "/v1/auth/user", Some(&other_token), None).status, 200);
}

#[test]
fn user_routes_need_a_token() {
    for (m, p) in [("GET", "/v1/auth/user"), ("DELETE", "/v1/auth/user"), ("POST", "/v1/auth/logout")] {
        let r = call(m, p, None, None);
        assert_eq!((r.status, r.code()), (401, "not_authenticated"), "{m} {p}");
    }
    let r = call("PATCH", "/v1/auth/user", None, Some(r#"{"data":{"a":1}}"#));
    assert_eq!((r.status, r.code()), (401, "not_authenticated"));
}

#[test]
fn update_user_merges_data() {
    let u = signup("patch");
    let r = call("PATCH", "/v1/auth/user", Some(&u.access), Some(r#"{"data":{"a":1,"b":{"c":2}}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call("PATCH", "/v1/auth/user", Some(&u.access), Some(r#"{"data":{"a":null,"b":{"d":3}}}"#));
    assert_eq!(r.body["user"]["data"], json!({"b": {"c": 2, "d": 3}}));
    let me = call("GET", "/v1/auth/user", Some(&u.access), None);
    assert_eq!(me.body["data"], json!({"b": {"c": 2, "d": 3}}));
    let bad = call("PATCH", "/v1/auth/user", Some(&u.access), Some(r#"{"data":[1]}"#));
    assert_eq!(bad.status, 400);
    let empty = call("PATCH", "/v1/auth/user", Some(&u.access), Some("{}"));
    assert_eq!((empty.status, empty.code()), (400, "invalid_request"));
}

#[test]
fn password_change_ends_every_session_and_signs_in_again() {
    let u = signup("pwchange");
    let second = post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD}));
    let second_token = second.body["access_token"].as_str().unwrap().to_string();

    let missing = call("PATCH", "/v1/auth/user", Some(&u.access), Some(r#"{"password":"a brand new one"}"#));
    assert_eq!((missing.status, missing.code()), (400, "current_password_required"));
    let wrong = call("PATCH", "/v1/auth/user", Some(&u.access),
        Some(r#"{"password":"a brand new one","current_password":"wrong wrong"}"#));
    assert_eq!((wrong.status, wrong.code()), (401, "invalid_credentials"));
    let weak = call("PATCH", "/v1/auth/user", Some(&u.access),
        Some(&json!({"password": "short", "current_password": PASSWORD}).to_string()));
    assert_eq!((weak.status, weak.code()), (400, "weak_password"));
    // Failed attempts changed nothing.
    assert_eq!(call("GET", "/v1/auth/user", Some(&u.access), None).status, 200);

    let ok = call("PATCH", "/v1/auth/user", Some(&u.access),
        Some(&json!({"password": "a brand new one", "current_password": PASSWORD}).to_string()));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let fresh = ok.body["access_token"].as_str().expect("new tokens after a password change").to_string();
    for t in [&u.access, &second_token] {
        assert_eq!(call("GET", "/v1/auth/user", Some(t), None).status, 401);
    }
    assert_eq!(call("GET", "/v1/auth/user", Some(&fresh), None).status, 200);
    let old = post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD}));
    assert_eq!(old.status, 401);
    let new = post("/v1/auth/login", None, json!({"email": u.email, "password": "a brand new one"}));
    assert_eq!(new.status, 200);
}

#[test]
fn delete_account() {
    let u = signup("delete");
    let r = call("DELETE", "/v1/auth/user", Some(&u.access), None);
    assert_eq!(r.status, 204);
    let me = call("GET", "/v1/auth/user", Some(&u.access), None);
    assert_eq!((me.status, me.code()), (401, "invalid_token"));
    let login = post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD}));
    assert_eq!(login.status, 401);
    let n: i64 = admin()
        .query_one("select count(*) from baas.sessions where user_id = $1::text::uuid", &[&u.id])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "sessions of a deleted account are gone");
    // The address can be used again.
    let again = post("/v1/auth/signup", None, json!({"email": u.email, "password": PASSWORD}));
    assert_eq!(again.status, 201);
}

#[test]
fn callers_sharing_pooled_connections_never_see_each_other() {
    // The pool has 3 connections; 6 threads of three kinds of caller interleave on them.
    let a = signup("iso-a");
    let b = signup("iso-b");
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let (ta, tb) = (a.access.clone(), b.access.clone());
            let (ea, eb) = (a.email.clone(), b.email.clone());
            std::thread::spawn(move || {
                for _ in 0..25 {
                    match i % 3 {
                        0 => assert_eq!(call("GET", "/v1/auth/user", Some(&ta), None).body["email"], ea.as_str()),
                        1 => assert_eq!(call("GET", "/v1/auth/user", Some(&tb), None).body["email"], eb.as_str()),
                        _ => assert_eq!(call("GET", "/v1/auth/user", None, None).status, 401),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn health_and_jwks() {
    let h = call("GET", "/healthz", None, None);
    assert_eq!((h.status, h.body["status"].as_str()), (200, Some("ok")));
    let j = call("GET", "/.well-known/jwks.json", None, None);
    assert_eq!(j.status, 200);
    let keys = j.body["keys"].as_array().unwrap();
    assert!(!keys.is_empty());
    for k in keys {
        assert_eq!(k["kty"], "OKP");
        assert_eq!(k["alg"], "EdDSA");
        assert!(k.get("d").is_none(), "private key material in JWKS: {k}");
    }
}
