//! What the kernel caches for the FUSE workspace (names, absent names, attributes, file pages,
//! listings with attributes) never outlives what it stands for: renames, unlinks, creates,
//! restores and changes made on the host side, and rules still apply to the current path.
#![allow(unsafe_code)]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::fuse::{Mounted, errno_of};
use common::privileged;
use policies::engine::file::{FileOp, FileVerdict};
use sandbox::workspace::{FileEventKind, SymlinkEscape};

const RULES: &str = "file_rules:
  - {name: secrets, paths: ['${WORKSPACE}/locked/*', '${WORKSPACE}/hidden.txt'], operations: [read], decision: deny}
";

/// Polls `f` until it holds, for at most two seconds (far below the cache lifetimes, so a
/// pass means the stale entry was dropped, not that it expired).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(2), "{what}: still not so after 2 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn renames_and_unlinks_leave_no_usable_stale_name() {
    if !privileged("renames_and_unlinks_leave_no_usable_stale_name") {
        return;
    }
    let m = Mounted::new(RULES, SymlinkEscape::Deny, |b| {
        fs::create_dir_all(b.join("a")).unwrap();
        fs::write(b.join("a/x"), "moved secret\n").unwrap();
    });
    // Looked up (and cached) while allowed, then its directory renamed to where the name is
    // denied (`locked` itself is not).
    assert_eq!(fs::read_to_string(m.path("a/x")).unwrap(), "moved secret\n");
    fs::rename(m.path("a"), m.path("locked")).unwrap();
    let eacces = libc::EACCES;
    assert_eq!(errno_of(fs::read(m.path("locked/x")), "read locked/x"), eacces);
    eventually("stat of a name whose directory was renamed to where it is denied is refused", || {
        fs::metadata(m.path("locked/x")).is_err_and(|e| e.raw_os_error() == Some(eacces))
    });
    assert_eq!(errno_of(fs::metadata(m.path("a/x")), "stat the old name"), libc::ENOENT);

    // Rename then open the old name; unlink then look up.
    fs::write(m.path("f"), "one\n").unwrap();
    assert!(m.path("f").exists());
    fs::rename(m.path("f"), m.path("g")).unwrap();
    assert_eq!(errno_of(fs::read(m.path("f")), "open the renamed-away name"), libc::ENOENT);
    assert_eq!(fs::read_to_string(m.path("g")).unwrap(), "one\n");
    fs::remove_file(m.path("g")).unwrap();
    assert_eq!(errno_of(fs::metadata(m.path("g")), "stat the unlinked name"), libc::ENOENT);

    // A name remembered as absent is there as soon as it is created through the mount.
    assert!(!m.path("late").exists());
    fs::write(m.path("late"), "here\n").unwrap();
    assert_eq!(fs::read_to_string(m.path("late")).unwrap(), "here\n");
    // Renamed over: the old file's name now stands for the new one.
    fs::write(m.path("new"), "replacement\n").unwrap();
    fs::rename(m.path("new"), m.path("late")).unwrap();
    assert_eq!(fs::read_to_string(m.path("late")).unwrap(), "replacement\n");

    // The open was refused either on its (still cached) name or at a fresh lookup; the stat
    // that finally failed was a lookup, judged and reported.
    let events = m.events.take();
    let denied = |op| {
        events.iter().any(|e| {
            e.op == op
                && e.verdict == FileVerdict::Deny
                && e.path == m.path("locked/x")
                && e.rule == "secrets"
        })
    };
    assert!(denied(FileOp::Stat), "{events:#?}");
}

#[test]
fn cached_file_data_is_dropped_when_the_backing_file_changed() {
    if !privileged("cached_file_data_is_dropped_when_the_backing_file_changed") {
        return;
    }
    let m = Mounted::new("{}", SymlinkEscape::Deny, |b| fs::write(b.join("f"), "aaaa\n").unwrap());
    // Read twice through the mount: the second open keeps the kernel's pages.
    assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "aaaa\n");
    assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "aaaa\n");
    // Changed on the host side, same size: the next open must not serve the old pages.
    std::thread::sleep(Duration::from_millis(20));
    fs::write(m.backing.join("f"), "bbbb\n").unwrap();
    assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "bbbb\n");
    // Grown on the host side: the kernel is told its size is stale.
    fs::write(m.backing.join("f"), "cccc and more\n").unwrap();
    eventually("a file grown on the host side reads whole", || {
        fs::read_to_string(m.path("f")).unwrap() == "cccc and more\n"
    });
    // Written through the mount: kept coherent without the host's help.
    fs::write(m.path("f"), "dddd\n").unwrap();
    assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "dddd\n");
    assert_eq!(fs::metadata(m.path("f")).unwrap().size(), 5);
}

