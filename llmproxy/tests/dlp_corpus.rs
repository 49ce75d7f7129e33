//! The visible DLP corpus (`testdata/dlp_corpus.jsonl`): one case per line, the text and the
//! matches expected per detector (`{}` for text that must pass untouched). Every true case must
//! be found with exactly its expected counts (full recall, nothing extra) and every false case
//! must produce no finding, both as plain text and as a chat message inside a JSON body, where
//! each finding must name the field. A per-detector table is printed (`--nocapture`).

use std::collections::BTreeMap;

use llmproxy::dlp::{Engine, scan_json};
use serde_json::{Value, json};

struct Case {
    line: usize,
    text: String,
    expect: BTreeMap<String, usize>,
}

fn corpus() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/dlp_corpus.jsonl");
    let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    raw.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1));
            let text = v["text"].as_str().unwrap_or_else(|| panic!("{path}:{}: no text", i + 1)).to_string();
            let expect = v["expect"]
                .as_object()
                .unwrap_or_else(|| panic!("{path}:{}: no expect object", i + 1))
                .iter()
                .map(|(k, n)| (k.clone(), n.as_u64().expect("count") as usize))
                .collect();
            Case { line: i + 1, text, expect }
        })
        .collect()
}

/// Matches per detector name in plain text.
fn counts(engine: &Engine, text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in engine.find(text) {
        *out.entry(engine.detectors()[m.detector].name.clone()).or_default() += 1;
    }
    out
}

#[derive(Default)]
struct Row {
    true_cases: usize,
    expected: usize,
    found: usize,
    false_positives: usize,
}

#[test]
fn corpus_has_full_recall_and_no_false_positives() {
    let engine = Engine::builtin();
    let cases = corpus();
    let mut table: BTreeMap<String, Row> =
        engine.detectors().iter().map(|d| (d.name.clone(), Row::default())).collect();
    let mut failures = Vec::new();
    let mut false_cases = 0;
    for case in &cases {
        let got = counts(&engine, &case.text);
        if case.expect.is_empty() {
            false_cases += 1;
        }
        for (det, &n) in &case.expect {
            let row =
                table.get_mut(det).unwrap_or_else(|| panic!("line {}: unknown detector {det}", case.line));
            row.true_cases += 1;
            row.expected += n;
            row.found += got.get(det).copied().unwrap_or(0).min(n);
        }
        for (det, &n) in &got {
            let extra = n.saturating_sub(case.expect.get(det).copied().unwrap_or(0));
            if let Some(row) = table.get_mut(det) {
                row.false_positives += extra;
            }
        }
        if got != case.expect {
            failures.push(format!("line {}: expected {:?}, found {:?}", case.line, case.expect, got));
        }
        // The same text as a chat message: same counts, each finding at the message's field.
        let body =
            serde_json::to_vec(&json!({"model": "m", "messages": [{"role": "user", "content": case.text}]}))
                .expect("encode");
        let o = scan_json(&body, &engine).expect("valid JSON");
        let mut in_json = BTreeMap::new();
        for f in &o.findings {
            assert_eq!(f.path, "messages[0].content", "line {}", case.line);
            *in_json.entry(f.detector.clone()).or_insert(0) += f.count;
        }
        if in_json != case.expect {
            failures
                .push(format!("line {} in JSON: expected {:?}, found {:?}", case.line, case.expect, in_json));
        }
    }
    println!(
        "{:<16} {:>6} {:>9} {:>6} {:>7} {:>4}",
        "detector", "cases", "expected", "found", "recall", "fp"
    );
    for (det, r) in &table {
        let recall = if r.expected == 0 {
            "-".to_string()
        } else {
            format!("{:.0}%", 100.0 * r.found as f64 / r.expected as f64)
        };
        println!(
            "{det:<16} {:>6} {:>9} {:>6} {recall:>7} {:>4}",
            r.true_cases, r.expected, r.found, r.false_positives
        );
    }
    println!("{} cases, {} with nothing to find", cases.len(), false_cases);
    let untested: Vec<_> = table.iter().filter(|(_, r)| r.true_cases == 0).map(|(d, _)| d.as_str()).collect();
    assert!(untested.is_empty(), "built-in detectors without a true case: {untested:?}");
    assert!(false_cases >= 20, "the corpus needs its false cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
