//! The analysis memo never changes an analysis: every corpus statement, and texts made from it
//! by writing other values into its literals (values chosen to matter where a classifier might
//! read them: setting names, sequence names, paths, numbers too large for the parser), analyse
//! through a warm [`AnalysisCache`] exactly as they do fresh.

mod common;

use common::corpus;
use std::sync::Arc;

use dbproxy::classify::{AnalysisCache, analyze};

const NUMBERS: &[&str] = &["0", "7", "42", "99999999999999999999999999"];
const STRINGS: &[&str] = &[
    "",
    "x y",
    "é",
    "default_transaction_read_only",
    "off",
    "public.users",
    "/etc/passwd",
    "rm -rf /",
    "app.seq",
];

/// `sql` with the `k`-th choice of value written into every digit run that starts a word and
/// into every `'…'` without quotes or backslashes inside (a crude reading: whatever it makes,
/// the memo must answer as a fresh analysis does).
fn with_values(sql: &str, k: usize) -> String {
    let b = sql.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let prev_word = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$');
        if b[i].is_ascii_digit() && !prev_word {
            let n = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            out.push_str(NUMBERS[k % NUMBERS.len()]);
            i += n;
        } else if b[i] == b'\'' {
            match b[i + 1..].iter().position(|&c| c == b'\'' || c == b'\\') {
                Some(n) if b[i + 1 + n] == b'\'' => {
                    out.push('\'');
                    out.push_str(STRINGS[k % STRINGS.len()]);
                    out.push('\'');
                    i += n + 2;
                }
                _ => {
                    out.push_str(&sql[i..]);
                    break;
                }
            }
        } else {
            let c = sql[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[test]
fn a_warm_memo_answers_as_a_fresh_analysis() {
    let cases = corpus::load();
    let cache = AnalysisCache::default();
    let (mut variants, mut shared) = (0, 0);
    for c in &cases {
        // Twice, so the text (or its shape) is stored.
        assert_eq!(*cache.analyze(&c.sql), analyze(&c.sql), "{}", c.sql);
        let stored = cache.analyze(&c.sql);
        assert_eq!(*stored, analyze(&c.sql), "{}", c.sql);
        for k in 0..NUMBERS.len() * STRINGS.len() {
            let v = with_values(&c.sql, k);
            let got = cache.analyze(&v);
            if v != c.sql {
                variants += 1;
                shared += usize::from(Arc::ptr_eq(&got, &stored));
            }
            assert_eq!(*got, analyze(&v), "{} (from {})", v, c.sql);
        }
    }
    assert!(variants > 1000, "{variants} variants");
    // The memo by shape is exercised: many variants were answered with the original's entry.
    assert!(shared > 300, "{shared} of {variants} variants shared an entry");
    // A second pass over a cache holding every shape and text.
    for c in &cases {
        for k in 0..NUMBERS.len() * STRINGS.len() {
            let v = with_values(&c.sql, k + 1);
            assert_eq!(*cache.analyze(&v), analyze(&v), "{} (from {})", v, c.sql);
        }
    }
}
