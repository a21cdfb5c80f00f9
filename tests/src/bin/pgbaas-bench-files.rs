//! Files benchmark (issue 15): files through the proxy against the limit (the same
//! bytes written and read with `COPY` through `psql` on the same cluster), in one run.
//!
//!   cargo run --release -p pgbaas-tests --bin pgbaas-bench-files [-- --quick] [--mb N] [--concurrent N] [--clients N] [--seconds N] [--limit-only] [--summary FILE]
//!
//! Prints one table (docs/benchmarks.md has a run of it):
//! - upload and download MB/s of one `--mb` (100) MB file through the proxy, beside the
//!   limit (downloads and `COPY TO`: the median of five): `COPY … FROM STDIN (FORMAT binary)` of the same bytes as 1 MiB rows into a
//!   table shaped like `baas._file_chunks` (storage external), and `COPY (select data …
//!   order by off) TO STDOUT (FORMAT binary)`; the ratio (goal ≥ 70 %);
//! - the proxy's peak RSS during `--concurrent` (20) simultaneous downloads of that file,
//!   then as many simultaneous uploads, per transfer (goal ≤ 8 MiB each): the peak is
//!   reset through /proc/<pid>/clear_refs before each round;
//! - authorised 10 KB file GETs: requests/s and p99 with `--clients` concurrent clients,
//!   beside a document GET measured the same way;
//! - thumbnail latency of a generated 12-megapixel JPEG: the first request (made, for a
//!   size never asked before) and a cached one.
//!
//! The `$file` reference trigger's cost on create_document is pgbaas-bench-storage's
//! "create" rows, run on 0.4.0 and on 0.5.0.
//!
//! --quick (bench_smoke.rs): 8 MB, 4 concurrent transfers, 1 s per GET round, a 2 MP
//! photo: every row printed, no figure judged.

use anyhow::{bail, ensure, Context, Result};
use pgbaas_testkit::{pg_bindir, Cluster, Proxy, DB};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Downloads (and `COPY TO` reads) of the big file, of which the median is shown.
const DOWNLOADS: usize = 5;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
const PASSWORD: &str = "bench password 1";
/// Bucket of the benchmark's files; `docs` holds the document the small GET is compared with.
const BUCKET: &str = "bench";

struct Args {
    quick: bool,
    /// Size of the big file, MB (MiB).
    mb: u64,
    /// Simultaneous transfers in the memory rounds.
    concurrent: usize,
    /// Concurrent clients of the small-GET rounds.
    clients: usize,
    /// Seconds per small-GET round.
    secs: u64,
    /// The photo's size for the thumbnail figure.
    photo: (u32, u32),
    /// Only the limit's rows (COPY through psql; no proxy).
    limit_only: bool,
    /// --summary FILE: the figures pgbaas-bench's side-by-side table shows, as JSON.
    summary: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args { quick: false, mb: 100, concurrent: 20, clients: 16, secs: 5, photo: (4000, 3000), limit_only: false, summary: None };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let num = |i: usize| -> Result<u64> {
            argv.get(i + 1).and_then(|v| v.parse().ok()).with_context(|| format!("{} needs a number", argv[i]))
        };
        match argv[i].as_str() {
            "--quick" => {
                a = Args { quick: true, mb: 8, concurrent: 4, clients: 4, secs: 1, photo: (1600, 1200), limit_only: a.limit_only, summary: a.summary };
            }
            "--limit-only" => a.limit_only = true,
            "--summary" => {
                a.summary = Some(argv.get(i + 1).context("--summary needs a file")?.into());
                i += 1;
            }
            "--mb" => {
                a.mb = num(i)?.max(1);
                i += 1;
            }
            "--concurrent" => {
                a.concurrent = (num(i)? as usize).max(1);
                i += 1;
            }
            "--clients" => {
                a.clients = (num(i)? as usize).max(1);
                i += 1;
            }
            "--seconds" => {
                a.secs = num(i)?.max(1);
                i += 1;
            }
            other => bail!("unknown argument {other}; see the comment at the top of pgbaas-bench-files.rs"),
        }
        i += 1;
    }
    Ok(a)
}

/// `len` deterministic, incompressible bytes (xorshift64*), generated as they are read:
/// no benchmark side holds a whole file.
struct Bytes {
    left: u64,
    state: u64,
}

impl Bytes {
    fn new(len: u64, seed: u64) -> Self {
        Bytes { left: len, state: seed | 1 }
    }
}

impl Read for Bytes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Read a whole body, counting its bytes.
fn drain(mut r: impl Read) -> Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

// ------------------------------------------------------------------ through the proxy

struct Http {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Http {
    fn new(base: &str, token: &str) -> Self {
        Http { agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build(), base: base.to_string(), token: token.to_string() }
    }

