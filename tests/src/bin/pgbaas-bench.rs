//! The side-by-side benchmark: pgbaas through its proxy, against the physical limit
//! (the same SQL calls issued by pgbench), against Parse Server on the same Postgres
//! cluster and against PocketBase (src/bench_pocketbase.rs), in one run. Prints one table,
//! with the proxy's CPU per request and its peak RSS during each workload (VmHWM, reset
//! through /proc/<pid>/clear_refs before it). Without --quick the table also holds files
//! (row 8: pgbaas-bench-files --summary, its own cluster and proxy) and live feeds (row 9:
//! the --realtime measurement without its create rounds), measured in the same run.
//!
//!   make bench                          (installs wrk, postgis, Parse Server, PocketBase; builds; runs)
//!   target/release/pgbaas-bench [--quick] [--no-peer] [--no-pocketbase] [--pocketbase] [--seconds N] [--connections N] [--pool N] [--only 1..9] [--pinned] [--perf DIR]
//!
//! --quick: 2 s per workload, 10 connections and a small data set (the test suite's smoke run);
//! it skips PocketBase unless --pocketbase is given.
//! --no-peer: without Parse Server; --no-pocketbase: without PocketBase.
//! --pinned: Postgres on CPU 0, the proxy, wrk and pgbench on CPU 1, so that the ratio
//! to the limit measures the proxy rather than three programs sharing two cores (no peers).
//! --perf DIR: after each measured proxy run, one more under `perf record` (DIR/get.data …).
//! --pool: the proxy's pool size and pgbench's second connection count (default: twice
//! the cores).
//! docs/benchmarks.md has a full run. Data is generated here with fixed seeds.
//!
//!   target/release/pgbaas-bench --realtime [--subscribers N] [--rate N] [--seconds N] [--doc-bytes N] [--latency-only] [--compare-worker N]
//!
//! --realtime: only the live change feeds' figures (src/bench_realtime.rs): 10,000
//! WebSocket subscribers, 500 changes/s, create throughput with capture on and off.
//! --doc-bytes: pad each change's document to about N bytes (large documents' latency);
//! --latency-only: skip the create-throughput rounds (wrk), for a quicker latency figure;
//! --compare-worker N: N more latency rounds, the capture worker off and on alternated.

#[path = "../bench_realtime.rs"]
mod bench_realtime;
#[path = "../bench_pocketbase.rs"]
mod pocketbase_peer;

use anyhow::{bail, Context, Result};
use pgbaas_testkit::{pg_bindir, workspace_root, Cluster, Proxy, DB};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Args {
    quick: bool,
    /// Parse Server (--no-peer turns it off).
    peer: bool,
    /// PocketBase: off with --no-pocketbase, and by default in --quick mode.
    pocketbase: bool,
    secs: u64,
    warm: u64,
    conns: usize,
    items: i64,
    users: i64,
    patch_pool: i64,
    /// The proxy's database pool, and pgbench's second connection count.
    pool: usize,
    /// Run only these workloads (1-7), e.g. while profiling.
    only: Vec<usize>,
    /// Run the live change feeds' workloads instead.
    realtime: bool,
    subscribers: usize,
    rate: u64,
    doc_bytes: usize,
    latency_only: bool,
    compare_worker: usize,
    /// Reads on a streaming replica vs on the primary instead (issue 19, replicas).
    replicas: bool,
    /// Postgres on CPU 0; the proxy, wrk and pgbench on CPU 1 (issue 20, item 4).
    pinned: bool,
    /// After each measured proxy run, one more run under `perf record`, kept here.
    perf: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args { quick: false, peer: true, pocketbase: true, secs: 10, warm: 2, conns: 50, items: 100_000, users: 100, patch_pool: 100_000, only: vec![], pool: default_pool(), realtime: false, subscribers: 10_000, rate: 500, doc_bytes: 0, latency_only: false, compare_worker: 0, replicas: false, pinned: false, perf: None };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut pocketbase = None;
    let mut i = 0;
    while i < argv.len() {
        let num = |i: usize| -> Result<u64> {
            argv.get(i + 1).and_then(|v| v.parse().ok()).with_context(|| format!("{} needs a number", argv[i]))
        };
        match argv[i].as_str() {
            "--quick" => {
                a.quick = true;
                // 2 s with 10 connections: at 1 s with 50, on a loaded 2-core machine,
                // pgbench's 50 SCRAM connections and the warm-up's queued logins could
                // take the whole second, leaving no transaction to measure.
                a.secs = 2;
                a.warm = 1;
                a.conns = 10;
                a.items = 10_000;
                // Each PATCH target is used once (If-Match: "1"): a range must outlast 2 s
                // of the fastest run. 10,000 ran out once PATCH passed ~5,000/s (pgbench
                // pipelined at 4,878/s in the CI run of 2026-12-04: 1,673 refusals).
                a.patch_pool = 25_000;
            }
            "--no-peer" => a.peer = false,
            "--no-pocketbase" => pocketbase = Some(false),
            "--pocketbase" => pocketbase = Some(true),
            "--realtime" => a.realtime = true,
            "--replicas" => a.replicas = true,
            "--pinned" => a.pinned = true,
            "--perf" => {
                a.perf = Some(PathBuf::from(argv.get(i + 1).context("--perf needs a directory")?));
                i += 1;
            }
            "--latency-only" => a.latency_only = true,
            "--compare-worker" => {
                a.compare_worker = num(i)? as usize;
                i += 1;
            }
            "--doc-bytes" => {
                a.doc_bytes = num(i)? as usize;
                i += 1;
            }
            "--subscribers" => {
                a.subscribers = num(i)? as usize;
                i += 1;
            }
            "--rate" => {
                a.rate = num(i)?.max(2);
                i += 1;
            }
            "--only" => {
                a.only.push(num(i)? as usize);
                i += 1;
            }
            "--seconds" => {
                a.secs = num(i)?;
                i += 1;
            }
            "--connections" => {
                a.conns = num(i)? as usize;
                i += 1;
            }
            "--pool" => {
                a.pool = (num(i)? as usize).max(1);
                i += 1;
            }
            other => bail!("unknown argument {other}; see the comment at the top of pgbaas-bench.rs"),
        }
        i += 1;
    }
    a.pocketbase = pocketbase.unwrap_or(!a.quick);
    if a.pinned {
        // A peer started from the pinned thread would share CPU 1 with the load
        // generator: this mode compares the proxy with pgbench only.
        a.peer = false;
        a.pocketbase = false;
    }
    Ok(a)
}

/// Deterministic document ids, so pgbench scripts and wrk Lua scripts can compute them.
const ID_PREFIX: &str = "00000000-0000-7000-8000-";
/// The Parse door's application id in the benchmark (issue 21).
const PARSE_DOOR_APP: &str = "benchdoor";

fn doc_id(k: i64) -> String {
    format!("{ID_PREFIX}{k:012x}")
}
const PASSWORD: &str = "bench password 1";
/// The proxy's database pool, and pgbench's second connection count: twice the cores
/// (the usual rule for a CPU-bound Postgres; docs/benchmarks.md compares 4, 8 and the
/// proxy's default 16 on this project's 2-core machine).
fn default_pool() -> usize {
    2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// One measured run: requests per second and latency percentiles in ms.
#[derive(Clone, Default)]
struct Run {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
    requests: u64,
    /// Proxy CPU seconds per 10k requests (pgbaas runs only).
    cpu_per_10k: Option<f64>,
    /// Postgres's CPU seconds (all its processes) per 10k requests (pgbaas runs only).
    pg_cpu_per_10k: Option<f64>,
    /// The proxy's peak RSS during the run, KiB (VmHWM, reset before it; pgbaas runs only).
    rss_peak_kb: Option<u64>,
}

fn fmt_run(r: &Option<Run>) -> (String, String, String) {
    match r {
        Some(r) => (format!("{:.0}", r.rps), format!("{:.2}", r.p50), format!("{:.2}", r.p99)),
        None => ("–".into(), "–".into(), "–".into()),
    }
}

// ------------------------------------------------------------------------- wrk

fn wrk(url: &str, script: &Path, secs: u64, conns: usize, offset: i64) -> Result<Run> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{conns}"), &format!("-d{secs}s"), "--latency", "--timeout", "10s", "-s"])
        .arg(script)
        .arg(url)
        .args(["--", &offset.to_string()])
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("unreadable wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Run> {
    let dur = |s: &str| -> Option<f64> {
        let s = s.trim();
        let (num, mult) = if let Some(v) = s.strip_suffix("us") {
            (v, 0.001)
        } else if let Some(v) = s.strip_suffix("ms") {
            (v, 1.0)
        } else if let Some(v) = s.strip_suffix('s') {
            (v, 1000.0)
        } else {
            return None;
        };
        num.parse::<f64>().ok().map(|n| n * mult)
    };
    let mut r = Run::default();
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().ok()?;
        } else if let Some(v) = l.strip_prefix("50%") {
            r.p50 = dur(v)?;
        } else if let Some(v) = l.strip_prefix("99%") {
            r.p99 = dur(v)?;
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().ok()?;
        } else if l.starts_with("Socket errors:") {
            r.errors += l.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).sum::<u64>();
        } else if l.contains("requests in") {
            r.requests = l.split_whitespace().next()?.parse().ok()?;
        }
    }
    (r.rps > 0.0).then_some(r)
}

