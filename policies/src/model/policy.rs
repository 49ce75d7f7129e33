//! The top level of a policy file.

use serde::Deserialize;

use super::network::{ConnectRedirect, DnsRedirect, NetworkRule};

/// A whole policy file. Sections are optional; a missing one is empty.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Schema version (1).
    #[serde(default)]
    pub version: u32,
    /// Policy name.
    #[serde(default)]
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Egress rules: first match wins, no match → deny.
    #[serde(default)]
    pub network_rules: Vec<NetworkRule>,
    /// Names answered with a fixed address.
    #[serde(default)]
    pub dns_redirects: Vec<DnsRedirect>,
    /// Connects steered to another target.
    #[serde(default)]
    pub connect_redirects: Vec<ConnectRedirect>,
}
