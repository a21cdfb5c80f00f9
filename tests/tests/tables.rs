//! Protected tables over HTTP (issue 17, package C; docs/tables.md "Over HTTP"): the
//! document permission matrix replayed on a relational table protected with
//! baas.protect, over HTTP and through baas.as_user with identical answers; typed
//! filters that a btree index serves; injection strings in every slot; wrong-typed
//! values refused naming the column; If-Match; what is not served; numeric, timestamp
//! and bytea round trips. Real cluster, real proxy, real HTTP.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::OnceLock;

/// The exposed schema `app` (usable by the API roles) and a helper schema for EXPLAIN.
fn schema() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        admin()
            .batch_execute(
                "create schema app;
                 grant usage on schema app to baas_anon, baas_user, baas_service;
                 select baas.expose_schema('app');
                 create schema plan_util;
                 grant usage on schema plan_util to baas_anon, baas_user, baas_service;
                 -- The plan of the list statement the tables door runs, as the caller.
                 create function plan_util.list_plan(tbl text, filter jsonb) returns text
                 language plpgsql volatile as $$
                 declare
                     q jsonb := baas._table_list_sql(baas._served_table(tbl), filter, null, null, null);
                     p text[] := array(select jsonb_array_elements_text(q -> 'params'));
                     line text;
                     plan text := '';
                 begin
                     for line in execute 'explain ' || (q ->> 'sql') using p, 100, 0 loop
                         plan := plan || line || E'\\n';
                     end loop;
                     return plan;
                 end $$;
                 grant execute on function plan_util.list_plan(text, jsonb) to baas_anon, baas_user, baas_service;",
            )
            .expect("schemas");
    });
}

