//! The cost of the redirect backends, side by side in one run: a client process with no filter
//! (`direct`), under the sandbox filter answered by the seccomp user-notify `Supervisor`
//! (`seccomp`), under the same filter compiled for `SECCOMP_RET_TRACE` and answered by the ptrace
//! `Tracer` (`ptrace`), and in a cgroup with the eBPF cgroup/sock_addr programs attached
//! (`ebpf`, left out with the reason printed where the host cannot attach them).
//!
//! - `connect_first_byte`: connect, read the one byte the gateway stand-in writes, close. Direct
//!   connects to the stand-in itself; under a backend the client connects to 203.0.113.5:443
//!   (TEST-NET-3), which the decider (for eBPF, connect4) redirects to a stand-in, and the
//!   stand-in names the connection by peer address as the gateway does: from the table
//!   (seccomp, ptrace) or from the kernel's record (`Attached::take`, eBPF).
//! - `getpid` and `read_dev_zero` (64 bytes): calls no backend traps, which should cost the same
//!   under every backend (the filter answers them in the kernel; eBPF has no hook on them).
//!
//! Each client is a separate process that times its own loop (`Instant`, a vDSO call the filter
//! never sees) and reports the total over a pipe; criterion's `iter_custom` returns it. Every
//! client is a fork of this process (the eBPF one moves itself into the session cgroup). After
//! criterion, a plain table gives the median per call of interleaved rounds and what each
//! backend adds to direct, with the load average before and after. Everything runs in a fresh network namespace holding only `lo`. Run
//! with `cargo bench -p benches --bench trap_backends` as root; in test mode (no `--bench`) or
//! without root it prints why and skips.

mod ebpf_common;

use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use nix::unistd::{read, write};
use redirect::ebpf::probe::spawn_in_cgroup;
use redirect::filter::{FilterSpec, TrapAction, compile_with};
use redirect::ptrace::Tracer;
use redirect::seccomp::Supervisor;
use redirect::testing::{Tracee, spawn_traced, spawn_tracee};
use redirect::{Action, OriginalDstTable};

/// The destination the decider redirects to the gateway stand-in.
const REDIRECTED: &str = "203.0.113.5:443";
/// Rounds of the summary table, each running every backend once in turn.
const ROUNDS: usize = 5;
/// Calls per backend per round of the summary table: (connects, other calls).
const SUMMARY_N: (u64, u64) = (2_000, 200_000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Connect,
    Getpid,
    ReadZero,
}

const OPS: [(Op, &str); 3] =
    [(Op::Connect, "connect_first_byte"), (Op::Getpid, "getpid"), (Op::ReadZero, "read_dev_zero")];

/// Why this run does not measure, if it does not.
fn skip_reason() -> Option<&'static str> {
    if !std::env::args().any(|a| a == "--bench") {
        return Some("test mode (no --bench); run `cargo bench -p benches --bench trap_backends` as root");
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root: seccomp user-notify with pidfd_getfd, and ptrace");
    }
    None
}

/// The gateway stand-in: accept, take the original destination, write one byte, close.
fn serve(listener: TcpListener, table: Arc<OriginalDstTable>) {
    std::thread::spawn(move || {
        while let Ok((mut c, peer)) = listener.accept() {
            table.take(peer);
            let _ = c.write_all(b"x");
        }
    });
}

/// Runs `n` calls of `op` and returns how long they took, or the client's exit code on failure.
/// Uses only calls the filter leaves alone, apart from the measured connects.
fn run_op(op: Op, n: u64, dst: SocketAddr, zero: &std::fs::File) -> Result<Duration, i32> {
    let mut buf = [0u8; 64];
    let start = Instant::now();
    for _ in 0..n {
        match op {
            Op::Connect => {
                let mut s = TcpStream::connect(dst).map_err(|_| 3)?;
                s.read_exact(&mut buf[..1]).map_err(|_| 4)?;
            }
            Op::Getpid => {
                std::hint::black_box(nix::unistd::getpid());
            }
            Op::ReadZero => {
                if read(zero, &mut buf).ok() != Some(buf.len()) {
                    return Err(5);
                }
            }
        }
    }
    Ok(start.elapsed())
}

