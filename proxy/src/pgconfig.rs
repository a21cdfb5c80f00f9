//! The connection URL, read whole, and the way to a server it names: every host in
//! order, TLS as `sslmode` says, `target_session_attrs=read-write` checked.
//!
//! tokio-postgres parses the URL (both the `postgres://` and the `key=value` forms);
//! it knows neither `verify-ca`/`verify-full` nor `sslrootcert`, so those two are
//! taken out first and handled here. A setting the proxy cannot honour is refused at
//! start with its name, not ignored.
//!
//! Both kinds of connection go this way: the requests' own wire client (pgwire.rs) and
//! the tokio-postgres ones (key loads, LISTEN), which get a stream that has already
//! negotiated TLS and is watched, while they authenticate, for a server asking for the
//! password in clear.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_postgres::config::{Host, TargetSessionAttrs};

/// libpq's `sslmode`, less `allow` (plain first, TLS only if refused: no use to us).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS if the server offers it; plain only when the server answers 'N'.
    Prefer,
    /// TLS, certificate not checked (checked as verify-ca when sslrootcert is given, as libpq does).
    Require,
    /// TLS, certificate chain checked against sslrootcert.
    VerifyCa,
    /// verify-ca, and the certificate names the host.
    VerifyFull,
}

/// One place to try, in the URL's order.
#[derive(Clone, Debug)]
pub struct Target {
    /// What to connect to: `hostaddr` if given, else `host`.
    pub addr: Addr,
    pub port: u16,
    /// The host name the certificate must carry (verify-full), and what errors say.
    pub name: String,
}

#[derive(Clone, Debug)]
pub enum Addr {
    Tcp(String),
    Ip(IpAddr),
    Unix(PathBuf),
}

#[derive(Clone)]
pub struct PgConfig {
    /// User, password, database, options, application_name, channel_binding: what the
    /// startup and authentication use. Its sslmode is `disable`: TLS is done here.
    pub pg: tokio_postgres::Config,
    pub sslmode: SslMode,
    pub targets: Vec<Target>,
    /// Per host, as libpq's connect_timeout (None: the caller's).
    pub connect_timeout: Option<Duration>,
    pub read_write: bool,
    pub keepalive: Option<socket2::TcpKeepalive>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig").field("sslmode", &self.sslmode).field("targets", &self.targets).finish_non_exhaustive()
    }
}

/// What TLS takes out of the URL before tokio-postgres reads the rest.
#[derive(Default)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

fn take_tls_param(p: &mut TlsParams, key: &str, value: String) -> bool {
    match key {
        "sslmode" => p.sslmode = Some(value),
        "sslrootcert" => p.sslrootcert = Some(value),
        _ => return false,
    }
    true
}

/// `postgres://…?a=b&sslmode=x`: drop our parameters from the query string.
fn split_url(url: &str, p: &mut TlsParams) -> String {
    let Some((head, query)) = url.split_once('?') else { return url.to_string() };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
        if !take_tls_param(p, k, v) {
            kept.push(pair);
        }
    }
    if kept.is_empty() {
        head.to_string()
    } else {
        format!("{head}?{}", kept.join("&"))
    }
}

/// `host=a sslmode=x …`: libpq's key = value form, values optionally single-quoted
/// with backslash escapes. Returns the rest re-quoted.
fn split_keywords(s: &str, p: &mut TlsParams) -> Result<String, String> {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = it.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            it.next();
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        if it.next() != Some('=') {
            return Err(format!("database_url: missing '=' after {key:?}"));
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'\'') {
            it.next();
            loop {
                match it.next() {
                    Some('\\') => value.push(it.next().ok_or("database_url: unterminated quoted value")?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err("database_url: unterminated quoted value".into()),
                }
            }
        } else {
            while let Some(&c) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    it.next();
                    value.push(it.next().ok_or("database_url: trailing backslash")?);
                    continue;
                }
                value.push(c);
                it.next();
            }
        }
        if !take_tls_param(p, &key, value.clone()) {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            out.push_str(&format!("{key}='{quoted}' "));
        }
    }
}