/// A fresh protected table in `app`: `columns` after an id, an owner, an ACL and a
/// version column; returns its name.
fn table(tag: &str, columns: &str, version: bool) -> String {
    schema();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!("{tag}_{}", N.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    let (vcol, varg) = if version { (", version bigint not null default 1", ", version => 'version'") } else { ("", "") };
    admin()
        .batch_execute(&format!(
            "create table app.{name} (id bigint generated always as identity primary key, owner uuid, acl jsonb{vcol}{columns});
             select baas.protect('app.{name}', owner => 'owner', acl => 'acl'{varg});"
        ))
        .expect("protected table");
    name
}

fn rows_path(t: &str) -> String {
    format!("/v1/tables/{}", enc(t))
}

fn row_path(t: &str, key: &str) -> String {
    format!("/v1/tables/{}/{}", enc(t), enc(key))
}

fn insert(t: &str, token: Option<&str>, row: Value) -> Value {
    let r = call("POST", &rows_path(t), token, Some(&row.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

fn listed(t: &str, token: Option<&str>, query: &str) -> Resp {
    call("GET", &format!("{}?{query}", rows_path(t)), token, None)
}

fn ids_of(items: &Value) -> BTreeSet<String> {
    items.as_array().unwrap().iter().map(|r| r["id"].to_string()).collect()
}

/// What `baas.as_user` answers for one door call, as the HTTP status the proxy would
/// give: the call runs in a transaction that is rolled back, so nothing changes.
fn as_user_status(db: &mut postgres::Client, uid: Option<&str>, sql: &str, ok: u16) -> u16 {
    let mut tx = db.transaction().unwrap();
    let r = tx.query("select x from baas.as_user($1::text::uuid, $2) x", &[&uid, &sql]);
    let status = match r {
        Ok(_) => ok,
        Err(e) => {
            let e = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
            match (e.code().code(), e.detail()) {
                ("P0002", _) => 404,
                ("42501", Some("forbidden")) => 403,
                ("42501", _) if uid.is_none() => 401,
                ("42501", _) => 403,
                (c, d) => panic!("{sql}: {c} {d:?} {}", e.message()),
            }
        }
    };
    tx.rollback().unwrap();
    status
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The document matrix (tests/tests/common: matrix_cases, matrix_expected) on a table:
/// A inserts one row per case with that ACL; B and the anonymous caller read, update
/// and delete each, over HTTP and through baas.as_user, with the same answers; listings
/// and counts agree too.
#[test]
fn the_permission_matrix_on_a_table_is_the_documents_one_over_http_and_sql() {
    let t = table("matrix", ", case_name text", true);
    let (a, b) = (signup("tbl-a"), signup("tbl-b"));
    let s = service_token();
    let (cases, gone) = matrix_cases(&t, &b);
    let rows: Vec<(&'static str, String)> = cases
        .into_iter()
        .map(|(name, acl)| {
            let r = insert(&t, Some(&a.access), json!({"case_name": name, "acl": acl}));
            assert_eq!(r["owner"], json!(a.id), "the owner is filled with the caller: {r}");
            (name, r["id"].to_string())
        })
        .collect();
    let key = |name: &str| rows.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    // Revocation and membership removal take effect on the next request.
    assert_eq!(call("GET", &row_path(&t, &key("revoked")), Some(&b.access), None).status, 200);
    let r = call("PATCH", &row_path(&t, &key("revoked")), Some(&a.access), Some(r#"{"acl": {}}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(call("GET", &row_path(&t, &key("role_removed")), Some(&b.access), None).status, 200);
    assert_eq!(call("DELETE", &format!("/v1/roles/{gone}/members/{}", b.id), Some(&s), None).status, 204);

    let mut db = admin();
    let who = [("a", Some(a.access.as_str()), Some(a.id.as_str())), ("b", Some(b.access.as_str()), Some(b.id.as_str())), ("anon", None, None)];
    // Listings and counts, both doors.
    for (name, token, uid) in who {
        let want = matrix_visible(&rows, &a.access, token);
        let r = listed(&t, token, "limit=1000&count=true");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(ids_of(&r.body["items"]), want, "HTTP listing as {name}");
        assert_eq!(r.body["count"], json!(want.len()), "count as {name}");
        let v: Value = db
            .query_one("select baas.as_user($1::text::uuid, format('select baas.table_list(%L, lim => 1000)', $2::text))", &[&uid, &t])
            .unwrap()
            .get(0);
        let mut page = r.body.clone();
        page.as_object_mut().unwrap().remove("count");
        assert_eq!(v, page, "as_user = HTTP as {name}");
    }
    // Every verb: as_user first (rolled back), then HTTP for real; the same answers.
    // Every cell is compared: when a caller's DELETE took the row, the owner puts an
    // equal row back (same name and ACL) for the next caller.
    for (name, k0) in &rows {
        let (bw, anonw) = matrix_expected(name);
        let acl = call("GET", &row_path(&t, k0), Some(&a.access), None).body["acl"].clone();
        let mut k = k0.clone();
        for (who, token, uid, want) in [("b", Some(b.access.as_str()), Some(b.id.as_str()), bw), ("anon", None, None, anonw)] {
            let path = row_path(&t, &k);
            let sql_get = format!("select data from baas.table_get({}, {})", lit(&t), lit(&k));
            let sql_patch = format!("select data from baas.table_update({}, {}, '{{\"case_name\": \"x\"}}')", lit(&t), lit(&k));
            let sql_delete = format!("select baas.table_delete({}, {})", lit(&t), lit(&k));
            let sql = [
                as_user_status(&mut db, uid, &sql_get, 200),
                as_user_status(&mut db, uid, &sql_patch, 200),
                as_user_status(&mut db, uid, &sql_delete, 204),
            ];
            let r = call("GET", &path, token, None);
            assert_eq!(r.status, want[0], "{who} GET {name}: {}", r.body);
            if want[0] == 404 {
                assert_eq!(r.code(), "row_not_found", "unreadable looks like missing");
            } else {
                assert_eq!(r.body["case_name"], json!(name));
            }
            let r = call("PATCH", &path, token, Some(&json!({"case_name": name}).to_string()));
            assert_eq!(r.status, want[1], "{who} PATCH {name}: {}", r.body);
            if want[1] == 403 {
                assert_eq!(r.code(), "forbidden");
            }
            let p = r.status;
            let r = call("DELETE", &path, token, None);
            assert_eq!(r.status, want[2], "{who} DELETE {name}: {}", r.body);
            let http = [want[0], p, r.status];
            assert_eq!(sql, http, "{who} {name}: baas.as_user answers as HTTP does");
            if r.status == 204 {
                assert_eq!(call("GET", &path, Some(&a.access), None).status, 404, "{who} deleted {name}");
                k = insert(&t, Some(&a.access), json!({"case_name": name, "acl": acl}))["id"].to_string();
            }
        }
    }
    // The owner may do everything to what is left.
    for (name, k) in &rows {
        let path = row_path(&t, k);
        let g = call("GET", &path, Some(&a.access), None);
        if g.status == 404 {
            assert!(matches!(*name, "delete_b" | "role_delete" | "public_delete"), "{name} vanished");
            continue;
        }
        assert_eq!(g.status, 200, "owner GET {name}");
        assert_eq!(call("PATCH", &path, Some(&a.access), Some(r#"{"case_name": "a"}"#)).status, 200);
        assert_eq!(call("DELETE", &path, Some(&a.access), None).status, 204, "owner DELETE {name}");
    }
    // Anonymous callers cannot insert (create defaults to authenticated).
    let r = call("POST", &rows_path(&t), None, Some(r#"{"case_name": "anon"}"#));
    assert_eq!(r.status, 401, "{}", r.body);
}

/// Filters compare in the column's type, and a btree index on the column serves them:
/// the plan of the statement the door runs, taken as the caller.
#[test]
fn typed_filters_use_the_column_type_and_its_btree_index() {
    let t = table("typed", ", qty integer, price numeric, at timestamptz, label text", false);
    let a = signup("tbl-typed");
    let mut db = admin();
    db.batch_execute(&format!(
        "create index {t}_qty on app.{t} (qty);
         insert into app.{t} (owner, acl, qty, price, at, label)
           select '{}', '{{\"read\": [\"public\"]}}', g, g / 10.0, '2026-01-01T00:00:00Z'::timestamptz + g * interval '1 hour', 'n' || g
             from generate_series(1, 3000) g;
         analyze app.{t};",
        a.id
    ))
    .unwrap();
    // As numbers: 9 < 10 (as text "9" > "10").
    let r = listed(&t, Some(&a.access), &format!("where={}&order=-qty&fields=qty", enc(r#"{"qty": {"$gte": "9", "$lt": 11}}"#)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"], json!([{"qty": 10}, {"qty": 9}]));
    // numeric and timestamptz compare as such.
    let r = listed(&t, None, &format!("where={}&fields=id,qty", enc(r#"{"price": {"$gt": "299.95"}}"#)));
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1), "{}", r.body);
    assert_eq!(r.body["items"][0]["qty"], json!(3000));
    let r = listed(&t, None, &format!("where={}&fields=qty", enc(r#"{"at": {"$lte": "2026-01-01T03:00:00+01:00"}}"#)));
    assert_eq!(r.body["items"], json!([{"qty": 1}, {"qty": 2}]), "an instant, whatever its offset");
    let r = listed(&t, None, &format!("where={}&fields=qty", enc(r#"{"label": {"$in": ["n5", "n7", "zz"]}}"#)));
    assert_eq!(r.body["items"], json!([{"qty": 5}, {"qty": 7}]));
    // Text conditions on a text column; a number column has no text to match.
    let r = listed(&t, None, &format!("where={}&fields=qty&order=qty", enc(r#"{"label": {"$iprefix": "N29", "$suffix": "99"}}"#)));
    assert_eq!(r.body["items"], json!([{"qty": 299}, {"qty": 2999}]), "{}", r.body);
    let r = listed(&t, None, &format!("where={}", enc(r#"{"qty": {"$prefix": "1"}}"#)));
    let (s, c, m) = code_and_message(&r);
    assert_eq!((s, c.as_str()), (400, "invalid_query"), "{}", r.body);
    assert!(m.contains("$prefix") && m.contains("qty"), "{m}");
    // Regular expressions on a text column, folded or not; not on a number column.
    let r = listed(&t, None, &format!("where={}&fields=qty&order=qty", enc(r#"{"label": {"$iregex": "^N1[0-2]?5$"}}"#)));
    assert_eq!(r.body["items"], json!([{"qty": 15}, {"qty": 105}, {"qty": 115}, {"qty": 125}]), "{}", r.body);
    let r = listed(&t, None, &format!("where={}&fields=qty", enc(r#"{"label": {"$regex": "^N1"}}"#)));
    assert_eq!(r.body["items"], json!([]), "case-sensitive without the i");
    let r = listed(&t, None, &format!("where={}", enc(r#"{"qty": {"$regex": "1"}}"#)));
    let (s, c, m) = code_and_message(&r);
    assert_eq!((s, c.as_str()), (400, "invalid_query"), "{}", r.body);
    assert!(m.contains("$regex") && m.contains("qty"), "{m}");
    let r = listed(&t, None, &format!("where={}", enc(r#"{"label": {"$regex": "(n)\\1"}}"#)));
    let (s, c, m) = code_and_message(&r);
    assert_eq!((s, c.as_str()), (400, "invalid_query"), "{}", r.body);
    assert!(m.contains("label.$regex") && m.contains("backreferences"), "{m}");

    for uid in [Some(a.id.as_str()), None] {
        let plan: String = db
            .query_one(
                "select baas.as_user($1::text::uuid, format('select plan_util.list_plan(%L, %L)', $2::text, $3::text)) #>> '{}'",
                &[&uid, &t, &r#"{"qty": {"$gte": 100, "$lt": 105}}"#],
            )
            .unwrap()
            .get(0);
        assert!(plan.contains(&format!("{t}_qty")), "the qty index serves the filter as {uid:?}:\n{plan}");
        assert!(!plan.contains(&format!("Seq Scan on {t}")), "{plan}");
    }
    // Keyset paging with the key as `after`.
    let p1 = listed(&t, None, &format!("where={}&limit=2&fields=qty", enc(r#"{"qty": {"$lte": 5}}"#)));
    assert_eq!(p1.body["items"], json!([{"qty": 1}, {"qty": 2}]));
    let next = p1.body["next"].as_str().unwrap().to_string();
    let p2 = listed(&t, None, &format!("where={}&limit=2&fields=qty&after={}", enc(r#"{"qty": {"$lte": 5}}"#), enc(&next)));
    assert_eq!(p2.body["items"], json!([{"qty": 3}, {"qty": 4}]), "{}", p2.body);
    let p3 = listed(&t, None, &format!("where={}&limit=2&fields=qty&after={}", enc(r#"{"qty": {"$lte": 5}}"#), enc(p2.body["next"].as_str().unwrap())));
    assert_eq!((p3.body["items"].clone(), p3.body["next"].clone()), (json!([{"qty": 5}]), Value::Null));
}

/// Wrong-typed values and unknown names are 400s naming the column; nothing a client
/// sends in any slot reaches SQL as text; unserved tables are 404.
#[test]
fn bad_input_injection_and_unserved_tables() {
    let t = table("inj", ", qty integer, label text, at timestamptz, x xml", true);
    let a = signup("tbl-inj");
    let tok = Some(a.access.as_str());
    let evil = "x'); drop table app.evil; --\"";
    admin().batch_execute("create table if not exists app.evil (id int primary key)").unwrap();
    let row = insert(&t, tok, json!({"qty": 1, "label": evil}));
    assert_eq!(row["label"], json!(evil), "stored verbatim");
    let k = row["id"].to_string();

    for (method, path, body, status, code, names) in [
        ("GET", format!("{}?where={}", rows_path(&t), enc(r#"{"qty": "abc"}"#)), None, 400, "invalid_query", "qty"),
        ("GET", format!("{}?where={}", rows_path(&t), enc(r#"{"at": {"$gt": "not a time"}}"#)), None, 400, "invalid_query", "at"),
        ("GET", format!("{}?where={}", rows_path(&t), enc(&json!({evil: 1}).to_string())), None, 400, "invalid_query", "drop"),
        ("GET", format!("{}?order={}", rows_path(&t), enc(evil)), None, 400, "invalid_query", "order"),
        ("GET", format!("{}?fields={}", rows_path(&t), enc("qty,x\"y")), None, 400, "invalid_query", "fields"),
        ("GET", format!("{}?after={}", rows_path(&t), enc(evil)), None, 400, "invalid_query", "after"),
        ("GET", format!("{}?where={}", rows_path(&t), enc(r#"{"x": "<a/>"}"#)), None, 400, "invalid_query", "xml"),
        ("GET", format!("{}?order=x", rows_path(&t)), None, 400, "invalid_query", "xml"),
        ("POST", rows_path(&t), Some(json!({"qty": "many"})), 400, "invalid_value", "qty"),
        ("POST", rows_path(&t), Some(json!({"at": "yesterday-ish"})), 400, "invalid_value", "at"),
        ("POST", rows_path(&t), Some(json!({"qty": [1]})), 400, "invalid_value", "qty"),
        ("POST", rows_path(&t), Some(json!({evil: 1})), 400, "invalid_value", "drop"),
        ("PATCH", row_path(&t, &k), Some(json!({"qty": 1.5})), 400, "invalid_value", "qty"),
        ("POST", rows_path(&t), Some(json!({"id": 77})), 400, "invalid_value", "generated"),
        ("PATCH", row_path(&t, &k), Some(json!({"id": 78})), 400, "invalid_value", "generated"),
        ("GET", row_path(&t, evil), None, 404, "row_not_found", ""),
        ("PATCH", row_path(&t, evil), Some(json!({"qty": 2})), 404, "row_not_found", ""),
        ("DELETE", row_path(&t, evil), None, 404, "row_not_found", ""),
        ("GET", row_path(&t, "99999999999999999999999"), None, 404, "row_not_found", ""),
        ("GET", rows_path(evil), None, 404, "table_not_found", ""),
        ("GET", row_path(evil, "1"), None, 404, "table_not_found", ""),
        ("POST", rows_path(evil), Some(json!({})), 404, "table_not_found", ""),
    ] {
        let r = call(method, &path, tok, body.map(|b| b.to_string()).as_deref());
        assert_eq!((r.status, r.code()), (status, code), "{method} {path}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(names), "{method} {path}: {}", r.body);
    }
    // A filter value holding SQL is only a value.
    let r = listed(&t, tok, &format!("where={}", enc(&json!({"label": evil}).to_string())));
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1), "{}", r.body);
    let n: i64 = admin().query_one("select count(*) from app.evil", &[]).unwrap().get(0);
    assert_eq!(n, 0, "app.evil is still there");

    // Not served: an unprotected table in an exposed schema, a protected one outside.
    admin()
        .batch_execute(
            "create table app.plain (id int primary key); insert into app.plain values (1);
             grant select on app.plain to baas_anon, baas_user, baas_service;
             create schema hidden; grant usage on schema hidden to baas_anon, baas_user, baas_service;
             create table hidden.secret (id bigint primary key, owner uuid);
             select baas.protect('hidden.secret', owner => 'owner');",
        )
        .unwrap();
    for path in ["/v1/tables/plain", "/v1/tables/plain/1", "/v1/tables/secret", "/v1/tables/secret/1", "/v1/tables/protected_tables"] {
        let r = call("GET", path, tok, None);
        assert_eq!((r.status, r.code()), (404, "table_not_found"), "{path}: {}", r.body);
    }
    let r = call("GET", "/v1/tables/plain", Some(&service_token()), None);
    assert_eq!(r.status, 404, "not even for the service role");
}

/// If-Match against the version column and against xmin: 412 with the current ETag.
#[test]
fn if_match_guards_updates_and_deletes() {
    let a = signup("tbl-etag");
    for version in [true, false] {
        let t = table("etag", ", n integer", version);
        let r = call("POST", &rows_path(&t), Some(&a.access), Some(r#"{"n": 1}"#));
        assert_eq!(r.status, 201);
        let etag = r.header("etag").expect("ETag on insert").to_string();
        let path = row_path(&t, &r.body["id"].to_string());
        let g = call("GET", &path, Some(&a.access), None);
        assert_eq!(g.header("etag"), Some(etag.as_str()));
        let u = call_with("PATCH", &path, Some(&a.access), Some(r#"{"n": 2}"#), &[("If-Match", etag.as_str())]);
        assert_eq!(u.status, 200, "{}", u.body);
        let now = u.header("etag").unwrap().to_string();
        assert_ne!(now, etag, "version moved (version column: {version})");
        let stale = call_with("PATCH", &path, Some(&a.access), Some(r#"{"n": 3}"#), &[("If-Match", etag.as_str())]);
        assert_eq!((stale.status, stale.code()), (412, "version_conflict"), "{}", stale.body);
        assert_eq!(stale.header("etag"), Some(now.as_str()), "the current version");
        let d = call_with("DELETE", &path, Some(&a.access), None, &[("If-Match", etag.as_str())]);
        assert_eq!(d.status, 412);
        assert_eq!(call("GET", &path, Some(&a.access), None).body["n"], json!(2), "the stale writes changed nothing");
        let d = call_with("DELETE", &path, Some(&a.access), None, &[("If-Match", now.as_str())]);
        assert_eq!(d.status, 204);
    }
}

/// numeric stays exact (a JSON string), timestamps are ISO 8601, bytea is base64, json
/// and arrays nest; each comes back as it went in, and filters take the same forms.
#[test]
fn numeric_timestamp_and_bytea_round_trip() {
    let t = table("types", ", price numeric, at timestamptz, day date, blob bytea, doc jsonb, tags text[], ok boolean, ratio float8", false);
    let a = signup("tbl-types");
    let bytes: Vec<u8> = (0..=255u8).chain(0..100).collect();
    let blob = common::files::b64std(&bytes);
    let price = "12345678901234567890.123456789012";
    let row = insert(
        &t,
        Some(&a.access),
        json!({"price": price, "at": "2026-03-04T05:06:07.123456Z", "day": "2026-03-04", "blob": blob,
               "doc": {"a": [1, {"b": null}]}, "tags": ["x", "y,z"], "ok": true, "ratio": 0.25}),
    );
    assert_eq!(row["price"], json!(price), "numeric is an exact string");
    let at = row["at"].as_str().unwrap();
    assert!(at.starts_with("2026-03-04T") && at.contains(".123456"), "ISO 8601: {at}");
    let same: bool = admin().query_one("select $1::text::timestamptz = '2026-03-04T05:06:07.123456Z'", &[&at]).unwrap().get(0);
    assert!(same, "{at} is the instant sent");
    assert_eq!(row["day"], json!("2026-03-04"));
    assert_eq!(row["blob"], json!(blob), "bytea is base64 without line breaks");
    assert_eq!(row["doc"], json!({"a": [1, {"b": null}]}));
    assert_eq!(row["tags"], json!(["x", "y,z"]));
    assert_eq!((row["ok"].clone(), row["ratio"].clone()), (json!(true), json!(0.25)));
    let stored: Vec<u8> = admin().query_one(&format!("select blob from app.{t}"), &[]).unwrap().get(0);
    assert_eq!(stored, bytes);
    let k = row["id"].to_string();
    let g = call("GET", &row_path(&t, &k), Some(&a.access), None);
    assert_eq!(g.body, row, "GET answers what insert did");
    for filter in [json!({"price": price}), json!({"blob": blob}), json!({"at": "2026-03-04T06:06:07.123456+01:00"}), json!({"tags": {"$contains": "y,z"}})] {
        let r = listed(&t, Some(&a.access), &format!("where={}", enc(&filter.to_string())));
        assert_eq!(ids_of(&r.body["items"]), BTreeSet::from([k.clone()]), "{filter}: {}", r.body);
    }
    // A jsonb column takes geo conditions, as documents' fields do; another column not.
    let place = insert(&t, Some(&a.access), json!({"doc": {"__type": "GeoPoint", "latitude": 59.91, "longitude": 10.75}}))["id"].to_string();
    let r = listed(&t, Some(&a.access), &format!("where={}", enc(r#"{"doc": {"$within": {"circle": {"center": [59.9, 10.7], "km": 10}}}}"#)));
    assert_eq!(ids_of(&r.body["items"]), BTreeSet::from([place.clone()]), "{}", r.body);
    let r = listed(&t, Some(&a.access), &format!("where={}", enc(r#"{"$not": {"doc": {"$within": {"box": [[50, 0], [60, 20]]}}}}"#)));
    assert_eq!(ids_of(&r.body["items"]), BTreeSet::from([k.clone()]), "{}", r.body);
    let r = listed(&t, Some(&a.access), &format!("where={}", enc(r#"{"price": {"$within": {"box": [[50, 0], [60, 20]]}}}"#)));
    assert_eq!((r.status, r.code()), (400, "invalid_query"), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("$within"), "{}", r.body);
    // And $subset (an array whose every element is listed).
    let listed_row = insert(&t, Some(&a.access), json!({"doc": ["x", 1]}))["id"].to_string();
    let r = listed(&t, Some(&a.access), &format!("where={}", enc(r#"{"doc": {"$subset": ["x", 1.0, "z"]}}"#)));
    assert_eq!(ids_of(&r.body["items"]), BTreeSet::from([listed_row]), "{}", r.body);
    let r = listed(&t, Some(&a.access), &format!("where={}", enc(r#"{"tags": {"$subset": ["x"]}}"#)));
    assert_eq!((r.status, r.code()), (400, "invalid_query"), "a text[] column: {}", r.body);
    let bad = call("POST", &rows_path(&t), Some(&a.access), Some(r#"{"blob": "not base64!"}"#));
    assert_eq!((bad.status, bad.code()), (400, "invalid_value"), "{}", bad.body);
    assert!(bad.body["error"]["message"].as_str().unwrap().contains("blob"));
    let r = call("PATCH", &row_path(&t, &k), Some(&a.access), Some(r#"{"price": null, "tags": []}"#));
    assert_eq!((r.body["price"].clone(), r.body["tags"].clone()), (Value::Null, json!([])), "{}", r.body);
}

/// A protected table made from `ddl` (a column list after `owner uuid, acl jsonb`) in
/// `app`, protected with `extra` arguments; returns its name.
fn table_of(tag: &str, ddl: &str, extra: &str) -> String {
    schema();
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!("{tag}_x{}", N.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    admin()
        .batch_execute(&format!(
            "create table app.{name} (owner uuid, acl jsonb, {ddl});
             select baas.protect('app.{name}', owner => 'owner', acl => 'acl'{extra});"
        ))
        .expect("protected table");
    name
}

fn code_and_message(r: &Resp) -> (u16, String, String) {
    (r.status, r.code().to_string(), r.body["error"]["message"].as_str().unwrap_or("").to_string())
}

/// Without a primary key rows are listed (no cursor) but not addressed; a composite
/// key is a JSON array in the path and pages like a single one.
#[test]
fn keyless_and_composite_key_tables() {
    let a = signup("tbl-keys");
    let tok = Some(a.access.as_str());
    let t = table_of("keyless", "n integer", "");
    for n in [3, 1, 2] {
        insert(&t, tok, json!({"n": n}));
    }
    let r = listed(&t, tok, "limit=2");
    assert_eq!(r.status, 200, "a keyless table lists: {}", r.body);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.body["next"], Value::Null, "no key, no cursor");
    let r = listed(&t, tok, "order=-n&fields=n");
    assert_eq!(r.body["items"], json!([{"n": 3}, {"n": 2}, {"n": 1}]), "{}", r.body);
    for (m, body) in [("GET", None), ("PATCH", Some(r#"{"n": 5}"#)), ("DELETE", None)] {
        let r = call(m, &row_path(&t, "1"), tok, body);
        let (s, c, msg) = code_and_message(&r);
        assert_eq!((s, c.as_str()), (404, "row_not_found"), "{m}: {}", r.body);
        assert!(msg.contains("no primary key"), "{m}: {msg}");
    }
    let r = listed(&t, tok, &format!("after={}", enc("WyIxIl0")));
    assert_eq!((r.status, r.code()), (400, "invalid_query"), "{}", r.body);

    let t = table_of("composite", "a integer, b text, v integer, primary key (a, b)", "");
    for (x, y) in [(1, "x"), (1, "y"), (2, "x"), (10, "a")] {
        insert(&t, tok, json!({"a": x, "b": y, "v": x * 10}));
    }
    let path = row_path(&t, r#"[1,"y"]"#);
    let g = call("GET", &path, tok, None);
    assert_eq!((g.status, g.body["a"].clone(), g.body["b"].clone()), (200, json!(1), json!("y")), "{}", g.body);
    assert_eq!(call("GET", &row_path(&t, r#"["1","y"]"#), tok, None).status, 200, "parts may be strings");
    for bad in ["1", r#"[1]"#, r#"[1,"y",3]"#, r#"[1,null]"#, r#"["one","y"]"#] {
        assert_eq!(call("GET", &row_path(&t, bad), tok, None).status, 404, "{bad}");
    }
    let p = call("PATCH", &path, tok, Some(r#"{"v": 7}"#));
    assert_eq!((p.status, p.body["v"].clone()), (200, json!(7)), "{}", p.body);
    // Pages in key order (a, then b), 10 after 2 (integers).
    let p1 = listed(&t, tok, "limit=2&fields=a,b");
    assert_eq!(p1.body["items"], json!([{"a": 1, "b": "x"}, {"a": 1, "b": "y"}]), "{}", p1.body);
    let p2 = listed(&t, tok, &format!("limit=2&fields=a,b&after={}", enc(p1.body["next"].as_str().unwrap())));
    assert_eq!(p2.body["items"], json!([{"a": 2, "b": "x"}, {"a": 10, "b": "a"}]), "{}", p2.body);
    assert_eq!(call("DELETE", &path, tok, None).status, 204);
    assert_eq!(call("GET", &path, tok, None).status, 404);
}

/// GENERATED ALWAYS columns (identity or stored) are refused by name in a new row; a
/// PATCH may send them back unchanged (a row as read), not changed.
#[test]
fn generated_columns_are_read_only() {
    let a = signup("tbl-gen");
    let tok = Some(a.access.as_str());
    let t = table_of("gen", "id bigint generated always as identity primary key, n integer, twice integer generated always as (n * 2) stored", "");
    for (body, col) in [(json!({"id": 5, "n": 1}), "id"), (json!({"n": 1, "twice": 2}), "twice")] {
        let r = call("POST", &rows_path(&t), tok, Some(&body.to_string()));
        let (s, c, m) = code_and_message(&r);
        assert_eq!((s, c.as_str()), (400, "invalid_value"), "{body}: {}", r.body);
        assert!(m.contains(col), "{m}");
    }
    let row = insert(&t, tok, json!({"n": 2}));
    assert_eq!(row["twice"], json!(4));
    let path = row_path(&t, &row["id"].to_string());
    let back = json!({"id": row["id"], "n": 3, "twice": row["twice"]});
    let r = call("PATCH", &path, tok, Some(&back.to_string()));
    assert_eq!((r.status, r.body["twice"].clone()), (200, json!(6)), "a row as read, patched back: {}", r.body);
    for (patch, col) in [(json!({"n": 4, "twice": 99}), "twice"), (json!({"n": 4, "id": 12345}), "id"), (json!({"twice": 6}), "twice")] {
        let r = call("PATCH", &path, tok, Some(&patch.to_string()));
        let (s, c, m) = code_and_message(&r);
        assert_eq!((s, c.as_str()), (400, "invalid_value"), "{patch}: {}", r.body);
        assert!(m.contains(col), "{patch}: {m}");
    }
    assert_eq!(call("GET", &path, tok, None).body["n"], json!(3), "the refused patches changed nothing");
}

/// char(n) and bit(n) keep their length (not char(1)); a char(n) key addresses its row.
#[test]
fn char_and_bit_columns_keep_their_length() {
    let a = signup("tbl-char");
    let tok = Some(a.access.as_str());
    let t = table_of("chars", "code char(10) primary key, bits bit(4), tag varchar(5)", "");
    let row = insert(&t, tok, json!({"code": "ABCDEFGH", "bits": "1010", "tag": "abc"}));
    assert_eq!((row["code"].clone(), row["bits"].clone()), (json!("ABCDEFGH"), json!("1010")), "{row}");
    let stored: String = admin().query_one(&format!("select code::text || '|' || length(code::text)::text from app.{t}"), &[]).unwrap().get(0);
    assert_eq!(stored, "ABCDEFGH|8");
    let g = call("GET", &row_path(&t, "ABCDEFGH"), tok, None);
    assert_eq!((g.status, g.body["bits"].clone()), (200, json!("1010")), "{}", g.body);
    let r = listed(&t, tok, &format!("where={}&fields=code", enc(r#"{"code": "ABCDEFGH", "bits": {"$in": ["1010"]}}"#)));
    assert_eq!(r.body["items"], json!([{"code": "ABCDEFGH"}]), "{}", r.body);
    let r = call("POST", &rows_path(&t), tok, Some(r#"{"code": "ABCDEFGHIJKLMN"}"#));
    assert_eq!(r.status, 400, "too long for char(10): {}", r.body);
}

/// Columns whose type has no equality or ordering (point, xml, json[]) are refused by
/// name in filters and `order`, not a 500; listing and writing them works.
#[test]
fn types_without_operators_are_refused_by_name() {
    let a = signup("tbl-ops");
    let tok = Some(a.access.as_str());
    let t = table_of("ops", "id bigint primary key, p point, x xml, js json[]", "");
    let row = insert(&t, tok, json!({"id": 1, "p": "(1,2)", "x": "<a/>"}));
    assert_eq!(row["p"], json!("(1,2)"), "{row}");
    for (q, col) in [
        (format!("where={}", enc(r#"{"p": "(1,2)"}"#)), "p"),
        (format!("where={}", enc(r#"{"x": {"$in": ["<a/>"]}}"#)), "x"),
        (format!("where={}", enc(r#"{"x": "<a/>"}"#)), "x"),
        (format!("where={}", enc(r#"{"js": {"$contains": 1}}"#)), "js"),
        (format!("where={}", enc(r#"{"p": {"$gt": "(0,0)"}}"#)), "p"),
        ("order=p".into(), "p"),
        ("order=-x".into(), "x"),
    ] {
        let r = listed(&t, tok, &q);
        let (s, c, m) = code_and_message(&r);
        assert_eq!((s, c.as_str()), (400, "invalid_query"), "{q}: {}", r.body);
        assert!(m.contains(col), "{q}: {m}");
    }
    let r = listed(&t, tok, &format!("where={}", enc(r#"{"p": {"$exists": true}}"#)));
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1), "{}", r.body);
}

/// A table the caller may insert into but not read: 201 with `{}`, the row stored.
#[test]
fn write_only_tables_take_inserts() {
    let a = signup("tbl-wo");
    schema();
    let t = "wo_only";
    assert_eq!(post("/v1/roles", Some(&service_token()), json!({"name": "wo_staff"})).status, 201);
    admin()
        .batch_execute(&format!(
            "create table app.{t} (id bigint generated always as identity primary key, msg text);
             select baas.protect('app.{t}', \"create\" => '{{authenticated}}', \"read\" => '{{role:wo_staff}}');"
        ))
        .expect("write-only table");
    let r = call("POST", &rows_path(t), Some(&a.access), Some(r#"{"msg": "hello"}"#));
    assert_eq!((r.status, r.body.clone()), (201, json!({})), "{}", r.body);
    assert_eq!(r.header("etag"), None, "no version to give");
    let n: i64 = admin().query_one(&format!("select count(*) from app.{t} where msg = 'hello'"), &[]).unwrap().get(0);
    assert_eq!(n, 1);
    assert_eq!(listed(t, Some(&a.access), "").body["items"], json!([]), "and it stays unreadable");
    assert_eq!(call("POST", &rows_path(t), None, Some(r#"{"msg": "x"}"#)).status, 401, "anonymous callers still may not");
}

/// `next` is a cursor of values: deleting the last row of a page or changing its order
/// column does not break or shift the next page; a forged cursor is a 400.
#[test]
fn cursors_survive_deleted_and_changed_rows() {
    let a = signup("tbl-cur");
    let tok = Some(a.access.as_str());
    let t = table_of("cur", "id bigint primary key, rank integer", "");
    for i in 1..=6 {
        insert(&t, tok, json!({"id": i, "rank": 100 - i}));
    }
    let p1 = listed(&t, tok, "limit=2&order=rank&fields=id");
    assert_eq!(p1.body["items"], json!([{"id": 6}, {"id": 5}]), "{}", p1.body);
    let next = p1.body["next"].as_str().unwrap().to_string();
    assert_eq!(call("DELETE", &row_path(&t, "5"), tok, None).status, 204);
    let p2 = listed(&t, tok, &format!("limit=2&order=rank&fields=id&after={}", enc(&next)));
    assert_eq!(p2.body["items"], json!([{"id": 4}, {"id": 3}]), "after a deleted row: {}", p2.body);
    let next = p2.body["next"].as_str().unwrap().to_string();
    // The cursor row moves to the front: the next page is still the rows after its old place.
    assert_eq!(call("PATCH", &row_path(&t, "3"), tok, Some(r#"{"rank": 1}"#)).status, 200);
    let p3 = listed(&t, tok, &format!("limit=2&order=rank&fields=id&after={}", enc(&next)));
    assert_eq!(p3.body["items"], json!([{"id": 2}, {"id": 1}]), "{}", p3.body);
    for bad in ["x", "WyJhIl0", "bm90IGpzb24", "WzFd"] {
        let r = listed(&t, tok, &format!("order=rank&after={bad}"));
        assert_eq!((r.status, r.code()), (400, "invalid_query"), "{bad}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("after"), "{}", r.body);
    }
}

/// Numbers keep every digit, bytea[] round-trips as base64 strings, a domain's CHECK
/// names its column, and a protected table whose RLS was turned off is not served.
#[test]
fn exact_numbers_bytea_arrays_domains_and_rls_off() {
    let a = signup("tbl-exact");
    let tok = Some(a.access.as_str());
    schema();
    admin().batch_execute("create domain app.posint as integer check (value > 0)").unwrap();
    let t = table_of("exact", "id bigint primary key, price numeric, prices numeric[], blobs bytea[], pos app.posint", "");
    // Through the SQL door a JSON number keeps every digit, and over HTTP too (the
    // proxy hands the body to Postgres as sent).
    let body = r#"{"id": 1, "price": 123456789012345678901.5, "prices": [0.1000000000000000000001], "blobs": ["AAEC", null, "/w=="], "pos": 3}"#;
    let v: Value = admin()
        .query_one("select baas.as_user($1::text::uuid, format('select data from baas.table_insert(%L, %L)', $2::text, $3::text))", &[&a.id, &t, &body])
        .unwrap()
        .get(0);
    assert_eq!(v["price"], json!("123456789012345678901.5"), "{v}");
    assert_eq!(v["prices"], json!(["0.1000000000000000000001"]));
    let r = call("POST", &rows_path(&t), tok, Some(r#"{"id": 2, "price": 98765432109876543210.25, "prices": ["1.5"]}"#));
    assert_eq!((r.status, &r.body["price"]), (201, &json!("98765432109876543210.25")), "{}", r.body);
    let r = call("PATCH", &row_path(&t, "2"), tok, Some(r#"{"price": 0.30000000000000000001}"#));
    assert_eq!(r.body["price"], json!("0.30000000000000000001"), "{}", r.body);
    let r = call("GET", &row_path(&t, "1"), tok, None);
    assert_eq!(r.body["blobs"], json!(["AAEC", null, "/w=="]), "bytea[] is base64 both ways");
    let r = listed(&t, tok, &format!("where={}", enc(r#"{"blobs": {"$contains": "/w=="}}"#)));
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1), "{}", r.body);
    let r = call("PATCH", &row_path(&t, "1"), tok, Some(r#"{"pos": -1}"#));
    let (s, c, m) = code_and_message(&r);
    assert_eq!((s, c.as_str()), (400, "invalid_value"), "{}", r.body);
    assert!(m.contains("pos"), "{m}");
    assert_eq!(call("PATCH", &row_path(&t, "1"), tok, Some(r#"{"blobs": null}"#)).body["blobs"], Value::Null);

    admin().batch_execute(&format!("alter table app.{t} no force row level security")).unwrap();
    // (request_at: the common helpers take any 5xx for a failure.)
    let r = request_at(&base(), "GET", &rows_path(&t), tok, &[], None);
    assert_eq!((r.status, r.code()), (503, "table_unprotected"), "{}", r.body);
    admin().batch_execute(&format!("alter table app.{t} force row level security; alter table app.{t} disable row level security")).unwrap();
    assert_eq!(request_at(&base(), "GET", &row_path(&t, "1"), tok, &[], None).status, 503);
}
