//! A bounded memo of [`analyze`]: clients repeat statement text (an ORM's queries, `BEGIN`,
//! an unnamed Parse sent again for every run) and, more often still, the same statement with
//! other values inlined (`… WHERE id = 41`, `= 42`), and sqlparser is most of what a statement
//! costs the proxy.
//!
//! Only the classification is kept, never a decision: [`Analysis`] is a pure function of the
//! text, and the rules in force and the session's prepared statements are applied to it
//! afterwards as for a fresh one. A hit therefore decides exactly as a miss would.
//!
//! Keys: a text with a [`shape`](super::shape) (its plain literals cut out) is looked up by
//! shape. An analysis is stored under a shape only when values provably do not reach it:
//! sqlparser's tokens hold exactly the scanner's literals, and the same text with other values
//! analyses identically (the digest and redacted text never hold values; a classification
//! that names a value, such as `nextval('seq')`, differs). A shape that fails this is marked
//! so, and its texts are memoised one by one like texts without a shape, by the whole text
//! (compared in full on lookup).
//!
//! Memory is bounded by entry count and text length: for texts and for shapes, two
//! generations of at most `half` entries each; an insert into a full young generation retires
//! the old one whole, and a hit in the old generation moves the entry back to the young one
//! (an approximate LRU at O(1) per call, no per-entry bookkeeping). Texts over `max_text`
//! bytes are analysed every time. A key is stored the second time it is seen within the last
//! `half` new keys (a set of hashes remembers the first sighting), so a stream of keys that
//! never repeat costs no stores and evicts nothing; a hash collision there only stores a key
//! early.

use std::{
    collections::{HashMap, HashSet, hash_map::RandomState},
    hash::BuildHasher,
    sync::{Arc, Mutex},
};

use super::{
    Analysis, analyze,
    normalize::is_literal,
    shape::{self, Shape},
};
use sqlparser::tokenizer::Token;

/// Entries per generation of [`AnalysisCache::default`].
pub const DEFAULT_GENERATION: usize = 1024;
/// The longest text [`AnalysisCache::default`] keeps.
pub const DEFAULT_MAX_TEXT: usize = 4 * 1024;

/// What a key holds: an analysis, or (for a shape) that its texts' values matter, so each text
/// is memoised by itself.
#[derive(Clone)]
enum Entry {
    Analysis(Arc<Analysis>),
    ByText,
}

type Generation = HashMap<Arc<str>, Entry>;

#[derive(Default)]
struct Generations {
    young: Generation,
    old: Generation,
    /// Hashes of keys seen once and not stored (cleared when it reaches `half`).
    seen: HashSet<u64>,
}

/// What a lookup found.
enum Found {
    Entry(Entry),
    /// Not stored; seen before (store it now) or not (do not).
    Missing {
        store: bool,
    },
}

/// A bounded, thread-safe memo of [`analyze`], keyed by a text's shape when it has one, else
/// by the exact text.
pub struct AnalysisCache {
    texts: Mutex<Generations>,
    shapes: Mutex<Generations>,
    half: usize,
    max_text: usize,
    hasher: RandomState,
}

impl Default for AnalysisCache {
    fn default() -> Self {
        AnalysisCache::new(DEFAULT_GENERATION, DEFAULT_MAX_TEXT)
    }
}

