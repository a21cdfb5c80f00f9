//! End-to-end: field operators in PATCH (docs/operators.md) over real HTTP, a real proxy
//! and a real cluster. Concurrent writers lose nothing, a set stays a set, wrong types
//! are 400s that change nothing, the collection's JSON Schema judges the result, numbers
//! keep every digit, and If-Match still guards the write.

mod common;
use common::*;
use serde_json::json;

/// PATCH `body` (raw text), retrying while the proxy says 429 (too many requests in
/// flight for this user: refused before any SQL ran, so a retry is safe).
fn patch(c: &str, id: &str, token: &str, body: &str, headers: &[(&str, &str)]) -> Resp {
    loop {
        let r = call_with("PATCH", &doc_path(c, id), Some(token), Some(body), headers);
        if r.status != 429 {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The document's data as Postgres stores it, as text (every digit, as jsonb prints it).
fn stored(id: &str) -> (String, i64) {
    let row = admin()
        .query_one("select data::text, version from baas.documents where id = $1::text::uuid", &[&id])
        .expect("the document");
    (row.get(0), row.get(1))
}

/// The raw text of a GET of the document (no JSON parser of the test's in between).
fn get_text(c: &str, id: &str, token: &str) -> String {
    let resp = ureq::get(&format!("{}{}", base(), doc_path(c, id)))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("GET the document");
    resp.into_string().unwrap()
}

#[test]
fn fifty_concurrent_incs_give_the_exact_total() {
    let c = collection("opinc", json!({}));
    let a = signup("opinc");
    let id = create_doc(&c, Some(&a.access), json!({"n": 0, "f": 0}), None);
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (c, id, t) = (c.clone(), id.clone(), a.access.clone());
            std::thread::spawn(move || {
                // No If-Match, no read first: the operators apply to whatever is there.
                let r = patch(&c, &id, &t, r#"{"data": {"$inc": {"n": 1, "f": 0.1}}}"#, &[]);
                assert_eq!(r.status, 200, "{}", r.body);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (data, version) = stored(&id);
    // Fifty additions of 0.1 in binary floating point are not 5.0; in exact decimals they are.
    assert_eq!(data, r#"{"f": 5.0, "n": 50}"#);
    assert_eq!(version, 51, "one version per request");
}

#[test]
fn concurrent_add_to_set_keeps_a_set() {
    let c = collection("opset", json!({}));
    let a = signup("opset");
    let id = create_doc(&c, Some(&a.access), json!({"tags": [0]}), None);
    let threads: Vec<_> = (0..50)
        .map(|i: i64| {
            let (c, id, t) = (c.clone(), id.clone(), a.access.clone());
            std::thread::spawn(move || {
                // Overlapping values: i % 10 and t{i % 7} are added by several writers.
                let body = json!({"data": {"$addToSet": {"tags": {"$each": [i % 10, format!("t{}", i % 7), i]}}}}).to_string();
                let r = patch(&c, &id, &t, &body, &[]);
                assert_eq!(r.status, 200, "{}", r.body);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let g = call("GET", &doc_path(&c, &id), Some(&a.access), None);
    let tags = g.body["data"]["tags"].as_array().unwrap().clone();
    let mut seen = std::collections::BTreeSet::new();
    for v in &tags {
        assert!(seen.insert(v.to_string()), "{v} twice in {tags:?}");
    }
    let mut want: std::collections::BTreeSet<String> = (0..50).map(|i| i.to_string()).collect();
    want.extend((0..7).map(|i| format!("\"t{i}\"")));
    assert_eq!(seen, want, "every value once, none lost");
    assert_eq!(tags[0], json!(0), "what was there stays first");
    assert_eq!(g.body["version"], 51);
}

#[test]
fn wrong_types_are_400s_that_change_nothing() {
    let c = collection("optype", json!({}));
    let a = signup("optype");
    let data = json!({"s": "x", "n": 1, "a": [1, 2], "o": {"k": 1}, "z": null});
    let id = create_doc(&c, Some(&a.access), data.clone(), None);
    let before = stored(&id);
    let mismatches = [
        (json!({"$inc": {"s": 1}}), "\"s\""),
        (json!({"$inc": {"z": 1}}), "\"z\""),
        (json!({"$inc": {"o": 1}}), "\"o\""),
        (json!({"$push": {"n": 1}}), "\"n\""),
        (json!({"$addToSet": {"o": 1}}), "\"o\""),
        (json!({"$pull": {"s": "x"}}), "\"s\""),
        (json!({"$min": {"a": 1}}), "\"a\""),
        (json!({"$max": {"s": 5}}), "\"s\""),
        (json!({"$min": {"n": "1"}}), "\"n\""),
        (json!({"$set": {"n.x": 1}}), "\"n.x\""),
        (json!({"$set": {"a.0": 1}}), "\"a.0\""),
        (json!({"$unset": {"s.x": true}}), "\"s.x\""),
        (json!({"$now": {"o.k.t": true}}), "\"o.k.t\""),
        (json!({"$inc": {"o.k.deeper": 1}}), "\"o.k.deeper\""),
        // One good operator beside a bad one: nothing of the patch is written.
        (json!({"$set": {"fresh": 1}, "$inc": {"s": 1}}), "\"s\""),
    ];
    for (ops, path) in mismatches {
        let r = patch(&c, &id, &a.access, &json!({"data": ops}).to_string(), &[]);
        assert_eq!((r.status, r.code()), (400, "operator_type_mismatch"), "{ops}: {}", r.body);
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(path), "{ops}: the message names the path: {msg}");
        assert_eq!(stored(&id), before, "{ops} changed nothing");
    }
    let type_names = patch(&c, &id, &a.access, r#"{"data": {"$push": {"s": 1}}}"#, &[]);
    assert_eq!(
        type_names.body["error"]["message"],
        r#"$push at "s": the field is a string, $push needs an array"#,
        "the message names the types"
    );
    let invalid = [
        json!({"$inc": {"n": 1}, "title": "mixed"}),
        json!({"$increment": {"n": 1}}),
        json!({"$inc": {"n": "1"}}),
        json!({"$inc": 5}),
        json!({"$set": {"n": 1}, "$inc": {"n": 1}}),
        json!({"$set": {"o": {}}, "$unset": ["o.k"]}),
        json!({"$unset": {"n": 1}}),
        json!({"$now": {"t": "now"}}),
        json!({"$min": {"n": [1]}}),
        json!({"$set": {"a..b": 1}}),
        json!({"$push": {"a": {"$each": 3}}}),
    ];
    for ops in invalid {
        let r = patch(&c, &id, &a.access, &json!({"data": ops}).to_string(), &[]);
        assert_eq!((r.status, r.code()), (400, "invalid_operator"), "{ops}: {}", r.body);
        assert_eq!(stored(&id), before, "{ops} changed nothing");
    }
    // Plain merge patches are what they were.
    let m = patch(&c, &id, &a.access, r#"{"data": {"n": 2, "z": null}}"#, &[]);
    assert_eq!((m.status, &m.body["data"]["n"], m.body["data"].get("z")), (200, &json!(2), None), "{}", m.body);
}

#[test]
fn every_operator_does_what_it_says() {
    let c = collection("opall", json!({}));
    let a = signup("opall");
    let id = create_doc(&c, Some(&a.access), json!({"n": 5, "lo": 5, "hi": "m", "tags": ["a", "b", "a"], "gone": 1, "keep": {"x": 1}}), None);
    let body = json!({"data": {
        "$inc": {"n": -7.5, "stats.views": 1},
        "$set": {"keep.y": [1, {"z": true}]},
        "$unset": ["gone", "never.there"],
        "$push": {"log": {"$each": [1, 1]}},
        "$addToSet": {"set": "v"},
        "$pull": {"tags": "a"},
        "$min": {"lo": 3},
        "$max": {"hi": "z"},
        "$now": {"seen_at": true}
    }});
    let r = patch(&c, &id, &a.access, &body.to_string(), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let d = &r.body["data"];
    assert_eq!(d["n"], json!(-2.5));
    assert_eq!(d["stats"], json!({"views": 1}), "a missing field counts as 0; objects on the way appear");
    assert_eq!(d["keep"], json!({"x": 1, "y": [1, {"z": true}]}));
    assert!(d.get("gone").is_none());
    assert_eq!((&d["log"], &d["set"], &d["tags"]), (&json!([1, 1]), &json!(["v"]), &json!(["b"])));
    assert_eq!((&d["lo"], &d["hi"]), (&json!(3), &json!("z")));
    // $now is the transaction's timestamp: the same instant as updated_at.
    let same: bool = admin()
        .query_one("select (data ->> 'seen_at')::timestamptz = updated_at from baas.documents where id = $1::text::uuid", &[&id])
        .unwrap()
        .get(0);
    assert!(same, "{d}");
    assert!(d["seen_at"].as_str().unwrap().ends_with("+00:00"), "{d}");
}

#[test]
fn schema_judges_the_result_and_nothing_is_written() {
    let schema = json!({"type": "object", "properties": {
        "n": {"type": "integer", "maximum": 10},
        "tags": {"type": "array", "maxItems": 2}
    }});
    let c = collection("opschema", json!({"schema": schema}));
    let a = signup("opschema");
    let id = create_doc(&c, Some(&a.access), json!({"n": 9, "tags": ["a"]}), None);
    let ok = patch(&c, &id, &a.access, r#"{"data": {"$inc": {"n": 1}}}"#, &[]);
    assert_eq!((ok.status, &ok.body["data"]["n"]), (200, &json!(10)), "{}", ok.body);
    let before = stored(&id);
    for ops in [r#"{"$inc": {"n": 1}}"#, r#"{"$inc": {"n": 0.5}}"#, r#"{"$push": {"tags": {"$each": ["b", "c"]}}}"#, r#"{"$set": {"n": "ten"}}"#] {
        let r = patch(&c, &id, &a.access, &format!(r#"{{"data": {ops}}}"#), &[]);
        assert_eq!((r.status, r.code()), (422, "schema_violation"), "{ops}: {}", r.body);
        assert_eq!(stored(&id), before, "{ops}: nothing written");
    }
    let ok = patch(&c, &id, &a.access, r#"{"data": {"$addToSet": {"tags": {"$each": ["a", "b"]}}}}"#, &[]);
    assert_eq!((ok.status, &ok.body["data"]["tags"]), (200, &json!(["a", "b"])), "{}", ok.body);
}

#[test]
fn numbers_keep_every_digit_over_http() {
    let c = collection("opbig", json!({}));
    let a = signup("opbig");
    let id = create_doc(&c, Some(&a.access), json!({}), None);
    // $set through the raw body: the digits reach Postgres as sent.
    let r = patch(&c, &id, &a.access, r#"{"data": {"$set": {"big": 123456789012345678901234567890, "d": 0.1, "tiny": 1e-30}}}"#, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = patch(&c, &id, &a.access, r#"{"data": {"$inc": {"big": 1, "d": 0.2, "tiny": 1e-30}, "$max": {"huge": 99999999999999999999999999999999.5}}}"#, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let (data, _) = stored(&id);
    assert_eq!(
        data,
        r#"{"d": 0.3, "big": 123456789012345678901234567891, "huge": 99999999999999999999999999999999.5, "tiny": 0.000000000000000000000000000002}"#
    );
    // And the response and a GET carry them as stored.
    let text = get_text(&c, &id, &a.access);
    for s in ["123456789012345678901234567891", "0.3", "99999999999999999999999999999999.5", "0.000000000000000000000000000002"] {
        assert!(text.contains(s), "{s} in {text}");
    }
    // $min with a bigger number keeps the stored one, exactly.
    let r = patch(&c, &id, &a.access, r#"{"data": {"$min": {"big": 123456789012345678901234567892}}}"#, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(stored(&id).0.contains("123456789012345678901234567891"));
}

#[test]
fn if_match_guards_an_operator_patch() {
    let c = collection("opifm", json!({}));
    let a = signup("opifm");
    let id = create_doc(&c, Some(&a.access), json!({"n": 0}), None);
    let body = r#"{"data": {"$inc": {"n": 1}}}"#;
    let ok = patch(&c, &id, &a.access, body, &[("If-Match", "\"1\"")]);
    assert_eq!((ok.status, ok.body["version"].as_i64(), &ok.body["data"]["n"]), (200, Some(2), &json!(1)), "{}", ok.body);
    assert_eq!(ok.header("etag"), Some("\"2\""));
    let stale = patch(&c, &id, &a.access, body, &[("If-Match", "\"1\"")]);
    assert_eq!((stale.status, stale.code()), (412, "version_conflict"), "{}", stale.body);
    assert_eq!(stored(&id), (r#"{"n": 1}"#.to_string(), 2), "the stale patch changed nothing");
}

#[test]
fn permissions_decide_as_for_any_patch() {
    let c = collection("opperm", json!({}));
    let (a, b) = (signup("opperm-a"), signup("opperm-b"));
    let read_only = create_doc(&c, Some(&a.access), json!({"n": 0}), Some(json!({"read": [format!("user:{}", b.id)]})));
    let private = create_doc(&c, Some(&a.access), json!({"n": 0}), None);
    let body = r#"{"data": {"$inc": {"n": 1}}}"#;
    let r = patch(&c, &read_only, &b.access, body, &[]);
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.body);
    let r = patch(&c, &private, &b.access, body, &[]);
    assert_eq!((r.status, r.code()), (404, "document_not_found"), "{}", r.body);
    // Even a wrong operator reveals nothing about a document the caller cannot see.
    let r = patch(&c, &private, &b.access, r#"{"data": {"$inc": {"n": "x"}}}"#, &[]);
    assert_eq!((r.status, r.code()), (404, "document_not_found"), "{}", r.body);
    assert_eq!(stored(&read_only).0, r#"{"n": 0}"#);
    assert_eq!(stored(&private).0, r#"{"n": 0}"#);
}

#[test]
fn each_and_in_are_capped_at_1000_values() {
    let c = collection("opcap", json!({}));
    let a = signup("opcap");
    let id = create_doc(&c, Some(&a.access), json!({"t": []}), None);
    let many: Vec<i64> = (0..=1000).collect();
    for (op, m) in [("$addToSet", "$each"), ("$push", "$each"), ("$pull", "$in")] {
        let body = json!({"data": {op: {"t": {m: many}}}}).to_string();
        let r = patch(&c, &id, &a.access, &body, &[]);
        assert_eq!((r.status, r.code()), (400, "invalid_operator"), "{op}: {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().contains("at most 1000"), "{}", r.body);
    }
    // 1000 values, twice over a set of 1000: each added once.
    let body = json!({"data": {"$addToSet": {"t": {"$each": &many[..1000]}}}}).to_string();
    for _ in 0..2 {
        let r = patch(&c, &id, &a.access, &body, &[]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let g = call("GET", &doc_path(&c, &id), Some(&a.access), None);
    assert_eq!(g.body["data"]["t"].as_array().unwrap().len(), 1000);
}

#[test]
fn numbers_beyond_the_bounds_are_refused_and_beyond_f64_kept() {
    let c = collection("opnum", json!({}));
    let a = signup("opnum");
    let id = create_doc(&c, Some(&a.access), json!({}), None);
    for n in ["1e-16383", "1e1001", "-2.5E+5000"] {
        for data in [format!(r#"{{"$set": {{"n": {n}}}}}"#), format!(r#"{{"n": {n}}}"#)] {
            let r = patch(&c, &id, &a.access, &format!(r#"{{"data": {data}}}"#), &[]);
            assert_eq!((r.status, r.code()), (400, "invalid_json"), "{data}: {}", r.body);
            assert!(r.body["error"]["message"].as_str().unwrap().contains("at most 1000 digits"), "{}", r.body);
        }
    }
    assert_eq!(stored(&id).0, "{}", "nothing written");
    // 310 digits: more than an f64 holds (serde_json alone says "number out of range").
    let big = format!("1{}", "0".repeat(309));
    let r = patch(&c, &id, &a.access, &format!(r#"{{"data": {{"$set": {{"n": {big}}}}}}}"#), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = patch(&c, &id, &a.access, r#"{"data": {"$inc": {"n": 1}}}"#, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(stored(&id).0, format!(r#"{{"n": 1{}1}}"#, "0".repeat(308)));
}

#[test]
fn a_later_merge_patch_keeps_every_digit() {
    let c = collection("opmerge", json!({}));
    let a = signup("opmerge");
    let id = create_doc(&c, Some(&a.access), json!({"n": 0}), None);
    let r = patch(&c, &id, &a.access, r#"{"data": {"$inc": {"n": 123456789012345678901234567891}, "$set": {"p": 0.10, "o": {"x": 1e-30}}}}"#, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    // A plain merge patch touches other fields only; the numbers stay as they were.
    let r = patch(&c, &id, &a.access, r#"{"data": {"title": "x", "o": {"y": 2}}}"#, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        stored(&id).0,
        r#"{"n": 123456789012345678901234567891, "o": {"x": 0.000000000000000000000000000001, "y": 2}, "p": 0.10, "title": "x"}"#
    );
}
