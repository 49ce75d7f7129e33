//! The Landlock layer: a [`LandlockPlan`] (which trees the command may read, write, execute)
//! turned into access masks at the best ABI the kernel offers, and applied by the command just
//! before `execve` with raw syscalls over buffers built here, so the child allocates nothing.
//!
//! Landlock rules are bound to inodes, and the sandbox's `/tmp` is a tmpfs that exists only in
//! its mount namespace; so the child opens each path itself (`O_PATH`) after the mount view is
//! built, rather than the launcher opening host paths before the fork.
//!
//! Landlock only grants: a tree not in the plan is unreachable (`/var`, `/run` outside the state
//! dir, `/srv`, other users' homes, ...). It cannot carve an exception out of a granted tree, so
//! `file_rules` that deny part of a tree split it into its children (see
//! [`crate::landlock_rules`]); fine-grained rules inside the workspace are the FUSE layer's job.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use landlock::{ABI, Access, AccessFs, AccessNet};

use crate::error::SandboxError;
use crate::spec::SANDBOX_STATE_DIR;
use crate::sys::{self, SysResult};

/// System trees the command may read and execute from, when they exist.
pub const SYSTEM_PATHS: &[&str] =
    &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"];

/// Most paths one plan may carry: the child opens each one at every launch, and a tree split
/// around denied parts adds one path per child it keeps.
pub const MAX_LANDLOCK_PATHS: usize = 256;

/// What the command may do below one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LandlockAccess {
    /// Read files, list directories.
    Read,
    /// Read and execute.
    ReadExec,
    /// Read and write existing files, device ioctls; create and remove nothing (for `/dev`).
    Devices,
    /// Everything but creating device nodes; no execution.
    ReadWrite,
    /// Everything but creating device nodes.
    ReadWriteExec,
}

impl LandlockAccess {
    /// The access mask at `abi`, limited to what that ABI handles.
    fn mask(self, abi: ABI) -> u64 {
        let handled = AccessFs::from_all(abi).bits();
        let read = (AccessFs::ReadFile | AccessFs::ReadDir).bits();
        let exec = AccessFs::Execute as u64;
        let devices = (AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev).bits();
        let nodes = (AccessFs::MakeChar | AccessFs::MakeBlock).bits();
        let bits = match self {
            // Connecting to the state dir's sockets is how the sandbox reaches the gateway.
            LandlockAccess::Read => read | AccessFs::ResolveUnix as u64,
            LandlockAccess::ReadExec => read | exec,
            LandlockAccess::Devices => read | devices,
            LandlockAccess::ReadWrite => handled & !nodes & !exec,
            LandlockAccess::ReadWriteExec => handled & !nodes,
        };
        bits & handled
    }

    /// Whether everything `self` grants, `other` grants too.
    pub fn within(self, other: LandlockAccess) -> bool {
        let newest = ABI::V6;
        self.mask(newest) & !other.mask(newest) == 0
    }
}

/// One tree of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockPath {
    /// The path as the sandbox sees it (absolute).
    pub path: PathBuf,
    /// What is allowed below it.
    pub access: LandlockAccess,
    /// A missing required path fails the launch; a missing optional one is skipped.
    pub required: bool,
    /// Whether a tree the rules deny in part is split into its children (system trees, the
    /// home) rather than granted whole (the workspace, `/tmp`, kernel filesystems: what the
    /// command creates there could not be granted, and rules inside the workspace are the FUSE
    /// layer's).
    pub split: bool,
}

impl LandlockPath {
    fn new(path: impl Into<PathBuf>, access: LandlockAccess, required: bool, split: bool) -> LandlockPath {
        LandlockPath { path: path.into(), access, required, split }
    }
}

/// What the command may touch, enforced by the kernel from `execve` on (inherited by every
/// descendant). Set [`crate::LaunchSpec::landlock`] to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockPlan {
    /// The granted trees; everything else is denied.
    pub paths: Vec<LandlockPath>,
    /// With ABI 4 or later, restrict TCP `connect` to these ports (the session gateway's, for
    /// a second layer under the funnel); `None` leaves TCP alone. Below ABI 4 a `Some` fails
    /// the launch rather than silently not restricting.
    pub connect_tcp_ports: Option<Vec<u16>>,
    /// Trees the rules deny in part that could not be split within the limits (depth, number
    /// of paths, an unreadable directory): left out whole, so what the rules allow in them is
    /// unreachable too (fail closed).
    pub left_out: Vec<PathBuf>,
    /// Trees the rules deny in part that are granted whole all the same (the workspace, the
    /// private `/tmp`, kernel filesystems: what a command creates in them could not be
    /// granted): the rules inside them are not Landlock's to apply (the workspace's are the
    /// FUSE layer's).
    pub granted_whole: Vec<PathBuf>,
    /// Directories split into their children because the rules deny part of them: they have
    /// no grant of their own, only their granted children have.
    pub split: Vec<PathBuf>,
}

