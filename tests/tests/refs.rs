//! References and expand end to end (issue 18, package C; docs/references.md): a
//! document field references another document, a user or a file; GET and lists with
//! `expand` return them inline, each only if the caller may read it (otherwise `null`,
//! the same as a missing one), within depth and count limits, in one SQL statement;
//! `$refs` filters and back-references list only what the caller may read. Real
//! cluster, real proxy, real HTTP.

mod common;
use common::files::*;
use common::*;
use serde_json::{json, Value};
use std::sync::RwLock;

/// The limit test changes baas.settings.max_expand_references: the others read under
/// this lock so they never see the lowered limit.
static SETTINGS: RwLock<()> = RwLock::new(());

const MISSING: &str = "0190b0a4-6f1e-7c3a-8d2b-5e4f3a2b1c0d";

fn dref(c: &str, id: &str) -> Value {
    json!({"$ref": {"collection": c, "id": id}})
}

fn get(path: &str, token: Option<&str>) -> Resp {
    call("GET", path, token, None)
}

fn ok(path: &str, token: Option<&str>) -> Value {
    let r = get(path, token);
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.body
}

/// Authors (one readable by anyone, one only by its owner alice) and a public post of
/// alice's referencing them, plus a missing one.
struct World {
    alice: User,
    bob: User,
    authors: String,
    posts: String,
    a_pub: String,
    a_priv: String,
    post: String,
}

fn world(tag: &str) -> World {
    let (alice, bob) = (signup(&format!("{tag}-alice")), signup(&format!("{tag}-bob")));
    let authors = collection(&format!("{tag}_authors"), json!({}));
    let posts = collection(&format!("{tag}_posts"), json!({}));
    let a_pub = create_doc(&authors, Some(&alice.access), json!({"name": "Pub"}), Some(json!({"read": ["public"]})));
    let a_priv = create_doc(&authors, Some(&alice.access), json!({"name": "Hidden"}), Some(json!({"read": []})));
    let post = create_doc(
        &posts,
        Some(&alice.access),
        json!({"title": "p1", "author": dref(&authors, &a_priv),
               "co": [dref(&authors, &a_pub), dref(&authors, &a_priv), dref(&authors, MISSING), 7]}),
        Some(json!({"read": ["public"]})),
    );
    World { alice, bob, authors, posts, a_pub, a_priv, post }
}

#[test]
fn the_permission_matrix_through_references() {
    let _g = SETTINGS.read().unwrap();
    let w = world("perm");
    let path = format!("{}?expand=author,co", doc_path(&w.posts, &w.post));
    let public_author = ok(&doc_path(&w.authors, &w.a_pub), None);
    for who in [None, Some(w.bob.access.as_str())] {
        let d = ok(&path, who);
        assert_eq!(d["data"]["author"], Value::Null, "an unreadable reference is null");
        assert_eq!(d["data"]["co"], json!([public_author, null, null, 7]), "readable expanded; unreadable and missing alike null");
        assert_eq!(d["data"]["title"], "p1");
    }
    // The owner of the hidden author sees it: the null was row-level security's.
    let d = ok(&path, Some(&w.alice.access));
    assert_eq!(d["data"]["author"]["data"]["name"], "Hidden");
    assert_eq!(d["data"]["author"]["id"], w.a_priv.as_str());
    assert_eq!(d["data"]["co"][1]["data"]["name"], "Hidden");
    assert_eq!(d["data"]["co"][2], Value::Null, "missing stays null");
    // The ETag is still the document's version.
    let plain = get(&doc_path(&w.posts, &w.post), Some(&w.alice.access));
    assert_eq!(get(&path, Some(&w.alice.access)).header("etag"), plain.header("etag"));
    // Without expand, the references as stored.
    assert_eq!(plain.body["data"]["author"], dref(&w.authors, &w.a_priv));

    // Lists: the same, per item.
    let list = ok(&format!("{}?expand=author,co", docs_path(&w.posts)), Some(&w.bob.access));
    assert_eq!(list["items"][0]["data"]["author"], Value::Null);
    assert_eq!(list["items"][0]["data"]["co"][0]["data"]["name"], "Pub");
}

