//! The request path's own PostgreSQL connection: the extended query protocol with
//! every statement of a request sent before one Sync.
//!
//! tokio-postgres ends each statement with a Sync. For a request's statements that means
//! one ReadyForQuery, and one flush (a `send` system call) by the server, per
//! statement. Measured on the benchmark machine, each extra Sync cost the server about
//! 10 µs of CPU, a fifth of a GET's. Here a request is written as Bind/Execute pairs
//! and a single Sync. Postgres runs the statements before a Sync as one implicit
//! transaction: it commits at the Sync, or rolls everything back if any statement
//! fails, and the connection is idle again either way. `set_config(..., true)` lasts
//! until that commit.
//!
//! Statements are prepared (named, with their parameter types described) the first
//! time a connection sees their text, and kept for the connection's life. Parameters
//! are sent in binary with the tokio-postgres `ToSql` encoders; results come back as
//! text, which is all the JSON routes read, or in binary (`run_binary`: file pieces). Other work (key loads, LISTEN, health) keeps
//! using tokio-postgres.
//!
//! Why our own client and not tokio-postgres: the one Sync above (a fifth of a GET's
//! server CPU), which tokio-postgres cannot send. The SCRAM maths and the message
//! encoding are postgres-protocol's; TLS is rustls (pgconfig.rs).
//!
//! Hardening: the URL is read whole (pgconfig.rs: every host in order, hostaddr, TLS,
//! target_session_attrs, connect_timeout); a password is sent in clear or as MD5 only
//! over TLS or a Unix socket; a request abandoned or timed out is cancelled on the
//! server (CancelRequest) and its connection keeps its pool slot until the server is
//! done with it, so server connections never exceed the pool size; one result is
//! bounded (max_result_bytes) before it is buffered.

use bytes::{Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend::Message, frontend};
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use crate::pgconfig::{CancelTo, Io, PgConfig};
use std::ops::DerefMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio_postgres::types::{ToSql, Type};

/// A connection that has prepared this many statement texts is retired after its
/// request (the proxy's routes use a few dozen).
const MAX_STATEMENTS: usize = 256;

/// A read buffer grown past this by a large result is given back after the request.
const KEEP_BUFFER: usize = 1 << 20;

/// What requests' connections are called in `pg_stat_activity`, unless the URL says.
pub const APPLICATION_NAME: &str = "pgbaas-proxy";

/// Default bound on one request's result (max_result_bytes): the largest list page of
/// the largest documents (1 MiB bodies, limit 100 is 100 MiB) is refused well before
/// the proxy's memory is at risk; a few MiB is already a slow mobile download.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 16 << 20;

/// The page budget the proxy gives the extension (`baas.max_response_bytes`, set on
/// each request connection at startup): 15/16 of max_result_bytes, so the statements
/// around a page (set_config of role and claims, under 4 KiB even at the smallest
/// max_result_bytes of 64 KiB) and the DataRow framing fit under the proxy's bound.
pub fn sql_page_budget(max_result: usize) -> usize {
    max_result - max_result / 16
}

/// An abandoned request's connection waits this long for the server to finish after
/// its CancelRequest (holding its pool slot), then is closed.
const ABANDON_DRAIN: Duration = Duration::from_secs(10);

/// The SQLSTATE and detail (the HTTP error code) of a result over max_result_bytes.
pub const TOO_LARGE_CODE: &str = "54000";
pub const TOO_LARGE_DETAIL: &str = "response_too_large";

#[derive(Debug)]
pub enum PgError {
    /// An error Postgres reported (the statements before the Sync are rolled back).
    /// `hint` carries data for the reply, e.g. the current version of a document
    /// whose If-Match failed.
    Db { code: String, message: String, detail: Option<String>, hint: Option<String> },
    /// No usable connection: refused, lost, timed out, or the server broke protocol.
    Conn(String),
    /// The proxy's own mistake (a parameter of the wrong type): a 500, logged.
    Internal(String),
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgError::Db { code, message, .. } => write!(f, "{code}: {message}"),
            PgError::Conn(m) => write!(f, "connection: {m}"),
            PgError::Internal(m) => write!(f, "internal: {m}"),
        }
    }
}

impl From<std::io::Error> for PgError {
    fn from(e: std::io::Error) -> Self {
        PgError::Conn(e.to_string())
    }
}

