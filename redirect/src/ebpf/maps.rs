//! The Rust mirrors of `bpf/redirect.h`, and the pure conversions between them and std types.
//!
//! Addresses travel as 16 bytes in network order, IPv4 as v4-mapped IPv6; ports in network order.

#![allow(unsafe_code)]

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use aya::maps::lpm_trie::Key;

pub(crate) const AF_INET6: u16 = libc::AF_INET6 as u16;
pub(crate) const IPPROTO_TCP: u16 = libc::IPPROTO_TCP as u16;

/// `session.flags` bits.
pub(crate) const SESSION_HAS_GW6: u32 = 1;
pub(crate) const SESSION_HAS_DNS6: u32 = 2;

/// Bits of a deny key before the address: generation, cgroup id, port, padding.
pub(crate) const DENY_FIXED_BITS: u32 = 128;

/// `struct session`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SessionValue {
    pub gw4: [u8; 4],
    pub dns4: [u8; 4],
    pub gw6: [u8; 16],
    pub dns6: [u8; 16],
    pub gw4_port: u16,
    pub dns4_port: u16,
    pub gw6_port: u16,
    pub dns6_port: u16,
    pub deny_gen: u32,
    pub flags: u32,
}

/// The data part of `struct deny_key` (aya's `Key` adds the leading prefix length).
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DenyData {
    pub gen_: u32,
    pub cgid: u64,
    pub port: u16,
    pub pad: u16,
    pub addr: [u8; 16],
}

/// `struct orig_dst`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OrigValue {
    pub addr: [u8; 16],
    pub gw: [u8; 16],
    pub port: u16,
    pub gw_port: u16,
    pub family: u16,
    pub proto: u16,
    pub pid: u32,
    pub tgid: u32,
    pub cookie: u64,
    pub cgid: u64,
    pub ts_ns: u64,
}

/// `struct deny_rule`: the trie's value, the rule that matched.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DenyValue {
    pub addr: [u8; 16],
    pub port: u16,
    pub prefix: u8,
    pub v4: u8,
    pub index: u32,
}

/// `struct refusal`: one event from the ring buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RefusalRaw {
    pub cgid: u64,
    pub ts_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub proto: u16,
    pub reason: u16,
    pub rule: DenyValue,
}

/// `struct local_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LocalKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub pad: u16,
}

// The C side has the same figures; a mismatch would make every map operation fail (or worse,
// read garbage), so it is caught at compile time here and by the self-test at attach.
const _: () = assert!(size_of::<SessionValue>() == 56);
const _: () = assert!(size_of::<Key<DenyData>>() == 36);
const _: () = assert!(size_of::<OrigValue>() == 72);
const _: () = assert!(size_of::<LocalKey>() == 20);
const _: () = assert!(size_of::<DenyValue>() == 24);
const _: () = assert!(size_of::<RefusalRaw>() == 72);

// SAFETY: each type is `repr(C)` (or packed) plain data with no padding bytes and no invalid bit
// patterns, as `aya::Pod` requires.
unsafe impl aya::Pod for SessionValue {}
// SAFETY: as above (packed, so no padding).
unsafe impl aya::Pod for DenyData {}
// SAFETY: as above (72 bytes, every field naturally aligned, no padding).
unsafe impl aya::Pod for OrigValue {}
// SAFETY: as above.
unsafe impl aya::Pod for LocalKey {}
// SAFETY: as above (24 bytes, no padding).
unsafe impl aya::Pod for DenyValue {}

/// The 16-byte form of an IP: IPv4 as v4-mapped.
pub(crate) fn ip16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The key under which `bpf/redirect.bpf.c` files a redirected socket's local address, i.e. the
/// gateway's view of the accepted peer.
pub(crate) fn local_key(peer: SocketAddr) -> LocalKey {
    LocalKey { addr: ip16(peer.ip()), port: peer.port().to_be(), pad: 0 }
}

/// A 16-byte address and network-order port back as a socket address; v4-mapped becomes IPv4.
pub(crate) fn socket_addr(addr: [u8; 16], port_be: u16) -> SocketAddr {
    let ip = Ipv6Addr::from(addr);
    let port = u16::from_be(port_be);
    match ip.to_ipv4_mapped() {
        Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
        None => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
    }
}

