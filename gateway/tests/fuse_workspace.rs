//! `files.fuse_workspace`: the sandbox sees its workspace through the FUSE layer, which applies
//! `file_rules` per operation (EACCES, audited), soft-deletes into the session's trash
//! (`agentsh session trash` lists and restores), and is a workspace real tools build in.

mod common;

use common::{Daemon, Session, TempDir, dns::FakeDns};

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
    // The trash is kept in the session's data dir, out of the sandbox's view of its state dir.
    let r =
        d.exec(&s, &["sh", "-c", "ls -A /run/agentsh; grep -rs 'keep me' /run/agentsh || echo not-found"]);
    assert!(!r.stdout.lines().any(|l| l == "trash") && r.stdout.contains("not-found"), "{r:#?}");

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

/// A policy denying `secrets/` of the workspace.
const SECRETS_RULE: &str = "version: 1\nname: fuse\nfile_rules:\n\
    \x20 - {name: no-secrets, paths: ['${WORKSPACE}/secrets/**'], operations: ['*'], decision: deny}\n";

/// A workspace with `secrets/key.txt`.
fn workspace_with_secret() -> TempDir {
    let ws = TempDir::new("ws");
    std::fs::create_dir_all(ws.path().join("secrets")).unwrap();
    ws.write("secrets/key.txt", "top secret");
    ws
}

/// `session show`'s FUSE line and `--json` field.
fn fuse_shown(d: &Daemon, id: &str) -> (String, String) {
    let human = String::from_utf8_lossy(&d.cli(&["session", "show", id]).stdout).into_owned();
    let line = human.lines().find(|l| l.starts_with("fuse:")).unwrap_or_default().to_string();
    let json: serde_json::Value =
        serde_json::from_slice(&d.cli(&["session", "show", id, "--json"]).stdout).unwrap();
    (line, json["fuse_workspace"].as_str().unwrap_or_default().to_string())
}

#[test]
fn by_default_a_session_whose_rules_reach_into_the_workspace_gets_the_fuse_layer() {
    if !common::privileged("by_default_a_session_whose_rules_reach_into_the_workspace_gets_the_fuse_layer") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&dns.server_config("synthetic"));
    let s = d.session_in(workspace_with_secret(), SECRETS_RULE);
    let r = d.exec(&s, &["sh", "-c", "cat secrets/key.txt || echo refused"]);
    r.assert_exit(0);
    assert!(r.stdout.contains("refused") && !r.stdout.contains("top secret"), "{r:#?}");
    assert!(r.of("file_open").iter().any(|e| e.rule() == "no-secrets"), "{r:#?}");
    let (line, json) = fuse_shown(&d, &s.id);
    assert_eq!(line, "fuse:       on (rule no-secrets applies inside the workspace)");
    assert_eq!(json, "on (rule no-secrets applies inside the workspace)");
    let created = d.audit().into_iter().find(|e| e.kind == "session_created").expect("session_created");
    assert_eq!(created.str("fuse_workspace"), json);

    // A policy with no rule inside the workspace is served directly (no FUSE cost).
    let plain = d.session(policies::embedded::source("default").unwrap());
    assert_eq!(fuse_shown(&d, &plain.id).1, "off (no rule applies inside the workspace)");
}

#[test]
fn with_the_fuse_layer_off_rules_inside_the_workspace_are_reported_unapplied() {
    if !common::privileged("with_the_fuse_layer_off_rules_inside_the_workspace_are_reported_unapplied") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&format!(
        "{}files:\n  fuse_workspace: off\n",
        dns.server_config("synthetic")
    ));
    let s = d.session_in(workspace_with_secret(), SECRETS_RULE);
    let (line, _) = fuse_shown(&d, &s.id);
    assert!(line.contains("off (files.fuse_workspace: off; rule no-secrets"), "{line}");
    assert!(line.contains("not applied"), "{line}");
    assert!(
        d.log().contains("rule no-secrets and any other inside the workspace not applied"),
        "{}",
        d.log()
    );
}

