//! `FilterSpec`: pure data saying what the sandbox's seccomp filter traps and denies, with the
//! sandbox default and a structural check that runs before anything is compiled.

/// Which calls are sent to the supervisor (`SECCOMP_RET_USER_NOTIF`, or `SECCOMP_RET_TRACE` when
/// compiled with [`TrapAction::Trace`](super::TrapAction::Trace)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifySet {
    /// Every `connect(2)`.
    pub connect: bool,
    /// `sendto(2)` when its address argument is non-NULL.
    pub sendto: bool,
    /// Every `sendmsg(2)` and `sendmmsg(2)`: `msg_name` lives in memory, so the supervisor reads it.
    pub sendmsg: bool,
    /// Every `getpeername(2)`, so redirected sockets report the original destination.
    pub getpeername: bool,
}

/// What happens to a syscall made through another ABI (x32, ia32 `int 0x80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignArch {
    /// `SECCOMP_RET_KILL_PROCESS`: the process dies with SIGSYS.
    KillProcess,
    /// Fail the call with this errno.
    Errno(i32),
}

/// One syscall denied outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedSyscall {
    /// The syscall's name as libseccomp knows it (e.g. `"io_uring_setup"`).
    pub name: String,
    /// The errno returned.
    pub errno: i32,
}

/// Socket creation rules (`socket(2)` and `socketpair(2)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketRules {
    /// Address families refused entirely.
    pub denied_families: Vec<i32>,
    /// Errno for a refused family (the kernel's own answer for a missing family is EAFNOSUPPORT).
    pub family_errno: i32,
    /// AF_NETLINK protocols still allowed; every other netlink protocol gets `family_errno`.
    /// `None` leaves AF_NETLINK alone.
    pub netlink_allowed: Option<Vec<i32>>,
    /// Errno for `SOCK_RAW`/`SOCK_PACKET` on AF_INET/AF_INET6 (`None`: allowed).
    pub raw_errno: Option<i32>,
}

/// Everything the sandbox's seccomp filter does. The default action is always ALLOW.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// Calls that go to the supervisor.
    pub notify: NotifySet,
    /// Syscalls that always fail.
    pub deny: Vec<DeniedSyscall>,
    /// Namespace flags refused in `clone(2)` and `unshare(2)`, each tested on its own.
    pub denied_clone_flags: Vec<u64>,
    /// Errno for a refused clone/unshare flag.
    pub clone_flags_errno: i32,
    /// Errno for every `clone3(2)` (its flags are in memory, out of seccomp's reach). ENOSYS makes
    /// glibc fall back to `clone(2)`, where the flags are checked. `None` leaves clone3 alone.
    pub clone3_errno: Option<i32>,
    /// Socket creation rules.
    pub sockets: SocketRules,
    /// Action for foreign ABIs.
    pub foreign_arch: ForeignArch,
}

/// The escape routes of DESIGN.md §2, denied with EPERM.
pub const DEFAULT_DENIED: &[&str] = &[
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "bpf",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "kexec_load",
    "kexec_file_load",
    "perf_event_open",
    "init_module",
    "finit_module",
    "delete_module",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
];

/// Syscalls the filter writes argument rules for itself; they may not appear in `deny`.
const RESERVED: &[&str] = &[
    "connect",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "getpeername",
    "socket",
    "socketpair",
    "clone",
    "clone3",
    "unshare",
];

/// Families the supervisor itself governs; refusing them would break every program.
const GOVERNED_FAMILIES: &[i32] = &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];

/// Namespace bits that may be listed in `denied_clone_flags`.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWTIME) as u64;

impl FilterSpec {
    /// The sandbox's filter: the four notified calls, the escape routes of DESIGN.md §2 denied,
    /// foreign ABIs killed.
    pub fn sandbox_default() -> Self {
        Self {
            notify: NotifySet { connect: true, sendto: true, sendmsg: true, getpeername: true },
            deny: DEFAULT_DENIED
                .iter()
                .map(|n| DeniedSyscall { name: (*n).to_owned(), errno: libc::EPERM })
                .collect(),
            denied_clone_flags: vec![libc::CLONE_NEWNET as u64, libc::CLONE_NEWUSER as u64],
            clone_flags_errno: libc::EPERM,
            clone3_errno: Some(libc::ENOSYS),
            sockets: SocketRules {
                denied_families: vec![libc::AF_PACKET, libc::AF_VSOCK, libc::AF_ALG, libc::AF_KEY],
                family_errno: libc::EAFNOSUPPORT,
                netlink_allowed: Some(vec![libc::NETLINK_ROUTE]),
                raw_errno: Some(libc::EPERM),
            },
            foreign_arch: ForeignArch::KillProcess,
        }
    }

