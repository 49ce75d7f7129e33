//! A suffix trie over domain labels (top-level domain first) that maps [`DomainPattern`]s to rule
//! indices, so a lookup costs time in the name's label count rather than the number of rules.
//!
//! Patterns are stored reversed (`*.a.com` → `com`, `a`, `*`). `*` is an edge that consumes one
//! label of any value. `**` is an edge into a *loop node*: entering it consumes nothing, and a loop
//! node consumes any label while staying put. A lookup is therefore the simulation of a small
//! non-deterministic automaton whose live state set is usually one node; `**` can add a few more.

use std::collections::HashMap;

use super::domain::{DomainPattern, Hostname, Label};

/// Index of a node in [`DomainTrie::nodes`].
type NodeId = u32;

/// One frozen trie node.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Exact-label children, sorted by label for binary search.
    exact: Vec<(Box<str>, NodeId)>,
    /// The `*` child (one label of any value).
    one: Option<NodeId>,
    /// The `**` child: a loop node entered without consuming a label.
    any: Option<NodeId>,
    /// Whether this node is a `**` loop node (consumes any label and stays here).
    is_loop: bool,
    /// Sorted, de-duplicated indices of the rules whose pattern ends here.
    rules: Vec<u32>,
}

/// A node while the trie is being built; exact children live in a hash map until frozen.
#[derive(Debug, Default)]
struct BuildNode {
    exact: HashMap<Box<str>, NodeId>,
    one: Option<NodeId>,
    any: Option<NodeId>,
    is_loop: bool,
    rules: Vec<u32>,
}

/// Builds a [`DomainTrie`]; insert patterns in increasing rule order, then [`freeze`](Self::freeze).
#[derive(Debug)]
pub struct DomainTrieBuilder {
    nodes: Vec<BuildNode>,
}

impl Default for DomainTrieBuilder {
    fn default() -> Self {
        DomainTrieBuilder { nodes: vec![BuildNode::default()] }
    }
}

impl DomainTrieBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, is_loop: bool) -> NodeId {
        let id = self.nodes.len() as NodeId;
        self.nodes.push(BuildNode { is_loop, ..BuildNode::default() });
        id
    }

    /// Record that `pattern` belongs to rule `rule`. Rule indices may arrive in any order; the
    /// frozen trie keeps each node's list sorted and free of duplicates.
    pub fn insert(&mut self, pattern: &DomainPattern, rule: u32) {
        let mut at: NodeId = 0;
        for label in pattern.labels().iter().rev() {
            let node = at as usize;
            at = match label {
                Label::Exact(text) => match self.nodes[node].exact.get(text.as_str()) {
                    Some(&next) => next,
                    None => {
                        let next = self.push(false);
                        self.nodes[node].exact.insert(text.as_str().into(), next);
                        next
                    }
                },
                Label::One => match self.nodes[node].one {
                    Some(next) => next,
                    None => {
                        let next = self.push(false);
                        self.nodes[node].one = Some(next);
                        next
                    }
                },
                Label::Any => match self.nodes[node].any {
                    Some(next) => next,
                    None => {
                        let next = self.push(true);
                        self.nodes[node].any = Some(next);
                        next
                    }
                },
            };
        }
        self.nodes[at as usize].rules.push(rule);
    }

    /// Freeze into the lookup form.
    pub fn freeze(self) -> DomainTrie {
        let nodes = self
            .nodes
            .into_iter()
            .map(|b| {
                let mut exact: Vec<(Box<str>, NodeId)> = b.exact.into_iter().collect();
                exact.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                let mut rules = b.rules;
                rules.sort_unstable();
                rules.dedup();
                Node { exact, one: b.one, any: b.any, is_loop: b.is_loop, rules }
            })
            .collect();
        DomainTrie { nodes }
    }
}

/// Domain patterns compiled for lookup by host name.
#[derive(Debug, Clone)]
pub struct DomainTrie {
    nodes: Vec<Node>,
}

impl Default for DomainTrie {
    fn default() -> Self {
        DomainTrieBuilder::new().freeze()
    }
}

/// Add `id` and everything reachable from it through `**` edges (which consume nothing).
fn add_closed(nodes: &[Node], states: &mut Vec<NodeId>, mut id: NodeId) {
    loop {
        if states.contains(&id) {
            return;
        }
        states.push(id);
        match nodes[id as usize].any {
            Some(next) => id = next,
            None => return,
        }
    }
}

