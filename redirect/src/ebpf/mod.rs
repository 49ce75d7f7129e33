//! The eBPF cgroup/sock_addr redirect backend (DESIGN.md §2, backend 2), for sessions that share
//! the host network namespace.
//!
//! Programs (`bpf/redirect.bpf.c`, compiled by `build.rs` and embedded) are loaded once per
//! [`EbpfBackend`] and attached per session cgroup by [`EbpfBackend::attach`]. Their maps are keyed
//! by cgroup id, so sessions never see each other's gateway, deny rules or connections. A packet
//! filter on the cgroup backs the address hooks up: no packet of a session socket leaves for an
//! address other than loopback or the session's own gateway and resolver. A TCP connect to a
//! loopback listener the session itself created (marked at `socket()`, looked up at connect) is
//! left alone, as it would be in a network namespace of its own; a listener of the host or of
//! another session is funnelled like any other destination. Every attach ends with a
//! self-test from inside the cgroup; an attach that cannot prove the programs redirect and refuse
//! is an error, and the caller fails closed.
//!
//! Use: [`EbpfBackend::load`] once per process; [`EbpfBackend::attach`] per session cgroup (before
//! the session's processes start, after the gateway and resolver listen); on each accept,
//! [`Attached::take`] with the peer address names the connection (`None`: close it); drain
//! [`EbpfBackend::refusals`] for the audit trail; [`Attached::update_denies`] on a policy reload;
//! drop the [`Attached`] once the session's processes are gone.

mod attached;
mod backend;
pub(crate) mod maps;
pub mod probe;
mod refusals;
mod selftest;

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};

use ipnet::IpNet;

pub use attached::{Attached, Redirected};
pub use backend::EbpfBackend;
pub use refusals::{MatchedRule, Refusal, RefusalReason, Refusals};
pub use selftest::{CANARY_DENY_V4, SENTINEL_V4, SENTINEL_V6};

/// One program of the backend, as attached to a session cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    /// `cgroup/connect4`: refuse or rewrite IPv4 connects.
    Connect4,
    /// `cgroup/connect6`: refuse or rewrite IPv6 connects.
    Connect6,
    /// `cgroup/sendmsg4`: DNS datagrams to the resolver, other UDP refused.
    Sendmsg4,
    /// `cgroup/sendmsg6`: likewise for IPv6.
    Sendmsg6,
    /// `cgroup/recvmsg4`: replies appear to come from the address the agent asked.
    Recvmsg4,
    /// `cgroup/recvmsg6`: likewise for IPv6.
    Recvmsg6,
    /// `cgroup/getpeername4`: names the original destination.
    Getpeername4,
    /// `cgroup/getpeername6`: likewise for IPv6.
    Getpeername6,
    /// `sockops`: files each redirected connection under its local address.
    SockOps,
    /// `cgroup_skb/egress`: drops packets of session sockets for non-loopback addresses.
    Egress,
    /// `cgroup/sock_create`: marks the session's TCP sockets as its own, so a connect to one of
    /// its loopback listeners stays direct.
    SockCreate,
    /// `cgroup/setsockopt`: a socket that asks for `SO_REUSEPORT` loses that mark.
    Setsockopt,
}

impl Program {
    /// Every program, in attach order: the ones that only read, mark or record first, so a
    /// connect is never rewritten before its record can be filed.
    pub const ALL: [Program; 12] = [
        Program::SockCreate,
        Program::Setsockopt,
        Program::SockOps,
        Program::Egress,
        Program::Recvmsg4,
        Program::Recvmsg6,
        Program::Getpeername4,
        Program::Getpeername6,
        Program::Sendmsg4,
        Program::Sendmsg6,
        Program::Connect4,
        Program::Connect6,
    ];

    /// The program's function name in the ELF object.
    pub fn name(self) -> &'static str {
        match self {
            Program::Connect4 => "connect4",
            Program::Connect6 => "connect6",
            Program::Sendmsg4 => "sendmsg4",
            Program::Sendmsg6 => "sendmsg6",
            Program::Recvmsg4 => "recvmsg4",
            Program::Recvmsg6 => "recvmsg6",
            Program::Getpeername4 => "getpeername4",
            Program::Getpeername6 => "getpeername6",
            Program::SockOps => "record_local",
            Program::Egress => "egress",
            Program::SockCreate => "mark_owner",
            Program::Setsockopt => "forget_shared",
        }
    }
}

