//! Rate limits, in memory, per proxy instance: token buckets keyed by (limit, client
//! IP or account). Over a limit -> 429 `rate_limited` with Retry-After. Account lockout
//! (across instances) lives in Postgres; these limits only shed load early.
//!
//! The client IP is the socket's peer, unless the peer is a trusted proxy: then the
//! rightmost X-Forwarded-For entry that is not itself a trusted proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Shard {
    buckets: HashMap<(Kind, String), Bucket>,
    swept: Instant,
}

/// Sharded token buckets; idle buckets are swept so memory stays bounded.
pub struct Limiter {
    limits: Limits,
    shards: Vec<Mutex<Shard>>,
}

const SHARDS: usize = 16;
/// A shard holding more keys than this drops its full (idle) buckets, at most once a
/// second (a sweep walks the whole shard).
const SWEEP_AT: usize = 50_000;
/// A shard still this full after a sweep is emptied: memory stays bounded even when
/// an attacker rotates through more addresses than the buckets can forget.
const HARD_CAP: usize = 200_000;

impl Limiter {
    pub fn new(limits: Limits) -> Limiter {
        let now = Instant::now();
        Limiter { limits, shards: (0..SHARDS).map(|_| Mutex::new(Shard { buckets: HashMap::new(), swept: now })).collect() }
    }

    /// Take one token for `key` under limit `kind`: Ok, or Err(seconds to wait).
    pub fn check(&self, kind: Kind, key: &str) -> Result<(), u64> {
        self.check_at(kind, key, Instant::now())
    }

    fn check_at(&self, kind: Kind, key: &str, now: Instant) -> Result<(), u64> {
        if !self.limits.enabled {
            return Ok(());
        }
        let limit = self.limits.limit(kind);
        let cap = limit.count as f64;
        let rate = cap / limit.per.as_secs_f64(); // tokens per second
        let mut shard = self.shards[shard_of(kind, key)].lock().unwrap_or_else(|e| e.into_inner());
        if shard.buckets.len() >= SWEEP_AT && now.duration_since(shard.swept) >= Duration::from_secs(1) {
            shard.swept = now;
            shard.buckets.retain(|(k, _), b| {
                let l = self.limits.limit(*k);
                b.tokens + now.duration_since(b.at).as_secs_f64() * (l.count as f64 / l.per.as_secs_f64()) < l.count as f64
            });
            if shard.buckets.len() >= HARD_CAP {
                shard.buckets.clear();
            }
        }
        let b = shard.buckets.entry((kind, key.to_string())).or_insert(Bucket { tokens: cap, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

fn shard_of(kind: Kind, key: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    kind.hash(&mut h);
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

/// The key an address is limited under: IPv4 addresses one by one, IPv6 by /64 (one
/// subscriber's network: rotating through its addresses gains nothing).
pub fn ip_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The key an account is limited under (bounded length whatever the client sent).
pub fn account_key(kind: &str, id: &str) -> String {
    let id: String = id.trim().to_lowercase().chars().take(320).collect();
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

    fn limits(n: u32) -> Limits {
        let l = Limit { count: n, per: Duration::from_secs(60) };
        Limits { enabled: true, request_per_ip: l, signup_per_ip: l, auth_per_ip: l, auth_per_account: l }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let r = Limiter::new(limits(3));
        let t = Instant::now();
        for _ in 0..3 {
            assert!(r.check_at(Kind::Auth, "1.2.3.4", t).is_ok());
        }
        let wait = r.check_at(Kind::Auth, "1.2.3.4", t).unwrap_err();
        assert_eq!(wait, 20, "3 per minute: one token every 20 s");
        assert!(r.check_at(Kind::Auth, "5.6.7.8", t).is_ok(), "other clients have their own bucket");
        assert!(r.check_at(Kind::Signup, "1.2.3.4", t).is_ok(), "other limits have their own bucket");
        assert!(r.check_at(Kind::Auth, "1.2.3.4", t + Duration::from_secs(20)).is_ok(), "refilled");
        assert!(r.check_at(Kind::Auth, "1.2.3.4", t + Duration::from_secs(21)).is_err());
    }

    #[test]
    fn ipv6_clients_are_limited_per_64_and_keys_are_bounded() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip_key(ip("2001:db8:1:2:ffff:1:2:3")));
        assert_ne!(ip_key(ip("2001:db8:1:2::1")), ip_key(ip("2001:db8:1:3::1")));
        assert_eq!(ip_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(account_key("email", &format!(" A@B.C{}", "x".repeat(5000))).len(), "email:".len() + 320);
    }

    #[test]
    fn memory_stays_bounded_under_rotating_keys() {
        let r = Limiter::new(limits(5));
        let t = Instant::now();
        for i in 0..(HARD_CAP * SHARDS + 10_000) {
            let _ = r.check_at(Kind::Signup, &i.to_string(), t + Duration::from_secs((i / 100_000) as u64 * 2));
        }
        for s in &r.shards {
            assert!(s.lock().unwrap().buckets.len() < HARD_CAP, "a shard grew past its cap");
        }
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
}
