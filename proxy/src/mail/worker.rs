//! The mail worker, a BackgroundService: LISTEN `baas_outbox` on a connection of its own
//! (reconnecting after 1 s, doubling to 30 s) and poll every `mail_poll_secs` besides;
//! at each wake-up claim due messages (`baas._outbox_claim`) until a claim returns fewer
//! than it asked for, send them with at most `mail_concurrency` SMTP conversations at
//! once, each within `smtp_timeout_secs`, and report every attempt (`_outbox_sent`, or
//! `_outbox_failed` — permanent for a 5xx answer or a message that cannot be built).
//!
//! A claim asks for at most as many messages as can be sent before their lease lapses
//! (`mail_concurrency` × (lease / timeout − 1), and at most `mail_batch`): a message
//! still waiting for a free slot when its lease ran out could be claimed and sent by
//! another proxy too.

use super::message::{self, OutboxRow};
use async_trait::async_trait;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

const CLAIM_SQL: &str = "select id, from_address, to_address, message_id, subject, text_body, html_body, attempt from baas._outbox_claim($1::integer, $2::integer)";
const SENT_SQL: &str = "select baas._outbox_sent($1::bigint, $2::integer)";
const FAILED_SQL: &str = "select baas._outbox_failed($1::bigint, $2::integer, $3::text, $4::boolean)";

/// The worker's settings (config.rs: smtp_*, mail_*).
#[derive(Clone)]
pub struct MailConfig {
    /// `smtp://host:25`, `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465`;
    /// user and password may be in it.
    pub smtp_url: String,
    /// The password from `smtp_password_file` (the URL's user name goes with it).
    pub password: Option<String>,
    /// PEM certificates to trust for the server's TLS, besides the web's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
    pub poll: Duration,
    pub batch: u32,
    pub concurrency: usize,
    pub lease: Duration,
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailConfig")
            .field("smtp_url", &redact(&self.smtp_url))
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("timeout", &self.timeout)
            .field("poll", &self.poll)
            .field("batch", &self.batch)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .finish()
    }
}

/// The URL without its password, for logs and errors. The user-info part ends at the
/// last '@' of the whole URL (a password may hold '/', '?' or '@'), and nothing of it
/// but the user name is ever shown, even when the rest does not parse.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL at all: show no more than its scheme-like start.
        return if url.contains('@') { "(unparsable smtp_url)".to_string() } else { url.to_string() };
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map(|(u, _)| u).unwrap_or(auth);
            // A user name with '/' or '?' means the '@' split was not where a parser would
            // split: show nothing of it.
            if user.contains(['/', '?', '#']) {
                format!("{scheme}://…@{host}")
            } else {
                format!("{scheme}://{user}:…@{host}")
            }
        }
        None => url.to_string(),
    }
}

/// What an smtp_url says, checked at start-up (config.rs turns an error into exit 2).
#[derive(Debug, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    /// smtps:// (TLS from the first byte).
    pub implicit_tls: bool,
    /// `?tls=required` or `?tls=opportunistic` (STARTTLS).
    pub starttls: Option<bool>,
    pub has_user: bool,
    pub has_password: bool,
}

impl SmtpUrl {
    pub fn parse(url: &str) -> Result<SmtpUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or("must be smtp://host[:port] or smtps://host[:port]")?;
        let implicit_tls = match scheme {
            "smtp" => false,
            "smtps" => true,
            other => return Err(format!("scheme {other:?}: must be smtp or smtps")),
        };
        // The user info first, up to the last '@': a password may hold '/', '?' or '@'.
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        // A path is the name the client gives in EHLO (lettre: smtp://host:587/me.example).
        let (authority, ehlo) = match before_query.split_once('/') {
            Some((a, p)) => (a, p.trim_matches('/')),
            None => (before_query, ""),
        };
        if ehlo.contains('/') || ehlo.contains(char::is_whitespace) {
            return Err(format!("the path {ehlo:?} must be one host name (the EHLO name)"));
        }
        let hostport = authority;
        let host = if let Some(v6) = hostport.strip_prefix('[') {
            v6.split_once(']').map(|(h, _)| h).ok_or("unclosed [ in the host")?.to_string()
        } else {
            hostport.split(':').next().unwrap_or_default().to_string()
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        let port = if hostport.starts_with('[') { hostport.split_once("]:").map(|(_, p)| p) } else { hostport.split_once(':').map(|(_, p)| p) };
        if let Some(port) = port {
            port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("port {port:?} is not a number 1..65535"))?;
        }
        let mut starttls = None;
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("tls", "required")) => starttls = Some(true),
                Some(("tls", "opportunistic")) => starttls = Some(false),
                Some(("tls", v)) => return Err(format!("tls={v}: must be required or opportunistic")),
                _ => return Err(format!("unknown parameter {pair:?} (only tls=required|opportunistic)")),
            }
        }
        if implicit_tls && starttls.is_some() {
            return Err("smtps:// is TLS already: drop ?tls=".into());
        }
        let (has_user, has_password) = match auth {
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (!u.is_empty(), !p.is_empty()),
                None => (!a.is_empty(), false),
            },
            None => (false, false),
        };
        Ok(SmtpUrl { host, implicit_tls, starttls, has_user, has_password })
    }

    fn loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
    }

    /// Whether credentials could travel in the clear: plain SMTP (or opportunistic
    /// STARTTLS, which an attacker can strip) to a host other than this machine.
    pub fn credentials_in_clear(&self) -> bool {
        !self.implicit_tls && self.starttls != Some(true) && !self.loopback()
    }
}

