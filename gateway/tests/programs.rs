//! Programs that must keep working unmodified through the funnel (DESIGN.md §1 "the agent keeps
//! its own socket"): asyncio setting TCP_NODELAY after connect, a non-blocking connect with
//! poll, eight threads connecting at once, a forked child; each sees the upstream's body and
//! `getpeername()` reports the original destination, not the gateway.

mod common;

use common::{
    Daemon, ExecResult, Session,
    upstream::{self, HTTP_BODY, Upstream},
};
use serde_json::Value;

const CLIENTS: &str = include_str!("scripts/clients.py");

fn setup() -> (Daemon, Session, Upstream) {
    let http = upstream::http();
    let daemon = Daemon::start();
    let session = daemon.session(&format!(
        "version: 1\nname: programs\nnetwork_rules:\n\
         \x20 - {{name: export-http, cidrs: [127.0.0.1/32], ports: [{}], decision: allow}}\n",
        http.port()
    ));
    (daemon, session, http)
}

/// Run `clients.py MODE PORT`, check every printed connection, and return the lines.
fn run_clients(daemon: &Daemon, s: &Session, up: &Upstream, mode: &str, expected: usize) -> Vec<Value> {
    let port = up.port().to_string();
    let r: ExecResult = daemon.python(s, "clients.py", CLIENTS, &[mode, &port]);
    r.assert_exit(0);
    let lines: Vec<Value> =
        r.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line per connection")).collect();
    assert_eq!(lines.len(), expected, "{r:#?}");
    for l in &lines {
        assert_eq!(l["body"], HTTP_BODY, "{l}");
        assert_eq!(
            l["peer"],
            serde_json::json!(["127.0.0.1", up.port()]),
            "getpeername = original destination"
        );
    }
    let connects = r.of("net_connect");
    assert_eq!(connects.len(), expected, "one event per connection: {r:#?}");
    for e in connects {
        assert_eq!(
            (e.rule(), e.decision(), e.str("protocol"), e.str("host")),
            ("export-http", "allow", "http", "localhost")
        );
        assert_eq!(e.remote.as_deref(), Some(format!("127.0.0.1:{}", up.port()).as_str()));
        assert!(e.num("bytes_sent") > 0 && e.num("bytes_received") > 0, "{e:?}");
    }
    assert!(r.of("net_connect_blocked").is_empty(), "{r:#?}");
    assert_eq!(up.accepted(), expected);
    lines
}

#[test]
fn curl_blocking_connect_works() {
    if !common::privileged("curl_blocking_connect_works") {
        return;
    }
    let (d, s, up) = setup();
    let url = format!("http://127.0.0.1:{}/", up.port());
    let r = d.exec(&s, &["curl", "-sS", "--max-time", "10", &url]);
    r.assert_exit(0);
    assert_eq!(r.stdout, HTTP_BODY);
    assert_eq!(r.one("net_connect").rule(), "export-http");
}

#[test]
fn python_blocking_client_sees_the_original_peer() {
    if !common::privileged("python_blocking_client_sees_the_original_peer") {
        return;
    }
    let (d, s, up) = setup();
    run_clients(&d, &s, &up, "blocking", 1);
}

#[test]
fn asyncio_client_keeps_tcp_nodelay() {
    if !common::privileged("asyncio_client_keeps_tcp_nodelay") {
        return;
    }
    let (d, s, up) = setup();
    let lines = run_clients(&d, &s, &up, "asyncio", 1);
    assert_eq!(lines[0]["nodelay"], 1, "TCP_NODELAY set after connect applies to the agent's own socket");
}

#[test]
fn nonblocking_connect_with_poll() {
    if !common::privileged("nonblocking_connect_with_poll") {
        return;
    }
    let (d, s, up) = setup();
    let lines = run_clients(&d, &s, &up, "poll", 1);
    let l = &lines[0];
    assert!(l["connect"] == "EINPROGRESS" || l["connect"] == "0", "a non-blocking connect's answer: {l}");
    assert_eq!(l["ready"], true);
    assert_eq!(l["so_error"], 0);
}

#[test]
fn eight_threads_connect_at_once() {
    if !common::privileged("eight_threads_connect_at_once") {
        return;
    }
    let (d, s, up) = setup();
    run_clients(&d, &s, &up, "threads", 8);
}

#[test]
fn forked_child_goes_through_the_funnel() {
    if !common::privileged("forked_child_goes_through_the_funnel") {
        return;
    }
    let (d, s, up) = setup();
    let lines = run_clients(&d, &s, &up, "fork", 2);
    let hows: Vec<&str> = lines.iter().filter_map(|l| l["how"].as_str()).collect();
    assert_eq!(hows, ["child", "parent"]);
}
