//! The ptrace backend: a [`Tracer`] that answers the sandbox filter's trapped calls at
//! `PTRACE_EVENT_SECCOMP` stops, for places with no seccomp user-notify (gVisor, some managed
//! container runtimes). It is another transport for the very same handling as
//! [`seccomp::Supervisor`](crate::seccomp::Supervisor): the decider, the redirect of the agent's
//! own socket to the gateway and the OriginalDst table are shared code.
//!
//! # Use
//! 1. Compile the filter with [`TrapAction::Trace`](crate::filter::TrapAction::Trace)
//!    ([`filter::compile_with`](crate::filter::compile_with)): the trapped calls return
//!    `SECCOMP_RET_TRACE`, every denial is unchanged.
//! 2. Launch the command so that it installs that filter (no listener) and then waits before
//!    `execve` (the `sandbox` crate's trace listener mode does this and gives the command's host
//!    pid).
//! 3. [`Tracer::spawn`] with that pid: it returns once the command is seized.
//! 4. Let the command go on to `execve` (the sandbox's `resume`).
//! 5. The tracer ends by itself when every tracee is gone ([`TracerHandle::join`]);
//!    [`TracerHandle::stop`], or dropping the handle, kills every tracee.
//!
//! # How it works
//! One dedicated thread seizes the command with `TRACESECCOMP | TRACEFORK | TRACEVFORK |
//! TRACECLONE | TRACEEXEC | EXITKILL`, so every process and thread it starts is traced from its
//! first instruction, and loops on `waitpid`:
//! - a seccomp stop: the call is read with `PTRACE_GET_SYSCALL_INFO`, handled by the shared
//!   handlers, and answered: "continue" resumes the call unchanged, a value or an errno skips it
//!   (syscall number -1, the result in the return register: `rax` on x86_64, `x0` on aarch64);
//! - fork, vfork, clone and exec stops: the new (or renamed) task is noted and the task resumed;
//! - a signal-delivery-stop: the signal is passed on unchanged;
//! - a group-stop (`SIGSTOP`, `SIGTSTP`, ...): `PTRACE_LISTEN`, so the task stays stopped until
//!   `SIGCONT` as it would untraced;
//! - an exit: the task is forgotten; when none is left `waitpid` says ECHILD and the loop ends.
//!
//! **Only this tracer's tracees are waited for.** The gateway has other children (sandbox inits,
//! probes) that other code reaps, by pid or pidfd. `waitpid(-1, __WALL | __WNOTHREAD)` waits
//! for the children and tracees *of the calling thread* only (`__WNOTHREAD`: not those of
//! other threads of the process; tracees count as children of the thread that seized them;
//! `__WALL`: threads and clone children too), and the tracer thread forks nothing, so it can
//! never reap a child that belongs to someone else.
//!
//! **Fail closed.** `EXITKILL` has the kernel SIGKILL every tracee when the tracer thread ends,
//! whatever the reason (stop, panic, the gateway dying): no tracee ever runs on untraced, and one
//! that somehow did would get ENOSYS for every trapped call (`SECCOMP_RET_TRACE` with no tracer).
//! The filter denies `ptrace` itself, so a tracee can neither detach nor trace anything. An
//! answer that cannot be applied to the registers kills the tracee.
//!
//! # Compared with user-notify
//! - The pid in a call stays valid for the whole stop: a tracee in a ptrace-stop leaves it only
//!   when we resume it or it is SIGKILLed, and a killed tracee's id is not freed for reuse until
//!   this thread reaps it. So there is no equivalent of `SECCOMP_IOCTL_NOTIF_ID_VALID` to ask:
//!   the handlers' pending check always holds. Nothing here needs `SECCOMP_IOCTL_NOTIF_ADDFD`
//!   either: the handlers act on a duplicate of the agent's socket taken with `pidfd_getfd`.
//! - **Known limit: sibling threads.** Only the calling thread is stopped. Every address the
//!   handlers decide on is read once and acted on from that copy, but where the answer is
//!   "continue" (a destination the decider lets through, a pinned AF_UNIX datagram send) the
//!   kernel reads the agent's memory again when the call runs, and another thread of the agent
//!   may have rewritten the sockaddr in between. This is the same window as user-notify's
//!   CONTINUE and is harmless for the same reason (the session's network namespace has nothing
//!   but loopback; see [`Action::Continue`](crate::Action::Continue)).
//! - Cost: each trapped call is two context switches to the tracer thread and back, and one
//!   thread serves every task of the sandbox; untrapped calls cost nothing (the filter answers
//!   them in the kernel). `benches/benches/trap_backends.rs` measures both.