/// The transport `cfg` describes: lettre's own URL parsing, then the password file and
/// the extra roots. lettre's `pool` feature is off: every message has a connection of
/// its own, so an attempt abandoned at `smtp_timeout_secs` (lettre has no read timeout)
/// can never leave a half-read conversation for the next message to inherit.
pub fn builder(cfg: &MailConfig) -> Result<AsyncSmtpTransportBuilder, String> {
    let url = SmtpUrl::parse(&cfg.smtp_url).map_err(|e| format!("smtp_url {}: {e}", redact(&cfg.smtp_url)))?;
    if cfg.password.is_some() && !url.has_user {
        return Err("smtp_password_file is set but smtp_url names no user (smtp://user@host)".into());
    }
    if (url.has_password || cfg.password.is_some()) && url.credentials_in_clear() {
        return Err(format!(
            "smtp_url {}: credentials would cross the network unencrypted; use smtps:// or ?tls=required (or a loopback host)",
            redact(&cfg.smtp_url)
        ));
    }
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::from_url(&cfg.smtp_url)
        .map_err(|e| format!("smtp_url {}: {e}", redact(&cfg.smtp_url)))?
        .timeout(Some(cfg.timeout));
    if let Some(pw) = &cfg.password {
        let user = user_of(&cfg.smtp_url).unwrap_or_default();
        b = b.credentials(Credentials::new(user, pw.clone()));
    }
    if let Some(pem) = &cfg.ca_pem {
        let mut params = TlsParameters::builder(url.host.clone());
        for cert in split_pem(pem) {
            params = params.add_root_certificate(Certificate::from_pem(&cert).map_err(|e| format!("smtp_ca_file: {e}"))?);
        }
        let params = params.build().map_err(|e| format!("smtp_ca_file: {e}"))?;
        let tls = if url.implicit_tls {
            Tls::Wrapper(params)
        } else if url.starttls == Some(true) {
            Tls::Required(params)
        } else if url.starttls == Some(false) {
            Tls::Opportunistic(params)
        } else {
            return Err("smtp_ca_file is set but smtp_url uses no TLS (smtps:// or ?tls=required)".into());
        };
        b = b.tls(tls);
    }
    Ok(b)
}

/// The URL's user name, percent-decoded.
fn user_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let (auth, _) = rest.rsplit_once('@')?;
    let user = auth.split(':').next()?;
    Some(percent_encoding::percent_decode_str(user).decode_utf8_lossy().into_owned())
}

/// Each certificate of a PEM bundle on its own (lettre takes one at a time).
fn split_pem(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN ") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END ") {
            out.push(cur.as_bytes().to_vec());
        }
    }
    out
}

/// How one attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// `permanent`: a 5xx answer to this message's RCPT or DATA, a non-ASCII address the
    /// server cannot take, or a message that cannot be built; else try again later.
    Failed { error: String, permanent: bool },
}

/// What a failed attempt says about the message.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// 4xx, a network error, anything the next attempt may not meet.
    Temporary,
    /// A 5xx that may be about this message (RCPT, DATA) or about the server (the
    /// greeting): `deliver` tells them apart with a test connection.
    Permanent,
    /// A 5xx that is about this proxy's login or sender, never about one message
    /// (530/534/535/538 authentication, 5.1.7/5.1.8 bad sender): temporary, logged as
    /// errors, since every message would meet it until the configuration is fixed.
    Server,
    /// This message can never go to this server (a non-ASCII address or body the server
    /// does not support: lettre refuses it before sending).
    MessagePermanent,
}

