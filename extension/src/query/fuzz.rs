//! Property tests of the filter language's parser and compiler, and of the `order`,
//! `fields` and `after` inputs, on random and adversarial input: nothing panics, every
//! rejection is `invalid_query`, and what compiles keeps every value in bind
//! parameters with its SQL literals balanced.
//!
//!   PGBAAS_FUZZ_ITERS=1000000 cargo pgrx test -p pgbaas pg15 fuzz_
//!
//! (`make test` runs 20,000 cases per target.)

use crate::error::BaasError;
use crate::query::rng::Rng;
use crate::query::{compile, eval, parse};
use serde_json::{json, Map, Value};

fn iters() -> usize {
    std::env::var("PGBAAS_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

/// Generators of adversarial input on top of the shared xorshift.
trait Gen {
    fn string(&mut self) -> String;
    fn scalar(&mut self) -> Value;
    fn value(&mut self, depth: usize) -> Value;
    fn filter(&mut self, depth: usize) -> Value;
}

impl Gen for Rng {
    fn string(&mut self) -> String {
        const PARTS: &[&str] = &[
            "a", "b", "c.d", ".", "..", "$", "$gt", "$eq", "$in", "$and", "$or", "$not", "$exists", "$contains",
            "$regex", "'", "''", "\"", "\\", "--", ";", "$1", "$$", "\u{0}", "\n", "é", "😀", " ", "-", ",", "id",
            "created_at", "updated_at", "select pg_sleep(1)", "') or ('1'='1", "%", "_",
        ];
        let mut s = String::new();
        for _ in 0..self.below(5) {
            if self.below(40) == 0 {
                s.push_str(&"k".repeat(self.below(300)));
            } else {
                s.push_str(PARTS[self.below(PARTS.len())]);
            }
        }
        s
    }
    fn scalar(&mut self) -> Value {
        match self.below(6) {
            0 => Value::Null,
            1 => json!(self.below(2) == 0),
            2 => json!(self.next() as i64 >> self.below(64)),
            3 => json!((self.next() as f64) / 3.0),
            _ => Value::String(self.string()),
        }
    }
    fn value(&mut self, depth: usize) -> Value {
        if depth == 0 || self.below(3) > 0 {
            return self.scalar();
        }
        if self.below(2) == 0 {
            Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect())
        } else {
            Value::Object((0..self.below(4)).map(|_| (self.string(), self.value(depth - 1))).collect())
        }
    }
    /// Mostly grammatical filters, with every kind of mistake mixed in.
    fn filter(&mut self, depth: usize) -> Value {
        let mut m = Map::new();
        for _ in 0..self.below(4) {
            let (k, v) = match self.below(12) {
                0 if depth > 0 => ("$and".to_string(), Value::Array((0..self.below(3)).map(|_| self.filter(depth - 1)).collect())),
                1 if depth > 0 => ("$or".to_string(), Value::Array((0..self.below(3)).map(|_| self.filter(depth - 1)).collect())),
                2 if depth > 0 => ("$not".to_string(), self.filter(depth - 1)),
                3 => (self.string(), self.value(3)),
                4 => {
                    let ops = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$contains", "$regex", "gt", "$",
                               "$prefix", "$isuffix", "$substring", "$subset", "$within", "$covers"];
                    let mut o = Map::new();
                    for _ in 0..1 + self.below(3) {
                        let op = ops[self.below(ops.len())];
                        o.insert(op.to_string(), self.value(2));
                    }
                    (["a", "b.c", "n", "tags"][self.below(4)].to_string(), Value::Object(o))
                }
                _ => (["a", "b.c", "n", "tags", "x.y.z"][self.below(5)].to_string(), self.scalar()),
            };
            m.insert(k, v);
        }
        if self.below(30) == 0 {
            return self.value(3); // not even an object
        }
        Value::Object(m)
    }
}

fn assert_invalid_query(e: &BaasError, input: &dyn std::fmt::Debug) {
    assert!(matches!(e, BaasError::InvalidQuery(m) if !m.is_empty()), "{input:?} -> {e:?}");
}

/// Every `'` in generated SQL opens or closes a literal: an odd count would mean a
/// client string escaped its quoting.
fn assert_literals_balanced(sql: &str, input: &dyn std::fmt::Debug) {
    assert_eq!(sql.matches('\'').count() % 2, 0, "unbalanced quotes for {input:?}: {sql}");
    assert!(!sql.contains('\u{0}'), "NUL in SQL for {input:?}");
}

#[test]
fn fuzz_filters_parse_compile_and_evaluate() {
    let mut r = Rng(0x5eed_f0f0_0001);
    let mut compiled = 0;
    for _ in 0..iters() {
        let f = r.filter(4);
        match parse::parse(&f) {
            Err(e) => assert_invalid_query(&e.into(), &f),
            Ok(ast) => {
                compiled += 1;
                let mut params = compile::Params::default();
                let sql = compile::compile_filter(&ast, &mut params);
                assert_literals_balanced(&sql, &f);
                // Values live only in $1 (one jsonb array); placeholders are exactly 0..n.
                assert!(!sql.contains("$2"), "{sql}");
                for i in 0..params.0.len() {
                    assert!(sql.contains(&format!("($1 -> {i})")) || sql.contains(&format!("($1 ->> {i})")), "param {i} unused: {sql}");
                }
                let doc = r.value(3);
                let _ = eval::matches(&ast, &doc);
                let mut p2 = compile::Params::default();
                let on_entries = compile::compile_filter_on(&ast, &mut p2, &|_| "e.value".into());
                assert_eq!(p2.0, params.0, "entry compilation must bind the same values");
                assert_literals_balanced(&on_entries, &f);
            }
        }
    }
    assert!(compiled > iters() / 10, "only {compiled} filters parsed: the generator is too wild");
}

#[test]
fn fuzz_deep_and_large_filters_are_refused_not_overflowed() {
    // serde_json (what jsonb becomes on its way in) stops at 128 levels; 120 is as deep
    // as the parser can ever see, far past the language's own limit of 32.
    let mut deep = json!({"a": 1});
    for _ in 0..120 {
        deep = json!({"$not": deep});
    }
    assert_invalid_query(&parse::parse(&deep).unwrap_err().into(), &"120 nested $not");
    let wide = Value::Object((0..5000).map(|i| (format!("f{i}"), json!(i))).collect());
    assert_invalid_query(&parse::parse(&wide).unwrap_err().into(), &"5,000 fields");
}

#[test]
fn fuzz_order_fields_and_cursors() {
    let mut r = Rng(0x5eed_f0f0_0002);
    for _ in 0..iters() {
        let raw = (0..r.below(4)).map(|_| r.string()).collect::<Vec<_>>().join(",");
        match parse::parse_order(&raw) {
            Err(e) => assert_invalid_query(&e.into(), &raw),
            Ok(keys) => {
                assert_literals_balanced(&compile::order_sql(&keys), &raw);
                assert_literals_balanced(&compile::cursor_sql(&keys), &raw);
                let cursor = r.value(2);
                let mut params = compile::Params::default();
                match compile::after_sql(&keys, &cursor, &mut params) {
                    Err(e) => assert_invalid_query(&e, &cursor),
                    Ok(sql) => assert_literals_balanced(&sql, &cursor),
                }
            }
        }
        let fields: Vec<String> = (0..r.below(5)).map(|_| r.string()).collect();
        if let Err(e) = parse::parse_fields(&fields) {
            assert_invalid_query(&e.into(), &fields);
        }
    }
}
