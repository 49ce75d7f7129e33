//! `agentsh wrap`: run a command in the caller's own context (its namespaces, its cgroup until
//! the gateway moves it) under the sandbox's seccomp filter, and hand the filter's notify fd to
//! the gateway. The filtered child cannot send the fd itself (its `sendmsg` is trapped and
//! nobody answers yet), so the order is:
//!
//! 1. fork; the child installs the filter (with `no_new_privs`), reports the listener's fd
//!    number over a pipe, and blocks reading a second pipe;
//! 2. the parent takes the fd out of the child with `pidfd_getfd` and gives it to the caller,
//!    who hands it to the gateway and waits for it to take the child in;
//! 3. [`Filtered::release`] lets the child close its copy and `execvp` the command (with the
//!    caller's environment, or one given by [`Filtered::release_with_env`], which can only be
//!    known once the gateway took the child in); dropping a [`Filtered`] instead kills the
//!    child before it ran anything (fail closed).
//!
//! The child allocates nothing after the fork: every string and the program are prepared
//! before it, and an environment given at release is laid out by the parent, ready for
//! `execvpe`, in a shared mapping made before the fork (at the same address in both).

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
    env: EnvArea,
}

/// The most bytes an environment given at release may take (its strings and pointers).
pub const ENV_MAX: usize = 1 << 20;

/// A shared anonymous mapping of [`ENV_MAX`] bytes: a word saying whether an environment is
/// there, then its NULL-terminated pointer array, then its strings. Pages never written cost
/// nothing.
#[derive(Debug)]
struct EnvArea {
    base: *mut u8,
}

// SAFETY: the mapping is owned by one `Filtered`; only its parent side writes it, through
// `&mut self`.
unsafe impl Send for EnvArea {}

impl EnvArea {
    fn new() -> io::Result<EnvArea> {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ENV_MAX,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(EnvArea { base: p.cast() })
    }

    /// Lays out `env` (`KEY=VALUE` entries) for `execvpe` and marks it present.
    fn fill(&mut self, env: &[(OsString, OsString)]) -> io::Result<()> {
        let word = std::mem::size_of::<usize>();
        let table = word + (env.len() + 1) * std::mem::size_of::<*const libc::c_char>();
        let strings: usize = env.iter().map(|(k, v)| k.len() + 1 + v.len() + 1).sum();
        if table + strings > ENV_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the environment takes {} bytes, more than {ENV_MAX}", table + strings),
            ));
        }
        // SAFETY: every write below stays inside the ENV_MAX bytes checked above; the child
        // reads them only after the release byte, written after these.
        unsafe {
            let ptrs = self.base.add(word).cast::<*const libc::c_char>();
            let mut at = self.base.add(table);
            for (i, (k, v)) in env.iter().enumerate() {
                if k.as_bytes().contains(&0) || k.as_bytes().contains(&b'=') || v.as_bytes().contains(&0) {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, "NUL or '=' in a variable"));
                }
                ptrs.add(i).write(at.cast_const().cast());
                for part in [k.as_bytes(), b"=", v.as_bytes(), b"\0"] {
                    std::ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
                    at = at.add(part.len());
                }
            }
            ptrs.add(env.len()).write(std::ptr::null());
            self.base.cast::<usize>().write(1);
        }
        Ok(())
    }

    /// The environment laid out by [`EnvArea::fill`], if any (read in the child).
    fn envp(&self) -> Option<*const *const libc::c_char> {
        // SAFETY: the first word of the mapping, zero until `fill` completes.
        let present = unsafe { self.base.cast::<usize>().read_volatile() } == 1;
        // SAFETY: the pointer array follows the first word.
        present.then(|| unsafe { self.base.add(std::mem::size_of::<usize>()).cast_const().cast() })
    }
}

impl Drop for EnvArea {
    fn drop(&mut self) {
        // SAFETY: our own mapping of ENV_MAX bytes, unmapped once.
        unsafe { libc::munmap(self.base.cast(), ENV_MAX) };
    }
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
    let env = EnvArea::new()?;
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: the child only makes raw syscalls on memory prepared above and then execs or
    // exits; it allocates nothing and takes no locks.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        child(&prog, ready_w, go_r, &ptrs, &env);
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
    Ok(Filtered { pid, notify: Some(unsafe_owned(notify)), go: Some(go), released: false, env })
}

impl Filtered {
    /// Let the child run the command with the caller's environment.
    pub fn release(&mut self) -> io::Result<()> {
        self.go()
    }

    /// Let the child run the command with exactly `env` as its environment (at most
    /// [`ENV_MAX`] bytes; no NUL anywhere, no `=` in a name).
    pub fn release_with_env(&mut self, env: &[(OsString, OsString)]) -> io::Result<()> {
        if self.go.is_none() {
            return Err(io::Error::other("already released"));
        }
        self.env.fill(env)?;
        self.go()
    }

    fn go(&mut self) -> io::Result<()> {
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
fn child(
    prog: &[libc::sock_filter],
    ready: RawFd,
    go: RawFd,
    argv: &[*const libc::c_char],
    env: &EnvArea,
) -> ! {
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
    match env.envp() {
        // SAFETY: argv and envp are NULL-terminated arrays of C strings that outlive the call
        // (envp in the shared mapping, laid out by the parent before the release byte).
        Some(envp) => unsafe { libc::execvpe(argv[0], argv.as_ptr(), envp) },
        // SAFETY: as above; the environment is the one inherited.
        None => unsafe { libc::execvp(argv[0], argv.as_ptr()) },
    };
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
