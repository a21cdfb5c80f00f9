//! The social graph end to end (issue 16, package D; docs/social.md): following, follow
//! requests, the `followers:<id>` ACL principal over HTTP, `baas.as_user` and the live
//! feed, and who may list an account's followers. Real cluster, real proxy, real HTTP.

mod common;
use common::files::{bucket, download, file_path, upload_ok};
use common::lifecycle::*;
use common::*;
use pgbaas_testkit::realtime::Sse;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn follow(who: &User, whom: &str) -> Resp {
    call("PUT", &format!("/v1/users/{whom}/follow"), Some(&who.access), None)
}

fn unfollow(who: &User, whom: &str) -> Resp {
    call("DELETE", &format!("/v1/users/{whom}/follow"), Some(&who.access), None)
}

fn profile(who: &User, body: Value) -> Resp {
    call("PATCH", "/v1/auth/user/profile", Some(&who.access), Some(&body.to_string()))
}

fn status(c: &str, id: &str, token: Option<&str>) -> u16 {
    call("GET", &doc_path(c, id), token, None).status
}

/// Ids of `c`'s documents that `user` (None: no token) reads through `baas.as_user`.
fn as_user_ids(user: Option<&str>, c: &str) -> BTreeSet<String> {
    let q = format!("select d.id::text from baas.documents d join baas.collections c on c.id = d.collection_id where c.name = '{c}'");
    let rows = admin().query("select x #>> '{}' from baas.as_user($1::text::uuid, $2) x", &[&user, &q]).unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

/// anonymous_sign_in is a database-wide setting: the test that turns it on holds this.
fn anonymous_setting() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    set_setting("anonymous_sign_in", "true");
    g
}

