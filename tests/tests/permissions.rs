//! End-to-end permission matrix: two users and an anonymous caller against the same
//! documents, every kind of grant, every verb, listings and counts; and the same data
//! seen through the SQL door (baas.as_user) must match the HTTP door exactly.

mod common;
use common::*;
use serde_json::json;
use std::collections::BTreeSet;

struct World {
    c: String,
    a: User,
    b: User,
    /// (case name, document id)
    docs: Vec<(&'static str, String)>,
}

fn setup(tag: &str) -> World {
    let s = service_token();
    let c = collection(tag, json!({}));
    let (a, b) = (signup(&format!("{tag}-a")), signup(&format!("{tag}-b")));
    let (cases, gone) = matrix_cases(&c, &b);
    let docs = cases
        .into_iter()
        .map(|(name, acl)| (name, create_doc(&c, Some(&a.access), json!({"case": name}), Some(acl))))
        .collect::<Vec<_>>();
    // Revocation and membership removal take effect on the very next request.
    let revoked = &docs.iter().find(|(n, _)| *n == "revoked").unwrap().1;
    assert_eq!(call("GET", &doc_path(&c, revoked), Some(&b.access), None).status, 200);
    let acl_path = format!("{}/acl", doc_path(&c, revoked));
    assert_eq!(call("PUT", &acl_path, Some(&a.access), Some("{}")).status, 200);
    let removed = &docs.iter().find(|(n, _)| *n == "role_removed").unwrap().1;
    assert_eq!(call("GET", &doc_path(&c, removed), Some(&b.access), None).status, 200);
    assert_eq!(call("DELETE", &format!("/v1/roles/{gone}/members/{}", b.id), Some(&s), None).status, 204);
    World { c, a, b, docs }
}

fn visible(w: &World, who: Option<&str>) -> BTreeSet<String> {
    matrix_visible(&w.docs, &w.a.access, who)
}

#[test]
fn matrix_over_http() {
    let w = setup("matrix");
    // Listings and counts first (the verbs below delete some documents).
    for (who, token) in [("a", Some(w.a.access.as_str())), ("b", Some(w.b.access.as_str())), ("anon", None)] {
        let want = visible(&w, token);
        let got: BTreeSet<String> = listed_ids(&w.c, token).into_iter().collect();
        assert_eq!(got, want, "listing as {who}");
        let count = call("GET", &format!("{}?count=true&limit=0", docs_path(&w.c)), token, None).body["count"].as_u64();
        assert_eq!(count, Some(want.len() as u64), "count as {who}");
    }
    for (name, id) in &w.docs {
        let (b, anon) = matrix_expected(name);
        for (who, token, want) in [("b", Some(w.b.access.as_str()), b), ("anon", None, anon)] {
            let path = doc_path(&w.c, id);
            let r = call("GET", &path, token, None);
            assert_eq!(r.status, want[0], "{who} GET {name}: {}", r.body);
            if want[0] == 404 {
                assert_eq!(r.code(), "document_not_found", "unreadable looks like missing");
            }
            let r = call("PATCH", &path, token, Some(&json!({"data": {"by": who}}).to_string()));
            assert_eq!(r.status, want[1], "{who} PATCH {name}: {}", r.body);
            if want[1] == 403 {
                assert_eq!(r.code(), "forbidden");
            }
            // Delete only where it must fail, or as the last step of this case.
            if want[2] != 204 || who == "anon" || anon[2] != 204 {
                let r = call("DELETE", &path, token, None);
                assert_eq!(r.status, want[2], "{who} DELETE {name}: {}", r.body);
                if want[2] == 204 {
                    break;
                }
            }
        }
    }
    // The owner could do everything to what is left.
    for (name, id) in &w.docs {
        let path = doc_path(&w.c, id);
        let g = call("GET", &path, Some(&w.a.access), None);
        if g.status == 404 {
            assert!(matches!(*name, "delete_b" | "role_delete" | "public_delete"), "{name} vanished");
            continue;
        }
        assert_eq!(g.status, 200, "owner GET {name}");
        assert_eq!(call("PATCH", &path, Some(&w.a.access), Some(r#"{"data": {"by": "a"}}"#)).status, 200);
        assert_eq!(call("DELETE", &path, Some(&w.a.access), None).status, 204, "owner DELETE {name}");
    }
}

#[test]
fn the_sql_door_sees_exactly_what_the_http_door_sees() {
    let w = setup("doors");
    let mut db = admin();
    for (who, token, uid) in [
        ("a", Some(w.a.access.as_str()), Some(w.a.id.as_str())),
        ("b", Some(w.b.access.as_str()), Some(w.b.id.as_str())),
        ("anon", None, None),
    ] {
        let http: BTreeSet<String> = listed_ids(&w.c, token).into_iter().collect();
        let rows = db
            .query(
                "select d ->> 'id' from baas.as_user($1::text::uuid, format('select * from baas.find(%L, lim => 1000)', $2::text)) d",
                &[&uid, &w.c],
            )
            .unwrap();
        let sql: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(sql, http, "as {who}");
        assert_eq!(http, visible(&w, token), "as {who}");
        let n: i64 = db
            .query_one("select (baas.as_user($1::text::uuid, format('select baas.count(%L)', $2::text)))::text::bigint",
                       &[&uid, &w.c])
            .unwrap()
            .get(0);
        assert_eq!(n as usize, http.len(), "count as {who}");
    }
}

#[test]
fn role_cycles_are_refused() {
    let s = service_token();
    let base = format!("cyc_{}", std::process::id());
    let (x, y, z) = (format!("{base}_x"), format!("{base}_y"), format!("{base}_z"));
    for r in [&x, &y, &z] {
        assert_eq!(post("/v1/roles", Some(&s), json!({"name": r})).status, 201);
    }
    assert_eq!(call("PUT", &format!("/v1/roles/{x}/roles/{y}"), Some(&s), None).status, 204);
    assert_eq!(call("PUT", &format!("/v1/roles/{y}/roles/{z}"), Some(&s), None).status, 204);
    let r = call("PUT", &format!("/v1/roles/{z}/roles/{x}"), Some(&s), None);
    assert_eq!((r.status, r.code()), (400, "role_cycle"));
    let r = call("PUT", &format!("/v1/roles/{x}/roles/{x}"), Some(&s), None);
    assert_eq!((r.status, r.code()), (400, "role_cycle"));
    let a = signup("cyc");
    assert_eq!(post("/v1/roles", Some(&a.access), json!({"name": "mine"})).status, 403, "users cannot make roles");
    assert_eq!(call("PUT", &format!("/v1/roles/{x}/members/{}", a.id), Some(&a.access), None).status, 403);
    assert_eq!(call("PUT", &format!("/v1/roles/nope_{base}/members/{}", a.id), Some(&s), None).status, 404);
    let bad = call("PUT", &format!("/v1/roles/{x}/members/not-a-uuid"), Some(&s), None);
    assert_eq!(bad.status, 400);
    let list = call("GET", "/v1/roles", Some(&s), None);
    let x_entry = list.body["items"].as_array().unwrap().iter().find(|r| r["name"] == x.as_str()).unwrap().clone();
    assert_eq!(x_entry["roles"], json!([y]));
}

#[test]
fn users_and_anonymous_callers_interleaved_on_shared_connections() {
    // Pool of 3 connections, 9 threads: each caller must see only what it may.
    let c = collection("interleave", json!({}));
    let (a, b) = (signup("il-a"), signup("il-b"));
    let private = create_doc(&c, Some(&a.access), json!({"who": "a"}), None);
    let shared = create_doc(&c, Some(&a.access), json!({"who": "shared"}), Some(json!({"read": [format!("user:{}", b.id)]})));
    let threads: Vec<_> = (0..9)
        .map(|i| {
            let (c, private, shared) = (c.clone(), private.clone(), shared.clone());
            let token = match i % 3 { 0 => Some(a.access.clone()), 1 => Some(b.access.clone()), _ => None };
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let t = token.as_deref();
                    let p = call("GET", &doc_path(&c, &private), t, None).status;
                    let s = call("GET", &doc_path(&c, &shared), t, None).status;
                    let n = listed_ids(&c, t).len();
                    match i % 3 {
                        0 => assert_eq!((p, s, n), (200, 200, 2)),
                        1 => assert_eq!((p, s, n), (404, 200, 1)),
                        _ => assert_eq!((p, s, n), (404, 404, 0)),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
