//! Webhooks end to end (issue 18, package D; docs/webhooks.md): a real cluster, the real
//! proxy binary with its webhook worker, and real HTTP receivers (pgbaas_testkit::
//! webhook_sink) that can fail, go away and hang. Webhooks are registered with
//! `baas.create_webhook`, as a DBA would; every signature is checked here, with an HMAC
//! computed independently of the proxy's code.
//!
//! One cluster and proxy for the binary; each test has its own collection, webhooks and
//! receivers, so tests run side by side.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use pgbaas_testkit::webhook_sink::{Request, WebhookSink};
use pgbaas_testkit::{Cluster, Proxy, DB};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Env {
    cluster: Cluster,
    proxy: Proxy,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let cluster = Cluster::temporary().expect("start a Postgres cluster");
        let mut db = cluster.connect("postgres", DB).unwrap();
        db.batch_execute("update baas.settings set webhook_retry_base = '1 second', webhook_retry_max = '2 seconds'").unwrap();
        let url = cluster.authenticator_url().expect("authenticator password");
        let proxy = Proxy::start(
            &url,
            &["--webhook-poll-secs", "1", "--webhook-timeout-secs", "2", "--webhook-concurrency", "4", "--pool-size", "4"],
        )
        .expect("start the proxy with its webhook worker");
        Env { cluster, proxy }
    })
}

fn db() -> postgres::Client {
    env().cluster.connect("postgres", DB).unwrap()
}

const WAIT: Duration = Duration::from_secs(30);

/// A collection anonymous callers may create, read, update and delete in.
fn collection(name: &str) {
    let opts = json!({"create": ["public"], "default_acl": {"read": ["public"], "update": ["public"], "delete": ["public"]}});
    db().execute("select baas.create_collection($1, $2)", &[&name, &opts]).unwrap();
}

/// Register a webhook; returns its secret.
fn webhook(name: &str, url: &str, collection: Option<&str>, table: Option<&str>, max_attempts: i32) -> String {
    let w: Value = db()
        .query_one(
            "select baas.create_webhook($1, $2, collection => $3, \"table\" => $4::text::regclass, max_attempts => $5)",
            &[&name, &url, &collection, &table, &max_attempts],
        )
        .unwrap()
        .get(0);
    w["secret"].as_str().unwrap().to_string()
}

