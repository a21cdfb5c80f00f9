//! A real OpenID Connect provider's key endpoint for the tests: an HTTP/1.1 server on
//! loopback (a thread of its own) serving `GET /jwks` with the keys added so far and
//! `Cache-Control: max-age=3600` (the proxy's poll fetches only keys expiring within 5
//! minutes, so it leaves these alone), counting the fetches; and the provider's signer,
//! which mints ID tokens with those keys (RS256: RSA 2048, ES256: P-256). `set_status`
//! makes the endpoint fail (e.g. 500) to show that the proxy keeps the keys it has.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

struct Key {
    alg: Alg,
    enc: EncodingKey,
    jwk: Value,
}

struct Shared {
    keys: Mutex<BTreeMap<String, Key>>,
    fetches: AtomicU64,
    status: AtomicU16,
    stop: AtomicBool,
}

pub struct OidcServer {
    shared: Arc<Shared>,
    port: u16,
    next: AtomicUsize,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl OidcServer {
    pub fn start() -> OidcServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            keys: Mutex::new(BTreeMap::new()),
            fetches: AtomicU64::new(0),
            status: AtomicU16::new(200),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(c) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || serve(c, &s));
                }
            }
        });
        OidcServer { shared, port, next: AtomicUsize::new(1) }
    }

    pub fn jwks_url(&self) -> String {
        format!("http://127.0.0.1:{}/jwks", self.port)
    }

    /// Requests for the key set so far.
    pub fn fetches(&self) -> u64 {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    /// The status the endpoint answers with from now on (200: the keys).
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// A new signing key, published from now on; its kid.
    pub fn add_key(&self, alg: Alg) -> String {
        let kid = format!("k{}-{}", self.next.fetch_add(1, Ordering::SeqCst), if alg == Alg::Rs256 { "rsa" } else { "ec" });
        let mut rng = rand::thread_rng();
        let (enc, jwk) = match alg {
            Alg::Rs256 => {
                use rsa::pkcs1::EncodeRsaPrivateKey;
                use rsa::traits::PublicKeyParts;
                let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
                (
                    EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes()),
                    json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                           "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())}),
                )
            }
            Alg::Es256 => {
                use p256::pkcs8::EncodePrivateKey;
                let key = p256::ecdsa::SigningKey::random(&mut rng);
                let point = key.verifying_key().to_encoded_point(false);
                (
                    EncodingKey::from_ec_der(key.to_pkcs8_der().unwrap().as_bytes()),
                    json!({"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                           "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())}),
                )
            }
        };
        self.shared.keys.lock().unwrap().insert(kid.clone(), Key { alg, enc, jwk });
        kid
    }

    /// Stop publishing a key (it can still sign: a token of a retired key).
    pub fn remove_key(&self, kid: &str) -> bool {
        let mut keys = self.shared.keys.lock().unwrap();
        match keys.get_mut(kid) {
            Some(k) => {
                k.jwk = Value::Null;
                true
            }
            None => false,
        }
    }

    /// An ID token signed with key `kid`, whose header names `kid`.
    pub fn mint(&self, kid: &str, claims: &Value) -> String {
        self.mint_as(kid, kid, claims)
    }

    /// Signed with key `kid`, the header naming `header_kid` (a forged or unknown kid).
    pub fn mint_as(&self, kid: &str, header_kid: &str, claims: &Value) -> String {
        let keys = self.shared.keys.lock().unwrap();
        let key = keys.get(kid).expect("a key added with add_key");
        let mut h = Header::new(if key.alg == Alg::Rs256 { Algorithm::RS256 } else { Algorithm::ES256 });
        h.kid = Some(header_kid.to_string());
        jsonwebtoken::encode(&h, claims, &key.enc).unwrap()
    }

    /// The key set as served.
    pub fn jwks(&self) -> Value {
        jwks_of(&self.shared)
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn jwks_of(s: &Shared) -> Value {
    let keys: Vec<Value> = s.keys.lock().unwrap().values().filter(|k| !k.jwk.is_null()).map(|k| k.jwk.clone()).collect();
    json!({ "keys": keys })
}

/// One connection: requests until the client closes it.
fn serve(c: TcpStream, s: &Shared) {
    let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut reader = BufReader::new(c.try_clone().unwrap());
    let mut out = c;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        // Headers (no bodies on GET).
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        let (status, body) = if path == "/jwks" {
            s.fetches.fetch_add(1, Ordering::SeqCst);
            let st = s.status.load(Ordering::SeqCst);
            if st == 200 {
                (200, jwks_of(s).to_string())
            } else {
                (st, "{\"error\":\"unavailable\"}".to_string())
            }
        } else {
            (404, "{}".to_string())
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nCache-Control: public, max-age=3600\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).and_then(|_| out.write_all(body.as_bytes())).is_err() {
            return;
        }
    }
}
