//! AF_UNIX connects made on the agent's behalf: the path is resolved once, inside the agent's
//! root (or from its cwd), with no symlink followed, and the agent's socket is connected through
//! an `O_PATH` handle on the very inode that was checked.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags, fcntl_getfl, fstat, open, openat2};
use rustix::io::Errno;
use rustix::net::{SocketAddrUnix, sockopt};

use crate::decide::UnixRefusal;

/// The longest a blocking connect may hold the supervisor while the listener's backlog is full;
/// after it the agent gets EAGAIN, as with its own `SO_SNDTIMEO`. Every other trapped call of
/// the sandbox waits meanwhile, so it is short.
const BLOCKING_CONNECT_WAIT: Duration = Duration::from_secs(2);
/// openat2 answers EAGAIN when a rename or mount raced a `..`; it is safe to try again.
const RESOLVE_ATTEMPTS: usize = 8;

/// Why a path yielded no socket to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Refused by design: audited, then answered with the refusal's errno.
    Policy(UnixRefusal),
    /// The errno the agent gets, as its own connect would (ENOENT, ECONNREFUSED, ...), or ESRCH
    /// when the tracee is gone.
    Errno(i32),
}

impl From<Errno> for Refused {
    fn from(e: Errno) -> Self {
        Self::Errno(e.raw_os_error())
    }
}

/// Where a path is resolved from: the tracee's root, and its cwd for a relative path. Opened
/// from `/proc/<tid>`, so check the call is still pending after [`open_start`].
pub(crate) struct Start {
    root: OwnedFd,
    cwd: Option<OwnedFd>,
}

/// Opens `/proc/<tid>/root` (and `/proc/<tid>/cwd` when `relative`) as `O_PATH` directories.
pub(crate) fn open_start(tid: u32, relative: bool) -> io::Result<Start> {
    let dir = |what: &str| {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        open(format!("/proc/{tid}/{what}"), flags, Mode::empty()).map_err(|e| match e {
            Errno::NOENT => io::Error::from_raw_os_error(libc::ESRCH),
            e => e.into(),
        })
    };
    Ok(Start { root: dir("root")?, cwd: if relative { Some(dir("cwd")?) } else { None } })
}

/// Resolves `path` (a non-empty pathname, as the agent wrote it) to an `O_PATH` handle on a
/// socket with a single name. Every component must be a real directory or the socket itself.
pub(crate) fn resolve(start: &Start, path: &[u8]) -> Result<OwnedFd, Refused> {
    let fd = match &start.cwd {
        Some(cwd) if path.first() != Some(&b'/') => {
            // Leading `..` are walked by hand so the agent's root bounds them, as it bounds the
            // agent; the rest must then stay beneath the directory reached.
            let (ups, rest) = split_parents(path);
            let base = walk_up(cwd, &start.root, ups)?;
            open_no_follow(base.as_fd(), rest, ResolveFlags::BENEATH)?
        }
        _ => open_no_follow(start.root.as_fd(), path, ResolveFlags::IN_ROOT)?,
    };
    let st = fstat(&fd)?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Socket if st.st_nlink <= 1 => Ok(fd),
        FileType::Socket => Err(Refused::Policy(UnixRefusal::HardLink)),
        // O_PATH|O_NOFOLLOW opens a trailing symlink itself rather than failing.
        FileType::Symlink => Err(Refused::Policy(UnixRefusal::Symlink)),
        _ => Err(Refused::Errno(libc::ECONNREFUSED)),
    }
}

