//! Filter JSON -> AST. docs/query.md states the rules this implements.

use crate::QueryError;
use serde_json::{Map, Value};

pub const MAX_DEPTH: usize = 32;
pub const MAX_FILTER_BYTES: usize = 16 * 1024;
/// Complexity bounds, checked while parsing, before anything is compiled or planned
/// (docs/query.md, "Limits", says why these numbers). A filter's SQL text, its plan and
/// the time to plan it grow with its conditions, not with its byte length: within 16
/// KiB, `{"a":{"$gt":1}}` repeated ~1,000 times plans for seconds.
/// Every `$and`, `$or`, `$not` and every condition on a field (a literal is one `$eq`).
pub const MAX_NODES: usize = 100;
/// Elements of one `$in` / `$nin` list. The list is one bind parameter, so its length
/// costs nothing to plan (0.4 ms for 500 or 1,000 values); this bounds what checking
/// one row costs when no index helps: each element is one jsonb comparison, ~0.5 µs
/// here, so 500 cost a row ~0.3 ms, the order of the worst 100-condition filter
/// (~0.13 ms); docs/query.md, "Limits".
pub const MAX_LIST: usize = 500;
const MAX_SEGMENT_CHARS: usize = 128;
const MAX_SEGMENTS: usize = 16;

/// A field path into `data`: object keys, outermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Vec<String>);

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
    Contains(Value),
    /// The field is an array each of whose elements equals (as `Eq`) one of the values
    /// (`$subset`; Parse's `containedBy`).
    Subset(Vec<Value>),
    /// The field is a string that starts with, ends with or holds the operand
    /// (`$prefix`, `$suffix`, `$substring`); `fold` (the `$i…` forms) compares with
    /// ASCII letters folded to lower case, which Postgres's `lower()` under the "C"
    /// collation does exactly, so the SQL and the evaluator agree on every string.
    Text { op: TextOp, fold: bool, needle: String },
    /// The field is a string holding a match of the pattern (`$regex`, `$iregex` with
    /// ASCII letters folded), in the form both engines read alike (src/pattern.rs).
    Regex { fold: bool, pattern: crate::pattern::Pattern },
    /// The field is a point the shape holds (`$within`; src/geo.rs).
    Within(crate::geo::Shape),
    /// The field is an area holding the point, (latitude, longitude) (`$covers`).
    Covers((f64, f64)),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    Prefix,
    Suffix,
    Substring,
}

