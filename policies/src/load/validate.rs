//! Cross-field validation after typing: the checks serde cannot express (exclusive fields,
//! references between sections, duplicate names). Errors carry paths in the typed value's
//! coordinates; the loader maps them back to lines.

use std::collections::HashMap;

use super::path::YamlPath;

/// Collects cross-field errors.
#[derive(Debug, Default)]
pub struct Validator {
    pub(crate) errors: Vec<(YamlPath, String)>,
}

impl Validator {
    /// Record an error at `path`.
    pub fn error(&mut self, path: YamlPath, message: impl Into<String>) {
        self.errors.push((path, message.into()));
    }

    /// Report every repeated or empty `name` in the list at `list`, at that item's `name` key.
    pub fn unique_names<'a>(&mut self, list: &YamlPath, names: impl IntoIterator<Item = &'a str>) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names.into_iter().enumerate() {
            let p = list.index(i).key("name");
            if name.trim().is_empty() {
                self.error(p, "name must not be empty");
            } else if let Some(j) = first.get(name) {
                self.error(p, format!("duplicate name {name:?} (first used by {list}[{j}])"));
            } else {
                first.insert(name, i);
            }
        }
    }

    /// Report an empty name at `path`.
    pub fn non_empty(&mut self, path: YamlPath, value: &str) {
        if value.trim().is_empty() {
            self.error(path, "must not be empty");
        }
    }
}

/// A typed document that checks itself after deserialisation.
pub trait Validate {
    /// Record every cross-field problem in `v`.
    fn validate(&self, v: &mut Validator);
}

/// Whether `name` is a plausible environment variable name.
pub(crate) fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
