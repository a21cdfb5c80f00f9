//! Rate limits, in memory, per proxy instance: one keyed GCRA limiter (`governor`) per
//! limit kind, keyed by client IP or account. Over a limit -> 429 `rate_limited` with
//! Retry-After. Account lockout (across instances) lives in Postgres; these limits only
//! shed load early. (issue 19, D) On the sign-in routes the per-account kind is counted
//! again in Postgres (sql/limits.sql, server.rs), shared by every proxy; the rest stay
//! per instance.
//!
//! Memory: each kind holds at most `Limits::max_keys` keys (measured: 75 bytes per IPv4
//! key at 200,000 keys; an account key adds its length, at most 320 characters). Housekeeping drops only keys
//! whose bucket is back to full (governor's `retain_recent`: such a key is
//! indistinguishable from a new one, so dropping it resets nothing). When a kind is full
//! of keys that are still counting, a *new* key of that kind is refused (429, Retry-After
//! two refill intervals) and every known key keeps its bucket: flooding one kind cannot
//! touch another kind, and flooding a kind cannot reset a victim's bucket in it.
//!
//! The client IP is the socket's peer, unless the peer is a trusted proxy: then the
//! rightmost X-Forwarded-For entry that is not itself a trusted proxy.

use governor::clock::{Clock, MonotonicClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Which limit a request counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Every request, per client IP.
    Request,
    /// Sign-ups, per client IP.
    Signup,
    /// Logins, refreshes and password changes, per client IP.
    Auth,
    /// Logins and password changes, per account (email or user id).
    Account,
}

impl Kind {
    /// The label of `pgbaas_rate_limited_total` (issue 19, observe).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Signup => "signup",
            Kind::Auth => "auth",
            Kind::Account => "account",
        }
    }
}

const KINDS: [Kind; 4] = [Kind::Request, Kind::Signup, Kind::Auth, Kind::Account];

#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// Requests allowed per `per`, and the burst size.
    pub count: u32,
    pub per: Duration,
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub enabled: bool,
    pub request_per_ip: Limit,
    pub signup_per_ip: Limit,
    pub auth_per_ip: Limit,
    pub auth_per_account: Limit,
    /// Keys each kind may hold (memory bound; see the module comment).
    pub max_keys: usize,
}

impl Limits {
    fn limit(&self, k: Kind) -> Limit {
        match k {
            Kind::Request => self.request_per_ip,
            Kind::Signup => self.signup_per_ip,
            Kind::Auth => self.auth_per_ip,
            Kind::Account => self.auth_per_account,
        }
    }
}

/// governor's DashMap store with a cap on its keys. At the cap an unknown key is not
/// stored: it is measured against a state no bucket can reach (`FULL`), which governor
/// answers with a wait far longer than any real bucket's, and `Limiter::check` turns
/// that into "full". The cap is checked before the insert, so threads racing on new keys
/// can pass it by at most one key each. (governor has no capped store of its own; this
/// is the 20 lines it takes.)
struct CappedStore {
    map: DashMapStateStore<String>,
    cap: usize,
}

/// A theoretical arrival time ~73 years after start: refused, with a wait no real bucket
/// has (a real one waits at most one refill interval).
const FULL: Nanos = Nanos::new(u64::MAX / 4);

impl StateStore for CappedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if self.map.len() >= self.cap && !self.map.contains_key(key) {
            return f(Some(FULL)).map(|(t, _)| t);
        }
        self.map.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<String> for CappedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.map.retain_recent(drop_below)
    }
    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.map)
    }
    fn len(&self) -> usize {
        self.map.len()
    }
    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One kind's limiter.
struct PerKind<C: Clock> {
    limiter: RateLimiter<String, CappedStore, C, NoOpMiddleware<C::Instant>>,
    /// Time to refill one token: the longest a known key waits for one token.
    interval: Duration,
    /// Tokens the bucket holds.
    burst: u32,
    cap: usize,
    /// Nanoseconds after `Limiter::start` of the last housekeeping pass.
    swept: AtomicU64,
}

