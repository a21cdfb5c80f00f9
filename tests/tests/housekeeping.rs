//! pgbaas's own housekeeping (issue 18, package E; docs/schedules.md): the real proxy
//! binary runs `baas.housekeeping()` every `--housekeeping-secs` against a real cluster.
//! Garbage is made by moving rows into the past through SQL, as time would; the test
//! waits (bounded) for the proxy's run to remove it and checks that live rows stay.
//!
//! One cluster and proxy for the binary; the tests take turns (one revokes the proxy's
//! right to run housekeeping for a while).

mod common;

use pgbaas_testkit::{Cluster, Proxy, DB};
use serde_json::{json, Value};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

struct Env {
    cluster: Cluster,
    proxy: Proxy,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::temporary().expect("start a Postgres cluster");
        let url = cluster.authenticator_url().expect("authenticator password");
        // The upload sweep is off: what removes expired uploads here is housekeeping.
        let proxy = Proxy::start(&url, &["--housekeeping-secs", "1", "--upload-cleanup-secs", "0", "--pool-size", "3"])
            .expect("start the proxy with housekeeping every second");
        Env { cluster, proxy }
    })
}

fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn db() -> postgres::Client {
    env().cluster.connect("postgres", DB).unwrap()
}

fn post(path: &str, body: Value) -> common::Resp {
    common::request_at(&env().proxy.base(), "POST", path, None, &[], Some(&body.to_string()))
}

/// Signs up over HTTP: (user id, refresh token).
fn signup(tag: &str) -> (String, String) {
    let r = post("/v1/auth/signup", json!({"email": common::email(tag), "password": common::PASSWORD}));
    assert_eq!(r.status, 201, "{}", r.body);
    (r.body["user"]["id"].as_str().unwrap().to_string(), r.body["refresh_token"].as_str().unwrap().to_string())
}

/// Poll until `cond` holds; fail naming `what` after `secs` (housekeeping runs every second).
fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} (waited {secs} s)");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn count(db: &mut postgres::Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> i64 {
    db.query_one(sql, params).unwrap().get(0)
}

#[test]
fn the_proxy_removes_expired_rows_and_keeps_live_ones() {
    let _t = turn();
    let mut db = db();
    let (old_uid, old_refresh) = signup("hk-old");
    let (live_uid, live_refresh) = signup("hk-live");
    let old = uuid(&old_uid);
    let live = uuid(&live_uid);

    // Things made now, then moved into the past as time would.
    db.batch_execute("update baas.settings set email_outbox_retention = '1 day'").unwrap();
    db.execute("update baas.sessions set expires_at = now() - interval '2 days' where user_id = $1::text::uuid", &[&old]).unwrap();
    db.execute(
        "insert into baas._auth_tokens (token_hash, kind, user_id, expires_at)
         values (sha256(convert_to($1::text || 'old', 'UTF8')), 'mfa', $1::text::uuid, now() - interval '2 days'),
                (sha256(convert_to($1::text || 'live', 'UTF8')), 'mfa', $1::text::uuid, now() + interval '1 hour')",
        &[&old],
    )
    .unwrap();
    db.batch_execute("select baas.create_collection('hk_bucket', '{\"bucket\": true}')").unwrap();
    let upload = |db: &mut postgres::Client, name: &str| -> String {
        let v: Value = db
            .query_one(
                "select x from baas.as_user($1::text::uuid, format('select baas.upload_create(''hk_bucket'', %L, ''application/octet-stream'', 10)', $2::text)) x",
                &[&live, &name],
            )
            .unwrap()
            .get(0);
        uuid(v["upload_id"].as_str().unwrap())
    };
    let old_upload = upload(&mut db, "old.bin");
    let live_upload = upload(&mut db, "live.bin");
    db.execute(
        "update baas._uploads set created_at = now() - interval '2 hours', expires_at = now() - interval '1 hour' where id = $1::text::uuid",
        &[&old_upload],
    )
    .unwrap();
    // Bytes written to the expired upload (as a tus PATCH leaves them).
    let old_blob: String = db
        .query_one("select blob_id::text from baas._uploads where id = $1::text::uuid", &[&old_upload])
        .unwrap()
        .get(0);
    db.execute("insert into baas._file_chunks (blob_id, off, data) values ($1::text::uuid, 0, '\\x0102030405'::bytea)", &[&old_blob])
        .unwrap();
    let tag = format!("{}", std::process::id());
    db.execute(
        "insert into baas.email_outbox (created_at, template, language, from_address, to_address, message_id, subject, status)
         select now() - a, 'verify_email', 'en', 'a@example.test', 'b@example.test', '<hk-' || $1 || '-' || m || '@example.test>', 's', st
           from (values ('3 days'::interval, 'old-sent', 'sent'), ('3 days', 'old-failed', 'failed'),
                        ('1 hour', 'new-sent', 'sent'), ('3 days', 'old-pending', 'pending')) v(a, m, st)",
        &[&tag],
    )
    .unwrap();

    wait_for("the proxy's housekeeping removed the ended session", 30, || {
        count(&mut db, "select count(*) from baas.sessions where user_id = $1::text::uuid", &[&old]) == 0
    });
    wait_for("the expired token, the expired upload and the old outbox rows went too", 10, || {
        count(&mut db, "select count(*) from baas._auth_tokens where user_id = $1::text::uuid and expires_at < now()", &[&old]) == 0
            && count(&mut db, "select count(*) from baas._uploads where id = $1::text::uuid", &[&old_upload]) == 0
            && count(&mut db, "select count(*) from baas.email_outbox where message_id like '<hk-' || $1 || '-old-%' and status <> 'pending'", &[&tag]) == 0
    });

    // What is live stays.
    assert_eq!(count(&mut db, "select count(*) from baas.sessions where user_id = $1::text::uuid", &[&live]), 1, "the live session stays");
    assert_eq!(count(&mut db, "select count(*) from baas._auth_tokens where user_id = $1::text::uuid", &[&old]), 1, "the live token stays");
    assert_eq!(count(&mut db, "select count(*) from baas._uploads where id = $1::text::uuid", &[&live_upload]), 1, "the live upload stays");
    let kept: Vec<String> = db
        .query("select message_id from baas.email_outbox where message_id like '<hk-' || $1 || '-%' order by message_id", &[&tag])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        kept,
        vec![format!("<hk-{tag}-new-sent@example.test>"), format!("<hk-{tag}-old-pending@example.test>")],
        "recent sent mail and pending mail stay"
    );
    wait_for("the expired upload's bytes went too", 10, || {
        count(&mut db, "select count(*) from baas._file_chunks where blob_id = $1::text::uuid", &[&old_blob]) == 0
            && count(&mut db, "select count(*) from baas._blobs where id = $1::text::uuid", &[&old_blob]) == 0
    });
    // As a user sees it: the live account still refreshes, the ended one does not.
    let r = post("/v1/auth/refresh", json!({"refresh_token": live_refresh}));
    assert_eq!(r.status, 200, "the live session still refreshes: {}", r.body);
    let r = post("/v1/auth/refresh", json!({"refresh_token": old_refresh}));
    assert_eq!(r.status, 401, "the removed session does not: {}", r.body);
}

