//! The hub: every live subscription of this proxy, indexed by principal, and the
//! fan-out of capture events to them (docs/realtime-delivery.md).
//!
//! The capture reader (capture.rs) hands events to `Hub::apply` in position order. For a
//! `doc` event the candidates are the union of `index[p]` for p in the old and new
//! versions' readers (plus the privileged subscriptions of the collection): nobody else
//! can be concerned, since a subscriber who could read neither version gets nothing.
//! Each candidate's filter is evaluated in memory with the query language's own
//! evaluator (pgbaas-query); the frame's JSON is built once per (event, type, fields)
//! and only the `sub` is spliced in per subscriber. No SQL per subscriber per change,
//! and nothing ever waits for a client: frames go into the connection's bounded Outbox.
//!
//! A subscription starts "pending": registered before its start-up SQL runs, so that
//! every event the hub applies meanwhile is buffered for it. The start-up transaction
//! (REPEATABLE READ) gives its start position S, the snapshot's visibility, the caller's
//! roles and the role graph as of S, and the snapshot's documents; then, under the
//! hub's lock, the buffer is replayed past S (skipping events the snapshot already saw;
//! with a snapshot, also the events at or before S it did not see, from the buffer, the
//! hub's recent events or the log: `Recent`) and the subscription goes live. So nothing between S and the live stream is lost or
//! sent twice, whatever the hub did while the SQL ran.

use super::event::{Body, DocChange, Event, Op, Version};
use super::principals::{anonymous, Principals, RoleGraph};
use super::{Conn, Feeds, Frame, Subscribe};
use crate::db;
use crate::errors::ApiError;
use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pgbaas_query::parse::Filter;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What a subscription receives for one `doc` event (contract, "Event semantics").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Insert,
    Update,
    Enter,
    Delete,
    Leave,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Insert => "insert",
            Kind::Update => "update",
            Kind::Enter => "enter",
            Kind::Delete => "delete",
            Kind::Leave => "leave",
        }
    }
}

/// Who a subscription reads as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// A service token: reads every document.
    Service,
    Anonymous,
    User(Arc<str>),
}

/// A version is readable iff privileged, or one of its readers (`user:<owner>` and
/// acl.read) is one of the caller's principals (sql/permissions.sql).
pub fn readable(v: &Version, privileged: bool, principals: &[Arc<str>]) -> bool {
    privileged || v.readers.iter().any(|r| principals.binary_search(r).is_ok())
}

/// The contract's table: was = O readable ∧ F(O); now = N readable ∧ F(N).
pub fn decide(d: &DocChange, filter: Option<&Filter>, privileged: bool, principals: &[Arc<str>]) -> Option<Kind> {
    let sees = |v: &Option<Version>| {
        v.as_ref().is_some_and(|v| readable(v, privileged, principals) && filter.is_none_or(|f| pgbaas_query::eval::matches_at(f, &v.data, v.times)))
    };
    let (was, now) = (sees(&d.old), sees(&d.new));
    match (now, was, d.op) {
        (true, _, Op::Insert) => Some(Kind::Insert),
        (true, true, _) => Some(Kind::Update),
        (true, false, _) => Some(Kind::Enter),
        (false, true, Op::Delete) => Some(Kind::Delete),
        (false, true, _) => Some(Kind::Leave),
        (false, false, _) => None,
    }
}

/// Whether a change touches a watched field (`Subscribe::watch`): its value before and
/// after differ (absent before an insert). No watch: every change does.
pub fn watched_changed(watch: Option<&[String]>, d: &DocChange) -> bool {
    let Some(fields) = watch else { return true };
    fn value<'a>(v: &'a Option<Version>, f: &str) -> Option<&'a Value> {
        v.as_ref().and_then(|v| v.data.get(f))
    }
    fields.iter().any(|f| value(&d.old, f) != value(&d.new, f))
}

/// `pg_current_snapshot()`: which transactions a subscription's start already saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snap {
    xmin: u64,
    xmax: u64,
    xip: Box<[u64]>,
}

impl Snap {
    /// `xmin:xmax:xip,...` (pg_snapshot's text form).
    pub fn parse(s: &str) -> Option<Snap> {
        let mut it = s.split(':');
        let xmin = it.next()?.parse().ok()?;
        let xmax = it.next()?.parse().ok()?;
        let xip = match it.next()? {
            "" => Vec::new(),
            l => l.split(',').map(|x| x.parse().ok()).collect::<Option<Vec<u64>>>()?,
        };
        Some(Snap { xmin, xmax, xip: xip.into() })
    }
    /// Committed before the snapshot was taken (so its effects are in it).
    pub fn visible(&self, xid: u64) -> bool {
        let xid = self.full(xid);
        xid < self.xmin || (xid < self.xmax && !self.xip.contains(&xid))
    }

    /// An event's xid8 as the log holds it, but for the one mis-recording we know of:
    /// 0.4.0's `baas._realtime_pull` took the epoch from the snapshot of its statement's
    /// start (pgrx's SPI `select` reuses it), so a transaction that got its xid after
    /// that and committed before the peek is logged exactly 2^32 too low: xid 823 came
    /// out as 18446744069414585143 (823 − 2^32, wrapped), "not in the snapshot", and a
    /// snapshot subscription got that change again after its snapshot held it
    /// (realtime.rs, snapshot_then_stream_has_no_gap_and_no_double). No real transaction
    /// captured after S is more than 2^31 xids older than the start snapshot (Postgres
    /// stops assigning xids before a live one falls 2^31 behind), so a value 2^31 to
    /// 2^32 + 2^31 below `xmax` is that record: its transaction is xid + 2^32.
    fn full(&self, xid: u64) -> u64 {
        full_xid(xid, self.xmax)
    }

    /// Transactions running when the snapshot was taken (the ones it did not see that
    /// can have events at or before its start position: `Hub::late_events`).
    pub fn running(&self) -> &[u64] {
        &self.xip
    }
}

/// `Snap::full` against a reference xid (a snapshot's xmax, or the newest xid applied).
fn full_xid(xid: u64, reference: u64) -> u64 {
    const HALF: u64 = 1 << 31;
    // u64::MAX: capture_reset's event, in no snapshot.
    if xid == u64::MAX {
        return xid;
    }
    let below = reference.wrapping_sub(xid);
    if below > HALF && below < (1 << 32) + HALF {
        xid.wrapping_add(1 << 32)
    } else {
        xid
    }
}

/// Settings (config.rs).
#[derive(Clone, Debug)]
pub struct HubConfig {
    pub max_subscriptions_per_connection: usize,
    /// Most documents a snapshot sends (list_documents takes at most 1000 a page).
    pub snapshot_max: usize,
    /// How long a subscribe waits for this proxy's reader to reach its start position.
    pub catch_up_timeout: Duration,
    /// Start-up transactions at once (they use the requests' pool).
    pub concurrent_startups: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig { max_subscriptions_per_connection: 100, snapshot_max: 500, catch_up_timeout: Duration::from_secs(10), concurrent_startups: 4 }
    }
}

type SubId = u64;

struct Sub {
    conn: Arc<Conn>,
    name: Arc<str>,
    collection: Arc<str>,
    /// None: `{}`, everything.
    filter: Option<Box<Filter>>,
    fields: Option<Arc<[String]>>,
    /// `Subscribe::watch`: inserts and updates only when one of these changed.
    watch: Option<Arc<[String]>>,
    who: Who,
    principals: Principals,
    /// The start position S: events at or before it are not delivered, but for a
    /// `snapshot: true` subscription's whose transaction the snapshot did not see (`seen`).
    start: u64,
    /// `snapshot: true` only: events after `start` whose transaction the start snapshot
    /// saw are skipped (their effect is in the snapshot's documents). Kept for the
    /// subscription's life: the log is in commit-record order, which is not visibility
    /// order, so a transaction the snapshot saw can be decoded after one it did not see
    /// (the check is one comparison, or a scan of the few running xids).
    /// Never for a plain or resumed subscription: (p, S] plus the stream after S is its
    /// whole range, and a transaction committed before the start but captured after S is
    /// in no snapshot it was sent.
    skip: bool,
    /// Resumed: a role change its start snapshot saw but that came after S (captured
    /// late) is still news to the client, whose state was read under the old roles.
    resumed: bool,
    /// The start snapshot (for `skip` and `resumed`).
    snap: Option<Box<Snap>>,
    /// Pending: the events applied since registration, replayed when it goes live.
    pending: Option<Vec<Arc<Event>>>,
}

