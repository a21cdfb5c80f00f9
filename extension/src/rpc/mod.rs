//! The RPC door (issue 17, docs/rpc.md): from a function name, a JSON object of
//! arguments and the catalog's facts about the functions of that name, the one SQL
//! call to run. Plain Rust: api/rpc.rs reads the catalog (as the caller, so only
//! functions the caller may execute in schemas it may use are candidates) and runs the
//! call. The SQL text holds catalog facts only (quoted schema, function and parameter
//! names, `format_type` type names); every value is a text bind parameter cast to the
//! parameter's type by Postgres, so a bad value is Postgres's own 22xxx error.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt::Write;

/// `json` and `jsonb`.
const JSON: u32 = 114;
const JSONB: u32 = 3802;
const NUMERIC: u32 = 1700;
const BYTEA: u32 = 17;
const NUMERIC_ARRAY: u32 = 1231;
const BYTEA_ARRAY: u32 = 1001;
const VOID: u32 = 2278;
const RECORD: u32 = 2249;

/// One function of the requested name, as the catalog query (api/rpc.rs) describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Proc {
    pub schema: String,
    pub name: String,
    /// `pg_proc.provolatile`: i, s or v.
    pub volatility: String,
    pub retset: bool,
    pub ndefaults: usize,
    pub variadic: bool,
    pub ret: Type,
    /// Every parameter, OUT ones too, in declaration order.
    pub args: Vec<Param>,
    /// The attributes of a composite return type (not of OUT parameters).
    #[serde(default)]
    pub columns: Vec<Column>,
    /// The caller may use its schema and execute it. Functions it may not execute are
    /// candidates too: the first exposed schema with a function of the name decides
    /// (no fall-through), and Postgres's own resolution sees every overload.
    #[serde(default = "yes")]
    pub executable: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
pub struct Type {
    pub oid: u32,
    /// `format_type(oid, -1)`: valid SQL for the type, without a length (bpchar, "bit").
    pub sql: String,
    pub typtype: String,
    pub category: String,
    /// A domain's base type (0: not a domain): its values are written as the base's.
    #[serde(default)]
    pub base: u32,
}

