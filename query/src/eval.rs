//! An in-memory evaluator written straight from the rules in docs/query.md, sharing
//! nothing with the SQL compiler but the AST. The property tests run random filters
//! through both and compare.

use crate::parse::{Cond, Filter, Path};
use serde_json::Value;
use std::cmp::Ordering;

/// The value at `path` in `data`, following object keys only.
pub fn lookup<'a>(data: &'a Value, path: &Path) -> Option<&'a Value> {
    let mut cur = data;
    for seg in &path.0 {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

/// JSON equality with numbers by value (1 == 1.0), arrays and objects structurally.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn num_cmp(x: &serde_json::Number, y: &serde_json::Number) -> Ordering {
    // The generators use integers and simple decimals; f64 is exact enough for them.
    match (x.as_i64(), y.as_i64()) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => x.as_f64().zip(y.as_f64()).and_then(|(a, b)| a.partial_cmp(&b)).unwrap_or(Ordering::Equal),
    }
}

/// Same JSON type and ordered: numbers numerically, strings by code point.
fn ordered_cmp(field: &Value, operand: &Value) -> Option<Ordering> {
    match (field, operand) {
        (Value::Number(a), Value::Number(b)) => Some(num_cmp(a, b)),
        (Value::String(a), Value::String(b)) => Some(a.chars().cmp(b.chars())),
        _ => None,
    }
}

fn cond(field: Option<&Value>, c: &Cond) -> bool {
    match c {
        Cond::Eq(v) => field.is_some_and(|f| json_eq(f, v)),
        Cond::Ne(v) => !cond(field, &Cond::Eq(v.clone())),
        Cond::Gt(v) => field.and_then(|f| ordered_cmp(f, v)) == Some(Ordering::Greater),
        Cond::Gte(v) => matches!(field.and_then(|f| ordered_cmp(f, v)), Some(Ordering::Greater | Ordering::Equal)),
        Cond::Lt(v) => field.and_then(|f| ordered_cmp(f, v)) == Some(Ordering::Less),
        Cond::Lte(v) => matches!(field.and_then(|f| ordered_cmp(f, v)), Some(Ordering::Less | Ordering::Equal)),
        Cond::In(vs) => field.is_some_and(|f| vs.iter().any(|v| json_eq(f, v))),
        Cond::Nin(vs) => !cond(field, &Cond::In(vs.clone())),
        Cond::Exists(want) => field.is_some() == *want,
        Cond::Contains(v) => matches!(field, Some(Value::Array(items)) if items.iter().any(|i| json_eq(i, v))),
    }
}

pub fn matches(f: &Filter, data: &Value) -> bool {
    match f {
        Filter::And(fs) => fs.iter().all(|f| matches(f, data)),
        Filter::Or(fs) => fs.iter().any(|f| matches(f, data)),
        Filter::Not(f) => !matches(f, data),
        Filter::Field(p, conds) => {
            let v = lookup(data, p);
            conds.iter().all(|c| cond(v, c))
        }
    }
}

/// `fields=a,b` on a document's `data`: only those top-level keys, the ones it has (as
/// the list route's SQL, `jsonb_object_agg` over `jsonb_each(data)` where the key is
/// listed; docs/query.md). A non-object `data` projects to `{}`.
pub fn project(data: &Value, fields: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    if let Value::Object(m) = data {
        for (k, v) in m {
            if fields.iter().any(|f| f == k) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;
    use serde_json::json;

    fn m(f: Value, d: Value) -> bool {
        matches(&parse(&f).unwrap(), &d)
    }

    #[test]
    fn the_rules() {
        assert!(m(json!({"a": 1}), json!({"a": 1.0})));
        assert!(m(json!({"a": null}), json!({"a": null})));
        assert!(!m(json!({"a": null}), json!({})));
        assert!(m(json!({"a": {"$ne": 1}}), json!({})), "documents lacking the field match $ne");
        assert!(!m(json!({"a": {"$gt": 1}}), json!({"a": "2"})), "types must match");
        assert!(m(json!({"a": {"$gt": "B"}}), json!({"a": "a"})), "code point order: 'a' > 'B'");
        assert!(m(json!({"a": {"$exists": true}}), json!({"a": null})));
        assert!(m(json!({"a.b": 2}), json!({"a": {"b": 2}})));
        assert!(!m(json!({"a.0": 2}), json!({"a": [2]})), "dots follow object keys only");
        assert!(m(json!({"t": {"$contains": "x"}}), json!({"t": ["y", "x"]})));
        assert!(!m(json!({"t": {"$contains": {"a": 1}}}), json!({"t": [{"a": 1, "b": 2}]})), "contains is equality, not containment");
        // $refs: the field is the reference or an array holding it (docs/references.md).
        let id = "0190b0a4-6f1e-7c3a-8d2b-5e4f3a2b1c0d";
        let r = json!({"$ref": {"collection": "posts", "id": id}});
        let f = json!({"post": {"$refs": {"collection": "posts", "id": id.to_uppercase()}}});
        assert!(m(f.clone(), json!({"post": r})));
        assert!(m(f.clone(), json!({"post": ["x", r]})));
        assert!(!m(f.clone(), json!({"post": {"$ref": {"collection": "other", "id": id}}})));
        assert!(!m(f.clone(), json!({"other": r})));
        assert!(m(json!({"by": {"$refs": {"user": id}, "$exists": true}}), json!({"by": {"$ref": {"user": id}}})));
        // A file reference matches the files' own {"$file"} form too.
        let ff = json!({"cv": {"$refs": {"file": id}}});
        assert!(m(ff.clone(), json!({"cv": {"$file": id}})));
        assert!(m(ff.clone(), json!({"cv": [{"$file": id}]})));
        assert!(m(ff.clone(), json!({"cv": {"$ref": {"file": id}}})));
        assert!(!m(ff, json!({"cv": {"$file": "0190b0a4-6f1e-7c3a-8d2b-5e4f3a2b1c0e"}})));
        for bad in [json!({"p": {"$refs": id}}), json!({"p": {"$refs": {"id": id}}}), json!({"p": {"$refs": {"user": "x"}}}),
                    json!({"p": {"$refs": {"user": id, "file": id}}})] {
            assert!(crate::parse::parse(&bad).is_err(), "{bad}");
        }
        assert!(m(json!({"$not": {"a": {"$gt": 5}}}), json!({})));
        assert!(m(json!({"a": {"$nin": [1, 2]}}), json!({})));
        assert!(m(json!({"a": [1, {"b": 2}]}), json!({"a": [1.0, {"b": 2}]})));
    }

    #[test]
    fn projection_keeps_only_listed_present_top_level_keys() {
        let d = json!({"a": 1, "b": {"c": 2}, "z": null});
        assert_eq!(project(&d, &["b".into(), "z".into(), "missing".into()]), json!({"b": {"c": 2}, "z": null}));
        assert_eq!(project(&d, &[]), json!({}));
        assert_eq!(project(&json!([1]), &["a".into()]), json!({}));
    }
}