    fn check(what: &str, r: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response> {
        match r {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(code, resp)) => bail!("{what}: HTTP {code} {}", resp.into_string().unwrap_or_default()),
            Err(e) => bail!("{what}: {e}"),
        }
    }

    /// POST /v1/collections/{bucket}/files with a raw body of known length; the file's id.
    fn upload(&self, name: &str, content_type: &str, len: u64, body: impl Read) -> Result<String> {
        let url = format!("{}/v1/collections/{BUCKET}/files?name={name}", self.base);
        let r = self
            .agent
            .post(&url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Content-Type", content_type)
            .set("Content-Length", &len.to_string())
            .send(body);
        let file: serde_json::Value = serde_json::from_str(&Self::check("upload", r)?.into_string()?)?;
        ensure!(file["size"].as_u64() == Some(len), "upload answered {file}");
        Ok(file["id"].as_str().context("no file id")?.to_string())
    }

    /// GET a path; the body's length.
    fn get(&self, path: &str) -> Result<u64> {
        let r = self.agent.get(&format!("{}{path}", self.base)).set("Authorization", &format!("Bearer {}", self.token)).call();
        drain(Self::check(path, r)?.into_reader())
    }
}

/// The proxy's VmHWM and VmRSS (KiB).
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Reset the peak RSS to the current RSS (Linux ≥ 4.0; we started the process).
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting VmHWM through /proc/<pid>/clear_refs")
}

/// One transfer's or round's figures for --summary: the rate (MB/s, or requests/s),
/// latency, the proxy's CPU seconds per unit (MB or request) and its peak RSS (KiB).
fn figure(rate: f64, p50: f64, p99: f64, cpu_per_unit: f64, peak_kb: u64, limit: Option<f64>) -> serde_json::Value {
    serde_json::json!({"rate": rate, "p50": p50, "p99": p99, "cpu_per_unit": cpu_per_unit, "peak_kb": peak_kb, "limit": limit})
}

/// Run `n` copies of `f` at once; the proxy's peak RSS growth per copy, MiB, and the
/// slowest copy's time.
fn memory_round(pid: u32, n: usize, f: impl Fn(usize) -> Result<()> + Sync) -> Result<(f64, Duration)> {
    reset_peak(pid)?;
    let (_, base) = rss(pid);
    let t = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|i| { let f = &f; s.spawn(move || f(i)) }).collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("transfer thread panicked"))?)
    })?;
    let took = t.elapsed();
    let (peak, _) = rss(pid);
    Ok((peak.saturating_sub(base) as f64 / 1024.0 / n as f64, took))
}

/// `clients` threads GET `path` for `secs`: (requests/s, p50 ms, p99 ms, errors).
fn get_round(base: &str, token: &str, path: &str, clients: usize, secs: u64) -> (f64, f64, f64, u64) {
    let until = Instant::now() + Duration::from_secs(secs);
    let results: Vec<(Vec<f64>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || {
                    let http = Http::new(base, token);
                    let (mut lat, mut errors) = (Vec::new(), 0u64);
                    while Instant::now() < until {
                        let t = Instant::now();
                        match http.get(path) {
                            Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                            Err(_) => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let errors = results.iter().map(|r| r.1).sum();
    let mut lat: Vec<f64> = results.into_iter().flat_map(|r| r.0).collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| if lat.is_empty() { 0.0 } else { lat[((lat.len() - 1) as f64 * p).round() as usize] };
    (lat.len() as f64 / secs as f64, pct(0.5), pct(0.99), errors)
}

// ------------------------------------------------------------------------ the limit

/// `COPY (off, data) FROM STDIN (FORMAT binary)` of `len` bytes as 1 MiB rows through psql.
fn copy_in(url: &str, table: &str, len: u64, seed: u64) -> Result<Duration> {
    let t = Instant::now();
    let mut child = Command::new(pg_bindir().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", &format!("copy {table} (off, data) from stdin (format binary)")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting psql")?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().context("psql stdin")?);
        w.write_all(b"PGCOPY\n\xff\r\n\0")?;
        w.write_all(&0i32.to_be_bytes())?; // flags
        w.write_all(&0i32.to_be_bytes())?; // header extension
        let (mut src, mut piece, mut off) = (Bytes::new(len, seed), vec![0u8; MIB as usize], 0u64);
        while off < len {
            let n = (len - off).min(MIB) as usize;
            src.read_exact(&mut piece[..n])?;
            w.write_all(&2i16.to_be_bytes())?;
            w.write_all(&8i32.to_be_bytes())?;
            w.write_all(&(off as i64).to_be_bytes())?;
            w.write_all(&(n as i32).to_be_bytes())?;
            w.write_all(&piece[..n])?;
            off += n as u64;
        }
        w.write_all(&(-1i16).to_be_bytes())?;
        w.flush()?;
    }
    ensure!(child.wait()?.success(), "psql COPY FROM failed");
    Ok(t.elapsed())
}

/// `COPY (select data … order by off) TO STDOUT (FORMAT binary)` through psql: (bytes, time).
fn copy_out(url: &str, table: &str) -> Result<(u64, Duration)> {
    let t = Instant::now();
    let mut child = Command::new(pg_bindir().join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", &format!("copy (select data from {table} order by off) to stdout (format binary)")])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting psql")?;
    let n = drain(child.stdout.take().context("psql stdout")?)?;
    ensure!(child.wait()?.success(), "psql COPY TO failed");
    Ok((n, t.elapsed()))
}

// --------------------------------------------------------------------------- main

fn jpeg_photo(w: u32, h: u32) -> Result<Vec<u8>> {
    use image::codecs::jpeg::JpegEncoder;
    // A gradient with texture, so the encoder has real work (a flat image is unrealistically small).
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * 7 + y * 13) % 239) as u8]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img).write_with_encoder(JpegEncoder::new_with_quality(&mut out, 90))?;
    Ok(out)
}