impl Sub {
    fn privileged(&self) -> bool {
        self.who == Who::Service
    }
    /// Before its start, or already in its start snapshot.
    ///
    /// At or before S a `snapshot: true` subscription still gets the events of the
    /// transactions its snapshot did not see: Postgres writes a commit record (which the
    /// capture can decode and append, positions <= S) before the transaction leaves the
    /// proc array, so a snapshot taken in between holds it as running. Such an event is
    /// in neither the snapshot nor the stream after S unless it is sent here. (Its xid is
    /// in the snapshot's running list: the pull that appended it took its own xid after
    /// decoding it and committed before the snapshot, so it is below xmax.) A gap's
    /// `reset` (xid u64::MAX) at or before S is sent only if the snapshot had running
    /// transactions: only then can the lost events hold a change it did not see.
    fn seen(&mut self, ev: &Event) -> bool {
        let Some(snap) = self.snap.as_ref().filter(|_| self.skip) else { return ev.position <= self.start };
        if ev.position <= self.start && ev.xid == u64::MAX {
            return snap.xip.is_empty();
        }
        snap.visible(ev.xid)
    }
    /// A role change committed before this resumed subscription's start snapshot but
    /// captured after S: the start's principals hold it, the client's state does not.
    /// A nesting `m` in `r` matters only if the caller reaches `m`: edges out of roles
    /// nobody reaches change no one's closure, and adding or removing an edge out of `m`
    /// does not change whether `m` is reached, so the principals before or after it
    /// tell. (Reaching `m` through the start's roles means reaching it at every position
    /// of a replayed range too: replay_verdict found them all equal to the start's; and
    /// had they changed since, a reset went out then.)
    fn missed_role_change(&self, ev: &Event) -> bool {
        let late = self.resumed && ev.position > self.start && self.snap.as_ref().is_some_and(|s| s.visible(ev.xid));
        late && concerns(ev, &self.who)
            && match &ev.body {
                Body::Nest { member_role, .. } => self.principals.iter().any(|p| p.strip_prefix("role:") == Some(&**member_role)),
                _ => true,
            }
    }
}

struct UserEntry {
    direct: BTreeSet<String>,
    /// An anonymous account (principal `anonymous`, not `registered`), as the token of
    /// the subscription that made this entry said: an account upgraded while its
    /// anonymous streams are open keeps `anonymous` here until they have all ended.
    anonymous: bool,
    principals: Principals,
    subs: Vec<SubId>,
}

#[derive(Default)]
struct CollIndex {
    by_principal: HashMap<Arc<str>, HashSet<SubId>>,
    privileged: HashSet<SubId>,
}

#[derive(Default)]
struct State {
    position: u64,
    graph: RoleGraph,
    users: HashMap<Arc<str>, UserEntry>,
    subs: HashMap<SubId, Sub>,
    next_id: SubId,
    by_conn: HashMap<u64, HashMap<Arc<str>, SubId>>,
    index: HashMap<Arc<str>, CollIndex>,
    pending: Vec<SubId>,
    recent: Recent,
}

/// How far back `Recent` keeps applied events: 4,096 events or 8 MiB of documents,
/// whichever is less; and the xids of 65,536 transactions whose events it let go.
const RECENT_EVENTS: usize = 4096;
const RECENT_BYTES: usize = 8 << 20;
const RECENT_EVICTED_XIDS: usize = 65_536;
/// How many log positions a start-up reads back when a transaction it did not see may
/// have events older than anything `Recent` remembers.
const LATE_SPAN: u64 = 10_000;

/// The events this hub applied last, for a `snapshot: true` subscription's hand-over:
/// an event at or before S whose transaction the start snapshot did not see was often
/// applied before the subscription registered (so it is in no pending buffer). A
/// transaction is normally in that state for microseconds (between its commit record
/// and leaving the proc array), so these few thousand events reach far enough; for
/// when they do not (a commit held longer, e.g. waiting for a synchronous standby),
/// the xids of the transactions whose events left the ring are kept with their
/// positions, so `late` knows exactly which log range to read back instead.
#[derive(Default)]
struct Recent {
    ring: VecDeque<Arc<Event>>,
    bytes: usize,
    /// The newest xid applied (the reference for reading a mis-epoched xid).
    newest_xid: u64,
    /// xid (as `full_xid` reads it) -> first and last position of its events that left
    /// the ring.
    evicted: BTreeMap<u64, (u64, u64)>,
    /// The largest xid dropped from `evicted` (for room) and the last position of its
    /// events: a transaction at or below it may have events at or before that position.
    forgotten: Option<(u64, u64)>,
    /// The reader's start position and the transactions running at its start: events at
    /// or before it were never applied here, and a transaction a later snapshot does not
    /// see can have events there only if it was running then too.
    before_start: Option<(u64, Box<[u64]>)>,
}

impl Recent {
    fn push(&mut self, ev: &Arc<Event>) {
        if matches!(ev.body, Body::Other) {
            return;
        }
        if ev.xid != u64::MAX {
            self.newest_xid = self.newest_xid.max(self.norm(ev.xid));
        }
        self.bytes += event_bytes(ev) + 64;
        self.ring.push_back(ev.clone());
        while self.ring.len() > RECENT_EVENTS || (self.bytes > RECENT_BYTES && self.ring.len() > 1) {
            let Some(old) = self.ring.pop_front() else { break };
            self.bytes = self.bytes.saturating_sub(event_bytes(&old) + 64);
            let x = self.norm(old.xid);
            let e = self.evicted.entry(x).or_insert((old.position, old.position));
            e.0 = e.0.min(old.position);
            e.1 = e.1.max(old.position);
            if self.evicted.len() > RECENT_EVICTED_XIDS {
                if let Some((fx, (_, last))) = self.evicted.pop_first() {
                    let f = self.forgotten.get_or_insert((fx, last));
                    *f = (f.0.max(fx), f.1.max(last));
                }
            }
        }
    }

    /// An xid as logged, read as the transaction it is (`Snap::full`, against the newest
    /// xid applied; the 0.4.0 capture logged some 2^32 low, in epoch 0 as a wrapped value).
    fn norm(&self, xid: u64) -> u64 {
        const E: u64 = 1 << 32;
        if xid != u64::MAX && xid > u64::MAX - E {
            return xid.wrapping_add(E);
        }
        if self.newest_xid == 0 {
            xid
        } else {
            full_xid(xid, self.newest_xid)
        }
    }

    /// For a snapshot taken with S = `upto`: the events at or before S its transactions
    /// did not see, as far as the ring holds them, and the log ranges (after, upto] to
    /// read back for the rest. Nothing when the snapshot saw every finished transaction.
    fn late(&self, snap: &Snap, upto: u64) -> (Vec<Arc<Event>>, Vec<(u64, u64)>) {
        if snap.xip.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let found: Vec<Arc<Event>> = self.ring.iter().filter(|e| e.position <= upto && e.xid != u64::MAX && !snap.visible(e.xid)).cloned().collect();
        let mut reads = Vec::new();
        let mut span_end: Option<u64> = None;
        for &x in snap.xip.iter() {
            if let Some(&(first, last)) = self.evicted.get(&x) {
                reads.push((first.saturating_sub(1), last.min(upto)));
            }
            if let Some((fx, last)) = self.forgotten {
                if x <= fx {
                    span_end = span_end.max(Some(last));
                }
            }
            if let Some((p0, running)) = &self.before_start {
                if running.contains(&x) {
                    span_end = span_end.max(Some(*p0));
                }
            }
        }
        if let Some(end) = span_end {
            reads.push((end.saturating_sub(LATE_SPAN), end.min(upto)));
        }
        reads.retain(|(a, b)| a < b);
        (found, reads)
    }
}

