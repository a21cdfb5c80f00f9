//! Files (issue 15; docs/files.md): uploads, downloads and tus resumable uploads,
//! streamed between the client and Postgres one piece (≤ PIECE) at a time.
//!
//! Each piece is its own short transaction (`baas.authenticate` and one call, one
//! Sync, db::call_binary): no transaction or connection is held for a transfer's
//! length, and the proxy never holds more than two pieces of an upload, four of a
//! download (the one being written and the reads ahead, download.rs). Every
//! permission decision is Postgres's (RLS on `_blobs`/`_file_chunks`, the upload
//! functions); this module moves bytes, checks syntax and limits, and writes headers.

pub mod body;
pub mod cleanup;
pub mod download;
pub mod headers;
pub mod link;
pub mod multipart;
pub mod params;
pub mod range;
pub mod sql;
pub mod thumb_hook;
pub mod thumb;
pub mod tus;
pub mod upload;

use crate::db;
use crate::errors::ApiError;
use crate::ratelimit::{self, InFlight, Permit};
use crate::router::{Params, Route, RouteKind};
use crate::server::{App, Reply};
use bytes::Bytes;
use pingora::protocols::http::ServerSession;
use serde_json::Value;
use std::sync::Arc;

/// One piece: the most a transfer reads from the client or the database at once.
pub const PIECE: usize = 1 << 20;

/// A piece's result bound for call_binary: the piece and its row's framing.
pub const PIECE_RESULT: usize = PIECE + (64 << 10);

/// The bound of a call that returns a file's JSON (which holds its `data`, as large as
/// a document's) and maybe a piece: file_get, upload_finish/upload_file, file_meta.
/// `max_result_bytes` is what a document answer may be, so any file a caller can
/// PATCH is still downloadable.
pub fn meta_result(app: &App) -> usize {
    PIECE_RESULT.saturating_add(app.cfg.max_result_bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    Upload,
    Replace,
    Download,
    TusOptions,
    TusCreate,
    TusHead,
    TusPatch,
    TusDelete,
}

/// Caps on transfers in flight: per client address, per signed-in user, in all.
pub struct Transfers {
    pub per_ip: InFlight,
    pub per_user: InFlight,
    pub total: InFlight,
}

/// Held for a transfer's length; dropping it frees its places.
pub struct TransferSlot {
    _ip: Option<Permit>,
    _user: Option<Permit>,
    _total: Option<Permit>,
}

impl Transfers {
    /// Service tokens are the operator's own backends: not capped per address or user.
    pub fn admit(&self, ip_key: &str, user: Option<&str>, service: bool) -> Result<TransferSlot, ApiError> {
        let busy = |why: String| {
            let mut e = ApiError::coded("too_many_transfers", format!("{why}; wait for one to finish (retry in 1 s)"));
            e.retry_after = Some(1);
            e
        };
        let total = self.total.try_acquire("all").map_err(|_| busy(format!("the server already runs {} transfers", self.total.max())))?;
        if service {
            return Ok(TransferSlot { _ip: None, _user: None, _total: Some(total) });
        }
        let ip = self.per_ip.try_acquire(ip_key).map_err(|_| busy(format!("this client address already has {} transfers running", self.per_ip.max())))?;
        let user = match user {
            Some(u) => Some(
                self.per_user
                    .try_acquire(&format!("user:{u}"))
                    .map_err(|_| busy(format!("this user already has {} transfers running", self.per_user.max())))?,
            ),
            None => None,
        };
        Ok(TransferSlot { _ip: Some(ip), _user: user, _total: Some(total) })
    }
}

/// Who a file request runs as, checked before any body byte or database call.
#[derive(Clone)]
pub struct Ctx {
    pub client_ip: String,
    pub ip_key: String,
    /// Verified claims JSON for `baas.authenticate`; None: anonymous.
    pub claims: Option<String>,
    pub subject: Option<String>,
    pub service: bool,
}

impl Ctx {
    pub fn caller(&self) -> db::Caller<'_> {
        // statement_timeout for everyone: each call reads or writes one piece (or
        // finishes an upload), a cost the client does not choose with a filter.
        db::Caller { claims: self.claims.as_deref(), client_ip: &self.client_ip, user_agent: "", short_timeout: false }
    }

    /// Run as other verified claims (a signed link's user).
    pub fn set_claims(&mut self, claims: Option<String>) {
        let c = Ctx::from_claims(claims, std::mem::take(&mut self.client_ip), std::mem::take(&mut self.ip_key));
        *self = c;
    }

    fn from_claims(claims: Option<String>, client_ip: String, ip_key: String) -> Ctx {
        let v = claims.as_deref().and_then(|c| serde_json::from_str::<Value>(c).ok());
        let subject = v.as_ref().and_then(|v| v["sub"].as_str()).map(str::to_string);
        let service = v.as_ref().and_then(|v| v["role"].as_str()) == Some("baas_service");
        Ctx { client_ip, ip_key, claims, subject, service }
    }
}

