//! [`Attached`]: one session cgroup under the eBPF backend: naming accepted connections, swapping
//! the deny rules atomically, and detaching on drop.

#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::Key;
use aya::programs::cgroup_skb::CgroupSkbLink;
use aya::programs::cgroup_sock::CgroupSockLink;
use aya::programs::cgroup_sock_addr::CgroupSockAddrLink;
use aya::programs::cgroup_sockopt::CgroupSockoptLink;
use aya::programs::sock_ops::SockOpsLink;

use super::backend::{Shared, lock};
use super::maps::{self, DenyData, IPPROTO_TCP, OrigValue, SESSION_HAS_DNS6, SESSION_HAS_GW6, SessionValue};
use super::selftest::{CANARY_DENY_V4, CANARY_INDEX};
use super::{DenyRule, EbpfError, SessionParams};
use crate::original_dst::{OriginalDst, Transport};
use crate::sockaddr::canonical;

/// A program attached to the session cgroup; dropping it detaches.
#[derive(Debug)]
#[expect(dead_code, reason = "the links are held only so that dropping them detaches")]
pub(crate) enum AttachedLink {
    SockAddr(CgroupSockAddrLink),
    SockOps(SockOpsLink),
    Skb(CgroupSkbLink),
    Sock(CgroupSockLink),
    Sockopt(CgroupSockoptLink),
}

/// A redirected connection as the kernel recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirected {
    /// Destination, gateway, thread id and time, as the seccomp backend reports them.
    pub original: OriginalDst,
    /// The process (thread group) id.
    pub tgid: u32,
    /// The socket cookie (`SO_COOKIE`) of the agent's socket.
    pub cookie: u64,
}

/// The deny rules in force: their generation and the trie keys that hold them.
struct DenyState {
    gen_: u32,
    keys: Vec<Key<DenyData>>,
}

/// A session cgroup with the redirect programs attached. Dropping it detaches the programs and
/// removes the session's map entries; end the session's processes first, since a detached cgroup
/// is no longer redirected.
pub struct Attached {
    shared: Arc<Shared>,
    cgroup_dir: PathBuf,
    cgroup_id: u64,
    pub(super) params: SessionValue,
    pub(super) gateway_v4: SocketAddr,
    pub(super) gateway_v6: Option<SocketAddr>,
    deny: Mutex<DenyState>,
    pub(super) links: Vec<AttachedLink>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("cgroup_dir", &self.cgroup_dir)
            .field("cgroup_id", &self.cgroup_id)
            .field("programs", &self.links.len())
            .finish_non_exhaustive()
    }
}

