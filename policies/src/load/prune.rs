//! Typed deserialisation that keeps going after an error. Each error is recorded with its path
//! (from serde_path_to_error), the offending key or item is pruned from the YAML value and the
//! whole value is tried again, a bounded number of times. One item can thus report several
//! unknown keys and bad values, and every section and item is checked independently.
//!
//! Pruning a sequence item shifts the indices after it; [`Pruner::original`] maps paths of the
//! pruned value back to the text, so every error names the line it came from.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde_norway::Value;

use super::path::{Seg, YamlPath};

/// The most errors collected from one file before giving up.
pub(crate) const MAX_ERRORS: usize = 200;

/// Which sequence items were pruned, in original coordinates.
#[derive(Debug, Default)]
pub(crate) struct Pruner {
    removed: Vec<(YamlPath, Vec<usize>)>,
    pruned: HashSet<YamlPath>,
}

impl Pruner {
    /// Whether pruning removed something strictly below `path` (original coordinates).
    pub fn pruned_below(&self, path: &YamlPath) -> bool {
        let n = path.segments().len();
        self.pruned.iter().any(|q| q.segments().len() > n && q.segments()[..n] == *path.segments())
    }

    /// Map a path of the pruned value to the path in the original text.
    pub fn original(&self, current: &YamlPath) -> YamlPath {
        let mut out = YamlPath::root();
        for seg in current.segments() {
            match seg {
                Seg::Key(k) => out.push(Seg::Key(k.clone())),
                Seg::Index(i) => {
                    let mut orig = *i;
                    if let Some((_, gone)) = self.removed.iter().find(|(p, _)| *p == out) {
                        for r in gone {
                            if *r <= orig {
                                orig += 1;
                            }
                        }
                    }
                    out.push(Seg::Index(orig));
                }
            }
        }
        out
    }

    fn record_removal(&mut self, seq_original: YamlPath, index_original: usize) {
        match self.removed.iter_mut().find(|(p, _)| *p == seq_original) {
            Some((_, gone)) => {
                gone.push(index_original);
                gone.sort_unstable();
            }
            None => self.removed.push((seq_original, vec![index_original])),
        }
    }
}

/// An error at a path of the original text.
pub(crate) type RawError = (YamlPath, String);

fn key_text(k: &Value) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some("~".to_string()),
        _ => None,
    }
}

fn child_mut<'v>(v: &'v mut Value, seg: &Seg) -> Option<&'v mut Value> {
    match (v, seg) {
        (Value::Mapping(m), Seg::Key(k)) => {
            let key = m.keys().find(|x| key_text(x).as_deref() == Some(k))?.clone();
            m.get_mut(key)
        }
        (Value::Sequence(s), Seg::Index(i)) => s.get_mut(*i),
        (Value::Tagged(t), seg) => child_mut(&mut t.value, seg),
        _ => None,
    }
}

