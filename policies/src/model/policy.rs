//! The top level of a policy file: every section, each optional (a missing one is empty).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    blocks::PolicyBlocks,
    compat::{AuditPolicy, CommandRule, EnvPolicy, Metadata, ResourceLimits},
    db_rules::{DbConnectionRule, DbStatementRule},
    db_service::DbService,
    file::FileRule,
    llm::LlmPolicy,
    network::{ConnectRedirect, DnsRedirect, NetworkRule},
    unix::UnixSocketRule,
};

/// A whole policy file (DESIGN.md §7). Load it with [`crate::load::load_policy`], which also
/// runs the cross-field checks.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Schema version; must be 1 when given.
    #[serde(default)]
    pub version: Option<u32>,
    /// Policy name.
    #[serde(default)]
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Free-form labels (accepted, not enforced).
    #[serde(default)]
    pub metadata: Metadata,
    /// Egress rules: first match wins, no match → deny.
    #[serde(default)]
    pub network_rules: Vec<NetworkRule>,
    /// Names answered with a fixed address.
    #[serde(default)]
    pub dns_redirects: Vec<DnsRedirect>,
    /// Connects steered to another target.
    #[serde(default)]
    pub connect_redirects: Vec<ConnectRedirect>,
    /// AF_UNIX rules: first match wins, no match → deny.
    #[serde(default)]
    pub unix_socket_rules: Vec<UnixSocketRule>,
    /// File rules: first match wins.
    #[serde(default)]
    pub file_rules: Vec<FileRule>,
    /// Databases fronted by the DB proxy, by service name.
    #[serde(default)]
    pub db_services: BTreeMap<String, DbService>,
    /// Connection rules: no match → the connection is refused.
    #[serde(default)]
    pub database_connection_rules: Vec<DbConnectionRule>,
    /// Statement rules: most restrictive wins, uncovered → deny.
    #[serde(default)]
    pub database_rules: Vec<DbStatementRule>,
    /// Per-subsystem settings (`policies.db`).
    #[serde(default)]
    pub policies: PolicyBlocks,
    /// LLM providers, DLP, limits and model lists.
    #[serde(default)]
    pub llm: LlmPolicy,
    /// Command rules (accepted, not enforced).
    #[serde(default)]
    pub command_rules: Vec<CommandRule>,
    /// Resource limits (accepted, not enforced).
    #[serde(default)]
    pub resource_limits: Option<ResourceLimits>,
    /// Environment filtering (accepted, not enforced).
    #[serde(default)]
    pub env_policy: Option<EnvPolicy>,
    /// Audit switches (accepted, not enforced).
    #[serde(default)]
    pub audit: Option<AuditPolicy>,
}
