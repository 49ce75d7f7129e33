//! Resolving a policy argument: a file path, or the name of an embedded policy.

use std::path::Path;

use anyhow::{Context, bail};
use policies::{Policy, embedded};

/// A policy's text and the name to use for it in messages.
pub struct PolicySource {
    /// File path, or `<embedded:NAME>`.
    pub display: String,
    /// The YAML text.
    pub text: String,
}

/// Read `arg` as a file if one exists at that path, else as an embedded policy name.
pub fn read(arg: &str) -> anyhow::Result<PolicySource> {
    let path = Path::new(arg);
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {arg}"))?;
        return Ok(PolicySource { display: arg.to_string(), text });
    }
    match embedded::source(arg) {
        Some(text) => Ok(PolicySource { display: format!("<embedded:{arg}>"), text: text.to_string() }),
        None => {
            bail!("{arg}: no such file, and not an embedded policy (one of: {})", embedded::NAMES.join(", "))
        }
    }
}

/// Read and strictly load a policy; load errors are returned whole, one per line.
pub fn load(arg: &str) -> anyhow::Result<Policy> {
    let src = read(arg)?;
    policies::load_policy(&src.text, &src.display).map_err(|errs| anyhow::anyhow!("invalid policy:\n{errs}"))
}
