//! The DLP engine: pure detectors for personal data and secrets, a literal + `RegexSet`
//! prefilter, JSON-aware scanning that keeps the body byte-exact outside the redacted spans, and
//! a streaming scanner for answers. No IO: the proxy feeds it bytes and acts on the [`Outcome`].
//!
//! The JSON scanner works on the raw bytes instead of a `serde_json::Value`. Enabling serde_json's
//! `preserve_order` and `arbitrary_precision` features would be needed to re-encode a body
//! faithfully, but features unify across the workspace and would change number handling for every
//! other crate; splicing placeholders into the original bytes is exact by construction (key order,
//! number spelling, whitespace and escapes are never touched) and costs no allocation when
//! nothing matches.

mod checks;
mod detector;
mod engine;
mod json;
mod stream;

pub use checks::{iban_valid, luhn_valid};
pub use detector::{Action, Detector, DetectorKind, Group};
pub use engine::{Engine, Match};
pub(crate) use json::push_key;
pub use json::{JsonError, scan_json};
pub use stream::{StreamFinding, StreamScanner};

/// One detector's findings in one place: `count` matches of `detector` at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// JSON path of the string (`messages[0].content[1].text`), `$` for plain text.
    pub path: String,
    /// Detector name as used in events (`credit_card`, or the custom pattern's `name`).
    pub detector: String,
    /// What kind of detector matched.
    pub kind: DetectorKind,
    /// What was done about it.
    pub action: Action,
    /// Number of matches.
    pub count: usize,
}

/// The first block-mode finding; the proxy refuses the request naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Detector name.
    pub detector: String,
    /// Detector kind.
    pub kind: DetectorKind,
    /// Where it was found.
    pub path: String,
}

/// The result of a scan: the body with `redact` findings replaced (borrowed and identical to the
/// input when nothing was redacted), every finding, and the block verdict if any detector in
/// `block` mode matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<B> {
    /// The possibly redacted body.
    pub body: B,
    /// All findings, in document order.
    pub findings: Vec<Finding>,
    /// Set when the request must be refused.
    pub block: Option<Block>,
}

impl<B> Outcome<B> {
    /// True when a block-mode detector matched.
    pub fn is_blocked(&self) -> bool {
        self.block.is_some()
    }

    /// Number of matches that were redacted.
    pub fn redactions(&self) -> usize {
        self.findings.iter().filter(|f| f.action == Action::Redact).map(|f| f.count).sum()
    }
}

/// Errors building an [`Engine`].
#[derive(Debug, thiserror::Error)]
pub enum DlpError {
    /// A regex or the prefilter could not be built (size limits).
    #[error("dlp detector {detector:?} could not be built: {reason}")]
    Build {
        /// The detector name.
        detector: String,
        /// Why.
        reason: String,
    },
}

/// Scans plain text: same rules as a JSON string value, reported at path `$`.
pub fn scan_text<'a>(text: &'a str, engine: &Engine) -> Outcome<std::borrow::Cow<'a, str>> {
    engine.scan_str(text, "$")
}
