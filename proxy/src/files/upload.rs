//! POST /v1/collections/{c}/files and PUT /v1/files/{id}: a raw body (Content-Type is
//! the declared type; the name from `?name=` or the request's Content-Disposition) or
//! multipart/form-data (multipart.rs), streamed into Postgres a piece at a time.
//!
//! A body that fits one piece is stored by one call (`baas.upload_file`); a larger one
//! opens a session (`upload_create`), appends each piece in its own short transaction
//! (`_upload_append`) and ends with `upload_finish`. Any error, a cut body or a client
//! that goes away ends the session with `upload_abort` (spawned: it runs even when the
//! request's future is dropped), so nothing half-written stays.

use super::body::BodyReader;
use super::{headers, params, sql, Ctx, FileOp, PIECE, PIECE_RESULT};
use crate::db;
use crate::errors::ApiError;
use crate::router::Params;
use crate::server::{App, Reply};
use bytes::BytesMut;
use http::StatusCode;
use pingora::protocols::http::ServerSession;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

/// Where an upload goes and what it carries besides the bytes.
#[derive(Default, Debug, Clone)]
pub struct Target {
    pub collection: String,
    pub file_id: Option<String>,
    pub replace: bool,
    pub expected_version: Option<i64>,
    pub name: Option<String>,
    pub content_type: Option<String>,
    /// JSON text of `data` and `acl`.
    pub data: Option<String>,
    pub acl: Option<String>,
    pub sha256: Option<Vec<u8>>,
}

/// A source of pieces: a raw body or a multipart file field.
pub trait Pieces: Send {
    /// Fill `buf` (cleared) with up to `max` bytes; false once the source has ended.
    fn fill<'s>(&'s mut self, buf: &'s mut BytesMut, max: usize) -> impl Future<Output = Result<bool, ApiError>> + Send + 's;
}

impl Pieces for BodyReader<'_> {
    fn fill<'s>(&'s mut self, buf: &'s mut BytesMut, max: usize) -> impl Future<Output = Result<bool, ApiError>> + Send + 's {
        self.next_piece(buf, max)
    }
}

pub async fn serve(app: &Arc<App>, s: &mut ServerSession, op: FileOp, params: Params<'_>) -> Result<(), Reply> {
    match serve_inner(app, s, op, params).await {
        Ok(r) | Err(r) => Err(r),
    }
}

async fn serve_inner(app: &Arc<App>, s: &mut ServerSession, op: FileOp, params: Params<'_>) -> Result<Reply, Reply> {
    let path = match op {
        FileOp::Replace => super::file_id(&params),
        _ => params.get(0).map(|c| c.into_owned()),
    }
    .map_err(Reply::error)?;
    let q = params::upload(s.req_header().uri.query()).map_err(Reply::error)?;
    let token = crate::server::bearer(s).map_err(Reply::error)?.map(str::to_string);
    let ctx = super::checked(app, s, token).await.map_err(Reply::error)?;
    let length = super::content_length(s).map_err(Reply::error)?;
    let ct = super::header(s, "content-type").map_err(Reply::error)?.map(str::to_string);
    let multipart = ct.as_deref().is_some_and(|c| headers::essence(c) == "multipart/form-data");
    // Oversize by its declared length: refused before any body byte (multipart: the
    // fields around the file are small, 64 KiB each at most).
    let slack = if multipart { super::multipart::OVERHEAD } else { 0 };
    if length.is_some_and(|n| n > app.cfg.file_max_bytes.saturating_add(slack)) {
        return Err(Reply::error(too_large(app.cfg.file_max_bytes)));
    }
    let _slot = app.transfers.admit(&ctx.ip_key, ctx.subject.as_deref(), ctx.service).map_err(Reply::error)?;
    let mut target = Target::default();
    if op == FileOp::Replace {
        // The file's collection and current name, as this caller may read them (404
        // otherwise, like any read); its version check is If-Match's, at finish.
        let meta = super::call_json(app, &ctx, "select baas.file_meta($1::text::uuid)", &[&path]).await.map_err(Reply::error)?;
        target.collection = meta["collection"].as_str().unwrap_or_default().to_string();
        target.name = meta["name"].as_str().map(str::to_string);
        // No data is sent: the new version keeps the file's data as it is when the
        // upload finishes (upload_finish keeps it for a session's `{}`), so a
        // PATCH /meta made during a long upload is not undone. A multipart `data`
        // field replaces it.
        target.file_id = Some(path);
        target.replace = true;
        let if_match = super::header(s, "if-match").map_err(Reply::error)?;
        target.expected_version = crate::routes::input::if_match(if_match).map_err(Reply::error)?;
    } else {
        target.collection = path;
    }
    let file = if multipart {
        let boundary = multer::parse_boundary(ct.as_deref().unwrap_or_default())
            .map_err(|_| Reply::error(ApiError::bad_request("invalid_request", "multipart/form-data needs a boundary")))?;
        // upload_create needs the fields, which come in the body: what it can decide
        // without them is decided now, before the 100 (review of issue 15, finding 10).
        let name = target.name.clone().unwrap_or_else(|| "upload".into());
        let p: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&target.collection, &name, &target.file_id, &target.expected_version, &target.replace];
        db::call_binary(&app.requests, &app.timeouts, &ctx.caller(), sql::UPLOAD_PROBE, &p, PIECE_RESULT).await.map_err(Reply::error)?;
        super::continue_if_expected(s).await;
        super::multipart::store(app, s, &ctx, target, boundary, length).await
    } else {
        if let Some(n) = q.name.or_else(|| super::header(s, "content-disposition").ok().flatten().and_then(disposition_name)) {
            target.name = Some(n);
        }
        if target.name.is_none() {
            return Err(Reply::error(ApiError::bad_request("invalid_request", "name the file: ?name=<file name> or Content-Disposition: attachment; filename=...")));
        }
        target.content_type = ct.as_deref().map(headers::essence).filter(|c| !c.is_empty());
        let expect = s.req_header().headers.get(http::header::EXPECT).is_some();
        let mut body = BodyReader::new(s, app.cfg.file_idle_timeout);
        store(app, &ctx, &target, length, &mut body, expect).await
    };
    let file = file.map_err(Reply::error)?;
    let status = if op == FileOp::Replace { StatusCode::OK } else { StatusCode::CREATED };
    Ok(file_reply(status, &file))
}

