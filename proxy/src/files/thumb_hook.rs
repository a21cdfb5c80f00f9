//! `GET /v1/files/{id}?thumb=WxH[&fit=contain|cover]` (docs/files.md): the download path
//! calls `serve` after `file_get` has checked that the caller may read the file.
//!
//! Order: spec (400) -> If-None-Match (304, nothing read) -> stored type and size (415,
//! 422 before a byte is read) -> `baas.thumbnail_get` (cached: answered) -> the source
//! a place in the App's ThumbPool (503 thumbnails_busy past its queue, before a byte of
//! the source is read) -> the source read piece by piece with `file_read`, pinned to
//! the blob `file_get` saw (the one bounded whole-file buffer, at most
//! `thumb_max_input_bytes`) -> `thumb::make` in that place -> `baas.thumbnail_put` (a
//! failure to cache is logged, never the client's error) -> 200.
//! Every permission decision is Postgres's: `thumbnail_get` and `file_read` run as the
//! caller under the files' RLS; `thumbnail_put` runs as the proxy's login role, the
//! only role that may store a thumbnail (every reader is served it).

use super::download::{self, Meta};
use super::{headers, thumb, Ctx};
use crate::db;
use crate::errors::ApiError;
use crate::server::{App, Reply};
use bytes::Bytes;
use http::{header, StatusCode};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use serde_json::Value;
use std::sync::Arc;

const THUMB_GET: &str = "select meta, data from baas.thumbnail_get($1::text::uuid, $2::integer, $3::integer, $4::text)";
const THUMB_PUT: &str =
    "select 1::integer from baas.thumbnail_put($1::text::uuid, $2::integer, $3::integer, $4::text, $5::text, $6::bytea) x";

/// A cached thumbnail's row: a 1024×1024 RGBA PNG is at most a few MiB.
const THUMB_RESULT: usize = (16 << 20) + (64 << 10);

fn gone() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "file_not_found", "no such file, or not readable by this caller")
}

#[allow(clippy::too_many_arguments)]
pub async fn serve(app: &Arc<App>, s: &mut ServerSession, ctx: &Ctx, meta: &Meta, blob: &str, spec: &str, fit: Option<&str>) -> Result<(), Reply> {
    let spec = thumb::parse_spec(spec, fit).map_err(Reply::error)?;
    let head_only = s.req_header().method == http::Method::HEAD;
    let if_none_match = super::header(s, "if-none-match").map_err(Reply::error)?.map(str::to_string);
    let etag = spec.etag(&meta.sha256);
    if let Some(inm) = if_none_match.as_deref() {
        if headers::etag_matches(inm, &etag) {
            let h = head(StatusCode::NOT_MODIFIED, meta, &etag, None)?;
            return write(app, s, h, None).await;
        }
    }
    let limits = app.cfg.thumb_limits();
    thumb::check_source(&meta.content_type, meta.size, &limits).map_err(Reply::error)?;

    let (w, h, fit_s) = (spec.width as i32, spec.height as i32, spec.fit.as_str());
    let get: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&meta.id, &w, &h, &fit_s];
    let cached = db::call_binary(&app.requests, &app.timeouts, &ctx.caller(), THUMB_GET, &get, THUMB_RESULT).await.map_err(Reply::error)?;
    if let Some(row) = cached {
        let m: Value = serde_json::from_str(super::col_text(row.first().unwrap_or(&None)).map_err(Reply::error)?)
            .map_err(|_| Reply::error(ApiError::internal()))?;
        let data: Bytes = row.get(1).cloned().flatten().unwrap_or_default();
        let ct = m["thumbnail"]["content_type"].as_str().unwrap_or("application/octet-stream").to_string();
        // The version thumbnail_get saw (it may be newer than file_get's).
        let etag = m["sha256"].as_str().map(|sha| spec.etag(sha)).unwrap_or(etag);
        let hd = head(StatusCode::OK, meta, &etag, Some((&ct, data.len())))?;
        return write(app, s, hd, if head_only { None } else { Some(data) }).await;
    }

    // Not cached: a place in the pool, then the source, piece by piece, pinned to the
    // blob file_get read.
    let size = meta.size as usize;
    let read = || async {
        let mut input = Vec::with_capacity(size);
        while input.len() < size {
            let piece = download::read_piece(app, ctx, blob, input.len() as u64, meta.size).await?;
            // None: overwritten, deleted or revoked since file_get.
            let piece = piece.ok_or_else(gone)?;
            if input.len() + piece.len() > size {
                log::error!("thumbnail of {}: file_read gave more than the file's {} bytes", meta.id, size);
                return Err(ApiError::internal());
            }
            input.extend_from_slice(&piece);
        }
        Ok(input)
    };
    let ct = meta.content_type.clone();
    let made = admitted_make(&app.thumbs, read, move |input| thumb::make(&input, &ct, spec, &limits)).await;
    let (out_type, out) = made.map_err(Reply::error)?;
    let out = Bytes::from(out);

    let put: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [&blob, &w, &h, &fit_s, &out_type, &out.as_ref()];
    // Stored as the proxy's login role (no role switch): baas.thumbnail_put is granted
    // to it alone, so only thumbnails the proxy made are ever served (the source was
    // read as the caller above, under the files' RLS).
    if let Err(e) = db::run_steps(&app.requests, &app.timeouts, &[(THUMB_PUT, &put)], 0).await {
        // The thumbnail is made: the client gets it; the next request makes it again.
        log::warn!("caching a thumbnail of {}: {}: {}", meta.id, e.code, e.message);
    }
    let hd = head(StatusCode::OK, meta, &etag, Some((out_type, out.len())))?;
    write(app, s, hd, if head_only { None } else { Some(out) }).await
}

