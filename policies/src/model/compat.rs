//! agentsh top-level sections that we **accept but do not enforce yet**, so agentsh policies
//! load unchanged: `metadata`, `command_rules`, `resource_limits`, `env_policy` and `audit`.
//! They are typed (unknown keys are still errors); nothing reads them at run time today.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{serde_str::RegexPattern, values::DurationSpec};

/// `metadata`: free-form string labels (accepted, not enforced).
pub type Metadata = BTreeMap<String, String>;

/// What a command rule says should happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandDecision {
    /// Run it.
    Allow,
    /// Refuse it.
    Deny,
    /// Ask first.
    Approve,
    /// Run it and flag it.
    Audit,
    /// Run `redirect_to` instead.
    Redirect,
}

/// The replacement command of a `redirect` command rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRedirect {
    /// Program to run.
    pub command: String,
    /// Arguments replacing the original ones.
    #[serde(default)]
    pub args: Vec<String>,
    /// Arguments appended.
    #[serde(default)]
    pub args_append: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

/// One `command_rules` entry (accepted, not enforced).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRule {
    /// Rule name.
    pub name: String,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Basenames or full paths.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Regexes over the arguments joined by spaces; any one must match.
    #[serde(default)]
    pub args_patterns: Vec<RegexPattern>,
    /// The verdict.
    pub decision: CommandDecision,
    /// Message for the agent.
    #[serde(default)]
    pub message: Option<String>,
    /// Approval timeout.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Replacement for `redirect`.
    #[serde(default)]
    pub redirect_to: Option<CommandRedirect>,
    /// Contexts (`direct`, `nested`, ...).
    #[serde(default)]
    pub context: Vec<String>,
    /// Environment allow globs.
    #[serde(default)]
    pub env_allow: Vec<String>,
    /// Environment deny globs.
    #[serde(default)]
    pub env_deny: Vec<String>,
    /// Cap on environment entries.
    #[serde(default)]
    pub env_max_keys: Option<u64>,
    /// Cap on environment bytes.
    #[serde(default)]
    pub env_max_bytes: Option<u64>,
    /// Hide the environment from iteration.
    #[serde(default)]
    pub env_block_iteration: bool,
}

/// `resource_limits` (accepted, not enforced; zero means unlimited as in agentsh).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// Memory cap in MiB.
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// Swap cap in MiB.
    #[serde(default)]
    pub memory_swap_max_mb: Option<u64>,
    /// CPU quota in percent of one CPU.
    #[serde(default)]
    pub cpu_quota_percent: Option<u32>,
    /// Disk read bandwidth in bytes/s.
    #[serde(default)]
    pub disk_read_bps_max: Option<u64>,
    /// Disk write bandwidth in bytes/s.
    #[serde(default)]
    pub disk_write_bps_max: Option<u64>,
    /// Network bandwidth in Mbit/s.
    #[serde(default)]
    pub net_bandwidth_mbps: Option<u64>,
    /// Process count cap.
    #[serde(default)]
    pub pids_max: Option<u64>,
    /// Per-command wall time.
    #[serde(default)]
    pub command_timeout: Option<DurationSpec>,
    /// Session lifetime.
    #[serde(default)]
    pub session_timeout: Option<DurationSpec>,
    /// Idle time before a session is closed.
    #[serde(default)]
    pub idle_timeout: Option<DurationSpec>,
}

/// `env_policy` (accepted, not enforced).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvPolicy {
    /// Variable-name globs passed through.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Variable-name globs removed (beat `allow`).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Cap on bytes.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Cap on entries.
    #[serde(default)]
    pub max_keys: Option<u64>,
    /// Hide the environment from iteration.
    #[serde(default)]
    pub block_iteration: bool,
}

/// `audit` (accepted, not enforced: every decision is audited regardless).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPolicy {
    /// Log allowed operations.
    #[serde(default)]
    pub log_allowed: Option<bool>,
    /// Log denied operations.
    #[serde(default)]
    pub log_denied: Option<bool>,
    /// Log approved operations.
    #[serde(default)]
    pub log_approved: Option<bool>,
    /// Include command stdout in events.
    #[serde(default)]
    pub include_stdout: Option<bool>,
    /// Include command stderr in events.
    #[serde(default)]
    pub include_stderr: Option<bool>,
    /// Include file contents in events.
    #[serde(default)]
    pub include_file_content: Option<bool>,
    /// Days to keep events.
    #[serde(default)]
    pub retention_days: Option<u32>,
}
