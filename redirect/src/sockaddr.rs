//! Pure parsing and encoding of the `struct sockaddr` bytes that a tracee hands to the kernel.
//!
//! The supervisor copies the tracee's bytes once and only ever looks at that copy; every function
//! here works on a byte slice and does no IO, so it can be unit-tested and fuzzed.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `sizeof(struct sockaddr_storage)`: the kernel refuses longer addresses with EINVAL.
pub const SOCKADDR_MAX: usize = 128;
/// `sizeof(struct sockaddr_in)`.
pub const SOCKADDR_IN_LEN: usize = 16;
/// `sizeof(struct sockaddr_in6)`.
pub const SOCKADDR_IN6_LEN: usize = 28;
/// `SIN6_LEN_RFC2133`: the kernel accepts an IPv6 address without `sin6_scope_id`.
pub const SOCKADDR_IN6_MIN_LEN: usize = 24;

const AF_UNIX: u16 = libc::AF_UNIX as u16;
const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

/// An AF_UNIX address, as the kernel would interpret it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnixAddr {
    /// A filesystem path (bytes up to the first NUL).
    Pathname(Vec<u8>),
    /// An abstract-namespace name (the bytes after the leading NUL, NULs included).
    Abstract(Vec<u8>),
    /// No name at all (`addrlen == sizeof(sa_family_t)`).
    Unnamed,
}

/// A parsed `struct sockaddr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedAddr {
    /// AF_INET or AF_INET6, exactly as written (a v4-mapped IPv6 address stays IPv6 here; use
    /// [`canonical`] before deciding).
    Inet(SocketAddr),
    /// AF_UNIX.
    Unix(UnixAddr),
    /// Any other family (AF_UNSPEC, AF_NETLINK, ...): the supervisor does not govern these.
    Other {
        /// The raw `sa_family` value.
        family: u16,
    },
}

/// Why a byte slice is not a usable `struct sockaddr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SockaddrError {
    /// Fewer bytes than the family needs; the kernel answers EINVAL.
    #[error("sockaddr of family {family} is {len} bytes, needs at least {need}")]
    TooShort {
        /// The `sa_family` value (0 when even that is missing).
        family: u16,
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// More bytes than `sockaddr_storage`; the kernel answers EINVAL.
    #[error("sockaddr is {len} bytes, more than {SOCKADDR_MAX}")]
    TooLong {
        /// Bytes given.
        len: usize,
    },
}

impl SockaddrError {
    /// The errno the kernel itself would return for this address.
    pub fn errno(&self) -> i32 {
        libc::EINVAL
    }
}

/// Parses a `struct sockaddr` of exactly `bytes.len()` bytes (the tracee's `addrlen`).
///
/// Lengths follow the kernel: AF_INET needs 16 bytes, AF_INET6 24 (the scope id is optional),
/// AF_UNIX at least the family; nothing may exceed [`SOCKADDR_MAX`].
pub fn parse_sockaddr(bytes: &[u8]) -> Result<ParsedAddr, SockaddrError> {
    if bytes.len() > SOCKADDR_MAX {
        return Err(SockaddrError::TooLong { len: bytes.len() });
    }
    let Some(family) = bytes.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])) else {
        return Err(SockaddrError::TooShort { family: 0, len: bytes.len(), need: 2 });
    };
    let too_short = |need| SockaddrError::TooShort { family, len: bytes.len(), need };
    match family {
        AF_INET => {
            let b = bytes.get(..SOCKADDR_IN_LEN).ok_or_else(|| too_short(SOCKADDR_IN_LEN))?;
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Ok(ParsedAddr::Inet(SocketAddr::V4(SocketAddrV4::new(ip, port))))
        }
        AF_INET6 => {
            let b = bytes.get(..SOCKADDR_IN6_MIN_LEN).ok_or_else(|| too_short(SOCKADDR_IN6_MIN_LEN))?;
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flowinfo = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[8..24]);
            let scope_id = bytes
                .get(24..SOCKADDR_IN6_LEN)
                .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
                .unwrap_or(0);
            let v6 = SocketAddrV6::new(Ipv6Addr::from(octets), port, flowinfo, scope_id);
            Ok(ParsedAddr::Inet(SocketAddr::V6(v6)))
        }
        AF_UNIX => Ok(ParsedAddr::Unix(parse_unix(&bytes[2..]))),
        other => Ok(ParsedAddr::Other { family: other }),
    }
}

fn parse_unix(path: &[u8]) -> UnixAddr {
    match path.split_first() {
        None => UnixAddr::Unnamed,
        Some((0, name)) => UnixAddr::Abstract(name.to_vec()),
        Some(_) => {
            let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
            UnixAddr::Pathname(path[..end].to_vec())
        }
    }
}

/// The address policy should see: a v4-mapped IPv6 address (`::ffff:a.b.c.d`) becomes the IPv4
/// address with the same port; everything else is returned unchanged.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The address as a socket of `family` (`AF_INET` or `AF_INET6`) would report it: an IPv4
/// address on an AF_INET6 socket becomes v4-mapped. `None` when it cannot be expressed (IPv6 on
/// an AF_INET socket).
pub fn for_family(addr: SocketAddr, family: i32) -> Option<SocketAddr> {
    match (family, addr) {
        (libc::AF_INET, a) => match canonical(a) {
            v4 @ SocketAddr::V4(_) => Some(v4),
            SocketAddr::V6(_) => None,
        },
        (libc::AF_INET6, SocketAddr::V4(v4)) => {
            Some(SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0)))
        }
        (libc::AF_INET6, v6 @ SocketAddr::V6(_)) => Some(v6),
        _ => None,
    }
}

