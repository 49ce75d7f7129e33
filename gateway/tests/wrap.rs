//! `agentsh wrap`: a command run in the caller's own context (here: the host's network
//! namespace, as in a sidecar's agent container) is governed by the session's gateway once its
//! notify fd is handed over; the hand-off is refused to a foreign uid and for a process that is
//! not the wrapper's own child; a refused or failed hand-off runs nothing unless --fail-open.

mod common;

use std::{
    io::Write, os::fd::AsFd, os::unix::fs::PermissionsExt, os::unix::net::UnixStream, process::Command,
};

use common::{
    Daemon, Session, TempDir,
    dns::FakeDns,
    upstream::{TLS_BODY, TestCa},
};

fn wrap(d: &Daemon, s: &Session, args: &[&str]) -> (i32, String, String) {
    let mut c = d.command();
    c.current_dir(s.workspace.path()).args(["wrap", "--session", &s.id, "--"]).args(args);
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn events(d: &Daemon, s: &Session) -> Vec<serde_json::Value> {
    let out = d.cli(&["events", "--session", &s.id, "--json"]);
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn a_wrapped_command_is_governed_where_it_runs() {
    if !common::privileged("a_wrapped_command_is_governed_where_it_runs") {
        return;
    }
    let ca = TestCa::new();
    let tls = ca.serve();
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&dns.server_config("synthetic"));
    let policy = format!(
        "version: 1\nname: wrap\nnetwork_rules:\n\
         \x20 - {{name: local-upstream, cidrs: [127.0.0.1/32], ports: [{}], decision: allow}}\n\
         \x20 - {{name: no-testnet, cidrs: [203.0.113.0/24], decision: deny}}\n\
         \x20 - {{name: only-allowed, domains: [allowed.test], ports: [443], decision: allow}}\n",
        tls.port()
    );
    let s = d.session(&policy);
    s.workspace.write("ca.pem", &ca.ca_pem);
    let url = format!("https://localhost:{}/", tls.port());
    let (code, out, err) = wrap(&d, &s, &["curl", "-sS", "-m", "5", "--cacert", "ca.pem", &url]);
    assert_eq!((code, out.as_str()), (0, TLS_BODY), "{err}");
    let (code, _, _) = wrap(&d, &s, &["curl", "-sS", "-m", "3", "http://203.0.113.5/"]);
    assert_ne!(code, 0);
    // The host's loopback is not the agent's own here: without a rule it is refused too (an
    // HTTP client gets the gateway's 403).
    let other = format!("http://127.0.0.1:{}/", dns.addr.port());
    let (_, out, _) =
        wrap(&d, &s, &["curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", &other]);
    assert_eq!(out, "403");
    let (code, out, _) =
        wrap(&d, &s, &["sh", "-c", "tail -1 /proc/self/cgroup; getent hosts denied.test || echo refused"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("/agentsh/{}", s.id)) && out.contains("refused"), "{out}");
    assert!(!dns.questions().iter().any(|q| q.name == "denied.test"), "a denied name never left");

    let evs = events(&d, &s);
    let of = |t: &str| evs.iter().filter(|e| e["type"] == t).collect::<Vec<_>>();
    assert_eq!(of("wrap_started").len(), 4, "{evs:#?}");
    assert!(of("net_connect").iter().any(|e| e["policy"]["rule"] == "local-upstream"), "{evs:#?}");
    let blocked = of("net_connect_blocked");
    assert!(blocked.iter().any(|e| e["policy"]["rule"] == "no-testnet"), "{evs:#?}");
    assert!(
        blocked.iter().any(|e| e["remote"].as_str().is_some_and(|r| r.starts_with("127.0.0.1:"))),
        "{evs:#?}"
    );
    assert!(
        of("dns_query").iter().any(|e| e["domain"] == "denied.test" && e["policy"]["decision"] == "deny")
    );
}

#[test]
fn the_hand_off_is_refused_to_a_foreign_uid_and_nothing_runs() {
    if !common::privileged("the_hand_off_is_refused_to_a_foreign_uid_and_nothing_runs") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&dns.server_config("synthetic"));
    let s = d.session("version: 1\nname: w\n");
    // Let nobody reach the hand-off socket, so the gateway's own check is what refuses.
    std::fs::set_permissions(d.state.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let bin = TempDir::new("bin");
    let agentsh = bin.path().join("agentsh");
    common::copy_binary(&agentsh);
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = bin.path().join("ran");
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&agentsh)
        .args(["wrap", "--session", &s.id, "--", "touch"])
        .arg(&marker)
        .env("AGENTSH_STATE_DIR", d.state.path())
        .env("AGENTSH_NO_AUTO", "1")
        .current_dir("/")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains("may not join") && stderr.contains("not run"), "{stderr}");
    assert!(!marker.exists(), "the command never ran");
    let audit = std::fs::read_to_string(d.state.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("listener_auth_fail") && l.contains("uid_not_allowed")),
        "{audit}"
    );
}

