//! The notify-fd ioctls (receive, respond, id-valid, set-flags) over libc's stable structs.

#![allow(unsafe_code)]

use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, BorrowedFd};

pub use crate::trap::Reply;
use crate::trap::{Call, Pending};

/// One trapped syscall, copied out of `struct seccomp_notif`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// The cookie that identifies this notification in replies.
    pub id: u64,
    /// The calling thread's id, in the supervisor's pid namespace.
    pub pid: u32,
    /// The syscall number.
    pub nr: i32,
    /// The `AUDIT_ARCH_*` value of the call.
    pub arch: u32,
    /// The six raw argument registers.
    pub args: [u64; 6],
}

impl Notification {
    /// The call itself, for the shared handlers.
    pub fn call(&self) -> Call {
        Call { pid: self.pid, nr: self.nr, arch: self.arch, args: self.args }
    }
}

/// A notification still waiting on `fd`: the handlers' [`Pending`] for the user-notify path.
pub(crate) struct Waiting<'a> {
    pub fd: BorrowedFd<'a>,
    pub id: u64,
}

impl Pending for Waiting<'_> {
    fn still_pending(&self) -> bool {
        id_valid(self.fd, self.id)
    }
}

/// Receives one notification. ENOENT means the tracee died between wake-up and receive.
pub fn recv(fd: BorrowedFd<'_>) -> io::Result<Notification> {
    // SAFETY: all-zero is a valid seccomp_notif, and the kernel insists the buffer is zeroed.
    let mut raw: libc::seccomp_notif = unsafe { zeroed() };
    // SAFETY: RECV writes one seccomp_notif into the buffer we pass, which lives for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut raw) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Notification { id: raw.id, pid: raw.pid, nr: raw.data.nr, arch: raw.data.arch, args: raw.data.args })
}

/// Sends `reply` for notification `id`. ENOENT (the tracee died or was interrupted) is not an
/// error: there is nobody left to answer.
pub fn respond(fd: BorrowedFd<'_>, id: u64, reply: Reply) -> io::Result<()> {
    let (val, error, flags) = match reply {
        Reply::Drop => return Ok(()),
        Reply::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Reply::Value(v) => (v, 0, 0),
        Reply::Error(e) => (0, -e, 0),
    };
    let mut resp = libc::seccomp_notif_resp { id, val, error, flags };
    // SAFETY: SEND reads one seccomp_notif_resp from the buffer we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// True while notification `id` is still pending, i.e. its tracee is alive and blocked in the
/// call, so a pid read from it still names the same thread.
pub fn id_valid(fd: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: ID_VALID reads one u64 from the pointer we pass.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0 }
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): the supervisor answers each notification
/// at once, so the kernel may switch straight to it on the trapping thread's CPU, and back.
const SYNC_WAKE_UP: u64 = 1;

/// Asks the kernel to hand each notification over on the trapping thread's CPU (and the answer
/// back the same way) instead of waking the supervisor wherever it sleeps: a cross-CPU wake-up
/// is an interrupt, dear on a virtual machine. Fails with `EINVAL` before Linux 6.6.
pub fn set_sync_wake_up(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: SET_FLAGS takes the flags by value and touches no memory of ours.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
