//! Launching a filtered tracee the way a launcher must: the filtered task cannot hand its own
//! notify fd over (its `sendmsg` is trapped and nobody listens yet), so an unfiltered sibling
//! sharing its fd table sends it with SCM_RIGHTS.
//!
//! Layout: the test forks a launcher `L`; `L` clones the tracee `T` with `CLONE_FILES`; `T`
//! installs the filter and reports the fd number over a pipe; `L` sends that fd to the test, then
//! waits for `T` and exits with its status. `T` runs its body only after the test says go.
//!
//! For the ptrace backend ([`spawn_traced`]) `T` installs the filter with no listener and `L`
//! sends `T`'s pid instead, for the test's tracer to seize before it says go.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use crate::filter::{BpfProgram, TrapAction, install, install_with_listener};
use crate::handoff::{recv_fd, send_fd};

/// How the tracee ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceeExit {
    /// `_exit(code)`.
    Code(i32),
    /// Killed by this signal (e.g. SIGSYS from `SECCOMP_RET_KILL_PROCESS`).
    Signal(i32),
}

/// A launched tracee, blocked before its body until [`Tracee::release`].
#[derive(Debug)]
pub struct Tracee {
    launcher: libc::pid_t,
    go: Option<OwnedFd>,
    /// The notify fd, received over SCM_RIGHTS (user-notify tracees).
    pub notify: Option<OwnedFd>,
    /// The tracee's pid, for a tracer to seize (traced tracees).
    traced: Option<libc::pid_t>,
}

/// Writes `msg` to stderr without allocating and returns `code`: for tracee bodies.
pub fn child_fail(code: i32, msg: &str) -> i32 {
    let _ = rustix::io::write(stderr(), msg.as_bytes());
    let _ = rustix::io::write(stderr(), b"\n");
    code
}

fn stderr() -> BorrowedFd<'static> {
    // SAFETY: fd 2 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(2) }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

fn die_with_parent() {
    // SAFETY: prctl with integer arguments; a stray tracee must not outlive a failed test.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running destructors or atexit handlers, which is
    // what a forked child of a multi-threaded test must do.
    unsafe { libc::_exit(code) }
}

/// Forks the launcher and the tracee; `body` runs in the tracee under `program` once released,
/// and its return value is the tracee's exit code (a panic exits with 101). The filter's
/// listener fd is in [`Tracee::notify`].
///
/// The body runs in a forked copy of the test: keep it to plain syscalls, and report failures
/// with [`child_fail`].
pub fn spawn_tracee<F: FnOnce() -> i32>(program: &BpfProgram, body: F) -> io::Result<Tracee> {
    spawn(program, TrapAction::UserNotify, body)
}

/// Like [`spawn_tracee`] for a program compiled with [`TrapAction::Trace`]: the tracee installs
/// it with no listener, and [`Tracee::traced_pid`] is its pid, to seize before
/// [`Tracee::release`].
pub fn spawn_traced<F: FnOnce() -> i32>(program: &BpfProgram, body: F) -> io::Result<Tracee> {
    spawn(program, TrapAction::Trace, body)
}

fn spawn<F: FnOnce() -> i32>(program: &BpfProgram, trap: TrapAction, body: F) -> io::Result<Tracee> {
    let (parent_sock, child_sock) = UnixStream::pair()?;
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: fork in a test process; the child only uses async-signal-safe calls until it
    // `_exit`s (the tracee body is the caller's responsibility, see above).
    let launcher = unsafe { libc::fork() };
    if launcher < 0 {
        return Err(io::Error::last_os_error());
    }
    if launcher == 0 {
        drop(parent_sock);
        exit_now(launcher_main(program, trap, &child_sock, &ready_r, ready_w, go_r, body));
    }
    drop((child_sock, ready_r, ready_w, go_r));
    let mut tracee = Tracee { launcher, go: Some(go_w), notify: None, traced: None };
    match trap {
        TrapAction::UserNotify => tracee.notify = Some(recv_fd(&parent_sock)?),
        TrapAction::Trace => {
            let mut pid = [0u8; 4];
            rustix::io::read(&parent_sock, &mut pid)
                .ok()
                .filter(|&n| n == 4)
                .ok_or_else(|| io::Error::other("launcher did not report the tracee's pid"))?;
            tracee.traced = Some(libc::pid_t::from_ne_bytes(pid));
        }
    }
    Ok(tracee)
}

