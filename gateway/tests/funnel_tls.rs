//! End to end through the funnel, as root on the real kernel: curl in a sandbox reaching a local
//! TLS upstream (CA made at run time) by SNI, by IP literal, and a plain HTTP upstream by Host;
//! denied names never reach the upstream; `agentsh run --policy strict` blocks at connect time.

mod common;

use common::{
    Daemon, Session,
    upstream::{self, HTTP_BODY, TLS_BODY, TestCa, Upstream},
};

/// A daemon, a session whose policy names the upstreams, and the upstreams themselves.
struct Setup {
    daemon: Daemon,
    session: Session,
    tls: Upstream,
    http: Upstream,
}

fn setup() -> Setup {
    let ca = TestCa::new();
    let tls = ca.serve();
    let http = upstream::http();
    let (tp, hp) = (tls.port(), http.port());
    let daemon = Daemon::start();
    let session = daemon.session(&format!(
        "version: 1\nname: funnel-tls\nnetwork_rules:\n\
         \x20 - {{name: deny-blocked, domains: [blocked.test, denied.test], decision: deny, message: not for agents}}\n\
         \x20 - {{name: allow-localhost, domains: [localhost], ports: [{tp}, {hp}], decision: allow}}\n\
         \x20 - {{name: export-upstreams, cidrs: [127.0.0.1/32], ports: [{tp}, {hp}], decision: allow}}\n"
    ));
    session.workspace.write("ca.pem", &ca.ca_pem);
    Setup { daemon, session, tls, http }
}

#[test]
fn allowed_sni_reaches_the_tls_upstream() {
    if !common::privileged("allowed_sni_reaches_the_tls_upstream") {
        return;
    }
    let s = setup();
    let url = format!("https://localhost:{}/", s.tls.port());
    let r = s.daemon.exec(&s.session, &["curl", "-4", "-sS", "--max-time", "10", "--cacert", "ca.pem", &url]);
    r.assert_exit(0);
    assert_eq!(r.stdout, TLS_BODY);
    let e = r.one("net_connect");
    assert_eq!(e.rule(), "allow-localhost");
    assert_eq!(e.decision(), "allow");
    assert_eq!(e.domain.as_deref(), Some("localhost"));
    assert_eq!(e.remote.as_deref(), Some(format!("127.0.0.1:{}", s.tls.port()).as_str()));
    assert_eq!(e.str("protocol"), "tls");
    assert_eq!(e.str("sni"), "localhost");
    assert!(e.num("bytes_sent") > 0 && e.num("bytes_received") > u64::try_from(TLS_BODY.len()).unwrap());
    assert!(r.of("net_connect_blocked").is_empty(), "{r:#?}");
    assert_eq!(s.tls.accepted(), 1);
    // The same event reached the audit file.
    assert!(s.daemon.audit().iter().any(|a| a.kind == "net_connect" && a.rule() == "allow-localhost"));
}

#[test]
fn denied_sni_is_blocked_before_the_upstream() {
    if !common::privileged("denied_sni_is_blocked_before_the_upstream") {
        return;
    }
    let s = setup();
    let p = s.tls.port();
    let resolve = format!("blocked.test:{p}:127.0.0.1");
    let url = format!("https://blocked.test:{p}/");
    let r = s.daemon.exec(
        &s.session,
        &["curl", "-sS", "--max-time", "10", "--cacert", "ca.pem", "--resolve", &resolve, &url],
    );
    assert_ne!(r.exit_code, 0, "{r:#?}");
    assert!(r.stdout.is_empty());
    let e = r.one("net_connect_blocked");
    assert_eq!(e.rule(), "deny-blocked");
    assert_eq!(e.decision(), "deny");
    assert_eq!(e.policy.as_ref().and_then(|p| p.message.as_deref()), Some("not for agents"));
    assert_eq!(e.str("sni"), "blocked.test");
    assert_eq!(e.remote.as_deref(), Some(format!("127.0.0.1:{p}").as_str()));
    assert!(r.of("net_connect").is_empty(), "{r:#?}");
    assert_eq!(s.tls.accepted(), 0, "a denied name must never be dialled");
}

