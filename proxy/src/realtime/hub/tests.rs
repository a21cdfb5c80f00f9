//! The hub's semantics on synthetic events: the contract's table row by row, fields,
//! privileged/anonymous/owner callers, role changes, feed switches, the start-up
//! hand-over (buffer then join: no gap, no duplicate), resume verdicts, and the size of
//! an idle subscription.

use super::*;
use crate::realtime::Caller;
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};

const U1: &str = "00000000-0000-0000-0000-000000000001";
const U2: &str = "00000000-0000-0000-0000-000000000002";

fn doc(owner: &str, read: &[&str], data: Value, version: i64) -> Value {
    json!({"id": "d1", "collection": "c", "owner": owner, "version": version, "created_at": "t0", "updated_at": "t1",
           "data": data, "acl": {"read": read, "update": [], "delete": []}})
}

fn change(position: u64, xid: u64, op: &str, old: Option<Value>, new: Option<Value>) -> Arc<Event> {
    let v = old.as_ref().or(new.as_ref()).and_then(|d| d["version"].as_i64()).unwrap_or(1);
    let body = json!({"id": "d1", "op": op, "version": v, "old": old, "new": new});
    Arc::new(Event::parse(position, xid, "doc", Some("c"), &body.to_string()).unwrap())
}

fn ev(position: u64, xid: u64, kind: &str, collection: Option<&str>, body: Value) -> Arc<Event> {
    Arc::new(Event::parse(position, xid, kind, collection, &body.to_string()).unwrap())
}

fn ps(names: &[&str]) -> Vec<Arc<str>> {
    let mut v: Vec<Arc<str>> = names.iter().map(|n| Arc::from(*n)).collect();
    v.sort();
    v
}

fn kind_of(e: &Arc<Event>, filter: Option<&Value>, privileged: bool, principals: &[Arc<str>]) -> Option<Kind> {
    let Body::Doc(d) = &e.body else { panic!("not a doc event") };
    let f = filter.map(|f| pgbaas_query::parse::parse(f).unwrap());
    decide(d, f.as_ref(), privileged, principals)
}

#[test]
fn every_row_of_the_contracts_table() {
    let me = ps(&["public", "authenticated", &format!("user:{U1}")]);
    let f = json!({"n": {"$gt": 1}});
    let mine = |n: i64, v| doc(U1, &[], json!({ "n": n }), v);
    let theirs = |n: i64, v| doc(U2, &[], json!({ "n": n }), v);
    let k = |e: &Arc<Event>| kind_of(e, Some(&f), false, &me);
    // now ∧ insert
    assert_eq!(k(&change(1, 1, "insert", None, Some(mine(2, 1)))), Some(Kind::Insert));
    // an insert nobody here may read, or that does not match
    assert_eq!(k(&change(1, 1, "insert", None, Some(theirs(2, 1)))), None);
    assert_eq!(k(&change(1, 1, "insert", None, Some(mine(0, 1)))), None);
    // now ∧ was → update
    assert_eq!(k(&change(1, 1, "update", Some(mine(2, 1)), Some(mine(3, 2)))), Some(Kind::Update));
    // now ∧ ¬was → enter: started matching, or became readable (an owner change)
    assert_eq!(k(&change(1, 1, "update", Some(mine(0, 1)), Some(mine(3, 2)))), Some(Kind::Enter));
    assert_eq!(k(&change(1, 1, "update", Some(theirs(5, 1)), Some(mine(5, 2)))), Some(Kind::Enter));
    // ¬now ∧ was ∧ delete → delete (the last readable version decides)
    assert_eq!(k(&change(1, 1, "delete", Some(mine(2, 1)), None)), Some(Kind::Delete));
    // a delete of a version this caller could not read goes nowhere
    assert_eq!(k(&change(1, 1, "delete", Some(theirs(2, 1)), None)), None);
    assert_eq!(k(&change(1, 1, "delete", Some(mine(0, 1)), None)), None, "nor one the filter never matched");
    // ¬now ∧ was ∧ ¬delete → leave: stopped matching, or stopped being readable (ACL)
    assert_eq!(k(&change(1, 1, "update", Some(mine(2, 1)), Some(mine(0, 2)))), Some(Kind::Leave));
    assert_eq!(
        k(&change(1, 1, "update", Some(doc(U2, &["authenticated"], json!({"n": 2}), 1)), Some(doc(U2, &[], json!({"n": 2}), 2)))),
        Some(Kind::Leave)
    );
    // else nothing
    assert_eq!(k(&change(1, 1, "update", Some(mine(0, 1)), Some(mine(0, 2)))), None);
    assert_eq!(k(&change(1, 1, "update", Some(theirs(5, 1)), Some(theirs(6, 2)))), None);
}

#[test]
fn privileged_anonymous_and_acl_principals() {
    let anon = ps(&["public"]);
    let e = change(1, 1, "insert", None, Some(doc(U2, &[], json!({}), 1)));
    assert_eq!(kind_of(&e, None, true, &[]), Some(Kind::Insert), "a service token reads everything");
    assert_eq!(kind_of(&e, None, false, &anon), None);
    let public = change(1, 1, "insert", None, Some(doc(U2, &["public"], json!({}), 1)));
    assert_eq!(kind_of(&public, None, false, &anon), Some(Kind::Insert));
    let role = change(1, 1, "insert", None, Some(doc(U2, &["role:team"], json!({}), 1)));
    let me = ps(&["public", "authenticated", &format!("user:{U1}")]);
    assert_eq!(kind_of(&role, None, false, &me), None);
    let mut with_role = me.clone();
    with_role.push("role:team".into());
    with_role.sort();
    assert_eq!(kind_of(&role, None, false, &with_role), Some(Kind::Insert));
    let named = change(1, 1, "insert", None, Some(doc(U2, &[&format!("user:{U1}")], json!({}), 1)));
    assert_eq!(kind_of(&named, None, false, &me), Some(Kind::Insert));
}

fn caller(user: Option<&str>, service: bool) -> Caller {
    let claims = match (user, service) {
        (_, true) => Some(json!({"sub": "svc", "role": "baas_service"}).to_string()),
        (Some(u), _) => Some(json!({"sub": u, "role": "baas_user", "sid": "s"}).to_string()),
        (None, _) => None,
    };
    Caller::new(claims, "127.0.0.1".into(), "127.0.0.1".into())
}