fn launcher_main<F: FnOnce() -> i32>(
    program: &BpfProgram,
    trap: TrapAction,
    sock: &UnixStream,
    ready_r: &OwnedFd,
    ready_w: OwnedFd,
    go_r: OwnedFd,
    body: F,
) -> i32 {
    die_with_parent();
    // SAFETY: a raw clone without CLONE_VM behaves like fork (copy-on-write memory, the child
    // resumes here with a zero return); CLONE_FILES shares the fd table with the launcher.
    let tracee = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_FILES | libc::SIGCHLD, 0, 0, 0, 0) };
    if tracee < 0 {
        return child_fail(120, "launcher: clone(CLONE_FILES) failed");
    }
    if tracee == 0 {
        exit_now(tracee_main(program, trap, ready_w, go_r, body));
    }
    // These belong to the tracee now; through the shared table it closes them, so dropping our
    // handles would close the numbers twice.
    std::mem::forget((ready_w, go_r, body));
    let mut buf = [0u8; 4];
    if rustix::io::read(ready_r, &mut buf).ok() != Some(4) {
        return child_fail(121, "launcher: tracee did not report its notify fd");
    }
    let fd = RawFd::from_ne_bytes(buf);
    if fd < 0 {
        return child_fail(122, "launcher: tracee could not install the filter");
    }
    if trap == TrapAction::Trace {
        let pid = (tracee as libc::pid_t).to_ne_bytes();
        if rustix::io::write(sock, &pid).ok() != Some(4) {
            return child_fail(123, "launcher: cannot report the tracee's pid");
        }
        return wait_tracee(tracee as libc::pid_t);
    }
    // SAFETY: the tracee installed this fd in the table we share and keeps it open.
    let notify = unsafe { BorrowedFd::borrow_raw(fd) };
    if send_fd(sock, notify).is_err() {
        return child_fail(123, "launcher: SCM_RIGHTS hand-off failed");
    }
    // Leave the test as the only holder of the listener: if it dies, pending notifications fail
    // with ENOSYS instead of blocking the tracee forever.
    // SAFETY: closing an fd number we own through the shared table; nothing else uses it.
    unsafe { libc::close(fd) };
    wait_tracee(tracee as libc::pid_t)
}

/// Waits for the tracee and returns its exit code, or 128+signal.
fn wait_tracee(tracee: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child; `status` lives for the call.
    while unsafe { libc::waitpid(tracee, &mut status, libc::__WALL) } < 0 {
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return child_fail(124, "launcher: waitpid failed");
        }
    }
    if libc::WIFSIGNALED(status) { 128 + libc::WTERMSIG(status) } else { libc::WEXITSTATUS(status) }
}

fn tracee_main<F: FnOnce() -> i32>(
    program: &BpfProgram,
    trap: TrapAction,
    ready_w: OwnedFd,
    go_r: OwnedFd,
    body: F,
) -> i32 {
    die_with_parent();
    let installed = match trap {
        TrapAction::UserNotify => install_with_listener(program).map(|fd| {
            // Keep the fd open (the launcher sends it from our shared table); never close it here.
            let raw = fd.as_raw_fd();
            std::mem::forget(fd);
            raw
        }),
        // No listener: the tracer seizes us by pid. From here until go, only write and read.
        TrapAction::Trace => install(program).map(|()| 0),
    };
    let Ok(raw) = installed else {
        let _ = rustix::io::write(&ready_w, &(-1i32).to_ne_bytes());
        return 125;
    };
    if rustix::io::write(&ready_w, &raw.to_ne_bytes()).ok() != Some(4) {
        return 126;
    }
    let mut go = [0u8; 1];
    if rustix::io::read(&go_r, &mut go).ok() != Some(1) {
        return 127;
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101)
}

impl Tracee {
    /// Lets the tracee run its body (start the supervisor first).
    pub fn release(&mut self) -> io::Result<()> {
        let go = self.go.take().ok_or_else(|| io::Error::other("tracee already released"))?;
        rustix::io::write(&go, b"g")?;
        Ok(())
    }

    /// The notify fd, moved out for a supervisor.
    pub fn take_notify(&mut self) -> OwnedFd {
        self.notify.take().expect("notify fd already taken")
    }

    /// Waits for the launcher, which exits with the tracee's code, or 128+signal.
    pub fn wait(mut self) -> io::Result<TraceeExit> {
        self.go.take();
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` lives for the call.
        while unsafe { libc::waitpid(self.launcher, &mut status, 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        if libc::WIFSIGNALED(status) {
            return Err(io::Error::other(format!("launcher killed by signal {}", libc::WTERMSIG(status))));
        }
        let code = libc::WEXITSTATUS(status);
        Ok(if code > 128 { TraceeExit::Signal(code - 128) } else { TraceeExit::Code(code) })
    }

    /// The tracee's pid, for a tracer to seize (from [`spawn_traced`] only).
    pub fn traced_pid(&self) -> Option<libc::pid_t> {
        self.traced
    }

    /// The launcher's pid.
    pub fn launcher_pid(&self) -> libc::pid_t {
        self.launcher
    }

    /// Borrow of the notify fd, if it has not been taken.
    pub fn notify_fd(&self) -> Option<BorrowedFd<'_>> {
        self.notify.as_ref().map(|f| f.as_fd())
    }
}