impl PgConfig {
    /// Read and check a connection URL; every error names the setting.
    pub fn parse(url: &str) -> Result<PgConfig, String> {
        let mut tp = TlsParams::default();
        let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            split_url(url, &mut tp)
        } else {
            split_keywords(url, &mut tp)?
        };
        let mut pg: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| match std::error::Error::source(&e) {
            Some(why) => format!("database_url: {e}: {why}"),
            None => format!("database_url: {e}"),
        })?;
        pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let sslmode = match tp.sslmode.as_deref().unwrap_or("prefer") {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => return Err("database_url: sslmode=allow is not supported; use prefer, require, verify-ca or verify-full".into()),
            m => return Err(format!("database_url: unknown sslmode {m:?} (disable, prefer, require, verify-ca, verify-full)")),
        };
        if pg.get_ssl_negotiation() == tokio_postgres::config::SslNegotiation::Direct {
            return Err("database_url: sslnegotiation=direct is not supported (use postgres)".into());
        }
        if pg.get_channel_binding() == tokio_postgres::config::ChannelBinding::Require {
            return Err("database_url: channel_binding=require is not supported (SCRAM runs without channel binding)".into());
        }
        if pg.get_load_balance_hosts() == tokio_postgres::config::LoadBalanceHosts::Random {
            return Err("database_url: load_balance_hosts=random is not supported; hosts are tried in order".into());
        }
        if pg.get_user().is_none() {
            return Err("database_url names no user (postgres://baas_authenticator:…@host/db)".into());
        }

        // Hosts: libpq pairs host and hostaddr lists one to one; ports are one for all
        // or one per host.
        let (hosts, addrs) = (pg.get_hosts(), pg.get_hostaddrs());
        let n = hosts.len().max(addrs.len());
        if n == 0 {
            return Err("database_url names no host (host or hostaddr)".into());
        }
        if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
            return Err(format!("database_url: {} hosts but {} hostaddrs; give one hostaddr per host", hosts.len(), addrs.len()));
        }
        let ports = pg.get_ports();
        if ports.len() > 1 && ports.len() != n {
            return Err(format!("database_url: {} ports for {n} hosts; give one port, or one per host", ports.len()));
        }
        let mut targets = Vec::new();
        for i in 0..n {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let host = hosts.get(i);
            let (addr, name) = match (host, addrs.get(i)) {
                (Some(Host::Tcp(h)), Some(ip)) => (Addr::Ip(*ip), h.clone()),
                (Some(Host::Tcp(h)), None) => (Addr::Tcp(h.clone()), h.clone()),
                (None, Some(ip)) => (Addr::Ip(*ip), ip.to_string()),
                #[cfg(unix)]
                (Some(Host::Unix(dir)), _) => (Addr::Unix(dir.join(format!(".s.PGSQL.{port}"))), dir.display().to_string()),
                (None, None) => unreachable!("n counts hosts and hostaddrs"),
            };
            targets.push(Target { addr, port, name });
        }
        if sslmode == SslMode::VerifyFull {
            if let Some(t) = targets.iter().find(|t| matches!(t.addr, Addr::Ip(_)) && t.name.parse::<IpAddr>().is_ok()) {
                if hosts.is_empty() {
                    return Err(format!("database_url: sslmode=verify-full needs a host name to check the certificate against; hostaddr={} alone has none (add host=…)", t.name));
                }
            }
        }

        let root = match tp.sslrootcert {
            Some(p) => Some(PathBuf::from(p)),
            // libpq's default, used when it exists.
            None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".postgresql/root.crt")).filter(|p| p.exists()),
        };
        let tls = match sslmode {
            SslMode::Disable => None,
            SslMode::VerifyCa | SslMode::VerifyFull if root.is_none() => {
                return Err("database_url: sslmode=verify-ca/verify-full needs sslrootcert=<file of CA certificates> (or ~/.postgresql/root.crt)".into())
            }
            SslMode::Prefer | SslMode::Require if root.is_none() => Some(tls_config(Arc::new(NoVerify(provider())))),
            _ => {
                let path = root.as_ref().map(|p| p.as_path()).unwrap_or(std::path::Path::new(""));
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("database_url: sslrootcert {}: {e}", path.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("database_url: sslrootcert {}: {e}", path.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("database_url: sslrootcert {} holds no usable certificate", path.display()));
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider()))
                    .build()
                    .map_err(|e| format!("database_url: sslrootcert: {e}"))?;
                let check_name = sslmode == SslMode::VerifyFull;
                Some(tls_config(Arc::new(Verify { inner: webpki, check_name })))
            }
        };
        let connect_timeout = pg.get_connect_timeout().copied();
        let read_write = match pg.get_target_session_attrs() {
            TargetSessionAttrs::Any => false,
            TargetSessionAttrs::ReadWrite => true,
            _ => return Err("database_url: target_session_attrs: only any and read-write are supported".into()),
        };
        // An idle pooled connection to a host that vanished is found out in about a
        // minute and a half, not the kernel's two hours, unless the URL says otherwise
        // (tokio-postgres's own default idle time is those two hours: read as unset).
        let keepalive = pg.get_keepalives().then(|| {
            let idle = pg.get_keepalives_idle();
            let idle = if idle == Duration::from_secs(7200) { Duration::from_secs(60) } else { idle };
            let ka = socket2::TcpKeepalive::new().with_time(idle);
            #[cfg(any(target_os = "linux", target_os = "macos"))]
            let ka = ka.with_interval(pg.get_keepalives_interval().unwrap_or(Duration::from_secs(10)));
            #[cfg(any(target_os = "linux", target_os = "macos"))]
            let ka = match pg.get_keepalives_retries() {
                Some(r) => ka.with_retries(r),
                None => ka,
            };
            ka
        });
        Ok(PgConfig { pg, sslmode, targets, connect_timeout, read_write, keepalive, tls })
    }

    /// The same settings under another application_name.
    pub fn with_application_name(&self, name: &str) -> PgConfig {
        let mut c = self.clone();
        c.pg.application_name(name);
        c
    }

    pub fn user(&self) -> &str {
        self.pg.get_user().unwrap_or_default()
    }
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn tls_config(verifier: Arc<dyn ServerCertVerifier>) -> Arc<rustls::ClientConfig> {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// sslmode=require/prefer without a root certificate: encrypted, the server not
/// authenticated (libpq's meaning). The handshake's signatures are still checked.
#[derive(Debug)]
struct NoVerify(rustls::crypto::CryptoProvider);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// verify-ca (chain only) and verify-full (chain and host name).
#[derive(Debug)]
struct Verify {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verify {
    fn verify_server_cert(&self, end: &CertificateDer<'_>, mid: &[CertificateDer<'_>], name: &ServerName<'_>, ocsp: &[u8], now: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end, mid, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }))
                if !self.check_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            r => r,
        }
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// A connection to one server, before startup: TLS negotiated as sslmode says.
pub struct Opened {
    pub io: Box<dyn Io>,
    /// TLS, or a Unix socket (no one on the path): a password may be sent as asked.
    pub private: bool,
    /// Where the CancelRequest for this connection goes.
    pub cancel_to: CancelTo,
}

#[derive(Clone, Debug)]
pub enum CancelTo {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

/// A fault of this host alone (down, refused TLS, a certificate, a standby): the next
/// host is tried. `policy` marks a refusal by our own rules (no retry helps).
#[derive(Debug)]
pub struct OpenError {
    pub message: String,
    pub policy: bool,
}

impl OpenError {
    fn io(t: &Target, e: std::io::Error) -> OpenError {
        OpenError { message: format!("{}:{}: {e}", t.name, t.port), policy: false }
    }
}

impl PgConfig {
    /// TCP (or Unix socket) connection to `t`, TLS as the sslmode says.
    pub async fn open(&self, t: &Target) -> Result<Opened, OpenError> {
        let (mut tcp, peer) = match &t.addr {
            #[cfg(unix)]
            Addr::Unix(path) => {
                // libpq never uses TLS over a Unix socket: the peer is on this machine.
                let s = tokio::net::UnixStream::connect(path).await.map_err(|e| OpenError::io(t, e))?;
                return Ok(Opened { io: Box::new(s), private: true, cancel_to: CancelTo::Unix(path.clone()) });
            }
            #[cfg(not(unix))]
            Addr::Unix(_) => return Err(OpenError { message: "Unix sockets are not supported here".into(), policy: true }),
            Addr::Ip(ip) => {
                let s = tokio::net::TcpStream::connect((*ip, t.port)).await.map_err(|e| OpenError::io(t, e))?;
                (s, std::net::SocketAddr::new(*ip, t.port))
            }
            Addr::Tcp(h) => {
                let s = tokio::net::TcpStream::connect((h.as_str(), t.port)).await.map_err(|e| OpenError::io(t, e))?;
                let peer = s.peer_addr().map_err(|e| OpenError::io(t, e))?;
                (s, peer)
            }
        };
        tcp.set_nodelay(true).map_err(|e| OpenError::io(t, e))?;
        if let Some(ka) = &self.keepalive {
            socket2::SockRef::from(&tcp).set_tcp_keepalive(ka).map_err(|e| OpenError::io(t, e))?;
        }
        #[cfg(target_os = "linux")]
        if let Some(d) = self.pg.get_tcp_user_timeout() {
            socket2::SockRef::from(&tcp).set_tcp_user_timeout(Some(*d)).map_err(|e| OpenError::io(t, e))?;
        }
        let cancel_to = CancelTo::Tcp(peer);
        let Some(tls) = self.tls.clone().filter(|_| self.sslmode != SslMode::Disable) else {
            return Ok(Opened { io: Box::new(tcp), private: false, cancel_to });
        };
        let mut req = bytes::BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut req);
        tcp.write_all(&req).await.map_err(|e| OpenError::io(t, e))?;
        // Exactly one byte: anything after a plain 'N' must be read as protocol, and
        // nothing sent before the handshake may be taken as part of it (CVE-2021-23222).
        let answer = tcp.read_u8().await.map_err(|e| OpenError::io(t, e))?;
        match answer {
            b'S' => {}
            b'N' if self.sslmode == SslMode::Prefer => return Ok(Opened { io: Box::new(tcp), private: false, cancel_to }),
            b'N' => {
                return Err(OpenError {
                    message: format!("{}:{}: the server does not accept TLS connections (ssl = off) and sslmode={} requires it", t.name, t.port, self.mode_name()),
                    policy: true,
                })
            }
            _ => return Err(OpenError { message: format!("{}:{}: unexpected answer to the TLS request", t.name, t.port), policy: false }),
        }
        let name = match t.name.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(t.name.clone())
                .map_err(|_| OpenError { message: format!("{}: not a valid host name for TLS", t.name), policy: true })?,
        };
        let s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| {
            let policy = e.get_ref().is_some_and(|r| r.is::<rustls::Error>());
            OpenError { message: format!("{}:{}: TLS (sslmode={}): {e}", t.name, t.port, self.mode_name()), policy }
        })?;
        Ok(Opened { io: Box::new(s), private: true, cancel_to })
    }

    fn mode_name(&self) -> &'static str {
        match self.sslmode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Why a password request is refused on a connection anyone on the path can read.
pub fn refusal(md5: bool) -> String {
    if md5 {
        "the server asked for an MD5 password hash over an unencrypted connection (anyone on the path can replay it); \
         use sslmode=require (or verify-full) in database_url, or SCRAM (password_encryption = scram-sha-256, \
         and scram-sha-256 in pg_hba.conf)"
            .into()
    } else {
        "the server asked for the password in clear over an unencrypted connection; use sslmode=require \
         (or verify-full) in database_url, or SCRAM (password_encryption = scram-sha-256, and scram-sha-256 in pg_hba.conf)"
            .into()
    }
}

/// The marker inside the io error a watched tokio-postgres connection fails with.
#[derive(Debug)]
pub struct Refused(pub String);
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Refused {}

/// A plain connection handed to tokio-postgres, which answers any password request:
/// the server's messages are read alongside it until authentication ends, and a
/// request for the password in clear or MD5 fails the stream before tokio-postgres
/// can see it whole.
struct AuthWatch<S> {
    inner: S,
    done: bool,
    /// The current message's header (tag, length, auth code): up to 9 bytes.
    head: Vec<u8>,
    /// Bytes of the current message's body still to pass.
    skip: usize,
}

impl<S> AuthWatch<S> {
    /// Look at `bytes` (just read); Err if they ask for a password we must not send.
    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), Refused> {
        while !self.done && !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            // The header byte by byte: it is 5 bytes, 9 for an authentication
            // request (its code); only the few messages before authentication ends
            // come this way.
            self.head.push(bytes[0]);
            bytes = &bytes[1..];
            let want = if self.head[0] == b'R' { 9 } else { 5 };
            if self.head.len() < want {
                continue;
            }
            let len = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]) as usize;
            let body_seen = self.head.len() - 5;
            if self.head[0] == b'R' {
                match u32::from_be_bytes([self.head[5], self.head[6], self.head[7], self.head[8]]) {
                    0 => self.done = true,
                    3 => return Err(Refused(refusal(false))),
                    5 => return Err(Refused(refusal(true))),
                    _ => {}
                }
            } else if self.head[0] == b'Z' {
                self.done = true;
            }
            self.skip = len.saturating_sub(4 + body_seen);
            self.head.clear();
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthWatch<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            if !self.done {
                let fresh = buf.filled()[before..].to_vec();
                if let Err(e) = self.scan(&fresh) {
                    buf.set_filled(before);
                    return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e)));
                }
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthWatch<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A tokio-postgres connection (key loads, LISTEN, the admin pool) over the same way
/// to the server as the requests': hosts in order, TLS, the password rule,
/// target_session_attrs. Err: (message, whether waiting and trying again can help).
pub async fn connect_client(
    cfg: &PgConfig,
    timeout: Duration,
) -> Result<(tokio_postgres::Client, tokio_postgres::Connection<Box<dyn Io>, tokio_postgres::tls::NoTlsStream>), (String, bool)> {
    let timeout = cfg.connect_timeout.unwrap_or(timeout);
    let mut errors = Vec::new();
    let mut retry = false;
    for t in &cfg.targets {
        let attempt = async {
            let o = cfg.open(t).await.map_err(|e| (e.message, !e.policy))?;
            let io: Box<dyn Io> = if o.private { o.io } else { Box::new(AuthWatch { inner: o.io, done: false, head: Vec::new(), skip: 0 }) };
            let (client, mut conn) = cfg.pg.connect_raw(io, tokio_postgres::NoTls).await.map_err(|e| {
                let refused = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .and_then(|io| io.get_ref())
                    .and_then(|r| r.downcast_ref::<Refused>());
                match refused {
                    Some(r) => (format!("{}:{}: {r}", t.name, t.port), false),
                    None => (format!("{}:{}: {e}", t.name, t.port), e.as_db_error().is_none()),
                }
            })?;
            if cfg.read_write {
                // The connection must be polled for the check's answer.
                let check = client.simple_query("show transaction_read_only");
                let polled = async {
                    loop {
                        if std::future::poll_fn(|cx| conn.poll_message(cx)).await.is_none() {
                            return;
                        }
                    }
                };
                let rows = tokio::select! {
                    r = check => r.map_err(|e| (format!("{}:{}: {e}", t.name, t.port), true))?,
                    _ = polled => return Err((format!("{}:{}: connection closed", t.name, t.port), true)),
                };
                let ro = rows.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "on"),
                    _ => None,
                });
                if ro != Some(false) {
                    return Err((format!("{}:{}: the server is read-only and target_session_attrs=read-write", t.name, t.port), true));
                }
            }
            Ok((client, conn))
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err((m, r))) => {
                retry |= r;
                errors.push(m);
            }
            Err(_) => {
                retry = true;
                errors.push(format!("{}:{}: connecting timed out after {timeout:?}", t.name, t.port));
            }
        }
    }
    Err((errors.join("; "), retry))
}

