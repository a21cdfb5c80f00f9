//! A small scripted Postgres server, for what a real one will not do on demand: a
//! wrong SCRAM signature, a connection cut in the middle of a message, a row claiming
//! a gigabyte, a standby. Each accepted connection runs the test's script on its own
//! thread; the helpers speak just enough of the protocol (v3 framing, no TLS: an
//! SSLRequest is answered 'N').

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

pub struct FakePg {
    pub port: u16,
}

impl FakePg {
    /// Listen on a free loopback port; run `script` for every connection.
    pub fn start(script: impl Fn(&mut FakeConn) -> std::io::Result<()> + Send + Sync + 'static) -> FakePg {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let script = script.clone();
                std::thread::spawn(move || {
                    let mut c = FakeConn { s };
                    let _ = script(&mut c);
                });
            }
        });
        FakePg { port }
    }
}

pub struct FakeConn {
    pub s: TcpStream,
}

/// One backend message: tag, then length-prefixed body.
pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

pub fn auth(code: u32, extra: &[u8]) -> Vec<u8> {
    let mut b = code.to_be_bytes().to_vec();
    b.extend_from_slice(extra);
    msg(b'R', &b)
}

pub fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    msg(b'S', format!("{name}\0{value}\0").as_bytes())
}

pub fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

pub fn data_row(cols: &[&[u8]]) -> Vec<u8> {
    let mut b = (cols.len() as u16).to_be_bytes().to_vec();
    for c in cols {
        b.extend_from_slice(&(c.len() as i32).to_be_bytes());
        b.extend_from_slice(c);
    }
    msg(b'D', &b)
}

pub fn command_complete(tag: &str) -> Vec<u8> {
    msg(b'C', format!("{tag}\0").as_bytes())
}

impl FakeConn {
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    /// The startup message (answering an SSLRequest 'N' first); returns its parameters.
    pub fn startup(&mut self) -> std::io::Result<Vec<(String, String)>> {
        loop {
            let mut len = [0u8; 4];
            self.s.read_exact(&mut len)?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            self.s.read_exact(&mut body)?;
            let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            if code == 80877103 {
                self.send(b"N")?;
                continue;
            }
            let parts: Vec<String> = body[4..].split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
            return Ok(parts.chunks(2).filter(|c| c.len() == 2 && !c[0].is_empty()).map(|c| (c[0].clone(), c[1].clone())).collect());
        }
    }

    /// One frontend message: (tag, body).
    pub fn read(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.s.read_exact(&mut head)?;
        let mut body = vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4];
        self.s.read_exact(&mut body)?;
        Ok((head[0], body))
    }

    /// Messages up to and including the next Sync; returns their tags.
    pub fn until_sync(&mut self) -> std::io::Result<Vec<u8>> {
        let mut tags = Vec::new();
        loop {
            let (t, _) = self.read()?;
            tags.push(t);
            if t == b'S' {
                return Ok(tags);
            }
        }
    }

    /// Trust authentication and an idle session, with the parameters a Postgres 15
    /// primary reports.
    pub fn accept(&mut self) -> std::io::Result<()> {
        self.startup()?;
        let mut out = auth(0, b"");
        out.extend(parameter_status("in_hot_standby", "off"));
        out.extend(parameter_status("default_transaction_read_only", "off"));
        out.extend(msg(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]));
        out.extend(ready());
        self.send(&out)
    }

    /// Answer a prepare (Parse, Describe, Sync) of a statement without parameters
    /// returning one text column.
    pub fn answer_prepare(&mut self) -> std::io::Result<()> {
        self.until_sync()?;
        let mut out = msg(b'1', b"");
        out.extend(msg(b't', &[0, 0]));
        let mut rd = vec![0, 1];
        rd.extend_from_slice(b"x\0");
        rd.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 25, 255, 255, 255, 255, 255, 255, 0, 0]);
        out.extend(msg(b'T', &rd));
        out.extend(ready());
        self.send(&out)
    }
}
