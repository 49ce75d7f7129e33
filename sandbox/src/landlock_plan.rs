//! The Landlock layer: a [`LandlockPlan`] (which trees the command may read, write, execute)
//! turned into access masks at the best ABI the kernel offers, and applied by the command just
//! before `execve` with raw syscalls over buffers built here, so the child allocates nothing.
//!
//! Landlock rules are bound to inodes, and the sandbox's `/tmp` is a tmpfs that exists only in
//! its mount namespace; so the child opens each path itself (`O_PATH`) after the mount view is
//! built, rather than the launcher opening host paths before the fork.
//!
//! Landlock only grants: a tree not in the plan is unreachable (the user's home, `/var`, `/run`
//! outside the state dir, `/srv`, ...). It cannot carve an exception out of a granted tree;
//! fine-grained `file_rules` inside the workspace are the FUSE layer's job.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use landlock::{ABI, Access, AccessFs, AccessNet};
use policies::engine::file::{FileOp, FileRules};

use crate::error::SandboxError;
use crate::spec::SANDBOX_STATE_DIR;
use crate::sys::{self, SysResult};

/// System trees the command may read and execute from, when they exist.
pub const SYSTEM_PATHS: &[&str] =
    &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"];

/// Most paths one plan may carry (the child keeps no list of its own, but the report index is
/// a `u16` and a plan this long is a mistake).
pub const MAX_LANDLOCK_PATHS: usize = 64;

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
}

impl LandlockPlan {
    /// The default plan for a session: system trees read+exec, `/proc` and `/sys` read,
    /// `/dev` devices, the state dir read, the workspace and the private `/tmp` read-write-exec.
    pub fn for_workspace(workspace: &Path) -> LandlockPlan {
        let mut paths: Vec<LandlockPath> = SYSTEM_PATHS
            .iter()
            .map(|p| LandlockPath { path: p.into(), access: LandlockAccess::ReadExec, required: false })
            .collect();
        let fixed = [
            ("/proc", LandlockAccess::Read),
            ("/sys", LandlockAccess::Read),
            ("/dev", LandlockAccess::Devices),
            (SANDBOX_STATE_DIR, LandlockAccess::Read),
            ("/tmp", LandlockAccess::ReadWriteExec),
        ];
        paths.extend(fixed.iter().map(|(p, a)| LandlockPath { path: p.into(), access: *a, required: true }));
        paths.push(LandlockPath {
            path: workspace.to_path_buf(),
            access: LandlockAccess::ReadWriteExec,
            required: true,
        });
        LandlockPlan { paths, connect_tcp_ports: None }
    }

    /// [`LandlockPlan::for_workspace`] narrowed by `rules`: a tree whose every path the rules
    /// deny reading loses the tree, and likewise for writing and executing.
    pub fn from_file_rules(workspace: &Path, rules: &FileRules) -> LandlockPlan {
        let mut plan = LandlockPlan::for_workspace(workspace);
        plan.paths.retain_mut(|p| {
            let denied = |op| rules.denies_subtree(&p.path, op).is_some();
            if denied(FileOp::Read) {
                return false;
            }
            let exec = !denied(FileOp::Exec);
            let write = !denied(FileOp::Write) && !denied(FileOp::Create);
            p.access = match (p.access, write, exec) {
                (LandlockAccess::ReadWriteExec, true, true) => LandlockAccess::ReadWriteExec,
                (LandlockAccess::ReadWriteExec | LandlockAccess::ReadWrite, true, _) => {
                    LandlockAccess::ReadWrite
                }
                (LandlockAccess::ReadWriteExec | LandlockAccess::ReadExec, _, true) => {
                    LandlockAccess::ReadExec
                }
                (LandlockAccess::Devices, true, _) => LandlockAccess::Devices,
                _ => LandlockAccess::Read,
            };
            true
        });
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
            let attr = PathBeneathAttr { allowed_access: *mask, parent_fd: fd };
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

    #[test]
    fn file_rules_narrow_the_plan() {
        let policy = policies::load_policy(
            "file_rules:\n  \
             - {name: no-opt, paths: ['/opt/**'], operations: [read], decision: deny}\n  \
             - {name: no-exec-ws, paths: ['${WORKSPACE}/**'], operations: [exec], decision: deny}\n",
            "t.yaml",
        )
        .unwrap();
        let rules = FileRules::new(&policy.file_rules, Path::new("/w"), &|_| None);
        let plan = LandlockPlan::from_file_rules(Path::new("/w"), &rules);
        assert!(!plan.paths.iter().any(|p| p.path == Path::new("/opt")));
        let ws = plan.paths.iter().find(|p| p.path == Path::new("/w")).unwrap();
        assert_eq!(ws.access, LandlockAccess::ReadWrite);
        let usr = plan.paths.iter().find(|p| p.path == Path::new("/usr")).unwrap();
        assert_eq!(usr.access, LandlockAccess::ReadExec);
    }
}