struct Stmt {
    name: String,
    params: Vec<Type>,
}

/// One statement of a request: prepared text and its parameters.
pub type Step<'a> = (&'a str, &'a [&'a (dyn ToSql + Sync)]);

pub struct Conn {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    stmts: HashMap<String, Stmt>,
    /// Names statements: one that failed to describe may still exist on the server.
    prepared: usize,
    /// Not fit for another request: the pool drops it.
    broken: bool,
    /// Messages have been sent whose answers have not all been read (up to
    /// ReadyForQuery): the connection is out of step until they are, so an error
    /// return meanwhile leaves it unusable.
    in_flight: bool,
    /// A write was started and not finished (its future dropped half-way): the server
    /// has half a message and the connection cannot be brought back in step.
    writing: bool,
    /// Where and how to cancel what this connection's backend runs (BackendKeyData).
    cancel: Option<CancelKey>,
    /// Largest result (and message) accepted; over it the request fails.
    max_result: usize,
    /// ParameterStatus values target_session_attrs needs (in_hot_standby,
    /// default_transaction_read_only), as reported at startup.
    read_only_params: [Option<bool>; 2],
    /// The last request failed because this backend can no longer run it
    /// (`backend_is_stale`): retired, and the request may be run again elsewhere.
    stale: bool,
}

#[derive(Clone, Debug)]
pub struct CancelKey {
    to: CancelTo,
    pid: i32,
    secret: i32,
}

impl CancelKey {
    /// Send a CancelRequest and wait (briefly) until the server has taken it: the
    /// postmaster signals the backend and then closes the connection. Plain, as libpq's
    /// PQcancel: it carries only the key, and is not subject to pg_hba.
    pub async fn send(&self) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        frontend::cancel_request(self.pid, self.secret, &mut buf);
        let go = async {
            let mut io: Box<dyn Io> = match &self.to {
                CancelTo::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
                #[cfg(unix)]
                CancelTo::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
                #[cfg(not(unix))]
                CancelTo::Unix(_) => return Err(std::io::Error::other("no Unix sockets")),
            };
            io.write_all(&buf).await?;
            let mut sink = [0u8; 16];
            while io.read(&mut sink).await? > 0 {}
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(5), go).await.unwrap_or_else(|_| Err(std::io::Error::other("cancel request timed out")))
    }
}

impl Drop for Conn {
    /// A connection dropped with a statement still running (retired after a result
    /// too large, a lost write): ask the server to stop it rather than let it run on
    /// unseen while the pool opens another connection.
    fn drop(&mut self) {
        if self.in_flight {
            if let (Some(key), Ok(rt)) = (self.cancel.take(), tokio::runtime::Handle::try_current()) {
                rt.spawn(async move {
                    if let Err(e) = key.send().await {
                        log::warn!("cancel request failed: {e}");
                    }
                });
            }
        }
    }
}

/// A request's connection given up before its answer came (the client went away, the
/// deadline passed): the server is asked to cancel the statement, and the connection
/// keeps its pool slot until the server has answered (then it goes back to the pool,
/// still good) or ABANDON_DRAIN has passed (then it is closed). So the pool never
/// opens a new server connection while an abandoned one still runs.
pub fn abandon<C: DerefMut<Target = Conn> + Send + 'static>(mut conn: C) {
    if !conn.in_flight {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        conn.broken = true;
        return;
    };
    rt.spawn(async move {
        let c: &mut Conn = &mut conn;
        if c.broken || c.writing {
            c.broken = true;
            return; // out of step: dropping it sends the cancel and closes it
        }
        if let Some(key) = c.cancel.clone() {
            if let Err(e) = key.send().await {
                log::warn!("cancel request failed: {e}");
            }
        }
        match tokio::time::timeout(ABANDON_DRAIN, c.drain(None)).await {
            Ok(_) if !c.broken && !c.in_flight => c.trim(),
            _ => c.broken = true,
        }
    });
}

fn db_error(fields: &mut postgres_protocol::message::backend::ErrorFields<'_>) -> PgError {
    let (mut code, mut message, mut detail, mut hint) = (String::new(), String::new(), None, None);
    while let Ok(Some(f)) = fields.next() {
        let value = || String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'C' => code = value(),
            b'M' => message = value(),
            b'D' => detail = Some(value()),
            b'H' => hint = Some(value()),
            _ => {}
        }
    }
    PgError::Db { code, message, detail, hint }
}

