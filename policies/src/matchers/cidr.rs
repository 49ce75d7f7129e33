//! CIDR blocks as written in rules: `10.0.0.0/8`, `fc00::/7`, or a bare address (a host route).
//! IPv4-mapped IPv6 blocks (`::ffff:10.0.0.0/104`) are stored as the IPv4 block they stand for.

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::{IpNet, Ipv4Net};

/// A validated CIDR block in canonical form (host bits cleared, v4-mapped folded to v4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(IpNet);

/// Why a CIDR was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected an address or address/prefix such as 10.0.0.0/8 or fc00::/7")]
pub struct CidrError(pub String);

/// Fold an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to IPv4; other addresses are unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl Cidr {
    /// The canonical network.
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// Whether `ip` (canonicalised first) lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical_ip(ip))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let bad = || CidrError(s.to_string());
        let net = match s.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => IpNet::from(s.parse::<IpAddr>().map_err(|_| bad())?),
        };
        let net = match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
                Some(v4) => IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).map_err(|_| bad())?),
                None => net,
            },
            other => other,
        };
        Ok(Cidr(net.trunc()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_canonicalises() {
        assert_eq!("10.1.2.3/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().to_string(), "1.2.3.4/32");
        assert_eq!("::ffff:10.0.0.0/104".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()));
    }
}
