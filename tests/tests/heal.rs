//! Connections that heal (issue 13): a proxy with a warm pool keeps answering while the
//! extension's library is replaced under its connections, and retires the connections
//! opened before `ALTER EXTENSION pgbaas UPDATE`, without a restart.
//!
//! What a replaced library does to a backend that had loaded it (tried by hand with
//! the proxy before this fix, a warm pool of 4 and a stream of list requests):
//! - renamed over (dpkg's way, and this test's first step): nothing at first: the
//!   backend keeps the old file mapped and Postgres finds the library by name, so
//!   it runs the old code until the SQL names a symbol the old file lacks
//!   (`42883 could not find function … in file …pgbaas.so`, after an update);
//! - overwritten in place (`cargo pgrx install`, `cp`): the backend's mapped pages
//!   now hold the new file's bytes. Postgres re-reads the function's info record
//!   (`Pg_finfo_record`) from those pages at every call, and every request on that
//!   connection failed with `XX000 unrecognized function API version: 1650549107`:
//!   a 500, for ever, while new connections worked (the first test below against that
//!   proxy: 124 of 214 requests answered 500, all of them after the change). The truncating `cp` also crashed
//!   a backend (SIGSEGV, then the postmaster's restart of all backends) in 2 runs of
//!   2: that is the server's crash recovery, which the proxy already answers with
//!   503s until the database is back (connections.rs).
//!
//! This test makes the in-place case exactly and without the crash: the file's
//! inode that the warm backends have mapped gets only its info records changed
//! (api_version 1 -> another number, written into the existing pages), after a fresh
//! copy of the real library has been renamed over the path, so backends started later
//! load the real library. The system library directory is shared with the other test
//! binaries: cargo runs them one after another, the tests here hold a lock, and the
//! real library is back in place when the test ends, also when it fails.
mod common;

use common::*;
use pgbaas_testkit::{pg_bindir, Proxy};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const CURRENT: &str = env!("CARGO_PKG_VERSION");

static SYSTEM_INSTALL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SYSTEM_INSTALL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The installed library, in a directory these tests may write (root's, as in CI; the
/// upgrade test needs the same).
fn installed_library() -> PathBuf {
    let out = Command::new(pg_bindir().join("pg_config")).arg("--pkglibdir").output().expect("pg_config");
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let probe = dir.join("pgbaas.heal-probe");
    std::fs::write(&probe, b"").unwrap_or_else(|e| panic!("these tests replace the installed library and need write access to {}: {e} (run as root)", dir.display()));
    let _ = std::fs::remove_file(&probe);
    dir.join("pgbaas.so")
}

/// A proxy of its own on the shared cluster, its connections named `name` in
/// pg_stat_activity.
fn proxy(name: &str, pool: &str) -> Proxy {
    let url = format!("{}?application_name={name}", env().cluster.authenticator_url().unwrap());
    Proxy::start(&url, &["--pool-size", pool, "--pool-timeout-secs", "10"]).unwrap()
}

fn backend_pids(name: &str) -> Vec<i32> {
    admin()
        .query("select pid from pg_stat_activity where (application_name = $1 or (application_name like $1 || ' %' and application_name not like $1 || ' (%'))", &[&name])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The real library's bytes, put back at its path when dropped (also on panic), and
/// the extra link to the old inode removed.
struct Restore {
    path: PathBuf,
    bytes: Vec<u8>,
    old: PathBuf,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.old);
        if std::fs::read(&self.path).ok().as_deref() != Some(&self.bytes[..]) {
            rename_in(&self.path, &self.bytes);
        }
    }
}

/// Replace `path` by a new file (a new inode) holding `bytes`, as a package manager does.
fn rename_in(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("heal-tmp");
    std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path)).unwrap_or_else(|e| panic!("{}: {e} (run as root)", path.display()));
}