#[test]
fn ip_literal_is_decided_by_the_cidr_rule() {
    if !common::privileged("ip_literal_is_decided_by_the_cidr_rule") {
        return;
    }
    let s = setup();
    let url = format!("https://127.0.0.1:{}/", s.tls.port());
    let r = s.daemon.exec(&s.session, &["curl", "-sS", "--max-time", "10", "--cacert", "ca.pem", &url]);
    r.assert_exit(0);
    assert_eq!(r.stdout, TLS_BODY);
    let e = r.one("net_connect");
    assert_eq!(e.rule(), "export-upstreams");
    assert_eq!(e.str("protocol"), "tls");
    assert_eq!(e.domain, None, "an IP literal sends no SNI");
}

#[test]
fn plain_http_is_decided_by_host() {
    if !common::privileged("plain_http_is_decided_by_host") {
        return;
    }
    let s = setup();
    let hp = s.http.port();
    let r = s
        .daemon
        .exec(&s.session, &["curl", "-4", "-sS", "--max-time", "10", &format!("http://localhost:{hp}/")]);
    r.assert_exit(0);
    assert_eq!(r.stdout, HTTP_BODY);
    let e = r.one("net_connect");
    assert_eq!((e.rule(), e.str("protocol"), e.str("host")), ("allow-localhost", "http", "localhost"));
    assert!(e.num("bytes_received") > 0);

    let r = s.daemon.exec(
        &s.session,
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "-H",
            "Host: denied.test",
            &format!("http://127.0.0.1:{hp}/"),
        ],
    );
    r.assert_exit(0);
    assert!(r.stdout.ends_with("\n403"), "{r:#?}");
    assert!(r.stdout.contains("\"rule\":\"deny-blocked\""), "the 403 body names the rule: {r:#?}");
    let e = r.one("net_connect_blocked");
    assert_eq!((e.rule(), e.str("protocol"), e.str("host")), ("deny-blocked", "http", "denied.test"));
    assert_eq!(s.http.accepted(), 1, "only the allowed request reached the upstream");
}

#[test]
fn run_strict_blocks_curl_at_connect_time() {
    if !common::privileged("run_strict_blocks_curl_at_connect_time") {
        return;
    }
    let daemon = Daemon::start();
    let ws = common::TempDir::new("ws");
    let w = ws.path().to_str().unwrap();
    let curl = ["curl", "-sS", "--max-time", "5", "https://203.0.113.5/"];

    let mut args = vec!["run", "--policy", "strict", "--workspace", w, "--"];
    args.extend_from_slice(&curl);
    let out = daemon.cli(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "curl cannot connect: {stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("agentsh: net_connect_blocked 203.0.113.5:443")
            && l.contains("deny (rule deny-all-egress)")
            && l.contains("this session has no network access")),
        "human mode names the block and its rule: {stderr}"
    );

    let mut args =
        vec!["run", "--policy", "strict", "--workspace", w, "--output", "json", "--events", "all", "--"];
    args.extend_from_slice(&curl);
    let out = daemon.cli(&args);
    let r: common::ExecResult = serde_json::from_slice(&out.stdout).expect("json result");
    r.assert_exit(7);
    let e = r.one("net_connect_blocked");
    let (stage, errno) =
        if common::backend() == "ebpf" { ("kernel", "EPERM") } else { ("connect", "EACCES") };
    assert_eq!((e.rule(), e.decision(), e.str("stage")), ("deny-all-egress", "deny", stage));
    assert_eq!(e.remote.as_deref(), Some("203.0.113.5:443"));

    // The errno itself, from a program that prints it.
    let script = "import socket,errno\ns=socket.socket()\ntry:\n    s.connect(('203.0.113.5',443))\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n";
    ws.write("eacces.py", script);
    let out = daemon.cli(&[
        "run",
        "--policy",
        "strict",
        "--workspace",
        w,
        "--output",
        "json",
        "--",
        "python3",
        "eacces.py",
    ]);
    let r: common::ExecResult = serde_json::from_slice(&out.stdout).expect("json result");
    r.assert_exit(0);
    assert_eq!(r.stdout, format!("{errno}\n"));

    let out = daemon.cli(&["session", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]", "run destroys its session");
}