impl Type {
    /// The type whose JSON mapping applies (a domain's base type).
    fn json_oid(&self) -> u32 {
        if self.base != 0 { self.base } else { self.oid }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Param {
    /// '' when unnamed.
    pub name: String,
    /// `proargmodes`: i, o, b (inout), v (variadic), t (table column).
    pub mode: String,
    #[serde(flatten)]
    pub ty: Type,
    /// An array of json or jsonb.
    #[serde(default)]
    pub elem_json: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Column {
    pub name: String,
    pub oid: u32,
    /// A domain's base type (0: not a domain).
    #[serde(default)]
    pub base: u32,
}

impl Column {
    fn json_oid(&self) -> u32 {
        if self.base != 0 { self.base } else { self.oid }
    }
}

impl Param {
    fn is_input(&self) -> bool {
        matches!(self.mode.as_str(), "i" | "b" | "v")
    }
    fn is_output(&self) -> bool {
        matches!(self.mode.as_str(), "o" | "b" | "t")
    }
}

/// Why a call cannot be made; api/rpc.rs raises each with its SQLSTATE and code.
#[derive(Debug, PartialEq, Eq)]
pub enum RpcError {
    /// 404 function_not_found: no such function the caller may execute.
    NotFound(String),
    /// 400 invalid_arguments: an unknown, missing or repeated argument.
    InvalidArguments(String),
    /// 400 ambiguous_function: more than one overload takes these arguments.
    Ambiguous(String),
    /// 405 method_not_allowed: GET of a VOLATILE function.
    MethodNotAllowed(String),
}

/// The call: SQL whose one row's first column is the JSON body as text (none for void),
/// with `$1` the text array `params` (`$1[n]` the n-th value: an argument's key in `$2`
/// or its text) and `$2` the arguments (jsonb) as given: a value is taken from `$2` in
/// SQL, so numbers keep every digit. baas.rpc runs it with
/// PL/pgSQL's EXECUTE, not through Rust: an error the function raises keeps its own
/// SQLSTATE (pgrx would turn one it does not know, PT409, into XX000).
#[derive(Debug, PartialEq, Eq)]
pub struct Call {
    pub sql: String,
    pub params: Vec<Option<String>>,
    pub is_void: bool,
}

/// A name the door never serves: internal (`_`-prefixed) or not a possible function name.
pub fn servable_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('_') && name.len() <= 63 && !name.contains('\0')
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `f(a integer, b text default, variadic c integer[])`: for messages.
pub fn signature(p: &Proc) -> String {
    let inputs: Vec<&Param> = p.args.iter().filter(|a| a.is_input()).collect();
    let first_default = inputs.len().saturating_sub(p.ndefaults);
    let parts: Vec<String> = inputs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut s = String::new();
            if a.mode == "v" {
                s.push_str("variadic ");
            }
            if !a.name.is_empty() {
                s.push_str(&a.name);
                s.push(' ');
            }
            s.push_str(&a.ty.sql);
            if i >= first_default {
                s.push_str(" default");
            }
            s
        })
        .collect();
    format!("{}({})", p.name, parts.join(", "))
}

/// Can the door pass this function's arguments and return its result at all?
fn supported(p: &Proc) -> bool {
    let inputs_ok = p.args.iter().filter(|a| a.is_input()).all(|a| a.ty.typtype != "p");
    let out_cols = p.args.iter().any(|a| a.is_output());
    let ret_ok = match (p.ret.oid, p.ret.typtype.as_str()) {
        (VOID, _) => !p.retset,
        (RECORD, _) => out_cols,
        (_, "p") => false,
        _ => true,
    };
    inputs_ok && ret_ok
}

/// The one parameter unnamed json/jsonb function: it receives the whole object.
fn takes_whole_object(p: &Proc) -> bool {
    let inputs: Vec<&Param> = p.args.iter().filter(|a| a.is_input()).collect();
    inputs.len() == 1 && inputs[0].name.is_empty() && inputs[0].mode != "v" && matches!(inputs[0].ty.oid, JSON | JSONB)
}

/// Why `p` does not take `keys` (None: it does).
fn mismatch(p: &Proc, keys: &[&String]) -> Option<String> {
    if takes_whole_object(p) {
        return None;
    }
    let inputs: Vec<&Param> = p.args.iter().filter(|a| a.is_input()).collect();
    if let Some(k) = keys.iter().find(|k| !inputs.iter().any(|a| !a.name.is_empty() && a.name == ***k)) {
        return Some(format!("{} has no argument {:?}", p.name, k));
    }
    let first_default = inputs.len().saturating_sub(p.ndefaults);
    for (i, a) in inputs.iter().enumerate() {
        if i < first_default && !keys.iter().any(|k| **k == a.name) {
            return Some(if a.name.is_empty() {
                format!("{}'s argument {} has no name, so it cannot be given", p.name, i + 1)
            } else {
                format!("argument {:?} is missing", a.name)
            });
        }
    }
    None
}

/// Resolve `name` among `procs` (the catalog's candidates, in exposed-schema order) and
/// build the call of `args`.
pub fn plan(name: &str, args: &Map<String, Value>, via_get: bool, procs: &[Proc]) -> Result<Call, RpcError> {
    let not_found = || RpcError::NotFound(format!("function {name:?} was not found, or this caller may not execute it"));
    if !servable_name(name) {
        return Err(not_found());
    }
    // The first exposed schema that has a function of the name decides, whether or not
    // this caller may execute it (no fall-through to a later schema): one name is one
    // function for every caller.
    let Some(first) = procs.first() else {
        return Err(not_found());
    };
    let all: Vec<&Proc> = procs.iter().filter(|p| p.schema == first.schema).collect();
    let here: Vec<&Proc> = all.iter().copied().filter(|p| p.executable && supported(p)).collect();
    if here.is_empty() {
        return Err(not_found());
    }
    let mut keys: Vec<&String> = args.keys().collect();
    keys.sort();
    // Every overload counts for ambiguity, as in Postgres's own resolution (an overload
    // hidden from this caller would make the call ambiguous there: 42725).
    let matching: Vec<&Proc> = all.iter().copied().filter(|p| mismatch(p, &keys).is_none()).collect();
    let p = match matching.as_slice() {
        [one] if one.executable && supported(one) => *one,
        [] | [_] => {
            let sigs: Vec<String> = here.iter().map(|p| signature(p)).collect();
            let why = if here.len() == 1 {
                mismatch(here[0], &keys).unwrap_or_default()
            } else {
                let given: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
                format!("no overload of {name} takes the arguments ({})", given.join(", "))
            };
            return Err(RpcError::InvalidArguments(format!("{why}; {name} takes: {}", sigs.join(" or "))));
        }
        many => {
            // Only the overloads this caller may execute are named.
            let sigs: Vec<String> = many.iter().filter(|p| p.executable).map(|p| signature(p)).collect();
            return Err(RpcError::Ambiguous(format!(
                "more than one function {name} takes these arguments: {}; name the arguments so that one does",
                sigs.join(", ")
            )));
        }
    };
    if via_get && p.volatility == "v" {
        return Err(RpcError::MethodNotAllowed(format!(
            "{name} is VOLATILE (it may write): call it with POST; GET is for STABLE and IMMUTABLE functions"
        )));
    }
    build(p, args, via_get)
}

fn build(p: &Proc, args: &Map<String, Value>, via_get: bool) -> Result<Call, RpcError> {
    let mut params: Vec<Option<String>> = Vec::new();
    let mut list: Vec<String> = Vec::new();
    if takes_whole_object(p) {
        let a = p.args.iter().find(|a| a.is_input()).expect("one input");
        list.push(format!("coalesce($2, '{{}}')::{}", a.ty.sql));
    } else {
        // Declaration order; VARIADIC last, as Postgres requires (it is the last input).
        for a in p.args.iter().filter(|a| a.is_input()) {
            let Some(v) = args.get(&a.name) else { continue };
            let n = params.len() + 1;
            let (text, expr) = value(a, v, via_get, n)?;
            params.push(text);
            let prefix = if a.mode == "v" { "variadic " } else { "" };
            list.push(format!("{prefix}{} => {expr}", quote_ident(&a.name)));
        }
    }
    let call = format!("{}.{}({})", quote_ident(&p.schema), quote_ident(&p.name), list.join(", "));
    // An unnamed OUT parameter's column is `column<k>` (k counts the outputs), as Postgres
    // names it.
    let out_cols: Vec<(String, u32)> = p
        .args
        .iter()
        .filter(|a| a.is_output())
        .enumerate()
        .map(|(k, a)| (if a.name.is_empty() { format!("column{}", k + 1) } else { a.name.clone() }, a.ty.json_oid()))
        .collect();
    // RETURNS TABLE and several OUT parameters make rows; one OUT parameter a value.
    let table = p.args.iter().any(|a| a.mode == "t");
    // `returns table (p some_composite)`: Postgres returns the composite itself (its
    // columns, not p); each row is {"p": {...}} as declared.
    if table && out_cols.len() == 1 && p.ret.oid != RECORD && p.ret.typtype == "c" && p.retset {
        let cols: Vec<(String, u32)> = p.columns.iter().map(|c| (c.name.clone(), c.json_oid())).collect();
        let inner = row_json(&cols, "(r.x)");
        let sql = format!(
            "select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object({}, \
             case when pg_catalog.num_nulls(r.x) = 1 then 'null'::jsonb else {inner} end)), '[]')::text \
             from (select {call} as x) r",
            sql_literal(&out_cols[0].0)
        );
        return Ok(Call { sql, params, is_void: false });
    }
    let columns: Option<Vec<(String, u32)>> = if p.ret.oid == RECORD || table {
        Some(out_cols)
    } else if p.ret.typtype == "c" {
        Some(p.columns.iter().map(|c| (c.name.clone(), c.json_oid())).collect())
    } else {
        None
    };
    let (sql, is_void) = match (p.ret.json_oid(), columns, p.retset) {
        // The value is read (as text), so Postgres calls a STABLE or IMMUTABLE void
        // function too: an unread subquery column is removed unless VOLATILE.
        (VOID, _, _) => (format!("select ({call})::text"), true),
        (_, Some(cols), true) => {
            let row = row_json(&cols, "r");
            (format!("select coalesce(pg_catalog.jsonb_agg({row}), '[]')::text from {call} as r"), false)
        }
        (_, Some(cols), false) => {
            let row = row_json(&cols, "(s.x)");
            (
                format!(
                    "select case when pg_catalog.num_nulls(s.x) = 1 then 'null' else ({row})::text end \
                     from (select {call} as x offset 0) s"
                ),
                false,
            )
        }
        (oid, None, true) => {
            let v = json_expr("r.x", oid);
            (format!("select coalesce(pg_catalog.jsonb_agg({v}), '[]')::text from {call} as r(x)"), false)
        }
        // json and jsonb pass through as Postgres wrote them.
        (JSON | JSONB, None, false) => (format!("select coalesce(s.x::text, 'null') from (select {call} as x offset 0) s"), false),
        (oid, None, false) => {
            let v = json_expr("s.x", oid);
            (format!("select coalesce(({v})::text, 'null') from (select {call} as x offset 0) s"), false)
        }
    };
    Ok(Call { sql, params, is_void })
}

/// A column or value as JSON by its type: numeric as a string (exact), bytea as base64
/// (in arrays too: numeric[] keeps its dimensions, bytea[] is written one-dimensional),
/// json nested, the rest as to_jsonb writes it (timestamps ISO 8601).
pub fn json_expr(e: &str, oid: u32) -> String {
    match oid {
        JSON => format!("({e})::jsonb"),
        JSONB => format!("({e})"),
        NUMERIC => format!("pg_catalog.to_jsonb(({e})::text)"),
        BYTEA => format!("pg_catalog.to_jsonb(pg_catalog.translate(pg_catalog.encode({e}, 'base64'), E'\\n', ''))"),
        NUMERIC_ARRAY => format!("pg_catalog.to_jsonb(({e})::text[])"),
        BYTEA_ARRAY => format!(
            "(select case when ({e}) is null then null else coalesce(pg_catalog.jsonb_agg({} order by u.i), '[]') end \
             from pg_catalog.unnest({e}) with ordinality u(x, i))",
            json_expr("u.x", BYTEA)
        ),
        _ => format!("pg_catalog.to_jsonb({e})"),
    }
}

/// A row of `cols` (of the relation or composite `rel`) as a jsonb object, in column order.
fn row_json(cols: &[(String, u32)], rel: &str) -> String {
    if cols.is_empty() {
        return "'{}'::jsonb".into();
    }
    // jsonb_build_object takes at most 100 arguments.
    let parts: Vec<String> = cols
        .chunks(40)
        .map(|chunk| {
            let mut s = String::from("pg_catalog.jsonb_build_object(");
            for (i, (name, oid)) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{}, {}", sql_literal(name), json_expr(&format!("{rel}.{}", quote_ident(name)), *oid));
            }
            s.push(')');
            s
        })
        .collect();
    parts.join(" || ")
}

