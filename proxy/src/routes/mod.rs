//! Route handlers, and what they share: reading the JSON body's fields, and turning a
//! SQL function's JSON result into a reply.
pub mod admin;
pub mod auth;
pub mod documents;

use crate::db;
use crate::errors::ApiError;
use crate::server::Reply;
use http::StatusCode;
use serde_json::{Map, Value};

/// The reply for a route whose SQL returned a JSON body (passed through as text).
pub fn json_out(status: StatusCode, out: Option<db::Out>) -> Result<Reply, ApiError> {
    let out = out.ok_or_else(ApiError::internal)?;
    Ok(Reply::json(status, out.body.into_bytes()))
}

/// The body as a JSON object, or 400.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("invalid_json", "request body must be a JSON object"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("invalid_json", "request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request("invalid_json", format!("request body is not valid JSON: {e}"))),
    }
}

pub fn string_field<'a>(m: &'a Map<String, Value>, name: &str, required: bool) -> Result<Option<&'a str>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(ApiError::bad_request("invalid_request", format!("field '{name}' is required"))),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request("invalid_request", format!("field '{name}' must be a string"))),
    }
}

pub fn object_field<'a>(m: &'a Map<String, Value>, name: &str) -> Result<Option<&'a Value>, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(ApiError::bad_request("invalid_request", format!("field '{name}' must be a JSON object"))),
    }
}

