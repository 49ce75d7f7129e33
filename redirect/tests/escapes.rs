//! Every escape route of DESIGN.md §2 is tried by a filtered tracee and must fail with its errno;
//! foreign ABIs (x32, ia32) must kill the process. Each test runs in a fresh network namespace.

#![allow(unsafe_code)]

mod common;

use common::{Backend, Routes, TestDecider, supervised, sys, table};
use redirect::filter::{FilterSpec, ForeignArch, compile_with};
use redirect::seccomp::Exit;
use redirect::testing::{TraceeExit, child_fail};

fn decider() -> TestDecider {
    TestDecider(Routes { gw4: "127.0.0.1:9".parse().unwrap(), gw6: "[::1]:9".parse().unwrap() })
}

/// Checks one call's errno; reports the first mismatch by exit code and message.
fn expect(what: &str, got: Result<i64, i32>, want: i32) -> Result<(), i32> {
    match got {
        Err(e) if e == want => Ok(()),
        other => {
            let _ = child_fail(1, what);
            let _ = child_fail(1, &format!("  got {other:?}, want errno {want}"));
            Err(1)
        }
    }
}

fn escape_attempts() -> Result<(), i32> {
    use libc::*;
    let params = [0u8; 120];
    let p = params.as_ptr() as u64;
    expect("io_uring_setup", sys(SYS_io_uring_setup, [1, p, 0, 0, 0]), EPERM)?;
    expect("io_uring_enter", sys(SYS_io_uring_enter, [0, 0, 0, 0, 0]), EPERM)?;
    expect("io_uring_register", sys(SYS_io_uring_register, [0, 0, 0, 0, 0]), EPERM)?;
    expect("bpf", sys(SYS_bpf, [5, 0, 0, 0, 0]), EPERM)?;
    expect("ptrace(TRACEME)", sys(SYS_ptrace, [PTRACE_TRACEME as u64, 0, 0, 0, 0]), EPERM)?;
    expect("process_vm_readv", sys(SYS_process_vm_readv, [1, 0, 0, 0, 0]), EPERM)?;
    expect("process_vm_writev", sys(SYS_process_vm_writev, [1, 0, 0, 0, 0]), EPERM)?;
    expect("setns", sys(SYS_setns, [u64::MAX, 0, 0, 0, 0]), EPERM)?;
    expect("unshare(NEWNET)", sys(SYS_unshare, [CLONE_NEWNET as u64, 0, 0, 0, 0]), EPERM)?;
    expect("unshare(NEWUSER)", sys(SYS_unshare, [CLONE_NEWUSER as u64, 0, 0, 0, 0]), EPERM)?;
    let flags = (CLONE_NEWNET | CLONE_FILES) as u64;
    expect("unshare(NEWNET|FILES)", sys(SYS_unshare, [flags, 0, 0, 0, 0]), EPERM)?;
    let clone_user = (CLONE_NEWUSER | SIGCHLD) as u64;
    let r = sys(SYS_clone, [clone_user, 0, 0, 0, 0]);
    if r == Ok(0) {
        // The filter failed and we are the new child: leave at once.
        // SAFETY: _exit in a forked child.
        unsafe { libc::_exit(0) };
    }
    expect("clone(NEWUSER)", r, EPERM)?;
    expect("clone(NEWNET)", sys(SYS_clone, [(CLONE_NEWNET | SIGCHLD) as u64, 0, 0, 0, 0]), EPERM)?;
    expect("clone3", sys(SYS_clone3, [0, 0, 0, 0, 0]), ENOSYS)?;
    let none = c"/nonexistent-agentsh-target".as_ptr() as u64;
    let tmpfs = c"tmpfs".as_ptr() as u64;
    expect("mount", sys(SYS_mount, [tmpfs, none, tmpfs, 0, 0]), EPERM)?;
    expect("umount2", sys(SYS_umount2, [none, 0, 0, 0, 0]), EPERM)?;
    expect("pivot_root", sys(SYS_pivot_root, [none, none, 0, 0, 0]), EPERM)?;
    expect("open_tree", sys(SYS_open_tree, [AT_FDCWD as u64, none, 0, 0, 0]), EPERM)?;
    expect("fsopen", sys(SYS_fsopen, [tmpfs, 0, 0, 0, 0]), EPERM)?;
    expect("kexec_load", sys(SYS_kexec_load, [0, 0, 0, 0, 0]), EPERM)?;
    expect("perf_event_open", sys(SYS_perf_event_open, [0, 0, 0, 0, 0]), EPERM)?;
    expect("init_module", sys(SYS_init_module, [0, 0, 0, 0, 0]), EPERM)?;
    expect("userfaultfd", sys(SYS_userfaultfd, [0, 0, 0, 0, 0]), EPERM)?;
    expect("keyctl", sys(SYS_keyctl, [0, 0, 0, 0, 0]), EPERM)?;
    let sock = |f: i32, t: i32, p: i32| sys(SYS_socket, [f as u64, t as u64, p as u64, 0, 0]);
    expect("socket(AF_PACKET)", sock(AF_PACKET, SOCK_RAW, 0), EAFNOSUPPORT)?;
    let high_bits = (1u64 << 32) | AF_PACKET as u64;
    expect(
        "socket(AF_PACKET | 1<<32)",
        sys(SYS_socket, [high_bits, SOCK_DGRAM as u64, 0, 0, 0]),
        EAFNOSUPPORT,
    )?;
    expect("socket(AF_VSOCK)", sock(AF_VSOCK, SOCK_STREAM, 0), EAFNOSUPPORT)?;
    expect("socket(AF_ALG)", sock(AF_ALG, SOCK_SEQPACKET, 0), EAFNOSUPPORT)?;
    expect("socket(AF_KEY)", sock(AF_KEY, SOCK_RAW, 2), EAFNOSUPPORT)?;
    expect("socket(NETLINK_AUDIT)", sock(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT), EAFNOSUPPORT)?;
    expect("socket(SOCK_RAW|CLOEXEC)", sock(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP), EPERM)?;
    expect("socket(v6 SOCK_RAW|NONBLOCK)", sock(AF_INET6, SOCK_RAW | SOCK_NONBLOCK, 58), EPERM)?;
    let mut pair = [0i32; 2];
    let sp = [AF_PACKET as u64, SOCK_DGRAM as u64, 0, pair.as_mut_ptr() as u64, 0];
    expect("socketpair(AF_PACKET)", sys(SYS_socketpair, sp), EAFNOSUPPORT)?;
    // What the sandbox still needs keeps working.
    for (what, r) in [
        ("socket(AF_INET, STREAM)", sock(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)),
        ("socket(AF_INET6, DGRAM)", sock(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)),
        ("socket(NETLINK_ROUTE)", sock(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE)),
        ("socket(AF_UNIX)", sock(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)),
        ("unshare(CLONE_FILES)", sys(SYS_unshare, [CLONE_FILES as u64, 0, 0, 0, 0])),
    ] {
        if r.is_err() {
            return Err(child_fail(2, &format!("{what} should work, got {r:?}")));
        }
    }
    Ok(())
}

