//! /v1/collections/{c}/documents...: shape checks, then one SQL function each.

use crate::db::{self, Returns};
use crate::errors::ApiError;
use crate::routes::{json_out, parse_object, string_field};
use crate::server::{Ctx, Reply};
use http::StatusCode;
use serde_json::Value;

/// Document routes select `x::text, x ->> 'version'`: the body and its ETag.
fn document(status: StatusCode, out: Option<db::Out>) -> Result<Reply, ApiError> {
    let etag = out.as_ref().and_then(|o| o.extra.first().cloned().flatten()).map(|n| format!("\"{n}\""));
    let mut r = json(status, out)?;
    r.etag = etag;
    Ok(r)
}

/// Documents are per-user data: never cached.
fn json(status: StatusCode, out: Option<db::Out>) -> Result<Reply, ApiError> {
    json_out(status, out).map(Reply::no_store)
}

/// `select x::text, x ->> 'version' from <call> x`
fn doc_sql(call: &str) -> String {
    format!("select x::text, x ->> 'version' from {call} x")
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

/// Query parameters of the list route.
#[derive(Debug, PartialEq)]
pub struct ListParams {
    pub filter: Value,
    pub order: Option<String>,
    pub limit: i32,
    pub offset: i32,
    pub count: bool,
    pub after: Option<String>,
    pub fields: Option<Vec<String>>,
}

/// Longest `where` accepted, decoded (the filter language's own limit is 16 KiB of JSON).
pub const MAX_WHERE_BYTES: usize = 16 * 1024;

/// Percent-decoding of a query-string component (`+` is a space).
pub fn decode_component(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("invalid_query", "query string is not valid percent-encoded UTF-8");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(bad)?;
                let h = std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(bad)?;
                out.push(h);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

pub fn list_params(query: Option<&str>) -> Result<ListParams, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let mut p = ListParams {
        filter: Value::Object(Default::default()),
        order: None,
        limit: 100,
        offset: 0,
        count: false,
        after: None,
        fields: None,
    };
    let mut seen = std::collections::HashSet::new();
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = decode_component(k)?;
        let v = decode_component(v)?;
        if !seen.insert(k.clone()) {
            return Err(bad(format!("parameter {k:?} is given twice")));
        }
        match k.as_str() {
            "where" => {
                if v.len() > MAX_WHERE_BYTES {
                    return Err(bad(format!("where is longer than {MAX_WHERE_BYTES} bytes")));
                }
                p.filter = serde_json::from_str(&v).map_err(|e| bad(format!("where is not valid JSON: {e}")))?;
            }
            "order" => p.order = Some(v),
            "limit" => {
                p.limit = v.parse().ok().filter(|n| (0..=1000).contains(n))
                    .ok_or_else(|| bad(format!("limit must be a whole number from 0 to 1000, got {v:?}")))?
            }
            "offset" => {
                p.offset = v.parse().ok().filter(|n| *n >= 0)
                    .ok_or_else(|| bad(format!("offset must be a whole number from 0, got {v:?}")))?
            }
            "count" => {
                p.count = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    _ => return Err(bad(format!("count must be true or false, got {v:?}"))),
                }
            }
            "after" => {
                if !is_uuid(&v) {
                    return Err(bad(format!("after must be a document id, got {v:?}")));
                }
                p.after = Some(v);
            }
            "fields" => p.fields = Some(v.split(',').map(|f| f.trim().to_string()).collect()),
            // Ignoring an unknown parameter could silently drop a filter.
            other => {
                return Err(bad(format!(
                    "unknown query parameter {other:?}; supported: where, order, limit, offset, count, after, fields"
                )))
            }
        }
    }
    Ok(p)
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

pub async fn create(ctx: &Ctx<'_>, c: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let m = parse_object(body)?;
    let data = m.get("data").ok_or_else(|| ApiError::bad_request("invalid_request", "field 'data' is required"))?;
    if !data.is_object() {
        return Err(ApiError::bad_request("invalid_data", "data must be a JSON object"));
    }
    let acl = match m.get("acl") {
        None | Some(Value::Null) => None,
        Some(a) => Some(a),
    };
    let id = string_field(&m, "id", false)?;
    let out = db::call(ctx,
        &doc_sql("baas.create_document($1, $2, $3, $4::text::uuid)"), &[&c, data, &acl, &id], Returns::Json).await?;
    document(StatusCode::CREATED, out)
}