fn classify(e: &lettre::transport::smtp::Error) -> Class {
    if e.is_permanent() {
        let code = e.status().map(|c| c.to_string()).unwrap_or_default();
        let text = e.to_string();
        if ["530", "534", "535", "538"].contains(&code.as_str()) || text.contains("5.1.7") || text.contains("5.1.8") || text.contains("5.7.8") {
            return Class::Server;
        }
        return Class::Permanent;
    }
    if e.is_client() {
        let text = e.to_string();
        if text.contains("non-ascii") {
            return Class::MessagePermanent;
        }
    }
    Class::Temporary
}

pub struct MailWorker {
    database_url: String,
    pool: deadpool_postgres::Pool,
    cfg: MailConfig,
    wake: Arc<Notify>,
}

impl MailWorker {
    pub fn new(database_url: String, pool: deadpool_postgres::Pool, cfg: MailConfig) -> Result<MailWorker, String> {
        builder(&cfg)?;
        Ok(MailWorker { database_url, pool, cfg, wake: Arc::new(Notify::new()) })
    }

    /// Messages per claim: no more than can be sent before their lease lapses.
    fn claim_size(&self) -> i32 {
        let waves = (self.cfg.lease.as_secs_f64() / self.cfg.timeout.as_secs_f64().max(1.0)).floor() as usize;
        let n = self.cfg.concurrency.saturating_mul(waves.saturating_sub(1).max(1));
        n.min(self.cfg.batch as usize).clamp(1, 1000) as i32
    }

    /// One attempt at one message.
    async fn deliver(transport: AsyncSmtpTransport<Tokio1Executor>, row: &OutboxRow, timeout: Duration) -> Outcome {
        let msg = match message::build(row) {
            Ok(m) => m,
            Err(message::BuildError::Message(error)) => return Outcome::Failed { error, permanent: true },
            Err(message::BuildError::Config(error)) => {
                log::error!("mail {}: cannot be sent as configured (will retry): {error}", row.id);
                return Outcome::Failed { error, permanent: false };
            }
        };
        let e = match tokio::time::timeout(timeout, transport.send(msg)).await {
            Ok(Ok(_)) => return Outcome::Sent,
            Ok(Err(e)) => e,
            Err(_) => return Outcome::Failed { error: format!("no answer from the SMTP server within {} s", timeout.as_secs()), permanent: false },
        };
        let error = format!("{e}");
        match classify(&e) {
            Class::Permanent => {
                // A 5xx may still be the server's, not this message's: a greeting or a
                // login refused on every connection. Only if a fresh connection (greeting,
                // EHLO, TLS, AUTH, NOOP) succeeds does it belong to this message.
                match tokio::time::timeout(timeout, transport.test_connection()).await {
                    Ok(Ok(true)) => Outcome::Failed { error, permanent: true },
                    other => {
                        let why = match other {
                            Ok(Ok(_)) => "the server does not answer NOOP".to_string(),
                            Ok(Err(t)) => t.to_string(),
                            Err(_) => "no answer".to_string(),
                        };
                        log::error!("mail {}: the SMTP server refuses every connection (will retry): {error}; test connection: {why}", row.id);
                        Outcome::Failed { error, permanent: false }
                    }
                }
            }
            Class::Server => {
                log::error!("mail {}: the SMTP server refuses this proxy (will retry): {error}", row.id);
                Outcome::Failed { error, permanent: false }
            }
            Class::MessagePermanent => Outcome::Failed { error, permanent: true },
            Class::Temporary => Outcome::Failed { error, permanent: false },
        }
    }