/// Encodes `addr` as `struct sockaddr_in` (16 bytes) or `struct sockaddr_in6` (28 bytes).
pub fn encode_sockaddr(addr: SocketAddr) -> Vec<u8> {
    match addr {
        SocketAddr::V4(v4) => {
            let mut b = vec![0u8; SOCKADDR_IN_LEN];
            b[..2].copy_from_slice(&AF_INET.to_ne_bytes());
            b[2..4].copy_from_slice(&v4.port().to_be_bytes());
            b[4..8].copy_from_slice(&v4.ip().octets());
            b
        }
        SocketAddr::V6(v6) => {
            let mut b = vec![0u8; SOCKADDR_IN6_LEN];
            b[..2].copy_from_slice(&AF_INET6.to_ne_bytes());
            b[2..4].copy_from_slice(&v6.port().to_be_bytes());
            b[4..8].copy_from_slice(&v6.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&v6.ip().octets());
            b[24..28].copy_from_slice(&v6.scope_id().to_ne_bytes());
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_bytes(ip: [u8; 4], port: u16) -> Vec<u8> {
        encode_sockaddr(SocketAddr::from((ip, port)))
    }

    #[test]
    fn parses_ipv4_with_network_order_port() {
        let b = v4_bytes([203, 0, 113, 5], 443);
        assert_eq!(b[2..4], [0x01, 0xbb]);
        assert_eq!(parse_sockaddr(&b), Ok(ParsedAddr::Inet("203.0.113.5:443".parse().unwrap())));
    }

    #[test]
    fn ipv4_needs_sixteen_bytes() {
        let b = v4_bytes([1, 2, 3, 4], 80);
        let err = parse_sockaddr(&b[..15]).unwrap_err();
        assert_eq!(err, SockaddrError::TooShort { family: AF_INET, len: 15, need: 16 });
        assert_eq!(err.errno(), libc::EINVAL);
    }

    #[test]
    fn ipv6_scope_id_is_optional() {
        let addr: SocketAddr = "[2001:db8::1]:8443".parse().unwrap();
        let b = encode_sockaddr(addr);
        assert_eq!(parse_sockaddr(&b[..24]), Ok(ParsedAddr::Inet(addr)));
        assert_eq!(parse_sockaddr(&b[..23]).unwrap_err().errno(), libc::EINVAL);
        let scoped = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 22, 7, 3));
        assert_eq!(parse_sockaddr(&encode_sockaddr(scoped)), Ok(ParsedAddr::Inet(scoped)));
    }

    #[test]
    fn v4_mapped_becomes_v4_for_deciding() {
        let mapped: SocketAddr = "[::ffff:203.0.113.5]:443".parse().unwrap();
        let parsed = parse_sockaddr(&encode_sockaddr(mapped)).unwrap();
        assert_eq!(parsed, ParsedAddr::Inet(mapped));
        assert_eq!(canonical(mapped), "203.0.113.5:443".parse().unwrap());
        let plain: SocketAddr = "[2001:db8::5]:443".parse().unwrap();
        assert_eq!(canonical(plain), plain);
    }

    #[test]
    fn for_family_maps_between_v4_and_v6_sockets() {
        let v4: SocketAddr = "203.0.113.5:443".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:203.0.113.5]:443".parse().unwrap();
        assert_eq!(for_family(v4, libc::AF_INET6), Some(mapped));
        assert_eq!(for_family(mapped, libc::AF_INET), Some(v4));
        assert_eq!(for_family("[::1]:1".parse().unwrap(), libc::AF_INET), None);
        assert_eq!(for_family(v4, libc::AF_UNIX), None);
    }

    #[test]
    fn unix_addresses() {
        let mut b = AF_UNIX.to_ne_bytes().to_vec();
        assert_eq!(parse_sockaddr(&b), Ok(ParsedAddr::Unix(UnixAddr::Unnamed)));
        b.extend_from_slice(b"/run/x.sock\0junk");
        assert_eq!(parse_sockaddr(&b), Ok(ParsedAddr::Unix(UnixAddr::Pathname(b"/run/x.sock".to_vec()))));
        let mut a = AF_UNIX.to_ne_bytes().to_vec();
        a.extend_from_slice(b"\0name\0x");
        assert_eq!(parse_sockaddr(&a), Ok(ParsedAddr::Unix(UnixAddr::Abstract(b"name\0x".to_vec()))));
    }

    #[test]
    fn other_families_and_bounds() {
        assert_eq!(parse_sockaddr(&[0, 0]), Ok(ParsedAddr::Other { family: 0 }));
        assert_eq!(parse_sockaddr(&[16, 0, 0, 0]), Ok(ParsedAddr::Other { family: 16 }));
        assert!(matches!(parse_sockaddr(&[2]), Err(SockaddrError::TooShort { need: 2, .. })));
        assert_eq!(parse_sockaddr(&[0; 129]), Err(SockaddrError::TooLong { len: 129 }));
    }

    #[test]
    fn encode_parse_round_trip() {
        for s in ["127.0.0.1:0", "[::1]:65535", "[::ffff:10.0.0.1]:53", "0.0.0.0:1"] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(parse_sockaddr(&encode_sockaddr(a)), Ok(ParsedAddr::Inet(a)));
        }
    }
}