fn req(sub: &str, filter: Value, fields: Option<&[&str]>) -> Subscribe {
    Subscribe {
        sub: sub.into(),
        collection: "c".into(),
        filter,
        fields: fields.map(|f| f.iter().map(|s| s.to_string()).collect()),
        watch: None,
        snapshot: false,
        resume: None,
    }
}

fn start(position: u64, snap: &str, roles: &[&str], nesting: &[(&str, &str)]) -> Start {
    Start {
        position,
        snap: Snap::parse(snap).unwrap(),
        roles: roles.iter().map(|s| s.to_string()).collect(),
        nesting: nesting.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
    }
}

/// A subscription made live the way `subscribe` does it, without the SQL.
fn live(hub: &Hub, conn: &Arc<Conn>, r: Subscribe, st: Start) -> SubId {
    let filter = match pgbaas_query::parse::parse(&r.filter).unwrap() {
        Filter::And(v) if v.is_empty() => None,
        f => Some(f),
    };
    let fields = r.fields.clone();
    let id = hub.register(conn, &r, filter, fields).unwrap();
    assert!(matches!(hub.go_live(id, &st, r.snapshot, r.resume.is_some()), Joined::Live));
    id
}

fn frames(conn: &Conn) -> Vec<Value> {
    conn.outbox.drain().into_iter().map(|f| serde_json::from_slice(&f.json).unwrap()).collect()
}

fn types(fs: &[Value]) -> Vec<String> {
    fs.iter().map(|f| format!("{}@{}", f["type"].as_str().unwrap(), f["position"].as_str().unwrap_or("-"))).collect()
}

#[test]
fn fan_out_routes_by_principal_and_applies_fields() {
    let hub = Hub::new(HubConfig::default(), None);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    let b = Conn::new(caller(Some(U2), false), 1 << 20);
    let anon = Conn::new(caller(None, false), 1 << 20);
    let svc = Conn::new(caller(None, true), 1 << 20);
    live(&hub, &a, req("s", json!({}), Some(&["x"])), start(0, "1:1:", &[], &[]));
    live(&hub, &b, req("s", json!({"x": 1}), None), start(0, "1:1:", &[], &[]));
    live(&hub, &anon, req("s", json!({}), None), start(0, "1:1:", &[], &[]));
    live(&hub, &svc, req("s", json!({}), None), start(0, "1:1:", &[], &[]));
    hub.apply(vec![
        change(1, 10, "insert", None, Some(doc(U1, &[], json!({"x": 1, "secret": 2}), 1))),
        change(2, 11, "update", Some(doc(U1, &[], json!({"x": 1, "secret": 2}), 1)), Some(doc(U1, &["public"], json!({"x": 1, "secret": 3}), 2))),
        ev(3, 12, "doc", Some("other"), json!({"id": "o", "op": "insert", "version": 1, "old": null, "new": doc(U1, &["public"], json!({}), 1)})),
    ]);
    let fa = frames(&a);
    assert_eq!(types(&fa), ["insert@1", "update@2"]);
    assert_eq!(fa[0]["sub"], "s");
    assert_eq!(fa[0]["document"]["data"], json!({"x": 1}), "only the fields asked for");
    assert_eq!(fa[0]["document"]["owner"], U1, "system fields stay");
    assert_eq!(types(&frames(&b)), ["enter@2"], "another user's document entered when made public");
    let fanon = frames(&anon);
    assert_eq!(types(&fanon), ["enter@2"]);
    assert_eq!(fanon[0]["document"]["data"], json!({"x": 1, "secret": 3}));
    assert_eq!(types(&frames(&svc)), ["insert@1", "update@2"], "privileged: everything of its collection only");
    // Leave carries only the id; delete the last readable version.
    hub.apply(vec![change(4, 13, "update", Some(doc(U1, &["public"], json!({"x": 1}), 2)), Some(doc(U1, &[], json!({"x": 1}), 3)))]);
    let l = frames(&anon);
    assert_eq!(types(&l), ["leave@4"]);
    assert_eq!(l[0], json!({"type": "leave", "sub": "s", "position": "4", "id": "d1"}));
    hub.apply(vec![change(5, 14, "delete", Some(doc(U1, &[], json!({"x": 1}), 3)), None)]);
    assert!(frames(&anon).is_empty(), "a delete goes only to those who could read the last version");
    let d = frames(&a);
    assert_eq!(types(&d), ["update@4", "delete@5"]);
    assert_eq!(d[1]["document"]["version"], 3);
}

/// `watch`: inserts and updates only when a watched field changed (was set, for an
/// insert); enter, leave and delete whatever changed, as Parse LiveQuery's watch.
#[test]
fn watch_sends_inserts_and_updates_only_when_a_watched_field_changed() {
    let hub = Hub::new(HubConfig::default(), None);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    live(&hub, &a, Subscribe { watch: Some(vec!["score".into()]), ..req("s", json!({"open": true}), None) }, start(0, "1:1:", &[], &[]));
    let v = |data: Value, version: i64| doc(U1, &[], data, version);
    hub.apply(vec![
        change(1, 10, "insert", None, Some(v(json!({"open": true, "name": "a"}), 1))),
        change(2, 11, "update", Some(v(json!({"open": true, "name": "a"}), 1)), Some(v(json!({"open": true, "name": "b"}), 2))),
        change(3, 12, "update", Some(v(json!({"open": true, "name": "b"}), 2)), Some(v(json!({"open": true, "name": "b", "score": 1}), 3))),
        change(4, 13, "update", Some(v(json!({"open": true, "score": 1}), 3)), Some(v(json!({"open": true, "score": null}), 4))),
        change(5, 14, "update", Some(v(json!({"open": true, "score": null}), 4)), Some(v(json!({"open": false, "score": null}), 5))),
        change(6, 15, "update", Some(v(json!({"open": false}), 5)), Some(v(json!({"open": true}), 6))),
        change(7, 16, "insert", None, Some(v(json!({"open": true, "score": 0}), 1))),
        change(8, 17, "delete", Some(v(json!({"open": true}), 6)), None),
    ]);
    assert_eq!(
        types(&frames(&a)),
        ["update@3", "update@4", "leave@5", "enter@6", "insert@7", "delete@8"],
        "no insert without the field, no update of other fields; a score set to null is a change"
    );
}

