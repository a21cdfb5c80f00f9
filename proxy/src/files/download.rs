//! GET/HEAD /v1/files/{id}: `baas.file_get` (metadata and the first piece in one
//! round trip), then `baas.file_read` two pieces ahead of the socket (at most four
//! pieces of the file in memory), each piece its own short transaction pinned to the
//! blob the first one read. A piece that comes back empty means the file changed
//! (overwritten, deleted) or was revoked: the connection is closed before
//! Content-Length is reached, and the client's `If-Range` retry sees the new version.
//!
//! Order: route -> per-IP limit -> token or `sig` (not both) -> transfer caps ->
//! file_get -> If-None-Match (304) -> If-Range/Range (206/416/200) -> stream.

use super::range::{self, RangeAnswer};
use super::{headers, link, params, sql, Ctx, PIECE, PIECE_RESULT};
use crate::db;
use crate::errors::ApiError;
use crate::router::Params;
use crate::server::{App, Reply};
use bytes::Bytes;
use http::{header, StatusCode};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use serde_json::Value;
use std::sync::Arc;

/// What the download needs from the file's JSON.
pub struct Meta {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    /// For thumbnails (thumb.rs) and logs.
    #[allow(dead_code)]
    pub version: i64,
    pub updated_at: Option<std::time::SystemTime>,
    pub public: bool,
}

impl Meta {
    pub fn from_json(v: &Value) -> Result<Meta, ApiError> {
        let bad = || {
            log::error!("file_get: metadata without size/sha256: {v}");
            ApiError::internal()
        };
        Ok(Meta {
            id: v["id"].as_str().unwrap_or_default().to_string(),
            name: v["name"].as_str().unwrap_or("file").to_string(),
            size: v["size"].as_u64().ok_or_else(bad)?,
            content_type: v["content_type"].as_str().unwrap_or("application/octet-stream").to_string(),
            sha256: v["sha256"].as_str().ok_or_else(bad)?.to_string(),
            version: v["version"].as_i64().unwrap_or(0),
            updated_at: v["updated_at"].as_str().and_then(super::parse_timestamp),
            public: v["acl"]["read"].as_array().is_some_and(|r| r.iter().any(|p| p == "public")),
        })
    }

    pub fn etag(&self) -> String {
        format!("\"{}\"", self.sha256)
    }
}

pub async fn serve(app: &Arc<App>, s: &mut ServerSession, params: Params<'_>) -> Result<(), Reply> {
    let id = super::file_id(&params).map_err(Reply::error)?;
    let q = params::download(s.req_header().uri.query()).map_err(Reply::error)?;
    let bearer = crate::server::bearer(s).map_err(Reply::error)?.map(str::to_string);
    let mut version = None;
    let ctx = match (bearer, q.sig.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(Reply::error(ApiError::bad_request("invalid_request", "send a token or a signed link's sig, not both")));
        }
        (None, Some(sig)) => {
            let mut ctx = super::checked(app, s, None).await.map_err(Reply::error)?;
            let (claims, ver) = link::check(app, sig, &id).await.map_err(Reply::error)?;
            version = Some(ver);
            ctx.set_claims(Some(claims));
            ctx
        }
        (token, None) => super::checked(app, s, token).await.map_err(Reply::error)?,
    };
    send(app, s, ctx, id, version, q).await
}