/// Builds each distinct frame of one event once.
#[derive(Default)]
struct Frames {
    /// (type, fields) -> the JSON after `"sub":…`.
    tails: Vec<(Kind, Option<Arc<[String]>>, Bytes)>,
}

fn sub_frame(kind: &'static str, sub: &Arc<str>, position: Option<u64>, tail: &[u8]) -> Frame {
    let name = serde_json::to_string(&**sub).unwrap_or_else(|_| "\"\"".into());
    let mut json = Vec::with_capacity(24 + name.len() + tail.len());
    json.extend_from_slice(b"{\"type\":\"");
    json.extend_from_slice(kind.as_bytes());
    json.extend_from_slice(b"\",\"sub\":");
    json.extend_from_slice(name.as_bytes());
    json.extend_from_slice(tail);
    Frame { kind, sub: Some(sub.clone()), position, json: Bytes::from(json) }
}

/// `{"type":"reset","sub":..,"reason":..,"position":".."}`.
pub fn reset_frame(sub: &Arc<str>, reason: &str, position: u64) -> Frame {
    let tail = format!(",\"reason\":{},\"position\":\"{position}\"}}", Value::from(reason));
    sub_frame("reset", sub, Some(position), tail.as_bytes())
}

fn error_frame(sub: &Arc<str>, code: &str, message: &str) -> Frame {
    let tail = format!(",\"error\":{}}}", serde_json::json!({"code": code, "message": message}));
    sub_frame("error", sub, None, tail.as_bytes())
}

fn subscribed_frame(sub: &Arc<str>, position: u64) -> Frame {
    sub_frame("subscribed", sub, Some(position), format!(",\"position\":\"{position}\"}}").as_bytes())
}

fn snapshot_frame(sub: &Arc<str>, document: &str) -> Frame {
    sub_frame("snapshot", sub, None, format!(",\"document\":{document}}}").as_bytes())
}

/// The document as the subscription may see it: `fields` keeps those top-level data
/// fields (system fields stay), as the list route's `fields`.
fn document_json(v: &Version, fields: Option<&[String]>) -> String {
    let Some(fields) = fields else { return v.json.to_string() };
    match serde_json::from_str::<Value>(&v.json) {
        Ok(Value::Object(mut m)) => {
            m.insert("data".into(), pgbaas_query::eval::project(&v.data, fields));
            Value::Object(m).to_string()
        }
        _ => v.json.to_string(),
    }
}

impl Frames {
    fn frame(&mut self, ev: &Event, d: &DocChange, kind: Kind, sub: &Sub) -> Frame {
        let fields = sub.fields.as_deref();
        let found = self.tails.iter().find(|(k, f, _)| *k == kind && f.as_deref() == fields).map(|t| t.2.clone());
        let tail = found.unwrap_or_else(|| {
            let p = ev.position;
            let t = match kind {
                Kind::Leave => format!(",\"position\":\"{p}\",\"id\":{}}}", Value::from(&*d.id)),
                Kind::Delete => {
                    let doc = d.old.as_ref().map(|o| document_json(o, fields)).unwrap_or_else(|| "null".into());
                    format!(",\"position\":\"{p}\",\"document\":{doc}}}")
                }
                _ => {
                    let doc = d.new.as_ref().map(|n| document_json(n, fields)).unwrap_or_else(|| "null".into());
                    format!(",\"position\":\"{p}\",\"document\":{doc}}}")
                }
            };
            let t = Bytes::from(t);
            self.tails.push((kind, sub.fields.clone(), t.clone()));
            t
        });
        sub_frame(kind.as_str(), &sub.name, Some(ev.position), &tail)
    }
}

impl State {
    fn coll(&mut self, c: &Arc<str>) -> &mut CollIndex {
        self.index.entry(c.clone()).or_default()
    }

    fn index_sub(&mut self, id: SubId) {
        let Some(s) = self.subs.get(&id) else { return };
        let (c, privileged, ps) = (s.collection.clone(), s.privileged(), s.principals.clone());
        let ix = self.coll(&c);
        if privileged {
            ix.privileged.insert(id);
        } else {
            for p in ps.iter() {
                ix.by_principal.entry(p.clone()).or_default().insert(id);
            }
        }
    }

    fn unindex_sub(&mut self, id: SubId) {
        let Some(s) = self.subs.get(&id) else { return };
        let (c, ps) = (s.collection.clone(), s.principals.clone());
        if let Some(ix) = self.index.get_mut(&c) {
            ix.privileged.remove(&id);
            for p in ps.iter() {
                if let Some(set) = ix.by_principal.get_mut(p) {
                    set.remove(&id);
                    if set.is_empty() {
                        ix.by_principal.remove(p);
                    }
                }
            }
            if ix.privileged.is_empty() && ix.by_principal.is_empty() {
                self.index.remove(&c);
            }
        }
    }

    fn remove_sub(&mut self, id: SubId) -> Option<Sub> {
        self.unindex_sub(id);
        self.pending.retain(|p| *p != id);
        let s = self.subs.remove(&id)?;
        if let Some(m) = self.by_conn.get_mut(&s.conn.id) {
            m.remove(&s.name);
            if m.is_empty() {
                self.by_conn.remove(&s.conn.id);
            }
        }
        if let Who::User(u) = &s.who {
            if let Some(e) = self.users.get_mut(u) {
                e.subs.retain(|x| *x != id);
                if e.subs.is_empty() {
                    self.users.remove(u);
                }
            }
        }
        Some(s)
    }

    /// Deliver one doc event to one live subscription.
    fn deliver(sub: &mut Sub, ev: &Event, d: &DocChange, frames: &mut Frames) {
        if sub.seen(ev) {
            return;
        }
        if let Some(kind) = decide(d, sub.filter.as_deref(), sub.privileged(), &sub.principals) {
            if matches!(kind, Kind::Insert | Kind::Update) && !watched_changed(sub.watch.as_deref(), d) {
                return;
            }
            let f = frames.frame(ev, d, kind, sub);
            sub.conn.outbox.push(f, false);
        }
    }

    /// A user's principals changed (role membership or nesting): re-index their
    /// subscriptions and tell each live one, at this position, to re-read.
    fn principals_changed(&mut self, user: &Arc<str>, ev: &Event, changed: bool) {
        let Some(e) = self.users.get(user) else { return };
        let (ps, subs) = (e.principals.clone(), e.subs.clone());
        for id in subs {
            if self.subs.get(&id).is_none_or(|s| s.pending.is_some()) {
                continue;
            }
            if changed {
                self.unindex_sub(id);
            }
            if let Some(s) = self.subs.get_mut(&id) {
                if changed {
                    s.principals = ps.clone();
                }
                if (changed && !s.seen(ev)) || s.missed_role_change(ev) {
                    s.conn.outbox.push(reset_frame(&s.name, "access_changed", ev.position), false);
                }
            }
            if changed {
                self.index_sub(id);
            }
        }
    }

    fn refresh_user(&mut self, user: &Arc<str>, ev: &Event) {
        let Some(e) = self.users.get_mut(user) else { return };
        let ps = self.graph.principals(user, e.direct.iter().map(String::as_str), e.anonymous);
        let changed = ps != e.principals;
        if changed {
            e.principals = ps;
        }
        self.principals_changed(user, ev, changed);
    }

