//! `pgbaas-dev run`: the README's run command after the build. Starts (first time:
//! creates) the embedded Postgres cluster under $PGBAAS_DATA_DIR (default .pgbaas),
//! creates database `pgbaas` with the extension, then runs the proxy in the foreground.
//! Ctrl-C or SIGTERM stops the proxy, then Postgres. With DATABASE_URL set, no cluster
//! is started and the proxy serves that database.

use anyhow::{bail, Context, Result};
use pgbaas_testkit::{proxy_bin, Cluster};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

fn env_port(name: &str, default: u16) -> Result<u16> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().with_context(|| format!("{name}={v:?} is not a port number")),
        Err(_) => Ok(default),
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("pgbaas: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("run") {
        bail!("usage: pgbaas-dev run   (env: PGBAAS_HTTP_PORT, PGBAAS_PG_PORT, PGBAAS_DATA_DIR, DATABASE_URL)");
    }
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        // If whatever started us (make) dies, stop cleanly as if told to.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
    }
    let http_port = env_port("PGBAAS_HTTP_PORT", 8080)?;
    let (cluster, url) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            println!("pgbaas: using DATABASE_URL (no embedded cluster)");
            (None, url)
        }
        _ => {
            let pg_port = env_port("PGBAAS_PG_PORT", 54329)?;
            let dir = std::env::var("PGBAAS_DATA_DIR").unwrap_or_else(|_| ".pgbaas".into());
            println!("pgbaas: starting Postgres in {dir} on 127.0.0.1:{pg_port}");
            let c = Cluster::open(std::path::Path::new(&dir), pg_port, false)?;
            let url = c.authenticator_url()?;
            println!("pgbaas: psql -h 127.0.0.1 -p {pg_port} -U postgres pgbaas");
            (Some(c), url)
        }
    };
    let result = serve(&url, http_port);
    if let Some(c) = cluster {
        println!("pgbaas: stopping Postgres");
        c.stop()?;
    }
    result
}

fn serve(url: &str, http_port: u16) -> Result<()> {
    let bin = proxy_bin();
    let mut child = Command::new(&bin)
        .args(["--port", &http_port.to_string(), "--database-url", url])
        .env_remove("DATABASE_URL")
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    println!("pgbaas: serving http://127.0.0.1:{http_port}  (Ctrl-C to stop)");
    loop {
        if let Some(status) = child.try_wait()? {
            if SIGNAL.load(Ordering::SeqCst) != 0 {
                return Ok(());
            }
            bail!("the proxy exited: {status}");
        }
        let sig = SIGNAL.load(Ordering::SeqCst);
        if sig != 0 {
            // SIGTERM lets pingora finish in-flight requests (grace period ~1 s).
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            for _ in 0..100 {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
