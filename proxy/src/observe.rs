//! Observing requests (issue 19, package A): request ids, one JSON log line per
//! request, the request series of metrics.rs, and the `/metrics` listener.
//!
//! Each request runs in a task-local scope (`scope`) that holds its id and what its
//! answer was: `stamp` puts `X-Request-Id` on every response head the proxy writes (JSON
//! replies, errors, files, a stream's first answer) and notes the status; when the
//! request's future ends, `finish` counts it and writes its log line. db.rs reads the id
//! (`id`) for `db::AUTHENTICATE`, so Postgres sees it as `baas.request_id` and in
//! `application_name`. A task-local rather than a parameter threaded through every door:
//! the id must reach the SQL of files/, realtime/ and the JSON routes alike, and the
//! answer's status is known only where each door writes its head.

use crate::metrics;
use crate::router::{self, Match};
use crate::routes::ROUTES;
use async_trait::async_trait;
use http::{header, StatusCode};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What is on: set once at start (main.rs).
struct Settings {
    json_logs: bool,
    metrics: bool,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

pub fn init(json_logs: bool, metrics: bool) {
    let _ = SETTINGS.set(Settings { json_logs, metrics });
    if metrics {
        metrics::init();
    }
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings { json_logs: false, metrics: false })
}

pub fn json_logs() -> bool {
    settings().json_logs
}

fn metrics_on() -> bool {
    settings().metrics
}

pub const HEADER: &str = "x-request-id";

/// A client's id is kept when it is 1-128 characters of `[A-Za-z0-9._:/+=-]` (safe in a
/// header, a log line and `application_name`); anything else is replaced, never refused.
pub fn valid_id(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().all(|b| b.is_ascii_alphanumeric() || b"._:/+=-".contains(b))
}

/// One request as observed.
pub struct State {
    id: String,
    route: &'static str,
    method: String,
    /// Without the query string (tokens can be in it); only kept for JSON logs.
    path: String,
    client_ip: Option<String>,
    started: Instant,
    /// When the answer's last byte was written (before any linger): the latency.
    done: Option<std::time::Duration>,
    status: Option<u16>,
    bytes: u64,
    user_id: Option<String>,
    /// The rate limit that refused this request (ratelimit.rs), or the 429's error code.
    limited: Option<&'static str>,
    error_code: Option<String>,
    /// A stream's task carries the id only; its request was logged when it started.
    logs: bool,
}

tokio::task_local! {
    static CTX: RefCell<State>;
}

impl State {
    /// A request whose head was just read. `client_ip`: after trusted_proxies (only
    /// needed, and only computed by the caller, for JSON logs).
    pub fn new(s: &ServerSession, client_ip: impl FnOnce() -> String) -> State {
        let h = s.req_header();
        let id = match h.headers.get(HEADER) {
            Some(v) if valid_id(v.as_bytes()) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            _ => new_id(),
        };
        let route = match router::route(ROUTES, &h.method, h.uri.path()) {
            Match::Found(r, _) => r.name,
            _ => "unknown",
        };
        let json = json_logs();
        State {
            id,
            route,
            method: if json { h.method.as_str().to_string() } else { String::new() },
            path: if json { h.uri.path().to_string() } else { String::new() },
            client_ip: json.then(client_ip),
            started: Instant::now(),
            done: None,
            status: None,
            bytes: 0,
            user_id: None,
            limited: None,
            error_code: None,
            logs: true,
        }
    }
}

impl State {
    /// An answer written outside a parsed request (a malformed head): a fresh id,
    /// route "unknown"; counted and logged like the rest.
    pub fn bare() -> State {
        State {
            id: new_id(),
            route: "unknown",
            method: String::new(),
            path: String::new(),
            client_ip: None,
            started: Instant::now(),
            done: None,
            status: None,
            bytes: 0,
            user_id: None,
            limited: None,
            error_code: None,
            logs: true,
        }
    }
}

/// A new request id (UUID v4).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The answer's last byte is written: its latency ends here, not after a linger.
pub fn written() {
    let _ = CTX.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.done.is_none() {
            c.done = Some(c.started.elapsed());
        }
    });
}