    /// Claim and send until a claim comes back short. Returns how many were attempted.
    /// A pooled connection is held only to claim and to report, never during an SMTP
    /// conversation: the proxy's own pool is small, and key reloads need it too.
    async fn drain(&self, transport: &AsyncSmtpTransport<Tokio1Executor>) -> Result<usize, String> {
        let lease = i32::try_from(self.cfg.lease.as_secs()).unwrap_or(i32::MAX);
        let size = self.claim_size();
        let mut total = 0;
        loop {
            // A long drain keeps the backlog gauge fresh (at most every 10 s) (issue 19, observe).
            crate::observe::MAIL_BACKLOG.refresh(&self.pool).await;
            let client = self.pool.get().await.map_err(|e| format!("no database connection: {e}"))?;
            let rows = client.query(CLAIM_SQL, &[&size, &lease]).await.map_err(|e| format!("claiming mail: {e}"))?;
            drop(client);
            let rows: Vec<OutboxRow> = rows
                .iter()
                .map(|r| {
                    Ok(OutboxRow {
                        id: r.try_get(0)?,
                        from_address: r.try_get(1)?,
                        to_address: r.try_get(2)?,
                        message_id: r.try_get(3)?,
                        subject: r.try_get(4)?,
                        text_body: r.try_get(5)?,
                        html_body: r.try_get(6)?,
                        attempt: r.try_get(7)?,
                    })
                })
                .collect::<Result<_, tokio_postgres::Error>>()
                .map_err(|e| format!("reading claimed mail: {e}"))?;
            let claimed = rows.len();
            total += claimed;
            let limit = Arc::new(tokio::sync::Semaphore::new(self.cfg.concurrency));
            let mut sends = tokio::task::JoinSet::new();
            for row in rows {
                let permit = limit.clone();
                let transport = transport.clone();
                let timeout = self.cfg.timeout;
                sends.spawn(async move {
                    let _slot = permit.acquire_owned().await;
                    let outcome = Self::deliver(transport, &row, timeout).await;
                    (row, outcome)
                });
            }
            while let Some(done) = sends.join_next().await {
                let Ok((row, outcome)) = done else { continue };
                let client = match self.pool.get().await {
                    Ok(c) => c,
                    Err(e) => {
                        // The lease lapses and the message goes again (same Message-ID).
                        log::warn!("mail {}: cannot record the attempt ({outcome:?}): no database connection: {e}", row.id);
                        continue;
                    }
                };
                let reported = match &outcome {
                    Outcome::Sent => client.execute(SENT_SQL, &[&row.id, &row.attempt]).await,
                    Outcome::Failed { error, permanent } => {
                        // The id suffices (baas.email_outbox has the address): no addresses in logs.
                        if *permanent {
                            log::warn!("mail {}: refused for good: {error}", row.id);
                        } else {
                            log::info!("mail {}: attempt {} failed, will retry: {error}", row.id, row.attempt);
                        }
                        client.execute(FAILED_SQL, &[&row.id, &row.attempt, error, permanent]).await
                    }
                };
                if let Err(e) = reported {
                    // The lease lapses and the message goes again (same Message-ID).
                    log::warn!("mail {}: cannot record the attempt ({outcome:?}): {e}", row.id);
                }
            }
            if claimed < size as usize {
                return Ok(total);
            }
        }
    }

    /// Hold a LISTEN connection; wake the sender at each notification. Returns when the
    /// connection ends (Err) or at shutdown (Ok).
    async fn listen(&self, shutdown: &mut ShutdownWatch) -> Result<(), String> {
        let cfg = crate::db::keys_config(&self.database_url)?;
        let (client, mut connection) = crate::pgconfig::connect_client(&cfg, Duration::from_secs(10)).await.map_err(|(e, _)| e)?;
        let wake = self.wake.clone();
        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
        let pump = tokio::spawn(async move {
            while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = closed_tx.send(());
        });
        client.batch_execute("listen baas_outbox").await.map_err(|e| e.to_string())?;
        // Anything queued while this connection was down.
        self.wake.notify_one();
        let r = tokio::select! {
            _ = &mut closed => Err("connection closed".to_string()),
            _ = shutdown.changed() => Ok(()),
        };
        pump.abort();
        r
    }