#[test]
fn role_changes_reset_exactly_the_subscriptions_whose_principals_changed() {
    let hub = Hub::new(HubConfig::default(), None);
    hub.start_at(0, &[("team".to_string(), "org".to_string())]);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    let b = Conn::new(caller(Some(U2), false), 1 << 20);
    live(&hub, &a, req("s", json!({}), None), start(0, "1:1:", &[], &[("team", "org")]));
    live(&hub, &b, req("s", json!({}), None), start(0, "1:1:", &[], &[("team", "org")]));
    let org_doc = || change(2, 11, "insert", None, Some(doc(U2, &["role:org"], json!({}), 1)));
    hub.apply(vec![ev(1, 10, "member", None, json!({"user": U1, "role": "team", "op": "add"})), org_doc()]);
    assert_eq!(types(&frames(&a)), ["reset@1", "insert@2"], "reset at the change, then routed by the nested role");
    assert_eq!(types(&frames(&b)), ["insert@2"], "b's principals did not change");
    hub.apply(vec![ev(3, 12, "nest", None, json!({"member_role": "team", "role": "org", "op": "remove"}))]);
    let r = frames(&a);
    assert_eq!(r, [json!({"type": "reset", "sub": "s", "reason": "access_changed", "position": "3"})]);
    hub.apply(vec![change(4, 13, "update", Some(doc(U2, &["role:org"], json!({}), 1)), Some(doc(U2, &["role:org"], json!({"v": 2}), 2)))]);
    assert!(frames(&a).is_empty(), "org's documents no longer reach a");
    assert!(frames(&b).iter().all(|f| f["type"] == "update"));
    hub.apply(vec![ev(5, 14, "member", None, json!({"user": "00000000-0000-0000-0000-00000000000f", "role": "org", "op": "add"}))]);
    assert!(frames(&a).is_empty() && frames(&b).is_empty(), "another user's membership resets nobody here");
}

#[test]
fn a_feed_switched_off_or_dropped_ends_its_subscriptions() {
    let hub = Hub::new(HubConfig::default(), None);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    live(&hub, &a, req("s1", json!({}), None), start(0, "1:1:", &[], &[]));
    let mut other = req("s2", json!({}), None);
    other.collection = "d".into();
    live(&hub, &a, other, start(0, "1:1:", &[], &[]));
    hub.apply(vec![ev(1, 10, "collection", Some("c"), json!({"collection": "c", "realtime": false}))]);
    let f = frames(&a);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0]["sub"].as_str(), f[0]["error"]["code"].as_str()), (Some("s1"), Some("feed_disabled")));
    assert_eq!(hub.count(), 1);
    assert!(!hub.unsubscribe(&a, "s1"), "s1 was removed");
    hub.apply(vec![ev(2, 11, "collection", Some("d"), json!({"collection": "d", "dropped": true}))]);
    assert_eq!(frames(&a)[0]["error"]["code"], "not_found");
    assert_eq!(hub.count(), 0);
}

#[test]
fn caps_and_names() {
    let hub = Hub::new(HubConfig { max_subscriptions_per_connection: 2, ..HubConfig::default() }, None);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    live(&hub, &a, req("s1", json!({}), None), start(0, "1:1:", &[], &[]));
    let e = hub.register(&a, &req("s1", json!({}), None), None, None).err().unwrap();
    assert_eq!((e.status.as_u16(), e.code.as_str()), (409, "subscription_exists"));
    live(&hub, &a, req("s2", json!({}), None), start(0, "1:1:", &[], &[]));
    let e = hub.register(&a, &req("s3", json!({}), None), None, None).err().unwrap();
    assert_eq!((e.status.as_u16(), e.code.as_str()), (429, "too_many_subscriptions"));
    assert!(hub.unsubscribe(&a, "s1"));
    live(&hub, &a, req("s3", json!({}), None), start(0, "1:1:", &[], &[]));
    hub.disconnect(&a);
    assert_eq!(hub.count(), 0);
    let b = Conn::new(caller(Some(U2), false), 1 << 20);
    hub.apply(vec![change(1, 1, "insert", None, Some(doc(U1, &["public"], json!({}), 1)))]);
    assert!(frames(&a).is_empty() && frames(&b).is_empty());
}

#[test]
fn filter_and_fields_errors_are_the_list_routes() {
    let e = query_error(pgbaas_query::parse::parse(&json!({"a": {"$regexp": "x"}})).unwrap_err(), false);
    assert_eq!((e.status.as_u16(), e.code.as_str()), (400, "invalid_query"));
    assert!(e.message.contains("unknown operator $regexp"));
    let e = query_error(pgbaas_query::parse::parse(&json!({"a": {"$regex": "(a)\\1"}})).unwrap_err(), false);
    assert!(e.message.contains("a.$regex: backreferences"), "{}", e.message);
    let e = query_error(pgbaas_query::parse::parse_fields(&["a.b".into()]).unwrap_err(), false);
    assert_eq!(e.code, "invalid_query");
}

/// The start-up hand-over of a `snapshot: true` subscription: events applied while the
/// start-up SQL ran are buffered; at go_live those at or before S, and those after S
/// whose transaction the snapshot saw, are skipped; the rest are sent in order; the live
/// stream continues with no gap or duplicate.
#[test]
fn hand_over_buffers_then_joins_without_gap_or_duplicate() {
    let hub = Hub::new(HubConfig::default(), None);
    hub.start_at(10, &[]);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    let r = Subscribe { snapshot: true, ..req("s", json!({}), None) };
    let id = hub.register(&a, &r, None, None).unwrap();
    let pub_doc = |p: u64, xid: u64| change(p, xid, "insert", None, Some(doc(U1, &["public"], json!({ "p": p }), 1)));
    // The hub moves on while the start-up transaction runs.
    hub.apply(vec![pub_doc(11, 100), pub_doc(12, 101), pub_doc(13, 103), pub_doc(14, 104), pub_doc(15, 105)]);
    assert!(frames(&a).is_empty(), "nothing reaches a pending subscription");
    // Its snapshot: position 12; xids below 103, and 104, had committed; 103 and 105
    // were running (a commit's WAL record comes before it shows in snapshots: 104 may
    // be decoded after 103 and still be in the snapshot).
    let st = start(12, "103:106:103,105", &[], &[]);
    assert!(matches!(hub.go_live(id, &st, true, false), Joined::Live));
    assert_eq!(types(&frames(&a)), ["insert@13", "insert@15"], "14 is already in the snapshot");
    hub.apply(vec![pub_doc(15, 105), pub_doc(16, 106), pub_doc(17, 102), pub_doc(18, 103)]);
    assert_eq!(
        types(&frames(&a)),
        ["insert@16", "insert@18"],
        "live from the buffer's end, 15 not again; 17 (xid 102, in the snapshot) decoded after 106 is still skipped: \
         commit-record order is not visibility order"
    );
}

