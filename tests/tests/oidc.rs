//! Sign in with Apple, Google or any OpenID Connect provider (issue 16, package C), end
//! to end: a real key endpoint and signer (pgbaas_testkit::oidc), the real proxy
//! fetching the keys, Postgres verifying the ID tokens. Each test has a provider of its
//! own (keys are fetched per provider).

mod common;
use common::*;
use pgbaas_testkit::oidc::{Alg, OidcServer};
use pgbaas_testkit::{Cluster, Proxy};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The floor between two fetches of one provider's keys for unknown key ids.
const FLOOR_SECS: u64 = 4;

struct OidcEnv {
    cluster: Cluster,
    proxy: Proxy,
}

/// A cluster and a proxy of this binary's own, with a short refetch floor and no poll
/// after the first (a day): the tests count fetches, and a poll could fetch too.
fn oidc_env() -> &'static OidcEnv {
    static ENV: OnceLock<OidcEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::temporary().expect("start a Postgres cluster");
        let url = cluster.authenticator_url().expect("authenticator password");
        let floor = FLOOR_SECS.to_string();
        let proxy = Proxy::start(&url, &["--pool-size", "3", "--oidc-refetch-floor-secs", &floor, "--oidc-poll-secs", "86400"]).expect("start the proxy");
        OidcEnv { cluster, proxy }
    })
}

fn db() -> postgres::Client {
    oidc_env().cluster.connect("postgres", pgbaas_testkit::DB).expect("superuser connection")
}

