use super::*;
use serde_json::json;

fn ty(oid: u32, sql: &str) -> Type {
    let category = if sql.ends_with("[]") { "A" } else { "N" };
    Type { oid, sql: sql.into(), typtype: "b".into(), category: category.into(), base: 0 }
}
fn arg(name: &str, mode: &str, oid: u32, sql: &str) -> Param {
    Param { name: name.into(), mode: mode.into(), ty: ty(oid, sql), elem_json: false }
}
fn f(name: &str, args: Vec<Param>, ndefaults: usize, ret: Type) -> Proc {
    Proc {
        schema: "api".into(),
        name: name.into(),
        volatility: "v".into(),
        retset: false,
        ndefaults,
        variadic: args.iter().any(|a| a.mode == "v"),
        ret,
        args,
        columns: vec![],
        executable: true,
    }
}
fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn named_arguments_are_bound_as_text_and_cast() {
    let p = f("add", vec![arg("a", "i", 23, "integer"), arg("b", "i", 23, "integer")], 0, ty(23, "integer"));
    let c = plan("add", &obj(json!({"b": 2, "a": "1"})), false, &[p]).unwrap();
    // The keys are bound; the values are read from the jsonb arguments ($2) in SQL.
    assert_eq!(c.params, vec![Some("a".into()), Some("b".into())]);
    assert!(c.sql.contains(r#""api"."add"("a" => ($2 OPERATOR(pg_catalog.->>) $1[1])::integer, "b" => ($2 OPERATOR(pg_catalog.->>) $1[2])::integer)"#), "{}", c.sql);
    assert!(!c.is_void);
}

#[test]
fn unknown_missing_and_ambiguous_arguments_are_named() {
    let one = f("g", vec![arg("a", "i", 23, "integer"), arg("b", "i", 25, "text")], 1, ty(23, "integer"));
    let e = plan("g", &obj(json!({"a": 1, "zz": 2})), false, &[one.clone()]).unwrap_err();
    assert!(matches!(&e, RpcError::InvalidArguments(m) if m.contains("\"zz\"") && m.contains("g(a integer, b text default)")), "{e:?}");
    let e = plan("g", &obj(json!({"b": "x"})), false, &[one.clone()]).unwrap_err();
    assert!(matches!(&e, RpcError::InvalidArguments(m) if m.contains("\"a\" is missing")), "{e:?}");
    assert!(plan("g", &obj(json!({"a": 1})), false, &[one.clone()]).is_ok());
    let other = f("g", vec![arg("a", "i", 25, "text")], 0, ty(23, "integer"));
    let e = plan("g", &obj(json!({"a": 1})), false, &[one, other]).unwrap_err();
    assert!(matches!(&e, RpcError::Ambiguous(m) if m.contains("g(a text)")), "{e:?}");
}

#[test]
fn internal_and_unknown_names_are_not_found() {
    // Each name is refused although the catalog offered a function of it.
    let p = f("_secret", vec![], 0, ty(23, "integer"));
    assert!(plan("secret", &Map::new(), false, &[f("secret", vec![], 0, ty(23, "integer"))]).is_ok());
    assert!(matches!(plan("_secret", &Map::new(), false, &[p]), Err(RpcError::NotFound(_))));
    let long = "a".repeat(64);
    assert!(matches!(plan(&long, &Map::new(), false, &[f(&long, vec![], 0, ty(23, "integer"))]), Err(RpcError::NotFound(_))));
    assert!(matches!(plan("x\0", &Map::new(), false, &[f("x\0", vec![], 0, ty(23, "integer"))]), Err(RpcError::NotFound(_))));
    assert!(matches!(plan("", &Map::new(), false, &[f("", vec![], 0, ty(23, "integer"))]), Err(RpcError::NotFound(_))));
    assert!(matches!(plan("x", &Map::new(), false, &[]), Err(RpcError::NotFound(_))));
}

#[test]
fn the_first_schema_with_the_name_decides_and_hidden_overloads_count() {
    let mut hidden = f("s", vec![], 0, ty(23, "integer"));
    hidden.executable = false;
    let mut later = f("s", vec![], 0, ty(23, "integer"));
    later.schema = "api2".into();
    assert!(matches!(plan("s", &Map::new(), false, &[hidden.clone(), later.clone()]), Err(RpcError::NotFound(_))), "no fall-through");
    assert!(plan("s", &Map::new(), false, &[later]).is_ok());
    let one = f("o", vec![arg("a", "i", 23, "integer")], 0, ty(23, "integer"));
    let mut two = f("o", vec![arg("a", "i", 23, "integer"), arg("b", "i", 23, "integer")], 1, ty(23, "integer"));
    two.executable = false;
    let e = plan("o", &obj(json!({"a": 1})), false, &[one.clone(), two.clone()]).unwrap_err();
    assert!(matches!(&e, RpcError::Ambiguous(m) if !m.contains("b integer")), "hidden, but Postgres would see it: {e:?}");
    let e = plan("o", &obj(json!({"a": 1, "b": 2})), false, &[one, two]).unwrap_err();
    assert!(matches!(&e, RpcError::InvalidArguments(m) if !m.contains("b integer")), "{e:?}");
}

#[test]
fn unnamed_out_columns_are_column_k_and_void_is_read() {
    let p = f("u", vec![arg("a", "i", 23, "integer"), arg("", "o", 23, "integer"), arg("", "o", 25, "text")], 0, ty(2249, "record"));
    let c = plan("u", &obj(json!({"a": 1})), false, &[p]).unwrap();
    assert!(c.sql.contains(r#"'column1', pg_catalog.to_jsonb((s.x)."column1")"#) && c.sql.contains("'column2'"), "{}", c.sql);
    let v = f("v", vec![], 0, ty(2278, "void"));
    assert_eq!(plan("v", &Map::new(), false, &[v]).unwrap().sql, r#"select ("api"."v"())::text"#);
}

#[test]
fn get_needs_a_stable_function_and_repeats_only_for_arrays() {
    let mut p = f("s", vec![arg("a", "i", 1007, "integer[]"), arg("b", "i", 23, "integer")], 1, ty(23, "integer"));
    assert!(matches!(plan("s", &obj(json!({"a": ["1"]})), true, &[p.clone()]), Err(RpcError::MethodNotAllowed(_))));
    p.volatility = "s".into();
    let c = plan("s", &obj(json!({"a": ["1", "2"]})), true, &[p.clone()]).unwrap();
    assert_eq!(c.params, vec![Some(r#"{"1","2"}"#.into())]);
    let c = plan("s", &obj(json!({"a": "5"})), true, &[p.clone()]).unwrap();
    assert_eq!(c.params, vec![Some(r#"{"5"}"#.into())], "one value of an array parameter: an array of one");
    let e = plan("s", &obj(json!({"a": "{1}", "b": ["1", "2"]})), true, &[p]).unwrap_err();
    assert!(matches!(e, RpcError::InvalidArguments(_)));
}

#[test]
fn one_unnamed_json_parameter_takes_the_whole_object() {
    let p = f("j", vec![arg("", "i", 3802, "jsonb")], 0, ty(3802, "jsonb"));
    let c = plan("j", &obj(json!({"any": [1], "thing": null})), false, &[p]).unwrap();
    assert!(c.params.is_empty() && c.sql.contains(r#""api"."j"(coalesce($2, '{}')::jsonb)"#), "{}", c.sql);
    assert!(c.sql.contains("coalesce(s.x::text, 'null')"), "{}", c.sql);
}

#[test]
fn variadic_takes_an_array_and_void_is_void() {
    let p = f("v", vec![arg("xs", "v", 1007, "integer[]")], 0, ty(2278, "void"));
    let c = plan("v", &obj(json!({"xs": [1, null, 3]})), false, &[p]).unwrap();
    assert!(c.sql.contains(r#"variadic "xs" => $1[1]::integer[]"#), "{}", c.sql);
    assert_eq!(c.params, vec![Some(r#"{"1",NULL,"3"}"#.into())]);
    assert!(c.is_void);
}

#[test]
fn array_literals_escape_quotes_and_backslashes() {
    assert_eq!(array_literal(&[json!("a\"b\\c"), json!([1, "x"])], false), r#"{"a\"b\\c",{"1","x"}}"#);
    assert_eq!(array_literal(&[json!({"k": "v"})], true), r#"{"{\"k\":\"v\"}"}"#);
}

#[test]
fn rows_are_built_by_column_type() {
    let mut p = f(
        "t",
        vec![arg("n", "t", 1700, "numeric"), arg("b", "t", 17, "bytea"), arg("it's", "t", 23, "integer")],
        0,
        ty(2249, "record"),
    );
    p.retset = true;
    let c = plan("t", &Map::new(), false, &[p]).unwrap();
    assert!(c.sql.contains(r#"'n', pg_catalog.to_jsonb((r."n")::text)"#), "{}", c.sql);
    assert!(c.sql.contains("pg_catalog.encode(r.\"b\", 'base64')"), "{}", c.sql);
    assert!(c.sql.contains(r#"'it''s', pg_catalog.to_jsonb(r."it's")"#), "{}", c.sql);
    assert!(c.sql.starts_with("select coalesce(pg_catalog.jsonb_agg("), "{}", c.sql);
    // Every function is qualified: no bare name( but the function called.
    let bare = regex_lite_bare_calls(&c.sql);
    assert!(bare.is_empty(), "unqualified: {bare:?} in {}", c.sql);
}

/// Names followed by `(` not preceded by `.` or `"`, other than SQL keywords that take
/// parentheses.
fn regex_lite_bare_calls(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = vec![];
    for (i, _) in sql.match_indices('(') {
        let mut j = i;
        while j > 0 && (b[j - 1].is_ascii_alphanumeric() || b[j - 1] == b'_') {
            j -= 1;
        }
        let word = &sql[j..i];
        let qualified = j > 0 && (b[j - 1] == b'.' || b[j - 1] == b'"');
        if !word.is_empty() && !qualified && !["select", "coalesce", "case", "in", "from", "exists", "when", "then", "else", "and", "or", "OPERATOR"].contains(&word) {
            out.push(word.to_string());
        }
    }
    out
}

#[test]
fn arrays_of_numeric_and_bytea_are_mapped_like_their_elements() {
    assert_eq!(json_expr("x", 1231), "pg_catalog.to_jsonb((x)::text[])");
    assert!(json_expr("x", 1001).contains("pg_catalog.encode(u.x, 'base64')"), "{}", json_expr("x", 1001));
}
