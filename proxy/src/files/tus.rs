//! tus 1.0 (core, creation, termination, checksum with sha1 and sha256) at
//! /v1/uploads and /v1/uploads/{upload}. Sessions live only in Postgres
//! (`baas._uploads`): another proxy, or this one after a restart, continues them. The
//! upload id is also the capability, and the session is its creator's
//! (`upload_*` functions check the caller): as the owner, or anonymous for an
//! anonymous session.
//!
//! A PATCH takes the session's lease, checks Upload-Offset, answers
//! `Expect: 100-continue`, then appends its body a piece at a time. Without a checksum
//! a cut body keeps the whole pieces appended (HEAD tells where to resume); with one
//! the PATCH is all or nothing: a mismatch or a cut rewinds to where it began
//! (`_upload_rewind`), a mismatch answers 460. At the last byte the upload is finished
//! in the same request; a session whose bytes are all stored but that was not finished
//! (that request failed after its last append) is finished by the next HEAD or PATCH.

use super::body::BodyReader;
use super::upload::{self, Session, Target};
use super::{sql, Ctx, FileOp, PIECE};
use crate::errors::ApiError;
use crate::router::Params;
use crate::server::{App, Reply};
use base64::Engine;
use bytes::BytesMut;
use http::StatusCode;
use pingora::protocols::http::ServerSession;
use serde_json::Value;
use sha1::Digest;
use std::sync::Arc;

pub const VERSION: &str = "1.0.0";

pub async fn serve(app: &Arc<App>, s: &mut ServerSession, op: FileOp, params: Params<'_>) -> Result<(), Reply> {
    let r = match op {
        FileOp::TusOptions => Ok(options(app)),
        _ => run(app, s, op, params).await,
    };
    Err(r.unwrap_or_else(|e| e))
}

async fn run(app: &Arc<App>, s: &mut ServerSession, op: FileOp, params: Params<'_>) -> Result<Reply, Reply> {
    match super::header(s, "tus-resumable").map_err(Reply::error)? {
        Some(v) if v.trim() == VERSION => {}
        _ => {
            let mut r = Reply::error(ApiError::coded("tus_version", "send Tus-Resumable: 1.0.0 (the tus version this server speaks)"));
            r.headers.push(("tus-version", VERSION.into()));
            return Err(r);
        }
    }
    let token = crate::server::bearer(s).map_err(Reply::error)?.map(str::to_string);
    let ctx = super::checked(app, s, token).await.map_err(Reply::error)?;
    if op == FileOp::TusCreate {
        return create(app, s, &ctx).await.map_err(Reply::error);
    }
    // Not a uuid: no such upload (tus clients then start over).
    let id = params
        .get(0)
        .ok()
        .and_then(|p| uuid::Uuid::parse_str(&p).ok())
        .map(|u| u.to_string())
        .ok_or_else(|| Reply::error(not_found()))?;
    match op {
        FileOp::TusHead => head(app, &ctx, &id).await.map_err(Reply::error),
        FileOp::TusDelete => {
            let row = crate::db::call_binary(&app.requests, &app.timeouts, &ctx.caller(), sql::UPLOAD_ABORT, &[&id], super::PIECE_RESULT).await;
            row.map(|_| Reply::empty(StatusCode::NO_CONTENT)).map_err(Reply::error)
        }
        _ => patch(app, s, &ctx, id).await,
    }
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "upload_not_found", "no such upload (finished, aborted, expired, or not yours)")
}

/// OPTIONS /v1/uploads: what this server speaks.
pub fn options(app: &App) -> Reply {
    let mut r = Reply::empty(StatusCode::NO_CONTENT);
    r.headers.push(("tus-version", VERSION.into()));
    r.headers.push(("tus-extension", "creation,termination,checksum".into()));
    r.headers.push(("tus-max-size", app.cfg.file_max_bytes.to_string()));
    r.headers.push(("tus-checksum-algorithm", "sha1,sha256".into()));
    r
}

/// The most `Upload-Metadata` may hold: room for `data` and `acl` JSON of tens of KiB
/// (base64), far below pingora's 1 MiB header limit.
pub const MAX_METADATA_BYTES: usize = 64 << 10;