/// An answer written with no request scope at all (edge.rs's per-address connection
/// cap, before pingora reads the head): counted and logged under `id`.
pub async fn outside(id: String, status: u16, kind: &'static str) {
    scope(State { id, status: Some(status), limited: Some(kind), ..State::bare() }, async {}).await
}

/// Run a request's future in its scope; once it ends, count and log its answer.
pub async fn scope<F: Future>(state: State, fut: F) -> F::Output {
    CTX.scope(RefCell::new(state), async move {
        let out = fut.await;
        finish();
        out
    })
    .await
}

/// A future spawned off a request (a stream's own task) keeps the request's id, so
/// that the SQL it runs (a WebSocket's subscriptions) carries it too.
pub fn carry<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let state = State { id: id(), logs: false, ..State::bare() };
    CTX.scope(RefCell::new(state), fut)
}

/// The current request's id ('' outside a request).
pub fn id() -> String {
    CTX.try_with(|c| c.borrow().id.clone()).unwrap_or_default()
}

/// Every response head the proxy writes for a request: `X-Request-Id`, and the status
/// and declared length noted for the log line and the series.
pub fn stamp(h: &mut ResponseHeader) {
    let _ = CTX.try_with(|c| {
        let mut c = c.borrow_mut();
        let _ = h.insert_header(HEADER, c.id.as_str());
        if c.status.is_none() {
            c.status = Some(h.status.as_u16());
            c.bytes = h.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    });
}

/// An error answer's code (server::Reply::error), for a 429's kind.
pub fn error_code(code: &str) {
    if metrics_on() {
        let _ = CTX.try_with(|c| c.borrow_mut().error_code = Some(code.to_string()));
    }
}

/// A rate limit refused this request (ratelimit.rs).
pub fn limited(kind: &'static str) {
    let _ = CTX.try_with(|c| c.borrow_mut().limited = Some(kind));
}

/// A token was verified (`claims`: its JSON) or refused (its error code).
pub fn token(result: Result<&str, &str>) {
    match result {
        Ok(claims) if json_logs() => {
            #[derive(serde::Deserialize)]
            struct Sub {
                sub: Option<String>,
            }
            let sub = serde_json::from_str::<Sub>(claims).ok().and_then(|c| c.sub);
            let _ = CTX.try_with(|c| c.borrow_mut().user_id = sub);
        }
        Ok(_) => {}
        Err(code) => {
            if metrics_on() {
                metrics::TOKEN_FAILURES.with_label_values(&[code]).inc();
            }
        }
    }
}

/// One JSON log line (a struct, not a `json!` map: no per-field allocation).
#[derive(serde::Serialize)]
struct Line<'a> {
    ts: String,
    level: &'static str,
    request_id: &'a str,
    method: &'a str,
    route: &'static str,
    path: &'a str,
    status: u16,
    duration_ms: f64,
    user_id: Option<&'a str>,
    client_ip: Option<&'a str>,
    bytes: u64,
}

