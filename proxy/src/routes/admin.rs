//! Collections and roles administration. Only baas_service may call the SQL functions
//! behind these routes (a GRANT decides it, not this file).

use crate::db::{self, Returns};
use crate::errors::ApiError;
use crate::routes::{json_out as json, object_field, parse_object, string_field};
use crate::server::{Ctx, Reply};
use http::StatusCode;
use serde_json::Value;

pub async fn create_collection(ctx: &Ctx<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let m = parse_object(body)?;
    let name = string_field(&m, "name", true)?;
    let options = object_field(&m, "options")?.cloned().unwrap_or_else(|| Value::Object(Default::default()));
    let out = db::call(ctx, "select x::text from baas.create_collection($1, $2) x", &[&name, &options], Returns::Json).await?;
    json(StatusCode::CREATED, out)
}

pub async fn list_collections(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let out = db::call(ctx, "select jsonb_build_object('items', baas.collections())::text", &[], Returns::Json).await?;
    json(StatusCode::OK, out)
}

pub async fn get_collection(ctx: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    let out = db::call(ctx, "select x::text from baas.get_collection($1) x", &[&name], Returns::Json).await?;
    json(StatusCode::OK, out)
}

pub async fn drop_collection(ctx: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    db::call(ctx, "select baas.drop_collection($1)", &[&name], Returns::Void).await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

pub async fn list_roles(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let out = db::call(ctx, "select jsonb_build_object('items', baas.list_roles())::text", &[], Returns::Json).await?;
    json(StatusCode::OK, out)
}

pub async fn create_role(ctx: &Ctx<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let m = parse_object(body)?;
    let name = string_field(&m, "name", true)?;
    db::call(ctx, "select baas.create_role($1)", &[&name], Returns::Void).await?;
    Ok(Reply::json(StatusCode::CREATED, serde_json::json!({"name": name}).to_string().into_bytes()))
}

pub async fn drop_role(ctx: &Ctx<'_>, name: &str) -> Result<Reply, ApiError> {
    db::call(ctx, "select baas.drop_role($1)", &[&name], Returns::Void).await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

/// PUT/DELETE /v1/roles/{r}/members/{user} and /v1/roles/{r}/roles/{member}.
pub async fn membership(ctx: &Ctx<'_>, sql: &str, role: &str, member: &str) -> Result<Reply, ApiError> {
    db::call(ctx, sql, &[&role, &member], Returns::Void).await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

pub async fn list_indexes(ctx: &Ctx<'_>, c: &str) -> Result<Reply, ApiError> {
    let out = db::call(ctx, "select jsonb_build_object('items', baas.list_indexes($1))::text", &[&c], Returns::Json).await?;
    json(StatusCode::OK, out)
}

pub async fn create_index(ctx: &Ctx<'_>, c: &str, body: &[u8]) -> Result<Reply, ApiError> {
    let m = parse_object(body)?;
    let path = string_field(&m, "path", true)?;
    let kind = string_field(&m, "kind", false)?.unwrap_or("btree");
    let out = db::call(ctx, "select x::text from baas.create_index($1, $2, $3) x", &[&c, &path, &kind], Returns::Json).await?;
    json(StatusCode::CREATED, out)
}

/// DELETE /v1/collections/{c}/indexes/{path}[?kind=gin]
pub async fn drop_index(ctx: &Ctx<'_>, c: &str, path: &str, query: Option<&str>) -> Result<Reply, ApiError> {
    let path = crate::routes::documents::decode_component(path)?;
    let kind = match query {
        None | Some("") | Some("kind=btree") => "btree",
        Some("kind=gin") => "gin",
        Some(_) => return Err(ApiError::bad_request("invalid_request", "the only parameter is kind=btree|gin")),
    };
    db::call(ctx, "select baas.drop_index($1, $2, $3)", &[&c, &path, &kind], Returns::Void).await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}
