//! `unix_socket_rules` decide AF_UNIX connects from inside the sandbox: an explicit allow
//! reaches a host socket outside the workspace, an explicit deny refuses one inside it, and
//! without a rule only the workspace and the session's sockets are reachable.

mod common;

use std::os::unix::net::UnixListener;

use common::{Daemon, TempDir};

const CLIENT: &str = "import socket, sys\n\
s = socket.socket(socket.AF_UNIX)\n\
try:\n    s.connect(sys.argv[1])\n    s.sendall(b'ping')\n    print('ok', s.recv(4).decode())\n\
except OSError as e:\n    print('err', e.errno)\n";

/// Serve one `ping` → `pong` exchange on `path`, in the background.
fn pong_server(path: &std::path::Path) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).expect("bind");
    listener.set_nonblocking(false).expect("blocking");
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = listener.accept() {
            let mut b = [0u8; 4];
            let _ = std::io::Read::read_exact(&mut c, &mut b);
            let _ = std::io::Write::write_all(&mut c, b"pong");
        }
    })
}

#[test]
fn rules_allow_and_deny_unix_sockets_first_match_wins() {
    if !common::privileged("rules_allow_and_deny_unix_sockets_first_match_wins") {
        return;
    }
    let outside = TempDir::new("unix-outside");
    let allowed = outside.path().join("allowed.sock");
    let other = outside.path().join("other.sock");
    let policy = format!(
        "unix_socket_rules:\n  \
         - {{name: no-secret, paths: ['${{PROJECT_ROOT}}/secret-*.sock'], operations: [connect], decision: deny, message: not this one}}\n  \
         - {{name: host-svc, paths: ['{}'], decision: allow}}\n",
        allowed.display()
    );
    let d = Daemon::start();
    let s = d.session(&policy);
    let secret = s.workspace.path().join("secret-1.sock");
    let _a = pong_server(&allowed);
    let _o = pong_server(&other);
    let _s = pong_server(&secret);

    let r = d.python(&s, "c.py", CLIENT, &[allowed.to_str().unwrap()]);
    assert_eq!(r.stdout, "ok pong\n", "an allowed host socket outside the workspace: {r:#?}");

    let r = d.python(&s, "c.py", CLIENT, &[other.to_str().unwrap()]);
    assert_eq!(r.stdout, "err 13\n", "no rule, outside the workspace: {r:#?}");
    assert_eq!(r.one("unix_socket_blocked").rule(), "default-deny-unix");

    let r = d.python(&s, "c.py", CLIENT, &["secret-1.sock"]);
    assert_eq!(r.stdout, "err 13\n", "denied by rule inside the workspace: {r:#?}");
    let e = r.one("unix_socket_blocked");
    assert_eq!(e.rule(), "no-secret");
    assert_eq!(e.remote.as_deref(), Some(secret.to_str().unwrap()));
}