/// Housekeeping runs at most this often per kind (it walks every key of the kind: a few
/// milliseconds at 100,000 keys), and only once the kind holds half its cap.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl<C: Clock> PerKind<C> {
    /// Retry-After, in seconds, for a refusal that waits `wait`.
    fn wait(&self, wait: Duration) -> u64 {
        if wait > self.interval * self.burst {
            // Only `FULL` waits this long: a real bucket refills whole in `burst`
            // intervals (n tokens at once wait at most that: check_n takes at most the
            // burst). retain_recent drops a key one interval after its bucket is full
            // again, so in two intervals every key that spent a single token can be swept.
            return whole_seconds(self.interval * 2);
        }
        whole_seconds(wait)
    }

    fn housekeep(&self, since_start: Nanos) {
        if self.limiter.len() < self.cap / 2 {
            return;
        }
        let now = since_start.as_u64();
        let last = self.swept.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY.as_nanos() as u64 {
            return;
        }
        if self.swept.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
    }
}

/// The rate limits of one proxy instance.
pub struct Limiter<C: Clock = MonotonicClock> {
    enabled: bool,
    kinds: Vec<PerKind<C>>,
    clock: C,
    start: C::Instant,
}

impl Limiter {
    pub fn new(limits: Limits) -> Limiter {
        Limiter::with_clock(limits, MonotonicClock)
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// A limiter on `clock` (tests use governor's FakeRelativeClock: no sleeps).
    pub fn with_clock(limits: Limits, clock: C) -> Limiter<C> {
        let kinds = KINDS
            .iter()
            .map(|&k| {
                let l = limits.limit(k);
                let count = NonZeroU32::new(l.count.max(1)).unwrap_or(NonZeroU32::MIN);
                let per = l.per.max(Duration::from_millis(1));
                let quota = Quota::with_period(per / count.get())
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                    .allow_burst(count);
                let store = CappedStore { map: DashMapStateStore::default(), cap: limits.max_keys.max(1) };
                PerKind {
                    limiter: RateLimiter::new(quota, store, clock.clone()),
                    interval: quota.replenish_interval(),
                    burst: quota.burst_size().get(),
                    cap: limits.max_keys.max(1),
                    swept: AtomicU64::new(0),
                }
            })
            .collect();
        let start = clock.now();
        Limiter { enabled: limits.enabled, kinds, clock, start }
    }

    /// Take one token for `key` under limit `kind`: Ok, or Err(seconds to wait).
    pub fn check(&self, kind: Kind, key: &str) -> Result<(), u64> {
        if !self.enabled {
            return Ok(());
        }
        let k = &self.kinds[kind as usize];
        k.housekeep(self.clock.now().duration_since(self.start));
        match k.limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                crate::observe::limited(kind.name()); // (issue 19, observe)
                Err(k.wait(not_until.wait_time_from(self.clock.now())))
            }
        }
    }

    /// A batch of `operations` operations (POST /v1/batch), whose request took its one
    /// token (`check`): one more token per further operation, all or none, so that a
    /// batch of N costs what N requests cost and batching is no way around the request
    /// rate. A batch of more operations than the bucket holds could never be paid for:
    /// it is refused outright (`BatchRefusal::TooLarge`), never charged a part.
    pub fn check_batch(&self, kind: Kind, key: &str, operations: u32) -> Result<(), BatchRefusal> {
        if !self.enabled || operations <= 1 {
            return Ok(());
        }
        let k = &self.kinds[kind as usize];
        let too_large = || BatchRefusal::TooLarge { allowed: k.burst, per_secs: (k.interval * k.burst).as_secs_f64().round() as u64 };
        if operations > k.burst {
            return Err(too_large());
        }
        k.housekeep(self.clock.now().duration_since(self.start));
        let n = NonZeroU32::new(operations - 1).unwrap_or(NonZeroU32::MIN);
        match k.limiter.check_key_n(&key.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                crate::observe::limited(kind.name()); // (issue 19, observe)
                Err(BatchRefusal::Wait(k.wait(not_until.wait_time_from(self.clock.now()))))
            }
            Err(governor::InsufficientCapacity(_)) => Err(too_large()),
        }
    }

    #[cfg(test)]
    fn keys(&self, kind: Kind) -> usize {
        self.kinds[kind as usize].limiter.len()
    }
}

