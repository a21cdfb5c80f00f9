//! Anonymous accounts end to end (issue 16): the setting, signing in before signing up,
//! upgrading to a full account that keeps its id and everything tied to it, and purging
//! abandoned anonymous accounts. Real cluster, real proxy, real HTTP.

mod common;
use common::files::{bucket, download, file_path, upload_ok};
use common::lifecycle::*;
use common::*;
use serde_json::{json, Value};
use std::sync::{Mutex, MutexGuard};

/// The tests change baas.settings.anonymous_sign_in: one at a time.
fn setting() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    set_setting("anonymous_sign_in", "true");
    g
}

fn anonymous() -> (String, String, String) {
    let r = post("/v1/auth/anonymous", None, json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["user"]["is_anonymous"], true, "{}", r.body);
    assert!(r.body["user"]["email"].is_null(), "{}", r.body);
    (
        r.body["user"]["id"].as_str().unwrap().to_string(),
        r.body["access_token"].as_str().unwrap().to_string(),
        r.body["refresh_token"].as_str().unwrap().to_string(),
    )
}

#[test]
fn anonymous_sign_in_is_refused_while_the_setting_is_off() {
    let _g = setting();
    set_setting("anonymous_sign_in", "false");
    let r = post("/v1/auth/anonymous", None, json!({}));
    assert_eq!((r.status, r.code()), (403, "anonymous_sign_in_disabled"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("not enabled"), "{}", r.body);
    set_setting("anonymous_sign_in", "true");
    assert_eq!(post("/v1/auth/anonymous", None, json!({})).status, 201);
}

#[test]
fn an_anonymous_account_works_before_sign_up() {
    let _g = setting();
    let r = post("/v1/auth/anonymous", None, json!({"data": {"theme": "dark"}, "device_id": "phone-1"}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["user"]["data"], json!({"theme": "dark"}));
    let access = r.body["access_token"].as_str().unwrap();
    let claims = payload(access);
    assert_eq!(claims["is_anonymous"], true, "{claims}");
    assert_eq!(claims["amr"], json!(["anonymous"]), "{claims}");
    // The app works: profile, documents in a collection open to `authenticated`, refresh.
    let me = call("GET", "/v1/auth/user", Some(access), None);
    assert_eq!((me.status, me.body["is_anonymous"].clone()), (200, json!(true)), "{}", me.body);
    let c = collection("anonwork", json!({}));
    let id = create_doc(&c, Some(access), json!({"todo": "milk"}), None);
    assert_eq!(call("GET", &doc_path(&c, &id), Some(access), None).status, 200);
    let r2 = post("/v1/auth/refresh", None, json!({"refresh_token": r.body["refresh_token"]}));
    assert_eq!(r2.status, 200, "{}", r2.body);
    let sessions = call("GET", "/v1/auth/sessions", Some(access), None);
    assert_eq!(sessions.body["items"][0]["device_id"], "phone-1", "{}", sessions.body);
    // Bad input is a 400 naming it.
    let r = post("/v1/auth/anonymous", None, json!({"device_id": "no spaces allowed"}));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post("/v1/auth/anonymous", None, json!({"data": [1]}));
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn upgrading_keeps_the_id_documents_files_and_grants() {
    let _g = setting();
    let (id, access, refresh) = anonymous();
    let c = collection("anonup", json!({}));
    let doc = create_doc(&c, Some(&access), json!({"mine": true}), None);
    let b = bucket("anonupf", json!({}));
    let file = upload_ok(Some(&access), &b, "a.txt", b"hello", "text/plain");
    let file_id = file["id"].as_str().unwrap().to_string();
    // Another user shares a document with this account by its id.
    let friend = signup("anonfriend");
    let shared = create_doc(&c, Some(&friend.access), json!({"for": "anon"}), Some(json!({"read": [format!("user:{id}")]})));
    assert_eq!(call("GET", &doc_path(&c, &shared), Some(&access), None).status, 200);

    let mail = email("upgraded");
    let r = post("/v1/auth/upgrade", Some(&access), json!({"email": mail, "password": PASSWORD}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], id.as_str());
    assert_eq!(r.body["user"]["is_anonymous"], false);
    assert_eq!(r.body["user"]["email"], mail.as_str());
    let new_access = r.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(payload(&new_access)["is_anonymous"], false);
    assert_eq!(sid(&new_access), sid(&access), "the session goes on");
    // The old refresh token was spent; the new one works.
    let again = post("/v1/auth/refresh", None, json!({"refresh_token": r.body["refresh_token"]}));
    assert_eq!(again.status, 200, "{}", again.body);
    let _ = refresh;

    // Everything tied to the id is still there, and the email and password sign in.
    let login = post("/v1/auth/login", None, json!({"email": mail, "password": PASSWORD}));
    assert_eq!(login.status, 200, "{}", login.body);
    let t = login.body["access_token"].as_str().unwrap();
    assert_eq!(login.body["user"]["id"], id.as_str());
    assert_eq!(call("GET", &doc_path(&c, &doc), Some(t), None).body["data"], json!({"mine": true}));
    assert_eq!(call("GET", &doc_path(&c, &shared), Some(t), None).status, 200, "the friend's grant still holds");
    let d = download(Some(t), &file_path(&file_id), &[]);
    assert_eq!((d.status, d.body.as_slice()), (200, &b"hello"[..]));

    // Upgrading twice is refused.
    let r = post("/v1/auth/upgrade", Some(t), json!({"email": email("twice"), "password": PASSWORD}));
    assert_eq!((r.status, r.code()), (409, "not_anonymous"), "{}", r.body);
    let audit: i64 = admin()
        .query_one("select count(*) from baas.audit_log where user_id = $1::text::uuid and action = 'user.upgrade'", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(audit, 1);
}

#[test]
fn upgrading_to_a_taken_email_or_a_weak_password_changes_nothing() {
    let _g = setting();
    let taken = signup("anontaken");
    let (id, access, _) = anonymous();
    let r = post("/v1/auth/upgrade", Some(&access), json!({"email": taken.email.to_uppercase(), "password": PASSWORD}));
    assert_eq!((r.status, r.code()), (409, "email_taken"), "{}", r.body);
    let r = post("/v1/auth/upgrade", Some(&access), json!({"email": email("anonweak"), "password": "short"}));
    assert_eq!((r.status, r.code()), (400, "weak_password"), "{}", r.body);
    let r = post("/v1/auth/upgrade", Some(&access), json!({"email": "not an address", "password": PASSWORD}));
    assert_eq!((r.status, r.code()), (400, "invalid_email"), "{}", r.body);
    let me = call("GET", "/v1/auth/user", Some(&access), None);
    assert_eq!((me.body["id"].clone(), me.body["is_anonymous"].clone()), (json!(id), json!(true)), "{}", me.body);
    // Without a token: 401.
    assert_eq!(post("/v1/auth/upgrade", None, json!({"email": email("x"), "password": PASSWORD})).status, 401);
}

#[test]
fn purge_deletes_only_anonymous_accounts_idle_for_long_enough() {
    let _g = setting();
    let (old_id, _, _) = anonymous();
    let (recent_id, _, _) = anonymous();
    let (active_id, active_access, _) = anonymous();
    let full = signup("anonpurge");
    let c = collection("anonpurge", json!({}));
    let doc = create_doc(&c, Some(&active_access), json!({"n": 1}), None);
    let mut db = admin();
    // Two days old and idle; two days old but signed in an hour ago; and a full account as old.
    for id in [&old_id, &active_id, &full.id] {
        db.execute("update baas.users set created_at = now() - interval '2 days' where id = $1::text::uuid", &[id]).unwrap();
        db.execute("update baas.sessions set last_used_at = now() - interval '2 days' where user_id = $1::text::uuid", &[id]).unwrap();
    }
    db.execute("update baas.sessions set last_used_at = now() - interval '1 hour' where user_id = $1::text::uuid", &[&active_id]).unwrap();

    let e = db.query_one("select baas.purge_anonymous_users('10 minutes')", &[]).unwrap_err();
    assert_eq!(e.as_db_error().unwrap().detail(), Some("invalid_request"), "{e}");
    let n: i64 = db.query_one("select baas.purge_anonymous_users('1 day')", &[]).unwrap().get(0);
    assert!(n >= 1, "purged {n}");
    let alive = |id: &str| -> bool {
        admin().query_one("select exists (select from baas.users where id = $1::text::uuid)", &[&id]).unwrap().get(0)
    };
    assert!(!alive(&old_id), "the idle anonymous account is purged");
    assert!(alive(&recent_id) && alive(&active_id) && alive(&full.id));
    assert_eq!(call("GET", &doc_path(&c, &doc), Some(&active_access), None).status, 200);
    // Service tokens may call it; users may not.
    let svc = pgbaas_call("baas_service");
    assert!(svc, "baas_service may purge");
    assert!(!pgbaas_call("baas_user"), "baas_user may not purge");
}

/// Whether Postgres role `role` may execute purge_anonymous_users.
fn pgbaas_call(role: &str) -> bool {
    let v: Value = admin()
        .query_one("select to_jsonb(has_function_privilege($1, 'baas.purge_anonymous_users(interval)', 'execute'))", &[&role])
        .unwrap()
        .get(0);
    v == json!(true)
}

/// Ids of `c`'s documents that `user` (None: no token) reads through `baas.as_user`.
fn as_user_ids(user: Option<&str>, c: &str) -> std::collections::BTreeSet<String> {
    let q = format!(
        "select d.id::text from baas.documents d join baas.collections c on c.id = d.collection_id where c.name = '{c}'"
    );
    let rows = admin().query("select x #>> '{}' from baas.as_user($1::text::uuid, $2) x", &[&user, &q]).unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

/// Document ids of the `insert` events an SSE stream delivers within a few seconds.
fn streamed_ids(sse: &mut pgbaas_testkit::realtime::Sse, want: usize) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while let Some(m) = sse.next_json(deadline.saturating_duration_since(std::time::Instant::now())) {
        if m["type"] == "insert" {
            ids.insert(m["document"]["id"].as_str().unwrap().to_string());
            if ids.len() == want {
                // Let a wrongly delivered extra event show up too.
                if let Some(m) = sse.next_json(std::time::Duration::from_millis(1500)) {
                    if m["type"] == "insert" {
                        ids.insert(m["document"]["id"].as_str().unwrap().to_string());
                    }
                }
                break;
            }
        }
    }
    ids
}

#[test]
fn registered_and_anonymous_acls_read_alike_over_http_as_user_and_realtime() {
    use std::collections::BTreeSet;
    let _g = setting();
    let c = collection("anonacl", json!({}));
    let writer = signup("anonaclw");
    let reader = signup("anonaclr");
    let (anon_id, anon, _) = anonymous();
    let port = env().proxy.port;
    let mut sse_reg = pgbaas_testkit::realtime::Sse::open(port, &c, "", Some(&reader.access), None).unwrap_or_else(|e| panic!("{e:?}"));
    let mut sse_anon = pgbaas_testkit::realtime::Sse::open(port, &c, "", Some(&anon), None).unwrap_or_else(|e| panic!("{e:?}"));
    let mut sse_public = pgbaas_testkit::realtime::Sse::open(port, &c, "", None, None).unwrap_or_else(|e| panic!("{e:?}"));
    for sse in [&mut sse_reg, &mut sse_anon, &mut sse_public] {
        let m = sse.next_json(std::time::Duration::from_secs(10)).expect("a subscribed frame");
        assert_eq!(m["type"], "subscribed", "{m}");
    }

    let mut ids = std::collections::BTreeMap::new();
    for who in ["registered", "anonymous", "authenticated", "public", "nobody"] {
        let acl = if who == "nobody" { json!({"read": []}) } else { json!({"read": [who]}) };
        ids.insert(who, create_doc(&c, Some(&writer.access), json!({"for": who}), Some(acl)));
    }
    let set = |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| ids[n].clone()).collect() };
    let cases: [(&str, Option<&str>, Option<&str>, BTreeSet<String>); 3] = [
        ("registered user", Some(&reader.access), Some(&reader.id), set(&["registered", "authenticated", "public"])),
        ("anonymous account", Some(&anon), Some(&anon_id), set(&["anonymous", "authenticated", "public"])),
        ("no token", None, None, set(&["public"])),
    ];
    for (what, token, uid, expected) in &cases {
        let http: BTreeSet<String> = listed_ids(&c, *token).into_iter().collect();
        assert_eq!(&http, expected, "{what}: HTTP listing");
        assert_eq!(&as_user_ids(*uid, &c), expected, "{what}: baas.as_user = HTTP");
        for (name, id) in &ids {
            let st = call("GET", &doc_path(&c, id), *token, None).status;
            assert_eq!(st == 200, expected.contains(id), "{what}: GET of the {name} document gave {st}");
        }
    }
    assert_eq!(streamed_ids(&mut sse_reg, 3), cases[0].3, "registered user: realtime = HTTP");
    assert_eq!(streamed_ids(&mut sse_anon, 3), cases[1].3, "anonymous account: realtime = HTTP");
    assert_eq!(streamed_ids(&mut sse_public, 1), cases[2].3, "no token: realtime = HTTP");

    // The principals themselves, as SQL computes them.
    let p: Value = admin().query_one("select baas.as_user($1::text::uuid, 'select baas.principals()')", &[&anon_id]).unwrap().get(0);
    assert_eq!(p, json!(["public", "authenticated", "anonymous", format!("user:{anon_id}")]));
    let p: Value = admin().query_one("select baas.as_user($1::text::uuid, 'select baas.principals()')", &[&reader.id]).unwrap().get(0);
    assert_eq!(p, json!(["public", "authenticated", "registered", format!("user:{}", reader.id)]));
    // ACLs check the two words, and refuse look-alikes.
    let r = post(&docs_path(&c), Some(&writer.access), json!({"data": {}, "acl": {"read": ["Anonymous"]}}));
    assert_eq!((r.status, r.code()), (400, "invalid_acl"), "{}", r.body);
}

/// A signed download link runs as its maker: an anonymous account's link to a file
/// only `anonymous` may read must download, as its bearer token does.
#[test]
fn an_anonymous_accounts_signed_link_downloads_a_file_shared_with_anonymous() {
    let _g = setting();
    let (_id, access, _) = anonymous();
    let owner = signup("anonlinkowner");
    let b = bucket("anonlink", json!({"default_acl": {"read": ["anonymous"]}}));
    let file = upload_ok(Some(&owner.access), &b, "a.txt", b"for anonymous", "text/plain");
    let file_id = file["id"].as_str().unwrap().to_string();
    let direct = download(Some(&access), &file_path(&file_id), &[]);
    assert_eq!(direct.status, 200, "the anonymous account reads it with its token");
    let r = call("POST", &format!("{}/link", file_path(&file_id)), Some(&access), Some("{}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let url = r.body["url"].as_str().unwrap();
    let path = &url[url.find("/v1/").unwrap()..];
    let d = download(None, path, &[]);
    assert_eq!((d.status, d.body.as_slice()), (200, &b"for anonymous"[..]), "the link reads as its anonymous maker");
}

/// An anonymous account has no password to change: PATCH /v1/auth/user with a
/// password is refused with a 4xx, never a server error.
#[test]
fn an_anonymous_account_cannot_set_a_password_through_update_user() {
    let _g = setting();
    let (id, access, _) = anonymous();
    let r = call("PATCH", "/v1/auth/user", Some(&access), Some(r#"{"password": "long enough password", "current_password": "anything at all"}"#));
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.body);
    let still: bool = admin()
        .query_one("select is_anonymous and password_hash is null from baas.users where id = $1::text::uuid", &[&id])
        .unwrap()
        .get(0);
    assert!(still, "still anonymous, without a password");
    let r = call("PATCH", "/v1/auth/user", Some(&access), Some(r#"{"data": {"theme": "light"}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
}