    /// Apply one event (in position order).
    fn apply(&mut self, ev: Arc<Event>) {
        if ev.position <= self.position {
            return;
        }
        self.position = ev.position;
        self.recent.push(&ev);
        // Pending subscriptions keep what may concern them, for their hand-over.
        for id in &self.pending {
            if let Some(s) = self.subs.get_mut(id) {
                let keep = match &ev.body {
                    Body::Doc(_) | Body::Collection { .. } => ev.collection.as_deref() == Some(&*s.collection),
                    Body::Member { user, .. } => matches!(&s.who, Who::User(u) if **u == **user),
                    Body::Nest { .. } | Body::Reset => true,
                    Body::Other => false,
                };
                if keep {
                    if let Some(b) = s.pending.as_mut() {
                        b.push(ev.clone());
                    }
                }
            }
        }
        match &ev.body {
            Body::Doc(d) => {
                let Some(c) = ev.collection.as_deref() else { return };
                let Some(ix) = self.index.get(c) else { return };
                let mut cands: Vec<SubId> = ix.privileged.iter().copied().collect();
                for v in [&d.old, &d.new].into_iter().flatten() {
                    for r in v.readers.iter() {
                        if let Some(set) = ix.by_principal.get(r) {
                            cands.extend(set.iter().copied());
                        }
                    }
                }
                cands.sort_unstable();
                cands.dedup();
                let mut frames = Frames::default();
                for id in cands {
                    if let Some(s) = self.subs.get_mut(&id) {
                        if s.pending.is_none() {
                            State::deliver(s, &ev, d, &mut frames);
                        }
                    }
                }
            }
            Body::Member { user, role, add } => {
                let user: Arc<str> = Arc::from(&**user);
                if let Some(e) = self.users.get_mut(&user) {
                    if *add {
                        e.direct.insert(role.to_string());
                    } else {
                        e.direct.remove(&**role);
                    }
                    self.refresh_user(&user, &ev);
                }
            }
            Body::Nest { member_role, role, add } => {
                self.graph.set(member_role, role, *add);
                let users: Vec<Arc<str>> = self.users.keys().cloned().collect();
                for u in users {
                    self.refresh_user(&u, &ev);
                }
            }
            Body::Collection { realtime, dropped } => {
                if *realtime && !*dropped {
                    return;
                }
                let Some(c) = ev.collection.as_deref() else { return };
                let ids: Vec<SubId> =
                    self.subs.iter().filter(|(_, s)| &*s.collection == c && s.pending.is_none()).map(|(id, _)| *id).collect();
                for id in ids {
                    if let Some(s) = self.remove_sub(id) {
                        s.conn.outbox.push(collection_closed(&s.name, c, *dropped), true);
                    }
                }
            }
            Body::Reset => {
                for s in self.subs.values_mut() {
                    if s.pending.is_none() && !s.seen(&ev) {
                        s.conn.outbox.push(reset_frame(&s.name, "capture_reset", ev.position), false);
                    }
                }
            }
            Body::Other => {}
        }
    }
}

fn collection_closed(sub: &Arc<str>, collection: &str, dropped: bool) -> Frame {
    if dropped {
        error_frame(sub, "not_found", &format!("collection {collection:?} was dropped"))
    } else {
        error_frame(sub, "feed_disabled", &format!("the live feed of collection {collection:?} was turned off"))
    }
}

/// What a subscription's start-up transaction saw (as of its position S).
#[derive(Debug, Clone)]
pub struct Start {
    pub position: u64,
    pub snap: Snap,
    /// The user's direct roles and the role graph, as of S.
    pub roles: Vec<String>,
    pub nesting: Vec<(String, String)>,
}

