//! The seccomp user-notify backend: a [`Supervisor`] that answers the sandbox filter's
//! notifications for `connect`, `sendto`/`sendmsg`/`sendmmsg` and `getpeername`.
//!
//! One thread polls the notify fd together with a stop eventfd and handles each notification
//! inline. Handlers never wait for the tracee: the only blocking calls are connects of blocking
//! sockets, to the gateway's loopback listener (which completes within the kernel unless the
//! gateway's accept backlog is full) or, on the agent's behalf, to a Unix listener (bounded: a
//! full backlog answers EAGAIN after a short wait). When every task under the filter has exited the fd reports
//! POLLHUP and the loop ends by itself.

mod handlers;
pub mod notif;
mod sock;
mod tracee;
mod unix;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustix::event::{EventfdFlags, PollFd, PollFlags, eventfd, poll};

use crate::decide::ConnectDecider;
use crate::original_dst::{OriginalDstTable, ServedTable};
use handlers::Ctx;
use notif::{Notification, Reply};

/// `AUDIT_ARCH_*` of the only ABI the filter lets through.
#[cfg(target_arch = "x86_64")]
pub const NATIVE_AUDIT_ARCH: u32 = 0xc000_003e;
/// `AUDIT_ARCH_*` of the only ABI the filter lets through.
#[cfg(target_arch = "aarch64")]
pub const NATIVE_AUDIT_ARCH: u32 = 0xc000_00b7;

/// How many redirected sockets `getpeername` remembers.
const SERVED_CAPACITY: usize = 65_536;

/// Why the supervisor loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every task under the filter has exited (POLLHUP on the notify fd).
    TraceesGone,
    /// [`SupervisorHandle::stop`] was called.
    Stopped,
}

/// Answers one sandbox's notifications. Build it with the notify fd, the decider and the table
/// the gateway reads, then [`spawn`](Self::spawn) it or [`run`](Self::run) it on a thread of yours.
pub struct Supervisor {
    notify: OwnedFd,
    decider: Arc<dyn ConnectDecider>,
    table: Arc<OriginalDstTable>,
    served: ServedTable,
}

impl Supervisor {
    /// A supervisor for the filter behind `notify`.
    pub fn new(notify: OwnedFd, decider: Arc<dyn ConnectDecider>, table: Arc<OriginalDstTable>) -> Self {
        Self { notify, decider, table, served: ServedTable::new(SERVED_CAPACITY) }
    }

    /// Runs the loop on a new thread named `seccomp-supervisor`.
    pub fn spawn(self) -> io::Result<SupervisorHandle> {
        let stop = eventfd(0, EventfdFlags::CLOEXEC)?;
        let stop_reader = stop.try_clone()?;
        let thread = std::thread::Builder::new()
            .name("seccomp-supervisor".into())
            .spawn(move || self.run(stop_reader.as_fd()))?;
        Ok(SupervisorHandle { thread, stop })
    }

    /// Runs the loop on the calling thread until the tracees are gone or `stop` becomes readable
    /// (an eventfd or pipe). Errors are only those of the notify fd itself.
    pub fn run(self, stop: BorrowedFd<'_>) -> io::Result<Exit> {
        let ctx = Ctx {
            notify: self.notify.as_fd(),
            decider: &self.decider,
            table: &self.table,
            served: &self.served,
        };
        loop {
            let mut fds = [PollFd::new(&self.notify, PollFlags::IN), PollFd::new(&stop, PollFlags::IN)];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            if !fds[1].revents().is_empty() {
                return Ok(Exit::Stopped);
            }
            let ev = fds[0].revents();
            if ev.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL) {
                return Ok(Exit::TraceesGone);
            }
            if !ev.contains(PollFlags::IN) {
                continue;
            }
            let n = match notif::recv(self.notify.as_fd()) {
                Ok(n) => n,
                // ENOENT: the tracee died between wake-up and receive.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => continue,
                Err(e) => return Err(e),
            };
            let reply = dispatch(&ctx, &n);
            if let Err(e) = notif::respond(self.notify.as_fd(), n.id, reply) {
                tracing::warn!(peer.pid = n.pid, error = %e, "cannot answer seccomp notification");
            }
        }
    }
}

/// Routes one notification to its handler. A foreign ABI or an unexpected syscall fails closed.
fn dispatch(ctx: &Ctx<'_>, n: &Notification) -> Reply {
    if n.arch != NATIVE_AUDIT_ARCH {
        return Reply::Error(libc::ENOSYS);
    }
    match n.nr as libc::c_long {
        libc::SYS_connect => ctx.on_connect(n),
        libc::SYS_sendto | libc::SYS_sendmsg | libc::SYS_sendmmsg => ctx.on_send(n),
        libc::SYS_getpeername => ctx.on_getpeername(n),
        _ => Reply::Error(libc::ENOSYS),
    }
}

/// A running supervisor thread.
pub struct SupervisorHandle {
    thread: JoinHandle<io::Result<Exit>>,
    stop: OwnedFd,
}

impl SupervisorHandle {
    /// Asks the loop to stop and waits for it. Pending notifications stay pending; tracees
    /// blocked in them are released only when the notify fd is closed (they then get ENOSYS).
    pub fn stop(self) -> io::Result<Exit> {
        rustix::io::write(&self.stop, &1u64.to_ne_bytes())?;
        self.join()
    }

    /// Waits until the loop ends by itself (every tracee gone).
    pub fn join(self) -> io::Result<Exit> {
        self.thread.join().map_err(|_| io::Error::other("seccomp supervisor thread panicked"))?
    }

    /// True once the loop has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_ends_an_idle_loop() {
        // Any pollable fd that never becomes readable stands in for the notify fd here.
        let (idle, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
        let decider = |_d, _s, _p| crate::Action::Continue;
        let table = Arc::new(OriginalDstTable::new(4, std::time::Duration::from_secs(1)));
        let handle = Supervisor::new(idle.into(), Arc::new(decider), table).spawn().unwrap();
        assert!(!handle.is_finished());
        assert_eq!(handle.stop().unwrap(), Exit::Stopped);
    }

    #[test]
    fn foreign_arch_fails_closed() {
        let (idle, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
        let decider: Arc<dyn ConnectDecider> = Arc::new(|_d, _s, _p| crate::Action::Continue);
        let table = OriginalDstTable::new(4, std::time::Duration::from_secs(1));
        let served = ServedTable::new(4);
        let ctx = Ctx { notify: idle.as_fd(), decider: &decider, table: &table, served: &served };
        let n = Notification { id: 1, pid: 1, nr: libc::SYS_connect as i32, arch: 0x4000_0003, args: [0; 6] };
        assert_eq!(dispatch(&ctx, &n), Reply::Error(libc::ENOSYS));
        let n = Notification { arch: NATIVE_AUDIT_ARCH, nr: libc::SYS_getpid as i32, ..n };
        assert_eq!(dispatch(&ctx, &n), Reply::Error(libc::ENOSYS));
    }
}
