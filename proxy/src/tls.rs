//! TLS and HTTP/2 on the public listener (issue 19, edge).
//!
//! Why not pingora's own TLS: its `rustls` feature pulls pingora-rustls, which is built
//! on aws-lc (a C toolchain this project avoids; the proxy's rustls uses ring) and
//! loads its certificate once. Instead `deadline::HeadDeadline::process_new` ends TLS
//! here with tokio-rustls and hands pingora a `TlsConn`: a pingora `Stream` that reports
//! the ALPN the client chose, so pingora's HTTP app serves HTTP/2 when it is `h2`
//! (pingora-core apps/mod.rs: `selected_alpn_proto() == Some(ALPN::H2)`), HTTP/1.1
//! otherwise. The certificate is behind a lock that SIGHUP replaces (`Reload`): new
//! handshakes get the new one, open connections keep theirs.

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{GetProxyDigest, GetSocketDigest, GetTimingDigest, SocketDigest, TimingDigest};
use pingora::protocols::{Peek, Shutdown, Ssl, Stream, UniqueID, UniqueIDType, ALPN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The certificate and key files, and the pair loaded from them last.
pub struct Certs {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs").field("cert_file", &self.cert_file).field("key_file", &self.key_file).finish()
    }
}

/// Read a certificate chain and its private key (PEM) and check that they belong together.
pub fn load_pair(cert_file: &std::path::Path, key_file: &std::path::Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let pair = CertifiedKey::new(chain, key);
    pair.keys_match().map_err(|e| format!("{} does not go with {}: {e}", key_file.display(), cert_file.display()))?;
    Ok(pair)
}

impl Certs {
    pub fn load(cert_file: PathBuf, key_file: PathBuf) -> Result<Arc<Certs>, String> {
        let pair = load_pair(&cert_file, &key_file)?;
        Ok(Arc::new(Certs { cert_file, key_file, current: RwLock::new(Arc::new(pair)) }))
    }

    /// Read both files again; a bad pair is logged and the old one kept.
    pub fn reload(&self) {
        match load_pair(&self.cert_file, &self.key_file) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
                log::warn!("SIGHUP: TLS certificate reloaded from {}", self.cert_file.display());
            }
            Err(e) => log::warn!("SIGHUP: TLS certificate not reloaded, the old one is kept: {e}"),
        }
    }

    /// The server's TLS settings: ring, TLS 1.2 and 1.3, ALPN h2 (when `http2`) and http/1.1.
    pub fn acceptor(self: &Arc<Self>, http2: bool) -> Result<tokio_rustls::TlsAcceptor, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// SIGHUP: re-read the certificate and key. (pingora handles SIGTERM, SIGINT and SIGQUIT
/// only, pingora-core server/mod.rs; SIGHUP is ours.)
pub struct Reload(pub Arc<Certs>);

#[async_trait]
impl pingora::services::background::BackgroundService for Reload {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, the TLS certificate will not be reloaded: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => self.0.reload(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Accept TLS on a freshly accepted connection, within `limit` (the head deadline).
/// None: the handshake failed (plain HTTP on the TLS port, a bad client) or timed out;
/// the connection is closed.
pub async fn accept(acceptor: &tokio_rustls::TlsAcceptor, stream: Stream, limit: Duration) -> Option<TlsConn> {
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let (_, conn) = tls.get_ref();
            let alpn = match conn.alpn_protocol() {
                Some(b"h2") => Some(ALPN::H2),
                Some(b"http/1.1") => Some(ALPN::H1),
                _ => None,
            };
            let version = conn.protocol_version().and_then(|v| v.as_str()).unwrap_or("TLS").to_string();
            let cipher = conn.negotiated_cipher_suite().and_then(|c| c.suite().as_str()).unwrap_or("").to_string();
            let digest = Arc::new(SslDigest::new(cipher, version, None, None, Vec::new()));
            Some(TlsConn { inner: tls, alpn, digest })
        }
        Ok(Err(e)) => {
            log::debug!("TLS handshake: {e}");
            None
        }
        Err(_) => {
            log::debug!("TLS handshake not done in {limit:?}");
            None
        }
    }
}

/// A TLS connection as pingora's `Stream`: the digests are the TCP socket's, the ALPN
/// and TLS digest rustls's.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<Stream>,
    alpn: Option<ALPN>,
    digest: Arc<SslDigest>,
}

impl TlsConn {
    pub fn is_h2(&self) -> bool {
        matches!(self.alpn, Some(ALPN::H2))
    }
    fn tcp(&self) -> &Stream {
        self.inner.get_ref().0
    }
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("tcp", self.tcp()).field("alpn", &self.alpn).finish()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for TlsConn {
    async fn shutdown(&mut self) {
        // close_notify, then the TCP side.
        let _ = AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for TlsConn {
    fn id(&self) -> UniqueIDType {
        self.tcp().id()
    }
}

impl Ssl for TlsConn {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.digest.clone())
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl GetTimingDigest for TlsConn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.tcp().get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.tcp().get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.tcp().get_write_pending_time()
    }
}

impl GetProxyDigest for TlsConn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.tcp().get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.get_mut().0.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for TlsConn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.tcp().get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.get_mut().0.set_socket_digest(digest)
    }
}

/// No peeking under TLS (pingora peeks only for cleartext h2c).
#[async_trait]
impl Peek for TlsConn {}
