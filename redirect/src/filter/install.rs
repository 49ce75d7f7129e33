//! Installing a compiled program in the calling thread: async-signal-safe (no allocation, no
//! locks), so a freshly forked child can call it before `execve`.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use super::compile::{BpfProgram, INSN_LEN};

/// Sets `no_new_privs` and installs `program` on the calling thread with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`, returning the notify fd (close-on-exec).
///
/// Deliberately without TSYNC: a launcher may keep an unfiltered thread that hands the fd over.
/// Safe to call between `fork` and `execve`: it allocates nothing.
pub fn install_with_listener(program: &BpfProgram) -> io::Result<OwnedFd> {
    let fd = raw_install(program, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)?;
    // SAFETY: with NEW_LISTENER, seccomp(2) returns a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sets `no_new_privs` and installs `program` on the calling thread with no listener (for
/// programs that only deny). Allocation-free.
pub fn install(program: &BpfProgram) -> io::Result<()> {
    raw_install(program, 0).map(|_| ())
}

fn raw_install(program: &BpfProgram, flags: libc::c_ulong) -> io::Result<libc::c_long> {
    let bytes = program.as_bytes();
    let fprog = libc::sock_fprog {
        len: (bytes.len() / INSN_LEN) as libc::c_ushort,
        // The kernel only reads through this pointer; `BpfProgram` is a checked, whole number
        // of `struct sock_filter` and outlives the call.
        filter: bytes.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fprog` points at `len` valid instructions for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}
