//! The `policies:` block: per-subsystem settings that are not rules (today only `policies.db`).

use serde::Deserialize;

/// How hard the DB proxy is made unavoidable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavoidability {
    /// No per-session listeners, no egress denies (the default).
    #[default]
    Off,
    /// Listeners and egress denies; tolerate DNS expansion failures.
    Observe,
    /// As `observe`, and refuse to start a session when anything cannot be set up.
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

/// The `policies:` block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBlocks {
    /// `policies.db`.
    #[serde(default)]
    pub db: DbPolicies,
}
