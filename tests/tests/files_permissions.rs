//! End-to-end: the document permission matrix repeated for files (owner, granted user,
//! role member, authenticated, anonymous, revoked × read, overwrite, delete, ACL), the
//! SQL door (`baas.as_user`) seeing exactly what the HTTP door sees, revocation on the
//! very next request (and the next piece of a download in flight), signed links, and
//! the chunk rows themselves under row-level security.

mod common;
use common::files::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

struct World {
    c: String,
    a: User,
    b: User,
    files: Vec<(&'static str, String)>,
    /// A plain collection with one document per case, same ACLs: the documents' answers
    /// are the files' oracle where `matrix_expected` does not say.
    dc: String,
    docs: Vec<(&'static str, String)>,
}

fn set_acl(token: &str, id: &str, acl: &Value) -> Resp {
    call("PUT", &format!("{}/acl", file_path(id)), Some(token), Some(&acl.to_string()))
}

fn setup(tag: &str) -> World {
    let s = service_token();
    let c = bucket(tag, json!({}));
    let (a, b) = (signup(&format!("{tag}-a")), signup(&format!("{tag}-b")));
    let (cases, gone) = matrix_cases(&c, &b);
    let dc = collection(&format!("{tag}_docs"), json!({}));
    let docs = cases
        .iter()
        .map(|(name, acl)| (*name, create_doc(&dc, Some(&a.access), json!({"case": name}), Some(acl.clone()))))
        .collect::<Vec<_>>();
    let files = cases
        .into_iter()
        .map(|(name, acl)| {
            let f = upload_ok(Some(&a.access), &c, &format!("{name}.txt"), format!("case {name}").as_bytes(), "text/plain");
            let id = f["id"].as_str().unwrap().to_string();
            let r = set_acl(&a.access, &id, &acl);
            assert_eq!(r.status, 200, "{name}: {}", r.body);
            (name, id)
        })
        .collect::<Vec<_>>();
    let revoked = &files.iter().find(|(n, _)| *n == "revoked").unwrap().1;
    assert_eq!(download(Some(&b.access), &file_path(revoked), &[]).status, 200);
    assert_eq!(set_acl(&a.access, revoked, &json!({})).status, 200);
    let revoked_doc = &docs.iter().find(|(n, _)| *n == "revoked").unwrap().1;
    assert_eq!(call("PUT", &format!("{}/acl", doc_path(&dc, revoked_doc)), Some(&a.access), Some("{}")).status, 200);
    let removed = &files.iter().find(|(n, _)| *n == "role_removed").unwrap().1;
    assert_eq!(download(Some(&b.access), &file_path(removed), &[]).status, 200);
    assert_eq!(call("DELETE", &format!("/v1/roles/{gone}/members/{}", b.id), Some(&s), None).status, 204);
    World { c, a, b, files, dc, docs }
}

fn visible(w: &World, who: Option<&str>) -> BTreeSet<String> {
    matrix_visible(&w.files, &w.a.access, who)
}

#[test]
fn file_matrix_over_http() {
    let w = setup("fmatrix");
    for (who, token) in [("a", Some(w.a.access.as_str())), ("b", Some(w.b.access.as_str())), ("anon", None)] {
        let got: BTreeSet<String> = listed_ids(&w.c, token).into_iter().collect();
        assert_eq!(got, visible(&w, token), "listing of the bucket as {who}");
    }
    for (name, id) in &w.files {
        let (b, anon) = matrix_expected(name);
        for (who, token, want) in [("b", Some(w.b.access.as_str()), b), ("anon", None, anon)] {
            let d = download(token, &file_path(id), &[]);
            assert_eq!(d.status, want[0], "{who} GET {name}");
            if want[0] == 404 {
                assert_eq!(d.code(), "file_not_found", "{who} GET {name}: unreadable looks like missing");
            } else {
                assert!(d.body.starts_with(b"case ") || d.body.starts_with(b"by "), "{who} GET {name}");
            }
            let m = call("GET", &format!("{}/meta", file_path(id)), token, None);
            assert_eq!(m.status, want[0], "{who} GET {name}/meta: {}", m.body);
            let r = replace(token, id, format!("by {who}").as_bytes(), "text/plain", None);
            assert_eq!(r.status, want[1], "{who} PUT {name}: {}", r.body);
            match want[1] {
                403 => assert_eq!(r.code(), "forbidden"),
                404 => assert_eq!(r.code(), "file_not_found"),
                _ => assert_eq!(r.body["owner"], w.a.id.as_str(), "an overwrite keeps the owner"),
            }
            // Only the owner sees and changes the ACL: exactly as for documents.
            let doc = &w.docs.iter().find(|(n, _)| n == name).unwrap().1;
            for (m, body) in [("GET", None), ("PUT", Some(r#"{"read": ["public"]}"#))] {
                let f = call(m, &format!("{}/acl", file_path(id)), token, body);
                let d = call(m, &format!("{}/acl", doc_path(&w.dc, doc)), token, body);
                assert_eq!(f.status, d.status, "{who} {m} {name}/acl: file {} vs document {}", f.body, d.body);
                assert_ne!(f.status, 200, "{who} {m} {name}/acl: {}", f.body);
                if f.status == 404 {
                    assert_eq!(f.code(), "file_not_found", "{who} {m} {name}/acl: {}", f.body);
                }
            }
            if want[2] != 204 || who == "anon" || anon[2] != 204 {
                let r = call("DELETE", &file_path(id), token, None);
                assert_eq!(r.status, want[2], "{who} DELETE {name}: {}", r.body);
                if want[2] == 204 {
                    assert_eq!(download(Some(&w.a.access), &file_path(id), &[]).status, 404, "{name} deleted");
                    break;
                }
            }
        }
    }
    for (name, id) in &w.files {
        let g = download(Some(&w.a.access), &file_path(id), &[]);
        if g.status == 404 {
            assert!(matches!(*name, "delete_b" | "role_delete" | "public_delete"), "{name} vanished");
            continue;
        }
        assert_eq!(g.status, 200, "owner GET {name}");
        assert_eq!(replace(Some(&w.a.access), id, b"by a", "text/plain", None).status, 200, "owner PUT {name}");
        assert_eq!(set_acl(&w.a.access, id, &json!({"read": ["public"]})).status, 200, "owner PUT {name}/acl");
        assert_eq!(call("DELETE", &file_path(id), Some(&w.a.access), None).status, 204, "owner DELETE {name}");
    }
    assert_nothing_stored(&w.c, &[]);
}

fn blob_of(id: &str) -> String {
    admin().query_one("select blob_id::text from baas.documents where id = $1::text::uuid", &[&id]).unwrap().get(0)
}

#[test]
fn sql_door_sees_what_http_sees() {
    let w = setup("fdoors");
    let mut db = admin();
    for (who, token, uid) in [
        ("a", Some(w.a.access.as_str()), Some(w.a.id.as_str())),
        ("b", Some(w.b.access.as_str()), Some(w.b.id.as_str())),
        ("anon", None, None),
    ] {
        let rows = db
            .query(
                "select d from baas.as_user($1::text::uuid, format('select * from baas.files where collection = %L', $2::text)) d",
                &[&uid, &w.c],
            )
            .unwrap();
        let sql: Vec<Value> = rows.iter().map(|r| r.get(0)).collect();
        let sql_ids: BTreeSet<String> = sql.iter().map(|f| f["id"].as_str().unwrap().to_string()).collect();
        assert_eq!(sql_ids, visible(&w, token), "baas.files as {who}");
        for (name, id) in &w.files {
            let d = download(token, &file_path(id), &[]);
            let meta = call("GET", &format!("{}/meta", file_path(id)), token, None);
            assert_eq!(d.status == 200, sql_ids.contains(id), "{who} {name}: HTTP {} vs baas.files", d.status);
            let blob = blob_of(id);
            let read: i64 = db
                .query_one(
                    "select count(*) from baas.as_user($1::text::uuid, format('select data from baas.file_read(%L::uuid, 0, 1024)', $2::text))",
                    &[&uid, &blob],
                )
                .unwrap()
                .get(0);
            assert_eq!(read > 0, d.status == 200, "{who} {name}: baas.file_read vs HTTP {}", d.status);
            if d.status == 200 {
                let row = sql.iter().find(|f| f["id"] == id.as_str()).unwrap();
                for k in ["name", "size", "content_type", "sha256", "owner", "acl", "version"] {
                    assert_eq!(row[k], meta.body[k], "{who} {name}: baas.files.{k} vs GET meta");
                }
                assert_eq!(row["sha256"], sha256_hex(&d.body).as_str());
            }
        }
    }
}

#[test]
fn revoked_reader_refused_next_request() {
    let c = bucket("frevoke", json!({}));
    let s = service_token();
    let (a, b) = (signup("frevoke-a"), signup("frevoke-b"));
    let n = 16 * MIB;
    let data = bytes(5, n);
    let id = upload_ok(Some(&a.access), &c, "big.bin", &data, "application/octet-stream")["id"].as_str().unwrap().to_string();
    assert_eq!(set_acl(&a.access, &id, &json!({"read": [format!("user:{}", b.id)]})).status, 200);
    assert_eq!(download(Some(&b.access), &file_path(&id), &[]).status, 200);
    // A download in flight: the revocation ends it at the next piece.
    let mut conn = RawConn::open_small_window();
    conn.send(raw_head("GET", &file_path(&id), Some(&b.access), &[]).as_bytes()).unwrap();
    let h = conn.head();
    assert_eq!(h.status, 200);
    let first = conn.body(MIB as u64);
    assert_eq!(first.len(), MIB);
    assert_eq!(set_acl(&a.access, &id, &json!({})).status, 200);
    let rest = conn.body((n - MIB) as u64);
    assert!(MIB + rest.len() < n, "the revoked reader received the whole file");
    // The very next request.
    let d = download(Some(&b.access), &file_path(&id), &[]);
    assert_eq!((d.status, d.code().as_str()), (404, "file_not_found"));
    assert_eq!(call("GET", &format!("{}/meta", file_path(&id)), Some(&b.access), None).status, 404);
    // Through a role: removing the member is as immediate.
    let role = format!("{c}_r");
    assert_eq!(post("/v1/roles", Some(&s), json!({"name": role})).status, 201);
    assert_eq!(call("PUT", &format!("/v1/roles/{role}/members/{}", b.id), Some(&s), None).status, 204);
    assert_eq!(set_acl(&a.access, &id, &json!({"read": [format!("role:{role}")]})).status, 200);
    assert_eq!(download(Some(&b.access), &file_path(&id), &[("Range", "bytes=0-9")]).status, 206);
    assert_eq!(call("DELETE", &format!("/v1/roles/{role}/members/{}", b.id), Some(&s), None).status, 204);
    assert_eq!(download(Some(&b.access), &file_path(&id), &[("Range", "bytes=0-9")]).status, 404);
}

/// The path and query of a link's `url` (absolute when the proxy knows its public URL).
fn link_path(link: &Value) -> String {
    let url = link["url"].as_str().unwrap_or_else(|| panic!("no url: {link}"));
    match url.find("/v1/") {
        Some(i) => url[i..].to_string(),
        None => panic!("link url {url}"),
    }
}

fn make_link(token: &str, id: &str, body: Value) -> Resp {
    call("POST", &format!("{}/link", file_path(id)), Some(token), Some(&body.to_string()))
}

#[test]
fn signed_link_works_expires_and_dies_on_revocation() {
    let c = bucket("flink", json!({}));
    let (a, b) = (signup("flink-a"), signup("flink-b"));
    let t = a.access.as_str();
    let data = bytes(9, 5000);
    let id = upload_ok(Some(t), &c, "img.bin", &data, "application/octet-stream")["id"].as_str().unwrap().to_string();
    let other = upload_ok(Some(t), &c, "other.bin", b"~other", "application/octet-stream")["id"].as_str().unwrap().to_string();

    let r = make_link(t, &id, json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    for k in ["url", "token", "expires_at"] {
        assert!(r.body.get(k).is_some(), "{k}: {}", r.body);
    }
    let path = link_path(&r.body);
    assert!(path.starts_with(&format!("{}?", file_path(&id))) && path.contains("sig="), "{path}");
    let d = download(None, &path, &[]);
    assert_eq!(d.status, 200, "the link works without a token");
    assert!(d.body == data);
    // Both a token and a link: refused.
    assert_eq!(download(Some(t), &path, &[]).status, 400);
    // The link is no access token.
    let sig = r.body["token"].as_str().unwrap();
    assert_eq!(call("GET", "/v1/auth/user", Some(sig), None).status, 401, "a link token is not a bearer token");
    // Bound to its file.
    let wrong = format!("{}?sig={}", file_path(&other), enc(sig));
    let d = download(None, &wrong, &[]);
    assert_eq!((d.status, d.code().as_str()), (401, "invalid_link"), "a link of another file");
    let d = download(None, &format!("{}?sig=garbage", file_path(&id)), &[]);
    assert_eq!((d.status, d.code().as_str()), (401, "invalid_link"));
    // ttl: 1..300 seconds; users only; readers only.
    for ttl in [0, 301, -5] {
        let r = make_link(t, &id, json!({"ttl": ttl}));
        assert_eq!(r.status, 400, "ttl {ttl}: {}", r.body);
    }
    let r = call("POST", &format!("{}/link", file_path(&id)), None, Some("{}"));
    assert_eq!(r.status, 401, "anonymous callers get no links: {}", r.body);
    let r = make_link(&b.access, &id, json!({}));
    assert_eq!(r.status, 404, "no link to a file one cannot read: {}", r.body);
    // Expiry.
    let short = make_link(t, &id, json!({"ttl": 1}));
    assert_eq!(short.status, 200, "{}", short.body);
    // exp is in whole seconds (and valid through its last second): wait past it.
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let d = download(None, &link_path(&short.body), &[]);
    assert_eq!((d.status, d.code().as_str()), (401, "invalid_link"), "an expired link");
    // Revocation: b's link dies with b's read grant.
    assert_eq!(set_acl(t, &id, &json!({"read": [format!("user:{}", b.id)]})).status, 200);
    let bl = make_link(&b.access, &id, json!({}));
    assert_eq!(bl.status, 200, "{}", bl.body);
    assert_eq!(download(None, &link_path(&bl.body), &[]).status, 200);
    assert_eq!(set_acl(t, &id, &json!({})).status, 200);
    let d = download(None, &link_path(&bl.body), &[]);
    // The link itself is still valid (signature, session): the read is what fails.
    assert_eq!((d.status, d.code().as_str()), (404, "file_not_found"), "a revoked reader's link");
    // Logout: the link dies with its session.
    assert_eq!(set_acl(t, &id, &json!({"read": [format!("user:{}", b.id)]})).status, 200);
    let bl = make_link(&b.access, &id, json!({}));
    assert_eq!(download(None, &link_path(&bl.body), &[]).status, 200);
    assert_eq!(call("POST", "/v1/auth/logout", Some(&b.access), None).status, 204);
    assert_eq!(download(None, &link_path(&bl.body), &[]).status, 401, "the link of a session that ended");
    // A new version: the link was for the old one.
    let r = make_link(t, &id, json!({}));
    assert_eq!(download(None, &link_path(&r.body), &[]).status, 200);
    assert_eq!(replace(Some(t), &id, b"~version two", "application/octet-stream", None).status, 200);
    let d = download(None, &link_path(&r.body), &[]);
    // file_get is pinned to the link's version: the new one is not that file.
    assert_eq!((d.status, d.code().as_str()), (404, "file_not_found"), "a link of a replaced version");
}

/// Run `sql` as `user` (None: anonymous) the way the proxy does: claims, then the role.
fn as_role(user: Option<&str>, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<u64, postgres::Error> {
    let mut db = admin();
    let mut tx = db.transaction().unwrap();
    match user {
        Some(u) => {
            tx.execute("select set_config('baas.claims', $1, true)", &[&json!({"sub": u, "role": "baas_user"}).to_string()]).unwrap();
            tx.batch_execute("set local role baas_user").unwrap();
        }
        None => tx.batch_execute("set local role baas_anon").unwrap(),
    }
    let r = tx.execute(sql, params);
    if r.is_ok() {
        tx.commit().unwrap();
    }
    r
}

fn count_as(user: Option<&str>, sql: &str, blob: &str) -> i64 {
    admin()
        .query_one(&format!("select count(*) from baas.as_user($1::text::uuid, format('{sql}', $2::text))"), &[&user, &blob])
        .unwrap()
        .get(0)
}

#[test]
fn chunks_unreadable_without_document() {
    let c = bucket("fchunks", json!({}));
    let (a, b) = (signup("fchunks-a"), signup("fchunks-b"));
    let id = upload_ok(Some(&a.access), &c, "secret.bin", &bytes(3, 2 * MIB + 3), "application/octet-stream")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = blob_of(&id);
    let chunks = "select * from baas._file_chunks where blob_id = %L::uuid";
    let blobs = "select * from baas._blobs where id = %L::uuid";
    assert_eq!(count_as(Some(&a.id), chunks, &blob), 3, "the owner reads the chunk rows");
    assert_eq!(count_as(Some(&a.id), blobs, &blob), 1);
    for (who, u) in [("b", Some(b.id.as_str())), ("anon", None)] {
        assert_eq!(count_as(u, chunks, &blob), 0, "{who} reads chunks of a blob it may not see");
        assert_eq!(count_as(u, blobs, &blob), 0, "{who} reads the blob row");
        assert_eq!(count_as(u, "select * from baas._thumbnails where source_blob = %L::uuid", &blob), 0);
    }
    // Nobody but the definer functions writes the private tables, or reads the sessions.
    for sql in [
        "insert into baas._file_chunks (blob_id, off, data) values ($1::text::uuid, 999999999, '\\x00')",
        "delete from baas._file_chunks where blob_id = $1::text::uuid",
        "update baas._blobs set size = 1 where id = $1::text::uuid",
        "delete from baas._blobs where id = $1::text::uuid",
        "select from baas._uploads where blob_id = $1::text::uuid",
    ] {
        for u in [Some(a.id.as_str()), None] {
            let e = as_role(u, sql, &[&blob]).expect_err(sql);
            assert_eq!(e.code(), Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{sql}: {e:?}");
        }
    }
    // A grant makes them readable, through the document only.
    assert_eq!(set_acl(&a.access, &id, &json!({"read": [format!("user:{}", b.id)]})).status, 200);
    assert_eq!(count_as(Some(&b.id), chunks, &blob), 3);
    assert_eq!(stored_chunks(&id).2, 2 * MIB as i64 + 3, "the chunks are intact");
}

#[test]
fn blob_id_cannot_be_forged() {
    let c = bucket("fforge", json!({}));
    let (a, b) = (signup("fforge-a"), signup("fforge-b"));
    let secret = bytes(4, 3000);
    let fa = upload_ok(Some(&a.access), &c, "a.bin", &secret, "application/octet-stream")["id"].as_str().unwrap().to_string();
    let gb = upload_ok(Some(&b.access), &c, "b.bin", b"~mine", "application/octet-stream");
    let g = gb["id"].as_str().unwrap().to_string();
    let blob_a = blob_of(&fa);
    let e = as_role(Some(&b.id), "update baas.documents set blob_id = $1::text::uuid where id = $2::text::uuid", &[&blob_a, &g])
        .expect_err("b points its file at a's bytes");
    assert_eq!(e.code(), Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{e:?}");
    let e = as_role(
        Some(&b.id),
        "insert into baas.documents (collection_id, id, owner, data, blob_id)
         select c.id, gen_random_uuid(), $2::text::uuid, '{}', $1::text::uuid from baas.collections c where c.name = $3",
        &[&blob_a, &b.id, &c],
    )
    .expect_err("b inserts a document holding a's blob");
    assert!(
        e.code() == Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) || e.code() == Some(&postgres::error::SqlState::INVALID_PARAMETER_VALUE),
        "{e:?}"
    );
    // The file column is recomputed from the blob: a rename works, a fake size or sha does not.
    as_role(
        Some(&b.id),
        "update baas.documents set file = '{\"name\": \"renamed.bin\", \"size\": 3000, \"sha256\": \"00\", \"content_type\": \"image/png\"}' where id = $1::text::uuid",
        &[&g],
    )
    .expect("b renames its own file");
    let m = call("GET", &format!("{}/meta", file_path(&g)), Some(&b.access), None);
    assert_eq!(m.body["name"], "renamed.bin", "{}", m.body);
    assert_eq!((&m.body["size"], &m.body["sha256"], &m.body["content_type"]), (&gb["size"], &gb["sha256"], &gb["content_type"]), "{}", m.body);
    // b's file still serves b's bytes, and a's file is still a's.
    assert_eq!(download(Some(&b.access), &file_path(&g), &[]).body, b"~mine");
    assert!(download(Some(&a.access), &file_path(&fa), &[]).body == secret);
    // A document of a bucket comes only from an upload.
    let r = post(&docs_path(&c), Some(&b.access), json!({"data": {"x": 1}}));
    assert_eq!((r.status, r.code()), (400, "use_file_upload"), "{}", r.body);
}
