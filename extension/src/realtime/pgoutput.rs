//! The three pgoutput messages a slot over an empty publication with `messages 'true'`
//! produces (protocol version 1, as documented in "Logical Replication Message Formats"):
//!
//! - `B` begin: final (commit) LSN u64, commit timestamp i64 (microseconds since
//!   2000-01-01), xid u32;
//! - `M` message: flags u8 (1 = transactional), LSN u64, prefix (NUL-terminated),
//!   content length u32, content;
//! - `C` commit: flags u8, commit LSN u64, end LSN u64, commit timestamp i64.
//!
//! Hand-written rather than a crate: the crates that parse pgoutput are replication
//! clients (they speak the streaming protocol over a socket, with their own runtime);
//! we get the same bytes from `pg_logical_slot_peek_binary_changes` over SPI and need
//! these three messages only (about 100 lines, every branch tested below).
//!
//! The empty publication means relation messages (`R`, `I`, `U`, ...) never come;
//! `O` (origin) may, when a writer set a replication origin, and says nothing we need.

use std::fmt;

#[derive(Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    Begin { final_lsn: u64, commit_ts: i64, xid: u32 },
    Message { transactional: bool, lsn: u64, prefix: &'a str, content: &'a [u8] },
    Commit { commit_lsn: u64, end_lsn: u64, commit_ts: i64 },
    /// A message type we have no use for (origin, relation, type).
    Ignored(u8),
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pgoutput: {}", self.0)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ParseError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(e) => {
                let s = &self.buf[self.at..e];
                self.at = e;
                Ok(s)
            }
            None => Err(ParseError(format!("message cut short reading {what} at byte {}", self.at))),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8, ParseError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &str) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn cstr(&mut self, what: &str) -> Result<&'a str, ParseError> {
        let rest = &self.buf[self.at..];
        let n = rest.iter().position(|&b| b == 0).ok_or_else(|| ParseError(format!("{what} has no terminating NUL")))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| ParseError(format!("{what} is not UTF-8")))?;
        self.at += n + 1;
        Ok(s)
    }
    fn done(&self, what: &str) -> Result<(), ParseError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(ParseError(format!("{} bytes after the end of a {what} message", self.buf.len() - self.at)))
        }
    }
}

/// One pgoutput message (one row of the slot's output).
pub fn parse(buf: &[u8]) -> Result<Msg<'_>, ParseError> {
    let mut r = Reader { buf, at: 0 };
    let msg = match r.u8("the message type")? {
        b'B' => {
            let final_lsn = r.u64("begin's final LSN")?;
            let commit_ts = r.u64("begin's timestamp")? as i64;
            let xid = r.u32("begin's xid")?;
            r.done("begin")?;
            Msg::Begin { final_lsn, commit_ts, xid }
        }
        b'M' => {
            let flags = r.u8("message flags")?;
            let lsn = r.u64("message LSN")?;
            let prefix = r.cstr("message prefix")?;
            let len = r.u32("message length")? as usize;
            let content = r.take(len, "message content")?;
            r.done("logical message")?;
            Msg::Message { transactional: flags & 1 == 1, lsn, prefix, content }
        }
        b'C' => {
            let _flags = r.u8("commit flags")?;
            let commit_lsn = r.u64("commit LSN")?;
            let end_lsn = r.u64("commit end LSN")?;
            let commit_ts = r.u64("commit timestamp")? as i64;
            r.done("commit")?;
            Msg::Commit { commit_lsn, end_lsn, commit_ts }
        }
        t @ (b'O' | b'R' | b'Y') => Msg::Ignored(t),
        t => return Err(ParseError(format!("unexpected message type {:?}", t as char))),
    };
    Ok(msg)
}

/// Our triggers emit under `baas:<secret>` (baas._realtime_secret, readable by the
/// extension's owner only): pg_logical_emit_message is executable by PUBLIC, so any role
/// that can run SQL can emit a message under any prefix it can guess, and a guessable
/// prefix would let it forge events. Messages of other prefixes (other software on the
/// same database, forgeries) are skipped.
pub const PREFIX_START: &str = "baas:";

