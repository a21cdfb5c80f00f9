//! `pgbaas-bench --realtime`: the live change feeds' figures (issue 14), in one run:
//!
//! 1. SQL per change with 100 subscribers, then with 10,000: calls of the capture's
//!    functions (`baas._realtime_*`, counted by `track_functions = all`) divided by the
//!    changes made; the proxy serves no other request meanwhile, so that is all its SQL.
//! 2. Proxy RSS per idle subscriber: VmRSS with 100 subscribers, then with 10,000.
//! 3. 500 changes/s, each readable by one user who holds 10 of the 10,000 connections:
//!    commit-to-client latency (from just before the writer's INSERT is sent, so an
//!    upper bound that includes the statement) and deliveries/s.
//! 4. Create throughput through the proxy (wrk, POST), capture on and off alternated in
//!    one run (`baas.set_realtime`).
//!
//! Writers are SQL sessions (baas.create_document as a DBA) rather than HTTP requests,
//! so that the load generator spends its share of the 2 cores on the subscribers.

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use pgbaas_testkit::{Cluster, Proxy, DB};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

pub struct Opts {
    pub subscribers: usize,
    pub users: usize,
    pub rate: u64,
    pub secs: u64,
    pub wrk_secs: u64,
    pub wrk_conns: usize,
    /// Pad each change's document to about this many bytes (0: a small document).
    pub doc_bytes: usize,
    /// Create-throughput rounds (capture on and off alternated); 0 skips them.
    pub wrk_rounds: usize,
    /// After the main latency phase: this many more, alternating the capture worker off
    /// and on (`baas.realtime_capture_worker`), for before/after figures in one session.
    pub compare_rounds: usize,
}

fn micros_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn vm_rss_kb(pid: u32) -> u64 {
    pgbaas_testkit::proc_status_kb(pid, "VmRSS:")
}

/// 10,000 client sockets here and 10,000 in the proxy (which inherits the limit).
fn raise_nofile() -> u64 {
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        r.rlim_cur
    }
}

/// What the subscribers saw.
#[derive(Default)]
struct Seen {
    deliveries: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    errors: AtomicU64,
}

