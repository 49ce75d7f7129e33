//! The eBPF backend and the session's own loopback servers, on the real kernel: a TCP connect from
//! the session to a loopback listener the session created is left alone (no gateway, no record),
//! as it would be in a network namespace of the session's own; a listener of the host, of another
//! session or one sharing its port is funnelled like any other destination. Each test runs again
//! in a fresh network namespace holding only `lo`.

#![allow(unsafe_code, missing_docs)]

mod ebpf_support;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ebpf_support::*;
use redirect::ebpf::probe::{ProbeOp, ProbeReport, run_in_cgroup};
use redirect::ebpf::{Attached, RefusalReason, SessionParams};
use redirect::sockaddr::canonical;

/// `probe` reached the serving probe `server` directly: its reply, no record, no gateway.
fn assert_direct(att: &Attached, probe: &ProbeReport, server: ProbeReport, what: &str) {
    assert_eq!(probe.errno, None, "{what}: client failed at {}: {probe:?}", probe.stage);
    assert_eq!(probe.reply, b"direct", "{what}: the session's own server answered: {probe:?}");
    assert_eq!(server.errno, None, "{what}: server failed at {}: {server:?}", server.stage);
    let local = probe.local.expect("client local address");
    assert_eq!(server.peer.map(canonical), Some(canonical(local)), "{what}: the server accepted this client");
    assert!(att.redirected(local).is_none(), "{what}: a direct connection leaves no record");
}

#[test]
fn the_sessions_own_loopback_listeners_are_reached_directly() {
    let Some(f) = fixture("the_sessions_own_loopback_listeners_are_reached_directly") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    // No IPv6 gateway: an IPv6 connect anywhere else is refused, so [::1] below is reached only
    // because it is the session's own.
    let att = backend.attach(&cg.0, params(gw, dns)).expect("attach");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let seen = serve(s, gw, &att, &stop);
        // (listener, where the client connects)
        let cases = [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.2", "127.0.0.2"),
            ("[::1]", "[::1]"),
            ("127.0.0.1", "[::ffff:127.0.0.1]"),
            ("0.0.0.0", "127.0.0.1"),
            ("[::]", "[::1]"),
            ("[::]", "127.0.0.1"),
        ];
        for (bind, dst) in cases {
            let port = free_port();
            let what = format!("{bind} <- {dst}");
            let server = serve_in(&cg.0, format!("{bind}:{port}").parse().unwrap(), b"direct", TIMEOUT);
            let r = connect(&cg.0, &format!("{dst}:{port}"));
            assert_direct(&att, &r, server.join().unwrap(), &what);
            assert_eq!(r.peer, Some(format!("{dst}:{port}").parse().unwrap()), "{what}");
        }
        assert!(seen.try_recv().is_err(), "the gateway saw none of them");
    });
}

#[test]
fn a_cgroup_below_the_session_is_the_session() {
    let Some(f) = fixture("a_cgroup_below_the_session_is_the_session") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    let att = backend.attach(&cg.0, params(gw, dns)).expect("attach");
    let nested = TempCgroup::new(&cg.0, "nested");
    for (server_cg, client_cg, what) in
        [(&nested.0, &cg.0, "nested server"), (&cg.0, &nested.0, "nested client")]
    {
        let port = free_port();
        let server = serve_in(server_cg, SocketAddr::from(([127, 0, 0, 1], port)), b"direct", TIMEOUT);
        let r = connect(client_cg, &format!("127.0.0.1:{port}"));
        assert_direct(&att, &r, server.join().unwrap(), what);
    }
    drop(nested);
}

