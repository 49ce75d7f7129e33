//! Shared pieces of the real-kernel tests: a fixed decider, raw syscalls with errno, and a
//! supervised tracee run.

#![allow(dead_code, unsafe_code, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redirect::filter::{BpfProgram, FilterSpec, compile};
use redirect::seccomp::{Exit, Supervisor};
use redirect::testing::{TraceeExit, spawn_tracee};
use redirect::{Action, ConnectDecider, OriginalDstTable, SockInfo};

/// Where the test decider sends things.
#[derive(Debug, Clone, Copy)]
pub struct Routes {
    pub gw4: SocketAddr,
    pub gw6: SocketAddr,
}

/// 203.0.113.5 and 2001:db8::5 are redirected (v4 → gw4, v6 → gw6); 203.0.113.6 is denied with
/// EACCES; loopback continues; everything else is ENETUNREACH.
pub struct TestDecider(pub Routes);

impl ConnectDecider for TestDecider {
    fn decide(&self, dst: SocketAddr, _sock: SockInfo, _pid: u32) -> Action {
        let redirected4: std::net::IpAddr = [203, 0, 113, 5].into();
        let redirected6: std::net::IpAddr = "2001:db8::5".parse().unwrap();
        match dst.ip() {
            ip if ip == redirected4 => Action::Redirect(self.0.gw4),
            ip if ip == redirected6 => Action::Redirect(self.0.gw6),
            ip if ip == std::net::IpAddr::from([203, 0, 113, 6]) => Action::Deny(libc::EACCES),
            ip if ip.is_loopback() => Action::Continue,
            _ => Action::Deny(libc::ENETUNREACH),
        }
    }
}

pub fn program() -> BpfProgram {
    compile(&FilterSpec::sandbox_default()).expect("default filter compiles")
}

/// Raw syscall returning the value or the errno.
pub fn sys(nr: libc::c_long, a: [u64; 5]) -> Result<i64, i32> {
    // SAFETY: the test passes arguments the kernel validates; pointers given are live.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) };
    // SAFETY: reading errno right after the call on the same thread.
    if r < 0 { Err(unsafe { *libc::__errno_location() }) } else { Ok(r) }
}

/// Runs `body` in a filtered tracee supervised by `decider`; returns the tracee's exit and how
/// the supervisor ended (it must end by itself once the tracee is gone).
pub fn supervised<F: FnOnce() -> i32>(
    program: &BpfProgram,
    decider: impl ConnectDecider,
    table: Arc<OriginalDstTable>,
    body: F,
) -> (TraceeExit, Exit) {
    let mut tracee = spawn_tracee(program, body).expect("spawn tracee");
    let handle =
        Supervisor::new(tracee.take_notify(), Arc::new(decider), table).spawn().expect("spawn supervisor");
    tracee.release().expect("release tracee");
    let exit = tracee.wait().expect("wait tracee");
    let sup = handle.join().expect("supervisor ended cleanly");
    (exit, sup)
}

pub fn table() -> Arc<OriginalDstTable> {
    Arc::new(OriginalDstTable::new(64, Duration::from_secs(30)))
}
