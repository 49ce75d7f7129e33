//! Load errors: each names the file, the 1-based line and column of the offending key, the key's
//! dotted path and what is wrong. [`LoadErrors`] prints one per line.

use std::fmt;

/// One problem found while loading a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: {message}")]
pub struct LoadError {
    /// The file name as given to the loader.
    pub file: String,
    /// 1-based line of the key (or of the syntax error).
    pub line: usize,
    /// 1-based column of the key (or of the syntax error).
    pub column: usize,
    /// Dotted path of the key, e.g. `network_rules[2].decision`; `(document)` for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in one file, in file order. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl LoadErrors {
    /// The errors.
    pub fn iter(&self) -> impl Iterator<Item = &LoadError> {
        self.0.iter()
    }

    /// How many errors there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Errors of the `policies` crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A policy or config file failed to load; every problem is listed.
    #[error("{0}")]
    Load(#[from] LoadErrors),
}