/// The per-IP request limit and the token (Authorization only); the caller decides
/// about `?sig=` (downloads).
pub(crate) async fn checked(app: &App, s: &ServerSession, token: Option<String>) -> Result<Ctx, ApiError> {
    let (client_ip, ip_key) = app.client(s);
    app.limiter.check(ratelimit::Kind::Request, &ip_key).map_err(ApiError::rate_limited)?;
    let claims = match token {
        Some(t) => Some(app.verify_token(&t).await?),
        None => None,
    };
    Ok(Ctx::from_claims(claims, client_ip, ip_key))
}

/// A file route: Ok when the whole answer was written here, Err(reply) for the server
/// to write (always before any byte of an answer).
pub async fn serve(app: &Arc<App>, s: &mut ServerSession, route: &'static Route, params: Params<'_>) -> Result<(), Reply> {
    let RouteKind::File(op) = route.kind else {
        return Err(Reply::error(ApiError::internal()));
    };
    let tus_op = matches!(op, FileOp::TusOptions | FileOp::TusCreate | FileOp::TusHead | FileOp::TusPatch | FileOp::TusDelete);
    let mut r = match op {
        FileOp::Download => download::serve(app, s, params).await,
        FileOp::Upload | FileOp::Replace => upload::serve(app, s, op, params).await,
        _ => tus::serve(app, s, op, params).await,
    };
    // (issue 19, replicas) a write's commit position, as the route table's writes answer it.
    if let Err(reply) = &mut r {
        let write = !matches!(op, FileOp::Download | FileOp::TusOptions | FileOp::TusHead);
        if write && reply.status.is_success() && !app.replicas.is_empty() {
            if let Some(lsn) = app.replicas.commit_lsn(&app.requests, &app.timeouts).await {
                reply.headers.push((crate::replicas::COMMIT_LSN_HEADER, lsn));
            }
        }
    }
    r.map_err(|mut reply| {
        if tus_op {
            reply.headers.push(("tus-resumable", "1.0.0".into()));
        }
        reply
    })
}

/// A header's value as text; present but not visible ASCII: 400.
pub fn header<'a>(s: &'a ServerSession, name: &str) -> Result<Option<&'a str>, ApiError> {
    match s.req_header().headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| ApiError::bad_request("invalid_request", format!("the {name} header is malformed"))),
    }
}

/// Content-Length as sent; malformed: 400.
pub fn content_length(s: &ServerSession) -> Result<Option<u64>, ApiError> {
    match header(s, "content-length")? {
        None => Ok(None),
        Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| ApiError::bad_request("invalid_request", "Content-Length is not a number")),
    }
}

