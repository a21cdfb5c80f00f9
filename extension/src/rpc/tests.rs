use super::*;
use serde_json::json;

fn ty(oid: u32, sql: &str) -> Type {
    let category = if sql.ends_with("[]") { "A" } else { "N" };
    Type { oid, sql: sql.into(), typtype: "b".into(), category: category.into() }
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
    }
}
fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn named_arguments_are_bound_as_text_and_cast() {
    let p = f("add", vec![arg("a", "i", 23, "integer"), arg("b", "i", 23, "integer")], 0, ty(23, "integer"));
    let c = plan("add", &obj(json!({"b": 2, "a": "1"})), false, &[p]).unwrap();
    assert_eq!(c.params, vec![Some("1".into()), Some("2".into())]);
    assert!(c.sql.contains(r#""api"."add"("a" => $1[1]::integer, "b" => $1[2]::integer)"#), "{}", c.sql);
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
    let p = f("_secret", vec![], 0, ty(23, "integer"));
    assert!(matches!(plan("_secret", &Map::new(), false, &[p]), Err(RpcError::NotFound(_))));
    assert!(matches!(plan("x\"); drop table t; --", &Map::new(), false, &[]), Err(RpcError::NotFound(_))));
}

#[test]
fn get_needs_a_stable_function_and_repeats_only_for_arrays() {
    let mut p = f("s", vec![arg("a", "i", 1007, "integer[]"), arg("b", "i", 23, "integer")], 1, ty(23, "integer"));
    assert!(matches!(plan("s", &obj(json!({"a": ["1"]})), true, &[p.clone()]), Err(RpcError::MethodNotAllowed(_))));
    p.volatility = "s".into();
    let c = plan("s", &obj(json!({"a": ["1", "2"]})), true, &[p.clone()]).unwrap();
    assert_eq!(c.params, vec![Some(r#"{"1","2"}"#.into())]);
    let e = plan("s", &obj(json!({"a": "{1}", "b": ["1", "2"]})), true, &[p]).unwrap_err();
    assert!(matches!(e, RpcError::InvalidArguments(_)));
}

#[test]
fn one_unnamed_json_parameter_takes_the_whole_object() {
    let p = f("j", vec![arg("", "i", 3802, "jsonb")], 0, ty(3802, "jsonb"));
    let c = plan("j", &obj(json!({"any": [1], "thing": null})), false, &[p]).unwrap();
    assert_eq!(c.params, vec![Some(r#"{"any":[1],"thing":null}"#.into())]);
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
    assert!(c.sql.contains(r#"'n', to_jsonb((r."n")::text)"#), "{}", c.sql);
    assert!(c.sql.contains("encode(r.\"b\", 'base64')"), "{}", c.sql);
    assert!(c.sql.contains(r#"'it''s', to_jsonb(r."it's")"#), "{}", c.sql);
    assert!(c.sql.starts_with("select coalesce(jsonb_agg("), "{}", c.sql);
}
