//! Refusals made in the kernel, read from the programs' ring buffer, so that every deny reaches
//! the audit trail with the rule that matched.

#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

use aya::maps::{Array, MapData, RingBuf};

use super::DenyRule;
use super::maps::{self, IPPROTO_TCP, RefusalRaw};
use super::selftest::{CANARY_INDEX, SENTINEL_V4};
use crate::original_dst::Transport;

/// Why the kernel refused a connect or a send (`REFUSED_*` in `bpf/redirect.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// A deny rule of the session matched.
    DenyRule,
    /// One of the attach self-test's own probes: the canary deny rule, or the raw datagram to the
    /// sentinel that the egress filter dropped (expected twice per attach).
    SelfTest,
    /// IPv6 TCP, and the session has no IPv6 gateway.
    NoGateway,
    /// IPv6 DNS, and the session has no IPv6 resolver.
    NoResolver,
    /// UDP other than DNS: it cannot be funnelled.
    Udp,
    /// A UDP socket connected to other than DNS: refused before anything was sent (glibc
    /// connects one to each candidate address to sort `getaddrinfo` answers), since sends on a
    /// connected socket pass no address hook.
    UdpConnect,
    /// Neither TCP nor UDP (raw, ICMP and the like).
    Protocol,
    /// A socket of an attached cgroup whose session entry is gone.
    NoSession,
    /// The original destination could not be recorded, so the connection could not be named.
    Record,
    /// A packet of a session socket for an address other than loopback, the gateway or the
    /// resolver (an accepted inbound connection, a raw socket); no process context, so pid 0.
    Egress,
    /// A reason this build does not know.
    Unknown(u16),
}

/// A deny rule as the kernel matched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchedRule {
    /// The rule.
    pub rule: DenyRule,
    /// Its position in the list given to `attach` or `update_denies` (`None` for the canary).
    pub index: Option<usize>,
}

/// One refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The session's cgroup id (the task's own cgroup for [`RefusalReason::NoSession`]).
    pub cgroup_id: u64,
    /// The thread that called.
    pub pid: u32,
    /// Its process.
    pub tgid: u32,
    /// The destination exactly as asked (v4-mapped stays v4-mapped).
    pub dst: SocketAddr,
    /// TCP or UDP; `None` for other protocols.
    pub transport: Option<Transport>,
    /// Why.
    pub reason: RefusalReason,
    /// The rule, for [`RefusalReason::DenyRule`] and [`RefusalReason::SelfTest`].
    pub rule: Option<MatchedRule>,
}

fn reason(code: u16) -> RefusalReason {
    match code {
        1 => RefusalReason::DenyRule,
        2 => RefusalReason::NoGateway,
        3 => RefusalReason::NoResolver,
        4 => RefusalReason::Udp,
        5 => RefusalReason::Protocol,
        6 => RefusalReason::NoSession,
        7 => RefusalReason::Record,
        8 => RefusalReason::Egress,
        9 => RefusalReason::UdpConnect,
        other => RefusalReason::Unknown(other),
    }
}

/// Decodes one ring-buffer record; `None` if it is not a whole `struct refusal`.
pub(crate) fn parse_refusal(bytes: &[u8]) -> Option<Refusal> {
    if bytes.len() < size_of::<RefusalRaw>() {
        return None;
    }
    // SAFETY: the slice holds at least size_of::<RefusalRaw>() bytes, RefusalRaw is plain data
    // valid for any bit pattern, and read_unaligned copes with the buffer's alignment.
    let raw: RefusalRaw = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let orig = maps::OrigValue { addr: raw.addr, port: raw.port, family: raw.family, ..Default::default() };
    let mut why = reason(raw.reason);
    let rule = (why == RefusalReason::DenyRule).then(|| {
        let r = raw.rule;
        let ip = maps::socket_addr(r.addr, 0).ip();
        let prefix = if r.v4 == 1 { r.prefix.min(32) } else { r.prefix.min(128) };
        let net = ipnet::IpNet::new(ip, prefix).unwrap_or_else(|_| ipnet::IpNet::from(ip));
        let port = u16::from_be(r.port);
        let index = (r.index != CANARY_INDEX).then_some(r.index as usize);
        MatchedRule { rule: DenyRule { net, port: (port != 0).then_some(port) }, index }
    });
    let dst = maps::requested_addr(&orig);
    let sentinel = std::net::IpAddr::V4(*SENTINEL_V4.ip());
    if rule.is_some_and(|r| r.index.is_none()) || (why == RefusalReason::Egress && dst.ip() == sentinel) {
        why = RefusalReason::SelfTest;
    }
    let transport = match raw.proto {
        IPPROTO_TCP => Some(Transport::Tcp),
        p if p == libc::IPPROTO_UDP as u16 => Some(Transport::Udp),
        _ => None,
    };
    Some(Refusal { cgroup_id: raw.cgid, pid: raw.pid, tgid: raw.tgid, dst, transport, reason: why, rule })
}