/// Open one subscriber: connect, subscribe to `feed`, wait for `subscribed`, then read
/// until the runtime ends, recording the latency of every insert.
async fn subscriber(port: u16, token: String, seen: Arc<Seen>, ready: tokio::sync::mpsc::Sender<bool>) {
    let ok = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.set_nodelay(true).ok();
        let mut req = format!("ws://127.0.0.1:{port}/v1/realtime").into_client_request().ok()?;
        req.headers_mut().insert("Authorization", format!("Bearer {token}").parse().ok()?);
        let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.ok()?;
        ws.send(Message::text(r#"{"type":"subscribe","sub":"s","collection":"feed"}"#)).await.ok()?;
        loop {
            match ws.next().await? {
                Ok(Message::Text(t)) if t.as_str().contains("\"subscribed\"") => break,
                Ok(Message::Text(t)) if t.as_str().contains("\"error\"") => {
                    eprintln!("subscribe refused: {}", t.as_str());
                    return None;
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        Some(ws)
    }
    .await;
    let Some(mut ws) = ok else {
        seen.errors.fetch_add(1, Ordering::Relaxed);
        let _ = ready.send(false).await;
        return;
    };
    let _ = ready.send(true).await;
    drop(ready);
    while let Some(m) = ws.next().await {
        match m {
            Ok(Message::Text(t)) => {
                let now = micros_now();
                let v: serde_json::Value = match serde_json::from_str(t.as_str()) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                match v["type"].as_str() {
                    Some("insert") => {
                        seen.deliveries.fetch_add(1, Ordering::Relaxed);
                        if let Some(t0) = v["document"]["data"]["t0"].as_u64() {
                            seen.latencies_us.lock().unwrap().push(now.saturating_sub(t0));
                        }
                    }
                    Some("closing") | Some("error") => {
                        seen.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("subscriber: {v}");
                    }
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// Connect `tokens.len()` subscribers, at most 200 handshakes at a time; returns how many
/// are subscribed.
fn connect_all(rt: &tokio::runtime::Runtime, port: u16, tokens: &[String], seen: &Arc<Seen>) -> usize {
    let mut ok = 0;
    for batch in tokens.chunks(200) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(batch.len());
        for t in batch {
            rt.spawn(subscriber(port, t.clone(), seen.clone(), tx.clone()));
        }
        drop(tx);
        ok += rt.block_on(async {
            let mut n = 0;
            while let Some(r) = rx.recv().await {
                n += r as usize;
            }
            n
        });
    }
    ok
}

/// Calls of the capture's functions so far: (name, calls).
fn capture_calls(db: &mut postgres::Client) -> Result<Vec<(String, i64)>> {
    db.execute("select pg_stat_clear_snapshot()", &[])?;
    Ok(db
        .query("select funcname::text, calls from pg_stat_user_functions where schemaname = 'baas' and funcname like '\\_realtime%' order by 1", &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// Writers: `rate` creates a second for `secs`, each readable by one random user of
/// `ids` (who holds 10 subscribers); returns how many were made.
fn write_load(cluster: &Cluster, ids: &[String], rate: u64, secs: u64, pad: usize) -> Result<u64> {
    let writers = 2u64;
    let mut handles = vec![];
    for w in 0..writers {
        let mut db = cluster.connect("postgres", DB)?;
        let ids = ids.to_vec();
        let pad = "x".repeat(pad);
        handles.push(std::thread::spawn(move || -> Result<u64> {
            let per = rate / writers;
            let gap = Duration::from_micros(1_000_000 / per.max(1));
            let start = Instant::now();
            let mut n = 0u64;
            let stmt = db.prepare("select baas.create_document('feed', $1::jsonb, $2::jsonb, null::uuid)")?;
            while start.elapsed() < Duration::from_secs(secs) {
                let due = start + gap * n as u32;
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                let who = &ids[((n * writers + w) as usize * 7919) % ids.len()];
                let data = serde_json::json!({"t0": micros_now(), "n": n, "pad": pad});
                let acl = serde_json::json!({"read": [format!("user:{who}")]});
                db.execute(&stmt, &[&data, &acl])?;
                n += 1;
            }
            Ok(n)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    Ok(total)
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

/// The figures the side-by-side table shows for the live feeds (pgbaas-bench's full run).
pub struct Summary {
    pub subscribers: usize,
    /// Deliveries per second of load to the full set of subscribers, and the
    /// commit-to-client latency of those deliveries (ms).
    pub deliveries_per_s: f64,
    pub p50: f64,
    pub p99: f64,
    pub deliveries: u64,
    /// Proxy CPU seconds over that phase, and its peak RSS (KiB) while it held every
    /// subscriber (VmHWM, reset before the subscribers connected).
    pub proxy_cpu_s: f64,
    pub rss_peak_kb: u64,
}

pub fn run(o: &Opts, wrk: impl Fn(&str, &std::path::Path, u64, usize) -> Result<(f64, u64)>) -> Result<Summary> {
    let nofile = raise_nofile();
    if (nofile as usize) < o.subscribers + 1000 {
        bail!("RLIMIT_NOFILE is {nofile}: {} subscribers need more (ulimit -Hn)", o.subscribers);
    }
    let t0 = Instant::now();
    let cluster = Cluster::temporary()?;
    let mut db = cluster.connect("postgres", DB)?;
    // One statement each: ALTER SYSTEM refuses a multi-statement (implicit) transaction.
    db.batch_execute("alter system set track_functions = 'all'")?;
    db.batch_execute(
        "select pg_reload_conf();
         update baas.settings set access_token_ttl = '1 hour';
         select baas.create_collection('feed'); select baas.create_collection('writes');",
    )?;
    // Accounts without 1,000 argon2 hashes: one signup, its hash copied.
    db.execute("select baas.signup('rt0@bench.test', 'bench password 1')", &[])?;
    db.execute(
        "insert into baas.users (id, email, password_hash)
         select baas.uuid7(), 'rt' || g || '@bench.test', (select password_hash from baas.users limit 1)
           from generate_series(1, $1::int - 1) g",
        &[&(o.users as i32)],
    )?;
    let rows = db.query("select u.id::text, baas._new_session(u, 1::smallint, '{pwd}', null) ->> 'access_token' from baas.users u order by u.email", &[])?;
    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let tokens: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    let auth_url = cluster.authenticator_url()?;
    if std::env::var_os("PGBAAS_TEST_LOG").is_none() {
        std::env::set_var("PGBAAS_TEST_LOG", "off");
    }
    let proxy = Proxy::start(&auth_url, &["--rate-limits", "off"])?;
    let (pid, port) = (proxy.child.id(), proxy.port);
    println!("realtime benchmark: {} users, {} subscribers, {} changes/s for {} s; setup {:.1} s", o.users, o.subscribers, o.rate, o.secs, t0.elapsed().as_secs_f64());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let seen = Arc::new(Seen::default());
    // Subscriber k holds user k % users's token: each user has subscribers/users of them.
    let sub_tokens: Vec<String> = (0..o.subscribers).map(|k| tokens[k % o.users].clone()).collect();
    let rss_empty = vm_rss_kb(pid);
    // The peak from here on: what holding the subscribers costs (writing 5 to
    // clear_refs resets VmHWM to the current RSS).
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");

    // ---- 100 subscribers: SQL per change
    let small = 100.min(o.subscribers);
    let n0 = connect_all(&rt, port, &sub_tokens[..small], &seen);
    std::thread::sleep(Duration::from_secs(2));
    let phase = |db: &mut postgres::Client, secs: u64| -> Result<(u64, Vec<(String, i64)>, f64)> {
        let before = capture_calls(db)?;
        let d0 = seen.deliveries.load(Ordering::Relaxed);
        seen.latencies_us.lock().unwrap().clear();
        let t = Instant::now();
        let made = write_load(&cluster, &ids, o.rate, secs, o.doc_bytes)?;
        std::thread::sleep(Duration::from_secs(1)); // the last deliveries
        let took = t.elapsed().as_secs_f64();
        let after = capture_calls(db)?;
        let per: Vec<(String, i64)> = after.iter().map(|(f, n)| (f.clone(), n - before.iter().find(|(g, _)| g == f).map(|x| x.1).unwrap_or(0))).collect();
        let delivered = seen.deliveries.load(Ordering::Relaxed) - d0;
        let mut lat = seen.latencies_us.lock().unwrap().clone();
        let (p50, p99) = (pct(&mut lat, 0.50), pct(&mut lat, 0.99));
        eprintln!(".. {made} changes, {delivered} deliveries in {took:.1} s; latency p50 {p50:.1} ms, p99 {p99:.1} ms");
        // Per second of load (the last second only lets the last deliveries arrive).
        Ok((made, per, delivered as f64 / secs as f64))
    };
    let (made_small, calls_small, dps_small) = phase(&mut db, o.secs.min(10))?;
    let rss_small = vm_rss_kb(pid);

    // ---- 10,000 subscribers: memory, then latency and SQL per change
    let n1 = connect_all(&rt, port, &sub_tokens[small..], &seen);
    std::thread::sleep(Duration::from_secs(3));
    let rss_full = vm_rss_kb(pid);
    let per_sub_kib = (rss_full as f64 - rss_small as f64) / (n1.max(1) as f64);
    let (cpu0, d0) = (pgbaas_testkit::proc_cpu_s(pid), seen.deliveries.load(Ordering::Relaxed));
    let (made_full, calls_full, dps_full) = phase(&mut db, o.secs)?;
    let (proxy_cpu, delivered_full) = (pgbaas_testkit::proc_cpu_s(pid) - cpu0, seen.deliveries.load(Ordering::Relaxed) - d0);
    let rss_peak_kb = pgbaas_testkit::proc_status_kb(pid, "VmHWM:");
    let mut lat = std::mem::take(&mut *seen.latencies_us.lock().unwrap());
    let (p50, p99, max) = (pct(&mut lat, 0.50), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
    // ---- the capture worker off and on, alternated (the pull's own decoding vs one session)
    let mut compared = vec![];
    for round in 0..o.compare_rounds {
        let worker = round % 2 == 1;
        db.batch_execute(&format!("alter system set baas.realtime_capture_worker = {worker}"))?;
        db.batch_execute("select pg_reload_conf()")?;
        // The worker ends, or the proxy's next pull starts one: up to 10 s.
        let mut running = !worker;
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(200));
            running = db
                .query_one("select exists (select from pg_stat_activity where backend_type = 'pgbaas realtime capture')", &[])?
                .get(0);
            if running == worker {
                break;
            }
        }
        eprintln!(".. round {round}: capture worker {} (running: {running})", if worker { "on" } else { "off" });
        phase(&mut db, o.secs)?;
        let mut l = std::mem::take(&mut *seen.latencies_us.lock().unwrap());
        compared.push((worker, running, pct(&mut l, 0.50), pct(&mut l, 0.99), pct(&mut l, 1.0)));
    }
    if o.compare_rounds > 0 {
        db.batch_execute("alter system reset baas.realtime_capture_worker")?;
        db.batch_execute("select pg_reload_conf()")?;
    }
    let errors = seen.errors.load(Ordering::Relaxed);
    drop(rt); // the subscribers go

    // ---- create throughput, capture on and off alternated
    let work = std::env::temp_dir().join(format!("pgbaas-bench-rt-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let lua = work.join("create.lua");
    std::fs::write(
        &lua,
        format!(
            "wrk.headers[\"Authorization\"] = \"Bearer {}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nrequest = function()\n  return wrk.format(\"POST\", \"/v1/collections/writes/documents\", nil, '{{\"data\": {{\"n\": 1, \"title\": \"written\"}}}}')\nend\n",
            tokens[0]
        ),
    )?;
    let mut on = vec![];
    let mut off = vec![];
    let base = proxy.base();
    if o.wrk_rounds > 0 {
        wrk(&base, &lua, 2, o.wrk_conns)?; // warm-up
    }
    for round in 0..o.wrk_rounds {
        let enabled = round % 2 == 0;
        db.execute("select baas.set_realtime('writes', $1)", &[&enabled])?;
        let (rps, errs) = wrk(&base, &lua, o.wrk_secs, o.wrk_conns)?;
        if errs > 0 {
            eprintln!("wrk: {errs} errors with capture {}", if enabled { "on" } else { "off" });
        }
        eprintln!(".. create with capture {}: {rps:.0} req/s", if enabled { "on" } else { "off" });
        if enabled { on.push(rps) } else { off.push(rps) }
    }
    let _ = std::fs::remove_dir_all(&work);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (on_rps, off_rps) = (mean(&on), mean(&off));

    // ---- the table
    // The proxy's per-change SQL is the puller and the reader (and the trimming they
    // call); _realtime_document is the writer's trigger (once per change, in the
    // writer's transaction); role lookups and the window are per subscription start-up,
    // whose late-flushed statistics can land in the window.
    let fmt_calls = |v: &[(String, i64)], made: u64| -> String {
        let per_change: i64 = v.iter().filter(|(f, _)| matches!(f.as_str(), "_realtime_pull" | "_realtime_read" | "_realtime_prune")).map(|(_, n)| n).sum();
        let parts: Vec<String> = v.iter().filter(|(_, n)| *n > 0).map(|(f, n)| format!("{f} {:.3}", *n as f64 / made.max(1) as f64)).collect();
        format!("{:.3} ({})", per_change as f64 / made.max(1) as f64, parts.join(", "))
    };
    println!();
    println!("| figure | value | goal |");
    println!("|---|---:|---|");
    println!("| subscribers connected | {} of {} ({} failed or cut off) | |", n0 + n1, o.subscribers, errors);
    println!("| proxy RSS: no subscribers / {small} / {} | {:.1} / {:.1} / {:.1} MiB | |", n0 + n1, rss_empty as f64 / 1024.0, rss_small as f64 / 1024.0, rss_full as f64 / 1024.0);
    println!("| proxy RSS per idle subscriber | {per_sub_kib:.1} KiB | ≤ 16 KiB |");
    println!("| changes made ({} s at {}/s, 10,000 subscribers) | {made_full} ({:.0}/s) | 500/s |", o.secs, o.rate, made_full as f64 / o.secs as f64);
    println!("| deliveries/s sustained (10,000 subscribers) | {dps_full:.0} | 5,000 |");
    println!("| commit-to-client latency p50 / p99 / max | {p50:.1} / {p99:.1} / {max:.1} ms | p50 ≤ 10, p99 ≤ 100 |");
    for (worker, running, p50, p99, max) in &compared {
        println!(
            "| latency p50 / p99 / max, capture worker {} (running: {running}) | {p50:.1} / {p99:.1} / {max:.1} ms | p50 ≤ 10, p99 ≤ 100 |",
            if *worker { "on" } else { "off (the pull decodes)" }
        );
    }
    println!("| deliveries/s with {small} subscribers | {dps_small:.0} | |");
    println!("| proxy's capture SQL calls per change (pull + read + prune), {small} subscribers | {} | independent of subscribers |", fmt_calls(&calls_small, made_small));
    println!("| proxy's capture SQL calls per change (pull + read + prune), {} subscribers | {} | same |", n0 + n1, fmt_calls(&calls_full, made_full));
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
    println!(
        "| create req/s, capture on / off (mean of 3 × {} s each, alternated: on {}; off {}) | {on_rps:.0} / {off_rps:.0} ({:+.1}%) | ≥ −15% |",
        o.wrk_secs,
        list(&on),
        list(&off),
        (on_rps / off_rps - 1.0) * 100.0
    );
    println!();
    println!(
        "load generator (writers: 2 SQL sessions; {} subscribers: one process, 2 tokio threads; wrk -t2 -c{}), proxy and Postgres share one {}-core machine",
        o.subscribers,
        o.wrk_conns,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    drop(proxy);
    drop(db);
    drop(cluster);
    Ok(Summary { subscribers: n0 + n1, deliveries_per_s: dps_full, p50, p99, deliveries: delivered_full as u64, proxy_cpu_s: proxy_cpu, rss_peak_kb })
}