#[test]
fn home_in_the_rules_is_the_session_owners_not_the_daemons() {
    if !common::privileged("home_in_the_rules_is_the_session_owners_not_the_daemons") {
        return;
    }
    // The owner (this test, root) has its home in the user database; the daemon's own HOME
    // points elsewhere. A rule on `${HOME}/…` inside a workspace under the owner's home must
    // bring the FUSE layer and apply there.
    let owner_home = std::path::Path::new("/root");
    let ws = TempDir::under(owner_home, "home-ws");
    std::fs::create_dir_all(ws.path().join("keys")).unwrap();
    ws.write("keys/id", "KEY MATERIAL");
    let name = ws.path().file_name().unwrap().to_str().unwrap().to_string();
    let dns = FakeDns::start();
    let d = Daemon::start_with_config_env(&dns.server_config("synthetic"), &[("HOME", "/nonexistent")]);
    let policy = format!(
        "version: 1\nname: home\nfile_rules:\n\
         \x20 - {{name: no-keys, paths: ['${{HOME}}/{name}/keys/**'], operations: ['*'], decision: deny}}\n"
    );
    let s = d.session_in(ws, &policy);
    assert_eq!(fuse_shown(&d, &s.id).1, "on (rule no-keys applies inside the workspace)");
    let r = d.exec(&s, &["sh", "-c", "cat keys/id || echo refused"]);
    assert!(r.stdout.contains("refused") && !r.stdout.contains("KEY MATERIAL"), "{r:#?}");
}

#[test]
fn unix_sockets_in_the_workspace_are_reached_whoever_bound_them() {
    if !common::privileged("unix_sockets_in_the_workspace_are_reached_whoever_bound_them") {
        return;
    }
    use std::io::Write;
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&format!(
        "{}files:\n  fuse_workspace: on\n",
        dns.server_config("synthetic")
    ));
    let ws = TempDir::new("ws");
    // A server on the host side, listening in the workspace directory.
    let host = std::os::unix::net::UnixListener::bind(ws.path().join("host.sock")).unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, _) = host.accept().unwrap();
        c.write_all(b"from-host").unwrap();
    });
    let s = d.session_in(ws, "version: 1\nname: socks\n");
    let py = "import socket, threading
def get(path):
    c = socket.socket(socket.AF_UNIX); c.connect(path); return c.recv(64).decode()
print(get('host.sock'))
srv = socket.socket(socket.AF_UNIX); srv.bind('inside.sock'); srv.listen(1)
threading.Thread(target=lambda: srv.accept()[0].sendall(b'from-inside')).start()
print(get('inside.sock'))";
    let r = d.exec(&s, &["python3", "-c", py]);
    r.assert_exit(0);
    assert_eq!(r.stdout, "from-host\nfrom-inside\n", "{r:#?}");
    server.join().unwrap();
}

#[test]
fn rule_variables_come_from_the_creators_environment() {
    if !common::privileged("rule_variables_come_from_the_creators_environment") {
        return;
    }
    let dns = FakeDns::start();
    // The server's own environment names another directory: it must not count.
    let d = Daemon::start_with_config_env(
        &dns.server_config("synthetic"),
        &[("AGENTSH_TEST_PRIVATE", "/nowhere")],
    );
    let ws = TempDir::new("ws");
    std::fs::create_dir_all(ws.path().join("private")).unwrap();
    ws.write("private/key.txt", "top secret");
    let policy_dir = TempDir::new("policy");
    let policy = policy_dir.write(
        "policy.yaml",
        "version: 1\nname: vars\nfile_rules:\n\
         \x20 - {name: no-private, paths: ['${AGENTSH_TEST_PRIVATE}/**'], operations: ['*'], decision: deny}\n",
    );
    let out = d
        .command()
        .env("AGENTSH_TEST_PRIVATE", ws.path().join("private"))
        .args(["session", "create", "--json", "--workspace", ws.path().to_str().unwrap(), "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id =
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"].as_str().unwrap().to_string();
    let s = Session { id, workspace: ws };
    assert!(fuse_shown(&d, &s.id).0.contains("no-private"), "{:?}", fuse_shown(&d, &s.id));
    let r = d.exec(&s, &["sh", "-c", "cat private/key.txt 2>/dev/null || echo refused"]);
    assert_eq!(r.stdout, "refused\n", "{r:#?}");
}
