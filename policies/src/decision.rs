//! The outcome of every policy check: a verdict, the rule that made it and its message.

use std::fmt;

/// What a rule says should happen. `audit` allows and flags; `approve` asks a human (until an
/// approval channel exists, the enforcement points treat it as deny: fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
    /// Ask for approval first.
    Approve,
    /// Let it through and flag it in the audit log.
    Audit,
}

impl Verdict {
    /// Whether the enforcement point lets the operation proceed without asking anyone.
    pub fn permits(self) -> bool {
        matches!(self, Verdict::Allow | Verdict::Audit)
    }

    /// The lower-case name used in policy files and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Approve => "approve",
            Verdict::Audit => "audit",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision: always names the rule that made it (a built-in name such as
/// `default-deny-network` when no rule matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// The deciding rule's name.
    pub rule: String,
    /// The rule's message, if it has one.
    pub message: Option<String>,
}

impl Decision {
    /// A decision made by no rule at all: the built-in default.
    pub fn default_deny(rule: &str) -> Self {
        Decision { verdict: Verdict::Deny, rule: rule.to_string(), message: None }
    }
}