fn anonymous_account() -> (String, String) {
    let r = post("/v1/auth/anonymous", None, json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    (r.body["user"]["id"].as_str().unwrap().to_string(), r.body["access_token"].as_str().unwrap().to_string())
}

/// A document shared with an account's followers is readable by a follower from the
/// request after the follow, and by nobody else; after an unfollow it is gone again.
/// The same holds for a file, and through `baas.as_user`.
#[test]
fn following_opens_a_followers_document_and_unfollowing_closes_it() {
    let a = signup("soc_a");
    let b = signup("soc_b");
    let c = collection("socfol", json!({}));
    let doc = create_doc(&c, Some(&a.access), json!({"for": "followers"}), Some(json!({"read": [format!("followers:{}", a.id)]})));
    let bk = bucket("socfolf", json!({}));
    let file = upload_ok(Some(&a.access), &bk, "f.txt", b"for my followers", "text/plain");
    let file_id = file["id"].as_str().unwrap().to_string();
    let r = call("PUT", &format!("/v1/files/{file_id}/acl"), Some(&a.access), Some(&json!({"read": [format!("followers:{}", a.id)]}).to_string()));
    assert_eq!(r.status, 200, "{}", r.body);

    assert_eq!(status(&c, &doc, Some(&b.access)), 404, "not yet a follower");
    assert_eq!(download(Some(&b.access), &file_path(&file_id), &[]).status, 404);
    assert!(as_user_ids(Some(&b.id), &c).is_empty());

    let r = follow(&b, &a.id);
    assert_eq!((r.status, r.body.clone()), (200, json!({"status": "accepted"})), "{}", r.body);
    assert_eq!(status(&c, &doc, Some(&b.access)), 200, "the next request reads it");
    let d = download(Some(&b.access), &file_path(&file_id), &[]);
    assert_eq!((d.status, d.body.as_slice()), (200, &b"for my followers"[..]));
    assert_eq!(as_user_ids(Some(&b.id), &c), BTreeSet::from([doc.clone()]), "as_user = HTTP");
    assert_eq!(follow(&b, &a.id).body, json!({"status": "accepted"}), "following again changes nothing");
    let p: Value = admin().query_one("select baas.as_user($1::text::uuid, 'select baas.principals()')", &[&b.id]).unwrap().get(0);
    assert!(p.as_array().unwrap().contains(&json!(format!("followers:{}", a.id))), "{p}");

    let r = unfollow(&b, &a.id);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(status(&c, &doc, Some(&b.access)), 404, "the next request no longer reads it");
    assert_eq!(download(Some(&b.access), &file_path(&file_id), &[]).status, 404);
    assert!(as_user_ids(Some(&b.id), &c).is_empty());
    let r = unfollow(&b, &a.id);
    assert_eq!((r.status, r.code()), (404, "follow_not_found"), "{}", r.body);
}

/// Who reads what, for a writer's documents shared with its followers, with another
/// account's followers, with one user, with registered accounts, with everyone and with
/// nobody: owner, accepted follower, pending follower, registered stranger, anonymous
/// account and no token. HTTP GET, the HTTP listing and baas.as_user agree.
#[test]
fn permission_matrix_over_http_equals_as_user() {
    let _g = anonymous_setting();
    let w = signup("soc_mw");
    let other = signup("soc_mo");
    let f = signup("soc_mf");
    let p = signup("soc_mp");
    let s = signup("soc_ms");
    let (n_id, n_access) = anonymous_account();
    // f follows w (accepted) and other's followers are named too, but f does not follow other.
    assert_eq!(follow(&f, &w.id).body["status"], "accepted");
    assert_eq!(profile(&w, json!({"follow_approval": true})).status, 200);
    assert_eq!(follow(&p, &w.id).body["status"], "pending");
    assert_eq!(follow(&s, &other.id).body["status"], "accepted", "s follows someone else");

    let c = collection("socmx", json!({}));
    let mut ids = BTreeMap::new();
    for (name, acl) in [
        ("followers_w", json!([format!("followers:{}", w.id)])),
        ("followers_other", json!([format!("followers:{}", other.id)])),
        ("user_f", json!([format!("user:{}", f.id)])),
        ("registered", json!(["registered"])),
        ("public", json!(["public"])),
        ("nobody", json!([])),
    ] {
        ids.insert(name, create_doc(&c, Some(&w.access), json!({"n": name}), Some(json!({"read": acl}))));
    }
    let set = |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| ids[n].clone()).collect() };
    let all: Vec<&str> = ids.keys().copied().collect();
    let cases: Vec<(&str, Option<&str>, Option<&str>, BTreeSet<String>)> = vec![
        ("owner", Some(&w.access), Some(&w.id), set(&all)),
        ("accepted follower", Some(&f.access), Some(&f.id), set(&["followers_w", "user_f", "registered", "public"])),
        ("pending follower", Some(&p.access), Some(&p.id), set(&["registered", "public"])),
        ("stranger following another", Some(&s.access), Some(&s.id), set(&["followers_other", "registered", "public"])),
        ("anonymous account", Some(&n_access), Some(&n_id), set(&["public"])),
        ("no token", None, None, set(&["public"])),
    ];
    for (what, token, uid, expected) in &cases {
        let http: BTreeSet<String> = listed_ids(&c, *token).into_iter().collect();
        assert_eq!(&http, expected, "{what}: HTTP listing");
        assert_eq!(&as_user_ids(*uid, &c), expected, "{what}: baas.as_user = HTTP");
        for (name, id) in &ids {
            let st = status(&c, id, *token);
            assert_eq!(st == 200, expected.contains(id), "{what}: GET of the {name} document gave {st}");
        }
    }
    // Anonymous accounts neither follow nor are followed.
    let r = call("PUT", &format!("/v1/users/{}/follow", w.id), Some(&n_access), None);
    assert_eq!((r.status, r.code()), (403, "anonymous_not_allowed"), "{}", r.body);
    let r = follow(&f, &n_id);
    assert_eq!((r.status, r.code()), (404, "user_not_found"), "{}", r.body);
}