/// One captured change, as the triggers of sql/realtime.sql emit it:
/// `{"kind": .., "collection": ..|null, "body": {..}}`.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub collection: Option<String>,
    /// The body as JSON text.
    pub body: String,
    /// Size of the message as emitted (retention counts these).
    pub bytes: usize,
}

/// One committed transaction's events, in emission order.
#[derive(Debug, PartialEq, Eq)]
pub struct Txn {
    pub xid: u32,
    pub commit_ts: i64,
    pub commit_lsn: u64,
    pub end_lsn: u64,
    pub events: Vec<Event>,
    /// (bytes, events) of a transaction whose events passed the cap: `events` is then
    /// empty (dropped as they came, so a huge transaction is never held whole) and one
    /// reset stands for it.
    pub dropped: Option<(usize, usize)>,
}

/// The kinds a writer's trigger may emit (`reset` is the puller's own).
const KINDS: [&str; 5] = ["doc", "member", "nest", "collection", "follow"];

/// An event from a message's content, or why it is not one (the puller skips such a
/// message with a WARNING rather than stopping the feed for everyone).
pub fn event(content: &[u8]) -> Result<Event, String> {
    let v: serde_json::Value = serde_json::from_slice(content).map_err(|e| format!("not JSON: {e}"))?;
    let kind = v.get("kind").and_then(|k| k.as_str()).filter(|k| KINDS.contains(k)).ok_or("no known kind")?;
    let collection = match v.get("collection") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("collection is not a string".into()),
    };
    let body = v.get("body").filter(|b| b.is_object()).ok_or("body is not an object")?;
    Ok(Event { kind: kind.to_string(), collection, body: body.to_string(), bytes: content.len() })
}

/// Builds whole transactions from pgoutput messages as they come (the capture worker
/// gets them one by one from the output plugin; the pull, as the rows of a peek).
/// A transaction whose events pass `cap` bytes keeps only its counts from then on.
pub struct Assembler {
    ours: String,
    cap: usize,
    open: Option<Txn>,
    open_bytes: usize,
    open_events: usize,
    /// Committed transactions not yet taken.
    pub done: Vec<Txn>,
    /// Bytes of events in `done`.
    pub done_bytes: usize,
    /// One line per message that is ours by prefix (exactly `ours`) but not an event.
    pub skipped: Vec<String>,
}

impl Assembler {
    pub fn new(ours: &str, cap: usize) -> Assembler {
        Assembler { ours: ours.to_string(), cap, open: None, open_bytes: 0, open_events: 0, done: Vec::new(), done_bytes: 0, skipped: Vec::new() }
    }

    /// A new cap, from the next transaction on (a reloaded setting).
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Inside a transaction (begin seen, commit not yet).
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    pub fn push(&mut self, row: &[u8]) -> Result<(), ParseError> {
        match parse(row)? {
            Msg::Begin { final_lsn, commit_ts, xid } => {
                if self.open.is_some() {
                    return Err(ParseError("begin inside a transaction".into()));
                }
                self.open = Some(Txn { xid, commit_ts, commit_lsn: final_lsn, end_lsn: 0, events: Vec::new(), dropped: None });
                self.open_bytes = 0;
                self.open_events = 0;
            }
            Msg::Message { transactional: true, prefix, content, lsn } if prefix == self.ours => {
                let t = self.open.as_mut().ok_or_else(|| ParseError("transactional message outside a transaction".into()))?;
                match event(content) {
                    Ok(e) => {
                        self.open_bytes += e.bytes;
                        self.open_events += 1;
                        if self.open_bytes > self.cap {
                            t.events = Vec::new();
                            t.dropped = Some((self.open_bytes, self.open_events));
                        } else {
                            t.events.push(e);
                        }
                    }
                    Err(why) => self.skipped.push(format!("message at {:X}/{:X}: {why}", lsn >> 32, lsn as u32)),
                }
            }
            // Non-transactional messages and other prefixes are not ours.
            Msg::Message { .. } | Msg::Ignored(_) => {}
            Msg::Commit { commit_lsn, end_lsn, commit_ts } => {
                let mut t = self.open.take().ok_or_else(|| ParseError("commit outside a transaction".into()))?;
                if commit_lsn != t.commit_lsn {
                    return Err(ParseError(format!("commit LSN {commit_lsn} differs from begin's {}", t.commit_lsn)));
                }
                t.end_lsn = end_lsn;
                t.commit_ts = commit_ts;
                if t.dropped.is_none() {
                    self.done_bytes += self.open_bytes;
                }
                self.done.push(t);
            }
        }
        Ok(())
    }