fn open_zero() -> std::fs::File {
    std::fs::File::open("/dev/zero").expect("open /dev/zero")
}

/// The client process's loop: read a command (op index and count) from `cmd`, run it, write the
/// elapsed nanoseconds to `result`; end on end-of-file.
fn client(cmd: OwnedFd, result: OwnedFd, dst: SocketAddr) -> i32 {
    let zero = open_zero();
    loop {
        let mut c = [0u8; 9];
        if read(&cmd, &mut c).ok() != Some(9) {
            return 0;
        }
        let n = u64::from_ne_bytes(c[1..].try_into().unwrap_or_default());
        let elapsed = match run_op(OPS[usize::from(c[0])].0, n, dst, &zero) {
            Ok(d) => d,
            Err(code) => return code,
        };
        if write(&result, &(elapsed.as_nanos() as u64).to_ne_bytes()).ok() != Some(8) {
            return 6;
        }
    }
}

/// Where one side's calls run: in this process, or in a client process and what keeps it and
/// its calls answered.
enum Side {
    Direct { gw: SocketAddr, zero: std::fs::File },
    Client { cmd: OwnedFd, result: OwnedFd, _keep: Box<dyn std::any::Any> },
}

struct Backend {
    name: &'static str,
    side: Side,
    /// Connects asked of this side so far.
    connects: Cell<u64>,
}

impl Backend {
    fn run(&self, op: Op, n: u64) -> Duration {
        if op == Op::Connect {
            self.connects.set(self.connects.get() + n);
        }
        let (cmd, result) = match &self.side {
            Side::Direct { gw, zero } => return run_op(op, n, *gw, zero).expect("direct calls"),
            Side::Client { cmd, result, .. } => (cmd, result),
        };
        let mut c = [0u8; 9];
        c[0] = OPS.iter().position(|(o, _)| *o == op).unwrap_or(0) as u8;
        c[1..].copy_from_slice(&n.to_ne_bytes());
        assert_eq!(write(cmd, &c).unwrap(), 9, "{}: command", self.name);
        let mut ns = [0u8; 8];
        let got = read(result, &mut ns).unwrap();
        assert_eq!(got, 8, "{}: the client died ({op:?})", self.name);
        Duration::from_nanos(u64::from_ne_bytes(ns))
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}

/// Starts the eBPF client: a fork of this process in the session `cgroup`.
fn start_ebpf(cgroup: &Path) -> Backend {
    let (cmd_r, cmd_w) = pipe();
    let (res_r, res_w) = pipe();
    let redirected: SocketAddr = REDIRECTED.parse().unwrap();
    // As in `start`: the child keeps the pipe ends the closure owns, ours close when it is dropped.
    let child =
        spawn_in_cgroup(cgroup, move || client(cmd_r, res_w, redirected)).expect("spawn the eBPF client");
    let side = Side::Client { cmd: cmd_w, result: res_r, _keep: Box::new(child) };
    Backend { name: "ebpf", side, connects: Cell::new(0) }
}

/// Starts the side of `name` (`direct`, `seccomp`, `seccomp-wq`: seccomp with the kernel's
/// plain wake-ups instead of synchronous ones, or `ptrace`).
fn start(name: &'static str, gw: SocketAddr, table: &Arc<OriginalDstTable>) -> Backend {
    if name == "direct" {
        return Backend { name, side: Side::Direct { gw, zero: open_zero() }, connects: Cell::new(0) };
    }
    let (cmd_r, cmd_w) = pipe();
    let (res_r, res_w) = pipe();
    let decider = Arc::new(move |dst: SocketAddr, _s, _p| {
        if dst == REDIRECTED.parse::<SocketAddr>().unwrap() { Action::Redirect(gw) } else { Action::Continue }
    });
    let redirected: SocketAddr = REDIRECTED.parse().unwrap();
    // The closure owns the client's pipe ends: the client keeps them, and our copies close when
    // the spawn drops it here.
    let body = move || client(cmd_r, res_w, redirected);
    let (tracee, answering): (Tracee, Box<dyn std::any::Any>) = if name.starts_with("seccomp") {
        let program = compile_with(&FilterSpec::sandbox_default(), TrapAction::UserNotify).unwrap();
        let mut t = spawn_tracee(&program, body).expect("spawn");
        let sup = Supervisor::new(t.take_notify(), decider, table.clone())
            .sync_wake_up(name == "seccomp")
            .spawn()
            .expect("supervisor");
        (t, Box::new(sup))
    } else {
        let program = compile_with(&FilterSpec::sandbox_default(), TrapAction::Trace).unwrap();
        let t = spawn_traced(&program, body).expect("spawn");
        let tracer = Tracer::new(decider, table.clone()).spawn(t.traced_pid().unwrap()).expect("seize");
        (t, Box::new(tracer))
    };
    let mut tracee = tracee;
    tracee.release().expect("release");
    // The tracee first: dropping it ends the client while its calls are still answered.
    let keep: Box<dyn std::any::Any> = Box::new((tracee, answering));
    Backend { name, side: Side::Client { cmd: cmd_w, result: res_r, _keep: keep }, connects: Cell::new(0) }
}

/// `/proc/loadavg`'s first three fields.
fn load_average() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Some(why) = skip_reason() {
        eprintln!("trap_backends: skipped ({why})");
        return;
    }
    let load_start = load_average();
    // Before any thread exists, so every later thread and client inherits the namespace.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
    redirect::testing::bring_loopback_up().expect("bring lo up");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = listener.local_addr().unwrap();
    let table = Arc::new(OriginalDstTable::new(4096, Duration::from_secs(30)));
    serve(listener, table.clone());
    let mut backends: Vec<Backend> =
        ["direct", "seccomp", "seccomp-wq", "ptrace"].into_iter().map(|n| start(n, gw, &table)).collect();
    // The eBPF session has a stand-in of its own, naming connections from the kernel's record.
    let ebpf_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(ebpf_gw) = ebpf_listener.local_addr().unwrap() else { unreachable!() };
    let ebpf = match ebpf_common::Session::start("trap_backends", ebpf_gw) {
        Ok(session) => {
            backends.push(start_ebpf(&session.cgroup));
            Some((ebpf_common::StandIn::start(ebpf_listener, session.att.clone()), session))
        }
        Err(why) => {
            eprintln!("trap_backends: no ebpf column ({why})");
            None
        }
    };

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (op, label) in OPS {
        let mut g = c.benchmark_group(label);
        for b in &backends {
            g.bench_function(b.name, |bench| bench.iter_custom(|iters| b.run(op, iters)));
        }
        g.finish();
    }