/// The refusal stream. Poll its fd for readability (e.g. with tokio's `AsyncFd`), then drain
/// with its `Iterator::next`.
pub struct Refusals {
    ring: RingBuf<MapData>,
    lost: Array<MapData, u64>,
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals").field("lost", &self.lost()).finish_non_exhaustive()
    }
}

impl Refusals {
    pub(crate) fn new(ring: RingBuf<MapData>, lost: Array<MapData, u64>) -> Self {
        Self { ring, lost }
    }

    /// Refusals the kernel could not queue because the ring buffer was full (the connects were
    /// still refused; only their audit records are missing).
    pub fn lost(&self) -> u64 {
        self.lost.get(&0, 0).unwrap_or(0)
    }
}

/// Yields the refusals waiting now; `None` means none is waiting, and a later call may yield more.
impl Iterator for Refusals {
    type Item = Refusal;

    fn next(&mut self) -> Option<Refusal> {
        loop {
            let item = self.ring.next()?;
            if let Some(r) = parse_refusal(&item) {
                return Some(r);
            }
        }
    }
}

impl AsFd for Refusals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::maps::{DenyValue, ip16};

    fn raw_bytes(r: &RefusalRaw) -> Vec<u8> {
        // SAFETY: RefusalRaw is plain data without padding.
        unsafe { std::slice::from_raw_parts((r as *const RefusalRaw).cast::<u8>(), size_of::<RefusalRaw>()) }
            .to_vec()
    }

    #[test]
    fn a_deny_refusal_names_its_rule_and_the_canary_is_told_apart() {
        let rule = DenyValue { addr: ip16("10.0.0.0".parse().unwrap()), port: 0, prefix: 8, v4: 1, index: 3 };
        let raw = RefusalRaw {
            cgid: 77,
            pid: 10,
            tgid: 9,
            addr: ip16("10.1.2.3".parse().unwrap()),
            port: 443u16.to_be(),
            family: libc::AF_INET as u16,
            proto: IPPROTO_TCP,
            reason: 1,
            rule,
            ..Default::default()
        };
        let r = parse_refusal(&raw_bytes(&raw)).unwrap();
        assert_eq!(r.dst, "10.1.2.3:443".parse::<SocketAddr>().unwrap());
        assert_eq!((r.cgroup_id, r.pid, r.tgid, r.transport), (77, 10, 9, Some(Transport::Tcp)));
        assert_eq!(r.reason, RefusalReason::DenyRule);
        let m = r.rule.unwrap();
        assert_eq!((m.rule.net, m.rule.port, m.index), ("10.0.0.0/8".parse().unwrap(), None, Some(3)));

        let canary =
            RefusalRaw { rule: DenyValue { index: CANARY_INDEX, port: 9u16.to_be(), ..rule }, ..raw };
        assert_eq!(parse_refusal(&raw_bytes(&canary)).unwrap().reason, RefusalReason::SelfTest);

        let udp =
            RefusalRaw { reason: 4, proto: libc::IPPROTO_UDP as u16, family: libc::AF_INET6 as u16, ..raw };
        let r = parse_refusal(&raw_bytes(&udp)).unwrap();
        assert_eq!((r.reason, r.rule, r.transport), (RefusalReason::Udp, None, Some(Transport::Udp)));
        let connected = RefusalRaw { reason: 9, ..udp };
        assert_eq!(parse_refusal(&raw_bytes(&connected)).unwrap().reason, RefusalReason::UdpConnect);
        assert_eq!(r.dst, "[::ffff:10.1.2.3]:443".parse::<SocketAddr>().unwrap());
        assert!(parse_refusal(&raw_bytes(&raw)[..71]).is_none());

        let egress = RefusalRaw { reason: 8, proto: 0, port: 0, rule: DenyValue::default(), ..raw };
        let r = parse_refusal(&raw_bytes(&egress)).unwrap();
        assert_eq!(
            (r.reason, r.transport, r.dst),
            (RefusalReason::Egress, None, "10.1.2.3:0".parse().unwrap())
        );
        let probe = RefusalRaw { addr: ip16(SENTINEL_V4.ip().to_owned().into()), ..egress };
        assert_eq!(parse_refusal(&raw_bytes(&probe)).unwrap().reason, RefusalReason::SelfTest);
    }
}