impl DomainTrie {
    /// Build from `(pattern, rule index)` pairs.
    pub fn from_patterns<'a>(patterns: impl IntoIterator<Item = (&'a DomainPattern, u32)>) -> Self {
        let mut builder = DomainTrieBuilder::new();
        for (pattern, rule) in patterns {
            builder.insert(pattern, rule);
        }
        builder.freeze()
    }

    /// Whether no pattern was inserted.
    pub fn is_empty(&self) -> bool {
        self.nodes.iter().all(|n| n.rules.is_empty())
    }

    /// The nodes where some pattern matching `name` ends (deduplicated, in no particular order).
    fn final_states(&self, name: &Hostname) -> Vec<NodeId> {
        let mut states = Vec::with_capacity(4);
        let mut next = Vec::with_capacity(4);
        add_closed(&self.nodes, &mut states, 0);
        for label in name.labels_rev() {
            next.clear();
            for &id in &states {
                let node = &self.nodes[id as usize];
                if node.is_loop {
                    add_closed(&self.nodes, &mut next, id);
                }
                if let Some(one) = node.one {
                    add_closed(&self.nodes, &mut next, one);
                }
                if let Ok(pos) = node.exact.binary_search_by(|(l, _)| (**l).cmp(label)) {
                    add_closed(&self.nodes, &mut next, node.exact[pos].1);
                }
            }
            std::mem::swap(&mut states, &mut next);
            if states.is_empty() {
                break;
            }
        }
        states
    }

    /// Append the indices of all rules with a pattern matching `name` to `out` (unsorted; a rule
    /// may appear more than once when several of its patterns match).
    pub fn extend_matches(&self, name: &Hostname, out: &mut Vec<u32>) {
        for id in self.final_states(name) {
            out.extend_from_slice(&self.nodes[id as usize].rules);
        }
    }

    /// Sorted, de-duplicated indices of all rules with a pattern matching `name`.
    pub fn matches(&self, name: &Hostname) -> Vec<u32> {
        let mut out = Vec::new();
        self.extend_matches(name, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The lowest rule index with a pattern matching `name` for which `accept` holds.
    /// `accept` is called in increasing index order and never past the answer.
    pub fn first_match(&self, name: &Hostname, mut accept: impl FnMut(u32) -> bool) -> Option<u32> {
        let states = self.final_states(name);
        match states.as_slice() {
            [] => None,
            // The common case: one list, already sorted.
            [only] => self.nodes[*only as usize].rules.iter().copied().find(|&r| accept(r)),
            _ => {
                let mut all: Vec<u32> = Vec::new();
                for id in states {
                    all.extend_from_slice(&self.nodes[id as usize].rules);
                }
                all.sort_unstable();
                all.dedup();
                all.into_iter().find(|&r| accept(r))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trie(patterns: &[&str]) -> (DomainTrie, Vec<DomainPattern>) {
        let parsed: Vec<DomainPattern> =
            patterns.iter().map(|p| DomainPattern::parse(p).expect("test pattern")).collect();
        let t = DomainTrie::from_patterns(parsed.iter().zip(0u32..));
        (t, parsed)
    }

    fn host(n: &str) -> Hostname {
        Hostname::parse(n).expect("test name")
    }

    #[test]
    fn wildcard_semantics() {
        let (t, _) = trie(&["*.a.com", "**.a.com", "a.com", "x.**.com", "**"]);
        assert_eq!(t.matches(&host("a.com")), vec![1, 2, 4]);
        assert_eq!(t.matches(&host("x.a.com")), vec![0, 1, 3, 4]);
        assert_eq!(t.matches(&host("y.x.b.a.com")), vec![1, 4]);
        assert_eq!(t.matches(&host("x.com")), vec![3, 4]);
        assert_eq!(t.matches(&host("x.q.r.com")), vec![3, 4]);
        assert_eq!(t.matches(&host("org")), vec![4]);
        assert_eq!(t.first_match(&host("x.a.com"), |r| r > 0), Some(1));
        assert_eq!(t.first_match(&host("a.com"), |r| r == 3), None);
    }

    #[test]
    fn empty_trie_matches_nothing() {
        let t = DomainTrie::default();
        assert!(t.is_empty());
        assert!(t.matches(&host("a.com")).is_empty());
    }

    fn label() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("*"), Just("**")]
    }

    fn name_label() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("a"), Just("b"), Just("c")]
    }

    proptest! {
        #[test]
        fn agrees_with_reference(
            patterns in prop::collection::vec(prop::collection::vec(label(), 1..5), 1..12),
            names in prop::collection::vec(prop::collection::vec(name_label(), 1..6), 1..8),
        ) {
            let texts: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let (t, parsed) = trie(&refs);
            for n in names {
                let name = host(&n.join("."));
                let expected: Vec<u32> = (0u32..)
                    .zip(&parsed)
                    .filter(|(_, p)| p.matches(&name))
                    .map(|(i, _)| i)
                    .collect();
                prop_assert_eq!(t.matches(&name), expected.clone());
                prop_assert_eq!(t.first_match(&name, |r| r % 2 == 1),
                    expected.iter().copied().find(|r| r % 2 == 1));
            }
        }
    }
}
