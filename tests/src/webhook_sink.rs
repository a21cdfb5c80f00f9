//! A real HTTP/1.1 receiver for webhook tests (issue 18): it records every request
//! (path, headers, body), answers each with a chosen status, can hang (hold connections
//! open without answering until released), and can be stopped and started again on the
//! same port. std threads only; every answer closes its connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The status it was answered with; None: it was held (hang) and never answered.
    pub answered: Option<u16>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Status(u16),
    Hang,
}

struct State {
    mode: Mode,
    requests: Vec<Request>,
    /// Connections held open by `hang`.
    held: usize,
    /// Bumped by `release` and `stop`: held connections end.
    generation: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

pub struct WebhookSink {
    port: u16,
    shared: Arc<Shared>,
    running: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl WebhookSink {
    /// Listen on a free loopback port, answering 200.
    pub fn start() -> WebhookSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook sink");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State { mode: Mode::Status(200), requests: Vec::new(), held: 0, generation: 0 }),
            changed: Condvar::new(),
        });
        let mut sink = WebhookSink { port, shared, running: None };
        sink.run(listener);
        sink
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn run(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, shared) = (stop.clone(), self.shared.clone());
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = shared.clone();
                        std::thread::spawn(move || serve(stream, &shared));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        self.running = Some((stop, handle));
    }

    /// Answer every request from now on with `status`.
    pub fn set_status(&self, status: u16) {
        self.shared.state.lock().unwrap().mode = Mode::Status(status);
    }

    /// Hold every request from now on: read it, record it, answer nothing.
    pub fn hang(&self) {
        self.shared.state.lock().unwrap().mode = Mode::Hang;
    }

    /// End the held connections (closed without an answer); new requests get 200.
    pub fn release(&self) {
        let mut s = self.shared.state.lock().unwrap();
        s.mode = Mode::Status(200);
        s.generation += 1;
        self.shared.changed.notify_all();
    }

    /// How many connections are held right now.
    pub fn held(&self) -> usize {
        self.shared.state.lock().unwrap().held
    }

    /// Stop listening (the port refuses connections) and end held connections.
    pub fn stop(&mut self) {
        if let Some((flag, handle)) = self.running.take() {
            flag.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
        let mut s = self.shared.state.lock().unwrap();
        s.generation += 1;
        self.shared.changed.notify_all();
    }

    /// Listen again on the same port.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "the sink is running");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("rebind port {}: {e}", self.port),
            }
        };
        self.run(listener);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// The requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// Wait (up to `timeout`) until `done` holds for the requests; returns them either way.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Request]) -> bool) -> Vec<Request> {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.state.lock().unwrap();
        loop {
            if done(&s.requests) {
                return s.requests.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                return s.requests.clone();
            }
            s = self.shared.changed.wait_timeout(s, deadline - now).unwrap().0;
        }
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut s = shared.state.lock().unwrap();
    let mode = s.mode;
    s.requests.push(Request { path, headers, body, answered: match mode { Mode::Status(c) => Some(c), Mode::Hang => None } });
    shared.changed.notify_all();
    match mode {
        Mode::Status(code) => {
            drop(s);
            let mut stream = stream;
            let _ = write!(stream, "HTTP/1.1 {code} Webhook Sink\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = stream.flush();
        }
        Mode::Hang => {
            s.held += 1;
            shared.changed.notify_all();
            let generation = s.generation;
            while s.generation == generation {
                s = shared.changed.wait(s).unwrap();
            }
            s.held -= 1;
            shared.changed.notify_all();
            drop(s);
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}
