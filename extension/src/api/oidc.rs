//! The SQL face of the ID token checks (extension/src/oidc/verify.rs): sql/oidc.sql
//! verifies every ID token with `_oidc_verify` and stores only key sets
//! `_oidc_check_jwks` kept.
use super::Json;
use crate::error::{BaasError, OrRaise};
use crate::oidc::verify::{self, Expect, VerifyError};
use pgrx::prelude::*;
use pgrx::JsonB;

impl From<VerifyError> for BaasError {
    fn from(e: VerifyError) -> BaasError {
        match e {
            VerifyError::Invalid(m) => BaasError::InvalidIdToken(m),
            VerifyError::KeysStale(m) => BaasError::OidcKeysStale(m),
        }
    }
}

/// The claims of `id_token` when its signature verifies with a key of `jwks` and its
/// iss, aud (azp), exp, iat (≥ now − max_age), nbf and sub pass at unix time `now`;
/// 28000 invalid_id_token naming the failed check, or 55000 oidc_keys_stale when it
/// names a key the set lacks.
#[pg_extern(immutable, strict, parallel_safe, name = "_oidc_verify")]
fn oidc_verify(
    id_token: &str,
    jwks: Json,
    issuers: Vec<Option<String>>,
    client_ids: Vec<Option<String>>,
    max_age: i32,
    now: i64,
) -> JsonB {
    let jwks = jwks.value("_oidc_verify");
    let issuers: Vec<String> = issuers.into_iter().flatten().collect();
    let client_ids: Vec<String> = client_ids.into_iter().flatten().collect();
    let expect = Expect { issuers: &issuers, client_ids: &client_ids, max_age: max_age as i64, now };
    let claims = verify::verify(id_token, &jwks, &expect).or_raise("_oidc_verify");
    JsonB(serde_json::Value::Object(claims))
}

/// The usable signature keys of a JWKS document, or 22023 invalid_jwks.
#[pg_extern(immutable, strict, parallel_safe, name = "_oidc_check_jwks")]
fn oidc_check_jwks(jwks: Json) -> JsonB {
    let jwks = jwks.value("_oidc_check_jwks");
    JsonB(verify::check_jwks(&jwks).map_err(BaasError::InvalidJwks).or_raise("_oidc_check_jwks"))
}