/// With follow_approval a follow waits for the account: requests are listed, accepted,
/// declined, and a follower can be removed, each changing what the follower reads.
#[test]
fn approval_requests_accept_decline_and_remove() {
    let a = signup("soc_pa");
    let b = signup("soc_pb");
    let r = profile(&a, json!({"follow_approval": true, "graph_visibility": "followers"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["user"]["follow_approval"].clone(), r.body["user"]["graph_visibility"].clone()), (json!(true), json!("followers")));
    let c = collection("socap", json!({}));
    let doc = create_doc(&c, Some(&a.access), json!({}), Some(json!({"read": [format!("followers:{}", a.id)]})));

    assert_eq!(follow(&b, &a.id).body, json!({"status": "pending"}));
    assert_eq!(status(&c, &doc, Some(&b.access)), 404, "pending reads nothing");
    let reqs = call("GET", "/v1/auth/follow-requests", Some(&a.access), None);
    assert_eq!(reqs.status, 200, "{}", reqs.body);
    assert_eq!(reqs.body["items"].as_array().unwrap().iter().map(|i| i["id"].clone()).collect::<Vec<_>>(), vec![json!(b.id)]);
    assert_eq!(call("GET", "/v1/auth/follow-requests", Some(&b.access), None).body["items"], json!([]), "b has none");
    let r = call("PUT", &format!("/v1/auth/follow-requests/{}", b.id), Some(&a.access), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(status(&c, &doc, Some(&b.access)), 200, "accepted");
    assert_eq!(follow(&b, &a.id).body, json!({"status": "accepted"}));
    let r = call("PUT", &format!("/v1/auth/follow-requests/{}", b.id), Some(&a.access), None);
    assert_eq!((r.status, r.code()), (404, "follow_not_found"), "nothing pending any more");

    let r = call("DELETE", &format!("/v1/auth/followers/{}", b.id), Some(&a.access), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(status(&c, &doc, Some(&b.access)), 404, "removed");
    assert_eq!(follow(&b, &a.id).body, json!({"status": "pending"}), "asks again");
    let r = call("DELETE", &format!("/v1/auth/follow-requests/{}", b.id), Some(&a.access), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(call("GET", "/v1/auth/follow-requests", Some(&a.access), None).body["items"], json!([]));
    assert_eq!(status(&c, &doc, Some(&b.access)), 404);
    let r = call("DELETE", &format!("/v1/auth/followers/{}", b.id), Some(&a.access), None);
    assert_eq!((r.status, r.code()), (404, "follow_not_found"));

    // Turning approval off accepts the requests waiting, but not b's: a declined b.
    let d = signup("soc_pd");
    assert_eq!(follow(&d, &a.id).body, json!({"status": "pending"}));
    assert_eq!(follow(&b, &a.id).body, json!({"status": "pending"}));
    assert_eq!(profile(&a, json!({"follow_approval": false})).status, 200);
    assert_eq!(status(&c, &doc, Some(&d.access)), 200);
    assert_eq!(status(&c, &doc, Some(&b.access)), 404, "a declined follower still waits");
    assert_eq!(follow(&b, &a.id).body, json!({"status": "pending"}));
}

/// A removal sticks: with follow_approval off, a removed follower that follows again
/// waits for the account (pending) and reads nothing shared with its followers until
/// the account accepts it; accepting forgives the removal.
#[test]
fn a_removed_follower_must_be_accepted_again() {
    let a = signup("soc_ra");
    let b = signup("soc_rb");
    let c = collection("socrm", json!({}));
    let doc = create_doc(&c, Some(&a.access), json!({}), Some(json!({"read": [format!("followers:{}", a.id)]})));
    assert_eq!(follow(&b, &a.id).body, json!({"status": "accepted"}), "no approval needed");
    assert_eq!(status(&c, &doc, Some(&b.access)), 200);

    let r = call("DELETE", &format!("/v1/auth/followers/{}", b.id), Some(&a.access), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(status(&c, &doc, Some(&b.access)), 404, "removed");
    let r = follow(&b, &a.id);
    assert_eq!((r.status, r.body.clone()), (200, json!({"status": "pending"})), "follows again: waits");
    assert_eq!(status(&c, &doc, Some(&b.access)), 404, "a pending follow reads nothing");
    let reqs = call("GET", "/v1/auth/follow-requests", Some(&a.access), None);
    assert_eq!(reqs.body["items"][0]["id"], json!(b.id), "{}", reqs.body);

    let r = call("PUT", &format!("/v1/auth/follow-requests/{}", b.id), Some(&a.access), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(status(&c, &doc, Some(&b.access)), 200, "accepted");
    // Accepted again: an unfollow and a new follow need no approval.
    assert_eq!(unfollow(&b, &a.id).status, 204);
    assert_eq!(follow(&b, &a.id).body, json!({"status": "accepted"}));
    assert_eq!(status(&c, &doc, Some(&b.access)), 200);
}

/// Refusals are 4xx naming the problem; nothing changes.
#[test]
fn bad_follows_are_refused() {
    let a = signup("soc_ba");
    let r = follow(&a, &a.id);
    assert_eq!((r.status, r.code()), (400, "cannot_follow_self"), "{}", r.body);
    let r = follow(&a, "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
    assert_eq!((r.status, r.code()), (404, "user_not_found"), "{}", r.body);
    let r = call("PUT", &format!("/v1/users/{}/follow", a.id), None, None);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call("PUT", "/v1/users/not-a-uuid/follow", Some(&a.access), None);
    assert_eq!(r.status / 100, 4, "{}", r.body);
    // A suspended account cannot be followed.
    let s = signup("soc_bs");
    assert_eq!(service("PUT", &format!("/v1/admin/users/{}/suspension", s.id), Some(json!({}))).status, 200);
    let r = follow(&a, &s.id);
    assert_eq!((r.status, r.code()), (404, "user_not_found"), "{}", r.body);
    // An ACL may name the followers of an existing account only.
    let c = collection("socbad", json!({}));
    let r = post(&docs_path(&c), Some(&a.access), json!({"data": {}, "acl": {"read": ["followers:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]}}));
    assert_eq!((r.status, r.code()), (400, "unknown_principal"), "{}", r.body);
    let r = post(&docs_path(&c), Some(&a.access), json!({"data": {}, "acl": {"read": ["followers:nope"]}}));
    assert_eq!((r.status, r.code()), (400, "invalid_acl"), "{}", r.body);
    let r = profile(&a, json!({"graph_visibility": "everyone"}));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = profile(&a, json!({}));
    assert_eq!(r.status, 400, "{}", r.body);
}

/// An account's followers and followees are listed to whom its graph_visibility says,
/// page by page.
#[test]
fn graph_visibility_tiers_and_paging() {
    let owner = signup("soc_go");
    let fans: Vec<User> = (0..3).map(|i| signup(&format!("soc_gf{i}"))).collect();
    for f in &fans {
        assert_eq!(follow(f, &owner.id).status, 200);
    }
    let stranger = signup("soc_gs");
    let list = |token: Option<&str>, q: &str| call("GET", &format!("/v1/users/{}/followers{q}", owner.id), token, None);
    let ids = |r: &Resp| -> Vec<String> { r.body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect() };
    let fan_ids: Vec<String> = fans.iter().map(|f| f.id.clone()).collect();

    // self (the default): only the owner.
    assert_eq!(ids(&list(Some(&owner.access), "")), fan_ids, "the owner sees them in follow order");
    for (what, t) in [("follower", Some(fans[0].access.as_str())), ("stranger", Some(stranger.access.as_str())), ("no token", None)] {
        let r = list(t, "");
        assert_eq!((r.status, r.code()), (404, "user_not_found"), "{what}: {}", r.body);
    }
    // followers: the owner's accepted followers too.
    assert_eq!(profile(&owner, json!({"graph_visibility": "followers"})).status, 200);
    assert_eq!(ids(&list(Some(&fans[1].access), "")), fan_ids);
    assert_eq!(list(Some(&stranger.access), "").status, 404);
    // users: any full account; public: anyone.
    assert_eq!(profile(&owner, json!({"graph_visibility": "users"})).status, 200);
    assert_eq!(ids(&list(Some(&stranger.access), "")), fan_ids);
    assert_eq!(list(None, "").status, 404);
    assert_eq!(profile(&owner, json!({"graph_visibility": "public"})).status, 200);
    assert_eq!(ids(&list(None, "")), fan_ids);

    // Paging: limit and after.
    let p1 = list(None, "?limit=2");
    assert_eq!(ids(&p1), fan_ids[..2].to_vec());
    let next = p1.body["next"].as_str().unwrap().to_string();
    assert_eq!(next, fan_ids[1]);
    let p2 = list(None, &format!("?limit=2&after={next}"));
    assert_eq!(ids(&p2), fan_ids[2..].to_vec());
    assert!(p2.body.get("next").is_none(), "{}", p2.body);
    for bad in ["?limit=0", "?limit=5000", "?after=x", "?where=%7B%7D"] {
        let r = list(None, bad);
        assert_eq!((r.status, r.code()), (400, "invalid_query"), "{bad}: {}", r.body);
    }
    // following: the fan's own list follows the fan's setting (self by default).
    let r = call("GET", &format!("/v1/users/{}/following", fans[0].id), Some(&fans[0].access), None);
    assert_eq!(ids(&r), vec![owner.id.clone()]);
    assert!(r.body["items"][0]["since"].is_string(), "{}", r.body);
    assert_eq!(call("GET", &format!("/v1/users/{}/following", fans[0].id), Some(&owner.access), None).status, 404);
}

/// Document ids of the `insert` events an SSE stream delivers within `wait`.
fn streamed_inserts(sse: &mut Sse, wait: Duration) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let deadline = Instant::now() + wait;
    while let Some(m) = sse.next_json(deadline.saturating_duration_since(Instant::now())) {
        if m["type"] == "insert" {
            ids.insert(m["document"]["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

/// The live feed applies follows as HTTP does: a follower's stream gets the followee's
/// followers-only documents written after the follow, and none after the unfollow.
#[test]
fn realtime_delivers_to_followers_only_while_they_follow() {
    let a = signup("soc_ra");
    let b = signup("soc_rb");
    let c = collection("socrt", json!({}));
    let acl = json!({"read": [format!("followers:{}", a.id)]});
    let mut sse = Sse::open(env().proxy.port, &c, "", Some(&b.access), None).unwrap_or_else(|e| panic!("{e:?}"));
    let m = sse.next_json(Duration::from_secs(10)).expect("a subscribed frame");
    assert_eq!(m["type"], "subscribed", "{m}");

    let before = create_doc(&c, Some(&a.access), json!({"n": 1}), Some(acl.clone()));
    assert_eq!(follow(&b, &a.id).status, 200);
    let during = create_doc(&c, Some(&a.access), json!({"n": 2}), Some(acl.clone()));
    let got = streamed_inserts(&mut sse, Duration::from_secs(4));
    assert_eq!(got, BTreeSet::from([during.clone()]), "only the document written while b follows (before: {before})");

    assert_eq!(unfollow(&b, &a.id).status, 204);
    let after = create_doc(&c, Some(&a.access), json!({"n": 3}), Some(acl.clone()));
    let marker = create_doc(&c, Some(&a.access), json!({"n": 4}), Some(json!({"read": ["registered"]})));
    let got = streamed_inserts(&mut sse, Duration::from_secs(4));
    assert_eq!(got, BTreeSet::from([marker]), "after the unfollow only the registered document (not {after})");
    // And HTTP agrees.
    assert_eq!(status(&c, &during, Some(&b.access)), 404);
}

/// GET /v1/users/{id}.profile for one viewer (None: not found).
fn seen_profile(id: &str, token: Option<&str>) -> Option<Value> {
    let r = call("GET", &format!("/v1/users/{id}"), token, None);
    match r.status {
        200 => Some(r.body["profile"].clone()),
        404 => {
            assert_eq!(r.code(), "user_not_found", "{}", r.body);
            None
        }
        s => panic!("GET /v1/users/{id} gave {s}: {}", r.body),
    }
}

/// The same through baas.as_user (None: user_not_found).
fn as_user_profile(id: &str, viewer: Option<&str>) -> Option<Value> {
    let q = format!("select baas.get_profile('{id}')");
    match admin().query_one("select baas.as_user($1::text::uuid, $2) x", &[&viewer, &q]) {
        Ok(row) => {
            let v: Value = row.get(0);
            Some(v["profile"].clone())
        }
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
            assert_eq!(db.detail(), Some("user_not_found"), "{e}");
            None
        }
    }
}

/// Each tier of a profile reaches exactly its viewers: public everyone, users signed-in
/// full accounts, followers accepted followers and the account itself; a pending
/// follower is a stranger; an anonymous account and no token see the public tier. HTTP
/// and baas.as_user agree; an account with nothing public is a 404 to them.
#[test]
fn profile_tiers_matrix_over_http_equals_as_user() {
    let _g = anonymous_setting();
    let owner = signup("soc_po");
    let f = signup("soc_pf");
    let p = signup("soc_pp");
    let s = signup("soc_ps");
    let (n_id, n_access) = anonymous_account();
    let name = format!("owner_{}", std::process::id());
    let r = profile(&owner, json!({"username": name.to_uppercase(), "profile": {
        "public": {"name": "Ann", "bio": "public bio"},
        "users": {"bio": "users bio", "city": "Porto"},
        "followers": {"phone": "123"}}}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["username"], json!(name), "lower-cased");
    assert_eq!(r.body["user"]["profile"]["users"], json!({"bio": "users bio", "city": "Porto"}));
    assert_eq!(follow(&f, &owner.id).body["status"], "accepted");
    assert_eq!(profile(&owner, json!({"follow_approval": true})).status, 200);
    assert_eq!(follow(&p, &owner.id).body["status"], "pending");

    let public = json!({"name": "Ann", "bio": "public bio"});
    let users = json!({"name": "Ann", "bio": "users bio", "city": "Porto"});
    let followers = json!({"name": "Ann", "bio": "users bio", "city": "Porto", "phone": "123"});
    let cases: Vec<(&str, Option<&str>, Option<&str>, Value)> = vec![
        ("the account", Some(&owner.access), Some(&owner.id), followers.clone()),
        ("accepted follower", Some(&f.access), Some(&f.id), followers.clone()),
        ("pending follower", Some(&p.access), Some(&p.id), users.clone()),
        ("registered stranger", Some(&s.access), Some(&s.id), users.clone()),
        ("anonymous account", Some(&n_access), Some(&n_id), public.clone()),
        ("no token", None, None, public.clone()),
    ];
    for (what, token, uid, expected) in &cases {
        assert_eq!(seen_profile(&owner.id, *token).as_ref(), Some(expected), "{what}: HTTP");
        assert_eq!(as_user_profile(&owner.id, *uid).as_ref(), Some(expected), "{what}: as_user = HTTP");
    }
    let r = call("GET", &format!("/v1/users/{}", owner.id), Some(&s.access), None);
    assert_eq!(r.body["username"], json!(name));
    assert!(r.body.get("followers").is_none(), "graph private: no counts: {}", r.body);
    assert_eq!(profile(&owner, json!({"graph_visibility": "public"})).status, 200);
    let r = call("GET", &format!("/v1/users/{}", owner.id), None, None);
    assert_eq!((r.body["followers"].clone(), r.body["following"].clone()), (json!(1), json!(0)), "{}", r.body);

    // Merge patch per tier: null removes a key; the other tiers stay.
    let r = profile(&owner, json!({"profile": {"public": {"bio": null}}}));
    assert_eq!(r.body["user"]["profile"]["public"], json!({"name": "Ann"}), "{}", r.body);
    assert_eq!(r.body["user"]["profile"]["followers"], json!({"phone": "123"}));

    // Nothing public and a private graph: a 404 to those without an account.
    let quiet = signup("soc_pq");
    assert_eq!(seen_profile(&quiet.id, None), None);
    assert_eq!(as_user_profile(&quiet.id, None), None);
    assert_eq!(seen_profile(&quiet.id, Some(&n_access)), None);
    assert_eq!(seen_profile(&quiet.id, Some(&s.access)), None, "nothing visible: a 404 to a full account too");
    assert_eq!(as_user_profile(&quiet.id, Some(&s.id)), None);
    assert_eq!(seen_profile(&quiet.id, Some(&quiet.access)), Some(json!({})), "the account sees its own (empty) profile");
    assert_eq!(seen_profile(&n_id, Some(&s.access)), None, "anonymous accounts have no profile");
    assert_eq!(seen_profile("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", Some(&s.access)), None);

    // Bad input.
    for (body, code) in [
        (json!({"username": "a"}), "invalid_username"),
        (json!({"username": "no spaces"}), "invalid_username"),
        (json!({"profile": {"secret": {}}}), "invalid_request"),
        (json!({"profile": {"public": [1]}}), "invalid_request"),
        (json!({"findable": "all"}), "invalid_request"),
        (json!({"language": "not a tag"}), "invalid_request"),
    ] {
        let r = profile(&s, body.clone());
        assert_eq!((r.status, r.code()), (400, code), "{body}: {}", r.body);
    }
    let r = profile(&s, json!({"username": name}));
    assert_eq!((r.status, r.code()), (409, "username_taken"), "{}", r.body);
    let r = profile(&s, json!({"profile": {"public": {"big": "x".repeat(70_000)}}}));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = call("PATCH", "/v1/auth/user/profile", Some(&n_access), Some(r#"{"username": "anon_name"}"#));
    assert_eq!((r.status, r.code()), (403, "anonymous_not_allowed"), "{}", r.body);
}

fn lookup(token: Option<&str>, body: Value) -> Resp {
    call("POST", "/v1/users/lookup", token, Some(&body.to_string()))
}

/// Lookup finds an account by exact email or username as its `findable` allows;
/// unknown and unfindable look the same; anonymous accounts cannot look up.
#[test]
fn lookup_by_email_or_username_follows_findable() {
    let target = signup("soc_lt");
    let seeker = signup("soc_ls");
    let fan = signup("soc_lf");
    let uname = format!("target_{}", std::process::id());
    assert_eq!(profile(&target, json!({"username": uname, "profile": {"public": {"n": 1}, "users": {"u": 2}}})).status, 200);
    assert_eq!(follow(&fan, &target.id).status, 200);

    // An address nobody verified finds nothing (anyone could have signed up with it);
    // the username does.
    let unverified = lookup(Some(&seeker.access), json!({"email": target.email}));
    let unknown = lookup(Some(&seeker.access), json!({"email": email("nobody")}));
    assert_eq!((unverified.status, unverified.code()), (404, "user_not_found"), "{}", unverified.body);
    assert_eq!(unverified.body, unknown.body, "unverified = unknown");
    assert_eq!(lookup(Some(&seeker.access), json!({"username": uname})).status, 200);
    admin().execute("update baas.users set email_verified_at = now() where id = $1::text::uuid", &[&target.id]).unwrap();

    // users (the default): any full account, by email (any case) or username.
    let r = lookup(Some(&seeker.access), json!({"email": target.email.to_uppercase()}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"id": target.id, "username": uname, "profile": {"n": 1, "u": 2}}));
    let r = lookup(Some(&seeker.access), json!({"username": uname}));
    assert_eq!(r.body["id"], json!(target.id), "{}", r.body);

    // followers: the stranger gets what an unknown address gets.
    assert_eq!(profile(&target, json!({"findable": "followers"})).status, 200);
    let hidden = lookup(Some(&seeker.access), json!({"email": target.email}));
    let unknown = lookup(Some(&seeker.access), json!({"email": email("nobody")}));
    assert_eq!((hidden.status, hidden.code()), (404, "user_not_found"), "{}", hidden.body);
    assert_eq!((hidden.status, hidden.body.clone()), (unknown.status, unknown.body.clone()), "unfindable = unknown");
    assert_eq!(lookup(Some(&fan.access), json!({"email": target.email})).status, 200, "a follower finds it");
    // self: nobody else.
    assert_eq!(profile(&target, json!({"findable": "self"})).status, 200);
    assert_eq!(lookup(Some(&fan.access), json!({"username": uname})).status, 404);
    assert_eq!(lookup(Some(&target.access), json!({"username": uname})).status, 200, "itself");

    // Exactly one of the two; a signed-in full account only.
    let r = lookup(Some(&seeker.access), json!({"email": target.email, "username": uname}));
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.body);
    assert_eq!(lookup(Some(&seeker.access), json!({})).status, 400);
    assert_eq!(lookup(None, json!({"username": uname})).status, 401);
    let audited: i64 = admin()
        .query_one("select count(*) from baas.audit_log where action = 'user.lookup' and actor = $1::text::uuid", &[&seeker.id])
        .unwrap()
        .get(0);
    assert_eq!(audited, 3, "each look-up that found an account is audited (a 404 rolls back)");
}

/// Look-ups are rate limited per account: the eleventh in a minute is a 429.
#[test]
fn lookup_is_rate_limited_per_account() {
    let seeker = signup("soc_rl");
    let other = signup("soc_rl2");
    // A proxy of its own with the rate limits on (the shared one runs without them).
    let url = env().cluster.authenticator_url().unwrap();
    let limited = pgbaas_testkit::Proxy::start(&url, &["--rate-limits", "on"]).unwrap();
    let at = |who: &User, name: &str| {
        let body = json!({"username": name}).to_string();
        request_at(&limited.base(), "POST", "/v1/users/lookup", Some(&who.access), &[], Some(&body))
    };
    let statuses: Vec<u16> = (0..12).map(|i| at(&seeker, &format!("nobody_{i}")).status).collect();
    assert!(statuses.contains(&404) && statuses.contains(&429), "{statuses:?}");
    let r = at(&seeker, "nobody_x");
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("Retry-After").is_some());
    assert_eq!(at(&other, "nobody_x").status, 404, "another account is not limited");
}

/// The directory: GET /v1/users?where= filters over the profile tiers the caller may
/// see; a hidden field never matches; order, limit, after and fields work as for
/// documents; HTTP and baas.as_user agree.
#[test]
fn directory_filters_only_what_the_caller_may_see() {
    let tag = format!("dir{}", std::process::id());
    let a = signup("soc_da");
    let b = signup("soc_db");
    let viewer = signup("soc_dv");
    assert_eq!(profile(&a, json!({"username": format!("{tag}_a"), "profile": {"public": {"tag": tag, "n": 2}, "users": {"city": "Porto"}, "followers": {"secret": "x"}}})).status, 200);
    assert_eq!(profile(&b, json!({"profile": {"public": {"tag": tag, "n": 1}, "users": {"city": "Lisbon"}}})).status, 200);
    let find = |token: Option<&str>, q: &str| {
        let r = call("GET", &format!("/v1/users?{q}"), token, None);
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        r.body
    };
    let ids = |v: &Value| -> Vec<String> { v["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect() };
    let w = |f: Value| format!("where={}", enc(&f.to_string()));

    // Public fields: anyone, ordered.
    let all = find(None, &format!("{}&order=n", w(json!({"tag": tag}))));
    assert_eq!(ids(&all), vec![b.id.clone(), a.id.clone()], "{all}");
    assert_eq!(all["items"][1], json!({"id": a.id, "username": format!("{tag}_a"), "profile": {"tag": tag, "n": 2}}));
    // The users tier: a signed-in full account matches on it, no token does not.
    let porto = w(json!({"tag": tag, "city": "Porto"}));
    assert_eq!(ids(&find(Some(&viewer.access), &porto)), vec![a.id.clone()]);
    assert_eq!(ids(&find(None, &porto)), Vec::<String>::new(), "a hidden field never matches");
    // The followers tier: only a follower.
    let secret = w(json!({"tag": tag, "secret": "x"}));
    assert_eq!(ids(&find(Some(&viewer.access), &secret)), Vec::<String>::new());
    assert_eq!(follow(&viewer, &a.id).status, 200);
    assert_eq!(ids(&find(Some(&viewer.access), &secret)), vec![a.id.clone()]);
    // as_user answers the same.
    let q = format!("select baas.find_users('{{\"tag\": \"{tag}\", \"city\": \"Porto\"}}')");
    for (who, expected) in [(Some(viewer.id.as_str()), vec![a.id.clone()]), (None, vec![])] {
        let v: Value = admin().query_one("select baas.as_user($1::text::uuid, $2)", &[&who, &q]).unwrap().get(0);
        assert_eq!(ids(&v), expected, "as_user({who:?})");
    }
    // Paging and fields.
    let p1 = find(None, &format!("{}&order=n&limit=1", w(json!({"tag": tag}))));
    assert_eq!(ids(&p1), vec![b.id.clone()]);
    let next = p1["next"].as_str().unwrap();
    let p2 = find(None, &format!("{}&order=n&limit=1&after={next}", w(json!({"tag": tag}))));
    assert_eq!(ids(&p2), vec![a.id.clone()]);
    let f = find(Some(&viewer.access), &format!("{}&order=n&fields=city", w(json!({"tag": tag}))));
    assert_eq!(f["items"][0]["profile"], json!({"city": "Lisbon"}), "{f}");
    // Bad queries are 400 invalid_query.
    // updated_at would tell when an account changed hidden data; offset is capped.
    for bad in ["where=%7B%22%24bad%22%3A1%7D", "limit=5000", "where=%7B", "order=updated_at", "order=n,-updated_at", "offset=10001"] {
        let r = call("GET", &format!("/v1/users?{bad}"), None, None);
        assert_eq!((r.status, r.code()), (400, "invalid_query"), "{bad}: {}", r.body);
    }
    assert_eq!(ids(&find(None, &format!("{}&offset=10000", w(json!({"tag": tag}))))), Vec::<String>::new());
    let q = "select baas.find_users('{}', '-updated_at')";
    let e = admin().query_one("select baas.as_user(null::uuid, $1)", &[&q]).unwrap_err();
    assert_eq!(e.as_db_error().and_then(|d| d.detail()), Some("invalid_query"), "{e}");
}

/// The directory is rate limited per client IP, as sign-ins are.
#[test]
fn directory_is_rate_limited_per_ip() {
    let url = env().cluster.authenticator_url().unwrap();
    let limited = pgbaas_testkit::Proxy::start(&url, &["--rate-limits", "on", "--rate-limit-auth-per-minute", "3"]).unwrap();
    let statuses: Vec<u16> = (0..5).map(|_| request_at(&limited.base(), "GET", "/v1/users?limit=1", None, &[], None).status).collect();
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");
}
