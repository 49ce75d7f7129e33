//! The eBPF cgroup/sock_addr backend on the real kernel: probe processes in a temporary cgroup v2
//! connect to TEST-NET addresses and land on loopback listeners standing in for the gateway and
//! the session resolver. Each test runs again in a fresh network namespace holding only `lo`, so
//! even a missed rewrite has nowhere to go; every test also checks the rewrite itself.

#![allow(unsafe_code, missing_docs)]

mod ebpf_support;

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ebpf_support::*;
use redirect::ebpf::probe::{ProbeData, ProbeOp, run_in_cgroup, spawn_in_cgroup};
use redirect::ebpf::{EbpfError, Program, RefusalReason, SessionParams};

#[test]
fn tcp_v4_lands_on_the_gateway_with_its_original_destination() {
    let Some(f) = fixture("tcp_v4_lands_on_the_gateway_with_its_original_destination") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    let att = backend.attach(&cg.0, params(gw, dns)).expect("attach");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let seen = serve(s, gw, &att, &stop);
        let r = connect(&cg.0, "192.0.2.1:443");
        let got = seen.recv_timeout(TIMEOUT).expect("gateway saw the connection");
        assert_landed(&r, &got, "192.0.2.1:443", "192.0.2.1:443");
        assert_eq!(got.rec.original.gateway, gw.local_addr().unwrap());
        assert!(att.original_dst(got.peer).is_none(), "take removed the record");
    });
}

#[test]
fn tcp_v6_and_v4_mapped_land_on_their_gateways() {
    let Some(f) = fixture("tcp_v6_and_v4_mapped_land_on_their_gateways") else { return };
    let Fixture { backend, gw: gw4, cg, .. } = &f;
    let gw6 = TcpListener::bind("[::1]:0").unwrap();
    let p = SessionParams { gateway_v6: Some(v6(gw6.local_addr().unwrap())), ..f.params() };
    let att = backend.attach(&cg.0, p).expect("attach");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let seen6 = serve(s, &gw6, &att, &stop);
        let seen4 = serve(s, gw4, &att, &stop);
        let r = connect(&cg.0, "[2001:db8::1]:443");
        let got = seen6.recv_timeout(TIMEOUT).expect("v6 gateway saw the connection");
        assert_landed(&r, &got, "[2001:db8::1]:443", "[2001:db8::1]:443");
        assert_eq!(got.rec.original.gateway, gw6.local_addr().unwrap());

        let r = connect(&cg.0, "[::ffff:192.0.2.1]:443");
        let got = seen4.recv_timeout(TIMEOUT).expect("v4 gateway saw the v4-mapped connection");
        assert_landed(&r, &got, "[::ffff:192.0.2.1]:443", "192.0.2.1:443");
    });
}

#[test]
fn ipv6_without_a_v6_gateway_is_refused() {
    let Some(f) = fixture("ipv6_without_a_v6_gateway_is_refused") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    let _att = backend.attach(&cg.0, params(gw, dns)).expect("attach");
    let r = connect(&cg.0, "[2001:db8::1]:443");
    assert_eq!((r.errno, r.stage), (Some(libc::EPERM), "connect"), "{r:?}");
}

