//! Thin, allocation-free wrappers over the raw syscalls the launcher needs.
//!
//! Every function here is safe to call between `clone3` and `execve`: no allocation, no locks,
//! no glibc state that caches the thread id. Errors are plain errno values.

use std::ffi::CStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::ptr;

/// A syscall result: the value, or the errno it failed with.
pub(crate) type SysResult<T> = Result<T, i32>;

/// The calling thread's errno.
pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

/// `clone3` without `CLONE_VM`: forks with the given namespace and cgroup flags.
///
/// # Safety
/// The caller must treat a return of `Ok(0)` as being the child of a fork of a possibly
/// multi-threaded process: only async-signal-safe work, no allocation, never return to callers
/// that could unwind or run destructors (end with `_exit` or `execve`).
pub(crate) unsafe fn clone3(args: &mut libc::clone_args) -> SysResult<libc::pid_t> {
    // SAFETY: `args` is a valid, fully initialised clone_args of the size passed; without
    // CLONE_VM and with a zero stack the child runs on a copy of this stack, like fork.
    let ret = unsafe {
        libc::syscall(libc::SYS_clone3, args as *mut libc::clone_args, size_of::<libc::clone_args>())
    };
    if ret < 0 { Err(errno()) } else { Ok(ret as libc::pid_t) }
}

/// `mount(2)` with optional source, fstype and data.
pub(crate) fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> SysResult<()> {
    let p = |s: Option<&CStr>| s.map_or(ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is NULL or a NUL-terminated string that outlives the call.
    let ret = unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, p(data).cast()) };
    check(ret).map(drop)
}

/// Read-only bind of `src` over `target`: bind, then remount the new mount read-only, nosuid,
/// nodev (a bind ignores those flags on its first call).
pub(crate) fn bind_read_only(src: &CStr, target: &CStr) -> SysResult<()> {
    mount(Some(src), target, None, libc::MS_BIND, None)?;
    let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    mount(None, target, None, ro, None)
}

/// `umount2(target, MNT_DETACH)`: the mount at `target` and everything below it leave this
/// mount namespace.
pub(crate) fn detach(target: &CStr) -> SysResult<()> {
    // SAFETY: `target` is NUL-terminated and outlives the call.
    let ret = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if ret < 0 { Err(errno()) } else { Ok(()) }
}

/// `open_tree(path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)`: a detached, non-recursive bind of
/// `path` that stays usable after `path` itself is covered by another mount.
pub(crate) fn open_tree_clone(path: &CStr) -> SysResult<RawFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: `path` is NUL-terminated and outlives the call; the result is a new descriptor.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if ret < 0 { Err(errno()) } else { Ok(ret as RawFd) }
}

/// `move_mount` of the detached tree `tree` onto `target`. A symlink as the last component of
/// `target` is not followed, so the attach fails rather than land somewhere else.
pub(crate) fn attach_tree(tree: RawFd, target: &CStr) -> SysResult<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    // SAFETY: both paths are NUL-terminated and outlive the call; `tree` is an open_tree fd.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 { Err(errno()) } else { Ok(()) }
}

/// Sets the per-mount flags of the bind at `target`: always nosuid and nodev, read-only unless
/// `writable`, noexec if `noexec`. A bind takes none of these flags when it is created, only
/// on a remount.
pub(crate) fn remount_bind(target: &CStr, writable: bool, noexec: bool) -> SysResult<()> {
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV;
    if !writable {
        flags |= libc::MS_RDONLY;
    }
    if noexec {
        flags |= libc::MS_NOEXEC;
    }
    mount(None, target, None, flags, None)
}

/// `mkdir(path, 0755)`, where an existing entry is fine; a new directory gets exactly 0755
/// whatever the umask inherited from the launcher.
pub(crate) fn make_dir(path: &CStr) -> SysResult<()> {
    // SAFETY: `path` is NUL-terminated.
    if unsafe { libc::mkdir(path.as_ptr(), 0o755) } < 0 {
        let e = errno();
        return if e == libc::EEXIST { Ok(()) } else { Err(e) };
    }
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::chmod(path.as_ptr(), 0o755) }).map(drop)
}

/// Creates `path` as an empty file (mode 0644) if nothing is there, for a file mount point.
pub(crate) fn make_file(path: &CStr) -> SysResult<()> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: `path` is NUL-terminated; the mode argument is read because O_CREAT is set.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags, 0o644 as libc::c_uint) })?;
    close(fd);
    Ok(())
}

/// `close_range(2)`.
pub(crate) fn close_range(first: u32, last: u32, flags: u32) -> SysResult<()> {
    // SAFETY: closing descriptors has no memory-safety effect on this process; callers only
    // close ranges that hold no descriptor they still use.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if ret < 0 { Err(errno()) } else { Ok(()) }
}

