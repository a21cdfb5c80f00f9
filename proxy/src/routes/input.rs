//! Everything a client controls besides the path, checked against the route table
//! before any SQL: the JSON body's shape, the query string, If-Match. One strictness
//! rule for bodies and query parameters: a name the route does not declare is refused,
//! naming it (ignoring it could silently drop a filter or a field the client meant).

use crate::errors::ApiError;
use crate::router::{Field, FieldType, Need};
use serde_json::Value;
use std::borrow::Cow;

/// The body as a JSON object whose top-level fields are those of `fields`, each of
/// its declared type; or a 400 naming the problem.
pub fn parse_body(fields: &[Field], body: &[u8]) -> Result<Value, ApiError> {
    let not_object = || ApiError::bad_request("invalid_json", "request body must be a JSON object");
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(not_object());
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body is not valid JSON: {e}")))?;
    let Value::Object(m) = &v else {
        return Err(not_object());
    };
    // "\u0000" is the only way a NUL gets into JSON text; jsonb cannot store it, and a
    // text parameter cannot carry it. Search only when the escape is there at all.
    if body.windows(6).any(|w| w == b"\\u0000") {
        if let Some(path) = nul_at(&v, String::new()) {
            return Err(ApiError::bad_request(
                "invalid_json",
                format!("JSON text must not contain \\u0000 (Postgres cannot store a NUL character), found at {path}"),
            ));
        }
    }
    // A route whose fields include `*` (routes::ANY_FIELDS) takes any further names:
    // the RPC and table doors, whose names are the function's arguments or the
    // table's columns, checked in Postgres.
    let open = fields.iter().any(|f| f.name == ANY_FIELD);
    if let Some(unknown) = m.keys().find(|k| !open && !fields.iter().any(|f| f.name == k.as_str())) {
        let allowed: Vec<&str> = fields.iter().map(|f| f.name).collect();
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("unknown field '{unknown}'; this route takes: {}", allowed.join(", ")),
        ));
    }
    let mut one_of_sent = None;
    for f in fields.iter().filter(|f| f.name != ANY_FIELD) {
        let value = m.get(f.name).filter(|v| !v.is_null());
        match (value, f.need) {
            (None, Need::Required) => {
                return Err(ApiError::bad_request("invalid_request", format!("field '{}' is required", f.name)))
            }
            (None, Need::OneOf) => one_of_sent = one_of_sent.or(Some(false)),
            (Some(_), Need::OneOf) => one_of_sent = Some(true),
            _ => {}
        }
        if let Some(value) = value {
            check_type(f, value)?;
        }
    }
    if one_of_sent == Some(false) {
        let names: Vec<&str> = fields.iter().filter(|f| f.need == Need::OneOf).map(|f| f.name).collect();
        return Err(ApiError::bad_request("invalid_request", format!("nothing to do: send {}", names.join(" and/or "))));
    }
    Ok(v)
}

/// A number in a body Postgres reads as sent (Arg::RawBody) may have at most this many
/// digits once its exponent is written out, and an exponent of at most this magnitude.
/// Postgres's numeric keeps every digit (1e-16383 is 16383 digits when printed), so an
/// unbounded number would cost memory at every later read (docs/operators.md).
pub const MAX_NUMBER_DIGITS: u64 = 1000;
pub const MAX_NUMBER_EXPONENT: u64 = 1000;

/// parse_body for a body that goes to Postgres as sent: every number within the bounds
/// above (else 400 invalid_json), and the shape checked with each number read as 0, so
/// that a number beyond f64 (a 310-digit integer) is not refused as out of range. The
/// returned value's numbers are therefore all 0: such routes take their values from the
/// raw body, not from this value.
pub fn parse_raw_body(fields: &[Field], body: &[u8]) -> Result<Value, ApiError> {
    parse_body(fields, &numbers_bounded(body)?)
}

