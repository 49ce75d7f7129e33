//! The eBPF backend tells a refused UDP connect from a refused UDP send: connecting sends
//! nothing (glibc connects a datagram socket to every candidate address to sort `getaddrinfo`
//! answers), so the gateway can audit sends without reporting every address sort.

#![allow(unsafe_code, missing_docs)]

mod ebpf_support;

use ebpf_support::*;
use redirect::ebpf::RefusalReason;
use redirect::ebpf::probe::{ProbeData, ProbeOp, run_in_cgroup};

#[test]
fn a_refused_udp_connect_is_reported_apart_from_a_refused_send() {
    let Some(f) = fixture("a_refused_udp_connect_is_reported_apart_from_a_refused_send") else { return };
    let Fixture { backend, gw, dns, cg, .. } = &f;
    let att = backend.attach(&cg.0, params(gw, dns)).expect("attach");
    let mut refusals = backend.refusals().expect("refusal stream");
    let mut refused = |connected: bool| {
        let dst = "192.0.2.1:9".parse().unwrap();
        let op = ProbeOp::UdpExchange { dst, connected, payload: ProbeData::new(b"x") };
        let r = run_in_cgroup(&cg.0, op, TIMEOUT).unwrap();
        assert_eq!(r.errno, Some(libc::EPERM), "{r:?}");
        let e = refusals.find(|e| e.reason != RefusalReason::SelfTest).expect("a refusal event");
        assert_eq!((e.cgroup_id, e.dst, e.tgid), (att.cgroup_id(), dst, r.pid));
        (r.stage, e.reason)
    };
    assert_eq!(refused(true), ("connect", RefusalReason::UdpConnect));
    assert_eq!(refused(false), ("send", RefusalReason::Udp));
}
