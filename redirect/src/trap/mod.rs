//! The calls the sandbox filter traps, handled the same whichever transport delivered them.
//!
//! A transport (the seccomp user-notify [`Supervisor`](crate::seccomp::Supervisor), or the
//! [`Tracer`](crate::ptrace::Tracer)) turns what the kernel gave it into a neutral [`Call`],
//! hands it to a [`Handler`] with a [`Pending`] that says whether the caller is still waiting for
//! this very answer, and applies the [`Reply`] its own way. Deciding, taking the agent's socket,
//! connecting it to the gateway and recording the original destination all live here, once.

mod handlers;
pub(crate) mod sock;
pub(crate) mod tracee;
pub(crate) mod unix;

use std::sync::Arc;

use crate::decide::ConnectDecider;
use crate::original_dst::{OriginalDstTable, ServedTable};
use handlers::Ctx;

/// `AUDIT_ARCH_*` of the only ABI the filter lets through.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_AUDIT_ARCH: u32 = 0xc000_003e;
/// `AUDIT_ARCH_*` of the only ABI the filter lets through.
#[cfg(target_arch = "aarch64")]
pub const NATIVE_AUDIT_ARCH: u32 = 0xc000_00b7;

/// How many redirected sockets `getpeername` remembers.
const SERVED_CAPACITY: usize = 65_536;

/// One trapped syscall, as any transport reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The calling thread's id, in the handler's pid namespace.
    pub pid: u32,
    /// The syscall number.
    pub nr: i32,
    /// The `AUDIT_ARCH_*` value of the call.
    pub arch: u32,
    /// The six raw argument registers.
    pub args: [u64; 6],
}

/// How to answer a trapped call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Let the kernel run the syscall as the agent made it.
    Continue,
    /// The syscall "returns" this value without running.
    Value(i64),
    /// The syscall fails with this positive errno without running.
    Error(i32),
    /// No answer can be given: the caller is gone, or the call is no longer the one read. A
    /// transport that still holds the caller must fail the call rather than let it run.
    Drop,
}

/// Why a supervisor or tracer loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every task under the filter has exited.
    TraceesGone,
    /// The handle's `stop` was called.
    Stopped,
}

/// The transport's answer to "is the caller still blocked in this very call?". Handlers ask it
/// after reading from `/proc/<pid>` or taking a pidfd by pid, so that what they read provably
/// belongs to the caller and not to a task that reused its pid.
pub(crate) trait Pending {
    /// True while the call waits for our answer.
    fn still_pending(&self) -> bool;
}

/// The shared state behind every call of one sandbox: the decider, the OriginalDst table the
/// gateway reads, and the redirected sockets `getpeername` answers for.
pub(crate) struct Handler {
    decider: Arc<dyn ConnectDecider>,
    table: Arc<OriginalDstTable>,
    served: ServedTable,
}

impl Handler {
    pub(crate) fn new(decider: Arc<dyn ConnectDecider>, table: Arc<OriginalDstTable>) -> Self {
        Self { decider, table, served: ServedTable::new(SERVED_CAPACITY) }
    }

    /// Routes one call to its handler. A foreign ABI or an unexpected syscall fails closed.
    pub(crate) fn handle(&self, call: &Call, pending: &dyn Pending) -> Reply {
        if call.arch != NATIVE_AUDIT_ARCH {
            return Reply::Error(libc::ENOSYS);
        }
        let ctx = Ctx { pending, decider: &self.decider, table: &self.table, served: &self.served };
        match call.nr as libc::c_long {
            libc::SYS_connect => ctx.on_connect(call),
            libc::SYS_sendto | libc::SYS_sendmsg | libc::SYS_sendmmsg => ctx.on_send(call),
            libc::SYS_getpeername => ctx.on_getpeername(call),
            _ => Reply::Error(libc::ENOSYS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Always;

    impl Pending for Always {
        fn still_pending(&self) -> bool {
            true
        }
    }

    #[test]
    fn foreign_arch_and_unexpected_calls_fail_closed() {
        let decider: Arc<dyn ConnectDecider> = Arc::new(|_d, _s, _p| crate::Action::Continue);
        let table = Arc::new(OriginalDstTable::new(4, std::time::Duration::from_secs(1)));
        let handler = Handler::new(decider, table);
        let call = Call { pid: 1, nr: libc::SYS_connect as i32, arch: 0x4000_0003, args: [0; 6] };
        assert_eq!(handler.handle(&call, &Always), Reply::Error(libc::ENOSYS));
        let call = Call { arch: NATIVE_AUDIT_ARCH, nr: libc::SYS_getpid as i32, ..call };
        assert_eq!(handler.handle(&call, &Always), Reply::Error(libc::ENOSYS));
    }
}
