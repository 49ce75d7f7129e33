//! The per-session synthetic address pool: each allowed name gets one slot, and slot `i` is
//! both `198.18.0.0 + 1 + i` (A) and `<session /64> + 1 + i` (AAAA). A later connect to either
//! address is therefore bound to exactly one name, with no rebinding by the agent or upstream.
//!
//! Bounded: when every slot is taken, the least recently used binding is recycled, but only if it
//! has been idle for at least `min_idle` (longer than any TTL we hand out), so an address a client
//! may still hold never silently changes name. Otherwise binding fails and the query gets
//! SERVFAIL. Lookups both ways are O(1): a hash map by name, and arithmetic on the address.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use ipnet::{Ipv4Net, Ipv6Net};
use policies::matchers::domain::Hostname;

/// The IPv4 pool of every session: 198.18.0.0/15 (RFC 2544 benchmarking space, never routed).
pub const SYNTHETIC_V4: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(198, 18, 0, 0), 15) {
    Ok(n) => n,
    Err(_) => panic!("constant prefix length is valid"),
};

/// Slots available in [`SYNTHETIC_V4`] (the network and broadcast addresses are skipped).
pub const MAX_SLOTS: u32 = (1 << 17) - 2;

/// The IPv6 pool of session `tag`: `fd00:0:5e55:<tag>::/64`, a slice of fc00::/7 (unique local).
pub fn session_v6_prefix(tag: u16) -> Ipv6Net {
    let addr = Ipv6Addr::new(0xfd00, 0, 0x5e55, tag, 0, 0, 0, 0);
    Ipv6Net::new(addr, 64).unwrap_or_default()
}

/// Address family of an A (V4) or AAAA (V6) answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4, record type A.
    V4,
    /// IPv6, record type AAAA.
    V6,
}

/// The two addresses bound to one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The A answer.
    pub v4: Ipv4Addr,
    /// The AAAA answer.
    pub v6: Ipv6Addr,
}

impl Binding {
    /// The address of `family`.
    pub fn addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.v4),
            Family::V6 => IpAddr::V6(self.v6),
        }
    }
}

/// Binding failed: every slot is in recent use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("synthetic address pool exhausted ({capacity} names in recent use)")]
pub struct PoolExhausted {
    /// The pool's capacity.
    pub capacity: u32,
}

const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Slot {
    name: Hostname,
    last_used: Instant,
    /// Towards the most recently used end.
    prev: u32,
    /// Towards the least recently used end.
    next: u32,
}

/// A bounded, LRU-recycling name↔address pool (see the module docs).
#[derive(Debug)]
pub struct SyntheticPool {
    v6_base: u128,
    v6_net: Ipv6Net,
    capacity: u32,
    min_idle: Duration,
    by_name: HashMap<Hostname, u32>,
    slots: Vec<Slot>,
    /// Most recently used slot.
    head: u32,
    /// Least recently used slot.
    tail: u32,
}

impl SyntheticPool {
    /// A pool of `capacity` names (clamped to 1..=[`MAX_SLOTS`]) using `v6_prefix` (a /64 or
    /// shorter; only its first 2^32 addresses are used) for AAAA; a binding idle for less than
    /// `min_idle` is never recycled.
    pub fn new(capacity: u32, v6_prefix: Ipv6Net, min_idle: Duration) -> Self {
        let capacity = capacity.clamp(1, MAX_SLOTS);
        let v6_net = if v6_prefix.prefix_len() > 64 { session_v6_prefix(0) } else { v6_prefix.trunc() };
        SyntheticPool {
            v6_base: u128::from(v6_net.network()),
            v6_net,
            capacity,
            min_idle,
            by_name: HashMap::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    /// Number of names bound.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether no name is bound.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `ip` lies in this pool's ranges (bound or not).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => SYNTHETIC_V4.contains(&v4),
            IpAddr::V6(v6) => self.v6_net.contains(&v6),
        }
    }

    fn binding(&self, slot: u32) -> Binding {
        let v4 = Ipv4Addr::from(u32::from(SYNTHETIC_V4.network()) + 1 + slot);
        let v6 = Ipv6Addr::from(self.v6_base + 1 + u128::from(slot));
        Binding { v4, v6 }
    }

