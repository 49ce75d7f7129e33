//! The `policies:` block: per-subsystem settings that are not rules (`policies.db`,
//! `policies.symlink_escape`).

use serde::Deserialize;

/// How hard the DB proxy is made unavoidable. In every mode each service gets its per-session
/// socket and every TCP connect to its upstream (by name, or by an address the name resolved
/// to when the session was created) is handed to the proxy: the modes differ in what happens
/// when that set-up is incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavoidability {
    /// An upstream name that does not resolve is matched by name only (the default; agentsh's
    /// name, where it meant no per-session listeners).
    #[default]
    Off,
    /// As `off` (agentsh's name for listeners plus egress denies, tolerating DNS failures).
    Observe,
    /// Refuse to start a session when an upstream name does not resolve.
    Enforce,
}

/// How much statement text goes into events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStatements {
    /// No text.
    None,
    /// Normalised text with `$n` placeholders (the default).
    #[default]
    ParametersRedacted,
    /// The full text.
    Full,
}

/// How much statement text an approval request shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementPreview {
    /// No text.
    None,
    /// Normalised text (the default).
    #[default]
    Redacted,
    /// The full text.
    Full,
}

fn default_preview_chars() -> u32 {
    200
}

/// `policies.db`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbPolicies {
    /// Unavoidability mode.
    #[serde(default)]
    pub unavoidability: Unavoidability,
    /// Statement text in events.
    #[serde(default)]
    pub log_statements: LogStatements,
    /// Statement text in approval requests.
    #[serde(default)]
    pub approval_statement_preview: StatementPreview,
    /// Length cap of that preview (default 200).
    #[serde(default = "default_preview_chars")]
    pub approval_statement_preview_chars: u32,
    /// Classify calls of functions not on the allowlist as `procedural`, not `read`.
    #[serde(default)]
    pub escalate_unknown_functions: bool,
    /// Functions that stay `read` under escalation (`schema.name` or `name`).
    #[serde(default)]
    pub safe_function_allowlist: Vec<String>,
}

impl Default for DbPolicies {
    fn default() -> Self {
        DbPolicies {
            unavoidability: Unavoidability::default(),
            log_statements: LogStatements::default(),
            approval_statement_preview: StatementPreview::default(),
            approval_statement_preview_chars: default_preview_chars(),
            escalate_unknown_functions: false,
            safe_function_allowlist: Vec::new(),
        }
    }
}

/// `policies.symlink_escape`: what the FUSE workspace does with a symlink whose target lies
/// outside the workspace, when it is created and when it is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SymlinkEscape {
    /// Judge the target by `file_rules` as a read (an explicit allow is needed: no match
    /// outside the workspace denies).
    Evaluate,
    /// Refuse to create such links and to resolve existing ones (the default).
    #[default]
    Deny,
}

/// The `policies:` block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBlocks {
    /// `policies.db`.
    #[serde(default)]
    pub db: DbPolicies,
    /// `policies.symlink_escape`.
    #[serde(default)]
    pub symlink_escape: SymlinkEscape,
}
