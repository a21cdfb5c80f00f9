//! The edge (issue 19, package C): what browsers and load balancers see of every
//! answer, whatever route wrote it. CORS: preflights answered before any route, limit
//! or database work, and the CORS headers on every answer (errors, files and event
//! streams included). Graceful stop: `Drain`.

use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One allowed origin of `cors_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `*`: any origin (not with credentials).
    Any,
    /// `https://app.example.com` (scheme, host and port as the browser sends them).
    Exact(String),
    /// `https://*.example.com[:port]`: any subdomain at any depth, not the domain itself.
    Subdomain { prefix: String, suffix: String },
}

impl Origin {
    pub fn parse(s: &str) -> Result<Origin, String> {
        let s = s.trim().to_ascii_lowercase();
        if s == "*" {
            return Ok(Origin::Any);
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!("{s:?} is not an origin like https://app.example.com, https://*.example.com or *"));
        };
        let host_ok = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !matches!(scheme, "http" | "https") || rest.contains('/') {
            return Err(format!("{s:?} is not an origin like https://app.example.com (scheme http or https, no path)"));
        }
        match rest.strip_prefix("*.") {
            Some(domain) if host_ok(domain) && !domain.contains('*') && domain.contains('.') => {
                Ok(Origin::Subdomain { prefix: format!("{scheme}://"), suffix: format!(".{domain}") })
            }
            Some(_) => Err(format!("{s:?}: a wildcard origin is https://*.example.com (a domain of at least two labels)")),
            None if host_ok(rest) => Ok(Origin::Exact(s)),
            None => Err(format!("{s:?} is not an origin like https://app.example.com")),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            Origin::Any => true,
            Origin::Exact(o) => o.eq_ignore_ascii_case(origin),
            Origin::Subdomain { prefix, suffix } => {
                let o = origin.to_ascii_lowercase();
                let Some(middle) = o.strip_prefix(prefix.as_str()).and_then(|r| r.strip_suffix(suffix.as_str())) else {
                    return false;
                };
                // One or more labels: no port, path or userinfo smuggled in before the suffix.
                !middle.is_empty() && !middle.starts_with('.') && middle.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }
        }
    }
}

/// The CORS settings (None: no origins configured, no CORS headers at all).
#[derive(Debug, Clone)]
pub struct Cors {
    pub origins: Vec<Origin>,
    pub methods: String,
    pub headers: String,
    pub expose: String,
    pub credentials: bool,
    pub max_age_secs: u64,
}

/// A comma list as one header value: items trimmed, empty ones dropped.
pub fn list(s: &str) -> String {
    s.split(',').map(str::trim).filter(|i| !i.is_empty()).collect::<Vec<_>>().join(", ")
}

impl Cors {
    /// `Access-Control-Allow-Origin`'s value for this request's `Origin`, if allowed.
    fn allow_origin(&self, origin: &str) -> Option<String> {
        if origin.is_empty() {
            return None;
        }
        let found = self.origins.iter().find(|o| o.matches(origin))?;
        // `*` is answered as `*` (cacheable for every origin); with credentials (refused
        // with `*` by the configuration) the origin is always echoed.
        Some(if *found == Origin::Any && !self.credentials { "*".into() } else { origin.to_string() })
    }

    /// A preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub fn is_preflight(req: &RequestHeader) -> bool {
        req.method == http::Method::OPTIONS && req.headers.contains_key(header::ORIGIN) && req.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The preflight's answer: 204, with the allowed methods, headers and max-age when
    /// the origin is allowed (else without them: the browser refuses the request).
    pub fn preflight(&self, req: &RequestHeader) -> pingora::Result<ResponseHeader> {
        let mut h = ResponseHeader::build(http::StatusCode::NO_CONTENT, Some(8))?;
        h.insert_header(header::VARY, "Origin")?;
        if let Some(allow) = self.allow_origin(origin(req)) {
            h.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow)?;
            h.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.as_str())?;
            if !self.headers.is_empty() {
                h.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, self.headers.as_str())?;
            }
            if self.credentials {
                h.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true")?;
            }
            if self.max_age_secs > 0 {
                h.insert_header(header::ACCESS_CONTROL_MAX_AGE, self.max_age_secs)?;
            }
        }
        h.insert_header(header::CACHE_CONTROL, "no-store")?;
        Ok(h)
    }

    /// The CORS headers of an ordinary answer.
    pub fn add(&self, req: &RequestHeader, h: &mut ResponseHeader) {
        // The answer depends on Origin whenever CORS is on: caches must key on it.
        let _ = h.append_header(header::VARY, "Origin");
        if let Some(allow) = self.allow_origin(origin(req)) {
            let _ = h.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            if self.credentials {
                let _ = h.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
            }
            if !self.expose.is_empty() {
                let _ = h.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, self.expose.as_str());
            }
        }
    }
}