/// Make a thumbnail of the source `read` gives, in a place of `pool` taken before the
/// source is read: a full pool answers 503 thumbnails_busy without reading a byte, so
/// the sources held in memory are bounded by the pool's workers + queue (review of
/// issue 15, finding 5), not by the transfer caps.
async fn admitted_make<R, Fut, M>(pool: &thumb::ThumbPool, read: R, make: M) -> Result<(&'static str, Vec<u8>), ApiError>
where
    R: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, ApiError>>,
    M: FnOnce(Vec<u8>) -> Result<(&'static str, Vec<u8>), ApiError> + Send + 'static,
{
    let place = pool.admit()?;
    let input = read().await?;
    pool.run(place, move || make(input)).await
}

/// A thumbnail answer's head; `body`: its type and length (none for 304).
fn head(status: StatusCode, meta: &Meta, etag: &str, body: Option<(&str, usize)>) -> Result<ResponseHeader, Reply> {
    let mut h = ResponseHeader::build(status, Some(8)).map_err(|_| Reply::error(ApiError::internal()))?;
    let _ = h.insert_header(header::ETAG, etag);
    if let Some(lm) = meta.updated_at {
        let _ = h.insert_header(header::LAST_MODIFIED, httpdate::fmt_http_date(lm));
    }
    let _ = h.insert_header(header::CACHE_CONTROL, headers::cache_control(meta.public));
    let _ = h.insert_header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some((ct, len)) = body {
        let _ = h.insert_header(header::CONTENT_TYPE, ct);
        let _ = h.insert_header(header::CONTENT_LENGTH, len);
    }
    Ok(h)
}

async fn write(app: &App, s: &mut ServerSession, mut h: ResponseHeader, body: Option<Bytes>) -> Result<(), Reply> {
    app.edge.headers(s.req_header(), &mut h); // (issue 19, edge)
    crate::observe::stamp(&mut h); // (issue 19, observe): X-Request-Id
    if let Err(e) = s.write_response_header(Box::new(h)).await {
        log::debug!("writing a thumbnail's head: {e}");
        s.set_keepalive(None);
        return Ok(());
    }
    let done = match body {
        Some(b) if !b.is_empty() => s.write_response_body(b, true).await.map(|_| ()),
        _ => s.finish_body().await.map(|_| ()),
    };
    if let Err(e) = done {
        log::debug!("writing a thumbnail: {e}");
        s.set_keepalive(None);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn a_full_pool_answers_busy_before_reading_the_source() {
        let pool = thumb::ThumbPool::new(1, 0);
        let taken = pool.admit().unwrap();
        let read_called = AtomicBool::new(false);
        let read = || async {
            read_called.store(true, Ordering::SeqCst);
            Ok(vec![0u8; 32 << 20])
        };
        let e = admitted_make(&pool, read, |_| Ok(("image/png", Vec::new()))).await.unwrap_err();
        assert_eq!((e.status, e.code.as_str(), e.retry_after), (StatusCode::SERVICE_UNAVAILABLE, "thumbnails_busy", Some(1)));
        assert!(!read_called.load(Ordering::SeqCst), "the source was read although the pool was full");
        // With the place free again: read, then made.
        drop(taken);
        let read = || async {
            read_called.store(true, Ordering::SeqCst);
            Ok(b"src".to_vec())
        };
        let out = admitted_make(&pool, read, |input| Ok(("image/png", input))).await.unwrap();
        assert_eq!(out, ("image/png", b"src".to_vec()));
        assert!(read_called.load(Ordering::SeqCst));
        // The place is given back once the thumbnail is made.
        assert!(pool.admit().is_ok());
    }
}