impl Start {
    /// Make the role state the one at S: the start snapshot's roles plus `late`, the role
    /// events at or before S whose transaction that snapshot did not see (commit record
    /// decoded and appended, transaction not yet visible: `Hub::late_events`). They are
    /// in the log up to S, so live delivery applied them before any event after S, and a
    /// resume's range (p, S] holds them (`steady_principals` undoes them from here).
    /// Without them a role granted in that window stayed missing from the principals
    /// until the user's next role change. In position order; an add can only be late
    /// over a state without its row (the pair is the key: a second insert waits for the
    /// first and fails), a remove over one with it, so applying them is exact.
    /// Not for a `snapshot: true` subscription: its documents were read without them, so
    /// its hand-over replays them in order (a changed principal set is `reset`).
    pub fn with_late_roles(&mut self, late: &[Arc<Event>], who: &Who) {
        let Who::User(u) = who else { return };
        for ev in late {
            match &ev.body {
                Body::Member { user, role, add } if **user == **u => {
                    if *add {
                        if !self.roles.iter().any(|r| **r == **role) {
                            self.roles.push(role.to_string());
                        }
                    } else {
                        self.roles.retain(|r| **r != **role);
                    }
                }
                Body::Nest { member_role, role, add } => {
                    let edge = (member_role.to_string(), role.to_string());
                    if *add {
                        if !self.nesting.contains(&edge) {
                            self.nesting.push(edge);
                        }
                    } else {
                        self.nesting.retain(|e| *e != edge);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The start-up's outcome for `go_live`: replay the buffer past S and join.
enum Joined {
    Live,
    /// The collection's feed went off (or it was dropped) since S.
    Closed,
}

pub struct Hub {
    state: Mutex<State>,
    position: watch::Sender<u64>,
    cfg: HubConfig,
    /// The leader's last pull failed for want of wal_level=logical.
    unavailable: AtomicBool,
    sql: Option<SqlAccess>,
    startups: tokio::sync::Semaphore,
}

/// Where subscribe-time SQL runs: the requests' pool, so subscribes share (and are
/// bounded by) the requests' connections and caps; the admin pool's two connections
/// serve key reloads, which must never wait behind a burst of subscribes.
pub struct SqlAccess {
    pub pool: db::RequestPool,
    pub timeouts: Arc<db::Timeouts>,
}

impl Hub {
    pub fn new(cfg: HubConfig, sql: Option<SqlAccess>) -> Hub {
        let (tx, _) = watch::channel(0);
        let startups = tokio::sync::Semaphore::new(cfg.concurrent_startups.max(1));
        Hub { state: Mutex::new(State::default()), position: tx, cfg, unavailable: AtomicBool::new(false), sql, startups }
    }

    /// Whether user `u` reads as an anonymous account: the hub's entry for it, else
    /// the token of `conn`.
    fn anonymous_user(&self, u: &str, conn: &Conn) -> bool {
        let known = self.lock().users.get(u).map(|e| e.anonymous);
        known.unwrap_or_else(|| conn.caller().anonymous)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last position applied.
    pub fn position(&self) -> u64 {
        self.lock().position
    }

    pub fn set_unavailable(&self, v: bool) {
        self.unavailable.store(v, Ordering::Relaxed);
    }

    /// Where the reader starts: the log's last position at start-up, with the role
    /// graph as of then (events before it concern no subscription of this proxy).
    pub fn start_at(&self, position: u64, nesting: &[(String, String)]) {
        let mut st = self.lock();
        if st.position == 0 {
            st.position = position;
            st.graph = RoleGraph::from_edges(nesting.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        }
        drop(st);
        self.position.send_replace(position);
    }

    /// The snapshot the reader's start position was read in (`start_at`): a transaction
    /// running then may have events at or before that position that a later start-up's
    /// snapshot does not see either (`Recent::late`).
    pub fn start_snapshot(&self, snap: &Snap) {
        let mut st = self.lock();
        if st.recent.before_start.is_none() {
            let p = st.position;
            st.recent.before_start = Some((p, snap.xip.clone()));
        }
    }

    /// Apply events in position order (the capture reader).
    pub fn apply(&self, events: Vec<Arc<Event>>) {
        let Some(last) = events.last().map(|e| e.position) else { return };
        let mut st = self.lock();
        for ev in events {
            st.apply(ev);
        }
        drop(st);
        self.position.send_replace(last);
    }

    /// The users this hub holds subscriptions of (a capture reset reloads their roles).
    pub fn users(&self) -> Vec<String> {
        self.lock().users.keys().map(|u| u.to_string()).collect()
    }

    /// A gap in the log (retention deleted events this reader never read) or an event it
    /// cannot read: whatever role change was in it is unknown, and a missed `member` or
    /// `nest` removal would leave a principal that grants reads. So the role graph and
    /// every subscribed user's direct roles are replaced by `nesting` and `members`
    /// (read now), and every subscription is told to re-read: `reset` capture_reset at
    /// `position` (the last position lost), also those still starting up.
    pub fn capture_reset(&self, position: u64, nesting: &[(String, String)], members: &[(String, String)]) {
        let mut st = self.lock();
        st.graph = RoleGraph::from_edges(nesting.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        let users: Vec<Arc<str>> = st.users.keys().cloned().collect();
        for u in users {
            let direct: BTreeSet<String> = members.iter().filter(|(m, _)| **m == *u).map(|(_, r)| r.clone()).collect();
            let Some(anon) = st.users.get(&u).map(|e| e.anonymous) else { continue };
            let ps = st.graph.principals(&u, direct.iter().map(String::as_str), anon);
            let Some(e) = st.users.get_mut(&u) else { continue };
            e.direct = direct;
            if ps == e.principals {
                continue;
            }
            e.principals = ps.clone();
            let subs = e.subs.clone();
            for id in subs {
                if st.subs.get(&id).is_none_or(|s| s.pending.is_some()) {
                    continue;
                }
                st.unindex_sub(id);
                if let Some(s) = st.subs.get_mut(&id) {
                    s.principals = ps.clone();
                }
                st.index_sub(id);
            }
        }
        // xid u64::MAX: in no start snapshot, so never skipped as already seen.
        let ev = Arc::new(Event { position, xid: u64::MAX, collection: None, body: Body::Reset });
        for s in st.subs.values_mut() {
            if let Some(b) = s.pending.as_mut() {
                b.push(ev.clone());
            } else if !s.seen(&ev) {
                s.conn.outbox.push(reset_frame(&s.name, "capture_reset", position), false);
            }
        }
        st.position = st.position.max(position);
        let p = st.position;
        drop(st);
        self.position.send_replace(p);
    }

    /// Live subscriptions and bytes of state (the registry's own, not the outboxes).
    pub fn count(&self) -> usize {
        self.lock().subs.len()
    }

    /// Register a pending subscription (name reserved, events buffered from now).
    fn register(&self, conn: &Arc<Conn>, req: &Subscribe, filter: Option<Filter>, fields: Option<Vec<String>>) -> Result<SubId, ApiError> {
        let who = who_of(conn);
        let mut st = self.lock();
        let n = st.by_conn.get(&conn.id).map_or(0, |m| m.len());
        if st.by_conn.get(&conn.id).is_some_and(|m| m.contains_key(req.sub.as_str())) {
            return Err(ApiError::new(StatusCode::CONFLICT, "subscription_exists", format!("subscription {:?} exists on this connection", req.sub)));
        }
        if n >= self.cfg.max_subscriptions_per_connection {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_subscriptions",
                format!("a connection holds at most {} subscriptions", self.cfg.max_subscriptions_per_connection),
            ));
        }
        st.next_id += 1;
        let id = st.next_id;
        let name: Arc<str> = req.sub.as_str().into();
        let sub = Sub {
            conn: conn.clone(),
            name: name.clone(),
            collection: req.collection.as_str().into(),
            filter: filter.map(Box::new),
            fields: fields.map(Into::into),
            watch: req.watch.clone().map(Into::into),
            who,
            principals: anonymous(),
            start: 0,
            skip: false,
            resumed: false,
            snap: None,
            pending: Some(Vec::new()),
        };
        st.subs.insert(id, sub);
        st.by_conn.entry(conn.id).or_default().insert(name, id);
        st.pending.push(id);
        Ok(id)
    }

    fn cancel(&self, id: SubId) {
        self.lock().remove_sub(id);
    }

    /// The hand-over: replay the buffered events past S under the start's principals,
    /// then index the subscription live. Runs under the lock, so no event slips between
    /// the buffer and the live stream.
    fn go_live(&self, id: SubId, start: &Start, snapshot: bool, resumed: bool) -> Joined {
        self.go_live_with(id, start, snapshot, resumed, Vec::new())
    }

    /// `go_live`, with `late`: events at or before S that the start snapshot did not see
    /// and that were applied before the subscription registered (`late_events`).
    fn go_live_with(&self, id: SubId, start: &Start, snapshot: bool, resumed: bool, late: Vec<Arc<Event>>) -> Joined {
        let mut st = self.lock();
        let Some(mut sub) = st.subs.remove(&id) else { return Joined::Closed };
        st.pending.retain(|p| *p != id);
        let mut buffer = sub.pending.take().unwrap_or_default();
        if !late.is_empty() {
            buffer.extend(late);
            buffer.sort_by_key(|e| e.position);
            buffer.dedup_by_key(|e| e.position);
        }
        sub.start = start.position;
        sub.skip = snapshot;
        sub.resumed = resumed;
        sub.snap = (snapshot || resumed).then(|| Box::new(start.snap.clone()));
        let mut direct: BTreeSet<String> = start.roles.iter().cloned().collect();
        let mut graph = RoleGraph::from_edges(start.nesting.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        // An anonymous account's principals: as the hub's entry for the user says, or
        // for its first subscription, as its token says.
        let anon = match &sub.who {
            Who::User(u) => st.users.get(u).map_or_else(|| sub.conn.caller().anonymous, |e| e.anonymous),
            _ => false,
        };
        let local = |graph: &RoleGraph, direct: &BTreeSet<String>, who: &Who| match who {
            Who::User(u) => graph.principals(u, direct.iter().map(String::as_str), anon),
            _ => anonymous(),
        };
        sub.principals = local(&graph, &direct, &sub.who);
        let mut frames_of: HashMap<u64, Frames> = HashMap::new();
        for ev in buffer {
            if sub.seen(&ev) {
                continue;
            }
            match &ev.body {
                Body::Doc(d) => {
                    let frames = frames_of.entry(ev.position).or_default();
                    State::deliver(&mut sub, &ev, d, frames);
                }
                Body::Member { role, add, .. } => {
                    if *add {
                        direct.insert(role.to_string());
                    } else {
                        direct.remove(&**role);
                    }
                }
                Body::Nest { member_role, role, add } => graph.set(member_role, role, *add),
                Body::Collection { realtime, dropped } => {
                    if !*realtime || *dropped {
                        sub.conn.outbox.push(collection_closed(&sub.name, &sub.collection, *dropped), true);
                        if let Some(m) = st.by_conn.get_mut(&sub.conn.id) {
                            m.remove(&sub.name);
                        }
                        return Joined::Closed;
                    }
                }
                Body::Reset => {
                    sub.conn.outbox.push(reset_frame(&sub.name, "capture_reset", ev.position), false);
                }
                Body::Other => {}
            }
            if matches!(ev.body, Body::Member { .. } | Body::Nest { .. }) {
                let ps = local(&graph, &direct, &sub.who);
                // A resume's principals are the start snapshot's, which already hold a
                // role change committed before the start but captured after S: the
                // client's state as of p was read under the old ones, so it must re-read.
                if ps != sub.principals || sub.missed_role_change(&ev) {
                    sub.conn.outbox.push(reset_frame(&sub.name, "access_changed", ev.position), false);
                    sub.principals = ps;
                }
            }
        }
        // Join the hub's view of the user (kept since by member and nest events). It
        // equals the replayed one; should a race of a role change with the start-up
        // make them differ, the client is told to re-read rather than trusted to a guess.
        if let Who::User(u) = &sub.who {
            let graph_now = st.graph.clone();
            let e = st.users.entry(u.clone()).or_insert_with(|| UserEntry {
                principals: graph_now.principals(u, direct.iter().map(String::as_str), anon),
                anonymous: anon,
                direct,
                subs: Vec::new(),
            });
            e.subs.push(id);
            let theirs = e.principals.clone();
            if theirs != sub.principals {
                let p = st.position.max(start.position);
                sub.conn.outbox.push(reset_frame(&sub.name, "access_changed", p), false);
                sub.principals = theirs;
            }
        }
        st.subs.insert(id, sub);
        st.index_sub(id);
        Joined::Live
    }

    /// Wait until this proxy's reader has applied `position` (it is usually there: the
    /// notification that announced it reached every proxy at once).
    async fn reach(&self, position: u64) -> Result<(), ApiError> {
        let mut rx = self.position.subscribe();
        let r = tokio::time::timeout(self.cfg.catch_up_timeout, rx.wait_for(|p| *p >= position)).await;
        match r {
            Ok(Ok(_)) => Ok(()),
            _ => Err(unavailable("the live feed's reader is behind; retry")),
        }
    }
}

pub fn unavailable(m: &str) -> ApiError {
    let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "realtime_unavailable", m);
    e.retry_after = Some(1);
    e
}

fn query_error(e: pgbaas_query::QueryError, anonymous: bool) -> ApiError {
    // The status and code the list route gives the same refusal (from the extension's
    // SQLSTATE: 22023 invalid_query, 54000 query_too_complex).
    let state = match e.kind {
        pgbaas_query::ErrorKind::InvalidQuery => "22023",
        pgbaas_query::ErrorKind::TooComplex => "54000",
    };
    ApiError::from_sqlstate(state, &e.message, Some(e.code()), None, anonymous)
}

// ---- the start-up SQL -------------------------------------------------------------

const BEGIN: &str = "begin isolation level repeatable read";
const COMMIT: &str = "commit";

/// As baas_authenticator, in the transaction's snapshot: the start position, the
/// snapshot, the user's direct roles, the role graph and the retention window. Kept in
/// a transaction-local setting because the request connection returns one row per
/// batch, and the next statements run as the caller, who may not call these functions.
const META: &str = "select pg_catalog.set_config('pgbaas_rt.start', pg_catalog.json_build_object(\
    'position', baas.realtime_position(), \
    'snapshot', pg_catalog.pg_current_snapshot()::text, \
    'roles', (select coalesce(pg_catalog.json_agg(m.role), '[]') from baas._realtime_role_members(\
        case when $1::text is null then '{}'::uuid[] else array[$1::text::uuid] end) m), \
    'nesting', (select coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(n.member_role, n.role)), '[]') \
        from baas._realtime_role_nesting() n), \
    'window', (select pg_catalog.json_build_array(w.oldest, w.last, w.last_reset) from baas._realtime_window() w))::text, true)";

/// As the caller: the collection's feed switch and (if asked) the snapshot's page, as
/// the list route gives it (the caller's read rule, the filter, `fields`). With the
/// isolation level and the snapshot this statement ran in, which must be META's
/// (`start_up` checks: the skip after S is only exact if the documents were read in the
/// snapshot whose visibility it tests).
const DOCS: &str = "select pg_catalog.json_build_object(\
    'start', pg_catalog.current_setting('pgbaas_rt.start')::json, \
    'isolation', pg_catalog.current_setting('transaction_isolation'), \
    'snapshot', pg_catalog.pg_current_snapshot()::text, \
    'feed', (select coalesce((pg_catalog.to_jsonb(c) ->> 'realtime')::boolean, true) from baas.collections c where c.name = $1::text), \
    'aal2_required', (select coalesce((pg_catalog.to_jsonb(c) ->> 'require_aal2')::boolean, false) from baas.collections c where c.name = $1::text) \
        and coalesce(nullif(pg_catalog.current_setting('baas.claims', true), '')::jsonb ->> 'role', '') <> 'baas_service' \
        and coalesce(nullif(pg_catalog.current_setting('baas.claims', true), '')::jsonb ->> 'aal', '') <> 'aal2', \
    'page', case when $5::boolean then baas.list_documents($1::text, $2::text::jsonb, null, $3::integer, 0, false, null, $4::text[]) end)::text";

/// Events (after, upto], oldest first, at most $2: as baas_authenticator.
const REPLAY: &str = "select coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(r.position, r.xid::text, r.kind, r.collection, r.body) \
    order by r.position), '[]')::text from baas._realtime_read($1::bigint, $2::integer) r where r.position <= $3::bigint";

/// Events of some transactions in (after, after + $2] and at or before $3 (as
/// baas_authenticator; `late_events`).
const LATE: &str = "select coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(r.position, r.xid::text, r.kind, r.collection, r.body) \
    order by r.position), '[]')::text from baas._realtime_read($1::bigint, $2::integer) r \
    where r.position <= $3::bigint and r.xid::text = any($4::text[])";

const WINDOW: &str = "select pg_catalog.json_build_array(w.oldest, w.last, w.last_reset)::text from baas._realtime_window() w";

#[derive(Deserialize)]
struct StartRow {
    position: i64,
    snapshot: String,
    roles: Vec<String>,
    nesting: Vec<(String, String)>,
    window: Option<(i64, i64, i64)>,
}

#[derive(Deserialize)]
struct DocsRow<'a> {
    start: StartRow,
    isolation: String,
    snapshot: String,
    feed: Option<bool>,
    /// The collection needs an aal2 session (require_aal2) and the caller's is not one.
    #[serde(default)]
    aal2_required: Option<bool>,
    #[serde(borrow)]
    page: Option<Page<'a>>,
}

#[derive(Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
    next: Option<&'a RawValue>,
}

/// The resume rule (contract): exact iff last_reset <= p <= last and p >= oldest - 1.
pub fn resume_verdict(p: u64, window: (i64, i64, i64)) -> Result<(), &'static str> {
    let (oldest, last, last_reset) = window;
    let p = p as i64;
    if p < last_reset {
        return Err("capture_reset");
    }
    if p > last || p < oldest - 1 {
        return Err("retention");
    }
    Ok(())
}

/// Parse REPLAY's answer into events.
pub fn parse_replay(text: &str) -> Result<Vec<Arc<Event>>, String> {
    let rows: Vec<(u64, String, String, Option<String>, Box<RawValue>)> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    rows.into_iter()
        .map(|(pos, xid, kind, coll, body)| {
            let xid = xid.parse().map_err(|_| format!("xid {xid:?}"))?;
            Event::parse(pos, xid, &kind, coll.as_deref(), body.get()).map(Arc::new)
        })
        .collect()
}

impl Hub {
    fn sql(&self) -> Result<&SqlAccess, ApiError> {
        self.sql.as_ref().ok_or_else(|| unavailable("no database"))
    }

    async fn one(&self, steps: &[crate::pgwire::Step<'_>], rows_of: usize) -> Result<String, ApiError> {
        let sql = self.sql()?;
        let row = db::run_steps(&sql.pool, &sql.timeouts, steps, rows_of).await?;
        row.and_then(|mut r| r.first_mut().and_then(Option::take)).ok_or_else(|| {
            log::error!("realtime start-up: no answer");
            ApiError::internal()
        })
    }

    /// The start-up transaction; the snapshot's documents (if asked), not yet sent.
    async fn start_up(&self, conn: &Arc<Conn>, req: &Subscribe, fields: &Option<Vec<String>>) -> Result<(Start, Option<(i64, i64, i64)>, Vec<String>), ApiError> {
        let caller = conn.caller();
        let user = caller.user().map(str::to_string);
        let timeout = if caller.claims.is_none() { self.sql()?.timeouts.anon_statement.clone() } else { self.sql()?.timeouts.statement.clone() };
        let filter = req.filter.to_string();
        let lim = (self.cfg.snapshot_max + 1).min(1000) as i32;
        let no_params: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
        let meta_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&user];
        let request_id = crate::observe::id(); // (issue 19, observe)
        let app = crate::db::app_name(); // (issue 19, observe)
        let auth_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [&caller.claims, &timeout, &caller.client_ip, &"", &request_id, &app];
        // A Parse LiveQuery connection with the master key (issue 21): the service role
        // as the Parse door's requests with it get it.
        let (no_token, master) = (None::<String>, "true");
        let master_params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [&no_token, &timeout, &caller.client_ip, &"", &request_id, &app, &master];
        let authenticate: (&str, &[&(dyn tokio_postgres::types::ToSql + Sync)]) =
            if caller.parse_master { (db::PARSE_AUTHENTICATE, &master_params) } else { (db::AUTHENTICATE, &auth_params) };
        let docs_params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&req.collection, &filter, &lim, fields, &req.snapshot];
        let text = self
            .one(
                &[(BEGIN, &no_params), (META, &meta_params), authenticate, (DOCS, &docs_params), (COMMIT, &no_params)],
                3,
            )
            .await?;
        let row: DocsRow = serde_json::from_str(&text).map_err(|e| {
            log::error!("realtime start-up answer: {e}");
            ApiError::internal()
        })?;
        match row.feed {
            None => return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("collection {:?} not found", req.collection))),
            Some(false) => {
                return Err(ApiError::new(StatusCode::FORBIDDEN, "feed_disabled", format!("the live feed of collection {:?} is off", req.collection)))
            }
            Some(true) => {}
        }
        // A require_aal2 collection's events are for aal2 sessions only (docs/mfa.md):
        // an aal1 or anonymous subscriber is refused rather than fed a filtered stream.
        if row.aal2_required == Some(true) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "aal2_required",
                format!("collection {:?} needs a session signed in with a second factor (aal2)", req.collection),
            ));
        }
        // One REPEATABLE READ snapshot for the start position, its visibility and the
        // documents, or the hand-over is not exact: refuse (a pooler in statement mode
        // between the proxy and Postgres would split the batch).
        if row.isolation != "repeatable read" || row.snapshot != row.start.snapshot {
            log::error!(
                "realtime start-up: not one snapshot ({} / {}, isolation {}); is a statement-mode pooler in the way?",
                row.start.snapshot,
                row.snapshot,
                row.isolation
            );
            return Err(unavailable("the live feed's start-up did not run in one snapshot"));
        }
        let snap = Snap::parse(&row.start.snapshot).ok_or_else(ApiError::internal)?;
        if let Some(page) = &row.page {
            let cut = page.next.is_some_and(|n| n.get() != "null") && page.items.len() < lim as usize;
            if page.items.len() > self.cfg.snapshot_max || cut {
                return Err(ApiError::bad_request(
                    "snapshot_too_large",
                    format!("the snapshot holds more than {} documents (or bytes than a page); narrow the filter, ask for fewer fields, or list the documents and subscribe without a snapshot", self.cfg.snapshot_max),
                ));
            }
        }
        let docs = row.page.map(|p| p.items.iter().map(|d| d.get().to_string()).collect()).unwrap_or_default();
        let start = Start { position: row.start.position.max(0) as u64, snap, roles: row.start.roles, nesting: row.start.nesting };
        Ok((start, row.start.window, docs))
    }

    /// The events at or before S whose transaction the start snapshot did not see (its
    /// commit record was decoded before the snapshot, yet it had not become visible):
    /// from the hub's recent events, and read back from the log where those do not reach
    /// (`Recent::late`). Only the ones that concern the subscription are kept. A
    /// `snapshot: true` subscription's `go_live` sends them first, in position order;
    /// for the others only the role events count (`Start::with_late_roles`). Nothing to
    /// do (no SQL, no scan) when the snapshot had no running transaction.
    async fn late_events(&self, start: &Start, collection: &str, user: Option<&str>) -> Result<Vec<Arc<Event>>, ApiError> {
        if start.snap.xip.is_empty() {
            return Ok(Vec::new());
        }
        let (mut late, reads) = self.lock().recent.late(&start.snap, start.position);
        if !reads.is_empty() {
            // The xids as the log may hold them (an epoch low too: `Snap::full`).
            let xids: Vec<String> =
                start.snap.xip.iter().flat_map(|x| [x.to_string(), x.wrapping_sub(1 << 32).to_string()]).collect();
            for (after, upto) in reads {
                let mut after = after as i64;
                while after < upto as i64 {
                    let n = ((upto as i64 - after).min(1000)) as i32;
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&after, &n, &(upto as i64), &xids];
                    let text = self.one(&[(LATE, &params)], 0).await?;
                    let page = parse_replay(&text).map_err(|e| {
                        log::error!("realtime late events: {e}");
                        ApiError::internal()
                    })?;
                    late.extend(page);
                    after += n as i64;
                }
            }
        }
        late.retain(|e| e.position <= start.position && !start.snap.visible(e.xid) && replay_concerns(e, collection, user));
        late.sort_by_key(|e| e.position);
        late.dedup_by_key(|e| e.position);
        Ok(late)
    }

    /// The events of (p, upto] that concern a subscription of `collection` by `user`,
    /// page by page, keeping only those; None if they are more than REPLAY_MAX events or
    /// `max_bytes` of documents (the caller then says `reset` retention: a client that
    /// far behind re-reads sooner than it would replay, and memory stays bounded).
    async fn replay(&self, p: u64, upto: u64, collection: &str, user: Option<&str>, max_bytes: usize) -> Result<Option<Vec<Arc<Event>>>, ApiError> {
        const PAGE: i32 = 200;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut after = p as i64;
        let upto = upto as i64;
        while after < upto {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&after, &PAGE, &upto];
            let text = self.one(&[(REPLAY, &params)], 0).await?;
            let page = parse_replay(&text).map_err(|e| {
                log::error!("realtime replay: {e}");
                ApiError::internal()
            })?;
            let Some(last) = page.last().map(|e| e.position as i64) else { break };
            after = last;
            for ev in page {
                if replay_concerns(&ev, collection, user) {
                    bytes += event_bytes(&ev);
                    out.push(ev);
                }
            }
            if out.len() > REPLAY_MAX || bytes > max_bytes {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }
}