/// Write file `id` (at `version`, a signed link's) to the client as `ctx` may read it:
/// the download route's answer once its caller is known, and the Parse door's file URLs'
/// (parse/files.rs).
pub async fn send(app: &Arc<App>, s: &mut ServerSession, ctx: Ctx, id: String, version: Option<i64>, q: params::FileQuery) -> Result<(), Reply> {
    let _slot = app.transfers.admit(&ctx.ip_key, ctx.subject.as_deref(), ctx.service).map_err(Reply::error)?;
    let head_only = s.req_header().method == http::Method::HEAD;
    let range_h = super::header(s, "range").map_err(Reply::error)?.map(str::to_string);
    let if_range = super::header(s, "if-range").map_err(Reply::error)?.map(str::to_string);
    let if_none_match = super::header(s, "if-none-match").map_err(Reply::error)?.map(str::to_string);

    // The first piece from where a simple `a-b`/`a-` range starts (most ranged reads),
    // else from 0; read again below if the answer starts elsewhere.
    let guess = range_h.as_deref().and_then(range_start).unwrap_or(0);
    let first_len = if head_only { 1 } else { piece_len(guess) };
    let (at, max) = (i64::try_from(guess).unwrap_or(0), first_len);
    let get_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&id, &version, &at, &max];
    let row = db::call_binary(&app.requests, &app.timeouts, &ctx.caller(), sql::FILE_GET, &get_params, super::meta_result(app))
        .await
        .map_err(Reply::error)?
        .ok_or_else(|| Reply::error(ApiError::new(StatusCode::NOT_FOUND, "file_not_found", "no such file, or not readable by this caller")))?;
    let meta_text = super::col_text(row.first().unwrap_or(&None)).map_err(Reply::error)?;
    let meta_json: Value = serde_json::from_str(meta_text).map_err(|_| Reply::error(ApiError::internal()))?;
    let meta = Meta::from_json(&meta_json).map_err(Reply::error)?;
    let blob = super::col_uuid(row.get(1).unwrap_or(&None)).map_err(Reply::error)?.to_string();
    let first: Bytes = row.get(2).cloned().flatten().unwrap_or_default();
    drop(row);

    if let Some(spec) = q.thumb.as_deref() {
        return super::thumb_hook::serve(app, s, &ctx, &meta, &blob, spec, q.fit.as_deref()).await;
    }

    let etag = meta.etag();
    let mut h = ResponseHeader::build(StatusCode::OK, Some(12)).map_err(|_| Reply::error(ApiError::internal()))?;
    let _ = h.insert_header(header::ETAG, etag.as_str());
    app.edge.headers(s.req_header(), &mut h); // (issue 19, edge)
    if let Some(lm) = meta.updated_at {
        let _ = h.insert_header(header::LAST_MODIFIED, httpdate::fmt_http_date(lm));
    }
    let _ = h.insert_header(header::CACHE_CONTROL, headers::cache_control(meta.public));
    if let Some(inm) = if_none_match.as_deref() {
        if headers::etag_matches(inm, &etag) {
            h.set_status(StatusCode::NOT_MODIFIED).map_err(|_| Reply::error(ApiError::internal()))?;
            return write_head(s, h).await;
        }
    }
    let answer = range::decide(range_h.as_deref(), if_range.as_deref(), &etag, meta.updated_at, meta.size);
    let (start, end) = match answer {
        RangeAnswer::Unsatisfiable => {
            let mut r = Reply::error(ApiError::coded("range_not_satisfiable", format!("the file has {} bytes; ask for a range inside them", meta.size)));
            r.headers.push(("content-range", format!("bytes */{}", meta.size)));
            r.headers.push(("accept-ranges", "bytes".into()));
            return Err(r);
        }
        RangeAnswer::Whole => (0, meta.size),
        RangeAnswer::Partial(a, b) => {
            h.set_status(StatusCode::PARTIAL_CONTENT).map_err(|_| Reply::error(ApiError::internal()))?;
            let _ = h.insert_header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{}", meta.size));
            (a, b + 1)
        }
    };
    let inline = !q.download && headers::inline_allowed(&meta.content_type);
    let _ = h.insert_header(header::CONTENT_LENGTH, end - start);
    let _ = h.insert_header(header::ACCEPT_RANGES, "bytes");
    let _ = h.insert_header(header::CONTENT_TYPE, headers::content_type(&meta.content_type));
    let _ = h.insert_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    let _ = h.insert_header(header::CONTENT_DISPOSITION, headers::content_disposition(&meta.name, inline));
    let _ = h.insert_header(header::CONTENT_SECURITY_POLICY, headers::csp(&meta.content_type));
    if head_only || start == end {
        return write_head(s, h).await;
    }
    s.set_write_timeout(Some(app.cfg.file_idle_timeout));
    let mut h = h;
    crate::observe::stamp(&mut h); // (issue 19, observe): X-Request-Id
    if let Err(e) = s.write_response_header(Box::new(h)).await {
        log::debug!("writing a download's head: {e}");
        s.set_keepalive(None);
        return Ok(());
    }
    // The first piece is usable if it starts where the answer does.
    let first = if start == guess { Some(first) } else { None };
    if let Err(why) = stream(app, s, &ctx, &blob, start, end, first).await {
        log::info!("download of {} cut: {why}", meta.id);
        // Fewer bytes than Content-Length: the client sees the cut; nothing follows.
        s.set_keepalive(None);
    }
    Ok(())
}

