//! /v1/collections/{c}/documents...: shape checks, then one SQL function each.

use crate::db::{self, Returns};
use crate::errors::ApiError;
use crate::routes::auth::{object_field, parse_object, string_field};
use crate::server::{Ctx, Reply};
use http::StatusCode;
use serde_json::Value;

fn document(status: StatusCode, v: Option<Value>) -> Result<Reply, ApiError> {
    let v = v.ok_or_else(ApiError::internal)?;
    let etag = v.get("version").and_then(Value::as_i64).map(|n| format!("\"{n}\""));
    let mut r = Reply::json(status, v.to_string().into_bytes()).no_store();
    r.etag = etag;
    Ok(r)
}

fn json(status: StatusCode, v: Option<Value>) -> Result<Reply, ApiError> {
    let v = v.ok_or_else(ApiError::internal)?;
    Ok(Reply::json(status, v.to_string().into_bytes()).no_store())
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
#[derive(Debug, PartialEq, Eq)]
pub struct ListParams {
    pub limit: i32,
    pub offset: i32,
    pub count: bool,
}

pub fn list_params(query: Option<&str>) -> Result<ListParams, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_query", m);
    let mut p = ListParams { limit: 100, offset: 0, count: false };
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "limit" => {
                p.limit = v.parse().ok().filter(|n| (0..=1000).contains(n))
                    .ok_or_else(|| bad(format!("limit must be a whole number from 0 to 1000, got {v:?}")))?
            }
            "offset" => {
                p.offset = v.parse().ok().filter(|n| *n >= 0)
                    .ok_or_else(|| bad(format!("offset must be a whole number from 0, got {v:?}")))?
            }
            "count" => {
                p.count = match v {
                    "true" | "1" => true,
                    "false" | "0" | "" => false,
                    _ => return Err(bad(format!("count must be true or false, got {v:?}"))),
                }
            }
            // Ignoring an unknown parameter could silently drop a filter.
            other => return Err(bad(format!("unknown query parameter {other:?}; supported: limit, offset, count"))),
        }
    }
    Ok(p)
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
    let out = db::call(ctx.pool, ctx.claims,
        "select baas.create_document($1, $2, $3, $4::text::uuid)", &[&c, data, &acl, &id], Returns::Json).await?;
    document(StatusCode::CREATED, out)
}

pub async fn get(ctx: &Ctx<'_>, c: &str, id: &str) -> Result<Reply, ApiError> {
    let out = db::call(ctx.pool, ctx.claims, "select baas.get_document($1, $2)", &[&c, &id], Returns::Json).await?;
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
    let out = db::call(ctx.pool, ctx.claims, "select baas.replace_document($1, $2, $3, $4)",
        &[&c, &id, &data, &version], Returns::Json).await?;
    document(StatusCode::OK, out)
}

pub async fn patch(ctx: &Ctx<'_>, c: &str, id: &str, body: &[u8], version: Option<i64>) -> Result<Reply, ApiError> {
    let data = data_field(body)?;
    let out = db::call(ctx.pool, ctx.claims, "select baas.patch_document($1, $2, $3, $4)",
        &[&c, &id, &data, &version], Returns::Json).await?;
    document(StatusCode::OK, out)
}

pub async fn delete(ctx: &Ctx<'_>, c: &str, id: &str, version: Option<i64>) -> Result<Reply, ApiError> {
    db::call(ctx.pool, ctx.claims, "select baas.delete_document($1, $2, $3)", &[&c, &id, &version], Returns::Void).await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

pub async fn list(ctx: &Ctx<'_>, c: &str, query: Option<&str>) -> Result<Reply, ApiError> {
    let p = list_params(query)?;
    let out = db::call(ctx.pool, ctx.claims, "select baas.list_documents($1, $2, $3, $4)",
        &[&c, &p.limit, &p.offset, &p.count], Returns::Json).await?;
    json(StatusCode::OK, out)
}

pub async fn get_acl(ctx: &Ctx<'_>, c: &str, id: &str) -> Result<Reply, ApiError> {
    let out = db::call(ctx.pool, ctx.claims, "select baas.get_acl($1, $2)", &[&c, &id], Returns::Json).await?;
    json(StatusCode::OK, out)
}

pub async fn set_acl(ctx: &Ctx<'_>, c: &str, id: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let acl = Value::Object(parse_object(body)?);
    let out = db::call(ctx.pool, ctx.claims, "select baas.set_acl($1, $2, $3)", &[&c, &id, &acl], Returns::Json).await?;
    json(StatusCode::OK, out)
}

pub async fn set_owner(ctx: &Ctx<'_>, c: &str, id: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let m = parse_object(body)?;
    let owner = string_field(&m, "owner", true)?;
    let out = db::call(ctx.pool, ctx.claims, "select baas.transfer($1, $2, $3::text::uuid)",
        &[&c, &id, &owner], Returns::Json).await?;
    document(StatusCode::OK, out)
}

/// Unused fields are fine; `object_field` is re-exported for admin routes.
pub fn options_field(m: &serde_json::Map<String, Value>) -> Result<Option<&Value>, ApiError> {
    object_field(m, "options")
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
        assert_eq!(list_params(None).unwrap(), ListParams { limit: 100, offset: 0, count: false });
        assert_eq!(list_params(Some("limit=5&offset=10&count=true")).unwrap(), ListParams { limit: 5, offset: 10, count: true });
        for bad in ["limit=1001", "limit=-1", "limit=x", "offset=-5", "count=yes", "where={}", "limit=1;drop"] {
            let e = list_params(Some(bad)).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_query"), "{bad}");
        }
    }
}