/// The address exactly as the agent wrote it: an AF_INET6 sockaddr keeps its v4-mapped form.
pub(crate) fn requested_addr(v: &OrigValue) -> SocketAddr {
    if v.family == AF_INET6 {
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(v.addr), u16::from_be(v.port), 0, 0))
    } else {
        socket_addr(v.addr, v.port)
    }
}

/// The deny trie entry for rule number `index` (`u32::MAX` for the self-test canary).
pub(crate) fn deny_entry(
    gen_: u32,
    cgid: u64,
    rule: &super::DenyRule,
    index: u32,
) -> (Key<DenyData>, DenyValue) {
    let (addr, prefix, port) = (rule.net.addr(), rule.net.prefix_len(), rule.port.unwrap_or(0));
    let key = deny_key(gen_, cgid, addr, prefix, port);
    let value =
        DenyValue { addr: key.data().addr, port: port.to_be(), prefix, v4: u8::from(addr.is_ipv4()), index };
    (key, value)
}

/// The deny trie key for `addr/prefix` (prefix relative to the address family) and `port`
/// (0 = any), in generation `gen_` of cgroup `cgid`.
pub(crate) fn deny_key(gen_: u32, cgid: u64, addr: IpAddr, prefix: u8, port: u16) -> Key<DenyData> {
    let addr_bits = match addr {
        IpAddr::V4(_) => 96 + u32::from(prefix.min(32)),
        IpAddr::V6(_) => u32::from(prefix.min(128)),
    };
    let data = DenyData { gen_, cgid, port: port.to_be(), pad: 0, addr: masked(ip16(addr), addr_bits) };
    Key::new(DENY_FIXED_BITS + addr_bits, data)
}

/// `addr` with every bit past `bits` cleared, so equal networks give equal keys.
fn masked(mut addr: [u8; 16], bits: u32) -> [u8; 16] {
    for (i, b) in addr.iter_mut().enumerate() {
        let start = i as u32 * 8;
        if start >= bits {
            *b = 0;
        } else if bits - start < 8 {
            *b &= 0xffu8 << (8 - (bits - start));
        }
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_keys_are_v4_mapped_and_network_order() {
        let k = local_key("127.0.0.1:40000".parse().unwrap());
        assert_eq!(&k.addr[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k.addr[12..], &[127, 0, 0, 1]);
        assert_eq!(k.port.to_ne_bytes(), 40000u16.to_be_bytes());
        assert_eq!(local_key("[::ffff:127.0.0.1]:40000".parse().unwrap()), k);
        assert_eq!(socket_addr(k.addr, k.port), "127.0.0.1:40000".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn requested_keeps_the_agents_family() {
        let v = OrigValue {
            addr: ip16("192.0.2.1".parse().unwrap()),
            port: 443u16.to_be(),
            family: AF_INET6,
            ..Default::default()
        };
        assert_eq!(requested_addr(&v), "[::ffff:192.0.2.1]:443".parse::<SocketAddr>().unwrap());
        let v4 = OrigValue { family: libc::AF_INET as u16, ..v };
        assert_eq!(requested_addr(&v4), "192.0.2.1:443".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn deny_keys_mask_host_bits_and_count_the_fixed_prefix() {
        let a = deny_key(3, 7, "10.1.2.3".parse().unwrap(), 8, 0);
        let b = deny_key(3, 7, "10.0.0.0".parse().unwrap(), 8, 0);
        assert_eq!(a.prefix_len(), 128 + 96 + 8);
        let (da, db) = (a.data(), b.data());
        assert_eq!({ da.addr }, { db.addr });
        assert_eq!(&{ da.addr }[12..], &[10, 0, 0, 0]);
        let v6 = deny_key(1, 7, "2001:db8:ffff::1".parse().unwrap(), 36, 443);
        assert_eq!(v6.prefix_len(), 128 + 36);
        assert_eq!(&{ v6.data().addr }[..6], &[0x20, 0x01, 0x0d, 0xb8, 0xf0, 0]);
        assert_eq!({ v6.data().port }.to_ne_bytes(), 443u16.to_be_bytes());
    }
}