#[async_trait]
impl Feeds for Hub {
    async fn subscribe(&self, conn: &Arc<Conn>, req: Subscribe) -> Result<(), ApiError> {
        let anon = conn.caller().claims.is_none();
        if self.unavailable.load(Ordering::Relaxed) {
            return Err(unavailable("live feeds need wal_level = logical on the database (docs/realtime.md)"));
        }
        if req.snapshot && req.resume.is_some() {
            return Err(ApiError::bad_request("invalid_request", "snapshot and resume cannot be combined"));
        }
        let filter = pgbaas_query::parse::parse(&req.filter).map_err(|e| query_error(e, anon))?;
        let filter = match &filter {
            Filter::And(v) if v.is_empty() => None,
            _ => Some(filter),
        };
        let fields = match &req.fields {
            Some(f) => Some(pgbaas_query::parse::parse_fields(f).map_err(|e| query_error(e, anon))?),
            None => None,
        };
        let id = self.register(conn, &req, filter, fields.clone())?;
        // Bounded wait: a burst of start-ups answers 503 with Retry-After rather than
        // holding the connection (and its caller) for ever.
        let r = match tokio::time::timeout(self.cfg.catch_up_timeout, self.startups.acquire()).await {
            Ok(Ok(_permit)) => self.subscribe_registered(conn, &req, &fields, id).await,
            Ok(Err(_)) => Err(unavailable("shutting down")),
            Err(_) => Err(unavailable("too many subscriptions are starting; retry")),
        };
        if r.is_err() {
            self.cancel(id);
        }
        r
    }