/// The request's answer went out (or the client left): count it and log it.
fn finish() {
    let _ = CTX.try_with(|c| {
        let c = c.borrow();
        if !c.logs {
            return;
        }
        // No head was written: the client left before its answer; nothing to count.
        let Some(status) = c.status else { return };
        let elapsed = c.done.unwrap_or_else(|| c.started.elapsed());
        if metrics_on() {
            let buf = itoa_status(status);
            let status_text = std::str::from_utf8(&buf).unwrap_or("0");
            metrics::REQUESTS.with_label_values(&[c.route, status_text]).inc();
            metrics::LATENCY.with_label_values(&[c.route]).observe(elapsed.as_secs_f64());
            if status == StatusCode::TOO_MANY_REQUESTS.as_u16() {
                let kind = c.limited.unwrap_or_else(|| match c.error_code.as_deref() {
                    Some("too_many_concurrent_requests") => "in_flight",
                    Some("too_many_connections") => "connections",
                    // files/: parallel transfers or open uploads of one caller.
                    Some("too_many_transfers") | Some("too_many_uploads") => "transfers",
                    Some("too_many_subscriptions") => "subscriptions",
                    // Postgres's sign-in throttle (account lockout), and anything else.
                    _ => "throttled",
                });
                metrics::RATE_LIMITED.with_label_values(&[kind]).inc();
            }
        }
        if json_logs() {
            let line = Line {
                ts: rfc3339_now(),
                level: if status >= 500 { "error" } else if status >= 400 { "warn" } else { "info" },
                request_id: &c.id,
                method: &c.method,
                route: c.route,
                path: &c.path,
                status,
                duration_ms: (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
                user_id: c.user_id.as_deref(),
                client_ip: c.client_ip.as_deref(),
                bytes: c.bytes,
            };
            let Ok(mut text) = serde_json::to_vec(&line) else { return };
            text.push(b'\n');
            log_line(&text);
        }
    });
}

/// The JSON log lines waiting for the writer thread. A request never writes stdout
/// itself: a slow reader of stdout (a log shipper behind a pipe) would stall every
/// request task on its worker thread. It appends its line to this buffer under a
/// mutex held for a copy, with no system call and no wake-up: the writer thread drains
/// the buffer every `LOG_TICK` on its own. (A channel to the thread measured worse:
/// `pgbaas-bench --observe` 0.90 on vs off, one futex wake-up and context switch per
/// request on 2 cores.) Past `LOG_MAX_BYTES` waiting, a line is dropped and counted
/// (`pgbaas_log_lines_dropped_total`) rather than slowing requests down.
struct LogQueue {
    waiting: std::sync::Mutex<Vec<u8>>,
    /// Held by whoever writes a drained batch: lines leave whole and in order.
    writing: std::sync::Mutex<()>,
    max_bytes: usize,
    dropped: std::sync::atomic::AtomicU64,
    /// A write failed part way: the next batch starts on a new line.
    broken: std::sync::atomic::AtomicBool,
}

const LOG_MAX_BYTES: usize = 8 << 20;
const LOG_TICK: std::time::Duration = std::time::Duration::from_millis(10);

static LOG: LogQueue = LogQueue::new(LOG_MAX_BYTES);
static LOG_WRITER: std::sync::Once = std::sync::Once::new();

impl LogQueue {
    const fn new(max_bytes: usize) -> LogQueue {
        LogQueue {
            waiting: std::sync::Mutex::new(Vec::new()),
            writing: std::sync::Mutex::new(()),
            max_bytes,
            dropped: std::sync::atomic::AtomicU64::new(0),
            broken: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Queue one whole line; false (and counted) when the queue is full.
    fn push(&self, line: &[u8]) -> bool {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() + line.len() > self.max_bytes {
            drop(w);
            self.lost(1);
            return false;
        }
        w.extend_from_slice(line);
        true
    }

    fn lost(&self, lines: u64) {
        self.dropped.fetch_add(lines, std::sync::atomic::Ordering::Relaxed);
        if metrics_on() {
            metrics::LOG_LINES_DROPPED.inc_by(lines);
        }
    }

    /// Take what waits (`spare`: an empty buffer swapped in, kept for its capacity).
    fn take(&self, spare: &mut Vec<u8>) {
        std::mem::swap(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()), spare);
    }

    /// Write a taken batch to `out`, then empty it. A failed write (a closed or
    /// non-blocking stdout) counts the batch's lines as dropped.
    fn write(&self, batch: &mut Vec<u8>, out: &mut impl Write) {
        if !batch.is_empty() {
            let broken = self.broken.swap(false, std::sync::atomic::Ordering::Relaxed);
            let written = (if broken { out.write_all(b"\n") } else { Ok(()) }).and_then(|()| out.write_all(batch)).and_then(|()| out.flush());
            if written.is_err() {
                self.lost(batch.iter().filter(|&&b| b == b'\n').count() as u64);
                self.broken.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            batch.clear();
        }
    }

    /// Write what waits to `out`, in order.
    fn drain(&self, spare: &mut Vec<u8>, out: &mut impl Write) {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.take(spare);
        self.write(spare, out);
    }
}

/// What is still queued when the process exits (pingora ends with `process::exit`
/// after the shutdown grace) is written, so that a restart loses no request's line;
/// but exit never waits long on a stalled stdout: not while the writer thread is
/// stuck in a write, and at most a second for this last batch.
extern "C" fn flush_at_exit() {
    let Ok(_writing) = LOG.writing.try_lock() else { return };
    let mut batch = Vec::new();
    LOG.take(&mut batch);
    if batch.is_empty() {
        return;
    }
    let (done, wait) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("pgbaas-log-exit".into()).spawn(move || {
        LOG.write(&mut batch, &mut std::io::stdout());
        let _ = done.send(());
    });
    if spawned.is_ok() {
        let _ = wait.recv_timeout(std::time::Duration::from_secs(1));
    }
}

/// The writer thread: drains the queue every LOG_TICK, and says on stderr (never from
/// a request) when lines were dropped, at most every 10 s.
fn log_writer() {
    let mut spare = Vec::with_capacity(64 * 1024);
    let (mut reported, mut last_report) = (0u64, None::<Instant>);
    loop {
        std::thread::sleep(LOG_TICK);
        LOG.drain(&mut spare, &mut std::io::stdout());
        let dropped = LOG.dropped.load(std::sync::atomic::Ordering::Relaxed);
        if dropped > reported && last_report.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10)) {
            let _ = writeln!(std::io::stderr(), "pgbaas: stdout is not keeping up; {dropped} JSON log lines dropped so far");
            (reported, last_report) = (dropped, Some(Instant::now()));
        }
    }
}

/// Hand a finished line to the writer thread (started on first use).
fn log_line(text: &[u8]) {
    LOG_WRITER.call_once(|| {
        // SAFETY: registers a plain function with no arguments, run once at exit.
        unsafe { libc::atexit(flush_at_exit) };
        if let Err(e) = std::thread::Builder::new().name("pgbaas-log".into()).spawn(log_writer) {
            let _ = writeln!(std::io::stderr(), "pgbaas: cannot start the log writer thread: {e}");
        }
    });
    LOG.push(text);
}

fn itoa_status(status: u16) -> [u8; 3] {
    let s = status.min(999);
    [b'0' + (s / 100) as u8, b'0' + (s / 10 % 10) as u8, b'0' + (s % 10) as u8]
}

/// Now as `2026-12-03T19:05:49.123Z`. Hand-written (the civil-from-days algorithm of
/// H. Hinnant) rather than a date crate for one format.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    rfc3339(now.as_secs() as i64, now.subsec_millis())
}

