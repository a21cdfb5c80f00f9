//! Column types <-> JSON (docs/tables.md, "Over HTTP"): for a column's type, the SQL
//! expression that makes its JSON value, and how a JSON input value reaches it. Plain
//! Rust over (expression, type oid) building SQL text; no database access. Shared by the
//! tables door and RPC results (docs/design/issue-17-schema.md §3, "JSON mapping").
//!
//! Output: integers, floats and booleans are JSON numbers and booleans; `numeric` is a
//! JSON **string** (exact: a JavaScript number would round it); json/jsonb nest;
//! `timestamptz`, `timestamp`, `date`, `time`, `timetz` are ISO 8601 strings; `bytea` is
//! standard base64 (no line breaks); arrays are JSON arrays (`numeric[]` of strings);
//! anything else (text, uuid, enums, intervals, ...) is its text output as a string.
//! SQL NULL is JSON null.
//!
//! Input, the inverse: JSON null is SQL NULL; a json/jsonb column takes any JSON; a
//! bytea column a base64 string; an array column a one-level JSON array of scalars; any
//! other column a string, number or boolean whose text Postgres casts to the column's
//! type (so `"2026-01-01T00:00:00Z"`, `"12.50"` or `12.5` for numeric, `"true"`), and a
//! value Postgres cannot cast is refused naming the column.

use serde_json::Value;

/// Type oids this mapping treats specially (pg_type.h; stable across versions).
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const JSONB: u32 = 3802;
}

/// How a column's values map to JSON, decided by its (base) type oid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// JSON number or boolean as Postgres's to_jsonb makes it.
    Number,
    Bool,
    /// Exact decimal: a JSON string.
    Numeric,
    Json,
    Jsonb,
    Bytea,
    /// ISO 8601 string (to_jsonb's format).
    Time,
    /// Any other type: its text output.
    Text,
}

impl Kind {
    pub fn of(type_oid: u32) -> Kind {
        match type_oid {
            oid::INT2 | oid::INT4 | oid::INT8 | oid::FLOAT4 | oid::FLOAT8 | oid::OID => Kind::Number,
            oid::BOOL => Kind::Bool,
            oid::NUMERIC => Kind::Numeric,
            oid::JSON => Kind::Json,
            oid::JSONB => Kind::Jsonb,
            oid::BYTEA => Kind::Bytea,
            oid::DATE | oid::TIME | oid::TIMESTAMP | oid::TIMESTAMPTZ | oid::TIMETZ => Kind::Time,
            _ => Kind::Text,
        }
    }
}

/// A column's type: its base type oid (a domain's base type), the element type oid when
/// that is an array type (0 otherwise), and the type's SQL name (`format_type`, schema
/// qualified where needed) to cast to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColType {
    pub oid: u32,
    pub elem: u32,
    pub sql: String,
}

impl ColType {
    pub fn new(oid: u32, elem: u32, sql: impl Into<String>) -> ColType {
        ColType { oid, elem, sql: sql.into() }
    }
    pub fn is_array(&self) -> bool {
        self.elem != 0
    }
    pub fn kind(&self) -> Kind {
        Kind::of(self.oid)
    }
}

/// The SQL expression producing the JSON (jsonb) value of `expr`, a value of type `ty`.
pub fn output_expr(expr: &str, ty: &ColType) -> String {
    if ty.is_array() {
        return match Kind::of(ty.elem) {
            Kind::Numeric => format!("pg_catalog.to_jsonb(({expr})::text[])"),
            Kind::Number | Kind::Bool | Kind::Json | Kind::Jsonb | Kind::Time | Kind::Text => {
                format!("pg_catalog.to_jsonb({expr})")
            }
            // An array of base64 strings, as input takes it.
            Kind::Bytea => format!(
                "(case when ({expr}) is null then null else pg_catalog.to_jsonb(array(select pg_catalog.translate(pg_catalog.encode(u.e, 'base64'), E'\\n', '') \
                 from pg_catalog.unnest({expr}) with ordinality u(e, i) order by u.i)) end)"
            ),
        };
    }
    match ty.kind() {
        Kind::Number | Kind::Bool | Kind::Time => format!("pg_catalog.to_jsonb({expr})"),
        Kind::Jsonb => format!("({expr})::jsonb"),
        Kind::Json => format!("({expr})::jsonb"),
        Kind::Bytea => format!("pg_catalog.to_jsonb(pg_catalog.translate(pg_catalog.encode({expr}, 'base64'), E'\\n', ''))"),
        Kind::Numeric | Kind::Text => format!("pg_catalog.to_jsonb(({expr})::text)"),
    }
}

/// The SQL expression turning `param`, the text `input_text` made, into a value of `ty`.
pub fn input_expr(param: &str, ty: &ColType) -> String {
    if ty.is_array() {
        // A JSON array (its text); elements through their text and the array type's
        // cast (bytea elements from base64). JSON null stays NULL.
        let (elem, empty) = if Kind::of(ty.elem) == Kind::Bytea { ("pg_catalog.decode(x.e, 'base64')", "bytea") } else { ("x.e", "text") };
        return format!(
            "(case when ({param}) is null then null else coalesce((select pg_catalog.array_agg({elem} order by x.i) from pg_catalog.jsonb_array_elements_text(({param})::jsonb) with ordinality x(e, i)), '{{}}'::{empty}[]) end)::{}",
            ty.sql
        );
    }
    match ty.kind() {
        Kind::Bytea => format!("pg_catalog.decode({param}, 'base64')"),
        Kind::Json | Kind::Jsonb => format!("({param})::{}", ty.sql),
        _ => format!("({param})::{}", ty.sql),
    }
}

