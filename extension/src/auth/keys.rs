//! Ed25519 signing keys. The 32-byte seed stays in `baas._signing_keys`, readable only
//! by the extension's owner; the public half is published as an RFC 8037 OKP JWK.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

pub struct NewKey {
    pub kid: String,
    pub secret: Vec<u8>,
    pub public_jwk: Value,
}

pub fn generate() -> NewKey {
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = signing.verifying_key().to_bytes();
    // kid: first 12 bytes of the public key, so it is stable and unguessable-free.
    let kid = B64.encode(&public[..12]);
    NewKey {
        public_jwk: public_jwk(&kid, &public),
        kid,
        secret: signing.to_bytes().to_vec(),
    }
}

pub fn public_jwk(kid: &str, public: &[u8; 32]) -> Value {
    json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
        "kid": kid,
        "x": B64.encode(public),
    })
}

pub fn signing_key(secret: &[u8]) -> Option<SigningKey> {
    let seed: [u8; 32] = secret.try_into().ok()?;
    Some(SigningKey::from_bytes(&seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwk_matches_secret() {
        let k = generate();
        let sk = signing_key(&k.secret).unwrap();
        let x = B64.decode(k.public_jwk["x"].as_str().unwrap()).unwrap();
        assert_eq!(x, sk.verifying_key().to_bytes());
        assert_eq!(k.public_jwk["kid"], k.kid.as_str());
        assert!(k.public_jwk.get("d").is_none(), "the JWK must not contain the private part");
        assert_ne!(generate().kid, k.kid);
    }

    #[test]
    fn malformed_secret_is_rejected() {
        assert!(signing_key(&[1, 2, 3]).is_none());
    }
}
