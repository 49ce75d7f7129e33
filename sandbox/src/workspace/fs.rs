//! The FUSE operations of the workspace: each one resolves its inode to a path, asks the rules,
//! reports, then does the same operation on the backing directory (never following a symlink
//! the agent could have planted: the kernel resolves links itself, one `readlink` at a time).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, RenameFlags, ReplyEmpty,
    ReplyEntry, Request, TimeOrNow,
};
use policies::engine::file::{FileOp, FileRules, FileVerdict, normalise};

mod ops;

use super::invalidate::Invalidator;
use super::nodes::{Nodes, Stamp};
use super::passthrough::Backings;
use super::{
    FileEvent, FileEventKind, FileEventSink, SYMLINK_ESCAPE_RULE, SymlinkEscape, Trash, WorkspaceConfig,
};

/// How long the kernel may trust a name and its attributes without asking again. Every change
/// made through the mount reaches the kernel's caches as it happens, and the daemon's own
/// (renames of directories, trash restores) are invalidated, so this bounds only how late the
/// sandbox sees a change made to the backing directory from the host: a file edited there may
/// keep its old size and times (and so be read short) for this long; file data is checked at
/// every open. Rules are judged per request (open, create, delete, rename, ...) on the current
/// path whatever the kernel caches, except `stat` of a cached name, which was judged when the
/// name was looked up.
pub(crate) const TTL: Duration = Duration::from_secs(30);

/// How long the kernel may remember that a name does not exist. Shorter than [`TTL`]: a file
/// created on the host side stays invisible in the sandbox for this long (names created
/// through the mount, or restored from the trash, are visible at once).
const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// The kernel's `__FMODE_EXEC`, set in the open flags of an `execve`.
const FMODE_EXEC: i32 = 0x20;

type Reply<T> = Result<T, Errno>;

/// A directory's entries as read at `opendir`: inode number (informational), type, name.
type Listing = Vec<(u64, FileType, OsString)>;

struct Handle {
    file: File,
    rel: PathBuf,
    /// The ruling that allowed writing through this handle, reported with the first write.
    write_rule: Option<(FileVerdict, String)>,
    wrote: AtomicBool,
    /// With kernel passthrough, reads and writes go to `file` without asking the daemon.
    backing: Option<Arc<fuser::BackingId>>,
    /// Counted by the passthrough bookkeeping (a regular file opened with passthrough on).
    counted: bool,
}

/// The filesystem served by the FUSE workers.
pub(crate) struct WorkspaceFs {
    backing: PathBuf,
    sandbox_path: PathBuf,
    rules: FileRules,
    escape: SymlinkEscape,
    trash: Arc<Trash>,
    events: Arc<dyn FileEventSink>,
    nodes: Arc<Mutex<Nodes>>,
    invalidate: Arc<Invalidator>,
    files: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
    /// Kernel passthrough was asked for.
    want_passthrough: bool,
    /// Extended attributes are served (see [`WorkspaceConfig::xattrs`]).
    pub(super) xattrs: bool,
    /// The kernel granted passthrough at INIT (shared with the mount handle).
    passthrough: Arc<AtomicBool>,
    /// The kernel leaves dropping set-user-ID and set-group-ID on writes, truncation and
    /// owner changes to the daemon (`FUSE_HANDLE_KILLPRIV_V2`, granted at INIT), which spares
    /// it a GETATTR before each such SETATTR.
    pub(super) kills_privs: AtomicBool,
    backings: Backings,
}

/// `mode` less set-user-ID, and less set-group-ID when group-executable (what the kernel drops
/// when a caller without `CAP_FSETID` writes or truncates a file), if that changes it.
fn without_setid(mode: u32) -> Option<u32> {
    let mut kept = mode & !libc::S_ISUID;
    if mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
        kept &= !libc::S_ISGID;
    }
    (kept != mode).then_some(kept & 0o7777)
}

