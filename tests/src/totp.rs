//! An independent RFC 6238 oracle for the end-to-end tests (tests/tests/accounts_mfa.rs):
//! written from the RFC on the hmac and sha1 crates, sharing no code with the
//! extension's extension/src/auth/totp.rs, so that a bug there cannot hide itself.
use hmac::{Hmac, Mac};

/// Decode RFC 4648 base32 (upper case, padding optional); None when malformed.
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u64, 0u32);
    for c in s.trim_end_matches('=').chars() {
        let v = match c {
            'A'..='Z' => c as u64 - 'A' as u64,
            '2'..='7' => c as u64 - '2' as u64 + 26,
            _ => return None,
        };
        buf = (buf << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// RFC 4226 HOTP with SHA-1, SHA-256 or SHA-512 ("SHA1", "SHA256", "SHA512").
pub fn hotp(secret: &[u8], algorithm: &str, digits: u32, counter: u64) -> String {
    let msg = counter.to_be_bytes();
    let mac: Vec<u8> = match algorithm {
        "SHA1" => {
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(secret).unwrap();
            m.update(&msg);
            m.finalize().into_bytes().to_vec()
        }
        "SHA256" => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
            m.update(&msg);
            m.finalize().into_bytes().to_vec()
        }
        "SHA512" => {
            let mut m = Hmac::<sha2::Sha512>::new_from_slice(secret).unwrap();
            m.update(&msg);
            m.finalize().into_bytes().to_vec()
        }
        other => panic!("unknown algorithm {other}"),
    };
    let o = (mac[mac.len() - 1] & 0xf) as usize;
    let n = ((mac[o] as u32 & 0x7f) << 24) | ((mac[o + 1] as u32) << 16) | ((mac[o + 2] as u32) << 8) | mac[o + 3] as u32;
    format!("{:0w$}", n as u64 % 10u64.pow(digits), w = digits as usize)
}

/// The 6-digit SHA-1 code authenticator apps show at Unix time `unix` (30 s steps).
pub fn code_at(secret: &[u8], unix: u64) -> String {
    hotp(secret, "SHA1", 6, unix / 30)
}

/// The code of the step `offset` steps from now.
pub fn code_now(secret: &[u8], offset: i64) -> String {
    let step = (now() / 30) as i64 + offset;
    hotp(secret, "SHA1", 6, step as u64)
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc6238_appendix_b() {
        let s1 = b"12345678901234567890";
        assert_eq!(super::hotp(s1, "SHA1", 8, 59 / 30), "94287082");
        assert_eq!(super::hotp(s1, "SHA1", 8, 20000000000 / 30), "65353130");
        assert_eq!(super::base32_decode("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap(), s1.to_vec());
    }
}
