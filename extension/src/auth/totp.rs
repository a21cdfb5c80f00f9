//! Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP) and recovery codes.
//!
//! Written on the RustCrypto `hmac`/`sha1`/`sha2` crates rather than `totp-rs` 5.x: its
//! `get_url()` leaves `algorithm`, `digits` and `period` out when they are the defaults
//! (the contract's URI names all three, which some authenticator apps want), HOTP itself
//! is twenty lines, and these crates are already in Cargo.lock (nothing new to fetch).
//! Plain Rust, covered by `cargo test` with the RFC 6238 appendix B vectors.

use crate::error::BaasError;
use hmac::{Hmac, Mac};
use rand::RngCore;

/// Seconds per step (RFC 6238's X); authenticator apps assume 30.
pub const PERIOD: i64 = 30;
/// Digits of the codes pgbaas issues and accepts.
pub const DIGITS: u32 = 6;
/// Length of a secret pgbaas generates (RFC 4226 recommends 160 bits).
pub const SECRET_LEN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn parse(name: &str) -> Result<Algorithm, BaasError> {
        match name.to_ascii_uppercase().replace('-', "").as_str() {
            "SHA1" => Ok(Algorithm::Sha1),
            "SHA256" => Ok(Algorithm::Sha256),
            "SHA512" => Ok(Algorithm::Sha512),
            _ => Err(BaasError::InvalidRequest(format!(
                "algorithm must be SHA1, SHA256 or SHA512, not {name:?}"
            ))),
        }
    }
}

