//! The child side of a launch: the namespace init (pid 1) and the command it forks (pid 2).
//!
//! Process model: `launch` clones the init straight into new mount, PID, network, UTS, IPC and
//! cgroup namespaces (and the session cgroup). The init builds the mount view, brings up `lo`,
//! gives it the self addresses ([`add_self_addresses`]), creates the gateway listeners, then
//! forks the command and becomes a tiny reaper: it reaps every zombie, forwards
//! SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the command, and exits with the command's
//! status (exit code, or 128+signal). When it exits the kernel kills whatever
//! is left in the namespace. The init keeps root and its capabilities but is not dumpable, so
//! the command (which has none) can neither ptrace nor signal it.
//!
//! Nothing here allocates: the launcher may be multi-threaded and another thread may have held
//! the allocator lock at `clone3` time. For the same reason uid/gid changes use raw syscalls,
//! not glibc's wrappers, whose cross-thread "setxid" broadcast relies on thread bookkeeping that
//! a raw `clone3` does not reset. Every failure writes a [`Report`] and exits 127.
//!
//! ## The notify-fd hand-off
//!
//! The command installs its own seccomp filter (`SECCOMP_FILTER_FLAG_NEW_LISTENER`), so the
//! notify fd is born in the command's fd table, under the filter. The sandbox filter traps
//! `sendmsg` (and `connect`, `sendto` with an address, `sendmmsg`, `getpeername`) with
//! `SECCOMP_RET_USER_NOTIF`; an `SCM_RIGHTS` send after the filter would wait for a supervisor
//! that needs the very fd being sent. So the fd never travels by `sendmsg`:
//!
//! 1. before the filter, the command opens a pidfd of itself and sends it to the parent
//!    ([`TAG_PIDFD`], `SCM_RIGHTS`; nothing is trapped yet);
//! 2. it installs the filter and `write(2)`s the notify fd's *number* on the launch socket
//!    ([`TAG_NOTIFY`]); `write` is never trapped;
//! 3. the parent, which is not under any filter, takes the fd with `pidfd_getfd`, drops the
//!    pidfd, starts supervising, and sends the ACK;
//! 4. the command `read`s the ACK, closes its copy of the notify fd and `execve`s.
//!
//! After the filter the command calls only `write`, `read`, `close`, `execve` and `_exit`
//! (failure reports go over the pipe with `write`), none of which any filter built by
//! `redirect::filter` traps. The command keeps its notify fd open until the ACK, so the number
//! it sent is still valid when the parent calls `pidfd_getfd`. `pidfd_getfd` needs
//! ptrace-attach rights over the command (a root launcher has `CAP_SYS_PTRACE`), exactly what
//! the supervisor needs anyway to take the command's sockets.
//!
//! ## Trace mode
//!
//! With [`crate::spec::SeccompListener::Trace`] the filter's trapping RETs are
//! `SECCOMP_RET_TRACE` and there is no fd to hand over: step 2 installs the filter with no
//! listener and writes [`TAG_TRACEABLE`] instead; the parent learns the command's host pid from
//! the pidfd of step 1, a tracer seizes it, then the ACK lets it `execve`. Until then no call it
//! makes is trapped, and a trapped call with no tracer would only fail (ENOSYS).

use std::ffi::CStr;
use std::os::fd::RawFd;

use crate::fdpass::{ACK, TAG_LISTENERS, TAG_NOTIFY, TAG_PIDFD, TAG_TRACEABLE, send_fds, send_number};
use crate::mounts::MAX_LATE_BINDS;
use crate::prepare::Prepared;
use crate::report::{Report, Step};
use crate::spec::{SANDBOX_SELF_V4, SANDBOX_SELF_V6};
use crate::sys::{self, SysResult};

/// Descriptors the child uses; numbers valid in the child's copy of the fd table.
pub(crate) struct ChildFds {
    /// Child end of the launch socket (listeners, notify fd, ACK).
    pub ctrl: RawFd,
    /// Write end of the close-on-exec report pipe.
    pub report: RawFd,
    /// Sources for fds 0, 1, 2; `-1` keeps the inherited descriptor.
    pub stdio: [RawFd; 3],
}

