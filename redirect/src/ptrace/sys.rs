//! The tracer's system calls: the ptrace requests (seizing, resuming, reading the trapped call at
//! a `PTRACE_EVENT_SECCOMP` stop, skipping it with a return value, per architecture), waiting
//! for this thread's tracees, and killing one.
//!
//! Every ptrace request and wait here must come from the tracing thread: the kernel ties a
//! tracee to the thread that seized it, not to the process.

#![allow(unsafe_code)]

use std::io;

use crate::trap::Call;

/// The options every tracee carries (inherited by auto-attached children).
const OPTIONS: libc::c_int = libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_EXITKILL;

/// `PTRACE_SYSCALL_INFO_SECCOMP`: the `op` of a `PTRACE_EVENT_SECCOMP` stop.
const INFO_SECCOMP: u8 = 3;

/// `struct ptrace_syscall_info` with its union read as the `seccomp` member (the only one a
/// seccomp stop fills).
#[repr(C)]
#[derive(Debug, Default)]
struct SyscallInfo {
    op: u8,
    reserved: u8,
    flags: u16,
    arch: u32,
    instruction_pointer: u64,
    stack_pointer: u64,
    nr: u64,
    args: [u64; 6],
    ret_data: u32,
    reserved2: u32,
}

/// Bytes of [`SyscallInfo`] a seccomp stop must fill, up to and including `ret_data`.
const INFO_SECCOMP_LEN: usize = std::mem::offset_of!(SyscallInfo, ret_data) + 4;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// `ptrace(request, tid, addr, data)` with plain integer arguments (no memory of ours).
fn request(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: the requests sent through here take integers or nothing in addr/data and touch
    // none of our memory.
    check(unsafe { libc::ptrace(req as _, tid, addr, data) })
}

/// `PTRACE_SEIZE` with [`OPTIONS`]: the task keeps running, traced from now on.
pub(crate) fn seize(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_SEIZE as _, tid, 0, OPTIONS as usize).map(drop)
}