fn session_value(p: &SessionParams) -> SessionValue {
    let mut v = SessionValue {
        gw4: p.gateway_v4.ip().octets(),
        dns4: p.dns_v4.ip().octets(),
        gw4_port: p.gateway_v4.port().to_be(),
        dns4_port: p.dns_v4.port().to_be(),
        ..Default::default()
    };
    if let Some(gw6) = p.gateway_v6 {
        v.gw6 = gw6.ip().octets();
        v.gw6_port = gw6.port().to_be();
        v.flags |= SESSION_HAS_GW6;
    }
    if let Some(dns6) = p.dns_v6 {
        v.dns6 = dns6.ip().octets();
        v.dns6_port = dns6.port().to_be();
        v.flags |= SESSION_HAS_DNS6;
    }
    v
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> EbpfError {
    move |e| EbpfError::Map { map, reason: e.to_string() }
}

/// Waits until no program can still be running with an older view of the maps. Programs on these
/// hooks run under RCU, and `membarrier(MEMBARRIER_CMD_GLOBAL)` waits for an RCU grace period.
fn wait_for_running_programs() {
    // SAFETY: membarrier takes no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, libc::MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        // nohz_full kernels refuse the command; a program runs for microseconds, so a pause many
        // times longer than that is the fallback.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills `ts`, which lives for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Attached {
    pub(super) fn new(shared: Arc<Shared>, cgroup_dir: PathBuf, cgroup_id: u64, p: &SessionParams) -> Self {
        Self {
            shared,
            cgroup_dir,
            cgroup_id,
            params: session_value(p),
            gateway_v4: SocketAddr::V4(p.gateway_v4),
            gateway_v6: p.gateway_v6.map(SocketAddr::V6),
            deny: Mutex::new(DenyState { gen_: 0, keys: Vec::new() }),
            links: Vec::new(),
        }
    }

    /// The session cgroup's directory.
    pub fn cgroup_dir(&self) -> &Path {
        &self.cgroup_dir
    }

    /// The session cgroup's id.
    pub fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }

    /// Writes the session entry, with its first deny generation, before any program is attached.
    pub(super) fn install_session(&self, rules: &[DenyRule]) -> Result<(), EbpfError> {
        self.update_denies(rules)
    }

    /// The kernel's record for the connection whose peer (the agent's local address, as the
    /// gateway's `accept` reports it) is `peer`; `None` when this session redirected no such
    /// connection. The record stays until the local address is reused or [`Self::take`] removes it.
    pub fn redirected(&self, peer: SocketAddr) -> Option<Redirected> {
        let v = lock(&self.shared.by_local).get(&maps::local_key(peer), 0).ok()?;
        self.to_redirected(&v)
    }

    /// [`Self::redirected`], removing the record (the gateway calls this once per accept).
    pub fn take(&self, peer: SocketAddr) -> Option<Redirected> {
        let key = maps::local_key(peer);
        let mut map = lock(&self.shared.by_local);
        let v = map.get(&key, 0).ok()?;
        let r = self.to_redirected(&v)?;
        let _ = map.remove(&key);
        Some(r)
    }

    /// Where the connection accepted from `peer` was really going (see [`Self::redirected`]).
    pub fn original_dst(&self, peer: SocketAddr) -> Option<OriginalDst> {
        self.redirected(peer).map(|r| r.original)
    }

    fn to_redirected(&self, v: &OrigValue) -> Option<Redirected> {
        // A record from another session (or from before a local port was reused by a connection
        // that went elsewhere) never names this session's connections.
        let gateway = canonical(maps::socket_addr(v.gw, v.gw_port));
        let ours = Some(gateway) == Some(self.gateway_v4) || self.gateway_v6.is_some_and(|g| g == gateway);
        if v.cgid != self.cgroup_id || v.proto != IPPROTO_TCP || !ours {
            return None;
        }
        let age = Duration::from_nanos(monotonic_ns().saturating_sub(v.ts_ns));
        let requested = maps::requested_addr(v);
        Some(Redirected {
            original: OriginalDst {
                dst: canonical(requested),
                requested,
                gateway,
                pid: v.pid,
                transport: Transport::Tcp,
                registered_at: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            },
            tgid: v.tgid,
            cookie: v.cookie,
        })
    }

    /// Replaces the session's deny rules. The new set is written under a fresh generation and
    /// switched to with one update of the session entry, so every connect sees either the old set
    /// or the new one, never a mix and never an empty set. On error the old set stays in force.
    pub fn update_denies(&self, rules: &[DenyRule]) -> Result<(), EbpfError> {
        let mut state = lock(&self.deny);
        let next = state.gen_.wrapping_add(1);
        let canary = DenyRule {
            net: ipnet::IpNet::from(std::net::IpAddr::V4(*CANARY_DENY_V4.ip())),
            port: Some(CANARY_DENY_V4.port()),
        };
        let entries: Vec<_> = rules
            .iter()
            .zip(0u32..)
            .chain(std::iter::once((&canary, CANARY_INDEX)))
            .map(|(r, i)| maps::deny_entry(next, self.cgroup_id, r, i))
            .collect();
        let keys: Vec<_> = entries.iter().map(|(k, _)| *k).collect();
        {
            let mut trie = lock(&self.shared.denies);
            for (i, (k, v)) in entries.iter().enumerate() {
                if let Err(e) = trie.insert(k, v, 0) {
                    for k in &keys[..i] {
                        let _ = trie.remove(k);
                    }
                    return Err(map_err("denies")(e));
                }
            }
        }
        let value = SessionValue { deny_gen: next, ..self.params };
        if let Err(e) = lock(&self.shared.sessions).insert(self.cgroup_id, value, 0) {
            let mut trie = lock(&self.shared.denies);
            for k in &keys {
                let _ = trie.remove(k);
            }
            return Err(map_err("sessions")(e));
        }
        let old = std::mem::replace(&mut state.keys, keys);
        state.gen_ = next;
        if !old.is_empty() {
            // A connect that read the old generation may still be looking its rules up.
            wait_for_running_programs();
            let mut trie = lock(&self.shared.denies);
            for k in &old {
                let _ = trie.remove(k);
            }
        }
        Ok(())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Detach the rewriting programs first and the recording ones last (the reverse of attach),
        // then forget the session: from then on no program looks for it.
        while let Some(link) = self.links.pop() {
            drop(link);
        }
        let _ = lock(&self.shared.sessions).remove(&self.cgroup_id);
        let keys = std::mem::take(&mut lock(&self.deny).keys);
        let mut trie = lock(&self.shared.denies);
        for k in &keys {
            let _ = trie.remove(k);
        }
        drop(trie);
        lock(&self.shared.attached).remove(&self.cgroup_id);
    }
}
