//! Helpers for tests that touch the real kernel, shared with other crates: skip-or-fail on
//! missing privileges, re-running a test inside a fresh network namespace, and launching a
//! filtered tracee whose notify fd comes back over SCM_RIGHTS (or whose pid comes back, for a
//! tracer).
//!
//! Not part of the stable API.

#![allow(unsafe_code)]

mod tracee;

use std::io;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use tracee::{Tracee, TraceeExit, child_fail, spawn_traced, spawn_tracee};

/// Set to `1` (as CI does) to turn every privilege skip into a failure.
pub const REQUIRE_PRIVILEGED_ENV: &str = "AGENTSH_REQUIRE_PRIVILEGED";
/// Marks the re-executed test process that runs inside the fresh network namespace.
const NETNS_CHILD_ENV: &str = "AGENTSH_TEST_NETNS_CHILD";
/// The parent's network namespace inode, so the child can prove it is elsewhere.
const PARENT_NETNS_ENV: &str = "AGENTSH_TEST_PARENT_NETNS";

/// True when skips must fail (`AGENTSH_REQUIRE_PRIVILEGED=1`).
pub fn privileged_required() -> bool {
    std::env::var(REQUIRE_PRIVILEGED_ENV).is_ok_and(|v| v == "1")
}

/// Skips `test` with `reason` printed, or panics when skips must fail.
pub fn skip(test: &str, reason: &str) {
    if privileged_required() {
        panic!("{test}: cannot run ({reason}) and {REQUIRE_PRIVILEGED_ENV}=1 forbids skipping");
    }
    eprintln!("SKIP {test}: {reason}");
}

/// True when the process is root with seccomp user-notify available; otherwise skips (or fails,
/// see [`skip`]) and returns false.
pub fn require_root_and_notify(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "needs root (namespaces, seccomp, pidfd_getfd)");
        return false;
    }
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    if !actions.split_whitespace().any(|a| a == "user_notif") {
        skip(test, "kernel lacks seccomp user_notif");
        return false;
    }
    true
}

/// True when the process is root and may ptrace (Yama's `ptrace_scope` below 3); otherwise skips
/// (or fails, see [`skip`]) and returns false.
pub fn require_root_and_trace(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "needs root (namespaces, seccomp, ptrace, pidfd_getfd)");
        return false;
    }
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").unwrap_or_default();
    if scope.trim() == "3" {
        skip(test, "Yama ptrace_scope is 3: no process may ptrace");
        return false;
    }
    true
}

/// A re-run test that takes longer than this is killed and fails (a missed notification would
/// otherwise hang the suite).
const NETNS_TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Like `Command::output`, but kills the child after `limit`.
fn output_within(cmd: &mut Command, limit: Duration) -> io::Result<Output> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err_t = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > limit {
            child.kill()?;
            let st = child.wait()?;
            eprintln!("re-run test killed after {limit:?}");
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

fn netns_inode() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino())
}

/// Runs the current test again in a child process inside a fresh network namespace (only `lo`,
/// brought up), so no packet can leave the machine whatever the test does.
///
/// Returns `true` in the parent, after the child passed (it panics if the child failed): the
/// caller then returns. Returns `false` in the child, which goes on with the test body. `test`
/// is the libtest name of the test (the function name for a top-level integration test).
pub fn rerun_in_fresh_netns(test: &str) -> bool {
    if std::env::var(NETNS_CHILD_ENV).is_ok_and(|v| v == test) {
        let parent: u64 = std::env::var(PARENT_NETNS_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let mine = netns_inode().expect("read /proc/self/ns/net");
        assert_ne!(mine, parent, "{test}: not in a fresh network namespace");
        assert_eq!(interfaces(), vec!["lo".to_owned()], "{test}: fresh netns should hold only lo");
        bring_loopback_up().expect("bring lo up");
        return false;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_CHILD_ENV, test)
        .env(PARENT_NETNS_ENV, netns_inode().expect("netns inode").to_string());
    // SAFETY: the closure runs between fork and exec and only calls unshare(2), which is
    // async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
        });
    }
    let out = output_within(&mut cmd, NETNS_TEST_TIMEOUT).expect("re-run test in a fresh netns");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- {test} in fresh netns ---\n{stdout}{stderr}--- end {test} ---");
    assert!(out.status.success(), "{test} failed inside its network namespace: {}", out.status);
    assert!(stdout.contains("1 passed"), "{test}: the child ran no test (name mismatch?)");
    true
}

/// Interface names of the calling task's network namespace (`/proc/self/net` follows the
/// task's namespace, unlike `/sys/class/net`).
fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_to_string("/proc/self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
        .collect();
    names.sort();
    names
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
pub fn bring_loopback_up() -> io::Result<()> {
    let sock = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::DGRAM, None)?;
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFFLAGS fills `req`, which lives for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: reading and writing the flags member of the union that SIOCGIFFLAGS just filled.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