#[test]
fn denied_destinations_get_eperm_in_the_kernel() {
    let Some(f) = fixture("denied_destinations_get_eperm_in_the_kernel") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    let p = SessionParams {
        deny_list: vec![
            deny("192.0.2.128/25", None),
            deny("198.51.100.0/24", Some(443)),
            deny("2001:db8:dead::/48", None),
        ],
        ..params(gw, dns)
    };
    let mut refusals = backend.refusals().expect("refusal stream");
    assert!(backend.refusals().is_none(), "handed out once");
    let att = backend.attach(&cg.0, p).expect("attach");
    for _ in 0..2 {
        let probe = refusals.next().expect("the self-test's refusals (canary rule, raw datagram)");
        assert_eq!((probe.reason, probe.cgroup_id), (RefusalReason::SelfTest, att.cgroup_id()));
    }
    let cases = [
        ("192.0.2.200:443", RefusalReason::DenyRule, Some(0)),
        ("192.0.2.129:22", RefusalReason::DenyRule, Some(0)),
        ("198.51.100.7:443", RefusalReason::DenyRule, Some(1)),
        ("[::ffff:192.0.2.200]:80", RefusalReason::DenyRule, Some(0)),
        ("[2001:db8:dead::1]:443", RefusalReason::DenyRule, Some(2)),
        ("[2001:db8:beef::1]:443", RefusalReason::NoGateway, None),
    ];
    for (dst, reason, index) in cases {
        let r = connect(&cg.0, dst);
        assert_eq!((r.errno, r.stage), (Some(libc::EPERM), "connect"), "{dst}: {r:?}");
        let e = refusals.next().unwrap_or_else(|| panic!("a refusal event for {dst}"));
        assert_eq!(
            (e.dst, e.reason, e.rule.and_then(|m| m.index)),
            (dst.parse().unwrap(), reason, index),
            "{e:?}"
        );
        assert_eq!((e.cgroup_id, e.tgid, e.pid), (att.cgroup_id(), r.pid, r.pid));
        if index.is_some() {
            let rule = e.rule.unwrap().rule;
            assert!(rule.covers(e.dst), "{rule:?} covers {}", e.dst);
        }
    }
    assert!(refusals.next().is_none());
    assert_eq!(refusals.lost(), 0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let seen = serve(s, gw, &att, &stop);
        // Outside the rules (another port, the other half of the /24): funnelled as usual.
        for dst in ["198.51.100.7:80", "192.0.2.1:443"] {
            let r = connect(&cg.0, dst);
            let got = seen.recv_timeout(TIMEOUT).expect("gateway saw the connection");
            assert_landed(&r, &got, dst, dst);
        }
    });
}

#[test]
fn the_gateway_itself_is_not_rewritten_but_other_loopback_is() {
    let Some(f) = fixture("the_gateway_itself_is_not_rewritten_but_other_loopback_is") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let att = backend.attach(&cg.0, params(gw, dns)).expect("attach");
    let gw_addr = gw.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        // Straight to the gateway: unchanged, and so unnamed (the stand-in closes it).
        let op = ProbeOp::TcpConnect {
            dst: gw_addr,
            loopback_only: false,
            payload: ProbeData::default(),
            want_reply: false,
        };
        let r = run_in_cgroup(&cg.0, op, TIMEOUT).unwrap();
        assert_eq!(r.errno, None, "{r:?}");
        assert_eq!(r.peer, Some(gw_addr));
        assert!(att.original_dst(r.local.unwrap()).is_none(), "no record for a direct gateway connection");
        // Another loopback port is a destination like any other: policy decides in the gateway.
        let seen = serve(s, gw, &att, &stop);
        let dst = other.local_addr().unwrap().to_string();
        let r = connect(&cg.0, &dst);
        let got = seen.recv_timeout(TIMEOUT).expect("gateway saw the loopback connection");
        assert_landed(&r, &got, &dst, &dst);
        other.set_nonblocking(true).unwrap();
        assert!(other.accept().is_err(), "nothing reached the other listener directly");
        // A TCP service sharing the resolver's UDP address is not the session's: funnelled too.
        let beside_dns = TcpListener::bind(dns.local_addr().unwrap()).expect("TCP on the resolver's port");
        let dst = dns.local_addr().unwrap().to_string();
        let r = connect(&cg.0, &dst);
        let got = seen.recv_timeout(TIMEOUT).expect("gateway saw the connection");
        assert_landed(&r, &got, &dst, &dst);
        beside_dns.set_nonblocking(true).unwrap();
        assert!(beside_dns.accept().is_err(), "nothing reached the TCP service beside the resolver");
        // And UDP to the gateway's address is other UDP: refused.
        let op = ProbeOp::UdpExchange { dst: gw_addr, connected: false, payload: ProbeData::new(b"x") };
        let r = run_in_cgroup(&cg.0, op, TIMEOUT).unwrap();
        assert_eq!((r.errno, r.stage), (Some(libc::EPERM), "send"), "{r:?}");
    });
}

