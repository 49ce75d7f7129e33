//! The `llm:` section: LLM providers the gateway fronts, DLP on requests, rate limits, token
//! budgets and the model allow/deny lists.

use serde::Deserialize;

use super::{serde_str::RegexPattern, values::NameGlob};
use crate::matchers::domain::DomainPattern;

/// The API shape a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Anthropic Messages API.
    Anthropic,
    /// OpenAI Chat Completions / Responses.
    Openai,
    /// Google Gemini.
    Gemini,
    /// Any other HTTP API: forwarded and DLP-scanned, no usage parsing.
    Generic,
}

/// One `llm.providers` entry. At most one of `api_key_env` and `api_key_file`; with neither,
/// the agent's own key is forwarded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Provider name, reported in events.
    pub name: String,
    /// Upstream base URL (`https://api.anthropic.com`).
    pub base_url: String,
    /// Environment variable (of the server) holding the real API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the real API key.
    #[serde(default)]
    pub api_key_file: Option<std::path::PathBuf>,
    /// API shape; when absent it is taken from `name` if that names a kind, else `generic`.
    #[serde(default, alias = "api")]
    pub kind: Option<ProviderKind>,
    /// Host globs whose traffic goes to this provider; default: the `base_url` host.
    #[serde(default)]
    pub hosts: Vec<DomainPattern>,
}

impl Provider {
    /// The API shape: `kind` if given, else inferred from `name`.
    pub fn effective_kind(&self) -> ProviderKind {
        self.kind.unwrap_or(match self.name.as_str() {
            "anthropic" => ProviderKind::Anthropic,
            "openai" => ProviderKind::Openai,
            "gemini" => ProviderKind::Gemini,
            _ => ProviderKind::Generic,
        })
    }
}

/// What DLP does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpMode {
    /// Replace the match with `[REDACTED:<display>]` (the default).
    #[default]
    Redact,
    /// Refuse the request (HTTP 403).
    Block,
    /// Forward unchanged and record the finding.
    Audit,
    /// No scanning.
    Disabled,
}

fn yes() -> bool {
    true
}

/// Built-in detectors. Every one defaults to on; an explicit `false` turns that one off (unlike
/// agentsh, where all-false reads as "unset").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpPatterns {
    /// E-mail addresses.
    #[serde(default = "yes")]
    pub email: bool,
    /// Phone numbers.
    #[serde(default = "yes")]
    pub phone: bool,
    /// Payment card numbers (Luhn-checked).
    #[serde(default = "yes")]
    pub credit_card: bool,
    /// US social security numbers.
    #[serde(default = "yes")]
    pub ssn: bool,
    /// Vendor API keys and tokens.
    #[serde(default = "yes")]
    pub api_keys: bool,
    /// IBANs (checksum-verified).
    #[serde(default = "yes")]
    pub iban: bool,
    /// PEM private keys.
    #[serde(default = "yes")]
    pub private_keys: bool,
    /// JSON Web Tokens.
    #[serde(default = "yes")]
    pub jwt: bool,
    /// Credentials embedded in URLs (`https://user:pass@host`).
    #[serde(default = "yes")]
    pub url_credentials: bool,
}

impl Default for DlpPatterns {
    fn default() -> Self {
        DlpPatterns {
            email: true,
            phone: true,
            credit_card: true,
            ssn: true,
            api_keys: true,
            iban: true,
            private_keys: true,
            jwt: true,
            url_credentials: true,
        }
    }
}

/// A user-defined DLP detector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPattern {
    /// Name used in events.
    pub name: String,
    /// Text shown in the placeholder (default: `name`).
    #[serde(default)]
    pub display: Option<String>,
    /// The expression (compiled at load; an invalid one is an error, never skipped).
    pub regex: RegexPattern,
    /// Per-pattern mode, overriding `dlp.mode`.
    #[serde(default)]
    pub mode: Option<DlpMode>,
}

/// `llm.dlp`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dlp {
    /// Default action on a finding.
    #[serde(default)]
    pub mode: DlpMode,
    /// Built-in detectors.
    #[serde(default)]
    pub patterns: DlpPatterns,
    /// User-defined detectors.
    #[serde(default)]
    pub custom_patterns: Vec<CustomPattern>,
}

/// `llm.rate_limits`, per session; absent = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens (input + output) per minute.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
}

/// What happens when a budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    /// Refuse further requests (HTTP 429; the default).
    #[default]
    Deny,
    /// Keep going and record it.
    Audit,
}

/// `llm.budgets`: cumulative token caps; absent = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Tokens per calendar day (UTC).
    #[serde(default)]
    pub daily_tokens: Option<u64>,
    /// Tokens per calendar month (UTC).
    #[serde(default)]
    pub monthly_tokens: Option<u64>,
    /// Tokens per session.
    #[serde(default)]
    pub per_session_tokens: Option<u64>,
    /// Action when exhausted.
    #[serde(default)]
    pub action: BudgetAction,
}

/// `llm.models`: deny globs win over allow globs; an empty allow list allows every model.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRules {
    /// Model-name globs allowed.
    #[serde(default)]
    pub allow: Vec<NameGlob>,
    /// Model-name globs denied.
    #[serde(default)]
    pub deny: Vec<NameGlob>,
}

/// The `llm:` section.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmPolicy {
    /// Providers fronted by the gateway.
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// Data-loss prevention on requests.
    #[serde(default)]
    pub dlp: Dlp,
    /// Rate limits.
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Token budgets.
    #[serde(default)]
    pub budgets: Budgets,
    /// Model allow/deny lists.
    #[serde(default)]
    pub models: ModelRules,
}