/// A destination the policy denies outright: refused in the kernel with EPERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DenyRule {
    /// The network (IPv4 rules also match v4-mapped IPv6 destinations).
    pub net: IpNet,
    /// One port, or every port.
    pub port: Option<u16>,
}

impl DenyRule {
    /// Every port of `net`.
    pub fn net(net: IpNet) -> Self {
        Self { net, port: None }
    }

    /// Whether this rule covers `dst` (the kernel's verdict, for callers that want to check a
    /// destination without a socket).
    pub fn covers(&self, dst: SocketAddr) -> bool {
        let ip = match dst.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.net.contains(&ip) && self.port.is_none_or(|p| p == dst.port())
    }
}

/// What one session needs from the kernel half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// The gateway's IPv4 listener (host namespace, e.g. 127.0.0.1:port). IPv4 and v4-mapped
    /// TCP connects are rewritten to it.
    pub gateway_v4: SocketAddrV4,
    /// The gateway's IPv6 listener; without one, IPv6 TCP connects are refused.
    pub gateway_v6: Option<SocketAddrV6>,
    /// The session resolver (UDP); every UDP datagram to port 53 goes there.
    pub dns_v4: SocketAddrV4,
    /// The session resolver over IPv6; without one, IPv6 DNS is refused.
    pub dns_v6: Option<SocketAddrV6>,
    /// Destinations refused in the kernel.
    pub deny_list: Vec<DenyRule>,
}

/// Why the backend could not load, attach or update.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The embedded object did not load (verifier, BTF, permissions).
    #[error("loading the eBPF redirect programs: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program is missing from the object or could not be loaded or attached.
    #[error("eBPF program {program}: {source}")]
    Program {
        /// The program's name.
        program: &'static str,
        /// What the kernel or aya said.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map is missing from the object or has the wrong shape.
    #[error("eBPF map {map}: {reason}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The cgroup directory is unusable.
    #[error("cgroup {path}: {reason}")]
    Cgroup {
        /// The directory given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cgroup already has a session attached by this backend.
    #[error("cgroup {cgroup_id} already has an eBPF session")]
    AlreadyAttached {
        /// The cgroup's id.
        cgroup_id: u64,
    },
    /// The attach self-test did not see the programs work; the session must not start.
    #[error("eBPF redirect self-test failed: {0}")]
    SelfTest(String),
    /// A probe process could not be run.
    #[error("eBPF self-test probe: {0}")]
    Probe(#[source] io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_rules_cover_v4_mapped_destinations_and_their_port_only() {
        let any = DenyRule::net("10.0.0.0/8".parse().unwrap());
        assert!(any.covers("10.1.2.3:1".parse().unwrap()));
        assert!(any.covers("[::ffff:10.1.2.3]:443".parse().unwrap()));
        assert!(!any.covers("11.0.0.1:443".parse().unwrap()));
        let https = DenyRule { net: "2001:db8::/32".parse().unwrap(), port: Some(443) };
        assert!(https.covers("[2001:db8::1]:443".parse().unwrap()));
        assert!(!https.covers("[2001:db8::1]:80".parse().unwrap()));
        assert!(!https.covers("[2001:db9::1]:443".parse().unwrap()));
    }

    #[test]
    fn attach_order_puts_recording_before_rewriting() {
        let pos = |p| Program::ALL.iter().position(|&q| q == p).unwrap();
        assert!(pos(Program::SockOps) < pos(Program::Connect4));
        assert!(pos(Program::Recvmsg4) < pos(Program::Sendmsg4));
        assert!(pos(Program::SockCreate) < pos(Program::Connect4));
        assert!(pos(Program::Setsockopt) < pos(Program::Connect6));
        assert_eq!(Program::ALL.len(), 12);
    }
}