/// The most pairs `Upload-Metadata` may hold: the keys this server reads (bucket,
/// filename, filetype, acl, data, sha256, id, version) and room for the extra keys tus
/// clients send (fingerprints, relative paths), which are accepted and ignored.
pub const MAX_METADATA_PAIRS: usize = 32;

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs (or a bare key), keys
/// unique and non-empty, at most MAX_METADATA_BYTES and MAX_METADATA_PAIRS (400
/// otherwise, decided before any pair is decoded: the work is linear in the header).
/// Values must be UTF-8 here (every key we read is text).
pub fn parse_metadata(v: &str) -> Result<Vec<(String, Option<String>)>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_request", format!("Upload-Metadata: {m}"));
    if v.len() > MAX_METADATA_BYTES {
        return Err(bad(format!("the header is {} bytes; at most {MAX_METADATA_BYTES} are accepted", v.len())));
    }
    if v.split(',').nth(MAX_METADATA_PAIRS).is_some() {
        return Err(bad(format!("more than {MAX_METADATA_PAIRS} pairs")));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for pair in v.split(',').map(str::trim) {
        if pair.is_empty() {
            return Err(bad("an empty pair".into()));
        }
        let mut parts = pair.split(' ').filter(|p| !p.is_empty());
        let key = parts.next().unwrap_or_default();
        let value = parts.next();
        if parts.next().is_some() {
            return Err(bad(format!("pair {key:?} has more than a key and a value")));
        }
        if !seen.insert(key) {
            return Err(bad(format!("key {key:?} is given twice")));
        }
        let value = match value {
            None => None,
            Some(b) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(b).map_err(|_| bad(format!("the value of {key:?} is not base64")))?;
                Some(String::from_utf8(bytes).map_err(|_| bad(format!("the value of {key:?} is not UTF-8 text")))?)
            }
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// The session's target from its metadata.
fn target_of(meta: &[(String, Option<String>)]) -> Result<Target, ApiError> {
    let bad = |m: &str| ApiError::bad_request("invalid_request", format!("Upload-Metadata: {m}"));
    let get = |k: &str| meta.iter().find(|(key, _)| key == k).and_then(|(_, v)| v.clone());
    let mut t = Target {
        collection: get("bucket").ok_or_else(|| bad("bucket (the collection) is required"))?,
        name: Some(get("filename").ok_or_else(|| bad("filename is required"))?),
        content_type: get("filetype").map(|c| super::headers::essence(&c)).filter(|c| !c.is_empty()),
        ..Target::default()
    };
    if let Some(id) = get("id") {
        t.file_id = Some(uuid::Uuid::parse_str(id.trim()).map_err(|_| bad("id must be a uuid"))?.to_string());
    }
    if let Some(v) = get("version") {
        t.expected_version = Some(v.trim().parse::<i64>().ok().filter(|v| *v >= 1).ok_or_else(|| bad("version must be a positive integer"))?);
        if t.file_id.is_none() {
            return Err(bad("version is for replacing a file: send its id too"));
        }
        t.replace = true;
    }
    for key in ["acl", "data"] {
        if let Some(text) = get(key) {
            let v: Value = serde_json::from_str(&text).map_err(|_| bad(&format!("{key} is not JSON")))?;
            if key == "data" && !v.is_object() {
                return Err(ApiError::bad_request("invalid_data", "data must be a JSON object"));
            }
            if key == "acl" {
                t.acl = Some(text);
            } else {
                t.data = Some(text);
            }
        }
    }
    if let Some(hex) = get("sha256") {
        t.sha256 = Some(decode_hex(hex.trim()).filter(|b| b.len() == 32).ok_or_else(|| bad("sha256 must be 64 hex digits"))?);
    }
    Ok(t)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

async fn create(app: &Arc<App>, s: &ServerSession, ctx: &Ctx) -> Result<Reply, ApiError> {
    if super::header(s, "upload-defer-length")?.is_some() {
        return Err(ApiError::bad_request("invalid_request", "Upload-Defer-Length is not supported: send Upload-Length"));
    }
    let length = super::header(s, "upload-length")?
        .ok_or_else(|| ApiError::bad_request("invalid_request", "Upload-Length is required"))?
        .trim()
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request("invalid_request", "Upload-Length must be a whole number of bytes"))?;
    if length > app.cfg.file_max_bytes {
        return Err(upload::too_large(app.cfg.file_max_bytes));
    }
    let meta = parse_metadata(super::header(s, "upload-metadata")?.unwrap_or_default())?;
    let target = target_of(&meta)?;
    let len = Some(i64::try_from(length).map_err(|_| upload::too_large(app.cfg.file_max_bytes))?);
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
        &target.collection,
        &target.name,
        &target.content_type,
        &len,
        &target.data,
        &target.acl,
        &target.file_id,
        &target.expected_version,
        &target.replace,
        &target.sha256,
    ];
    let v = super::call_json(app, ctx, sql::UPLOAD_CREATE, &p).await?;
    let id = v["upload_id"].as_str().ok_or_else(ApiError::internal)?;
    let mut r = Reply::empty(StatusCode::CREATED);
    let base = app.cfg.public_url.as_deref().unwrap_or("").trim_end_matches('/');
    r.headers.push(("location", format!("{base}/v1/uploads/{id}")));
    if let Some(exp) = v["expires_at"].as_str().and_then(super::parse_timestamp) {
        r.headers.push(("upload-expires", httpdate::fmt_http_date(exp)));
    }
    if let Some(f) = v["file_id"].as_str() {
        r.headers.push(("pgbaas-file-id", f.to_string()));
    }
    if length == 0 {
        // An empty file is complete at creation: tus clients (tus-js-client, the
        // mobile ones) send no PATCH for it, so the finish runs now, and its file id
        // and version are in this answer. A refusal ends the session (as at a last
        // PATCH) and is the answer instead of 201.
        match upload::finish(app, ctx, id).await {
            Ok(file) => {
                if let Some(v) = file["version"].as_i64() {
                    r.headers.push(("pgbaas-file-version", v.to_string()));
                }
                r.headers.push(("upload-offset", "0".into()));
            }
            Err(e) => {
                upload::abort(app, ctx, id);
                return Err(e);
            }
        }
    }
    Ok(r)
}

async fn head(app: &Arc<App>, ctx: &Ctx, id: &str) -> Result<Reply, ApiError> {
    let v = super::call_json(app, ctx, sql::UPLOAD_STATUS, &[&id]).await?;
    let mut r = Reply::empty(StatusCode::OK);
    r.no_store = true;
    let mut offset = v["offset"].as_i64().unwrap_or(0);
    let length = v["length"].as_i64();
    let mut finished = v["finished"].as_bool() == Some(true);
    if finished {
        // Finished within the last day (its last PATCH's answer may have been lost):
        // Upload-Offset = Upload-Length tells a tus client it is done, and the file's
        // id which one it made.
        if let Some(file) = v["file_id"].as_str() {
            r.headers.push(("pgbaas-file-id", file.to_string()));
        }
    } else if length == Some(offset) {
        // Every byte is stored but the session is not finished: the PATCH that stored
        // the last ones failed after its last append (an answer lost after the commit,
        // a body cut right after its last byte, a proxy that went away, a transient
        // error at the finish). A tus client that sees Upload-Offset = Upload-Length
        // takes the upload as done and sends nothing more, so HEAD finishes it now.
        // Under the lease: a writer still at work makes this 423 (clients retry), and
        // taking it rewinds a checksummed PATCH that never ended (its bytes were never
        // verified), after which the offset is where that PATCH began.
        let session = Session { id: id.to_string(), lease: uuid::Uuid::new_v4().to_string() };
        let no_checkpoint = false;
        let lease = super::call_json(app, ctx, sql::UPLOAD_LEASE, &[&session.id, &session.lease, &no_checkpoint]).await?;
        offset = lease["offset"].as_i64().unwrap_or(0);
        if length == Some(offset) {
            finish(app, ctx, &session, &mut r).await?;
            finished = true;
        } else {
            release(app, ctx, &session).await;
        }
    }
    r.headers.push(("upload-offset", offset.to_string()));
    if let Some(n) = length {
        r.headers.push(("upload-length", n.to_string()));
    }
    if !finished {
        if let Some(exp) = v["expires_at"].as_str().and_then(super::parse_timestamp) {
            r.headers.push(("upload-expires", httpdate::fmt_http_date(exp)));
        }
    }
    Ok(r)
}

/// Finish a session whose bytes are all stored, `session.lease` held; on success the
/// file's id and version go into `r`. A refusal (a 4xx: the bytes, the quota, the
/// policies) ends the session, as nothing can make it pass; a transient failure (a
/// 5xx such as 503 query_timeout, or a serialization failure) keeps it, its lease
/// released, so that a retry finishes it: HEAD, or a PATCH of no bytes at the end.
async fn finish(app: &Arc<App>, ctx: &Ctx, session: &Session, r: &mut Reply) -> Result<(), ApiError> {
    match upload::finish(app, ctx, &session.id).await {
        Ok(file) => {
            if let Some(f) = file["id"].as_str() {
                r.headers.push(("pgbaas-file-id", f.to_string()));
            }
            if let Some(v) = file["version"].as_i64() {
                r.headers.push(("pgbaas-file-version", v.to_string()));
            }
            Ok(())
        }
        Err(e) if transient(&e) => {
            release(app, ctx, session).await;
            Err(e)
        }
        Err(e) => {
            upload::abort(app, ctx, &session.id);
            Err(e)
        }
    }
}

/// An error that says nothing about the upload: the same finish may pass later.
fn transient(e: &ApiError) -> bool {
    e.status.is_server_error() || e.code == "serialization_failure"
}

/// A PATCH's `Upload-Checksum`: the algorithm's running hash and the expected digest.
pub enum Checksum {
    Sha1(sha1::Sha1, [u8; 20]),
    Sha256(sha2::Sha256, [u8; 32]),
}

impl Checksum {
    pub fn parse(v: &str) -> Result<Checksum, ApiError> {
        let bad = |m: &str| ApiError::bad_request("invalid_request", format!("Upload-Checksum: {m}"));
        let (alg, b64) = v.trim().split_once(' ').ok_or_else(|| bad("send '<algorithm> <base64 digest>'"))?;
        let digest = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| bad("the digest is not base64"))?;
        match alg {
            "sha1" => Ok(Checksum::Sha1(sha1::Sha1::new(), digest.try_into().map_err(|_| bad("a sha1 digest is 20 bytes"))?)),
            "sha256" => Ok(Checksum::Sha256(sha2::Sha256::new(), digest.try_into().map_err(|_| bad("a sha256 digest is 32 bytes"))?)),
            _ => Err(bad("the algorithm must be sha1 or sha256 (Tus-Checksum-Algorithm)")),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Checksum::Sha1(h, _) => h.update(data),
            Checksum::Sha256(h, _) => h.update(data),
        }
    }

    pub fn matches(self) -> bool {
        match self {
            Checksum::Sha1(h, want) => h.finalize().as_slice() == want,
            Checksum::Sha256(h, want) => h.finalize().as_slice() == want,
        }
    }
}

