//! A real high-availability cluster for the failover tests (issue 19, F): one etcd (v2
//! API, which the Debian package's python3-etcd speaks) and three Patroni nodes, each
//! running Postgres from the same bin dir as `Cluster` (so the extension that `cargo
//! pgrx install` put there is found), on test-only ports, with data under a temp dir,
//! as the same unprivileged user. Synchronous replication is on
//! (`synchronous_mode: true`): a commit is acknowledged only once a standby has it, and
//! Patroni promotes only that standby.
//!
//! The timings are short for a quick failover: ttl 10 s, loop_wait 2 s, retry_timeout
//! 3 s (Patroni requires loop_wait + 2 * retry_timeout <= ttl). A killed primary's
//! leader key expires within ttl, then the synchronous standby takes over.
//!
//! Every process started here (etcd, Patroni, and the Postgres servers Patroni starts,
//! which outlive a killed Patroni) is killed when the `Patroni` value is dropped, also
//! when a test fails.

use crate::{chown, free_port, os_user, pg_bindir, server_user, DB};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Patroni's DCS timings (see the module comment).
pub const TTL: u64 = 10;
pub const LOOP_WAIT: u64 = 2;
pub const RETRY_TIMEOUT: u64 = 3;

pub struct Node {
    pub name: String,
    /// Postgres's port.
    pub port: u16,
    /// Patroni's REST API port (`/primary`, `/cluster`, as HAProxy's health check uses).
    pub api_port: u16,
    dir: PathBuf,
    patroni: Mutex<Option<Child>>,
}

impl Node {
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The postmaster's pid, from postmaster.pid, if it names a live `postgres`.
    fn postmaster(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "postgres").then_some(pid)
    }
}

/// An etcd and three Patroni nodes; dropped, every process is killed and the data removed.
pub struct Patroni {
    pub dir: PathBuf,
    pub scope: String,
    pub etcd_port: u16,
    pub nodes: Vec<Node>,
    etcd: Mutex<Option<Child>>,
    user: Option<(u32, u32, String)>,
    password: Mutex<Option<String>>,
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// GET `path` of a Patroni REST API: (status, body); None if nothing answers.
pub fn api_get(port: u16, path: &str) -> Option<(u16, String)> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(3)).build();
    match agent.get(&format!("http://127.0.0.1:{port}{path}")).call() {
        Ok(r) => Some((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(s, r)) => Some((s, r.into_string().unwrap_or_default())),
        Err(_) => None,
    }
}

