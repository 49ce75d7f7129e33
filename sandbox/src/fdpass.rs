//! Passing descriptors over the launch socket with `SCM_RIGHTS`.
//!
//! Each message is one tag byte plus up to [`MAX_FDS`] descriptors, on a `SOCK_SEQPACKET`
//! socketpair so message boundaries hold. The sending side runs in the child before `execve`
//! and uses only a stack buffer.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use crate::sys::{SysResult, errno};

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 4;

/// Tag of the message carrying the gateway listeners (IPv4 first, then IPv6).
pub const TAG_LISTENERS: u8 = b'L';
/// Tag of the message carrying the seccomp notify fd.
pub const TAG_NOTIFY: u8 = b'N';
/// The parent's go-ahead byte, sent once it supervises the notify fd.
pub const ACK: u8 = b'G';

/// Control-message buffer with the alignment `cmsghdr` needs.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

fn cmsg_space(nfds: usize) -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    unsafe { libc::CMSG_SPACE((nfds * size_of::<RawFd>()) as u32) as usize }
}

/// Sends `tag` with `fds` attached. Allocation-free; safe to call in the pre-exec child.
pub(crate) fn send_fds(sock: RawFd, tag: u8, fds: &[RawFd]) -> SysResult<()> {
    if fds.is_empty() || fds.len() > MAX_FDS {
        return Err(libc::EINVAL);
    }
    let mut buf = CmsgBuf([0; 64]);
    let mut byte = tag;
    let mut iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_space(fds.len()) as _;
    // SAFETY: msg_control points at an aligned buffer of at least CMSG_SPACE(len) bytes, so the
    // first header and its data area are in bounds; the data area holds `fds.len()` ints.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of_val(fds) as u32) as _;
        ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
    }
    loop {
        // SAFETY: `msg` and everything it points at live across the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        if errno() != libc::EINTR {
            return Err(errno());
        }
    }
}

/// Receives one message: `Ok(None)` at end-of-file, else its tag and descriptors (close-on-exec).
pub(crate) fn recv_fds(sock: BorrowedFd<'_>) -> io::Result<Option<(u8, Vec<OwnedFd>)>> {
    let mut buf = CmsgBuf([0; 64]);
    let mut byte = 0u8;
    let mut iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_space(MAX_FDS) as _;
    let n = loop {
        // SAFETY: `msg` points at live buffers of the advertised sizes.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG_* walk stays within them,
    // and each SCM_RIGHTS payload holds descriptors now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data_len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..data_len / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptor message truncated"));
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((byte, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
        let mut sv = [0; 2];
        // SAFETY: `sv` has room for the two descriptors socketpair writes.
        let ret = unsafe {
            libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr())
        };
        assert_eq!(ret, 0);
        // SAFETY: both descriptors were just created and are owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) }
    }

    #[test]
    fn descriptors_cross_and_still_work() {
        let (a, b) = seqpacket_pair();
        let (mut left, right) = UnixStream::pair().unwrap();
        send_fds(a.as_raw_fd(), TAG_NOTIFY, &[right.as_raw_fd()]).unwrap();
        drop(right);
        let (tag, mut fds) = recv_fds(b.as_fd()).unwrap().unwrap();
        assert_eq!(tag, TAG_NOTIFY);
        assert_eq!(fds.len(), 1);
        let mut got = UnixStream::from(fds.remove(0));
        left.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn end_of_file_is_none() {
        let (a, b) = seqpacket_pair();
        drop(a);
        assert!(recv_fds(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn too_many_descriptors_are_refused() {
        let (a, _b) = seqpacket_pair();
        assert_eq!(send_fds(a.as_raw_fd(), TAG_LISTENERS, &[0; MAX_FDS + 1]), Err(libc::EINVAL));
    }
}