    fn slot_of(&self, ip: IpAddr) -> Option<u32> {
        let offset = match ip {
            IpAddr::V4(v4) if SYNTHETIC_V4.contains(&v4) => u32::from(v4) - u32::from(SYNTHETIC_V4.network()),
            IpAddr::V6(v6) if self.v6_net.contains(&v6) => {
                u32::try_from(u128::from(v6) - self.v6_base).ok()?
            }
            _ => return None,
        };
        let slot = offset.checked_sub(1)?;
        (slot < self.slots.len() as u32).then_some(slot)
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        let slot = &mut self.slots[i as usize];
        slot.prev = NIL;
        slot.next = old;
        match old {
            NIL => self.tail = i,
            o => self.slots[o as usize].prev = i,
        }
        self.head = i;
    }

    fn touch(&mut self, i: u32, now: Instant) {
        self.slots[i as usize].last_used = now;
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    /// The addresses bound to `name`, binding it first if needed (recycling the least recently
    /// used binding when full and idle long enough). Marks the binding as used at `now`.
    pub fn bind(&mut self, name: &Hostname, now: Instant) -> Result<Binding, PoolExhausted> {
        if let Some(&i) = self.by_name.get(name) {
            self.touch(i, now);
            return Ok(self.binding(i));
        }
        let i = if (self.slots.len() as u32) < self.capacity {
            let i = self.slots.len() as u32;
            self.slots.push(Slot { name: name.clone(), last_used: now, prev: NIL, next: NIL });
            self.push_front(i);
            i
        } else {
            let i = self.tail;
            let Some(lru) = self.slots.get(i as usize) else {
                return Err(PoolExhausted { capacity: self.capacity });
            };
            if now.saturating_duration_since(lru.last_used) < self.min_idle {
                return Err(PoolExhausted { capacity: self.capacity });
            }
            let old = std::mem::replace(&mut self.slots[i as usize].name, name.clone());
            self.by_name.remove(&old);
            self.touch(i, now);
            i
        };
        self.by_name.insert(name.clone(), i);
        Ok(self.binding(i))
    }

    /// The addresses bound to `name`, without binding or marking it used.
    pub fn peek(&self, name: &Hostname) -> Option<Binding> {
        self.by_name.get(name).map(|&i| self.binding(i))
    }

    /// The name bound to `ip` (A or AAAA address of this pool), marking it used at `now`
    /// (a connect to the address counts as use).
    pub fn name_of(&mut self, ip: IpAddr, now: Instant) -> Option<Hostname> {
        let i = self.slot_of(ip)?;
        self.touch(i, now);
        Some(self.slots[i as usize].name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hostname {
        Hostname::parse(s).expect("test name")
    }

    #[test]
    fn binds_both_families_and_reverses() {
        let now = Instant::now();
        let mut p = SyntheticPool::new(4, session_v6_prefix(7), Duration::from_secs(60));
        let b = p.bind(&h("a.example"), now).expect("bind");
        assert_eq!(b.v4, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(b.v6, "fd00:0:5e55:7::1".parse::<Ipv6Addr>().expect("ip"));
        assert_eq!(p.bind(&h("a.example"), now).expect("bind"), b);
        assert_eq!(p.name_of(b.v4.into(), now), Some(h("a.example")));
        assert_eq!(p.name_of(b.v6.into(), now), Some(h("a.example")));
        assert_eq!(p.name_of("198.18.0.2".parse().expect("ip"), now), None);
        assert_eq!(p.name_of("10.0.0.1".parse().expect("ip"), now), None);
    }

    #[test]
    fn recycles_only_idle_bindings_in_lru_order() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut p = SyntheticPool::new(2, session_v6_prefix(0), idle);
        let a = p.bind(&h("a.example"), t0).expect("a");
        p.bind(&h("b.example"), t0).expect("b");
        assert!(p.bind(&h("c.example"), t0 + Duration::from_secs(1)).is_err(), "all in recent use");
        // `a` used again later: `b` becomes the LRU and is the one recycled.
        p.bind(&h("a.example"), t0 + Duration::from_secs(30)).expect("a again");
        let c = p.bind(&h("c.example"), t0 + idle + Duration::from_secs(1)).expect("c recycles b");
        assert_eq!(p.peek(&h("b.example")), None);
        assert_eq!(p.peek(&h("a.example")), Some(a));
        assert_ne!(c.v4, a.v4);
        assert_eq!(p.len(), 2);
    }
}
