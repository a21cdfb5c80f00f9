//! Account administration end to end (issue 16): suspension and reactivation, the
//! sessions a user sees and ends, an administrator's view of them, and what happens to a
//! deleted owner's documents. Real cluster, real proxy, real HTTP.

mod common;
use common::lifecycle::*;
use common::*;
use pgbaas_testkit::realtime::Sse;
use serde_json::{json, Value};
use std::time::Duration;

fn port() -> u16 {
    env().proxy.port
}

#[test]
fn suspension_ends_every_session_and_stream_and_refuses_sign_in_until_reactivated() {
    let c = collection("susp", json!({}));
    let u = signup("susp");
    let other = login_as(&u, "second-device/1");
    let mut sse = Sse::open(port(), &c, "", Some(&u.access), None).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(call("GET", "/v1/auth/user", Some(&u.access), None).status, 200);

    // Only a service token may suspend.
    let path = format!("/v1/admin/users/{}/suspension", u.id);
    let r = call("PUT", &path, Some(&u.access), Some(r#"{"reason": "me"}"#));
    assert_eq!(r.status, 403, "{}", r.body);

    let r = service("PUT", &path, Some(json!({"reason": "spam reports"})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], u.id.as_str());
    assert_eq!(r.body["suspended"], true, "{}", r.body);
    assert_eq!(r.body["suspended_reason"], "spam reports");

    // The open stream is closed, and every token of every session stops working.
    assert_eq!(closing_sse(&mut sse, Duration::from_secs(10))["reason"], "session_ended");
    for t in [&u.access, &other] {
        let r = call("GET", "/v1/auth/user", Some(t), None);
        assert_eq!((r.status, r.code()), (401, "invalid_token"), "{}", r.body);
    }
    let r = post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh}));
    assert_eq!(r.status, 401, "{}", r.body);
    // Signing in is refused with its own code, the right password notwithstanding.
    let r = post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD}));
    assert_eq!((r.status, r.code()), (403, "account_suspended"), "{}", r.body);
    assert!(r.body.get("access_token").is_none(), "{}", r.body);
    // An anonymous caller cannot lift it.
    assert_eq!(call("DELETE", &path, None, None).status, 401);

    let r = service("DELETE", &path, None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["suspended"], false, "{}", r.body);
    assert!(r.body["suspended_reason"].is_null());
    let r = post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD}));
    assert_eq!(r.status, 200, "{}", r.body);
    let fresh = r.body["access_token"].as_str().unwrap();
    assert_eq!(call("GET", "/v1/auth/user", Some(fresh), None).status, 200);
    // The sessions that suspension ended stay ended.
    assert_eq!(call("GET", "/v1/auth/user", Some(&u.access), None).status, 401);

    let audit: Vec<String> = admin()
        .query("select action from baas.audit_log where user_id = $1::text::uuid and action like 'user.%' order by id", &[&u.id])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audit, ["user.suspend", "user.reactivate"]);

    let r = service("PUT", "/v1/admin/users/00000000-0000-7000-8000-000000000000/suspension", Some(json!({})));
    assert_eq!((r.status, r.code()), (404, "user_not_found"), "{}", r.body);
    let r = service("PUT", &path, Some(json!({"reason": "x".repeat(501)})));
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn a_user_lists_its_sessions_with_user_agent_and_address_and_ends_them() {
    let u = signup("sess");
    let phone = login_as(&u, "PhoneApp/2.1 (Android 14)");
    let laptop = login_as(&u, "Laptop\tBrowser/9");

    let r = call("GET", "/v1/auth/sessions", Some(&phone), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let items = r.body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 3, "{}", r.body);
    let mine: Vec<_> = items.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(mine.len(), 1, "{}", r.body);
    assert_eq!(mine[0]["id"], sid(&phone).as_str());
    assert_eq!(mine[0]["user_agent"], "PhoneApp/2.1 (Android 14)");
    assert_eq!(mine[0]["ip"], "127.0.0.1");
    assert_eq!(mine[0]["aal"], "aal1");
    assert!(mine[0]["last_used_at"].is_string(), "{}", r.body);
    let lap = items.iter().find(|s| s["id"] == sid(&laptop).as_str()).unwrap();
    // Control characters are stripped.
    assert_eq!(lap["user_agent"], "LaptopBrowser/9", "{lap}");

    // Another user cannot end (or learn about) these sessions.
    let stranger = signup("sess-x");
    let r = call("DELETE", &format!("/v1/auth/sessions/{}", sid(&laptop)), Some(&stranger.access), None);
    assert_eq!((r.status, r.code()), (404, "session_not_found"), "{}", r.body);
    assert_eq!(call("GET", "/v1/auth/user", Some(&laptop), None).status, 200);

    // End the laptop's session from the phone.
    let r = call("DELETE", &format!("/v1/auth/sessions/{}", sid(&laptop)), Some(&phone), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(call("GET", "/v1/auth/user", Some(&laptop), None).status, 401);
    let r = call("DELETE", &format!("/v1/auth/sessions/{}", sid(&laptop)), Some(&phone), None);
    assert_eq!((r.status, r.code()), (404, "session_not_found"), "an ended session is gone: {}", r.body);

    // Sign out everywhere else: the sign-up session ends, the phone's stays.
    assert_eq!(call("DELETE", "/v1/auth/sessions", Some(&phone), None).status, 204);
    assert_eq!(call("GET", "/v1/auth/user", Some(&u.access), None).status, 401);
    let r = call("GET", "/v1/auth/sessions", Some(&phone), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let ids: Vec<_> = r.body["items"].as_array().unwrap().iter().map(|s| s["id"].clone()).collect();
    assert_eq!(ids, [json!(sid(&phone))]);

    // Without a user token: 401.
    assert_eq!(call("GET", "/v1/auth/sessions", None, None).status, 401);
    let r = call("DELETE", "/v1/auth/sessions/not-a-uuid", Some(&phone), None);
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn an_administrator_lists_and_signs_out_a_users_sessions() {
    let u = signup("adm");
    let second = login_as(&u, "Second/1");
    let path = format!("/v1/admin/users/{}/sessions", u.id);
    let r = service("GET", &path, None);
    assert_eq!(r.status, 200, "{}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{}", r.body);
    assert!(items.iter().any(|s| s["id"] == sid(&second).as_str() && s["user_agent"] == "Second/1"), "{}", r.body);
    assert!(items.iter().all(|s| s["current"] == false), "{}", r.body);

    // Users cannot use the admin routes, not even on themselves.
    assert_eq!(call("GET", &path, Some(&u.access), None).status, 403);
    assert_eq!(call("DELETE", &path, Some(&u.access), None).status, 403);

    assert_eq!(service("DELETE", &path, None).status, 204);
    for t in [&u.access, &second] {
        assert_eq!(call("GET", "/v1/auth/user", Some(t), None).status, 401);
    }
    let r = service("GET", &path, None);
    assert_eq!(r.body["items"], json!([]), "{}", r.body);
    // Signed out is not suspended: the user signs in again.
    assert_eq!(post("/v1/auth/login", None, json!({"email": u.email, "password": PASSWORD})).status, 200);
    let n: i64 = admin()
        .query_one("select count(*) from baas.audit_log where user_id = $1::text::uuid and action = 'user.sign_out'", &[&u.id])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let r = service("GET", "/v1/admin/users/00000000-0000-7000-8000-000000000000/sessions", None);
    assert_eq!((r.status, r.code()), (404, "user_not_found"), "{}", r.body);
}

/// Delete account `u` (its own call, as an app would).
fn delete_account(u: &User) {
    assert_eq!(call("DELETE", "/v1/auth/user", Some(&u.access), None).status, 204);
}

fn owner_of(c: &str, id: &str) -> Option<Value> {
    let r = service("GET", &doc_path(c, id), None);
    (r.status == 200).then(|| r.body["owner"].clone())
}

fn delete_audit(id: &str) -> Value {
    admin()
        .query_one("select details from baas.audit_log where user_id = $1::text::uuid and action = 'user.delete'", &[&id])
        .unwrap()
        .get(0)
}

#[test]
fn a_shared_list_survives_its_owners_deletion_ownerless_under_its_acl() {
    let c = collection("orphan", json!({"on_owner_delete": "orphan"}));
    let r = service("GET", &format!("/v1/collections/{c}"), None);
    assert_eq!(r.body["options"]["on_owner_delete"], "orphan", "{}", r.body);
    let (owner, friend, stranger) = (signup("orph-o"), signup("orph-f"), signup("orph-s"));
    let list = create_doc(&c, Some(&owner.access), json!({"items": ["milk"]}), Some(json!({"read": [format!("user:{}", friend.id)], "update": [format!("user:{}", friend.id)]})));
    let private = create_doc(&c, Some(&owner.access), json!({"diary": true}), None);
    delete_account(&owner);

    assert_eq!(owner_of(&c, &list), Some(Value::Null), "the list stays, owned by nobody");
    assert_eq!(owner_of(&c, &private), Some(Value::Null), "every document of the collection stays");
    // Its ACL still decides: the friend reads and edits it, others do not see it.
    let r = call("GET", &doc_path(&c, &list), Some(&friend.access), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call("PATCH", &doc_path(&c, &list), Some(&friend.access), Some(r#"{"data": {"items": ["milk", "eggs"]}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(call("GET", &doc_path(&c, &list), Some(&stranger.access), None).status, 404);
    assert_eq!(call("GET", &doc_path(&c, &private), Some(&friend.access), None).status, 404);
    assert_eq!(delete_audit(&owner.id)["orphaned"], 2, "{}", delete_audit(&owner.id));
}

#[test]
fn an_heir_receives_the_documents_and_a_deleted_heir_leaves_them_orphaned() {
    let heir = signup("heir");
    let c = collection("transfer", json!({"on_owner_delete": {"transfer": heir.id}}));
    let plain = collection("plain", json!({}));
    let (a, b) = (signup("heir-a"), signup("heir-b"));
    let doc_a = create_doc(&c, Some(&a.access), json!({"from": "a"}), None);
    let doc_plain = create_doc(&plain, Some(&a.access), json!({"from": "a"}), None);
    delete_account(&a);
    assert_eq!(owner_of(&c, &doc_a), Some(json!(heir.id)), "the heir owns it now");
    let r = call("GET", &doc_path(&c, &doc_a), Some(&heir.access), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(owner_of(&plain, &doc_plain), None, "`delete` (the default) deletes as before");
    let audit = delete_audit(&a.id);
    assert_eq!((audit["transferred"].clone(), audit["orphaned"].clone()), (json!(1), json!(0)), "{audit}");

    // The heir's own documents in that collection are orphaned when the heir goes, and
    // so are later owners' once the heir is gone.
    let doc_heir = create_doc(&c, Some(&heir.access), json!({"from": "heir"}), None);
    delete_account(&heir);
    assert_eq!(owner_of(&c, &doc_a), Some(Value::Null));
    assert_eq!(owner_of(&c, &doc_heir), Some(Value::Null));
    let r = service("GET", &format!("/v1/collections/{c}"), None);
    assert_eq!(r.body["options"]["on_owner_delete"], "orphan", "{}", r.body);
    let doc_b = create_doc(&c, Some(&b.access), json!({"from": "b"}), None);
    delete_account(&b);
    assert_eq!(owner_of(&c, &doc_b), Some(Value::Null));
}

#[test]
fn the_policy_is_set_and_checked_through_collection_options() {
    let c = collection("setpol", json!({}));
    let u = signup("setpol");
    let doc = create_doc(&c, Some(&u.access), json!({}), None);
    let path = format!("/v1/collections/{c}");
    for (bad, code) in [
        (json!({"on_owner_delete": "keep"}), "invalid_options"),
        (json!({"on_owner_delete": {"transfer": "00000000-0000-7000-8000-000000000000"}}), "invalid_options"),
        (json!({"schema": null}), "invalid_options"),
    ] {
        let r = service("PATCH", &path, Some(json!({"options": bad})));
        assert_eq!((r.status, r.code()), (400, code), "{bad}: {}", r.body);
    }
    let r = post("/v1/collections", Some(&service_token()), json!({"name": format!("{c}_x"), "options": {"on_owner_delete": {"transfer": "nope"}}}));
    assert_eq!((r.status, r.code()), (400, "invalid_options"), "{}", r.body);
    // Users cannot change it.
    let r = call("PATCH", &path, Some(&u.access), Some(r#"{"options": {"on_owner_delete": "orphan"}}"#));
    assert_eq!(r.status, 403, "{}", r.body);
    let r = service("PATCH", &path, Some(json!({"options": {"on_owner_delete": "orphan"}})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["options"]["on_owner_delete"], "orphan", "{}", r.body);
    delete_account(&u);
    assert_eq!(owner_of(&c, &doc), Some(Value::Null));
    let r = service("PATCH", "/v1/collections/no_such_collection", Some(json!({"options": {}})));
    assert_eq!(r.status, 404, "{}", r.body);
}

/// A sign-in that read the account before a suspension committed (it was waiting for
/// its turn or hashing the password) must not come out with a live session.
#[test]
fn a_sign_in_overtaken_by_a_suspension_gets_no_session() {
    let u = signup("suspracer");
    let mut holder = admin();
    let key: i64 = holder
        .query_one("select hashtextextended('baas.login:' || baas._email_for_audit($1), 0)", &[&u.email])
        .unwrap()
        .get(0);
    // Hold the per-email sign-in lock so the login stops after reading the account.
    holder.execute("select pg_advisory_lock($1)", &[&key]).unwrap();
    let email = u.email.clone();
    let login = std::thread::spawn(move || post("/v1/auth/login", None, json!({"email": email, "password": PASSWORD})));
    let mut waited = 0;
    loop {
        let n: i64 = holder
            .query_one(
                "select count(*) from pg_locks where locktype = 'advisory' and not granted \
                  and ((classid::int8 << 32) | objid::int8) = $1",
                &[&key],
            )
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        waited += 1;
        assert!(waited < 500, "the login never waited for the sign-in lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = service("PUT", &format!("/v1/admin/users/{}/suspension", u.id), Some(json!({"reason": "race"})));
    assert_eq!(r.status, 200, "{}", r.body);
    holder.execute("select pg_advisory_unlock($1)", &[&key]).unwrap();
    let r = login.join().unwrap();
    assert_eq!((r.status, r.code()), (403, "account_suspended"), "{}", r.body);
    let live = service("GET", &format!("/v1/admin/users/{}/sessions", u.id), None);
    assert_eq!(live.body["items"], json!([]), "a suspended account has no live session: {}", live.body);
}
