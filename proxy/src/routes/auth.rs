//! /v1/auth/*: validate the JSON body's shape, then call the one SQL function.

use crate::db::{self, Returns};
use crate::errors::ApiError;
use crate::routes::{json_out, object_field, parse_object, string_field};
use crate::ratelimit::{self, Kind};
use crate::server::{Ctx, Reply};
use http::StatusCode;
use serde_json::{Map, Value};

/// Auth responses carry tokens or account data: never cached.
fn json(status: StatusCode, out: Option<db::Out>) -> Result<Reply, ApiError> {
    json_out(status, out).map(Reply::no_store)
}

pub async fn signup(ctx: &Ctx<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let m = parse_object(body)?;
    let email = string_field(&m, "email", true)?;
    let password = string_field(&m, "password", true)?;
    let data = object_field(&m, "data")?.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(e) = &email {
        ctx.limit(Kind::Account, &ratelimit::account_key("signup", e))?;
    }
    let out = db::call(ctx, "select x::text from baas.signup($1, $2, $3) x", &[&email, &password, &data], Returns::Json).await?;
    json(StatusCode::CREATED, out)
}

pub async fn login(ctx: &Ctx<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let m = parse_object(body)?;
    let email = string_field(&m, "email", true)?;
    let password = string_field(&m, "password", true)?;
    if let Some(e) = &email {
        ctx.limit(Kind::Account, &ratelimit::account_key("email", e))?;
    }
    let out = db::call(
        ctx,
        "select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message' from baas.login($1, $2) x",
        &[&email, &password],
        Returns::Json,
    )
    .await?;
    // A failed login is a result, so that its audit entry and lockout count commit.
    error_result(&out, "invalid email or password")?;
    json(StatusCode::OK, out)
}

/// `{"error": {"code", "message"}}` returned (not raised) by a SQL function -> 401.
fn error_result(out: &Option<db::Out>, fallback: &str) -> Result<(), ApiError> {
    if let Some(db::Out { extra, .. }) = out {
        if let Some(Some(code)) = extra.first() {
            let message = extra.get(1).cloned().flatten().unwrap_or_else(|| fallback.into());
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, code, message));
        }
    }
    Ok(())
}

pub async fn refresh(ctx: &Ctx<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let m = parse_object(body)?;
    let token = string_field(&m, "refresh_token", true)?;
    if let Some(t) = &token {
        // Per session family: a stolen refresh token replayed in a loop is slowed down
        // before it reaches the database.
        ctx.limit(Kind::Account, &ratelimit::account_key("refresh", t))?;
    }
    let out = db::call(
        ctx,
        "select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message' from baas.refresh($1) x",
        &[&token],
        Returns::Json,
    )
    .await?;
    // baas.refresh reports a detected reuse as a result so its revocation commits.
    error_result(&out, "refresh token is not valid")?;
    json(StatusCode::OK, out)
}

pub async fn logout(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    db::call(ctx, "select baas.logout()", &[], Returns::Void).await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

pub async fn get_user(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    let out = db::call(ctx, "select x::text from baas.get_user() x", &[], Returns::Json).await?;
    json(StatusCode::OK, out)
}

pub async fn update_user(ctx: &Ctx<'_>, body: &[u8]) -> Result<Reply, ApiError> {
    let m = parse_object(body)?;
    let data = object_field(&m, "data")?;
    let password = string_field(&m, "password", false)?;
    let current = string_field(&m, "current_password", false)?;
    if data.is_none() && password.is_none() {
        return Err(ApiError::bad_request("invalid_request", "nothing to update: send data and/or password"));
    }
    if password.is_some() {
        // Password changes check the current password: limited like logins.
        ctx.limit(Kind::Auth, ctx.ip_key)?;
        let sub = ctx.claims.and_then(|c| serde_json::from_str::<Value>(c).ok()).and_then(|c| c["sub"].as_str().map(str::to_string));
        ctx.limit(Kind::Account, &ratelimit::account_key("user", &sub.unwrap_or_default()))?;
    }
    let out = db::call(
        ctx,
        "select x::text, x -> 'error' ->> 'code', x -> 'error' ->> 'message' from baas.update_user($1, $2, $3) x",
        &[&data, &password, &current],
        Returns::Json,
    )
    .await?;
    // A wrong current password is a result, so that it counts towards lockout.
    error_result(&out, "current password is wrong")?;
    json(StatusCode::OK, out)
}

pub async fn delete_user(ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
    db::call(ctx, "select baas.delete_user()", &[], Returns::Void).await?;
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_must_be_an_object() {
        for bad in [&b""[..], b"   ", b"[]", b"\"x\"", b"{", b"null", b"\xff\xfe"] {
            let e = parse_object(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(e.code, "invalid_json");
        }
        assert!(parse_object(b"{\"a\":1}").is_ok());
    }

    #[test]
    fn field_types_are_checked() {
        let m = parse_object(br#"{"email": 5, "data": [1]}"#).unwrap();
        assert!(string_field(&m, "email", true).unwrap_err().message.contains("must be a string"));
        assert!(string_field(&m, "password", true).unwrap_err().message.contains("required"));
        assert_eq!(string_field(&m, "password", false).unwrap(), None);
        assert!(object_field(&m, "data").is_err());
    }
}
