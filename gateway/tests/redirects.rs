//! `connect_redirects` end to end as root on the real kernel: a connect to an allowed name is
//! carried to another TCP upstream or to a Unix socket the test serves in the workspace, with a
//! `connect_redirect` event; `tls.mode: rewrite_sni` is refused with the rule's name (a rewritten
//! ClientHello breaks the TLS transcript, so it needs TLS termination, which is not supported).
//! DNS goes to a fake upstream on the host's loopback.

mod common;

use common::{
    Daemon, ExecResult, Session, TempDir,
    dns::FakeDns,
    upstream::{self, TestCa, UnixUpstream, Upstream},
};

const OLD_BODY: &str = "hello from the old upstream";
const NEW_BODY: &str = "hello from the new upstream";
const UNIX_BODY: &str = "hello from the unix upstream";

struct World {
    dns: FakeDns,
    old: Upstream,
    new: Upstream,
    unix: UnixUpstream,
    daemon: Daemon,
    session: Session,
}

fn world() -> World {
    let dns = FakeDns::start();
    let ca = TestCa::with_names(&["old.test", "new.test", "rw.test"]);
    let old = ca.serve_body(OLD_BODY);
    let new = ca.serve_body(NEW_BODY);
    let ws = TempDir::new("ws");
    let sock = ws.path().join("upstream.sock");
    let unix = upstream::http_unix(&sock, UNIX_BODY);
    let (p, q) = (old.port(), new.port());
    let policy = format!(
        "version: 1\nname: redirects\nnetwork_rules:\n\
         \x20 - {{name: allow-names, domains: [old.test, rw.test, sock.test], ports: [{p}], decision: allow}}\n\
         \x20 - {{name: vouch-upstreams, cidrs: [127.0.0.1/32], ports: [{p}], decision: allow}}\n\
         connect_redirects:\n\
         \x20 - {{name: old-to-new, match: '^old\\.test:{p}$', redirect_to: '127.0.0.1:{q}', message: moved}}\n\
         \x20 - {{name: sock-to-unix, match: '^sock\\.test:{p}$', redirect_to_unix: '{}'}}\n\
         \x20 - {{name: rewrite-rw, match: '^rw\\.test:{p}$', redirect_to: '127.0.0.1:{q}', tls: {{mode: rewrite_sni, sni: new.test}}}}\n",
        sock.display()
    );
    let daemon = Daemon::start_with_config(&dns.server_config("synthetic"));
    let session = daemon.session_in(ws, &policy);
    session.workspace.write("ca.pem", &ca.ca_pem);
    World { dns, old, new, unix, daemon, session }
}

impl World {
    fn curl(&self, url: &str) -> ExecResult {
        self.daemon.exec(&self.session, &["curl", "-4", "-sS", "--max-time", "10", "--cacert", "ca.pem", url])
    }
}

#[test]
fn redirect_to_sends_the_connection_to_the_other_upstream() {
    if !common::privileged("redirect_to_sends_the_connection_to_the_other_upstream") {
        return;
    }
    let w = world();
    let (p, q) = (w.old.port(), w.new.port());
    let r = w.curl(&format!("https://old.test:{p}/"));
    r.assert_exit(0);
    assert_eq!(r.stdout, NEW_BODY);
    let e = r.one("connect_redirect");
    assert_eq!((e.rule(), e.decision(), e.domain.as_deref()), ("old-to-new", "allow", Some("old.test")));
    assert_eq!(e.str("redirect_to"), format!("127.0.0.1:{q}"));
    assert_eq!(e.str("message"), "moved");
    let c = r.one("net_connect");
    assert_eq!(c.str("upstream"), format!("127.0.0.1:{q}"));
    assert_eq!(c.rule(), "old-to-new");
    assert!(c.num("bytes_received") > 0);
    assert_eq!((w.old.accepted(), w.new.accepted()), (0, 1));
    assert!(
        w.dns.questions().is_empty(),
        "a redirected name needs no real resolution: {:?}",
        w.dns.questions()
    );
}

#[test]
fn redirect_to_unix_reaches_the_socket_in_the_workspace() {
    if !common::privileged("redirect_to_unix_reaches_the_socket_in_the_workspace") {
        return;
    }
    let w = world();
    let p = w.old.port();
    let r = w
        .daemon
        .exec(&w.session, &["curl", "-4", "-sS", "--max-time", "10", &format!("http://sock.test:{p}/")]);
    r.assert_exit(0);
    assert_eq!(r.stdout, UNIX_BODY);
    let e = r.one("connect_redirect");
    assert_eq!((e.rule(), e.domain.as_deref()), ("sock-to-unix", Some("sock.test")));
    assert_eq!(e.str("redirect_to"), format!("unix:{}", w.unix.path.display()));
    let c = r.one("net_connect");
    assert_eq!(c.str("upstream"), format!("unix:{}", w.unix.path.display()));
    assert_eq!(c.str("protocol"), "http");
    assert_eq!(w.unix.accepted(), 1);
    assert_eq!((w.old.accepted(), w.new.accepted()), (0, 0));
}

#[test]
fn rewrite_sni_is_refused_until_tls_termination_exists() {
    if !common::privileged("rewrite_sni_is_refused_until_tls_termination_exists") {
        return;
    }
    let w = world();
    let r = w.curl(&format!("https://rw.test:{}/", w.old.port()));
    assert_ne!(r.exit_code, 0, "{r:#?}");
    assert!(r.stdout.is_empty());
    let e = r.one("net_connect_blocked");
    assert_eq!((e.rule(), e.decision(), e.domain.as_deref()), ("rewrite-rw", "deny", Some("rw.test")));
    let message = e.policy.as_ref().and_then(|p| p.message.clone()).unwrap_or_default();
    assert!(message.contains("TLS termination"), "{message}");
    assert!(r.of("connect_redirect").is_empty() && r.of("net_connect").is_empty(), "{r:#?}");
    assert_eq!((w.old.accepted(), w.new.accepted()), (0, 0));
}
