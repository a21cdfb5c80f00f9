//! Password hashes imported from other backends (baas.import_users): checked once at
//! import, so that a hash no verifier can use is refused with its row number instead of
//! locking its user out at the first sign-in; verified at sign-in by password::verify;
//! replaced by argon2id on the first successful login (password::needs_rehash).
//!
//! - bcrypt `$2a$ $2b$ $2x$ $2y$` (Parse Server, Supabase/GoTrue, PocketBase, PHP) as is.
//! - argon2 PHC strings as is.
//! - Firebase Auth's modified scrypt, stored self-contained with the project's key
//!   parameters: `$firebase-scrypt$r=<rounds>,m=<mem_cost>$<separator>$<signer key>$<salt>$<hash>`
//!   (standard padded base64, as Firebase's console and `auth:export` show them). The
//!   algorithm (github.com/firebase/scrypt): dk = scrypt(password, salt ‖ separator,
//!   N = 2^mem_cost, r = rounds, p = 1, 64 bytes); the hash is the signer key encrypted
//!   with AES-256-CTR under dk[..32] and a zero counter block.

use crate::error::BaasError;
use aes::cipher::{KeyIvInit, StreamCipher};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use subtle::ConstantTimeEq;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

pub const FIREBASE_PREFIX: &str = "$firebase-scrypt$";
/// scrypt needs 128·r·N bytes: at most 64 MiB per sign-in, in the Postgres backend doing it (Firebase's default, r 8 and
/// mem_cost 14, takes 16 MiB).
const MAX_SCRYPT_BYTES: u64 = 64 << 20;

/// Firebase's project-wide parameters (console: Authentication → Users → ⋮ → Password hash parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirebaseParams {
    pub signer_key: Vec<u8>,
    pub salt_separator: Vec<u8>,
    pub rounds: u32,
    pub mem_cost: u32,
}

fn b64(what: &str, s: &str) -> Result<Vec<u8>, BaasError> {
    STANDARD
        .decode(s.trim())
        .map_err(|_| BaasError::InvalidHash(format!("{what} is not standard base64")))
}

impl FirebaseParams {
    pub fn parse(signer_key: &str, salt_separator: &str, rounds: i64, mem_cost: i64) -> Result<FirebaseParams, BaasError> {
        if !(1..=16).contains(&rounds) || !(1..=16).contains(&mem_cost) {
            return Err(BaasError::InvalidHash("firebase rounds and mem_cost must be between 1 and 16".into()));
        }
        if 128 * (rounds as u64) << mem_cost > MAX_SCRYPT_BYTES {
            return Err(BaasError::InvalidHash("firebase rounds and mem_cost need more than 64 MiB per sign-in".into()));
        }
        // scrypt itself refuses N ≥ 2^(16·r) (e.g. rounds 1, mem_cost 16).
        if scrypt::Params::new(mem_cost as u8, rounds as u32, 1, 64).is_err() {
            return Err(BaasError::InvalidHash("firebase rounds and mem_cost are not valid scrypt parameters".into()));
        }
        let signer_key = b64("firebase signer_key", signer_key)?;
        if signer_key.is_empty() || signer_key.len() > 1024 {
            return Err(BaasError::InvalidHash("firebase signer_key must be 1 to 1024 bytes".into()));
        }
        let salt_separator = b64("firebase salt_separator", salt_separator)?;
        if salt_separator.len() > 64 {
            return Err(BaasError::InvalidHash("firebase salt_separator must be at most 64 bytes".into()));
        }
        Ok(FirebaseParams { signer_key, salt_separator, rounds: rounds as u32, mem_cost: mem_cost as u32 })
    }
}

/// bcrypt costs above this are refused at import and fail at sign-in: one cost-14 check
/// is 16× Parse's and Supabase's cost 10 (~0.4 s here), cost 31 would hold a backend
/// for a day without answering a cancel. Exports in the wild use 10 to 12.
pub const MAX_BCRYPT_COST: u32 = 14;
/// argon2 limits, for the same reason: memory as scrypt's cap, passes and lanes well above
/// every library default (pgbaas writes m 19 MiB, t 2, p 1).
pub const MAX_ARGON2_M_KIB: u32 = 64 * 1024;
pub const MAX_ARGON2_T: u32 = 10;
pub const MAX_ARGON2_P: u32 = 16;

