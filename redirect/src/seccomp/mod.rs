//! The seccomp user-notify backend: a [`Supervisor`] that answers the sandbox filter's
//! notifications for `connect`, `sendto`/`sendmsg`/`sendmmsg` and `getpeername`.
//!
//! One thread polls the notify fd together with a stop eventfd and handles each notification
//! inline. Handlers never wait for the tracee: the only blocking calls are connects of blocking
//! sockets, to the gateway's loopback listener (which completes within the kernel unless the
//! gateway's accept backlog is full) or, on the agent's behalf, to a Unix listener (bounded: a
//! full backlog answers EAGAIN after a short wait). When every task under the filter has exited the fd reports
//! POLLHUP and the loop ends by itself.

pub mod notif;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use rustix::event::{EventfdFlags, PollFd, PollFlags, eventfd, poll};

use crate::decide::ConnectDecider;
use crate::original_dst::OriginalDstTable;
use crate::trap::Handler;
pub use crate::trap::{Exit, NATIVE_AUDIT_ARCH};
use notif::Waiting;

/// Answers one sandbox's notifications. Build it with the notify fd, the decider and the table
/// the gateway reads, then [`spawn`](Self::spawn) it or [`run`](Self::run) it on a thread of yours.
pub struct Supervisor {
    notify: OwnedFd,
    handler: Handler,
    sync_wake_up: bool,
}

impl Supervisor {
    /// A supervisor for the filter behind `notify`.
    pub fn new(notify: OwnedFd, decider: Arc<dyn ConnectDecider>, table: Arc<OriginalDstTable>) -> Self {
        Self { notify, handler: Handler::new(decider, table), sync_wake_up: true }
    }

    /// Whether to ask the kernel for synchronous wake-ups ([`notif::set_sync_wake_up`]; on by
    /// default where the kernel has them): the trapped thread and this loop then hand over on
    /// one CPU. Off, the benches can show the difference.
    pub fn sync_wake_up(mut self, on: bool) -> Self {
        self.sync_wake_up = on;
        self
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
        if self.sync_wake_up
            && let Err(e) = notif::set_sync_wake_up(self.notify.as_fd())
        {
            tracing::debug!(error = %e, "no synchronous seccomp wake-ups (Linux 6.6+)");
        }
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
            let reply = self.handler.handle(&n.call(), &Waiting { fd: self.notify.as_fd(), id: n.id });
            if let Err(e) = notif::respond(self.notify.as_fd(), n.id, reply) {
                tracing::warn!(peer.pid = n.pid, error = %e, "cannot answer seccomp notification");
            }
        }
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
}
