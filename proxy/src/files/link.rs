//! Signed download links (`?sig=`, `baas.file_link`): an EdDSA token of audience
//! `<audience>:file` bound to one file (`fid`), one version (`ver`) and one user
//! (`sub`, `sid`), living at most 300 s. The download runs as the link's user through
//! `baas.authenticate` like any token, so a revoked grant, a logout or a new version
//! ends the link at its next use (RLS decides, and `file_get` is pinned to `ver`).

use crate::errors::ApiError;
use crate::jwt::{self, KeySet, Verdict};
use crate::server::App;
use serde_json::Value;

/// The longest a link may live (`exp - iat`).
pub const MAX_TTL: i64 = 300;

fn invalid(m: &str) -> ApiError {
    ApiError::coded("invalid_link", m)
}

/// The link's claims JSON (for `baas.authenticate`) and version; None when signed by
/// a key not loaded (yet).
pub fn claims_from_link(keys: &KeySet, token: &str, file_id: &str) -> Result<Option<(String, i64)>, ApiError> {
    let aud = format!("{}:file", keys.audience);
    let claims = match jwt::verify_with_audience(keys, token, &aud) {
        Verdict::Valid(c) => c,
        Verdict::UnknownKey => return Ok(None),
        Verdict::Invalid(e) => return Err(invalid(&format!("the link is not valid: {}", e.message))),
    };
    let fid = claims.get("fid").and_then(Value::as_str).and_then(|f| uuid::Uuid::parse_str(f).ok());
    if fid.is_none() || fid != uuid::Uuid::parse_str(file_id).ok() {
        return Err(invalid("the link is for another file"));
    }
    let (iat, exp) = (claims.get("iat").and_then(Value::as_i64), claims.get("exp").and_then(Value::as_i64));
    if !matches!((iat, exp), (Some(i), Some(e)) if e > i && e - i <= MAX_TTL) {
        return Err(invalid("the link's lifetime is not accepted"));
    }
    let ver = claims.get("ver").and_then(Value::as_i64).filter(|v| *v >= 1).ok_or_else(|| invalid("the link names no version"))?;
    if !matches!(claims.get("role").and_then(Value::as_str), Some("baas_user" | "baas_service"))
        || claims.get("sub").and_then(Value::as_str).is_none()
        || claims.get("sid").and_then(Value::as_str).is_none()
    {
        return Err(invalid("the link's claims are not accepted"));
    }
    Ok(Some((Value::Object(claims).to_string(), ver)))
}

/// `claims_from_link`, reloading the keys once for an unknown kid (as for tokens), and
/// refusing a link whose session is known to have ended.
pub async fn check(app: &App, token: &str, file_id: &str) -> Result<(String, i64), ApiError> {
    let found = match claims_from_link(&app.keys.get(), token, file_id)? {
        Some(f) => f,
        None => {
            let kid = jwt::kid_of(token).map_err(|_| invalid("the link is not valid"))?;
            app.keys
                .reload_for_kid(&kid, || async {
                    if let Err(e) = crate::keys::reload_keys(&app.pool, &app.keys, Some(std::time::Duration::ZERO)).await {
                        log::warn!("reloading signing keys: {}", e.message);
                    }
                })
                .await;
            claims_from_link(&app.keys.get(), token, file_id)?.ok_or_else(|| invalid("the link is signed by an unknown key"))?
        }
    };
    let sid = serde_json::from_str::<Value>(&found.0).ok().and_then(|v| v["sid"].as_str().map(str::to_string)).unwrap_or_default();
    if app.keys.is_session_ended(&sid) {
        return Err(invalid("the session of this link has ended"));
    }
    Ok(found)
}
