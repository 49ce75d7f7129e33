//! Escape attempts from inside a session (DESIGN.md §2): each fails with the errno the filter
//! or the decider gives it, and those the gateway sees are audited with their rule. Loopback
//! stays inside the sandbox; the host's loopback is reachable only through an export rule.

mod common;

use std::os::unix::net::UnixListener;

use common::{Daemon, TempDir, upstream};
use serde_json::{Value, json};

const ESCAPES: &str = include_str!("scripts/escapes.py");
const LOOPBACK: &str = include_str!("scripts/loopback.py");

const DENY_TESTNET: &str = "version: 1\nname: escapes\nnetwork_rules:\n  - {name: deny-testnet, cidrs: [203.0.113.0/24], decision: deny}\n";

#[test]
fn escape_attempts_fail_and_are_audited() {
    if !common::privileged("escape_attempts_fail_and_are_audited") {
        return;
    }
    escape_attempts("seccomp", "EACCES");
}

/// The same attempts with the eBPF backend: the kernel's programs refuse what the policy denies
/// outright and every datagram but DNS (`connect`/`sendmsg` hooks answer EPERM); the filter and
/// the Unix-socket decisions are the same as under seccomp.
#[test]
fn escape_attempts_fail_and_are_audited_under_ebpf() {
    if !common::privileged("escape_attempts_fail_and_are_audited_under_ebpf") {
        return;
    }
    escape_attempts("ebpf", "EPERM");
}

/// The same attempts with the ptrace backend, which answers the same trapped calls at ptrace
/// stops with the same decider: the same answers.
#[test]
fn escape_attempts_fail_and_are_audited_under_ptrace() {
    if !common::privileged("escape_attempts_fail_and_are_audited_under_ptrace") {
        return;
    }
    escape_attempts("ptrace", "EACCES");
}

fn escape_attempts(backend: &str, refused_in_network: &str) {
    let d = Daemon::start_backend(backend);
    let s = d.session(DENY_TESTNET);
    let outside = TempDir::new("hostsock");
    let host_sock = outside.path().join("host.sock");
    let listener = UnixListener::bind(&host_sock).expect("bind host socket");
    listener.set_nonblocking(true).unwrap();
    let control = d.socket();
    let r = d.python(&s, "escapes.py", ESCAPES, &[control.to_str().unwrap(), host_sock.to_str().unwrap()]);
    r.assert_exit(0);
    let got: Value = serde_json::from_str(&r.stdout).expect("escape results");
    assert_eq!(
        got,
        json!({
            "io_uring_setup": "EPERM",
            "setns": "EPERM",
            "unshare_net": "EPERM",
            "unshare_user": "EPERM",
            "raw_socket": "EPERM",
            "packet_socket": "EAFNOSUPPORT",
            "udp_sendto": refused_in_network,
            "v4_mapped": refused_in_network,
            "control_socket": "EACCES",
            "host_unix_socket": "EACCES",
        }),
        "{r:#?}"
    );
    assert!(listener.accept().is_err(), "the host socket saw no connection");

    let blocked = r.of("net_connect_blocked");
    let udp = blocked.iter().find(|e| e.remote.as_deref() == Some("203.0.113.5:9999")).expect("udp event");
    assert_eq!((udp.rule(), udp.str("transport")), ("datagram-egress", "udp"));
    let mapped =
        blocked.iter().find(|e| e.remote.as_deref() == Some("203.0.113.5:443")).expect("v4-mapped event");
    assert_eq!((mapped.rule(), mapped.decision()), ("deny-testnet", "deny"), "decided as IPv4");
    assert_eq!(blocked.len(), 2, "{r:#?}");

    let unix = r.of("unix_socket_blocked");
    for path in [&control, &host_sock] {
        let e = unix
            .iter()
            .find(|e| e.remote.as_deref() == path.to_str())
            .unwrap_or_else(|| panic!("no unix_socket_blocked for {}: {r:#?}", path.display()));
        assert_eq!((e.rule(), e.decision()), ("default-deny-unix", "deny"));
    }
    assert!(r.of("net_connect").is_empty(), "{r:#?}");
}

#[test]
fn control_socket_is_unreachable_through_a_workspace_symlink() {
    if !common::privileged("control_socket_is_unreachable_through_a_workspace_symlink") {
        return;
    }
    let d = Daemon::start();
    let s = d.session(DENY_TESTNET);
    std::os::unix::fs::symlink(d.socket(), s.workspace.path().join("ctl.sock")).unwrap();
    // A session listing request, framed as the CLI frames it.
    let script = "import socket,struct,sys,errno\ns=socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('ctl.sock')\nexcept OSError as e:\n    print('connect', errno.errorcode[e.errno]); sys.exit(0)\nbody=b'{\"op\":\"session_list\"}'\ntry:\n    s.sendall(struct.pack('>I', len(body)) + body)\n    s.settimeout(5)\n    answer = s.recv(4096)[4:].decode()\n    print('answer ' + answer if answer else 'refused eof')\nexcept OSError as e:\n    print('refused', errno.errorcode.get(e.errno, e))\n";
    let r = d.python(&s, "ctl.py", script, &[]);
    r.assert_exit(0);
    // The path is inside the workspace, but the supervisor resolves it with no symlink followed:
    // the connect itself fails and the daemon never sees a peer.
    assert_eq!(r.stdout, "connect ELOOP\n", "{r:#?}");
    assert_eq!(r.one("unix_socket_blocked").rule(), "unix-symlink");
    assert!(
        d.audit().iter().all(|e| e.kind != "listener_auth_fail"),
        "the control socket saw a connection: {r:#?}"
    );
}