#[test]
fn dns_goes_to_the_session_resolver_and_replies_come_from_the_asked_address() {
    let Some(f) = fixture("dns_goes_to_the_session_resolver_and_replies_come_from_the_asked_address") else {
        return;
    };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    let dns6 = UdpSocket::bind("[::1]:0").unwrap();
    let p = SessionParams { dns_v6: Some(v6(dns6.local_addr().unwrap())), ..params(gw, dns) };
    let att = backend.attach(&cg.0, p).expect("attach");
    let mut refusals = backend.refusals().expect("refusal stream");
    for (sock, dst, connected) in [
        (&dns, "192.0.2.53:53", false),
        (&dns, "192.0.2.53:53", true),
        (&dns, "[::ffff:192.0.2.53]:53", false),
        (&&dns6, "[2001:db8::53]:53", false),
        (&&dns6, "[2001:db8::53]:53", true),
    ] {
        let server = resolver(sock);
        let dst: SocketAddr = dst.parse().unwrap();
        let op = ProbeOp::UdpExchange { dst, connected, payload: ProbeData::new(b"q1") };
        let r = run_in_cgroup(&cg.0, op, TIMEOUT).unwrap();
        let from = server.join().unwrap();
        assert_eq!(r.errno, None, "{dst} connected={connected}: {r:?}");
        assert!(
            from.ip().to_canonical().is_loopback(),
            "the query reached the resolver from loopback ({from})"
        );
        assert_eq!(r.local.map(|l| l.port()), Some(from.port()), "the resolver saw the probe's socket");
        assert_eq!(r.reply, b"answer:q1");
        assert_eq!(r.reply_from, Some(dst), "reply source restored");
        if connected {
            assert_eq!(r.peer, Some(dst), "getpeername names the asked resolver");
        }
    }
    // Other UDP cannot be funnelled: refused.
    let op = ProbeOp::UdpExchange {
        dst: "192.0.2.1:9".parse().unwrap(),
        connected: false,
        payload: ProbeData::new(b"x"),
    };
    let r = run_in_cgroup(&cg.0, op, TIMEOUT).unwrap();
    assert_eq!((r.errno, r.stage), (Some(libc::EPERM), "send"), "{r:?}");
    let e = refusals.find(|e| e.reason != RefusalReason::SelfTest).expect("a refusal event");
    assert_eq!((e.reason, e.dst, e.tgid), (RefusalReason::Udp, "192.0.2.1:9".parse().unwrap(), r.pid));
    assert_eq!((e.cgroup_id, e.transport), (att.cgroup_id(), Some(redirect::Transport::Udp)));
}

#[test]
fn two_cgroups_with_different_gateways_stay_isolated() {
    let Some(f) = fixture("two_cgroups_with_different_gateways_stay_isolated") else { return };
    let Fixture { backend, root, gw: gw_a, dns, cg: cg_a } = &f;
    let cg_b = TempCgroup::new(root, "b");
    let gw_b = TcpListener::bind("127.0.0.1:0").unwrap();
    let pa = SessionParams { deny_list: vec![deny("192.0.2.9/32", None)], ..params(gw_a, dns) };
    let att_a = backend.attach(&cg_a.0, pa).expect("attach a");
    let att_b = backend.attach(&cg_b.0, params(&gw_b, dns)).expect("attach b");
    assert_ne!(att_a.cgroup_id(), att_b.cgroup_id());
    assert!(matches!(backend.attach(&cg_a.0, params(gw_a, dns)), Err(EbpfError::AlreadyAttached { .. })));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let seen_a = serve(s, gw_a, &att_a, &stop);
        // B's stand-in names connections through A's session: it must never succeed.
        let seen_b_via_a = serve(s, &gw_b, &att_a, &stop);
        let r = connect(&cg_a.0, "192.0.2.1:443");
        assert_landed(&r, &seen_a.recv_timeout(TIMEOUT).unwrap(), "192.0.2.1:443", "192.0.2.1:443");
        let r = connect_only(&cg_b.0, "192.0.2.2:443");
        assert_eq!(r.errno, None, "{r:?}");
        let local = r.local.unwrap();
        assert!(att_b.original_dst(local).is_some_and(|o| o.dst == "192.0.2.2:443".parse().unwrap()));
        assert!(seen_b_via_a.recv_timeout(Duration::from_millis(300)).is_err(), "A named B's connection");
        assert!(att_a.original_dst(local).is_none());
        // A's deny rule is A's alone.
        assert_eq!(connect(&cg_a.0, "192.0.2.9:443").errno, Some(libc::EPERM));
        let r = connect_only(&cg_b.0, "192.0.2.9:443");
        assert_eq!(r.errno, None, "{r:?}");
        assert_eq!(
            att_b.original_dst(r.local.unwrap()).map(|o| o.dst),
            Some("192.0.2.9:443".parse().unwrap())
        );
    });
}