/// `body` with every number token (outside strings) replaced by `0`, or a 400 naming the
/// first number beyond the bounds. Malformed text is copied as it is, for serde_json to
/// report.
fn numbers_bounded(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    let mut in_string = false;
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < body.len() && body[*i].is_ascii_digit() {
            *i += 1;
        }
        s
    };
    while i < body.len() {
        let c = body[i];
        if in_string {
            out.push(c);
            i += 1;
            match c {
                b'\\' if i < body.len() => {
                    out.push(body[i]);
                    i += 1;
                }
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if c == b'"' {
            in_string = true;
            out.push(c);
            i += 1;
            continue;
        }
        if c != b'-' && !c.is_ascii_digit() {
            out.push(c);
            i += 1;
            continue;
        }
        let start = i;
        if c == b'-' {
            i += 1;
        }
        let int_start = digits(&mut i);
        let int = &body[int_start..i];
        let mut frac: &[u8] = &[];
        if i < body.len() && body[i] == b'.' {
            i += 1;
            let f = digits(&mut i);
            frac = &body[f..i];
        }
        let mut exp: i64 = 0;
        let mut exp_too_big = false;
        if i < body.len() && (body[i] == b'e' || body[i] == b'E') {
            i += 1;
            let neg = i < body.len() && body[i] == b'-';
            if i < body.len() && (body[i] == b'-' || body[i] == b'+') {
                i += 1;
            }
            let e = digits(&mut i);
            let e = &body[e..i];
            let e = &e[e.iter().position(|&d| d != b'0').unwrap_or(e.len())..];
            if e.len() > 6 {
                exp_too_big = true;
            } else {
                let v = e.iter().fold(0i64, |a, d| a * 10 + i64::from(d - b'0'));
                exp = if neg { -v } else { v };
            }
        }
        if int.is_empty() {
            // Not a number (a lone `-`): serde_json reports it.
            out.extend_from_slice(&body[start..i]);
            continue;
        }
        let significant_int = int.len() - int.iter().position(|&d| d != b'0').unwrap_or(int.len());
        let whole = (significant_int as i64 + exp).max(0) as u64;
        let scale = (frac.len() as i64 - exp).max(0) as u64;
        if exp_too_big || exp.unsigned_abs() > MAX_NUMBER_EXPONENT || whole + scale > MAX_NUMBER_DIGITS {
            let shown = String::from_utf8_lossy(&body[start..i.min(start + 40)]);
            let more = if i > start + 40 { "..." } else { "" };
            return Err(ApiError::bad_request(
                "invalid_json",
                format!(
                    "the number at byte {start} ({shown}{more}) is out of bounds: numbers may have at most \
                     {MAX_NUMBER_DIGITS} digits when written without an exponent, and an exponent of at most \
                     {MAX_NUMBER_EXPONENT}"
                ),
            ));
        }
        out.push(b'0');
    }
    Ok(out)
}

fn check_type(f: &Field, v: &Value) -> Result<(), ApiError> {
    let bad = |what: &str| Err(ApiError::bad_request("invalid_request", format!("field '{}' must be {what}", f.name)));
    match (f.ty, v) {
        (FieldType::Text, Value::String(_)) | (FieldType::Object, Value::Object(_)) | (FieldType::Data, Value::Object(_)) => Ok(()),
        (FieldType::Any, _) => Ok(()),
        (FieldType::Uuid, Value::String(s)) if is_uuid(s) => Ok(()),
        (FieldType::Text, _) => bad("a string"),
        (FieldType::Uuid, _) => bad("a uuid, e.g. \"0190b0a4-6f1e-7c3a-8d2b-5e4f3a2b1c0d\""),
        (FieldType::Object, _) => bad("a JSON object"),
        (FieldType::Data, _) => Err(ApiError::bad_request("invalid_data", "data must be a JSON object")),
    }
}

/// The field name that stands for any other name (see parse_body).
pub const ANY_FIELD: &str = "*";

/// Where in `v` a string or key holds a NUL, as a JSON-pointer-like path.
fn nul_at(v: &Value, here: String) -> Option<String> {
    let shown = || if here.is_empty() { "the top level".to_string() } else { here.clone() };
    match v {
        Value::String(s) if s.contains('\0') => Some(shown()),
        Value::Array(a) => a.iter().enumerate().find_map(|(i, x)| nul_at(x, format!("{here}/{i}"))),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let at = format!("{here}/{}", k.replace('\0', "\\u0000"));
            if k.contains('\0') {
                Some(at)
            } else {
                nul_at(x, at)
            }
        }),
        _ => None,
    }
}

pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `If-Match: "3"` (or `3`, or `W/"3"`) -> Some(3); absent or `*` -> None.
pub fn if_match(header: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(h) = header.map(str::trim) else {
        return Ok(None);
    };
    if h == "*" {
        return Ok(None);
    }
    let v = h.strip_prefix("W/").unwrap_or(h);
    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
    v.parse::<i64>()
        .ok()
        .filter(|n| *n >= 1)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("invalid_request", "If-Match must be a document version, e.g. \"3\""))
}

