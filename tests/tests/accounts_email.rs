//! The account email flows end to end (issue 16, docs/accounts.md): password reset,
//! verification, magic links and codes, email change — through the real proxy, its
//! mail worker and a real SMTP server, reading links and codes from the mails as a
//! user would.

mod common;

use common::accounts_email::{code, db, exclusive, http, login, mail, nth_mail, post, queued, shared, signup};
use common::PASSWORD;
use serde_json::{json, Value};
use std::time::Duration;

const NEW_PASSWORD: &str = "a brand new passphrase";
const RESET: &str = "Reset your";
const CHANGED: &str = "password was changed";
const VERIFY: &str = "Confirm your email address";
const MAGIC: &str = "sign-in link";

fn token(m: &pgbaas_testkit::smtp::Mail) -> String {
    m.token().expect("a link with a token")
}

fn get_user(access: &str) -> common::Resp {
    http("GET", "/v1/auth/user", Some(access), None)
}

// ---------------------------------------------------------------- password reset

#[test]
fn reset_by_link_ends_every_session_and_signs_nobody_in() {
    let _g = shared();
    let u = signup("reset-link");
    let r = post("/v1/auth/recover", None, json!({"email": u.email}));
    assert_eq!((r.status, &r.body), (202, &json!({})));
    let m = mail(&u.email, RESET);
    let link = m.link().unwrap();
    assert!(link.starts_with("testapp://auth?type=recovery&token="), "{link}");
    assert!(m.html.as_deref().unwrap_or("").contains(&code(&m)), "the HTML part carries the code too");

    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "token": token(&m)}));
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.body, Value::Null, "a reset answers no tokens");

    assert_eq!(get_user(&u.access).status, 401, "the old access token is dead");
    let r = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
    assert_eq!(r.status, 401, "the old refresh token is dead: {}", r.body);
    assert_eq!(login(&u.email, PASSWORD).status, 401);
    assert_eq!(login(&u.email, NEW_PASSWORD).status, 200);
    let notice = mail(&u.email, CHANGED);
    assert!(notice.text.contains(&u.email), "{}", notice.text);

    // Single use.
    let r = post("/v1/auth/recover/confirm", None, json!({"password": "yet another passphrase", "token": token(&m)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    assert_eq!(login(&u.email, NEW_PASSWORD).status, 200);
}

#[test]
fn reset_by_code_and_another_users_code_is_refused() {
    let _g = shared();
    let a = signup("reset-code-a");
    let b = signup("reset-code-b");
    for u in [&a, &b] {
        assert_eq!(post("/v1/auth/recover", None, json!({"email": u.email})).status, 202);
    }
    let code_a = code(&mail(&a.email, RESET));
    let code_b = code(&mail(&b.email, RESET));
    // B's code does not open A's account (unless both drew the same six digits).
    if code_a != code_b {
        let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "email": a.email, "code": code_b}));
        assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    }
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "email": a.email, "code": code_a}));
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(get_user(&a.access).status, 401);
    assert_eq!(login(&a.email, NEW_PASSWORD).status, 200);
    // B untouched.
    assert_eq!(get_user(&b.access).status, 200);
    assert_eq!(login(&b.email, PASSWORD).status, 200);
}

#[test]
fn a_weak_password_is_refused_without_spending_the_token() {
    let _g = shared();
    let u = signup("reset-weak");
    post("/v1/auth/recover", None, json!({"email": u.email}));
    let m = mail(&u.email, RESET);
    let r = post("/v1/auth/recover/confirm", None, json!({"password": "short", "token": token(&m)}));
    assert_eq!((r.status, r.code()), (400, "weak_password"), "{}", r.body);
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "token": token(&m)}));
    assert_eq!(r.status, 204, "{}", r.body);
}

#[test]
fn a_password_change_kills_the_reset_link() {
    let _g = shared();
    let u = signup("reset-then-change");
    post("/v1/auth/recover", None, json!({"email": u.email}));
    let m = mail(&u.email, RESET);
    let r = http("PATCH", "/v1/auth/user", Some(&u.access), Some(json!({"password": NEW_PASSWORD, "current_password": PASSWORD})));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post("/v1/auth/recover/confirm", None, json!({"password": "attacker's passphrase", "token": token(&m)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    assert_eq!(login(&u.email, NEW_PASSWORD).status, 200);
}

#[test]
fn a_newer_reset_supersedes_the_older() {
    let _g = shared();
    let u = signup("reset-twice");
    post("/v1/auth/recover", None, json!({"email": u.email}));
    let first = mail(&u.email, RESET);
    post("/v1/auth/recover", None, json!({"email": u.email}));
    let second = nth_mail(&u.email, RESET, 2);
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "token": token(&first)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "email": u.email, "code": code(&first)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "the older code is dead too: {}", r.body);
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "token": token(&second)}));
    assert_eq!(r.status, 204, "{}", r.body);
}