/// A string as an SQL literal (catalog names only; values are always bound).
fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The bound text for parameter `a` given `v` and the expression of its value, cast to
/// its type: `$1[n]` the text, or `$2 ->> $1[n]` (the key bound) taken from the jsonb
/// arguments themselves, so that a number keeps every digit.
fn value(a: &Param, v: &Value, via_get: bool, n: usize) -> Result<(Option<String>, String), RpcError> {
    let ty = &a.ty.sql;
    let cast = format!("$1[{n}]::{ty}");
    let key = Some(a.name.clone());
    let array_param = a.ty.category == "A";
    Ok(match v {
        Value::Null => (None, cast),
        _ if via_get => match v {
            Value::Array(items) if array_param => (Some(array_literal(items, a.elem_json)), cast),
            Value::Array(_) => {
                return Err(RpcError::InvalidArguments(format!("argument {:?} is given more than once", a.name)))
            }
            // One value of an array (or variadic) parameter: an array of one.
            _ if array_param => (Some(array_literal(std::slice::from_ref(v), a.elem_json)), cast),
            _ => (Some(plain_text(v)), cast),
        },
        _ if matches!(a.ty.oid, JSON | JSONB) => (key, format!("($2 OPERATOR(pg_catalog.->) $1[{n}])::{ty}")),
        Value::Array(items) if array_param => (Some(array_literal(items, a.elem_json)), cast),
        Value::Object(_) if a.ty.typtype == "c" => {
            (key, format!("pg_catalog.jsonb_populate_record(null::{ty}, $2 OPERATOR(pg_catalog.->) $1[{n}])"))
        }
        _ => (key, format!("($2 OPERATOR(pg_catalog.->>) $1[{n}])::{ty}")),
    })
}

/// A JSON value as the text a cast reads: a string's own text, else its JSON.
fn plain_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON array as a Postgres array literal: `{"1","a \"b\"",NULL,{"2"}}`.
pub fn array_literal(items: &[Value], elem_json: bool) -> String {
    let mut s = String::from("{");
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        match v {
            Value::Null => s.push_str("NULL"),
            Value::Array(inner) if !elem_json => s.push_str(&array_literal(inner, elem_json)),
            other => {
                let text = if elem_json { other.to_string() } else { plain_text(other) };
                s.push('"');
                for c in text.chars() {
                    if c == '"' || c == '\\' {
                        s.push('\\');
                    }
                    s.push(c);
                }
                s.push('"');
            }
        }
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests;