/// The text a JSON input value travels as (a bind parameter), for a column of type
/// `ty`: None for JSON null (SQL NULL). Err: the shape cannot be this column's (a
/// message to prefix with the column's name).
pub fn input_text(v: &Value, ty: &ColType) -> Result<Option<String>, String> {
    match (v, ty.kind(), ty.is_array()) {
        (Value::Null, _, _) => Ok(None),
        (_, Kind::Json | Kind::Jsonb, false) => Ok(Some(v.to_string())),
        (Value::Array(items), _, true) => {
            if let Some(bad) = items.iter().find(|i| i.is_array() || i.is_object()) {
                return Err(format!("takes an array of {} values, not one holding {}", ty.sql, crate::query::parse::kind(bad)));
            }
            // Elements as JSON strings, so that each reaches Postgres as its own text.
            let texts: Vec<Value> = items
                .iter()
                .map(|i| match i {
                    Value::Null => Value::Null,
                    Value::String(s) => Value::String(s.clone()),
                    other => Value::String(other.to_string()),
                })
                .collect();
            Ok(Some(Value::Array(texts).to_string()))
        }
        (_, _, true) => Err(format!("takes a JSON array ({}), not {}", ty.sql, crate::query::parse::kind(v))),
        (Value::String(s), _, _) => Ok(Some(s.clone())),
        (Value::Number(n), Kind::Bytea, _) => Err(format!("takes a base64 string, not the number {n}")),
        (Value::Number(n), _, _) => Ok(Some(n.to_string())),
        (Value::Bool(b), _, _) => Ok(Some(b.to_string())),
        (Value::Array(_) | Value::Object(_), _, _) => {
            Err(format!("takes a {} value, not {}", ty.sql, crate::query::parse::kind(v)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(oid: u32, sql: &str) -> ColType {
        ColType::new(oid, 0, sql)
    }

    #[test]
    fn output_by_type() {
        assert_eq!(output_expr("t.\"n\"", &t(oid::INT4, "integer")), "pg_catalog.to_jsonb(t.\"n\")");
        assert_eq!(output_expr("x", &t(oid::NUMERIC, "numeric")), "pg_catalog.to_jsonb((x)::text)", "numeric is a string");
        assert_eq!(output_expr("x", &t(oid::TIMESTAMPTZ, "timestamp with time zone")), "pg_catalog.to_jsonb(x)");
        assert!(output_expr("x", &t(oid::BYTEA, "bytea")).contains("encode(x, 'base64')"));
        assert!(output_expr("x", &t(oid::BYTEA, "bytea")).contains("translate"), "no line breaks in base64");
        assert_eq!(output_expr("x", &t(oid::JSON, "json")), "(x)::jsonb");
        assert_eq!(output_expr("x", &t(2950, "uuid")), "pg_catalog.to_jsonb((x)::text)");
        assert_eq!(output_expr("x", &ColType::new(1231, oid::NUMERIC, "numeric[]")), "pg_catalog.to_jsonb((x)::text[])");
        assert_eq!(output_expr("x", &ColType::new(1007, oid::INT4, "integer[]")), "pg_catalog.to_jsonb(x)");
    }

    #[test]
    fn input_by_type() {
        let int = t(oid::INT4, "integer");
        assert_eq!(input_text(&json!(5), &int), Ok(Some("5".into())));
        assert_eq!(input_text(&json!("5"), &int), Ok(Some("5".into())));
        assert_eq!(input_text(&json!(null), &int), Ok(None));
        assert!(input_text(&json!({"a": 1}), &int).unwrap_err().contains("not an object"));
        assert_eq!(input_expr("$1[1]", &int), "($1[1])::integer");
        let num = t(oid::NUMERIC, "numeric");
        assert_eq!(input_text(&json!("12345678901234567890.123"), &num), Ok(Some("12345678901234567890.123".into())));
        let by = t(oid::BYTEA, "bytea");
        assert_eq!(input_expr("p", &by), "pg_catalog.decode(p, 'base64')");
        assert!(input_text(&json!(1), &by).is_err());
        let jb = t(oid::JSONB, "jsonb");
        assert_eq!(input_text(&json!({"a": [1]}), &jb), Ok(Some(r#"{"a":[1]}"#.into())));
        assert_eq!(input_text(&json!("s"), &jb), Ok(Some(r#""s""#.into())), "a JSON string stays a JSON string");
        let arr = ColType::new(1007, oid::INT4, "integer[]");
        assert_eq!(input_text(&json!([1, "2", null]), &arr), Ok(Some(r#"["1","2",null]"#.into())));
        assert!(input_text(&json!([[1]]), &arr).is_err());
        assert!(input_text(&json!(1), &arr).is_err());
        assert!(input_expr("p", &arr).ends_with("::integer[]"));
        assert_eq!(input_text(&json!(true), &t(oid::BOOL, "boolean")), Ok(Some("true".into())));
    }

    #[test]
    fn kinds() {
        assert_eq!(Kind::of(oid::INT8), Kind::Number);
        assert_eq!(Kind::of(oid::DATE), Kind::Time);
        assert_eq!(Kind::of(25), Kind::Text);
        assert_eq!(Kind::of(123456), Kind::Text, "unknown types (enums, ...) are text");
    }
}