    fn unsubscribe(&self, conn: &Arc<Conn>, sub: &str) -> bool {
        let mut st = self.lock();
        let Some(id) = st.by_conn.get(&conn.id).and_then(|m| m.get(sub)).copied() else { return false };
        st.remove_sub(id).is_some()
    }

    fn disconnect(&self, conn: &Arc<Conn>) {
        let mut st = self.lock();
        let ids: Vec<SubId> = st.by_conn.get(&conn.id).map(|m| m.values().copied().collect()).unwrap_or_default();
        for id in ids {
            st.remove_sub(id);
        }
    }
}

impl Hub {
    /// A resume that cannot be exact: `subscribed`, `reset` with `why`, live from S.
    async fn resume_reset(&self, conn: &Arc<Conn>, req: &Subscribe, id: SubId, start: &Start, why: &str) -> Result<(), ApiError> {
        self.reach(start.position).await?;
        let name: Arc<str> = req.sub.as_str().into();
        conn.outbox.push(subscribed_frame(&name, req.resume.unwrap_or(start.position)), true);
        conn.outbox.push(reset_frame(&name, why, start.position), true);
        self.go_live(id, start, false, true);
        Ok(())
    }

    async fn subscribe_registered(&self, conn: &Arc<Conn>, req: &Subscribe, fields: &Option<Vec<String>>, id: SubId) -> Result<(), ApiError> {
        let name: Arc<str> = req.sub.as_str().into();
        let (mut start, window, docs) = self.start_up(conn, req, fields).await?;
        // Nothing is sent before everything that can fail has run. S is reached first:
        // the events at or before S that the start snapshot did not see are looked up
        // among those applied up to it (or read back), for every subscription whose
        // principals can change: role events, folded into the start's roles (as of S).
        self.reach(start.position).await?;
        let user = conn.caller().user().map(str::to_string);
        let who = who_of(conn);
        let late = if req.snapshot || matches!(who, Who::User(_)) {
            self.late_events(&start, &req.collection, user.as_deref()).await?
        } else {
            Vec::new()
        };
        let late = if req.snapshot {
            late
        } else {
            start.with_late_roles(&late, &who);
            Vec::new()
        };
        let mut replayed = Vec::new();
        let mut reset = None;
        if let Some(p) = req.resume {
            match window.map(|w| resume_verdict(p, w)) {
                Some(Ok(())) => {
                    let max_bytes = conn.outbox.limit();
                    let Some(r) = self.replay(p, start.position, &req.collection, user.as_deref(), max_bytes).await? else {
                        return self.resume_reset(conn, req, id, &start, "retention").await;
                    };
                    replayed = r;
                    // Retention may have deleted the range's start meanwhile.
                    let w: Option<(i64, i64, i64)> = serde_json::from_str(&self.one(&[(WINDOW, &[])], 0).await?).ok();
                    let intact = w.is_some_and(|w| p as i64 >= w.0 - 1);
                    reset = replay_verdict(&replayed, &who, &start, intact);
                }
                Some(Err(why)) => reset = Some(why),
                None => reset = Some("retention"),
            }
        }
        for d in &docs {
            conn.outbox.push(snapshot_frame(&name, d), true);
        }
        conn.outbox.push(subscribed_frame(&name, req.resume.unwrap_or(start.position)), true);
        match reset {
            Some(why) => {
                conn.outbox.push(reset_frame(&name, why, start.position), true);
            }
            None if req.resume.is_some() => {
                // (p, S] under the caller's principals as of S (the same at every
                // position of the range: replay_verdict).
                let principals = match &who {
                    Who::User(u) => RoleGraph::from_edges(start.nesting.iter().map(|(a, b)| (a.as_str(), b.as_str())))
                        .principals(u, start.roles.iter().map(String::as_str), self.anonymous_user(u, conn)),
                    _ => anonymous(),
                };
                let filter = match pgbaas_query::parse::parse(&req.filter) {
                    Ok(Filter::And(v)) if v.is_empty() => None,
                    Ok(f) => Some(Box::new(f)),
                    Err(_) => None,
                };
                let mut probe = Sub {
                    conn: conn.clone(),
                    name: name.clone(),
                    collection: req.collection.as_str().into(),
                    filter,
                    fields: fields.clone().map(Into::into),
                    watch: req.watch.clone().map(Into::into),
                    who: who.clone(),
                    principals,
                    start: 0,
                    skip: false,
                    resumed: false,
                    snap: None,
                    pending: None,
                };
                replay_into(&mut probe, &replayed, start.position);
            }
            None => {}
        }
        match self.go_live_with(id, &start, req.snapshot, req.resume.is_some(), late) {
            Joined::Live | Joined::Closed => Ok(()),
        }
    }
}

