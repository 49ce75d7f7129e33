//! The `fuser::Filesystem` callbacks: decode the request, call the checked operation of
//! [`WorkspaceFs`], answer.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use policies::engine::file::FileOp;

use super::{
    Change, NEGATIVE_TTL, TTL, WorkspaceFs, answer_empty, answer_entry, attr, bare, cpath, errno, last_errno,
    lock,
};

/// Answers an xattr read: its size when the kernel asks (`size` 0), else the bytes, or
/// `ERANGE` when they do not fit.
fn answer_xattr(reply: fuser::ReplyXattr, size: u32, value: Result<Vec<u8>, Errno>) {
    match value {
        Ok(v) if size == 0 => match u32::try_from(v.len()) {
            Ok(n) => reply.size(n),
            Err(_) => reply.error(Errno::E2BIG),
        },
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

/// A file offset or length from the kernel as the signed type the syscalls take.
fn offset_of(v: u64) -> Result<i64, Errno> {
    i64::try_from(v).map_err(|_| Errno::EINVAL)
}

impl fuser::Filesystem for WorkspaceFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> io::Result<()> {
        // Depth 2: the backing directory may itself sit on a stacked filesystem (overlayfs).
        let granted = self.want_passthrough
            && config.set_max_stack_depth(2).is_ok()
            && config.add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH).is_ok();
        self.passthrough.store(granted, Ordering::Relaxed);
        // The daemon drops set-ID bits itself (see `drop_setid`): no GETATTR before each
        // SETATTR that might have to (every `chown`, as `tar` does per file).
        let kills = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2).is_ok();
        self.kills_privs.store(kills, Ordering::Relaxed);
        // Each of these only saves requests; a kernel without one works without it.
        // Listings carry the entries' attributes (the kernel picks when that pays).
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // Lookups and listings in one directory run in parallel (the node table is locked).
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // More readahead and releases in flight before the kernel throttles.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = self.child_of(parent, name).and_then(|rel| {
            self.check(req, &rel, FileOp::Stat, false)?;
            self.entry(&rel)
        });
        match result {
            // Remembered as absent: creating the name through the mount replaces that at once.
            Err(Errno::ENOENT) => reply.entry(&NEGATIVE_TTL, &bare(0, FileType::RegularFile), Generation(0)),
            other => answer_entry(reply, other),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: fuser::ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        answer_xattr(reply, size, self.path_of(ino).and_then(|rel| self.get_xattr(req, &rel, name)));
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        answer_xattr(reply, size, self.path_of(ino).and_then(|rel| self.list_xattr(req, &rel)));
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let result =
            self.path_of(ino).and_then(|rel| self.change_xattr(req, &rel, name, Some((value, flags))));
        answer_empty(reply, result);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        answer_empty(reply, self.path_of(ino).and_then(|rel| self.change_xattr(req, &rel, name, None)));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.nodes).forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let meta = match fh.map(|fh| self.handle(fh)) {
            Some(Ok(h)) => h.file.metadata().map_err(errno),
            _ => self.path_of(ino).and_then(|rel| self.lstat(&rel)),
        };
        match meta {
            Ok(m) => reply.attr(&TTL, &attr(ino.0, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = Change { mode, uid, gid, size, atime, mtime };
        match self.path_of(ino).and_then(|rel| self.do_setattr(req, &rel, fh, &change)) {
            Ok(m) => {
                // Truncation included: the kernel trims its cached pages itself.
                self.restamp(ino.0, &m);
                reply.attr(&TTL, &attr(ino.0, &m))
            }
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let result = self.path_of(ino).and_then(|rel| {
            self.check(req, &rel, FileOp::Readlink, false)?;
            let target = fs::read_link(self.real(&rel)).map_err(errno)?;
            self.check_escape(req, &rel, &target, FileOp::Readlink)?;
            Ok(target)
        });
        match result {
            Ok(t) => reply.data(t.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let result = self.child_of(parent, name).and_then(|rel| {
            self.check(req, &rel, FileOp::Mknod, false)?;
            let fmt = mode & libc::S_IFMT;
            if fmt != libc::S_IFIFO && fmt != libc::S_IFSOCK && fmt != libc::S_IFREG {
                return Err(Errno::EPERM);
            }
            let c = cpath(&self.real(&rel))?;
            // SAFETY: `c` is NUL-terminated; no device nodes reach here.
            if unsafe { libc::mknod(c.as_ptr(), mode & !umask, libc::dev_t::from(rdev)) } < 0 {
                return Err(last_errno());
            }
            self.own(req, &rel)?;
            self.entry(&rel)
        });
        answer_entry(reply, result);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let result = self.child_of(parent, name).and_then(|rel| {
            self.check(req, &rel, FileOp::Mkdir, false)?;
            fs::DirBuilder::new().mode(mode & !umask & 0o7777).create(self.real(&rel)).map_err(errno)?;
            self.own(req, &rel)?;
            self.entry(&rel)
        });
        answer_entry(reply, result);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer_empty(reply, self.child_of(parent, name).and_then(|rel| self.do_unlink(req, &rel)));
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.child_of(parent, name).and_then(|rel| {
            self.check(req, &rel, FileOp::Rmdir, false)?;
            fs::remove_dir(self.real(&rel)).map_err(errno)?;
            lock(&self.nodes).detach(&rel);
            Ok(())
        });
        answer_empty(reply, result);
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let result = self.child_of(parent, link_name).and_then(|rel| {
            self.check(req, &rel, FileOp::Symlink, false)?;
            self.check_escape(req, &rel, target, FileOp::Symlink)?;
            std::os::unix::fs::symlink(target, self.real(&rel)).map_err(errno)?;
            self.own(req, &rel)?;
            self.entry(&rel)
        });
        answer_entry(reply, result);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.child_of(parent, name).and_then(|from| {
            let to = self.child_of(newparent, newname)?;
            self.do_rename(req, &from, &to, flags)
        });
        answer_empty(reply, result);
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let result = self.path_of(ino).and_then(|from| {
            let to = self.child_of(newparent, newname)?;
            // A second name must not make a file readable that its first name hides.
            self.check(req, &from, FileOp::Read, true)?;
            self.check(req, &to, FileOp::Link, false)?;
            fs::hard_link(self.real(&from), self.real(&to)).map_err(errno)?;
            self.entry(&to)
        });
        answer_entry(reply, result);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = self.path_of(ino).and_then(|rel| {
            let write_rule = self.check_open(req, &rel, flags.0)?;
            let file = self.open_real(&rel, flags.0 & !libc::O_CREAT & !libc::O_EXCL, 0)?;
            let meta = file.metadata().map_err(errno)?;
            let backing = self.backing_for(ino.0, &rel, &meta, |f| reply.open_backing(f));
            let fopen = self.fopen_flags(ino.0, &meta, flags.0, matches!(backing, Some(Some(_))));
            let (fh, h) = self.add_handle(req, file, rel, write_rule, backing);
            Ok((fh, h, fopen))
        });
        match result {
            Ok((fh, h, fopen)) => match &h.backing {
                Some(id) => reply.opened_passthrough(FileHandle(fh), fopen, id),
                None => reply.opened(FileHandle(fh), fopen),
            },
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.handle(fh).and_then(|h| {
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match h.file.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(got);
            Ok(buf)
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.write_with(req, fh, |f| {
            f.write_all_at(data, offset).map_err(errno)?;
            // Set by the kernel when the writer lacks CAP_FSETID.
            if write_flags.contains(fuser::WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                super::drop_setid(f)?;
            }
            Ok(data.len() as u32)
        });
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = self.write_with(req, fh, |f| {
            let (offset, length) = (offset_of(offset)?, offset_of(length)?);
            // SAFETY: fallocate on a descriptor the handle owns; the kernel checked the mode.
            if unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, length) } < 0 {
                return Err(last_errno());
            }
            Ok(())
        });
        answer_empty(reply, result);
    }

    /// A copy between two open files, done by the backing filesystem (a reflink or an
    /// in-kernel copy) rather than through the daemon's buffers. Reading was judged when the
    /// source was opened, writing when the destination was.
    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let result = self.handle(fh_in).and_then(|src| {
            self.write_with(req, fh_out, |dst| {
                let (mut from, mut to) = (offset_of(offset_in)?, offset_of(offset_out)?);
                // The reply counts in 32 bits; a shorter copy than asked is a normal answer.
                let len = len.min(u64::from(u32::MAX) & !0xfff) as usize;
                // SAFETY: both descriptors are owned by their handles; the offsets are locals
                // the call advances. No flags exist for it yet.
                let n = unsafe {
                    libc::copy_file_range(src.file.as_raw_fd(), &mut from, dst.as_raw_fd(), &mut to, len, 0)
                };
                if n < 0 {
                    return Err(last_errno());
                }
                Ok(n as u32)
            })
        });
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_handle(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let result = self
            .handle(fh)
            .and_then(|h| if datasync { h.file.sync_data() } else { h.file.sync_all() }.map_err(errno));
        answer_empty(reply, result);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = self.path_of(ino).and_then(|rel| {
            self.check(req, &rel, FileOp::List, false)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (1, FileType::Directory, "..".into()),
            ];
            for e in fs::read_dir(self.real(&rel)).map_err(errno)? {
                let e = e.map_err(errno)?;
                let kind = e.file_type().ok().and_then(FileType::from_std).unwrap_or(FileType::RegularFile);
                entries.push((std::os::unix::fs::DirEntryExt::ino(&e).max(2), kind, e.file_name()));
            }
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            lock(&self.dirs).insert(fh, Arc::new(entries));
            Ok(fh)
        });
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(entries) = lock(&self.dirs).get(&fh.0).cloned() else {
            reply.error(Errno::EBADF);
            return;
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    /// A listing with each entry's attributes, so the kernel needs no lookup per name. Names
    /// whose `stat` is not plainly allowed are handed over already stale: their first use is
    /// a lookup, judged and reported as usual (a refused one twice: the kernel's revalidation,
    /// then its fresh lookup).
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(entries) = lock(&self.dirs).get(&fh.0).cloned() else {
            reply.error(Errno::EBADF);
            return;
        };
        let dir = self.path_of(ino).ok();
        for (i, (d_ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            let next = i as u64 + 1;
            // `.` and `..` are never linked by the kernel, so they are not counted either.
            let looked_up = match &dir {
                Some(dir) if name != "." && name != ".." => self.plus_entry(&dir.join(name)),
                _ => None,
            };
            let full = match looked_up {
                Some((a, ttl)) => {
                    let full = reply.add(a.ino, next, name, &ttl, &a, Generation(0));
                    if full {
                        lock(&self.nodes).forget(a.ino.0, 1);
                    }
                    full
                }
                // The kernel never links `.` and `..`, whatever their number says.
                None if name == "." || name == ".." => {
                    let a = bare(*d_ino, *kind);
                    reply.add(a.ino, next, name, &Duration::ZERO, &a, Generation(0))
                }
                // Gone since the listing was taken.
                None => continue,
            };
            if full {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let result = self
            .path_of(ino)
            .and_then(|rel| File::open(self.real(&rel)).and_then(|d| d.sync_all()).map_err(errno));
        answer_empty(reply, result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let result = cpath(&self.backing).and_then(|c| {
            // SAFETY: `st` is plain old data filled by statvfs; `c` is NUL-terminated.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statvfs(c.as_ptr(), &mut st) } < 0 {
                return Err(last_errno());
            }
            Ok(st)
        });
        match result {
            Ok(st) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                st.f_bsize as u32,
                st.f_namemax as u32,
                st.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let result = self.path_of(ino).and_then(|rel| {
            let m = mask.bits();
            if m & libc::W_OK != 0 {
                self.check(req, &rel, FileOp::Write, true)?;
            }
            if m & libc::X_OK != 0 && !self.lstat(&rel)?.is_dir() {
                self.check(req, &rel, FileOp::Exec, true)?;
            }
            self.check(req, &rel, FileOp::Stat, true).map(|_| ())
        });
        answer_empty(reply, result);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.child_of(parent, name).and_then(|rel| {
            self.check(req, &rel, FileOp::Create, false)?;
            let write_rule = self.check_open(req, &rel, flags)?;
            let file = self.open_real(&rel, flags | libc::O_CREAT, mode & !umask & 0o7777)?;
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode & !umask & 0o7777))
                .map_err(errno)?;
            // SAFETY: plain fchown on a descriptor we own.
            if unsafe { libc::fchown(file.as_raw_fd(), req.uid(), req.gid()) } < 0 {
                return Err(last_errno());
            }
            let meta = file.metadata().map_err(errno)?;
            let ino = lock(&self.nodes).remember(&rel);
            let backing = self.backing_for(ino, &rel, &meta, |f| reply.open_backing(f));
            let fopen = self.fopen_flags(ino, &meta, flags, matches!(backing, Some(Some(_))));
            let (fh, h) = self.add_handle(req, file, rel, write_rule, backing);
            Ok((attr(ino, &meta), fh, h, fopen))
        });
        match result {
            Ok((a, fh, h, fopen)) => match &h.backing {
                Some(id) => reply.created_passthrough(&TTL, &a, Generation(0), FileHandle(fh), fopen, id),
                None => reply.created(&TTL, &a, Generation(0), FileHandle(fh), fopen),
            },
            Err(e) => reply.error(e),
        }
    }
}
