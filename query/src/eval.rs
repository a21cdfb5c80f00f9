//! An in-memory evaluator written straight from the rules in docs/query.md, sharing
//! nothing with the SQL compiler but the AST. The property tests run random filters
//! through both and compare.

use crate::parse::{Cond, Filter, Path, TextOp, TimeField, TimeOp};
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
        Cond::Subset(vs) => matches!(field, Some(Value::Array(items)) if items.iter().all(|i| vs.iter().any(|v| json_eq(i, v)))),
        Cond::Text { op, fold, needle } => {
            let Some(Value::String(s)) = field else { return false };
            let (s, needle) = if *fold {
                (std::borrow::Cow::Owned(s.to_ascii_lowercase()), std::borrow::Cow::Owned(needle.to_ascii_lowercase()))
            } else {
                (std::borrow::Cow::Borrowed(s.as_str()), std::borrow::Cow::Borrowed(needle.as_str()))
            };
            match op {
                TextOp::Prefix => s.starts_with(&*needle),
                TextOp::Suffix => s.ends_with(&*needle),
                TextOp::Substring => s.contains(&*needle),
            }
        }
        Cond::Regex { pattern, .. } => matches!(field, Some(Value::String(s)) if pattern.is_match(s)),
        Cond::Within(shape) => field.is_some_and(|f| crate::geo::within(f, shape)),
        Cond::Covers(p) => field.is_some_and(|f| crate::geo::covers(f, *p)),
    }
}

/// A document's creation and last-update times, in microseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub created: i64,
    pub updated: i64,
}

impl Times {
    /// A document's times as Postgres writes them (RFC 3339, any offset); None when
    /// either is missing or unreadable.
    pub fn from_text(created: Option<&str>, updated: Option<&str>) -> Option<Times> {
        let at = |t: Option<&str>| crate::parse::instant(t?).ok();
        Some(Times { created: at(created)?, updated: at(updated)? })
    }
}

/// Whether a document's `data` matches, for filters without time conditions (a time
/// condition, with no times to judge, holds for nothing).
pub fn matches(f: &Filter, data: &Value) -> bool {
    matches_at(f, data, None)
}

/// Whether a document with this `data` and these times matches.
pub fn matches_at(f: &Filter, data: &Value, times: Option<Times>) -> bool {
    match f {
        Filter::And(fs) => fs.iter().all(|f| matches_at(f, data, times)),
        Filter::Or(fs) => fs.iter().any(|f| matches_at(f, data, times)),
        Filter::Not(f) => !matches_at(f, data, times),
        Filter::Field(p, conds) => {
            let v = lookup(data, p);
            conds.iter().all(|c| cond(v, c))
        }
        Filter::Time(which, conds) => {
            let Some(t) = times else { return false };
            let at = match which {
                TimeField::Created => t.created,
                TimeField::Updated => t.updated,
            };
            conds.iter().all(|c| match c.op {
                TimeOp::Eq => at == c.micros,
                TimeOp::Ne => at != c.micros,
                TimeOp::Gt => at > c.micros,
                TimeOp::Gte => at >= c.micros,
                TimeOp::Lt => at < c.micros,
                TimeOp::Lte => at <= c.micros,
            })
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
        assert!(m(json!({"t": {"$subset": ["x", "y", 1]}}), json!({"t": ["y", "x", 1.0, "x"]})));
        assert!(!m(json!({"t": {"$subset": ["x"]}}), json!({"t": ["y", "x"]})));
        assert!(m(json!({"t": {"$subset": []}}), json!({"t": []})), "an empty array is in any list");
        assert!(!m(json!({"t": {"$subset": ["x"]}}), json!({"t": "x"})), "arrays only");
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
        // Text: strings only; the $i forms fold ASCII letters and nothing else.
        assert!(m(json!({"n": {"$prefix": "Ab"}}), json!({"n": "Abc"})));
        assert!(!m(json!({"n": {"$prefix": "ab"}}), json!({"n": "Abc"})));
        assert!(m(json!({"n": {"$iprefix": "ab"}}), json!({"n": "ABc"})));
        assert!(m(json!({"n": {"$suffix": "é"}}), json!({"n": "café"})));
        assert!(!m(json!({"n": {"$isuffix": "É"}}), json!({"n": "café"})), "only ASCII letters fold");
        assert!(m(json!({"n": {"$isubstring": "B.C"}}), json!({"n": "ab.cd"})));
        assert!(m(json!({"n": {"$substring": ""}}), json!({"n": ""})));
        assert!(!m(json!({"n": {"$substring": "1"}}), json!({"n": 1})), "a number is not a string");
        assert!(!m(json!({"n": {"$substring": ""}}), json!({})));
        assert!(m(json!({"$not": {"n": {"$prefix": "x"}}}), json!({})));
        assert!(crate::parse::parse(&json!({"n": {"$prefix": 1}})).is_err());
        // Times: instants whatever their offset; only the six comparisons.
        let t = Some(Times { created: crate::parse::instant("2026-12-04T10:00:00.5Z").unwrap(), updated: 0 });
        let at = |f: Value| matches_at(&parse(&f).unwrap(), &json!({}), t);
        assert!(at(json!({"$created_at": "2026-12-04T11:00:00.500+01:00"})));
        assert!(at(json!({"$created_at": {"$gt": "2026-12-04T10:00:00.499999Z", "$lte": "2026-12-04T10:00:00.5Z"}})));
        assert!(!at(json!({"$created_at": {"$lt": "2026-12-04T10:00:00.5Z"}})));
        assert!(at(json!({"$updated_at": "1970-01-01T00:00:00Z"})));
        assert!(at(json!({"$not": {"$updated_at": {"$ne": "1970-01-01T00:00:00Z"}}})));
        assert!(!m(json!({"$created_at": {"$gt": "2026-01-01T00:00:00Z"}}), json!({})), "no times, no match");
        for bad in [json!({"$created_at": 1}), json!({"$created_at": "2026-12-04"}), json!({"$created_at": {"$in": []}}),
                    json!({"$created_at": "2026-12-04T10:00:00.0000001Z"}), json!({"$updated_at": {"$gt": "0001-01-01T01:00:00+02:00"}})] {
            assert!(crate::parse::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(crate::parse::instant_text(crate::parse::instant("2026-12-04T11:00:00.5+01:00").unwrap()), "2026-12-04T10:00:00.500000Z");
        // Postgres's local-mean-time offsets, with seconds.
        assert_eq!(crate::parse::instant("1900-01-01T00:19:32+00:19:32"), crate::parse::instant("1900-01-01T00:00:00Z"));
        assert_eq!(crate::parse::instant("1900-01-01T00:00:00-00:00:01"), crate::parse::instant("1900-01-01T00:00:01Z"));
        assert!(crate::parse::instant("1900-01-01T00:00:00+0:0:01").is_err());
        assert!(crate::parse::instant("é1900-01-01T00:00:00é+00:00").is_err(), "no panic on a character across the cut");
        assert!(crate::parse::instant("ééééé").is_err());
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