fn unexpected(what: &str) -> PgError {
    PgError::Conn(format!("unexpected message from the server {what}"))
}

fn too_large(limit: usize) -> PgError {
    PgError::Db {
        code: TOO_LARGE_CODE.into(),
        message: format!("the result is larger than the proxy accepts ({limit} bytes, max_result_bytes); ask for fewer or smaller documents"),
        detail: Some(TOO_LARGE_DETAIL.into()),
        hint: None,
    }
}

/// An error that says this backend (not the request, not the database) can no longer
/// run what the request asked, so that a new connection would not fail the same way,
/// and nothing of the request was done: the error aborted the one implicit
/// transaction before anything committed.
///
/// - The extension's shared library was replaced under a backend that had loaded it
///   (a package upgrade, `cargo pgrx install`): the backend still has the old file
///   mapped, or a mapping whose bytes changed under it, and Postgres reports
///   `XX000 unrecognized API version … / unrecognized function API version`,
///   `XX000 incompatible library …`, `42883 could not find function "…" in file
///   "…pgbaas…"`, `42P13 could not find function information for function …` (for
///   a symbol of pgbaas's library: the message names no file; `set_library_symbols`), or,
///   while the file is missing, `58P01 could not access file "$libdir/pgbaas"` /
///   `could not load library "…pgbaas…"` (whose SQLSTATE follows errno).
/// - A kept prepared statement that can no longer be bound (`0A000` at Bind: its
///   result type changed, e.g. by `ALTER EXTENSION pgbaas UPDATE`), or is gone
///   (`26000`). `0A000` raised while executing is an ordinary error.
///
/// Messages are matched in English, the server's default `lc_messages`; under another
/// language only `0A000`/`26000` are recognised and a replaced library's errors stay
/// 500s until the proxy restarts.
/// The C symbols of pgbaas's SQL functions (pg_proc.prosrc of its library), as the
/// key listener last read them (keys.rs). Empty until then: no 42P13 counts as stale.
static LIBRARY_SYMBOLS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Set the symbols of pgbaas's library (`LIBRARY_SYMBOLS`).
pub fn set_library_symbols(mut symbols: Vec<String>) {
    symbols.sort();
    *LIBRARY_SYMBOLS.write().unwrap_or_else(|e| e.into_inner()) = symbols;
}

fn is_library_symbol(name: &str) -> bool {
    LIBRARY_SYMBOLS.read().unwrap_or_else(|e| e.into_inner()).binary_search_by(|s| s.as_str().cmp(name)).is_ok()
}

pub fn backend_is_stale(code: &str, message: &str, at_bind: bool) -> bool {
    let names_pgbaas = || message.contains("pgbaas");
    match code {
        "XX000" => {
            message.starts_with("unrecognized function API version")
                || message.starts_with("unrecognized API version ")
                || message.starts_with("incompatible library ")
                || (message.starts_with("could not load library ") && names_pgbaas())
        }
        "42883" => message.starts_with("could not find function \"") && message.contains("\" in file \"") && names_pgbaas(),
        // Names only the C symbol, not its library: stale only if it is one of ours.
        "42P13" => message
            .strip_prefix("could not find function information for function \"")
            .and_then(|rest| rest.strip_suffix('"'))
            .is_some_and(is_library_symbol),
        "0A000" => at_bind,
        "26000" => true,
        _ => (message.starts_with("could not access file ") || message.starts_with("could not load library ")) && names_pgbaas(),
    }
}

impl Conn {
    /// Connect and authenticate (trust, password, md5 or SCRAM-SHA-256), trying each
    /// host of the URL in order; `timeout` per host unless the URL sets connect_timeout.
    pub async fn connect(cfg: &PgConfig, timeout: Duration) -> Result<Conn, PgError> {
        Self::connect_limited(cfg, timeout, DEFAULT_MAX_RESULT_BYTES).await
    }