/// Exit code of a child that failed before `execve` (like a shell's "command not runnable").
const SETUP_FAILED: i32 = 127;

/// Signals the init passes on to the command.
const FORWARDED: [libc::c_int; 6] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

fn fail(fds: &ChildFds, step: Step, index: u16, errno: i32) -> ! {
    let record = Report { step, index, errno }.encode();
    // Nothing more can be done if the report itself cannot be written: exiting non-zero
    // without a report still fails the launch.
    let _ = sys::write_all(fds.report, &record);
    sys::exit(SETUP_FAILED)
}

fn step<T>(fds: &ChildFds, step: Step, result: SysResult<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => fail(fds, step, 0, e),
    }
}

/// Shell-style encoding of a wait status: the exit code, or 128 + the terminating signal.
pub fn encode_wait_status(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Closes every descriptor except 0-2 and the ones the child still needs, so the init does not
/// keep the launcher's other sockets and pipes (other sessions' included) alive.
fn close_all_but(keep: &[RawFd]) -> SysResult<()> {
    let mut kept = [-1i32; 8];
    let mut n = 0;
    for &fd in [0, 1, 2].iter().chain(keep) {
        if fd >= 0 && !kept[..n].contains(&fd) && n < kept.len() {
            kept[n] = fd;
            n += 1;
        }
    }
    let kept = &mut kept[..n];
    kept.sort_unstable();
    let mut next: u32 = 0;
    for &fd in kept.iter() {
        let fd = fd as u32;
        if fd > next {
            sys::close_range(next, fd - 1, 0)?;
        }
        next = fd + 1;
    }
    sys::close_range(next, u32::MAX, 0)
}

fn block_all_signals() -> SysResult<()> {
    // SAFETY: `set` is initialised by sigfillset before use; sigprocmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) < 0 {
            return Err(sys::errno());
        }
    }
    Ok(())
}

/// Builds the sandbox's mount view in the init's new mount namespace.
///
/// Order matters. Sources are taken while the host's mounts are all visible: file binds are
/// made at once (their targets lie outside every tmpfs mounted here), and late binds (state
/// dir, bind dirs, and resolv.conf when it lands in a private tmpfs) are captured with
/// `open_tree`, since their sources may sit under the host's /tmp or /run. Then the fresh
/// /proc, /sys, /tmp and /run go on, and the late binds are attached on top, so a workspace
/// at /tmp/ws on the host appears at /tmp/ws inside and /run holds nothing but /run/agentsh.
fn mount_view(p: &Prepared, fds: &ChildFds) {
    let rprivate = libc::MS_REC | libc::MS_PRIVATE;
    step(fds, Step::MountPrivate, sys::mount(None, c"/", None, rprivate, None));
    if let Some(name) = &p.hostname {
        // SAFETY: `name` is a valid buffer of the length passed.
        let ret = unsafe { libc::sethostname(name.as_ptr(), name.as_bytes().len()) };
        step(fds, Step::Hostname, if ret < 0 { Err(sys::errno()) } else { Ok(()) });
    }
    // A fixed array: the child must not allocate. `Prepared` caps the count; this check only
    // keeps a broken cap from silently dropping binds.
    if p.late_binds.len() > MAX_LATE_BINDS {
        fail(fds, Step::OpenBindSource, MAX_LATE_BINDS as u16, libc::E2BIG);
    }
    let mut trees: [RawFd; MAX_LATE_BINDS] = [-1; MAX_LATE_BINDS];
    for (i, (bind, tree)) in p.late_binds.iter().zip(trees.iter_mut()).enumerate() {
        match sys::open_tree_clone(&bind.source) {
            Ok(fd) => *tree = fd,
            Err(e) => fail(fds, Step::OpenBindSource, i as u16, e),
        }
    }
    if p.resolv_early {
        step(fds, Step::BindResolvConf, sys::bind_read_only(&p.resolv_src, c"/etc/resolv.conf"));
    }
    for (i, (host, inside)) in p.binds.iter().enumerate() {
        if let Err(e) = sys::bind_read_only(host, inside) {
            fail(fds, Step::BindFile, i as u16, e);
        }
    }

    let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    step(fds, Step::MountProc, sys::mount(Some(c"proc"), c"/proc", Some(c"proc"), hardened, None));
    if p.host_network {
        // In the launcher's network namespace the fresh sysfs is the host's superblock, which
        // the kernel refuses to stack on itself (EBUSY): detach the inherited tree first.
        step(fds, Step::MountSys, sys::detach(c"/sys"));
    }
    let sys_flags = hardened | libc::MS_RDONLY;
    step(fds, Step::MountSys, sys::mount(Some(c"sysfs"), c"/sys", Some(c"sysfs"), sys_flags, None));
    let tmp_flags = libc::MS_NOSUID | libc::MS_NODEV;
    let tmp = sys::mount(Some(c"tmpfs"), c"/tmp", Some(c"tmpfs"), tmp_flags, Some(c"mode=1777"));
    step(fds, Step::MountTmp, tmp);
    if p.hide_run {
        // Host daemons' sockets (container engines, dbus, postgres, the agentsh control socket)
        // live under /run, and /var/run is a symlink to it.
        let run = sys::mount(Some(c"tmpfs"), c"/run", Some(c"tmpfs"), hardened, Some(c"mode=0755"));
        step(fds, Step::MountRun, run);
    }

    for (i, (bind, &tree)) in p.late_binds.iter().zip(trees.iter()).enumerate() {
        let index = i as u16;
        for dir in &bind.mkdirs {
            if let Err(e) = sys::make_dir(dir) {
                fail(fds, Step::MakeMountPoint, index, e);
            }
        }
        if bind.create_file
            && let Err(e) = sys::make_file(&bind.target)
        {
            fail(fds, Step::MakeMountPoint, index, e);
        }
        if let Err(e) = sys::attach_tree(tree, &bind.target) {
            fail(fds, Step::AttachBind, index, e);
        }
        sys::close(tree);
        if let Err(e) = sys::remount_bind(&bind.target, bind.writable, bind.noexec) {
            fail(fds, Step::RemountBind, index, e);
        }
    }
}

