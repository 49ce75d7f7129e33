//! Passing one file descriptor (the seccomp notify fd) over a Unix stream socket with
//! SCM_RIGHTS, with one payload byte so the receiver can tell a hand-off from EOF.
//!
//! [`send_fd`] allocates nothing, so a launcher may call it between `fork` and `execve`. Note
//! that once the sandbox filter is installed on a thread, that thread's `sendmsg` is trapped:
//! the sender must be a thread or process that is *not* under the filter (sharing the fd table,
//! e.g. a `clone(CLONE_FILES)` sibling or a thread that never installed it).

#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// The byte carried with the fd.
const TAG: u8 = b'F';

/// Control buffer for exactly one `int`, aligned like `struct cmsghdr`.
#[repr(C)]
struct CmsgOneFd {
    hdr: libc::cmsghdr,
    fd: libc::c_int,
    // CMSG_SPACE rounds up to the alignment of size_t.
    _pad: [u8; 4],
}

/// Sends `fd` over `sock` (SCM_RIGHTS plus one tag byte). Allocation-free.
pub fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut byte = TAG;
    let mut iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
    // SAFETY: an all-zero cmsghdr/msghdr is a valid value of these plain C structs.
    let mut cmsg: CmsgOneFd = unsafe { zeroed() };
    // SAFETY: CMSG_LEN is a pure arithmetic helper.
    cmsg.hdr.cmsg_len = unsafe { libc::CMSG_LEN(size_of::<libc::c_int>() as u32) } as usize;
    cmsg.hdr.cmsg_level = libc::SOL_SOCKET;
    cmsg.hdr.cmsg_type = libc::SCM_RIGHTS;
    cmsg.fd = fd.as_raw_fd();
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut cmsg as *mut CmsgOneFd).cast();
    // SAFETY: pure arithmetic helper.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
    loop {
        // SAFETY: `msg` points at live buffers (`iov`, `byte`, `cmsg`) for the whole call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match n {
            1 => return Ok(()),
            0 => return Err(io::ErrorKind::WriteZero.into()),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
}

/// Receives one fd sent by [`send_fd`]. The received fd is close-on-exec. EOF before a hand-off
/// is `UnexpectedEof`; a message without an fd is `InvalidData`.
pub fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = 0u8;
    let mut iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
    // SAFETY: an all-zero cmsghdr/msghdr is a valid value of these plain C structs.
    let mut cmsg: CmsgOneFd = unsafe { zeroed() };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut cmsg as *mut CmsgOneFd).cast();
    msg.msg_controllen = size_of::<CmsgOneFd>();
    let n = loop {
        // SAFETY: `msg` points at live, writable buffers of the stated sizes.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    let has_fd = msg.msg_controllen >= size_of::<libc::cmsghdr>()
        && cmsg.hdr.cmsg_level == libc::SOL_SOCKET
        && cmsg.hdr.cmsg_type == libc::SCM_RIGHTS
        // SAFETY: pure arithmetic helper.
        && cmsg.hdr.cmsg_len == unsafe { libc::CMSG_LEN(size_of::<libc::c_int>() as u32) } as usize;
    if has_fd {
        // SAFETY: the kernel installed this fd in our table for us alone (SCM_RIGHTS).
        let fd = unsafe { OwnedFd::from_raw_fd(cmsg.fd) };
        if msg.msg_flags & libc::MSG_CTRUNC != 0 || n != 1 || byte != TAG {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed fd hand-off"));
        }
        return Ok(fd);
    }
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "hand-off message carried no fd"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn fd_survives_the_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut r, mut w) = UnixStream::pair().unwrap();
        send_fd(&a, w.as_fd()).unwrap();
        let got = recv_fd(&b).unwrap();
        let mut w2 = UnixStream::from(got);
        w2.write_all(b"hi").unwrap();
        w.write_all(b"!").unwrap();
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi!");
    }

    #[test]
    fn eof_and_plain_bytes_are_errors() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        assert_eq!(recv_fd(&b).unwrap_err().kind(), io::ErrorKind::InvalidData);
        drop(a);
        assert_eq!(recv_fd(&b).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