    let load_before = load_average();
    let mut rows = Vec::new();
    for (op, label) in OPS {
        let n = if matches!(op, Op::Connect) { SUMMARY_N.0 } else { SUMMARY_N.1 };
        let mut per: Vec<Vec<f64>> = vec![Vec::new(); backends.len()];
        for _ in 0..ROUNDS {
            for (i, b) in backends.iter().enumerate() {
                per[i].push(b.run(op, n).as_nanos() as f64 / n as f64);
            }
        }
        rows.push((label, per.into_iter().map(median).collect::<Vec<_>>()));
    }
    println!("\ntrap_backends: median ns per call over {ROUNDS} interleaved rounds");
    println!(
        "load average (1, 5, 15 min): at start {load_start}, before the rounds {load_before}, after {}",
        load_average()
    );
    let mut header = format!("{:<20}", "call");
    for b in &backends {
        header += &format!(" {:>10}", b.name);
    }
    for b in &backends[1..] {
        header += &format!(" {:>14}", format!("{} added", b.name));
    }
    println!("{header}");
    for (label, ns) in rows {
        let mut line = format!("{label:<20}");
        for v in &ns {
            line += &format!(" {v:>10.0}");
        }
        for v in &ns[1..] {
            line += &format!(" {:>14.0}", v - ns[0]);
        }
        println!("{line}");
    }
    assert!(table.is_empty(), "every redirected connection was named by the stand-in");
    if let Some((stand_in, session)) = ebpf {
        let asked = backends.iter().find(|b| b.name == "ebpf").map_or(0, |b| b.connects.get());
        drop(backends);
        let seen = stand_in.finish();
        assert_eq!(seen.named, asked, "every eBPF connect was named from the kernel's record: {seen:?}");
        drop(session);
    }
    c.final_summary();
}