/// Without `snapshot`, nothing is skipped for the start snapshot's sake: a transaction
/// committed before the start but captured after S is in no snapshot the client got
/// (a resume's first missed event was lost this way).
#[test]
fn a_plain_or_resumed_subscription_skips_nothing_after_its_start() {
    for resume in [None, Some(3)] {
        let hub = Hub::new(HubConfig::default(), None);
        hub.start_at(10, &[]);
        let a = Conn::new(caller(Some(U1), false), 1 << 20);
        let r = Subscribe { resume, ..req("s", json!({}), None) };
        let id = hub.register(&a, &r, None, None).unwrap();
        let pub_doc = |p: u64, xid: u64| change(p, xid, "insert", None, Some(doc(U1, &["public"], json!({ "p": p }), 1)));
        hub.apply(vec![pub_doc(11, 100), pub_doc(12, 101)]);
        let st = start(11, "103:106:103,105", &[], &[]);
        assert!(matches!(hub.go_live(id, &st, false, resume.is_some()), Joined::Live));
        hub.apply(vec![pub_doc(13, 104)]);
        assert_eq!(types(&frames(&a)), ["insert@12", "insert@13"], "resume {resume:?}: both after S, both sent");
    }
}

/// A role change committed before a resume's start snapshot but captured after S: the
/// start's roles already hold it, so no principal differs, yet the client's state as of
/// its resume position was read without it: `reset` access_changed, whether the event
/// comes during the hand-over or after it.
#[test]
fn a_resume_over_a_late_captured_role_change_is_a_reset() {
    for during_hand_over in [true, false] {
        let hub = Hub::new(HubConfig::default(), None);
        hub.start_at(10, &[]);
        let a = Conn::new(caller(Some(U1), false), 1 << 20);
        let r = Subscribe { resume: Some(5), ..req("s", json!({}), None) };
        let id = hub.register(&a, &r, None, None).unwrap();
        let member = ev(11, 100, "member", None, json!({"user": U1, "role": "team", "op": "add"}));
        if during_hand_over {
            hub.apply(vec![member.clone()]);
        }
        assert!(matches!(hub.go_live(id, &start(10, "101:101:", &["team"], &[]), false, true), Joined::Live));
        if !during_hand_over {
            hub.apply(vec![member]);
        }
        assert_eq!(types(&frames(&a)), ["reset@11"], "during the hand-over: {during_hand_over}");
        // A fresh (not resumed) subscription read nothing before: no reset.
        let b = Conn::new(caller(Some(U1), false), 1 << 20);
        let id = hub.register(&b, &req("t", json!({}), None), None, None).unwrap();
        assert!(matches!(hub.go_live(id, &start(10, "101:101:", &["team"], &[]), false, false), Joined::Live));
        hub.apply(vec![ev(12, 99, "member", None, json!({"user": U1, "role": "team", "op": "add"}))]);
        assert!(frames(&b).is_empty());
    }
    // A nest change is news only to a user holding some role directly.
    let hub = Hub::new(HubConfig::default(), None);
    hub.start_at(10, &[]);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    live(&hub, &a, Subscribe { resume: Some(5), ..req("s", json!({}), None) }, start(10, "101:101:", &[], &[("a", "b")]));
    hub.apply(vec![ev(11, 100, "nest", None, json!({"member_role": "a", "role": "b", "op": "add"}))]);
    assert!(frames(&a).is_empty(), "no roles: the graph cannot change what U1 reads");
}

#[test]
fn hand_over_applies_role_changes_after_the_start_in_order() {
    let hub = Hub::new(HubConfig::default(), None);
    hub.start_at(10, &[]);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    let id = hub.register(&a, &req("s", json!({}), None), None, None).unwrap();
    let team_doc = |p: u64| change(p, 100 + p, "insert", None, Some(doc(U2, &["role:team"], json!({}), 1)));
    hub.apply(vec![
        team_doc(11),
        ev(12, 112, "member", None, json!({"user": U1, "role": "team", "op": "add"})),
        team_doc(13),
    ]);
    let st = start(11, "112:112:", &[], &[]);
    assert!(matches!(hub.go_live(id, &st, false, false), Joined::Live));
    assert_eq!(types(&frames(&a)), ["reset@12", "insert@13"], "not readable before 12, readable after");
    hub.apply(vec![team_doc(14)]);
    assert_eq!(types(&frames(&a)), ["insert@14"], "the hub's view of the user took over, with the role");
}

#[test]
fn a_feed_switched_off_during_the_start_up_ends_it() {
    let hub = Hub::new(HubConfig::default(), None);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    let id = hub.register(&a, &req("s", json!({}), None), None, None).unwrap();
    hub.apply(vec![ev(1, 10, "collection", Some("c"), json!({"collection": "c", "realtime": false}))]);
    assert!(matches!(hub.go_live(id, &start(0, "5:5:", &[], &[]), false, false), Joined::Closed));
    assert_eq!(frames(&a)[0]["error"]["code"], "feed_disabled");
    assert_eq!(hub.count(), 0);
    assert!(!hub.unsubscribe(&a, "s"));
}

#[test]
fn resume_rule_and_replay_verdicts() {
    // (oldest, last, last_reset)
    assert_eq!(resume_verdict(10, (5, 20, 0)), Ok(()));
    assert_eq!(resume_verdict(4, (5, 20, 0)), Ok(()), "p = oldest - 1: the next event is the oldest kept");
    assert_eq!(resume_verdict(3, (5, 20, 0)), Err("retention"));
    assert_eq!(resume_verdict(21, (5, 20, 0)), Err("retention"), "a position from the future (another database?)");
    assert_eq!(resume_verdict(7, (5, 20, 8)), Err("capture_reset"));
    assert_eq!(resume_verdict(8, (5, 20, 8)), Ok(()));
    let member = |u: &str| ev(3, 3, "member", None, json!({"user": u, "role": "r", "op": "add"}));
    let nest = ev(4, 4, "nest", None, json!({"member_role": "a", "role": "b", "op": "add"}));
    let u1 = Who::User(U1.into());
    let at_s = start(5, "1:1:", &["r"], &[]);
    assert_eq!(replay_verdict(&[member(U2)], &u1, &at_s, true), None);
    assert_eq!(replay_verdict(&[member(U1)], &u1, &at_s, true), Some("access_changed"));
    assert_eq!(replay_verdict(&[nest], &Who::Anonymous, &at_s, true), None, "an anonymous caller's principals never change");
    assert_eq!(replay_verdict(&[], &u1, &at_s, false), Some("retention"));
}

