//! End-to-end: /healthz answers through the requests' pool and says how it is used;
//! 503 when no request connection can be had (within about a second: the answer is
//! shared by concurrent callers and reused for 1 s).

mod common;
use common::*;
use pgbaas_testkit::Proxy;
use serde_json::json;

#[test]
fn healthz_reports_the_request_pool_and_is_503_while_it_is_exhausted() {
    let url = env().cluster.authenticator_url().unwrap();
    // One request connection, a one-second wait for it, statements allowed to wait long.
    let p = Proxy::start(&url, &["--pool-size", "1", "--pool-timeout-secs", "1", "--statement-timeout-ms", "60000"]).unwrap();
    let health = || request_at(&p.base(), "GET", "/healthz", None, &[], None);
    let ok = health();
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["pool"]["max_size"], 1, "{}", ok.body);
    assert_eq!(ok.body["pool"]["size"], 1, "the check itself went through the request pool: {}", ok.body);
    assert_eq!(ok.body["pool"]["in_use"], 0, "{}", ok.body);

    // A request holds the one connection: it waits for a row a DBA has locked.
    let u = signup("health");
    let c = collection("health", json!({}));
    let id = create_doc(&c, Some(&u.access), json!({"n": 1}), None);
    let mut dba = admin();
    let mut tx = dba.transaction().unwrap();
    tx.execute("select 1 from baas.documents where id = $1::text::uuid for update", &[&id]).unwrap();
    let (base, path, token) = (p.base(), doc_path(&c, &id), u.access.clone());
    let patch = std::thread::spawn(move || request_at(&base, "PATCH", &path, Some(&token), &[], Some(r#"{"data": {"n": 2}}"#)));
    wait_until("the PATCH waits for the lock", || {
        admin()
            .query_one(
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like '%patch_document%'",
                &[],
            )
            .map(|r| r.get::<_, i64>(0) == 1)
            .unwrap_or(false)
    });
    // The answer is shared and reused for a second (a flood of /healthz costs one
    // check a second): the one from before the lock may still be served.
    let mut busy = health();
    wait_until("/healthz says 503 while the pool is exhausted", || {
        busy = health();
        busy.status == 503
    });
    assert_eq!(busy.body["error"]["code"], "database_unavailable", "{}", busy.body);
    assert_eq!((busy.body["pool"]["in_use"].as_i64(), busy.body["pool"]["available"].as_i64()), (Some(1), Some(0)), "{}", busy.body);

    // The lock goes, the request finishes, the pool is healthy again.
    tx.commit().unwrap();
    let r = patch.join().unwrap();
    assert_eq!((r.status, r.body["data"]["n"].as_i64()), (200, Some(2)), "{}", r.body);
    let mut again = health();
    wait_until("/healthz says 200 once the pool is free", || {
        again = health();
        again.status == 200
    });
    assert_eq!(again.body["pool"]["in_use"].as_i64(), Some(0), "{}", again.body);
}
