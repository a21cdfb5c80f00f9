//! Per-account limits that hold with several proxies (issue 19, package D; sql/limits.sql,
//! docs/security.md): two proxies on one database together allow an account what one
//! allows, and a failed attempt counts as much as a successful one.
mod common;

use common::request_at;
use pgbaas_testkit::{Cluster, Proxy};
use serde_json::json;

/// Per account: 3 a minute. The per-address limits are far above what the test sends.
const LIMITS: &[&str] = &[
    "--rate-limits",
    "on",
    "--rate-limit-account-per-minute",
    "3",
    "--rate-limit-auth-per-minute",
    "1000",
    "--rate-limit-signups-per-hour",
    "1000",
    "--rate-limit-requests-per-minute",
    "100000",
];

fn post(base: &str, path: &str, body: serde_json::Value) -> common::Resp {
    request_at(base, "POST", path, None, &[], Some(&body.to_string()))
}

/// The shared count uses fixed one-minute windows of the database's clock (this
/// machine's): attempts that straddle a minute's end would be counted in two windows.
/// Wait for a fresh minute when less than 20 s of this one are left.
fn clear_of_a_minute_end() {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64() % 60.0;
    if secs > 40.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(60.5 - secs));
    }
}

#[test]
fn two_proxies_on_one_database_share_the_per_account_limits() {
    let cluster = Cluster::temporary().unwrap();
    let url = cluster.authenticator_url().unwrap();
    let (a, b) = (Proxy::start(&url, LIMITS).unwrap(), Proxy::start(&url, LIMITS).unwrap());
    let (a, b) = (a.base(), b.base());
    let email = format!("shared-{}@example.com", std::process::id());
    let password = "correct horse battery";
    let r = post(&a, "/v1/auth/signup", json!({"email": email, "password": password}));
    assert_eq!(r.status, 201, "{}", r.body);

    // Logins of one account (from one address): three across both proxies, then the
    // fourth is refused, by whichever proxy gets it. Each proxy alone has seen at most
    // two, under its own limit of three.
    let login = |base: &str| post(base, "/v1/auth/login", json!({"email": email, "password": password}));
    clear_of_a_minute_end();
    for (n, base) in [&a, &b, &a].into_iter().enumerate() {
        let r = login(base);
        assert_eq!(r.status, 200, "login {}: {}", n + 1, r.body);
    }
    let r = login(&b);
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "the fourth login across both proxies: {}", r.body);
    let secs: u64 = r.header("Retry-After").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    assert_eq!(login(&a).status, 429, "and on the other proxy too");

    // Failed attempts count: a refresh token that does not exist is refused (its
    // request's transaction rolls back), and still uses up the key's attempts.
    let bogus = format!("no-such-refresh-token-{}", std::process::id());
    let refresh = |base: &str| post(base, "/v1/auth/refresh", json!({"refresh_token": bogus}));
    clear_of_a_minute_end();
    for (n, base) in [&b, &a, &b].into_iter().enumerate() {
        let r = refresh(base);
        assert!(r.status == 401 || r.status == 400, "refresh {}: {} {}", n + 1, r.status, r.body);
    }
    let r = refresh(&a);
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "the fourth failed refresh across both proxies: {}", r.body);

    // Another account is not touched by either count.
    let other = format!("shared-other-{}@example.com", std::process::id());
    assert_eq!(post(&b, "/v1/auth/signup", json!({"email": other, "password": password})).status, 201);
    let r = post(&b, "/v1/auth/login", json!({"email": other, "password": password}));
    assert_eq!(r.status, 200, "{}", r.body);

    // (D, issue 19) Only sign-in routes share their count: a user lookup keeps its
    // per-account limit per proxy (two on each proxy: four in all, past a shared three).
    let token = r.body["access_token"].as_str().unwrap().to_string();
    for (n, base) in [&a, &b, &a, &b].into_iter().enumerate() {
        let r = request_at(base, "POST", "/v1/users/lookup", Some(&token), &[], Some(&json!({"email": email}).to_string()));
        assert_ne!(r.status, 429, "lookup {} (not a sign-in route): {}", n + 1, r.body);
        assert!(r.status < 500, "lookup {}: {} {}", n + 1, r.status, r.body);
    }
}