impl LandlockPlan {
    /// The default plan for a session: system trees read+exec, `/proc` and `/sys` read,
    /// `/dev` devices (and `/dev/shm` read-write, for POSIX shared memory and semaphores), the
    /// state dir read, the workspace and the private `/tmp` read-write-exec.
    pub fn for_workspace(workspace: &Path) -> LandlockPlan {
        let mut paths: Vec<LandlockPath> = SYSTEM_PATHS
            .iter()
            .map(|p| LandlockPath::new(*p, LandlockAccess::ReadExec, false, true))
            .collect();
        let fixed = [
            ("/proc", LandlockAccess::Read),
            ("/sys", LandlockAccess::Read),
            ("/dev", LandlockAccess::Devices),
            (SANDBOX_STATE_DIR, LandlockAccess::Read),
            ("/tmp", LandlockAccess::ReadWriteExec),
        ];
        paths.extend(fixed.iter().map(|(p, a)| LandlockPath::new(*p, *a, true, false)));
        paths.push(LandlockPath::new("/dev/shm", LandlockAccess::ReadWrite, false, false));
        paths.push(LandlockPath::new(workspace, LandlockAccess::ReadWriteExec, true, false));
        LandlockPlan {
            paths,
            connect_tcp_ports: None,
            left_out: Vec::new(),
            granted_whole: Vec::new(),
            split: Vec::new(),
        }
    }

    /// [`LandlockPlan::for_workspace`] plus the caller's `home` read-write-exec (when it is an
    /// absolute, clean directory path that neither is, holds nor lies in a tree of the default
    /// plan other than the workspace: a home of `/` or `/usr` is not granted) and `read_paths`
    /// read+exec.
    pub fn for_session(workspace: &Path, home: Option<&Path>, read_paths: &[PathBuf]) -> LandlockPlan {
        let mut plan = LandlockPlan::for_workspace(workspace);
        let overlaps = |h: &Path| {
            plan.paths
                .iter()
                .any(|p| h.starts_with(&p.path) || (p.path.starts_with(h) && p.path != workspace))
        };
        if let Some(home) = home
            && crate::mounts::is_clean_absolute(home)
            && home.parent().is_some()
            && !overlaps(home)
        {
            plan.paths.push(LandlockPath::new(home, LandlockAccess::ReadWriteExec, false, true));
        }
        for p in read_paths {
            plan.paths.push(LandlockPath::new(p.clone(), LandlockAccess::ReadExec, false, true));
        }
        plan
    }
}

/// The kernel's Landlock ABI version, or `None` when Landlock is unavailable.
pub fn kernel_abi() -> Option<u32> {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute only queries the ABI.
    let v = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    u32::try_from(v).ok().filter(|v| *v > 0)
}

/// `struct landlock_ruleset_attr` (the size passed tells older kernels which fields exist).
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
}

/// `struct landlock_path_beneath_attr`.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// `struct landlock_net_port_attr`.
#[repr(C)]
struct NetPortAttr {
    allowed_access: u64,
    port: u64,
}

const RULE_PATH_BENEATH: libc::c_int = 1;
const RULE_NET_PORT: libc::c_int = 2;

/// A plan resolved against the kernel, ready for the child.
pub(crate) struct PreparedLandlock {
    /// The ABI the masks were computed for.
    pub abi: u32,
    handled_fs: u64,
    handled_net: u64,
    /// The handled rights that apply to files, not directories.
    file_rights: u64,
    paths: Vec<(CString, u64, bool)>,
    ports: Vec<u16>,
}

impl PreparedLandlock {
    /// Resolves `plan` at the kernel's ABI (capped at the newest this build knows).
    pub fn new(plan: &LandlockPlan) -> Result<PreparedLandlock, SandboxError> {
        let invalid = |reason: String| SandboxError::InvalidSpec { field: "landlock", reason };
        let raw = kernel_abi().ok_or_else(|| invalid("Landlock is not available on this kernel".into()))?;
        let abi = ABI::from(i32::try_from(raw).unwrap_or(i32::MAX));
        if plan.paths.len() > MAX_LANDLOCK_PATHS {
            return Err(invalid(format!("more than {MAX_LANDLOCK_PATHS} paths")));
        }
        let mut paths = Vec::with_capacity(plan.paths.len());
        for p in &plan.paths {
            if !p.path.is_absolute() {
                return Err(invalid(format!("{} is not absolute", p.path.display())));
            }
            let c = CString::new(p.path.as_os_str().as_bytes())
                .map_err(|_| invalid(format!("{} contains a NUL byte", p.path.display())))?;
            paths.push((c, p.access.mask(abi), p.required));
        }
        let (handled_net, ports) = match &plan.connect_tcp_ports {
            None => (0, Vec::new()),
            Some(ports) => {
                let net = AccessNet::from_all(abi).bits() & AccessNet::ConnectTcp as u64;
                if net == 0 {
                    return Err(invalid(format!("TCP port rules need Landlock ABI 4, the kernel has {raw}")));
                }
                (net, ports.clone())
            }
        };
        Ok(PreparedLandlock {
            abi: raw.min(abi as u32),
            handled_fs: AccessFs::from_all(abi).bits(),
            handled_net,
            file_rights: (AccessFs::from_file(abi) & AccessFs::from_all(abi)).bits(),
            paths,
            ports,
        })
    }