    /// `connect`, with results bounded to `max_result` bytes.
    pub async fn connect_limited(cfg: &PgConfig, timeout: Duration, max_result: usize) -> Result<Conn, PgError> {
        let timeout = cfg.connect_timeout.unwrap_or(timeout);
        let mut errors = Vec::new();
        for t in &cfg.targets {
            let attempt = async {
                let opened = cfg.open(t).await.map_err(|e| PgError::Conn(e.message))?;
                Self::connect_one(cfg, opened, max_result).await.map_err(|e| match e {
                    PgError::Conn(m) => PgError::Conn(format!("{}:{}: {m}", t.name, t.port)),
                    e => e,
                })
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(PgError::Conn(format!("{}:{}: connecting timed out after {timeout:?}", t.name, t.port))),
            }
        }
        if errors.len() == 1 {
            return Err(errors.remove(0));
        }
        Err(PgError::Conn(errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")))
    }

    async fn connect_one(cfg: &PgConfig, opened: crate::pgconfig::Opened, max_result: usize) -> Result<Conn, PgError> {
        let io = opened.io;
        let private = opened.private;
        let cfg_pg = &cfg.pg;
        let mut c = Conn {
            io,
            rbuf: BytesMut::with_capacity(8192),
            wbuf: BytesMut::with_capacity(1024),
            stmts: HashMap::new(),
            prepared: 0,
            broken: false,
            in_flight: false,
            writing: false,
            cancel: None,
            max_result,
            read_only_params: [None, None],
            stale: false,
        };
        let read_write = cfg.read_write;
        let cfg = cfg_pg;
        let user = cfg.get_user().ok_or_else(|| PgError::Conn("database_url names no user".into()))?;
        let mut params = vec![
            ("user", user),
            ("database", cfg.get_dbname().unwrap_or(user)),
            ("client_encoding", "UTF8"),
            ("application_name", cfg.get_application_name().unwrap_or(APPLICATION_NAME)),
        ];
        if let Some(o) = cfg.get_options() {
            params.push(("options", o));
        }
        // The extension's page budget, just under our bound: a list page ends short
        // (with `next`) in Postgres before its reply could reach max_result_bytes here.
        let budget = sql_page_budget(max_result).to_string();
        params.push(("baas.max_response_bytes", &budget));
        // --- edge (issue 19): Postgres checks each second, while a statement runs, that
        // the proxy is still there; a statement whose proxy died (cut at the end of a
        // graceful stop's grace) is abandoned and rolled back, not committed unseen while
        // a balancer retries the request on another proxy. (Linux and the BSDs; PG 14+.)
        params.push(("client_connection_check_interval", "1000"));
        frontend::startup_message(params, &mut c.wbuf)?;
        c.flush().await?;
        let password = cfg.get_password();
        let need_password = || password.ok_or_else(|| PgError::Conn("the server asks for a password and database_url has none".into()));
        let mut scram: Option<sasl::ScramSha256> = None;
        let mut scram_final = false;
        loop {
            match c.read().await? {
                Message::AuthenticationOk => {
                    // SCRAM ends with the server's signature, checked in finish():
                    // a server that skips it has not proved it knows the password.
                    if scram.is_some() && !scram_final {
                        return Err(PgError::Conn("the server ended SCRAM authentication without its signature".into()));
                    }
                }
                // Anyone on the path of a plain TCP connection could ask for these
                // (and a server that has the password's SCRAM verifier never needs to).
                Message::AuthenticationCleartextPassword if !private => return Err(PgError::Conn(crate::pgconfig::refusal(false))),
                Message::AuthenticationMd5Password(_) if !private => return Err(PgError::Conn(crate::pgconfig::refusal(true))),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(need_password()?, &mut c.wbuf)?;
                    c.flush().await?;
                }
                Message::AuthenticationMd5Password(b) => {
                    let hash = md5_hash(user.as_bytes(), need_password()?, b.salt());
                    frontend::password_message(hash.as_bytes(), &mut c.wbuf)?;
                    c.flush().await?;
                }
                Message::AuthenticationSasl(b) => {
                    let mut mechs = b.mechanisms();
                    let mut found = false;
                    while let Ok(Some(m)) = mechs.next() {
                        found |= m == sasl::SCRAM_SHA_256;
                    }
                    if !found {
                        return Err(PgError::Conn("the server offers no SASL mechanism the proxy supports (SCRAM-SHA-256)".into()));
                    }
                    let s = sasl::ScramSha256::new(need_password()?, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut c.wbuf)?;
                    c.flush().await?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(b) => {
                    let s = scram.as_mut().ok_or_else(|| unexpected("(SASL continue)"))?;
                    s.update(b.data())?;
                    frontend::sasl_response(s.message(), &mut c.wbuf)?;
                    c.flush().await?;
                }
                Message::AuthenticationSaslFinal(b) => {
                    scram.as_mut().ok_or_else(|| unexpected("(SASL final)"))?.finish(b.data())?;
                    scram_final = true;
                }
                Message::ErrorResponse(b) => return Err(db_error(&mut b.fields())),
                Message::BackendKeyData(k) => {
                    c.cancel = Some(CancelKey { to: opened.cancel_to.clone(), pid: k.process_id(), secret: k.secret_key() });
                }
                Message::ParameterStatus(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(b) => {
                    c.ready(b.status());
                    if read_write && c.read_only().await? {
                        return Err(PgError::Conn("the server is read-only (a standby, or default_transaction_read_only = on) and target_session_attrs=read-write".into()));
                    }
                    return Ok(c);
                }
                _ => return Err(unexpected("while connecting")),
            }
        }
    }

    /// Fit for another request. An idle connection has nothing to read: if the server
    /// has closed it (a restart, `pg_terminate_backend`, an idle timeout), its last
    /// words and end of stream are already waiting, and the connection is dropped here
    /// instead of failing the next request.
    /// The last request failed on an error `backend_is_stale` recognises: the
    /// connection is retired and the request can be run again on another one.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    pub fn is_usable(&mut self) -> bool {
        if self.broken || self.in_flight || !self.rbuf.is_empty() {
            self.broken = true;
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        match Pin::new(&mut self.io).poll_read(&mut cx, &mut buf) {
            Poll::Pending => true,
            Poll::Ready(_) => {
                self.broken = true;
                false
            }
        }
    }

    async fn flush(&mut self) -> Result<(), PgError> {
        self.in_flight = true;
        self.writing = true;
        let r = self.io.write_all(&self.wbuf).await;
        self.writing = false;
        self.wbuf.clear();
        r.map_err(|e| {
            self.broken = true;
            e.into()
        })
    }

    /// The next message that is not asynchronous (notices, parameter changes and
    /// notifications are skipped).
    async fn read(&mut self) -> Result<Message, PgError> {
        loop {
            // A message's length is known from its header: one larger than the bound is
            // refused before it is buffered (a 1 GB row must not become 1 GB here).
            if self.rbuf.len() >= 5 {
                let len = u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]) as usize;
                if len > self.max_result.saturating_add(1024) {
                    self.retire_now();
                    return Err(too_large(self.max_result));
                }
            }
            match Message::parse(&mut self.rbuf) {
                Ok(Some(Message::ParameterStatus(p))) => {
                    let slot = match p.name() {
                        Ok("in_hot_standby") => 0,
                        Ok("default_transaction_read_only") => 1,
                        _ => continue,
                    };
                    self.read_only_params[slot] = p.value().ok().map(|v| v == "on");
                    continue;
                }
                Ok(Some(Message::NoticeResponse(_) | Message::NotificationResponse(_))) => continue,
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(e.into());
                }
            }
            // Room for the rest of a message whose header is in (bounded above), else 8 KiB:
            // a 1 MiB file piece is then read into one allocation, not grown by doubling
            // from 8 KiB (eight reallocations copying ~1 MiB in all, per piece).
            let want = match self.rbuf.get(1..5) {
                Some(h) => (u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize + 1).saturating_sub(self.rbuf.len()),
                None => 0,
            };
            self.rbuf.reserve(want.max(8192));
            match self.io.read_buf(&mut self.rbuf).await {
                Ok(0) => {
                    // The backend is gone: nothing left to cancel when this is dropped.
                    self.broken = true;
                    self.cancel = None;
                    return Err(PgError::Conn("the server closed the connection".into()));
                }
                Ok(_) => {}
                Err(e) => {
                    self.broken = true;
                    self.cancel = None;
                    return Err(e.into());
                }
            }
        }
    }