/// Most events a resume replays (after keeping only those that concern it).
const REPLAY_MAX: usize = 10_000;

/// Does a replayed event concern a subscription of `collection` by `user`?
fn replay_concerns(ev: &Event, collection: &str, user: Option<&str>) -> bool {
    match &ev.body {
        Body::Doc(_) | Body::Collection { .. } => ev.collection.as_deref() == Some(collection),
        Body::Member { user: u, .. } => user == Some(&**u),
        Body::Nest { .. } | Body::Reset => true,
        Body::Other => false,
    }
}

/// The documents' bytes in an event (what its frames would carry).
fn event_bytes(ev: &Event) -> usize {
    match &ev.body {
        Body::Doc(d) => [&d.old, &d.new].into_iter().flatten().map(|v| v.json.len()).sum(),
        _ => 0,
    }
}

fn who_of(conn: &Conn) -> Who {
    let c = conn.caller();
    if c.service {
        Who::Service
    } else {
        c.user().map_or(Who::Anonymous, |u| Who::User(u.into()))
    }
}

/// A role event that can change `who`'s principals.
fn concerns(ev: &Event, who: &Who) -> bool {
    match &ev.body {
        Body::Nest { .. } => matches!(who, Who::User(_)),
        Body::Member { user, .. } => matches!(who, Who::User(u) if **u == **user),
        _ => false,
    }
}

/// A resume's range (p, S] read back: `reset` with this reason instead of a replay?
/// `retention` if the range's start was deleted meanwhile; `access_changed` if a role
/// change in it changed the caller's principals at some point (`steady_principals`).
/// A role change that left them as they were (another user's nesting, a role the caller
/// does not reach) changes no decision of the table, so the range is replayed.
pub fn replay_verdict(replayed: &[Arc<Event>], who: &Who, start: &Start, intact: bool) -> Option<&'static str> {
    if !intact {
        return Some("retention");
    }
    (!steady_principals(replayed, who, start)).then_some("access_changed")
}

/// Were `who`'s principals the same at every position of a resume's range as at its
/// end S? The start-up transaction gives the role graph and the caller's direct roles at
/// S; undoing the range's role changes one by one, newest first, gives them just before
/// each change, i.e. in force from the change before it on. If every such set equals
/// the one at S, each event of the range is judged under the principals live delivery
/// judged it under, and the replay with those of S is exact. Undoing is exact because
/// every `member`/`nest` event is a row inserted into or deleted from a table whose key
/// is the pair (baas.role_members, baas.role_roles): an add was absent before, a remove
/// present. Compared per event, not per transaction, as live delivery resets per event.
/// Anonymous and service callers' principals never change. (A role change the start
/// snapshot saw but captured after S is in the start's roles already and in no range:
/// `Sub::missed_role_change` resets for it when it arrives.)
pub fn steady_principals(replayed: &[Arc<Event>], who: &Who, start: &Start) -> bool {
    let Who::User(u) = who else { return true };
    let mut graph = RoleGraph::from_edges(start.nesting.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    let mut direct: BTreeSet<&str> = start.roles.iter().map(String::as_str).collect();
    // Anonymity does not change within a range: compared without it.
    let at_s = graph.principals(u, direct.iter().copied(), false);
    for ev in replayed.iter().rev() {
        match &ev.body {
            Body::Member { user, role, add } if **user == **u => {
                if *add {
                    direct.remove(&**role);
                } else {
                    direct.insert(&**role);
                }
            }
            Body::Nest { member_role, role, add } => graph.set(member_role, role, !*add),
            _ => continue,
        }
        if graph.principals(u, direct.iter().copied(), false) != at_s {
            return false;
        }
    }
    true
}

/// Send a resume's replayed events to `sub` under the contract's semantics.
fn replay_into(sub: &mut Sub, replayed: &[Arc<Event>], upto: u64) {
    for ev in replayed {
        if ev.collection.as_deref() != Some(&*sub.collection) && !matches!(ev.body, Body::Reset) {
            continue;
        }
        match &ev.body {
            Body::Doc(d) => State::deliver(sub, ev, d, &mut Frames::default()),
            Body::Collection { realtime, dropped } if !*realtime || *dropped => {
                // Off at some point in (p, S] and on again by S: the changes in between
                // were never captured.
                sub.conn.outbox.push(reset_frame(&sub.name, "retention", upto), true);
                return;
            }
            Body::Reset => {
                sub.conn.outbox.push(reset_frame(&sub.name, "capture_reset", ev.position), true);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod db_tests;