    /// Builds the ruleset and restricts the calling thread. Runs in the child after
    /// `no_new_privs`: raw syscalls over data built by [`PreparedLandlock::new`], no allocation.
    /// The error carries the index of the path (or `u16::MAX` for the ruleset itself).
    pub fn apply(&self) -> Result<(), (u16, i32)> {
        let attr = RulesetAttr { handled_access_fs: self.handled_fs, handled_access_net: self.handled_net };
        let size = if self.handled_net == 0 { 8 } else { std::mem::size_of::<RulesetAttr>() };
        // SAFETY: `attr` is a live struct of at least `size` bytes.
        let ruleset = unsafe {
            libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32)
        };
        if ruleset < 0 {
            return Err((u16::MAX, sys::errno()));
        }
        let ruleset = ruleset as libc::c_int;
        let result = self.add_rules(ruleset).and_then(|()| {
            // SAFETY: plain syscall on a ruleset fd we own.
            let ret = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) };
            if ret < 0 { Err((u16::MAX, sys::errno())) } else { Ok(()) }
        });
        sys::close(ruleset);
        result
    }

    fn add_rules(&self, ruleset: libc::c_int) -> Result<(), (u16, i32)> {
        for (i, (path, mask, required)) in self.paths.iter().enumerate() {
            let index = i as u16;
            let fd = match open_path(path) {
                Ok(fd) => fd,
                Err(libc::ENOENT) if !required => continue,
                Err(e) => return Err((index, e)),
            };
            // A file takes only the rights that apply to files (a split tree's children).
            let mask = if is_dir(fd) { *mask } else { *mask & self.file_rights };
            if mask == 0 {
                sys::close(fd);
                continue;
            }
            let attr = PathBeneathAttr { allowed_access: mask, parent_fd: fd };
            // SAFETY: `attr` is a live packed struct the kernel reads; `fd` is ours.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset,
                    RULE_PATH_BENEATH,
                    &attr as *const PathBeneathAttr,
                    0u32,
                )
            };
            let err = sys::errno();
            sys::close(fd);
            if ret < 0 {
                return Err((index, err));
            }
        }
        for &port in &self.ports {
            let attr = NetPortAttr { allowed_access: self.handled_net, port: u64::from(port) };
            // SAFETY: `attr` is a live struct the kernel reads.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_landlock_add_rule,
                    ruleset,
                    RULE_NET_PORT,
                    &attr as *const NetPortAttr,
                    0u32,
                )
            };
            if ret < 0 {
                return Err((self.paths.len() as u16, sys::errno()));
            }
        }
        Ok(())
    }

    /// How errors name each path, by index; the index past them is the TCP port rules.
    pub fn labels(&self) -> Vec<String> {
        let paths = self.paths.iter().map(|(p, _, _)| p.to_string_lossy().into_owned());
        paths.chain(std::iter::once("TCP port rules".to_string())).collect()
    }
}

fn is_dir(fd: libc::c_int) -> bool {
    // SAFETY: `st` is plain data the kernel fills; `fd` is an open O_PATH descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ret = unsafe { libc::fstat(fd, &mut st) };
    ret == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn open_path(path: &CString) -> SysResult<libc::c_int> {
    // SAFETY: `path` is NUL-terminated; O_PATH opens nothing but a reference.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 { Err(sys::errno()) } else { Ok(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_the_abi() {
        let v1 = LandlockAccess::ReadWriteExec.mask(ABI::V1);
        assert_eq!(v1 & AccessFs::Refer as u64, 0, "REFER is not in ABI 1");
        assert_ne!(LandlockAccess::ReadWriteExec.mask(ABI::V2) & AccessFs::Refer as u64, 0);
        assert_eq!(LandlockAccess::ReadWrite.mask(ABI::V3) & AccessFs::Execute as u64, 0);
        assert_eq!(LandlockAccess::ReadWriteExec.mask(ABI::V5) & AccessFs::MakeBlock as u64, 0);
        assert_eq!(LandlockAccess::Devices.mask(ABI::V1) & AccessFs::MakeReg as u64, 0);
    }
}