fn checksum_mismatch() -> ApiError {
    ApiError::coded("checksum_mismatch", "the body does not match Upload-Checksum; nothing of this PATCH was kept")
}

async fn patch(app: &Arc<App>, s: &mut ServerSession, ctx: &Ctx, id: String) -> Result<Reply, Reply> {
    let ct = super::header(s, "content-type").map_err(Reply::error)?;
    if !ct.is_some_and(|c| super::headers::essence(c) == "application/offset+octet-stream") {
        return Err(Reply::error(ApiError::coded("upload_body_required", "a PATCH body is Content-Type: application/offset+octet-stream")));
    }
    let offset = super::header(s, "upload-offset")
        .map_err(Reply::error)?
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| Reply::error(ApiError::bad_request("invalid_request", "Upload-Offset (a whole number) is required")))?;
    let mut checksum = match super::header(s, "upload-checksum").map_err(Reply::error)? {
        Some(v) => Some(Checksum::parse(v).map_err(Reply::error)?),
        None => None,
    };
    let declared = super::content_length(s).map_err(Reply::error)?;
    let _slot = app.transfers.admit(&ctx.ip_key, ctx.subject.as_deref(), ctx.service).map_err(Reply::error)?;
    let session = Session { id, lease: uuid::Uuid::new_v4().to_string() };
    // The lease (one writer at a time) and, with a checksum, a checkpoint to rewind to.
    let checkpoint = checksum.is_some();
    let lease = super::call_json(app, ctx, sql::UPLOAD_LEASE, &[&session.id, &session.lease, &checkpoint]).await.map_err(Reply::error)?;
    let current = lease["offset"].as_i64().unwrap_or(-1);
    if i64::try_from(offset).ok() != Some(current) {
        release(app, ctx, &session).await;
        let mut r = Reply::error(ApiError::coded("offset_mismatch", format!("the upload is at offset {current}, not {offset}; ask with HEAD")));
        r.headers.push(("upload-offset", current.max(0).to_string()));
        return Err(r);
    }
    let length = lease["length"].as_u64();
    if let (Some(n), Some(len)) = (declared, length) {
        if !fits(offset, n, len) {
            release(app, ctx, &session).await;
            return Err(Reply::error(past_length(len)));
        }
    }
    super::continue_if_expected(s).await;
    let mut at = offset;
    let mut buf = BytesMut::with_capacity(PIECE);
    let result: Result<(), ApiError> = async {
        let mut body = BodyReader::new(s, app.cfg.file_idle_timeout);
        let mut next = BytesMut::new();
        let mut more = body.next_piece(&mut buf, PIECE).await?;
        loop {
            if !buf.is_empty() {
                // A body longer than the upload's rest (chunked, or a Content-Length
                // that lied): refused here, before the database sees the bytes.
                if let Some(len) = length {
                    if !fits(at, buf.len() as u64, len) {
                        return Err(past_length(len));
                    }
                }
                if let Some(c) = checksum.as_mut() {
                    c.update(&buf);
                }
                if more {
                    // The next piece comes from the client while this one is stored,
                    // as in upload::store. A body cut meanwhile leaves what a
                    // sequential loop leaves: this piece stored, the next not.
                    let (stored, filled) = tokio::join!(upload::append(app, ctx, &session, at, &buf), body.next_piece(&mut next, PIECE));
                    at = stored?;
                    more = filled?;
                    std::mem::swap(&mut buf, &mut next);
                    continue;
                }
                at = upload::append(app, ctx, &session, at, &buf).await?;
            }
            if !more {
                return Ok(());
            }
            more = body.next_piece(&mut buf, PIECE).await?;
        }
    }
    .await;
    drop(buf);
    if let Err(e) = result {
        // An over-long PATCH (413) is this request's fault, not the session's: it is
        // kept, like after a cut body (with a checksum, rewound to where the PATCH
        // began; without one, the whole pieces before the excess stay), and the
        // client may PATCH again from HEAD's offset.
        if checkpoint {
            rewind(app, ctx, &session).await;
        } else {
            release(app, ctx, &session).await;
        }
        return Err(Reply::error(e));
    }
    if let Some(c) = checksum {
        if !c.matches() {
            rewind(app, ctx, &session).await;
            let mut r = Reply::error(checksum_mismatch());
            r.headers.push(("upload-offset", offset.to_string()));
            return Err(r);
        }
    }
    let mut r = Reply::empty(StatusCode::NO_CONTENT);
    r.headers.push(("upload-offset", at.to_string()));
    if length != Some(at) {
        release(app, ctx, &session).await;
    } else {
        finish(app, ctx, &session, &mut r).await.map_err(Reply::error)?;
    }
    Ok(r)
}