/// A start past this is no file's (Postgres's bigint offsets would overflow near
/// i64::MAX): not prefetched, so range::decide answers it 416, not the database 400.
const PLAUSIBLE_START: u64 = 1 << 62;

/// Where `bytes=a-b` or `bytes=a-` starts (one range), if it is worth prefetching
/// from; else None (the first piece is then read from 0).
fn range_start(r: &str) -> Option<u64> {
    let spec = r.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    spec.split_once('-')?.0.trim().parse().ok().filter(|a| *a < PLAUSIBLE_START)
}

/// From `at` to the next piece boundary: 1..=PIECE bytes.
fn piece_len(at: u64) -> i32 {
    let n = PIECE as u64 - at % PIECE as u64;
    i32::try_from(n).unwrap_or(PIECE as i32)
}

async fn write_head(s: &mut ServerSession, h: ResponseHeader) -> Result<(), Reply> {
    let mut h = h;
    crate::observe::stamp(&mut h); // (issue 19, observe): X-Request-Id
    if let Err(e) = s.write_response_header(Box::new(h)).await {
        log::debug!("writing a file answer's head: {e}");
        s.set_keepalive(None);
        return Ok(());
    }
    if let Err(e) = s.finish_body().await {
        log::debug!("ending a file answer: {e}");
        s.set_keepalive(None);
    }
    Ok(())
}

/// One piece of `blob` from `at` (up to the next PIECE boundary, at most to `end`, and
/// no further than the end of the chunk holding `at`: a short read when chunks are not
/// aligned, as tus PATCHes leave them); None: the blob is gone or no longer readable.
/// Also the thumbnails' source reader.
pub(super) async fn read_piece(app: &App, ctx: &Ctx, blob: &str, at: u64, end: u64) -> Result<Option<Bytes>, ApiError> {
    let len = piece_len(at).min(i32::try_from(end.saturating_sub(at)).unwrap_or(i32::MAX));
    let Ok(at) = i64::try_from(at) else {
        return Ok(None); // past any file
    };
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&blob, &at, &len];
    let row = db::call_binary(&app.requests, &app.timeouts, &ctx.caller(), sql::FILE_READ, &p, PIECE_RESULT).await?;
    Ok(row.and_then(|r| r.into_iter().next().flatten()).filter(|b| !b.is_empty()))
}

fn db_failed(e: ApiError) -> String {
    format!("{}: {}", e.code, e.message)
}

/// Pieces read ahead of the socket: Postgres reads the next ones while the proxy
/// receives one and writes another. One ahead left Postgres waiting on the proxy and
/// the proxy on Postgres (36% of the machine idle in `perf record -a` of 1 GB
/// downloads); two ahead moved 730 → 870 MB/s in three alternating rounds of
/// `pgbaas-bench-files --mb 300` (three ahead: 828). A fast download keeps up to this
/// many pooled connections busy, each for one piece's short transaction.
const AHEAD: usize = 2;