#[test]
fn a_process_outside_the_cgroup_is_unaffected() {
    let Some(f) = fixture("a_process_outside_the_cgroup_is_unaffected") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let att = backend.attach(&cg.0, params(gw, dns)).expect("attach");
    // This test process is outside the cgroup: its loopback connect goes where it asked.
    let c = TcpStream::connect(other.local_addr().unwrap()).unwrap();
    assert_eq!(c.peer_addr().unwrap(), other.local_addr().unwrap());
    let (_conn, peer) = other.accept().unwrap();
    assert!(att.original_dst(peer).is_none());
    // And a TEST-NET connect is not rewritten: in this namespace it has no route at all.
    let e = TcpStream::connect_timeout(&"192.0.2.1:443".parse().unwrap(), TIMEOUT).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH), "{e}");
    // A child in a cgroup below the session's is still the session's.
    let nested = TempCgroup::new(&cg.0, "nested");
    let r = run_in_cgroup(
        &nested.0,
        ProbeOp::TcpConnect {
            dst: "192.0.2.1:443".parse().unwrap(),
            loopback_only: true,
            payload: ProbeData::default(),
            want_reply: false,
        },
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.errno, None, "{r:?}");
    assert_eq!(att.original_dst(r.local.unwrap()).map(|o| o.dst), Some("192.0.2.1:443".parse().unwrap()));
    drop(nested);
}

#[test]
fn the_self_test_fails_when_programs_are_missing_or_the_listener_is_wrong() {
    let Some(f) = fixture("the_self_test_fails_when_programs_are_missing_or_the_listener_is_wrong") else {
        return;
    };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    for omit in [
        Program::Connect4,
        Program::SockOps,
        Program::Getpeername4,
        Program::Egress,
        Program::SockCreate,
        Program::Setsockopt,
    ] {
        let e =
            backend.attach_omitting(&cg.0, params(gw, dns), &[omit]).expect_err("attach without a program");
        assert!(matches!(e, EbpfError::SelfTest(_)), "{omit:?}: {e}");
        // Nothing stays attached: a connect from the cgroup is not rewritten (and has no route).
        let r = connect(&cg.0, "192.0.2.1:443");
        assert_eq!(r.errno, Some(libc::ENETUNREACH), "after failed attach without {omit:?}: {r:?}");
    }
    // A gateway address with nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let wrong = params(&closed, dns);
    drop(closed);
    let e = backend.attach(&cg.0, wrong).expect_err("attach to a dead listener");
    assert!(matches!(e, EbpfError::SelfTest(ref m) if m.contains("Connection refused")), "{e}");
    // The cgroup is usable again once the mistakes are gone.
    backend.attach(&cg.0, params(gw, dns)).expect("attach after failures");
}

#[test]
fn deny_list_updates_are_atomic_under_concurrent_connects() {
    const SWAPS: usize = 40;
    let Some(f) = fixture("deny_list_updates_are_atomic_under_concurrent_connects") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    // 192.0.2.77 is denied in both sets; everything else about the sets differs.
    let set_a: Vec<_> = (0..64u8)
        .map(|i| deny(&format!("10.{i}.0.0/16"), None))
        .chain([deny("192.0.2.77/32", None)])
        .collect();
    let set_b: Vec<_> = (0..64u8)
        .map(|i| deny(&format!("172.16.{i}.0/24"), Some(443)))
        .chain([deny("192.0.2.0/25", Some(443))])
        .collect();
    let att =
        backend.attach(&cg.0, SessionParams { deny_list: set_a.clone(), ..params(gw, dns) }).expect("attach");
    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let _seen = serve(s, gw, &att, &stop);
        let swapper = s.spawn(|| {
            let started = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let set =
                    if swaps.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) { &set_b } else { &set_a };
                att.update_denies(set).expect("update");
            }
            started.elapsed()
        });
        // Connect until the sets have been swapped many times under the connects.
        let probes: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    while swaps.load(Ordering::Relaxed) < SWAPS {
                        let op =
                            ProbeOp::TcpConnectLoop { dst: "192.0.2.77:443".parse().unwrap(), count: 500 };
                        let r = run_in_cgroup(&cg.0, op, Duration::from_secs(20)).unwrap();
                        results.lock().unwrap().push(r);
                    }
                })
            })
            .collect();
        probes.into_iter().for_each(|p| p.join().unwrap());
        stop.store(true, Ordering::Relaxed);
        let took = swapper.join().unwrap();
        let n = swaps.load(Ordering::Relaxed);
        eprintln!("{n} deny-set swaps of 65 rules in {took:?}");
    });
    let results = results.into_inner().unwrap();
    let refused: u32 = results.iter().map(|r| r.eperm).sum();
    assert!(refused >= 4 * 500, "connects ran during the swaps ({refused})");
    for r in results {
        assert_eq!((r.ok, r.other, r.eperm), (0, 0, 500), "every connect refused: {r:?}");
    }
    // Each set is really in force once installed.
    att.update_denies(&set_a).unwrap();
    assert_eq!(connect(&cg.0, "10.3.1.1:443").errno, Some(libc::EPERM));
    att.update_denies(&set_b).unwrap();
    assert_eq!(connect(&cg.0, "192.0.2.1:443").errno, Some(libc::EPERM));
    assert_eq!(connect(&cg.0, "172.16.3.9:443").errno, Some(libc::EPERM));
    let r = connect(&cg.0, "10.3.1.1:443");
    assert_eq!(
        att.original_dst(r.local.unwrap()).map(|o| o.dst),
        Some("10.3.1.1:443".parse().unwrap()),
        "{r:?}"
    );
}

