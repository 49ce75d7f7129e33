//! `agentsh wrap`: run a command in the caller's own context (its namespaces, its cgroup until
//! the gateway moves it) under the sandbox's seccomp filter, and hand the filter's notify fd to
//! the gateway. The filtered child cannot send the fd itself (its `sendmsg` is trapped and
//! nobody answers yet), so the order is:
//!
//! 1. fork; the child installs the filter (with `no_new_privs`), reports the listener's fd
//!    number over a pipe, and blocks reading a second pipe;
//! 2. the parent takes the fd out of the child with `pidfd_getfd` and gives it to the caller,
//!    who hands it to the gateway and waits for it to take the child in;
//! 3. [`Filtered::release`] lets the child close its copy and `execvp` the command; dropping a
//!    [`Filtered`] instead kills the child before it ran anything (fail closed).
//!
//! The child allocates nothing after the fork: every string and the program are prepared
//! before it.

use std::{
    ffi::{CString, OsString},
    io,
    os::{
        fd::{FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
};

use crate::{prepare::check_program, sys};

/// A child under the filter, waiting to be released.
#[derive(Debug)]
pub struct Filtered {
    /// The child's pid (in the caller's PID namespace).
    pub pid: libc::pid_t,
    /// The filter's notify fd, for the gateway.
    pub notify: Option<OwnedFd>,
    go: Option<OwnedFd>,
    released: bool,
}

/// Fork `argv[0]` (looked up on `PATH`) under `program` (raw `struct sock_filter`s), blocked
/// before `execvp` until [`Filtered::release`]. The environment is the caller's.
pub fn spawn_filtered(argv: &[OsString], program: &[u8]) -> io::Result<Filtered> {
    let prog =
        check_program(program).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    if argv.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
    }
    let args: Vec<CString> = argv
        .iter()
        .map(|a| {
            CString::new(a.as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in argument"))
        })
        .collect::<io::Result<_>>()?;
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the child only makes raw syscalls on memory prepared above and then execs or
    // exits; it allocates nothing and takes no locks.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        child(&prog, ready_w, go_r, &ptrs);
    }
    sys::close(ready_w);
    sys::close(go_r);
    let ready = OwnedFdGuard(ready_r);
    let go = unsafe_owned(go_w);
    let mut number = [0u8; 4];
    let got = read_exact(ready.0, &mut number);
    drop(ready);
    let fail = |e: io::Error| {
        // SAFETY: plain kill and waitpid of our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        e
    };
    if let Err(e) = got {
        return Err(fail(io::Error::other(format!("the child could not install the filter ({e})"))));
    }
    let target = i32::from_ne_bytes(number);
    // SAFETY: pidfd_open of our own child, no flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    let pidfd = unsafe_owned(pidfd as RawFd);
    let notify = sys::pidfd_getfd(std::os::fd::AsRawFd::as_raw_fd(&pidfd), target)
        .map_err(|e| fail(io::Error::from_raw_os_error(e)))?;
    Ok(Filtered { pid, notify: Some(unsafe_owned(notify)), go: Some(go), released: false })
}

impl Filtered {
    /// Let the child run the command.
    pub fn release(&mut self) -> io::Result<()> {
        let go = self.go.take().ok_or_else(|| io::Error::other("already released"))?;
        sys::write_all(std::os::fd::AsRawFd::as_raw_fd(&go), b"G").map_err(io::Error::from_raw_os_error)?;
        self.released = true;
        Ok(())
    }

    /// Wait for the child; its exit code, or 128 + the signal that ended it.
    pub fn wait(&mut self) -> io::Result<i32> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid of our own child into a local int.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.released = true; // reaped: nothing to kill on drop
        Ok(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) })
    }
}

impl Drop for Filtered {
    fn drop(&mut self) {
        if !self.released {
            // SAFETY: the child never ran the command: kill and reap it.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// The forked child: install, report, wait, exec. Never returns.
fn child(prog: &[libc::sock_filter], ready: RawFd, go: RawFd, argv: &[*const libc::c_char]) -> ! {
    // no_new_privs: required to install a filter without CAP_SYS_ADMIN, and the command must
    // not gain privileges the filter would not see coming (setuid binaries).
    if sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).is_err() {
        sys::exit(125);
    }
    let listener = match sys::seccomp_with_listener(prog) {
        Ok(fd) => fd,
        Err(_) => sys::exit(125),
    };
    if sys::write_all(ready, &listener.to_ne_bytes()).is_err() {
        sys::exit(125);
    }
    sys::close(ready);
    match sys::read_byte(go) {
        Ok(Some(b'G')) => {}
        _ => sys::exit(125),
    }
    sys::close(go);
    sys::close(listener);
    // SAFETY: argv is a NULL-terminated array of C strings that outlive the call.
    unsafe { libc::execvp(argv[0], argv.as_ptr()) };
    sys::exit(127)
}

fn pipe() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

fn unsafe_owned(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass fds just created for us and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

struct OwnedFdGuard(RawFd);

impl Drop for OwnedFdGuard {
    fn drop(&mut self) {
        sys::close(self.0);
    }
}

fn read_exact(fd: RawFd, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        match n {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the child exited")),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as usize,
        }
    }
    Ok(())
}