/// `Expect: 100-continue` asked for: answer it now that every check before the body
/// has passed (pingora does not on its own).
pub async fn continue_if_expected(s: &mut ServerSession) {
    let expects = s.req_header().headers.get(http::header::EXPECT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    if expects {
        // pingora turns keep-alive off when it writes a head before the body is read
        // (a 100 too); whether the connection is kept is decided when the answer is
        // written, after the body (server.rs respond/finish_streamed).
        let keep = s.get_keepalive();
        if let Err(e) = s.write_continue_response().await {
            log::debug!("writing 100 Continue: {e}");
            return;
        }
        s.set_keepalive(keep);
    }
}

/// Decoders of binary result columns (db::call_binary).
pub fn col_text(c: &Option<Bytes>) -> Result<&str, ApiError> {
    let b = c.as_ref().ok_or_else(|| bad_result("a text column is NULL"))?;
    std::str::from_utf8(b).map_err(|_| bad_result("a text column is not UTF-8"))
}

pub fn col_uuid(c: &Option<Bytes>) -> Result<uuid::Uuid, ApiError> {
    let b = c.as_ref().ok_or_else(|| bad_result("a uuid column is NULL"))?;
    uuid::Uuid::from_slice(b).map_err(|_| bad_result("a uuid column is not 16 bytes"))
}

pub fn col_i64(c: &Option<Bytes>) -> Result<i64, ApiError> {
    let b = c.as_ref().ok_or_else(|| bad_result("a bigint column is NULL"))?;
    let a: [u8; 8] = b.as_ref().try_into().map_err(|_| bad_result("a bigint column is not 8 bytes"))?;
    Ok(i64::from_be_bytes(a))
}

/// A jsonb column in binary: a version byte (1) and the JSON text.
pub fn col_jsonb(c: &Option<Bytes>) -> Result<Value, ApiError> {
    let b = c.as_ref().ok_or_else(|| bad_result("a jsonb column is NULL"))?;
    let text = b.strip_prefix(&[1u8]).ok_or_else(|| bad_result("a jsonb column has an unknown version"))?;
    serde_json::from_slice(text).map_err(|_| bad_result("a jsonb column is not JSON"))
}

fn bad_result(what: &str) -> ApiError {
    log::error!("file call: {what}");
    ApiError::internal()
}

/// Run a statement returning one jsonb column (text form) as `ctx`.
pub async fn call_json(app: &App, ctx: &Ctx, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<Value, ApiError> {
    let row = db::call_binary(&app.requests, &app.timeouts, &ctx.caller(), sql, params, meta_result(app)).await?;
    let row = row.ok_or_else(|| bad_result("no row"))?;
    col_jsonb(row.first().ok_or_else(|| bad_result("no column"))?)
}

/// Postgres's JSON timestamps (`2026-12-02T11:26:27.123456+00:00`) as a SystemTime,
/// whole seconds (HTTP dates have no fraction).
pub fn parse_timestamp(s: &str) -> Option<std::time::SystemTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        r => {
            let sign = match r.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = &r[1..];
            let (oh, om) = match r.split_once(':') {
                Some((h, m)) => (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?),
                None if r.len() == 2 => (r.parse::<i64>().ok()?, 0),
                None if r.len() == 4 => (r[..2].parse::<i64>().ok()?, r[2..].parse::<i64>().ok()?),
                None => return None,
            };
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(secs).ok().map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
}

/// The `{id}` of /v1/files/{id}, a uuid (400 otherwise, as for document routes).
pub fn file_id(params: &Params<'_>) -> Result<String, ApiError> {
    let raw = params.get(0)?;
    uuid::Uuid::parse_str(&raw)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::bad_request("invalid_request", format!("id must be a uuid, got {raw:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_from_postgres_json() {
        let t = |s: &str| parse_timestamp(s).map(httpdate::fmt_http_date);
        assert_eq!(t("2015-10-21T07:28:00+00:00").as_deref(), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(t("2015-10-21T09:28:00.123456+02:00").as_deref(), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(t("2024-02-29T23:59:59Z").as_deref(), Some("Thu, 29 Feb 2024 23:59:59 GMT"));
        assert_eq!(t("2015-10-21 07:28:00.5-0130").as_deref(), Some("Wed, 21 Oct 2015 08:58:00 GMT"));
        assert_eq!(t("junk"), None);
    }

    #[test]
    fn transfers_are_capped_per_address_user_and_in_all() {
        let t = Transfers { per_ip: InFlight::new(2, 100), per_user: InFlight::new(1, 100), total: InFlight::new(3, 100) };
        let a = t.admit("ip1", Some("u1"), false).unwrap();
        let e = t.admit("ip2", Some("u1"), false).err().unwrap();
        assert_eq!((e.status.as_u16(), e.code.as_str(), e.retry_after), (429, "too_many_transfers", Some(1)));
        let b = t.admit("ip1", None, false).unwrap();
        assert!(t.admit("ip1", None, false).is_err(), "two per address");
        let c = t.admit("ip9", None, true).unwrap();
        assert!(t.admit("ip8", None, true).is_err(), "three in all, service tokens too");
        drop((a, b, c));
        assert!(t.admit("ip1", Some("u1"), false).is_ok());
    }
}
