//! Detector descriptions: kind, policy group, the candidate regex, the literals that anchor it in
//! the prefilter and the check that confirms a candidate. Regexes are written from the formats'
//! own specifications and stay ASCII-only so the lazy DFA never falls back.

use regex::Regex;

use super::checks::Check;

/// What a detector looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectorKind {
    /// E-mail address.
    Email,
    /// Phone number in E.164 or a separated national format.
    Phone,
    /// Payment card number (Luhn and issuer ranges).
    CreditCard,
    /// US social security number with separators.
    Ssn,
    /// IBAN (length per country and mod 97).
    Iban,
    /// AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// AWS secret access key, only near an AWS context word.
    AwsSecretKey,
    /// GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// GitLab personal access token (`glpat-`).
    GitlabToken,
    /// Slack token (`xoxb-` and siblings).
    SlackToken,
    /// Slack incoming-webhook URL.
    SlackWebhook,
    /// Stripe key (`sk_live_`, `rk_test_`, …).
    StripeKey,
    /// OpenAI key (`sk-…`, `sk-proj-…`).
    OpenaiKey,
    /// Anthropic key (`sk-ant-…`).
    AnthropicKey,
    /// Google API key (`AIza…`).
    GoogleApiKey,
    /// JSON Web Token whose header decodes to JSON with `alg`.
    Jwt,
    /// PEM private key block.
    PrivateKey,
    /// Password in a URL (`scheme://user:pass@host`); only the password is reported.
    UrlCredentials,
    /// A policy `custom_patterns` entry.
    Custom,
}

/// The policy switch (`llm.dlp.patterns.*`) a detector belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// `email`.
    Email,
    /// `phone`.
    Phone,
    /// `credit_card`.
    CreditCard,
    /// `ssn`.
    Ssn,
    /// `api_keys`.
    ApiKeys,
    /// `iban`.
    Iban,
    /// `private_keys`.
    PrivateKeys,
    /// `jwt`.
    Jwt,
    /// `url_credentials`.
    UrlCredentials,
    /// `custom_patterns` (always on when listed).
    Custom,
}

/// What happens to a match: `dlp.mode` for built-ins, a custom pattern's own `mode` if set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Replace with `[REDACTED:<display>]`.
    Redact,
    /// Refuse the request.
    Block,
    /// Report only.
    Audit,
}

impl Action {
    /// `redact`, `block` or `audit`, as in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Redact => "redact",
            Action::Block => "block",
            Action::Audit => "audit",
        }
    }
}

/// How the prefilter decides whether a detector's regex must run on a text.
#[derive(Debug, Clone)]
pub(crate) enum Anchor {
    /// Run when one of these literals occurs (case-sensitively: one automaton, no case
    /// folding, which keeps the SIMD prefilter of aho-corasick usable).
    Literals(&'static [&'static str]),
    /// Numbers: run inside digit-dense regions, when the built-in `RegexSet` says so.
    Digits,
    /// Custom patterns: run when the custom `RegexSet` matches the whole text.
    Set,
}

/// One compiled detector.
#[derive(Debug, Clone)]
pub struct Detector {
    /// What it detects.
    pub kind: DetectorKind,
    /// The policy switch that turns it off.
    pub group: Group,
    /// Name used in events and findings.
    pub name: String,
    /// Placeholder text: a match becomes `[REDACTED:<display>]`.
    pub placeholder: String,
    /// What happens to a match.
    pub action: Action,
    /// Higher wins when matches overlap; equal priorities go to the longer match.
    pub priority: u8,
    pub(crate) regex: Regex,
    pub(crate) anchor: Anchor,
    pub(crate) check: Check,
}

/// A built-in detector before compilation.
pub(crate) struct Spec {
    pub kind: DetectorKind,
    pub group: Group,
    pub name: &'static str,
    pub pattern: &'static str,
    pub anchor: Anchor,
    pub check: Check,
    pub priority: u8,
}

const B64URL: &[u8] = b"-_";