impl Patroni {
    fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        if let Some((uid, gid, _)) = &self.user {
            c.uid(*uid).gid(*gid);
        }
        c.env_remove("PGDATA").env("LC_ALL", "C.UTF-8").env("HOME", &self.dir);
        c
    }

    /// Start etcd and `n` Patroni nodes; return when a primary runs with the extension
    /// created in database `pgbaas` and every other node streams from it, one of them as
    /// the synchronous standby.
    pub fn start(n: usize) -> Result<Patroni> {
        let dir = std::env::temp_dir().join(format!("pgbaas-patroni-{}-{}", std::process::id(), COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let user = server_user();
        if let Some((uid, gid, _)) = &user {
            chown(&dir, *uid, *gid)?;
        }
        let nodes = (0..n)
            .map(|i| Node { name: format!("node{i}"), port: free_port(), api_port: free_port(), dir: dir.join(format!("node{i}")), patroni: Mutex::new(None) })
            .collect();
        let p = Patroni {
            scope: format!("pgbaas-{}-{}", std::process::id(), COUNTER.load(std::sync::atomic::Ordering::SeqCst)),
            dir,
            etcd_port: free_port(),
            nodes,
            etcd: Mutex::new(None),
            user,
            password: Mutex::new(None),
        };
        p.start_etcd()?;
        for i in 0..n {
            p.start_node(i)?;
        }
        let leader = p.wait_primary(Duration::from_secs(90), None)?;
        p.bootstrap(leader)?;
        p.wait_replicas(n - 1, Duration::from_secs(90))?;
        Ok(p)
    }

    fn start_etcd(&self) -> Result<()> {
        let data = self.dir.join("etcd");
        std::fs::create_dir_all(&data)?;
        if let Some((uid, gid, _)) = &self.user {
            chown(&data, *uid, *gid)?;
        }
        let peer = free_port();
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(self.dir.join("etcd.log"))?;
        let child = self
            .cmd(Path::new("etcd"))
            .args(["--name", "e0", "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("e0={peer_url}"), "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.scope])
            // python3-etcd (Patroni's `etcd:` section) speaks the v2 API.
            .arg("--enable-v2")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd")?;
        *self.etcd.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, body)) = api_get(self.etcd_port, "/health") {
                if body.contains("true") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy in 30 s:\n{}", std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node's patroni.yml (JSON, which YAML reads).
    fn config(&self, i: usize) -> Value {
        let node = &self.nodes[i];
        let me = os_user();
        let mut hba = vec!["local all all trust".to_string()];
        for who in ["postgres", me.as_str()] {
            hba.push(format!("host all \"{who}\" 127.0.0.1/32 trust"));
        }
        // Streaming replication over loopback (pg_basebackup, then the walreceiver).
        hba.push("host replication replicator 127.0.0.1/32 trust".into());
        hba.push("host all all 127.0.0.1/32 scram-sha-256".into());
        json!({
            "scope": self.scope,
            "namespace": "/pgbaas-test/",
            "name": node.name,
            "restapi": {"listen": format!("127.0.0.1:{}", node.api_port), "connect_address": format!("127.0.0.1:{}", node.api_port)},
            "etcd": {"host": format!("127.0.0.1:{}", self.etcd_port)},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": true,
                    "postgresql": {
                        "use_pg_rewind": false,
                        "use_slots": true,
                        "parameters": {
                            // Live change feeds decode the WAL (as Cluster's LOGICAL_DECODING).
                            "wal_level": "logical",
                            "max_wal_senders": 10,
                            "max_replication_slots": 50,
                            "max_slot_wal_keep_size": "1GB",
                            "hot_standby": "on",
                            "max_connections": 200,
                            "synchronous_commit": "on"
                        }
                    }
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, {"auth-local": "trust"}, {"auth-host": "scram-sha-256"}]
            },
            "postgresql": {
                "listen": format!("127.0.0.1:{}", node.port),
                "connect_address": format!("127.0.0.1:{}", node.port),
                "data_dir": node.data(),
                "bin_dir": pg_bindir(),
                "pgpass": node.dir.join("pgpass"),
                "use_unix_socket": true,
                // A spread checkpoint (pg_basebackup's default) would make a replica's
                // clone wait minutes after the bootstrap's writes.
                "basebackup": [{"checkpoint": "fast"}],
                "authentication": {
                    "superuser": {"username": "postgres", "password": "postgres-test"},
                    "replication": {"username": "replicator", "password": "replicator-test"}
                },
                "parameters": {
                    "unix_socket_directories": node.dir.join("run"),
                    "shared_buffers": "64MB",
                    // Test data: a killed process loses nothing the kernel has, and the
                    // acknowledgement the tests rely on is the standby's (synchronous
                    // replication), not a local fsync.
                    "fsync": "off"
                },
                "pg_hba": hba
            },
            "tags": {"nofailover": false, "noloadbalance": false, "clonefrom": false, "nosync": false}
        })
    }

    fn start_node(&self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        std::fs::create_dir_all(node.dir.join("run"))?;
        let file = node.dir.join("patroni.yml");
        std::fs::write(&file, serde_json::to_string_pretty(&self.config(i))?)?;
        if let Some((uid, gid, _)) = &self.user {
            for p in [node.dir.clone(), node.dir.join("run"), file.clone()] {
                chown(&p, *uid, *gid)?;
            }
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.dir.join("patroni.log"))?;
        let child = self.cmd(Path::new("patroni")).arg(&file).stdout(log.try_clone()?).stderr(log).spawn().context("starting patroni")?;
        *node.patroni.lock().unwrap() = Some(child);
        Ok(())
    }

    /// The node whose Patroni says it is the running primary (`GET /primary` = 200, the
    /// check HAProxy uses), if any.
    pub fn primary(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.is_alive(i) && matches!(api_get(self.nodes[i].api_port, "/primary"), Some((200, _))))
    }

    fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].patroni.lock().unwrap().is_some()
    }

    /// Wait until a primary other than `not` runs and accepts writes; its index.
    pub fn wait_primary(&self, timeout: Duration, not: Option<usize>) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.primary().filter(|i| Some(*i) != not) {
                if let Ok(mut c) = self.connect(i, "postgres", "postgres") {
                    if let Ok(row) = c.query_one("select not pg_is_in_recovery()", &[]) {
                        if row.get::<_, bool>(0) {
                            return Ok(i);
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("no primary within {timeout:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Patroni's view of the cluster (`GET /cluster` of any live node).
    pub fn members(&self) -> Option<Vec<Value>> {
        (0..self.nodes.len()).filter(|&i| self.is_alive(i)).find_map(|i| {
            let (s, body) = api_get(self.nodes[i].api_port, "/cluster")?;
            if s != 200 {
                return None;
            }
            let v: Value = serde_json::from_str(&body).ok()?;
            v["members"].as_array().cloned()
        })
    }

    /// Wait until `n` replicas run, one of them the synchronous standby.
    pub fn wait_replicas(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.members() {
                let running = |r: &Value| r["state"] == "running" || r["state"] == "streaming";
                let replicas = m.iter().filter(|r| (r["role"] == "replica" || r["role"] == "sync_standby") && running(r)).count();
                let sync = m.iter().any(|r| r["role"] == "sync_standby" && running(r));
                if replicas >= n && (n == 0 || sync) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{n} replicas with a synchronous standby not running within {timeout:?}: {:?}\n{}", self.members(), self.logs());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Database `pgbaas`, the extension, a role for the OS user and baas_authenticator's
    /// password, on the primary (streaming replication carries them to the others), as
    /// Cluster::bootstrap and Cluster::authenticator_url do.
    fn bootstrap(&self, primary: usize) -> Result<()> {
        let mut admin = self.connect(primary, "postgres", "postgres")?;
        if admin.query_opt("select 1 from pg_database where datname = $1", &[&DB])?.is_none() {
            admin.batch_execute(&format!("create database {DB}"))?;
        }
        let me = os_user();
        if me != "postgres" && admin.query_opt("select 1 from pg_roles where rolname = $1", &[&me])?.is_none() {
            let quoted: String = admin.query_one("select quote_ident($1)", &[&me])?.get(0);
            admin.batch_execute(&format!("create role {quoted} login superuser"))?;
        }
        let mut db = self.connect(primary, "postgres", DB)?;
        db.batch_execute("create extension if not exists pgbaas")?;
        let mut bytes = [0u8; 24];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Our own hex, never client input; ALTER ROLE takes no parameters.
        db.batch_execute(&format!("alter role baas_authenticator password '{password}'"))?;
        *self.password.lock().unwrap() = Some(password);
        Ok(())
    }

    /// The proxy's database URL naming every node, in keyword form:
    /// `host=127.0.0.1,... port=a,b,c ... target_session_attrs=read-write`.
    pub fn authenticator_url(&self) -> String {
        let password = self.password.lock().unwrap().clone().unwrap_or_default();
        let hosts = vec!["127.0.0.1"; self.nodes.len()].join(",");
        let ports = self.nodes.iter().map(|n| n.port.to_string()).collect::<Vec<_>>().join(",");
        format!("host={hosts} port={ports} user=baas_authenticator password={password} dbname={DB} target_session_attrs=read-write connect_timeout=3")
    }

    pub fn url(&self, i: usize, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.nodes[i].port)
    }

    pub fn connect(&self, i: usize, user: &str, db: &str) -> Result<postgres::Client> {
        let url = format!("{}?connect_timeout=3", self.url(i, user, db));
        postgres::Client::connect(&url, postgres::NoTls).with_context(|| format!("connecting to {url}"))
    }

    /// The node's machine "dies": its Patroni and its Postgres (postmaster and every
    /// backend) are killed with SIGKILL, so nothing restarts it in place and no backend
    /// lingers to finish a commit.
    pub fn kill(&self, i: usize) {
        if let Some(mut c) = self.nodes[i].patroni.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pm) = self.nodes[i].postmaster() {
            let mut all = children_of(pm);
            all.push(pm);
            for p in &all {
                unsafe { libc::kill(*p, libc::SIGKILL) };
            }
            // Gone (or a zombie) before we return: a request sent after this cannot
            // reach the old primary.
            let deadline = Instant::now() + Duration::from_secs(5);
            while all.iter().any(|p| alive(*p)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// The last lines of every log, for a failure's message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let tail = |p: &Path| {
            let t = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        out.push_str(&format!("--- etcd.log\n{}\n", tail(&self.dir.join("etcd.log"))));
        for n in &self.nodes {
            out.push_str(&format!("--- {} patroni.log\n{}\n", n.name, tail(&n.dir.join("patroni.log"))));
        }
        out
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z")))
        .unwrap_or(false)
}

/// Processes whose parent is `pid` (a postmaster's backends and auxiliary processes).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok()))
                == Some(pid)
        })
        .collect()
}

impl Drop for Patroni {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if let Some(mut c) = self.etcd.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // PGBAAS_KEEP_LOGS=<dir>: keep the logs of a failed run.
        if let Some(keep) = std::env::var_os("PGBAAS_KEEP_LOGS") {
            let to = Path::new(&keep).join(self.dir.file_name().unwrap_or_default());
            let _ = std::fs::create_dir_all(&to);
            let _ = std::fs::copy(self.dir.join("etcd.log"), to.join("etcd.log"));
            for n in &self.nodes {
                let _ = std::fs::copy(n.dir.join("patroni.log"), to.join(format!("{}-patroni.log", n.name)));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the clients of a `WriteLoad` saw.
#[derive(Default)]
pub struct WriteLog {
    /// (document id, its data, when the request was sent)
    pub acked: Vec<(String, Value, Instant)>,
    /// (status, Retry-After, body, when sent) of every answer that was not a 201
    pub refused: Vec<(u16, Option<String>, String, Instant)>,
    /// Requests the proxy did not answer at all (connection refused or reset).
    pub transport: Vec<String>,
}

impl WriteLog {
    /// When the first write sent after `t` that was acknowledged was sent.
    pub fn first_ack_after(&self, t: Instant) -> Option<Instant> {
        self.acked.iter().map(|a| a.2).filter(|a| *a > t).min()
    }
}

/// Clients creating documents in collection `writes` through the proxy at `base`, one
/// thread per token, each recording every answer; after a refusal a client waits
/// 100 ms (as a client honouring Retry-After would, but short, so that the moment the
/// proxy follows a new primary is seen within a fraction of a second).
pub struct WriteLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub log: std::sync::Arc<Mutex<WriteLog>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl WriteLoad {
    pub fn start(base: &str, tokens: &[String]) -> WriteLoad {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let log = std::sync::Arc::new(Mutex::new(WriteLog::default()));
        let threads = tokens
            .iter()
            .enumerate()
            .map(|(w, token)| {
                let (base, token, stop, log) = (base.to_string(), token.clone(), stop.clone(), log.clone());
                std::thread::spawn(move || write_loop(&base, &token, w, &stop, &log))
            })
            .collect();
        WriteLoad { stop, log, threads }
    }

    pub fn acked(&self) -> usize {
        self.log.lock().unwrap().acked.len()
    }

    /// Stop the clients and return what they saw.
    pub fn stop(mut self) -> WriteLog {
        self.halt();
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    fn halt(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for WriteLoad {
    fn drop(&mut self) {
        self.halt();
    }
}

fn write_loop(base: &str, token: &str, w: usize, stop: &std::sync::atomic::AtomicBool, log: &Mutex<WriteLog>) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let data = json!({"writer": w, "n": n, "text": format!("write {n} of writer {w}")});
        let now = Instant::now();
        let r = agent
            .post(&format!("{base}/v1/collections/writes/documents"))
            .set("Authorization", &format!("Bearer {token}"))
            .set("Content-Type", "application/json")
            .send_string(&json!({"data": data}).to_string());
        match r {
            Ok(resp) => {
                let status = resp.status();
                let body: Value = resp.into_string().ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null);
                let mut l = log.lock().unwrap();
                match (status, body["id"].as_str()) {
                    (201, Some(id)) => l.acked.push((id.to_string(), data, now)),
                    _ => l.refused.push((status, None, body.to_string(), now)),
                }
            }
            Err(ureq::Error::Status(status, resp)) => {
                let retry = resp.header("retry-after").map(str::to_string);
                let body = resp.into_string().unwrap_or_default();
                log.lock().unwrap().refused.push((status, retry, body, now));
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => {
                log.lock().unwrap().transport.push(e.to_string());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Patroni {
    /// Collection `writes` and `writers` users on the primary; their access tokens.
    pub fn writers(&self, writers: usize) -> Result<Vec<String>> {
        let primary = self.primary().context("no primary")?;
        let mut db = self.connect(primary, "postgres", DB)?;
        db.batch_execute("select baas.create_collection('writes')")?;
        let mut tokens = Vec::new();
        for w in 0..writers {
            let r: Value = db.query_one("select baas.signup($1, 'a long enough password 1')", &[&format!("w{w}@failover.test")])?.get(0);
            tokens.push(r["access_token"].as_str().context("signup gave no access token")?.to_string());
        }
        Ok(tokens)
    }

    /// The acknowledged writes of `log` that node `i` does not have with their content.
    pub fn lost_writes(&self, i: usize, log: &WriteLog) -> Result<Vec<String>> {
        let mut db = self.connect(i, "postgres", DB)?;
        let mut lost = Vec::new();
        for (id, data, _) in &log.acked {
            let row = db.query_opt(
                "select d.data from baas.documents d join baas.collections c on c.id = d.collection_id where c.name = 'writes' and d.id = $1::text::uuid",
                &[id],
            )?;
            if row.map(|r| r.get::<_, Value>(0)) != Some(data.clone()) {
                lost.push(id.clone());
            }
        }
        Ok(lost)
    }
}
