//! `#[pg_extern]` faces of the query language. They only produce SQL text and
//! parameters; baas.find()/baas.count() run it as the caller.

use crate::error::OrRaise;
use crate::query::{compile, parse};
use pgrx::prelude::*;
use super::Json;
use pgrx::JsonB;
use serde_json::{json, Value};

/// Compile a filter and order into
/// `{"where": sql, "order": sql, "cursor": sql, "select": sql, "params": [...]}`.
/// With `cursor` (the array `cursor` SQL selected for the `after` document), `where`
/// also keeps only rows after it. 22023 invalid_query names what is wrong.
#[pg_extern(immutable, parallel_safe)]
fn compile_query(filter: Option<Json>, order: Option<&str>, cursor: Option<Json>, has_fields: default!(bool, false)) -> JsonB {
    const F: &str = "compile_query";
    let filter = filter.map(|f| f.value(F)).unwrap_or_else(|| json!({}));
    let cursor = cursor.map(|c| c.value(F));
    let ast = parse::parse(&filter).or_raise(F);
    let keys = parse::parse_order(order.unwrap_or("")).or_raise(F);
    let mut params = compile::Params::default();
    let mut where_sql = compile::compile_filter(&ast, &mut params);
    // A filter that reads exactly one field can be counted from baas.index_entries
    // when that field has a btree index: `entry_where` is the same filter over
    // `e.value`, with the same parameters.
    let paths = compile::filter_paths(&ast);
    let entry = match (paths.as_slice(), &cursor) {
        ([one], None) => {
            let mut p2 = compile::Params::default();
            let w = compile::compile_filter_on(&ast, &mut p2, &|_| "e.value".to_string());
            (p2.0 == params.0).then(|| json!({"path": one, "where": w}))
        }
        _ => None,
    };
    if let Some(c) = cursor {
        let after = compile::after_sql(&keys, &c, &mut params).or_raise(F);
        where_sql = format!("{where_sql} and {after}");
    }
    JsonB(json!({
        "entry": entry,
        "where": where_sql,
        "order": compile::order_sql(&keys),
        "cursor": compile::cursor_sql(&keys),
        "select": compile::select_sql(has_fields),
        "params": Value::Array(params.0),
    }))
}

/// Validate `fields` names (22023 invalid_query); returns them trimmed.
#[pg_extern(immutable, strict, parallel_safe)]
fn check_fields(fields: Vec<String>) -> Vec<String> {
    parse::parse_fields(&fields).or_raise("check_fields")
}

/// The indexable SQL expression for a data path, e.g. `(data -> 'a' -> 'b')`.
#[pg_extern(immutable, strict, parallel_safe)]
fn index_expression(path: &str) -> String {
    let p = parse::Path::parse(path).or_raise("index_expression");
    compile::path_expr(&p, "")
}