#[test]
fn a_resume_replays_its_range_under_the_semantics() {
    let a = Conn::new(caller(None, false), 1 << 20);
    let mut probe = Sub {
        conn: a.clone(),
        name: "s".into(),
        collection: "c".into(),
        filter: None,
        fields: None,
        watch: None,
        who: Who::Anonymous,
        principals: anonymous(),
        start: 0,
        skip: false,
        resumed: false,
        snap: None,
        pending: None,
    };
    let text = json!([
        [6, "100", "doc", "c", {"id": "d1", "op": "insert", "version": 1, "old": null, "new": doc(U1, &["public"], json!({}), 1)}],
        [7, "101", "doc", "other", {"id": "d2", "op": "insert", "version": 1, "old": null, "new": doc(U1, &["public"], json!({}), 1)}],
        [8, "102", "doc", "c", {"id": "d3", "op": "insert", "version": 1, "old": null, "new": doc(U1, &[], json!({}), 1)}],
        [9, "103", "doc", "c", {"id": "d1", "op": "delete", "version": 1, "old": doc(U1, &["public"], json!({}), 1), "new": null}]
    ])
    .to_string();
    let events = parse_replay(&text).unwrap();
    replay_into(&mut probe, &events, 9);
    assert_eq!(types(&frames(&a)), ["insert@6", "delete@9"]);
}

#[test]
fn snapshot_visibility() {
    let s = Snap::parse("100:110:102,105").unwrap();
    assert!(s.visible(99) && s.visible(101) && s.visible(109));
    assert!(!s.visible(102) && !s.visible(105) && !s.visible(110) && !s.visible(200));
    assert!(Snap::parse("1:2").is_none() && Snap::parse("a:b:").is_none());
    assert!(!s.visible(u64::MAX), "a capture reset's event is in no snapshot");
}

/// 0.4.0's pull logs a transaction that got its xid after the pull's statement began as
/// xid − 2^32 (wrapping): read back as the transaction it is, in epoch 0 and later ones.
#[test]
fn snapshot_visibility_of_xids_logged_an_epoch_low() {
    const E: u64 = 1 << 32;
    for epoch in [0u64, 5] {
        let x = |xid: u64| epoch * E + xid;
        let s = Snap::parse(&format!("{}:{}:{}", x(827), x(834), x(827))).unwrap();
        let low = |xid: u64| x(xid).wrapping_sub(E);
        assert!(s.visible(low(823)) && s.visible(low(833)), "epoch {epoch}: committed before the snapshot");
        assert!(!s.visible(low(827)), "epoch {epoch}: running at the snapshot");
        assert!(!s.visible(low(834)) && !s.visible(low(900)), "epoch {epoch}: after the snapshot");
        // Correct values stay as they are, up to 2^31 after the snapshot and beyond.
        assert!(s.visible(x(823)) && !s.visible(x(827)) && !s.visible(x(834)));
        assert!(!s.visible(x(834) + (1 << 31) + 5), "epoch {epoch}: long after the snapshot");
    }
}

/// The e2e race's cause, at the hub: events whose transactions the start snapshot saw,
/// logged an epoch low, are skipped whether they come from the buffer or live; the
/// ones it did not see are sent once.
#[test]
fn a_snapshot_subscription_skips_what_its_snapshot_saw_even_logged_an_epoch_low() {
    const E: u64 = 1 << 32;
    let hub = Hub::new(HubConfig::default(), None);
    hub.start_at(70, &[]);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    let r = Subscribe { snapshot: true, ..req("s", json!({}), None) };
    let id = hub.register(&a, &r, None, None).unwrap();
    let upd = |p: u64, xid: u64, v: i64| {
        change(p, xid.wrapping_sub(E), "update", Some(doc(U1, &[], json!({ "v": v - 1 }), v - 1)), Some(doc(U1, &[], json!({ "v": v }), v)))
    };
    // Buffered while the start-up runs: 823 committed before the snapshot (its version
    // is in the snapshot's documents), 827 was running, 835 began after it.
    hub.apply(vec![upd(85, 823, 2), upd(86, 827, 3)]);
    assert!(matches!(hub.go_live(id, &start(78, "827:834:827", &[], &[]), true, false), Joined::Live));
    hub.apply(vec![upd(89, 833, 4), upd(90, 835, 5)]);
    assert_eq!(types(&frames(&a)), ["update@86", "update@90"], "85 and 89 are in the snapshot: not sent again");
}

