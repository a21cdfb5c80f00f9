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

/// One claim of the caller's token as text: exactly
/// `nullif(current_setting('baas.claims', true), '')::jsonb ->> key` (the same
/// jsonb_in and `->>` do the work, so the same values and errors), with the parsed
/// claims kept per backend while the setting's text stays the same. baas.uid(),
/// baas.aal() and baas.is_anonymous() read the claims this way: every row-level
/// policy evaluates them, and parsing the token's ~250 bytes of JSON twice in each
/// of them was ~8 parses, about a tenth of a list request's CPU in Postgres (issue 20).
#[pg_extern(stable, strict, parallel_safe, name = "_claim")]
fn claim(key: &str) -> Option<super::query::RawText> {
    use pgrx::pg_sys;
    thread_local! {
        /// The setting's text and its jsonb, copied into TopMemoryContext.
        static CLAIMS: std::cell::RefCell<Option<(Vec<u8>, pg_sys::Datum)>> = const { std::cell::RefCell::new(None) };
    }
    // SAFETY: GetConfigOption returns the setting's current value (or NULL when it
    // does not exist), valid until the setting changes, which nothing here does.
    let text = unsafe { pg_sys::GetConfigOption(c"baas.claims".as_ptr(), true, false) };
    if text.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated setting value.
    let bytes = unsafe { std::ffi::CStr::from_ptr(text) }.to_bytes();
    if bytes.is_empty() {
        return None;
    }
    let cached = CLAIMS.with(|c| c.borrow().as_ref().filter(|(t, _)| t.as_slice() == bytes).map(|(_, d)| *d));
    let jb = match cached {
        Some(d) => d,
        None => {
            // SAFETY: jsonb_in takes a cstring and raises its own error (22P02) for
            // text that is not JSON, as the cast does; the result is copied into
            // TopMemoryContext, which lives as long as the cache, and the old copy freed.
            unsafe {
                // Raised again as it was (plans::rethrow: no Rust backtrace in its DETAIL).
                let parsed = pgrx::PgTryBuilder::new(|| {
                    pgrx::fcinfo::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(pg_sys::Datum::from(text))])
                })
                .catch_others(super::plans::rethrow)
                .execute()
                .unwrap_or_else(|| pgrx::error!("pgbaas: jsonb_in returned NULL"));
                let p = pg_sys::pg_detoast_datum(parsed.cast_mut_ptr());
                let size = pgrx::varlena::varsize_any(p);
                let kept = pg_sys::MemoryContextAlloc(pg_sys::TopMemoryContext, size);
                std::ptr::copy_nonoverlapping(p as *const u8, kept as *mut u8, size);
                let kept = pg_sys::Datum::from(kept);
                let old = CLAIMS.with(|c| c.borrow_mut().replace((bytes.to_vec(), kept)));
                if let Some((_, d)) = old {
                    pg_sys::pfree(d.cast_mut_ptr());
                }
                kept
            }
        }
    };
    // SAFETY: a jsonb datum and a text key; jsonb_object_field_text returns NULL for
    // a missing key, a JSON null or a claims value that is not an object.
    unsafe {
        let key = pg_sys::cstring_to_text_with_len(key.as_ptr().cast(), key.len() as i32);
        pgrx::fcinfo::direct_function_call_as_datum(pg_sys::jsonb_object_field_text, &[Some(jb), Some(pg_sys::Datum::from(key))])
            .map(super::query::RawText)
    }
}