/// Drops `file`'s set-ID bits as [`without_setid`] says. The daemon's own writes keep them (it
/// holds `CAP_FSETID`), so it does this for the caller.
pub(super) fn drop_setid(file: &File) -> Reply<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata().map_err(errno)?.permissions().mode();
    if let Some(kept) = without_setid(mode) {
        file.set_permissions(fs::Permissions::from_mode(kept)).map_err(errno)?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked mid-update leaves maps that are still valid maps.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn cpath(p: &Path) -> Reply<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn last_errno() -> Errno {
    Errno::from(io::Error::last_os_error())
}

/// The extended attributes the mount shows and changes: the `user.` namespace. The others are
/// the host's: a `security.capability` set here would give the file capabilities outside the
/// sandbox, and `trusted.` ones are readable only with the daemon's privilege.
const XATTR_NAMESPACE: &[u8] = b"user.";

/// `name` as a C string when it is in [`XATTR_NAMESPACE`].
fn xattr_name(name: &OsStr) -> Option<CString> {
    name.as_bytes().starts_with(XATTR_NAMESPACE).then(|| CString::new(name.as_bytes()).ok()).flatten()
}

/// Calls a size-probing getter (`getxattr`, `listxattr`: a zero length asks for the size)
/// until the value fits, for a value that may grow in between.
fn read_sized(mut call: impl FnMut(*mut u8, usize) -> isize) -> Reply<Vec<u8>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            return Err(last_errno());
        }
        let mut buf = vec![0u8; size as usize];
        let got = call(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        if last_errno() != Errno::ERANGE {
            return Err(last_errno());
        }
    }
}

fn kind(meta: &Metadata) -> FileType {
    FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile)
}

fn attr(ino: u64, m: &Metadata) -> FileAttr {
    let time = |s: i64, ns: i64| {
        let base = SystemTime::UNIX_EPOCH;
        if s >= 0 {
            base + Duration::new(s as u64, ns as u32)
        } else {
            base - Duration::from_secs(s.unsigned_abs())
        }
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: SystemTime::UNIX_EPOCH,
        kind: kind(m),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        Some(TimeOrNow::Now) => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long }
        }
    }
}

