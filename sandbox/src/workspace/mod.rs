//! The FUSE workspace: the real workspace directory presented through a passthrough FUSE mount
//! that applies `file_rules` to every operation (`EACCES` on deny), reports what was touched
//! through a [`FileEventSink`], refuses or evaluates symlinks that lead out of the workspace,
//! and turns `soft_delete` into a move to a per-session [`Trash`].
//!
//! Rules are judged against the path the sandbox sees ([`WorkspaceConfig::sandbox_path`], the
//! `${WORKSPACE}` of the rules), while the data lives in [`WorkspaceConfig::backing`]. The
//! daemon runs as root and the mount uses `default_permissions`, so the kernel checks mode bits
//! against the caller before the daemon is asked; new files are given to the caller's uid/gid.
//!
//! The backing directory is meant to change only through the mount, and the kernel is let
//! cache accordingly: names and attributes for 30 s, absent names for 10 s, file pages across
//! opens while the backing file is unchanged, attributes with directory listings. A change
//! made on the host side may so be seen late: a new file after up to 10 s, an edited file's
//! size and times after up to 30 s (its data at the next open). What the daemon changes itself
//! (trash restores, the names below a renamed directory) is invalidated at once. Every rule is
//! still judged per request on the current path; only the `stat` of a cached name was judged
//! when the name was looked up.
//!
//! Entry point: [`WorkspaceMount::mount`]; dropping the mount unmounts it.

mod fs;
mod invalidate;
mod nodes;
mod passthrough;
mod trash;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use policies::engine::file::{FileOp, FileRules, FileVerdict};

use crate::error::SandboxError;

pub use trash::{Trash, TrashEntry};

/// What to do with a symlink whose target lies outside the workspace: the policy's
/// `policies.symlink_escape`.
pub use policies::model::blocks::SymlinkEscape;

/// Rule name of a refusal made by [`SymlinkEscape::Deny`].
pub const SYMLINK_ESCAPE_RULE: &str = "symlink-escape";

/// Which event an operation produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileEventKind {
    /// A file opened (for reading, writing or executing), or a denied lookup or listing.
    Open,
    /// Contents or metadata changed (first write through a handle, truncation, chmod, chown).
    Write,
    /// A name created (file, directory, link, node).
    Create,
    /// A file or directory removed (or moved to the trash).
    Delete,
    /// A rename.
    Rename,
}

impl FileEventKind {
    /// The event name (`file_open`, `file_write`, `file_create`, `file_delete`, `file_rename`).
    pub fn as_str(self) -> &'static str {
        match self {
            FileEventKind::Open => "file_open",
            FileEventKind::Write => "file_write",
            FileEventKind::Create => "file_create",
            FileEventKind::Delete => "file_delete",
            FileEventKind::Rename => "file_rename",
        }
    }

    /// The kind an operation reports as.
    pub fn of(op: FileOp) -> FileEventKind {
        match op {
            FileOp::Read | FileOp::Stat | FileOp::List | FileOp::Readlink | FileOp::Exec => {
                FileEventKind::Open
            }
            FileOp::Write | FileOp::Chmod | FileOp::Chown => FileEventKind::Write,
            FileOp::Create | FileOp::Mkdir | FileOp::Symlink | FileOp::Link | FileOp::Mknod => {
                FileEventKind::Create
            }
            FileOp::Delete | FileOp::Rmdir => FileEventKind::Delete,
            FileOp::RenameFrom | FileOp::RenameTo => FileEventKind::Rename,
        }
    }
}

/// One file event; paths are as the sandbox sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEvent {
    /// The event name.
    pub kind: FileEventKind,
    /// The operation judged.
    pub op: FileOp,
    /// The path (a rename's source).
    pub path: PathBuf,
    /// A rename's destination, or the target of an escaping symlink.
    pub target: Option<PathBuf>,
    /// The verdict.
    pub verdict: FileVerdict,
    /// The deciding rule.
    pub rule: String,
    /// The rule's message.
    pub message: Option<String>,
    /// Calling process (host pid as FUSE reports it) and user.
    pub pid: u32,
    /// Calling user.
    pub uid: u32,
    /// For a soft delete, the trash id to restore it by.
    pub trash_id: Option<String>,
}