fn rfc3339(secs: i64, millis: u32) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// An outbox worker's `pgbaas_outbox_backlog`: counted (`baas._outbox_backlog`) on the
/// worker's pool at most every 10 s, only when metrics are on.
pub struct Backlog {
    outbox: &'static str,
    last: std::sync::Mutex<Option<Instant>>,
}

pub static MAIL_BACKLOG: Backlog = Backlog::new("mail");
pub static WEBHOOK_BACKLOG: Backlog = Backlog::new("webhooks");

impl Backlog {
    const fn new(outbox: &'static str) -> Backlog {
        Backlog { outbox, last: std::sync::Mutex::new(None) }
    }

    pub async fn refresh(&self, pool: &deadpool_postgres::Pool) {
        if !metrics_on() {
            return;
        }
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(10)) {
                return;
            }
            *last = Some(Instant::now());
        }
        // Bounded: a slow count never holds up the worker; -1 says it failed.
        let count = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client.query_one("select baas._outbox_backlog($1::text)", &[&self.outbox]).await.map_err(|e| e.to_string())
        };
        let gauge = metrics::OUTBOX_BACKLOG.with_label_values(&[self.outbox]);
        match tokio::time::timeout(std::time::Duration::from_secs(5), count).await {
            Ok(Ok(row)) => gauge.set(row.get::<_, Option<i64>>(0).unwrap_or(0)),
            Ok(Err(e)) => {
                log::warn!("counting the {} outbox: {e}", self.outbox);
                gauge.set(-1);
            }
            Err(_) => {
                log::warn!("counting the {} outbox: no answer in 5 s", self.outbox);
                gauge.set(-1);
            }
        }
    }
}

