//! What only the ptrace backend has to prove: every task the tracee starts (threads, forked
//! children, exec'd programs) is traced and redirected; the tracee can neither ptrace nor get
//! rid of its tracer; stopping the tracer kills every tracee instead of leaving it untraced;
//! signals, stops and continues reach the tracee as they would untraced; and the tracer never
//! reaps a child of the process that is not its tracee. Each test runs in a fresh network
//! namespace.

#![allow(unsafe_code)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, Routes, TestDecider, gateway, sys, table};
use redirect::ptrace::{Exit, Tracer, TracerHandle};
use redirect::testing::{
    Tracee, TraceeExit, child_fail, require_root_and_trace, rerun_in_fresh_netns, spawn_traced,
};
use rustix::event::{PollFd, PollFlags, poll};

const REDIRECTED: &str = "203.0.113.5:443";
const DENIED: &str = "203.0.113.6:443";

fn start(name: &str) -> bool {
    require_root_and_trace(name) && !rerun_in_fresh_netns(name)
}

/// Spawns `body` as a traced tracee and seizes it with a tracer for `routes`.
fn traced(
    routes: Routes,
    table: Arc<redirect::OriginalDstTable>,
    body: impl FnOnce() -> i32,
) -> (Tracee, TracerHandle) {
    let tracee = spawn_traced(&Backend::Ptrace.program(), body).expect("spawn tracee");
    let pid = tracee.traced_pid().expect("traced pid");
    let handle = Tracer::new(Arc::new(TestDecider(routes)), table).spawn(pid).expect("seize tracee");
    (tracee, handle)
}

fn routes(gw4: SocketAddr) -> Routes {
    Routes { gw4, gw6: "[::1]:9".parse().unwrap() }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe")
}

/// Reads one byte from `fd` within `limit`, or `None`.
fn read_byte_within(fd: &OwnedFd, limit: Duration) -> Option<u8> {
    let mut pfd = [PollFd::new(fd, PollFlags::IN)];
    let ts = rustix::event::Timespec { tv_sec: limit.as_secs() as i64, tv_nsec: limit.subsec_nanos() as i64 };
    if poll(&mut pfd, Some(&ts)).ok()? == 0 {
        return None;
    }
    let mut b = [0u8; 1];
    (rustix::io::read(fd, &mut b).ok()? == 1).then_some(b[0])
}

/// Reads a native-endian pid from `fd` (blocking).
fn read_pid(fd: &OwnedFd) -> libc::pid_t {
    let mut b = [0u8; 4];
    assert_eq!(rustix::io::read(fd, &mut b).unwrap(), 4, "pid report");
    libc::pid_t::from_ne_bytes(b)
}

/// The agent's view of a redirected connect: the peer it asked for, and a round trip.
fn client(tag: i32) -> i32 {
    let dst: SocketAddr = REDIRECTED.parse().unwrap();
    let mut s = match TcpStream::connect(dst) {
        Ok(s) => s,
        Err(e) => return child_fail(tag, &format!("connect: {e}")),
    };
    if s.peer_addr().ok() != Some(dst) {
        return child_fail(tag + 1, "getpeername is not the original destination");
    }
    let mut ok = [0u8; 2];
    if s.write_all(b"hello").is_err() || s.read_exact(&mut ok).is_err() || &ok != b"ok" {
        return child_fail(tag + 2, "round trip through the gateway");
    }
    0
}