/// A query-string component, percent-decoded with form rules (`+` is a space, as
/// browsers and URLSearchParams encode it). Not UTF-8 -> 400.
pub fn decode_query(s: &str) -> Result<Cow<'_, str>, ApiError> {
    let bad = || ApiError::bad_request("invalid_query", "query string is not valid percent-encoded UTF-8");
    let d = if s.contains('+') {
        let spaced = s.replace('+', " ");
        let decoded = percent_encoding::percent_decode_str(&spaced).decode_utf8().map_err(|_| bad())?;
        Cow::Owned(decoded.into_owned())
    } else {
        percent_encoding::percent_decode_str(s).decode_utf8().map_err(|_| bad())?
    };
    if d.contains('\0') {
        // Postgres text cannot hold NUL: refused here rather than with its own wording.
        return Err(ApiError::bad_request("invalid_query", "the query string may not contain %00 (NUL)"));
    }
    Ok(d)
}

/// A decoded name=value pair of a query string.
pub type Pair<'q> = (Cow<'q, str>, Cow<'q, str>);

/// The query's name=value pairs, decoded, each name at most once and one of `known`.
pub fn pairs<'q>(query: Option<&'q str>, known: &[&str]) -> Result<Vec<Pair<'q>>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let mut out: Vec<Pair> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode_query(k)?, decode_query(v)?);
        if !known.contains(&k.as_ref()) {
            return Err(bad(if known.is_empty() {
                format!("unknown query parameter {k:?}; this route takes none")
            } else {
                format!("unknown query parameter {k:?}; supported: {}", known.join(", "))
            }));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(bad(format!("parameter {k:?} is given twice")));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// GET /v1/rpc/{function}: the query parameters as the arguments' JSON object, every
/// value a string, a repeated name an array of its strings (in order). The names are
/// the function's argument names, which Postgres checks.
pub fn query_args(query: Option<&str>) -> Result<Value, ApiError> {
    let mut out = serde_json::Map::new();
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode_query(k)?.into_owned(), Value::String(decode_query(v)?.into_owned()));
        match out.get_mut(&k) {
            None => {
                out.insert(k, v);
            }
            Some(Value::Array(items)) => items.push(v),
            Some(first) => *first = Value::Array(vec![first.take(), v]),
        }
    }
    Ok(Value::Object(out))
}

/// A route without query parameters refuses any.
pub fn no_query(query: Option<&str>) -> Result<(), ApiError> {
    pairs(query, &[]).map(|_| ())
}

/// `?kind=btree|gin` of DELETE .../indexes/{path}.
pub fn index_kind(query: Option<&str>) -> Result<&'static str, ApiError> {
    match pairs(query, &["kind"])?.first().map(|(_, v)| v.as_ref()) {
        None | Some("btree") => Ok("btree"),
        Some("gin") => Ok("gin"),
        Some(other) => Err(ApiError::bad_request("invalid_query", format!("kind must be btree or gin, got {other:?}"))),
    }
}

/// Query parameters of the list route.
#[derive(Debug, PartialEq, Clone)]
pub struct ListParams {
    pub filter: Value,
    pub order: Option<String>,
    pub limit: i32,
    pub offset: i32,
    pub count: bool,
    pub after: Option<String>,
    pub fields: Option<Vec<String>>,
    /// `expand`: paths of references to expand (docs/references.md).
    pub expand: Option<Vec<String>>,
    /// `collection` and `field` of a back-references request.
    pub collection: Option<String>,
    pub field: Option<String>,
}

impl Default for ListParams {
    fn default() -> Self {
        ListParams {
            filter: Value::Object(Default::default()),
            order: None,
            limit: 100,
            offset: 0,
            count: false,
            after: None,
            fields: None,
            expand: None,
            collection: None,
            field: None,
        }
    }
}

/// Longest `where` accepted, decoded (the filter language's own limit is 16 KiB of JSON).
pub const MAX_WHERE_BYTES: usize = 16 * 1024;

pub const LIST_PARAMS: &[&str] = &["where", "order", "limit", "offset", "count", "after", "fields"];

pub fn list_params(query: Option<&str>) -> Result<ListParams, ApiError> {
    list_params_after(query, true)
}

/// Longest `after` of a table row's key (`Query::Rows`).
pub const MAX_ROW_KEY_BYTES: usize = 1024;

