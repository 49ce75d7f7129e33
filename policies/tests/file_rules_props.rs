//! Property test: `FileRules::decide` agrees with a naive reference that turns each glob into a
//! regular expression and scans the rules in order.

use std::path::Path;

use policies::{
    engine::file::{DEFAULT_ALLOW_WORKSPACE, DEFAULT_DENY_FILE, FileOp, FileRules, FileVerdict, Subtree},
    model::file::FileRule,
};
use proptest::prelude::*;

const WS: &str = "/ws";
const SEGS: &[&str] = &["ws", "a", "b", ".ssh", "x.rs"];
const PAT_SEGS: &[&str] = &["ws", "a", "b", ".ssh", "x.rs", "*", "**", "?", "*.rs", "${WORKSPACE}", "~"];
const OPS: &[&str] = &["read", "write", "create", "delete", "exec", "*"];
const DECISIONS: &[&str] = &["allow", "deny", "audit", "soft_delete"];

/// A glob as a regex, written from the documented semantics: `**` any number of segments,
/// `*` and `?` inside one segment.
fn glob_regex(glob: &str) -> regex::Regex {
    let expanded = glob.replace("${WORKSPACE}", WS).replace('~', "/home/u");
    let mut re = String::from("^");
    for seg in expanded.split('/').filter(|s| !s.is_empty()) {
        if seg == "**" {
            re.push_str("(/[^/]+)*");
            continue;
        }
        re.push('/');
        for c in seg.chars() {
            match c {
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
    }
    re.push('$');
    regex::Regex::new(&re).unwrap()
}

fn covers(rule_op: &str, op: FileOp) -> bool {
    match rule_op {
        "*" => true,
        "read" => matches!(op, FileOp::Read | FileOp::Stat | FileOp::List | FileOp::Readlink),
        "write" => matches!(op, FileOp::Write | FileOp::Chmod | FileOp::Chown),
        "create" => matches!(
            op,
            FileOp::Create
                | FileOp::Mkdir
                | FileOp::Symlink
                | FileOp::Link
                | FileOp::Mknod
                | FileOp::RenameTo
        ),
        "delete" => matches!(op, FileOp::Delete | FileOp::Rmdir | FileOp::RenameFrom),
        "exec" => op == FileOp::Exec,
        _ => unreachable!(),
    }
}

fn reference(rules: &[(Vec<String>, Vec<&str>, &str)], path: &str, op: FileOp) -> (FileVerdict, String) {
    // The root is the empty sequence of segments.
    let text = if path == "/" { String::new() } else { path.to_string() };
    for (i, (globs, ops, decision)) in rules.iter().enumerate() {
        let op_ok = ops.is_empty() || ops.iter().any(|o| covers(o, op));
        let path_ok = globs.is_empty() || globs.iter().any(|g| glob_regex(g).is_match(&text));
        if op_ok && path_ok {
            let verdict = match *decision {
                "allow" => FileVerdict::Allow,
                "deny" => FileVerdict::Deny,
                "audit" => FileVerdict::Audit,
                _ if op == FileOp::Delete => FileVerdict::SoftDelete,
                _ => FileVerdict::Allow,
            };
            return (verdict, format!("r{i}"));
        }
    }
    if path == WS || path.starts_with("/ws/") {
        (FileVerdict::Allow, DEFAULT_ALLOW_WORKSPACE.into())
    } else {
        (FileVerdict::Deny, DEFAULT_DENY_FILE.into())
    }
}

fn glob() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PAT_SEGS), 1..5).prop_map(|segs| {
        let mut g = String::new();
        for (i, s) in segs.iter().enumerate() {
            // `~` and `${VAR}` only expand at the start.
            let s = if (*s == "~" || s.starts_with("${")) && i > 0 { "a" } else { s };
            if !(i == 0 && s == "~") {
                g.push('/');
            }
            g.push_str(s);
        }
        g
    })
}

type RuleSpec = (Vec<String>, Vec<&'static str>, &'static str);

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    (
        prop::collection::vec(glob(), 0..3),
        prop::collection::vec(prop::sample::select(OPS), 0..3),
        prop::sample::select(DECISIONS),
    )
}

fn to_rules(specs: &[RuleSpec]) -> Vec<FileRule> {
    specs
        .iter()
        .enumerate()
        .map(|(i, (globs, ops, decision))| {
            let yaml = format!(
                "{{name: r{i}, paths: [{}], operations: [{}], decision: {decision}}}",
                globs.iter().map(|g| format!("'{g}'")).collect::<Vec<_>>().join(", "),
                ops.iter().map(|o| format!("'{o}'")).collect::<Vec<_>>().join(", "),
            );
            serde_norway::from_str(&yaml).expect("generated rule parses")
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decide_matches_reference(
        specs in prop::collection::vec(rule_spec(), 0..6),
        segs in prop::collection::vec(prop::sample::select(SEGS), 0..5),
        op in prop::sample::select(&FileOp::ALL[..]),
    ) {
        let rules = to_rules(&specs);
        let compiled = FileRules::new(&rules, Path::new(WS), &|n| (n == "HOME").then(|| "/home/u".into()));
        let path = format!("/{}", segs.join("/"));
        let got = compiled.decide(Path::new(&path), op);
        let want = reference(&specs, &path, op);
        prop_assert_eq!((got.verdict, got.rule.to_string()), want, "{} {:?}", path, op);
    }

    #[test]
    fn subtree_judgement_is_sound(
        specs in prop::collection::vec(rule_spec(), 0..6),
        root in prop::collection::vec(prop::sample::select(SEGS), 0..3),
        below in prop::collection::vec(prop::sample::select(SEGS), 0..3),
        op in prop::sample::select(&FileOp::ALL[..]),
    ) {
        let rules = to_rules(&specs);
        let compiled = FileRules::new(&rules, Path::new(WS), &|n| (n == "HOME").then(|| "/home/u".into()));
        let root = format!("/{}", root.join("/"));
        let path = Path::new(&root).join(below.join("/"));
        let got = compiled.decide(&path, op);
        // A tree denied whole denies every path below it; a clear one has no explicit deny there.
        if let Some(rule) = compiled.denies_subtree(Path::new(&root), op) {
            prop_assert_eq!(got.verdict, FileVerdict::Deny, "{} under {} ({})", path.display(), root, rule);
        }
        if compiled.subtree(Path::new(&root), op) == Subtree::Clear {
            let default = got.rule == DEFAULT_DENY_FILE || got.rule == DEFAULT_ALLOW_WORKSPACE;
            prop_assert!(got.verdict != FileVerdict::Deny || default, "{} under {} ({})", path.display(), root, got.rule);
        }
    }
}
