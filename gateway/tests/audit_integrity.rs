//! `audit.integrity` end to end: a daemon writes a chained audit log while sessions run, across
//! a restart; `agentsh audit verify` accepts it, and finds an edited, a deleted, a reordered and
//! a dropped last line at the right place; the wrong key is named as such.

mod common;

use std::{path::Path, process::Command};

use common::{Daemon, TempDir, dns::FakeDns};

const KEY: &str = "0123456789abcdef0123456789abcdef-audit-key";

fn verify(log: &Path, key: &Path) -> (i32, String) {
    let out = Command::new(common::AGENTSH)
        .args(["audit", "verify"])
        .arg(log)
        .arg("--key-file")
        .arg(key)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// A daemon with a chained log that has seen a few sessions and commands, restarted once.
fn chained_log(dns: &FakeDns, keys: &TempDir) -> (Daemon, std::path::PathBuf) {
    let key = keys.write("audit.key", KEY);
    let config = format!(
        "{}audit:\n  integrity: {{enabled: true, algorithm: hmac-sha256, key_file: '{}'}}\n",
        dns.server_config("synthetic"),
        key.display()
    );
    let daemon = Daemon::start_with_config(&config);
    let policy =
        "version: 1\nname: a\nnetwork_rules:\n  - {name: no, cidrs: [203.0.113.0/24], decision: deny}\n";
    let s = daemon.session(policy);
    daemon.exec(&s, &["sh", "-c", "getent hosts x.test; curl -s -m 2 http://203.0.113.7/ || true"]);
    drop(s);
    let daemon = daemon.restart();
    let s = daemon.session(policy);
    daemon.exec(&s, &["true"]);
    let log = daemon.state.path().join("audit.jsonl");
    (daemon, log)
}

#[test]
fn a_chained_log_verifies_across_a_restart_and_every_tamper_is_found() {
    if !common::privileged("a_chained_log_verifies_across_a_restart_and_every_tamper_is_found") {
        return;
    }
    let dns = FakeDns::start();
    let keys = TempDir::new("keys");
    let (daemon, log) = chained_log(&dns, &keys);
    let key = keys.path().join("audit.key");
    let (code, out) = verify(&log, &key);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 5, "{text}");
    assert_eq!(
        lines.iter().filter(|l| l.contains("integrity_chain_rotated")).count(),
        1,
        "the restart continued the chain rather than starting a new one: {text}"
    );
    assert!(lines.iter().all(|l| l.contains("\"entry_hash\"")));

    let work = TempDir::new("tamper");
    let write = |name: &str, lines: &[&str]| {
        let p = work.path().join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    // Edit: one field of line 4 changed.
    let mut edited = lines.clone();
    let changed = edited[3].replacen("\"session_id\":\"", "\"session_id\":\"x", 1);
    edited[3] = &changed;
    let (code, out) = verify(&write("edited.jsonl", &edited), &key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("edited.jsonl:4:") && out.contains("altered"), "{out}");
    // Delete: line 3 removed.
    let mut deleted = lines.clone();
    deleted.remove(2);
    let (code, out) = verify(&write("deleted.jsonl", &deleted), &key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("deleted.jsonl:3:") && out.contains("missing"), "{out}");
    // Reorder: lines 3 and 4 swapped.
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    let (code, out) = verify(&write("swapped.jsonl", &swapped), &key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("swapped.jsonl:3:"), "{out}");
    // Drop the last line: only the sidecar can tell, so keep it next to the copy.
    let truncated = write("truncated.jsonl", &lines[..lines.len() - 1]);
    std::fs::copy(log.with_extension("jsonl.chain"), work.path().join("truncated.jsonl.chain")).unwrap();
    let (code, out) = verify(&truncated, &key);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing at the end"), "{out}");
    // The wrong key is reported as such, not as tampering.
    let wrong = keys.write("wrong.key", "another key of at least thirty-two bytes!!");
    let (code, out) = verify(&log, &wrong);
    assert_eq!(code, 1, "{out}");
    drop(daemon);
}

#[test]
fn a_short_key_stops_the_server_with_a_clear_error() {
    let keys = TempDir::new("keys");
    let key = keys.write("audit.key", "too short");
    let stderr = common::server_refuses(
        &keys,
        &format!("audit:\n  integrity: {{enabled: true, key_file: '{}'}}\n", key.display()),
    );
    assert!(stderr.contains("audit.integrity") && stderr.contains("at least 32"), "{stderr}");
}
