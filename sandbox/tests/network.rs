//! Network namespace tests: only `lo`, up; host loopback unreachable; gateway listeners
//! handed to the parent accept connections made inside the sandbox.
mod common;

use std::io::{ErrorKind, Read};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{StateDir, privileged, run, run_with, sh};

#[test]
fn only_loopback_exists_and_is_up() {
    if !privileged("only_loopback_exists_and_is_up") {
        return;
    }
    let state = StateDir::new();
    let out = run(sh("ls /sys/class/net; cat /sys/class/net/lo/flags", &state));
    assert_eq!(out.code, 0, "{out:?}");
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("lo"), "{out:?}");
    let flags = lines.next().expect("lo flags");
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "IFF_UP must be set, flags {flags:#x}");
    assert_eq!(lines.next(), None, "no other interface: {out:?}");
}

#[test]
fn host_loopback_and_outside_addresses_are_unreachable() {
    if !privileged("host_loopback_and_outside_addresses_are_unreachable") {
        return;
    }
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let state = StateDir::new();
    // 192.0.2.1 is TEST-NET-1: with only `lo` there is no route, so nothing leaves the netns.
    let script = format!(
        "bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>&1; echo rc=$?; \
         bash -c 'exec 3<>/dev/tcp/192.0.2.1/80' 2>&1; echo rc=$?"
    );
    let out = run(sh(&script, &state));
    assert!(out.stdout.contains("Connection refused"), "{out:?}");
    assert!(out.stdout.contains("Network is unreachable"), "{out:?}");
    assert_eq!(out.stdout.matches("rc=1").count(), 2, "{out:?}");
    assert_eq!(host.accept().map(|_| ()).unwrap_err().kind(), ErrorKind::WouldBlock);
}

fn accept_within(l: &TcpListener, limit: Duration) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no connection on {:?}: {e}", l.local_addr()),
        }
    }
}

#[test]
fn gateway_listeners_accept_connections_from_inside() {
    if !privileged("gateway_listeners_accept_connections_from_inside") {
        return;
    }
    let state = StateDir::new();
    let script = "read p4 p6; echo hi4 >/dev/tcp/127.0.0.1/$p4 && echo hi6 >/dev/tcp/::1/$p6";
    let mut spec = sh(&format!("exec bash -c '{script}'"), &state);
    spec.gateway_listeners = true;
    let (stdin_r, stdin_w) = common::stdin_pipe();
    spec.stdin = sandbox::Stdio::Fd(stdin_r);
    let out = run_with(spec, |launched| {
        assert_eq!(launched.listeners.len(), 2);
        let v4 = launched.listeners[0].local_addr().unwrap();
        let v6 = launched.listeners[1].local_addr().unwrap();
        assert!(v4.ip().is_loopback() && v4.is_ipv4(), "{v4}");
        assert!(v6.ip().is_loopback() && v6.is_ipv6(), "{v6}");
        common::send_line(stdin_w, &format!("{} {}\n", v4.port(), v6.port()));
        for (listener, want) in launched.listeners.iter().zip(["hi4\n", "hi6\n"]) {
            let mut conn = accept_within(listener, Duration::from_secs(10));
            assert!(conn.peer_addr().unwrap().ip().is_loopback());
            let mut got = String::new();
            conn.read_to_string(&mut got).unwrap();
            assert_eq!(got, want);
        }
    });
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn host_network_keeps_the_launchers_namespace() {
    if !privileged("host_network_keeps_the_launchers_namespace") {
        return;
    }
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let state = StateDir::new();
    let mut spec =
        sh(&format!("readlink /proc/self/ns/net; exec bash -c 'echo hi >/dev/tcp/127.0.0.1/{port}'"), &state);
    spec.host_network = true;
    spec.self_addresses = false;
    let out = run(spec);
    assert_eq!(out.code, 0, "{out:?}");
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(out.stdout.lines().next(), ours.to_str(), "{out:?}");
    let mut got = String::new();
    accept_within(&host, Duration::from_secs(5)).read_to_string(&mut got).unwrap();
    assert_eq!(got, "hi\n");
}

#[test]
fn host_network_refuses_private_namespace_settings() {
    let state = StateDir::new();
    for (listeners, self_addresses) in [(true, false), (false, true)] {
        let mut spec = sh("true", &state);
        spec.host_network = true;
        spec.gateway_listeners = listeners;
        spec.self_addresses = self_addresses;
        match sandbox::launch(&spec) {
            Err(sandbox::SandboxError::InvalidSpec { field: "host_network", .. }) => {}
            other => panic!("expected a host_network InvalidSpec, got {:?}", other.map(|l| l.pid)),
        }
    }
}