fn lock(m: &Mutex<Generations>) -> std::sync::MutexGuard<'_, Generations> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AnalysisCache {
    /// A cache of at most `2 * half` texts and `2 * half` shapes of at most `max_text` bytes
    /// each (`half == 0` keeps nothing).
    pub fn new(half: usize, max_text: usize) -> AnalysisCache {
        AnalysisCache {
            texts: Mutex::default(),
            shapes: Mutex::default(),
            half,
            max_text,
            hasher: RandomState::new(),
        }
    }

    /// [`analyze`]`(sql)`, from the cache when a text of the same shape (or, for a text
    /// without one, the same text) was analysed recently.
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        if self.half == 0 || sql.len() > self.max_text {
            return Arc::new(analyze(sql));
        }
        let Some(shape) = shape::shape(sql) else { return self.by_text(sql) };
        match self.find(&self.shapes, &shape.key) {
            Found::Entry(Entry::Analysis(a)) => a,
            Found::Entry(Entry::ByText) => self.by_text(sql),
            Found::Missing { store: false } => Arc::new(analyze(sql)),
            Found::Missing { store: true } => {
                // Analysed outside the lock: other sessions go on meanwhile.
                let a = Arc::new(analyze(sql));
                if values_do_not_matter(sql, &shape, &a) {
                    self.insert(&mut lock(&self.shapes), shape.key.into(), Entry::Analysis(a.clone()));
                } else {
                    // From now on by text, starting with this one.
                    self.insert(&mut lock(&self.shapes), shape.key.into(), Entry::ByText);
                    self.insert(&mut lock(&self.texts), sql.into(), Entry::Analysis(a.clone()));
                }
                a
            }
        }
    }

    fn by_text(&self, sql: &str) -> Arc<Analysis> {
        match self.find(&self.texts, sql) {
            Found::Entry(Entry::Analysis(a)) => a,
            Found::Entry(Entry::ByText) | Found::Missing { store: false } => Arc::new(analyze(sql)),
            Found::Missing { store: true } => {
                let a = Arc::new(analyze(sql));
                self.insert(&mut lock(&self.texts), sql.into(), Entry::Analysis(a.clone()));
                a
            }
        }
    }

    /// The entry under `key` (an old one moves back to the young generation), or whether
    /// the key was seen once before (remembering it if not).
    fn find(&self, gens: &Mutex<Generations>, key: &str) -> Found {
        let mut g = lock(gens);
        if let Some(e) = g.young.get(key) {
            return Found::Entry(e.clone());
        }
        if let Some((k, e)) = g.old.remove_entry(key) {
            self.insert(&mut g, k, e.clone());
            return Found::Entry(e);
        }
        let hash = self.hasher.hash_one(key);
        if g.seen.remove(&hash) {
            return Found::Missing { store: true };
        }
        if g.seen.len() >= self.half {
            g.seen.clear();
        }
        g.seen.insert(hash);
        Found::Missing { store: false }
    }

    fn insert(&self, g: &mut Generations, key: Arc<str>, e: Entry) {
        if g.young.len() >= self.half && !g.young.contains_key(&key) {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(key, e);
    }

    /// How many texts and shapes are held.
    pub fn len(&self) -> usize {
        [&self.texts, &self.shapes]
            .iter()
            .map(|m| {
                let g = lock(m);
                g.young.len() + g.old.len()
            })
            .sum()
    }

    /// Whether no text is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether every text of `sql`'s shape analyses as `a` (the analysis of `sql`) does:
/// sqlparser reads exactly the scanner's literals (the same values in the same order, no
/// other literal), and a text of the shape with other values analyses the same. Values that
/// end up in an analysis (`nextval('seq')`, `set_config('name', …)`, `COPY … PROGRAM '…'`)
/// fail the second test.
fn values_do_not_matter(sql: &str, shape: &Shape, a: &Analysis) -> bool {
    let Some(tokens) = super::normalize::tokens(sql) else { return false };
    let mut read = tokens.iter().filter(|t| is_literal(t));
    let same_literals = shape.literals.iter().all(|r| {
        let written = &sql[r.clone()];
        match read.next() {
            Some(Token::Number(n, false)) => n == written,
            Some(Token::SingleQuotedString(v)) => {
                written.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')) == Some(v.as_str())
            }
            _ => false,
        }
    });
    same_literals && read.next().is_none() && analyze(&shape::other_values(sql, shape)) == *a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Analyses `t` twice through `c` (storing it) and returns the second.
    fn stored(c: &AnalysisCache, t: &str) -> Arc<Analysis> {
        let first = c.analyze(t);
        let second = c.analyze(t);
        assert!(!Arc::ptr_eq(&first, &second), "{t}: stored at its second sighting");
        assert!(Arc::ptr_eq(&second, &c.analyze(t)), "{t}: the third call is a hit");
        second
    }

    #[test]
    fn texts_without_a_shape_are_memoised_by_exact_text() {
        let c = AnalysisCache::new(8, 256);
        let texts = [
            "SELECT * FROM items WHERE id = 1 -- one",
            "SELECT * FROM items WHERE id = 2 -- one",
            "select * from items where id = 1 -- one",
            "DELETE FROM items WHERE id = 1.5",
            "SELECT $$a$$; DELETE FROM items",
        ];
        for t in texts {
            assert_eq!(*stored(&c, t), analyze(t), "{t}");
        }
        for t in texts {
            assert_eq!(*c.analyze(t), analyze(t), "{t}");
        }
    }

    #[test]
    fn texts_of_one_shape_share_an_analysis_when_values_do_not_matter() {
        let c = AnalysisCache::new(8, 256);
        let one = stored(&c, "SELECT * FROM items WHERE id = 1 AND name = 'a'");
        let other = "SELECT * FROM items WHERE id = 123456789012345678 AND name = 'b c'";
        let hit = c.analyze(other);
        assert!(Arc::ptr_eq(&one, &hit), "another text of the shape is a hit");
        assert_eq!(*hit, analyze(other));
        // Another shape is not.
        let write = "DELETE FROM items WHERE id = 1 AND name = 'a'";
        assert_eq!(*c.analyze(write), analyze(write));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_shape_whose_values_matter_is_memoised_by_exact_text() {
        let c = AnalysisCache::new(8, 256);
        for (a, b) in [
            ("SELECT nextval('a')", "SELECT nextval('b')"),
            (
                "SELECT set_config('search_path', 'x', false)",
                "SELECT set_config('default_transaction_read_only', 'off', false)",
            ),
            ("COPY t FROM PROGRAM 'cat'", "COPY t FROM PROGRAM 'curl'"),
            ("NOTIFY x, 'a'", "SELECT pg_notify('other', 'a')"),
        ] {
            let x = stored(&c, a);
            let y = c.analyze(b);
            assert_eq!(*y, analyze(b), "{b}");
            assert_eq!(x.digest == y.digest, shape::shape(a).unwrap().key == shape::shape(b).unwrap().key);
            assert!(!Arc::ptr_eq(&x, &y), "{b}");
        }
        let (x, y) = (analyze("SELECT nextval('a')"), analyze("SELECT nextval('b')"));
        assert_ne!(x.statements, y.statements, "values can matter to the classification");
    }

    #[test]
    fn a_value_the_parser_refuses_never_shares_a_shape_with_one_it_reads() {
        // A length too large for sqlparser's u64: that text does not parse, a smaller one does.
        let c = AnalysisCache::new(8, 256);
        let small = "SELECT name::varchar(10) FROM t";
        let big = "SELECT name::varchar(99999999999999999999999) FROM t";
        assert_ne!(analyze(small).statements, analyze(big).statements);
        let s = stored(&c, small);
        for _ in 0..3 {
            assert_eq!(*c.analyze(big), analyze(big));
        }
        assert!(Arc::ptr_eq(&s, &c.analyze(small)));
    }

    #[test]
    fn memory_is_bounded_by_count_and_length() {
        let c = AnalysisCache::new(4, 64);
        for i in 0..100 {
            let t = format!("SELECT {i} -- n");
            c.analyze(&t);
            c.analyze(&t);
            assert!(c.len() <= 8 && lock(&c.texts).seen.len() <= 4, "{} entries", c.len());
        }
        for i in 0..100 {
            let t = format!("SELECT {i} FROM t{i}");
            c.analyze(&t);
            c.analyze(&t);
            assert!(c.len() <= 16 && lock(&c.shapes).seen.len() <= 4, "{} entries", c.len());
        }
        // The most recent texts are still there.
        let recent = c.analyze("SELECT 99 -- n");
        assert!(Arc::ptr_eq(&recent, &c.analyze("SELECT 99 -- n")));
        // Texts seen once are not stored and evict nothing.
        for i in 0..100 {
            c.analyze(&format!("SELECT 'once' -- {i}"));
        }
        assert!(Arc::ptr_eq(&recent, &c.analyze("SELECT 99 -- n")));
        let long = format!("SELECT '{}'", "x".repeat(100));
        let before = c.len();
        let (a, b, d) = (c.analyze(&long), c.analyze(&long), c.analyze(&long));
        assert!(!Arc::ptr_eq(&b, &d), "texts over the limit are not kept");
        assert_eq!((*a == *d, c.len()), (true, before));
        let none = AnalysisCache::new(0, 64);
        none.analyze("SELECT 1");
        none.analyze("SELECT 1");
        assert!(none.is_empty());
    }

    #[test]
    fn an_old_entry_hit_moves_back_to_the_young_generation() {
        let c = AnalysisCache::new(2, 64);
        let twice = |t: &str| {
            c.analyze(t);
            c.analyze(t)
        };
        let keep = twice("SELECT 'keep' -- k");
        twice("SELECT 1 -- k");
        twice("SELECT 2 -- k"); // retires {keep, 1}
        assert!(Arc::ptr_eq(&keep, &c.analyze("SELECT 'keep' -- k")), "found in the old generation");
        twice("SELECT 3 -- k"); // retires {2, keep}
        twice("SELECT 4 -- k");
        assert!(Arc::ptr_eq(&keep, &c.analyze("SELECT 'keep' -- k")));
    }
}
