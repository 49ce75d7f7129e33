//! Shared pieces of the real-kernel tests: a fixed decider, raw syscalls with errno, and a
//! supervised tracee run under either transport ([`Backend`]); [`per_backend!`] makes one test
//! per backend of a body.

#![allow(dead_code, unsafe_code, missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use redirect::filter::{BpfProgram, FilterSpec, TrapAction, compile_with};
use redirect::ptrace::Tracer;
use redirect::seccomp::{Exit, Supervisor};
use redirect::testing::{
    TraceeExit, require_root_and_notify, require_root_and_trace, rerun_in_fresh_netns, spawn_traced,
    spawn_tracee,
};
use redirect::{Action, ConnectDecider, OriginalDst, OriginalDstTable, SockInfo};

/// The transport that hands trapped calls to the shared handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `SECCOMP_RET_USER_NOTIF` and the seccomp `Supervisor`.
    Seccomp,
    /// `SECCOMP_RET_TRACE` and the ptrace `Tracer`.
    Ptrace,
}

impl Backend {
    /// The filter's action for trapped calls under this backend.
    pub fn trap(self) -> TrapAction {
        match self {
            Backend::Seccomp => TrapAction::UserNotify,
            Backend::Ptrace => TrapAction::Trace,
        }
    }

    /// The sandbox's default filter for this backend.
    pub fn program(self) -> BpfProgram {
        compile_with(&FilterSpec::sandbox_default(), self.trap()).expect("default filter compiles")
    }

    /// True when this machine can run the backend (else skipped, or failed under CI).
    fn available(self, test: &str) -> bool {
        match self {
            Backend::Seccomp => require_root_and_notify(test),
            Backend::Ptrace => require_root_and_trace(test),
        }
    }
}

/// Runs `body` for `backend` as the libtest test `name`, inside a fresh network namespace.
pub fn run_backend(name: &str, backend: Backend, body: fn(Backend)) {
    if !backend.available(name) || rerun_in_fresh_netns(name) {
        return;
    }
    body(backend);
}

/// `per_backend!(a, b)` turns each `fn a(backend: Backend)` into the tests `a::seccomp` and
/// `a::ptrace`, each re-run in its own fresh network namespace.
#[allow(unused_macros)] // test crates that use only the seccomp path
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn seccomp() {
                let name = concat!(stringify!($name), "::seccomp");
                crate::common::run_backend(name, crate::common::Backend::Seccomp, super::$name);
            }

            #[test]
            fn ptrace() {
                let name = concat!(stringify!($name), "::ptrace");
                crate::common::run_backend(name, crate::common::Backend::Ptrace, super::$name);
            }
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use per_backend;

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
    Backend::Seccomp.program()
}

/// Raw syscall returning the value or the errno.
pub fn sys(nr: libc::c_long, a: [u64; 5]) -> Result<i64, i32> {
    // SAFETY: the test passes arguments the kernel validates; pointers given are live.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) };
    // SAFETY: reading errno right after the call on the same thread.
    if r < 0 { Err(unsafe { *libc::__errno_location() }) } else { Ok(r) }
}

/// Runs `body` in a filtered tracee supervised by `decider` through `backend` (`program` must
/// be compiled for it); returns the tracee's exit and how the supervisor or tracer ended (it
/// must end by itself once the tracee is gone).
pub fn supervised<F: FnOnce() -> i32>(
    backend: Backend,
    program: &BpfProgram,
    decider: impl ConnectDecider,
    table: Arc<OriginalDstTable>,
    body: F,
) -> (TraceeExit, Exit) {
    let decider = Arc::new(decider);
    match backend {
        Backend::Seccomp => {
            let mut tracee = spawn_tracee(program, body).expect("spawn tracee");
            let handle =
                Supervisor::new(tracee.take_notify(), decider, table).spawn().expect("spawn supervisor");
            tracee.release().expect("release tracee");
            let exit = tracee.wait().expect("wait tracee");
            (exit, handle.join().expect("supervisor ended cleanly"))
        }
        Backend::Ptrace => {
            let mut tracee = spawn_traced(program, body).expect("spawn tracee");
            let pid = tracee.traced_pid().expect("traced pid");
            let handle = Tracer::new(decider, table).spawn(pid).expect("seize tracee");
            tracee.release().expect("release tracee");
            let exit = tracee.wait().expect("wait tracee");
            (exit, handle.join().expect("tracer ended cleanly"))
        }
    }
}

pub fn table() -> Arc<OriginalDstTable> {
    Arc::new(OriginalDstTable::new(64, Duration::from_secs(30)))
}

/// What the gateway side saw for one accepted connection.
#[derive(Debug)]
pub struct Accepted {
    pub peer: SocketAddr,
    pub original: Option<OriginalDst>,
    pub greeting: Vec<u8>,
}

/// A gateway stand-in: accepts `n` connections, takes each one's original destination from the
/// table by peer address, reads the greeting and answers "ok".
pub fn gateway(listener: TcpListener, table: Arc<OriginalDstTable>, n: usize) -> mpsc::Receiver<Accepted> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut s, peer)) = listener.accept() else { return };
            let original = table.take(peer);
            let mut greeting = vec![0u8; 5];
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.read_exact(&mut greeting);
            let _ = s.write_all(b"ok");
            let _ = tx.send(Accepted { peer, original, greeting });
        }
    });
    rx
}