#[test]
fn listeners_of_the_host_and_of_other_sessions_are_funnelled() {
    let Some(f) = fixture("listeners_of_the_host_and_of_other_sessions_are_funnelled") else { return };
    let Fixture { backend, root, gw: gw_a, dns, cg: cg_a } = &f;
    let cg_b = TempCgroup::new(root, "b");
    let gw_b = TcpListener::bind("127.0.0.1:0").unwrap();
    let att_a = backend.attach(&cg_a.0, params(gw_a, dns)).expect("attach a");
    let att_b = backend.attach(&cg_b.0, params(&gw_b, dns)).expect("attach b");
    let mut refusals = backend.refusals().expect("refusal stream");
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    let host6 = TcpListener::bind("[::1]:0").unwrap();
    host.set_nonblocking(true).unwrap();
    host6.set_nonblocking(true).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let seen_a = serve(s, gw_a, &att_a, &stop);
        let seen_b = serve(s, &gw_b, &att_b, &stop);
        // The host's listener (this test process, outside every session): to the gateway.
        let dst = host.local_addr().unwrap().to_string();
        let r = connect(&cg_a.0, &dst);
        assert_landed(&r, &seen_a.recv_timeout(TIMEOUT).expect("A's gateway saw it"), &dst, &dst);
        assert!(host.accept().is_err(), "nothing reached the host's listener directly");
        // Its IPv6 listener is like any IPv6 destination of a session without an IPv6 gateway.
        let dst6 = host6.local_addr().unwrap();
        let r = connect(&cg_a.0, &dst6.to_string());
        assert_eq!((r.errno, r.stage), (Some(libc::EPERM), "connect"), "{r:?}");
        let e = refusals.find(|e| e.reason != RefusalReason::SelfTest).expect("a refusal");
        assert_eq!((e.reason, e.dst), (RefusalReason::NoGateway, dst6));
        assert!(host6.accept().is_err(), "nothing reached the host's IPv6 listener");

        // A's own server, specific and wildcard, asked for from B: B's gateway decides.
        for bind in ["127.0.0.1", "0.0.0.0"] {
            let port = free_port();
            let addr: SocketAddr = format!("{bind}:{port}").parse().unwrap();
            let server_a = serve_in(&cg_a.0, addr, b"direct", Duration::from_secs(1));
            let dst = format!("127.0.0.1:{port}");
            let r = connect(&cg_b.0, &dst);
            let got = seen_b.recv_timeout(TIMEOUT).expect("B's gateway saw the connection");
            assert_landed(&r, &got, &dst, &dst);
            let server_a = server_a.join().unwrap();
            assert_eq!(
                (server_a.errno, server_a.stage),
                (Some(libc::ETIMEDOUT), "accept"),
                "A's server ({bind}) was reached from B: {server_a:?}"
            );
            assert!(seen_a.try_recv().is_err(), "B's connection is not A's");
        }
    });
}

#[test]
fn a_listener_sharing_its_port_is_funnelled_and_deny_rules_still_apply() {
    let Some(f) = fixture("a_listener_sharing_its_port_is_funnelled_and_deny_rules_still_apply") else {
        return;
    };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    let denied_port = free_port();
    let p = SessionParams { deny_list: vec![deny("127.0.0.0/8", Some(denied_port))], ..params(gw, dns) };
    let att = backend.attach(&cg.0, p).expect("attach");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let seen = serve(s, gw, &att, &stop);
        // One process, its own listener: direct.
        let op = ProbeOp::ListenConnect { bind: loopback, reuseport: false, accept: true };
        let r = run_in_cgroup(&cg.0, op, TIMEOUT).unwrap();
        assert_eq!(r.errno, None, "{r:?}");
        assert_eq!(r.accepted, r.local, "the listener accepted the probe's own connect");
        assert!(att.redirected(r.local.unwrap()).is_none());
        // With SO_REUSEPORT another user's socket could share the port, and the kernel picks the
        // member per connection: the session's listener is no longer its alone.
        let op = ProbeOp::ListenConnect { bind: loopback, reuseport: true, accept: false };
        let r = run_in_cgroup(&cg.0, op, TIMEOUT).unwrap();
        assert_eq!(r.errno, None, "{r:?}");
        let got = seen.recv_timeout(TIMEOUT).expect("the gateway saw the connection");
        assert_eq!(got.peer, canonical(r.local.unwrap()));
        assert_eq!(Some(got.rec.original.dst), r.peer, "recorded for the shared listener");
    });
    // A deny rule covering the session's own server still refuses it.
    let server =
        serve_in(&cg.0, SocketAddr::from(([127, 0, 0, 1], denied_port)), b"direct", Duration::from_secs(1));
    let r = connect(&cg.0, &format!("127.0.0.1:{denied_port}"));
    assert_eq!((r.errno, r.stage), (Some(libc::EPERM), "connect"), "{r:?}");
    assert_eq!(server.join().unwrap().errno, Some(libc::ETIMEDOUT));
}
