//! The cancel-key table: the proxy hands each client its own random BackendKeyData and keeps
//! the upstream's real key and address here, so a CancelRequest (which arrives on a new
//! connection) can be routed without the client ever learning the upstream's key. Shared by
//! every connection of every service the caller wants; entries leave when their session ends.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use ring::rand::{SecureRandom, SystemRandom};

use super::error::ProxyError;

/// The most live entries (agentsh's limit); a session past it is refused with SQLSTATE 53300.
pub const MAX_ENTRIES: usize = 100_000;

/// The upstream side of a key: where the session's backend is and its real key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamKey {
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
    pub(crate) secret: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    secret: [u8; 4],
    service: String,
    upstream: UpstreamKey,
}

/// Proxy-issued keys → upstream keys. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct CancelTable {
    inner: Arc<Mutex<HashMap<u32, Entry>>>,
}

/// Removes its entry when the session ends.
#[derive(Debug)]
pub(crate) struct KeyGuard {
    table: CancelTable,
    pid: u32,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.table.lock().remove(&self.pid);
    }
}

impl CancelTable {
    /// An empty table.
    pub fn new() -> CancelTable {
        CancelTable::default()
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session holds a key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts
        // and removes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a fresh random key for a session of `service` whose backend is `upstream`.
    pub(crate) fn issue(
        &self,
        service: &str,
        upstream: UpstreamKey,
    ) -> Result<(KeyGuard, u32, [u8; 4]), ProxyError> {
        let rng = SystemRandom::new();
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            return Err(ProxyError::KeyTableFull(map.len()));
        }
        for _ in 0..8 {
            let mut bytes = [0u8; 8];
            rng.fill(&mut bytes).map_err(|_| ProxyError::Tls("system random source failed".into()))?;
            let pid = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & 0x7fff_ffff;
            if pid == 0 || map.contains_key(&pid) {
                continue;
            }
            let secret = [bytes[4], bytes[5], bytes[6], bytes[7]];
            map.insert(pid, Entry { secret, service: service.to_string(), upstream });
            return Ok((KeyGuard { table: self.clone(), pid }, pid, secret));
        }
        Err(ProxyError::KeyTableFull(map.len()))
    }

    /// The upstream key for a CancelRequest of `service` presenting `pid` and `secret`.
    pub(crate) fn lookup(&self, service: &str, pid: u32, secret: &[u8]) -> Option<UpstreamKey> {
        let map = self.lock();
        let e = map.get(&pid)?;
        // Compared without an early exit, so timing does not tell how much of a guess matched.
        let same = secret.len() == e.secret.len()
            && e.secret.iter().zip(secret).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        (same && e.service == service).then(|| e.upstream.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_route_only_with_the_right_secret_and_service_and_leave_with_the_session() {
        let t = CancelTable::new();
        let up = UpstreamKey { addr: "127.0.0.1:5432".parse().unwrap(), pid: 42, secret: vec![1, 2, 3, 4] };
        let (guard, pid, secret) = t.issue("appdb", up.clone()).unwrap();
        assert_eq!(t.lookup("appdb", pid, &secret), Some(up));
        let mut wrong = secret;
        wrong[0] ^= 1;
        assert_eq!(t.lookup("appdb", pid, &wrong), None);
        assert_eq!(t.lookup("other", pid, &secret), None);
        assert_eq!(t.lookup("appdb", pid, &[0; 8]), None);
        drop(guard);
        assert!(t.is_empty());
        assert_eq!(t.lookup("appdb", pid, &secret), None);
    }
}