/// Receives file events. Called on the FUSE worker threads: keep it quick (queue, don't block).
pub trait FileEventSink: Send + Sync + 'static {
    /// One event.
    fn event(&self, event: FileEvent);
}

/// Everything a mount needs.
pub struct WorkspaceConfig {
    /// The real workspace directory.
    pub backing: PathBuf,
    /// Where the sandbox sees the workspace; `rules` must be compiled with this as workspace.
    pub sandbox_path: PathBuf,
    /// The session's compiled `file_rules`.
    pub rules: FileRules,
    /// Symlinks leading out of the workspace.
    pub symlink_escape: SymlinkEscape,
    /// The session's trash directory (outside the workspace, same filesystem for cheap moves).
    pub trash_dir: PathBuf,
    /// Where events go.
    pub events: Arc<dyn FileEventSink>,
    /// FUSE worker threads (at least 1).
    pub threads: usize,
    /// Ask the kernel for FUSE passthrough (Linux 6.9+, `CONFIG_FUSE_PASSTHROUGH`, and
    /// `CAP_SYS_ADMIN`): reads, writes and mmap of an opened regular file then go straight to
    /// the backing file. Rules are still applied at open; `file_write` is then reported at
    /// open-for-write rather than at the first write. Refused by the kernel, the mount serves
    /// data itself ([`WorkspaceMount::passthrough_active`] says which).
    pub passthrough: bool,
    /// Serve extended attributes of the `user.` namespace. Off, the kernel is told at the
    /// first attribute request that the mount has none and asks no more: `ls -l` (which looks
    /// for ACLs and security labels on every entry) and writes (which look for file
    /// capabilities) then cost no request, where serving them costs one or two per entry.
    pub xattrs: bool,
}

/// A mounted FUSE workspace; dropping it unmounts.
pub struct WorkspaceMount {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    trash: Arc<Trash>,
    passthrough: Arc<AtomicBool>,
    sockets: BackingSockets,
}

/// The socket in the backing directory behind an inode of the mount. A listener bound on the
/// host side in the workspace directory is not found by a connect through the mount (the
/// kernel looks listeners up by inode, and the mount's inode is not the backing file's); a
/// connect made on the agent's behalf can reach it through this instead.
#[derive(Clone)]
pub struct BackingSockets {
    /// The mount's device number.
    dev: u64,
    nodes: Arc<std::sync::Mutex<nodes::Nodes>>,
    /// The backing directory, opened once (`O_PATH`).
    backing: Arc<std::os::fd::OwnedFd>,
}

impl std::fmt::Debug for BackingSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackingSockets").field("dev", &self.dev).finish_non_exhaustive()
    }
}

impl BackingSockets {
    /// An `O_PATH` handle on the socket file of the backing directory that the mount's inode
    /// `ino` (on device `dev`) stands for, if it is one of this mount's, a socket with one name,
    /// and reached with no symbolic link followed and no mount crossed.
    pub fn open(&self, dev: u64, ino: u64) -> Option<std::os::fd::OwnedFd> {
        use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
        if dev != self.dev {
            return None;
        }
        let rel = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).path(ino)?;
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // Nor into another mount below the backing directory (a host bind there).
        let resolve = ResolveFlags::BENEATH
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV;
        let fd = rustix::fs::openat2(&*self.backing, &rel, flags, Mode::empty(), resolve).ok()?;
        let st = rustix::fs::fstat(&fd).ok()?;
        (FileType::from_raw_mode(st.st_mode) == FileType::Socket && st.st_nlink <= 1).then_some(fd)
    }
}

impl std::fmt::Debug for WorkspaceMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceMount").field("mountpoint", &self.mountpoint).finish_non_exhaustive()
    }
}