/// The Standard Webhooks check, done here with the test's own HMAC: the signature
/// header is `v1,` + base64(HMAC-SHA256(key, id.timestamp.body)), key = base64 after whsec_.
fn verify(r: &Request, secret: &str) {
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let id = r.header("webhook-id").expect("webhook-id");
    let ts = r.header("webhook-timestamp").expect("webhook-timestamp");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((ts.parse::<i64>().unwrap() - now).abs() < 300, "a current timestamp: {ts}");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{}", r.body).as_bytes());
    let expected = format!("v1,{}", B64.encode(mac.finalize().into_bytes()));
    assert_eq!(r.header("webhook-signature"), Some(expected.as_str()), "signature of {id}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    // And with the wrong key it would not match.
    let mut other = Hmac::<Sha256>::new_from_slice(b"not the key").unwrap();
    other.update(format!("{id}.{ts}.{}", r.body).as_bytes());
    assert_ne!(r.header("webhook-signature"), Some(format!("v1,{}", B64.encode(other.finalize().into_bytes())).as_str()));
}

/// Wait until `sql` (one boolean) is true.
fn wait_db(sql: &str, what: &str) {
    let deadline = Instant::now() + WAIT;
    let mut db = db();
    loop {
        if db.query_one(sql, &[]).unwrap().get::<_, bool>(0) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pending_of(hook: &str) -> i64 {
    db().query_one(
        "select count(*) from baas.webhook_events e join baas.webhooks w on w.id = e.webhook_id
          where w.name = $1 and e.delivered_at is null and e.dead_at is null",
        &[&hook],
    )
    .unwrap()
    .get(0)
}

fn http(method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{}", env().proxy.base(), path);
    let req = ureq::request(method, &url).timeout(Duration::from_secs(30));
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match res {
        Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(s, r)) => (s, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// The requests' documents, per document id, in the order received: (type, n).
fn per_document(reqs: &[Request]) -> HashMap<String, Vec<(String, Option<i64>)>> {
    let mut out: HashMap<String, Vec<(String, Option<i64>)>> = HashMap::new();
    for r in reqs {
        let p = r.json();
        let id = p["data"]["id"].as_str().unwrap().to_string();
        let n = p["data"]["document"]["data"]["n"].as_i64();
        out.entry(id).or_default().push((p["type"].as_str().unwrap().to_string(), n));
    }
    out
}

#[test]
fn every_event_arrives_once_signed_and_in_order_per_document() {
    env();
    collection("wh_order");
    let sink = WebhookSink::start();
    let secret = webhook("wh_order", &sink.url("/order"), Some("wh_order"), None, 10);
    let mut db = db();
    // Four documents, their changes interleaved: create, three updates, delete.
    let ids: Vec<String> = (0..4)
        .map(|i| db.query_one("select baas.create_document('wh_order', jsonb_build_object('n', 0, 'doc', $1::int)) ->> 'id'", &[&i]).unwrap().get(0))
        .collect();
    for n in 1..=3i64 {
        for id in &ids {
            db.execute("select baas.patch_document('wh_order', $1, jsonb_build_object('n', $2::bigint))", &[id, &n]).unwrap();
        }
    }
    for id in &ids {
        db.execute("select baas.delete_document('wh_order', $1)", &[id]).unwrap();
    }
    // And one through the API, as an anonymous caller.
    let (status, doc) = http("POST", "/v1/collections/wh_order/documents", Some(json!({"data": {"n": 7}})));
    assert_eq!(status, 201, "{doc}");
    wait_db("select count(*) = 21 from baas.webhook_events e join baas.webhooks w on w.id = e.webhook_id where w.name = 'wh_order' and e.delivered_at is not null",
            "21 deliveries");
    let reqs = sink.requests_to("/order");
    assert_eq!(reqs.len(), 21, "each event once: {:?}", reqs.iter().map(|r| r.body.clone()).collect::<Vec<_>>());
    let ids_seen: HashSet<_> = reqs.iter().map(|r| r.header("webhook-id").unwrap().to_string()).collect();
    assert_eq!(ids_seen.len(), 21, "a webhook-id per event");
    for r in &reqs {
        verify(r, &secret);
    }
    let per = per_document(&reqs);
    for id in &ids {
        let types: Vec<_> = per[id].iter().map(|(t, n)| (t.as_str(), *n)).collect();
        assert_eq!(
            types,
            [("document.created", Some(0)), ("document.updated", Some(1)), ("document.updated", Some(2)), ("document.updated", Some(3)), ("document.deleted", None)],
            "in order for {id}"
        );
    }
    let api = per[doc["id"].as_str().unwrap()].clone();
    assert_eq!(api, [("document.created".to_string(), Some(7))]);
    // The payload: the document as the API returns it, and what it was.
    let upd = reqs.iter().map(|r| r.json()).find(|p| p["type"] == "document.updated").unwrap();
    assert_eq!(upd["data"]["collection"], "wh_order");
    assert!(upd["data"]["previous"]["data"]["n"].is_i64() && upd["data"]["document"]["version"].is_i64(), "{upd}");
    assert!(upd["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn a_receiver_that_is_down_gets_everything_once_it_is_back() {
    env();
    collection("wh_down");
    let mut sink = WebhookSink::start();
    let secret = webhook("wh_down", &sink.url("/down"), Some("wh_down"), None, 10);
    sink.stop();
    let mut db = db();
    let id: String = db.query_one("select baas.create_document('wh_down', '{\"n\": 1}') ->> 'id'", &[]).unwrap().get(0);
    db.execute("select baas.patch_document('wh_down', $1, '{\"n\": 2}')", &[&id]).unwrap();
    // Tried and failed, then due again later (backoff); the second event waits behind it.
    wait_db(
        "select attempts >= 2 and last_error is not null and last_status is null and delivered_at is null
           from baas.webhook_events e join baas.webhooks w on w.id = e.webhook_id
          where w.name = 'wh_down' order by e.id limit 1",
        "two failed attempts",
    );
    let second: (i32, Option<i32>) = {
        let r = db.query_one("select e.attempts, e.last_status from baas.webhook_events e join baas.webhooks w on w.id = e.webhook_id where w.name = 'wh_down' order by e.id desc limit 1", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(second, (0, None), "the document's next event is not tried before the first is delivered");
    sink.restart();
    wait_db("select count(*) = 0 from baas.webhook_events e join baas.webhooks w on w.id = e.webhook_id where w.name = 'wh_down' and e.delivered_at is null", "delivery");
    let reqs = sink.requests_to("/down");
    let types: Vec<_> = reqs.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(types, ["document.created", "document.updated"], "both, once each, in order");
    for r in &reqs {
        verify(r, &secret);
    }
}

#[test]
fn a_permanently_failing_event_is_dead_lettered_and_replayed() {
    env();
    collection("wh_dead");
    let sink = WebhookSink::start();
    sink.set_status(500);
    webhook("wh_dead", &sink.url("/dead"), Some("wh_dead"), None, 2);
    let mut db = db();
    db.execute("select baas.create_document('wh_dead', '{\"n\": 1}')", &[]).unwrap();
    wait_db("select exists (select 1 from baas.webhook_dead_letters where webhook = 'wh_dead')", "a dead letter");
    let row = db.query_one("select type, attempts, last_status, last_error from baas.webhook_dead_letters where webhook = 'wh_dead'", &[]).unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i32>(1), row.get::<_, Option<i32>>(2)), ("document.created".into(), 2, Some(500)));
    assert!(row.get::<_, String>(3).contains("500"));
    let tries = sink.requests_to("/dead");
    assert_eq!(tries.len(), 2, "max_attempts = 2 tries");
    assert!(tries.iter().all(|r| r.answered == Some(500)));
    assert_eq!(tries[0].header("webhook-id"), tries[1].header("webhook-id"), "a retry keeps the event's id");
    // The receiver is fixed; the DBA replays.
    sink.set_status(204);
    let n: i64 = db.query_one("select baas.replay_dead_webhook_events('wh_dead')", &[]).unwrap().get(0);
    assert_eq!(n, 1);
    let reqs = sink.wait_for(WAIT, |r| r.iter().any(|r| r.answered == Some(204)));
    assert_eq!(reqs.iter().filter(|r| r.answered == Some(204)).count(), 1, "delivered after the replay");
    wait_db("select not exists (select 1 from baas.webhook_dead_letters where webhook = 'wh_dead') and
                    exists (select 1 from baas.webhook_events e join baas.webhooks w on w.id = e.webhook_id where w.name = 'wh_dead' and e.delivered_at is not null)",
            "delivered, out of the dead letters");
}

#[test]
fn writes_and_other_webhooks_go_on_while_a_receiver_hangs() {
    env();
    collection("wh_hang");
    let stuck = WebhookSink::start();
    let fine = WebhookSink::start();
    stuck.hang();
    webhook("wh_hang_stuck", &stuck.url("/stuck"), Some("wh_hang"), None, 10);
    let secret = webhook("wh_hang_fine", &fine.url("/fine"), Some("wh_hang"), None, 10);
    let (status, first) = http("POST", "/v1/collections/wh_hang/documents", Some(json!({"data": {"n": 0}})));
    assert_eq!(status, 201);
    stuck.wait_for(WAIT, |r| !r.is_empty());
    // The receiver holds its connection(s); writes return regardless.
    let id = first["id"].as_str().unwrap();
    let mut more = Vec::new();
    for n in 1..=5 {
        let (s, _) = http("PATCH", &format!("/v1/collections/wh_hang/documents/{id}"), Some(json!({"data": {"n": n}})));
        assert_eq!(s, 200);
        let (s, d) = http("POST", "/v1/collections/wh_hang/documents", Some(json!({"data": {"n": 100 + n}})));
        assert_eq!(s, 201);
        more.push(d["id"].as_str().unwrap().to_string());
    }
    // The other webhook got all eleven events meanwhile.
    let got = fine.wait_for(WAIT, |r| r.len() >= 11);
    assert_eq!(got.len(), 11);
    for r in &got {
        verify(r, &secret);
    }
    // Released: the stuck webhook catches up, in order for the document.
    stuck.release();
    let deadline = Instant::now() + Duration::from_secs(60);
    while pending_of("wh_hang_stuck") > 0 {
        assert!(Instant::now() < deadline, "the stuck webhook caught up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let answered: Vec<_> = stuck.requests_to("/stuck").into_iter().filter(|r| r.answered.is_some()).collect();
    let per = per_document(&answered);
    let seq: Vec<_> = per[id].iter().map(|(_, n)| n.unwrap()).collect();
    assert_eq!(seq, [0, 1, 2, 3, 4, 5], "the document's events in order");
    for d in &more {
        assert_eq!(per[d].len(), 1);
    }
}

#[test]
fn table_webhooks_and_drop_webhook() {
    env();
    let mut db = db();
    db.batch_execute("create table public.wh_items (id integer primary key, v text)").unwrap();
    let sink = WebhookSink::start();
    let control = WebhookSink::start();
    let secret = webhook("wh_items", &sink.url("/items"), None, Some("public.wh_items"), 10);
    webhook("wh_items_control", &control.url("/control"), None, Some("public.wh_items"), 10);
    db.batch_execute("insert into public.wh_items values (1, 'a'); update public.wh_items set v = 'b' where id = 1; delete from public.wh_items where id = 1;").unwrap();
    let reqs = sink.wait_for(WAIT, |r| r.len() >= 3);
    let got: Vec<Value> = reqs.iter().map(|r| r.json()).collect();
    assert_eq!(got.iter().map(|p| p["type"].as_str().unwrap()).collect::<Vec<_>>(), ["row.inserted", "row.updated", "row.deleted"]);
    assert_eq!(got[1]["data"], json!({"table": "public.wh_items", "key": {"id": 1}, "row": {"id": 1, "v": "b"}, "previous": {"id": 1, "v": "a"}}));
    assert_eq!(got[2]["data"]["row"], Value::Null);
    for r in &reqs {
        verify(r, &secret);
    }
    control.wait_for(WAIT, |r| r.len() >= 3);
    // Dropped: its trigger goes, writes go on, and nothing more reaches it.
    db.execute("select baas.drop_webhook('wh_items')", &[]).unwrap();
    db.batch_execute("insert into public.wh_items values (2, 'c')").unwrap();
    let c = control.wait_for(WAIT, |r| r.len() >= 4);
    assert_eq!(c[3].json()["data"]["key"], json!({"id": 2}), "the control webhook saw the new row");
    assert_eq!(sink.requests().len(), 3, "the dropped webhook saw nothing more");
    let triggers: i64 = db.query_one("select count(*) from pg_trigger where tgrelid = 'public.wh_items'::regclass and not tgisinternal", &[]).unwrap().get(0);
    assert_eq!(triggers, 1, "only the control webhook's trigger is left");
}

#[test]
fn dropping_a_collection_webhook_stops_its_deliveries() {
    env();
    collection("wh_drop");
    let sink = WebhookSink::start();
    let control = WebhookSink::start();
    webhook("wh_drop", &sink.url("/drop"), Some("wh_drop"), None, 10);
    webhook("wh_drop_control", &control.url("/control"), Some("wh_drop"), None, 10);
    let mut db = db();
    db.execute("select baas.create_document('wh_drop', '{\"n\": 1}')", &[]).unwrap();
    sink.wait_for(WAIT, |r| !r.is_empty());
    db.execute("select baas.drop_webhook('wh_drop')", &[]).unwrap();
    db.execute("select baas.create_document('wh_drop', '{\"n\": 2}')", &[]).unwrap();
    control.wait_for(WAIT, |r| r.len() >= 2);
    assert_eq!(sink.requests().len(), 1, "nothing after drop_webhook");
    let e = db.execute("select baas.drop_webhook('wh_drop')", &[]).unwrap_err();
    assert!(format!("{e:?}").contains("webhook_not_found"), "{e:?}");
}