    async fn listener_loop(&self, mut shutdown: ShutdownWatch) {
        let mut pause = Duration::from_secs(1);
        loop {
            let started = std::time::Instant::now();
            match self.listen(&mut shutdown).await {
                Ok(()) => return,
                Err(e) => log::warn!("mail worker: LISTEN baas_outbox: {e}; reconnecting in {} s", pause.as_secs()),
            }
            if started.elapsed() > Duration::from_secs(60) {
                pause = Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => return,
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    async fn sender_loop(&self, transport: AsyncSmtpTransport<Tokio1Executor>, mut shutdown: ShutdownWatch) {
        loop {
            match self.drain(&transport).await {
                Ok(0) => {}
                Ok(n) => log::debug!("mail worker: {n} attempts"),
                Err(e) => log::warn!("mail worker: {e}"),
            }
            crate::observe::MAIL_BACKLOG.refresh(&self.pool).await; // (issue 19, observe)
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.cfg.poll) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[async_trait]
impl BackgroundService for MailWorker {
    async fn start(&self, shutdown: ShutdownWatch) {
        let transport = match builder(&self.cfg) {
            Ok(b) => b.build(),
            Err(e) => {
                // Checked at start-up (config.rs), so not expected here.
                log::error!("mail worker not started: {e}");
                return;
            }
        };
        tokio::join!(self.listener_loop(shutdown.clone()), self.sender_loop(transport, shutdown));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_url_forms() {
        let u = SmtpUrl::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(u, SmtpUrl { host: "127.0.0.1".into(), implicit_tls: false, starttls: None, has_user: false, has_password: false });
        let u = SmtpUrl::parse("smtp://me:secret@mail.example.com:587?tls=required").unwrap();
        assert!(u.has_user && u.has_password && u.starttls == Some(true) && !u.credentials_in_clear());
        let u = SmtpUrl::parse("smtps://me@mail.example.com").unwrap();
        assert!(u.implicit_tls && u.has_user && !u.has_password && !u.credentials_in_clear());
        let u = SmtpUrl::parse("smtp://mail.example.com:587/proxy1.example.com?tls=required").unwrap();
        assert_eq!((u.host.as_str(), u.starttls), ("mail.example.com", Some(true)), "a path names the EHLO host");
        assert!(SmtpUrl::parse("smtp://h:25/a/b").is_err());
        let u = SmtpUrl::parse("smtp://[::1]:25").unwrap();
        assert_eq!(u.host, "::1");
        assert!(!u.credentials_in_clear());
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for bad in ["mail.example.com", "http://x", "smtp://", "smtp://h:notaport", "smtp://h?tls=maybe", "smtps://h?tls=required", "smtp://h?x=1"] {
            assert!(SmtpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    fn cfg(url: &str) -> MailConfig {
        MailConfig {
            smtp_url: url.into(),
            password: None,
            ca_pem: None,
            timeout: Duration::from_secs(30),
            poll: Duration::from_secs(5),
            batch: 10,
            concurrency: 4,
            lease: Duration::from_secs(120),
        }
    }

    #[test]
    fn credentials_in_the_clear_to_another_host_are_refused() {
        assert!(builder(&cfg("smtp://me:pw@mail.example.com:25")).is_err());
        assert!(builder(&cfg("smtp://me:pw@mail.example.com:25?tls=opportunistic")).is_err());
        assert!(builder(&cfg("smtp://me:pw@127.0.0.1:25")).is_ok());
        assert!(builder(&cfg("smtp://me:pw@mail.example.com:587?tls=required")).is_ok());
        let mut c = cfg("smtp://mail.example.com:25");
        c.password = Some("pw".into());
        assert!(builder(&c).is_err(), "password file without a user");
        c.smtp_url = "smtp://me@mail.example.com:25".into();
        assert!(builder(&c).is_err(), "password file over plain SMTP");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("smtp://me:secret@h:25"), "smtp://me:…@h:25");
        assert_eq!(redact("smtp://h:25"), "smtp://h:25");
        // A password with '/', '?' or '@' (not percent-encoded): nothing of it shows,
        // neither in the redacted URL nor in a parse error.
        for url in ["smtp://me:se/cr?et@h:25", "smtp://me:p@ss/w?rd@h:notaport", "smtp://me:sec?tls=maybe@h:25", "smtp://me:x/y z@h:25/a/b"] {
            for part in ["cr?et", "ss/w", "sec?", "x/y"] {
                assert!(!redact(url).contains(part), "{url}: {}", redact(url));
                if let Err(e) = SmtpUrl::parse(url) {
                    assert!(!e.contains(part), "{url}: {e}");
                }
            }
        }
        assert!(SmtpUrl::parse("smtp://me:se/cr?et@h:25").is_ok_and(|u| u.host == "h" && u.has_password));
        assert!(!redact("nonsense me:secret@h").contains("secret"));
    }

    #[test]
    fn user_is_percent_decoded() {
        assert_eq!(user_of("smtp://me%40corp:pw@h:25").as_deref(), Some("me@corp"));
        assert_eq!(user_of("smtp://h:25"), None);
    }

    #[test]
    fn claims_no_more_than_the_lease_covers() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let pool = crate::db::make_pool("postgres://u@127.0.0.1:1/db", Duration::from_secs(1)).unwrap();
            let w = MailWorker::new("postgres://u@127.0.0.1:1/db".into(), pool.clone(), cfg("smtp://127.0.0.1:25")).unwrap();
            assert_eq!(w.claim_size(), 10);
            let mut c = cfg("smtp://127.0.0.1:25");
            c.batch = 1000;
            c.concurrency = 2;
            c.timeout = Duration::from_secs(60);
            c.lease = Duration::from_secs(90);
            let w = MailWorker::new("postgres://u@127.0.0.1:1/db".into(), pool, c).unwrap();
            assert_eq!(w.claim_size(), 2);
        });
    }

    #[test]
    fn splits_a_pem_bundle() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        let parts = split_pem(pem);
        assert_eq!(parts.len(), 2);
        assert!(String::from_utf8_lossy(&parts[1]).contains("BBB"));
    }
}
