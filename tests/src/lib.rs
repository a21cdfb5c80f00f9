//! pgbaas test kit: start a real Postgres 15 cluster (under a temp dir or a given dir,
//! as an unprivileged OS user when we are root, since Postgres refuses root), create
//! the extension, and start the real proxy binary. Used by the end-to-end tests and by
//! `pgbaas-dev run`, the README's run command.

pub mod fakepg;
/// A real OpenID Connect key endpoint and token signer for the sign-in tests (issue 16).
pub mod oidc;
/// etcd and three Patroni nodes for the failover tests (issue 19, F).
pub mod patroni;
pub mod realtime;
/// A streaming replica of a test cluster (issue 19, read replicas).
pub mod replica;
/// A TCP relay that can black-hole and heal, for the fault tests (issue 19).
pub mod relay;
/// A real SMTP server for the email tests (issue 16).
pub mod smtp;
/// An independent RFC 6238 oracle for the multi-factor tests.
pub mod totp;
/// A real HTTP receiver for the webhook tests (issue 18).
pub mod webhook_sink;

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const DB: &str = "pgbaas";

/// Directory of the Postgres 15 server binaries.
pub fn pg_bindir() -> PathBuf {
    if let Ok(d) = std::env::var("PGBAAS_PG_BINDIR") {
        return PathBuf::from(d);
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Ok(o) = out {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    PathBuf::from("/usr/lib/postgresql/15/bin")
}

/// A free TCP port on loopback for a server a test starts (Postgres, the proxy, a sink).
///
/// Taken below the kernel's ephemeral range: a port the kernel hands out for `:0` is released
/// before the server binds it, and in that gap any outgoing connection (the proxy's own pool,
/// a client) may get it as its local port — CI once lost a run that way ("127.0.0.1:35361 still
/// in use"). Ports below the range are only ever taken by an explicit bind, and the counter
/// keeps this process from handing one out twice; the bind check skips ports in use by others.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()))
        .unwrap_or(32768);
    const FLOOR: u32 = 10_000;
    if low > FLOOR + 1_000 {
        let span = low - FLOOR;
        // Each process starts at its own offset, so two test binaries run side by side rarely
        // walk the same ports.
        let start = (std::process::id() * 7919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = FLOOR + (start + n) % span;
            if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return port as u16;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// (uid, gid) to run Postgres as: ourselves, or user `postgres` (else `nobody`) when root.
fn server_user() -> Option<(u32, u32, String)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in ["postgres", "nobody"] {
        let c = CString::new(name).unwrap();
        let pw = unsafe { libc::getpwnam(c.as_ptr()) };
        if !pw.is_null() {
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Some((uid, gid, name.to_string()));
        }
    }
    panic!("running as root and neither user 'postgres' nor 'nobody' exists");
}

/// The OS user name that started us (the role that may connect without a password).
pub fn os_user() -> String {
    std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
        let pw = unsafe { libc::getpwuid(libc::geteuid()) };
        if pw.is_null() {
            "postgres".into()
        } else {
            unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) }.to_string_lossy().into_owned()
        }
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Live change feeds read a logical replication slot (docs/realtime.md): every cluster
/// the kit starts decodes, and bounds the WAL a forgotten slot may keep.
const LOGICAL_DECODING: &str =
    "wal_level = logical\nmax_slot_wal_keep_size = '1GB'\nmax_replication_slots = 50\nmax_wal_senders = 10\n";

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    user: Option<(u32, u32, String)>,
    temporary: bool,
    /// Whether start-up creates the extension in database `pgbaas` (not for a cluster
    /// that pg_restore or an older version fills).
    extension: bool,
    stopped: Mutex<bool>,
}

impl Cluster {
    fn cmd(&self, bin: &str) -> Command {
        let mut c = Command::new(pg_bindir().join(bin));
        if let Some((uid, gid, _)) = &self.user {
            c.uid(*uid).gid(*gid);
        }
        c.env_remove("PGDATA").env("LC_ALL", "C.UTF-8");
        c
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A throwaway cluster under /tmp on a free port, removed when dropped.
    pub fn temporary() -> Result<Cluster> {
        Self::temporary_with(true)
    }

    /// A throwaway cluster whose database `pgbaas` is empty when `extension` is false:
    /// a fresh server for pg_restore, or one where a test creates the extension itself.
    pub fn temporary_with(extension: bool) -> Result<Cluster> {
        let dir = std::env::temp_dir().join(format!(
            "pgbaas-test-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Self::open_with(&dir, free_port(), true, extension)
    }

    /// A throwaway cluster like `temporary_with`, whose postgresql.conf also gets
    /// `settings` (lines such as `shared_preload_libraries = 'pg_cron'`) before its
    /// first start.
    pub fn temporary_with_settings(extension: bool, settings: &str) -> Result<Cluster> {
        let dir = std::env::temp_dir().join(format!(
            "pgbaas-test-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Self::open_configured(&dir, free_port(), true, extension, settings)
    }

    /// Open (initdb on first use) and start the cluster in `dir`.
    pub fn open(dir: &Path, port: u16, temporary: bool) -> Result<Cluster> {
        Self::open_with(dir, port, temporary, true)
    }

    fn open_with(dir: &Path, port: u16, temporary: bool, extension: bool) -> Result<Cluster> {
        Self::open_configured(dir, port, temporary, extension, "")
    }

    fn open_configured(dir: &Path, port: u16, temporary: bool, extension: bool, settings: &str) -> Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let user = server_user();
        let c = Cluster { dir, port, user, temporary, extension, stopped: Mutex::new(false) };
        if let Some((uid, gid, _)) = &c.user {
            chown(&c.dir, *uid, *gid)?;
        }
        if !c.data().join("PG_VERSION").exists() {
            c.initdb(temporary)?;
        }
        // Clusters made before live change feeds (a pgbaas-dev data directory) get the
        // settings at their next start.
        let conf = c.data().join("postgresql.conf");
        if !std::fs::read_to_string(&conf)?.contains("wal_level = logical") {
            std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&conf)?, LOGICAL_DECODING.as_bytes())?;
        }
        // Only lines in force count: the sample file's commented `#name = value` lines do
        // not (they "contained" e.g. `synchronous_commit = on`; issue 19, D).
        let in_force = std::fs::read_to_string(&conf)?.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
        if !settings.is_empty() && !in_force.contains(settings) {
            let extra = format!("\n# extra settings\n{settings}\n");
            std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&conf)?, extra.as_bytes())?;
        }
        if c.is_running() {
            // A previous run was killed before it could stop Postgres: reuse it.
            eprintln!("pgbaas: Postgres in {} is already running; reusing it", c.dir.display());
        } else {
            c.start()?;
        }
        c.bootstrap()?;
        Ok(c)
    }

    fn initdb(&self, temporary: bool) -> Result<()> {
        run(
            self.cmd("initdb")
                .arg("-D")
                .arg(self.data())
                .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"]),
            "initdb",
        )?;
        let me = os_user();
        // Loopback only. postgres and the OS user that started the cluster connect
        // without a password; everyone else (baas_authenticator included) needs one.
        let mut hba = String::from("# written by pgbaas\nlocal all all trust\n");
        for who in ["postgres", me.as_str()] {
            hba.push_str(&format!("host all \"{who}\" 127.0.0.1/32 trust\nhost all \"{who}\" ::1/128 trust\n"));
        }
        hba.push_str("host all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n");
        std::fs::write(self.data().join("pg_hba.conf"), hba)?;
        // wal_level = logical: live change feeds decode the WAL (issue 14's capture).
        let mut conf = String::from(
            "\n# pgbaas\nlisten_addresses = '127.0.0.1'\nmax_connections = 200\nshared_buffers = '256MB'\n\
             wal_level = logical\n",
        );
        conf.push_str(LOGICAL_DECODING);
        if temporary {
            // Throwaway test clusters: durability buys nothing, speed does.
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(self.data().join("postgresql.conf"))?;
        std::io::Write::write_all(&mut f, conf.as_bytes())?;
        if let Some((uid, gid, _)) = &self.user {
            chown_r(&self.data(), *uid, *gid)?;
        }
        Ok(())
    }

    fn start(&self) -> Result<()> {
        let sockdir = self.dir.join("run");
        std::fs::create_dir_all(&sockdir)?;
        if let Some((uid, gid, _)) = &self.user {
            chown(&sockdir, *uid, *gid)?;
        }
        let opts = format!("-p {} -k {}", self.port, sockdir.display());
        run(
            self.cmd("pg_ctl")
                // Rust backtraces on inside Postgres, as an operator debugging may have
                // them: an error that picked one up on its way through the extension
                // would carry it in its DETAIL, where the tests look for error codes.
                .env("RUST_BACKTRACE", "1")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("postgres.log"))
                .args(["-o", &opts, "-w", "-t", "60", "start"]),
            "pg_ctl start",
        )
        .map_err(|e| {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            anyhow::anyhow!("{e}\npostgres.log:\n{log}")
        })?;
        if self.temporary {
            register_cleanup(self.dir.clone(), self.data(), self.user.clone());
        }
        Ok(())
    }

    /// Database, extension, and a role for the OS user; idempotent.
    fn bootstrap(&self) -> Result<()> {
        let mut admin = self.connect("postgres", "postgres")?;
        let exists = admin.query_opt("select 1 from pg_database where datname = $1", &[&DB])?.is_some();
        if !exists {
            admin.batch_execute(&format!("create database {DB}"))?;
        }
        let me = os_user();
        if me != "postgres" {
            let has = admin.query_opt("select 1 from pg_roles where rolname = $1", &[&me])?.is_some();
            if !has {
                let quoted: String = admin.query_one("select quote_ident($1)", &[&me])?.get(0);
                admin.batch_execute(&format!("create role {quoted} login superuser"))?;
            }
        }
        if self.extension {
            let mut db = self.connect("postgres", DB)?;
            db.batch_execute("create extension if not exists pgbaas")?;
        }
        Ok(())
    }

    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn connect(&self, user: &str, db: &str) -> Result<postgres::Client> {
        let url = self.url(user, db);
        postgres::Client::connect(&url, postgres::NoTls).with_context(|| format!("connecting to {url}"))
    }

    /// Give baas_authenticator a password (a random one kept in `<dir>/authenticator.password`)
    /// and return the URL the proxy should use.
    pub fn authenticator_url(&self) -> Result<String> {
        // Tests call this from many threads at once: one ALTER ROLE per cluster per
        // process (concurrent ALTER ROLEs fail with "tuple concurrently updated").
        static DONE: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
        let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, url)) = done.iter().find(|(d, _)| *d == self.dir) {
            return Ok(url.clone());
        }
        let url = self.set_authenticator_password()?;
        done.push((self.dir.clone(), url.clone()));
        Ok(url)
    }

    fn set_authenticator_password(&self) -> Result<String> {
        let file = self.dir.join("authenticator.password");
        let password = match std::fs::read_to_string(&file) {
            Ok(p) if p.trim().len() >= 32 => p.trim().to_string(),
            _ => {
                let mut bytes = [0u8; 24];
                let mut f = std::fs::File::open("/dev/urandom")?;
                std::io::Read::read_exact(&mut f, &mut bytes)?;
                let p: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                std::fs::write(&file, &p)?;
                std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                p
            }
        };
        let mut admin = self.connect("postgres", DB)?;
        // The password is our own hex, never client input; ALTER ROLE takes no parameters.
        admin.batch_execute(&format!("alter role baas_authenticator password '{password}'"))?;
        Ok(format!("postgres://baas_authenticator:{password}@127.0.0.1:{}/{DB}", self.port))
    }

    pub fn stop(&self) -> Result<()> {
        let mut stopped = self.stopped.lock().unwrap();
        if *stopped {
            return Ok(());
        }
        *stopped = true;
        let status = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() && self.is_running() {
            bail!("pg_ctl stop failed: {status}");
        }
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("status")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.temporary {
            let _ = self.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

static TEMP_COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Temporary clusters held in statics are never dropped; stop them at process exit.
static CLEANUP: Mutex<Vec<(PathBuf, PathBuf, Option<(u32, u32, String)>)>> = Mutex::new(Vec::new());

fn register_cleanup(dir: PathBuf, data: PathBuf, user: Option<(u32, u32, String)>) {
    let mut list = CLEANUP.lock().unwrap();
    if list.is_empty() {
        unsafe { libc::atexit(cleanup_at_exit) };
    }
    list.push((dir, data, user));
}

extern "C" fn cleanup_at_exit() {
    let list = match CLEANUP.lock() {
        Ok(l) => l.clone(),
        Err(_) => return,
    };
    kill_children();
    for (dir, data, user) in list {
        if !data.exists() {
            continue;
        }
        let mut c = Command::new(pg_bindir().join("pg_ctl"));
        if let Some((uid, gid, _)) = user {
            c.uid(uid).gid(gid);
        }
        let _ = c
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // PGBAAS_KEEP_LOGS=<dir>: keep each temporary cluster's server log (a worker's
        // last words, say) after the cluster is removed.
        if let Some(keep) = std::env::var_os("PGBAAS_KEEP_LOGS") {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(dir.join("postgres.log"), Path::new(&keep).join(format!("{name}.log")));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).with_context(|| format!("chown {}", p.display()))
}

fn chown_r(p: &Path, uid: u32, gid: u32) -> Result<()> {
    chown(p, uid, gid)?;
    if p.is_dir() {
        for e in std::fs::read_dir(p)? {
            chown_r(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Workspace root (where Cargo.toml with [workspace] lives).
/// A process's CPU seconds so far (user + system), from /proc (0 if it is gone).
pub fn proc_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)) / ticks
}

/// A field of /proc/<pid>/status in KiB (`"VmRSS:"`, `"VmHWM:"`), 0 if missing.
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The proxy binary: $PGBAAS_PROXY_BIN, else target/release/pgbaas-proxy.
pub fn proxy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PGBAAS_PROXY_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace_root().join("target"));
    target.join("release").join("pgbaas-proxy")
}

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn kill_children() {
    if let Ok(list) = CHILDREN.lock() {
        for pid in list.iter() {
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
}

/// A running proxy process.
pub struct Proxy {
    pub child: Child,
    pub port: u16,
}

impl Proxy {
    /// Start the proxy binary with `args` on a free port and wait until /healthz answers.
    /// Rate limits are off unless `extra` sets `--rate-limits` (the test suite signs up
    /// hundreds of users from one address; tests/tests/abuse.rs turns them on).
    pub fn start(database_url: &str, extra: &[&str]) -> Result<Proxy> {
        let bin = proxy_bin();
        if !bin.exists() {
            bail!("{} not found: build it with `cargo build --release -p pgbaas-proxy`", bin.display());
        }
        let port = free_port();
        let child = Command::new(&bin)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--database-url", database_url])
            .args(extra)
            .args(if extra.contains(&"--rate-limits") { &[][..] } else { &["--rate-limits", "off"][..] })
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", std::env::var("PGBAAS_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        CHILDREN.lock().unwrap().push(child.id());
        let mut p = Proxy { child, port };
        p.wait_healthy(Duration::from_secs(30))?;
        Ok(p)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("proxy exited during start-up: {status}");
            }
            if http_status(self.port, "/healthz") == Some(200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("proxy did not become healthy in {timeout:?}")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status of a plain GET over a raw socket (no client library needed).
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}
