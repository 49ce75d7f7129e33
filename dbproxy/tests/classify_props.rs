//! Classification is total: no input panics or overflows the stack, and what cannot be
//! understood is `unknown` (so policy fails closed).

use dbproxy::{classify, classify::MAX_SQL_BYTES};
use policies::model::db_ops::OperationGroup;
use proptest::prelude::*;

/// Runs `f` on a thread with a 2 MiB stack, the size of a tokio worker's.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(2 << 20).spawn(f).expect("spawn").join().expect("no panic")
}

fn is_unknown(sql: &str, subtype: &str) -> bool {
    let e = classify(sql);
    e.len() == 1 && e[0].group == OperationGroup::Unknown && e[0].subtype.as_deref() == Some(subtype)
}

#[test]
fn oversized_and_overlong_inputs_fail_closed() {
    let big = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
    assert!(is_unknown(&big, "too_large"));
    let chain = format!("SELECT {}1", "1+".repeat(20_000));
    assert!(is_unknown(&chain, "too_complex"));
    assert!(is_unknown("SELECT 'unterminated", "tokenize_error"));
}

#[test]
fn deep_inputs_within_limits_do_not_overflow_a_worker_stack() {
    on_small_stack(|| {
        // Left-deep chains are built without recursion but walked and dropped recursively.
        for op in ["+", "||", " AND ", " OR ", "*"] {
            let sql = format!("SELECT {}1 FROM t", format!("1{op}").repeat(9_000));
            let _ = classify(&sql);
        }
        let nested = format!("SELECT {}1{}", "(".repeat(5_000), ")".repeat(5_000));
        assert!(is_unknown(&nested, "parse_error"));
        let subq = format!("SELECT * FROM {}t{}", "(SELECT * FROM ".repeat(200), ") x".repeat(200));
        assert!(is_unknown(&subq, "parse_error"));
    });
}

#[test]
fn empty_and_blank_texts_have_no_effects() {
    assert!(classify("").is_empty());
    assert!(classify(" ;; -- just a comment\n ; /* and */ ").is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn never_panics_on_arbitrary_text(s in ".{0,300}") {
        let _ = classify(&s);
    }

    #[test]
    fn never_panics_on_sql_shaped_text(parts in proptest::collection::vec(prop_oneof![
        Just("SELECT"), Just("FROM"), Just("WHERE"), Just("users"), Just("("), Just(")"), Just(";"),
        Just("'"), Just("$$"), Just("/*"), Just("*/"), Just("--"), Just("\n"), Just(","), Just("1"),
        Just("DELETE"), Just("WITH"), Just("AS"), Just("COPY"), Just("TO"), Just("STDOUT"), Just("+"),
        Just("pg_read_file"), Just("E'\\''"), Just("\""), Just("INSERT INTO"), Just("VALUES"),
    ], 0..40)) {
        let sql = parts.join(" ");
        let effects = on_small_stack(move || classify(&sql));
        for e in effects {
            prop_assert!(e.group != OperationGroup::Unknown || e.subtype.is_some());
        }
    }
}