/// `prctl(2)` with up to four integer arguments.
pub(crate) fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> SysResult<libc::c_int> {
    // SAFETY: the options used by this crate take integer arguments only, no pointers.
    check(unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Empties the effective, permitted and inheritable capability sets of the calling thread.
pub(crate) fn capset_empty() -> SysResult<()> {
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: header and the two-element data array are the v3 layout capset(2) expects.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
    if ret < 0 { Err(errno()) } else { Ok(()) }
}

/// A datagram socket of `family` (`AF_INET` or `AF_INET6`), close-on-exec, for interface
/// ioctls.
pub(crate) fn ioctl_socket(family: libc::c_int) -> SysResult<RawFd> {
    // SAFETY: a plain socket() call.
    check(unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
}

/// An all-zero `ifreq` naming `name`.
fn ifreq_named(name: &CStr) -> SysResult<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.to_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(libc::ENAMETOOLONG);
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// `ioctl(sock, request, req)` for the `ifreq` requests.
fn ifreq_ioctl(sock: RawFd, request: libc::c_ulong, req: &mut libc::ifreq) -> SysResult<()> {
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name; every request used here reads
    // or writes only the ifreq itself.
    check(unsafe { libc::ioctl(sock, request, req as *mut libc::ifreq) }).map(drop)
}

/// Sets `IFF_UP` on the interface (or `name:label` alias) named `name`, through `sock`.
pub(crate) fn set_interface_up(sock: RawFd, name: &CStr) -> SysResult<()> {
    let mut req = ifreq_named(name)?;
    ifreq_ioctl(sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ifreq_ioctl(sock, libc::SIOCSIFFLAGS, &mut req)
}

/// Sets `IFF_UP` on the interface named `name` (e.g. `lo`) with `SIOCSIFFLAGS`.
pub(crate) fn interface_up(name: &CStr) -> SysResult<()> {
    let sock = ioctl_socket(libc::AF_INET)?;
    let result = set_interface_up(sock, name);
    close(sock);
    result
}

/// `SIOCSIFADDR` / `SIOCSIFNETMASK` (`request`) of the IPv4 `addr` on `name`, through an
/// `AF_INET` socket. On an alias name (`lo:label`) that does not exist yet, `SIOCSIFADDR`
/// creates it: a second address on the device, labelled with the alias name.
pub(crate) fn set_interface_ipv4(
    sock: RawFd,
    request: libc::c_ulong,
    name: &CStr,
    addr: Ipv4Addr,
) -> SysResult<()> {
    let mut req = ifreq_named(name)?;
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_addr.s_addr = u32::from_ne_bytes(addr.octets());
    // SAFETY: the union holds a `struct sockaddr` (16 bytes, the size of sockaddr_in) and is
    // aligned for one (it also holds pointers and longs); the kernel reads it as sockaddr_in.
    unsafe { ptr::addr_of_mut!(req.ifr_ifru).cast::<libc::sockaddr_in>().write(sa) };
    ifreq_ioctl(sock, request, &mut req)
}

/// The index of the interface named `name` (`SIOCGIFINDEX`).
pub(crate) fn interface_index(sock: RawFd, name: &CStr) -> SysResult<libc::c_int> {
    let mut req = ifreq_named(name)?;
    ifreq_ioctl(sock, libc::SIOCGIFINDEX, &mut req)?;
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_ifindex })
}

/// Adds the IPv6 `addr/prefix_len` to interface `index` (`SIOCSIFADDR` with a
/// `struct in6_ifreq` on an `AF_INET6` socket).
pub(crate) fn add_interface_ipv6(
    sock: RawFd,
    index: libc::c_int,
    addr: Ipv6Addr,
    prefix_len: u32,
) -> SysResult<()> {
    let mut req = libc::in6_ifreq {
        ifr6_addr: libc::in6_addr { s6_addr: addr.octets() },
        ifr6_prefixlen: prefix_len,
        ifr6_ifindex: index,
    };
    // SAFETY: `req` is a valid in6_ifreq, the structure SIOCSIFADDR reads on an AF_INET6 socket.
    check(unsafe { libc::ioctl(sock, libc::SIOCSIFADDR, &mut req as *mut libc::in6_ifreq) }).map(drop)
}

/// A listening TCP socket on `127.0.0.1:0` (`v6 == false`) or `[::1]:0`, close-on-exec.
pub(crate) fn loopback_listener(v6: bool) -> SysResult<RawFd> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: a plain socket() call.
    let fd = check(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    let bound = if v6 {
        // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_addr.s6_addr[15] = 1;
        let one: libc::c_int = 1;
        // SAFETY: valid socket, option value pointer and length; then a valid sockaddr_in6.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
            libc::bind(fd, (&sa as *const libc::sockaddr_in6).cast(), size_of_val(&sa) as libc::socklen_t)
        }
    } else {
        // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        // SAFETY: a valid sockaddr_in of the length passed.
        unsafe {
            libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), size_of_val(&sa) as libc::socklen_t)
        }
    };
    // SAFETY: listen on the socket just bound.
    let result = check(bound).and_then(|_| check(unsafe { libc::listen(fd, 128) }));
    match result {
        Ok(_) => Ok(fd),
        Err(e) => {
            close(fd);
            Err(e)
        }
    }
}