/// File offsets of the `Pg_finfo_record`s the library's `pg_finfo_*` functions return
/// (x86-64: each is `lea rax, [rip + d]; ret`), from the exported symbols (`nm -D`, as
/// upgrade.rs reads them) and the ELF program headers.
fn finfo_records(path: &Path, lib: &[u8]) -> Vec<usize> {
    let u16_at = |o: usize| u16::from_le_bytes(lib[o..o + 2].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(lib[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&lib[..5], b"\x7fELF\x02", "a 64-bit ELF library");
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    // (address, file offset, size) of each loaded segment.
    let loads: Vec<(usize, usize, usize)> = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&h| lib[h..h + 4] == 1u32.to_le_bytes())
        .map(|h| (u64_at(h + 16), u64_at(h + 8), u64_at(h + 32)))
        .collect();
    let offset = |addr: usize| {
        let (a, o, _) = loads.iter().find(|(a, _, n)| (*a..a + n).contains(&addr)).unwrap_or_else(|| panic!("address {addr:#x} is in no segment"));
        o + addr - a
    };
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(path).output().expect("nm (binutils)");
    let mut records: Vec<usize> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(2).is_some_and(|n| n.starts_with("pg_finfo_")))
        .map(|l| {
            let sym = usize::from_str_radix(l.split_whitespace().next().unwrap_or_default(), 16).unwrap();
            let f = offset(sym);
            assert!(lib[f..f + 3] == [0x48, 0x8d, 0x05] && lib[f + 7] == 0xc3, "pg_finfo_* is not `lea rax, [rip + d]; ret`: {:02x?}", &lib[f..f + 8]);
            let disp = i32::from_le_bytes(lib[f + 3..f + 7].try_into().unwrap()) as isize;
            offset((sym as isize + 7 + disp) as usize)
        })
        .collect();
    records.sort();
    records.dedup();
    assert!(!records.is_empty(), "no pg_finfo_* symbols in {}", path.display());
    for &r in &records {
        assert_eq!(lib[r..r + 4], 1i32.to_le_bytes(), "a Pg_finfo_record's api_version is 1");
    }
    records
}

#[derive(Debug)]
struct Done {
    start: Instant,
    end: Instant,
    what: &'static str,
    status: u16,
    body: String,
}