/// Why `Limiter::check_batch` refused a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchRefusal {
    /// Over the rate now: retry after this many seconds.
    Wait(u64),
    /// More operations than the limit ever allows at once (`allowed` per `per_secs`):
    /// no wait helps, only a smaller batch.
    TooLarge { allowed: u32, per_secs: u64 },
}

/// Retry-After is in whole seconds: round up, and never 0 (a client told 0 retries at once).
fn whole_seconds(d: Duration) -> u64 {
    (d.as_nanos().div_ceil(1_000_000_000) as u64).max(1)
}

/// A cap on requests in flight per key (client address or user), so that no one client
/// can hold every pooled database connection (issue 13). A permit is released when it is
/// dropped, whatever way the request ends. Only keys with requests in flight are stored,
/// and at most `max_keys` of them: memory is bounded by the requests in flight.
/// (`governor` limits rates, not concurrency, and tokio's Semaphore would need one per
/// key and a race-free way to forget idle ones; a count per key in a DashMap is both.)
#[derive(Clone)]
pub struct InFlight {
    max: u32,
    max_keys: usize,
    counts: Arc<DashMap<String, u32>>,
}

/// The caps on database-bound requests in flight (config.rs `in_flight_caps`).
pub struct InFlightCaps {
    /// Per client address (`ip_key`).
    pub per_ip: InFlight,
    /// Per signed-in user.
    pub per_user: InFlight,
    /// All requests without a token together, under the one key `ANONYMOUS`.
    pub anonymous: InFlight,
}

/// The key of the anonymous cap.
pub const ANONYMOUS: &str = "anonymous";

/// Held while a request runs; dropping it frees the slot.
pub struct Permit {
    counts: Arc<DashMap<String, u32>>,
    key: Option<String>,
}

impl InFlight {
    /// At most `max` requests in flight per key (0: no cap), for at most `max_keys` keys
    /// at once.
    pub fn new(max: u32, max_keys: usize) -> InFlight {
        InFlight { max, max_keys, counts: Arc::new(DashMap::new()) }
    }

    /// A slot for `key`, or Err(seconds to wait) when it has `max` requests in flight (or
    /// `max_keys` other keys do). Requests take milliseconds: retry after one second.
    pub fn try_acquire(&self, key: &str) -> Result<Permit, u64> {
        if self.max == 0 {
            return Ok(Permit { counts: self.counts.clone(), key: None });
        }
        if self.counts.len() >= self.max_keys && !self.counts.contains_key(key) {
            return Err(1);
        }
        let mut n = self.counts.entry(key.to_owned()).or_insert(0);
        if *n >= self.max {
            return Err(1);
        }
        *n += 1;
        drop(n);
        Ok(Permit { counts: self.counts.clone(), key: Some(key.to_owned()) })
    }

    /// The cap (0: none).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Requests in flight for `key`.
    #[cfg(test)]
    pub fn in_flight(&self, key: &str) -> u32 {
        self.counts.get(key).map_or(0, |n| *n)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        if let Some(mut n) = self.counts.get_mut(&key) {
            *n = n.saturating_sub(1);
        }
        // Under the shard's lock: a key taken again in between is not removed.
        self.counts.remove_if(&key, |_, n| *n == 0);
    }
}

/// The key an address is limited under, by the rate limits and the caps on requests in
/// flight alike: IPv4 addresses one by one, IPv6 by /56. Providers commonly give one
/// customer a /56 (RFC 6177 suggests /56 for homes; some give /48): keyed by /64, one
/// customer would have 256 keys and hold the pool alone. Sign-in throttling in SQL
/// keeps /64 (it counts failures per account as well).
pub fn ip_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/56", s[0], s[1], s[2], s[3] & 0xff00)
        }
    }
}