/// The built-in detectors, in no particular order (overlaps are settled by priority).
pub(crate) fn builtins() -> Vec<Spec> {
    use Anchor::{Digits, Literals};
    use DetectorKind as K;
    use Group as G;
    let s = |kind, group, name, pattern, anchor, check, priority| Spec {
        kind,
        group,
        name,
        pattern,
        anchor,
        check,
        priority,
    };
    vec![
        s(
            K::Email,
            G::Email,
            "email",
            r"[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}",
            Literals(&["@"]),
            Check::Email,
            40,
        ),
        s(
            K::Phone,
            G::Phone,
            "phone",
            concat!(
                // E.164, with or without separators.
                r"\+[1-9][0-9]{0,2}(?:[ .\-]?\(?[0-9]{1,5}\)?){1,6}",
                // North American: (415) 555-2671, 415-555-2671, 415.555.2671, 415 555 2671.
                r"|(?:1[ .\-])?(?:\([0-9]{3}\) ?|[0-9]{3}[.\-]|[0-9]{3} )[0-9]{3}[ .\-][0-9]{4}",
                // Trunk-prefixed national numbers: 020 7946 0958, 030 1234567, 01 23 45 67 89.
                r"|0[0-9]{1,4}[ \-][0-9]{3,4}[ \-]?[0-9]{3,4}|0[1-9](?:[ .][0-9]{2}){4}",
            ),
            Digits,
            Check::Phone,
            30,
        ),
        s(
            K::CreditCard,
            G::CreditCard,
            "credit_card",
            r"(?-u:\b)[0-9](?:[ \-]?[0-9]){12,18}(?-u:\b)",
            Digits,
            Check::Card,
            60,
        ),
        s(
            K::Ssn,
            G::Ssn,
            "ssn",
            r"(?-u:\b)(?:[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4})(?-u:\b)",
            Digits,
            Check::Ssn,
            55,
        ),
        s(
            K::Iban,
            G::Iban,
            "iban",
            r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
            Digits,
            Check::Iban,
            60,
        ),
        s(
            K::AwsAccessKey,
            G::ApiKeys,
            "aws_access_key",
            r"(?:AKIA|ASIA)[A-Z0-9]{16}",
            Literals(&["AKIA", "ASIA"]),
            Check::Token { extra: b"", min_classes: 1 },
            90,
        ),
        s(
            K::AwsSecretKey,
            G::ApiKeys,
            "aws_secret_key",
            r"[A-Za-z0-9/+]{40}",
            // The spellings seen in env files, INI files, JSON and prose; the check itself
            // compares case-insensitively.
            Literals(&[
                "aws_secret",
                "AWS_SECRET",
                "aws-secret",
                "aws secret",
                "AWS secret",
                "AWS Secret",
                "secret_access_key",
                "SECRET_ACCESS_KEY",
                "SecretAccessKey",
                "secretAccessKey",
                "secret access key",
                "Secret Access Key",
            ]),
            Check::AwsSecret,
            80,
        ),
        s(
            K::GithubToken,
            G::ApiKeys,
            "github_token",
            r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}",
            Literals(&["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"]),
            Check::Token { extra: b"_", min_classes: 2 },
            90,
        ),
        s(
            K::GitlabToken,
            G::ApiKeys,
            "gitlab_token",
            r"glpat-[A-Za-z0-9_\-]{20,128}",
            Literals(&["glpat-"]),
            Check::Token { extra: B64URL, min_classes: 2 },
            90,
        ),
        s(
            K::SlackToken,
            G::ApiKeys,
            "slack_token",
            r"xox[abprs]-[A-Za-z0-9]{1,40}(?:-[A-Za-z0-9]{1,64}){1,5}",
            Literals(&["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"]),
            Check::Slack,
            90,
        ),
        s(
            K::SlackWebhook,
            G::ApiKeys,
            "slack_webhook",
            r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_]{6,}/[A-Za-z0-9_]{6,}(?:/[A-Za-z0-9_]{6,})?",
            Literals(&["hooks.slack.com/"]),
            Check::None,
            95,
        ),
        s(
            K::StripeKey,
            G::ApiKeys,
            "stripe_key",
            r"[spr]k_(?:live|test)_[A-Za-z0-9]{16,247}",
            Literals(&["sk_live_", "sk_test_", "rk_live_", "rk_test_", "pk_live_", "pk_test_"]),
            Check::Token { extra: b"_", min_classes: 2 },
            90,
        ),
        s(
            K::OpenaiKey,
            G::ApiKeys,
            "openai_key",
            r"sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_\-]{20,256}|sk-[A-Za-z0-9]{32,64}",
            Literals(&["sk-"]),
            Check::Token { extra: B64URL, min_classes: 3 },
            90,
        ),
        s(
            K::AnthropicKey,
            G::ApiKeys,
            "anthropic_key",
            r"sk-ant-[a-z]{2,10}[0-9]{2}-[A-Za-z0-9_\-]{32,256}",
            Literals(&["sk-ant-"]),
            Check::Token { extra: B64URL, min_classes: 2 },
            92,
        ),
        s(
            K::GoogleApiKey,
            G::ApiKeys,
            "google_api_key",
            r"AIza[A-Za-z0-9_\-]{35}",
            Literals(&["AIza"]),
            Check::Token { extra: B64URL, min_classes: 2 },
            90,
        ),
        s(
            K::Jwt,
            G::Jwt,
            "jwt",
            r"eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*",
            Literals(&["eyJ"]),
            Check::Jwt,
            85,
        ),
        s(
            K::PrivateKey,
            G::PrivateKeys,
            "private_key",
            concat!(
                r"-----BEGIN[A-Z0-9 ]{0,40} PRIVATE KEY(?: BLOCK)?-----",
                // A whole block (encapsulated headers such as Proc-Type, then base64) up to the
                // nearest END line; failing that, a truncated block: base64 lines only, so the
                // prose after it stays.
                r"(?:(?:[A-Za-z0-9+/=\s]|[A-Za-z\-]{1,40}: [^\n]{0,200}\n)*?",
                r"-----END[A-Z0-9 ]{0,40} PRIVATE KEY(?: BLOCK)?-----|(?:\s*[A-Za-z0-9+/=]{16,})*)",
            ),
            Literals(&["-----BEGIN"]),
            Check::None,
            100,
        ),
        s(
            K::UrlCredentials,
            G::UrlCredentials,
            "url_credentials",
            r#"[A-Za-z][A-Za-z0-9+.\-]{0,30}://[^\s:/?#@\[\]"'<>]*:[^\s/?#@"'<>]+@[A-Za-z0-9.\-_%\[\]]+"#,
            Literals(&["://"]),
            Check::UrlPassword,
            85,
        ),
    ]
}