/// The alias label `SANDBOX_SELF_V4` carries on `lo`; aliases are addresses, not devices, so
/// `/sys/class/net` still lists only `lo`.
const SELF_ALIAS: &CStr = c"lo:agentsh";

/// Adds [`SANDBOX_SELF_V4`]/32 (as `lo:agentsh`) and [`SANDBOX_SELF_V6`]/128 to `lo`, which must
/// be up, so `getaddrinfo` with `AI_ADDRCONFIG` sees a configured address of each family.
///
/// IPv4: `SIOCSIFADDR` on the new alias creates the address (with the classful /16 mask),
/// `SIOCSIFNETMASK` narrows it to a /32 so no 169.254.0.0/16 route lingers, `SIOCSIFFLAGS`
/// marks the alias up. IPv6: `SIOCSIFADDR` with a `struct in6_ifreq` on an `AF_INET6` socket
/// (no DAD on a loopback device, so it is usable at once). A kernel without IPv6
/// (`EAFNOSUPPORT`) gets only the IPv4 address: there is no IPv6 for `AI_ADDRCONFIG` to find.
fn add_self_addresses(fds: &ChildFds) {
    let v4 = step(fds, Step::SelfAddress4, sys::ioctl_socket(libc::AF_INET));
    let set = sys::set_interface_ipv4(v4, libc::SIOCSIFADDR, SELF_ALIAS, SANDBOX_SELF_V4);
    step(fds, Step::SelfAddress4, set);
    let host_mask = std::net::Ipv4Addr::BROADCAST;
    let mask = sys::set_interface_ipv4(v4, libc::SIOCSIFNETMASK, SELF_ALIAS, host_mask);
    step(fds, Step::SelfNetmask4, mask);
    step(fds, Step::SelfAliasUp, sys::set_interface_up(v4, SELF_ALIAS));
    sys::close(v4);

    let v6 = match sys::ioctl_socket(libc::AF_INET6) {
        Ok(fd) => fd,
        Err(libc::EAFNOSUPPORT) => return,
        Err(e) => fail(fds, Step::SelfAddress6, 0, e),
    };
    let index = step(fds, Step::SelfIndex6, sys::interface_index(v6, c"lo"));
    step(fds, Step::SelfAddress6, sys::add_interface_ipv6(v6, index, SANDBOX_SELF_V6, 128));
    sys::close(v6);
}

