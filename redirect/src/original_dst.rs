//! `OriginalDst` and the bounded, thread-safe table that maps a redirected socket's local address
//! to the destination the agent asked for.
//!
//! The supervisor inserts an entry *before* it connects the agent's socket to the gateway, so the
//! gateway always finds it when it accepts; the gateway removes it with [`OriginalDstTable::take`].
//! Nothing the agent sends can create or change an entry.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sockaddr::canonical;

/// Transport of a redirected socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `SOCK_STREAM` (TCP).
    Tcp,
    /// `SOCK_DGRAM` (UDP).
    Udp,
}

/// Where a redirected socket was really going. Built only by the supervisor, from its own copy of
/// the agent's sockaddr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalDst {
    /// The destination in canonical form (v4-mapped IPv6 given as IPv4): what policy decided on.
    pub dst: SocketAddr,
    /// The destination exactly as the agent wrote it (reported back by `getpeername`).
    pub requested: SocketAddr,
    /// The gateway address the socket was connected to instead.
    pub gateway: SocketAddr,
    /// The tracee's pid (thread id) as seen by the supervisor.
    pub pid: u32,
    /// TCP or UDP.
    pub transport: Transport,
    /// When the entry was registered.
    pub registered_at: Instant,
}

impl OriginalDst {
    /// The destination IP (canonical).
    pub fn ip(&self) -> std::net::IpAddr {
        self.dst.ip()
    }

    /// The destination port.
    pub fn port(&self) -> u16 {
        self.dst.port()
    }
}

/// Why an entry could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The table holds `capacity` live entries; the connect is failed rather than forgotten.
    #[error("original-destination table is full ({capacity} entries)")]
    Full {
        /// The configured bound.
        capacity: usize,
    },
}

/// A map with a size bound and insertion order, for the two tables below.
#[derive(Debug)]
struct Bounded {
    entries: HashMap<SocketAddr, (OriginalDst, u64)>,
    order: BTreeMap<u64, SocketAddr>,
    next: u64,
}

impl Bounded {
    fn new() -> Self {
        Self { entries: HashMap::new(), order: BTreeMap::new(), next: 0 }
    }

    fn insert(&mut self, key: SocketAddr, value: OriginalDst) {
        self.remove(key);
        self.next += 1;
        self.order.insert(self.next, key);
        self.entries.insert(key, (value, self.next));
    }

    fn remove(&mut self, key: SocketAddr) -> Option<OriginalDst> {
        let (value, seq) = self.entries.remove(&key)?;
        self.order.remove(&seq);
        Some(value)
    }

    /// Drops the oldest entry if `keep` says it may go; returns whether one was dropped.
    fn evict_oldest_if(&mut self, keep: impl Fn(&OriginalDst) -> bool) -> bool {
        let Some((_, &key)) = self.order.first_key_value() else { return false };
        if self.entries.get(&key).is_some_and(|(v, _)| keep(v)) {
            return false;
        }
        self.remove(key);
        true
    }
}

/// Thread-safe, bounded map `local address → OriginalDst`, each entry taken once.
///
/// Keys are canonical local addresses (`127.0.0.1:port`, `[::1]:port`); a v4-mapped key is stored
/// as IPv4, which is how an AF_INET gateway listener sees the peer.
#[derive(Debug)]
pub struct OriginalDstTable {
    inner: Mutex<Bounded>,
    capacity: usize,
    ttl: Duration,
}

impl OriginalDstTable {
    /// A table holding at most `capacity` entries; entries older than `ttl` that were never
    /// taken (the connect failed or the gateway never accepted) are dropped to make room.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { inner: Mutex::new(Bounded::new()), capacity: capacity.max(1), ttl }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bounded> {
        // A panic while holding the lock leaves the map consistent (every method finishes its
        // update before it can panic), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `dst` for `local`, replacing any previous entry for the same address (a local
    /// port is only reused once the earlier socket is gone).
    pub fn insert(&self, local: SocketAddr, dst: OriginalDst) -> Result<(), TableError> {
        let key = canonical(local);
        let mut map = self.lock();
        if !map.entries.contains_key(&key) {
            let now = Instant::now();
            while map.entries.len() >= self.capacity {
                if !map.evict_oldest_if(|v| now.duration_since(v.registered_at) < self.ttl) {
                    return Err(TableError::Full { capacity: self.capacity });
                }
            }
        }
        map.insert(key, dst);
        Ok(())
    }