    /// ReadyForQuery read: every answer is in. Reusable only if idle, outside any
    /// transaction.
    fn ready(&mut self, status: u8) {
        self.in_flight = false;
        if status != b'I' {
            self.broken = true;
        }
    }

    /// For target_session_attrs=read-write, as libpq decides it: from the startup
    /// parameters when the server reports them (Postgres 14 and later), else by
    /// `show transaction_read_only`.
    async fn read_only(&mut self) -> Result<bool, PgError> {
        if let [Some(standby), Some(ro)] = self.read_only_params {
            return Ok(standby || ro);
        }
        frontend::query("show transaction_read_only", &mut self.wbuf)?;
        self.flush().await?;
        let mut ro = None;
        loop {
            match self.read().await? {
                Message::DataRow(b) => {
                    let mut it = b.ranges();
                    if let Some(Some(r)) = it.next()? {
                        ro = Some(&b.buffer()[r] == b"on");
                    }
                }
                Message::ErrorResponse(b) => {
                    let e = db_error(&mut b.fields());
                    self.drain(Some(e)).await?;
                }
                Message::ReadyForQuery(b) => {
                    self.ready(b.status());
                    return ro.ok_or_else(|| unexpected("(no answer to show transaction_read_only)"));
                }
                _ => {}
            }
        }
    }