fn http(method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
    let b = body.map(|b| b.to_string());
    let r = request_at(&oidc_env().proxy.base(), method, path, token, &[], b.as_deref());
    assert!(r.status < 500, "{method} {path} gave {}: {}", r.status, r.body);
    r
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A provider of its own: its key server (one key of `alg`), name, issuer, client id.
struct Idp {
    server: OidcServer,
    kid: String,
    name: String,
    iss: String,
    aud: String,
}

impl Idp {
    fn new(alg: Alg, options: Value) -> Idp {
        let server = OidcServer::start();
        let kid = server.add_key(alg);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let name = format!("idp{n}");
        let iss = format!("https://{name}.example");
        let aud = format!("app-{name}");
        let mut o = json!({"issuers": [iss], "client_ids": [aud, "other-app"], "jwks_url": server.jwks_url(), "nonce": "optional"});
        for (k, v) in options.as_object().unwrap() {
            o[k] = v.clone();
        }
        db().execute("select baas.set_oidc_provider($1, $2::text::jsonb)", &[&name, &o.to_string()]).unwrap();
        Idp { server, kid, name, iss, aud }
    }

    /// Claims of a fresh token for `sub`, with `extra` merged in (null removes).
    fn claims(&self, sub: &str, extra: Value) -> Value {
        // jti: two tokens minted in the same second would otherwise be the same token
        // (RS256 signatures are deterministic), and the second a replay.
        let mut c = json!({"iss": self.iss, "aud": self.aud, "sub": sub, "iat": now(), "exp": now() + 600, "jti": unique("jti")});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn token(&self, sub: &str, extra: Value) -> String {
        self.server.mint(&self.kid, &self.claims(sub, extra))
    }

    fn sign_in(&self, token: &str, nonce: Option<&str>) -> Resp {
        let mut body = json!({"provider": self.name, "id_token": token});
        if let Some(n) = nonce {
            body["nonce"] = json!(n);
        }
        http("POST", "/v1/auth/oidc", None, Some(body))
    }
}

fn unique(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A fresh lower-case address.
fn mail(tag: &str) -> String {
    format!("{}@oidc.example", unique(tag)).to_lowercase()
}

fn user_row(id: &str) -> (Option<String>, bool, bool) {
    let row = db()
        .query_one(
            "select email, email_verified_at is not null, password_hash is not null from baas.users where id = $1::text::uuid",
            &[&id],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

fn signup_at(email: &str) -> Value {
    let r = http("POST", "/v1/auth/signup", None, Some(json!({"email": email, "password": PASSWORD})));
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

fn verify_email_in_db(id: &str) {
    db().execute("update baas.users set email_verified_at = now() where id = $1::text::uuid", &[&id]).unwrap();
}

#[test]
fn rs256_sign_up_then_sign_in_to_the_same_account() {
    let idp = Idp::new(Alg::Rs256, json!({}));
    let sub = unique("sub");
    let email = mail("Pat");
    let r = idp.sign_in(&idp.token(&sub, json!({"email": email.to_uppercase(), "email_verified": true})), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.body["user"]["email"], json!(email), "the provider's verified address, normalised");
    assert_eq!(r.body["user"]["email_verified"], true);
    assert_eq!(payload(r.body["access_token"].as_str().unwrap())["amr"], json!(["oidc"]));
    assert_eq!(user_row(&id), (Some(email.clone()), true, false), "verified, no password");
    // The keys were fetched for that first sign-in.
    assert_eq!(idp.server.fetches(), 1);
    // A second token of the same subject signs into the same account.
    let r2 = idp.sign_in(&idp.token(&sub, json!({"email": email})), None);
    assert_eq!(r2.status, 200, "{}", r2.body);
    assert_eq!(r2.body["user"]["id"], json!(id));
    let access = r2.body["access_token"].as_str().unwrap();
    assert_eq!(http("GET", "/v1/auth/user", Some(access), None).body["id"], json!(id));
    let list = http("GET", "/v1/auth/identities", Some(access), None);
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1, "{}", list.body);
    assert_eq!(list.body["items"][0]["provider"], json!(idp.name));
    assert!(list.body["items"][0]["last_sign_in_at"].is_string(), "{}", list.body);
    // No further fetch: the keys are stored.
    assert_eq!(idp.server.fetches(), 1);
    // An unverified provider address is never stored as the account's.
    let r3 = idp.sign_in(&idp.token(&unique("sub"), json!({"email": mail("u"), "email_verified": false})), None);
    assert_eq!(r3.status, 200, "{}", r3.body);
    assert!(r3.body["user"]["email"].is_null(), "{}", r3.body);
}

#[test]
fn es256_with_a_hashed_nonce_and_string_booleans_as_apple_sends_them() {
    let idp = Idp::new(Alg::Es256, json!({"nonce": "required", "nonce_hash": "sha256"}));
    let raw = "a raw nonce 123";
    let hashed: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(raw.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    let email = mail("privaterelay");
    let extra = json!({"nonce": hashed, "email": email, "email_verified": "true", "is_private_email": "true"});
    let r = idp.sign_in(&idp.token(&unique("apple"), extra.clone()), Some(raw));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["email"], json!(email), "\"true\" is true");
    let id = r.body["user"]["id"].as_str().unwrap();
    let private: Option<Value> =
        db().query_one("select claims -> 'is_private_email' from baas.identities where user_id = $1::text::uuid", &[&id]).unwrap().get(0);
    assert_eq!(private, Some(json!(true)));
    // The hash itself, or no nonce, is refused.
    let r = idp.sign_in(&idp.token(&unique("apple"), extra.clone()), Some(&hashed));
    assert_eq!((r.status, r.code()), (401, "invalid_id_token"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("nonce"), "{}", r.body);
    let r = idp.sign_in(&idp.token(&unique("apple"), extra), None);
    assert_eq!((r.status, r.code()), (401, "invalid_id_token"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("nonce"), "{}", r.body);
    // "false" is false: the address is not taken.
    let r = idp.sign_in(&idp.token(&unique("apple"), json!({"nonce": hashed, "email": mail("x"), "email_verified": "false"})), Some(raw));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["user"]["email"].is_null(), "{}", r.body);
}

#[test]
fn every_refusal_is_a_401_naming_its_check() {
    let idp = Idp::new(Alg::Rs256, json!({"max_token_age_secs": 600}));
    let refused = |token: String, nonce: Option<&str>, words: &str| {
        let r = idp.sign_in(&token, nonce);
        assert_eq!((r.status, r.code()), (401, "invalid_id_token"), "{words}: {}", r.body);
        let m = r.body["error"]["message"].as_str().unwrap();
        assert!(m.contains(words), "expected {words:?} in {m:?}");
    };
    let t = |extra: Value| idp.token(&unique("s"), extra);
    refused(t(json!({"iss": "https://evil.example"})), None, "issuer (iss");
    refused(t(json!({"aud": "someone-elses-app"})), None, "audience (aud)");
    refused(t(json!({"aud": [idp.aud, "x"]})), None, "azp");
    refused(t(json!({"exp": now() - 120})), None, "expired (exp)");
    refused(t(json!({"iat": now() - 700, "exp": now() + 600})), None, "max_token_age");
    refused(t(json!({"nonce": "n1"})), Some("n2"), "nonce");
    refused(t(json!({"nonce": "n1"})), None, "nonce");
    // alg none and HS256, built by hand.
    let e = |v: &Value| b64(v.to_string().as_bytes());
    let body = e(&idp.claims(&unique("s"), json!({})));
    refused(format!("{}.{body}.", e(&json!({"alg": "none", "kid": idp.kid}))), None, "alg \"none\"");
    let hs = {
        use hmac::{Hmac, Mac};
        let input = format!("{}.{body}", e(&json!({"alg": "HS256", "kid": idp.kid})));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"guessable").unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    };
    refused(hs, None, "alg \"HS256\"");
    // A changed payload under the original signature.
    let good = t(json!({}));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], e(&idp.claims("victim", json!({}))), parts[2]);
    refused(forged, None, "signature");
    // Replay: the same token twice.
    let once = t(json!({"nonce": "fresh"}));
    assert_eq!(idp.sign_in(&once, Some("fresh")).status, 200);
    let r = idp.sign_in(&once, Some("fresh"));
    assert_eq!((r.status, r.code()), (401, "id_token_reused"), "{}", r.body);
    // Unknown provider; bad input.
    let r = http("POST", "/v1/auth/oidc", None, Some(json!({"provider": "nobody", "id_token": good})));
    assert_eq!((r.status, r.code()), (404, "provider_not_found"), "{}", r.body);
    let r = http("POST", "/v1/auth/oidc", None, Some(json!({"provider": idp.name})));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http("POST", "/v1/auth/oidc", None, Some(json!({"provider": idp.name, "id_token": "x".repeat(20_000)})));
    assert_eq!((r.status, r.code()), (401, "invalid_id_token"), "{}", r.body);
    // Nothing was made by the refusals: one account (the replayed token's).
    let n: i64 = db().query_one("select count(*) from baas.identities where provider = $1", &[&idp.name]).unwrap().get(0);
    assert_eq!(n, 1);
}

#[test]
fn provider_addresses_join_only_verified_accounts() {
    let idp = Idp::new(Alg::Rs256, json!({}));
    // A verified account: a verified provider address signs into it (and links).
    let verified = mail("verified");
    let acct = signup_at(&verified);
    let acct_id = acct["user"]["id"].as_str().unwrap().to_string();
    verify_email_in_db(&acct_id);
    let r = idp.sign_in(&idp.token(&unique("s"), json!({"email": verified, "email_verified": true})), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], json!(acct_id), "joined by verified email");
    // An unverified provider address against it is not looked up (a 409 would tell
    // whoever holds the token that the account exists): a new account without an
    // address; the existing one is as it was.
    let before = user_row(&acct_id);
    let r = idp.sign_in(&idp.token(&unique("s"), json!({"email": verified, "email_verified": false})), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(r.body["user"]["id"], json!(acct_id), "{}", r.body);
    assert!(r.body["user"]["email"].is_null(), "{}", r.body);
    assert_eq!(user_row(&acct_id), before, "the existing account is as it was");
    let n: i64 = db()
        .query_one("select count(*) from baas.identities where user_id = $1::text::uuid", &[&acct_id])
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the existing account gained no identity");
    // An account whose own address is unverified is not joined, even by a verified one
    // (whoever signed up with it may not own it).
    let unverified = mail("unverified");
    let other = signup_at(&unverified);
    let r = idp.sign_in(&idp.token(&unique("s"), json!({"email": unverified, "email_verified": true})), None);
    assert_eq!((r.status, r.code()), (409, "identity_link_required"), "{}", r.body);
    let other_id = other["user"]["id"].as_str().unwrap();
    assert_eq!(user_row(other_id), (Some(unverified), false, true), "the account is as it was");
    // With oidc_link_by_email = 'never' even the verified pair is not joined.
    let never = mail("never");
    let acct = signup_at(&never);
    verify_email_in_db(acct["user"]["id"].as_str().unwrap());
    db().batch_execute("update baas.settings set oidc_link_by_email = 'never'").unwrap();
    let r = idp.sign_in(&idp.token(&unique("s"), json!({"email": never, "email_verified": true})), None);
    db().batch_execute("update baas.settings set oidc_link_by_email = 'verified'").unwrap();
    assert_eq!((r.status, r.code()), (409, "identity_link_required"), "{}", r.body);
}

#[test]
fn a_rotated_key_is_fetched_once_and_a_failed_fetch_keeps_the_old_keys() {
    let idp = Idp::new(Alg::Rs256, json!({}));
    assert_eq!(idp.sign_in(&idp.token(&unique("s"), json!({})), None).status, 200);
    assert_eq!(idp.server.fetches(), 1);
    std::thread::sleep(Duration::from_secs(FLOOR_SECS) + Duration::from_millis(300));
    // The provider rotates: a new key, the old one withdrawn.
    let new_kid = idp.server.add_key(Alg::Es256);
    idp.server.remove_key(&idp.kid);
    let token = idp.server.mint(&new_kid, &idp.claims(&unique("s"), json!({})));
    let r = idp.sign_in(&token, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(idp.server.fetches(), 2, "one refetch for the new kid");
    // The provider's endpoint fails: the stored keys still verify.
    std::thread::sleep(Duration::from_secs(FLOOR_SECS) + Duration::from_millis(300));
    idp.server.set_status(500);
    let forged = idp.server.mint_as(&new_kid, "no-such-kid", &idp.claims(&unique("s"), json!({})));
    let r = idp.sign_in(&forged, None);
    assert_eq!((r.status, r.code()), (401, "invalid_id_token"), "{}", r.body);
    assert_eq!(idp.server.fetches(), 3, "it tried");
    let r = idp.sign_in(&idp.server.mint(&new_kid, &idp.claims(&unique("s"), json!({}))), None);
    assert_eq!(r.status, 200, "the keys fetched before still work: {}", r.body);
}

#[test]
fn forged_key_ids_cost_the_provider_one_fetch_per_floor() {
    let idp = Idp::new(Alg::Rs256, json!({}));
    assert_eq!(idp.sign_in(&idp.token(&unique("s"), json!({})), None).status, 200);
    std::thread::sleep(Duration::from_secs(FLOOR_SECS) + Duration::from_millis(300));
    let before = idp.server.fetches();
    let start = Instant::now();
    for i in 0..20 {
        let t = idp.server.mint_as(&idp.kid, &format!("forged-{i}"), &idp.claims(&unique("s"), json!({})));
        let r = idp.sign_in(&t, None);
        assert_eq!((r.status, r.code()), (401, "invalid_id_token"), "{}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("kid"), "{}", r.body);
    }
    let floors = start.elapsed().as_secs() / FLOOR_SECS + 1;
    let fetched = idp.server.fetches() - before;
    assert!(fetched >= 1 && fetched <= floors, "{fetched} fetches for 20 forged kids in {floors} floor(s)");
}

#[test]
fn link_list_and_unlink_identities() {
    let idp = Idp::new(Alg::Rs256, json!({}));
    let idp2 = Idp::new(Alg::Es256, json!({}));
    let user = {
        let email = mail("linker");
        let b = signup_at(&email);
        (b["user"]["id"].as_str().unwrap().to_string(), b["access_token"].as_str().unwrap().to_string())
    };
    let sub = unique("linked");
    let link = |who: &str, idp: &Idp, sub: &str| {
        http("POST", "/v1/auth/identities", Some(who), Some(json!({"provider": idp.name, "id_token": idp.token(sub, json!({}))})))
    };
    let r = link(&user.1, &idp, &sub);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["identity"]["provider"], json!(idp.name));
    assert_eq!(r.body["user"]["id"], json!(user.0));
    // Now that identity signs into this account.
    let r = idp.sign_in(&idp.token(&sub, json!({})), None);
    assert_eq!(r.body["user"]["id"], json!(user.0), "{}", r.body);
    // Another account cannot take it.
    let other = signup_at(&mail("other"));
    let r = link(other["access_token"].as_str().unwrap(), &idp, &sub);
    assert_eq!((r.status, r.code()), (409, "identity_taken"), "{}", r.body);
    // Signed out: 401.
    let r = http("POST", "/v1/auth/identities", None, Some(json!({"provider": idp.name, "id_token": idp.token(&sub, json!({}))})));
    assert_eq!(r.status, 401, "{}", r.body);
    // Unlink: the password remains, so it may go.
    let list = http("GET", "/v1/auth/identities", Some(&user.1), None);
    let iid = list.body["items"][0]["id"].as_str().unwrap().to_string();
    let r = http("DELETE", &format!("/v1/auth/identities/{iid}"), Some(&user.1), None);
    assert_eq!(r.status, 204, "{}", r.body);
    let r = http("DELETE", &format!("/v1/auth/identities/{iid}"), Some(&user.1), None);
    assert_eq!((r.status, r.code()), (404, "identity_not_found"), "{}", r.body);
    // An account made by a provider without an address: its only identity stays.
    let r = idp2.sign_in(&idp2.token(&unique("only"), json!({})), None);
    let access = r.body["access_token"].as_str().unwrap().to_string();
    let list = http("GET", "/v1/auth/identities", Some(&access), None);
    let only = list.body["items"][0]["id"].as_str().unwrap().to_string();
    let r = http("DELETE", &format!("/v1/auth/identities/{only}"), Some(&access), None);
    assert_eq!((r.status, r.code()), (409, "last_sign_in_method"), "{}", r.body);
    // With a second identity, the first may go.
    let r = link(&access, &idp, &unique("second"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http("DELETE", &format!("/v1/auth/identities/{only}"), Some(&access), None);
    assert_eq!(r.status, 204, "{}", r.body);
    // A provider with identities cannot be dropped.
    let e = db().execute("select baas.drop_oidc_provider($1)", &[&idp.name]).unwrap_err();
    assert_eq!(e.as_db_error().unwrap().detail(), Some("provider_in_use"));
}

#[test]
fn an_anonymous_account_is_upgraded_by_linking_an_identity() {
    let idp = Idp::new(Alg::Rs256, json!({}));
    db().batch_execute("update baas.settings set anonymous_sign_in = true").unwrap();
    let r = http("POST", "/v1/auth/anonymous", None, Some(json!({})));
    assert_eq!(r.status, 201, "{}", r.body);
    let (id, access) = (r.body["user"]["id"].as_str().unwrap().to_string(), r.body["access_token"].as_str().unwrap().to_string());
    let email = mail("anon");
    let sub = unique("anon");
    let token = idp.token(&sub, json!({"email": email, "email_verified": true}));
    let r = http("POST", "/v1/auth/identities", Some(&access), Some(json!({"provider": idp.name, "id_token": token})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], json!(id), "same id");
    assert_eq!(r.body["user"]["is_anonymous"], false);
    assert_eq!(r.body["user"]["email"], json!(email));
    let new_access = r.body["access_token"].as_str().unwrap();
    assert_eq!(payload(new_access)["is_anonymous"], false);
    // The identity now signs into it.
    let r = idp.sign_in(&idp.token(&sub, json!({})), None);
    assert_eq!(r.body["user"]["id"], json!(id), "{}", r.body);
    assert_eq!(user_row(&id), (Some(email), true, false), "verified by the provider, no password");
}

#[test]
fn suspension_and_a_second_factor_apply_to_provider_sign_ins() {
    let idp = Idp::new(Alg::Rs256, json!({}));
    let sub = unique("mfa");
    let r = idp.sign_in(&idp.token(&sub, json!({})), None);
    let id = r.body["user"]["id"].as_str().unwrap().to_string();
    db().execute(
        "insert into baas._mfa_factors (id, user_id, kind, secret, status, verified_at) \
         values (baas.uuid7(), $1::text::uuid, 'totp', '\\x0102030405060708090a0b0c0d0e0f1011121314', 'verified', now())",
        &[&id],
    )
    .unwrap();
    let r = idp.sign_in(&idp.token(&sub, json!({})), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["mfa_required"], true, "a ticket, not tokens: {}", r.body);
    assert!(r.body.get("access_token").is_none(), "{}", r.body);
    db().execute("select baas.suspend_user($1::text::uuid, 'test')", &[&id]).unwrap();
    let r = idp.sign_in(&idp.token(&sub, json!({})), None);
    assert_eq!((r.status, r.code()), (403, "account_suspended"), "{}", r.body);
}

#[test]
fn the_sql_call_answers_as_http_does() {
    let idp = Idp::new(Alg::Rs256, json!({}));
    // Keys in place (fetched by an HTTP sign-in).
    assert_eq!(idp.sign_in(&idp.token(&unique("s"), json!({})), None).status, 200);
    let token = idp.token(&unique("sql"), json!({"email": mail("sql"), "email_verified": true}));
    let mut c = db();
    c.batch_execute("set role baas_anon").unwrap();
    let row = c.query_one("select baas.oidc_sign_in($1, $2)::text", &[&idp.name, &token]).unwrap();
    let v: Value = serde_json::from_str(row.get::<_, &str>(0)).unwrap();
    assert!(v["access_token"].is_string(), "{v}");
    assert_eq!(v["user"]["email_verified"], true);
    // The same token again, by SQL and by HTTP: the same refusal.
    let e = c.query_one("select baas.oidc_sign_in($1, $2)::text", &[&idp.name, &token]).unwrap_err();
    assert_eq!(e.as_db_error().unwrap().detail(), Some("id_token_reused"));
    let r = idp.sign_in(&token, None);
    assert_eq!((r.status, r.code()), (401, "id_token_reused"), "{}", r.body);
}

/// An ES256 token with its signature's s replaced by n - s: the same signed claims,
/// another string, and a valid signature (ECDSA malleability).
fn flip_es256_s(token: &str) -> String {
    use base64::Engine;
    const N: [u8; 32] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
    ];
    let parts: Vec<&str> = token.split('.').collect();
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    assert_eq!(sig.len(), 64, "r || s");
    let s: Vec<u8> = sig[32..].to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = N[i] as i16 - s[i] as i16 - borrow;
        borrow = if d < 0 { 1 } else { 0 };
        sig[32 + i] = (d + 256 * borrow) as u8;
    }
    assert_eq!(borrow, 0);
    format!("{}.{}.{}", parts[0], parts[1], b64(&sig))
}

#[test]
fn an_es256_token_with_its_signature_flipped_is_still_a_replay() {
    let idp = Idp::new(Alg::Es256, json!({}));
    let token = idp.token(&unique("malleable"), json!({}));
    let flipped = flip_es256_s(&token);
    assert_ne!(flipped, token);
    let r = idp.sign_in(&token, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = idp.sign_in(&flipped, None);
    assert_eq!((r.status, r.code()), (401, "id_token_reused"), "{}", r.body);
}

#[test]
fn an_email_join_adds_no_way_past_a_second_factor_nor_a_second_identity_at_one_provider() {
    let idp = Idp::new(Alg::Rs256, json!({}));
    let identities = |id: &str| -> i64 {
        db().query_one("select count(*) from baas.identities where user_id = $1::text::uuid", &[&id]).unwrap().get(0)
    };
    // An account with a verified second factor: a provider's verified address does not
    // join it (it would sign in without the factor's owner linking it).
    let email = mail("mfa-join");
    let id = signup_at(&email)["user"]["id"].as_str().unwrap().to_string();
    verify_email_in_db(&id);
    db().execute(
        "insert into baas._mfa_factors (id, user_id, kind, secret, status, verified_at) \
         values (baas.uuid7(), $1::text::uuid, 'totp', '\\x0102030405060708090a0b0c0d0e0f1011121314', 'verified', now())",
        &[&id],
    )
    .unwrap();
    let r = idp.sign_in(&idp.token(&unique("s"), json!({"email": email, "email_verified": true})), None);
    assert_eq!((r.status, r.code()), (409, "identity_link_required"), "{}", r.body);
    assert_eq!(identities(&id), 0, "no identity was added");
    // An account with an identity at this provider already: another subject of the same
    // provider with the same address does not join it.
    let email = mail("second-sub");
    let id = signup_at(&email)["user"]["id"].as_str().unwrap().to_string();
    verify_email_in_db(&id);
    let r = idp.sign_in(&idp.token(&unique("s"), json!({"email": email, "email_verified": true})), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], json!(id), "the first joins");
    let r = idp.sign_in(&idp.token(&unique("s"), json!({"email": email, "email_verified": true})), None);
    assert_eq!((r.status, r.code()), (409, "identity_link_required"), "{}", r.body);
    assert_eq!(identities(&id), 1, "no second identity at the provider");
}

#[test]
fn a_used_token_is_remembered_until_it_expires() {
    // max_token_age a minute, the token valid five hours: it is refused as used for as
    // long as it could be accepted, should max_token_age be raised meanwhile.
    let idp = Idp::new(Alg::Rs256, json!({"max_token_age_secs": 60}));
    let token = idp.token(&unique("s"), json!({"exp": now() + 5 * 3600}));
    assert_eq!(idp.sign_in(&token, None).status, 200);
    let signed = token.rsplit_once('.').unwrap().0.to_string();
    let hours: f64 = db()
        .query_one(
            "select extract(epoch from expires_at - now())::float8 / 3600 from baas._oidc_used_tokens \
              where token_hash = sha256(convert_to($1, 'UTF8'))",
            &[&signed],
        )
        .unwrap()
        .get(0);
    assert!(hours > 4.9, "kept {hours} h");
    db().execute("select baas.set_oidc_provider($1, '{\"max_token_age_secs\": 86400}')", &[&idp.name]).unwrap();
    let r = idp.sign_in(&token, None);
    assert_eq!((r.status, r.code()), (401, "id_token_reused"), "{}", r.body);
}

#[test]
fn an_address_sign_up_would_refuse_is_not_stored() {
    let idp = Idp::new(Alg::Rs256, json!({}));
    // A domain label with "--" in the third and fourth place: earlier releases stored
    // such addresses, sign-up refuses them now.
    let email = format!("{}@ab--cd.example", unique("legacy")).to_lowercase();
    let r = idp.sign_in(&idp.token(&unique("s"), json!({"email": email, "email_verified": true})), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["user"]["email"].is_null(), "{}", r.body);
    let id = r.body["user"]["id"].as_str().unwrap();
    let stored: Option<String> =
        db().query_one("select email from baas.identities where user_id = $1::text::uuid", &[&id]).unwrap().get(0);
    assert_eq!(stored, None);
}
