//! `connect_redirects` end to end as root on the real kernel: a connect to an allowed name is
//! carried to another TCP upstream or to a Unix socket the test serves in the workspace, with a
//! `connect_redirect` event; `tls.mode: rewrite_sni` terminates the agent's TLS with the session
//! CA (which the sandbox trusts through its environment and its CA bundle) and dials the target
//! anew presenting the rewritten name, verified against `tls.extra_roots`. DNS goes to a fake
//! upstream on the host's loopback.

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
    echo: Upstream,
    unix: UnixUpstream,
    daemon: Daemon,
    session: Session,
}

fn world() -> World {
    let dns = FakeDns::start();
    let ca = TestCa::with_names(&["old.test", "new.test", "rw.test"]);
    let old = ca.serve_body(OLD_BODY);
    let new = ca.serve_body(NEW_BODY);
    let echo = ca.serve_sni_echo();
    let ws = TempDir::new("ws");
    let roots = ws.path().join("upstream-ca.pem");
    std::fs::write(&roots, &ca.ca_pem).unwrap();
    let sock = ws.path().join("upstream.sock");
    let unix = upstream::http_unix(&sock, UNIX_BODY);
    let (p, q, e) = (old.port(), new.port(), echo.port());
    let policy = format!(
        "version: 1\nname: redirects\nnetwork_rules:\n\
         \x20 - {{name: allow-names, domains: [old.test, rw.test, bad.test, sock.test], ports: [{p}], decision: allow}}\n\
         \x20 - {{name: vouch-upstreams, cidrs: [127.0.0.1/32], ports: [{p}], decision: allow}}\n\
         connect_redirects:\n\
         \x20 - {{name: old-to-new, match: '^old\\.test:{p}$', redirect_to: '127.0.0.1:{q}', message: moved}}\n\
         \x20 - {{name: sock-to-unix, match: '^sock\\.test:{p}$', redirect_to_unix: '{}'}}\n\
         \x20 - {{name: rewrite-rw, match: '^rw\\.test:{p}$', redirect_to: '127.0.0.1:{e}', tls: {{mode: rewrite_sni, sni: new.test}}}}\n\
         \x20 - {{name: rewrite-bad, match: '^bad\\.test:{p}$', redirect_to: '127.0.0.1:{e}', tls: {{mode: rewrite_sni, sni: unlisted.test}}}}\n",
        sock.display()
    );
    let config = format!("{}tls:\n  extra_roots: ['{}']\n", dns.server_config("synthetic"), roots.display());
    let daemon = Daemon::start_with_config(&config);
    let session = daemon.session_in(ws, &policy);
    session.workspace.write("ca.pem", &ca.ca_pem);
    World { dns, old, new, echo, unix, daemon, session }
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

/// The session CA is all the agent trusts here: `--cacert` names it (copied out of the
/// sandbox's state dir), so success proves the gateway terminated the connection.
#[test]
fn rewrite_sni_terminates_and_presents_the_new_name_upstream() {
    if !common::privileged("rewrite_sni_terminates_and_presents_the_new_name_upstream") {
        return;
    }
    let w = world();
    let url = format!("https://rw.test:{}/", w.old.port());
    let r = w.daemon.exec(
        &w.session,
        &[
            "curl",
            "-4",
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            "/run/agentsh/ca.pem",
            "-w",
            " %{http_version}",
            &url,
        ],
    );
    r.assert_exit(0);
    assert_eq!(r.stdout, "sni=new.test 1.1", "the target saw the rewritten name");
    let e = r.one("connect_redirect");
    assert_eq!((e.rule(), e.domain.as_deref()), ("rewrite-rw", Some("rw.test")));
    let c = r.one("net_connect");
    assert_eq!(c.str("upstream"), format!("127.0.0.1:{} (tls as new.test)", w.echo.port()));
    assert!(c.num("bytes_received") > 0);
    assert_eq!((w.old.accepted(), w.echo.accepted()), (0, 1));
}

/// Tools that do not take a CA option trust the session CA too: through `SSL_CERT_FILE` and
/// friends (Python), and, with those unset, through the host bundle's path (curl).
#[test]
fn rewrite_sni_is_trusted_by_default_trust_stores() {
    if !common::privileged("rewrite_sni_is_trusted_by_default_trust_stores") {
        return;
    }
    let w = world();
    let url = format!("https://rw.test:{}/", w.old.port());
    let py =
        format!("import urllib.request; print(urllib.request.urlopen('{url}', timeout=10).read().decode())");
    let r = w.daemon.exec(&w.session, &["python3", "-c", &py]);
    r.assert_exit(0);
    assert_eq!(r.stdout.trim(), "sni=new.test");
    let r = w.daemon.exec(
        &w.session,
        &[
            "env",
            "-u",
            "CURL_CA_BUNDLE",
            "-u",
            "SSL_CERT_FILE",
            "curl",
            "-4",
            "-sS",
            "--max-time",
            "10",
            &url,
        ],
    );
    r.assert_exit(0);
    assert_eq!(r.stdout, "sni=new.test");
}

/// A target whose certificate does not cover the rewritten name is never shown to the agent:
/// its connection is reset, and the event says why.
#[test]
fn rewrite_sni_to_a_target_that_fails_verification_is_reset() {
    if !common::privileged("rewrite_sni_to_a_target_that_fails_verification_is_reset") {
        return;
    }
    let w = world();
    let r = w.curl(&format!("https://bad.test:{}/", w.old.port()));
    assert_ne!(r.exit_code, 0, "{r:#?}");
    assert!(r.stdout.is_empty());
    let c = r.one("net_connect");
    assert_eq!(c.rule(), "rewrite-bad");
    let error = c.str("error");
    assert!(error.contains("upstream TLS as unlisted.test"), "{error}");
    assert_eq!(w.echo.accepted(), 1);
}

/// Plain HTTP on a rewrite_sni rule has no ClientHello to terminate: refused, not relayed.
#[test]
fn rewrite_sni_refuses_a_client_that_is_not_tls() {
    if !common::privileged("rewrite_sni_refuses_a_client_that_is_not_tls") {
        return;
    }
    let w = world();
    let url = format!("http://rw.test:{}/", w.old.port());
    let r = w.daemon.exec(&w.session, &["curl", "-4", "-sS", "--max-time", "10", &url]);
    assert!(r.stdout.contains("rewrite-rw"), "a 403 naming the rule: {r:#?}");
    let e = r.one("net_connect_blocked");
    assert_eq!((e.rule(), e.decision()), ("rewrite-rw", "deny"));
    assert_eq!(w.echo.accepted(), 0);
}