/// The commit-visibility gap before S: Postgres writes a commit record (decoded and
/// appended by the capture, positions <= S) before the transaction leaves the proc
/// array, so a snapshot taken in between holds it as running (xid in its xip) and its
/// documents lack the change. Such an event must be sent once, before the events after
/// S, whether the hub applied it while the start-up ran (the pending buffer) or before
/// the subscription registered (the recent events); an event at or before S whose
/// transaction the snapshot saw is not sent.
#[test]
fn a_snapshot_subscription_gets_the_changes_before_s_its_snapshot_did_not_see_once() {
    let pub_doc = |p: u64, xid: u64| change(p, xid, "insert", None, Some(doc(U1, &["public"], json!({ "p": p }), 1)));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Snapshot: S = 14; xid 103 had its commit record decoded (position 12 or 13) but
    // was still running; 100, 101 and 104 had committed; 105 began later.
    let st = || start(14, "103:105:103", &[], &[]);
    for before_registration in [false, true] {
        let hub = Hub::new(HubConfig::default(), None);
        hub.start_at(10, &[]);
        let a = Conn::new(caller(Some(U1), false), 1 << 20);
        let r = Subscribe { snapshot: true, ..req("s", json!({}), None) };
        let early = vec![pub_doc(11, 100), pub_doc(12, 103)];
        let id = if before_registration {
            hub.apply(early.clone());
            hub.register(&a, &r, None, None).unwrap()
        } else {
            let id = hub.register(&a, &r, None, None).unwrap();
            hub.apply(early.clone());
            id
        };
        hub.apply(vec![pub_doc(13, 101), pub_doc(14, 104), pub_doc(15, 105)]);
        let late = rt.block_on(hub.late_events(&st(), "c", Some(U1))).unwrap();
        let late_positions: Vec<u64> = late.iter().map(|e| e.position).collect();
        assert_eq!(late_positions, [12], "found among the recent events, no SQL");
        assert!(matches!(hub.go_live_with(id, &st(), true, false, late), Joined::Live));
        hub.apply(vec![pub_doc(16, 106)]);
        assert_eq!(
            types(&frames(&a)),
            ["insert@12", "insert@15", "insert@16"],
            "registered {}: 12 (xid 103, not in the snapshot) once, in order; 11, 13, 14 are in it",
            if before_registration { "after 12 was applied" } else { "before" }
        );
    }
    // No running transaction: nothing at or before S is sent (and nothing is looked up).
    let hub = Hub::new(HubConfig::default(), None);
    hub.start_at(10, &[]);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    let r = Subscribe { snapshot: true, ..req("s", json!({}), None) };
    let id = hub.register(&a, &r, None, None).unwrap();
    hub.apply(vec![pub_doc(11, 100), pub_doc(12, 103), pub_doc(13, 104)]);
    let idle = start(12, "104:104:", &[], &[]);
    assert!(rt.block_on(hub.late_events(&idle, "c", Some(U1))).unwrap().is_empty());
    assert!(matches!(hub.go_live_with(id, &idle, true, false, Vec::new()), Joined::Live));
    assert_eq!(types(&frames(&a)), ["insert@13"]);
    // A plain subscription has no snapshot to fill: everything at or before S is skipped.
    let b = Conn::new(caller(Some(U1), false), 1 << 20);
    let id = hub.register(&b, &req("p", json!({}), None), None, None).unwrap();
    hub.apply(vec![pub_doc(14, 105)]);
    assert!(matches!(hub.go_live(id, &start(14, "105:106:105", &[], &[]), false, false), Joined::Live));
    assert!(frames(&b).is_empty());
}

/// When the recent events no longer hold a transaction the snapshot did not see, the
/// start-up knows which log range to read back: the exact positions of a transaction
/// whose events left the ring, or the last LATE_SPAN positions before the reader's
/// start for one running when the reader started.
#[test]
fn late_events_beyond_the_recent_ones_are_read_back_from_the_right_range() {
    let pub_doc = |p: u64, xid: u64| change(p, xid, "insert", None, Some(doc(U1, &["public"], json!({ "p": p }), 1)));
    let hub = Hub::new(HubConfig::default(), None);
    hub.start_at(50_000, &[]);
    hub.start_snapshot(&Snap::parse("90:95:90,93").unwrap());
    // 103's two events, then enough others to push them out of the ring.
    hub.apply(vec![pub_doc(50_001, 103), pub_doc(50_002, 103)]);
    let others: Vec<Arc<Event>> = (0..RECENT_EVENTS as u64).map(|i| pub_doc(50_003 + i, 200 + i)).collect();
    hub.apply(others);
    let s = 50_002 + RECENT_EVENTS as u64;
    let st = hub.lock();
    let (found, reads) = st.recent.late(&Snap::parse("103:5000:103").unwrap(), s);
    assert!(found.is_empty());
    assert_eq!(reads, [(50_000, 50_002)], "103's positions, exactly");
    let (found, reads) = st.recent.late(&Snap::parse("90:5000:90,300").unwrap(), s);
    assert_eq!(found.iter().map(|e| e.position).collect::<Vec<_>>(), [50_003 + 100], "xid 300's event is still recent");
    assert_eq!(reads, [(50_000 - LATE_SPAN, 50_000)], "90 was running at the reader's start");
    let (found, reads) = st.recent.late(&Snap::parse("96:5000:96,4999").unwrap(), s);
    assert!(found.is_empty() && reads.is_empty(), "transactions that have no event before S: nothing to read");
    drop(st);
    // Without a database the read back is an error, never a silent gap.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert!(rt.block_on(hub.late_events(&start(s, "103:5000:103", &[], &[]), "c", Some(U1))).is_err());
}

/// Counts this thread's heap bytes (tests run in parallel on other threads).
struct Counting;
thread_local! {
    static LIVE_BYTES: std::cell::Cell<isize> = const { std::cell::Cell::new(0) };
}

fn count(delta: isize) {
    // try_with: the slot may be gone while a thread exits.
    let _ = LIVE_BYTES.try_with(|b| b.set(b.get() + delta));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count(n as isize - l.size() as isize);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// 10,000 idle subscriptions (each on its own connection, as WebSocket clients
/// subscribe, each a different user with a filter): the registry's and the
/// connections' heap per subscription, this thread's allocations only. ~2,000 bytes
/// measured (docs/realtime-delivery.md); the goal for the whole proxy is 16 KiB per
/// idle WebSocket subscriber, sockets and buffers included.
#[test]
fn an_idle_subscription_is_small() {
    let hub = Hub::new(HubConfig::default(), None);
    hub.start_at(0, &[]);
    let n = 10_000;
    let before = LIVE_BYTES.with(|b| b.get());
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let u = format!("00000000-0000-0000-0000-{i:012}");
        let c = Conn::new(caller(Some(&u), false), 1 << 20);
        live(&hub, &c, req("s1", json!({"done": false}), None), start(0, "1:1:", &[], &[]));
        conns.push(c);
    }
    let after = LIVE_BYTES.with(|b| b.get());
    let per = (after - before) / n as isize;
    println!("{n} idle subscriptions: {per} bytes each (registry, index, Conn with its Outbox)");
    assert!(per < 4096, "{per} bytes per idle subscription");
    // One public change reaches every one of them.
    hub.apply(vec![change(1, 1, "insert", None, Some(doc(U1, &["public"], json!({"done": false}), 1)))]);
    assert!(conns.iter().all(|c| c.outbox.queued_bytes() > 0));
}

