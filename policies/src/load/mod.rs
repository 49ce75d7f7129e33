//! Strict, multi-error loading of YAML files into typed values: the policy file and (through the
//! same core, [`load_yaml`]) the server config.
//!
//! serde_norway is the YAML deserializer ([`parse_yaml`] is the one place it reads text). A
//! yaml-rust2 event pass builds the span index, serde_path_to_error gives the path of each typed
//! error, and pruning-and-retrying collects every error rather than the first. Cross-field
//! checks ([`Validate`]) then run on whatever was typed.

mod db_checks;
mod error;
mod path;
mod policy_checks;
mod prune;
mod spans;
mod validate;

pub use error::{Error, LoadError, LoadErrors};
pub use path::{Seg, YamlPath};
pub use spans::Pos;
pub use validate::{Validate, Validator};

use serde::de::DeserializeOwned;
use serde_norway::Value;

use crate::Policy;

/// Load a policy file. `file` is only used to name the file in errors.
pub fn load_policy(text: &str, file: &str) -> Result<Policy, LoadErrors> {
    load_yaml(text, file)
}

/// Parse YAML text into an untyped value: the single serde_norway call that reads text.
fn parse_yaml(text: &str) -> Result<Value, serde_norway::Error> {
    serde_norway::from_str(text)
}

/// The loader core: parse `text`, deserialize it strictly as `T` collecting every error, then
/// run `T`'s cross-field checks. An empty document is an empty mapping.
pub fn load_yaml<T: DeserializeOwned + Validate>(text: &str, file: &str) -> Result<T, LoadErrors> {
    let spans = spans::SpanIndex::build(text);
    let at = |path: &YamlPath, message: String| {
        let pos = spans.lookup(path);
        LoadError {
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
            key: if path.is_root() { "(document)".to_string() } else { path.to_string() },
            message: message.replace('\n', " "),
        }
    };
    let value = match parse_yaml(text) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(v) => v,
        Err(e) if !spans.duplicates.is_empty() => {
            let _ = e;
            let errs = spans
                .duplicates
                .iter()
                .map(|(p, pos)| LoadError {
                    line: pos.line,
                    column: pos.column,
                    ..at(p, "duplicate key".to_string())
                })
                .collect();
            return Err(LoadErrors(errs));
        }
        Err(e) => {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            let message = e.to_string();
            let message = match message.rsplit_once(" at line ") {
                Some((head, _)) => head.to_string(),
                None => message,
            };
            let key = "(document)".to_string();
            return Err(LoadErrors(vec![LoadError { file: file.to_string(), line, column, key, message }]));
        }
    };
    let mut raw = Vec::new();
    let (typed, pruner) = prune::deserialize_pruned::<T>(value, &mut raw);
    if let Some(t) = &typed {
        let mut v = Validator::default();
        t.validate(&mut v);
        // A check on a field that pruning emptied (an `operations` list whose only entry was
        // bad) would only echo the error already reported inside it.
        let echoes = |p: &YamlPath| matches!(p.last(), Some(Seg::Key(_))) && pruner.pruned_below(p);
        let checked = v.errors.into_iter().map(|(p, m)| (pruner.original(&p), m));
        raw.extend(checked.filter(|(p, _)| !echoes(p)));
    }
    match typed {
        Some(t) if raw.is_empty() => Ok(t),
        _ => {
            let mut errs: Vec<LoadError> = raw.into_iter().map(|(p, m)| at(&p, m)).collect();
            errs.sort_by_key(|e| (e.line, e.column));
            Err(LoadErrors(errs))
        }
    }
}
