//! End-to-end: TLS and HTTP/2 at the proxy (issue 19, package C). The real proxy binary
//! with certificates made by rcgen; real TLS clients (rustls) speaking HTTP/1.1 and, by
//! ALPN, HTTP/2 (the h2 crate). SIGHUP swaps the certificate for new connections while
//! open ones go on; a bad new pair is refused and the old one kept; HSTS over TLS only.

mod common;
use common::*;
use pgbaas_testkit::{free_port, proxy_bin, Proxy};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for localhost: (certificate PEM, key PEM, certificate DER).
fn certificate() -> (String, String, Vec<u8>) {
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (cert.pem(), key_pair.serialize_pem(), cert.der().to_vec())
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("pgbaas-edge-tls-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The proxy with TLS on its listener, killed when dropped.
struct TlsProxy {
    child: Child,
    port: u16,
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_args(dir: &Path) -> Vec<String> {
    vec!["--tls-cert-file".into(), dir.join("cert.pem").display().to_string(), "--tls-key-file".into(), dir.join("key.pem").display().to_string()]
}

/// `piped`: stderr kept for the test to read (only for proxies that exit at once: a
/// running one could fill the pipe and block on its log).
fn spawn(port: u16, extra: &[String], piped: bool) -> Child {
    let url = env().cluster.authenticator_url().unwrap();
    Command::new(proxy_bin())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--database-url", &url, "--rate-limits", "off"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(if piped { Stdio::piped() } else { Stdio::inherit() })
        .spawn()
        .unwrap()
}

/// The shared cluster's URL. Its first use starts the cluster with blocking clients,
/// which must not run on the runtime's threads: a blocking task does it.
async fn db_url() -> String {
    tokio::task::spawn_blocking(|| env().cluster.authenticator_url().unwrap()).await.unwrap()
}

async fn start(dir: &Path, extra: &[&str]) -> TlsProxy {
    db_url().await;
    let port = free_port();
    let mut args = tls_args(dir);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut p = TlsProxy { child: spawn(port, &args, false), port };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(p.child.try_wait().unwrap().is_none(), "the proxy exited during start-up");
        if let Ok(r) = get_h1(port, "/healthz").await {
            if r.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the TLS proxy did not answer /healthz");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The SIGHUP handler is installed by a background service as the proxy starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    p
}

/// Trusts any certificate (its signatures still checked): the tests compare the
/// certificate the server presents with the one they expect, byte for byte.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(port: u16, alpn: &[u8]) -> std::io::Result<Tls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let connect = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(ServerName::try_from("localhost").unwrap(), tcp);
    tokio::time::timeout(Duration::from_secs(10), connect).await.map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

fn peer_cert(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

struct H1 {
    status: u16,
    head: String,
    cert: Vec<u8>,
}

impl H1 {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// GET over TLS with ALPN http/1.1, one request, `Connection: close`.
async fn get_h1(port: u16, path: &str) -> std::io::Result<H1> {
    let mut tls = connect(port, b"http/1.1").await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let cert = peer_cert(&tls);
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match tls.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A peer that closes without close_notify: what arrived is the answer.
                Err(e) if !buf.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.map_err(|_| std::io::Error::other("answer timed out"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
    Ok(H1 { status, head, cert })
}

/// An HTTP/2 connection over TLS (ALPN h2), its driver on a task of its own.
async fn h2_connect(port: u16) -> (h2::client::SendRequest<bytes::Bytes>, Vec<u8>) {
    let tls = connect(port, b"h2").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the server chose h2 by ALPN");
    let cert = peer_cert(&tls);
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, cert)
}

async fn h2_get(send: &mut h2::client::SendRequest<bytes::Bytes>, path: &str) -> (http::response::Parts, String) {
    let req = http::Request::builder().method("GET").uri(format!("https://localhost{path}")).body(()).unwrap();
    let ready = send.clone().ready().await.unwrap();
    *send = ready;
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp).await.expect("an HTTP/2 answer in time").unwrap();
    let (parts, mut body) = resp.into_parts();
    let mut text = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.data()).await.expect("the body in time") {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    (parts, String::from_utf8_lossy(&text).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_http2_answer_plain_http_does_not_and_hsts_is_sent_over_tls_only() {
    let dir = temp_dir();
    let (cert, key, der) = certificate();
    write_pair(&dir, &cert, &key);
    let p = start(&dir, &["--hsts-max-age-secs", "600"]).await;

    // HTTPS, HTTP/1.1: the answer, the certificate given, HSTS.
    let r = get_h1(p.port, "/healthz").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.cert, der, "the configured certificate is presented");
    assert_eq!(r.header("strict-transport-security").as_deref(), Some("max-age=600"), "{}", r.head);
    let missing = get_h1(p.port, "/v1/no/such/route").await.unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("strict-transport-security").as_deref(), Some("max-age=600"), "errors carry HSTS too");

    // HTTP/2 by ALPN: two requests on one connection.
    let (mut send, _) = h2_connect(p.port).await;
    for _ in 0..2 {
        let (parts, body) = h2_get(&mut send, "/healthz").await;
        assert_eq!(parts.version, http::Version::HTTP_2);
        assert_eq!(parts.status, 200, "{body}");
        assert_eq!(parts.headers.get("strict-transport-security").and_then(|v| v.to_str().ok()), Some("max-age=600"));
    }
    // Live feeds need HTTP/1.1: over HTTP/2 a clear refusal, not a hang or a reset.
    let (parts, body) = h2_get(&mut send, "/v1/collections/notes/events").await;
    assert_eq!(parts.status, 505, "{body}");
    assert!(body.contains("http1_required"), "{body}");
    let (parts, _) = h2_get(&mut send, "/healthz").await;
    assert_eq!(parts.status, 200, "the HTTP/2 connection goes on after the refusal");

    // Plain HTTP on the TLS port: no HTTP answer (the handshake fails, the connection
    // closes; http_status reads with a 5 s timeout), and the proxy serves on.
    let plain = tokio::task::spawn_blocking(move || pgbaas_testkit::http_status(p.port, "/healthz")).await.unwrap();
    assert_eq!(plain, None, "plain HTTP on the TLS port gets no HTTP answer");
    assert_eq!(get_h1(p.port, "/healthz").await.unwrap().status, 200);

    // HSTS never goes out over plain HTTP, even when configured.
    let url = db_url().await;
    let plain_proxy = tokio::task::spawn_blocking(move || Proxy::start(&url, &["--hsts-max-age-secs", "600"]).unwrap()).await.unwrap();
    let base = plain_proxy.base();
    let r = tokio::task::spawn_blocking(move || request_at(&base, "GET", "/healthz", None, &[], None)).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("strict-transport-security"), None, "no HSTS over plain HTTP");
    drop(plain_proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_gives_new_connections_the_new_certificate_and_keeps_open_ones_and_a_bad_pair_is_refused() {
    let dir = temp_dir();
    let (cert_a, key_a, der_a) = certificate();
    let (cert_b, key_b, der_b) = certificate();
    write_pair(&dir, &cert_a, &key_a);
    let p = start(&dir, &[]).await;

    // A connection opened before the reload (HTTP/2, kept open).
    let (mut before, seen) = h2_connect(p.port).await;
    assert_eq!(seen, der_a);
    assert_eq!(h2_get(&mut before, "/healthz").await.0.status, 200);

    write_pair(&dir, &cert_b, &key_b);
    unsafe { libc::kill(p.child.id() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get_h1(p.port, "/healthz").await.unwrap();
        assert_eq!(r.status, 200);
        if r.cert == der_b {
            break;
        }
        assert_eq!(r.cert, der_a);
        assert!(Instant::now() < deadline, "new connections still get the old certificate after SIGHUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, seen) = h2_connect(p.port).await;
    assert_eq!(seen, der_b, "a new HTTP/2 connection gets the new certificate");
    // The connection opened before goes on.
    for _ in 0..2 {
        assert_eq!(h2_get(&mut before, "/healthz").await.0.status, 200, "an open connection keeps working across SIGHUP");
    }

    // A bad pair (certificate C with B's key; then a file that is not PEM): logged,
    // the old pair kept, the proxy serves on.
    let (cert_c, _, _) = certificate();
    for (cert, key) in [(cert_c.as_str(), key_b.as_str()), ("not a certificate", key_b.as_str())] {
        write_pair(&dir, cert, key);
        unsafe { libc::kill(p.child.id() as i32, libc::SIGHUP) };
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = get_h1(p.port, "/healthz").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.cert, der_b, "a bad new pair is refused; the last good one is kept");
    }
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A proxy given a bad pair, or one file of the two, does not start: exit 2 and a message.
#[test]
fn a_bad_pair_stops_the_start_with_exit_2() {
    let dir = temp_dir();
    let (cert_a, _, _) = certificate();
    let (_, key_b, _) = certificate();
    write_pair(&dir, &cert_a, &key_b);
    let only_cert = vec!["--tls-cert-file".to_string(), dir.join("cert.pem").display().to_string()];
    let missing = vec!["--tls-cert-file".to_string(), dir.join("nope.pem").display().to_string(), "--tls-key-file".into(), dir.join("key.pem").display().to_string()];
    for (args, says) in [(tls_args(&dir), "does not go with"), (only_cert, "both or neither"), (missing, "nope.pem")] {
        let mut child = spawn(free_port(), &args, true);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the proxy started with {args:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