/// `openat2(dir, path, O_PATH|O_NOFOLLOW|O_CLOEXEC)` with no symlink of any kind followed.
fn open_no_follow(dir: BorrowedFd<'_>, path: &[u8], scope: ResolveFlags) -> Result<OwnedFd, Refused> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = scope | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match openat2(dir, path, flags, Mode::empty(), resolve) {
            Ok(fd) => return Ok(fd),
            Err(Errno::AGAIN) if attempts < RESOLVE_ATTEMPTS => continue,
            Err(Errno::LOOP) => return Err(Refused::Policy(UnixRefusal::Symlink)),
            // An inner `..` climbing above the start: the agent may not name such a path here.
            Err(Errno::XDEV) => return Err(Refused::Errno(libc::EACCES)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The number of leading `..` components of a relative path, and what follows them (`.` and
/// empty components among them are skipped).
pub(crate) fn split_parents(path: &[u8]) -> (usize, &[u8]) {
    let mut ups = 0;
    let mut rest = path;
    loop {
        let end = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
        match &rest[..end] {
            b"" | b"." => {}
            b".." => ups += 1,
            _ => return (ups, rest),
        }
        if end == rest.len() {
            return (ups, &rest[end..]);
        }
        rest = &rest[end + 1..];
    }
}

/// `ups` parents of `cwd`, stopping at `root` (where the agent's own `..` stops too).
fn walk_up(cwd: &OwnedFd, root: &OwnedFd, ups: usize) -> Result<OwnedFd, Refused> {
    let id = |fd: &OwnedFd| fstat(fd).map(|s| (s.st_dev, s.st_ino));
    let root_id = id(root)?;
    let mut cur = cwd.try_clone().map_err(|e| Refused::Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
    for _ in 0..ups {
        if id(&cur)? == root_id {
            break;
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        cur = openat2(&cur, "..", flags, Mode::empty(), resolve)?;
    }
    Ok(cur)
}

/// Connects the agent's socket (our duplicate) to the socket behind `target`, through the
/// `/proc/self/fd` magic link, which names that inode and nothing else.
pub(crate) fn connect_pinned(sock: BorrowedFd<'_>, target: &OwnedFd) -> io::Result<()> {
    let addr = SocketAddrUnix::new(format!("/proc/self/fd/{}", target.as_raw_fd()))?;
    bounded(sock, || rustix::net::connect(sock, &addr))
}

/// Connects the agent's socket to the abstract `name` read from the agent (looked up in the
/// socket's own network namespace).
pub(crate) fn connect_abstract(sock: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let addr = SocketAddrUnix::new_abstract_name(name)?;
    bounded(sock, || rustix::net::connect(sock, &addr))
}

/// Runs `connect` with a blocking socket's send timeout capped at [`BLOCKING_CONNECT_WAIT`] (the
/// kernel waits that long for backlog room), then restores the agent's own timeout. A
/// non-blocking socket answers at once: connected, or EAGAIN when the backlog is full.
fn bounded(sock: BorrowedFd<'_>, connect: impl FnOnce() -> rustix::io::Result<()>) -> io::Result<()> {
    let blocking = !fcntl_getfl(sock)?.contains(OFlags::NONBLOCK);
    let own = sockopt::socket_timeout(sock, sockopt::Timeout::Send)?;
    let cap = blocking && own.is_none_or(|t| t > BLOCKING_CONNECT_WAIT);
    if cap {
        sockopt::set_socket_timeout(sock, sockopt::Timeout::Send, Some(BLOCKING_CONNECT_WAIT))?;
    }
    let result = connect();
    if cap && let Err(e) = sockopt::set_socket_timeout(sock, sockopt::Timeout::Send, own) {
        tracing::warn!(error = %e, "cannot restore the agent's SO_SNDTIMEO");
    }
    result.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_parents_are_split_off() {
        assert_eq!(split_parents(b"x.sock"), (0, &b"x.sock"[..]));
        assert_eq!(split_parents(b"./x.sock"), (0, &b"x.sock"[..]));
        assert_eq!(split_parents(b"../../a/x.sock"), (2, &b"a/x.sock"[..]));
        assert_eq!(split_parents(b"..//./../a/../x"), (2, &b"a/../x"[..]));
        assert_eq!(split_parents(b".."), (1, &b""[..]));
        assert_eq!(split_parents(b"../"), (1, &b""[..]));
    }
}