/// A bcrypt hash this module can verify: ASCII, 60 characters, `$2a$ $2b$ $2y$`, cost 04
/// to MAX_BCRYPT_COST. `$2x$` (crypt_blowfish's marker for its old 8-bit bug) is refused:
/// the bcrypt crate runs the correct algorithm, so such users would never sign in.
pub fn check_bcrypt(hash: &str) -> Result<(), BaasError> {
    let b = hash.as_bytes();
    let ok = b.len() == 60
        && hash.is_ascii()
        && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
        && hash[4..6].parse::<u32>().is_ok_and(|c| (4..=MAX_BCRYPT_COST).contains(&c))
        && b[6] == b'$'
        && b[7..].iter().all(|&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'/');
    if ok {
        Ok(())
    } else {
        Err(BaasError::InvalidHash(format!(
            "not a usable bcrypt hash ($2a$/$2b$/$2y$, cost 04-{MAX_BCRYPT_COST}, 60 characters)"
        )))
    }
}

/// An argon2 PHC string this module can verify with no secret, within the limits above:
/// algorithm argon2id/argon2i/argon2d, explicit `v=16` or `v=19` (libargon2 reads a missing
/// `v=` as 16, the Rust crate as 19), no `keyid` (made with a server secret), a salt of
/// at least 8 bytes and parameters argon2 accepts (m ≥ 8·p).
pub fn check_argon2(hash: &str) -> Result<(), BaasError> {
    let bad = |why: &str| Err(BaasError::InvalidHash(format!("not a usable argon2 hash: {why}")));
    let Ok(p) = argon2::password_hash::PasswordHash::new(hash) else {
        return bad("not a PHC string ($argon2id$v=19$m=…,t=…,p=…$salt$hash)");
    };
    if !["argon2id", "argon2i", "argon2d"].contains(&p.algorithm.as_str()) || p.hash.is_none() {
        return bad("not argon2id, argon2i or argon2d with a hash");
    }
    if !matches!(p.version, Some(0x10) | Some(0x13)) {
        return bad("v=16 or v=19 must be written out");
    }
    if p.params.get("keyid").is_some() {
        return bad("made with a secret key (keyid)");
    }
    let Ok(params) = argon2::Params::try_from(&p) else {
        return bad("parameters out of range");
    };
    if params.m_cost() > MAX_ARGON2_M_KIB || params.t_cost() > MAX_ARGON2_T || params.p_cost() > MAX_ARGON2_P {
        return bad(&format!("more than m={MAX_ARGON2_M_KIB}, t={MAX_ARGON2_T}, p={MAX_ARGON2_P}"));
    }
    let mut buf = [0u8; 64];
    match p.salt.map(|s| s.decode_b64(&mut buf).map(|b| b.len())) {
        Some(Ok(n)) if n >= argon2::MIN_SALT_LEN => Ok(()),
        _ => bad("the salt must be 8 to 64 bytes"),
    }
}

/// The stored form of one imported hash, or why it cannot be used. `algorithm`: bcrypt,
/// argon2 or firebase_scrypt (null: told from the hash's prefix); `salt`: Firebase's
/// per-user salt.
pub fn stored_hash(hash: &str, algorithm: Option<&str>, salt: Option<&str>, firebase: Option<&FirebaseParams>) -> Result<String, BaasError> {
    let hash = hash.trim();
    let algorithm = match algorithm {
        Some(a) => a,
        None if hash.starts_with("$2") => "bcrypt",
        None if hash.starts_with("$argon2") => "argon2",
        None => return Err(BaasError::InvalidHash("hash_algorithm is needed: the hash is neither bcrypt nor argon2 (Supabase's $fbscrypt$ form: pass Firebase's hash, salt and parameters instead)".into())),
    };
    match algorithm {
        "bcrypt" => check_bcrypt(hash).map(|()| hash.to_string()),
        "argon2" => check_argon2(hash).map(|()| hash.to_string()),
        "firebase_scrypt" => {
            let Some(f) = firebase else {
                return Err(BaasError::InvalidHash("firebase_scrypt hashes need options.firebase (signer_key, salt_separator, rounds, mem_cost)".into()));
            };
            let Some(salt) = salt else {
                return Err(BaasError::InvalidHash("firebase_scrypt hashes need the user's salt".into()));
            };
            let salt = b64("salt", salt)?;
            let h = b64("password_hash", hash)?;
            if salt.is_empty() || salt.len() > 1024 || h.len() != f.signer_key.len() {
                return Err(BaasError::InvalidHash("a firebase_scrypt hash is the signer key's length, with a salt of 1 to 1024 bytes".into()));
            }
            Ok(format!(
                "{FIREBASE_PREFIX}r={},m={}${}${}${}${}",
                f.rounds,
                f.mem_cost,
                STANDARD.encode(&f.salt_separator),
                STANDARD.encode(&f.signer_key),
                STANDARD.encode(&salt),
                STANDARD.encode(&h)
            ))
        }
        other => Err(BaasError::InvalidHash(format!("unknown hash_algorithm {other:?}: use bcrypt, argon2 or firebase_scrypt"))),
    }
}

