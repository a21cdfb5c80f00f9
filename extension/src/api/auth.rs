use crate::auth::{email, keys, password, tokens, totp};
use crate::error::OrRaise;
use pgrx::prelude::*;
use super::documents::{ops_result, JsonbText};
use super::Json;
use pgrx::JsonB;

/// Validate and lower-case an email address (22023 / invalid_email).
#[pg_extern(immutable, strict, parallel_safe, name = "_normalize_email")]
fn normalize_email(email: &str) -> String {
    email::normalize(email).or_raise("_normalize_email")
}

/// The same normalisation as `_normalize_email`, for looking an account up by the
/// address someone typed: NULL where sign-up would refuse the address, so that the
/// lookup finds no account instead of raising (a failed sign-in must be answered and
/// audited as one). Every lookup by email uses this, never SQL lower(): under the
/// database's C ctype lower() leaves "É" as it is, Rust's Unicode rules make it "é".
///
/// An address an earlier release stored that the rules now refuse (a domain label
/// like `ab--cd`) is looked up as it was stored, so its account can still sign in.
#[pg_extern(immutable, strict, parallel_safe, name = "_email_key")]
fn email_key(email: &str) -> Option<String> {
    email::normalize(email).ok().or_else(|| pgbaas_email::legacy_key(email))
}

/// Check the password rules without hashing (22023 weak_password, 22001 password_too_long).
#[pg_extern(immutable, strict, parallel_safe, name = "_check_password")]
fn check_password(password: &str) {
    password::check(password).or_raise("_check_password")
}

/// argon2id hash in PHC string form. Volatile: every call draws a new salt.
#[pg_extern(volatile, strict, parallel_safe, name = "_hash_password")]
fn hash_password(password: &str) -> String {
    password::hash(password).or_raise("_hash_password")
}

/// Verify a password; a NULL hash verifies against a dummy so unknown accounts cost
/// the same time as known ones.
#[pg_extern(immutable, parallel_safe, name = "_verify_password")]
fn verify_password(password: Option<&str>, hash: Option<&str>) -> bool {
    password::verify(password.unwrap_or(""), hash) && password.is_some()
}

/// The stored form of a password hash imported from another backend (auth/import.rs),
/// or 22023 invalid_hash saying why no verifier here could use it. `firebase`: options'
/// `{signer_key, salt_separator, rounds, mem_cost}` for Firebase's scrypt. Null hash: null.
#[pg_extern(immutable, parallel_safe, name = "_import_hash")]
fn import_hash(hash: Option<&str>, algorithm: Option<&str>, salt: Option<&str>, firebase: Option<pgrx::JsonB>) -> Option<String> {
    let hash = hash?;
    let params = firebase.map(|f| {
        let v = &f.0;
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("");
        let int = |k: &str| v.get(k).and_then(|x| x.as_i64()).unwrap_or(0);
        crate::auth::import::FirebaseParams::parse(text("signer_key"), text("salt_separator"), int("rounds"), int("mem_cost"))
            .or_raise("_import_hash")
    });
    Some(crate::auth::import::stored_hash(hash, algorithm, salt, params.as_ref()).or_raise("_import_hash"))
}

#[pg_extern(immutable, strict, parallel_safe, name = "_password_needs_rehash")]
fn password_needs_rehash(hash: &str) -> bool {
    password::needs_rehash(hash)
}

/// A fresh Ed25519 key: (kid, secret seed, public JWK).
#[pg_extern(volatile, parallel_safe, name = "_generate_signing_key")]
fn generate_signing_key() -> TableIterator<
    'static,
    (
        name!(kid, String),
        name!(secret, Vec<u8>),
        name!(public_jwk, JsonB),
    ),
> {
    let k = keys::generate();
    TableIterator::once((k.kid, k.secret, JsonB(k.public_jwk)))
}

#[pg_extern(immutable, strict, parallel_safe, name = "_sign_jwt")]
fn sign_jwt(kid: &str, secret: &[u8], claims: Json) -> String {
    tokens::sign_jwt(kid, secret, &claims.value("_sign_jwt")).or_raise("_sign_jwt")
}

#[pg_extern(volatile, parallel_safe, name = "_new_refresh_token")]
fn new_refresh_token() -> String {
    tokens::new_refresh_token()
}

#[pg_extern(immutable, strict, parallel_safe, name = "_hash_token")]
fn hash_token(token: &str) -> Vec<u8> {
    tokens::hash_token(token)
}

/// Time-ordered UUID (v7): new rows land at the right edge of the primary key index.
#[pg_extern(volatile, parallel_safe, name = "uuid7")]
fn uuid7() -> pgrx::Uuid {
    pgrx::Uuid::from_bytes(*uuid::Uuid::now_v7().as_bytes())
}

/// RFC 7386 JSON merge patch of `target` by `patch`.
/// Over documents::ops's exact tree: every number keeps its digits (serde_json here
/// would round each one of the document to an f64).
#[pg_extern(immutable, strict, parallel_safe, name = "merge_patch")]
fn merge_patch(target: JsonbText, patch: JsonbText) -> JsonbText {
    ops_result(crate::documents::ops::merge_patch(&target.0, &patch.0, &mut || {
        pgrx::check_for_interrupts!();
    }), "merge_patch")
}

/// RFC 6238 code of `secret` at Unix time `unix` (30-second steps); `algorithm` SHA1,
/// SHA256 or SHA512, 6 to 10 digits (22023 invalid_request otherwise).
#[pg_extern(immutable, strict, parallel_safe, name = "_totp_code")]
fn totp_code(secret: &[u8], algorithm: &str, digits: i32, unix: i64) -> String {
    let alg = totp::Algorithm::parse(algorithm).or_raise("_totp_code");
    let digits = u32::try_from(digits).unwrap_or(0);
    totp::code(secret, alg, digits, unix).or_raise("_totp_code")
}

/// The step among now_step-1..now_step+1, later than after_step, whose 6-digit SHA1
/// code is `code`; NULL when none (a malformed code included: never an error).
#[pg_extern(immutable, strict, parallel_safe, name = "_totp_match")]
fn totp_match(secret: &[u8], code: &str, now_step: i64, after_step: i64) -> Option<i64> {
    totp::matches(secret, code, now_step, after_step)
}

/// The otpauth:// URI an authenticator app scans (as a QR code).
#[pg_extern(immutable, strict, parallel_safe, name = "_totp_uri")]
fn totp_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    totp::uri(secret, issuer, account)
}

/// A new TOTP secret: 20 random bytes.
#[pg_extern(volatile, parallel_safe, name = "_totp_secret")]
fn totp_secret() -> Vec<u8> {
    totp::new_secret()
}

/// Ten new recovery codes, `xxxxx-xxxxx` in Crockford's base32 (50 random bits each).
#[pg_extern(volatile, parallel_safe, name = "_new_recovery_codes")]
fn new_recovery_codes() -> Vec<String> {
    totp::new_recovery_codes()
}