impl TextOp {
    /// The operator's name in the language.
    pub fn name(self, fold: bool) -> &'static str {
        match (self, fold) {
            (TextOp::Prefix, false) => "$prefix",
            (TextOp::Suffix, false) => "$suffix",
            (TextOp::Substring, false) => "$substring",
            (TextOp::Prefix, true) => "$iprefix",
            (TextOp::Suffix, true) => "$isuffix",
            (TextOp::Substring, true) => "$isubstring",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// All conditions hold for the field.
    Field(Path, Vec<Cond>),
    /// All conditions hold for the document's creation or last-update time
    /// (`$created_at`, `$updated_at`).
    Time(TimeField, Vec<TimeCond>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    Created,
    Updated,
}

impl TimeField {
    /// The documents table's column.
    pub fn column(self) -> &'static str {
        match self {
            TimeField::Created => "created_at",
            TimeField::Updated => "updated_at",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl TimeOp {
    pub fn sql(self) -> &'static str {
        match self {
            TimeOp::Eq => "=",
            TimeOp::Ne => "<>",
            TimeOp::Gt => ">",
            TimeOp::Gte => ">=",
            TimeOp::Lt => "<",
            TimeOp::Lte => "<=",
        }
    }
}

/// A comparison with an instant, in microseconds since 1970-01-01T00:00:00Z (the
/// precision of Postgres's timestamptz).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeCond {
    pub op: TimeOp,
    pub micros: i64,
}

/// An RFC 3339 instant (`2026-12-04T10:00:00.123Z`, any offset, at most six fraction
/// digits that are not zero) as microseconds since the epoch; years 1 to 9999.
/// Postgres writes an offset with seconds (`+00:19:32`) for times before a zone's
/// standard time (local mean time, in restored old data): taken too.
pub fn instant(s: &str) -> Result<i64, String> {
    let t = match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => t,
        Err(e) => match seconds_offset(s) {
            Some(t) => t,
            None => return Err(format!("{s:?} is not an RFC 3339 time such as 2026-12-04T10:00:00.123Z ({e})")),
        },
    };
    if t.timestamp_subsec_nanos() % 1000 != 0 {
        return Err(format!("{s:?} is more precise than a microsecond"));
    }
    let utc = t.naive_utc();
    if !(1..=9999).contains(&chrono::Datelike::year(&utc)) {
        return Err(format!("{s:?} is outside the years 1 to 9999"));
    }
    Ok(t.timestamp_micros())
}

/// `…±HH:MM:SS` (an offset with seconds) as the instant it names.
fn seconds_offset(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let at = s.len().checked_sub(9).filter(|at| s.is_char_boundary(*at))?;
    let (head, offset) = s.split_at(at);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let parts: Vec<&str> = offset[1..].split(':').collect();
    let [h, m, sec] = parts.as_slice() else { return None };
    let n = |x: &str| if x.len() == 2 && x.bytes().all(|b| b.is_ascii_digit()) { x.parse::<i32>().ok() } else { None };
    let secs = sign * (n(h)? * 3600 + n(m)? * 60 + n(sec)?);
    let base = chrono::DateTime::parse_from_rfc3339(&format!("{head}+00:00")).ok()?;
    let zone = chrono::FixedOffset::east_opt(secs)?;
    Some(base.checked_sub_signed(chrono::Duration::seconds(secs as i64))?.with_timezone(&zone))
}

/// Microseconds since the epoch as RFC 3339 in UTC with six fraction digits.
pub fn instant_text(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        None => String::new(),
    }
}

fn bad(m: impl Into<String>) -> QueryError {
    QueryError::invalid(m)
}

fn too_complex(m: impl Into<String>) -> QueryError {
    QueryError::too_complex(m)
}

/// Counts nodes as the parser meets them, so an over-large filter is refused as soon as
/// it passes the bound, before the rest of it is even read.
struct Budget {
    nodes: usize,
}

impl Budget {
    fn node(&mut self) -> Result<(), QueryError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(too_complex(format!(
                "filter has more than {MAX_NODES} conditions and $and/$or/$not nodes; use $in for long lists of values"
            )));
        }
        Ok(())
    }
}

impl Path {
    pub fn parse(raw: &str) -> Result<Path, QueryError> {
        if raw.is_empty() {
            return Err(bad("field path is empty"));
        }
        let segs: Vec<String> = raw.split('.').map(str::to_string).collect();
        if segs.len() > MAX_SEGMENTS {
            return Err(bad(format!("field path {raw:?} has more than {MAX_SEGMENTS} parts")));
        }
        for s in &segs {
            if s.is_empty() {
                return Err(bad(format!("field path {raw:?} has an empty part")));
            }
            if s.chars().count() > MAX_SEGMENT_CHARS {
                return Err(bad(format!("field path {raw:?} has a part longer than {MAX_SEGMENT_CHARS} characters")));
            }
            // Backslashes and control characters have no place in a key we quote into SQL.
            if s.chars().any(|c| c.is_control() || c == '\\') {
                return Err(bad(format!("field path {raw:?} contains a control character or backslash")));
            }
            if s.starts_with('$') {
                return Err(bad(format!("{s:?} is not a field name: operators go inside a field's object")));
            }
        }
        Ok(Path(segs))
    }

    pub fn dotted(&self) -> String {
        self.0.join(".")
    }
}

/// Parse a filter object (the whole `where`).
pub fn parse(v: &Value) -> Result<Filter, QueryError> {
    let text_len = v.to_string().len();
    if text_len > MAX_FILTER_BYTES {
        return Err(bad(format!("filter is {text_len} bytes; the limit is {MAX_FILTER_BYTES}")));
    }
    parse_filter(v, 0, "where", &mut Budget { nodes: 0 })
}

