//! Bad input at the gateway: a malformed ClientHello is refused (never relayed unnamed) and the
//! gateway keeps serving; a client that sends nothing still reaches a server-speaks-first
//! upstream; an upstream that refuses becomes a reset for the agent; a connection dialled
//! straight at a gateway listener, with no original destination, is refused.

mod common;

use common::{
    Daemon, Session,
    upstream::{self, BANNER, TLS_BODY, TestCa, Upstream},
};
use serde_json::{Value, json};

const BAD: &str = include_str!("scripts/bad_input.py");

fn export(d: &Daemon, name: &str, port: u16) -> Session {
    d.session(&format!(
        "version: 1\nname: bad-input\nnetwork_rules:\n  - {{name: {name}, cidrs: [127.0.0.1/32], ports: [{port}], decision: allow}}\n"
    ))
}

fn run(d: &Daemon, s: &Session, args: &[&str]) -> (common::ExecResult, Value) {
    let r = d.python(s, "bad_input.py", BAD, args);
    r.assert_exit(0);
    let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:#?}"));
    (r, v)
}

fn is_dropped(v: &Value) -> bool {
    *v == json!({"error": "ECONNRESET"}) || *v == json!({"read": ""})
}

#[test]
fn malformed_client_hello_is_dropped_and_the_gateway_keeps_serving() {
    if !common::privileged("malformed_client_hello_is_dropped_and_the_gateway_keeps_serving") {
        return;
    }
    let ca = TestCa::new();
    let tls: Upstream = ca.serve();
    let d = Daemon::start();
    let s = export(&d, "export-tls", tls.port());
    s.workspace.write("ca.pem", &ca.ca_pem);

    let (r, v) = run(&d, &s, &["malformed", &tls.port().to_string()]);
    assert!(is_dropped(&v), "the connection is dropped: {r:#?}");
    let e = r.one("net_connect_blocked");
    assert_eq!((e.rule(), e.decision(), e.str("protocol")), ("malformed-first-bytes", "deny", "malformed"));
    assert!(!e.str("peek_error").is_empty(), "{e:?}");
    // The export rule decides on the address alone, so the gateway dials while it peeks; the
    // upstream may see that connection, but never a byte of the malformed hello.
    assert!(tls.accepted() <= 1, "at most the early dial reached the upstream");
    assert!(r.of("net_connect").is_empty(), "malformed bytes are never relayed: {r:#?}");

    let url = format!("https://127.0.0.1:{}/", tls.port());
    let r = d.exec(&s, &["curl", "-sS", "--max-time", "10", "--cacert", "ca.pem", &url]);
    r.assert_exit(0);
    assert_eq!(r.stdout, TLS_BODY);
    assert_eq!(r.one("net_connect").rule(), "export-tls");
}

#[test]
fn silent_client_reaches_a_server_that_speaks_first() {
    if !common::privileged("silent_client_reaches_a_server_that_speaks_first") {
        return;
    }
    let up = upstream::banner();
    let d = Daemon::start();
    let s = export(&d, "export-banner", up.port());
    let (r, v) = run(&d, &s, &["silent", &up.port().to_string()]);
    assert_eq!(v, json!({"read": BANNER, "echo": "echo me\n"}), "{r:#?}");
    let e = r.one("net_connect");
    assert_eq!((e.rule(), e.str("protocol")), ("export-banner", "raw"));
    assert_eq!(e.domain, None);
    assert_eq!(e.num("bytes_sent"), 8);
    assert_eq!(e.num("bytes_received"), u64::try_from(BANNER.len() + 8).unwrap());
}

#[test]
fn refusing_upstream_is_a_reset_for_the_agent() {
    if !common::privileged("refusing_upstream_is_a_reset_for_the_agent") {
        return;
    }
    let port = upstream::closed_port();
    let d = Daemon::start();
    let s = export(&d, "export-closed", port);
    let (r, v) = run(&d, &s, &["refused", &port.to_string()]);
    assert_eq!(v, json!({"error": "ECONNRESET"}), "{r:#?}");
    let e = r.one("net_connect");
    // The dial runs while the first bytes are peeked; it may fail before they are named.
    assert_eq!((e.rule(), e.decision()), ("export-closed", "allow"));
    assert!(["http", "raw"].contains(&e.str("protocol")), "{e:?}");
    assert!(e.str("error").to_lowercase().contains("refused"), "the dial error is recorded: {e:?}");

    // The gateway keeps serving: the same session still answers (and still refuses).
    let (_, v) = run(&d, &s, &["refused", &port.to_string()]);
    assert_eq!(v, json!({"error": "ECONNRESET"}));
}

#[test]
fn dialling_a_gateway_listener_directly_is_refused() {
    if !common::privileged("dialling_a_gateway_listener_directly_is_refused")
        || !common::decides_at_connect("dialling_a_gateway_listener_directly_is_refused")
    {
        return;
    }
    let d = Daemon::start();
    let s = export(&d, "export-nothing", upstream::closed_port());
    let (r, v) = run(&d, &s, &["direct"]);
    assert_eq!(v["found"], true, "the gateway listener is visible in the sandbox's /proc/net/tcp: {r:#?}");
    let mut dropped = v.clone();
    dropped.as_object_mut().unwrap().remove("found");
    assert!(is_dropped(&dropped), "{r:#?}");
    let e = r.one("net_connect_blocked");
    assert_eq!((e.rule(), e.decision()), ("unregistered-connection", "deny"));
    assert!(e.str("reason").contains("dialled directly"), "{e:?}");
}

/// `tls.extra_roots` that cannot be used stop the server at start-up, naming the file, before
/// it binds anything.
#[test]
fn unusable_extra_roots_stop_the_server_with_the_file_named() {
    let dir = common::TempDir::new("roots");
    let empty = dir.write("empty.pem", "no certificate here\n");
    let missing = dir.path().join("missing.pem");
    for (root, expected) in [(&missing, "reading"), (&empty, "no CERTIFICATE in the file")] {
        let stderr = common::server_refuses(&dir, &format!("tls:\n  extra_roots: ['{}']\n", root.display()));
        assert!(
            stderr.contains(&format!("tls.extra_roots: {expected}")) || stderr.contains(expected),
            "{stderr}"
        );
        assert!(stderr.contains(&root.display().to_string()), "{stderr}");
    }
}

/// A backend weaker than `security.minimum_mode` stops the server rather than running with it.
#[test]
fn a_backend_below_the_minimum_mode_stops_the_server() {
    let dir = common::TempDir::new("mode");
    let stderr = common::server_refuses(&dir, "security: {mode: ebpf, minimum_mode: seccomp}\n");
    assert!(stderr.contains("security.mode: mode is weaker than minimum_mode"), "{stderr}");
    assert!(stderr.contains("server.yaml:2:"), "the line is named: {stderr}");
}