/// `n` more bytes at `at` stay within `len` (no wrapping: a huge Content-Length is
/// simply too long).
fn fits(at: u64, n: u64, len: u64) -> bool {
    at.checked_add(n).is_some_and(|end| end <= len)
}

fn past_length(len: u64) -> ApiError {
    ApiError::coded("file_too_large", format!("the body goes past Upload-Length ({len} bytes); the upload is kept: ask HEAD for its offset"))
}

async fn release(app: &Arc<App>, ctx: &Ctx, session: &Session) {
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&session.id, &session.lease];
    if let Err(e) = crate::db::call_binary(&app.requests, &app.timeouts, &ctx.caller(), sql::UPLOAD_RELEASE, &p, super::PIECE_RESULT).await {
        log::warn!("releasing upload {}: {} {}", session.id, e.code, e.message);
    }
}

async fn rewind(app: &Arc<App>, ctx: &Ctx, session: &Session) {
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&session.id, &session.lease];
    if let Err(e) = crate::db::call_binary(&app.requests, &app.timeouts, &ctx.caller(), sql::UPLOAD_REWIND, &p, super::PIECE_RESULT).await {
        log::warn!("rewinding upload {}: {} {}", session.id, e.code, e.message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs() {
        let m = parse_metadata("bucket cGhvdG9z,filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential").unwrap();
        assert_eq!(
            m,
            vec![
                ("bucket".into(), Some("photos".into())),
                ("filename".into(), Some("world_domination_plan.pdf".into())),
                ("is_confidential".into(), None)
            ]
        );
        assert_eq!(parse_metadata("filename cm==sdW1lLnBkZg==").unwrap_err().status, StatusCode::BAD_REQUEST);
        for bad in ["a x,a y", "a !!!", "a YQ== b", ",", "a /w=="] {
            assert_eq!(parse_metadata(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let t = target_of(&parse_metadata("bucket cGhvdG9z,filename YS5wbmc=,filetype aW1hZ2UvcG5n").unwrap()).unwrap();
        assert_eq!((t.collection.as_str(), t.name.as_deref(), t.content_type.as_deref(), t.replace), ("photos", Some("a.png"), Some("image/png"), false));
        assert!(target_of(&parse_metadata("filename YS5wbmc=").unwrap()).is_err(), "bucket is required");
        assert!(target_of(&parse_metadata("bucket cA==,filename YQ==,version Mw==").unwrap()).is_err(), "version needs id");
    }

    /// Finding 1 of the issue-15 review: 185k bare keys in a 1 MiB header took 90 s of
    /// CPU (a quadratic duplicate check). Now: refused by its size, and a header just
    /// under the size limit but with too many pairs by their count, both 400.
    #[test]
    fn metadata_is_bounded() {
        let keys = |n: usize| (0..n).map(|i| format!("{i:x}")).collect::<Vec<_>>().join(",");
        let huge = keys(185_000);
        assert!(huge.len() > 1_000_000);
        let e = parse_metadata(&huge).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (StatusCode::BAD_REQUEST, "invalid_request"));
        assert!(e.message.contains("at most 65536"), "{}", e.message);
        let many = keys(10_000);
        assert!(many.len() < MAX_METADATA_BYTES);
        let e = parse_metadata(&many).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("more than 32 pairs"), "{}", e.message);
        // 32 pairs, unknown keys among them, and a large data value: accepted.
        let data = base64::engine::general_purpose::STANDARD.encode(format!("{{\"note\": \"{}\"}}", "x".repeat(40_000)));
        let mut ok = format!("bucket cGhvdG9z,filename YS5wbmc=,data {data}");
        for i in 0..29 {
            ok.push_str(&format!(",client_key_{i} YQ=="));
        }
        let m = parse_metadata(&ok).unwrap();
        assert_eq!(m.len(), 32);
        assert!(target_of(&m).unwrap().data.is_some_and(|d| d.len() > 40_000));
        assert!(parse_metadata(&format!("{ok},one_more")).is_err());
    }

    #[test]
    fn patch_lengths_never_wrap() {
        assert!(fits(0, 10, 10));
        assert!(fits(5, 0, 5));
        assert!(!fits(5, 6, 10));
        assert!(!fits(1, u64::MAX, 10), "Content-Length: 2^64-1 would wrap to 0");
        assert!(!fits(u64::MAX, 1, u64::MAX));
        assert_eq!(past_length(10).status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn checksums() {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut c = Checksum::parse(&format!("sha256 {}", b64(&sha2::Sha256::digest(b"hello")))).unwrap();
        c.update(b"hel");
        c.update(b"lo");
        assert!(c.matches());
        let mut c = Checksum::parse(&format!("sha1 {}", b64(&sha1::Sha1::digest(b"hello")))).unwrap();
        c.update(b"hellO");
        assert!(!c.matches());
        for bad in ["md5 AAAA", "sha1", "sha1 !!", "sha256 AAAA"] {
            assert!(Checksum::parse(bad).is_err(), "{bad}");
        }
    }
}
