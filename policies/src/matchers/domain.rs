//! Domain names and domain glob patterns: normalisation (case, trailing dot, IDNA) and parsing.

use std::fmt;

/// Why a name or pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The text is empty (or only a dot).
    #[error("empty domain name")]
    Empty,
    /// IDNA (UTS #46) processing rejected the name.
    #[error("not a valid internationalised domain name: {0:?}")]
    Idna(String),
    /// A label is empty (`a..b`) or longer than 63 octets.
    #[error("bad label {0:?} (labels are 1-63 characters)")]
    BadLabel(String),
    /// A label holds a character outside letters, digits, `-` and `_`.
    #[error("bad character in label {0:?}")]
    BadChar(String),
    /// A wildcard that is not a whole label, such as `api-*.example.com`.
    #[error("wildcards must be whole labels (`*` or `**`), got {0:?}")]
    PartialWildcard(String),
    /// A name over 253 octets.
    #[error("domain name longer than 253 characters")]
    TooLong,
}

/// Lower-case, strip one trailing dot and apply IDNA so that `Ünï.Example.` and
/// `xn--n-yfa7c.example` compare equal. Wildcard labels pass through untouched.
fn normalise(text: &str) -> Result<String, DomainError> {
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    if trimmed.is_empty() {
        return Err(DomainError::Empty);
    }
    let mut out = String::with_capacity(trimmed.len());
    for (i, label) in trimmed.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if label.is_ascii() {
            out.extend(label.chars().map(|c| c.to_ascii_lowercase()));
        } else {
            let ascii = idna::domain_to_ascii(label).map_err(|_| DomainError::Idna(label.into()))?;
            out.push_str(&ascii);
        }
    }
    if out.len() > 253 {
        return Err(DomainError::TooLong);
    }
    Ok(out)
}

fn check_label(label: &str) -> Result<(), DomainError> {
    if label.is_empty() || label.len() > 63 {
        return Err(DomainError::BadLabel(label.into()));
    }
    if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(DomainError::BadChar(label.into()));
    }
    Ok(())
}

/// A validated, normalised host name (lower-case ASCII, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hostname(String);

impl Hostname {
    /// Validate and normalise `text`; wildcards are not allowed in a host name.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let name = normalise(text)?;
        for label in name.split('.') {
            check_label(label)?;
        }
        Ok(Hostname(name))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Labels from the top-level domain down (`www.example.com` → `com`, `example`, `www`).
    pub fn labels_rev(&self) -> impl Iterator<Item = &str> {
        self.0.rsplit('.')
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One label of a [`DomainPattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Label {
    /// This exact (normalised) label.
    Exact(String),
    /// `*`: exactly one label.
    One,
    /// `**`: any number of labels, including none.
    Any,
}

/// A domain glob: `*` stands for one label, `**` for any number of labels (including none).
/// `*.a.com` matches `x.a.com` but neither `a.com` nor `x.b.a.com`; `**.a.com` matches all three.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainPattern {
    text: String,
    labels: Vec<Label>,
}

impl DomainPattern {
    /// Validate and normalise a pattern such as `api.openai.com`, `*.openai.com` or `**.corp`.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let text = normalise(text)?;
        let mut labels = Vec::new();
        for label in text.split('.') {
            labels.push(match label {
                "*" => Label::One,
                "**" => Label::Any,
                l if l.contains('*') => return Err(DomainError::PartialWildcard(l.into())),
                l => {
                    check_label(l)?;
                    Label::Exact(l.into())
                }
            });
        }
        Ok(DomainPattern { text, labels })
    }

    /// The normalised pattern text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Labels in written order (`*.a.com` → `One`, `a`, `com`).
    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    /// Reference matcher, linear in the pattern: the compiled suffix structure must agree with it.
    pub fn matches(&self, name: &Hostname) -> bool {
        let name: Vec<&str> = name.as_str().split('.').collect();
        glob_match(&self.labels, &name)
    }
}

fn glob_match(pat: &[Label], name: &[&str]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((Label::Any, rest)) => (0..=name.len()).any(|skip| glob_match(rest, &name[skip..])),
        Some((Label::One, rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((Label::Exact(l), rest)) => name.first() == Some(&l.as_str()) && glob_match(rest, &name[1..]),
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        DomainPattern::parse(p).unwrap().matches(&Hostname::parse(n).unwrap())
    }

    #[test]
    fn glob_semantics() {
        assert!(m("*.a.com", "x.a.com"));
        assert!(!m("*.a.com", "a.com"));
        assert!(!m("*.a.com", "x.b.a.com"));
        assert!(m("**.a.com", "a.com"));
        assert!(m("**.a.com", "x.b.a.com"));
        assert!(m("API.Example.COM.", "api.example.com"));
        assert!(m("bücher.de", "xn--bcher-kva.de"));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!(DomainPattern::parse("api-*.x.com"), Err(DomainError::PartialWildcard("api-*".into())));
        assert!(matches!(DomainPattern::parse("a..b"), Err(DomainError::BadLabel(_))));
        assert!(matches!(Hostname::parse("*.a.com"), Err(DomainError::BadChar(_))));
        assert_eq!(Hostname::parse("."), Err(DomainError::Empty));
    }
}
