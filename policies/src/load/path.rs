//! Paths into a YAML document (`network_rules[2].decision`): how errors name their key and how
//! the span index finds its line.

use std::fmt;

/// One step of a [`YamlPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index (0-based).
    Index(usize),
}

/// A path from the document root; the empty path is the root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct YamlPath(Vec<Seg>);

impl YamlPath {
    /// The document root.
    pub fn root() -> Self {
        YamlPath(Vec::new())
    }

    /// This path extended by a mapping key.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.into()));
        YamlPath(segs)
    }

    /// This path extended by a sequence index.
    pub fn index(&self, i: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        YamlPath(segs)
    }

    /// The steps from the root.
    pub fn segments(&self) -> &[Seg] {
        &self.0
    }

    /// The path without its last step (the root stays the root).
    pub fn parent(&self) -> YamlPath {
        YamlPath(self.0[..self.0.len().saturating_sub(1)].to_vec())
    }

    /// The last step, if any.
    pub fn last(&self) -> Option<&Seg> {
        self.0.last()
    }

    /// The nearest mapping key at or above the end of the path (`ports` for `a.ports[3]`).
    pub fn last_key(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, seg: Seg) {
        self.0.push(seg);
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_dotted() {
        let p = YamlPath::root().key("network_rules").index(2).key("decision");
        assert_eq!(p.to_string(), "network_rules[2].decision");
        assert_eq!(p.parent().to_string(), "network_rules[2]");
        assert_eq!(YamlPath::root().key("a").index(0).last_key(), Some("a"));
    }
}