/// The key an account is limited under (bounded length whatever the client sent). An
/// email address is keyed by the extension's own normalisation (the pgbaas-email crate),
/// so its other spellings (NFD, punycode, upper case) are the same account here as in
/// the database, not fresh keys; anything else is lower-cased.
pub fn account_key(kind: &str, id: &str) -> String {
    let id: String = match pgbaas_email::normalize(id) {
        Ok(email) => email,
        Err(_) => id.trim().to_lowercase().chars().take(320).collect(),
    };
    format!("{kind}:{id}")
}

/// A network in CIDR notation (or a single address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client address: the peer, or, when the peer is a trusted proxy, the rightmost
/// X-Forwarded-For hop that is not a trusted proxy. Unparsable entries end the walk
/// (what lies left of them cannot be trusted either).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(xff) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in xff.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client) {
                    return client;
                }
            }
            Err(_) => return client,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limits(n: u32) -> Limits {
        let l = Limit { count: n, per: Duration::from_secs(60) };
        Limits { enabled: true, request_per_ip: l, signup_per_ip: l, auth_per_ip: l, auth_per_account: l, max_keys: 100_000 }
    }

    fn fake(limits: Limits) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Limiter::with_clock(limits, clock.clone()), clock)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let (r, clock) = fake(limits(3));
        for _ in 0..3 {
            assert!(r.check(Kind::Auth, "1.2.3.4").is_ok());
        }
        let wait = r.check(Kind::Auth, "1.2.3.4").unwrap_err();
        assert_eq!(wait, 20, "3 per minute: one token every 20 s");
        assert!(r.check(Kind::Auth, "5.6.7.8").is_ok(), "other clients have their own bucket");
        assert!(r.check(Kind::Signup, "1.2.3.4").is_ok(), "other limits have their own bucket");
        clock.advance(Duration::from_secs(5));
        assert_eq!(r.check(Kind::Auth, "1.2.3.4"), Err(15), "Retry-After counts down");
        clock.advance(Duration::from_secs(15));
        assert!(r.check(Kind::Auth, "1.2.3.4").is_ok(), "refilled");
        clock.advance(Duration::from_secs(1));
        assert_eq!(r.check(Kind::Auth, "1.2.3.4"), Err(19));
    }

    #[test]
    fn a_batch_costs_one_token_per_operation() {
        let (r, clock) = fake(limits(10));
        let k = "1.2.3.4";
        // Each request: its own token (check), then the batch's further operations.
        assert!(r.check(Kind::Request, k).is_ok() && r.check_batch(Kind::Request, k, 7).is_ok());
        assert!(r.check(Kind::Request, k).is_ok());
        assert_eq!(r.check_batch(Kind::Request, k, 4), Err(BatchRefusal::Wait(6)), "2 left, 3 wanted: one refill (6 s) away");
        assert!(r.check(Kind::Request, k).is_ok());
        assert!(r.check_batch(Kind::Request, k, 2).is_ok(), "all or none: the refused batch took nothing more");
        assert_eq!(r.check(Kind::Request, k), Err(6));
        clock.advance(Duration::from_secs(60));
        assert!(r.check(Kind::Request, k).is_ok());
        let too_large = Err(BatchRefusal::TooLarge { allowed: 10, per_secs: 60 });
        assert_eq!(r.check_batch(Kind::Request, k, 11), too_large, "more than the bucket holds is refused, never clamped");
        assert_eq!(r.check_batch(Kind::Request, k, 500), too_large);
        assert!(r.check_batch(Kind::Request, k, 10).is_ok(), "the refusals took nothing; a full bucket pays for its size");
        assert_eq!(r.check(Kind::Request, k), Err(6));
        assert!(r.check_batch(Kind::Request, k, 1).is_ok() && r.check_batch(Kind::Request, k, 0).is_ok(), "one operation: the request's token");
    }

    #[test]
    fn a_batch_larger_than_a_slow_rate_is_refused() {
        // The review's case: 60 a minute and a batch of 100 must not pass for 60 tokens;
        // 1 a minute must not let a batch of any size pass for one token.
        for (rate, ops) in [(60, 100), (1, 2), (1, 1000)] {
            let (r, _clock) = fake(limits(rate));
            let k = "5.6.7.8";
            assert!(r.check(Kind::Request, k).is_ok());
            assert_eq!(r.check_batch(Kind::Request, k, ops), Err(BatchRefusal::TooLarge { allowed: rate, per_secs: 60 }), "{rate}/min, {ops} operations");
        }
        let (r, _clock) = fake(limits(60));
        assert!(r.check(Kind::Request, "k").is_ok() && r.check_batch(Kind::Request, "k", 60).is_ok());
        assert!(r.check(Kind::Request, "k").is_err(), "a batch of 60 spent all 60 tokens");
    }

    #[test]
    fn ipv6_clients_are_limited_per_56_and_keys_are_bounded() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip_key(ip("2001:db8:1:2:ffff:1:2:3")));
        // One customer's /56 holds 256 /64s: rotating through them gains nothing.
        assert_eq!(ip_key(ip("2001:db8:1:200::1")), ip_key(ip("2001:db8:1:2ff::1")));
        assert_eq!(ip_key(ip("2001:db8:1:2ff::1")), "2001:db8:1:200::/56");
        assert_ne!(ip_key(ip("2001:db8:1:200::1")), ip_key(ip("2001:db8:1:300::1")));
        assert_eq!(ip_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(account_key("email", &format!(" A@B.C{}", "x".repeat(5000))).len(), "email:".len() + 320);
        // Every spelling of one address is one key, as it is one account.
        assert_eq!(account_key("login", "e\u{301}lodie@BU\u{308}CHER.de"), account_key("login", "\u{e9}lodie@xn--bcher-kva.de"));
    }

    /// The bug this module was rewritten for: all kinds shared 16 shards, and an
    /// overflowing shard was emptied, so a flood of sign-up keys gave an attacker fresh
    /// login attempts against a victim's account.
    #[test]
    fn a_flood_of_signup_keys_does_not_reset_an_account_bucket() {
        let mut l = limits(3);
        l.max_keys = 1_000;
        let (r, clock) = fake(l);
        for _ in 0..3 {
            assert!(r.check(Kind::Account, "email:victim@example.com").is_ok());
        }
        assert!(r.check(Kind::Account, "email:victim@example.com").is_err());
        for i in 0..50_000 {
            let _ = r.check(Kind::Signup, &format!("signup:{i}"));
            if i % 1_000 == 0 {
                clock.advance(Duration::from_millis(100));
            }
        }
        assert!(r.keys(Kind::Signup) <= 1_000, "sign-up keys stay under the cap: {}", r.keys(Kind::Signup));
        assert!(r.check(Kind::Account, "email:victim@example.com").is_err(), "the victim's bucket is still empty");
    }

    #[test]
    fn a_full_kind_refuses_new_keys_and_keeps_every_known_bucket() {
        let mut l = limits(3);
        l.max_keys = 1_000;
        let (r, clock) = fake(l);
        for _ in 0..3 {
            assert!(r.check(Kind::Account, "email:victim").is_ok());
        }
        // Fill the kind with keys that are still counting (each spent a token).
        for i in 0..999 {
            assert!(r.check(Kind::Account, &format!("email:other{i}")).is_ok());
        }
        clock.advance(Duration::from_secs(2));
        assert_eq!(r.check(Kind::Account, "email:newcomer"), Err(40), "full: a new key waits two refill intervals");
        assert!(r.check(Kind::Account, "email:victim").is_err(), "known keys keep their buckets");
        assert!(r.check(Kind::Request, "email:newcomer").is_ok(), "other kinds are not full");
        assert!(r.keys(Kind::Account) <= 1_000);
        // Two intervals later the keys that spent one token are swept.
        clock.advance(Duration::from_secs(40));
        assert!(r.check(Kind::Account, "email:newcomer").is_ok());
        assert!(r.keys(Kind::Account) < 10, "swept: {}", r.keys(Kind::Account));
        // 42 s after spending three tokens the victim has refilled two (at 20 s and 40 s):
        // its bucket was kept, not reset to a fresh three.
        assert!(r.check(Kind::Account, "email:victim").is_ok());
        assert!(r.check(Kind::Account, "email:victim").is_ok());
        assert_eq!(r.check(Kind::Account, "email:victim"), Err(18));
    }

    #[test]
    fn memory_stays_bounded_under_rotating_keys() {
        let mut l = limits(5);
        l.max_keys = 10_000;
        let (r, clock) = fake(l);
        for i in 0..200_000 {
            let _ = r.check(Kind::Request, &i.to_string());
            if i % 5_000 == 0 {
                clock.advance(Duration::from_secs(3));
            }
        }
        assert!(r.keys(Kind::Request) <= 10_000, "{}", r.keys(Kind::Request));
    }

    #[test]
    fn disabled_limits_never_refuse() {
        let mut l = limits(1);
        l.enabled = false;
        let r = Limiter::new(l);
        for _ in 0..100 {
            assert!(r.check(Kind::Request, "x").is_ok());
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted = vec![Cidr::parse("10.0.0.0/8").unwrap(), Cidr::parse("::1").unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // An untrusted peer's header changes nothing.
        assert_eq!(client_ip(ip("203.0.113.5"), Some("1.1.1.1"), &trusted), ip("203.0.113.5"));
        // A trusted proxy: the rightmost untrusted hop.
        assert_eq!(client_ip(ip("10.1.2.3"), Some("6.6.6.6, 198.51.100.7, 10.9.9.9"), &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("10.1.2.3"), None, &trusted), ip("10.1.2.3"));
        // Garbage stops the walk at the last good hop.
        assert_eq!(client_ip(ip("10.1.2.3"), Some("6.6.6.6, nonsense, 10.9.9.9"), &trusted), ip("10.9.9.9"));
        assert_eq!(client_ip(ip("::ffff:10.1.2.3"), Some("192.0.2.1"), &trusted), ip("192.0.2.1"), "v4-mapped peers");
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("example.com").is_err());
    }

    #[test]
    fn in_flight_requests_are_capped_per_key_and_released_on_drop() {
        let f = InFlight::new(2, 3);
        let a1 = f.try_acquire("ip:a").unwrap();
        let a2 = f.try_acquire("ip:a").unwrap();
        assert_eq!(f.try_acquire("ip:a").err(), Some(1), "a third request in flight is refused");
        let b = f.try_acquire("user:b").unwrap();
        assert_eq!(f.in_flight("ip:a"), 2);
        drop(a1);
        let a3 = f.try_acquire("ip:a").expect("a finished request frees its slot");
        drop((a2, a3, b));
        assert_eq!(f.counts.len(), 0, "idle keys are forgotten");
        // At most max_keys keys with requests in flight; a known key still gets its slots.
        let held: Vec<Permit> = ["k1", "k2", "k3"].iter().map(|k| f.try_acquire(k).unwrap()).collect();
        assert!(f.try_acquire("k4").is_err());
        assert!(f.try_acquire("k1").is_ok());
        drop(held);
        assert!(f.try_acquire("k4").is_ok());
        let off = InFlight::new(0, 1);
        let many: Vec<Permit> = (0..100).map(|_| off.try_acquire("x").unwrap()).collect();
        assert_eq!(many.len(), 100, "0 means no cap");
    }

    #[test]
    fn permits_held_across_threads_never_exceed_the_cap() {
        let f = InFlight::new(3, 100);
        let peak = Arc::new(AtomicU64::new(0));
        let now = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..2_000 {
                        if let Ok(p) = f.try_acquire("ip:busy") {
                            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            std::thread::yield_now();
                            now.fetch_sub(1, Ordering::SeqCst);
                            drop(p);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 3, "peak {}", peak.load(Ordering::SeqCst));
        assert!(peak.load(Ordering::SeqCst) >= 1);
        assert_eq!(f.in_flight("ip:busy"), 0);
        assert_eq!(f.counts.len(), 0);
    }
}