#[test]
fn five_wrong_codes_kill_the_token() {
    let _g = shared();
    let u = signup("reset-guess");
    post("/v1/auth/recover", None, json!({"email": u.email}));
    let m = mail(&u.email, RESET);
    let right = code(&m);
    let wrong = if right == "000000" { "000001" } else { "000000" };
    for i in 1..=5 {
        let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "email": u.email, "code": wrong}));
        assert_eq!((r.status, r.code()), (401, "invalid_code"), "wrong code {i}: {}", r.body);
    }
    // Even the mailed link no longer works.
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "token": token(&m)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    // The wrong codes counted as failed sign-ins of the address from this client.
    let r = login(&u.email, PASSWORD);
    assert_eq!((r.status, r.code()), (429, "too_many_attempts"), "{}", r.body);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(login(&u.email, PASSWORD).status, 200, "the password is unchanged");
}

#[test]
fn an_expired_link_says_so() {
    let _g = shared();
    let u = signup("reset-expired");
    post("/v1/auth/recover", None, json!({"email": u.email}));
    let m = mail(&u.email, RESET);
    db().execute(
        "update baas._auth_tokens set expires_at = now() - interval '1 second', created_at = now() - interval '2 hours'
          where user_id = $1::text::uuid",
        &[&u.id],
    )
    .unwrap();
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "token": token(&m)}));
    assert_eq!((r.status, r.code()), (401, "code_expired"), "{}", r.body);
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "email": u.email, "code": code(&m)}));
    assert_eq!((r.status, r.code()), (401, "code_expired"), "{}", r.body);
}

