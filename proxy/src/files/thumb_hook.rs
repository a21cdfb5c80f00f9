//! HOOK for package C's thumbnails (files/thumb.rs: `parse_spec`, `make`, `ThumbPool`).
//! The download path calls `serve` for `?thumb=WxH[&fit=contain|cover]` after
//! `file_get` has checked the caller may read the file; until thumb.rs is wired in
//! here (at merge), thumbnails answer 501 not_implemented.

use super::download::Meta;
use super::Ctx;
use crate::errors::ApiError;
use crate::server::{App, Reply};
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

#[allow(clippy::too_many_arguments)]
pub async fn serve(_app: &Arc<App>, _s: &mut ServerSession, _ctx: &Ctx, _meta: &Meta, _blob: &str, _spec: &str, _fit: Option<&str>) -> Result<(), Reply> {
    Err(Reply::error(ApiError::coded("not_implemented", "thumbnails are not available in this build")))
}