/// The `--metrics-listen` service: `GET /metrics` (every series, gauges read now),
/// 404 for anything else. A separate listener, never the public one.
pub struct MetricsApp {
    /// Read at scrape time: the requests' pool and the live feeds.
    pub gauges: Box<dyn Fn() + Send + Sync>,
}

#[async_trait]
impl HttpServerApp for MetricsApp {
    async fn process_new_http(self: &Arc<Self>, mut s: ServerSession, _shutdown: &ShutdownWatch) -> Option<ReusedHttpStream> {
        match s.read_request().await {
            Ok(true) => {}
            _ => return None,
        }
        let h = s.req_header();
        let (status, ctype, body) = if h.uri.path() == "/metrics" && (h.method == http::Method::GET || h.method == http::Method::HEAD) {
            (self.gauges)();
            (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics::render())
        } else {
            (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", b"not found: GET /metrics\n".to_vec())
        };
        let head = h.method == http::Method::HEAD;
        let mut r = ResponseHeader::build(status, Some(3)).ok()?;
        let _ = r.insert_header(header::CONTENT_TYPE, ctype);
        let _ = r.insert_header(header::CONTENT_LENGTH, body.len());
        let _ = r.insert_header(header::CACHE_CONTROL, "no-store");
        s.write_response_header(Box::new(r)).await.ok()?;
        if !head && !body.is_empty() {
            s.write_response_body(body.into(), true).await.ok()?;
        }
        let settings = HttpPersistentSettings::for_session(&s);
        match s.finish().await {
            Ok(stream) => stream.map(|st| ReusedHttpStream::from_reusable_stream(st, settings)),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_kept_only_when_safe() {
        assert!(super::valid_id(b"abc-123_x.y:z/w+v=u"));
        assert!(super::valid_id(&[b'a'; 128]));
        assert!(!super::valid_id(&[b'a'; 129]));
        assert!(!super::valid_id(b""));
        assert!(!super::valid_id(b"a b"));
        assert!(!super::valid_id(b"a\"b"));
        assert!(!super::valid_id("caf\u{e9}".as_bytes()));
    }

    /// The queue: lines out whole and in order, a line that would pass the bound
    /// dropped and counted (the ones before it kept), room again once drained.
    #[test]
    fn the_log_queue_keeps_lines_whole_in_order_and_drops_past_its_bound() {
        let q = super::LogQueue::new(100);
        let line = |i: usize| format!("{{\"n\":{i:03}}}\n").into_bytes(); // 10 bytes
        for i in 0..10 {
            assert!(q.push(&line(i)), "line {i} fits");
        }
        assert!(!q.push(&line(10)), "the 11th would pass 100 bytes");
        assert_eq!(q.dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
        let (mut spare, mut out) = (Vec::new(), Vec::new());
        q.drain(&mut spare, &mut out);
        let want: Vec<u8> = (0..10).flat_map(line).collect();
        assert_eq!(String::from_utf8(out.clone()).unwrap(), String::from_utf8(want).unwrap());
        assert!(q.push(&line(11)), "room again after a drain");
        q.drain(&mut spare, &mut out);
        assert!(String::from_utf8(out).unwrap().ends_with("{\"n\":011}\n"));

        // A write that fails part way: its lines count as dropped, and the next batch
        // starts on a line of its own.
        struct Half(Vec<u8>, bool);
        impl std::io::Write for Half {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if std::mem::replace(&mut self.1, false) {
                    self.0.extend_from_slice(&b[..b.len() / 2]);
                    return Err(std::io::Error::other("pipe closed"));
                }
                self.0.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut half = Half(Vec::new(), true);
        assert!(q.push(&line(12)) && q.push(&line(13)));
        q.drain(&mut spare, &mut half);
        assert_eq!(q.dropped.load(std::sync::atomic::Ordering::Relaxed), 3, "1 over the bound, 2 in the failed write");
        assert!(q.push(&line(14)));
        q.drain(&mut spare, &mut half);
        let text = String::from_utf8(half.0).unwrap();
        assert!(text.ends_with("\n{\"n\":014}\n"), "{text:?}");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(super::rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(1_796_324_749, 123), "2026-12-03T19:05:49.123Z");
        assert_eq!(super::rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    }
}