fn parse_filter(v: &Value, depth: usize, at: &str, budget: &mut Budget) -> Result<Filter, QueryError> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("filter is nested deeper than {MAX_DEPTH} levels")));
    }
    let Value::Object(m) = v else {
        return Err(bad(format!("{at} must be a JSON object, found {}", kind(v))));
    };
    let mut parts = Vec::with_capacity(m.len());
    for (k, val) in m {
        parts.push(match k.as_str() {
            "$and" | "$or" => {
                budget.node()?;
                let Value::Array(items) = val else {
                    return Err(bad(format!("{k} takes a non-empty array of filters")));
                };
                if items.is_empty() {
                    return Err(bad(format!("{k} takes a non-empty array of filters")));
                }
                let fs = items
                    .iter()
                    .enumerate()
                    .map(|(i, f)| parse_filter(f, depth + 1, &format!("{k}[{i}]"), budget))
                    .collect::<Result<Vec<_>, _>>()?;
                if k == "$and" { Filter::And(fs) } else { Filter::Or(fs) }
            }
            "$not" => {
                budget.node()?;
                Filter::Not(Box::new(parse_filter(val, depth + 1, "$not", budget)?))
            }
            "$created_at" | "$updated_at" => {
                let which = if k == "$created_at" { TimeField::Created } else { TimeField::Updated };
                Filter::Time(which, parse_time_conds(k, val, budget)?)
            }
            op if op.starts_with('$') => return Err(bad(format!("unknown operator {op} at the top of a filter"))),
            field => match val {
                // `$refs` is shorthand for "equals this reference, or is an array holding
                // it" (docs/references.md): two plain conditions, so the SQL compiler and
                // the live-feed evaluator agree on it by construction.
                Value::Object(ops) if ops.contains_key("$refs") && is_operator_object(ops) => {
                    let path = Path::parse(field)?;
                    let r = reference(field, &ops["$refs"])?;
                    budget.node()?;
                    budget.node()?;
                    let mut alternatives = vec![
                        Filter::Field(path.clone(), vec![Cond::Eq(r.clone())]),
                        Filter::Field(path.clone(), vec![Cond::Contains(r.clone())]),
                    ];
                    // A file is also referenced by the files' own {"$file": "<uuid>"}.
                    if let Some(f) = r["$ref"].get("file") {
                        let own = serde_json::json!({"$file": f});
                        budget.node()?;
                        budget.node()?;
                        alternatives.push(Filter::Field(path.clone(), vec![Cond::Eq(own.clone())]));
                        alternatives.push(Filter::Field(path.clone(), vec![Cond::Contains(own)]));
                    }
                    let either = Filter::Or(alternatives);
                    let rest: Map<String, Value> = ops.iter().filter(|(k, _)| *k != "$refs").map(|(k, v)| (k.clone(), v.clone())).collect();
                    if rest.is_empty() {
                        either
                    } else {
                        Filter::And(vec![either, Filter::Field(path, parse_conds(field, &Value::Object(rest), depth + 1, budget)?)])
                    }
                }
                _ => Filter::Field(Path::parse(field)?, parse_conds(field, val, depth + 1, budget)?),
            },
        });
    }
    Ok(match (parts.pop(), parts.is_empty()) {
        (Some(only), true) => only,
        (Some(last), false) => {
            parts.push(last);
            Filter::And(parts)
        }
        (None, _) => Filter::And(parts),
    })
}