#[test]
fn nothing_of_the_session_leaves_for_a_non_loopback_address() {
    let Some(f) = fixture("nothing_of_the_session_leaves_for_a_non_loopback_address") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    // A non-loopback address of this (private) namespace.
    let st = std::process::Command::new("ip").args(["addr", "add", "192.0.2.100/32", "dev", "lo"]).status();
    assert!(st.is_ok_and(|s| s.success()), "ip addr add (iproute2) failed");
    let att = backend.attach(&cg.0, params(gw, dns)).expect("attach");
    let mut refusals = backend.refusals().expect("refusal stream");
    let serve_on = |bind: &str| {
        let cg = cg.0.clone();
        let op = ProbeOp::Serve { bind: bind.parse().unwrap(), payload: ProbeData::new(b"secret") };
        std::thread::spawn(move || run_in_cgroup(&cg, op, TIMEOUT).unwrap())
    };
    // A session process serving on loopback is reachable from the host.
    let server = serve_on("127.0.0.1:41000");
    assert_eq!(fetch("127.0.0.1:41000".parse().unwrap(), TIMEOUT).expect("loopback service"), b"secret");
    assert_eq!(server.join().unwrap().errno, None);
    // On any other address its answers never leave: the handshake cannot complete.
    let server = serve_on("192.0.2.100:41001");
    let got = fetch("192.0.2.100:41001".parse().unwrap(), Duration::from_secs(1));
    assert!(got.is_err(), "a connection to the session's service on 192.0.2.100 got through: {got:?}");
    let r = server.join().unwrap();
    assert_eq!((r.errno, r.stage), (Some(libc::ETIMEDOUT), "accept"), "{r:?}");
    let e = refusals.find(|e| e.reason != RefusalReason::SelfTest).expect("an egress refusal");
    assert_eq!(
        (e.reason, e.dst.ip(), e.cgroup_id),
        (RefusalReason::Egress, "192.0.2.100".parse().unwrap(), att.cgroup_id())
    );
}

#[test]
fn a_spawned_process_runs_its_body_inside_the_session_cgroup() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let Some(f) = fixture("a_spawned_process_runs_its_body_inside_the_session_cgroup") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    let _att = backend.attach(&cg.0, params(gw, dns)).expect("attach");
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let child = spawn_in_cgroup(&cg.0, move || {
        let mut b = [0u8; 1];
        // SAFETY: one byte each way through a socket inherited from the parent.
        unsafe {
            libc::write(fd, b"r".as_ptr().cast(), 1);
            libc::read(fd, b.as_mut_ptr().cast(), 1);
        }
        i32::from(b[0])
    })
    .unwrap();
    let mut ready = [0u8; 1];
    ours.read_exact(&mut ready).expect("the body ran");
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid())).unwrap();
    let name = cg.0.file_name().unwrap().to_str().unwrap();
    assert!(cgroup.trim_end().ends_with(&format!("/{name}")), "child in {cgroup}");
    ours.write_all(&[7]).unwrap();
    assert_eq!(child.wait().unwrap(), 7, "the body's return value is the exit code");
}