impl WorkspaceMount {
    /// Mounts `config.backing` at `mountpoint` (an existing directory) and starts serving it.
    /// The mount allows other users (the sandbox's), `nosuid`, `nodev`, `default_permissions`.
    pub fn mount(config: WorkspaceConfig, mountpoint: &Path) -> Result<WorkspaceMount, SandboxError> {
        let invalid = |reason: String| SandboxError::InvalidSpec { field: "workspace", reason };
        if config.rules.workspace() != config.sandbox_path {
            return Err(invalid(format!(
                "rules were compiled for {}, not {}",
                config.rules.workspace().display(),
                config.sandbox_path.display()
            )));
        }
        let backing = std::fs::canonicalize(&config.backing)
            .map_err(|e| SandboxError::setup(format!("workspace {}", config.backing.display()), e))?;
        let trash_dir = &config.trash_dir;
        if trash_dir.starts_with(&backing)
            || std::fs::canonicalize(trash_dir).is_ok_and(|t| t.starts_with(&backing))
        {
            return Err(invalid("the trash must lie outside the workspace".into()));
        }
        let trash = Arc::new(
            Trash::open(trash_dir, &backing)
                .map_err(|e| SandboxError::setup(format!("trash {}", trash_dir.display()), e))?,
        );
        let threads = config.threads.max(1);
        let passthrough = Arc::new(AtomicBool::new(false));
        let backing_dir = rustix::fs::open(
            &backing,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| SandboxError::setup(format!("workspace {}", backing.display()), e.into()))?;
        let fs = fs::WorkspaceFs::new(config, backing, trash.clone(), passthrough.clone());
        let invalidator = fs.invalidator();
        let nodes = fs.nodes();
        trash.on_restore(fs.restore_hook());
        let mut options = fuser::Config::default();
        options.mount_options = vec![
            fuser::MountOption::FSName("agentsh-workspace".into()),
            fuser::MountOption::Subtype("agentsh".into()),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoSuid,
            fuser::MountOption::NoDev,
        ];
        options.acl = fuser::SessionACL::All;
        options.n_threads = Some(threads);
        options.clone_fd = threads > 1;
        let session = fuser::spawn_mount(fs, mountpoint, &options).map_err(|e| {
            SandboxError::setup(format!("mount FUSE workspace at {}", mountpoint.display()), e)
        })?;
        let notifier = session.notifier();
        let mut mount = WorkspaceMount {
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
            trash,
            passthrough,
            sockets: BackingSockets { dev: 0, nodes, backing: Arc::new(backing_dir) },
        };
        invalidator.start(notifier).map_err(|e| {
            SandboxError::setup(format!("start the invalidation thread of {}", mountpoint.display()), e)
        })?;
        // The first request completes the kernel's INIT, so passthrough_active is settled.
        let root = std::fs::metadata(mountpoint).map_err(|e| {
            SandboxError::setup(format!("stat FUSE workspace at {}", mountpoint.display()), e)
        })?;
        mount.sockets.dev = std::os::unix::fs::MetadataExt::dev(&root);
        Ok(mount)
    }

    /// Finds the sockets of the backing directory behind the mount's inodes (see
    /// [`BackingSockets`]).
    pub fn backing_sockets(&self) -> BackingSockets {
        self.sockets.clone()
    }

    /// Whether the kernel granted FUSE passthrough (see [`WorkspaceConfig::passthrough`]).
    pub fn passthrough_active(&self) -> bool {
        self.passthrough.load(Ordering::Relaxed)
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The session's trash (list and restore soft-deleted files).
    pub fn trash(&self) -> &Trash {
        &self.trash
    }

    /// Unmounts and waits for the workers to stop.
    pub fn unmount(mut self) -> Result<(), SandboxError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), SandboxError> {
        match self.session.take() {
            Some(s) => s
                .umount_and_join()
                .map_err(|e| SandboxError::setup(format!("unmount {}", self.mountpoint.display()), e)),
            None => Ok(()),
        }
    }
}

impl Drop for WorkspaceMount {
    fn drop(&mut self) {
        if self.stop().is_err() {
            // Busy (a process still has a file open): detach it so nothing is left mounted.
            if let Ok(c) = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes()) {
                // SAFETY: `c` is a NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}