#[test]
fn one_run_at_a_time() {
    let _t = turn();
    let url = env().cluster.authenticator_url().unwrap();
    // The proxy's own login role, as its background task calls it.
    let mut a = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut b = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut ta = a.transaction().unwrap();
    // The proxy's own run may hold the lock for a moment: try until this one runs.
    let mut first: Value = json!(null);
    for _ in 0..50 {
        first = ta.query_one("select baas.housekeeping()", &[]).unwrap().get(0);
        if first.get("skipped").is_none() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(first.get("sessions").is_some(), "a run answers its counts: {first}");
    // A's run holds the lock until its transaction ends: B's (and the proxy's) are skipped.
    let second: Value = b.query_one("select baas.housekeeping()", &[]).unwrap().get(0);
    assert_eq!(second, json!({"skipped": true}), "a concurrent run is skipped");
    ta.commit().unwrap();
    // Once A is done B runs (the proxy's own runs are short; try a few times).
    wait_for("a run after the first one ended is not skipped", 10, || {
        let v: Value = b.query_one("select baas.housekeeping()", &[]).unwrap().get(0);
        v.get("sessions").is_some()
    });
}

#[test]
fn a_failing_run_is_retried_and_never_stops_the_proxy() {
    let _t = turn();
    let mut db = db();
    let (uid, _) = signup("hk-retry");
    let u = uuid(&uid);
    db.batch_execute("revoke execute on function baas.housekeeping() from baas_authenticator").unwrap();
    // A run that passed its permission check just before the revoke may still be going:
    // let just over one period (1 s ± 10 %) pass before making garbage it must not see.
    std::thread::sleep(Duration::from_millis(1500));
    db.execute(
        "insert into baas._auth_tokens (token_hash, kind, user_id, expires_at)
         values (sha256(convert_to($1::text || 'retry', 'UTF8')), 'mfa', $1::text::uuid, now() - interval '2 days')",
        &[&u],
    )
    .unwrap();
    // Three periods in which every run fails (permission denied).
    std::thread::sleep(Duration::from_secs(3));
    let left = count(&mut db, "select count(*) from baas._auth_tokens where user_id = $1::text::uuid", &[&u]);
    db.batch_execute("grant execute on function baas.housekeeping() to baas_authenticator").unwrap();
    assert_eq!(left, 1, "nothing ran while the proxy might not");
    assert_eq!(pgbaas_testkit::http_status(env().proxy.port, "/healthz"), Some(200), "the proxy still serves");
    wait_for("a later period runs again once it may", 30, || {
        count(&mut db, "select count(*) from baas._auth_tokens where user_id = $1::text::uuid", &[&u]) == 0
    });
}

/// A uuid as text: the statements cast it (`$1::text::uuid`).
fn uuid(s: &str) -> String {
    s.to_string()
}