/// `waitid(P_ALL, WEXITED | WSTOPPED | WNOWAIT | flags)`: the id of the next tracee with a state
/// change to report, left there to take; `None` on ECHILD (nothing left to wait for). EINTR is
/// retried.
pub(crate) fn peek_next(flags: libc::c_int) -> io::Result<Option<i32>> {
    loop {
        // SAFETY: all-zero is a valid siginfo_t; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let options = libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT | flags;
        // SAFETY: `info` is a live siginfo_t; P_ALL ignores the id.
        if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, options) } == 0 {
            // SAFETY: waitid succeeded, so `info` describes a child state change with si_pid set.
            return Ok(Some(unsafe { info.si_pid() }));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// `waitpid(tid, flags)`: takes `tid`'s pending state change and returns its status word.
/// EINTR is retried.
pub(crate) fn take(tid: i32, flags: libc::c_int) -> io::Result<i32> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a live local.
        if unsafe { libc::waitpid(tid, &mut status, flags) } >= 0 {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// SIGKILLs `tid`'s whole process. The caller guarantees `tid` is an unreaped tracee of ours.
pub(crate) fn kill(tid: i32) {
    // SAFETY: kill with integer arguments touches no memory of ours.
    unsafe { libc::kill(tid, libc::SIGKILL) };
}

/// Resumes a stopped tracee, delivering `signal` (0 for none).
pub(crate) fn resume(tid: i32, signal: i32) -> io::Result<()> {
    request(libc::PTRACE_CONT as _, tid, 0, signal as usize).map(drop)
}

/// Leaves a group-stopped tracee stopped but lets a later `SIGCONT` (or any signal) wake it,
/// as if it were not traced.
pub(crate) fn listen(tid: i32) -> io::Result<()> {
    request(libc::PTRACE_LISTEN as _, tid, 0, 0).map(drop)
}

/// `PTRACE_GETEVENTMSG`: the new task's id at a fork/clone event, the former id at an exec event.
pub(crate) fn event_msg(tid: i32) -> io::Result<i32> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: GETEVENTMSG writes one unsigned long to the pointer, which lives for the call.
    check(unsafe {
        libc::ptrace(libc::PTRACE_GETEVENTMSG as _, tid, 0usize, &mut msg as *mut libc::c_ulong)
    })?;
    Ok(msg as i32)
}

/// The call the tracee stopped in, from `PTRACE_GET_SYSCALL_INFO` (Linux 5.3). EINVAL when the
/// stop is not a seccomp stop.
pub(crate) fn trapped_call(tid: i32) -> io::Result<Call> {
    let mut info = SyscallInfo::default();
    let size = std::mem::size_of::<SyscallInfo>();
    // SAFETY: the kernel writes at most `size` bytes into `info`, which lives for the call.
    let n = check(unsafe {
        libc::ptrace(libc::PTRACE_GET_SYSCALL_INFO as _, tid, size, &mut info as *mut SyscallInfo)
    })?;
    if info.op != INFO_SECCOMP || (n as usize) < INFO_SECCOMP_LEN {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(Call { pid: tid as u32, nr: info.nr as i32, arch: info.arch, args: info.args })
}

/// Skips the trapped call: its number becomes -1, so the kernel runs nothing, and the caller
/// sees `ret` (a value, or minus an errno) as the result.
#[cfg(target_arch = "x86_64")]
pub(crate) fn skip(tid: i32, ret: i64) -> io::Result<()> {
    // SAFETY: all-zero is a valid user_regs_struct; GETREGS fills it.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: GETREGS writes one user_regs_struct into `regs`, which lives for the call.
    check(unsafe {
        libc::ptrace(libc::PTRACE_GETREGS as _, tid, 0usize, &mut regs as *mut libc::user_regs_struct)
    })?;
    regs.orig_rax = u64::MAX;
    regs.rax = ret as u64;
    // SAFETY: SETREGS reads one user_regs_struct from `regs`.
    check(unsafe {
        libc::ptrace(libc::PTRACE_SETREGS as _, tid, 0usize, &regs as *const libc::user_regs_struct)
    })
    .map(drop)
}

/// `NT_PRSTATUS`: the general registers' regset.
#[cfg(target_arch = "aarch64")]
const NT_PRSTATUS: usize = 1;
/// `NT_ARM_SYSTEM_CALL`: the syscall number's regset.
#[cfg(target_arch = "aarch64")]
const NT_ARM_SYSTEM_CALL: usize = 0x404;

/// Skips the trapped call: its number becomes -1 (`NT_ARM_SYSTEM_CALL`), so the kernel runs
/// nothing, and `x0` carries `ret` (a value, or minus an errno) as the result.
#[cfg(target_arch = "aarch64")]
pub(crate) fn skip(tid: i32, ret: i64) -> io::Result<()> {
    let regset = |which: usize, iov: &mut libc::iovec, req: libc::c_uint| {
        // SAFETY: GETREGSET/SETREGSET read or write at most `iov_len` bytes at `iov_base`, a
        // live local of exactly that size.
        check(unsafe { libc::ptrace(req as _, tid, which, iov as *mut libc::iovec) }).map(drop)
    };
    let mut nr: libc::c_int = -1;
    let mut iov =
        libc::iovec { iov_base: (&mut nr as *mut libc::c_int).cast(), iov_len: size_of::<libc::c_int>() };
    regset(NT_ARM_SYSTEM_CALL, &mut iov, libc::PTRACE_SETREGSET as _)?;
    // SAFETY: all-zero is a valid user_regs_struct; GETREGSET fills it.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: (&mut regs as *mut libc::user_regs_struct).cast(),
        iov_len: size_of::<libc::user_regs_struct>(),
    };
    regset(NT_PRSTATUS, &mut iov, libc::PTRACE_GETREGSET as _)?;
    regs.regs[0] = ret as u64;
    regset(NT_PRSTATUS, &mut iov, libc::PTRACE_SETREGSET as _)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_info_matches_the_kernel_layout() {
        // struct ptrace_syscall_info: 24 bytes of header, then seccomp's nr, args[6], ret_data.
        assert_eq!(std::mem::offset_of!(SyscallInfo, nr), 24);
        assert_eq!(INFO_SECCOMP_LEN, 84);
        assert_eq!(std::mem::size_of::<SyscallInfo>(), 88);
    }
}
