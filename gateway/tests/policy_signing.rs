//! Policy signing end to end: `policy keygen`, `policy sign`, `policy verify`, and a server with
//! `policies.signing.mode: enforce` that starts a session only for a policy signed by a trusted,
//! unexpired key over its exact bytes; `warn` starts it and records why it is not trusted.

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use common::{Daemon, TempDir, dns::FakeDns};

const POLICY: &str =
    "version: 1\nname: signed\nnetwork_rules:\n  - {name: none, cidrs: [0.0.0.0/0], decision: deny}\n";

fn agentsh(args: &[&str]) -> (i32, String) {
    let out = Command::new(common::AGENTSH).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A trust store with one key, the private key's path, and a signed policy file.
fn signed(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let store = dir.path().join("trust");
    let (code, out) = agentsh(&["policy", "keygen", "--output", path(&store), "--label", "ci"]);
    assert_eq!(code, 0, "{out}");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    let policy = dir.write("policy.yaml", POLICY);
    let (code, out) = agentsh(&["policy", "sign", path(&policy), "--key", path(&key), "--signer", "alice"]);
    assert_eq!(code, 0, "{out}");
    (store, key, policy)
}

fn create(daemon: &Daemon, policy: &Path) -> (bool, String) {
    let ws = TempDir::new("ws");
    let out = daemon.cli(&["session", "create", "--workspace", path(ws.path()), "--policy", path(policy)]);
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn policy_verify_accepts_the_signed_bytes_only() {
    let dir = TempDir::new("sign");
    let (store, _, policy) = signed(&dir);
    let (code, out) = agentsh(&["policy", "verify", path(&policy), "--key-dir", path(&store)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed by alice"), "{out}");
    std::fs::write(&policy, POLICY.replace("deny", "allow")).unwrap();
    let (code, out) = agentsh(&["policy", "verify", path(&policy), "--key-dir", path(&store)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not match"), "{out}");
}

#[test]
fn enforce_starts_only_sessions_with_trusted_signatures() {
    if !common::privileged("enforce_starts_only_sessions_with_trusted_signatures") {
        return;
    }
    let dir = TempDir::new("sign");
    let (store, key, policy) = signed(&dir);
    let dns = FakeDns::start();
    let config = format!(
        "{}policies:\n  signing: {{mode: enforce, trust_store: '{}'}}\n",
        dns.server_config("synthetic"),
        store.display()
    );
    let daemon = Daemon::start_with_config(&config);
    let (ok, out) = create(&daemon, &policy);
    assert!(ok, "a signed policy starts a session: {out}");
    let audit = std::fs::read_to_string(daemon.state.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"policy_signed_by\":\"alice (ci, key "), "{audit}");
    assert!(create(&daemon, Path::new("strict")).0, "embedded policies are trusted");

    // Edited after signing.
    let edited = dir.write("edited.yaml", &POLICY.replace("deny", "allow"));
    std::fs::copy(format!("{}.sig", policy.display()), format!("{}.sig", edited.display())).unwrap();
    let (ok, out) = create(&daemon, &edited);
    assert!(!ok && out.contains("does not match") && out.contains("enforce"), "{out}");
    // No signature at all.
    let unsigned = dir.write("unsigned.yaml", POLICY);
    let (ok, out) = create(&daemon, &unsigned);
    assert!(!ok && out.contains("no signature"), "{out}");
    // Signed by a key the store does not hold.
    let other = dir.path().join("other");
    agentsh(&["policy", "keygen", "--output", path(&other), "--label", "stranger"]);
    let other_key = std::fs::read_dir(&other)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .unwrap();
    let foreign = dir.write("foreign.yaml", POLICY);
    agentsh(&["policy", "sign", path(&foreign), "--key", path(&other_key)]);
    let (ok, out) = create(&daemon, &foreign);
    assert!(!ok && out.contains("not in the trust store"), "{out}");
    // An expired key.
    let entry = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&entry).unwrap()).unwrap();
    json["expires_at"] = "2020-01-01T00:00:00Z".into();
    std::fs::write(&entry, json.to_string()).unwrap();
    let (ok, out) = create(&daemon, &policy);
    assert!(!ok && out.contains("expired"), "{out}");
    // A trust store others can write to.
    json["expires_at"] = serde_json::Value::Null;
    std::fs::write(&entry, json.to_string()).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (ok, out) = create(&daemon, &policy);
    assert!(!ok && out.contains("writable by group or others"), "{out}");
    let _ = key;
}

#[test]
fn warn_starts_the_session_and_records_why_the_policy_is_not_trusted() {
    if !common::privileged("warn_starts_the_session_and_records_why_the_policy_is_not_trusted") {
        return;
    }
    let dir = TempDir::new("sign");
    let (store, _, _) = signed(&dir);
    let dns = FakeDns::start();
    let config = format!(
        "{}policies:\n  signing: {{mode: warn, trust_store: '{}'}}\n",
        dns.server_config("synthetic"),
        store.display()
    );
    let daemon = Daemon::start_with_config(&config);
    let unsigned = dir.write("unsigned.yaml", POLICY);
    let (ok, out) = create(&daemon, &unsigned);
    assert!(ok, "{out}");
    let audit = std::fs::read_to_string(daemon.state.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"policy_signature_invalid\"") && l.contains("no signature")),
        "{audit}"
    );
}