fn fork_and_wait(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: fork in the single-threaded tracee; the child runs `child` and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: _exit in the forked child.
        unsafe { libc::_exit(child()) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` lives for the call.
    if pid < 0 || unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return child_fail(90, "fork or waitpid");
    }
    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) }
}

/// A thread, a forked child, an exec'd shell and the tracee itself each connect; all four are
/// redirected, registered under their own task id, and answered by the gateway.
#[test]
fn threads_forks_and_execs_are_redirected() {
    let name = "threads_forks_and_execs_are_redirected";
    if !start(name) {
        return;
    }
    let bash = ["/bin/bash", "/usr/bin/bash"].into_iter().find(|p| std::path::Path::new(p).exists());
    let bash = std::ffi::CString::new(bash.expect("bash (its /dev/tcp is the exec'd client)")).unwrap();
    let gw = TcpListener::bind("127.0.0.1:0").unwrap();
    let gw_addr = gw.local_addr().unwrap();
    let table = table();
    let seen = gateway(gw, table.clone(), 4);
    let body = move || {
        let thread = std::thread::spawn(|| client(10)).join().unwrap_or(19);
        if thread != 0 {
            return thread;
        }
        let forked = fork_and_wait(|| client(20));
        if forked != 0 {
            return forked;
        }
        let script =
            c"exec 3<>/dev/tcp/203.0.113.5/443 && printf hello >&3 && read -r -n 2 r <&3 && [ \"$r\" = ok ]";
        let exec = fork_and_wait(|| {
            let argv = [bash.as_ptr(), c"-c".as_ptr(), script.as_ptr(), std::ptr::null()];
            // SAFETY: argv is a NULL-terminated array of NUL-terminated strings; no environment.
            unsafe { libc::execve(bash.as_ptr(), argv.as_ptr(), [std::ptr::null()].as_ptr()) };
            child_fail(30, "execve bash")
        });
        if exec != 0 {
            return child_fail(31, &format!("bash client exited {exec}"));
        }
        client(40)
    };
    let (mut tracee, handle) = traced(routes(gw_addr), table.clone(), body);
    tracee.release().unwrap();
    assert_eq!(tracee.wait().unwrap(), TraceeExit::Code(0));
    assert_eq!(handle.join().unwrap(), Exit::TraceesGone);
    let got: Vec<_> = seen.iter().take(4).collect();
    let mut pids: Vec<u32> = got
        .iter()
        .map(|a| {
            let o = a.original.unwrap_or_else(|| panic!("no original destination for {}", a.peer));
            assert_eq!(o.dst, REDIRECTED.parse().unwrap());
            assert_eq!(a.greeting, b"hello");
            o.pid
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 4, "four distinct tasks were redirected: {pids:?}");
    assert!(table.is_empty());
}

/// The `TracerPid:` line of `/proc/self/status`.
fn tracer_pid() -> Option<i32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("TracerPid:")).and_then(|v| v.trim().parse().ok())
}

/// Every ptrace request of the tracee, and of a child against it, fails with EPERM; it stays
/// traced, and its denied connect is still answered by the tracer (EACCES, not the ENOSYS an
/// untraced `SECCOMP_RET_TRACE` gives).
#[test]
fn the_tracee_can_neither_ptrace_nor_detach() {
    let name = "the_tracee_can_neither_ptrace_nor_detach";
    if !start(name) {
        return;
    }
    let body = || {
        use libc::*;
        // SAFETY: getpid and getppid have no preconditions.
        let (me, parent) = unsafe { (getpid() as u64, getppid() as u64) };
        let attempts = [
            ("TRACEME", [PTRACE_TRACEME as u64, 0, 0, 0, 0]),
            ("DETACH self", [PTRACE_DETACH as u64, me, 0, 0, 0]),
            ("ATTACH parent", [PTRACE_ATTACH as u64, parent, 0, 0, 0]),
            ("SEIZE parent", [PTRACE_SEIZE as u64, parent, 0, 0, 0]),
        ];
        for (what, args) in attempts {
            if sys(SYS_ptrace, args) != Err(EPERM) {
                return child_fail(50, &format!("ptrace {what} was not refused"));
            }
        }
        let attach_parent =
            fork_and_wait(move || match sys(SYS_ptrace, [PTRACE_ATTACH as u64, me, 0, 0, 0]) {
                Err(EPERM) => 0,
                other => child_fail(51, &format!("child's ptrace ATTACH of the tracee gave {other:?}")),
            });
        if attach_parent != 0 {
            return attach_parent;
        }
        if tracer_pid().unwrap_or(0) == 0 {
            return child_fail(52, "no longer traced");
        }
        match TcpStream::connect(DENIED) {
            Err(e) if e.raw_os_error() == Some(EACCES) => 0,
            other => child_fail(53, &format!("denied connect gave {other:?}")),
        }
    };
    let (mut tracee, handle) = traced(routes("127.0.0.1:9".parse().unwrap()), table(), body);
    tracee.release().unwrap();
    assert_eq!(tracee.wait().unwrap(), TraceeExit::Code(0));
    assert_eq!(handle.join().unwrap(), Exit::TraceesGone);
}

/// Sleeps forever in short steps (signals interrupt single sleeps).
fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// True once `pid` has exited (its pidfd turns readable) within `limit`.
fn exits_within(pidfd: &OwnedFd, limit: Duration) -> bool {
    let mut pfd = [PollFd::new(pidfd, PollFlags::IN)];
    let ts = rustix::event::Timespec { tv_sec: limit.as_secs() as i64, tv_nsec: 0 };
    poll(&mut pfd, Some(&ts)).is_ok_and(|n| n == 1)
}

fn pidfd(pid: libc::pid_t) -> OwnedFd {
    let pid = rustix::process::Pid::from_raw(pid).expect("pid");
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).expect("pidfd_open")
}

/// A tracee and its forked child both sleep forever; ending the tracer (`end`) must kill both.
fn ending_the_tracer_kills(end: impl FnOnce(TracerHandle)) {
    let (report_r, report_w) = pipe();
    let report = report_w.as_raw_fd();
    let body = move || {
        // SAFETY: fork in the single-threaded tracee; the child sleeps until killed.
        let child = unsafe { libc::fork() };
        if child == 0 {
            sleep_forever();
        }
        // SAFETY: `report` is the write end of the pipe, inherited and open in this copy.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(report as RawFd) };
        if child < 0 || rustix::io::write(fd, &child.to_ne_bytes()).ok() != Some(4) {
            return child_fail(60, "fork or report");
        }
        sleep_forever()
    };
    let (mut tracee, handle) = traced(routes("127.0.0.1:9".parse().unwrap()), table(), body);
    drop(report_w);
    let pid = tracee.traced_pid().unwrap();
    tracee.release().unwrap();
    let child = read_pid(&report_r);
    let (tracee_fd, child_fd) = (pidfd(pid), pidfd(child));
    assert!(!exits_within(&child_fd, Duration::from_millis(0)), "the child runs before the tracer ends");
    end(handle);
    assert!(exits_within(&tracee_fd, Duration::from_secs(5)), "the tracee was killed");
    assert!(exits_within(&child_fd, Duration::from_secs(5)), "its forked child was killed");
    assert_eq!(tracee.wait().unwrap(), TraceeExit::Signal(libc::SIGKILL));
}

#[test]
fn stopping_or_dropping_the_tracer_kills_every_tracee() {
    let name = "stopping_or_dropping_the_tracer_kills_every_tracee";
    if !start(name) {
        return;
    }
    ending_the_tracer_kills(|h| assert_eq!(h.stop().unwrap(), Exit::Stopped));
    ending_the_tracer_kills(drop);
}

static TERMS: AtomicUsize = AtomicUsize::new(0);
static CONTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    let counter = if sig == libc::SIGTERM { &TERMS } else { &CONTS };
    counter.fetch_add(1, Ordering::SeqCst);
}

fn catch(sig: libc::c_int) -> bool {
    // SAFETY: all-zero is a valid sigaction; the handler only touches atomics.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_signal as *const () as usize;
    // SAFETY: installs a handler with an empty mask and no flags; no old action is read.
    unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0 }
}

/// Waits up to five seconds for `counter` to reach `n`.
fn reaches(counter: &AtomicUsize, n: usize) -> bool {
    let start = Instant::now();
    while counter.load(Ordering::SeqCst) < n {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// SIGTERM (raised and sent from outside) reaches the tracee's handler; SIGSTOP stops it until
/// the test's SIGCONT, whose handler runs too; afterwards it is still traced. Meanwhile a child
/// of the test process that is no tracee exits and is reaped by the test, not by the tracer.
#[test]
fn signals_stops_and_continues_behave_as_untraced() {
    let name = "signals_stops_and_continues_behave_as_untraced";
    if !start(name) {
        return;
    }
    let (report_r, report_w) = pipe();
    let report = report_w.as_raw_fd();
    let body = move || {
        // SAFETY: `report` is the write end of the pipe, inherited and open in this copy.
        let out = unsafe { std::os::fd::BorrowedFd::borrow_raw(report as RawFd) };
        let say = |b: u8| rustix::io::write(out, &[b]).ok() == Some(1);
        if !catch(libc::SIGTERM) || !catch(libc::SIGCONT) {
            return child_fail(70, "sigaction");
        }
        // SAFETY: raise with a handled signal.
        unsafe { libc::raise(libc::SIGTERM) };
        if TERMS.load(Ordering::SeqCst) != 1 {
            return child_fail(71, "raised SIGTERM did not reach its handler");
        }
        if !say(b's') {
            return child_fail(72, "report");
        }
        // SAFETY: raise with SIGSTOP stops this process until SIGCONT.
        unsafe { libc::raise(libc::SIGSTOP) };
        if !reaches(&CONTS, 1) || !say(b'c') {
            return child_fail(73, "SIGCONT handler did not run after the stop");
        }
        if !reaches(&TERMS, 2) {
            return child_fail(74, "SIGTERM from outside did not reach its handler");
        }
        match TcpStream::connect(DENIED) {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => 0,
            other => child_fail(75, &format!("denied connect after the signals gave {other:?}")),
        }
    };
    let (mut tracee, handle) = traced(routes("127.0.0.1:9".parse().unwrap()), table(), body);
    drop(report_w);
    let pid = tracee.traced_pid().unwrap();
    tracee.release().unwrap();
    assert_eq!(read_byte_within(&report_r, Duration::from_secs(5)), Some(b's'));
    // Not a tracee: the tracer thread must leave this child's exit to us.
    let mut bystander = std::process::Command::new("true").spawn().expect("spawn true");
    assert_eq!(read_byte_within(&report_r, Duration::from_millis(500)), None, "stopped until SIGCONT");
    assert!(bystander.wait().expect("the test reaps its own child").success());
    // SAFETY: kill with integer arguments, to our unreaped tracee.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert_eq!(read_byte_within(&report_r, Duration::from_secs(5)), Some(b'c'));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(tracee.wait().unwrap(), TraceeExit::Code(0));
    assert_eq!(handle.join().unwrap(), Exit::TraceesGone);
}