/// Waits (at most `limit`) until the live-feed capture worker ("pgbaas realtime
/// capture") is idle: after the load it worked for minutes on the Postgres side of the
/// machine. In a pinned run it took 17% of Postgres's CPU while the first workloads
/// ran, and the pgbench limits measured first came out low (list and create through
/// the proxy above 100% of theirs): figures taken while it works are the steady state
/// of neither the limit nor the proxy. Idle: under 20 ms of CPU in a second, twice in
/// a row; no worker after 10 s counts as idle too.
fn capture_caught_up(cluster: &Cluster, limit: Duration) -> Result<Duration> {
    let t = Instant::now();
    let mut quiet = 0;
    // This cluster's worker only: a child of its postmaster (other clusters, e.g. the
    // test suite's other benchmark runs, have workers of their own).
    let pm: u32 = std::fs::read_to_string(cluster.data().join("postmaster.pid"))?.lines().next().unwrap_or("").trim().parse()?;
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
    };
    loop {
        let workers: Vec<u32> = std::fs::read_dir("/proc")?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).map(|c| c.starts_with(b"postgres: pgbaas realtime capture")).unwrap_or(false))
            .filter(|pid| parent(*pid) == Some(pm))
            .collect();
        if workers.is_empty() && t.elapsed() > Duration::from_secs(10) {
            return Ok(t.elapsed());
        }
        let before: f64 = workers.iter().map(|p| proc_usage(*p).0).sum();
        std::thread::sleep(Duration::from_secs(1));
        let after: f64 = workers.iter().map(|p| proc_usage(*p).0).sum();
        // A worker that ended meanwhile reads as 0: not a quiet second.
        quiet = if !workers.is_empty() && (0.0..0.02).contains(&(after - before)) { quiet + 1 } else { 0 };
        if quiet >= 2 || t.elapsed() > limit {
            return Ok(t.elapsed());
        }
    }
}

