//! The launch socket's messages: descriptors passed with `SCM_RIGHTS`, and plain numbers.
//!
//! Each message is one tag byte, optionally followed by a 4-byte native-endian number, plus up
//! to [`MAX_FDS`] descriptors, on a `SOCK_SEQPACKET` socketpair so message boundaries hold. The
//! sending side runs in the child before `execve` and uses only stack buffers.
//!
//! [`send_fds`] uses `sendmsg`, which the sandbox's seccomp filter traps: the command may call
//! it only before installing the filter. [`send_number`] uses `write(2)`, which no filter traps,
//! and is what the command uses afterwards (see `child.rs` for the notify-fd hand-off).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use crate::sys::{SysResult, errno};

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 4;
/// Length of a [`send_number`] message: the tag and a 4-byte number.
const NUMBER_MSG_LEN: usize = 5;
/// Receive buffer for a message's bytes; larger than any valid message, so an oversized one is
/// seen as such (`MSG_TRUNC`) rather than silently cut.
const MAX_MSG_LEN: usize = 16;

/// Tag of the message carrying the gateway listeners (IPv4 first, then IPv6).
pub const TAG_LISTENERS: u8 = b'L';
/// Tag of the message carrying a pidfd of the command itself, sent before its filter exists.
pub const TAG_PIDFD: u8 = b'P';
/// Tag of the message carrying the *number* of the command's seccomp notify fd (no descriptor:
/// the parent takes it with `pidfd_getfd`).
pub const TAG_NOTIFY: u8 = b'N';
/// Tag of the message saying the command's filter is installed with no listener, for a tracer
/// (its number is always 0).
pub const TAG_TRACEABLE: u8 = b'T';
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

/// Sends `tag` followed by `n` with a single `write(2)`: one message on the seqpacket socket.
/// Allocation-free, and uses no call a seccomp filter traps (no `sendmsg`, `sendto`).
pub(crate) fn send_number(sock: RawFd, tag: u8, n: i32) -> SysResult<()> {
    let mut buf = [0u8; NUMBER_MSG_LEN];
    buf[0] = tag;
    buf[1..].copy_from_slice(&n.to_ne_bytes());
    loop {
        // SAFETY: `buf` is a live, readable buffer of the length passed.
        let ret = unsafe { libc::write(sock, buf.as_ptr().cast(), buf.len()) };
        if ret == buf.len() as isize {
            return Ok(());
        }
        if ret >= 0 {
            // A seqpacket write is all or nothing; anything else is a broken channel.
            return Err(libc::EPROTO);
        }
        if errno() != libc::EINTR {
            return Err(errno());
        }
    }
}

/// One received message: its tag, the bytes after the tag, and any descriptors (close-on-exec).
#[derive(Debug)]
pub(crate) struct Message {
    pub tag: u8,
    pub data: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Message {
    /// The number of a [`send_number`] message, if this is one.
    pub fn number(&self) -> Option<i32> {
        let bytes: [u8; 4] = self.data.as_slice().try_into().ok()?;
        if self.fds.is_empty() { Some(i32::from_ne_bytes(bytes)) } else { None }
    }
}

/// Receives one message: `Ok(None)` at end-of-file.
pub(crate) fn recv_msg(sock: BorrowedFd<'_>) -> io::Result<Option<Message>> {
    let mut buf = CmsgBuf([0; 64]);
    let mut bytes = [0u8; MAX_MSG_LEN];
    let mut iov = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: bytes.len() };
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
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::other("launch message too long"));
    }
    let n = n as usize;
    if n == 0 {
        return if fds.is_empty() { Ok(None) } else { Err(io::Error::other("descriptors without a tag")) };
    }
    Ok(Some(Message { tag: bytes[0], data: bytes[1..n].to_vec(), fds }))
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
        send_fds(a.as_raw_fd(), TAG_PIDFD, &[right.as_raw_fd()]).unwrap();
        drop(right);
        let mut m = recv_msg(b.as_fd()).unwrap().unwrap();
        assert_eq!(m.tag, TAG_PIDFD);
        assert!(m.data.is_empty());
        assert_eq!(m.number(), None);
        assert_eq!(m.fds.len(), 1);
        let mut got = UnixStream::from(m.fds.remove(0));
        left.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[test]
    fn end_of_file_is_none() {
        let (a, b) = seqpacket_pair();
        drop(a);
        assert!(recv_msg(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn numbers_cross_as_one_message_each() {
        let (a, b) = seqpacket_pair();
        send_number(a.as_raw_fd(), TAG_NOTIFY, 7).unwrap();
        send_number(a.as_raw_fd(), TAG_NOTIFY, -1).unwrap();
        let m = recv_msg(b.as_fd()).unwrap().unwrap();
        assert_eq!((m.tag, m.number()), (TAG_NOTIFY, Some(7)));
        let m = recv_msg(b.as_fd()).unwrap().unwrap();
        assert_eq!((m.tag, m.number()), (TAG_NOTIFY, Some(-1)));
    }

    #[test]
    fn an_oversized_message_is_an_error() {
        let (a, b) = seqpacket_pair();
        let big = [b'N'; MAX_MSG_LEN + 1];
        // SAFETY: `big` is a live buffer of the length passed.
        let n = unsafe { libc::write(a.as_raw_fd(), big.as_ptr().cast(), big.len()) };
        assert_eq!(n, big.len() as isize);
        assert!(recv_msg(b.as_fd()).is_err());
    }

    #[test]
    fn too_many_descriptors_are_refused() {
        let (a, _b) = seqpacket_pair();
        assert_eq!(send_fds(a.as_raw_fd(), TAG_LISTENERS, &[0; MAX_FDS + 1]), Err(libc::EINVAL));
    }
}