/// A capture reset (a gap in the log, or an unreadable event) reloads the roles: a
/// removal the reader never saw no longer grants reads, and every subscription, live
/// or starting up, is told to re-read.
#[test]
fn a_capture_reset_reloads_roles_and_resets_everyone() {
    let hub = Hub::new(HubConfig::default(), None);
    hub.start_at(10, &[]);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    live(&hub, &a, req("s", json!({}), None), start(10, "100:100:", &["team"], &[]));
    let team_doc = |p: u64| change(p, 100 + p, "insert", None, Some(doc(U2, &["role:team"], json!({}), 1)));
    hub.apply(vec![team_doc(11)]);
    assert_eq!(types(&frames(&a)), ["insert@11"]);
    let b = Conn::new(caller(Some(U2), false), 1 << 20);
    let pending = hub.register(&b, &req("t", json!({}), None), None, None).unwrap();
    // Events 12..=20 (U1 leaving the team among them) were deleted before this reader read them.
    hub.capture_reset(20, &[], &[]);
    assert_eq!(types(&frames(&a)), ["reset@20"]);
    assert_eq!(hub.position(), 20);
    hub.apply(vec![team_doc(21)]);
    assert!(frames(&a).is_empty(), "the lost removal took effect");
    assert!(matches!(hub.go_live(pending, &start(15, "100:100:", &[], &[]), false, false), Joined::Live));
    assert_eq!(types(&frames(&b)), ["reset@20", "insert@21"], "the subscription starting up was reset too");
}

/// A resume's range holds role changes: it is replayed unless one of them changed the
/// caller's principals at some position of the range (then `reset` access_changed).
/// U1 holds `team` directly; at S the graph has team -> org and x -> y.
#[test]
fn a_resume_resets_only_for_role_changes_that_changed_the_callers_principals() {
    let u1 = Who::User(U1.into());
    let at_s = start(20, "1:1:", &["team"], &[("team", "org"), ("x", "y")]);
    let nest = |p: u64, m: &str, r: &str, op: &str| ev(p, p, "nest", None, json!({"member_role": m, "role": r, "op": op}));
    let member = |p: u64, u: &str, r: &str, op: &str| ev(p, p, "member", None, json!({"user": u, "role": r, "op": op}));
    let verdict = |range: &[Arc<Event>]| replay_verdict(range, &u1, &at_s, true);
    // Unrelated to U1: nesting among roles U1 does not reach, another user's membership.
    assert_eq!(verdict(&[nest(11, "x", "y", "add")]), None, "x -> y added: U1 reaches neither");
    assert_eq!(verdict(&[nest(11, "a", "b", "add"), nest(12, "a", "b", "remove")]), None);
    assert_eq!(verdict(&[member(11, U2, "team", "add"), member(12, U2, "org", "remove")]), None, "another user's roles");
    assert_eq!(verdict(&[nest(11, "x", "y", "remove"), nest(12, "x", "y", "add")]), None, "x -> y gone for a while: U1 never reached x");
    // Changed: a role U1 holds directly, or reaches by nesting, added or removed.
    assert_eq!(verdict(&[member(11, U1, "team", "add")]), Some("access_changed"), "team joined in the range");
    assert_eq!(verdict(&[nest(11, "team", "org", "add")]), Some("access_changed"), "org reached through team from 11 on");
    assert_eq!(verdict(&[nest(11, "org", "top", "remove")]), Some("access_changed"), "top reached through org before 11");
    assert_eq!(verdict(&[nest(11, "org", "y", "remove")]), Some("access_changed"), "y reached through org before 11");
    // Added then removed (or the reverse): the same at S as at p, not in between.
    assert_eq!(verdict(&[member(11, U1, "z", "add"), member(12, U1, "z", "remove")]), Some("access_changed"), "z held between 11 and 12");
    assert_eq!(verdict(&[nest(11, "org", "z", "add"), nest(12, "org", "z", "remove")]), Some("access_changed"), "z reached by nesting between 11 and 12");
    assert_eq!(verdict(&[nest(11, "team", "org", "remove"), nest(12, "team", "org", "add")]), Some("access_changed"), "org lost between 11 and 12");
    // A second path to a role U1 reaches anyway: no change at any position.
    let two_paths = start(20, "1:1:", &["team", "org"], &[("team", "org")]);
    assert_eq!(replay_verdict(&[nest(11, "team", "org", "add")], &u1, &two_paths, true), None, "org held directly all along");
    // The service caller reads everything whatever its roles.
    assert_eq!(replay_verdict(&[nest(11, "team", "org", "add")], &Who::Service, &at_s, true), None);
}

/// The replay after such a verdict: the range's documents are judged under U1's
/// principals at S (which were U1's at every position of the range), nested role included.
#[test]
fn a_resume_over_an_unrelated_nest_change_replays_its_range() {
    let at_s = start(20, "1:1:", &["team"], &[("team", "org")]);
    let u1 = Who::User(U1.into());
    let range = [
        ev(11, 11, "nest", None, json!({"member_role": "x", "role": "y", "op": "add"})),
        change(12, 12, "insert", None, Some(doc(U2, &["role:org"], json!({}), 1))),
        change(13, 13, "update", Some(doc(U2, &["role:org"], json!({}), 1)), Some(doc(U2, &["role:y"], json!({}), 2))),
    ];
    assert_eq!(replay_verdict(&range, &u1, &at_s, true), None);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    let mut probe = Sub {
        conn: a.clone(),
        name: "s".into(),
        collection: "c".into(),
        filter: None,
        fields: None,
        watch: None,
        who: u1,
        principals: RoleGraph::from_edges([("team", "org")]).principals(U1, ["team"], false),
        start: 0,
        skip: false,
        resumed: false,
        snap: None,
        pending: None,
    };
    replay_into(&mut probe, &range, 20);
    assert_eq!(types(&frames(&a)), ["insert@12", "leave@13"], "readable through org, then only through y, which U1 does not reach");
}