pub async fn get(ctx: &Ctx<'_>, c: &str, id: &str) -> Result<Reply, ApiError> {
    let out = db::call(ctx, &doc_sql("baas.get_document($1, $2)"), &[&c, &id], Returns::Json).await?;
    document(StatusCode::OK, out)
}

fn data_field(body: &[u8]) -> Result<Value, ApiError> {
    let m = parse_object(body)?;
    match m.get("data") {
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err(ApiError::bad_request("invalid_data", "data must be a JSON object")),
        None => Err(ApiError::bad_request("invalid_request", "field 'data' is required")),
    }
}

pub async fn replace(ctx: &Ctx<'_>, c: &str, id: &str, body: &[u8], version: Option<i64>) -> Result<Reply, ApiError> {
    let data = data_field(body)?;
    let out = db::call(ctx, &doc_sql("baas.replace_document($1, $2, $3, $4)"),
        &[&c, &id, &data, &version], Returns::Json).await?;
    document(StatusCode::OK, out)
}

pub async fn patch(ctx: &Ctx<'_>, c: &str, id: &str, body: &[u8], version: Option<i64>) -> Result<Reply, ApiError> {
    let data = data_field(body)?;
    let out = db::call(ctx, &doc_sql("baas.patch_document($1, $2, $3, $4)"),
        &[&c, &id, &data, &version], Returns::Json).await?;
    document(StatusCode::OK, out)
}

pub async fn delete(ctx: &Ctx<'_>, c: &str, id: &str, version: Option<i64>) -> Result<Reply, ApiError> {
    db::call(ctx, "select baas.delete_document($1, $2, $3)", &[&c, &id, &version], Returns::Void).await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

pub async fn list(ctx: &Ctx<'_>, c: &str, query: Option<&str>) -> Result<Reply, ApiError> {
    let p = list_params(query)?;
    let out = db::call(
        ctx,
        "select x::text from baas.list_documents($1, $2, $3, $4, $5, $6, $7::text::uuid, $8) x",
        &[&c, &p.filter, &p.order, &p.limit, &p.offset, &p.count, &p.after, &p.fields],
        Returns::Json,
    )
    .await?;
    json(StatusCode::OK, out)
}

pub async fn get_acl(ctx: &Ctx<'_>, c: &str, id: &str) -> Result<Reply, ApiError> {
    let out = db::call(ctx, "select x::text from baas.get_acl($1, $2) x", &[&c, &id], Returns::Json).await?;
    json(StatusCode::OK, out)
}

pub async fn set_acl(ctx: &Ctx<'_>, c: &str, id: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let acl = Value::Object(parse_object(body)?);
    let out = db::call(ctx, "select x::text from baas.set_acl($1, $2, $3) x", &[&c, &id, &acl], Returns::Json).await?;
    json(StatusCode::OK, out)
}

pub async fn set_owner(ctx: &Ctx<'_>, c: &str, id: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let m = parse_object(body)?;
    let owner = string_field(&m, "owner", true)?;
    let out = db::call(ctx, &doc_sql("baas.transfer($1, $2, $3::text::uuid)"),
        &[&c, &id, &owner], Returns::Json).await?;
    document(StatusCode::OK, out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!((d.limit, d.offset, d.count, d.filter.clone()), (100, 0, false, serde_json::json!({})));
        let p = list_params(Some("limit=5&offset=10&count=true&where=%7B%22a%22%3A+1%7D&order=-score&fields=a,b")).unwrap();
        assert_eq!((p.limit, p.offset, p.count), (5, 10, true));
        assert_eq!(p.filter, serde_json::json!({"a": 1}));
        assert_eq!(p.order.as_deref(), Some("-score"));
        assert_eq!(p.fields, Some(vec!["a".to_string(), "b".to_string()]));
        for bad in ["limit=1001", "limit=-1", "limit=x", "offset=-5", "count=yes", "filter={}", "limit=1;drop",
                    "where={", "where=%zz", "after=abc", "limit=1&limit=2", "where=%FF"] {
            let e = list_params(Some(bad)).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_query"), "{bad}");
        }
    }
}