/// `List`'s parameters for a table (`Query::Rows`): `after` is the last row's key, any
/// text; Postgres reads it as the key's type.
pub fn rows_params(query: Option<&str>) -> Result<ListParams, ApiError> {
    list_params_after(query, false)
}

fn list_params_after(query: Option<&str>, after_is_id: bool) -> Result<ListParams, ApiError> {
    list_params_in(query, after_is_id, LIST_PARAMS)
}

/// `List`'s parameters, naming `known` as the supported ones in errors.
fn list_params_known(query: Option<&str>, known: &[&str]) -> Result<ListParams, ApiError> {
    list_params_in(query, true, known)
}

fn list_params_in(query: Option<&str>, after_is_id: bool, known: &[&str]) -> Result<ListParams, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let mut p = ListParams::default();
    for (k, v) in pairs(query, known)? {
        match k.as_ref() {
            "where" => p.filter = parse_where(&v)?,
            "order" => p.order = Some(v.into_owned()),
            "limit" => {
                p.limit = v.parse().ok().filter(|n| (0..=1000).contains(n))
                    .ok_or_else(|| bad(format!("limit must be a whole number from 0 to 1000, got {v:?}")))?
            }
            "offset" => {
                p.offset = v.parse().ok().filter(|n| *n >= 0)
                    .ok_or_else(|| bad(format!("offset must be a whole number from 0, got {v:?}")))?
            }
            "count" => {
                p.count = match v.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    _ => return Err(bad(format!("count must be true or false, got {v:?}"))),
                }
            }
            "after" => {
                if after_is_id && !is_uuid(&v) {
                    return Err(bad(format!("after must be a document id, got {v:?}")));
                }
                if v.len() > MAX_ROW_KEY_BYTES {
                    return Err(bad(format!("after is longer than {MAX_ROW_KEY_BYTES} bytes")));
                }
                p.after = Some(v.into_owned());
            }
            "fields" => p.fields = Some(parse_fields(&v)),
            // expand is taken out before (list_expand_params).
            _ => return Err(bad(format!("parameter {k:?} is given twice"))),
        }
    }
    Ok(p)
}

/// Query parameters of a plain page (`Query::Page`): `limit` 1..1000 (default 50) and
/// `after`, an id; into ListParams, whose other fields keep their defaults.
pub fn page_params(query: Option<&str>) -> Result<ListParams, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let mut p = ListParams { limit: 50, ..ListParams::default() };
    for (k, v) in pairs(query, &["limit", "after"])? {
        if k == "limit" {
            p.limit = v.parse().ok().filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| bad(format!("limit must be a whole number from 1 to 1000, got {v:?}")))?;
        } else {
            if !is_uuid(&v) {
                return Err(bad(format!("after must be an account id, got {v:?}")));
            }
            p.after = Some(v.into_owned());
        }
    }
    Ok(p)
}

/// Longest `expand` accepted, decoded; Postgres checks its paths (at most 10, 3 levels).
pub const MAX_EXPAND_BYTES: usize = 4 * 1024;

fn parse_expand(v: &str) -> Result<Vec<String>, ApiError> {
    if v.len() > MAX_EXPAND_BYTES {
        return Err(ApiError::bad_request("invalid_expand", format!("expand is longer than {MAX_EXPAND_BYTES} bytes")));
    }
    Ok(parse_fields(v))
}

/// `?expand=a,b.c` of a document GET (`Query::Expand`).
pub fn expand_params(query: Option<&str>) -> Result<ListParams, ApiError> {
    let mut p = ListParams::default();
    if let Some((_, v)) = pairs(query, &["expand"])?.first() {
        p.expand = Some(parse_expand(v)?);
    }
    Ok(p)
}

/// The list route's parameters and `expand` (`Query::ListExpand`).
pub fn list_expand_params(query: Option<&str>) -> Result<ListParams, ApiError> {
    let mut rest = Vec::new();
    let mut expand = None;
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode_query(k)? == "expand" {
            if expand.is_some() {
                return Err(ApiError::bad_request("invalid_query", "parameter \"expand\" is given twice"));
            }
            expand = Some(parse_expand(&decode_query(v)?)?);
        } else {
            rest.push(pair);
        }
    }
    let joined = rest.join("&");
    let mut p = list_params_known(Some(&joined), LIST_EXPAND_PARAMS)?;
    p.expand = expand;
    Ok(p)
}

const LIST_EXPAND_PARAMS: &[&str] = &["where", "order", "limit", "offset", "count", "after", "fields", "expand"];