/// Write bytes [start, end) of the blob: up to AHEAD further pieces are read while the
/// current one is written. Each read is a task of its own, so it runs to its end and
/// gives its connection back however slowly the client takes the piece being written
/// (a read polled only beside the write would stall mid-query, holding a connection
/// and its transaction). Reads ahead ask for whole pieces, at MiB boundaries; a short
/// piece (a chunk that ends before the boundary, as uploads before 0.7.0 could leave
/// them) puts a read of the gap in front of them.
async fn stream(app: &Arc<App>, s: &mut ServerSession, ctx: &Ctx, blob: &str, start: u64, end: u64, first: Option<Bytes>) -> Result<(), String> {
    type Read = tokio::task::JoinHandle<Result<Option<Bytes>, ApiError>>;
    let read_at = |o: u64| -> Read {
        let (app, ctx, blob) = (app.clone(), ctx.clone(), blob.to_string());
        // `carry`: the request's id goes with the read's SQL, as for the first piece.
        tokio::spawn(crate::observe::carry(async move { read_piece(&app, &ctx, &blob, o, end).await }))
    };
    let mut at = start;
    let mut current = match first.filter(|b| !b.is_empty()) {
        Some(b) => b,
        None => read_piece(app, ctx, blob, at, end).await.map_err(db_failed)?.ok_or("the file is gone")?,
    };
    // The reads in flight, in the order of their offsets, and the offset of the next.
    let mut ahead: std::collections::VecDeque<(u64, Read)> = std::collections::VecDeque::new();
    let mut asked = at;
    loop {
        let take = current.len().min(usize::try_from(end - at).unwrap_or(usize::MAX));
        let piece = current.slice(..take);
        let next_at = at + take as u64;
        let last = next_at >= end;
        if !last {
            match ahead.front() {
                // A short piece: the reads in flight start at the next boundary; read
                // the gap before them.
                Some((o, _)) if *o != next_at => ahead.push_front((next_at, read_at(next_at))),
                None => asked = next_at,
                _ => {}
            }
            while ahead.len() < AHEAD && asked < end {
                ahead.push_back((asked, read_at(asked)));
                asked += piece_len(asked).min(i32::try_from(end - asked).unwrap_or(i32::MAX)) as u64;
            }
        }
        let write = s.write_response_body(piece, last);
        if last {
            write.await.map_err(|e| format!("writing: {e}"))?;
            return Ok(());
        }
        let (o, read) = ahead.pop_front().ok_or("no piece was read ahead")?;
        debug_assert_eq!(o, next_at);
        let (w, next) = tokio::join!(write, read);
        w.map_err(|e| format!("writing: {e}"))?;
        let next = next.map_err(|e| format!("a read ahead ended: {e}"))?;
        current = next.map_err(db_failed)?.ok_or("the file changed or is no longer readable")?;
        at = next_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_only_from_plausible_starts() {
        assert_eq!(range_start("bytes=5-"), Some(5));
        assert_eq!(range_start("bytes=1048576-2000000"), Some(1 << 20));
        assert_eq!(range_start("bytes=-10"), None, "a suffix: from 0");
        assert_eq!(range_start("bytes=0-1,5-9"), None, "several ranges: the whole file");
        // i64::MAX and beyond would overflow in SQL (400); not prefetched, the answer
        // is range::decide's 416.
        assert_eq!(range_start("bytes=9223372036854775807-"), None);
        assert_eq!(range_start("bytes=18446744073709551615-"), None);
        assert_eq!(range_start("bytes=99999999999999999999999-"), None);
        assert_eq!(super::range::decide(Some("bytes=9223372036854775807-"), None, "\"x\"", None, 10), RangeAnswer::Unsatisfiable);
    }

    #[test]
    fn pieces_end_at_piece_boundaries() {
        assert_eq!(piece_len(0), PIECE as i32);
        assert_eq!(piece_len(1), PIECE as i32 - 1);
        assert_eq!(piece_len(PIECE as u64 - 1), 1);
        assert_eq!(piece_len((1 << 62) - 1), 1);
    }
}
