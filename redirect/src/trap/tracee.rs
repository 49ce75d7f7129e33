//! Reaching into a stopped tracee: copy bytes (a sockaddr, a header, a datagram's payload) out of
//! its memory once, write an answer back, and take a duplicate of one of its file descriptors
//! with `pidfd_getfd`.
//!
//! The pid of a trapped call is the calling *thread's* id, so pidfds are opened with
//! `PIDFD_THREAD` (Linux 6.9+), falling back to the thread group leader from `/proc`.

use std::fs::File;
use std::io::{self, IoSliceMut};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use nix::sys::uio::{RemoteIoVec, process_vm_readv};
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};

/// `PIDFD_THREAD` (== `O_EXCL`): a pidfd for this very thread rather than its thread group.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Copies exactly `buf.len()` bytes from `addr` in `pid`'s memory. A short or failed read is
/// EFAULT (bad pointer) or ESRCH (tracee gone). Uses `process_vm_readv`, falling back to
/// `/proc/<pid>/mem` when that is refused (Yama, ENOSYS).
pub(crate) fn read_mem(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    if addr == 0 {
        return Err(errno(libc::EFAULT));
    }
    let remote = [RemoteIoVec { base: addr as usize, len: buf.len() }];
    let want = buf.len();
    let npid = nix::unistd::Pid::from_raw(pid as i32);
    match process_vm_readv(npid, &mut [IoSliceMut::new(buf)], &remote) {
        Ok(n) if n == want => Ok(()),
        Ok(_) => Err(errno(libc::EFAULT)),
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::ENOSYS) => {
            let mem = File::open(format!("/proc/{pid}/mem")).map_err(gone_or)?;
            mem.read_exact_at(buf, addr).map_err(|_| errno(libc::EFAULT))
        }
        Err(e) => Err(errno(e as i32)),
    }
}

/// Copies the `(addr, len)` segments of `pid`'s memory, in order, into one buffer of `total`
/// bytes (their summed length, which the caller has bounded) with a single `process_vm_readv`
/// (falling back to `/proc/<pid>/mem`). Empty segments are skipped whatever their address; a
/// NULL or unreadable one, or a short read, is EFAULT; ESRCH means the tracee is gone.
pub(crate) fn read_gather(pid: u32, segments: &[(u64, usize)], total: usize) -> io::Result<Vec<u8>> {
    let segments: Vec<(u64, usize)> = segments.iter().copied().filter(|&(_, len)| len > 0).collect();
    if segments.iter().map(|&(_, len)| len).sum::<usize>() != total {
        return Err(errno(libc::EINVAL));
    }
    let mut buf = vec![0u8; total];
    if total == 0 {
        return Ok(buf);
    }
    if segments.iter().any(|&(addr, _)| addr == 0) {
        return Err(errno(libc::EFAULT));
    }
    let remote: Vec<RemoteIoVec> =
        segments.iter().map(|&(addr, len)| RemoteIoVec { base: addr as usize, len }).collect();
    let npid = nix::unistd::Pid::from_raw(pid as i32);
    match process_vm_readv(npid, &mut [IoSliceMut::new(&mut buf)], &remote) {
        Ok(n) if n == total => Ok(buf),
        Ok(_) => Err(errno(libc::EFAULT)),
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::ENOSYS) => {
            let mem = File::open(format!("/proc/{pid}/mem")).map_err(gone_or)?;
            let mut at = 0;
            for &(addr, len) in &segments {
                mem.read_exact_at(&mut buf[at..at + len], addr).map_err(|_| errno(libc::EFAULT))?;
                at += len;
            }
            Ok(buf)
        }
        Err(e) => Err(errno(e as i32)),
    }
}

/// `/proc/<pid>/mem` opened for writing. Open it *before* checking that the call is
/// still pending: the open file stays bound to that process's memory even if the pid is reused.
pub(crate) fn open_mem_for_write(pid: u32) -> io::Result<File> {
    std::fs::OpenOptions::new().write(true).open(format!("/proc/{pid}/mem")).map_err(gone_or)
}

/// Writes all of `data` at `addr` through a handle from [`open_mem_for_write`].
pub(crate) fn write_mem(mem: &File, addr: u64, data: &[u8]) -> io::Result<()> {
    if addr == 0 {
        return Err(errno(libc::EFAULT));
    }
    mem.write_all_at(data, addr).map_err(|_| errno(libc::EFAULT))
}

fn gone_or(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::NotFound { errno(libc::ESRCH) } else { e }
}

/// A pidfd for thread `tid`: `PIDFD_THREAD` first, then the thread group leader.
pub(crate) fn open_pidfd(tid: u32) -> io::Result<OwnedFd> {
    let pid = Pid::from_raw(tid as i32).ok_or_else(|| errno(libc::ESRCH))?;
    match pidfd_open(pid, PidfdFlags::from_bits_retain(PIDFD_THREAD)) {
        Ok(fd) => Ok(fd),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOENT => {
            // Older kernels: only a thread-group leader has a pidfd; every thread shares the fd
            // table unless it unshared it, which is rare enough to fail closed on (EBADF later).
            let leader = tgid_of(tid)?;
            let pid = Pid::from_raw(leader as i32).ok_or_else(|| errno(libc::ESRCH))?;
            pidfd_open(pid, PidfdFlags::empty()).map_err(io::Error::from)
        }
        Err(e) => Err(e.into()),
    }
}

fn tgid_of(tid: u32) -> io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).map_err(gone_or)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| errno(libc::ESRCH))
}

/// Duplicates the tracee's `fd` into our table (close-on-exec). It shares the open file
/// description, so flags such as O_NONBLOCK and every socket option are the agent's own.
pub(crate) fn take_fd(pidfd: &OwnedFd, fd: u64) -> io::Result<OwnedFd> {
    // An `int` argument: the kernel ignores the upper half of the register, and so do we.
    let raw = fd as u32 as i32;
    if raw < 0 {
        return Err(errno(libc::EBADF));
    }
    pidfd_getfd(pidfd, raw, PidfdGetfdFlags::empty()).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_rejects_null() {
        let src = *b"sockaddr bytes";
        let mut dst = [0u8; 14];
        read_mem(std::process::id(), src.as_ptr() as u64, &mut dst).unwrap();
        assert_eq!(dst, src);
        let err = read_mem(std::process::id(), 0, &mut dst).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFAULT));
    }

    #[test]
    fn gathers_segments_in_order() {
        let a = *b"hello ";
        let b = *b"world";
        let segs = [(a.as_ptr() as u64, a.len()), (0, 0), (b.as_ptr() as u64, b.len())];
        assert_eq!(read_gather(std::process::id(), &segs, 11).unwrap(), b"hello world");
        assert_eq!(read_gather(std::process::id(), &[], 0).unwrap(), b"");
        let err = read_gather(std::process::id(), &[(0, 3)], 3).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFAULT));
        let err = read_gather(std::process::id(), &segs, 12).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn tgid_of_self() {
        assert_eq!(tgid_of(std::process::id()).unwrap(), std::process::id());
    }
}