/// The operand of `$refs` as the reference object it matches: `{"collection", "id"}`,
/// `{"user"}` or `{"file"}` (ids lowercased, as the API prints them) inside `{"$ref": ...}`.
fn reference(field: &str, v: &Value) -> Result<Value, QueryError> {
    let bad_ref = || {
        bad(format!(
            "{field}.$refs takes what a reference names: {{\"collection\": \"<name>\", \"id\": \"<uuid>\"}}, {{\"user\": \"<uuid>\"}} or {{\"file\": \"<uuid>\"}}"
        ))
    };
    let uuid = |s: &Value| -> Result<Value, QueryError> {
        match s {
            Value::String(s) if s.len() == 36 && s.chars().enumerate().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() }) => {
                Ok(Value::String(s.to_ascii_lowercase()))
            }
            _ => Err(bad_ref()),
        }
    };
    let Value::Object(m) = v else { return Err(bad_ref()) };
    let mut out = Map::new();
    match (m.len(), m.get("collection"), m.get("id"), m.get("user"), m.get("file")) {
        (2, Some(Value::String(c)), Some(id), None, None) => {
            out.insert("collection".into(), Value::String(c.clone()));
            out.insert("id".into(), uuid(id)?);
        }
        (1, None, None, Some(u), None) => {
            out.insert("user".into(), uuid(u)?);
        }
        (1, None, None, None, Some(f)) => {
            out.insert("file".into(), uuid(f)?);
        }
        _ => return Err(bad_ref()),
    }
    let mut r = Map::new();
    r.insert("$ref".into(), Value::Object(out));
    Ok(Value::Object(r))
}

fn is_operator_object(m: &Map<String, Value>) -> bool {
    !m.is_empty() && m.keys().all(|k| k.starts_with('$'))
}

/// `"$created_at": "<time>"` (equality) or an object of `$eq $ne $gt $gte $lt $lte`.
fn parse_time_conds(k: &str, v: &Value, budget: &mut Budget) -> Result<Vec<TimeCond>, QueryError> {
    let at = |o: &Value, op: &str| -> Result<i64, QueryError> {
        match o {
            Value::String(s) => instant(s).map_err(|m| bad(format!("{k}{op}: {m}"))),
            _ => Err(bad(format!("{k}{op} takes an RFC 3339 time, not {}", kind(o)))),
        }
    };
    match v {
        Value::Object(m) if is_operator_object(m) => m
            .iter()
            .map(|(op, operand)| {
                budget.node()?;
                let op_kind = match op.as_str() {
                    "$eq" => TimeOp::Eq,
                    "$ne" => TimeOp::Ne,
                    "$gt" => TimeOp::Gt,
                    "$gte" => TimeOp::Gte,
                    "$lt" => TimeOp::Lt,
                    "$lte" => TimeOp::Lte,
                    other => return Err(bad(format!("{k}: {other} is not a time comparison ($eq $ne $gt $gte $lt $lte)"))),
                };
                Ok(TimeCond { op: op_kind, micros: at(operand, &format!(".{op}"))? })
            })
            .collect(),
        Value::String(_) => {
            budget.node()?;
            Ok(vec![TimeCond { op: TimeOp::Eq, micros: at(v, "")? }])
        }
        _ => Err(bad(format!("{k} takes an RFC 3339 time or an object of $eq $ne $gt $gte $lt $lte"))),
    }
}