    /// Give up on this connection at once, its statement still running: cancel it and
    /// close the socket now, not when the pool next looks at the connection. A backend
    /// blocked sending a large result does not act on a cancel until its socket goes
    /// away (Postgres takes only a terminate while writing to the client).
    fn retire_now(&mut self) {
        self.broken = true;
        if let (Some(key), Ok(rt)) = (self.cancel.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                if let Err(e) = key.send().await {
                    log::warn!("cancel request failed: {e}");
                }
            });
        }
        self.io = Box::new(tokio::io::empty());
        self.rbuf = BytesMut::new();
    }

    fn trim(&mut self) {
        if self.rbuf.capacity() > KEEP_BUFFER && self.rbuf.is_empty() {
            self.rbuf = BytesMut::with_capacity(8192);
        }
    }

    /// Read up to and including ReadyForQuery; the first error seen is returned.
    async fn drain(&mut self, mut first: Option<PgError>) -> Result<(), PgError> {
        loop {
            match self.read().await? {
                Message::ReadyForQuery(b) => {
                    self.ready(b.status());
                    return first.map_or(Ok(()), Err);
                }
                Message::ErrorResponse(b) => {
                    let e = db_error(&mut b.fields());
                    first.get_or_insert(e);
                }
                _ => {}
            }
        }
    }

    async fn prepare(&mut self, sql: &str) -> Result<(), PgError> {
        if self.stmts.contains_key(sql) {
            return Ok(());
        }
        self.wbuf.clear();
        self.prepared += 1;
        let name = format!("pgbaas_{}", self.prepared);
        frontend::parse(&name, sql, std::iter::empty(), &mut self.wbuf)?;
        frontend::describe(b'S', &name, &mut self.wbuf)?;
        frontend::sync(&mut self.wbuf);
        self.flush().await?;
        let mut params = None;
        let mut err = None;
        loop {
            match self.read().await? {
                Message::ParseComplete | Message::RowDescription(_) | Message::NoData => {}
                Message::ParameterDescription(b) => {
                    let mut types = Vec::new();
                    let mut it = b.parameters();
                    while let Some(oid) = it.next()? {
                        match Type::from_oid(oid) {
                            Some(t) => types.push(t),
                            None => {
                                // Prepared on the server but unusable here: retire the
                                // connection rather than leave statements behind.
                                self.broken = true;
                                err.get_or_insert(PgError::Internal(format!("parameter of type oid {oid} (not built in) in {sql}")));
                            }
                        }
                    }
                    params = Some(types);
                }
                Message::ErrorResponse(b) => {
                    let e = db_error(&mut b.fields());
                    self.check_stale(&e, false);
                    err.get_or_insert(e);
                }
                Message::ReadyForQuery(b) => {
                    self.ready(b.status());
                    break;
                }
                _ => {
                    self.broken = true;
                    return Err(unexpected("while preparing"));
                }
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        let params = params.ok_or_else(|| unexpected("(no parameter description)"))?;
        if self.prepared >= MAX_STATEMENTS {
            self.broken = true;
        }
        self.stmts.insert(sql.to_string(), Stmt { name, params });
        Ok(())
    }

    /// A backend that can no longer run the request (`backend_is_stale`) would fail
    /// every later one the same way: retire the connection.
    fn check_stale(&mut self, e: &PgError, at_bind: bool) {
        if let PgError::Db { code, message, .. } = e {
            if backend_is_stale(code, message, at_bind) {
                self.broken = true;
                self.stale = true;
            }
        }
    }

    /// Run `steps` as one implicit transaction (one Sync) and return the first row of
    /// step `rows_of`, its columns as text.
    pub async fn run(&mut self, steps: &[Step<'_>], rows_of: usize) -> Result<Option<Vec<Option<String>>>, PgError> {
        let row = self.run_rows(steps, rows_of, None).await?;
        row.map(|cols| {
            cols.into_iter()
                .map(|c| match c {
                    Some(b) => std::str::from_utf8(&b).map(|s| Some(s.to_string())).map_err(|_| PgError::Conn("a result column is not UTF-8".into())),
                    None => Ok(None),
                })
                .collect()
        })
        .transpose()
    }

    /// `run`, with the columns of step `rows_of` in binary (result-format code 1 for
    /// every column), each a `Bytes` sliced from its DataRow (no copy); decode them with
    /// tokio-postgres `FromSql` (bigint: 8 bytes big-endian, text: UTF-8, uuid: 16
    /// bytes, bytea: the bytes). `max_result` bounds this call's result instead of the
    /// connection's max_result_bytes: a file piece (PIECE and some) is read whatever the
    /// page bound is.
    pub async fn run_binary(&mut self, steps: &[Step<'_>], rows_of: usize, max_result: usize) -> Result<Option<Vec<Option<Bytes>>>, PgError> {
        self.run_rows(steps, rows_of, Some(max_result)).await
    }

    async fn run_rows(&mut self, steps: &[Step<'_>], rows_of: usize, binary: Option<usize>) -> Result<Option<Vec<Option<Bytes>>>, PgError> {
        let kept = self.max_result;
        if let Some(m) = binary {
            self.max_result = m;
        }
        let r = self.run_inner(steps, rows_of, binary.is_some()).await;
        self.max_result = kept;
        // A piece's parameter (up to a MiB) grew the write buffer: give it back.
        if self.wbuf.capacity() > KEEP_BUFFER {
            self.wbuf = BytesMut::with_capacity(1024);
        }
        r
    }

    async fn run_inner(&mut self, steps: &[Step<'_>], rows_of: usize, binary: bool) -> Result<Option<Vec<Option<Bytes>>>, PgError> {
        for (sql, _) in steps {
            self.prepare(sql).await?;
        }
        self.wbuf.clear();
        for (i, (sql, params)) in steps.iter().enumerate() {
            let stmt = self.stmts.get(*sql).ok_or_else(|| PgError::Internal("statement not prepared".into()))?;
            if stmt.params.len() != params.len() {
                self.wbuf.clear();
                return Err(PgError::Internal(format!("{sql}: {} parameters given, {} expected", params.len(), stmt.params.len())));
            }
            // One format code applies to every column (the protocol's shorthand).
            let formats: &[i16] = if binary && i == rows_of { &[1] } else { &[] };
            let r = frontend::bind(
                "",
                &stmt.name,
                std::iter::repeat_n(1i16, params.len()),
                params.iter().zip(&stmt.params),
                |(p, ty), buf| match p.to_sql_checked(ty, buf)? {
                    tokio_postgres::types::IsNull::Yes => Ok(postgres_protocol::IsNull::Yes),
                    tokio_postgres::types::IsNull::No => Ok(postgres_protocol::IsNull::No),
                },
                formats.iter().copied(),
                &mut self.wbuf,
            );
            if let Err(e) = r {
                self.wbuf.clear();
                let why = match e {
                    frontend::BindError::Conversion(e) => e.to_string(),
                    frontend::BindError::Serialization(e) => e.to_string(),
                };
                return Err(PgError::Internal(format!("{sql}: {why}")));
            }
            frontend::execute("", 0, &mut self.wbuf)?;
        }
        frontend::sync(&mut self.wbuf);
        self.flush().await?;

        let mut done = 0;
        let mut bound = 0;
        let mut row = None;
        let mut total = 0usize;
        loop {
            let m = self.read().await?;
            if let Message::DataRow(b) = &m {
                total += b.buffer().len();
                if total > self.max_result {
                    let limit = self.max_result;
                    self.retire_now();
                    return Err(too_large(limit));
                }
            }
            match m {
                Message::BindComplete => bound += 1,
                Message::DataRow(b) if done == rows_of && row.is_none() => {
                    let mut cols = Vec::new();
                    let mut it = b.ranges();
                    while let Some(r) = it.next()? {
                        cols.push(r.map(|r| b.buffer_bytes().slice(r)));
                    }
                    row = Some(cols);
                }
                Message::DataRow(_) => {}
                Message::CommandComplete(_) | Message::EmptyQueryResponse => done += 1,
                Message::ErrorResponse(b) => {
                    let e = db_error(&mut b.fields());
                    // A statement that errs before its BindComplete failed at Bind.
                    self.check_stale(&e, bound == done);
                    let r = self.drain(Some(e)).await.map(|_| None);
                    self.trim();
                    return r;
                }
                Message::ReadyForQuery(b) => {
                    self.ready(b.status());
                    self.trim();
                    return Ok(row);
                }
                _ => {
                    self.broken = true;
                    return Err(unexpected("while running a request"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{backend_is_stale, set_library_symbols};

    /// As the key listener reads them; the same in every test (they run in parallel).
    fn symbols() {
        set_library_symbols(vec!["signup_wrapper".into(), "authenticate_wrapper".into(), "baas_jsonb_eq".into()]);
    }

    /// The errors seen when the installed library was replaced under warm connections
    /// (tests/tests/heal.rs reproduces them), and while the file is missing.
    #[test]
    fn a_replaced_or_missing_library_is_stale() {
        symbols();
        for (code, message) in [
            ("XX000", "unrecognized function API version: 1835103092"),
            ("XX000", "unrecognized API version 0 reported by info function \"pg_finfo_signup_wrapper\""),
            ("XX000", "incompatible library \"/usr/lib/postgresql/15/lib/pgbaas.so\": version mismatch"),
            ("XX000", "incompatible library \"/usr/lib/postgresql/15/lib/pgbaas.so\": magic block mismatch"),
            ("42883", "could not find function \"find_compiled_wrapper\" in file \"/usr/lib/postgresql/15/lib/pgbaas.so\""),
            ("42P13", "could not find function information for function \"authenticate_wrapper\""),
            ("58P01", "could not access file \"$libdir/pgbaas\": No such file or directory"),
            ("58P01", "could not load library \"/usr/lib/postgresql/15/lib/pgbaas.so\": No such file or directory"),
            ("XX000", "could not load library \"/usr/lib/postgresql/15/lib/pgbaas.so\": invalid ELF header"),
        ] {
            assert!(backend_is_stale(code, message, false), "{code} {message}");
        }
    }

    #[test]
    fn a_statement_that_cannot_be_bound_any_more_is_stale_only_at_bind() {
        assert!(backend_is_stale("0A000", "cached plan must not change result type", true));
        assert!(!backend_is_stale("0A000", "cached plan must not change result type", false), "raised while executing");
        assert!(backend_is_stale("26000", "prepared statement \"pgbaas_3\" does not exist", false));
    }

    /// Errors a request itself causes, or that a new connection would meet as well,
    /// are answered as they are, never retried.
    #[test]
    fn ordinary_errors_are_not_stale() {
        symbols();
        for (code, message) in [
            ("42883", "function baas.nope(text) does not exist"),
            ("42883", "could not find function \"x\" in file \"/usr/lib/postgresql/15/lib/other_ext.so\""),
            ("58P01", "could not access file \"$libdir/other_ext\": No such file or directory"),
            // Another library's function: the message names no file, only the symbol.
            ("42P13", "could not find function information for function \"pg_crypt\""),
            ("42P13", "could not find function information for function \"authenticate_wrapper_x\""),
            ("XX000", "cache lookup failed for function 12345"),
            ("XX000", "unexpected error"),
            ("57014", "canceling statement due to statement timeout"),
            ("57P01", "terminating connection due to administrator command"),
            ("23505", "duplicate key value violates unique constraint"),
            ("40001", "could not serialize access due to concurrent update"),
        ] {
            assert!(!backend_is_stale(code, message, true), "{code} {message}");
        }
    }
}