#[test]
fn filters_counts_and_back_references_show_only_readable_documents() {
    let _g = SETTINGS.read().unwrap();
    let w = world("back");
    // A second post, alice's only, referencing the public author.
    let hidden_post = create_doc(&w.posts, Some(&w.alice.access), json!({"author": dref(&w.authors, &w.a_pub)}), Some(json!({"read": []})));
    let third = create_doc(&w.posts, Some(&w.alice.access), json!({"co": [dref(&w.authors, &w.a_pub)]}), Some(json!({"read": ["public"]})));
    let bob = Some(w.bob.access.as_str());

    // Back-references: author field, then an array field.
    let refs = |field: &str, id: &str, token: Option<&str>| {
        get(&format!("{}/referrers?collection={}&field={field}", doc_path(&w.authors, id), w.posts), token)
    };
    let ids = |r: &Resp| -> Vec<String> { r.body["items"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect() };
    let r = refs("author", &w.a_pub, bob);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&r), Vec::<String>::new(), "bob may not read the only post whose author is a_pub");
    assert_eq!(ids(&refs("author", &w.a_pub, Some(&w.alice.access))), vec![hidden_post.clone()]);
    let mut co = ids(&refs("co", &w.a_pub, bob));
    co.sort();
    let mut want = vec![w.post.clone(), third.clone()];
    want.sort();
    assert_eq!(co, want, "arrays holding the reference count");
    // With expand, like the list route.
    let r = get(&format!("{}/referrers?collection={}&field=co&expand=co&limit=1", doc_path(&w.authors, &w.a_pub), w.posts), bob);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    assert!(r.body["next"].is_string(), "a full page names the next: {}", r.body);
    assert_eq!(r.body["items"][0]["data"]["co"][0]["data"]["name"], "Pub");
    // Referrers of a document bob may not read: exactly what a missing one answers.
    let hidden = refs("author", &w.a_priv, bob);
    let missing = refs("author", MISSING, bob);
    assert_eq!((hidden.status, hidden.code()), (404, "document_not_found"), "{}", hidden.body);
    assert_eq!((missing.status, missing.code()), (404, "document_not_found"));
    assert_eq!(hidden.body["error"]["message"].as_str().unwrap().replace(&w.a_priv, "X"),
               missing.body["error"]["message"].as_str().unwrap().replace(MISSING, "X"));

    // $refs in where, with count: only readable documents are counted.
    let q = |filter: Value, token: Option<&str>| {
        let r = get(&format!("{}?count=true&where={}", docs_path(&w.posts), enc(&filter.to_string())), token);
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    let by_pub = json!({"author": {"$refs": {"collection": w.authors, "id": w.a_pub}}});
    assert_eq!(q(by_pub.clone(), bob)["count"], 0, "the hidden post is not counted for bob");
    assert_eq!(q(by_pub, Some(&w.alice.access))["count"], 1);
    let in_co = json!({"co": {"$refs": {"collection": w.authors, "id": w.a_pub.to_uppercase()}}});
    assert_eq!(q(in_co, bob)["count"], 2, "an array holding it matches; ids compare case-insensitively");
    let bad = get(&format!("{}?where={}", docs_path(&w.posts), enc(r#"{"author": {"$refs": "nope"}}"#)), bob);
    assert_eq!((bad.status, bad.code()), (400, "invalid_query"));
    // The referrers route's own checks.
    for q in ["", "?collection=x", "?field=x", "?collection=a&field=b&where=%7B%7D", "?collection=a&field=b&after=x"] {
        let r = get(&format!("{}/referrers{q}", doc_path(&w.authors, &w.a_pub)), bob);
        assert_eq!((r.status, r.code()), (400, "invalid_query"), "{q}: {}", r.body);
    }
}

#[test]
fn nested_paths_users_and_files() {
    let _g = SETTINGS.read().unwrap();
    let w = world("nest");
    let comments = collection("nest_comments", json!({}));
    let c = create_doc(
        &comments,
        Some(&w.alice.access),
        json!({"text": "hi", "post": dref(&w.posts, &w.post), "by": {"$ref": {"user": w.alice.id}}}),
        Some(json!({"read": ["public"]})),
    );
    let d = ok(&format!("{}?expand=post.co,post.author,by", doc_path(&comments, &c)), Some(&w.bob.access));
    assert_eq!(d["data"]["post"]["data"]["title"], "p1");
    assert_eq!(d["data"]["post"]["data"]["co"][0]["data"]["name"], "Pub", "two levels");
    assert_eq!(d["data"]["post"]["data"]["author"], Value::Null);
    // alice's profile shows nothing to bob yet (no public tier, graph "self"):
    // null, as GET /v1/users/{id} answers 404.
    assert_eq!(get(&format!("/v1/users/{}", w.alice.id), Some(&w.bob.access)).status, 404);
    assert_eq!(d["data"]["by"], Value::Null);
    let r = call("PATCH", "/v1/auth/user/profile", Some(&w.alice.access),
                 Some(&json!({"username": format!("alice{}", std::process::id()), "profile": {"public": {"bio": "hello"}}}).to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let profile = ok(&format!("/v1/users/{}", w.alice.id), Some(&w.bob.access));
    let d = ok(&format!("{}?expand=by", doc_path(&comments, &c)), Some(&w.bob.access));
    assert_eq!(d["data"]["by"]["profile"], json!({"bio": "hello"}));
    assert_eq!(d["data"]["by"]["username"], profile["username"]);
    assert_eq!(d["data"]["by"]["id"], w.alice.id.as_str());

    // Files: {"$ref": {"file"}} and the files' own {"$file"}; the metadata as GET /meta.
    let b = bucket("nestfiles", json!({}));
    let f = upload_ok(Some(&w.alice.access), &b, "cv.pdf", b"%PDF-1.4 x", "application/pdf")["id"].as_str().unwrap().to_string();
    let notes = collection("nest_notes", json!({}));
    let n = create_doc(&notes, Some(&w.alice.access), json!({"a": {"$ref": {"file": f}}, "b": {"$file": f}}), Some(json!({"read": ["public"]})));
    let meta = ok(&format!("/v1/files/{f}/meta"), Some(&w.alice.access));
    let mine = ok(&format!("{}?expand=a,b", doc_path(&notes, &n)), Some(&w.alice.access));
    assert_eq!(mine["data"]["a"], meta);
    assert_eq!(mine["data"]["b"], meta);
    assert_eq!(mine["data"]["a"]["name"], "cv.pdf");
    let theirs = ok(&format!("{}?expand=a,b", doc_path(&notes, &n)), Some(&w.bob.access));
    assert_eq!((&theirs["data"]["a"], &theirs["data"]["b"]), (&Value::Null, &Value::Null), "bob may not read the file");
}

#[test]
fn malformed_references_are_refused_on_write() {
    let _g = SETTINGS.read().unwrap();
    let u = signup("badref");
    let c = collection("badref", json!({}));
    for data in [
        json!({"a": {"$ref": {"collection": c}}}),
        json!({"a": {"$ref": {"collection": c, "id": "nope"}}}),
        json!({"a": [{"$ref": {"user": MISSING}, "extra": 1}]}),
        json!({"a": {"b": {"$ref": {"file": MISSING, "user": MISSING}}}}),
        json!({"a": {"$ref": "x"}}),
    ] {
        let r = post(&docs_path(&c), Some(&u.access), json!({"data": data}));
        assert_eq!((r.status, r.code()), (400, "invalid_reference"), "{data}: {}", r.body);
    }
    let d = create_doc(&c, Some(&u.access), json!({"a": {"$ref": {"collection": "nowhere", "id": MISSING}}}), None);
    let r = call("PATCH", &doc_path(&c, &d), Some(&u.access), Some(r#"{"data": {"b": {"$ref": {"user": 5}}}}"#));
    assert_eq!((r.status, r.code()), (400, "invalid_reference"), "{}", r.body);
    // A dangling reference expands to null.
    assert_eq!(ok(&format!("{}?expand=a", doc_path(&c, &d)), Some(&u.access))["data"]["a"], Value::Null);
}

#[test]
fn depth_fan_out_and_path_limits() {
    let w = world("lim");
    let p = doc_path(&w.posts, &w.post);
    let bob = Some(w.bob.access.as_str());
    {
        let _g = SETTINGS.read().unwrap();
        for (q, code) in [
            ("expand=a.b.c.d", "expand_too_large"),
            ("expand=a,b,c,d,e,f,g,h,i,j,k", "expand_too_large"),
            ("expand=a..b", "invalid_expand"),
            ("expand=", "invalid_expand"),
            ("expand=a,%20", "invalid_expand"),
            ("expand=a&expand=b", "invalid_query"),
            ("expand=a&limit=1", "invalid_query"),
        ] {
            let r = get(&format!("{p}?{q}"), bob);
            assert_eq!((r.status, r.code()), (400, code), "{q}: {}", r.body);
        }
        let r = get(&format!("{}?{}", docs_path(&w.posts), "expand=a.b.c.d&limit=5"), bob);
        assert_eq!((r.status, r.code()), (400, "expand_too_large"));
        // The paths are checked before the list is read or the referenced document looked up.
        let r = get(&format!("{}?expand=a.b.c.d", docs_path("lim_nowhere")), bob);
        assert_eq!((r.status, r.code()), (400, "expand_too_large"), "not collection_not_found: {}", r.body);
        let r = get(&format!("{}/referrers?collection={}&field=author&expand=a..b", doc_path(&w.authors, MISSING), w.posts), bob);
        assert_eq!((r.status, r.code()), (400, "invalid_expand"), "not document_not_found: {}", r.body);
        // Three levels and ten paths are fine.
        assert_eq!(get(&format!("{p}?expand=a.b.c,b,c,d,e,f,g,h,i,j"), bob).status, 200);
    }
    // Fan-out: at most max_expand_references references per response.
    let _w = SETTINGS.write().unwrap();
    admin().batch_execute("update baas.settings set max_expand_references = 3").unwrap();
    let r = get(&format!("{p}?expand=author,co"), bob);
    assert_eq!((r.status, r.code()), (400, "expand_too_large"), "4 references: {}", r.body);
    assert_eq!(get(&format!("{p}?expand=co"), bob).status, 200, "3 are allowed");
    for _ in 0..2 {
        create_doc(&w.posts, Some(&w.alice.access), json!({"author": dref(&w.authors, &w.a_pub)}), Some(json!({"read": ["public"]})));
    }
    let r = get(&format!("{}?expand=author", docs_path(&w.posts)), bob);
    assert_eq!(r.status, 200, "3 references in the page: {}", r.body);
    let r = get(&format!("{}?expand=author,co", docs_path(&w.posts)), bob);
    assert_eq!((r.status, r.code()), (400, "expand_too_large"), "counted over the page: {}", r.body);
    admin().batch_execute("update baas.settings set max_expand_references = 1000").unwrap();
}

/// "One round trip": with log_statement on, the proxy's statements naming the request's
/// collection are counted: an expanded GET and an expanded list are one statement each,
/// which both reads and expands.
#[test]
fn expand_is_one_statement() {
    let _g = SETTINGS.read().unwrap();
    let w = world("trip");
    let log = env().cluster.dir.join("postgres.log");
    let mut a = admin();
    a.batch_execute("alter system set log_statement = 'all'").unwrap();
    a.batch_execute("select pg_reload_conf()").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let d = ok(&format!("{}?expand=author,co", doc_path(&w.posts, &w.post)), Some(&w.alice.access));
    assert_eq!(d["data"]["author"]["data"]["name"], "Hidden");
    let l = ok(&format!("{}?expand=co", docs_path(&w.posts)), Some(&w.alice.access));
    assert_eq!(l["items"][0]["data"]["co"][0]["data"]["name"], "Pub");
    std::thread::sleep(std::time::Duration::from_millis(500));
    a.batch_execute("alter system reset log_statement").unwrap();
    a.batch_execute("select pg_reload_conf()").unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Each statement the proxy ran with the posts collection as a parameter, and the
    // statement text logged just before its parameters.
    let quoted = format!("'{}'", w.posts);
    let mut statements = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("DETAIL:  parameters:") && line.contains(&quoted) {
            let stmt = lines[..i].iter().rev().find(|l| l.contains("LOG:  execute") || l.contains("LOG:  statement")).unwrap();
            statements.push(stmt.to_string());
        }
    }
    // The authors collection never appears in any statement: the references were
    // followed inside the one statement.
    assert!(!text.contains(&format!("'{}'", w.authors)), "a statement named the referenced collection");
    let (gets, lists): (Vec<_>, Vec<_>) = statements.iter().partition(|s| s.contains("baas.get_document("));
    assert_eq!(gets.len(), 1, "one statement for the expanded GET: {statements:#?}");
    assert!(gets[0].contains("baas.expand(baas.get_document("), "{}", gets[0]);
    assert_eq!(lists.len(), 1, "one statement for the expanded list: {statements:#?}");
    assert!(lists[0].contains("baas.expand_page(baas.list_documents("), "{}", lists[0]);
}

/// A value pasted n times costs n against max_expand_references: a document whose
/// field holds 100 references to itself expands one level (100 copies), but two levels
/// would paste 100 copies of it 100 times (10 000), and is refused before anything is
/// built — not after building megabytes in the backend.
#[test]
fn references_are_counted_as_copies_not_fetches() {
    let _g = SETTINGS.read().unwrap();
    let u = signup("selfref");
    let c = collection("selfref", json!({}));
    let a = create_doc(&c, Some(&u.access), json!({"name": "A"}), Some(json!({"read": ["public"]})));
    let x: Vec<Value> = (0..100).map(|_| dref(&c, &a)).collect();
    let r = call("PATCH", &doc_path(&c, &a), Some(&u.access), Some(&json!({"data": {"x": x}}).to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let one = ok(&format!("{}?expand=x", doc_path(&c, &a)), Some(&u.access));
    assert_eq!(one["data"]["x"].as_array().unwrap().len(), 100);
    assert_eq!(one["data"]["x"][99]["data"]["name"], "A");
    assert_eq!(one["data"]["x"][99]["data"]["x"][0], dref(&c, &a), "one level: the copies keep their references");
    let r = get(&format!("{}?expand=x.x", doc_path(&c, &a)), Some(&u.access));
    assert_eq!((r.status, r.code()), (400, "expand_too_large"), "{}", r.body);
    // The same over a list page.
    let r = get(&format!("{}?expand=x.x", docs_path(&c)), Some(&u.access));
    assert_eq!((r.status, r.code()), (400, "expand_too_large"), "{}", r.body);
}

/// An expansion whose pasted values would exceed the response budget
/// (baas.max_response_bytes, set by the proxy under its max_result_bytes) is refused
/// with a clear 400 response_too_large before it is built, for a GET and for a list.
#[test]
fn an_expansion_larger_than_a_response_is_refused_clearly() {
    let _g = SETTINGS.read().unwrap();
    let url = format!("{}?application_name=pgbaas-refs-small", env().cluster.authenticator_url().unwrap());
    let p = pgbaas_testkit::Proxy::start(&url, &["--max-result-bytes", "65536", "--rate-limits", "off"]).unwrap();
    let at = |path: &str, token: &str| request_at(&p.base(), "GET", path, Some(token), &[], None);
    let u = signup("bigref");
    let c = collection("bigref", json!({}));
    // 5 KB each; the page budget is 60 KiB.
    let big = create_doc(&c, Some(&u.access), json!({"blob": "x".repeat(5000)}), Some(json!({"read": ["public"]})));
    let many = create_doc(&c, Some(&u.access), json!({"co": vec![dref(&c, &big); 20]}), Some(json!({"read": ["public"]})));
    let few = create_doc(&c, Some(&u.access), json!({"co": vec![dref(&c, &big); 5]}), Some(json!({"read": ["public"]})));
    let r = at(&format!("{}?expand=co", doc_path(&c, &few)), &u.access);
    assert_eq!(r.status, 200, "25 KB fits: {}", r.body);
    assert_eq!(r.body["data"]["co"][4]["data"]["blob"].as_str().unwrap().len(), 5000);
    let r = at(&format!("{}?expand=co", doc_path(&c, &many)), &u.access);
    assert_eq!((r.status, r.code()), (400, "response_too_large"), "100 KB does not: {}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("max_response_bytes"), "{}", r.body);
    // A list page whose items each fit but whose expansion does not.
    let posts = collection("bigref_posts", json!({}));
    for _ in 0..15 {
        create_doc(&posts, Some(&u.access), json!({"author": dref(&c, &big)}), Some(json!({"read": ["public"]})));
    }
    let r = at(&format!("{}?expand=author&limit=5", docs_path(&posts)), &u.access);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 5);
    let r = at(&format!("{}?expand=author", docs_path(&posts)), &u.access);
    assert_eq!((r.status, r.code()), (400, "response_too_large"), "75 KB of authors: {}", r.body);
}

/// Upper-case ids in stored references (Swift's uuidString) are stored lower-cased, so
/// $refs filters and back-references find them.
#[test]
fn upper_case_reference_ids_are_found_by_refs_and_referrers() {
    let _g = SETTINGS.read().unwrap();
    let w = world("upper");
    let bob = Some(w.bob.access.as_str());
    let up = create_doc(&w.posts, Some(&w.alice.access),
                        json!({"author": dref(&w.authors, &w.a_pub.to_uppercase()), "by": {"$ref": {"user": w.alice.id.to_uppercase()}}}),
                        Some(json!({"read": ["public"]})));
    let d = ok(&doc_path(&w.posts, &up), bob);
    assert_eq!(d["data"]["author"], dref(&w.authors, &w.a_pub), "stored lower-cased: {d}");
    assert_eq!(d["data"]["by"], json!({"$ref": {"user": w.alice.id.to_lowercase()}}));
    let r = get(&format!("{}/referrers?collection={}&field=author", doc_path(&w.authors, &w.a_pub), w.posts), bob);
    assert_eq!(r.status, 200, "{}", r.body);
    let ids: Vec<&str> = r.body["items"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![up.as_str()]);
    let f = json!({"by": {"$refs": {"user": w.alice.id}}});
    let r = get(&format!("{}?where={}", docs_path(&w.posts), enc(&f.to_string())), bob);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // A patch writing an upper-case id is lower-cased too.
    let r = call("PATCH", &doc_path(&w.posts, &up), Some(&w.alice.access),
                 Some(&json!({"data": {"co": [dref(&w.authors, &w.a_pub.to_uppercase())]}}).to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["co"][0], dref(&w.authors, &w.a_pub));
}