/// 201/200 with the file's JSON, `ETag: "<version>"` and `Location`.
pub fn file_reply(status: StatusCode, file: &Value) -> Reply {
    let mut r = Reply::json(status, file.to_string());
    r.no_store = true;
    r.etag = file["version"].as_i64().map(|v| format!("\"{v}\""));
    if let Some(id) = file["id"].as_str() {
        r.headers.push(("location", format!("/v1/files/{id}")));
    }
    r
}

pub fn too_large(max: u64) -> ApiError {
    ApiError::coded("file_too_large", format!("the file is larger than the {max} bytes this server accepts"))
}

/// A request's `Content-Disposition: attachment; filename*=UTF-8''...` or
/// `filename="..."` (RFC 6266), the extended form first.
pub fn disposition_name(v: &str) -> Option<String> {
    let mut plain = None;
    for part in v.split(';').map(str::trim) {
        let Some((k, val)) = part.split_once('=') else { continue };
        match k.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let val = val.trim();
                let (charset, rest) = val.split_once('\'')?;
                let (_, encoded) = rest.split_once('\'')?;
                if charset.eq_ignore_ascii_case("utf-8") {
                    return percent_encoding::percent_decode_str(encoded).decode_utf8().ok().map(|c| c.into_owned());
                }
            }
            "filename" => {
                let val = val.trim();
                plain = Some(match val.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    Some(q) => {
                        let mut out = String::new();
                        let mut esc = false;
                        for c in q.chars() {
                            if !esc && c == '\\' {
                                esc = true;
                                continue;
                            }
                            esc = false;
                            out.push(c);
                        }
                        out
                    }
                    None => val.to_string(),
                });
            }
            _ => {}
        }
    }
    plain
}

/// An open upload session: its id and the lease this writer holds.
pub struct Session {
    pub id: String,
    pub lease: String,
}

/// Store `src` as `target`. `length`: the declared length (None: until the source
/// ends). `precreate`: open the session before reading any byte and answer
/// `Expect: 100-continue` after it (refusals come before the body).
pub async fn store<P: Pieces>(app: &Arc<App>, ctx: &Ctx, target: &Target, length: Option<u64>, src: &mut P, precreate: bool) -> Result<Value, ApiError>
where
    P: HasSession,
{
    let max = app.cfg.file_max_bytes;
    let mut buf = BytesMut::with_capacity(PIECE.min(length.unwrap_or(PIECE as u64) as usize).max(1));
    let mut session = None;
    if precreate || length.is_some_and(|n| n > PIECE as u64) {
        session = Some(create(app, ctx, target, length).await?);
        if let Some(s) = src.session() {
            super::continue_if_expected(s).await;
        }
    }
    let guard = AbortGuard { app: app.clone(), ctx: ctx.clone(), id: session.as_ref().map(|s| s.id.clone()) };
    let mut more = src.fill(&mut buf, PIECE).await?;
    if session.is_none() && !more {
        // All of it in one piece: one call stores it.
        let bytes: &[u8] = &buf;
        return call_file(app, ctx, sql::UPLOAD_FILE, &upload_file_params(target, bytes)).await;
    }
    let session = match session {
        Some(s) => s,
        None => create(app, ctx, target, length).await?,
    };
    let mut guard = guard;
    guard.id = Some(session.id.clone());
    let mut at: u64 = 0;
    let mut next = BytesMut::new();
    loop {
        if !buf.is_empty() {
            if at + buf.len() as u64 > max {
                return Err(too_large(max));
            }
            if more {
                // The next piece comes from the client while this one is stored (two
                // pieces held at most): a few points of COPY FROM's speed (52 -> 56 %
                // over three alternating runs of pgbaas-bench-files, docs/benchmarks.md).
                let (stored, filled) = tokio::join!(append(app, ctx, &session, at, &buf), src.fill(&mut next, PIECE));
                at = stored?;
                more = filled?;
                std::mem::swap(&mut buf, &mut next);
                continue;
            }
            at = append(app, ctx, &session, at, &buf).await?;
        }
        if !more {
            break;
        }
        more = src.fill(&mut buf, PIECE).await?;
    }
    drop((buf, next));
    let file = finish(app, ctx, &session.id).await?;
    guard.id = None; // finished: nothing to abort
    Ok(file)
}

