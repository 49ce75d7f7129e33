//! Network sections of a policy: `network_rules`, `dns_redirects`, `connect_redirects`.
//! Field names follow agentsh's so its policies load unchanged.

use std::{net::IpAddr, path::PathBuf};

use serde::Deserialize;

use super::serde_str::RegexPattern;
use crate::{
    Verdict,
    matchers::{cidr::Cidr, domain::DomainPattern, ports::PortRange},
};

/// One `network_rules` entry. Within a rule, `domains`, `cidrs` and `ports` must all match
/// (an empty list matches anything); across rules the first match wins.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRule {
    /// Rule name, reported in every decision it makes.
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Domain globs the destination name must match; `@known-doh` and the other named lists
    /// of [`crate::lists`] expand to their hosts and sub-domains.
    #[serde(default, deserialize_with = "domains_with_lists")]
    pub domains: Vec<DomainPattern>,
    /// CIDR blocks the destination address must lie in.
    #[serde(default)]
    pub cidrs: Vec<Cidr>,
    /// Ports or port ranges the destination port must lie in.
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// The verdict when the rule matches.
    pub decision: Verdict,
    /// Message shown to the agent and written to the audit event.
    #[serde(default)]
    pub message: Option<String>,
    /// How long an `approve` waits (e.g. `2m`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// How visible a redirect is to the agent and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// No event.
    Silent,
    /// An audit event only (the default).
    #[default]
    AuditOnly,
    /// An audit event and a warning on the session's stderr stream.
    Warn,
}

/// What to do when a redirect target cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Refuse the connection or query (the default).
    #[default]
    FailClosed,
    /// Let the original request through.
    FailOpen,
    /// Try the original destination, deciding it by the network rules.
    RetryOriginal,
}

/// One `dns_redirects` entry: names matching `match` resolve to `resolve_to`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRedirect {
    /// Rule name.
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Unanchored regex over the normalised name (lower-case, no trailing dot), as in agentsh.
    #[serde(rename = "match")]
    pub pattern: RegexPattern,
    /// The address to answer with (A for IPv4, AAAA for IPv6; NODATA for other types).
    pub resolve_to: IpAddr,
    /// TTL of the synthetic answer, in seconds.
    #[serde(default = "default_redirect_ttl")]
    pub ttl: u32,
    /// Event visibility.
    #[serde(default)]
    pub visibility: Visibility,
    /// Failure handling.
    #[serde(default)]
    pub on_failure: OnFailure,
}

fn default_redirect_ttl() -> u32 {
    60
}

/// TLS handling of a redirected connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsRedirectMode {
    /// Forward the ClientHello unchanged.
    #[default]
    Passthrough,
    /// Rewrite the ClientHello's server_name to `sni`.
    RewriteSni,
}

/// The `tls` block of a connect redirect.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRedirect {
    /// Passthrough or SNI rewrite.
    #[serde(default)]
    pub mode: TlsRedirectMode,
    /// The new server name (required with `rewrite_sni`).
    #[serde(default)]
    pub sni: Option<String>,
}

/// One `connect_redirects` entry: connects whose `host:port` matches go to another target.
/// Exactly one of `redirect_to` and `redirect_to_unix` is set (checked at load).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectRedirect {
    /// Rule name.
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Unanchored regex over `host:port` (host normalised), as in agentsh.
    #[serde(rename = "match")]
    pub pattern: RegexPattern,
    /// New TCP target, `host:port`.
    #[serde(default)]
    pub redirect_to: Option<String>,
    /// New Unix-socket target.
    #[serde(default)]
    pub redirect_to_unix: Option<PathBuf>,
    /// TLS handling.
    #[serde(default)]
    pub tls: Option<TlsRedirect>,
    /// Event visibility.
    #[serde(default)]
    pub visibility: Visibility,
    /// Message for the event.
    #[serde(default)]
    pub message: Option<String>,
    /// Failure handling.
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// One `domains:` entry: a domain glob, or `@list`.
enum DomainEntry {
    Pattern(DomainPattern),
    List(&'static [&'static str]),
}

impl<'de> Deserialize<'de> for DomainEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let entry = String::deserialize(d)?;
        if entry.starts_with('@') {
            return crate::lists::named_list(&entry).map(DomainEntry::List).ok_or_else(|| {
                D::Error::custom(format!(
                    "unknown domain list {entry:?} (known: {})",
                    crate::lists::LIST_NAMES.join(", ")
                ))
            });
        }
        entry.parse().map(DomainEntry::Pattern).map_err(D::Error::custom)
    }
}

/// `domains:` entries: a domain glob, or `@list` expanding to `**.host` for each host of the
/// named list (the host and its sub-domains).
fn domains_with_lists<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<DomainPattern>, D::Error> {
    use serde::de::Error;
    let mut out = Vec::new();
    for entry in Vec::<DomainEntry>::deserialize(d)? {
        match entry {
            DomainEntry::Pattern(p) => out.push(p),
            DomainEntry::List(hosts) => {
                for h in hosts {
                    out.push(DomainPattern::parse(&format!("**.{h}")).map_err(D::Error::custom)?);
                }
            }
        }
    }
    Ok(out)
}
