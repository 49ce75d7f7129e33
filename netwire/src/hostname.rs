//! `Hostname`: a DNS name taken off the wire (TLS SNI, HTTP `Host`), validated before anyone
//! else sees it.
//!
//! The rules are those of a name on the wire, not of a name a person types: ASCII only (IDNs
//! travel as A-labels), lower-cased, no trailing dot, labels of 1-63 characters from letters,
//! digits, `-` and `_`, at most 253 characters, and never an IPv4 literal (RFC 6066 §3 forbids
//! literal addresses in SNI; a `Host` that is an address is reported separately by `http`).

use std::fmt;
use std::net::Ipv4Addr;

/// Longest name accepted, in octets (RFC 1035 presentation form without the trailing dot).
pub const MAX_HOSTNAME_LEN: usize = 253;

/// Why bytes off the wire are not a valid host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    /// No bytes at all.
    #[error("empty host name")]
    Empty,
    /// Longer than [`MAX_HOSTNAME_LEN`].
    #[error("host name of {len} octets exceeds {MAX_HOSTNAME_LEN}")]
    TooLong {
        /// Length seen.
        len: usize,
    },
    /// A byte outside letters, digits, `-`, `_` and `.`.
    #[error("byte {byte:#04x} at offset {offset} is not allowed in a host name")]
    BadByte {
        /// The offending byte.
        byte: u8,
        /// Its offset in the name.
        offset: usize,
    },
    /// An empty label (`a..b`, leading or trailing dot) or one over 63 octets.
    #[error("label {index} has length {len} (must be 1-63)")]
    BadLabel {
        /// Zero-based label index.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// A label starting or ending with `-`.
    #[error("label {index} starts or ends with a hyphen")]
    Hyphen {
        /// Zero-based label index.
        index: usize,
    },
    /// The name is a dotted-quad IPv4 address.
    #[error("an IP address literal is not a host name")]
    IpLiteral,
    /// The last label is all digits: no such top-level domain exists, and resolvers that
    /// accept `inet_aton` forms (`127.1`) would read the name as an address.
    #[error("all-numeric top-level label")]
    NumericTld,
}

/// A validated, lower-cased host name taken from the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(String);

impl Hostname {
    /// Validate `raw` (bytes exactly as received) and lower-case it; see the module rules.
    pub fn from_wire(raw: &[u8]) -> Result<Self, HostnameError> {
        if raw.is_empty() {
            return Err(HostnameError::Empty);
        }
        if raw.len() > MAX_HOSTNAME_LEN {
            return Err(HostnameError::TooLong { len: raw.len() });
        }
        if let Some(offset) =
            raw.iter().position(|&b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'))
        {
            return Err(HostnameError::BadByte { byte: raw[offset], offset });
        }
        for (index, label) in raw.split(|&b| b == b'.').enumerate() {
            if label.is_empty() || label.len() > 63 {
                return Err(HostnameError::BadLabel { index, len: label.len() });
            }
            if label[0] == b'-' || label[label.len() - 1] == b'-' {
                return Err(HostnameError::Hyphen { index });
            }
        }
        // Only ASCII passed the byte check above, so this cannot fail.
        let text = String::from_utf8(raw.to_ascii_lowercase()).map_err(|_| HostnameError::Empty)?;
        if text.parse::<Ipv4Addr>().is_ok() {
            return Err(HostnameError::IpLiteral);
        }
        if text.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
            return Err(HostnameError::NumericTld);
        }
        Ok(Hostname(text))
    }

    /// The lower-case name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consume into the lower-case name.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_lowercases() {
        assert_eq!(Hostname::from_wire(b"API.Example.COM").unwrap().as_str(), "api.example.com");
        assert_eq!(Hostname::from_wire(b"_dmarc.x-y.io").unwrap().as_str(), "_dmarc.x-y.io");
        assert_eq!(Hostname::from_wire(b"localhost").unwrap().as_str(), "localhost");
        assert!(Hostname::from_wire(b"xn--n-yfa7c.example").is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(Hostname::from_wire(b""), Err(HostnameError::Empty));
        assert!(matches!(Hostname::from_wire(b"a..b"), Err(HostnameError::BadLabel { index: 1, len: 0 })));
        assert!(matches!(Hostname::from_wire(b"example.com."), Err(HostnameError::BadLabel { .. })));
        assert!(matches!(Hostname::from_wire(b".example"), Err(HostnameError::BadLabel { .. })));
        assert!(matches!(Hostname::from_wire(b"-a.com"), Err(HostnameError::Hyphen { index: 0 })));
        assert!(matches!(Hostname::from_wire(b"a b"), Err(HostnameError::BadByte { byte: b' ', .. })));
        assert!(matches!(Hostname::from_wire(b"a\0b"), Err(HostnameError::BadByte { byte: 0, .. })));
        assert!(matches!(Hostname::from_wire("ü.de".as_bytes()), Err(HostnameError::BadByte { .. })));
        assert_eq!(Hostname::from_wire(b"10.0.0.1"), Err(HostnameError::IpLiteral));
        assert_eq!(Hostname::from_wire(b"127.1"), Err(HostnameError::NumericTld));
        assert_eq!(Hostname::from_wire(b"0x7f.1"), Err(HostnameError::NumericTld));
        let long = vec![b'a'; 64];
        assert!(matches!(Hostname::from_wire(&long), Err(HostnameError::BadLabel { len: 64, .. })));
        let mut huge = Vec::new();
        for _ in 0..64 {
            huge.extend_from_slice(b"abc.");
        }
        huge.pop();
        assert!(matches!(Hostname::from_wire(&huge), Err(HostnameError::TooLong { .. })));
    }
}