/// Lets `store` answer `Expect: 100-continue` on the session a source reads from.
pub trait HasSession {
    fn session(&mut self) -> Option<&mut ServerSession>;
}

impl HasSession for BodyReader<'_> {
    fn session(&mut self) -> Option<&mut ServerSession> {
        Some(BodyReader::session(self))
    }
}

fn upload_file_params<'a>(t: &'a Target, bytes: &'a [u8]) -> UploadFileArgs<'a> {
    UploadFileArgs { t, bytes }
}

pub struct UploadFileArgs<'a> {
    t: &'a Target,
    bytes: &'a [u8],
}

async fn call_file(app: &App, ctx: &Ctx, sql: &str, a: &UploadFileArgs<'_>) -> Result<Value, ApiError> {
    let t = a.t;
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
        [&t.collection, &t.name, &t.content_type, &a.bytes, &t.data, &t.acl, &t.file_id, &t.expected_version, &t.replace];
    super::call_json(app, ctx, sql, &p).await
}

pub async fn create(app: &App, ctx: &Ctx, t: &Target, length: Option<u64>) -> Result<Session, ApiError> {
    let length = length.map(|n| n as i64);
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 10] =
        [&t.collection, &t.name, &t.content_type, &length, &t.data, &t.acl, &t.file_id, &t.expected_version, &t.replace, &t.sha256];
    let v = super::call_json(app, ctx, sql::UPLOAD_CREATE, &p).await?;
    let id = v["upload_id"].as_str().ok_or_else(ApiError::internal)?.to_string();
    let lease = uuid::Uuid::new_v4().to_string();
    Ok(Session { id, lease })
}

/// Append one piece at `at` (taking or renewing the lease in the same transaction);
/// the new offset.
pub async fn append(app: &App, ctx: &Ctx, session: &Session, at: u64, data: &[u8]) -> Result<u64, ApiError> {
    let at = at as i64;
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&session.id, &session.lease, &at, &data];
    let row = db::call_binary(&app.requests, &app.timeouts, &ctx.caller(), sql::UPLOAD_APPEND, &p, PIECE_RESULT).await?;
    let row = row.ok_or_else(ApiError::internal)?;
    let off = super::col_i64(row.first().unwrap_or(&None))?;
    u64::try_from(off).map_err(|_| ApiError::internal())
}

pub async fn finish(app: &App, ctx: &Ctx, id: &str) -> Result<Value, ApiError> {
    super::call_json(app, ctx, sql::UPLOAD_FINISH, &[&id]).await
}

/// End a session on the server, whatever the request does next.
pub fn abort(app: &Arc<App>, ctx: &Ctx, id: &str) {
    let (app, ctx, id) = (app.clone(), ctx.clone(), id.to_string());
    tokio::spawn(async move {
        let r = db::call_binary(&app.requests, &app.timeouts, &ctx.caller(), sql::UPLOAD_ABORT, &[&id], PIECE_RESULT).await;
        if let Err(e) = r {
            if e.status != StatusCode::NOT_FOUND {
                log::warn!("aborting upload {id}: {} {}", e.code, e.message);
            }
        }
    });
}

/// Aborts the session when dropped with one still open (an error, or the request's
/// future dropped because the client went away).
struct AbortGuard {
    app: Arc<App>,
    ctx: Ctx,
    id: Option<String>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            abort(&self.app, &self.ctx, &id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_content_disposition() {
        assert_eq!(disposition_name("attachment; filename=\"a \\\"b\\\".txt\"").as_deref(), Some("a \"b\".txt"));
        assert_eq!(disposition_name("attachment; filename=plain.txt").as_deref(), Some("plain.txt"));
        assert_eq!(
            disposition_name("attachment; filename=\"fallback.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf").as_deref(),
            Some("résumé.pdf"),
            "the extended form wins"
        );
        assert_eq!(disposition_name("inline").as_deref(), None);
    }
}