/// Runs this thread, and the processes and threads it starts from now on, on `cpu` only.
fn pin_to_cpu(cpu: usize) -> Result<()> {
    // The machine's CPUs, not this thread's (available_parallelism reads the affinity
    // mask, which the first call has narrowed to one).
    if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
        bail!("--pinned needs two CPUs");
    }
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays within it (cpu < 2).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity(CPU {cpu}): {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CPU seconds (user + system) and peak RSS (kB) of a process, from /proc.
fn proc_usage(pid: u32) -> (f64, u64) {
    (pgbaas_testkit::proc_cpu_s(pid), pgbaas_testkit::proc_status_kb(pid, "VmHWM:"))
}

/// CPU seconds (user + system) of a Postgres cluster: the postmaster and its live
/// children (backends, background workers), from /proc. Only differences over a run
/// where no backend exits are meaningful (the proxy's pooled connections live on).
fn pg_cpu(cluster: &Cluster) -> Option<f64> {
    let pm: u32 = std::fs::read_to_string(cluster.data().join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()?;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut sum = 0.0;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let f: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("").split_whitespace().collect();
        // After the command name: state, ppid, ...; utime and stime are the 12th and 13th.
        if pid == pm || f.get(1).and_then(|v| v.parse::<u32>().ok()) == Some(pm) {
            sum += f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        }
    }
    Some(sum / ticks)
}

/// Warm up, then measure; with `pid`, the proxy's CPU time per 10k requests. The
/// script gets an offset (`init(args)`): scripts that use each target once (PATCH)
/// take the warm-up's from [2P, 3P) and the run's from [3P, 4P).
fn wrk_measured(a: &Args, url: &str, script: &Path, pid: Option<u32>) -> Result<Run> {
    wrk_measured_pg(a, url, script, pid, None)
}

/// `wrk_measured`, and with `cluster`, Postgres's CPU time per 10k requests too.
fn wrk_measured_pg(a: &Args, url: &str, script: &Path, pid: Option<u32>, cluster: Option<&Cluster>) -> Result<Run> {
    wrk(url, script, a.warm, a.conns, 2 * a.patch_pool)?;
    if let Some(pid) = pid {
        // Writing 5 to clear_refs resets VmHWM to the current RSS: the peak of this run.
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
    let before = pid.map(proc_usage);
    let pg_before = cluster.and_then(pg_cpu);
    let mut r = wrk(url, script, a.secs, a.conns, 3 * a.patch_pool)?;
    r.rss_peak_kb = pid.map(|p| proc_usage(p).1);
    if let (Some(pid), Some((cpu0, _))) = (pid, before) {
        let (cpu1, _) = proc_usage(pid);
        if r.requests > 0 {
            r.cpu_per_10k = Some((cpu1 - cpu0) / r.requests as f64 * 10_000.0);
        }
    }
    if let (Some(c0), Some(c1)) = (pg_before, cluster.and_then(pg_cpu)) {
        if r.requests > 0 {
            r.pg_cpu_per_10k = Some((c1 - c0) / r.requests as f64 * 10_000.0);
        }
    }
    // --perf: a profile of the proxy from a run of its own, so that perf's cost stays
    // out of the figures (read it with `perf report -i DIR/get.data --no-children --sort dso,symbol`).
    if let (Some(dir), Some(pid)) = (&a.perf, pid) {
        std::fs::create_dir_all(dir)?;
        let name = script.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let mut perf = Command::new("perf")
            // DWARF call graphs: the release build keeps no frame pointers.
            .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-p", &pid.to_string(), "-o"])
            .arg(dir.join(format!("{name}.data")))
            .args(["--", "sleep", &a.secs.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("perf record (apt-get install linux-perf)")?;
        let _ = wrk(url, script, a.secs, a.conns, 8 * a.patch_pool);
        perf.wait()?;
    }
    Ok(r)
}

// --------------------------------------------------------------------- pgbench

/// Warm up, then measure, with `conns` connections. Scripts get `:base`, the first of
/// P targets of their own for scripts that use each target once (PATCH): ranges
/// `range` (warm-up) and `range + 1` (the run), counted in units of P.
#[allow(clippy::too_many_arguments)]
fn pgbench(a: &Args, conns: usize, range: i64, cluster: &Cluster, password: &str, script: &Path, defines: &[(&str, String)], dir: &Path) -> Result<Run> {
    let run = |secs: u64, base: i64, log: bool| -> Result<(String, Vec<f64>)> {
        let prefix = dir.join("pgblog");
        for e in std::fs::read_dir(dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("pgblog") {
                std::fs::remove_file(e.path())?;
            }
        }
        let mut c = Command::new(pg_bindir().join("pgbench"));
        c.args(["-n", "-M", "prepared", "-c", &conns.to_string(), "-j", "2", "-T", &secs.to_string()])
            .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "baas_authenticator"])
            .arg("-f")
            .arg(script)
            .env("PGPASSWORD", password)
            .current_dir(dir);
        for (k, v) in defines {
            c.arg("-D").arg(format!("{k}={v}"));
        }
        c.arg("-D").arg(format!("base={base}")).arg("-D").arg("i=0").arg("-D").arg(format!("per_client={}", a.patch_pool / conns as i64));
        if log {
            c.arg("-l").arg(format!("--log-prefix={}", prefix.display()));
        }
        c.arg(DB);
        let out = c.output().context("running pgbench")?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            bail!("pgbench failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        }
        let mut lat = Vec::new();
        if log {
            for e in std::fs::read_dir(dir)?.flatten() {
                if e.file_name().to_string_lossy().starts_with("pgblog") {
                    for line in std::fs::read_to_string(e.path())?.lines() {
                        // client_id transaction_no time(µs) script_no epoch epoch_us
                        if let Some(us) = line.split_whitespace().nth(2).and_then(|v| v.parse::<f64>().ok()) {
                            lat.push(us / 1000.0);
                        }
                    }
                }
            }
        }
        Ok((text, lat))
    };
    run(a.warm, range * a.patch_pool, false)?;
    let (text, mut lat) = run(a.secs, (range + 1) * a.patch_pool, true)?;
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench output:\n{text}"))?;
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    lat.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let p = |q: f64| lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0.0);
    Ok(Run { rps: tps, p50: p(0.5), p99: p(0.99), errors: failed, requests: lat.len() as u64, cpu_per_10k: None, pg_cpu_per_10k: None, rss_peak_kb: None })
}

/// The proxy's per-request transaction (db.rs): authenticate + statement timeout, then
/// the route's statement. `claims` is the SQL for the claims. Pipelined, both go out
/// before the first answer is read and end with one Sync, so Postgres runs them as one
/// implicit transaction, exactly as the proxy sends them. One at a time (pgbench's
/// usual way), each statement waits for the one before, so they need BEGIN and COMMIT
/// around them to share a transaction.
fn pgbench_script(setup: &str, claims: &str, call: &str, pipelined: bool) -> String {
    let auth = format!(
        "select baas.authenticate({claims}), pg_catalog.set_config('statement_timeout', '5000', true), pg_catalog.set_config('baas.client_ip', '127.0.0.1', true);"
    );
    if pipelined {
        format!("{setup}\n\\startpipeline\n{auth}\n{call};\n\\endpipeline\n")
    } else {
        format!("{setup}\nBEGIN;\n{auth}\n{call};\nCOMMIT;\n")
    }
}

// ------------------------------------------------------------------------ argon2

/// Raw argon2id hashes per second on all cores, with the extension's parameters
/// (m = 19 MiB, t = 2, p = 1; extension/src/auth/password.rs).
fn argon2_rate(secs: f64) -> f64 {
    use argon2::{Algorithm, Argon2, Params, Version};
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let done = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let done = &done;
            s.spawn(move || {
                let a = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19 * 1024, 2, 1, Some(32)).unwrap());
                let mut out = [0u8; 32];
                let salt = [t as u8; 16];
                while start.elapsed().as_secs_f64() < secs {
                    a.hash_password_into(PASSWORD.as_bytes(), &salt, &mut out).unwrap();
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    done.load(std::sync::atomic::Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

// ------------------------------------------------------------------------ main

struct Row {
    name: &'static str,
    /// pgbench with the client's connection count, with the proxy's pool size, and
    /// with the pool size and the proxy's pipelining.
    limit: Option<Run>,
    limit_pool: Option<Run>,
    limit_pipe: Option<Run>,
    pgbaas: Option<Run>,
    parse: Option<Run>,
    pocketbase: Option<Run>,
    /// A peer's failed run: shown under the table, but the program does not fail.
    notes: Vec<String>,
    /// What failed in this workload, each with its reason: shown under the table, the
    /// rest of which is still printed (a failed run's cells are "failed").
    failed: Vec<String>,
}

/// A failed run's reason in one line, short enough for the table's notes.
fn reason(e: &anyhow::Error) -> String {
    let text = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > 300 {
        format!("{}…", text.chars().take(300).collect::<String>())
    } else {
        text
    }
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--failover") {
        return failover::run(); // issue 19, F: the mode at the end of this file
    }
    // --- A. Observe (issue 19): its own arguments (observe_overhead below).
    if std::env::args().any(|a| a == "--observe") {
        return observe_overhead();
    }
    let a = parse_args()?;
    if a.perf.is_some() && Command::new("perf").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        bail!("--perf needs perf: apt-get install linux-perf");
    }
    for tool in ["wrk"] {
        if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            bail!("{tool} is not installed: apt-get install {tool} (make bench does)");
        }
    }
    if a.realtime {
        let o = bench_realtime::Opts { subscribers: a.subscribers, users: (a.subscribers / 10).max(1), rate: a.rate, secs: a.secs, wrk_secs: 5, wrk_conns: a.conns, doc_bytes: a.doc_bytes, wrk_rounds: if a.latency_only { 0 } else { 6 }, compare_rounds: a.compare_worker };
        return bench_realtime::run(&o, |url, script, secs, conns| wrk(url, script, secs, conns, 0).map(|r| (r.rps, r.errors))).map(|_| ());
    }
    if a.replicas {
        return replicas::run(&a);
    }
    let work = std::env::temp_dir().join(format!("pgbaas-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let _cleanup = Cleanup(work.clone());
    let t0 = Instant::now();
    // --pinned: the postmaster inherits CPU 0 from this thread, and every backend it
    // forks; then this thread moves to CPU 1, where the proxy, wrk and pgbench (all
    // started from it) inherit it. The ratio to the limit then compares the proxy with
    // pgbench, each on its own core against the same one-core Postgres.
    if a.pinned {
        pin_to_cpu(0)?;
    }
    let cluster = Cluster::temporary()?;
    if a.pinned {
        pin_to_cpu(1)?;
        println!("pinned: Postgres on CPU 0; the proxy, wrk and pgbench on CPU 1");
    }
    let mut db = cluster.connect("postgres", DB)?;

    // ---- data: users, collections, documents (fixed shapes, deterministic ids)
    println!("pgbaas benchmark: {} s per workload after {} s warm-up, {} connections{}", a.secs, a.warm, a.conns, if a.quick { " (quick)" } else { "" });
    let mut tokens = Vec::new();
    let mut claims = Vec::new();
    for i in 0..a.users {
        let r: serde_json::Value = db.query_one("select baas.signup($1, $2)", &[&format!("u{i}@bench.test"), &PASSWORD])?.get(0);
        let token = r["access_token"].as_str().context("signup returned no token")?.to_string();
        let payload = token.split('.').nth(1).context("token")?;
        claims.push(String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)?)?);
        tokens.push(token);
    }
    // items: owners round-robin over the users; cat = (g / 100) % 1000, so each cat
    // value has ~100 documents with 100 different owners; every 10th (g % 10 = 5) is
    // shared with user 0 by an ACL grant. User 0 reads ~11 of each cat's ~100.
    db.batch_execute(
        "select baas.create_collection('items');
         select baas.create_collection('writes');
         select baas.create_collection('patches');",
    )?;
    db.execute(
        "insert into baas.documents (collection_id, id, owner, data, acl_read)
         select c.id, ($3 || lpad(to_hex(g), 12, '0'))::uuid, (u.ids)[1 + (g % 100)]::uuid,
                jsonb_build_object('n', g, 'cat', (g / 100) % 1000, 'title', 'item ' || g),
                case when g % 10 = 5 then array['user:' || (u.ids)[1]] else '{}' end
           from baas.collections c, (select array_agg(id::text order by created_at) as ids from baas.users) u,
                generate_series(1, $1::bigint) g
          where c.name = $2",
        &[&a.items, &"items", &ID_PREFIX],
    )?;
    // patches: user 0's, all at version 1; each PATCH request takes its own target
    // (8 ranges of P: warm-up and run for pgbench at 50 and at pool-size connections,
    // for wrk, and for pipelined pgbench; a ninth for the --perf run).
    db.execute(
        "insert into baas.documents (collection_id, id, owner, data)
         select c.id, ($2 || lpad(to_hex(g), 12, '0'))::uuid, (select id from baas.users order by created_at limit 1),
                jsonb_build_object('n', g, 'seen', false)
           from baas.collections c, generate_series(1, $1::bigint) g where c.name = 'patches'",
        &[&(a.patch_pool * if a.perf.is_some() { 9 } else { 8 }), &ID_PREFIX],
    )?;
    // The team's own schema (issue 17): a trivial STABLE function and a protected table
    // with the items' ids and owners, served at /v1/rpc and /v1/tables.
    db.batch_execute(
        "create schema api;
         grant usage on schema api to baas_anon, baas_user, baas_service;
         create function api.next_n(n integer) returns integer language sql stable as 'select n + 1';
         revoke execute on function api.next_n(integer) from public;
         grant execute on function api.next_n(integer) to baas_user;
         create table api.rows (id bigint primary key, owner uuid not null, title text not null, cat integer not null);
         select baas.expose_schema('api');
         select baas.protect('api.rows', owner => 'owner');",
    )?;
    db.execute(
        "insert into api.rows (id, owner, title, cat)
         select g, (u.ids)[1 + (g % 100)]::uuid, 'item ' || g, (g / 100) % 1000
           from (select array_agg(id::text order by created_at) as ids from baas.users) u, generate_series(1, $1::bigint) g",
        &[&a.items],
    )?;
    db.batch_execute("select baas.create_index('items', 'cat', concurrently => false)")?; // ready before the run starts
    db.batch_execute("vacuum analyze")?;
    println!("data: {} users, {} items, {} patch targets, loaded in {:.1} s", a.users, a.items, a.patch_pool * if a.perf.is_some() { 9 } else { 8 }, t0.elapsed().as_secs_f64());

    let auth_url = cluster.authenticator_url()?;
    let password = auth_url.split(':').nth(2).and_then(|s| s.split('@').next()).context("authenticator password")?.to_string();
    // Clients cut off at the end of each wrk run are logged as errors by pingora.
    if std::env::var_os("PGBAAS_TEST_LOG").is_none() {
        std::env::set_var("PGBAAS_TEST_LOG", "off");
    }
    // Limits off, as for any load test (a benchmark is one client hammering logins).
    // (issue 21) with the Parse door on, for workloads 1 and 2 through /parse.
    let proxy = Proxy::start(&auth_url, &["--pool-size", &a.pool.to_string(), "--rate-limits", "off", "--parse-app-id", PARSE_DOOR_APP])?;
    let pid = proxy.child.id();
    // The proxy's live-feed hub starts the capture worker, which then decodes the load.
    let caught_up = capture_caught_up(&cluster, Duration::from_secs(if a.quick { 10 } else { 120 }))?;
    println!("waited {:.1} s for the live-feed capture worker to be idle", caught_up.as_secs_f64());
    let base = proxy.base();

    // ---- scripts
    let u0 = &tokens[0];
    let claims0 = claims[0].clone();
    let shared: Vec<i64> = (1..=a.items).filter(|g| g % 10 == 5).collect();
    let lua_ids = |ks: &[i64]| ks.iter().map(|k| format!("\"{}\"", doc_id(*k))).collect::<Vec<_>>().join(",");
    let write = |name: &str, text: String| -> Result<PathBuf> {
        let p = work.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    let auth_lua = format!("wrk.headers[\"Authorization\"] = \"Bearer {u0}\"\n");
    let get_lua = write(
        "get.lua",
        format!(
            "{auth_lua}local ids = {{{}}}\nrequest = function()\n  return wrk.format(\"GET\", \"/v1/collections/items/documents/\" .. ids[math.random(#ids)])\nend\n",
            lua_ids(&shared)
        ),
    )?;
    let list_lua = write(
        "list.lua",
        format!("{auth_lua}request = function()\n  return wrk.format(\"GET\", \"/v1/collections/items/documents?limit=20&where=%7B%22cat%22%3A\" .. math.random(0, 999) .. \"%7D\")\nend\n"),
    )?;
    let create_lua = write(
        "create.lua",
        format!("{auth_lua}wrk.headers[\"Content-Type\"] = \"application/json\"\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"POST\", \"/v1/collections/writes/documents\", nil, '{{\"data\": {{\"n\": ' .. i .. ', \"title\": \"written\"}}}}')\nend\n"),
    )?;
    // PATCH: wrk's two threads take disjoint halves of the range the offset names;
    // every target is still at version 1.
    let patch_lua = write(
        "patch.lua",
        format!(
            "{auth_lua}wrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"If-Match\"] = '\"1\"'\n\
             local n = 0\nlocal base = 0\nlocal threads = 0\nfunction setup(thread)\n  thread:set(\"tid\", threads)\n  threads = threads + 1\nend\n\
             function init(args)\n  base = tonumber(args[1]) + tid * {half}\nend\n\
             request = function()\n  n = n + 1\n  \
             return wrk.format(\"PATCH\", \"/v1/collections/patches/documents/\" .. string.format(\"{ID_PREFIX}%012x\", base + n), nil, '{{\"data\": {{\"seen\": true}}}}')\nend\n",
            half = a.patch_pool / 2
        ),
    )?;
    // User 0 owns the rows whose id is 100k (g % 100 = 0 -> ids[1]).
    let own_rows: Vec<i64> = (1..=a.items).filter(|g| g % 100 == 0).collect();
    let rpc_lua = write(
        "rpc.lua",
        format!("{auth_lua}request = function()\n  return wrk.format(\"GET\", \"/v1/rpc/next_n?n=\" .. math.random(0, 1000000))\nend\n"),
    )?;
    let row_lua = write(
        "row.lua",
        format!(
            "{auth_lua}local ids = {{{}}}\nrequest = function()\n  return wrk.format(\"GET\", \"/v1/tables/rows/\" .. ids[math.random(#ids)])\nend\n",
            own_rows.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(",")
        ),
    )?;
    let login_lua = write(
        "login.lua",
        format!(
            "wrk.headers[\"Content-Type\"] = \"application/json\"\nrequest = function()\n  return wrk.format(\"POST\", \"/v1/auth/login\", nil, '{{\"email\": \"u' .. math.random(0, {}) .. '@bench.test\", \"password\": \"{PASSWORD}\"}}')\nend\n",
            a.users - 1
        ),
    )?;

    let id_expr = format!("('{ID_PREFIX}' || lpad(to_hex(:k::bigint), 12, '0'))");
    // Each pgbench script twice: one statement at a time, and pipelined.
    let scripts = |name: &str, setup: &str, claims: &str, call: &str| -> Result<(PathBuf, PathBuf)> {
        Ok((
            write(&format!("{name}.sql"), pgbench_script(setup, claims, call, false))?,
            write(&format!("{name}-pipelined.sql"), pgbench_script(setup, claims, call, true))?,
        ))
    };
    const CLAIMS: &str = ":claims::text::jsonb";
    let pgb_get = scripts(
        "get",
        &format!("\\set r random(0, {})\n\\set k 5 + 10 * :r", shared.len() - 1),
        CLAIMS,
        &format!("select x::text, x ->> 'version' from baas.get_document('items', {id_expr}) x"),
    )?;
    let pgb_list = scripts(
        "list",
        "\\set c random(0, 999)",
        CLAIMS,
        // The route's statement without `expand` (proxy/src/routes/mod.rs).
        "select baas._list_documents_text('items', ('{\"cat\": ' || :c::text || '}')::jsonb, null, 20, 0, false, null::text::uuid, null)",
    )?;
    let pgb_create = scripts(
        "create",
        "",
        CLAIMS,
        "select x::text, x ->> 'version' from baas.create_document('writes', '{\"n\": 1, \"title\": \"written\"}'::jsonb, null, null::text::uuid) x",
    )?;
    // Per-client counter (-D i=0), so every client patches its own targets once each.
    let pgb_patch = scripts(
        "patch",
        "\\set i :i + 1\n\\set k :base + :client_id * :per_client + :i",
        CLAIMS,
        &format!("select x::text, x ->> 'version' from baas.patch_document('patches', {id_expr}, '{{\"seen\": true}}'::jsonb, 1) x"),
    )?;
    let pgb_rpc = scripts(
        "rpc",
        "\\set n random(0, 1000000)",
        CLAIMS,
        "select coalesce(x.body, ''), x.is_void::text from baas.rpc('next_n', jsonb_build_object('n', :n::text), pg_catalog.set_config('transaction_read_only', 'on', true) = 'on') x",
    )?;
    let pgb_row = scripts(
        "row",
        &format!("\\set r random(1, {})\n\\set k 100 * :r", own_rows.len()),
        CLAIMS,
        "select x.data::text, x.version::text from baas.table_get('rows', :k::text) x",
    )?;
    // Client k signs in as user k (as many accounts as clients: see login_clients).
    let pgb_login = scripts(
        "login",
        &format!("\\set u :client_id % {}", a.users),
        "null",
        &format!("select x::text from baas.login('u' || :u::text || '@bench.test', '{PASSWORD}') x"),
    )?;

    // (issue 21) The Parse door: user 0 gets the Parse username u0 and signs in through
    // /parse; the same GET and list as workloads 1 and 2, as a Parse SDK sends them.
    db.execute("insert into baas.parse_usernames (user_id, username) select id, 'u0' from baas.users order by created_at limit 1", &[])?;
    let parse_token: String = {
        let r = ureq::post(&format!("{base}/parse/login"))
            .set("X-Parse-Application-Id", PARSE_DOOR_APP)
            .set("Content-Type", "application/json")
            .send_string(&format!(r#"{{"username": "u0", "password": "{PASSWORD}"}}"#))
            .context("signing in through /parse")?;
        let v: serde_json::Value = serde_json::from_str(&r.into_string()?)?;
        v["sessionToken"].as_str().context("no sessionToken from /parse/login")?.to_string()
    };
    let parse_lua = format!("wrk.headers[\"X-Parse-Application-Id\"] = \"{PARSE_DOOR_APP}\"\nwrk.headers[\"X-Parse-Session-Token\"] = \"{parse_token}\"\n");
    let parse_get_lua = write(
        "parse-get.lua",
        format!(
            "{parse_lua}local ids = {{{}}}\nrequest = function()\n  return wrk.format(\"GET\", \"/parse/classes/Items/\" .. ids[math.random(#ids)])\nend\n",
            lua_ids(&shared)
        ),
    )?;
    let parse_list_lua = write(
        "parse-list.lua",
        format!("{parse_lua}request = function()\n  return wrk.format(\"GET\", \"/parse/classes/Items?limit=20&where=%7B%22cat%22%3A\" .. math.random(0, 999) .. \"%7D\")\nend\n"),
    )?;

    // ---- each workload once by hand first: a workload that only produces errors
    // would otherwise just look fast.
    let agent = ureq::AgentBuilder::new().build();
    let bearer = format!("Bearer {u0}");
    let check = |what: &str, r: Result<ureq::Response, ureq::Error>| -> Result<()> {
        match r {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, resp)) => bail!("{what}: HTTP {code} {}", resp.into_string().unwrap_or_default()),
            Err(e) => bail!("{what}: {e}"),
        }
    };
    check("GET", agent.get(&format!("{base}/v1/collections/items/documents/{}", doc_id(shared[0]))).set("Authorization", &bearer).call())?;
    for path in [format!("/parse/classes/Items/{}", doc_id(shared[0])), "/parse/classes/Items?limit=20&where=%7B%22cat%22%3A5%7D".to_string()] {
        check(&path, agent.get(&format!("{base}{path}")).set("X-Parse-Application-Id", PARSE_DOOR_APP).set("X-Parse-Session-Token", &parse_token).call())?;
    }
    check("list", agent.get(&format!("{base}/v1/collections/items/documents?limit=20&where=%7B%22cat%22%3A1%7D")).set("Authorization", &bearer).call())?;
    check(
        "POST",
        agent.post(&format!("{base}/v1/collections/writes/documents")).set("Authorization", &bearer).set("Content-Type", "application/json").send_string(r#"{"data": {"n": 0}}"#),
    )?;
    check(
        "PATCH",
        agent
            .request("PATCH", &format!("{base}/v1/collections/patches/documents/{}", doc_id(4 * a.patch_pool)))
            .set("Authorization", &bearer)
            .set("Content-Type", "application/json")
            .set("If-Match", "\"1\"")
            .send_string(r#"{"data": {"seen": true}}"#),
    )?;
    check("rpc", agent.get(&format!("{base}/v1/rpc/next_n?n=1")).set("Authorization", &bearer).call())?;
    check("table row", agent.get(&format!("{base}/v1/tables/rows/{}", own_rows[0])).set("Authorization", &bearer).call())?;
    check(
        "login",
        agent.post(&format!("{base}/v1/auth/login")).set("Content-Type", "application/json").send_string(&format!(r#"{{"email": "u1@bench.test", "password": "{PASSWORD}"}}"#)),
    )?;

    // ---- the second peer, PocketBase: loaded now, measured in each of workloads 1-3
    // right after pgbaas (see `measure`).
    let pb: std::result::Result<pocketbase_peer::Peer, String> = if !a.pocketbase {
        Err(if a.quick { "PocketBase not measured (--quick; --pocketbase runs it)" } else { "PocketBase not measured (--no-pocketbase)" }.to_string())
    } else {
        pocketbase_peer::start(&a, &work).map_err(|e| format!("PocketBase not measured: {e:#}"))
    };

    // ---- run
    let defs = vec![("claims", claims0.clone())];
    let defs_patch = defs.clone();
    let mut rows = Vec::new();
    // A workload's run that fails (pgbench aborted, wrk unreadable) is noted in its row
    // and the others go on: the table is always printed, the program fails after it.
    // `clients`: pgbench's first run's connection count (the client's, else fewer).
    let measure = |name: &'static str, sql: &(PathBuf, PathBuf), defs: &[(&str, String)], lua: &Path, clients: usize| -> Row {
        let mut row = Row { name, limit: None, limit_pool: None, limit_pipe: None, pgbaas: None, parse: None, pocketbase: None, notes: vec![], failed: vec![] };
        let n: usize = name[..1].parse().unwrap_or(0);
        if !a.only.is_empty() && !a.only.contains(&n) {
            return row;
        }
        eprintln!(".. {name}");
        let mut take = |what: String, r: Result<Run>| match r {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!(".. {name}: {what} failed: {}", reason(&e));
                row.failed.push(format!("{what}: {}", reason(&e)));
                None
            }
        };
        let limit = take(format!("pgbench -c{clients}"), pgbench(&a, clients, 0, &cluster, &password, &sql.0, defs, &work));
        let limit_pool = take(format!("pgbench -c{}", a.pool), pgbench(&a, a.pool, 4, &cluster, &password, &sql.0, defs, &work));
        let limit_pipe = take(format!("pgbench -c{} pipelined", a.pool), pgbench(&a, a.pool, 6, &cluster, &password, &sql.1, defs, &work));
        let pgbaas = take(format!("wrk -c{} through the proxy", a.conns), wrk_measured_pg(&a, &base, lua, Some(pid), Some(&cluster)));
        // A failed PocketBase run is a note under the table, as a missing peer is.
        let (mut pocketbase, mut notes) = (None, vec![]);
        if let Some(r) = pb.as_ref().ok().and_then(|p| p.measure(&a, n)) {
            eprintln!(".. {name}: PocketBase");
            match r {
                Ok(r) => pocketbase = Some(r),
                Err(e) => notes.push(format!("PocketBase: {}", reason(&e))),
            }
        }
        Row { limit, limit_pool, limit_pipe, pgbaas, pocketbase, notes, ..row }
    };
    // Logins: each pgbench client signs in as its own account (no queue on one
    // account's row lock), and no more clients than argon2id can serve within a
    // quarter of the statement timeout (5 s) at this machine's measured hash rate, so
    // that the limit run cannot reach the timeout by construction.
    let hash_rate = argon2_rate(if a.quick { 0.5 } else { 2.0 });
    let login_clients = a.conns.min(((hash_rate * 5.0 / 4.0) as usize).max(1)).min(a.users as usize);
    rows.push(measure("1. GET one document by id (read via ACL grant)", &pgb_get, &defs, &get_lua, a.conns));
    rows.push(measure("2. list: equality on indexed field, limit 20", &pgb_list, &defs, &list_lua, a.conns));
    rows.push(measure("3. create a document (POST)", &pgb_create, &defs, &create_lua, a.conns));
    rows.push(measure("4. PATCH with If-Match", &pgb_patch, &defs_patch, &patch_lua, a.conns));
    rows.push(measure("5. login (argon2id)", &pgb_login, &[], &login_lua, login_clients));
    rows.push(measure("6. RPC: a trivial STABLE function (GET /v1/rpc)", &pgb_rpc, &defs, &rpc_lua, a.conns));
    rows.push(measure("7. GET one protected-table row by key", &pgb_row, &defs, &row_lua, a.conns));
    // (issue 21) Workloads 1 and 2 through the Parse door: the same SQL underneath (its
    // pgbench limit is row 1's and 2's), so only the proxy's run; Parse Server's column
    // is its own rows 1 and 2.
    for (name, lua, n) in [("1p. GET one document by id, through /parse", &parse_get_lua, 1), ("2p. list: equality on indexed field, limit 20, through /parse", &parse_list_lua, 2)] {
        let mut row = Row { name, limit: None, limit_pool: None, limit_pipe: None, pgbaas: None, parse: None, pocketbase: None, notes: vec![], failed: vec![] };
        if a.only.is_empty() || a.only.contains(&n) {
            eprintln!(".. {name}");
            match wrk_measured_pg(&a, &base, lua, Some(pid), Some(&cluster)) {
                Ok(r) => row.pgbaas = Some(r),
                Err(e) => row.failed.push(format!("wrk -c{} through /parse: {}", a.conns, reason(&e))),
            }
        }
        rows.push(row);
    }
    let (_, rss_kb) = proc_usage(pid);
    let pb_note = match &pb {
        Ok(p) => {
            let cpu: Vec<String> = ["GET", "list", "create"]
                .iter()
                .zip(&rows)
                .filter_map(|(w, r)| Some(format!("{w} {:.2}", r.pocketbase.as_ref()?.cpu_per_10k?)))
                .collect();
            format!(
                "PocketBase ({}, SQLite in the run's temp dir, rate limits off, request logs off; measured right after pgbaas in each workload) on the same machine, same data shape, auth-with-password token; its CPU s / 10k req by workload: {}; its peak RSS: {:.1} MiB",
                p.version,
                cpu.join(", "),
                p.rss_kb() as f64 / 1024.0
            )
        }
        Err(note) => note.clone(),
    };
    drop(pb);
    drop(proxy);
    let argon = argon2_rate(if a.quick { 1.0 } else { 5.0 });

    // ---- the peer
    let peer_note = if a.peer {
        match parse_peer::run(&a, &cluster, &work) {
            Ok(runs) => {
                for (i, r) in runs.into_iter().enumerate() {
                    rows[i].parse = Some(r);
                }
                // The /parse rows (after row 7) compare with Parse Server's rows 1 and 2.
                for (i, j) in [(0, 7), (1, 8)] {
                    if rows.len() > j {
                        rows[j].parse = rows[i].parse.clone();
                    }
                }
                format!(
                    "Parse Server ran on the same cluster (database `parse`, PostGIS) as {} Node processes, same data shape, session-token REST calls",
                    parse_peer::workers()
                )
            }
            Err(e) => format!("Parse Server not measured: {e:#}"),
        }
    } else {
        "Parse Server not measured (--no-peer)".to_string()
    };

    // ---- files and live feeds (issue 20, item 6): their own programs, each on a
    // cluster and proxy of its own, in this same run; their rows join the table.
    if !a.quick && (a.only.is_empty() || a.only.contains(&8)) {
        eprintln!(".. 8. files (pgbaas-bench-files)");
        rows.extend(files_rows(&work));
    }
    if !a.quick && (a.only.is_empty() || a.only.contains(&9)) {
        eprintln!(".. 9. live feeds (pgbaas-bench --realtime)");
        rows.push(realtime_row(&a));
    }

    // ---- the table
    println!();
    println!(
        "| workload | limit req/s, pgbench -c{} | limit req/s, -c{pool} | limit req/s, -c{pool} pipelined | limit p50 ms | limit p99 ms | pgbaas req/s | p50 ms | p99 ms | errors | pgbaas / limit | Parse req/s | p50 ms | p99 ms | pgbaas / Parse | proxy CPU s / 10k req | proxy peak RSS MiB | PocketBase req/s | p50 ms | p99 ms | pgbaas / PocketBase |",
        a.conns,
        pool = a.pool
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        // The limit is the best of the three ways of issuing the same SQL.
        let best = [&r.limit, &r.limit_pool, &r.limit_pipe]
            .into_iter()
            .flatten()
            .max_by(|x, y| x.rps.total_cmp(&y.rps))
            .cloned();
        let (_, l2, l3) = fmt_run(&best);
        let (lc, _, _) = fmt_run(&r.limit);
        let (lp, _, _) = fmt_run(&r.limit_pool);
        let (lq, _, _) = fmt_run(&r.limit_pipe);
        let (b1, b2, b3) = fmt_run(&r.pgbaas);
        let (lc, lp, lq, b1) = [(lc, &r.limit), (lp, &r.limit_pool), (lq, &r.limit_pipe), (b1, &r.pgbaas)]
            .map(|(cell, run)| if run.is_none() && !r.failed.is_empty() { "failed".to_string() } else { cell })
            .into();
        let (p1, p2, p3) = fmt_run(&r.parse);
        let (q1, q2, q3) = fmt_run(&r.pocketbase);
        let ratio = |x: &Option<Run>, y: &Option<Run>, pct: bool| match (x, y) {
            (Some(x), Some(y)) if y.rps > 0.0 => {
                if pct {
                    format!("{:.0}%", x.rps / y.rps * 100.0)
                } else {
                    format!("{:.1}×", x.rps / y.rps)
                }
            }
            _ => "–".into(),
        };
        let errors = [&r.pgbaas, &r.limit, &r.limit_pool, &r.limit_pipe].iter().map(|x| x.as_ref().map(|x| x.errors).unwrap_or(0)).sum::<u64>();
        let cpu = r.pgbaas.as_ref().and_then(|x| x.cpu_per_10k).map(|c| format!("{c:.2}")).unwrap_or("–".into());
        let rss = r.pgbaas.as_ref().and_then(|x| x.rss_peak_kb).map(|k| format!("{:.1}", k as f64 / 1024.0)).unwrap_or("–".into());
        println!(
            "| {} | {lc} | {lp} | {lq} | {l2} | {l3} | {b1} | {b2} | {b3} | {errors} | {} | {p1} | {p2} | {p3} | {} | {cpu} | {rss} | {q1} | {q2} | {q3} | {} |",
            r.name,
            ratio(&r.pgbaas, &best, true),
            ratio(&r.pgbaas, &r.parse, false),
            ratio(&r.pgbaas, &r.pocketbase, false)
        );
    }
    let failures: Vec<String> = rows.iter().flat_map(|r| r.failed.iter().map(move |f| format!("{}: {f}", r.name))).collect();
    for f in &failures {
        println!("failed: {f}");
    }
    for r in &rows {
        for note in &r.notes {
            println!("not measured: {}: {note}", r.name);
        }
    }
    println!();
    println!("raw argon2id (m=19 MiB, t=2, p=1) on all {} cores: {argon:.1} hashes/s", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!("login limit: pgbench -c{login_clients} (each client its own account; at most what {hash_rate:.0} hashes/s serve within 1.25 s)");
    println!("proxy peak RSS: {:.1} MiB", rss_kb as f64 / 1024.0);
    let pg: Vec<String> = rows.iter().filter_map(|r| Some(format!("{} {:.2}", &r.name[..1], r.pgbaas.as_ref()?.pg_cpu_per_10k?))).collect();
    println!("Postgres CPU s / 10k req through the proxy, by workload: {}", pg.join(", "));
    println!("{peer_note}");
    println!("{pb_note}");
    println!(
        "client (wrk -t2 -c{c}; pgbench -c{c}, -c{pool} and -c{pool} pipelined, -j2 -M prepared), proxy (pool {pool}), Postgres{}{} share one {}-core machine{}",
        if a.peer { ", Parse Server" } else { "" },
        if a.pocketbase { ", PocketBase" } else { "" },
        unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
        if a.pinned { " (pinned: Postgres on CPU 0, the rest on CPU 1; argon2id above on CPU 1 alone)" } else { "" },
        c = a.conns,
        pool = a.pool
    );
    drop(db);
    drop(cluster);
    if !failures.is_empty() {
        bail!("{} workload run(s) failed (see the table's notes)", failures.len());
    }
    Ok(())
}

/// A row of figures measured by another program: no pgbench limit (but `limit`, where
/// there is one), no peers.
fn other_row(name: String, pgbaas: Option<Run>, limit: Option<f64>, failed: Vec<String>) -> Row {
    Row {
        name: Box::leak(name.into_boxed_str()),
        limit: limit.map(|rps| Run { rps, ..Run::default() }),
        limit_pool: None,
        limit_pipe: None,
        pgbaas,
        parse: None,
        pocketbase: None,
        notes: vec![],
        failed,
    }
}

/// Files (issue 15) through pgbaas-bench-files --summary: a 10 KB file GET (requests),
/// and one 100 MB download and upload (MB/s, beside COPY TO / FROM through psql on the
/// same cluster; CPU per 10k MB).
fn files_rows(work: &Path) -> Vec<Row> {
    let out = work.join("files.json");
    let exe = std::env::current_exe().ok().and_then(|e| Some(e.parent()?.join("pgbaas-bench-files")));
    let ran = exe.context("locating pgbaas-bench-files").and_then(|exe| {
        let status = Command::new(exe).arg("--summary").arg(&out).stdout(Stdio::inherit()).status().context("running pgbaas-bench-files")?;
        anyhow::ensure!(status.success(), "pgbaas-bench-files failed ({status})");
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        Ok(v)
    });
    let v = match ran {
        Ok(v) => v,
        Err(e) => return vec![other_row("8. files".into(), None, None, vec![reason(&e)])],
    };
    let run = |f: &serde_json::Value| -> Option<Run> {
        Some(Run {
            rps: f["rate"].as_f64()?,
            p50: f["p50"].as_f64()?,
            p99: f["p99"].as_f64()?,
            cpu_per_10k: f["cpu_per_unit"].as_f64().map(|c| c * 10_000.0),
            rss_peak_kb: f["peak_kb"].as_u64(),
            ..Run::default()
        })
    };
    let mb = v["mb"].as_u64().unwrap_or(0);
    vec![
        other_row(format!("8. files: GET a 10 KB file ({} clients, not wrk)", v["clients"].as_u64().unwrap_or(0)), run(&v["small_get"]), None, vec![]),
        other_row(
            format!("8. files: download one {mb} MB file (MB/s, median of 5 and of 5 COPY TO as the limit; CPU per 10k MB; p50 = p99 = its time)"),
            run(&v["download"]),
            v["download"]["limit"].as_f64(),
            vec![],
        ),
        other_row(
            format!("8. files: upload one {mb} MB file (MB/s; limit: COPY FROM; CPU per 10k MB; p50 = p99 = its time)"),
            run(&v["upload"]),
            v["upload"]["limit"].as_f64(),
            vec![],
        ),
    ]
}

/// Live feeds (issue 14) through src/bench_realtime.rs: changes at --rate to
/// --subscribers WebSocket subscribers; deliveries/s and commit-to-client latency.
fn realtime_row(a: &Args) -> Row {
    let o = bench_realtime::Opts {
        subscribers: a.subscribers,
        users: (a.subscribers / 10).max(1),
        rate: a.rate,
        secs: a.secs,
        wrk_secs: 5,
        wrk_conns: a.conns,
        doc_bytes: a.doc_bytes,
        wrk_rounds: 0,
        compare_rounds: 0,
    };
    let name = format!("9. realtime: {}/s changes to {} subscribers (deliveries/s; commit-to-client ms)", a.rate, a.subscribers);
    match bench_realtime::run(&o, |url, script, secs, conns| wrk(url, script, secs, conns, 0).map(|r| (r.rps, r.errors))) {
        Ok(s) => other_row(
            format!("{name}, {} connected", s.subscribers),
            Some(Run {
                rps: s.deliveries_per_s,
                p50: s.p50,
                p99: s.p99,
                requests: s.deliveries,
                cpu_per_10k: (s.deliveries > 0).then(|| s.proxy_cpu_s / s.deliveries as f64 * 10_000.0),
                rss_peak_kb: Some(s.rss_peak_kb),
                ..Run::default()
            }),
            None,
            vec![],
        ),
        Err(e) => other_row(name, None, None, vec![reason(&e)]),
    }
}

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills a child process when dropped.
struct Kid(Child);
impl Drop for Kid {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

mod parse_peer {
    //! Parse Server 9 (bench/parse/server.js) on the same cluster, database `parse`,
    //! with the same data shape: users, "Item" objects readable by their owner and
    //! every 10th also by user 0, and a "Write" class for creates. Recipe and
    //! pitfalls: bench/parse/NOTES.md.
    use super::*;
    use std::io::{BufRead, BufReader};

    const APP: &str = "benchapp";
    const MASTER: &str = "benchmaster";

    /// Node processes for Parse Server: PARSE_WORKERS, or one per core (server.js).
    pub fn workers() -> usize {
        std::env::var("PARSE_WORKERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    }

    pub fn run(a: &Args, cluster: &Cluster, work: &Path) -> Result<Vec<Run>> {
        let dir = workspace_root().join("bench/parse");
        if !dir.join("node_modules/parse-server").exists() {
            bail!("bench/parse/node_modules is missing: run `make bench` (npm ci in bench/parse)");
        }
        let mut admin = cluster.connect("postgres", DB)?;
        admin.batch_execute("create role parse login password 'parse'")?;
        admin.batch_execute("create database parse owner parse")?;
        let mut pdb = cluster.connect("postgres", "parse")?;
        pdb.batch_execute("create extension postgis")
            .context("create extension postgis (apt-get install postgresql-15-postgis-3; make bench does)")?;

        let port = pgbaas_testkit::free_port();
        let files = work.join("parse-files");
        std::fs::create_dir_all(&files)?;
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(&dir)
            .env("PARSE_DATABASE_URI", format!("postgres://parse:parse@127.0.0.1:{}/parse", cluster.port))
            .env("PARSE_PORT", port.to_string())
            .env("PARSE_APP_ID", APP)
            .env("PARSE_MASTER_KEY", MASTER)
            .env("PARSE_FILES_DIR", &files)
            .env("PARSE_WORKERS", workers().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting node bench/parse/server.js")?;
        let stdout = child.stdout.take().context("parse stdout")?;
        let kid = Kid(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("parse-server ready") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60)).context("Parse Server did not print its ready line within 60 s")?;
        let base = format!("http://127.0.0.1:{port}");
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
        let call = |method: &str, path: &str, master: bool, token: Option<&str>, body: Option<serde_json::Value>| -> Result<serde_json::Value> {
            let mut r = agent.request(method, &format!("{base}{path}")).set("X-Parse-Application-Id", APP);
            if master {
                r = r.set("X-Parse-Master-Key", MASTER);
            }
            if let Some(t) = token {
                r = r.set("X-Parse-Session-Token", t);
            }
            let resp = match body {
                Some(b) => r.set("Content-Type", "application/json").send_string(&b.to_string()),
                None => r.call(),
            };
            match resp {
                Ok(x) => Ok(serde_json::from_str(&x.into_string()?)?),
                Err(ureq::Error::Status(code, x)) => bail!("Parse {method} {path}: HTTP {code} {}", x.into_string().unwrap_or_default()),
                Err(e) => bail!("Parse {method} {path}: {e}"),
            }
        };
        let clp = serde_json::json!({"find": {"*": true}, "count": {"*": true}, "get": {"*": true},
            "create": {"requiresAuthentication": true}, "update": {"*": true}, "delete": {"*": true},
            "addField": {}, "protectedFields": {"*": []}});
        for class in ["Item", "Write"] {
            call("POST", &format!("/parse/schemas/{class}"), true, None, Some(serde_json::json!({
                "className": class,
                "fields": {"n": {"type": "Number"}, "cat": {"type": "Number"}, "title": {"type": "String"}},
                "classLevelPermissions": clp})))?;
        }
        // Only the PUT creates a Postgres index (NOTES.md).
        call("PUT", "/parse/schemas/Item", true, None, Some(serde_json::json!({"indexes": {"cat_1": {"cat": 1}}})))?;

        // Users over REST (bcrypt, ~100 ms each), 4 at a time.
        let t = Instant::now();
        let users: Vec<(String, String)> = std::thread::scope(|s| -> Result<Vec<(String, String)>> {
            let handles: Vec<_> = (0..4)
                .map(|w| {
                    let call = &call;
                    s.spawn(move || -> Result<Vec<(i64, String, String)>> {
                        let mut out = Vec::new();
                        for i in (w..a.users).step_by(4) {
                            let r = call("POST", "/parse/users", false, None,
                                Some(serde_json::json!({"username": format!("u{i}"), "password": PASSWORD})))?;
                            out.push((i, r["objectId"].as_str().context("objectId")?.to_string(), r["sessionToken"].as_str().context("sessionToken")?.to_string()));
                        }
                        Ok(out)
                    })
                })
                .collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.join().map_err(|_| anyhow::anyhow!("signup thread panicked"))??);
            }
            all.sort_by_key(|x| x.0);
            Ok(all.into_iter().map(|(_, id, tok)| (id, tok)).collect())
        })?;
        let ids: Vec<String> = users.iter().map(|u| u.0.clone()).collect();
        let token = users[0].1.clone();
        // Items straight into Parse's table (REST batches would take minutes); Parse
        // reads them back like its own (NOTES.md).
        pdb.execute(
            r#"insert into "Item" ("objectId", "createdAt", "updatedAt", n, cat, title, _rperm, _wperm)
               select 'i' || lpad(g::text, 9, '0'), now(), now(), g, (g / 100) % 1000, 'item ' || g,
                      case when g % 10 = 5 then array[($2::text[])[1 + (g % 100)], ($2::text[])[1]] else array[($2::text[])[1 + (g % 100)]] end,
                      array[($2::text[])[1 + (g % 100)]]
                 from generate_series(1, $1::bigint) g"#,
            &[&a.items, &ids],
        )?;
        pdb.batch_execute("vacuum analyze")?;
        eprintln!(".. Parse Server: {} users, {} items ready in {:.1} s", a.users, a.items, t.elapsed().as_secs_f64());

        // Check each workload once by hand.
        let shared: Vec<i64> = (1..=a.items).filter(|g| g % 10 == 5).collect();
        call("GET", &format!("/parse/classes/Item/i{:09}", shared[0]), false, Some(&token), None)?;
        let found = call("GET", "/parse/classes/Item?limit=20&where=%7B%22cat%22%3A1%7D", false, Some(&token), None)?;
        let n = found["results"].as_array().map(|r| r.len()).unwrap_or(0);
        if n == 0 || n >= 100 {
            bail!("Parse list returned {n} results for cat=1; expected the caller's ~11 readable of ~100");
        }
        call("POST", "/parse/classes/Write", false, Some(&token), Some(serde_json::json!({"n": 0, "title": "written"})))?;

        let headers = format!("wrk.headers[\"X-Parse-Application-Id\"] = \"{APP}\"\nwrk.headers[\"X-Parse-Session-Token\"] = \"{token}\"\n");
        let write = |name: &str, text: String| -> Result<PathBuf> {
            let p = work.join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        let ids_lua = shared.iter().map(|k| format!("\"i{k:09}\"")).collect::<Vec<_>>().join(",");
        let get = write("parse-get.lua", format!("{headers}local ids = {{{ids_lua}}}\nrequest = function()\n  return wrk.format(\"GET\", \"/parse/classes/Item/\" .. ids[math.random(#ids)])\nend\n"))?;
        let list = write("parse-list.lua", format!("{headers}request = function()\n  return wrk.format(\"GET\", \"/parse/classes/Item?limit=20&where=%7B%22cat%22%3A\" .. math.random(0, 999) .. \"%7D\")\nend\n"))?;
        let create = write(
            "parse-create.lua",
            format!("{headers}wrk.headers[\"Content-Type\"] = \"application/json\"\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(\"POST\", \"/parse/classes/Write\", nil, '{{\"n\": ' .. i .. ', \"title\": \"written\"}}')\nend\n"),
        )?;
        let mut out = Vec::new();
        for (name, script) in [("GET", &get), ("list", &list), ("create", &create)] {
            eprintln!(".. Parse Server: {name}");
            out.push(wrk_measured(a, &base, script, None)?);
        }
        drop(kid);
        Ok(out)
    }
}

// ------------------------------------------------------ read replicas (issue 19, E)

/// `--replicas`: GET one document and a list page through two proxies of one primary in
/// the same run, one sending reads to a streaming replica of it (`--replica-urls`) and
/// one without replicas, on this same machine. The replica's committed transactions
/// during its runs show that it answered them.
mod replicas {
    use super::*;
    use pgbaas_testkit::replica::Replica;

    pub fn run(a: &Args) -> Result<()> {
        let work = std::env::temp_dir().join(format!("pgbaas-bench-replicas-{}", std::process::id()));
        std::fs::create_dir_all(&work)?;
        let _cleanup = Cleanup(work.clone());
        let items: i64 = if a.quick { 2_000 } else { 20_000 };
        let cluster = Cluster::temporary()?;
        let mut db = cluster.connect("postgres", DB)?;
        let r: serde_json::Value = db.query_one("select baas.signup('r0@bench.test', $1)", &[&PASSWORD])?.get(0);
        let token = r["access_token"].as_str().context("signup returned no token")?.to_string();
        db.batch_execute("select baas.create_collection('items')")?;
        db.execute(
            "insert into baas.documents (collection_id, id, owner, data)
             select c.id, ($2 || lpad(to_hex(g), 12, '0'))::uuid, (select id from baas.users limit 1),
                    jsonb_build_object('n', g, 'cat', g % 100, 'title', 'item ' || g)
               from baas.collections c, generate_series(1, $1::bigint) g where c.name = 'items'",
            &[&items, &ID_PREFIX],
        )?;
        db.batch_execute("select baas.create_index('items', 'cat', concurrently => false)")?;
        db.batch_execute("vacuum analyze")?;
        let auth_url = cluster.authenticator_url()?;
        let replica = Replica::of(&cluster)?;
        replica.catch_up(&cluster)?;
        if std::env::var_os("PGBAAS_TEST_LOG").is_none() {
            std::env::set_var("PGBAAS_TEST_LOG", "off");
        }
        let pool = a.pool.to_string();
        let on_primary = Proxy::start(&auth_url, &["--pool-size", &pool, "--rate-limits", "off"])?;
        let on_replica = Proxy::start(&auth_url, &["--pool-size", &pool, "--rate-limits", "off", "--replica-urls", &replica.authenticator_url(&cluster)?])?;
        // Reads go to the replica once its watch has looked at it (within a second).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let body = ureq::get(&format!("{}/healthz", on_replica.base())).call().ok().and_then(|r| r.into_string().ok()).unwrap_or_default();
            if body.contains("\"in_rotation\":true") {
                break;
            }
            if Instant::now() > deadline {
                bail!("the replica did not come into rotation: {body}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let write = |name: &str, text: String| -> Result<PathBuf> {
            let p = work.join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        let auth_lua = format!("wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n");
        let get = write(
            "get.lua",
            format!("{auth_lua}request = function()\n  return wrk.format(\"GET\", \"/v1/collections/items/documents/\" .. string.format(\"{ID_PREFIX}%012x\", math.random(1, {items})))\nend\n"),
        )?;
        let list = write(
            "list.lua",
            format!("{auth_lua}request = function()\n  return wrk.format(\"GET\", \"/v1/collections/items/documents?limit=20&where=%7B%22cat%22%3A\" .. math.random(0, 99) .. \"%7D\")\nend\n"),
        )?;
        let commits = |c: &mut postgres::Client| -> Result<i64> {
            Ok(c.query_one("select sum(xact_commit)::bigint from pg_stat_database", &[])?.get(0))
        };
        let mut rc = replica.connect("postgres", DB)?;
        println!("pgbaas read replicas: {} s per run after {} s warm-up, {} connections, pool {}, {items} documents (one primary and one streaming replica on this machine)", a.secs, a.warm, a.conns, a.pool);
        println!("| workload | reads on | rps | p50 ms | p99 ms | errors | replica transactions |");
        println!("|---|---|---:|---:|---:|---:|---:|");
        let mut failed = 0;
        for (name, script) in [("GET one document", &get), ("list 20 by an indexed field", &list)] {
            for (target, proxy) in [("primary", &on_primary), ("replica", &on_replica)] {
                let before = commits(&mut rc)?;
                let r = wrk_measured(a, &proxy.base(), script, Some(proxy.child.id()))?;
                let replica_tx = commits(&mut rc)? - before;
                failed += r.errors;
                println!("| {name} | {target} | {:.0} | {:.2} | {:.2} | {} | {replica_tx} |", r.rps, r.p50, r.p99, r.errors);
            }
        }
        if failed > 0 {
            bail!("{failed} requests failed");
        }
        Ok(())
    }
}

// ------------------------------------------------------ failover (issue 19, F)

/// `pgbaas-bench --failover [--rounds N] [--writers N]`: per round, a fresh etcd and
/// three Patroni nodes with synchronous replication (tests/src/patroni.rs), the proxy
/// given all three nodes (`target_session_attrs=read-write`), N clients creating
/// documents; the primary's Patroni and Postgres are killed with SIGKILL. Prints, per
/// round, the seconds from the kill to Patroni's new primary and to the first write
/// acknowledged through the proxy, and the acknowledged writes the new primary lacks
/// (the goal: 0). Exits non-zero if any acknowledged write was lost.
mod failover {
    use anyhow::{bail, Context, Result};
    use pgbaas_testkit::patroni::{Patroni, WriteLoad, LOOP_WAIT, RETRY_TIMEOUT, TTL};
    use pgbaas_testkit::Proxy;
    use std::time::{Duration, Instant};

    const WITHIN: Duration = Duration::from_secs(90);

    pub fn run() -> Result<()> {
        let args: Vec<String> = std::env::args().collect();
        let num = |flag: &str, default: usize| -> usize { args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default) };
        let (rounds, writers) = (num("--rounds", 3).max(1), num("--writers", 4).max(1));
        // The proxy's warnings during the outage would drown the table.
        if std::env::var_os("PGBAAS_TEST_LOG").is_none() {
            std::env::set_var("PGBAAS_TEST_LOG", "off");
        }
        println!(
            "pgbaas failover: {rounds} round(s), each a fresh etcd + 3 Patroni nodes (ttl {TTL} s, loop_wait {LOOP_WAIT} s, retry_timeout {RETRY_TIMEOUT} s, synchronous_mode), {writers} clients writing through one proxy"
        );
        println!("| round | kill → new primary (s) | kill → first write through the proxy (s) | acknowledged | refused (all 503) | lost |");
        println!("|---:|---:|---:|---:|---:|---:|");
        let (mut follow, mut lost_total) = (Vec::new(), 0usize);
        for round in 1..=rounds {
            let cluster = Patroni::start(3)?;
            let first = cluster.primary().context("no primary")?;
            let tokens = cluster.writers(writers)?;
            let proxy = Proxy::start(&cluster.authenticator_url(), &["--pool-size", "8", "--pool-timeout-secs", "5"])?;
            let load = WriteLoad::start(&proxy.base(), &tokens);
            let deadline = Instant::now() + Duration::from_secs(30);
            while load.acked() < 100 {
                if Instant::now() > deadline {
                    bail!("writes did not flow before the kill");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            cluster.kill(first);
            let killed = Instant::now();
            let second = cluster.wait_primary(WITHIN, Some(first))?;
            let promoted = killed.elapsed();
            let followed = loop {
                if let Some(t) = load.log.lock().unwrap().first_ack_after(killed) {
                    break t - killed;
                }
                if killed.elapsed() > WITHIN {
                    bail!("no write acknowledged through the proxy within {WITHIN:?} of the kill");
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            std::thread::sleep(Duration::from_secs(2));
            let log = load.stop();
            let lost = cluster.lost_writes(second, &log)?;
            let not_503 = log.refused.iter().filter(|r| r.0 != 503).count() + log.transport.len();
            println!(
                "| {round} | {:.1} | {:.1} | {} | {}{} | {} |",
                promoted.as_secs_f64(),
                followed.as_secs_f64(),
                log.acked.len(),
                log.refused.len(),
                if not_503 > 0 { format!(" ({not_503} not 503)") } else { String::new() },
                lost.len()
            );
            follow.push(followed.as_secs_f64());
            lost_total += lost.len();
        }
        follow.sort_by(|a, b| a.total_cmp(b));
        println!(
            "kill → first write through the proxy: median {:.1} s, max {:.1} s; acknowledged writes lost: {lost_total}",
            follow[follow.len() / 2],
            follow[follow.len() - 1]
        );
        if lost_total > 0 {
            bail!("{lost_total} acknowledged writes lost");
        }
        Ok(())
    }
}
// --------------------------------------------- A. Observe (issue 19): --observe

/// `pgbaas-bench --observe [--quick] [--rounds N] [--seconds S] [--connections C]`:
/// GET-one-document throughput of a proxy with `--metrics-listen` and `--log-format
/// json` (its lines written to a file, as a log shipper would read them) against one
/// with both off, same cluster, same data, in interleaved rounds (off/on, then on/off,
/// ...) so that the machine's drift falls on both alike; prints each round, the sums'
/// ratio and the overhead (the goal: at most 5 %). The metrics are scraped once a round.
fn observe_overhead() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let num = |flag: &str, default: u64| -> Result<u64> {
        match argv.iter().position(|a| a == flag) {
            Some(i) => argv.get(i + 1).and_then(|v| v.parse().ok()).with_context(|| format!("{flag} needs a number")),
            None => Ok(default),
        }
    };
    let quick = argv.iter().any(|a| a == "--quick");
    let rounds = num("--rounds", if quick { 2 } else { 6 })?.max(1);
    let secs = num("--seconds", if quick { 1 } else { 10 })?.max(1);
    let conns = num("--connections", if quick { 10 } else { 50 })? as usize;
    let work = std::env::temp_dir().join(format!("pgbaas-bench-observe-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let _cleanup = Cleanup(work.clone());
    let cluster = Cluster::temporary()?;
    let mut db = cluster.connect("postgres", DB)?;
    let r: serde_json::Value = db.query_one("select baas.signup('observe@bench.test', $1)", &[&PASSWORD])?.get(0);
    let token = r["access_token"].as_str().context("signup returned no token")?.to_string();
    let docs: i64 = 1000;
    db.batch_execute("select baas.create_collection('items')")?;
    db.execute(
        "insert into baas.documents (collection_id, id, owner, data)
         select c.id, ($2 || lpad(to_hex(g), 12, '0'))::uuid, (select id from baas.users limit 1), jsonb_build_object('n', g, 'title', 'item ' || g)
           from baas.collections c, generate_series(1, $1::bigint) g where c.name = 'items'",
        &[&docs, &ID_PREFIX],
    )?;
    db.batch_execute("vacuum analyze")?;
    let auth_url = cluster.authenticator_url()?;
    if std::env::var_os("PGBAAS_TEST_LOG").is_none() {
        std::env::set_var("PGBAAS_TEST_LOG", "off");
    }
    let pool = default_pool().to_string();
    let plain = Proxy::start(&auth_url, &["--pool-size", &pool])?;
    // The observed proxy: stdout (its JSON lines) to a file; killed on drop.
    let (port, metrics) = (pgbaas_testkit::free_port(), pgbaas_testkit::free_port());
    let log = work.join("requests.log");
    let child = Command::new(pgbaas_testkit::proxy_bin())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--database-url", &auth_url, "--pool-size", &pool, "--rate-limits", "off"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}"), "--log-format", "json"])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "off")
        .stdout(Stdio::from(std::fs::File::create(&log)?))
        .spawn()?;
    let observed = Proxy { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while pgbaas_testkit::http_status(port, "/healthz") != Some(200) {
        if Instant::now() > deadline {
            bail!("the observed proxy did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let script = work.join("get.lua");
    let ids = (1..=docs).map(|k| format!("\"{}\"", doc_id(k))).collect::<Vec<_>>().join(",");
    std::fs::write(
        &script,
        format!("wrk.headers[\"Authorization\"] = \"Bearer {token}\"\nlocal ids = {{{ids}}}\nrequest = function()\n  return wrk.format(\"GET\", \"/v1/collections/items/documents/\" .. ids[math.random(#ids)])\nend\n"),
    )?;
    println!("pgbaas observe overhead: GET one document, {rounds} rounds of {secs} s per side, {conns} connections{}", if quick { " (quick)" } else { "" });
    // Warm-up: both proxies' connections and caches.
    for p in [&plain, &observed] {
        wrk(&p.base(), &script, 1, conns, 0)?;
    }
    let (mut off_sum, mut on_sum, mut errors) = (0.0, 0.0, 0u64);
    println!("| round | off rps | on rps | on/off |");
    println!("|---|---|---|---|");
    for round in 0..rounds {
        let order: [(&Proxy, bool); 2] = if round % 2 == 0 { [(&plain, false), (&observed, true)] } else { [(&observed, true), (&plain, false)] };
        let (mut off, mut on) = (0.0, 0.0);
        for (p, is_on) in order {
            let r = wrk(&p.base(), &script, secs, conns, 0)?;
            errors += r.errors;
            if is_on {
                on = r.rps;
            } else {
                off = r.rps;
            }
        }
        // A scrape, as Prometheus would make one every 15 s.
        let scraped = pgbaas_testkit::http_status(metrics, "/metrics");
        if scraped != Some(200) {
            bail!("/metrics answered {scraped:?}");
        }
        off_sum += off;
        on_sum += on;
        println!("| {} | {off:.0} | {on:.0} | {:.3} |", round + 1, on / off);
    }
    let lines = std::fs::read_to_string(&log)?.lines().filter(|l| l.starts_with('{')).count();
    // Lines the proxy dropped because its writer did not keep up (observe.rs's queue).
    let text = ureq::get(&format!("http://127.0.0.1:{metrics}/metrics")).call()?.into_string()?;
    let dropped = text.lines().find_map(|l| l.strip_prefix("pgbaas_log_lines_dropped_total ")).unwrap_or("?").trim().to_string();
    let ratio = on_sum / off_sum;
    println!("metrics + JSON logs on vs off: {:.0} vs {:.0} rps, ratio {ratio:.3}, overhead {:.1} % (goal <= 5 %); {lines} log lines written, {dropped} dropped; {errors} failed requests",
        on_sum / rounds as f64, off_sum / rounds as f64, (1.0 - ratio) * 100.0);
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

