//! Validated scalar values shared by several rule families: `host:port` targets, path globs,
//! name globs and durations. Each parses from a YAML string with its own error message.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use crate::matchers::domain::Hostname;

/// A TCP target written `host:port` or `[v6addr]:port`; the host is an IP or a valid host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host: an IP literal or a normalised host name.
    pub host: String,
    /// The port (1-65535).
    pub port: u16,
}

impl HostPort {
    /// The host as an IP address, when it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid host:port {s:?}: {why}");
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or_else(|| bad("expected [address]:port"))?;
            h.parse::<std::net::Ipv6Addr>().map_err(|_| bad("not an IPv6 address in brackets"))?;
            (h.to_string(), p)
        } else {
            let (h, p) = s.rsplit_once(':').ok_or_else(|| bad("missing :port"))?;
            if h.contains(':') {
                return Err(bad("write IPv6 addresses in brackets, e.g. [::1]:5432"));
            }
            let host = match h.parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => Hostname::parse(h).map_err(|e| bad(&e.to_string()))?.as_str().to_string(),
            };
            (host, p)
        };
        let port = port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("port must be 1-65535"))?;
        Ok(HostPort { host, port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A path glob as written (`/` separator, `*` one segment, `**` any). It must be absolute or
/// start with `~`, `${VAR}` or `*`; Unix-socket rules also accept `@abstract` names. Variables
/// are expanded per session, so the text is kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathGlob(String);

impl PathGlob {
    /// The glob text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this names an abstract Unix socket (`@name`).
    pub fn is_abstract(&self) -> bool {
        self.0.starts_with('@')
    }
}

impl FromStr for PathGlob {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid path glob {s:?}: {why}");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let rooted = ["/", "~", "${", "@", "*"].iter().any(|p| s.starts_with(p));
        if !rooted {
            return Err(bad("must be absolute or start with ~, ${VAR}, * or @ (abstract socket)"));
        }
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            let tail = &rest[i + 2..];
            let end = tail.find('}').ok_or_else(|| bad("unclosed ${"))?;
            let name = tail[..end].split(":-").next().unwrap_or_default();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(bad("variable names are letters, digits and _"));
            }
            rest = &tail[end + 1..];
        }
        Ok(PathGlob(s.to_string()))
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A flat glob over a name (`*` any run of characters, `?` one character), e.g. a model name
/// `claude-*` or an application name. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameGlob(String);

impl NameGlob {
    /// The glob text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NameGlob {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err("invalid glob: empty".to_string());
        }
        Ok(NameGlob(s.to_string()))
    }
}

impl fmt::Display for NameGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A duration written as Go does (`90s`, `2m`, `1h30m`, `500ms`) or as a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DurationSpec(pub Duration);

impl FromStr for DurationSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid duration {s:?}: expected e.g. 30s, 2m, 1h30m or 500ms");
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(DurationSpec(Duration::from_secs(secs)));
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let step = match &rest[..unit_len] {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86400)),
                _ => return Err(bad()),
            };
            total = total.saturating_add(step);
            rest = &rest[unit_len..];
        }
        Ok(DurationSpec(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!("DB.Internal:5432".parse::<HostPort>().unwrap().to_string(), "db.internal:5432");
        assert_eq!("[::1]:5432".parse::<HostPort>().unwrap().ip(), Some("::1".parse().unwrap()));
        assert!("db.internal".parse::<HostPort>().is_err());
        assert!("::1:5432".parse::<HostPort>().is_err());
        assert!("db:0".parse::<HostPort>().is_err());
    }

    #[test]
    fn path_globs_and_durations() {
        assert!("${HOME}/.ssh/**".parse::<PathGlob>().is_ok());
        assert!("@abstract".parse::<PathGlob>().is_ok());
        assert!("relative/x".parse::<PathGlob>().is_err());
        assert!("${HOME/x".parse::<PathGlob>().is_err());
        assert_eq!("1h30m".parse::<DurationSpec>().unwrap().0, Duration::from_secs(5400));
        assert_eq!("90".parse::<DurationSpec>().unwrap().0, Duration::from_secs(90));
        assert!("5 minutes".parse::<DurationSpec>().is_err());
    }
}