fn row(name: &str, value: String, goal: &str) {
    println!("| {name:<58} | {value:>24} | {goal:<16} |");
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let len = a.mb * MIB;
    let cluster = Cluster::temporary()?;
    let mut db = cluster.connect("postgres", DB)?;
    let superuser = cluster.url("postgres", DB);
    println!("pgbaas files benchmark: {} MB, {} concurrent transfers, {} clients x {} s{}", a.mb, a.concurrent, a.clients, a.secs, if a.quick { " (quick)" } else { "" });
    println!("| {:<58} | {:>24} | {:<16} |", "figure", "value", "goal");
    println!("|{:-<60}|{:->26}|{:-<18}|", "", "", "");

    // ---- 0. the limit: the same bytes in 1 MiB rows, shaped like baas._file_chunks
    db.batch_execute(
        "create table public.bench_limit (off bigint, data bytea);
         alter table public.bench_limit alter column data set storage external;",
    )?;
    let up_limit = mb_per_s(len, copy_in(&superuser, "public.bench_limit", len, 1)?);
    // Reading is quick (a 100 MB read lasts ~0.1 s) and one read varies by ±20% on a
    // shared machine: the median of DOWNLOADS reads, each way.
    let mut limits = Vec::new();
    for _ in 0..DOWNLOADS {
        let (n, d) = copy_out(&superuser, "public.bench_limit")?;
        ensure!(n > len, "COPY TO gave {n} bytes for {len}");
        limits.push(mb_per_s(len, d));
    }
    let down_limit = median(&mut limits);
    if a.limit_only {
        row("COPY FROM (psql) MB/s", format!("{up_limit:.0}"), "");
        row("COPY TO (psql) MB/s", format!("{down_limit:.0}"), "");
        return Ok(());
    }

    let r: serde_json::Value = db.query_one("select baas.signup($1, $2)", &[&"files@bench.test", &PASSWORD])?.get(0);
    let token = r["access_token"].as_str().context("signup returned no token")?.to_string();
    db.batch_execute(&format!(
        "select baas.create_collection('{BUCKET}', '{{\"bucket\": true}}');
         select baas.create_collection('docs');"
    ))?;

    if std::env::var_os("PGBAAS_TEST_LOG").is_none() {
        std::env::set_var("PGBAAS_TEST_LOG", "off");
    }
    // Transfer caps above the rounds' concurrency (one user, one address).
    let cap = (a.concurrent + a.clients + 4).to_string();
    let proxy = Proxy::start(
        &cluster.authenticator_url()?,
        &["--max-transfers", &cap, "--max-transfers-per-ip", &cap, "--max-transfers-per-user", &cap, "--thumb-queue", &cap],
    )?;
    let pid = proxy.child.id();
    let base = proxy.base();
    let http = Http::new(&base, &token);

    // ---- 1. one big file, each way, against COPY
    let mut summary = serde_json::Map::new();
    let mb = len as f64 / MIB as f64;
    reset_peak(pid)?;
    let (t, c0) = (Instant::now(), pgbaas_testkit::proc_cpu_s(pid));
    let big = http.upload("big.bin", "application/octet-stream", len, Bytes::new(len, 1))?;
    let up = mb_per_s(len, t.elapsed());
    let secs = t.elapsed().as_secs_f64() * 1000.0;
    summary.insert("upload".into(), figure(up, secs, secs, (pgbaas_testkit::proc_cpu_s(pid) - c0) / mb, rss(pid).0, Some(up_limit)));
    row("upload MB/s, proxy / COPY FROM (psql)", format!("{up:.0} / {up_limit:.0}"), "");
    row("upload, % of the limit", format!("{:.0}", up / up_limit * 100.0), ">= 70");
    reset_peak(pid)?;
    let (c0, mut rates) = (pgbaas_testkit::proc_cpu_s(pid), Vec::new());
    for _ in 0..DOWNLOADS {
        let t = Instant::now();
        ensure!(http.get(&format!("/v1/files/{big}"))? == len, "download length");
        rates.push(mb_per_s(len, t.elapsed()));
    }
    let down = median(&mut rates);
    let secs = len as f64 / MIB as f64 / down * 1000.0;
    let mb_read = mb * DOWNLOADS as f64;
    summary.insert("download".into(), figure(down, secs, secs, (pgbaas_testkit::proc_cpu_s(pid) - c0) / mb_read, rss(pid).0, Some(down_limit)));
    row(&format!("download MB/s, proxy / COPY TO (psql), median of {DOWNLOADS}"), format!("{down:.0} / {down_limit:.0}"), "");
    row("download, % of the limit", format!("{:.0}", down / down_limit * 100.0), ">= 70");

    // ---- 2. memory during concurrent transfers
    let (per, took) = memory_round(pid, a.concurrent, |_| {
        ensure!(Http::new(&base, &token).get(&format!("/v1/files/{big}"))? == len, "download length");
        Ok(())
    })?;
    row(&format!("proxy peak RSS per download, {} at once (MiB)", a.concurrent), format!("{per:.1} ({:.0} MB/s total)", mb_per_s(len * a.concurrent as u64, took)), "<= 8");
    let (per, took) = memory_round(pid, a.concurrent, |i| {
        Http::new(&base, &token).upload(&format!("up{i}.bin"), "application/octet-stream", len, Bytes::new(len, 100 + i as u64)).map(|_| ())
    })?;
    row(&format!("proxy peak RSS per upload, {} at once (MiB)", a.concurrent), format!("{per:.1} ({:.0} MB/s total)", mb_per_s(len * a.concurrent as u64, took)), "<= 8");

    // ---- 3. small GETs: a 10 KB file beside a document
    let small = http.upload("small.bin", "application/octet-stream", 10_000, Bytes::new(10_000, 7))?;
    let r = http
        .agent
        .post(&format!("{base}/v1/collections/docs/documents"))
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/json")
        .send_string(r#"{"data": {"title": "a document", "n": 1}}"#);
    let doc: serde_json::Value = serde_json::from_str(&Http::check("create document", r)?.into_string()?)?;
    let doc_id = doc["id"].as_str().context("document id")?;
    for (name, path) in [("10 KB file GET", format!("/v1/files/{small}")), ("document GET", format!("/v1/collections/docs/documents/{doc_id}"))] {
        reset_peak(pid)?;
        let c0 = pgbaas_testkit::proc_cpu_s(pid);
        let (rps, p50, p99, errors) = get_round(&base, &token, &path, a.clients, a.secs);
        ensure!(errors == 0, "{name}: {errors} failed requests");
        if name == "10 KB file GET" {
            let requests = (rps * a.secs as f64).max(1.0);
            summary.insert("small_get".into(), figure(rps, p50, p99, (pgbaas_testkit::proc_cpu_s(pid) - c0) / requests, rss(pid).0, None));
        }
        row(&format!("{name}, {} clients: req/s, p50 / p99 ms", a.clients), format!("{rps:.0}, {p50:.1} / {p99:.1}"), "");
    }

    // ---- 4. thumbnails of a photo: first (made) and cached
    let photo = jpeg_photo(a.photo.0, a.photo.1)?;
    let pid_photo = http.upload("photo.jpg", "image/jpeg", photo.len() as u64, photo.as_slice())?;
    let mut first = Vec::new();
    for side in [256, 255, 254] {
        let t = Instant::now();
        http.get(&format!("/v1/files/{pid_photo}?thumb={side}x{side}"))?;
        first.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut cached = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        http.get(&format!("/v1/files/{pid_photo}?thumb=256x256"))?;
        cached.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    first.sort_by(f64::total_cmp);
    cached.sort_by(f64::total_cmp);
    let mp = f64::from(a.photo.0) * f64::from(a.photo.1) / 1e6;
    row(&format!("thumbnail 256x256 of a {mp:.0} MP JPEG, first request (ms)"), format!("{:.0}", first[first.len() / 2]), "");
    row(&format!("thumbnail 256x256 of a {mp:.0} MP JPEG, cached (ms)"), format!("{:.1}", cached[cached.len() / 2]), "");
    if let Some(f) = &a.summary {
        summary.insert("mb".into(), serde_json::json!(a.mb));
        summary.insert("clients".into(), serde_json::json!(a.clients));
        std::fs::write(f, serde_json::Value::Object(summary).to_string())?;
    }
    Ok(())
}
