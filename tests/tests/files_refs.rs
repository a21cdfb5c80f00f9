//! End-to-end: documents that reference files (`{"$file": "<id>"}` anywhere in data).
//! A collection with `file_refs: "restrict"` keeps its owner's referenced files from
//! being deleted; `allow` (the default) leaves the reference dangling; someone else's
//! reference never pins a file; a DBA lists the files nothing references.

mod common;
use common::files::*;
use common::*;
use serde_json::json;

fn new_file(token: &str, b: &str, name: &str) -> String {
    upload_ok(Some(token), b, name, format!("~{name}").as_bytes(), "application/octet-stream")["id"].as_str().unwrap().to_string()
}

fn delete_file(token: Option<&str>, id: &str) -> Resp {
    call("DELETE", &file_path(id), token, None)
}

#[test]
fn restrict_blocks_delete_409() {
    let b = bucket("rbucket", json!({}));
    let notes = collection("rnotes", json!({"file_refs": "restrict"}));
    let a = signup("restrict");
    let t = a.access.as_str();
    let (f1, f2) = (new_file(t, &b, "avatar.png"), new_file(t, &b, "cv.pdf"));
    let d1 = create_doc(&notes, Some(t), json!({"avatar": {"$file": f1}}), None);
    // Deep inside arrays and objects too.
    let d2 = create_doc(&notes, Some(t), json!({"list": [{"x": 1}, {"att": [{"$file": f2}]}]}), None);
    for (f, d) in [(&f1, &d1), (&f2, &d2)] {
        let r = delete_file(Some(t), f);
        assert_eq!((r.status, r.code()), (409, "file_referenced"), "{}", r.body);
        assert_eq!(download(Some(t), &file_path(f), &[]).status, 200, "a refused delete keeps the file");
        // The SQL door says the same.
        let e = admin()
            .query_one(
                "select baas.as_user($1::text::uuid, format('select baas.delete_file(%L::uuid)', $2::text))",
                &[&a.id, f],
            )
            .expect_err("delete_file of a referenced file");
        assert_eq!(e.code(), Some(&postgres::error::SqlState::FOREIGN_KEY_VIOLATION), "{e:?}");
        assert_eq!(call("GET", &doc_path(&notes, d), Some(t), None).status, 200);
    }
    // Removing the reference (a PATCH) frees the file.
    let r = call("PATCH", &doc_path(&notes, &d1), Some(t), Some(r#"{"data": {"avatar": null}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(delete_file(Some(t), &f1).status, 204);
    // Deleting the referencing document frees it as well.
    assert_eq!(call("DELETE", &doc_path(&notes, &d2), Some(t), None).status, 204);
    assert_eq!(delete_file(Some(t), &f2).status, 204);
    assert_nothing_stored(&b, &[]);
}

#[test]
fn allow_leaves_dangling() {
    let b = bucket("abucket", json!({}));
    let notes = collection("anotes", json!({}));
    let a = signup("allowref");
    let t = a.access.as_str();
    let f = new_file(t, &b, "photo.jpg");
    let d = create_doc(&notes, Some(t), json!({"photo": {"$file": f}}), None);
    assert_eq!(delete_file(Some(t), &f).status, 204);
    let r = call("GET", &doc_path(&notes, &d), Some(t), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"]["photo"]["$file"], f.as_str(), "the reference stays, dangling");
    assert_eq!(download(Some(t), &file_path(&f), &[]).status, 404);
    // A reference to a file that does not exist (yet) is allowed.
    let nowhere = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    create_doc(&notes, Some(t), json!({"later": {"$file": nowhere}}), None);
}

#[test]
fn others_refs_never_block() {
    let b = bucket("obucket", json!({}));
    let notes = collection("onotes", json!({"file_refs": "restrict"}));
    let (a, bob) = (signup("oref-a"), signup("oref-b"));
    let f = new_file(&a.access, &b, "shared.png");
    assert_eq!(
        call("PUT", &format!("{}/acl", file_path(&f)), Some(&a.access), Some(r#"{"read": ["authenticated"]}"#)).status,
        200
    );
    // Bob may read it and reference it, but cannot pin it.
    create_doc(&notes, Some(&bob.access), json!({"fav": {"$file": f}}), None);
    assert_eq!(download(Some(&bob.access), &file_path(&f), &[]).status, 200);
    let r = delete_file(Some(&a.access), &f);
    assert_eq!(r.status, 204, "bob's reference does not block alice's delete: {}", r.body);
    // Alice's own reference would have.
    let g = new_file(&a.access, &b, "mine.png");
    create_doc(&notes, Some(&a.access), json!({"me": {"$file": g}}), None);
    assert_eq!(delete_file(Some(&a.access), &g).status, 409);
}

#[test]
fn unreferenced_files_lists_them() {
    let b = bucket("ubucket", json!({}));
    let notes = collection("unotes", json!({}));
    let (a, c) = (signup("unref-a"), signup("unref-c"));
    let used = new_file(&a.access, &b, "used.bin");
    let loose = new_file(&a.access, &b, "loose.bin");
    let theirs = new_file(&c.access, &b, "theirs.bin");
    create_doc(&notes, Some(&a.access), json!({"f": {"$file": used}}), None);
    let mut db = admin();
    let ids = |db: &mut postgres::Client| -> Vec<String> {
        let rows = db.query("select id::text from baas.unreferenced_files() where collection = $1", &[&b]).unwrap();
        let mut v: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        v.sort();
        v
    };
    let mut want = vec![loose.clone(), theirs.clone()];
    want.sort();
    assert_eq!(ids(&mut db), want, "a DBA sees every unreferenced file");
    // A user is either not allowed to ask, or told only of files they can read.
    let as_a = db.query(
        "select d #>> '{id}' from baas.as_user($2::text::uuid, format('select * from baas.unreferenced_files() where collection = %L', $1::text)) d",
        &[&b, &a.id],
    );
    match as_a {
        Err(e) => assert_eq!(e.code(), Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}"),
        Ok(rows) => {
            let seen: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            assert_eq!(seen, vec![loose.clone()], "a user sees only the unreferenced files they can read");
        }
    }
    // A reference inside a document of the bucket itself counts too.
    let r = call("PATCH", &format!("{}/meta", file_path(&loose)), Some(&a.access), Some(&json!({"data": {"see": {"$file": theirs}}}).to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&mut db), vec![loose.clone()]);
}

#[test]
fn invalid_file_ref_400() {
    let notes = collection("inotes", json!({}));
    let a = signup("badref");
    let t = Some(a.access.as_str());
    for data in [json!({"f": {"$file": 5}}), json!({"f": {"$file": "not-a-uuid"}}), json!({"a": [{"$file": null}]}), json!({"$file": {"id": "x"}})] {
        let r = post(&docs_path(&notes), t, json!({"data": data}));
        assert_eq!((r.status, r.code()), (400, "invalid_file_ref"), "{data}: {}", r.body);
    }
    let d = create_doc(&notes, t, json!({"ok": true}), None);
    let r = call("PATCH", &doc_path(&notes, &d), t, Some(r#"{"data": {"f": {"$file": "nope"}}}"#));
    assert_eq!((r.status, r.code()), (400, "invalid_file_ref"), "{}", r.body);
    assert_eq!(listed_ids(&notes, t), vec![d.clone()], "nothing else stored");
    let g = call("GET", &doc_path(&notes, &d), t, None);
    assert_eq!(g.body["data"], json!({"ok": true}), "the refused PATCH changed nothing");
}