/// Verify `password` against a stored `$firebase-scrypt$` string; anything malformed is
/// a plain false (sign-in must not tell why it failed).
pub fn verify_firebase(password: &str, stored: &str) -> bool {
    let Some(rest) = stored.strip_prefix(FIREBASE_PREFIX) else { return false };
    let parts: Vec<&str> = rest.split('$').collect();
    let [params, sep, key, salt, hash] = parts[..] else { return false };
    let mut rounds = None;
    let mut mem_cost = None;
    for kv in params.split(',') {
        match kv.split_once('=') {
            Some(("r", v)) => rounds = v.parse::<i64>().ok(),
            Some(("m", v)) => mem_cost = v.parse::<i64>().ok(),
            _ => return false,
        }
    }
    let (Some(rounds), Some(mem_cost)) = (rounds, mem_cost) else { return false };
    let Ok(f) = FirebaseParams::parse(key, sep, rounds, mem_cost) else { return false };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else { return false };
    let Ok(params) = scrypt::Params::new(f.mem_cost as u8, f.rounds, 1, 64) else { return false };
    let mut salted = salt;
    salted.extend_from_slice(&f.salt_separator);
    let mut dk = [0u8; 64];
    if scrypt::scrypt(password.as_bytes(), &salted, &params, &mut dk).is_err() {
        return false;
    }
    let mut out = f.signer_key.clone();
    let mut cipher = Aes256Ctr::new((&dk[..32]).into(), (&[0u8; 16]).into());
    cipher.apply_keystream(&mut out);
    out.len() == hash.len() && bool::from(out.ct_eq(&hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    // github.com/firebase/scrypt README: the project's parameters and one user.
    const SIGNER_KEY: &str = "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==";
    const SEPARATOR: &str = "Bw==";
    const SALT: &str = "42xEC+ixf3L2lw==";
    const HASH: &str = "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==";

    fn params() -> FirebaseParams {
        FirebaseParams::parse(SIGNER_KEY, SEPARATOR, 8, 14).unwrap()
    }

    #[test]
    fn firebase_reference_vector_verifies() {
        let stored = stored_hash(HASH, Some("firebase_scrypt"), Some(SALT), Some(&params())).unwrap();
        assert!(stored.starts_with("$firebase-scrypt$r=8,m=14$Bw==$"), "{stored}");
        assert!(verify_firebase("user1password", &stored));
        assert!(!verify_firebase("user1passwordX", &stored));
        assert!(!verify_firebase("", &stored));
    }

    #[test]
    fn firebase_refuses_what_it_cannot_use() {
        let p = params();
        assert!(stored_hash(HASH, Some("firebase_scrypt"), None, Some(&p)).is_err(), "no salt");
        assert!(stored_hash(HASH, Some("firebase_scrypt"), Some(SALT), None).is_err(), "no parameters");
        assert!(stored_hash("not*base64", Some("firebase_scrypt"), Some(SALT), Some(&p)).is_err());
        assert!(stored_hash("AAAA", Some("firebase_scrypt"), Some(SALT), Some(&p)).is_err(), "wrong length");
        assert!(FirebaseParams::parse(SIGNER_KEY, SEPARATOR, 8, 17).is_err());
        assert!(FirebaseParams::parse(SIGNER_KEY, SEPARATOR, 16, 16).is_err(), "128 MiB");
        assert!(FirebaseParams::parse("%%", SEPARATOR, 8, 14).is_err());
        // Within the memory cap, but scrypt refuses N ≥ 2^(16·r): it could never verify.
        assert!(FirebaseParams::parse(SIGNER_KEY, SEPARATOR, 1, 16).is_err());
        // A damaged stored string is a plain mismatch.
        let stored = stored_hash(HASH, Some("firebase_scrypt"), Some(SALT), Some(&p)).unwrap();
        assert!(!verify_firebase("user1password", &stored.replace("r=8", "r=99")));
        assert!(!verify_firebase("user1password", &stored[..stored.len() - 4]));
        assert!(!verify_firebase("user1password", "$firebase-scrypt$"));
    }

    #[test]
    fn bcrypt_and_argon2_are_checked_and_kept() {
        // crypt_blowfish's test vector ("U*U").
        let v = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        assert_eq!(stored_hash(v, None, None, None).unwrap(), v);
        assert_eq!(stored_hash(v, Some("bcrypt"), None, None).unwrap(), v);
        assert!(stored_hash("$2a$05$short", None, None, None).is_err());
        assert!(stored_hash("$2a$99$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", None, None, None).is_err());
        assert!(stored_hash("$2c$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", Some("bcrypt"), None, None).is_err());
        let a = crate::auth::password::hash("some password").unwrap();
        assert_eq!(stored_hash(&a, None, None, None).unwrap(), a);
        assert!(stored_hash("$argon2id$nonsense", None, None, None).is_err());
        assert!(stored_hash("5f4dcc3b5aa765d61d8327deb882cf99", None, None, None).is_err(), "md5 is refused");
        assert!(stored_hash(v, Some("md5"), None, None).is_err());
    }

    #[test]
    fn hashes_that_would_hold_a_backend_or_never_verify_are_refused() {
        let v = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        // bcrypt: cost 15..31 (cost 31 is a day of CPU per check), $2x$, non-ASCII
        // (60 bytes with a multi-byte character where the cost is: no panic).
        assert!(stored_hash(&v.replace("$05$", "$31$"), None, None, None).is_err());
        assert!(stored_hash(&v.replace("$05$", "$15$"), None, None, None).is_err());
        assert!(stored_hash(&v.replace("$05$", "$14$"), None, None, None).is_ok());
        assert!(stored_hash(&v.replace("$2a$", "$2x$"), Some("bcrypt"), None, None).is_err());
        let odd = format!("$2a$1é{}", &v[7..]);
        assert_eq!(odd.len(), 60);
        assert!(stored_hash(&odd, None, None, None).is_err());
        assert!(!crate::auth::password::verify("U*U", Some(&v.replace("$05$", "$31$"))));

        // argon2: parameters over the caps, no version, keyid, a salt under 8 bytes.
        let ours = crate::auth::password::hash("some password").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        for bad in [
            ours.replace("m=19456", "m=4294967295"),
            ours.replace("m=19456", "m=65537"),
            ours.replace("t=2", "t=4294967295"),
            ours.replace("t=2", "t=11"),
            ours.replace("p=1", "p=17"),
            ours.replace("v=19$", ""),
            ours.replace("p=1$", "p=1,keyid=AAAAAA$"),
            ours.replace("m=19456", "m=8,p=2").replace(",p=1", ""),
        ] {
            assert!(stored_hash(&bad, None, None, None).is_err(), "{bad}");
            assert!(!crate::auth::password::verify("some password", Some(&bad)), "{bad}");
        }
        let parts: Vec<&str> = ours.split('$').collect();
        let short_salt = format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${}", parts[5]);
        assert!(stored_hash(&short_salt, None, None, None).is_err());
        // Inside the caps, another library's parameters still import and verify.
        use argon2::password_hash::{PasswordHasher, SaltString};
        let other = argon2::Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x10,
            argon2::Params::new(4096, 3, 2, None).unwrap(),
        )
        .hash_password(b"from elsewhere", &SaltString::encode_b64(b"sixteen byte slt").unwrap())
        .unwrap()
        .to_string();
        assert_eq!(stored_hash(&other, None, None, None).unwrap(), other);
        // phc-winner-argon2's README vector (argon2i, 64 MiB, t 2, p 4): at the caps.
        let reference = "$argon2i$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert_eq!(stored_hash(reference, None, None, None).unwrap(), reference);
        assert!(crate::auth::password::verify("password", Some(reference)));
        assert!(!crate::auth::password::verify("passwore", Some(reference)));
        assert!(crate::auth::password::verify("from elsewhere", Some(&other)));
        assert!(!crate::auth::password::verify("from elsewherE", Some(&other)));
    }
}