#[test]
fn listings_with_attributes_still_judge_each_name() {
    if !privileged("listings_with_attributes_still_judge_each_name") {
        return;
    }
    let m = Mounted::new(RULES, SymlinkEscape::Deny, |b| {
        fs::write(b.join("hidden.txt"), "no\n").unwrap();
        fs::write(b.join("plain.txt"), "yes\n").unwrap();
        fs::create_dir_all(b.join("d")).unwrap();
    });
    let mut names: Vec<String> =
        fs::read_dir(&m.mnt).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["d", "hidden.txt", "plain.txt"]);
    // The listing told the kernel about plain.txt and d, not about hidden.txt.
    let meta = |p: &Path| fs::symlink_metadata(p).map(|m| (m.is_dir(), m.size()));
    assert_eq!(meta(&m.path("plain.txt")).unwrap(), (false, 4));
    assert!(meta(&m.path("d")).unwrap().0);
    assert_eq!(errno_of(meta(&m.path("hidden.txt")), "stat hidden.txt"), libc::EACCES);
    let events = m.events.take();
    assert!(
        events.iter().any(|e| e.op == FileOp::Stat
            && e.verdict == FileVerdict::Deny
            && e.path == m.path("hidden.txt")),
        "{events:#?}"
    );
}

#[test]
fn a_restored_file_is_visible_at_once_where_it_was_missing() {
    if !privileged("a_restored_file_is_visible_at_once_where_it_was_missing") {
        return;
    }
    let rules = "file_rules:\n  - {name: trash, paths: ['${WORKSPACE}/**'], operations: [delete], decision: soft_delete}\n";
    let m = Mounted::new(rules, SymlinkEscape::Deny, |b| {
        fs::create_dir_all(b.join("d/e")).unwrap();
        fs::write(b.join("d/e/f"), "back\n").unwrap();
    });
    fs::remove_file(m.path("d/e/f")).unwrap();
    fs::remove_dir(m.path("d/e")).unwrap();
    fs::remove_dir(m.path("d")).unwrap();
    // Remembered as absent, at every level the restore recreates.
    assert!(!m.path("d").exists() && !m.path("d/e/f").exists());
    let trash = m.mount().trash();
    let id = trash.list().unwrap().into_iter().find(|e| e.original == Path::new("d/e/f")).unwrap().id;
    trash.restore(&id).unwrap();
    assert_eq!(fs::read_to_string(m.path("d/e/f")).unwrap(), "back\n");
}

#[test]
fn fallocate_and_copy_file_range_reach_the_backing_file() {
    if !privileged("fallocate_and_copy_file_range_reach_the_backing_file") {
        return;
    }
    use std::os::fd::AsRawFd;
    let m = Mounted::new(RULES, SymlinkEscape::Deny, |b| fs::write(b.join("src"), "0123456789").unwrap());
    let src = fs::File::open(m.path("src")).unwrap();
    let dst = fs::OpenOptions::new().write(true).create(true).truncate(true).open(m.path("dst")).unwrap();
    // SAFETY: plain fallocate on an open descriptor.
    assert_eq!(
        unsafe { libc::fallocate(dst.as_raw_fd(), 0, 0, 8192) },
        0,
        "{}",
        std::io::Error::last_os_error()
    );
    assert_eq!(fs::metadata(m.backing.join("dst")).unwrap().size(), 8192);
    let (mut from, mut to) = (2i64, 100i64);
    // SAFETY: both descriptors are open; the offsets are locals the call advances.
    let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut from, dst.as_raw_fd(), &mut to, 5, 0) };
    assert_eq!(n, 5, "{}", std::io::Error::last_os_error());
    let through = fs::read(m.path("dst")).unwrap();
    assert_eq!((through.len(), &through[100..105]), (8192, &b"23456"[..]));
    assert_eq!(fs::read(m.backing.join("dst")).unwrap(), through);
    // Copying into a file opened read-only is refused before it reaches the daemon.
    // SAFETY: as above.
    let refused = unsafe {
        libc::copy_file_range(src.as_raw_fd(), std::ptr::null_mut(), src.as_raw_fd(), &mut to, 1, 0)
    };
    assert_eq!((refused, std::io::Error::last_os_error().raw_os_error()), (-1, Some(libc::EBADF)));
    let events = m.events.take();
    let writes: Vec<_> =
        events.iter().filter(|e| e.kind == FileEventKind::Write && e.path == m.path("dst")).collect();
    assert_eq!(writes.len(), 1, "one file_write for the handle: {events:#?}");
}
