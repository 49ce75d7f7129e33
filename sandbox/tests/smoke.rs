//! Smoke test: a sandboxed `true`-like script runs and returns its exit code.
mod common;

#[test]
fn exit_code_propagates() {
    if !common::privileged("exit_code_propagates") {
        return;
    }
    let state = common::StateDir::new();
    let out = common::run(common::sh("echo hello; exit 7", &state));
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.stdout, "hello\n");
}