    /// The committed transactions so far, in commit order.
    pub fn take(&mut self) -> Vec<Txn> {
        self.done_bytes = 0;
        std::mem::take(&mut self.done)
    }
}

/// Group the slot's rows into whole transactions. A transaction that begins but does
/// not commit within `rows` is an error: the slot functions return whole transactions
/// only, so it means the input is not what we asked for. `skipped` gets one line per
/// message that is ours by prefix (exactly `ours`) but not an event.
pub fn transactions<'a, I>(rows: I, ours: &str, cap: usize, skipped: &mut Vec<String>) -> Result<Vec<Txn>, ParseError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut a = Assembler::new(ours, cap);
    for row in rows {
        a.push(row)?;
    }
    if a.in_transaction() {
        return Err(ParseError("a transaction without its commit".into()));
    }
    skipped.append(&mut a.skipped);
    Ok(a.take())
}

/// The 64-bit (epoch-qualified) id of `xid`, a transaction that committed before the
/// caller's `next_full` (the xid counter read after decoding): within 2^31 of it.
pub fn full_xid(xid: u32, next_full: u64) -> u64 {
    next_full - u64::from((next_full as u32).wrapping_sub(xid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(final_lsn: u64, ts: i64, xid: u32) -> Vec<u8> {
        let mut b = vec![b'B'];
        b.extend(final_lsn.to_be_bytes());
        b.extend(ts.to_be_bytes());
        b.extend(xid.to_be_bytes());
        b
    }
    fn message(transactional: bool, prefix: &str, content: &[u8]) -> Vec<u8> {
        let mut b = vec![b'M', transactional as u8];
        b.extend(0x10u64.to_be_bytes());
        b.extend(prefix.as_bytes());
        b.push(0);
        b.extend((content.len() as u32).to_be_bytes());
        b.extend(content);
        b
    }
    fn commit(commit_lsn: u64, end_lsn: u64, ts: i64) -> Vec<u8> {
        let mut b = vec![b'C', 0];
        b.extend(commit_lsn.to_be_bytes());
        b.extend(end_lsn.to_be_bytes());
        b.extend(ts.to_be_bytes());
        b
    }
    const DOC: &[u8] = br#"{"kind":"doc","collection":"notes","body":{"id":"x","op":"insert"}}"#;

    #[test]
    fn begin_message_commit() {
        assert_eq!(parse(&begin(0x1_0000_0020, 42, 7)).unwrap(), Msg::Begin { final_lsn: 0x1_0000_0020, commit_ts: 42, xid: 7 });
        assert_eq!(
            parse(&message(true, "baas", b"{}")).unwrap(),
            Msg::Message { transactional: true, lsn: 0x10, prefix: "baas", content: b"{}" }
        );
        assert_eq!(parse(&commit(5, 9, -1)).unwrap(), Msg::Commit { commit_lsn: 5, end_lsn: 9, commit_ts: -1 });
        assert_eq!(parse(b"O\0\0\0\0\0\0\0\x01x\0").unwrap(), Msg::Ignored(b'O'));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            &b"B"[..],
            &begin(1, 2, 3)[..20],
            &b"Mx"[..],
            &message(true, "baas", b"{}")[..14],
            &b"M\x01\0\0\0\0\0\0\0\x10baas"[..],                 // prefix without NUL
            &b"M\x01\0\0\0\0\0\0\0\x10baas\0\xff\xff\xff\xff{}"[..], // length past the end
            &commit(1, 2, 3)[..25],
            &b"Z"[..],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let mut long = begin(1, 2, 3);
        long.push(0);
        assert!(parse(&long).is_err(), "trailing bytes");
        let mut invalid_utf8 = message(true, "baas", b"{}");
        invalid_utf8[11] = 0xff;
        assert!(parse(&invalid_utf8).is_err());
    }

    const OURS: &str = "baas:0123456789abcdef";

    #[test]
    fn transactions_keep_emission_order_and_skip_what_is_not_ours() {
        let other = br#"{"kind":"member","body":{"user":"u","role":"r","op":"add"}}"#;
        let rows = [
            begin(100, 1000, 7),
            message(true, OURS, DOC),
            message(true, "someone_else", b"hello"),
            // Forgeries: a role that does not know the secret guesses the prefix.
            message(true, "baas", DOC),
            message(true, "baas:", DOC),
            message(true, "baas:0123", DOC),
            message(true, OURS, b"not json"),
            message(true, OURS, br#"{"kind":"reset","body":{}}"#),
            message(true, OURS, other),
            commit(100, 120, 1001),
            begin(130, 1002, 5),
            message(true, OURS, DOC),
            commit(130, 150, 1003),
        ];
        let mut skipped = Vec::new();
        let txns = transactions(rows.iter().map(|r| &r[..]), OURS, usize::MAX, &mut skipped).unwrap();
        assert_eq!(txns.len(), 2);
        assert_eq!((txns[0].xid, txns[0].commit_lsn, txns[0].end_lsn, txns[0].commit_ts), (7, 100, 120, 1001));
        let kinds: Vec<_> = txns[0].events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["doc", "member"]);
        assert_eq!(txns[0].events[0].collection.as_deref(), Some("notes"));
        assert_eq!(txns[0].events[0].bytes, DOC.len());
        assert_eq!(txns[0].events[1].collection, None);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert_eq!(txns[1].xid, 5);
    }

    #[test]
    fn transactions_must_be_whole() {
        let mut s = Vec::new();
        let cut = [begin(100, 1, 7), message(true, OURS, DOC)];
        assert!(transactions(cut.iter().map(|r| &r[..]), OURS, usize::MAX, &mut s).is_err());
        let orphan = [message(true, OURS, DOC)];
        assert!(transactions(orphan.iter().map(|r| &r[..]), OURS, usize::MAX, &mut s).is_err());
        let twice = [begin(100, 1, 7), begin(200, 1, 8)];
        assert!(transactions(twice.iter().map(|r| &r[..]), OURS, usize::MAX, &mut s).is_err());
        let mismatch = [begin(100, 1, 7), commit(101, 120, 1)];
        assert!(transactions(mismatch.iter().map(|r| &r[..]), OURS, usize::MAX, &mut s).is_err());
        // Non-transactional messages stand outside transactions and are not ours.
        let loose = [message(false, OURS, DOC)];
        assert_eq!(transactions(loose.iter().map(|r| &r[..]), OURS, usize::MAX, &mut s).unwrap(), vec![]);
    }

    #[test]
    fn a_transaction_past_the_cap_keeps_only_its_counts() {
        let rows = [
            begin(100, 1, 7),
            message(true, OURS, DOC),
            message(true, OURS, DOC),
            message(true, OURS, DOC),
            commit(100, 120, 2),
            begin(130, 3, 8),
            message(true, OURS, DOC),
            commit(130, 150, 4),
        ];
        let mut a = Assembler::new(OURS, 2 * DOC.len());
        for r in &rows[..3] {
            a.push(r).unwrap();
        }
        assert!(a.in_transaction());
        a.push(&rows[3]).unwrap();
        assert!(a.open.as_ref().unwrap().events.is_empty(), "the events held so far are let go at once");
        for r in &rows[4..] {
            a.push(r).unwrap();
        }
        assert_eq!(a.done_bytes, DOC.len(), "only the kept transaction's bytes");
        let t = a.take();
        assert_eq!(t[0].dropped, Some((3 * DOC.len(), 3)));
        assert!(t[0].events.is_empty());
        assert_eq!((t[1].dropped, t[1].events.len()), (None, 1));
        assert!(a.take().is_empty());
    }

    #[test]
    fn full_xids_across_wraparound() {
        assert_eq!(full_xid(100, 150), 100);
        assert_eq!(full_xid(u32::MAX - 1, (1u64 << 32) + 5), u64::from(u32::MAX - 1));
        assert_eq!(full_xid(3, (7u64 << 32) + 10), (7u64 << 32) + 3);
    }
}
