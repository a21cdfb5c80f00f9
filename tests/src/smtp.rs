//! A real SMTP server for the tests (RFC 5321 as clients use it: EHLO/HELO, MAIL, RCPT,
//! DATA with dot-stuffing, RSET, NOOP, QUIT), on loopback, on a tokio runtime of its own
//! thread. It keeps every message it accepted, parsed with mail-parser (lettre may
//! quoted-printable- or base64-encode the parts), and can misbehave on demand: refuse
//! everyone for a while (451), refuse or defer one recipient (550 / 451 at RCPT), drop
//! the connection after DATA without answering (the sender cannot know it was
//! delivered), stop, and start again on the same port. `start_with` adds STARTTLS
//! (rustls, a certificate from `TestCa`, made with the openssl command line) and
//! AUTH PLAIN/LOGIN with one user, required before MAIL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What the server demands: STARTTLS with this certificate and key (PEM files), and
/// AUTH with this user and password before MAIL.
#[derive(Clone, Default)]
pub struct Security {
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub auth: Option<(String, String)>,
}

/// A throw-away CA and a server certificate it signed for localhost and 127.0.0.1
/// (`openssl req`/`x509`, RSA 2048), in a temporary directory.
pub struct TestCa {
    pub dir: std::path::PathBuf,
}

impl TestCa {
    pub fn make() -> TestCa {
        let dir = std::env::temp_dir().join(format!("pgbaas-smtp-ca-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl").args(args).current_dir(&dir).output().expect("openssl on PATH");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pgbaas test CA", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]);
        run(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "server.csr"]);
        std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
        run(&["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "ext.cnf"]);
        TestCa { dir }
    }
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert_and_key(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        (self.dir.join("cert.pem"), self.dir.join("key.pem"))
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn acceptor(cert: &std::path::Path, key: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert).unwrap().map(|c| c.unwrap()).collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// How the server treats every recipient (`set_mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// 451 at every RCPT.
    TempFail,
    /// 550 at RCPT for these addresses.
    Reject(Vec<String>),
    /// Read the message, keep it, then close the connection without the 250.
    DropAfterData,
}

/// How the server treats one recipient (`set_rule`), whatever the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// 451 4.3.0 at RCPT.
    TempFail,
    /// 550 5.1.1 at RCPT.
    Reject,
    /// Keep the message, close without the 250; the rule then ends (one drop).
    DropAfterDataOnce,
    /// Keep the message, wait this many seconds, then send the 250 (to a client that
    /// may have given up); the rule then ends.
    SlowAckOnce(u64),
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The envelope (MAIL FROM, RCPT TO).
    pub from: String,
    pub to: Vec<String>,
    /// Whether it came over TLS, and the user that authenticated, if any.
    pub tls: bool,
    pub user: Option<String>,
    /// Without the angle brackets, as mail-parser gives it.
    pub message_id: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub raw: Vec<u8>,
    /// Whether the client got a 250 for it (false: dropped after DATA).
    pub acknowledged: bool,
}

impl Mail {
    /// The first URL in the text body (any scheme://, for deep links too).
    pub fn link(&self) -> Option<String> {
        let t = &self.text;
        let at = t.find("://")?;
        let start = t[..at].rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c))).map(|i| i + 1).unwrap_or(0);
        let end = t[at..].find(|c: char| c.is_whitespace()).map(|i| at + i).unwrap_or(t.len());
        Some(t[start..end].to_string())
    }

    /// The `token` query parameter of `link()`.
    pub fn token(&self) -> Option<String> {
        let link = self.link()?;
        let q = link.split_once('?')?.1;
        q.split('&').find_map(|kv| kv.strip_prefix("token=")).map(|s| s.to_string())
    }

    /// The first run of exactly six digits in the text body.
    pub fn code(&self) -> Option<String> {
        let b = self.text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i].is_ascii_digit() {
                let j = (i..b.len()).find(|&k| !b[k].is_ascii_digit()).unwrap_or(b.len());
                if j - i == 6 {
                    return Some(self.text[i..j].to_string());
                }
                i = j;
            } else {
                i += 1;
            }
        }
        None
    }
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    rules: HashMap<String, Rule>,
    mails: Vec<Mail>,
    /// Connections accepted, and RCPTs refused, since the start.
    connections: usize,
    refused: usize,
    /// AUTH attempts refused (535).
    auth_failures: usize,
    /// Leave SMTPUTF8 out of the EHLO answer (`set_smtputf8(false)`).
    no_smtputf8: bool,
}

struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
    security: Security,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

pub struct SmtpSink {
    port: u16,
    shared: Arc<Shared>,
    stop: Mutex<Option<(tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>)>>,
}

impl SmtpSink {
    /// Start on a free loopback port.
    pub fn start() -> SmtpSink {
        Self::start_on(0)
    }

    /// Start on `port` (0: any free one).
    pub fn start_on(port: u16) -> SmtpSink {
        Self::start_with(port, Security::default())
    }

    /// Start on `port` (0: any free one), demanding what `security` says.
    pub fn start_with(port: u16, security: Security) -> SmtpSink {
        let tls = security.tls.as_ref().map(|(c, k)| acceptor(c, k));
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), arrived: Condvar::new(), security, tls });
        // A port of our own choosing (not the kernel's `:0`), so a test that stops and restarts
        // the sink on the same port does not find it taken by an outgoing connection meanwhile.
        let port = if port == 0 { crate::free_port() } else { port };
        let mut sink = SmtpSink { port, shared, stop: Mutex::new(None) };
        sink.port = sink.run();
        sink
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Listen (on `self.port`, or a free port when 0); returns the port.
    fn run(&self) -> u16 {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = self.shared.clone();
        let port = self.port;
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("sink runtime");
            rt.block_on(async move {
                // The port may still be held for a moment after a stop.
                let deadline = Instant::now() + Duration::from_secs(10);
                let listener = loop {
                    match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
                        Ok(l) => break l,
                        Err(e) if Instant::now() < deadline => {
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("SMTP sink cannot listen on port {port}: {e}"),
                    }
                };
                let _ = ready_tx.send(listener.local_addr().map(|a| a.port()).unwrap_or(port));
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        shared.state.lock().unwrap().connections += 1;
                        tokio::spawn(session(stream, shared.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime ends every open session: their sockets close.
        });
        let port = ready_rx.recv().expect("the SMTP sink started");
        *self.stop.lock().unwrap() = Some((stop_tx, thread));
        port
    }

    /// Stop listening and close every open connection (the mail kept stays).
    pub fn stop(&self) {
        let running = self.stop.lock().unwrap().take();
        if let Some((tx, thread)) = running {
            let _ = tx.send(());
            let _ = thread.join();
        }
    }

    /// Start again on the same port, keeping the mail received so far.
    pub fn restart(&self) {
        self.stop();
        self.run();
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.state.lock().unwrap().mode = Some(mode);
    }

    /// A rule for one recipient (lower-cased), or none.
    pub fn set_rule(&self, to: &str, rule: Option<Rule>) {
        let mut s = self.shared.state.lock().unwrap();
        match rule {
            Some(r) => s.rules.insert(to.to_lowercase(), r),
            None => s.rules.remove(&to.to_lowercase()),
        };
    }

    /// Whether EHLO offers SMTPUTF8 (on by default), for connections from now on.
    pub fn set_smtputf8(&self, on: bool) {
        self.shared.state.lock().unwrap().no_smtputf8 = !on;
    }

    /// Every message accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.shared.state.lock().unwrap().mails.clone()
    }

    /// Messages to `to` so far.
    pub fn mails_to(&self, to: &str) -> Vec<Mail> {
        let to = to.to_lowercase();
        self.mails().into_iter().filter(|m| m.to.iter().any(|t| t.to_lowercase() == to)).collect()
    }

    /// AUTH attempts refused so far.
    pub fn auth_failures(&self) -> usize {
        self.shared.state.lock().unwrap().auth_failures
    }

    /// RCPTs refused (451 or 550) so far.
    pub fn refused(&self) -> usize {
        self.shared.state.lock().unwrap().refused
    }

    /// The first message to `to`, waiting up to `timeout` for it.
    pub fn wait_for(&self, to: &str, timeout: Duration) -> Option<Mail> {
        self.wait_for_n(to, 1, timeout).into_iter().next()
    }

    /// Messages to `to` once there are `n` of them (or what came within `timeout`).
    pub fn wait_for_n(&self, to: &str, n: usize, timeout: Duration) -> Vec<Mail> {
        let to = to.to_lowercase();
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.state.lock().unwrap();
        loop {
            let got: Vec<Mail> = s.mails.iter().filter(|m| m.to.iter().any(|t| t.to_lowercase() == to)).cloned().collect();
            let now = Instant::now();
            if got.len() >= n || now >= deadline {
                return got;
            }
            s = self.shared.arrived.wait_timeout(s, deadline - now).unwrap().0;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The address in `<...>` of a MAIL FROM / RCPT TO argument.
fn angle_addr(arg: &str) -> String {
    match (arg.find('<'), arg.find('>')) {
        (Some(a), Some(b)) if b > a => arg[a + 1..b].to_string(),
        _ => arg.split_whitespace().next().unwrap_or_default().to_string(),
    }
}

fn parse(raw: &[u8], from: String, to: Vec<String>, acknowledged: bool, tls: bool, user: Option<String>) -> Mail {
    let parsed = mail_parser::MessageParser::default().parse(raw);
    let (message_id, subject, text, html) = match &parsed {
        Some(m) => (
            m.message_id().unwrap_or_default().to_string(),
            m.subject().unwrap_or_default().to_string(),
            m.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
            // mail-parser converts a text-only message to HTML too: only a real part counts.
            if m.parts.iter().any(|p| mail_parser::MimeHeaders::is_content_type(p, "text", "html")) {
                m.body_html(0).map(|h| h.into_owned())
            } else {
                None
            },
        ),
        None => (String::new(), String::new(), String::new(), None),
    };
    Mail { from, to, tls, user, message_id, subject, text, html, raw: raw.to_vec(), acknowledged }
}

/// "\0user\0password" (AUTH PLAIN) as (user, password).
fn plain_credentials(b64: &str) -> Option<(String, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.split('\0');
    let _authzid = parts.next()?;
    Some((parts.next()?.to_string(), parts.next()?.to_string()))
}

fn b64_line(s: &str) -> Option<String> {
    use base64::Engine;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()?).ok()
}

async fn send(conn: &mut BufReader<Box<dyn Io>>, bytes: &[u8]) -> bool {
    conn.write_all(bytes).await.is_ok() && conn.flush().await.is_ok()
}

async fn read_line(conn: &mut BufReader<Box<dyn Io>>, line: &mut String) -> bool {
    line.clear();
    matches!(conn.read_line(line).await, Ok(n) if n > 0)
}

async fn session(stream: TcpStream, shared: Arc<Shared>) {
    let mut conn: BufReader<Box<dyn Io>> = BufReader::new(Box::new(stream));
    if !send(&mut conn, b"220 sink.test ESMTP pgbaas test sink\r\n").await {
        return;
    }
    let mut tls = false;
    let mut user: Option<String> = None;
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        if !read_line(&mut conn, &mut line).await {
            return;
        }
        let cmd = line.trim_end_matches(['\r', '\n']).to_string();
        let upper = cmd.to_ascii_uppercase();
        let auth_needed = shared.security.auth.is_some() && user.is_none();
        let reply: String = if upper.starts_with("EHLO") {
            let mut r = String::from("250-sink.test\r\n250-8BITMIME\r\n");
            if !shared.state.lock().unwrap().no_smtputf8 {
                r.push_str("250-SMTPUTF8\r\n");
            }
            if shared.tls.is_some() && !tls {
                r.push_str("250-STARTTLS\r\n");
            }
            // As real servers do: AUTH only once the connection is encrypted (when it can be).
            if shared.security.auth.is_some() && (tls || shared.tls.is_none()) {
                r.push_str("250-AUTH PLAIN LOGIN\r\n");
            }
            r.push_str("250 PIPELINING\r\n");
            r
        } else if upper.starts_with("HELO") {
            "250 sink.test\r\n".into()
        } else if upper == "STARTTLS" {
            match (&shared.tls, tls) {
                (Some(acceptor), false) => {
                    if !send(&mut conn, b"220 2.0.0 ready to start TLS\r\n").await {
                        return;
                    }
                    let inner = conn.into_inner();
                    match acceptor.accept(inner).await {
                        Ok(t) => conn = BufReader::new(Box::new(t)),
                        Err(_) => return,
                    }
                    // RFC 3207: the session starts over.
                    tls = true;
                    from.clear();
                    rcpts.clear();
                    continue;
                }
                _ => "503 5.5.1 TLS not available\r\n".into(),
            }
        } else if upper.starts_with("AUTH ") {
            let Some((want_user, want_pw)) = shared.security.auth.clone() else {
                if !send(&mut conn, b"502 5.5.1 AUTH not offered\r\n").await {
                    return;
                }
                continue;
            };
            let mut parts = cmd.split_whitespace().skip(1);
            let mech = parts.next().unwrap_or_default().to_ascii_uppercase();
            let initial = parts.next().map(|s| s.to_string());
            let creds = match mech.as_str() {
                "PLAIN" => {
                    let b64 = match initial {
                        Some(i) => i,
                        None => {
                            if !send(&mut conn, b"334 \r\n").await || !read_line(&mut conn, &mut line).await {
                                return;
                            }
                            line.trim().to_string()
                        }
                    };
                    plain_credentials(&b64)
                }
                "LOGIN" => {
                    let u = match initial.and_then(|i| b64_line(&i)) {
                        Some(u) => Some(u),
                        None => {
                            if !send(&mut conn, b"334 VXNlcm5hbWU6\r\n").await || !read_line(&mut conn, &mut line).await {
                                return;
                            }
                            b64_line(&line)
                        }
                    };
                    if !send(&mut conn, b"334 UGFzc3dvcmQ6\r\n").await || !read_line(&mut conn, &mut line).await {
                        return;
                    }
                    u.zip(b64_line(&line))
                }
                _ => None,
            };
            match creds {
                Some((u, p)) if u == want_user && p == want_pw => {
                    user = Some(u);
                    "235 2.7.0 authenticated\r\n".into()
                }
                _ => {
                    shared.state.lock().unwrap().auth_failures += 1;
                    "535 5.7.8 authentication credentials invalid\r\n".into()
                }
            }
        } else if upper.starts_with("MAIL FROM:") && auth_needed {
            "530 5.7.0 authentication required\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            from = angle_addr(&cmd[10..]);
            rcpts.clear();
            "250 2.1.0 ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            let to = angle_addr(&cmd[8..]);
            let mut s = shared.state.lock().unwrap();
            let rule = s.rules.get(&to.to_lowercase()).copied();
            let mode = s.mode.clone().unwrap_or(Mode::Accept);
            let refuse = match (rule, &mode) {
                (Some(Rule::Reject), _) => Some("550 5.1.1 no such user here\r\n"),
                (Some(Rule::TempFail), _) | (None, Mode::TempFail) => Some("451 4.3.0 try again later\r\n"),
                (None, Mode::Reject(list)) if list.iter().any(|a| a.eq_ignore_ascii_case(&to)) => Some("550 5.1.1 no such user here\r\n"),
                _ => None,
            };
            match refuse {
                Some(msg) => {
                    s.refused += 1;
                    msg.into()
                }
                None => {
                    rcpts.push(to);
                    "250 2.1.5 ok\r\n".into()
                }
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                "503 5.5.1 no valid recipients\r\n".into()
            } else {
                if !send(&mut conn, b"354 end with <CRLF>.<CRLF>\r\n").await {
                    return;
                }
                let mut raw = Vec::new();
                let mut l = Vec::new();
                loop {
                    l.clear();
                    match conn.read_until(b'\n', &mut l).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if l == b".\r\n" || l == b".\n" {
                        break;
                    }
                    // Dot-stuffing: a line starting with '.' had one added.
                    if l.first() == Some(&b'.') {
                        raw.extend_from_slice(&l[1..]);
                    } else {
                        raw.extend_from_slice(&l);
                    }
                }
                let (drop_it, delay) = {
                    let mut s = shared.state.lock().unwrap();
                    let mut drop_it = s.mode == Some(Mode::DropAfterData);
                    let mut delay = 0;
                    for t in &rcpts {
                        match s.rules.get(&t.to_lowercase()).copied() {
                            Some(Rule::DropAfterDataOnce) => {
                                s.rules.remove(&t.to_lowercase());
                                drop_it = true;
                            }
                            Some(Rule::SlowAckOnce(secs)) => {
                                s.rules.remove(&t.to_lowercase());
                                delay = delay.max(secs);
                            }
                            _ => {}
                        }
                    }
                    // A slow acknowledgement counts as none: the client has given up.
                    s.mails.push(parse(&raw, from.clone(), rcpts.clone(), !drop_it && delay == 0, tls, user.clone()));
                    (drop_it, delay)
                };
                if delay > 0 {
                    tokio::time::sleep(Duration::from_secs(delay)).await;
                }
                shared.arrived.notify_all();
                rcpts.clear();
                if drop_it {
                    return;
                }
                "250 2.0.0 queued\r\n".into()
            }
        } else if upper == "RSET" {
            from.clear();
            rcpts.clear();
            "250 2.0.0 ok\r\n".into()
        } else if upper.starts_with("NOOP") {
            "250 2.0.0 ok\r\n".into()
        } else if upper == "QUIT" {
            send(&mut conn, b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            "502 5.5.2 command not implemented\r\n".into()
        };
        if !send(&mut conn, reply.as_bytes()).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(text: &str) -> Mail {
        Mail { from: String::new(), to: vec![], tls: false, user: None, message_id: String::new(), subject: String::new(), text: text.into(), html: None, raw: vec![], acknowledged: true }
    }

    #[test]
    fn finds_link_token_and_code() {
        let m = mail("Open this link:\n\ntestapp://auth?type=magic_link&token=abc_D-9\n\nOr enter 1234567 no, 042137 yes.");
        assert_eq!(m.link().as_deref(), Some("testapp://auth?type=magic_link&token=abc_D-9"));
        assert_eq!(m.token().as_deref(), Some("abc_D-9"));
        assert_eq!(m.code().as_deref(), Some("042137"));
    }

    #[test]
    fn a_real_conversation_is_kept_and_parsed() {
        use std::io::{BufRead, BufReader, Write};
        let sink = SmtpSink::start();
        sink.set_rule("nobody@x.test", Some(Rule::Reject));
        let s = std::net::TcpStream::connect(("127.0.0.1", sink.port())).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut read = || {
            let mut l = String::new();
            loop {
                let mut x = String::new();
                r.read_line(&mut x).unwrap();
                l.push_str(&x);
                if x.as_bytes().get(3) != Some(&b'-') {
                    return l;
                }
            }
        };
        assert!(read().starts_with("220"));
        for (cmd, want) in [("EHLO me", "250"), ("MAIL FROM:<a@x.test>", "250"), ("RCPT TO:<nobody@x.test>", "550"), ("RCPT TO:<b@x.test>", "250"), ("DATA", "354")] {
            write!(w, "{cmd}\r\n").unwrap();
            let got = read();
            assert!(got.starts_with(want), "{cmd}: {got}");
        }
        write!(w, "Message-ID: <m1@x.test>\r\nSubject: Hi\r\nContent-Type: text/plain\r\n\r\n..dotted\r\nbody\r\n.\r\n").unwrap();
        assert!(read().starts_with("250"));
        write!(w, "QUIT\r\n").unwrap();
        assert!(read().starts_with("221"));
        let m = sink.wait_for("b@x.test", Duration::from_secs(5)).unwrap();
        assert_eq!(m.message_id, "m1@x.test");
        assert_eq!(m.subject, "Hi");
        assert!(m.text.starts_with(".dotted\r\nbody") || m.text.starts_with(".dotted\nbody"), "{:?}", m.text);
        assert_eq!(sink.refused(), 1);
    }
}
