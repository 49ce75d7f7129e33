//! A bounded memo of [`analyze`]: clients repeat statement text (an ORM's queries, `BEGIN`,
//! an unnamed Parse sent again for every run), and sqlparser is most of what a statement
//! costs the proxy.
//!
//! Only the classification is kept, never a decision: [`Analysis`] is a pure function of the
//! text, the key is the whole text (compared in full on lookup, so two texts never share an
//! entry), and the rules in force and the session's prepared statements are applied to it
//! afterwards as for a fresh one. A hit therefore decides exactly as a miss would.
//!
//! Memory is bounded by entry count and text length: two generations of at most `half`
//! entries each; an insert into a full young generation retires the old one whole, and a hit
//! in the old generation moves the entry back to the young one (an approximate LRU at O(1)
//! per call, no per-entry bookkeeping). Texts over `max_text` bytes are analysed every time.
//! A text is stored the second time it is seen within the last `half` new texts (a set of
//! hashes remembers the first sighting), so a stream of texts that never repeat (literals
//! inlined by the client) costs no stores and evicts nothing; a hash collision there only
//! stores a text early.

use std::{
    collections::{HashMap, HashSet, hash_map::RandomState},
    hash::BuildHasher,
    sync::{Arc, Mutex},
};

use super::{Analysis, analyze};

/// Entries per generation of [`AnalysisCache::default`].
pub const DEFAULT_GENERATION: usize = 1024;
/// The longest text [`AnalysisCache::default`] keeps.
pub const DEFAULT_MAX_TEXT: usize = 4 * 1024;

type Generation = HashMap<Arc<str>, Arc<Analysis>>;

#[derive(Default)]
struct Generations {
    young: Generation,
    old: Generation,
    /// Hashes of texts seen once and not stored (cleared when it reaches `half`).
    seen: HashSet<u64>,
}

/// A bounded, thread-safe memo of [`analyze`] keyed by the exact text.
pub struct AnalysisCache {
    gens: Mutex<Generations>,
    half: usize,
    max_text: usize,
    hasher: RandomState,
}

impl Default for AnalysisCache {
    fn default() -> Self {
        AnalysisCache::new(DEFAULT_GENERATION, DEFAULT_MAX_TEXT)
    }
}

impl AnalysisCache {
    /// A cache of at most `2 * half` texts of at most `max_text` bytes each (`half == 0`
    /// keeps nothing).
    pub fn new(half: usize, max_text: usize) -> AnalysisCache {
        AnalysisCache { gens: Mutex::new(Generations::default()), half, max_text, hasher: RandomState::new() }
    }

    fn gens(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.gens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`analyze`]`(sql)`, from the cache when the same text was analysed recently.
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        if self.half == 0 || sql.len() > self.max_text {
            return Arc::new(analyze(sql));
        }
        let hash = self.hasher.hash_one(sql);
        {
            let mut g = self.gens();
            if let Some(a) = g.young.get(sql) {
                return a.clone();
            }
            if let Some((text, a)) = g.old.remove_entry(sql) {
                self.insert(&mut g, text, a.clone());
                return a;
            }
            if !g.seen.remove(&hash) {
                if g.seen.len() >= self.half {
                    g.seen.clear();
                }
                g.seen.insert(hash);
                drop(g);
                return Arc::new(analyze(sql));
            }
        }
        // Analysed outside the lock: other sessions go on meanwhile. A text analysed twice
        // at once is stored twice; both analyses are the same.
        let a = Arc::new(analyze(sql));
        self.insert(&mut self.gens(), sql.into(), a.clone());
        a
    }

    fn insert(&self, g: &mut Generations, text: Arc<str>, a: Arc<Analysis>) {
        if g.young.len() >= self.half && !g.young.contains_key(&text) {
            g.old = std::mem::take(&mut g.young);
        }
        g.young.insert(text, a);
    }

    /// How many texts are held.
    pub fn len(&self) -> usize {
        let g = self.gens();
        g.young.len() + g.old.len()
    }

    /// Whether no text is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_is_the_same_analysis_and_texts_never_share_an_entry() {
        let c = AnalysisCache::new(8, 256);
        let texts = [
            "SELECT * FROM items WHERE id = 1",
            "SELECT * FROM items WHERE id = 2",
            "select * from items where id = 1",
            "SELECT * FROM items WHERE id = 1 ",
            "DELETE FROM items WHERE id = 1",
            "DELETE FROM items",
            "SELECT 'a'; DELETE FROM items",
        ];
        for t in texts {
            let first = c.analyze(t);
            assert_eq!(*first, analyze(t), "{t}");
            let stored = c.analyze(t);
            assert!(!Arc::ptr_eq(&first, &stored), "{t}: stored at its second sighting");
            let again = c.analyze(t);
            assert!(Arc::ptr_eq(&stored, &again), "{t}: the third call is a hit");
        }
        for t in texts {
            assert_eq!(*c.analyze(t), analyze(t), "{t}");
        }
        // Same digest, different effects: the key is the text, not its normal form.
        let (x, y) = (c.analyze("SELECT nextval('a')"), c.analyze("SELECT nextval('b')"));
        assert_eq!(x.digest, y.digest);
        assert_ne!(x.statements, y.statements, "literals can matter to the classification");
    }

    #[test]
    fn memory_is_bounded_by_count_and_length() {
        let c = AnalysisCache::new(4, 64);
        for i in 0..100 {
            let t = format!("SELECT {i}");
            c.analyze(&t);
            c.analyze(&t);
            assert!(c.len() <= 8 && c.gens().seen.len() <= 4, "{} entries", c.len());
        }
        // The most recent texts are still there.
        let recent = c.analyze("SELECT 99");
        assert!(Arc::ptr_eq(&recent, &c.analyze("SELECT 99")));
        // Texts seen once are not stored and evict nothing.
        for i in 0..100 {
            c.analyze(&format!("SELECT 'once {i}'"));
        }
        assert!(Arc::ptr_eq(&recent, &c.analyze("SELECT 99")));
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
        let keep = twice("SELECT 'keep'");
        twice("SELECT 1");
        twice("SELECT 2"); // retires {keep, 1}
        assert!(Arc::ptr_eq(&keep, &c.analyze("SELECT 'keep'")), "found in the old generation");
        twice("SELECT 3"); // retires {2, keep}
        twice("SELECT 4");
        assert!(Arc::ptr_eq(&keep, &c.analyze("SELECT 'keep'")));
    }
}