/// Entry point of the init (pid 1 of the new PID namespace). Never returns.
pub(crate) fn run_init(p: &Prepared, fds: &ChildFds) -> ! {
    let keep = [fds.ctrl, fds.report, fds.stdio[0], fds.stdio[1], fds.stdio[2]];
    step(fds, Step::CloseFds, close_all_but(&keep));
    step(fds, Step::NotDumpable, sys::prctl(libc::PR_SET_DUMPABLE, 0, 0));

    mount_view(p, fds);
    if !p.host_network {
        step(fds, Step::LoopbackUp, sys::interface_up(c"lo"));
    }
    if p.self_addresses {
        add_self_addresses(fds);
    }
    if p.listeners {
        let v4 = step(fds, Step::Listener4, sys::loopback_listener(false));
        let v6 = step(fds, Step::Listener6, sys::loopback_listener(true));
        step(fds, Step::SendListeners, send_fds(fds.ctrl, TAG_LISTENERS, &[v4, v6]));
        sys::close(v4);
        sys::close(v6);
    }

    // Blocked before the fork so a SIGCHLD or a SIGTERM that arrives early stays pending.
    step(fds, Step::BlockSignals, block_all_signals());
    // SAFETY: clone_args is plain old data; all-zero plus exit_signal is a plain fork.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: the child branch runs `run_command`, which never returns.
    let command = step(fds, Step::ForkCommand, unsafe { sys::clone3(&mut args) });
    if command == 0 {
        run_command(p, fds);
    }
    // The init needs no descriptor from here on; dropping the report pipe and launch socket
    // lets the parent see end-of-file once the command has exec'd.
    let _ = sys::close_range(0, u32::MAX, 0);
    reap(command)
}

/// The init's loop: forward signals to `command`, reap everything, exit with its status.
fn reap(command: libc::pid_t) -> ! {
    // SAFETY: `set` is initialised by sigemptyset/sigaddset; sigwaitinfo, waitpid and kill
    // take plain values and a status pointer to a live local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        loop {
            let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
            if sig == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if pid <= 0 {
                        break;
                    }
                    if pid == command {
                        sys::exit(encode_wait_status(status));
                    }
                }
            } else if sig > 0 {
                libc::kill(command, sig);
            }
        }
    }
}

fn reset_signals() -> SysResult<()> {
    // SAFETY: signal() with SIG_DFL installs no handler; glibc rejects its own reserved
    // signals with EINVAL, which is ignored. `empty` is initialised by sigemptyset.
    unsafe {
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
            return Err(sys::errno());
        }
    }
    Ok(())
}

fn install_stdio(sources: [RawFd; 3]) -> SysResult<()> {
    // Move every source above 2 first so installing fd 0 cannot clobber the source of fd 1.
    let mut moved = [-1; 3];
    for (slot, &src) in moved.iter_mut().zip(&sources) {
        if src >= 0 {
            *slot = sys::dup_above(src, 3)?;
        }
    }
    for (target, &src) in moved.iter().enumerate() {
        if src >= 0 {
            sys::dup2(src, target as RawFd)?;
        }
    }
    Ok(())
}

fn raw(ret: libc::c_long) -> SysResult<()> {
    if ret < 0 { Err(sys::errno()) } else { Ok(()) }
}

fn drop_privileges(p: &Prepared, fds: &ChildFds) {
    // Securebits, the bounding set and the uid switch need CAP_SETPCAP/SETUID/SETGID, so they
    // go first; NOROOT keeps a uid-0 command from regaining capabilities at exec.
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    step(fds, Step::SecureBits, sys::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0));
    for cap in 0..64 {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap, 0) {
            Ok(_) => {}
            Err(libc::EINVAL) => break, // past CAP_LAST_CAP
            Err(e) => fail(fds, Step::DropBounding, cap as u16, e),
        }
    }
    let clear = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
    step(fds, Step::ClearAmbient, sys::prctl(libc::PR_CAP_AMBIENT, clear, 0));
    // SAFETY: raw setgroups/setresgid/setresuid on this single-threaded process;
    // the groups pointer and length describe a live slice.
    let groups = unsafe { libc::syscall(libc::SYS_setgroups, p.groups.len(), p.groups.as_ptr()) };
    step(fds, Step::SetGroups, raw(groups));
    // SAFETY: see above.
    let gid = unsafe { libc::syscall(libc::SYS_setresgid, p.gid, p.gid, p.gid) };
    step(fds, Step::SetGid, raw(gid));
    // SAFETY: see above.
    let uid = unsafe { libc::syscall(libc::SYS_setresuid, p.uid, p.uid, p.uid) };
    step(fds, Step::SetUid, raw(uid));
    step(fds, Step::DropCaps, sys::capset_empty());
}

