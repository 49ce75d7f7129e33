//! The passthrough-mode address→name map: every A/AAAA answer the session received is recorded
//! under the name the agent asked for, so a later connect to that address can be decided by name.
//!
//! TTL-aware (an entry lives for its record's TTL, clamped to `[min_ttl, max_ttl]`: a TTL of 0
//! must still name the connect that follows the answer) and bounded (when full, expired entries
//! go first, then the entry closest to expiry). When several names share an address (CDNs), the
//! most recent answer names it; every recorded name was allowed by policy.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use policies::matchers::{cidr::canonical_ip, domain::Hostname};

#[derive(Debug)]
struct Entry {
    name: Hostname,
    expires: Instant,
    seq: u64,
}

/// A bounded, TTL-aware address→name map (see the module docs).
#[derive(Debug)]
pub struct NameMap {
    capacity: usize,
    min_ttl: Duration,
    max_ttl: Duration,
    entries: HashMap<IpAddr, Entry>,
    /// Expiry order: (expires, seq) → address.
    by_expiry: BTreeMap<(Instant, u64), IpAddr>,
    seq: u64,
}

impl NameMap {
    /// A map of at most `capacity` addresses (at least 1), each kept for its TTL clamped to
    /// `[min_ttl, max_ttl]`.
    pub fn new(capacity: usize, min_ttl: Duration, max_ttl: Duration) -> Self {
        NameMap {
            capacity: capacity.max(1),
            min_ttl,
            max_ttl: max_ttl.max(min_ttl),
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Number of entries held (expired ones included until purged).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Record that `ip` was answered for `name` with `ttl` seconds at `now`.
    pub fn record(&mut self, ip: IpAddr, name: &Hostname, ttl: u32, now: Instant) {
        let ip = canonical_ip(ip);
        let life = Duration::from_secs(u64::from(ttl)).clamp(self.min_ttl, self.max_ttl);
        if let Some(old) = self.entries.remove(&ip) {
            self.by_expiry.remove(&(old.expires, old.seq));
        } else if self.entries.len() >= self.capacity {
            self.purge(now);
            if self.entries.len() >= self.capacity
                && let Some((_, victim)) = self.by_expiry.pop_first()
            {
                self.entries.remove(&victim);
            }
        }
        self.seq += 1;
        let expires = now + life;
        self.by_expiry.insert((expires, self.seq), ip);
        self.entries.insert(ip, Entry { name: name.clone(), expires, seq: self.seq });
    }

    /// The name `ip` was last answered for, if that answer has not expired at `now`.
    pub fn lookup(&self, ip: IpAddr, now: Instant) -> Option<Hostname> {
        let e = self.entries.get(&canonical_ip(ip))?;
        (e.expires > now).then(|| e.name.clone())
    }

    /// The remaining lifetime of `ip`'s entry at `now`.
    pub fn remaining(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let e = self.entries.get(&canonical_ip(ip))?;
        (e.expires > now).then(|| e.expires - now)
    }

    /// Drop every entry expired at `now`.
    pub fn purge(&mut self, now: Instant) {
        while let Some((&(expires, seq), &ip)) = self.by_expiry.first_key_value() {
            if expires > now {
                break;
            }
            self.by_expiry.remove(&(expires, seq));
            self.entries.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hostname {
        Hostname::parse(s).expect("test name")
    }

    #[test]
    fn honours_ttl_with_floor_and_evicts_when_full() {
        let t0 = Instant::now();
        let mut m = NameMap::new(2, Duration::from_secs(5), Duration::from_secs(3600));
        let ip1: IpAddr = "203.0.113.1".parse().expect("ip");
        let ip2: IpAddr = "203.0.113.2".parse().expect("ip");
        let ip3: IpAddr = "::ffff:203.0.113.3".parse().expect("ip");
        m.record(ip1, &h("a.example"), 0, t0);
        m.record(ip2, &h("b.example"), 100, t0);
        assert_eq!(m.lookup(ip1, t0 + Duration::from_secs(4)), Some(h("a.example")));
        assert_eq!(m.lookup(ip1, t0 + Duration::from_secs(6)), None, "floor of 5 s");
        m.record(ip3, &h("c.example"), 100, t0 + Duration::from_secs(1));
        assert_eq!(m.len(), 2, "bounded: the earliest expiry was evicted");
        assert_eq!(m.lookup(ip1, t0), None);
        assert_eq!(m.lookup("203.0.113.3".parse().expect("ip"), t0), Some(h("c.example")));
        assert_eq!(m.remaining(ip2, t0), Some(Duration::from_secs(100)));
    }
}