fn escape_routes_return_their_errno(backend: Backend) {
    let (exit, sup) =
        supervised(backend, &backend.program(), decider(), table(), || match escape_attempts() {
            Ok(()) => 0,
            Err(code) => code,
        });
    assert_eq!(exit, TraceeExit::Code(0));
    assert_eq!(sup, Exit::TraceesGone);
}

/// `getpid` through the x32 ABI: the syscall number with `__X32_SYSCALL_BIT`.
fn x32_getpid() -> i32 {
    let r = sys(libc::SYS_getpid | 0x4000_0000, [0; 5]);
    child_fail(3, &format!("x32 syscall returned {r:?}"))
}

/// `getpid` (20) through the ia32 `int 0x80` gate.
#[cfg(target_arch = "x86_64")]
fn ia32_getpid() -> i32 {
    let mut eax: u32 = 20;
    // SAFETY: int 0x80 with eax = getpid takes no pointers; the filter kills us before it runs.
    unsafe { std::arch::asm!("int 0x80", inout("eax") eax => eax) };
    child_fail(3, &format!("ia32 syscall returned {eax}"))
}

#[cfg(target_arch = "x86_64")]
fn foreign_abis_are_killed(backend: Backend) {
    let (exit, _) = supervised(backend, &backend.program(), decider(), table(), x32_getpid);
    assert_eq!(exit, TraceeExit::Signal(libc::SIGSYS), "x32");
    let (exit, _) = supervised(backend, &backend.program(), decider(), table(), ia32_getpid);
    assert_eq!(exit, TraceeExit::Signal(libc::SIGSYS), "ia32");
}

fn foreign_abi_errno_variant(backend: Backend) {
    let mut spec = FilterSpec::sandbox_default();
    spec.foreign_arch = ForeignArch::Errno(libc::ENOSYS);
    let prog = compile_with(&spec, backend.trap()).unwrap();
    let body = || match sys(libc::SYS_getpid | 0x4000_0000, [0; 5]) {
        Err(libc::ENOSYS) => 0,
        other => child_fail(4, &format!("x32 getpid gave {other:?}")),
    };
    let (exit, _) = supervised(backend, &prog, decider(), table(), body);
    assert_eq!(exit, TraceeExit::Code(0));
}

common::per_backend!(escape_routes_return_their_errno, foreign_abi_errno_variant);
#[cfg(target_arch = "x86_64")]
common::per_backend!(foreign_abis_are_killed);