fn resolve_executable<'a>(p: &'a Prepared, fds: &ChildFds) -> &'a CStr {
    let mut best = libc::ENOENT;
    for candidate in &p.candidates {
        match sys::is_executable_file(candidate) {
            Ok(()) => return candidate,
            Err(libc::ENOENT) | Err(libc::ENOTDIR) => {}
            Err(e) => best = e,
        }
    }
    fail(fds, Step::ResolveExecutable, 0, best)
}

/// Entry point of the command process (pid 2). Never returns.
fn run_command(p: &Prepared, fds: &ChildFds) -> ! {
    step(fds, Step::ResetSignals, reset_signals());
    step(fds, Step::Stdio, install_stdio(fds.stdio));
    step(fds, Step::CloseExtraFds, sys::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC));
    drop_privileges(p, fds);
    // SAFETY: `cwd` is NUL-terminated.
    let cd = unsafe { libc::chdir(p.cwd.as_ptr()) };
    step(fds, Step::Chdir, if cd < 0 { Err(sys::errno()) } else { Ok(()) });
    step(fds, Step::NoNewPrivs, sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0));
    // Before the filter: a filter may trap the stat/access calls the search makes.
    let path = resolve_executable(p, fds);
    // After the mount view exists (the rules bind the sandbox's own inodes, its /tmp included)
    // and no_new_privs (which lets an unprivileged thread restrict itself); before the filter,
    // whose hand-off allows only a handful of syscalls.
    if let Some(landlock) = &p.landlock
        && let Err((index, errno)) = landlock.apply()
    {
        fail(fds, Step::Landlock, index, errno);
    }
    if let Some(filter) = &p.filter {
        // The hand-off of the module docs. `sendmsg` only before the filter is installed.
        let me = step(fds, Step::OpenPidfd, sys::pidfd_open_self());
        step(fds, Step::SendPidfd, send_fds(fds.ctrl, TAG_PIDFD, &[me]));
        sys::close(me);
        // From the install on: write, read, close, execve, _exit only.
        let notify = if p.traced {
            step(fds, Step::InstallSeccomp, sys::seccomp_install(filter));
            step(fds, Step::SendTraceable, send_number(fds.ctrl, TAG_TRACEABLE, 0));
            None
        } else {
            let notify = step(fds, Step::InstallSeccomp, sys::seccomp_with_listener(filter));
            step(fds, Step::SendNotifyFd, send_number(fds.ctrl, TAG_NOTIFY, notify));
            Some(notify)
        };
        match sys::read_byte(fds.ctrl) {
            Ok(Some(ACK)) => {}
            Ok(Some(_)) => fail(fds, Step::WaitAck, 0, libc::EPROTO),
            Ok(None) => fail(fds, Step::WaitAck, 0, libc::EPIPE),
            Err(e) => fail(fds, Step::WaitAck, 0, e),
        }
        // The parent holds its own copy now; ours is close-on-exec anyway.
        if let Some(notify) = notify {
            sys::close(notify);
        }
    }
    // SAFETY: path, argv and envp are NUL-terminated strings in NULL-terminated arrays that
    // live in this process's copy of the parent's memory.
    unsafe { libc::execve(path.as_ptr(), p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr()) };
    fail(fds, Step::Exec, 0, sys::errno())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_status_is_shell_style() {
        assert_eq!(encode_wait_status(3 << 8), 3);
        assert_eq!(encode_wait_status(libc::SIGKILL), 128 + 9);
        assert_eq!(encode_wait_status(libc::SIGTERM), 143);
    }
}