#[test]
fn loopback_inside_the_sandbox_works() {
    if !common::privileged("loopback_inside_the_sandbox_works") {
        return;
    }
    let d = Daemon::start();
    let s = d.session(DENY_TESTNET);
    let r = d.python(&s, "loopback.py", LOOPBACK, &["inside"]);
    r.assert_exit(0);
    let got: Value = serde_json::from_str(&r.stdout).expect("loopback result");
    let both = json!({"reply": "pong:ping", "peer_port_matches": true});
    assert_eq!(got, json!({"v4": both, "v6": both}), "{r:#?}");
    assert!(r.network_events().is_empty(), "loopback never reaches the gateway: {r:#?}");
}

#[test]
fn host_loopback_needs_an_export_rule() {
    if !common::privileged("host_loopback_needs_an_export_rule") {
        return;
    }
    let host = upstream::banner();
    let port = host.port().to_string();
    let d = Daemon::start();

    let closed = d.session(DENY_TESTNET);
    let r = d.python(&closed, "loopback.py", LOOPBACK, &["host", &port]);
    r.assert_exit(0);
    if common::backend() == "ebpf" {
        // The host's loopback is the command's own: the connect reaches the gateway, which
        // refuses it by policy.
        assert_eq!(r.stdout.trim(), r#"{"error": "ECONNRESET"}"#, "{r:#?}");
        assert_eq!(r.one("net_connect_blocked").rule(), "default-deny-network", "{r:#?}");
    } else {
        assert_eq!(r.stdout.trim(), r#"{"error": "ECONNREFUSED"}"#, "{r:#?}");
        assert!(r.network_events().is_empty(), "{r:#?}");
    }
    assert_eq!(host.accepted(), 0, "the host listener saw nothing");

    let exported = d.session(&format!(
        "version: 1\nname: export\nnetwork_rules:\n  - {{name: export-banner, cidrs: [127.0.0.1/32], ports: [{port}], decision: allow}}\n"
    ));
    let r = d.python(&exported, "loopback.py", LOOPBACK, &["host", &port]);
    r.assert_exit(0);
    let got: Value = serde_json::from_str(&r.stdout).expect("host result");
    assert_eq!(got, json!({"said": upstream::BANNER}), "{r:#?}");
    let e = r.one("net_connect");
    assert_eq!((e.rule(), e.str("protocol")), ("export-banner", "raw"));
    assert_eq!(host.accepted(), 1);
}

#[test]
fn host_unix_socket_is_unreachable_through_a_workspace_symlink() {
    if !common::privileged("host_unix_socket_is_unreachable_through_a_workspace_symlink") {
        return;
    }
    let d = Daemon::start();
    let s = d.session(DENY_TESTNET);
    let outside = TempDir::new("hostsock");
    let host_sock = outside.path().join("host.sock");
    let listener = UnixListener::bind(&host_sock).expect("bind host socket");
    listener.set_nonblocking(true).unwrap();
    std::os::unix::fs::symlink(&host_sock, s.workspace.path().join("link.sock")).unwrap();
    let script = "import socket,errno\ns=socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('link.sock'); print('connected')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n";
    let r = d.python(&s, "link.py", script, &[]);
    r.assert_exit(0);
    assert!(listener.accept().is_err(), "the host socket was reached through the symlink: {r:#?}");
    // Sockets reached through a symlink are refused by design, whatever the link points at.
    assert_eq!(r.stdout, "ELOOP\n", "{r:#?}");
    let e = r.one("unix_socket_blocked");
    assert_eq!((e.rule(), e.decision()), ("unix-symlink", "deny"));
    let link = s.workspace.path().join("link.sock");
    assert_eq!(e.remote.as_deref(), link.to_str(), "{r:#?}");
}

#[test]
fn workspace_unix_socket_is_reachable() {
    if !common::privileged("workspace_unix_socket_is_reachable") {
        return;
    }
    let d = Daemon::start();
    let s = d.session(DENY_TESTNET);
    let sock = s.workspace.path().join("svc.sock");
    let listener = UnixListener::bind(&sock).expect("bind workspace socket");
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        let mut b = [0u8; 4];
        std::io::Read::read_exact(&mut c, &mut b).expect("read");
        std::io::Write::write_all(&mut c, b"pong").expect("write");
        b
    });
    let script = "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect('svc.sock')\ns.sendall(b'ping')\nprint(s.recv(4).decode())\n";
    let r = d.python(&s, "svc.py", script, &[]);
    r.assert_exit(0);
    assert_eq!(r.stdout, "pong\n", "{r:#?}");
    assert_eq!(&server.join().unwrap(), b"ping");
    assert!(r.of("unix_socket_blocked").is_empty(), "{r:#?}");
}