fn parse_conds(field: &str, v: &Value, depth: usize, budget: &mut Budget) -> Result<Vec<Cond>, QueryError> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("filter is nested deeper than {MAX_DEPTH} levels")));
    }
    let m = match v {
        Value::Object(m) if is_operator_object(m) => m,
        Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => {
            return Err(bad(format!("{field}: an object mixing operators and plain keys is ambiguous")))
        }
        literal => {
            budget.node()?;
            return Ok(vec![Cond::Eq(literal.clone())]);
        }
    };
    // `$options` qualifies `$regex`/`$iregex` beside it: "m" (line anchors) or "".
    let lines = match m.get("$options") {
        None => false,
        Some(_) if !m.contains_key("$regex") && !m.contains_key("$iregex") => {
            return Err(bad(format!("{field}.$options goes with $regex or $iregex")));
        }
        Some(Value::String(o)) if o.is_empty() || o == "m" => o == "m",
        Some(o) => return Err(bad(format!("{field}.$options takes \"m\" (^ and $ at each line) or \"\", not {o}"))),
    };
    m.iter()
        .filter(|(op, _)| *op != "$options")
        .map(|(op, operand)| {
            budget.node()?;
            let ordered = |o: &Value| -> Result<Value, QueryError> {
                match o {
                    Value::Number(_) | Value::String(_) => Ok(o.clone()),
                    _ => Err(bad(format!("{field}.{op} compares numbers or strings, not {}", kind(o)))),
                }
            };
            let list = |o: &Value| -> Result<Vec<Value>, QueryError> {
                match o {
                    Value::Array(a) if a.len() > MAX_LIST => {
                        Err(too_complex(format!("{field}.{op} has {} values; the limit is {MAX_LIST}", a.len())))
                    }
                    Value::Array(a) => Ok(a.clone()),
                    _ => Err(bad(format!("{field}.{op} takes an array"))),
                }
            };
            Ok(match op.as_str() {
                "$eq" => Cond::Eq(operand.clone()),
                "$ne" => Cond::Ne(operand.clone()),
                "$gt" => Cond::Gt(ordered(operand)?),
                "$gte" => Cond::Gte(ordered(operand)?),
                "$lt" => Cond::Lt(ordered(operand)?),
                "$lte" => Cond::Lte(ordered(operand)?),
                "$in" => Cond::In(list(operand)?),
                "$nin" => Cond::Nin(list(operand)?),
                "$exists" => match operand {
                    Value::Bool(b) => Cond::Exists(*b),
                    _ => return Err(bad(format!("{field}.$exists takes true or false"))),
                },
                "$contains" => Cond::Contains(operand.clone()),
                "$subset" => Cond::Subset(list(operand)?),
                "$prefix" | "$suffix" | "$substring" | "$iprefix" | "$isuffix" | "$isubstring" => {
                    let Value::String(needle) = operand else {
                        return Err(bad(format!("{field}.{op} takes a string, not {}", kind(operand))));
                    };
                    let fold = op.starts_with("$i");
                    let op = match op.trim_start_matches("$i").trim_start_matches('$') {
                        "prefix" => TextOp::Prefix,
                        "suffix" => TextOp::Suffix,
                        _ => TextOp::Substring,
                    };
                    Cond::Text { op, fold, needle: needle.clone() }
                }
                "$regex" | "$iregex" => {
                    let Value::String(source) = operand else {
                        return Err(bad(format!("{field}.{op} takes a string, not {}", kind(operand))));
                    };
                    let fold = op == "$iregex";
                    Cond::Regex { fold, pattern: crate::pattern::Pattern::with_lines(field, op, source, fold, lines)? }
                }
                "$within" => Cond::Within(crate::geo::Shape::parse(field, operand)?),
                "$covers" => Cond::Covers(crate::geo::parse_point(field, operand)?),
                other => return Err(bad(format!("{field}: unknown operator {other}"))),
            })
        })
        .collect()
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One key of `order=`: a data path or a system field, ascending or descending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortField {
    Data(Path),
    CreatedAt,
    UpdatedAt,
    Id,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub field: SortField,
    pub descending: bool,
}

pub const MAX_SORT_KEYS: usize = 8;

pub fn parse_order(raw: &str) -> Result<Vec<SortKey>, QueryError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(vec![]);
    }
    let keys: Vec<&str> = raw.split(',').map(str::trim).collect();
    if keys.len() > MAX_SORT_KEYS {
        return Err(too_complex(format!("order takes at most {MAX_SORT_KEYS} fields")));
    }
    keys.into_iter()
        .map(|k| {
            let (descending, name) = match k.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, k.strip_prefix('+').unwrap_or(k)),
            };
            let field = match name {
                "created_at" => SortField::CreatedAt,
                "updated_at" => SortField::UpdatedAt,
                "id" => SortField::Id,
                other => SortField::Data(Path::parse(other).map_err(|e| bad(format!("order: {e}")))?),
            };
            Ok(SortKey { field, descending })
        })
        .collect()
}

pub const MAX_FIELDS: usize = 64;

