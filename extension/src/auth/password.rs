//! Password rules and hashing. argon2id with OWASP's 2023 minimum profile
//! (19 MiB, 2 passes, 1 lane): ~25 ms per hash on this project's 2-core machine, cheap
//! enough for login traffic, expensive enough for offline guessing. Hashes from other
//! backends (bcrypt `$2a$/$2b$/$2y$`, Firebase's scrypt: auth/import.rs) verify too,
//! and are upgraded on the next login.

use crate::error::BaasError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::OnceLock;

pub const MIN_CHARS: usize = 8;
/// Longer passwords are refused before any hashing, so a client cannot make the
/// server hash megabytes.
pub const MAX_BYTES: usize = 1024;

const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

fn argon2() -> Argon2<'static> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).expect("static argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub fn check(password: &str) -> Result<(), BaasError> {
    if password.len() > MAX_BYTES {
        return Err(BaasError::PasswordTooLong { max: MAX_BYTES });
    }
    if password.chars().count() < MIN_CHARS {
        return Err(BaasError::WeakPassword { min: MIN_CHARS });
    }
    Ok(())
}

/// Hash without the minimum-length rule (callers check rules first; re-hashing a
/// migrated account's legacy password on login must not fail on today's rules).
pub fn hash(password: &str) -> Result<String, BaasError> {
    if password.len() > MAX_BYTES {
        return Err(BaasError::PasswordTooLong { max: MAX_BYTES });
    }
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| BaasError::InvalidRequest(format!("cannot hash password: {e}")))
}

/// A hash of a random password, computed once per backend, so that a login for an
/// unknown email costs the same argon2id work as one for a known email.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        argon2()
            .hash_password(b"pgbaas-dummy-password-never-matches", &salt)
            .expect("hashing a constant")
            .to_string()
    })
}

/// Verify `password` against `stored`; with `None`, verify against a dummy hash and
/// return false (constant work for unknown accounts). Over-long input and malformed
/// hashes are a plain `false`: login must not reveal why it failed.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    if password.len() > MAX_BYTES {
        return false;
    }
    let Some(stored) = stored else {
        let _ = verify_argon2(password, dummy_hash());
        return false;
    };
    if is_bcrypt(stored) {
        // The import limits apply at every check too: a hash that got in some other way
        // (an UPDATE by a DBA) must not hold a backend for hours.
        return crate::auth::import::check_bcrypt(stored).is_ok() && bcrypt::verify(password, stored).unwrap_or(false);
    }
    if stored.starts_with(crate::auth::import::FIREBASE_PREFIX) {
        return crate::auth::import::verify_firebase(password, stored);
    }
    verify_argon2(password, stored)
}

fn verify_argon2(password: &str, stored: &str) -> bool {
    if crate::auth::import::check_argon2(stored).is_err() {
        return false;
    }
    match PasswordHash::new(stored) {
        // Verify with the parameters recorded in the hash, not our current ones.
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

/// True when the stored hash is not argon2id with today's parameters.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return true;
    };
    if parsed.algorithm.as_str() != "argon2id" {
        return true;
    }
    let get = |k: &str| parsed.params.get_decimal(k);
    get("m") != Some(M_COST_KIB) || get("t") != Some(T_COST) || get("p") != Some(P_COST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(check("short"), Err(BaasError::WeakPassword { min: 8 }));
        // 8 characters, counted as characters not bytes
        assert!(check("ééééé123").is_ok());
        assert!(check(&"x".repeat(1024)).is_ok());
        assert_eq!(check(&"x".repeat(1025)), Err(BaasError::PasswordTooLong { max: 1024 }));
    }

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery", Some(&h)));
        assert!(!verify("correct horse batterY", Some(&h)));
        assert!(!needs_rehash(&h));
        // same password, different salt
        assert_ne!(h, hash("correct horse battery").unwrap());
    }

    #[test]
    fn unknown_account_and_garbage_hash_fail() {
        assert!(!verify("whatever-password", None));
        assert!(!verify("whatever-password", Some("not a hash")));
        assert!(!verify(&"x".repeat(2000), Some("$argon2id$garbage")));
    }

    #[test]
    fn foreign_bcrypt_hashes_verify_and_need_rehash() {
        let h = bcrypt::hash("migrated-secret", 4).unwrap();
        assert!(verify("migrated-secret", Some(&h)));
        assert!(!verify("migrated-secreT", Some(&h)));
        assert!(needs_rehash(&h));
    }

    #[test]
    fn weaker_argon2_needs_rehash() {
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 1, 1, None).unwrap(),
        );
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let h = weak.hash_password(b"pass-word-1", &salt).unwrap().to_string();
        assert!(verify("pass-word-1", Some(&h)));
        assert!(needs_rehash(&h));
    }
}
