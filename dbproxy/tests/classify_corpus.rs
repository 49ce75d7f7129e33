//! The classification corpus: every statement in `testdata/classify_corpus.sql` classifies to
//! exactly the effects written above it. `BLESS=1` prints the actual renderings instead.

mod common;

use common::corpus;

#[test]
fn corpus_matches() {
    let cases = corpus::load();
    assert!(cases.len() >= 60, "corpus has {} statements", cases.len());
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for c in &cases {
        let got = corpus::render(&dbproxy::classify(&c.sql));
        if bless {
            println!("-- expect: {got}\n{}\n====", c.sql);
        } else if got != c.expect {
            failures.push(format!("{}\n  expected: {}\n  got:      {got}", c.sql, c.expect));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