/// Installs `prog` with `SECCOMP_FILTER_FLAG_NEW_LISTENER` and returns the notify fd.
pub(crate) fn seccomp_with_listener(prog: &[libc::sock_filter]) -> SysResult<RawFd> {
    seccomp_filter(prog, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)
}

/// Installs `prog` with no listener (its trapping RETs are `SECCOMP_RET_TRACE`, for a tracer).
pub(crate) fn seccomp_install(prog: &[libc::sock_filter]) -> SysResult<()> {
    seccomp_filter(prog, 0).map(drop)
}

fn seccomp_filter(prog: &[libc::sock_filter], flags: libc::c_ulong) -> SysResult<RawFd> {
    let fprog = libc::sock_fprog { len: prog.len() as libc::c_ushort, filter: prog.as_ptr().cast_mut() };
    // SAFETY: `fprog` points at `prog.len()` valid instructions that outlive the call; the
    // kernel copies them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if ret < 0 { Err(errno()) } else { Ok(ret as RawFd) }
}

/// A pidfd referring to the calling process (`pidfd_open(getpid(), 0)`), close-on-exec.
///
/// `getpid` is the raw syscall: glibc's wrapper is fine today, but this runs in a child of a raw
/// `clone3` and must not depend on any cached thread state.
pub(crate) fn pidfd_open_self() -> SysResult<RawFd> {
    // SAFETY: getpid takes no arguments and cannot fail.
    let pid = unsafe { libc::syscall(libc::SYS_getpid) };
    // SAFETY: integer arguments only; the result is a new descriptor (pidfds are always
    // close-on-exec).
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 { Err(errno()) } else { Ok(ret as RawFd) }
}

/// `pidfd_getfd(pidfd, target_fd, 0)`: a duplicate, in this process and close-on-exec, of
/// descriptor `target_fd` of the process behind `pidfd`. Needs ptrace-attach rights over it.
pub(crate) fn pidfd_getfd(pidfd: RawFd, target_fd: RawFd) -> SysResult<RawFd> {
    // SAFETY: integer arguments only; the result is a new descriptor.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, target_fd, 0) };
    if ret < 0 { Err(errno()) } else { Ok(ret as RawFd) }
}

/// `true` when `path` names a regular file the real uid may execute.
pub(crate) fn is_executable_file(path: &CStr) -> SysResult<()> {
    // SAFETY: `st` is written by stat before it is read; `path` is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::stat(path.as_ptr(), &mut st) })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(libc::EACCES);
    }
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::access(path.as_ptr(), libc::X_OK) }).map(drop)
}

/// Writes all of `buf`, retrying on `EINTR` and short writes.
pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) -> SysResult<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads one byte; `Ok(None)` at end-of-file.
pub(crate) fn read_byte(fd: RawFd) -> SysResult<Option<u8>> {
    let mut b = 0u8;
    loop {
        // SAFETY: reads at most one byte into `b`.
        let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) };
        match n {
            1 => return Ok(Some(b)),
            0 => return Ok(None),
            _ if errno() == libc::EINTR => continue,
            _ => return Err(errno()),
        }
    }
}

/// `close(2)`, ignoring errors (nothing useful can be done about them here).
pub(crate) fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and does not use it afterwards.
    unsafe { libc::close(fd) };
}

/// `dup2(2)`.
pub(crate) fn dup2(from: RawFd, to: RawFd) -> SysResult<()> {
    // SAFETY: descriptor numbers only.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

/// `fcntl(F_DUPFD_CLOEXEC, min)`.
pub(crate) fn dup_above(fd: RawFd, min: RawFd) -> SysResult<RawFd> {
    // SAFETY: descriptor numbers only.
    check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
}

/// Ends the calling process at once, without running atexit handlers or destructors.
pub(crate) fn exit(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no userspace state.
    unsafe { libc::_exit(code) }
}
