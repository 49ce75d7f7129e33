//! Connect + first byte through the eBPF cgroup/sock_addr redirect, side by side with a direct
//! loopback connect, in one run.
//!
//! One loopback listener stands in for the gateway: it accepts, names the connection the way the
//! gateway does (`Attached::take` by peer address; the direct side looks up and finds nothing) and
//! writes one byte. The client connects, reads that byte and closes.
//! - `direct`: this process outside any session cgroup, connecting to the listener itself;
//! - `ebpf_redirect`: this process moved into an attached session cgroup, connecting to
//!   192.0.2.1:443 (TEST-NET), which connect4 rewrites to the listener;
//! - `original_dst_lookup`: the gateway's map lookup alone.
//!
//! The time of one attach (programs linked to the cgroup plus the self-test) is printed.
//!
//! Everything runs in a fresh network namespace holding only `lo`, so no packet can leave
//! whatever happens. Run with `cargo bench -p benches --bench ebpf_connect` as root on a host
//! with cgroup v2; in test mode (no `--bench`) or without root it prints why and skips.

mod ebpf_common;

use std::io::Read;
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use criterion::Criterion;
use ebpf_common::{Session, StandIn, cgroup2_root};

/// Why this run does not measure, if it does not.
fn skip_reason() -> Option<String> {
    if !std::env::args().any(|a| a == "--bench") {
        return Some(
            "test mode (no --bench); run `cargo bench -p benches --bench ebpf_connect` as root".into(),
        );
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root: loads BPF programs and creates a cgroup".into());
    }
    if cgroup2_root().is_none() {
        return Some("no cgroup v2 hierarchy mounted".into());
    }
    None
}

/// Moves this whole process into the cgroup at `dir`.
fn join(dir: &Path) {
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).expect("join cgroup");
}

fn round_trip(dst: SocketAddr) {
    let mut c = TcpStream::connect(dst).expect("connect");
    let mut b = [0u8; 1];
    c.read_exact(&mut b).expect("first byte");
}

fn main() {
    if let Some(why) = skip_reason() {
        eprintln!("ebpf_connect: skipped ({why})");
        return;
    }
    // Only this thread is moved, before any other exists; every later thread inherits it.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
    redirect::testing::bring_loopback_up().expect("bring lo up");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(gw) = listener.local_addr().unwrap() else { unreachable!() };
    let session = Session::start("ebpf_connect", gw).expect("eBPF session");
    let stand_in = StandIn::start(listener, session.att.clone());

    let mut c = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(5));
    let mut g = c.benchmark_group("connect_first_byte");
    g.bench_function("direct", |b| b.iter(|| round_trip(SocketAddr::V4(gw))));
    join(&session.cgroup);
    let sentinel = SocketAddr::V4(SocketAddrV4::new([192, 0, 2, 1].into(), 443));
    g.bench_function("ebpf_redirect", |b| b.iter(|| round_trip(sentinel)));
    g.finish();
    join(&cgroup2_root().expect("cgroup2"));
    // What the gateway pays per accept to name a connection: one map lookup (a miss here).
    let unknown: SocketAddr = "127.0.0.1:1".parse().unwrap();
    c.bench_function("original_dst_lookup", |b| {
        b.iter(|| session.att.original_dst(std::hint::black_box(unknown)))
    });

    let seen = stand_in.finish();
    eprintln!("ebpf_connect: the gateway stand-in named {} of {} connections", seen.named, seen.accepted);
    assert!(seen.named > 0, "redirected connections were named");
    drop(session);
    c.final_summary();
}