/// A nesting change the start snapshot saw but captured after S (late) is news to a
/// resumed subscription only if the caller reaches the nested role: during the hand-over
/// or live, whichever it arrives in. U1 holds `team`; the graph has team -> org.
/// Arriving live, a change of U1's principals is also seen at the join: the hub's view at
/// S (without it) differs from the start's (with it), so U1 is reset there too.
#[test]
fn a_late_captured_nest_change_resets_a_resume_only_if_the_caller_reaches_its_member_role() {
    for during_hand_over in [true, false] {
        for (member_role, role, op, reset, changes_principals) in [
            ("x", "y", "add", false, false),
            ("other", "org", "add", false, false),
            ("team", "org", "remove", true, true),
            ("org", "top", "add", true, true),
            ("team", "top", "add", true, true),
            // Reached before and after, yet news: with other changes in a replayed range
            // an edge among reached roles can be the only path to one of them.
            ("org", "team", "add", true, false),
        ] {
            let hub = Hub::new(HubConfig::default(), None);
            hub.start_at(10, &[("team".to_string(), "org".to_string())]);
            let a = Conn::new(caller(Some(U1), false), 1 << 20);
            let r = Subscribe { resume: Some(5), ..req("s", json!({}), None) };
            let id = hub.register(&a, &r, None, None).unwrap();
            // Committed before the start snapshot (xid 100 < xmin 101), captured at 11 > S.
            let nest = ev(11, 100, "nest", None, json!({"member_role": member_role, "role": role, "op": op}));
            // The start's graph already holds it.
            let mut graph = vec![("team", "org")];
            if op == "add" {
                graph.push((member_role, role));
            } else {
                graph.retain(|e| *e != (member_role, role));
            }
            if during_hand_over {
                hub.apply(vec![nest.clone()]);
            }
            assert!(matches!(hub.go_live(id, &start(10, "101:101:", &["team"], &graph), false, true), Joined::Live));
            if !during_hand_over {
                hub.apply(vec![nest]);
            }
            let want: &[&str] = match (reset, changes_principals && !during_hand_over) {
                (false, _) => &[],
                (true, false) => &["reset@11"],
                (true, true) => &["reset@10", "reset@11"],
            };
            assert_eq!(types(&frames(&a)), want, "{member_role} in {role} {op}, during the hand-over: {during_hand_over}");
        }
    }
}

/// The commit-visibility window for role events: a `member` add for U1 (xid 103) was
/// decoded and appended at 12 <= S = 14, but its transaction was still running when the
/// start snapshot was taken (103 in its xip), so the start's roles lack `team`. The
/// principals as of S hold it all the same (live delivery applied it at 12): a plain
/// subscription gets team's documents after S and no reset, whether the grant was
/// applied before it registered (the recent events) or during its start-up (pending);
/// a resume over it is a reset (the client's state at 11 lacked team); a snapshot
/// subscription, whose documents were read without team, gets `reset` at 12.
#[test]
fn a_role_event_before_s_that_the_start_snapshot_did_not_see_counts_at_s() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let u1 = Who::User(U1.into());
    let team_doc = |p: u64, xid: u64| change(p, xid, "insert", None, Some(doc(U2, &["role:team"], json!({ "p": p }), 1)));
    let grant = || ev(12, 103, "member", None, json!({"user": U1, "role": "team", "op": "add"}));
    let st = || start(14, "103:105:103", &[], &[]);
    for before_registration in [false, true] {
        for snapshot in [false, true] {
            let hub = Hub::new(HubConfig::default(), None);
            hub.start_at(10, &[]);
            let a = Conn::new(caller(Some(U1), false), 1 << 20);
            let r = Subscribe { snapshot, ..req("s", json!({}), None) };
            let id = if before_registration {
                hub.apply(vec![grant()]);
                hub.register(&a, &r, None, None).unwrap()
            } else {
                let id = hub.register(&a, &r, None, None).unwrap();
                hub.apply(vec![grant()]);
                id
            };
            hub.apply(vec![team_doc(13, 104), team_doc(14, 101)]);
            let mut start = st();
            let late = rt.block_on(hub.late_events(&start, "c", Some(U1))).unwrap();
            assert_eq!(late.iter().map(|e| e.position).collect::<Vec<_>>(), [12], "found without SQL");
            let late = if snapshot {
                late
            } else {
                start.with_late_roles(&late, &u1);
                assert_eq!(start.roles, ["team"], "the roles as of S");
                Vec::new()
            };
            assert!(matches!(hub.go_live_with(id, &start, snapshot, false, late), Joined::Live));
            hub.apply(vec![team_doc(15, 105)]);
            let got = types(&frames(&a));
            let case = format!("snapshot {snapshot}, registered before the grant was applied: {}", !before_registration);
            if snapshot {
                assert_eq!(got, ["reset@12", "insert@15"], "{case}");
            } else {
                assert_eq!(got, ["insert@15"], "{case}: team's document after S, no reset");
            }
        }
    }
    // A nesting made in the window counts too: U1 holds team, team -> org is late.
    let hub = Hub::new(HubConfig::default(), None);
    hub.start_at(10, &[]);
    let a = Conn::new(caller(Some(U1), false), 1 << 20);
    let id = hub.register(&a, &req("s", json!({}), None), None, None).unwrap();
    hub.apply(vec![ev(12, 103, "nest", None, json!({"member_role": "team", "role": "org", "op": "add"}))]);
    let mut start = start(14, "103:105:103", &["team"], &[]);
    let late = rt.block_on(hub.late_events(&start, "c", Some(U1))).unwrap();
    start.with_late_roles(&late, &u1);
    assert!(matches!(hub.go_live_with(id, &start, false, false, Vec::new()), Joined::Live));
    hub.apply(vec![change(15, 105, "insert", None, Some(doc(U2, &["role:org"], json!({}), 1)))]);
    assert_eq!(types(&frames(&a)), ["insert@15"], "org reached through the late nesting, no reset");
    // A resume from 11 over the late grant: U1 lacked team at 11, holds it at S.
    let mut at_s = st();
    at_s.with_late_roles(&[grant()], &u1);
    assert_eq!(replay_verdict(&[grant(), team_doc(13, 104)], &u1, &at_s, true), Some("access_changed"));
    assert_eq!(replay_verdict(&[grant(), team_doc(13, 104)], &u1, &st(), true), None, "what the snapshot's roles alone said");
    // Another user's grant, an anonymous caller: nothing changes.
    let mut other = st();
    other.with_late_roles(&[ev(12, 103, "member", None, json!({"user": U2, "role": "team", "op": "add"}))], &u1);
    assert!(other.roles.is_empty());
    let mut anon = st();
    anon.with_late_roles(&[grant()], &Who::Anonymous);
    assert!(anon.roles.is_empty() && anon.nesting.is_empty());
}
