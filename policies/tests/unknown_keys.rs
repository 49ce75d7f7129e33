//! For every example, add an unknown key to each mapping in turn and expect exactly one error,
//! naming that key at its exact line and column (hickory-dns style strictness test).

use std::{fs, path::PathBuf};

use serde_norway::Value;

/// Mappings whose keys are user-chosen names with string values: an extra key is legal there.
const FREE_FORM: &[&str] = &["metadata", "environment"];

const KEY: &str = "zz_unknown_key";

fn load(name: &str, text: &str) -> Result<(), policies::LoadErrors> {
    if name.starts_with("server-config") {
        policies::config::load_server_config(text, name).map(|_| ())
    } else {
        policies::load_policy(text, name).map(|_| ())
    }
}

/// Paths (as child-index lists) of every mapping in `v`, with the key that holds each one.
fn mappings(
    v: &Value,
    here: &mut Vec<usize>,
    holder: Option<String>,
    out: &mut Vec<(Vec<usize>, Option<String>)>,
) {
    match v {
        Value::Mapping(m) => {
            out.push((here.clone(), holder));
            for (i, (k, child)) in m.iter().enumerate() {
                here.push(i);
                mappings(child, here, k.as_str().map(str::to_string), out);
                here.pop();
            }
        }
        Value::Sequence(s) => {
            for (i, child) in s.iter().enumerate() {
                here.push(i);
                mappings(child, here, holder.clone(), out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'v>(v: &'v mut Value, path: &[usize]) -> &'v mut Value {
    match path.split_first() {
        None => v,
        Some((i, rest)) => match v {
            Value::Mapping(m) => node_mut(m.values_mut().nth(*i).unwrap(), rest),
            Value::Sequence(s) => node_mut(&mut s[*i], rest),
            _ => unreachable!(),
        },
    }
}

#[test]
fn an_unknown_key_in_any_mapping_is_reported_at_its_line() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let doc: Value = serde_norway::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let roundtrip = serde_norway::to_string(&doc).unwrap();
        load(&name, &roundtrip).unwrap_or_else(|e| panic!("{name} does not survive re-serialisation:\n{e}"));

        let mut found = Vec::new();
        mappings(&doc, &mut Vec::new(), None, &mut found);
        for (at, holder) in found {
            if holder.as_deref().is_some_and(|h| FREE_FORM.contains(&h)) {
                continue;
            }
            let mut doc = doc.clone();
            let Value::Mapping(m) = node_mut(&mut doc, &at) else { unreachable!() };
            m.insert(Value::from(KEY), Value::from(1));
            let text = serde_norway::to_string(&doc).unwrap();
            let (line, column) =
                text.lines().enumerate().find_map(|(i, l)| l.find(KEY).map(|c| (i + 1, c + 1))).unwrap();
            let errs = load(&name, &text).expect_err(&format!("{name}: key at {line} accepted:\n{text}"));
            assert_eq!(errs.len(), 1, "{name}:\n{errs}\n{text}");
            let e = &errs.0[0];
            assert!(e.key.ends_with(KEY), "{name}: {e}");
            assert_eq!((e.line, e.column), (line, column), "{name}: {e}\n{text}");
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} mappings checked");
}