/// For deadpool-postgres, whose `Connect` must return a tokio-postgres error: ours
/// rides inside one as an io error.
pub struct PoolConnect(pub Arc<PgConfig>, pub Duration);

impl deadpool_postgres::Connect for PoolConnect {
    fn connect(
        &self,
        _: &tokio_postgres::Config,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> + Send + '_>> {
        Box::pin(async move {
            match connect_client(&self.0, self.1).await {
                Ok((client, conn)) => Ok((client, tokio::spawn(async move {
                    let _ = conn.await;
                }))),
                Err((m, _)) => {
                    let failing: Box<dyn Io> = Box::new(Failing(m));
                    match tokio_postgres::Config::new().user("x").connect_raw(failing, tokio_postgres::NoTls).await {
                        Ok(_) => unreachable!("a stream that fails every write cannot connect"),
                        Err(e) => Err(e),
                    }
                }
            }
        })
    }
}

/// A stream whose every operation fails with its message.
struct Failing(String);
impl AsyncRead for Failing {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(std::io::Error::other(self.0.clone())))
    }
}
impl AsyncWrite for Failing {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(std::io::Error::other(self.0.clone())))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_and_keyword_forms_give_the_same_targets() {
        let a = PgConfig::parse("postgres://u:p@db1:5433,db2/app?sslmode=disable&connect_timeout=3&target_session_attrs=read-write").unwrap();
        let b = PgConfig::parse("host=db1,db2 port=5433,5432 user=u password='p' dbname=app sslmode=disable connect_timeout=3 target_session_attrs=read-write").unwrap();
        for c in [&a, &b] {
            assert_eq!(c.sslmode, SslMode::Disable);
            assert_eq!(c.targets.iter().map(|t| (t.name.as_str(), t.port)).collect::<Vec<_>>()[0], ("db1", 5433));
            assert_eq!(c.targets[1].name, "db2");
            assert_eq!(c.connect_timeout, Some(Duration::from_secs(3)));
            assert!(c.read_write);
            assert_eq!(c.pg.get_dbname(), Some("app"));
        }
        assert_eq!(b.targets[1].port, 5432);
    }

    #[test]
    fn hostaddr_alone_is_a_target() {
        let c = PgConfig::parse("hostaddr=127.0.0.1 port=6000 user=u sslmode=disable").unwrap();
        assert!(matches!(c.targets[0].addr, Addr::Ip(ip) if ip.to_string() == "127.0.0.1"));
        assert_eq!(c.targets[0].port, 6000);
        // Host name kept for TLS, address used to connect.
        let c = PgConfig::parse("host=db.example hostaddr=10.0.0.1 user=u sslmode=disable").unwrap();
        assert_eq!(c.targets[0].name, "db.example");
        assert!(matches!(c.targets[0].addr, Addr::Ip(_)));
    }

    #[test]
    fn settings_that_cannot_be_honoured_are_refused_by_name() {
        let err = |u: &str| PgConfig::parse(u).unwrap_err();
        assert!(err("postgres://u@h/db?sslmode=verify-full").contains("sslrootcert"));
        assert!(err("postgres://u@h/db?sslmode=allow").contains("sslmode=allow"));
        assert!(err("postgres://u@h/db?sslmode=bogus").contains("sslmode"));
        assert!(err("postgres://u@h/db?load_balance_hosts=random").contains("load_balance_hosts"));
        assert!(err("postgres://u@h/db?channel_binding=require").contains("channel_binding"));
        assert!(err("postgres://u@h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem").contains("sslrootcert"));
        assert!(err("host=a,b,c port=1,2 user=u").contains("ports"));
        assert!(err("host=a,b hostaddr=127.0.0.1 user=u").contains("hostaddr"));
        assert!(err("postgres://h/db").contains("no user"));
        assert!(err("user=u sslmode=disable").contains("no host"));
        assert!(err("postgres://u@h/db?target_session_attrs=standby").contains("target_session_attrs"));
        assert!(err("postgres://u@h/db?target_session_attrs=read-only").contains("target_session_attrs"));
        assert!(err("postgres://u@h/db?bogus=1").contains("bogus"));
        assert!(err("host='unterminated user=u").contains("unterminated"));
    }

    #[test]
    fn quoted_keyword_values_survive() {
        let c = PgConfig::parse(r"host=h user=u password='it\'s a secret' sslmode=require").unwrap();
        assert_eq!(c.pg.get_password(), Some(&b"it's a secret"[..]));
        assert_eq!(c.sslmode, SslMode::Require);
        let c = PgConfig::parse("postgres://u@h/db?application_name=x%20y&sslmode=prefer").unwrap();
        assert_eq!(c.pg.get_application_name(), Some("x y"));
        assert_eq!(c.sslmode, SslMode::Prefer);
    }

    fn auth(code: u32) -> Vec<u8> {
        let mut m = vec![b'R', 0, 0, 0, 8];
        m.extend_from_slice(&code.to_be_bytes());
        m
    }

    #[test]
    fn auth_watch_refuses_clear_and_md5_even_split_across_reads() {
        for (code, refused) in [(3u32, true), (5, true), (10, false), (0, false)] {
            let mut msg = vec![b'S', 0, 0, 0, 9, b'a', b'=', b'b', 0, 0];
            msg.extend(auth(code));
            for split in 0..msg.len() {
                let mut w = AuthWatch { inner: (), done: false, head: Vec::new(), skip: 0 };
                let r = w.scan(&msg[..split]).and_then(|_| w.scan(&msg[split..]));
                assert_eq!(r.is_err(), refused, "code {code} split at {split}");
            }
        }
        // After AuthenticationOk nothing is watched any more.
        let mut w = AuthWatch { inner: (), done: false, head: Vec::new(), skip: 0 };
        w.scan(&auth(0)).unwrap();
        assert!(w.done);
        w.scan(&auth(3)).unwrap();
    }
}