fn hmac_of<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// HOTP(K, C) with dynamic truncation, as `digits` decimal digits (RFC 4226 §5.3).
pub fn hotp(secret: &[u8], alg: Algorithm, digits: u32, counter: u64) -> String {
    let msg = counter.to_be_bytes();
    let mac = match alg {
        Algorithm::Sha1 => hmac_of::<Hmac<sha1::Sha1>>(secret, &msg),
        Algorithm::Sha256 => hmac_of::<Hmac<sha2_10::Sha256>>(secret, &msg),
        Algorithm::Sha512 => hmac_of::<Hmac<sha2_10::Sha512>>(secret, &msg),
    };
    let off = (mac[mac.len() - 1] & 0x0f) as usize;
    let bin = u32::from_be_bytes([mac[off] & 0x7f, mac[off + 1], mac[off + 2], mac[off + 3]]);
    let value = (bin as u64) % 10u64.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

/// The code for Unix time `unix` (T = floor(unix / 30)).
pub fn code(secret: &[u8], alg: Algorithm, digits: u32, unix: i64) -> Result<String, BaasError> {
    if !(6..=10).contains(&digits) {
        return Err(BaasError::InvalidRequest("digits must be between 6 and 10".into()));
    }
    if unix < 0 {
        return Err(BaasError::InvalidRequest("time must not be before 1970".into()));
    }
    Ok(hotp(secret, alg, digits, (unix / PERIOD) as u64))
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The step among now_step-1, now_step, now_step+1 that is later than `after_step`
/// and whose SHA1 6-digit code is `code`, or None. A code that is not six digits
/// (spaces allowed, as apps show "123 456") is no match, never an error.
pub fn matches(secret: &[u8], code: &str, now_step: i64, after_step: i64) -> Option<i64> {
    let typed: String = code.chars().filter(|c| *c != ' ').collect();
    if typed.len() != DIGITS as usize || !typed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut found = None;
    for step in [now_step.checked_sub(1)?, now_step, now_step.checked_add(1)?] {
        if step < 0 || step <= after_step {
            continue;
        }
        // Every candidate is computed and compared, so the time taken does not say which matched.
        let ok = ct_eq(hotp(secret, Algorithm::Sha1, DIGITS, step as u64).as_bytes(), typed.as_bytes());
        if ok && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// RFC 4648 base32, upper case, without padding (what authenticator apps read).
pub fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    encode_base32(data, ALPHABET)
}

fn encode_base32(data: &[u8], alphabet: &[u8; 32]) -> String {
    let mut out = String::with_capacity(data.len() * 8 / 5 + 1);
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(alphabet[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(alphabet[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Percent-encode all but RFC 3986's unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Key URI an authenticator app scans (Google Authenticator's format):
/// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
pub fn uri(secret: &[u8], issuer: &str, account: &str) -> String {
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}",
        pct(issuer),
        pct(account),
        base32(secret),
        pct(issuer)
    )
}

/// 20 random bytes from the OS.
pub fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; SECRET_LEN];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// Ten recovery codes `xxxxx-xxxxx`: 50 random bits each in Crockford's base32 (no I, L,
/// O, U), lower case. Stored as sha256(upper(code without '-')).
pub fn new_recovery_codes() -> Vec<String> {
    const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    (0..10)
        .map(|_| {
            let mut b = [0u8; 8];
            rand::rngs::OsRng.fill_bytes(&mut b);
            let n = u64::from_be_bytes(b) >> 14; // 50 bits
            let s: String = (0..10).rev().map(|i| CROCKFORD[((n >> (5 * i)) & 31) as usize] as char).collect();
            format!("{}-{}", &s[..5], &s[5..])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED1: &[u8] = b"12345678901234567890";
    const SEED256: &[u8] = b"12345678901234567890123456789012";
    const SEED512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 6238 appendix B: (time, SHA1, SHA256, SHA512), 8 digits.
    const VECTORS: &[(i64, &str, &str, &str)] = &[
        (59, "94287082", "46119246", "90693936"),
        (1111111109, "07081804", "68084774", "25091201"),
        (1111111111, "14050471", "67062674", "99943326"),
        (1234567890, "89005924", "91819424", "93441116"),
        (2000000000, "69279037", "90698825", "38618901"),
        (20000000000, "65353130", "77737706", "47863826"),
    ];

    #[test]
    fn rfc6238_vectors() {
        for &(t, s1, s256, s512) in VECTORS {
            assert_eq!(code(SEED1, Algorithm::Sha1, 8, t).unwrap(), s1, "SHA1 at {t}");
            assert_eq!(code(SEED256, Algorithm::Sha256, 8, t).unwrap(), s256, "SHA256 at {t}");
            assert_eq!(code(SEED512, Algorithm::Sha512, 8, t).unwrap(), s512, "SHA512 at {t}");
        }
    }

    #[test]
    fn six_digits_are_the_last_six() {
        assert_eq!(code(SEED1, Algorithm::Sha1, 6, 59).unwrap(), "287082");
        assert_eq!(code(SEED1, Algorithm::Sha1, 6, 1111111109).unwrap(), "081804");
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(code(SEED1, Algorithm::Sha1, 5, 59).is_err());
        assert!(code(SEED1, Algorithm::Sha1, 11, 59).is_err());
        assert!(code(SEED1, Algorithm::Sha1, 6, -1).is_err());
        assert!(Algorithm::parse("md5").is_err());
        assert_eq!(Algorithm::parse("sha-256").unwrap(), Algorithm::Sha256);
    }

    #[test]
    fn matching_window_and_replay() {
        let now = 1111111111 / PERIOD;
        let at = |s: i64| hotp(SEED1, Algorithm::Sha1, 6, s as u64);
        assert_eq!(matches(SEED1, &at(now), now, 0), Some(now));
        assert_eq!(matches(SEED1, &at(now - 1), now, 0), Some(now - 1));
        assert_eq!(matches(SEED1, &at(now + 1), now, 0), Some(now + 1));
        assert_eq!(matches(SEED1, &at(now - 2), now, 0), None);
        assert_eq!(matches(SEED1, &at(now + 2), now, 0), None);
        // A step at or before the last used one is a replay.
        assert_eq!(matches(SEED1, &at(now), now, now), None);
        assert_eq!(matches(SEED1, &at(now + 1), now, now), Some(now + 1));
        let spaced = format!("{} {}", &at(now)[..3], &at(now)[3..]);
        assert_eq!(matches(SEED1, &spaced, now, 0), Some(now));
    }

    #[test]
    fn malformed_codes_never_match() {
        for c in ["", "12345", "1234567", "abcdef", "12345a", "１２３４５６", "-12345"] {
            assert_eq!(matches(SEED1, c, 1000, 0), None, "{c:?}");
        }
        assert_eq!(matches(SEED1, "123456", i64::MAX, 0), None);
        assert_eq!(matches(SEED1, "123456", i64::MIN, i64::MIN), None);
    }

    #[test]
    fn base32_rfc4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(SEED1), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
    }

    #[test]
    fn uri_names_everything() {
        assert_eq!(
            uri(SEED1, "My App", "ana@example.com"),
            "otpauth://totp/My%20App:ana%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=My%20App&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn recovery_codes_shape() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        for c in &codes {
            assert_eq!(c.len(), 11);
            assert_eq!(&c[5..6], "-");
            assert!(c.chars().all(|ch| ch == '-' || "0123456789abcdefghjkmnpqrstvwxyz".contains(ch)));
        }
        let mut d = codes.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 10);
        assert_eq!(new_secret().len(), 20);
    }
}
