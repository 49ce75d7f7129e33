//! `files.landlock`: every command runs under a Landlock ruleset made from the policy's
//! `file_rules`: the workspace is writable, nothing outside it is, host files outside the
//! system trees cannot be read, a tree the rules deny whole is gone, and `session show` names
//! the ABI. Real kernel, real launches.

mod common;

use common::{Daemon, TempDir, dns::FakeDns};

#[test]
fn the_landlock_layer_confines_commands_to_the_workspace_and_the_rules() {
    if !common::privileged("the_landlock_layer_confines_commands_to_the_workspace_and_the_rules") {
        return;
    }
    let dns = FakeDns::start();
    let d =
        Daemon::start_with_config(&format!("{}files:\n  landlock: true\n", dns.server_config("synthetic")));
    let s = d.session(
        "version: 1\nname: ll\nfile_rules:\n  - {name: no-opt, paths: ['/opt/**'], operations: ['*'], decision: deny}\n",
    );
    let show: serde_json::Value =
        serde_json::from_slice(&d.cli(&["session", "show", &s.id, "--json"]).stdout).unwrap();
    assert!(show["landlock_abi"].as_u64().is_some_and(|abi| abi >= 1), "{show}");

    let outside = TempDir::new("outside");
    let secret = outside.write("secret.txt", "host secret");
    let escaped = outside.path().join("written.txt");
    let script = format!(
        "echo ok > in-workspace.txt && echo wrote-workspace; \
         echo x > {escaped} 2>/dev/null || echo refused-write; \
         cat {secret} 2>/dev/null || echo refused-read; \
         ls /opt >/dev/null 2>&1 || echo refused-opt; \
         ls /usr/bin >/dev/null && echo system-readable",
        escaped = escaped.display(),
        secret = secret.display()
    );
    let r = d.exec(&s, &["sh", "-c", &script]);
    r.assert_exit(0);
    for expected in ["wrote-workspace", "refused-write", "refused-read", "refused-opt", "system-readable"] {
        assert!(r.stdout.contains(expected), "{expected}: {r:#?}");
    }
    assert!(!r.stdout.contains("host secret"));
    assert!(!escaped.exists(), "nothing was written outside the workspace");
    assert_eq!(std::fs::read_to_string(s.workspace.path().join("in-workspace.txt")).unwrap(), "ok\n");
}
