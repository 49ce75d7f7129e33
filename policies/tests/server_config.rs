//! The server config loads through the same strict core: defaults, checks and positions.

use policies::config::{DnsMode, FuseMode, LandlockMode, SecurityMode, ServerConfig, load_server_config};

fn one(text: &str) -> String {
    let e = load_server_config(text, "c.yaml").expect_err("should not load");
    assert_eq!(e.len(), 1, "{e}");
    let e = &e.0[0];
    format!("{}:{}: {}: {}", e.line, e.column, e.key, e.message)
}

#[test]
fn empty_config_is_the_default() {
    let c = load_server_config("", "c.yaml").unwrap();
    assert_eq!(c, ServerConfig::default());
    assert_eq!(c.dns.mode, DnsMode::Synthetic);
    assert_eq!(c.security.mode, SecurityMode::Auto);
    assert_eq!(c.files.landlock, LandlockMode::Auto);
    assert_eq!(c.files.fuse_workspace, FuseMode::Auto);
    assert_eq!(c.control_socket().to_str(), Some("/run/agentsh/agentsh.sock"));
    assert_eq!(c.data_dir, None);
    assert_eq!(c.data_dir().to_str(), Some("/run/agentsh"));
}

#[test]
fn checks_report_positions() {
    assert_eq!(
        one("audit:\n  sinks:\n    - {type: jsonl}\n"),
        "3:7: audit.sinks[0]: a jsonl sink requires path"
    );
    assert_eq!(
        one("security:\n  mode: ptrace\n  minimum_mode: seccomp\n"),
        "2:3: security.mode: mode is weaker than minimum_mode"
    );
    assert_eq!(
        one("listeners: {tcp: '0.0.0.0:18080'}\n"),
        "1:13: listeners.tcp: 0.0.0.0:18080 is not loopback (the control API has no authentication)"
    );
    assert_eq!(
        one("dns: {mode: magic}\n"),
        r#"1:7: dns.mode: unknown mode "magic" (expected synthetic, passthrough)"#
    );
    let m = one("dns:\n  upstream: [1.1.1.1, 'x:53']\n");
    assert!(m.starts_with("2:23: dns.upstream[1]: invalid DNS upstream \"x:53\""), "{m}");
    assert!(one("state_dir: run\n").ends_with("must be an absolute path"));
    assert_eq!(one("data_dir: var/lib\n"), "1:1: data_dir: must be an absolute path");
    assert_eq!(
        one("tls:\n  extra_roots: [/etc/ca.pem, ca.pem]\n"),
        "2:30: tls.extra_roots[1]: must be an absolute path"
    );
    assert_eq!(
        one("audit:\n  integrity: {enabled: true}\n"),
        "2:3: audit.integrity: set exactly one of key_file and key_env"
    );
    assert_eq!(
        one("audit:\n  integrity: {enabled: true, algorithm: hmac-md5, key_env: K}\n"),
        r#"2:30: audit.integrity.algorithm: unknown algorithm "hmac-md5" (expected hmac-sha256, hmac-sha512)"#
    );
    let c = load_server_config("tls: {extra_roots: [/etc/ca.pem]}\n", "c.yaml").unwrap();
    assert_eq!(c.tls.extra_roots, [std::path::PathBuf::from("/etc/ca.pem")]);
}

#[test]
fn landlock_takes_its_modes_and_the_old_booleans() {
    for (text, mode) in [
        ("auto", LandlockMode::Auto),
        ("required", LandlockMode::Required),
        ("true", LandlockMode::Required),
        ("'true'", LandlockMode::Required),
        ("off", LandlockMode::Off),
        ("false", LandlockMode::Off),
    ] {
        let c = load_server_config(&format!("files: {{landlock: {text}}}\n"), "c.yaml").unwrap();
        assert_eq!(c.files.landlock, mode, "{text}");
    }
    assert_eq!(
        one("files:\n  landlock: maybe\n"),
        r#"2:3: files.landlock: unknown value "maybe" (expected auto, required or true, off or false)"#
    );
    let m = one("files: {landlock: 1}\n");
    assert!(m.starts_with("1:9: files.landlock: ") && m.contains("expected auto, required or true"), "{m}");
}

#[test]
fn fuse_workspace_takes_its_modes_and_the_old_booleans() {
    for (text, mode) in [
        ("auto", FuseMode::Auto),
        ("on", FuseMode::On),
        ("true", FuseMode::On),
        ("off", FuseMode::Off),
        ("false", FuseMode::Off),
    ] {
        let c = load_server_config(&format!("files: {{fuse_workspace: {text}}}\n"), "c.yaml").unwrap();
        assert_eq!(c.files.fuse_workspace, mode, "{text}");
    }
    assert_eq!(
        one("files:\n  fuse_workspace: sometimes\n"),
        r#"2:3: files.fuse_workspace: unknown value "sometimes" (expected auto, on or true, off or false)"#
    );
}