/// `fields=title,score`: top-level data keys to return.
pub fn parse_fields(raw: &[String]) -> Result<Vec<String>, QueryError> {
    if raw.len() > MAX_FIELDS {
        return Err(too_complex(format!("fields takes at most {MAX_FIELDS} names")));
    }
    raw.iter()
        .map(|f| {
            let p = Path::parse(f.trim()).map_err(|e| bad(format!("fields: {e}")))?;
            if p.0.len() != 1 {
                return Err(bad(format!("fields: {f:?} must be a top-level field name")));
            }
            Ok(p.0[0].clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes() {
        assert_eq!(parse(&json!({})).unwrap(), Filter::And(vec![]));
        assert_eq!(
            parse(&json!({"a.b": 1})).unwrap(),
            Filter::Field(Path(vec!["a".into(), "b".into()]), vec![Cond::Eq(json!(1))])
        );
        assert_eq!(
            parse(&json!({"a": {"x": 1}})).unwrap(),
            Filter::Field(Path(vec!["a".into()]), vec![Cond::Eq(json!({"x": 1}))]),
            "an object without $ keys is a literal"
        );
        assert_eq!(parse(&json!({"a": {}})).unwrap(), Filter::Field(Path(vec!["a".into()]), vec![Cond::Eq(json!({}))]));
        assert!(matches!(parse(&json!({"$or": [{"a": 1}, {"b": {"$gt": 2}}]})).unwrap(), Filter::Or(v) if v.len() == 2));
    }

    #[test]
    fn rejections_name_the_part() {
        let cases = [
            (json!([]), "must be a JSON object"),
            (json!({"$or": []}), "$or takes a non-empty array"),
            (json!({"$and": {}}), "$and takes"),
            (json!({"$nor": [{}]}), "unknown operator $nor"),
            (json!({"a": {"$regexp": "x"}}), "unknown operator $regexp"),
            (json!({"a": {"$regex": 1}}), "a.$regex takes a string"),
            (json!({"a": {"$regex": "(a)\\1"}}), "a.$regex: backreferences"),
            (json!({"a": {"$gt": true}}), "a.$gt compares numbers or strings"),
            (json!({"a": {"$gt": null}}), "compares numbers or strings"),
            (json!({"a": {"$in": 5}}), "a.$in takes an array"),
            (json!({"a": {"$exists": 1}}), "$exists takes true or false"),
            (json!({"a": {"$eq": 1, "b": 2}}), "mixing operators"),
            (json!({"a..b": 1}), "empty part"),
            (json!({"": 1}), "empty"),
            (json!({"a\\b": 1}), "backslash"),
            (json!({"$not": 5}), "$not must be a JSON object"),
        ];
        for (f, want) in cases {
            let e = parse(&f).unwrap_err();
            assert_eq!(e.code(), "invalid_query");
            assert!(e.to_string().contains(want), "{f}: {e}");
        }
    }

    #[test]
    fn depth_and_size_limits() {
        let mut f = json!({"a": 1});
        for _ in 0..40 {
            f = json!({"$not": f});
        }
        assert!(parse(&f).unwrap_err().to_string().contains("deeper than 32"));
        let mut ok = json!({"a": 1});
        for _ in 0..30 {
            ok = json!({"$not": ok});
        }
        assert!(parse(&ok).is_ok());
        let big = json!({"a": {"$in": vec!["x".repeat(100); 200]}});
        assert!(parse(&big).unwrap_err().to_string().contains("limit is 16384"));
    }

    #[test]
    fn order_and_fields() {
        let o = parse_order("score,-created_at, +a.b").unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(o[1], SortKey { field: SortField::CreatedAt, descending: true });
        assert!(parse_order("a,,b").is_err());
        assert!(parse_order("a;drop table x").is_ok(), "any key text is data, quoted");
        assert!(parse_order(&vec!["a"; 9].join(",")).is_err());
        assert_eq!(parse_fields(&["title".into(), "score".into()]).unwrap(), vec!["title", "score"]);
        assert!(parse_fields(&["a.b".into()]).is_err());
    }
}