    /// Removes and returns the entry for `local` (the gateway calls this on accept, with the
    /// accepted socket's peer address).
    pub fn take(&self, local: SocketAddr) -> Option<OriginalDst> {
        self.lock().remove(canonical(local))
    }

    /// Returns a copy of the entry for `local` without removing it.
    pub fn get(&self, local: SocketAddr) -> Option<OriginalDst> {
        self.lock().entries.get(&canonical(local)).map(|(v, _)| *v)
    }

    /// Number of entries not yet taken.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no entry is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The supervisor's own record of redirected sockets, kept after the gateway took the entry, so
/// that `getpeername` can answer with the original destination. Bounded; the oldest entry goes
/// first.
#[derive(Debug)]
pub(crate) struct ServedTable {
    inner: Mutex<Bounded>,
    capacity: usize,
}

impl ServedTable {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Bounded::new()), capacity: capacity.max(1) }
    }

    pub(crate) fn insert(&self, local: SocketAddr, dst: OriginalDst) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while map.entries.len() >= self.capacity && map.evict_oldest_if(|_| false) {}
        map.insert(canonical(local), dst);
    }

    pub(crate) fn get(&self, local: SocketAddr) -> Option<OriginalDst> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.entries.get(&canonical(local)).map(|(v, _)| *v)
    }

    pub(crate) fn remove(&self, local: SocketAddr) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).remove(canonical(local));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dst(port: u16, at: Instant) -> OriginalDst {
        OriginalDst {
            dst: SocketAddr::from(([203, 0, 113, 5], port)),
            requested: SocketAddr::from(([203, 0, 113, 5], port)),
            gateway: "127.0.0.1:15001".parse().unwrap(),
            pid: 42,
            transport: Transport::Tcp,
            registered_at: at,
        }
    }

    #[test]
    fn take_is_once_and_keys_are_canonical() {
        let t = OriginalDstTable::new(8, Duration::from_secs(30));
        let now = Instant::now();
        t.insert("[::ffff:127.0.0.1]:40000".parse().unwrap(), dst(443, now)).unwrap();
        assert_eq!(t.len(), 1);
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(t.get(local).map(|d| d.port()), Some(443));
        assert_eq!(t.take(local).map(|d| d.ip()), Some([203, 0, 113, 5].into()));
        assert!(t.take(local).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_refuses_fresh_entries_but_evicts_stale_ones() {
        let t = OriginalDstTable::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let old = now - Duration::from_secs(120);
        t.insert("127.0.0.1:1".parse().unwrap(), dst(1, old)).unwrap();
        t.insert("127.0.0.1:2".parse().unwrap(), dst(2, now)).unwrap();
        t.insert("127.0.0.1:3".parse().unwrap(), dst(3, now)).unwrap();
        assert!(t.get("127.0.0.1:1".parse().unwrap()).is_none(), "stale entry evicted");
        let err = t.insert("127.0.0.1:4".parse().unwrap(), dst(4, now)).unwrap_err();
        assert_eq!(err, TableError::Full { capacity: 2 });
        // Replacing an existing key never needs room.
        t.insert("127.0.0.1:3".parse().unwrap(), dst(33, now)).unwrap();
        assert_eq!(t.take("127.0.0.1:3".parse().unwrap()).map(|d| d.port()), Some(33));
    }

    #[test]
    fn served_table_drops_oldest() {
        let s = ServedTable::new(2);
        let now = Instant::now();
        for p in 1..=3u16 {
            s.insert(SocketAddr::from(([127, 0, 0, 1], p)), dst(p, now));
        }
        assert!(s.get("127.0.0.1:1".parse().unwrap()).is_none());
        assert_eq!(s.get("127.0.0.1:3".parse().unwrap()).map(|d| d.port()), Some(3));
        s.remove("127.0.0.1:3".parse().unwrap());
        assert!(s.get("127.0.0.1:3".parse().unwrap()).is_none());
    }

    #[test]
    fn table_is_shareable_across_threads() {
        let t = std::sync::Arc::new(OriginalDstTable::new(1024, Duration::from_secs(30)));
        let handles: Vec<_> = (0..4u16)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for p in 0..100u16 {
                        let local = SocketAddr::from(([127, 0, 0, 1], i * 1000 + p));
                        t.insert(local, dst(p, Instant::now())).unwrap();
                        assert!(t.take(local).is_some());
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert!(t.is_empty());
    }
}
