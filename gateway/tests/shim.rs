//! The shell shim on a root file system the test makes: install moves the real shells aside
//! and links the shim in their place; a non-interactive shell passes straight through unless
//! forced (by environment or shim.conf), and a forced one runs inside the session, governed;
//! uninstall puts everything back.

mod common;

use std::{path::Path, process::Command};

use common::{Daemon, TempDir, dns::FakeDns};

fn agentsh(d: &Daemon, args: &[&str]) -> (i32, String) {
    let out = d.command().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn shell(d: &Daemon, sh: &Path, script: &str, env: &[(&str, &str)]) -> String {
    let mut c = Command::new(sh);
    c.args(["-c", script])
        .env("AGENTSH_STATE_DIR", d.state.path())
        .env("AGENTSH_NO_AUTO", "1")
        .env_remove("AGENTSH_COMMAND_ID")
        .env_remove("AGENTSH_SHIM_FORCE")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_shim_routes_forced_shells_through_the_session_and_uninstalls_cleanly() {
    if !common::privileged("the_shim_routes_forced_shells_through_the_session_and_uninstalls_cleanly") {
        return;
    }
    let root = TempDir::new("root");
    let dns = FakeDns::start();
    // The real shells of this made-up root lie outside the system trees Landlock grants (an
    // installed shim's are in /bin): the config grants the root to read and execute from.
    let d = Daemon::start_with_config(&format!(
        "{}files:\n  read_paths: ['{}']\n",
        dns.server_config("synthetic"),
        root.path().display()
    ));
    let s = d.session("version: 1\nname: shim\nnetwork_rules:\n  - {name: no-testnet, cidrs: [203.0.113.0/24], decision: deny}\n");
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/sh", bin.join("sh")).unwrap();
    std::fs::copy("/bin/bash", bin.join("bash")).unwrap();
    let r = root.path().to_str().unwrap();

    let (code, out) =
        agentsh(&d, &["shim", "install-shell", "--root", r, "--bash", "--shim", common::AGENTSH]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read_link(bin.join("sh")).unwrap(), Path::new(common::AGENTSH));
    assert!(bin.join("sh.real").exists() && bin.join("bash.real").exists());
    assert_eq!(agentsh(&d, &["shim", "status", "--root", r]).0, 0);
    let (code, _) = agentsh(&d, &["shim", "install-shell", "--root", r, "--shim", common::AGENTSH]);
    assert_eq!(code, 0, "installing again changes nothing");

    let probe = "echo inside=${AGENTSH_COMMAND_ID:-no}; curl -s -m 3 http://203.0.113.5/ >/dev/null || echo egress-refused";
    // Non-interactive, not forced: straight through to the real shell, outside any session.
    let out = shell(&d, &bin.join("sh"), probe, &[]);
    assert!(out.contains("inside=no"), "{out}");
    // Forced by the environment: the same script runs inside the session, governed.
    let out =
        shell(&d, &bin.join("sh"), probe, &[("AGENTSH_SHIM_FORCE", "1"), ("AGENTSH_SESSION_ID", &s.id)]);
    assert!(out.contains("inside=cmd-") && out.contains("egress-refused"), "{out}");
    let out = shell(
        &d,
        &bin.join("bash"),
        "echo bash:${AGENTSH_COMMAND_ID:+yes}",
        &[("AGENTSH_SHIM_FORCE", "1"), ("AGENTSH_SESSION_ID", &s.id)],
    );
    assert!(out.contains("bash:yes"), "{out}");
    // Forced by shim.conf.
    let (code, out) =
        agentsh(&d, &["shim", "install-shell", "--root", r, "--force", "--shim", common::AGENTSH]);
    assert_eq!(code, 0, "{out}");
    let out = shell(&d, &bin.join("sh"), probe, &[("AGENTSH_SESSION_ID", &s.id)]);
    assert!(out.contains("inside=cmd-"), "{out}");
    let audit = std::fs::read_to_string(d.state.path().join("audit.jsonl")).unwrap();
    assert!(audit.lines().any(|l| l.contains("net_connect_blocked") && l.contains(&s.id)), "{audit}");

    let (code, out) = agentsh(&d, &["shim", "uninstall-shell", "--root", r]);
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::symlink_metadata(bin.join("sh")).unwrap().file_type().is_file());
    assert!(!bin.join("sh.real").exists() && !root.path().join("etc/agentsh/shim.conf").exists());
    assert_eq!(agentsh(&d, &["shim", "status", "--root", r]).0, 1);
    let out = shell(&d, &bin.join("sh"), "echo plain", &[]);
    assert_eq!(out.trim(), "plain");
}