/// Back-references (`Query::Referrers`): `collection` and `field` required, `limit`
/// 1..1000 (default 100), `after` an id, `expand`.
pub fn referrers_params(query: Option<&str>) -> Result<ListParams, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let mut p = ListParams::default();
    for (k, v) in pairs(query, &["collection", "field", "limit", "after", "expand"])? {
        match k.as_ref() {
            "collection" => p.collection = Some(v.into_owned()),
            "field" => p.field = Some(v.into_owned()),
            "limit" => {
                p.limit = v.parse().ok().filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad(format!("limit must be a whole number from 1 to 1000, got {v:?}")))?
            }
            "after" => {
                if !is_uuid(&v) {
                    return Err(bad(format!("after must be a document id, got {v:?}")));
                }
                p.after = Some(v.into_owned());
            }
            _ /* expand */ => p.expand = Some(parse_expand(&v)?),
        }
    }
    if p.collection.is_none() || p.field.is_none() {
        return Err(bad("collection and field are required: ?collection=<the referencing collection>&field=<the field holding the references>".into()));
    }
    Ok(p)
}

/// A decoded `where` parameter (list route, SSE route): JSON, bounded, free of NUL.
pub fn parse_where(v: &str) -> Result<Value, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    if v.len() > MAX_WHERE_BYTES {
        return Err(bad(format!("where is longer than {MAX_WHERE_BYTES} bytes")));
    }
    let filter = serde_json::from_str(v).map_err(|e| bad(format!("where is not valid JSON: {e}")))?;
    if v.contains("\\u0000") && nul_at(&filter, String::new()).is_some() {
        return Err(bad("where must not contain \\u0000 (Postgres cannot store a NUL character)".into()));
    }
    Ok(filter)
}