#[test]
fn a_library_replaced_under_a_warm_pool_fails_no_request() {
    let _lock = lock();
    let name = format!("heal-lib-{}", std::process::id());
    let p = proxy(&name, "4");
    let base = p.base();
    let u = signup("heal");
    let c = collection("heal", json!({"default_acl": {"read": ["authenticated"]}}));
    let doc = create_doc(&c, Some(&u.access), json!({"n": 1}), None);

    // Every request below runs C functions of the extension (collection name checks,
    // the compiled filter, id and document validation).
    let list = format!("{}?where={}", docs_path(&c), "%7B%22n%22%3A1%7D");
    let one = doc_path(&c, &doc);
    let traffic = |base: &str, i: usize| -> (&'static str, Resp) {
        match i % 3 {
            0 => ("list", request_at(base, "GET", &list, Some(&u.access), &[], None)),
            1 => ("get", request_at(base, "GET", &one, Some(&u.access), &[], None)),
            _ => ("create", request_at(base, "POST", &docs_path(&c), Some(&u.access), &[], Some(r#"{"data": {"n": 2}}"#))),
        }
    };
    const CLIENTS: usize = 4;
    // Warm: every client at once, so the pool opens several connections and each runs
    // the extension's functions.
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                for i in 0..6 {
                    let (what, r) = traffic(&base, i);
                    assert!(r.status < 300, "warm-up {what}: {} {}", r.status, r.body);
                }
            });
        }
    });
    let warm = backend_pids(&name);
    assert!(!warm.is_empty());

    let lib = installed_library();
    let bytes = std::fs::read(&lib).unwrap_or_else(|e| panic!("{}: {e}: run tests/scripts/build.sh first", lib.display()));
    let records = finfo_records(&lib, &bytes);
    let old = lib.with_extension("heal-old");
    let _ = std::fs::remove_file(&old);
    let _restore = Restore { path: lib.clone(), bytes: bytes.clone(), old: old.clone() };

    // A steady stream from CLIENTS clients, each with one request in flight at a time.
    let stop = AtomicBool::new(false);
    let count = AtomicUsize::new(0);
    let log: Arc<Mutex<Vec<Done>>> = Arc::default();
    let (swap_start, swap_end) = std::thread::scope(|s| {
        for k in 0..CLIENTS {
            let (stop, count, log, base, traffic) = (&stop, &count, log.clone(), &base, &traffic);
            s.spawn(move || {
                // Bounded: at most 300 requests a client.
                for i in 0..300 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let start = Instant::now();
                    let (what, r) = traffic(base, i + k);
                    let end = Instant::now();
                    log.lock().unwrap().push(Done { start, end, what, status: r.status, body: r.body.to_string() });
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Bounded in time too (generous for a loaded 2-core machine: a request takes
        // milliseconds).
        let wait_for = |n: usize| {
            let deadline = Instant::now() + std::time::Duration::from_secs(60);
            while count.load(Ordering::Relaxed) < n {
                assert!(Instant::now() < deadline, "fewer than {n} requests done in 60 s");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        wait_for(20);
        let swap_start = Instant::now();
        // The package's way: a new file renamed over the path (backends started from
        // now on load it), the warm backends' file kept reachable by a second link ...
        std::fs::hard_link(&lib, &old).unwrap();
        rename_in(&lib, &bytes);
        // ... and then that file changed in place, as an overwriting install does.
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&old).unwrap();
            for &r in &records {
                f.seek(SeekFrom::Start(r as u64)).unwrap();
                f.write_all(&0x6261_6173i32.to_le_bytes()).unwrap();
            }
            f.sync_all().unwrap();
        }
        let swap_end = Instant::now();
        let at_swap = count.load(Ordering::Relaxed);
        wait_for(at_swap + 60);
        stop.store(true, Ordering::Relaxed);
        (swap_start, swap_end)
    });

    let log = log.lock().unwrap();
    let failed: Vec<&Done> = log.iter().filter(|d| d.status >= 300).collect();
    let after: Vec<&Done> = log.iter().filter(|d| d.start > swap_end).collect();
    eprintln!(
        "{} requests, {} after the swap, {} failed: {:?}",
        log.len(),
        after.len(),
        failed.len(),
        failed.iter().map(|d| (d.what, d.status, &d.body)).collect::<Vec<_>>()
    );
    // The warm backends really could no longer run the extension: the server said so.
    let server_log = std::fs::read_to_string(env().cluster.dir.join("postgres.log")).unwrap_or_default();
    assert!(server_log.contains("unrecognized function API version"), "the changed library did not reach the warm backends");
    // None is a 500; at most the requests in flight while the file changed fail (one
    // a client), and only with a 503 a client may retry.
    for d in &failed {
        assert_eq!(d.status, 503, "{} failed with {}: {}", d.what, d.status, d.body);
        assert!(d.start < swap_end && d.end > swap_start, "{} failed outside the swap: {}", d.what, d.body);
    }
    assert!(failed.len() <= CLIENTS, "{} requests failed", failed.len());
    // At least the 60 requests waited for, less the CLIENTS that were in flight at the swap.
    assert!(after.len() >= 60 - CLIENTS && after.iter().all(|d| d.status < 300), "{} requests after the swap", after.len());
    // The same proxy, and none of the connections opened before the swap is left.
    let mut p = p;
    assert!(p.child.try_wait().unwrap().is_none(), "the proxy exited");
    wait_until("connections opened before the swap are still open", || {
        let now = backend_pids(&name);
        !now.iter().any(|pid| warm.contains(pid))
    });
    let (_, r) = traffic(&base, 0);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// While the library is missing (between an install's removal and its new file) a new
/// backend cannot load it (`58P01 could not access file "$libdir/pgbaas"`): the proxy
/// tries once more on another new connection, then answers 503 with Retry-After, never
/// a 500, and serves again as soon as the file is back.
#[test]
fn while_the_library_is_missing_a_request_gets_a_503_to_retry_and_then_succeeds() {
    let _lock = lock();
    let u = signup("heal-missing");
    let c = collection("heal_missing", json!({}));
    let name = format!("heal-missing-{}", std::process::id());
    // Its connections have not loaded the library yet (start-up runs SQL functions only).
    let p = proxy(&name, "2");
    let list = |base: &str| request_at(base, "GET", &docs_path(&c), Some(&u.access), &[], None);

    let lib = installed_library();
    let bytes = std::fs::read(&lib).unwrap_or_else(|e| panic!("{}: {e}: run tests/scripts/build.sh first", lib.display()));
    let restore = Restore { path: lib.clone(), bytes, old: lib.with_extension("heal-old") };
    std::fs::remove_file(&lib).unwrap();
    let r = list(&p.base());
    assert_eq!((r.status, r.code()), (503, "database_unavailable"), "{}", r.body);
    assert_eq!(r.header("Retry-After"), Some("5"));
    drop(restore);
    let r = list(&p.base());
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The installed version as the catalog says, put back when dropped (also on panic).
struct Version;

impl Version {
    fn set(v: &str) {
        admin().execute("update pg_catalog.pg_extension set extversion = $1 where extname = 'pgbaas'", &[&v]).unwrap();
    }
}

impl Drop for Version {
    fn drop(&mut self) {
        Version::set(CURRENT);
    }
}

/// Every upgrade script tells the proxies (`pg_notify('baas_extension', version)`,
/// delivered when ALTER EXTENSION commits: upgrade.rs checks that the update sends
/// it); a proxy then reads the installed version and, as it changed, retires the
/// connections it opened before, at their next checkout. Any role may notify: a
/// notification while the version stays as it was retires nothing.
#[test]
fn an_announced_extension_update_retires_the_connections_opened_before_it() {
    let _lock = lock();

    let name = format!("heal-update-{}", std::process::id());
    let p = proxy(&name, "2");
    let base = p.base();
    let u = signup("heal-update");
    let me = || {
        let r = request_at(&base, "GET", "/v1/auth/user", Some(&u.access), &[], None);
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let warm = || {
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| (0..5).for_each(|_| me()));
            }
        })
    };
    warm();
    let before = backend_pids(&name);
    assert!(!before.is_empty());
    // Nothing retires them while nothing changes...
    (0..6).for_each(|_| me());
    assert!(backend_pids(&name).iter().any(|pid| before.contains(pid)), "connections were replaced without an update");
    // ...not even a notification, which any role may send, naming any version, when
    // the installed version is the one the proxy saw.
    let mut anyone = postgres::Client::connect(&env().cluster.authenticator_url().unwrap(), postgres::NoTls).unwrap();
    for v in [CURRENT, "9.9.9"] {
        anyone.batch_execute(&format!("select pg_notify('baas_extension', '{v}')")).unwrap();
    }
    // Delivered asynchronously, in milliseconds: a proxy that retired on them would
    // have by then (if it has not read them yet, this passes without proving much).
    std::thread::sleep(std::time::Duration::from_secs(1));
    (0..6).for_each(|_| me());
    assert!(backend_pids(&name).iter().any(|pid| before.contains(pid)), "a notification without a new version replaced the connections");

    // An update: the installed version changes, then the notification.
    let _restore = Version;
    Version::set(&format!("{CURRENT}-heal"));
    admin().batch_execute(&format!("select pg_notify('baas_extension', '{CURRENT}-heal')")).unwrap();
    // Requests keep succeeding, and soon run on new backends only.
    wait_until("the connections opened before the update are still used", || {
        me();
        !backend_pids(&name).iter().any(|pid| before.contains(pid))
    });
    me();
}