fn exists(v: &mut Value, path: &YamlPath) -> bool {
    let mut cur = v;
    for seg in path.segments() {
        match child_mut(cur, seg) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    true
}

/// Remove the node at `path` (not the root). Returns false when there is nothing to remove.
fn remove(v: &mut Value, path: &YamlPath, pruner: &mut Pruner) -> bool {
    let Some(last) = path.last() else { return false };
    let parent = path.parent();
    let mut cur = &mut *v;
    for seg in parent.segments() {
        match child_mut(cur, seg) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    if let Value::Tagged(t) = cur {
        cur = &mut t.value;
    }
    match (cur, last) {
        (Value::Mapping(m), Seg::Key(k)) => {
            let Some(key) = m.keys().find(|x| key_text(x).as_deref() == Some(k)).cloned() else {
                return false;
            };
            m.shift_remove(key).is_some()
        }
        (Value::Sequence(s), Seg::Index(i)) if *i < s.len() => {
            let orig = pruner.original(path);
            s.remove(*i);
            if let Some(Seg::Index(oi)) = orig.last() {
                pruner.record_removal(orig.parent(), *oi);
            }
            true
        }
        _ => false,
    }
}

/// The names quoted in backticks in a serde message (`unknown field `x`, expected `a` or `b``).
fn backticked(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

fn expected_list(names: &[&str]) -> String {
    names.join(", ")
}

/// Reword serde's messages into the house style and find the node to prune.
fn classify(path: YamlPath, msg: &str) -> (YamlPath, String, Option<String>) {
    if msg.starts_with("unknown field `") {
        let names = backticked(msg);
        let field = names.first().copied().unwrap_or_default().to_string();
        let path = match path.last() {
            Some(Seg::Key(k)) if *k == field => path,
            _ => path.key(field.clone()),
        };
        let text = if names.len() > 1 {
            format!("unknown key {field:?} (expected one of: {})", expected_list(&names[1..]))
        } else {
            format!("unknown key {field:?} (this mapping takes no keys)")
        };
        return (path, text, None);
    }
    if msg.starts_with("missing field `") {
        let field = backticked(msg).first().copied().unwrap_or_default().to_string();
        return (path, format!("missing required key {field:?}"), Some(field));
    }
    if msg.starts_with("unknown variant `") {
        let names = backticked(msg);
        let bad = names.first().copied().unwrap_or_default();
        let what = match (path.last(), path.last_key()) {
            (Some(Seg::Index(_)), Some(k)) => k.strip_suffix('s').unwrap_or(k).to_string(),
            (_, Some(k)) => k.to_string(),
            _ => "value".to_string(),
        };
        let text = format!("unknown {what} {bad:?} (expected {})", expected_list(&names[1..]));
        return (path, text, None);
    }
    (path, msg.to_string(), None)
}

/// Deserialise `value` as `T`, pruning and retrying after each error. Returns the value built
/// from what survived (None if nothing could be built) and the pruning record.
pub(crate) fn deserialize_pruned<T: DeserializeOwned>(
    mut value: Value,
    errors: &mut Vec<RawError>,
) -> (Option<T>, Pruner) {
    let mut pruner = Pruner::default();
    while errors.len() < MAX_ERRORS {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return (Some(t), pruner),
            Err(e) => e,
        };
        let mut cur = YamlPath::root();
        for seg in err.path().iter() {
            match seg {
                serde_path_to_error::Segment::Map { key } => cur.push(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => cur.push(Seg::Index(*index)),
                _ => {}
            }
        }
        let (mut target, text, missing) = classify(cur, &err.inner().to_string());
        let original = pruner.original(&target);
        match missing {
            // A required key that pruning removed: already reported.
            Some(field) if pruner.pruned.contains(&original.key(field.clone())) => {}
            _ => errors.push((original.clone(), text)),
        }
        pruner.pruned.insert(original);
        // Prune the node, or its nearest existing ancestor; give up at the root.
        while !target.is_root() && !exists(&mut value, &target) {
            target = target.parent();
        }
        if target.is_root() || !remove(&mut value, &target, &mut pruner) {
            return (None, pruner);
        }
    }
    errors.push((YamlPath::root(), format!("too many errors (stopped after {MAX_ERRORS})")));
    (None, pruner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_indices_back_after_removals() {
        let mut p = Pruner::default();
        let seq = YamlPath::root().key("r");
        p.record_removal(seq.clone(), 1);
        p.record_removal(seq.clone(), 3);
        // Original items 0 2 4 remain at 0 1 2.
        assert_eq!(p.original(&seq.index(0)), seq.index(0));
        assert_eq!(p.original(&seq.index(1)), seq.index(2));
        assert_eq!(p.original(&seq.index(2).key("x")), seq.index(4).key("x"));
    }

    #[test]
    fn rewords_variants_and_fields() {
        let p = YamlPath::root().key("network_rules").index(0).key("decision");
        let (_, m, _) = classify(p, "unknown variant `alow`, expected one of `allow`, `deny`");
        assert_eq!(m, r#"unknown decision "alow" (expected allow, deny)"#);
        let p = YamlPath::root().key("r").index(0).key("operations").index(1);
        let (_, m, _) = classify(p, "unknown variant `x`, expected `connect` or `bind`");
        assert_eq!(m, r#"unknown operation "x" (expected connect, bind)"#);
    }
}
