//! `files.fuse_workspace`: the sandbox sees its workspace through the FUSE layer, which applies
//! `file_rules` per operation (EACCES, audited), soft-deletes into the session's trash
//! (`agentsh session trash` lists and restores), and is a workspace real tools build in.

mod common;

use common::{Daemon, TempDir, dns::FakeDns};

#[test]
fn the_workspace_applies_file_rules_soft_deletes_and_builds() {
    if !common::privileged("the_workspace_applies_file_rules_soft_deletes_and_builds") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&format!(
        "{}files:\n  fuse_workspace: true\n",
        dns.server_config("synthetic")
    ));
    let ws = TempDir::new("ws");
    ws.write("notes.txt", "keep me");
    std::fs::create_dir_all(ws.path().join("secrets")).unwrap();
    ws.write("secrets/key.txt", "top secret");
    let s = d.session_in(
        ws,
        "version: 1\nname: fuse\nfile_rules:\n\
         \x20 - {name: no-secrets, paths: ['${WORKSPACE}/secrets/**'], operations: ['*'], decision: deny}\n\
         \x20 - {name: keep-deletes, paths: ['${WORKSPACE}/**'], operations: [delete], decision: soft_delete}\n",
    );
    let r = d.exec(
        &s,
        &["sh", "-c", "cat secrets/key.txt 2>/dev/null || echo refused; cat notes.txt; echo; rm notes.txt && echo removed"],
    );
    r.assert_exit(0);
    assert!(
        r.stdout.contains("refused") && r.stdout.contains("keep me") && r.stdout.contains("removed"),
        "{r:#?}"
    );
    assert!(!r.stdout.contains("top secret"));
    assert!(!s.workspace.path().join("notes.txt").exists(), "the delete went through to the backing dir");
    let denied = r.of("file_open").into_iter().find(|e| e.decision() == "deny").expect("a denied open event");
    assert_eq!(denied.rule(), "no-secrets");
    let deleted = r.of("file_delete");
    assert!(deleted.iter().any(|e| e.decision() == "soft_delete"), "{deleted:#?}");

    let list: serde_json::Value =
        serde_json::from_slice(&d.cli(&["session", "trash", &s.id, "--json"]).stdout).unwrap();
    let entry = list.as_array().unwrap().iter().find(|e| e["path"] == "notes.txt").expect("in the trash");
    let id = entry["id"].as_str().unwrap().to_string();
    let out = d.cli(&["session", "trash", &s.id, "--restore", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(s.workspace.path().join("notes.txt")).unwrap(), "keep me");

    let r = d.exec(
        &s,
        &["sh", "-c", "printf 'int main(void){return 0;}\\n' > a.c && cc a.c -o a && ./a && echo built"],
    );
    r.assert_exit(0);
    assert!(r.stdout.contains("built"), "{r:#?}");
    assert!(s.workspace.path().join("a").exists());
}
