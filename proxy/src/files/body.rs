//! A request body read one piece at a time: at most `max` bytes per piece, and the
//! uploads read at most one piece ahead of the database call that stores the last
//! (upload::append_while: two pieces held; that call is the backpressure). A client that sends nothing for
//! `file_idle_timeout` gets 408.

use crate::errors::ApiError;
use bytes::{Bytes, BytesMut};
use pingora::protocols::http::ServerSession;
use std::time::Duration;

pub struct BodyReader<'a> {
    s: &'a mut ServerSession,
    idle: Duration,
    /// Read from the socket but not yet handed on (the rest of a chunk that did not fit).
    pending: Option<Bytes>,
    done: bool,
    /// Bytes handed on so far.
    pub read: u64,
}

/// Why a body ended early.
pub fn cut() -> ApiError {
    ApiError::bad_request("invalid_request", "the request body ended before its end (connection closed or malformed framing)")
}

pub fn idle() -> ApiError {
    ApiError::coded("request_timeout", "the client sent nothing for too long")
}

impl<'a> BodyReader<'a> {
    pub fn new(s: &'a mut ServerSession, idle: Duration) -> Self {
        BodyReader { s, idle, pending: None, done: false, read: 0 }
    }

    pub fn session(&mut self) -> &mut ServerSession {
        self.s
    }

    /// The next chunk as pingora gives it (any size), None at the end of the body.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        let c = self.raw_chunk().await?;
        self.read += c.as_ref().map_or(0, |c| c.len() as u64);
        Ok(c)
    }

    async fn raw_chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        if self.done {
            return Ok(None);
        }
        match tokio::time::timeout(self.idle, self.s.read_request_body()).await {
            Err(_) => {
                self.s.set_keepalive(None);
                Err(idle())
            }
            Ok(Err(e)) => {
                log::debug!("reading a file body: {e}");
                self.s.set_keepalive(None);
                Err(cut())
            }
            Ok(Ok(None)) => {
                self.done = true;
                Ok(None)
            }
            Ok(Ok(Some(b))) => Ok(Some(b)),
        }
    }

    /// Fill `buf` (cleared first) with up to `max` bytes; Ok(false) when the body has
    /// ended and `buf` holds its last bytes (maybe none).
    pub async fn next_piece(&mut self, buf: &mut BytesMut, max: usize) -> Result<bool, ApiError> {
        buf.clear();
        while buf.len() < max {
            let Some(mut chunk) = self.raw_chunk().await? else {
                return Ok(false);
            };
            let room = max - buf.len();
            if chunk.len() > room {
                self.pending = Some(chunk.split_off(room));
            }
            self.read += chunk.len() as u64;
            buf.extend_from_slice(&chunk);
        }
        // Full: more may follow, or the body ends exactly here (the next call says).
        Ok(true)
    }
}
