//! A TCP relay between a listen port and a server (Postgres), for the fault tests
//! (tests/tests/faults.rs, issue 19): it forwards bytes both ways until told to
//! black-hole, then it stops forwarding and stops accepting while keeping every socket
//! open — what a dead switch or a dropped route looks like to both ends (no RST, no
//! FIN, just silence) — and after `heal` it forwards again and accepts new
//! connections. Hand-written with std threads (a few dozen lines): no crate offers a
//! relay that can be black-holed on demand, and the tests need nothing more.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a blocked thread looks at the black-hole and stop flags.
const TICK: Duration = Duration::from_millis(50);

pub struct Relay {
    pub port: u16,
    blackholed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Listen on a free loopback port and forward each connection to 127.0.0.1:`to`.
    pub fn start(to: u16) -> std::io::Result<Relay> {
        let port = crate::free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let blackholed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (bh, st) = (blackholed.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                // Black-holed: connections wait in the kernel's backlog (the client's
                // connect succeeds, then nothing answers).
                if bh.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    continue;
                }
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else { continue };
                        for (from, into) in [(&client, &server), (&server, &client)] {
                            let (Ok(from), Ok(into)) = (from.try_clone(), into.try_clone()) else { continue };
                            let (bh, st) = (bh.clone(), st.clone());
                            std::thread::spawn(move || pump(from, into, &bh, &st));
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => std::thread::sleep(TICK),
                }
            }
        });
        Ok(Relay { port, blackholed, stop })
    }

    /// Stop forwarding and accepting; every socket stays open.
    pub fn blackhole(&self) {
        self.blackholed.store(true, Ordering::Relaxed);
    }

    /// Forward and accept again.
    pub fn heal(&self) {
        self.blackholed.store(false, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    /// Every thread ends within a tick and closes its sockets.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copy `from` to `into` until either end closes (then both are shut down) or the relay
/// stops; while black-holed, what was read is held, not written.
fn pump(mut from: TcpStream, mut into: TcpStream, blackholed: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if blackholed.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => continue,
            Err(_) => break,
        };
        while blackholed.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
        }
        if into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = into.shutdown(Shutdown::Both);
}