/// A decoded `fields` parameter: comma-separated names.
pub fn parse_fields(v: &str) -> Vec<String> {
    v.split(',').map(|f| f.trim().to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Need;
    use http::StatusCode;

    #[test]
    fn if_match_forms() {
        assert_eq!(if_match(None).unwrap(), None);
        assert_eq!(if_match(Some("*")).unwrap(), None);
        assert_eq!(if_match(Some("\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match(Some("3")).unwrap(), Some(3));
        assert_eq!(if_match(Some("W/\"12\"")).unwrap(), Some(12));
        for bad in ["abc", "\"\"", "0", "-1", "\"3", "1e3"] {
            assert_eq!(if_match(Some(bad)).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn list_parameters() {
        let d = list_params(None).unwrap();
        assert_eq!(d, ListParams::default());
        let p = list_params(Some("limit=5&offset=10&count=true&where=%7B%22a%22%3A+1%7D&order=-score&fields=a,b")).unwrap();
        assert_eq!((p.limit, p.offset, p.count), (5, 10, true));
        assert_eq!(p.filter, serde_json::json!({"a": 1}));
        assert_eq!(p.order.as_deref(), Some("-score"));
        assert_eq!(p.fields, Some(vec!["a".to_string(), "b".to_string()]));
        for bad in ["limit=1001", "limit=-1", "limit=x", "offset=-5", "count=yes", "filter={}", "limit=1;drop",
                    "where={", "where=%zz", "after=abc", "limit=1&limit=2", "where=%FF", "where=%7B%22a%22:%22%5Cu0000%22%7D"] {
            let e = list_params(Some(bad)).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_query"), "{bad}");
        }
        assert_eq!(list_params(Some("order=a+b")).unwrap().order.as_deref(), Some("a b"), "form rules in a query");
        let p = page_params(None).unwrap();
        assert_eq!((p.limit, p.after), (50, None));
        let p = page_params(Some("limit=2&after=0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")).unwrap();
        assert_eq!((p.limit, p.after.as_deref()), (2, Some("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")));
        for bad in ["limit=0", "limit=1001", "after=x", "where=%7B%7D", "offset=1", "limit=1&limit=2"] {
            assert_eq!(page_params(Some(bad)).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn query_args_are_strings_and_repeats_arrays() {
        let v = query_args(Some("a=1&b=x+y&a=2&c=%22%3B&d")).unwrap();
        assert_eq!(v, serde_json::json!({"a": ["1", "2"], "b": "x y", "c": "\";", "d": ""}));
        assert_eq!(query_args(None).unwrap(), serde_json::json!({}));
        assert!(query_args(Some("a=%00")).is_err());
    }

    #[test]
    fn query_strictness() {
        assert!(no_query(None).is_ok() && no_query(Some("")).is_ok());
        assert_eq!(no_query(Some("x=1")).unwrap_err().code, "invalid_query");
        assert_eq!(index_kind(Some("kind=gin")).unwrap(), "gin");
        assert_eq!(index_kind(None).unwrap(), "btree");
        assert!(index_kind(Some("kind=hash")).is_err() && index_kind(Some("k=gin")).is_err());
    }

    const FIELDS: &[Field] = &[
        Field { name: "email", ty: FieldType::Text, need: Need::Required },
        Field { name: "id", ty: FieldType::Uuid, need: Need::Optional },
        Field { name: "data", ty: FieldType::Data, need: Need::Optional },
    ];

    #[test]
    fn body_must_be_an_object() {
        for bad in [&b""[..], b"   ", b"[]", b"\"x\"", b"{", b"null", b"\xff\xfe"] {
            let e = parse_body(FIELDS, bad).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_json"), "{bad:?}");
        }
    }

    #[test]
    fn fields_are_declared_typed_and_free_of_nul() {
        let err = |b: &str| parse_body(FIELDS, b.as_bytes()).unwrap_err();
        assert!(parse_body(FIELDS, br#"{"email": "a", "id": null}"#).is_ok());
        assert_eq!(err(r#"{"email": "a", "extra": true}"#).message, "unknown field 'extra'; this route takes: email, id, data");
        assert!(err(r#"{"email": 5}"#).message.contains("'email' must be a string"));
        assert!(err(r#"{}"#).message.contains("'email' is required"));
        assert!(err(r#"{"email": "a", "id": "nope"}"#).message.contains("'id' must be a uuid"));
        assert_eq!(err(r#"{"email": "a", "data": [1]}"#).code, "invalid_data");
        let e = err(r#"{"email": "a", "data": {"x": ["ok", "b\u0000"]}}"#);
        assert_eq!((e.code.as_str(), e.message.contains("/data/x/1")), ("invalid_json", true), "{}", e.message);
        // An escaped backslash before u0000 is text, not a NUL.
        assert!(parse_body(FIELDS, br#"{"email": "\\u0000"}"#).is_ok());
        // An open body (routes::ANY_FIELDS) takes any name, but is still an object
        // without NULs.
        let open = &[Field { name: ANY_FIELD, ty: FieldType::Any, need: Need::Optional }];
        assert!(parse_body(open, br#"{"qty": 2, "note": "x"}"#).is_ok());
        assert!(parse_body(open, b"[1]").is_err());
        assert!(parse_body(open, br#"{"a": "\u0000"}"#).is_err());
    }

    #[test]
    fn raw_bodies_bound_numbers_without_f64() {
        let open = &[Field { name: ANY_FIELD, ty: FieldType::Any, need: Need::Optional }];
        let ok = |b: &str| parse_raw_body(open, b.as_bytes()).unwrap_or_else(|e| panic!("{b}: {}", e.message));
        let bad = |b: &str| {
            let e = parse_raw_body(open, b.as_bytes()).unwrap_err();
            assert_eq!(e.code, "invalid_json", "{b}");
            assert!(e.message.contains("out of bounds"), "{b}: {}", e.message);
        };
        // Beyond f64, within the bounds: serde_json alone says "number out of range".
        let big = format!("{{\"n\": 1{}}}", "0".repeat(309));
        assert!(parse_body(open, big.as_bytes()).is_err());
        assert_eq!(ok(&big), serde_json::json!({"n": 0}));
        ok(r#"{"a": [1e999, -1e-999, 0.5, "1e99999", "\"1e99999", 12.5E+3, -0]}"#);
        ok(&format!("{{\"n\": 0.{}}}", "1".repeat(1000)));
        for b in [
            r#"{"n": 1e-16383}"#,
            r#"{"n": 1e1001}"#,
            r#"{"n": 1E-1001}"#,
            r#"{"n": [1, {"x": 1e99999999999999999999}]}"#,
            r#"{"n": 1.5e1000}"#,
        ] {
            bad(b);
        }
        bad(&format!("{{\"n\": 0.{}}}", "1".repeat(1001)));
        bad(&format!("{{\"n\": {}}}", "9".repeat(1001)));
        // Malformed text is still reported as such.
        assert!(parse_raw_body(open, br#"{"n": -}"#).unwrap_err().message.contains("not valid JSON"));
    }
}
