//! multipart/form-data uploads (browser forms), parsed by multer 3 as the body
//! streams: fields `acl` (JSON), `data` (JSON object), `id` (uuid, uploads only), then
//! exactly one `file`, streamed into Postgres piece by piece like a raw body. Fields
//! must come before `file` (a form lists them first); anything after it is refused
//! (400) before the upload is finished, so nothing is stored. Field values are at most
//! MAX_FIELD bytes.

use super::body::BodyReader;
use super::upload::{self, HasSession, Pieces, Target};
use super::Ctx;
use crate::errors::ApiError;
use crate::server::App;
use bytes::{Bytes, BytesMut};
use multer::{Constraints, Multipart, SizeLimit};
use pingora::protocols::http::ServerSession;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

pub const MAX_FIELD: usize = 64 << 10;

/// A body read error carried through multer's stream.
#[derive(Debug)]
struct BodyError(ApiError);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for BodyError {}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_request", m)
}

fn mp_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::StreamReadFailed(inner) => match inner.downcast::<BodyError>() {
            Ok(b) => b.0,
            Err(other) => bad(format!("the multipart body could not be read: {other}")),
        },
        multer::Error::FieldSizeExceeded { field_name, .. } => {
            bad(format!("multipart field {:?} is larger than {MAX_FIELD} bytes", field_name.unwrap_or_default()))
        }
        multer::Error::UnknownField { field_name } => {
            bad(format!("unknown multipart field {:?}; send acl, data, id, then file", field_name.unwrap_or_default()))
        }
        other => bad(format!("malformed multipart body: {other}")),
    }
}

pub async fn store(app: &Arc<App>, s: &mut ServerSession, ctx: &Ctx, mut target: Target, boundary: String) -> Result<Value, ApiError> {
    let mut reader = BodyReader::new(s, app.cfg.file_idle_timeout);
    let stream = futures_util::stream::unfold(&mut reader, |r| async move {
        match r.next_chunk().await {
            Ok(Some(b)) => Some((Ok::<Bytes, BodyError>(b), r)),
            Ok(None) => None,
            Err(e) => Some((Err(BodyError(e)), r)),
        }
    });
    let limits = SizeLimit::new().for_field("acl", MAX_FIELD as u64).for_field("data", MAX_FIELD as u64).for_field("id", 128);
    let constraints = Constraints::new().allowed_fields(vec!["acl", "data", "id", "file"]).size_limit(limits);
    let mut mp = Multipart::with_constraints(stream, boundary, constraints);
    while let Some(field) = mp.next_field().await.map_err(mp_error)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "acl" | "data" => {
                let text = field.text().await.map_err(mp_error)?;
                let v: Value = serde_json::from_str(&text).map_err(|_| bad(format!("multipart field {name} is not JSON")))?;
                if name == "data" && !v.is_object() {
                    return Err(ApiError::bad_request("invalid_data", "data must be a JSON object"));
                }
                if name == "acl" {
                    target.acl = Some(text);
                } else {
                    target.data = Some(text);
                }
            }
            "id" => {
                let text = field.text().await.map_err(mp_error)?;
                if target.replace {
                    return Err(bad("the id of a replaced file is in the path; send no id field"));
                }
                let id = uuid::Uuid::parse_str(text.trim()).map_err(|_| bad("id must be a uuid"))?;
                target.file_id = Some(id.to_string());
            }
            _ => {
                // "file" (multer refuses any other name).
                if let Some(n) = field.file_name().filter(|n| !n.is_empty()) {
                    target.name = Some(n.to_string());
                }
                if target.name.is_none() {
                    return Err(bad("the file part needs a filename (Content-Disposition: form-data; name=\"file\"; filename=\"...\")"));
                }
                target.content_type = field.content_type().map(|m| m.essence_str().to_ascii_lowercase());
                let mut src = FieldPieces { mp: &mut mp, field: Some(field), pending: None };
                return upload::store(app, ctx, &target, None, &mut src, false).await;
            }
        }
    }
    Err(bad("the multipart body has no file field"))
}

/// The `file` field as pieces; at its end the body must end too.
struct FieldPieces<'m, 'r> {
    mp: &'m mut Multipart<'r>,
    field: Option<multer::Field<'r>>,
    pending: Option<Bytes>,
}

impl HasSession for FieldPieces<'_, '_> {
    fn session(&mut self) -> Option<&mut ServerSession> {
        None // 100 Continue was answered before the fields were read
    }
}

impl Pieces for FieldPieces<'_, '_> {
    fn fill<'s>(&'s mut self, buf: &'s mut BytesMut, max: usize) -> impl Future<Output = Result<bool, ApiError>> + Send + 's {
        async move {
            buf.clear();
            while buf.len() < max {
                let chunk = match self.pending.take() {
                    Some(p) => Some(p),
                    None => match self.field.as_mut() {
                        Some(f) => f.chunk().await.map_err(mp_error)?,
                        None => None,
                    },
                };
                let Some(mut chunk) = chunk else {
                    // The file ended: nothing may follow it.
                    self.field = None;
                    if self.mp.next_field().await.map_err(mp_error)?.is_some() {
                        return Err(bad("fields must come before the file field, and only one file is sent"));
                    }
                    return Ok(false);
                };
                let room = max - buf.len();
                if chunk.len() > room {
                    self.pending = Some(chunk.split_off(room));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(true)
        }
    }
}
