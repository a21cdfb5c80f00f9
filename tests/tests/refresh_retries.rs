//! Refresh retries (docs/api.md, `POST /v1/auth/refresh`): what bounds them. This binary
//! has a cluster of its own, so it may shorten `refresh_reuse_interval` to 1 s without
//! touching other tests' retries.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn short_interval() {
    admin().batch_execute("update baas.settings set refresh_reuse_interval = '1 second'").unwrap();
}

#[test]
fn a_retry_from_a_transaction_begun_before_the_spend_is_timed_by_the_wall_clock() {
    short_interval();
    let u = signup("clock");
    // A SQL caller opens a transaction first; its now() stays at that moment.
    let mut early = admin();
    let mut tx = early.transaction().unwrap();
    tx.batch_execute("select now()").unwrap();
    let spent = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
    assert_eq!(spent.status, 200, "{}", spent.body);
    std::thread::sleep(Duration::from_millis(1500));
    // 1.5 s after the spend, with a 1 s interval: reuse, however early the transaction began.
    let late: Value = tx.query_one("select baas.refresh($1)", &[&u.refresh]).unwrap().get(0);
    assert_eq!(late["error"]["code"], "refresh_token_reused", "{late}");
    tx.commit().unwrap();
    let next = post("/v1/auth/refresh", None, json!({"refresh_token": spent.body["refresh_token"]}));
    assert_eq!((next.status, next.code()), (401, "invalid_refresh_token"), "the session was revoked");
}

#[test]
fn a_retry_within_the_interval_does_not_outlive_its_session() {
    short_interval();
    for end in ["logout", "password"] {
        let u = signup(end);
        let spent = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
        assert_eq!(spent.status, 200, "{}", spent.body);
        let access = spent.body["access_token"].as_str().unwrap();
        let ended = match end {
            "logout" => call("POST", "/v1/auth/logout", Some(access), None),
            _ => call(
                "PATCH",
                "/v1/auth/user",
                Some(access),
                Some(&json!({"password": "another long password", "current_password": PASSWORD}).to_string()),
            ),
        };
        assert!(ended.status < 300, "{end}: {} {}", ended.status, ended.body);
        let retry = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
        assert_eq!((retry.status, retry.code()), (401, "invalid_refresh_token"), "after {end}: {}", retry.body);
    }
}

#[test]
fn a_spent_token_opens_nothing_once_the_interval_is_past() {
    short_interval();
    let u = signup("sealed");
    let b = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
    assert_eq!(b.status, 200, "{}", b.body);
    // Its first use made six minutes older than the longest interval allows: the next
    // refresh of the session drops the sealed successor, so a leaked old token and a
    // copy of the table together no longer lead to the live token.
    admin()
        .execute(
            "update baas.refresh_tokens set used_at = used_at - interval '6 minutes' where token_hash = baas._hash_token($1)",
            &[&u.refresh],
        )
        .unwrap();
    let c = post("/v1/auth/refresh", None, json!({"refresh_token": b.body["refresh_token"]}));
    assert_eq!(c.status, 200, "{}", c.body);
    let sealed: Option<Vec<u8>> = admin()
        .query_one("select successor from baas.refresh_tokens where token_hash = baas._hash_token($1)", &[&u.refresh])
        .unwrap()
        .get(0);
    assert_eq!(sealed, None, "the old token's successor is gone");
    let kept: Option<Vec<u8>> = admin()
        .query_one(
            "select successor from baas.refresh_tokens where token_hash = baas._hash_token($1)",
            &[&b.body["refresh_token"].as_str().unwrap()],
        )
        .unwrap()
        .get(0);
    assert_eq!(kept.map(|k| k.len()), Some(32), "the just-spent token keeps its own for retries");
}