#[test]
fn bad_requests_are_named() {
    let _g = shared();
    let r = post("/v1/auth/recover", None, json!({"email": "not an address"}));
    assert_eq!((r.status, r.code()), (400, "invalid_email"), "{}", r.body);
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
    let r = post("/v1/auth/verify", None, json!({"type": "recovery", "token": "x"}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
    let r = post("/v1/auth/verify", None, json!({"type": "magic_link"}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
    let r = post("/v1/auth/verify", None, json!({"type": "magic_link", "token": "A".repeat(43)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "token": "x".repeat(5000)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
}

// ---------------------------------------------------------------- verification

#[test]
fn verification_flag_signs_up_at_once_and_the_mailed_link_verifies() {
    let (_g, _restore) = exclusive("email_verification = 'flag'");
    let email = common::email("verify-flag");
    let r = post("/v1/auth/signup", None, json!({"email": email, "password": PASSWORD}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body["access_token"].is_string(), "flag still signs in: {}", r.body);
    assert_eq!(r.body["user"]["email_verified"], json!(false));
    let m = mail(&email, VERIFY);
    assert!(m.link().unwrap().starts_with("testapp://auth?type=signup&token="));
    let r = post("/v1/auth/verify", None, json!({"type": "signup", "token": token(&m)}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["email_verified"], json!(true));
    assert_eq!(common::payload(r.body["access_token"].as_str().unwrap())["amr"], json!(["email"]));
    // Single use.
    let r = post("/v1/auth/verify", None, json!({"type": "signup", "token": token(&m)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
}

#[test]
fn verification_required_withholds_tokens_until_the_code_is_entered() {
    let (_g, _restore) = exclusive("email_verification = 'required'");
    let email = common::email("verify-required");
    let r = post("/v1/auth/signup", None, json!({"email": email, "password": PASSWORD}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["verification_required"], json!(true));
    assert!(r.body.get("access_token").is_none() && r.body.get("refresh_token").is_none(), "{}", r.body);
    let r = login(&email, PASSWORD);
    assert_eq!((r.status, r.code()), (403, "email_not_verified"), "{}", r.body);
    // A second mail on request; the newer code works, the older does not.
    let first = mail(&email, VERIFY);
    assert_eq!(post("/v1/auth/verify/resend", None, json!({"email": email})).status, 202);
    let second = nth_mail(&email, VERIFY, 2);
    let r = post("/v1/auth/verify", None, json!({"type": "signup", "token": token(&first)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    let r = post("/v1/auth/verify", None, json!({"type": "signup", "email": email, "code": code(&second)}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["access_token"].is_string());
    assert_eq!(login(&email, PASSWORD).status, 200);
    // Verified: a resend sends nothing more (and still answers 202 {}).
    let r = post("/v1/auth/verify/resend", None, json!({"email": email}));
    assert_eq!((r.status, &r.body), (202, &json!({})));
    assert_eq!(queued(&email), 2);
}

// ---------------------------------------------------------------- magic links

#[test]
fn magic_link_and_magic_code_sign_in_once_each() {
    let _g = shared();
    let u = signup("magic");
    assert_eq!(post("/v1/auth/magic-link", None, json!({"email": u.email})).status, 202);
    let m = mail(&u.email, MAGIC);
    assert!(m.link().unwrap().starts_with("testapp://auth?type=magic_link&token="));
    let r = post("/v1/auth/verify", None, json!({"type": "magic_link", "token": token(&m), "device_id": "phone-1"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], json!(u.id));
    assert_eq!(get_user(r.body["access_token"].as_str().unwrap()).status, 200);
    let r = post("/v1/auth/verify", None, json!({"type": "magic_link", "token": token(&m)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "single use: {}", r.body);

    assert_eq!(post("/v1/auth/magic-link", None, json!({"email": u.email})).status, 202);
    let m = nth_mail(&u.email, MAGIC, 2);
    // A magic link is not a verification or a reset token.
    let r = post("/v1/auth/verify", None, json!({"type": "signup", "token": token(&m)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    let r = post("/v1/auth/verify", None, json!({"type": "magic_link", "email": u.email.to_uppercase(), "code": code(&m)}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], json!(u.id));
}

#[test]
fn magic_link_signup_makes_a_verified_account() {
    let (_g, _restore) = exclusive("magic_link_signup = true");
    let email = common::email("magic-signup");
    assert_eq!(post("/v1/auth/magic-link", None, json!({"email": email})).status, 202);
    let m = mail(&email, MAGIC);
    let n: i64 = db().query_one("select count(*) from baas.users where email = $1", &[&email]).unwrap().get(0);
    assert_eq!(n, 0, "no account before the link is followed");
    let r = post("/v1/auth/verify", None, json!({"type": "magic_link", "token": token(&m)}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["email"], json!(email));
    assert_eq!(r.body["user"]["email_verified"], json!(true));
    assert_eq!(get_user(r.body["access_token"].as_str().unwrap()).status, 200);
}

// ---------------------------------------------------------------- email change

#[test]
fn email_change_moves_the_account_and_tells_the_old_address() {
    let _g = shared();
    let u = signup("change-old");
    let new = common::email("change-new");
    let r = post("/v1/auth/email-change", Some(&u.access), json!({"email": new}));
    assert_eq!((r.status, &r.body), (202, &json!({})));
    let r = post("/v1/auth/email-change", None, json!({"email": new}));
    assert_eq!(r.status, 401, "needs a signed-in user: {}", r.body);
    let other = signup("change-taken");
    let r = post("/v1/auth/email-change", Some(&u.access), json!({"email": other.email}));
    assert_eq!((r.status, r.code()), (409, "email_taken"), "{}", r.body);

    let m = mail(&new, "Confirm your new email address");
    assert!(m.text.contains(&new));
    let r = post("/v1/auth/verify", None, json!({"type": "email_change", "token": token(&m)}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["email"], json!(new));
    assert_eq!(r.body["user"]["email_verified"], json!(true));
    assert!(r.body.get("access_token").is_none(), "an email change signs nobody in");
    let notice = mail(&u.email, "email address of your");
    assert!(notice.text.contains(&new) && notice.text.contains(&u.email), "{}", notice.text);
    assert_eq!(login(&new, PASSWORD).status, 200);
    assert_eq!(login(&u.email, PASSWORD).status, 401);
    let r = post("/v1/auth/verify", None, json!({"type": "email_change", "token": token(&m)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
}

// ---------------------------------------------------------------- enumeration, limits

#[test]
fn known_unknown_and_suspended_addresses_get_the_same_answer() {
    let _g = shared();
    let known = signup("enum-known");
    let suspended = signup("enum-suspended");
    db().execute("update baas.users set suspended_at = now() where id = $1::text::uuid", &[&suspended.id]).unwrap();
    let unknown = common::email("enum-unknown");
    for path in ["/v1/auth/recover", "/v1/auth/magic-link", "/v1/auth/verify/resend"] {
        let answers: Vec<(u16, Value, Vec<(String, String)>)> = [&known.email, &suspended.email, &unknown]
            .iter()
            .map(|e| {
                let r = post(path, None, json!({"email": e}));
                // Every header but the date and the request's own id (issue 19: a fresh
                // one per request, whatever the address), by name and value.
                assert!(r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("x-request-id")), "{path}: no X-Request-Id");
                let mut h: Vec<(String, String)> = r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_lowercase(), v))
                    .filter(|(k, _)| k != "date" && k != "x-request-id")
                    .collect();
                h.sort();
                (r.status, r.body, h)
            })
            .collect();
        assert!(answers.iter().all(|a| (a.0, &a.1) == (202, &json!({}))), "{path}: {answers:?}");
        assert!(answers.iter().all(|a| a.2 == answers[0].2), "{path}: headers differ: {answers:?}");
    }
    mail(&known.email, RESET);
    mail(&known.email, MAGIC);
    assert_eq!(queued(&unknown), 0, "nothing is queued for an unknown address");
    assert_eq!(queued(&suspended.email), 0, "nor for a suspended account");
    let n: i64 = db()
        .query_one("select count(*) from baas._auth_tokens where email = $1 or user_id = $2::text::uuid", &[&unknown, &suspended.id])
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nor any token");
}

#[test]
fn the_hourly_cap_is_silent() {
    let _g = shared();
    let u = signup("cap");
    for _ in 0..7 {
        let r = post("/v1/auth/recover", None, json!({"email": u.email}));
        assert_eq!((r.status, &r.body), (202, &json!({})));
    }
    nth_mail(&u.email, RESET, 5);
    assert_eq!(queued(&u.email), 5, "email_max_per_hour = 5");
    let n: i64 = db()
        .query_one("select count(*) from baas.audit_log where action = 'email.suppressed' and user_id = $1::text::uuid", &[&u.id])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[test]
fn the_cooldown_is_silent() {
    let (_g, _restore) = exclusive("email_min_interval = '1 hour'");
    let u = signup("cooldown");
    for _ in 0..2 {
        assert_eq!(post("/v1/auth/magic-link", None, json!({"email": u.email})).status, 202);
    }
    let m = mail(&u.email, MAGIC);
    // A reset is another kind of mail: not held back by the magic link's cooldown.
    assert_eq!(post("/v1/auth/recover", None, json!({"email": u.email})).status, 202);
    mail(&u.email, RESET);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(queued(&u.email), 2, "one magic link, one reset");
    let r = post("/v1/auth/verify", None, json!({"type": "magic_link", "token": token(&m)}));
    assert_eq!(r.status, 200, "the first link still works: {}", r.body);
}

#[test]
fn unconfigured_email_is_503_for_every_address() {
    let (_g, _restore) = exclusive("email_from = null");
    let u = signup("unconfigured");
    for e in [u.email.clone(), common::email("unconfigured-unknown")] {
        for path in ["/v1/auth/recover", "/v1/auth/magic-link", "/v1/auth/verify/resend"] {
            let r = post(path, None, json!({"email": e}));
            assert_eq!((r.status, r.code()), (503, "email_not_configured"), "{path}: {}", r.body);
        }
    }
}

#[test]
fn a_password_reset_kills_a_pending_email_change() {
    // Someone holding a stolen session asks to move the account to their own address;
    // the owner notices and resets the password. The reset ends every session, and the
    // email change mailed to the other address must die with them: followed later, it
    // would hand the account (and its future resets) to that address.
    let _g = shared();
    let u = signup("change-then-reset");
    let theirs = common::email("change-then-reset-other");
    let r = post("/v1/auth/email-change", Some(&u.access), json!({"email": theirs}));
    assert_eq!(r.status, 202, "{}", r.body);
    let change = mail(&theirs, "Confirm your new email address");
    post("/v1/auth/recover", None, json!({"email": u.email}));
    let m = mail(&u.email, RESET);
    let r = post("/v1/auth/recover/confirm", None, json!({"password": NEW_PASSWORD, "token": token(&m)}));
    assert_eq!(r.status, 204, "{}", r.body);
    let r = post("/v1/auth/verify", None, json!({"type": "email_change", "token": token(&change)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "the email change outlived the reset: {}", r.body);
    let r = post("/v1/auth/verify", None, json!({"type": "email_change", "email": theirs, "code": code(&change)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "its code too: {}", r.body);
    assert_eq!(login(&u.email, NEW_PASSWORD).status, 200, "the account keeps its address");
}

#[test]
fn one_link_followed_at_once_from_many_places_works_once() {
    let _g = shared();
    let u = signup("race");
    post("/v1/auth/magic-link", None, json!({"email": u.email}));
    let magic = token(&mail(&u.email, MAGIC));
    post("/v1/auth/recover", None, json!({"email": u.email}));
    let reset = token(&mail(&u.email, RESET));
    for (path, body, ok) in [
        ("/v1/auth/verify", json!({"type": "magic_link", "token": magic}), 200),
        ("/v1/auth/recover/confirm", json!({"password": NEW_PASSWORD, "token": reset}), 204),
    ] {
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..6).map(|_| s.spawn(|| post(path, None, body.clone()).status)).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(statuses.iter().filter(|&&s| s == ok).count(), 1, "{path}: {statuses:?}");
        assert!(statuses.iter().all(|&s| s == ok || s == 401), "{path}: {statuses:?}");
    }
}

#[test]
fn a_suspended_account_cannot_complete_an_email_change() {
    // errors.md: invalid_code when the account is suspended. A suspended account signs
    // nothing in; its pending email change must not move it to another address either.
    let _g = shared();
    let u = signup("change-suspended");
    let new = common::email("change-suspended-new");
    assert_eq!(post("/v1/auth/email-change", Some(&u.access), json!({"email": new})).status, 202);
    let m = mail(&new, "Confirm your new email address");
    db().execute("update baas.users set suspended_at = now() where id = $1::text::uuid", &[&u.id]).unwrap();
    let r = post("/v1/auth/verify", None, json!({"type": "email_change", "token": token(&m)}));
    assert_eq!((r.status, r.code()), (401, "invalid_code"), "{}", r.body);
    let email: String = db().query_one("select email from baas.users where id = $1::text::uuid", &[&u.id]).unwrap().get(0);
    assert_eq!(email, u.email, "the address is unchanged");
}

#[test]
fn an_address_taken_while_the_change_is_confirmed_is_email_taken() {
    // Another account takes the address in a transaction still open when the link is
    // followed: the change waits on it, then must answer 409 email_taken like the
    // check before it, not a bare unique violation.
    let _g = shared();
    let u = signup("change-race");
    let new = common::email("change-race-new");
    assert_eq!(post("/v1/auth/email-change", Some(&u.access), json!({"email": new})).status, 202);
    let m = mail(&new, "Confirm your new email address");
    let mut c = db();
    let mut tx = c.transaction().unwrap();
    tx.execute("select baas.create_user($1, $2)", &[&new, &PASSWORD]).unwrap();
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| post("/v1/auth/verify", None, json!({"type": "email_change", "token": token(&m)})));
        std::thread::sleep(Duration::from_millis(1500));
        tx.commit().unwrap();
        h.join().unwrap()
    });
    assert_eq!((r.status, r.code()), (409, "email_taken"), "{}", r.body);
    let email: String = db().query_one("select email from baas.users where id = $1::text::uuid", &[&u.id]).unwrap().get(0);
    assert_eq!(email, u.email);
}

#[test]
fn a_magic_link_signup_racing_a_signup_is_email_taken() {
    // magic_link_signup: the account is made when the link is followed. If a sign-up of
    // the same address is still in flight then, the link answers 409 email_taken, not a
    // bare unique violation.
    let (_g, _restore) = exclusive("magic_link_signup = true");
    let email = common::email("magic-signup-race");
    assert_eq!(post("/v1/auth/magic-link", None, json!({"email": email})).status, 202);
    let m = mail(&email, MAGIC);
    let mut c = db();
    let mut tx = c.transaction().unwrap();
    tx.execute("select baas.create_user($1, $2)", &[&email, &PASSWORD]).unwrap();
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| post("/v1/auth/verify", None, json!({"type": "magic_link", "token": token(&m)})));
        std::thread::sleep(Duration::from_millis(1500));
        tx.commit().unwrap();
        h.join().unwrap()
    });
    assert_eq!((r.status, r.code()), (409, "email_taken"), "{}", r.body);
}
