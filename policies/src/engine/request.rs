//! Typed requests handed to the decision engine. Every field is already validated: a host is a
//! normalised [`Hostname`], an address is an [`IpAddr`] (folded from v4-mapped v6 to v4).

use std::{fmt, net::IpAddr};

use crate::matchers::{cidr::canonical_ip, domain::Hostname};

/// A connection attempt as the gateway sees it: it may know the destination name (from DNS, SNI,
/// HTTP Host or a CONNECT line), the address (from the original destination), or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectRequest {
    /// The destination name, when known.
    pub host: Option<Hostname>,
    /// The destination address, when known. Canonicalised by the constructors; the engine folds
    /// v4-mapped IPv6 to IPv4 again in case the field was set by hand.
    pub ip: Option<IpAddr>,
    /// The destination port.
    pub port: u16,
}

impl ConnectRequest {
    /// A request with everything the gateway knows; `ip` is canonicalised.
    pub fn new(host: Option<Hostname>, ip: Option<IpAddr>, port: u16) -> Self {
        ConnectRequest { host, ip: ip.map(canonical_ip), port }
    }

    /// A request known only by name (e.g. a CONNECT line before resolution).
    pub fn by_name(host: Hostname, port: u16) -> Self {
        Self::new(Some(host), None, port)
    }

    /// A request known only by address (e.g. a raw connect with no DNS history).
    pub fn by_ip(ip: IpAddr, port: u16) -> Self {
        Self::new(None, Some(ip), port)
    }

    /// A request where both the name and the address it resolved to are known.
    pub fn by_name_and_ip(host: Hostname, ip: IpAddr, port: u16) -> Self {
        Self::new(Some(host), Some(ip), port)
    }
}

impl fmt::Display for ConnectRequest {
    /// `name[ip]:port`, `name:port` or `ip:port` (IPv6 in brackets), for logs and events.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.host, self.ip.map(canonical_ip)) {
            (Some(h), Some(ip)) => write!(f, "{h}[{ip}]:{}", self.port),
            (Some(h), None) => write!(f, "{h}:{}", self.port),
            (None, Some(IpAddr::V6(v6))) => write!(f, "[{v6}]:{}", self.port),
            (None, Some(ip)) => write!(f, "{ip}:{}", self.port),
            (None, None) => write!(f, "?:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_canonicalise_and_display() {
        let h = Hostname::parse("API.Example.com.").expect("test name");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("test ip");
        let r = ConnectRequest::by_name_and_ip(h.clone(), mapped, 443);
        assert_eq!(r.ip, Some("10.0.0.1".parse().expect("test ip")));
        assert_eq!(r.to_string(), "api.example.com[10.0.0.1]:443");
        assert_eq!(ConnectRequest::by_name(h, 80).to_string(), "api.example.com:80");
        assert_eq!(ConnectRequest::by_ip("::1".parse().expect("ip"), 22).to_string(), "[::1]:22");
    }
}