impl Cors {
    /// `add`'s headers as raw header lines (each ending in CRLF), for an answer written
    /// before any HTTP session (the connection cap's 429).
    fn raw_headers(&self, origin: &str) -> String {
        let mut out = String::from("Vary: Origin\r\n");
        if let Some(allow) = self.allow_origin(origin) {
            out += &format!("Access-Control-Allow-Origin: {allow}\r\n");
            if self.credentials {
                out += "Access-Control-Allow-Credentials: true\r\n";
            }
            if !self.expose.is_empty() {
                out += &format!("Access-Control-Expose-Headers: {}\r\n", self.expose);
            }
        }
        out
    }
}

/// The `Origin` of a raw request head ('' when absent or not a plain header value: it
/// is echoed into the answer, so nothing but visible ASCII may pass).
fn head_origin(head: &[u8]) -> &str {
    let Ok(text) = std::str::from_utf8(head) else { return "" };
    text.split('\n')
        .skip(1)
        .map(|l| l.trim_end_matches('\r'))
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim().eq_ignore_ascii_case("origin").then(|| value.trim())
        })
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("")
}

fn origin(req: &RequestHeader) -> &str {
    req.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The edge's state, one field of the app (`App::edge`).
pub struct Edge {
    pub cors: Option<Cors>,
    /// Requests being answered and streams open: what a graceful stop waits for.
    active: Arc<AtomicUsize>,
    /// `Strict-Transport-Security`'s value: only with TLS and `hsts_max_age_secs` > 0.
    hsts: Option<http::HeaderValue>,
    /// Set once SIGTERM arrived (by `Signals`, or `Drain` without a delay): every answer
    /// then says `Connection: close`, and /healthz answers 503.
    stopping: Arc<AtomicBool>,
}

impl Edge {
    pub fn new(cfg: &crate::config::Config) -> Edge {
        let hsts = (cfg.tls_cert_file.is_some() && cfg.hsts_max_age_secs > 0)
            .then(|| http::HeaderValue::from_str(&format!("max-age={}", cfg.hsts_max_age_secs)).ok())
            .flatten();
        Edge { cors: cfg.cors(), active: Arc::default(), hsts, stopping: Arc::default() }
    }

    /// HSTS on an answer (the listener is all TLS when it is set).
    pub fn secure(&self, h: &mut ResponseHeader) {
        if let Some(v) = &self.hsts {
            let _ = h.insert_header(header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
    }

    /// Whether a graceful stop has begun: no answer keeps its connection alive then
    /// (server.rs's `respond`, `respond_head`, `finish_streamed`).
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Held while a request is answered or a stream is open (`Drain` waits for none).
    pub fn busy(&self) -> Busy {
        self.active.fetch_add(1, Ordering::SeqCst);
        Busy(self.active.clone())
    }

    /// The graceful stop's background service.
    pub fn drain(&self, grace: Duration) -> Drain {
        Drain { active: self.active.clone(), stopping: self.stopping.clone(), grace }
    }

    /// The signals' watch that pingora's server runs with (main.rs): `Signals`.
    pub fn signals(&self, delay: Duration) -> Signals {
        Signals { stopping: self.stopping.clone(), delay }
    }

    /// Every edge header of an answer to `req` (CORS); called wherever a response head
    /// is built: server.rs's `respond`, the file routes' own heads, the SSE head.
    pub fn headers(&self, req: &RequestHeader, h: &mut ResponseHeader) {
        if let Some(cors) = &self.cors {
            cors.add(req, h);
        }
        self.secure(h);
    }
}

pub struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Graceful stop. On SIGTERM (after `shutdown_delay_secs`: `Signals`) pingora closes the listening socket (new connections are
/// refused, so a load balancer sends them elsewhere), answers the next request of each
/// kept-alive connection with `Connection: close`, and tells streams through their
/// `ShutdownWatch` (realtime/transport.rs: WebSocket close 1012, SSE `reconnect`). It
/// then sleeps its whole grace period whatever is left; this service instead exits as
/// soon as nothing is in flight, and at the latest when the grace is over.
pub struct Drain {
    active: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    grace: Duration,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Drain {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + self.grace;
        log::warn!("stopping: no new connections; {} requests and streams to finish within {:?}", self.active.load(Ordering::SeqCst), self.grace);
        // pingora no longer watches signals now: SIGINT during the grace exits at once,
        // as before a stop.
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        let interrupted = async {
            match int.as_mut() {
                Some(i) => {
                    i.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(interrupted);
        // A connection accepted just before the listener closed may not have sent its
        // request head yet: give it a moment to become a request in flight.
        let mut pause = (self.grace / 4).min(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = &mut interrupted => {
                    log::warn!("stopping: SIGINT, {} requests or streams cut", self.active.load(Ordering::SeqCst));
                    std::process::exit(0);
                }
            }
            if self.active.load(Ordering::SeqCst) == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            pause = Duration::from_millis(20);
        }
        let left = self.active.load(Ordering::SeqCst);
        if left > 0 {
            log::warn!("stopping: the grace is over, {left} requests or streams cut");
        }
        std::process::exit(0);
    }
}

/// The stop's signals, as pingora's own watch reads them (SIGTERM graceful stop,
/// SIGQUIT graceful upgrade, SIGINT at once), with one step before a graceful stop:
/// for `shutdown_delay_secs` after SIGTERM the listener stays open and requests are
/// answered, but /healthz answers 503 and no connection is kept alive, so a load
/// balancer's health checks take the proxy out of rotation first. Without it, a
/// connection the balancer opened just before the listener closed (complete in the
/// kernel's accept queue, never accepted) is reset with its request unread, and a
/// balancer cannot tell that from a request the proxy failed: rolling_restart.rs saw
/// one 502 in 16,878 requests that way.
pub struct Signals {
    stopping: Arc<AtomicBool>,
    delay: Duration,
}

#[async_trait::async_trait]
impl pingora::server::ShutdownSignalWatch for Signals {
    async fn recv(&self) -> pingora::server::ShutdownSignal {
        use pingora::server::ShutdownSignal;
        use tokio::signal::unix::{signal, SignalKind};
        let (quit, term, int) = match (signal(SignalKind::quit()), signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(q), Ok(t), Ok(i)) => (q, t, i),
            _ => {
                // (pingora's own watch would fail the same way, with a panic.) No
                // handler is installed, so the signals keep their default action:
                // SIGTERM and SIGINT end the process at once.
                log::error!("cannot watch SIGTERM/SIGQUIT/SIGINT: they end the proxy without a graceful stop");
                return std::future::pending().await;
            }
        };
        let (mut quit, mut term, mut int) = (quit, term, int);
        tokio::select! {
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = term.recv() => {}
        }
        if self.delay.is_zero() {
            return ShutdownSignal::GracefulTerminate;
        }
        self.stopping.store(true, Ordering::SeqCst);
        log::warn!("stopping in {:?}: /healthz answers 503 meanwhile, requests are still answered", self.delay);
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => ShutdownSignal::GracefulTerminate,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
        }
    }
}

/// Open TCP connections per client address (`max_connections_per_ip`), counted under
/// the per-IP limits' key (`ratelimit::ip_key`: an IPv6 client's /56, an IPv4-mapped
/// address as IPv4). The address is the socket's peer; peers inside `trusted_proxies`
/// (a load balancer, whose health checks and pooled connections carry everyone's
/// traffic) are not capped. A connection holds its slot until its socket is dropped: a
/// live feed's too, after its stream is detached from pingora (the slot travels in
/// `DeadlineStream`).
pub struct ConnCap {
    max: u32,
    trusted: Vec<crate::ratelimit::Cidr>,
    open: Arc<dashmap::DashMap<String, u32>>,
    /// Over-cap connections being answered 429 now, per key: past `MAX_REFUSING` the
    /// rest are closed at once, so a flood of them holds no more than a few tasks.
    refusing: Arc<dashmap::DashMap<String, u32>>,
    /// The 429 carries the CORS headers of an ordinary answer, so that a browser app
    /// can read it (its Retry-After) instead of seeing a network error.
    cors: Option<Cors>,
}

/// Over-cap connections of one key answered 429 at a time; the others are just closed.
const MAX_REFUSING: u32 = 4;
/// What an over-cap connection gets in all: reading its head, the 429, the linger.
const REFUSE_BUDGET: Duration = Duration::from_secs(1);

/// One open connection's place under the cap; freed when dropped.
pub struct ConnSlot {
    key: String,
    open: Arc<dashmap::DashMap<String, u32>>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.open.remove_if_mut(&self.key, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

impl ConnCap {
    /// None when the cap is 0 (off).
    pub fn new(max: u32, trusted: &[crate::ratelimit::Cidr], cors: Option<Cors>) -> Option<Arc<ConnCap>> {
        (max > 0).then(|| Arc::new(ConnCap { max, trusted: trusted.to_vec(), open: Arc::default(), refusing: Arc::default(), cors }))
    }

    /// Whether `ip` is a trusted proxy, which the cap does not count.
    pub fn exempt(&self, ip: std::net::IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// A slot for a connection from `ip`, or None when its key already holds `max`.
    pub fn acquire(&self, ip: std::net::IpAddr) -> Option<ConnSlot> {
        let key = crate::ratelimit::ip_key(ip);
        let mut n = self.open.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ConnSlot { key, open: self.open.clone() })
    }

    /// A connection over the cap: read its request head (16 KiB at most) so that the
    /// answer is not lost to a reset, answer `429 too_many_connections`, then close; all
    /// within about a second (`REFUSE_BUDGET`). One whose head does not arrive in time,
    /// or one past `MAX_REFUSING` refusals in progress for its key, is just closed, and
    /// is not counted in `pgbaas_rate_limited_total{limit="connections"}` (which counts
    /// the 429s). The 429 is written raw, before any HTTP session, with the CORS
    /// headers an ordinary answer to the head's `Origin` would have.
    /// `_limit` (header_timeout) is not used: the budget is shorter.
    pub async fn refuse(&self, mut stream: pingora::protocols::Stream, _limit: Duration) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Some(ip) = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip())) else {
            return;
        };
        let key = crate::ratelimit::ip_key(ip);
        {
            let mut n = self.refusing.entry(key.clone()).or_insert(0);
            if *n >= MAX_REFUSING {
                return;
            }
            *n += 1;
        }
        let _refusing = ConnSlot { key, open: self.refusing.clone() };
        let deadline = tokio::time::Instant::now() + REFUSE_BUDGET;
        let mut head = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.ok()?;
                if n == 0 || head.len() + n > 16 * 1024 {
                    return None;
                }
                head.extend_from_slice(&buf[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                    return Some(());
                }
            }
        };
        if let Ok(Some(())) = tokio::time::timeout_at(deadline, read).await {
            let body = crate::errors::ApiError::new(
                http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                format!("this client address already has {} connections open; reuse one, or close one (retry in 1 s)", self.max),
            )
            .body();
            let id = crate::observe::new_id(); // (issue 19, observe): stamped, counted, logged
            let cors = self.cors.as_ref().map(|c| c.raw_headers(head_origin(&head))).unwrap_or_default();
            let answer = format!(
                "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nCache-Control: no-store\r\nX-Request-Id: {id}\r\n{cors}Connection: close\r\n\r\n",
                body.len()
            );
            let write = async {
                stream.write_all(answer.as_bytes()).await?;
                stream.write_all(&body).await?;
                stream.flush().await
            };
            if tokio::time::timeout_at(deadline, write).await.is_err() {
                return;
            }
            crate::observe::outside(id, 429, "tcp_connections").await; // (issue 19, observe)
            // Our side ends; what the client still sends (a body) is read and dropped
            // for what is left of the budget, so that closing does not reset the answer away.
            let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout_at(deadline, async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} }).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors {
            origins: origins.iter().map(|o| Origin::parse(o).unwrap()).collect(),
            methods: "GET, POST".into(),
            headers: "Authorization".into(),
            expose: "X-Request-Id".into(),
            credentials,
            max_age_secs: 600,
        }
    }

    /// The connection cap's raw 429: the Origin read from the raw head, the same CORS
    /// headers as an ordinary answer, and nothing unsafe echoed.
    #[test]
    fn a_raw_head_gives_its_origin_and_the_cap_answer_its_cors_headers() {
        let head = b"GET /v1/x HTTP/1.1\r\nHost: a\r\norigin:  https://app.example.com \r\n\r\n";
        assert_eq!(head_origin(head), "https://app.example.com");
        assert_eq!(head_origin(b"GET / HTTP/1.1\nOrigin: https://b.example.com\n\n"), "https://b.example.com", "bare LF heads too");
        assert_eq!(head_origin(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nOrigin: https://body.example.com\r\n"), "", "not past the head");
        assert_eq!(head_origin(b"Origin: https://first-line.example.com\r\n\r\n"), "", "not the request line");
        assert_eq!(head_origin(b"GET / HTTP/1.1\r\nOrigin: https://a.example.com\rX-Evil: 1\r\n\r\n"), "", "no control characters");
        assert_eq!(head_origin(b"GET / HTTP/1.1\r\nOrigin: https://caf\xc3\xa9.example.com\r\n\r\n"), "", "no non-ASCII");
        let c = cors(&["https://app.example.com"], true);
        assert_eq!(
            c.raw_headers("https://app.example.com"),
            "Vary: Origin\r\nAccess-Control-Allow-Origin: https://app.example.com\r\nAccess-Control-Allow-Credentials: true\r\nAccess-Control-Expose-Headers: X-Request-Id\r\n"
        );
        assert_eq!(c.raw_headers("https://other.example.com"), "Vary: Origin\r\n", "an origin not allowed: nothing but Vary");
        assert_eq!(c.raw_headers(""), "Vary: Origin\r\n");
    }

    #[test]
    fn origins_match_exactly_or_as_subdomains() {
        let c = cors(&["https://app.example.com", "https://*.example.org"], false);
        assert_eq!(c.allow_origin("https://app.example.com").as_deref(), Some("https://app.example.com"));
        assert_eq!(c.allow_origin("HTTPS://APP.EXAMPLE.COM").as_deref(), Some("HTTPS://APP.EXAMPLE.COM"));
        assert_eq!(c.allow_origin("http://app.example.com"), None, "another scheme is another origin");
        assert_eq!(c.allow_origin("https://app.example.com:8443"), None, "another port is another origin");
        assert!(c.allow_origin("https://a.example.org").is_some());
        assert!(c.allow_origin("https://a.b.example.org").is_some());
        for bad in ["https://example.org", "https://evilexample.org", "https://a.example.org.evil.com", "https://x:1@a.example.org", "http://a.example.org", "https://.example.org", ""] {
            assert_eq!(c.allow_origin(bad), None, "{bad}");
        }
        let any = cors(&["*"], false);
        assert_eq!(any.allow_origin("https://whatever.test").as_deref(), Some("*"));
        assert_eq!(cors(&["*"], true).allow_origin("https://whatever.test").as_deref(), Some("https://whatever.test"));
    }

    #[test]
    fn connections_are_capped_per_address_and_freed_when_dropped() {
        let cap = ConnCap::new(2, &[], None).unwrap();
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let held = [cap.acquire(a).unwrap(), cap.acquire(a).unwrap()];
        assert!(cap.acquire(a).is_none(), "a third connection from one address");
        let other = cap.acquire(b).unwrap();
        drop(held);
        assert!(cap.open.get("10.0.0.1").is_none(), "no entry is left for an address without connections");
        assert!(cap.acquire(a).is_some());
        drop(other);
        assert!(ConnCap::new(0, &[], None).is_none(), "0: no cap");
    }

    #[test]
    fn ipv6_clients_are_capped_per_56_and_mapped_v4_as_v4() {
        let cap = ConnCap::new(1, &[], None).unwrap();
        let ip = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
        let held = cap.acquire(ip("2001:db8:1:100::1")).unwrap();
        assert!(cap.acquire(ip("2001:db8:1:1ff:abcd::7")).is_none(), "another address of the same /56");
        assert!(cap.acquire(ip("2001:db8:1:200::1")).is_some(), "another /56");
        let v4 = cap.acquire(ip("192.0.2.7")).unwrap();
        assert!(cap.acquire(ip("::ffff:192.0.2.7")).is_none(), "an IPv4-mapped address is its IPv4 address");
        drop((held, v4));
    }

    #[test]
    fn trusted_proxies_are_not_capped() {
        let trusted = [crate::ratelimit::Cidr::parse("10.0.0.0/8").unwrap()];
        let cap = ConnCap::new(1, &trusted, None).unwrap();
        assert!(cap.exempt("10.1.2.3".parse().unwrap()));
        assert!(cap.exempt("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!cap.exempt("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn bad_origins_are_refused() {
        for bad in ["app.example.com", "ftp://a.com", "https://a.com/path", "https://*.com", "https://*.*.a.com", "https://a b.com"] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }
}
