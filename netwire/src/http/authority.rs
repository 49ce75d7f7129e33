//! `host[:port]` authorities from a `Host` header or a request target (RFC 9110 §7.2, RFC 3986
//! §3.2), with the port split off and the host validated.

use std::net::{IpAddr, Ipv6Addr};

use super::HttpError;
use crate::hostname::{Hostname, HostnameError};

/// The host part of an authority.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A validated, lower-cased DNS name.
    Name(Hostname),
    /// An IPv4 literal or a bracketed IPv6 literal.
    Ip(IpAddr),
}

/// A parsed authority: host plus optional explicit port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The host.
    pub host: Host,
    /// The port, when one was written.
    pub port: Option<u16>,
}

fn bad(value: &[u8], reason: &'static str) -> HttpError {
    let shown = &value[..value.len().min(256)];
    HttpError::BadAuthority { value: String::from_utf8_lossy(shown).into_owned(), reason }
}

impl Authority {
    /// Parse `host`, `host:port`, `1.2.3.4:80` or `[::1]:80`; no userinfo, no empty port.
    pub fn parse(value: &[u8]) -> Result<Self, HttpError> {
        if value.is_empty() {
            return Err(bad(value, "empty"));
        }
        if value.contains(&b'@') {
            return Err(bad(value, "userinfo is not allowed"));
        }
        let (host_part, port_part) = if value[0] == b'[' {
            let close = value.iter().position(|&b| b == b']').ok_or_else(|| bad(value, "unclosed '['"))?;
            let rest = &value[close + 1..];
            let port = match rest {
                [] => None,
                [b':', digits @ ..] => Some(digits),
                _ => return Err(bad(value, "junk after ']'")),
            };
            (&value[..=close], port)
        } else {
            match value.iter().rposition(|&b| b == b':') {
                Some(i) => (&value[..i], Some(&value[i + 1..])),
                None => (value, None),
            }
        };
        let port = port_part.map(|d| parse_port(d).ok_or_else(|| bad(value, "bad port"))).transpose()?;
        let host = parse_host(host_part).map_err(|reason| bad(value, reason))?;
        Ok(Authority { host, port })
    }
}

fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn parse_host(raw: &[u8]) -> Result<Host, &'static str> {
    if let [b'[', inner @ .., b']'] = raw {
        let text = std::str::from_utf8(inner).map_err(|_| "bad IPv6 literal")?;
        return text.parse::<Ipv6Addr>().map(|a| Host::Ip(IpAddr::V6(a))).map_err(|_| "bad IPv6 literal");
    }
    match Hostname::from_wire(raw) {
        Ok(name) => Ok(Host::Name(name)),
        Err(HostnameError::IpLiteral) => {
            let text = std::str::from_utf8(raw).map_err(|_| "bad IPv4 literal")?;
            text.parse().map(Host::Ip).map_err(|_| "bad IPv4 literal")
        }
        Err(_) => Err("invalid host name"),
    }
}

/// The authority carried by the request target itself, if any: absolute-form
/// (`http://host:port/path`) for any method, authority-form (`host:port`) for CONNECT.
pub(super) fn from_target(method: &str, target: &str) -> Result<Option<Authority>, HttpError> {
    if method == "CONNECT" {
        let a = Authority::parse(target.as_bytes())?;
        if a.port.is_none() {
            return Err(bad(target.as_bytes(), "CONNECT target needs a port"));
        }
        return Ok(Some(a));
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad(target.as_bytes(), "unsupported scheme in absolute-form target"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Authority::parse(&rest.as_bytes()[..end]).map(Some)
}
