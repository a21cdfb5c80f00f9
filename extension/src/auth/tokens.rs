//! Access tokens (compact JWS, EdDSA) and opaque refresh tokens.

use crate::auth::keys;
use crate::error::BaasError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::Signer;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Sign `claims` (a JSON object) with the Ed25519 seed `secret`, naming `kid`.
pub fn sign_jwt(kid: &str, secret: &[u8], claims: &Value) -> Result<String, BaasError> {
    if !claims.is_object() {
        return Err(BaasError::InvalidRequest("claims must be a JSON object".into()));
    }
    let key = keys::signing_key(secret).ok_or(BaasError::BadSigningKey)?;
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": kid});
    let mut out = String::with_capacity(512);
    out.push_str(&B64.encode(header.to_string()));
    out.push('.');
    out.push_str(&B64.encode(claims.to_string()));
    let sig = key.sign(out.as_bytes());
    out.push('.');
    out.push_str(&B64.encode(sig.to_bytes()));
    Ok(out)
}

/// 32 random bytes, URL-safe: 256 bits, so guessing one is hopeless and the database
/// only needs a hash of it.
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// SHA-256 is enough for a 256-bit random secret (no dictionary to defend against),
/// and it keeps lookups an index probe.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier};

    #[test]
    fn signature_verifies_with_published_key() {
        let k = keys::generate();
        let claims = json!({"sub": "u1", "exp": 10});
        let jwt = sign_jwt(&k.kid, &k.secret, &claims).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["kid"], k.kid.as_str());
        let body: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(body, claims);
        let x: [u8; 32] = B64
            .decode(k.public_jwk["x"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
        let sig = Signature::from_slice(&B64.decode(parts[2]).unwrap()).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(vk.verify(signed.as_bytes(), &sig).is_ok());
        assert!(vk.verify(b"tampered", &sig).is_err());
    }

    #[test]
    fn rejects_non_object_claims_and_bad_keys() {
        let k = keys::generate();
        assert!(sign_jwt(&k.kid, &k.secret, &json!([1])).is_err());
        assert_eq!(sign_jwt("k", &[0u8; 5], &json!({})), Err(BaasError::BadSigningKey));
    }

    #[test]
    fn refresh_tokens_are_unique_and_hash_stably() {
        let a = new_refresh_token();
        let b = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }
}