impl WorkspaceFs {
    pub fn new(
        config: WorkspaceConfig,
        backing: PathBuf,
        trash: Arc<Trash>,
        passthrough: Arc<AtomicBool>,
    ) -> WorkspaceFs {
        WorkspaceFs {
            want_passthrough: config.passthrough,
            xattrs: config.xattrs,
            backings: Backings::default(),
            passthrough,
            kills_privs: AtomicBool::new(false),
            backing,
            sandbox_path: config.sandbox_path,
            rules: config.rules,
            escape: config.symlink_escape,
            trash,
            events: config.events,
            nodes: Arc::new(Mutex::new(Nodes::new())),
            invalidate: Arc::new(Invalidator::new()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }

    /// The table of the kernel's inode numbers and the paths they stand for.
    pub fn nodes(&self) -> Arc<Mutex<Nodes>> {
        self.nodes.clone()
    }

    /// The queue of kernel entries to drop (started by the mount once it has a notifier).
    pub fn invalidator(&self) -> Arc<Invalidator> {
        self.invalidate.clone()
    }

    /// For [`Trash::on_restore`]: drops the kernel's cached absence of a restored path (and of
    /// each directory the restore may have created on the way). Restores never run on a FUSE
    /// worker.
    pub fn restore_hook(&self) -> impl Fn(&Path) + Send + Sync + 'static {
        let (nodes, invalidate) = (self.nodes.clone(), self.invalidate.clone());
        move |rel: &Path| {
            let mut dir = PathBuf::new();
            let mut names = Vec::new();
            for part in rel.components() {
                names.extend(lock(&nodes).ino_of(&dir).map(|ino| (ino, part.as_os_str())));
                dir.push(part);
            }
            // Not under the node lock: the kernel may need a worker (and so the lock) first.
            for (ino, name) in names {
                invalidate.entry_now(ino, name);
            }
        }
    }

    fn real(&self, rel: &Path) -> PathBuf {
        self.backing.join(rel)
    }

    fn visible(&self, rel: &Path) -> PathBuf {
        self.sandbox_path.join(rel)
    }

    fn path_of(&self, ino: INodeNo) -> Reply<PathBuf> {
        lock(&self.nodes).path(ino.0).ok_or(Errno::ENOENT)
    }

    fn child_of(&self, parent: INodeNo, name: &OsStr) -> Reply<PathBuf> {
        lock(&self.nodes).child(parent.0, name).ok_or(Errno::ENOENT)
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        req: &Request,
        kind: FileEventKind,
        op: FileOp,
        path: PathBuf,
        target: Option<PathBuf>,
        verdict: FileVerdict,
        rule: &str,
        message: Option<&str>,
        trash_id: Option<String>,
    ) {
        self.events.event(FileEvent {
            kind,
            op,
            path,
            target,
            verdict,
            rule: rule.to_string(),
            message: message.map(str::to_string),
            pid: req.pid(),
            uid: req.uid(),
            trash_id,
        });
    }

    /// Judges `op` on `rel`. Lookups, listings and readlinks are reported only when not plainly
    /// allowed; every other operation always is (unless `quiet`, for a rename's halves).
    fn check(&self, req: &Request, rel: &Path, op: FileOp, quiet: bool) -> Reply<(FileVerdict, String)> {
        self.check_as(req, rel, op, quiet, FileEventKind::of(op))
    }

    /// [`WorkspaceFs::check`], reported as `kind`.
    fn check_as(
        &self,
        req: &Request,
        rel: &Path,
        op: FileOp,
        quiet: bool,
        kind: FileEventKind,
    ) -> Reply<(FileVerdict, String)> {
        let path = self.visible(rel);
        let r = self.rules.decide(&path, op);
        let noisy =
            !matches!(op, FileOp::Stat | FileOp::List | FileOp::Readlink) || r.verdict != FileVerdict::Allow;
        if r.verdict == FileVerdict::Deny || (noisy && !quiet) {
            self.report(req, kind, op, path, None, r.verdict, r.rule, r.message, None);
        }
        if r.verdict == FileVerdict::Deny {
            tracing::info!(rule = r.rule, op = op.as_str(), path = %self.visible(rel).display(), "file operation denied");
            return Err(Errno::EACCES);
        }
        Ok((r.verdict, r.rule.to_string()))
    }

    /// Where a link at `rel` pointing at `target` leads, when that is outside the workspace.
    fn escape_of(&self, rel: &Path, target: &Path) -> Option<PathBuf> {
        let base = self.visible(rel.parent().unwrap_or(Path::new("")));
        let joined = if target.is_absolute() { target.to_path_buf() } else { base.join(target) };
        let resolved = normalise(&joined)?.into_owned();
        (!resolved.starts_with(&self.sandbox_path)).then_some(resolved)
    }

    /// Applies [`SymlinkEscape`] to a link at `rel` pointing at `target`.
    fn check_escape(&self, req: &Request, rel: &Path, target: &Path, op: FileOp) -> Reply<()> {
        let Some(outside) = self.escape_of(rel, target) else { return Ok(()) };
        let (verdict, rule, message) = match self.escape {
            SymlinkEscape::Deny => (FileVerdict::Deny, SYMLINK_ESCAPE_RULE, None),
            SymlinkEscape::Evaluate => {
                let r = self.rules.decide(&outside, FileOp::Read);
                (r.verdict, r.rule, r.message)
            }
        };
        if verdict == FileVerdict::Deny || verdict == FileVerdict::Audit {
            let kind = FileEventKind::of(op);
            self.report(req, kind, op, self.visible(rel), Some(outside), verdict, rule, message, None);
        }
        if verdict == FileVerdict::Deny { Err(Errno::EACCES) } else { Ok(()) }
    }

    fn lstat(&self, rel: &Path) -> Reply<Metadata> {
        fs::symlink_metadata(self.real(rel)).map_err(errno)
    }

    /// Registers `rel` with the kernel (one lookup) and returns its attributes.
    fn entry(&self, rel: &Path) -> Reply<FileAttr> {
        let meta = self.lstat(rel)?;
        let ino = lock(&self.nodes).remember(rel);
        Ok(attr(ino, &meta))
    }

    /// A listed name's entry for `readdirplus` (counts one lookup), and how long the kernel
    /// may keep it: no time at all unless its `stat` is plainly allowed, so that the kernel
    /// looks the name up again (judged and reported) before any use of it.
    fn plus_entry(&self, rel: &Path) -> Option<(FileAttr, Duration)> {
        let allowed = self.rules.decide(&self.visible(rel), FileOp::Stat).verdict == FileVerdict::Allow;
        let a = self.entry(rel).ok()?;
        Some((a, if allowed { TTL } else { Duration::ZERO }))
    }

    /// Gives a new name to the caller, as a local filesystem would have created it.
    fn own(&self, req: &Request, rel: &Path) -> Reply<()> {
        std::os::unix::fs::lchown(self.real(rel), Some(req.uid()), Some(req.gid())).map_err(errno)
    }

    fn handle(&self, fh: FileHandle) -> Reply<Arc<Handle>> {
        lock(&self.files).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn open_real(&self, rel: &Path, flags: i32, mode: u32) -> Reply<File> {
        let c = cpath(&self.real(rel))?;
        let flags = (flags & !FMODE_EXEC & !libc::O_NOCTTY) | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `c` is NUL-terminated; the fd is owned by the File built from it.
        let fd = unsafe { libc::open(c.as_ptr(), flags, mode as libc::c_uint) };
        if fd < 0 {
            return Err(last_errno());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Registers an open file. A passthrough handle's writes never reach the daemon, so its
    /// `file_write` is reported now, when writing was allowed.
    fn add_handle(
        &self,
        req: &Request,
        file: File,
        rel: PathBuf,
        write_rule: Option<(FileVerdict, String)>,
        backing: Option<Option<Arc<fuser::BackingId>>>,
    ) -> (u64, Arc<Handle>) {
        let counted = backing.is_some();
        let backing = backing.flatten();
        let wrote = backing.is_some() && write_rule.is_some();
        if let (true, Some((verdict, rule))) = (wrote, &write_rule) {
            let path = self.visible(&rel);
            self.report(req, FileEventKind::Write, FileOp::Write, path, None, *verdict, rule, None, None);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let handle =
            Arc::new(Handle { file, rel, write_rule, wrote: AtomicBool::new(wrote), backing, counted });
        lock(&self.files).insert(fh, handle.clone());
        (fh, handle)
    }

    /// Runs `change` on the file of handle `fh`, which must have been opened for writing
    /// (`EBADF` otherwise), and reports the handle's first write.
    fn write_with<T>(
        &self,
        req: &Request,
        fh: FileHandle,
        change: impl FnOnce(&File) -> Reply<T>,
    ) -> Reply<T> {
        let h = self.handle(fh)?;
        let Some((verdict, rule)) = &h.write_rule else { return Err(Errno::EBADF) };
        let out = change(&h.file)?;
        if !h.wrote.swap(true, Ordering::Relaxed) {
            let path = self.visible(&h.rel);
            self.report(req, FileEventKind::Write, FileOp::Write, path, None, *verdict, rule, None, None);
        }
        Ok(out)
    }

    /// With passthrough on, a regular `file`'s open is counted and gets `Some(id)` when it is
    /// to be passed through, `Some(None)` when the daemon serves it; `None` when not counted.
    fn backing_for(
        &self,
        ino: u64,
        rel: &Path,
        meta: &Metadata,
        register: impl FnOnce(&File) -> io::Result<fuser::BackingId>,
    ) -> Option<Option<Arc<fuser::BackingId>>> {
        if !meta.is_file() || !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        // Read-write when possible: later opens of the inode for writing share this file.
        let open = || {
            self.open_real(rel, libc::O_RDWR, 0)
                .or_else(|_| self.open_real(rel, libc::O_RDONLY, 0))
                .map_err(|e| io::Error::from_raw_os_error(e.code()))
        };
        Some(self.backings.acquire(ino, meta.len(), open, register))
    }

    /// Drops handle `fh`, and its share of the inode's backing id. The kernel saw every write
    /// made through a handle it served, so its cached data still matches the file.
    fn release_handle(&self, ino: u64, fh: u64) {
        let Some(h) = lock(&self.files).remove(&fh) else { return };
        if h.backing.is_none()
            && h.wrote.load(Ordering::Relaxed)
            && let Ok(meta) = h.file.metadata()
        {
            self.restamp(ino, &meta);
        }
        if h.counted {
            self.backings.release(ino, h.backing.is_some());
        }
    }

    /// The open flags of a file open: never a `FLUSH` at close (writes are written through and
    /// shared mappings are written back when unmapped), and the kernel's cached pages kept when
    /// the backing file is still as it was when they were last known to match it (else the
    /// kernel drops them, and is told to fetch the attributes again). Opens passed through
    /// write around the page cache, so nothing is vouched for after one.
    fn fopen_flags(&self, ino: u64, meta: &Metadata, flags: i32, passed: bool) -> FopenFlags {
        let mut out = FopenFlags::FOPEN_NOFLUSH;
        if !meta.is_file() {
            return out;
        }
        let mut nodes = lock(&self.nodes);
        if passed {
            nodes.set_stamp(ino, None);
            return out;
        }
        let now = Stamp::of(meta);
        match nodes.stamp(ino) {
            Some(then) if then == now && flags & libc::O_TRUNC == 0 => out |= FopenFlags::FOPEN_KEEP_CACHE,
            Some(then) if then == now => {}
            // Changed behind the kernel's back (from the host): its size and times are stale too.
            Some(_) => self.invalidate.attributes(ino),
            None => {}
        }
        nodes.set_stamp(ino, Some(now));
        out
    }

    /// A change the kernel saw (and applied to its cache) made the file look like `meta`.
    fn restamp(&self, ino: u64, meta: &Metadata) {
        let mut nodes = lock(&self.nodes);
        if meta.is_file() && nodes.stamp(ino).is_some() {
            nodes.set_stamp(ino, Some(Stamp::of(meta)));
        }
    }

    /// The checks of an open with `flags`: reads, writes (and truncation), execution.
    fn check_open(&self, req: &Request, rel: &Path, flags: i32) -> Reply<Option<(FileVerdict, String)>> {
        let acc = flags & libc::O_ACCMODE;
        let open = FileEventKind::Open;
        if flags & FMODE_EXEC != 0 {
            self.check_as(req, rel, FileOp::Exec, false, open)?;
        }
        if acc == libc::O_RDONLY || acc == libc::O_RDWR {
            self.check_as(req, rel, FileOp::Read, acc == libc::O_RDWR, open)?;
        }
        if acc == libc::O_WRONLY || acc == libc::O_RDWR || flags & libc::O_TRUNC != 0 {
            return self.check_as(req, rel, FileOp::Write, false, open).map(Some);
        }
        Ok(None)
    }

    fn do_setattr(
        &self,
        req: &Request,
        rel: &Path,
        fh: Option<FileHandle>,
        change: &Change,
    ) -> Reply<Metadata> {
        let real = self.real(rel);
        let handle = fh.map(|fh| self.handle(fh)).transpose()?;
        // Set-ID bits go as the kernel would drop them for the caller (a caller holding
        // CAP_FSETID, such as root on the host writing through the mount, loses them too): on
        // truncation, and on a request that changes nothing else (the kernel's ask after a
        // write it passed through). An owner change drops them on the backing file itself.
        let kills = self.kills_privs.load(Ordering::Relaxed);
        let bare = change.mode.is_none()
            && change.uid.is_none()
            && change.gid.is_none()
            && change.size.is_none()
            && change.atime.is_none()
            && change.mtime.is_none();
        if let Some(size) = change.size {
            self.check(req, rel, FileOp::Write, false)?;
            let opened;
            let file = match &handle {
                Some(h) => &h.file,
                None => {
                    opened = self.open_real(rel, libc::O_WRONLY, 0)?;
                    &opened
                }
            };
            file.set_len(size).map_err(errno)?;
            if kills {
                drop_setid(file)?;
            }
        } else if kills && bare {
            self.check(req, rel, FileOp::Write, false)?;
            match &handle {
                Some(h) => drop_setid(&h.file)?,
                None => {
                    let meta = self.lstat(rel)?;
                    if let Some(kept) = without_setid(meta.mode()).filter(|_| meta.is_file()) {
                        self.chmod_nofollow(rel, kept)?;
                    }
                }
            }
        }
        if let Some(mode) = change.mode {
            self.check(req, rel, FileOp::Chmod, false)?;
            match &handle {
                Some(h) => {
                    let perm =
                        <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode & 0o7777);
                    h.file.set_permissions(perm).map_err(errno)?;
                }
                None => self.chmod_nofollow(rel, mode & 0o7777)?,
            }
        }
        if change.uid.is_some() || change.gid.is_some() {
            self.check(req, rel, FileOp::Chown, false)?;
            std::os::unix::fs::lchown(&real, change.uid, change.gid).map_err(errno)?;
        }
        if change.atime.is_some() || change.mtime.is_some() {
            self.check(req, rel, FileOp::Write, true)?;
            let times = [timespec(change.atime), timespec(change.mtime)];
            let c = cpath(&real)?;
            // SAFETY: `c` is NUL-terminated and `times` holds two timespecs.
            let ret = unsafe {
                libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
            };
            if ret < 0 {
                return Err(last_errno());
            }
        }
        match &handle {
            Some(h) => h.file.metadata().map_err(errno),
            None => self.lstat(rel),
        }
    }

    /// The inode at `rel` itself, pinned with `O_PATH | O_NOFOLLOW` so a symlink swapped in
    /// concurrently is never followed, and its `/proc/self/fd/N` name for the path-taking calls
    /// (`chmod`, the xattr calls); `None` for a symlink (it has no mode to change and Linux keeps
    /// no `user.` attributes on it).
    fn pinned(&self, rel: &Path) -> Reply<Option<(File, CString)>> {
        let pinned = self.open_real(rel, libc::O_PATH, 0)?;
        if pinned.metadata().map_err(errno)?.file_type().is_symlink() {
            return Ok(None);
        }
        let proc = cpath(Path::new(&format!("/proc/self/fd/{}", pinned.as_raw_fd())))?;
        Ok(Some((pinned, proc)))
    }

    /// The value of the extended attribute `name` of `rel` (`user.` names only; others read
    /// as absent).
    pub(super) fn get_xattr(&self, req: &Request, rel: &Path, name: &OsStr) -> Reply<Vec<u8>> {
        self.check(req, rel, FileOp::Stat, false)?;
        let name = xattr_name(name).ok_or(Errno::ENODATA)?;
        let Some((_pinned, proc)) = self.pinned(rel)? else { return Err(Errno::ENODATA) };
        read_sized(|buf, len| {
            // SAFETY: both strings are NUL-terminated; `buf` has room for `len` bytes.
            unsafe { libc::getxattr(proc.as_ptr(), name.as_ptr(), buf.cast(), len) }
        })
    }

    /// The `user.` attribute names of `rel`, each NUL-terminated, as `listxattr` gives them.
    pub(super) fn list_xattr(&self, req: &Request, rel: &Path) -> Reply<Vec<u8>> {
        self.check(req, rel, FileOp::Stat, false)?;
        let Some((_pinned, proc)) = self.pinned(rel)? else { return Ok(Vec::new()) };
        let all = read_sized(|buf, len| {
            // SAFETY: `proc` is NUL-terminated; `buf` has room for `len` bytes.
            unsafe { libc::listxattr(proc.as_ptr(), buf.cast(), len) }
        })?;
        let mut out = Vec::new();
        for n in all.split_inclusive(|b| *b == 0).filter(|n| n.starts_with(XATTR_NAMESPACE)) {
            out.extend_from_slice(n);
        }
        Ok(out)
    }

    /// Sets (`Some`) or removes (`None`) the extended attribute `name` of `rel`, a change of
    /// the file judged as a write. Names outside `user.` are refused with `ENOTSUP`.
    pub(super) fn change_xattr(
        &self,
        req: &Request,
        rel: &Path,
        name: &OsStr,
        value: Option<(&[u8], i32)>,
    ) -> Reply<()> {
        let name = xattr_name(name).ok_or(Errno::ENOTSUP)?;
        self.check(req, rel, FileOp::Write, false)?;
        let Some((_pinned, proc)) = self.pinned(rel)? else { return Err(Errno::EPERM) };
        // SAFETY: both strings are NUL-terminated; `v` is valid for `v.len()` bytes.
        let ret = match value {
            Some((v, flags)) => unsafe {
                libc::setxattr(proc.as_ptr(), name.as_ptr(), v.as_ptr().cast(), v.len(), flags)
            },
            None => unsafe { libc::removexattr(proc.as_ptr(), name.as_ptr()) },
        };
        if ret < 0 { Err(last_errno()) } else { Ok(()) }
    }

    /// `chmod` of the inode at `rel` itself (see [`WorkspaceFs::pinned`]).
    fn chmod_nofollow(&self, rel: &Path, mode: u32) -> Reply<()> {
        let Some((_pinned, proc)) = self.pinned(rel)? else { return Ok(()) };
        // SAFETY: `proc` is NUL-terminated; it names the inode `pinned` holds open.
        if unsafe { libc::chmod(proc.as_ptr(), mode as libc::mode_t) } < 0 {
            return Err(last_errno());
        }
        Ok(())
    }

    fn do_unlink(&self, req: &Request, rel: &Path) -> Reply<()> {
        let path = self.visible(rel);
        let r = self.rules.decide(&path, FileOp::Delete);
        let (verdict, rule, message) = (r.verdict, r.rule, r.message);
        let trash_id = match verdict {
            FileVerdict::Deny => None,
            FileVerdict::SoftDelete => Some(self.trash.put(rel).map_err(errno)?),
            FileVerdict::Allow | FileVerdict::Audit => {
                fs::remove_file(self.real(rel)).map_err(errno)?;
                None
            }
        };
        self.report(req, FileEventKind::Delete, FileOp::Delete, path, None, verdict, rule, message, trash_id);
        if verdict == FileVerdict::Deny {
            return Err(Errno::EACCES);
        }
        lock(&self.nodes).detach(rel);
        Ok(())
    }

    fn do_rename(&self, req: &Request, from: &Path, to: &Path, flags: RenameFlags) -> Reply<()> {
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let (mut verdict, mut rule) = self.check(req, from, FileOp::RenameFrom, true)?;
        let to_ruling = self.check(req, to, FileOp::RenameTo, true)?;
        if exchange {
            self.check(req, to, FileOp::RenameFrom, true)?;
            self.check(req, from, FileOp::RenameTo, true)?;
        }
        if to_ruling.0 == FileVerdict::Audit {
            (verdict, rule) = to_ruling;
        }
        let mut trash_id = None;
        let replaced = fs::symlink_metadata(self.real(to)).ok();
        if let Some(meta) = replaced.filter(|_| !exchange && !flags.contains(RenameFlags::RENAME_NOREPLACE)) {
            // Renaming over a file deletes it: the delete rules apply to it too.
            let r = self.rules.decide(&self.visible(to), FileOp::Delete);
            if r.verdict == FileVerdict::Deny {
                let to = self.visible(to);
                self.report(
                    req,
                    FileEventKind::Delete,
                    FileOp::Delete,
                    to,
                    None,
                    r.verdict,
                    r.rule,
                    r.message,
                    None,
                );
                return Err(Errno::EACCES);
            }
            if r.verdict == FileVerdict::SoftDelete && !meta.is_dir() {
                trash_id = Some(self.trash.put(to).map_err(errno)?);
            }
        }
        let (a, b) = (cpath(&self.real(from))?, cpath(&self.real(to))?);
        // SAFETY: both paths are NUL-terminated; the flags come from the kernel's request.
        let ret =
            unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), flags.bits()) };
        if ret < 0 {
            return Err(last_errno());
        }
        let (path, target) = (self.visible(from), Some(self.visible(to)));
        self.report(
            req,
            FileEventKind::Rename,
            FileOp::RenameFrom,
            path,
            target,
            verdict,
            &rule,
            None,
            trash_id,
        );
        let stale = {
            let mut nodes = lock(&self.nodes);
            if exchange { nodes.exchange(from, to) } else { nodes.rename(from, to) }
        };
        // The names below a moved directory were looked up (and judged) under its old path.
        for (dir, name) in stale {
            self.invalidate.entry(dir, name);
        }
        Ok(())
    }
}

/// Attributes carrying only an inode number and type: a name the kernel is told nothing more
/// of (number 0: cached as absent; in a `readdirplus`, listed without an entry).
fn bare(ino: u64, kind: FileType) -> FileAttr {
    let epoch = SystemTime::UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: epoch,
        mtime: epoch,
        ctime: epoch,
        crtime: epoch,
        kind,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn answer_entry(reply: ReplyEntry, result: Reply<FileAttr>) {
    match result {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn answer_empty(reply: ReplyEmpty, result: Reply<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// The parts of a `setattr` this filesystem applies.
struct Change {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

#[cfg(test)]
mod tests {
    use super::without_setid;

    #[test]
    fn set_id_bits_go_as_the_kernel_drops_them() {
        assert_eq!(without_setid(0o100_4755), Some(0o755));
        assert_eq!(without_setid(0o100_6775), Some(0o775));
        // Set-group-ID without group execute marks mandatory locking: kept.
        assert_eq!(without_setid(0o100_2764), None);
        assert_eq!(without_setid(0o100_6764), Some(0o2764));
        assert_eq!(without_setid(0o100_0755), None);
    }
}
