//! The proxy's database connections, end to end: a request's statements run as one
//! implicit transaction, so a request that fails leaves nothing written and nothing
//! of its caller on the connection; a connection the server drops is replaced.
//! Each test runs its own proxy with a one-connection pool, so every request below
//! goes over the same connection as the one before it.

mod common;
use common::*;
use pgbaas_testkit::Proxy;
use serde_json::json;

fn req(base: &str, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    request_at(base, method, path, token, headers, body)
}

/// A proxy with one database connection, named so that tests can find it in
/// pg_stat_activity (during a request its name is "<name> <request id>": issue 19).
fn one_connection_proxy(name: &str) -> Proxy {
    let url = format!("{}?application_name={name}", env().cluster.authenticator_url().unwrap());
    Proxy::start(&url, &["--pool-size", "1", "--pool-timeout-secs", "5"]).unwrap()
}

fn backends(name: &str) -> Vec<(i32, String)> {
    admin()
        .query("select pid, coalesce(state, '') from pg_stat_activity where (application_name = $1 or (application_name like $1 || ' %' and application_name not like $1 || ' (%'))", &[&name])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn a_failed_request_leaves_nothing_written_and_nothing_of_its_caller_on_the_connection() {
    let name = format!("conn-fail-{}", std::process::id());
    let p = one_connection_proxy(&name);
    let (a, b) = (signup("conn-a"), signup("conn-b"));
    let c = collection("connfail", json!({}));
    let doc = create_doc(&c, Some(&a.access), json!({"n": 1}), None);
    let path = doc_path(&c, &doc);
    let base = p.base();
    let mut first_pid = None;
    for _ in 0..10 {
        // Fails inside the route's statement, after authenticate has set a's role and
        // claims on the connection.
        let r = req(&base, "PATCH", &path, Some(&a.access), &[("If-Match", "\"9\"")], Some(r#"{"data": {"n": 2}}"#));
        assert_eq!(r.status, 412, "{}", r.body);
        first_pid.get_or_insert_with(|| backends(&name)[0].0);
        // The same connection, next callers: none of them is a.
        assert_eq!(req(&base, "GET", &path, None, &[], None).status, 404);
        assert_eq!(req(&base, "GET", &path, Some(&b.access), &[], None).status, 404);
        assert_eq!(req(&base, "GET", "/v1/auth/user", None, &[], None).status, 401);
        let me = req(&base, "GET", "/v1/auth/user", Some(&b.access), &[], None);
        assert_eq!(me.body["email"], b.email.as_str());
        // A write that fails (a duplicate id) writes nothing either.
        let dup = req(&base, "POST", &docs_path(&c), Some(&b.access), &[], Some(&json!({"id": doc, "data": {"n": 3}}).to_string()));
        assert_eq!(dup.status, 409, "{}", dup.body);
    }
    let r = req(&base, "GET", &path, Some(&a.access), &[], None);
    assert_eq!((r.status, r.body["version"].as_i64(), r.body["data"]["n"].as_i64()), (200, Some(1), Some(1)), "{}", r.body);
    // Between requests the connection is idle, not inside a transaction, and it is the
    // same connection that served every request above: failed requests do not cost
    // the pool its connection.
    assert_eq!(backends(&name), vec![(first_pid.unwrap(), "idle".to_string())]);
}

#[test]
fn a_connection_the_server_drops_is_replaced() {
    let name = format!("conn-drop-{}", std::process::id());
    let p = one_connection_proxy(&name);
    let u = signup("conn-drop");
    let base = p.base();
    let me = |expect: u16| {
        let r = req(&base, "GET", "/v1/auth/user", Some(&u.access), &[], None);
        assert_eq!(r.status, expect, "{}", r.body);
        r
    };
    let gone = |pid: i32| wait_until(&format!("backend {pid} did not exit"), || !backends(&name).iter().any(|b| b.0 == pid));

    // Dropped while idle (a restart, an idle timeout): the next request does not fail.
    me(200);
    let pid = backends(&name)[0].0;
    assert!(admin().query_one("select pg_terminate_backend($1)", &[&pid]).unwrap().get::<_, bool>(0));
    gone(pid);
    assert_eq!(me(200).body["email"], u.email.as_str());
    let pid2 = backends(&name)[0].0;
    assert_ne!(pid, pid2, "a new connection serves the request");

    // Dropped in the middle of a request: that request gets a JSON 503, the next is served.
    let c = collection("conndrop", json!({"default_acl": {"read": ["authenticated"]}}));
    let doc = create_doc(&c, Some(&u.access), json!({"x": 1}), None);
    let mut dba = admin();
    let mut tx = dba.transaction().unwrap();
    tx.batch_execute("lock table baas.documents in access exclusive mode").unwrap();
    let (b2, path, token) = (base.clone(), doc_path(&c, &doc), u.access.clone());
    let blocked = std::thread::spawn(move || req(&b2, "GET", &path, Some(&token), &[], None));
    wait_until("the request never reached the lock", || {
        admin()
            .query_one("select exists (select from pg_stat_activity where (application_name = $1 or (application_name like $1 || ' %' and application_name not like $1 || ' (%')) and wait_event_type = 'Lock')", &[&name])
            .unwrap()
            .get::<_, bool>(0)
    });
    assert!(admin().query_one("select pg_terminate_backend($1)", &[&pid2]).unwrap().get::<_, bool>(0));
    let r = blocked.join().unwrap();
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (503, Some("database_unavailable")), "{}", r.body);
    tx.rollback().unwrap();
    gone(pid2);
    assert_eq!(me(200).body["email"], u.email.as_str());
    assert_eq!(req(&base, "GET", &doc_path(&c, &doc), Some(&u.access), &[], None).status, 200);
}