    /// Checks the spec's structure; [`compile`](super::compile) calls it first. Pure: syscall names
    /// are only checked for shape here (libseccomp resolves them at compile time).
    pub fn check(&self) -> Result<(), SpecError> {
        let errno_ok = |what: &'static str, e: i32| {
            if (1..4096).contains(&e) { Ok(()) } else { Err(SpecError::Errno { what, errno: e }) }
        };
        let mut seen = std::collections::HashSet::new();
        for d in &self.deny {
            let shape = !d.name.is_empty()
                && d.name.len() <= 64
                && d.name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
            if !shape {
                return Err(SpecError::SyscallName(d.name.clone()));
            }
            if RESERVED.contains(&d.name.as_str()) {
                return Err(SpecError::Reserved(d.name.clone()));
            }
            if !seen.insert(d.name.as_str()) {
                return Err(SpecError::Duplicate(d.name.clone()));
            }
            errno_ok("deny", d.errno)?;
        }
        for &flag in &self.denied_clone_flags {
            if flag.count_ones() != 1 || flag & !NAMESPACE_FLAGS != 0 {
                return Err(SpecError::CloneFlag(flag));
            }
        }
        errno_ok("clone flags", self.clone_flags_errno)?;
        if let Some(e) = self.clone3_errno {
            errno_ok("clone3", e)?;
        }
        let s = &self.sockets;
        errno_ok("socket family", s.family_errno)?;
        let mut families = std::collections::HashSet::new();
        for &f in &s.denied_families {
            if !(1..AF_MAX).contains(&f) || GOVERNED_FAMILIES.contains(&f) || !families.insert(f) {
                return Err(SpecError::Family(f));
            }
            if f == libc::AF_NETLINK && s.netlink_allowed.is_some() {
                return Err(SpecError::Family(f));
            }
        }
        let allowed = s.netlink_allowed.as_deref().unwrap_or_default();
        if let Some(&p) = allowed.iter().find(|&&p| !(0..MAX_NETLINK_PROTOCOL).contains(&p)) {
            return Err(SpecError::NetlinkProtocol(p));
        }
        if let Some(e) = s.raw_errno {
            errno_ok("raw socket", e)?;
        }
        if let ForeignArch::Errno(e) = self.foreign_arch {
            errno_ok("foreign arch", e)?;
        }
        Ok(())
    }
}

/// `AF_MAX` on current kernels (families are numbered below it).
const AF_MAX: i32 = 46;

/// Netlink protocols are numbered below `MAX_LINKS` (32); the kernel refuses the rest itself.
pub(crate) const MAX_NETLINK_PROTOCOL: i32 = 32;

/// A structural mistake in a [`FilterSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// An errno outside 1..=4095.
    #[error("{what}: errno {errno} is outside 1..=4095")]
    Errno {
        /// Which field.
        what: &'static str,
        /// The value given.
        errno: i32,
    },
    /// Not a syscall name.
    #[error("{0:?} is not a syscall name")]
    SyscallName(String),
    /// A syscall the filter writes its own rules for.
    #[error("{0} is governed by the filter's own rules and cannot be denied outright")]
    Reserved(String),
    /// Listed twice.
    #[error("{0} is listed twice")]
    Duplicate(String),
    /// Not a single namespace flag.
    #[error("clone flag {0:#x} is not a single namespace flag")]
    CloneFlag(u64),
    /// A family that cannot be refused (governed by the supervisor, out of range, repeated, or
    /// AF_NETLINK while netlink protocols are also filtered).
    #[error("address family {0} cannot be listed")]
    Family(i32),
    /// A netlink protocol out of range.
    #[error("netlink protocol {0} is outside 0..32")]
    NetlinkProtocol(i32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_valid() {
        FilterSpec::sandbox_default().check().unwrap();
    }

    #[test]
    fn check_rejects_bad_specs() {
        let base = FilterSpec::sandbox_default;
        let mut s = base();
        s.deny.push(DeniedSyscall { name: "connect".into(), errno: 1 });
        assert_eq!(s.check(), Err(SpecError::Reserved("connect".into())));
        let mut s = base();
        s.deny.push(DeniedSyscall { name: "bpf".into(), errno: 1 });
        assert_eq!(s.check(), Err(SpecError::Duplicate("bpf".into())));
        let mut s = base();
        s.deny[0].errno = 0;
        assert!(matches!(s.check(), Err(SpecError::Errno { what: "deny", .. })));
        let mut s = base();
        s.deny.push(DeniedSyscall { name: "Mount; rm".into(), errno: 1 });
        assert!(matches!(s.check(), Err(SpecError::SyscallName(_))));
        let mut s = base();
        s.denied_clone_flags.push((libc::CLONE_NEWNET | libc::CLONE_NEWUSER) as u64);
        assert!(matches!(s.check(), Err(SpecError::CloneFlag(_))));
        let mut s = base();
        s.denied_clone_flags.push(libc::CLONE_VM as u64);
        assert!(matches!(s.check(), Err(SpecError::CloneFlag(_))));
        let mut s = base();
        s.sockets.denied_families.push(libc::AF_INET);
        assert_eq!(s.check(), Err(SpecError::Family(libc::AF_INET)));
        let mut s = base();
        s.sockets.denied_families.push(libc::AF_NETLINK);
        assert_eq!(s.check(), Err(SpecError::Family(libc::AF_NETLINK)));
        let mut s = base();
        s.sockets.netlink_allowed = Some(vec![40]);
        assert_eq!(s.check(), Err(SpecError::NetlinkProtocol(40)));
        let mut s = base();
        s.foreign_arch = ForeignArch::Errno(5000);
        assert!(s.check().is_err());
    }
}