#[test]
fn a_process_that_is_not_the_wrappers_child_is_refused() {
    if !common::privileged("a_process_that_is_not_the_wrappers_child_is_refused") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&dns.server_config("synthetic"));
    let s = d.session("version: 1\nname: w\n");
    let mut sock = UnixStream::connect(d.state.path().join("notify.sock")).unwrap();
    // Name pid 1, which this test did not start.
    let hello = serde_json::json!({"session_id": s.id, "pid": 1, "argv": ["x"]}).to_string();
    sock.write_all(&(hello.len() as u32).to_be_bytes()).unwrap();
    sock.write_all(hello.as_bytes()).unwrap();
    let devnull = std::fs::File::open("/dev/null").unwrap();
    redirect::handoff::send_fd(&sock, devnull.as_fd()).unwrap();
    let mut len = [0u8; 4];
    std::io::Read::read_exact(&mut sock, &mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    std::io::Read::read_exact(&mut sock, &mut body).unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(reply["error"].as_str().is_some_and(|e| e.contains("not the wrapper's own child")), "{reply}");
    assert!(reply["command_id"].is_null());
}

#[test]
fn a_failed_hand_off_runs_nothing_unless_fail_open() {
    if !common::privileged("a_failed_hand_off_runs_nothing_unless_fail_open") {
        return;
    }
    let dns = FakeDns::start();
    let d = Daemon::start_with_config(&dns.server_config("synthetic"));
    let dir = TempDir::new("marker");
    let marker = dir.path().join("ran");
    let m = marker.to_str().unwrap();
    let out =
        d.command().args(["wrap", "--session", "session-does-not-exist", "--", "touch", m]).output().unwrap();
    assert_eq!(out.status.code(), Some(126), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!marker.exists());
    let out = d
        .command()
        .args(["wrap", "--fail-open", "--session", "session-does-not-exist", "--", "touch", m])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(marker.exists(), "--fail-open ran it unwrapped");
}

/// The wrapped command trusts the session CA without being told: TLS the gateway terminates
/// (a `rewrite_sni` redirect) verifies with curl's and Python's default trust, TLS it passes
/// through still verifies against the caller's own bundle (the base of the command's), and
/// the trust files are gone once the command ended.
#[test]
fn a_wrapped_command_trusts_the_session_ca_beside_the_callers_roots() {
    if !common::privileged("a_wrapped_command_trusts_the_session_ca_beside_the_callers_roots") {
        return;
    }
    let ca = TestCa::with_names(&["localhost", "new.test"]);
    let echo = ca.serve_sni_echo();
    let dns = FakeDns::start();
    let roots = TempDir::new("roots");
    let own = roots.write("own-roots.pem", &ca.ca_pem);
    let config = format!("{}tls:\n  extra_roots: ['{}']\n", dns.server_config("synthetic"), own.display());
    let d = Daemon::start_with_config(&config);
    let e = echo.port();
    let policy = format!(
        "version: 1\nname: wrap-trust\nnetwork_rules:\n\
         \x20 - {{name: rw, domains: [rw.test], ports: [{e}], decision: allow}}\n\
         \x20 - {{name: local-echo, cidrs: [127.0.0.1/32], ports: [{e}], decision: allow}}\n\
         connect_redirects:\n\
         \x20 - {{name: rewrite-rw, match: '^rw\\.test:{e}$', redirect_to: '127.0.0.1:{e}', tls: {{mode: rewrite_sni, sni: new.test}}}}\n"
    );
    let s = d.session(&policy);
    // The caller trusts only its own roots (the echo server's CA), as a container might.
    let wrap_with_own_roots = |args: &[&str]| {
        let mut c = d.command();
        c.current_dir(s.workspace.path()).env("SSL_CERT_FILE", &own).args(["wrap", "--session", &s.id, "--"]);
        let out = c.args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let terminated = format!("https://rw.test:{e}/");
    let (code, out, err) = wrap_with_own_roots(&["curl", "-4", "-sS", "--max-time", "10", &terminated]);
    assert_eq!((code, out.as_str()), (0, "sni=new.test"), "terminated with the session CA: {err}");
    let py = format!(
        "import urllib.request; print(urllib.request.urlopen('{terminated}', timeout=10).read().decode())"
    );
    let (code, out, err) = wrap_with_own_roots(&["python3", "-c", &py]);
    assert_eq!((code, out.trim()), (0, "sni=new.test"), "{err}");
    let passed_through = format!("https://localhost:{e}/");
    let (code, out, err) = wrap_with_own_roots(&["curl", "-4", "-sS", "--max-time", "10", &passed_through]);
    assert_eq!((code, out.as_str()), (0, "sni=localhost"), "the caller's own roots still apply: {err}");

    let (code, out, _) = wrap_with_own_roots(&[
        "sh",
        "-c",
        "echo \"$SSL_CERT_FILE $AGENTSH_SESSION_ID\"; grep -c BEGIN \"$SSL_CERT_FILE\"",
    ]);
    assert_eq!(code, 0);
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    let (bundle, sid) = first.split_once(' ').unwrap_or_default();
    assert_eq!(sid, s.id);
    assert_eq!(lines.next(), Some("2"), "the caller's root and the session CA: {out}");
    assert!(!std::path::Path::new(bundle).exists(), "{bundle} outlived the command");
}
