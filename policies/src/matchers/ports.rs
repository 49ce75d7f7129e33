//! Ports and port ranges as written in rules: `443`, `"443"` or `"8000-8100"`.

use std::{fmt, str::FromStr};

/// An inclusive port range; a single port is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port in the range.
    pub start: u16,
    /// Last port in the range (inclusive).
    pub end: u16,
}

/// Why a port spec was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port {0:?}: expected 1-65535 or a range such as 8000-8100")]
pub struct PortError(pub String);

impl PortRange {
    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl FromStr for PortRange {
    type Err = PortError;

    fn from_str(s: &str) -> Result<Self, PortError> {
        let bad = || PortError(s.to_string());
        let one = |t: &str| t.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        let (start, end) = match s.split_once('-') {
            Some((a, b)) => (one(a)?, one(b)?),
            None => {
                let p = one(s)?;
                (p, p)
            }
        };
        if start > end {
            return Err(bad());
        }
        Ok(PortRange { start, end })
    }
}

/// A rule's port list compiled for lookup: ranges sorted and merged where they overlap or touch.
/// An empty set stands for "any port", as an empty `ports:` list does in a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    ranges: Vec<PortRange>,
}

impl PortSet {
    /// Compile `ranges` (any order, overlaps allowed).
    pub fn new(ranges: &[PortRange]) -> Self {
        let mut sorted = ranges.to_vec();
        sorted.sort_unstable();
        let mut merged: Vec<PortRange> = Vec::with_capacity(sorted.len());
        for r in sorted {
            match merged.last_mut() {
                Some(last) if r.start <= last.end.saturating_add(1) => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        PortSet { ranges: merged }
    }

    /// Whether the set places no restriction (the rule listed no ports).
    pub fn is_any(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `port` is allowed by the set: always for an unrestricted set, otherwise by binary
    /// search over the merged ranges.
    pub fn contains(&self, port: u16) -> bool {
        if self.ranges.is_empty() {
            return true;
        }
        let after = self.ranges.partition_point(|r| r.start <= port);
        after > 0 && self.ranges[after - 1].contains(port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl<'de> serde::Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (1-65535) or a range such as \"8000-8100\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortRange, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortRange, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges() {
        assert_eq!("443".parse(), Ok(PortRange { start: 443, end: 443 }));
        assert_eq!("8000-8100".parse(), Ok(PortRange { start: 8000, end: 8100 }));
        assert!("0".parse::<PortRange>().is_err());
        assert!("9-8".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
        assert!("http".parse::<PortRange>().is_err());
    }

    #[test]
    fn port_set_merges_and_searches() {
        let r = |s: &str| s.parse::<PortRange>().expect("test range");
        let set = PortSet::new(&[r("8000-8100"), r("443"), r("8050-9000"), r("444"), r("22")]);
        assert_eq!(set.ranges, vec![r("22"), r("443-444"), r("8000-9000")]);
        for (port, inside) in [
            (22, true),
            (23, false),
            (443, true),
            (444, true),
            (445, false),
            (8000, true),
            (9000, true),
            (9001, false),
            (1, false),
            (65535, false),
        ] {
            assert_eq!(set.contains(port), inside, "port {port}");
        }
        assert!(PortSet::new(&[]).contains(0));
        assert!(PortSet::new(&[r("65535"), r("1-65534")]).contains(65535));
    }
}
