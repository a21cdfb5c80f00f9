//! Multi-factor sign-in (docs/mfa.md): TOTP enrolment, the two-step sign-in, recovery
//! codes, the aal2 rules, against the real proxy and cluster. Codes come from an
//! independent RFC 6238 oracle (tests/src/totp.rs), never from the extension.
mod common;

use common::*;
use pgbaas_testkit::totp;
use serde_json::{json, Value};

/// Wait out the last seconds of a 30-second step, so that the step the test computes a
/// code for is still the server's step when the request arrives.
fn settle() {
    let into = totp::now() % 30;
    if into >= 20 {
        std::thread::sleep(std::time::Duration::from_secs(31 - into));
    }
}

/// Let the factor's next code be any step of the window again (each accepted code
/// consumes its step; a test that signs in often would otherwise wait 30 s each time).
fn forget_used_steps(user_id: &str) {
    admin()
        .execute("update baas._mfa_factors set last_used_step = 0 where user_id = $1::text::uuid", &[&user_id])
        .unwrap();
}

struct Enrolled {
    user: User,
    factor: String,
    secret: Vec<u8>,
    codes: Vec<String>,
    /// The aal2 pair the confirmation returned.
    tokens: Value,
}

fn enrol(tag: &str) -> Enrolled {
    let user = signup(tag);
    let r = post("/v1/auth/mfa/totp", Some(&user.access), json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = totp::base32_decode(r.body["secret"].as_str().unwrap()).expect("base32 secret");
    let factor = r.body["id"].as_str().unwrap().to_string();
    settle();
    let r = post(&format!("/v1/auth/mfa/totp/{factor}/verify"), Some(&user.access), json!({"code": totp::code_now(&secret, 0)}));
    assert_eq!(r.status, 200, "{}", r.body);
    let codes = r.body["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    Enrolled { user, factor, secret, codes, tokens: r.body }
}

fn login(email: &str) -> Resp {
    post("/v1/auth/login", None, json!({"email": email, "password": PASSWORD}))
}

/// Sign in with the password: the answer must be a ticket, never tokens.
fn ticket(email: &str) -> String {
    let r = login(email);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mfa_required"], true, "{}", r.body);
    assert!(r.body.get("access_token").is_none() && r.body.get("refresh_token").is_none(), "{}", r.body);
    r.body["mfa_token"].as_str().unwrap().to_string()
}

fn challenge(ticket: &str, code: &str) -> Resp {
    post("/v1/auth/mfa/verify", None, json!({"mfa_token": ticket, "code": code}))
}

#[test]
fn totp_code_gives_the_rfc6238_vectors_and_the_uri_names_everything() {
    let seeds = [
        ("SHA1", "12345678901234567890"),
        ("SHA256", "12345678901234567890123456789012"),
        ("SHA512", "1234567890123456789012345678901234567890123456789012345678901234"),
    ];
    let expect: [(i64, [&str; 3]); 6] = [
        (59, ["94287082", "46119246", "90693936"]),
        (1111111109, ["07081804", "68084774", "25091201"]),
        (1111111111, ["14050471", "67062674", "99943326"]),
        (1234567890, ["89005924", "91819424", "93441116"]),
        (2000000000, ["69279037", "90698825", "38618901"]),
        (20000000000, ["65353130", "77737706", "47863826"]),
    ];
    let mut db = admin();
    for (t, codes) in expect {
        for (i, (alg, seed)) in seeds.iter().enumerate() {
            let got: String = db
                .query_one("select baas._totp_code(convert_to($1, 'UTF8'), $2, 8, $3)", &[seed, alg, &t])
                .unwrap()
                .get(0);
            assert_eq!(got, codes[i], "{alg} at {t}");
            // The oracle agrees, so it can be trusted for the rest of this file.
            assert_eq!(totp::hotp(seed.as_bytes(), alg, 8, (t / 30) as u64), codes[i]);
        }
    }
    let uri: String = db
        .query_one("select baas._totp_uri(convert_to('12345678901234567890', 'UTF8'), 'My App', 'ana@example.com')", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        uri,
        "otpauth://totp/My%20App:ana%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=My%20App&algorithm=SHA1&digits=6&period=30"
    );
    // A malformed code is no match, never an error.
    let none: Option<i64> = db
        .query_one("select baas._totp_match('\\x00'::bytea, 'abcdef', 100, 0)", &[])
        .unwrap()
        .get(0);
    assert_eq!(none, None);
    let codes: Vec<String> = db.query_one("select baas._new_recovery_codes()", &[]).unwrap().get(0);
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'), "{codes:?}");
}

#[test]
fn enrolled_sign_in_is_a_ticket_then_aal2_tokens() {
    let user = signup("mfa-flow");
    let r = post("/v1/auth/mfa/totp", Some(&user.access), json!({"friendly_name": "phone"}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["status"], "unverified");
    let secret_b32 = r.body["secret"].as_str().unwrap().to_string();
    let factor = r.body["id"].as_str().unwrap().to_string();
    let uri = r.body["uri"].as_str().unwrap();
    let account = user.email.replace('@', "%40");
    assert_eq!(
        uri,
        format!("otpauth://totp/pgbaas:{account}?secret={secret_b32}&issuer=pgbaas&algorithm=SHA1&digits=6&period=30")
    );
    let secret = totp::base32_decode(&secret_b32).unwrap();
    assert_eq!(secret.len(), 20);

    // An unverified factor does not count at sign-in.
    let r = login(&user.email);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["access_token"].is_string(), "{}", r.body);
    let st = call("GET", "/v1/auth/mfa", Some(&user.access), None);
    assert_eq!(st.status, 200, "{}", st.body);
    assert_eq!(st.body["factors"][0]["status"], "unverified");
    assert_eq!(st.body["factors"][0]["friendly_name"], "phone");
    assert_eq!(st.body["recovery_codes_left"], 0);

    // A wrong code is refused; the right one verifies and raises this session.
    let r = post(&format!("/v1/auth/mfa/totp/{factor}/verify"), Some(&user.access), json!({"code": "000000x"}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    settle();
    let r = post(&format!("/v1/auth/mfa/totp/{factor}/verify"), Some(&user.access), json!({"code": totp::code_now(&secret, 0)}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["factor"]["status"], "verified");
    assert_eq!(r.body["recovery_codes"].as_array().unwrap().len(), 10);
    let claims = payload(r.body["access_token"].as_str().unwrap());
    assert_eq!(claims["aal"], "aal2");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    // The session's refresh tokens from before (aal1) no longer work.
    let old = post("/v1/auth/refresh", None, json!({"refresh_token": user.refresh}));
    assert_eq!(old.status, 401, "{}", old.body);
    let new = post("/v1/auth/refresh", None, json!({"refresh_token": r.body["refresh_token"]}));
    assert_eq!(new.status, 200, "{}", new.body);
    assert_eq!(payload(new.body["access_token"].as_str().unwrap())["aal"], "aal2");

    // Sign out; the password alone now yields a ticket, not tokens.
    let aal2 = new.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(call("POST", "/v1/auth/logout", Some(&aal2), None).status, 204);
    let r = login(&user.email);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mfa_required"], true);
    assert_eq!(r.body["expires_in"], 300);
    assert_eq!(r.body["factors"][0]["id"], factor.as_str());
    assert!(r.body.get("access_token").is_none(), "{}", r.body);
    let t = r.body["mfa_token"].as_str().unwrap().to_string();

    // The next step's code (the one just used is spent) gives an aal2 session.
    let r = challenge(&t, &totp::code_now(&secret, 1));
    assert_eq!(r.status, 200, "{}", r.body);
    let claims = payload(r.body["access_token"].as_str().unwrap());
    assert_eq!(claims["aal"], "aal2");
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));
    let me = call("GET", "/v1/auth/user", Some(r.body["access_token"].as_str().unwrap()), None);
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["id"], user.id.as_str());

    // A ticket is single use.
    forget_used_steps(&user.id);
    let again = challenge(&t, &totp::code_now(&secret, 0));
    assert_eq!((again.status, again.code()), (401, "invalid_code"), "{}", again.body);

    let st = call("GET", "/v1/auth/mfa", Some(r.body["access_token"].as_str().unwrap()), None);
    assert_eq!(st.body["factors"][0]["status"], "verified");
    assert_eq!(st.body["recovery_codes_left"], 10);
}

#[test]
fn one_step_either_side_is_accepted_two_are_not_and_a_code_works_once() {
    let e = enrol("mfa-window");
    forget_used_steps(&e.user.id);
    settle();
    let t = ticket(&e.user.email);
    for off in [-2, 2] {
        let r = challenge(&t, &totp::code_now(&e.secret, off));
        assert_eq!((r.status, r.code()), (401, "invalid_code"), "step {off}: {}", r.body);
    }
    let earlier = totp::code_now(&e.secret, -1);
    assert_eq!(challenge(&t, &earlier).status, 200);

    // The same code again (a replay) is refused, on a new ticket too; a later step works.
    let t = ticket(&e.user.email);
    let r = challenge(&t, &earlier);
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    let now = totp::code_now(&e.secret, 0);
    assert_eq!(challenge(&t, &now).status, 200);
    let t = ticket(&e.user.email);
    assert_eq!(challenge(&t, &now).status, 401, "replayed");
    // An earlier step than the last used one is refused even inside the window.
    assert_eq!(challenge(&t, &earlier).status, 401);
    let r = challenge(&t, &totp::code_now(&e.secret, 1));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_recovery_code_signs_in_once() {
    let e = enrol("mfa-recovery");
    let code = e.codes[3].clone();
    let t = ticket(&e.user.email);
    // Typed in upper case, as a person might copy it.
    let r = challenge(&t, &code.to_uppercase());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(payload(r.body["access_token"].as_str().unwrap())["aal"], "aal2");
    let access = r.body["access_token"].as_str().unwrap().to_string();
    let t = ticket(&e.user.email);
    let r = challenge(&t, &code);
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    let st = call("GET", "/v1/auth/mfa", Some(&access), None);
    assert_eq!(st.body["recovery_codes_left"], 9);
    // Stored hashed: no code appears in the table.
    let stored: i64 = admin()
        .query_one(
            "select count(*) from baas._mfa_recovery_codes r where r.user_id = $1::text::uuid
                and (encode(r.code_hash, 'escape') like '%' || $2::text || '%')",
            &[&e.user.id, &code.replace('-', "")],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
}

#[test]
fn tickets_expire_and_allow_five_wrong_codes() {
    let e = enrol("mfa-ticket");
    forget_used_steps(&e.user.id);
    let t = ticket(&e.user.email);
    admin()
        .execute(
            "update baas._auth_tokens set expires_at = now() - interval '1 second'
              where user_id = $1::text::uuid and kind = 'mfa'",
            &[&e.user.id],
        )
        .unwrap();
    settle();
    let r = challenge(&t, &totp::code_now(&e.secret, 0));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "expired: {}", r.body);

    let t = ticket(&e.user.email);
    for i in 0..5 {
        let r = challenge(&t, &format!("{:06}", i));
        // (A wrong code that happens to be right is one in a million; then this fails.)
        assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    }
    let r = challenge(&t, &totp::code_now(&e.secret, 0));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "a sixth try on a spent ticket: {}", r.body);
    // The five failures also count for this client against the account's second
    // factor, as password failures do: it must now wait before the next try.
    let waiting: i64 = admin()
        .query_one(
            "select count(*) from baas._login_throttles where email = 'mfa:' || $1::text and wait_until > clock_timestamp() - interval '1 minute'",
            &[&e.user.id],
        )
        .unwrap()
        .get(0);
    assert!(waiting >= 1, "no throttle recorded");
    // Make the wait long enough to observe over HTTP.
    admin()
        .execute(
            "update baas._login_throttles set wait_until = clock_timestamp() + interval '1 minute' where email = 'mfa:' || $1::text",
            &[&e.user.id],
        )
        .unwrap();
    let t = ticket(&e.user.email);
    let r = challenge(&t, &totp::code_now(&e.secret, 0));
    assert_eq!((r.status, r.code()), (429, "too_many_attempts"), "{}", r.body);
    assert!(r.header("retry-after").is_some());
}

#[test]
fn removing_a_factor_and_new_codes_need_an_aal2_session() {
    let user = signup("mfa-aal");
    // A second session from before the factor existed stays aal1.
    let other = login(&user.email);
    let aal1 = other.body["access_token"].as_str().unwrap().to_string();
    let r = post("/v1/auth/mfa/totp", Some(&user.access), json!({}));
    let factor = r.body["id"].as_str().unwrap().to_string();
    let secret = totp::base32_decode(r.body["secret"].as_str().unwrap()).unwrap();
    settle();
    let r = post(&format!("/v1/auth/mfa/totp/{factor}/verify"), Some(&user.access), json!({"code": totp::code_now(&secret, 0)}));
    assert_eq!(r.status, 200, "{}", r.body);
    let old_code = r.body["recovery_codes"][0].as_str().unwrap().to_string();
    assert_eq!(payload(&aal1)["aal"], "aal1");

    let r = call("DELETE", &format!("/v1/auth/mfa/totp/{factor}"), Some(&aal1), None);
    assert_eq!((r.status, r.code()), (403, "aal2_required"), "{}", r.body);
    let r = post("/v1/auth/mfa/recovery-codes", Some(&aal1), json!({}));
    assert_eq!((r.status, r.code()), (403, "aal2_required"), "{}", r.body);
    let r = post("/v1/auth/mfa/totp", Some(&aal1), json!({}));
    assert_eq!((r.status, r.code()), (409, "factor_exists"), "{}", r.body);

    // The aal1 session steps up with a code of the verified factor (no new codes).
    forget_used_steps(&user.id);
    settle();
    let r = post(&format!("/v1/auth/mfa/totp/{factor}/verify"), Some(&aal1), json!({"code": totp::code_now(&secret, 0)}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.get("recovery_codes").is_none());
    let aal2 = r.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(payload(&aal2)["aal"], "aal2");

    let r = post("/v1/auth/mfa/recovery-codes", Some(&aal2), json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["recovery_codes"].as_array().unwrap().len(), 10);
    // The old codes are gone.
    let t = ticket(&user.email);
    assert_eq!(challenge(&t, &old_code).status, 401);

    let r = call("DELETE", &format!("/v1/auth/mfa/totp/{factor}"), Some(&aal2), None);
    assert_eq!(r.status, 204, "{}", r.body);
    // The pending ticket died with the factor; the password alone signs in again.
    assert_eq!(challenge(&t, &totp::code_now(&secret, 1)).status, 401);
    let r = login(&user.email);
    assert!(r.body["access_token"].is_string(), "{}", r.body);
    let r = call("DELETE", &format!("/v1/auth/mfa/totp/{factor}"), Some(&aal2), None);
    assert_eq!((r.status, r.code()), (404, "factor_not_found"), "{}", r.body);
}

#[test]
fn a_service_token_resets_a_users_factors() {
    let e = enrol("mfa-reset");
    let path = format!("/v1/admin/users/{}/mfa", e.user.id);
    let r = call("DELETE", &path, Some(e.tokens["access_token"].as_str().unwrap()), None);
    assert!(r.status == 403 || r.status == 401, "a user may not: {} {}", r.status, r.body);
    let r = call("DELETE", &path, Some(&service_token()), None);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = login(&e.user.email);
    assert!(r.body["access_token"].is_string(), "{}", r.body);
    let r = call("DELETE", "/v1/admin/users/00000000-0000-0000-0000-000000000001/mfa", Some(&service_token()), None);
    assert_eq!((r.status, r.code()), (404, "user_not_found"), "{}", r.body);
    let n: i64 = admin()
        .query_one("select count(*) from baas._mfa_recovery_codes where user_id = $1::text::uuid", &[&e.user.id])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn bad_input_is_a_clean_4xx() {
    let user = signup("mfa-bad");
    let r = challenge("not-a-ticket", "123456");
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    let r = post("/v1/auth/mfa/verify", None, json!({"mfa_token": "x"}));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post("/v1/auth/mfa/verify", None, json!({"mfa_token": "x".repeat(5000), "code": "y".repeat(5000)}));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post("/v1/auth/mfa/totp", None, json!({}));
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post("/v1/auth/mfa/totp", Some(&user.access), json!({"friendly_name": "x".repeat(101)}));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(
        "/v1/auth/mfa/totp/00000000-0000-0000-0000-000000000001/verify",
        Some(&user.access),
        json!({"code": "123456"}),
    );
    assert_eq!((r.status, r.code()), (404, "factor_not_found"), "{}", r.body);
    let r = post("/v1/auth/mfa/totp/not-a-uuid/verify", Some(&user.access), json!({"code": "123456"}));
    assert!(r.status == 404 || r.status == 400, "{} {}", r.status, r.body);
    for code in ["", "１２３４５６", "12345\u{7f}6", "-1", "999999999999"] {
        let r = challenge("x", code);
        assert_eq!(r.status, 401, "{code:?}: {}", r.body);
    }
    // Someone else's factor is not found.
    let e = enrol("mfa-bad-other");
    let r = post(&format!("/v1/auth/mfa/totp/{}/verify", e.factor), Some(&user.access), json!({"code": "123456"}));
    assert_eq!((r.status, r.code()), (404, "factor_not_found"), "{}", r.body);
}

#[test]
fn require_aal2_in_a_sql_function_follows_the_token() {
    let e = enrol("mfa-fn");
    let mut db = admin();
    db.batch_execute(
        "create or replace function public.mfa_guarded() returns text language plpgsql as $$
         begin perform baas.require_aal2(); return 'ok'; end $$;
         grant execute on function public.mfa_guarded() to baas_user;",
    )
    .unwrap();
    let run = |db: &mut postgres::Client, claims: Value| -> Result<String, String> {
        let mut tx = db.transaction().unwrap();
        tx.execute("select set_config('baas.claims', $1, true)", &[&claims.to_string()]).unwrap();
        tx.batch_execute("set local role baas_user").unwrap();
        let out = tx.query_one("select public.mfa_guarded()", &[]);
        let _ = tx.rollback();
        out.map(|r| r.get::<_, String>(0)).map_err(|e| {
            let db = e.as_db_error().expect("a database error");
            format!("{} {}", db.code().code(), db.detail().unwrap_or(""))
        })
    };
    let aal2 = payload(e.tokens["access_token"].as_str().unwrap());
    let mut aal1 = aal2.clone();
    aal1["aal"] = json!("aal1");
    let mut old = aal2.clone();
    old.as_object_mut().unwrap().remove("aal");
    assert_eq!(run(&mut db, aal2), Ok("ok".into()));
    assert_eq!(run(&mut db, aal1), Err("42501 aal2_required".into()));
    assert_eq!(run(&mut db, old), Err("42501 aal2_required".into()), "a token without aal is aal1");
    // baas.aal() as policies see it.
    let aal: Option<String> = db.query_one("select baas.aal()", &[]).unwrap().get(0);
    assert_eq!(aal, None);
}

#[test]
fn a_require_aal2_collection_is_for_aal2_sessions_only() {
    use pgbaas_testkit::realtime::{Sse, Ws};
    let e = enrol("mfa-coll");
    let aal2 = e.tokens["access_token"].as_str().unwrap().to_string();
    // A session from a sign-in before the factor existed is not possible now; an aal1
    // token of this account is one signed for its session with aal1 (as before 0.7.0).
    let mut claims = payload(&aal2);
    claims["aal"] = json!("aal1");
    let aal1 = sign_with_db_key(&claims);
    let svc = service_token();
    let c = collection("mfa_vault", json!({"create": ["authenticated"], "require_aal2": true}));
    let got = call("GET", &format!("/v1/collections/{c}"), Some(&svc), None);
    assert_eq!(got.body["options"]["require_aal2"], true, "{}", got.body);
    let id = create_doc(&c, Some(&svc), json!({"pin": 1234}), Some(json!({"read": ["public"]})));

    // aal1 and anonymous callers: the document is not there, as any unreadable one.
    for token in [Some(aal1.as_str()), None] {
        let r = call("GET", &doc_path(&c, &id), token, None);
        assert_eq!(r.status, 404, "{}", r.body);
        assert!(listed_ids(&c, token).is_empty());
    }
    let r = post(&docs_path(&c), Some(&aal1), json!({"data": {"x": 1}}));
    assert!(r.status == 403 || r.status == 404, "an aal1 write: {} {}", r.status, r.body);
    // aal2: readable and writable.
    let r = call("GET", &doc_path(&c, &id), Some(&aal2), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(listed_ids(&c, Some(&aal2)), vec![id.clone()]);
    create_doc(&c, Some(&aal2), json!({"x": 2}), None);
    // baas.as_user answers as an aal1 session does.
    let n: i64 = admin()
        .query_one(
            "select count(*) from baas.as_user($1::text::uuid, format('select d.id from baas.documents d join baas.collections c on c.id = d.collection_id where c.name = %L', $2::text))",
            &[&e.user.id, &c],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // Live feeds: refused for aal1 (SSE 403, WebSocket an error), open for aal2.
    let port = env().proxy.port;
    match Sse::open(port, &c, "", Some(&aal1), None) {
        Err((status, body)) => {
            assert_eq!(status, 403, "{body}");
            assert!(body.contains("aal2_required"), "{body}");
        }
        Ok(_) => panic!("an aal1 SSE subscription to a require_aal2 collection was accepted"),
    }
    let mut ws = Ws::connect(port, Some(&aal1)).unwrap();
    let err = ws.subscribe("s1", &c, json!({})).expect_err("aal1 WebSocket subscription refused");
    assert!(err.to_string().contains("aal2_required"), "{err}");
    assert!(Sse::open(port, &c, "", Some(&aal2), None).is_ok());

    // Switched off, the collection is everyone's again (per its ACLs).
    let r = call("PATCH", &format!("/v1/collections/{c}"), Some(&svc), Some(&json!({"options": {"require_aal2": false}}).to_string()));
    if r.status == 404 || r.status == 405 {
        // No HTTP route for set_collection_options in this build: SQL.
        admin().query_one("select baas.set_collection_options($1, '{\"require_aal2\": false}')", &[&c]).unwrap();
    }
    assert_eq!(call("GET", &doc_path(&c, &id), Some(&aal1), None).status, 200);
}

#[test]
fn switching_require_aal2_on_ends_open_live_feeds() {
    use pgbaas_testkit::realtime::Ws;
    use std::time::Duration;
    let e = enrol("mfa-live");
    let aal2 = e.tokens["access_token"].as_str().unwrap().to_string();
    let mut claims = payload(&aal2);
    claims["aal"] = json!("aal1");
    let aal1 = sign_with_db_key(&claims);
    let c = collection("mfa_live", json!({"create": ["authenticated"]}));
    let port = env().proxy.port;
    let mut w1 = Ws::connect(port, Some(&aal1)).unwrap();
    w1.subscribe("s", &c, json!({})).expect("an aal1 subscriber before the switch");
    admin().query_one("select baas.set_collection_options($1, '{\"require_aal2\": true}')", &[&c]).unwrap();
    // The open subscription ends; the aal1 client cannot subscribe again.
    let (err, _) = w1.until("error", Duration::from_secs(20));
    let err = err.expect("the subscription ended");
    assert_eq!(err["error"]["code"], "feed_disabled", "{err}");
    let again = w1.subscribe("s2", &c, json!({})).expect_err("refused now");
    assert_eq!(again["error"]["code"], "aal2_required", "{again}");
    let mut w2 = Ws::connect(port, Some(&aal2)).unwrap();
    w2.subscribe("s", &c, json!({})).expect("aal2 subscribes");
}

/// Files of a require_aal2 bucket follow their documents: an aal1 session neither
/// downloads, uploads nor links them; an aal2 session does all three, and its signed
/// link (which runs as the link's session) works for the download it was made for.
#[test]
fn a_require_aal2_bucket_serves_files_and_links_to_aal2_only() {
    use common::files::{bucket, download, file_path, upload, upload_ok};
    let e = enrol("mfa-files");
    let aal2 = e.tokens["access_token"].as_str().unwrap().to_string();
    let mut claims = payload(&aal2);
    claims["aal"] = json!("aal1");
    let aal1 = sign_with_db_key(&claims);
    let c = bucket("mfa_files", json!({"create": ["authenticated"], "require_aal2": true}));
    let f = upload_ok(Some(&aal2), &c, "secret.txt", b"top secret", "text/plain");
    let id = f["id"].as_str().unwrap().to_string();
    let d = download(Some(&aal2), &file_path(&id), &[]);
    assert_eq!(d.status, 200);
    assert_eq!(download(Some(&aal1), &file_path(&id), &[]).status, 404);
    let up = upload(Some(&aal1), &c, "other.txt", b"x", "text/plain");
    assert!(up.status == 403 || up.status == 404, "an aal1 upload: {} {}", up.status, up.body);
    let r = call("POST", &format!("{}/link", file_path(&id)), Some(&aal1), Some("{}"));
    assert_eq!(r.status, 404, "an aal1 link: {}", r.body);
    let r = call("POST", &format!("{}/link", file_path(&id)), Some(&aal2), Some("{}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let url = r.body["url"].as_str().unwrap();
    let path = &url[url.find("/v1/").unwrap()..];
    let d = download(None, path, &[]);
    assert_eq!(d.status, 200, "the aal2 session's link downloads its file");
    assert!(d.body == b"top secret");
}