mod stop;
mod sys;

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::decide::ConnectDecider;
use crate::original_dst::OriginalDstTable;
pub use crate::trap::Exit;
use crate::trap::{Handler, Pending, Reply};
use stop::Stop;

/// How often [`TracerHandle::stop`] kills the known tracees again while it waits for the loop.
const STOP_RETRY: Duration = Duration::from_millis(20);

/// Answers one sandbox's trapped calls as its tracer. Build it with the decider and the table
/// the gateway reads, then [`spawn`](Self::spawn) it on the command's pid.
pub struct Tracer {
    handler: Handler,
}

/// What the tracer thread and its handle share.
#[derive(Default)]
struct Shared {
    /// Set by [`TracerHandle::stop`]; the loop returns at its next wake-up.
    stop: AtomicBool,
    /// Every task id seized or auto-attached and not yet seen to exit, so `stop` can kill them.
    tracees: Mutex<HashSet<i32>>,
}

impl Shared {
    fn tracees(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.tracees.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A tracee at a seccomp stop is still in its call, and its id still its own, until we resume it
/// (see the module docs): the handlers' pending check always holds.
struct Stopped;

impl Pending for Stopped {
    fn still_pending(&self) -> bool {
        true
    }
}

impl Tracer {
    /// A tracer for tasks under a filter compiled with
    /// [`TrapAction::Trace`](crate::filter::TrapAction::Trace).
    pub fn new(decider: Arc<dyn ConnectDecider>, table: Arc<OriginalDstTable>) -> Self {
        Self { handler: Handler::new(decider, table) }
    }

    /// Seizes `pid` (a host pid: the whole process, which must not have exec'd past its filter
    /// yet, i.e. is still waiting to be resumed) on a new thread named `ptrace-tracer`, and
    /// returns once it is traced; the caller then lets it run. The seize's error (ESRCH: no
    /// such process; EPERM: no ptrace rights, which need `CAP_SYS_PTRACE` over it, or it is
    /// already traced) is returned as is and nothing keeps running.
    pub fn spawn(self, pid: libc::pid_t) -> io::Result<TracerHandle> {
        let shared = Arc::new(Shared::default());
        let (seized_tx, seized_rx) = mpsc::sync_channel(1);
        let inner = shared.clone();
        let thread = std::thread::Builder::new().name("ptrace-tracer".into()).spawn(move || {
            // The seize must come from this thread: the tracee belongs to the thread that seized it.
            if let Err(e) = sys::seize(pid) {
                let code = e.raw_os_error();
                let _ = seized_tx.send(Err(e));
                return Err(io::Error::other(format!("seize failed: {code:?}")));
            }
            inner.tracees().insert(pid);
            let _ = seized_tx.send(Ok(()));
            self.run(&inner)
        })?;
        let seized =
            seized_rx.recv().unwrap_or_else(|_| Err(io::Error::other("ptrace tracer thread panicked")));
        match seized {
            Ok(()) => Ok(TracerHandle { thread: Some(thread), shared }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// The wait loop (see the module docs). Errors are only those of `waitid` itself.
    fn run(&self, shared: &Shared) -> io::Result<Exit> {
        while let Some((tid, status)) = next_stop(shared)? {
            if shared.stop.load(Ordering::SeqCst) {
                // Returning ends the thread, and EXITKILL kills every tracee still attached.
                return Ok(Exit::Stopped);
            }
            self.on_stop(shared, tid, stop::classify(status));
        }
        Ok(Exit::TraceesGone)
    }

    /// Acts on one state change of `tid` and resumes it where that is due.
    fn on_stop(&self, shared: &Shared, tid: i32, what: Stop) {
        let resumed = match what {
            // Unlisted by `next_stop` already.
            Stop::Gone => return,
            Stop::Seccomp => {
                self.answer(tid);
                sys::resume(tid, 0)
            }
            Stop::NewTask => {
                match sys::event_msg(tid) {
                    Ok(new) => {
                        shared.tracees().insert(new);
                    }
                    Err(e) => tracing::warn!(peer.pid = tid, error = %e, "cannot read the new task's id"),
                }
                sys::resume(tid, 0)
            }
            Stop::Exec => {
                let mut tracees = shared.tracees();
                if let Ok(former) = sys::event_msg(tid) {
                    tracees.remove(&former);
                }
                tracees.insert(tid);
                drop(tracees);
                sys::resume(tid, 0)
            }
            Stop::Group => sys::listen(tid),
            Stop::Event => {
                // A new task's first stop may come before its parent's fork event.
                shared.tracees().insert(tid);
                sys::resume(tid, 0)
            }
            Stop::Signal(sig) => sys::resume(tid, sig),
        };
        // ESRCH: the task was killed meanwhile; its exit comes next.
        if let Err(e) = resumed
            && e.raw_os_error() != Some(libc::ESRCH)
        {
            tracing::warn!(peer.pid = tid, error = %e, "cannot resume tracee");
        }
    }

    /// Handles the trapped call `tid` stopped in and applies the reply. Fails closed: a call that
    /// cannot be read is skipped with ENOSYS, and a tracee whose answer cannot be written is
    /// killed rather than let run the call unanswered.
    fn answer(&self, tid: i32) {
        let reply = match sys::trapped_call(tid) {
            Ok(call) => self.handler.handle(&call, &Stopped),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
            Err(e) => {
                tracing::warn!(peer.pid = tid, error = %e, "cannot read the trapped call");
                Reply::Error(libc::ENOSYS)
            }
        };
        let ret = match reply {
            Reply::Continue => return,
            Reply::Value(v) => v,
            Reply::Error(e) => -i64::from(e),
            // Only a vanished tracee yields Drop here; if it still exists, it must not run the call.
            Reply::Drop => -i64::from(libc::EPERM),
        };
        if let Err(e) = sys::skip(tid, ret)
            && e.raw_os_error() != Some(libc::ESRCH)
        {
            tracing::warn!(peer.pid = tid, error = %e, "cannot answer the trapped call; killing the tracee");
            // `tid` is stopped in its call, so not reaped.
            sys::kill(tid);
        }
    }
}

/// Waits for the next state change of one of this thread's tracees (see the module docs for the
/// flags) and returns its id and `waitpid` status, or `None` when no tracee is left (ECHILD).
///
/// An exit is first only looked at (`WNOWAIT`), then reaped and unlisted under the tracee list's
/// lock, which [`TracerHandle::stop`] holds while it kills: so it never signals an id that has
/// been reaped and could belong to another process by now.
fn next_stop(shared: &Shared) -> io::Result<Option<(i32, i32)>> {
    let flags = libc::__WALL | libc::__WNOTHREAD;
    let Some(tid) = sys::peek_next(flags)? else { return Ok(None) };
    let mut tracees = shared.tracees();
    let status = sys::take(tid, flags)?;
    if stop::classify(status) == Stop::Gone {
        tracees.remove(&tid);
    }
    Ok(Some((tid, status)))
}

/// A running tracer thread. Dropping it stops the tracer, which kills every tracee.
pub struct TracerHandle {
    thread: Option<JoinHandle<io::Result<Exit>>>,
    shared: Arc<Shared>,
}

impl TracerHandle {
    /// Stops the tracer and waits for it: every tracee is SIGKILLed (none may run on untraced),
    /// then the loop returns [`Exit::Stopped`] (or [`Exit::TraceesGone`] if they were all gone
    /// already).
    pub fn stop(mut self) -> io::Result<Exit> {
        self.stop_and_join()
    }

    /// Waits until the loop ends by itself (every tracee gone).
    pub fn join(mut self) -> io::Result<Exit> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| io::Error::other("ptrace tracer thread panicked"))?,
            None => Err(io::Error::other("ptrace tracer already joined")),
        }
    }

    /// True once the loop has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The task ids traced right now (the command and every task it started that is alive).
    pub fn tracees(&self) -> Vec<libc::pid_t> {
        self.shared.tracees().iter().copied().collect()
    }

    fn stop_and_join(&mut self) -> io::Result<Exit> {
        let Some(thread) = self.thread.take() else {
            return Err(io::Error::other("ptrace tracer already joined"));
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Killing wakes the loop (an exit to reap) even when every tracee sits in a blocking
        // call; the loop's own exit then kills whatever was attached too late to be listed.
        while !thread.is_finished() {
            for &tid in self.shared.tracees().iter() {
                // The list's lock is held: a listed id is not reaped yet (see `next_stop`).
                sys::kill(tid);
            }
            std::thread::sleep(STOP_RETRY);
        }
        thread.join().map_err(|_| io::Error::other("ptrace tracer thread panicked"))?
    }
}

impl Drop for TracerHandle {
    fn drop(&mut self) {
        if self.thread.is_some()
            && let Err(e) = self.stop_and_join()
        {
            tracing::warn!(error = %e, "ptrace tracer ended with an error");
        }
    }
}
