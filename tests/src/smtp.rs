//! A real SMTP server for the tests (RFC 5321 as clients use it: EHLO/HELO, MAIL, RCPT,
//! DATA with dot-stuffing, RSET, NOOP, QUIT), on loopback, on a tokio runtime of its own
//! thread. It keeps every message it accepted, parsed with mail-parser (lettre may
//! quoted-printable- or base64-encode the parts), and can misbehave on demand: refuse
//! everyone for a while (451), refuse or defer one recipient (550 / 451 at RCPT), drop
//! the connection after DATA without answering (the sender cannot know it was
//! delivered), stop, and start again on the same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

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
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The envelope (MAIL FROM, RCPT TO).
    pub from: String,
    pub to: Vec<String>,
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
}

struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
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
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), arrived: Condvar::new() });
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

    /// Every message accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.shared.state.lock().unwrap().mails.clone()
    }

    /// Messages to `to` so far.
    pub fn mails_to(&self, to: &str) -> Vec<Mail> {
        let to = to.to_lowercase();
        self.mails().into_iter().filter(|m| m.to.iter().any(|t| t.to_lowercase() == to)).collect()
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
        _ => arg.trim().split_whitespace().next().unwrap_or_default().to_string(),
    }
}

fn parse(raw: &[u8], from: String, to: Vec<String>, acknowledged: bool) -> Mail {
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
    Mail { from, to, message_id, subject, text, html, raw: raw.to_vec(), acknowledged }
}

async fn session(stream: TcpStream, shared: Arc<Shared>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    if w.write_all(b"220 sink.test ESMTP pgbaas test sink\r\n").await.is_err() {
        return;
    }
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let cmd = line.trim_end_matches(['\r', '\n']);
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-sink.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n".into()
        } else if upper.starts_with("HELO") {
            "250 sink.test\r\n".into()
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
                if w.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await.is_err() {
                    return;
                }
                let mut raw = Vec::new();
                let mut l = Vec::new();
                loop {
                    l.clear();
                    match r.read_until(b'\n', &mut l).await {
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
                let drop_it = {
                    let mut s = shared.state.lock().unwrap();
                    let mut drop_it = s.mode == Some(Mode::DropAfterData);
                    for t in &rcpts {
                        if s.rules.get(&t.to_lowercase()) == Some(&Rule::DropAfterDataOnce) {
                            s.rules.remove(&t.to_lowercase());
                            drop_it = true;
                        }
                    }
                    s.mails.push(parse(&raw, from.clone(), rcpts.clone(), !drop_it));
                    drop_it
                };
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
            let _ = w.write_all(b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            "502 5.5.2 command not implemented\r\n".into()
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(text: &str) -> Mail {
        Mail { from: String::new(), to: vec![], message_id: String::new(), subject: String::new(), text: text.into(), html: None, raw: vec![], acknowledged: true }
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
