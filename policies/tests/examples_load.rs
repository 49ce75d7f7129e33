//! Every file in `examples/` loads: `server-config*.yaml` as a server config, the rest as policies.

use std::{fs, path::PathBuf};

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_loads() {
    let files = examples();
    assert!(files.len() >= 2, "examples missing: {files:?}");
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("server-config") {
            policies::config::load_server_config(&text, &name).unwrap_or_else(|e| panic!("{e}"));
        } else {
            policies::load_policy(&text, &name).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
