//! The span index: where each key of a YAML document starts. serde_norway gives no spans, so a
//! second, event-level pass with yaml-rust2 records, for every path, the 1-based line and column
//! of its key (or, for a sequence item, of the item's first token). It also spots duplicate keys
//! at their exact position.

use std::collections::{HashMap, HashSet};

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

use super::path::YamlPath;

/// A 1-based position in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Pos {
    fn of(m: Marker) -> (Pos, usize) {
        (Pos { line: m.line(), column: m.col() + 1 }, m.index())
    }
}

/// Path → position of every key and sequence item in one document.
#[derive(Debug, Default)]
pub(crate) struct SpanIndex {
    spans: HashMap<YamlPath, Pos>,
    /// Keys that repeat within one mapping, at the repeated occurrence.
    pub duplicates: Vec<(YamlPath, Pos)>,
}

impl SpanIndex {
    /// Index `text`. A text yaml-rust2 cannot parse gives a partial index; the syntax error itself
    /// is reported from serde_norway.
    pub fn build(text: &str) -> SpanIndex {
        let mut b = Builder::default();
        let _ = Parser::new_from_str(text).load(&mut b, false);
        SpanIndex { spans: b.spans, duplicates: b.duplicates }
    }

    /// The position of `path`, or of its nearest indexed ancestor, or 1:1.
    pub fn lookup(&self, path: &YamlPath) -> Pos {
        let mut p = path.clone();
        loop {
            if let Some(pos) = self.spans.get(&p) {
                return *pos;
            }
            if p.is_root() {
                return Pos { line: 1, column: 1 };
            }
            p = p.parent();
        }
    }
}

enum Frame {
    Map { path: YamlPath, key: Option<String>, seen: HashSet<String>, item_of_seq: bool, first: bool },
    Seq { path: YamlPath, next: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    spans: HashMap<YamlPath, Pos>,
    duplicates: Vec<(YamlPath, Pos)>,
    done: bool,
    /// Where each recorded item position came from, to keep the earliest token.
    item_index: HashMap<YamlPath, usize>,
}

impl Builder {
    /// Place a node that starts at `mark`; returns its path when it is a value (not a key).
    fn place(&mut self, ev: &Event, mark: Marker) -> Option<YamlPath> {
        let (pos, idx) = Pos::of(mark);
        match self.stack.last_mut() {
            None => Some(YamlPath::root()),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                self.spans.insert(p.clone(), pos);
                self.item_index.insert(p.clone(), idx);
                Some(p)
            }
            Some(Frame::Map { path, key, seen, item_of_seq, first }) => match key.take() {
                Some(k) => Some(path.key(k)),
                None => {
                    let name = match ev {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => "?".to_string(),
                    };
                    let p = path.key(name.clone());
                    // A block mapping's start mark lies after its first key: the item begins
                    // at whichever token comes first.
                    if *first && *item_of_seq && self.item_index.get(path).is_some_and(|i| idx < *i) {
                        self.spans.insert(path.clone(), pos);
                    }
                    *first = false;
                    if !seen.insert(name.clone()) {
                        self.duplicates.push((p.clone(), pos));
                    } else {
                        self.spans.insert(p, pos);
                    }
                    *key = Some(name);
                    // Complex keys (mappings as keys) are indexed under `?` and skipped.
                    if !matches!(ev, Event::Scalar(..) | Event::Alias(_)) {
                        let p = path.key("?");
                        return Some(p);
                    }
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        match &ev {
            Event::Scalar(..) | Event::Alias(_) => {
                self.place(&ev, mark);
            }
            Event::MappingStart(..) => {
                let in_seq = matches!(self.stack.last(), Some(Frame::Seq { .. }));
                if let Some(path) = self.place(&ev, mark) {
                    self.stack.push(Frame::Map {
                        path,
                        key: None,
                        seen: HashSet::new(),
                        item_of_seq: in_seq,
                        first: true,
                    });
                }
            }
            Event::SequenceStart(..) => {
                if let Some(path) = self.place(&ev, mark) {
                    self.stack.push(Frame::Seq { path, next: 0 });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ix: &SpanIndex, p: YamlPath) -> (usize, usize) {
        let pos = ix.lookup(&p);
        (pos.line, pos.column)
    }

    #[test]
    fn indexes_block_and_flow() {
        let text = "a:\n  - name: x\n    b: 1\n  - {name: y, c: [1, 2]}\nd: 2\nd: 3\n";
        let ix = SpanIndex::build(text);
        let a = YamlPath::root().key("a");
        assert_eq!(at(&ix, a.clone()), (1, 1));
        assert_eq!(at(&ix, a.index(0)), (2, 5));
        assert_eq!(at(&ix, a.index(0).key("b")), (3, 5));
        assert_eq!(at(&ix, a.index(1)), (4, 5));
        assert_eq!(at(&ix, a.index(1).key("c")), (4, 15));
        assert_eq!(at(&ix, a.index(1).key("c").index(1)), (4, 22));
        assert_eq!(at(&ix, a.index(1).key("zz")), (4, 5));
        assert_eq!(ix.duplicates, vec![(YamlPath::root().key("d"), Pos { line: 6, column: 1 })]);
    }
}
