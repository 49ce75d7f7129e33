//! Deserialising validated values from YAML strings: each newtype parses with its own error,
//! which the loader reports with the key's file, line and column.

use std::{fmt, str::FromStr};

use super::{
    db_ops::DbOperation,
    values::{DurationSpec, HostPort, NameGlob, PathGlob},
};
use crate::matchers::{
    cidr::Cidr,
    domain::{DomainPattern, Hostname},
};

/// A regular expression compiled at load time; `source` keeps the text as written.
#[derive(Debug, Clone)]
pub struct RegexPattern {
    /// The pattern as written in the policy.
    pub source: String,
    /// The compiled expression.
    pub regex: regex::Regex,
}

impl PartialEq for RegexPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl FromStr for RegexPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(s)
            .size_limit(1 << 20)
            .build()
            .map(|regex| RegexPattern { source: s.to_string(), regex })
            .map_err(|e| {
                // regex's syntax errors span several lines (pattern, caret, message); keep the
                // message so every load error stays on one line.
                let text = e.to_string();
                let why = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
                format!("invalid regex {s:?}: {}", why.trim().trim_start_matches("error: "))
            })
    }
}

macro_rules! deserialize_from_str {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    )*};
}

deserialize_from_str! {
    RegexPattern => "a regular expression",
    Cidr => "a CIDR such as 10.0.0.0/8",
    DomainPattern => "a domain or domain glob such as *.example.com",
    Hostname => "a host name",
    HostPort => "a host:port such as db.internal:5432",
    PathGlob => "a path glob such as ~/.ssh/**",
    NameGlob => "a glob such as claude-*",
    DbOperation => "an operation group or alias such as read or READ",
}

impl<'de> serde::Deserialize<'de> for DurationSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 2m or 1h30m, or a number of seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationSpec, E> {
                Ok(DurationSpec(std::time::Duration::from_secs(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationSpec, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl FromStr for DomainPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DomainPattern::parse(s).map_err(|e| format!("invalid domain {s:?}: {e}"))
    }
}

impl FromStr for Hostname {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Hostname::parse(s).map_err(|e| format!("invalid host name {s:?}: {e}"))
    }
}
